#include "trainer/model/model.h"
#include "trainer/model/model_shard.h"

#include <stdio.h>
#include <stdlib.h>

// Copies one float-like tensor into the model's float32 arena, checking its element count.
static int load_f32(ot_model *m, float **dst, size_t *cursor, const char *name, size_t numel, ot_err *err) {
    const ot_tensor *t = ot_checkpoint_find(&m->ck, name);
    if (!t) return ot_fail(err, "%s: tensor '%s' is missing", m->ck.dir, name);
    if ((size_t)t->numel != numel)
        return ot_fail(err, "%s: tensor '%s' has %lld elements, expected %zu", t->file, name, (long long)t->numel, numel);
    *dst = m->owned + *cursor;
    *cursor += numel;
    return ot_tensor_to_f32(t, *dst, err);
}

// MXFP4 experts: the view points straight into the mapped *_blocks / *_scales bytes (never dequantized whole).
static int expert_view_mxfp4(ot_model *m, ot_expert_weight *w, const char *prefix, int E, int rows, int cols,
                             ot_err *err) {
    char name[256];
    snprintf(name, sizeof name, "%.200s_blocks", prefix);
    const ot_tensor *b = ot_checkpoint_find(&m->ck, name);
    snprintf(name, sizeof name, "%.200s_scales", prefix);
    const ot_tensor *s = ot_checkpoint_find(&m->ck, name);
    if (!b || !s) return ot_fail(err, "%s: MXFP4 tensors of '%s' are missing", m->ck.dir, prefix);
    w->kind = OT_EXPERT_MXFP4;
    w->n_experts = E;
    w->rows = rows;
    w->cols = cols;
    w->blocks = b->data;
    w->scales = s->data;
    w->dense = NULL;
    return 0;
}

// Dense (transformers-dequantized) experts are stored [E, in, out]; the kernels want [E, out, in].
static int expert_view_dense(ot_model *m, ot_expert_weight *w, float *dst, const char *name, int E, int rows, int cols,
                             ot_err *err) {
    const ot_tensor *t = ot_checkpoint_find(&m->ck, name);
    if (!t) return ot_fail(err, "%s: tensor '%s' is missing", m->ck.dir, name);
    size_t n = (size_t)E * rows * cols;
    float *tmp = ot_malloc(n * sizeof(float));
    if (ot_tensor_to_f32(t, tmp, err)) {
        free(tmp);
        return -1;
    }
    for (int e = 0; e < E; e++)
        for (int i = 0; i < cols; i++)
            for (int o = 0; o < rows; o++)
                dst[((size_t)e * rows + o) * cols + i] = tmp[((size_t)e * cols + i) * rows + o];
    free(tmp);
    w->kind = OT_EXPERT_DENSE;
    w->n_experts = E;
    w->rows = rows;
    w->cols = cols;
    w->dense = dst;
    return 0;
}

const ot_shard_fields ot_layer_fields = OT_SHARD_FIELDS(ot_layer_weights, gate_up_b, down_b);

int ot_model_load(ot_model *m, const char *dir, ot_err *err) {
    memset(m, 0, sizeof *m);
    if (ot_checkpoint_open(&m->ck, dir, err)) return -1;
    m->cfg = m->ck.config;
    const ot_model_config *c = &m->cfg;
    const size_t H = c->hidden_size, V = c->vocab_size, E = c->num_local_experts, I = c->intermediate_size;
    const size_t q_out = (size_t)c->num_attention_heads * c->head_dim, kv_out = (size_t)c->num_key_value_heads * c->head_dim;
    const int L = c->num_hidden_layers;

    const size_t bias = c->attention_bias ? 1 : 0; // gpt-oss has q/k/v/o biases; configs may turn them off
    size_t per_layer = 2 * H + q_out * H + bias * q_out + 2 * (kv_out * H + bias * kv_out) + H * q_out + bias * H +
                       c->num_attention_heads + E * H + E + E * 2 * I + E * H;
    if (!m->ck.experts_mxfp4) per_layer += E * 2 * I * H + E * H * I;
    m->owned_floats = (c->tie_word_embeddings ? 1 : 2) * V * H + H + (size_t)L * per_layer;
    m->owned = ot_malloc(m->owned_floats * sizeof(float));
    m->layers = ot_calloc((size_t)L, sizeof(ot_layer_weights));
    size_t cur = 0;
    char name[200];
#define LOAD(dst, nm, count)                                                                                         \
    do {                                                                                                             \
        if (load_f32(m, &(dst), &cur, nm, count, err)) goto fail;                                                  \
    } while (0)
    LOAD(m->embed, "model.embed_tokens.weight", V * H);
    if (c->tie_word_embeddings) m->lm_head = m->embed; // the output head shares the embedding table
    else LOAD(m->lm_head, "lm_head.weight", V * H);
    LOAD(m->norm_w, "model.norm.weight", H);
    for (int l = 0; l < L; l++) {
        ot_layer_weights *w = &m->layers[l];
        w->sliding = c->layer_sliding[l];
#define LAYER(dst, suffix, count)                                                                                    \
    do {                                                                                                             \
        snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix);                                               \
        LOAD(dst, name, count);                                                                                      \
    } while (0)
        LAYER(w->ln1_w, "input_layernorm.weight", H);
        LAYER(w->ln2_w, "post_attention_layernorm.weight", H);
        LAYER(w->q_w, "self_attn.q_proj.weight", q_out * H);
        if (bias) LAYER(w->q_b, "self_attn.q_proj.bias", q_out);
        LAYER(w->k_w, "self_attn.k_proj.weight", kv_out * H);
        if (bias) LAYER(w->k_b, "self_attn.k_proj.bias", kv_out);
        LAYER(w->v_w, "self_attn.v_proj.weight", kv_out * H);
        if (bias) LAYER(w->v_b, "self_attn.v_proj.bias", kv_out);
        LAYER(w->o_w, "self_attn.o_proj.weight", H * q_out);
        if (bias) LAYER(w->o_b, "self_attn.o_proj.bias", H);
        LAYER(w->sinks, "self_attn.sinks", (size_t)c->num_attention_heads);
        LAYER(w->router_w, "mlp.router.weight", E * H);
        LAYER(w->router_b, "mlp.router.bias", E);
        LAYER(w->gate_up_b, "mlp.experts.gate_up_proj_bias", E * 2 * I);
        LAYER(w->down_b, "mlp.experts.down_proj_bias", E * H);
#undef LAYER
        if (m->ck.experts_mxfp4) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.gate_up_proj", l);
            if (expert_view_mxfp4(m, &w->gate_up, name, (int)E, (int)(2 * I), (int)H, err)) goto fail;
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.down_proj", l);
            if (expert_view_mxfp4(m, &w->down, name, (int)E, (int)H, (int)I, err)) goto fail;
        } else {
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.gate_up_proj", l);
            if (expert_view_dense(m, &w->gate_up, m->owned + cur, name, (int)E, (int)(2 * I), (int)H, err)) goto fail;
            cur += E * 2 * I * H;
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.down_proj", l);
            if (expert_view_dense(m, &w->down, m->owned + cur, name, (int)E, (int)H, (int)I, err)) goto fail;
            cur += E * H * I;
        }
    }
#undef LOAD
    if (cur != m->owned_floats) {
        ot_fail(err, "internal: weight arena size mismatch (%zu of %zu)", cur, m->owned_floats);
        goto fail;
    }
    m->inv_freq = ot_malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    m->attn_factor = ot_rope_inv_freq(m->inv_freq, c->head_dim, &c->rope);
    return 0;
fail:
    ot_model_free(m);
    return -1;
}

void ot_model_free(ot_model *m) {
    ot_model_shard_free(m->shard);
    free(m->owned);
    free(m->layers);
    free(m->inv_freq);
    if (m->ck.dir) ot_checkpoint_close(&m->ck);
    memset(m, 0, sizeof *m);
}
