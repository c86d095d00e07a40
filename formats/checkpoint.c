// A gpt-oss checkpoint directory in the HF layout (spec §3). Opening it checks the whole directory up front:
// config.json, the index, every shard's container, and every tensor's presence, shape and dtype against what
// config.json implies. Later code can then index tensors without re-checking anything.
#include "formats/checkpoint.h"
#include "formats/fileio.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "formats/json_util.h"

// ---- the expected tensor list ----------------------------------------------------------------------------------
static void push(ot_expected_tensor **list, int *n, int *cap, int kind, int ndim, const int64_t *shape, const char *fmt,
                 int layer) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        *list = ot_realloc(*list, (size_t)*cap * sizeof(ot_expected_tensor));
    }
    ot_expected_tensor *t = &(*list)[(*n)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, fmt, layer);
    t->kind = kind;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
}

int ot_gptoss_expected_tensors(const ot_model_config *c, int experts_mxfp4, ot_expected_tensor **out) {
    const int64_t H = c->hidden_size, V = c->vocab_size, E = c->num_local_experts, I = c->intermediate_size;
    const int64_t Q = (int64_t)c->num_attention_heads * c->head_dim, KV = (int64_t)c->num_key_value_heads * c->head_dim;
    const int64_t NH = c->num_attention_heads;
    ot_expected_tensor *list = NULL;
    int n = 0, cap = 0;
#define T1(kind, name, a) push(&list, &n, &cap, kind, 1, (int64_t[]){a}, name, l)
#define T2(kind, name, a, b) push(&list, &n, &cap, kind, 2, (int64_t[]){a, b}, name, l)
#define T3(kind, name, a, b, c_) push(&list, &n, &cap, kind, 3, (int64_t[]){a, b, c_}, name, l)
#define T4(kind, name, a, b, c_, d) push(&list, &n, &cap, kind, 4, (int64_t[]){a, b, c_, d}, name, l)
    for (int l = 0; l < c->num_hidden_layers; l++) {
        T1(OT_TK_FLOAT, "model.layers.%d.input_layernorm.weight", H);
        T1(OT_TK_FLOAT, "model.layers.%d.post_attention_layernorm.weight", H);
        T2(OT_TK_FLOAT, "model.layers.%d.self_attn.q_proj.weight", Q, H);
        T2(OT_TK_FLOAT, "model.layers.%d.self_attn.k_proj.weight", KV, H);
        T2(OT_TK_FLOAT, "model.layers.%d.self_attn.v_proj.weight", KV, H);
        T2(OT_TK_FLOAT, "model.layers.%d.self_attn.o_proj.weight", H, Q);
        if (c->attention_bias) {
            T1(OT_TK_FLOAT, "model.layers.%d.self_attn.q_proj.bias", Q);
            T1(OT_TK_FLOAT, "model.layers.%d.self_attn.k_proj.bias", KV);
            T1(OT_TK_FLOAT, "model.layers.%d.self_attn.v_proj.bias", KV);
            T1(OT_TK_FLOAT, "model.layers.%d.self_attn.o_proj.bias", H);
        }
        T1(OT_TK_FLOAT, "model.layers.%d.self_attn.sinks", NH);
        T2(OT_TK_FLOAT, "model.layers.%d.mlp.router.weight", E, H);
        T1(OT_TK_FLOAT, "model.layers.%d.mlp.router.bias", E);
        if (experts_mxfp4) {
            // [E, out, in/32, 16] nibbles and [E, out, in/32] E8M0 scales; gate_up has out = 2I, in = H.
            T4(OT_TK_U8, "model.layers.%d.mlp.experts.gate_up_proj_blocks", E, 2 * I, H / 32, 16);
            T3(OT_TK_U8, "model.layers.%d.mlp.experts.gate_up_proj_scales", E, 2 * I, H / 32);
            T4(OT_TK_U8, "model.layers.%d.mlp.experts.down_proj_blocks", E, H, I / 32, 16);
            T3(OT_TK_U8, "model.layers.%d.mlp.experts.down_proj_scales", E, H, I / 32);
        } else {
            // transformers' dequantized parameters, [E, in, out], used as x @ W[e].
            T3(OT_TK_FLOAT, "model.layers.%d.mlp.experts.gate_up_proj", E, H, 2 * I);
            T3(OT_TK_FLOAT, "model.layers.%d.mlp.experts.down_proj", E, I, H);
        }
        T2(OT_TK_FLOAT, "model.layers.%d.mlp.experts.gate_up_proj_bias", E, 2 * I);
        T2(OT_TK_FLOAT, "model.layers.%d.mlp.experts.down_proj_bias", E, H);
    }
    int l = 0; // unused by the global names' format
    T2(OT_TK_FLOAT, "model.embed_tokens.weight", V, H);
    T1(OT_TK_FLOAT, "model.norm.weight", H);
    if (!c->tie_word_embeddings) T2(OT_TK_FLOAT, "lm_head.weight", V, H); // tied: lm_head reuses the embedding
    (void)l;
#undef T1
#undef T2
#undef T3
#undef T4
    *out = list;
    return n;
}

// ---- opening ------------------------------------------------------------------------------------------------------
static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int cmp_tensor_ptr_by_name(const void *a, const void *b) {
    return strcmp((*(const ot_tensor *const *)a)->name, (*(const ot_tensor *const *)b)->name);
}

static int cmp_expected_by_name(const void *a, const void *b) {
    return strcmp(((const ot_expected_tensor *)a)->name, ((const ot_expected_tensor *)b)->name);
}

static const char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

// A weight_map value must name a file directly inside the checkpoint directory: no separators, no "." / "..".
static int plain_file_name(const char *s) {
    return s[0] && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

// Shards named by model.safetensors.index.json: each opened once, and the index and the files must agree
// exactly (every listed tensor in its file, every tensor of a file listed for that file).
static int open_indexed(ot_checkpoint *ck, const char *index_path, ot_err *err) {
    json_t *root = ot_json_load_file(index_path, err);
    if (!root) return -1;
    int rc = -1;
    char **names = NULL;
    int n_names = 0;
    const json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        ot_fail(err, "%s: no \"weight_map\" object", index_path);
        goto done;
    }
    if (json_object_size(wm) == 0) {
        ot_fail(err, "%s: \"weight_map\" is empty", index_path);
        goto done;
    }
    names = ot_calloc(json_object_size(wm), sizeof(char *));
    const char *tname;
    json_t *fv;
    json_object_foreach((json_t *)wm, tname, fv) {
        const char *f = json_string_value(fv);
        if (!f) {
            ot_fail(err, "%s: weight_map entry for tensor '%s' is not a string", index_path, tname);
            goto done;
        }
        if (!plain_file_name(f)) {
            ot_fail(err, "%s: weight_map entry for tensor '%s' names \"%s\", which is not a file inside the checkpoint directory",
                    index_path, tname, f);
            goto done;
        }
        names[n_names++] = (char *)f;
    }
    qsort(names, (size_t)n_names, sizeof(char *), cmp_str);
    int n_unique = 0;
    for (int i = 0; i < n_names; i++)
        if (n_unique == 0 || strcmp(names[n_unique - 1], names[i]) != 0) names[n_unique++] = names[i];

    ck->files = ot_calloc((size_t)n_unique, sizeof(ot_safetensors));
    for (int i = 0; i < n_unique; i++) {
        char *path = ot_path_join(ck->dir, names[i]);
        ot_err e;
        if (ot_safetensors_open(&ck->files[i], path, &e)) {
            // Name a tensor the index puts there, so the message says why this file was wanted.
            const char *first = "?";
            json_object_foreach((json_t *)wm, tname, fv) {
                if (strcmp(json_string_value(fv), names[i]) == 0) {
                    first = tname;
                    break;
                }
            }
            ot_fail(err, "%s [the index names this shard for tensor '%s' and others]", e.msg, first);
            free(path);
            goto done;
        }
        free(path);
        ck->n_files++;
    }
    // Every listed tensor is in its file.
    json_object_foreach((json_t *)wm, tname, fv) {
        const char *f = json_string_value(fv);
        char **hit = bsearch(&f, names, (size_t)n_unique, sizeof(char *), cmp_str);
        const ot_safetensors *st = &ck->files[hit - names];
        if (!ot_safetensors_find(st, tname)) {
            ot_fail(err, "%s: tensor '%s' is missing (the index %s says it is in this file)", st->path, tname, index_path);
            goto done;
        }
    }
    // Every tensor of a file is listed, and for that file.
    for (int i = 0; i < ck->n_files; i++)
        for (int k = 0; k < ck->files[i].n_tensors; k++) {
            const char *n = ck->files[i].tensors[k].name;
            const char *listed = json_string_value(json_object_get(wm, n));
            if (!listed || strcmp(listed, names[i]) != 0) {
                ot_fail(err, "%s: tensor '%s' is in this file but the index %s %s", ck->files[i].path, n, index_path,
                        listed ? "puts it in another file" : "does not list it");
                goto done;
            }
        }
    rc = 0;
done:
    free(names);
    json_decref(root);
    return rc;
}

int ot_checkpoint_open(ot_checkpoint *ck, const char *dir, ot_err *err) {
    memset(ck, 0, sizeof *ck);
    ck->dir = ot_strdup(dir);
    ot_expected_tensor *expected = NULL;
    char *path = ot_path_join(dir, "config.json");
    int rc = ot_model_config_load(&ck->config, path, err);
    free(path);
    if (rc) goto fail;

    char *index_path = ot_path_join(dir, "model.safetensors.index.json");
    char *single_path = ot_path_join(dir, "model.safetensors");
    if (file_exists(index_path)) {
        rc = open_indexed(ck, index_path, err);
    } else if (file_exists(single_path)) {
        ck->files = ot_calloc(1, sizeof(ot_safetensors));
        rc = ot_safetensors_open(&ck->files[0], single_path, err);
        if (!rc) ck->n_files = 1;
    } else {
        rc = ot_fail(err, "%s: neither model.safetensors.index.json nor model.safetensors is present", dir);
    }
    free(index_path);
    free(single_path);
    if (rc) goto fail;

    // One name-sorted view over all files.
    int total = 0;
    for (int i = 0; i < ck->n_files; i++) total += ck->files[i].n_tensors;
    ck->by_name = ot_calloc((size_t)total + 1, sizeof(const ot_tensor *));
    for (int i = 0; i < ck->n_files; i++)
        for (int k = 0; k < ck->files[i].n_tensors; k++) ck->by_name[ck->n_tensors++] = &ck->files[i].tensors[k];
    qsort(ck->by_name, (size_t)ck->n_tensors, sizeof(const ot_tensor *), cmp_tensor_ptr_by_name);
    for (int i = 1; i < ck->n_tensors; i++)
        if (strcmp(ck->by_name[i - 1]->name, ck->by_name[i]->name) == 0) {
            ot_fail(err, "%s: tensor '%s' appears in both %s and %s", dir, ck->by_name[i]->name, ck->by_name[i - 1]->file,
                    ck->by_name[i]->file);
            goto fail;
        }

    // Which expert form do the files hold? Decided by layer 0, then checked for every layer by the list below.
    const ot_model_config *c = &ck->config;
    if (ot_checkpoint_find(ck, "model.layers.0.mlp.experts.gate_up_proj_blocks")) ck->experts_mxfp4 = 1;
    else if (ot_checkpoint_find(ck, "model.layers.0.mlp.experts.gate_up_proj")) ck->experts_mxfp4 = 0;
    else {
        ot_fail(err, "%s: tensor 'model.layers.0.mlp.experts.gate_up_proj_blocks' is missing (nor is the dequantized "
                     "'model.layers.0.mlp.experts.gate_up_proj' there)", dir);
        goto fail;
    }
    if (ck->experts_mxfp4 && (c->hidden_size % 32 || c->intermediate_size % 32)) {
        ot_fail(err, "%s: MXFP4 experts need hidden_size (%d) and intermediate_size (%d) to be multiples of 32", dir,
                c->hidden_size, c->intermediate_size);
        goto fail;
    }

    int n_expected = ot_gptoss_expected_tensors(c, ck->experts_mxfp4, &expected);
    for (int i = 0; i < n_expected; i++) {
        const ot_expected_tensor *x = &expected[i];
        const ot_tensor *t = ot_checkpoint_find(ck, x->name);
        if (!t) {
            ot_fail(err, "%s: tensor '%s' is missing (config.json implies it)", dir, x->name);
            goto fail;
        }
        int same = t->ndim == x->ndim;
        for (int d = 0; same && d < x->ndim; d++) same = t->shape[d] == x->shape[d];
        if (!same) {
            char a[128], b[128];
            ot_fail(err, "%s: tensor '%s' has shape %s but config.json implies %s", t->file, x->name,
                    shape_str(a, sizeof a, t->ndim, t->shape), shape_str(b, sizeof b, x->ndim, x->shape));
            goto fail;
        }
        int ok = x->kind == OT_TK_U8 ? t->dtype == OT_DT_U8
                                     : (t->dtype == OT_DT_BF16 || t->dtype == OT_DT_F16 || t->dtype == OT_DT_F32);
        if (!ok) {
            ot_fail(err, "%s: tensor '%s' has dtype %s; expected %s", t->file, x->name, ot_dtype_name(t->dtype),
                    x->kind == OT_TK_U8 ? "U8 (MXFP4 blocks/scales)" : "BF16, F16 or F32");
            goto fail;
        }
    }
    if (ck->n_tensors != n_expected) {
        // All expected names were found and names are unique, so the surplus are tensors we do not know.
        qsort(expected, (size_t)n_expected, sizeof *expected, cmp_expected_by_name);
        for (int i = 0; i < ck->n_tensors; i++) {
            ot_expected_tensor key;
            snprintf(key.name, sizeof key.name, "%s", ck->by_name[i]->name);
            if (!bsearch(&key, expected, (size_t)n_expected, sizeof *expected, cmp_expected_by_name)) {
                ot_fail(err, "%s: unexpected tensor '%s' (not part of gpt-oss with this config.json%s)",
                        ck->by_name[i]->file, ck->by_name[i]->name,
                        ck->experts_mxfp4 ? ", MXFP4 experts" : ", dequantized experts");
                goto fail;
            }
        }
    }
    free(expected);
    return 0;

fail:
    free(expected);
    ot_checkpoint_close(ck);
    return -1;
}

void ot_checkpoint_close(ot_checkpoint *ck) {
    for (int i = 0; i < ck->n_files; i++) ot_safetensors_close(&ck->files[i]);
    free(ck->files);
    free(ck->by_name);
    free(ck->dir);
    memset(ck, 0, sizeof *ck);
}

const ot_tensor *ot_checkpoint_find(const ot_checkpoint *ck, const char *name) {
    ot_tensor key = {.name = name};
    const ot_tensor *kp = &key;
    const ot_tensor **hit = bsearch(&kp, ck->by_name, (size_t)ck->n_tensors, sizeof(const ot_tensor *), cmp_tensor_ptr_by_name);
    return hit ? *hit : NULL;
}

float ot_tensor_elem_f32(const ot_tensor *t, size_t i) {
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case OT_DT_BF16: return ot_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
    case OT_DT_F16: return ot_f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
    default: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    }
}

int ot_tensor_to_f32(const ot_tensor *t, float *out, ot_err *err) {
    if (!t) return ot_fail(err, "ot_tensor_to_f32: no tensor");
    const uint8_t *p = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case OT_DT_F32: memcpy(out, p, n * 4); return 0; // little-endian host, like the file
    case OT_DT_BF16:
    case OT_DT_F16:
        for (size_t i = 0; i < n; i++) out[i] = ot_tensor_elem_f32(t, i);
        return 0;
    default:
        return ot_fail(err, "%s: tensor '%s' is %s, not a float type (BF16, F16, F32)", t->file, t->name,
                       ot_dtype_name(t->dtype));
    }
}
