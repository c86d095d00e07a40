// The GPU state of full training (see full_cuda.h).
#ifdef OT_HAVE_CUDA

#include "trainer/full_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"

struct ot_full_cuda {
    ot_cuda_model cm;           // the bf16 working weights
    ot_cuda_ctx *ctx;
    cudaStream_t stream;        // the context's: every queued op of a step is ordered on it
    size_t n;                   // floats in each flat buffer (= fp->total)
    float *master, *grad, *adam_m, *adam_v; // device, in the CPU arena's layout
    ot_cuda_model_grads mg;     // views of `grad` shaped as the model's tensors
    ot_cuda_refresh_seg *segs;  // device table: master -> working copy, one entry per tensor
    int n_segs;
    size_t max_seg;
    int recompute;
    // deterministic embedding backward: positions sorted by id on the host, uploaded per batch
    int T_cap;
    int32_t *sort_host;         // pinned: order [T_cap] | seg [T_cap + 1]
    int32_t *sort_dev, *ids_dev;
    double *norm_dev, *norm_host; // Σ g² on the device, read back pinned
    float *rank_slot, *rank_sum;  // host, several ranks only
};

// ---- where each tensor's working copy lives ---------------------------------------------------------------------
// The device pointer of an HF tensor name in the working model, and whether it is fp32 (sinks) rather than bf16.
static void *working_copy(const ot_cuda_model *cm, const char *name, int *f32) {
    *f32 = 0;
    if (!strcmp(name, "model.embed_tokens.weight")) return cm->embed;
    if (!strcmp(name, "model.norm.weight")) return cm->norm_w;
    if (!strcmp(name, "lm_head.weight")) return cm->lm_head;
    int l, used = 0;
    if (sscanf(name, "model.layers.%d.%n", &l, &used) != 1 || used == 0 || l < 0 || l >= cm->cfg.num_hidden_layers)
        return NULL;
    const ot_cuda_layer_weights *w = &cm->layers[l];
    const char *s = name + used;
    if (!strcmp(s, "self_attn.sinks")) {
        *f32 = 1;
        return w->sinks;
    }
    static const struct { const char *suffix; size_t off; } fields[] = {
        {"input_layernorm.weight", offsetof(ot_cuda_layer_weights, ln1_w)},
        {"post_attention_layernorm.weight", offsetof(ot_cuda_layer_weights, ln2_w)},
        {"self_attn.q_proj.weight", offsetof(ot_cuda_layer_weights, q_w)},
        {"self_attn.q_proj.bias", offsetof(ot_cuda_layer_weights, q_b)},
        {"self_attn.k_proj.weight", offsetof(ot_cuda_layer_weights, k_w)},
        {"self_attn.k_proj.bias", offsetof(ot_cuda_layer_weights, k_b)},
        {"self_attn.v_proj.weight", offsetof(ot_cuda_layer_weights, v_w)},
        {"self_attn.v_proj.bias", offsetof(ot_cuda_layer_weights, v_b)},
        {"self_attn.o_proj.weight", offsetof(ot_cuda_layer_weights, o_w)},
        {"self_attn.o_proj.bias", offsetof(ot_cuda_layer_weights, o_b)},
        {"mlp.router.weight", offsetof(ot_cuda_layer_weights, router_w)},
        {"mlp.router.bias", offsetof(ot_cuda_layer_weights, router_b)},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!strcmp(s, fields[i].suffix)) return *(ot_bf16 *const *)((const char *)w + fields[i].off);
    // Dense experts are [E, out, in] in the CPU arena and on the GPU alike: the same flat order.
    if (!strcmp(s, "mlp.experts.gate_up_proj")) return (void *)w->gate_up.dense;
    if (!strcmp(s, "mlp.experts.gate_up_proj_bias")) return (void *)w->gate_up.bias;
    if (!strcmp(s, "mlp.experts.down_proj")) return (void *)w->down.dense;
    if (!strcmp(s, "mlp.experts.down_proj_bias")) return (void *)w->down.bias;
    return NULL;
}

// The gradient views: each host pointer of m moved from m->owned into the device gradient buffer (the CPU's
// ot_full_grad_view, on the device). With tied embeddings m->lm_head == m->embed, so the views coincide too.
static void grad_views(ot_full_cuda *f, const ot_model *m) {
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
    cudaError_t e = cudaMalloc((void **)&p, (n ? n : 1) * sizeof(float));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        ot_fail(err, "--full on the GPU: the %s need %.2f GiB of GPU memory, %.2f GiB are free", what,
                (double)n * 4 / (1u << 30), (double)free_b / (1u << 30));
        return NULL;
    }
    return p;
}

// Writes the bf16 (and sinks' fp32) working copies from the masters.
static void refresh(ot_full_cuda *f) { ot_cuda_weight_refresh(f->stream, f->segs, f->n_segs, f->max_seg, f->master); }

ot_full_cuda *ot_full_cuda_new(const ot_model *m, const ot_full_params *fp, const ot_optimizer *opt,
                               const char *model_dir, int device, int recompute, int max_tokens, ot_err *err) {
    if (opt->n != fp->total)
        ot_die("internal: ot_full_cuda_new: optimizer for %zu values, the model has %zu", opt->n, fp->total);
    ot_full_cuda *f = ot_calloc(1, sizeof *f);
    f->n = fp->total;
    if (ot_cuda_model_load(&f->cm, model_dir, device, err)) {
        free(f);
        return NULL;
    }
    if (f->cm.cfg.vocab_size != m->cfg.vocab_size || f->cm.cfg.num_hidden_layers != m->cfg.num_hidden_layers ||
        f->cm.cfg.tie_word_embeddings != m->cfg.tie_word_embeddings) {
        ot_fail(err, "internal: the GPU model of %s does not match the CPU one", model_dir);
        goto fail;
    }
    // The table of working copies, checked against the parameter table: every tensor has one, of its size.
    ot_cuda_refresh_seg *segs = ot_calloc((size_t)fp->n, sizeof *segs);
    for (int i = 0; i < fp->n; i++) {
        int f32;
        void *dst = working_copy(&f->cm, fp->p[i].name, &f32);
        if (!dst) {
            free(segs);
            ot_fail(err, "internal: tensor '%s' has no working copy on the GPU", fp->p[i].name);
            goto fail;
        }
        segs[i].src = fp->p[i].offset;
        segs[i].n = fp->p[i].n;
        segs[i].dst = dst;
        segs[i].f32 = f32;
        if (fp->p[i].n > f->max_seg) f->max_seg = fp->p[i].n;
    }
    f->n_segs = fp->n;
    OT_CUDA_CHECK(cudaMalloc((void **)&f->segs, sizeof *segs * (size_t)fp->n));
    OT_CUDA_CHECK(cudaMemcpy(f->segs, segs, sizeof *segs * (size_t)fp->n, cudaMemcpyHostToDevice));
    free(segs);

    // Master weights, gradients, moments: 16 bytes per weight.
    if (!(f->master = dev_f32(f->n, "master weights", err)) || !(f->grad = dev_f32(f->n, "gradients", err)) ||
        !(f->adam_m = dev_f32(f->n, "AdamW moments", err)) || !(f->adam_v = dev_f32(f->n, "AdamW moments", err)))
        goto fail;
    grad_views(f, m);
    OT_CUDA_CHECK(cudaMalloc((void **)&f->norm_dev, sizeof(double)));
    OT_CUDA_CHECK(cudaMallocHost((void **)&f->norm_host, sizeof(double)));

    // Activations: kept for every layer when they fit next to the state, else recomputed per layer in backward.
    if (recompute < 0) {
        size_t need = ot_cuda_workspace_bytes(&m->cfg, max_tokens, max_tokens, 0, 0) + ((size_t)1 << 30);
        size_t free_b = 0, total_b = 0;
        OT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        recompute = need > free_b;
    }
    f->recompute = recompute;
    ot_cuda_run_options ro = {recompute, 0};
    f->ctx = ot_cuda_ctx_new(&f->cm, NULL, &ro, max_tokens, max_tokens);
    f->stream = ot_cuda_ctx_stream(f->ctx);
    ot_cuda_set_model_grads(f->ctx, &f->mg);

    OT_CUDA_CHECK(cudaMemcpyAsync(f->master, m->owned, f->n * sizeof(float), cudaMemcpyHostToDevice, f->stream));
    OT_CUDA_CHECK(cudaMemcpyAsync(f->adam_m, opt->m, f->n * sizeof(float), cudaMemcpyHostToDevice, f->stream));
    OT_CUDA_CHECK(cudaMemcpyAsync(f->adam_v, opt->v, f->n * sizeof(float), cudaMemcpyHostToDevice, f->stream));
    refresh(f); // the working copies are the masters rounded, whatever the model directory held
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream));
    return f;
fail:
    ot_full_cuda_free(f);
    return NULL;
}

void ot_full_cuda_free(ot_full_cuda *f) {
    if (!f) return;
    if (f->ctx) ot_cuda_ctx_free(f->ctx);
    if (f->segs) OT_CUDA_CHECK(cudaFree(f->segs));
    if (f->master) OT_CUDA_CHECK(cudaFree(f->master));
    if (f->grad) OT_CUDA_CHECK(cudaFree(f->grad));
    if (f->adam_m) OT_CUDA_CHECK(cudaFree(f->adam_m));
    if (f->adam_v) OT_CUDA_CHECK(cudaFree(f->adam_v));
    if (f->sort_dev) OT_CUDA_CHECK(cudaFree(f->sort_dev));
    if (f->sort_host) OT_CUDA_CHECK(cudaFreeHost(f->sort_host));
    if (f->norm_dev) OT_CUDA_CHECK(cudaFree(f->norm_dev));
    if (f->norm_host) OT_CUDA_CHECK(cudaFreeHost(f->norm_host));
    free(f->mg.layers);
    free(f->rank_slot);
    free(f->rank_sum);
    if (f->cm.arena) ot_cuda_model_free(&f->cm);
    free(f);
}

void ot_full_cuda_describe(const ot_full_cuda *f, char *buf, size_t len) {
    snprintf(buf, len, "GPU %d, %.2f GiB of bf16 working weights, %.2f GiB of fp32 masters + gradients + AdamW "
             "moments, activation recomputation %s", f->cm.device, (double)f->cm.arena_bytes / (1u << 30),
             (double)f->n * 16 / (1u << 30), f->recompute ? "on" : "off");
}

ot_cuda_ctx *ot_full_cuda_ctx(ot_full_cuda *f) { return f->ctx; }

// ---- a step -------------------------------------------------------------------------------------------------------
static void reserve_sort(ot_full_cuda *f, int T) {
    if (T <= f->T_cap) return;
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream));
    if (f->sort_dev) OT_CUDA_CHECK(cudaFree(f->sort_dev));
    if (f->sort_host) OT_CUDA_CHECK(cudaFreeHost(f->sort_host));
    // ids | order | seg on the device, order | seg on the host
    OT_CUDA_CHECK(cudaMalloc((void **)&f->sort_dev, sizeof(int32_t) * (3 * (size_t)T + 1)));
    OT_CUDA_CHECK(cudaMallocHost((void **)&f->sort_host, sizeof(int32_t) * (2 * (size_t)T + 1)));
    f->T_cap = T;
}

int ot_full_cuda_grads(ot_full_cuda *f, const ot_batch *b, float grad_scale, double *loss_sum, ot_err *err) {
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
    return ot_cuda_take_loss(f->ctx, loss_sum, err);
}

int ot_full_cuda_sum_ranks(ot_full_cuda *f, ot_comm *comm, ot_err *err) {
    if (comm->size == 1) return 0;
    if (!f->rank_slot) {
        f->rank_slot = ot_malloc(f->n * sizeof(float));
        f->rank_sum = ot_malloc(f->n * sizeof(float));
    }
    OT_CUDA_CHECK(cudaMemcpyAsync(f->rank_slot, f->grad, f->n * sizeof(float), cudaMemcpyDeviceToHost, f->stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream));
    if (ot_comm_all_reduce_ordered(comm, f->rank_slot, 1, f->n, f->rank_sum, err)) return -1;
    OT_CUDA_CHECK(cudaMemcpyAsync(f->grad, f->rank_sum, f->n * sizeof(float), cudaMemcpyHostToDevice, f->stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream)); // rank_sum is pageable host memory: the copy must land first
    return 0;
}

double ot_full_cuda_optimizer_step(ot_full_cuda *f, ot_optimizer *o, const ot_full_params *fp, float *lr_used) {
    const ot_optim_config *c = &o->cfg;
    OT_CUDA_CHECK(cudaMemsetAsync(f->norm_dev, 0, sizeof(double), f->stream));
    ot_cuda_sum_squares(f->stream, f->norm_dev, f->grad, f->n);
    OT_CUDA_CHECK(cudaMemcpyAsync(f->norm_host, f->norm_dev, sizeof(double), cudaMemcpyDeviceToHost, f->stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream)); // clipping needs the norm on the host
    double norm = sqrt(*f->norm_host);
    float coef = ot_clip_coef(norm, c->max_grad_norm);
    if (coef < 1.0f) ot_cuda_scale_f32(f->stream, f->grad, f->n, coef);
    float lr = ot_lr_at(o->step, c->warmup_steps, c->total_steps, c->lr, c->min_lr);
    o->step++;
    for (int i = 0; i < fp->n; i++) {
        const ot_full_param *p = &fp->p[i];
        ot_cuda_adamw_step(f->stream, f->master + p->offset, f->grad + p->offset, f->adam_m + p->offset,
                           f->adam_v + p->offset, p->n, lr, c->beta1, c->beta2, c->eps,
                           p->decay ? c->weight_decay : 0.0f, o->step);
    }
    refresh(f);
    if (lr_used) *lr_used = lr;
    return norm;
}

void ot_full_cuda_download(ot_full_cuda *f, ot_model *m, ot_optimizer *opt) {
    OT_CUDA_CHECK(cudaMemcpyAsync(m->owned, f->master, f->n * sizeof(float), cudaMemcpyDeviceToHost, f->stream));
    OT_CUDA_CHECK(cudaMemcpyAsync(opt->m, f->adam_m, f->n * sizeof(float), cudaMemcpyDeviceToHost, f->stream));
    OT_CUDA_CHECK(cudaMemcpyAsync(opt->v, f->adam_v, f->n * sizeof(float), cudaMemcpyDeviceToHost, f->stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(f->stream));
}

#endif // OT_HAVE_CUDA
