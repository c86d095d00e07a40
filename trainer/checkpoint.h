// Training checkpoints: everything needed to continue a run exactly where it stopped, written so that a crash at
// any moment leaves the previous checkpoint intact. docs/run-checkpoints.md describes the layout and the protocol.
//
//   run/ckpt/step-000120/  adapter_model.safetensors  adapter_config.json   (PEFT, via ot_lora_save_peft)
//                          optimizer.safetensors       (AdamW exp_avg / exp_avg_sq, flat, in the LoRA buffer order)
//                          state.pb                    (proto/osstune.proto TrainState)
//                          COMPLETE                    (written last: size and SHA-256 of every file above)
//   run/ckpt/latest        "step-000120": the newest complete checkpoint, replaced by atomic rename
//
// Only one process writes a run directory (rank 0); every rank may load from it.
#ifndef OT_TRAINER_CHECKPOINT_H
#define OT_TRAINER_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"
#include "trainer/lora.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"

#define OT_CKPT_FORMAT_VERSION 1
#define OT_CKPT_MAX_RNG 8
#define OT_FINGERPRINT_LEN 65 // 64 hex digits + NUL

// A named random stream the run owns (dropout, sampling, ...), saved verbatim so it continues mid-sequence.
typedef struct {
    char name[32];
    ot_rng rng;
} ot_ckpt_rng;

// The state that is not a tensor. The loop fills it before ot_ckpt_save; ot_ckpt_load_latest fills it back.
typedef struct {
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
    // SHA-256 hex of what the run was started with ("" = not recorded); see the fingerprint helpers below
    char config_fingerprint[OT_FINGERPRINT_LEN], model_fingerprint[OT_FINGERPRINT_LEN],
        data_fingerprint[OT_FINGERPRINT_LEN];
    char *resolved_config_json; // the run's resolved options as JSON (owned; NULL = none); run/config.json too
    // Filled by ot_ckpt_load_latest / ot_ckpt_load from the checkpoint, for the record; ignored by ot_ckpt_save,
    // which takes them from the optimizer it is given.
    int64_t optimizer_step;     // AdamW steps taken = the LR schedule position
    ot_optim_config optim;      // AdamW settings and LR schedule in force at save time
    uint64_t n_params;          // LoRA buffer length
    int64_t saved_unix_time;
} ot_train_state;

// Free the config string and zero the struct. A zeroed struct (= {0}) is a valid empty state.
void ot_train_state_free(ot_train_state *st);

// Write run_dir/ckpt/step-NNNNNN (NNNNNN = st->step) for the adapter lo, the optimizer opt (opt->n must equal
// lo->n_params) and st; then point run_dir/ckpt/latest at it; then keep only the keep_last newest complete
// checkpoints (keep_last <= 0 keeps all). Creates run_dir and run_dir/ckpt if needed. Saving a step that already
// exists replaces it atomically. Returns 0, or -1 with a message (the previous checkpoints are untouched).
// A failure to prune old checkpoints is a warning, not an error.
// Test hook: when the environment variable OSSTUNE_TEST_CKPT_PAUSE holds a number of seconds, the writer prints
// "OSSTUNE_TEST_CKPT_PAUSE: pausing ..." to stderr and sleeps that long after the adapter and the optimizer state
// are in the temporary directory and before state.pb and COMPLETE are written (tests kill it there).
int ot_ckpt_save(const char *run_dir, const ot_train_state *st, const ot_lora *lo, const ot_model *m,
                 const ot_optimizer *opt, int keep_last, ot_err *err);

// Load the newest valid checkpoint of run_dir. Candidates are the step directories, newest step first; one that is
// damaged (no COMPLETE marker, a file missing, truncated or changed since it was written, state.pb unreadable,
// tensor sizes not matching the adapter) is reported with ot_warn naming the directory and the reason, and the
// next older one is tried. Unfinished writes (.tmp-* directories) are never candidates.
//
// lo must already be laid out for the run (ot_lora_init with the run's spec); its params are overwritten with the
// checkpoint's, so pointers into lo stay valid. A checkpoint whose adapter has another layout (targets, r, alpha,
// or another base model) is not damaged but incompatible: that is an error, since an older checkpoint of the same
// run would not fit either. opt must be initialised with n = lo->n_params; opt->m, opt->v and opt->step are
// restored, opt->cfg is left as the run configured it (the saved settings are in st->optim).
// st is overwritten; it must be zeroed or a state filled earlier (its config string is freed).
// loaded_dir (may be NULL) receives the directory loaded. Returns 0 = loaded, 1 = no usable checkpoint (nothing
// is changed), -1 = error.
int ot_ckpt_load_latest(const char *run_dir, ot_train_state *st, ot_lora *lo, const ot_model *m, ot_optimizer *opt,
                        char *loaded_dir, size_t loaded_dir_len, ot_err *err);

// Load one checkpoint directory (run/ckpt/step-NNNNNN) with the same checks; damage is an error here.
int ot_ckpt_load(const char *ckpt_dir, ot_train_state *st, ot_lora *lo, const ot_model *m, ot_optimizer *opt,
                 ot_err *err);

// Refuse to continue `saved` with a run started as `now` when the model, data or config fingerprints differ; the
// message says which differ (for the config: which top-level options of the resolved JSON). With force, the
// differences are printed as warnings and 0 is returned. A fingerprint missing on either side cannot be compared
// and is reported as a warning. A different world size is allowed.
int ot_ckpt_check_compatible(const ot_train_state *saved, const ot_train_state *now, int force, ot_err *err);

// ---- fingerprints (SHA-256, 64 lowercase hex digits) ------------------------------------------------------------
// The data file: ot_sha256_file (formats/sha256.h) over the whole file.
// A text, e.g. the canonical JSON of the options that determine the computation.
void ot_fingerprint_text(const char *text, char hex[OT_FINGERPRINT_LEN]);
// A base model directory, cheaply: config.json, model.safetensors.index.json (when present), and for every shard
// the index names (or model.safetensors) its name, size, safetensors header and 8 evenly spaced 64 KiB samples of
// its data. Reads well under 1 MB per shard; a changed tensor shape, dtype or name, or re-trained weights, change it.
int ot_fingerprint_model_dir(const char *dir, char hex[OT_FINGERPRINT_LEN], ot_err *err);

#endif
