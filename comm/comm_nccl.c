// The NCCL communicator: CUDA device buffers, its own stream, bootstrapped through an MPI communicator.
//
// The communicator is created non-blocking (config.blocking = 0) so that no NCCL call can block the host:
// init and every collective return at once (possibly ncclInProgress) and we poll — ncclCommGetAsyncError for
// the communicator's state, cudaEventQuery for the collective's completion — against the same deadline as the
// MPI communicator. On an error or at the deadline, ncclCommAbort releases the GPU from kernels that wait for a
// dead peer, and the host communicator aborts the job.
#ifdef OT_HAVE_NCCL

#include "comm/comm_internal.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ncclComm_t nccl;
    cudaStream_t stream;
    ot_comm *host; // the MPI communicator it was bootstrapped from: job abort, the id broadcast, ordered sums
    int *scratch;  // one device int, the payload of the barrier's all-reduce
} ot_nccl;

static void ot_cuda_failed(ot_comm *c, cudaError_t e, const char *call, const char *file, int line) {
    ot_comm_fatal(c, OT_COMM_EXIT_NCCL_ERROR, "CUDA error in %s: %s [%s:%d]", call, cudaGetErrorString(e), file, line);
}

// The communicator's own CUDA check: a failed CUDA call here ends the whole job the way a failed NCCL call does
// (ot_comm_fatal: every rank stops with the communicator's exit code), not just this process as the kernels'
// OT_CUDA_CHECK (kernels/cuda/ops_cuda.h) does — comm sits below kernels and must not leave peers waiting.
#define OT_COMM_CUDA_CHECK(c, call)                                                                                \
    do {                                                                                                      \
        cudaError_t ot_e_ = (call);                                                                           \
        if (ot_e_ != cudaSuccess) ot_cuda_failed((c), ot_e_, #call, __FILE__, __LINE__);                       \
    } while (0)

// A non-blocking communicator may answer ncclInProgress: poll its state until it settles (under the
// deadline), then end the job on anything but success.
static void ot_nccl_settle(ot_comm *c, ncclResult_t r, const char *call, const char *file, int line) {
    ot_nccl *n = c->impl;
    double t0 = ot_now_seconds();
    while (r == ncclInProgress && n->nccl) {
        double waited = ot_now_seconds() - t0;
        if (waited > c->timeout_s) {
            char name[64];
            size_t len = strcspn(call, "(");
            snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), call);
            ot_comm_timed_out(c, name, c->n_collectives, waited);
        }
        ot_comm_pause(waited);
        ncclResult_t q = ncclCommGetAsyncError(n->nccl, &r);
        if (q != ncclSuccess) r = q;
    }
    if (r != ncclSuccess)
        ot_comm_fatal(c, OT_COMM_EXIT_NCCL_ERROR, "NCCL error in %s: %s (%s) [%s:%d]", call, ncclGetErrorString(r),
                      n->nccl ? ncclGetLastError(n->nccl) : "no communicator yet", file, line);
}

#define OT_NCCL_CHECK(c, call) ot_nccl_settle((c), (call), #call, __FILE__, __LINE__)

static ncclDataType_t ot_nccl_type(ot_comm_dtype dt) {
    switch (dt) {
    case OT_COMM_F32: return ncclFloat32;
    case OT_COMM_U8: return ncclUint8;
    case OT_COMM_I64: return ncclInt64;
    }
    return ncclFloat32;
}

static ncclRedOp_t ot_nccl_op(ot_comm_redop op) {
    switch (op) {
    case OT_COMM_SUM: return ncclSum;
    case OT_COMM_MAX: return ncclMax;
    case OT_COMM_MIN: return ncclMin;
    }
    return ncclSum;
}

// Poll an event recorded after a collective: done, an asynchronous NCCL error, or the watchdog.
static void ot_nccl_wait_event(ot_comm *c, cudaEvent_t ev, const char *op, uint64_t seq) {
    ot_nccl *n = c->impl;
    double t0 = ot_now_seconds();
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) ot_cuda_failed(c, e, "cudaEventQuery (waiting for a collective)", __FILE__, __LINE__);
        ncclResult_t state = ncclSuccess;
        ncclResult_t q = ncclCommGetAsyncError(n->nccl, &state);
        if (q != ncclSuccess) state = q;
        if (state != ncclSuccess && state != ncclInProgress)
            ot_comm_fatal(c, OT_COMM_EXIT_NCCL_ERROR, "NCCL error during collective %s #%llu: %s (%s)", op,
                          (unsigned long long)seq, ncclGetErrorString(state), ncclGetLastError(n->nccl));
        double waited = ot_now_seconds() - t0;
        if (waited > c->timeout_s) ot_comm_timed_out(c, op, seq, waited);
        ot_comm_pause(waited);
    }
    OT_COMM_CUDA_CHECK(c, cudaEventDestroy(ev));
}

static cudaEvent_t ot_nccl_record(ot_comm *c) {
    ot_nccl *n = c->impl;
    cudaEvent_t ev;
    OT_COMM_CUDA_CHECK(c, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    OT_COMM_CUDA_CHECK(c, cudaEventRecord(ev, n->stream));
    return ev;
}

static int ot_nccl_start(ot_comm *c, const ot_coll *k, ot_comm_req *req, ot_err *err) {
    ot_nccl *n = c->impl;
    ncclDataType_t t = ot_nccl_type(k->dt);
    ncclRedOp_t op = ot_nccl_op(k->op);
    OT_COMM_CUDA_CHECK(c, cudaSetDevice(c->device));
    switch (k->kind) {
    case OT_COLL_ALL_GATHER: OT_NCCL_CHECK(c, ncclAllGather(k->send, k->recv, k->count, t, n->nccl, n->stream)); break;
    case OT_COLL_REDUCE_SCATTER:
        OT_NCCL_CHECK(c, ncclReduceScatter(k->send, k->recv, k->count, t, op, n->nccl, n->stream));
        break;
    case OT_COLL_ALL_REDUCE:
        OT_NCCL_CHECK(c, ncclAllReduce(k->send, k->recv, k->count, t, op, n->nccl, n->stream));
        break;
    case OT_COLL_BROADCAST:
        OT_NCCL_CHECK(c, ncclBroadcast(k->recv, k->recv, k->count, t, k->root, n->nccl, n->stream));
        break;
    case OT_COLL_BARRIER:
        // A one-element all-reduce completes on a rank only after every rank has issued it.
        OT_NCCL_CHECK(c, ncclAllReduce(n->scratch, n->scratch, 1, ncclInt32, ncclSum, n->nccl, n->stream));
        break;
    }
    req->handle = ot_nccl_record(c);
    return 0;
}

static void ot_nccl_wait(ot_comm *c, ot_comm_req *req) {
    ot_nccl_wait_event(c, (cudaEvent_t)req->handle, req->op, req->seq);
    req->handle = NULL;
}

// The ordered sum through host memory: one implementation of the rule (comm_mpi.c) serves both communicators,
// so GPU and CPU runs that give it the same slots get the same bits.
static int ot_nccl_sum_ordered(ot_comm *c, const float *slots, int n_slots, size_t count, float *out, int gather,
                               uint64_t seq, ot_err *err) {
    ot_nccl *n = c->impl;
    const char *name = gather ? "all_reduce_ordered" : "reduce_scatter_ordered";
    size_t b, e;
    ot_comm_shard_range(count, c->size, c->rank, &b, &e);
    size_t n_in = (size_t)n_slots * count, n_out = gather ? count : e - b;
    float *h_slots = ot_malloc(n_in * sizeof(float)), *h_out = ot_malloc(n_out * sizeof(float));
    OT_COMM_CUDA_CHECK(c, cudaSetDevice(c->device));
    // On our stream, so that earlier collectives writing into `slots` are finished first.
    if (n_in) OT_COMM_CUDA_CHECK(c, cudaMemcpyAsync(h_slots, slots, n_in * sizeof(float), cudaMemcpyDeviceToHost, n->stream));
    ot_nccl_wait_event(c, ot_nccl_record(c), name, seq);
    int rc = gather ? ot_comm_all_reduce_ordered(n->host, h_slots, n_slots, count, h_out, err)
                    : ot_comm_reduce_scatter_ordered(n->host, h_slots, n_slots, count, h_out, err);
    if (rc == 0 && n_out) {
        OT_COMM_CUDA_CHECK(c, cudaMemcpyAsync(out, h_out, n_out * sizeof(float), cudaMemcpyHostToDevice, n->stream));
        ot_nccl_wait_event(c, ot_nccl_record(c), name, seq);
    }
    free(h_slots);
    free(h_out);
    return rc;
}

static void ot_nccl_abort_job(ot_comm *c, int code) {
    ot_nccl *n = c->impl;
    if (n && n->nccl) ncclCommAbort(n->nccl); // stops kernels still waiting for a dead peer
    if (n && n->host) n->host->ops->abort_job(n->host, code);
}

static void ot_nccl_destroy(ot_comm *c) {
    ot_nccl *n = c->impl;
    // Everything issued completes under the watchdog first; ncclCommFinalize flushes, then resources go.
    ot_comm_req req = {.op = "barrier (ot_comm_free)", .seq = ++c->n_collectives};
    ot_coll k = {.kind = OT_COLL_BARRIER};
    ot_nccl_start(c, &k, &req, NULL);
    ot_nccl_wait(c, &req);
    OT_NCCL_CHECK(c, ncclCommFinalize(n->nccl));
    OT_NCCL_CHECK(c, ncclCommDestroy(n->nccl));
    n->nccl = NULL;
    OT_COMM_CUDA_CHECK(c, cudaFree(n->scratch));
    OT_COMM_CUDA_CHECK(c, cudaStreamDestroy(n->stream));
    free(n);
    c->impl = NULL;
}

static const struct ot_comm_ops ot_nccl_ops = {
    .name = "nccl",
    .start = ot_nccl_start,
    .wait = ot_nccl_wait,
    .sum_ordered = ot_nccl_sum_ordered,
    .abort_job = ot_nccl_abort_job,
    .destroy = ot_nccl_destroy,
};

void *ot_comm_stream(ot_comm *c) {
    if (!c || !c->on_device || !c->impl) return NULL;
    return (void *)((ot_nccl *)c->impl)->stream;
}

// One GPU per rank, chosen by the node-local rank. When the launcher already narrowed each rank to a single
// visible GPU (CUDA_VISIBLE_DEVICES per rank, as Slurm's --gpus-per-task does), that GPU is device 0.
static int ot_nccl_pick_device(const ot_comm *host, int *device, ot_err *err) {
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess) return ot_fail(err, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
    if (n_dev >= host->local_size) *device = host->local_rank;
    else if (n_dev == 1) *device = 0;
    else
        return ot_fail(err, "node %s runs %d ranks but this rank sees %d GPUs: osstune needs one GPU per rank",
                       host->hostname, host->local_size, n_dev);
    return 0;
}

int ot_comm_nccl_init(ot_comm **out, ot_comm *host, ot_err *err) {
    *out = NULL;
    if (!host || host->on_device || !host->ops || strcmp(host->ops->name, "mpi") != 0)
        return ot_fail(err, "ot_comm_nccl_init: host must be an MPI communicator (ot_comm_mpi_init)");

    // NVLink multicast (NVLS) must stay off; NCCL reads the variable when the communicator is created.
    const char *nvls = getenv("NCCL_NVLS_ENABLE");
    if (nvls && strcmp(nvls, "0") != 0)
        fprintf(stderr, "osstune: rank %d: note: NCCL_NVLS_ENABLE=%s overridden to 0 (NVLink multicast stays off)\n",
                host->rank, nvls);
    setenv("NCCL_NVLS_ENABLE", "0", 1);

    ot_comm *c = ot_calloc(1, sizeof *c);
    ot_nccl *n = ot_calloc(1, sizeof *n);
    n->host = host;
    c->ops = &ot_nccl_ops;
    c->impl = n;
    c->rank = host->rank;
    c->size = host->size;
    c->local_rank = host->local_rank;
    c->local_size = host->local_size;
    memcpy(c->hostname, host->hostname, sizeof c->hostname);
    c->on_device = 1;
    c->timeout_s = host->timeout_s;

    // Local setup may fail on one rank only; all ranks agree on the outcome before anyone waits in NCCL's init.
    ot_err local = {{0}};
    int failed = ot_nccl_pick_device(host, &c->device, &local);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (!failed) {
        cudaError_t e = cudaSetDevice(c->device);
        if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking);
        if (e == cudaSuccess) e = cudaMalloc((void **)&n->scratch, sizeof(int));
        if (e == cudaSuccess) e = cudaMemset(n->scratch, 0, sizeof(int));
        if (e != cudaSuccess)
            failed = ot_fail(&local, "setting up GPU %d: %s", c->device, cudaGetErrorString(e));
    }
    if (!failed && host->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&id);
        if (r != ncclSuccess) failed = ot_fail(&local, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    }
    int64_t mine = failed ? 1 : 0, any = 0;
    if (ot_comm_all_reduce(host, &mine, &any, 1, OT_COMM_I64, OT_COMM_SUM, &local) ||
        (!failed && any == 0 && ot_comm_broadcast(host, &id, sizeof id, OT_COMM_U8, 0, &local)))
        failed = 1;
    if (failed || any) {
        if (n->scratch) cudaFree(n->scratch);
        if (n->stream) cudaStreamDestroy(n->stream);
        free(n);
        free(c);
        if (failed) return ot_fail(err, "rank %d: %s", host->rank, local.msg);
        return ot_fail(err, "%lld rank(s) could not set up their GPU (see their messages)", (long long)any);
    }

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    c->n_collectives++; // init counts as one collective in timeout messages
    OT_NCCL_CHECK(c, ncclCommInitRankConfig(&n->nccl, c->size, id, c->rank, &config));
    *out = c;
    return 0;
}

#else
// Built without NCCL: comm.c answers ot_comm_nccl_init with an error saying so.
typedef int ot_comm_nccl_not_built;
#endif
