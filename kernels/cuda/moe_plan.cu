// MoE routing plumbing on the GPU: sort the (token, slot) pairs by expert (a stable counting sort: count, prefix
// sums, scatter), the row-tile table of the grouped products, the weighted combine and its backward, the routing
// weights' gradient from the down projection's input gradient, and the un-permutation of input gradients.
// Everything is deterministic: no atomics decide an order.
#include "kernels/cuda/cuda_common.cuh"

#define PLAN_THREADS 256

// An expert index outside 0..E-1 is bad data: flag it (when `flags` is given) and route the pair to expert 0, so
// every later index stays in bounds.
__device__ __forceinline__ int moe_expert_of(int32_t e, int E, unsigned *flags) {
    if (e >= 0 && e < E) return e;
    if (flags) atomicOr(flags, (unsigned)OT_CUDA_BAD_EXPERT);
    return 0;
}

// Block e counts the pairs routed to expert e.
__global__ void moe_count_kernel(int32_t *counts, const int32_t *idx, int n_pairs, int E, unsigned *flags) {
    int e = blockIdx.x, c = 0;
    for (int base = 0; base < n_pairs; base += blockDim.x) {
        int p = base + threadIdx.x;
        int pe = p < n_pairs ? moe_expert_of(idx[p], E, e == 0 ? flags : NULL) : -1;
        c += __syncthreads_count(pe == e);
    }
    if (threadIdx.x == 0) counts[e] = c;
}

// Block e writes its pairs to rows offsets[e] + rank, rank = the number of e's pairs with a smaller pair id (a
// block-wide exclusive scan of "is mine" per chunk of pairs: warp ballots, then the warps' totals).
__global__ void moe_scatter_kernel(int32_t *offsets, int32_t *perm, int32_t *inv, int32_t *row_token,
                                   const int32_t *counts, const int32_t *idx, int n_pairs, int E, int k) {
    __shared__ int warp_counts[PLAN_THREADS / 32];
    __shared__ int base_s;
    const int e = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0) {
        int o = 0;
        for (int f = 0; f < e; f++) o += counts[f];
        base_s = o;
        offsets[e] = o;
        if (e == E - 1) offsets[E] = o + counts[e];
    }
    __syncthreads();
    int running = base_s;
    for (int base = 0; base < n_pairs; base += PLAN_THREADS) {
        int p = base + tid;
        bool mine = p < n_pairs && moe_expert_of(idx[p], E, NULL) == e;
        unsigned ballot = __ballot_sync(0xffffffffu, mine);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < PLAN_THREADS / 32; w++) {
            before += w < warp ? warp_counts[w] : 0;
            total += warp_counts[w];
        }
        if (mine) {
            int row = running + before + __popc(ballot & ((1u << lane) - 1u));
            perm[row] = p;
            inv[p] = row;
            row_token[row] = p / k;
        }
        running += total;
        __syncthreads(); // warp_counts is rewritten by the next chunk
    }
}

// Row tiles of OT_CUDA_MOE_TILE_ROWS rows that never straddle two experts; spare entries get expert −1.
__global__ void moe_tiles_kernel(int32_t *tile_expert, int32_t *tile_row0, const int32_t *counts, int E,
                                 int n_tiles) {
    extern __shared__ int tile_start[]; // [E + 1]
    if (threadIdx.x == 0) {
        int s = 0;
        for (int e = 0; e < E; e++) {
            tile_start[e] = s;
            s += (counts[e] + OT_CUDA_MOE_TILE_ROWS - 1) / OT_CUDA_MOE_TILE_ROWS;
        }
        tile_start[E] = s;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n_tiles; i += blockDim.x) {
        int e = -1, row0 = 0;
        if (i < tile_start[E]) {
            e = 0;
            while (tile_start[e + 1] <= i) e++;
            int off = 0; // the expert's first row: the pairs of all experts before it
            for (int f = 0; f < e; f++) off += counts[f];
            row0 = off + (i - tile_start[e]) * OT_CUDA_MOE_TILE_ROWS;
        }
        tile_expert[i] = e;
        tile_row0[i] = row0;
    }
}

void ot_cuda_moe_plan_alloc(ot_cuda_moe_plan *p, int T, int k, int E) {
    OT_REQUIRE(T > 0 && k > 0 && E > 0 && k <= E, "ot_cuda_moe_plan_alloc: bad sizes T %d k %d E %d", T, k, E);
    OT_REQUIRE((long)T * k <= INT32_MAX / 2, "ot_cuda_moe_plan_alloc: T·k = %ld is too large", (long)T * k);
    memset(p, 0, sizeof(*p));
    p->T = T;
    p->k = k;
    p->E = E;
    p->n_pairs = T * k;
    p->n_tiles = (int)ot_cdiv(p->n_pairs, OT_CUDA_MOE_TILE_ROWS) + E;
    OT_REQUIRE(p->n_tiles <= 65535, "ot_cuda_moe_plan_alloc: %d row tiles exceed one grid dimension", p->n_tiles);
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p->counts, (size_t)E * sizeof(int32_t)));
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p->offsets, (size_t)(E + 1) * sizeof(int32_t)));
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p->perm, (size_t)p->n_pairs * sizeof(int32_t)));
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p->inv, (size_t)p->n_pairs * sizeof(int32_t)));
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p->row_token, (size_t)p->n_pairs * sizeof(int32_t)));
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p->tile_expert, (size_t)p->n_tiles * sizeof(int32_t)));
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p->tile_row0, (size_t)p->n_tiles * sizeof(int32_t)));
    OT_CUDA_CHECK(cudaMallocHost((void **)&p->host_offsets, (size_t)(E + 1) * sizeof(int32_t)));
    OT_CUDA_CHECK(cudaEventCreateWithFlags(&p->host_ready, cudaEventDisableTiming));
}

size_t ot_cuda_moe_plan_bytes(int T, int k, int E) {
    const size_t P = (size_t)T * k, tiles = ot_cdiv(P, OT_CUDA_MOE_TILE_ROWS) + E;
    return sizeof(int32_t) * ((size_t)E + (size_t)(E + 1) + 3 * P + 2 * tiles); // as ot_cuda_moe_plan_alloc takes
}

void ot_cuda_moe_plan_free(ot_cuda_moe_plan *p) {
    int32_t *bufs[] = {p->counts, p->offsets, p->perm, p->inv, p->row_token, p->tile_expert, p->tile_row0};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        if (bufs[i]) OT_CUDA_CHECK(cudaFree(bufs[i]));
    if (p->host_offsets) OT_CUDA_CHECK(cudaFreeHost(p->host_offsets));
    if (p->host_ready) OT_CUDA_CHECK(cudaEventDestroy(p->host_ready));
    memset(p, 0, sizeof(*p));
}

void ot_cuda_moe_plan_build(cudaStream_t stream, ot_cuda_moe_plan *p, const int32_t *idx) {
    OT_REQUIRE(p->perm, "ot_cuda_moe_plan_build: plan not allocated (ot_cuda_moe_plan_alloc)");
    moe_count_kernel<<<p->E, PLAN_THREADS, 0, stream>>>(p->counts, idx, p->n_pairs, p->E, ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
    moe_scatter_kernel<<<p->E, PLAN_THREADS, 0, stream>>>(p->offsets, p->perm, p->inv, p->row_token, p->counts, idx,
                                                          p->n_pairs, p->E, p->k);
    OT_LAUNCH_CHECK();
    size_t shmem = (size_t)(p->E + 1) * sizeof(int);
    OT_REQUIRE(shmem <= 48 * 1024, "ot_cuda_moe_plan_build: %d experts is too many", p->E);
    moe_tiles_kernel<<<1, PLAN_THREADS, shmem, stream>>>(p->tile_expert, p->tile_row0, p->counts, p->E, p->n_tiles);
    OT_LAUNCH_CHECK();
    // The host copy for the library path, waited for only there (ot_cuda_moe_plan_host_offsets): the fused
    // kernels read the device offsets, so a training step does not stop for the routing.
    OT_CUDA_CHECK(cudaMemcpyAsync(p->host_offsets, p->offsets, (size_t)(p->E + 1) * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, stream));
    OT_CUDA_CHECK(cudaEventRecord(p->host_ready, stream));
}

// ---- combine ---------------------------------------------------------------------------------------------------
// One block per token. Memory bound, so rows whose width is a multiple of 8 (and aligned) move as 16-byte vectors
// of 8 bf16 (V = 8), others element by element (V = 1); the arithmetic is the same per element.

// out[t] = Σ_slot w[t, slot] · y[inv[t·k + slot]]: each output element written once.
template <int V>
__global__ void moe_combine_fwd_kernel(bf16 *out, const bf16 *y, const float *w, const int32_t *inv, int k, int H) {
    int t = blockIdx.x;
    for (int c = threadIdx.x * V; c < H; c += blockDim.x * V) {
        float acc[V] = {}, v[V];
        for (int s = 0; s < k; s++) {
            size_t pair = (size_t)t * k + s;
            load_bf16s<V>(v, y + (size_t)inv[pair] * H + c);
#pragma unroll
            for (int j = 0; j < V; j++) acc[j] += w[pair] * v[j];
        }
        store_bf16s<V>(out + (size_t)t * H + c, acc);
    }
}

// dy[row of (t, slot)] = w · dout[t];  dw[t, slot] += dout[t] · y[row]
template <int V>
__global__ void moe_combine_bwd_kernel(bf16 *dy, float *dw, const bf16 *dout, const bf16 *y, const float *w,
                                       const int32_t *inv, int k, int H) {
    __shared__ float scratch[32];
    int t = blockIdx.x;
    const bf16 *dt = dout + (size_t)t * H;
    for (int s = 0; s < k; s++) {
        size_t pair = (size_t)t * k + s;
        size_t row = (size_t)inv[pair];
        float ws = w[pair], dot = 0.0f;
        for (int c = threadIdx.x * V; c < H; c += blockDim.x * V) {
            float d[V], o[V];
            load_bf16s<V>(d, dt + c);
#pragma unroll
            for (int j = 0; j < V; j++) o[j] = ws * d[j];
            store_bf16s<V>(dy + row * H + c, o);
            if (dw) {
                float yv[V];
                load_bf16s<V>(yv, y + row * H + c);
#pragma unroll
                for (int j = 0; j < V; j++) dot += d[j] * yv[j];
            }
        }
        if (dw) {
            dot = block_sum(dot, scratch); // uniform: dw is the same pointer for the whole block
            if (threadIdx.x == 0) dw[pair] += dot;
        }
    }
}

// dw[q] += dact[p]·act[p] / w[q] + dout[t]·b_e for plan row p = blockIdx.x (pair q = perm[p], token t = q / k,
// expert e = idx[q]); nothing for w[q] = 0. Each row is its own pair, so no two blocks write the same dw.
template <int V>
__global__ void moe_route_grad_kernel(float *dw, const bf16 *dact, const bf16 *act, const bf16 *dout,
                                      const bf16 *bias, const float *w, const int32_t *idx, const int32_t *perm, int k,
                                      int I, int H) {
    __shared__ float scratch[32];
    const int p = blockIdx.x, q = perm[p];
    const float wq = w[q];
    if (wq == 0.0f) return; // the whole block: nothing of this pair reaches the router
    float dot = 0.0f;
    for (int c = threadIdx.x * V; c < I; c += blockDim.x * V) {
        float d[V], a[V];
        load_bf16s<V>(d, dact + (size_t)p * I + c);
        load_bf16s<V>(a, act + (size_t)p * I + c);
#pragma unroll
        for (int j = 0; j < V; j++) dot += d[j] * a[j];
    }
    float total = block_sum(dot, scratch) / wq;
    if (bias) {
        const bf16 *g = dout + (size_t)(q / k) * H, *b = bias + (size_t)idx[q] * H;
        float bias_dot = 0.0f;
        for (int c = threadIdx.x * V; c < H; c += blockDim.x * V) {
            float gv[V], bv[V];
            load_bf16s<V>(gv, g + c);
            load_bf16s<V>(bv, b + c);
#pragma unroll
            for (int j = 0; j < V; j++) bias_dot += gv[j] * bv[j];
        }
        total += block_sum(bias_dot, scratch);
    }
    if (threadIdx.x == 0) dw[q] += total;
}

// dx[t] += Σ_slot dx_perm[inv[t·k + slot]]
template <int V>
__global__ void moe_unpermute_add_kernel(bf16 *dx, const bf16 *dx_perm, const int32_t *inv, int k, int H) {
    int t = blockIdx.x;
    for (int c = threadIdx.x * V; c < H; c += blockDim.x * V) {
        float acc[V], v[V];
        load_bf16s<V>(acc, dx + (size_t)t * H + c);
        for (int s = 0; s < k; s++) {
            load_bf16s<V>(v, dx_perm + (size_t)inv[(size_t)t * k + s] * H + c);
#pragma unroll
            for (int j = 0; j < V; j++) acc[j] += v[j];
        }
        store_bf16s<V>(dx + (size_t)t * H + c, acc);
    }
}

// Whether rows of width H in these buffers move as 16-byte vectors.
static bool rows_vec8(int H, const void *a, const void *b, const void *c) {
    return H % 8 == 0 && (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0 && (!c || (uintptr_t)c % 16 == 0);
}

void ot_cuda_moe_combine_fwd(cudaStream_t stream, ot_bf16 *out, const ot_bf16 *y, const float *w,
                             const ot_cuda_moe_plan *p, int H) {
    OT_REQUIRE(H > 0 && p->perm, "ot_cuda_moe_combine_fwd: bad hidden size %d or plan not allocated", H);
    if (rows_vec8(H, out, y, NULL))
        moe_combine_fwd_kernel<8><<<p->T, 128, 0, stream>>>(as_bf16(out), as_bf16(y), w, p->inv, p->k, H);
    else
        moe_combine_fwd_kernel<1><<<p->T, 256, 0, stream>>>(as_bf16(out), as_bf16(y), w, p->inv, p->k, H);
    OT_LAUNCH_CHECK();
}

void ot_cuda_moe_combine_bwd(cudaStream_t stream, ot_bf16 *dy, float *dw, const ot_bf16 *dout, const ot_bf16 *y,
                             const float *w, const ot_cuda_moe_plan *p, int H) {
    OT_REQUIRE(H > 0 && p->perm, "ot_cuda_moe_combine_bwd: bad hidden size %d or plan not allocated", H);
    OT_REQUIRE(y || !dw, "ot_cuda_moe_combine_bwd: dw needs y");
    if (rows_vec8(H, dy, dout, y))
        moe_combine_bwd_kernel<8><<<p->T, 128, 0, stream>>>(as_bf16(dy), dw, as_bf16(dout), as_bf16(y), w, p->inv,
                                                            p->k, H);
    else
        moe_combine_bwd_kernel<1><<<p->T, 256, 0, stream>>>(as_bf16(dy), dw, as_bf16(dout), as_bf16(y), w, p->inv,
                                                            p->k, H);
    OT_LAUNCH_CHECK();
}

void ot_cuda_moe_route_grad(cudaStream_t stream, float *dw, const ot_bf16 *dact, const ot_bf16 *act,
                            const ot_bf16 *dout, const ot_bf16 *bias, const float *w, const int32_t *idx,
                            const ot_cuda_moe_plan *p, int I, int H) {
    OT_REQUIRE(I > 0 && H > 0 && p->perm, "ot_cuda_moe_route_grad: bad sizes I %d H %d or plan not allocated", I, H);
    if (p->n_pairs == 0) return;
    if (rows_vec8(I, dact, act, NULL) && rows_vec8(H, dout, bias ? bias : dout, NULL))
        moe_route_grad_kernel<8><<<p->n_pairs, 128, 0, stream>>>(dw, as_bf16(dact), as_bf16(act), as_bf16(dout),
                                                                 as_bf16(bias), w, idx, p->perm, p->k, I, H);
    else
        moe_route_grad_kernel<1><<<p->n_pairs, 256, 0, stream>>>(dw, as_bf16(dact), as_bf16(act), as_bf16(dout),
                                                                 as_bf16(bias), w, idx, p->perm, p->k, I, H);
    OT_LAUNCH_CHECK();
}

void ot_cuda_moe_unpermute_add(cudaStream_t stream, ot_bf16 *dx, const ot_bf16 *dx_perm, const ot_cuda_moe_plan *p,
                               int H) {
    OT_REQUIRE(H > 0 && p->perm, "ot_cuda_moe_unpermute_add: bad hidden size %d or plan not allocated", H);
    if (rows_vec8(H, dx, dx_perm, NULL))
        moe_unpermute_add_kernel<8><<<p->T, 128, 0, stream>>>(as_bf16(dx), as_bf16(dx_perm), p->inv, p->k, H);
    else
        moe_unpermute_add_kernel<1><<<p->T, 256, 0, stream>>>(as_bf16(dx), as_bf16(dx_perm), p->inv, p->k, H);
    OT_LAUNCH_CHECK();
}
