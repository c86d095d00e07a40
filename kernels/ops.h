// osstune kernels: every op of the gpt-oss forward and backward, on plain pointers and sizes. Math only, no I/O.
// The CPU reference (kernels/cpu/) implements this header; kernels/cuda/ has the GPU twins (kernels/cuda/ops_cuda.h).
#ifndef OT_KERNELS_OPS_H
#define OT_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"

#ifdef __cplusplus
extern "C" {
#endif

// The weights of one expert projection, all experts: logical shape [E, rows (out), cols (in)].
enum { OT_EXPERT_MXFP4 = 1, OT_EXPERT_DENSE = 2 };
typedef struct {
    int kind;                                     // OT_EXPERT_MXFP4 or OT_EXPERT_DENSE
    int n_experts, rows, cols;                    // E, out, in
    const uint8_t *blocks;                        // MXFP4: [E, rows, cols/32, 16]
    const uint8_t *scales;                        // MXFP4: [E, rows, cols/32]
    const float *dense;                           // DENSE: [E, rows, cols]
} ot_expert_weight;
// Row r of expert e as floats (dequantized for MXFP4).
void ot_expert_weight_row(float *out, const ot_expert_weight *W, int e, int r);

// The MoE plan (CPU twin of ot_cuda_moe_plan_build): the pairs q = t·k + slot of idx [n_pairs] grouped by expert,
// expert 0's first, each group in increasing pair id. offsets [E + 1]: expert e owns plan rows offsets[e] ..
// offsets[e+1]-1; perm [n_pairs]: plan row -> pair; inv [n_pairs]: pair -> plan row (may be NULL).
void ot_moe_plan(int32_t *offsets, int32_t *perm, int32_t *inv, const int32_t *idx, int n_pairs, int E);

// ---- YaRN inverse frequencies (HF `_compute_yarn_parameters`, computed in float like HF) ---------------------
// (ot_rope_params: common/ot_common.h)
// inv_freq[D/2]; returns the attention factor that multiplies cos and sin.
float ot_rope_inv_freq(float *inv_freq, int head_dim, const ot_rope_params *p);

// ---- optimizer ------------------------------------------------------------------------------------------------
// torch.optim.AdamW (decoupled weight decay), one step on n floats; step counts from 1.
void ot_adamw_step(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1, float beta2,
                   float eps, float weight_decay, long step);
// Σ g² over n floats, in double (callers add the pieces, then sqrt, so the order is fixed).
double ot_sum_squares(const float *g, size_t n);
// The deterministic sum of n_slots buffers of n floats (slots[k·n + i]): out[i] = (float)(((+0.0 + (double)s_0[i])
// + (double)s_1[i]) + ...), left to right in double, rounded once: the rule of ot_comm_all_reduce_ordered
// (comm/comm.h), so a sum made here from the ranks' gathered gradients has its bits. n_slots = 0 gives zeros.
void ot_sum_slots_ordered(float *out, const float *slots, int n_slots, size_t n);
// torch.nn.utils.clip_grad_norm_: the factor to multiply gradients by, max_norm / (norm + 1e-6) capped at 1
// (1 when max_norm <= 0).
float ot_clip_coef(double total_norm, float max_norm);
// Linear warmup over `warmup` steps from 0 to lr_max, then cosine decay to lr_min at total_steps.
// step counts from 0 (the lr used by the first optimizer step is lr_at(0)).
float ot_lr_at(long step, long warmup, long total_steps, float lr_max, float lr_min);

// ---- embedding backward without atomics (full training on the GPU) --------------------------------------------
// order [T]: the positions of ids [T] sorted by (id, position); seg [T + 1]: where each run of one id starts in
// order, seg[n] = T. Returns n, the number of distinct ids. ot_cuda_embedding_bwd_sorted adds each run's rows in
// this order, which is the order of ot_embedding_bwd.
int ot_embedding_sort_ids(const int32_t *ids, int T, int32_t *order, int32_t *seg);

// ---- the templated op list: float names, then double names with the `_f64` suffix -----------------------------
#define OT_OPS_REAL float
#define OT_OPS_FN(name) name
#include "kernels/ops_list.h"
#undef OT_OPS_REAL
#undef OT_OPS_FN
#define OT_OPS_REAL double
#define OT_OPS_FN(name) name##_f64
#include "kernels/ops_list.h"
#undef OT_OPS_REAL
#undef OT_OPS_FN

#ifdef __cplusplus
}
#endif
#endif
