// Inner loops shared by the CPU kernels: dot products and scaled adds with double accumulation.
// Private to kernels/cpu/ (static inline, compiled into each float / double instantiation that includes it).
//
// Why four partial sums: the compiler may not reorder a floating-point reduction on its own, so a single
// accumulator runs at one add per FP latency. Four independent accumulators let it vectorise and pipeline,
// and because they are always combined as (a0 + a1) + (a2 + a3) the result is the same bits on every call.
#ifndef OT_KERNELS_CPU_MATH_H
#define OT_KERNELS_CPU_MATH_H

#include <math.h>
#include <stddef.h>

#include "kernels/cpu/real.h"

// Σ a[i]·b[i] in double, fixed order.
static inline double ot_dot_rr(const real *a, const real *b, int n) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += (double)a[i] * (double)b[i];
        a1 += (double)a[i + 1] * (double)b[i + 1];
        a2 += (double)a[i + 2] * (double)b[i + 2];
        a3 += (double)a[i + 3] * (double)b[i + 3];
    }
    for (; i < n; i++)
        a0 += (double)a[i] * (double)b[i];
    return (a0 + a1) + (a2 + a3);
}

// Σ a[i]·b[i] in double where b is a float row (a dequantized expert row, or float parameters).
static inline double ot_dot_rf(const real *a, const float *b, int n) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += (double)a[i] * (double)b[i];
        a1 += (double)a[i + 1] * (double)b[i + 1];
        a2 += (double)a[i + 2] * (double)b[i + 2];
        a3 += (double)a[i + 3] * (double)b[i + 3];
    }
    for (; i < n; i++)
        a0 += (double)a[i] * (double)b[i];
    return (a0 + a1) + (a2 + a3);
}

// acc[i] += alpha · x[i]  (every i is independent, so this vectorises without reordering anything)
static inline void ot_axpy_r(double *acc, double alpha, const real *x, int n) {
    for (int i = 0; i < n; i++)
        acc[i] += alpha * (double)x[i];
}
static inline void ot_axpy_f(double *acc, double alpha, const float *x, int n) {
    for (int i = 0; i < n; i++)
        acc[i] += alpha * (double)x[i];
}
static inline void ot_axpy_d(double *acc, double alpha, const double *x, int n) {
    for (int i = 0; i < n; i++)
        acc[i] += alpha * x[i];
}

// dst[i] += acc[i], rounded once to the element type: how every backward hands its double sums to the caller.
static inline void ot_add_acc(real *dst, const double *acc, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = (real)((double)dst[i] + acc[i]);
}

// One query row of attention with a sink, over keys lo..hi of kv head g (k and v rows are nkv·D apart):
// softmax over the scaled scores and the sink logit, the sink column dropped. Writes out_row[D] and returns
// log Σ exp over the row including the sink. score (hi − lo + 1 doubles) and acc (D doubles) are scratch.
// Shared by the training forward and the KV-cache decoder so the two compute the same bits.
static inline double ot_attend_row(real *out_row, const real *qi, const real *k, const real *v, int nkv, int g,
                                   int D, int lo, int hi, double sink, double scale, double *score, double *acc) {
    // Row maximum over the visible scores and the sink, as HF subtracts it before the softmax.
    double m = sink;
    for (int j = lo; j <= hi; j++) {
        double s = ot_dot_rr(qi, k + ((size_t)j * nkv + g) * D, D) * scale;
        score[j - lo] = s;
        if (s > m) m = s;
    }
    // The sink is a key whose value vector is zero: it adds to the normaliser only.
    double Z = exp(sink - m);
    for (int d = 0; d < D; d++) acc[d] = 0.0;
    for (int j = lo; j <= hi; j++) {
        double p = exp(score[j - lo] - m);
        Z += p;
        ot_axpy_r(acc, p, v + ((size_t)j * nkv + g) * D, D);
    }
    for (int d = 0; d < D; d++) out_row[d] = (real)(acc[d] / Z);
    return m + log(Z);
}

#endif
