#include "trainer/model/lora.h"

#include <math.h>
#include <stdlib.h>

void ot_lora_init(ot_lora *lo, const ot_model_config *c, const ot_lora_spec *spec, uint64_t seed) {
    memset(lo, 0, sizeof *lo);
    lo->r = spec->r;
    unsigned char (*present)[OT_LORA_N_TARGETS] = ot_calloc((size_t)c->num_hidden_layers, sizeof *present);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        int expert_layer = spec->n_expert_layers == 0;
        for (int i = 0; i < spec->n_expert_layers; i++) expert_layer |= spec->expert_layers[i] == l;
        for (int t = 0; t < OT_LORA_N_TARGETS; t++)
            present[l][t] = (spec->targets >> t) & 1u && (t < OT_LORA_GATE_UP || expert_layer);
    }
    ot_lora_layout(lo, c, (const unsigned char (*)[OT_LORA_N_TARGETS])present);
    free(present);
    ot_lora_fill_peft_config(lo, spec->alpha, spec->use_rslora);
    lo->scale = ot_peft_scaling(&lo->peft);
    // PEFT: nn.init.kaiming_uniform_(A, a=sqrt(5)) → U(−1/sqrt(fan_in), 1/sqrt(fan_in)); B zeros. Each slot draws
    // from its own stream so adding a target elsewhere does not change this one's values.
    for (int l = 0; l < lo->n_layers; l++)
        for (int t = 0; t < OT_LORA_N_TARGETS; t++) {
            const ot_lora_slot *s = &lo->slots[l][t];
            if (!s->present) continue;
            ot_rng rng;
            ot_rng_seed(&rng, ot_hash64(seed ^ ot_hash64((uint64_t)l * 16 + (uint64_t)t)));
            double bound = 1.0 / sqrt((double)s->in);
            float *A = lo->params + s->a_off;
            for (size_t i = 0, n = (size_t)s->n_exp * lo->r * s->in; i < n; i++)
                A[i] = (float)((2.0 * ot_rng_uniform(&rng) - 1.0) * bound);
        }
}

void ot_lora_spec_of(const ot_lora *lo, ot_lora_spec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->r = lo->r;
    spec->alpha = lo->peft.lora_alpha;
    spec->use_rslora = lo->peft.use_rslora;
    int expert_layers = 0;
    for (int l = 0; l < lo->n_layers; l++) {
        int experts_here = 0;
        for (int t = 0; t < OT_LORA_N_TARGETS; t++)
            if (lo->slots[l][t].present) {
                spec->targets |= 1u << t;
                experts_here |= t >= OT_LORA_GATE_UP;
            }
        if (experts_here && spec->n_expert_layers < OT_MAX_LAYERS) spec->expert_layers[spec->n_expert_layers++] = l;
        expert_layers += experts_here;
    }
    if (expert_layers == lo->n_layers) spec->n_expert_layers = 0; // every layer: the default needs no list
}
