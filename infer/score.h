// Corpus-level translation scores, computed as sacreBLEU 2.x computes its defaults (math only, no I/O):
//
// - chrF2: character n-grams of orders 1..6, no word n-grams, beta = 2, whitespace removed before the n-grams
//   are taken (sacreBLEU's CHRF()). Per order the hypothesis, reference and matched n-gram counts are summed over
//   the corpus; precision and recall are averaged over the orders where both sides have n-grams; the score is
//   100 · (1 + β²)·P·R / (β²·P + R).
// - char-BLEU-4: every character that is not whitespace is a token (sacreBLEU's BLEU(tokenize="char")); clipped
//   n-gram matches of orders 1..4 summed over the corpus, brevity penalty exp(1 − ref/hyp) when the hypotheses
//   are shorter, and sacreBLEU's default "exp" smoothing for an order with no match.
//
// "Character" means Unicode code point, as in Python strings. Text is UTF-8; a byte that does not start a valid
// UTF-8 sequence counts as one U+FFFD. Whitespace is what Python's str.split() splits on (str.isspace()).
#ifndef OT_TRAINER_SCORE_H
#define OT_TRAINER_SCORE_H

#include <stddef.h>
#include <stdint.h>

#define OT_CHRF_ORDER 6
#define OT_CHRF_BETA 2
#define OT_BLEU_ORDER 4

// Sufficient statistics of a corpus (or a part of one): add segments, merge parts, then compute the scores.
typedef struct {
    long count;                            // segments
    int64_t chrf[OT_CHRF_ORDER][3];        // per order n-1: hypothesis n-grams, reference n-grams, matches
    int64_t bleu_match[OT_BLEU_ORDER];     // clipped matches per order
    int64_t bleu_total[OT_BLEU_ORDER];     // hypothesis n-grams per order
    int64_t hyp_len, ref_len;              // BLEU tokens (non-whitespace characters)
} ot_score_stats;

void ot_score_init(ot_score_stats *s);
// Add one hypothesis / reference segment (UTF-8, not NUL-terminated).
void ot_score_add(ot_score_stats *s, const char *hyp, size_t hyp_len, const char *ref, size_t ref_len);
void ot_score_merge(ot_score_stats *into, const ot_score_stats *from);

double ot_score_chrf(const ot_score_stats *s); // 0..100
double ot_score_bleu(const ot_score_stats *s); // 0..100

// Unicode whitespace as Python's str.isspace() defines it.
int ot_is_unicode_space(uint32_t cp);

#endif
