// Where the time of the MoE expert products goes on the GPU, and how other schedules of the same products would
// do: a measurement program for choosing the design of kernels/cuda/moe_gemm.cu, not a test (the op test checks
// the numbers). One MoE projection of the 20b shape (32 experts, top-4) on random MXFP4 weights, timed with CUDA
// events (median of several repetitions):
//   op        ot_cuda_moe_matmul_fwd / _bwd as the trainer calls them (the path OT_MOE_PATH or auto picks);
//             "+LoRA" the same with an expert LoRA of rank R expanded by the product (ot_cuda_moe_lora_term: in
//             the fused kernels' epilogue), and what that adds
//   library   the cuBLAS path (moe_gemm.cu): dequantize + product per expert, on lanes
//   fused     the fused MXFP4 kernels (moe_mxfp4_gemm.cu), which read the 4-bit weights directly, products by
//             mma.sync, then by wgmma (sm_90a builds on Hopper; n/a elsewhere); "agree" is ‖fused − library‖ /
//             ‖library‖ over the outputs (bf16 rounding and summation order only: ~1e-3)
//   dequant   only the MXFP4 → bf16 dequantization of every expert (the memory traffic it costs)
//   gemm      only the per-expert products, weights dequantized beforehand (spread over the lanes)
//   grouped   the same products as one cublasGemmGroupedBatchedEx call
//   rounds    dequantize a slice of rows (forward) / columns (backward) of every expert into a scratch small
//             enough for the L2 cache, then one grouped call over the slices, slice after slice, so that the bf16
//             weights need never reach DRAM
// Then the expert LoRA of both projections at rank R (ot_cuda_moe_lora_fwd / _bwd, moe_lora.cu), ms per call:
// as the trainer calls it (xa; dxa, dA, dB — the product adds the expansion, timed in the "+LoRA" column above),
// and with its own expansion pass (y += scale·xa·B_eᵀ, dx += dxa·A_e, which reads and rewrites the activation),
// with the rate at which each moves the activation bytes it cannot avoid, to compare with the card's memory
// bandwidth. The expert LoRA's share of a step is "+LoRA" plus the first; it was the product plus the second.
//
// usage: bench_moe_gemm [--tokens T] [--reps N] [--slice S] [--lora-r R]
//        OT_MOE_PATH=library|fused|auto picks the path of the "op" column (auto by default)
#include <cublas_v2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include <algorithm>

#include "kernels/cuda/lanes.cuh"
#include "kernels/cuda/moe_gemm.cuh"
#include "kernels/ops.h"

// moe_gemm.cu's dequantization kernel (256 groups per block step)
__global__ void mxfp4_dequant_kernel(bf16 *W, const uint8_t *blocks, const uint8_t *scales, size_t n_groups);

// Slice of every expert: rows [r0, r0 + R) of W_e [N, K] (forward: contiguous groups) or columns [c0, c0 + C)
// (backward: C / 32 groups of each row) into S [E][R or N][K or C] bf16.
__global__ void slice_dequant_kernel(bf16 *S, const uint8_t *blocks, const uint8_t *scales, int E, int N, int K,
                                     int r0, int R, int c0, int C) {
    __shared__ float lut[16];
    if (threadIdx.x < 16) lut[threadIdx.x] = fp4_value(threadIdx.x);
    __syncthreads();
    const int rows = R, cols = C, halves_per_row = cols / 16;
    const size_t total = (size_t)E * rows * halves_per_row;
    for (size_t h = blockIdx.x * (size_t)blockDim.x + threadIdx.x; h < total; h += (size_t)gridDim.x * blockDim.x) {
        size_t e = h / ((size_t)rows * halves_per_row), rem = h % ((size_t)rows * halves_per_row);
        int row = (int)(rem / halves_per_row), hc = (int)(rem % halves_per_row);
        size_t g = ((e * N + r0 + row) * (size_t)K + c0) / 32 + hc / 2; // group index in the whole weight
        uint2 q = *reinterpret_cast<const uint2 *>(blocks + g * 16 + (hc & 1) * 8);
        uint32_t v[8];
        mx_dequant16(v, q, scales[g], lut);
        uint4 *dst = reinterpret_cast<uint4 *>(S + ((e * rows + row) * (size_t)cols + hc * 16));
        dst[0] = make_uint4(v[0], v[1], v[2], v[3]);
        dst[1] = make_uint4(v[4], v[5], v[6], v[7]);
    }
}

static float elapsed(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    OT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

typedef void (*variant_fn)(void *ctx, cudaStream_t s);

static double time_variant(variant_fn f, void *ctx, cudaStream_t s, int reps) {
    cudaEvent_t a, b;
    OT_CUDA_CHECK(cudaEventCreate(&a));
    OT_CUDA_CHECK(cudaEventCreate(&b));
    f(ctx, s); // warm-up (cuBLAS heuristics, pool growth)
    std::vector<float> t;
    for (int i = 0; i < reps; i++) {
        OT_CUDA_CHECK(cudaEventRecord(a, s));
        f(ctx, s);
        OT_CUDA_CHECK(cudaEventRecord(b, s));
        OT_CUDA_CHECK(cudaEventSynchronize(b));
        t.push_back(elapsed(a, b));
    }
    std::sort(t.begin(), t.end());
    OT_CUDA_CHECK(cudaEventDestroy(a));
    OT_CUDA_CHECK(cudaEventDestroy(b));
    return t[t.size() / 2];
}

typedef struct {
    int E, N, K, n, fwd, slice;
    ot_cuda_expert_weight W;
    ot_cuda_moe_plan plan;
    const int32_t *off; // host offsets
    bf16 *x, *y, *wfull; // x [n, K or N], y [n, N or K], wfull [E, N, K]
    bf16 *slice_buf[2];
    const void **dA, **dB; // device pointer arrays for the grouped calls
    void **dC;
    const ot_cuda_moe_lora_term *lora; // run_op: the expert LoRA's expansion, or NULL
} Bench;

static void run_op(void *p, cudaStream_t s) {
    Bench *b = (Bench *)p;
    if (b->fwd) ot_cuda_moe_matmul_fwd(s, (ot_bf16 *)b->y, (const ot_bf16 *)b->x, 0, &b->W, &b->plan, b->lora);
    else ot_cuda_moe_matmul_bwd(s, (ot_bf16 *)b->y, (const ot_bf16 *)b->x, &b->W, &b->plan, 0, b->lora);
}

static void run_library(void *p, cudaStream_t s) {
    Bench *b = (Bench *)p;
    if (b->fwd) ot_cuda_moe_gemm_fwd(s, b->y, b->x, 0, &b->W, &b->plan);
    else ot_cuda_moe_gemm_bwd(s, b->y, b->x, &b->W, &b->plan, 0);
}

static void run_fused(void *p, cudaStream_t s) {
    Bench *b = (Bench *)p;
    if (b->fwd) ot_cuda_moe_mxfp4_fwd(s, b->y, b->x, 0, &b->W, &b->plan, NULL);
    else ot_cuda_moe_mxfp4_bwd(s, b->y, b->x, &b->W, &b->plan, 0, NULL);
}

// ‖fused − library‖ / ‖library‖ over the outputs of one call each.
static double fused_vs_library(Bench *b, cudaStream_t s, size_t n_out) {
    std::vector<uint16_t> ref(n_out), got(n_out);
    run_library(b, s);
    OT_CUDA_CHECK(cudaMemcpyAsync(ref.data(), b->y, n_out * 2, cudaMemcpyDeviceToHost, s));
    OT_CUDA_CHECK(cudaMemsetAsync(b->y, 0xFF, n_out * 2, s)); // NaN: an unwritten output shows
    run_fused(b, s);
    OT_CUDA_CHECK(cudaMemcpyAsync(got.data(), b->y, n_out * 2, cudaMemcpyDeviceToHost, s));
    OT_CUDA_CHECK(cudaStreamSynchronize(s));
    double d = 0, r = 0;
    for (size_t i = 0; i < n_out; i++) {
        float a = ot_bf16_to_f32(ref[i]), g = ot_bf16_to_f32(got[i]);
        d += (double)(g - a) * (g - a), r += (double)a * a;
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

static void run_dequant(void *p, cudaStream_t s) {
    Bench *b = (Bench *)p;
    size_t per = (size_t)b->N * b->K, groups = per / 32;
    for (int e = 0; e < b->E; e++) {
        mxfp4_dequant_kernel<<<ot_grid_for(groups, 256), 256, 0, s>>>(b->wfull + e * per, b->W.blocks + e * per / 2,
                                                                      b->W.scales + e * per / 32, groups);
        OT_LAUNCH_CHECK();
    }
}

// One expert's product with its weights at We (ld = K for the full matrix).
static void expert_gemm(cublasHandle_t h, Bench *b, int e, const bf16 *We) {
    const float one = 1.0f, zero = 0.0f;
    int ne = b->off[e + 1] - b->off[e], N = b->N, K = b->K;
    if (!ne) return;
    if (b->fwd)
        OT_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, ne, K, &one, We, CUDA_R_16BF, K,
                                     b->x + (size_t)b->off[e] * K, CUDA_R_16BF, K, &zero,
                                     b->y + (size_t)b->off[e] * N, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
    else
        OT_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, K, ne, N, &one, We, CUDA_R_16BF, K,
                                     b->x + (size_t)b->off[e] * N, CUDA_R_16BF, N, &zero,
                                     b->y + (size_t)b->off[e] * K, CUDA_R_16BF, K, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

static void run_gemm(void *p, cudaStream_t s) {
    Bench *b = (Bench *)p;
    ot_cuda_lanes_fork(s);
    for (int e = 0; e < b->E; e++)
        expert_gemm(ot_cuda_lane_blas(e % OT_CUDA_LANES), b, e, b->wfull + (size_t)e * b->N * b->K);
    ot_cuda_lanes_join(s);
}

// One grouped call: expert e's product with A = its weights (or slice), B = its rows, C = its outputs.
static void grouped_call(cublasHandle_t h, Bench *b, const bf16 *wbase, size_t wstride, int wld, int out_cols,
                         int out0, cudaStream_t s) {
    int E = b->E, g = 0;
    std::vector<cublasOperation_t> ta(E), tb(E);
    std::vector<int> m(E), n(E), k(E), lda(E), ldb(E), ldc(E), size(E, 1);
    std::vector<float> alpha(E, 1.0f), beta(E, 0.0f);
    std::vector<const void *> A(E), B(E);
    std::vector<void *> C(E);
    for (int e = 0; e < E; e++) {
        int ne = b->off[e + 1] - b->off[e];
        if (!ne) continue;
        if (b->fwd) { // y_e[:, out0 : out0+out_cols] = X_e · Sᵀ, S [out_cols, K]
            ta[g] = CUBLAS_OP_T, tb[g] = CUBLAS_OP_N, m[g] = out_cols, n[g] = ne, k[g] = b->K;
            A[g] = wbase + e * wstride, lda[g] = wld;
            B[g] = b->x + (size_t)b->off[e] * b->K, ldb[g] = b->K;
            C[g] = b->y + (size_t)b->off[e] * b->N + out0, ldc[g] = b->N;
        } else { // dx_e[:, out0 : out0+out_cols] = dy_e · S, S [N, out_cols]
            ta[g] = CUBLAS_OP_N, tb[g] = CUBLAS_OP_N, m[g] = out_cols, n[g] = ne, k[g] = b->N;
            A[g] = wbase + e * wstride, lda[g] = wld;
            B[g] = b->x + (size_t)b->off[e] * b->N, ldb[g] = b->N;
            C[g] = b->y + (size_t)b->off[e] * b->K + out0, ldc[g] = b->K;
        }
        g++;
    }
    // the pointer arrays live in device memory, one set per call (stream ordered: safe to overwrite only after
    // the call ran, so each call of a round uses its own part of the arrays)
    static int cursor = 0;
    const int slots = 256;
    const void **dA = b->dA + (size_t)(cursor % slots) * E, **dB = b->dB + (size_t)(cursor % slots) * E;
    void **dC = b->dC + (size_t)(cursor % slots) * E;
    cursor++;
    OT_CUDA_CHECK(cudaMemcpyAsync(dA, A.data(), sizeof(void *) * g, cudaMemcpyHostToDevice, s));
    OT_CUDA_CHECK(cudaMemcpyAsync(dB, B.data(), sizeof(void *) * g, cudaMemcpyHostToDevice, s));
    OT_CUDA_CHECK(cudaMemcpyAsync(dC, C.data(), sizeof(void *) * g, cudaMemcpyHostToDevice, s));
    OT_CUBLAS_CHECK(cublasGemmGroupedBatchedEx(h, ta.data(), tb.data(), m.data(), n.data(), k.data(), alpha.data(),
                                               dA, CUDA_R_16BF, lda.data(), dB, CUDA_R_16BF, ldb.data(),
                                               beta.data(), dC, CUDA_R_16BF, ldc.data(), g, size.data(),
                                               CUBLAS_COMPUTE_32F));
}

static void run_grouped(void *p, cudaStream_t s) {
    Bench *b = (Bench *)p;
    int out_cols = b->fwd ? b->N : b->K;
    grouped_call(ot_cuda_thread_blas(s), b, b->wfull, (size_t)b->N * b->K, b->K, out_cols, 0, s);
}

static void run_rounds(void *p, cudaStream_t s) {
    Bench *b = (Bench *)p;
    cublasHandle_t h = ot_cuda_thread_blas(s);
    int total = b->fwd ? b->N : b->K, S = b->slice;
    for (int o = 0, i = 0; o < total; o += S, i++) {
        int w = std::min(S, total - o);
        bf16 *buf = b->slice_buf[i & 1];
        size_t halves = (size_t)b->E * (b->fwd ? (size_t)w * b->K : (size_t)b->N * w) / 16;
        if (b->fwd)
            slice_dequant_kernel<<<ot_grid_for(halves, 256), 256, 0, s>>>(buf, b->W.blocks, b->W.scales, b->E, b->N,
                                                                          b->K, o, w, 0, b->K);
        else
            slice_dequant_kernel<<<ot_grid_for(halves, 256), 256, 0, s>>>(buf, b->W.blocks, b->W.scales, b->E, b->N,
                                                                          b->K, 0, b->N, o, w);
        OT_LAUNCH_CHECK();
        if (b->fwd) grouped_call(h, b, buf, (size_t)w * b->K, b->K, w, o, s);
        else grouped_call(h, b, buf, (size_t)b->N * w, w, w, o, s);
    }
}

// The expert LoRA of one projection (in → out) on the plan, forward then backward, as the trainer calls them.
typedef struct {
    const ot_cuda_moe_plan *plan;
    int in, out, r, gather;
    bf16 *x, *y, *dy, *dx;
    float *A, *B, *dA, *dB, *xa, *dxa;
    int expand; // 1: with the expansion pass (y, dx); 0: as the trainer (xa; dxa for the product)
} LoraBench;

static void run_lora_fwd(void *ctx, cudaStream_t s) {
    LoraBench *b = (LoraBench *)ctx;
    ot_cuda_moe_lora_fwd(s, b->expand ? (ot_bf16 *)b->y : NULL, b->xa, (const ot_bf16 *)b->x, b->gather, b->A, b->B,
                         b->plan, b->in, b->r, b->out, 2.0f);
}
static void run_lora_bwd(void *ctx, cudaStream_t s) {
    LoraBench *b = (LoraBench *)ctx;
    ot_cuda_moe_lora_bwd(s, b->expand ? (ot_bf16 *)b->dx : NULL, b->expand ? NULL : b->dxa, b->dA, b->dB,
                         (const ot_bf16 *)b->dy, (const ot_bf16 *)b->x, b->gather, b->xa, b->A, b->B, b->plan, b->in,
                         b->r, b->out, 2.0f);
}

static void bench_lora(const ot_cuda_moe_plan *plan, int in, int out, int r, int gather, int T, int reps,
                       const char *name, cudaStream_t s) {
    const int n = plan->n_pairs, E = plan->E, xrows = gather ? T : n;
    LoraBench b = {plan, in, out, r, gather, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    OT_CUDA_CHECK(cudaMalloc(&b.x, sizeof(bf16) * xrows * in));
    OT_CUDA_CHECK(cudaMalloc(&b.y, sizeof(bf16) * n * out));
    OT_CUDA_CHECK(cudaMalloc(&b.dy, sizeof(bf16) * n * out));
    OT_CUDA_CHECK(cudaMalloc(&b.dx, sizeof(bf16) * n * in));
    OT_CUDA_CHECK(cudaMalloc(&b.A, sizeof(float) * E * r * in));
    OT_CUDA_CHECK(cudaMalloc(&b.B, sizeof(float) * E * out * r));
    OT_CUDA_CHECK(cudaMalloc(&b.dA, sizeof(float) * E * r * in));
    OT_CUDA_CHECK(cudaMalloc(&b.dB, sizeof(float) * E * out * r));
    OT_CUDA_CHECK(cudaMalloc(&b.xa, sizeof(float) * n * r));
    OT_CUDA_CHECK(cudaMalloc(&b.dxa, sizeof(float) * n * r));
    { // small finite values everywhere (the timing does not depend on them; NaNs would only obscure a failure)
        std::vector<uint16_t> h((size_t)n * (in > out ? in : out));
        for (auto &v : h) v = ot_f32_to_bf16((float)rand() / RAND_MAX - 0.5f);
        OT_CUDA_CHECK(cudaMemcpy(b.x, h.data(), sizeof(bf16) * xrows * in, cudaMemcpyHostToDevice));
        OT_CUDA_CHECK(cudaMemcpy(b.y, h.data(), sizeof(bf16) * n * out, cudaMemcpyHostToDevice));
        OT_CUDA_CHECK(cudaMemcpy(b.dy, h.data(), sizeof(bf16) * n * out, cudaMemcpyHostToDevice));
        OT_CUDA_CHECK(cudaMemcpy(b.dx, h.data(), sizeof(bf16) * n * in, cudaMemcpyHostToDevice));
        std::vector<float> w((size_t)E * r * (in > out ? in : out));
        for (auto &v : w) v = ((float)rand() / RAND_MAX - 0.5f) * 0.01f;
        OT_CUDA_CHECK(cudaMemcpy(b.A, w.data(), sizeof(float) * E * r * in, cudaMemcpyHostToDevice));
        OT_CUDA_CHECK(cudaMemcpy(b.B, w.data(), sizeof(float) * E * out * r, cudaMemcpyHostToDevice));
        OT_CUDA_CHECK(cudaMemset(b.dA, 0, sizeof(float) * E * r * in));
        OT_CUDA_CHECK(cudaMemset(b.dB, 0, sizeof(float) * E * out * r));
    }
    for (b.expand = 0; b.expand <= 1; b.expand++) {
        const double t_fwd = time_variant(run_lora_fwd, &b, s, reps), t_bwd = time_variant(run_lora_bwd, &b, s, reps);
        // unavoidable traffic: forward reads x (and reads + writes y); backward reads dy (dB, dxa), x (dA) (and
        // reads + writes dx)
        const double fwd_bytes = 2.0 * n * (in + (b.expand ? 2.0 * out : 0.0));
        const double bwd_bytes = 2.0 * n * (out + in + (b.expand ? 2.0 * in : 0.0));
        printf("expert LoRA r%-3d %-8s %-26s forward %7.3f ms (%5.2f TB/s) | backward %7.3f ms (%5.2f TB/s)\n", r,
               name, b.expand ? "with its expansion pass" : "as trained (no expansion)", t_fwd,
               fwd_bytes / t_fwd / 1e9, t_bwd, bwd_bytes / t_bwd / 1e9);
        fflush(stdout);
    }
    cudaFree(b.x), cudaFree(b.y), cudaFree(b.dy), cudaFree(b.dx), cudaFree(b.A), cudaFree(b.B), cudaFree(b.dA);
    cudaFree(b.dB), cudaFree(b.xa), cudaFree(b.dxa);
}

int main(int argc, char **argv) {
    int T = 2048, reps = 7, slice = 128, lora_r = 16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--slice") && i + 1 < argc) slice = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lora-r") && i + 1 < argc) lora_r = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_moe_gemm [--tokens T] [--reps N] [--slice S] [--lora-r R]\n");
            return 2;
        }
    }
    const int E = 32, k = 4, H = 2880, I = 2880;
    ot_cuda_init(0);
    cudaStream_t s;
    OT_CUDA_CHECK(cudaStreamCreate(&s));
    const int n = T * k;
    // routing: uniform random experts, distinct per token
    std::vector<int32_t> idx(n);
    srand(1);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e;
            bool dup;
            do {
                e = rand() % E;
                dup = false;
                for (int jj = 0; jj < j; jj++) dup |= idx[t * k + jj] == e;
            } while (dup);
            idx[t * k + j] = e;
        }
    int32_t *idx_d;
    OT_CUDA_CHECK(cudaMalloc(&idx_d, sizeof(int32_t) * n));
    OT_CUDA_CHECK(cudaMemcpy(idx_d, idx.data(), sizeof(int32_t) * n, cudaMemcpyHostToDevice));

    printf("bench_moe_gemm: %d tokens x top-%d over %d experts (%d rows), hidden %d, intermediate %d; median of %d\n",
           T, k, E, n, H, I, reps);
    const char *names[] = {"gate_up forward", "down backward (dx)", "down forward", "gate_up backward (dx)"};
    for (int c = 0; c < 4; c++) {
        Bench b;
        memset(&b, 0, sizeof b);
        b.E = E;
        b.fwd = c == 0 || c == 2;
        b.N = (c == 0 || c == 3) ? 2 * I : H; // rows of W (out)
        b.K = (c == 0 || c == 3) ? H : I;     // cols of W (in)
        b.n = n;
        b.slice = slice;
        size_t per = (size_t)b.N * b.K;
        uint8_t *blocks, *scales;
        OT_CUDA_CHECK(cudaMalloc(&blocks, E * per / 2));
        OT_CUDA_CHECK(cudaMalloc(&scales, E * per / 32));
        std::vector<uint8_t> hb(E * per / 2), hs(E * per / 32);
        for (auto &v : hb) v = (uint8_t)rand();
        for (auto &v : hs) v = (uint8_t)(118 + rand() % 6);
        OT_CUDA_CHECK(cudaMemcpy(blocks, hb.data(), hb.size(), cudaMemcpyHostToDevice));
        OT_CUDA_CHECK(cudaMemcpy(scales, hs.data(), hs.size(), cudaMemcpyHostToDevice));
        b.W.kind = OT_EXPERT_MXFP4;
        b.W.n_experts = E, b.W.rows = b.N, b.W.cols = b.K, b.W.blocks = blocks, b.W.scales = scales;
        ot_cuda_moe_plan_alloc(&b.plan, T, k, E);
        ot_cuda_moe_plan_build(s, &b.plan, idx_d);
        b.off = b.plan.host_offsets;
        size_t in_cols = b.fwd ? b.K : b.N, out_cols = b.fwd ? b.N : b.K;
        OT_CUDA_CHECK(cudaMalloc(&b.x, sizeof(bf16) * n * in_cols));
        { // random activations of ~1 (a constant input would hide a swapped row or column in the agreement check)
            std::vector<uint16_t> hx((size_t)n * in_cols);
            for (auto &v : hx) v = ot_f32_to_bf16((float)rand() / RAND_MAX * 2.0f - 1.0f);
            OT_CUDA_CHECK(cudaMemcpy(b.x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
        }
        OT_CUDA_CHECK(cudaMalloc(&b.y, sizeof(bf16) * n * out_cols));
        OT_CUDA_CHECK(cudaMalloc(&b.wfull, sizeof(bf16) * E * per));
        size_t slice_elems = (size_t)E * slice * (b.fwd ? b.K : b.N);
        for (int i = 0; i < 2; i++) OT_CUDA_CHECK(cudaMalloc(&b.slice_buf[i], sizeof(bf16) * slice_elems));
        OT_CUDA_CHECK(cudaMalloc(&b.dA, sizeof(void *) * 256 * E));
        OT_CUDA_CHECK(cudaMalloc(&b.dB, sizeof(void *) * 256 * E));
        OT_CUDA_CHECK(cudaMalloc(&b.dC, sizeof(void *) * 256 * E));
        run_dequant(&b, s);
        double flop = 2.0 * n * b.N * b.K;
        // the fused kernels with their products by mma.sync, then by wgmma where this device and build have it
        ot_cuda_moe_set_fused_wgmma(0);
        const double agree = fused_vs_library(&b, s, (size_t)n * out_cols);
        const double t_fused = time_variant(run_fused, &b, s, reps);
        const int wg = ot_cuda_moe_set_fused_wgmma(1);
        const double agree_wg = wg ? fused_vs_library(&b, s, (size_t)n * out_cols) : NAN;
        const double t_wg = wg ? time_variant(run_fused, &b, s, reps) : NAN;
        ot_cuda_moe_set_fused_wgmma(-1);
        double t_op = time_variant(run_op, &b, s, reps), t_dq = time_variant(run_dequant, &b, s, reps);
        double t_op_lora = NAN; // with the expert LoRA's expansion: u [n, R] and B [E, N, R] or A [E, R, K]
        if (lora_r > 0) {
            float *u, *m;
            const size_t n_u = (size_t)n * lora_r, n_m = (size_t)E * lora_r * (b.fwd ? b.N : b.K);
            OT_CUDA_CHECK(cudaMalloc(&u, sizeof(float) * n_u));
            OT_CUDA_CHECK(cudaMalloc(&m, sizeof(float) * n_m));
            std::vector<float> h(n_u > n_m ? n_u : n_m);
            for (auto &v : h) v = ((float)rand() / RAND_MAX - 0.5f) * 0.01f;
            OT_CUDA_CHECK(cudaMemcpy(u, h.data(), sizeof(float) * n_u, cudaMemcpyHostToDevice));
            OT_CUDA_CHECK(cudaMemcpy(m, h.data(), sizeof(float) * n_m, cudaMemcpyHostToDevice));
            const ot_cuda_moe_lora_term term = {u, m, lora_r, 2.0f};
            b.lora = &term;
            t_op_lora = time_variant(run_op, &b, s, reps);
            b.lora = NULL;
            cudaFree(u), cudaFree(m);
        }
        double t_lib = time_variant(run_library, &b, s, reps);
        double t_gemm = time_variant(run_gemm, &b, s, reps), t_grp = time_variant(run_grouped, &b, s, reps);
        double t_rnd = time_variant(run_rounds, &b, s, reps);
        double dq_bytes = E * per * (2.0 + 0.5 + 1.0 / 32);
        printf("%-22s op %7.3f ms (%5.0f TFLOP/s) | +LoRA r%d %7.3f ms (+%6.3f) | library %7.3f ms (%5.0f) | "
               "fused mma.sync %7.3f ms (%5.0f) "
               "agree %.1e | fused wgmma %7.3f ms (%5.0f) agree %.1e | "
               "dequant %6.3f ms (%5.2f TB/s) | gemm %6.3f ms (%5.0f TFLOP/s) | grouped %6.3f ms (%5.0f) | "
               "rounds(slice %d) %6.3f ms (%5.0f)\n",
               names[c], t_op, flop / t_op / 1e9, lora_r, t_op_lora, t_op_lora - t_op, t_lib, flop / t_lib / 1e9,
               t_fused, flop / t_fused / 1e9, agree,
               t_wg, flop / t_wg / 1e9, agree_wg,
               t_dq, dq_bytes / t_dq / 1e9, t_gemm, flop / t_gemm / 1e9, t_grp, flop / t_grp / 1e9, slice, t_rnd,
               flop / t_rnd / 1e9);
        fflush(stdout);
        ot_cuda_moe_plan_free(&b.plan);
        cudaFree(blocks), cudaFree(scales), cudaFree(b.x), cudaFree(b.y), cudaFree(b.wfull);
        cudaFree(b.slice_buf[0]), cudaFree(b.slice_buf[1]), cudaFree(b.dA), cudaFree(b.dB), cudaFree(b.dC);
    }
    if (lora_r > 0) {
        ot_cuda_moe_plan plan;
        ot_cuda_moe_plan_alloc(&plan, T, k, E);
        ot_cuda_moe_plan_build(s, &plan, idx_d);
        bench_lora(&plan, H, 2 * I, lora_r, 1, T, reps, "gate_up", s);
        bench_lora(&plan, I, H, lora_r, 0, T, reps, "down", s);
        ot_cuda_moe_plan_free(&plan);
    }
    return 0;
}
