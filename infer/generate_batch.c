// Continuous batching over an ot_batch_decoder (see generate_batch.h): the slot scheduler, sampling and stopping
// per sequence, and the answer of each finished sequence.
#include "infer/generate_batch.h"

#include <stdlib.h>
#include <string.h>

void ot_batch_decoder_close(ot_batch_decoder *dec) {
    if (dec->destroy && dec->state) dec->destroy(dec->state);
    dec->state = NULL;
}

int ot_batch_max_len(const ot_ids *prompts, long n, const ot_gen_options *o) {
    int longest = 1;
    for (long i = 0; i < n; i++)
        if (prompts[i].n > longest) longest = prompts[i].n;
    return longest + o->max_new_tokens - 1;
}

typedef struct {
    long idx;        // the sentence this slot decodes, -1 when free
    int fed;         // prompt tokens fed so far
    ot_ids out;      // generated ids
    ot_rng rng;      // the sentence's random stream (as ot_translate seeds it)
} slot_state;

static int stop_index(int id, const int32_t *stop_ids, int n_stop) {
    for (int i = 0; i < n_stop; i++)
        if (stop_ids[i] == id) return i;
    return -1;
}

// The sentence in slot s ended (stop = index in stop_ids, or -1 at the token limit): its answer into out[idx].
static int finish(const ot_harmony *h, slot_state *st, const ot_ids *prompt, int stop, ot_translation *t,
                  ot_err *err) {
    memset(t, 0, sizeof *t);
    t->stop = stop == 0 ? OT_STOP_RETURN : stop == 1 ? OT_STOP_CALL : OT_STOP_LIMIT;
    t->prompt_tokens = prompt->n;
    t->new_tokens = st->out.n;
    t->text = ot_harmony_answer(h, st->out.v, st->out.n, &t->answer, err);
    if (!t->text) return -1;
    ot_text_one_line(t->text);
    return 0;
}

int ot_translate_batch(ot_batch_decoder *dec, const ot_harmony *h, const ot_ids *prompts, long n,
                       const ot_gen_options *o, uint64_t seed, ot_translation *out, ot_batch_done_fn done, void *user,
                       ot_err *err) {
    const int S = dec->n_slots, budget = dec->max_step_tokens, V = dec->vocab;
    if (o->max_new_tokens < 1) return ot_fail(err, "generate: max_new_tokens %d must be >= 1", o->max_new_tokens);
    if (S < 1 || budget <= S)
        return ot_fail(err, "batched generation: %d slots need more than %d tokens per step", S, budget);
    for (long i = 0; i < n; i++) {
        if (prompts[i].n < 1) return ot_fail(err, "input %ld: the prompt is empty", i);
        if ((long)prompts[i].n + o->max_new_tokens - 1 > dec->max_len)
            return ot_fail(err, "input %ld: a prompt of %d tokens plus %d new ones passes the decoder's %d positions",
                           i, prompts[i].n, o->max_new_tokens, dec->max_len);
    }
    int32_t stop_ids[2] = {h->id_return, ot_tokenizer_special_id(h->tok, "<|call|>")};
    const int n_stop = stop_ids[1] >= 0 ? 2 : 1;
    const int greedy = o->temperature <= 0.0f;

    slot_state *st = ot_calloc((size_t)S, sizeof(slot_state));
    for (int s = 0; s < S; s++) st[s].idx = -1;
    int32_t *ids = ot_malloc(sizeof(int32_t) * (size_t)budget), *slot = ot_malloc(sizeof(int32_t) * (size_t)budget);
    int32_t *pos = ot_malloc(sizeof(int32_t) * (size_t)budget), *rows = ot_malloc(sizeof(int32_t) * (size_t)S);
    int32_t *row_slot = ot_malloc(sizeof(int32_t) * (size_t)S), *next = ot_malloc(sizeof(int32_t) * (size_t)S);
    float *logits = greedy ? NULL : ot_malloc(sizeof(float) * (size_t)S * V);
    long next_src = 0, finished = 0;
    int rc = 0;
    while (finished < n && rc == 0) {
        int T = 0, n_out = 0;
        // Every generating slot feeds back its last token (one per slot: budget > S leaves room for prompts).
        for (int s = 0; s < S; s++) {
            slot_state *a = &st[s];
            if (a->idx < 0 || a->fed < prompts[a->idx].n) continue;
            ids[T] = a->out.v[a->out.n - 1];
            slot[T] = s;
            pos[T] = prompts[a->idx].n + a->out.n - 1;
            row_slot[n_out] = s;
            rows[n_out++] = T++;
        }
        // Prompts (the rest of a started one, then new sources into free slots) take what is left of the budget.
        for (int s = 0; s < S && T < budget; s++) {
            slot_state *a = &st[s];
            if (a->idx < 0 && next_src < n) {
                a->idx = next_src++;
                a->fed = 0;
                a->out.n = 0;
                ot_rng_seed(&a->rng, ot_hash64(seed ^ ot_hash64((uint64_t)a->idx)));
            }
            if (a->idx < 0) continue;
            const ot_ids *p = &prompts[a->idx];
            if (a->fed >= p->n) continue;
            int take = p->n - a->fed < budget - T ? p->n - a->fed : budget - T;
            for (int i = 0; i < take; i++) {
                ids[T] = p->v[a->fed + i];
                slot[T] = s;
                pos[T++] = a->fed + i;
            }
            a->fed += take;
            if (a->fed == p->n) { // the whole prompt is in: its last token predicts the first new one
                row_slot[n_out] = s;
                rows[n_out++] = T - 1;
            }
        }
        if (T == 0) { // cannot happen while sentences remain; a scheduler bug must not spin forever
            rc = ot_fail(err, "batched generation: no work for %ld unfinished sentences", n - finished);
            break;
        }
        if ((rc = dec->step(dec->state, ids, slot, pos, T, rows, n_out, logits, greedy ? next : NULL, err))) break;
        for (int i = 0; i < n_out && rc == 0; i++) {
            slot_state *a = &st[row_slot[i]];
            int32_t id = greedy ? next[i]
                                : ot_sample_token(logits + (size_t)i * V, V, o->temperature, o->top_p, &a->rng);
            ot_ids_push(&a->out, id);
            int stop = stop_index(id, stop_ids, n_stop);
            if (stop < 0 && a->out.n < o->max_new_tokens) continue;
            if ((rc = finish(h, a, &prompts[a->idx], stop, &out[a->idx], err))) break;
            if (done) done(user, a->idx, &out[a->idx]);
            a->idx = -1;
            finished++;
        }
    }
    for (int s = 0; s < S; s++) ot_ids_free(&st[s].out);
    free(st);
    free(ids);
    free(slot);
    free(pos);
    free(rows);
    free(row_slot);
    free(next);
    free(logits);
    return rc;
}
