// The CPU base model sharded over the ranks (FSDP-style, docs/distributed.md "Sharding the base model"): each rank
// keeps only its pieces of every unit of the shard plan (trainer/model/shard_layout.h), read from the safetensors files,
// plus two rotating layer buffers. A layer is all-gathered (MPI) into one buffer before it runs, the next layer's
// gather is started before this one computes (prefetch), and the embedding table and output head are gathered a
// chunk at a time through the same buffers.
//
// The graph (trainer/graph/gptoss_cpu.c) reaches the weights through the three accessors below, which work on an
// unsharded model too. Every call on a sharded model is collective: every rank must make the same calls in the same
// order — a rank with no row to process runs ot_model_idle_pass instead, so its peers are not left waiting.
#ifndef OT_TRAINER_MODEL_SHARD_H
#define OT_TRAINER_MODEL_SHARD_H

#include "comm/comm.h"
#include "trainer/model/model.h"
#include "trainer/model/shard_layout.h"

typedef struct ot_model_shard ot_model_shard;

// Loads the model in dir sharded over comm's ranks (an MPI communicator; every rank calls it). Reads only this
// rank's byte ranges of the files. vocab_chunk_bytes as in ot_shard_layout_build (0: default).
int ot_model_load_sharded(ot_model *m, const char *dir, ot_comm *comm, size_t vocab_chunk_bytes, ot_err *err);
void ot_model_shard_free(ot_model_shard *s); // NULL allowed; ot_model_free calls it

// Layer l's weights, gathered if they are not in a buffer; `next` (a layer, or -1) is the layer the caller will
// ask for next: its gather starts now, to run while layer l computes. The view stays valid until the call after
// next (two buffers).
const ot_layer_weights *ot_model_layer(const ot_model *m, int l, int next);
// out[t] = embedding row ids[t] (T may be 0 on a rank with nothing to do; it still takes part).
void ot_model_embed(const ot_model *m, const int32_t *ids, int T, float *out);
// ot_lmhead_xent(dh, NULL, h, lm_head, ...) with the same bits. want_grad (dh != NULL) must agree on all ranks.
double ot_model_lmhead_xent(const ot_model *m, float *dh, const float *h, const int32_t *pos, const int32_t *label,
                            int n, float grad_scale);
// The collectives of one forward (and backward) pass without computing anything, for a rank without a row.
void ot_model_idle_pass(const ot_model *m, int backward);

// Base-weight bytes this rank holds (sharded: its pieces + the gather buffers + the replicated norm; unsharded:
// the float32 weights + the MXFP4 bytes). *one_rank gets what an unsharded rank holds, *layer_buffer one gather
// buffer (either may be NULL).
size_t ot_model_base_bytes(const ot_model *m, size_t *one_rank, size_t *layer_buffer);

typedef struct {
    uint64_t gathers;        // all-gathers started (layers and vocabulary chunks)
    uint64_t gathered_bytes; // bytes received into the gather buffers
    uint64_t file_bytes;     // bytes this rank read from the safetensors files at load
} ot_model_shard_stats;
ot_model_shard_stats ot_model_shard_get_stats(const ot_model *m);

#endif
