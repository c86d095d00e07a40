// One ot_cpu_decoder per slot; a step's tokens are split into runs of one slot and appended run by run.
#include "infer/decode_cpu_batch.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const ot_model *m;
    int S, L;
    ot_cpu_decoder **d; // [S]
    float *row;         // [V] logits of one prediction when the caller wants only the pick
} cpu_batch;

static int cpu_batch_step(void *state, const int32_t *ids, const int32_t *slot, const int32_t *pos, int T,
                          const int32_t *rows, int n_out, float *logits, int32_t *next, ot_err *err) {
    cpu_batch *b = state;
    const int V = b->m->cfg.vocab_size;
    int done_out = 0;
    for (int t0 = 0; t0 < T;) {
        int s = slot[t0], t1 = t0 + 1;
        while (t1 < T && slot[t1] == s) t1++;
        if (s < 0 || s >= b->S)
            return ot_fail(err, "CPU batch decoder: step token %d is in slot %d (there are %d)", t0, s, b->S);
        for (int t = t0; t < t1; t++)
            if (pos[t] != pos[t0] + (t - t0) || pos[t] >= b->L)
                return ot_fail(err, "CPU batch decoder: step token %d at position %d breaks slot %d's run (from %d, "
                               "at most %d positions)", t, pos[t], s, pos[t0], b->L);
        if (pos[t0] > ot_cpu_decoder_len(b->d[s]))
            return ot_fail(err, "CPU batch decoder: slot %d holds %d positions, the step continues at %d", s,
                           ot_cpu_decoder_len(b->d[s]), pos[t0]);
        ot_cpu_decoder_truncate(b->d[s], pos[t0]); // position 0: a new sequence
        // the prediction of this run, if one is wanted: only after the run's last token
        int want = -1;
        for (int i = 0; i < n_out; i++)
            if (rows[i] >= t0 && rows[i] < t1) {
                if (rows[i] != t1 - 1)
                    return ot_fail(err, "CPU batch decoder: prediction row %d is not the last token of slot %d's run",
                                   rows[i], s);
                want = i;
            }
        float *dst = want < 0 ? NULL : logits ? logits + (size_t)want * V : b->row;
        if (ot_cpu_decoder_append(b->d[s], ids + t0, t1 - t0, dst, dst ? OT_LOGITS_LAST : OT_LOGITS_NONE, err))
            return -1;
        if (want >= 0) {
            if (next) next[want] = ot_sample_token(dst, V, 0.0f, 1.0f, NULL);
            done_out++;
        }
        t0 = t1;
    }
    if (done_out != n_out)
        return ot_fail(err, "CPU batch decoder: %d of %d prediction rows are not tokens of the step", n_out - done_out,
                       n_out);
    return 0;
}

static void cpu_batch_destroy(void *state) {
    cpu_batch *b = state;
    for (int s = 0; s < b->S; s++) ot_cpu_decoder_free(b->d[s]);
    free(b->d);
    free(b->row);
    free(b);
}

int ot_batch_decoder_open_cpu(ot_batch_decoder *dec, const ot_model *m, const ot_lora *lo, int n_slots, int max_len,
                              int max_step_tokens, ot_err *err) {
    memset(dec, 0, sizeof *dec);
    if (n_slots < 1 || max_len < 1 || max_step_tokens <= n_slots)
        return ot_fail(err, "CPU batch decoder: %d slots of %d positions with %d tokens per step (need slots >= 1, "
                       "positions >= 1, tokens per step > slots)", n_slots, max_len, max_step_tokens);
    if (max_len > m->cfg.max_position_embeddings)
        return ot_fail(err, "CPU batch decoder: %d positions per sequence pass the model's max_position_embeddings %d",
                       max_len, m->cfg.max_position_embeddings);
    if (lo && lo->n_layers != m->cfg.num_hidden_layers)
        return ot_fail(err, "decoder: the adapter has %d layers, the model %d", lo->n_layers, m->cfg.num_hidden_layers);
    cpu_batch *b = ot_calloc(1, sizeof *b);
    b->m = m;
    b->S = n_slots;
    b->L = max_len;
    b->d = ot_calloc((size_t)n_slots, sizeof(ot_cpu_decoder *));
    for (int s = 0; s < n_slots; s++) b->d[s] = ot_cpu_decoder_new(m, lo);
    b->row = ot_malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    *dec = (ot_batch_decoder){"cpu", m->cfg.vocab_size, n_slots, max_len, max_step_tokens, b, cpu_batch_step,
                              cpu_batch_destroy};
    return 0;
}
