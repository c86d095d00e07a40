// The decoder's forward is the training graph's layer forward (ot_cpu_layer_fwd, trainer/graph/gptoss_cpu.c) on
// the new positions, in its KV-cache mode: the same kernels in the same order (spec §2), attention reading the
// cached keys and values of the earlier positions. tests/test_translate_decode.c compares the logits with a full
// forward.
#include "infer/decode_cpu.h"

#include "trainer/graph/gptoss_cpu.h"

#include <stdlib.h>
#include <string.h>

// Positions computed together. Bounds the scratch memory of a long prefill; the results do not depend on it.
#define OT_DECODE_CHUNK 64

struct ot_cpu_decoder {
    const ot_model *m;
    const ot_lora *lo;
    int len, cap;          // positions cached, positions allocated
    float **k, **v;        // [layers] → [cap, nkv·D], rotated keys and values of every cached position
    ot_cpu_layer_acts a;   // one layer's activations for a chunk of up to OT_DECODE_CHUNK positions
    int32_t *pos;          // [OT_DECODE_CHUNK]
};

ot_cpu_decoder *ot_cpu_decoder_new(const ot_model *m, const ot_lora *lo) {
    const ot_model_config *c = &m->cfg;
    const size_t C = OT_DECODE_CHUNK, H = c->hidden_size, Q = (size_t)c->num_attention_heads * c->head_dim,
                 E = c->num_local_experts, K = c->num_experts_per_tok, I = c->intermediate_size, R = lo && lo->r > 0 ? lo->r : 1;
    ot_cpu_decoder *d = ot_calloc(1, sizeof(ot_cpu_decoder));
    d->m = m;
    d->lo = lo;
    d->k = ot_calloc((size_t)c->num_hidden_layers, sizeof(float *));
    d->v = ot_calloc((size_t)c->num_hidden_layers, sizeof(float *));
    ot_cpu_layer_acts *a = &d->a;
    a->x = ot_malloc(sizeof(float) * C * H);
    a->xn1 = ot_malloc(sizeof(float) * C * H);
    a->rstd1 = ot_malloc(sizeof(float) * C);
    a->q = ot_malloc(sizeof(float) * C * Q);
    a->xa[0] = ot_malloc(sizeof(float) * C * R); // one scratch for the four projections' x·Aᵀ: nothing reads it back
    for (int i = 1; i < 4; i++) a->xa[i] = a->xa[0];
    a->att = ot_malloc(sizeof(float) * C * Q);
    a->h = ot_malloc(sizeof(float) * C * H);
    a->xn2 = ot_malloc(sizeof(float) * C * H);
    a->rstd2 = ot_malloc(sizeof(float) * C);
    a->router_logits = ot_malloc(sizeof(float) * C * E);
    a->topk_idx = ot_malloc(sizeof(int32_t) * C * K);
    a->topk_w = ot_malloc(sizeof(float) * C * K);
    a->perm = ot_malloc(sizeof(int32_t) * C * K);
    a->inv = ot_malloc(sizeof(int32_t) * C * K);
    a->expert_off = ot_malloc(sizeof(int32_t) * (E + 1));
    a->gu = ot_malloc(sizeof(float) * C * K * 2 * I);
    a->act = ot_malloc(sizeof(float) * C * K * I);
    a->y = ot_malloc(sizeof(float) * C * K * H);
    a->xa_gu = a->xa_d = ot_malloc(sizeof(float) * C * K * R);
    d->pos = ot_malloc(sizeof(int32_t) * C);
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
    ot_cpu_layer_acts *a = &d->a;
    void *f[] = {a->x, a->xn1, a->rstd1, a->q, a->xa[0], a->att, a->h, a->xn2, a->rstd2, a->router_logits,
                 a->topk_idx, a->topk_w, a->perm, a->inv, a->expert_off, a->gu, a->act, a->y, a->xa_gu, d->pos};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
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

// One chunk of n <= OT_DECODE_CHUNK positions starting at d->len, layer by layer through the training graph's
// layer forward with the KV cache; leaves the final hidden states (after the final norm) in d->a.xn1 and advances
// d->len.
static void forward_chunk(ot_cpu_decoder *d, const int32_t *ids, int n) {
    const ot_model *m = d->m;
    const ot_model_config *c = &m->cfg;
    ot_cpu_layer_acts *a = &d->a;
    for (int i = 0; i < n; i++) d->pos[i] = d->len + i;
    ot_embedding_fwd(a->x, ids, m->embed, n, c->hidden_size);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ot_cpu_kv_rows cache = {d->k[l], d->v[l], d->len};
        ot_cpu_layer_fwd(m, d->lo, l, &m->layers[l], a, a->x, n, d->pos, NULL, &cache); // the input is not needed again
    }
    ot_rmsnorm_fwd(a->xn1, a->rstd1, a->x, m->norm_w, n, c->hidden_size, c->rms_norm_eps);
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
            ot_matmul_fwd(logits + (size_t)done * V, d->a.xn1, d->m->lm_head, NULL, chunk, H, V);
        else if (want == OT_LOGITS_LAST && done + chunk == n)
            ot_matmul_fwd(logits, d->a.xn1 + (size_t)(chunk - 1) * H, d->m->lm_head, NULL, 1, H, V);
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
