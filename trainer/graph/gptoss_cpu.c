// One gpt-oss decoder layer after another, exactly the order of spec §2, composed from kernels/ops.h.
// Each layer keeps what its backward needs (no recomputation on the CPU: the reference favours clarity).
#include "trainer/graph/gptoss_cpu.h"
#include "trainer/model/model_shard.h"

#include <stdlib.h>
#include <string.h>

struct ot_cpu_workspace {
    int T_cap, r_cap;
    int n_layers;
    ot_cpu_layer_acts *layers;
    float *x_final, *hf, *rstd_f; // final residual, final norm output, its rstd
    float *arena;
    size_t arena_floats;
    int32_t *iarena;
    size_t iarena_n;
};

ot_cpu_workspace *ot_cpu_workspace_new(void) { return ot_calloc(1, sizeof(ot_cpu_workspace)); }

void ot_cpu_workspace_free(ot_cpu_workspace *ws) {
    if (!ws) return;
    free(ws->arena);
    free(ws->iarena);
    free(ws->layers);
    free(ws);
}

// (Re)carve the activation arena for T tokens and LoRA rank r.
static void workspace_reserve(ot_cpu_workspace *ws, const ot_model_config *c, int T, int r) {
    if (T <= ws->T_cap && r <= ws->r_cap && ws->n_layers == c->num_hidden_layers) return;
    if (T < ws->T_cap) T = ws->T_cap;
    if (r < ws->r_cap) r = ws->r_cap;
    if (r < 1) r = 1;
    const size_t H = c->hidden_size, Q = (size_t)c->num_attention_heads * c->head_dim,
                 KV = (size_t)c->num_key_value_heads * c->head_dim, E = c->num_local_experts,
                 K = c->num_experts_per_tok, I = c->intermediate_size, nh = c->num_attention_heads;
    const size_t L = c->num_hidden_layers, Tz = (size_t)T, R = (size_t)r;
    size_t per_layer = Tz * (H + H + 1 + Q + KV + KV + 4 * R + Q + nh + H + H + 1 + E + K) +
                       Tz * K * (2 * I + I + H + 2 * R);
    size_t iper_layer = 3 * Tz * K + E + 1;
    free(ws->arena);
    free(ws->iarena);
    free(ws->layers);
    ws->arena_floats = L * per_layer + Tz * (2 * H + 1);
    ws->arena = ot_malloc(ws->arena_floats * sizeof(float));
    ws->iarena_n = L * iper_layer;
    ws->iarena = ot_malloc(ws->iarena_n * sizeof(int32_t));
    ws->layers = ot_calloc(L, sizeof(ot_cpu_layer_acts));
    float *p = ws->arena;
    int32_t *ip = ws->iarena;
#define TAKE(ptr, n) (ptr = p, p += (n))
#define ITAKE(ptr, n) (ptr = ip, ip += (n))
    for (size_t l = 0; l < L; l++) {
        ot_cpu_layer_acts *a = &ws->layers[l];
        TAKE(a->x, Tz * H);
        TAKE(a->xn1, Tz * H);
        TAKE(a->rstd1, Tz);
        TAKE(a->q, Tz * Q);
        TAKE(a->k, Tz * KV);
        TAKE(a->v, Tz * KV);
        for (int i = 0; i < 4; i++) TAKE(a->xa[i], Tz * R);
        TAKE(a->att, Tz * Q);
        TAKE(a->lse, Tz * nh);
        TAKE(a->h, Tz * H);
        TAKE(a->xn2, Tz * H);
        TAKE(a->rstd2, Tz);
        TAKE(a->router_logits, Tz * E);
        TAKE(a->topk_w, Tz * K);
        TAKE(a->gu, Tz * K * 2 * I);
        TAKE(a->act, Tz * K * I);
        TAKE(a->y, Tz * K * H);
        TAKE(a->xa_gu, Tz * K * R);
        TAKE(a->xa_d, Tz * K * R);
        ITAKE(a->topk_idx, Tz * K);
        ITAKE(a->perm, Tz * K);
        ITAKE(a->inv, Tz * K);
        ITAKE(a->expert_off, E + 1);
    }
    TAKE(ws->x_final, Tz * H);
    TAKE(ws->hf, Tz * H);
    TAKE(ws->rstd_f, Tz);
#undef TAKE
#undef ITAKE
    ws->T_cap = T;
    ws->r_cap = r;
    ws->n_layers = (int)L;
}

// y = x·Wᵀ + b (+ LoRA) for one attention projection.
static void projection_fwd(float *y, float *xa, const float *x, const float *W, const float *b, const ot_lora *lo,
                           const ot_lora_slot *s, int T, int in, int out) {
    ot_matmul_fwd(y, x, W, b, T, in, out);
    if (s) ot_lora_fwd(y, xa, x, ot_lora_A(lo, s, 0), ot_lora_B(lo, s, 0), T, in, lo->r, out, lo->scale);
}

// dW, db: the base weight's gradient in full training (NULL when the base is frozen).
static void projection_bwd(float *dx, float *dW, float *db, const float *dy, const float *x, const float *xa,
                           const float *W, ot_lora *lo, const ot_lora_slot *s, int T, int in, int out) {
    ot_matmul_bwd(dx, dW, db, dy, x, W, T, in, out);
    if (s)
        ot_lora_bwd(dx, ot_lora_dA(lo, s, 0), ot_lora_dB(lo, s, 0), dy, x, xa, ot_lora_A(lo, s, 0),
                    ot_lora_B(lo, s, 0), T, in, lo->r, out, lo->scale);
}

// The MoE block of layer l on a->xn2: the (token, slot) pairs grouped by expert, each expert's rows through
// gate_up, SwiGLU and down (+ LoRA), then combined per token in slot order into out [T, H].
static void moe_fwd(float *out, ot_cpu_layer_acts *a, const ot_layer_weights *w, const ot_lora *lo, int l,
                    const ot_model_config *c, int T) {
    const int H = c->hidden_size, I = c->intermediate_size, E = c->num_local_experts, K = c->num_experts_per_tok;
    const int r = lo ? lo->r : 0;
    const ot_lora_slot *s_gu = ot_lora_slot_of(lo, l, OT_LORA_GATE_UP), *s_d = ot_lora_slot_of(lo, l, OT_LORA_DOWN);
    ot_moe_plan(a->expert_off, a->perm, a->inv, a->topk_idx, T * K, E);
    float *X = ot_malloc(sizeof(float) * (size_t)T * K * H);
    for (int e = 0; e < E; e++) {
        int r0 = a->expert_off[e], n = a->expert_off[e + 1] - r0;
        if (n == 0) continue;
        for (int i = 0; i < n; i++) memcpy(X + (size_t)i * H, a->xn2 + (size_t)(a->perm[r0 + i] / K) * H, sizeof(float) * H);
        float *gu = a->gu + (size_t)r0 * 2 * I, *act = a->act + (size_t)r0 * I, *y = a->y + (size_t)r0 * H;
        ot_expert_matmul_fwd(gu, X, &w->gate_up, e, w->gate_up_b + (size_t)e * 2 * I, n);
        if (s_gu)
            ot_lora_fwd(gu, a->xa_gu + (size_t)r0 * r, X, ot_lora_A(lo, s_gu, e), ot_lora_B(lo, s_gu, e), n, H, r,
                        2 * I, lo->scale);
        ot_swiglu_fwd(act, gu, n, I, c->swiglu_alpha, c->swiglu_limit);
        ot_expert_matmul_fwd(y, act, &w->down, e, w->down_b + (size_t)e * H, n);
        if (s_d)
            ot_lora_fwd(y, a->xa_d + (size_t)r0 * r, act, ot_lora_A(lo, s_d, e), ot_lora_B(lo, s_d, e), n, I, r, H,
                        lo->scale);
    }
    free(X);
    ot_moe_combine_fwd(out, a->y, a->topk_w, a->inv, T, K, H);
}

// gw (full training, else NULL): the layer's weight gradients; its dense expert views point into the gradient buffer.
static void moe_bwd(float *dxn2, const float *dout, ot_cpu_layer_acts *a, const ot_layer_weights *w, ot_lora *lo,
                    int l, const ot_model_config *c, int T, const ot_layer_weights *gw) {
    const int H = c->hidden_size, I = c->intermediate_size, E = c->num_local_experts, K = c->num_experts_per_tok;
    const int r = lo ? lo->r : 0;
    const ot_lora_slot *s_gu = ot_lora_slot_of(lo, l, OT_LORA_GATE_UP), *s_d = ot_lora_slot_of(lo, l, OT_LORA_DOWN);
    const int rows = T * K;
    float *dw = ot_calloc((size_t)rows, sizeof(float)); // d loss / d routing weight, [T, k]
    float *dY = ot_malloc(sizeof(float) * (size_t)rows * H);
    float *dact = ot_malloc(sizeof(float) * (size_t)rows * I);
    float *dgu = ot_malloc(sizeof(float) * (size_t)rows * 2 * I);
    float *X = ot_malloc(sizeof(float) * (size_t)rows * H);
    float *dX = ot_malloc(sizeof(float) * (size_t)rows * H);
    ot_moe_combine_bwd(dY, dw, dout, a->y, a->topk_w, a->perm, rows, K, H);
    for (int e = 0; e < E; e++) {
        int r0 = a->expert_off[e], n = a->expert_off[e + 1] - r0;
        if (n == 0) continue;
        const float *act = a->act + (size_t)r0 * I, *gu = a->gu + (size_t)r0 * 2 * I, *dYe = dY + (size_t)r0 * H;
        float *dXe = dX + (size_t)r0 * H;
        for (int i = 0; i < n; i++)
            memcpy(X + (size_t)i * H, a->xn2 + (size_t)(a->perm[r0 + i] / K) * H, sizeof(float) * H);
        memset(dact, 0, sizeof(float) * (size_t)n * I);
        ot_expert_matmul_bwd(dact, dYe, &w->down, e, n);
        if (gw) // the view is const for the forward's sake; in a gradient view it is the writable gradient buffer
            ot_expert_matmul_bwd_weight((float *)gw->down.dense + (size_t)e * H * I, gw->down_b + (size_t)e * H, dYe,
                                        act, &w->down, n);
        if (s_d)
            ot_lora_bwd(dact, ot_lora_dA(lo, s_d, e), ot_lora_dB(lo, s_d, e), dYe, act, a->xa_d + (size_t)r0 * r,
                        ot_lora_A(lo, s_d, e), ot_lora_B(lo, s_d, e), n, I, r, H, lo->scale);
        memset(dgu, 0, sizeof(float) * (size_t)n * 2 * I);
        ot_swiglu_bwd(dgu, dact, gu, n, I, c->swiglu_alpha, c->swiglu_limit);
        memset(dXe, 0, sizeof(float) * (size_t)n * H);
        ot_expert_matmul_bwd(dXe, dgu, &w->gate_up, e, n);
        if (gw)
            ot_expert_matmul_bwd_weight((float *)gw->gate_up.dense + (size_t)e * 2 * I * H,
                                        gw->gate_up_b + (size_t)e * 2 * I, dgu, X, &w->gate_up, n);
        if (s_gu)
            ot_lora_bwd(dXe, ot_lora_dA(lo, s_gu, e), ot_lora_dB(lo, s_gu, e), dgu, X, a->xa_gu + (size_t)r0 * r,
                        ot_lora_A(lo, s_gu, e), ot_lora_B(lo, s_gu, e), n, H, r, 2 * I, lo->scale);
    }
    ot_moe_unpermute_add(dxn2, dX, a->perm, rows, K, H);
    // Through the routing weights into the router logits, then the (frozen) router into xn2.
    float *dlogits = ot_calloc((size_t)T * E, sizeof(float));
    ot_router_topk_bwd(dlogits, dw, a->topk_w, a->topk_idx, T, E, K);
    ot_matmul_bwd(dxn2, gw ? gw->router_w : NULL, gw ? gw->router_b : NULL, dlogits, a->xn2, w->router_w, T, H, E);
    free(dlogits);
    free(dw);
    free(dY);
    free(dact);
    free(dgu);
    free(X);
    free(dX);
}

void ot_cpu_layer_fwd(const ot_model *m, const ot_lora *lo, int l, const ot_layer_weights *w, ot_cpu_layer_acts *a,
                      float *x_next, int T, const int32_t *pos, const int32_t *seg_start, const ot_cpu_kv_rows *cache) {
    const ot_model_config *c = &m->cfg;
    const int H = c->hidden_size, nh = c->num_attention_heads, nkv = c->num_key_value_heads, D = c->head_dim,
              E = c->num_local_experts, K = c->num_experts_per_tok;
    const int Q = nh * D, KV = nkv * D, window = w->sliding ? c->sliding_window : 0;
    // attention block; with a cache the new keys and values go straight to their rows of it
    float *k = cache ? cache->k + (size_t)cache->p0 * KV : a->k, *v = cache ? cache->v + (size_t)cache->p0 * KV : a->v;
    ot_rmsnorm_fwd(a->xn1, a->rstd1, a->x, w->ln1_w, T, H, c->rms_norm_eps);
    projection_fwd(a->q, a->xa[0], a->xn1, w->q_w, w->q_b, lo, ot_lora_slot_of(lo, l, OT_LORA_Q), T, H, Q);
    projection_fwd(k, a->xa[1], a->xn1, w->k_w, w->k_b, lo, ot_lora_slot_of(lo, l, OT_LORA_K), T, H, KV);
    projection_fwd(v, a->xa[2], a->xn1, w->v_w, w->v_b, lo, ot_lora_slot_of(lo, l, OT_LORA_V), T, H, KV);
    ot_rope_fwd(a->q, pos, m->inv_freq, m->attn_factor, T, nh, D);
    ot_rope_fwd(k, pos, m->inv_freq, m->attn_factor, T, nkv, D);
    if (cache) ot_attention_cache_fwd(a->att, a->q, cache->k, cache->v, w->sinks, T, cache->p0, nh, nkv, D, window);
    else ot_attention_fwd(a->att, a->lse, a->q, a->k, a->v, w->sinks, seg_start, T, nh, nkv, D, window);
    projection_fwd(a->h, a->xa[3], a->att, w->o_w, w->o_b, lo, ot_lora_slot_of(lo, l, OT_LORA_O), T, Q, H);
    for (size_t i = 0; i < (size_t)T * H; i++) a->h[i] += a->x[i];
    // MoE block
    ot_rmsnorm_fwd(a->xn2, a->rstd2, a->h, w->ln2_w, T, H, c->rms_norm_eps);
    ot_matmul_fwd(a->router_logits, a->xn2, w->router_w, w->router_b, T, H, E);
    ot_router_topk_fwd(a->topk_idx, a->topk_w, a->router_logits, T, E, K);
    float *moe_out = ot_malloc(sizeof(float) * (size_t)T * H);
    moe_fwd(moe_out, a, w, lo, l, c, T);
    for (size_t i = 0; i < (size_t)T * H; i++) x_next[i] = a->h[i] + moe_out[i];
    free(moe_out);
}

// Forward of all layers; leaves the final residual in ws->x_final and the final norm in ws->hf.
static void forward_layers(const ot_model *m, const ot_lora *lo, const ot_batch *b, ot_cpu_workspace *ws) {
    const ot_model_config *c = &m->cfg;
    const int T = b->T, H = c->hidden_size;
    workspace_reserve(ws, c, T, lo ? lo->r : 1);
    ot_model_embed(m, b->ids, T, ws->layers[0].x);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        // sharded: gathered now, the next layer's gather starts (prefetch)
        const ot_layer_weights *w = ot_model_layer(m, l, l + 1 < c->num_hidden_layers ? l + 1 : -1);
        float *x_next = l + 1 < c->num_hidden_layers ? ws->layers[l + 1].x : ws->x_final;
        ot_cpu_layer_fwd(m, lo, l, w, &ws->layers[l], x_next, T, b->pos, b->seg_start, NULL);
    }
    ot_rmsnorm_fwd(ws->hf, ws->rstd_f, ws->x_final, m->norm_w, T, H, c->rms_norm_eps);
}

// g (full training, else NULL): the model's weight gradients, accumulated.
static void backward_layers(const ot_model *m, ot_lora *lo, const ot_batch *b, ot_cpu_workspace *ws, float *dx,
                            const ot_model *g) {
    const ot_model_config *c = &m->cfg;
    const int T = b->T, H = c->hidden_size, nh = c->num_attention_heads, nkv = c->num_key_value_heads,
              D = c->head_dim;
    const int Q = nh * D, KV = nkv * D;
    float *dxn = ot_malloc(sizeof(float) * (size_t)T * H);
    float *datt = ot_malloc(sizeof(float) * (size_t)T * Q);
    float *dq = ot_malloc(sizeof(float) * (size_t)T * Q);
    float *dk = ot_malloc(sizeof(float) * (size_t)T * KV);
    float *dv = ot_malloc(sizeof(float) * (size_t)T * KV);
    // dx holds d loss / d (output of layer l) on entry to iteration l, and d / d (input of layer l) after it.
    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        ot_cpu_layer_acts *a = &ws->layers[l];
        const ot_layer_weights *w = ot_model_layer(m, l, l - 1);
        const ot_layer_weights *gw = g ? &g->layers[l] : NULL;
        // MoE block: x_next = h + moe(xn2(h)); dx flows to h unchanged (residual) plus through the MoE.
        memset(dxn, 0, sizeof(float) * (size_t)T * H);
        moe_bwd(dxn, dx, a, w, lo, l, c, T, gw);
        ot_rmsnorm_bwd(dx, gw ? gw->ln2_w : NULL, dxn, a->h, w->ln2_w, a->rstd2, T, H);
        // attention block: h = x + o_proj(attention(...))
        memset(datt, 0, sizeof(float) * (size_t)T * Q);
        projection_bwd(datt, gw ? gw->o_w : NULL, gw ? gw->o_b : NULL, dx, a->att, a->xa[3], w->o_w, lo,
                       ot_lora_slot_of(lo, l, OT_LORA_O), T, Q, H);
        memset(dq, 0, sizeof(float) * (size_t)T * Q);
        memset(dk, 0, sizeof(float) * (size_t)T * KV);
        memset(dv, 0, sizeof(float) * (size_t)T * KV);
        ot_attention_bwd(dq, dk, dv, gw ? gw->sinks : NULL, datt, a->att, a->lse, a->q, a->k, a->v, w->sinks, b->seg_start, T, nh,
                         nkv, D, w->sliding ? c->sliding_window : 0);
        ot_rope_bwd(dq, b->pos, m->inv_freq, m->attn_factor, T, nh, D);
        ot_rope_bwd(dk, b->pos, m->inv_freq, m->attn_factor, T, nkv, D);
        memset(dxn, 0, sizeof(float) * (size_t)T * H);
        projection_bwd(dxn, gw ? gw->q_w : NULL, gw ? gw->q_b : NULL, dq, a->xn1, a->xa[0], w->q_w, lo,
                       ot_lora_slot_of(lo, l, OT_LORA_Q), T, H, Q);
        projection_bwd(dxn, gw ? gw->k_w : NULL, gw ? gw->k_b : NULL, dk, a->xn1, a->xa[1], w->k_w, lo,
                       ot_lora_slot_of(lo, l, OT_LORA_K), T, H, KV);
        projection_bwd(dxn, gw ? gw->v_w : NULL, gw ? gw->v_b : NULL, dv, a->xn1, a->xa[2], w->v_w, lo,
                       ot_lora_slot_of(lo, l, OT_LORA_V), T, H, KV);
        ot_rmsnorm_bwd(dx, gw ? gw->ln1_w : NULL, dxn, a->x, w->ln1_w, a->rstd1, T, H);
    }
    free(dxn);
    free(datt);
    free(dq);
    free(dk);
    free(dv);
}

double ot_cpu_forward_backward(const ot_model *m, ot_lora *lo, const ot_batch *b, float grad_scale, int backward,
                               ot_cpu_workspace *ws) {
    const int H = m->cfg.hidden_size, T = b->T;
    if (T == 0) {
        // A sharded model's calls are collective: an empty batch still takes part in every gather.
        if (m->shard) ot_model_idle_pass(m, backward && lo);
        return 0.0;
    }
    forward_layers(m, lo, b, ws);
    if (!backward || !lo) return ot_model_lmhead_xent(m, NULL, ws->hf, b->tgt_pos, b->tgt_label, b->n_targets, 0.0f);
    float *dhf = ot_calloc((size_t)T * H, sizeof(float));
    double loss = ot_model_lmhead_xent(m, dhf, ws->hf, b->tgt_pos, b->tgt_label, b->n_targets, grad_scale);
    float *dx = ot_calloc((size_t)T * H, sizeof(float));
    ot_rmsnorm_bwd(dx, NULL, dhf, ws->x_final, m->norm_w, ws->rstd_f, T, H);
    backward_layers(m, lo, b, ws, dx, NULL);
    free(dx);
    free(dhf);
    return loss;
}

double ot_cpu_forward_backward_full(const ot_model *m, const ot_model *g, const ot_batch *b, float grad_scale,
                                    ot_cpu_workspace *ws) {
    const int H = m->cfg.hidden_size, V = m->cfg.vocab_size, T = b->T;
    if (T == 0) return 0.0;
    forward_layers(m, NULL, b, ws);
    float *dhf = ot_calloc((size_t)T * H, sizeof(float));
    // With tied embeddings g->lm_head is g->embed: the head's and the lookup's gradients add in one table.
    double loss = ot_lmhead_xent(dhf, g->lm_head, ws->hf, m->lm_head, b->tgt_pos, b->tgt_label, b->n_targets, H, V,
                                 grad_scale);
    float *dx = ot_calloc((size_t)T * H, sizeof(float));
    ot_rmsnorm_bwd(dx, g->norm_w, dhf, ws->x_final, m->norm_w, ws->rstd_f, T, H);
    backward_layers(m, NULL, b, ws, dx, g);
    ot_embedding_bwd(g->embed, dx, b->ids, T, H);
    free(dx);
    free(dhf);
    return loss;
}

void ot_cpu_logits(const ot_model *m, const ot_lora *lo, const ot_batch *b, float *logits, ot_cpu_workspace *ws) {
    if (b->T == 0) return;
    if (m->shard) ot_die("ot_cpu_logits: not available on a sharded model (load it with ot_model_load)");
    forward_layers(m, lo, b, ws);
    ot_matmul_fwd(logits, ws->hf, m->lm_head, NULL, b->T, m->cfg.hidden_size, m->cfg.vocab_size);
}
