// Shared pieces of the flash-style attention kernels (attention_fwd.cu, attention_bwd.cu). Private.
//
// Tiling: 64 queries × 64 keys per step, head dim 64, 4 warps; each warp owns 16 rows of the tile and computes
// with the bf16 tensor-core instruction (mma_bf16_16816). Shared-memory rows are padded by 8 bf16 (16 bytes), so
// the fragment loads of a warp (8 rows × 4 consecutive words) touch 32 different banks.
#ifndef OT_KERNELS_CUDA_ATTENTION_CUH
#define OT_KERNELS_CUDA_ATTENTION_CUH

#include <limits.h>

#include "kernels/cuda/cuda_common.cuh"

#define ATT_D 64       // head dim (gpt-oss); the kernels are written for exactly this
#define ATT_BQ 64      // queries per tile
#define ATT_BK 64      // keys per tile
#define ATT_PAD 8      // bf16 padding per shared-memory row
#define ATT_THREADS 128

#define ATT_LOG2E 1.4426950408889634f
#define ATT_LN2 0.6931471805599453f

// First key that query i sees (the start of its sequence, moved up to the window on sliding layers). A seg_start
// outside 0..i is bad data: flag it and let the query see only itself, so nothing reads out of range.
__device__ __forceinline__ int att_first_visible(const int32_t *seg_start, int i, int window, unsigned *flags) {
    int lo = seg_start[i];
    if (lo < 0 || lo > i) {
        atomicOr(flags, (unsigned)OT_CUDA_BAD_SEGMENT);
        lo = i;
    }
    if (window > 0 && i - window + 1 > lo) lo = i - window + 1;
    return lo;
}

// Copy `rows` rows of a [T, heads, ATT_D] bf16 tensor (head `h`, rows r0..) into a padded shared tile; rows at or
// past T become zeros (masked later; zeros keep 0·garbage from turning into NaN). 16-byte copies.
__device__ __forceinline__ void att_load_tile(bf16 (*dst)[ATT_D + ATT_PAD], const bf16 *src, int r0, int rows, int T,
                                              int heads, int h) {
    for (int c = threadIdx.x; c < rows * (ATT_D / 8); c += blockDim.x) {
        int row = c / (ATT_D / 8), col = (c % (ATT_D / 8)) * 8;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (r0 + row < T) val = *reinterpret_cast<const uint4 *>(src + ((size_t)(r0 + row) * heads + h) * ATT_D + col);
        *reinterpret_cast<uint4 *>(&dst[row][col]) = val;
    }
}

static inline void att_check_args(const char *op, const void *q, const void *k, const void *v, int T, int nh, int nkv,
                                  int D) {
    OT_REQUIRE(T >= 0 && nh > 0 && nkv > 0 && nh % nkv == 0,
               "%s: query heads %d must be a positive multiple of kv heads %d (T %d)", op, nh, nkv, T);
    OT_REQUIRE(D == ATT_D, "%s: head dim %d is not supported (the CUDA attention kernels are built for %d)", op, D,
               ATT_D);
    OT_REQUIRE((uintptr_t)q % 16 == 0 && (uintptr_t)k % 16 == 0 && (uintptr_t)v % 16 == 0,
               "%s: q, k and v must be 16-byte aligned", op);
    OT_REQUIRE(ot_cdiv(T, ATT_BQ) <= 65535u * 32u, "%s: T %d too large", op, T);
}

#endif
