// gpt-oss clamped SwiGLU on the GPU (spec §2.8), interleaved gate/up columns: gate = gu[2i], up = gu[2i+1].
// Memory bound (the MoE's widest activations: [pairs, 2I] in, [pairs, I] out), so when the rows allow it a thread
// takes 4 outputs at once: 16-byte loads of gu and stores of dgu, 8-byte accesses of act and dact. Each element goes
// through the same per-pair functions either way.
#include "kernels/cuda/cuda_common.cuh"

// act = (clamp(up, ±limit) + 1) · g · σ(α·g) with g = min(gate, limit)
__device__ __forceinline__ float swiglu_value(__nv_bfloat162 p, float alpha, float limit) {
    float gate = fminf(bf2f(p.x), limit);
    float up = fminf(fmaxf(bf2f(p.y), -limit), limit);
    float sig = 1.0f / (1.0f + expf(-alpha * gate));
    return (up + 1.0f) * gate * sig;
}

// (d gate, d up) for upstream gradient da. The clamps pass gradient inside the closed interval (as torch's clamp
// backward), none outside it. The gradient overwrites dgu (it is the only one: no read of the old values).
__device__ __forceinline__ __nv_bfloat162 swiglu_grad(__nv_bfloat162 p, float da, float alpha, float limit) {
    float gate_in = bf2f(p.x), up_in = bf2f(p.y);
    float gate = fminf(gate_in, limit);
    float up = fminf(fmaxf(up_in, -limit), limit);
    float sig = 1.0f / (1.0f + expf(-alpha * gate));
    float dgate = gate_in <= limit ? da * (up + 1.0f) * (sig + alpha * gate * sig * (1.0f - sig)) : 0.0f;
    float dup = (up_in >= -limit && up_in <= limit) ? da * gate * sig : 0.0f;
    return __floats2bfloat162_rn(dgate, dup);
}

// Any I: one output per step.
__global__ void swiglu_fwd_kernel(bf16 *act, const bf16 *gu, size_t n_out, int I, float alpha, float limit) {
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < n_out; o += (size_t)gridDim.x * blockDim.x) {
        size_t r = o / I, i = o % I;
        act[o] = f2bf(swiglu_value(reinterpret_cast<const __nv_bfloat162 *>(gu + r * 2 * I)[i], alpha, limit));
    }
}

__global__ void swiglu_bwd_kernel(bf16 *dgu, const bf16 *dact, const bf16 *gu, size_t n_out, int I, float alpha,
                                  float limit) {
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < n_out; o += (size_t)gridDim.x * blockDim.x) {
        size_t r = o / I, i = o % I;
        __nv_bfloat162 p = reinterpret_cast<const __nv_bfloat162 *>(gu + r * 2 * I)[i];
        __nv_bfloat162 *d = reinterpret_cast<__nv_bfloat162 *>(dgu + r * 2 * I) + i;
        *d = swiglu_grad(p, bf2f(dact[o]), alpha, limit);
    }
}

// I % 4 == 0, aligned buffers: 4 consecutive outputs per step (output o4 covers act[4·o4 .. 4·o4+3], which are
// gu[8·o4 .. 8·o4+7] since rows of act and gu hold I and 2I values).
__global__ void swiglu_fwd4_kernel(bf16 *act, const bf16 *gu, size_t n4, float alpha, float limit) {
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < n4; o += (size_t)gridDim.x * blockDim.x) {
        uint4 g = reinterpret_cast<const uint4 *>(gu)[o];
        const uint32_t gw[4] = {g.x, g.y, g.z, g.w};
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            v[j] = swiglu_value(*reinterpret_cast<const __nv_bfloat162 *>(&gw[j]), alpha, limit);
        reinterpret_cast<uint2 *>(act)[o] = make_uint2(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]));
    }
}

__global__ void swiglu_bwd4_kernel(bf16 *dgu, const bf16 *dact, const bf16 *gu, size_t n4, float alpha,
                                   float limit) {
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < n4; o += (size_t)gridDim.x * blockDim.x) {
        uint4 g = reinterpret_cast<const uint4 *>(gu)[o];
        uint2 a = reinterpret_cast<const uint2 *>(dact)[o];
        const uint32_t gw[4] = {g.x, g.y, g.z, g.w};
        uint32_t dw[4];
        const __nv_bfloat162 a01 = *reinterpret_cast<const __nv_bfloat162 *>(&a.x);
        const __nv_bfloat162 a23 = *reinterpret_cast<const __nv_bfloat162 *>(&a.y);
        const float da[4] = {bf2f(a01.x), bf2f(a01.y), bf2f(a23.x), bf2f(a23.y)};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            __nv_bfloat162 r = swiglu_grad(*reinterpret_cast<const __nv_bfloat162 *>(&gw[j]), da[j], alpha, limit);
            dw[j] = *reinterpret_cast<const uint32_t *>(&r);
        }
        reinterpret_cast<uint4 *>(dgu)[o] = make_uint4(dw[0], dw[1], dw[2], dw[3]);
    }
}

void ot_cuda_swiglu_fwd(cudaStream_t stream, ot_bf16 *act, const ot_bf16 *gu, int n, int I, float alpha, float limit) {
    OT_REQUIRE(n >= 0 && I > 0, "ot_cuda_swiglu_fwd: bad sizes n %d I %d", n, I);
    OT_REQUIRE((uintptr_t)gu % 4 == 0, "ot_cuda_swiglu_fwd: gu must be 4-byte aligned");
    size_t n_out = (size_t)n * I;
    if (!n_out) return;
    if (I % 4 == 0 && (uintptr_t)gu % 16 == 0 && (uintptr_t)act % 8 == 0)
        swiglu_fwd4_kernel<<<ot_grid_for(n_out / 4, 256), 256, 0, stream>>>(as_bf16(act), as_bf16(gu), n_out / 4,
                                                                            alpha, limit);
    else
        swiglu_fwd_kernel<<<ot_grid_for(n_out, 256), 256, 0, stream>>>(as_bf16(act), as_bf16(gu), n_out, I, alpha,
                                                                        limit);
    OT_LAUNCH_CHECK();
}

void ot_cuda_swiglu_bwd(cudaStream_t stream, ot_bf16 *dgu, const ot_bf16 *dact, const ot_bf16 *gu, int n, int I,
                        float alpha, float limit) {
    OT_REQUIRE(n >= 0 && I > 0, "ot_cuda_swiglu_bwd: bad sizes n %d I %d", n, I);
    OT_REQUIRE((uintptr_t)gu % 4 == 0 && (uintptr_t)dgu % 4 == 0, "ot_cuda_swiglu_bwd: gu, dgu must be 4-byte aligned");
    size_t n_out = (size_t)n * I;
    if (!n_out || !dgu) return;
    if (I % 4 == 0 && (uintptr_t)gu % 16 == 0 && (uintptr_t)dgu % 16 == 0 && (uintptr_t)dact % 8 == 0)
        swiglu_bwd4_kernel<<<ot_grid_for(n_out / 4, 256), 256, 0, stream>>>(as_bf16(dgu), as_bf16(dact), as_bf16(gu),
                                                                            n_out / 4, alpha, limit);
    else
        swiglu_bwd_kernel<<<ot_grid_for(n_out, 256), 256, 0, stream>>>(as_bf16(dgu), as_bf16(dact), as_bf16(gu), n_out,
                                                                       I, alpha, limit);
    OT_LAUNCH_CHECK();
}
