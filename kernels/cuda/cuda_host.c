// Host-side plumbing over the CUDA runtime alone (no kernels, no cuBLAS), so the emulated runtimes of tests/gpu
// build it as it is: runtime error reports, and device memory under a limit.
//
// --gpu-memory-limit makes a run on a large card plan and allocate as on a smaller one, so a user can see before
// buying or queueing that a run fits a 24 GiB card, and the benchmarks can give the figures of one.
// The limit is compared with the device's memory in use as the driver reports it (total - free), not with a sum
// of our own allocations: the context, cuBLAS, NCCL and the pool's reserve are real costs on the smaller card.
// Another process on the same GPU counts against the limit too (the trainer runs one rank per GPU).
#include <stdio.h>

#include "kernels/cuda/ops_cuda.h"

static size_t g_limit; // bytes, 0: none. One GPU per process, so one limit per process.

// ---- errors ---------------------------------------------------------------------------------------------------
void ot_cuda_check_at(int err, const char *expr, const char *file, int line) {
    if (err == (int)cudaSuccess) return;
    cudaError_t e = (cudaError_t)err;
    char limit[32], used[32];
    if (e == cudaErrorMemoryAllocation && ot_cuda_memory_limit())
        ot_die_at(file, line, "GPU memory: %s found too little under --gpu-memory-limit %s (%s in use): raise the "
                  "limit, or make the run smaller (--recompute on, fewer --rows-per-step, a shorter --seq-len)", expr,
                  ot_format_size(limit, sizeof limit, ot_cuda_memory_limit()),
                  ot_format_size(used, sizeof used, ot_cuda_memory_in_use()));
    ot_die_at(file, line, "CUDA error %s (%s) from %s", cudaGetErrorName(e), cudaGetErrorString(e), expr);
}

// ---- device memory under a limit ------------------------------------------------------------------------------
int ot_cuda_set_memory_limit(size_t bytes, ot_err *err) {
    g_limit = 0;
    if (!bytes) return 0;
    const size_t used = ot_cuda_memory_in_use(); // (creates the context first, so it counts)
    if (used >= bytes) {
        char lim[32], use[32];
        return ot_fail(err, "--gpu-memory-limit %s: this GPU already uses %s (the CUDA context and other processes): "
                       "nothing would be left; raise the limit", ot_format_size(lim, sizeof lim, bytes),
                       ot_format_size(use, sizeof use, used));
    }
    g_limit = bytes;
    return 0;
}
size_t ot_cuda_memory_limit(void) { return g_limit; }

size_t ot_cuda_memory_in_use(void) {
    size_t free_b = 0, total_b = 0;
    OT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return total_b - free_b;
}

size_t ot_cuda_free_bytes(void) {
    size_t free_b = 0, total_b = 0;
    OT_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (!g_limit) return free_b;
    const size_t used = total_b - free_b, left = used < g_limit ? g_limit - used : 0;
    return left < free_b ? left : free_b;
}

cudaError_t ot_cuda_malloc(void **p, size_t bytes) {
    *p = NULL;
    if (g_limit && bytes > ot_cuda_free_bytes()) return cudaErrorMemoryAllocation;
    return cudaMalloc(p, bytes);
}

cudaError_t ot_cuda_malloc_async(void **p, size_t bytes, cudaStream_t stream) {
    *p = NULL;
    if (g_limit) {
        // The pool keeps what was freed (ot_cuda_init); only what it must add is new device memory. Fragmentation
        // can make it add more than that: the limit then shows at the next allocation or in nvidia-smi's figure.
        int dev = 0;
        cudaMemPool_t pool;
        uint64_t reserved = 0, used = 0; // (the runtime writes a cuuint64_t: 64 bits)
        OT_CUDA_CHECK(cudaGetDevice(&dev));
        OT_CUDA_CHECK(cudaDeviceGetMemPool(&pool, dev));
        OT_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
        OT_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used));
        const size_t idle = reserved > used ? (size_t)(reserved - used) : 0;
        if (bytes > idle && bytes - idle > ot_cuda_free_bytes()) return cudaErrorMemoryAllocation;
    }
    return cudaMallocAsync(p, bytes, stream);
}

int ot_cuda_alloc(void **p, size_t bytes, const char *what, const char *hint, ot_err *err) {
    cudaError_t e = ot_cuda_malloc(p, bytes);
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError(); // a failed cudaMalloc leaves its error behind: later checks must not see it
    *p = NULL;
    char need[32], free_s[32], limit_s[32], limit[64] = "";
    if (g_limit)
        snprintf(limit, sizeof limit, " under --gpu-memory-limit %s", ot_format_size(limit_s, sizeof limit_s, g_limit));
    return ot_fail(err, "%s needs %s of GPU memory, %s %s free%s%s%s", what, ot_format_size(need, sizeof need, bytes),
                   ot_format_size(free_s, sizeof free_s, ot_cuda_free_bytes()), g_limit ? "is" : "are", limit,
                   hint ? "; " : "", hint ? hint : "");
}
