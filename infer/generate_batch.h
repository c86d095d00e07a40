// Batched generation: many translations decoded together on a backend that runs one step for several sequences
// (the GPU decoder, infer/decode_cuda.h; the CPU decoder behind the same interface for tests).
//
// Continuous batching: the backend holds n_slots sequences. A free slot takes the next source (in input order),
// feeds its prompt (in pieces when a step's token budget is short), then generates one token per step until a stop
// token or --max-new-tokens; the slot is then free for the next source. So the batch stays full until the inputs
// run out, and every sentence gets what ot_translate (generate.h) gives it alone: the same prompt, the same
// sampler with the same random stream (seeded from (seed, index)), the same stop rule and answer parser. Only
// prefix re-use is not done: each prompt is computed whole (a batch of prompts is one large step).
#ifndef OT_TRAINER_GENERATE_BATCH_H
#define OT_TRAINER_GENERATE_BATCH_H

#include "infer/generate.h"

typedef struct {
    const char *backend;  // "cuda", "cpu"
    int vocab;            // logits per position
    int n_slots;          // sequences decoded together
    int max_len;          // positions per sequence
    int max_step_tokens;  // tokens per step at most (> n_slots, so a step always has room for a prompt's piece)
    void *state;
    // One step of T tokens: ids[t] at position pos[t] of slot slot[t]; a slot's tokens in a step are consecutive
    // positions following those it already holds (position 0 starts a new sequence). For each rows[i] (an index
    // into the step, the last token of its slot in the step) the next-token prediction: the greedy pick into
    // next[i], the logits into logits [n_out, vocab]; either pointer may be NULL.
    int (*step)(void *state, const int32_t *ids, const int32_t *slot, const int32_t *pos, int T, const int32_t *rows,
                int n_out, float *logits, int32_t *next, ot_err *err);
    void (*destroy)(void *state);
} ot_batch_decoder;

void ot_batch_decoder_close(ot_batch_decoder *dec);

// Positions a slot needs for these prompts: the longest prompt plus max_new_tokens − 1 (the last generated token
// is never fed back).
int ot_batch_max_len(const ot_ids *prompts, long n, const ot_gen_options *o);

// Called as sentence `index` finishes (in finishing order, not input order); t is out[index].
typedef void (*ot_batch_done_fn)(void *user, long index, const ot_translation *t);

// Translate the rendered prompts[0..n) (ot_harmony_render_prompt) into out[0..n) (texts malloc'ed, freed by the
// caller); done (may be NULL) is called for each as it finishes. -1 with a message naming the input index on a
// prompt too long for the decoder or a backend failure.
int ot_translate_batch(ot_batch_decoder *dec, const ot_harmony *h, const ot_ids *prompts, long n,
                       const ot_gen_options *o, uint64_t seed, ot_translation *out, ot_batch_done_fn done, void *user,
                       ot_err *err);

#endif
