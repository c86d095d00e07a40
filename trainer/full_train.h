// osstune-train --full: train every weight of a bf16 gpt-oss model (no LoRA). The loop mirrors the LoRA loop of
// train_main.c (the same data loader, rows summed in global row order across ranks, metrics.jsonl, progress lines,
// validation, signals and exit codes); the parameters are the model's float32 master weights, the optimizer is
// AdamW with weight decay on the matrices only (trainer/full_params.c says why), and checkpoints hold a model
// directory usable as --model (trainer/full_checkpoint.h).
#ifndef OT_TRAINER_FULL_TRAIN_H
#define OT_TRAINER_FULL_TRAIN_H

#include <signal.h>

#include "comm/comm.h"
#include "trainer/full_params.h"
#include "trainer/optimizer.h"
#include "trainer/train_options.h"

// Runs the whole training; returns the process exit code (0 done, 75 stopped by a signal after a checkpoint, 1
// failed). stop_signal is the flag the signal handler sets (train_main.c owns the handler).
int ot_full_train_run(const ot_train_options *o, ot_comm *comm, volatile sig_atomic_t *stop_signal);

// One AdamW step over every weight: the global gradient norm (returned, before clipping), clipping, the learning
// rate of the schedule (*lr_used), then AdamW tensor by tensor with the weight decay only where fp says so.
double ot_full_optimizer_step(ot_optimizer *o, float *params, float *grads, const ot_full_params *fp, float *lr_used);

#endif
