// The grouped expert products of training-size MoE calls with MXFP4 weights, read straight from their 4-bit form:
// no bf16 copy of a weight matrix is ever written to global memory (the library path of moe_gemm.cu writes and
// re-reads 2 bytes per weight and call, about half its time). Same contract as ot_cuda_moe_matmul_fwd / _bwd:
//
//   forward:   y[p, c]  = Σ_k x_p[k] · W_e[c, k] + b_e[c]        (reduction over K = cols of W, c < N = rows)
//   backward:  dx[p, c] (+)= Σ_n dy[p, n] · W_e[n, c]           (reduction over N = rows of W, c < K = cols)
//
// each optionally with an expert LoRA's rank-r expansion added before the rounding (see "the LoRA expansion in
// the epilogue" below).
//
// One block computes a tile of 128 rows (one expert's permuted rows) × 128 output columns with 4 warps on the
// bf16 tensor cores (fp32 accumulators), stepping the reduction by BK = 64 where the reduction length allows it
// (5% faster on an H200: half the barriers and loop overhead per product) or 32; two blocks share an SM. The
// products run one of two ways:
//   - mma.sync m16n8k16 (every GPU from sm_80): 2 × 2 warps, each 64 × 64 (per product, the fewest shared-memory
//     fragment reads, which bound mma.sync kernels);
//   - wgmma m64n128k16 (Hopper, sm_90a builds, 64-wide steps): the block is one warpgroup; both operands are read
//     from shared memory by the tensor cores themselves, asynchronously, so the decode of step k+1 runs on the
//     CUDA cores while the products of step k run (on an H200, 2048 tokens of the 20b shape: 285-305 TFLOP/s
//     against 230-245 by mma.sync, benchmarks/bench_moe_gemm.cu).
// Each step:
//   - the activation tile (x or dy, 128 × BK bf16) and the weight tile's raw MXFP4 bytes (BK/32 groups of 16
//     bytes per thread: forward, consecutive groups of one weight row; backward, BK weight rows × 4 groups) travel
//     by cp.async through a ring in shared memory (4 stages at BK 32, 3 at BK 64), so two or three steps of loads
//     are in flight while the tensor cores work; the nibbles 16 bytes at a time past L1 where the weights are
//     16-byte aligned (7% faster forward than two 8-byte copies through L1, which other alignments take);
//   - each thread dequantizes the groups it copied itself (32 weights each; no barrier needed between its copy and its
//     decode) into a double-buffered bf16 weight tile, one step ahead of the products that read it, so a step
//     needs a single __syncthreads; each group's scale byte rides in the same ring, as the aligned 4-byte word
//     that holds it (plain loads a step or two ahead stalled the products on H200: the copy of the register
//     that carries them across steps waits for the load);
//   - tiles are XOR-swizzled (every 8-row read hits 8 distinct 16-byte bank groups; at BK 64 this is wgmma's
//     128-byte swizzle); mma.sync takes its operand fragments by ldmatrix.x4, the backward's weight tile
//     [BK n][128 c] with .trans, which hands each lane the pairs along n that the mma's B operand wants; wgmma
//     reads the backward's weight tile as an N-major operand.
// The decode gives the bits of mx_dequant16 (moe_gemm.cuh) for every code and scale: the 8 magnitudes are
// scaled once per group as there (by integer exponent adds where that is exact, see mx_scale_table), then looked
// up with byte permutes (prmt) by the 3-bit magnitude of each nibble, and the sign bit is copied in (scaling and
// rounding are symmetric in the sign, so −v decodes to the bits of v with the sign set).
//
// Rows: a tile never straddles two experts; expert e owns ceil(rows_e / 128) tiles, in expert order. Each block
// finds its tile's expert from the plan's offsets in device memory (a walk over the experts, a few hundred cycles
// next to the block's tens of microseconds), so nothing waits for a host copy of the routing: the grid is sized for
// the most tiles any routing can make (n_pairs / 128 + E) and the blocks past the last tile return at once. Ragged
// ends are handled by clamping: rows past the expert's end re-read its last row, weight rows / groups past the
// matrix re-read its last one, and only the stores are masked; with mma.sync a warp skips the products of its
// 16-row fragments past the expert's end, and all of them when its 64 columns lie past the matrix (warp-uniform
// tests: the tensor cores of a ragged last tile do little more than the real work); wgmma skips the second 64 rows
// of a tile when they lie past the expert's end.
// Blocks run column tiles fastest: the 23-45 blocks of one row tile read the same activation rows from L2, and
// the 2-3 row tiles of an expert read its weight tiles within one wave.
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/moe_gemm.cuh"

#include "kernels/ops.h" // OT_EXPERT_MXFP4

#define MX_BM 128     // rows of a tile (one expert's)
#define MX_MAX_EXPERTS 256 // each block walks the experts to find its tile's: keep that walk short
#define MX_DEFAULT_BK 64 // OT_MOE_FUSED_BK unset: 64 measured 5% faster than 32 on an H200 (benchmarks/RESULTS.md)

// The layout of one variant: BK (32 or 64) is the reduction step, GPS = BK / 32 MXFP4 groups per thread and step.
// Shared memory holds a ring of STAGES activation tiles [128][BK] bf16, the two dequantized weight tiles (forward
// [BN n][BK k], backward [BK n][BN c]), then the ring's raw nibbles (GPS groups of 16 bytes per thread) and the words
// of their scale bytes (GPS × 4 bytes per thread). The tiles come first, each on a 1024-byte boundary (the swizzle
// atom of wgmma's operands). BK 32: 4 stages, 59,392 bytes; BK 64: 3 stages, 97,280 bytes, so that two blocks share
// an SM (with one block of 256 threads and 256 columns per SM instead, the wgmma products ran 10-30% slower on an
// H200: the block's barrier every step then idles the whole SM).
template <int BK> struct MxCfg {
    static constexpr int THREADS = 128;
    static constexpr int BN = THREADS; // output columns of a tile
    static constexpr int GPS = BK / 32;
    static constexpr int STAGES = BK == 32 ? 4 : 3;
    static constexpr int ROW_BYTES = BK * 2; // of the [128][BK] tiles
    static constexpr int CPR = ROW_BYTES / 16; // 16-byte chunks per activation row
    static constexpr int A_PASSES = MX_BM * CPR / THREADS; // activation chunks each thread copies per step
    static constexpr int GPR = BN / 32; // backward: a tile's MXFP4 groups per weight row
    static constexpr int A_BYTES = MX_BM * ROW_BYTES;
    static constexpr int W_BYTES = BN * BK * 2;
    static constexpr int RAW_BYTES = THREADS * 16 * GPS;
    static constexpr int SCALE_BYTES = THREADS * 4 * GPS;
    static constexpr int W_OFF = STAGES * A_BYTES;
    static constexpr int RAW_OFF = W_OFF + 2 * W_BYTES;
    static constexpr int SCALE_OFF = RAW_OFF + STAGES * RAW_BYTES;
    static constexpr int SMEM_BYTES = SCALE_OFF + STAGES * SCALE_BYTES;
    static_assert(A_BYTES % 1024 == 0 && W_BYTES % 1024 == 0, "tiles on 1024-byte boundaries");
    static_assert(THREADS / GPR == 32, "the backward's weight rows: 32 per pass of the block");
};


// ---- Warpgroup PTX wrappers (the emulator, tests/gpu/emu/transform.py, rewrites each asm by its opcode and relies
// on these parameter names; the copy and ldmatrix wrappers are in cuda_common.cuh) -----------------------------------
// Warpgroup products (sm_90a; the block is one warpgroup of 128 threads). Both operands come from shared memory
// through descriptors; tiles are 128-byte rows in 1024-byte swizzle atoms (128-byte swizzle: 16-byte chunk c of
// row r at chunk c ^ (r % 8), which is swz<128>). Descriptor: start address, leading-dimension byte offset (lbo),
// stride-dimension byte offset (sbo = 1024, from one 8-row block to the next), all >> 4, swizzle mode 1 (128 B).
// K-major operands ignore lbo; the N-major B of the backward uses it for the step from one 64-column block to the
// next.
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t addr, uint32_t sbo, uint32_t lbo) {
    return (uint64_t)((addr & 0x3FFFFu) >> 4) | ((uint64_t)((lbo & 0x3FFFFu) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFFu) >> 4) << 32) | (1ull << 62);
}
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || !defined(__CUDA_ARCH__)
// d (64 × 128 fp32, see the epilogue for which thread holds what) += A (64 × 16, K-major) · B (16 × 128; K-major
// [n][k] when TRANS_B is 0, N-major [k][n] when 1).
template <int TRANS_B>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
    asm volatile("{.reg .pred p; setp.ne.b32 p, %66, 0; wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, %67;}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
                   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
                   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
                   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
                   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(desc_a), "l"(desc_b), "r"(1), "n"(TRANS_B));
}
__device__ __forceinline__ void wgmma_fence(void) { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Wait until at most N of this warpgroup's committed wgmma groups are still running.
template <int N> __device__ __forceinline__ void wgmma_wait(void) {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared-memory writes of this thread (stores, landed cp.async copies) become visible to wgmma's reads.
__device__ __forceinline__ void fence_proxy_async(void) {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
#else // other targets never launch the wgmma variant (the host checks the device), but must compile it
template <int TRANS_B>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) { __trap(); }
__device__ __forceinline__ void wgmma_fence(void) {}
__device__ __forceinline__ void wgmma_commit(void) {}
template <int N> __device__ __forceinline__ void wgmma_wait(void) {}
__device__ __forceinline__ void fence_proxy_async(void) {}
#endif

// ---- MXFP4 decode by table ------------------------------------------------------------------------------------
// The bf16 bits of the 8 E2M1 magnitudes (0, .5, 1, 1.5, 2, 3, 4, 6) times 2^(s − 127), computed as mx_dequant16
// does, as byte tables for prmt: t[0] = low bytes of magnitudes 0-3, t[1] = of 4-7, t[2], t[3] = their high bytes.
// For scales 2..252 every nonzero product is a normal bf16, so scaling only adds s − 127 to the exponent field of
// the magnitudes' bits (integer adds on both halves at once: no half leaves 0x0100..0x7fff, so none borrows or
// carries into its neighbour); the rest (zero-ish, huge and NaN scales) take the float route of mx_dequant16.
__device__ __forceinline__ void mx_scale_table(uint32_t t[4], unsigned s) {
    uint32_t m01, m23, m45, m67; // bf16 pairs (low half first) of magnitudes (0, .5), (1, 1.5), (2, 3), (4, 6)
    if (s >= 2u && s <= 252u) {
        const int d = ((int)s - 127) * 128; // exponent step in bf16 bits
        const uint32_t dd = (uint32_t)(d * 65537); // d added to both halves
        m01 = 0x3F000000u + ((uint32_t)d << 16); // the low half (magnitude 0) stays 0
        m23 = 0x3FC03F80u + dd;
        m45 = 0x40404000u + dd;
        m67 = 0x40C04080u + dd;
    } else {
        const float f1 = __uint_as_float(s == 0 ? 0x00400000u : (min(s, 254u) << 23));
        const float f2 = s == 255 ? 2.0f : 1.0f;
        m01 = pack_bf16x2(0.0f * f1 * f2, 0.5f * f1 * f2), m23 = pack_bf16x2(1.0f * f1 * f2, 1.5f * f1 * f2);
        m45 = pack_bf16x2(2.0f * f1 * f2, 3.0f * f1 * f2), m67 = pack_bf16x2(4.0f * f1 * f2, 6.0f * f1 * f2);
    }
    t[0] = __byte_perm(m01, m23, 0x6420);
    t[1] = __byte_perm(m45, m67, 0x6420);
    t[2] = __byte_perm(m01, m23, 0x7531);
    t[3] = __byte_perm(m45, m67, 0x7531);
}

// 8 weights of one 32-bit word of nibbles (element i in bits 4i..4i+3) as 4 registers of bf16 pairs (element 2j
// in the low half of out[j]), as mx_dequant16 lays them out.
__device__ __forceinline__ void mx_decode8(uint32_t out[4], uint32_t w, const uint32_t t[4]) {
    const uint32_t mag = w & 0x77777777u; // 3-bit magnitude codes: prmt byte selectors
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const uint32_t sel = half ? mag >> 16 : mag;    // elements 4·half .. 4·half+3
        const uint32_t lo = __byte_perm(t[0], t[1], sel); // their low bytes
        const uint32_t hi = __byte_perm(t[2], t[3], sel); // their high bytes
        out[2 * half] = __byte_perm(lo, hi, 0x5140);
        out[2 * half + 1] = __byte_perm(lo, hi, 0x7362);
    }
    // Signs: element 2j's is bit 3 of byte j, 2j+1's bit 7; they belong in bits 15 and 31 of out[j].
    const uint32_t w4 = w << 4;
    out[0] |= __byte_perm(w4, w, 0x4000) & 0x80008000u;
    out[1] |= __byte_perm(w4, w, 0x5010) & 0x80008000u;
    out[2] |= __byte_perm(w4, w, 0x6020) & 0x80008000u;
    out[3] |= __byte_perm(w4, w, 0x7030) & 0x80008000u;
}

// ---- shared-memory layouts ------------------------------------------------------------------------------------
// Tiles of 64-byte rows (activations and forward weights at BK 32): 16-byte chunk c of row r lives at chunk
// c ^ ((r / 2) % 4), so the 8 rows an ldmatrix reads (and the 8 lanes of a quarter warp that write) cover all 8
// bank groups of 16 bytes. Rows of 128 bytes (BK 64) and of 256 bytes (backward weights [BK][128]): chunk c of row
// r lives at chunk c ^ (r % 8).
template <int ROW_BYTES> __device__ __forceinline__ int swz(int row, int chunk) {
    if constexpr (ROW_BYTES == 64) return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4);
    else return row * ROW_BYTES + ((chunk ^ (row & 7)) << 4);
}

// ---- the LoRA expansion in the epilogue ------------------------------------------------------------------------
// Once the reduction is done the ring is free: the expansion's operands go there MX_LR_RC ranks at a time, as
// us[j][row] = scale · u[p, j] (rows MX_BM + 1 apart: the staging writes, 16 or 32 ranks of a row, spread over the
// banks) and ms[j][col] = m_e(c, j) (rows BN + 2 apart: 8-byte pairs, the staging writes of B's rank-contiguous
// rows spread too). Each thread adds Σ_j us[j][row]·ms[j][col] to the fp32 accumulators it holds, before the one
// rounding to bf16: the product's output crosses the memory bus once, where a separate expansion pass
// (lora_expand) reads and rewrites it (most of the expert LoRA's time on an H200, benchmarks/RESULTS.md).
#define MX_LR_RC 32
#define MX_LR_US (MX_BM + 1)
#define MX_LR_MS (128 + 2)
static_assert(MX_LR_RC * (MX_LR_US + MX_LR_MS) * 4 <= 59392, "the expansion's staging fits the smallest ring");
static_assert(MX_LR_RC * MX_LR_US % 2 == 0, "ms starts 8-byte aligned");

// acc(a, b, i) += Σ_j<rc us[j][rows[a]] · ms[j][cols[b] + i] for the thread's NR rows and NC column pairs.
template <int NR, int NC, typename Acc>
__device__ __forceinline__ void mx_lora_accumulate(const float *us, const float *ms, int rc, const int *rows,
                                                   const int *cols, Acc acc) {
#pragma unroll 2
    for (int j = 0; j < rc; j++) {
        float u[NR];
#pragma unroll
        for (int a = 0; a < NR; a++) u[a] = us[j * MX_LR_US + rows[a]];
#pragma unroll
        for (int b = 0; b < NC; b++) {
            const float2 m = *reinterpret_cast<const float2 *>(ms + j * MX_LR_MS + cols[b]);
#pragma unroll
            for (int a = 0; a < NR; a++) {
                acc(a, b, 0) += u[a] * m.x;
                acc(a, b, 1) += u[a] * m.y;
            }
        }
    }
}

// ---- the products of one step --------------------------------------------------------------------------------
// A warp's products for 32 of a step's reduction: its MT (1-4) 16-row fragments × 64 columns. All fragments of
// both k16 slices are loaded first (ldmatrix.x4: 2 × MT for the activations, 2 × 4 for the weights), so their
// latencies overlap, then the 2 × MT × 8 products run back to back. a_frag / b_frag are this lane's fragment
// offsets of the two slices; the activation tile's rows are ROW_BYTES long.
template <bool BWD, int MT, int ROW_BYTES>
__device__ __forceinline__ void mx_warp_products(float (&acc)[4][8][4], const uint8_t *at, const uint8_t *wt,
                                                 const int *a_frag, const int (*b_frag)[4]) {
    uint32_t a[2][MT][4], b[2][8][2];
#pragma unroll
    for (int ks = 0; ks < 2; ks++) {
#pragma unroll
        for (int np = 0; np < 4; np++) {
            uint32_t r[4];
            if (BWD) ldmatrix_x4_trans(r, wt + b_frag[ks][np]);
            else ldmatrix_x4(r, wt + b_frag[ks][np]);
            b[ks][2 * np][0] = r[0], b[ks][2 * np][1] = r[1], b[ks][2 * np + 1][0] = r[2], b[ks][2 * np + 1][1] = r[3];
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) ldmatrix_x4(a[ks][mt], at + a_frag[ks] + mt * 16 * ROW_BYTES);
    }
#pragma unroll
    for (int ks = 0; ks < 2; ks++)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++) mma_bf16_16816(acc[mt][nt], a[ks][mt], b[ks][nt][0], b[ks][nt][1]);
}

// One step's wgmma products: for each k16 slice, the first MH (1 or 2) 64-row halves of the block's tile. A: rows of
// 128 bytes, slice ks at byte 32·ks of each row, the halves 8 KB apart. B forward: the same layout, [n][k]; backward:
// N-major [n][c], slice ks = rows 16·ks .. 16·ks+15, the two 64-column blocks 8 KB apart (lbo).
template <bool BWD, int KS, int MH>
__device__ __forceinline__ void mx_wgmma_step(float (&accw)[2][64], uint32_t a_base, uint32_t w_base) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        const uint64_t db = BWD ? wgmma_desc(w_base + 2048 * ks, 1024, 64 * 128) : wgmma_desc(w_base + 32 * ks, 1024, 16);
#pragma unroll
        for (int mh = 0; mh < MH; mh++)
            wgmma_m64n128k16<BWD>(accw[mh], wgmma_desc(a_base + 64 * 128 * mh + 32 * ks, 1024, 16), db);
    }
}

// ---- the kernel -----------------------------------------------------------------------------------------------
// Forward (BWD false): out = y [n_pairs, N], act = x ([T, K] gathered through row_token, or [n_pairs, K]),
// bias [E, N] or NULL. Backward: out = dx [n_pairs, K], act = dy [n_pairs, N], accumulate onto out or not.
// The reduction length (K forward, N backward) is a multiple of BK. WG: the products by wgmma (BK 64 only).
template <bool BWD, int BK, bool WG>
__global__ void __launch_bounds__(MxCfg<BK>::THREADS, 2)
    moe_mxfp4_gemm_kernel(bf16 *out, const bf16 *__restrict__ act, const int32_t *__restrict__ row_token,
                          const uint8_t *__restrict__ blocks, const uint8_t *__restrict__ scales,
                          const bf16 *__restrict__ bias, int N, int K, int accumulate, int raw16,
                          const int32_t *__restrict__ offsets, int E, moe_lora_expansion lora) {
    using C = MxCfg<BK>;
    static_assert(!WG || BK == 64, "the wgmma products take 64-wide steps");
    constexpr int GPS = C::GPS, STAGES = C::STAGES, CPR = C::CPR, KS = BK / 16, TH = C::THREADS;
    extern __shared__ __align__(1024) uint4 mx_smem[];
    uint8_t *smem = reinterpret_cast<uint8_t *>(mx_smem);
    if (WG && (__cvta_generic_to_shared(smem) & 1023u)) __trap(); // the swizzle atoms need 1024-byte alignment
    uint8_t *wtile = smem + C::W_OFF; // two dequantized weight tiles

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp >> 1, wn = warp & 1;
    // This tile's expert, from the offsets (experts without rows own no tile); past the last tile: nothing to do
    // (the whole block returns, before any barrier).
    const int tile = blockIdx.y;
    int e = -1, first_tile = 0, e_row0 = offsets[0];
    for (int f = 0; f < E; f++) {
        const int next = offsets[f + 1], n_tiles = (next - e_row0 + MX_BM - 1) / MX_BM;
        if (tile < first_tile + n_tiles) {
            e = f;
            break;
        }
        first_tile += n_tiles;
        e_row0 = next;
    }
    if (e < 0) return;
    const int m0 = e_row0 + (tile - first_tile) * MX_BM, m_end = offsets[e + 1];
    const int c0 = blockIdx.x * C::BN;
    const int ncols = BWD ? K : N, red = BWD ? N : K; // output columns, reduction length
    const int G = K / 32, nk = red / BK;

    // Activation loads: 16-byte chunk tid % CPR of rows tid / CPR + (TH / CPR)·i (i < A_PASSES) of the tile.
    const int a_chunk = tid % CPR;
    int a_row[C::A_PASSES];
#pragma unroll
    for (int i = 0; i < C::A_PASSES; i++) {
        int p = min(m0 + tid / CPR + (TH / CPR) * i, m_end - 1);
        a_row[i] = row_token ? row_token[p] : p;
    }
    // Weight loads and decode: GPS groups (16 bytes of nibbles, 32 weights each) and their scales per thread and step.
    //   forward:  weight row c0 + tid, the step's GPS consecutive groups; advance GPS groups per step
    //   backward: weight rows BK·step + tid/GPR + 32j (j < GPS), group c0/32 + tid%GPR; advance BK rows per step
    const uint8_t *q_src, *s_src;
    size_t q_step, s_step, q_j, s_j; // per step, and between a thread's groups of a step
    int w_dst[GPS][4];               // where each group's 4 × 8 decoded weights go in a weight tile
    if (!BWD) {
        const size_t wrow = (size_t)e * N + min(c0 + tid, N - 1);
        q_src = blocks + wrow * G * 16;
        s_src = scales + wrow * G;
        q_step = 16 * GPS, s_step = GPS, q_j = 16, s_j = 1;
#pragma unroll
        for (int j = 0; j < GPS; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) w_dst[j][c] = swz<C::ROW_BYTES>(tid, 4 * j + c);
    } else {
        // mma.sync: 4 consecutive threads read one weight row's 4 groups (64 contiguous bytes). wgmma: a warp per
        // group, lane = row, so that the 8 threads of a quarter warp store their decoded chunks to 8 distinct
        // rows of one 64-column tile, 8 distinct bank groups (by rows of 4 groups, two 64-column tiles share
        // their banks: 2-way conflicts).
        const int r = WG ? tid & 31 : tid / C::GPR, g = WG ? tid >> 5 : tid % C::GPR;
        const size_t grp = ((size_t)e * N + r) * G + min(c0 / 32 + g, G - 1);
        q_src = blocks + grp * 16;
        s_src = scales + grp;
        q_step = (size_t)BK * G * 16, s_step = (size_t)BK * G, q_j = (size_t)32 * G * 16, s_j = (size_t)32 * G;
        // mma.sync: one tile [BK n][128 c] of 256-byte rows. wgmma (N-major operand): two tiles [64 n][64 c] of
        // 128-byte rows, columns 0-63 then 64-127, so that each 8-row block is one 1024-byte swizzle atom.
#pragma unroll
        for (int j = 0; j < GPS; j++)
#pragma unroll
            for (int c = 0; c < 4; c++)
                w_dst[j][c] = WG ? (g >> 1) * (64 * 128) + swz<128>(r + 32 * j, 4 * (g & 1) + c)
                                 : swz<256>(r + 32 * j, 4 * g + c);
    }

    // mma.sync fragment addresses of this lane within a tile (ldmatrix: lane l gives row l%8 of matrix l/8).
    //   A (16 × 16 at rows wm·64 + 16·mt): matrices (rows 0-7, k 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15)
    //   B forward (tile [n][k]): (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) of 16 columns
    //   B backward (tile [n][c], .trans): (n 0-7, c 0-7), (n 8-15, c 0-7), (n 0-7, c 8-15), (n 8-15, c 8-15)
    // so that r[0], r[1] are the b0, b1 of the first 8 output columns and r[2], r[3] those of the next 8.
    const int lrow = (lane & 7) + ((lane >> 3) & 1) * 8, lhalf = lane >> 4;
    int a_frag[KS], b_frag[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
        a_frag[ks] = swz<C::ROW_BYTES>(wm * 64 + lrow, 2 * ks + lhalf);
#pragma unroll
        for (int np = 0; np < 4; np++)
            b_frag[ks][np] = BWD ? swz<256>(16 * ks + lrow, wn * 8 + 2 * np + lhalf)
                                 : swz<C::ROW_BYTES>(wn * 64 + 16 * np + (lane & 7) + lhalf * 8,
                                                     2 * ks + ((lane >> 3) & 1));
    }
    // Warp-uniform work bounds: rows of this warp still inside the expert, columns inside the matrix (mma.sync);
    // wgmma: whether the tile's second 64 rows hold any of the expert's (block-uniform; a test on something
    // thread-dependent around the products makes ptxas serialize them all).
    const int warp_rows = m_end - (m0 + wm * 64);
    const bool warp_active = warp_rows > 0 && c0 + wn * 64 < ncols;
    const bool upper_half = m_end - m0 > 64;

    // Accumulators: mma.sync, this warp's 4 × 8 fragments of 16 × 8; wgmma, the block's two 64 × 128 halves.
    float acc[4][8][4], accw[2][64];
#pragma unroll
    for (int mt = 0; mt < 4; mt++)
#pragma unroll
        for (int nt = 0; nt < 8; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
#pragma unroll
    for (int i = 0; i < 64; i++) accw[0][i] = accw[1][i] = 0.0f;

    // Stage s of the ring: the activation tile, the raw nibbles, the words of the scale bytes.
#define MX_A(s) (smem + ((s) % STAGES) * C::A_BYTES)
#define MX_RAWP(s, j) (smem + C::RAW_OFF + ((s) % STAGES) * C::RAW_BYTES + (tid * GPS + (j)) * 16)
#define MX_SCALEP(s, j) (smem + C::SCALE_OFF + ((s) % STAGES) * C::SCALE_BYTES + (tid * GPS + (j)) * 4)
#define MX_ISSUE(s)                                                                                                   \
    do {                                                                                                              \
        uint8_t *at_ = MX_A(s);                                                                                       \
        for (int i_ = 0; i_ < C::A_PASSES; i_++)                                                                      \
            cp_async16(at_ + swz<C::ROW_BYTES>(tid / CPR + (TH / CPR) * i_, a_chunk),                                 \
                       act + (size_t)a_row[i_] * red + (size_t)(s) * BK + a_chunk * 8);                               \
        for (int j_ = 0; j_ < GPS; j_++) {                                                                            \
            const uint8_t *q_ = q_src + (size_t)(s) * q_step + j_ * q_j;                                              \
            uint8_t *raw_ = MX_RAWP(s, j_);                                                                           \
            if (raw16) cp_async16(raw_, q_);                                                                          \
            else cp_async8(raw_, q_), cp_async8(raw_ + 8, q_ + 8);                                                    \
            const uintptr_t sa_ = (uintptr_t)(s_src + (size_t)(s) * s_step + j_ * s_j);                               \
            cp_async4(MX_SCALEP(s, j_), (const void *)(sa_ & ~(uintptr_t)3));                                        \
        }                                                                                                             \
    } while (0)
    // This thread's raw group j (16 bytes of nibbles) of stage s, and its scale byte out of its word.
#define MX_RAW(s, j) (*reinterpret_cast<const uint4 *>(MX_RAWP(s, j)))
#define MX_SCALE(s, j)                                                                                                \
    ((*reinterpret_cast<const uint32_t *>(MX_SCALEP(s, j)) >>                                                         \
      (8u * (unsigned)((uintptr_t)(s_src + (size_t)(s) * s_step + (j) * s_j) & 3u))) &                               \
     0xffu)
    // Decode raw group q (group j of stage s) with scale byte sc into weight tile buffer (s) % 2.
#define MX_DECODE(s, j, q, sc)                                                                                        \
    do {                                                                                                              \
        const uint4 q_ = (q);                                                                                         \
        const uint32_t w_[4] = {q_.x, q_.y, q_.z, q_.w};                                                              \
        uint32_t t_[4];                                                                                               \
        mx_scale_table(t_, sc);                                                                                       \
        uint8_t *wt_ = wtile + ((s) & 1) * C::W_BYTES;                                                                \
        for (int c_ = 0; c_ < 4; c_++) {                                                                              \
            uint32_t v_[4];                                                                                           \
            mx_decode8(v_, w_[c_], t_);                                                                               \
            *reinterpret_cast<uint4 *>(wt_ + w_dst[j][c_]) = make_uint4(v_[0], v_[1], v_[2], v_[3]);                  \
        }                                                                                                             \
    } while (0)

    // Prologue: stages 0 .. STAGES-2 in flight, stage 0 decoded.
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < nk) MX_ISSUE(s);
        cp_async_commit(); // one group per stage, empty or not, so the waits below count stages
    }
    cp_async_wait<STAGES - 2>(); // this thread's copies of stage 0
#pragma unroll
    for (int j = 0; j < GPS; j++) MX_DECODE(0, j, MX_RAW(0, j), MX_SCALE(0, j));
    if (WG) fence_proxy_async(); // the tiles written so far are read by wgmma (the async proxy)
    __syncthreads();             // stage 0's activations (all threads' copies) and decoded weights are visible

    for (int kt = 0; kt < nk; kt++) {
        // The slot of stage kt-1 is free: every warp passed the barrier after its products.
        if (kt + STAGES - 1 < nk) MX_ISSUE(kt + STAGES - 1);
        cp_async_commit();
        if constexpr (WG) {
            // The products of stage kt run on the tensor cores while the threads decode stage kt+1.
            const uint32_t a_base = (uint32_t)__cvta_generic_to_shared(MX_A(kt));
            const uint32_t w_base = (uint32_t)__cvta_generic_to_shared(wtile + (kt & 1) * C::W_BYTES);
            wgmma_fence();
            // (the test outside the loops: a conditional product inside makes ptxas fence every product)
            if (upper_half) mx_wgmma_step<BWD, KS, 2>(accw, a_base, w_base);
            else mx_wgmma_step<BWD, KS, 1>(accw, a_base, w_base);
            wgmma_commit();
        }
        cp_async_wait<STAGES - 2>(); // this thread's copies of stage kt+1
        uint4 q_next[GPS];
        unsigned scale_next[GPS];
#pragma unroll
        for (int j = 0; j < GPS; j++) {
            q_next[j] = kt + 1 < nk ? MX_RAW(kt + 1, j) : make_uint4(0u, 0u, 0u, 0u);
            scale_next[j] = kt + 1 < nk ? MX_SCALE(kt + 1, j) : 127u;
        }
        // Products of stage kt, by straight runs of fragment loads and products for the warp's rows inside the
        // expert (a branch per 16-row fragment inside the run stalls the warp at every product: measured on H200).
        if (!WG && warp_active) {
            const uint8_t *at = MX_A(kt), *wt = wtile + (kt & 1) * C::W_BYTES;
#pragma unroll
            for (int h = 0; h < KS; h += 2) {
                if (warp_rows > 48) mx_warp_products<BWD, 4, C::ROW_BYTES>(acc, at, wt, a_frag + h, b_frag + h);
                else if (warp_rows > 32) mx_warp_products<BWD, 3, C::ROW_BYTES>(acc, at, wt, a_frag + h, b_frag + h);
                else if (warp_rows > 16) mx_warp_products<BWD, 2, C::ROW_BYTES>(acc, at, wt, a_frag + h, b_frag + h);
                else mx_warp_products<BWD, 1, C::ROW_BYTES>(acc, at, wt, a_frag + h, b_frag + h);
            }
        }
        // Decode stage kt+1 into the other weight buffer (last read by the products of step kt-1), its raw bytes
        // read before the products so that the shared-memory latency hides behind them.
        if (kt + 1 < nk) {
#pragma unroll
            for (int j = 0; j < GPS; j++) MX_DECODE(kt + 1, j, q_next[j], scale_next[j]);
        }
        if constexpr (WG) {
            // This thread's decoded weights and landed copies, for the next products; the products of stage kt
            // done with its tiles. (Keeping them running across the barrier, waiting for them only after the next
            // step's were issued, measured 3% slower on an H200.)
            fence_proxy_async();
            wgmma_wait<0>();
        }
        __syncthreads(); // stage kt's slot and weight buffer may be rewritten; stage kt+1 is visible
    }
#undef MX_ISSUE
#undef MX_DECODE
#undef MX_RAW
#undef MX_SCALE
#undef MX_RAWP
#undef MX_SCALEP
#undef MX_A

    const int gi = lane >> 2, ti = lane & 3;
    // The LoRA expansion, into the accumulators (see mx_lora_accumulate). Rows past the expert's end re-read its
    // last row of u and columns past the matrix take zeros; neither is stored.
    if (lora.r > 0) {
        cp_async_wait<0>(); // (the ring's last groups are empty; nothing may land in it from here on)
        float *us = reinterpret_cast<float *>(smem), *ms = us + MX_LR_RC * MX_LR_US;
        const float *m_e = lora.m + (size_t)e * lora.m_batch;
        for (int j0 = 0; j0 < lora.r; j0 += MX_LR_RC) {
            const int rc = min(MX_LR_RC, lora.r - j0);
            if (j0) __syncthreads(); // the last chunk's reads are done
            for (int i = tid; i < MX_BM * rc; i += TH) { // consecutive threads: consecutive ranks of a row of u
                const int row = i / rc, j = i % rc;
                us[j * MX_LR_US + row] = lora.scale * lora.u[(size_t)min(m0 + row, m_end - 1) * lora.r + j0 + j];
            }
            for (int i = tid; i < C::BN * rc; i += TH) { // along whichever of m's dimensions is contiguous
                int j, col;
                if (lora.m_sj == 1) j = i % rc, col = i / rc;
                else j = i / C::BN, col = i % C::BN;
                const int c = c0 + col;
                ms[j * MX_LR_MS + col] = c < ncols ? m_e[(size_t)c * lora.m_so + (size_t)(j0 + j) * lora.m_sj] : 0.0f;
            }
            __syncthreads();
            if constexpr (WG) {
                // rows a = 2·mh + h, column pairs b (the register layout of the stores below); the second 64 rows
                // only where the tile has them
                const int rows[4] = {16 * warp + gi, 16 * warp + gi + 8, 64 + 16 * warp + gi, 72 + 16 * warp + gi};
                int cols[16];
#pragma unroll
                for (int b = 0; b < 16; b++) cols[b] = 8 * b + 2 * ti;
                auto reg = [&](int a, int b, int i) -> float & { return accw[a >> 1][4 * b + 2 * (a & 1) + i]; };
                if (upper_half) mx_lora_accumulate<4, 16>(us, ms, rc, rows, cols, reg);
                else mx_lora_accumulate<2, 16>(us, ms, rc, rows, cols, reg);
            } else if (warp_active) {
                int rows[8], cols[8]; // rows a = 2·mt + half, column pairs b = nt
#pragma unroll
                for (int a = 0; a < 8; a++) rows[a] = wm * 64 + (a >> 1) * 16 + gi + (a & 1) * 8;
#pragma unroll
                for (int b = 0; b < 8; b++) cols[b] = wn * 64 + b * 8 + ti * 2;
                auto reg = [&](int a, int b, int i) -> float & { return acc[a >> 1][b][2 * (a & 1) + i]; };
                mx_lora_accumulate<8, 8>(us, ms, rc, rows, cols, reg);
            }
        }
    }

    // Epilogue: fp32 results (+ bias, + the old value) rounded once to bf16, stored as pairs where in range.
    const bf16 *b_e = bias ? bias + (size_t)e * N : NULL;
    auto store = [&](int row, int col, float v0, float v1) {
        if (row >= m_end || col >= ncols) return;
        if (b_e) v0 += bf2f(b_e[col]), v1 += bf2f(b_e[col + 1]);
        uint32_t *d = reinterpret_cast<uint32_t *>(out + (size_t)row * ncols + col);
        if (accumulate) {
            const uint32_t old = *d;
            v0 += bf2f(__ushort_as_bfloat16((unsigned short)(old & 0xffffu)));
            v1 += bf2f(__ushort_as_bfloat16((unsigned short)(old >> 16)));
        }
        *d = pack_bf16x2(v0, v1);
    };
    if constexpr (WG) {
        // wgmma's accumulators: warp w holds rows 16w .. 16w+15 of each half; register 4j + 2h + i is row
        // 16w + gi + 8h, column 8j + 2ti + i (the mma.sync m16n8 layout, 16 times along the columns).
#pragma unroll
        for (int mh = 0; mh < 2; mh++)
#pragma unroll
            for (int j = 0; j < 16; j++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    store(m0 + 64 * mh + 16 * warp + gi + 8 * h, c0 + 8 * j + 2 * ti, accw[mh][4 * j + 2 * h],
                          accw[mh][4 * j + 2 * h + 1]);
    } else {
        if (!warp_active) return;
#pragma unroll
        for (int mt = 0; mt < 4; mt++)
#pragma unroll
            for (int half = 0; half < 2; half++)
#pragma unroll
                for (int nt = 0; nt < 8; nt++)
                    store(m0 + wm * 64 + mt * 16 + gi + half * 8, c0 + wn * 64 + nt * 8 + ti * 2,
                          acc[mt][nt][half * 2], acc[mt][nt][half * 2 + 1]);
    }
}

// ---- host -----------------------------------------------------------------------------------------------------
int ot_cuda_moe_mxfp4_fits(const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p, const void *in,
                           const void *out) {
    // scales 4-byte aligned: the word around each scale byte then lies inside the array (its length, E·rows·cols/32,
    // is a multiple of 4)
    return W->kind == OT_EXPERT_MXFP4 && W->rows % 32 == 0 && W->cols % 32 == 0 && p->E <= MX_MAX_EXPERTS &&
           (uintptr_t)W->scales % 4 == 0 && (uintptr_t)in % 16 == 0 && (uintptr_t)out % 4 == 0 &&
           (long)p->n_pairs / MX_BM + p->E <= 65535;
}

// The widest reduction step (64 or 32) that the call's reduction length allows, at most OT_MOE_FUSED_BK (read once;
// tests use ot_cuda_moe_set_fused_bk).
static int g_fused_bk = 0;

void ot_cuda_moe_set_fused_bk(int bk) {
    OT_REQUIRE(bk == 0 || bk == 32 || bk == 64, "ot_cuda_moe_set_fused_bk: %d is not 32 or 64 (or 0: default)", bk);
    g_fused_bk = bk ? bk : MX_DEFAULT_BK;
}

static int fused_bk(int red) {
    if (!g_fused_bk) {
        const char *v = getenv("OT_MOE_FUSED_BK");
        g_fused_bk = MX_DEFAULT_BK;
        if (v && *v) {
            if (strcmp(v, "32") && strcmp(v, "64")) ot_die("OT_MOE_FUSED_BK=%s: expected 32 or 64", v);
            g_fused_bk = atoi(v);
        }
    }
    return g_fused_bk == 64 && red % 64 == 0 ? 64 : 32;
}

// The wgmma products exist in builds for sm_90a (OT_CUDA_SM90A, from OT_CUDA_ARCHS) and run on compute capability
// 9.0 only; the emulator runs them too. g_wgmma: -1 not decided yet, 0 off, 1 on.
static int g_wgmma = -1;

int ot_cuda_moe_wgmma_available(void) {
#if defined(OT_CUDA_EMULATED)
    return 1;
#elif defined(OT_CUDA_SM90A)
    int dev = 0, major = 0, minor = 0;
    OT_CUDA_CHECK(cudaGetDevice(&dev));
    OT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    OT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    return major == 9 && minor == 0;
#else
    return 0;
#endif
}

int ot_cuda_moe_set_fused_wgmma(int mode) {
    OT_REQUIRE(mode >= -1 && mode <= 1, "ot_cuda_moe_set_fused_wgmma: %d is not -1, 0 or 1", mode);
    if (mode < 0) {
        const char *v = getenv("OT_MOE_WGMMA");
        if (v && *v && strcmp(v, "0") && strcmp(v, "1")) ot_die("OT_MOE_WGMMA=%s: expected 0 or 1", v);
        mode = v && *v ? atoi(v) : 1;
    }
    g_wgmma = mode && ot_cuda_moe_wgmma_available();
    return g_wgmma;
}

template <bool BWD, int BK, bool WG>
static void mx_launch_kernel(cudaStream_t stream, bf16 *out, const bf16 *act, const int32_t *row_token,
                             const ot_cuda_expert_weight *W, int accumulate, const ot_cuda_moe_plan *p,
                             const moe_lora_expansion &lora) {
    const int ncols = BWD ? W->cols : W->rows;
    using C = MxCfg<BK>;
    OT_CUDA_CHECK(cudaFuncSetAttribute(moe_mxfp4_gemm_kernel<BWD, BK, WG>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM_BYTES));
    dim3 grid(ot_cdiv(ncols, C::BN), ot_cdiv(p->n_pairs, MX_BM) + p->E); // the most tiles a routing can make
    moe_mxfp4_gemm_kernel<BWD, BK, WG><<<grid, C::THREADS, C::SMEM_BYTES, stream>>>(
        out, act, row_token, W->blocks, W->scales, BWD ? NULL : as_bf16(W->bias), W->rows, W->cols, accumulate,
        (uintptr_t)W->blocks % 16 == 0, p->offsets, p->E, lora);
    OT_LAUNCH_CHECK();
}

template <bool BWD>
static void mx_launch(cudaStream_t stream, bf16 *out, const bf16 *act, const int32_t *row_token,
                      const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p, int accumulate,
                      const moe_lora_expansion *lora, const char *op) {
    OT_REQUIRE(ot_cuda_moe_mxfp4_fits(W, p, act, out), "%s: weights or buffers unfit for the MXFP4 kernels", op);
    if (p->n_pairs == 0) return;
    const moe_lora_expansion none = {NULL, NULL, 0, 0, 0, 0, 0.0f}, &lr = lora ? *lora : none;
    if (g_wgmma < 0) ot_cuda_moe_set_fused_wgmma(-1);
    if (fused_bk(BWD ? W->rows : W->cols) == 32)
        mx_launch_kernel<BWD, 32, false>(stream, out, act, row_token, W, accumulate, p, lr);
    else if (g_wgmma)
        mx_launch_kernel<BWD, 64, true>(stream, out, act, row_token, W, accumulate, p, lr);
    else
        mx_launch_kernel<BWD, 64, false>(stream, out, act, row_token, W, accumulate, p, lr);
}

void ot_cuda_moe_mxfp4_fwd(cudaStream_t stream, bf16 *y, const bf16 *x, int gather, const ot_cuda_expert_weight *W,
                           const ot_cuda_moe_plan *p, const moe_lora_expansion *lora) {
    mx_launch<false>(stream, y, x, gather ? p->row_token : NULL, W, p, 0, lora, "ot_cuda_moe_matmul_fwd");
}

void ot_cuda_moe_mxfp4_bwd(cudaStream_t stream, bf16 *dx, const bf16 *dy, const ot_cuda_expert_weight *W,
                           const ot_cuda_moe_plan *p, int accumulate, const moe_lora_expansion *lora) {
    mx_launch<true>(stream, dx, dy, NULL, W, p, accumulate, lora, "ot_cuda_moe_matmul_bwd");
}
