// Rotary position embedding with YaRN inverse frequencies (spec §2.4), NeoX half-split rotation.
#include <math.h>
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/cpu/real.h"
#include "kernels/ops.h"

#ifndef OT_REAL_DOUBLE
#define OT_PI 3.14159265358979323846 // the double nearest π, as Python's math.pi

// Mirrors transformers' `_compute_yarn_parameters` step by step, including where it rounds: tensor arithmetic is
// float32 (a Python-float operand is first rounded to float32), while the correction range and the attention
// factor are Python doubles. Keeping every rounding in place makes inv_freq the same float32 values HF uses.
static double yarn_correction_dim(double n_rotations, int dim, double base, int original_max_pos) {
    return (dim * log(original_max_pos / (n_rotations * 2 * OT_PI))) / (2 * log(base));
}

float ot_rope_inv_freq(float *inv_freq, int head_dim, const ot_rope_params *p) {
    if (head_dim <= 0 || head_dim % 2)
        ot_die("ot_rope_inv_freq: head_dim %d must be positive and even", head_dim);
    if (!(p->theta > 0))
        ot_die("ot_rope_inv_freq: rope_theta %g must be positive", p->theta);
    if (!(p->factor > 0))
        ot_die("ot_rope_inv_freq: rope_scaling.factor %g must be positive", p->factor);
    int half = head_dim / 2;
    float base = (float)p->theta;

    if (p->factor == 1.0) { // plain RoPE (HF "default"): 1 / base^(2i/d), no attention factor
        for (int i = 0; i < half; i++)
            inv_freq[i] = 1.0f / powf(base, (float)(2 * i) / (float)head_dim);
        return p->attention_factor > 0 ? (float)p->attention_factor : 1.0f;
    }
    if (p->original_max_position_embeddings <= 0)
        ot_die("ot_rope_inv_freq: YaRN needs original_max_position_embeddings > 0 (got %d)",
               p->original_max_position_embeddings);

    // HF: attention_factor = get_mscale(factor) = 0.1·ln(factor) + 1, or 1 when factor <= 1
    double attention_factor = p->attention_factor > 0 ? p->attention_factor
                              : p->factor <= 1.0      ? 1.0
                                                      : 0.1 * log(p->factor) + 1.0;
    double beta_fast = p->beta_fast != 0 ? p->beta_fast : 32.0; // HF: `get("beta_fast") or 32`
    double beta_slow = p->beta_slow != 0 ? p->beta_slow : 1.0;

    // find_correction_range: low from beta_fast, high from beta_slow, optionally floored/ceiled, clamped to [0, d-1]
    double low = yarn_correction_dim(beta_fast, head_dim, p->theta, p->original_max_position_embeddings);
    double high = yarn_correction_dim(beta_slow, head_dim, p->theta, p->original_max_position_embeddings);
    if (p->truncate) {
        low = floor(low);
        high = ceil(high);
    }
    if (low < 0)
        low = 0;
    if (high > head_dim - 1)
        high = head_dim - 1;
    if (low == high)
        high += 0.001; // HF's guard against a zero-width ramp
    float ramp_low = (float)low, ramp_width = (float)(high - low);
    float factor = (float)p->factor;

    for (int i = 0; i < half; i++) {
        float pos_freq = powf(base, (float)(2 * i) / (float)head_dim);
        float extrapolation = 1.0f / pos_freq;
        float interpolation = 1.0f / (factor * pos_freq);
        float ramp = ((float)i - ramp_low) / ramp_width;
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float extrapolation_factor = 1.0f - ramp;
        inv_freq[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
    }
    return (float)attention_factor;
}
#endif

// cos/sin for one position, exactly as HF builds its tables: the angle pos · inv_freq is a float32 product,
// cos and sin are float32, then multiplied by the attention factor in float32.
static void rope_cos_sin(float *c, float *s, int32_t pos, const float *inv_freq, float attn_factor, int half) {
    for (int i = 0; i < half; i++) {
        float angle = (float)pos * inv_freq[i];
        c[i] = cosf(angle) * attn_factor;
        s[i] = sinf(angle) * attn_factor;
    }
}

// out1 = x1·c − x2·s;  out2 = x2·c + x1·s   (x1 = first half of the head, x2 = second half)
// Two products and one sum per element, done in the element type as torch does them in fp32 (each product
// rounded, then the sum), so the float instantiation reproduces HF's rotated q and k bit for bit given the same
// cos/sin; there is no long reduction here that double accumulation would help.
void OT_FN(ot_rope_fwd)(real *x, const int32_t *pos, const float *inv_freq, float attn_factor, int T, int nh, int D) {
    if (D % 2)
        ot_die("ot_rope_fwd: head dim %d must be even", D);
    int half = D / 2;
    float *c = ot_malloc((size_t)D * sizeof(float)), *s = c + half;
    for (int t = 0; t < T; t++) {
        rope_cos_sin(c, s, pos[t], inv_freq, attn_factor, half);
        for (int h = 0; h < nh; h++) {
            real *x1 = x + ((size_t)t * nh + h) * D, *x2 = x1 + half;
            for (int i = 0; i < half; i++) {
                real a = x1[i], b = x2[i];
                x1[i] = a * (real)c[i] - b * (real)s[i];
                x2[i] = b * (real)c[i] + a * (real)s[i];
            }
        }
    }
    free(c);
}

// The rotation is linear, so its gradient is the transposed matrix: dx1 = dy1·c + dy2·s;  dx2 = dy2·c − dy1·s
void OT_FN(ot_rope_bwd)(real *dx, const int32_t *pos, const float *inv_freq, float attn_factor, int T, int nh, int D) {
    if (D % 2)
        ot_die("ot_rope_bwd: head dim %d must be even", D);
    int half = D / 2;
    float *c = ot_malloc((size_t)D * sizeof(float)), *s = c + half;
    for (int t = 0; t < T; t++) {
        rope_cos_sin(c, s, pos[t], inv_freq, attn_factor, half);
        for (int h = 0; h < nh; h++) {
            real *d1 = dx + ((size_t)t * nh + h) * D, *d2 = d1 + half;
            for (int i = 0; i < half; i++) {
                real a = d1[i], b = d2[i];
                d1[i] = a * (real)c[i] + b * (real)s[i];
                d2[i] = b * (real)c[i] - a * (real)s[i];
            }
        }
    }
    free(c);
}
