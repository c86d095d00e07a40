// o200k_harmony tokenizer: loading (.tiktoken / tokenizer.json), PCRE2 pre-tokenization, rank-based BPE.
#include "formats/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "formats/fileio.h"
#include "formats/sha256.h"
#include "formats/utf8.h"

// Spec §4.2, the seven alternatives joined with '|' (a C string, so every backslash is doubled).
const char OT_O200K_PATTERN[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

// ---- id lists -------------------------------------------------------------------------------------------------
void ot_ids_push(ot_ids *a, int32_t id) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = ot_realloc(a->v, sizeof(int32_t) * (size_t)a->cap);
    }
    a->v[a->n++] = id;
}

void ot_ids_append(ot_ids *a, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) ot_ids_push(a, ids[i]);
}

void ot_ids_free(ot_ids *a) {
    free(a->v);
    memset(a, 0, sizeof *a);
}

// ---- the tokenizer --------------------------------------------------------------------------------------------
#define RANK_TABLE_BITS 19 // 524,288 slots for 199,998 keys: short probe chains

struct ot_tokenizer {
    // Token bytes for every id 0..OT_HARMONY_VOCAB-1 (specials: their names), packed in one blob.
    uint8_t *blob;
    uint32_t *off; // [OT_HARMONY_VOCAB + 1]
    // Open-addressing hash from ordinary byte strings to their rank. A slot holds the upper 32 bits of the key's
    // hash (a fingerprint that rejects most mismatches without touching the bytes) and rank + 1 (0 = empty).
    uint64_t *slots;
    // Ranks of all 1- and 2-byte strings by direct index (-1 = not a token): the BPE's most frequent lookups,
    // answered without touching the big hash table.
    int32_t rank1[256];
    int32_t *rank2; // [65536], index b0 << 8 | b1
    pcre2_code *re;
    int jit;
    char sha256[65];
    char *file;
};

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8, n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull; // a second multiply-xorshift round spreads short keys over the low bits too
    h ^= h >> 32;
    return h;
}

static int rank_lookup_hashed(const ot_tokenizer *tok, const uint8_t *bytes, size_t len, uint64_t h) {
    const uint32_t mask = (1u << RANK_TABLE_BITS) - 1;
    uint64_t fp = h >> 32;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint64_t s = tok->slots[i];
        if (!s) return -1;
        if (s >> 32 != fp) continue;
        uint32_t r = (uint32_t)s - 1;
        if (tok->off[r + 1] - tok->off[r] == len && memcmp(tok->blob + tok->off[r], bytes, len) == 0) return (int)r;
    }
}

int ot_tokenizer_rank(const ot_tokenizer *tok, const uint8_t *bytes, size_t len) {
    if (len == 1) return tok->rank1[bytes[0]];
    if (len == 2 && tok->rank2) return tok->rank2[bytes[0] << 8 | bytes[1]];
    return rank_lookup_hashed(tok, bytes, len, hash_bytes(bytes, len));
}

// Insert rank r (its bytes already in the blob). -1 if the same byte string is already present.
static int rank_insert(ot_tokenizer *tok, uint32_t r) {
    const uint8_t *b = tok->blob + tok->off[r];
    size_t len = tok->off[r + 1] - tok->off[r];
    const uint32_t mask = (1u << RANK_TABLE_BITS) - 1;
    uint64_t h = hash_bytes(b, len), fp = h >> 32;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint64_t s = tok->slots[i];
        if (!s) {
            tok->slots[i] = fp << 32 | (r + 1);
            return 0;
        }
        uint32_t q = (uint32_t)s - 1;
        if (s >> 32 == fp && tok->off[q + 1] - tok->off[q] == len && memcmp(tok->blob + tok->off[q], b, len) == 0)
            return -1;
    }
}

// ---- special tokens -------------------------------------------------------------------------------------------
// Names for ids 199998..201087 (spec §4.3). 200018 follows the HF tokenizer and gpt-oss tokenizer.py; every
// id without a name of its own is <|reserved_ID|>, as harmony names them.
static void default_special_name(int id, char *buf, size_t cap) {
    static const struct {
        int id;
        const char *name;
    } named[] = {
        {199998, "<|startoftext|>"}, {199999, "<|endoftext|>"}, {200002, "<|return|>"}, {200003, "<|constrain|>"},
        {200005, "<|channel|>"},     {200006, "<|start|>"},     {200007, "<|end|>"},    {200008, "<|message|>"},
        {200012, "<|call|>"},        {200018, "<|endofprompt|>"},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (named[i].id == id) {
            snprintf(buf, cap, "%s", named[i].name);
            return;
        }
    snprintf(buf, cap, "<|reserved_%d|>", id);
}

// Builds blob/off from the ordinary byte strings plus the special names (names[i] for id 199998 + i, NULL
// for the default), then the rank table.
static int finish_vocab(ot_tokenizer *tok, uint8_t **ord, uint32_t *ord_len, char **names, const char *what,
                        ot_err *err) {
    const int n_special = OT_HARMONY_VOCAB - OT_O200K_N_RANKS;
    char (*def)[40] = ot_malloc(sizeof(*def) * (size_t)n_special);
    size_t total = 0;
    for (int r = 0; r < OT_O200K_N_RANKS; r++) total += ord_len[r];
    for (int i = 0; i < n_special; i++) {
        default_special_name(OT_O200K_N_RANKS + i, def[i], sizeof def[i]);
        total += strlen(names[i] ? names[i] : def[i]);
    }
    tok->blob = ot_malloc(total);
    tok->off = ot_malloc(sizeof(uint32_t) * (OT_HARMONY_VOCAB + 1));
    size_t at = 0;
    for (int id = 0; id < OT_HARMONY_VOCAB; id++) {
        tok->off[id] = (uint32_t)at;
        const uint8_t *src;
        size_t len;
        if (id < OT_O200K_N_RANKS) src = ord[id], len = ord_len[id];
        else {
            const char *nm = names[id - OT_O200K_N_RANKS] ? names[id - OT_O200K_N_RANKS] : def[id - OT_O200K_N_RANKS];
            src = (const uint8_t *)nm, len = strlen(nm);
        }
        memcpy(tok->blob + at, src, len);
        at += len;
    }
    tok->off[OT_HARMONY_VOCAB] = (uint32_t)at;
    free(def);

    tok->slots = ot_calloc((size_t)1 << RANK_TABLE_BITS, sizeof(uint64_t));
    for (int r = 0; r < OT_O200K_N_RANKS; r++) {
        if (ord_len[r] == 0) return ot_fail(err, "%s: token %d has no bytes", what, r);
        if (rank_insert(tok, (uint32_t)r) != 0) return ot_fail(err, "%s: token %d repeats the bytes of another token", what, r);
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        tok->rank1[b] = rank_lookup_hashed(tok, &c, 1, hash_bytes(&c, 1));
        // Byte-level BPE needs every single byte as a token, or some text could not be encoded at all.
        if (tok->rank1[b] < 0) return ot_fail(err, "%s: byte 0x%02x is not a token", what, b);
    }
    tok->rank2 = ot_malloc(sizeof(int32_t) * 65536);
    for (int i = 0; i < 65536; i++) {
        uint8_t two[2] = {(uint8_t)(i >> 8), (uint8_t)i};
        tok->rank2[i] = rank_lookup_hashed(tok, two, 2, hash_bytes(two, 2));
    }
    // Special names must be unique, or ot_tokenizer_special_id would be ambiguous.
    for (int i = OT_O200K_N_RANKS; i < OT_HARMONY_VOCAB; i++)
        for (int j = i + 1; j < OT_HARMONY_VOCAB; j++) {
            size_t li = tok->off[i + 1] - tok->off[i], lj = tok->off[j + 1] - tok->off[j];
            if (li == lj && memcmp(tok->blob + tok->off[i], tok->blob + tok->off[j], li) == 0)
                return ot_fail(err, "%s: special tokens %d and %d have the same name", what, i, j);
        }
    return 0;
}

// ---- .tiktoken ------------------------------------------------------------------------------------------------
static int b64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Standard base64 with '=' padding. Returns the decoded length or -1.
static long b64_decode(const char *s, size_t n, uint8_t *out) {
    if (n % 4) return -1;
    long o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == n && k >= 2) {
                v[k] = 0, pad++;
            } else if (pad || (v[k] = b64_value((unsigned char)s[i + k])) < 0) {
                return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2) out[o++] = (uint8_t)(w >> 8);
        if (pad < 1) out[o++] = (uint8_t)w;
    }
    return o;
}

static int load_tiktoken(ot_tokenizer *tok, const char *path, ot_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ot_fail(err, "cannot open tokenizer '%s': %s", path, strerror(errno));
    uint8_t **ord = ot_calloc(OT_O200K_N_RANKS, sizeof(uint8_t *));
    uint32_t *ord_len = ot_calloc(OT_O200K_N_RANKS, sizeof(uint32_t));
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long lineno = 0, count = 0;
    int rc = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (got == 0) continue; // a trailing blank line
        char *sp = strchr(line, ' ');
        char *end = NULL;
        long rank = sp ? strtol(sp + 1, &end, 10) : -1;
        if (!sp || end == sp + 1 || *end || rank < 0 || rank >= OT_O200K_N_RANKS) {
            rc = ot_fail(err, "%s:%ld: expected '<base64> <rank>' with rank below %d", path, lineno, OT_O200K_N_RANKS);
            break;
        }
        if (ord[rank]) {
            rc = ot_fail(err, "%s:%ld: rank %ld appears twice", path, lineno, rank);
            break;
        }
        uint8_t *bytes = ot_malloc((size_t)(sp - line));
        long n = b64_decode(line, (size_t)(sp - line), bytes);
        if (n <= 0) {
            free(bytes);
            rc = ot_fail(err, "%s:%ld: invalid base64 token", path, lineno);
            break;
        }
        ord[rank] = bytes, ord_len[rank] = (uint32_t)n;
        count++;
    }
    if (rc == 0 && ferror(f)) rc = ot_fail(err, "read error in tokenizer '%s'", path);
    if (rc == 0 && count != OT_O200K_N_RANKS)
        rc = ot_fail(err, "%s: %ld ranks, but o200k_base has %d", path, count, OT_O200K_N_RANKS);
    fclose(f);
    free(line);
    if (rc == 0) {
        char *names[OT_HARMONY_VOCAB - OT_O200K_N_RANKS] = {0};
        rc = finish_vocab(tok, ord, ord_len, names, path, err);
    }
    for (int r = 0; r < OT_O200K_N_RANKS; r++) free(ord[r]);
    free(ord);
    free(ord_len);
    return rc;
}

// ---- tokenizer.json -------------------------------------------------------------------------------------------
// GPT-2's byte-level alphabet: printable bytes stand for themselves; the other 68 bytes (0..32, 127..160, 173)
// are shifted to code points 256.. in byte order. unicode_to_byte inverts that map (-1 = not in the alphabet).
static void byte_level_inverse(int16_t unicode_to_byte[324]) {
    for (int i = 0; i < 324; i++) unicode_to_byte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        unicode_to_byte[printable ? b : 256 + extra++] = (int16_t)b;
    }
}

// Decode one byte-level vocabulary string into raw bytes; -1 on a character outside the alphabet.
static long byte_level_decode(const char *s, const int16_t inv[324], uint8_t *out) {
    const uint8_t *p = (const uint8_t *)s;
    long o = 0;
    while (*p) {
        uint32_t cp;
        if (p[0] < 0x80) cp = *p++;
        else if ((p[0] & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) cp = (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f), p += 2;
        else return -1; // the alphabet only reaches U+0143, so longer sequences never occur
        if (cp >= 324 || inv[cp] < 0) return -1;
        out[o++] = (uint8_t)inv[cp];
    }
    return o;
}

// The pre-tokenizer must be the o200k Split (possibly inside a Sequence) followed by a ByteLevel without its
// own regex; anything else would split text differently from what this encoder does.
static int check_pre_tokenizer(json_t *pt, const char *path, int *found_split, ot_err *err) {
    if (!json_is_object(pt)) return ot_fail(err, "%s: pre_tokenizer is not an object", path);
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return ot_fail(err, "%s: pre_tokenizer without a type", path);
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(pt, "pretokenizers");
        size_t i;
        json_t *item;
        if (!json_is_array(list)) return ot_fail(err, "%s: Sequence pre_tokenizer without a list", path);
        json_array_foreach(list, i, item) if (check_pre_tokenizer(item, path, found_split, err)) return -1;
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        const char *re = json_string_value(json_object_get(json_object_get(pt, "pattern"), "Regex"));
        const char *behavior = json_string_value(json_object_get(pt, "behavior"));
        if (!re || strcmp(re, OT_O200K_PATTERN) != 0)
            return ot_fail(err, "%s: the Split pre-tokenizer pattern is not the o200k pattern; this tokenizer is not "
                                "o200k_harmony", path);
        if (!behavior || strcmp(behavior, "Isolated") != 0 || json_is_true(json_object_get(pt, "invert")))
            return ot_fail(err, "%s: the Split pre-tokenizer must have behavior Isolated and invert false", path);
        *found_split = 1;
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        if (json_is_true(json_object_get(pt, "use_regex")) || json_is_true(json_object_get(pt, "add_prefix_space")))
            return ot_fail(err, "%s: ByteLevel pre-tokenizer with use_regex or add_prefix_space is not o200k", path);
        return 0;
    }
    return ot_fail(err, "%s: unsupported pre-tokenizer type '%s'", path, type);
}

static int load_json(ot_tokenizer *tok, const char *path, ot_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr); // a key twice: two answers to one question
    if (!root) return ot_fail(err, "cannot read tokenizer '%s': %s (line %d)", path, jerr.text, jerr.line);
    int rc = 0;
    uint8_t **ord = ot_calloc(OT_O200K_N_RANKS, sizeof(uint8_t *));
    uint32_t *ord_len = ot_calloc(OT_O200K_N_RANKS, sizeof(uint32_t));
    char *names[OT_HARMONY_VOCAB - OT_O200K_N_RANKS] = {0};
    int16_t inv[324];
    byte_level_inverse(inv);

    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    json_t *added = json_object_get(root, "added_tokens");
    json_t *norm = json_object_get(root, "normalizer");
    int found_split = 0;
    if (!mtype || strcmp(mtype, "BPE") != 0 || !json_is_object(vocab)) {
        rc = ot_fail(err, "%s: expected model.type \"BPE\" with a model.vocab object", path);
        goto done;
    }
    if (norm && !json_is_null(norm)) {
        rc = ot_fail(err, "%s: has a normalizer; o200k_harmony has none", path);
        goto done;
    }
    if (check_pre_tokenizer(json_object_get(root, "pre_tokenizer"), path, &found_split, err)) {
        rc = -1;
        goto done;
    }
    if (!found_split) {
        rc = ot_fail(err, "%s: no Split pre-tokenizer with the o200k pattern", path);
        goto done;
    }
    // Added tokens first: vocab entries at special ids are then recognised as duplicates of them.
    size_t i;
    json_t *item;
    json_array_foreach(added, i, item) {
        json_int_t id = json_integer_value(json_object_get(item, "id"));
        const char *content = json_string_value(json_object_get(item, "content"));
        if (!json_is_integer(json_object_get(item, "id")) || !content) {
            rc = ot_fail(err, "%s: added_tokens[%zu] lacks an integer id or a content string", path, i);
            goto done;
        }
        if (id < OT_O200K_N_RANKS || id >= OT_HARMONY_VOCAB) {
            rc = ot_fail(err, "%s: added token '%s' has id %lld outside the special range %d..%d", path, content,
                         (long long)id, OT_O200K_N_RANKS, OT_HARMONY_VOCAB - 1);
            goto done;
        }
        free(names[id - OT_O200K_N_RANKS]); // a repeated id: the last entry wins, as in HF tokenizers
        names[id - OT_O200K_N_RANKS] = ot_strdup(content);
    }
    const char *key;
    json_t *val;
    uint8_t buf[1024];
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= OT_HARMONY_VOCAB) {
            rc = ot_fail(err, "%s: vocab entry '%s' has no valid id", path, key);
            goto done;
        }
        if (id >= OT_O200K_N_RANKS) { // a special token repeated in the vocab: it must agree with added_tokens
            const char *nm = names[id - OT_O200K_N_RANKS];
            if (!nm || strcmp(nm, key) != 0) {
                rc = ot_fail(err, "%s: vocab entry '%s' has special id %lld but is not that added token", path, key,
                             (long long)id);
                goto done;
            }
            continue;
        }
        if (strlen(key) >= sizeof buf) {
            rc = ot_fail(err, "%s: vocab entry %lld is too long", path, (long long)id);
            goto done;
        }
        long n = byte_level_decode(key, inv, buf);
        if (n <= 0) {
            rc = ot_fail(err, "%s: vocab entry %lld ('%s') is not a byte-level string", path, (long long)id, key);
            goto done;
        }
        if (ord[id]) {
            rc = ot_fail(err, "%s: id %lld appears twice in the vocab", path, (long long)id);
            goto done;
        }
        ord[id] = ot_malloc((size_t)n);
        memcpy(ord[id], buf, (size_t)n);
        ord_len[id] = (uint32_t)n;
    }
    for (int r = 0; r < OT_O200K_N_RANKS; r++)
        if (!ord[r]) {
            rc = ot_fail(err, "%s: id %d is missing from the vocab (o200k has ids 0..%d)", path, r, OT_O200K_N_RANKS - 1);
            goto done;
        }
    // The merges are not needed: with tiktoken-derived vocabularies the merge order equals the rank order,
    // which is what this encoder uses (the rank of a token is its id).
    rc = finish_vocab(tok, ord, ord_len, names, path, err);
done:
    for (int r = 0; r < OT_O200K_N_RANKS; r++) free(ord[r]);
    for (int k = 0; k < OT_HARMONY_VOCAB - OT_O200K_N_RANKS; k++) free(names[k]);
    free(ord);
    free(ord_len);
    json_decref(root);
    return rc;
}

// ---- loading --------------------------------------------------------------------------------------------------
static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

ot_tokenizer *ot_tokenizer_load(const char *path, ot_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        ot_fail(err, "tokenizer '%s': %s", path, strerror(errno));
        return NULL;
    }
    char *file;
    if (S_ISDIR(st.st_mode)) {
        file = ot_malloc(strlen(path) + 32);
        sprintf(file, "%s/tokenizer.json", path);
        if (stat(file, &st) != 0) {
            ot_fail(err, "model directory '%s' has no tokenizer.json", path);
            free(file);
            return NULL;
        }
    } else {
        file = ot_strdup(path);
    }
    // The file is read twice (to load, then to hash): only a regular file can be, and a FIFO would block.
    if (!S_ISREG(st.st_mode)) {
        ot_fail(err, "tokenizer '%s' is %s, not a regular file", file, ot_file_kind(st.st_mode));
        free(file);
        return NULL;
    }
    int is_json;
    if (ends_with(file, ".json")) is_json = 1;
    else if (ends_with(file, ".tiktoken")) is_json = 0;
    else { // sniff: JSON starts with '{' after optional whitespace
        FILE *f = fopen(file, "rb");
        int c = ' ';
        while (f && (c = fgetc(f)) != EOF && (c == ' ' || c == '\n' || c == '\r' || c == '\t')) {}
        if (f) fclose(f);
        is_json = c == '{';
    }

    ot_tokenizer *tok = ot_calloc(1, sizeof *tok);
    tok->file = file;
    if ((is_json ? load_json(tok, file, err) : load_tiktoken(tok, file, err)) != 0 ||
        ot_sha256_file(file, tok->sha256, err) != 0) {
        ot_tokenizer_free(tok);
        return NULL;
    }
    int ecode;
    PCRE2_SIZE eoff;
    tok->re = pcre2_compile((PCRE2_SPTR)OT_O200K_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ecode, &eoff, NULL);
    if (!tok->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        ot_fail(err, "PCRE2 cannot compile the o200k pattern at offset %zu: %s", (size_t)eoff, (char *)msg);
        ot_tokenizer_free(tok);
        return NULL;
    }
    // JIT makes the split several times faster; without it (some platforms) the interpreter gives the same result.
    tok->jit = pcre2_jit_compile(tok->re, PCRE2_JIT_COMPLETE) == 0;
    return tok;
}

void ot_tokenizer_free(ot_tokenizer *tok) {
    if (!tok) return;
    if (tok->re) pcre2_code_free(tok->re);
    free(tok->blob);
    free(tok->off);
    free(tok->slots);
    free(tok->rank2);
    free(tok->file);
    free(tok);
}

// ---- byte-pair merging ----------------------------------------------------------------------------------------
// Within one pre-token, repeatedly merge the adjacent pair whose concatenation has the lowest rank; among equal
// ranks the leftmost goes first. Parts form a linked list over byte positions (a part is named by its first
// byte); candidate merges sit in a binary min-heap keyed by (rank, position) and are checked when popped, since
// a merge invalidates its neighbours' candidates. O(n log n) per pre-token, so long runs of text stay cheap.
typedef struct {
    int32_t rank, left, right, end; // merge part [left,right) with [right,end)
} bpe_cand;

typedef struct {
    int cap;
    int32_t *next, *prev;
    uint8_t *alive;
    bpe_cand *heap;
    int heap_n, heap_cap;
} bpe_scratch;

static void scratch_reserve(bpe_scratch *s, int n) {
    if (n <= s->cap) return;
    s->cap = n * 2;
    s->next = ot_realloc(s->next, sizeof(int32_t) * (size_t)s->cap);
    s->prev = ot_realloc(s->prev, sizeof(int32_t) * (size_t)s->cap);
    s->alive = ot_realloc(s->alive, (size_t)s->cap);
}

static void scratch_free(bpe_scratch *s) {
    free(s->next);
    free(s->prev);
    free(s->alive);
    free(s->heap);
}

static int cand_less(const bpe_cand *a, const bpe_cand *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_scratch *s, bpe_cand c) {
    if (s->heap_n == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 64;
        s->heap = ot_realloc(s->heap, sizeof(bpe_cand) * (size_t)s->heap_cap);
    }
    int i = s->heap_n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = c;
}

static bpe_cand heap_pop(bpe_scratch *s) {
    bpe_cand top = s->heap[0], last = s->heap[--s->heap_n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= s->heap_n) break;
        if (c + 1 < s->heap_n && cand_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!cand_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n > 0) s->heap[i] = last;
    return top;
}

static void try_candidate(const ot_tokenizer *tok, bpe_scratch *s, const uint8_t *p, int left, int right, int end) {
    int r = ot_tokenizer_rank(tok, p + left, (size_t)(end - left));
    if (r >= 0) heap_push(s, (bpe_cand){r, left, right, end});
}

static void bpe_piece(const ot_tokenizer *tok, bpe_scratch *s, const uint8_t *p, int n, ot_ids *out) {
    int whole = ot_tokenizer_rank(tok, p, (size_t)n);
    if (whole >= 0) { // most pre-tokens are a single token
        ot_ids_push(out, whole);
        return;
    }
    scratch_reserve(s, n + 1);
    s->heap_n = 0;
    for (int i = 0; i < n; i++) s->next[i] = i + 1, s->prev[i] = i - 1, s->alive[i] = 1;
    for (int i = 0; i + 1 < n; i++) try_candidate(tok, s, p, i, i + 1, i + 2);
    while (s->heap_n > 0) {
        bpe_cand c = heap_pop(s);
        // Still valid only if both parts are unchanged since the candidate was made.
        if (!s->alive[c.left] || !s->alive[c.right] || s->next[c.left] != c.right || s->next[c.right] != c.end)
            continue;
        s->alive[c.right] = 0;
        s->next[c.left] = c.end;
        if (c.end < n) s->prev[c.end] = c.left;
        if (s->prev[c.left] >= 0) try_candidate(tok, s, p, s->prev[c.left], c.left, c.end);
        if (c.end < n) try_candidate(tok, s, p, c.left, c.end, s->next[c.end]);
    }
    // Every single byte is a token (checked at load), so each remaining part has a rank.
    for (int i = 0; i < n; i = s->next[i]) ot_ids_push(out, ot_tokenizer_rank(tok, p + i, (size_t)(s->next[i] - i)));
}

// ---- encode / decode ------------------------------------------------------------------------------------------
int ot_tokenizer_encode(const ot_tokenizer *tok, const char *s, size_t len, ot_ids *out, ot_err *err) {
    size_t bad_at;
    if (!ot_utf8_valid(s, len, NULL, &bad_at)) return ot_fail(err, "text is not valid UTF-8 (byte offset %zu)", bad_at);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) ot_die("out of memory creating PCRE2 match data");
    bpe_scratch scratch = {0};
    int rc = 0;
    size_t at = 0;
    while (at < len) {
        // UTF validity was checked once above; letting PCRE2 re-check on every call would be quadratic.
        int m = tok->jit ? pcre2_jit_match(tok->re, (PCRE2_SPTR)s, len, at, PCRE2_NO_UTF_CHECK, md, NULL)
                         : pcre2_match(tok->re, (PCRE2_SPTR)s, len, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            rc = ot_fail(err, "pre-tokenizer failed at byte %zu: %s", at, (char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        // The pattern covers every character, so each match must start exactly where the last one ended.
        if (ov[0] != at || ov[1] <= ov[0]) {
            rc = ot_fail(err, "pre-tokenizer left bytes %zu..%zu uncovered", at, (size_t)ov[0]);
            break;
        }
        bpe_piece(tok, &scratch, (const uint8_t *)s + ov[0], (int)(ov[1] - ov[0]), out);
        at = ov[1];
    }
    scratch_free(&scratch);
    pcre2_match_data_free(md);
    return rc;
}

char *ot_tokenizer_decode(const ot_tokenizer *tok, const int32_t *ids, int n, size_t *out_len, ot_err *err) {
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= OT_HARMONY_VOCAB) {
            ot_fail(err, "cannot decode token id %d at position %d: the vocabulary has ids 0..%d", ids[i], i,
                    OT_HARMONY_VOCAB - 1);
            return NULL;
        }
        total += tok->off[ids[i] + 1] - tok->off[ids[i]];
    }
    char *buf = ot_malloc(total + 1);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t len = tok->off[ids[i] + 1] - tok->off[ids[i]];
        memcpy(buf + at, tok->blob + tok->off[ids[i]], len);
        at += len;
    }
    buf[at] = 0;
    if (out_len) *out_len = at;
    return buf;
}

// ---- queries --------------------------------------------------------------------------------------------------
int ot_tokenizer_special_id(const ot_tokenizer *tok, const char *name) {
    size_t len = strlen(name);
    for (int id = OT_O200K_N_RANKS; id < OT_HARMONY_VOCAB; id++)
        if (tok->off[id + 1] - tok->off[id] == len && memcmp(tok->blob + tok->off[id], name, len) == 0) return id;
    return -1;
}

int ot_tokenizer_is_special(const ot_tokenizer *tok, int id) {
    (void)tok;
    return id >= OT_O200K_N_RANKS && id < OT_HARMONY_VOCAB;
}

const uint8_t *ot_tokenizer_token_bytes(const ot_tokenizer *tok, int id, size_t *len) {
    if (id < 0 || id >= OT_HARMONY_VOCAB) return NULL;
    if (len) *len = tok->off[id + 1] - tok->off[id];
    return tok->blob + tok->off[id];
}

int ot_tokenizer_vocab_size(const ot_tokenizer *tok) {
    (void)tok;
    return OT_HARMONY_VOCAB;
}

int ot_tokenizer_n_ordinary(const ot_tokenizer *tok) {
    (void)tok;
    return OT_O200K_N_RANKS;
}

const char *ot_tokenizer_sha256(const ot_tokenizer *tok) { return tok->sha256; }
const char *ot_tokenizer_file(const ot_tokenizer *tok) { return tok->file; }
