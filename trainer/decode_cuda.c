// The decoder's forward is layer_forward() of trainer/gptoss_cuda.c for the step's tokens, with attention over
// the KV cache (kernels/cuda/decode_attention.cu) in place of the flash attention over the batch: the same ops in
// the same order (spec §2), which is also the order of the CPU decoder (trainer/decode_cpu.c). Keep the three in
// step; tests/gpu/decode_emu/run.sh compares this decoder's outputs with the CPU decoder's.
#ifdef OT_HAVE_CUDA

#include "trainer/decode_cuda.h"

#include <cublas_v2.h>
#include <stdlib.h>
#include <string.h>

#define WS_ALIGN 256

struct ot_cuda_decoder {
    const ot_cuda_model *m;
    int S, L, T_cap;          // slots, positions per slot, tokens per step
    cudaStream_t stream;
    ot_cuda_blas blas;
    // LoRA on the device (a copy of the host adapter's layout and parameters)
    int has_lora, r;
    float scale;
    ot_lora_slot (*slots)[OT_LORA_N_TARGETS];
    float *lora;
    // KV cache: one allocation, k then v of every layer, each [S, nkv, L, D]
    ot_bf16 *cache;
    // workspace for T_cap tokens
    void *ws;
    ot_bf16 *x, *xn, *q, *k, *v, *att, *h, *router_logits, *gu, *act, *y, *hsel;
    float *rstd, *topk_w, *xa, *xa_e, *logits;
    int32_t *topk_idx, *io_dev, *next_dev;
    int32_t *io_host, *next_host; // pinned: ids | slot | pos | rows of a step, and the picks read back
    ot_cuda_moe_plan plan;
};

typedef struct {
    char *base; // NULL while measuring
    size_t off;
} cursor;
static void *take(cursor *c, size_t bytes) {
    size_t o = (c->off + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN;
    c->off = o + bytes;
    return c->base ? c->base + o : NULL;
}

// Lays the workspace out (pointers stay NULL while measuring); returns its bytes.
static size_t layout(ot_cuda_decoder *d, char *base) {
    const ot_model_config *c = &d->m->cfg;
    const size_t T = (size_t)d->T_cap, H = c->hidden_size, Q = (size_t)c->num_attention_heads * c->head_dim,
                 KV = (size_t)c->num_key_value_heads * c->head_dim, E = c->num_local_experts,
                 K = c->num_experts_per_tok, I = c->intermediate_size, P = T * K, R = d->r > 0 ? (size_t)d->r : 1,
                 V = c->vocab_size, S = (size_t)d->S;
    cursor w = {base, 0};
#define BF(n) ((ot_bf16 *)take(&w, (n) * sizeof(ot_bf16)))
#define F32(n) ((float *)take(&w, (n) * sizeof(float)))
#define I32(n) ((int32_t *)take(&w, (n) * sizeof(int32_t)))
    d->x = BF(T * H);
    d->xn = BF(T * H);
    d->q = BF(T * Q);
    d->k = BF(T * KV);
    d->v = BF(T * KV);
    d->att = BF(T * Q);
    d->h = BF(T * H);
    d->router_logits = BF(T * E);
    d->gu = BF(P * 2 * I);
    d->act = BF(P * I);
    d->y = BF(P * H);
    d->hsel = BF(S * H);
    d->rstd = F32(T);
    d->topk_w = F32(T * K);
    d->xa = F32(T * R);
    d->xa_e = F32(P * R);
    d->logits = F32(S * V);
    d->topk_idx = I32(T * K);
    d->io_dev = I32(4 * T);
    d->next_dev = I32(S);
#undef BF
#undef F32
#undef I32
    return w.off;
}

size_t ot_cuda_decoder_cache_bytes(const ot_model_config *c, int n_slots, int max_len) {
    return 2 * (size_t)c->num_hidden_layers * n_slots * c->num_key_value_heads * (size_t)max_len * c->head_dim *
           sizeof(ot_bf16);
}

static ot_bf16 *k_cache(const ot_cuda_decoder *d, int l) {
    const ot_model_config *c = &d->m->cfg;
    return d->cache + (size_t)(2 * l) * d->S * c->num_key_value_heads * d->L * c->head_dim;
}
static ot_bf16 *v_cache(const ot_cuda_decoder *d, int l) {
    const ot_model_config *c = &d->m->cfg;
    return d->cache + (size_t)(2 * l + 1) * d->S * c->num_key_value_heads * d->L * c->head_dim;
}

// cudaMalloc that reports a shortage as a message instead of exiting.
static int dev_alloc(void **p, size_t bytes, const char *what, ot_err *err) {
    if (cudaMalloc(p, bytes) == cudaSuccess) return 0;
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    *p = NULL;
    return ot_fail(err, "the GPU decoder's %s needs %.2f GiB of GPU memory, %.2f GiB are free (lower --batch-size or "
                   "--max-new-tokens)", what, (double)bytes / (1u << 30), (double)free_b / (1u << 30));
}

ot_cuda_decoder *ot_cuda_decoder_new(const ot_cuda_model *m, const ot_lora *lo, int n_slots, int max_len,
                                     int max_step_tokens, ot_err *err) {
    const ot_model_config *c = &m->cfg;
    if (n_slots < 1 || max_len < 1 || max_step_tokens < 1) {
        ot_fail(err, "GPU decoder: %d slots, %d positions, %d tokens per step: each must be >= 1", n_slots, max_len,
                max_step_tokens);
        return NULL;
    }
    if (max_len > c->max_position_embeddings) {
        ot_fail(err, "GPU decoder: %d positions per sequence pass the model's max_position_embeddings %d", max_len,
                c->max_position_embeddings);
        return NULL;
    }
    if (lo && lo->n_params > 0 && lo->n_layers != c->num_hidden_layers) {
        ot_fail(err, "GPU decoder: the adapter has %d layers, the model %d", lo->n_layers, c->num_hidden_layers);
        return NULL;
    }
    ot_cuda_decoder *d = ot_calloc(1, sizeof *d);
    d->m = m;
    d->S = n_slots;
    d->L = max_len;
    d->T_cap = max_step_tokens;
    OT_CUDA_CHECK(cudaSetDevice(m->device));
    OT_CUDA_CHECK(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking));
    ot_cuda_blas_init(&d->blas);
    if (lo && lo->n_params > 0) {
        d->has_lora = 1;
        d->r = lo->r;
        d->scale = lo->scale;
        d->slots = ot_malloc(sizeof *d->slots * (size_t)c->num_hidden_layers);
        memcpy(d->slots, lo->slots, sizeof *d->slots * (size_t)c->num_hidden_layers);
        if (dev_alloc((void **)&d->lora, sizeof(float) * lo->n_params, "LoRA adapter", err)) goto fail;
        OT_CUDA_CHECK(cudaMemcpy(d->lora, lo->params, sizeof(float) * lo->n_params, cudaMemcpyHostToDevice));
    }
    if (dev_alloc((void **)&d->cache, ot_cuda_decoder_cache_bytes(c, n_slots, max_len), "KV cache", err)) goto fail;
    if (dev_alloc(&d->ws, layout(d, NULL), "activation workspace", err)) goto fail;
    layout(d, d->ws);
    ot_cuda_moe_plan_alloc(&d->plan, max_step_tokens, c->num_experts_per_tok, c->num_local_experts);
    OT_CUDA_CHECK(cudaMallocHost((void **)&d->io_host, sizeof(int32_t) * 4 * (size_t)max_step_tokens));
    OT_CUDA_CHECK(cudaMallocHost((void **)&d->next_host, sizeof(int32_t) * (size_t)n_slots));
    return d;
fail:
    ot_cuda_decoder_free(d);
    return NULL;
}

void ot_cuda_decoder_free(ot_cuda_decoder *d) {
    if (!d) return;
    OT_CUDA_CHECK(cudaStreamSynchronize(d->stream));
    if (d->plan.perm) ot_cuda_moe_plan_free(&d->plan);
    if (d->io_host) OT_CUDA_CHECK(cudaFreeHost(d->io_host));
    if (d->next_host) OT_CUDA_CHECK(cudaFreeHost(d->next_host));
    if (d->ws) OT_CUDA_CHECK(cudaFree(d->ws));
    if (d->cache) OT_CUDA_CHECK(cudaFree(d->cache));
    if (d->lora) OT_CUDA_CHECK(cudaFree(d->lora));
    free(d->slots);
    ot_cuda_blas_free(&d->blas);
    OT_CUDA_CHECK(cudaStreamDestroy(d->stream));
    free(d);
}

static const ot_lora_slot *slot_of(const ot_cuda_decoder *d, int l, int t) {
    if (!d->has_lora || !d->slots[l][t].present) return NULL;
    return &d->slots[l][t];
}

// y = x·Wᵀ + b (+ LoRA), as projection_fwd in gptoss_cuda.c.
static void projection(ot_cuda_decoder *d, ot_bf16 *y, const ot_bf16 *x, const ot_bf16 *W, const ot_bf16 *b,
                       const ot_lora_slot *s, int T, int in, int out) {
    ot_cuda_matmul_fwd(d->stream, &d->blas, y, x, W, b, T, in, out);
    if (s) {
        ot_cuda_lora_w w = {.n = 1, .A = d->lora + s->a_off, .B = {d->lora + s->b_off}, .out = {out}};
        ot_cuda_lora_fwd(d->stream, &y, d->xa, NULL, x, &w, T, in, d->r, d->scale);
    }
}

// One layer for the step's T tokens: d->x in, d->x out.
static void layer(ot_cuda_decoder *d, int l, int T, const int32_t *slot, const int32_t *pos) {
    const ot_cuda_model *m = d->m;
    const ot_model_config *c = &m->cfg;
    const ot_cuda_layer_weights *w = &m->layers[l];
    const int H = c->hidden_size, nh = c->num_attention_heads, nkv = c->num_key_value_heads, D = c->head_dim,
              E = c->num_local_experts, K = c->num_experts_per_tok, I = c->intermediate_size;
    const int Q = nh * D, KV = nkv * D;
    cudaStream_t s = d->stream;
    // attention block: the new keys and values go into the cache before anyone reads it, so a prompt's tokens
    // see each other (and themselves) there
    ot_cuda_rmsnorm_fwd(s, d->xn, d->rstd, d->x, w->ln1_w, T, H, c->rms_norm_eps);
    projection(d, d->q, d->xn, w->q_w, w->q_b, slot_of(d, l, OT_LORA_Q), T, H, Q);
    projection(d, d->k, d->xn, w->k_w, w->k_b, slot_of(d, l, OT_LORA_K), T, H, KV);
    projection(d, d->v, d->xn, w->v_w, w->v_b, slot_of(d, l, OT_LORA_V), T, H, KV);
    ot_cuda_rope_qk_fwd(s, d->q, d->k, pos, m->inv_freq, m->attn_factor, T, nh, nkv, D);
    ot_cuda_kv_cache_store(s, k_cache(d, l), v_cache(d, l), d->k, d->v, slot, pos, T, nkv, D, d->S, d->L);
    ot_cuda_attention_cache_fwd(s, d->att, d->q, k_cache(d, l), v_cache(d, l), w->sinks, slot, pos, T, nh, nkv, D,
                                d->S, d->L, w->sliding ? c->sliding_window : 0);
    projection(d, d->h, d->att, w->o_w, w->o_b, slot_of(d, l, OT_LORA_O), T, Q, H);
    ot_cuda_add_bf16(s, d->h, d->x, (size_t)T * H);
    // MoE block
    ot_cuda_rmsnorm_fwd(s, d->xn, d->rstd, d->h, w->ln2_w, T, H, c->rms_norm_eps);
    ot_cuda_matmul_fwd(s, &d->blas, d->router_logits, d->xn, w->router_w, w->router_b, T, H, E);
    ot_cuda_router_topk_fwd(s, d->topk_idx, d->topk_w, d->router_logits, T, E, K);
    // the plan allocated for T_cap tokens, narrowed to this step (see ot_cuda_moe_plan_alloc)
    ot_cuda_moe_plan plan = d->plan;
    plan.T = T;
    plan.n_pairs = T * K;
    plan.n_tiles = (plan.n_pairs + OT_CUDA_MOE_TILE_ROWS - 1) / OT_CUDA_MOE_TILE_ROWS + E;
    ot_cuda_moe_plan_build(s, &plan, d->topk_idx);
    const ot_lora_slot *s_gu = slot_of(d, l, OT_LORA_GATE_UP), *s_d = slot_of(d, l, OT_LORA_DOWN);
    ot_cuda_moe_matmul_fwd(s, d->gu, d->xn, 1, &w->gate_up, &plan);
    if (s_gu)
        ot_cuda_moe_lora_fwd(s, d->gu, d->xa_e, d->xn, 1, d->lora + s_gu->a_off, d->lora + s_gu->b_off, &plan, H,
                             d->r, 2 * I, d->scale);
    ot_cuda_swiglu_fwd(s, d->act, d->gu, plan.n_pairs, I, c->swiglu_alpha, c->swiglu_limit);
    ot_cuda_moe_matmul_fwd(s, d->y, d->act, 0, &w->down, &plan);
    if (s_d)
        ot_cuda_moe_lora_fwd(s, d->y, d->xa_e, d->act, 0, d->lora + s_d->a_off, d->lora + s_d->b_off, &plan, I, d->r,
                             H, d->scale);
    ot_cuda_moe_combine_fwd(s, d->x, d->y, d->topk_w, &plan, H); // the layer input is no longer needed
    ot_cuda_add_bf16(s, d->x, d->h, (size_t)T * H);
}

int ot_cuda_decoder_step(ot_cuda_decoder *d, const int32_t *ids, const int32_t *slot, const int32_t *pos, int T,
                         const int32_t *rows, int n_out, float *logits, int32_t *next, ot_err *err) {
    const ot_model_config *c = &d->m->cfg;
    const int H = c->hidden_size, V = c->vocab_size;
    if (T < 1 || T > d->T_cap)
        return ot_fail(err, "GPU decoder: a step of %d tokens (this decoder takes 1..%d)", T, d->T_cap);
    if (n_out < 0 || n_out > d->S || n_out > T)
        return ot_fail(err, "GPU decoder: %d predictions wanted from a %d-token step (at most one per token and per "
                       "slot, %d slots)", n_out, T, d->S);
    // The host knows every index: check them here, so the message can say which token was wrong (the kernels
    // check again, for memory safety).
    for (int t = 0; t < T; t++) {
        if (ids[t] < 0 || ids[t] >= V)
            return ot_fail(err, "GPU decoder: token id %d (step token %d) is outside the model's vocabulary 0..%d",
                           ids[t], t, V - 1);
        if (slot[t] < 0 || slot[t] >= d->S || pos[t] < 0 || pos[t] >= d->L)
            return ot_fail(err, "GPU decoder: step token %d at slot %d position %d is outside the cache (%d slots of "
                           "%d positions)", t, slot[t], pos[t], d->S, d->L);
    }
    for (int i = 0; i < n_out; i++)
        if (rows[i] < 0 || rows[i] >= T)
            return ot_fail(err, "GPU decoder: prediction row %d is not a token of the %d-token step", rows[i], T);

    cudaStream_t s = d->stream;
    int32_t *io = d->io_host;
    memcpy(io, ids, sizeof(int32_t) * (size_t)T);
    memcpy(io + T, slot, sizeof(int32_t) * (size_t)T);
    memcpy(io + 2 * T, pos, sizeof(int32_t) * (size_t)T);
    memcpy(io + 3 * T, rows, sizeof(int32_t) * (size_t)n_out);
    OT_CUDA_CHECK(cudaMemcpyAsync(d->io_dev, io, sizeof(int32_t) * (3 * (size_t)T + (size_t)n_out),
                                  cudaMemcpyHostToDevice, s));
    const int32_t *ids_d = d->io_dev, *slot_d = d->io_dev + T, *pos_d = d->io_dev + 2 * T, *rows_d = d->io_dev + 3 * T;

    ot_cuda_embedding_fwd(s, d->x, ids_d, d->m->embed, T, H, V);
    for (int l = 0; l < c->num_hidden_layers; l++) layer(d, l, T, slot_d, pos_d);
    if (n_out > 0) {
        // Only the wanted rows go through the final norm and the head: gather them (the embedding kernel is a
        // row gather with bounds checks), normalise, then fp32 logits from the bf16 head as ot_cuda_logits does.
        ot_cuda_embedding_fwd(s, d->xn, rows_d, d->x, n_out, H, T);
        ot_cuda_rmsnorm_fwd(s, d->hsel, d->rstd, d->xn, d->m->norm_w, n_out, H, c->rms_norm_eps);
        cublasHandle_t hb = (cublasHandle_t)d->blas.blas;
        OT_CUBLAS_CHECK(cublasSetStream(hb, s));
        const float one = 1.0f, zero = 0.0f;
        // logits [n_out, V] row-major = column-major [V, n_out] = lm_headᵀ (as column-major H × V, transposed) · hsel
        OT_CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, V, n_out, H, &one, d->m->lm_head, CUDA_R_16BF, H,
                                     d->hsel, CUDA_R_16BF, H, &zero, d->logits, CUDA_R_32F, V, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
        if (next) {
            ot_cuda_argmax_rows(s, d->next_dev, d->logits, n_out, V);
            OT_CUDA_CHECK(cudaMemcpyAsync(d->next_host, d->next_dev, sizeof(int32_t) * (size_t)n_out,
                                          cudaMemcpyDeviceToHost, s));
        }
        if (logits)
            OT_CUDA_CHECK(cudaMemcpyAsync(logits, d->logits, sizeof(float) * (size_t)n_out * V, cudaMemcpyDeviceToHost,
                                          s));
    }
    if (ot_cuda_check_inputs(s, err)) return -1; // waits for the stream
    if (next && n_out > 0) memcpy(next, d->next_host, sizeof(int32_t) * (size_t)n_out);
    return 0;
}

// ---- the ot_batch_decoder interface -------------------------------------------------------------------------
static int cuda_step(void *state, const int32_t *ids, const int32_t *slot, const int32_t *pos, int T,
                     const int32_t *rows, int n_out, float *logits, int32_t *next, ot_err *err) {
    return ot_cuda_decoder_step(state, ids, slot, pos, T, rows, n_out, logits, next, err);
}
static void cuda_destroy(void *state) { ot_cuda_decoder_free(state); }

int ot_batch_decoder_open_cuda(ot_batch_decoder *dec, const ot_cuda_model *m, const ot_lora *lo, int n_slots,
                               int max_len, int max_step_tokens, ot_err *err) {
    memset(dec, 0, sizeof *dec);
    if (max_step_tokens <= n_slots)
        return ot_fail(err, "GPU decoder: %d tokens per step must be more than the %d slots", max_step_tokens, n_slots);
    ot_cuda_decoder *d = ot_cuda_decoder_new(m, lo, n_slots, max_len, max_step_tokens, err);
    if (!d) return -1;
    dec->backend = "cuda";
    dec->vocab = m->cfg.vocab_size;
    dec->n_slots = n_slots;
    dec->max_len = max_len;
    dec->max_step_tokens = max_step_tokens;
    dec->state = d;
    dec->step = cuda_step;
    dec->destroy = cuda_destroy;
    return 0;
}

#endif // OT_HAVE_CUDA
