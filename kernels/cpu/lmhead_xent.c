// The output head fused with cross-entropy (spec §2.9, §2.10) at the selected target positions.
// V is 201,088 for gpt-oss, so the logits exist only for a block of targets at a time: [block, V], never [T, V].
#include <math.h>
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/cpu/cpu_math.h"
#include "kernels/ops.h"

#define OT_XENT_BLOCK 32

double OT_FN(ot_lmhead_xent)(real *dh, real *dWlm, const real *h, const real *Wlm, const int32_t *pos,
                             const int32_t *label, int n, int H, int V, float grad_scale) {
    int want_grad = dh || dWlm;
    real *logits = ot_malloc((size_t)OT_XENT_BLOCK * V * sizeof(real));
    double *acc = ot_malloc((size_t)OT_XENT_BLOCK * H * sizeof(double));
    double total = 0;
    for (int i0 = 0; i0 < n; i0 += OT_XENT_BLOCK) {
        int nb = n - i0 < OT_XENT_BLOCK ? n - i0 : OT_XENT_BLOCK;
        for (int b = 0; b < nb; b++) {
            if (pos[i0 + b] < 0)
                ot_die("ot_lmhead_xent: target %d has negative position %d", i0 + b, pos[i0 + b]);
            if (label[i0 + b] < 0 || label[i0 + b] >= V)
                ot_die("ot_lmhead_xent: target %d has label %d outside the vocabulary 0..%d", i0 + b, label[i0 + b],
                       V - 1);
        }
        // logits[b, v] = h[pos_b] · Wlm[v]: one vocabulary row is read once and used for the whole block; then
        // the loss, and (for gradients) the logits buffer becomes dlogits = grad_scale · (softmax − onehot) in
        // place. The pieces are those a sharded head runs block by block (lmhead_parts.c), so both give these bits.
        OT_FN(ot_lmhead_logits_part)(logits, V, h, Wlm, pos + i0, nb, H, V);
        total = OT_FN(ot_xent_rows)(logits, label + i0, nb, V, grad_scale, want_grad, total);
        if (!want_grad)
            continue;
        if (dh) { // dh[pos_b] += Σ_v dlogits[b, v] · Wlm[v]
            memset(acc, 0, (size_t)nb * H * sizeof(double));
            OT_FN(ot_lmhead_dh_part)(acc, logits, V, Wlm, nb, H, V);
            for (int b = 0; b < nb; b++)
                ot_add_acc(dh + (size_t)pos[i0 + b] * H, acc + (size_t)b * H, (size_t)H);
        }
        if (dWlm) { // dWlm[v] += Σ_b dlogits[b, v] · h[pos_b]; a [V, H] double buffer would be too large, so
                    // the sum is exact within a block and rounded once per block.
            for (int v = 0; v < V; v++) {
                memset(acc, 0, (size_t)H * sizeof(double));
                for (int b = 0; b < nb; b++)
                    ot_axpy_r(acc, (double)logits[(size_t)b * V + v], h + (size_t)pos[i0 + b] * H, H);
                ot_add_acc(dWlm + (size_t)v * H, acc, (size_t)H);
            }
        }
    }
    free(acc);
    free(logits);
    return total;
}
