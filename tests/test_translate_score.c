// chrF2 and char-BLEU-4 on cases small enough to work out by hand (the values in the comments). The comparison
// with the sacrebleu package itself, on random and real corpora, is tests/test_translate_metrics.py.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tests/test_util.h"
#include "infer/score.h"

#define TOL 1e-12 // relative: the formulas are a handful of double operations

static void segment(ot_score_stats *s, const char *hyp, const char *ref) {
    ot_score_init(s);
    ot_score_add(s, hyp, strlen(hyp), ref, strlen(ref));
}

static void expect(const char *what, double got, double want) {
    double err = want != 0 ? fabs(got - want) / fabs(want) : fabs(got);
    ot_check_close(what, err, TOL);
    if (err > TOL) printf("     got %.15g, expected %.15g\n", got, want);
}

int main(void) {
    ot_score_stats s;

    segment(&s, "今天天氣很好", "今天天氣很好");
    expect("identical: chrF", ot_score_chrf(&s), 100.0);
    expect("identical: BLEU", ot_score_bleu(&s), 100.0);

    // Whitespace (ASCII, U+3000 ideographic, U+00A0, U+2009) is not part of any n-gram.
    segment(&s, " 今天 天氣\xE3\x80\x80很\xC2\xA0\xE2\x80\x89好 ", "今天天氣很好");
    expect("whitespace ignored: chrF", ot_score_chrf(&s), 100.0);
    expect("whitespace ignored: BLEU", ot_score_bleu(&s), 100.0);
    // U+200B ZERO WIDTH SPACE is not whitespace in Python, so it is a character.
    segment(&s, "ab\xE2\x80\x8B", "ab");
    CHECK(ot_score_chrf(&s) < 100.0, "U+200B was treated as whitespace (chrF %.6f)", ot_score_chrf(&s));

    segment(&s, "", "abc");
    expect("empty hypothesis: chrF", ot_score_chrf(&s), 0.0);
    expect("empty hypothesis: BLEU", ot_score_bleu(&s), 0.0);

    // hyp "ab", ref "abc": 1-grams P 2/2 R 2/3; 2-grams P 1/1 R 1/2; order 3 has no hypothesis n-gram, so it is
    // left out of the averages. P = 1, R = 7/12, F2 = 5·P·R / (4P + R) = 7/11.
    segment(&s, "ab", "abc");
    expect("ab | abc: chrF = 700/11", ot_score_chrf(&s), 700.0 / 11.0);
    // BLEU: no hypothesis 3-gram ends the product with precision 0, so the score is 0.
    expect("ab | abc: BLEU = 0", ot_score_bleu(&s), 0.0);

    // hyp "abcdef", ref "ab": from order 3 on the reference has no n-gram, and sacreBLEU then does not count the
    // hypothesis n-grams either. P = (2/6 + 1/5)/2 = 4/15, R = (1 + 1)/2 = 1, F2 = 5·(4/15) / (16/15 + 1) = 20/31.
    segment(&s, "abcdef", "ab");
    expect("abcdef | ab: chrF = 2000/31", ot_score_chrf(&s), 2000.0 / 31.0);
    CHECK(s.chrf[2][0] == 0 && s.chrf[0][0] == 6, "hypothesis 3-grams counted against a 2-character reference");

    // hyp "abcd", ref "abce": precisions 3/4, 2/3, 1/2 and, for the unmatched 4-gram, exp smoothing 1/(2·1);
    // equal lengths, so no brevity penalty: BLEU = (75 · 66.67 · 50 · 50)^(1/4).
    segment(&s, "abcd", "abce");
    expect("abcd | abce: BLEU with exp smoothing", ot_score_bleu(&s), pow(75.0 * (200.0 / 3.0) * 50.0 * 50.0, 0.25));
    // Brevity penalty: hyp "abcd" (4 tokens) against ref "abcdab" (6): exp(1 − 6/4) · 100.
    segment(&s, "abcd", "abcdab");
    expect("abcd | abcdab: brevity penalty", ot_score_bleu(&s), exp(1.0 - 6.0 / 4.0) * 100.0);

    // Characters are code points: a 4-byte emoji is one character. "😀" vs "😀😀": P 1, R 1/2 → F2 = 5/9.
    segment(&s, "\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80\xF0\x9F\x98\x80");
    expect("emoji: chrF = 500/9", ot_score_chrf(&s), 500.0 / 9.0);
    // A byte that is not UTF-8 counts as U+FFFD.
    segment(&s, "x\xFF", "x\xEF\xBF\xBD");
    expect("invalid byte = U+FFFD: chrF", ot_score_chrf(&s), 100.0);

    // Corpus level: statistics are summed, not scores averaged.
    ot_score_stats a, b, both;
    segment(&a, "今天天氣很好", "今仔日天氣真好");
    segment(&b, "我不知道", "我毋知");
    ot_score_init(&both);
    ot_score_add(&both, "今天天氣很好", strlen("今天天氣很好"), "今仔日天氣真好", strlen("今仔日天氣真好"));
    ot_score_add(&both, "我不知道", strlen("我不知道"), "我毋知", strlen("我毋知"));
    ot_score_merge(&a, &b);
    CHECK(memcmp(&a, &both, sizeof a) == 0, "merging two segments' statistics differs from adding both");
    CHECK(both.count == 2, "count %ld", both.count);

    return ot_test_finish("test_translate_score");
}
