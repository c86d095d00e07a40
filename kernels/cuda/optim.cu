// Optimizer pieces on the GPU: AdamW on fp32 tensors, the sum of squares for the global gradient norm, and the
// ordered sum of gathered gradients.
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

// torch's AdamW step, operation by operation in the same order and with the same float32 roundings as the CPU
// ot_adamw_step (kernels/cpu/optim.c). The _rn intrinsics keep the compiler from fusing a multiply and an add
// into one FMA, which would round differently from the CPU.
__global__ void adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n, float decay, int use_decay,
                             float w1, float beta2, float w2, float bc2_sqrt, float eps, float neg_step_size) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float p = param[i], g = grad[i];
        if (use_decay) p = __fmul_rn(p, decay);
        float mi = m[i];
        mi = w1 < 0.5f ? __fadd_rn(mi, __fmul_rn(w1, __fsub_rn(g, mi)))
                       : __fsub_rn(g, __fmul_rn(__fsub_rn(g, mi), __fsub_rn(1.0f, w1))); // torch.lerp
        float vi = __fmul_rn(v[i], beta2);
        vi = __fadd_rn(vi, __fmul_rn(__fmul_rn(w2, g), g));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        param[i] = __fadd_rn(p, __fdiv_rn(__fmul_rn(neg_step_size, mi), denom));
        m[i] = mi;
        v[i] = vi;
    }
}

void ot_cuda_adamw_step(cudaStream_t stream, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float weight_decay, long step) {
    OT_REQUIRE(step >= 1, "ot_cuda_adamw_step: step %ld must count from 1", step);
    if (!n) return;
    // The scalar factors exactly as the CPU reference derives them (doubles rounded to float where they meet data).
    float decay = (float)(1.0 - (double)lr * (double)weight_decay);
    float w1 = (float)(1.0 - (double)beta1);
    float w2 = (float)(1.0 - (double)beta2);
    double bc1 = 1.0 - pow((double)beta1, (double)step);
    double bc2 = 1.0 - pow((double)beta2, (double)step);
    float neg_step_size = (float)(-((double)lr / bc1));
    float bc2_sqrt = (float)pow(bc2, 0.5);
    adamw_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(param, grad, m, v, n, decay, weight_decay != 0, w1, beta2,
                                                          w2, bc2_sqrt, eps, neg_step_size);
    OT_LAUNCH_CHECK();
}

// Σ g² in double. A fixed number of blocks, each with a fixed reduction tree, then one block over the partial
// sums: the same bits on every run for the same n (no atomics).
#define SS_BLOCKS 512
#define SS_THREADS 256

__global__ void sum_squares_partial_kernel(double *partial, const float *g, size_t n) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        acc += (double)g[i] * (double)g[i];
    acc = block_sum_d(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_squares_final_kernel(double *out, const double *partial) {
    __shared__ double scratch[32];
    double acc = block_sum_d(partial[threadIdx.x], scratch); // blockDim.x == SS_BLOCKS
    if (threadIdx.x == 0) *out += acc;
}

void ot_cuda_sum_squares(cudaStream_t stream, double *out, const float *g, size_t n) {
    if (!n) return;
    double *partial = ot_cuda_tmp<double>(SS_BLOCKS, stream);
    sum_squares_partial_kernel<<<SS_BLOCKS, SS_THREADS, 0, stream>>>(partial, g, n);
    OT_LAUNCH_CHECK();
    sum_squares_final_kernel<<<1, SS_BLOCKS, 0, stream>>>(out, partial);
    OT_LAUNCH_CHECK();
    ot_cuda_tmp_free(partial, stream);
}

// One thread per element, the slots in order: the sum of ot_sum_slots_ordered (kernels/cpu/optim.c) bit for bit
// (IEEE double additions in the same order: an add alone has nothing to fuse).
__global__ void sum_slots_ordered_kernel(float *out, const float *slots, int n_slots, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double acc = 0.0;
        for (int k = 0; k < n_slots; k++) acc += (double)slots[(size_t)k * n + i];
        out[i] = (float)acc;
    }
}

void ot_cuda_sum_slots_ordered(cudaStream_t stream, float *out, const float *slots, int n_slots, size_t n) {
    if (!n) return;
    OT_REQUIRE(n_slots >= 0, "ot_cuda_sum_slots_ordered: %d slots", n_slots);
    sum_slots_ordered_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(out, slots, n_slots, n);
    OT_LAUNCH_CHECK();
}
