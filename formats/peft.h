// PEFT adapter directories: adapter_config.json + adapter_model.safetensors (spec §6.5).
#ifndef OT_FORMATS_PEFT_H
#define OT_FORMATS_PEFT_H

#include "common/ot_common.h"
#include "formats/model_config.h" // OT_MAX_LAYERS

#define OT_PEFT_MAX_TARGETS (2 * OT_MAX_LAYERS) // one entry per (layer, expert parameter) at most
typedef struct {
    int r;
    float lora_alpha;
    int use_rslora;
    int n_target_modules;       // e.g. q_proj k_proj v_proj o_proj
    char target_modules[OT_PEFT_MAX_TARGETS][64];
    int n_target_parameters;    // e.g. mlp.experts.gate_up_proj, mlp.experts.down_proj (maybe "7.mlp.experts...")
    char target_parameters[OT_PEFT_MAX_TARGETS][96];
    char base_model_name_or_path[512];
} ot_peft_config;

// scaling = lora_alpha / r (or / sqrt(r) with rsLoRA)
float ot_peft_scaling(const ot_peft_config *c);
int ot_peft_config_read(ot_peft_config *c, const char *path, ot_err *err);
// Writes adapter_config.json as peft 0.21 does (task_type CAUSAL_LM, peft_type LORA, ...) atomically.
int ot_peft_config_write(const ot_peft_config *c, const char *path, ot_err *err);

#endif
