// Optimizer pieces: AdamW as torch.optim.AdamW computes it, the gradient-norm clip factor of
// torch.nn.utils.clip_grad_norm_, and the learning-rate schedule. Not element-type templated (float state only).
#include <math.h>

#include "common/ot_common.h"
#include "kernels/cpu/real.h"
#include "kernels/ops.h"

#ifndef OT_REAL_DOUBLE
#define OT_PI 3.14159265358979323846 // the double nearest π, as Python's math.pi

// torch's single-tensor AdamW (the path it takes for CPU tensors), operation by operation. torch evaluates the
// scalar hyper-parameter expressions as Python doubles and rounds each to float32 where it meets a tensor; the
// tensor arithmetic itself is float32. The same roundings happen here, in the same order:
//   p ← p · (1 − lr·wd)
//   m ← m + (1 − β1)·(g − m)                    (torch.lerp with a weight below 0.5)
//   v ← v·β2 + ((1 − β2)·g)·g                    (mul_ then addcmul_)
//   p ← p + ((−lr/bc1)·m) / (√v / √bc2 + eps)    (addcdiv_), bc1 = 1 − β1^step, bc2 = 1 − β2^step
// Bit-for-bit agreement with torch is not reachable from portable C: torch's vectorised CPU kernels fuse the
// lerp and addcmul into FMAs and use a vectorised sqrt that is not always correctly rounded, and the
// hyper-parameters arrive here as floats where torch keeps Python doubles. Measured against torch 2.11 the
// parameters agree to ~1e-8 relative after several steps.
void ot_adamw_step(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1, float beta2,
                   float eps, float weight_decay, long step) {
    if (step < 1)
        ot_die("ot_adamw_step: step %ld must count from 1", step);
    float decay = (float)(1.0 - (double)lr * (double)weight_decay);
    float w1 = (float)(1.0 - (double)beta1);
    float w2 = (float)(1.0 - (double)beta2);
    double bc1 = 1.0 - pow((double)beta1, (double)step);
    double bc2 = 1.0 - pow((double)beta2, (double)step);
    float neg_step_size = (float)(-((double)lr / bc1));
    float bc2_sqrt = (float)pow(bc2, 0.5);
    for (size_t i = 0; i < n; i++) {
        float p = param[i], g = grad[i];
        if (weight_decay != 0)
            p = p * decay;
        float mi = m[i];
        mi = w1 < 0.5f ? mi + w1 * (g - mi) : g - (g - mi) * (1.0f - w1); // torch.lerp's two branches
        float vi = v[i] * beta2;
        vi = vi + w2 * g * g;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        param[i] = p + neg_step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

// Four partial sums combined in a fixed order: fast, and the same bits on every call.
double ot_sum_squares(const float *g, size_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)g[i] * g[i];
        s1 += (double)g[i + 1] * g[i + 1];
        s2 += (double)g[i + 2] * g[i + 2];
        s3 += (double)g[i + 3] * g[i + 3];
    }
    for (; i < n; i++)
        s0 += (double)g[i] * g[i];
    return (s0 + s1) + (s2 + s3);
}

void ot_sum_slots_ordered(float *out, const float *slots, int n_slots, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double acc = 0.0;
        for (int k = 0; k < n_slots; k++) acc += (double)slots[(size_t)k * n + i];
        out[i] = (float)acc;
    }
}

// torch: clip_coef = max_norm / (total_norm + 1e-6) on a float32 tensor (computed as reciprocal · max_norm, which
// is how torch evaluates a Python number divided by a tensor), then clamped to at most 1. At norm == max_norm the
// factor is therefore 1 − 1e-6/max_norm, not exactly 1, just as in torch. max_norm <= 0 disables clipping.
float ot_clip_coef(double total_norm, float max_norm) {
    if (max_norm <= 0)
        return 1.0f;
    float coef = (1.0f / ((float)total_norm + 1e-6f)) * max_norm;
    return coef < 1.0f ? coef : 1.0f;
}

// Warmup: step s < warmup uses lr_max·(s + 1)/warmup, so the first step already moves (lr_max/warmup) and step
// warmup − 1 reaches lr_max. Then a half cosine from lr_max (at s = warmup) down to lr_min (at s = total_steps):
//   progress = clamp((s − warmup) / max(1, total_steps − warmup), 0, 1)
//   lr = lr_min + (lr_max − lr_min) · (1 + cos(π · progress)) / 2
// Steps beyond total_steps stay at lr_min. warmup <= 0 means no warmup.
float ot_lr_at(long step, long warmup, long total_steps, float lr_max, float lr_min) {
    if (warmup > 0 && step < warmup)
        return (float)((double)lr_max * (double)(step + 1) / (double)warmup);
    long span = total_steps - (warmup > 0 ? warmup : 0);
    double progress = (double)(step - (warmup > 0 ? warmup : 0)) / (double)(span > 1 ? span : 1);
    progress = progress < 0 ? 0 : progress > 1 ? 1 : progress;
    return (float)((double)lr_min + ((double)lr_max - (double)lr_min) * 0.5 * (1.0 + cos(OT_PI * progress)));
}
#endif
