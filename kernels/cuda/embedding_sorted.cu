// Full training: the embedding table's gradient without atomics. The positions arrive grouped by id
// (ot_embedding_sort_ids on the host); one block per distinct id walks its positions in increasing order and adds
// each dout row into a register per column, starting from the table's current value — exactly the additions of
// the CPU twin ot_embedding_bwd, in its order, so the result is the same bits on every run and on the CPU.
#include "kernels/cuda/cuda_common.cuh"

__global__ void embedding_bwd_sorted_kernel(float *dtable, const bf16 *dout, const int32_t *ids,
                                            const int32_t *order, const int32_t *seg, int H, int V, unsigned *flags) {
    const int r0 = seg[blockIdx.x], r1 = seg[blockIdx.x + 1];
    const int id = ids[order[r0]];
    if (id < 0 || id >= V) { // a bad id cannot stop the kernel: flag it and leave the table alone
        if (threadIdx.x == 0) atomicOr(flags, (unsigned)OT_CUDA_BAD_TOKEN);
        return;
    }
    float *row = dtable + (size_t)id * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        float acc = row[i];
        for (int r = r0; r < r1; r++) acc += bf2f(dout[(size_t)order[r] * H + i]);
        row[i] = acc;
    }
}

void ot_cuda_embedding_bwd_sorted(cudaStream_t stream, float *dtable, const ot_bf16 *dout, const int32_t *ids,
                                  const int32_t *order, const int32_t *seg, int n_seg, int T, int H, int V) {
    OT_REQUIRE(T >= 0 && H > 0 && V > 0 && n_seg >= 0 && n_seg <= T,
               "ot_cuda_embedding_bwd_sorted: bad sizes T %d H %d V %d n_seg %d", T, H, V, n_seg);
    if (!T || !n_seg || !dtable) return;
    embedding_bwd_sorted_kernel<<<n_seg, 128, 0, stream>>>(dtable, as_bf16(dout), ids, order, seg, H, V,
                                                           ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
}
