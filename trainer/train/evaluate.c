#include "trainer/train/evaluate.h"

#include <stdlib.h>

#include "trainer/train/run_log.h"

// Passes rank samples [begin, end) need, packed as ot_eval_loss packs them.
static int64_t count_passes(ot_pairs_h5 *pairs, int64_t begin, int64_t end, int pack_tokens) {
    int64_t passes = 0;
    for (int64_t i = begin; i < end; passes++)
        for (int T = 0; i < end && !(T > 0 && T + ot_pairs_h5_sample_len(pairs, i) > pack_tokens); i++)
            T += ot_pairs_h5_sample_len(pairs, i);
    return passes;
}

int ot_eval_open(ot_pairs_h5 *pairs, const char *path, int vocab_size, int64_t max_samples, ot_err *err) {
    if (ot_pairs_h5_open(pairs, path, err)) return -1;
    int64_t n = max_samples > 0 && max_samples < pairs->n_samples ? max_samples : pairs->n_samples, targets = 0;
    for (int64_t i = 0; i < n; i++) targets += ot_pairs_h5_sample_targets(pairs, i, 0);
    int rc = ot_pairs_h5_check_vocab(pairs, "--eval-data", vocab_size, err);
    if (!rc) rc = ot_pairs_h5_verify(pairs, err);
    if (!rc && targets == 0)
        rc = ot_fail(err, "--eval-data %s: none of the %lld samples validated has a loss target (each is a single "
                     "token, or its answer starts at its end): there is nothing to validate", path, (long long)n);
    if (rc) ot_pairs_h5_close(pairs);
    return rc;
}

int ot_eval_loss(const ot_evaluator *e, ot_pairs_h5 *pairs, ot_comm *comm, int64_t max_samples, double *mean_loss,
                 int64_t *n_targets, ot_err *err) {
    int64_t N = pairs->n_samples;
    if (max_samples > 0 && max_samples < N) N = max_samples;
    const int W = comm->size, rk = comm->rank;
    const int64_t begin = N * rk / W, end = N * (rk + 1) / W;
    const int pack_tokens = e->pack_tokens < 1 ? 1 : e->pack_tokens;
    // One slot per forward pass: (loss hi, loss lo, targets) as floats, summed in pass order over the ranks.
    float *slots = ot_calloc((size_t)(end - begin) * 3 + 3, sizeof(float));
    int32_t *ids = ot_malloc(sizeof(int32_t) * (size_t)(pairs->max_sample_len + 1));
    ot_batch b;
    ot_batch_init(&b);
    int rc = 0, n_slots = 0;
    // Collective passes: every rank makes as many as the rank with the most (the gathers of a sharded model are
    // collective), agreed before the first pass from the sample lengths.
    int64_t passes = 0;
    if (e->collective) {
        int64_t mine = count_passes(pairs, begin, end, pack_tokens);
        if (ot_comm_all_reduce(comm, &mine, &passes, 1, OT_COMM_I64, OT_COMM_MAX, err)) rc = -1;
    }
    for (int64_t i = begin; i < end && !rc;) {
        ot_batch_clear(&b);
        while (i < end) { // whole samples up to pack_tokens (a longer sample goes alone)
            int len = ot_pairs_h5_sample_len(pairs, i);
            if (b.T > 0 && b.T + len > pack_tokens) break;
            if (ot_pairs_h5_read(pairs, i, ids, err) || ot_pairs_h5_check_ids(pairs, i, ids, e->vocab_size, err)) {
                rc = -1;
                break;
            }
            ot_batch_add_sample(&b, ids, len, (int)pairs->loss_start[i]);
            i++;
        }
        double loss = 0;
        if (rc || e->forward(e->ctx, &b, &loss, err)) {
            rc = -1;
            break;
        }
        float *s = slots + 3 * n_slots++;
        ot_loss_pair(s, loss); // s[0], s[1]
        s[2] = (float)b.n_targets; // exact: a pass has far fewer than 2^24 targets
    }
    // After the last pass, or a local failure: the passes the other ranks still make, without tokens.
    ot_batch_clear(&b);
    ot_err ignored;
    for (int64_t p = n_slots; p < passes; p++) e->forward(e->ctx, &b, &(double){0}, &ignored);
    // Every rank enters the collective even after a local failure, or its peers would wait for the watchdog.
    float total[3] = {0, 0, 0};
    if (ot_comm_all_reduce_ordered(comm, slots, rc ? 0 : n_slots, 3, total, rc ? NULL : err)) rc = -1;
    // ...and every rank learns of a failure anywhere, so the run stops on all ranks together (after rank 0 saved).
    int64_t failed = rc != 0, any_failed = failed;
    if (comm->size > 1 && ot_comm_all_reduce(comm, &failed, &any_failed, 1, OT_COMM_I64, OT_COMM_MAX, failed ? NULL : err))
        rc = -1;
    else if (any_failed && !failed)
        rc = ot_fail(err, "validation failed on another rank (its message says why)");
    ot_batch_free(&b);
    free(ids);
    free(slots);
    if (rc) return -1;
    *n_targets = (int64_t)total[2];
    *mean_loss = total[2] > 0 ? ((double)total[0] + (double)total[1]) / (double)total[2] : 0.0;
    return 0;
}
