// Private to comm/: the table each implementation fills, and the failure path both share.
#ifndef OT_COMM_INTERNAL_H
#define OT_COMM_INTERNAL_H

#include "comm/comm.h"

typedef enum {
    OT_COLL_ALL_GATHER,
    OT_COLL_REDUCE_SCATTER,
    OT_COLL_ALL_REDUCE,
    OT_COLL_BROADCAST,
    OT_COLL_BARRIER,
} ot_coll_kind;

// One collective, already validated by comm.c (pointers, counts, dtype, op, root).
typedef struct {
    ot_coll_kind kind;
    const void *send;
    void *recv; // the only buffer of a broadcast
    size_t count;
    ot_comm_dtype dt;
    ot_comm_redop op;
    int root;
} ot_coll;

struct ot_comm_ops {
    const char *name;
    // Start `coll`; req->op and req->seq are set by the caller; fills req->handle. Returns -1 + err only for
    // limits of the implementation found before anything is sent (e.g. an MPI count above INT_MAX).
    int (*start)(ot_comm *c, const ot_coll *coll, ot_comm_req *req, ot_err *err);
    // Block until req is complete (ending the job at the deadline), then release req->handle.
    void (*wait)(ot_comm *c, ot_comm_req *req);
    // The ordered sum of comm.h. gather = 1: all `count` results in out; 0: this rank's shard range only.
    int (*sum_ordered)(ot_comm *c, const float *slots, int n_slots, size_t count, float *out, int gather,
                       uint64_t seq, ot_err *err);
    // End every rank of the job with exit status `code`. Must not return.
    void (*abort_job)(ot_comm *c, int code);
    // Release resources (the caller frees c itself).
    void (*destroy)(ot_comm *c);
};

// Print "osstune: rank R: <message>; aborting the job (exit status N, host H)" and end the job. A fallback
// alarm makes the process exit with `code` even if the library's abort itself hangs.
void ot_comm_fatal(ot_comm *c, int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
// The watchdog's verdict on collective `op` #seq after `waited` seconds. Never returns.
void ot_comm_timed_out(ot_comm *c, const char *op, uint64_t seq, double waited) __attribute__((noreturn));
// Called between two polls of an unfinished collective that has waited `waited` seconds: yields the CPU at
// first (fast collectives stay fast), then sleeps briefly so a waiting rank leaves the cores to computing ones.
void ot_comm_pause(double waited);
// The timeout from options, OSSTUNE_COMM_TIMEOUT or the default (see ot_comm_options).
int ot_comm_resolve_timeout(const ot_comm_options *opt, double *timeout_s, ot_err *err);

#endif
