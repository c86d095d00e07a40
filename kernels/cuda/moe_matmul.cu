// The grouped expert products of the MoE layer, with the expert weights kept as stored (MXFP4 stays 4-bit in GPU
// memory; dense bf16 experts are supported too). Rows are the permuted (token, slot) pairs of the MoE plan, cut in
// 64-row tiles that never straddle two experts (the plan's tile table), so one block multiplies one expert's rows.
//
//   forward:   y[p, n]  = Σ_k x_p[k] · W_e[n, k] + b_e[n]       (x · W_eᵀ: K = cols, N = rows of W)
//   backward:  dx[p, k] (+)= Σ_n dy[p, n] · W_e[n, k]          (dy · W_e: the input gradient; W is frozen)
//
// Each block computes a 64 × 128 tile with 8 warps (2 × 4, each 32 × 32) on the bf16 tensor cores
// (mma_bf16_16816), stepping k by 32. An MXFP4 group is 32 consecutive elements of a weight row (16 bytes of
// nibbles + one E8M0 scale), so a 32-wide k step of the forward reads exactly one group per weight row, and the
// backward's 128 output columns are 4 groups. Weight tiles are dequantized into shared memory as bf16 (exact: FP4
// values have 2 significant bits and the scale is a power of two). The next tile's global loads are issued into
// registers before the current tile's products, so memory latency overlaps the math.
//
// These kernels serve calls with few rows per expert (decoding a batch, small evaluations). Larger ones (from
// MM_LIBRARY_MIN_ROWS_PER_EXPERT rows per expert on average) take, with the same contract:
//   MXFP4 weights:  the fused kernels of moe_mxfp4_gemm.cu (128 × 128 tiles, cp.async pipeline, MXFP4 read
//                   directly), when the shapes fit them (rows and columns multiples of 32, ≤ 256 experts);
//   otherwise:      the cuBLAS path of moe_gemm.cu (each expert's matrix dequantized to a bf16 scratch matrix).
// The environment variable OT_MOE_PATH, read once, overrides the choice for MXFP4 weights (to compare the paths
// on a GPU; tests use ot_cuda_moe_set_path):
//   auto     (default) as above;
//   library  the cuBLAS path for the larger calls, as before the fused kernels existed;
//   fused    the kernels of moe_mxfp4_gemm.cu for every call they fit, however few rows per expert.
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/lora.cuh"     // the LoRA expansion of the paths that do not fuse it
#include "kernels/cuda/moe_gemm.cuh" // MXFP4 decode, the cuBLAS path, the fused MXFP4 kernels

#include "kernels/ops.h" // OT_EXPERT_MXFP4, OT_EXPERT_DENSE

#define MM_BM OT_CUDA_MOE_TILE_ROWS // 64
#define MM_BN 128
#define MM_BK 32
#define MM_PAD 8
#define MM_THREADS 256
// From this many (token, slot) pairs per expert on average, the products go through the training-size paths
// (moe_mxfp4_gemm.cu for MXFP4, cuBLAS in moe_gemm.cu otherwise), whose 128-row tiles or whole-expert
// dequantization pay off once each expert has many rows (training batches: ~256 per expert at 2048 tokens of the
// 20b). With a few rows per expert (decoding 32 sentences gives ~4) the 64-row kernels here waste the least.
#define MM_LIBRARY_MIN_ROWS_PER_EXPERT 32

static int use_library(const ot_cuda_moe_plan *p) {
    return p->n_pairs >= MM_LIBRARY_MIN_ROWS_PER_EXPERT * p->E;
}

static int g_moe_path = -1; // OT_CUDA_MOE_PATH_*, -1 until OT_MOE_PATH is read

void ot_cuda_moe_set_path(int path) {
    OT_REQUIRE(path >= OT_CUDA_MOE_PATH_AUTO && path <= OT_CUDA_MOE_PATH_FUSED, "ot_cuda_moe_set_path: bad path %d",
               path);
    g_moe_path = path;
}

static int moe_path(void) {
    if (g_moe_path < 0) {
        const char *v = getenv("OT_MOE_PATH");
        int path = OT_CUDA_MOE_PATH_AUTO;
        if (v && !strcmp(v, "library")) path = OT_CUDA_MOE_PATH_LIBRARY;
        else if (v && !strcmp(v, "fused")) path = OT_CUDA_MOE_PATH_FUSED;
        else if (v && *v && strcmp(v, "auto")) ot_die("OT_MOE_PATH=%s: expected library, fused or auto", v);
        g_moe_path = path;
    }
    return g_moe_path;
}

// Whether an MXFP4 call goes to the fused training kernels (moe_mxfp4_gemm.cu).
static int use_mxfp4_kernels(const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p, const void *in,
                             const void *out) {
    if (W->kind != OT_EXPERT_MXFP4 || !ot_cuda_moe_mxfp4_fits(W, p, in, out)) return 0;
    const int path = moe_path();
    return path == OT_CUDA_MOE_PATH_FUSED || (path == OT_CUDA_MOE_PATH_AUTO && use_library(p));
}

typedef struct {
    const uint8_t *blocks, *scales; // MXFP4
    const bf16 *dense;              // DENSE
    const bf16 *bias;               // [E, rows] or NULL
    int rows, cols;                 // N (out) and K (in) of one expert
} MoeW;

// 8 bf16 from global memory as a 16-byte vector when it is in bounds and aligned, element by element otherwise
// (zeros past `limit`).
__device__ __forceinline__ uint4 load8_bf16(const bf16 *row, int k, int limit) {
    const bf16 *p = row + k;
    if (k + 8 <= limit && ((uintptr_t)p & 15u) == 0) return *reinterpret_cast<const uint4 *>(p);
    uint32_t w[4];
#pragma unroll
    for (int u = 0; u < 4; u++) {
        bf16 lo = k + 2 * u < limit ? p[2 * u] : __float2bfloat16_rn(0.0f);
        bf16 hi = k + 2 * u + 1 < limit ? p[2 * u + 1] : __float2bfloat16_rn(0.0f);
        w[u] = pack2(lo, hi);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

// The 2 × 4 tiles of 16 × 8 of one warp for one 32-wide k step (two k16 halves) from the staged tiles:
// As[m][k] (rows × k) and Bs[n][k] (output columns × k).
__device__ __forceinline__ void mm_warp_step(float acc[2][4][4], const bf16 (*As)[MM_BK + MM_PAD],
                                             const bf16 (*Bs)[MM_BK + MM_PAD], int wm, int wn, int gi, int ti) {
#pragma unroll
    for (int ks = 0; ks < MM_BK / 16; ks++) {
        uint32_t a[2][4], b[4][2];
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            int r = wm * 32 + mt * 16 + gi;
            a[mt][0] = lds32(&As[r][ks * 16 + ti * 2]);
            a[mt][1] = lds32(&As[r + 8][ks * 16 + ti * 2]);
            a[mt][2] = lds32(&As[r][ks * 16 + 8 + ti * 2]);
            a[mt][3] = lds32(&As[r + 8][ks * 16 + 8 + ti * 2]);
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            int n = wn * 32 + nt * 8 + gi;
            b[nt][0] = lds32(&Bs[n][ks * 16 + ti * 2]);
            b[nt][1] = lds32(&Bs[n][ks * 16 + 8 + ti * 2]);
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < 4; nt++) mma_bf16_16816(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
    }
}

// Write a warp's 32 × 32 accumulator tile (mma.sync fragment layout) to out[row][col] (row stride ld) for rows
// below m_end and columns below ncols, adding bias[col] when given and the old value when accumulating.
__device__ __forceinline__ void mm_store_tile(const float (&acc)[2][4][4], bf16 *out, int ld, int m0, int m_end,
                                              int col0, int ncols, const bf16 *bias, int accumulate, int wm, int wn,
                                              int gi, int ti) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++) {
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int row = m0 + wm * 32 + mt * 16 + gi + half * 8;
                if (row >= m_end) continue;
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    int col = col0 + wn * 32 + nt * 8 + ti * 2 + c;
                    if (col >= ncols) continue;
                    float v = acc[mt][nt][half * 2 + c];
                    if (bias) v += bf2f(bias[col]);
                    bf16 *d = out + (size_t)row * ld + col;
                    *d = f2bf(accumulate ? bf2f(*d) + v : v);
                }
            }
        }
    }
}

// ---- forward: y = x · W_eᵀ + b_e ------------------------------------------------------------------------------
template <bool MX>
__global__ void __launch_bounds__(MM_THREADS)
    moe_matmul_fwd_kernel(bf16 *y, const bf16 *x, const int32_t *row_token, MoeW w, const int32_t *offsets,
                          const int32_t *tile_expert, const int32_t *tile_row0) {
    __shared__ __align__(16) bf16 As[MM_BM][MM_BK + MM_PAD];
    __shared__ __align__(16) bf16 Bs[MM_BN][MM_BK + MM_PAD]; // Bs[n][k] = W_e[n0 + n][k0 + k]
    __shared__ float lut[16];

    const int e = tile_expert[blockIdx.y];
    if (e < 0) return; // a spare tile: the whole block leaves before any barrier
    const int m0 = tile_row0[blockIdx.y], m_end = min(m0 + MM_BM, offsets[e + 1]);
    const int n0 = blockIdx.x * MM_BN;
    const int N = w.rows, K = w.cols, G = K / 32;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gi = lane >> 2, ti = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;
    if (tid < 16) lut[tid] = fp4_value(tid);

    // Loader roles. A: row ar, 8 elements from ac. B: weight row bn, 16 elements (half bh of the 32-group).
    const int ar = tid >> 2, ac = (tid & 3) * 8;
    const bf16 *a_src = NULL;
    if (m0 + ar < m_end) a_src = x + (size_t)(row_token ? row_token[m0 + ar] : m0 + ar) * K;
    const int bn = tid >> 1, bh = tid & 1;
    const bool b_ok = n0 + bn < N;
    const size_t wrow = (size_t)e * N + (n0 + bn); // row of the [E·N, K] weight matrix

    const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);
    uint4 a_reg = zero4, bd0 = zero4, bd1 = zero4; // bq/bs serve MXFP4, bd0/bd1 dense weights
    uint2 bq = make_uint2(0u, 0u);
    unsigned bs = 127u;
#define MM_FWD_LOAD(kt)                                                                                               \
    do {                                                                                                              \
        a_reg = a_src ? *reinterpret_cast<const uint4 *>(a_src + (kt) * MM_BK + ac) : zero4;                          \
        if (MX) {                                                                                                     \
            bq = b_ok ? *reinterpret_cast<const uint2 *>(w.blocks + (wrow * G + (kt)) * 16 + bh * 8)                  \
                      : make_uint2(0u, 0u);                                                                           \
            bs = b_ok ? (unsigned)w.scales[wrow * G + (kt)] : 127u;                                                   \
        } else {                                                                                                      \
            const uint4 *src = reinterpret_cast<const uint4 *>(w.dense + wrow * K + (kt) * MM_BK + bh * 16);          \
            bd0 = b_ok ? src[0] : zero4;                                                                              \
            bd1 = b_ok ? src[1] : zero4;                                                                              \
        }                                                                                                             \
    } while (0)

    float acc[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

    MM_FWD_LOAD(0);
    __syncthreads(); // lut is filled
    for (int kt = 0; kt < G; kt++) {
        *reinterpret_cast<uint4 *>(&As[ar][ac]) = a_reg;
        if (MX) {
            uint32_t v[8];
            mx_dequant16(v, bq, bs, lut);
            *reinterpret_cast<uint4 *>(&Bs[bn][bh * 16]) = make_uint4(v[0], v[1], v[2], v[3]);
            *reinterpret_cast<uint4 *>(&Bs[bn][bh * 16 + 8]) = make_uint4(v[4], v[5], v[6], v[7]);
        } else {
            *reinterpret_cast<uint4 *>(&Bs[bn][bh * 16]) = bd0;
            *reinterpret_cast<uint4 *>(&Bs[bn][bh * 16 + 8]) = bd1;
        }
        __syncthreads();
        if (kt + 1 < G) MM_FWD_LOAD(kt + 1);
        mm_warp_step(acc, As, Bs, wm, wn, gi, ti);
        __syncthreads(); // the tiles are rewritten by the next step
    }
#undef MM_FWD_LOAD

    mm_store_tile(acc, y, N, m0, m_end, n0, N, w.bias ? w.bias + (size_t)e * N : NULL, 0, wm, wn, gi, ti);
}

// ---- backward (input gradient): dx = dy · W_e -------------------------------------------------------------------
template <bool MX>
__global__ void __launch_bounds__(MM_THREADS)
    moe_matmul_bwd_kernel(bf16 *dx, const bf16 *dy, MoeW w, const int32_t *offsets, const int32_t *tile_expert,
                          const int32_t *tile_row0, int accumulate) {
    __shared__ __align__(16) bf16 As[MM_BM][MM_BK + MM_PAD];
    __shared__ __align__(16) bf16 Bs[MM_BN][MM_BK + MM_PAD]; // Bs[c][r] = W_e[r0 + r][c0 + c] (transposed)
    __shared__ float lut[16];

    const int e = tile_expert[blockIdx.y];
    if (e < 0) return;
    const int m0 = tile_row0[blockIdx.y], m_end = min(m0 + MM_BM, offsets[e + 1]);
    const int N = w.rows, K = w.cols, G = K / 32;
    const int c0 = blockIdx.x * MM_BN; // first output column (input feature of W)
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gi = lane >> 2, ti = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;
    if (tid < 16) lut[tid] = fp4_value(tid);

    // Loader roles. A (dy): row ar, 8 elements from ac of the 32 weight rows of the step. B: weight row br of the
    // step, group bg (of the 4 in this tile's 128 columns), half bh.
    const int ar = tid >> 2, ac = (tid & 3) * 8;
    const bf16 *a_src = m0 + ar < m_end ? dy + (size_t)(m0 + ar) * N : NULL;
    const int br = tid >> 3, bg = (tid >> 1) & 3, bh = tid & 1;
    const int gidx = c0 / 32 + bg; // MXFP4 group index along the row
    const bool g_ok = gidx < G;
    const int nk = (N + MM_BK - 1) / MM_BK;

    const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);
    uint4 a_reg = zero4, bd0 = zero4, bd1 = zero4; // bq/bs serve MXFP4, bd0/bd1 dense weights
    uint2 bq = make_uint2(0u, 0u);
    unsigned bs = 127u;
    bool b_ok = false;
#define MM_BWD_LOAD(kt)                                                                                               \
    do {                                                                                                              \
        a_reg = a_src ? load8_bf16(a_src, (kt) * MM_BK + ac, N) : zero4;                                              \
        int r = (kt) * MM_BK + br;                                                                                    \
        b_ok = g_ok && r < N;                                                                                         \
        size_t wrow = (size_t)e * N + r;                                                                              \
        if (MX) {                                                                                                     \
            bq = b_ok ? *reinterpret_cast<const uint2 *>(w.blocks + (wrow * G + gidx) * 16 + bh * 8)                  \
                      : make_uint2(0u, 0u);                                                                           \
            bs = b_ok ? (unsigned)w.scales[wrow * G + gidx] : 127u;                                                   \
        } else {                                                                                                      \
            const uint4 *src = reinterpret_cast<const uint4 *>(w.dense + wrow * K + gidx * 32 + bh * 16);             \
            bd0 = b_ok ? src[0] : zero4;                                                                              \
            bd1 = b_ok ? src[1] : zero4;                                                                              \
        }                                                                                                             \
    } while (0)

    float acc[2][4][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

    MM_BWD_LOAD(0);
    __syncthreads(); // lut is filled
    for (int kt = 0; kt < nk; kt++) {
        *reinterpret_cast<uint4 *>(&As[ar][ac]) = a_reg;
        uint32_t v[8];
        if (MX) {
            mx_dequant16(v, bq, bs, lut);
        } else {
            v[0] = bd0.x, v[1] = bd0.y, v[2] = bd0.z, v[3] = bd0.w;
            v[4] = bd1.x, v[5] = bd1.y, v[6] = bd1.z, v[7] = bd1.w;
        }
        const int cb = bg * 32 + bh * 16; // first of this thread's 16 columns within the tile
#pragma unroll
        for (int j = 0; j < 8; j++) {
            Bs[cb + 2 * j][br] = __ushort_as_bfloat16((unsigned short)(v[j] & 0xffffu));
            Bs[cb + 2 * j + 1][br] = __ushort_as_bfloat16((unsigned short)(v[j] >> 16));
        }
        __syncthreads();
        if (kt + 1 < nk) MM_BWD_LOAD(kt + 1);
        mm_warp_step(acc, As, Bs, wm, wn, gi, ti);
        __syncthreads();
    }
#undef MM_BWD_LOAD

    mm_store_tile(acc, dx, K, m0, m_end, c0, K, NULL, accumulate, wm, wn, gi, ti);
}

static MoeW moe_weight_args(const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p, const char *op) {
    OT_REQUIRE(p && p->perm, "%s: plan not allocated (ot_cuda_moe_plan_alloc)", op);
    OT_REQUIRE(W->n_experts == p->E, "%s: weights have %d experts, the plan %d", op, W->n_experts, p->E);
    OT_REQUIRE(W->rows > 0 && W->cols > 0 && W->cols % 32 == 0,
               "%s: expert weight [%d, %d] needs a positive row length that is a multiple of 32", op, W->rows, W->cols);
    if (W->kind == OT_EXPERT_MXFP4) {
        OT_REQUIRE(W->blocks && W->scales && (uintptr_t)W->blocks % 8 == 0,
                   "%s: MXFP4 blocks/scales missing or blocks not 8-byte aligned", op);
    } else if (W->kind == OT_EXPERT_DENSE) {
        OT_REQUIRE(W->dense && (uintptr_t)W->dense % 16 == 0, "%s: dense expert weights missing or not 16-byte aligned",
                   op);
    } else {
        ot_die("%s: unknown expert weight kind %d", op, W->kind);
    }
    MoeW w = {W->blocks, W->scales, as_bf16(W->dense), as_bf16(W->bias), W->rows, W->cols};
    return w;
}

// The LoRA expansion in a pass of its own, after a product that does not add it (out [n_pairs, n]).
static void lora_expansion_pass(cudaStream_t stream, bf16 *out, int n, const moe_lora_expansion *lr,
                                const ot_cuda_moe_plan *p) {
    if (!lr->r) return;
    const lora_row_groups groups = lora_plan_groups(p, lr->m_batch);
    lora_expand(stream, out, lr->u, NULL, lr->r, NULL, NULL, lr->m, lr->m_so, lr->m_sj, p->n_pairs, n, lr->r,
                lr->scale, &groups);
}

void ot_cuda_moe_matmul_fwd(cudaStream_t stream, ot_bf16 *y, const ot_bf16 *x, int gather,
                            const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p,
                            const ot_cuda_moe_lora_term *lora) {
    MoeW w = moe_weight_args(W, p, "ot_cuda_moe_matmul_fwd");
    OT_REQUIRE((uintptr_t)x % 16 == 0, "ot_cuda_moe_matmul_fwd: x must be 16-byte aligned");
    const moe_lora_expansion lr = moe_lora_expansion_of(lora, 0, W->rows, W->cols, "ot_cuda_moe_matmul_fwd");
    if (use_mxfp4_kernels(W, p, x, y)) {
        ot_cuda_moe_mxfp4_fwd(stream, as_bf16(y), as_bf16(x), gather, W, p, &lr);
        return;
    }
    if (use_library(p)) {
        ot_cuda_moe_gemm_fwd(stream, as_bf16(y), as_bf16(x), gather, W, p);
    } else {
        dim3 grid(ot_cdiv(w.rows, MM_BN), p->n_tiles);
        const int32_t *rt = gather ? p->row_token : NULL;
        if (W->kind == OT_EXPERT_MXFP4)
            moe_matmul_fwd_kernel<true><<<grid, MM_THREADS, 0, stream>>>(as_bf16(y), as_bf16(x), rt, w, p->offsets,
                                                                         p->tile_expert, p->tile_row0);
        else
            moe_matmul_fwd_kernel<false><<<grid, MM_THREADS, 0, stream>>>(as_bf16(y), as_bf16(x), rt, w, p->offsets,
                                                                          p->tile_expert, p->tile_row0);
        OT_LAUNCH_CHECK();
    }
    lora_expansion_pass(stream, as_bf16(y), W->rows, &lr, p);
}

void ot_cuda_moe_matmul_bwd(cudaStream_t stream, ot_bf16 *dx, const ot_bf16 *dy, const ot_cuda_expert_weight *W,
                            const ot_cuda_moe_plan *p, int accumulate, const ot_cuda_moe_lora_term *lora) {
    MoeW w = moe_weight_args(W, p, "ot_cuda_moe_matmul_bwd");
    const moe_lora_expansion lr = moe_lora_expansion_of(lora, 1, W->rows, W->cols, "ot_cuda_moe_matmul_bwd");
    if (use_mxfp4_kernels(W, p, dy, dx)) {
        ot_cuda_moe_mxfp4_bwd(stream, as_bf16(dx), as_bf16(dy), W, p, accumulate, &lr);
        return;
    }
    if (use_library(p)) {
        ot_cuda_moe_gemm_bwd(stream, as_bf16(dx), as_bf16(dy), W, p, accumulate);
    } else {
        dim3 grid(ot_cdiv(w.cols, MM_BN), p->n_tiles);
        if (W->kind == OT_EXPERT_MXFP4)
            moe_matmul_bwd_kernel<true><<<grid, MM_THREADS, 0, stream>>>(as_bf16(dx), as_bf16(dy), w, p->offsets,
                                                                         p->tile_expert, p->tile_row0, accumulate);
        else
            moe_matmul_bwd_kernel<false><<<grid, MM_THREADS, 0, stream>>>(as_bf16(dx), as_bf16(dy), w, p->offsets,
                                                                          p->tile_expert, p->tile_row0, accumulate);
        OT_LAUNCH_CHECK();
    }
    lora_expansion_pass(stream, as_bf16(dx), W->cols, &lr, p);
}
