// The parameter table of full training (see full_params.h) and the files it is saved as.
#include "trainer/model/full_params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/fileio.h"
#include "formats/safetensors.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// The float32 weights behind an HF tensor name (NULL when the name is not a weight of this model); *expert: a
// dense expert projection.
static const float *weight_of(const ot_model *m, const char *name, int *expert) {
    const ot_shard_model v = {(void **)&m->embed, (void **)&m->lm_head, (void **)&m->norm_w, m->layers,
                              sizeof *m->layers, m->cfg.num_hidden_layers, &ot_layer_fields};
    ot_shard_role role;
    void **field = ot_shard_model_field(&v, name, &role);
    *expert = role == OT_SR_GATE_UP_DENSE || role == OT_SR_DOWN_DENSE;
    return field ? *field : NULL;
}

// Weight decay on the matrices that map one activation to another (attention, router, experts, the output head);
// none on the embedding (a lookup table: decay would shrink rare tokens' rows every step though they get almost no
// gradient), norms and sinks (scales and offsets whose value 0 is not a neutral "no weight") and biases — the usual
// GPT-2 / llm.c split.
static int decays(const char *name, int expert) {
    if (expert) return 1;
    if (!strcmp(name, "model.embed_tokens.weight")) return 0;
    if (ends_with(name, "layernorm.weight") || !strcmp(name, "model.norm.weight")) return 0;
    return ends_with(name, "_proj.weight") || ends_with(name, "router.weight") || !strcmp(name, "lm_head.weight");
}

int ot_full_params_build(ot_full_params *fp, const ot_model *m, ot_err *err) {
    memset(fp, 0, sizeof *fp);
    if (m->ck.experts_mxfp4)
        return ot_fail(err, "%s: the experts are MXFP4 (4-bit): --full trains every weight and cannot re-quantize "
                       "them each step; train from a bf16 model (osstune-init-model --dense-experts, or a checkpoint "
                       "with transformers' dequantized gate_up_proj / down_proj)", m->ck.dir);
    ot_expected_tensor *t;
    int n = ot_gptoss_expected_tensors(&m->cfg, 0, &t);
    fp->p = ot_calloc((size_t)n, sizeof(ot_full_param));
    fp->n = n;
    char *covered = ot_calloc(m->owned_floats, 1);
    for (int i = 0; i < n; i++) {
        ot_full_param *p = &fp->p[i];
        int expert;
        const float *w = weight_of(m, t[i].name, &expert);
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= (size_t)t[i].shape[d];
        if (!w || w < m->owned || w + numel > m->owned + m->owned_floats) {
            free(covered), free(t), ot_full_params_free(fp);
            return ot_fail(err, "internal: tensor '%s' is not in the model's float32 arena", t[i].name);
        }
        snprintf(p->name, sizeof p->name, "%s", t[i].name);
        p->offset = (size_t)(w - m->owned);
        p->n = numel;
        p->expert = expert;
        p->decay = decays(p->name, expert);
        p->ndim = t[i].ndim;
        for (int d = 0; d < t[i].ndim && d < 3; d++) p->shape[d] = t[i].shape[d];
        for (size_t k = 0; k < numel; k++) {
            if (covered[p->offset + k]) {
                free(covered), free(t), ot_full_params_free(fp);
                return ot_fail(err, "internal: tensor '%s' overlaps another in the weight arena", t[i].name);
            }
            covered[p->offset + k] = 1;
        }
        fp->total += numel;
    }
    free(covered);
    free(t);
    if (fp->total != m->owned_floats) {
        size_t have = fp->total;
        ot_full_params_free(fp);
        return ot_fail(err, "internal: the tensors cover %zu of the %zu floats of the weight arena", have,
                       m->owned_floats);
    }
    return 0;
}

void ot_full_params_free(ot_full_params *fp) {
    free(fp->p);
    memset(fp, 0, sizeof *fp);
}

void ot_full_grad_view(ot_model *g, const ot_model *m, float *grads) {
    *g = *m;
    memset(&g->ck, 0, sizeof g->ck); // the view owns no mapping
    g->owned = grads;
    g->inv_freq = NULL;
#define MOVE(p) ((p) ? grads + ((const float *)(p) - m->owned) : NULL)
    g->embed = MOVE(m->embed);
    g->lm_head = MOVE(m->lm_head);
    g->norm_w = MOVE(m->norm_w);
    g->layers = ot_calloc((size_t)m->cfg.num_hidden_layers, sizeof(ot_layer_weights));
    for (int l = 0; l < m->cfg.num_hidden_layers; l++) {
        const ot_layer_weights *w = &m->layers[l];
        ot_layer_weights *d = &g->layers[l];
        *d = *w;
        d->ln1_w = MOVE(w->ln1_w), d->ln2_w = MOVE(w->ln2_w);
        d->q_w = MOVE(w->q_w), d->q_b = MOVE(w->q_b), d->k_w = MOVE(w->k_w), d->k_b = MOVE(w->k_b);
        d->v_w = MOVE(w->v_w), d->v_b = MOVE(w->v_b), d->o_w = MOVE(w->o_w), d->o_b = MOVE(w->o_b);
        d->sinks = MOVE(w->sinks);
        d->router_w = MOVE(w->router_w), d->router_b = MOVE(w->router_b);
        d->gate_up_b = MOVE(w->gate_up_b), d->down_b = MOVE(w->down_b);
        d->gate_up.dense = MOVE(w->gate_up.dense);
        d->down.dense = MOVE(w->down.dense);
    }
#undef MOVE
}

void ot_full_grad_view_free(ot_model *g) {
    free(g->layers);
    memset(g, 0, sizeof *g);
}

// ---- files --------------------------------------------------------------------------------------------------------

int ot_full_save_model_dir(const ot_model *m, const ot_full_params *fp, const char *src_dir, const char *out_dir,
                           ot_err *err) {
    ot_model_config c = m->cfg;
    c.experts_mxfp4 = 0;
    char *text = ot_model_config_to_json(&c), *path = ot_path_join(out_dir, "config.json");
    int rc = ot_write_file_atomic(path, text, strlen(text), err);
    free(text), free(path);
    if (rc) return -1;
    static const char *const copied[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                         "generation_config.json", "chat_template.jinja"};
    for (size_t i = 0; i < sizeof copied / sizeof copied[0] && src_dir; i++) {
        char *src = ot_path_join(src_dir, copied[i]);
        FILE *f = fopen(src, "rb");
        if (f) {
            fclose(f);
            size_t len;
            char *buf = ot_read_file(src, &len, err);
            char *dst = ot_path_join(out_dir, copied[i]);
            rc = buf ? ot_write_file_atomic(dst, buf, len, err) : -1;
            free(buf), free(dst);
        }
        free(src);
        if (rc) return -1;
    }
    // Every tensor rounded to bf16 once; dense experts transposed back to the file's [E, in, out].
    uint16_t *bf = ot_malloc(fp->total * sizeof(uint16_t));
    ot_st_writer *w = ot_st_writer_new();
    size_t at = 0;
    for (int i = 0; i < fp->n; i++) {
        const ot_full_param *p = &fp->p[i];
        const float *src = m->owned + p->offset;
        uint16_t *dst = bf + at;
        if (p->expert) { // file [E, in, out] from memory [E, out, in]
            int64_t E = p->shape[0], in = p->shape[1], out = p->shape[2];
            for (int64_t e = 0; e < E; e++)
                for (int64_t o = 0; o < out; o++)
                    for (int64_t k = 0; k < in; k++)
                        dst[(e * in + k) * out + o] = ot_f32_to_bf16(src[(e * out + o) * in + k]);
        } else {
            for (size_t k = 0; k < p->n; k++) dst[k] = ot_f32_to_bf16(src[k]);
        }
        ot_st_writer_add(w, p->name, OT_DT_BF16, p->ndim, p->shape, dst);
        at += p->n;
    }
    ot_st_writer_set_metadata(w, "format", "pt");
    path = ot_path_join(out_dir, "model.safetensors");
    rc = ot_st_writer_finish(w, path, err);
    free(path);
    free(bf);
    return rc;
}

int ot_full_save_master(const ot_model *m, const ot_full_params *fp, const char *path, ot_err *err) {
    ot_st_writer *w = ot_st_writer_new();
    for (int i = 0; i < fp->n; i++) {
        int64_t n = (int64_t)fp->p[i].n;
        ot_st_writer_add(w, fp->p[i].name, OT_DT_F32, 1, &n, m->owned + fp->p[i].offset);
    }
    ot_st_writer_set_metadata(w, "format", "osstune-full-master-1");
    return ot_st_writer_finish(w, path, err);
}

int ot_full_load_master(ot_model *m, const ot_full_params *fp, const char *path, ot_err *err) {
    ot_safetensors sf;
    if (ot_safetensors_open(&sf, path, err)) return -1;
    int rc = 0;
    for (int i = 0; i < fp->n && !rc; i++) {
        const ot_tensor *t = ot_safetensors_find(&sf, fp->p[i].name);
        if (!t) rc = ot_fail(err, "%s: master weight '%s' is missing", path, fp->p[i].name);
        else if (t->dtype != OT_DT_F32 || (size_t)t->numel != fp->p[i].n)
            rc = ot_fail(err, "%s: master weight '%s' is %s with %lld values, the model needs F32 with %zu", path,
                         fp->p[i].name, ot_dtype_name(t->dtype), (long long)t->numel, fp->p[i].n);
    }
    for (int i = 0; i < fp->n && !rc; i++)
        memcpy(m->owned + fp->p[i].offset, ot_safetensors_find(&sf, fp->p[i].name)->data, fp->p[i].n * sizeof(float));
    ot_safetensors_close(&sf);
    return rc;
}
