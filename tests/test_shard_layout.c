// The FSDP shard plan and shard reading (trainer/model/shard_layout.h, trainer/model/shard_read.h), without MPI: every rank's
// pieces are read in this one process and put back together.
//   - every tensor starts aligned, tensors do not overlap, the unit ends aligned;
//   - for world sizes that do and do not divide the unit sizes, the ranks' pieces cover every byte of every unit
//     exactly once, the tail is padding (zero), and the padding is less than one piece per rank;
//   - vocabulary pieces hold whole rows;
//   - the reassembled bytes equal the unsharded model (trainer/model/model.c: float32 values; MXFP4 bytes from the file;
//     dequantized experts transposed the same way), and the bf16 layout rounds as the CUDA upload does;
//   - each layer is two units, the attention block's tensors in one and the MoE block's in the other, every base
//     tensor of the model in exactly one unit;
//   - the memory target on the gpt-oss-20b shape (bf16 layout, the CUDA backend's buffers): per-GPU base weights on
//     2 GPUs at most 55 % of one GPU's (whole-layer buffers would give 57 %).
// usage: test_shard_layout MODEL_DIR [MODEL_DIR ...]
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "trainer/model/model.h"
#include "trainer/model/shard_layout.h"
#include "trainer/model/shard_read.h"

// The unsharded model's float32 array for a dense role of layer l (NULL for MXFP4 bytes).
static const float *reference(const ot_model *m, int l, ot_shard_role role) {
    const ot_layer_weights *w = l >= 0 ? &m->layers[l] : NULL;
    switch (role) {
    case OT_SR_LN1: return w->ln1_w;
    case OT_SR_LN2: return w->ln2_w;
    case OT_SR_Q_W: return w->q_w;
    case OT_SR_Q_B: return w->q_b;
    case OT_SR_K_W: return w->k_w;
    case OT_SR_K_B: return w->k_b;
    case OT_SR_V_W: return w->v_w;
    case OT_SR_V_B: return w->v_b;
    case OT_SR_O_W: return w->o_w;
    case OT_SR_O_B: return w->o_b;
    case OT_SR_SINKS: return w->sinks;
    case OT_SR_ROUTER_W: return w->router_w;
    case OT_SR_ROUTER_B: return w->router_b;
    case OT_SR_GATE_UP_B: return w->gate_up_b;
    case OT_SR_DOWN_B: return w->down_b;
    case OT_SR_GATE_UP_DENSE: return w->gate_up.dense;
    case OT_SR_DOWN_DENSE: return w->down.dense;
    case OT_SR_EMBED: return m->embed;
    case OT_SR_LM_HEAD: return m->lm_head;
    default: return NULL;
    }
}

static void check_unit(const ot_model *m, const ot_checkpoint *ck, const ot_shard_layout *lay, int v) {
    const ot_shard_unit *u = &lay->units[v];
    const int W = lay->world;
    // structure
    CHECK(u->bytes % OT_SHARD_ALIGN == 0, "unit %d: %zu bytes", v, u->bytes);
    CHECK(u->piece % OT_SHARD_ALIGN == 0 && u->piece > 0, "unit %d: piece %zu", v, u->piece);
    const size_t padded = (size_t)u->n_chunks * W * u->piece;
    CHECK(padded >= u->bytes && padded - u->bytes < (size_t)W * u->piece, "unit %d: %zu padded bytes for %zu", v,
          padded, u->bytes);
    if (u->row_bytes) CHECK(u->piece % u->row_bytes == 0, "unit %d: piece %zu is not whole rows of %zu", v, u->piece, u->row_bytes);
    else CHECK(u->n_chunks == 1, "layer unit %d in %d chunks", v, u->n_chunks);
    for (int i = 0; i < u->n_entries; i++) {
        const ot_shard_entry *e = &u->entries[i];
        CHECK(e->offset % OT_SHARD_ALIGN == 0, "%s at %zu", e->name, e->offset);
        CHECK(e->offset + e->nbytes <= u->bytes, "%s ends past the unit", e->name);
        if (i) CHECK(e->offset >= u->entries[i - 1].offset + u->entries[i - 1].nbytes, "%s overlaps", e->name);
    }
    // coverage: each byte of the padded unit is owned exactly once
    unsigned char *owner = calloc(padded, 1);
    uint8_t *full = calloc(padded, 1);
    for (int r = 0; r < W; r++)
        for (int k = 0; k < u->n_chunks; k++) {
            size_t b, e, start = ((size_t)k * W + r) * u->piece;
            ot_shard_piece_range(u, W, r, k, &b, &e);
            CHECK(e == b || b == start, "unit %d rank %d chunk %d: piece at %zu, range at %zu", v, r, k, start, b);
            for (size_t i = start; i < start + u->piece; i++) owner[i]++;
            ot_err err;
            uint8_t *piece = malloc(u->piece);
            memset(piece, 0xAB, u->piece);
            if (e > b) {
                int rc = ot_shard_read(u, ck, b, e, piece, NULL, &err);
                CHECK(rc == 0, "unit %d rank %d chunk %d: %s", v, r, k, rc ? err.msg : "");
            }
            memcpy(full + start, piece, e - b); // bytes past the unit stay zero (calloc), as the loader pads
            free(piece);
        }
    size_t bad = 0;
    for (size_t i = 0; i < padded; i++) bad += owner[i] != 1;
    CHECK(bad == 0, "unit %d (world %d): %zu bytes not owned exactly once", v, W, bad);
    // contents: gaps zero, tensors equal to the unsharded model
    size_t cursor = 0, gap_bad = 0;
    for (int i = 0; i < u->n_entries; i++) {
        const ot_shard_entry *e = &u->entries[i];
        for (size_t j = cursor; j < e->offset; j++) gap_bad += full[j] != 0;
        cursor = e->offset + e->nbytes;
        size_t mismatch = 0;
        if (e->dtype == OT_SHARD_U8) {
            const ot_tensor *t = ot_checkpoint_find(ck, e->name);
            mismatch = !t || memcmp(full + e->offset, t->data, e->nbytes) != 0;
        } else {
            const float *ref = reference(m, u->layer, e->role);
            CHECK(ref != NULL, "no reference for %s", e->name);
            if (!ref) continue;
            for (size_t j = 0; j < e->numel; j++) {
                if (e->dtype == OT_SHARD_F32 || e->role == OT_SR_SINKS) {
                    float f;
                    memcpy(&f, full + e->offset + 4 * j, 4);
                    mismatch += memcmp(&f, &ref[j], 4) != 0;
                } else {
                    uint16_t h;
                    memcpy(&h, full + e->offset + 2 * j, 2);
                    mismatch += h != ot_f32_to_bf16(ref[j]);
                }
            }
        }
        CHECK(mismatch == 0, "world %d: %s: %zu elements differ from the unsharded model", W, e->name, mismatch);
    }
    for (size_t j = cursor; j < padded; j++) gap_bad += full[j] != 0;
    CHECK(gap_bad == 0, "unit %d: %zu alignment / padding bytes are not zero", v, gap_bad);
    free(owner);
    free(full);
}

// The roles a layer's attention unit holds; everything else of a layer is in its expert unit.
static int attention_role(ot_shard_role r) {
    return r == OT_SR_LN1 || r == OT_SR_Q_W || r == OT_SR_Q_B || r == OT_SR_K_W || r == OT_SR_K_B || r == OT_SR_V_W ||
           r == OT_SR_V_B || r == OT_SR_O_W || r == OT_SR_O_B || r == OT_SR_SINKS;
}

// Units 2l and 2l+1 are layer l's attention and expert halves; the model's tensors are each in exactly one unit.
static void check_split(const ot_shard_layout *lay, const ot_checkpoint *ck) {
    int placed = 0;
    for (int v = 0; v < lay->n_units; v++) {
        const ot_shard_unit *u = &lay->units[v];
        if (v < 2 * lay->n_layers) {
            CHECK(u->layer == v / 2, "unit %d is of layer %d", v, u->layer);
            CHECK(u->part == (v % 2 ? OT_SHARD_EXPERTS : OT_SHARD_ATTENTION), "unit %d: part %d", v, (int)u->part);
            for (int i = 0; i < u->n_entries; i++)
                CHECK(attention_role(u->entries[i].role) == (u->part == OT_SHARD_ATTENTION), "unit %d (part %d) holds %s",
                      v, (int)u->part, u->entries[i].name);
        } else {
            CHECK(u->part == OT_SHARD_VOCAB && u->layer == -1, "unit %d: part %d layer %d", v, (int)u->part, u->layer);
        }
        for (int i = 0; i < u->n_entries; i++) {
            placed++;
            for (int w = 0; w <= v; w++)
                for (int j = 0; j < (w == v ? i : lay->units[w].n_entries); j++)
                    CHECK(strcmp(lay->units[w].entries[j].name, u->entries[i].name) != 0, "%s is in units %d and %d",
                          u->entries[i].name, w, v);
        }
    }
    // every tensor of the checkpoint except the replicated final norm is placed
    CHECK(placed == ck->n_tensors - 1, "%d tensors placed, the checkpoint has %d (one replicated)", placed,
          ck->n_tensors);
}

// Per-GPU base-weight bytes of the CUDA backend, sharded over `world` GPUs, as a fraction of one GPU's: its pieces
// + the gather buffers of the OT_SHARD_VOCAB_ROTATE layout, against every unit whole.
static double cuda_fraction(const ot_model_config *c, int world) {
    ot_err err;
    ot_shard_layout lay, one;
    if (ot_shard_layout_build(&lay, c, 1, OT_SHARD_BF16, world, OT_SHARD_VOCAB_ROTATE, &err) ||
        ot_shard_layout_build(&one, c, 1, OT_SHARD_BF16, 1, 0, &err)) {
        CHECK(0, "%s", err.msg);
        return 1.0;
    }
    double f = (double)(lay.rank_bytes + lay.gather_bytes) / (double)one.total_bytes;
    printf("20b shape, bf16, %d GPUs: %.3f GB of pieces + %.3f GB of gather buffers (attention %.1f MB, experts "
           "%.1f MB, vocabulary chunk %.1f MB) per GPU; %.3f GB on one GPU: %.1f %%\n", world, lay.rank_bytes / 1e9,
           lay.gather_bytes / 1e9, lay.max_attention_bytes / 1e6, lay.max_expert_bytes / 1e6,
           lay.max_vocab_chunk_bytes / 1e6, one.total_bytes / 1e9, 100 * f);
    CHECK(lay.gather_bytes >= lay.max_attention_bytes + lay.max_expert_bytes &&
              lay.gather_bytes >= 2 * lay.max_vocab_chunk_bytes, "rotating buffers do not fit %zu", lay.gather_bytes);
    ot_shard_layout_free(&lay);
    ot_shard_layout_free(&one);
    return f;
}

static void check_model(const char *dir) {
    ot_err err;
    ot_model m;
    if (ot_model_load(&m, dir, &err)) {
        CHECK(0, "%s", err.msg);
        return;
    }
    ot_checkpoint ck;
    if (ot_checkpoint_open(&ck, dir, &err)) {
        CHECK(0, "%s", err.msg);
        ot_model_free(&m);
        return;
    }
    const int worlds[] = {1, 2, 3, 4, 5, 7};
    const ot_shard_dtype dts[] = {OT_SHARD_F32, OT_SHARD_BF16};
    for (int d = 0; d < 2; d++)
        for (size_t wi = 0; wi < sizeof worlds / sizeof worlds[0]; wi++) {
            ot_shard_layout lay;
            // a small vocabulary chunk so the tables take several chunks
            if (ot_shard_layout_build(&lay, &m.cfg, ck.experts_mxfp4, dts[d], worlds[wi], 4096, &err)) {
                CHECK(0, "%s", err.msg);
                continue;
            }
            CHECK(lay.n_units == 2 * m.cfg.num_hidden_layers + (m.cfg.tie_word_embeddings ? 1 : 2), "%d units",
                  lay.n_units);
            for (int v = 0; v < lay.n_units; v++) check_unit(&m, &ck, &lay, v);
            check_split(&lay, &ck);
            // per-rank bytes: a 1/world share of everything plus, per unit, less than one alignment quantum per chunk
            // (layers: 256 bytes; vocabulary tables: lcm(row bytes, 256), pieces being whole rows)
            size_t slack = 0;
            for (int v = 0; v < lay.n_units; v++) {
                const ot_shard_unit *u = &lay.units[v];
                size_t q = OT_SHARD_ALIGN;
                if (u->row_bytes) {
                    size_t a = u->row_bytes, b = OT_SHARD_ALIGN;
                    while (b) { size_t t = a % b; a = b; b = t; }
                    q = u->row_bytes / a * OT_SHARD_ALIGN;
                }
                slack += (size_t)u->n_chunks * q;
            }
            CHECK(lay.rank_bytes * (size_t)lay.world >= lay.total_bytes, "rank bytes %zu x %d < total %zu", lay.rank_bytes,
                  lay.world, lay.total_bytes);
            CHECK(lay.rank_bytes <= lay.total_bytes / (size_t)lay.world + slack, "rank bytes %zu > %zu / %d + %zu",
                  lay.rank_bytes, lay.total_bytes, lay.world, slack);
            CHECK(lay.gather_bytes >= 2 * lay.max_layer_bytes, "gather buffer %zu", lay.gather_bytes);
            printf("%s %s world %d: %zu bytes in all, %zu per rank, layer buffer %zu, vocab pieces %zu B x %d chunks\n",
                   dir, dts[d] == OT_SHARD_F32 ? "f32" : "bf16", lay.world, lay.total_bytes, lay.rank_bytes,
                   lay.max_layer_bytes, lay.units[lay.embed_unit].piece, lay.units[lay.embed_unit].n_chunks);
            ot_shard_layout_free(&lay);
        }
    // a world size of 0 is refused with a message
    ot_shard_layout lay;
    CHECK(ot_shard_layout_build(&lay, &m.cfg, ck.experts_mxfp4, OT_SHARD_F32, 0, 0, &err) != 0, "world 0 accepted");
    ot_checkpoint_close(&ck);
    ot_model_free(&m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_shard_layout MODEL_DIR [MODEL_DIR ...]\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) check_model(argv[i]);
    ot_model_config c20;
    ot_err err;
    if (ot_model_config_preset(&c20, "20b", &err)) {
        CHECK(0, "%s", err.msg);
    } else {
        double f2 = cuda_fraction(&c20, 2);
        CHECK(f2 <= 0.55, "20b on 2 GPUs: %.1f %% of one GPU's base weights (want <= 55 %%)", 100 * f2);
        double f4 = cuda_fraction(&c20, 4);
        CHECK(f4 < f2, "4 GPUs (%.1f %%) not below 2 (%.1f %%)", 100 * f4, 100 * f2);
    }
    return ot_test_finish("test_shard_layout");
}
