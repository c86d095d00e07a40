// Dense linear layers on the GPU through cuBLASLt (forward, bias fused as an epilogue) and cuBLAS (backward):
// bf16 operands, fp32 accumulation.
//
// cuBLAS is column-major; a row-major [R, C] array is the column-major [C, R] matrix, i.e. its transpose. So
//   y[T, out] = x · Wᵀ       is  yᵀ (out × T) = W_cm ᵀ · x_cm   (W_cm = Wᵀ as stored, in × out; x_cm = xᵀ, in × T)
//   dx[T, in] += dy · W      is  dxᵀ (in × T) += W_cm · dy_cm    (dy_cm = dyᵀ, out × T)
//   dW[out, in] += dyᵀ · x   is  dWᵀ (in × out) += x_cm · dy_cmᵀ
#include <cublasLt.h>
#include <cublas_v2.h>

#include "kernels/cuda/cuda_common.cuh"

#define COLSUM_TOKENS 64 // rows summed by one thread before its atomic add

// y[t, o] += b[o] (the fallback when cuBLASLt offers no algorithm with the bias epilogue)
__global__ void add_bias_kernel(bf16 *y, const bf16 *b, int T, int out) {
    size_t n = (size_t)T * out;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = f2bf(bf2f(y[i]) + bf2f(b[i % out]));
}

// db[o] += Σ_t dy[t, o]
__global__ void colsum_kernel(float *db, const bf16 *dy, int T, int out) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= out) return;
    int t0 = blockIdx.y * COLSUM_TOKENS, t1 = min(T, t0 + COLSUM_TOKENS);
    float acc = 0;
    for (int t = t0; t < t1; t++) acc += bf2f(dy[(size_t)t * out + o]);
    atomicAdd(db + o, acc);
}

// cuBLASLt with the bias epilogue. Returns 0 when Lt has no algorithm for this shape/alignment (odd sizes or
// pointers; the caller then takes the cuBLAS path and adds the bias itself); any other failure is fatal.
static int matmul_fwd_lt(cudaStream_t stream, ot_cuda_blas *blas, bf16 *y, const bf16 *x, const bf16 *W,
                         const bf16 *b, int T, int in, int out) {
    cublasLtHandle_t lt = (cublasLtHandle_t)blas->lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulPreference_t pref;
    OT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    OT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    OT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (b) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS; // bias has one entry per row of D (= out): what we want
        OT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
        OT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof(b)));
    }
    OT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, in, out, in)); // W as stored
    OT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, in, T, in));   // x as stored
    OT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, out, T, out)); // y as stored
    OT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    OT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                         &blas->workspace_size, sizeof(blas->workspace_size)));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &heur, &found);
    if (st != CUBLAS_STATUS_NOT_SUPPORTED) OT_CUBLAS_CHECK(st); // "no algorithm" is fine, a bad argument is not
    int ok = st == CUBLAS_STATUS_SUCCESS && found > 0;
    if (ok) {
        float alpha = 1.0f, beta = 0.0f;
        OT_CUBLAS_CHECK(cublasLtMatmul(lt, op, &alpha, W, la, x, lb, &beta, y, lc, y, lc, &heur.algo, blas->workspace,
                                       blas->workspace_size, stream));
    }
    OT_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    OT_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lc));
    OT_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
    OT_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
    OT_CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
    return ok;
}

void ot_cuda_matmul_fwd(cudaStream_t stream, ot_cuda_blas *blas, ot_bf16 *y, const ot_bf16 *x, const ot_bf16 *W,
                        const ot_bf16 *b, int T, int in, int out) {
    OT_REQUIRE(T >= 0 && in > 0 && out > 0, "ot_cuda_matmul_fwd: bad sizes T %d in %d out %d", T, in, out);
    OT_REQUIRE(blas && blas->lt, "ot_cuda_matmul_fwd: cuBLAS handles not initialised (ot_cuda_blas_init)");
    if (!T) return;
    if (matmul_fwd_lt(stream, blas, as_bf16(y), as_bf16(x), as_bf16(W), as_bf16(b), T, in, out)) return;
    cublasHandle_t h = (cublasHandle_t)blas->blas;
    OT_CUBLAS_CHECK(cublasSetStream(h, stream));
    float alpha = 1.0f, beta = 0.0f;
    OT_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, out, T, in, &alpha, W, CUDA_R_16BF, in, x, CUDA_R_16BF,
                                 in, &beta, y, CUDA_R_16BF, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (b) {
        add_bias_kernel<<<ot_grid_for((size_t)T * out, 256), 256, 0, stream>>>(as_bf16(y), as_bf16(b), T, out);
        OT_LAUNCH_CHECK();
    }
}

void ot_cuda_matmul_bwd(cudaStream_t stream, ot_cuda_blas *blas, ot_bf16 *dx, float *dW, float *db, const ot_bf16 *dy,
                        const ot_bf16 *x, const ot_bf16 *W, int T, int in, int out) {
    OT_REQUIRE(T >= 0 && in > 0 && out > 0, "ot_cuda_matmul_bwd: bad sizes T %d in %d out %d", T, in, out);
    OT_REQUIRE(blas && blas->blas, "ot_cuda_matmul_bwd: cuBLAS handles not initialised (ot_cuda_blas_init)");
    if (!T) return;
    cublasHandle_t h = (cublasHandle_t)blas->blas;
    OT_CUBLAS_CHECK(cublasSetStream(h, stream));
    float one = 1.0f;
    if (dx) // dxᵀ (in × T) += W_cm (in × out) · dy_cm (out × T); beta = 1 accumulates into the bf16 dx
        OT_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, in, T, out, &one, W, CUDA_R_16BF, in, dy,
                                     CUDA_R_16BF, out, &one, dx, CUDA_R_16BF, in, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
    if (dW) // dWᵀ (in × out) += x_cm (in × T) · dy_cmᵀ (T × out), fp32 output
        OT_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, T, &one, x, CUDA_R_16BF, in, dy,
                                     CUDA_R_16BF, out, &one, dW, CUDA_R_32F, in, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
    if (db) {
        OT_REQUIRE(ot_cdiv(T, COLSUM_TOKENS) <= 65535, "ot_cuda_matmul_bwd: T %d too large", T);
        dim3 grid(ot_cdiv(out, 256), ot_cdiv(T, COLSUM_TOKENS));
        colsum_kernel<<<grid, 256, 0, stream>>>(db, as_bf16(dy), T, out);
        OT_LAUNCH_CHECK();
    }
}
