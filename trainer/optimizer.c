#include "trainer/optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/ot_common.h"
#include "kernels/ops.h"

void ot_optim_config_default(ot_optim_config *c) {
    memset(c, 0, sizeof *c);
    c->lr = 2e-4f;
    c->min_lr = 0.0f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.01f;
    c->max_grad_norm = 1.0f;
    c->warmup_steps = 0;
    c->total_steps = 1;
}

void ot_optimizer_init(ot_optimizer *o, size_t n, const ot_optim_config *cfg) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    o->m = ot_calloc(n, sizeof(float));
    o->v = ot_calloc(n, sizeof(float));
}

void ot_optimizer_free(ot_optimizer *o) {
    free(o->m);
    free(o->v);
    memset(o, 0, sizeof *o);
}

double ot_optimizer_begin_step(ot_optimizer *o, float *grads, float *lr) {
    const ot_optim_config *c = &o->cfg;
    double norm = sqrt(ot_sum_squares(grads, o->n));
    float coef = ot_clip_coef(norm, c->max_grad_norm);
    if (coef < 1.0f)
        for (size_t i = 0; i < o->n; i++) grads[i] *= coef;
    *lr = ot_lr_at(o->step, c->warmup_steps, c->total_steps, c->lr, c->min_lr);
    o->step++;
    return norm;
}

double ot_optimizer_step(ot_optimizer *o, float *params, float *grads, float *lr_used) {
    const ot_optim_config *c = &o->cfg;
    float lr;
    double norm = ot_optimizer_begin_step(o, grads, &lr);
    ot_adamw_step(params, grads, o->m, o->v, o->n, lr, c->beta1, c->beta2, c->eps, c->weight_decay, o->step);
    if (lr_used) *lr_used = lr;
    return norm;
}
