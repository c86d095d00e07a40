// The run directory: where a training run keeps what it needs to continue, for LoRA and --full runs alike
// (docs/run-checkpoints.md has the layout and the guarantees).
//
//   run/ckpt/step-000120/  <the mode's payload files>   (LoRA: the PEFT adapter + optimizer.safetensors;
//                                                        --full: model/, master.safetensors, optimizer.safetensors)
//                          state.pb                      proto/osstune.proto TrainState: everything but tensors
//                          COMPLETE                      written last: size and SHA-256 of every file above
//   run/ckpt/latest        "step-000120": the newest complete checkpoint, replaced by atomic rename
//
// Crash safety comes from one rule: a directory named step-NNNNNN only ever appears by a rename of a temporary
// directory whose every file, COMPLETE last, is already fsync'ed. Until that rename the previous checkpoints are
// not touched; after it, `latest` and pruning only move forward to what is already durable, and pruning never
// removes the newest complete checkpoint. Only one process writes a run directory; every rank may read it.
#ifndef OT_FORMATS_RUN_DIR_H
#define OT_FORMATS_RUN_DIR_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"

#define OT_CKPT_FORMAT_VERSION 1
#define OT_CKPT_MAX_RNG 8
#define OT_FINGERPRINT_LEN 65 // 64 hex digits + NUL
#define OT_PATH_MAX 4096
#define OT_CKPT_MAX_STEP 1000000000LL // steps (and optimizer steps) a state may record: osstune-train's --steps limit
#define OT_CKPT_MAX_WORLD (1 << 20)    // ranks a state may record

// What a run trains: a LoRA adapter on a frozen base, or every weight of the model (--full).
typedef enum { OT_RUN_LORA = 1, OT_RUN_FULL = 2 } ot_run_mode;
const char *ot_run_mode_name(ot_run_mode m); // "lora", "full"

// AdamW settings and the warmup + cosine schedule (the optimizer's configuration, as state.pb records it).
typedef struct {
    float lr, min_lr;
    float beta1, beta2, eps, weight_decay;
    float max_grad_norm; // <= 0: no clipping
    long warmup_steps, total_steps;
} ot_optim_config;

// A named random stream the run owns (dropout, sampling, ...), saved verbatim so it continues mid-sequence.
typedef struct {
    char name[32];
    ot_rng rng;
} ot_ckpt_rng;

// The state that is not a tensor: state.pb in memory. The loop fills it before a save; a load fills it back.
typedef struct {
    ot_run_mode mode;   // what the checkpoint's payload is (0 in a state.pb from before the field: LoRA)
    int64_t step;       // optimizer steps completed; names the directory
    uint64_t seed;      // run seed
    uint64_t data_seed; // the data loader cursor: the global sample order depends on (data_seed, data_epoch) only
    int64_t data_epoch;
    int64_t data_next;  // index in the epoch's global order of the next sample to consume
    int32_t world_size; // ranks at save time (resuming on another number is allowed)
    int n_rng;
    ot_ckpt_rng rng[OT_CKPT_MAX_RNG];
    // running metrics
    int64_t samples_seen, tokens_seen, targets_seen;
    double last_loss, loss_ema, last_grad_norm, last_lr;
    double elapsed_seconds;
    // SHA-256 hex of what the run was started with ("" = not recorded); formats/fingerprint.h computes them
    char config_fingerprint[OT_FINGERPRINT_LEN], model_fingerprint[OT_FINGERPRINT_LEN],
        data_fingerprint[OT_FINGERPRINT_LEN];
    char *resolved_config_json; // the run's resolved options as JSON (owned; NULL = none); run/config.json too
    // The optimizer's position and settings when the checkpoint was written: filled by a load from state.pb;
    // a save takes them from the optimizer it is given (ot_run_dir_commit's arguments).
    int64_t optimizer_step;     // AdamW steps taken = the LR schedule position
    ot_optim_config optim;      // AdamW settings and LR schedule in force at save time
    uint64_t n_params;          // trainable values (the flat buffer the moments follow)
    int64_t saved_unix_time;
} ot_train_state;

// Free the config string and zero the struct. A zeroed struct (= {0}) is a valid empty state.
void ot_train_state_free(ot_train_state *st);

// ---- writing a checkpoint -----------------------------------------------------------------------------------------
typedef struct {
    char ckpt_dir[OT_PATH_MAX]; // run/ckpt
    char dir[OT_PATH_MAX];      // the temporary directory the payload files go into
    char final[OT_PATH_MAX];    // run/ckpt/step-NNNNNN
    int64_t step;
} ot_run_ckpt_writer;

// Creates run_dir and run_dir/ckpt if needed, removes unfinished writes left by a killed writer, and makes the
// temporary directory w->dir. The caller writes its payload files there (each atomically: formats/fileio.h).
int ot_run_ckpt_begin(ot_run_ckpt_writer *w, const char *run_dir, int64_t step, ot_err *err);
// Writes state.pb (st, with the optimizer's position `optimizer_step`, settings `optim` and buffer length
// `n_params`), then COMPLETE listing every file in w->dir, fsyncs, renames the directory into place (a step saved
// again is swapped in atomically), points `latest` at it and keeps the keep_last newest checkpoints (keep_last <= 0
// keeps all; a failure to prune is a warning). Only directories that are provably this run's own (an osstune
// COMPLETE marker, a readable state of st->mode) are ever deleted by pruning or replaced; any other is kept, with a
// warning. On failure the temporary directory is removed and the previous checkpoints are untouched.
// Test hook: when the environment variable OSSTUNE_TEST_CKPT_PAUSE holds a number of seconds, the writer prints
// "OSSTUNE_TEST_CKPT_PAUSE: pausing ..." to stderr and sleeps that long after the payload is in the temporary
// directory and before state.pb and COMPLETE are written (tests kill it there).
int ot_run_ckpt_commit(ot_run_ckpt_writer *w, const ot_train_state *st, int64_t optimizer_step, const ot_optim_config *optim,
                   uint64_t n_params, int keep_last, ot_err *err);
// Removes the temporary directory of a write that is given up.
void ot_run_ckpt_abort(ot_run_ckpt_writer *w);

// ---- reading checkpoints ------------------------------------------------------------------------------------------
// A payload reader: checks and loads the mode's files of checkpoint directory `dir` whose state is `st`
// (COMPLETE already verified, state.pb already read). It must change nothing unless it returns OT_RUN_CKPT_OK.
enum { OT_RUN_CKPT_OK = 0, OT_RUN_CKPT_DAMAGED = 1, OT_RUN_CKPT_INCOMPATIBLE = -1 };
typedef int (*ot_run_ckpt_payload_fn)(void *ctx, const char *dir, const ot_train_state *st, ot_err *err);

typedef struct {
    ot_run_mode mode;            // the run's mode: a checkpoint of the other mode is refused, never "damaged"
    const char *const *required; // payload files COMPLETE must list (NULL-terminated), besides state.pb
    ot_run_ckpt_payload_fn load;
    void *ctx;
} ot_run_ckpt_reader;

// The newest loadable checkpoint of run_dir. Candidates are the step directories, newest step first; one that is
// damaged (no COMPLETE, a file missing, truncated or changed since it was written, state.pb unreadable, or what the
// payload reader calls damage) is reported with ot_warn naming the directory and the reason, and the next older
// one is tried. Unfinished writes (.tmp-*) are never candidates. An incompatible checkpoint (the other mode, or
// what the payload reader calls incompatible) is an error: an older checkpoint of the same run would not fit either.
// On success st is replaced (its config string freed) and loaded_dir (may be NULL) names the directory.
// When there are step directories and none of them loads, that is an error too (-1): a run that started over would
// prune or replace them; the message says to move them away or use another run directory.
// Returns 0 = loaded, 1 = no checkpoint at all (nothing changed), -1 = error.
int ot_run_ckpt_load_latest(const char *run_dir, const ot_run_ckpt_reader *r, ot_train_state *st, char *loaded_dir,
                        size_t loaded_dir_len, ot_err *err);
// One checkpoint directory (run/ckpt/step-NNNNNN) with the same checks; damage is an error here.
int ot_run_ckpt_load_dir(const char *ckpt_dir, const ot_run_ckpt_reader *r, ot_train_state *st, ot_err *err);
// For the programs that read a checkpoint's files directly (translate, logits, export): when dir (given as `role`,
// e.g. "--adapter") is a checkpoint step directory, or the model/ directory inside one, every file its COMPLETE
// marker lists must still have the recorded size and SHA-256. 0 when they do and when there is no marker (a PEFT
// adapter or a model osstune did not write as a checkpoint); -1 with a message naming the damaged file.
int ot_run_ckpt_verify_files(const char *dir, const char *role, ot_err *err);
// How many step directories run_dir/ckpt holds (0 when it does not exist); newest (may be NULL) receives the path
// of the newest one. Nothing is verified.
int ot_run_ckpt_list(const char *run_dir, int *n, char *newest, size_t newest_len, ot_err *err);

// ---- one trainer per run directory --------------------------------------------------------------------------------
// RUN_DIR/osstune-train.lock, locked (fcntl, a write lock on the whole file) for as long as a run uses the directory.
// The kernel drops the lock when its process ends, however it ends, so a killed or preempted job never blocks its
// successor; the file's text says who holds it (host, pid, start time) for the message a second trainer gets.
typedef struct {
    int fd;                     // -1: not held
    int created_dir;            // the run directory did not exist before ot_run_lock_take
    char run_dir[OT_PATH_MAX];
    char path[OT_PATH_MAX];     // the lock file
} ot_run_lock;

// Creates run_dir if needed and takes its lock. When another process holds it: -1 with a message naming that process
// (host, pid, start time). On a file system without locks: a warning, and 0 (the run goes on unguarded).
int ot_run_lock_take(ot_run_lock *l, const char *run_dir, ot_err *err);
// Releases the lock (the file is removed while still held, so nobody takes a lock on a file about to vanish).
// discard: also remove the run directory if ot_run_lock_take created it and it is empty again (a run refused at
// start-up leaves nothing behind). A zeroed or already released lock is fine.
void ot_run_lock_release(ot_run_lock *l, int discard);

#endif
