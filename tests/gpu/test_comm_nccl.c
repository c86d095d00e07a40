// The NCCL communicator on real GPUs (one rank per GPU, under mpirun): every collective on device buffers against
// the same collective done by the MPI communicator on host copies, bit for bit for the exact ones (gather,
// broadcast, max, the ordered sums) and within float rounding for the library sums.
// usage: mpirun -np N test_comm_nccl        (CI has no GPU; tests/gpu/run_gpu_tests.sh runs it on a GPU machine)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "comm/comm.h"
#include "tests/test_util.h"

#define CUDA_OK(call)                                                                                            \
    do {                                                                                                         \
        cudaError_t e_ = (call);                                                                                 \
        if (e_ != cudaSuccess) ot_die("%s: %s", #call, cudaGetErrorString(e_));                                  \
    } while (0)

static float *to_device(const float *h, size_t n) {
    float *d;
    CUDA_OK(cudaMalloc((void **)&d, n * sizeof(float) + 4));
    CUDA_OK(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

static void from_device(float *h, const float *d, size_t n) {
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
}

static void fill(float *x, size_t n, int rank, int salt) {
    ot_rng r;
    ot_rng_seed(&r, (uint64_t)(rank * 1000 + salt));
    for (size_t i = 0; i < n; i++) x[i] = (float)ot_rng_normal(&r);
}

int main(int argc, char **argv) {
    ot_err err;
    ot_comm *host = NULL, *dev = NULL;
    if (ot_comm_mpi_init(&host, &argc, &argv, NULL, &err)) ot_die("%s", err.msg);
    if (ot_comm_nccl_init(&dev, host, &err)) ot_die("%s", err.msg);
    const int W = host->size, R = host->rank;
    const size_t counts[] = {1, 1000, 4099, 1 << 20};
    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
        size_t n = counts[ci], shard = ot_comm_shard_count(n, W);
        float *h = ot_calloc(shard * (size_t)W, sizeof(float)), *want = ot_calloc(shard * (size_t)W, sizeof(float));
        float *got = ot_calloc(shard * (size_t)W, sizeof(float));
        fill(h, n, R, (int)ci);
        char what[96];

        // all_reduce (sum): NCCL's order of additions differs from MPI's, so within float rounding
        float *d = to_device(h, n);
        if (ot_comm_all_reduce(dev, d, d, n, OT_COMM_F32, OT_COMM_SUM, &err)) ot_die("%s", err.msg);
        from_device(got, d, n);
        if (ot_comm_all_reduce(host, h, want, n, OT_COMM_F32, OT_COMM_SUM, &err)) ot_die("%s", err.msg);
        snprintf(what, sizeof what, "all_reduce sum n=%zu (rank %d)", n, R);
        ot_check_close(what, ot_rel_err_f32(got, want, n), 1e-6);
        cudaFree(d);

        // all_reduce (max): exact
        d = to_device(h, n);
        if (ot_comm_all_reduce(dev, d, d, n, OT_COMM_F32, OT_COMM_MAX, &err)) ot_die("%s", err.msg);
        from_device(got, d, n);
        if (ot_comm_all_reduce(host, h, want, n, OT_COMM_F32, OT_COMM_MAX, &err)) ot_die("%s", err.msg);
        CHECK(memcmp(got, want, n * sizeof(float)) == 0, "all_reduce max n=%zu differs", n);
        cudaFree(d);

        // all_gather of a shard: exact
        d = to_device(h, shard);
        float *dall;
        CUDA_OK(cudaMalloc((void **)&dall, shard * (size_t)W * sizeof(float)));
        if (ot_comm_all_gather(dev, d, dall, shard, OT_COMM_F32, &err)) ot_die("%s", err.msg);
        from_device(got, dall, shard * (size_t)W);
        if (ot_comm_all_gather(host, h, want, shard, OT_COMM_F32, &err)) ot_die("%s", err.msg);
        CHECK(memcmp(got, want, shard * (size_t)W * sizeof(float)) == 0, "all_gather n=%zu differs", n);
        cudaFree(d);
        cudaFree(dall);

        // broadcast from the last rank: exact
        d = to_device(h, n);
        if (ot_comm_broadcast(dev, d, n, OT_COMM_F32, W - 1, &err)) ot_die("%s", err.msg);
        from_device(got, d, n);
        memcpy(want, h, n * sizeof(float));
        if (ot_comm_broadcast(host, want, n, OT_COMM_F32, W - 1, &err)) ot_die("%s", err.msg);
        CHECK(memcmp(got, want, n * sizeof(float)) == 0, "broadcast n=%zu differs", n);
        cudaFree(d);

        // the ordered (world-size independent) sum: exact, the same bits as the MPI communicator's
        if (n <= 4099) {
            d = to_device(h, n);
            float *dout;
            CUDA_OK(cudaMalloc((void **)&dout, n * sizeof(float)));
            if (ot_comm_all_reduce_ordered(dev, d, 1, n, dout, &err)) ot_die("%s", err.msg);
            from_device(got, dout, n);
            if (ot_comm_all_reduce_ordered(host, h, 1, n, want, &err)) ot_die("%s", err.msg);
            CHECK(memcmp(got, want, n * sizeof(float)) == 0, "all_reduce_ordered n=%zu differs", n);
            cudaFree(d);
            cudaFree(dout);
        }
        free(h);
        free(want);
        free(got);
    }
    if (ot_comm_barrier(dev, &err)) ot_die("%s", err.msg);
    char name[64];
    snprintf(name, sizeof name, "test_comm_nccl rank %d of %d (GPU %d)", R, W, dev->device);
    int rc = ot_test_finish(name);
    ot_comm_free(dev);
    ot_comm_free(host);
    return rc;
}
