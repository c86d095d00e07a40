// A step engine: what one backend does for one run mode in a training step, behind one interface, so that the
// training loop (train_main.c) is written once for {CPU, CUDA} × {LoRA, --full}:
//
//   step_cpu.c        cpu-lora, cpu-full    the float32 reference: every row alone into its own gradient slot,
//                                           the slots summed in global row order (N ranks give 1 rank's bits)
//   step_cuda_lora.c  cuda-lora             bf16 activations on the GPU, LoRA and AdamW state on the device
//   step_cuda_full.c  cuda-full             fp32 masters, gradients and moments on the device
//
// The engine owns the trainable state (the adapter or the model's weights) and its AdamW state. Its host copies
// (`lo`, `m`, `fp`, `opt`) are what checkpoints hold: ot_step_save brings the device state back first, and a
// resume fills them before ot_step_start takes them to the device.
#ifndef OT_TRAIN_STEP_H
#define OT_TRAIN_STEP_H

#include <stdio.h>

#include "comm/comm.h"
#include "formats/pairs_h5.h"
#include "formats/run_dir.h"
#include "trainer/graph/batch.h"
#include "trainer/model/backend.h"
#include "trainer/model/full_params.h"
#include "trainer/model/lora.h"
#include "trainer/model/model.h"
#include "trainer/train/optimizer.h"
#include "trainer/train/train_options.h"

typedef struct ot_step_engine ot_step_engine;

typedef struct {
    // Everything that needs the batch sizes: the activation workspace, the device copies of the trainable state
    // (as the host copies hold it now: fresh or resumed). Prints the backend's line on rank 0.
    int (*start)(ot_step_engine *e, int max_tokens_per_rank, ot_err *err);
    // Forward and backward of this rank's rows of the step, gradients of Σ grad_scale · CE into the engine's
    // buffers; the loss sums as (hi, lo) float pairs (ot_loss_pair) into loss_pairs, *n_pairs of them, in global
    // order (room for batch->n_rows + 1 pairs).
    int (*grads)(ot_step_engine *e, const ot_batch *b, float grad_scale, float *loss_pairs, int *n_pairs,
                 ot_err *err);
    // The ranks' gradients summed, the same on every rank.
    int (*sum_ranks)(ot_step_engine *e, const ot_batch *b, ot_err *err);
    // Clipping, the learning rate of the schedule (*lr_used), AdamW; returns the global gradient norm.
    double (*optimizer_step)(ot_step_engine *e, float *lr_used);
    // The validation loss on pairs (ot_eval_loss with this backend's forward pass). Every rank calls.
    int (*eval_loss)(ot_step_engine *e, ot_pairs_h5 *pairs, int64_t max_samples, double *mean_loss,
                     int64_t *n_targets, ot_err *err);
    // Device state -> the host copies (parameters and AdamW moments), for a checkpoint. NULL: nothing to do.
    void (*to_host)(ot_step_engine *e);
    // Base-weight bytes on this rank (and on one rank unsharded, and the gather buffers), for the metrics.
    size_t (*base_bytes)(const ot_step_engine *e, size_t *one_rank, size_t *layer_buffer);
    // Device memory in use on this rank's GPU now (bytes, as nvidia-smi counts), for the progress lines; NULL on
    // the CPU.
    size_t (*device_in_use)(const ot_step_engine *e);
    // Closing lines on rank 0 (gather statistics); may be NULL.
    void (*finish)(ot_step_engine *e);
    // Frees what the engine holds (ot_step_free then frees e->impl itself).
    void (*destroy)(ot_step_engine *e);
} ot_step_ops;

struct ot_step_engine {
    const ot_step_ops *ops;
    const char *name;          // "cpu-lora", "cuda-lora", "cpu-full", "cuda-full"
    ot_backend backend;
    ot_run_mode mode;
    const ot_train_options *o;
    ot_comm *comm;
    int sharded;               // the base weights are split over the ranks
    ot_model m;                // the CPU model (--full: its float32 arena holds the masters); CUDA LoRA: cfg only
    ot_lora lo;                // LoRA: the adapter (host parameters; on the CPU also its gradients)
    ot_full_params fp;         // --full: the trainable tensors of m's arena
    ot_optimizer opt;          // AdamW over the trainable values (the moments live on the device on CUDA)
    void *impl;                // the backend's own state
};

// Resolves the backend (--backend), checks the options of the mode, loads the base model and the trainable state
// (PEFT initialisation, --init-adapter, or the model's own weights) and sets up AdamW. Every rank calls.
int ot_step_open(ot_step_engine **out, const ot_train_options *o, ot_comm *comm, ot_err *err);
void ot_step_free(ot_step_engine *e);

// Resume: the newest loadable checkpoint of the run directory (from = NULL) or the checkpoint directory `from`
// into the host copies and *saved. model_fingerprint: the run's base model (for messages). 0 loaded, 1 nothing to
// resume, -1 error. loaded_dir receives its directory.
int ot_step_load(ot_step_engine *e, const char *from, const char *model_fingerprint, ot_train_state *saved,
                 char *loaded_dir, size_t n, ot_err *err);
// Rank 0: the checkpoint of step st (device state brought back first).
int ot_step_save(ot_step_engine *e, const ot_train_state *st, ot_err *err);

// One line for the start of the run: what is trained ("LoRA r=16 on 1234 parameters" / "N trainable weights").
void ot_step_describe(const ot_step_engine *e, char *buf, size_t len);
// Where the result of step `step` is, for the closing line.
void ot_step_result_path(const ot_step_engine *e, int64_t step, char *buf, size_t len);

// The constructors of the engines (ot_step_open picks one): each loads the base model as its backend holds it
// (e->m keeps at least the config) and sets e->ops; ot_step_open then sets up the mode's trainable state and AdamW.
// Without CUDA in the build the CUDA ones fail with a message.
int ot_step_open_cpu(ot_step_engine *e, ot_err *err);
// For the engines' open functions: e gets its name, its ops and a zeroed state of `bytes` (returned; e->impl).
void *ot_step_attach(ot_step_engine *e, const char *name, const ot_step_ops *ops, size_t bytes);
int ot_step_open_cuda_lora(ot_step_engine *e, ot_err *err);
int ot_step_open_cuda_full(ot_step_engine *e, ot_err *err);

// Shared by the engines: the CPU model of the run into e->m (sharded over the ranks when e->sharded).
int ot_step_load_cpu_model(ot_step_engine *e, ot_err *err);

#endif
