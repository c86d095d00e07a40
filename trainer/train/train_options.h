// osstune-train's options: parsed from the command line, printed back as the run's resolved config (run/config.json).
#ifndef OT_TRAINER_TRAIN_OPTIONS_H
#define OT_TRAINER_TRAIN_OPTIONS_H

#include <stdint.h>

#include "trainer/model/lora.h"
#include "trainer/train/optimizer.h"

typedef struct {
    const char *model_dir;
    const char *data_path;
    const char *run_dir;
    const char *backend;        // "auto" (default: cuda when built with CUDA and a GPU is visible), "cpu", "cuda"
    int shard_base;             // FSDP sharding of the base weights: -1 auto (on when world > 1), 0 off, 1 on
    int grad_reduce;            // GPU, several ranks: 0 auto (= nccl), 1 nccl all-reduce on the device, 2 ordered host sum
    int recompute;              // GPU activation recomputation: -1 auto (what fits), else OT_RECOMPUTE_* (0 off,
                                // 1 on, 2 attention)
    uint64_t gpu_memory_limit;  // GPU: plan and allocate as on a card of this many bytes (0: the card's own)
    const char *resume;         // "auto" (default), "never", or a checkpoint directory
    const char *init_adapter;   // start from this PEFT adapter instead of PEFT's initialisation
    int force_resume;           // resume even if model/data/config fingerprints differ
    long steps;                 // optimizer steps in total (the schedule's length)
    uint64_t seed;
    int seq_len;                // tokens per packed row
    int rows_per_step;          // rows per global step (independent of the number of ranks)
    int loss_all;               // loss at every position, not only the answer (benchmarks)
    int full;                   // --full: train every weight of a bf16 model instead of a LoRA (trainer/model/full_params.h)
    int save_every;             // checkpoint every N steps (0: only at the end and on a signal)
    int keep_last;              // checkpoints kept
    int log_every;              // progress line every N steps
    const char *eval_data;      // validation pairs (HDF5 from osstune-prep), or NULL
    int eval_every;             // validation loss every N steps (and at the end); 0 = only at the end
    long eval_samples;          // evaluate the first N samples (0 = all)
    ot_lora_spec lora;
    unsigned lora_given;        // which LoRA options the command line set: bit 0 --lora-r, 1 --lora-alpha,
                                // 2 --lora-rslora, 3 --lora-targets, 4 --lora-expert-layers
    ot_optim_config optim;
} ot_train_options;

// Parses argv; prints a message and returns 2 (bad usage) or 1 (--help printed, exit 0) or 0.
int ot_train_options_parse(ot_train_options *o, int argc, char **argv);
// A run from --init-adapter trains that adapter as it is (adapter: its options, ot_lora_spec_of; n_layers: the
// model's): a --lora-* option given on the command line that says otherwise is refused (-1, err naming both), and
// o->lora becomes the adapter's, so config.json records what is really used.
int ot_train_options_adopt_adapter(ot_train_options *o, const ot_lora_spec *adapter, int n_layers, ot_err *err);
// The resolved options as a JSON object (caller frees). Used for run/config.json and its fingerprint.
char *ot_train_options_to_json(const ot_train_options *o);
// The options that determine the computation (no paths, no checkpoint/logging cadence), as canonical JSON: a run
// resumed with a different value of any of these is refused unless forced.
char *ot_train_options_fingerprint_json(const ot_train_options *o);

#endif
