// Generation on an ot_decoder: prefix re-use, sampling, stop tokens, and the harmony answer parser.
#include "infer/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/utf8.h"

void ot_decoder_close(ot_decoder *dec) {
    if (dec->destroy && dec->state) dec->destroy(dec->state);
    dec->state = NULL;
    ot_ids_free(&dec->cached);
}

void ot_gen_options_default(ot_gen_options *o) {
    o->max_new_tokens = 512;
    o->temperature = 0.0f;
    o->top_p = 1.0f;
}

// ---- sampling -------------------------------------------------------------------------------------------------
static int argmax(const float *logits, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i; // strict '>': the lowest id wins a tie
    return best;
}

typedef struct {
    double p;
    int id;
} prob_id;

// Descending probability; equal probabilities in increasing id, so the order (and the draw) is reproducible.
static int by_prob_desc(const void *a, const void *b) {
    const prob_id *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

int ot_sample_token(const float *logits, int V, float temperature, float top_p, ot_rng *rng) {
    if (temperature <= 0.0f) return argmax(logits, V);
    // softmax(logits / T) in double, stabilised by the maximum
    double mx = logits[argmax(logits, V)], Z = 0;
    prob_id *p = ot_malloc(sizeof(prob_id) * (size_t)V);
    for (int i = 0; i < V; i++) {
        p[i].p = exp(((double)logits[i] - mx) / temperature);
        p[i].id = i;
        Z += p[i].p;
    }
    int keep = V;
    if (top_p < 1.0f) {
        // The nucleus: the most probable tokens until their mass reaches top_p (at least one token).
        qsort(p, (size_t)V, sizeof(prob_id), by_prob_desc);
        double mass = 0;
        for (keep = 0; keep < V;) {
            mass += p[keep++].p / Z;
            if (mass >= top_p) break;
        }
    }
    double kept = 0;
    for (int i = 0; i < keep; i++) kept += p[i].p;
    double u = ot_rng_uniform(rng) * kept, run = 0;
    int pick = p[keep - 1].id; // rounding can leave u just above the last running sum
    for (int i = 0; i < keep; i++) {
        run += p[i].p;
        if (u < run) {
            pick = p[i].id;
            break;
        }
    }
    free(p);
    return pick;
}

// ---- the generation loop ----------------------------------------------------------------------------------------
static int stop_index(int id, const int32_t *stop_ids, int n_stop) {
    for (int i = 0; i < n_stop; i++)
        if (stop_ids[i] == id) return i;
    return -1;
}

int ot_generate(ot_decoder *dec, const int32_t *prompt, int n_prompt, const ot_gen_options *o, const int32_t *stop_ids,
                int n_stop, ot_rng *rng, ot_ids *out, int *stop, int *reused, ot_err *err) {
    if (n_prompt < 1) return ot_fail(err, "generate: the prompt is empty");
    if (o->max_new_tokens < 1) return ot_fail(err, "generate: max_new_tokens %d must be >= 1", o->max_new_tokens);
    if ((long)n_prompt + o->max_new_tokens > dec->max_positions)
        return ot_fail(err, "generate: a prompt of %d tokens plus %d new ones passes the model's %d positions",
                       n_prompt, o->max_new_tokens, dec->max_positions);
    // The keys and values of a position depend only on the tokens up to it, so the cached ones stay valid as far
    // as the cached ids agree with the prompt. At least the prompt's last token is run again: its logits are
    // the first prediction.
    int common = 0;
    while (common < dec->cached.n && common < n_prompt && dec->cached.v[common] == prompt[common]) common++;
    if (common == n_prompt) common--;
    dec->truncate(dec->state, common);
    dec->cached.n = common;
    if (reused) *reused = common;

    float *logits = ot_malloc(sizeof(float) * (size_t)dec->vocab);
    int rc = dec->append(dec->state, prompt + common, n_prompt - common, logits, err);
    if (rc == 0) {
        ot_ids_append(&dec->cached, prompt + common, n_prompt - common);
        *stop = -1;
        for (int i = 0; i < o->max_new_tokens; i++) {
            int32_t id = ot_sample_token(logits, dec->vocab, o->temperature, o->top_p, rng);
            ot_ids_push(out, id);
            if ((*stop = stop_index(id, stop_ids, n_stop)) >= 0) break;
            if (i + 1 == o->max_new_tokens) break; // no logits needed after the last allowed token
            if ((rc = dec->append(dec->state, &id, 1, logits, err))) break;
            ot_ids_push(&dec->cached, id);
        }
    }
    if (rc) { // the backend refused: its cache holds an unknown amount, so start from nothing next time
        dec->truncate(dec->state, 0);
        dec->cached.n = 0;
    }
    free(logits);
    return rc;
}

// ---- reading the answer out of the harmony output -------------------------------------------------------------
typedef struct {
    char *s;
    size_t n, cap;
} buf;

static void buf_add(buf *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = ot_realloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
}

// Copy of s[0..n) where every byte that does not start a valid UTF-8 sequence becomes U+FFFD.
static char *utf8_repair(const char *s, size_t n) {
    buf b = {0};
    buf_add(&b, "", 0);
    size_t at = 0;
    while (at < n) {
        size_t bad;
        if (ot_utf8_valid(s + at, n - at, NULL, &bad)) {
            buf_add(&b, s + at, n - at);
            break;
        }
        buf_add(&b, s + at, bad);
        buf_add(&b, "\xEF\xBF\xBD", 3);
        at += bad + 1;
    }
    return b.s;
}

// The text of the ordinary tokens among ids[from..to) (special tokens dropped).
static char *ordinary_text(const ot_tokenizer *tok, const int32_t *ids, int from, int to, ot_err *err) {
    buf b = {0};
    buf_add(&b, "", 0);
    for (int i = from; i < to; i++) {
        if (ot_tokenizer_is_special(tok, ids[i])) continue;
        size_t len;
        const uint8_t *bytes = ot_tokenizer_token_bytes(tok, ids[i], &len);
        if (!bytes) {
            free(b.s);
            ot_fail(err, "generated token id %d is outside the tokenizer's vocabulary (%d ids)", ids[i],
                    ot_tokenizer_vocab_size(tok));
            return NULL;
        }
        buf_add(&b, bytes, len);
    }
    char *fixed = utf8_repair(b.s, b.n);
    free(b.s);
    return fixed;
}

char *ot_harmony_answer(const ot_harmony *h, const int32_t *ids, int n, int *kind, ot_err *err) {
    const ot_tokenizer *tok = h->tok;
    const int id_call = ot_tokenizer_special_id(tok, "<|call|>");
    int any_message = 0, plain_from = -1, plain_to = -1; // the first message without a channel
    // Walk the messages. `header` is where the current message's header starts, -1 between messages (after
    // <|end|>, until <|start|>).
    int header = 0;
    for (int i = 0; i < n;) {
        if (header < 0) {
            if (ids[i] == h->id_start) header = i + 1;
            i++;
            continue;
        }
        int msg = header;
        while (msg < n && ids[msg] != h->id_message && ids[msg] != h->id_end && ids[msg] != h->id_return &&
               ids[msg] != id_call)
            msg++;
        if (msg == n || ids[msg] != h->id_message) break; // a header that never reached <|message|>
        any_message = 1;
        // The channel: the ordinary text right after <|channel|>, up to the next special token or a space
        // (harmony allows ` to=…` and a content type after the channel name).
        int has_channel = 0, is_final = 0;
        for (int j = header; j < msg && !has_channel; j++)
            if (ids[j] == h->id_channel) {
                int e = j + 1;
                while (e < msg && !ot_tokenizer_is_special(tok, ids[e])) e++;
                char *name = ordinary_text(tok, ids, j + 1, e, err);
                if (!name) return NULL;
                name[strcspn(name, " ")] = 0;
                has_channel = 1;
                is_final = strcmp(name, "final") == 0;
                free(name);
            }
        int end = msg + 1;
        while (end < n && ids[end] != h->id_end && ids[end] != h->id_return && ids[end] != id_call) end++;
        if (is_final) {
            *kind = OT_ANSWER_FINAL;
            return ordinary_text(tok, ids, msg + 1, end, err);
        }
        if (!has_channel && plain_from < 0) {
            plain_from = msg + 1;
            plain_to = end;
        }
        if (end >= n || ids[end] != h->id_end) break; // the output ended with this message
        header = -1;
        i = end + 1;
    }
    if (plain_from >= 0) {
        *kind = OT_ANSWER_UNLABELLED;
        return ordinary_text(tok, ids, plain_from, plain_to, err);
    }
    if (!any_message) {
        int end = 0;
        while (end < n && ids[end] != h->id_return && ids[end] != id_call) end++;
        *kind = OT_ANSWER_UNLABELLED;
        return ordinary_text(tok, ids, 0, end, err);
    }
    *kind = OT_ANSWER_NONE;
    return ot_strdup("");
}

void ot_text_one_line(char *s) {
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r == '\r' && r[1] == '\n') continue; // "\r\n" → the '\n' below writes its one space
        *w++ = (*r == '\n' || *r == '\r') ? ' ' : *r;
    }
    *w = 0;
}

int ot_translate(ot_decoder *dec, const ot_harmony *h, ot_direction dir, const char *source, size_t source_len,
                 const ot_gen_options *o, uint64_t seed, long index, ot_translation *t, ot_err *err) {
    memset(t, 0, sizeof *t);
    ot_ids prompt = {0}, out = {0};
    int rc = ot_harmony_render_prompt(h, dir, source, source_len, &prompt, err);
    if (rc == 0) {
        int32_t stop_ids[2] = {h->id_return, ot_tokenizer_special_id(h->tok, "<|call|>")};
        int n_stop = stop_ids[1] >= 0 ? 2 : 1;
        ot_rng rng;
        ot_rng_seed(&rng, ot_hash64(seed ^ ot_hash64((uint64_t)index)));
        int which;
        rc = ot_generate(dec, prompt.v, prompt.n, o, stop_ids, n_stop, &rng, &out, &which, &t->reused_tokens, err);
        t->stop = which == 0 ? OT_STOP_RETURN : which == 1 ? OT_STOP_CALL : OT_STOP_LIMIT;
    }
    if (rc == 0) {
        t->prompt_tokens = prompt.n;
        t->new_tokens = out.n;
        t->text = ot_harmony_answer(h, out.v, out.n, &t->answer, err);
        if (!t->text) rc = -1;
        else ot_text_one_line(t->text);
    }
    ot_ids_free(&prompt);
    ot_ids_free(&out);
    return rc;
}
