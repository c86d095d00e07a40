// Attention of a few new queries over the keys and values cached from earlier positions: the decoding twin of
// ot_attention_fwd (spec §2.3, §2.5). The loop body is the same computation in the same order (scores in double,
// the row maximum taken over the visible scores and the sink, Z started from the sink's term, keys visited in
// increasing position), so a decoded token gets the bits the full-sequence forward gives it.
#include <math.h>
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/cpu/cpu_math.h"
#include "kernels/ops.h"

void OT_FN(ot_attention_cache_fwd)(real *out, const real *q, const real *k_cache, const real *v_cache,
                                   const real *sinks, int n, int pos0, int nh, int nkv, int D, int window) {
    if (nh <= 0 || nkv <= 0 || D <= 0 || nh % nkv)
        ot_die("ot_attention_cache_fwd: query heads %d must be a positive multiple of kv heads %d (head dim %d)", nh,
               nkv, D);
    if (n < 0 || pos0 < 0)
        ot_die("ot_attention_cache_fwd: %d queries at position %d: both must be >= 0", n, pos0);
    int group = nh / nkv;
    double scale = 1.0 / sqrt((double)D);
    int last = pos0 + n; // keys 0 .. last-1 exist in the cache
    double *score = ot_malloc((size_t)(last > 0 ? last : 1) * sizeof(double));
    double *acc = ot_malloc((size_t)D * sizeof(double));
    for (int i = 0; i < n; i++) {
        int p = pos0 + i;
        int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
        for (int h = 0; h < nh; h++) {
            int g = h / group;
            const real *qi = q + ((size_t)i * nh + h) * D;
            ot_attend_row(out + ((size_t)i * nh + h) * D, qi, k_cache, v_cache, nkv, g, D, lo, p, (double)sinks[h], scale,
                          score, acc);
        }
    }
    free(acc);
    free(score);
}
