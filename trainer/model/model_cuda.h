// The gpt-oss base model in GPU memory, as the CUDA kernels (kernels/cuda/ops_cuda.h) want it: dense weights in
// bf16, MXFP4 expert blocks and scales copied byte for byte (never dequantized whole), sinks and the RoPE
// frequencies in fp32. Loaded tensor by tensor straight from the mapped checkpoint, so host memory holds at most
// one staging buffer, never a float32 copy of the model (the 20b's dense part alone would be 12 GB in fp32).
//
// Everything lives in one device allocation (`arena`); the pointers below point into it.
#ifndef OT_TRAINER_MODEL_CUDA_H
#define OT_TRAINER_MODEL_CUDA_H

#ifdef OT_HAVE_CUDA

#include "formats/checkpoint.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "trainer/model/shard_layout.h"

typedef struct {
    ot_bf16 *ln1_w, *ln2_w;                                 // [H]
    ot_bf16 *q_w, *k_w, *v_w, *o_w;                         // [out, in]
    ot_bf16 *q_b, *k_b, *v_b, *o_b;                         // [out], NULL when attention_bias is off
    float *sinks;                                           // [nh]
    ot_bf16 *router_w, *router_b;                           // [E, H], [E]
    ot_cuda_expert_weight gate_up;                          // rows 2I (interleaved gate/up), cols H; bias [E, 2I]
    ot_cuda_expert_weight down;                             // rows H, cols I; bias [E, H]
    int sliding;                                            // 1: sliding-window layer
} ot_cuda_layer_weights;

typedef struct {
    ot_model_config cfg;
    int device;
    ot_bf16 *embed;   // [V, H]
    ot_bf16 *lm_head; // [V, H] (== embed when tie_word_embeddings)
    ot_bf16 *norm_w;  // [H]
    ot_cuda_layer_weights *layers; // host array of device pointers
    float *inv_freq;  // [head_dim / 2], device
    float attn_factor;
    void *arena;      // the one device allocation
    size_t arena_bytes;
    size_t expert_bytes; // of arena_bytes, the expert projections (MXFP4 bytes or dense bf16)
    // Base weights sharded over the ranks (trainer/model/model_cuda_shard.h), NULL when this GPU holds the whole model.
    // Sharded, embed and lm_head are NULL and the layer views point into a gather buffer only while in use.
    struct ot_cuda_shard *shard;
} ot_cuda_model;

// Selects `device` (ot_cuda_init) and uploads the checkpoint in dir. 0, or -1 with a message naming the tensor.
int ot_cuda_model_load(ot_cuda_model *m, const char *dir, int device, ot_err *err);
void ot_cuda_model_free(ot_cuda_model *m);

// 0 when the CUDA kernels can run the model of config c (loaded from dir), else -1 with a message.
int ot_cuda_model_check_supported(const ot_model_config *c, const char *dir, ot_err *err);

// Where each tensor role's pointer sits in ot_cuda_layer_weights (trainer/model/shard_layout.h).
extern const ot_shard_fields ot_cuda_layer_fields;

// cudaMalloc of a model arena of `bytes`; on failure a message saying how much `what` ("the model", "this GPU's share
// of the model", loaded from dir) needs and how much is free. 0, or -1 with *arena NULL.
int ot_cuda_arena_alloc(void **arena, size_t bytes, const char *dir, const char *what, ot_err *err);

// Number of CUDA devices this process can use; 0 when there is no GPU or no driver (never an error).
int ot_cuda_device_count(void);

#endif // OT_HAVE_CUDA
#endif
