// The gpt-oss base model sharded over the GPUs of a job (FSDP-style, docs/distributed.md "Sharding the base
// model"), the CUDA twin of trainer/model/model_shard.h. Each GPU's arena holds only its pieces of every unit of the bf16
// shard plan (trainer/model/shard_layout.h), read from the safetensors files (trainer/model/shard_read.h), plus one gather
// region: an attention buffer and an expert buffer side by side, which the vocabulary tables use as two rotating
// chunk buffers.
//
// The schedule. A pass (one ot_cuda_forward_backward) uses the units in a fixed order that depends only on the number
// of layers, on whether it runs a backward, and on recomputation: the embedding chunks, then per layer its attention
// and expert units, the head chunks (twice with a backward), then the layers in reverse (re-using the units a
// recomputation needs again). ot_cuda_shard_begin_pass lays that order out; every use must then follow it (a
// mismatch is a programming error and ends the process with a message rather than leaving peers waiting). When a
// unit is used, the gather of the next unit in the order is started if its buffer is free, so it runs on the
// communicator's stream while this unit's kernels run on the compute stream:
//   - a gather into a buffer waits (cudaStreamWaitEvent on the communicator's stream) for an event recorded on the
//     compute stream after every kernel queued so far, i.e. after the last reader of that buffer;
//   - the compute stream waits for the event recorded after the gather of the unit it is about to read.
// The host blocks only to wait for a gather issued two units earlier (before re-using its request) and, at the end
// of a pass, for the gathers still in flight: those waits run under the communicator's watchdog, so a dead peer ends
// the job instead of leaving the stream waiting for ever.
//
// Every call on a sharded model is collective: every rank makes the same passes. A rank with nothing to compute
// (an empty batch) still runs its pass's gathers (ot_cuda_shard_idle_pass).
#ifndef OT_TRAINER_MODEL_CUDA_SHARD_H
#define OT_TRAINER_MODEL_CUDA_SHARD_H

#ifdef OT_HAVE_CUDA

#include "comm/comm.h"
#include "trainer/model/model_cuda.h"
#include "trainer/model/shard_layout.h"

typedef struct ot_cuda_shard ot_cuda_shard;

// Selects `device` and loads the model in dir sharded over comm's ranks (every rank calls it); reads only this
// rank's byte ranges of the files. comm is the NCCL communicator of the job (gathers run on its stream). An MPI
// communicator is accepted only when the arena is host-visible memory — the host emulation of the CUDA runtime in
// tests/gpu/train_emu, where "device" memory is host memory — and then gathers are MPI collectives waited for on
// the host. 0, or -1 with a message.
int ot_cuda_model_load_sharded(ot_cuda_model *m, const char *dir, int device, ot_comm *comm, ot_err *err);
void ot_cuda_shard_free(ot_cuda_shard *s); // NULL allowed; ot_cuda_model_free calls it
// 1 when cudaMalloc memory of `device` is host-visible, so an MPI communicator can gather it: the emulated CUDA
// runtime of tests/gpu/train_emu. 0 on a real GPU (then sharding needs NCCL).
int ot_cuda_memory_host_visible(int device);

// The unit order of the next pass: `backward` (the head's gradient sweep and the layers in reverse); before each
// layer's backward but the last's, its attention block runs forward again when `redo_attention`, and its MoE block
// too when `redo_experts` (the graph's recomputation modes). All must agree on all ranks.
void ot_cuda_shard_begin_pass(const ot_cuda_model *m, int backward, int redo_attention, int redo_experts);
// Layer l's attention (OT_SHARD_ATTENTION) or MoE (OT_SHARD_EXPERTS) weights, for the kernels queued next on
// `stream`: m->layers[l]'s pointers of that part point into the gathered unit and the stream waits for its gather.
void ot_cuda_shard_use(const ot_cuda_model *m, cudaStream_t stream, int l, ot_shard_part part);
// out[t] = embedding row ids[t], as ot_cuda_embedding_fwd, from the table gathered a chunk at a time.
void ot_cuda_shard_embed(const ot_cuda_model *m, cudaStream_t stream, ot_bf16 *out, const int32_t *ids, int T);
// ot_cuda_lmhead_xent(stream, blas, loss_sum, dh, NULL, h, head, ...) from the head gathered a chunk at a time: the
// chunks once for the loss and, when dh is given (a backward pass), once more for the gradient.
void ot_cuda_shard_lmhead_xent(const ot_cuda_model *m, cudaStream_t stream, ot_cuda_blas *blas, double *loss_sum,
                               ot_bf16 *dh, const ot_bf16 *h, const int32_t *pos, const int32_t *label, int n, int T,
                               float grad_scale);
// The gathers of the rest of the pass without computing (a rank with an empty batch).
void ot_cuda_shard_idle_pass(const ot_cuda_model *m, cudaStream_t stream);
// End of a pass: checks the whole order was used and waits for the gathers in flight (see above).
void ot_cuda_shard_end_pass(const ot_cuda_model *m);

// Base-weight bytes on this GPU (the arena: pieces, gather buffers, replicated norm and RoPE table); *one_rank what
// one unsharded GPU holds, *layer_buffer the gather region (either may be NULL). Unsharded models too.
size_t ot_cuda_model_base_bytes(const ot_cuda_model *m, size_t *one_rank, size_t *layer_buffer);

typedef struct {
    uint64_t gathers;        // all-gathers started (layer units and vocabulary chunks)
    uint64_t prefetched;     // of those, started ahead of their use
    uint64_t gathered_bytes; // bytes received into the gather buffers
    uint64_t file_bytes;     // bytes this rank read from the safetensors files at load
} ot_cuda_shard_stats;
ot_cuda_shard_stats ot_cuda_shard_get_stats(const ot_cuda_model *m);

#endif // OT_HAVE_CUDA
#endif
