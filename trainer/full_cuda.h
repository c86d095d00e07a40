// osstune-train --full on the GPU: every base weight trained, the state on the device.
//
//   fp32 master weights, gradients and AdamW moments: four flat device buffers laid out like the CPU model's
//     float32 arena (trainer/full_params.h), so a checkpoint is the CPU full mode's, byte for byte in format, and
//     CPU and CUDA runs resume each other's checkpoints;
//   bf16 working weights: the ot_cuda_model the kernels read (experts dense bf16, sinks fp32), rewritten from the
//     masters by one kernel (ot_cuda_weight_refresh) after every optimizer step;
//   gradients: the backward of trainer/gptoss_cuda.c with the base-weight gradient pointers filled in
//     (ot_cuda_set_model_grads), plus the embedding table's gradient here, without atomics (the ids are sorted on
//     the host, ot_cuda_embedding_bwd_sorted), so a step gives the same bits on every run.
//
// Several ranks: each rank runs its rows as one batch; the gradients meet in host memory and are summed in rank
// order (ot_comm_all_reduce_ordered), as the LoRA CUDA path does — fine for the small models --full is for.
#ifndef OT_TRAINER_FULL_CUDA_H
#define OT_TRAINER_FULL_CUDA_H

#ifdef OT_HAVE_CUDA

#include "comm/comm.h"
#include "trainer/full_params.h"
#include "trainer/gptoss_cuda.h"
#include "trainer/optimizer.h"

typedef struct ot_full_cuda ot_full_cuda;

// Uploads model_dir onto GPU `device` (the working copies), then m's float32 arena as the masters and opt's
// moments (zeros for a fresh run, the checkpoint's when resuming), and writes the working copies from the masters.
// recompute: 1 on, 0 off, -1 on only when keeping every layer's activations for max_tokens would not fit.
// NULL with a message on failure.
ot_full_cuda *ot_full_cuda_new(const ot_model *m, const ot_full_params *fp, const ot_optimizer *opt,
                               const char *model_dir, int device, int recompute, int max_tokens, ot_err *err);
void ot_full_cuda_free(ot_full_cuda *f);

// One line for the log: device, bytes of weights and training state, recomputation.
void ot_full_cuda_describe(const ot_full_cuda *f, char *buf, size_t len);

// Zeroes the device gradients, then forward and backward of b (this rank's rows packed as one batch) with the
// loss scaled by grad_scale; *loss_sum = Σ CE over b's targets. Waits for the device (the loss comes back).
int ot_full_cuda_grads(ot_full_cuda *f, const ot_batch *b, float grad_scale, double *loss_sum, ot_err *err);

// The ranks' device gradients summed in rank order through host memory, back on every rank's device.
int ot_full_cuda_sum_ranks(ot_full_cuda *f, ot_comm *comm, ot_err *err);

// ot_full_optimizer_step on the device: global norm (returned, before clipping; the one host wait), clipping, the
// learning rate of the schedule (*lr_used), AdamW tensor by tensor with weight decay where fp says so, then the
// bf16 working copies. o->step advances; o->m / o->v are not touched (ot_full_cuda_download brings them).
double ot_full_cuda_optimizer_step(ot_full_cuda *f, ot_optimizer *o, const ot_full_params *fp, float *lr_used);

// Device masters -> m's float32 arena, device moments -> opt->m / opt->v (for checkpoints).
void ot_full_cuda_download(ot_full_cuda *f, ot_model *m, ot_optimizer *opt);

// The context that runs the model (validation: ot_cuda_eval_loss).
ot_cuda_ctx *ot_full_cuda_ctx(ot_full_cuda *f);

#endif // OT_HAVE_CUDA
#endif
