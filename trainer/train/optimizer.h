// AdamW over a flat buffer of trainable values (the LoRA factors, or every weight of --full), with global
// gradient-norm clipping and the warmup + cosine schedule.
#ifndef OT_TRAINER_OPTIMIZER_H
#define OT_TRAINER_OPTIMIZER_H

#include <stddef.h>

#include "formats/run_dir.h"

// ot_optim_config (the AdamW settings and the schedule, as checkpoints record them): formats/run_dir.h

typedef struct {
    ot_optim_config cfg;
    size_t n;
    float *m, *v; // AdamW moments, fp32
    long step;    // optimizer steps taken so far
} ot_optimizer;

void ot_optim_config_default(ot_optim_config *c); // lr 2e-4, betas 0.9/0.999, eps 1e-8, wd 0.01, clip 1.0
void ot_optimizer_init(ot_optimizer *o, size_t n, const ot_optim_config *cfg);
void ot_optimizer_free(ot_optimizer *o);
// A stretch of the flat buffer that AdamW treats alike: with or without weight decay (--full decays only the
// matrices: not the embedding, norms, biases or sinks).
typedef struct {
    size_t offset, n;
    int decay;
} ot_param_span;

// One step: global grad norm (returned, before clipping), clip, lr from the schedule (written to *lr_used), AdamW.
double ot_optimizer_step(ot_optimizer *o, float *params, float *grads, float *lr_used);
// The same, AdamW applied span by span (spans == NULL: one span of everything, with weight decay).
double ot_optimizer_step_spans(ot_optimizer *o, float *params, float *grads, const ot_param_span *spans, int n_spans,
                               float *lr_used);

#endif
