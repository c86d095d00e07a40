// One expert's linear map on the rows routed to it. The weights stay as stored (MXFP4 stays 4-bit in memory):
// each weight row is dequantized into a small float buffer once and then used for all n rows of the group.
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/cpu/cpu_math.h"
#include "kernels/ops.h"

#ifndef OT_REAL_DOUBLE
void ot_expert_weight_row(float *out, const ot_expert_weight *W, int e, int r) {
    if (e < 0 || e >= W->n_experts || r < 0 || r >= W->rows)
        ot_die("ot_expert_weight_row: expert %d row %d outside [%d experts, %d rows]", e, r, W->n_experts, W->rows);
    size_t row = (size_t)e * W->rows + r;
    if (W->kind == OT_EXPERT_MXFP4) {
        if (W->cols % 32)
            ot_die("ot_expert_weight_row: MXFP4 row length %d is not a multiple of 32", W->cols);
        size_t groups = (size_t)W->cols / 32;
        ot_mxfp4_dequant_row(out, W->blocks + row * groups * 16, W->scales + row * groups, W->cols);
    } else if (W->kind == OT_EXPERT_DENSE) {
        memcpy(out, W->dense + row * W->cols, (size_t)W->cols * sizeof(float));
    } else {
        ot_die("ot_expert_weight_row: unknown expert weight kind %d", W->kind);
    }
}
#endif

void OT_FN(ot_expert_matmul_fwd)(real *y, const real *x, const ot_expert_weight *W, int e, const float *bias_e, int n) {
    int in = W->cols, out = W->rows;
    float *wrow = ot_malloc((size_t)in * sizeof(float));
    for (int r = 0; r < out; r++) {
        ot_expert_weight_row(wrow, W, e, r);
        double b = bias_e ? (double)bias_e[r] : 0.0;
        for (int t = 0; t < n; t++)
            y[(size_t)t * out + r] = (real)(ot_dot_rf(x + (size_t)t * in, wrow, in) + b);
    }
    free(wrow);
}

// dx[t, :] += Σ_r dy[t, r] · W_e[r, :], summed in double over all rows before rounding.
void OT_FN(ot_expert_matmul_bwd)(real *dx, const real *dy, const ot_expert_weight *W, int e, int n) {
    if (!dx)
        return;
    int in = W->cols, out = W->rows;
    float *wrow = ot_malloc((size_t)in * sizeof(float));
    double *acc = ot_calloc((size_t)n * in, sizeof(double));
    for (int r = 0; r < out; r++) {
        ot_expert_weight_row(wrow, W, e, r);
        for (int t = 0; t < n; t++)
            ot_axpy_f(acc + (size_t)t * in, (double)dy[(size_t)t * out + r], wrow, in);
    }
    for (int t = 0; t < n; t++)
        ot_add_acc(dx + (size_t)t * in, acc + (size_t)t * in, (size_t)in);
    free(acc);
    free(wrow);
}

// Each weight element sums over the group's rows in double and is rounded once; the row order is the group's,
// so repeated calls give the same bits.
void OT_FN(ot_expert_matmul_bwd_weight)(real *dW_e, real *db_e, const real *dy, const real *x,
                                        const ot_expert_weight *W, int n) {
    if (W->kind != OT_EXPERT_DENSE)
        ot_die("ot_expert_matmul_bwd_weight: expert weights of kind %d are not trainable: only dense (bf16 in the "
               "file) experts get a weight gradient; MXFP4 experts are frozen",
               W->kind);
    int in = W->cols, out = W->rows;
    double *acc = ot_malloc((size_t)in * sizeof(double));
    for (int r = 0; r < out; r++) {
        double bsum = 0;
        memset(acc, 0, (size_t)in * sizeof(double));
        for (int t = 0; t < n; t++) {
            double g = (double)dy[(size_t)t * out + r];
            bsum += g;
            if (dW_e)
                ot_axpy_r(acc, g, x + (size_t)t * in, in);
        }
        if (dW_e)
            ot_add_acc(dW_e + (size_t)r * in, acc, (size_t)in);
        if (db_e)
            db_e[r] = (real)((double)db_e[r] + bsum);
    }
    free(acc);
}
