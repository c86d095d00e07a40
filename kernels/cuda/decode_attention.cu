// Batched decoding with a KV cache: storing the new keys and values, attention of the new queries over the cache,
// and the greedy pick (row argmax) of the next tokens. The cache of one layer is [S slots, nkv, L, D] bf16: slot s
// holds one sequence, position j of kv head g at row (s·nkv + g)·L + j, so one head's keys are contiguous.
//
// A step is a list of T tokens, token t belonging to slot slot[t] at position pos[t]. The keys and values of all
// of them are stored first (ot_cuda_kv_cache_store), then each token attends over its slot's positions up to its
// own (ot_cuda_attention_cache_fwd): the same kernels serve a prompt (many tokens of one slot) and a decoding step
// (one token of each live slot), in any mix.
#include "kernels/cuda/cuda_common.cuh"

#define DEC_D 64        // head dim (gpt-oss); as for the training attention kernels
#define DEC_BK 64       // keys per tile
#define DEC_MAX_GROUP 16 // query heads per kv head at most (gpt-oss: 8)
#define DEC_THREADS 128
#define DEC_KPAD 2      // bf16 padding of a shared key row: a row stride of 33 words, so the lanes of a warp reading
                        // one column of 32 consecutive keys hit 32 different banks

// A (slot, pos) pair outside the cache is bad data: flag it; the caller skips the access.
__device__ __forceinline__ int dec_bad(int s, int p, int S, int L, unsigned *flags) {
    if (s < 0 || s >= S || p < 0 || p >= L) {
        atomicOr(flags, (unsigned)OT_CUDA_BAD_CACHE);
        return 1;
    }
    return 0;
}

// ---- store ----------------------------------------------------------------------------------------------------
// One 16-byte chunk (8 bf16) of a key row and of a value row per loop iteration.
__global__ void kv_store_kernel(bf16 *kc, bf16 *vc, const bf16 *k, const bf16 *v, const int32_t *slot,
                                const int32_t *pos, int T, int nkv, int D, int S, int L, unsigned *flags) {
    const int chunks = D / 8;
    const size_t n = (size_t)T * nkv * chunks;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % chunks), g = (int)(i / chunks % nkv), t = (int)(i / chunks / nkv);
        int s = slot[t], p = pos[t];
        if (dec_bad(s, p, S, L, flags)) continue;
        size_t src = ((size_t)t * nkv + g) * D + (size_t)c * 8, dst = (((size_t)s * nkv + g) * L + p) * D + (size_t)c * 8;
        *reinterpret_cast<uint4 *>(kc + dst) = *reinterpret_cast<const uint4 *>(k + src);
        *reinterpret_cast<uint4 *>(vc + dst) = *reinterpret_cast<const uint4 *>(v + src);
    }
}

void ot_cuda_kv_cache_store(cudaStream_t stream, ot_bf16 *k_cache, ot_bf16 *v_cache, const ot_bf16 *k,
                            const ot_bf16 *v, const int32_t *slot, const int32_t *pos, int T, int nkv, int D, int S,
                            int L) {
    OT_REQUIRE(T >= 0 && nkv > 0 && D > 0 && D % 8 == 0 && S > 0 && L > 0,
               "ot_cuda_kv_cache_store: bad sizes T %d nkv %d D %d slots %d max_len %d", T, nkv, D, S, L);
    OT_REQUIRE((uintptr_t)k_cache % 16 == 0 && (uintptr_t)v_cache % 16 == 0 && (uintptr_t)k % 16 == 0 &&
                   (uintptr_t)v % 16 == 0,
               "ot_cuda_kv_cache_store: the caches, k and v must be 16-byte aligned");
    if (!T) return;
    size_t n = (size_t)T * nkv * (D / 8);
    kv_store_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(as_bf16(k_cache), as_bf16(v_cache), as_bf16(k),
                                                             as_bf16(v), slot, pos, T, nkv, D, S, L,
                                                             ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
}

// ---- attention over the cache ---------------------------------------------------------------------------------
// One block per (token, kv head): the `group` query heads that share the kv head read each key and value tile
// once. Online softmax per query head over tiles of 64 keys, in fp32 and the natural-log domain; the sink is the
// starting state (max = sink, normaliser = 1, output 0), as in attention_fwd.cu, so a row's maximum is finite
// from the start. A decoding token sees up to a few thousand keys; the work is reading them, so plain FMAs from
// shared memory are enough (no tensor cores).
__global__ void __launch_bounds__(DEC_THREADS)
    attention_cache_kernel(bf16 *out, const bf16 *q, const bf16 *kc, const bf16 *vc, const float *sinks,
                           const int32_t *slot, const int32_t *pos, int nh, int nkv, int S, int L, int window,
                           float scale, unsigned *flags) {
    constexpr int D = DEC_D;
    __shared__ __align__(16) bf16 Ks[DEC_BK][D + DEC_KPAD];
    __shared__ __align__(16) bf16 Vs[DEC_BK][D];
    __shared__ float qs[DEC_MAX_GROUP][D];
    __shared__ float ps[DEC_MAX_GROUP][DEC_BK]; // scores, then probabilities, of the current tile
    __shared__ float m_s[DEC_MAX_GROUP], l_s[DEC_MAX_GROUP], alpha_s[DEC_MAX_GROUP];

    const int t = blockIdx.x, g = blockIdx.y, group = nh / nkv, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31, n_warps = DEC_THREADS / 32;
    const int s = slot[t], p = pos[t];
    bf16 *orow = out + ((size_t)t * nh + (size_t)g * group) * D; // the group's heads are consecutive
    if (s < 0 || s >= S || p < 0 || p >= L) { // meaningless: NaN out (the flag tells why)
        if (tid == 0 && g == 0) atomicOr(flags, (unsigned)OT_CUDA_BAD_CACHE);
        for (int i = tid; i < group * D; i += DEC_THREADS) orow[i] = f2bf(NAN);
        return;
    }
    const int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0; // keys lo .. p are visible
    for (int i = tid; i < group * D; i += DEC_THREADS)
        qs[i / D][i % D] = bf2f(q[((size_t)t * nh + (size_t)g * group + i / D) * D + i % D]) * scale;
    if (tid < group) {
        m_s[tid] = sinks[g * group + tid];
        l_s[tid] = 1.0f; // exp(sink − max) with max = sink
    }
    // This thread's outputs: elements tid, tid + 128, ... of the group's [group, D] block (at most 8 of them).
    constexpr int PER = DEC_MAX_GROUP * D / DEC_THREADS;
    float acc[PER];
#pragma unroll
    for (int r = 0; r < PER; r++) acc[r] = 0.0f;
    const bf16 *kbase = kc + ((size_t)s * nkv + g) * (size_t)L * D, *vbase = vc + ((size_t)s * nkv + g) * (size_t)L * D;

    for (int j0 = lo; j0 <= p; j0 += DEC_BK) {
        const int nk = p - j0 + 1 < DEC_BK ? p - j0 + 1 : DEC_BK;
        __syncthreads(); // the previous tile is consumed (and qs, m_s, l_s are written before the first)
        for (int c = tid; c < DEC_BK * (D / 8); c += DEC_THREADS) {
            int row = c / (D / 8), col = (c % (D / 8)) * 8;
            uint4 kv = make_uint4(0u, 0u, 0u, 0u), vv = make_uint4(0u, 0u, 0u, 0u);
            if (row < nk) {
                kv = *reinterpret_cast<const uint4 *>(kbase + (size_t)(j0 + row) * D + col);
                vv = *reinterpret_cast<const uint4 *>(vbase + (size_t)(j0 + row) * D + col);
            }
            const bf16 *ke = reinterpret_cast<const bf16 *>(&kv);
#pragma unroll
            for (int u = 0; u < 8; u++) Ks[row][col + u] = ke[u]; // the padded rows are not 16-byte aligned
            *reinterpret_cast<uint4 *>(&Vs[row][col]) = vv;
        }
        __syncthreads();
        // scores: pair i = (head i / 64, key i % 64), consecutive lanes on consecutive keys
        for (int i = tid; i < group * DEC_BK; i += DEC_THREADS) {
            int h = i / DEC_BK, j = i % DEC_BK;
            float sc = 0.0f;
#pragma unroll 16
            for (int d = 0; d < D; d++) sc += qs[h][d] * bf2f(Ks[j][d]);
            ps[h][j] = sc;
        }
        __syncthreads();
        // per head (one warp each): new maximum, probabilities, normaliser
        for (int h = warp; h < group; h += n_warps) {
            float a = lane < nk ? ps[h][lane] : -INFINITY, b = lane + 32 < nk ? ps[h][lane + 32] : -INFINITY;
            float m_old = m_s[h], m_new = fmaxf(m_old, warp_max(fmaxf(a, b)));
            float pa = lane < nk ? expf(a - m_new) : 0.0f, pb = lane + 32 < nk ? expf(b - m_new) : 0.0f;
            ps[h][lane] = pa;
            ps[h][lane + 32] = pb;
            float sum = warp_sum(pa + pb);
            if (lane == 0) {
                float alpha = expf(m_old - m_new);
                alpha_s[h] = alpha;
                l_s[h] = l_s[h] * alpha + sum;
                m_s[h] = m_new;
            }
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < PER; r++) {
            int i = tid + r * DEC_THREADS;
            if (i >= group * D) break;
            int h = i / D, d = i % D;
            float a = acc[r] * alpha_s[h];
            for (int j = 0; j < nk; j++) a += ps[h][j] * bf2f(Vs[j][d]);
            acc[r] = a;
        }
    }
    __syncthreads(); // l_s of the last tile
#pragma unroll
    for (int r = 0; r < PER; r++) {
        int i = tid + r * DEC_THREADS;
        if (i < group * D) orow[i] = f2bf(acc[r] / l_s[i / D]);
    }
}

void ot_cuda_attention_cache_fwd(cudaStream_t stream, ot_bf16 *out, const ot_bf16 *q, const ot_bf16 *k_cache,
                                 const ot_bf16 *v_cache, const float *sinks, const int32_t *slot, const int32_t *pos,
                                 int T, int nh, int nkv, int D, int S, int L, int window) {
    OT_REQUIRE(T >= 0 && nh > 0 && nkv > 0 && nh % nkv == 0 && S > 0 && L > 0,
               "ot_cuda_attention_cache_fwd: bad sizes T %d nh %d nkv %d slots %d max_len %d", T, nh, nkv, S, L);
    OT_REQUIRE(D == DEC_D, "ot_cuda_attention_cache_fwd: head dim %d is not supported (the kernel is built for %d)", D,
               DEC_D);
    OT_REQUIRE(nh / nkv <= DEC_MAX_GROUP, "ot_cuda_attention_cache_fwd: %d query heads per kv head (at most %d)",
               nh / nkv, DEC_MAX_GROUP);
    OT_REQUIRE((uintptr_t)k_cache % 16 == 0 && (uintptr_t)v_cache % 16 == 0,
               "ot_cuda_attention_cache_fwd: the caches must be 16-byte aligned");
    OT_REQUIRE(T <= 0x7fffffff && nkv <= 65535, "ot_cuda_attention_cache_fwd: T %d / nkv %d too large", T, nkv);
    if (!T) return;
    dim3 grid((unsigned)T, (unsigned)nkv);
    attention_cache_kernel<<<grid, DEC_THREADS, 0, stream>>>(
        as_bf16(out), as_bf16(q), as_bf16(k_cache), as_bf16(v_cache), sinks, slot, pos, nh, nkv, S, L, window,
        (float)(1.0 / sqrt((double)D)), ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
}

// ---- greedy pick ----------------------------------------------------------------------------------------------
// One block per row: each thread scans a strided share, then a tree over shared memory. The better of two
// candidates is the larger value, the lower index on a tie — the CPU argmax (infer/generate.c) exactly.
#define ARGMAX_THREADS 256
__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(int32_t *idx, const float *x, int V) {
    __shared__ float bv[ARGMAX_THREADS];
    __shared__ int bi[ARGMAX_THREADS];
    const float *row = x + (size_t)blockIdx.x * V;
    float best = -INFINITY;
    int at = -1;
    for (int i = threadIdx.x; i < V; i += ARGMAX_THREADS)
        if (at < 0 || row[i] > best) { // increasing i: a tie keeps the lower index
            best = row[i];
            at = i;
        }
    bv[threadIdx.x] = best;
    bi[threadIdx.x] = at;
    for (int half = ARGMAX_THREADS / 2; half > 0; half >>= 1) {
        __syncthreads();
        if ((int)threadIdx.x < half) {
            float ov = bv[threadIdx.x + half];
            int oi = bi[threadIdx.x + half];
            int mine = bi[threadIdx.x];
            if (oi >= 0 && (mine < 0 || ov > bv[threadIdx.x] || (ov == bv[threadIdx.x] && oi < mine))) {
                bv[threadIdx.x] = ov;
                bi[threadIdx.x] = oi;
            }
        }
    }
    if (threadIdx.x == 0) idx[blockIdx.x] = bi[0];
}

void ot_cuda_argmax_rows(cudaStream_t stream, int32_t *idx, const float *x, int n, int V) {
    OT_REQUIRE(n >= 0 && n <= 0x7fffffff && V > 0, "ot_cuda_argmax_rows: bad sizes n %d V %d", n, V);
    if (!n) return;
    argmax_kernel<<<n, ARGMAX_THREADS, 0, stream>>>(idx, x, V);
    OT_LAUNCH_CHECK();
}
