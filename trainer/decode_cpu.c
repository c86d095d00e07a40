// The decoder's forward is forward_layers() of trainer/gptoss_cpu.c restricted to the new positions: the same
// kernels in the same order (spec §2), with attention reading the cached keys and values of the earlier
// positions through ot_attention_cache_fwd. Keep the two in step: a change of op order in one must be made in the
// other, and tests/test_translate_decode.c compares their logits.
#include "trainer/decode_cpu.h"

#include <stdlib.h>
#include <string.h>

// Positions computed together. Bounds the scratch memory of a long prefill; the results do not depend on it.
#define OT_DECODE_CHUNK 64

struct ot_cpu_decoder {
    const ot_model *m;
    const ot_lora *lo;
    int len, cap;      // positions cached, positions allocated
    float **k, **v;    // [layers] → [cap, nkv·D], rotated keys and values of every cached position
    // scratch for one chunk of up to OT_DECODE_CHUNK positions
    float *x, *xn1, *rstd, *q, *kn, *vn, *att, *h, *xn2, *router_logits, *topk_w, *moe_out, *xa;
    float *X, *gu, *act, *y, *xa_e; // expert rows: gathered inputs, gate/up, activation, output, LoRA x·Aᵀ
    int32_t *pos, *topk_idx, *perm, *expert_off, *fill, *where;
};

static const ot_lora_slot *slot_of(const ot_lora *lo, int l, int t) {
    if (!lo || !lo->slots[l][t].present) return NULL;
    return &lo->slots[l][t];
}

ot_cpu_decoder *ot_cpu_decoder_new(const ot_model *m, const ot_lora *lo) {
    const ot_model_config *c = &m->cfg;
    const size_t C = OT_DECODE_CHUNK, H = c->hidden_size, Q = (size_t)c->num_attention_heads * c->head_dim,
                 KV = (size_t)c->num_key_value_heads * c->head_dim, E = c->num_local_experts,
                 K = c->num_experts_per_tok, I = c->intermediate_size, R = lo && lo->r > 0 ? lo->r : 1;
    ot_cpu_decoder *d = ot_calloc(1, sizeof(ot_cpu_decoder));
    d->m = m;
    d->lo = lo;
    d->k = ot_calloc((size_t)c->num_hidden_layers, sizeof(float *));
    d->v = ot_calloc((size_t)c->num_hidden_layers, sizeof(float *));
    d->x = ot_malloc(sizeof(float) * C * H);
    d->xn1 = ot_malloc(sizeof(float) * C * H);
    d->rstd = ot_malloc(sizeof(float) * C);
    d->q = ot_malloc(sizeof(float) * C * Q);
    d->kn = ot_malloc(sizeof(float) * C * KV);
    d->vn = ot_malloc(sizeof(float) * C * KV);
    d->att = ot_malloc(sizeof(float) * C * Q);
    d->h = ot_malloc(sizeof(float) * C * H);
    d->xn2 = ot_malloc(sizeof(float) * C * H);
    d->router_logits = ot_malloc(sizeof(float) * C * E);
    d->topk_w = ot_malloc(sizeof(float) * C * K);
    d->moe_out = ot_malloc(sizeof(float) * C * H);
    d->xa = ot_malloc(sizeof(float) * C * R);
    d->X = ot_malloc(sizeof(float) * C * K * H);
    d->gu = ot_malloc(sizeof(float) * C * K * 2 * I);
    d->act = ot_malloc(sizeof(float) * C * K * I);
    d->y = ot_malloc(sizeof(float) * C * K * H);
    d->xa_e = ot_malloc(sizeof(float) * C * K * R);
    d->pos = ot_malloc(sizeof(int32_t) * C);
    d->topk_idx = ot_malloc(sizeof(int32_t) * C * K);
    d->perm = ot_malloc(sizeof(int32_t) * C * K);
    d->where = ot_malloc(sizeof(int32_t) * C * K);
    d->expert_off = ot_malloc(sizeof(int32_t) * (E + 1));
    d->fill = ot_malloc(sizeof(int32_t) * E);
    return d;
}

void ot_cpu_decoder_free(ot_cpu_decoder *d) {
    if (!d) return;
    for (int l = 0; l < d->m->cfg.num_hidden_layers; l++) {
        free(d->k[l]);
        free(d->v[l]);
    }
    free(d->k);
    free(d->v);
    float *f[] = {d->x,  d->xn1, d->rstd, d->q, d->kn, d->vn, d->att, d->h,  d->xn2, d->router_logits,
                  d->topk_w, d->moe_out, d->xa, d->X, d->gu, d->act, d->y, d->xa_e};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
    int32_t *g[] = {d->pos, d->topk_idx, d->perm, d->where, d->expert_off, d->fill};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) free(g[i]);
    free(d);
}

int ot_cpu_decoder_len(const ot_cpu_decoder *d) { return d->len; }

void ot_cpu_decoder_truncate(ot_cpu_decoder *d, int len) {
    if (len < 0 || len > d->len)
        ot_die("ot_cpu_decoder_truncate: length %d is outside 0..%d (the cached positions)", len, d->len);
    d->len = len;
}

// Room for `need` positions; the cache doubles so a long generation reallocates O(log T) times.
static void reserve_positions(ot_cpu_decoder *d, int need) {
    if (need <= d->cap) return;
    int cap = d->cap ? d->cap : 256;
    while (cap < need) cap *= 2;
    const ot_model_config *c = &d->m->cfg;
    size_t row = (size_t)c->num_key_value_heads * c->head_dim;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        d->k[l] = ot_realloc(d->k[l], sizeof(float) * row * (size_t)cap);
        d->v[l] = ot_realloc(d->v[l], sizeof(float) * row * (size_t)cap);
    }
    d->cap = cap;
}

// y = x·Wᵀ + b (+ LoRA), as projection_fwd in gptoss_cpu.c.
static void projection(float *y, float *xa, const float *x, const float *W, const float *b, const ot_lora *lo,
                       const ot_lora_slot *s, int n, int in, int out) {
    ot_matmul_fwd(y, x, W, b, n, in, out);
    if (s) ot_lora_fwd(y, xa, x, ot_lora_A(lo, s, 0), ot_lora_B(lo, s, 0), n, in, lo->r, out, lo->scale);
}

// The MoE block for n positions, as moe_fwd in gptoss_cpu.c: (token, slot) rows grouped by expert in token
// order, each expert's rows through gate_up, SwiGLU and down, then combined per token in slot order.
static void moe(ot_cpu_decoder *d, const ot_layer_weights *w, int l, int n) {
    const ot_model_config *c = &d->m->cfg;
    const ot_lora *lo = d->lo;
    const int H = c->hidden_size, I = c->intermediate_size, E = c->num_local_experts, K = c->num_experts_per_tok;
    const int r = lo ? lo->r : 0;
    const ot_lora_slot *s_gu = slot_of(lo, l, OT_LORA_GATE_UP), *s_d = slot_of(lo, l, OT_LORA_DOWN);
    int32_t *off = d->expert_off;
    memset(off, 0, sizeof(int32_t) * (size_t)(E + 1));
    for (int i = 0; i < n * K; i++) off[d->topk_idx[i] + 1]++;
    for (int e = 0; e < E; e++) off[e + 1] += off[e];
    memcpy(d->fill, off, sizeof(int32_t) * (size_t)E);
    for (int i = 0; i < n * K; i++) d->perm[d->fill[d->topk_idx[i]]++] = i;
    for (int e = 0; e < E; e++) {
        int r0 = off[e], cnt = off[e + 1] - r0;
        if (cnt == 0) continue;
        for (int i = 0; i < cnt; i++)
            memcpy(d->X + (size_t)i * H, d->xn2 + (size_t)(d->perm[r0 + i] / K) * H, sizeof(float) * H);
        float *gu = d->gu + (size_t)r0 * 2 * I, *act = d->act + (size_t)r0 * I, *y = d->y + (size_t)r0 * H;
        ot_expert_matmul_fwd(gu, d->X, &w->gate_up, e, w->gate_up_b + (size_t)e * 2 * I, cnt);
        if (s_gu)
            ot_lora_fwd(gu, d->xa_e + (size_t)r0 * r, d->X, ot_lora_A(lo, s_gu, e), ot_lora_B(lo, s_gu, e), cnt, H, r,
                        2 * I, lo->scale);
        ot_swiglu_fwd(act, gu, cnt, I, c->swiglu_alpha, c->swiglu_limit);
        ot_expert_matmul_fwd(y, act, &w->down, e, w->down_b + (size_t)e * H, cnt);
        if (s_d)
            ot_lora_fwd(y, d->xa_e + (size_t)r0 * r, act, ot_lora_A(lo, s_d, e), ot_lora_B(lo, s_d, e), cnt, I, r, H,
                        lo->scale);
    }
    for (int i = 0; i < n * K; i++) d->where[d->perm[i]] = i;
    memset(d->moe_out, 0, sizeof(float) * (size_t)n * H);
    for (int t = 0; t < n; t++)
        for (int s = 0; s < K; s++) {
            const float *y = d->y + (size_t)d->where[t * K + s] * H;
            float wt = d->topk_w[t * K + s];
            for (int j = 0; j < H; j++) d->moe_out[(size_t)t * H + j] += wt * y[j];
        }
}

// One chunk of n <= OT_DECODE_CHUNK positions starting at d->len; leaves the final hidden states (after the
// final norm) in d->xn1 and advances d->len.
static void forward_chunk(ot_cpu_decoder *d, const int32_t *ids, int n) {
    const ot_model *m = d->m;
    const ot_model_config *c = &m->cfg;
    const ot_lora *lo = d->lo;
    const int H = c->hidden_size, nh = c->num_attention_heads, nkv = c->num_key_value_heads, D = c->head_dim,
              E = c->num_local_experts, K = c->num_experts_per_tok;
    const int Q = nh * D, KV = nkv * D, p0 = d->len;
    for (int i = 0; i < n; i++) d->pos[i] = p0 + i;
    ot_embedding_fwd(d->x, ids, m->embed, n, H);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        const ot_layer_weights *w = &m->layers[l];
        float *kc = d->k[l], *vc = d->v[l];
        // attention block; the new keys and values go straight to their rows of the cache
        ot_rmsnorm_fwd(d->xn1, d->rstd, d->x, w->ln1_w, n, H, c->rms_norm_eps);
        projection(d->q, d->xa, d->xn1, w->q_w, w->q_b, lo, slot_of(lo, l, OT_LORA_Q), n, H, Q);
        projection(kc + (size_t)p0 * KV, d->xa, d->xn1, w->k_w, w->k_b, lo, slot_of(lo, l, OT_LORA_K), n, H, KV);
        projection(vc + (size_t)p0 * KV, d->xa, d->xn1, w->v_w, w->v_b, lo, slot_of(lo, l, OT_LORA_V), n, H, KV);
        ot_rope_fwd(d->q, d->pos, m->inv_freq, m->attn_factor, n, nh, D);
        ot_rope_fwd(kc + (size_t)p0 * KV, d->pos, m->inv_freq, m->attn_factor, n, nkv, D);
        ot_attention_cache_fwd(d->att, d->q, kc, vc, w->sinks, n, p0, nh, nkv, D, w->sliding ? c->sliding_window : 0);
        projection(d->h, d->xa, d->att, w->o_w, w->o_b, lo, slot_of(lo, l, OT_LORA_O), n, Q, H);
        for (size_t i = 0; i < (size_t)n * H; i++) d->h[i] += d->x[i];
        // MoE block
        ot_rmsnorm_fwd(d->xn2, d->rstd, d->h, w->ln2_w, n, H, c->rms_norm_eps);
        ot_matmul_fwd(d->router_logits, d->xn2, w->router_w, w->router_b, n, H, E);
        ot_router_topk_fwd(d->topk_idx, d->topk_w, d->router_logits, n, E, K);
        moe(d, w, l, n);
        for (size_t i = 0; i < (size_t)n * H; i++) d->x[i] = d->h[i] + d->moe_out[i];
    }
    ot_rmsnorm_fwd(d->xn1, d->rstd, d->x, m->norm_w, n, H, c->rms_norm_eps);
    d->len += n;
}

int ot_cpu_decoder_append(ot_cpu_decoder *d, const int32_t *ids, int n, float *logits, ot_logits_want want,
                          ot_err *err) {
    const ot_model_config *c = &d->m->cfg;
    const int H = c->hidden_size, V = c->vocab_size;
    if (n <= 0) return ot_fail(err, "decoder: nothing to append (%d tokens)", n);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return ot_fail(err, "decoder: token id %d (appended token %d) is outside the model's vocabulary 0..%d",
                           ids[i], i, V - 1);
    if ((long)d->len + n > c->max_position_embeddings)
        return ot_fail(err, "decoder: %d cached + %d new positions pass the model's max_position_embeddings %d",
                       d->len, n, c->max_position_embeddings);
    reserve_positions(d, d->len + n);
    for (int done = 0; done < n;) {
        int chunk = n - done < OT_DECODE_CHUNK ? n - done : OT_DECODE_CHUNK;
        forward_chunk(d, ids + done, chunk);
        if (want == OT_LOGITS_ALL)
            ot_matmul_fwd(logits + (size_t)done * V, d->xn1, d->m->lm_head, NULL, chunk, H, V);
        else if (want == OT_LOGITS_LAST && done + chunk == n)
            ot_matmul_fwd(logits, d->xn1 + (size_t)(chunk - 1) * H, d->m->lm_head, NULL, 1, H, V);
        done += chunk;
    }
    return 0;
}

// ---- the ot_decoder interface -------------------------------------------------------------------------------
static int cpu_append(void *state, const int32_t *ids, int n, float *logits, ot_err *err) {
    return ot_cpu_decoder_append(state, ids, n, logits, logits ? OT_LOGITS_LAST : OT_LOGITS_NONE, err);
}
static void cpu_truncate(void *state, int len) { ot_cpu_decoder_truncate(state, len); }
static void cpu_destroy(void *state) { ot_cpu_decoder_free(state); }

int ot_decoder_open_cpu(ot_decoder *dec, const ot_model *m, const ot_lora *lo, ot_err *err) {
    memset(dec, 0, sizeof *dec);
    if (lo && lo->n_layers != m->cfg.num_hidden_layers)
        return ot_fail(err, "decoder: the adapter has %d layers, the model %d", lo->n_layers,
                       m->cfg.num_hidden_layers);
    dec->backend = "cpu";
    dec->vocab = m->cfg.vocab_size;
    dec->max_positions = m->cfg.max_position_embeddings;
    dec->state = ot_cpu_decoder_new(m, lo);
    dec->append = cpu_append;
    dec->truncate = cpu_truncate;
    dec->destroy = cpu_destroy;
    return 0;
}
