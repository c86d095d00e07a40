// MoE routing (spec §2.7) around the experts: the plan that groups the (token, slot) pairs by expert, the weighted
// combine back per token with its backward, and the routing weights' gradient from the down projection's input
// gradient. CPU twins of kernels/cuda/moe_plan.cu.
#include <stdlib.h>
#include <string.h>

#include "common/ot_common.h"
#include "kernels/cpu/real.h"
#include "kernels/ops.h"

#ifndef OT_REAL_DOUBLE
void ot_moe_plan(int32_t *offsets, int32_t *perm, int32_t *inv, const int32_t *idx, int n_pairs, int E) {
    memset(offsets, 0, sizeof(int32_t) * (size_t)(E + 1));
    for (int q = 0; q < n_pairs; q++) {
        if (idx[q] < 0 || idx[q] >= E) ot_die("ot_moe_plan: pair %d routes to expert %d of %d", q, idx[q], E);
        offsets[idx[q] + 1]++;
    }
    for (int e = 0; e < E; e++) offsets[e + 1] += offsets[e];
    int32_t *fill = ot_malloc(sizeof(int32_t) * (size_t)(E ? E : 1));
    memcpy(fill, offsets, sizeof(int32_t) * (size_t)E);
    for (int q = 0; q < n_pairs; q++) { // increasing pair id: each expert's group stays in pair order
        int32_t row = fill[idx[q]]++;
        perm[row] = q;
        if (inv) inv[q] = row;
    }
    free(fill);
}
#endif

void OT_FN(ot_moe_combine_fwd)(real *out, const real *y, const real *w, const int32_t *inv, int T, int k, int H) {
    memset(out, 0, sizeof(real) * (size_t)T * H);
    for (int t = 0; t < T; t++)
        for (int s = 0; s < k; s++) {
            const real *yr = y + (size_t)inv[t * k + s] * H;
            real wt = w[t * k + s];
            real *o = out + (size_t)t * H;
            for (int j = 0; j < H; j++) o[j] += wt * yr[j];
        }
}

void OT_FN(ot_moe_combine_bwd)(real *dy, real *dw, const real *dout, const real *y, const real *w,
                               const int32_t *perm, int n_pairs, int k, int H) {
    for (int p = 0; p < n_pairs; p++) {
        const int q = perm[p];
        const real *g = dout + (size_t)(q / k) * H, *yr = y + (size_t)p * H;
        real *d = dy + (size_t)p * H;
        const real wt = w[q];
        double dot = 0;
        for (int j = 0; j < H; j++) {
            d[j] = wt * g[j];
            dot += (double)g[j] * yr[j];
        }
        if (dw) dw[q] += (real)dot;
    }
}

void OT_FN(ot_moe_route_grad)(real *dw, const real *dact, const real *act, const real *dout, const real *bias,
                              const real *w, const int32_t *idx, const int32_t *perm, int n_pairs, int k, int I,
                              int H) {
    for (int p = 0; p < n_pairs; p++) {
        const int q = perm[p];
        if (w[q] == 0) continue;
        const real *d = dact + (size_t)p * I, *a = act + (size_t)p * I;
        double dot = 0, bias_dot = 0;
        for (int i = 0; i < I; i++) dot += (double)d[i] * a[i];
        if (bias) {
            const real *g = dout + (size_t)(q / k) * H, *b = bias + (size_t)idx[q] * H;
            for (int j = 0; j < H; j++) bias_dot += (double)g[j] * b[j];
        }
        dw[q] += (real)(dot / w[q] + bias_dot);
    }
}

void OT_FN(ot_moe_unpermute_add)(real *dx, const real *dx_perm, const int32_t *perm, int n_pairs, int k, int H) {
    for (int p = 0; p < n_pairs; p++) {
        real *d = dx + (size_t)(perm[p] / k) * H;
        const real *src = dx_perm + (size_t)p * H;
        for (int j = 0; j < H; j++) d[j] += src[j];
    }
}
