// Token embedding on the GPU: a row gather forward, a scatter-add backward.
#include "kernels/cuda/cuda_common.cuh"

// One block per token. `table` holds rows v0 .. v0+nv−1 of the vocabulary (the whole table: v0 = 0, nv = V); a
// token whose id is elsewhere is left alone. A bad id cannot stop the kernel: the call that holds row 0 raises the
// flag and writes NaN, so nothing downstream mistakes the row for data.
__global__ void embedding_fwd_kernel(bf16 *out, const int32_t *ids, const bf16 *table, int H, int V, int v0, int nv,
                                     unsigned *flags) {
    int t = blockIdx.x;
    int id = ids[t];
    bf16 *o = out + (size_t)t * H;
    if (id < 0 || id >= V) {
        if (v0 != 0) return;
        if (threadIdx.x == 0) atomicOr(flags, (unsigned)OT_CUDA_BAD_TOKEN);
        for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = f2bf(NAN);
        return;
    }
    if (id < v0 || id >= v0 + nv) return;
    const bf16 *row = table + (size_t)(id - v0) * H;
    if (H % 8 == 0) { // 16-byte copies: rows start 16-byte aligned when H is a multiple of 8 and the bases are
        const uint4 *src = reinterpret_cast<const uint4 *>(row);
        uint4 *dst = reinterpret_cast<uint4 *>(o);
        for (int i = threadIdx.x; i < H / 8; i += blockDim.x) dst[i] = src[i];
    } else {
        for (int i = threadIdx.x; i < H; i += blockDim.x) o[i] = row[i];
    }
}

// Repeated ids collide, so the adds are atomic (fp32, order not fixed: agreement within rounding).
__global__ void embedding_bwd_kernel(float *dtable, const bf16 *dout, const int32_t *ids, int H, int V,
                                     unsigned *flags) {
    int t = blockIdx.x;
    int id = ids[t];
    if (id < 0 || id >= V) {
        if (threadIdx.x == 0) atomicOr(flags, (unsigned)OT_CUDA_BAD_TOKEN);
        return;
    }
    float *row = dtable + (size_t)id * H;
    const bf16 *d = dout + (size_t)t * H;
    for (int i = threadIdx.x; i < H; i += blockDim.x) atomicAdd(row + i, bf2f(d[i]));
}

void ot_cuda_embedding_fwd(cudaStream_t stream, ot_bf16 *out, const int32_t *ids, const ot_bf16 *table, int T, int H,
                           int V) {
    OT_REQUIRE(T >= 0 && H > 0 && V > 0, "ot_cuda_embedding_fwd: bad sizes T %d H %d V %d", T, H, V);
    OT_REQUIRE(H % 8 || ((uintptr_t)out % 16 == 0 && (uintptr_t)table % 16 == 0),
               "ot_cuda_embedding_fwd: out and table must be 16-byte aligned");
    if (!T) return;
    embedding_fwd_kernel<<<T, 256, 0, stream>>>(as_bf16(out), ids, as_bf16(table), H, V, 0, V, ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
}

void ot_cuda_embedding_rows_fwd(cudaStream_t stream, ot_bf16 *out, const int32_t *ids, const ot_bf16 *rows, int v0,
                                int nv, int T, int H, int V) {
    OT_REQUIRE(T >= 0 && H > 0 && V > 0 && v0 >= 0 && nv >= 0 && v0 + nv <= V,
               "ot_cuda_embedding_rows_fwd: bad sizes T %d H %d V %d rows %d..%d", T, H, V, v0, v0 + nv);
    OT_REQUIRE(H % 8 || ((uintptr_t)out % 16 == 0 && (uintptr_t)rows % 16 == 0),
               "ot_cuda_embedding_rows_fwd: out and rows must be 16-byte aligned");
    if (!T || (!nv && v0)) return;
    embedding_fwd_kernel<<<T, 256, 0, stream>>>(as_bf16(out), ids, as_bf16(rows), H, V, v0, nv, ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
}

void ot_cuda_embedding_bwd(cudaStream_t stream, float *dtable, const ot_bf16 *dout, const int32_t *ids, int T, int H,
                           int V) {
    OT_REQUIRE(T >= 0 && H > 0 && V > 0, "ot_cuda_embedding_bwd: bad sizes T %d H %d V %d", T, H, V);
    if (!T || !dtable) return;
    embedding_bwd_kernel<<<T, 256, 0, stream>>>(dtable, as_bf16(dout), ids, H, V, ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
}
