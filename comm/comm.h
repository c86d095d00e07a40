// osstune communicator: one interface for the collectives the trainer needs, with two implementations —
// MPI on host buffers (the CPU backend, CI) and NCCL on CUDA device buffers (bootstrapped through an MPI one).
//
// Failure policy. A collective that cannot complete is not an error a caller can recover from: its peers are
// blocked in the same collective. So communication failures end the whole job: the rank that sees one prints
// "osstune: rank R: ..." and aborts the job with one of the exit codes below. In particular every wait has a
// deadline (the watchdog): a rank blocked longer than `timeout_s` in one collective because a peer died or hung
// aborts the job instead of hanging forever. Only mistakes detected locally before any communication (bad
// arguments) are returned as errors (-1 + ot_err); the peers of such a rank are then caught by the watchdog.
//
// Usage rules (as for MPI and NCCL): every rank calls the same collectives in the same order with matching
// counts; one thread uses a communicator. See docs/distributed.md for the guarantees and the environment.
#ifndef OT_COMM_H
#define OT_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"

#ifdef __cplusplus
extern "C" {
#endif

// Exit statuses of a job ended by the communicator (mpirun passes the aborting rank's status on).
#define OT_COMM_EXIT_MPI_ERROR 71  // an MPI call failed
#define OT_COMM_EXIT_NCCL_ERROR 72 // an NCCL or CUDA call failed, or NCCL reported an asynchronous error
#define OT_COMM_EXIT_TIMEOUT 73    // the watchdog: a collective waited longer than timeout_s for its peers

#define OT_COMM_DEFAULT_TIMEOUT_S 300.0
#define OT_COMM_TIMEOUT_ENV "OSSTUNE_COMM_TIMEOUT"

// uint8 buffers (MXFP4 bytes) are moved (all_gather, broadcast), never reduced: reductions take float32 and int64
// only. (Open MPI 4.1's vectorized uint8 sum saturates at 255 where NCCL wraps, open-mpi/ompi#8045, so the two
// implementations could not agree, and no caller needs a byte sum.)
typedef enum { OT_COMM_F32 = 0, OT_COMM_U8 = 1, OT_COMM_I64 = 2 } ot_comm_dtype;
typedef enum { OT_COMM_SUM = 0, OT_COMM_MAX = 1, OT_COMM_MIN = 2 } ot_comm_redop;

struct ot_comm_ops; // the implementation's function table (comm/comm_internal.h)

typedef struct ot_comm {
    int rank, size;             // this rank and the number of ranks in the job
    int local_rank, local_size; // this rank among the ranks on the same node, and how many share the node
    char hostname[256];
    int on_device;              // 1: buffers are CUDA device pointers (NCCL); 0: host memory (MPI)
    int device;                 // the CUDA device this rank drives (NCCL), -1 for MPI
    double timeout_s;           // the watchdog deadline for one wait, in seconds
    uint64_t n_collectives;     // collectives started so far; "#N" in messages is the same collective on all ranks
    const struct ot_comm_ops *ops;
    void *impl;
} ot_comm;

typedef struct {
    // Seconds one collective may wait for its peers before the job is aborted. 0 means: the value of the
    // environment variable OSSTUNE_COMM_TIMEOUT if set, else OT_COMM_DEFAULT_TIMEOUT_S.
    double timeout_s;
} ot_comm_options;

// MPI communicator over all ranks of the job. Calls MPI_Init_thread (MPI_THREAD_FUNNELED) unless MPI is already
// initialized; argc/argv may be NULL. opt may be NULL (defaults).
int ot_comm_mpi_init(ot_comm **out, int *argc, char ***argv, const ot_comm_options *opt, ot_err *err);
// NCCL communicator over the same ranks as `host` (an MPI communicator, which must outlive it): picks the GPU
// from the node-local rank, forces NCCL_NVLS_ENABLE=0, broadcasts the NCCL id over `host`. Same timeout as host.
// In a build without NCCL it returns an error saying so.
int ot_comm_nccl_init(ot_comm **out, ot_comm *host, ot_err *err);
// Releases the communicator. For MPI: a barrier under the watchdog (a dead peer is reported, not hung on), then
// MPI_Finalize if ot_comm_mpi_init initialized MPI. Collective: every rank calls it. NULL is allowed.
void ot_comm_free(ot_comm *c);
void ot_comm_set_timeout(ot_comm *c, double seconds);
// The CUDA stream (cudaStream_t) the NCCL communicator runs on, NULL for MPI. Device buffers given to a
// collective must be ready when it is called: synchronize the producing stream, or make this stream wait for it.
void *ot_comm_stream(ot_comm *c);

// ---- sharding of a flat buffer ---------------------------------------------------------------------------------
// A flat buffer of `total` elements is split into `world` shards of ceil(total / world) elements. Rank r owns
// elements [r·shard, (r+1)·shard) of a padded buffer of world·shard elements; the elements at index >= total are
// padding (the last ranks may own only padding). Collectives treat padding like any other element, so callers
// zero it (it then stays zero through sums).
size_t ot_comm_shard_count(size_t total, int world);
// The real (unpadded) part of rank r's shard: [*begin, *end), empty when r owns only padding.
void ot_comm_shard_range(size_t total, int world, int rank, size_t *begin, size_t *end);

// ---- collectives (blocking) ------------------------------------------------------------------------------------
// Counts are elements. Host pointers for MPI, device pointers for NCCL. count 0 is allowed (pointers may be NULL).
// all_gather: every rank sends `count` elements; recv (size·count) holds rank r's at [r·count, (r+1)·count).
//   In place when send == recv + rank·count.
int ot_comm_all_gather(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt, ot_err *err);
// reduce_scatter: send holds size·count elements; rank r receives the reduction of every rank's
//   [r·count, (r+1)·count). In place when recv == send + rank·count.
int ot_comm_reduce_scatter(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt,
                           ot_comm_redop op, ot_err *err);
// all_reduce: recv = the reduction over ranks of send (count elements each). In place when send == recv.
//   Float sums: the order of additions is the library's (it may depend on the world size and the algorithm);
//   use the _ordered variants below when bits must not depend on the world size.
int ot_comm_all_reduce(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt, ot_comm_redop op,
                       ot_err *err);
// broadcast: buf (count elements) of rank `root` is copied to every rank's buf.
int ot_comm_broadcast(ot_comm *c, void *buf, size_t count, ot_comm_dtype dt, int root, ot_err *err);
// barrier: returns once every rank has entered it (NCCL: also after this rank's earlier collectives finished).
int ot_comm_barrier(ot_comm *c, ot_err *err);

// ---- collectives (started now, finished by ot_comm_wait) -------------------------------------------------------
// For overlapping communication with compute (FSDP prefetch). Buffers must stay untouched until the wait
// returns. Several may be in flight; every rank must start them in the same order. A request is waited once.
typedef struct {
    void *handle;   // the implementation's in-flight state; NULL when the request is not in flight
    const char *op; // the collective's name, for messages
    uint64_t seq;   // its number on this communicator
} ot_comm_req;
int ot_comm_all_gather_start(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt,
                             ot_comm_req *req, ot_err *err);
int ot_comm_reduce_scatter_start(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt,
                                 ot_comm_redop op, ot_comm_req *req, ot_err *err);
int ot_comm_all_reduce_start(ot_comm *c, const void *send, void *recv, size_t count, ot_comm_dtype dt,
                             ot_comm_redop op, ot_comm_req *req, ot_err *err);
// Blocks (under the watchdog) until the collective is complete on this rank.
int ot_comm_wait(ot_comm *c, ot_comm_req *req, ot_err *err);

// ---- deterministic float sums ----------------------------------------------------------------------------------
// Each rank contributes n_slots buffers ("slots") of `count` floats, stored one after another in `slots`
// (n_slots may differ between ranks, and may be 0). The global slot sequence is rank 0's slots in order, then
// rank 1's, and so on: S_0 … S_{K−1}. The result is, for every element i,
//     acc = +0.0 (double);  for k = 0 … K−1: acc = acc + (double)S_k[i];  result[i] = (float)acc
// i.e. a left-to-right sum in double rounded once to float. It depends only on the global slot sequence —
// not on the world size, on how slots are spread over ranks, or on the library — so it is bitwise the same
// for 1 and N ranks when the same global sequence of slots is given. K = 0 gives zeros.
// On NCCL, slots and out are device pointers too; they are staged through host memory and summed by the host
// communicator (a reference path: exact, not fast).
// all_reduce_ordered: every rank gets all `count` results in out.
int ot_comm_all_reduce_ordered(ot_comm *c, const float *slots, int n_slots, size_t count, float *out, ot_err *err);
// reduce_scatter_ordered: out gets only this rank's part, elements [begin, end) of ot_comm_shard_range(count,
// size, rank, ...) (end − begin floats; nothing when the rank owns only padding).
int ot_comm_reduce_scatter_ordered(ot_comm *c, const float *slots, int n_slots, size_t count, float *out,
                                   ot_err *err);

size_t ot_comm_dtype_size(ot_comm_dtype dt);
const char *ot_comm_dtype_name(ot_comm_dtype dt);

#ifdef __cplusplus
}
#endif
#endif
