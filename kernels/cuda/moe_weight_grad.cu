// Full training: the weight gradient of the dense (bf16) expert projections, all experts in one launch.
// CPU twin: ot_expert_matmul_bwd_weight (kernels/cpu/experts.c), applied to each expert's group of permuted rows.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/ops.h" // OT_EXPERT_DENSE

#define WG_TILE 32 // a block computes a 32 × 32 tile of one expert's dW; 32 × 8 threads, 4 outputs per thread
#define WG_ROWS 32 // permuted rows staged in shared memory per pass

// dW_e[r, c] += Σ_{p in expert e} dy[p, r] · x_p[c], summed in fp32 over the group's rows in permuted order, one
// thread per output: no atomics, so the result is the same on every run. blockIdx.z is the expert; the grid covers
// every expert's full [rows, cols] tile set (an expert with no rows adds nothing). db_e[r] (optional) is summed by
// the blocks of the first column tile.
__global__ void moe_weight_grad_kernel(float *dW, float *db, const bf16 *dy, const bf16 *x, int gather,
                                       const int32_t *offsets, const int32_t *row_token, int rows, int cols) {
    __shared__ float s_dy[WG_ROWS][WG_TILE + 1];
    __shared__ float s_x[WG_ROWS][WG_TILE + 1];
    const int e = blockIdx.z, r0 = blockIdx.y * WG_TILE, c0 = blockIdx.x * WG_TILE;
    const int tx = threadIdx.x, ty = threadIdx.y; // tx: column in tile, ty: 4 rows ty, ty+8, ty+16, ty+24
    const int p0 = offsets[e], p1 = offsets[e + 1];
    float acc[4] = {0, 0, 0, 0}, bacc = 0;
    for (int pb = p0; pb < p1; pb += WG_ROWS) {
        for (int i = ty; i < WG_ROWS; i += blockDim.y) {
            int p = pb + i;
            int r = r0 + tx, c = c0 + tx;
            s_dy[i][tx] = (p < p1 && r < rows) ? bf2f(dy[(size_t)p * rows + r]) : 0.0f;
            size_t xrow = p < p1 ? (size_t)(gather ? row_token[p] : p) : 0;
            s_x[i][tx] = (p < p1 && c < cols) ? bf2f(x[xrow * cols + c]) : 0.0f;
        }
        __syncthreads();
        for (int i = 0; i < WG_ROWS; i++) {
            float xv = s_x[i][tx];
            for (int j = 0; j < 4; j++) acc[j] += s_dy[i][ty + 8 * j] * xv;
        }
        if (db && blockIdx.x == 0 && ty == 0)
            for (int i = 0; i < WG_ROWS; i++) bacc += s_dy[i][tx];
        __syncthreads();
    }
    for (int j = 0; j < 4; j++) {
        int r = r0 + ty + 8 * j, c = c0 + tx;
        if (r < rows && c < cols) dW[((size_t)e * rows + r) * cols + c] += acc[j];
    }
    if (db && blockIdx.x == 0 && ty == 0 && r0 + tx < rows) db[(size_t)e * rows + r0 + tx] += bacc;
}

void ot_cuda_moe_matmul_bwd_weight(cudaStream_t stream, float *dW, float *db, const ot_bf16 *dy, const ot_bf16 *x,
                                   int gather, const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p) {
    OT_REQUIRE(W->kind == OT_EXPERT_DENSE,
               "ot_cuda_moe_matmul_bwd_weight: only dense (bf16) experts are trainable; kind %d (MXFP4 stays frozen)",
               W->kind);
    OT_REQUIRE(W->n_experts == p->E && W->rows > 0 && W->cols > 0,
               "ot_cuda_moe_matmul_bwd_weight: %d experts of [%d, %d] for a plan of %d experts", W->n_experts, W->rows,
               W->cols, p->E);
    if (!dW && !db) return;
    OT_REQUIRE(dW != NULL, "ot_cuda_moe_matmul_bwd_weight: db without dW is not supported");
    if (p->n_pairs == 0) return;
    dim3 grid((W->cols + WG_TILE - 1) / WG_TILE, (W->rows + WG_TILE - 1) / WG_TILE, W->n_experts);
    moe_weight_grad_kernel<<<grid, dim3(WG_TILE, 8), 0, stream>>>(dW, db, as_bf16(dy), as_bf16(x), gather, p->offsets,
                                                                  p->row_token, W->rows, W->cols);
    OT_LAUNCH_CHECK();
}
