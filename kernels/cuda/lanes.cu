// cuBLAS handles and side streams of the op library (lanes.cuh says why they exist).
#include "kernels/cuda/lanes.cuh"

#define LANES_MAX_DEVICES 64

typedef struct {
    cublasHandle_t main_blas;              // for products on the caller's own stream
    cudaStream_t stream[OT_CUDA_LANES];
    cublasHandle_t blas[OT_CUDA_LANES];
    cudaEvent_t fork, done[OT_CUDA_LANES]; // ordering only: no timing
    int ready;
} Lanes;

static thread_local Lanes g_lanes[LANES_MAX_DEVICES];

static Lanes *lanes_here(void) {
    int dev = 0;
    OT_CUDA_CHECK(cudaGetDevice(&dev));
    OT_REQUIRE(dev >= 0 && dev < LANES_MAX_DEVICES, "lanes: device %d beyond the %d supported", dev,
               LANES_MAX_DEVICES);
    Lanes *l = &g_lanes[dev];
    if (!l->ready) {
        OT_CUBLAS_CHECK(cublasCreate(&l->main_blas));
        // fp32 products stay fp32: no TF32 (the LoRA products are checked against the CPU to 1e-4)
        OT_CUBLAS_CHECK(cublasSetMathMode(l->main_blas, CUBLAS_DEFAULT_MATH));
        OT_CUDA_CHECK(cudaEventCreateWithFlags(&l->fork, cudaEventDisableTiming));
        for (int i = 0; i < OT_CUDA_LANES; i++) {
            // non-blocking: the lanes must not serialize with the legacy default stream
            OT_CUDA_CHECK(cudaStreamCreateWithFlags(&l->stream[i], cudaStreamNonBlocking));
            OT_CUBLAS_CHECK(cublasCreate(&l->blas[i]));
            OT_CUBLAS_CHECK(cublasSetMathMode(l->blas[i], CUBLAS_DEFAULT_MATH));
            OT_CUBLAS_CHECK(cublasSetStream(l->blas[i], l->stream[i]));
            OT_CUDA_CHECK(cudaEventCreateWithFlags(&l->done[i], cudaEventDisableTiming));
        }
        l->ready = 1;
    }
    return l;
}

cublasHandle_t ot_cuda_thread_blas(cudaStream_t stream) {
    Lanes *l = lanes_here();
    OT_CUBLAS_CHECK(cublasSetStream(l->main_blas, stream));
    return l->main_blas;
}

cudaStream_t ot_cuda_lane_stream(int i) {
    OT_REQUIRE(i >= 0 && i < OT_CUDA_LANES, "lanes: lane %d of %d", i, OT_CUDA_LANES);
    return lanes_here()->stream[i];
}

cublasHandle_t ot_cuda_lane_blas(int i) {
    OT_REQUIRE(i >= 0 && i < OT_CUDA_LANES, "lanes: lane %d of %d", i, OT_CUDA_LANES);
    return lanes_here()->blas[i];
}

void ot_cuda_lanes_fork(cudaStream_t stream) {
    Lanes *l = lanes_here();
    OT_CUDA_CHECK(cudaEventRecord(l->fork, stream));
    for (int i = 0; i < OT_CUDA_LANES; i++) OT_CUDA_CHECK(cudaStreamWaitEvent(l->stream[i], l->fork, 0));
}

void ot_cuda_lanes_join(cudaStream_t stream) {
    Lanes *l = lanes_here();
    for (int i = 0; i < OT_CUDA_LANES; i++) {
        OT_CUDA_CHECK(cudaEventRecord(l->done[i], l->stream[i]));
        OT_CUDA_CHECK(cudaStreamWaitEvent(stream, l->done[i], 0));
    }
}
