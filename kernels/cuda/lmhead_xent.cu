// Cross-entropy at the selected positions through the output head, GPU (spec §2.9, §2.10). The vocabulary
// (201,088 for gpt-oss) is walked in chunks: only [n, chunk] logits exist at a time, never [n, V] or [T, V].
//
//   pass 1 (loss): for each chunk, logits = h_sel · W_chunkᵀ (cuBLAS, fp32 out), then a running max and sum of
//                  exponentials per target (online logsumexp) and the label's logit when it falls in the chunk;
//                  loss_i = lse_i − logit_label, summed in double in a fixed order into *loss_sum.
//   pass 2 (grad): for each chunk, the logits again, dlogits = grad_scale · (softmax − onehot) in bf16, then
//                  dh_sel += dlogits · W_chunk (fp32) and dW_chunk += dlogitsᵀ · h_sel (fp32); at the end
//                  dh[pos_i] += dh_sel[i] (bf16 atomics, so a repeated position sums correctly).
#include <cublas_v2.h>

#include "kernels/cuda/cuda_common.cuh"

#define XENT_CHUNK_ELEMS (1 << 24) // fp32 logits per chunk (64 MiB), whatever n is
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

void ot_cuda_lmhead_xent(cudaStream_t stream, ot_cuda_blas *blas, double *loss_sum, ot_bf16 *dh, float *dWlm,
                         const ot_bf16 *h, const ot_bf16 *Wlm, const int32_t *pos, const int32_t *label, int n, int T,
                         int H, int V, float grad_scale) {
    OT_REQUIRE(n >= 0 && T > 0 && H > 0 && V > 0, "ot_cuda_lmhead_xent: bad sizes n %d T %d H %d V %d", n, T, H, V);
    OT_REQUIRE(blas && blas->blas, "ot_cuda_lmhead_xent: cuBLAS handles not initialised (ot_cuda_blas_init)");
    if (!n) return;
    cublasHandle_t hb = (cublasHandle_t)blas->blas;
    OT_CUBLAS_CHECK(cublasSetStream(hb, stream));
    long want = XENT_CHUNK_ELEMS / n;
    int vc = (int)(want < 256 ? 256 : want > V ? V : want);
    if (vc < V) vc -= vc % 8; // keep chunk starts 16-byte aligned in the [V, H] weight and the logits rows
    const int want_grad = dh || dWlm;

    bf16 *h_sel = ot_cuda_tmp<bf16>((size_t)n * H, stream);
    int32_t *lab = ot_cuda_tmp<int32_t>((size_t)n, stream);
    float *stats = ot_cuda_tmp<float>((size_t)4 * n, stream);
    float *run_max = stats, *run_sum = stats + n, *zlab = stats + 2 * n, *lse = stats + 3 * n;
    float *logits = ot_cuda_tmp<float>((size_t)n * vc, stream);

    xent_gather_kernel<<<n, XENT_THREADS, 0, stream>>>(h_sel, lab, as_bf16(h), pos, label, T, H, V,
                                                       ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
    xent_init_kernel<<<ot_cdiv(n, 256), 256, 0, stream>>>(run_max, run_sum, zlab, n);
    OT_LAUNCH_CHECK();
    for (int v0 = 0; v0 < V; v0 += vc) {
        int w = V - v0 < vc ? V - v0 : vc;
        chunk_logits(hb, logits, as_bf16(Wlm), h_sel, v0, w, n, H);
        xent_chunk_lse_kernel<<<n, XENT_THREADS, 0, stream>>>(run_max, run_sum, zlab, logits, lab, w, v0);
        OT_LAUNCH_CHECK();
    }
    xent_finish_kernel<<<1, 1024, 0, stream>>>(loss_sum, lse, run_max, run_sum, zlab, n);
    OT_LAUNCH_CHECK();

    if (want_grad) {
        bf16 *dlogits = ot_cuda_tmp<bf16>((size_t)n * vc, stream);
        float *dh_sel = NULL;
        if (dh) {
            dh_sel = ot_cuda_tmp<float>((size_t)n * H, stream);
            OT_CUDA_CHECK(cudaMemsetAsync(dh_sel, 0, (size_t)n * H * sizeof(float), stream));
        }
        float one = 1.0f;
        for (int v0 = 0; v0 < V; v0 += vc) {
            int w = V - v0 < vc ? V - v0 : vc;
            chunk_logits(hb, logits, as_bf16(Wlm), h_sel, v0, w, n, H);
            xent_dlogits_kernel<<<n, XENT_THREADS, 0, stream>>>(dlogits, logits, lse, lab, w, v0, grad_scale);
            OT_LAUNCH_CHECK();
            if (dh) // dh_selᵀ (H × n) += W_chunk_cm (H × w) · dlogits_cm (w × n)
                OT_CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_N, CUBLAS_OP_N, H, n, w, &one, Wlm + (size_t)v0 * H,
                                             CUDA_R_16BF, H, dlogits, CUDA_R_16BF, w, &one, dh_sel, CUDA_R_32F, H,
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
            if (dWlm) // dW_chunkᵀ (H × w) += h_sel_cm (H × n) · dlogits_cmᵀ (n × w)
                OT_CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_N, CUBLAS_OP_T, H, w, n, &one, h_sel, CUDA_R_16BF, H,
                                             dlogits, CUDA_R_16BF, w, &one, dWlm + (size_t)v0 * H, CUDA_R_32F, H,
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
        if (dh) {
            xent_scatter_kernel<<<n, XENT_THREADS, 0, stream>>>(as_bf16(dh), dh_sel, pos, lab, H);
            OT_LAUNCH_CHECK();
            ot_cuda_tmp_free(dh_sel, stream);
        }
        ot_cuda_tmp_free(dlogits, stream);
    }
    ot_cuda_tmp_free(logits, stream);
    ot_cuda_tmp_free(stats, stream);
    ot_cuda_tmp_free(lab, stream);
    ot_cuda_tmp_free(h_sel, stream);
}
