// One rank's share of a training step: packed rows of samples, flattened into T tokens.
// Rows never share a sample, so flattening the rows of a step keeps every sequence boundary: a token attends
// only within [seg_start[t], t] (and the sliding window), and positions restart at 0 for every sample.
#ifndef OT_TRAINER_BATCH_H
#define OT_TRAINER_BATCH_H

#include <stdint.h>

typedef struct {
    int T;              // tokens on this rank this step
    int32_t *ids;       // [T]
    int32_t *pos;       // [T] position within its sample (0-based)
    int32_t *seg_start; // [T] index (in 0..T-1) of the first token of its sample
    int n_targets;      // loss positions on this rank
    int32_t *tgt_pos;   // [n_targets] t: the logits at t are scored against tgt_label (= ids[t+1])
    int32_t *tgt_label; // [n_targets]
    int64_t global_targets; // loss positions of the whole global step, all ranks (the loss denominator)
    int n_samples;      // samples on this rank this step
    int64_t global_samples;
    // Rows: a step's unit of work and of deterministic gradient reduction. Row i holds tokens
    // [row_tok[i], row_tok[i+1]) and targets [row_tgt[i], row_tgt[i+1]); row_global[i] is its index in the global step.
    int n_rows;
    int32_t *row_tok, *row_tgt, *row_global;
    int capacity_tokens, capacity_targets, capacity_rows; // allocated sizes (internal)
} ot_batch;

void ot_batch_init(ot_batch *b);
void ot_batch_reserve(ot_batch *b, int tokens, int targets);
void ot_batch_clear(ot_batch *b);  // T = n_targets = 0, keeps memory
// Start a new row (global index within the step); samples added next belong to it. Without any call, the
// whole batch is one row.
void ot_batch_begin_row(ot_batch *b, int global_row);
// Copy row i of src into dst as a batch of its own (token indices rebased to 0).
void ot_batch_extract_row(const ot_batch *src, int i, ot_batch *dst);
// Append one sample; targets are t with t+1 >= loss_start (loss_start 0 or 1 = every next-token position).
void ot_batch_add_sample(ot_batch *b, const int32_t *ids, int n, int loss_start);
void ot_batch_free(ot_batch *b);

#endif
