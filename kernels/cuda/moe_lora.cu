// LoRA on the expert projections (PEFT target_parameters), on the permuted rows of the MoE plan: each row tile
// belongs to one expert, so its product uses that expert's A_e [r, in] and B_e [out, r] (fp32, expert-major).
// The products are the fp32 SIMT ones of small_gemm.cuh in its grouped modes.
#include "kernels/cuda/small_gemm.cuh"

static SgOperand op(const void *ptr, long ld, int trans, const int32_t *rowmap, long batch) {
    SgOperand o = {ptr, ld, trans, rowmap, batch};
    return o;
}

// C rows are the permuted rows; per-expert B; the plan's tiles.
static SgArgs grouped_m(const ot_cuda_moe_plan *p, SgOperand a, SgOperand b, void *c, long ldc, int N, int K,
                        float alpha, int accumulate) {
    SgArgs g = sg_args(SG_GROUP_M, a, b, c, ldc, p->n_pairs, N, K, alpha, accumulate);
    g.offsets = p->offsets;
    g.tile_expert = p->tile_expert;
    g.tile_row0 = p->tile_row0;
    return g;
}

// One M × N product per expert summed over that expert's permuted rows; C offset c_batch per expert.
static SgArgs grouped_k(const ot_cuda_moe_plan *p, SgOperand a, SgOperand b, void *c, long ldc, long c_batch, int M,
                        int N, float alpha) {
    SgArgs g = sg_args(SG_GROUP_K, a, b, c, ldc, M, N, 0, alpha, 1);
    g.c_batch = c_batch;
    g.offsets = p->offsets;
    return g;
}

static void check(const char *what, const ot_cuda_moe_plan *p, int in, int r, int out) {
    OT_REQUIRE(p && p->perm, "%s: plan not allocated (ot_cuda_moe_plan_alloc)", what);
    OT_REQUIRE(in > 0 && r > 0 && out > 0, "%s: bad sizes in %d r %d out %d", what, in, r, out);
}

void ot_cuda_moe_lora_fwd(cudaStream_t stream, ot_bf16 *y, float *xa, const ot_bf16 *x, int gather, const float *A,
                          const float *B, const ot_cuda_moe_plan *p, int in, int r, int out, float scale) {
    check("ot_cuda_moe_lora_fwd", p, in, r, out);
    const int32_t *rows = gather ? p->row_token : NULL;
    // xa[p, r] = x_p · A_eᵀ   (A_e stored [r, in]: op(B)(k, n) = A_e[n][k])
    small_gemm<bf16, float, float>(stream,
                                   grouped_m(p, op(x, in, 0, rows, 0), op(A, in, 1, NULL, (long)r * in), xa, r, r, in,
                                             1.0f, 0),
                                   p->n_tiles, 0, "ot_cuda_moe_lora_fwd xa");
    // y[p, out] += scale · xa_p · B_eᵀ   (B_e stored [out, r])
    small_gemm<float, float, bf16>(stream,
                                   grouped_m(p, op(xa, r, 0, NULL, 0), op(B, r, 1, NULL, (long)out * r), y, out, out, r,
                                             scale, 1),
                                   p->n_tiles, 0, "ot_cuda_moe_lora_fwd y");
}

void ot_cuda_moe_lora_bwd(cudaStream_t stream, ot_bf16 *dx_perm, float *dA, float *dB, const ot_bf16 *dy,
                          const ot_bf16 *x, int gather, const float *xa, const float *A, const float *B,
                          const ot_cuda_moe_plan *p, int in, int r, int out, float scale) {
    check("ot_cuda_moe_lora_bwd", p, in, r, out);
    const int32_t *rows = gather ? p->row_token : NULL;
    if (dB) // dB_e[out, r] += scale · Σ_{p of e} dy[p]ᵀ xa[p]
        small_gemm<bf16, float, float>(stream,
                                       grouped_k(p, op(dy, out, 1, NULL, 0), op(xa, r, 0, NULL, 0), dB, r,
                                                 (long)out * r, out, r, scale),
                                       0, p->E, "ot_cuda_moe_lora_bwd dB");
    if (!dA && !dx_perm) return;
    // dxa[p, r] = scale · dy_p · B_e   (B_e stored [out, r] is K × N)
    float *dxa = ot_cuda_tmp<float>((size_t)p->n_pairs * r, stream);
    small_gemm<bf16, float, float>(stream,
                                   grouped_m(p, op(dy, out, 0, NULL, 0), op(B, r, 0, NULL, (long)out * r), dxa, r, r,
                                             out, scale, 0),
                                   p->n_tiles, 0, "ot_cuda_moe_lora_bwd dxa");
    if (dA) // dA_e[r, in] += Σ_{p of e} dxa[p]ᵀ x_p
        small_gemm<float, bf16, float>(stream,
                                       grouped_k(p, op(dxa, r, 1, NULL, 0), op(x, in, 0, rows, 0), dA, in, (long)r * in,
                                                 r, in, 1.0f),
                                       0, p->E, "ot_cuda_moe_lora_bwd dA");
    if (dx_perm) // dx_perm[p, in] += dxa_p · A_e   (A_e stored [r, in] is K × N)
        small_gemm<float, float, bf16>(stream,
                                       grouped_m(p, op(dxa, r, 0, NULL, 0), op(A, in, 0, NULL, (long)r * in), dx_perm, in,
                                                 in, r, 1.0f, 1),
                                       p->n_tiles, 0, "ot_cuda_moe_lora_bwd dx");
    ot_cuda_tmp_free(dxa, stream);
}
