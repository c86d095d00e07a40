// The cuda-lora step engine (step.h): LoRA on a frozen base in GPU memory, one GPU per rank. Each rank's rows run
// as one batch (trainer/graph/gptoss_cuda.h); the adapter, its gradients and its AdamW state stay on the device;
// the ranks' gradients meet through NCCL on the device (step_cuda.h).
#include "trainer/train/step.h"

#ifdef OT_HAVE_CUDA

#include <stdio.h>
#include <stdlib.h>

#include "trainer/graph/gptoss_cuda.h"
#include "trainer/model/model_cuda_shard.h"
#include "trainer/train/evaluate.h"
#include "trainer/train/step_cuda.h"
#include "trainer/train/run_log.h"

typedef struct {
    ot_cuda_model cm;
    ot_comm *nccl;          // NCCL over the ranks' GPUs (NULL with one rank, or where NCCL cannot run)
    ot_cuda_ctx *ctx;
    ot_cuda_optimizer *adamw;
    int max_tokens;
    int ordered;            // --grad-reduce resolved: the rank-order sum (ot_cuda_sum_ranks), else NCCL's all-reduce
} cuda_lora;


static int cuda_lora_start(ot_step_engine *e, int max_tokens, ot_err *err) {
    cuda_lora *g = e->impl;
    const ot_train_options *o = e->o;
    // Keep every layer's activations when they fit; else the MoE blocks' when those fit; else only the layer inputs.
    ot_cuda_run_options ro = {0};
    ro.recompute = o->recompute >= 0 ? o->recompute : ot_cuda_need_recompute(&g->cm, &e->lo, 0, max_tokens, max_tokens);
    if (e->sharded) { // recomputation changes the order of the gathers, which must be the same on every rank: the
                      // mode that keeps least, of all ranks' (ranked off < attention < on)
        static const int by_rank[3] = {OT_RECOMPUTE_OFF, OT_RECOMPUTE_ATTENTION, OT_RECOMPUTE_ON};
        int64_t mine = ro.recompute == OT_RECOMPUTE_ON ? 2 : ro.recompute == OT_RECOMPUTE_ATTENTION ? 1 : 0, most = 0;
        if (ot_comm_all_reduce(e->comm, &mine, &most, 1, OT_COMM_I64, OT_COMM_MAX, err)) return -1;
        ro.recompute = by_rank[most];
    }
    g->max_tokens = max_tokens;
    g->ctx = ot_cuda_ctx_new(&g->cm, &e->lo, &ro, max_tokens, max_tokens); // uploads lo.params (resumed or fresh)
    g->adamw = ot_cuda_optimizer_new(e->lo.n_params, NULL, 0, ot_cuda_ctx_stream(g->ctx));
    ot_cuda_optimizer_set(g->adamw, &e->opt); // the AdamW moments likewise
    if (e->comm->rank == 0) {
        const int world = e->comm->size;
        size_t one = 0, gather_buf = 0, mine = ot_cuda_model_base_bytes(&g->cm, &one, &gather_buf);
        char how[160], rc_words[96];
        if (e->sharded)
            snprintf(how, sizeof how, "sharded over %d; %.2f GiB on one rank; gather buffers %.1f MiB", world,
                     (double)one / (1u << 30), (double)gather_buf / (1u << 20));
        else
            snprintf(how, sizeof how, "not sharded");
        fprintf(stderr, "osstune-train: backend cuda: one GPU per rank (rank 0 on GPU %d), base weights %.2f GiB "
                "on this rank (%s), activation recomputation %s, gradients summed %s\n", g->cm.device,
                (double)mine / (1u << 30), how, ot_step_cuda_recompute_words(e, ro.recompute, rc_words, sizeof rc_words),
                world == 1       ? "(one rank)"
                : !g->ordered      ? "by NCCL on the device"
                : g->nccl         ? "in rank order on the device"
                                  : "in rank order on the host");
    }
    return 0;
}

static int cuda_lora_grads(ot_step_engine *e, const ot_batch *b, float grad_scale, float *loss_pairs, int *n_pairs,
                           ot_err *err) {
    cuda_lora *g = e->impl;
    double loss = 0;
    ot_cuda_lora_zero_grads(g->ctx);
    if (ot_cuda_forward_backward(g->ctx, b, grad_scale, 1, err) || ot_cuda_take_loss(g->ctx, &loss, err)) return -1;
    ot_loss_pair(loss_pairs, loss); // this rank's rows as one
    *n_pairs = 1;
    return 0;
}

static int cuda_lora_sum_ranks(ot_step_engine *e, const ot_batch *b, ot_err *err) {
    (void)b;
    cuda_lora *g = e->impl;
    return ot_cuda_sum_ranks(e->comm, g->nccl, g->ordered, ot_cuda_ctx_stream(g->ctx),
                             ot_cuda_lora_grads_device(g->ctx), e->lo.n_params, err);
}

static double cuda_lora_optimizer_step(ot_step_engine *e, float *lr_used) {
    cuda_lora *g = e->impl;
    ot_cuda_prof_mark(g->ctx, OT_CUDA_PROF_OPTIMIZER);
    return ot_cuda_optimizer_step(g->adamw, &e->opt, ot_cuda_lora_params_device(g->ctx),
                                  ot_cuda_lora_grads_device(g->ctx), lr_used);
}

static int cuda_lora_eval_loss(ot_step_engine *e, ot_pairs_h5 *pairs, int64_t max_samples, double *mean_loss,
                               int64_t *n_targets, ot_err *err) {
    cuda_lora *g = e->impl;
    // Samples packed into passes as large as the training batches (the workspace's size).
    ot_evaluator ev = {ot_cuda_eval_forward, g->ctx, g->max_tokens, e->sharded, e->m.cfg.vocab_size};
    return ot_eval_loss(&ev, pairs, e->comm, max_samples, mean_loss, n_targets, err);
}

static void cuda_lora_to_host(ot_step_engine *e) {
    cuda_lora *g = e->impl;
    ot_cuda_lora_get_params(g->ctx, e->lo.params);
    ot_cuda_optimizer_get(g->adamw, &e->opt);
}

static size_t cuda_lora_base_bytes(const ot_step_engine *e, size_t *one_rank, size_t *layer_buffer) {
    const cuda_lora *g = e->impl;
    return ot_cuda_model_base_bytes(&g->cm, one_rank, layer_buffer);
}

static void cuda_lora_finish(ot_step_engine *e) {
    cuda_lora *g = e->impl;
    if (!e->sharded || e->comm->rank != 0) return;
    ot_cuda_shard_stats gs = ot_cuda_shard_get_stats(&g->cm);
    fprintf(stderr, "osstune-train: base-weight gathers on rank 0: %llu (%llu started ahead of their use), %.3f GiB "
            "gathered; %.3f GiB read from the model files at load\n", (unsigned long long)gs.gathers,
            (unsigned long long)gs.prefetched, (double)gs.gathered_bytes / (1u << 30),
            (double)gs.file_bytes / (1u << 30));
}

static void cuda_lora_destroy(ot_step_engine *e) {
    cuda_lora *g = e->impl;
    ot_cuda_optimizer_free(g->adamw);
    ot_cuda_ctx_free(g->ctx);
    if (g->cm.arena) ot_cuda_model_free(&g->cm);
    ot_comm_free(g->nccl); // collective: a failed rank aborts the job before it gets here
}

static const ot_step_ops cuda_lora_ops = {.start = cuda_lora_start, .grads = cuda_lora_grads,
                                          .sum_ranks = cuda_lora_sum_ranks,
                                          .optimizer_step = cuda_lora_optimizer_step,
                                          .eval_loss = cuda_lora_eval_loss, .to_host = cuda_lora_to_host,
                                          .base_bytes = cuda_lora_base_bytes,
                                          .device_in_use = ot_step_cuda_device_in_use, .finish = cuda_lora_finish,
                                          .destroy = cuda_lora_destroy};

int ot_step_open_cuda_lora(ot_step_engine *e, ot_err *err) {
    cuda_lora *g = ot_step_attach(e, "cuda-lora", &cuda_lora_ops, sizeof *g);
    int dev;
    if (ot_step_cuda_device(e, &dev, &g->nccl, err)) return -1;
    // --grad-reduce ordered (2): the rank-order sum whose bits do not depend on the world size; nccl (1): NCCL's
    // all-reduce; auto (0): NCCL's where it runs, else (host-visible device memory) the ordered sum.
    if (e->comm->size > 1 && e->o->grad_reduce == 1 && !g->nccl)
        return ot_fail(err, "--grad-reduce nccl: NCCL cannot run on this device (its memory is host-visible); use "
                       "--grad-reduce ordered");
    g->ordered = e->o->grad_reduce == 2 || !g->nccl;
    if (e->sharded ? ot_cuda_model_load_sharded(&g->cm, e->o->model_dir, dev, g->nccl ? g->nccl : e->comm, err)
                   : ot_cuda_model_load(&g->cm, e->o->model_dir, dev, err))
        return -1;
    e->m.cfg = g->cm.cfg; // the adapter layout, its files and the checkpoints need only the config
    return 0;
}

#else

int ot_step_open_cuda_lora(ot_step_engine *e, ot_err *err) {
    (void)e;
    return ot_fail(err, "--backend cuda: this osstune-train was built without CUDA (no nvcc at build time); use "
                   "--backend cpu");
}

#endif // OT_HAVE_CUDA
