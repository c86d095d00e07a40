// YaRN RoPE on the GPU, NeoX half-split rotation, in place on [T, nh, D] bf16.
#include "kernels/cuda/cuda_common.cuh"

// One block per token: the D/2 (cos, sin) pairs of the token's position go to shared memory once, then every
// thread rotates pairs of any head with them. The angle pos·inv_freq is a float product as HF computes it;
// sincosf is the accurate version (angles reach ~1e5 radians, far outside where the fast intrinsics are usable).
// `sign` is +1 for the forward rotation and −1 for its transpose (the backward). A second tensor x2 [T, nh2, D]
// (queries and keys: one launch, one angle table) is optional.
#define ROPE_MAX_HALF 256
__global__ void rope_kernel(bf16 *x, int nh, bf16 *x2, int nh2, const int32_t *pos, const float *inv_freq,
                            float attn_factor, int D, float sign) {
    __shared__ float cos_s[ROPE_MAX_HALF], sin_s[ROPE_MAX_HALF];
    int t = blockIdx.x, half = D / 2;
    float p = (float)pos[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float s, c;
        sincosf(p * inv_freq[i], &s, &c);
        cos_s[i] = c * attn_factor;
        sin_s[i] = s * attn_factor * sign;
    }
    __syncthreads();
    const int n1 = nh * half, n_all = n1 + (x2 ? nh2 * half : 0);
    for (int idx = threadIdx.x; idx < n_all; idx += blockDim.x) {
        const bool first = idx < n1;
        const int k = first ? idx : idx - n1, h = k / half, i = k % half;
        float c = cos_s[i], s = sin_s[i];
        bf16 *lo = first ? x + ((size_t)t * nh + h) * D : x2 + ((size_t)t * nh2 + h) * D, *hi = lo + half;
        float a = bf2f(lo[i]), b = bf2f(hi[i]);
        lo[i] = f2bf(a * c - b * s);
        hi[i] = f2bf(b * c + a * s);
    }
}

static void rope(cudaStream_t stream, const char *op, ot_bf16 *q, int nh, ot_bf16 *k, int nkv, const int32_t *pos,
                 const float *inv_freq, float attn_factor, int T, int D, float sign) {
    OT_REQUIRE(T >= 0 && nh > 0 && (!k || nkv > 0) && D > 0 && D % 2 == 0 && D / 2 <= ROPE_MAX_HALF,
               "%s: bad sizes T %d nh %d nkv %d D %d", op, T, nh, nkv, D);
    if (!T) return;
    rope_kernel<<<T, 256, 0, stream>>>(as_bf16(q), nh, as_bf16(k), nkv, pos, inv_freq, attn_factor, D, sign);
    OT_LAUNCH_CHECK();
}

void ot_cuda_rope_fwd(cudaStream_t stream, ot_bf16 *x, const int32_t *pos, const float *inv_freq, float attn_factor,
                      int T, int nh, int D) {
    rope(stream, "ot_cuda_rope_fwd", x, nh, NULL, 0, pos, inv_freq, attn_factor, T, D, 1.0f);
}

// dx1 = dy1·c + dy2·s;  dx2 = dy2·c − dy1·s: the forward formula with s negated.
void ot_cuda_rope_bwd(cudaStream_t stream, ot_bf16 *dx, const int32_t *pos, const float *inv_freq, float attn_factor,
                      int T, int nh, int D) {
    rope(stream, "ot_cuda_rope_bwd", dx, nh, NULL, 0, pos, inv_freq, attn_factor, T, D, -1.0f);
}

void ot_cuda_rope_qk_fwd(cudaStream_t stream, ot_bf16 *q, ot_bf16 *k, const int32_t *pos, const float *inv_freq,
                         float attn_factor, int T, int nh, int nkv, int D) {
    rope(stream, "ot_cuda_rope_qk_fwd", q, nh, k, nkv, pos, inv_freq, attn_factor, T, D, 1.0f);
}

void ot_cuda_rope_qk_bwd(cudaStream_t stream, ot_bf16 *dq, ot_bf16 *dk, const int32_t *pos, const float *inv_freq,
                         float attn_factor, int T, int nh, int nkv, int D) {
    rope(stream, "ot_cuda_rope_qk_bwd", dq, nh, dk, nkv, pos, inv_freq, attn_factor, T, D, -1.0f);
}
