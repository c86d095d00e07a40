// Private to kernels/cuda/: cuBLAS handles and side streams owned by the op library.
//
// The public ops take only a stream, so the library keeps its own cuBLAS handles: one per (host thread, device,
// lane), created on first use and kept for the life of the thread (a handle belongs to one device, and one handle
// driven from two threads, or used on two streams at once, would share its workspace and race).
//
// Lanes are side streams for products that are each too small to fill the GPU but independent of each other (one
// expert's rows at a time): `ot_cuda_lanes_fork` makes every lane wait for the work already queued on the caller's
// stream, the caller spreads its products over the lanes, and `ot_cuda_lanes_join` makes the caller's stream wait
// for all of them. Memory the lanes use may come from ot_cuda_tmp on the caller's stream before the fork and be
// freed there after the join (the pool is stream ordered).
#ifndef OT_KERNELS_CUDA_LANES_CUH
#define OT_KERNELS_CUDA_LANES_CUH

#include <cublas_v2.h>

#include "kernels/cuda/cuda_common.cuh"

#define OT_CUDA_LANES 4

// The calling thread's handle for the current device, bound to `stream`.
cublasHandle_t ot_cuda_thread_blas(cudaStream_t stream);

// Lane i's stream (0 <= i < OT_CUDA_LANES) and its handle, bound to it, for the current device.
cudaStream_t ot_cuda_lane_stream(int i);
cublasHandle_t ot_cuda_lane_blas(int i);

void ot_cuda_lanes_fork(cudaStream_t stream);
void ot_cuda_lanes_join(cudaStream_t stream);

#endif
