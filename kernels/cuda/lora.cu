// LoRA on a dense linear layer (PEFT semantics), GPU: fp32 adapter matrices, bf16 activations, fp32 products.
// xa = x·Aᵀ is kept in fp32 for backward, as the CPU reference keeps it in its element type.
//
// Every product has the rank r (e.g. 16) on one side, so it is thin and memory bound. cuBLAS SGEMM (no TF32: the
// results are checked against the CPU to 1e-4) runs them once the bf16 activations are widened to fp32 (exactly)
// in a temporary; a bf16 result that accumulates (y, dx) gets the fp32 product in a temporary first and is then
// rounded once, bf16(y + product), as the CPU twin does. Measured on an H100 (benchmarks/RESULTS.md): 23.5 ms per
// 20b step for q/k/v/o against 37.2 ms for the fp32 SIMT tiles before, and 53.3 ms for hand-written thin kernels
// that read the bf16 activations directly (row-tile reductions staged through shared memory) — the library wins.
#include "kernels/cuda/lanes.cuh"

static float *widen(cudaStream_t stream, const ot_bf16 *src, size_t n) {
    float *dst = ot_cuda_tmp<float>(n, stream);
    ot_cuda_bf16_to_f32(stream, dst, src, n);
    return dst;
}

// Row-major C[M, N] = alpha · op(A) · op(B) + beta · C, with op(A) M × K and op(B) K × N; `ta`/`tb` say the
// stored array is the transpose ([K, M] / [N, K]). cuBLAS is column-major, where a row-major array is its
// transpose, so this is Cᵀ = op(B)ᵀ · op(A)ᵀ there.
static void rm_sgemm(cublasHandle_t h, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    OT_CUBLAS_CHECK(cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                                ldb, A, lda, &beta, C, ldc));
}

void ot_cuda_lora_fwd(cudaStream_t stream, ot_bf16 *y, float *xa, const ot_bf16 *x, const float *A, const float *B,
                      int T, int in, int r, int out, float scale) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && out > 0, "ot_cuda_lora_fwd: bad sizes T %d in %d r %d out %d", T, in, r,
               out);
    if (!T) return;
    cublasHandle_t h = ot_cuda_thread_blas(stream);
    float *x32 = widen(stream, x, (size_t)T * in);
    rm_sgemm(h, 0, 1, T, r, in, 1.0f, x32, in, A, in, 0.0f, xa, r); // xa[T, r] = x · Aᵀ   (A [r, in])
    ot_cuda_tmp_free(x32, stream);
    float *ya = ot_cuda_tmp<float>((size_t)T * out, stream);
    rm_sgemm(h, 0, 1, T, out, r, scale, xa, r, B, r, 0.0f, ya, out); // scale · xa · Bᵀ   (B [out, r])
    ot_cuda_add_f32_to_bf16(stream, y, ya, (size_t)T * out);
    ot_cuda_tmp_free(ya, stream);
}

void ot_cuda_lora_bwd(cudaStream_t stream, ot_bf16 *dx, float *dA, float *dB, const ot_bf16 *dy, const ot_bf16 *x,
                      const float *xa, const float *A, const float *B, int T, int in, int r, int out, float scale) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && out > 0, "ot_cuda_lora_bwd: bad sizes T %d in %d r %d out %d", T, in, r,
               out);
    if (!T) return;
    cublasHandle_t h = ot_cuda_thread_blas(stream);
    float *dy32 = widen(stream, dy, (size_t)T * out);
    if (dB) rm_sgemm(h, 1, 0, out, r, T, scale, dy32, out, xa, r, 1.0f, dB, r); // dB[out, r] += scale · dyᵀ · xa
    if (!dA && !dx) {
        ot_cuda_tmp_free(dy32, stream);
        return;
    }
    float *dxa = ot_cuda_tmp<float>((size_t)T * r, stream);
    rm_sgemm(h, 0, 0, T, r, out, scale, dy32, out, B, r, 0.0f, dxa, r); // dxa[T, r] = scale · dy · B   (B [out, r])
    ot_cuda_tmp_free(dy32, stream);
    if (dA) { // dA[r, in] += dxaᵀ · x
        float *x32 = widen(stream, x, (size_t)T * in);
        rm_sgemm(h, 1, 0, r, in, T, 1.0f, dxa, r, x32, in, 1.0f, dA, in);
        ot_cuda_tmp_free(x32, stream);
    }
    if (dx) { // dx[T, in] += dxa · A   (A [r, in])
        float *dxp = ot_cuda_tmp<float>((size_t)T * in, stream);
        rm_sgemm(h, 0, 0, T, in, r, 1.0f, dxa, r, A, in, 0.0f, dxp, in);
        ot_cuda_add_f32_to_bf16(stream, dx, dxp, (size_t)T * in);
        ot_cuda_tmp_free(dxp, stream);
    }
    ot_cuda_tmp_free(dxa, stream);
}

