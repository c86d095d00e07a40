// Grouping of token positions by id, for the deterministic embedding backward on the GPU
// (ot_cuda_embedding_bwd_sorted): the batch's ids are on the host before they are uploaded, so sorting them here
// costs a few microseconds and spares the device an atomic scatter whose order of additions changes every run.
#include <stdlib.h>

#include "common/ot_common.h"
#include "kernels/ops.h"

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int ot_embedding_sort_ids(const int32_t *ids, int T, int32_t *order, int32_t *seg) {
    if (T <= 0) {
        if (seg) seg[0] = 0;
        return 0;
    }
    // Key (id, position): one 64-bit sort gives the stable order. A negative id sorts last (as uint32); the kernel
    // flags it, as the atomic version does.
    uint64_t *key = ot_malloc(sizeof(uint64_t) * (size_t)T);
    for (int t = 0; t < T; t++) key[t] = ((uint64_t)(uint32_t)ids[t] << 32) | (uint32_t)t;
    qsort(key, (size_t)T, sizeof(uint64_t), cmp_u64);
    int n = 0;
    for (int r = 0; r < T; r++) {
        order[r] = (int32_t)(key[r] & 0xffffffffu);
        if (r == 0 || (key[r] >> 32) != (key[r - 1] >> 32)) seg[n++] = r;
    }
    seg[n] = T;
    free(key);
    return n;
}
