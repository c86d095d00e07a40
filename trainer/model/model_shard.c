// The CPU base model sharded over the ranks (see model_shard.h and docs/distributed.md).
#include "trainer/model/model_shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/model/shard_read.h"

#define XENT_BLOCK 64 // targets per head sweep: the logits of a block are XENT_BLOCK × vocab floats

struct ot_model_shard {
    ot_shard_layout lay;
    ot_comm *comm;
    uint8_t **own;          // [n_units] this rank's pieces of the unit, n_chunks · piece bytes
    uint8_t *gather;        // lay.gather_bytes: layer buffer 0 at 0, layer buffer 1 at max_layer_bytes; in each, the
                            // attention unit at 0 and the expert unit at max_attention_bytes
    int slot_unit[2];       // the layer each buffer holds or is receiving; -1: none
    ot_comm_req req[2][2];  // in-flight gathers of each buffer's two units (handle NULL when none)
    int last;               // the buffer handed out last (in use until the next call)
    ot_layer_weights view[2];
    size_t norm_bytes;      // the replicated final norm
    ot_model_shard_stats stats;
};

static void check(int rc, const ot_err *err) {
    // The collectives fail here only on argument mistakes, i.e. a bug in this file.
    if (rc) ot_die("sharded model: %s", err->msg);
}

// ---- views into a gathered layer --------------------------------------------------------------------------------
// Layer l's views into a layer buffer holding both of its units.
static void point_views(ot_layer_weights *w, const ot_shard_layout *lay, int l, uint8_t *base,
                        const ot_model_config *c) {
    memset(w, 0, sizeof *w);
    w->sliding = c->layer_sliding[l];
    const int E = c->num_local_experts, H = c->hidden_size, I = c->intermediate_size;
    w->gate_up = (ot_expert_weight){.n_experts = E, .rows = 2 * I, .cols = H};
    w->down = (ot_expert_weight){.n_experts = E, .rows = H, .cols = I};
    ot_shard_point(w, &ot_layer_fields, &lay->units[ot_shard_attention_unit(l)], base);
    ot_shard_point(w, &ot_layer_fields, &lay->units[ot_shard_expert_unit(l)], base + lay->max_attention_bytes);
    w->gate_up.kind = w->gate_up.blocks ? OT_EXPERT_MXFP4 : OT_EXPERT_DENSE;
    w->down.kind = w->down.blocks ? OT_EXPERT_MXFP4 : OT_EXPERT_DENSE;
}

// ---- load -------------------------------------------------------------------------------------------------------
int ot_model_load_sharded(ot_model *m, const char *dir, ot_comm *comm, size_t vocab_chunk_bytes, ot_err *err) {
    memset(m, 0, sizeof *m);
    ot_checkpoint ck;
    if (ot_checkpoint_open(&ck, dir, err)) return -1;
    m->cfg = ck.config;
    const ot_model_config *c = &m->cfg;
    ot_model_shard *s = ot_calloc(1, sizeof *s);
    m->shard = s;
    s->comm = comm;
    s->slot_unit[0] = s->slot_unit[1] = -1;
    s->last = 1;
    if (ot_shard_layout_build(&s->lay, c, ck.experts_mxfp4, OT_SHARD_F32, comm->size, vocab_chunk_bytes, err))
        goto fail;
    s->own = ot_calloc((size_t)s->lay.n_units, sizeof(uint8_t *));
    for (int v = 0; v < s->lay.n_units; v++) {
        const ot_shard_unit *u = &s->lay.units[v];
        s->own[v] = ot_malloc((size_t)u->n_chunks * u->piece);
        for (int k = 0; k < u->n_chunks; k++) {
            size_t b, e;
            ot_shard_piece_range(u, comm->size, comm->rank, k, &b, &e);
            uint8_t *dst = s->own[v] + (size_t)k * u->piece;
            memset(dst, 0, u->piece); // padding past the unit's end
            if (e > b && ot_shard_read(u, &ck, b, e, dst, &s->stats.file_bytes, err)) goto fail;
        }
    }
    s->gather = ot_malloc(s->lay.gather_bytes);
    // Replicated: the final norm (H floats) and the RoPE tables.
    m->owned_floats = (size_t)c->hidden_size;
    m->owned = ot_malloc(m->owned_floats * sizeof(float));
    m->norm_w = m->owned;
    s->norm_bytes = m->owned_floats * sizeof(float);
    const ot_tensor *t = ot_checkpoint_find(&ck, "model.norm.weight");
    if (!t) {
        ot_fail(err, "%s: tensor 'model.norm.weight' is missing", dir);
        goto fail;
    }
    if ((size_t)t->numel != m->owned_floats) {
        ot_fail(err, "%s: tensor 'model.norm.weight' has %lld elements, expected %zu", t->file, (long long)t->numel,
                m->owned_floats);
        goto fail;
    }
    if (ot_tensor_to_f32(t, m->norm_w, err)) goto fail;
    m->inv_freq = ot_malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    m->attn_factor = ot_rope_inv_freq(m->inv_freq, c->head_dim, &c->rope);
    ot_checkpoint_close(&ck); // the rank's bytes are copied; the mappings (never touched) are released
    return 0;
fail:
    ot_checkpoint_close(&ck);
    ot_model_free(m);
    return -1;
}

void ot_model_shard_free(ot_model_shard *s) {
    if (!s) return;
    ot_err err;
    for (int i = 0; i < 2; i++) // a prefetch still in flight must land before its buffer is freed
        for (int p = 0; p < 2; p++)
            if (s->req[i][p].handle) check(ot_comm_wait(s->comm, &s->req[i][p], &err), &err);
    for (int v = 0; v < s->lay.n_units; v++) free(s->own[v]);
    free(s->own);
    free(s->gather);
    ot_shard_layout_free(&s->lay);
    free(s);
}

// ---- the gather schedule ----------------------------------------------------------------------------------------
// Starts the gathers of layer l's attention and expert units into layer buffer `slot`.
static void start_gather(ot_model_shard *s, int slot, int l) {
    ot_err err;
    for (int p = 0; p < 2; p++) {
        const int unit = p ? ot_shard_expert_unit(l) : ot_shard_attention_unit(l);
        const ot_shard_unit *u = &s->lay.units[unit];
        uint8_t *dst = s->gather + (size_t)slot * s->lay.max_layer_bytes + (p ? s->lay.max_attention_bytes : 0);
        check(ot_comm_all_gather_start(s->comm, s->own[unit], dst, u->piece, OT_COMM_U8, &s->req[slot][p], &err),
              &err);
        s->stats.gathers++;
        s->stats.gathered_bytes += u->piece * (size_t)s->lay.world;
    }
    s->slot_unit[slot] = l;
}

static void finish_gather(ot_model_shard *s, int slot) {
    ot_err err;
    for (int p = 0; p < 2; p++)
        if (s->req[slot][p].handle) check(ot_comm_wait(s->comm, &s->req[slot][p], &err), &err);
}

// Both layer buffers are about to be overwritten by a vocabulary sweep: land what is in flight, forget both.
static void release_layers(ot_model_shard *s) {
    for (int i = 0; i < 2; i++) {
        finish_gather(s, i);
        s->slot_unit[i] = -1;
    }
}

const ot_layer_weights *ot_model_layer(const ot_model *m, int l, int next) {
    ot_model_shard *s = m->shard;
    if (!s) return &m->layers[l];
    int slot = s->slot_unit[0] == l ? 0 : s->slot_unit[1] == l ? 1 : -1;
    if (slot < 0) {
        // Not prefetched: gather now into the buffer not handed out last (the caller is done with the one before).
        slot = 1 - s->last;
        finish_gather(s, slot);
        start_gather(s, slot, l);
    }
    finish_gather(s, slot);
    s->last = slot;
    // Prefetch: the next layer's gather runs while this one computes (into the other buffer, whose layer the
    // caller no longer needs).
    if (next >= 0 && s->slot_unit[0] != next && s->slot_unit[1] != next) {
        finish_gather(s, 1 - slot);
        start_gather(s, 1 - slot, next);
    }
    point_views(&s->view[slot], &s->lay, l, s->gather + (size_t)slot * s->lay.max_layer_bytes, &m->cfg);
    return &s->view[slot];
}

// Chunk k of vocabulary unit v into the gather buffer (blocking); returns its first row, *nv its row count.
static const float *gather_vocab_chunk(ot_model_shard *s, int v, int k, int V, int *v0, int *nv) {
    ot_err err;
    const ot_shard_unit *u = &s->lay.units[v];
    check(ot_comm_all_gather(s->comm, s->own[v] + (size_t)k * u->piece, s->gather, u->piece, OT_COMM_U8, &err), &err);
    s->stats.gathers++;
    s->stats.gathered_bytes += u->piece * (size_t)s->lay.world;
    int rows = (int)(u->piece * (size_t)s->lay.world / u->row_bytes);
    *v0 = k * rows;
    *nv = *v0 + rows <= V ? rows : V - *v0;
    if (*nv < 0) *nv = 0;
    return (const float *)s->gather;
}

void ot_model_embed(const ot_model *m, const int32_t *ids, int T, float *out) {
    const int H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    ot_model_shard *s = m->shard;
    if (!s) {
        ot_embedding_fwd(out, ids, m->embed, T, H);
        return;
    }
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= V) ot_die("embedding: token %d has id %d outside the vocabulary 0..%d", t, ids[t], V - 1);
    release_layers(s);
    const ot_shard_unit *u = &s->lay.units[s->lay.embed_unit];
    for (int k = 0; k < u->n_chunks; k++) {
        int v0, nv;
        const float *rows = gather_vocab_chunk(s, s->lay.embed_unit, k, V, &v0, &nv);
        for (int t = 0; t < T; t++)
            if (ids[t] >= v0 && ids[t] < v0 + nv)
                memcpy(out + (size_t)t * H, rows + (size_t)(ids[t] - v0) * H, sizeof(float) * (size_t)H);
    }
}

double ot_model_lmhead_xent(const ot_model *m, float *dh, const float *h, const int32_t *pos, const int32_t *label,
                            int n, float grad_scale) {
    const int H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    ot_model_shard *s = m->shard;
    if (!s) return ot_lmhead_xent(dh, NULL, h, m->lm_head, pos, label, n, H, V, grad_scale);
    ot_err err;
    // Ranks hold different numbers of targets: they agree on the number of blocks, a rank out of targets sweeps
    // with an empty block.
    int64_t my_blocks = (n + XENT_BLOCK - 1) / XENT_BLOCK, blocks = 0;
    check(ot_comm_all_reduce(s->comm, &my_blocks, &blocks, 1, OT_COMM_I64, OT_COMM_MAX, &err), &err);
    release_layers(s);
    const int hu = s->lay.head_unit;
    const ot_shard_unit *u = &s->lay.units[hu];
    float *logits = ot_malloc(sizeof(float) * (size_t)XENT_BLOCK * V);
    double *acc = ot_malloc(sizeof(double) * (size_t)XENT_BLOCK * H);
    double total = 0;
    for (int64_t blk = 0; blk < blocks; blk++) {
        int i0 = (int)blk * XENT_BLOCK, nb = n - i0 < XENT_BLOCK ? n - i0 : XENT_BLOCK;
        if (nb < 0) nb = 0;
        for (int b = 0; b < nb; b++)
            if (pos[i0 + b] < 0) ot_die("lm head: target %d has negative position %d", i0 + b, pos[i0 + b]);
        for (int k = 0; k < u->n_chunks; k++) {
            int v0, nv;
            const float *W = gather_vocab_chunk(s, hu, k, V, &v0, &nv);
            ot_lmhead_logits_part(logits + v0, V, h, W, nb ? pos + i0 : NULL, nb, H, nv);
        }
        total = ot_xent_rows(logits, nb ? label + i0 : NULL, nb, V, grad_scale, dh != NULL, total);
        if (!dh) continue;
        memset(acc, 0, sizeof(double) * (size_t)nb * H);
        for (int k = 0; k < u->n_chunks; k++) {
            int v0, nv;
            const float *W = gather_vocab_chunk(s, hu, k, V, &v0, &nv);
            ot_lmhead_dh_part(acc, logits + v0, V, W, nb, H, nv);
        }
        for (int b = 0; b < nb; b++) { // dh[pos_b] += acc_b, rounded once, as ot_lmhead_xent does
            float *d = dh + (size_t)pos[i0 + b] * H;
            for (int j = 0; j < H; j++) d[j] = (float)((double)d[j] + acc[(size_t)b * H + j]);
        }
    }
    free(acc);
    free(logits);
    return total;
}

// The calls of ot_cpu_forward_backward (trainer/graph/gptoss_cpu.c), in its order, with nothing to compute.
void ot_model_idle_pass(const ot_model *m, int backward) {
    if (!m->shard) return; // unsharded calls are not collective
    const int L = m->cfg.num_hidden_layers;
    ot_model_embed(m, NULL, 0, NULL);
    for (int l = 0; l < L; l++) (void)ot_model_layer(m, l, l + 1 < L ? l + 1 : -1);
    ot_model_lmhead_xent(m, backward ? (float *)1 : NULL, NULL, NULL, NULL, 0, 0.0f); // dh only says "gradient"
    if (backward)
        for (int l = L - 1; l >= 0; l--) (void)ot_model_layer(m, l, l - 1);
}

size_t ot_model_base_bytes(const ot_model *m, size_t *one_rank, size_t *layer_buffer) {
    const ot_model_shard *s = m->shard;
    if (s) {
        if (one_rank) *one_rank = s->lay.total_bytes;
        if (layer_buffer) *layer_buffer = s->lay.max_layer_bytes;
        return s->lay.rank_bytes + s->lay.gather_bytes + s->norm_bytes;
    }
    // unsharded: the float32 arena + the expert bytes the MXFP4 views point at
    size_t bytes = m->owned_floats * sizeof(float);
    for (int l = 0; l < m->cfg.num_hidden_layers && m->layers; l++) {
        const ot_expert_weight *x[2] = {&m->layers[l].gate_up, &m->layers[l].down};
        for (int p = 0; p < 2; p++)
            if (x[p]->kind == OT_EXPERT_MXFP4)
                bytes += (size_t)x[p]->n_experts * x[p]->rows * (x[p]->cols / 32) * 17;
    }
    if (one_rank) *one_rank = bytes;
    if (layer_buffer) *layer_buffer = 0;
    return bytes;
}

ot_model_shard_stats ot_model_shard_get_stats(const ot_model *m) {
    ot_model_shard_stats z = {0, 0, 0};
    return m->shard ? m->shard->stats : z;
}
