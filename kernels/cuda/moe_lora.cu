// LoRA on the expert projections (PEFT target_parameters), on the permuted rows of the MoE plan: each row tile
// belongs to one expert, so its products use that expert's A_e [r, in] and B_e [out, r] (fp32, expert-major).
//
// As for the dense LoRA (lora.cu), every product has the rank r on one side, so it is thin and memory bound: what
// costs is how often the [n_pairs, in] / [n_pairs, out] activations cross the memory bus. Three kinds of product,
// each one launch for all experts:
//  * Reductions to rank r along a row (xa = x_p·A_eᵀ, dxa = scale·dy_p·B_e): moe_lora_rank_kernel, one block per
//    plan tile (64 rows of one expert) and 32 ranks, on the bf16 tensor cores (mma.sync, sm_80 and newer). The
//    activation is exact in bf16; the fp32 adapter is split into bf16 hi + lo (lora.cuh) and both products go into
//    the same fp32 accumulators. The reduction is cut into two halves (twice the blocks in flight to hide the
//    memory latency), whose partial sums the expansion that follows adds.
//  * Reductions over an expert's rows (dB_e = scale·Σ dy_pᵀ·xa_p, dA_e = Σ dxa_pᵀ·x_p): moe_lora_grad_kernel, one
//    block per (expert, 64 features, 32 ranks) summing that expert's rows in order — no atomics, the same result on
//    every run. The fp32 rank side (xa, dxa) is split into hi + lo.
//  * Expansions from rank r (y += scale·xa·B_eᵀ, dx += dxa·A_e): lora.cu's expansion kernel with the plan's row
//    groups, fp32 arithmetic and one read and one write of the bf16 activation; it also keeps xa (forward) and
//    dxa's hi + lo split (backward) on the way. The training graph hands the expansion to the expert product instead
//    (ot_cuda_moe_lora_term: y and dx_perm NULL here, xa and dxa handed over), whose fused MXFP4 kernels add it in
//    their epilogue and so save that read and write of the activation.
// hi + lo carries 16 of fp32's 24 significant bits and products and sums are fp32, so the results match the fp32
// CPU twin (ot_lora_fwd / ot_lora_bwd per expert) to ~1e-5 relative (tests/gpu/test_ops_cuda.c checks 1e-4).
//
// Both tensor-core kernels stage their operands through a 4-deep cp.async ring (16-byte copies where rows and
// pointers allow, element by element with zeros past the ends otherwise) and read fragments with ldmatrix; shared
// rows are padded by 8 bf16 so the 8 rows an ldmatrix reads fall in distinct banks.
//
// History (benchmarks/RESULTS.md): these products ran as fp32 SIMT tiles (64 × 64, whatever r) at 118.7 ms per
// 20b training step with every expert adapted on an H200 — half the step.
#include "kernels/cuda/lora.cuh"

#define ML_ROWS OT_CUDA_MOE_TILE_ROWS // permuted rows per block of the rank kernel: one plan tile
#define ML_RC 32                      // ranks per block (both kernels)
#define ML_BK 32                      // reduction step (both kernels)
#define ML_STAGES 4                   // depth of the cp.async ring
#define ML_THREADS 128                // 4 warps of 16 rows (rank kernel) or 16 features (grad kernel)
#define ML_PAD 8                      // bf16 of padding per shared row
#define ML_SPLIT 2                    // halves of the rank kernel's reduction (u0 and u1 of the expansion)
#define MG_COLS 64                    // features per block of the grad kernel

static_assert(ML_ROWS == 4 * 16, "the rank kernel's warps take 16 rows each of one plan tile");
static_assert(MG_COLS == 4 * 16, "the grad kernel's warps take 16 features each");

// 8 consecutive bf16 from src into shared dst (16-byte aligned), of which the first `valid` exist: one asynchronous
// 16-byte copy when all 8 do and `vec` (16-byte aligned rows), else plain stores — zeros for the ones that do not
// exist — visible after the block's next barrier as the copy is after its wait. src is not read when valid <= 0.
__device__ __forceinline__ void stage8(bf16 *dst, const bf16 *src, int valid, bool vec) {
    if (valid >= 8 && vec) {
        cp_async16(dst, src);
    } else if (valid <= 0) {
        *reinterpret_cast<uint4 *>(dst) = make_uint4(0u, 0u, 0u, 0u);
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) dst[i] = i < valid ? src[i] : f2bf(0.0f);
    }
}

// Of a block's 32 ranks from j0, the 16-rank halves that hold any (the others are neither staged nor multiplied).
__device__ __forceinline__ int rank_halves(int r, int j0) { return min(2, (r - j0 + 15) / 16); }

// acc[2h], acc[2h+1] (8 ranks each) += A · B for the 16-rank halves h < halves and both parts of the split (hi,
// lo): af is the warp's A fragment, B_at(part, h) the lane's ldmatrix address of that half's 16 k × 16 ranks, which
// ldmatrix takes as ranks 0-7 × k 0-7 / 8-15, then ranks 8-15 (TRANS: B stored k-major, ranks contiguous).
template <bool TRANS, typename BAt>
__device__ __forceinline__ void mma_rank_halves(float (&acc)[4][4], const uint32_t af[4], int halves, BAt B_at) {
#pragma unroll
    for (int part = 0; part < 2; part++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if (h >= halves) break;
            uint32_t bf[4];
            if constexpr (TRANS) ldmatrix_x4_trans(bf, B_at(part, h));
            else ldmatrix_x4(bf, B_at(part, h));
            mma_bf16_16816(acc[2 * h], af, bf[0], bf[1]);
            mma_bf16_16816(acc[2 * h + 1], af, bf[2], bf[3]);
        }
}

// ---- reductions to rank r along the rows ---------------------------------------------------------------------------
// out[z][p, j] = alpha · Σ_{k in half z} act(p, k) · W_e[j][k], for the rows p of each plan tile (expert e);
// act(p, k) = act[(rowmap ? rowmap[p] : p)·ld + k] bf16; W [E][r][K] bf16 hi, its lo part w_lo elements after.
typedef struct {
    float *out; // [ML_SPLIT][n_pairs][r]
    const bf16 *act;
    const int32_t *rowmap;
    long ld;
    const bf16 *W;
    size_t w_lo;
    int K, r, n_pairs;
    float alpha;
    int vec; // 16-byte copies: K, ld and w_lo multiples of 8, act and W 16-byte aligned
    const int32_t *tile_expert, *tile_row0, *offsets;
} rank_args;

__device__ __forceinline__ void rank_stage(const rank_args &a, bf16 (*xs)[ML_BK + ML_PAD],
                                           bf16 (*ws)[ML_RC][ML_BK + ML_PAD], const bf16 *We, int p0, int p_end,
                                           int j0, int k0, int k_end) {
    constexpr int PR = ML_BK / 8; // pieces of 8 per row
    for (int q = threadIdx.x; q < ML_ROWS * PR; q += ML_THREADS) { // the activation rows
        const int row = q / PR, k = k0 + 8 * (q % PR), p = p0 + row;
        const bf16 *src = NULL;
        int valid = 0;
        if (p < p_end) src = a.act + (size_t)(a.rowmap ? a.rowmap[p] : p) * a.ld + k, valid = k_end - k;
        stage8(&xs[row][k - k0], src, valid, a.vec);
    }
    const int rows = 16 * rank_halves(a.r, j0);
    for (int q = threadIdx.x; q < 2 * rows * PR; q += ML_THREADS) { // the adapter rows, hi then lo
        const int part = q / (rows * PR), row = (q / PR) % rows, k = k0 + 8 * (q % PR), j = j0 + row;
        const bf16 *src = NULL;
        int valid = 0;
        if (j < a.r) src = We + part * a.w_lo + (size_t)j * a.K + k, valid = k_end - k;
        stage8(&ws[part][row][k - k0], src, valid, a.vec);
    }
}

__global__ void __launch_bounds__(ML_THREADS) moe_lora_rank_kernel(rank_args a) {
    __shared__ __align__(16) bf16 xs[ML_STAGES][ML_ROWS][ML_BK + ML_PAD];
    __shared__ __align__(16) bf16 ws[ML_STAGES][2][ML_RC][ML_BK + ML_PAD];
    const int e = a.tile_expert[blockIdx.x];
    if (e < 0) return; // a spare tile: the whole block leaves before any barrier
    const int p0 = a.tile_row0[blockIdx.x], p_end = min(p0 + ML_ROWS, a.offsets[e + 1]);
    const int j0 = blockIdx.y * ML_RC;
    // this block's half of the reduction: a whole number of steps, so only the end of K cuts a step short
    const int half = (a.K + ML_SPLIT * ML_BK - 1) / (ML_SPLIT * ML_BK) * ML_BK;
    const int k_begin = blockIdx.z * half, k_end = min(a.K, k_begin + half);
    const int nk = k_end > k_begin ? (k_end - k_begin + ML_BK - 1) / ML_BK : 0;
    const bf16 *We = a.W + (size_t)e * a.r * a.K;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int halves = rank_halves(a.r, j0);

    float acc[4][4]; // [8 ranks][mma fragment]
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[i][q] = 0.0f;

    for (int s = 0; s < ML_STAGES - 1; s++) {
        if (s < nk) rank_stage(a, xs[s], ws[s], We, p0, p_end, j0, k_begin + s * ML_BK, k_end);
        cp_async_commit(); // one group per stage, empty or not, so the wait below counts stages
    }
    for (int kt = 0; kt < nk; kt++) {
        cp_async_wait<ML_STAGES - 2>(); // this thread's copies of step kt
        __syncthreads();                // everyone's; and step kt-1's slot is free for the prefetch
        const int pre = kt + ML_STAGES - 1;
        if (pre < nk)
            rank_stage(a, xs[pre % ML_STAGES], ws[pre % ML_STAGES], We, p0, p_end, j0, k_begin + pre * ML_BK, k_end);
        cp_async_commit();
        const int slot = kt % ML_STAGES;
#pragma unroll
        for (int ks = 0; ks < ML_BK / 16; ks++) {
            // A: the warp's 16 rows × 16 k (matrices: rows 0-7 / 8-15 × k 0-7, then × k 8-15)
            uint32_t af[4];
            ldmatrix_x4(af, &xs[slot][16 * warp + (lane & 15)][16 * ks + 8 * (lane >> 4)]);
            // B (k × rank) from W's rows (rank-major, k contiguous)
            mma_rank_halves<false>(acc, af, halves, [&](int part, int h) {
                return &ws[slot][part][16 * h + 8 * (lane >> 4) + (lane & 7)][16 * ks + 8 * ((lane >> 3) & 1)];
            });
        }
    }
    cp_async_wait<0>();

    float *out = a.out + (size_t)blockIdx.z * a.n_pairs * a.r;
    const int g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int p = p0 + 16 * warp + g + 8 * (q >> 1), j = j0 + 8 * nt + 2 * c + (q & 1);
            if (p < p_end && j < a.r) out[(size_t)p * a.r + j] = a.alpha * acc[nt][q];
        }
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// out [ML_SPLIT][n_pairs][r]: the two partial sums of alpha · act(p, ·) · W_eᵀ over the plan's tiles.
static void rank_reduce(cudaStream_t stream, float *out, const bf16 *act, const int32_t *rowmap, int K,
                        const bf16 *W_hl, size_t w_lo, int r, float alpha, const ot_cuda_moe_plan *p) {
    rank_args a = {out, act, rowmap, K, W_hl, w_lo, K, r, p->n_pairs, alpha, 0, p->tile_expert, p->tile_row0,
                   p->offsets};
    a.vec = K % 8 == 0 && w_lo % 8 == 0 && aligned16(act) && aligned16(W_hl);
    const unsigned rank_blocks = ot_cdiv(r, ML_RC);
    OT_REQUIRE(rank_blocks <= 65535, "moe_lora: rank %d is too large", r);
    moe_lora_rank_kernel<<<dim3(p->n_tiles, rank_blocks, ML_SPLIT), ML_THREADS, 0, stream>>>(a);
    OT_LAUNCH_CHECK();
}

// ---- reductions over an expert's rows -----------------------------------------------------------------------------
// dst_e(n, j) += alpha · Σ_{p of e} act(p, n) · u(p, j), n < wide, j < r, with dst_e(n, j) = dst[e·wide·r + n·s_n +
// j·s_j] fp32 (s_n = r, s_j = 1: [wide, r]; s_n = 1, s_j = wide: [r, wide]); act(p, n) as in rank_args (rows ld
// apart); u [n_pairs][r] bf16 hi, its lo part u_lo elements after.
typedef struct {
    float *dst;
    size_t s_n, s_j;
    const bf16 *act;
    const int32_t *rowmap;
    long ld;
    int wide;
    const bf16 *u;
    size_t u_lo;
    int r;
    float alpha;
    int vec_act, vec_u; // 16-byte copies of the activation / of u
    const int32_t *offsets;
} grad_args;

__device__ __forceinline__ void grad_stage(const grad_args &a, bf16 (*xs)[MG_COLS + ML_PAD],
                                           bf16 (*us)[ML_BK][ML_RC + ML_PAD], int pb, int p_end, int n0, int j0) {
    constexpr int PX = MG_COLS / 8; // pieces of 8 per staged activation row
    for (int q = threadIdx.x; q < ML_BK * PX; q += ML_THREADS) { // the activation: rows p, 64 features
        const int row = q / PX, n = n0 + 8 * (q % PX), p = pb + row;
        const bf16 *src = NULL;
        int valid = 0;
        if (p < p_end) src = a.act + (size_t)(a.rowmap ? a.rowmap[p] : p) * a.ld + n, valid = a.wide - n;
        stage8(&xs[row][n - n0], src, valid, a.vec_act);
    }
    const int pu = 2 * rank_halves(a.r, j0); // pieces of 8 ranks staged per row (4, or 2 for one half)
    for (int q = threadIdx.x; q < 2 * ML_BK * pu; q += ML_THREADS) { // the rank side, hi then lo: rows p, its ranks
        const int part = q / (ML_BK * pu), row = (q / pu) % ML_BK, j = j0 + 8 * (q % pu), p = pb + row;
        const bf16 *src = NULL;
        int valid = 0;
        if (p < p_end) src = a.u + part * a.u_lo + (size_t)p * a.r + j, valid = a.r - j;
        stage8(&us[part][row][j - j0], src, valid, a.vec_u);
    }
}

__global__ void __launch_bounds__(ML_THREADS) moe_lora_grad_kernel(grad_args a) {
    __shared__ __align__(16) bf16 xs[ML_STAGES][ML_BK][MG_COLS + ML_PAD];
    __shared__ __align__(16) bf16 us[ML_STAGES][2][ML_BK][ML_RC + ML_PAD];
    const int e = blockIdx.z, n0 = blockIdx.x * MG_COLS, j0 = blockIdx.y * ML_RC;
    const int p_begin = a.offsets[e], p_end = a.offsets[e + 1];
    const int nk = p_end > p_begin ? (p_end - p_begin + ML_BK - 1) / ML_BK : 0;
    if (nk == 0) return; // an expert without rows adds nothing
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int halves = rank_halves(a.r, j0);

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[i][q] = 0.0f;

    for (int s = 0; s < ML_STAGES - 1; s++) {
        if (s < nk) grad_stage(a, xs[s], us[s], p_begin + s * ML_BK, p_end, n0, j0);
        cp_async_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        cp_async_wait<ML_STAGES - 2>();
        __syncthreads();
        const int pre = kt + ML_STAGES - 1;
        if (pre < nk) grad_stage(a, xs[pre % ML_STAGES], us[pre % ML_STAGES], p_begin + pre * ML_BK, p_end, n0, j0);
        cp_async_commit();
        const int slot = kt % ML_STAGES;
#pragma unroll
        for (int ks = 0; ks < ML_BK / 16; ks++) {
            // A (feature × row) from the activation stored row-major (features contiguous), transposed by ldmatrix:
            // features 0-7 / 8-15 × rows 0-7, then × rows 8-15
            uint32_t af[4];
            ldmatrix_x4_trans(af, &xs[slot][16 * ks + (lane & 7) + 8 * (lane >> 4)][16 * warp + 8 * ((lane >> 3) & 1)]);
            // B (row × rank) from u stored row-major (ranks contiguous)
            mma_rank_halves<true>(acc, af, halves, [&](int part, int h) {
                return &us[slot][part][16 * ks + (lane & 7) + 8 * ((lane >> 3) & 1)][16 * h + 8 * (lane >> 4)];
            });
        }
    }
    cp_async_wait<0>();

    float *dst = a.dst + (size_t)e * a.wide * a.r;
    const int g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int n = n0 + 16 * warp + g + 8 * (q >> 1), j = j0 + 8 * nt + 2 * c + (q & 1);
            if (n < a.wide && j < a.r) dst[(size_t)n * a.s_n + (size_t)j * a.s_j] += a.alpha * acc[nt][q];
        }
}

static void rows_reduce(cudaStream_t stream, float *dst, size_t s_n, size_t s_j, const bf16 *act,
                        const int32_t *rowmap, int wide, const bf16 *u_hl, int r, float alpha,
                        const ot_cuda_moe_plan *p) {
    const size_t u_lo = (size_t)p->n_pairs * r;
    grad_args a = {dst, s_n, s_j, act, rowmap, wide, wide, u_hl, u_lo, r, alpha, 0, 0, p->offsets};
    a.vec_act = wide % 8 == 0 && aligned16(act);
    a.vec_u = r % 8 == 0 && u_lo % 8 == 0 && aligned16(u_hl);
    const unsigned rank_blocks = ot_cdiv(r, ML_RC);
    OT_REQUIRE(rank_blocks <= 65535 && p->E <= 65535, "moe_lora: rank %d or %d experts is too many", r, p->E);
    moe_lora_grad_kernel<<<dim3(ot_cdiv(wide, MG_COLS), rank_blocks, p->E), ML_THREADS, 0, stream>>>(a);
    OT_LAUNCH_CHECK();
}

// ---- B_e as the rank kernel's operand ---------------------------------------------------------------------------
// hl[e][j][o] (hi; lo n elements after) from B[e][o][j]: dxa = dy·B_e reduces along out, so the rank kernel wants
// B_e transposed to [r, out], split as it goes.
__global__ void split_transposed_kernel(bf16 *hl, size_t n, const float *B, int out, int r) {
    const size_t per = (size_t)r * out;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t e = i / per, j = i % per / out, o = i % out;
        store_hi_lo(hl + i, hl + n + i, B[e * per + o * r + j]);
    }
}

// u = the two halves' partial sums, where no expansion follows to add them (xa or dxa for a product that adds the
// expansion itself, or a forward kept only for its xa).
__global__ void sum_halves_kernel(float *u, const float *h0, const float *h1, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        u[i] = h0[i] + h1[i];
}

// ---- the layer ---------------------------------------------------------------------------------------------------
static void check(const char *what, const ot_cuda_moe_plan *p, int in, int r, int out) {
    OT_REQUIRE(p && p->perm, "%s: plan not allocated (ot_cuda_moe_plan_alloc)", what);
    OT_REQUIRE(in > 0 && r > 0 && out > 0, "%s: bad sizes in %d r %d out %d", what, in, r, out);
}

void ot_cuda_moe_lora_fwd(cudaStream_t stream, ot_bf16 *y, float *xa, const ot_bf16 *x, int gather, const float *A,
                          const float *B, const ot_cuda_moe_plan *p, int in, int r, int out, float scale) {
    check("ot_cuda_moe_lora_fwd", p, in, r, out);
    if (p->n_pairs == 0) return;
    const size_t nT = (size_t)p->n_pairs * r, nA = (size_t)p->E * r * in;
    // xa2[z][p, r] = x_p · A_eᵀ over half z of `in`   (A_e stored [r, in]: the rank kernel's W as is)
    bf16 *A_hl = lora_split_bf16(stream, A, NULL, nA);
    float *xa2 = ot_cuda_tmp<float>(ML_SPLIT * nT, stream);
    rank_reduce(stream, xa2, as_bf16(x), gather ? p->row_token : NULL, in, A_hl, nA, r, 1.0f, p);
    ot_cuda_tmp_free(A_hl, stream);
    if (y) { // y[p, out] += scale · xa_p · B_eᵀ   (B_e stored [out, r]), xa = xa2[0] + xa2[1] kept on the way
        const lora_row_groups groups = lora_plan_groups(p, (size_t)out * r);
        lora_expand(stream, as_bf16(y), xa2, xa2 + nT, r, xa, NULL, B, r, 1, p->n_pairs, out, r, scale, &groups);
    } else if (xa) {
        sum_halves_kernel<<<ot_grid_for(nT, 256), 256, 0, stream>>>(xa, xa2, xa2 + nT, nT);
        OT_LAUNCH_CHECK();
    }
    ot_cuda_tmp_free(xa2, stream);
}

void ot_cuda_moe_lora_bwd(cudaStream_t stream, ot_bf16 *dx_perm, float *dxa, float *dA, float *dB, const ot_bf16 *dy,
                          const ot_bf16 *x, int gather, const float *xa, const float *A, const float *B,
                          const ot_cuda_moe_plan *p, int in, int r, int out, float scale) {
    check("ot_cuda_moe_lora_bwd", p, in, r, out);
    if (p->n_pairs == 0) return;
    const int32_t *rows = gather ? p->row_token : NULL;
    const size_t nT = (size_t)p->n_pairs * r, nB = (size_t)p->E * out * r;
    if (dB) { // dB_e[out, r] += scale · Σ_{p of e} dy[p]ᵀ xa[p]
        bf16 *xa_hl = lora_split_bf16(stream, xa, NULL, nT);
        rows_reduce(stream, dB, r, 1, as_bf16(dy), NULL, out, xa_hl, r, scale, p);
        ot_cuda_tmp_free(xa_hl, stream);
    }
    if (!dA && !dx_perm && !dxa) return;
    // dxa2[z][p, r] = scale · dy_p · B_e over half z of `out`
    bf16 *Bt_hl = ot_cuda_tmp<bf16>(2 * nB, stream);
    split_transposed_kernel<<<ot_grid_for(nB, 256), 256, 0, stream>>>(Bt_hl, nB, B, out, r);
    OT_LAUNCH_CHECK();
    float *dxa2 = ot_cuda_tmp<float>(ML_SPLIT * nT, stream);
    rank_reduce(stream, dxa2, as_bf16(dy), NULL, out, Bt_hl, nB, r, scale, p);
    ot_cuda_tmp_free(Bt_hl, stream);
    bf16 *dxa_hl = dA ? ot_cuda_tmp<bf16>(2 * nT, stream) : NULL;
    if (dx_perm) { // dx_perm[p, in] += dxa_p · A_e   (A_e stored [r, in]); dxa and its split made on the way
        const lora_row_groups groups = lora_plan_groups(p, (size_t)r * in);
        lora_expand(stream, as_bf16(dx_perm), dxa2, dxa2 + nT, r, dxa, dxa_hl, A, 1, in, p->n_pairs, in, r, 1.0f,
                    &groups);
    } else {
        if (dxa_hl) lora_split_bf16_to(stream, dxa_hl, dxa2, dxa2 + nT, nT);
        if (dxa) {
            sum_halves_kernel<<<ot_grid_for(nT, 256), 256, 0, stream>>>(dxa, dxa2, dxa2 + nT, nT);
            OT_LAUNCH_CHECK();
        }
    }
    if (dA) { // dA_e[r, in] += Σ_{p of e} dxa[p]ᵀ x_p
        rows_reduce(stream, dA, 1, in, as_bf16(x), rows, in, dxa_hl, r, 1.0f, p);
        ot_cuda_tmp_free(dxa_hl, stream);
    }
    ot_cuda_tmp_free(dxa2, stream);
}
