// CPU emulation of the CUDA runtime, the device built-ins and the cuBLAS / cuBLASLt subset that kernels/cuda uses,
// for building tests/gpu/test_ops_cuda.c without a GPU (tests/gpu/emu/build_emulated.sh). The C part declares the
// runtime and library calls with the real names and types; the C++ part gives the kernels what nvcc would:
// dim3/uint4/bf16 types, threadIdx & co., barriers and warp collectives (emu.cpp), atomics (plain operations: a
// block's fibers never switch inside one), and emu_launch, which transform.py substitutes for k<<<...>>>(...).
#ifndef CUDA_EMU_H
#define CUDA_EMU_H
#define OT_CUDA_EMULATED 1 // for the few host choices that depend on the device (kernels/cuda/moe_mxfp4_gemm.cu)
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif
typedef enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorInvalidConfiguration = 9 } cudaError_t;
typedef struct emu_stream *cudaStream_t;
typedef struct emu_pool *cudaMemPool_t;
typedef enum { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault } cudaMemcpyKind;
typedef enum { cudaMemPoolAttrReleaseThreshold = 4, cudaMemPoolAttrReservedMemCurrent = 5, cudaMemPoolAttrUsedMemCurrent = 7 } cudaMemPoolAttr;
typedef enum { cudaDevAttrMultiProcessorCount = 16 } cudaDeviceAttr;
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *p, int d);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v);
cudaError_t cudaDeviceGetMemPool(cudaMemPool_t *p, int d);
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s);
cudaError_t cudaFreeAsync(void *p, cudaStream_t s);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
typedef struct emu_event *cudaEvent_t;
enum { cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2 };
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFreeHost(void *p);
typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;
cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute a, int v);

// cuBLAS subset
typedef enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15 } cublasStatus_t;
typedef struct emu_blas *cublasHandle_t;
typedef struct emu_blaslt *cublasLtHandle_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
typedef enum { CUBLAS_DEFAULT_MATH = 0 } cublasMath_t;
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t ctype,
                            cublasGemmAlgo_t algo);
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                          long long sa, const void *B, cudaDataType bt, int ldb, long long sb,
                                          const void *beta, void *C, cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t ctype, cublasGemmAlgo_t algo);
typedef struct emu_lt_desc *cublasLtMatmulDesc_t;
typedef struct emu_lt_layout *cublasLtMatrixLayout_t;
typedef struct emu_lt_pref *cublasLtMatmulPreference_t;
typedef struct { int dummy; } cublasLtMatmulAlgo_t;
typedef struct { cublasLtMatmulAlgo_t algo; size_t workspaceSize; int state; float wavesCount; int reserved[4]; } cublasLtMatmulHeuristicResult_t;
typedef enum { CUBLASLT_MATMUL_DESC_TRANSA = 3, CUBLASLT_MATMUL_DESC_TRANSB = 4, CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
               CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8 } cublasLtMatmulDescAttributes_t;
typedef enum { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4 } cublasLtEpilogue_t;
typedef enum { CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1 } cublasLtMatmulPreferenceAttributes_t;
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c, cudaDataType s);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v, size_t n);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t a, const void *v, size_t n);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t p, int req, cublasLtMatmulHeuristicResult_t *r, int *found);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t la, const void *B, cublasLtMatrixLayout_t lb, const void *beta,
                              const void *C, cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t wss, cudaStream_t s);
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
// ---- device side ----
#include <algorithm>
#include <functional>
using std::max;
using std::min;

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
static inline uint2 make_uint2(unsigned a, unsigned b) { return uint2{a, b}; }
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

struct __nv_bfloat16 { uint16_t u; };
struct alignas(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
static inline float __bfloat162float(__nv_bfloat16 b) { uint32_t v = (uint32_t)b.u << 16; float f; memcpy(&f, &v, 4); return f; }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    __nv_bfloat16 b;
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) { b.u = (uint16_t)((u >> 16) | 0x40); return b; }
    u += 0x7fffu + ((u >> 16) & 1u);
    b.u = (uint16_t)(u >> 16);
    return b;
}
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)}; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.u; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { __nv_bfloat16 b; b.u = u; return b; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline float __fdiv_rn(float a, float b) { volatile float r = a / b; return r; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline int __popc(unsigned v) { return __builtin_popcount(v); }
// prmt in its default mode: byte n of the result is byte (s >> 4n) & 7 of the 8 bytes {x, y}. Bit 3 of a selector
// (PTX: replicate the byte's sign) is not emulated: emu_unsupported stops the run if a kernel relies on it.
void emu_unsupported(const char *what);
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    if (s & 0x8888u) emu_unsupported("__byte_perm with a sign-replicating selector");
    uint64_t v = (uint64_t)y << 32 | x;
    unsigned r = 0;
    for (int n = 0; n < 4; n++) r |= (unsigned)((v >> (8 * ((s >> (4 * n)) & 7))) & 0xffu) << (8 * n);
    return r;
}

void __syncthreads(void);
int __syncthreads_count(int pred);
float __shfl_xor_sync(unsigned mask, float v, int lane_mask);
double __shfl_xor_sync(unsigned mask, double v, int lane_mask);
unsigned __ballot_sync(unsigned mask, int pred);
void emu_mma_bf16_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: a warp collective (each lane gives one row address).
void emu_ldmatrix_x4(uint32_t r[4], const void *p, int trans);
// cp.async: the source is read when the copy is issued, the destination (poisoned meanwhile) is written when a
// cp.async.wait_group of the issuing thread covers its group.
void emu_cp_async(void *dst, const void *src, int bytes);
void emu_cp_async_commit(void);
void emu_cp_async_wait(int n);
void *emu_dyn_smem(void);
// A shared-memory address as PTX sees it: the offset into the launch's dynamic shared memory (the only kind the
// kernels take addresses of).
uint32_t __cvta_generic_to_shared(const void *p);
// wgmma.mma_async m64n128k16 bf16 → fp32, operands from shared memory by descriptor (128-byte swizzle): computed
// from the 128 threads' own accumulator fragments when issued, and again at the emu_wgmma_wait that covers its
// commit group, which stops the run if an operand changed in between (the hardware reads them at some time in
// between).
void emu_wgmma_m64n128k16(float d[64], uint64_t desc_a, uint64_t desc_b, int trans_b);
void emu_wgmma_commit(void);
void emu_wgmma_wait(int n); // all but the newest n committed groups
static inline void __trap(void) { emu_unsupported("__trap: the kernel stopped itself"); }
void emu_shared(void *p, size_t n); // register a static shared array: poisoned (0xFF) before every block

static inline float atomicAdd(float *p, float v) { float o = *p; *p = o + v; return o; }
static inline float2 atomicAdd(float2 *p, float2 v) {
    float2 o = *p;
    p->x = o.x + v.x;
    p->y = o.y + v.y;
    return o;
}
static inline __nv_bfloat16 atomicAdd(__nv_bfloat16 *p, __nv_bfloat16 v) {
    __nv_bfloat16 o = *p; *p = __float2bfloat16_rn(__bfloat162float(o) + __bfloat162float(v)); return o; }
static inline unsigned atomicOr(unsigned *p, unsigned v) { unsigned o = *p; *p = o | v; return o; }
static inline int atomicMin(int *p, int v) { int o = *p; if (v < o) *p = v; return o; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

template <class T> static inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
template <class T> static inline cudaError_t cudaFuncSetAttribute(T *f, cudaFuncAttribute a, int v) {
    return cudaFuncSetAttribute(reinterpret_cast<const void *>(f), a, v);
}
// `kernel` identifies the function for its attributes (the dynamic shared memory it may take).
cudaError_t emu_run_grid(const std::function<void()> &f, dim3 grid, dim3 block, size_t shmem, const void *kernel);
template <typename... KArgs, typename... Args>
static inline void emu_launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t shmem, cudaStream_t, Args... args) {
    std::function<void()> f = [=]() { k(args...); };
    emu_run_grid(f, grid, block, shmem, reinterpret_cast<const void *>(k));
}
#endif
#endif
