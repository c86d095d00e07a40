// What every step engine shares (step.h): picking the engine, the mode's trainable state, checkpoints.
#include "trainer/train/step.h"

#include <stdlib.h>
#include <string.h>

#include "trainer/model/model_shard.h"
#include "trainer/train/checkpoint.h"

int ot_step_load_cpu_model(ot_step_engine *e, ot_err *err) {
    return e->sharded ? ot_model_load_sharded(&e->m, e->o->model_dir, e->comm, 0, err)
                      : ot_model_load(&e->m, e->o->model_dir, err);
}

// What --full cannot do, said before anything is loaded.
static int check_full_options(const ot_train_options *o, ot_err *err) {
    if (o->init_adapter) return ot_fail(err, "--full trains the model itself: --init-adapter does not apply");
    if (o->shard_base == 1)
        return ot_fail(err, "--shard-base on: --full keeps the whole model on every rank (sharding covers LoRA runs; "
                       "use auto or off)");
    if (strcmp(o->resume, "auto") && strcmp(o->resume, "never"))
        return ot_fail(err, "--full resumes from its own run directory only (--resume auto or never, not '%s')",
                       o->resume);
    return 0;
}

// The LoRA options against the model: every --lora-expert-layers entry is a layer of it, and the rank is not above
// the smaller side of an adapted matrix (a larger r adds parameters and no capacity: B·A cannot exceed that rank).
static int check_lora_spec(const ot_lora_spec *spec, const ot_model_config *c, ot_err *err) {
    for (int i = 0; i < spec->n_expert_layers; i++)
        if (spec->expert_layers[i] >= c->num_hidden_layers)
            return ot_fail(err, "--lora-expert-layers: layer %d is not a layer of this model (it has %d: 0..%d)",
                           spec->expert_layers[i], c->num_hidden_layers, c->num_hidden_layers - 1);
    const int H = c->hidden_size, q = c->num_attention_heads * c->head_dim, kv = c->num_key_value_heads * c->head_dim,
              I = c->intermediate_size;
    const int side[OT_LORA_N_TARGETS] = {H < q ? H : q, H < kv ? H : kv, H < kv ? H : kv, H < q ? H : q,
                                         H < 2 * I ? H : 2 * I, H < I ? H : I};
    for (int t = 0; t < OT_LORA_N_TARGETS; t++)
        if ((spec->targets >> t & 1u) && spec->r > side[t])
            return ot_fail(err, "--lora-r %d is above the smaller side of %s in this model (%d): a rank beyond it adds "
                           "parameters and no capacity; use --lora-r %d or less", spec->r, ot_lora_target_names[t],
                           side[t], side[t]);
    return 0;
}

int ot_step_open(ot_step_engine **out, const ot_train_options *o, ot_comm *comm, ot_err *err) {
    *out = NULL;
    ot_backend backend;
    if (ot_backend_resolve(o->backend, &backend, err)) return -1;
    if (o->full && check_full_options(o, err)) return -1;
    if (o->gpu_memory_limit && backend == OT_BACKEND_CPU)
        return ot_fail(err, "--gpu-memory-limit is for the cuda backend; this run uses the cpu backend (leave the limit "
                       "out, or use --backend cuda on a machine with a GPU)");
    ot_step_engine *e = ot_calloc(1, sizeof *e);
    e->o = o;
    e->comm = comm;
    e->backend = backend;
    e->mode = o->full ? OT_RUN_FULL : OT_RUN_LORA;
    // FSDP sharding of the base weights (auto: with more than one rank) is for LoRA runs on either backend.
    e->sharded = o->full ? 0 : o->shard_base < 0 ? comm->size > 1 : o->shard_base;
    int rc = backend == OT_BACKEND_CPU ? ot_step_open_cpu(e, err)
             : o->full                 ? ot_step_open_cuda_full(e, err)
                                       : ot_step_open_cuda_lora(e, err);
    if (!rc && o->seq_len > e->m.cfg.max_position_embeddings)
        rc = ot_fail(err, "--seq-len %d is above the model's context (max_position_embeddings %d): a row never needs "
                     "to be longer (more rows per step train more tokens)", o->seq_len,
                     e->m.cfg.max_position_embeddings);
    if (!rc && e->mode == OT_RUN_LORA) {
        if (o->init_adapter) rc = ot_lora_load_peft(&e->lo, &e->m.cfg, o->init_adapter, err);
        else if (!(rc = check_lora_spec(&o->lora, &e->m.cfg, err))) ot_lora_init(&e->lo, &e->m.cfg, &o->lora, o->seed);
        if (!rc && e->lo.n_params == 0)
            rc = ot_fail(err, "%s select%s no weight of this model: there would be nothing to train",
                         o->init_adapter ? "the adapter of --init-adapter" : "the LoRA targets",
                         o->init_adapter ? "s" : "");
        if (!rc) ot_optimizer_init(&e->opt, e->lo.n_params, &o->optim);
    } else if (!rc) {
        rc = ot_full_params_build(&e->fp, &e->m, err);
        if (!rc) ot_optimizer_init(&e->opt, e->fp.total, &o->optim);
    }
    if (rc) {
        ot_step_free(e);
        return -1;
    }
    *out = e;
    return 0;
}

void *ot_step_attach(ot_step_engine *e, const char *name, const ot_step_ops *ops, size_t bytes) {
    e->name = name;
    e->ops = ops;
    e->impl = ot_calloc(1, bytes);
    return e->impl;
}

void ot_step_free(ot_step_engine *e) {
    if (!e) return;
    if (e->impl && e->ops->destroy) e->ops->destroy(e);
    free(e->impl);
    ot_optimizer_free(&e->opt);
    ot_full_params_free(&e->fp);
    ot_lora_free(&e->lo);
    if (e->m.layers || e->m.shard) ot_model_free(&e->m);
    free(e);
}

int ot_step_load(ot_step_engine *e, const char *from, const char *model_fingerprint, ot_train_state *saved,
                 char *loaded_dir, size_t n, ot_err *err) {
    if (e->mode == OT_RUN_FULL) return ot_full_ckpt_load(e->o->run_dir, saved, &e->m, &e->fp, &e->opt, loaded_dir, n, err);
    return ot_ckpt_load(e->o->run_dir, from, saved, &e->lo, &e->m.cfg, model_fingerprint, &e->opt, loaded_dir, n, err);
}

int ot_step_save(ot_step_engine *e, const ot_train_state *st, ot_err *err) {
    if (e->ops->to_host) e->ops->to_host(e);
    const ot_train_options *o = e->o;
    if (e->mode == OT_RUN_FULL)
        return ot_full_ckpt_save(o->run_dir, st, &e->m, &e->fp, &e->opt, o->model_dir, o->keep_last, err);
    return ot_ckpt_save(o->run_dir, st, &e->lo, &e->opt, o->keep_last, err);
}

void ot_step_describe(const ot_step_engine *e, char *buf, size_t len) {
    const ot_model_config *c = &e->m.cfg;
    if (e->mode == OT_RUN_FULL)
        snprintf(buf, len, "model %s (%d layers, %d experts, hidden %d) | %zu trainable weights (%.1f M)",
                 e->o->model_dir, c->num_hidden_layers, c->num_local_experts, c->hidden_size, e->fp.total,
                 (double)e->fp.total / 1e6);
    else
        snprintf(buf, len, "model %s (%d layers, %d experts) | LoRA r=%d on %zu parameters", e->o->model_dir,
                 c->num_hidden_layers, c->num_local_experts, e->lo.r, e->lo.n_params);
}

void ot_step_result_path(const ot_step_engine *e, int64_t step, char *buf, size_t len) {
    if (e->mode == OT_RUN_FULL)
        snprintf(buf, len, "model: %s/ckpt/step-%06lld/model", e->o->run_dir, (long long)step);
    else
        snprintf(buf, len, "adapter: %s/ckpt/step-%06lld (PEFT format)", e->o->run_dir, (long long)step);
}
