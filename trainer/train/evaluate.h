// Validation loss during training: the mean cross-entropy over the answer tokens of a pairs file, computed by all
// ranks together (samples dealt in contiguous blocks) and summed in sample order, so the number does not depend
// on the number of ranks. One evaluator for every backend: the backend gives a forward pass that returns a loss.
#ifndef OT_TRAIN_EVALUATE_H
#define OT_TRAIN_EVALUATE_H

#include "comm/comm.h"
#include "formats/pairs_h5.h"
#include "trainer/graph/batch.h"

// Σ cross-entropy over b's targets (no backward). An empty batch (T = 0) is a pass without tokens: a sharded
// model still takes part in its gathers.
typedef int (*ot_eval_forward_fn)(void *ctx, const ot_batch *b, double *loss_sum, ot_err *err);

typedef struct {
    ot_eval_forward_fn forward;
    void *ctx;
    int pack_tokens; // samples packed into passes of up to this many tokens (a longer one alone; 1: one per pass)
    int collective;  // 1: every rank makes as many passes as the rank with the most (sharded base weights)
    int vocab_size;  // the model's: every id is checked against it before a pass uses it
} ot_evaluator;

// Opens the validation file and checks all of it before training starts (its schema, every token read once, its
// vocabulary against the model's, loss targets among the first max_samples samples), so a bad --eval-data stops the
// run at start-up rather than at its first validation. 0, or -1 with a message (pairs closed).
int ot_eval_open(ot_pairs_h5 *pairs, const char *path, int vocab_size, int64_t max_samples, ot_err *err);

// Evaluates the first max_samples samples (all when <= 0). *mean_loss = Σ CE / *n_targets. Every rank calls; when
// any rank fails, every rank returns -1 (the others with a message saying so).
int ot_eval_loss(const ot_evaluator *e, ot_pairs_h5 *pairs, ot_comm *comm, int64_t max_samples, double *mean_loss,
                 int64_t *n_targets, ot_err *err);

#endif
