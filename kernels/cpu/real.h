// The CPU reference is written once and compiled twice: as float (the reference the trainer uses, names
// `ot_xxx`) and as double (names `ot_xxx_f64`, used by the finite-difference gradient checks). A kernel source
// includes this header and writes `real` for its element type and OT_FN(ot_xxx) for each public name.
// Accumulations are always in double, whichever `real` is.
#ifndef OT_KERNELS_CPU_REAL_H
#define OT_KERNELS_CPU_REAL_H

#ifdef OT_REAL_DOUBLE
typedef double real;
#define OT_FN(name) name##_f64
#else
typedef float real;
#define OT_FN(name) name
#endif

#endif
