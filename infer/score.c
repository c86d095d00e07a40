// chrF and char-BLEU as sacreBLEU computes them. The final formulas repeat sacreBLEU's floating-point steps in
// its order, so the scores agree with it to the last bits, not just to the printed decimals.
//
// N-grams are compared exactly, without hashing: a code point fits in 21 bits, so an n-gram of up to 6 code
// points packs into two 64-bit words (3 per word). A segment's n-grams of one order are sorted and the two sorted
// lists walked together, which counts the clipped matches Σ min(count in hyp, count in ref).
#include "infer/score.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/ot_common.h"

int ot_is_unicode_space(uint32_t cp) {
    if (cp >= 0x09 && cp <= 0x0d) return 1;
    if (cp >= 0x1c && cp <= 0x20) return 1; // the information separators count as whitespace in Python
    if (cp == 0x85 || cp == 0xa0 || cp == 0x1680) return 1;
    if (cp >= 0x2000 && cp <= 0x200a) return 1; // (U+200B ZERO WIDTH SPACE is not whitespace)
    return cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

// One code point from s[0..n) (n >= 1); *used = bytes consumed. A malformed sequence (bad lead or continuation
// byte, overlong form, surrogate, > U+10FFFF, cut short) gives U+FFFD for its first byte alone.
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *used) {
    unsigned c = s[0];
    *used = 1;
    if (c < 0x80) return c;
    int len;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0xfffd;
    if ((size_t)len > n) return 0xfffd;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0xfffd;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0xfffd;
    *used = (size_t)len;
    return cp;
}

// The non-whitespace code points of s (the characters both metrics look at). Returns their number.
static int characters(const char *s, size_t n, uint32_t **out) {
    uint32_t *cp = ot_malloc(sizeof(uint32_t) * (n + 1));
    int k = 0;
    for (size_t at = 0, used; at < n; at += used) {
        uint32_t c = utf8_next((const unsigned char *)s + at, n - at, &used);
        if (!ot_is_unicode_space(c)) cp[k++] = c;
    }
    *out = cp;
    return k;
}

typedef struct {
    uint64_t a, b; // code points 0-2 and 3-5 of the n-gram, 21 bits each
} gram;

static int gram_cmp(const void *x, const void *y) {
    const gram *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    if (p->b != q->b) return p->b < q->b ? -1 : 1;
    return 0;
}

// The len-n+1 n-grams of cp (none when len < n), sorted. Returns their number.
static int sorted_grams(gram *g, const uint32_t *cp, int len, int n) {
    int count = len - n + 1 > 0 ? len - n + 1 : 0;
    for (int i = 0; i < count; i++) {
        gram x = {0, 0};
        for (int j = 0; j < n; j++) {
            uint64_t *w = j < 3 ? &x.a : &x.b;
            *w = (*w << 21) | cp[i + j];
        }
        g[i] = x;
    }
    qsort(g, (size_t)count, sizeof(gram), gram_cmp);
    return count;
}

// Σ over distinct n-grams of min(count in h, count in r), both lists sorted.
static int64_t clipped_matches(const gram *h, int nh, const gram *r, int nr) {
    int64_t m = 0;
    int i = 0, j = 0;
    while (i < nh && j < nr) {
        int c = gram_cmp(&h[i], &r[j]);
        if (c < 0) i++;
        else if (c > 0) j++;
        else {
            int ci = 0, cj = 0;
            gram x = h[i];
            while (i < nh && gram_cmp(&h[i], &x) == 0) i++, ci++;
            while (j < nr && gram_cmp(&r[j], &x) == 0) j++, cj++;
            m += ci < cj ? ci : cj;
        }
    }
    return m;
}

void ot_score_init(ot_score_stats *s) { memset(s, 0, sizeof *s); }

void ot_score_add(ot_score_stats *s, const char *hyp, size_t hyp_len, const char *ref, size_t ref_len) {
    uint32_t *h, *r;
    int lh = characters(hyp, hyp_len, &h), lr = characters(ref, ref_len, &r);
    gram *gh = ot_malloc(sizeof(gram) * (size_t)(lh + 1)), *gr = ot_malloc(sizeof(gram) * (size_t)(lr + 1));
    int max_order = OT_CHRF_ORDER > OT_BLEU_ORDER ? OT_CHRF_ORDER : OT_BLEU_ORDER;
    for (int n = 1; n <= max_order; n++) {
        int nh = sorted_grams(gh, h, lh, n), nr = sorted_grams(gr, r, lr, n);
        int64_t m = clipped_matches(gh, nh, gr, nr);
        if (n <= OT_CHRF_ORDER) {
            // sacreBLEU counts the hypothesis n-grams of an order only when the reference has some of that order
            s->chrf[n - 1][0] += nr > 0 ? nh : 0;
            s->chrf[n - 1][1] += nr;
            s->chrf[n - 1][2] += m;
        }
        if (n <= OT_BLEU_ORDER) {
            s->bleu_total[n - 1] += nh;
            s->bleu_match[n - 1] += m;
        }
    }
    s->hyp_len += lh;
    s->ref_len += lr;
    s->count++;
    free(gh);
    free(gr);
    free(h);
    free(r);
}

void ot_score_merge(ot_score_stats *into, const ot_score_stats *from) {
    into->count += from->count;
    for (int n = 0; n < OT_CHRF_ORDER; n++)
        for (int k = 0; k < 3; k++) into->chrf[n][k] += from->chrf[n][k];
    for (int n = 0; n < OT_BLEU_ORDER; n++) {
        into->bleu_match[n] += from->bleu_match[n];
        into->bleu_total[n] += from->bleu_total[n];
    }
    into->hyp_len += from->hyp_len;
    into->ref_len += from->ref_len;
}

// sacreBLEU CHRF._compute_f_score without eps smoothing (its default): average precision and recall over the
// orders where both sides have n-grams, then one F-beta of the averages.
double ot_score_chrf(const ot_score_stats *s) {
    const double eps = 1e-16, factor = (double)(OT_CHRF_BETA * OT_CHRF_BETA);
    double avg_prec = 0.0, avg_rec = 0.0;
    int effective_order = 0;
    for (int n = 0; n < OT_CHRF_ORDER; n++) {
        int64_t n_hyp = s->chrf[n][0], n_ref = s->chrf[n][1], n_match = s->chrf[n][2];
        double prec = n_hyp > 0 ? (double)n_match / (double)n_hyp : eps;
        double rec = n_ref > 0 ? (double)n_match / (double)n_ref : eps;
        if (n_hyp > 0 && n_ref > 0) {
            avg_prec += prec;
            avg_rec += rec;
            effective_order++;
        }
    }
    if (effective_order == 0) return 0.0;
    avg_prec /= effective_order;
    avg_rec /= effective_order;
    if (avg_prec + avg_rec == 0.0) return 0.0;
    double score = (1.0 + factor) * avg_prec * avg_rec;
    score /= factor * avg_prec + avg_rec;
    return 100.0 * score;
}

// sacreBLEU BLEU.compute_bleu with smooth_method "exp": an order with no match gets precision
// 100 / (2^k · total) for its k-th such order; an order with no hypothesis n-gram ends the product (its
// precision, and that of every higher order, stays 0, which makes the score 0).
double ot_score_bleu(const ot_score_stats *s) {
    double bp = 1.0;
    if (s->hyp_len < s->ref_len)
        bp = s->hyp_len > 0 ? exp(1.0 - (double)s->ref_len / (double)s->hyp_len) : 0.0;
    int any = 0;
    for (int n = 0; n < OT_BLEU_ORDER; n++) any |= s->bleu_match[n] != 0;
    if (!any) return 0.0;
    double precisions[OT_BLEU_ORDER] = {0};
    double smooth = 1.0;
    for (int n = 0; n < OT_BLEU_ORDER; n++) {
        if (s->bleu_total[n] == 0) break;
        if (s->bleu_match[n] == 0) {
            smooth *= 2;
            precisions[n] = 100.0 / (smooth * (double)s->bleu_total[n]);
        } else {
            precisions[n] = 100.0 * (double)s->bleu_match[n] / (double)s->bleu_total[n];
        }
    }
    double sum_log = 0.0;
    for (int n = 0; n < OT_BLEU_ORDER; n++) sum_log += precisions[n] > 0.0 ? log(precisions[n]) : -9999999999.0;
    return bp * exp(sum_log / OT_BLEU_ORDER);
}
