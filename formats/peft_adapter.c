// A LoRA adapter's PEFT files and its layout in memory (see peft_adapter.h).
#include "formats/peft_adapter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"

const char *const ot_lora_target_names[OT_LORA_N_TARGETS] = {"q_proj", "k_proj", "v_proj",
                                                             "o_proj", "gate_up_proj", "down_proj"};

static int is_expert_target(int t) { return t == OT_LORA_GATE_UP || t == OT_LORA_DOWN; }

int ot_lora_parse_targets(ot_lora_spec *spec, const char *list, ot_err *err) {
    spec->targets = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!strcmp(tok, "attn")) spec->targets |= 0xFu;
        else if (!strcmp(tok, "experts")) spec->targets |= (1u << OT_LORA_GATE_UP) | (1u << OT_LORA_DOWN);
        else if (!strcmp(tok, "all")) spec->targets |= 0x3Fu;
        else {
            int found = -1;
            for (int t = 0; t < OT_LORA_N_TARGETS; t++) {
                size_t n = strlen(tok);
                // accept "q" and "q_proj", "gate_up" and "gate_up_proj"
                if (!strcmp(tok, ot_lora_target_names[t]) ||
                    (!strncmp(tok, ot_lora_target_names[t], n) && !strcmp(ot_lora_target_names[t] + n, "_proj")))
                    found = t;
            }
            if (found < 0)
                return ot_fail(err, "unknown LoRA target '%s' (use q,k,v,o,gate_up,down, attn, experts or all)", tok);
            spec->targets |= 1u << found;
        }
    }
    if (!spec->targets) return ot_fail(err, "no LoRA target given");
    return 0;
}

// Shapes of one target in layer l: (n_exp, in, out).
static void target_shape(const ot_model_config *c, int t, int *n_exp, int *in, int *out) {
    int H = c->hidden_size, q = c->num_attention_heads * c->head_dim, kv = c->num_key_value_heads * c->head_dim;
    *n_exp = 1;
    switch (t) {
    case OT_LORA_Q: *in = H, *out = q; break;
    case OT_LORA_K:
    case OT_LORA_V: *in = H, *out = kv; break;
    case OT_LORA_O: *in = q, *out = H; break;
    case OT_LORA_GATE_UP: *n_exp = c->num_local_experts, *in = H, *out = 2 * c->intermediate_size; break;
    default: *n_exp = c->num_local_experts, *in = c->intermediate_size, *out = H; break;
    }
}

void ot_lora_layout(ot_lora *lo, const ot_model_config *c, const unsigned char (*present)[OT_LORA_N_TARGETS]) {
    lo->n_layers = c->num_hidden_layers;
    lo->slots = ot_calloc((size_t)lo->n_layers, sizeof *lo->slots);
    size_t off = 0;
    for (int l = 0; l < lo->n_layers; l++)
        for (int t = 0; t < OT_LORA_N_TARGETS; t++) {
            if (!present[l][t]) continue;
            ot_lora_slot *s = &lo->slots[l][t];
            s->present = 1;
            target_shape(c, t, &s->n_exp, &s->in, &s->out);
            s->a_off = off;
            off += (size_t)s->n_exp * lo->r * s->in;
            s->b_off = off;
            off += (size_t)s->n_exp * s->out * lo->r;
        }
    lo->n_params = off;
    lo->params = ot_calloc(off, sizeof(float));
    lo->grads = ot_calloc(off, sizeof(float));
}

void ot_lora_fill_peft_config(ot_lora *lo, float alpha, int use_rslora) {
    ot_peft_config *p = &lo->peft;
    memset(p, 0, sizeof *p);
    p->r = lo->r;
    p->lora_alpha = alpha;
    p->use_rslora = use_rslora;
    for (int t = 0; t < 4; t++) {
        int any = 0;
        for (int l = 0; l < lo->n_layers; l++) any |= lo->slots[l][t].present;
        if (any) snprintf(p->target_modules[p->n_target_modules++], sizeof p->target_modules[0], "%s", ot_lora_target_names[t]);
    }
    // Expert targets: one entry per parameter when every layer has it, else one per (layer, parameter).
    for (int t = OT_LORA_GATE_UP; t <= OT_LORA_DOWN; t++) {
        int n = 0;
        for (int l = 0; l < lo->n_layers; l++) n += lo->slots[l][t].present;
        if (n == lo->n_layers) {
            snprintf(p->target_parameters[p->n_target_parameters++], sizeof p->target_parameters[0], "mlp.experts.%s",
                     ot_lora_target_names[t]);
        } else {
            for (int l = 0; l < lo->n_layers && p->n_target_parameters < OT_PEFT_MAX_TARGETS; l++)
                if (lo->slots[l][t].present)
                    snprintf(p->target_parameters[p->n_target_parameters++], sizeof p->target_parameters[0],
                             "%d.mlp.experts.%s", l, ot_lora_target_names[t]);
        }
    }
}

// ---- PEFT files ------------------------------------------------------------------------------------------------
#define PEFT_PREFIX "base_model.model.model.layers."

static void attn_key(char *buf, size_t n, int l, int t, char ab) {
    snprintf(buf, n, PEFT_PREFIX "%d.self_attn.%s.lora_%c.weight", l, ot_lora_target_names[t], ab);
}

// peft nests two ParamWrappers when both expert parameters are targeted; the one listed first in
// target_parameters sits under `base_layer`. With only one of them the key has no `base_layer`.
static void expert_key(char *buf, size_t n, int l, int nested, char ab) {
    snprintf(buf, n, PEFT_PREFIX "%d.mlp.experts.%slora_%c.weight", l, nested ? "base_layer." : "", ab);
}

// Position of the first target_parameters entry naming this expert parameter, or a large number.
static int param_order(const ot_peft_config *p, int t) {
    for (int i = 0; i < p->n_target_parameters; i++) {
        const char *s = p->target_parameters[i];
        size_t n = strlen(s), m = strlen(ot_lora_target_names[t]);
        if (n >= m && !strcmp(s + n - m, ot_lora_target_names[t])) return i;
    }
    return 1 << 20;
}

int ot_lora_load_peft(ot_lora *lo, const ot_model_config *c, const char *dir, ot_err *err) {
    memset(lo, 0, sizeof *lo);
    char path[4096], key[256];
    static const char *const files[2] = {"adapter_config.json", "adapter_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (access(path, R_OK) != 0)
            return ot_fail(err, "%s is not a PEFT adapter directory: %s: %s (an adapter directory holds "
                           "adapter_config.json and adapter_model.safetensors, such as run/ckpt/step-N)",
                           dir, path, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (ot_peft_config_read(&lo->peft, path, err)) return -1;
    lo->r = lo->peft.r;
    lo->scale = ot_peft_scaling(&lo->peft);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    ot_safetensors st;
    if (ot_safetensors_open(&st, path, err)) {
        ot_lora_free(lo);
        return -1;
    }

    const int L = c->num_hidden_layers, r = lo->r;
    // A layer past the base's layers means the adapter belongs to another model: say that, rather than report the
    // tensor as one osstune does not support.
    for (int i = 0; i < st.n_tensors; i++) {
        const char *at = strstr(st.tensors[i].name, ".layers.");
        if (at && atoi(at + 8) >= L) {
            ot_fail(err, "%s: tensor '%s' adapts layer %d, but the base model has %d layers: the adapter was trained "
                    "on a different base model", path, st.tensors[i].name, atoi(at + 8), L);
            ot_safetensors_close(&st);
            ot_lora_free(lo);
            return -1;
        }
    }
    unsigned char (*present)[OT_LORA_N_TARGETS] = ot_calloc((size_t)L, sizeof *present);
    // For each layer's expert wrappers: which target sits at which nesting (index 0 = plain, 1 = base_layer).
    int (*expert_at)[2] = ot_calloc((size_t)L, sizeof *expert_at);
    int used = 0;
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < 4; t++) {
            attn_key(key, sizeof key, l, t, 'A');
            present[l][t] = ot_safetensors_find(&st, key) != NULL;
        }
        for (int nested = 0; nested < 2; nested++) {
            expert_at[l][nested] = -1;
            expert_key(key, sizeof key, l, nested, 'B');
            const ot_tensor *b = ot_safetensors_find(&st, key);
            if (!b) continue;
            // Tell gate_up from down by B's rows (2I vs H); when equal, by target_parameters order.
            int t;
            if (b->ndim == 2 && b->shape[0] == 2 * c->intermediate_size && 2 * c->intermediate_size != c->hidden_size)
                t = OT_LORA_GATE_UP;
            else if (b->ndim == 2 && b->shape[0] == c->hidden_size && 2 * c->intermediate_size != c->hidden_size)
                t = OT_LORA_DOWN;
            else {
                int first = param_order(&lo->peft, OT_LORA_GATE_UP) <= param_order(&lo->peft, OT_LORA_DOWN)
                                ? OT_LORA_GATE_UP
                                : OT_LORA_DOWN;
                t = nested ? first : (first == OT_LORA_GATE_UP ? OT_LORA_DOWN : OT_LORA_GATE_UP);
            }
            expert_at[l][nested] = t;
            present[l][t] = 1;
        }
    }
    ot_lora_layout(lo, c, (const unsigned char (*)[OT_LORA_N_TARGETS])present);

    int rc = 0;
    for (int l = 0; l < L && !rc; l++)
        for (int t = 0; t < OT_LORA_N_TARGETS && !rc; t++) {
            const ot_lora_slot *s = &lo->slots[l][t];
            if (!s->present) continue;
            int nested = is_expert_target(t) ? (expert_at[l][1] == t) : 0;
            for (int which = 0; which < 2 && !rc; which++) {
                char ab = which ? 'B' : 'A';
                if (is_expert_target(t)) expert_key(key, sizeof key, l, nested, ab);
                else attn_key(key, sizeof key, l, t, ab);
                const ot_tensor *x = ot_safetensors_find(&st, key);
                // PEFT shapes: A [r·E, in], B [out, r·E]
                int64_t want0 = which ? s->out : (int64_t)r * s->n_exp, want1 = which ? (int64_t)r * s->n_exp : s->in;
                if (!x) {
                    rc = ot_fail(err, "%s: tensor '%s' is missing (its partner is present)", path, key);
                    break;
                }
                if (x->ndim != 2 || x->shape[0] != want0 || x->shape[1] != want1) {
                    rc = ot_fail(err, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld] for r=%d on this "
                                 "model (does the adapter belong to a different base model?)",
                                 path, key, (long long)x->shape[0], (long long)(x->ndim > 1 ? x->shape[1] : -1),
                                 (long long)want0, (long long)want1, r);
                    break;
                }
                size_t n = (size_t)x->numel;
                float *tmp = ot_malloc(n * sizeof(float));
                if (ot_tensor_to_f32(x, tmp, err)) {
                    free(tmp);
                    rc = -1;
                    break;
                }
                if (!which) {
                    memcpy(lo->params + s->a_off, tmp, n * sizeof(float)); // [E, r, in] either way
                } else {
                    // [out, r, E] (expert-minor) → ours [E, out, r]
                    float *B = lo->params + s->b_off;
                    int E = s->n_exp;
                    for (int e = 0; e < E; e++)
                        for (int o = 0; o < s->out; o++)
                            for (int k = 0; k < r; k++)
                                B[((size_t)e * s->out + o) * r + k] = tmp[(size_t)o * r * E + (size_t)k * E + e];
                }
                free(tmp);
                used += 1;
            }
        }
    if (!rc && used != st.n_tensors) {
        // Something in the file we do not understand (LoRA on lm_head, the router, embeddings, a DoRA magnitude...).
        for (int i = 0; i < st.n_tensors; i++) {
            const char *nm = st.tensors[i].name;
            int known = 0;
            for (int l = 0; l < L && !known; l++)
                for (int t = 0; t < OT_LORA_N_TARGETS && !known; t++)
                    for (int which = 0; which < 2 && !known; which++) {
                        char k2[256];
                        if (is_expert_target(t)) expert_key(k2, sizeof k2, l, expert_at[l][1] == t, which ? 'B' : 'A');
                        else attn_key(k2, sizeof k2, l, t, which ? 'B' : 'A');
                        known = lo->slots[l][t].present && !strcmp(k2, nm);
                    }
            if (!known) {
                rc = ot_fail(err, "%s: tensor '%s' is not a LoRA factor osstune supports (q/k/v/o_proj and the expert "
                             "gate_up_proj/down_proj of a gpt-oss model)", path, nm);
                break;
            }
        }
    }
    free(present);
    free(expert_at);
    ot_safetensors_close(&st);
    if (rc) ot_lora_free(lo);
    return rc;
}

int ot_lora_save_peft(const ot_lora *lo, const char *dir, ot_err *err) {
    const int L = lo->n_layers, r = lo->r;
    ot_st_writer *w = ot_st_writer_new();
    // The transposed expert B factors need their own storage until the writer finishes.
    float *scratch = ot_malloc(lo->n_params * sizeof(float));
    char(*names)[256] = ot_calloc((size_t)L * OT_LORA_N_TARGETS * 2, sizeof *names);
    int n_names = 0;
    int first = param_order(&lo->peft, OT_LORA_GATE_UP) <= param_order(&lo->peft, OT_LORA_DOWN) ? OT_LORA_GATE_UP
                                                                                                  : OT_LORA_DOWN;
    for (int l = 0; l < L; l++) {
        int both = lo->slots[l][OT_LORA_GATE_UP].present && lo->slots[l][OT_LORA_DOWN].present;
        for (int t = 0; t < OT_LORA_N_TARGETS; t++) {
            const ot_lora_slot *s = &lo->slots[l][t];
            if (!s->present) continue;
            for (int which = 0; which < 2; which++) {
                char *key = names[n_names++];
                if (is_expert_target(t)) expert_key(key, 256, l, both && t == first, which ? 'B' : 'A');
                else attn_key(key, 256, l, t, which ? 'B' : 'A');
                int64_t shape[2];
                const float *src;
                if (!which) {
                    shape[0] = (int64_t)r * s->n_exp;
                    shape[1] = s->in;
                    src = lo->params + s->a_off;
                } else {
                    shape[0] = s->out;
                    shape[1] = (int64_t)r * s->n_exp;
                    float *dst = scratch + s->b_off;
                    const float *B = lo->params + s->b_off;
                    int E = s->n_exp;
                    for (int e = 0; e < E; e++)
                        for (int o = 0; o < s->out; o++)
                            for (int k = 0; k < r; k++)
                                dst[(size_t)o * r * E + (size_t)k * E + e] = B[((size_t)e * s->out + o) * r + k];
                    src = dst;
                }
                ot_st_writer_add(w, key, OT_DT_F32, 2, shape, src);
            }
        }
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    int rc = ot_st_writer_finish(w, path, err);
    free(scratch);
    free(names);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    return ot_peft_config_write(&lo->peft, path, err);
}

void ot_lora_free(ot_lora *lo) {
    free(lo->slots);
    free(lo->params);
    free(lo->grads);
    memset(lo, 0, sizeof *lo);
}
