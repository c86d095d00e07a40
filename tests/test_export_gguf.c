// The GGUF writer and the ggml block formats (formats/gguf.h, formats/gguf_vocab.h).
//
// usage: test_export_gguf OUT_DIR
// Writes OUT_DIR/types.gguf: every metadata value type (arrays of numbers and of strings included) and a tensor of
// every type osstune writes, data streamed in awkward chunk sizes. test_export_gguf_types.py then reads it with the
// `gguf` package (llama.cpp's reader) and checks every value; here the file is checked byte by byte with a small
// independent parser. Also: the writer's error paths (never a file at the final path), MXFP4 re-packing against
// the HF dequantization, Q8_0 error bounds, the GPT-2 byte alphabet.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/gguf.h"
#include "formats/gguf_gptoss.h"
#include "formats/gguf_vocab.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

static int exists(const char *p) { return access(p, F_OK) == 0; }

// ---- the test file's content (test_export_gguf_types.py computes the same values) -----------------------------------
// Tensor values: element i of every tensor is pattern(i) rounded to the tensor's type.
static float pattern(int64_t i) { return (float)((i % 29) - 14) * 0.375f + (float)(i / 29) * 0.0625f; }

static const char *str_items[] = {"alpha", "", "Ġhello Ċ", "台語 and 華語", "<|return|>"};

static void set_all_metadata(ot_gguf_writer *w) {
    ot_gguf_set_u8(w, "test.u8", 200);
    ot_gguf_set_i8(w, "test.i8", -100);
    ot_gguf_set_u16(w, "test.u16", 60000);
    ot_gguf_set_i16(w, "test.i16", -30000);
    ot_gguf_set_u32(w, "test.u32", 4000000000u);
    ot_gguf_set_i32(w, "test.i32", -2000000000);
    ot_gguf_set_f32(w, "test.f32", 1e-5f);
    ot_gguf_set_bool(w, "test.bool_true", 1);
    ot_gguf_set_bool(w, "test.bool_false", 0);
    ot_gguf_set_str(w, "test.str", "gpt-oss 台語");
    ot_gguf_set_u64(w, "test.u64", 18000000000000000000ull);
    ot_gguf_set_i64(w, "test.i64", -9000000000000000000ll);
    ot_gguf_set_f64(w, "test.f64", 3.141592653589793);
    int32_t ai[5] = {1, -2, 3, -4, 2147483647};
    ot_gguf_set_array(w, "test.arr_i32", OT_GGUF_I32, ai, 5);
    float af[3] = {0.5f, -1.25f, 1e30f};
    ot_gguf_set_array(w, "test.arr_f32", OT_GGUF_F32, af, 3);
    uint8_t au[4] = {0, 1, 254, 255};
    ot_gguf_set_array(w, "test.arr_u8", OT_GGUF_U8, au, 4);
    ot_gguf_set_array(w, "test.arr_empty", OT_GGUF_U32, NULL, 0);
    ot_gguf_set_str_array(w, "test.arr_str", str_items, NULL, 5);
    // A string with an embedded NUL byte: lengths, not terminators, delimit GGUF strings.
    const char *with_nul[1] = {"a\0b"};
    size_t len3 = 3;
    ot_gguf_set_str_array(w, "test.arr_str_nul", with_nul, &len3, 1);
}

typedef struct {
    const char *name;
    ot_ggml_type type;
    int n_dims;
    int64_t ne[3];
} tspec;

static const tspec tensors[] = {
    {"t.f32", OT_GGML_F32, 2, {3, 5, 0}},       // 60 bytes: not a multiple of 32, so padding follows
    {"t.f16", OT_GGML_F16, 1, {7, 0, 0}},
    {"t.bf16", OT_GGML_BF16, 2, {4, 3, 0}},
    {"t.q8_0", OT_GGML_Q8_0, 2, {64, 3, 0}},
    {"t.mxfp4", OT_GGML_MXFP4, 3, {32, 3, 2}},
};
enum { N_T = sizeof tensors / sizeof tensors[0] };

static int64_t numel(const tspec *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->ne[d];
    return n;
}

// The bytes of tensor t: the pattern encoded in its type. MXFP4 data comes from HF-layout groups built from the
// pattern's nibbles, re-packed (the python side rebuilds the same groups).
static uint8_t *tensor_bytes(const tspec *t, size_t *nbytes) {
    int64_t n = numel(t);
    *nbytes = ot_ggml_row_bytes(t->type, t->ne[0]) * (size_t)(n / t->ne[0]);
    uint8_t *b = ot_malloc(*nbytes);
    float *x = ot_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = pattern(i);
    switch (t->type) {
    default: ot_gguf_encode_row(b, x, n, t->type); break; // the exporter's own encoder (formats/gguf_gptoss.h)
    case OT_GGML_MXFP4: {
        int64_t groups = n / 32;
        uint8_t *hf = ot_malloc((size_t)groups * 16), *sc = ot_malloc((size_t)groups);
        for (int64_t g = 0; g < groups; g++) {
            sc[g] = (uint8_t)(120 + g % 16);
            for (int j = 0; j < 16; j++) hf[g * 16 + j] = (uint8_t)((g * 16 + j) * 37 + 11);
        }
        ot_gguf_mxfp4_repack(b, hf, sc, groups);
        free(hf);
        free(sc);
        break;
    }
    }
    free(x);
    return b;
}

// ---- a minimal independent reader: enough to check layout and offsets -------------------------------------------------
typedef struct {
    const uint8_t *p;
    size_t n, at;
    int bad;
} cursor;

static uint64_t rd(cursor *c, int bytes) {
    if (c->at + (size_t)bytes > c->n) {
        c->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)c->p[c->at + i] << (8 * i);
    c->at += (size_t)bytes;
    return v;
}

static void skip_value(cursor *c, uint32_t type) {
    static const int size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == OT_GGUF_STRING) {
        c->at += rd(c, 8);
    } else if (type == OT_GGUF_ARRAY) {
        uint32_t et = (uint32_t)rd(c, 4);
        uint64_t n = rd(c, 8);
        for (uint64_t i = 0; i < n && !c->bad; i++) skip_value(c, et);
    } else if (type < 13) {
        c->at += (size_t)size[type];
    } else {
        c->bad = 1;
    }
}

static void check_file(const char *path) {
    size_t n;
    uint8_t *buf = (uint8_t *)ot_test_read_file(path, &n);
    CHECK(buf != NULL, "cannot read %s", path);
    if (!buf) return;
    cursor c = {buf, n, 0, 0};
    CHECK(rd(&c, 4) == OT_GGUF_MAGIC, "magic");
    CHECK(rd(&c, 4) == 3, "version");
    uint64_t nt = rd(&c, 8), nkv = rd(&c, 8);
    CHECK(nt == N_T, "tensor_count %llu", (unsigned long long)nt);
    CHECK(nkv == 19, "kv_count %llu", (unsigned long long)nkv);
    for (uint64_t i = 0; i < nkv && !c.bad; i++) {
        c.at += rd(&c, 8); // key
        skip_value(&c, (uint32_t)rd(&c, 4));
    }
    uint64_t offsets[N_T];
    for (uint64_t i = 0; i < nt && !c.bad; i++) {
        uint64_t len = rd(&c, 8);
        CHECK(len == strlen(tensors[i].name) && !memcmp(buf + c.at, tensors[i].name, len), "tensor %d name", (int)i);
        c.at += len;
        uint32_t nd = (uint32_t)rd(&c, 4);
        CHECK(nd == (uint32_t)tensors[i].n_dims, "tensor %d n_dims", (int)i);
        for (uint32_t d = 0; d < nd; d++) CHECK(rd(&c, 8) == (uint64_t)tensors[i].ne[d], "tensor %d ne[%u]", (int)i, d);
        CHECK(rd(&c, 4) == (uint64_t)tensors[i].type, "tensor %d type", (int)i);
        offsets[i] = rd(&c, 8);
        CHECK(offsets[i] % OT_GGUF_ALIGNMENT == 0, "tensor %d offset %llu not aligned", (int)i, (unsigned long long)offsets[i]);
    }
    CHECK(!c.bad, "header runs past the end of the file");
    size_t data = (c.at + OT_GGUF_ALIGNMENT - 1) / OT_GGUF_ALIGNMENT * OT_GGUF_ALIGNMENT;
    for (size_t i = c.at; i < data && i < n; i++) CHECK(buf[i] == 0, "header padding byte %zu is not zero", i);
    size_t end = data;
    for (int i = 0; i < N_T && !c.bad; i++) {
        size_t nb;
        uint8_t *want = tensor_bytes(&tensors[i], &nb);
        CHECK(data + offsets[i] + nb <= n && !memcmp(buf + data + offsets[i], want, nb), "tensor %s bytes differ",
              tensors[i].name);
        free(want);
        end = data + offsets[i] + (nb + OT_GGUF_ALIGNMENT - 1) / OT_GGUF_ALIGNMENT * OT_GGUF_ALIGNMENT;
    }
    CHECK(end == n, "file is %zu bytes, expected %zu (last tensor padded to the alignment)", n, end);
    free(buf);
}

// ---- the writer ------------------------------------------------------------------------------------------------
static void test_write(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/types.gguf", dir);
    unlink(path);
    ot_err err;
    ot_gguf_writer *w = ot_gguf_writer_new();
    set_all_metadata(w);
    uint64_t total = 0;
    for (int i = 0; i < N_T; i++) {
        uint64_t nb = ot_gguf_add_tensor(w, tensors[i].name, tensors[i].type, tensors[i].n_dims, tensors[i].ne, &err);
        CHECK(nb > 0, "add %s: %s", tensors[i].name, err.msg);
        total += nb;
    }
    CHECK(ot_gguf_begin(w, path, &err) == 0, "begin: %s", err.msg);
    // All tensors' bytes concatenated, then written in chunks of 1, 7, 13, 64, ... bytes spanning tensor boundaries.
    uint8_t *all = ot_malloc(total);
    size_t at = 0;
    for (int i = 0; i < N_T; i++) {
        size_t nb;
        uint8_t *b = tensor_bytes(&tensors[i], &nb);
        memcpy(all + at, b, nb);
        at += nb;
        free(b);
    }
    static const size_t chunks[] = {1, 7, 13, 64, 5, 200};
    size_t k = 0;
    for (at = 0; at < total; k++) {
        size_t c = chunks[k % 6] < total - at ? chunks[k % 6] : total - at;
        CHECK(ot_gguf_write(w, all + at, c, &err) == 0, "write: %s", err.msg);
        at += c;
    }
    free(all);
    CHECK(ot_gguf_current_tensor(w) == N_T, "all tensors complete");
    CHECK(ot_gguf_write(w, "x", 1, &err) != 0, "a byte beyond the last tensor is refused");
    CHECK(ot_gguf_finish(w, &err) == 0, "finish: %s", err.msg);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(!exists(tmp), "temporary file left behind");
    check_file(path);
}

static void test_errors(const char *dir) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/bad.gguf", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(path);
    ot_err err;
    int64_t ne[2] = {32, 2};

    // Metadata mistakes are reported by begin, and nothing is created.
    ot_gguf_writer *w = ot_gguf_writer_new();
    ot_gguf_set_u32(w, "a.key", 1);
    ot_gguf_set_str(w, "a.key", "again");
    CHECK(ot_gguf_begin(w, path, &err) != 0 && strstr(err.msg, "a.key") && strstr(err.msg, "twice"), "duplicate key: %s",
          err.msg);
    ot_gguf_abort(w);
    CHECK(!exists(path) && !exists(tmp), "no file after a refused begin");

    // Tensor declarations are checked at once.
    w = ot_gguf_writer_new();
    char longname[80];
    memset(longname, 'n', 70);
    longname[70] = 0;
    CHECK(ot_gguf_add_tensor(w, longname, OT_GGML_F32, 2, ne, &err) == 0 && strstr(err.msg, "1..63"), "long name: %s",
          err.msg);
    int64_t ne_bad[1] = {33};
    CHECK(ot_gguf_add_tensor(w, "q", OT_GGML_Q8_0, 1, ne_bad, &err) == 0 && strstr(err.msg, "block"),
          "ne0 not a multiple of the block: %s", err.msg);
    CHECK(ot_gguf_add_tensor(w, "x", OT_GGML_MXFP4, 2, ne, &err) == 32 / 32 * 17 * 2, "MXFP4 size");
    CHECK(ot_gguf_add_tensor(w, "x", OT_GGML_F32, 2, ne, &err) == 0 && strstr(err.msg, "twice"), "duplicate tensor: %s",
          err.msg);
    int64_t ne0[1] = {0};
    CHECK(ot_gguf_add_tensor(w, "z", OT_GGML_F32, 1, ne0, &err) == 0, "empty dimension refused");
    // Too few bytes: finish fails and removes the temporary file.
    CHECK(ot_gguf_begin(w, path, &err) == 0, "begin: %s", err.msg);
    CHECK(exists(tmp), "the temporary file exists while writing");
    CHECK(!exists(path), "the final name does not exist while writing");
    uint8_t zeros[20] = {0};
    CHECK(ot_gguf_write(w, zeros, 20, &err) == 0, "partial write");
    CHECK(ot_gguf_finish(w, &err) != 0 && strstr(err.msg, "'x'") && strstr(err.msg, "20 of 34"),
          "short data refused: %s", err.msg);
    CHECK(!exists(path) && !exists(tmp), "no file after a failed finish");

    // Abort after begin removes the temporary file.
    w = ot_gguf_writer_new();
    CHECK(ot_gguf_add_tensor(w, "x", OT_GGML_F32, 2, ne, &err) > 0, "add");
    CHECK(ot_gguf_begin(w, path, &err) == 0, "begin");
    ot_gguf_abort(w);
    CHECK(!exists(path) && !exists(tmp), "no file after abort");

    // An unwritable destination is an error naming the file.
    w = ot_gguf_writer_new();
    snprintf(path, sizeof path, "%s/no-such-dir/x.gguf", dir);
    CHECK(ot_gguf_begin(w, path, &err) != 0 && strstr(err.msg, "no-such-dir"), "unwritable: %s", err.msg);
    ot_gguf_abort(w);
}

// ---- block formats ----------------------------------------------------------------------------------------------
static void test_mxfp4(void) {
    // Every byte value in every position and a spread of scales: the re-packed block dequantizes (ggml rule) to
    // exactly what the HF group dequantizes to (kernels' ot_mxfp4_dequant_row, spec §3.4).
    enum { G = 64 };
    uint8_t hf[G * 16], sc[G], gg[G * OT_MXFP4_BLOCK_BYTES];
    ot_rng r;
    ot_rng_seed(&r, 5);
    for (int i = 0; i < G * 16; i++) hf[i] = i < 256 ? (uint8_t)i : (uint8_t)ot_rng_u64(&r);
    for (int g = 0; g < G; g++) sc[g] = g < 8 ? (uint8_t)(127 + g - 4) : (uint8_t)(100 + ot_rng_u64(&r) % 50);
    ot_gguf_mxfp4_repack(gg, hf, sc, G);
    float a[G * 32], b[G * 32];
    ot_mxfp4_dequant_row(a, hf, sc, G * 32);
    ot_gguf_mxfp4_dequant(b, gg, G * 32);
    int same = 1;
    for (int i = 0; i < G * 32; i++) same &= memcmp(&a[i], &b[i], 4) == 0; // bit-exact, signs of zero included
    CHECK(same, "MXFP4 re-pack changes values");
    // The spec's worked example (§5.4): scale 128, hf[0] = 0x21 → e = 128, qs[0] = 0x01, qs[1] = 0x02.
    uint8_t ex_hf[16] = {0x21}, ex_sc[1] = {128}, ex[17];
    ot_gguf_mxfp4_repack(ex, ex_hf, ex_sc, 1);
    CHECK(ex[0] == 128 && ex[1] == 0x01 && ex[2] == 0x02, "worked example: %02x %02x %02x", ex[0], ex[1], ex[2]);
    int rest_zero = 1;
    for (int k = 3; k < 17; k++) rest_zero &= ex[k] == 0;
    CHECK(rest_zero, "worked example: other bytes zero");
}

static void test_q8_0(void) {
    enum { N = 32 * 40 };
    float x[N], y[N];
    uint8_t q[N / 32 * OT_Q8_0_BLOCK_BYTES];
    ot_rng r;
    ot_rng_seed(&r, 9);
    for (int i = 0; i < N; i++) x[i] = (float)(ot_rng_normal(&r) * pow(10.0, (double)(i / 32 % 8) - 4));
    for (int i = 0; i < 32; i++) x[i] = 0; // an all-zero block
    ot_gguf_quantize_q8_0(q, x, N);
    ot_gguf_dequant_q8_0(y, q, N);
    int ok = 1;
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        // Error per element ≤ half a step, plus what rounding the scale to fp16 moves the largest code (127 steps).
        float d = amax / 127, dh = ot_f16_to_f32(ot_f32_to_f16(d));
        for (int i = 0; i < 32; i++) {
            float bound = 0.5f * d + 127 * fabsf(dh - d) + 1e-30f;
            if (fabsf(y[b * 32 + i] - x[b * 32 + i]) > bound * 1.0001f) ok = 0;
        }
    }
    CHECK(ok, "Q8_0 round trip beyond half a step");
    int zero = 1;
    for (int i = 0; i < 32; i++) zero &= y[i] == 0;
    CHECK(zero, "all-zero block stays zero");
    // Values that are exact multiples of the step come back exactly: −127..127 · 2^−3 (d = 2^−3 exactly in fp16).
    float e[32], f[32];
    uint8_t eq[OT_Q8_0_BLOCK_BYTES];
    for (int i = 0; i < 32; i++) e[i] = (float)(i * 8 - 127) * 0.125f;
    e[31] = 127 * 0.125f;
    ot_gguf_quantize_q8_0(eq, e, 32);
    ot_gguf_dequant_q8_0(f, eq, 32);
    CHECK(!memcmp(e, f, sizeof e), "exact multiples of the step are kept exactly");
}

static void test_byte_alphabet(void) {
    // GPT-2's map: printable bytes are themselves; space → U+0120 'Ġ', '\n' → U+010A 'Ċ'; all 256 distinct.
    unsigned seen_cp[256];
    for (int b = 0; b < 256; b++) {
        char u[2];
        int n = ot_gpt2_byte_to_utf8((uint8_t)b, u);
        unsigned cp = n == 1 ? (uint8_t)u[0] : (((uint8_t)u[0] & 0x1F) << 6) | ((uint8_t)u[1] & 0x3F);
        seen_cp[b] = cp;
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) CHECK(cp == (unsigned)b, "byte %d maps to %u", b, cp);
    }
    CHECK(seen_cp[' '] == 0x120 && seen_cp['\n'] == 0x10A && seen_cp[0] == 0x100 && seen_cp[173] == 0x143,
          "known stand-ins: %x %x %x %x", seen_cp[' '], seen_cp['\n'], seen_cp[0], seen_cp[173]);
    int distinct = 1;
    for (int i = 0; i < 256; i++)
        for (int j = i + 1; j < 256; j++) distinct &= seen_cp[i] != seen_cp[j];
    CHECK(distinct, "the byte map is one-to-one");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_export_gguf OUT_DIR\n");
        return 2;
    }
    if (mkdir(argv[1], 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cannot create %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    test_write(argv[1]);
    test_errors(argv[1]);
    test_mxfp4();
    test_q8_0();
    test_byte_alphabet();
    return ot_test_finish("test_export_gguf");
}
