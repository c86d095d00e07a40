#include "trainer/batch.h"

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
    b->T = 0;
    b->n_targets = 0;
    b->n_samples = 0;
    b->global_targets = 0;
    b->global_samples = 0;
}

void ot_batch_add_sample(ot_batch *b, const int32_t *ids, int n, int loss_start) {
    if (n <= 0) return;
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
}

void ot_batch_free(ot_batch *b) {
    free(b->ids);
    free(b->pos);
    free(b->seg_start);
    free(b->tgt_pos);
    free(b->tgt_label);
    memset(b, 0, sizeof *b);
}
