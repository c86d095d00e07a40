// The communicator's public entry points: argument checks, collective numbering and the shared failure path.
// The implementations (comm_mpi.c, comm_nccl.c) only ever see validated collectives.
#include "comm/comm_internal.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

// Seconds the library's own job abort (MPI_Abort, ncclCommAbort) may take before the process exits by itself.
#define OT_COMM_ABORT_GRACE_S 20

size_t ot_comm_dtype_size(ot_comm_dtype dt) {
    switch (dt) {
    case OT_COMM_F32: return 4;
    case OT_COMM_U8: return 1;
    case OT_COMM_I64: return 8;
    }
    return 0;
}

const char *ot_comm_dtype_name(ot_comm_dtype dt) {
    switch (dt) {
    case OT_COMM_F32: return "float32";
    case OT_COMM_U8: return "uint8";
    case OT_COMM_I64: return "int64";
    }
    return "invalid dtype";
}

size_t ot_comm_shard_count(size_t total, int world) {
    if (world <= 0) return 0;
    return total / (size_t)world + (total % (size_t)world != 0);
}

void ot_comm_shard_range(size_t total, int world, int rank, size_t *begin, size_t *end) {
    size_t shard = ot_comm_shard_count(total, world);
    size_t b = (size_t)rank * shard, e = b + shard;
    *begin = b < total ? b : total;
    *end = e < total ? e : total;
}

// ---- failure path ----------------------------------------------------------------------------------------------
static volatile sig_atomic_t ot_comm_exit_code = 1;

static void ot_comm_abort_took_too_long(int sig) {
    (void)sig;
    _exit(ot_comm_exit_code);
}

void ot_comm_fatal(ot_comm *c, int code, const char *fmt, ...) {
    static int aborting = 0; // a failure inside the abort itself must not recurse into it
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "osstune: rank %d: ", c ? c->rank : -1);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "; aborting the job (exit status %d, host %s)\n", code, c && c->hostname[0] ? c->hostname : "?");
    va_end(ap);
    fflush(stdout);
    fflush(stderr);
    ot_comm_exit_code = code;
    signal(SIGALRM, ot_comm_abort_took_too_long);
    alarm(OT_COMM_ABORT_GRACE_S);
    if (!aborting && c && c->ops && c->ops->abort_job) {
        aborting = 1;
        c->ops->abort_job(c, code);
    }
    _exit(code);
}

void ot_comm_timed_out(ot_comm *c, const char *op, uint64_t seq, double waited) {
    ot_comm_fatal(c, OT_COMM_EXIT_TIMEOUT,
                  "collective %s #%llu timed out after %.1fs waiting for peers (a rank died or hung; the limit is "
                  "%g s, see %s)",
                  op, (unsigned long long)seq, waited, c->timeout_s, OT_COMM_TIMEOUT_ENV);
}

void ot_comm_pause(double waited) {
    if (waited < 2e-3) {
        sched_yield();
        return;
    }
    // After 2 ms the peers are evidently busy; poll every 50 µs, and every 0.5 ms once the wait is long.
    struct timespec ts = {0, waited < 0.1 ? 50 * 1000 : 500 * 1000};
    nanosleep(&ts, NULL);
}

int ot_comm_resolve_timeout(const ot_comm_options *opt, double *timeout_s, ot_err *err) {
    if (opt && opt->timeout_s != 0) {
        if (!(opt->timeout_s > 0) || !isfinite(opt->timeout_s))
            return ot_fail(err, "communicator timeout %g s: must be a positive number of seconds", opt->timeout_s);
        *timeout_s = opt->timeout_s;
        return 0;
    }
    const char *env = getenv(OT_COMM_TIMEOUT_ENV);
    if (env && env[0]) {
        char *end = NULL;
        errno = 0;
        double v = strtod(env, &end);
        if (errno || end == env || *end != 0 || !(v > 0) || !isfinite(v))
            return ot_fail(err, "%s='%s': must be a positive number of seconds", OT_COMM_TIMEOUT_ENV, env);
        *timeout_s = v;
        return 0;
    }
    *timeout_s = OT_COMM_DEFAULT_TIMEOUT_S;
    return 0;
}

void ot_comm_set_timeout(ot_comm *c, double seconds) {
    if (c && seconds > 0 && isfinite(seconds)) c->timeout_s = seconds;
    else if (c) ot_warn("ot_comm_set_timeout: %g s is not a positive number of seconds; keeping %g s", seconds,
                        c->timeout_s);
}

void ot_comm_free(ot_comm *c) {
    if (!c) return;
    c->ops->destroy(c);
    free(c);
}

#ifndef OT_HAVE_NCCL
int ot_comm_nccl_init(ot_comm **out, ot_comm *host, ot_err *err) {
    *out = NULL;
    return ot_fail(err, "this osstune was built without NCCL (CUDA and libnccl were not found at configure time)");
}

void *ot_comm_stream(ot_comm *c) { return NULL; }
#endif

// ---- argument checks -------------------------------------------------------------------------------------------
static const char *ot_coll_name(ot_coll_kind k) {
    switch (k) {
    case OT_COLL_ALL_GATHER: return "all_gather";
    case OT_COLL_REDUCE_SCATTER: return "reduce_scatter";
    case OT_COLL_ALL_REDUCE: return "all_reduce";
    case OT_COLL_BROADCAST: return "broadcast";
    case OT_COLL_BARRIER: return "barrier";
    }
    return "?";
}

// Do the byte ranges [a, a+na) and [b, b+nb) share a byte?
static int ot_overlap(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return na && nb && x < y + nb && y < x + na;
}

static int ot_check_coll(ot_comm *c, const ot_coll *k, ot_err *err) {
    const char *name = ot_coll_name(k->kind);
    if (!c) return ot_fail(err, "%s: communicator is NULL", name);
    if (k->kind == OT_COLL_BARRIER) return 0;
    size_t es = ot_comm_dtype_size(k->dt);
    if (!es) return ot_fail(err, "%s: invalid dtype %d", name, (int)k->dt);
    int reduces = k->kind == OT_COLL_REDUCE_SCATTER || k->kind == OT_COLL_ALL_REDUCE;
    if (reduces && k->op != OT_COMM_SUM && k->op != OT_COMM_MAX && k->op != OT_COMM_MIN)
        return ot_fail(err, "%s: invalid reduction %d", name, (int)k->op);
    if (reduces && k->dt == OT_COMM_U8)
        return ot_fail(err, "%s: uint8 buffers are moved, not reduced (reductions take float32 or int64)", name);
    if (k->count > SIZE_MAX / es / (size_t)c->size) return ot_fail(err, "%s: count %zu is too large", name, k->count);
    if (k->count == 0) return 0;
    size_t one = k->count * es, all = one * (size_t)c->size;
    switch (k->kind) {
    case OT_COLL_ALL_GATHER:
        if (!k->send || !k->recv) return ot_fail(err, "%s: NULL buffer for %zu elements", name, k->count);
        if (k->send != (const char *)k->recv + (size_t)c->rank * one && ot_overlap(k->send, one, k->recv, all))
            return ot_fail(err, "%s: send overlaps recv but is not recv + rank*count (the in-place form)", name);
        break;
    case OT_COLL_REDUCE_SCATTER:
        if (!k->send || !k->recv) return ot_fail(err, "%s: NULL buffer for %zu elements", name, k->count);
        if ((const char *)k->recv != (const char *)k->send + (size_t)c->rank * one &&
            ot_overlap(k->send, all, k->recv, one))
            return ot_fail(err, "%s: recv overlaps send but is not send + rank*count (the in-place form)", name);
        break;
    case OT_COLL_ALL_REDUCE:
        if (!k->send || !k->recv) return ot_fail(err, "%s: NULL buffer for %zu elements", name, k->count);
        if (k->send != k->recv && ot_overlap(k->send, one, k->recv, one))
            return ot_fail(err, "%s: send and recv overlap without being equal (the in-place form)", name);
        break;
    case OT_COLL_BROADCAST:
        if (!k->recv) return ot_fail(err, "%s: NULL buffer for %zu elements", name, k->count);
        if (k->root < 0 || k->root >= c->size)
            return ot_fail(err, "%s: root %d is not a rank of this %d-rank communicator", name, k->root, c->size);
        break;
    case OT_COLL_BARRIER: break;
    }
    return 0;
}

static int ot_start(ot_comm *c, const ot_coll *k, ot_comm_req *req, ot_err *err) {
    if (!req) return ot_fail(err, "%s: request is NULL", ot_coll_name(k->kind));
    req->handle = NULL;
    req->op = ot_coll_name(k->kind);
    if (ot_check_coll(c, k, err)) return -1;
    req->seq = ++c->n_collectives;
    return c->ops->start(c, k, req, err);
}

int ot_comm_wait(ot_comm *c, ot_comm_req *req, ot_err *err) {
    if (!c || !req) return ot_fail(err, "ot_comm_wait: NULL communicator or request");
    if (!req->handle)
        return ot_fail(err, "ot_comm_wait: %s #%llu is not in flight (never started, or already waited)",
                       req->op ? req->op : "request", (unsigned long long)req->seq);
    c->ops->wait(c, req);
    return 0;
}

static int ot_run(ot_comm *c, const ot_coll *k, ot_err *err) {
    ot_comm_req req;
    if (ot_start(c, k, &req, err)) return -1;
    return ot_comm_wait(c, &req, err);
}

// ---- collectives -----------------------------------------------------------------------------------------------
int ot_comm_all_gather_start(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt,
                             ot_comm_req *req, ot_err *err) {
    ot_coll k = {.kind = OT_COLL_ALL_GATHER, .send = send, .recv = recv, .count = count, .dt = dt};
    return ot_start(c, &k, req, err);
}

int ot_comm_reduce_scatter_start(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt,
                                 ot_comm_redop op, ot_comm_req *req, ot_err *err) {
    ot_coll k = {.kind = OT_COLL_REDUCE_SCATTER, .send = send, .recv = recv, .count = count, .dt = dt, .op = op};
    return ot_start(c, &k, req, err);
}

int ot_comm_all_reduce_start(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt,
                             ot_comm_redop op, ot_comm_req *req, ot_err *err) {
    ot_coll k = {.kind = OT_COLL_ALL_REDUCE, .send = send, .recv = recv, .count = count, .dt = dt, .op = op};
    return ot_start(c, &k, req, err);
}

int ot_comm_all_gather(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt, ot_err *err) {
    ot_coll k = {.kind = OT_COLL_ALL_GATHER, .send = send, .recv = recv, .count = count, .dt = dt};
    return ot_run(c, &k, err);
}

int ot_comm_reduce_scatter(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt,
                           ot_comm_redop op, ot_err *err) {
    ot_coll k = {.kind = OT_COLL_REDUCE_SCATTER, .send = send, .recv = recv, .count = count, .dt = dt, .op = op};
    return ot_run(c, &k, err);
}

int ot_comm_all_reduce(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt, ot_comm_redop op,
                       ot_err *err) {
    ot_coll k = {.kind = OT_COLL_ALL_REDUCE, .send = send, .recv = recv, .count = count, .dt = dt, .op = op};
    return ot_run(c, &k, err);
}

int ot_comm_broadcast(ot_comm *c, void *buf, size_t count, ot_comm_dtype dt, int root, ot_err *err) {
    ot_coll k = {.kind = OT_COLL_BROADCAST, .recv = buf, .count = count, .dt = dt, .root = root};
    return ot_run(c, &k, err);
}

int ot_comm_barrier(ot_comm *c, ot_err *err) {
    ot_coll k = {.kind = OT_COLL_BARRIER};
    return ot_run(c, &k, err);
}

// ---- ordered sums ----------------------------------------------------------------------------------------------
static int ot_sum_ordered(ot_comm *c, const char *name, const float *slots, int n_slots, size_t count, float *out,
                          int gather, ot_err *err) {
    if (!c) return ot_fail(err, "%s: communicator is NULL", name);
    if (n_slots < 0) return ot_fail(err, "%s: n_slots %d is negative", name, n_slots);
    if (n_slots > 0 && count > SIZE_MAX / sizeof(float) / (size_t)n_slots)
        return ot_fail(err, "%s: %d slots of %zu floats is too large", name, n_slots, count);
    if (n_slots > 0 && count > 0 && !slots)
        return ot_fail(err, "%s: slots is NULL for %d slots of %zu floats", name, n_slots, count);
    size_t b, e;
    ot_comm_shard_range(count, c->size, c->rank, &b, &e);
    size_t n_out = gather ? count : e - b;
    if (n_out > 0 && !out) return ot_fail(err, "%s: out is NULL for %zu floats", name, n_out);
    if (n_out > 0 && n_slots > 0 && ot_overlap(slots, (size_t)n_slots * count * sizeof(float), out,
                                               n_out * sizeof(float)))
        return ot_fail(err, "%s: out overlaps slots", name);
    return c->ops->sum_ordered(c, slots, n_slots, count, out, gather, ++c->n_collectives, err);
}

int ot_comm_all_reduce_ordered(ot_comm *c, const float *slots, int n_slots, size_t count, float *out, ot_err *err) {
    return ot_sum_ordered(c, "all_reduce_ordered", slots, n_slots, count, out, 1, err);
}

int ot_comm_reduce_scatter_ordered(ot_comm *c, const float *slots, int n_slots, size_t count, float *out,
                                   ot_err *err) {
    return ot_sum_ordered(c, "reduce_scatter_ordered", slots, n_slots, count, out, 0, err);
}
