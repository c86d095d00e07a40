// The o200k_harmony tokenizer (spec §4.1–4.3): byte-level BPE over the o200k_base ranks plus the harmony special
// tokens at ids 199998..201087.
//
// Loads from a model directory (its tokenizer.json), a Hugging Face tokenizer.json, or an o200k_base .tiktoken
// file. Encoding splits the text with the o200k pre-tokenizer pattern (PCRE2, UTF + Unicode properties), then
// merges bytes inside each pre-token by rank. Encoding never produces special tokens: text such as "<|end|>"
// is encoded as ordinary bytes, so user data can never forge control tokens. Special tokens are only ever
// inserted by id (see formats/harmony.h).
//
// Thread safety: a loaded tokenizer is read-only; encode/decode may be called from several threads at once.
#ifndef OT_FORMATS_TOKENIZER_H
#define OT_FORMATS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"

#define OT_O200K_N_RANKS 199998   // ordinary (byte-sequence) tokens, ids 0..199997
#define OT_HARMONY_VOCAB 201088   // model vocabulary: ordinary + special + reserved padding ids
// The pre-tokenizer pattern of spec §4.2: seven alternatives, tried in order.
extern const char OT_O200K_PATTERN[];

// A growable list of token ids.
typedef struct {
    int32_t *v;
    int n, cap;
} ot_ids;
void ot_ids_push(ot_ids *a, int32_t id);
void ot_ids_append(ot_ids *a, const int32_t *ids, int n);
void ot_ids_free(ot_ids *a);

typedef struct ot_tokenizer ot_tokenizer;

// path: a directory holding tokenizer.json, a *.json file (HF format) or a *.tiktoken file. Any other name is
// sniffed: a file starting with '{' is read as JSON, otherwise as tiktoken. NULL on error (message in err).
ot_tokenizer *ot_tokenizer_load(const char *path, ot_err *err);
void ot_tokenizer_free(ot_tokenizer *tok);

// Appends the ids of ordinary text s[0..len) to out. -1 if the text is not valid UTF-8 (err names the offset).
int ot_tokenizer_encode(const ot_tokenizer *tok, const char *s, size_t len, ot_ids *out, ot_err *err);
// The bytes of ids, with special tokens written as their names. Returns a malloc'ed NUL-terminated buffer
// (its length in *out_len; the bytes need not be valid UTF-8 when ids split a character), or NULL with a
// message when an id is outside 0..vocab_size-1.
char *ot_tokenizer_decode(const ot_tokenizer *tok, const int32_t *ids, int n, size_t *out_len, ot_err *err);

// Id of a special token by its exact name ("<|return|>"), or -1 if there is none.
int ot_tokenizer_special_id(const ot_tokenizer *tok, const char *name);
int ot_tokenizer_is_special(const ot_tokenizer *tok, int id);
// Bytes of token id (ordinary: its byte string; special: its name). NULL if id is out of range.
const uint8_t *ot_tokenizer_token_bytes(const ot_tokenizer *tok, int id, size_t *len);
// Rank of an ordinary byte string, or -1 if it is not a token (the BPE's own lookup).
int ot_tokenizer_rank(const ot_tokenizer *tok, const uint8_t *bytes, size_t len);

int ot_tokenizer_vocab_size(const ot_tokenizer *tok);  // OT_HARMONY_VOCAB
int ot_tokenizer_n_ordinary(const ot_tokenizer *tok);  // OT_O200K_N_RANKS
const char *ot_tokenizer_sha256(const ot_tokenizer *tok); // hex SHA-256 of the file read
const char *ot_tokenizer_file(const ot_tokenizer *tok);   // the file actually read (dir/tokenizer.json for a dir)

#endif
