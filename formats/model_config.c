// gpt-oss config.json (spec §1). Defaults follow transformers' GptOssConfig where a key is absent, except where
// the class default is not gpt-oss's (the class defaults to the 120b's 36 layers / 128 experts; we default to
// the 20b values only through presets, and require the size keys to be present in a file).
#include "formats/model_config.h"
#include "formats/fileio.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "formats/json_util.h"

// Even layers slide, odd layers see everything (GptOssConfig's default layer_types).
static void default_layer_types(ot_model_config *c) {
    for (int l = 0; l < OT_MAX_LAYERS; l++) c->layer_sliding[l] = (l % 2 == 0);
}

// Values shared by every preset and by a config.json that leaves them out.
static void set_common_defaults(ot_model_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 201088;
    c->hidden_size = 2880;
    c->num_attention_heads = 64;
    c->num_key_value_heads = 8;
    c->head_dim = 64;
    c->num_experts_per_tok = 4;
    c->intermediate_size = 2880;
    c->swiglu_limit = 7.0f;
    c->swiglu_alpha = 1.702f;
    c->rms_norm_eps = 1e-5f;
    c->sliding_window = 128;
    c->max_position_embeddings = 131072;
    c->initial_context_length = 4096;
    default_layer_types(c);
    c->rope.theta = 150000.0;
    c->rope.factor = 32.0;
    c->rope.beta_fast = 32.0;
    c->rope.beta_slow = 1.0;
    c->rope.original_max_position_embeddings = 4096;
    c->rope.truncate = 0;
    c->rope.attention_factor = 0; // the YaRN default 0.1·ln(factor) + 1
    c->attention_bias = 1;
    c->tie_word_embeddings = 0;
    c->pad_token_id = 199999; // <|endoftext|>
    c->eos_token_id = 200002; // <|return|>
    c->bos_token_id = 199998; // <|startoftext|>
    c->experts_mxfp4 = 1;
    c->initializer_range = 0.02f;
}

int ot_model_config_preset(ot_model_config *c, const char *preset, ot_err *err) {
    set_common_defaults(c);
    if (strcmp(preset, "20b") == 0) {
        c->num_hidden_layers = 24;
        c->num_local_experts = 32;
    } else if (strcmp(preset, "120b") == 0) {
        c->num_hidden_layers = 36;
        c->num_local_experts = 128;
    } else if (strcmp(preset, "tiny") == 0) {
        // The real vocabulary (so the real tokenizer works), everything else small enough for CPU tests.
        c->hidden_size = 64;
        c->num_hidden_layers = 4;
        c->num_attention_heads = 4;
        c->num_key_value_heads = 2;
        c->head_dim = 16;
        c->num_local_experts = 8;
        c->num_experts_per_tok = 2;
        c->intermediate_size = 64;
        c->sliding_window = 32;
    } else {
        return ot_fail(err, "unknown model preset '%s' (known: tiny, 20b, 120b)", preset);
    }
    return ot_model_config_validate(c, err);
}

int ot_model_config_validate(const ot_model_config *c, ot_err *err) {
    struct {
        const char *key;
        int v;
    } positive[] = {
        {"vocab_size", c->vocab_size},
        {"hidden_size", c->hidden_size},
        {"num_hidden_layers", c->num_hidden_layers},
        {"num_attention_heads", c->num_attention_heads},
        {"num_key_value_heads", c->num_key_value_heads},
        {"head_dim", c->head_dim},
        {"num_local_experts", c->num_local_experts},
        {"num_experts_per_tok", c->num_experts_per_tok},
        {"intermediate_size", c->intermediate_size},
        {"max_position_embeddings", c->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++)
        if (positive[i].v <= 0) return ot_fail(err, "config: %s = %d must be positive", positive[i].key, positive[i].v);
    if (c->num_hidden_layers > OT_MAX_LAYERS)
        return ot_fail(err, "config: num_hidden_layers = %d exceeds the supported maximum %d", c->num_hidden_layers, OT_MAX_LAYERS);
    // Upper bounds far above any gpt-oss (the 120b: vocabulary 201,088, hidden 2880, 128 experts), low enough that
    // no product of sizes the code forms can overflow, so a corrupt number is refused here rather than becoming a
    // huge allocation or a wrapped index later.
    const struct {
        const char *key;
        int v, max;
    } bounded[] = {
        {"vocab_size", c->vocab_size, 1 << 24},
        {"hidden_size", c->hidden_size, 1 << 16},
        {"num_attention_heads", c->num_attention_heads, 1 << 10},
        {"head_dim", c->head_dim, 1 << 12},
        {"num_local_experts", c->num_local_experts, 1 << 12},
        {"intermediate_size", c->intermediate_size, 1 << 18},
        {"max_position_embeddings", c->max_position_embeddings, 1 << 24},
        {"sliding_window", c->sliding_window, 1 << 24},
        {"initial_context_length", c->initial_context_length, 1 << 24},
        {"original_max_position_embeddings", c->rope.original_max_position_embeddings, 1 << 24},
    };
    for (size_t i = 0; i < sizeof bounded / sizeof bounded[0]; i++)
        if (bounded[i].v < 0 || bounded[i].v > bounded[i].max)
            return ot_fail(err, "config: %s = %d is outside 0..%d", bounded[i].key, bounded[i].v, bounded[i].max);
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return ot_fail(err, "config: num_attention_heads = %d is not a multiple of num_key_value_heads = %d",
                       c->num_attention_heads, c->num_key_value_heads);
    if ((int64_t)c->num_attention_heads * c->head_dim > INT_MAX / 4)
        return ot_fail(err, "config: num_attention_heads × head_dim = %lld is too large",
                       (long long)c->num_attention_heads * c->head_dim);
    if (c->head_dim % 2 != 0) return ot_fail(err, "config: head_dim = %d must be even (RoPE rotates pairs)", c->head_dim);
    if (c->num_experts_per_tok > c->num_local_experts)
        return ot_fail(err, "config: num_experts_per_tok = %d exceeds num_local_experts = %d", c->num_experts_per_tok,
                       c->num_local_experts);
    if (c->experts_mxfp4 && (c->hidden_size % 32 != 0 || c->intermediate_size % 32 != 0))
        return ot_fail(err,
                       "config: MXFP4 experts need hidden_size (%d) and intermediate_size (%d) to be multiples of 32 "
                       "(one scale per 32 inputs)",
                       c->hidden_size, c->intermediate_size);
    // Real numbers: finite (a NaN fails every comparison, so each test is written to let only good values pass).
    if (!(c->rms_norm_eps > 0 && c->rms_norm_eps < 1))
        return ot_fail(err, "config: rms_norm_eps = %g must be between 0 and 1", (double)c->rms_norm_eps);
    if (!(c->swiglu_limit > 0 && isfinite(c->swiglu_limit)))
        return ot_fail(err, "config: swiglu_limit = %g must be positive", (double)c->swiglu_limit);
    if (!(c->initializer_range >= 0 && isfinite(c->initializer_range)))
        return ot_fail(err, "config: initializer_range = %g must be >= 0", (double)c->initializer_range);
    if (!(c->rope.theta > 1 && isfinite(c->rope.theta)))
        return ot_fail(err, "config: rope_theta = %g must be greater than 1 (RoPE divides by its logarithm)", c->rope.theta);
    if (!(c->rope.factor >= 1 && isfinite(c->rope.factor)))
        return ot_fail(err, "config: rope factor = %g must be >= 1", c->rope.factor);
    if (!(c->rope.attention_factor >= 0 && isfinite(c->rope.attention_factor)))
        return ot_fail(err, "config: rope attention_factor = %g must be positive (or absent for the default)",
                       c->rope.attention_factor);
    if (c->rope.factor > 1) { // YaRN: the correction range takes logarithms of these
        if (c->rope.original_max_position_embeddings <= 0)
            return ot_fail(err, "config: YaRN needs original_max_position_embeddings > 0 (got %d)",
                           c->rope.original_max_position_embeddings);
        if (!(c->rope.beta_fast > 0 && isfinite(c->rope.beta_fast)) || !(c->rope.beta_slow > 0 && isfinite(c->rope.beta_slow)))
            return ot_fail(err, "config: rope beta_fast = %g and beta_slow = %g must be positive", c->rope.beta_fast,
                           c->rope.beta_slow);
        if (!(c->rope.beta_fast > c->rope.beta_slow))
            return ot_fail(err, "config: rope beta_fast = %g must be greater than beta_slow = %g (YaRN's ramp runs from "
                           "the fast to the slow boundary)", c->rope.beta_fast, c->rope.beta_slow);
    }
    int any_sliding = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) any_sliding |= c->layer_sliding[l];
    if (any_sliding && c->sliding_window <= 0)
        return ot_fail(err, "config: layer_types has sliding_attention layers but sliding_window = %d", c->sliding_window);
    const struct {
        const char *key;
        int v;
    } ids[] = {{"pad_token_id", c->pad_token_id}, {"eos_token_id", c->eos_token_id}, {"bos_token_id", c->bos_token_id}};
    for (int i = 0; i < 3; i++)
        if (ids[i].v < -1 || ids[i].v >= c->vocab_size)
            return ot_fail(err, "config: %s = %d is outside the vocabulary (0..%d, or none)", ids[i].key, ids[i].v,
                           c->vocab_size - 1);
    return 0;
}

// ---- parsing ----------------------------------------------------------------------------------------------------
// A token id key: an int, a list of ints (the first is taken: that is the one generation stops on first and the
// one the trainer needs), or null (= -1, none).
static int get_token_id(const json_t *root, const char *key, int *out, const char *what, ot_err *err) {
    const json_t *v = json_object_get(root, key);
    if (!v) return 0;
    if (json_is_null(v)) {
        *out = -1;
        return 0;
    }
    if (json_is_array(v)) {
        if (json_array_size(v) == 0) {
            *out = -1;
            return 0;
        }
        v = json_array_get(v, 0);
    }
    if (!json_is_integer(v)) return ot_fail(err, "%s: \"%s\" must be an integer, a list of integers or null", what, key);
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > INT_MAX) return ot_fail(err, "%s: \"%s\" = %lld is out of range", what, key, (long long)x);
    *out = (int)x;
    return 0;
}

// An int setting spelled two ways (HF's attribute_map aliases): either key, or both with the same value.
static int get_int_alias(const json_t *root, const char *key, const char *alias, int *out, const char *what, ot_err *err) {
    int a = *out, b = *out;
    if (ot_json_get_int(root, key, &a, what, err) || ot_json_get_int(root, alias, &b, what, err)) return -1;
    const json_t *ka = json_object_get(root, key), *kb = json_object_get(root, alias);
    int has_a = ka && !json_is_null(ka), has_b = kb && !json_is_null(kb);
    if (has_a && has_b && a != b)
        return ot_fail(err, "%s: \"%s\" = %d and \"%s\" = %d disagree (they name the same setting; keep one)", what,
                       key, a, alias, b);
    *out = has_a ? a : b;
    return 0;
}

// Rope parameters from one object (rope_parameters or rope_scaling). HF's YaRN defaults apply for missing
// keys: beta_fast 32, beta_slow 1, truncate true, factor = max_position / original_max_position.
static int parse_rope_object(ot_model_config *c, const json_t *rp, const char *key, const char *what, ot_err *err) {
    char sub[256];
    snprintf(sub, sizeof sub, "%s: \"%s\"", what, key);
    if (!json_is_object(rp)) return ot_fail(err, "%s must be an object", sub);
    const json_t *type = json_object_get(rp, "rope_type");
    if (!type) type = json_object_get(rp, "type"); // the older spelling
    const char *t = json_is_string(type) ? json_string_value(type) : NULL;
    if (!t) {
        // Nested per-layer-type parameters (keys sliding_attention / full_attention) are another shape entirely.
        if (json_object_get(rp, "sliding_attention") || json_object_get(rp, "full_attention"))
            return ot_fail(err, "%s: per-layer-type rope parameters are not supported", sub);
        t = "default";
    }
    if (ot_json_get_double(rp, "rope_theta", &c->rope.theta, sub, err)) return -1;
    if (strcmp(t, "default") == 0) {
        c->rope.factor = 1.0;
        c->rope.attention_factor = 0;
        return 0;
    }
    if (strcmp(t, "yarn") != 0) return ot_fail(err, "%s: rope_type \"%s\" is not supported (gpt-oss uses yarn)", sub, t);
    c->rope.original_max_position_embeddings = c->max_position_embeddings;
    if (ot_json_get_int(rp, "original_max_position_embeddings", &c->rope.original_max_position_embeddings, sub, err)) return -1;
    c->rope.factor = 0;
    if (ot_json_get_double(rp, "factor", &c->rope.factor, sub, err)) return -1;
    if (c->rope.factor == 0 && c->rope.original_max_position_embeddings > 0)
        c->rope.factor = (double)c->max_position_embeddings / c->rope.original_max_position_embeddings;
    // HF uses `value or default`, so an explicit 0 also means the default.
    c->rope.beta_fast = 0;
    c->rope.beta_slow = 0;
    if (ot_json_get_double(rp, "beta_fast", &c->rope.beta_fast, sub, err)) return -1;
    if (ot_json_get_double(rp, "beta_slow", &c->rope.beta_slow, sub, err)) return -1;
    if (c->rope.beta_fast == 0) c->rope.beta_fast = 32;
    if (c->rope.beta_slow == 0) c->rope.beta_slow = 1;
    c->rope.truncate = 1;
    if (ot_json_get_bool(rp, "truncate", &c->rope.truncate, sub, err)) return -1;
    c->rope.attention_factor = 0;
    if (ot_json_get_double(rp, "attention_factor", &c->rope.attention_factor, sub, err)) return -1;
    double mscale = 0, mscale_all_dim = 0;
    if (ot_json_get_double(rp, "mscale", &mscale, sub, err)) return -1;
    if (ot_json_get_double(rp, "mscale_all_dim", &mscale_all_dim, sub, err)) return -1;
    if (c->rope.attention_factor <= 0 && mscale != 0 && mscale_all_dim != 0 && c->rope.factor > 1) {
        // HF: get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        double l = log(c->rope.factor);
        c->rope.attention_factor = (0.1 * mscale * l + 1.0) / (0.1 * mscale_all_dim * l + 1.0);
    }
    return 0;
}

int ot_model_config_parse(ot_model_config *c, const char *json_text, const char *what, ot_err *err) {
    set_common_defaults(c);
    json_t *root = ot_json_parse(json_text, strlen(json_text), what, err);
    if (!root) return -1;
    int rc = -1;
    if (!json_is_object(root)) {
        ot_fail(err, "%s: not a JSON object", what);
        goto done;
    }
    const json_t *mt = json_object_get(root, "model_type");
    if (mt && (!json_is_string(mt) || strcmp(json_string_value(mt), "gpt_oss") != 0)) {
        ot_fail(err, "%s: model_type is %s, not \"gpt_oss\"", what, json_is_string(mt) ? json_string_value(mt) : "not a string");
        goto done;
    }
    // The sizes that define the architecture must be spelled out; a silent default would load the wrong model.
    static const char *required[] = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                     "intermediate_size"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!json_is_number(json_object_get(root, required[i]))) {
            ot_fail(err, "%s: required key \"%s\" is missing (or not a number)", what, required[i]);
            goto done;
        }
    if (!json_object_get(root, "num_local_experts") && !json_object_get(root, "num_experts")) {
        ot_fail(err, "%s: neither \"num_local_experts\" nor \"num_experts\" is present", what);
        goto done;
    }
#define GET_INT(key, field)                                                                                           \
    if (ot_json_get_int(root, key, &c->field, what, err)) goto done
#define GET_FLOAT(key, field)                                                                                         \
    if (ot_json_get_float(root, key, &c->field, what, err)) goto done
#define GET_BOOL(key, field)                                                                                          \
    if (ot_json_get_bool(root, key, &c->field, what, err)) goto done
    GET_INT("vocab_size", vocab_size);
    GET_INT("hidden_size", hidden_size);
    GET_INT("num_hidden_layers", num_hidden_layers);
    GET_INT("num_attention_heads", num_attention_heads);
    c->num_key_value_heads = c->num_attention_heads; // HF: kv heads default to the query heads
    GET_INT("num_key_value_heads", num_key_value_heads);
    // HF's default when head_dim is absent is hidden_size / num_attention_heads; a count of 0 is left for
    // validation to name (never divided by).
    c->head_dim = c->num_attention_heads > 0 ? c->hidden_size / c->num_attention_heads : 0;
    GET_INT("head_dim", head_dim);
    // The reference's names and HF's, aliases of one setting: both may be present, but must agree.
    if (get_int_alias(root, "num_local_experts", "num_experts", &c->num_local_experts, what, err) ||
        get_int_alias(root, "num_experts_per_tok", "experts_per_token", &c->num_experts_per_tok, what, err))
        goto done;
    GET_INT("intermediate_size", intermediate_size);
    GET_FLOAT("swiglu_limit", swiglu_limit);
    GET_FLOAT("rms_norm_eps", rms_norm_eps);
    GET_INT("max_position_embeddings", max_position_embeddings);
    GET_INT("initial_context_length", initial_context_length);
    GET_BOOL("attention_bias", attention_bias);
    GET_BOOL("tie_word_embeddings", tie_word_embeddings);
    GET_FLOAT("initializer_range", initializer_range);
#undef GET_INT
#undef GET_FLOAT
#undef GET_BOOL
    // sliding_window: null means no window at all (then no layer may be a sliding one; validate checks).
    {
        const json_t *sw = json_object_get(root, "sliding_window");
        if (sw && json_is_null(sw)) c->sliding_window = 0;
        else if (ot_json_get_int(root, "sliding_window", &c->sliding_window, what, err)) goto done;
    }
    // Token ids absent from the file are "none", as in transformers (the presets' ids are gpt-oss's own).
    c->pad_token_id = c->eos_token_id = c->bos_token_id = -1;
    if (get_token_id(root, "pad_token_id", &c->pad_token_id, what, err) ||
        get_token_id(root, "eos_token_id", &c->eos_token_id, what, err) ||
        get_token_id(root, "bos_token_id", &c->bos_token_id, what, err))
        goto done;

    // layer_types: absent = the default alternation; present = one entry per layer.
    const json_t *lt = json_object_get(root, "layer_types");
    // (A layer count out of range is validation's to name, below: the list is not read against it.)
    const int layers_in_range = c->num_hidden_layers > 0 && c->num_hidden_layers <= OT_MAX_LAYERS;
    if (lt && !json_is_null(lt) && layers_in_range) {
        if (!json_is_array(lt)) {
            ot_fail(err, "%s: \"layer_types\" must be a list", what);
            goto done;
        }
        if ((int)json_array_size(lt) != c->num_hidden_layers) {
            ot_fail(err, "%s: \"layer_types\" has %zu entries but num_hidden_layers = %d", what, json_array_size(lt),
                    c->num_hidden_layers);
            goto done;
        }
        for (int l = 0; l < c->num_hidden_layers; l++) {
            const char *s = json_string_value(json_array_get(lt, (size_t)l));
            if (s && strcmp(s, "sliding_attention") == 0) c->layer_sliding[l] = 1;
            else if (s && strcmp(s, "full_attention") == 0) c->layer_sliding[l] = 0;
            else {
                ot_fail(err, "%s: layer_types[%d] must be \"sliding_attention\" or \"full_attention\"", what, l);
                goto done;
            }
        }
    }

    // RoPE. Like transformers 5.x: a non-null rope_scaling wins over rope_parameters; rope_theta inside the
    // object wins over a top-level rope_theta. Neither present: gpt-oss's yarn defaults (set above).
    {
        const json_t *top_theta = json_object_get(root, "rope_theta");
        if (top_theta && !json_is_null(top_theta)) {
            if (!json_is_number(top_theta)) {
                ot_fail(err, "%s: \"rope_theta\" must be a number", what);
                goto done;
            }
            c->rope.theta = json_number_value(top_theta);
        }
        const json_t *rs = json_object_get(root, "rope_scaling"), *rp = json_object_get(root, "rope_parameters");
        if (rs && !json_is_null(rs)) {
            if (parse_rope_object(c, rs, "rope_scaling", what, err)) goto done;
        } else if (rp && !json_is_null(rp)) {
            if (parse_rope_object(c, rp, "rope_parameters", what, err)) goto done;
        }
    }

    // quantization_config: mxfp4 = experts stored as *_blocks/*_scales. (Mxfp4Config(dequantize=True) only
    // changes how transformers loads; the files are still MXFP4.) Absent = dense bf16 experts.
    {
        const json_t *q = json_object_get(root, "quantization_config");
        c->experts_mxfp4 = 0;
        if (q && !json_is_null(q)) {
            const char *m = json_string_value(json_object_get(q, "quant_method"));
            if (!m) {
                ot_fail(err, "%s: quantization_config has no \"quant_method\" string", what);
                goto done;
            }
            if (strcmp(m, "mxfp4") != 0) {
                ot_fail(err, "%s: quantization_config.quant_method \"%s\" is not supported (only mxfp4)", what, m);
                goto done;
            }
            c->experts_mxfp4 = 1;
        }
    }
    if (ot_model_config_validate(c, err)) {
        char inner[OT_ERR_LEN];
        snprintf(inner, sizeof inner, "%s", err ? err->msg : "");
        ot_fail(err, "%s: %s", what, inner);
        goto done;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

int ot_model_config_load(ot_model_config *c, const char *path, ot_err *err) {
    size_t len;
    char *buf = ot_read_file(path, &len, err);
    if (!buf) return -1;
    if (strlen(buf) != len) {
        free(buf);
        return ot_fail(err, "%s: contains a NUL byte; not a JSON text file", path);
    }
    int rc = ot_model_config_parse(c, buf, path, err);
    free(buf);
    return rc;
}

// ---- --set key=value --------------------------------------------------------------------------------------------
static int parse_int(const char *key, const char *s, int *out, ot_err *err) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < INT_MIN || v > INT_MAX)
        return ot_fail(err, "--set %s=%s: not an integer", key, s);
    *out = (int)v;
    return 0;
}

static int parse_double(const char *key, const char *s, double *out, ot_err *err) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return ot_fail(err, "--set %s=%s: not a finite number", key, s);
    *out = v;
    return 0;
}

static int parse_bool(const char *key, const char *s, int *out, ot_err *err) {
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0) *out = 1;
    else if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0) *out = 0;
    else return ot_fail(err, "--set %s=%s: not a boolean (true/false/1/0)", key, s);
    return 0;
}

int ot_model_config_set(ot_model_config *c, const char *key, const char *value, ot_err *err) {
    // Integer fields by config.json key (aliases included).
    const struct {
        const char *key;
        int *field;
    } ints[] = {
        {"vocab_size", &c->vocab_size},
        {"hidden_size", &c->hidden_size},
        {"num_hidden_layers", &c->num_hidden_layers},
        {"num_attention_heads", &c->num_attention_heads},
        {"num_key_value_heads", &c->num_key_value_heads},
        {"head_dim", &c->head_dim},
        {"num_local_experts", &c->num_local_experts},
        {"num_experts", &c->num_local_experts},
        {"num_experts_per_tok", &c->num_experts_per_tok},
        {"experts_per_token", &c->num_experts_per_tok},
        {"intermediate_size", &c->intermediate_size},
        {"sliding_window", &c->sliding_window},
        {"max_position_embeddings", &c->max_position_embeddings},
        {"initial_context_length", &c->initial_context_length},
        {"original_max_position_embeddings", &c->rope.original_max_position_embeddings},
        {"pad_token_id", &c->pad_token_id},
        {"eos_token_id", &c->eos_token_id},
        {"bos_token_id", &c->bos_token_id},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (strcmp(key, ints[i].key) == 0) {
            if (parse_int(key, value, ints[i].field, err)) return -1;
            // A new layer count keeps the default alternation (layer_types is a list, not settable here).
            if (strcmp(key, "num_hidden_layers") == 0) default_layer_types(c);
            return 0;
        }
    const struct {
        const char *key;
        float *field;
    } floats[] = {
        {"swiglu_limit", &c->swiglu_limit},
        {"rms_norm_eps", &c->rms_norm_eps},
        {"initializer_range", &c->initializer_range},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        if (strcmp(key, floats[i].key) == 0) {
            double d = 0;
            if (parse_double(key, value, &d, err)) return -1;
            *floats[i].field = (float)d;
            return 0;
        }
    const struct {
        const char *key;
        double *field;
    } doubles[] = {
        {"rope_theta", &c->rope.theta},
        {"factor", &c->rope.factor},
        {"beta_fast", &c->rope.beta_fast},
        {"beta_slow", &c->rope.beta_slow},
        {"attention_factor", &c->rope.attention_factor},
    };
    for (size_t i = 0; i < sizeof doubles / sizeof doubles[0]; i++)
        if (strcmp(key, doubles[i].key) == 0) return parse_double(key, value, doubles[i].field, err);
    const struct {
        const char *key;
        int *field;
    } bools[] = {
        {"attention_bias", &c->attention_bias},
        {"tie_word_embeddings", &c->tie_word_embeddings},
        {"truncate", &c->rope.truncate},
    };
    for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++)
        if (strcmp(key, bools[i].key) == 0) return parse_bool(key, value, bools[i].field, err);
    return ot_fail(err, "--set %s=%s: unknown or non-numeric config key '%s'", key, value, key);
}

// ---- writing ------------------------------------------------------------------------------------------------------
static json_t *token_or_null(int id) { return id >= 0 ? json_integer(id) : json_null(); }

// The yarn (or default) rope object; with_theta adds rope_theta inside (the rope_parameters form).
static json_t *rope_object(const ot_model_config *c, int with_theta) {
    json_t *r = json_object();
    if (c->rope.factor > 1.0) {
        json_object_set_new(r, "rope_type", json_string("yarn"));
        json_object_set_new(r, "factor", json_real(c->rope.factor));
        json_object_set_new(r, "beta_fast", json_real(c->rope.beta_fast));
        json_object_set_new(r, "beta_slow", json_real(c->rope.beta_slow));
        json_object_set_new(r, "original_max_position_embeddings", json_integer(c->rope.original_max_position_embeddings));
        json_object_set_new(r, "truncate", json_boolean(c->rope.truncate));
        if (c->rope.attention_factor > 0) json_object_set_new(r, "attention_factor", json_real(c->rope.attention_factor));
    } else {
        json_object_set_new(r, "rope_type", json_string("default"));
    }
    if (with_theta) json_object_set_new(r, "rope_theta", json_real(c->rope.theta));
    return r;
}

char *ot_model_config_to_json(const ot_model_config *c) {
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", "GptOssForCausalLM"));
    json_object_set_new(j, "model_type", json_string("gpt_oss"));
    json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(j, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->num_hidden_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->num_attention_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->num_key_value_heads));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "num_local_experts", json_integer(c->num_local_experts));
    json_object_set_new(j, "num_experts_per_tok", json_integer(c->num_experts_per_tok));
    json_object_set_new(j, "experts_per_token", json_integer(c->num_experts_per_tok));
    json_object_set_new(j, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(j, "swiglu_limit", ot_json_real_from_float(c->swiglu_limit));
    json_object_set_new(j, "rms_norm_eps", ot_json_real_from_float(c->rms_norm_eps));
    json_object_set_new(j, "sliding_window", c->sliding_window > 0 ? json_integer(c->sliding_window) : json_null());
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(j, "initial_context_length", json_integer(c->initial_context_length));
    json_t *lt = json_array();
    for (int l = 0; l < c->num_hidden_layers && l < OT_MAX_LAYERS; l++)
        json_array_append_new(lt, json_string(c->layer_sliding[l] ? "sliding_attention" : "full_attention"));
    json_object_set_new(j, "layer_types", lt);
    // Both rope forms: transformers 5.x reads rope_parameters (theta inside); 4.x reads rope_theta + rope_scaling.
    // 5.x prefers rope_scaling when both exist, so the two must say the same thing, and they do.
    json_object_set_new(j, "rope_parameters", rope_object(c, 1));
    json_object_set_new(j, "rope_scaling", rope_object(c, 0));
    json_object_set_new(j, "rope_theta", json_real(c->rope.theta));
    json_object_set_new(j, "attention_bias", json_boolean(c->attention_bias));
    json_object_set_new(j, "attention_dropout", json_real(0.0));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "initializer_range", ot_json_real_from_float(c->initializer_range));
    json_object_set_new(j, "router_aux_loss_coef", json_real(0.9));
    json_object_set_new(j, "output_router_logits", json_false());
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    json_object_set_new(j, "use_cache", json_true());
    json_object_set_new(j, "pad_token_id", token_or_null(c->pad_token_id));
    json_object_set_new(j, "eos_token_id", token_or_null(c->eos_token_id));
    json_object_set_new(j, "bos_token_id", token_or_null(c->bos_token_id));
    // dtype is the 5.x key, torch_dtype the 4.x one; the non-expert weights are bf16.
    json_object_set_new(j, "dtype", json_string("bfloat16"));
    json_object_set_new(j, "torch_dtype", json_string("bfloat16"));
    if (c->experts_mxfp4) {
        json_t *q = json_object();
        json_object_set_new(q, "quant_method", json_string("mxfp4"));
        json_object_set_new(q, "modules_to_not_convert", json_pack("[ssss]", "model.layers.*.self_attn",
                                                                   "model.layers.*.mlp.router", "model.embed_tokens",
                                                                   "lm_head"));
        json_object_set_new(j, "quantization_config", q);
    }
    char *s = ot_json_dump_pretty(j);
    json_decref(j);
    size_t n = strlen(s);
    s = ot_realloc(s, n + 2);
    s[n] = '\n';
    s[n + 1] = 0;
    return s;
}
