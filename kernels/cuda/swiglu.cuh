// The gpt-oss clamped SwiGLU of one (gate, up) pair and its gradient (spec §2.8), for swiglu.cu and for the
// epilogues of the fused MXFP4 expert products (moe_mxfp4_gemm.cu), which must give the same bits.
#pragma once
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
