// The work of one LoRA training step of the CUDA backend (frozen base, trainer/graph/gptoss_cuda.c), per op class
// of its time breakdown: floating-point operations, and the bytes each op cannot avoid moving (its operands read
// once from memory, its results written once). With the measured milliseconds per class this gives the roofline
// table of benchmarks/RESULTS.md: the achieved TFLOP/s and TB/s against the card's peaks, and which roof is nearer.
// A model of what the ops do, not a measurement: the classes made of many small memory-bound kernels
// (routing, norms) count their main reads and writes only.
#ifndef OT_BENCHMARKS_STEP_WORK_H
#define OT_BENCHMARKS_STEP_WORK_H

#include <stddef.h>

#include "formats/model_config.h"
#include "trainer/graph/batch.h"

// The op classes, in the order and with the names of ot_cuda_prof_names (trainer/graph/gptoss_cuda.h).
enum {
    OT_WORK_ATTENTION,
    OT_WORK_MOE_MATMUL,
    OT_WORK_MOE_LORA,
    OT_WORK_MOE_ROUTING,
    OT_WORK_DENSE_MATMUL,
    OT_WORK_LORA,
    OT_WORK_LM_HEAD,
    OT_WORK_NORM_ROPE,
    OT_WORK_OPTIMIZER,
    OT_WORK_N
};
extern const char *const ot_work_names[OT_WORK_N];

typedef struct {
    double flop, bytes;
} ot_op_work;

typedef struct {
    unsigned targets;   // LoRA targets, bit (1 << ot_lora_target) (formats/peft_adapter.h)
    int r;              // LoRA rank
    int recompute;      // 0: activations kept; 1: every layer's forward runs again before its backward; 2: its
                        // attention block's only (OT_RECOMPUTE_* of trainer/graph/gptoss_cuda.h)
    size_t lora_params; // adapter parameters (the optimizer's work)
} ot_step_shape;

// w[OT_WORK_N] for one step of batch b (its sequences, sliding windows and loss positions).
void ot_step_work(const ot_model_config *cfg, const ot_batch *b, const ot_step_shape *s, ot_op_work w[OT_WORK_N]);

#endif
