// The gpt-oss layer graph on the CPU reference kernels: forward, backward into the LoRA factors, logits.
#ifndef OT_TRAINER_GPTOSS_CPU_H
#define OT_TRAINER_GPTOSS_CPU_H

#include "trainer/graph/batch.h"
#include "trainer/model/lora.h"
#include "trainer/model/model.h"

typedef struct ot_cpu_workspace ot_cpu_workspace; // activations kept for backward; grows with the batch

// What one layer's forward writes for T positions: the training workspace keeps a set per layer for the backward;
// a decoder (infer/decode_cpu.c) reuses one set. xa[4]: LoRA x·Aᵀ of q, k, v, o ([T, r] each; they may share).
typedef struct {
    float *x;             // [T, H] layer input (residual stream)
    float *xn1, *rstd1;   // [T, H] input_layernorm(x), [T]
    float *q, *k, *v;     // [T, nh·D], [T, nkv·D] x2; q and k after RoPE (k and v unused with a KV cache)
    float *xa[4];
    float *att, *lse;     // [T, nh·D] attention output before o_proj; [T, nh] (not with a KV cache)
    float *h;             // [T, H] after the attention residual
    float *xn2, *rstd2;   // [T, H] post_attention_layernorm(h), [T]
    float *router_logits; // [T, E]
    int32_t *topk_idx;    // [T, k]
    float *topk_w;        // [T, k]
    // The MoE works on the (token, slot) pairs grouped by expert (ot_moe_plan): plan row i is pair perm[i].
    int32_t *perm, *inv, *expert_off; // [T·k], [T·k], [E + 1]
    float *gu, *act, *y;  // [T·k, 2I], [T·k, I], [T·k, H] in plan order
    float *xa_gu, *xa_d;  // [T·k, r]
} ot_cpu_layer_acts;

// Where the keys and values of a sequence live when decoding: layer l's cache rows [positions, nkv·D]; the new
// positions p0 .. p0+T-1 are appended there and attention reads the cache up to each query's position.
typedef struct {
    float *k, *v;
    int p0;
} ot_cpu_kv_rows;

// Layer l's forward (weights w) for T positions: a->x is the input, x_next (may be a->x) receives the output.
// cache == NULL: attention over the batch (seg_start: each token's first token of its sample), keeping what the
// backward needs; cache != NULL: one sequence, its new keys and values go into the cache and attention reads it.
void ot_cpu_layer_fwd(const ot_model *m, const ot_lora *lo, int l, const ot_layer_weights *w, ot_cpu_layer_acts *a,
                      float *x_next, int T, const int32_t *pos, const int32_t *seg_start, const ot_cpu_kv_rows *cache);

ot_cpu_workspace *ot_cpu_workspace_new(void);
void ot_cpu_workspace_free(ot_cpu_workspace *ws);

// Runs the model on batch b (lo may be NULL: base model only) and returns Σ cross-entropy over the batch's targets.
// With backward != 0 the LoRA gradients are ACCUMULATED into lo->grads, for the loss Σ_i grad_scale · CE_i
// (grad_scale = 1 / global target count gives the mean over the global batch).
double ot_cpu_forward_backward(const ot_model *m, ot_lora *lo, const ot_batch *b, float grad_scale, int backward,
                               ot_cpu_workspace *ws);

// Full training (osstune-train --full): the same loss, and the gradient of every base weight ACCUMULATED into g, a
// gradient view of m (trainer/model/full_params.h: g's pointers point into a buffer laid out like m->owned). The experts
// must be dense (bf16 in the file); MXFP4 experts are refused before this is reached.
double ot_cpu_forward_backward_full(const ot_model *m, const ot_model *g, const ot_batch *b, float grad_scale,
                                    ot_cpu_workspace *ws);

// Logits [b->T, vocab] for every position (what osstune-logits writes).
void ot_cpu_logits(const ot_model *m, const ot_lora *lo, const ot_batch *b, float *logits, ot_cpu_workspace *ws);

#endif
