// Host emulation of the CUDA runtime calls, the cuBLAS product and every op of kernels/cuda/ops_cuda.h, for checking
// the trainer's CUDA composition (trainer/graph/gptoss_cuda.c, trainer/model/model_cuda.c) on a machine without a GPU.
// "Device" memory is host memory (filled with 0xFF, NaN, when allocated); every op is the CPU reference op of
// kernels/ops.h on float copies of its bf16 inputs, its bf16 outputs rounded as the GPU stores them, and its
// accumulate / overwrite behaviour as ops_cuda.h states it.
//
// EMU_EXACT=1: each bf16 value an op writes is also kept as a float shadow that later reads use, so the composition
// runs in fp32 end to end and must match the CPU reference to fp32 rounding — a sharp check of the wiring (layer
// order, LoRA slots and offsets, zeroing, accumulation, recomputation, optimizer). Without it, the bf16 storage
// points are those of the GPU (the kernels' internal roundings excepted), which is how test_train_cuda's
// tolerances were set. tests/gpu/train_emu/run.sh builds and runs it.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"

// ---- runtime ------------------------------------------------------------------------------------------------
static size_t g_used = 0;
static int g_exact = -1;
typedef struct {
    char *p;
    size_t n;
    float *shadow;
    unsigned char *valid;
} alloc_rec;
static alloc_rec *g_allocs;
static int g_n_allocs, g_cap_allocs;
static int exact(void) {
    if (g_exact < 0) g_exact = getenv("EMU_EXACT") && atoi(getenv("EMU_EXACT"));
    return g_exact;
}
// The last few allocations found: element-wise loops (a product reads two or three arrays in turn) hit them, which
// keeps the exact mode's shadow look-ups from scanning every allocation for every element.
#define EMU_RECENT 4
static int g_recent[EMU_RECENT] = {-1, -1, -1, -1}, g_recent_next;
static alloc_rec *find_alloc(const void *q) {
    const char *c = q;
    for (int r = 0; r < EMU_RECENT; r++) {
        int i = g_recent[r];
        if (i >= 0 && i < g_n_allocs && c >= g_allocs[i].p && c < g_allocs[i].p + g_allocs[i].n) return &g_allocs[i];
    }
    for (int i = g_n_allocs - 1; i >= 0; i--)
        if (c >= g_allocs[i].p && c < g_allocs[i].p + g_allocs[i].n) {
            g_recent[g_recent_next] = i;
            g_recent_next = (g_recent_next + 1) % EMU_RECENT;
            return &g_allocs[i];
        }
    return NULL;
}
static void *emu_alloc(size_t n) {
    char *p = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    g_used += n;
    memset(p, 0xff, n); // poison: NaN patterns, so reads of never-written memory show up
    if (g_n_allocs == g_cap_allocs) {
        g_cap_allocs = g_cap_allocs ? 2 * g_cap_allocs : 256;
        g_allocs = realloc(g_allocs, sizeof(alloc_rec) * g_cap_allocs);
    }
    alloc_rec r = {p, n ? n : 1, NULL, NULL};
    if (exact()) {
        r.shadow = malloc(sizeof(float) * (n / 2 + 1));
        r.valid = calloc(n / 2 + 1, 1);
    }
    g_allocs[g_n_allocs++] = r;
    return p;
}
static void emu_free(void *p) {
    if (!p) return;
    for (int i = 0; i < g_n_allocs; i++)
        if (g_allocs[i].p == p) {
            g_used -= g_allocs[i].n;
            free(g_allocs[i].shadow);
            free(g_allocs[i].valid);
            free(p);
            g_allocs[i] = g_allocs[--g_n_allocs];
            for (int r = 0; r < EMU_RECENT; r++) g_recent[r] = -1; // the indices moved
            return;
        }
    fprintf(stderr, "emu: free of unknown pointer\n");
    abort();
}
// bf16 element access through the shadow
static float rd(const uint16_t *x, size_t i) {
    if (exact()) {
        alloc_rec *r = find_alloc(x + i);
        if (r && r->shadow) {
            size_t k = (size_t)((const char *)(x + i) - r->p) / 2;
            if (r->valid[k]) return r->shadow[k];
        }
    }
    return ot_bf16_to_f32(x[i]);
}
static void wr(uint16_t *x, size_t i, float v) {
    x[i] = ot_f32_to_bf16(v);
    if (exact()) {
        alloc_rec *r = find_alloc(x + i);
        if (r && r->shadow) {
            size_t k = (size_t)((char *)(x + i) - r->p) / 2;
            r->shadow[k] = v;
            r->valid[k] = 1;
        }
    }
}
// after a raw byte write: the shadow no longer holds the value (memset 0 does: zero is exact)
static void raw_written(void *d, size_t n, int zero) {
    if (!exact()) return;
    alloc_rec *r = find_alloc(d);
    if (!r || !r->shadow) return;
    size_t k0 = (size_t)((char *)d - r->p) / 2, k1 = ((size_t)((char *)d - r->p) + n + 1) / 2;
    for (size_t k = k0; k < k1 && k <= r->n / 2; k++) {
        r->valid[k] = zero;
        r->shadow[k] = 0;
    }
}
static void raw_copied(void *d, const void *s, size_t n) {
    if (!exact()) return;
    alloc_rec *rd_ = find_alloc(s), *rw = find_alloc(d);
    if (!rw || !rw->shadow) return;
    size_t kd = (size_t)((char *)d - rw->p) / 2;
    if (rd_ && rd_->shadow && ((size_t)((const char *)s - rd_->p) % 2) == ((size_t)((char *)d - rw->p) % 2)) {
        size_t ks = (size_t)((const char *)s - rd_->p) / 2;
        memmove(rw->shadow + kd, rd_->shadow + ks, sizeof(float) * (n / 2));
        memmove(rw->valid + kd, rd_->valid + ks, n / 2);
    } else
        raw_written(d, n, 0);
}
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = emu_alloc(n);
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    emu_free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = emu_alloc(n);
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p) {
    emu_free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
    (void)s;
    *p = emu_alloc(n);
    return cudaSuccess;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
    (void)s;
    emu_free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k) {
    (void)k;
    raw_copied(d, s, n);
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k, cudaStream_t st) {
    (void)st;
    return cudaMemcpy(d, s, n, k);
}
cudaError_t cudaMemset(void *d, int v, size_t n) {
    memset(d, v, n);
    raw_written(d, n, v == 0);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t s) {
    (void)s;
    return cudaMemset(d, v, n);
}
static int g_stream_dummy;
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned f) {
    (void)f;
    *s = (cudaStream_t)&g_stream_dummy;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
// Work runs when it is queued, so an event is always complete and waiting on one is a no-op.
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned f) {
    (void)s;
    (void)e;
    (void)f;
    return cudaSuccess;
}
// "Device" memory is host memory: managed (visible to both), which lets the sharded model gather it through MPI.
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p) {
    memset(a, 0, sizeof *a);
    if (!find_alloc(p)) return cudaErrorInvalidValue;
    a->type = cudaMemoryTypeManaged;
    a->devicePointer = a->hostPointer = (void *)p;
    return cudaSuccess;
}
static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t)calloc(1, sizeof(double));
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned f) {
    (void)f;
    return cudaEventCreate(e);
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)s;
    *(double *)e = now_ms();
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    (void)e;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)(*(double *)b - *(double *)a);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    free(e);
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    (void)d;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) {
    *t = (size_t)80 << 30;
    *f = *t - g_used;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
    return cudaSuccess;
}
const char *cudaGetErrorString(cudaError_t e) {
    (void)e;
    return "emulated error";
}
const char *cudaGetErrorName(cudaError_t e) {
    (void)e;
    return "emuError";
}
static int g_pool_dummy;
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *p, int d) {
    (void)d;
    *p = (cudaMemPool_t)&g_pool_dummy;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetMemPool(cudaMemPool_t *p, int d) {
    return cudaDeviceGetDefaultMemPool(p, d);
}
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t p, enum cudaMemPoolAttr a, void *v) {
    (void)p;
    (void)a;
    *(uint64_t *)v = 0;
    return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t p, enum cudaMemPoolAttr a, void *v) {
    (void)p;
    (void)a;
    (void)v;
    return cudaSuccess;
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t p, size_t n) {
    (void)p;
    (void)n;
    return cudaSuccess;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    (void)h;
    (void)s;
    return CUBLAS_STATUS_SUCCESS;
}
static float rd(const uint16_t *x, size_t i);
static void wr(uint16_t *x, size_t i, float v);
static float ld(const void *p, cudaDataType t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    return rd((const uint16_t *)p, i);
}
// column-major C (m × n) = alpha op(A) op(B) + beta C
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t comp,
                            cublasGemmAlgo_t algo) {
    (void)h;
    (void)comp;
    (void)algo;
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc = 0;
            for (int p = 0; p < k; p++) {
                float a = ta == CUBLAS_OP_N ? ld(A, at, (size_t)p * lda + i) : ld(A, at, (size_t)i * lda + p);
                float b = tb == CUBLAS_OP_N ? ld(B, bt, (size_t)j * ldb + p) : ld(B, bt, (size_t)p * ldb + j);
                acc += (double)a * b;
            }
            size_t o = (size_t)j * ldc + i;
            float old = be != 0 ? ld(C, ct, o) : 0.0f;
            float v = al * (float)acc + be * old;
            if (ct == CUDA_R_32F)
                ((float *)C)[o] = v;
            else
                wr((uint16_t *)C, o, v);
        }
    return CUBLAS_STATUS_SUCCESS;
}

// ---- helpers ------------------------------------------------------------------------------------------------
static float *tof(const ot_bf16 *x, size_t n) {
    float *f = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) f[i] = rd(x, i);
    return f;
}
static float *zeros(size_t n) {
    return calloc(n ? n : 1, sizeof(float));
}
static void tobf(ot_bf16 *dst, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) wr(dst, i, f[i]);
}
// dst (bf16) += f
static void addbf(ot_bf16 *dst, const float *f, size_t n) {
    for (size_t i = 0; i < n; i++) wr(dst, i, rd(dst, i) + f[i]);
}
static void need(int c, const char *what) {
    if (!c) {
        fprintf(stderr, "emu: %s\n", what);
        abort();
    }
}

// ---- ops ----------------------------------------------------------------------------------------------------
void ot_cublas_check_at(int status, const char *expr, const char *file, int line) {
    if (status) ot_die_at(file, line, "emulated cuBLAS error %d from %s", status, expr);
}
static unsigned g_flags;
unsigned *ot_cuda_input_flags(void) {
    return &g_flags;
}
int ot_cuda_check_inputs(cudaStream_t s, ot_err *err) {
    (void)s;
    if (!g_flags) return 0;
    g_flags = 0;
    return ot_fail(err, "emulated kernels saw bad input");
}
void ot_cuda_init(int d) {
    (void)d;
}
void ot_cuda_blas_init(ot_cuda_blas *b) {
    memset(b, 0, sizeof *b);
    b->lt = b;
    b->blas = b;
    b->workspace_size = 1;
}
void ot_cuda_blas_free(ot_cuda_blas *b) {
    memset(b, 0, sizeof *b);
}
void ot_cuda_f32_to_bf16(cudaStream_t s, ot_bf16 *d, const float *x, size_t n) {
    (void)s;
    tobf(d, x, n);
}
void ot_cuda_bf16_to_f32(cudaStream_t s, float *d, const ot_bf16 *x, size_t n) {
    (void)s;
    for (size_t i = 0; i < n; i++) d[i] = rd(x, i);
}
void ot_cuda_add_bf16(cudaStream_t s, ot_bf16 *y, const ot_bf16 *x, size_t n) {
    (void)s;
    for (size_t i = 0; i < n; i++) wr(y, i, rd(y, i) + rd(x, i));
}
void ot_cuda_scale_f32(cudaStream_t s, float *x, size_t n, float f) {
    (void)s;
    for (size_t i = 0; i < n; i++) x[i] *= f;
}

void ot_cuda_embedding_fwd(cudaStream_t s, ot_bf16 *out, const int32_t *ids, const ot_bf16 *table, int T, int H,
                           int V) {
    (void)s;
    for (int t = 0; t < T; t++) {
        need(ids[t] >= 0 && ids[t] < V, "embedding id");
        for (int i = 0; i < H; i++) wr(out, (size_t)t * H + i, rd(table, (size_t)ids[t] * H + i));
    }
}
// The order of additions is ot_embedding_bwd's (positions of one id in increasing order), as on the GPU.
void ot_cuda_embedding_bwd_sorted(cudaStream_t s, float *dt, const ot_bf16 *dout, const int32_t *ids,
                                  const int32_t *order, const int32_t *seg, int n_seg, int T, int H, int V) {
    (void)s;
    (void)T;
    if (!dt) return;
    for (int g = 0; g < n_seg; g++) {
        int id = ids[order[seg[g]]];
        need(id >= 0 && id < V, "embedding id");
        for (int r = seg[g]; r < seg[g + 1]; r++) {
            need(ids[order[r]] == id, "embedding_bwd_sorted: a run holds two ids");
            for (int i = 0; i < H; i++) dt[(size_t)id * H + i] += rd(dout, (size_t)order[r] * H + i);
        }
    }
}
void ot_cuda_weight_refresh(cudaStream_t s, const ot_cuda_refresh_seg *segs, int n_segs, size_t max_n,
                            const float *master) {
    (void)s;
    for (int g = 0; g < n_segs; g++) {
        need(segs[g].n <= max_n, "weight_refresh: a segment longer than max_n");
        for (size_t i = 0; i < segs[g].n; i++) {
            if (segs[g].f32) ((float *)segs[g].dst)[i] = master[segs[g].src + i];
            else wr((uint16_t *)segs[g].dst, i, master[segs[g].src + i]); // exact mode: the fp32 value is kept
        }
    }
}
void ot_cuda_embedding_rows_fwd(cudaStream_t s, ot_bf16 *out, const int32_t *ids, const ot_bf16 *rows, int v0, int nv,
                                int T, int H, int V) {
    (void)s;
    for (int t = 0; t < T; t++) {
        need(ids[t] >= 0 && ids[t] < V, "embedding id");
        if (ids[t] < v0 || ids[t] >= v0 + nv) continue;
        for (int i = 0; i < H; i++) wr(out, (size_t)t * H + i, rd(rows, (size_t)(ids[t] - v0) * H + i));
    }
}
void ot_cuda_embedding_bwd(cudaStream_t s, float *dt, const ot_bf16 *dout, const int32_t *ids, int T, int H, int V) {
    (void)s;
    (void)dt;
    (void)dout;
    (void)ids;
    (void)T;
    (void)H;
    (void)V;
    need(0, "embedding_bwd unused");
}

void ot_cuda_rmsnorm_fwd(cudaStream_t s, ot_bf16 *y, float *rstd, const ot_bf16 *x, const ot_bf16 *w, int T, int H,
                         float eps) {
    (void)s;
    float *xf = tof(x, (size_t)T * H), *wf = tof(w, H), *yf = zeros((size_t)T * H);
    ot_rmsnorm_fwd(yf, rstd, xf, wf, T, H, eps);
    tobf(y, yf, (size_t)T * H);
    free(xf);
    free(wf);
    free(yf);
}
void ot_cuda_rmsnorm_bwd(cudaStream_t s, ot_bf16 *dx, float *dw, const ot_bf16 *dy, const ot_bf16 *x, const ot_bf16 *w,
                         const float *rstd, int T, int H) {
    (void)s;
    float *xf = tof(x, (size_t)T * H), *wf = tof(w, H), *dyf = tof(dy, (size_t)T * H), *d = zeros((size_t)T * H);
    ot_rmsnorm_bwd(d, dw, dyf, xf, wf, rstd, T, H); // dw (fp32 on the "device") accumulates in place
    if (dx) addbf(dx, d, (size_t)T * H);
    free(xf);
    free(wf);
    free(dyf);
    free(d);
}

void ot_cuda_matmul_fwd(cudaStream_t s, ot_cuda_blas *b, ot_bf16 *y, const ot_bf16 *x, const ot_bf16 *W,
                        const ot_bf16 *bias, int T, int in, int out) {
    (void)s;
    (void)b;
    float *xf = tof(x, (size_t)T * in), *Wf = tof(W, (size_t)in * out), *bf = bias ? tof(bias, out) : NULL,
          *yf = zeros((size_t)T * out);
    ot_matmul_fwd(yf, xf, Wf, bf, T, in, out);
    tobf(y, yf, (size_t)T * out);
    free(xf);
    free(Wf);
    free(bf);
    free(yf);
}
void ot_cuda_matmul_bwd(cudaStream_t s, ot_cuda_blas *b, ot_bf16 *dx, float *dW, float *db, const ot_bf16 *dy,
                        const ot_bf16 *x, const ot_bf16 *W, int T, int in, int out) {
    (void)s;
    (void)b;
    float *dyf = tof(dy, (size_t)T * out), *xf = tof(x, (size_t)T * in), *Wf = tof(W, (size_t)in * out),
          *d = zeros((size_t)T * in);
    ot_matmul_bwd(d, dW, db, dyf, xf, Wf, T, in, out); // dW, db (fp32) accumulate in place
    if (dx) addbf(dx, d, (size_t)T * in);
    free(dyf);
    free(xf);
    free(Wf);
    free(d);
}

// The products from the fp32 A and B (the kernels' bf16 hi + lo splits carry 16 significant bits: the GPU test's
// concern); xa's split, when asked for, from xa.
static void split_host(ot_bf16 *hl, size_t stride, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        ot_bf16 h = ot_f32_to_bf16(src[i]);
        hl[i] = h;
        hl[stride + i] = ot_f32_to_bf16(src[i] - ot_bf16_to_f32(h));
    }
}
void ot_cuda_lora_fwd(cudaStream_t s, ot_bf16 *const *y, float *xa, ot_bf16 *xa_hl, const ot_bf16 *x,
                      const ot_cuda_lora_w *w, int T, int in, int r, float scale) {
    (void)s;
    const int nr = w->n * r;
    float *xf = tof(x, (size_t)T * in), *xai = zeros((size_t)T * r);
    for (int i = 0; i < w->n; i++) {
        float *yf = zeros((size_t)T * w->out[i]);
        ot_lora_fwd(yf, xai, xf, w->A + (size_t)i * r * in, w->B[i], T, in, r, w->out[i], scale);
        addbf(y[i], yf, (size_t)T * w->out[i]);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < r; j++) {
                float v = xai[(size_t)t * r + j];
                size_t k = (size_t)t * nr + (size_t)i * r + j;
                if (xa) xa[k] = v;
                if (xa_hl) {
                    ot_bf16 h = ot_f32_to_bf16(v);
                    xa_hl[k] = h;
                    xa_hl[(size_t)T * nr + k] = ot_f32_to_bf16(v - ot_bf16_to_f32(h));
                }
            }
        free(yf);
    }
    free(xf);
    free(xai);
}
// The low-part arrays, when given, take the whole weight-gradient contribution (they are zero until the fold, so
// the fold's sum is the direct one, bit for bit): a wrong fold layout in the trainer shows as wrong gradients.
void ot_cuda_lora_bwd(cudaStream_t s, ot_bf16 *dx, const ot_bf16 *const *dy, const ot_bf16 *x, const float *xa,
                      const ot_bf16 *xa_hl, const ot_cuda_lora_w *w, int T, int in, int r, float scale) {
    (void)s, (void)xa_hl;
    const int nr = w->n * r;
    float *xf = tof(x, (size_t)T * in), *d = zeros((size_t)T * in), *xai = zeros((size_t)T * r);
    for (int i = 0; i < w->n; i++) {
        for (int t = 0; t < T; t++)
            for (int j = 0; j < r; j++) xai[(size_t)t * r + j] = xa[(size_t)t * nr + (size_t)i * r + j];
        float *dyf = tof(dy[i], (size_t)T * w->out[i]);
        float *dA = w->dA ? (w->dA_lo ? w->dA_lo : w->dA) + (size_t)i * r * in : NULL;
        float *dB = w->dB[i] ? (w->dB_lo[i] ? w->dB_lo[i] : w->dB[i]) : NULL;
        ot_lora_bwd(dx ? d : NULL, dA, dB, dyf, xf, xai, w->A + (size_t)i * r * in, w->B[i], T, in, r, w->out[i],
                    scale);
        free(dyf);
    }
    if (dx) addbf(dx, d, (size_t)T * in);
    free(xf);
    free(d);
    free(xai);
}
void ot_cuda_lora_split_params(cudaStream_t s, ot_bf16 *hl, size_t hl_stride, float *copy, const float *params,
                               const size_t *seg, int n_seg, size_t max_n) {
    (void)s, (void)max_n;
    for (int k = 0; k < n_seg; k++) {
        split_host(hl + seg[3 * k + 1], hl_stride, params + seg[3 * k], seg[3 * k + 2]);
        if (copy) memcpy(copy + seg[3 * k + 1], params + seg[3 * k], seg[3 * k + 2] * sizeof(float));
    }
}
void ot_cuda_lora_fold(cudaStream_t s, float *g, float *lo, size_t lo2_stride, const size_t *seg, int n_seg,
                       size_t max_n) {
    (void)s;
    for (int k = 0; k < n_seg; k++) {
        const size_t dst = seg ? seg[3 * k] : 0, src = seg ? seg[3 * k + 1] : 0, n = seg ? seg[3 * k + 2] : max_n;
        for (size_t i = 0; i < n; i++) {
            float v = lo[src + i];
            lo[src + i] = 0.0f;
            if (lo2_stride) {
                v += lo[lo2_stride + src + i];
                lo[lo2_stride + src + i] = 0.0f;
            }
            g[dst + i] += v;
        }
    }
}

void ot_cuda_rope_fwd(cudaStream_t s, ot_bf16 *x, const int32_t *pos, const float *inv, float af, int T, int nh,
                      int D) {
    (void)s;
    size_t n = (size_t)T * nh * D;
    float *f = tof(x, n);
    ot_rope_fwd(f, pos, inv, af, T, nh, D);
    tobf(x, f, n);
    free(f);
}
void ot_cuda_rope_bwd(cudaStream_t s, ot_bf16 *x, const int32_t *pos, const float *inv, float af, int T, int nh,
                      int D) {
    (void)s;
    size_t n = (size_t)T * nh * D;
    float *f = tof(x, n);
    ot_rope_bwd(f, pos, inv, af, T, nh, D);
    tobf(x, f, n);
    free(f);
}
void ot_cuda_rope_qk_fwd(cudaStream_t s, ot_bf16 *q, ot_bf16 *k, const int32_t *pos, const float *inv, float af, int T,
                         int nh, int nkv, int D) {
    ot_cuda_rope_fwd(s, q, pos, inv, af, T, nh, D);
    ot_cuda_rope_fwd(s, k, pos, inv, af, T, nkv, D);
}
void ot_cuda_rope_qk_bwd(cudaStream_t s, ot_bf16 *dq, ot_bf16 *dk, const int32_t *pos, const float *inv, float af,
                         int T, int nh, int nkv, int D) {
    ot_cuda_rope_bwd(s, dq, pos, inv, af, T, nh, D);
    ot_cuda_rope_bwd(s, dk, pos, inv, af, T, nkv, D);
}

void ot_cuda_attention_fwd(cudaStream_t s, ot_bf16 *out, float *lse, const ot_bf16 *q, const ot_bf16 *k,
                           const ot_bf16 *v, const float *sinks, const int32_t *seg, int T, int nh, int nkv, int D,
                           int window) {
    (void)s;
    need(D == 64, "attention D must be 64 as on the GPU");
    float *qf = tof(q, (size_t)T * nh * D), *kf = tof(k, (size_t)T * nkv * D), *vf = tof(v, (size_t)T * nkv * D),
          *o = zeros((size_t)T * nh * D);
    ot_attention_fwd(o, lse, qf, kf, vf, sinks, seg, T, nh, nkv, D, window);
    tobf(out, o, (size_t)T * nh * D);
    free(qf);
    free(kf);
    free(vf);
    free(o);
}
void ot_cuda_attention_bwd(cudaStream_t s, ot_bf16 *dq, ot_bf16 *dk, ot_bf16 *dv, float *dsinks, const ot_bf16 *dout,
                           const ot_bf16 *out, const float *lse, const ot_bf16 *q, const ot_bf16 *k, const ot_bf16 *v,
                           const float *sinks, const int32_t *seg, int T, int nh, int nkv, int D, int window) {
    (void)s;
    size_t nq = (size_t)T * nh * D, nk = (size_t)T * nkv * D;
    float *qf = tof(q, nq), *kf = tof(k, nk), *vf = tof(v, nk), *of = tof(out, nq), *dof = tof(dout, nq);
    float *a = zeros(nq), *b = zeros(nk), *c = zeros(nk);
    ot_attention_bwd(a, b, c, dsinks, dof, of, lse, qf, kf, vf, sinks, seg, T, nh, nkv, D, window);
    addbf(dq, a, nq);
    addbf(dk, b, nk);
    addbf(dv, c, nk);
    free(qf);
    free(kf);
    free(vf);
    free(of);
    free(dof);
    free(a);
    free(b);
    free(c);
}

void ot_cuda_router_topk_fwd(cudaStream_t s, int32_t *idx, float *w, const ot_bf16 *logits, int T, int E, int k) {
    (void)s;
    float *lf = tof(logits, (size_t)T * E);
    ot_router_topk_fwd(idx, w, lf, T, E, k);
    free(lf);
}
void ot_cuda_router_topk_bwd(cudaStream_t s, ot_bf16 *dlogits, const float *dw, const float *w, const int32_t *idx,
                             int T, int E, int k) {
    (void)s;
    float *d = zeros((size_t)T * E);
    ot_router_topk_bwd(d, dw, w, idx, T, E, k);
    addbf(dlogits, d, (size_t)T * E);
    free(d);
}

void ot_cuda_swiglu_fwd(cudaStream_t s, ot_bf16 *act, const ot_bf16 *gu, int n, int I, float alpha, float limit) {
    (void)s;
    float *g = tof(gu, (size_t)n * 2 * I), *a = zeros((size_t)n * I);
    ot_swiglu_fwd(a, g, n, I, alpha, limit);
    tobf(act, a, (size_t)n * I);
    free(g);
    free(a);
}
void ot_cuda_swiglu_bwd(cudaStream_t s, ot_bf16 *dgu, const ot_bf16 *dact, const ot_bf16 *gu, int n, int I, float alpha,
                        float limit) {
    (void)s;
    float *g = tof(gu, (size_t)n * 2 * I), *da = tof(dact, (size_t)n * I), *d = zeros((size_t)n * 2 * I);
    ot_swiglu_bwd(d, da, g, n, I, alpha, limit);
    tobf(dgu, d, (size_t)n * 2 * I);
    free(g);
    free(da);
    free(d);
}

// ---- MoE ----------------------------------------------------------------------------------------------------
// The memory-planning queries: what the emulated allocations take (the same arrays as the real ones).
size_t ot_cuda_moe_plan_bytes(int T, int k, int E) {
    size_t P = (size_t)T * k, tiles = (P + OT_CUDA_MOE_TILE_ROWS - 1) / OT_CUDA_MOE_TILE_ROWS + E;
    return sizeof(int32_t) * ((size_t)E + (size_t)(E + 1) + 3 * P + 2 * tiles);
}
size_t ot_cuda_lmhead_xent_tmp_bytes(int n, int H, int V) {
    return (size_t)n * ((size_t)H * 6 + 20 + (size_t)V * 6); // the emulation computes whole logit rows
}
size_t ot_cuda_attention_bwd_tmp_bytes(int T, int nh, int nkv, int D) {
    return sizeof(float) * (size_t)T * ((size_t)nh + (size_t)D * (nh + 2 * (size_t)nkv));
}

void ot_cuda_moe_plan_alloc(ot_cuda_moe_plan *p, int T, int k, int E) {
    memset(p, 0, sizeof *p);
    p->T = T;
    p->k = k;
    p->E = E;
    p->n_pairs = T * k;
    p->n_tiles = (p->n_pairs + OT_CUDA_MOE_TILE_ROWS - 1) / OT_CUDA_MOE_TILE_ROWS + E;
    cudaMalloc((void **)&p->counts, sizeof(int32_t) * E);
    cudaMalloc((void **)&p->offsets, sizeof(int32_t) * (E + 1));
    p->host_offsets = p->offsets; // host and device memory are one here
    cudaMalloc((void **)&p->perm, sizeof(int32_t) * p->n_pairs);
    cudaMalloc((void **)&p->inv, sizeof(int32_t) * p->n_pairs);
    cudaMalloc((void **)&p->row_token, sizeof(int32_t) * p->n_pairs);
    cudaMalloc((void **)&p->tile_expert, sizeof(int32_t) * p->n_tiles);
    cudaMalloc((void **)&p->tile_row0, sizeof(int32_t) * p->n_tiles);
}
void ot_cuda_moe_plan_free(ot_cuda_moe_plan *p) {
    cudaFree(p->counts);
    cudaFree(p->offsets);
    cudaFree(p->perm);
    cudaFree(p->inv);
    cudaFree(p->row_token);
    cudaFree(p->tile_expert);
    cudaFree(p->tile_row0);
    memset(p, 0, sizeof *p);
}
void ot_cuda_moe_plan_build(cudaStream_t s, ot_cuda_moe_plan *p, const int32_t *idx) {
    (void)s;
    int E = p->E, P = p->n_pairs;
    for (int e = 0; e < E; e++) p->counts[e] = 0;
    for (int i = 0; i < P; i++) {
        need(idx[i] >= 0 && idx[i] < E, "expert idx");
        p->counts[idx[i]]++;
    }
    p->offsets[0] = 0;
    for (int e = 0; e < E; e++) p->offsets[e + 1] = p->offsets[e] + p->counts[e];
    int *fill = malloc(sizeof(int) * E);
    for (int e = 0; e < E; e++) fill[e] = p->offsets[e];
    for (int i = 0; i < P; i++) {
        int row = fill[idx[i]]++;
        p->perm[row] = i;
        p->inv[i] = row;
        p->row_token[row] = i / p->k;
    }
    free(fill);
    int t = 0;
    for (int e = 0; e < E; e++)
        for (int r0 = p->offsets[e]; r0 < p->offsets[e + 1]; r0 += OT_CUDA_MOE_TILE_ROWS) {
            need(t < p->n_tiles, "tiles");
            p->tile_expert[t] = e;
            p->tile_row0[t] = r0;
            t++;
        }
    for (; t < p->n_tiles; t++) {
        p->tile_expert[t] = -1;
        p->tile_row0[t] = 0;
    }
}
static int expert_of_row(const ot_cuda_moe_plan *p, int row) {
    for (int e = 0; e < p->E; e++)
        if (row < p->offsets[e + 1]) return e;
    need(0, "row past the plan");
    return -1;
}
static float *gather_rows(const ot_bf16 *x, int gather, const ot_cuda_moe_plan *p, int e, int in);
static ot_expert_weight cpu_weight(const ot_cuda_expert_weight *W, float **dense_keep) {
    ot_expert_weight w;
    memset(&w, 0, sizeof w);
    w.kind = W->kind;
    w.n_experts = W->n_experts;
    w.rows = W->rows;
    w.cols = W->cols;
    w.blocks = W->blocks;
    w.scales = W->scales;
    *dense_keep = NULL;
    if (W->kind == OT_EXPERT_DENSE) {
        *dense_keep = tof(W->dense, (size_t)W->n_experts * W->rows * W->cols);
        w.dense = *dense_keep;
    }
    return w;
}
// An expert LoRA's expansion onto one row's fp32 output (before its rounding, as the fused kernels add it):
// out[c] += scale · Σ_j u[row, j] · M_e(c, j), M_e = B_e [n, r] forward, A_e [r, n] backward.
static void add_lora_term(float *out, const ot_cuda_moe_lora_term *t, int bwd, int e, int row, int n) {
    if (!t) return;
    const int r = t->r;
    const float *M = t->adapter + (size_t)e * n * r, *u = t->u + (size_t)row * r;
    for (int c = 0; c < n; c++) {
        double acc = 0;
        for (int j = 0; j < r; j++) acc += (double)u[j] * (bwd ? M[(size_t)j * n + c] : M[(size_t)c * r + j]);
        out[c] += (float)(t->scale * acc);
    }
}
void ot_cuda_moe_matmul_fwd(cudaStream_t s, ot_bf16 *y, const ot_bf16 *x, int gather, const ot_cuda_expert_weight *W,
                            const ot_cuda_moe_plan *p, const ot_cuda_moe_lora_term *lora) {
    (void)s;
    float *dk;
    ot_expert_weight w = cpu_weight(W, &dk);
    int N = W->rows, K = W->cols;
    float *xr = malloc(sizeof(float) * K), *yr = malloc(sizeof(float) * N), *b = malloc(sizeof(float) * N);
    for (int row = 0; row < p->n_pairs; row++) {
        int e = expert_of_row(p, row);
        const ot_bf16 *src = x + (size_t)(gather ? p->row_token[row] : row) * K;
        for (int i = 0; i < K; i++) xr[i] = rd(src, i);
        for (int i = 0; i < N; i++) b[i] = W->bias ? rd(W->bias, (size_t)e * N + i) : 0.0f;
        ot_expert_matmul_fwd(yr, xr, &w, e, b, 1);
        add_lora_term(yr, lora, 0, e, row, N);
        tobf(y + (size_t)row * N, yr, N);
    }
    free(xr);
    free(yr);
    free(b);
    free(dk);
}
void ot_cuda_moe_matmul_bwd(cudaStream_t s, ot_bf16 *dx, const ot_bf16 *dy, const ot_cuda_expert_weight *W,
                            const ot_cuda_moe_plan *p, int accumulate, const ot_cuda_moe_lora_term *lora) {
    (void)s;
    float *dk;
    ot_expert_weight w = cpu_weight(W, &dk);
    int N = W->rows, K = W->cols;
    float *dyr = malloc(sizeof(float) * N), *dxr = malloc(sizeof(float) * K);
    for (int row = 0; row < p->n_pairs; row++) {
        int e = expert_of_row(p, row);
        for (int i = 0; i < N; i++) dyr[i] = rd(dy, (size_t)row * N + i);
        memset(dxr, 0, sizeof(float) * K);
        ot_expert_matmul_bwd(dxr, dyr, &w, e, 1);
        add_lora_term(dxr, lora, 1, e, row, K);
        if (accumulate)
            addbf(dx + (size_t)row * K, dxr, K);
        else
            tobf(dx + (size_t)row * K, dxr, K);
    }
    free(dyr);
    free(dxr);
    free(dk);
}
void ot_cuda_moe_matmul_bwd_weight(cudaStream_t s, float *dW, float *db, const ot_bf16 *dy, const ot_bf16 *x,
                                   int gather, const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p) {
    (void)s;
    float *dk;
    ot_expert_weight w = cpu_weight(W, &dk);
    const int rows = W->rows, cols = W->cols;
    for (int e = 0; e < p->E; e++) {
        int r0 = p->offsets[e], n = p->offsets[e + 1] - r0;
        if (!n) continue;
        float *X = gather_rows(x, gather, p, e, cols), *DY = tof(dy + (size_t)r0 * rows, (size_t)n * rows);
        ot_expert_matmul_bwd_weight(dW + (size_t)e * rows * cols, db ? db + (size_t)e * rows : NULL, DY, X, &w, n);
        free(X);
        free(DY);
    }
    free(dk);
}
void ot_cuda_moe_combine_fwd(cudaStream_t s, ot_bf16 *out, const ot_bf16 *y, const float *w, const ot_cuda_moe_plan *p,
                             int H) {
    (void)s;
    for (int t = 0; t < p->T; t++)
        for (int c = 0; c < H; c++) {
            float acc = 0;
            for (int sl = 0; sl < p->k; sl++) {
                int pr = t * p->k + sl;
                acc += w[pr] * rd(y, (size_t)p->inv[pr] * H + c);
            }
            wr(out, (size_t)t * H + c, acc);
        }
}
void ot_cuda_moe_combine_bwd(cudaStream_t s, ot_bf16 *dy, float *dw, const ot_bf16 *dout, const ot_bf16 *y,
                             const float *w, const ot_cuda_moe_plan *p, int H) {
    (void)s;
    for (int t = 0; t < p->T; t++)
        for (int sl = 0; sl < p->k; sl++) {
            int pr = t * p->k + sl;
            size_t row = (size_t)p->inv[pr];
            double dot = 0;
            for (int c = 0; c < H; c++) {
                float d = rd(dout, (size_t)t * H + c);
                wr(dy, row * H + c, w[pr] * d);
                if (dw) dot += (double)d * rd(y, row * H + c);
            }
            if (dw) dw[pr] += (float)dot;
        }
}
void ot_cuda_moe_route_grad(cudaStream_t s, float *dw, const ot_bf16 *dact, const ot_bf16 *act, const ot_bf16 *dout,
                            const ot_bf16 *bias, const float *w, const int32_t *idx, const ot_cuda_moe_plan *p, int I,
                            int H) {
    (void)s;
    const size_t n = (size_t)p->n_pairs;
    float *D = malloc(sizeof(float) * n * I), *A = malloc(sizeof(float) * n * I);
    float *G = malloc(sizeof(float) * (size_t)p->T * H), *B = NULL;
    for (size_t i = 0; i < n * I; i++) D[i] = rd(dact, i), A[i] = rd(act, i);
    for (size_t i = 0; i < (size_t)p->T * H; i++) G[i] = rd(dout, i);
    if (bias) {
        B = malloc(sizeof(float) * (size_t)p->E * H);
        for (size_t i = 0; i < (size_t)p->E * H; i++) B[i] = rd(bias, i);
    }
    ot_moe_route_grad(dw, D, A, G, B, w, idx, p->perm, p->n_pairs, p->k, I, H);
    free(D), free(A), free(G), free(B);
}
void ot_cuda_moe_unpermute_add(cudaStream_t s, ot_bf16 *dx, const ot_bf16 *dxp, const ot_cuda_moe_plan *p, int H) {
    (void)s;
    for (int t = 0; t < p->T; t++)
        for (int c = 0; c < H; c++) {
            float acc = rd(dx, (size_t)t * H + c);
            for (int sl = 0; sl < p->k; sl++) acc += rd(dxp, (size_t)p->inv[t * p->k + sl] * H + c);
            wr(dx, (size_t)t * H + c, acc);
        }
}
// Gathers expert e's rows (x_p) as floats.
static float *gather_rows(const ot_bf16 *x, int gather, const ot_cuda_moe_plan *p, int e, int in) {
    int r0 = p->offsets[e], n = p->offsets[e + 1] - r0;
    float *X = malloc(sizeof(float) * (size_t)(n ? n : 1) * in);
    for (int i = 0; i < n; i++) {
        const ot_bf16 *src = x + (size_t)(gather ? p->row_token[r0 + i] : r0 + i) * in;
        for (int j = 0; j < in; j++) X[(size_t)i * in + j] = rd(src, j);
    }
    return X;
}
void ot_cuda_moe_lora_fwd(cudaStream_t s, ot_bf16 *y, float *xa, const ot_bf16 *x, int gather, const float *A,
                          const float *B, const ot_cuda_moe_plan *p, int in, int r, int out, float scale) {
    (void)s;
    for (int e = 0; e < p->E; e++) {
        int r0 = p->offsets[e], n = p->offsets[e + 1] - r0;
        if (!n) continue;
        float *X = gather_rows(x, gather, p, e, in), *Y = zeros((size_t)n * out);
        ot_lora_fwd(Y, xa + (size_t)r0 * r, X, A + (size_t)e * r * in, B + (size_t)e * out * r, n, in, r, out, scale);
        if (y) addbf(y + (size_t)r0 * out, Y, (size_t)n * out); // (NULL: xa only)
        free(X);
        free(Y);
    }
}
void ot_cuda_moe_lora_bwd(cudaStream_t s, ot_bf16 *dxp, float *dxa, float *dA, float *dB, const ot_bf16 *dy,
                          const ot_bf16 *x, int gather, const float *xa, const float *A, const float *B,
                          const ot_cuda_moe_plan *p, int in, int r, int out, float scale) {
    (void)s;
    if (dxa) // dxa = scale · dy · B_e, as ot_lora_bwd forms it
        for (int row = 0; row < p->n_pairs; row++) {
            const float *Be = B + (size_t)expert_of_row(p, row) * out * r;
            for (int j = 0; j < r; j++) {
                double acc = 0;
                for (int o = 0; o < out; o++) acc += (double)rd(dy, (size_t)row * out + o) * Be[(size_t)o * r + j];
                dxa[(size_t)row * r + j] = (float)(scale * acc);
            }
        }
    for (int e = 0; e < p->E; e++) {
        int r0 = p->offsets[e], n = p->offsets[e + 1] - r0;
        if (!n) continue;
        float *X = gather_rows(x, gather, p, e, in), *DY = tof(dy + (size_t)r0 * out, (size_t)n * out),
              *DX = zeros((size_t)n * in);
        ot_lora_bwd(DX, dA ? dA + (size_t)e * r * in : NULL, dB ? dB + (size_t)e * out * r : NULL, DY, X,
                    xa + (size_t)r0 * r, A + (size_t)e * r * in, B + (size_t)e * out * r, n, in, r, out, scale);
        if (dxp) addbf(dxp + (size_t)r0 * in, DX, (size_t)n * in);
        free(X);
        free(DY);
        free(DX);
    }
}

void ot_cuda_lmhead_xent(cudaStream_t s, ot_cuda_blas *blas, double *loss_sum, ot_bf16 *dh, float *dWlm,
                         const ot_bf16 *h, const ot_bf16 *Wlm, const int32_t *pos, const int32_t *label, int n, int T,
                         int H, int V, float grad_scale) {
    (void)s;
    (void)blas;
    if (!n) return;
    float *hf = tof(h, (size_t)T * H), *Wf = tof(Wlm, (size_t)V * H), *d = dh ? zeros((size_t)T * H) : NULL;
    *loss_sum += ot_lmhead_xent(d, dWlm, hf, Wf, pos, label, n, H, V, grad_scale);
    if (dh) addbf(dh, d, (size_t)T * H);
    free(hf);
    free(Wf);
    free(d);
}

// ---- batched decoding over a KV cache ----------------------------------------------------------------------------
static int cache_bad(int s, int p, int S, int L) {
    if (s >= 0 && s < S && p >= 0 && p < L) return 0;
    g_flags |= OT_CUDA_BAD_CACHE;
    return 1;
}
void ot_cuda_kv_cache_store(cudaStream_t st, ot_bf16 *kc, ot_bf16 *vc, const ot_bf16 *k, const ot_bf16 *v,
                            const int32_t *slot, const int32_t *pos, int T, int nkv, int D, int S, int L) {
    (void)st;
    for (int t = 0; t < T; t++) {
        if (cache_bad(slot[t], pos[t], S, L)) continue;
        for (int g = 0; g < nkv; g++)
            for (int d = 0; d < D; d++) {
                size_t src = ((size_t)t * nkv + g) * D + d, dst = (((size_t)slot[t] * nkv + g) * L + pos[t]) * D + d;
                wr(kc, dst, rd(k, src));
                wr(vc, dst, rd(v, src));
            }
    }
}
// Each token alone through the CPU ot_attention_cache_fwd, its slot's cache gathered into [pos + 1, nkv, D].
void ot_cuda_attention_cache_fwd(cudaStream_t st, ot_bf16 *out, const ot_bf16 *q, const ot_bf16 *kc, const ot_bf16 *vc,
                                 const float *sinks, const int32_t *slot, const int32_t *pos, int T, int nh, int nkv,
                                 int D, int S, int L, int window) {
    (void)st;
    need(D == 64, "attention D must be 64 as on the GPU");
    float *kb = malloc(sizeof(float) * (size_t)L * nkv * D), *vb = malloc(sizeof(float) * (size_t)L * nkv * D);
    float *qf = malloc(sizeof(float) * (size_t)nh * D), *o = malloc(sizeof(float) * (size_t)nh * D);
    for (int t = 0; t < T; t++) {
        int s = slot[t], p = pos[t];
        if (cache_bad(s, p, S, L)) {
            for (int i = 0; i < nh * D; i++) wr(out, (size_t)t * nh * D + i, NAN);
            continue;
        }
        for (int j = 0; j <= p; j++)
            for (int g = 0; g < nkv; g++)
                for (int d = 0; d < D; d++) {
                    size_t src = (((size_t)s * nkv + g) * L + j) * D + d, dst = ((size_t)j * nkv + g) * D + d;
                    kb[dst] = rd(kc, src);
                    vb[dst] = rd(vc, src);
                }
        for (int i = 0; i < nh * D; i++) qf[i] = rd(q, (size_t)t * nh * D + i);
        ot_attention_cache_fwd(o, qf, kb, vb, sinks, 1, p, nh, nkv, D, window);
        tobf(out + (size_t)t * nh * D, o, (size_t)nh * D);
    }
    free(kb);
    free(vb);
    free(qf);
    free(o);
}
void ot_cuda_argmax_rows(cudaStream_t st, int32_t *idx, const float *x, int n, int V) {
    (void)st;
    for (int r = 0; r < n; r++) {
        const float *row = x + (size_t)r * V;
        int best = 0;
        for (int i = 1; i < V; i++)
            if (row[i] > row[best]) best = i;
        idx[r] = best;
    }
}
// The head sweep in blocks of rows, with the CPU ops that cut ot_lmhead_xent at vocabulary blocks (kernels/ops_list.h):
// the logits of every target over the whole vocabulary are kept (host memory, an emulator's liberty), so the bits
// are those of ot_cuda_lmhead_xent above whatever the blocks.
struct ot_cuda_xent {
    int n, T, H, V, want_dh;
    float grad_scale, *hf, *logits;
    double *acc;
    int32_t *pos, *label;
};
ot_cuda_xent *ot_cuda_xent_begin(cudaStream_t s, ot_cuda_blas *blas, const ot_bf16 *h, const int32_t *pos,
                                 const int32_t *label, int n, int T, int H, int V, float grad_scale, int want_dh) {
    (void)s;
    (void)blas;
    ot_cuda_xent *x = calloc(1, sizeof *x);
    *x = (ot_cuda_xent){n, T, H, V, want_dh, grad_scale, NULL, NULL, NULL, NULL, NULL};
    if (!n) return x;
    for (int i = 0; i < n; i++) need(pos[i] >= 0 && pos[i] < T && label[i] >= 0 && label[i] < V, "xent target");
    x->hf = tof(h, (size_t)T * H);
    x->logits = malloc(sizeof(float) * (size_t)n * V);
    x->acc = calloc((size_t)n * H, sizeof(double));
    x->pos = malloc(sizeof(int32_t) * (size_t)n);
    x->label = malloc(sizeof(int32_t) * (size_t)n);
    memcpy(x->pos, pos, sizeof(int32_t) * (size_t)n);
    memcpy(x->label, label, sizeof(int32_t) * (size_t)n);
    return x;
}
void ot_cuda_xent_loss_rows(ot_cuda_xent *x, const ot_bf16 *rows, int v0, int nv) {
    need(v0 >= 0 && nv >= 0 && v0 + nv <= x->V, "xent rows");
    if (!x->n) return;
    float *W = tof(rows, (size_t)nv * x->H);
    ot_lmhead_logits_part(x->logits + v0, x->V, x->hf, W, x->pos, x->n, x->H, nv);
    free(W);
}
void ot_cuda_xent_loss_end(ot_cuda_xent *x, double *loss_sum) {
    if (!x->n) return;
    *loss_sum += ot_xent_rows(x->logits, x->label, x->n, x->V, x->grad_scale, x->want_dh, 0.0);
}
void ot_cuda_xent_grad_rows(ot_cuda_xent *x, const ot_bf16 *rows, float *dWrows, int v0, int nv) {
    need(!dWrows, "dWlm");
    need(v0 >= 0 && nv >= 0 && v0 + nv <= x->V, "xent rows");
    if (!x->n || !x->want_dh) return;
    float *W = tof(rows, (size_t)nv * x->H);
    ot_lmhead_dh_part(x->acc, x->logits + v0, x->V, W, x->n, x->H, nv);
    free(W);
}
void ot_cuda_xent_end(ot_cuda_xent *x, ot_bf16 *dh) {
    if (x->n && dh && x->want_dh) { // dh[pos_i] += acc_i rounded once per target, then into bf16, as above
        float *d = zeros((size_t)x->T * x->H);
        for (int i = 0; i < x->n; i++)
            for (int j = 0; j < x->H; j++) {
                float *p = d + (size_t)x->pos[i] * x->H + j;
                *p = (float)((double)*p + x->acc[(size_t)i * x->H + j]);
            }
        addbf(dh, d, (size_t)x->T * x->H);
        free(d);
    }
    free(x->hf);
    free(x->logits);
    free(x->acc);
    free(x->pos);
    free(x->label);
    free(x);
}

void ot_cuda_adamw_step(cudaStream_t s, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                        float b1, float b2, float eps, float wd, long step) {
    (void)s;
    ot_adamw_step(param, grad, m, v, n, lr, b1, b2, eps, wd, step);
}
void ot_cuda_sum_squares(cudaStream_t s, double *out, const float *g, size_t n) {
    (void)s;
    *out += ot_sum_squares(g, n);
}
void ot_cuda_sum_slots_ordered(cudaStream_t s, float *out, const float *slots, int n_slots, size_t n) {
    (void)s;
    ot_sum_slots_ordered(out, slots, n_slots, n);
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    (void)d;
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "emulated GPU");
    p->totalGlobalMem = (size_t)80 << 30;
    return cudaSuccess;
}
