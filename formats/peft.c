// adapter_config.json (spec §6.5), the half of a PEFT LoRA adapter that is not tensors. osstune trains LoRA on
// the attention projections (target_modules) and on the expert parameters (target_parameters, peft's
// ParamWrapper); anything a config asks for beyond that is refused here, by name, rather than ignored.
#include "formats/peft.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "formats/json_util.h"

float ot_peft_scaling(const ot_peft_config *c) {
    return c->use_rslora ? c->lora_alpha / sqrtf((float)c->r) : c->lora_alpha / (float)c->r;
}

// The Linear modules osstune can carry LoRA on ("all-linear" in gpt-oss is exactly these, spec §6.5).
static const char *const linear_modules[] = {"q_proj", "k_proj", "v_proj", "o_proj"};

static int is_linear_module(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, linear_modules[i]) == 0) return 1;
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// Layer index of a full module name "model.layers.7.self_attn.q_proj" (-1 when the name has none).
static int layer_of(const char *s) {
    const char *p = strstr(s, "layers.");
    if (!p) return -1;
    p += 7;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end != '.' || v < 0 || v >= 100000) return -1;
    return (int)v;
}

// target_modules as a list. peft itself saves "all-linear" expanded into full names, one per layer and module
// ("model.layers.1.self_attn.q_proj"); osstune applies a module to every layer, so a list of full names is
// accepted only when every module covers the same layers 0..L-1 (then it means "all layers").
static int read_module_list(ot_peft_config *c, const json_t *list, const char *path, ot_err *err) {
    enum { MAXL = 4096 };
    unsigned char seen[4][MAXL]; // 16 KiB on the stack
    memset(seen, 0, sizeof seen);
    int any_layered = 0, any_plain = 0, max_layer = -1;
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v) {
        const char *s = json_string_value(v);
        if (!s) return ot_fail(err, "%s: target_modules[%zu] is not a string", path, i);
        const char *dot = strrchr(s, '.');
        const char *leaf = dot ? dot + 1 : s;
        if (!is_linear_module(leaf))
            return ot_fail(err, "%s: target_modules entry \"%s\" is not supported (osstune puts LoRA on q_proj, k_proj, "
                                "v_proj, o_proj; experts go through target_parameters)", path, s);
        int m = 0;
        while (strcmp(linear_modules[m], leaf) != 0) m++;
        int l = layer_of(s);
        if (l >= MAXL) return ot_fail(err, "%s: target_modules entry \"%s\": layer index too large", path, s);
        if (l >= 0) {
            any_layered = 1;
            seen[m][l] = 1;
            if (l > max_layer) max_layer = l;
        } else {
            any_plain = 1;
        }
        int dup = 0;
        for (int k = 0; k < c->n_target_modules; k++) dup |= strcmp(c->target_modules[k], leaf) == 0;
        if (!dup) snprintf(c->target_modules[c->n_target_modules++], sizeof c->target_modules[0], "%s", leaf);
    }
    if (any_layered && any_plain)
        return ot_fail(err, "%s: target_modules mixes per-layer names and plain module names; not supported", path);
    if (any_layered)
        for (int k = 0; k < c->n_target_modules; k++) {
            int m = 0;
            while (strcmp(linear_modules[m], c->target_modules[k]) != 0) m++;
            for (int l = 0; l <= max_layer; l++)
                if (!seen[m][l])
                    return ot_fail(err,
                                   "%s: target_modules names %s in some layers but not in layer %d; osstune applies "
                                   "LoRA to a module in every layer",
                                   path, c->target_modules[k], l);
        }
    return 0;
}

int ot_peft_config_read(ot_peft_config *c, const char *path, ot_err *err) {
    memset(c, 0, sizeof *c);
    json_t *root = ot_json_load_file(path, err);
    if (!root) return -1;
    int rc = -1;
    if (!json_is_object(root)) {
        ot_fail(err, "%s: not a JSON object", path);
        goto done;
    }
    const char *pt = json_string_value(json_object_get(root, "peft_type"));
    if (pt && strcmp(pt, "LORA") != 0) {
        ot_fail(err, "%s: peft_type is \"%s\", not \"LORA\"", path, pt);
        goto done;
    }
    if (!json_is_integer(json_object_get(root, "r"))) {
        ot_fail(err, "%s: \"r\" (the LoRA rank) is missing or not an integer", path);
        goto done;
    }
    if (ot_json_get_int(root, "r", &c->r, path, err)) goto done;
    if (c->r <= 0) {
        ot_fail(err, "%s: \"r\" = %d must be positive", path, c->r);
        goto done;
    }
    c->lora_alpha = 8.0f; // peft's default
    if (ot_json_get_float(root, "lora_alpha", &c->lora_alpha, path, err)) goto done;
    if (ot_json_get_bool(root, "use_rslora", &c->use_rslora, path, err)) goto done;

    // Options that change what the adapter computes and that osstune does not implement.
    int dora = 0, lora_bias = 0;
    if (ot_json_get_bool(root, "use_dora", &dora, path, err)) goto done;
    if (ot_json_get_bool(root, "lora_bias", &lora_bias, path, err)) goto done;
    const char *bias = json_string_value(json_object_get(root, "bias"));
    const json_t *rp = json_object_get(root, "rank_pattern"), *ap = json_object_get(root, "alpha_pattern");
    const json_t *ltt = json_object_get(root, "layers_to_transform"), *mts = json_object_get(root, "modules_to_save");
    const char *unsupported = dora                                        ? "use_dora"
                              : lora_bias                                 ? "lora_bias"
                              : (bias && strcmp(bias, "none") != 0)       ? "bias"
                              : (json_is_object(rp) && json_object_size(rp)) ? "rank_pattern"
                              : (json_is_object(ap) && json_object_size(ap)) ? "alpha_pattern"
                              : (ltt && !json_is_null(ltt))               ? "layers_to_transform"
                              : (json_is_array(mts) && json_array_size(mts)) ? "modules_to_save"
                                                                          : NULL;
    if (unsupported) {
        ot_fail(err, "%s: \"%s\" is set; osstune does not support it", path, unsupported);
        goto done;
    }

    const json_t *tm = json_object_get(root, "target_modules");
    if (json_is_string(tm)) {
        const char *s = json_string_value(tm);
        if (strcmp(s, "all-linear") == 0) {
            for (int i = 0; i < 4; i++) snprintf(c->target_modules[i], sizeof c->target_modules[0], "%s", linear_modules[i]);
            c->n_target_modules = 4;
        } else if (is_linear_module(s)) {
            snprintf(c->target_modules[0], sizeof c->target_modules[0], "%s", s);
            c->n_target_modules = 1;
        } else {
            // peft reads any other string as a regular expression over full module names.
            ot_fail(err, "%s: target_modules \"%s\" is a regular expression; osstune needs a list of module names or "
                         "\"all-linear\"", path, s);
            goto done;
        }
    } else if (json_is_array(tm)) {
        if (read_module_list(c, tm, path, err)) goto done;
    } else if (tm && !json_is_null(tm)) {
        ot_fail(err, "%s: target_modules must be a list, a string or null", path);
        goto done;
    }

    const json_t *tp = json_object_get(root, "target_parameters");
    if (json_is_array(tp)) {
        size_t i;
        const json_t *v;
        json_array_foreach(tp, i, v) {
            const char *s = json_string_value(v);
            if (!s) {
                ot_fail(err, "%s: target_parameters[%zu] is not a string", path, i);
                goto done;
            }
            if (!ends_with(s, "mlp.experts.gate_up_proj") && !ends_with(s, "mlp.experts.down_proj")) {
                ot_fail(err, "%s: target_parameters entry \"%s\" is not an expert parameter "
                             "(…mlp.experts.gate_up_proj or …mlp.experts.down_proj)", path, s);
                goto done;
            }
            if (c->n_target_parameters == OT_PEFT_MAX_TARGETS) {
                ot_fail(err, "%s: more than %d target_parameters", path, OT_PEFT_MAX_TARGETS);
                goto done;
            }
            if (strlen(s) >= sizeof c->target_parameters[0]) {
                ot_fail(err, "%s: target_parameters entry \"%s\" is too long", path, s);
                goto done;
            }
            snprintf(c->target_parameters[c->n_target_parameters++], sizeof c->target_parameters[0], "%s", s);
        }
    } else if (tp && !json_is_null(tp)) {
        ot_fail(err, "%s: target_parameters must be a list or null", path);
        goto done;
    }
    if (c->n_target_modules == 0 && c->n_target_parameters == 0) {
        ot_fail(err, "%s: neither target_modules nor target_parameters names anything to adapt", path);
        goto done;
    }

    const json_t *base = json_object_get(root, "base_model_name_or_path");
    if (json_is_string(base)) {
        if (strlen(json_string_value(base)) >= sizeof c->base_model_name_or_path) {
            ot_fail(err, "%s: base_model_name_or_path is too long", path);
            goto done;
        }
        snprintf(c->base_model_name_or_path, sizeof c->base_model_name_or_path, "%s", json_string_value(base));
    } else if (base && !json_is_null(base)) {
        ot_fail(err, "%s: base_model_name_or_path must be a string or null", path);
        goto done;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

int ot_peft_config_write(const ot_peft_config *c, const char *path, ot_err *err) {
    if (c->r <= 0) return ot_fail(err, "%s: cannot write an adapter config with r = %d", path, c->r);
    if (c->n_target_modules < 0 || c->n_target_modules > OT_PEFT_MAX_TARGETS || c->n_target_parameters < 0 ||
        c->n_target_parameters > OT_PEFT_MAX_TARGETS)
        return ot_fail(err, "%s: target counts out of range", path);
    // Every key peft 0.21's LoraConfig saves, with the same JSON types, so peft and other readers that expect
    // the full key set load it. peft_version is left out: peft fills in its own version when absent, and this
    // file was not written by peft.
    json_t *j = json_object();
    json_t *tm = json_array(), *tp = json_array();
    for (int i = 0; i < c->n_target_modules; i++) json_array_append_new(tm, json_string(c->target_modules[i]));
    for (int i = 0; i < c->n_target_parameters; i++) json_array_append_new(tp, json_string(c->target_parameters[i]));
    json_object_set_new(j, "target_modules", c->n_target_modules ? tm : json_null());
    if (!c->n_target_modules) json_decref(tm);
    json_object_set_new(j, "target_parameters", c->n_target_parameters ? tp : json_null());
    if (!c->n_target_parameters) json_decref(tp);
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(j, "r", json_integer(c->r));
    // An integral alpha is written as an integer, as Python writes lora_alpha=16.
    if (c->lora_alpha == floorf(c->lora_alpha) && fabsf(c->lora_alpha) < 1e9f)
        json_object_set_new(j, "lora_alpha", json_integer((json_int_t)c->lora_alpha));
    else
        json_object_set_new(j, "lora_alpha", ot_json_real_from_float(c->lora_alpha));
    json_object_set_new(j, "use_rslora", json_boolean(c->use_rslora));
    json_object_set_new(j, "base_model_name_or_path",
                        c->base_model_name_or_path[0] ? json_string(c->base_model_name_or_path) : json_null());
    json_object_set_new(j, "lora_dropout", json_real(0.0));
    json_object_set_new(j, "bias", json_string("none"));
    json_object_set_new(j, "fan_in_fan_out", json_false());
    json_object_set_new(j, "inference_mode", json_true());
    json_object_set_new(j, "init_lora_weights", json_true());
    json_object_set_new(j, "lora_bias", json_false());
    json_object_set_new(j, "use_dora", json_false());
    json_object_set_new(j, "use_qalora", json_false());
    json_object_set_new(j, "qalora_group_size", json_integer(16));
    json_object_set_new(j, "ensure_weight_tying", json_false());
    json_object_set_new(j, "megatron_core", json_string("megatron.core"));
    json_object_set_new(j, "alpha_pattern", json_object());
    json_object_set_new(j, "rank_pattern", json_object());
    json_object_set_new(j, "loftq_config", json_object());
    static const char *const null_keys[] = {
        "alora_invocation_tokens", "arrow_config", "auto_mapping", "corda_config", "eva_config", "exclude_modules",
        "kasa_config", "layer_replication", "layers_pattern", "layers_to_transform", "lora_ga_config",
        "megatron_config", "modules_to_save", "monteclora_config", "revision", "trainable_token_indices",
        "use_bdlora", "velora_config",
    };
    for (size_t i = 0; i < sizeof null_keys / sizeof null_keys[0]; i++) json_object_set_new(j, null_keys[i], json_null());
    char *text = ot_json_dump_pretty(j);
    json_decref(j);
    int rc = ot_write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}
