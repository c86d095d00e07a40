// LoRA on a dense linear layer (PEFT semantics), GPU: fp32 adapter matrices, bf16 activations, fp32 products
// (small_gemm.cuh). xa = x·Aᵀ is kept in fp32 for backward, as the CPU reference keeps it in its element type.
#include "kernels/cuda/small_gemm.cuh"

static SgOperand sg_operand(const void *ptr, long ld, int trans) {
    SgOperand o = {ptr, ld, trans, NULL, 0};
    return o;
}

static SgArgs sg_plain(SgOperand a, SgOperand b, void *c, long ldc, int M, int N, int K, float alpha, int accumulate) {
    return sg_args(SG_PLAIN, a, b, c, ldc, M, N, K, alpha, accumulate);
}

void ot_cuda_lora_fwd(cudaStream_t stream, ot_bf16 *y, float *xa, const ot_bf16 *x, const float *A, const float *B,
                      int T, int in, int r, int out, float scale) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && out > 0, "ot_cuda_lora_fwd: bad sizes T %d in %d r %d out %d", T, in, r,
               out);
    if (!T) return;
    // xa[T, r] = x[T, in] · Aᵀ   (A stored [r, in]: op(B)(k, n) = A[n][k]). With r small there are few output
    // tiles, so K is split over blocks that add into a zeroed xa.
    SgArgs g = sg_plain(sg_operand(x, in, 0), sg_operand(A, in, 1), xa, r, T, r, in, 1.0f, 1);
    g.ksplit = sg_ksplit_for(T, r, in);
    if (g.ksplit > 1) OT_CUDA_CHECK(cudaMemsetAsync(xa, 0, (size_t)T * r * sizeof(float), stream));
    else g.accumulate = 0;
    small_gemm<bf16, float, float>(stream, g, 0, 0, "ot_cuda_lora_fwd xa");
    // y[T, out] += scale · xa · Bᵀ   (B stored [out, r])
    small_gemm<float, float, bf16>(stream,
                                   sg_plain(sg_operand(xa, r, 0), sg_operand(B, r, 1), y, out, T, out, r, scale, 1), 0,
                                   0, "ot_cuda_lora_fwd y");
}

void ot_cuda_lora_bwd(cudaStream_t stream, ot_bf16 *dx, float *dA, float *dB, const ot_bf16 *dy, const ot_bf16 *x,
                      const float *xa, const float *A, const float *B, int T, int in, int r, int out, float scale) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && out > 0, "ot_cuda_lora_bwd: bad sizes T %d in %d r %d out %d", T, in, r,
               out);
    if (!T) return;
    if (dB) { // dB[out, r] += scale · dyᵀ · xa   (sum over the T tokens: split K to fill the GPU)
        SgArgs g = sg_plain(sg_operand(dy, out, 1), sg_operand(xa, r, 0), dB, r, out, r, T, scale, 1);
        g.ksplit = sg_ksplit_for(out, r, T);
        small_gemm<bf16, float, float>(stream, g, 0, 0, "ot_cuda_lora_bwd dB");
    }
    if (!dA && !dx) return;
    // dxa[T, r] = scale · dy · B   (B stored [out, r] is already K × N)
    float *dxa = ot_cuda_tmp<float>((size_t)T * r, stream);
    SgArgs gx = sg_plain(sg_operand(dy, out, 0), sg_operand(B, r, 0), dxa, r, T, r, out, scale, 1);
    gx.ksplit = sg_ksplit_for(T, r, out); // few output tiles again: split K into a zeroed dxa
    if (gx.ksplit > 1) OT_CUDA_CHECK(cudaMemsetAsync(dxa, 0, (size_t)T * r * sizeof(float), stream));
    else gx.accumulate = 0;
    small_gemm<bf16, float, float>(stream, gx, 0, 0, "ot_cuda_lora_bwd dxa");
    if (dA) { // dA[r, in] += dxaᵀ · x
        SgArgs g = sg_plain(sg_operand(dxa, r, 1), sg_operand(x, in, 0), dA, in, r, in, T, 1.0f, 1);
        g.ksplit = sg_ksplit_for(r, in, T);
        small_gemm<float, bf16, float>(stream, g, 0, 0, "ot_cuda_lora_bwd dA");
    }
    if (dx) // dx[T, in] += dxa · A   (A stored [r, in] is K × N)
        small_gemm<float, float, bf16>(stream,
                                       sg_plain(sg_operand(dxa, r, 0), sg_operand(A, in, 0), dx, in, T, in, r, 1.0f, 1),
                                       0, 0, "ot_cuda_lora_bwd dx");
    ot_cuda_tmp_free(dxa, stream);
}
