// RMSNorm as HF GptOssRMSNorm (spec §2.1): y = x · rsqrt(mean(x²) + eps) · w, no bias, no "1 + w".
#include <math.h>
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/cpu/cpu_math.h"
#include "kernels/ops.h"

void OT_FN(ot_rmsnorm_fwd)(real *y, real *rstd, const real *x, const real *w, int T, int H, float eps) {
    for (int t = 0; t < T; t++) {
        const real *xt = x + (size_t)t * H;
        real *yt = y + (size_t)t * H;
        double ms = ot_dot_rr(xt, xt, H) / H;
        // Rounded to the element type before use, as HF rounds its fp32 rsqrt; backward reuses this exact value.
        real r = (real)(1.0 / sqrt(ms + (double)eps));
        rstd[t] = r;
        // Two roundings as in HF: hidden = x·rstd (fp32), then w·hidden (fp32).
        for (int i = 0; i < H; i++)
            yt[i] = w[i] * (real)(xt[i] * r);
    }
}

// With r = rstd[t] and g_i = dy_i · w_i:
//   dx_i = r · g_i − r³ · x_i · (Σ_k g_k x_k) / H,   dw_i = Σ_t dy_i · x_i · r
void OT_FN(ot_rmsnorm_bwd)(real *dx, real *dw, const real *dy, const real *x, const real *w, const real *rstd, int T,
                           int H) {
    double *dw_acc = dw ? ot_calloc((size_t)H, sizeof(double)) : NULL;
    for (int t = 0; t < T; t++) {
        const real *xt = x + (size_t)t * H, *dyt = dy + (size_t)t * H;
        double r = (double)rstd[t];
        if (dx) {
            double gx = 0;
            for (int i = 0; i < H; i++)
                gx += (double)dyt[i] * (double)w[i] * (double)xt[i];
            double c = r * r * r * gx / H;
            real *dxt = dx + (size_t)t * H;
            for (int i = 0; i < H; i++)
                dxt[i] = (real)((double)dxt[i] + r * (double)dyt[i] * (double)w[i] - c * (double)xt[i]);
        }
        if (dw_acc)
            for (int i = 0; i < H; i++)
                dw_acc[i] += (double)dyt[i] * (double)xt[i] * r;
    }
    if (dw)
        ot_add_acc(dw, dw_acc, H);
    free(dw_acc);
}
