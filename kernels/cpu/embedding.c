// Token embedding (spec §2.0): a row lookup, no scaling, no position embedding.
#include "common/ot_common.h"
#include "kernels/cpu/real.h"
#include "kernels/ops.h"

void OT_FN(ot_embedding_fwd)(real *out, const int32_t *ids, const real *table, int T, int H) {
    for (int t = 0; t < T; t++) {
        // The table has no stored row count here; a negative id is the one error we can still see.
        if (ids[t] < 0)
            ot_die("ot_embedding_fwd: token %d has negative id %d", t, (int)ids[t]);
        memcpy(out + (size_t)t * H, table + (size_t)ids[t] * H, (size_t)H * sizeof(real));
    }
}

// Rows are visited in token order, so a repeated id sums its gradients in a fixed order.
void OT_FN(ot_embedding_bwd)(real *dtable, const real *dout, const int32_t *ids, int T, int H) {
    if (!dtable)
        return;
    for (int t = 0; t < T; t++) {
        if (ids[t] < 0)
            ot_die("ot_embedding_bwd: token %d has negative id %d", t, (int)ids[t]);
        real *row = dtable + (size_t)ids[t] * H;
        const real *d = dout + (size_t)t * H;
        for (int i = 0; i < H; i++)
            row[i] = (real)((double)row[i] + (double)d[i]);
    }
}
