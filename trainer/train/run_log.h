// The bookkeeping of a training run around its steps: the run's identity (config.json, fingerprints), taking over
// a resumed run's counters, and one record per optimizer step — the ranks' agreement on stopping and on the step's
// tokens, the metrics.jsonl line and the progress line —, the validation record, the agreement after a
// checkpoint write, and the closing messages. Rank 0 writes; every rank calls (some calls are collective).
#ifndef OT_TRAINER_RUN_LOG_H
#define OT_TRAINER_RUN_LOG_H

#include <stdio.h>

#include "comm/comm.h"
#include "formats/metrics.h"
#include "trainer/graph/batch.h"
#include "trainer/train/checkpoint.h"
#include "trainer/train/data_loader.h"
#include "trainer/train/train_options.h"

#define OT_EXIT_PREEMPTED 75 // EX_TEMPFAIL: stopped on request after checkpointing; start again to resume

typedef struct {
    const ot_train_options *o;
    ot_comm *comm;
    const char *prog;   // message prefix: "osstune-train" or "osstune-train --full"
    const char *mode;   // written as "mode" in each step line when not NULL
    ot_metrics_file *metrics; // rank 0: <run_dir>/metrics.jsonl, appended
    // base-weight memory of this rank, for the step lines (all 0: not written)
    size_t base_bytes, base_bytes_one_rank, base_layer_buffer_bytes;
    // this rank's GPU memory in use, set before each step record (0: a CPU run); after the record, the most any
    // rank's GPU has in use, and on rank 0 the largest such value so far
    size_t gpu_in_use, gpu_peak;
    // training-time clock: validation and checkpoint writes do not count (ot_run_restart_clock after them)
    double t_last, elapsed_at_start;
    long steps_at_start;
    int64_t tokens_at_start;
    int64_t stop_signal; // the largest stop signal any rank saw at the last step (0: none)
} ot_run_log;

// Fingerprints and resolved options into st (seed, world size, config JSON); nothing is written. *config_json is
// the caller's to free.
int ot_run_identity(const ot_train_options *o, ot_comm *comm, ot_train_state *st, char **config_json, ot_err *err);
// RUN_DIR/config.json written atomically by rank 0 -- only once the run is known to go ahead (inputs valid, resume
// checked) --, then a barrier, so no rank starts before the run directory exists.
int ot_run_write_config(const ot_train_options *o, ot_comm *comm, const char *config_json, ot_err *err);

// After a checkpoint was loaded: refuse it unless it is compatible with this run (ot_ckpt_check_compatible, unless
// force), else continue its step, data cursor and counters (our fingerprints and config stay) and say so on rank 0.
int ot_run_continue(ot_train_state *st, const ot_train_state *saved, int force, const ot_comm *comm, const char *prog,
                    const char *from, ot_err *err);

// A row's (or a rank's) loss sum as a (hi, lo) float pair, so that the ordered float sum across ranks keeps
// double precision; and the step's mean loss over its targets from n such pairs, summed in global order.
void ot_loss_pair(float *pair, double loss);
int ot_run_step_loss(ot_comm *comm, const float *pairs, int n, int64_t global_targets, double *loss, ot_err *err);

// Opens metrics.jsonl on rank 0 and starts the training-time clock from st.
int ot_run_log_open(ot_run_log *r, const ot_train_options *o, ot_comm *comm, const char *prog, const char *mode,
                    const ot_train_state *st, ot_err *err);
int ot_run_log_close(ot_run_log *r, ot_err *err); // -1: the metrics file did not take every line

// One optimizer step is done: st takes the step (cursor, counters, loss, norm, rate); the ranks agree on stopping
// (stop_signal: this rank's) and on the step's token count; rank 0 writes the step line and, every --log-every
// steps, the progress line. -1 (err) on a non-finite loss or a failed collective. *stopping: a rank saw a signal.
int ot_run_step_done(ot_run_log *r, ot_train_state *st, const ot_batch *batch, const ot_data_cursor *after, double loss,
                     double grad_norm, float lr, int64_t stop_signal, int *stopping, ot_err *err);

// After ot_run_step_done: -1 (err) when the most any rank's GPU has in use passed --gpu-memory-limit. The planned
// buffers are refused at allocation; what CUDA allocates by itself afterwards (kernels' code loaded at first use,
// the libraries' own buffers) is seen only here, and on the smaller card it would have failed the step. Every rank
// sees the same figure, so the ranks fail together.
int ot_run_check_gpu_limit(const ot_run_log *r, const ot_train_state *st, ot_err *err);

// Validation (--eval-data) and checkpoints are due at this step: at the end, when stopping, or every N steps.
int ot_run_eval_due(const ot_run_log *r, const ot_train_state *st, int stopping);
int ot_run_save_due(const ot_run_log *r, const ot_train_state *st, int stopping);

int ot_run_eval_record(ot_run_log *r, const ot_train_state *st, double eval_loss, int64_t eval_targets,
                       double seconds, ot_err *err);

// After rank 0 tried a checkpoint write (save_rc: its result, err its message): says what happened and makes every
// rank agree. Returns 0 (written), 1 (failed on rank 0: stop with exit 1), or -1 (err: a collective failed).
int ot_run_saved(ot_run_log *r, const ot_train_state *st, int save_rc, const ot_err *save_err, const char *what,
                 ot_err *err);

// Time spent outside training steps (validation, a checkpoint write) does not count towards tokens/s.
void ot_run_restart_clock(ot_run_log *r);

// The message for a stop on request (rank 0); returns OT_EXIT_PREEMPTED.
int ot_run_stopped(const ot_run_log *r, const ot_train_state *st);

// Resident memory of this process in MiB (from /proc).
double ot_rss_mib(void);

#endif
