// The gpt-oss base model as the CPU backend holds it: dense weights converted once to float32, expert
// projections kept as shipped (MXFP4 bytes straight from the mapped shards, or dense when the checkpoint holds
// transformers' dequantized bf16 experts).
#ifndef OT_TRAINER_MODEL_H
#define OT_TRAINER_MODEL_H

#include "formats/checkpoint.h"
#include "kernels/ops.h"
#include "trainer/model/shard_layout.h"

typedef struct {
    float *ln1_w, *ln2_w;                 // [H] input_layernorm, post_attention_layernorm
    float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b; // [out, in], [out]
    float *sinks;                         // [nh]
    float *router_w, *router_b;           // [E, H], [E]
    ot_expert_weight gate_up;             // rows 2I (interleaved gate/up), cols H
    ot_expert_weight down;                // rows H, cols I
    float *gate_up_b, *down_b;            // [E, 2I], [E, H]
    int sliding;                          // 1: sliding-window layer
} ot_layer_weights;

typedef struct {
    ot_model_config cfg;
    ot_checkpoint ck;       // owns the mappings the MXFP4 expert views point into
    float *embed;           // [V, H]
    float *lm_head;         // [V, H]
    float *norm_w;          // [H]
    ot_layer_weights *layers;
    float *inv_freq;        // [head_dim / 2]
    float attn_factor;
    float *owned;           // one allocation holding every float32 weight above
    size_t owned_floats;
    // Non-NULL: the base weights are sharded over the ranks (trainer/model/model_shard.h); layers, embed and lm_head are
    // then NULL and the graph reaches them through ot_model_layer / ot_model_embed / ot_model_lmhead_xent.
    struct ot_model_shard *shard;
} ot_model;

int ot_model_load(ot_model *m, const char *dir, ot_err *err);

// Where each tensor role's pointer sits in ot_layer_weights (trainer/model/shard_layout.h).
extern const ot_shard_fields ot_layer_fields;
void ot_model_free(ot_model *m);

#endif
