// Training checkpoints (trainer/train/checkpoint.h) on the tiny golden model.
//
//   test_ckpt roundtrip FIXTURES OUT   save -> load is bitwise; saving a step twice; keep-last pruning; latest;
//                                      incompatible adapter layout; fingerprints; the resume check
//   test_ckpt damage FIXTURES OUT      truncated adapter, missing COMPLETE, changed / unparsable state.pb, wrong
//                                      optimizer size, stale .tmp directories: warned about and skipped
//   test_ckpt kill FIXTURES OUT        a writer SIGKILLed in the middle of a checkpoint
//
// FIXTURES is tests/fixtures/golden (model/ and adapter/); OUT is a scratch directory, emptied first.
// Everything here is an exact comparison: a checkpoint must give back the very bits it was given.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "formats/sha256.h"
#include "tests/test_util.h"
#include "trainer/train/checkpoint.h"

static const char *g_fixtures, *g_out;
static ot_model g_model;

// ---- helpers --------------------------------------------------------------------------------------------------

#define PATH_LEN 4096
// Format a path into out[PATH_LEN]; a path that does not fit stops the test.
static void pathf(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_LEN, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_LEN) ot_die("path too long: %.100s...", out);
}

static int rm_entry(const char *p, const struct stat *sb, int type, struct FTW *f) {
    (void)sb, (void)type, (void)f;
    return remove(p);
}
static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int exists(const char *fmt, const char *a, const char *b) {
    char p[4096];
    pathf(p, fmt, a, b);
    return access(p, F_OK) == 0;
}

// The fixture adapter's layout with every parameter, moment and state field set to distinct values.
typedef struct {
    ot_lora lo;
    ot_optimizer opt;
    ot_train_state st;
} run_state;

static void make_run(run_state *r, uint64_t seed, int64_t step) {
    char dir[4096];
    ot_err err;
    pathf(dir, "%s/adapter", g_fixtures);
    if (ot_lora_load_peft(&r->lo, &g_model.cfg, dir, &err)) ot_die("%s", err.msg);
    ot_optim_config cfg;
    ot_optim_config_default(&cfg);
    cfg.lr = 3e-4f, cfg.warmup_steps = 5, cfg.total_steps = 300, cfg.min_lr = 1e-6f;
    ot_optimizer_init(&r->opt, r->lo.n_params, &cfg);
    ot_rng rng;
    ot_rng_seed(&rng, seed);
    for (size_t i = 0; i < r->lo.n_params; i++) {
        r->lo.params[i] = (float)ot_rng_normal(&rng);
        r->opt.m[i] = (float)ot_rng_normal(&rng) * 1e-3f;
        r->opt.v[i] = (float)ot_rng_uniform(&rng) * 1e-6f;
    }
    r->opt.step = (long)step;
    ot_train_state *st = &r->st;
    memset(st, 0, sizeof *st);
    st->step = step;
    st->seed = 0x1234567890abcdefULL ^ seed;
    st->data_seed = seed * 7 + 1;
    st->data_epoch = 2;
    st->data_next = 1000 + step;
    st->world_size = 3;
    st->n_rng = 2;
    snprintf(st->rng[0].name, sizeof st->rng[0].name, "dropout");
    ot_rng_seed(&st->rng[0].rng, seed + 1);
    snprintf(st->rng[1].name, sizeof st->rng[1].name, "sampling");
    ot_rng_seed(&st->rng[1].rng, seed + 2);
    ot_rng_u64(&st->rng[1].rng); // mid-stream
    st->samples_seen = 17 * step, st->tokens_seen = 900 * step, st->targets_seen = 400 * step;
    st->last_loss = 2.0 + 1.0 / 3.0, st->loss_ema = 2.5 + seed * 1e-9, st->last_grad_norm = 0.75;
    st->last_lr = 2.9e-4, st->elapsed_seconds = 123.456;
    st->resolved_config_json = ot_strdup("{\"lr\": 0.0003, \"steps\": 300, \"seed\": 42, \"lora_r\": 4}");
    ot_fingerprint_text(st->resolved_config_json, st->config_fingerprint);
    ot_fingerprint_text("the data", st->data_fingerprint);
    pathf(dir, "%s/model", g_fixtures);
    if (ot_fingerprint_model_dir(dir, st->model_fingerprint, &err)) ot_die("%s", err.msg);
}

// An empty run with the same layout (zeros everywhere) to load into.
static void make_empty(run_state *r) {
    make_run(r, 99, 0);
    memset(r->lo.params, 0, r->lo.n_params * sizeof(float));
    memset(r->opt.m, 0, r->opt.n * sizeof(float));
    memset(r->opt.v, 0, r->opt.n * sizeof(float));
    r->opt.step = 0;
    ot_train_state_free(&r->st);
}

static void free_run(run_state *r) {
    ot_lora_free(&r->lo);
    ot_optimizer_free(&r->opt);
    ot_train_state_free(&r->st);
}

static int save(const char *run_dir, run_state *r, int keep_last) {
    ot_err err;
    int rc = ot_ckpt_save(run_dir, &r->st, &r->lo, &r->opt, keep_last, &err);
    if (rc) fprintf(stderr, "save failed: %s\n", err.msg);
    return rc;
}

// Load with stderr captured into *log (caller frees); also echoed to stdout for the test log.
static int load_capture(const char *run_dir, run_state *into, char *loaded, size_t loaded_len, char **log,
                        ot_err *err) {
    char path[4096];
    pathf(path, "%s/stderr.txt", g_out);
    fflush(stderr);
    int saved_fd = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (saved_fd < 0 || fd < 0) ot_die("cannot redirect stderr to %s", path);
    dup2(fd, 2);
    close(fd);
    int rc = ot_ckpt_load(run_dir, NULL, &into->st, &into->lo, &g_model.cfg, NULL, &into->opt, loaded, loaded_len, err);
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    *log = ot_test_read_file(path, NULL);
    if (!*log) *log = ot_strdup("");
    if (**log) printf("  (stderr) %s", *log);
    return rc;
}

// Every bit of a loaded run against the one saved.
static void check_same(const run_state *got, const run_state *want, const char *what) {
    size_t n = want->lo.n_params;
    CHECK(got->lo.n_params == n, "%s: n_params %zu vs %zu", what, got->lo.n_params, n);
    CHECK(!memcmp(got->lo.params, want->lo.params, n * sizeof(float)), "%s: LoRA parameters differ", what);
    CHECK(!memcmp(got->opt.m, want->opt.m, n * sizeof(float)), "%s: exp_avg differs", what);
    CHECK(!memcmp(got->opt.v, want->opt.v, n * sizeof(float)), "%s: exp_avg_sq differs", what);
    CHECK(got->opt.step == want->opt.step, "%s: optimizer step %ld vs %ld", what, got->opt.step, want->opt.step);
    const ot_train_state *a = &got->st, *b = &want->st;
    CHECK(a->step == b->step && a->seed == b->seed, "%s: step/seed", what);
    CHECK(a->data_seed == b->data_seed && a->data_epoch == b->data_epoch && a->data_next == b->data_next,
          "%s: data cursor", what);
    CHECK(a->world_size == b->world_size, "%s: world size %d vs %d", what, a->world_size, b->world_size);
    CHECK(a->n_rng == b->n_rng, "%s: %d RNG streams vs %d", what, a->n_rng, b->n_rng);
    for (int i = 0; i < a->n_rng && i < b->n_rng; i++)
        CHECK(!strcmp(a->rng[i].name, b->rng[i].name) && !memcmp(&a->rng[i].rng, &b->rng[i].rng, sizeof(ot_rng)),
              "%s: RNG stream %d", what, i);
    CHECK(a->samples_seen == b->samples_seen && a->tokens_seen == b->tokens_seen && a->targets_seen == b->targets_seen,
          "%s: counters", what);
    CHECK(!memcmp(&a->last_loss, &b->last_loss, sizeof(double)) &&
              !memcmp(&a->loss_ema, &b->loss_ema, sizeof(double)) &&
              !memcmp(&a->last_grad_norm, &b->last_grad_norm, sizeof(double)) &&
              !memcmp(&a->last_lr, &b->last_lr, sizeof(double)) &&
              !memcmp(&a->elapsed_seconds, &b->elapsed_seconds, sizeof(double)),
          "%s: metrics", what);
    CHECK(!strcmp(a->config_fingerprint, b->config_fingerprint) &&
              !strcmp(a->model_fingerprint, b->model_fingerprint) &&
              !strcmp(a->data_fingerprint, b->data_fingerprint),
          "%s: fingerprints", what);
    CHECK(a->resolved_config_json && !strcmp(a->resolved_config_json, b->resolved_config_json), "%s: config JSON",
          what);
    // What the checkpoint records from the optimizer itself.
    CHECK(a->optimizer_step == want->opt.step && a->n_params == n, "%s: optimizer step / n_params record", what);
    const ot_optim_config *c = &want->opt.cfg;
    CHECK(a->optim.lr == c->lr && a->optim.min_lr == c->min_lr && a->optim.warmup_steps == c->warmup_steps &&
              a->optim.total_steps == c->total_steps && a->optim.beta1 == c->beta1 && a->optim.beta2 == c->beta2 &&
              a->optim.eps == c->eps && a->optim.weight_decay == c->weight_decay &&
              a->optim.max_grad_norm == c->max_grad_norm,
          "%s: optimizer settings / LR schedule", what);
    CHECK(a->saved_unix_time > 0, "%s: save time recorded", what);
}

static char *read_latest(const char *run_dir) {
    char p[4096];
    pathf(p, "%s/ckpt/latest", run_dir);
    char *s = ot_test_read_file(p, NULL);
    return s ? s : ot_strdup("(none)");
}

// Entries of dir whose name starts with prefix.
static int count_entries(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    closedir(d);
    return n;
}

// ---- roundtrip --------------------------------------------------------------------------------------------------

static void test_roundtrip(void) {
    char run_dir[4096], ckpt[4096], loaded[4096];
    pathf(run_dir, "%s/run", g_out);
    pathf(ckpt, "%s/ckpt", run_dir);
    ot_err err;
    char *log;

    // Nothing there yet: 1, and nothing changed.
    run_state empty;
    make_empty(&empty);
    CHECK(load_capture(run_dir, &empty, loaded, sizeof loaded, &log, &err) == 1, "empty run dir: expected 1");
    free(log);
    CHECK(empty.opt.step == 0 && empty.lo.params[0] == 0.0f, "empty run dir changed the state");

    run_state a;
    make_run(&a, 1, 7);
    CHECK(save(run_dir, &a, 3) == 0, "save step 7");
    const char *files[] = {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "state.pb",
                           "COMPLETE"};
    for (int i = 0; i < 5; i++) CHECK(exists("%s/step-000007/%s", ckpt, files[i]), "step-000007/%s missing", files[i]);
    char *latest = read_latest(run_dir);
    CHECK(!strcmp(latest, "step-000007\n"), "latest holds '%s'", latest);
    free(latest);
    CHECK(count_entries(ckpt, ".tmp") == 0, "temporary directories left behind");

    CHECK(load_capture(run_dir, &empty, loaded, sizeof loaded, &log, &err) == 0, "load: %s", err.msg);
    CHECK(!*log, "a clean load printed warnings");
    free(log);
    CHECK(strstr(loaded, "/ckpt/step-000007") != NULL, "loaded %s", loaded);
    check_same(&empty, &a, "save -> load");

    // The adapter alone is a PEFT directory the PEFT reader takes as it is.
    ot_lora peft;
    char dir[4096];
    pathf(dir, "%s/step-000007", ckpt);
    CHECK(ot_lora_load_peft(&peft, &g_model.cfg, dir, &err) == 0, "PEFT read of the checkpoint: %s", err.msg);
    CHECK(peft.n_params == a.lo.n_params && !memcmp(peft.params, a.lo.params, peft.n_params * sizeof(float)),
          "PEFT read differs");
    ot_lora_free(&peft);

    // Saving the same step again replaces it: the newer content wins, nothing temporary is left.
    run_state a2;
    make_run(&a2, 2, 7);
    CHECK(save(run_dir, &a2, 3) == 0, "save step 7 again");
    CHECK(count_entries(ckpt, ".tmp") == 0, "temporary directories left after the second save of a step");
    CHECK(load_capture(run_dir, &empty, loaded, sizeof loaded, &log, &err) == 0, "load: %s", err.msg);
    free(log);
    check_same(&empty, &a2, "second save of step 7");

    // keep_last = 2: after steps 10..40 only 30 and 40 remain; latest names 40, which loads.
    run_state r[4];
    for (int i = 0; i < 4; i++) {
        make_run(&r[i], 10 + (uint64_t)i, 10 * (i + 1));
        CHECK(save(run_dir, &r[i], 2) == 0, "save step %d", 10 * (i + 1));
    }
    CHECK(count_entries(ckpt, "step-") == 2, "keep_last 2: %d step directories", count_entries(ckpt, "step-"));
    CHECK(exists("%s/%s", ckpt, "step-000030") && exists("%s/%s", ckpt, "step-000040"), "30 and 40 must remain");
    latest = read_latest(run_dir);
    CHECK(!strcmp(latest, "step-000040\n"), "latest holds '%s'", latest);
    free(latest);
    CHECK(load_capture(run_dir, &empty, loaded, sizeof loaded, &log, &err) == 0, "load: %s", err.msg);
    free(log);
    check_same(&empty, &r[3], "newest of 4 with keep_last 2");
    // One named directory (what --resume PATH uses), with or without a trailing slash.
    pathf(dir, "%s/step-000030/", ckpt);
    CHECK(ot_ckpt_load(NULL, dir, &empty.st, &empty.lo, &g_model.cfg, NULL, &empty.opt, NULL, 0, &err) == 0, "ot_ckpt_load: %s", err.msg);
    check_same(&empty, &r[2], "ot_ckpt_load of step 30");
    pathf(dir, "%s", ckpt);
    CHECK(ot_ckpt_load(NULL, dir, &empty.st, &empty.lo, &g_model.cfg, NULL, &empty.opt, NULL, 0, &err) == -1 && strstr(err.msg, "step-NNNNNN"),
          "a directory not named step-N must be refused: %s", err.msg);
    // keep_last <= 0 keeps everything.
    run_state r5;
    make_run(&r5, 50, 50);
    CHECK(save(run_dir, &r5, 0) == 0, "save step 50 (keep all)");
    CHECK(count_entries(ckpt, "step-") == 3, "keep_last 0: %d step directories", count_entries(ckpt, "step-"));
    // keep_last = 1 keeps only the new one.
    run_state r6;
    make_run(&r6, 60, 60);
    CHECK(save(run_dir, &r6, 1) == 0, "save step 60 (keep 1)");
    CHECK(count_entries(ckpt, "step-") == 1 && exists("%s/%s", ckpt, "step-000060"), "keep_last 1");

    // A run with another LoRA layout (r = 2 on q only) cannot take this checkpoint: an error, not a silent fresh
    // start, and not "damaged".
    run_state other;
    ot_lora_spec spec = {.r = 2, .alpha = 4, .targets = 1u << OT_LORA_Q};
    ot_lora_init(&other.lo, &g_model.cfg, &spec, 5);
    ot_optim_config cfg;
    ot_optim_config_default(&cfg);
    ot_optimizer_init(&other.opt, other.lo.n_params, &cfg);
    memset(&other.st, 0, sizeof other.st);
    CHECK(load_capture(run_dir, &other, loaded, sizeof loaded, &log, &err) == -1, "other layout must be refused");
    free(log);
    printf("  other layout: %s\n", err.msg);
    CHECK(strstr(err.msg, "step-000060") && strstr(err.msg, "layout"), "message names the checkpoint and the layout");
    free_run(&other);
    // An optimizer of the wrong size is refused too.
    ot_optimizer_free(&empty.opt);
    ot_optimizer_init(&empty.opt, empty.lo.n_params - 1, &cfg);
    CHECK(load_capture(run_dir, &empty, loaded, sizeof loaded, &log, &err) == -1, "wrong optimizer size accepted");
    free(log);
    printf("  optimizer size: %s\n", err.msg);

    free_run(&a), free_run(&a2), free_run(&r5), free_run(&r6), free_run(&empty);
    for (int i = 0; i < 4; i++) free_run(&r[i]);
}

// ---- fingerprints and the resume check ------------------------------------------------------------------------------

static void copy_file(const char *from, const char *to) {
    size_t n;
    char *data = ot_test_read_file(from, &n);
    if (!data) ot_die("cannot read %s", from);
    FILE *f = fopen(to, "wb");
    if (!f || fwrite(data, 1, n, f) != n) ot_die("cannot write %s", to);
    fclose(f);
    free(data);
}

static void flip_byte(const char *path, long offset) {
    int fd = open(path, O_RDWR);
    unsigned char c;
    if (fd < 0 || pread(fd, &c, 1, offset) != 1) ot_die("cannot read %s at %ld", path, offset);
    c ^= 0x5a;
    if (pwrite(fd, &c, 1, offset) != 1) ot_die("cannot write %s", path);
    close(fd);
}

static void test_fingerprints(void) {
    const char *names[] = {"config.json", "model.safetensors.index.json", "model-00000-of-00002.safetensors",
                           "model-00001-of-00002.safetensors"};
    char src[4096], dst[4096], copy[4096], a[65], b[65], c[65];
    ot_err err;
    pathf(copy, "%s/model-copy", g_out);
    mkdir(copy, 0755);
    for (int i = 0; i < 4; i++) {
        pathf(src, "%s/model/%s", g_fixtures, names[i]);
        pathf(dst, "%s/%s", copy, names[i]);
        copy_file(src, dst);
    }
    pathf(src, "%s/model", g_fixtures);
    CHECK(ot_fingerprint_model_dir(src, a, &err) == 0, "%s", err.msg);
    CHECK(ot_fingerprint_model_dir(copy, b, &err) == 0, "%s", err.msg);
    CHECK(strlen(a) == 64 && !strcmp(a, b), "a byte-identical copy must fingerprint the same (%s vs %s)", a, b);
    // A changed weight in a sampled window (the first bytes after the header) changes it.
    pathf(dst, "%s/%s", copy, names[3]);
    size_t n;
    unsigned char *shard = (unsigned char *)ot_test_read_file(dst, &n);
    long hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (long)shard[i] << (8 * i);
    free(shard);
    flip_byte(dst, 8 + hlen + 3);
    CHECK(ot_fingerprint_model_dir(copy, c, &err) == 0, "%s", err.msg);
    CHECK(strcmp(a, c) != 0, "a changed weight must change the fingerprint");
    flip_byte(dst, 8 + hlen + 3); // back
    CHECK(ot_fingerprint_model_dir(copy, c, &err) == 0 && !strcmp(a, c), "restored copy must match again");
    // A changed config.json changes it.
    pathf(dst, "%s/config.json", copy);
    flip_byte(dst, 10);
    CHECK(ot_fingerprint_model_dir(copy, c, &err) == 0 && strcmp(a, c) != 0, "a changed config.json must count");
    // A missing shard is an error naming it.
    pathf(dst, "%s/%s", copy, names[2]);
    unlink(dst);
    CHECK(ot_fingerprint_model_dir(copy, c, &err) == -1 && strstr(err.msg, names[2]), "missing shard: %s", err.msg);
    char t1[65], t2[65];
    ot_fingerprint_text("abc", t1);
    CHECK(!strcmp(t1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "SHA-256('abc') = %s", t1);
    ot_fingerprint_text("abd", t2);
    CHECK(strcmp(t1, t2) != 0, "texts must differ");

    // The resume check.
    run_state saved, now;
    make_run(&saved, 1, 10);
    make_run(&now, 1, 0);
    CHECK(ot_ckpt_check_compatible(&saved.st, &now.st, 0, &err) == 0, "same run refused: %s", err.msg);
    now.st.world_size = 2;
    CHECK(ot_ckpt_check_compatible(&saved.st, &now.st, 0, &err) == 0, "another world size must be allowed");

    snprintf(now.st.model_fingerprint, sizeof now.st.model_fingerprint, "%s", c);
    CHECK(ot_ckpt_check_compatible(&saved.st, &now.st, 0, &err) == -1, "another model accepted");
    printf("  model: %s\n", err.msg);
    CHECK(strstr(err.msg, "base model") && !strstr(err.msg, "data") && !strstr(err.msg, "config"),
          "message must name the model only");
    CHECK(ot_ckpt_check_compatible(&saved.st, &now.st, 1, &err) == 0, "forced resume refused");
    snprintf(now.st.model_fingerprint, sizeof now.st.model_fingerprint, "%s", saved.st.model_fingerprint);

    ot_fingerprint_text("other data", now.st.data_fingerprint);
    free(now.st.resolved_config_json);
    now.st.resolved_config_json = ot_strdup("{\"lr\": 0.0001, \"steps\": 300, \"seed\": 42, \"warmup\": 10}");
    ot_fingerprint_text(now.st.resolved_config_json, now.st.config_fingerprint);
    CHECK(ot_ckpt_check_compatible(&saved.st, &now.st, 0, &err) == -1, "another data set and config accepted");
    printf("  data+config: %s\n", err.msg);
    CHECK(strstr(err.msg, "data") && strstr(err.msg, "config") && !strstr(err.msg, "base model"),
          "message must name data and config");
    CHECK(strstr(err.msg, "lr: 0.0003 -> 0.0001") && strstr(err.msg, "lora_r: 4 -> (absent)") &&
              strstr(err.msg, "warmup: (absent) -> 10") && !strstr(err.msg, "steps:"),
          "message must list exactly the changed options");
    // A fingerprint the checkpoint did not record cannot refuse the resume (a warning says so).
    now.st.data_fingerprint[0] = 0;
    snprintf(now.st.config_fingerprint, sizeof now.st.config_fingerprint, "%s", saved.st.config_fingerprint);
    CHECK(ot_ckpt_check_compatible(&saved.st, &now.st, 0, &err) == 0, "unrecorded fingerprint refused: %s", err.msg);
    free_run(&saved), free_run(&now);
}

// ---- damage -------------------------------------------------------------------------------------------------------

static void truncate_file(const char *path, long keep) {
    if (truncate(path, keep) != 0) ot_die("cannot truncate %s: %s", path, strerror(errno));
}

// Rewrite COMPLETE so that it matches the files as they are now (to reach the checks behind the hashes).
static void reseal(const char *dir, int64_t step) {
    const char *files[] = {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "state.pb"};
    char path[4096], hex[65];
    ot_err err;
    pathf(path, "%s/COMPLETE", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "osstune-checkpoint 1\nstep %lld\n", (long long)step);
    for (int i = 0; i < 4; i++) {
        char p[4096];
        struct stat sb;
        pathf(p, "%s/%s", dir, files[i]);
        if (stat(p, &sb) || ot_sha256_file(p, hex, &err)) ot_die("reseal %s", p);
        fprintf(f, "file %s %lld %s\n", files[i], (long long)sb.st_size, hex);
    }
    fclose(f);
}

// One damage case: newest (step 20) damaged by `how`, the load must warn naming step-000020 and `needle`, then
// give back step 10 exactly.
static void expect_fallback(const char *run_dir, const run_state *older, const char *needle, const char *what) {
    run_state got;
    make_empty(&got);
    char loaded[4096], *log;
    ot_err err;
    int rc = load_capture(run_dir, &got, loaded, sizeof loaded, &log, &err);
    CHECK(rc == 0, "%s: load returned %d (%s)", what, rc, rc < 0 ? err.msg : "");
    CHECK(strstr(log, "warning") && strstr(log, "step-000020") && strstr(log, needle),
          "%s: the warning must name step-000020 and '%s'", what, needle);
    CHECK(strstr(loaded, "step-000010") != NULL, "%s: loaded %s instead of step-000010", what, loaded);
    check_same(&got, older, what);
    free(log);
    free_run(&got);
}

static void test_damage(void) {
    char run_dir[4096], ckpt[4096], p[4096];
    pathf(run_dir, "%s/run", g_out);
    pathf(ckpt, "%s/ckpt", run_dir);
    run_state s10, s20;
    make_run(&s10, 10, 10);
    make_run(&s20, 20, 20);
    CHECK(save(run_dir, &s10, 5) == 0 && save(run_dir, &s20, 5) == 0, "saves");

    pathf(p, "%s/step-000020/adapter_model.safetensors", ckpt);
    truncate_file(p, 1000);
    expect_fallback(run_dir, &s10, "adapter_model.safetensors has 1000 bytes", "truncated adapter");

    CHECK(save(run_dir, &s20, 5) == 0, "re-save 20 over the damaged copy");
    pathf(p, "%s/step-000020/COMPLETE", ckpt);
    unlink(p);
    expect_fallback(run_dir, &s10, "no COMPLETE marker", "missing COMPLETE");
    {
        // Loading that very directory by name is an error (nothing to fall back to), saying why.
        run_state got;
        make_empty(&got);
        ot_err err;
        pathf(p, "%s/step-000020", ckpt);
        CHECK(ot_ckpt_load(NULL, p, &got.st, &got.lo, &g_model.cfg, NULL, &got.opt, NULL, 0, &err) == -1 && strstr(err.msg, "COMPLETE"),
              "a damaged named checkpoint must be an error: %s", err.msg);
        CHECK(got.opt.step == 0 && got.lo.params[0] == 0.0f, "a failed load changed the state");
        free_run(&got);
    }

    CHECK(save(run_dir, &s20, 5) == 0, "re-save 20");
    pathf(p, "%s/step-000020/state.pb", ckpt);
    flip_byte(p, 20);
    expect_fallback(run_dir, &s10, "state.pb has changed", "garbled state.pb");

    // Garbage that is not a protobuf at all, with COMPLETE rewritten to match: the parser must catch it.
    CHECK(save(run_dir, &s20, 5) == 0, "re-save 20");
    FILE *f = fopen(p, "wb");
    for (int i = 0; i < 32; i++) fputc(0xff, f);
    fclose(f);
    pathf(p, "%s/step-000020", ckpt);
    reseal(p, 20);
    expect_fallback(run_dir, &s10, "not a valid TrainState", "unparsable state.pb");

    // Optimizer moments of the wrong length (resealed): sizes not matching the adapter.
    CHECK(save(run_dir, &s20, 5) == 0, "re-save 20");
    {
        run_state small;
        make_run(&small, 3, 20);
        char tmp_run[4096];
        pathf(tmp_run, "%s/other-run", g_out);
        ot_optimizer_free(&small.opt);
        ot_optim_config cfg;
        ot_optim_config_default(&cfg);
        // The writer refuses mismatched sizes, so build the bad file from a run whose adapter is smaller.
        ot_lora_spec spec = {.r = 4, .alpha = 8, .targets = 1u << OT_LORA_Q};
        ot_lora_free(&small.lo);
        ot_lora_init(&small.lo, &g_model.cfg, &spec, 1);
        ot_optimizer_init(&small.opt, small.lo.n_params, &cfg);
        CHECK(save(tmp_run, &small, 1) == 0, "save the small run");
        char from[4096], to[4096];
        pathf(from, "%s/ckpt/step-000020/optimizer.safetensors", tmp_run);
        pathf(to, "%s/step-000020/optimizer.safetensors", ckpt);
        copy_file(from, to);
        pathf(to, "%s/step-000020", ckpt);
        reseal(to, 20);
        free_run(&small);
    }
    expect_fallback(run_dir, &s10, "exp_avg", "optimizer of the wrong size");

    // Both damaged: an error (a run that started over would replace them), each one reported.
    pathf(p, "%s/step-000010/COMPLETE", ckpt);
    unlink(p);
    {
        run_state got;
        make_empty(&got);
        char loaded[4096], *log;
        ot_err err;
        CHECK(load_capture(run_dir, &got, loaded, sizeof loaded, &log, &err) == -1 &&
                  strstr(err.msg, "none of the 2 checkpoints") && strstr(err.msg, "move them away"),
              "all damaged: expected an error saying what to do, got '%s'", err.msg);
        CHECK(strstr(log, "step-000010") && strstr(log, "step-000020"), "both must be reported");
        CHECK(got.opt.step == 0 && got.lo.params[0] == 0.0f, "all damaged: state changed");
        free(log);
        free_run(&got);
    }

    // A stale temporary directory (a crashed writer, newer step, files but no marker) is never loaded, and the
    // next save removes it.
    CHECK(save(run_dir, &s10, 5) == 0 && save(run_dir, &s20, 5) == 0, "re-save 10 and 20");
    pathf(p, "%s/.tmp-step-000030-999999", ckpt);
    mkdir(p, 0755);
    char from[4096], to[4096];
    pathf(from, "%s/step-000020/adapter_model.safetensors", ckpt);
    pathf(to, "%s/adapter_model.safetensors", p);
    copy_file(from, to);
    {
        run_state got;
        make_empty(&got);
        char loaded[4096], *log;
        ot_err err;
        CHECK(load_capture(run_dir, &got, loaded, sizeof loaded, &log, &err) == 0, "load with a stale tmp dir");
        CHECK(strstr(loaded, "step-000020") != NULL, "loaded %s", loaded);
        CHECK(!strstr(log, ".tmp-"), "a stale temporary directory is not a candidate");
        check_same(&got, &s20, "with a stale tmp dir");
        free(log);
        free_run(&got);
    }
    run_state s30;
    make_run(&s30, 30, 30);
    CHECK(save(run_dir, &s30, 5) == 0, "save 30");
    CHECK(access(p, F_OK) != 0, "the stale %s must be removed by the next save", p);
    free_run(&s10), free_run(&s20), free_run(&s30);
}

// ---- a writer killed mid-checkpoint -----------------------------------------------------------------------------

// Read the child's stderr until the pause line shows up (or timeout_ms passes). Returns 1 when seen.
static int wait_for_pause(int fd, int timeout_ms, char *tmp_dir, size_t len) {
    char buf[8192];
    size_t have = 0;
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0) continue;
        ssize_t r = read(fd, buf + have, sizeof buf - 1 - have);
        if (r <= 0) return 0;
        have += (size_t)r;
        buf[have] = 0;
        const char *hit = strstr(buf, "OSSTUNE_TEST_CKPT_PAUSE: pausing");
        const char *w = hit ? strstr(hit, " while writing ") : NULL;
        const char *nl = w ? strchr(w, '\n') : NULL;
        if (nl) {
            w += strlen(" while writing ");
            snprintf(tmp_dir, len, "%.*s", (int)(nl - w), w);
            return 1;
        }
    }
    return 0;
}

static void test_kill(void) {
    char run_dir[4096], ckpt[4096];
    pathf(run_dir, "%s/run", g_out);
    pathf(ckpt, "%s/ckpt", run_dir);
    run_state s10, s20;
    make_run(&s10, 10, 10);
    make_run(&s20, 20, 20);
    // keep_last 1: the write that gets killed would prune step 10 if it ever got that far.
    CHECK(save(run_dir, &s10, 1) == 0, "save 10");

    int pipefd[2];
    if (pipe(pipefd)) ot_die("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t child = fork();
    if (child < 0) ot_die("fork: %s", strerror(errno));
    if (child == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], 2);
        setenv("OSSTUNE_TEST_CKPT_PAUSE", "60", 1);
        int rc = save(run_dir, &s20, 1);
        _exit(rc ? 2 : 3); // reaching here means the kill came too late
    }
    close(pipefd[1]);
    char tmp_dir[4096] = "";
    int paused = wait_for_pause(pipefd[0], 30000, tmp_dir, sizeof tmp_dir);
    CHECK(paused, "the child never reached the pause point");
    if (paused) {
        printf("  child %d paused while writing %s; killing it\n", (int)child, tmp_dir);
        CHECK(exists("%s/%s", tmp_dir, "adapter_model.safetensors") &&
                  exists("%s/%s", tmp_dir, "optimizer.safetensors"),
              "the child had written the adapter and the optimizer state");
    }
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    close(pipefd[0]);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);

    CHECK(!exists("%s/%s", ckpt, "step-000020"), "a killed write must not leave step-000020");
    char *latest = read_latest(run_dir);
    CHECK(!strcmp(latest, "step-000010\n"), "latest holds '%s'", latest);
    free(latest);
    run_state got;
    make_empty(&got);
    char loaded[4096], *log;
    ot_err err;
    CHECK(load_capture(run_dir, &got, loaded, sizeof loaded, &log, &err) == 0, "load after the kill: %s", err.msg);
    CHECK(strstr(loaded, "step-000010") != NULL, "loaded %s", loaded);
    check_same(&got, &s10, "after a killed write");
    free(log);

    // The run goes on: the next save succeeds and clears the debris.
    CHECK(save(run_dir, &s20, 1) == 0, "save 20 after the kill");
    CHECK(count_entries(ckpt, ".tmp") == 0, "debris of the killed writer left behind");
    CHECK(count_entries(ckpt, "step-") == 1, "keep_last 1");
    CHECK(load_capture(run_dir, &got, loaded, sizeof loaded, &log, &err) == 0, "load: %s", err.msg);
    free(log);
    check_same(&got, &s20, "save after the kill");
    free_run(&got), free_run(&s10), free_run(&s20);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s roundtrip|damage|kill FIXTURES_DIR OUT_DIR\n", argv[0]);
        return 2;
    }
    const char *which = argv[1];
    g_fixtures = argv[2];
    g_out = argv[3];
    rm_rf(g_out);
    // create the parents too: the output lives in a fresh build tree
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", g_out);
    for (char *p = parent + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(parent, 0755);
            *p = '/';
        }
    if (mkdir(g_out, 0755) && errno != EEXIST) ot_die("cannot create %s: %s", g_out, strerror(errno));
    char dir[4096];
    ot_err err;
    pathf(dir, "%s/model", g_fixtures);
    if (ot_model_load(&g_model, dir, &err)) ot_die("%s", err.msg);

    if (!strcmp(which, "roundtrip")) {
        test_roundtrip();
        test_fingerprints();
    } else if (!strcmp(which, "damage")) {
        test_damage();
    } else if (!strcmp(which, "kill")) {
        test_kill();
    } else {
        ot_die("unknown test '%s'", which);
    }
    ot_model_free(&g_model);
    char name[64];
    snprintf(name, sizeof name, "test_ckpt_%s", which);
    return ot_test_finish(name);
}
