// Full-training checkpoints (see full_checkpoint.h). The crash-safety rule is the LoRA checkpoints' own: a
// directory named step-NNNNNN only ever appears by renaming a temporary directory whose every file, COMPLETE
// last, is already fsync'ed.
#include "trainer/full_checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/safetensors.h"
#include "formats/sha256.h"

#define PATH_LEN 4096
#define COMPLETE_HEADER "osstune-full-checkpoint 1"

// The files of a checkpoint, in the order COMPLETE lists them (model/ files that exist are added after these).
static const char *const fixed_files[] = {"model/config.json", "model/model.safetensors", "master.safetensors",
                                          "optimizer.safetensors", "state.json"};
#define N_FIXED 5
static const char *const optional_files[] = {"model/tokenizer.json", "model/tokenizer_config.json",
                                             "model/special_tokens_map.json", "model/generation_config.json",
                                             "model/chat_template.jinja"};
#define N_OPTIONAL 5

// snprintf into a path buffer. The public functions refuse run directories longer than RUN_DIR_MAX first, so a
// path can only overflow through a bug: stop then, rather than use a different, truncated path.
#define RUN_DIR_MAX 3000
static void pathf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= n) ot_die("internal: checkpoint path too long (%.100s...)", buf);
}

static int rm_entry(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)type, (void)ftw;
    return remove(p);
}
static int remove_tree(const char *path) { return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int file_size(const char *path, int64_t *size) {
    struct stat sb;
    if (stat(path, &sb) != 0) return -1;
    *size = (int64_t)sb.st_size;
    return 0;
}

// ---- state.json ---------------------------------------------------------------------------------------------------

static char *state_json(const ot_train_state *st, const ot_optimizer *opt) {
    json_t *j = json_object();
    json_object_set_new(j, "format", json_string("osstune-full-state-1"));
    json_object_set_new(j, "step", json_integer(st->step));
    char buf[32]; // uint64 values as decimal strings: JSON integers are int64 in jansson
    snprintf(buf, sizeof buf, "%" PRIu64, st->seed);
    json_object_set_new(j, "seed", json_string(buf));
    snprintf(buf, sizeof buf, "%" PRIu64, st->data_seed);
    json_object_set_new(j, "data_seed", json_string(buf));
    json_object_set_new(j, "data_epoch", json_integer(st->data_epoch));
    json_object_set_new(j, "data_next", json_integer(st->data_next));
    json_object_set_new(j, "world_size", json_integer(st->world_size));
    json_object_set_new(j, "samples_seen", json_integer(st->samples_seen));
    json_object_set_new(j, "tokens_seen", json_integer(st->tokens_seen));
    json_object_set_new(j, "targets_seen", json_integer(st->targets_seen));
    json_object_set_new(j, "last_loss", json_real(st->last_loss));
    json_object_set_new(j, "loss_ema", json_real(st->loss_ema));
    json_object_set_new(j, "last_grad_norm", json_real(st->last_grad_norm));
    json_object_set_new(j, "last_lr", json_real(st->last_lr));
    json_object_set_new(j, "elapsed_seconds", json_real(st->elapsed_seconds));
    json_object_set_new(j, "config_fingerprint", json_string(st->config_fingerprint));
    json_object_set_new(j, "model_fingerprint", json_string(st->model_fingerprint));
    json_object_set_new(j, "data_fingerprint", json_string(st->data_fingerprint));
    json_object_set_new(j, "resolved_config_json", json_string(st->resolved_config_json ? st->resolved_config_json : ""));
    json_object_set_new(j, "optimizer_step", json_integer(opt->step));
    json_object_set_new(j, "n_params", json_integer((json_int_t)opt->n));
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(j);
    return s;
}

static int get_int(json_t *j, const char *key, int64_t *out, ot_err *err, const char *path) {
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v)) return ot_fail(err, "%s: '%s' is missing or not an integer", path, key);
    *out = json_integer_value(v);
    return 0;
}
static int get_real(json_t *j, const char *key, double *out, ot_err *err, const char *path) {
    json_t *v = json_object_get(j, key);
    if (!json_is_number(v)) return ot_fail(err, "%s: '%s' is missing or not a number", path, key);
    *out = json_number_value(v);
    return 0;
}
static int get_u64(json_t *j, const char *key, uint64_t *out, ot_err *err, const char *path) {
    json_t *v = json_object_get(j, key);
    char *end;
    if (!json_is_string(v)) return ot_fail(err, "%s: '%s' is missing", path, key);
    *out = strtoull(json_string_value(v), &end, 10);
    if (*end) return ot_fail(err, "%s: '%s' is not an unsigned integer", path, key);
    return 0;
}
static int get_fp(json_t *j, const char *key, char out[OT_FINGERPRINT_LEN], ot_err *err, const char *path) {
    json_t *v = json_object_get(j, key);
    if (!json_is_string(v) || (strlen(json_string_value(v)) != 0 && strlen(json_string_value(v)) != 64))
        return ot_fail(err, "%s: '%s' is not a fingerprint", path, key);
    snprintf(out, OT_FINGERPRINT_LEN, "%s", json_string_value(v));
    return 0;
}

static int read_state(const char *path, ot_train_state *st, ot_err *err) {
    memset(st, 0, sizeof *st);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return ot_fail(err, "%s: not JSON: %s (line %d)", path, je.text, je.line);
    int64_t ws = 0, n_params = 0;
    int rc = get_int(j, "step", &st->step, err, path) || get_u64(j, "seed", &st->seed, err, path) ||
             get_u64(j, "data_seed", &st->data_seed, err, path) ||
             get_int(j, "data_epoch", &st->data_epoch, err, path) ||
             get_int(j, "data_next", &st->data_next, err, path) || get_int(j, "world_size", &ws, err, path) ||
             get_int(j, "samples_seen", &st->samples_seen, err, path) ||
             get_int(j, "tokens_seen", &st->tokens_seen, err, path) ||
             get_int(j, "targets_seen", &st->targets_seen, err, path) ||
             get_real(j, "last_loss", &st->last_loss, err, path) || get_real(j, "loss_ema", &st->loss_ema, err, path) ||
             get_real(j, "last_grad_norm", &st->last_grad_norm, err, path) ||
             get_real(j, "last_lr", &st->last_lr, err, path) ||
             get_real(j, "elapsed_seconds", &st->elapsed_seconds, err, path) ||
             get_fp(j, "config_fingerprint", st->config_fingerprint, err, path) ||
             get_fp(j, "model_fingerprint", st->model_fingerprint, err, path) ||
             get_fp(j, "data_fingerprint", st->data_fingerprint, err, path) ||
             get_int(j, "optimizer_step", &st->optimizer_step, err, path) ||
             get_int(j, "n_params", &n_params, err, path);
    if (!rc) {
        st->world_size = (int32_t)ws;
        st->n_params = (uint64_t)n_params;
        json_t *c = json_object_get(j, "resolved_config_json");
        st->resolved_config_json = ot_strdup(json_is_string(c) ? json_string_value(c) : "");
    }
    json_decref(j);
    return rc ? -1 : 0;
}

// ---- COMPLETE -----------------------------------------------------------------------------------------------------

static int write_complete(const char *dir, int64_t step, ot_err *err) {
    char path[PATH_LEN], hex[65];
    size_t cap = 8192, len = 0;
    char *text = ot_malloc(cap);
    len += (size_t)snprintf(text + len, cap - len, COMPLETE_HEADER "\nstep %" PRId64 "\n", step);
    for (int i = 0; i < N_FIXED + N_OPTIONAL; i++) {
        const char *name = i < N_FIXED ? fixed_files[i] : optional_files[i - N_FIXED];
        int64_t size;
        pathf(path, sizeof path, "%s/%s", dir, name);
        if (file_size(path, &size)) {
            if (i >= N_FIXED) continue;
            free(text);
            return ot_fail(err, "%s: missing from the checkpoint being written", path);
        }
        if (ot_sha256_file(path, hex, err)) {
            free(text);
            return -1;
        }
        len += (size_t)snprintf(text + len, cap - len, "file %s %" PRId64 " %s\n", name, size, hex);
    }
    pathf(path, sizeof path, "%s/COMPLETE", dir);
    int rc = ot_write_file_atomic(path, text, len, err);
    free(text);
    return rc;
}

static int verify_complete(const char *dir, int64_t dir_step, ot_err *err) {
    char path[PATH_LEN];
    pathf(path, sizeof path, "%s/COMPLETE", dir);
    size_t len;
    char *text = ot_read_file(path, &len, err);
    if (!text) return ot_fail(err, "no readable COMPLETE marker (the write did not finish)");
    int rc = 0, seen = 0;
    int64_t step = -1;
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    if (!line || strcmp(line, COMPLETE_HEADER)) rc = ot_fail(err, "COMPLETE does not start with '" COMPLETE_HEADER "'");
    for (line = strtok_r(NULL, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
        char name[128], want[65], got[65];
        long long size_ll, step_ll;
        int64_t size;
        if (sscanf(line, "step %lld", &step_ll) == 1) {
            step = step_ll;
            continue;
        }
        if (sscanf(line, "file %127s %lld %64s", name, &size_ll, want) != 3) {
            rc = ot_fail(err, "COMPLETE has an unreadable line '%.80s'", line);
            break;
        }
        for (int i = 0; i < N_FIXED; i++) seen += !strcmp(name, fixed_files[i]);
        pathf(path, sizeof path, "%s/%s", dir, name);
        if (file_size(path, &size)) rc = ot_fail(err, "%s is missing", name);
        else if (size != size_ll)
            rc = ot_fail(err, "%s has %lld bytes, COMPLETE records %lld (%s)", name, (long long)size, size_ll,
                         size < size_ll ? "truncated" : "grown");
        else if (ot_sha256_file(path, got, err)) rc = -1;
        else if (strcmp(got, want)) rc = ot_fail(err, "%s has changed since it was written (SHA-256 differs)", name);
    }
    if (!rc && seen != N_FIXED) rc = ot_fail(err, "COMPLETE does not list every required file");
    if (!rc && step != dir_step)
        rc = ot_fail(err, "COMPLETE records step %lld, the directory name says %lld", (long long)step, (long long)dir_step);
    free(text);
    return rc;
}

// ---- save ---------------------------------------------------------------------------------------------------------

static int write_optimizer(const char *path, const ot_optimizer *opt, ot_err *err) {
    ot_st_writer *w = ot_st_writer_new();
    int64_t shape[1] = {(int64_t)opt->n};
    char buf[32];
    ot_st_writer_add(w, "exp_avg", OT_DT_F32, 1, shape, opt->m);
    ot_st_writer_add(w, "exp_avg_sq", OT_DT_F32, 1, shape, opt->v);
    ot_st_writer_set_metadata(w, "format", "osstune-adamw-flat-1");
    snprintf(buf, sizeof buf, "%ld", opt->step);
    ot_st_writer_set_metadata(w, "step", buf);
    return ot_st_writer_finish(w, path, err);
}

typedef struct {
    int64_t step;
    char name[64];
} step_dir;

static int cmp_desc(const void *a, const void *b) {
    int64_t x = ((const step_dir *)a)->step, y = ((const step_dir *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

// step-NNNNNN directories of ckpt_dir, newest first.
static step_dir *list_steps(const char *ckpt_dir, int *n) {
    *n = 0;
    DIR *d = opendir(ckpt_dir);
    if (!d) return NULL;
    step_dir *out = NULL;
    int cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *s = e->d_name;
        if (strncmp(s, "step-", 5) || !s[5] || strspn(s + 5, "0123456789") != strlen(s + 5) || strlen(s) >= 64) continue;
        if (*n == cap) out = realloc(out, sizeof *out * (size_t)(cap = cap ? 2 * cap : 16));
        if (!out) ot_die("out of memory listing %s", ckpt_dir);
        out[*n].step = strtoll(s + 5, NULL, 10);
        snprintf(out[*n].name, sizeof out[*n].name, "%s", s);
        (*n)++;
    }
    closedir(d);
    qsort(out, (size_t)*n, sizeof *out, cmp_desc);
    return out;
}

int ot_full_ckpt_save(const char *run_dir, const ot_train_state *st, const ot_model *m, const ot_full_params *fp,
                      const ot_optimizer *opt, const char *src_model_dir, int keep_last, ot_err *err) {
    if (strlen(run_dir) > RUN_DIR_MAX) return ot_fail(err, "run directory name longer than %d characters", RUN_DIR_MAX);
    if (opt->n != fp->total)
        return ot_fail(err, "cannot checkpoint: the optimizer holds %zu moments, the model %zu weights", opt->n, fp->total);
    char ckpt[PATH_LEN], tmp[PATH_LEN], final[PATH_LEN], path[PATH_LEN];
    pathf(ckpt, sizeof ckpt, "%s/ckpt", run_dir);
    pathf(final, sizeof final, "%s/step-%06" PRId64, ckpt, st->step);
    pathf(tmp, sizeof tmp, "%s/.tmp-step-%06" PRId64 "-%d", ckpt, st->step, (int)getpid());
    if (ot_mkdir_p(ckpt, err)) return -1;
    remove_tree(tmp);
    pathf(path, sizeof path, "%s/model", tmp);
    if (ot_mkdir_p(path, err)) return -1;
    int rc = ot_full_save_model_dir(m, fp, src_model_dir, path, err);
    if (!rc) rc = ot_fsync_dir(path, err);
    if (!rc) {
        pathf(path, sizeof path, "%s/master.safetensors", tmp);
        rc = ot_full_save_master(m, fp, path, err);
    }
    if (!rc) {
        pathf(path, sizeof path, "%s/optimizer.safetensors", tmp);
        rc = write_optimizer(path, opt, err);
    }
    if (!rc) {
        char *text = state_json(st, opt);
        pathf(path, sizeof path, "%s/state.json", tmp);
        rc = ot_write_file_atomic(path, text, strlen(text), err);
        free(text);
    }
    if (!rc) rc = write_complete(tmp, st->step, err);
    if (!rc) rc = ot_fsync_dir(tmp, err);
    if (!rc) {
        // A step saved again (a resumed run reaching it once more) replaces the old copy: move that aside first.
        struct stat sb;
        if (stat(final, &sb) == 0) {
            char aside[PATH_LEN];
            pathf(aside, sizeof aside, "%s/.tmp-replaced-step-%06" PRId64 "-%d", ckpt, st->step, (int)getpid());
            if (rename(final, aside) != 0) rc = ot_fail(err, "cannot move %s aside: %s", final, strerror(errno));
            else remove_tree(aside);
        }
        if (!rc && rename(tmp, final) != 0) rc = ot_fail(err, "cannot rename %s to %s: %s", tmp, final, strerror(errno));
    }
    if (!rc) rc = ot_fsync_dir(ckpt, err);
    if (rc) {
        remove_tree(tmp);
        return -1;
    }
    char name[64];
    snprintf(name, sizeof name, "step-%06" PRId64 "\n", st->step);
    pathf(path, sizeof path, "%s/latest", ckpt);
    if (ot_write_file_atomic(path, name, strlen(name), err)) return -1;
    // Keep this step and the keep_last-1 newest older ones; newer leftovers of an earlier run stay untouched.
    int n;
    step_dir *steps = list_steps(ckpt, &n);
    for (int i = 0, kept = 1; i < n; i++) {
        if (steps[i].step >= st->step) continue;
        if (keep_last <= 0 || kept < keep_last) {
            kept++;
            continue;
        }
        pathf(path, sizeof path, "%s/%s", ckpt, steps[i].name);
        if (remove_tree(path)) ot_warn("could not prune old checkpoint %s: %s", path, strerror(errno));
    }
    free(steps);
    return 0;
}

// ---- load ---------------------------------------------------------------------------------------------------------

// Everything is checked before anything is changed: on failure m, opt and st are untouched.
static int load_one(const char *dir, int64_t step, ot_train_state *st, ot_model *m, const ot_full_params *fp,
                    ot_optimizer *opt, ot_err *err) {
    char path[PATH_LEN];
    if (verify_complete(dir, step, err)) return -1;
    ot_train_state got;
    pathf(path, sizeof path, "%s/state.json", dir);
    if (read_state(path, &got, err)) return -1;
    if (got.step != step || got.n_params != fp->total || got.optimizer_step < 0) {
        ot_fail(err, "%s records step %lld and %llu weights; expected step %lld and %zu weights", path,
                (long long)got.step, (unsigned long long)got.n_params, (long long)step, fp->total);
        ot_train_state_free(&got);
        return -1;
    }
    ot_safetensors sf;
    pathf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if (ot_safetensors_open(&sf, path, err)) {
        ot_train_state_free(&got);
        return -1;
    }
    const ot_tensor *tm = ot_safetensors_find(&sf, "exp_avg"), *tv = ot_safetensors_find(&sf, "exp_avg_sq");
    int rc = 0;
    if (!tm || !tv || tm->dtype != OT_DT_F32 || tv->dtype != OT_DT_F32 || (size_t)tm->numel != fp->total ||
        (size_t)tv->numel != fp->total)
        rc = ot_fail(err, "%s: exp_avg / exp_avg_sq must be F32 with %zu values", path, fp->total);
    // The master weights last: a failure there leaves m as it was (ot_full_load_master checks before copying).
    pathf(path, sizeof path, "%s/master.safetensors", dir);
    if (!rc) rc = ot_full_load_master(m, fp, path, err);
    if (!rc) {
        memcpy(opt->m, tm->data, fp->total * sizeof(float));
        memcpy(opt->v, tv->data, fp->total * sizeof(float));
        opt->step = (long)got.optimizer_step;
        ot_train_state_free(st);
        *st = got;
    } else {
        ot_train_state_free(&got);
    }
    ot_safetensors_close(&sf);
    return rc;
}

int ot_full_ckpt_load_latest(const char *run_dir, ot_train_state *st, ot_model *m, const ot_full_params *fp,
                             ot_optimizer *opt, char *loaded_dir, size_t loaded_dir_len, ot_err *err) {
    char ckpt[PATH_LEN], dir[PATH_LEN];
    if (strlen(run_dir) > RUN_DIR_MAX) return ot_fail(err, "run directory name longer than %d characters", RUN_DIR_MAX);
    pathf(ckpt, sizeof ckpt, "%s/ckpt", run_dir);
    if (opt->n != fp->total) return ot_fail(err, "internal: optimizer of %zu for %zu weights", opt->n, fp->total);
    int n;
    step_dir *steps = list_steps(ckpt, &n);
    int result = 1;
    for (int i = 0; i < n; i++) {
        pathf(dir, sizeof dir, "%s/%s", ckpt, steps[i].name);
        // A LoRA run directory holds adapters, not models: say so rather than calling it damaged.
        pathf(ckpt, sizeof ckpt, "%s/adapter_model.safetensors", dir);
        if (access(ckpt, F_OK) == 0) {
            result = ot_fail(err, "%s is a LoRA checkpoint: this run directory belongs to a LoRA run; use another "
                             "--run-dir for --full", dir);
            break;
        }
        pathf(ckpt, sizeof ckpt, "%s/ckpt", run_dir);
        ot_err why;
        if (load_one(dir, steps[i].step, st, m, fp, opt, &why) == 0) {
            if (loaded_dir && loaded_dir_len) snprintf(loaded_dir, loaded_dir_len, "%s", dir);
            result = 0;
            break;
        }
        ot_warn("checkpoint %s is damaged and is skipped: %s", dir, why.msg);
    }
    free(steps);
    return result;
}
