// gpt-oss config.json (spec §1): parse (both `rope_scaling` + `rope_theta` and `rope_parameters` forms),
// presets for osstune-init-model, overrides, and writing it back out.
#ifndef OT_FORMATS_MODEL_CONFIG_H
#define OT_FORMATS_MODEL_CONFIG_H

#include "common/ot_common.h"

#define OT_MAX_LAYERS 256

typedef struct {
    int vocab_size;
    int hidden_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int head_dim;
    int num_local_experts;
    int num_experts_per_tok;
    int intermediate_size;
    float swiglu_limit;  // 7.0
    float swiglu_alpha;  // 1.702 (not a config key; fixed by the architecture)
    float rms_norm_eps;
    int sliding_window;
    int max_position_embeddings;
    int initial_context_length;
    unsigned char layer_sliding[OT_MAX_LAYERS]; // 1 = sliding_attention, 0 = full_attention
    ot_rope_params rope;
    int attention_bias;
    int tie_word_embeddings;
    int pad_token_id, eos_token_id, bos_token_id;
    int experts_mxfp4;   // quantization_config.quant_method == "mxfp4"
    float initializer_range;
} ot_model_config;

// Presets: "tiny" (real vocabulary 201,088, everything else small), "20b", "120b". Returns -1 if unknown.
int ot_model_config_preset(ot_model_config *c, const char *preset, ot_err *err);
// Parse config.json text / file; validates what the rest of the code relies on (divisibility, ranges).
int ot_model_config_parse(ot_model_config *c, const char *json_text, const char *what, ot_err *err);
int ot_model_config_load(ot_model_config *c, const char *path, ot_err *err);
// Set one field by its config.json key from a string ("hidden_size", "128"); used by --set key=value.
int ot_model_config_set(ot_model_config *c, const char *key, const char *value, ot_err *err);
// Re-derive and check invariants (after presets/overrides). 0 or -1 with message.
int ot_model_config_validate(const ot_model_config *c, ot_err *err);
// config.json text in the HF layout (rope_parameters form plus rope_theta/rope_scaling for older readers). Caller frees.
char *ot_model_config_to_json(const ot_model_config *c);

#endif
