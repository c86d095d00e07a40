// Dense linear layers (nn.Linear: y = x·Wᵀ + b) and their LoRA adapters with PEFT semantics.
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/cpu/cpu_math.h"
#include "kernels/ops.h"

// Tokens (or output rows) handled together, so each weight row is read once from memory per tile, not per token.
#define OT_MATMUL_TILE 8

void OT_FN(ot_matmul_fwd)(real *y, const real *x, const real *W, const real *b, int T, int in, int out) {
    for (int t0 = 0; t0 < T; t0 += OT_MATMUL_TILE) {
        int t1 = t0 + OT_MATMUL_TILE < T ? t0 + OT_MATMUL_TILE : T;
        for (int o = 0; o < out; o++) {
            const real *wo = W + (size_t)o * in;
            double bias = b ? (double)b[o] : 0.0;
            for (int t = t0; t < t1; t++)
                y[(size_t)t * out + o] = (real)(ot_dot_rr(x + (size_t)t * in, wo, in) + bias);
        }
    }
}

void OT_FN(ot_matmul_bwd)(real *dx, real *dW, real *db, const real *dy, const real *x, const real *W, int T, int in,
                          int out) {
    double *acc = ot_malloc((size_t)OT_MATMUL_TILE * in * sizeof(double));
    if (dx) { // dx[t, :] += Σ_o dy[t, o] · W[o, :]
        for (int t0 = 0; t0 < T; t0 += OT_MATMUL_TILE) {
            int t1 = t0 + OT_MATMUL_TILE < T ? t0 + OT_MATMUL_TILE : T;
            memset(acc, 0, (size_t)OT_MATMUL_TILE * in * sizeof(double));
            for (int o = 0; o < out; o++)
                for (int t = t0; t < t1; t++)
                    ot_axpy_r(acc + (size_t)(t - t0) * in, (double)dy[(size_t)t * out + o], W + (size_t)o * in, in);
            for (int t = t0; t < t1; t++)
                ot_add_acc(dx + (size_t)t * in, acc + (size_t)(t - t0) * in, in);
        }
    }
    if (dW) { // dW[o, :] += Σ_t dy[t, o] · x[t, :]
        for (int o0 = 0; o0 < out; o0 += OT_MATMUL_TILE) {
            int o1 = o0 + OT_MATMUL_TILE < out ? o0 + OT_MATMUL_TILE : out;
            memset(acc, 0, (size_t)OT_MATMUL_TILE * in * sizeof(double));
            for (int t = 0; t < T; t++)
                for (int o = o0; o < o1; o++)
                    ot_axpy_r(acc + (size_t)(o - o0) * in, (double)dy[(size_t)t * out + o], x + (size_t)t * in, in);
            for (int o = o0; o < o1; o++)
                ot_add_acc(dW + (size_t)o * in, acc + (size_t)(o - o0) * in, in);
        }
    }
    if (db) {
        for (int o = 0; o < out; o++) {
            double s = 0;
            for (int t = 0; t < T; t++)
                s += (double)dy[(size_t)t * out + o];
            db[o] = (real)((double)db[o] + s);
        }
    }
    free(acc);
}

// PEFT computes lora_B(lora_A(x)) · scaling with the intermediate xa = x·Aᵀ as a tensor of the element type;
// xa is rounded the same way here and kept for backward.
void OT_FN(ot_lora_fwd)(real *y, real *xa, const real *x, const real *A, const real *B, int T, int in, int r, int out,
                        float scale) {
    for (int t = 0; t < T; t++) {
        const real *xt = x + (size_t)t * in;
        real *xat = xa + (size_t)t * r;
        for (int j = 0; j < r; j++)
            xat[j] = (real)ot_dot_rr(xt, A + (size_t)j * in, in);
        real *yt = y + (size_t)t * out;
        for (int o = 0; o < out; o++)
            yt[o] = (real)((double)yt[o] + (double)scale * ot_dot_rr(xat, B + (size_t)o * r, r));
    }
}

// With dxa = scale · dy · B  [T, r]:  dB += scale · dyᵀ · xa;  dA += dxaᵀ · x;  dx += dxa · A
void OT_FN(ot_lora_bwd)(real *dx, real *dA, real *dB, const real *dy, const real *x, const real *xa, const real *A,
                        const real *B, int T, int in, int r, int out, float scale) {
    if (dB) {
        double *acc = ot_malloc((size_t)r * sizeof(double));
        for (int o = 0; o < out; o++) {
            memset(acc, 0, (size_t)r * sizeof(double));
            for (int t = 0; t < T; t++)
                ot_axpy_r(acc, (double)scale * (double)dy[(size_t)t * out + o], xa + (size_t)t * r, r);
            ot_add_acc(dB + (size_t)o * r, acc, r);
        }
        free(acc);
    }
    if (!dA && !dx)
        return;
    double *dxa = ot_calloc((size_t)T * r, sizeof(double));
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++)
            ot_axpy_r(dxa + (size_t)t * r, (double)scale * (double)dy[(size_t)t * out + o], B + (size_t)o * r, r);
    double *acc = ot_malloc((size_t)in * sizeof(double));
    if (dA) {
        for (int j = 0; j < r; j++) {
            memset(acc, 0, (size_t)in * sizeof(double));
            for (int t = 0; t < T; t++)
                ot_axpy_r(acc, dxa[(size_t)t * r + j], x + (size_t)t * in, in);
            ot_add_acc(dA + (size_t)j * in, acc, in);
        }
    }
    if (dx) {
        for (int t = 0; t < T; t++) {
            memset(acc, 0, (size_t)in * sizeof(double));
            for (int j = 0; j < r; j++)
                ot_axpy_r(acc, dxa[(size_t)t * r + j], A + (size_t)j * in, in);
            ot_add_acc(dx + (size_t)t * in, acc, in);
        }
    }
    free(acc);
    free(dxa);
}
