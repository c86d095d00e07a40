#include "trainer/train/optimizer.h"

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

// The part of a step every layout shares: the global gradient norm before clipping (returned), the clipping of
// grads in place, the schedule's learning rate (*lr) and the step count; AdamW then runs with o->step.
static double begin_step(ot_optimizer *o, float *grads, float *lr) {
    const ot_optim_config *c = &o->cfg;
    double norm = sqrt(ot_sum_squares(grads, o->n));
    float coef = ot_clip_coef(norm, c->max_grad_norm);
    if (coef < 1.0f)
        for (size_t i = 0; i < o->n; i++) grads[i] *= coef;
    *lr = ot_lr_at(o->step, c->warmup_steps, c->total_steps, c->lr, c->min_lr);
    o->step++;
    return norm;
}

double ot_optimizer_step_spans(ot_optimizer *o, float *params, float *grads, const ot_param_span *spans, int n_spans,
                               float *lr_used) {
    const ot_optim_config *c = &o->cfg;
    float lr;
    double norm = begin_step(o, grads, &lr);
    const ot_param_span all = {0, o->n, 1};
    if (!spans) spans = &all, n_spans = 1;
    for (int i = 0; i < n_spans; i++) {
        const ot_param_span *p = &spans[i];
        ot_adamw_step(params + p->offset, grads + p->offset, o->m + p->offset, o->v + p->offset, p->n, lr, c->beta1,
                      c->beta2, c->eps, p->decay ? c->weight_decay : 0.0f, o->step);
    }
    if (lr_used) *lr_used = lr;
    return norm;
}

double ot_optimizer_step(ot_optimizer *o, float *params, float *grads, float *lr_used) {
    return ot_optimizer_step_spans(o, params, grads, NULL, 0, lr_used);
}
