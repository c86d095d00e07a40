// The CUDA base model sharded over the GPUs (see model_cuda_shard.h and docs/distributed.md).
#ifdef OT_HAVE_CUDA

#include "trainer/model/model_cuda_shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/model/shard_read.h"

#define STAGE_BYTES ((size_t)64 << 20) // pinned staging of the file reads, as in model_cuda.c
#define ARENA_ALIGN 256

// The gather region holds four buffers, two at a time: the layer buffers (attention, experts) while layers run,
// the two vocabulary chunk buffers while the embedding or the head is swept. A gather into one buffer destroys
// what the buffers overlapping it held.
enum { SLOT_ATTENTION, SLOT_EXPERTS, SLOT_VOCAB0, SLOT_VOCAB1, N_SLOTS };

typedef struct {
    size_t off, size;  // bytes of the gather region
    int unit, chunk;   // what it holds or is receiving; unit -1: nothing
    ot_comm_req req;   // the gather in flight into it (handle NULL once waited)
    cudaEvent_t ready; // NCCL: recorded on the communicator's stream after the gather
} gather_slot;

typedef struct {
    int unit, chunk;
} use_entry;

struct ot_cuda_shard {
    ot_shard_layout lay;
    ot_comm *comm;
    int on_device;            // NCCL: gathers and events on streams; MPI (host-visible memory): host waits
    cudaStream_t comm_stream; // NCCL: the communicator's stream
    uint8_t **own;            // [n_units] this rank's pieces in the arena (n_chunks · piece bytes each)
    uint8_t *gather;          // lay.gather_bytes in the arena
    gather_slot slot[N_SLOTS];
    cudaEvent_t released;     // recorded on the compute stream before a gather may overwrite a buffer
    use_entry *order;         // the current pass's unit order
    int n_order, cap_order, next; // entries, capacity, the next entry to be used
    size_t one_rank_bytes;
    ot_cuda_shard_stats stats;
};

static void check(int rc, const ot_err *err) {
    // The collectives fail here only on argument mistakes, i.e. a bug in this file.
    if (rc) ot_die("sharded GPU model: %s", err->msg);
}

static int slot_of(const ot_cuda_shard *s, int unit, int chunk) {
    const ot_shard_unit *u = &s->lay.units[unit];
    if (u->part == OT_SHARD_ATTENTION) return SLOT_ATTENTION;
    if (u->part == OT_SHARD_EXPERTS) return SLOT_EXPERTS;
    return SLOT_VOCAB0 + chunk % 2;
}

static int overlap(const gather_slot *a, const gather_slot *b) {
    return a->off < b->off + b->size && b->off < a->off + a->size;
}

// ---- load -------------------------------------------------------------------------------------------------------
// Piece bytes [begin, end) of unit u into dev, staged through host memory.
static int upload_piece(const ot_shard_unit *u, const ot_checkpoint *ck, size_t begin, size_t end, uint8_t *dev,
                        uint8_t *stage, size_t *file_bytes, ot_err *err) {
    for (size_t b = begin; b < end; b += STAGE_BYTES) {
        size_t e = end - b < STAGE_BYTES ? end : b + STAGE_BYTES;
        if (ot_shard_read(u, ck, b, e, stage, file_bytes, err)) return -1;
        OT_CUDA_CHECK(cudaMemcpy(dev + (b - begin), stage, e - b, cudaMemcpyHostToDevice));
    }
    return 0;
}

// The final norm, bf16 with the rounding of the unsharded upload (a BF16 file value keeps its bits).
static int upload_norm(ot_bf16 *dev, const ot_checkpoint *ck, int H, ot_err *err) {
    const ot_tensor *t = ot_checkpoint_find(ck, "model.norm.weight");
    if (!t) return ot_fail(err, "%s: tensor 'model.norm.weight' is missing", ck->dir);
    if (t->numel != H)
        return ot_fail(err, "%s: tensor 'model.norm.weight' has %lld elements, expected %d", t->file,
                       (long long)t->numel, H);
    float *f = ot_malloc(sizeof(float) * (size_t)H);
    ot_bf16 *h = ot_malloc(sizeof(ot_bf16) * (size_t)H);
    int rc = ot_tensor_to_f32(t, f, err);
    for (int i = 0; i < H && !rc; i++) h[i] = ot_f32_to_bf16(f[i]);
    if (!rc) OT_CUDA_CHECK(cudaMemcpy(dev, h, sizeof(ot_bf16) * (size_t)H, cudaMemcpyHostToDevice));
    free(f);
    free(h);
    return rc;
}

// Host-visible "device" memory (the emulated runtime; never cudaMalloc memory on a real GPU).
static int host_visible(const void *p) {
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return a.type == cudaMemoryTypeHost || a.type == cudaMemoryTypeManaged;
}

int ot_cuda_memory_host_visible(int device) {
    void *p = NULL;
    OT_CUDA_CHECK(cudaSetDevice(device));
    OT_CUDA_CHECK(cudaMalloc(&p, ARENA_ALIGN));
    int v = host_visible(p);
    OT_CUDA_CHECK(cudaFree(p));
    return v;
}

int ot_cuda_model_load_sharded(ot_cuda_model *m, const char *dir, int device, ot_comm *comm, ot_err *err) {
    memset(m, 0, sizeof *m);
    ot_checkpoint ck;
    if (ot_checkpoint_open(&ck, dir, err)) return -1;
    m->cfg = ck.config;
    m->device = device;
    const ot_model_config *c = &m->cfg;
    if (ot_cuda_model_check_supported(c, dir, err)) {
        ot_checkpoint_close(&ck);
        return -1;
    }
    if (comm->on_device && comm->device != device) {
        ot_checkpoint_close(&ck);
        return ot_fail(err, "internal: the NCCL communicator drives GPU %d, the model is for GPU %d", comm->device,
                       device);
    }
    ot_cuda_init(device);
    ot_cuda_shard *s = ot_calloc(1, sizeof *s);
    m->shard = s;
    s->comm = comm;
    s->on_device = comm->on_device;
    uint8_t *stage = NULL;
    if (ot_shard_layout_build(&s->lay, c, ck.experts_mxfp4, OT_SHARD_BF16, comm->size, OT_SHARD_VOCAB_ROTATE, err))
        goto fail;
    const ot_shard_layout *lay = &s->lay;
    // The arena: replicated norm and RoPE table, this rank's pieces of every unit, the gather region.
    const size_t H = (size_t)c->hidden_size, half = (size_t)(c->head_dim / 2);
    size_t off = 0, norm_off, freq_off, gather_off, *own_off = ot_calloc((size_t)lay->n_units, sizeof(size_t));
#define PLACE(bytes) (off = (off + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN, off += (bytes), off - (bytes))
    norm_off = PLACE(H * sizeof(ot_bf16));
    freq_off = PLACE(half * sizeof(float));
    for (int v = 0; v < lay->n_units; v++) own_off[v] = PLACE((size_t)lay->units[v].n_chunks * lay->units[v].piece);
    gather_off = PLACE(lay->gather_bytes);
#undef PLACE
    m->arena_bytes = off;
    if (ot_cuda_arena_alloc((void **)&m->arena, m->arena_bytes, dir, "this GPU's share of the model", err)) {
        free(own_off);
        goto fail;
    }
    if (!s->on_device && !host_visible(m->arena)) {
        ot_fail(err, "sharding the base weights on the GPU needs the NCCL communicator (an MPI communicator can only "
                     "gather host-visible memory)");
        free(own_off);
        goto fail;
    }
    uint8_t *arena = m->arena;
    m->norm_w = (ot_bf16 *)(arena + norm_off);
    m->inv_freq = (float *)(arena + freq_off);
    s->own = ot_calloc((size_t)lay->n_units, sizeof(uint8_t *));
    for (int v = 0; v < lay->n_units; v++) s->own[v] = arena + own_off[v];
    s->gather = arena + gather_off;
    free(own_off);
    // Padding past a unit's end and alignment gaps must be zero (the collectives move them like any other byte).
    OT_CUDA_CHECK(cudaMemset(arena, 0, m->arena_bytes));
    OT_CUDA_CHECK(cudaMallocHost((void **)&stage, STAGE_BYTES));
    for (int v = 0; v < lay->n_units; v++) {
        const ot_shard_unit *u = &lay->units[v];
        for (int k = 0; k < u->n_chunks; k++) {
            size_t b, en;
            ot_shard_piece_range(u, comm->size, comm->rank, k, &b, &en);
            if (en > b && upload_piece(u, &ck, b, en, s->own[v] + (size_t)k * u->piece, stage, &s->stats.file_bytes, err))
                goto fail;
        }
    }
    if (upload_norm(m->norm_w, &ck, c->hidden_size, err)) goto fail;
    float *inv_freq = ot_malloc(sizeof(float) * half);
    m->attn_factor = ot_rope_inv_freq(inv_freq, c->head_dim, &c->rope);
    OT_CUDA_CHECK(cudaMemcpy(m->inv_freq, inv_freq, sizeof(float) * half, cudaMemcpyHostToDevice));
    free(inv_freq);
    OT_CUDA_CHECK(cudaFreeHost(stage));
    stage = NULL;
    OT_CUDA_CHECK(cudaDeviceSynchronize()); // every piece has landed before a gather reads it
    // Layer views: shapes now, pointers when a unit is used.
    m->layers = ot_calloc((size_t)c->num_hidden_layers, sizeof(ot_cuda_layer_weights));
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ot_cuda_layer_weights *w = &m->layers[l];
        w->sliding = c->layer_sliding[l];
        const int kind = ck.experts_mxfp4 ? OT_EXPERT_MXFP4 : OT_EXPERT_DENSE, E = c->num_local_experts;
        w->gate_up = (ot_cuda_expert_weight){.kind = kind, .n_experts = E, .rows = 2 * c->intermediate_size,
                                             .cols = c->hidden_size};
        w->down = (ot_cuda_expert_weight){.kind = kind, .n_experts = E, .rows = c->hidden_size,
                                          .cols = c->intermediate_size};
    }
    // The buffers: layer units side by side, vocabulary chunks in two halves (the layout sized the region for both).
    s->slot[SLOT_ATTENTION] = (gather_slot){0, lay->max_attention_bytes, -1, 0, {0}, NULL};
    s->slot[SLOT_EXPERTS] = (gather_slot){lay->max_attention_bytes, lay->max_expert_bytes, -1, 0, {0}, NULL};
    s->slot[SLOT_VOCAB0] = (gather_slot){0, lay->max_vocab_chunk_bytes, -1, 0, {0}, NULL};
    s->slot[SLOT_VOCAB1] = (gather_slot){lay->max_vocab_chunk_bytes, lay->max_vocab_chunk_bytes, -1, 0, {0}, NULL};
    if (s->on_device) {
        s->comm_stream = (cudaStream_t)ot_comm_stream(comm);
        OT_CUDA_CHECK(cudaEventCreateWithFlags(&s->released, cudaEventDisableTiming));
        for (int i = 0; i < N_SLOTS; i++) OT_CUDA_CHECK(cudaEventCreateWithFlags(&s->slot[i].ready, cudaEventDisableTiming));
    }
    s->one_rank_bytes = lay->total_bytes + (size_t)(((H * sizeof(ot_bf16) + ARENA_ALIGN - 1) / ARENA_ALIGN) * ARENA_ALIGN) +
                        half * sizeof(float);
    ot_checkpoint_close(&ck); // the rank's bytes are on the device; the mappings (never touched) are released
    return 0;
fail:
    if (stage) OT_CUDA_CHECK(cudaFreeHost(stage));
    ot_checkpoint_close(&ck);
    ot_cuda_model_free(m);
    return -1;
}

static void wait_slot(ot_cuda_shard *s, int i) {
    ot_err err;
    if (s->slot[i].req.handle) check(ot_comm_wait(s->comm, &s->slot[i].req, &err), &err);
}

void ot_cuda_shard_free(ot_cuda_shard *s) {
    if (!s) return;
    for (int i = 0; i < N_SLOTS; i++) { // a gather still in flight must land before its buffer is freed
        wait_slot(s, i);
        if (s->slot[i].ready) OT_CUDA_CHECK(cudaEventDestroy(s->slot[i].ready));
    }
    if (s->released) OT_CUDA_CHECK(cudaEventDestroy(s->released));
    free(s->own);
    free(s->order);
    ot_shard_layout_free(&s->lay);
    free(s);
}

// ---- the gather schedule ----------------------------------------------------------------------------------------
static void push(ot_cuda_shard *s, int unit, int chunk) {
    if (s->n_order == s->cap_order) {
        s->cap_order = s->cap_order ? 2 * s->cap_order : 256;
        s->order = ot_realloc(s->order, sizeof(use_entry) * (size_t)s->cap_order);
    }
    s->order[s->n_order++] = (use_entry){unit, chunk};
}

static void push_vocab(ot_cuda_shard *s, int unit) {
    for (int k = 0; k < s->lay.units[unit].n_chunks; k++) push(s, unit, k);
}

// The order of trainer/graph/gptoss_cuda.c's forward_layers, head and backward_layers.
void ot_cuda_shard_begin_pass(const ot_cuda_model *m, int backward, int redo_attention, int redo_experts) {
    ot_cuda_shard *s = m->shard;
    if (!s) return;
    if (s->next != s->n_order) ot_die("sharded GPU model: a pass began with %d unit uses of the last one left",
                                      s->n_order - s->next);
    const int L = s->lay.n_layers;
    s->n_order = s->next = 0;
    push_vocab(s, s->lay.embed_unit);
    for (int l = 0; l < L; l++) {
        push(s, ot_shard_attention_unit(l), 0);
        push(s, ot_shard_expert_unit(l), 0);
    }
    push_vocab(s, s->lay.head_unit);
    if (!backward) return;
    push_vocab(s, s->lay.head_unit);
    for (int l = L - 1; l >= 0; l--) {
        if (l != L - 1) { // the last layer's activations are still there after the forward
            if (redo_attention) push(s, ot_shard_attention_unit(l), 0);
            if (redo_experts) push(s, ot_shard_expert_unit(l), 0);
        }
        push(s, ot_shard_expert_unit(l), 0);
        push(s, ot_shard_attention_unit(l), 0);
    }
}

// Starts the gather of (unit, chunk) into its buffer, after every kernel queued so far on `compute`.
static void issue(ot_cuda_shard *s, cudaStream_t compute, int unit, int chunk, int prefetch) {
    const int i = slot_of(s, unit, chunk);
    gather_slot *g = &s->slot[i];
    // The buffers overlapping this one lose their contents; their gathers must have landed (a request is waited
    // once, and the bytes of an earlier gather must not arrive after this one's).
    for (int j = 0; j < N_SLOTS; j++)
        if (overlap(g, &s->slot[j])) {
            wait_slot(s, j);
            s->slot[j].unit = -1;
        }
    const ot_shard_unit *u = &s->lay.units[unit];
    ot_err err;
    if (s->on_device) {
        OT_CUDA_CHECK(cudaEventRecord(s->released, compute));
        OT_CUDA_CHECK(cudaStreamWaitEvent(s->comm_stream, s->released, 0));
    } else {
        OT_CUDA_CHECK(cudaStreamSynchronize(compute)); // host-visible memory: the buffer's readers are done
    }
    check(ot_comm_all_gather_start(s->comm, s->own[unit] + (size_t)chunk * u->piece, s->gather + g->off, u->piece,
                                   OT_COMM_U8, &g->req, &err),
          &err);
    if (s->on_device) OT_CUDA_CHECK(cudaEventRecord(g->ready, s->comm_stream));
    g->unit = unit;
    g->chunk = chunk;
    s->stats.gathers++;
    s->stats.prefetched += prefetch != 0;
    s->stats.gathered_bytes += u->piece * (size_t)s->lay.world;
}

// Takes the next entry of the order, which must be (unit, chunk); returns the gathered bytes, ready for the kernels
// queued next on `compute`, and starts the gather of the following unit if its buffer is free.
static uint8_t *take(ot_cuda_shard *s, cudaStream_t compute, int unit, int chunk) {
    if (s->next >= s->n_order || s->order[s->next].unit != unit || s->order[s->next].chunk != chunk)
        ot_die("sharded GPU model: the pass used unit %d chunk %d where the order has %s %d chunk %d (a change to "
               "the layer graph that ot_cuda_shard_begin_pass does not know)", unit, chunk,
               s->next < s->n_order ? "unit" : "nothing: unit", s->next < s->n_order ? s->order[s->next].unit : -1,
               s->next < s->n_order ? s->order[s->next].chunk : -1);
    s->next++;
    const int i = slot_of(s, unit, chunk);
    gather_slot *g = &s->slot[i];
    if (g->unit != unit || g->chunk != chunk) issue(s, compute, unit, chunk, 0);
    if (s->on_device) OT_CUDA_CHECK(cudaStreamWaitEvent(compute, g->ready, 0));
    else wait_slot(s, i);
    // Prefetch: the next different unit, unless it is there already or its buffer is the one in use.
    int n = s->next;
    while (n < s->n_order && s->order[n].unit == unit && s->order[n].chunk == chunk) n++;
    if (n < s->n_order) {
        const use_entry *e = &s->order[n];
        const int j = slot_of(s, e->unit, e->chunk);
        if ((s->slot[j].unit != e->unit || s->slot[j].chunk != e->chunk) && !overlap(&s->slot[j], g))
            issue(s, compute, e->unit, e->chunk, 1);
    }
    return s->gather + g->off;
}

// Layer views of one unit into its gathered bytes.
void ot_cuda_shard_use(const ot_cuda_model *m, cudaStream_t stream, int l, ot_shard_part part) {
    ot_cuda_shard *s = m->shard;
    if (!s) return;
    const int unit = part == OT_SHARD_ATTENTION ? ot_shard_attention_unit(l) : ot_shard_expert_unit(l);
    ot_shard_point(&m->layers[l], &ot_cuda_layer_fields, &s->lay.units[unit], take(s, stream, unit, 0));
}

// Rows of chunk k of vocabulary unit v: [*v0, *v0 + *nv).
static void chunk_rows(const ot_cuda_shard *s, int v, int k, int V, int *v0, int *nv) {
    const ot_shard_unit *u = &s->lay.units[v];
    int rows = (int)(u->piece * (size_t)s->lay.world / u->row_bytes);
    *v0 = k * rows;
    *nv = *v0 + rows <= V ? rows : V - *v0;
    if (*nv < 0) *nv = 0;
}

void ot_cuda_shard_embed(const ot_cuda_model *m, cudaStream_t stream, ot_bf16 *out, const int32_t *ids, int T) {
    ot_cuda_shard *s = m->shard;
    const int H = m->cfg.hidden_size, V = m->cfg.vocab_size, v = s->lay.embed_unit;
    for (int k = 0; k < s->lay.units[v].n_chunks; k++) {
        int v0, nv;
        const ot_bf16 *rows = (const ot_bf16 *)take(s, stream, v, k);
        chunk_rows(s, v, k, V, &v0, &nv);
        ot_cuda_embedding_rows_fwd(stream, out, ids, rows, v0, nv, T, H, V);
    }
}

void ot_cuda_shard_lmhead_xent(const ot_cuda_model *m, cudaStream_t stream, ot_cuda_blas *blas, double *loss_sum,
                               ot_bf16 *dh, const ot_bf16 *h, const int32_t *pos, const int32_t *label, int n, int T,
                               float grad_scale) {
    ot_cuda_shard *s = m->shard;
    const int H = m->cfg.hidden_size, V = m->cfg.vocab_size, v = s->lay.head_unit;
    const int n_chunks = s->lay.units[v].n_chunks;
    // T = 0 (nothing on this rank) still takes part in the gathers.
    ot_cuda_xent *x = T > 0 ? ot_cuda_xent_begin(stream, blas, h, pos, label, n, T, H, V, grad_scale, dh != NULL) : NULL;
    for (int k = 0; k < n_chunks; k++) {
        int v0, nv;
        const ot_bf16 *rows = (const ot_bf16 *)take(s, stream, v, k);
        chunk_rows(s, v, k, V, &v0, &nv);
        if (x) ot_cuda_xent_loss_rows(x, rows, v0, nv);
    }
    if (x) ot_cuda_xent_loss_end(x, loss_sum);
    if (dh)
        for (int k = 0; k < n_chunks; k++) {
            int v0, nv;
            const ot_bf16 *rows = (const ot_bf16 *)take(s, stream, v, k);
            chunk_rows(s, v, k, V, &v0, &nv);
            if (x) ot_cuda_xent_grad_rows(x, rows, NULL, v0, nv);
        }
    if (x) ot_cuda_xent_end(x, dh);
}

void ot_cuda_shard_idle_pass(const ot_cuda_model *m, cudaStream_t stream) {
    ot_cuda_shard *s = m->shard;
    if (!s) return;
    while (s->next < s->n_order) (void)take(s, stream, s->order[s->next].unit, s->order[s->next].chunk);
}

void ot_cuda_shard_end_pass(const ot_cuda_model *m) {
    ot_cuda_shard *s = m->shard;
    if (!s) return;
    if (s->next != s->n_order)
        ot_die("sharded GPU model: the pass ended with %d of %d unit uses left (the layer graph and "
               "ot_cuda_shard_begin_pass disagree)", s->n_order - s->next, s->n_order);
    for (int i = 0; i < N_SLOTS; i++) wait_slot(s, i);
}

size_t ot_cuda_model_base_bytes(const ot_cuda_model *m, size_t *one_rank, size_t *layer_buffer) {
    const ot_cuda_shard *s = m->shard;
    if (one_rank) *one_rank = s ? s->one_rank_bytes : m->arena_bytes;
    if (layer_buffer) *layer_buffer = s ? s->lay.gather_bytes : 0;
    return m->arena_bytes;
}

ot_cuda_shard_stats ot_cuda_shard_get_stats(const ot_cuda_model *m) {
    ot_cuda_shard_stats z = {0, 0, 0, 0};
    return m->shard ? m->shard->stats : z;
}

#endif // OT_HAVE_CUDA
