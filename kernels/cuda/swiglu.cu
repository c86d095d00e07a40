// gpt-oss clamped SwiGLU on the GPU (spec §2.8), interleaved gate/up columns: gate = gu[2i], up = gu[2i+1].
#include "kernels/cuda/cuda_common.cuh"

// act = (clamp(up, ±limit) + 1) · g · σ(α·g) with g = min(gate, limit)
__global__ void swiglu_fwd_kernel(bf16 *act, const bf16 *gu, size_t n_out, int I, float alpha, float limit) {
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < n_out; o += (size_t)gridDim.x * blockDim.x) {
        size_t r = o / I, i = o % I;
        __nv_bfloat162 p = reinterpret_cast<const __nv_bfloat162 *>(gu + r * 2 * I)[i];
        float gate = fminf(bf2f(p.x), limit);
        float up = fminf(fmaxf(bf2f(p.y), -limit), limit);
        float sig = 1.0f / (1.0f + expf(-alpha * gate));
        act[o] = f2bf((up + 1.0f) * gate * sig);
    }
}

// The clamps pass gradient inside the closed interval (as torch's clamp backward), none outside it.
__global__ void swiglu_bwd_kernel(bf16 *dgu, const bf16 *dact, const bf16 *gu, size_t n_out, int I, float alpha,
                                  float limit) {
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < n_out; o += (size_t)gridDim.x * blockDim.x) {
        size_t r = o / I, i = o % I;
        __nv_bfloat162 p = reinterpret_cast<const __nv_bfloat162 *>(gu + r * 2 * I)[i];
        float gate_in = bf2f(p.x), up_in = bf2f(p.y);
        float gate = fminf(gate_in, limit);
        float up = fminf(fmaxf(up_in, -limit), limit);
        float sig = 1.0f / (1.0f + expf(-alpha * gate));
        float da = bf2f(dact[o]);
        float dgate = gate_in <= limit ? da * (up + 1.0f) * (sig + alpha * gate * sig * (1.0f - sig)) : 0.0f;
        float dup = (up_in >= -limit && up_in <= limit) ? da * gate * sig : 0.0f;
        __nv_bfloat162 *d = reinterpret_cast<__nv_bfloat162 *>(dgu + r * 2 * I) + i;
        __nv_bfloat162 old = *d;
        *d = __floats2bfloat162_rn(bf2f(old.x) + dgate, bf2f(old.y) + dup);
    }
}

void ot_cuda_swiglu_fwd(cudaStream_t stream, ot_bf16 *act, const ot_bf16 *gu, int n, int I, float alpha, float limit) {
    OT_REQUIRE(n >= 0 && I > 0, "ot_cuda_swiglu_fwd: bad sizes n %d I %d", n, I);
    OT_REQUIRE((uintptr_t)gu % 4 == 0, "ot_cuda_swiglu_fwd: gu must be 4-byte aligned");
    size_t n_out = (size_t)n * I;
    if (!n_out) return;
    swiglu_fwd_kernel<<<ot_grid_for(n_out, 256), 256, 0, stream>>>(as_bf16(act), as_bf16(gu), n_out, I, alpha, limit);
    OT_LAUNCH_CHECK();
}

void ot_cuda_swiglu_bwd(cudaStream_t stream, ot_bf16 *dgu, const ot_bf16 *dact, const ot_bf16 *gu, int n, int I,
                        float alpha, float limit) {
    OT_REQUIRE(n >= 0 && I > 0, "ot_cuda_swiglu_bwd: bad sizes n %d I %d", n, I);
    OT_REQUIRE((uintptr_t)gu % 4 == 0 && (uintptr_t)dgu % 4 == 0, "ot_cuda_swiglu_bwd: gu, dgu must be 4-byte aligned");
    size_t n_out = (size_t)n * I;
    if (!n_out || !dgu) return;
    swiglu_bwd_kernel<<<ot_grid_for(n_out, 256), 256, 0, stream>>>(as_bf16(dgu), as_bf16(dact), as_bf16(gu), n_out, I,
                                                                   alpha, limit);
    OT_LAUNCH_CHECK();
}
