// The FSDP shard plan: how the base model's tensors are laid out in flat byte buffers ("units") and which bytes of
// each unit a rank owns. Pure arithmetic on the model config; reading the bytes is trainer/model/shard_read.c.
//
// Units: two per decoder layer — its attention block (unit 2l: input norm, q/k/v/o, sinks) and its MoE block (unit
// 2l+1: post-attention norm, router, expert biases, the expert weights with the MXFP4 bytes) — then the embedding
// table, then the output head (when tie_word_embeddings the head unit is the embedding unit). The final norm
// weight and the RoPE frequencies (a few KB) are replicated on every rank and belong to no unit.
//
// Inside a unit, tensors follow each other in a fixed order (shard_layout.c, `layer_entries`), each starting at a
// multiple of OT_SHARD_ALIGN bytes, so every view into a gathered buffer is aligned for the CPU and CUDA kernels.
// The unit's size is rounded up to OT_SHARD_ALIGN too.
//
// Ownership (block-cyclic): a unit is cut into n_chunks chunks of world · piece bytes; rank r owns bytes
// [k·world·piece + r·piece, k·world·piece + (r+1)·piece) of chunk k. Bytes past the unit's end are padding (zero).
// A layer unit is one chunk (gathered whole before its block runs). The embedding and head units are gathered one
// chunk at a time through the layer buffers, so no rank ever holds a whole vocabulary table; their pieces hold
// whole vocabulary rows so a chunk is a contiguous block of rows.
#ifndef OT_TRAINER_SHARD_LAYOUT_H
#define OT_TRAINER_SHARD_LAYOUT_H

#include <stddef.h>

#include "formats/model_config.h"

#define OT_SHARD_ALIGN 256 // bytes; the CUDA kernels need 16, the arena uses 256, vectors like 64

// Element types inside a unit.
typedef enum { OT_SHARD_F32 = 1, OT_SHARD_BF16 = 2, OT_SHARD_U8 = 3 } ot_shard_dtype;

// What a tensor is, so a backend can point its views at it without parsing names.
typedef enum {
    OT_SR_LN1, OT_SR_LN2, OT_SR_Q_W, OT_SR_Q_B, OT_SR_K_W, OT_SR_K_B, OT_SR_V_W, OT_SR_V_B, OT_SR_O_W, OT_SR_O_B,
    OT_SR_SINKS, OT_SR_ROUTER_W, OT_SR_ROUTER_B, OT_SR_GATE_UP_B, OT_SR_DOWN_B,
    OT_SR_GATE_UP_BLOCKS, OT_SR_GATE_UP_SCALES, OT_SR_DOWN_BLOCKS, OT_SR_DOWN_SCALES, // MXFP4 experts
    OT_SR_GATE_UP_DENSE, OT_SR_DOWN_DENSE,                                             // dequantized experts
    OT_SR_EMBED, OT_SR_LM_HEAD,
    OT_SR_N
} ot_shard_role;

// Where each role's pointer sits in a backend's layer-weights struct: field[role] = offsetof(struct, member) + 1,
// 0 where the struct has no such member. ot_shard_point sets those pointers to base + each entry's offset.
typedef struct {
    size_t field[OT_SR_N];
} ot_shard_fields;
// The table for a layer-weights struct T (the CPU's and the GPU's name their members alike; the expert biases
// are where GATE_UP_B and DOWN_B say).
#define OT_SHARD_AT(T, member) (offsetof(T, member) + 1)
#define OT_SHARD_FIELDS(T, GATE_UP_B, DOWN_B)                                                                   \
    {{[OT_SR_LN1] = OT_SHARD_AT(T, ln1_w), [OT_SR_LN2] = OT_SHARD_AT(T, ln2_w), [OT_SR_Q_W] = OT_SHARD_AT(T, q_w),   \
      [OT_SR_Q_B] = OT_SHARD_AT(T, q_b), [OT_SR_K_W] = OT_SHARD_AT(T, k_w), [OT_SR_K_B] = OT_SHARD_AT(T, k_b),      \
      [OT_SR_V_W] = OT_SHARD_AT(T, v_w), [OT_SR_V_B] = OT_SHARD_AT(T, v_b), [OT_SR_O_W] = OT_SHARD_AT(T, o_w),      \
      [OT_SR_O_B] = OT_SHARD_AT(T, o_b), [OT_SR_SINKS] = OT_SHARD_AT(T, sinks),                                  \
      [OT_SR_ROUTER_W] = OT_SHARD_AT(T, router_w), [OT_SR_ROUTER_B] = OT_SHARD_AT(T, router_b),                  \
      [OT_SR_GATE_UP_B] = OT_SHARD_AT(T, GATE_UP_B), [OT_SR_DOWN_B] = OT_SHARD_AT(T, DOWN_B),                    \
      [OT_SR_GATE_UP_BLOCKS] = OT_SHARD_AT(T, gate_up.blocks), [OT_SR_GATE_UP_SCALES] = OT_SHARD_AT(T, gate_up.scales), \
      [OT_SR_DOWN_BLOCKS] = OT_SHARD_AT(T, down.blocks), [OT_SR_DOWN_SCALES] = OT_SHARD_AT(T, down.scales),      \
      [OT_SR_GATE_UP_DENSE] = OT_SHARD_AT(T, gate_up.dense), [OT_SR_DOWN_DENSE] = OT_SHARD_AT(T, down.dense)}}

// Which part of the model a unit is.
typedef enum { OT_SHARD_ATTENTION = 0, OT_SHARD_EXPERTS = 1, OT_SHARD_VOCAB = 2 } ot_shard_part;

// The units of decoder layer l.
static inline int ot_shard_attention_unit(int l) { return 2 * l; }
static inline int ot_shard_expert_unit(int l) { return 2 * l + 1; }

// vocab_chunk_bytes of ot_shard_layout_build: chunks of at most half a layer buffer, two of them rotating in the
// space of one layer buffer (the CUDA backend: the next chunk is gathered while one is used).
#define OT_SHARD_VOCAB_ROTATE ((size_t)-1)

typedef struct {
    char name[160];      // the safetensors tensor it comes from
    ot_shard_role role;
    ot_shard_dtype dtype; // in the unit (the file's dtype may differ: BF16/F16/F32 are converted)
    size_t offset;       // bytes from the unit's start, a multiple of OT_SHARD_ALIGN
    size_t numel, nbytes;
    // Dequantized experts are stored [n, A, B] in the file ([E, in, out]) and [n, B, A] in the unit ([E, out, in]).
    size_t tr_n, tr_a, tr_b; // tr_n == 0: no transpose
} ot_shard_entry;

typedef struct {
    int layer;           // the decoder layer, or -1 (embedding / head)
    ot_shard_role kind;  // OT_SR_EMBED, OT_SR_LM_HEAD, or OT_SR_N for a decoder layer's unit
    ot_shard_part part;
    int n_entries;
    ot_shard_entry *entries;
    size_t bytes;        // real bytes (the last entry's end, rounded up to OT_SHARD_ALIGN)
    size_t piece;        // bytes a rank owns per chunk (a multiple of OT_SHARD_ALIGN)
    int n_chunks;        // chunks of world · piece bytes; n_chunks · world · piece >= bytes
    size_t row_bytes;    // embedding / head: bytes of one vocabulary row; 0 for layers
} ot_shard_unit;

// The role of an HF tensor name and its layer (-1 for the embedding and the head); OT_SR_N: no role (e.g.
// model.norm.weight, which every rank keeps whole).
ot_shard_role ot_shard_role_of(const char *name, int *layer);
// Where role's pointer sits in a layer-weights struct with table f, or NULL when it has no such member.
void **ot_shard_field(void *weights, const ot_shard_fields *f, ot_shard_role role);
// A backend's model struct as the role tables see it: its top-level pointers and its array of layer structs.
typedef struct {
    void **embed, **lm_head, **norm_w;
    void *layers;
    size_t layer_size;
    int n_layers;
    const ot_shard_fields *fields; // of one layer struct
} ot_shard_model;
// The pointer in m that holds HF tensor `name` (NULL: not a weight of this model); *role: what the tensor is.
void **ot_shard_model_field(const ot_shard_model *m, const char *name, ot_shard_role *role);
// Sets the pointers of unit u's entries in a layer-weights struct (table f) to base + their offsets.
void ot_shard_point(void *weights, const ot_shard_fields *f, const ot_shard_unit *u, uint8_t *base);


typedef struct {
    int world;
    ot_shard_dtype dense;  // dense weights: F32 (CPU backend) or BF16 (CUDA backend); sinks are always F32
    int experts_mxfp4;
    int n_layers;
    int n_units;           // 2 · n_layers + 1 (embedding) + 1 (head) unless tied: 2 · n_layers + 1
    int embed_unit, head_unit; // head_unit == embed_unit when tied
    ot_shard_unit *units;
    size_t max_attention_bytes, max_expert_bytes; // the largest unit of each part, padded to world · piece
    size_t max_layer_bytes; // max_attention_bytes + max_expert_bytes: one buffer for both units of a layer
    size_t max_vocab_chunk_bytes; // the largest vocabulary chunk (world · piece)
    // The gather memory a backend allocates. Default vocabulary chunks: two whole-layer buffers (CPU),
    // max(2 · max_layer_bytes, largest vocab chunk). OT_SHARD_VOCAB_ROTATE: one attention and one expert buffer
    // side by side (CUDA), max(max_layer_bytes, 2 · largest vocab chunk).
    size_t gather_bytes;
    size_t total_bytes;     // Σ unit bytes: what one rank holds unsharded (alignment included)
    size_t rank_bytes;      // Σ n_chunks · piece: what each rank holds sharded (padding included)
} ot_shard_layout;

// dense: OT_SHARD_F32 or OT_SHARD_BF16. vocab_chunk_bytes: at most this many bytes of a vocabulary table are
// gathered at a time (0: the size of two layer buffers, what the CPU backend uses; OT_SHARD_VOCAB_ROTATE: half a
// layer buffer, what the CUDA backend uses). -1 with a message on a config the layout cannot describe.
int ot_shard_layout_build(ot_shard_layout *lay, const ot_model_config *c, int experts_mxfp4, ot_shard_dtype dense,
                          int world, size_t vocab_chunk_bytes, ot_err *err);
void ot_shard_layout_free(ot_shard_layout *lay);

// Rank r's piece of chunk k of unit u: unit bytes [*begin, *end) clipped to the real bytes (empty when the piece is
// all padding). The piece itself always spans piece bytes starting at k·world·piece + r·piece.
void ot_shard_piece_range(const ot_shard_unit *u, int world, int rank, int chunk, size_t *begin, size_t *end);

// The entry of unit u with this role, or NULL.
const ot_shard_entry *ot_shard_find(const ot_shard_unit *u, ot_shard_role role);

size_t ot_shard_dtype_size(ot_shard_dtype dt);

#endif
