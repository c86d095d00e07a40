// A LoRA adapter in memory: the tensors of a PEFT adapter directory (adapter_model.safetensors, spec §6.5) in one
// flat float32 buffer, so the optimizer, gradient sums and checkpoints see a single array; the slots say where
// each factor sits. PEFT semantics on q/k/v/o (nn.Linear) and on the fused expert parameters (peft's
// `target_parameters`, ParamWrapper); the key names follow peft 0.21.
//
// Memory layout of a slot: A [n_exp, r, in] then B [n_exp, out, r] (n_exp = 1 for attention). For experts this is
// expert-major for both factors; PEFT's files store B as [out, r·E] with column k·E + e (expert-minor), converted
// when reading and writing.
#ifndef OT_FORMATS_PEFT_ADAPTER_H
#define OT_FORMATS_PEFT_ADAPTER_H

#include "formats/model_config.h"
#include "formats/peft.h"

typedef enum { OT_LORA_Q, OT_LORA_K, OT_LORA_V, OT_LORA_O, OT_LORA_GATE_UP, OT_LORA_DOWN, OT_LORA_N_TARGETS } ot_lora_target;
extern const char *const ot_lora_target_names[OT_LORA_N_TARGETS]; // "q_proj", ..., "gate_up_proj", "down_proj"

typedef struct {
    int present;
    int n_exp, in, out;
    size_t a_off, b_off; // offsets (in floats) into the flat buffers
} ot_lora_slot;

typedef struct {
    ot_peft_config peft;
    int r;
    float scale;                 // alpha / r (or / sqrt(r))
    int n_layers;
    ot_lora_slot (*slots)[OT_LORA_N_TARGETS]; // [n_layers][target]
    size_t n_params;
    float *params;               // [n_params]
    float *grads;                // [n_params] gradients in the same layout (the trainer's; zero after a read)
} ot_lora;

// Which modules and layers to adapt. Attention targets apply to every layer; expert targets to every layer
// unless expert_layers lists some (PEFT "7.mlp.experts.gate_up_proj" style); both come from / go to PEFT's config.
typedef struct {
    int r;
    float alpha;
    int use_rslora;
    unsigned targets;            // bit (1 << ot_lora_target)
    int n_expert_layers;         // 0 = all layers
    int expert_layers[OT_MAX_LAYERS];
} ot_lora_spec;

// Parse "q,k,v,o,gate_up,down" (also "attn" = q,k,v,o, "experts" = gate_up,down, "all") into spec->targets.
int ot_lora_parse_targets(ot_lora_spec *spec, const char *list, ot_err *err);
// The slots of an adapter for a model of config c, where present[l][t] says which are adapted: offsets laid out
// layer by layer, target by target (A then B), and zeroed params and grads of that length. lo->r must be set.
void ot_lora_layout(ot_lora *lo, const ot_model_config *c, const unsigned char (*present)[OT_LORA_N_TARGETS]);
// The PEFT config (target_modules, target_parameters, r, alpha) of the adapter lo laid out as it is.
void ot_lora_fill_peft_config(ot_lora *lo, float alpha, int use_rslora);
// Read a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) for a model with config c.
int ot_lora_load_peft(ot_lora *lo, const ot_model_config *c, const char *dir, ot_err *err);
// Write a PEFT adapter directory (atomic per file; the directory must exist).
int ot_lora_save_peft(const ot_lora *lo, const char *dir, ot_err *err);
void ot_lora_free(ot_lora *lo);

// The slot of layer l's target t, or NULL when it is not adapted (or there is no adapter: slots == NULL).
static inline const ot_lora_slot *ot_lora_slot_at(const ot_lora_slot (*slots)[OT_LORA_N_TARGETS], int l, int t) {
    return slots && slots[l][t].present ? &slots[l][t] : NULL;
}
static inline const ot_lora_slot *ot_lora_slot_of(const ot_lora *lo, int l, int t) {
    return lo ? ot_lora_slot_at((const ot_lora_slot (*)[OT_LORA_N_TARGETS])lo->slots, l, t) : NULL;
}
static inline float *ot_lora_A(const ot_lora *lo, const ot_lora_slot *s, int e) {
    return lo->params + s->a_off + (size_t)e * lo->r * s->in;
}
static inline float *ot_lora_B(const ot_lora *lo, const ot_lora_slot *s, int e) {
    return lo->params + s->b_off + (size_t)e * s->out * lo->r;
}
static inline float *ot_lora_dA(const ot_lora *lo, const ot_lora_slot *s, int e) {
    return lo->grads + s->a_off + (size_t)e * lo->r * s->in;
}
static inline float *ot_lora_dB(const ot_lora *lo, const ot_lora_slot *s, int e) {
    return lo->grads + s->b_off + (size_t)e * s->out * lo->r;
}

#endif
