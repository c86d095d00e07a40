// Scaled dot-product attention as HF's eager gpt-oss path (spec §2.3, §2.5): GQA, causal mask with an optional
// sliding window, packed sequences (a query sees only its own sequence), and one learned sink logit per head.
#include <math.h>
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/cpu/cpu_math.h"
#include "kernels/ops.h"

static void check_shapes(const char *op, int nh, int nkv, int D) {
    if (nh <= 0 || nkv <= 0 || D <= 0 || nh % nkv)
        ot_die("%s: query heads %d must be a positive multiple of kv heads %d (head dim %d)", op, nh, nkv, D);
}

// First key visible to query i: the start of its sequence, moved up to the window's start on sliding layers.
static int first_visible_key(const int32_t *seg_start, int i, int window, const char *op) {
    int lo = seg_start[i];
    if (lo < 0 || lo > i)
        ot_die("%s: seg_start[%d] = %d is outside [0, %d]", op, i, lo, i);
    if (window > 0 && i - window + 1 > lo)
        lo = i - window + 1;
    return lo;
}

void OT_FN(ot_attention_fwd)(real *out, real *lse, const real *q, const real *k, const real *v, const real *sinks,
                             const int32_t *seg_start, int T, int nh, int nkv, int D, int window) {
    check_shapes("ot_attention_fwd", nh, nkv, D);
    int group = nh / nkv;
    double scale = 1.0 / sqrt((double)D);
    double *score = ot_malloc((size_t)T * sizeof(double));
    double *acc = ot_malloc((size_t)D * sizeof(double));
    for (int i = 0; i < T; i++) {
        int lo = first_visible_key(seg_start, i, window, "ot_attention_fwd");
        for (int h = 0; h < nh; h++) {
            int g = h / group;
            const real *qi = q + ((size_t)i * nh + h) * D;
            lse[(size_t)i * nh + h] = (real)ot_attend_row(out + ((size_t)i * nh + h) * D, qi, k, v, nkv, g, D, lo, i,
                                                           (double)sinks[h], scale, score, acc);
        }
    }
    free(acc);
    free(score);
}

// Probabilities are recomputed from the saved lse: p_j = exp(s_j − lse), p_sink = exp(sink − lse).
// With dp_j = dO·v_j and Δ = Σ_j p_j·dp_j (= dO·o, the sink's value being zero), the softmax backward gives
//   ds_j = p_j·(dp_j − Δ)  and for the sink column  dsink = p_sink·(0 − Δ),
// then dq = scale·Σ_j ds_j·k_j, dk_j += scale·ds_j·q, dv_j += p_j·dO. `out` is not needed: Δ is summed from
// the recomputed p, which matches the forward's own normalisation.
void OT_FN(ot_attention_bwd)(real *dq, real *dk, real *dv, real *dsinks, const real *dout, const real *out,
                             const real *lse, const real *q, const real *k, const real *v, const real *sinks,
                             const int32_t *seg_start, int T, int nh, int nkv, int D, int window) {
    check_shapes("ot_attention_bwd", nh, nkv, D);
    int group = nh / nkv;
    double scale = 1.0 / sqrt((double)D);
    size_t kv_n = (size_t)T * nkv * D;
    // Keys and values collect gradient from many queries (and heads): sum in double, round once at the end.
    double *dk_acc = dk ? ot_calloc(kv_n, sizeof(double)) : NULL;
    double *dv_acc = dv ? ot_calloc(kv_n, sizeof(double)) : NULL;
    double *dsink_acc = ot_calloc((size_t)nh, sizeof(double));
    double *p = ot_malloc((size_t)T * sizeof(double));
    double *dp = ot_malloc((size_t)T * sizeof(double));
    double *dq_acc = ot_malloc((size_t)D * sizeof(double));
    for (int i = 0; i < T; i++) {
        int lo = first_visible_key(seg_start, i, window, "ot_attention_bwd");
        for (int h = 0; h < nh; h++) {
            int g = h / group;
            size_t row = (size_t)i * nh + h;
            const real *qi = q + row * D, *doi = dout + row * D;
            double l = (double)lse[row];
            double delta = 0;
            for (int j = lo; j <= i; j++) {
                size_t kv = ((size_t)j * nkv + g) * D;
                p[j - lo] = exp(ot_dot_rr(qi, k + kv, D) * scale - l);
                dp[j - lo] = ot_dot_rr(doi, v + kv, D);
                delta += p[j - lo] * dp[j - lo];
            }
            dsink_acc[h] -= exp((double)sinks[h] - l) * delta;
            if (dq)
                memset(dq_acc, 0, (size_t)D * sizeof(double));
            for (int j = lo; j <= i; j++) {
                size_t kv = ((size_t)j * nkv + g) * D;
                double ds = p[j - lo] * (dp[j - lo] - delta) * scale;
                if (dq)
                    ot_axpy_r(dq_acc, ds, k + kv, D);
                if (dk_acc)
                    ot_axpy_r(dk_acc + kv, ds, qi, D);
                if (dv_acc)
                    ot_axpy_r(dv_acc + kv, p[j - lo], doi, D);
            }
            if (dq)
                ot_add_acc(dq + row * D, dq_acc, D);
        }
    }
    if (dk)
        ot_add_acc(dk, dk_acc, kv_n);
    if (dv)
        ot_add_acc(dv, dv_acc, kv_n);
    if (dsinks)
        ot_add_acc(dsinks, dsink_acc, nh);
    free(dq_acc);
    free(dp);
    free(p);
    free(dsink_acc);
    free(dv_acc);
    free(dk_acc);
}
