// Upload of a gpt-oss checkpoint into GPU memory (see model_cuda.h). Two passes over the same layout function:
// the first only measures the arena, the second assigns the pointers; then every tensor is converted in chunks
// through one pinned host buffer and copied to its place.
#ifdef OT_HAVE_CUDA

#include "trainer/model/model_cuda.h"
#include "trainer/model/model_cuda_shard.h"

#include <stdio.h>
#include <stdlib.h>

#define STAGE_BYTES ((size_t)64 << 20) // pinned staging buffer: large enough to keep the copy engine busy
#define ARENA_ALIGN 256                // every tensor starts 256-byte aligned (16 is what the kernels need)

const ot_shard_fields ot_cuda_layer_fields = OT_SHARD_FIELDS(ot_cuda_layer_weights, gate_up.bias, down.bias);

int ot_cuda_arena_alloc(void **arena, size_t bytes, const char *dir, const char *what, ot_err *err) {
    char label[OT_ERR_LEN / 2];
    snprintf(label, sizeof label, "%s: %s", dir, what);
    return ot_cuda_alloc(arena, bytes, label, NULL, err);
}

int ot_cuda_device_count(void) {
    int n = 0;
    // No driver or no device is a normal answer here ("use the CPU"), not an error.
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

// ---- layout ---------------------------------------------------------------------------------------------------
#define TAKE_BF16(n) ((ot_bf16 *)ot_carve_take(a, (size_t)(n) * sizeof(ot_bf16)))

// Assigns every device pointer of m (NULL while measuring). Returns the bytes taken by expert weights.
static size_t layout(ot_cuda_model *m, ot_carve *a, int experts_mxfp4) {
    const ot_model_config *c = &m->cfg;
    const size_t H = c->hidden_size, V = c->vocab_size, E = c->num_local_experts, I = c->intermediate_size;
    const size_t Q = (size_t)c->num_attention_heads * c->head_dim, KV = (size_t)c->num_key_value_heads * c->head_dim;
    m->embed = TAKE_BF16(V * H);
    m->lm_head = c->tie_word_embeddings ? m->embed : TAKE_BF16(V * H);
    m->norm_w = TAKE_BF16(H);
    m->inv_freq = ot_carve_take(a, sizeof(float) * (size_t)(c->head_dim / 2));
    size_t expert_bytes = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ot_cuda_layer_weights *w = &m->layers[l];
        w->sliding = c->layer_sliding[l];
        w->ln1_w = TAKE_BF16(H);
        w->ln2_w = TAKE_BF16(H);
        w->q_w = TAKE_BF16(Q * H);
        w->k_w = TAKE_BF16(KV * H);
        w->v_w = TAKE_BF16(KV * H);
        w->o_w = TAKE_BF16(H * Q);
        if (c->attention_bias) {
            w->q_b = TAKE_BF16(Q);
            w->k_b = TAKE_BF16(KV);
            w->v_b = TAKE_BF16(KV);
            w->o_b = TAKE_BF16(H);
        }
        w->sinks = ot_carve_take(a, sizeof(float) * (size_t)c->num_attention_heads);
        w->router_w = TAKE_BF16(E * H);
        w->router_b = TAKE_BF16(E);
        ot_cuda_expert_weight *proj[2] = {&w->gate_up, &w->down};
        const size_t rows[2] = {2 * I, H}, cols[2] = {H, I};
        for (int p = 0; p < 2; p++) {
            ot_cuda_expert_weight *x = proj[p];
            memset(x, 0, sizeof *x);
            x->kind = experts_mxfp4 ? OT_EXPERT_MXFP4 : OT_EXPERT_DENSE;
            x->n_experts = (int)E;
            x->rows = (int)rows[p];
            x->cols = (int)cols[p];
            size_t before = a->off;
            if (experts_mxfp4) {
                x->blocks = ot_carve_take(a, E * rows[p] * (cols[p] / 32) * 16);
                x->scales = ot_carve_take(a, E * rows[p] * (cols[p] / 32));
            } else {
                x->dense = TAKE_BF16(E * rows[p] * cols[p]);
            }
            expert_bytes += a->off - before;
            x->bias = TAKE_BF16(E * rows[p]);
        }
    }
    return expert_bytes;
}

// ---- uploads --------------------------------------------------------------------------------------------------
typedef struct {
    const ot_checkpoint *ck;
    void *stage; // pinned, STAGE_BYTES
} uploader;

static const ot_tensor *find(const uploader *u, const char *name, int64_t numel, ot_err *err) {
    const ot_tensor *t = ot_checkpoint_find(u->ck, name);
    if (!t) {
        ot_fail(err, "%s: tensor '%s' is missing", u->ck->dir, name);
        return NULL;
    }
    if (t->numel != numel) {
        ot_fail(err, "%s: tensor '%s' has %lld elements, expected %lld", t->file, name, (long long)t->numel,
                (long long)numel);
        return NULL;
    }
    return t;
}

static int check_float(const ot_tensor *t, const char *name, ot_err *err) {
    if (t->dtype == OT_DT_F32 || t->dtype == OT_DT_BF16 || t->dtype == OT_DT_F16) return 0;
    return ot_fail(err, "%s: tensor '%s' has dtype %s; expected BF16, F16 or F32", t->file, name,
                   ot_dtype_name(t->dtype));
}

// Element i of the source goes to element perm(i) of dst; perm is the identity unless `transpose_rows` > 0, which
// reads a [n_mat, A, B] source as n_mat matrices and writes each transposed ([n_mat, B, A]).
typedef struct {
    size_t n_mat, A, B; // A = 0: no transpose
} transpose_spec;

// name → dst (bf16 on the device), numel elements, converted (and optionally transposed per matrix) on the host.
static int upload_bf16(uploader *u, ot_bf16 *dst, const char *name, size_t numel, transpose_spec tr, ot_err *err) {
    const ot_tensor *t = find(u, name, (int64_t)numel, err);
    if (!t || check_float(t, name, err)) return -1;
    uint16_t *stage = u->stage;
    const size_t chunk = STAGE_BYTES / sizeof(uint16_t);
    if (!tr.A) {
        for (size_t i0 = 0; i0 < numel; i0 += chunk) {
            size_t n = numel - i0 < chunk ? numel - i0 : chunk;
            if (t->dtype == OT_DT_BF16) memcpy(stage, t->data + 2 * i0, 2 * n); // already bf16: bits as they are
            else
                for (size_t i = 0; i < n; i++) stage[i] = ot_f32_to_bf16(ot_tensor_elem_f32(t, i0 + i));
            OT_CUDA_CHECK(cudaMemcpy(dst + i0, stage, 2 * n, cudaMemcpyHostToDevice));
        }
        return 0;
    }
    // Transposed: one matrix at a time (a dense expert, [A, B] → [B, A]), in rows of the output.
    const size_t per = tr.A * tr.B;
    if (tr.n_mat * per != numel) return ot_fail(err, "internal: transpose shape of '%s' does not match", name);
    size_t rows_per_chunk = chunk / tr.A;
    if (rows_per_chunk == 0) return ot_fail(err, "internal: '%s' row too long to stage", name);
    for (size_t mtx = 0; mtx < tr.n_mat; mtx++)
        for (size_t b0 = 0; b0 < tr.B; b0 += rows_per_chunk) {
            size_t nb = tr.B - b0 < rows_per_chunk ? tr.B - b0 : rows_per_chunk;
            for (size_t b = 0; b < nb; b++)
                for (size_t a = 0; a < tr.A; a++)
                    stage[b * tr.A + a] = ot_f32_to_bf16(ot_tensor_elem_f32(t, mtx * per + a * tr.B + b0 + b));
            OT_CUDA_CHECK(cudaMemcpy(dst + mtx * per + b0 * tr.A, stage, 2 * nb * tr.A, cudaMemcpyHostToDevice));
        }
    return 0;
}

static int upload_f32(uploader *u, float *dst, const char *name, size_t numel, ot_err *err) {
    const ot_tensor *t = find(u, name, (int64_t)numel, err);
    if (!t || check_float(t, name, err)) return -1;
    float *stage = u->stage;
    const size_t chunk = STAGE_BYTES / sizeof(float);
    for (size_t i0 = 0; i0 < numel; i0 += chunk) {
        size_t n = numel - i0 < chunk ? numel - i0 : chunk;
        for (size_t i = 0; i < n; i++) stage[i] = ot_tensor_elem_f32(t, i0 + i);
        OT_CUDA_CHECK(cudaMemcpy(dst + i0, stage, sizeof(float) * n, cudaMemcpyHostToDevice));
    }
    return 0;
}

static int upload_u8(uploader *u, uint8_t *dst, const char *name, size_t nbytes, ot_err *err) {
    const ot_tensor *t = find(u, name, (int64_t)nbytes, err);
    if (!t) return -1;
    if (t->dtype != OT_DT_U8)
        return ot_fail(err, "%s: MXFP4 tensor '%s' has dtype %s; expected U8", t->file, name, ot_dtype_name(t->dtype));
    for (size_t i0 = 0; i0 < nbytes; i0 += STAGE_BYTES) {
        size_t n = nbytes - i0 < STAGE_BYTES ? nbytes - i0 : STAGE_BYTES;
        memcpy(u->stage, t->data + i0, n);
        OT_CUDA_CHECK(cudaMemcpy(dst + i0, u->stage, n, cudaMemcpyHostToDevice));
    }
    return 0;
}

static const transpose_spec NO_TRANSPOSE = {0, 0, 0};

static int upload_all(ot_cuda_model *m, uploader *u, int experts_mxfp4, ot_err *err) {
    const ot_model_config *c = &m->cfg;
    const size_t H = c->hidden_size, V = c->vocab_size, E = c->num_local_experts, I = c->intermediate_size;
    const size_t Q = (size_t)c->num_attention_heads * c->head_dim, KV = (size_t)c->num_key_value_heads * c->head_dim;
    char name[256];
#define UP(dst, n, ...)                                                                                               \
    do {                                                                                                              \
        snprintf(name, sizeof name, __VA_ARGS__);                                                                     \
        if (upload_bf16(u, dst, name, n, NO_TRANSPOSE, err)) return -1;                                              \
    } while (0)
    UP(m->embed, V * H, "model.embed_tokens.weight");
    if (!c->tie_word_embeddings) UP(m->lm_head, V * H, "lm_head.weight");
    UP(m->norm_w, H, "model.norm.weight");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ot_cuda_layer_weights *w = &m->layers[l];
        UP(w->ln1_w, H, "model.layers.%d.input_layernorm.weight", l);
        UP(w->ln2_w, H, "model.layers.%d.post_attention_layernorm.weight", l);
        UP(w->q_w, Q * H, "model.layers.%d.self_attn.q_proj.weight", l);
        UP(w->k_w, KV * H, "model.layers.%d.self_attn.k_proj.weight", l);
        UP(w->v_w, KV * H, "model.layers.%d.self_attn.v_proj.weight", l);
        UP(w->o_w, H * Q, "model.layers.%d.self_attn.o_proj.weight", l);
        if (c->attention_bias) {
            UP(w->q_b, Q, "model.layers.%d.self_attn.q_proj.bias", l);
            UP(w->k_b, KV, "model.layers.%d.self_attn.k_proj.bias", l);
            UP(w->v_b, KV, "model.layers.%d.self_attn.v_proj.bias", l);
            UP(w->o_b, H, "model.layers.%d.self_attn.o_proj.bias", l);
        }
        snprintf(name, sizeof name, "model.layers.%d.self_attn.sinks", l);
        if (upload_f32(u, w->sinks, name, (size_t)c->num_attention_heads, err)) return -1;
        UP(w->router_w, E * H, "model.layers.%d.mlp.router.weight", l);
        UP(w->router_b, E, "model.layers.%d.mlp.router.bias", l);
        UP((ot_bf16 *)w->gate_up.bias, E * 2 * I, "model.layers.%d.mlp.experts.gate_up_proj_bias", l);
        UP((ot_bf16 *)w->down.bias, E * H, "model.layers.%d.mlp.experts.down_proj_bias", l);
        const char *pname[2] = {"gate_up_proj", "down_proj"};
        ot_cuda_expert_weight *proj[2] = {&w->gate_up, &w->down};
        for (int p = 0; p < 2; p++) {
            ot_cuda_expert_weight *x = proj[p];
            const size_t rows = (size_t)x->rows, cols = (size_t)x->cols;
            if (experts_mxfp4) {
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s_blocks", l, pname[p]);
                if (upload_u8(u, (uint8_t *)x->blocks, name, E * rows * (cols / 32) * 16, err)) return -1;
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s_scales", l, pname[p]);
                if (upload_u8(u, (uint8_t *)x->scales, name, E * rows * (cols / 32), err)) return -1;
            } else {
                // transformers' dequantized layout is [E, in, out]; the kernels want [E, out, in]
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s", l, pname[p]);
                transpose_spec tr = {E, cols, rows};
                if (upload_bf16(u, (ot_bf16 *)x->dense, name, E * rows * cols, tr, err)) return -1;
            }
        }
    }
#undef UP
    float *inv_freq = ot_malloc(sizeof(float) * (size_t)(c->head_dim / 2));
    m->attn_factor = ot_rope_inv_freq(inv_freq, c->head_dim, &c->rope);
    OT_CUDA_CHECK(cudaMemcpy(m->inv_freq, inv_freq, sizeof(float) * (size_t)(c->head_dim / 2), cudaMemcpyHostToDevice));
    free(inv_freq);
    return 0;
}

// What the CUDA kernels can run, said before anything is uploaded.
int ot_cuda_model_check_supported(const ot_model_config *c, const char *dir, ot_err *err) {
    if (c->head_dim != 64)
        return ot_fail(err, "%s: head_dim is %d; the CUDA attention kernels are built for 64 (gpt-oss). Use the CPU "
                            "backend (--backend cpu) for this model", dir, c->head_dim);
    if (c->hidden_size % 32 || c->intermediate_size % 32)
        return ot_fail(err, "%s: hidden_size %d and intermediate_size %d must be multiples of 32 for the CUDA expert "
                            "kernels", dir, c->hidden_size, c->intermediate_size);
    if (c->hidden_size % 8)
        return ot_fail(err, "%s: hidden_size %d must be a multiple of 8", dir, c->hidden_size);
    return 0;
}

int ot_cuda_model_load(ot_cuda_model *m, const char *dir, int device, ot_err *err) {
    memset(m, 0, sizeof *m);
    ot_checkpoint ck;
    if (ot_checkpoint_open(&ck, dir, err)) return -1;
    m->cfg = ck.config;
    m->device = device;
    if (ot_cuda_model_check_supported(&m->cfg, dir, err)) {
        ot_checkpoint_close(&ck);
        return -1;
    }
    ot_cuda_init(device);
    m->layers = ot_calloc((size_t)m->cfg.num_hidden_layers, sizeof(ot_cuda_layer_weights));
    ot_carve measure = {NULL, 0, ARENA_ALIGN};
    layout(m, &measure, ck.experts_mxfp4);
    m->arena_bytes = measure.off;
    if (ot_cuda_arena_alloc((void **)&m->arena, m->arena_bytes, dir, "the model", err)) {
        free(m->layers);
        ot_checkpoint_close(&ck);
        memset(m, 0, sizeof *m);
        return -1;
    }
    ot_carve place = {m->arena, 0, ARENA_ALIGN};
    m->expert_bytes = layout(m, &place, ck.experts_mxfp4);
    uploader u = {&ck, NULL};
    OT_CUDA_CHECK(cudaMallocHost(&u.stage, STAGE_BYTES));
    int rc = upload_all(m, &u, ck.experts_mxfp4, err);
    OT_CUDA_CHECK(cudaFreeHost(u.stage));
    OT_CUDA_CHECK(cudaDeviceSynchronize()); // every copy has landed before any stream reads the weights
    ot_checkpoint_close(&ck);              // the device holds copies: the mappings are no longer needed
    if (rc) {
        ot_cuda_model_free(m);
        return -1;
    }
    return 0;
}

void ot_cuda_model_free(ot_cuda_model *m) {
    ot_cuda_shard_free(m->shard); // before the arena: it waits for gathers still landing there
    if (m->arena) OT_CUDA_CHECK(cudaFree(m->arena));
    free(m->layers);
    memset(m, 0, sizeof *m);
}

#endif // OT_HAVE_CUDA
