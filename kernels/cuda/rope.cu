// YaRN RoPE on the GPU, NeoX half-split rotation, in place on [T, nh, D] bf16.
#include "kernels/cuda/cuda_common.cuh"

// One block per token: the D/2 (cos, sin) pairs of the token's position go to shared memory once, then every
// thread rotates pairs of any head with them. The angle pos·inv_freq is a float product as HF computes it;
// sincosf is the accurate version (angles reach ~1e5 radians, far outside where the fast intrinsics are usable).
// `sign` is +1 for the forward rotation and −1 for its transpose (the backward).
#define ROPE_MAX_HALF 256
__global__ void rope_kernel(bf16 *x, const int32_t *pos, const float *inv_freq, float attn_factor, int nh, int D,
                            float sign) {
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
    for (int idx = threadIdx.x; idx < nh * half; idx += blockDim.x) {
        int h = idx / half, i = idx % half;
        float c = cos_s[i], s = sin_s[i];
        bf16 *x1 = x + ((size_t)t * nh + h) * D, *x2 = x1 + half;
        float a = bf2f(x1[i]), b = bf2f(x2[i]);
        x1[i] = f2bf(a * c - b * s);
        x2[i] = f2bf(b * c + a * s);
    }
}

void ot_cuda_rope_fwd(cudaStream_t stream, ot_bf16 *x, const int32_t *pos, const float *inv_freq, float attn_factor,
                      int T, int nh, int D) {
    OT_REQUIRE(T >= 0 && nh > 0 && D > 0 && D % 2 == 0 && D / 2 <= ROPE_MAX_HALF,
               "ot_cuda_rope_fwd: bad sizes T %d nh %d D %d", T, nh, D);
    if (!T) return;
    rope_kernel<<<T, 256, 0, stream>>>(as_bf16(x), pos, inv_freq, attn_factor, nh, D, 1.0f);
    OT_LAUNCH_CHECK();
}

// dx1 = dy1·c + dy2·s;  dx2 = dy2·c − dy1·s: the forward formula with s negated.
void ot_cuda_rope_bwd(cudaStream_t stream, ot_bf16 *dx, const int32_t *pos, const float *inv_freq, float attn_factor,
                      int T, int nh, int D) {
    OT_REQUIRE(T >= 0 && nh > 0 && D > 0 && D % 2 == 0 && D / 2 <= ROPE_MAX_HALF,
               "ot_cuda_rope_bwd: bad sizes T %d nh %d D %d", T, nh, D);
    if (!T) return;
    rope_kernel<<<T, 256, 0, stream>>>(as_bf16(dx), pos, inv_freq, attn_factor, nh, D, -1.0f);
    OT_LAUNCH_CHECK();
}
