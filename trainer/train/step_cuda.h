// What the CUDA step engines (step_cuda_lora.c, step_cuda_full.c) share, for trainable values that live on the
// GPU: AdamW (the device twin of ot_optimizer_step_spans; the training benchmark uses it too), the sum of the
// gradients over ranks, and the forward pass the evaluator runs.
#ifndef OT_TRAIN_STEP_CUDA_H
#define OT_TRAIN_STEP_CUDA_H

#ifdef OT_HAVE_CUDA

#include <cuda_runtime_api.h>

#include "comm/comm.h"
#include "trainer/graph/batch.h"
#include "trainer/train/optimizer.h"

typedef struct ot_cuda_optimizer ot_cuda_optimizer;

// AdamW moments for n values on the current device (zeros), on `stream`; spans as ot_optimizer_step_spans
// (copied; NULL: one span of everything, with weight decay).
ot_cuda_optimizer *ot_cuda_optimizer_new(size_t n, const ot_param_span *spans, int n_spans, cudaStream_t stream);
void ot_cuda_optimizer_free(ot_cuda_optimizer *a);
// ot_optimizer_step_spans on device buffers of n floats: the global norm (returned, before clipping; read back,
// the one host wait), clipping, the learning rate of o's schedule at o->step (*lr_used), AdamW span by span;
// o->step advances. o->m / o->v are not touched (the moments live on the device).
double ot_cuda_optimizer_step(ot_cuda_optimizer *a, ot_optimizer *o, float *params, float *grads, float *lr_used);
void ot_cuda_optimizer_get(ot_cuda_optimizer *a, ot_optimizer *o);       // device moments -> o->m, o->v
void ot_cuda_optimizer_set(ot_cuda_optimizer *a, const ot_optimizer *o); // o->m, o->v -> device

// The ranks' device gradients (n floats, in place on every rank) summed, after `stream`'s work:
//   ordered = 0: NCCL's all-reduce (nccl must be given): fast; the order of additions is NCCL's;
//   ordered = 1: the rule of ot_comm_all_reduce_ordered (rank order, in double, rounded once), whose bits do not
//     depend on the world size: on the device from NCCL all-gathers when nccl is given (no host round trip),
//     else through host memory and the host communicator (a GPU whose memory the host sees, as in emulation).
int ot_cuda_sum_ranks(ot_comm *host, ot_comm *nccl, int ordered, cudaStream_t stream, float *grads, size_t n,
                      ot_err *err);

// This rank's GPU for a step engine (the node-local rank modulo the visible devices) into *device, with the run's
// --gpu-memory-limit applied (refused when the GPU already uses that much); NCCL over the ranks' GPUs into *nccl
// for a multi-rank run, except where device memory is host-visible (the emulated runtime: the MPI communicator
// then serves, *nccl stays NULL).
struct ot_step_engine;
int ot_step_cuda_device(struct ot_step_engine *e, int *device, ot_comm **nccl, ot_err *err);
// The recomputation mode (OT_RECOMPUTE_*) in words, "on", "off" or "of the attention blocks", and how it was chosen
// when --recompute auto chose it: "on (auto, for --gpu-memory-limit 8.00 GiB)" (into buf, returned), for the
// engines' start lines.
const char *ot_step_cuda_recompute_words(const struct ot_step_engine *e, int mode, char *buf, size_t n);
// The step engines' device_in_use (step.h).
size_t ot_step_cuda_device_in_use(const struct ot_step_engine *e);

// ot_eval_forward_fn for a context (ctx: an ot_cuda_ctx): the loss of b, no backward; an empty batch is a pass
// without tokens (the gathers of sharded base weights are collective).
int ot_cuda_eval_forward(void *ctx, const ot_batch *b, double *loss_sum, ot_err *err);

#endif // OT_HAVE_CUDA
#endif
