// The pieces of the output head's cross-entropy (kernels/ops_list.h): ot_lmhead_xent (lmhead_xent.c) runs them over
// the whole vocabulary, a sharded head block by block, so both give the same bits.
#include <math.h>

#include "common/ot_common.h"
#include "kernels/cpu/cpu_math.h"
#include "kernels/ops.h"

void OT_FN(ot_lmhead_logits_part)(real *logits, int V, const real *h, const real *W, const int32_t *pos, int nb,
                                  int H, int nv) {
    for (int j = 0; j < nv; j++) {
        const real *wv = W + (size_t)j * H;
        for (int b = 0; b < nb; b++)
            logits[(size_t)b * V + j] = (real)ot_dot_rr(h + (size_t)pos[b] * H, wv, H);
    }
}

double OT_FN(ot_xent_rows)(real *logits, const int32_t *label, int nb, int V, float grad_scale, int want_grad,
                           double total) {
    for (int b = 0; b < nb; b++) {
        if (label[b] < 0 || label[b] >= V)
            ot_die("ot_xent_rows: target %d has label %d outside the vocabulary 0..%d", b, label[b], V - 1);
        real *lb = logits + (size_t)b * V;
        double m = (double)lb[0], sum = 0;
        for (int v = 1; v < V; v++)
            if ((double)lb[v] > m)
                m = (double)lb[v];
        for (int v = 0; v < V; v++)
            sum += exp((double)lb[v] - m);
        double lse = m + log(sum);
        total += lse - (double)lb[label[b]];
        if (!want_grad)
            continue;
        for (int v = 0; v < V; v++)
            lb[v] = (real)((double)grad_scale * exp((double)lb[v] - lse));
        lb[label[b]] = (real)((double)lb[label[b]] - (double)grad_scale);
    }
    return total;
}

void OT_FN(ot_lmhead_dh_part)(double *acc, const real *logits, int V, const real *W, int nb, int H, int nv) {
    for (int j = 0; j < nv; j++) {
        const real *wv = W + (size_t)j * H;
        for (int b = 0; b < nb; b++)
            ot_axpy_r(acc + (size_t)b * H, (double)logits[(size_t)b * V + j], wv, H);
    }
}
