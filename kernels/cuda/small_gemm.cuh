// A general fp32 (SIMT) matrix product for the expert-LoRA paths, where one side is the small rank r, the operands
// mix bf16 activations with fp32 adapter weights and the rows are grouped by expert — shapes and types the bf16
// library products do not cover.
//
//   C[m, n] (+)= alpha · Σ_k A(m, k) · B(k, n)
//
// Each operand is a row-major array read either as is or transposed, optionally through a row map (the MoE paths
// read token rows through the permutation) and offset per expert. Two ways to cut the work:
// - SG_GROUP_M: the rows of A and C are the permuted (token, slot) rows; each 64-row tile belongs to one expert
//               (the MoE plan's tile table), and B is that expert's matrix;
// - SG_GROUP_K: one product per expert e (grid.z): the sum runs over e's permuted rows offsets[e]..offsets[e+1]-1,
//               and C is expert e's matrix (the adapter gradients).
// Private to kernels/cuda/.
#ifndef OT_KERNELS_CUDA_SMALL_GEMM_CUH
#define OT_KERNELS_CUDA_SMALL_GEMM_CUH

#include "kernels/cuda/cuda_common.cuh"

#define SG_BM 64
#define SG_BN 64
#define SG_BK 16
#define SG_THREADS 256

enum { SG_GROUP_M = 1, SG_GROUP_K = 2 };

typedef struct {
    const void *ptr;
    long ld;               // row stride of the stored row-major array (elements)
    int trans;             // 0: op(i, j) = stored[i][j];  1: op(i, j) = stored[j][i]
    const int32_t *rowmap; // stored row r is found at rowmap[r] (NULL: at r)
    long batch;            // elements between consecutive experts' matrices (0: shared by all)
} SgOperand;

typedef struct {
    SgOperand a, b;        // op(A) is M × K, op(B) is K × N
    void *c;               // stored [M][N] row-major with row stride ldc, offset c_batch per expert
    long ldc, c_batch;
    int M, N, K;           // SG_GROUP_M: M unused (the tiles decide); SG_GROUP_K: K unused (the offsets decide)
    float alpha;
    int accumulate;        // 1: C += alpha·AB; 0: C = alpha·AB
    int mode;
    const int32_t *offsets, *tile_expert, *tile_row0; // the MoE plan, for the grouped modes
} SgArgs;

// The fields every product sets; the caller fills in the plan fields after.
static inline SgArgs sg_args(int mode, SgOperand a, SgOperand b, void *c, long ldc, int M, int N, int K, float alpha,
                             int accumulate) {
    SgArgs g;
    memset(&g, 0, sizeof(g));
    g.a = a;
    g.b = b;
    g.c = c;
    g.ldc = ldc;
    g.M = M;
    g.N = N;
    g.K = K;
    g.alpha = alpha;
    g.accumulate = accumulate;
    g.mode = mode;
    return g;
}

template <typename T> __device__ __forceinline__ float sg_load(const T *p);
template <> __device__ __forceinline__ float sg_load<float>(const float *p) { return *p; }
template <> __device__ __forceinline__ float sg_load<bf16>(const bf16 *p) { return bf2f(*p); }

template <typename T> __device__ __forceinline__ void sg_store(T *p, float v, int accumulate);
template <> __device__ __forceinline__ void sg_store<float>(float *p, float v, int accumulate) {
    *p = accumulate ? *p + v : v;
}
template <> __device__ __forceinline__ void sg_store<bf16>(bf16 *p, float v, int accumulate) {
    *p = f2bf(accumulate ? bf2f(*p) + v : v);
}

// Element (i, j) of an operand: stored[i][j] or, transposed, stored[j][i]; `e` picks the expert's matrix.
template <typename T> __device__ __forceinline__ float sg_elem(const SgOperand &o, int e, long i, long j) {
    long row = o.trans ? j : i, col = o.trans ? i : j;
    if (o.rowmap) row = o.rowmap[row];
    return sg_load<T>(static_cast<const T *>(o.ptr) + e * o.batch + row * o.ld + col);
}

// 64 × 64 tile of C per block, 256 threads each owning a 4 × 4 sub-tile spread with stride 16 (so a warp reads
// shared memory without bank conflicts), k in steps of 16 staged through shared memory as fp32.
template <typename TA, typename TB, typename TC>
__global__ void __launch_bounds__(SG_THREADS) small_gemm_kernel(SgArgs g) {
    __shared__ float As[SG_BK][SG_BM + 4];
    __shared__ float Bs[SG_BK][SG_BN + 4];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int n0 = blockIdx.x * SG_BN;
    int e = 0, m0, m_end, k_begin, k_end;
    if (g.mode == SG_GROUP_M) {
        e = g.tile_expert[blockIdx.y];
        if (e < 0) return; // a spare tile: the whole block leaves before any barrier
        m0 = g.tile_row0[blockIdx.y];
        m_end = min(m0 + SG_BM, g.offsets[e + 1]);
        k_begin = 0;
        k_end = g.K;
    } else { // SG_GROUP_K
        e = blockIdx.z;
        m0 = blockIdx.y * SG_BM;
        m_end = min(m0 + SG_BM, g.M);
        k_begin = g.offsets[e];
        k_end = g.offsets[e + 1];
    }
    // Only the grouped-M mode has a per-expert B and only grouped-K a per-expert C; A's rows are always global
    // (token or permuted rows), so A is never offset per expert.
    const int eb = g.mode == SG_GROUP_M ? e : 0;
    const int ec = g.mode == SG_GROUP_K ? e : 0;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += SG_BK) {
        // Stage the tiles; the index order follows the contiguous direction of each stored array (coalesced).
#pragma unroll
        for (int q = 0; q < (SG_BM * SG_BK) / SG_THREADS; q++) {
            int l = tid + q * SG_THREADS;
            int mm = g.a.trans ? (l % SG_BM) : (l / SG_BK);
            int kk = g.a.trans ? (l / SG_BM) : (l % SG_BK);
            int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < m_end && k < k_end) ? sg_elem<TA>(g.a, 0, m, k) : 0.0f;
        }
#pragma unroll
        for (int q = 0; q < (SG_BN * SG_BK) / SG_THREADS; q++) {
            int l = tid + q * SG_THREADS;
            int nn = g.b.trans ? (l / SG_BK) : (l % SG_BN);
            int kk = g.b.trans ? (l % SG_BK) : (l / SG_BN);
            int n = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = (n < g.N && k < k_end) ? sg_elem<TB>(g.b, eb, k, n) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < SG_BK; kk++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }

    TC *C = static_cast<TC *>(g.c) + ec * g.c_batch;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty + 16 * i;
        if (m >= m_end) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx + 16 * j;
            if (n < g.N) sg_store<TC>(C + (long)m * g.ldc + n, g.alpha * acc[i][j], g.accumulate);
        }
    }
}

// Host launcher. For SG_GROUP_M pass n_tiles (the plan's), for SG_GROUP_K pass n_experts.
template <typename TA, typename TB, typename TC>
static void small_gemm(cudaStream_t stream, SgArgs g, int n_tiles, int n_experts, const char *what) {
    OT_REQUIRE(g.N >= 0 && g.K >= 0 && g.M >= 0, "%s: bad sizes M %d N %d K %d", what, g.M, g.N, g.K);
    if (g.N == 0) return;
    dim3 grid(ot_cdiv(g.N, SG_BN), 1, 1);
    if (g.mode == SG_GROUP_M) {
        grid.y = (unsigned)n_tiles;
    } else {
        OT_REQUIRE(g.mode == SG_GROUP_K, "%s: unknown product mode %d", what, g.mode);
        grid.y = ot_cdiv(g.M, SG_BM);
        grid.z = (unsigned)n_experts;
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
    OT_REQUIRE(grid.y <= 65535 && grid.z <= 65535, "%s: too many tiles (%u x %u)", what, grid.y, grid.z);
    small_gemm_kernel<TA, TB, TC><<<grid, SG_THREADS, 0, stream>>>(g);
    OT_LAUNCH_CHECK();
}

#endif
