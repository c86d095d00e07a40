// safetensors reader and writer: a file written by python's `safetensors` reads back value for value; our writer's
// files read back (and, in formats_python_check.py, read in python); every kind of corrupt header is refused with a
// message naming the file and, where one is at fault, the tensor.
//
// usage: test_formats_safetensors SCRATCH_DIR
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "formats/checkpoint.h" // ot_tensor_to_f32
#include "formats/safetensors.h"
#include "tests/test_formats_util.h"
#include "tests/test_util.h"

static const char *scratch;

// Open `path`, expect failure, and expect every needle in the message.
static void expect_refused(const char *what, const char *path, const char *n1, const char *n2) {
    ot_safetensors st;
    ot_err err = {{0}};
    int rc = ot_safetensors_open(&st, path, &err);
    CHECK(rc == -1, "%s: opened a corrupt file", what);
    if (rc == 0) {
        ot_safetensors_close(&st);
        return;
    }
    printf("refused (%s): %s\n", what, err.msg);
    CHECK(fmt_has(err.msg, path), "%s: message does not name the file", what);
    if (n1) CHECK(fmt_has(err.msg, n1), "%s: message lacks '%s'", what, n1);
    if (n2) CHECK(fmt_has(err.msg, n2), "%s: message lacks '%s'", what, n2);
}

static void test_python_fixture(void) {
    ot_safetensors st;
    ot_err err = {{0}};
    int rc = ot_safetensors_open(&st, "tests/fixtures/formats/py_written.safetensors", &err);
    CHECK(rc == 0, "open python fixture: %s", err.msg);
    if (rc) return;
    CHECK(st.n_tensors == 7, "7 tensors, got %d", st.n_tensors);
    CHECK(st.metadata_json && strstr(st.metadata_json, "\"note\": \"fixture\"") == NULL &&
              strstr(st.metadata_json, "\"note\":\"fixture\""),
          "metadata kept: %s", st.metadata_json ? st.metadata_json : "(null)");
    for (int i = 1; i < st.n_tensors; i++)
        CHECK(st.tensors[i - 1].data <= st.tensors[i].data, "tensors sorted by offset");

    const ot_tensor *a = ot_safetensors_find(&st, "a.bf16");
    CHECK(a && a->dtype == OT_DT_BF16 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3, "a.bf16 header");
    float f[8];
    if (a) {
        CHECK(ot_tensor_to_f32(a, f, &err) == 0, "a.bf16 to f32: %s", err.msg);
        for (int i = 0; i < 6; i++) CHECK(f[i] == 0.5f * i - 1.0f, "a.bf16[%d] = %g", i, (double)f[i]);
    }
    const ot_tensor *b = ot_safetensors_find(&st, "b.f32");
    CHECK(b && b->numel == 4, "b.f32");
    if (b) {
        ot_tensor_to_f32(b, f, &err);
        CHECK(f[0] == 1.0f && f[1] == -2.5f && f[2] == 3.25f && f[3] == 1e-3f, "b.f32 values");
    }
    const ot_tensor *c = ot_safetensors_find(&st, "c.f16");
    CHECK(c && c->dtype == OT_DT_F16, "c.f16");
    if (c) {
        ot_tensor_to_f32(c, f, &err);
        // 6e-5 is subnormal in f16: stored as the nearest multiple of 2^-24.
        CHECK(f[0] == 0.5f && f[1] == -0.25f && f[2] == 65504.0f && f[3] == ot_f16_to_f32(ot_f32_to_f16(6.0e-5f)),
              "c.f16 values %g %g %g %g", (double)f[0], (double)f[1], (double)f[2], (double)f[3]);
    }
    const ot_tensor *d = ot_safetensors_find(&st, "d.u8");
    CHECK(d && d->dtype == OT_DT_U8 && d->nbytes == 10 && d->data[7] == 7, "d.u8");
    CHECK(d && ot_tensor_to_f32(d, f, &err) == -1 && strstr(err.msg, "d.u8"), "U8 is not converted to float");
    const ot_tensor *e = ot_safetensors_find(&st, "e.i64");
    CHECK(e && e->dtype == OT_DT_I64 && e->nbytes == 16, "e.i64");
    if (e) {
        int64_t v[2];
        memcpy(v, e->data, 16);
        CHECK(v[0] == -3 && v[1] == (int64_t)1 << 40, "e.i64 values");
    }
    const ot_tensor *s = ot_safetensors_find(&st, "f.scalar");
    CHECK(s && s->ndim == 0 && s->numel == 1 && s->nbytes == 4, "0-d tensor");
    const ot_tensor *g = ot_safetensors_find(&st, "g.empty");
    CHECK(g && g->numel == 0 && g->nbytes == 0, "empty tensor");
    CHECK(ot_safetensors_find(&st, "nope") == NULL, "find of an absent name");
    ot_safetensors_close(&st);
}

static void test_writer_roundtrip(void) {
    const char *path = fmt_path(scratch, "written.safetensors");
    uint16_t bf[6];
    for (int i = 0; i < 6; i++) bf[i] = ot_f32_to_bf16(0.25f * i - 0.5f);
    float f32[5] = {1, 2, 3, 4, 5};
    uint8_t u8[3] = {9, 8, 7};
    int32_t i32[2] = {-7, 123456};
    ot_st_writer *w = ot_st_writer_new();
    ot_st_writer_add(w, "x.bf16", OT_DT_BF16, 2, (int64_t[]){3, 2}, bf);
    ot_st_writer_add(w, "y.u8", OT_DT_U8, 1, (int64_t[]){3}, u8); // odd size: later tensors are unaligned
    ot_st_writer_add(w, "z.f32", OT_DT_F32, 1, (int64_t[]){5}, f32);
    ot_st_writer_add(w, "w.i32", OT_DT_I32, 2, (int64_t[]){1, 2}, i32);
    ot_st_writer_set_metadata(w, "step", "12");
    CHECK(ot_st_writer_data_bytes(w) == 12 + 3 + 20 + 8, "data bytes %zu", ot_st_writer_data_bytes(w));
    ot_err err = {{0}};
    CHECK(ot_st_writer_finish(w, path, &err) == 0, "writer finish: %s", err.msg);
    struct stat sb;
    CHECK(stat(fmt_path(scratch, "written.safetensors.tmp"), &sb) != 0, "temp file renamed away");

    size_t len = 0;
    char *raw = ot_test_read_file(path, &len);
    CHECK(raw != NULL, "read back");
    if (raw) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (uint8_t)raw[i];
        CHECK((8 + hlen) % 8 == 0, "header padded to a multiple of 8 (8 + %llu)", (unsigned long long)hlen);
        CHECK(raw[8] == '{', "header starts with '{'");
        CHECK(strstr(raw + 8, "\"__metadata__\":{\"format\":\"pt\",\"step\":\"12\"}") != NULL, "metadata format pt + step");
        size_t k = 8 + hlen - 1;
        while (raw[k] == ' ') k--;
        CHECK(raw[k] == '}', "only spaces after the JSON");
        CHECK(len == 8 + hlen + 43, "file size %zu", len);
        free(raw);
    }
    ot_safetensors st;
    CHECK(ot_safetensors_open(&st, path, &err) == 0, "reopen: %s", err.msg);
    const ot_tensor *x = ot_safetensors_find(&st, "x.bf16"), *y = ot_safetensors_find(&st, "y.u8"),
                    *z = ot_safetensors_find(&st, "z.f32"), *wt = ot_safetensors_find(&st, "w.i32");
    CHECK(x && y && z && wt, "all four tensors present");
    if (x && y && z && wt) {
        CHECK(memcmp(x->data, bf, 12) == 0 && x->shape[0] == 3 && x->shape[1] == 2, "x bytes and shape");
        CHECK(memcmp(y->data, u8, 3) == 0, "y bytes");
        float back[5];
        CHECK(ot_tensor_to_f32(z, back, &err) == 0 && memcmp(back, f32, 20) == 0, "z values (unaligned source)");
        CHECK(memcmp(wt->data, i32, 8) == 0 && wt->dtype == OT_DT_I32, "w bytes");
        CHECK(st.tensors[0].data == x->data && st.tensors[3].data == wt->data, "written in the order added");
    }
    ot_safetensors_close(&st);

    // Writer misuse is reported by finish, and nothing is left behind.
    w = ot_st_writer_new();
    ot_st_writer_add(w, "a", OT_DT_F32, 1, (int64_t[]){1}, f32);
    ot_st_writer_add(w, "a", OT_DT_F32, 1, (int64_t[]){1}, f32);
    const char *dup = fmt_path(scratch, "dup.safetensors");
    CHECK(ot_st_writer_finish(w, dup, &err) == -1 && fmt_has(err.msg, "'a' added twice"), "duplicate add refused");
    CHECK(stat(dup, &sb) != 0, "no file after a refused write");

    // Streaming: short and long writes are errors; the temp file is removed.
    w = ot_st_writer_new();
    ot_st_writer_add(w, "s", OT_DT_F32, 1, (int64_t[]){4}, NULL);
    const char *sp = fmt_path(scratch, "stream.safetensors");
    ot_st_stream *s = ot_st_stream_begin(w, sp, &err);
    CHECK(s != NULL, "stream begin: %s", err.msg);
    if (s) {
        CHECK(ot_st_stream_write(s, f32, 8, &err) == 0, "first half");
        CHECK(ot_st_stream_write(s, f32, 12, &err) == -1 && fmt_has(err.msg, "more than"), "overlong write refused");
        CHECK(ot_st_stream_finish(s, &err) == -1 && fmt_has(err.msg, "only 8 of the 16"), "short stream refused");
        CHECK(stat(sp, &sb) != 0 && stat(fmt_path(scratch, "stream.safetensors.tmp"), &sb) != 0, "nothing left");
    }
    w = ot_st_writer_new();
    ot_st_writer_add(w, "s", OT_DT_F32, 1, (int64_t[]){4}, NULL);
    s = ot_st_stream_begin(w, sp, &err);
    CHECK(s && ot_st_stream_write(s, f32, 4, &err) == 0 && ot_st_stream_write(s, f32 + 1, 12, &err) == 0 &&
              ot_st_stream_finish(s, &err) == 0,
          "chunked stream: %s", err.msg);
    CHECK(ot_safetensors_open(&st, sp, &err) == 0 && st.n_tensors == 1 && memcmp(st.tensors[0].data, f32, 16) == 0,
          "streamed file reads back: %s", err.msg);
    ot_safetensors_close(&st);
}

static void test_corrupt(void) {
    char data[64] = {0};
    const char *p;
    // Shorter than the length field.
    p = fmt_path(scratch, "short.safetensors");
    fmt_write_file(p, "abc", 3);
    expect_refused("3-byte file", p, "shorter than the 8-byte", NULL);
    // Header length past the end.
    p = fmt_path(scratch, "hlen.safetensors");
    uint8_t big[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    fmt_write_file(p, big, 16);
    expect_refused("header length past the end", p, "header length 65535 runs past the end", NULL);
    // Not JSON, not an object.
    p = fmt_path(scratch, "notjson.safetensors");
    fmt_write_raw_safetensors(p, "{\"a\": ", NULL, 0);
    expect_refused("truncated JSON", p, "not valid JSON", NULL);
    p = fmt_path(scratch, "array.safetensors");
    fmt_write_raw_safetensors(p, "[1, 2]", NULL, 0);
    expect_refused("JSON array header", p, "not a JSON object", NULL);
    // Unknown dtype.
    p = fmt_path(scratch, "dtype.safetensors");
    fmt_write_raw_safetensors(p, "{\"w.q\":{\"dtype\":\"BF17\",\"shape\":[2],\"data_offsets\":[0,4]}}", data, 4);
    expect_refused("unknown dtype", p, "tensor 'w.q'", "unknown dtype \"BF17\"");
    // Negative dimension.
    p = fmt_path(scratch, "neg.safetensors");
    fmt_write_raw_safetensors(p, "{\"w.neg\":{\"dtype\":\"U8\",\"shape\":[-2],\"data_offsets\":[0,2]}}", data, 2);
    expect_refused("negative shape", p, "tensor 'w.neg'", "not a non-negative integer");
    // Size mismatch, worded as in the loader's contract.
    p = fmt_path(scratch, "size.safetensors");
    fmt_write_raw_safetensors(
        p, "{\"model.layers.3.mlp.router.weight\":{\"dtype\":\"BF16\",\"shape\":[32,2880],\"data_offsets\":[0,16]}}",
        data, 16);
    expect_refused("size mismatch", p, "tensor 'model.layers.3.mlp.router.weight'",
                   "data_offsets [0, 16) is 16 bytes but BF16 [32, 2880] needs 184320");
    // Overlap.
    p = fmt_path(scratch, "overlap.safetensors");
    fmt_write_raw_safetensors(p,
                              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                              data, 12);
    expect_refused("overlapping ranges", p, "tensor 'b' at [4, 12) overlaps tensor 'a'", NULL);
    // Gap.
    p = fmt_path(scratch, "gap.safetensors");
    fmt_write_raw_safetensors(p,
                              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                              data, 12);
    expect_refused("gap between ranges", p, "gap of 4 bytes", "'a' (ends at 4) and tensor 'b'");
    // Range past the buffer (a truncated file looks like this).
    p = fmt_path(scratch, "past.safetensors");
    fmt_write_raw_safetensors(p, "{\"t.last\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, 10);
    expect_refused("range past the buffer", p, "tensor 't.last'", "run past the end of the data buffer (10 bytes)");
    // Stray bytes after the last tensor.
    p = fmt_path(scratch, "trail.safetensors");
    fmt_write_raw_safetensors(p, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 9);
    expect_refused("trailing bytes", p, "5 stray bytes after the last tensor 't'", NULL);
    // Duplicate names.
    p = fmt_path(scratch, "dupname.safetensors");
    fmt_write_raw_safetensors(p,
                              "{\"same.name\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                              "\"same.name\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                              data, 2);
    expect_refused("duplicate tensor names", p, "duplicate", "same.name");
    // Bad metadata, bad data_offsets.
    p = fmt_path(scratch, "meta.safetensors");
    fmt_write_raw_safetensors(p, "{\"__metadata__\":{\"format\":1}}", NULL, 0);
    expect_refused("non-string metadata", p, "__metadata__", NULL);
    p = fmt_path(scratch, "offs.safetensors");
    fmt_write_raw_safetensors(p, "{\"o\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1]}}", data, 1);
    expect_refused("one data offset", p, "tensor 'o'", "data_offsets");
    // Missing file.
    expect_refused("missing file", fmt_path(scratch, "absent.safetensors"), "cannot open", NULL);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    fmt_fresh_dir(scratch);
    CHECK(ot_dtype_from_name("BF16") == OT_DT_BF16 && ot_dtype_size(OT_DT_BF16) == 2, "BF16");
    CHECK(ot_dtype_from_name("F8_E4M3") == OT_DT_F8_E4M3 && ot_dtype_size(OT_DT_F8_E4M3) == 1, "F8_E4M3");
    CHECK(ot_dtype_from_name("bf16") == OT_DT_INVALID && ot_dtype_size(OT_DT_INVALID) == 0, "names are case-sensitive");
    CHECK(strcmp(ot_dtype_name(OT_DT_I64), "I64") == 0, "I64 name");
    test_python_fixture();
    test_writer_roundtrip();
    test_corrupt();
    return ot_test_finish("test_formats_safetensors");
}
