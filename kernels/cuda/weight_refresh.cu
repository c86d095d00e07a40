// Full training: the bf16 working weights the kernels read, rewritten from the fp32 master weights after each
// optimizer step. The masters are one flat buffer; a table of segments says where each tensor's working copy
// lives (bf16, or fp32 for the attention sinks, which the kernels read in fp32). One launch for the whole model:
// blockIdx.y is the segment, the x blocks stride over its elements. CPU twin: ot_f32_to_bf16 per element (the
// same round-to-nearest-even), checked bit for bit in tests/gpu/test_ops_cuda.c.
#include "kernels/cuda/cuda_common.cuh"

__global__ void weight_refresh_kernel(const ot_cuda_refresh_seg *segs, const float *master) {
    const ot_cuda_refresh_seg s = segs[blockIdx.y];
    const float *src = master + s.src;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < s.n; i += (size_t)gridDim.x * blockDim.x) {
        if (s.f32) ((float *)s.dst)[i] = src[i];
        else ((bf16 *)s.dst)[i] = f2bf(src[i]);
    }
}

void ot_cuda_weight_refresh(cudaStream_t stream, const ot_cuda_refresh_seg *segs, int n_segs, size_t max_n,
                            const float *master) {
    OT_REQUIRE(n_segs >= 0 && n_segs <= 65535, "ot_cuda_weight_refresh: %d segments (at most 65535)", n_segs);
    if (!n_segs || !max_n) return;
    unsigned bx = ot_cdiv(max_n, 256);
    if (bx > 1024) bx = 1024; // enough blocks to fill the GPU with the segments together; the rest strides
    weight_refresh_kernel<<<dim3(bx, (unsigned)n_segs), 256, 0, stream>>>(segs, master);
    OT_LAUNCH_CHECK();
}
