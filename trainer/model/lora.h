// LoRA state for training: a fresh adapter with PEFT's initialisation. The adapter itself (its layout, its PEFT
// files) is formats/peft_adapter.h.
#ifndef OT_MODEL_LORA_H
#define OT_MODEL_LORA_H

#include "formats/peft_adapter.h"

// Allocate with PEFT's initialisation: A ~ U(−1/√in, 1/√in) (kaiming_uniform with a = √5), B = 0.
void ot_lora_init(ot_lora *lo, const ot_model_config *c, const ot_lora_spec *spec, uint64_t seed);

// The options that describe the adapter lo: its r, alpha, rsLoRA, the targets adapted anywhere, and the layers
// whose experts are adapted (n_expert_layers 0: all of them, or no expert target). What a run from --init-adapter
// really uses, for its config.
void ot_lora_spec_of(const ot_lora *lo, ot_lora_spec *spec);

#endif
