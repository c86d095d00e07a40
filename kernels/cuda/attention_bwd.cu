// Attention backward, flash style (the probabilities are recomputed from the saved lse; no T × T matrix):
//  1. prep:  Δ_i = dO_i · O_i per (query, head), and the sink gradient dsinks[h] −= Σ_i exp(sink_h − lse_i) · Δ_i
//            (spec §2.5: the sink is a key whose value vector is zero, so its softmax gradient is p_sink·(0 − Δ));
//  2. main:  one block per (64-key tile, kv head, slice of the group's query heads). It loops over its query heads
//            and the query tiles that can see its keys, computing with tensor cores
//              Sᵀ = K·Qᵀ, Pᵀ = exp(Sᵀ·scale − lse), dPᵀ = V·dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ − Δ),
//              dV += Pᵀ·dO, dK += dSᵀ·Q·scale, and dQ += dS·K·scale (fp32 atomics into a temporary).
//            A block with the whole group owns dK and dV of its keys and adds them into the bf16 result; with the
//            group sliced, the slices add fp32 atomically into a temporary. Why slice: one block per (key tile,
//            kv head) is one wave or less on a big GPU (2048 tokens: 256 blocks, 2 per SM by registers), and causal
//            masking makes the first key tiles' blocks several times longer than the last ones'; slices give
//            enough blocks to fill the SMs and balance them (benchmarks/RESULTS.md);
//  3. dq (and dk, dv when sliced) += the temporaries (bf16).
// Which query tiles can see a key tile: tile_kmin[qt] = the smallest first-visible key over the tile's rows, so
// the tile is skipped unless tile_kmin[qt] <= the key tile's last key (exact per element masking does the rest).
#include "kernels/cuda/attention.cuh"

// Smallest first-visible key over each 64-query tile.
__global__ void attention_tile_kmin_kernel(int *tile_kmin, const int32_t *seg_start, int T, int window,
                                           unsigned *flags) {
    __shared__ int m;
    if (threadIdx.x == 0) m = INT_MAX;
    __syncthreads();
    int i = blockIdx.x * ATT_BQ + threadIdx.x;
    if (i < T) atomicMin(&m, att_first_visible(seg_start, i, window, flags));
    __syncthreads();
    if (threadIdx.x == 0) tile_kmin[blockIdx.x] = m;
}

// One warp per query row at a time (each lane two columns of the head), 32 rows per block of 4 warps.
#define PREP_ROWS 32
__global__ void attention_bwd_prep_kernel(float *delta, float *dsinks, const bf16 *dout, const bf16 *out,
                                          const float *lse, const float *sinks, int T, int nh) {
    __shared__ float part_s[ATT_THREADS / 32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, h = blockIdx.y;
    const int rows_per_warp = PREP_ROWS / (ATT_THREADS / 32);
    float part = 0.0f;
    for (int r = 0; r < rows_per_warp; r++) {
        int i = blockIdx.x * PREP_ROWS + warp * rows_per_warp + r;
        if (i >= T) break;
        size_t row = (size_t)i * nh + h;
        float d = 0.0f;
        for (int c = lane; c < ATT_D / 2; c += 32) {
            __nv_bfloat162 a = reinterpret_cast<const __nv_bfloat162 *>(dout + row * ATT_D)[c];
            __nv_bfloat162 b = reinterpret_cast<const __nv_bfloat162 *>(out + row * ATT_D)[c];
            d += bf2f(a.x) * bf2f(b.x) + bf2f(a.y) * bf2f(b.y);
        }
        d = warp_sum(d);
        if (lane == 0) {
            delta[row] = d;
            part -= expf(sinks[h] - lse[row]) * d;
        }
    }
    if (lane == 0) part_s[warp] = part;
    __syncthreads();
    if (threadIdx.x == 0 && dsinks) {
        float s = 0.0f;
        for (int w = 0; w < ATT_THREADS / 32; w++) s += part_s[w];
        atomicAdd(dsinks + h, s);
    }
}

// Two adjacent fp32 sums at once (8-byte aligned): one vector atomic where the GPU has it (sm_90).
__device__ __forceinline__ void atomic_add_pair(float *dst, float a, float b) {
#if defined(OT_CUDA_EMULATED) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
    atomicAdd(reinterpret_cast<float2 *>(dst), make_float2(a, b));
#else
    atomicAdd(dst, a);
    atomicAdd(dst + 1, b);
#endif
}

// dkv_acc: NULL when a block has the whole group (it adds into dk / dv), else fp32 [2][T, nkv, D] (dK then dV) that
// the slices add into. heads_per_block = the slice's query heads (gridDim.z = rep / heads_per_block).
__global__ void __launch_bounds__(ATT_THREADS)
    attention_bwd_kernel(float *dq_acc, bf16 *dk, bf16 *dv, float *dkv_acc, const bf16 *dout, const float *lse,
                         const float *delta, const bf16 *q, const bf16 *k, const bf16 *v, const int32_t *seg_start,
                         const int *tile_kmin, int T, int nh, int nkv, int heads_per_block, int window, float scale,
                         float scale_log2, unsigned *flags) {
    constexpr int D = ATT_D;
    __shared__ __align__(16) bf16 Ks[ATT_BK][D + ATT_PAD];
    __shared__ __align__(16) bf16 Qs[ATT_BQ][D + ATT_PAD]; // also stages V once at the start
    __shared__ __align__(16) bf16 dOs[ATT_BQ][D + ATT_PAD];
    __shared__ __align__(16) bf16 dSs[ATT_BQ][ATT_BK + ATT_PAD]; // dS[query][key] for the dQ product
    __shared__ float lse_s[ATT_BQ], delta_s[ATT_BQ];
    __shared__ int lo_s[ATT_BQ];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gi = lane >> 2, ti = lane & 3;
    const int g = blockIdx.y, rep = nh / nkv;
    const int k0 = blockIdx.x * ATT_BK;
    const int k_last = min(k0 + ATT_BK, T) - 1;
    const int kr0 = warp * 16 + gi;            // this thread's key rows in the tile: kr0 and kr0 + 8
    const int ja = k0 + kr0, jb = ja + 8;      // ... as key indices

    // K and V of this tile as A fragments (rows = keys, k = head dim), in registers for the whole block.
    att_load_tile(Ks, k, k0, ATT_BK, T, nkv, g);
    att_load_tile(Qs, v, k0, ATT_BK, T, nkv, g);
    __syncthreads();
    uint32_t kf[D / 16][4], vf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        kf[kk][0] = lds32(&Ks[kr0][kk * 16 + ti * 2]);
        kf[kk][1] = lds32(&Ks[kr0 + 8][kk * 16 + ti * 2]);
        kf[kk][2] = lds32(&Ks[kr0][kk * 16 + 8 + ti * 2]);
        kf[kk][3] = lds32(&Ks[kr0 + 8][kk * 16 + 8 + ti * 2]);
        vf[kk][0] = lds32(&Qs[kr0][kk * 16 + ti * 2]);
        vf[kk][1] = lds32(&Qs[kr0 + 8][kk * 16 + ti * 2]);
        vf[kk][2] = lds32(&Qs[kr0][kk * 16 + 8 + ti * 2]);
        vf[kk][3] = lds32(&Qs[kr0 + 8][kk * 16 + 8 + ti * 2]);
    }
    float dk_acc[D / 8][4], dv_acc[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++)
#pragma unroll
        for (int c = 0; c < 4; c++) dk_acc[dt][c] = dv_acc[dt][c] = 0.0f;

    const int nqt = (T + ATT_BQ - 1) / ATT_BQ;
    const int h_first = g * rep + blockIdx.z * heads_per_block;
    for (int h = h_first; h < h_first + heads_per_block; h++) {
        // Queries before k0 never see these keys; with a window, queries past k_last + window − 1 do not either.
        for (int qt = k0 / ATT_BQ; qt < nqt; qt++) {
            const int qs = qt * ATT_BQ;
            if (window > 0 && qs > k_last + window - 1) break;
            if (tile_kmin[qt] > k_last) continue; // same value for the whole block: the barriers stay uniform
            __syncthreads(); // the previous step's readers of Qs / dOs / dSs / the row stats are done
            att_load_tile(Qs, q, qs, ATT_BQ, T, nh, h);
            att_load_tile(dOs, dout, qs, ATT_BQ, T, nh, h);
            if (tid < ATT_BQ) {
                int i = qs + tid;
                bool ok = i < T;
                lse_s[tid] = ok ? lse[(size_t)i * nh + h] * ATT_LOG2E : 0.0f;
                delta_s[tid] = ok ? delta[(size_t)i * nh + h] : 0.0f;
                lo_s[tid] = ok ? att_first_visible(seg_start, i, window, flags) : INT_MAX;
            }
            __syncthreads();

            // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: 16 keys × 64 queries per warp
            float st[ATT_BQ / 8][4], dpt[ATT_BQ / 8][4];
#pragma unroll
            for (int nt = 0; nt < ATT_BQ / 8; nt++) {
#pragma unroll
                for (int c = 0; c < 4; c++) st[nt][c] = dpt[nt][c] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < D / 16; kk++) {
                    uint32_t b0 = lds32(&Qs[nt * 8 + gi][kk * 16 + ti * 2]);
                    uint32_t b1 = lds32(&Qs[nt * 8 + gi][kk * 16 + 8 + ti * 2]);
                    mma_bf16_16816(st[nt], kf[kk], b0, b1);
                    b0 = lds32(&dOs[nt * 8 + gi][kk * 16 + ti * 2]);
                    b1 = lds32(&dOs[nt * 8 + gi][kk * 16 + 8 + ti * 2]);
                    mma_bf16_16816(dpt[nt], vf[kk], b0, b1);
                }
            }
            // Pᵀ and dSᵀ element by element; slot c holds key (c < 2 ? ja : jb), query column nt·8 + 2·ti + (c & 1).
#pragma unroll
            for (int nt = 0; nt < ATT_BQ / 8; nt++) {
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    int qc = nt * 8 + ti * 2 + (c & 1);
                    int j = c < 2 ? ja : jb;
                    bool vis = j >= lo_s[qc] && j <= qs + qc; // rows past T have lo = INT_MAX
                    float p = vis ? exp2f(st[nt][c] * scale_log2 - lse_s[qc]) : 0.0f;
                    st[nt][c] = p;
                    dpt[nt][c] = p * (dpt[nt][c] - delta_s[qc]);
                }
            }
            // dV += Pᵀ·dO and dK += dSᵀ·Q: A from the registers above (16 queries per step), B (query × d) read
            // from the row-major tiles as pairs of queries.
#pragma unroll
            for (int kq = 0; kq < ATT_BQ / 16; kq++) {
                uint32_t pa[4], da[4];
                pa[0] = pack_bf16x2(st[2 * kq][0], st[2 * kq][1]);
                pa[1] = pack_bf16x2(st[2 * kq][2], st[2 * kq][3]);
                pa[2] = pack_bf16x2(st[2 * kq + 1][0], st[2 * kq + 1][1]);
                pa[3] = pack_bf16x2(st[2 * kq + 1][2], st[2 * kq + 1][3]);
                da[0] = pack_bf16x2(dpt[2 * kq][0], dpt[2 * kq][1]);
                da[1] = pack_bf16x2(dpt[2 * kq][2], dpt[2 * kq][3]);
                da[2] = pack_bf16x2(dpt[2 * kq + 1][0], dpt[2 * kq + 1][1]);
                da[3] = pack_bf16x2(dpt[2 * kq + 1][2], dpt[2 * kq + 1][3]);
                const int qa = kq * 16 + ti * 2;
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++) {
                    const int d = dt * 8 + gi;
                    uint32_t b0 = pack2(dOs[qa][d], dOs[qa + 1][d]);
                    uint32_t b1 = pack2(dOs[qa + 8][d], dOs[qa + 9][d]);
                    mma_bf16_16816(dv_acc[dt], pa, b0, b1);
                    b0 = pack2(Qs[qa][d], Qs[qa + 1][d]);
                    b1 = pack2(Qs[qa + 8][d], Qs[qa + 9][d]);
                    mma_bf16_16816(dk_acc[dt], da, b0, b1);
                }
            }
            if (dq_acc) {
#pragma unroll
                for (int nt = 0; nt < ATT_BQ / 8; nt++)
#pragma unroll
                    for (int c = 0; c < 4; c++) dSs[nt * 8 + ti * 2 + (c & 1)][kr0 + (c < 2 ? 0 : 8)] = f2bf(dpt[nt][c]);
            }
            __syncthreads();
            if (dq_acc) {
                // dQ[query][d] += Σ_key dS[query][key] · K[key][d]; warp w takes queries 16w .. 16w + 15.
                const int qr = warp * 16 + gi;
                float dqp[D / 8][4];
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++) dqp[dt][0] = dqp[dt][1] = dqp[dt][2] = dqp[dt][3] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < ATT_BK / 16; kk++) {
                    uint32_t a[4];
                    a[0] = lds32(&dSs[qr][kk * 16 + ti * 2]);
                    a[1] = lds32(&dSs[qr + 8][kk * 16 + ti * 2]);
                    a[2] = lds32(&dSs[qr][kk * 16 + 8 + ti * 2]);
                    a[3] = lds32(&dSs[qr + 8][kk * 16 + 8 + ti * 2]);
                    const int ka = kk * 16 + ti * 2;
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++) {
                        const int d = dt * 8 + gi;
                        uint32_t b0 = pack2(Ks[ka][d], Ks[ka + 1][d]);
                        uint32_t b1 = pack2(Ks[ka + 8][d], Ks[ka + 9][d]);
                        mma_bf16_16816(dqp[dt], a, b0, b1);
                    }
                }
                const int ia = qs + qr, ib = ia + 8;
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++) {
                    const int col = dt * 8 + ti * 2;
                    if (ia < T)
                        atomic_add_pair(dq_acc + ((size_t)ia * nh + h) * D + col, dqp[dt][0] * scale,
                                        dqp[dt][1] * scale);
                    if (ib < T)
                        atomic_add_pair(dq_acc + ((size_t)ib * nh + h) * D + col, dqp[dt][2] * scale,
                                        dqp[dt][3] * scale);
                }
            }
        }
    }

    if (dkv_acc) { // a slice of the group: fp32 sums, added into dk / dv afterwards
        float *dk_f = dkv_acc, *dv_f = dkv_acc + (size_t)T * nkv * D;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            const int col = dt * 8 + ti * 2;
            if (ja < T) {
                size_t o = ((size_t)ja * nkv + g) * D + col;
                if (dk) atomic_add_pair(dk_f + o, dk_acc[dt][0] * scale, dk_acc[dt][1] * scale);
                if (dv) atomic_add_pair(dv_f + o, dv_acc[dt][0], dv_acc[dt][1]);
            }
            if (jb < T) {
                size_t o = ((size_t)jb * nkv + g) * D + col;
                if (dk) atomic_add_pair(dk_f + o, dk_acc[dt][2] * scale, dk_acc[dt][3] * scale);
                if (dv) atomic_add_pair(dv_f + o, dv_acc[dt][2], dv_acc[dt][3]);
            }
        }
        return;
    }
    // The whole group: this block is the only writer of dK / dV for its keys and kv head.
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        const int col = dt * 8 + ti * 2;
        if (ja < T) {
            size_t o = ((size_t)ja * nkv + g) * D + col;
            if (dk) {
                dk[o] = f2bf(bf2f(dk[o]) + dk_acc[dt][0] * scale);
                dk[o + 1] = f2bf(bf2f(dk[o + 1]) + dk_acc[dt][1] * scale);
            }
            if (dv) {
                dv[o] = f2bf(bf2f(dv[o]) + dv_acc[dt][0]);
                dv[o + 1] = f2bf(bf2f(dv[o + 1]) + dv_acc[dt][1]);
            }
        }
        if (jb < T) {
            size_t o = ((size_t)jb * nkv + g) * D + col;
            if (dk) {
                dk[o] = f2bf(bf2f(dk[o]) + dk_acc[dt][2] * scale);
                dk[o + 1] = f2bf(bf2f(dk[o + 1]) + dk_acc[dt][3] * scale);
            }
            if (dv) {
                dv[o] = f2bf(bf2f(dv[o]) + dv_acc[dt][2]);
                dv[o + 1] = f2bf(bf2f(dv[o + 1]) + dv_acc[dt][3]);
            }
        }
    }
}

// y += x (fp32 into bf16) for three pairs (dq; dk, dv when sliced) at once: blockIdx.y picks the pair; a pair
// with y NULL is skipped.
__global__ void attention_bwd_finish_kernel(bf16 *dq, const float *dq_acc, size_t n_q, bf16 *dk, const float *dk_acc,
                                            bf16 *dv, const float *dv_acc, size_t n_kv) {
    bf16 *y = blockIdx.y == 0 ? dq : blockIdx.y == 1 ? dk : dv;
    const float *x = blockIdx.y == 0 ? dq_acc : blockIdx.y == 1 ? dk_acc : dv_acc;
    const size_t n = blockIdx.y == 0 ? n_q : n_kv;
    if (!y || !x) return;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = f2bf(bf2f(y[i]) + x[i]);
}

// How many slices the query heads of a group are cut into: the fewest that give about four blocks per SM slot
// (so the long blocks of the first key tiles are spread), a divisor of the group size. OT_ATT_BWD_SLICES=N forces
// N (rounded down to a divisor), for measuring.
static int attention_bwd_slices(int T, int nkv, int rep) {
    int want = 0;
    const char *env = getenv("OT_ATT_BWD_SLICES");
    if (env && *env) want = atoi(env);
    if (want <= 0) {
        const int blocks = (int)ot_cdiv(T, ATT_BK) * nkv, target = 4 * 2 * ot_cuda_sm_count();
        want = 1;
        while (want < rep && blocks * want < target) want *= 2;
    }
    if (want > rep) want = rep;
    while (rep % want) want--;
    return want;
}

size_t ot_cuda_attention_bwd_tmp_bytes(int T, int nh, int nkv, int D) {
    // delta [T, nh] and the tiles' first keys, then the fp32 sums of dq and (sliced) dk, dv at their largest
    const size_t Tz = (size_t)T;
    return sizeof(float) * Tz * nh + sizeof(int) * ot_cdiv(T, ATT_BQ) + sizeof(float) * Tz * D * ((size_t)nh + 2 * nkv);
}

void ot_cuda_attention_bwd(cudaStream_t stream, ot_bf16 *dq, ot_bf16 *dk, ot_bf16 *dv, float *dsinks,
                           const ot_bf16 *dout, const ot_bf16 *out, const float *lse, const ot_bf16 *q,
                           const ot_bf16 *k, const ot_bf16 *v, const float *sinks, const int32_t *seg_start, int T,
                           int nh, int nkv, int D, int window) {
    att_check_args("ot_cuda_attention_bwd", q, k, v, T, nh, nkv, D);
    OT_REQUIRE((uintptr_t)dout % 16 == 0 && (uintptr_t)out % 4 == 0,
               "ot_cuda_attention_bwd: dout must be 16-byte and out 4-byte aligned");
    OT_REQUIRE(nh <= 65535, "ot_cuda_attention_bwd: %d heads is too many", nh);
    if (!T || (!dq && !dk && !dv && !dsinks)) return;
    unsigned *flags = ot_cuda_input_flags();
    const int nqt = (int)ot_cdiv(T, ATT_BQ);
    float *delta = ot_cuda_tmp<float>((size_t)T * nh, stream);
    int *tile_kmin = ot_cuda_tmp<int>((size_t)nqt, stream);
    // The fp32 sums: dq's [T, nh, D], then (sliced) dk's and dv's [T, nkv, D] — one temporary, one memset.
    const int rep = nh / nkv, slices = (dq || dk || dv) ? attention_bwd_slices(T, nkv, rep) : 1;
    const size_t n_q = (size_t)T * nh * D, n_kv = (size_t)T * nkv * D;
    const size_t n_acc = (dq ? n_q : 0) + (slices > 1 && (dk || dv) ? 2 * n_kv : 0);
    float *acc = NULL, *dq_acc = NULL, *dkv_acc = NULL;
    if (n_acc) {
        acc = ot_cuda_tmp<float>(n_acc, stream);
        OT_CUDA_CHECK(cudaMemsetAsync(acc, 0, n_acc * sizeof(float), stream));
        dq_acc = dq ? acc : NULL;
        dkv_acc = slices > 1 && (dk || dv) ? acc + (dq ? n_q : 0) : NULL;
    }
    attention_tile_kmin_kernel<<<nqt, ATT_BQ, 0, stream>>>(tile_kmin, seg_start, T, window, flags);
    OT_LAUNCH_CHECK();
    attention_bwd_prep_kernel<<<dim3(ot_cdiv(T, PREP_ROWS), nh), ATT_THREADS, 0, stream>>>(
        delta, dsinks, as_bf16(dout), as_bf16(out), lse, sinks, T, nh);
    OT_LAUNCH_CHECK();
    if (dq || dk || dv) {
        float scale = (float)(1.0 / sqrt((double)D));
        attention_bwd_kernel<<<dim3(ot_cdiv(T, ATT_BK), nkv, slices), ATT_THREADS, 0, stream>>>(
            dq_acc, as_bf16(dk), as_bf16(dv), dkv_acc, as_bf16(dout), lse, delta, as_bf16(q), as_bf16(k),
            as_bf16(v), seg_start, tile_kmin, T, nh, nkv, rep / slices, window, scale, scale * ATT_LOG2E, flags);
        OT_LAUNCH_CHECK();
        // dq += its sum; dk, dv += theirs when sliced: one launch
        bf16 *dst[3] = {as_bf16(dq), dkv_acc ? as_bf16(dk) : NULL, dkv_acc ? as_bf16(dv) : NULL};
        const float *src[3] = {dq_acc, dkv_acc, dkv_acc ? dkv_acc + n_kv : NULL};
        const size_t n[3] = {n_q, n_kv, n_kv};
        // a bounded grid (grid-stride loops): dk's and dv's rows are fewer than dq's, and idle blocks cost
        unsigned blocks = ot_grid_for(n_q, 256 * 4);
        if (blocks > 1024) blocks = 1024;
        attention_bwd_finish_kernel<<<dim3(blocks, 3), 256, 0, stream>>>(dst[0], src[0], n[0], dst[1], src[1], dst[2],
                                                                          src[2], n[1]);
        OT_LAUNCH_CHECK();
    }
    if (acc) ot_cuda_tmp_free(acc, stream);
    ot_cuda_tmp_free(tile_kmin, stream);
    ot_cuda_tmp_free(delta, stream);
}
