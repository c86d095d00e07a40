// The FSDP shard plan (see shard_layout.h): tensor order, offsets, pieces.
#include "trainer/model/shard_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t ot_shard_dtype_size(ot_shard_dtype dt) { return dt == OT_SHARD_F32 ? 4 : dt == OT_SHARD_BF16 ? 2 : 1; }

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static size_t gcd(size_t a, size_t b) {
    while (b) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

// The HF tensor name of each role: after "model.layers.N." for a layer's tensors.
static const char *const role_names[OT_SR_N] = {
    [OT_SR_LN1] = "input_layernorm.weight",
    [OT_SR_LN2] = "post_attention_layernorm.weight",
    [OT_SR_Q_W] = "self_attn.q_proj.weight",
    [OT_SR_Q_B] = "self_attn.q_proj.bias",
    [OT_SR_K_W] = "self_attn.k_proj.weight",
    [OT_SR_K_B] = "self_attn.k_proj.bias",
    [OT_SR_V_W] = "self_attn.v_proj.weight",
    [OT_SR_V_B] = "self_attn.v_proj.bias",
    [OT_SR_O_W] = "self_attn.o_proj.weight",
    [OT_SR_O_B] = "self_attn.o_proj.bias",
    [OT_SR_SINKS] = "self_attn.sinks",
    [OT_SR_ROUTER_W] = "mlp.router.weight",
    [OT_SR_ROUTER_B] = "mlp.router.bias",
    [OT_SR_GATE_UP_B] = "mlp.experts.gate_up_proj_bias",
    [OT_SR_DOWN_B] = "mlp.experts.down_proj_bias",
    [OT_SR_GATE_UP_BLOCKS] = "mlp.experts.gate_up_proj_blocks",
    [OT_SR_GATE_UP_SCALES] = "mlp.experts.gate_up_proj_scales",
    [OT_SR_DOWN_BLOCKS] = "mlp.experts.down_proj_blocks",
    [OT_SR_DOWN_SCALES] = "mlp.experts.down_proj_scales",
    [OT_SR_GATE_UP_DENSE] = "mlp.experts.gate_up_proj",
    [OT_SR_DOWN_DENSE] = "mlp.experts.down_proj",
    [OT_SR_EMBED] = "model.embed_tokens.weight",
    [OT_SR_LM_HEAD] = "lm_head.weight",
};

ot_shard_role ot_shard_role_of(const char *name, int *layer) {
    int used = 0;
    *layer = -1;
    if (sscanf(name, "model.layers.%d.%n", layer, &used) == 1 && used > 0) {
        for (int r = 0; r < OT_SR_EMBED; r++)
            if (!strcmp(name + used, role_names[r])) return (ot_shard_role)r;
        return OT_SR_N;
    }
    *layer = -1;
    for (int r = OT_SR_EMBED; r < OT_SR_N; r++)
        if (!strcmp(name, role_names[r])) return (ot_shard_role)r;
    return OT_SR_N;
}

typedef struct {
    ot_shard_unit *u;
    int cap;
} unit_builder;

// One tensor of a unit: role's tensor of layer `layer` (the embedding and the head have no layer).
static void add(unit_builder *b, ot_shard_role role, ot_shard_dtype dt, size_t numel, int layer) {
    ot_shard_unit *u = b->u;
    if (u->n_entries == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 32;
        u->entries = realloc(u->entries, sizeof(ot_shard_entry) * (size_t)b->cap);
        if (!u->entries) ot_die("out of memory (shard layout)");
    }
    ot_shard_entry *e = &u->entries[u->n_entries++];
    memset(e, 0, sizeof *e);
    if (role >= OT_SR_EMBED) snprintf(e->name, sizeof e->name, "%s", role_names[role]);
    else snprintf(e->name, sizeof e->name, "model.layers.%d.%s", layer, role_names[role]);
    e->role = role;
    e->dtype = dt;
    e->numel = numel;
    e->nbytes = numel * ot_shard_dtype_size(dt);
    e->offset = round_up(u->bytes, OT_SHARD_ALIGN);
    u->bytes = e->offset + e->nbytes;
}

// The tensors of decoder layer l, in two units: the attention block's (what runs first) and the MoE block's
// (the experts are the bulk of a layer: 89 % of it on the 20b shape). Splitting them lets a backend hold one
// attention buffer and one expert buffer instead of two whole-layer buffers: the attention of layer l+1 is gathered
// while the experts of layer l compute, and the reverse. Inside each unit the order is the order of first use.
static void attention_entries(unit_builder *b, const ot_model_config *c, int l, ot_shard_dtype dense) {
    const size_t H = c->hidden_size, NH = c->num_attention_heads;
    const size_t Q = NH * c->head_dim, KV = (size_t)c->num_key_value_heads * c->head_dim;
    add(b, OT_SR_LN1, dense, H, l);
    add(b, OT_SR_Q_W, dense, Q * H, l);
    if (c->attention_bias) add(b, OT_SR_Q_B, dense, Q, l);
    add(b, OT_SR_K_W, dense, KV * H, l);
    if (c->attention_bias) add(b, OT_SR_K_B, dense, KV, l);
    add(b, OT_SR_V_W, dense, KV * H, l);
    if (c->attention_bias) add(b, OT_SR_V_B, dense, KV, l);
    add(b, OT_SR_O_W, dense, H * Q, l);
    if (c->attention_bias) add(b, OT_SR_O_B, dense, H, l);
    add(b, OT_SR_SINKS, OT_SHARD_F32, NH, l); // fp32 in both backends
}

static void expert_entries(unit_builder *b, const ot_model_config *c, int l, int mxfp4, ot_shard_dtype dense) {
    const size_t H = c->hidden_size, E = c->num_local_experts, I = c->intermediate_size;
    add(b, OT_SR_LN2, dense, H, l);
    add(b, OT_SR_ROUTER_W, dense, E * H, l);
    add(b, OT_SR_ROUTER_B, dense, E, l);
    add(b, OT_SR_GATE_UP_B, dense, E * 2 * I, l);
    add(b, OT_SR_DOWN_B, dense, E * H, l);
    if (mxfp4) {
        add(b, OT_SR_GATE_UP_BLOCKS, OT_SHARD_U8, E * 2 * I * (H / 32) * 16, l);
        add(b, OT_SR_GATE_UP_SCALES, OT_SHARD_U8, E * 2 * I * (H / 32), l);
        add(b, OT_SR_DOWN_BLOCKS, OT_SHARD_U8, E * H * (I / 32) * 16, l);
        add(b, OT_SR_DOWN_SCALES, OT_SHARD_U8, E * H * (I / 32), l);
    } else {
        // file [E, H, 2I] / [E, I, H] (in, out) → unit [E, 2I, H] / [E, H, I] (out, in), what the kernels want
        add(b, OT_SR_GATE_UP_DENSE, dense, E * 2 * I * H, l);
        ot_shard_entry *e = &b->u->entries[b->u->n_entries - 1];
        e->tr_n = E, e->tr_a = H, e->tr_b = 2 * I;
        add(b, OT_SR_DOWN_DENSE, dense, E * H * I, l);
        e = &b->u->entries[b->u->n_entries - 1];
        e->tr_n = E, e->tr_a = I, e->tr_b = H;
    }
}

int ot_shard_layout_build(ot_shard_layout *lay, const ot_model_config *c, int experts_mxfp4, ot_shard_dtype dense,
                          int world, size_t vocab_chunk_bytes, ot_err *err) {
    memset(lay, 0, sizeof *lay);
    if (world < 1) return ot_fail(err, "shard layout: world size %d (must be >= 1)", world);
    if (dense != OT_SHARD_F32 && dense != OT_SHARD_BF16) return ot_fail(err, "shard layout: dense dtype must be F32 or BF16");
    if (experts_mxfp4 && (c->hidden_size % 32 || c->intermediate_size % 32))
        return ot_fail(err, "shard layout: MXFP4 experts need hidden_size (%d) and intermediate_size (%d) divisible by 32",
                       c->hidden_size, c->intermediate_size);
    const int L = c->num_hidden_layers;
    lay->world = world;
    lay->dense = dense;
    lay->experts_mxfp4 = experts_mxfp4;
    lay->n_layers = L;
    lay->n_units = 2 * L + (c->tie_word_embeddings ? 1 : 2);
    lay->embed_unit = 2 * L;
    lay->head_unit = c->tie_word_embeddings ? 2 * L : 2 * L + 1;
    lay->units = ot_calloc((size_t)lay->n_units, sizeof(ot_shard_unit));
    const size_t W = (size_t)world;
    for (int v = 0; v < 2 * L; v++) {
        unit_builder b = {&lay->units[v], 0};
        b.u->layer = v / 2;
        b.u->kind = OT_SR_N;
        b.u->part = v % 2 ? OT_SHARD_EXPERTS : OT_SHARD_ATTENTION;
        if (b.u->part == OT_SHARD_ATTENTION) attention_entries(&b, c, v / 2, dense);
        else expert_entries(&b, c, v / 2, experts_mxfp4, dense);
        b.u->bytes = round_up(b.u->bytes, OT_SHARD_ALIGN);
        // one chunk; the tail of the last rank(s) is padding
        b.u->piece = round_up((b.u->bytes + W - 1) / W, OT_SHARD_ALIGN);
        b.u->n_chunks = 1;
        size_t *max = b.u->part == OT_SHARD_ATTENTION ? &lay->max_attention_bytes : &lay->max_expert_bytes;
        if (b.u->piece * W > *max) *max = b.u->piece * W;
    }
    lay->max_layer_bytes = lay->max_attention_bytes + lay->max_expert_bytes;
    // Where the vocabulary chunks go: through the two whole-layer buffers (one chunk at a time), or rotating
    // through the halves of one layer buffer (two chunks, so the next is gathered while one is used).
    const int rotate = vocab_chunk_bytes == OT_SHARD_VOCAB_ROTATE;
    if (rotate) vocab_chunk_bytes = lay->max_layer_bytes / 2;
    else if (!vocab_chunk_bytes) vocab_chunk_bytes = 2 * lay->max_layer_bytes;
    if (vocab_chunk_bytes < 1) vocab_chunk_bytes = 1;
    lay->gather_bytes = rotate ? lay->max_layer_bytes : 2 * lay->max_layer_bytes;
    const size_t V = c->vocab_size, H = c->hidden_size;
    for (int v = 2 * L; v < lay->n_units; v++) {
        ot_shard_unit *u = &lay->units[v];
        unit_builder b = {u, 0};
        u->layer = -1;
        u->part = OT_SHARD_VOCAB;
        u->kind = v == lay->embed_unit ? OT_SR_EMBED : OT_SR_LM_HEAD;
        if (u->kind == OT_SR_EMBED) add(&b, OT_SR_EMBED, dense, V * H, 0);
        else add(&b, OT_SR_LM_HEAD, dense, V * H, 0);
        u->row_bytes = H * ot_shard_dtype_size(dense);
        u->bytes = round_up(u->bytes, OT_SHARD_ALIGN);
        // A piece holds whole rows and is aligned: a multiple of lcm(row bytes, alignment). First the number of
        // chunks the budget asks for, then the smallest piece that covers the table in that many chunks, so the
        // padding stays below one quantum per rank and chunk (not a whole chunk).
        size_t quantum = u->row_bytes / gcd(u->row_bytes, OT_SHARD_ALIGN) * OT_SHARD_ALIGN;
        size_t n_chunks = (u->bytes + vocab_chunk_bytes - 1) / vocab_chunk_bytes;
        if (n_chunks < 1) n_chunks = 1;
        u->piece = round_up((u->bytes + n_chunks * W - 1) / (n_chunks * W), quantum);
        u->n_chunks = (int)((u->bytes + W * u->piece - 1) / (W * u->piece));
        if (W * u->piece > lay->max_vocab_chunk_bytes) lay->max_vocab_chunk_bytes = W * u->piece;
        size_t need = (rotate ? 2 : 1) * W * u->piece;
        if (need > lay->gather_bytes) lay->gather_bytes = need;
    }
    for (int v = 0; v < lay->n_units; v++) {
        lay->total_bytes += lay->units[v].bytes;
        lay->rank_bytes += (size_t)lay->units[v].n_chunks * lay->units[v].piece;
    }
    return 0;
}

void ot_shard_layout_free(ot_shard_layout *lay) {
    for (int v = 0; v < lay->n_units; v++) free(lay->units[v].entries);
    free(lay->units);
    memset(lay, 0, sizeof *lay);
}

void ot_shard_piece_range(const ot_shard_unit *u, int world, int rank, int chunk, size_t *begin, size_t *end) {
    size_t b = ((size_t)chunk * (size_t)world + (size_t)rank) * u->piece, e = b + u->piece;
    if (b > u->bytes) b = u->bytes;
    if (e > u->bytes) e = u->bytes;
    *begin = b;
    *end = e;
}

const ot_shard_entry *ot_shard_find(const ot_shard_unit *u, ot_shard_role role) {
    for (int i = 0; i < u->n_entries; i++)
        if (u->entries[i].role == role) return &u->entries[i];
    return NULL;
}

void **ot_shard_field(void *weights, const ot_shard_fields *f, ot_shard_role role) {
    const size_t at = role < OT_SR_N ? f->field[role] : 0;
    return at ? (void **)((char *)weights + at - 1) : NULL;
}

void **ot_shard_model_field(const ot_shard_model *m, const char *name, ot_shard_role *role) {
    int l;
    *role = ot_shard_role_of(name, &l);
    if (*role == OT_SR_EMBED) return m->embed;
    if (*role == OT_SR_LM_HEAD) return m->lm_head;
    if (!strcmp(name, "model.norm.weight")) return m->norm_w;
    if (l < 0 || l >= m->n_layers) return NULL;
    return ot_shard_field((char *)m->layers + (size_t)l * m->layer_size, m->fields, *role);
}

void ot_shard_point(void *weights, const ot_shard_fields *f, const ot_shard_unit *u, uint8_t *base) {
    for (int i = 0; i < u->n_entries; i++) {
        void **field = ot_shard_field(weights, f, u->entries[i].role);
        if (field) *field = base + u->entries[i].offset;
    }
}
