// The run directory protocol (see run_dir.h and docs/run-checkpoints.md).
#include "formats/run_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/sha256.h"
#include "proto/osstune.pb-c.h"

#define STATE_MAX_BYTES (64u << 20) // a state.pb is a few KB; anything near this is not one
#define COMPLETE_HEADER "osstune-checkpoint 1"
// COMPLETE and state of --full checkpoints written before both modes shared this protocol: still read
#define LEGACY_FULL_HEADER "osstune-full-checkpoint 1"
#define MAX_FILES 64 // files one checkpoint may hold (a model directory's files included)

const char *ot_run_mode_name(ot_run_mode m) { return m == OT_RUN_FULL ? "full" : "lora"; }

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

static int is_dir(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int file_size(const char *path, int64_t *size) {
    struct stat sb;
    if (stat(path, &sb) != 0) return -1;
    *size = (int64_t)sb.st_size;
    return 0;
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
    char path[OT_PATH_MAX];
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

// Pack st (with the optimizer's position and settings) into a malloc'ed buffer.
static uint8_t *state_pack(const ot_train_state *st, int64_t optimizer_step, const ot_optim_config *optim,
                           uint64_t n_params, size_t *len) {
    Osstune__TrainState msg = OSSTUNE__TRAIN_STATE__INIT;
    Osstune__DataCursor data = OSSTUNE__DATA_CURSOR__INIT;
    Osstune__OptimizerState os = OSSTUNE__OPTIMIZER_STATE__INIT;
    Osstune__Fingerprints fp = OSSTUNE__FINGERPRINTS__INIT;
    Osstune__Metrics mt = OSSTUNE__METRICS__INIT;
    Osstune__RngState rngs[OT_CKPT_MAX_RNG], *rng_ptrs[OT_CKPT_MAX_RNG];
    uint64_t words[OT_CKPT_MAX_RNG][4];
    char names[OT_CKPT_MAX_RNG][32];

    msg.format_version = OT_CKPT_FORMAT_VERSION;
    msg.mode = (char *)ot_run_mode_name(st->mode);
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
    os.step = optimizer_step;
    os.lr = optim->lr;
    os.min_lr = optim->min_lr;
    os.warmup_steps = optim->warmup_steps;
    os.total_steps = optim->total_steps;
    os.beta1 = optim->beta1;
    os.beta2 = optim->beta2;
    os.eps = optim->eps;
    os.weight_decay = optim->weight_decay;
    os.max_grad_norm = optim->max_grad_norm;
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
    else if (msg->mode[0] && strcmp(msg->mode, "lora") && strcmp(msg->mode, "full"))
        rc = ot_fail(err, "%s: unknown run mode '%.40s' (lora or full)", path, msg->mode);
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
    st->mode = !strcmp(msg->mode, "full") ? OT_RUN_FULL : OT_RUN_LORA; // "" = written before the field: LoRA
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

// The state.json of a --full checkpoint written before --full shared this protocol: the same fields as JSON.
static int legacy_state_json(const char *path, ot_train_state *st, ot_err *err) {
    memset(st, 0, sizeof *st);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return ot_fail(err, "%s: not JSON: %s (line %d)", path, je.text, je.line);
    static const struct { const char *key; size_t off; } ints[] = {
        {"step", offsetof(ot_train_state, step)},
        {"data_epoch", offsetof(ot_train_state, data_epoch)},
        {"data_next", offsetof(ot_train_state, data_next)},
        {"samples_seen", offsetof(ot_train_state, samples_seen)},
        {"tokens_seen", offsetof(ot_train_state, tokens_seen)},
        {"targets_seen", offsetof(ot_train_state, targets_seen)},
        {"optimizer_step", offsetof(ot_train_state, optimizer_step)}};
    static const struct { const char *key; size_t off; } reals[] = {
        {"last_loss", offsetof(ot_train_state, last_loss)},
        {"loss_ema", offsetof(ot_train_state, loss_ema)},
        {"last_grad_norm", offsetof(ot_train_state, last_grad_norm)},
        {"last_lr", offsetof(ot_train_state, last_lr)},
        {"elapsed_seconds", offsetof(ot_train_state, elapsed_seconds)}};
    static const struct { const char *key; size_t off; } prints[] = {
        {"config_fingerprint", offsetof(ot_train_state, config_fingerprint)},
        {"model_fingerprint", offsetof(ot_train_state, model_fingerprint)},
        {"data_fingerprint", offsetof(ot_train_state, data_fingerprint)}};
    int rc = 0;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0] && !rc; i++) {
        json_t *v = json_object_get(j, ints[i].key);
        if (!json_is_integer(v)) rc = ot_fail(err, "%s: '%s' is missing or not an integer", path, ints[i].key);
        else *(int64_t *)((char *)st + ints[i].off) = json_integer_value(v);
    }
    for (size_t i = 0; i < sizeof reals / sizeof reals[0] && !rc; i++) {
        json_t *v = json_object_get(j, reals[i].key);
        if (!json_is_number(v)) rc = ot_fail(err, "%s: '%s' is missing or not a number", path, reals[i].key);
        else *(double *)((char *)st + reals[i].off) = json_number_value(v);
    }
    for (size_t i = 0; i < sizeof prints / sizeof prints[0] && !rc; i++) {
        json_t *v = json_object_get(j, prints[i].key);
        if (!json_is_string(v)) rc = ot_fail(err, "%s: '%s' is not a fingerprint", path, prints[i].key);
        else rc = copy_fingerprint((char *)st + prints[i].off, json_string_value(v), prints[i].key, path, err);
    }
    const char *u64_keys[2] = {"seed", "data_seed"};
    uint64_t *u64_dst[2] = {&st->seed, &st->data_seed};
    for (int i = 0; i < 2 && !rc; i++) { // uint64 values as decimal strings: JSON integers are int64 in jansson
        json_t *v = json_object_get(j, u64_keys[i]);
        char *end = NULL;
        if (json_is_string(v)) *u64_dst[i] = strtoull(json_string_value(v), &end, 10);
        if (!end || *end) rc = ot_fail(err, "%s: '%s' is missing or not an unsigned integer", path, u64_keys[i]);
    }
    json_t *ws = json_object_get(j, "world_size"), *np = json_object_get(j, "n_params"),
           *cfg = json_object_get(j, "resolved_config_json");
    if (!rc && (!json_is_integer(ws) || !json_is_integer(np)))
        rc = ot_fail(err, "%s: 'world_size' or 'n_params' is missing or not an integer", path);
    if (!rc) {
        st->mode = OT_RUN_FULL;
        st->world_size = (int32_t)json_integer_value(ws);
        st->n_params = (uint64_t)json_integer_value(np);
        st->resolved_config_json = json_is_string(cfg) && json_string_length(cfg) ? ot_strdup(json_string_value(cfg))
                                                                                   : NULL;
    }
    json_decref(j);
    return rc;
}

// ---- COMPLETE: the marker, and what makes damage detectable --------------------------------------------------------

// Relative paths of every regular file below dir (at most MAX_FILES), sorted, so COMPLETE's order is stable.
typedef struct {
    int n;
    char name[MAX_FILES][256];
} file_list;

static int cmp_name(const void *a, const void *b) { return strcmp((const char *)a, (const char *)b); }

static int list_files(const char *dir, const char *sub, file_list *fl, ot_err *err) {
    char path[OT_PATH_MAX];
    if (path_fmt(path, sizeof path, err, "%s%s%s", dir, sub[0] ? "/" : "", sub)) return -1;
    DIR *d = opendir(path);
    if (!d) return ot_fail(err, "cannot list %s: %s", path, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "COMPLETE")) continue;
        char rel[256], full[OT_PATH_MAX];
        struct stat sb;
        if (path_fmt(rel, sizeof rel, err, "%s%s%s", sub, sub[0] ? "/" : "", e->d_name) ||
            path_fmt(full, sizeof full, err, "%s/%s", dir, rel) || lstat(full, &sb) != 0) {
            rc = -1;
            break;
        }
        if (S_ISDIR(sb.st_mode)) rc = list_files(dir, rel, fl, err);
        else if (!S_ISREG(sb.st_mode)) rc = ot_fail(err, "%s is not a regular file", full);
        else if (fl->n == MAX_FILES) rc = ot_fail(err, "%s holds more than %d files", dir, MAX_FILES);
        else snprintf(fl->name[fl->n++], sizeof fl->name[0], "%s", rel);
    }
    closedir(d);
    return rc;
}

// Hash every file of the (temporary) checkpoint directory and write COMPLETE, atomically and fsync'ed.
static int write_complete(const char *dir, int64_t step, ot_err *err) {
    file_list *fl = ot_calloc(1, sizeof *fl);
    int rc = list_files(dir, "", fl, err);
    qsort(fl->name, (size_t)fl->n, sizeof fl->name[0], cmp_name);
    size_t cap = 512 + (size_t)fl->n * 360, len = 0;
    char *text = ot_malloc(cap), path[OT_PATH_MAX], hex[65];
    len += (size_t)snprintf(text + len, cap - len, COMPLETE_HEADER "\nstep %" PRId64 "\n", step);
    for (int i = 0; i < fl->n && !rc; i++) {
        int64_t size;
        if (path_fmt(path, sizeof path, err, "%s/%s", dir, fl->name[i]) || ot_sha256_file(path, hex, err)) rc = -1;
        else if (file_size(path, &size)) rc = ot_fail(err, "%s: cannot stat: %s", path, strerror(errno));
        else len += (size_t)snprintf(text + len, cap - len, "file %s %" PRId64 " %s\n", fl->name[i], size, hex);
    }
    if (!rc) rc = path_fmt(path, sizeof path, err, "%s/COMPLETE", dir);
    if (!rc) rc = ot_write_file_atomic(path, text, len, err);
    free(text);
    free(fl);
    return rc;
}

// A name COMPLETE may list: relative, inside the directory (no empty, "." or ".." component).
static int safe_name(const char *name) {
    if (!name[0] || name[0] == '/') return 0;
    for (const char *p = name; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
        p += n;
        if (*p == '/') p++;
    }
    return name[strlen(name) - 1] != '/';
}

// Whether a listed file is one of `names` (NULL: every file): a name, or a folder prefix ending in '/'.
static int listed_in(const char *name, const char *const *names) {
    if (!names) return 1;
    for (int i = 0; names[i]; i++) {
        size_t n = strlen(names[i]);
        if (names[i][n - 1] == '/' ? !strncmp(name, names[i], n) : !strcmp(name, names[i])) return 1;
    }
    return 0;
}

// Check a checkpoint directory's integrity against its COMPLETE marker: every listed file present with the
// recorded size and, when it is one of `hashed` (NULL: all), SHA-256; every required file listed (required NULL:
// no list, not even the state); the step the directory's name says (dir_step < 0: any). Any failure is damage,
// described in err. *legacy: the marker is an old --full checkpoint's (its state is state.json).
static int verify_complete(const char *dir, int64_t dir_step, const char *const *required, const char *const *hashed,
                           int *legacy, ot_err *err) {
    char path[OT_PATH_MAX];
    if (path_fmt(path, sizeof path, err, "%s/COMPLETE", dir)) return -1;
    if (access(path, F_OK) != 0) return ot_fail(err, "no COMPLETE marker (the write did not finish)");
    char *text = read_small_file(path, 1 << 16, NULL, err);
    if (!text) return -1;
    file_list *seen = ot_calloc(1, sizeof *seen);
    int rc = 0;
    int64_t step = -1;
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    *legacy = line && !strcmp(line, LEGACY_FULL_HEADER);
    if (!line || (strcmp(line, COMPLETE_HEADER) && !*legacy))
        rc = ot_fail(err, "COMPLETE marker does not start with '" COMPLETE_HEADER "'");
    for (line = strtok_r(NULL, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
        char name[256], want_hex[65], got_hex[65];
        long long size_ll, step_ll;
        if (sscanf(line, "step %lld", &step_ll) == 1) {
            step = step_ll;
            continue;
        }
        if (sscanf(line, "file %255s %lld %64s", name, &size_ll, want_hex) != 3 || strlen(want_hex) != 64) {
            rc = ot_fail(err, "COMPLETE marker has an unreadable line '%.80s'", line);
            break;
        }
        if (!safe_name(name) || seen->n == MAX_FILES) {
            rc = ot_fail(err, "COMPLETE marker lists '%.80s', which cannot be a file of this checkpoint", name);
            break;
        }
        snprintf(seen->name[seen->n++], sizeof seen->name[0], "%s", name);
        int64_t size;
        if (path_fmt(path, sizeof path, err, "%s/%s", dir, name)) rc = -1;
        else if (file_size(path, &size)) rc = ot_fail(err, "%s is missing", name);
        else if (size != size_ll)
            rc = ot_fail(err, "%s has %lld bytes, COMPLETE records %lld (%s)", name, (long long)size, size_ll,
                         size < size_ll ? "truncated" : "grown");
        else if (!listed_in(name, hashed)) continue;
        else if (ot_sha256_file(path, got_hex, err)) rc = -1;
        else if (strcmp(got_hex, want_hex))
            rc = ot_fail(err, "%s has changed since it was written (SHA-256 %.12s..., COMPLETE records %.12s...)", name,
                         got_hex, want_hex);
    }
    const char *state_file = *legacy ? "state.json" : "state.pb";
    for (int i = -1; required && !rc && (i < 0 || required[i]); i++) {
        const char *want = i < 0 ? state_file : required[i];
        int found = 0;
        for (int k = 0; k < seen->n && !found; k++) found = !strcmp(seen->name[k], want);
        if (!found) rc = ot_fail(err, "COMPLETE marker does not list %s", want);
    }
    if (!rc && dir_step >= 0 && step != dir_step)
        rc = ot_fail(err, "COMPLETE marker records step %lld, the directory name says %lld", (long long)step,
                     (long long)dir_step);
    free(seen);
    free(text);
    return rc;
}

// What no run can have written: a step or an optimizer step beyond any run (the trainer's --steps is at most 10^9),
// an epoch beyond the samples seen (every finished epoch consumed one at least), counters that contradict each other,
// a world size of no ranks or of millions, a clock that is not a number. Such a state is damage, not a run to continue.
static int check_state_bounds(const ot_train_state *st, const char *path, ot_err *err) {
    const int64_t big = (int64_t)1 << 62;
    if (st->step < 0 || st->step > OT_CKPT_MAX_STEP)
        return ot_fail(err, "%s: step %lld is outside 0..%lld", path, (long long)st->step, (long long)OT_CKPT_MAX_STEP);
    if (st->optimizer_step < 0 || st->optimizer_step > OT_CKPT_MAX_STEP)
        return ot_fail(err, "%s: optimizer step %lld is outside 0..%lld", path, (long long)st->optimizer_step,
                       (long long)OT_CKPT_MAX_STEP);
    if (st->world_size < 1 || st->world_size > OT_CKPT_MAX_WORLD)
        return ot_fail(err, "%s: world size %d is outside 1..%d", path, st->world_size, OT_CKPT_MAX_WORLD);
    if (st->samples_seen < 0 || st->tokens_seen < 0 || st->targets_seen < 0 || st->tokens_seen > big ||
        st->samples_seen > st->tokens_seen || st->targets_seen > st->tokens_seen)
        return ot_fail(err, "%s: the counters (%lld samples, %lld tokens, %lld targets seen) contradict each other", path,
                       (long long)st->samples_seen, (long long)st->tokens_seen, (long long)st->targets_seen);
    if (st->data_epoch < 0 || st->data_epoch > st->samples_seen || st->data_next < 0 || st->data_next > big)
        return ot_fail(err, "%s: the data cursor (epoch %lld, next %lld) does not fit %lld samples seen", path,
                       (long long)st->data_epoch, (long long)st->data_next, (long long)st->samples_seen);
    if (!isfinite(st->elapsed_seconds) || st->elapsed_seconds < 0)
        return ot_fail(err, "%s: elapsed time %g s is not a duration", path, st->elapsed_seconds);
    return 0;
}

// The state of checkpoint directory dir (state.pb, or state.json in a legacy --full one) into st, bounds checked.
static int read_state(const char *dir, int legacy, ot_train_state *st, ot_err *err) {
    char path[OT_PATH_MAX];
    if (path_fmt(path, sizeof path, err, "%s/%s", dir, legacy ? "state.json" : "state.pb")) return -1;
    int rc;
    if (legacy) {
        rc = legacy_state_json(path, st, err);
    } else {
        size_t len;
        uint8_t *buf = (uint8_t *)read_small_file(path, STATE_MAX_BYTES, &len, err);
        if (!buf) return -1;
        rc = state_unpack(buf, len, path, st, err);
        free(buf);
    }
    if (!rc && check_state_bounds(st, path, err)) {
        ot_train_state_free(st);
        rc = -1;
    }
    return rc;
}

// The state of a step directory whose COMPLETE marker is osstune's (its header says where the state is), without
// verifying any file: what a checkpoint claims to be. why names what is missing.
static int read_marked_state(const char *dir, ot_train_state *st, ot_err *why) {
    char path[OT_PATH_MAX];
    ot_err ignored;
    if (path_fmt(path, sizeof path, why, "%s/COMPLETE", dir)) return -1;
    char *text = read_small_file(path, 1 << 16, NULL, &ignored);
    if (!text) return ot_fail(why, "it has no readable COMPLETE marker");
    int legacy = !strncmp(text, LEGACY_FULL_HEADER "\n", strlen(LEGACY_FULL_HEADER) + 1);
    int known = legacy || !strncmp(text, COMPLETE_HEADER "\n", strlen(COMPLETE_HEADER) + 1);
    free(text);
    if (!known) return ot_fail(why, "its COMPLETE marker is not an osstune checkpoint's");
    if (read_state(dir, legacy, st, &ignored)) return ot_fail(why, "its state does not read");
    return 0;
}

static const char *mode_words(ot_run_mode m) { return m == OT_RUN_FULL ? "--full" : "LoRA"; }

// Whether step directory dir is a checkpoint this run may delete once it is superseded: its write finished (an
// osstune COMPLETE marker), its state reads, and it holds this run's mode and step. Files are not hashed, so pruning
// stays cheap. Anything else -- a directory damaged beyond that, another mode's checkpoint, something put there by
// hand -- is not provably the run's own, and is never deleted; why says what it is.
static int own_checkpoint(const char *dir, int64_t step, ot_run_mode mode, ot_err *why) {
    ot_train_state st;
    if (read_marked_state(dir, &st, why)) return 0;
    int own = st.mode == mode && st.step == step;
    if (st.mode != mode) ot_fail(why, "it holds a %s run's checkpoint", mode_words(st.mode));
    else if (st.step != step) ot_fail(why, "its state records step %lld", (long long)st.step);
    ot_train_state_free(&st);
    return own;
}

// ---- save ---------------------------------------------------------------------------------------------------------

// Remove unfinished writes (.tmp-*) left by a writer that crashed or was killed. Only one process writes a run
// directory, so none of them can still be in progress.
static void remove_stale_tmp(const char *ckpt_dir) {
    DIR *d = opendir(ckpt_dir);
    if (!d) return;
    struct dirent *e;
    char path[OT_PATH_MAX];
    ot_err err;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-", 5) || path_fmt(path, sizeof path, NULL, "%s/%s", ckpt_dir, e->d_name)) continue;
        if (ot_remove_tree(path, &err)) ot_warn("could not remove the unfinished checkpoint %s: %s", path, err.msg);
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

// A same-step directory the new checkpoint replaced, now at `old`: deleted when it was the run's own (own_checkpoint),
// else kept beside the checkpoints under a name that is never a candidate, with a warning saying where.
static void retire_replaced(const char *old, const char *ckpt_dir, int64_t step, ot_run_mode mode) {
    ot_err why, e2;
    if (own_checkpoint(old, step, mode, &why)) {
        if (ot_remove_tree(old, &e2)) ot_warn("could not remove the replaced checkpoint (now %s): %s", old, e2.msg);
        return;
    }
    char kept[OT_PATH_MAX];
    // A fresh empty directory of a unique name, which rename() then replaces (the .tmp- name would be cleaned up).
    int moved = !path_fmt(kept, sizeof kept, &e2, "%s/replaced-step-%06" PRId64 "-XXXXXX", ckpt_dir, step) &&
                mkdtemp(kept) && (rename(old, kept) == 0 || (rmdir(kept), 0));
    if (!moved) {
        ot_warn("the step-%06" PRId64 " directory this checkpoint replaced is not this run's to delete (%s) and could "
                "not be moved beside the checkpoints; it is left at %s: move it away before the next checkpoint, which "
                "removes unfinished writes", step, why.msg, old);
        return;
    }
    ot_warn("the step-%06" PRId64 " directory this checkpoint replaced is not this run's to delete (%s); it was moved "
            "to %s (remove it once you do not need it)", step, why.msg, kept);
}

// Move the finished temporary directory to its final name. A step saved twice is swapped in atomically
// (renameat2 RENAME_EXCHANGE) so some complete step-N exists at every instant; the old copy, now under the
// temporary name, is removed afterwards if it was the run's own, else kept (retire_replaced).
static int install_dir(const char *tmp, const char *final, const char *ckpt_dir, int64_t step, ot_run_mode mode,
                       ot_err *err) {
    if (rename(tmp, final) == 0) return 0;
    if (errno != EEXIST && errno != ENOTEMPTY)
        return ot_fail(err, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        if (ot_fsync_dir(ckpt_dir, err)) return -1;
        retire_replaced(tmp, ckpt_dir, step, mode);
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        return ot_fail(err, "cannot swap %s with the existing %s: %s", tmp, final, strerror(errno));
    // This file system cannot swap directories. A complete existing copy of the same step stays (it holds the same
    // step); a damaged one is moved aside first, which loses nothing that could be loaded.
    ot_err why;
    int legacy;
    static const char *const none[] = {NULL};
    if (access(final, F_OK) == 0 && verify_complete(final, step, none, NULL, &legacy, &why) == 0) {
        ot_warn("%s already exists and is complete; kept it (this file system cannot replace a directory "
                "atomically), the new copy is discarded", final);
        return ot_remove_tree(tmp, err);
    }
    char aside[OT_PATH_MAX];
    if (path_fmt(aside, sizeof aside, err, "%s/.tmp-replaced-step-%06" PRId64 "-%d", ckpt_dir, step, (int)getpid()))
        return -1;
    if (rename(final, aside) != 0) return ot_fail(err, "cannot move %s aside: %s", final, strerror(errno));
    if (rename(tmp, final) != 0) return ot_fail(err, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    retire_replaced(aside, ckpt_dir, step, mode);
    return 0;
}

// Keep the newest checkpoint `step` and the keep_last-1 newest older ones; remove the other older ones -- only those
// that are provably this run's own (own_checkpoint): anything else is kept, with a warning. Newer directories (left
// by a run that was resumed from an earlier point) are not touched.
static void prune(const char *ckpt_dir, int64_t step, ot_run_mode mode, int keep_last) {
    if (keep_last <= 0) return;
    step_entry *steps;
    int n;
    ot_err err;
    if (list_steps(ckpt_dir, &steps, &n, &err)) {
        ot_warn("not pruning old checkpoints: %s", err.msg);
        return;
    }
    int kept = 1; // the one just written
    char path[OT_PATH_MAX];
    for (int i = 0; i < n; i++) {
        if (steps[i].step >= step || path_fmt(path, sizeof path, &err, "%s/%s", ckpt_dir, steps[i].name)) continue;
        ot_err why;
        if (!own_checkpoint(path, steps[i].step, mode, &why)) {
            ot_warn("kept %s when pruning: it is not this run's to delete (%s)", path, why.msg);
            continue;
        }
        if (kept < keep_last) {
            kept++;
            continue;
        }
        if (ot_remove_tree(path, &err)) ot_warn("could not prune old checkpoint: %s", err.msg);
    }
    free(steps);
}

int ot_run_ckpt_begin(ot_run_ckpt_writer *w, const char *run_dir, int64_t step, ot_err *err) {
    memset(w, 0, sizeof *w);
    if (step < 0) return ot_fail(err, "cannot checkpoint a negative step (%lld)", (long long)step);
    w->step = step;
    if (path_fmt(w->ckpt_dir, sizeof w->ckpt_dir, err, "%s/ckpt", run_dir) ||
        path_fmt(w->final, sizeof w->final, err, "%s/step-%06" PRId64, w->ckpt_dir, step) ||
        path_fmt(w->dir, sizeof w->dir, err, "%s/.tmp-step-%06" PRId64 "-%d", w->ckpt_dir, step, (int)getpid()))
        return -1;
    if (make_dir(run_dir, err) || make_dir(w->ckpt_dir, err)) return -1;
    remove_stale_tmp(w->ckpt_dir);
    if (mkdir(w->dir, 0755) != 0) return ot_fail(err, "cannot create %s: %s", w->dir, strerror(errno));
    return 0;
}

void ot_run_ckpt_abort(ot_run_ckpt_writer *w) {
    ot_err e;
    if (w->dir[0] && is_dir(w->dir) && ot_remove_tree(w->dir, &e)) ot_warn("%s", e.msg);
}

int ot_run_ckpt_commit(ot_run_ckpt_writer *w, const ot_train_state *st, int64_t optimizer_step, const ot_optim_config *optim,
                   uint64_t n_params, int keep_last, ot_err *err) {
    int rc = 0;
    if (st->step != w->step)
        rc = ot_fail(err, "internal: the state is at step %lld, the checkpoint being written is step %lld",
                     (long long)st->step, (long long)w->step);
    else if (st->n_rng < 0 || st->n_rng > OT_CKPT_MAX_RNG)
        rc = ot_fail(err, "cannot checkpoint %d RNG streams (at most %d)", st->n_rng, OT_CKPT_MAX_RNG);
    const char *fps[3] = {st->config_fingerprint, st->model_fingerprint, st->data_fingerprint};
    for (int i = 0; i < 3 && !rc; i++) // the loader checks this too: catch it here, where it can be fixed
        if (strlen(fps[i]) != 0 && strlen(fps[i]) != 64)
            rc = ot_fail(err, "cannot checkpoint: the %s fingerprint '%.70s' is not 64 hex digits",
                         i == 0 ? "config" : i == 1 ? "model" : "data", fps[i]);
    if (!rc) test_pause(w->dir);
    char path[OT_PATH_MAX];
    if (!rc) {
        size_t len;
        uint8_t *buf = state_pack(st, optimizer_step, optim, n_params, &len);
        rc = path_fmt(path, sizeof path, err, "%s/state.pb", w->dir);
        if (!rc) rc = ot_write_file_atomic(path, buf, len, err);
        free(buf);
    }
    if (!rc) rc = write_complete(w->dir, st->step, err);
    if (!rc) rc = ot_fsync_dir(w->dir, err);
    if (!rc) rc = install_dir(w->dir, w->final, w->ckpt_dir, st->step, st->mode, err);
    if (rc) {
        ot_run_ckpt_abort(w);
        return -1;
    }
    w->dir[0] = 0;
    if (ot_fsync_dir(w->ckpt_dir, err)) return -1;
    char name[64];
    snprintf(name, sizeof name, "step-%06" PRId64 "\n", st->step);
    if (path_fmt(path, sizeof path, err, "%s/latest", w->ckpt_dir) ||
        ot_write_file_atomic(path, name, strlen(name), err))
        return -1;
    prune(w->ckpt_dir, st->step, st->mode, keep_last);
    return 0;
}

// ---- load -------------------------------------------------------------------------------------------------------

static int other_mode(ot_run_mode got, ot_run_mode run, ot_err *err) {
    ot_fail(err, "it was written by a %s run, and this is a %s run: a run directory holds one kind of run; use another "
            "--run-dir", mode_words(got), mode_words(run));
    return OT_RUN_CKPT_INCOMPATIBLE;
}

// Try to load dir: verify it, read its state, check its mode, then the payload. On OT_RUN_CKPT_OK st is filled;
// otherwise nothing is changed and err says why.
static int load_one(const char *dir, int64_t dir_step, const ot_run_ckpt_reader *r, ot_train_state *st, ot_err *err) {
    // The other mode's checkpoint lacks this mode's files: found as such first, so it is refused, never "damaged".
    ot_train_state claims;
    ot_err ignored;
    if (read_marked_state(dir, &claims, &ignored) == 0) {
        ot_run_mode m = claims.mode;
        ot_train_state_free(&claims);
        if (m != r->mode) return other_mode(m, r->mode, err);
    }
    int legacy;
    if (verify_complete(dir, dir_step, r->required, NULL, &legacy, err)) return OT_RUN_CKPT_DAMAGED;
    char path[OT_PATH_MAX];
    ot_train_state got;
    if (path_fmt(path, sizeof path, err, "%s/%s", dir, legacy ? "state.json" : "state.pb") ||
        read_state(dir, legacy, &got, err))
        return OT_RUN_CKPT_DAMAGED;
    int rc = OT_RUN_CKPT_OK;
    if (got.step != dir_step) {
        ot_fail(err, "%s records step %lld, the directory name says %lld", path, (long long)got.step,
                (long long)dir_step);
        rc = OT_RUN_CKPT_DAMAGED;
    } else if (got.mode != r->mode) { // (found above unless the marker or the state was unreadable then)
        rc = other_mode(got.mode, r->mode, err);
    } else {
        rc = r->load(r->ctx, dir, &got, err);
    }
    if (rc != OT_RUN_CKPT_OK) {
        ot_train_state_free(&got);
        return rc;
    }
    ot_train_state_free(st);
    *st = got;
    return OT_RUN_CKPT_OK;
}

int ot_run_ckpt_load_dir(const char *ckpt_dir, const ot_run_ckpt_reader *r, ot_train_state *st, ot_err *err) {
    char dir[OT_PATH_MAX];
    if (path_fmt(dir, sizeof dir, err, "%s", ckpt_dir)) return -1;
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--) dir[n - 1] = 0; // "step-000010/" is fine too
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    int64_t step;
    if (!parse_step_name(base, &step))
        return ot_fail(err, "%s: not a checkpoint directory (those are named step-NNNNNN)", ckpt_dir);
    struct stat sb; // (a link to a checkpoint directory is fine)
    if (stat(dir, &sb) != 0)
        return ot_fail(err, "checkpoint %s: %s (--resume names a run's step-NNNNNN directory)", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return ot_fail(err, "checkpoint %s is %s, not a directory", dir, ot_file_kind(sb.st_mode));
    ot_err why;
    if (load_one(dir, step, r, st, &why) == OT_RUN_CKPT_OK) return 0;
    return ot_fail(err, "checkpoint %s cannot be loaded: %s", dir, why.msg);
}

int ot_run_ckpt_load_latest(const char *run_dir, const ot_run_ckpt_reader *r, ot_train_state *st, char *loaded_dir,
                        size_t loaded_dir_len, ot_err *err) {
    char ckpt_dir[OT_PATH_MAX], dir[OT_PATH_MAX];
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
        int rc = load_one(dir, steps[i].step, r, st, &why);
        if (rc == OT_RUN_CKPT_OK) {
            if (loaded_dir && loaded_dir_len) snprintf(loaded_dir, loaded_dir_len, "%s", dir);
            result = 0;
            break;
        }
        if (rc == OT_RUN_CKPT_INCOMPATIBLE) {
            result = ot_fail(err, "cannot resume from checkpoint %s: %s", dir, why.msg);
            break;
        }
        ot_warn("checkpoint %s is damaged and is skipped: %s", dir, why.msg);
    }
    if (result == 1 && n > 0) // starting over here would prune or replace them: they are not provably this run's
        result = ot_fail(err, "none of the %d checkpoint%s in %s can be loaded (%s reported above); a run that started "
                         "over here could replace them. To start over, move them away (mv %s %s.damaged) or use "
                         "another --run-dir", n, n == 1 ? "" : "s", ckpt_dir, n == 1 ? "it is" : "each is",
                         ckpt_dir, ckpt_dir);
    free(steps);
    return result;
}

int ot_run_ckpt_list(const char *run_dir, int *n, char *newest, size_t newest_len, ot_err *err) {
    char ckpt_dir[OT_PATH_MAX];
    step_entry *steps;
    if (path_fmt(ckpt_dir, sizeof ckpt_dir, err, "%s/ckpt", run_dir) || list_steps(ckpt_dir, &steps, n, err)) return -1;
    if (newest && newest_len) snprintf(newest, newest_len, "%s/%s", ckpt_dir, *n ? steps[0].name : "");
    free(steps);
    return 0;
}

// ---- one trainer per run directory --------------------------------------------------------------------------------

#define LOCK_NAME "osstune-train.lock"

// Open-file-description locks where the kernel has them: closing some other descriptor of the file in this process
// cannot drop them (classic fcntl locks would be).
#ifdef F_OFD_SETLK
#define LOCK_CMD F_OFD_SETLK
#else
#define LOCK_CMD F_SETLK
#endif

// The holder's line from the lock file ("host H pid P started T"), for the message.
static void lock_holder(int fd, char *out, size_t n) {
    ssize_t k = pread(fd, out, n - 1, 0);
    out[k > 0 ? k : 0] = 0;
    out[strcspn(out, "\n")] = 0;
    if (!out[0]) snprintf(out, n, "no details written yet");
}

int ot_run_lock_take(ot_run_lock *l, const char *run_dir, ot_err *err) {
    memset(l, 0, sizeof *l);
    l->fd = -1;
    struct stat sb;
    if (path_fmt(l->run_dir, sizeof l->run_dir, err, "%s", run_dir) ||
        path_fmt(l->path, sizeof l->path, err, "%s/" LOCK_NAME, run_dir))
        return -1;
    l->created_dir = stat(run_dir, &sb) != 0 && errno == ENOENT;
    if (ot_mkdir_p(run_dir, err)) return -1;
    for (int attempt = 0; attempt < 8; attempt++) {
        // O_NONBLOCK: a FIFO put in its place must not hang the open; O_NOFOLLOW: never lock through a link.
        int fd = open(l->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
        if (fd < 0) return ot_fail(err, "%s: cannot open the run directory's lock file: %s", l->path, strerror(errno));
        if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            close(fd);
            return ot_fail(err, "%s is not a regular file: remove it (it is the run directory's lock file)", l->path);
        }
        struct flock fl;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fcntl(fd, LOCK_CMD, &fl) != 0) {
            int e = errno;
            if (e == EACCES || e == EAGAIN) {
                char who[512];
                lock_holder(fd, who, sizeof who);
                close(fd);
                return ot_fail(err, "%s is in use by another osstune-train (%s; lock file %s): two trainers on one run "
                               "directory would overwrite each other's checkpoints. Wait for it to end or stop it, or "
                               "use another --run-dir", run_dir, who, l->path);
            }
            if (e != ENOLCK && e != ENOSYS && e != EOPNOTSUPP && e != EINVAL) {
                close(fd);
                return ot_fail(err, "%s: cannot lock: %s", l->path, strerror(e));
            }
            ot_warn("%s: this file system does not lock files (%s); nothing stops a second trainer from using %s at "
                    "the same time: make sure none does", l->path, strerror(e), run_dir);
        }
        // The file may have been removed by the holder that just finished, between our open and our lock: then the
        // lock is on a file nobody else will look at, and the current one has to be locked instead.
        struct stat now;
        if (stat(l->path, &now) == 0 && now.st_dev == sb.st_dev && now.st_ino == sb.st_ino) {
            l->fd = fd;
            break;
        }
        close(fd);
    }
    if (l->fd < 0) return ot_fail(err, "%s: the lock file keeps being replaced; is another trainer starting?", l->path);
    char host[256] = "?", when[64] = "?", line[512];
    gethostname(host, sizeof host - 1);
    time_t t = time(NULL);
    struct tm tm;
    if (localtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", &tm);
    int k = snprintf(line, sizeof line, "host %s pid %d started %s\n", host, (int)getpid(), when);
    if (ftruncate(l->fd, 0) != 0 || pwrite(l->fd, line, (size_t)k, 0) != k)
        ot_warn("%s: cannot write who holds the lock: %s", l->path, strerror(errno));
    return 0;
}

void ot_run_lock_release(ot_run_lock *l, int discard) {
    if (l->fd >= 0) {
        unlink(l->path);
        close(l->fd);
        l->fd = -1;
        if (discard && l->created_dir) rmdir(l->run_dir); // only when empty: a refused run leaves nothing behind
    }
    l->created_dir = 0;
}

int ot_run_ckpt_verify_files(const char *dir, const char *role, ot_err *err) {
    char marked[OT_PATH_MAX], path[OT_PATH_MAX];
    // A --full checkpoint's model is the directory model/ of the checkpoint: its marker is one level up.
    if (path_fmt(marked, sizeof marked, err, "%s", dir)) return -1;
    if (path_fmt(path, sizeof path, err, "%s/COMPLETE", marked)) return -1;
    if (access(path, F_OK) != 0) {
        size_t n = strlen(marked);
        while (n > 1 && marked[n - 1] == '/') marked[--n] = 0;
        const char *base = strrchr(marked, '/');
        if (strcmp(base ? base + 1 : marked, "model") != 0) return 0;
        if (base) marked[base == marked ? 1 : base - marked] = 0;
        else snprintf(marked, sizeof marked, ".");
        if (path_fmt(path, sizeof path, err, "%s/COMPLETE", marked)) return -1;
        if (access(path, F_OK) != 0) return 0;
    }
    // Only what the tools read is hashed (a --full step's fp32 masters and AdamW moments are several times the
    // model): the model/ folder, or the adapter's two files; the other files' sizes are still checked.
    static const char *const model_files[] = {"model/", NULL};
    static const char *const adapter_files[] = {"adapter_config.json", "adapter_model.safetensors", NULL};
    const int is_model = strcmp(marked, dir) != 0; // climbed up from model/
    int legacy;
    ot_err why;
    if (verify_complete(marked, -1, NULL, is_model ? model_files : adapter_files, &legacy, &why) == 0) return 0;
    return ot_fail(err, "%s %s is a checkpoint that was damaged after it was written: %s (use another checkpoint, e.g. "
                   "the one before it in the same ckpt/ directory)", role, dir, why.msg);
}
