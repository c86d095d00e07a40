// The tokenizer.ggml.* metadata of a GGUF (spec §5.2) from an o200k_harmony tokenizer, as llama.cpp's converter
// writes it for gpt-oss (its GPT-2 byte-level BPE path):
//   - tokens: ordinary ids as GPT-2 byte-to-unicode strings, special ids by name, ids the HF tokenizer does not
//     define (200019..vocab-1) as "[PAD<id>]";
//   - token_type: 1 normal, 3 control (the harmony specials), 5 unused (the padding ids);
//   - merges: "left right" in byte-level form, derived from the BPE ranks: every split of a token into two
//     tokens, ordered by the rank of the merged token, then by the ranks of the two parts. Applying merges by that
//     order is the same algorithm as merging by rank, so llama.cpp tokenizes as osstune does;
//   - model "gpt2", pre "gpt-4o" (the o200k split pattern), bos/eos/padding ids, add_bos/add_eos false;
//   - eos_token_ids: the end-of-generation ids <|endoftext|>, <|return|>, <|call|> as an INT32 array (as Ollama's
//     gpt-oss converter writes it; Ollama's gpt-oss model reads its stop tokens from it).
#ifndef OT_FORMATS_GGUF_VOCAB_H
#define OT_FORMATS_GGUF_VOCAB_H

#include "formats/gguf.h"
#include "formats/tokenizer.h"

// Ids 0..OT_GGUF_HF_TOKENS-1 have a string in the HF tokenizer (spec §4.3); the model's rows above are padding.
#define OT_GGUF_HF_TOKENS 200019

// GPT-2's byte-to-unicode map: byte b as the UTF-8 of its stand-in code point (1 or 2 bytes). Returns the length.
int ot_gpt2_byte_to_utf8(uint8_t b, char out[2]);

// Sets every tokenizer.ggml.* key (not tokenizer.chat_template) for a model with vocab_size rows. Fails when the
// vocabulary is smaller than the tokenizer's named ids or a harmony token is missing. Prints nothing.
int ot_gguf_set_vocab(ot_gguf_writer *w, const ot_tokenizer *tok, int vocab_size, ot_err *err);

#endif
