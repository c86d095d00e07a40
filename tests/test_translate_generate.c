// Generation pieces that need no model: reading the answer out of harmony output (infer/generate.h rules
// 1–4), flattening an answer to one line, and the sampler (greedy ties, nucleus cut, draw frequencies).
// Usage: test_translate_generate [TOKENIZER]   (default data/o200k_base.tiktoken)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"
#include "infer/generate.h"

static const ot_tokenizer *g_tok;
static ot_harmony g_h;

// Build an id sequence from pieces: "<|name|>" is a special token, anything else ordinary text.
static void build(ot_ids *out, const char *const *pieces, int n) {
    ot_err err;
    out->n = 0;
    for (int i = 0; i < n; i++) {
        const char *p = pieces[i];
        if (p[0] == '<' && p[1] == '|') {
            int id = ot_tokenizer_special_id(g_tok, p);
            if (id < 0) ot_die("no special token %s", p);
            ot_ids_push(out, id);
        } else if (ot_tokenizer_encode(g_tok, p, strlen(p), out, &err)) {
            ot_die("%s", err.msg);
        }
    }
}

static void expect_answer(const char *what, const char *const *pieces, int n, const char *want, int want_kind) {
    ot_ids ids = {0};
    build(&ids, pieces, n);
    ot_err err;
    int kind = 0;
    char *got = ot_harmony_answer(&g_h, ids.v, ids.n, &kind, &err);
    CHECK(got && strcmp(got, want) == 0, "%s: answer '%s', expected '%s'", what, got ? got : err.msg, want);
    CHECK(kind == want_kind, "%s: kind %d, expected %d", what, kind, want_kind);
    free(got);
    ot_ids_free(&ids);
}

#define N(a) ((int)(sizeof(a) / sizeof(a)[0]))

static void test_answers(void) {
    const char *final_only[] = {"<|channel|>", "final", "<|message|>", "今仔日天氣真好。", "<|return|>"};
    expect_answer("final only", final_only, N(final_only), "今仔日天氣真好。", OT_ANSWER_FINAL);

    const char *analysis_then_final[] = {"<|channel|>", "analysis", "<|message|>", "Need to translate.", "<|end|>",
                                         "<|start|>",   "assistant", "<|channel|>", "final",
                                         "<|message|>", "我毋知。",  "<|return|>"};
    expect_answer("analysis, then final", analysis_then_final, N(analysis_then_final), "我毋知。", OT_ANSWER_FINAL);

    const char *no_header[] = {"伊佇厝裡。", "<|return|>", "ignored after the stop"};
    expect_answer("no header at all", no_header, N(no_header), "伊佇厝裡。", OT_ANSWER_UNLABELLED);

    const char *no_channel[] = {"<|message|>", "無頻道", "<|return|>"};
    expect_answer("message without a channel", no_channel, N(no_channel), "無頻道", OT_ANSWER_UNLABELLED);

    const char *cut_in_analysis[] = {"<|channel|>", "analysis", "<|message|>", "thinking about"};
    expect_answer("limit inside analysis", cut_in_analysis, N(cut_in_analysis), "", OT_ANSWER_NONE);

    const char *cut_in_final[] = {"<|channel|>", "final", "<|message|>", "half an answer"};
    expect_answer("limit inside final", cut_in_final, N(cut_in_final), "half an answer", OT_ANSWER_FINAL);

    const char *commentary_then_final[] = {"<|channel|>", "commentary to=functions.x", "<|message|>", "{}",
                                           "<|end|>",     "<|start|>",   "assistant",  "<|channel|>",
                                           "final",       "<|message|>", "ok",         "<|end|>"};
    expect_answer("commentary with recipient, then final", commentary_then_final, N(commentary_then_final), "ok",
                  OT_ANSWER_FINAL);

    const char *final_with_type[] = {"<|channel|>", "final json", "<|message|>", "{\"a\": 1}", "<|call|>"};
    expect_answer("channel name followed by a content type", final_with_type, N(final_with_type), "{\"a\": 1}",
                  OT_ANSWER_FINAL);

    const char *finalize[] = {"<|channel|>", "finalize", "<|message|>", "not final", "<|return|>"};
    expect_answer("a channel that only starts with 'final'", finalize, N(finalize), "", OT_ANSWER_NONE);

    const char *newline[] = {"<|channel|>", "final", "<|message|>", "一\n二", "<|return|>"};
    expect_answer("newline kept by the parser", newline, N(newline), "一\n二", OT_ANSWER_FINAL);

    // A character cut by the token limit: the first byte of 好 (e5 a5 bd) alone becomes U+FFFD.
    ot_ids ids = {0};
    const char *start[] = {"<|channel|>", "final", "<|message|>", "ab"};
    build(&ids, start, N(start));
    int byte_e5 = ot_tokenizer_rank(g_tok, (const uint8_t *)"\xe5", 1);
    CHECK(byte_e5 >= 0, "no single-byte token for 0xe5");
    ot_ids_push(&ids, byte_e5);
    ot_err err;
    int kind;
    char *got = ot_harmony_answer(&g_h, ids.v, ids.n, &kind, &err);
    CHECK(got && strcmp(got, "ab\xEF\xBF\xBD") == 0, "cut character: '%s'", got ? got : err.msg);
    free(got);

    // An id the tokenizer does not have is an error with a message, not a silent empty answer.
    ids.n = 0;
    ot_ids_push(&ids, ot_tokenizer_vocab_size(g_tok) + 5);
    got = ot_harmony_answer(&g_h, ids.v, ids.n, &kind, &err);
    CHECK(got == NULL && strstr(err.msg, "outside the tokenizer"), "bad id: %s", got ? got : err.msg);
    free(got);
    ot_ids_free(&ids);
}

static void test_one_line(void) {
    char s[] = "a\nb\r\nc\rd\n";
    ot_text_one_line(s);
    CHECK(strcmp(s, "a b c d ") == 0, "one line: '%s'", s);
}

static void test_sampler(void) {
    float tie[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    CHECK(ot_sample_token(tie, 5, 0.0f, 1.0f, NULL) == 1, "greedy must take the lowest id among equal maxima");

    // p = 0.5, 0.3, 0.2 (as logits), and a token with no mass to speak of
    float lg[4] = {logf(0.5f), logf(0.3f), logf(0.2f), -1e4f};
    ot_rng r;
    ot_rng_seed(&r, 99);
    const int draws = 40000;
    int count[4] = {0};
    for (int i = 0; i < draws; i++) count[ot_sample_token(lg, 4, 1.0f, 1.0f, &r)]++;
    // 5 standard deviations of a frequency: 5·sqrt(p(1−p)/draws) <= 5·0.0025 = 0.0125
    const double tol = 0.0125;
    double want[3] = {0.5, 0.3, 0.2};
    for (int k = 0; k < 3; k++)
        CHECK(fabs((double)count[k] / draws - want[k]) <= tol, "T=1: token %d drawn %.4f of the time, expected %.2f",
              k, (double)count[k] / draws, want[k]);
    CHECK(count[3] == 0, "a token with probability ~e^-1e4 was drawn %d times", count[3]);

    // top_p 0.7: the nucleus is {0, 1} (0.5 < 0.7 <= 0.8), renormalised to 0.625 / 0.375
    memset(count, 0, sizeof count);
    for (int i = 0; i < draws; i++) count[ot_sample_token(lg, 4, 1.0f, 0.7f, &r)]++;
    CHECK(count[2] == 0 && count[3] == 0, "top_p 0.7 drew outside the nucleus (%d, %d)", count[2], count[3]);
    CHECK(fabs((double)count[0] / draws - 0.625) <= tol, "top_p 0.7: token 0 drawn %.4f, expected 0.625",
          (double)count[0] / draws);

    // top_p 0.45 keeps only the most probable token; a tiny temperature makes the draw (nearly) greedy
    int only0 = 1;
    for (int i = 0; i < 2000; i++) only0 &= ot_sample_token(lg, 4, 1.0f, 0.45f, &r) == 0;
    CHECK(only0, "top_p 0.45 drew a token other than the most probable one");
    int cold = 1;
    for (int i = 0; i < 2000; i++) cold &= ot_sample_token(lg, 4, 0.01f, 1.0f, &r) == 0;
    CHECK(cold, "temperature 0.01 drew a token other than the argmax");

    // the same seed gives the same draws
    ot_rng a, b;
    ot_rng_seed(&a, 5);
    ot_rng_seed(&b, 5);
    int same = 1;
    for (int i = 0; i < 100; i++) same &= ot_sample_token(lg, 4, 1.5f, 0.9f, &a) == ot_sample_token(lg, 4, 1.5f, 0.9f, &b);
    CHECK(same, "equal seeds gave different draws");
}

int main(int argc, char **argv) {
    const char *tok_path = argc > 1 ? argv[1] : "data/o200k_base.tiktoken";
    ot_err err;
    ot_tokenizer *tok = ot_tokenizer_load(tok_path, &err);
    if (!tok) ot_die("%s", err.msg);
    g_tok = tok;
    if (ot_harmony_init(&g_h, tok, NULL, NULL, NULL, &err)) ot_die("%s", err.msg);
    test_answers();
    test_one_line();
    test_sampler();
    ot_harmony_free(&g_h);
    ot_tokenizer_free(tok);
    return ot_test_finish("test_translate_generate");
}
