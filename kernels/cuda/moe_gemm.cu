// The grouped expert products of the MoE layer through cuBLAS, for batches large enough that the library's
// tuned bf16 tensor-core GEMMs beat the fused kernels of moe_matmul.cu (which dequantize MXFP4 tiles inside the
// product but run far below the chip's rate). The expert weights stay MXFP4 in GPU memory: per expert with rows,
// its matrix is dequantized into one bf16 scratch matrix (at most rows × cols × 2 bytes, reused expert after
// expert on the stream) and multiplied by that expert's rows with cublasGemmEx (bf16 operands, fp32
// accumulation, bf16 result). Dense bf16 experts are multiplied in place.
//
// Row-major [R, C] is column-major [C, R] (its transpose) to cuBLAS, so with W_e [N, K] as stored:
//   forward   y_e[n_e, N]   = X_e · W_eᵀ    is  y_eᵀ (N × n_e)  = (W_e as K × N)ᵀ · (X_e as K × n_e)
//   backward  dx_e[n_e, K] (+)= dy_e · W_e  is  dx_eᵀ (K × n_e) = (W_e as K × N) · (dy_e as N × n_e)
//
// The per-expert row counts are needed on the host to size the products, so each call copies the plan's
// offsets [E + 1] back and waits for the stream (a few µs; it also means these calls cannot be captured in a
// CUDA graph).
#include <cublas_v2.h>

#include "kernels/cuda/moe_gemm.cuh"

#include "kernels/ops.h" // OT_EXPERT_MXFP4

#define GEMM_THREADS 256
#define GEMM_MAX_DEVICES 64

// ---- cuBLAS handle ------------------------------------------------------------------------------------------
// The public MoE functions take no ot_cuda_blas (their callers predate this path and must not change), so the
// handle is owned here: created on first use, one per host thread and device (a cuBLAS handle belongs to one
// device, and cublasSetStream on a handle shared by threads would race), kept for the life of the thread. cuBLAS
// allocates its default workspace itself; the stream is set on every call because callers use several streams.
static thread_local cublasHandle_t g_moe_blas[GEMM_MAX_DEVICES];

static cublasHandle_t moe_blas(cudaStream_t stream) {
    int dev = 0;
    OT_CUDA_CHECK(cudaGetDevice(&dev));
    OT_REQUIRE(dev >= 0 && dev < GEMM_MAX_DEVICES, "moe_gemm: device %d beyond the %d supported", dev,
               GEMM_MAX_DEVICES);
    if (!g_moe_blas[dev]) OT_CUBLAS_CHECK(cublasCreate(&g_moe_blas[dev]));
    OT_CUBLAS_CHECK(cublasSetStream(g_moe_blas[dev], stream));
    return g_moe_blas[dev];
}

// ---- kernels --------------------------------------------------------------------------------------------------
// W [rows, cols] bf16 from one expert's MXFP4 blocks [rows, G, 16] and scales [rows, G] (G = cols / 32): one
// thread per 32-element group (16 bytes of nibbles, one 16-byte load when the blocks are 16-byte aligned), the
// decode of the fused kernels, so the values are exactly theirs (and ot_mxfp4_dequant_row's).
__global__ void mxfp4_dequant_kernel(bf16 *W, const uint8_t *blocks, const uint8_t *scales, size_t n_groups,
                                     int aligned16) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = fp4_value(threadIdx.x);
    __syncthreads();
    for (size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x; g < n_groups; g += (size_t)gridDim.x * blockDim.x) {
        uint2 q0, q1;
        if (aligned16) {
            uint4 q = *reinterpret_cast<const uint4 *>(blocks + g * 16);
            q0 = make_uint2(q.x, q.y), q1 = make_uint2(q.z, q.w);
        } else {
            q0 = *reinterpret_cast<const uint2 *>(blocks + g * 16);
            q1 = *reinterpret_cast<const uint2 *>(blocks + g * 16 + 8);
        }
        unsigned s = scales[g];
        uint32_t v[8];
        uint4 *dst = reinterpret_cast<uint4 *>(W + g * 32); // group g is elements 32g .. 32g+31 of the matrix
        mx_dequant16(v, q0, s, lut);
        dst[0] = make_uint4(v[0], v[1], v[2], v[3]);
        dst[1] = make_uint4(v[4], v[5], v[6], v[7]);
        mx_dequant16(v, q1, s, lut);
        dst[2] = make_uint4(v[0], v[1], v[2], v[3]);
        dst[3] = make_uint4(v[4], v[5], v[6], v[7]);
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
// The plan's offsets [E + 1] on the host (waits for the stream: the plan is built on the device), checked.
static int32_t *plan_offsets_host(cudaStream_t stream, const ot_cuda_moe_plan *p, const char *op) {
    int32_t *off = (int32_t *)ot_malloc(sizeof(int32_t) * (size_t)(p->E + 1));
    OT_CUDA_CHECK(cudaMemcpyAsync(off, p->offsets, sizeof(int32_t) * (size_t)(p->E + 1), cudaMemcpyDeviceToHost, stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(stream));
    OT_REQUIRE(off[0] == 0 && off[p->E] == p->n_pairs, "%s: plan offsets run 0..%d, expected 0..%d (plan not built?)",
               op, off[p->E], p->n_pairs);
    for (int e = 0; e < p->E; e++)
        OT_REQUIRE(off[e + 1] >= off[e], "%s: plan offsets decrease at expert %d (plan not built?)", op, e);
    return off;
}

// Expert e's weight matrix [rows, cols] as bf16: the dense weights in place, or MXFP4 dequantized into `scratch`.
static const bf16 *expert_matrix(cudaStream_t stream, bf16 *scratch, const ot_cuda_expert_weight *W, int e) {
    const size_t per = (size_t)W->rows * W->cols;
    if (W->kind != OT_EXPERT_MXFP4) return as_bf16(W->dense) + (size_t)e * per;
    const size_t n_groups = per / 32, g0 = (size_t)e * n_groups;
    const int aligned16 = ((uintptr_t)W->blocks % 16) == 0;
    mxfp4_dequant_kernel<<<ot_grid_for(n_groups, GEMM_THREADS), GEMM_THREADS, 0, stream>>>(
        scratch, W->blocks + g0 * 16, W->scales + g0, n_groups, aligned16);
    OT_LAUNCH_CHECK();
    return scratch;
}

void ot_cuda_moe_gemm_fwd(cudaStream_t stream, bf16 *y, const bf16 *x, int gather, const ot_cuda_expert_weight *W,
                          const ot_cuda_moe_plan *p) {
    const int N = W->rows, K = W->cols, n = p->n_pairs;
    if (n == 0) return;
    cublasHandle_t h = moe_blas(stream);
    int32_t *off = plan_offsets_host(stream, p, "ot_cuda_moe_matmul_fwd");
    bf16 *wbuf = W->kind == OT_EXPERT_MXFP4 ? ot_cuda_tmp<bf16>((size_t)N * K, stream) : NULL;
    bf16 *xg = NULL;
    if (gather) { // all experts' rows at once, so each product reads a contiguous block
        xg = ot_cuda_tmp<bf16>((size_t)n * K, stream);
        gather_rows_kernel<<<ot_grid_for((size_t)n * K / 8, GEMM_THREADS), GEMM_THREADS, 0, stream>>>(
            xg, x, p->row_token, n, K);
        OT_LAUNCH_CHECK();
    }
    const bf16 *xs = gather ? xg : x;
    const float one = 1.0f, zero = 0.0f;
    for (int e = 0; e < p->E; e++) {
        const int ne = off[e + 1] - off[e];
        if (!ne) continue;
        bf16 *ye = y + (size_t)off[e] * N;
        if (W->bias) {
            fill_rows_kernel<<<ot_grid_for((size_t)ne * N, GEMM_THREADS), GEMM_THREADS, 0, stream>>>(
                ye, as_bf16(W->bias) + (size_t)e * N, ne, N);
            OT_LAUNCH_CHECK();
        }
        const bf16 *We = expert_matrix(stream, wbuf, W, e);
        OT_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, ne, K, &one, We, CUDA_R_16BF, K,
                                     xs + (size_t)off[e] * K, CUDA_R_16BF, K, W->bias ? &one : &zero, ye, CUDA_R_16BF,
                                     N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (xg) ot_cuda_tmp_free(xg, stream);
    if (wbuf) ot_cuda_tmp_free(wbuf, stream);
    free(off);
}

void ot_cuda_moe_gemm_bwd(cudaStream_t stream, bf16 *dx, const bf16 *dy, const ot_cuda_expert_weight *W,
                          const ot_cuda_moe_plan *p, int accumulate) {
    const int N = W->rows, K = W->cols, n = p->n_pairs;
    if (n == 0) return;
    cublasHandle_t h = moe_blas(stream);
    int32_t *off = plan_offsets_host(stream, p, "ot_cuda_moe_matmul_bwd");
    bf16 *wbuf = W->kind == OT_EXPERT_MXFP4 ? ot_cuda_tmp<bf16>((size_t)N * K, stream) : NULL;
    const float one = 1.0f, zero = 0.0f;
    for (int e = 0; e < p->E; e++) {
        const int ne = off[e + 1] - off[e];
        if (!ne) continue;
        const bf16 *We = expert_matrix(stream, wbuf, W, e);
        OT_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, K, ne, N, &one, We, CUDA_R_16BF, K,
                                     dy + (size_t)off[e] * N, CUDA_R_16BF, N, accumulate ? &one : &zero,
                                     dx + (size_t)off[e] * K, CUDA_R_16BF, K, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
    }
    if (wbuf) ot_cuda_tmp_free(wbuf, stream);
    free(off);
}
