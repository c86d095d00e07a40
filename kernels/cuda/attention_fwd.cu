// Attention forward with sinks, GQA, sliding window and packed sequences, flash style: a block takes 64 queries
// of one head and walks over the keys they can see, 64 at a time, keeping a running maximum and normaliser per
// row (online softmax). Nothing of size T × T is ever stored.
//
// The sink is folded in as the starting state of every row: running max m = sink, normaliser = 1 (exp(sink − m)),
// output 0 (its value vector is zero). So m is finite from the start and a row with no visible key yet never
// computes exp(−inf − (−inf)). Scores are kept in the log2 domain (exp2f is one instruction).
#include "kernels/cuda/attention.cuh"

__global__ void __launch_bounds__(ATT_THREADS)
    attention_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const float *sinks,
                         const int32_t *seg_start, int T, int nh, int nkv, int window, float scale_log2,
                         unsigned *flags) {
    constexpr int D = ATT_D;
    __shared__ __align__(16) bf16 Qs[ATT_BQ][D + ATT_PAD];
    __shared__ __align__(16) bf16 Ks[ATT_BK][D + ATT_PAD];
    __shared__ __align__(16) bf16 Vt[D][ATT_BK + ATT_PAD]; // V transposed: the P·V fragments read pairs of keys
    __shared__ int lo_s[ATT_BQ];
    __shared__ int kmin_s;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gi = lane >> 2, ti = lane & 3;
    const int h = blockIdx.y, g = h / (nh / nkv);
    const int q0 = blockIdx.x * ATT_BQ;
    const int qlast = min(q0 + ATT_BQ, T) - 1;

    if (tid < ATT_BQ) {
        int i = q0 + tid;
        lo_s[tid] = i < T ? att_first_visible(seg_start, i, window, flags) : INT_MAX; // past the end: sees nothing
    }
    att_load_tile(Qs, q, q0, ATT_BQ, T, nh, h);
    __syncthreads();
    if (tid == 0) {
        int m = INT_MAX;
        for (int r = 0; r < ATT_BQ; r++) m = min(m, lo_s[r]);
        kmin_s = m; // <= q0, since row q0 exists and sees itself
    }
    __syncthreads();
    const int kmin = kmin_s;

    // This warp's 16 query rows as A fragments, kept in registers for the whole key loop.
    const int r0 = warp * 16 + gi;
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        qf[kk][0] = lds32(&Qs[r0][kk * 16 + ti * 2]);
        qf[kk][1] = lds32(&Qs[r0 + 8][kk * 16 + ti * 2]);
        qf[kk][2] = lds32(&Qs[r0][kk * 16 + 8 + ti * 2]);
        qf[kk][3] = lds32(&Qs[r0 + 8][kk * 16 + 8 + ti * 2]);
    }
    // Each thread holds two rows of the tile: i0 (accumulator slots 0, 1) and i1 = i0 + 8 (slots 2, 3).
    const int i0 = q0 + r0, i1 = i0 + 8;
    const int lo0 = lo_s[r0], lo1 = lo_s[r0 + 8];
    const float sink2 = sinks[h] * ATT_LOG2E;
    float m0 = sink2, m1 = sink2; // running maxima (log2 domain)
    float l0 = 0.0f, l1 = 0.0f;   // this thread's share of the normalisers (the sink's 1 is added at the end)
    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;

    for (int j0 = kmin; j0 <= qlast; j0 += ATT_BK) {
        __syncthreads(); // every warp is done with the previous K / V tile
        att_load_tile(Ks, k, j0, ATT_BK, T, nkv, g);
        for (int c = tid; c < ATT_BK * (D / 8); c += ATT_THREADS) {
            int row = c / (D / 8), col = (c % (D / 8)) * 8;
            uint4 val = make_uint4(0u, 0u, 0u, 0u);
            if (j0 + row < T) val = *reinterpret_cast<const uint4 *>(v + ((size_t)(j0 + row) * nkv + g) * D + col);
            const bf16 *ve = reinterpret_cast<const bf16 *>(&val);
#pragma unroll
            for (int u = 0; u < 8; u++) Vt[col + u][row] = ve[u];
        }
        __syncthreads();

        // S = Q·Kᵀ for 16 rows × 64 keys (8 tiles of 8 keys)
        float s[ATT_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < ATT_BK / 8; nt++) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t b0 = lds32(&Ks[nt * 8 + gi][kk * 16 + ti * 2]);
                uint32_t b1 = lds32(&Ks[nt * 8 + gi][kk * 16 + 8 + ti * 2]);
                mma_bf16_16816(s[nt], qf[kk], b0, b1);
            }
        }
        // Mask (the exact visibility rule per element), scale, row maxima over the quad of threads sharing a row.
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < ATT_BK / 8; nt++) {
#pragma unroll
            for (int c = 0; c < 2; c++) {
                int j = j0 + nt * 8 + ti * 2 + c;
                float x0 = (j >= lo0 && j <= i0) ? s[nt][c] * scale_log2 : -INFINITY;
                float x1 = (j >= lo1 && j <= i1) ? s[nt][2 + c] * scale_log2 : -INFINITY;
                s[nt][c] = x0;
                s[nt][2 + c] = x1;
                mx0 = fmaxf(mx0, x0);
                mx1 = fmaxf(mx1, x1);
            }
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const float al0 = exp2f(m0 - mn0), al1 = exp2f(m1 - mn1);
        m0 = mn0;
        m1 = mn1;
        float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
        for (int nt = 0; nt < ATT_BK / 8; nt++) {
#pragma unroll
            for (int c = 0; c < 2; c++) {
                s[nt][c] = exp2f(s[nt][c] - mn0); // masked: exp2(−inf) = 0
                s[nt][2 + c] = exp2f(s[nt][2 + c] - mn1);
                ps0 += s[nt][c];
                ps1 += s[nt][2 + c];
            }
        }
        l0 = l0 * al0 + ps0;
        l1 = l1 * al1 + ps1;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            o[dt][0] *= al0;
            o[dt][1] *= al0;
            o[dt][2] *= al1;
            o[dt][3] *= al1;
        }
        // O += P·V: the accumulators of key tiles 2·kk and 2·kk+1 are exactly the A fragment of a 16-key step.
#pragma unroll
        for (int kk = 0; kk < ATT_BK / 16; kk++) {
            uint32_t a[4];
            a[0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++) {
                uint32_t b0 = lds32(&Vt[dt * 8 + gi][kk * 16 + ti * 2]);
                uint32_t b1 = lds32(&Vt[dt * 8 + gi][kk * 16 + 8 + ti * 2]);
                mma_bf16_16816(o[dt], a, b0, b1);
            }
        }
    }

    // Whole-row normalisers: the quad's shares plus the sink's term, rescaled to the final maximum.
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    l0 += exp2f(sink2 - m0);
    l1 += exp2f(sink2 - m1);
    const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
    if (i0 < T) {
        bf16 *orow = out + ((size_t)i0 * nh + h) * D;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++)
            *reinterpret_cast<__nv_bfloat162 *>(orow + dt * 8 + ti * 2) =
                __floats2bfloat162_rn(o[dt][0] * inv0, o[dt][1] * inv0);
        if (ti == 0) lse[(size_t)i0 * nh + h] = (m0 + log2f(l0)) * ATT_LN2;
    }
    if (i1 < T) {
        bf16 *orow = out + ((size_t)i1 * nh + h) * D;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++)
            *reinterpret_cast<__nv_bfloat162 *>(orow + dt * 8 + ti * 2) =
                __floats2bfloat162_rn(o[dt][2] * inv1, o[dt][3] * inv1);
        if (ti == 0) lse[(size_t)i1 * nh + h] = (m1 + log2f(l1)) * ATT_LN2;
    }
}

void ot_cuda_attention_fwd(cudaStream_t stream, ot_bf16 *out, float *lse, const ot_bf16 *q, const ot_bf16 *k,
                           const ot_bf16 *v, const float *sinks, const int32_t *seg_start, int T, int nh, int nkv,
                           int D, int window) {
    att_check_args("ot_cuda_attention_fwd", q, k, v, T, nh, nkv, D);
    OT_REQUIRE((uintptr_t)out % 4 == 0, "ot_cuda_attention_fwd: out must be 4-byte aligned");
    OT_REQUIRE(nh <= 65535, "ot_cuda_attention_fwd: %d heads is too many", nh);
    if (!T) return;
    float scale_log2 = (float)(1.0 / sqrt((double)D)) * ATT_LOG2E;
    dim3 grid(ot_cdiv(T, ATT_BQ), nh);
    attention_fwd_kernel<<<grid, ATT_THREADS, 0, stream>>>(as_bf16(out), lse, as_bf16(q), as_bf16(k), as_bf16(v), sinks,
                                                           seg_start, T, nh, nkv, window, scale_log2,
                                                           ot_cuda_input_flags());
    OT_LAUNCH_CHECK();
}
