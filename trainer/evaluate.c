#include "trainer/evaluate.h"
#include "trainer/model_shard.h"

#include <stdlib.h>

int ot_eval_loss(const ot_model *m, const ot_lora *lo, ot_pairs_h5 *pairs, ot_comm *comm, int64_t max_samples,
                 ot_cpu_workspace *ws, double *mean_loss, int64_t *n_targets, ot_err *err) {
    int64_t N = pairs->n_samples;
    if (max_samples > 0 && max_samples < N) N = max_samples;
    const int W = comm->size, r = comm->rank;
    int64_t begin = N * r / W, end = N * (r + 1) / W;
    // One slot per sample: (loss hi, loss lo, targets) as floats; the ordered sum adds them in sample order in double.
    float *slots = ot_calloc((size_t)(end - begin) * 3 + 3, sizeof(float));
    int32_t *ids = ot_malloc(sizeof(int32_t) * (size_t)(pairs->max_sample_len + 1));
    ot_batch b;
    ot_batch_init(&b);
    int rc = 0;
    // A sharded model's passes are collective: every rank runs ceil(N / W) of them, an idle one where it has no
    // sample left (or after a local failure), so no peer waits for a gather that never comes.
    const int64_t passes = m->shard ? (N + W - 1) / W : end - begin;
    for (int64_t i = begin; i < begin + passes; i++) {
        if (i >= end || rc) {
            ot_model_idle_pass(m, 0);
            continue;
        }
        if (ot_pairs_h5_read(pairs, i, ids, err)) {
            rc = -1;
            continue;
        }
        ot_batch_clear(&b);
        ot_batch_add_sample(&b, ids, ot_pairs_h5_sample_len(pairs, i), (int)pairs->loss_start[i]);
        double loss = ot_cpu_forward_backward(m, (ot_lora *)lo, &b, 0.0f, 0, ws);
        float *s = slots + 3 * (i - begin);
        s[0] = (float)loss;
        s[1] = (float)(loss - (double)s[0]);
        s[2] = (float)b.n_targets; // exact: a sample has far fewer than 2^24 targets
    }
    // Every rank must enter the collective even after a local failure, or its peers would wait for the watchdog.
    float total[3] = {0, 0, 0};
    if (ot_comm_all_reduce_ordered(comm, slots, rc ? 0 : (int)(end - begin), 3, total, rc ? NULL : err)) rc = -1;
    ot_batch_free(&b);
    free(ids);
    free(slots);
    if (rc) return -1;
    *n_targets = (int64_t)total[2];
    *mean_loss = total[2] > 0 ? ((double)total[0] + (double)total[1]) / (double)total[2] : 0.0;
    return 0;
}
