// Training checkpoints (see checkpoint.h and docs/run-checkpoints.md).
//
// Crash safety comes from one rule: a directory named step-NNNNNN only ever appears by a rename of a temporary
// directory whose every file, COMPLETE last, is already fsync'ed. Until that rename the previous checkpoints are
// not touched; after it, `latest` and pruning only ever move forward to what is already durable.
#include "trainer/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats/json_util.h"
#include "formats/safetensors.h"
#include "formats/sha256.h"
#include "proto/osstune.pb-c.h"

#define CKPT_PATH_MAX 4096
#define STATE_MAX_BYTES (64u << 20) // a state.pb is a few KB; anything near this is not one

// The files of a checkpoint, in the order COMPLETE lists them. COMPLETE itself is the marker.
static const char *const ckpt_files[] = {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors",
                                         "state.pb"};
#define N_CKPT_FILES 4
#define COMPLETE_HEADER "osstune-checkpoint 1"

void ot_train_state_free(ot_train_state *st) {
    free(st->resolved_config_json);
    memset(st, 0, sizeof *st);
}

// ---- small file-system helpers ------------------------------------------------------------------------------------

// snprintf into a path buffer; a path that does not fit is an error rather than a silently different path.
static int path_fmt(char *buf, size_t n, ot_err *err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int path_fmt(char *buf, size_t n, ot_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= n) return ot_fail(err, "path too long (over %zu bytes): %.200s...", n - 1, buf);
    return 0;
}

// mkdir that accepts an existing directory. A new directory's entry is made durable (its parent fsync'ed) so that
// checkpoints written into it cannot vanish with it after a power loss.
static int make_dir(const char *path, ot_err *err) {
    if (mkdir(path, 0755) == 0) return ot_fsync_parent_dir(path, err);
    if (errno != EEXIST) return ot_fail(err, "cannot create directory %s: %s", path, strerror(errno));
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return ot_fail(err, "%s exists but is not a directory", path);
    return 0;
}


static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)type, (void)ftw;
    return remove(path);
}

// rm -r without following symlinks. Checkpoint directories are flat, but a damaged one may hold anything.
static int remove_tree(const char *path, ot_err *err) {
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return ot_fail(err, "cannot remove %s: %s", path, strerror(errno));
    return 0;
}

static int is_dir(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

// Whole small file into a NUL-terminated buffer; NULL with a message when absent, unreadable or over max bytes.
static char *read_small_file(const char *path, size_t max, size_t *len, ot_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ot_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = ot_malloc(max + 1);
    size_t n = fread(buf, 1, max + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > max) {
        ot_fail(err, bad ? "%s: read error" : "%s: larger than expected", path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

// ---- the list of step directories ---------------------------------------------------------------------------------

typedef struct {
    int64_t step;
    char name[64];
} step_entry;

// "step-" then only digits; anything else (".tmp-step-...", "latest", "step-12.bak") is not a checkpoint.
static int parse_step_name(const char *name, int64_t *step) {
    if (strncmp(name, "step-", 5) || !name[5] || strlen(name) > 30) return 0;
    for (const char *p = name + 5; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    *step = strtoll(name + 5, NULL, 10);
    return 1;
}

static int cmp_step_desc(const void *a, const void *b) {
    int64_t x = ((const step_entry *)a)->step, y = ((const step_entry *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

// Step directories of ckpt_dir, newest first. *n = 0 when ckpt_dir does not exist.
static int list_steps(const char *ckpt_dir, step_entry **out, int *n, ot_err *err) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(ckpt_dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return ot_fail(err, "cannot list %s: %s", ckpt_dir, strerror(errno));
    }
    int cap = 0;
    struct dirent *e;
    char path[CKPT_PATH_MAX];
    while ((e = readdir(d))) {
        int64_t step;
        if (!parse_step_name(e->d_name, &step)) continue;
        if (path_fmt(path, sizeof path, NULL, "%s/%s", ckpt_dir, e->d_name) || !is_dir(path)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            *out = ot_realloc(*out, (size_t)cap * sizeof **out);
        }
        (*out)[*n].step = step;
        snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%s", e->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n) qsort(*out, (size_t)*n, sizeof **out, cmp_step_desc);
    return 0;
}

// ---- state.pb -----------------------------------------------------------------------------------------------------

// Pack st (with the optimizer's step and schedule) into a malloc'ed buffer.
static uint8_t *state_pack(const ot_train_state *st, const ot_optimizer *opt, uint64_t n_params, size_t *len) {
    Osstune__TrainState msg = OSSTUNE__TRAIN_STATE__INIT;
    Osstune__DataCursor data = OSSTUNE__DATA_CURSOR__INIT;
    Osstune__OptimizerState os = OSSTUNE__OPTIMIZER_STATE__INIT;
    Osstune__Fingerprints fp = OSSTUNE__FINGERPRINTS__INIT;
    Osstune__Metrics mt = OSSTUNE__METRICS__INIT;
    Osstune__RngState rngs[OT_CKPT_MAX_RNG], *rng_ptrs[OT_CKPT_MAX_RNG];
    uint64_t words[OT_CKPT_MAX_RNG][4];
    char names[OT_CKPT_MAX_RNG][32];

    msg.format_version = OT_CKPT_FORMAT_VERSION;
    msg.step = st->step;
    msg.seed = st->seed;
    data.seed = st->data_seed;
    data.epoch = st->data_epoch;
    data.next = st->data_next;
    msg.data = &data;
    msg.n_rng = (size_t)st->n_rng;
    for (int i = 0; i < st->n_rng; i++) {
        osstune__rng_state__init(&rngs[i]);
        snprintf(names[i], sizeof names[i], "%s", st->rng[i].name);
        memcpy(words[i], st->rng[i].rng.s, sizeof words[i]);
        rngs[i].name = names[i];
        rngs[i].n_s = 4;
        rngs[i].s = words[i];
        rng_ptrs[i] = &rngs[i];
    }
    msg.rng = rng_ptrs;
    os.step = opt->step;
    os.lr = opt->cfg.lr;
    os.min_lr = opt->cfg.min_lr;
    os.warmup_steps = opt->cfg.warmup_steps;
    os.total_steps = opt->cfg.total_steps;
    os.beta1 = opt->cfg.beta1;
    os.beta2 = opt->cfg.beta2;
    os.eps = opt->cfg.eps;
    os.weight_decay = opt->cfg.weight_decay;
    os.max_grad_norm = opt->cfg.max_grad_norm;
    os.n_params = n_params;
    msg.optimizer = &os;
    msg.world_size = st->world_size;
    // The message keeps char* but never writes through them.
    fp.config = (char *)st->config_fingerprint;
    fp.model = (char *)st->model_fingerprint;
    fp.data = (char *)st->data_fingerprint;
    msg.fingerprints = &fp;
    mt.samples_seen = st->samples_seen;
    mt.tokens_seen = st->tokens_seen;
    mt.targets_seen = st->targets_seen;
    mt.last_loss = st->last_loss;
    mt.loss_ema = st->loss_ema;
    mt.last_grad_norm = st->last_grad_norm;
    mt.last_lr = st->last_lr;
    mt.elapsed_seconds = st->elapsed_seconds;
    msg.metrics = &mt;
    msg.resolved_config_json = st->resolved_config_json ? st->resolved_config_json : (char *)"";
    msg.saved_unix_time = (int64_t)time(NULL);

    *len = osstune__train_state__get_packed_size(&msg);
    uint8_t *buf = ot_malloc(*len);
    osstune__train_state__pack(&msg, buf);
    return buf;
}

static int copy_fingerprint(char dst[OT_FINGERPRINT_LEN], const char *src, const char *what, const char *path,
                            ot_err *err) {
    size_t n = strlen(src);
    if (n != 0 && n != 64) return ot_fail(err, "%s: the %s fingerprint has %zu characters, not 64", path, what, n);
    memcpy(dst, src, n + 1);
    return 0;
}

// Decode and check a state.pb held in buf into st (zeroed first). Damage is reported as an error naming path.
static int state_unpack(const uint8_t *buf, size_t len, const char *path, ot_train_state *st, ot_err *err) {
    memset(st, 0, sizeof *st);
    Osstune__TrainState *msg = osstune__train_state__unpack(NULL, len, buf);
    if (!msg) return ot_fail(err, "%s: not a valid TrainState protobuf (%zu bytes)", path, len);
    int rc = 0;
    if (msg->format_version == 0 || msg->format_version > OT_CKPT_FORMAT_VERSION)
        rc = ot_fail(err, "%s: state format version %u (this osstune reads version %d)", path, msg->format_version,
                     OT_CKPT_FORMAT_VERSION);
    else if (!msg->data || !msg->optimizer || !msg->fingerprints || !msg->metrics)
        rc = ot_fail(err, "%s: a required part (data cursor, optimizer, fingerprints or metrics) is missing", path);
    else if (msg->n_rng > OT_CKPT_MAX_RNG)
        rc = ot_fail(err, "%s: %zu RNG streams, at most %d are supported", path, msg->n_rng, OT_CKPT_MAX_RNG);
    for (size_t i = 0; !rc && i < msg->n_rng; i++)
        if (msg->rng[i]->n_s != 4 || strlen(msg->rng[i]->name) >= sizeof st->rng[0].name)
            rc = ot_fail(err, "%s: RNG stream %zu ('%.40s') has %zu state words, expected 4 (or a name over %zu chars)",
                         path, i, msg->rng[i]->name, msg->rng[i]->n_s, sizeof st->rng[0].name - 1);
    if (!rc) rc = copy_fingerprint(st->config_fingerprint, msg->fingerprints->config, "config", path, err);
    if (!rc) rc = copy_fingerprint(st->model_fingerprint, msg->fingerprints->model, "model", path, err);
    if (!rc) rc = copy_fingerprint(st->data_fingerprint, msg->fingerprints->data, "data", path, err);
    if (rc) {
        osstune__train_state__free_unpacked(msg, NULL);
        return rc;
    }
    st->step = msg->step;
    st->seed = msg->seed;
    st->data_seed = msg->data->seed;
    st->data_epoch = msg->data->epoch;
    st->data_next = msg->data->next;
    st->world_size = msg->world_size;
    st->n_rng = (int)msg->n_rng;
    for (int i = 0; i < st->n_rng; i++) {
        snprintf(st->rng[i].name, sizeof st->rng[i].name, "%s", msg->rng[i]->name);
        memcpy(st->rng[i].rng.s, msg->rng[i]->s, sizeof st->rng[i].rng.s);
    }
    const Osstune__OptimizerState *os = msg->optimizer;
    st->optimizer_step = os->step;
    st->optim.lr = os->lr;
    st->optim.min_lr = os->min_lr;
    st->optim.warmup_steps = (long)os->warmup_steps;
    st->optim.total_steps = (long)os->total_steps;
    st->optim.beta1 = os->beta1;
    st->optim.beta2 = os->beta2;
    st->optim.eps = os->eps;
    st->optim.weight_decay = os->weight_decay;
    st->optim.max_grad_norm = os->max_grad_norm;
    st->n_params = os->n_params;
    const Osstune__Metrics *mt = msg->metrics;
    st->samples_seen = mt->samples_seen;
    st->tokens_seen = mt->tokens_seen;
    st->targets_seen = mt->targets_seen;
    st->last_loss = mt->last_loss;
    st->loss_ema = mt->loss_ema;
    st->last_grad_norm = mt->last_grad_norm;
    st->last_lr = mt->last_lr;
    st->elapsed_seconds = mt->elapsed_seconds;
    st->resolved_config_json = msg->resolved_config_json[0] ? ot_strdup(msg->resolved_config_json) : NULL;
    st->saved_unix_time = msg->saved_unix_time;
    osstune__train_state__free_unpacked(msg, NULL);
    return 0;
}

// ---- COMPLETE: the marker, and what makes damage detectable --------------------------------------------------------

static int file_size(const char *path, int64_t *size) {
    struct stat sb;
    if (stat(path, &sb) != 0) return -1;
    *size = (int64_t)sb.st_size;
    return 0;
}

// Hash every file of the (temporary) checkpoint directory and write COMPLETE, atomically and fsync'ed.
static int write_complete(const char *dir, int64_t step, ot_err *err) {
    char path[CKPT_PATH_MAX], hex[65];
    size_t cap = 4096, len = 0;
    char *text = ot_malloc(cap);
    len += (size_t)snprintf(text + len, cap - len, COMPLETE_HEADER "\nstep %" PRId64 "\n", step);
    for (int i = 0; i < N_CKPT_FILES; i++) {
        int64_t size;
        if (path_fmt(path, sizeof path, err, "%s/%s", dir, ckpt_files[i]) || ot_sha256_file(path, hex, err)) {
            free(text);
            return -1;
        }
        if (file_size(path, &size)) {
            free(text);
            return ot_fail(err, "%s: cannot stat: %s", path, strerror(errno));
        }
        len += (size_t)snprintf(text + len, cap - len, "file %s %" PRId64 " %s\n", ckpt_files[i], size, hex);
    }
    if (path_fmt(path, sizeof path, err, "%s/COMPLETE", dir)) {
        free(text);
        return -1;
    }
    int rc = ot_write_file_atomic(path, text, len, err);
    free(text);
    return rc;
}

// Check a checkpoint directory's integrity against its COMPLETE marker: every file present with the recorded size
// and SHA-256. Any failure is damage, described in err.
static int verify_complete(const char *dir, int64_t dir_step, ot_err *err) {
    char path[CKPT_PATH_MAX];
    if (path_fmt(path, sizeof path, err, "%s/COMPLETE", dir)) return -1;
    if (access(path, F_OK) != 0) return ot_fail(err, "no COMPLETE marker (the write did not finish)");
    char *text = read_small_file(path, 1 << 16, NULL, err);
    if (!text) return -1;
    int rc = 0, seen[N_CKPT_FILES] = {0};
    int64_t step = -1;
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    if (!line || strcmp(line, COMPLETE_HEADER))
        rc = ot_fail(err, "COMPLETE marker does not start with '" COMPLETE_HEADER "'");
    for (line = strtok_r(NULL, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
        char name[64], want_hex[65], got_hex[65];
        long long size_ll, step_ll;
        if (sscanf(line, "step %lld", &step_ll) == 1) {
            step = step_ll;
            continue;
        }
        if (sscanf(line, "file %63s %lld %64s", name, &size_ll, want_hex) != 3 || strlen(want_hex) != 64) {
            rc = ot_fail(err, "COMPLETE marker has an unreadable line '%.80s'", line);
            break;
        }
        int k = -1;
        for (int i = 0; i < N_CKPT_FILES; i++)
            if (!strcmp(name, ckpt_files[i])) k = i;
        if (k < 0) {
            rc = ot_fail(err, "COMPLETE marker lists an unknown file '%s'", name);
            break;
        }
        seen[k] = 1;
        int64_t size;
        if (path_fmt(path, sizeof path, err, "%s/%s", dir, name)) rc = -1;
        else if (file_size(path, &size)) rc = ot_fail(err, "%s is missing", name);
        else if (size != size_ll)
            rc = ot_fail(err, "%s has %lld bytes, COMPLETE records %lld (%s)", name, (long long)size, size_ll,
                         size < size_ll ? "truncated" : "grown");
        else if (ot_sha256_file(path, got_hex, err)) rc = -1;
        else if (strcmp(got_hex, want_hex))
            rc = ot_fail(err, "%s has changed since it was written (SHA-256 %.12s..., COMPLETE records %.12s...)", name,
                         got_hex, want_hex);
    }
    for (int i = 0; i < N_CKPT_FILES && !rc; i++)
        if (!seen[i]) rc = ot_fail(err, "COMPLETE marker does not list %s", ckpt_files[i]);
    if (!rc && step != dir_step)
        rc = ot_fail(err, "COMPLETE marker records step %lld, the directory name says %lld", (long long)step,
                     (long long)dir_step);
    free(text);
    return rc;
}

// ---- save -------------------------------------------------------------------------------------------------------

static int write_optimizer(const char *dir, const ot_optimizer *opt, ot_err *err) {
    char path[CKPT_PATH_MAX], buf[64];
    if (path_fmt(path, sizeof path, err, "%s/optimizer.safetensors", dir)) return -1;
    ot_st_writer *w = ot_st_writer_new();
    int64_t shape[1] = {(int64_t)opt->n};
    // torch.optim.AdamW's names for the moments; the order is the flat LoRA buffer's (docs/run-checkpoints.md).
    ot_st_writer_add(w, "exp_avg", OT_DT_F32, 1, shape, opt->m);
    ot_st_writer_add(w, "exp_avg_sq", OT_DT_F32, 1, shape, opt->v);
    ot_st_writer_set_metadata(w, "format", "osstune-adamw-flat-1");
    snprintf(buf, sizeof buf, "%ld", opt->step);
    ot_st_writer_set_metadata(w, "step", buf);
    return ot_st_writer_finish(w, path, err);
}

// Remove unfinished writes (.tmp-*) left by a writer that crashed or was killed. Only one process writes a run
// directory, so none of them can still be in progress.
static void remove_stale_tmp(const char *ckpt_dir) {
    DIR *d = opendir(ckpt_dir);
    if (!d) return;
    struct dirent *e;
    char path[CKPT_PATH_MAX];
    ot_err err;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-", 5) || path_fmt(path, sizeof path, NULL, "%s/%s", ckpt_dir, e->d_name)) continue;
        if (remove_tree(path, &err)) ot_warn("could not remove the unfinished checkpoint %s: %s", path, err.msg);
    }
    closedir(d);
}

static void test_pause(const char *tmp_dir) {
    const char *s = getenv("OSSTUNE_TEST_CKPT_PAUSE");
    if (!s || !*s) return;
    double sec = atof(s);
    if (!(sec > 0)) return;
    fprintf(stderr, "osstune: OSSTUNE_TEST_CKPT_PAUSE: pausing %.1f s while writing %s\n", sec, tmp_dir);
    fflush(stderr);
    struct timespec ts = {(time_t)sec, (long)((sec - floor(sec)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

// Move the finished temporary directory to its final name. A step saved twice is swapped in atomically
// (renameat2 RENAME_EXCHANGE) so some complete step-N exists at every instant; the old copy, now under the
// temporary name, is removed afterwards.
static int install_dir(const char *tmp, const char *final, const char *ckpt_dir, int64_t step, ot_err *err) {
    if (rename(tmp, final) == 0) return 0;
    if (errno != EEXIST && errno != ENOTEMPTY)
        return ot_fail(err, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        ot_err e2;
        if (ot_fsync_dir(ckpt_dir, err)) return -1;
        if (remove_tree(tmp, &e2)) ot_warn("could not remove the replaced checkpoint (now %s): %s", tmp, e2.msg);
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        return ot_fail(err, "cannot swap %s with the existing %s: %s", tmp, final, strerror(errno));
    // This file system cannot swap directories. A complete existing copy of the same step stays (it holds the same
    // step); a damaged one is moved aside first, which loses nothing that could be loaded.
    ot_err why;
    if (verify_complete(final, step, &why) == 0) {
        ot_warn("%s already exists and is complete; kept it (this file system cannot replace a directory "
                "atomically), the new copy is discarded", final);
        return remove_tree(tmp, err);
    }
    char aside[CKPT_PATH_MAX];
    if (path_fmt(aside, sizeof aside, err, "%s/.tmp-replaced-step-%06" PRId64 "-%d", ckpt_dir, step, (int)getpid()))
        return -1;
    if (rename(final, aside) != 0) return ot_fail(err, "cannot move %s aside: %s", final, strerror(errno));
    if (rename(tmp, final) != 0) return ot_fail(err, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    ot_err e2;
    if (remove_tree(aside, &e2)) ot_warn("could not remove %s: %s", aside, e2.msg);
    return 0;
}

// Keep the newest checkpoint `step` and the keep_last-1 newest complete ones older than it; remove every other
// step directory older than it. Newer ones (left by a run that was resumed from an earlier point) are not touched.
static void prune(const char *ckpt_dir, int64_t step, int keep_last) {
    if (keep_last <= 0) return;
    step_entry *steps;
    int n;
    ot_err err;
    if (list_steps(ckpt_dir, &steps, &n, &err)) {
        ot_warn("not pruning old checkpoints: %s", err.msg);
        return;
    }
    int kept = 1; // the one just written
    char path[CKPT_PATH_MAX];
    for (int i = 0; i < n; i++) {
        if (steps[i].step >= step) continue;
        if (path_fmt(path, sizeof path, &err, "%s/%s/COMPLETE", ckpt_dir, steps[i].name)) continue;
        if (kept < keep_last && access(path, F_OK) == 0) {
            kept++;
            continue;
        }
        path_fmt(path, sizeof path, &err, "%s/%s", ckpt_dir, steps[i].name);
        if (remove_tree(path, &err)) ot_warn("could not prune old checkpoint: %s", err.msg);
    }
    free(steps);
}

int ot_ckpt_save(const char *run_dir, const ot_train_state *st, const ot_lora *lo, const ot_model *m,
                 const ot_optimizer *opt, int keep_last, ot_err *err) {
    if (st->step < 0) return ot_fail(err, "cannot checkpoint a negative step (%lld)", (long long)st->step);
    if (opt->n != lo->n_params)
        return ot_fail(err, "cannot checkpoint: the optimizer holds %zu moments, the adapter %zu parameters", opt->n,
                       lo->n_params);
    if (st->n_rng < 0 || st->n_rng > OT_CKPT_MAX_RNG)
        return ot_fail(err, "cannot checkpoint %d RNG streams (at most %d)", st->n_rng, OT_CKPT_MAX_RNG);
    const char *fps[3] = {st->config_fingerprint, st->model_fingerprint, st->data_fingerprint};
    for (int i = 0; i < 3; i++) // the loader checks this too: catch it here, where it can be fixed
        if (strlen(fps[i]) != 0 && strlen(fps[i]) != 64)
            return ot_fail(err, "cannot checkpoint: the %s fingerprint '%.70s' is not 64 hex digits",
                           i == 0 ? "config" : i == 1 ? "model" : "data", fps[i]);
    char ckpt_dir[CKPT_PATH_MAX], tmp[CKPT_PATH_MAX], final[CKPT_PATH_MAX], path[CKPT_PATH_MAX];
    if (path_fmt(ckpt_dir, sizeof ckpt_dir, err, "%s/ckpt", run_dir) ||
        path_fmt(final, sizeof final, err, "%s/step-%06" PRId64, ckpt_dir, st->step) ||
        path_fmt(tmp, sizeof tmp, err, "%s/.tmp-step-%06" PRId64 "-%d", ckpt_dir, st->step, (int)getpid()))
        return -1;
    if (make_dir(run_dir, err) || make_dir(ckpt_dir, err)) return -1;
    remove_stale_tmp(ckpt_dir);
    if (mkdir(tmp, 0755) != 0) return ot_fail(err, "cannot create %s: %s", tmp, strerror(errno));

    // Every writer below writes "<file>.tmp", fsyncs it, renames it and fsyncs the directory.
    int rc = ot_lora_save_peft(lo, tmp, err);
    if (!rc) rc = write_optimizer(tmp, opt, err);
    if (!rc) test_pause(tmp);
    if (!rc) {
        size_t len;
        uint8_t *buf = state_pack(st, opt, (uint64_t)lo->n_params, &len);
        rc = path_fmt(path, sizeof path, err, "%s/state.pb", tmp);
        if (!rc) rc = ot_write_file_atomic(path, buf, len, err);
        free(buf);
    }
    if (!rc) rc = write_complete(tmp, st->step, err);
    if (!rc) rc = ot_fsync_dir(tmp, err);
    if (!rc) rc = install_dir(tmp, final, ckpt_dir, st->step, err);
    if (rc) {
        ot_err e2;
        if (is_dir(tmp) && remove_tree(tmp, &e2)) ot_warn("%s", e2.msg);
        return -1;
    }
    if (ot_fsync_dir(ckpt_dir, err)) return -1;

    char name[64];
    snprintf(name, sizeof name, "step-%06" PRId64 "\n", st->step);
    if (path_fmt(path, sizeof path, err, "%s/latest", ckpt_dir) || ot_write_file_atomic(path, name, strlen(name), err))
        return -1;
    prune(ckpt_dir, st->step, keep_last);
    return 0;
}

// ---- load -------------------------------------------------------------------------------------------------------

// 0 when the two adapters have the same slots, rank and scaling; else -1 naming the first difference.
static int same_layout(const ot_lora *a, const ot_lora *b, ot_err *err) {
    if (a->r != b->r) return ot_fail(err, "LoRA rank r=%d, the run uses r=%d", a->r, b->r);
    if (a->peft.lora_alpha != b->peft.lora_alpha || a->peft.use_rslora != b->peft.use_rslora)
        return ot_fail(err, "lora_alpha %g%s, the run uses %g%s", a->peft.lora_alpha,
                       a->peft.use_rslora ? " rsLoRA" : "", b->peft.lora_alpha, b->peft.use_rslora ? " rsLoRA" : "");
    if (a->n_layers != b->n_layers) return ot_fail(err, "%d layers, the model has %d", a->n_layers, b->n_layers);
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < OT_LORA_N_TARGETS; t++) {
            const ot_lora_slot *x = &a->slots[l][t], *y = &b->slots[l][t];
            if (x->present != y->present)
                return ot_fail(err, "layer %d %s is %sadapted, in the run it is %s", l, ot_lora_target_names[t],
                               x->present ? "" : "not ", y->present ? "adapted" : "not");
            if (x->present && (x->n_exp != y->n_exp || x->in != y->in || x->out != y->out || x->a_off != y->a_off ||
                               x->b_off != y->b_off))
                return ot_fail(err, "layer %d %s has another shape or position", l, ot_lora_target_names[t]);
        }
    if (a->n_params != b->n_params) return ot_fail(err, "%zu parameters, the run has %zu", a->n_params, b->n_params);
    return 0;
}

// Outcome of trying one checkpoint directory.
enum { LOAD_OK = 0, LOAD_DAMAGED = 1, LOAD_INCOMPATIBLE = -1 };

static int read_moment(const ot_safetensors *sf, const char *name, size_t n, const ot_tensor **out, ot_err *err) {
    const ot_tensor *t = ot_safetensors_find(sf, name);
    if (!t) return ot_fail(err, "optimizer.safetensors has no tensor '%s'", name);
    if (t->dtype != OT_DT_F32 || t->ndim != 1 || (size_t)t->numel != n)
        return ot_fail(err, "optimizer.safetensors '%s' is %s with %lld values, the adapter has %zu parameters (F32)",
                       name, ot_dtype_name(t->dtype), (long long)t->numel, n);
    *out = t;
    return 0;
}

// Try to load dir. On LOAD_OK st/lo/opt are filled; otherwise nothing is changed and err says why.
static int load_one(const char *dir, int64_t dir_step, ot_train_state *st, ot_lora *lo, const ot_model *m,
                    ot_optimizer *opt, ot_err *err) {
    if (opt->n != lo->n_params) {
        ot_fail(err, "the optimizer holds %zu moments but the adapter %zu parameters (initialise the optimizer for "
                "this adapter before loading)", opt->n, lo->n_params);
        return LOAD_INCOMPATIBLE;
    }
    if (verify_complete(dir, dir_step, err)) return LOAD_DAMAGED;

    char path[CKPT_PATH_MAX];
    if (path_fmt(path, sizeof path, err, "%s/state.pb", dir)) return LOAD_INCOMPATIBLE;
    size_t len;
    uint8_t *buf = (uint8_t *)read_small_file(path, STATE_MAX_BYTES, &len, err);
    if (!buf) return LOAD_DAMAGED;
    ot_train_state got;
    int rc = state_unpack(buf, len, path, &got, err);
    free(buf);
    if (rc) return LOAD_DAMAGED;
    if (got.step != dir_step) {
        ot_fail(err, "state.pb records step %lld, the directory name says %lld", (long long)got.step,
                (long long)dir_step);
        ot_train_state_free(&got);
        return LOAD_DAMAGED;
    }
    // The files are exactly what the writer wrote (COMPLETE's hashes), so an adapter that does not fit this model
    // or this run's LoRA layout is a mismatch of runs, not damage.
    ot_lora saved;
    ot_err why;
    if (ot_lora_load_peft(&saved, &m->cfg, dir, &why)) {
        ot_fail(err, "its adapter does not fit this model: %s (the checkpoint was written for the model with "
                "fingerprint %.16s...)", why.msg, got.model_fingerprint[0] ? got.model_fingerprint : "(none)");
        ot_train_state_free(&got);
        return LOAD_INCOMPATIBLE;
    }
    if (same_layout(&saved, lo, &why)) {
        ot_fail(err, "its adapter has another layout than this run's LoRA (%s); a run cannot change its LoRA "
                "targets, rank or alpha: start a new run directory instead", why.msg);
        ot_lora_free(&saved);
        ot_train_state_free(&got);
        return LOAD_INCOMPATIBLE;
    }
    if (got.n_params != lo->n_params) {
        ot_fail(err, "state.pb records %llu LoRA parameters, the adapter has %zu", (unsigned long long)got.n_params,
                lo->n_params);
        ot_lora_free(&saved);
        ot_train_state_free(&got);
        return LOAD_DAMAGED;
    }

    ot_safetensors sf;
    if (path_fmt(path, sizeof path, err, "%s/optimizer.safetensors", dir) || ot_safetensors_open(&sf, path, err)) {
        ot_lora_free(&saved);
        ot_train_state_free(&got);
        return LOAD_DAMAGED;
    }
    const ot_tensor *tm = NULL, *tv = NULL;
    rc = read_moment(&sf, "exp_avg", lo->n_params, &tm, err);
    if (!rc) rc = read_moment(&sf, "exp_avg_sq", lo->n_params, &tv, err);
    if (!rc && got.optimizer_step < 0)
        rc = ot_fail(err, "state.pb records a negative optimizer step (%lld)", (long long)got.optimizer_step);
    if (rc) {
        ot_safetensors_close(&sf);
        ot_lora_free(&saved);
        ot_train_state_free(&got);
        return LOAD_DAMAGED;
    }

    // Everything checked: commit.
    memcpy(lo->params, saved.params, lo->n_params * sizeof(float));
    memcpy(opt->m, tm->data, lo->n_params * sizeof(float));
    memcpy(opt->v, tv->data, lo->n_params * sizeof(float));
    opt->step = (long)got.optimizer_step;
    ot_safetensors_close(&sf);
    ot_lora_free(&saved);
    ot_train_state_free(st);
    *st = got;
    return LOAD_OK;
}

int ot_ckpt_load(const char *ckpt_dir, ot_train_state *st, ot_lora *lo, const ot_model *m, ot_optimizer *opt,
                 ot_err *err) {
    char dir[CKPT_PATH_MAX];
    if (path_fmt(dir, sizeof dir, err, "%s", ckpt_dir)) return -1;
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--) dir[n - 1] = 0; // "step-000010/" is fine too
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    int64_t step;
    if (!parse_step_name(base, &step))
        return ot_fail(err, "%s: not a checkpoint directory (those are named step-NNNNNN)", ckpt_dir);
    ot_err why;
    if (load_one(dir, step, st, lo, m, opt, &why) == LOAD_OK) return 0;
    return ot_fail(err, "checkpoint %s cannot be loaded: %s", dir, why.msg);
}

int ot_ckpt_load_latest(const char *run_dir, ot_train_state *st, ot_lora *lo, const ot_model *m, ot_optimizer *opt,
                        char *loaded_dir, size_t loaded_dir_len, ot_err *err) {
    char ckpt_dir[CKPT_PATH_MAX], dir[CKPT_PATH_MAX];
    if (path_fmt(ckpt_dir, sizeof ckpt_dir, err, "%s/ckpt", run_dir)) return -1;
    step_entry *steps;
    int n;
    if (list_steps(ckpt_dir, &steps, &n, err)) return -1;
    int result = 1;
    for (int i = 0; i < n; i++) {
        if (path_fmt(dir, sizeof dir, err, "%s/%s", ckpt_dir, steps[i].name)) {
            result = -1;
            break;
        }
        ot_err why;
        int rc = load_one(dir, steps[i].step, st, lo, m, opt, &why);
        if (rc == LOAD_OK) {
            if (loaded_dir && loaded_dir_len) snprintf(loaded_dir, loaded_dir_len, "%s", dir);
            result = 0;
            break;
        }
        if (rc == LOAD_INCOMPATIBLE) {
            result = ot_fail(err, "cannot resume from checkpoint %s: %s", dir, why.msg);
            break;
        }
        ot_warn("checkpoint %s is damaged and is skipped: %s", dir, why.msg);
    }
    if (result == 1 && n > 0)
        ot_warn("none of the %d checkpoint(s) in %s could be loaded: there is nothing to resume from", n, ckpt_dir);
    free(steps);
    return result;
}

// ---- compatibility ------------------------------------------------------------------------------------------------

// Append ", key (saved → now)" for each top-level option that differs between two resolved configs.
static void config_diff(const char *saved_json, const char *now_json, char *out, size_t n) {
    out[0] = 0;
    if (!saved_json || !now_json) return;
    json_t *a = json_loads(saved_json, 0, NULL), *b = json_loads(now_json, 0, NULL);
    if (json_is_object(a) && json_is_object(b)) {
        size_t len = 0;
        int shown = 0;
        json_t *both[2] = {a, b};
        for (int side = 0; side < 2; side++) {
            const char *key;
            json_t *v;
            json_object_foreach(both[side], key, v) {
                json_t *other = json_object_get(both[1 - side], key);
                if (side == 1 && other) continue; // listed in the first pass
                if (other && json_equal(v, other)) continue;
                if (shown++ >= 8) continue;
                char *sa = json_dumps(side ? other : v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
                char *sb = json_dumps(side ? v : other, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
                int k = snprintf(out + len, n - len, "%s%s: %.60s -> %.60s", len ? ", " : "", key,
                                 sa ? sa : "(absent)", sb ? sb : "(absent)");
                free(sa);
                free(sb);
                if (k < 0 || (size_t)k >= n - len) {
                    out[len] = 0;
                    break;
                }
                len += (size_t)k;
            }
        }
        if (shown > 8 && len + 32 < n) snprintf(out + len, n - len, ", and %d more", shown - 8);
    }
    json_decref(a);
    json_decref(b);
}

int ot_ckpt_check_compatible(const ot_train_state *saved, const ot_train_state *now, int force, ot_err *err) {
    struct {
        const char *what, *a, *b;
    } fps[3] = {{"base model", saved->model_fingerprint, now->model_fingerprint},
                {"data set", saved->data_fingerprint, now->data_fingerprint},
                {"config", saved->config_fingerprint, now->config_fingerprint}};
    char msg[OT_ERR_LEN];
    size_t len = 0;
    for (int i = 0; i < 3; i++) {
        if (!fps[i].a[0] || !fps[i].b[0]) {
            ot_warn("the %s fingerprint is not recorded %s; it cannot be checked", fps[i].what,
                    !fps[i].a[0] ? "in the checkpoint" : "for this run");
            continue;
        }
        if (!strcmp(fps[i].a, fps[i].b)) continue;
        char diff[512] = "";
        if (i == 2) config_diff(saved->resolved_config_json, now->resolved_config_json, diff, sizeof diff);
        int k = snprintf(msg + len, sizeof msg - len, "%sa different %s (checkpoint %.12s..., now %.12s...%s%s)",
                         len ? "; " : "", fps[i].what, fps[i].a, fps[i].b, diff[0] ? "; changed: " : "", diff);
        if (k > 0) len = (size_t)k < sizeof msg - len ? len + (size_t)k : sizeof msg - 1;
    }
    if (!len) return 0;
    if (force) {
        ot_warn("resuming anyway (forced) although the checkpoint at step %lld was written for %s",
                (long long)saved->step, msg);
        return 0;
    }
    return ot_fail(err, "refusing to resume: the checkpoint at step %lld was written for %s; forcing the resume "
                   "overrides this check", (long long)saved->step, msg);
}

// ---- fingerprints -------------------------------------------------------------------------------------------------

void ot_fingerprint_text(const char *text, char hex[OT_FINGERPRINT_LEN]) {
    uint8_t d[32];
    ot_sha256(text, strlen(text), d);
    ot_sha256_hex(d, hex);
}

// Feed a labelled, length-prefixed record so that no two different inputs hash the same byte stream.
static void feed(ot_sha256_ctx *c, const char *label, const void *data, size_t len) {
    char head[160];
    int k = snprintf(head, sizeof head, "%s %zu\n", label, len);
    ot_sha256_update(c, head, (size_t)k);
    ot_sha256_update(c, data, len);
}

static int feed_whole_file(ot_sha256_ctx *c, const char *dir, const char *name, ot_err *err) {
    char path[CKPT_PATH_MAX];
    if (path_fmt(path, sizeof path, err, "%s/%s", dir, name)) return -1;
    size_t len;
    char *text = read_small_file(path, 64u << 20, &len, err);
    if (!text) return -1;
    feed(c, name, text, len);
    free(text);
    return 0;
}

static int pread_all(int fd, void *buf, size_t n, int64_t off) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r, n -= (size_t)r, off += r;
    }
    return 0;
}

#define FP_SAMPLES 8
#define FP_SAMPLE_BYTES (64 << 10)

// A shard: name, size, the 8-byte header length and JSON header, and FP_SAMPLES evenly spaced windows of data.
static int feed_shard(ot_sha256_ctx *c, const char *dir, const char *name, ot_err *err) {
    char path[CKPT_PATH_MAX];
    if (path_fmt(path, sizeof path, err, "%s/%s", dir, name)) return -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ot_fail(err, "%s: cannot open to fingerprint it: %s", path, strerror(errno));
    struct stat sb;
    uint8_t len8[8];
    int rc = 0;
    if (fstat(fd, &sb) != 0 || sb.st_size < 8 || pread_all(fd, len8, 8, 0))
        rc = ot_fail(err, "%s: too short or unreadable for a safetensors file", path);
    uint64_t hlen = 0;
    for (int i = 0; i < 8 && !rc; i++) hlen |= (uint64_t)len8[i] << (8 * i);
    if (!rc && hlen > (uint64_t)sb.st_size - 8)
        rc = ot_fail(err, "%s: header length %llu exceeds the file size", path, (unsigned long long)hlen);
    if (!rc) {
        char size_text[32];
        snprintf(size_text, sizeof size_text, "%lld", (long long)sb.st_size);
        feed(c, "shard", name, strlen(name));
        feed(c, "size", size_text, strlen(size_text));
        uint8_t *buf = ot_malloc(hlen > FP_SAMPLE_BYTES ? hlen : FP_SAMPLE_BYTES);
        if (pread_all(fd, buf, hlen, 8)) rc = ot_fail(err, "%s: cannot read the header", path);
        else feed(c, "header", buf, hlen);
        int64_t data_off = 8 + (int64_t)hlen, data_len = (int64_t)sb.st_size - data_off;
        for (int i = 0; i < FP_SAMPLES && !rc; i++) {
            int64_t win = data_len < FP_SAMPLE_BYTES ? data_len : FP_SAMPLE_BYTES;
            int64_t off = data_off + (data_len - win) * i / (FP_SAMPLES - 1);
            if (pread_all(fd, buf, (size_t)win, off))
                rc = ot_fail(err, "%s: cannot read at offset %lld", path, (long long)off);
            else feed(c, "sample", buf, (size_t)win);
        }
        free(buf);
    }
    close(fd);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int ot_fingerprint_model_dir(const char *dir, char hex[OT_FINGERPRINT_LEN], ot_err *err) {
    ot_sha256_ctx c;
    ot_sha256_init(&c);
    const char *tag = "osstune-model-fingerprint-1";
    ot_sha256_update(&c, tag, strlen(tag));
    if (feed_whole_file(&c, dir, "config.json", err)) return -1;

    char path[CKPT_PATH_MAX];
    if (path_fmt(path, sizeof path, err, "%s/model.safetensors.index.json", dir)) return -1;
    const char **shards = NULL;
    int n_shards = 0, rc = 0;
    json_t *index = NULL;
    if (access(path, F_OK) == 0) {
        if (feed_whole_file(&c, dir, "model.safetensors.index.json", err)) return -1;
        index = ot_json_load_file(path, err);
        if (!index) return -1;
        json_t *map = json_object_get(index, "weight_map");
        if (!json_is_object(map)) {
            json_decref(index);
            return ot_fail(err, "%s: no weight_map object", path);
        }
        shards = ot_malloc((json_object_size(map) + 1) * sizeof *shards);
        const char *key;
        json_t *v;
        json_object_foreach(map, key, v) {
            if (!json_is_string(v)) {
                rc = ot_fail(err, "%s: weight_map['%s'] is not a file name", path, key);
                break;
            }
            shards[n_shards++] = json_string_value(v);
        }
        qsort(shards, (size_t)n_shards, sizeof *shards, cmp_str);
    } else {
        shards = ot_malloc(sizeof *shards);
        shards[n_shards++] = "model.safetensors";
    }
    for (int i = 0; i < n_shards && !rc; i++)
        if (i == 0 || strcmp(shards[i], shards[i - 1])) rc = feed_shard(&c, dir, shards[i], err);
    free(shards);
    json_decref(index);
    if (rc) return -1;
    uint8_t d[32];
    ot_sha256_final(&c, d);
    ot_sha256_hex(d, hex);
    return 0;
}
