// RMSNorm (HF GptOssRMSNorm) on the GPU: one block per token row, fp32 sums, bf16 in and out.
#include "kernels/cuda/cuda_common.cuh"

#define RMS_THREADS 256
#define RMS_DW_TOKENS 64 // tokens summed by one thread before its atomic add into dw

// Memory bound: rows whose width is a multiple of 8 (buffers aligned) move as 16-byte vectors of 8 bf16 (V = 8),
// others element by element (V = 1).
template <int V>
__global__ void rmsnorm_fwd_kernel(bf16 *y, float *rstd, const bf16 *x, const bf16 *w, int H, float eps) {
    __shared__ float scratch[32];
    int t = blockIdx.x;
    const bf16 *xt = x + (size_t)t * H;
    float ss = 0, v[V];
    for (int i = threadIdx.x * V; i < H; i += blockDim.x * V) {
        load_bf16s<V>(v, xt + i);
#pragma unroll
        for (int j = 0; j < V; j++) ss += v[j] * v[j];
    }
    ss = block_sum(ss, scratch);
    // 1/sqrt rather than the approximate rsqrt: rstd is saved and reused by backward, as the CPU reference does.
    float r = 1.0f / sqrtf(ss / (float)H + eps);
    if (threadIdx.x == 0) rstd[t] = r;
    bf16 *yt = y + (size_t)t * H;
    for (int i = threadIdx.x * V; i < H; i += blockDim.x * V) {
        float wv[V], o[V];
        load_bf16s<V>(v, xt + i);
        load_bf16s<V>(wv, w + i);
#pragma unroll
        for (int j = 0; j < V; j++) o[j] = v[j] * r * wv[j];
        store_bf16s<V>(yt + i, o);
    }
}

// dx_i += r·g_i − r³·x_i·(Σ_k g_k x_k)/H with g = dy·w
template <int V>
__global__ void rmsnorm_bwd_dx_kernel(bf16 *dx, const bf16 *dy, const bf16 *x, const bf16 *w, const float *rstd,
                                      int H) {
    __shared__ float scratch[32];
    int t = blockIdx.x;
    const bf16 *xt = x + (size_t)t * H, *dyt = dy + (size_t)t * H;
    float gx = 0, xv[V], dv[V], wv[V];
    for (int i = threadIdx.x * V; i < H; i += blockDim.x * V) {
        load_bf16s<V>(xv, xt + i);
        load_bf16s<V>(dv, dyt + i);
        load_bf16s<V>(wv, w + i);
#pragma unroll
        for (int j = 0; j < V; j++) gx += dv[j] * wv[j] * xv[j];
    }
    gx = block_sum(gx, scratch);
    float r = rstd[t];
    float c = r * r * r * gx / (float)H;
    bf16 *dxt = dx + (size_t)t * H;
    for (int i = threadIdx.x * V; i < H; i += blockDim.x * V) {
        float ov[V];
        load_bf16s<V>(xv, xt + i);
        load_bf16s<V>(dv, dyt + i);
        load_bf16s<V>(wv, w + i);
        load_bf16s<V>(ov, dxt + i);
#pragma unroll
        for (int j = 0; j < V; j++) ov[j] = ov[j] + r * dv[j] * wv[j] - c * xv[j];
        store_bf16s<V>(dxt + i, ov);
    }
}

// Whether rows of width H in these buffers move as 16-byte vectors.
static bool rms_vec8(int H, const void *a, const void *b, const void *c, const void *d) {
    return H % 8 == 0 && (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0 && (uintptr_t)c % 16 == 0 &&
           (!d || (uintptr_t)d % 16 == 0);
}

// dw_i += Σ_t dy_ti · x_ti · r_t: each thread owns one column i for a run of RMS_DW_TOKENS tokens (coalesced
// across the warp), then one atomic add per thread and run.
__global__ void rmsnorm_bwd_dw_kernel(float *dw, const bf16 *dy, const bf16 *x, const float *rstd, int T, int H) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= H) return;
    int t0 = blockIdx.y * RMS_DW_TOKENS, t1 = min(T, t0 + RMS_DW_TOKENS);
    float acc = 0;
    for (int t = t0; t < t1; t++) acc += bf2f(dy[(size_t)t * H + i]) * bf2f(x[(size_t)t * H + i]) * rstd[t];
    atomicAdd(dw + i, acc);
}

void ot_cuda_rmsnorm_fwd(cudaStream_t stream, ot_bf16 *y, float *rstd, const ot_bf16 *x, const ot_bf16 *w, int T,
                         int H, float eps) {
    OT_REQUIRE(T >= 0 && H > 0, "ot_cuda_rmsnorm_fwd: bad sizes T %d H %d", T, H);
    if (!T) return;
    if (rms_vec8(H, y, x, w, NULL))
        rmsnorm_fwd_kernel<8><<<T, 128, 0, stream>>>(as_bf16(y), rstd, as_bf16(x), as_bf16(w), H, eps);
    else
        rmsnorm_fwd_kernel<1><<<T, RMS_THREADS, 0, stream>>>(as_bf16(y), rstd, as_bf16(x), as_bf16(w), H, eps);
    OT_LAUNCH_CHECK();
}

void ot_cuda_rmsnorm_bwd(cudaStream_t stream, ot_bf16 *dx, float *dw, const ot_bf16 *dy, const ot_bf16 *x,
                         const ot_bf16 *w, const float *rstd, int T, int H) {
    OT_REQUIRE(T >= 0 && H > 0, "ot_cuda_rmsnorm_bwd: bad sizes T %d H %d", T, H);
    if (!T) return;
    if (dx) {
        if (rms_vec8(H, dx, dy, x, w))
            rmsnorm_bwd_dx_kernel<8><<<T, 128, 0, stream>>>(as_bf16(dx), as_bf16(dy), as_bf16(x), as_bf16(w), rstd,
                                                            H);
        else
            rmsnorm_bwd_dx_kernel<1><<<T, RMS_THREADS, 0, stream>>>(as_bf16(dx), as_bf16(dy), as_bf16(x), as_bf16(w),
                                                                    rstd, H);
        OT_LAUNCH_CHECK();
    }
    if (dw) {
        OT_REQUIRE(ot_cdiv(T, RMS_DW_TOKENS) <= 65535, "ot_cuda_rmsnorm_bwd: T %d too large", T);
        dim3 grid(ot_cdiv(H, 256), ot_cdiv(T, RMS_DW_TOKENS));
        rmsnorm_bwd_dw_kernel<<<grid, 256, 0, stream>>>(dw, as_bf16(dy), as_bf16(x), rstd, T, H);
        OT_LAUNCH_CHECK();
    }
}
