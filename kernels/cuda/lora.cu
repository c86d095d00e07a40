// LoRA on a dense linear layer (PEFT semantics), GPU: fp32 adapter matrices, bf16 activations, fp32 products.
// xa = x·Aᵀ is kept in fp32 for backward, as the CPU reference keeps it in its element type.
//
// Every product has the rank r (e.g. 16) on one side, so it is thin and memory bound: what costs is how often the
// big [T, in] / [T, out] activations cross the memory bus, not the arithmetic. Two kinds of product:
//
//  * Reductions to rank r (xa = x·Aᵀ, dxa = dy·B, dA = dxaᵀ·x, dB = dyᵀ·xa) read a bf16 activation and a small fp32
//    matrix. They run on cuBLAS's bf16 tensor-core GEMMs straight on the bf16 activation (no widened fp32 copy),
//    with the fp32 operand split into two bf16 parts, v = hi + lo (hi = bf16(v), lo = bf16(v − hi)): the product
//    is the sum of two products, made by one batched GEMM call (the two partial sums are added where they are
//    used; for the weight gradients, once per step: ot_cuda_lora_fold). hi + lo carries 16 of fp32's 24
//    significant bits, the activation side is exact in bf16, products and sums are fp32, so the result matches the
//    fp32 reference to ~1e-5 relative (checked to 1e-4 against the CPU twin in tests/gpu/test_ops_cuda.c).
//  * Expansions from rank r (y += scale·xa·Bᵀ, dx += dxa·A) write a bf16 activation: one kernel reads the old
//    value, adds the fp32 r-term dot product and rounds once, bf16(y + product), as the CPU twin does — one read
//    and one write of the activation, no fp32 temporary.
//
// History (benchmarks/RESULTS.md): fp32 SIMT tiles 37.2 ms per 20b step for q/k/v/o on an H100; hand-written
// thin reduction kernels 53.3 ms; cuBLAS SGEMM on activations widened to fp32 23.5 ms (22.7 on an H200).
#include "kernels/cuda/lanes.cuh"
#include "kernels/cuda/lora.cuh"

// ---- fp32 → bf16 hi + lo (store_hi_lo: lora.cuh) -------------------------------------------------------------
// src (plus src2 where given: the two partial sums a pair of products leaves) split into hi and lo.
__global__ void split_bf16_kernel(bf16 *hi, bf16 *lo, const float *src, const float *src2, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        store_hi_lo(hi + i, lo + i, src2 ? src[i] + src2[i] : src[i]);
}

void lora_split_bf16_to(cudaStream_t stream, bf16 *hl, const float *src, const float *src2, size_t n) {
    split_bf16_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(hl, hl + n, src, src2, n);
    OT_LAUNCH_CHECK();
}

bf16 *lora_split_bf16(cudaStream_t stream, const float *src, const float *src2, size_t n) {
    bf16 *hl = ot_cuda_tmp<bf16>(2 * n, stream);
    lora_split_bf16_to(stream, hl, src, src2, n);
    return hl;
}

// Adapters' A and B split once per pass (their values change only at the optimizer step), segment by segment:
// seg holds n_seg device triples (offset in params, offset in hl, count); lo parts hl_stride after the hi parts;
// copy (optional) gets the fp32 values in hl's layout.
__global__ void lora_split_params_kernel(bf16 *hl, size_t hl_stride, float *copy, const float *params,
                                         const size_t *seg) {
    const size_t src = seg[3 * blockIdx.y], dst = seg[3 * blockIdx.y + 1], n = seg[3 * blockIdx.y + 2];
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = params[src + i];
        if (copy) copy[dst + i] = v;
        store_hi_lo(hl + dst + i, hl + hl_stride + dst + i, v);
    }
}

// The grid of a kernel over n_seg segments of at most max_n elements: one row of blocks per segment.
static dim3 segment_grid(const char *op, int n_seg, size_t max_n) {
    OT_REQUIRE(n_seg <= 65535, "%s: %d segments is too many", op, n_seg);
    unsigned bx = ot_cdiv(max_n, 256 * 8);
    return dim3(bx > 64 ? 64 : bx, n_seg);
}

void ot_cuda_lora_split_params(cudaStream_t stream, ot_bf16 *hl, size_t hl_stride, float *copy, const float *params,
                               const size_t *seg, int n_seg, size_t max_n) {
    if (n_seg <= 0 || max_n == 0) return;
    lora_split_params_kernel<<<segment_grid("ot_cuda_lora_split_params", n_seg, max_n), 256, 0, stream>>>(
        as_bf16(hl), hl_stride, copy, params, seg);
    OT_LAUNCH_CHECK();
}

// ---- reductions to rank r: cuBLAS bf16 GEMMs into fp32 -------------------------------------------------------------
// Products in one batched call: C_b = alpha · op(A_b) · op(B_b) + beta · C_b, b < batches, A_b = A + b·sa (sa = 0:
// all use A), likewise B, C. Row-major, A and B bf16, C fp32; `ta`/`tb` say the stored array is the transpose
// ([K, M] / [N, K]). cuBLAS is column-major, where a row-major array is its transpose, so this is
// C_bᵀ = op(B_b)ᵀ · op(A_b)ᵀ there.
static void rm_gemm_batched(cublasHandle_t h, int ta, int tb, int M, int N, int K, float alpha, const bf16 *A,
                            int lda, long long sa, const bf16 *B, int ldb, long long sb, float beta, float *C, int ldc,
                            long long sc, int batches) {
    OT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
                                               K, &alpha, B, CUDA_R_16BF, ldb, sb, A, CUDA_R_16BF, lda, sa, &beta, C,
                                               CUDA_R_32F, ldc, sc, batches, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The pair of products a split operand makes (b = 0: hi, 1: lo), one launch instead of two.
static void rm_gemm_pair(cublasHandle_t h, int ta, int tb, int M, int N, int K, float alpha, const bf16 *A, int lda,
                         long long sa, const bf16 *B, int ldb, long long sb, float beta, float *C, int ldc,
                         long long sc) {
    rm_gemm_batched(h, ta, tb, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, 2);
}

// ---- the low parts of the weight gradients ---------------------------------------------------------------------
// A weight gradient dW += op(hi)·(…) + op(lo)·(…) takes both products in one batched call only if they write to
// different places (the batches run at once): the hi product accumulates into dW, the lo product into a second
// array placed after it in memory (the batch stride must be positive), added into dW later (ot_cuda_lora_fold) —
// per step, not per product. Without one (dW_lo NULL) the lo product goes to a temporary added at once.
// seg: n_seg triples (offset in g, offset in lo, count); NULL: one segment (0, 0, max_n). lo2_stride: a second
// low region that far after the first (0: none).
__global__ void lora_fold_kernel(float *g, float *lo, size_t lo2_stride, const size_t *seg, size_t max_n) {
    const size_t dst = seg ? seg[3 * blockIdx.y] : 0, src = seg ? seg[3 * blockIdx.y + 1] : 0,
                 n = seg ? seg[3 * blockIdx.y + 2] : max_n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = lo[src + i];
        lo[src + i] = 0.0f;
        if (lo2_stride) {
            v += lo[lo2_stride + src + i];
            lo[lo2_stride + src + i] = 0.0f;
        }
        g[dst + i] += v;
    }
}

void ot_cuda_lora_fold(cudaStream_t stream, float *g, float *lo, size_t lo2_stride, const size_t *seg, int n_seg,
                       size_t max_n) {
    if (n_seg <= 0 || max_n == 0) return;
    lora_fold_kernel<<<segment_grid("ot_cuda_lora_fold", n_seg, max_n), 256, 0, stream>>>(g, lo, lo2_stride, seg,
                                                                                          max_n);
    OT_LAUNCH_CHECK();
}

// The weight-gradient pair: the hi product accumulates into dW, the lo product into dW_lo (one batched call), or
// without dW_lo into dW as well (two calls: a batch stride from dW to a temporary could be negative or huge). The
// split operand is A (split_is_a) or B, its lo part n_split elements after its hi part.
static void weight_grad_pair(cublasHandle_t h, int ta, int tb, int M, int N, int K, float alpha, const bf16 *A,
                             int lda, const bf16 *B, int ldb, int split_is_a, size_t n_split, float *dW,
                             float *dW_lo) {
    const long long ss = (long long)n_split;
    if (dW_lo) {
        OT_REQUIRE(dW_lo > dW, "LoRA: the low-part gradient array must lie after the gradient in memory");
        rm_gemm_pair(h, ta, tb, M, N, K, alpha, A, lda, split_is_a ? ss : 0, B, ldb, split_is_a ? 0 : ss, 1.0f, dW,
                     N, (long long)(dW_lo - dW));
        return;
    }
    for (int part = 0; part < 2; part++) // one product at a time, both accumulating into dW
        rm_gemm_batched(h, ta, tb, M, N, K, alpha, split_is_a ? A + part * n_split : A, lda, 0,
                        split_is_a ? B : B + part * n_split, ldb, 0, 1.0f, dW, N, 0, 1);
}

// ---- expansions from rank r ---------------------------------------------------------------------------------------
// y[t, o] = bf16(y[t, o] + scale · Σ_j u[t, j] · W(o, j)) (lora.cuh). The blocks of the first column tile also
// store u itself in u_out and its bf16 hi / lo parts in u_hl / u_hl + T·u_ld (rows u_ld apart; what the weight
// gradients' products take). Memory bound (the activation is read and written once; r is small), so a block takes
// 32 rows × 256 columns, each thread 8 adjacent columns (one 16-byte load and store of bf16 where the row allows)
// of 4 rows; r goes through shared memory 16 at a time, and each weight tile serves 32 rows. With row groups (the
// expert LoRA) each plan tile of 64 rows is two blocks' rows, and the block's expert picks W.
#define EXP_ROWS 32
#define EXP_COLS 256
#define EXP_RC 16
#define EXP_THREADS 256
#define EXP_TX (EXP_COLS / 8)           // 32 threads across the columns
#define EXP_TY (EXP_THREADS / EXP_TX)   // 8 across the rows
#define EXP_RPT (EXP_ROWS / EXP_TY)     // rows per thread: 4
#define EXP_PER_TILE (OT_CUDA_MOE_TILE_ROWS / EXP_ROWS) // blocks per plan tile (row groups)
__global__ void __launch_bounds__(EXP_THREADS)
    lora_expand_kernel(bf16 *y, const float *u0, const float *u1, int u_ld, float *u_out, bf16 *u_hl,
                       const float *W, size_t w_so, size_t w_sj, int T, int n, int r, float scale,
                       lora_row_groups groups) {
    __shared__ float Us[EXP_ROWS][EXP_RC + 1];
    __shared__ __align__(16) float Ws[EXP_RC][EXP_COLS];
    const int o0 = blockIdx.x * EXP_COLS;
    int t0 = blockIdx.y * EXP_ROWS, t_end = T; // this block's rows: t0 .. t_end-1 (at most EXP_ROWS)
    if (groups.tile_expert) {
        const int tile = blockIdx.y / EXP_PER_TILE, e = groups.tile_expert[tile];
        if (e < 0) return; // a spare tile: the whole block leaves before any barrier
        t0 = groups.tile_row0[tile] + (blockIdx.y % EXP_PER_TILE) * EXP_ROWS;
        t_end = min(groups.tile_row0[tile] + OT_CUDA_MOE_TILE_ROWS, groups.offsets[e + 1]);
        if (t0 >= t_end) return;
        W += (size_t)e * groups.w_batch;
    }
    t_end = min(t_end, t0 + EXP_ROWS);
    const int tid = threadIdx.x, tx = tid % EXP_TX, ty = tid / EXP_TX;
    float acc[EXP_RPT][8];
#pragma unroll
    for (int i = 0; i < EXP_RPT; i++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[i][c] = 0.0f;

    for (int j0 = 0; j0 < r; j0 += EXP_RC) {
        for (int i = tid; i < EXP_ROWS * EXP_RC; i += EXP_THREADS) {
            int tr = i / EXP_RC, jj = i % EXP_RC, t = t0 + tr, j = j0 + jj;
            float v = 0.0f;
            if (t < t_end && j < r) {
                size_t k = (size_t)t * u_ld + j;
                v = u1 ? u0[k] + u1[k] : u0[k];
                if (blockIdx.x == 0) {
                    if (u_out) u_out[k] = v;
                    if (u_hl) store_hi_lo(u_hl + k, u_hl + (size_t)T * u_ld + k, v);
                }
            }
            Us[tr][jj] = v;
        }
        for (int i = tid; i < EXP_RC * EXP_COLS; i += EXP_THREADS) {
            // consecutive threads take consecutive j for a row of B ([out, r]) and consecutive o for A ([r, in])
            int jj, oc;
            if (w_sj == 1) jj = i % EXP_RC, oc = i / EXP_RC;
            else jj = i / EXP_COLS, oc = i % EXP_COLS;
            int o = o0 + oc, j = j0 + jj;
            Ws[jj][oc] = (o < n && j < r) ? W[(size_t)o * w_so + (size_t)j * w_sj] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int jj = 0; jj < EXP_RC; jj++) {
            const float4 wa = *reinterpret_cast<const float4 *>(&Ws[jj][8 * tx]);
            const float4 wb = *reinterpret_cast<const float4 *>(&Ws[jj][8 * tx + 4]);
            const float w[8] = {wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w};
#pragma unroll
            for (int i = 0; i < EXP_RPT; i++) {
                const float uv = Us[ty + EXP_TY * i][jj];
#pragma unroll
                for (int c = 0; c < 8; c++) acc[i][c] += uv * w[c];
            }
        }
        __syncthreads();
    }
    const int o = o0 + 8 * tx;
    if (o >= n) return;
    const bool vec = o + 8 <= n && n % 8 == 0 && ((uintptr_t)y & 15u) == 0; // whole aligned 16-byte pieces
#pragma unroll
    for (int i = 0; i < EXP_RPT; i++) {
        int t = t0 + ty + EXP_TY * i;
        if (t >= t_end) break;
        bf16 *d = y + (size_t)t * n + o;
        if (vec) {
            uint4 old = *reinterpret_cast<const uint4 *>(d);
            const uint32_t ow[4] = {old.x, old.y, old.z, old.w};
            uint32_t nw[4];
#pragma unroll
            for (int q = 0; q < 4; q++)
                nw[q] = pack_bf16x2(__uint_as_float(ow[q] << 16) + scale * acc[i][2 * q],
                                    __uint_as_float(ow[q] & 0xffff0000u) + scale * acc[i][2 * q + 1]);
            *reinterpret_cast<uint4 *>(d) = make_uint4(nw[0], nw[1], nw[2], nw[3]);
        } else {
#pragma unroll
            for (int c = 0; c < 8; c++)
                if (o + c < n) d[c] = f2bf(bf2f(d[c]) + scale * acc[i][c]);
        }
    }
}

void lora_expand(cudaStream_t stream, bf16 *y, const float *u0, const float *u1, int u_ld, float *u_out, bf16 *u_hl,
                 const float *W, size_t w_so, size_t w_sj, int T, int n, int r, float scale,
                 const lora_row_groups *groups) {
    lora_row_groups g = {NULL, NULL, NULL, 0, 0};
    if (groups) g = *groups;
    const size_t blocks_y = groups ? (size_t)g.n_tiles * EXP_PER_TILE : ot_cdiv(T, EXP_ROWS);
    OT_REQUIRE(blocks_y <= 65535, "lora_expand: %zu row blocks (T %d) is too many", blocks_y, T);
    if (!blocks_y || !n) return;
    dim3 grid(ot_cdiv(n, EXP_COLS), (unsigned)blocks_y);
    lora_expand_kernel<<<grid, EXP_THREADS, 0, stream>>>(y, u0, u1, u_ld, u_out, u_hl, W, w_so, w_sj, T, n, r,
                                                         scale, g);
    OT_LAUNCH_CHECK();
}

// ---- the layer ------------------------------------------------------------------------------------------------------
// A split operand: the given hi / lo parts (lo `stride` elements after hi), else a temporary split of src.
typedef struct {
    const bf16 *hl;
    long long stride;
    bf16 *tmp;
} split_operand;

static split_operand operand_split(cudaStream_t stream, const ot_bf16 *given, size_t given_stride, const float *src,
                                   size_t n) {
    split_operand o = {as_bf16(given), (long long)given_stride, NULL};
    if (!given) o.hl = o.tmp = lora_split_bf16(stream, src, NULL, n), o.stride = (long long)n;
    return o;
}

static void check_group(const char *op, const ot_cuda_lora_w *w, int T, int in, int r) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && w->n >= 1 && w->n <= OT_LORA_GROUP_MAX,
               "%s: bad sizes T %d in %d r %d, %d projections", op, T, in, r, w->n);
    for (int i = 0; i < w->n; i++) OT_REQUIRE(w->out[i] > 0, "%s: projection %d has %d outputs", op, i, w->out[i]);
}

void ot_cuda_lora_fwd(cudaStream_t stream, ot_bf16 *const *y, float *xa, ot_bf16 *xa_hl, const ot_bf16 *x,
                      const ot_cuda_lora_w *w, int T, int in, int r, float scale) {
    check_group("ot_cuda_lora_fwd", w, T, in, r);
    if (!T) return;
    cublasHandle_t h = ot_cuda_thread_blas(stream);
    const int nr = w->n * r;
    const size_t nT = (size_t)T * nr;
    split_operand A2 = operand_split(stream, w->A_hl, w->hl_stride, w->A, (size_t)nr * in);
    // xa2[b][T, n·r] = x · A_bᵀ   (the A's stacked [n·r, in]; b = hi, lo): xa = xa2[0] + xa2[1], summed by the
    // expansions; one product for the whole group
    float *xa2 = ot_cuda_tmp<float>(2 * nT, stream);
    rm_gemm_pair(h, 0, 1, T, nr, in, 1.0f, as_bf16(x), in, 0, A2.hl, in, A2.stride, 0.0f, xa2, nr, (long long)nT);
    if (A2.tmp) ot_cuda_tmp_free(A2.tmp, stream);
    for (int i = 0; i < w->n; i++) // y_i += scale · xa_i · B_iᵀ   (B_i [out_i, r]); xa and its split kept
        lora_expand(stream, as_bf16(y[i]), xa2 + i * r, xa2 + nT + i * r, nr, xa ? xa + i * r : NULL,
                    xa_hl ? as_bf16(xa_hl) + i * r : NULL, w->B[i], r, 1, T, w->out[i], r, scale, NULL);
    ot_cuda_tmp_free(xa2, stream);
}

void ot_cuda_lora_bwd(cudaStream_t stream, ot_bf16 *dx, const ot_bf16 *const *dy, const ot_bf16 *x, const float *xa,
                      const ot_bf16 *xa_hl, const ot_cuda_lora_w *w, int T, int in, int r, float scale) {
    check_group("ot_cuda_lora_bwd", w, T, in, r);
    if (!T) return;
    cublasHandle_t h = ot_cuda_thread_blas(stream);
    const int nr = w->n * r;
    const size_t nT = (size_t)T * nr;
    int want_dB = 0;
    for (int i = 0; i < w->n; i++) want_dB |= w->dB[i] != NULL;
    if (want_dB) { // dB_i[out_i, r] += scale · dy_iᵀ · xa_i
        split_operand xa2 = operand_split(stream, xa_hl, nT, xa, nT);
        for (int i = 0; i < w->n; i++)
            if (w->dB[i])
                weight_grad_pair(h, 1, 0, w->out[i], r, T, scale, as_bf16(dy[i]), w->out[i], xa2.hl + i * r, nr, 0,
                                 (size_t)xa2.stride, w->dB[i], w->dB_lo[i]);
        if (xa2.tmp) ot_cuda_tmp_free(xa2.tmp, stream);
    }
    if (!w->dA && !dx) return;
    // dxa2[b][T, n·r]: columns i·r.. = scale · dy_i · B_i,b   (B_i [out_i, r]; b = hi, lo); dxa = dxa2[0] + dxa2[1]
    float *dxa2 = ot_cuda_tmp<float>(2 * nT, stream);
    for (int i = 0; i < w->n; i++) {
        const int out = w->out[i];
        split_operand B2 = operand_split(stream, w->B_hl[i], w->hl_stride, w->B[i], (size_t)out * r);
        rm_gemm_pair(h, 0, 0, T, r, out, scale, as_bf16(dy[i]), out, 0, B2.hl, r, B2.stride, 0.0f, dxa2 + i * r, nr,
                     (long long)nT);
        if (B2.tmp) ot_cuda_tmp_free(B2.tmp, stream);
    }
    bf16 *dxa_hl = w->dA ? ot_cuda_tmp<bf16>(2 * nT, stream) : NULL;
    if (dx) // dx += Σ_i dxa_i · A_i = dxa · A (A stacked [n·r, in]): one expansion; dxa's split made on the way
        lora_expand(stream, as_bf16(dx), dxa2, dxa2 + nT, nr, NULL, dxa_hl, w->A, 1, in, T, in, nr, 1.0f, NULL);
    else
        lora_split_bf16_to(stream, dxa_hl, dxa2, dxa2 + nT, nT);
    if (w->dA) { // dA[n·r, in] += dxaᵀ · x: one product for the whole group
        weight_grad_pair(h, 1, 0, nr, in, T, 1.0f, dxa_hl, nr, as_bf16(x), in, 1, nT, w->dA, w->dA_lo);
        ot_cuda_tmp_free(dxa_hl, stream);
    }
    ot_cuda_tmp_free(dxa2, stream);
}
