// gpt-oss clamped SwiGLU (spec §2.8) on interleaved gate/up columns: gate = gu[2i], up = gu[2i+1].
#include <math.h>

#include "common/ot_common.h"
#include "kernels/cpu/real.h"
#include "kernels/ops.h"

void OT_FN(ot_swiglu_fwd)(real *act, const real *gu, int n, int I, float alpha, float limit) {
    double a = alpha, lim = limit;
    for (size_t r = 0; r < (size_t)n; r++) {
        const real *g2 = gu + r * 2 * I;
        for (int i = 0; i < I; i++) {
            double gate = (double)g2[2 * i], up = (double)g2[2 * i + 1];
            gate = gate > lim ? lim : gate; // upper bound only
            up = up > lim ? lim : up < -lim ? -lim : up;
            double sig = 1.0 / (1.0 + exp(-a * gate));
            act[r * I + i] = (real)((up + 1.0) * gate * sig);
        }
    }
}

// d act/d gate = (up + 1)·(σ(αg) + αg·σ(αg)(1 − σ(αg))), d act/d up = g·σ(αg). torch's clamp passes gradient
// where the input lies inside the closed interval (value == limit included) and none outside it.
void OT_FN(ot_swiglu_bwd)(real *dgu, const real *dact, const real *gu, int n, int I, float alpha, float limit) {
    if (!dgu)
        return;
    double a = alpha, lim = limit;
    for (size_t r = 0; r < (size_t)n; r++) {
        const real *g2 = gu + r * 2 * I;
        real *d2 = dgu + r * 2 * I;
        for (int i = 0; i < I; i++) {
            double gate_in = (double)g2[2 * i], up_in = (double)g2[2 * i + 1];
            double gate = gate_in > lim ? lim : gate_in;
            double up = up_in > lim ? lim : up_in < -lim ? -lim : up_in;
            double sig = 1.0 / (1.0 + exp(-a * gate));
            double da = (double)dact[r * I + i];
            double dgate = gate_in <= lim ? da * (up + 1.0) * (sig + a * gate * sig * (1.0 - sig)) : 0.0;
            double dup = (up_in >= -lim && up_in <= lim) ? da * gate * sig : 0.0;
            d2[2 * i] = (real)((double)d2[2 * i] + dgate);
            d2[2 * i + 1] = (real)((double)d2[2 * i + 1] + dup);
        }
    }
}
