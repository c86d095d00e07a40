// MoE router on the GPU: top-k of the raw logits (descending, ties to the lower expert index, as the CPU
// reference), then a softmax over the k selected values; and its backward. One thread per token: E and k are
// small (32 and 4 for gpt-oss-20b), and this keeps the tie rule obviously identical to the CPU's.
#include "kernels/cuda/cuda_common.cuh"

__global__ void router_topk_fwd_kernel(int32_t *idx, float *w, const bf16 *logits, int T, int E, int k) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    const bf16 *lt = logits + (size_t)t * E;
    int32_t *it = idx + (size_t)t * k;
    float *wt = w + (size_t)t * k;
    // k passes of a selection scan; the chosen indices so far (in `it`) are skipped. Strict '>' keeps the lowest
    // index among equal logits.
    for (int j = 0; j < k; j++) {
        int best = -1;
        float best_v = 0.0f;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int jj = 0; jj < j; jj++) taken |= it[jj] == e;
            if (taken) continue;
            float v = bf2f(lt[e]);
            if (best < 0 || v > best_v) {
                best = e;
                best_v = v;
            }
        }
        it[j] = best;
        wt[j] = best_v; // the raw logit for now
    }
    // Softmax over the k selected logits; the first is the largest.
    float m = wt[0], sum = 0.0f;
    for (int j = 0; j < k; j++) {
        wt[j] = expf(wt[j] - m);
        sum += wt[j];
    }
    for (int j = 0; j < k; j++) wt[j] /= sum;
}

// dz_j = w_j · (dw_j − Σ_l w_l·dw_l), added to the logit of the j-th selected expert.
__global__ void router_topk_bwd_kernel(bf16 *dlogits, const float *dw, const float *w, const int32_t *idx, int T,
                                       int E, int k, unsigned *flags) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    const float *wt = w + (size_t)t * k, *dwt = dw + (size_t)t * k;
    float dot = 0.0f;
    for (int j = 0; j < k; j++) dot += wt[j] * dwt[j];
    for (int j = 0; j < k; j++) {
        int e = idx[(size_t)t * k + j];
        if (e < 0 || e >= E) {
            atomicOr(flags, (unsigned)OT_CUDA_BAD_EXPERT);
            continue;
        }
        bf16 *d = dlogits + (size_t)t * E + e;
        *d = f2bf(bf2f(*d) + wt[j] * (dwt[j] - dot));
    }
}

void ot_cuda_router_topk_fwd(cudaStream_t stream, int32_t *idx, float *w, const ot_bf16 *logits, int T, int E, int k) {
    OT_REQUIRE(T >= 0 && E > 0 && k > 0 && k <= E, "ot_cuda_router_topk_fwd: experts per token %d must be in 1..%d "
               "(T %d)", k, E, T);
    if (!T) return;
    router_topk_fwd_kernel<<<ot_cdiv(T, 128), 128, 0, stream>>>(idx, w, as_bf16(logits), T, E, k);
    OT_LAUNCH_CHECK();
}

void ot_cuda_router_topk_bwd(cudaStream_t stream, ot_bf16 *dlogits, const float *dw, const float *w,
                             const int32_t *idx, int T, int E, int k) {
    OT_REQUIRE(T >= 0 && E > 0 && k > 0 && k <= E, "ot_cuda_router_topk_bwd: bad sizes T %d E %d k %d", T, E, k);
    if (!T || !dlogits) return;
    router_topk_bwd_kernel<<<ot_cdiv(T, 128), 128, 0, stream>>>(as_bf16(dlogits), dw, w, idx, T, E, k,
                                                               ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
}
