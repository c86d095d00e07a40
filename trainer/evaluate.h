// Validation loss during training: the mean cross-entropy over the answer tokens of a pairs file, computed by all
// ranks together (samples dealt in contiguous blocks) and summed in sample order, so the number does not depend
// on the number of ranks.
#ifndef OT_TRAINER_EVALUATE_H
#define OT_TRAINER_EVALUATE_H

#include "comm/comm.h"
#include "formats/pairs_h5.h"
#include "trainer/gptoss_cpu.h"

// Evaluates the first max_samples samples (all when <= 0). *mean_loss = Σ CE / *n_targets.
int ot_eval_loss(const ot_model *m, const ot_lora *lo, ot_pairs_h5 *pairs, ot_comm *comm, int64_t max_samples,
                 ot_cpu_workspace *ws, double *mean_loss, int64_t *n_targets, ot_err *err);

#endif
