// Cross-entropy at the selected positions through the output head, GPU (spec §2.9, §2.10). The vocabulary
// (201,088 for gpt-oss) is walked in chunks: only [n, chunk] logits exist at a time, never [n, V] or [T, V].
//
//   pass 1 (loss): for each chunk, logits = h_sel · W_chunkᵀ (cuBLAS, fp32 out), then a running max and sum of
//                  exponentials per target (online logsumexp) and the label's logit when it falls in the chunk;
//                  loss_i = lse_i − logit_label, summed in double in a fixed order into *loss_sum.
//   pass 2 (grad): for each chunk, the logits again, dlogits = grad_scale · (softmax − onehot) in bf16, then
//                  dh_sel += dlogits · W_chunk (fp32) and dW_chunk += dlogitsᵀ · h_sel (fp32); at the end
//                  dh[pos_i] += dh_sel[i] (bf16 atomics, so a repeated position sums correctly).
// The passes take the head's rows in blocks (ot_cuda_xent_*), so a sharded head can be fed a gathered chunk at a
// time; the whole-head ot_cuda_lmhead_xent is the same calls with one block.
//
// With the head frozen (dh wanted, no dWlm: LoRA), ot_cuda_lmhead_xent makes one pass instead, so each chunk's
// logits are computed once (the logits products are two thirds of the head's time in two passes): the input
// gradient is gathered against the running maximum m_i, as flash attention gathers its output,
//   acc_i = Σ_v exp(logit_iv − m_i) · W_v      (rescaled by exp(m_old − m_new) whenever the maximum grows)
//   dh_sel_i = grad_scale · (acc_i / s_i − W_label_i)      at the end, s_i the running sum (softmax = exp(·−m)/s).
// The weights' gradient needs the final normaliser in every chunk's product, so it keeps the two passes.
#include <cublas_v2.h>

#include "kernels/cuda/cuda_common.cuh"

#define XENT_CHUNK_ELEMS (1 << 24) // fp32 logits per chunk (64 MiB), whatever n is

static long g_chunk_elems = XENT_CHUNK_ELEMS; // tests shrink it to make many chunks of a small vocabulary

void ot_cuda_xent_set_chunk_elems(long elems) { g_chunk_elems = elems > 0 ? elems : XENT_CHUNK_ELEMS; }

// The vocabulary columns of one chunk for n targets.
static int chunk_cols(int n, int V) {
    long want = g_chunk_elems / n;
    int vc = (int)(want < 256 ? 256 : want > V ? V : want);
    if (vc < V) vc -= vc % 8; // keep chunk starts 16-byte aligned in the [V, H] weight and the logits rows
    return vc;
}

size_t ot_cuda_lmhead_xent_tmp_bytes(int n, int H, int V) {
    if (n <= 0) return 0;
    const size_t N = (size_t)n, cells = N * (size_t)chunk_cols(n, V);
    // h_sel (bf16) + dh_sel (fp32), labels + 4 statistics, the chunk's fp32 logits + their bf16 gradient
    return N * H * 6 + N * 20 + cells * 6;
}
#define XENT_THREADS 256

// h_sel[i] = h[pos[i]]; a position or label out of range flags bad input, zeroes the row and marks the target
// invalid (lab[i] = −1: its loss becomes NaN and it contributes no gradient).
__global__ void xent_gather_kernel(bf16 *h_sel, int32_t *lab, const bf16 *h, const int32_t *pos,
                                   const int32_t *label, int T, int H, int V, unsigned *flags) {
    int i = blockIdx.x;
    int p = pos[i], l = label[i];
    bool ok = p >= 0 && p < T && l >= 0 && l < V;
    if (threadIdx.x == 0) {
        lab[i] = ok ? l : -1;
        if (!ok) atomicOr(flags, (unsigned)OT_CUDA_BAD_TARGET);
    }
    for (int c = threadIdx.x; c < H; c += blockDim.x)
        h_sel[(size_t)i * H + c] = ok ? h[(size_t)p * H + c] : __float2bfloat16_rn(0.0f);
}

__global__ void xent_init_kernel(float *run_max, float *run_sum, float *zlab, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    run_max[i] = -INFINITY;
    run_sum[i] = 0.0f;
    zlab[i] = NAN; // stays NaN for an invalid target
}

// One block per target: fold this chunk's maximum and sum of exponentials into the running pair.
__global__ void xent_chunk_lse_kernel(float *run_max, float *run_sum, float *zlab, const float *logits,
                                      const int32_t *lab, int vc, int v0) {
    __shared__ float scratch[32];
    int i = blockIdx.x;
    const float *row = logits + (size_t)i * vc;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < vc; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, scratch);
    float s = 0.0f;
    for (int j = threadIdx.x; j < vc; j += blockDim.x) s += expf(row[j] - mx);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        float m_old = run_max[i], m_new = fmaxf(m_old, mx);
        run_sum[i] = run_sum[i] * expf(m_old - m_new) + s * expf(mx - m_new); // first chunk: 0 · exp(−inf) = 0
        run_max[i] = m_new;
        int l = lab[i];
        if (l >= v0 && l < v0 + vc) zlab[i] = row[l - v0];
    }
}

// lse_i = m_i + log s_i; *loss_sum += Σ_i (lse_i − z_i) in double, in index order within one block.
__global__ void xent_finish_kernel(double *loss_sum, float *lse, const float *run_max, const float *run_sum,
                                   const float *zlab, int n) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float l = run_max[i] + logf(run_sum[i]);
        lse[i] = l;
        acc += (double)l - (double)zlab[i];
    }
    acc = block_sum_d(acc, scratch);
    if (threadIdx.x == 0) *loss_sum += acc;
}

// dlogits[i, j] = grad_scale · (exp(logit − lse_i) − [v0 + j == label_i]); zero for an invalid target.
__global__ void xent_dlogits_kernel(bf16 *dlogits, const float *logits, const float *lse, const int32_t *lab, int vc,
                                    int v0, float grad_scale) {
    int i = blockIdx.x;
    int l = lab[i];
    float li = lse[i];
    for (int j = threadIdx.x; j < vc; j += blockDim.x) {
        size_t o = (size_t)i * vc + j;
        float d = l < 0 ? 0.0f : grad_scale * (expf(logits[o] - li) - (v0 + j == l ? 1.0f : 0.0f));
        dlogits[o] = f2bf(d);
    }
}

// One pass, per chunk (one block per target): the chunk's maximum folds into the running maximum m; the running
// sum and the gathered gradient acc (dh_sel row) are rescaled by exp(m_old − m_new) (0 at the first chunk, 1
// while the maximum holds: then acc is left alone); p[i, j] = exp(logit − m_new) in bf16 for the product
// acc += p · W_chunk that follows (zero for an invalid target).
__global__ void xent_chunk_onepass_kernel(float *run_max, float *run_sum, float *zlab, bf16 *p, float *dh_sel,
                                          const float *logits, const int32_t *lab, int vc, int v0, int H) {
    __shared__ float scratch[32];
    const int i = blockIdx.x, l = lab[i];
    const float *row = logits + (size_t)i * vc;
    bf16 *prow = p + (size_t)i * vc;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < vc; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, scratch);
    const float m_old = run_max[i], m_new = fmaxf(m_old, mx);
    float s = 0.0f;
    for (int j = threadIdx.x; j < vc; j += blockDim.x) {
        const float e = expf(row[j] - m_new);
        s += e;
        prow[j] = f2bf(l < 0 ? 0.0f : e);
    }
    s = block_sum(s, scratch); // its barriers also order every thread's read of run_max before thread 0's write
    const float r = expf(m_old - m_new);
    if (r != 1.0f)
        for (int c = threadIdx.x; c < H; c += blockDim.x) dh_sel[(size_t)i * H + c] *= r;
    if (threadIdx.x == 0) {
        run_sum[i] = run_sum[i] * r + s;
        run_max[i] = m_new;
        if (l >= v0 && l < v0 + vc) zlab[i] = row[l - v0];
    }
}

// One pass, at the end: dh_sel_i = grad_scale · (acc_i / s_i − W[label_i]); zero for an invalid target.
__global__ void xent_onepass_dh_kernel(float *dh_sel, const float *run_sum, const int32_t *lab, const bf16 *Wlm,
                                       int H, float grad_scale) {
    const int i = blockIdx.x, l = lab[i];
    float *row = dh_sel + (size_t)i * H;
    if (l < 0) {
        for (int c = threadIdx.x; c < H; c += blockDim.x) row[c] = 0.0f;
        return;
    }
    const float inv = grad_scale / run_sum[i];
    const bf16 *w = Wlm + (size_t)l * H;
    for (int c = threadIdx.x; c < H; c += blockDim.x) row[c] = row[c] * inv - grad_scale * bf2f(w[c]);
}

// dh[pos_i] += dh_sel[i]
__global__ void xent_scatter_kernel(bf16 *dh, const float *dh_sel, const int32_t *pos, const int32_t *lab, int H) {
    int i = blockIdx.x;
    if (lab[i] < 0) return;
    bf16 *dst = dh + (size_t)pos[i] * H;
    for (int c = threadIdx.x; c < H; c += blockDim.x) atomicAdd(dst + c, f2bf(dh_sel[(size_t)i * H + c]));
}

// logits[n, vc] (row-major, fp32) = h_sel[n, H] · W[v0 .. v0+vc)ᵀ; column-major: logitsᵀ = W_cmᵀ · h_sel_cm.
static void chunk_logits(cublasHandle_t hb, float *logits, const bf16 *Wlm, const bf16 *h_sel, int v0, int vc, int n,
                         int H) {
    float one = 1.0f, zero = 0.0f;
    OT_CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, vc, n, H, &one, Wlm + (size_t)v0 * H, CUDA_R_16BF, H,
                                 h_sel, CUDA_R_16BF, H, &zero, logits, CUDA_R_32F, vc, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
}

// The state of one sweep: the selected hidden rows, the running logsumexp pair, and the chunk buffers.
struct ot_cuda_xent {
    cudaStream_t stream;
    cublasHandle_t hb;
    const int32_t *pos;
    int n, T, H, V, vc;
    float grad_scale;
    bf16 *h_sel, *dlogits;
    int32_t *lab;
    float *stats, *run_max, *run_sum, *zlab, *lse, *logits, *dh_sel;
};

ot_cuda_xent *ot_cuda_xent_begin(cudaStream_t stream, ot_cuda_blas *blas, const ot_bf16 *h, const int32_t *pos,
                                 const int32_t *label, int n, int T, int H, int V, float grad_scale, int want_dh) {
    OT_REQUIRE(n >= 0 && T > 0 && H > 0 && V > 0, "ot_cuda_lmhead_xent: bad sizes n %d T %d H %d V %d", n, T, H, V);
    OT_REQUIRE(blas && blas->blas, "ot_cuda_lmhead_xent: cuBLAS handles not initialised (ot_cuda_blas_init)");
    ot_cuda_xent *x = (ot_cuda_xent *)ot_calloc(1, sizeof *x);
    x->stream = stream;
    x->hb = (cublasHandle_t)blas->blas;
    x->pos = pos;
    x->n = n, x->T = T, x->H = H, x->V = V;
    x->grad_scale = grad_scale;
    if (!n) return x;
    x->vc = chunk_cols(n, V);
    x->h_sel = ot_cuda_tmp<bf16>((size_t)n * H, stream);
    x->lab = ot_cuda_tmp<int32_t>((size_t)n, stream);
    x->stats = ot_cuda_tmp<float>((size_t)4 * n, stream);
    x->run_max = x->stats, x->run_sum = x->stats + n, x->zlab = x->stats + 2 * n, x->lse = x->stats + 3 * n;
    x->logits = ot_cuda_tmp<float>((size_t)n * x->vc, stream);
    xent_gather_kernel<<<n, XENT_THREADS, 0, stream>>>(x->h_sel, x->lab, as_bf16(h), pos, label, T, H, V,
                                                       ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
    xent_init_kernel<<<ot_cdiv(n, 256), 256, 0, stream>>>(x->run_max, x->run_sum, x->zlab, n);
    OT_LAUNCH_CHECK();
    if (want_dh) {
        x->dh_sel = ot_cuda_tmp<float>((size_t)n * H, stream);
        OT_CUDA_CHECK(cudaMemsetAsync(x->dh_sel, 0, (size_t)n * H * sizeof(float), stream));
    }
    return x;
}

void ot_cuda_xent_loss_rows(ot_cuda_xent *x, const ot_bf16 *rows, int v0, int nv) {
    OT_REQUIRE(v0 >= 0 && nv >= 0 && v0 + nv <= x->V, "ot_cuda_xent_loss_rows: rows %d..%d of %d", v0, v0 + nv, x->V);
    if (!x->n) return;
    OT_CUBLAS_CHECK(cublasSetStream(x->hb, x->stream));
    for (int c0 = v0; c0 < v0 + nv; c0 += x->vc) {
        int w = v0 + nv - c0 < x->vc ? v0 + nv - c0 : x->vc;
        chunk_logits(x->hb, x->logits, as_bf16(rows) + (size_t)(c0 - v0) * x->H, x->h_sel, 0, w, x->n, x->H);
        xent_chunk_lse_kernel<<<x->n, XENT_THREADS, 0, x->stream>>>(x->run_max, x->run_sum, x->zlab, x->logits,
                                                                    x->lab, w, c0);
        OT_LAUNCH_CHECK();
    }
}

void ot_cuda_xent_loss_end(ot_cuda_xent *x, double *loss_sum) {
    if (!x->n) return;
    xent_finish_kernel<<<1, 1024, 0, x->stream>>>(loss_sum, x->lse, x->run_max, x->run_sum, x->zlab, x->n);
    OT_LAUNCH_CHECK();
}

void ot_cuda_xent_grad_rows(ot_cuda_xent *x, const ot_bf16 *rows, float *dWrows, int v0, int nv) {
    OT_REQUIRE(v0 >= 0 && nv >= 0 && v0 + nv <= x->V, "ot_cuda_xent_grad_rows: rows %d..%d of %d", v0, v0 + nv, x->V);
    if (!x->n || (!x->dh_sel && !dWrows)) return;
    const int n = x->n, H = x->H;
    cudaStream_t stream = x->stream;
    OT_CUBLAS_CHECK(cublasSetStream(x->hb, stream));
    if (!x->dlogits) x->dlogits = ot_cuda_tmp<bf16>((size_t)n * x->vc, stream);
    const bf16 *W = as_bf16(rows);
    float one = 1.0f;
    for (int c0 = v0; c0 < v0 + nv; c0 += x->vc) {
        int w = v0 + nv - c0 < x->vc ? v0 + nv - c0 : x->vc;
        const bf16 *Wc = W + (size_t)(c0 - v0) * H;
        chunk_logits(x->hb, x->logits, Wc, x->h_sel, 0, w, n, H);
        xent_dlogits_kernel<<<n, XENT_THREADS, 0, stream>>>(x->dlogits, x->logits, x->lse, x->lab, w, c0,
                                                            x->grad_scale);
        OT_LAUNCH_CHECK();
        if (x->dh_sel) // dh_selᵀ (H × n) += W_chunk_cm (H × w) · dlogits_cm (w × n)
            OT_CUBLAS_CHECK(cublasGemmEx(x->hb, CUBLAS_OP_N, CUBLAS_OP_N, H, n, w, &one, Wc, CUDA_R_16BF, H,
                                         x->dlogits, CUDA_R_16BF, w, &one, x->dh_sel, CUDA_R_32F, H,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        if (dWrows) // dW_chunkᵀ (H × w) += h_sel_cm (H × n) · dlogits_cmᵀ (n × w)
            OT_CUBLAS_CHECK(cublasGemmEx(x->hb, CUBLAS_OP_N, CUBLAS_OP_T, H, w, n, &one, x->h_sel, CUDA_R_16BF, H,
                                         x->dlogits, CUDA_R_16BF, w, &one, dWrows + (size_t)(c0 - v0) * H, CUDA_R_32F,
                                         H, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
}

void ot_cuda_xent_end(ot_cuda_xent *x, ot_bf16 *dh) {
    if (x->n) {
        cudaStream_t stream = x->stream;
        if (dh && x->dh_sel) {
            xent_scatter_kernel<<<x->n, XENT_THREADS, 0, stream>>>(as_bf16(dh), x->dh_sel, x->pos, x->lab, x->H);
            OT_LAUNCH_CHECK();
        }
        if (x->dh_sel) ot_cuda_tmp_free(x->dh_sel, stream);
        if (x->dlogits) ot_cuda_tmp_free(x->dlogits, stream);
        ot_cuda_tmp_free(x->logits, stream);
        ot_cuda_tmp_free(x->stats, stream);
        ot_cuda_tmp_free(x->lab, stream);
        ot_cuda_tmp_free(x->h_sel, stream);
    }
    free(x);
}

// The loss and the input gradient in one sweep over the whole head (see the top of the file).
static void xent_onepass(ot_cuda_xent *x, double *loss_sum, const ot_bf16 *Wlm) {
    if (!x->n) return;
    const int n = x->n, H = x->H;
    cudaStream_t stream = x->stream;
    OT_CUBLAS_CHECK(cublasSetStream(x->hb, stream));
    x->dlogits = ot_cuda_tmp<bf16>((size_t)n * x->vc, stream); // holds p
    const bf16 *W = as_bf16(Wlm);
    float one = 1.0f;
    for (int c0 = 0; c0 < x->V; c0 += x->vc) {
        int w = x->V - c0 < x->vc ? x->V - c0 : x->vc;
        const bf16 *Wc = W + (size_t)c0 * H;
        chunk_logits(x->hb, x->logits, Wc, x->h_sel, 0, w, n, H);
        xent_chunk_onepass_kernel<<<n, XENT_THREADS, 0, stream>>>(x->run_max, x->run_sum, x->zlab, x->dlogits,
                                                                  x->dh_sel, x->logits, x->lab, w, c0, H);
        OT_LAUNCH_CHECK();
        // dh_selᵀ (H × n) += W_chunk_cm (H × w) · p_cm (w × n)
        OT_CUBLAS_CHECK(cublasGemmEx(x->hb, CUBLAS_OP_N, CUBLAS_OP_N, H, n, w, &one, Wc, CUDA_R_16BF, H, x->dlogits,
                                     CUDA_R_16BF, w, &one, x->dh_sel, CUDA_R_32F, H, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
    }
    ot_cuda_xent_loss_end(x, loss_sum);
    xent_onepass_dh_kernel<<<n, XENT_THREADS, 0, stream>>>(x->dh_sel, x->run_sum, x->lab, W, H, x->grad_scale);
    OT_LAUNCH_CHECK();
}

void ot_cuda_lmhead_xent(cudaStream_t stream, ot_cuda_blas *blas, double *loss_sum, ot_bf16 *dh, float *dWlm,
                         const ot_bf16 *h, const ot_bf16 *Wlm, const int32_t *pos, const int32_t *label, int n, int T,
                         int H, int V, float grad_scale) {
    ot_cuda_xent *x = ot_cuda_xent_begin(stream, blas, h, pos, label, n, T, H, V, grad_scale, dh != NULL);
    if (dh && !dWlm) { // the head frozen: one pass
        xent_onepass(x, loss_sum, Wlm);
        ot_cuda_xent_end(x, dh);
        return;
    }
    ot_cuda_xent_loss_rows(x, Wlm, 0, V);
    ot_cuda_xent_loss_end(x, loss_sum);
    if (dh || dWlm) ot_cuda_xent_grad_rows(x, Wlm, dWlm, 0, V);
    ot_cuda_xent_end(x, dh);
}
