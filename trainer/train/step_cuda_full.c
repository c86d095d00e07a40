// The cuda-full step engine (step.h): osstune-train --full on the GPU, every base weight trained, the state on the
// device:
//   fp32 master weights, gradients and AdamW moments: flat device buffers laid out like the CPU model's float32
//     arena (trainer/model/full_params.h), so a checkpoint is the CPU full mode's, byte for byte in format, and
//     CPU and CUDA runs resume each other's checkpoints;
//   bf16 working weights: the ot_cuda_model the kernels read (experts dense bf16, sinks fp32), rewritten from the
//     masters by one kernel (ot_cuda_weight_refresh) after every optimizer step;
//   gradients: the backward of trainer/graph/gptoss_cuda.c with the base-weight gradient pointers filled in
//     (ot_cuda_set_model_grads), plus the embedding table's gradient here, without atomics (the ids are sorted on
//     the host, ot_cuda_embedding_bwd_sorted), so a step gives the same bits on every run.
// Several ranks: each rank runs its rows as one batch, and the ranks' gradients are summed in rank order
// (ot_cuda_sum_ranks, ordered: on the device through NCCL where it runs).
#include "trainer/train/step.h"

#ifdef OT_HAVE_CUDA

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "trainer/graph/gptoss_cuda.h"
#include "trainer/model/model_cuda_shard.h"
#include "trainer/train/evaluate.h"
#include "trainer/train/step_cuda.h"
#include "trainer/train/run_log.h"

typedef struct {
    ot_cuda_model cm;           // the bf16 working weights
    ot_comm *nccl;              // NCCL over the ranks' GPUs (NULL with one rank, or where NCCL cannot run)
    int device;
    ot_cuda_ctx *ctx;
    cudaStream_t stream;        // the context's: every queued op of a step is ordered on it
    size_t n;                   // floats in each flat buffer (= fp.total)
    float *master, *grad;       // device, in the CPU arena's layout
    ot_cuda_optimizer *adamw;   // the moments, tensor by tensor decay as the CPU's spans
    ot_cuda_model_grads mg;     // views of `grad` shaped as the model's tensors
    ot_cuda_refresh_seg *segs;  // device table: master -> working copy, one entry per tensor
    int n_segs;
    size_t max_seg;
    int max_tokens;
    // deterministic embedding backward: positions sorted by id on the host, uploaded per batch
    int T_cap;
    int32_t *sort_host;         // pinned: order [T_cap] | seg [T_cap + 1]
    int32_t *sort_dev;
} cuda_full;

// ---- where each tensor's working copy lives ---------------------------------------------------------------------
// The device pointer of an HF tensor name in the working model, and whether it is fp32 (sinks) rather than bf16.
// Dense experts are [E, out, in] in the CPU arena and on the GPU alike: the same flat order.
static void *working_copy(const ot_cuda_model *cm, const char *name, int *f32) {
    const ot_shard_model v = {(void **)&cm->embed, (void **)&cm->lm_head, (void **)&cm->norm_w, cm->layers,
                              sizeof *cm->layers, cm->cfg.num_hidden_layers, &ot_cuda_layer_fields};
    ot_shard_role role;
    void **field = ot_shard_model_field(&v, name, &role);
    *f32 = role == OT_SR_SINKS;
    return field ? *field : NULL;
}

// The gradient views: each host pointer of m moved from m->owned into the device gradient buffer (the CPU's
// ot_full_grad_view, on the device). With tied embeddings m->lm_head == m->embed, so the views coincide too.
static void grad_views(cuda_full *f, const ot_model *m) {
#define MOVE(p) ((p) ? f->grad + ((const float *)(p) - m->owned) : NULL)
    f->mg.embed = MOVE(m->embed);
    f->mg.lm_head = MOVE(m->lm_head);
    f->mg.norm_w = MOVE(m->norm_w);
    f->mg.layers = ot_calloc((size_t)m->cfg.num_hidden_layers, sizeof(ot_cuda_layer_grads));
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        const ot_layer_weights *w = &m->layers[l];
        ot_cuda_layer_grads *g = &f->mg.layers[l];
        g->ln1_w = MOVE(w->ln1_w), g->ln2_w = MOVE(w->ln2_w);
        g->q_w = MOVE(w->q_w), g->k_w = MOVE(w->k_w), g->v_w = MOVE(w->v_w), g->o_w = MOVE(w->o_w);
        g->q_b = MOVE(w->q_b), g->k_b = MOVE(w->k_b), g->v_b = MOVE(w->v_b), g->o_b = MOVE(w->o_b);
        g->sinks = MOVE(w->sinks);
        g->router_w = MOVE(w->router_w), g->router_b = MOVE(w->router_b);
        g->gate_up = MOVE(w->gate_up.dense), g->gate_up_b = MOVE(w->gate_up_b);
        g->down = MOVE(w->down.dense), g->down_b = MOVE(w->down_b);
    }
#undef MOVE
}

static float *dev_f32(size_t n, const char *what, ot_err *err) {
    float *p = NULL;
    char label[96];
    snprintf(label, sizeof label, "--full on the GPU (%s)", what);
    return ot_cuda_alloc((void **)&p, (n ? n : 1) * sizeof(float), label, NULL, err) ? NULL : p;
}

// Writes the bf16 (and sinks' fp32) working copies from the masters.
static void refresh(cuda_full *f) { ot_cuda_weight_refresh(f->stream, f->segs, f->n_segs, f->max_seg, f->master); }

// The table of working copies, checked against the parameter table: every tensor has one, of its size.
static int build_refresh_table(cuda_full *f, const ot_full_params *fp, ot_err *err) {
    ot_cuda_refresh_seg *segs = ot_calloc((size_t)fp->n, sizeof *segs);
    for (int i = 0; i < fp->n; i++) {
        int f32;
        void *dst = working_copy(&f->cm, fp->p[i].name, &f32);
        if (!dst) {
            free(segs);
            return ot_fail(err, "internal: tensor '%s' has no working copy on the GPU", fp->p[i].name);
        }
        segs[i] = (ot_cuda_refresh_seg){.src = fp->p[i].offset, .n = fp->p[i].n, .dst = dst, .f32 = f32};
        if (fp->p[i].n > f->max_seg) f->max_seg = fp->p[i].n;
    }
    f->n_segs = fp->n;
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&f->segs, sizeof *segs * (size_t)fp->n));
    OT_CUDA_CHECK(cudaMemcpy(f->segs, segs, sizeof *segs * (size_t)fp->n, cudaMemcpyHostToDevice));
    free(segs);
    return 0;
}

static int cuda_full_start(ot_step_engine *e, int max_tokens, ot_err *err) {
    cuda_full *f = e->impl;
    const ot_model *m = &e->m;
    const ot_full_params *fp = &e->fp;
    f->n = fp->total;
    f->max_tokens = max_tokens;
    if (ot_cuda_model_load(&f->cm, e->o->model_dir, f->device, err)) return -1;
    if (f->cm.cfg.vocab_size != m->cfg.vocab_size || f->cm.cfg.num_hidden_layers != m->cfg.num_hidden_layers ||
        f->cm.cfg.tie_word_embeddings != m->cfg.tie_word_embeddings)
        return ot_fail(err, "internal: the GPU model of %s does not match the CPU one", e->o->model_dir);
    if (build_refresh_table(f, fp, err)) return -1;
    // Master weights and gradients here, the two moments in the optimizer: 16 bytes per weight.
    if (!(f->master = dev_f32(f->n, "master weights", err)) || !(f->grad = dev_f32(f->n, "gradients", err)))
        return -1;
    grad_views(f, m);
    // Activations: kept for every layer when they fit next to the state (the AdamW moments, 8 bytes per weight,
    // are allocated with the optimizer below), else the MoE blocks' when those fit, else recomputed per layer.
    int recompute = e->o->recompute >= 0 ? e->o->recompute
                                          : ot_cuda_need_recompute(&f->cm, NULL, f->n * 2 * sizeof(float), max_tokens,
                                                                   max_tokens);
    ot_cuda_run_options ro = {.recompute = recompute};
    f->ctx = ot_cuda_ctx_new(&f->cm, NULL, &ro, max_tokens, max_tokens);
    f->stream = ot_cuda_ctx_stream(f->ctx);
    ot_cuda_set_model_grads(f->ctx, &f->mg);
    ot_param_span *spans = ot_malloc(sizeof *spans * (size_t)fp->n);
    for (int i = 0; i < fp->n; i++) spans[i] = (ot_param_span){fp->p[i].offset, fp->p[i].n, fp->p[i].decay};
    f->adamw = ot_cuda_optimizer_new(f->n, spans, fp->n, f->stream);
    free(spans);
    // The masters of a resumed run are in m's arena and its moments in e->opt by now: they go up with the model.
    OT_CUDA_CHECK(cudaMemcpyAsync(f->master, m->owned, f->n * sizeof(float), cudaMemcpyHostToDevice, f->stream));
    ot_cuda_optimizer_set(f->adamw, &e->opt);
    refresh(f); // the working copies are the masters rounded, whatever the model directory held
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream));
    char rc_words[96];
    if (e->comm->rank == 0)
        fprintf(stderr, "osstune-train --full: backend cuda: one GPU per rank (rank 0: GPU %d, %.2f GiB of bf16 "
                "working weights, %.2f GiB of fp32 masters + gradients + AdamW moments, activation recomputation "
                "%s)\n", f->cm.device, (double)f->cm.arena_bytes / (1u << 30), (double)f->n * 16 / (1u << 30),
                ot_step_cuda_recompute_words(e, recompute, rc_words, sizeof rc_words));
    return 0;
}

static void reserve_sort(cuda_full *f, int T) {
    if (T <= f->T_cap) return;
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream));
    if (f->sort_dev) OT_CUDA_CHECK(cudaFree(f->sort_dev));
    if (f->sort_host) OT_CUDA_CHECK(cudaFreeHost(f->sort_host));
    // ids | order | seg on the device, order | seg on the host
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&f->sort_dev, sizeof(int32_t) * (3 * (size_t)T + 1)));
    OT_CUDA_CHECK(cudaMallocHost((void **)&f->sort_host, sizeof(int32_t) * (2 * (size_t)T + 1)));
    f->T_cap = T;
}

static int cuda_full_grads(ot_step_engine *e, const ot_batch *b, float grad_scale, float *loss_pairs, int *n_pairs,
                           ot_err *err) {
    cuda_full *f = e->impl;
    const int T = b->T, H = f->cm.cfg.hidden_size, V = f->cm.cfg.vocab_size;
    OT_CUDA_CHECK(cudaMemsetAsync(f->grad, 0, f->n * sizeof(float), f->stream));
    if (ot_cuda_forward_backward(f->ctx, b, grad_scale, 1, err)) return -1;
    if (T > 0 && b->n_targets > 0) { // no targets: no backward ran, and the embedding gradient is zero
        reserve_sort(f, T);
        // The previous batch's copies from the pinned buffer are done: ot_cuda_take_loss waited for the stream.
        // order | seg side by side in the pinned buffer and on the device, one copy for both
        int32_t *order = f->sort_host, *seg = f->sort_host + T;
        int n_seg = ot_embedding_sort_ids(b->ids, T, order, seg);
        int32_t *ids_d = f->sort_dev, *order_d = f->sort_dev + T, *seg_d = f->sort_dev + 2 * (size_t)T;
        OT_CUDA_CHECK(cudaMemcpyAsync(ids_d, b->ids, sizeof(int32_t) * (size_t)T, cudaMemcpyHostToDevice, f->stream));
        OT_CUDA_CHECK(cudaMemcpyAsync(order_d, f->sort_host, sizeof(int32_t) * (2 * (size_t)T + 1),
                                      cudaMemcpyHostToDevice, f->stream));
        ot_cuda_embedding_bwd_sorted(f->stream, f->mg.embed, ot_cuda_input_grad(f->ctx), ids_d, order_d, seg_d, n_seg,
                                     T, H, V);
    }
    double loss = 0;
    if (ot_cuda_take_loss(f->ctx, &loss, err)) return -1;
    ot_loss_pair(loss_pairs, loss); // this rank's rows as one
    *n_pairs = 1;
    return 0;
}

static int cuda_full_sum_ranks(ot_step_engine *e, const ot_batch *b, ot_err *err) {
    (void)b;
    cuda_full *f = e->impl;
    return ot_cuda_sum_ranks(e->comm, f->nccl, 1, f->stream, f->grad, f->n, err);
}

static double cuda_full_optimizer_step(ot_step_engine *e, float *lr_used) {
    cuda_full *f = e->impl;
    double norm = ot_cuda_optimizer_step(f->adamw, &e->opt, f->master, f->grad, lr_used);
    refresh(f);
    return norm;
}

static int cuda_full_eval_loss(ot_step_engine *e, ot_pairs_h5 *pairs, int64_t max_samples, double *mean_loss,
                               int64_t *n_targets, ot_err *err) {
    cuda_full *f = e->impl;
    ot_evaluator ev = {ot_cuda_eval_forward, f->ctx, f->max_tokens, 0, e->m.cfg.vocab_size};
    return ot_eval_loss(&ev, pairs, e->comm, max_samples, mean_loss, n_targets, err);
}

// Device masters -> m's float32 arena, device moments -> opt (for checkpoints).
static void cuda_full_to_host(ot_step_engine *e) {
    cuda_full *f = e->impl;
    OT_CUDA_CHECK(cudaMemcpyAsync(e->m.owned, f->master, f->n * sizeof(float), cudaMemcpyDeviceToHost, f->stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream));
    ot_cuda_optimizer_get(f->adamw, &e->opt);
}

static size_t cuda_full_base_bytes(const ot_step_engine *e, size_t *one_rank, size_t *layer_buffer) {
    (void)e, (void)one_rank, (void)layer_buffer;
    return 0; // not written for --full
}

static void cuda_full_destroy(ot_step_engine *e) {
    cuda_full *f = e->impl;
    ot_cuda_optimizer_free(f->adamw);
    if (f->ctx) ot_cuda_ctx_free(f->ctx);
    if (f->segs) OT_CUDA_CHECK(cudaFree(f->segs));
    if (f->master) OT_CUDA_CHECK(cudaFree(f->master));
    if (f->grad) OT_CUDA_CHECK(cudaFree(f->grad));
    if (f->sort_dev) OT_CUDA_CHECK(cudaFree(f->sort_dev));
    if (f->sort_host) OT_CUDA_CHECK(cudaFreeHost(f->sort_host));
    free(f->mg.layers);
    if (f->cm.arena) ot_cuda_model_free(&f->cm);
    ot_comm_free(f->nccl);
}

static const ot_step_ops cuda_full_ops = {.start = cuda_full_start, .grads = cuda_full_grads,
                                          .sum_ranks = cuda_full_sum_ranks,
                                          .optimizer_step = cuda_full_optimizer_step,
                                          .eval_loss = cuda_full_eval_loss, .to_host = cuda_full_to_host,
                                          .base_bytes = cuda_full_base_bytes,
                                          .device_in_use = ot_step_cuda_device_in_use, .destroy = cuda_full_destroy};

int ot_step_open_cuda_full(ot_step_engine *e, ot_err *err) {
    cuda_full *f = ot_step_attach(e, "cuda-full", &cuda_full_ops, sizeof *f);
    if (ot_step_cuda_device(e, &f->device, &f->nccl, err)) return -1;
    // The host model holds the master weights' layout and, for checkpoints, their values; the GPU copy is made
    // at the start, once a resume has filled the masters.
    return ot_step_load_cpu_model(e, err);
}

#else

int ot_step_open_cuda_full(ot_step_engine *e, ot_err *err) {
    (void)e;
    return ot_fail(err, "--backend cuda: this osstune-train was built without CUDA; use --backend cpu");
}

#endif // OT_HAVE_CUDA
