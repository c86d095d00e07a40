#include "trainer/graph/batch.h"

#include <stdlib.h>
#include <string.h>

#include "common/ot_common.h"

void ot_batch_init(ot_batch *b) { memset(b, 0, sizeof *b); }

void ot_batch_reserve(ot_batch *b, int tokens, int targets) {
    if (tokens > b->capacity_tokens) {
        b->ids = ot_realloc(b->ids, sizeof(int32_t) * (size_t)tokens);
        b->pos = ot_realloc(b->pos, sizeof(int32_t) * (size_t)tokens);
        b->seg_start = ot_realloc(b->seg_start, sizeof(int32_t) * (size_t)tokens);
        b->capacity_tokens = tokens;
    }
    if (targets > b->capacity_targets) {
        b->tgt_pos = ot_realloc(b->tgt_pos, sizeof(int32_t) * (size_t)targets);
        b->tgt_label = ot_realloc(b->tgt_label, sizeof(int32_t) * (size_t)targets);
        b->capacity_targets = targets;
    }
}

void ot_batch_clear(ot_batch *b) {
    b->n_rows = 0;
    b->T = 0;
    b->n_targets = 0;
    b->n_samples = 0;
    b->global_targets = 0;
    b->global_samples = 0;
}

// Rows are closed lazily: row_tok[n_rows] / row_tgt[n_rows] always hold the current end.
static void rows_reserve(ot_batch *b, int rows) {
    if (rows + 1 <= b->capacity_rows) return;
    int cap = b->capacity_rows * 2 > rows + 1 ? b->capacity_rows * 2 : rows + 1;
    b->row_tok = ot_realloc(b->row_tok, sizeof(int32_t) * (size_t)cap);
    b->row_tgt = ot_realloc(b->row_tgt, sizeof(int32_t) * (size_t)cap);
    b->row_global = ot_realloc(b->row_global, sizeof(int32_t) * (size_t)cap);
    b->capacity_rows = cap;
}

void ot_batch_begin_row(ot_batch *b, int global_row) {
    rows_reserve(b, b->n_rows + 1);
    b->row_tok[b->n_rows] = b->T;
    b->row_tgt[b->n_rows] = b->n_targets;
    b->row_global[b->n_rows] = global_row;
    b->n_rows++;
    b->row_tok[b->n_rows] = b->T;
    b->row_tgt[b->n_rows] = b->n_targets;
}

void ot_batch_extract_row(const ot_batch *src, int i, ot_batch *dst) {
    ot_batch_clear(dst);
    int t0 = src->row_tok[i], t1 = src->row_tok[i + 1], g0 = src->row_tgt[i], g1 = src->row_tgt[i + 1];
    ot_batch_reserve(dst, t1 - t0, g1 - g0);
    ot_batch_begin_row(dst, src->row_global[i]);
    for (int t = t0; t < t1; t++) {
        dst->ids[t - t0] = src->ids[t];
        dst->pos[t - t0] = src->pos[t];
        dst->seg_start[t - t0] = src->seg_start[t] - t0;
    }
    for (int g = g0; g < g1; g++) {
        dst->tgt_pos[g - g0] = src->tgt_pos[g] - t0;
        dst->tgt_label[g - g0] = src->tgt_label[g];
    }
    dst->T = t1 - t0;
    dst->n_targets = g1 - g0;
    dst->row_tok[1] = dst->T;
    dst->row_tgt[1] = dst->n_targets;
    dst->global_targets = src->global_targets;
    dst->global_samples = src->global_samples;
}

void ot_batch_add_sample(ot_batch *b, const int32_t *ids, int n, int loss_start) {
    if (n <= 0) return;
    if (b->n_rows == 0) ot_batch_begin_row(b, 0);
    int need_t = b->T + n, need_g = b->n_targets + n;
    if (need_t > b->capacity_tokens || need_g > b->capacity_targets) {
        int ct = b->capacity_tokens * 2 > need_t ? b->capacity_tokens * 2 : need_t;
        int cg = b->capacity_targets * 2 > need_g ? b->capacity_targets * 2 : need_g;
        ot_batch_reserve(b, ct, cg);
    }
    int base = b->T;
    for (int i = 0; i < n; i++) {
        b->ids[base + i] = ids[i];
        b->pos[base + i] = i;
        b->seg_start[base + i] = base;
    }
    if (loss_start < 1) loss_start = 1;
    for (int t = loss_start - 1; t + 1 < n; t++) {
        b->tgt_pos[b->n_targets] = base + t;
        b->tgt_label[b->n_targets] = ids[t + 1];
        b->n_targets++;
    }
    b->T += n;
    b->n_samples++;
    b->row_tok[b->n_rows] = b->T;
    b->row_tgt[b->n_rows] = b->n_targets;
}

void ot_batch_free(ot_batch *b) {
    free(b->ids);
    free(b->pos);
    free(b->seg_start);
    free(b->tgt_pos);
    free(b->tgt_label);
    free(b->row_tok);
    free(b->row_tgt);
    free(b->row_global);
    memset(b, 0, sizeof *b);
}
