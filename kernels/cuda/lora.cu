// LoRA on a dense linear layer (PEFT semantics), GPU: fp32 adapter matrices, bf16 activations, fp32 products.
// xa = x·Aᵀ is kept in fp32 for backward, as the CPU reference keeps it in its element type.
//
// Every product has the rank r (e.g. 16) on one side, so it is thin and memory bound: what costs is how often the
// big [T, in] / [T, out] activations cross the memory bus, not the arithmetic. Two kinds of product:
//
//  * Reductions to rank r (xa = x·Aᵀ, dxa = dy·B, dA = dxaᵀ·x, dB = dyᵀ·xa) read a bf16 activation and a small fp32
//    matrix. They run on cuBLAS's bf16 tensor-core GEMMs straight on the bf16 activation (no widened fp32 copy),
//    with the fp32 operand split into two bf16 parts, v = hi + lo (hi = bf16(v), lo = bf16(v − hi)): the product
//    is the sum of two GEMMs into the same fp32 result. hi + lo carries 16 of fp32's 24 significant bits, the
//    activation side is exact in bf16, products and sums are fp32, so the result matches the fp32 reference to
//    ~1e-5 relative (checked to 1e-4 against the CPU twin in tests/gpu/test_ops_cuda.c).
//  * Expansions from rank r (y += scale·xa·Bᵀ, dx += dxa·A) write a bf16 activation: one kernel reads the old
//    value, adds the fp32 r-term dot product and rounds once, bf16(y + product), as the CPU twin does — one read
//    and one write of the activation, no fp32 temporary.
//
// History (benchmarks/RESULTS.md): fp32 SIMT tiles 37.2 ms per 20b step for q/k/v/o on an H100; hand-written
// thin reduction kernels 53.3 ms; cuBLAS SGEMM on activations widened to fp32 23.5 ms (22.7 on an H200).
#include "kernels/cuda/lanes.cuh"

// ---- fp32 → bf16 hi + lo ----------------------------------------------------------------------------------------
__global__ void split_bf16_kernel(bf16 *hi, bf16 *lo, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = src[i];
        bf16 h = f2bf(v);
        hi[i] = h;
        lo[i] = f2bf(v - bf2f(h)); // exact difference (v and h share the exponent range); rounded once
    }
}

// A temporary [2, n] bf16 array holding hi then lo of src[n].
static bf16 *split_bf16(cudaStream_t stream, const float *src, size_t n) {
    bf16 *hl = ot_cuda_tmp<bf16>(2 * n, stream);
    split_bf16_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(hl, hl + n, src, n);
    OT_LAUNCH_CHECK();
    return hl;
}

// ---- reductions to rank r: cuBLAS bf16 GEMMs into fp32 -------------------------------------------------------------
// Row-major C[M, N] = alpha · op(A) · op(B) + beta · C, A and B bf16, C fp32; `ta`/`tb` say the stored array is
// the transpose ([K, M] / [N, K]). cuBLAS is column-major, where a row-major array is its transpose, so this is
// Cᵀ = op(B)ᵀ · op(A)ᵀ there.
static void rm_gemm(cublasHandle_t h, int ta, int tb, int M, int N, int K, float alpha, const bf16 *A, int lda,
                    const bf16 *B, int ldb, float beta, float *C, int ldc) {
    OT_CUBLAS_CHECK(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                                 B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc,
                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The same with one operand given as hi/lo parts (split_bf16; `split_is_b` says which side): two GEMMs, the second
// accumulating. The lo part of the pair sits `n_split` elements after hi.
static void rm_gemm_split(cublasHandle_t h, int ta, int tb, int M, int N, int K, float alpha, const bf16 *A, int lda,
                          const bf16 *B, int ldb, float beta, float *C, int ldc, int split_is_b, size_t n_split) {
    rm_gemm(h, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (split_is_b)
        rm_gemm(h, ta, tb, M, N, K, alpha, A, lda, B + n_split, ldb, 1.0f, C, ldc);
    else
        rm_gemm(h, ta, tb, M, N, K, alpha, A + n_split, lda, B, ldb, 1.0f, C, ldc);
}

// ---- expansions from rank r ---------------------------------------------------------------------------------------
// y[t, o] = bf16(y[t, o] + scale · Σ_j u[t, j] · W(o, j)), u [T, r] fp32 row-major, W(o, j) = W[o·w_so + j·w_sj]
// fp32 (so B [out, r] and A [r, in] both serve without a transpose). Memory bound (the activation is read and
// written once; r is small), so a block takes 64 rows × 256 columns, each thread 8 adjacent columns (one 16-byte
// load and store of bf16 where the row allows) of 8 rows; r goes through shared memory 16 at a time, and each
// weight tile serves 64 rows.
#define EXP_ROWS 64
#define EXP_COLS 256
#define EXP_RC 16
#define EXP_THREADS 256
#define EXP_TX (EXP_COLS / 8)           // 32 threads across the columns
#define EXP_TY (EXP_THREADS / EXP_TX)   // 8 across the rows
#define EXP_RPT (EXP_ROWS / EXP_TY)     // rows per thread: 8
__global__ void __launch_bounds__(EXP_THREADS)
    lora_expand_kernel(bf16 *y, const float *u, const float *W, size_t w_so, size_t w_sj, int T, int n, int r,
                       float scale) {
    __shared__ float Us[EXP_ROWS][EXP_RC + 1];
    __shared__ __align__(16) float Ws[EXP_RC][EXP_COLS];
    const int t0 = blockIdx.y * EXP_ROWS, o0 = blockIdx.x * EXP_COLS;
    const int tid = threadIdx.x, tx = tid % EXP_TX, ty = tid / EXP_TX;
    float acc[EXP_RPT][8];
#pragma unroll
    for (int i = 0; i < EXP_RPT; i++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[i][c] = 0.0f;

    for (int j0 = 0; j0 < r; j0 += EXP_RC) {
        for (int i = tid; i < EXP_ROWS * EXP_RC; i += EXP_THREADS) {
            int tr = i / EXP_RC, jj = i % EXP_RC, t = t0 + tr, j = j0 + jj;
            Us[tr][jj] = (t < T && j < r) ? u[(size_t)t * r + j] : 0.0f;
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
        if (t >= T) break;
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

static void lora_expand(cudaStream_t stream, bf16 *y, const float *u, const float *W, size_t w_so, size_t w_sj, int T,
                        int n, int r, float scale) {
    OT_REQUIRE(ot_cdiv(T, EXP_ROWS) <= 65535, "lora_expand: T %d too large", T);
    dim3 grid(ot_cdiv(n, EXP_COLS), ot_cdiv(T, EXP_ROWS));
    lora_expand_kernel<<<grid, EXP_THREADS, 0, stream>>>(y, u, W, w_so, w_sj, T, n, r, scale);
    OT_LAUNCH_CHECK();
}

// ---- the layer ------------------------------------------------------------------------------------------------------
void ot_cuda_lora_fwd(cudaStream_t stream, ot_bf16 *y, float *xa, const ot_bf16 *x, const float *A, const float *B,
                      int T, int in, int r, int out, float scale) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && out > 0, "ot_cuda_lora_fwd: bad sizes T %d in %d r %d out %d", T, in, r,
               out);
    if (!T) return;
    cublasHandle_t h = ot_cuda_thread_blas(stream);
    const size_t nA = (size_t)r * in;
    bf16 *A2 = split_bf16(stream, A, nA);
    // xa[T, r] = x · Aᵀ   (A [r, in])
    rm_gemm_split(h, 0, 1, T, r, in, 1.0f, as_bf16(x), in, A2, in, 0.0f, xa, r, 1, nA);
    ot_cuda_tmp_free(A2, stream);
    lora_expand(stream, as_bf16(y), xa, B, r, 1, T, out, r, scale); // y += scale · xa · Bᵀ   (B [out, r])
}

void ot_cuda_lora_bwd(cudaStream_t stream, ot_bf16 *dx, float *dA, float *dB, const ot_bf16 *dy, const ot_bf16 *x,
                      const float *xa, const float *A, const float *B, int T, int in, int r, int out, float scale) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && out > 0, "ot_cuda_lora_bwd: bad sizes T %d in %d r %d out %d", T, in, r,
               out);
    if (!T) return;
    cublasHandle_t h = ot_cuda_thread_blas(stream);
    const size_t nTr = (size_t)T * r;
    if (dB) { // dB[out, r] += scale · dyᵀ · xa
        bf16 *xa2 = split_bf16(stream, xa, nTr);
        rm_gemm_split(h, 1, 0, out, r, T, scale, as_bf16(dy), out, xa2, r, 1.0f, dB, r, 1, nTr);
        ot_cuda_tmp_free(xa2, stream);
    }
    if (!dA && !dx) return;
    float *dxa = ot_cuda_tmp<float>(nTr, stream);
    { // dxa[T, r] = scale · dy · B   (B [out, r])
        const size_t nB = (size_t)out * r;
        bf16 *B2 = split_bf16(stream, B, nB);
        rm_gemm_split(h, 0, 0, T, r, out, scale, as_bf16(dy), out, B2, r, 0.0f, dxa, r, 1, nB);
        ot_cuda_tmp_free(B2, stream);
    }
    if (dA) { // dA[r, in] += dxaᵀ · x
        bf16 *dxa2 = split_bf16(stream, dxa, nTr);
        rm_gemm_split(h, 1, 0, r, in, T, 1.0f, dxa2, r, as_bf16(x), in, 1.0f, dA, in, 0, nTr);
        ot_cuda_tmp_free(dxa2, stream);
    }
    if (dx) lora_expand(stream, as_bf16(dx), dxa, A, 1, in, T, in, r, 1.0f); // dx += dxa · A   (A [r, in])
    ot_cuda_tmp_free(dxa, stream);
}
