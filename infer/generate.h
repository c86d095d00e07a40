// Generation: from a harmony prompt to the answer text, on any decoding backend.
//
// A backend is an ot_decoder: a KV cache of one sequence that can be extended by some tokens (returning the
// next-token logits of the last one) and cut back to a prefix. The CPU reference implements it in
// infer/decode_cpu.c; a GPU decoder plugs in by filling the same three functions (batched decoding of many
// sentences at once would add a batched append next to them). Everything above the backend — re-using the
// cached prefix, sampling, stop tokens, reading the final channel out of the harmony output — lives here once.
#ifndef OT_TRAINER_GENERATE_H
#define OT_TRAINER_GENERATE_H

#include <stdint.h>

#include "formats/harmony.h"

typedef struct {
    const char *backend;  // "cpu", ...
    int vocab;            // logits per position
    int max_positions;    // the longest sequence the model takes (config max_position_embeddings)
    void *state;
    // Append n >= 1 tokens after the cached ones; write the next-token logits of the last one into logits [vocab].
    int (*append)(void *state, const int32_t *ids, int n, float *logits, ot_err *err);
    // Keep the first len cached positions and forget the rest.
    void (*truncate)(void *state, int len);
    void (*destroy)(void *state);
    ot_ids cached;        // the ids whose keys and values the cache holds, in order (kept by ot_generate)
} ot_decoder;

void ot_decoder_close(ot_decoder *dec); // destroy the backend state and the id list

typedef struct {
    int max_new_tokens;   // generated tokens at most (the stop token included)
    float temperature;    // 0: greedy (argmax, lowest id on ties)
    float top_p;          // nucleus sampling cut, in (0, 1]; 1 keeps every token
} ot_gen_options;
void ot_gen_options_default(ot_gen_options *o); // 512 tokens, greedy, top_p 1

enum { OT_STOP_RETURN = 1, OT_STOP_CALL = 2, OT_STOP_LIMIT = 3 }; // why a translation's generation ended
// Which part of the output became the answer (see ot_harmony_answer).
enum { OT_ANSWER_FINAL = 1, OT_ANSWER_UNLABELLED = 2, OT_ANSWER_NONE = 3 };

// Pick the next token from logits [V]: argmax when temperature == 0, else a draw from softmax(logits / T)
// restricted to the smallest set of most probable tokens whose probability reaches top_p.
int ot_sample_token(const float *logits, int V, float temperature, float top_p, ot_rng *rng);

// Run the prompt and generate until one of stop_ids (appended to out, which receives the generated ids only) or
// max_new_tokens; *stop gets the index in stop_ids of the stop token met, or -1 when the limit ended it.
// The cache keeps its previous contents where they agree with the prompt: only the prompt's tokens after the
// longest common prefix with dec->cached are computed (for a run of translations that is the system and
// developer messages and the user header, computed once). *reused (may be NULL) gets the number of prompt
// tokens taken from the cache.
int ot_generate(ot_decoder *dec, const int32_t *prompt, int n_prompt, const ot_gen_options *o, const int32_t *stop_ids,
                int n_stop, ot_rng *rng, ot_ids *out, int *stop, int *reused, ot_err *err);

// The answer in ids the model wrote after the prompt `…<|start|>assistant`, parsed as harmony messages:
// a message is a header (`<|channel|>NAME`, possibly more) up to `<|message|>`, then content up to `<|end|>`,
// `<|return|>`, `<|call|>` or the end of the ids; after `<|end|>`, `<|start|>ROLE` opens the next message.
//   1. the content of the first message on channel `final` (messages before it, e.g. `analysis`, are skipped);
//   2. else the content of the first message whose header has no `<|channel|>`;
//   3. else, if the model wrote no `<|message|>` at all (no header), everything it wrote up to the stop token;
//   4. else (e.g. the token limit cut an analysis message short) the empty string.
// Special tokens inside the answer are dropped; bytes that are not valid UTF-8 (a character cut by the token
// limit) become U+FFFD. Returns a malloc'ed string; *kind gets OT_ANSWER_FINAL (1), OT_ANSWER_UNLABELLED (2, 3)
// or OT_ANSWER_NONE (4). NULL with a message on an id the tokenizer does not know.
char *ot_harmony_answer(const ot_harmony *h, const int32_t *ids, int n, int *kind, ot_err *err);

// In place: every "\r\n", "\n" or "\r" becomes one space, so an answer fits on one output line.
void ot_text_one_line(char *s);

typedef struct {
    char *text;        // the answer (malloc'ed), one line
    int answer;        // OT_ANSWER_*
    int stop;          // OT_STOP_*
    int prompt_tokens, reused_tokens, new_tokens;
} ot_translation;

// Render the inference prompt for source (formats/harmony.h), generate, and read the answer. The random stream
// (used only when sampling) is seeded from (seed, index), so a sentence's output does not depend on which
// sentences ran before it. t->text must be freed by the caller.
int ot_translate(ot_decoder *dec, const ot_harmony *h, ot_direction dir, const char *source, size_t source_len,
                 const ot_gen_options *o, uint64_t seed, long index, ot_translation *t, ot_err *err);

#endif
