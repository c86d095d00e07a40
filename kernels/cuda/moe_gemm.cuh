// Private to kernels/cuda/: the MXFP4 decode shared by the fused grouped-product kernels (moe_matmul.cu) and the
// per-expert dequantization of the library path (moe_gemm.cu), so both produce bit-identical bf16 weights (the
// training-size kernels of moe_mxfp4_gemm.cu decode by table to the same bits), and the entry points of the
// library path and of those kernels.
#ifndef OT_KERNELS_CUDA_MOE_GEMM_CUH
#define OT_KERNELS_CUDA_MOE_GEMM_CUH

#include "kernels/cuda/cuda_common.cuh"

// The FP4 E2M1 code table (spec §3.4), for a block's shared-memory copy.
__device__ __forceinline__ float fp4_value(int code) {
    const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    return (code & 8) ? -mag[code & 7] : mag[code & 7];
}

// 16 elements of an MXFP4 group (8 bytes: element 2j in the low nibble of byte j, 2j+1 in the high nibble) times
// 2^(s − 127), as 8 registers of bf16 pairs (lower element in the low half). The scale is applied as ldexp does,
// exactly: 2^(s−127) is a float for s <= 254 (s = 0 is the subnormal 2^−127), and s = 255 multiplies by 2^127
// and then by 2, so 0 stays 0 (no 0·inf) and only values that ldexp overflows become inf.
__device__ __forceinline__ void mx_dequant16(uint32_t out[8], uint2 q, unsigned s, const float *lut) {
    const float f1 = __uint_as_float(s == 0 ? 0x00400000u : (min(s, 254u) << 23));
    const float f2 = s == 255 ? 2.0f : 1.0f;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        unsigned byte = ((j < 4 ? q.x : q.y) >> ((j & 3) * 8)) & 0xffu;
        float lo = lut[byte & 15u] * f1 * f2;
        float hi = lut[byte >> 4] * f1 * f2;
        out[j] = pack_bf16x2(lo, hi);
    }
}

// The grouped products through cuBLAS, one expert at a time (moe_gemm.cu): same contract as
// ot_cuda_moe_matmul_fwd / ot_cuda_moe_matmul_bwd, whose argument checks have already run.
void ot_cuda_moe_gemm_fwd(cudaStream_t stream, bf16 *y, const bf16 *x, int gather, const ot_cuda_expert_weight *W,
                          const ot_cuda_moe_plan *p);
void ot_cuda_moe_gemm_bwd(cudaStream_t stream, bf16 *dx, const bf16 *dy, const ot_cuda_expert_weight *W,
                          const ot_cuda_moe_plan *p, int accumulate);

// The plan's offsets [E + 1] as ot_cuda_moe_plan_build left them on the host, checked (`op` names the caller).
const int32_t *ot_cuda_moe_plan_host_offsets(const ot_cuda_moe_plan *p, const char *op);

// An expert LoRA's expansion (ot_cuda_moe_lora_term) as the products see it: out[p, c] += Σ_j (scale · u[p, j]) ·
// m[e·m_batch + c·m_so + j·m_sj] for the output columns c of expert e's rows p. r = 0: no expansion.
typedef struct {
    const float *u, *m;
    size_t m_so, m_sj, m_batch;
    int r;
    float scale;
} moe_lora_expansion;

// The term of a forward (bwd 0: m = B [E, rows, r]) or backward (m = A [E, r, cols]) product of expert matrices
// [rows, cols]; NULL gives r = 0.
static inline moe_lora_expansion moe_lora_expansion_of(const ot_cuda_moe_lora_term *t, int bwd, int rows, int cols,
                                                       const char *op) {
    moe_lora_expansion x = {NULL, NULL, 0, 0, 0, 0, 0.0f};
    if (!t) return x;
    OT_REQUIRE(t->u && t->adapter && t->r > 0, "%s: LoRA term without u, adapter or rank (r %d)", op, t->r);
    x.u = t->u, x.m = t->adapter, x.r = t->r, x.scale = t->scale;
    if (bwd) x.m_so = 1, x.m_sj = (size_t)cols, x.m_batch = (size_t)t->r * cols;
    else x.m_so = (size_t)t->r, x.m_sj = 1, x.m_batch = (size_t)rows * t->r;
    return x;
}

// The fused MXFP4 products for training-size calls (moe_mxfp4_gemm.cu): same contract again, the LoRA expansion
// added in their epilogue. They need MXFP4 weights whose rows and columns are multiples of 32, at most 256
// experts, a 16-byte aligned input (x or dy) and a 4-byte aligned output; ot_cuda_moe_mxfp4_fits says whether a
// call qualifies.
int ot_cuda_moe_mxfp4_fits(const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p, const void *in,
                           const void *out);
void ot_cuda_moe_mxfp4_fwd(cudaStream_t stream, bf16 *y, const bf16 *x, int gather, const ot_cuda_expert_weight *W,
                           const ot_cuda_moe_plan *p, const moe_lora_expansion *lora);
void ot_cuda_moe_mxfp4_bwd(cudaStream_t stream, bf16 *dx, const bf16 *dy, const ot_cuda_expert_weight *W,
                           const ot_cuda_moe_plan *p, int accumulate, const moe_lora_expansion *lora);

#endif
