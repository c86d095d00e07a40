// The two checkpoint payloads (see checkpoint.h) on the run-directory protocol of formats/run_dir.c.
#include "trainer/train/checkpoint.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/fileio.h"
#include "formats/safetensors.h"

// ---- the optimizer state, shared by both modes -----------------------------------------------------------------

static int write_optimizer(const char *dir, const ot_optimizer *opt, ot_err *err) {
    char path[OT_PATH_MAX], buf[64];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    ot_st_writer *w = ot_st_writer_new();
    int64_t shape[1] = {(int64_t)opt->n};
    // torch.optim.AdamW's names for the moments; the order is the flat trainable buffer's (docs/run-checkpoints.md).
    ot_st_writer_add(w, "exp_avg", OT_DT_F32, 1, shape, opt->m);
    ot_st_writer_add(w, "exp_avg_sq", OT_DT_F32, 1, shape, opt->v);
    ot_st_writer_set_metadata(w, "format", "osstune-adamw-flat-1");
    snprintf(buf, sizeof buf, "%ld", opt->step);
    ot_st_writer_set_metadata(w, "step", buf);
    return ot_st_writer_finish(w, path, err);
}

static int read_moment(const ot_safetensors *sf, const char *name, size_t n, const ot_tensor **out, ot_err *err) {
    const ot_tensor *t = ot_safetensors_find(sf, name);
    if (!t) return ot_fail(err, "optimizer.safetensors has no tensor '%s'", name);
    if (t->dtype != OT_DT_F32 || t->ndim != 1 || (size_t)t->numel != n)
        return ot_fail(err, "optimizer.safetensors '%s' is %s with %lld values, the run has %zu trainable values (F32)",
                       name, ot_dtype_name(t->dtype), (long long)t->numel, n);
    *out = t;
    return 0;
}

// optimizer.safetensors of dir: both moments checked against n (sf stays open: the tensors point into it).
static int open_optimizer(ot_safetensors *sf, const char *dir, size_t n, const ot_tensor **tm, const ot_tensor **tv,
                          ot_err *err) {
    char path[OT_PATH_MAX];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if (ot_safetensors_open(sf, path, err)) return -1;
    if (read_moment(sf, "exp_avg", n, tm, err) || read_moment(sf, "exp_avg_sq", n, tv, err)) {
        ot_safetensors_close(sf);
        return -1;
    }
    return 0;
}

// What a payload reader restores into: the trainable values (an adapter, or a model's weights) and their moments.
typedef struct {
    ot_optimizer *opt;
    ot_lora *lo;                  // LoRA: the adapter, the model config it is laid out for, and this run's base
    const ot_model_config *cfg;   // model (its fingerprint; NULL or "": unknown)
    const char *model_fingerprint;
    ot_model *m;                  // --full: the model and its trainable weights
    const ot_full_params *fp;
} restore_target;

// A caller's error, not the checkpoint's: the optimizer must be sized for the n values it restores into.
static int optimizer_fits(const ot_optimizer *opt, size_t n, ot_err *err) {
    if (opt->n == n) return 0;
    return ot_fail(err, "internal: the optimizer holds %zu moments for %zu trainable values (initialise it for this "
                   "run before loading)", opt->n, n);
}

static void restore_optimizer(ot_optimizer *opt, const ot_tensor *tm, const ot_tensor *tv, int64_t step) {
    memcpy(opt->m, tm->data, opt->n * sizeof(float));
    memcpy(opt->v, tv->data, opt->n * sizeof(float));
    opt->step = (long)step;
}

// ---- LoRA -------------------------------------------------------------------------------------------------------

static const char *const lora_files[] = {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors",
                                         NULL};

int ot_ckpt_save(const char *run_dir, const ot_train_state *st, const ot_lora *lo, const ot_optimizer *opt,
                 int keep_last, ot_err *err) {
    if (opt->n != lo->n_params)
        return ot_fail(err, "cannot checkpoint: the optimizer holds %zu moments, the adapter %zu parameters", opt->n,
                       lo->n_params);
    ot_run_ckpt_writer w;
    if (ot_run_ckpt_begin(&w, run_dir, st->step, err)) return -1;
    // Every writer below writes "<file>.tmp", fsyncs it, renames it and fsyncs the directory.
    if (ot_lora_save_peft(lo, w.dir, err) || write_optimizer(w.dir, opt, err)) {
        ot_run_ckpt_abort(&w);
        return -1;
    }
    ot_train_state mine = *st;
    mine.mode = OT_RUN_LORA;
    return ot_run_ckpt_commit(&w, &mine, opt->step, &opt->cfg, (uint64_t)lo->n_params, keep_last, err);
}

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

// An adapter that does not fit (why): blamed on the base model when the checkpoint records another one than the run's,
// else on the LoRA options (or, without fingerprints, on the model as far as the shapes tell).
static int misfit(const restore_target *t, const ot_train_state *st, int layout, const char *why, ot_err *err) {
    const char *saved = st->model_fingerprint, *now = t->model_fingerprint;
    if (now && now[0] && saved[0] && strcmp(now, saved))
        ot_fail(err, "it was written for another base model (fingerprint %.12s..., this run's %.12s...), and its adapter "
                "does not fit this one (%s): resume with the --model it was trained on, or start a new --run-dir",
                saved, now, why);
    else if (layout)
        ot_fail(err, "its adapter has another layout than this run's LoRA (%s); a run cannot change its LoRA targets, "
                "rank or alpha: start a new run directory instead", why);
    else
        ot_fail(err, "its adapter does not fit this model: %s (the checkpoint was written for the model with "
                "fingerprint %.16s...)", why, saved[0] ? saved : "(none)");
    return OT_RUN_CKPT_INCOMPATIBLE;
}

// The LoRA payload of a verified checkpoint directory; nothing changes unless it fits this run.
static int lora_load(void *ctx, const char *dir, const ot_train_state *st, ot_err *err) {
    restore_target *t = ctx;
    ot_lora *lo = t->lo;
    if (optimizer_fits(t->opt, lo->n_params, err)) return OT_RUN_CKPT_INCOMPATIBLE;
    // The files are exactly what the writer wrote (COMPLETE's hashes), so an adapter that does not fit this model
    // or this run's LoRA layout is a mismatch of runs, not damage.
    ot_lora saved;
    ot_err why;
    if (ot_lora_load_peft(&saved, t->cfg, dir, &why)) return misfit(t, st, 0, why.msg, err);
    if (same_layout(&saved, lo, &why)) {
        ot_lora_free(&saved);
        return misfit(t, st, 1, why.msg, err);
    }
    int rc = OT_RUN_CKPT_DAMAGED;
    ot_safetensors sf;
    const ot_tensor *tm, *tv;
    if (st->n_params != lo->n_params)
        ot_fail(err, "state.pb records %llu LoRA parameters, the adapter has %zu", (unsigned long long)st->n_params,
                lo->n_params);
    else if (open_optimizer(&sf, dir, lo->n_params, &tm, &tv, err) == 0) {
        // Everything checked: commit.
        memcpy(lo->params, saved.params, lo->n_params * sizeof(float));
        restore_optimizer(t->opt, tm, tv, st->optimizer_step);
        ot_safetensors_close(&sf);
        rc = OT_RUN_CKPT_OK;
    }
    ot_lora_free(&saved);
    return rc;
}

// The reader of a mode's payload: from a named directory, or the newest of the run directory.
static int load_from(const char *run_dir, const char *from, const ot_run_ckpt_reader *r, ot_train_state *st,
                     char *loaded_dir, size_t loaded_dir_len, ot_err *err) {
    if (!from) return ot_run_ckpt_load_latest(run_dir, r, st, loaded_dir, loaded_dir_len, err);
    if (loaded_dir && loaded_dir_len) snprintf(loaded_dir, loaded_dir_len, "%s", from);
    return ot_run_ckpt_load_dir(from, r, st, err);
}

int ot_ckpt_load(const char *run_dir, const char *from, ot_train_state *st, ot_lora *lo, const ot_model_config *cfg,
                 const char *model_fingerprint, ot_optimizer *opt, char *loaded_dir, size_t loaded_dir_len,
                 ot_err *err) {
    restore_target t = {.opt = opt, .lo = lo, .cfg = cfg, .model_fingerprint = model_fingerprint};
    ot_run_ckpt_reader r = {OT_RUN_LORA, lora_files, lora_load, &t};
    return load_from(run_dir, from, &r, st, loaded_dir, loaded_dir_len, err);
}

// ---- --full -----------------------------------------------------------------------------------------------------

static const char *const full_files[] = {"model/config.json", "model/model.safetensors", "master.safetensors",
                                         "optimizer.safetensors", NULL};

int ot_full_ckpt_save(const char *run_dir, const ot_train_state *st, const ot_model *m, const ot_full_params *fp,
                      const ot_optimizer *opt, const char *src_model_dir, int keep_last, ot_err *err) {
    if (opt->n != fp->total)
        return ot_fail(err, "cannot checkpoint: the optimizer holds %zu moments, the model %zu weights", opt->n,
                       fp->total);
    ot_run_ckpt_writer w;
    if (ot_run_ckpt_begin(&w, run_dir, st->step, err)) return -1;
    char model_dir[OT_PATH_MAX + 8], master[OT_PATH_MAX + 24];
    snprintf(model_dir, sizeof model_dir, "%s/model", w.dir);
    snprintf(master, sizeof master, "%s/master.safetensors", w.dir);
    if (ot_mkdir_p(model_dir, err) || ot_full_save_model_dir(m, fp, src_model_dir, model_dir, err) ||
        ot_fsync_dir(model_dir, err) || ot_full_save_master(m, fp, master, err) || write_optimizer(w.dir, opt, err)) {
        ot_run_ckpt_abort(&w);
        return -1;
    }
    ot_train_state mine = *st;
    mine.mode = OT_RUN_FULL;
    return ot_run_ckpt_commit(&w, &mine, opt->step, &opt->cfg, (uint64_t)fp->total, keep_last, err);
}

// Everything is checked before anything is changed: on failure m and opt are untouched.
static int full_load(void *ctx, const char *dir, const ot_train_state *st, ot_err *err) {
    restore_target *t = ctx;
    if (optimizer_fits(t->opt, t->fp->total, err)) return OT_RUN_CKPT_INCOMPATIBLE;
    if (st->n_params != t->fp->total) {
        ot_fail(err, "its state records %llu weights, this model has %zu", (unsigned long long)st->n_params,
                t->fp->total);
        return OT_RUN_CKPT_DAMAGED;
    }
    ot_safetensors sf;
    const ot_tensor *tm, *tv;
    if (open_optimizer(&sf, dir, t->fp->total, &tm, &tv, err)) return OT_RUN_CKPT_DAMAGED;
    // The master weights last: a failure there leaves m as it was (ot_full_load_master checks before copying).
    char master[OT_PATH_MAX + 24];
    snprintf(master, sizeof master, "%s/master.safetensors", dir);
    int rc = ot_full_load_master(t->m, t->fp, master, err) ? OT_RUN_CKPT_DAMAGED : OT_RUN_CKPT_OK;
    if (rc == OT_RUN_CKPT_OK) restore_optimizer(t->opt, tm, tv, st->optimizer_step);
    ot_safetensors_close(&sf);
    return rc;
}

int ot_full_ckpt_load(const char *run_dir, ot_train_state *st, ot_model *m, const ot_full_params *fp,
                      ot_optimizer *opt, char *loaded_dir, size_t loaded_dir_len, ot_err *err) {
    restore_target t = {.opt = opt, .m = m, .fp = fp};
    ot_run_ckpt_reader r = {OT_RUN_FULL, full_files, full_load, &t};
    return load_from(run_dir, NULL, &r, st, loaded_dir, loaded_dir_len, err);
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

