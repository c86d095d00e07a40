// The gpt-oss layer graph on the CPU reference kernels: forward, backward into the LoRA factors, logits.
#ifndef OT_TRAINER_GPTOSS_CPU_H
#define OT_TRAINER_GPTOSS_CPU_H

#include "trainer/batch.h"
#include "trainer/lora.h"
#include "trainer/model.h"

typedef struct ot_cpu_workspace ot_cpu_workspace; // activations kept for backward; grows with the batch

ot_cpu_workspace *ot_cpu_workspace_new(void);
void ot_cpu_workspace_free(ot_cpu_workspace *ws);

// Runs the model on batch b (lo may be NULL: base model only) and returns Σ cross-entropy over the batch's targets.
// With backward != 0 the LoRA gradients are ACCUMULATED into lo->grads, for the loss Σ_i grad_scale · CE_i
// (grad_scale = 1 / global target count gives the mean over the global batch).
double ot_cpu_forward_backward(const ot_model *m, ot_lora *lo, const ot_batch *b, float grad_scale, int backward,
                               ot_cpu_workspace *ws);

// Full training (osstune-train --full): the same loss, and the gradient of every base weight ACCUMULATED into g, a
// gradient view of m (trainer/full_params.h: g's pointers point into a buffer laid out like m->owned). The experts
// must be dense (bf16 in the file); MXFP4 experts are refused before this is reached.
double ot_cpu_forward_backward_full(const ot_model *m, const ot_model *g, const ot_batch *b, float grad_scale,
                                    ot_cpu_workspace *ws);

// Logits [b->T, vocab] for every position (what osstune-logits writes).
void ot_cpu_logits(const ot_model *m, const ot_lora *lo, const ot_batch *b, float *logits, ot_cpu_workspace *ws);

#endif
