// Set-up and plumbing for the CUDA backend: cuBLAS error reports (the runtime's are in cuda_host.c), the bad-input flag, the memory pool, the cuBLAS
// handles, and small element-wise helpers (conversions, add, scale).
#include <cublasLt.h>
#include <cublas_v2.h>

#include "kernels/cuda/cuda_common.cuh"

// ---- errors ---------------------------------------------------------------------------------------------------
void ot_cublas_check_at(int status, const char *expr, const char *file, int line) {
    if (status == (int)CUBLAS_STATUS_SUCCESS) return;
    ot_die_at(file, line, "cuBLAS error %s (%d) from %s", cublasGetStatusString((cublasStatus_t)status), status, expr);
}

// The current GPU's SM count (for launch-size heuristics).
int ot_cuda_sm_count(void) {
    int dev = 0, n = 0;
    OT_CUDA_CHECK(cudaGetDevice(&dev));
    OT_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
}

// ---- the bad-input flag ---------------------------------------------------------------------------------------
// One word of device memory per process (one GPU per process, as the trainer runs one rank per GPU).
static unsigned *g_input_flags = NULL;

unsigned *ot_cuda_input_flags(void) {
    if (!g_input_flags) {
        OT_CUDA_CHECK(ot_cuda_malloc((void **)&g_input_flags, sizeof(unsigned)));
        OT_CUDA_CHECK(cudaMemset(g_input_flags, 0, sizeof(unsigned)));
        OT_CUDA_CHECK(cudaDeviceSynchronize());
    }
    return g_input_flags;
}

int ot_cuda_check_inputs(cudaStream_t stream, ot_err *err) {
    unsigned *d = ot_cuda_input_flags();
    unsigned flags = 0;
    OT_CUDA_CHECK(cudaMemcpyAsync(&flags, d, sizeof(unsigned), cudaMemcpyDeviceToHost, stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (!flags) return 0;
    OT_CUDA_CHECK(cudaMemsetAsync(d, 0, sizeof(unsigned), stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(stream));
    return ot_fail(err, "CUDA kernels saw bad input:%s%s%s%s%s",
                   flags & OT_CUDA_BAD_TOKEN ? " token id outside the embedding table;" : "",
                   flags & OT_CUDA_BAD_SEGMENT ? " attention seg_start[i] outside 0..i;" : "",
                   flags & OT_CUDA_BAD_EXPERT ? " routed expert index outside 0..E-1;" : "",
                   flags & OT_CUDA_BAD_TARGET ? " loss position outside 0..T-1 or label outside 0..V-1;" : "",
                   flags & OT_CUDA_BAD_CACHE ? " KV cache slot or position outside the cache;" : "");
}

// ---- set-up ---------------------------------------------------------------------------------------------------
void ot_cuda_init(int device) {
    OT_CUDA_CHECK(cudaSetDevice(device));
    // Ops take their temporaries from the stream-ordered pool; without a release threshold the pool would hand
    // freed memory back to the driver at every synchronisation and each temporary would cost a real allocation.
    cudaMemPool_t pool;
    OT_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = UINT64_MAX;
    OT_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    (void)ot_cuda_input_flags();
}

void ot_cuda_blas_init(ot_cuda_blas *b) {
    memset(b, 0, sizeof(*b));
    cublasLtHandle_t lt;
    cublasHandle_t blas;
    OT_CUBLAS_CHECK(cublasLtCreate(&lt));
    OT_CUBLAS_CHECK(cublasCreate(&blas));
    b->lt = lt;
    b->blas = blas;
    b->workspace_size = (size_t)32 << 20; // what NVIDIA recommends for cuBLASLt on Hopper
    OT_CUDA_CHECK(ot_cuda_malloc(&b->workspace, b->workspace_size));
}

void ot_cuda_blas_free(ot_cuda_blas *b) {
    if (b->lt) OT_CUBLAS_CHECK(cublasLtDestroy((cublasLtHandle_t)b->lt));
    if (b->blas) OT_CUBLAS_CHECK(cublasDestroy((cublasHandle_t)b->blas));
    if (b->workspace) OT_CUDA_CHECK(cudaFree(b->workspace));
    memset(b, 0, sizeof(*b));
}

// ---- element-wise helpers -------------------------------------------------------------------------------------
__global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = f2bf(src[i]);
}
__global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = bf2f(src[i]);
}
__global__ void add_bf16_kernel(bf16 *y, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = f2bf(bf2f(y[i]) + bf2f(x[i]));
}
__global__ void add_f32_to_bf16_kernel(bf16 *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = f2bf(bf2f(y[i]) + x[i]);
}
__global__ void scale_f32_kernel(float *x, size_t n, float factor) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= factor;
}

void ot_cuda_f32_to_bf16(cudaStream_t stream, ot_bf16 *dst, const float *src, size_t n) {
    if (!n) return;
    f32_to_bf16_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(as_bf16(dst), src, n);
    OT_LAUNCH_CHECK();
}
void ot_cuda_bf16_to_f32(cudaStream_t stream, float *dst, const ot_bf16 *src, size_t n) {
    if (!n) return;
    bf16_to_f32_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(dst, as_bf16(src), n);
    OT_LAUNCH_CHECK();
}
void ot_cuda_add_f32_to_bf16(cudaStream_t stream, ot_bf16 *y, const float *x, size_t n) {
    if (!n) return;
    add_f32_to_bf16_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(as_bf16(y), x, n);
    OT_LAUNCH_CHECK();
}
void ot_cuda_add_bf16(cudaStream_t stream, ot_bf16 *y, const ot_bf16 *x, size_t n) {
    if (!n) return;
    add_bf16_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(as_bf16(y), as_bf16(x), n);
    OT_LAUNCH_CHECK();
}
void ot_cuda_scale_f32(cudaStream_t stream, float *x, size_t n, float factor) {
    if (!n) return;
    scale_f32_kernel<<<ot_grid_for(n, 256), 256, 0, stream>>>(x, n, factor);
    OT_LAUNCH_CHECK();
}
