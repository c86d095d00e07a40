// LoRA on a dense linear layer (PEFT semantics), GPU: fp32 adapter matrices, bf16 activations, fp32 products.
// xa = x·Aᵀ is kept in fp32 for backward, as the CPU reference keeps it in its element type.
//
// Every product has the rank r (e.g. 16) on one side, so it is thin and memory bound: the work is reading the
// bf16 activations once (and, for y and dx, writing them once). For r <= LORA_MAX_R three small kernels do
// exactly that, reading the bf16 activations directly:
//   thin_down   P[t, j]  = alpha · Σ_k Z[t, k] · M(j, k)        xa = x·Aᵀ, dxa = scale·dy·B   (P fp32 [T, r])
//   thin_up     Y[t, n]  = bf16(Y[t, n] + alpha · Σ_j P[t, j] · M(n, j))    y += scale·xa·Bᵀ, dx += dxa·A
//   thin_grad   G(n, j) += alpha · Σ_t Z[t, n] · P[t, j]        dB += scale·dyᵀ·xa, dA += dxaᵀ·x
// where M(a, b) is an fp32 adapter matrix read through strides (A [r, in] or B [out, r], as stored or transposed).
// thin_grad sums fixed chunks of T per block into a partial buffer and then adds the chunks in order: no atomics,
// so the adapter gradients are the same bits on every run. A larger rank takes the library path (cuBLAS SGEMM
// on fp32 copies of the activations; no TF32, since the results are checked against the CPU to 1e-4).
#include "kernels/cuda/lanes.cuh"

#define LORA_MAX_R 64
#define THIN_THREADS 256
#define THIN_ROWS 16  // rows of T per thin_down / thin_up block
#define THIN_KC 128   // k (or n) per staged chunk
#define GRAD_TC 256   // rows of T per thin_grad block (one partial sum each)
#define GRAD_TS 32    // rows of T staged at a time

typedef struct {
    const float *p;
    long s0, s1; // element (a, b) at p[a·s0 + b·s1]
} AdapterView;

__device__ __forceinline__ float av_at(AdapterView m, long a, long b) { return m.p[a * m.s0 + b * m.s1]; }

// P[t, j] = alpha · Σ_k Z[t, k] · M(j, k): one block per THIN_ROWS rows; each thread owns outputs (i, j) with
// i·r + j = tid + 256·u.
__global__ void __launch_bounds__(THIN_THREADS) thin_down_kernel(float *P, const bf16 *Z, long ldz, AdapterView M,
                                                                 int T, int K, int r, float alpha) {
    __shared__ float Zs[THIN_ROWS][THIN_KC + 1];
    __shared__ float Ms[LORA_MAX_R][THIN_KC + 1];
    const int t0 = blockIdx.x * THIN_ROWS, n_out = THIN_ROWS * r;
    float acc[LORA_MAX_R * THIN_ROWS / THIN_THREADS];
#pragma unroll
    for (int u = 0; u < LORA_MAX_R * THIN_ROWS / THIN_THREADS; u++) acc[u] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += THIN_KC) {
        const int kc = min(THIN_KC, K - k0);
        for (int l = threadIdx.x; l < THIN_ROWS * THIN_KC; l += THIN_THREADS) {
            int i = l / THIN_KC, kk = l % THIN_KC;
            Zs[i][kk] = (t0 + i < T && kk < kc) ? bf2f(Z[(long)(t0 + i) * ldz + k0 + kk]) : 0.0f;
        }
        for (int l = threadIdx.x; l < r * THIN_KC; l += THIN_THREADS) {
            int j = l / THIN_KC, kk = l % THIN_KC;
            Ms[j][kk] = kk < kc ? av_at(M, j, k0 + kk) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < LORA_MAX_R * THIN_ROWS / THIN_THREADS; u++) {
            int o = threadIdx.x + u * THIN_THREADS;
            if (o < n_out) {
                int i = o / r, j = o % r;
                float a = acc[u];
                for (int kk = 0; kk < kc; kk++) a += Zs[i][kk] * Ms[j][kk];
                acc[u] = a;
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < LORA_MAX_R * THIN_ROWS / THIN_THREADS; u++) {
        int o = threadIdx.x + u * THIN_THREADS;
        int i = o / r, j = o % r;
        if (o < n_out && t0 + i < T) P[(long)(t0 + i) * r + j] = alpha * acc[u];
    }
}

// Y[t, n] = bf16(Y[t, n] + alpha · Σ_j P[t, j] · M(n, j)): a block covers THIN_ROWS rows × THIN_KC columns, each
// thread 8 consecutive columns of one row (one 16-byte load and store of Y when aligned).
__global__ void __launch_bounds__(THIN_THREADS) thin_up_kernel(bf16 *Y, long ldy, const float *P, AdapterView M,
                                                               int T, int N, int r, float alpha) {
    __shared__ float Ps[THIN_ROWS][LORA_MAX_R];
    __shared__ float Ms[LORA_MAX_R][THIN_KC + 4];
    const int t0 = blockIdx.y * THIN_ROWS, n0 = blockIdx.x * THIN_KC;
    for (int l = threadIdx.x; l < THIN_ROWS * r; l += THIN_THREADS) {
        int i = l / r, j = l % r;
        Ps[i][j] = t0 + i < T ? P[(long)(t0 + i) * r + j] : 0.0f;
    }
    for (int l = threadIdx.x; l < r * THIN_KC; l += THIN_THREADS) {
        int nn = l % THIN_KC, j = l / THIN_KC;
        Ms[j][nn] = n0 + nn < N ? av_at(M, n0 + nn, j) : 0.0f;
    }
    __syncthreads();
    const int i = threadIdx.x / (THIN_KC / 8), c = (threadIdx.x % (THIN_KC / 8)) * 8, t = t0 + i, n = n0 + c;
    if (t >= T || n >= N) return;
    float v[8];
#pragma unroll
    for (int u = 0; u < 8; u++) v[u] = 0.0f;
    for (int j = 0; j < r; j++) {
        float pj = Ps[i][j];
#pragma unroll
        for (int u = 0; u < 8; u++) v[u] += pj * Ms[j][c + u];
    }
    bf16 *y = Y + (long)t * ldy + n;
    if (n + 8 <= N && ((uintptr_t)y & 15u) == 0) {
        uint4 q = *reinterpret_cast<const uint4 *>(y);
        uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int u = 0; u < 4; u++) {
            bf16 lo = __ushort_as_bfloat16((unsigned short)(w[u] & 0xffffu));
            bf16 hi = __ushort_as_bfloat16((unsigned short)(w[u] >> 16));
            w[u] = pack_bf16x2(bf2f(lo) + alpha * v[2 * u], bf2f(hi) + alpha * v[2 * u + 1]);
        }
        *reinterpret_cast<uint4 *>(y) = make_uint4(w[0], w[1], w[2], w[3]);
    } else {
        for (int u = 0; u < 8 && n + u < N; u++) y[u] = f2bf(bf2f(y[u]) + alpha * v[u]);
    }
}

// part[b, n, j] = Σ_{t in chunk b} Z[t, n] · P[t, j]: block (x, y) covers columns n0 .. n0+127 and rows chunk y;
// thread owns column n0 + tid % 128 and ranks j = tid / 128 + 2u.
__global__ void __launch_bounds__(THIN_THREADS) thin_grad_partial_kernel(float *part, const bf16 *Z, long ldz,
                                                                         const float *P, int T, int N, int r) {
    __shared__ float Zs[GRAD_TS][THIN_KC];
    __shared__ float Ps[GRAD_TS][LORA_MAX_R];
    const int n0 = blockIdx.x * THIN_KC, tb = blockIdx.y * GRAD_TC, te = min(T, tb + GRAD_TC);
    const int nn = threadIdx.x % THIN_KC, jb = threadIdx.x / THIN_KC;
    float acc[LORA_MAX_R / 2];
#pragma unroll
    for (int u = 0; u < LORA_MAX_R / 2; u++) acc[u] = 0.0f;
    for (int ts = tb; ts < te; ts += GRAD_TS) {
        for (int l = threadIdx.x; l < GRAD_TS * THIN_KC; l += THIN_THREADS) {
            int i = l / THIN_KC, c = l % THIN_KC;
            Zs[i][c] = (ts + i < te && n0 + c < N) ? bf2f(Z[(long)(ts + i) * ldz + n0 + c]) : 0.0f;
        }
        for (int l = threadIdx.x; l < GRAD_TS * r; l += THIN_THREADS) {
            int i = l / r, j = l % r;
            Ps[i][j] = ts + i < te ? P[(long)(ts + i) * r + j] : 0.0f;
        }
        __syncthreads();
        for (int i = 0; i < GRAD_TS; i++) {
            float z = Zs[i][nn];
#pragma unroll
            for (int u = 0; u < LORA_MAX_R / 2; u++)
                if (jb + 2 * u < r) acc[u] += z * Ps[i][jb + 2 * u];
        }
        __syncthreads();
    }
    if (n0 + nn >= N) return;
    float *out = part + ((long)blockIdx.y * N + n0 + nn) * r;
#pragma unroll
    for (int u = 0; u < LORA_MAX_R / 2; u++)
        if (jb + 2 * u < r) out[jb + 2 * u] = acc[u];
}

// G(n, j) += alpha · Σ_b part[b, n, j], the chunks in order.
__global__ void thin_grad_sum_kernel(float *G, long s0, long s1, const float *part, int n_chunks, int N, int r,
                                     float alpha) {
    const long total = (long)N * r;
    for (long o = blockIdx.x * (long)blockDim.x + threadIdx.x; o < total; o += (long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int b = 0; b < n_chunks; b++) s += part[(long)b * total + o];
        long n = o / r, j = o % r;
        G[n * s0 + j * s1] += alpha * s;
    }
}

static AdapterView adapter_view(const float *p, long s0, long s1) {
    AdapterView v = {p, s0, s1};
    return v;
}

static void thin_down(cudaStream_t s, float *P, const bf16 *Z, int T, int K, AdapterView M, int r, float alpha) {
    thin_down_kernel<<<ot_cdiv(T, THIN_ROWS), THIN_THREADS, 0, s>>>(P, Z, K, M, T, K, r, alpha);
    OT_LAUNCH_CHECK();
}

static void thin_up(cudaStream_t s, bf16 *Y, const float *P, int T, int N, AdapterView M, int r, float alpha) {
    dim3 grid(ot_cdiv(N, THIN_KC), ot_cdiv(T, THIN_ROWS));
    OT_REQUIRE(grid.y <= 65535, "lora: %d rows are too many for one launch", T);
    thin_up_kernel<<<grid, THIN_THREADS, 0, s>>>(Y, N, P, M, T, N, r, alpha);
    OT_LAUNCH_CHECK();
}

// G(n, j) += alpha · Σ_t Z[t, n] · P[t, j] with G(n, j) at G[n·s0 + j·s1].
static void thin_grad(cudaStream_t s, float *G, long s0, long s1, const bf16 *Z, const float *P, int T, int N, int r,
                      float alpha) {
    const int n_chunks = ot_cdiv(T, GRAD_TC);
    OT_REQUIRE(n_chunks <= 65535, "lora: %d rows are too many for one launch", T);
    float *part = ot_cuda_tmp<float>((size_t)n_chunks * N * r, s);
    thin_grad_partial_kernel<<<dim3(ot_cdiv(N, THIN_KC), n_chunks), THIN_THREADS, 0, s>>>(part, Z, N, P, T, N, r);
    OT_LAUNCH_CHECK();
    thin_grad_sum_kernel<<<ot_grid_for((size_t)N * r, THIN_THREADS), THIN_THREADS, 0, s>>>(G, s0, s1, part,
                                                                                           n_chunks, N, r, alpha);
    OT_LAUNCH_CHECK();
    ot_cuda_tmp_free(part, s);
}

// ---- the library path, for ranks above LORA_MAX_R --------------------------------------------------------------
static float *widen(cudaStream_t stream, const ot_bf16 *src, size_t n) {
    float *dst = ot_cuda_tmp<float>(n, stream);
    ot_cuda_bf16_to_f32(stream, dst, src, n);
    return dst;
}

// Row-major C[M, N] = alpha · op(A) · op(B) + beta · C, with op(A) M × K and op(B) K × N; `ta`/`tb` say the
// stored array is the transpose ([K, M] / [N, K]). cuBLAS is column-major, where a row-major array is its
// transpose, so this is Cᵀ = op(B)ᵀ · op(A)ᵀ there.
static void rm_sgemm(cublasHandle_t h, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    OT_CUBLAS_CHECK(cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                                ldb, A, lda, &beta, C, ldc));
}

static void lora_fwd_library(cudaStream_t stream, ot_bf16 *y, float *xa, const ot_bf16 *x, const float *A,
                             const float *B, int T, int in, int r, int out, float scale) {
    cublasHandle_t h = ot_cuda_thread_blas(stream);
    float *x32 = widen(stream, x, (size_t)T * in);
    rm_sgemm(h, 0, 1, T, r, in, 1.0f, x32, in, A, in, 0.0f, xa, r); // xa[T, r] = x · Aᵀ   (A [r, in])
    ot_cuda_tmp_free(x32, stream);
    float *ya = ot_cuda_tmp<float>((size_t)T * out, stream);
    rm_sgemm(h, 0, 1, T, out, r, scale, xa, r, B, r, 0.0f, ya, out); // scale · xa · Bᵀ   (B [out, r])
    ot_cuda_add_f32_to_bf16(stream, y, ya, (size_t)T * out);
    ot_cuda_tmp_free(ya, stream);
}

static void lora_bwd_library(cudaStream_t stream, ot_bf16 *dx, float *dA, float *dB, const ot_bf16 *dy,
                             const ot_bf16 *x, const float *xa, const float *A, const float *B, int T, int in, int r,
                             int out, float scale) {
    cublasHandle_t h = ot_cuda_thread_blas(stream);
    float *dy32 = widen(stream, dy, (size_t)T * out);
    if (dB) rm_sgemm(h, 1, 0, out, r, T, scale, dy32, out, xa, r, 1.0f, dB, r); // dB[out, r] += scale · dyᵀ · xa
    if (!dA && !dx) {
        ot_cuda_tmp_free(dy32, stream);
        return;
    }
    float *dxa = ot_cuda_tmp<float>((size_t)T * r, stream);
    rm_sgemm(h, 0, 0, T, r, out, scale, dy32, out, B, r, 0.0f, dxa, r); // dxa[T, r] = scale · dy · B   (B [out, r])
    ot_cuda_tmp_free(dy32, stream);
    if (dA) { // dA[r, in] += dxaᵀ · x
        float *x32 = widen(stream, x, (size_t)T * in);
        rm_sgemm(h, 1, 0, r, in, T, 1.0f, dxa, r, x32, in, 1.0f, dA, in);
        ot_cuda_tmp_free(x32, stream);
    }
    if (dx) { // dx[T, in] += dxa · A   (A [r, in])
        float *dxp = ot_cuda_tmp<float>((size_t)T * in, stream);
        rm_sgemm(h, 0, 0, T, in, r, 1.0f, dxa, r, A, in, 0.0f, dxp, in);
        ot_cuda_add_f32_to_bf16(stream, dx, dxp, (size_t)T * in);
        ot_cuda_tmp_free(dxp, stream);
    }
    ot_cuda_tmp_free(dxa, stream);
}

// ---- entry points ------------------------------------------------------------------------------------------------
void ot_cuda_lora_fwd(cudaStream_t stream, ot_bf16 *y, float *xa, const ot_bf16 *x, const float *A, const float *B,
                      int T, int in, int r, int out, float scale) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && out > 0, "ot_cuda_lora_fwd: bad sizes T %d in %d r %d out %d", T, in, r,
               out);
    if (!T) return;
    if (r > LORA_MAX_R) return lora_fwd_library(stream, y, xa, x, A, B, T, in, r, out, scale);
    thin_down(stream, xa, as_bf16(x), T, in, adapter_view(A, in, 1), r, 1.0f);     // xa = x · Aᵀ      (A [r, in])
    thin_up(stream, as_bf16(y), xa, T, out, adapter_view(B, r, 1), r, scale);      // y += scale·xa·Bᵀ (B [out, r])
}

void ot_cuda_lora_bwd(cudaStream_t stream, ot_bf16 *dx, float *dA, float *dB, const ot_bf16 *dy, const ot_bf16 *x,
                      const float *xa, const float *A, const float *B, int T, int in, int r, int out, float scale) {
    OT_REQUIRE(T >= 0 && in > 0 && r > 0 && out > 0, "ot_cuda_lora_bwd: bad sizes T %d in %d r %d out %d", T, in, r,
               out);
    if (!T) return;
    if (r > LORA_MAX_R) return lora_bwd_library(stream, dx, dA, dB, dy, x, xa, A, B, T, in, r, out, scale);
    if (dB) thin_grad(stream, dB, r, 1, as_bf16(dy), xa, T, out, r, scale); // dB[n, j] += scale·Σ_t dy[t, n]·xa[t, j]
    if (!dA && !dx) return;
    float *dxa = ot_cuda_tmp<float>((size_t)T * r, stream);
    thin_down(stream, dxa, as_bf16(dy), T, out, adapter_view(B, 1, r), r, scale); // dxa[t, j] = scale·Σ_n dy·B[n, j]
    if (dA) thin_grad(stream, dA, 1, in, as_bf16(x), dxa, T, in, r, 1.0f);        // dA[j, k] += Σ_t x[t, k]·dxa[t, j]
    if (dx) thin_up(stream, as_bf16(dx), dxa, T, in, adapter_view(A, 1, in), r, 1.0f); // dx[t, k] += Σ_j dxa·A[j, k]
    ot_cuda_tmp_free(dxa, stream);
}
