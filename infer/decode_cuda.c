// The decoder's layers are the training graph's (ot_cuda_forward_cached, trainer/graph/gptoss_cuda.c) in its
// KV-cache mode: the same ops in the same order (spec §2) as the CPU decoder (infer/decode_cpu.c), attention over
// the cache (kernels/cuda/decode_attention.cu) in place of the flash attention over the batch.
// tests/gpu/test_decode_cuda.c compares this decoder's outputs with the CPU decoder's.
#ifdef OT_HAVE_CUDA

#include "infer/decode_cuda.h"

#include "trainer/graph/gptoss_cuda.h"

#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The decoder's own state: the KV cache, and the few buffers of the output head; the layers run in a
// forward-only context of the training graph.
struct ot_cuda_decoder {
    const ot_cuda_model *m;
    int S, L, T_cap;          // slots, positions per slot, tokens per step
    ot_cuda_ctx *ctx;         // forward-only: the model (+ LoRA) on T_cap tokens at a time
    cudaStream_t stream;      // the context's
    ot_cuda_blas blas;        // for the output head
    ot_bf16 *cache;           // one allocation: k then v of every layer, each [S, nkv, L, D]
    ot_bf16 **k, **v;         // [layers] pointers into it
    // the output head on the rows whose prediction is wanted (at most one per slot)
    ot_bf16 *xsel, *hsel;     // [S, H]
    float *rstd, *logits;     // [S], [S, V]
    int32_t *io_dev, *next_dev;   // ids | slot | pos | rows of a step; the picks
    int32_t *io_host, *next_host; // pinned: the same on the host
};

size_t ot_cuda_decoder_cache_bytes(const ot_model_config *c, int n_slots, int max_len) {
    return 2 * (size_t)c->num_hidden_layers * n_slots * c->num_key_value_heads * (size_t)max_len * c->head_dim *
           sizeof(ot_bf16);
}

// cudaMalloc that reports a shortage as a message instead of exiting.
static int dev_alloc(void **p, size_t bytes, const char *what, ot_err *err) {
    char label[96];
    snprintf(label, sizeof label, "the GPU decoder's %s", what);
    return ot_cuda_alloc(p, bytes, label, "lower --batch-size or --max-new-tokens", err);
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
    if (m->shard) {
        ot_fail(err, "GPU decoder: the base weights are sharded over ranks; decode with the whole model");
        return NULL;
    }
    OT_CUDA_CHECK(cudaSetDevice(m->device));
    ot_cuda_decoder *d = ot_calloc(1, sizeof *d);
    d->m = m;
    d->S = n_slots;
    d->L = max_len;
    d->T_cap = max_step_tokens;
    const size_t H = c->hidden_size, V = c->vocab_size, S = (size_t)n_slots, Lh = (size_t)c->num_hidden_layers;
    const size_t per_layer = S * c->num_key_value_heads * (size_t)max_len * c->head_dim;
    if (dev_alloc((void **)&d->cache, ot_cuda_decoder_cache_bytes(c, n_slots, max_len), "KV cache", err)) goto fail;
    d->k = ot_malloc(sizeof(ot_bf16 *) * Lh);
    d->v = ot_malloc(sizeof(ot_bf16 *) * Lh);
    for (size_t l = 0; l < Lh; l++) d->k[l] = d->cache + 2 * l * per_layer, d->v[l] = d->cache + (2 * l + 1) * per_layer;
    if (dev_alloc((void **)&d->xsel, sizeof(ot_bf16) * S * H * 2, "output rows", err) ||
        dev_alloc((void **)&d->rstd, sizeof(float) * S, "output rows", err) ||
        dev_alloc((void **)&d->logits, sizeof(float) * S * V, "logits", err) ||
        dev_alloc((void **)&d->io_dev, sizeof(int32_t) * (4 * (size_t)max_step_tokens + S), "step buffers", err))
        goto fail;
    d->hsel = d->xsel + S * H;
    d->next_dev = d->io_dev + 4 * (size_t)max_step_tokens;
    ot_cuda_run_options ro = {.forward_only = 1};
    d->ctx = ot_cuda_ctx_new(m, lo, &ro, max_step_tokens, 1);
    d->stream = ot_cuda_ctx_stream(d->ctx);
    ot_cuda_blas_init(&d->blas);
    OT_CUDA_CHECK(cudaMallocHost((void **)&d->io_host, sizeof(int32_t) * 4 * (size_t)max_step_tokens));
    OT_CUDA_CHECK(cudaMallocHost((void **)&d->next_host, sizeof(int32_t) * S));
    return d;
fail:
    ot_cuda_decoder_free(d);
    return NULL;
}

void ot_cuda_decoder_free(ot_cuda_decoder *d) {
    if (!d) return;
    if (d->ctx) {
        ot_cuda_ctx_free(d->ctx); // waits for its stream
        ot_cuda_blas_free(&d->blas);
    }
    if (d->io_host) OT_CUDA_CHECK(cudaFreeHost(d->io_host));
    if (d->next_host) OT_CUDA_CHECK(cudaFreeHost(d->next_host));
    void *dev[] = {d->cache, d->xsel, d->rstd, d->logits, d->io_dev};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) OT_CUDA_CHECK(cudaFree(dev[i]));
    free(d->k);
    free(d->v);
    free(d);
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

    ot_cuda_kv_cache kv = {d->k, d->v, d->S, d->L};
    const ot_bf16 *x = ot_cuda_forward_cached(d->ctx, &kv, ids_d, slot_d, pos_d, T);
    if (n_out > 0) {
        // Only the wanted rows go through the final norm and the head: gather them (the embedding kernel is a
        // row gather with bounds checks), normalise, then fp32 logits from the bf16 head as ot_cuda_logits does.
        ot_cuda_embedding_fwd(s, d->xsel, rows_d, x, n_out, H, T);
        ot_cuda_rmsnorm_fwd(s, d->hsel, d->rstd, d->xsel, d->m->norm_w, n_out, H, c->rms_norm_eps);
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
    *dec = (ot_batch_decoder){"cuda", m->cfg.vocab_size, n_slots, max_len, max_step_tokens, d, cuda_step,
                              cuda_destroy};
    return 0;
}

#endif // OT_HAVE_CUDA
