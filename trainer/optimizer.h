// AdamW over the flat LoRA buffer, with global gradient-norm clipping and the warmup + cosine schedule.
#ifndef OT_TRAINER_OPTIMIZER_H
#define OT_TRAINER_OPTIMIZER_H

#include <stddef.h>

typedef struct {
    float lr, min_lr;
    float beta1, beta2, eps, weight_decay;
    float max_grad_norm; // <= 0: no clipping
    long warmup_steps, total_steps;
} ot_optim_config;

typedef struct {
    ot_optim_config cfg;
    size_t n;
    float *m, *v; // AdamW moments, fp32
    long step;    // optimizer steps taken so far
} ot_optimizer;

void ot_optim_config_default(ot_optim_config *c); // lr 2e-4, betas 0.9/0.999, eps 1e-8, wd 0.01, clip 1.0
void ot_optimizer_init(ot_optimizer *o, size_t n, const ot_optim_config *cfg);
void ot_optimizer_free(ot_optimizer *o);
// One step: global grad norm (returned, before clipping), clip, lr from the schedule (written to *lr_used), AdamW.
double ot_optimizer_step(ot_optimizer *o, float *params, float *grads, float *lr_used);
// The part of a step every parameter layout shares (ot_optimizer_step and the --full step, which applies AdamW
// tensor by tensor): the global gradient norm before clipping (returned), the clipping of grads in place, the
// schedule's learning rate (*lr) and the step count; the caller then applies AdamW with o->step.
double ot_optimizer_begin_step(ot_optimizer *o, float *grads, float *lr);

#endif
