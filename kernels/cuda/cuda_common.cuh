// Device-side helpers shared by the kernels in kernels/cuda/: bf16 conversions, warp/block reductions, the
// bf16 tensor-core instruction, launch checks. Private to kernels/cuda/ (CUDA C++ only).
#ifndef OT_KERNELS_CUDA_COMMON_CUH
#define OT_KERNELS_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "common/ot_common.h"
#include "kernels/cuda/ops_cuda.h"

typedef __nv_bfloat16 bf16;

// Every launch is followed by this: a bad configuration (too many threads, too much shared memory) shows up here
// with the file and line of the launch instead of as a wrong result later.
#define OT_LAUNCH_CHECK() OT_CUDA_CHECK(cudaGetLastError())

// The public API passes bf16 as its bit pattern (uint16_t); device code works on __nv_bfloat16.
static inline bf16 *as_bf16(ot_bf16 *p) { return reinterpret_cast<bf16 *>(p); }
static inline const bf16 *as_bf16(const ot_bf16 *p) { return reinterpret_cast<const bf16 *>(p); }

static inline unsigned ot_cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

// Grid size for a grid-stride loop over n elements: enough blocks to fill the GPU, never more than needed.
static inline unsigned ot_grid_for(size_t n, int threads) {
    size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
    if (blocks > 65535u * 16u) blocks = 65535u * 16u;
    return blocks ? (unsigned)blocks : 1u;
}

// Host-side argument checks: a wrong size is a programming error, reported with the op's name.
#define OT_REQUIRE(cond, ...)                                                                                         \
    do {                                                                                                              \
        if (!(cond)) ot_die(__VA_ARGS__);                                                                             \
    } while (0)

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }

// Two floats as one 32-bit register of two bf16: `lo` in the low half (the lower index), `hi` in the high half.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
// Two bf16 values (already rounded) as one register, `lo` in the low half.
__device__ __forceinline__ uint32_t pack2(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}
// Two consecutive bf16 in shared memory (the first at an even index) as one register.
__device__ __forceinline__ uint32_t lds32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

// D = A·B + D for one 16×8×16 tile, bf16 operands, fp32 accumulators (PTX mma.sync.m16n8k16, sm_80 and newer).
// Fragment layout (g = lane / 4, c = lane % 4):
//   a[0] = A[g][2c, 2c+1]    a[1] = A[g+8][2c, 2c+1]    a[2] = A[g][2c+8, 2c+9]    a[3] = A[g+8][2c+8, 2c+9]
//   b0   = B[2c, 2c+1][g]    b1   = B[2c+8, 2c+9][g]    (B is K×N; both halves of a register share column g)
//   d[0], d[1] = D[g][2c, 2c+1]                         d[2], d[3] = D[g+8][2c, 2c+1]
// The lower index of each pair sits in the low 16 bits of its register.
__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Asynchronous copies and shared-memory matrix loads (sm_80 and newer). The emulator (tests/gpu/emu/transform.py)
// rewrites each asm by its opcode and relies on these parameter names.
// Asynchronous global → shared copies: 16 bytes bypassing L1 (streamed activations, MXFP4 nibbles where 16-byte
// aligned), 8 bytes through L1 (nibbles only 8-byte aligned), 4 bytes through L1 (the word around a scale byte).
__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src)
                 : "memory");
}
__device__ __forceinline__ void cp_async8(void *dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src)
                 : "memory");
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most N of this thread's committed copy groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8 × 8 bf16 matrices: lane 8i + j gives the address of row j of matrix i (16 bytes, 16-byte aligned);
// r[i] of lane l = row l/4, elements 2(l%4), 2(l%4)+1 of matrix i (.trans: column l/4, rows 2(l%4), 2(l%4)+1).
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((uint32_t)__cvta_generic_to_shared(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((uint32_t)__cvta_generic_to_shared(p)));
}

// V consecutive bf16 from / to p as floats: one 16-byte access for V = 8 (p 16-byte aligned), else one per element.
template <int V> __device__ __forceinline__ void load_bf16s(float (&v)[V], const bf16 *p) {
    if constexpr (V == 8) {
        const uint4 u = *reinterpret_cast<const uint4 *>(p);
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            v[2 * j] = __uint_as_float(w[j] << 16);
            v[2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
        }
    } else {
#pragma unroll
        for (int j = 0; j < V; j++) v[j] = bf2f(p[j]);
    }
}
template <int V> __device__ __forceinline__ void store_bf16s(bf16 *p, const float (&v)[V]) {
    if constexpr (V == 8) {
        *reinterpret_cast<uint4 *>(p) = make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]),
                                                   pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
    } else {
#pragma unroll
        for (int j = 0; j < V; j++) p[j] = f2bf(v[j]);
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; the call begins with a barrier so it may be reused back to back.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float s = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(s);
}
__device__ __forceinline__ double block_sum_d(double v, double *scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double s = lane < nwarps ? scratch[lane] : 0.0;
    return warp_sum_d(s);
}
__device__ __forceinline__ float block_max(float v, float *scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float s = lane < nwarps ? scratch[lane] : -INFINITY;
    return warp_max(s);
}

// Temporaries from the stream-ordered pool (ot_cuda_init keeps freed blocks cached, so this is cheap), within the
// memory limit.
template <typename T> static inline T *ot_cuda_tmp(size_t n, cudaStream_t stream) {
    void *p = NULL;
    OT_CUDA_CHECK(ot_cuda_malloc_async(&p, (n ? n : 1) * sizeof(T), stream));
    return static_cast<T *>(p);
}
static inline void ot_cuda_tmp_free(void *p, cudaStream_t stream) { OT_CUDA_CHECK(cudaFreeAsync(p, stream)); }

#endif
