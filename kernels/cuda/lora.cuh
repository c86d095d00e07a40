// Private to kernels/cuda/: the pieces the dense LoRA (lora.cu) and the expert LoRA (moe_lora.cu) share — the
// fp32 → bf16 hi + lo split that lets the tensor cores take an fp32 operand, and the expansion from rank r that
// adds scale · u · Wᵀ onto a bf16 activation.
#ifndef OT_KERNELS_CUDA_LORA_CUH
#define OT_KERNELS_CUDA_LORA_CUH

#include "kernels/cuda/cuda_common.cuh"

// v = hi + lo: hi = bf16(v), lo = bf16(v − hi) (the difference is exact: v and hi share the exponent range).
// hi + lo carries 16 of fp32's 24 significant bits.
__device__ __forceinline__ void store_hi_lo(bf16 *hi, bf16 *lo, float v) {
    const bf16 h = f2bf(v);
    *hi = h;
    *lo = f2bf(v - bf2f(h));
}

// hl[0 .. n) = hi, hl[n .. 2n) = lo of src[n] (+ src2[n] where given: the two partial sums a pair of products
// leaves).
void lora_split_bf16_to(cudaStream_t stream, bf16 *hl, const float *src, const float *src2, size_t n);
// The same into a temporary of 2n elements from the stream's pool (ot_cuda_tmp_free it on the same stream).
bf16 *lora_split_bf16(cudaStream_t stream, const float *src, const float *src2, size_t n);

// Rows grouped by expert (the MoE plan): the expansion's rows come in the plan's tiles of
// OT_CUDA_MOE_TILE_ROWS permuted rows of one expert each, and each expert has its own W, w_batch elements apart.
typedef struct {
    const int32_t *tile_expert, *tile_row0, *offsets;
    int n_tiles;
    size_t w_batch;
} lora_row_groups;

// The MoE plan's row tiles, each expert's W w_batch elements apart.
static inline lora_row_groups lora_plan_groups(const ot_cuda_moe_plan *p, size_t w_batch) {
    lora_row_groups g = {p->tile_expert, p->tile_row0, p->offsets, p->n_tiles, w_batch};
    return g;
}

// y[t, o] = bf16(y[t, o] + scale · Σ_j u[t, j] · W(o, j)), j < r, u = u0 + u1 [T, r] fp32 with rows u_ld apart
// (u1 may be NULL), W(o, j) = W[o·w_so + j·w_sj] fp32 (so B [out, r] and A [r, in] both serve without a
// transpose), of the row's expert where `groups` is given (else one W for all rows). Also stores u itself in u_out
// and its bf16 hi / lo parts in u_hl / u_hl + T·u_ld (each when given).
void lora_expand(cudaStream_t stream, bf16 *y, const float *u0, const float *u1, int u_ld, float *u_out, bf16 *u_hl,
                 const float *W, size_t w_so, size_t w_sj, int T, int n, int r, float scale,
                 const lora_row_groups *groups);

#endif
