// The pairs HDF5 file: writer -> reader round trip of synthetic samples, no file before finish and none after
// abort, and clear errors for truncated, corrupted, wrong-version, wrong-format, incomplete and inconsistent files.
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/pairs_h5.h"
#include "tests/test_util.h"

#define N_SAMPLES 5000
#define VOCAB 201088

static char tmpdir[256];

static const char *tmp_path(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_dir_entries(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", tmpdir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

// Sample i: length, ids and labels follow from i through a fixed RNG, so the reader side can regenerate them.
typedef struct {
    int len;
    uint32_t loss_start;
    uint8_t dir;
    int32_t ids[400];
} sample;

static void make_sample(int i, sample *s) {
    ot_rng r;
    ot_rng_seed(&r, 1000 + (uint64_t)i);
    s->len = 2 + (int)(ot_rng_u64(&r) % 399);
    s->loss_start = (uint32_t)(ot_rng_u64(&r) % (uint64_t)s->len);
    s->dir = (uint8_t)(i & 1);
    for (int k = 0; k < s->len; k++) s->ids[k] = (int32_t)(ot_rng_u64(&r) % VOCAB);
}

static const ot_pairs_h5_meta meta = {
    .tokenizer_sha256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    .tokenizer_vocab_size = VOCAB,
    .system_text = "system text ✓",
    .instruction = {"zh → nan", "nan → zh"}, // no Tâi-lô direction: no instruction_zh2tl ... attributes
    .directions = "both",
    .source_file = "synthetic.tsv",
};

static void write_file(const char *path) {
    ot_err err = {{0}};
    ot_pairs_h5_writer *w = ot_pairs_h5_create(path, &meta, &err);
    CHECK(w != NULL, "create: %s", err.msg);
    if (!w) return;
    sample s;
    for (int i = 0; i < N_SAMPLES; i++) {
        make_sample(i, &s);
        CHECK(ot_pairs_h5_append(w, s.ids, s.len, s.loss_start, s.dir, (uint64_t)i + 2, &err) == 0, "append: %s", err.msg);
    }
    CHECK(!exists(path), "no file under the final name before finish");
    CHECK(ot_pairs_h5_finish(w, N_SAMPLES / 2, 7, &err) == 0, "finish: %s", err.msg);
    CHECK(exists(path), "file exists after finish");
}

static void test_round_trip(const char *path) {
    ot_pairs_h5 r;
    ot_err err = {{0}};
    CHECK(ot_pairs_h5_open(&r, path, &err) == 0, "open: %s", err.msg);
    if (!r.offsets) return;
    CHECK(r.version == OT_PAIRS_H5_VERSION && r.n_samples == N_SAMPLES && r.n_pairs == N_SAMPLES / 2 &&
              r.n_rejected == 7 && r.vocab_size == VOCAB,
          "counts and version");
    CHECK(strcmp(r.tokenizer_sha256, meta.tokenizer_sha256) == 0 && strcmp(r.system_text, meta.system_text) == 0 &&
              strcmp(r.instruction[0], meta.instruction[0]) == 0 && strcmp(r.instruction[1], meta.instruction[1]) == 0 &&
              !r.instruction[OT_ZH2TL] && !r.instruction[OT_TL2NAN] && strcmp(r.directions, "both") == 0 &&
              strcmp(r.source_file, "synthetic.tsv") == 0,
          "text attributes");
    CHECK(ot_pairs_h5_verify(&r, &err) == 0, "verify: %s", err.msg);
    sample s;
    int32_t got[400];
    int bad = 0;
    uint64_t total = 0;
    // Read in a scattered order, as the loader does.
    for (int k = 0; k < N_SAMPLES; k++) {
        int i = (int)(((int64_t)k * 2897) % N_SAMPLES);
        make_sample(i, &s);
        int ok = ot_pairs_h5_sample_len(&r, i) == s.len && r.loss_start[i] == s.loss_start && r.direction[i] == s.dir &&
                 r.source_line[i] == (uint64_t)i + 2 && ot_pairs_h5_read(&r, i, got, &err) == 0 &&
                 memcmp(got, s.ids, sizeof(int32_t) * (size_t)s.len) == 0;
        if (!ok && bad++ < 5) fprintf(stderr, "sample %d differs (%s)\n", i, err.msg);
        total += (uint64_t)s.len;
    }
    CHECK(bad == 0, "%d samples differ after the round trip", bad);
    CHECK(r.n_tokens == total, "n_tokens %llu vs %llu", (unsigned long long)r.n_tokens, (unsigned long long)total);
    CHECK(ot_pairs_h5_read(&r, N_SAMPLES, got, &err) == -1 && strstr(err.msg, "out of range"), "index past the end");
    ot_pairs_h5_close(&r);
}

static void copy_file(const char *from, const char *to, long keep_bytes) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    int c;
    long n = 0;
    while ((keep_bytes < 0 || n < keep_bytes) && (c = fgetc(a)) != EOF) fputc(c, b), n++;
    fclose(a);
    fclose(b);
}

static void flip_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

// Open (and verify) must fail, with a message naming the file and containing needle.
static void expect_bad(const char *path, const char *needle, const char *what) {
    ot_pairs_h5 r;
    ot_err err = {{0}};
    int rc = ot_pairs_h5_open(&r, path, &err);
    if (rc == 0) {
        rc = ot_pairs_h5_verify(&r, &err);
        ot_pairs_h5_close(&r);
    }
    CHECK(rc == -1 && strstr(err.msg, path) && strstr(err.msg, needle), "%s: expected an error with '%s', got '%s'",
          what, needle, rc == 0 ? "(no error)" : err.msg);
    if (rc == -1) printf("ok   %-28s -> %s\n", what, err.msg);
}

// File address of the first chunk of a dataset, to damage raw data precisely.
static long chunk_address(const char *path, const char *dset) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, dset, H5P_DEFAULT), sp = H5Dget_space(d);
    hsize_t offset[1], size;
    haddr_t addr = 0;
    unsigned mask;
    H5Dget_chunk_info(d, sp, 0, offset, &mask, &addr, &size);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    return (long)addr + (long)size / 2;
}

// Edit a good copy with the HDF5 API: the damage a buggy or foreign writer would do.
static void set_version(const char *path, uint32_t v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), a = H5Aopen(f, "version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_UINT32, &v);
    H5Aclose(a);
    H5Fclose(f);
}

static void set_format(const char *path, const char *fmt) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "format");
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, &fmt);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
}

static void delete_dataset(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, name, H5P_DEFAULT);
    H5Fclose(f);
}

static void write_element(const char *path, const char *name, hsize_t at, hid_t mem_type, const void *value) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), d = H5Dopen2(f, name, H5P_DEFAULT), fs = H5Dget_space(d);
    hsize_t one = 1;
    hid_t ms = H5Screate_simple(1, &one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, &at, NULL, &one, NULL);
    H5Dwrite(d, mem_type, ms, fs, H5P_DEFAULT, value);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    H5Fclose(f);
}

static void test_bad_files(const char *good) {
    struct stat st;
    stat(good, &st);
    const char *p;

    expect_bad(tmp_path("absent.h5"), "No such file", "missing file");
    p = tmp_path("text.h5");
    FILE *f = fopen(p, "w");
    fputs("zh\tnan\n你好\t汝好\n", f);
    fclose(f);
    expect_bad(p, "not an HDF5 file", "a text file");
    p = tmp_path("empty.h5");
    copy_file(good, p, 0);
    expect_bad(p, "not an HDF5 file", "an empty file");
    p = tmp_path("half.h5");
    copy_file(good, p, (long)st.st_size / 2);
    expect_bad(p, "truncated", "truncated to half");
    p = tmp_path("head.h5");
    copy_file(good, p, 600);
    expect_bad(p, "", "truncated to 600 bytes");

    p = tmp_path("tokens_flip.h5");
    copy_file(good, p, -1);
    flip_byte(p, chunk_address(p, "tokens"));
    expect_bad(p, "/tokens", "flipped byte in /tokens");
    p = tmp_path("offsets_flip.h5");
    copy_file(good, p, -1);
    flip_byte(p, chunk_address(p, "offsets"));
    expect_bad(p, "/offsets", "flipped byte in /offsets");
    p = tmp_path("super_flip.h5");
    copy_file(good, p, -1);
    flip_byte(p, 20); // inside the superblock, which carries a checksum in this file format
    expect_bad(p, "", "flipped byte in the superblock");

    p = tmp_path("v2.h5");
    copy_file(good, p, -1);
    set_version(p, 2);
    expect_bad(p, "version 2; this osstune reads version 1", "version 2");
    p = tmp_path("v0.h5");
    copy_file(good, p, -1);
    set_version(p, 0);
    expect_bad(p, "version 0", "version 0");
    p = tmp_path("format.h5");
    copy_file(good, p, -1);
    set_format(p, "something-else");
    expect_bad(p, "not 'osstune-pairs'", "another format");
    p = tmp_path("no_loss.h5");
    copy_file(good, p, -1);
    delete_dataset(p, "loss_start");
    expect_bad(p, "dataset /loss_start is missing", "missing /loss_start");
    p = tmp_path("no_tokens.h5");
    copy_file(good, p, -1);
    delete_dataset(p, "tokens");
    expect_bad(p, "dataset /tokens is missing", "missing /tokens");

    p = tmp_path("offsets_bad.h5");
    copy_file(good, p, -1);
    uint64_t off = 0;
    write_element(p, "offsets", 3, H5T_NATIVE_UINT64, &off);
    expect_bad(p, "sample 2 is empty", "offsets going backwards");
    p = tmp_path("loss_bad.h5");
    copy_file(good, p, -1);
    uint32_t big = 100000;
    write_element(p, "loss_start", 4, H5T_NATIVE_UINT32, &big);
    expect_bad(p, "sample 4 has loss_start 100000", "loss_start past the sample");
    p = tmp_path("dir_bad.h5");
    copy_file(good, p, -1);
    uint8_t three = 3, nine = 9;
    write_element(p, "direction", 9, H5T_NATIVE_UINT8, &three);
    expect_bad(p, "sample 9 has direction tl2zh, but the file has no instruction_tl2zh", "direction 3, not in the file");
    write_element(p, "direction", 9, H5T_NATIVE_UINT8, &nine);
    expect_bad(p, "sample 9 has direction 9, not one of", "direction 9, not in the table");
    p = tmp_path("id_bad.h5");
    copy_file(good, p, -1);
    uint32_t huge = 300000;
    write_element(p, "tokens", 5, H5T_NATIVE_UINT32, &huge);
    expect_bad(p, "token 5 has id 300000", "id outside the vocabulary");
}

static void test_abort_and_refusals(void) {
    ot_err err = {{0}};
    int before = count_dir_entries();
    const char *path = tmp_path("aborted.h5");
    ot_pairs_h5_writer *w = ot_pairs_h5_create(path, &meta, &err);
    int32_t ids[3] = {1, 2, 3};
    CHECK(w && ot_pairs_h5_append(w, ids, 3, 1, 0, 2, &err) == 0, "append before abort");
    CHECK(count_dir_entries() == before + 1, "a temporary file exists while writing");
    ot_pairs_h5_abort(w);
    CHECK(!exists(path) && count_dir_entries() == before, "abort leaves nothing behind");

    w = ot_pairs_h5_create(path, &meta, &err);
    CHECK(ot_pairs_h5_append(w, ids, 3, 3, 0, 2, &err) == -1 && strstr(err.msg, "loss_start 3"),
          "loss_start outside the sample refused: %s", err.msg);
    CHECK(ot_pairs_h5_append(w, ids, 0, 0, 0, 2, &err) == -1, "empty sample refused");
    CHECK(ot_pairs_h5_append(w, ids, 3, 1, 2, 2, &err) == -1 && strstr(err.msg, "direction 2"),
          "direction 2 refused without its instruction");
    CHECK(ot_pairs_h5_append(w, ids, 3, 1, OT_N_DIRECTIONS, 2, &err) == -1, "a direction past the table refused");
    ot_pairs_h5_abort(w);
    CHECK(ot_pairs_h5_create(tmp_path("no/such/dir/x.h5"), &meta, &err) == NULL && strstr(err.msg, "cannot create"),
          "unwritable path: %s", err.msg);
}

// A file with Tâi-lô samples carries the instruction of each direction it holds, and only those.
static void test_tailo_directions(void) {
    ot_err err = {{0}};
    const char *path = tmp_path("tailo.h5");
    ot_pairs_h5_meta m = meta;
    m.instruction[OT_ZH2TL] = "zh → Tâi-lô";
    m.instruction[OT_NAN2TL] = "nan → Tâi-lô";
    m.directions = "zh2tl,nan2tl";
    ot_pairs_h5_writer *w = ot_pairs_h5_create(path, &m, &err);
    CHECK(w != NULL, "create: %s", err.msg);
    if (!w) return;
    int32_t ids[3] = {1, 2, 3};
    CHECK(ot_pairs_h5_append(w, ids, 3, 1, OT_ZH2TL, 2, &err) == 0 &&
              ot_pairs_h5_append(w, ids, 3, 2, OT_NAN2TL, 2, &err) == 0,
          "append zh2tl, nan2tl: %s", err.msg);
    CHECK(ot_pairs_h5_append(w, ids, 3, 1, OT_TL2ZH, 3, &err) == -1, "tl2zh refused: not declared");
    CHECK(ot_pairs_h5_finish(w, 1, 0, &err) == 0, "finish: %s", err.msg);
    ot_pairs_h5 r;
    CHECK(ot_pairs_h5_open(&r, path, &err) == 0, "open: %s", err.msg);
    if (!r.offsets) return;
    CHECK(r.n_samples == 2 && r.direction[0] == OT_ZH2TL && r.direction[1] == OT_NAN2TL, "directions read back");
    CHECK(r.instruction[OT_ZH2TL] && strcmp(r.instruction[OT_ZH2TL], "zh → Tâi-lô") == 0 && r.instruction[OT_NAN2TL] &&
              strcmp(r.instruction[OT_NAN2TL], "nan → Tâi-lô") == 0 && !r.instruction[OT_TL2ZH] &&
              strcmp(r.instruction[OT_ZH2NAN], "zh → nan") == 0 && strcmp(r.directions, "zh2tl,nan2tl") == 0,
          "instructions read back");
    ot_pairs_h5_close(&r);
}

int main(void) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/ot_h5_XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const char *good = tmp_path("good.h5");
    char good_path[512];
    snprintf(good_path, sizeof good_path, "%s", good);
    write_file(good_path);
    test_round_trip(good_path);
    test_bad_files(good_path);
    test_abort_and_refusals();
    test_tailo_directions();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0, "cleanup");
    return ot_test_finish("test_data_h5");
}
