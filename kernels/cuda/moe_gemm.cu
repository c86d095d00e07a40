// The grouped expert products of the MoE layer through cuBLAS, for batches large enough that the library's
// tuned bf16 tensor-core GEMMs beat the fused kernels of moe_matmul.cu (which dequantize MXFP4 tiles inside the
// product but run far below the chip's rate). The expert weights stay MXFP4 in GPU memory: per expert with rows,
// its matrix is dequantized into a bf16 scratch matrix and multiplied by that expert's rows with cublasGemmEx
// (bf16 operands, fp32 accumulation, bf16 result). Dense bf16 experts are multiplied in place.
//
// One expert's product is too small to fill an H100 (a 20b expert with ~256 rows makes 45 to 90 output tiles for
// 132 multiprocessors), so the experts are spread over OT_CUDA_LANES side streams (lanes.cuh), each with its own
// scratch matrix: while one lane dequantizes (memory bound) another multiplies (compute bound), and together they
// fill the GPU. Each expert's product is computed by one call on one stream whatever the lane, so results do not
// depend on the schedule.
//
// Row-major [R, C] is column-major [C, R] (its transpose) to cuBLAS, so with W_e [N, K] as stored:
//   forward   y_e[n_e, N]   = X_e · W_eᵀ    is  y_eᵀ (N × n_e)  = (W_e as K × N)ᵀ · (X_e as K × n_e)
//   backward  dx_e[n_e, K] (+)= dy_e · W_e  is  dx_eᵀ (K × n_e) = (W_e as K × N) · (dy_e as N × n_e)
//
// The per-expert row counts size the products on the host: ot_cuda_moe_plan_build copies them back once per plan
// (host_offsets), and the first of these calls after it waits for that copy.
#include <cublas_v2.h>

#include "kernels/cuda/lanes.cuh"
#include "kernels/cuda/moe_gemm.cuh"

#include "kernels/ops.h" // OT_EXPERT_MXFP4

#define GEMM_THREADS 256

// ---- kernels --------------------------------------------------------------------------------------------------
// W [rows, cols] bf16 from one expert's MXFP4 blocks [rows, G, 16] and scales [rows, G] (G = cols / 32), in two
// phases per 256 groups so that both the reads and the writes are whole consecutive 16-byte vectors per thread
// (the kernel is memory bound: 0.53 bytes in, 2 bytes out per weight): the block loads 256 groups' nibbles and
// scales into shared memory, then each thread writes 4 × 8 consecutive bf16 of the block's output. The decode is
// the fused kernels' (mx_dequant16), so the values are exactly theirs (and ot_mxfp4_dequant_row's).
#define DQ_GROUPS 256 // groups per block step (= threads)
__global__ void __launch_bounds__(DQ_GROUPS) mxfp4_dequant_kernel(bf16 *W, const uint8_t *blocks,
                                                                  const uint8_t *scales, size_t n_groups) {
    __shared__ __align__(16) uint32_t raw[DQ_GROUPS * 4]; // 16 bytes of nibbles per group
    __shared__ uint8_t sc[DQ_GROUPS];
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = fp4_value(threadIdx.x);
    const int aligned16 = ((uintptr_t)blocks & 15u) == 0;
    for (size_t g0 = blockIdx.x * (size_t)DQ_GROUPS; g0 < n_groups; g0 += (size_t)gridDim.x * DQ_GROUPS) {
        const size_t g = g0 + threadIdx.x;
        uint4 q = make_uint4(0u, 0u, 0u, 0u);
        if (g < n_groups) {
            if (aligned16) {
                q = *reinterpret_cast<const uint4 *>(blocks + g * 16);
            } else { // blocks are 8-byte aligned at least (ops_cuda.h)
                uint2 lo = *reinterpret_cast<const uint2 *>(blocks + g * 16);
                uint2 hi = *reinterpret_cast<const uint2 *>(blocks + g * 16 + 8);
                q = make_uint4(lo.x, lo.y, hi.x, hi.y);
            }
            sc[threadIdx.x] = scales[g];
        }
        *reinterpret_cast<uint4 *>(&raw[threadIdx.x * 4]) = q;
        __syncthreads();
        // this step's output: (groups here) × 32 bf16 = 4 × DQ_GROUPS vectors of 8; vector o is word o % 4 of
        // group o / 4 (8 nibbles = 8 elements)
        const size_t here = min((size_t)DQ_GROUPS, n_groups - g0);
        uint4 *dst = reinterpret_cast<uint4 *>(W + g0 * 32);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int o = i * DQ_GROUPS + threadIdx.x;
            if ((size_t)(o / 4) >= here) continue;
            uint32_t v[8];
            mx_dequant16(v, make_uint2(raw[o], 0u), sc[o / 4], lut); // the first 8 elements are this word's
            dst[o] = make_uint4(v[0], v[1], v[2], v[3]);
        }
        __syncthreads(); // raw and sc are rewritten by the next step
    }
}

// xg[p, :] = x[row_token[p], :] for all n permuted rows, 8 bf16 (16 bytes) per step (cols is a multiple of 32).
__global__ void gather_rows_kernel(bf16 *xg, const bf16 *x, const int32_t *row_token, int n, int cols) {
    const int vpr = cols / 8; // vectors per row
    size_t total = (size_t)n * vpr;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t p = i / vpr, c = i % vpr;
        const uint4 *src = reinterpret_cast<const uint4 *>(x + (size_t)row_token[p] * cols) + c;
        reinterpret_cast<uint4 *>(xg + p * cols)[c] = *src;
    }
}

// y[p, :] = b for n rows: the bias, written before a product that then accumulates onto it (beta = 1).
__global__ void fill_rows_kernel(bf16 *y, const bf16 *b, int n, int N) {
    size_t total = (size_t)n * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = b[i % N];
}

// ---- host -----------------------------------------------------------------------------------------------------
const int32_t *ot_cuda_moe_plan_host_offsets(const ot_cuda_moe_plan *p, const char *op) {
    if (p->host_ready) OT_CUDA_CHECK(cudaEventSynchronize(p->host_ready)); // the plan's copy has landed
    const int32_t *off = p->host_offsets;
    OT_REQUIRE(off && off[0] == 0 && off[p->E] == p->n_pairs,
               "%s: plan offsets run 0..%d, expected 0..%d (plan not built?)", op, off ? off[p->E] : -1, p->n_pairs);
    for (int e = 0; e < p->E; e++)
        OT_REQUIRE(off[e + 1] >= off[e], "%s: plan offsets decrease at expert %d (plan not built?)", op, e);
    return off;
}

// Expert e's weight matrix [rows, cols] as bf16: the dense weights in place, or MXFP4 dequantized into `scratch`.
static const bf16 *expert_matrix(cudaStream_t stream, bf16 *scratch, const ot_cuda_expert_weight *W, int e) {
    const size_t per = (size_t)W->rows * W->cols;
    if (W->kind != OT_EXPERT_MXFP4) return as_bf16(W->dense) + (size_t)e * per;
    const size_t n_groups = per / 32, g0 = (size_t)e * n_groups;
    mxfp4_dequant_kernel<<<ot_grid_for(n_groups, DQ_GROUPS), DQ_GROUPS, 0, stream>>>(scratch, W->blocks + g0 * 16,
                                                                                     W->scales + g0, n_groups);
    OT_LAUNCH_CHECK();
    return scratch;
}

// One bf16 scratch matrix [rows, cols] per lane (MXFP4 only), from the caller's stream's pool.
static void lane_scratch_alloc(bf16 *scratch[OT_CUDA_LANES], const ot_cuda_expert_weight *W, cudaStream_t stream) {
    for (int l = 0; l < OT_CUDA_LANES; l++)
        scratch[l] = W->kind == OT_EXPERT_MXFP4 ? ot_cuda_tmp<bf16>((size_t)W->rows * W->cols, stream) : NULL;
}

static void lane_scratch_free(bf16 *scratch[OT_CUDA_LANES], cudaStream_t stream) {
    for (int l = 0; l < OT_CUDA_LANES; l++)
        if (scratch[l]) ot_cuda_tmp_free(scratch[l], stream);
}

void ot_cuda_moe_gemm_fwd(cudaStream_t stream, bf16 *y, const bf16 *x, int gather, const ot_cuda_expert_weight *W,
                          const ot_cuda_moe_plan *p) {
    const int N = W->rows, K = W->cols, n = p->n_pairs;
    if (n == 0) return;
    const int32_t *off = ot_cuda_moe_plan_host_offsets(p, "ot_cuda_moe_matmul_fwd");
    bf16 *scratch[OT_CUDA_LANES];
    lane_scratch_alloc(scratch, W, stream);
    bf16 *xg = NULL;
    if (gather) { // all experts' rows at once, so each product reads a contiguous block
        xg = ot_cuda_tmp<bf16>((size_t)n * K, stream);
        gather_rows_kernel<<<ot_grid_for((size_t)n * K / 8, GEMM_THREADS), GEMM_THREADS, 0, stream>>>(
            xg, x, p->row_token, n, K);
        OT_LAUNCH_CHECK();
    }
    const bf16 *xs = gather ? xg : x;
    const float one = 1.0f, zero = 0.0f;
    ot_cuda_lanes_fork(stream);
    for (int e = 0, lane = 0; e < p->E; e++) {
        const int ne = off[e + 1] - off[e];
        if (!ne) continue;
        cudaStream_t ls = ot_cuda_lane_stream(lane);
        bf16 *ye = y + (size_t)off[e] * N;
        if (W->bias) {
            fill_rows_kernel<<<ot_grid_for((size_t)ne * N, GEMM_THREADS), GEMM_THREADS, 0, ls>>>(
                ye, as_bf16(W->bias) + (size_t)e * N, ne, N);
            OT_LAUNCH_CHECK();
        }
        const bf16 *We = expert_matrix(ls, scratch[lane], W, e);
        OT_CUBLAS_CHECK(cublasGemmEx(ot_cuda_lane_blas(lane), CUBLAS_OP_T, CUBLAS_OP_N, N, ne, K, &one, We,
                                     CUDA_R_16BF, K, xs + (size_t)off[e] * K, CUDA_R_16BF, K, W->bias ? &one : &zero,
                                     ye, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        lane = (lane + 1) % OT_CUDA_LANES;
    }
    ot_cuda_lanes_join(stream);
    if (xg) ot_cuda_tmp_free(xg, stream);
    lane_scratch_free(scratch, stream);
}

void ot_cuda_moe_gemm_bwd(cudaStream_t stream, bf16 *dx, const bf16 *dy, const ot_cuda_expert_weight *W,
                          const ot_cuda_moe_plan *p, int accumulate) {
    const int N = W->rows, K = W->cols, n = p->n_pairs;
    if (n == 0) return;
    const int32_t *off = ot_cuda_moe_plan_host_offsets(p, "ot_cuda_moe_matmul_bwd");
    bf16 *scratch[OT_CUDA_LANES];
    lane_scratch_alloc(scratch, W, stream);
    const float one = 1.0f, zero = 0.0f;
    ot_cuda_lanes_fork(stream);
    for (int e = 0, lane = 0; e < p->E; e++) {
        const int ne = off[e + 1] - off[e];
        if (!ne) continue;
        const bf16 *We = expert_matrix(ot_cuda_lane_stream(lane), scratch[lane], W, e);
        OT_CUBLAS_CHECK(cublasGemmEx(ot_cuda_lane_blas(lane), CUBLAS_OP_N, CUBLAS_OP_N, K, ne, N, &one, We,
                                     CUDA_R_16BF, K, dy + (size_t)off[e] * N, CUDA_R_16BF, N,
                                     accumulate ? &one : &zero, dx + (size_t)off[e] * K, CUDA_R_16BF, K,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        lane = (lane + 1) % OT_CUDA_LANES;
    }
    ot_cuda_lanes_join(stream);
    lane_scratch_free(scratch, stream);
}
