// MoE router (spec §2.7): top-k of the raw logits first, then a softmax over the k selected values only.
#include <math.h>
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/cpu/real.h"
#include "kernels/ops.h"

void OT_FN(ot_router_topk_fwd)(int32_t *idx, real *w, const real *logits, int T, int E, int k) {
    if (k <= 0 || k > E)
        ot_die("ot_router_topk_fwd: experts per token %d must be in 1..%d", k, E);
    double *ex = ot_malloc((size_t)k * sizeof(double));
    for (int t = 0; t < T; t++) {
        const real *lt = logits + (size_t)t * E;
        int32_t *it = idx + (size_t)t * k;
        // k passes of a selection scan. A strict '>' keeps the first (lowest) index among equal logits, so
        // ties are broken the same way on every run; the selected values come out in descending order.
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int jj = 0; jj < j; jj++)
                    taken |= it[jj] == e;
                if (taken)
                    continue;
                if (best < 0 || lt[e] > lt[best])
                    best = e;
            }
            it[j] = best;
        }
        // Stable softmax: the first selected value is the maximum.
        double m = (double)lt[it[0]], sum = 0;
        for (int j = 0; j < k; j++)
            sum += ex[j] = exp((double)lt[it[j]] - m);
        for (int j = 0; j < k; j++)
            w[(size_t)t * k + j] = (real)(ex[j] / sum);
    }
    free(ex);
}

// Softmax backward over the k selected logits: dz_j = w_j·(dw_j − Σ_l w_l·dw_l); unselected logits get nothing.
void OT_FN(ot_router_topk_bwd)(real *dlogits, const real *dw, const real *w, const int32_t *idx, int T, int E, int k) {
    if (!dlogits)
        return;
    for (int t = 0; t < T; t++) {
        const real *wt = w + (size_t)t * k, *dwt = dw + (size_t)t * k;
        double dot = 0;
        for (int j = 0; j < k; j++)
            dot += (double)wt[j] * (double)dwt[j];
        for (int j = 0; j < k; j++) {
            int e = idx[(size_t)t * k + j];
            if (e < 0 || e >= E)
                ot_die("ot_router_topk_bwd: token %d choice %d is expert %d, outside 0..%d", t, j, e, E - 1);
            real *d = dlogits + (size_t)t * E + e;
            *d = (real)((double)*d + (double)wt[j] * ((double)dwt[j] - dot));
        }
    }
}
