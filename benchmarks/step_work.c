// The work model of one LoRA training step (step_work.h). Sizes: T tokens, P = T·k (token, expert) pairs, H
// hidden, Q = heads·head_dim, KV = kv heads·head_dim, I intermediate, E experts, V vocabulary, n loss positions,
// r the LoRA rank; fa (attention block) and fm (MoE block) = 1, or 2 where the block's forward runs again before
// the layer's backward (recompute on: both; attention: the attention block's). The base is frozen, so
// a backward product computes the input gradient only (as many FLOPs as its forward); bf16 activations (2 bytes).
#include "benchmarks/step_work.h"

#include <string.h>

#include "formats/peft_adapter.h"

const char *const ot_work_names[OT_WORK_N] = {"attention", "moe_matmul", "moe_lora", "moe_routing", "dense_matmul",
                                              "lora", "lm_head", "norm_rope_other", "optimizer"};

// Keys each token attends to, summed over the batch: causal within its sample, at most `window` (0: no window).
static double attended_keys(const ot_batch *b, int window) {
    double keys = 0;
    for (int t = 0; t < b->T; t++) {
        int k = t - b->seg_start[t] + 1;
        if (window > 0 && k > window) k = window;
        keys += k;
    }
    return keys;
}

// One LoRA projection in → out over `rows` rows: its 2 forward products (xa, the expansion), f times, and 4
// backward ones; the bytes its forward reads and writes (x; y read and written) and its backward's (dy once, x
// for dA, dx read and written).
static void lora_projection(ot_op_work *w, double rows, double in, double out, double r, double f) {
    w->flop += (f + 2) * 2 * rows * r * (in + out);
    w->bytes += f * 2 * rows * (in + 2 * out) + 2 * rows * (out + 3 * in);
}

void ot_step_work(const ot_model_config *cfg, const ot_batch *b, const ot_step_shape *s, ot_op_work w[OT_WORK_N]) {
    memset(w, 0, sizeof(ot_op_work) * OT_WORK_N);
    const double T = b->T, n = b->n_targets, H = cfg->hidden_size, I = cfg->intermediate_size,
                 E = cfg->num_local_experts, V = cfg->vocab_size, D = cfg->head_dim, nh = cfg->num_attention_heads;
    const double Q = nh * D, KV = cfg->num_key_value_heads * D, P = T * cfg->num_experts_per_tok, r = s->r;
    const double fa = s->recompute ? 2 : 1, fm = s->recompute == 1 ? 2 : 1;
    const double keys_full = attended_keys(b, 0), keys_window = attended_keys(b, cfg->sliding_window);
    // MXFP4: 16 bytes of nibbles and one scale byte per 32 weights
    const double expert_weight_bytes = E * 3 * I * H * (cfg->experts_mxfp4 ? 17.0 / 32 : 2.0);
    const int lora_on[OT_LORA_N_TARGETS] = {
        !!(s->targets & 1u << OT_LORA_Q), !!(s->targets & 1u << OT_LORA_K), !!(s->targets & 1u << OT_LORA_V),
        !!(s->targets & 1u << OT_LORA_O), !!(s->targets & 1u << OT_LORA_GATE_UP),
        !!(s->targets & 1u << OT_LORA_DOWN)};
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        // flash attention: QKᵀ and PV forward (4·D FLOPs per head and key), backward 2.5× (scores again, dV, dP,
        // dQ, dK); reads q, k, v, writes o (and back: reads q, k, v, o, dO, writes dq, dk, dv)
        const double keys = cfg->layer_sliding[l] ? keys_window : keys_full;
        w[OT_WORK_ATTENTION].flop += (fa + 2.5) * 4 * nh * D * keys;
        w[OT_WORK_ATTENTION].bytes += fa * 2 * T * (2 * Q + 2 * KV) + 2 * T * (4 * Q + 4 * KV);

        // expert products gate_up (H → 2I) and down (I → H) on P rows: gate_up forward fm times, down forward once
        // (the forward recomputed for backward stops before it: backward needs no expert outputs), the input
        // gradients once; the weights read once per product, the activations each way
        w[OT_WORK_MOE_MATMUL].flop += (fm + 1) * 4 * P * H * I + 2 * 2 * P * I * H;
        w[OT_WORK_MOE_MATMUL].bytes += (fm + 1) * (expert_weight_bytes * 2 / 3 + 2 * P * (H + 2 * I)) +
                                       2 * (expert_weight_bytes / 3 + 2 * P * (I + H));
        if (lora_on[OT_LORA_GATE_UP]) lora_projection(&w[OT_WORK_MOE_LORA], P, H, 2 * I, r, fm);
        if (lora_on[OT_LORA_DOWN]) lora_projection(&w[OT_WORK_MOE_LORA], P, I, H, r, 1);

        // routing: SwiGLU forward twice (forward, then again before backward), its backward; combine forward and
        // backward; the routing weights' gradient (dact and act, dout and the bias); the un-permuting sum of the
        // input gradient
        w[OT_WORK_MOE_ROUTING].bytes += 2 * 6 * P * I + 10 * P * I + 2 * (P * H + T * H) + 2 * (T * H + P * H) +
                                        2 * (2 * P * I + T * H) + 2 * (P * H + 2 * T * H);

        // q, k, v, o (forward fa times) and the router (fm times), bf16 weights, input gradients once
        const double attn_w = H * (Q + 2 * KV) + Q * H, router_w = H * E;
        w[OT_WORK_DENSE_MATMUL].flop += (fa + 1) * 2 * T * attn_w + (fm + 1) * 2 * T * router_w;
        w[OT_WORK_DENSE_MATMUL].bytes += (fa + 1) * (2 * attn_w + 2 * T * (2 * H + 2 * Q + 2 * KV)) +
                                         (fm + 1) * (2 * router_w + 2 * T * (H + E));

        // attention LoRA: q, k, v share their input (one read of it for the group's xa, one for its dA)
        const double qkv_out[3] = {Q, KV, KV};
        int qkv_any = 0;
        for (int t = OT_LORA_Q; t <= OT_LORA_V; t++)
            if (lora_on[t]) {
                qkv_any = 1;
                w[OT_WORK_LORA].flop += (fa + 2) * 2 * T * r * (H + qkv_out[t]);
                w[OT_WORK_LORA].bytes += fa * 4 * T * qkv_out[t] + 2 * T * qkv_out[t];
            }
        if (qkv_any) w[OT_WORK_LORA].bytes += fa * 2 * T * H + 2 * T * H + 4 * T * H;
        if (lora_on[OT_LORA_O]) lora_projection(&w[OT_WORK_LORA], T, Q, H, r, fa);

        // two RMSNorms forward twice (again before backward: kept-activation mode redoes the shared normed
        // inputs, recomputation the whole layer) and backward; RoPE on q, k each way; two residual adds
        // forward; the backward's zeroed gradient buffers
        w[OT_WORK_NORM_ROPE].bytes += 2 * 2 * 4 * T * H + 2 * 8 * T * H + (fa + 1) * 4 * T * (Q + KV) +
                                      (fa + fm) * 6 * T * H + 2 * T * (2 * H + 2 * Q + 2 * KV);
    }
    // the output head at the n loss positions, frozen: the logits once, the input gradient from them (4·H FLOPs per
    // position and entry); its weights read once, h read and dh written
    w[OT_WORK_LM_HEAD].flop = 4 * n * H * V;
    w[OT_WORK_LM_HEAD].bytes = 2 * V * H + 4 * n * H;
    // embedding rows, final norm each way
    w[OT_WORK_NORM_ROPE].bytes += 4 * T * H + 4 * T * H + 8 * T * H;
    // AdamW on fp32 state: the gradient norm reads the gradients; the step reads parameters, gradients and both
    // moments and writes three of them back
    w[OT_WORK_OPTIMIZER].flop = 12.0 * (double)s->lora_params;
    w[OT_WORK_OPTIMIZER].bytes = 32.0 * (double)s->lora_params;
}
