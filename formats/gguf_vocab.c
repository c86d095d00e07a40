// tokenizer.ggml.* keys from an o200k_harmony tokenizer (see gguf_vocab.h and spec §5.2).
#include "formats/gguf_vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// GPT-2 byte-level alphabet: printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space,
// DEL, NBSP, soft hyphen …) take the code points 256, 257, … in byte order, so every byte has a visible character.
static int byte_is_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }

int ot_gpt2_byte_to_utf8(uint8_t b, char out[2]) {
    unsigned cp = b;
    if (!byte_is_printable(b)) {
        unsigned n = 0;
        for (int x = 0; x < b; x++) n += !byte_is_printable(x);
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6)); // every stand-in is below U+0800: two UTF-8 bytes
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

// A growable byte buffer for the string tables (offsets, not pointers, since it moves while growing).
typedef struct {
    char *p;
    size_t len, cap;
} text_buf;

static void text_put(text_buf *t, const char *s, size_t n) {
    if (t->len + n > t->cap) {
        while (t->len + n > t->cap) t->cap = t->cap ? 2 * t->cap : 1 << 20;
        t->p = ot_realloc(t->p, t->cap);
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

// Append the byte-level form of raw bytes (using the precomputed table).
static void put_byte_level(text_buf *t, const char (*table)[2], const int *table_len, const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) text_put(t, table[b[i]], (size_t)table_len[b[i]]);
}

typedef struct {
    int32_t merged, left, right; // ranks: the sort key
    int32_t id;                  // token id of the merged token
    uint32_t split;              // bytes in the left part
} merge_entry;

static int cmp_merge(const void *a, const void *b) {
    const merge_entry *x = a, *y = b;
    if (x->merged != y->merged) return x->merged < y->merged ? -1 : 1;
    if (x->left != y->left) return x->left < y->left ? -1 : 1;
    if (x->right != y->right) return x->right < y->right ? -1 : 1;
    return 0;
}

int ot_gguf_set_vocab(ot_gguf_writer *w, const ot_tokenizer *tok, int vocab_size, ot_err *err) {
    const int n_ord = ot_tokenizer_n_ordinary(tok), n_tok = ot_tokenizer_vocab_size(tok);
    const int n_named = n_tok < OT_GGUF_HF_TOKENS ? n_tok : OT_GGUF_HF_TOKENS;
    if (vocab_size < n_named)
        return ot_fail(err, "the model's vocab_size %d is smaller than the tokenizer's %d named tokens (%s)", vocab_size,
                       n_named, ot_tokenizer_file(tok));
    // bos, eos, padding, then the last one for the end-of-generation list below.
    const char *names[4] = {"<|startoftext|>", "<|return|>", "<|endoftext|>", "<|call|>"};
    int ids[4];
    for (int i = 0; i < 4; i++) {
        ids[i] = ot_tokenizer_special_id(tok, names[i]);
        if (ids[i] < 0 || ids[i] >= vocab_size)
            return ot_fail(err, "%s: the harmony token %s is missing", ot_tokenizer_file(tok), names[i]);
    }

    char table[256][2];
    int table_len[256];
    for (int b = 0; b < 256; b++) table_len[b] = ot_gpt2_byte_to_utf8((uint8_t)b, table[b]);

    // Tokens and their types.
    text_buf blob = {0};
    size_t *off = ot_malloc(((size_t)vocab_size + 1) * sizeof(size_t));
    int32_t *types = ot_malloc((size_t)vocab_size * sizeof(int32_t));
    for (int id = 0; id < vocab_size; id++) {
        off[id] = blob.len;
        size_t n;
        if (id < n_ord) {
            const uint8_t *b = ot_tokenizer_token_bytes(tok, id, &n);
            put_byte_level(&blob, (const char(*)[2])table, table_len, b, n);
            types[id] = 1; // normal
        } else if (id < n_named) {
            const uint8_t *b = ot_tokenizer_token_bytes(tok, id, &n);
            text_put(&blob, (const char *)b, n); // special names are plain ASCII, written as they are
            types[id] = 3; // control
        } else {
            char pad[32];
            int k = snprintf(pad, sizeof pad, "[PAD%d]", id);
            text_put(&blob, pad, (size_t)k);
            types[id] = 5; // unused
        }
    }
    off[vocab_size] = blob.len;
    const char **strs = ot_malloc((size_t)vocab_size * sizeof(char *));
    size_t *lens = ot_malloc((size_t)vocab_size * sizeof(size_t));
    for (int id = 0; id < vocab_size; id++) {
        strs[id] = blob.p + off[id];
        lens[id] = off[id + 1] - off[id];
    }
    ot_gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    ot_gguf_set_str(w, "tokenizer.ggml.pre", "gpt-4o");
    ot_gguf_set_str_array(w, "tokenizer.ggml.tokens", strs, lens, (uint64_t)vocab_size);
    ot_gguf_set_array(w, "tokenizer.ggml.token_type", OT_GGUF_I32, types, (uint64_t)vocab_size);
    free(strs);
    free(lens);
    free(types);
    free(off);
    blob.len = 0;

    // Merges: every split of an ordinary token into two ordinary tokens.
    size_t n_merges = 0, cap_merges = 1 << 18;
    merge_entry *merges = ot_malloc(cap_merges * sizeof *merges);
    for (int id = 0; id < n_ord; id++) {
        size_t n;
        const uint8_t *b = ot_tokenizer_token_bytes(tok, id, &n);
        int merged = ot_tokenizer_rank(tok, b, n);
        if (n < 2 || merged < 0) continue;
        for (size_t s = 1; s < n; s++) {
            int l = ot_tokenizer_rank(tok, b, s), r = ot_tokenizer_rank(tok, b + s, n - s);
            if (l < 0 || r < 0) continue;
            if (n_merges == cap_merges) merges = ot_realloc(merges, (cap_merges *= 2) * sizeof *merges);
            merges[n_merges++] = (merge_entry){merged, l, r, id, (uint32_t)s};
        }
    }
    qsort(merges, n_merges, sizeof *merges, cmp_merge);
    size_t *moff = ot_malloc((n_merges + 1) * sizeof(size_t));
    for (size_t i = 0; i < n_merges; i++) {
        moff[i] = blob.len;
        size_t n;
        const uint8_t *b = ot_tokenizer_token_bytes(tok, merges[i].id, &n);
        put_byte_level(&blob, (const char(*)[2])table, table_len, b, merges[i].split);
        text_put(&blob, " ", 1);
        put_byte_level(&blob, (const char(*)[2])table, table_len, b + merges[i].split, n - merges[i].split);
    }
    moff[n_merges] = blob.len;
    const char **mstr = ot_malloc((n_merges ? n_merges : 1) * sizeof(char *));
    size_t *mlen = ot_malloc((n_merges ? n_merges : 1) * sizeof(size_t));
    for (size_t i = 0; i < n_merges; i++) {
        mstr[i] = blob.p + moff[i];
        mlen[i] = moff[i + 1] - moff[i];
    }
    ot_gguf_set_str_array(w, "tokenizer.ggml.merges", mstr, mlen, (uint64_t)n_merges);
    free(mstr);
    free(mlen);
    free(moff);
    free(merges);
    free(blob.p);

    ot_gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)ids[0]);
    ot_gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)ids[1]);
    ot_gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)ids[2]);
    // Every token that ends a generation: <|endoftext|>, <|return|> (the end of the answer) and <|call|> (the end of
    // a tool call), as Ollama's own gpt-oss converter writes them. Ollama's gpt-oss model reads this array as its
    // stop tokens besides eos_token_id, and only as an INT32 array (a key of another type reads as empty there).
    // llama.cpp does not read it; it finds the same three by their names.
    const int32_t eog[3] = {ids[2], ids[1], ids[3]};
    ot_gguf_set_array(w, "tokenizer.ggml.eos_token_ids", OT_GGUF_I32, eog, 3);
    // harmony never starts with <|startoftext|> and never ends with an eos the caller did not write (spec §4.7).
    ot_gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 0);
    ot_gguf_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
    return 0;
}
