// The MPI communicator: host buffers, used by the CPU backend and CI, and as the bootstrap of the NCCL one.
//
// Every collective is issued non-blocking (MPI_Iallreduce, ...) and completed by polling MPI_Test against a
// deadline: MPI itself waits forever on a peer that hangs (SIGSTOP, a deadlock), and a launcher does not always
// kill the job when a peer dies. Errors come back as return codes (MPI_ERRORS_RETURN on our communicators) and
// are turned into a message naming the call, then a job abort.
#include "comm/comm_internal.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    MPI_Comm world; // a duplicate of MPI_COMM_WORLD: our error handler and traffic stay apart from other users
    MPI_Comm node;  // the ranks sharing this node (MPI_COMM_TYPE_SHARED)
    int owns_mpi;   // ot_comm_mpi_init called MPI_Init_thread, so ot_comm_free calls MPI_Finalize
} ot_mpi;

// One collective in flight.
typedef struct {
    MPI_Request req;
    void *tmp;     // in-place reduce_scatter: MPI writes the result here, the wait copies it to copy_to
    void *copy_to;
    size_t bytes;
} ot_mpi_pending;

static void ot_mpi_failed(ot_comm *c, int rc, const char *call, const char *file, int line) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error code %d", rc);
    ot_comm_fatal(c, OT_COMM_EXIT_MPI_ERROR, "MPI error in %s: %s [%s:%d]", call, msg, file, line);
}

// Any MPI call on a communicator of the job: a failure ends the job (a collective cannot be half-done).
#define OT_MPI_CHECK(c, call)                                                                                 \
    do {                                                                                                      \
        int ot_rc_ = (call);                                                                                  \
        if (ot_rc_ != MPI_SUCCESS) ot_mpi_failed((c), ot_rc_, #call, __FILE__, __LINE__);                     \
    } while (0)

static MPI_Datatype ot_mpi_type(ot_comm_dtype dt) {
    switch (dt) {
    case OT_COMM_F32: return MPI_FLOAT;
    case OT_COMM_U8: return MPI_UINT8_T;
    case OT_COMM_I64: return MPI_INT64_T;
    }
    return MPI_DATATYPE_NULL;
}

static MPI_Op ot_mpi_op(ot_comm_redop op) {
    switch (op) {
    case OT_COMM_SUM: return MPI_SUM;
    case OT_COMM_MAX: return MPI_MAX;
    case OT_COMM_MIN: return MPI_MIN;
    }
    return MPI_OP_NULL;
}

// Poll one request until it completes; past the deadline the watchdog ends the job.
static void ot_mpi_wait_request(ot_comm *c, MPI_Request *r, const char *op, uint64_t seq) {
    double t0 = ot_now_seconds();
    for (;;) {
        int done = 0;
        OT_MPI_CHECK(c, MPI_Test(r, &done, MPI_STATUS_IGNORE));
        if (done) return;
        double waited = ot_now_seconds() - t0;
        if (waited > c->timeout_s) ot_comm_timed_out(c, op, seq, waited);
        ot_comm_pause(waited);
    }
}

static int ot_mpi_start(ot_comm *c, const ot_coll *k, ot_comm_req *req, ot_err *err) {
    ot_mpi *m = c->impl;
    // MPI counts and displacements are ints.
    if (k->count > (size_t)INT_MAX)
        return ot_fail(err, "%s: %zu elements exceed MPI's limit of %d per rank and call; split the buffer", req->op,
                       k->count, INT_MAX);
    int n = (int)k->count;
    MPI_Datatype t = ot_mpi_type(k->dt);
    MPI_Op op = ot_mpi_op(k->op);
    size_t bytes = k->count * ot_comm_dtype_size(k->dt);
    ot_mpi_pending *p = ot_calloc(1, sizeof *p);
    switch (k->kind) {
    case OT_COLL_ALL_GATHER: {
        int in_place = k->send == (const char *)k->recv + (size_t)c->rank * bytes;
        OT_MPI_CHECK(c, MPI_Iallgather(in_place ? MPI_IN_PLACE : k->send, n, t, k->recv, n, t, m->world, &p->req));
        break;
    }
    case OT_COLL_REDUCE_SCATTER: {
        // MPI's in-place form leaves the result at the start of the buffer; ours (NCCL's) at send + rank*count.
        void *dst = k->recv;
        if ((const char *)k->recv == (const char *)k->send + (size_t)c->rank * bytes && bytes > 0) {
            p->tmp = dst = ot_malloc(bytes);
            p->copy_to = k->recv;
            p->bytes = bytes;
        }
        OT_MPI_CHECK(c, MPI_Ireduce_scatter_block(k->send, dst, n, t, op, m->world, &p->req));
        break;
    }
    case OT_COLL_ALL_REDUCE:
        OT_MPI_CHECK(c, MPI_Iallreduce(k->send == k->recv ? MPI_IN_PLACE : k->send, k->recv, n, t, op, m->world,
                                       &p->req));
        break;
    case OT_COLL_BROADCAST: OT_MPI_CHECK(c, MPI_Ibcast(k->recv, n, t, k->root, m->world, &p->req)); break;
    case OT_COLL_BARRIER: OT_MPI_CHECK(c, MPI_Ibarrier(m->world, &p->req)); break;
    }
    req->handle = p;
    return 0;
}

static void ot_mpi_wait(ot_comm *c, ot_comm_req *req) {
    ot_mpi_pending *p = req->handle;
    ot_mpi_wait_request(c, &p->req, req->op, req->seq);
    if (p->tmp) {
        memcpy(p->copy_to, p->tmp, p->bytes);
        free(p->tmp);
    }
    free(p);
    req->handle = NULL;
}

// The ordered sum (comm.h). Rank q sums elements [b_q, e_q) of every slot (the shard partition): an all-to-all
// brings it those pieces from every rank, in rank order and, within a rank, in slot order — which is exactly
// the global slot order — so it adds them left to right in double. An all-gather then shares the results.
static int ot_mpi_sum_ordered(ot_comm *c, const float *slots, int n_slots, size_t count, float *out, int gather,
                              uint64_t seq, ot_err *err) {
    ot_mpi *m = c->impl;
    const char *name = gather ? "all_reduce_ordered" : "reduce_scatter_ordered";
    int P = c->size;
    int *n_of = ot_malloc((size_t)P * sizeof(int)); // slots held by each rank
    MPI_Request r;
    OT_MPI_CHECK(c, MPI_Iallgather(&n_slots, 1, MPI_INT, n_of, 1, MPI_INT, m->world, &r));
    ot_mpi_wait_request(c, &r, name, seq);

    // Every rank decides on the same global numbers, so a limit stops all ranks alike (no one is left waiting).
    size_t total_slots = 0, max_slots = 0;
    for (int p = 0; p < P; p++) {
        total_slots += (size_t)n_of[p];
        if ((size_t)n_of[p] > max_slots) max_slots = (size_t)n_of[p];
    }
    size_t shard = ot_comm_shard_count(count, P);
    if ((max_slots && count > (size_t)INT_MAX / max_slots) || (total_slots && shard > (size_t)INT_MAX / total_slots) ||
        count > (size_t)INT_MAX) {
        free(n_of);
        return ot_fail(err, "%s: %zu slots of %zu floats exceed MPI's int counts; split the buffer", name,
                       total_slots, count);
    }

    // Pack each own slot's piece for rank q contiguously: send layout [q][slot][e_q - b_q].
    int *scount = ot_malloc((size_t)P * sizeof(int)), *sdispl = ot_malloc((size_t)P * sizeof(int));
    int *rcount = ot_malloc((size_t)P * sizeof(int)), *rdispl = ot_malloc((size_t)P * sizeof(int));
    float *sendbuf = ot_malloc((size_t)n_slots * count * sizeof(float));
    size_t off = 0;
    for (int q = 0; q < P; q++) {
        size_t b, e;
        ot_comm_shard_range(count, P, q, &b, &e);
        scount[q] = (int)((size_t)n_slots * (e - b));
        sdispl[q] = (int)off;
        for (int s = 0; s < n_slots; s++) {
            memcpy(sendbuf + off, slots + (size_t)s * count + b, (e - b) * sizeof(float));
            off += e - b;
        }
    }
    size_t mb, me;
    ot_comm_shard_range(count, P, c->rank, &mb, &me);
    size_t len = me - mb;
    float *recvbuf = ot_malloc(total_slots * len * sizeof(float)); // [rank p][its slot][len] = global slot order
    off = 0;
    for (int p = 0; p < P; p++) {
        rcount[p] = (int)((size_t)n_of[p] * len);
        rdispl[p] = (int)off;
        off += (size_t)n_of[p] * len;
    }
    OT_MPI_CHECK(c, MPI_Ialltoallv(sendbuf, scount, sdispl, MPI_FLOAT, recvbuf, rcount, rdispl, MPI_FLOAT, m->world,
                                   &r));
    ot_mpi_wait_request(c, &r, name, seq);

    double *acc = ot_calloc(len, sizeof(double)); // +0.0
    for (size_t k = 0; k < total_slots; k++) {
        const float *piece = recvbuf + k * len;
        for (size_t i = 0; i < len; i++) acc[i] += (double)piece[i];
    }
    float *mine = gather && out ? out + mb : out; // out is NULL only when count is 0
    for (size_t i = 0; i < len; i++) mine[i] = (float)acc[i];

    if (gather) {
        for (int q = 0; q < P; q++) {
            size_t b, e;
            ot_comm_shard_range(count, P, q, &b, &e);
            rcount[q] = (int)(e - b);
            rdispl[q] = (int)b;
        }
        OT_MPI_CHECK(c, MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, out, rcount, rdispl, MPI_FLOAT, m->world, &r));
        ot_mpi_wait_request(c, &r, name, seq);
    }
    free(acc);
    free(recvbuf);
    free(sendbuf);
    free(scount);
    free(sdispl);
    free(rcount);
    free(rdispl);
    free(n_of);
    return 0;
}

static void ot_mpi_abort_job(ot_comm *c, int code) {
    ot_mpi *m = c->impl;
    MPI_Abort(m && m->world != MPI_COMM_NULL ? m->world : MPI_COMM_WORLD, code);
}

static void ot_mpi_destroy(ot_comm *c) {
    ot_mpi *m = c->impl;
    // A final barrier under the watchdog: MPI_Finalize would wait without a deadline for a peer that is gone.
    MPI_Request r;
    OT_MPI_CHECK(c, MPI_Ibarrier(m->world, &r));
    ot_mpi_wait_request(c, &r, "barrier (ot_comm_free)", ++c->n_collectives);
    OT_MPI_CHECK(c, MPI_Comm_free(&m->node));
    OT_MPI_CHECK(c, MPI_Comm_free(&m->world));
    if (m->owns_mpi) MPI_Finalize();
    free(m);
    c->impl = NULL;
}

static const struct ot_comm_ops ot_mpi_ops = {
    .name = "mpi",
    .start = ot_mpi_start,
    .wait = ot_mpi_wait,
    .sum_ordered = ot_mpi_sum_ordered,
    .abort_job = ot_mpi_abort_job,
    .destroy = ot_mpi_destroy,
};

int ot_comm_mpi_init(ot_comm **out, int *argc, char ***argv, const ot_comm_options *opt, ot_err *err) {
    *out = NULL;
    double timeout_s;
    if (ot_comm_resolve_timeout(opt, &timeout_s, err)) return -1;

    int initialized = 0, finalized = 0, provided = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized) return ot_fail(err, "ot_comm_mpi_init: MPI was already finalized in this process");
    int owns_mpi = 0;
    if (!initialized) {
        // FUNNELED: only the thread that called init talks to MPI (the communicator is single-threaded).
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return ot_fail(err, "MPI_Init_thread failed (MPI error %d)", rc);
        owns_mpi = 1;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_FUNNELED)
        return ot_fail(err, "MPI provides thread level %d, below MPI_THREAD_FUNNELED", provided);

    ot_comm *c = ot_calloc(1, sizeof *c);
    ot_mpi *m = ot_calloc(1, sizeof *m);
    m->world = MPI_COMM_NULL;
    m->node = MPI_COMM_NULL;
    m->owns_mpi = owns_mpi;
    c->ops = &ot_mpi_ops;
    c->impl = m;
    c->device = -1;
    c->timeout_s = timeout_s;
    c->rank = -1;
    int name_len = 0;
    char name[MPI_MAX_PROCESSOR_NAME];
    OT_MPI_CHECK(c, MPI_Get_processor_name(name, &name_len));
    snprintf(c->hostname, sizeof c->hostname, "%s", name);
    OT_MPI_CHECK(c, MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));

    OT_MPI_CHECK(c, MPI_Comm_dup(MPI_COMM_WORLD, &m->world));
    OT_MPI_CHECK(c, MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN));
    OT_MPI_CHECK(c, MPI_Comm_size(m->world, &c->size));
    // Node-local rank: ranks that can share memory are on one node; it picks the GPU of an NCCL communicator.
    OT_MPI_CHECK(c, MPI_Comm_split_type(m->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &m->node));
    OT_MPI_CHECK(c, MPI_Comm_set_errhandler(m->node, MPI_ERRORS_RETURN));
    OT_MPI_CHECK(c, MPI_Comm_rank(m->node, &c->local_rank));
    OT_MPI_CHECK(c, MPI_Comm_size(m->node, &c->local_size));
    *out = c;
    return 0;
}
