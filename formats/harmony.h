// The harmony rendering of one translation exchange (spec §4.4–4.7): the single definition shared by
// osstune-prep (training samples), osstune-translate (inference prompts) and the exported Ollama template
// (the text form).
//
//   <|start|>system<|message|>{system}<|end|>
//   <|start|>developer<|message|># Instructions\n\n{instruction}<|end|>
//   <|start|>user<|message|>{source}<|end|>
//   <|start|>assistant                                   <- the inference prompt ends here
//   <|channel|>final<|message|>{target}<|return|>        <- training only; these tokens carry the loss
//
// Formatting tokens are inserted by id; every text piece (role, channel name, content) is encoded on its own
// as ordinary text, so source and target text can never produce control tokens.
#ifndef OT_FORMATS_HARMONY_H
#define OT_FORMATS_HARMONY_H

#include <stddef.h>

#include "formats/directions.h"
#include "formats/tokenizer.h"

// The default system text (spec §4.5 with `Reasoning: low`, no date). The default instructions are in the
// direction table (formats/directions.h).
extern const char OT_HARMONY_SYSTEM_DEFAULT[];

typedef struct {
    const ot_tokenizer *tok;
    char *system;                       // system message content
    char *instruction[OT_N_DIRECTIONS]; // developer instruction per direction (without "# Instructions")
    int id_start, id_end, id_message, id_channel, id_return;
    ot_ids prefix[OT_N_DIRECTIONS];     // the system and developer messages, encoded once per direction
} ot_harmony;

// NULL texts take the defaults. The tokenizer must outlive h. -1 if the tokenizer lacks a harmony token.
// instructions: one text per direction (NULL entries, or instructions NULL: the table's defaults).
int ot_harmony_init_all(ot_harmony *h, const ot_tokenizer *tok, const char *system,
                        const char *const *instructions, ot_err *err);
// The same with the zh2nan and nan2zh instructions given (the other directions take their defaults).
int ot_harmony_init(ot_harmony *h, const ot_tokenizer *tok, const char *system, const char *instruction_zh2nan,
                    const char *instruction_nan2zh, ot_err *err);
void ot_harmony_free(ot_harmony *h);

// A training sample: appends its ids to out and sets *loss_start to the index, within the sample, of its first
// loss-bearing token (<|channel|> right after `assistant`). -1 on text the tokenizer refuses (invalid UTF-8).
int ot_harmony_render_sample(const ot_harmony *h, ot_direction dir, const char *source, size_t source_len,
                             const char *target, size_t target_len, ot_ids *out, int *loss_start, ot_err *err);
// The inference prompt: the same tokens up to and including `assistant`; the model writes the rest.
int ot_harmony_render_prompt(const ot_harmony *h, ot_direction dir, const char *source, size_t source_len,
                             ot_ids *out, ot_err *err);

// The same renderings as text, special tokens written by name (for templates, logs and tests). target NULL
// gives the inference prompt. Returns a malloc'ed string.
char *ot_harmony_render_text(const char *system, const char *instruction, const char *source, const char *target);

#endif
