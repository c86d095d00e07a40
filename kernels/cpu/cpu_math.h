// Inner loops shared by the CPU kernels: dot products and scaled adds with double accumulation.
// Private to kernels/cpu/ (static inline, compiled into each float / double instantiation that includes it).
//
// Why four partial sums: the compiler may not reorder a floating-point reduction on its own, so a single
// accumulator runs at one add per FP latency. Four independent accumulators let it vectorise and pipeline,
// and because they are always combined as (a0 + a1) + (a2 + a3) the result is the same bits on every call.
#ifndef OT_KERNELS_CPU_MATH_H
#define OT_KERNELS_CPU_MATH_H

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

#endif
