// The gpt-oss GGUF files (see gguf_gptoss.h).
#include "formats/gguf_gptoss.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf_vocab.h"
#include "formats/harmony.h"

#define ARCH "gpt-oss"

// ---- source tensors -----------------------------------------------------------------------------------------------
static void src_to_f32(const ot_tensor *t, size_t start, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = ot_tensor_elem_f32(t, start + i);
}

static ot_ggml_type ggml_type_of(ot_dtype dt) {
    return dt == OT_DT_BF16 ? OT_GGML_BF16 : dt == OT_DT_F16 ? OT_GGML_F16 : OT_GGML_F32;
}

size_t ot_gguf_encode_row(uint8_t *dst, const float *x, int64_t n, ot_ggml_type t) {
    switch (t) {
    case OT_GGML_F32: memcpy(dst, x, (size_t)n * 4); break;
    case OT_GGML_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = ot_f32_to_f16(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        break;
    case OT_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = ot_f32_to_bf16(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        break;
    case OT_GGML_Q8_0: ot_gguf_quantize_q8_0(dst, x, n); break;
    case OT_GGML_MXFP4: ot_die("ot_gguf_encode_row: MXFP4 is only ever re-packed, never quantized"); // no caller does this
    }
    return ot_ggml_row_bytes(t, n);
}


// ---- the tensor plan ----------------------------------------------------------------------------------------------
// One GGUF tensor and where its bytes come from.
typedef enum {
    JOB_FLOAT,      // a float source tensor in its own layout (norms, biases, sinks, router, embeddings, attention)
    JOB_ZERO,       // zeros (attention biases of a config without them: llama.cpp's graph always adds one)
    JOB_BIAS_EVEN,  // gate_up_proj_bias [E, 2I]: even columns (gate)
    JOB_BIAS_ODD,   //                              odd columns (up)
    JOB_EXPERT,     // expert weights, re-packed or merged
    JOB_LORA_A,     // adapter factor A of a slot, as stored
    JOB_LORA_B,     // adapter factor B of a slot; for gate/up only the even/odd rows
} job_kind;

enum { PART_GATE = 0, PART_UP = 1, PART_DOWN = 2, PART_ALL = 3 };

typedef struct {
    char name[128];              // longer than GGUF allows, so the writer (not a silent truncation) rejects a bad one
    ot_ggml_type type;
    int n_dims;
    int64_t ne[3];
    job_kind kind;
    const ot_tensor *src;        // JOB_FLOAT, JOB_BIAS_*; JOB_EXPERT dense source
    const ot_tensor *blocks, *scales; // JOB_EXPERT MXFP4 source
    const ot_lora_slot *slot;    // LoRA to merge (JOB_FLOAT, JOB_EXPERT) or to write (JOB_LORA_*)
    int part;                    // PART_*: which rows of gate_up (JOB_EXPERT, JOB_LORA_B)
} job;

typedef struct {
    job *v;
    int n, cap;
} job_list;

static job *job_push(job_list *l, const char *name, ot_ggml_type type, int n_dims, const int64_t *ne, job_kind kind) {
    if (l->n == l->cap) l->v = ot_realloc(l->v, (size_t)(l->cap = l->cap ? 2 * l->cap : 64) * sizeof(job));
    job *j = &l->v[l->n++];
    memset(j, 0, sizeof *j);
    snprintf(j->name, sizeof j->name, "%s", name);
    j->type = type;
    j->n_dims = n_dims;
    for (int i = 0; i < n_dims; i++) j->ne[i] = ne[i];
    j->kind = kind;
    return j;
}

// What a plan reads: the checkpoint, the adapter to merge or to write (NULL: none), the merged experts' storage.
typedef struct {
    const ot_checkpoint *ck;
    const ot_model_config *c;
    const ot_lora *lo;
    ot_ggml_type expert_lora_type;
} export_ctx;

static const ot_tensor *need(const export_ctx *x, const char *fmt, int l, ot_err *err) {
    char name[160];
    snprintf(name, sizeof name, fmt, l);
    const ot_tensor *t = ot_checkpoint_find(x->ck, name);
    if (!t) ot_fail(err, "%s: tensor '%s' is missing", x->ck->dir, name);
    return t;
}

#define slot_of(x, l, target) ot_lora_slot_of((x)->lo, l, target)

// A float tensor copied in its own dtype (norms and biases become F32, as llama.cpp's converter writes them).
static int plan_float(job_list *jl, const export_ctx *x, const char *gguf_name, const char *src_fmt, int l, int force_f32,
                      const ot_lora_slot *merge, ot_err *err) {
    const ot_tensor *t = need(x, src_fmt, l, err);
    if (!t) return -1;
    int64_t ne[3];
    for (int i = 0; i < t->ndim; i++) ne[i] = t->shape[t->ndim - 1 - i];
    job *j = job_push(jl, gguf_name, force_f32 ? OT_GGML_F32 : ggml_type_of(t->dtype), t->ndim, ne, JOB_FLOAT);
    j->src = t;
    j->slot = merge;
    return 0;
}

// llama.cpp's names: the attention projections q, k, v, o, and the expert parts (gate, up, down), for the model
// and its adapter alike.
static const char *const attn_gguf[4] = {"attn_q", "attn_k", "attn_v", "attn_output"};
static const char *const part_name[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};

// The merged (or base) model in llama.cpp's gpt-oss layout (spec §5.3).
static int plan_model(job_list *jl, const export_ctx *x, ot_err *err) {
    const ot_model_config *c = x->c;
    const int64_t H = c->hidden_size, I = c->intermediate_size, E = c->num_local_experts;
    char name[96];
    if (plan_float(jl, x, "token_embd.weight", "model.embed_tokens.weight", 0, 0, NULL, err)) return -1;
    static const char *attn_hf[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char src[160];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if (plan_float(jl, x, name, "model.layers.%d.input_layernorm.weight", l, 1, NULL, err)) return -1;
        for (int t = 0; t < 4; t++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, attn_gguf[t]);
            snprintf(src, sizeof src, "model.layers.%%d.self_attn.%s.weight", attn_hf[t]);
            // A merged weight is stored in the source's own float type (bf16 for gpt-oss): W + scale·B·A in fp32,
            // rounded once.
            if (plan_float(jl, x, name, src, l, 0, slot_of(x, l, OT_LORA_Q + t), err)) return -1;
            snprintf(name, sizeof name, "blk.%d.%s.bias", l, attn_gguf[t]);
            snprintf(src, sizeof src, "model.layers.%%d.self_attn.%s.bias", attn_hf[t]);
            if (c->attention_bias) {
                if (plan_float(jl, x, name, src, l, 1, NULL, err)) return -1;
            } else {
                int64_t n = t == 3 ? H : (int64_t)(t == 0 ? c->num_attention_heads : c->num_key_value_heads) * c->head_dim;
                job_push(jl, name, OT_GGML_F32, 1, &n, JOB_ZERO);
            }
        }
        snprintf(name, sizeof name, "blk.%d.attn_sinks.weight", l);
        if (plan_float(jl, x, name, "model.layers.%d.self_attn.sinks", l, 1, NULL, err)) return -1;
        snprintf(name, sizeof name, "blk.%d.post_attention_norm.weight", l);
        if (plan_float(jl, x, name, "model.layers.%d.post_attention_layernorm.weight", l, 1, NULL, err)) return -1;
        // The router is always F32 in llama.cpp's converter.
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", l);
        if (plan_float(jl, x, name, "model.layers.%d.mlp.router.weight", l, 1, NULL, err)) return -1;
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.bias", l);
        if (plan_float(jl, x, name, "model.layers.%d.mlp.router.bias", l, 1, NULL, err)) return -1;

        // Experts: gate = even rows of gate_up, up = odd rows, down as it is; ne = [in, out, E].
        for (int part = PART_GATE; part <= PART_DOWN; part++) {
            const int gu = part != PART_DOWN;
            const ot_lora_slot *s = slot_of(x, l, gu ? OT_LORA_GATE_UP : OT_LORA_DOWN);
            const char *stem = gu ? "gate_up_proj" : "down_proj";
            const ot_tensor *blocks = NULL, *scales = NULL, *dense = NULL;
            ot_ggml_type type;
            if (x->ck->experts_mxfp4) {
                snprintf(src, sizeof src, "model.layers.%%d.mlp.experts.%s_blocks", stem);
                if (!(blocks = need(x, src, l, err))) return -1;
                snprintf(src, sizeof src, "model.layers.%%d.mlp.experts.%s_scales", stem);
                if (!(scales = need(x, src, l, err))) return -1;
                type = s ? x->expert_lora_type : OT_GGML_MXFP4;
            } else {
                snprintf(src, sizeof src, "model.layers.%%d.mlp.experts.%s", stem);
                if (!(dense = need(x, src, l, err))) return -1;
                type = s ? x->expert_lora_type : ggml_type_of(dense->dtype);
            }
            int64_t ne[3] = {gu ? H : I, gu ? I : H, E};
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, part_name[part]);
            job *j = job_push(jl, name, type, 3, ne, JOB_EXPERT);
            j->blocks = blocks;
            j->scales = scales;
            j->src = dense;
            j->slot = s;
            j->part = part;

            snprintf(name, sizeof name, "blk.%d.%s.bias", l, part_name[part]);
            snprintf(src, sizeof src, "model.layers.%%d.mlp.experts.%s_bias", stem);
            const ot_tensor *bias = need(x, src, l, err);
            if (!bias) return -1;
            int64_t bne[2] = {gu ? I : H, E};
            j = job_push(jl, name, OT_GGML_F32, 2, bne, part == PART_GATE ? JOB_BIAS_EVEN : part == PART_UP ? JOB_BIAS_ODD : JOB_FLOAT);
            j->src = bias;
        }
    }
    if (plan_float(jl, x, "output_norm.weight", "model.norm.weight", 0, 1, NULL, err)) return -1;
    if (plan_float(jl, x, "output.weight", "lm_head.weight", 0, 0, NULL, err)) return -1;
    return 0;
}

// One adapted tensor's pair: A (its slot's A, whole) and B (rows of `part` of its slot's B), both F32.
static void push_lora_pair(job_list *jl, int l, const char *tensor, int n_dims, const int64_t *a_ne,
                           const int64_t *b_ne, const ot_lora_slot *s, int part) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", l, tensor);
    job_push(jl, name, OT_GGML_F32, n_dims, a_ne, JOB_LORA_A)->slot = s;
    snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", l, tensor);
    job *j = job_push(jl, name, OT_GGML_F32, n_dims, b_ne, JOB_LORA_B);
    j->slot = s;
    j->part = part;
}

// The adapter (spec §6.2, §6.4): A ne [in, r(, E)], B ne [r, out(, E)], F32 so the values are the trained ones.
static void plan_adapter(job_list *jl, const export_ctx *x) {
    const ot_lora *lo = x->lo;
    const int64_t r = lo->r;
    for (int l = 0; l < lo->n_layers; l++) {
        for (int t = 0; t < OT_LORA_N_TARGETS; t++) {
            const ot_lora_slot *s = slot_of(x, l, t);
            if (!s) continue;
            if (t < OT_LORA_GATE_UP) {
                int64_t a[2] = {s->in, r}, b[2] = {r, s->out};
                push_lora_pair(jl, l, attn_gguf[t], 2, a, b, s, PART_ALL);
                continue;
            }
            // gate_up: gate and up share A (stored twice); B splits into even (gate) and odd (up) rows.
            int first = t == OT_LORA_GATE_UP ? PART_GATE : PART_DOWN, last = t == OT_LORA_GATE_UP ? PART_UP : PART_DOWN;
            for (int part = first; part <= last; part++) {
                int64_t out = part == PART_DOWN ? s->out : s->out / 2;
                int64_t a[3] = {s->in, r, s->n_exp}, b[3] = {r, out, s->n_exp};
                push_lora_pair(jl, l, part_name[part], 3, a, b, s, part);
            }
        }
    }
}

// ---- producing the bytes ------------------------------------------------------------------------------------------
typedef struct {
    ot_gguf_writer *w;
    const ot_gguf_gptoss *x;
    const char *label;
    uint64_t done, total;
    float *row, *delta;   // scratch: one source row, one LoRA delta row
    uint8_t *enc;         // scratch: one encoded row
} sink;

static int emit(sink *k, const void *data, size_t n, ot_err *err) {
    if (ot_gguf_write(k->w, data, n, err)) return -1;
    k->done += n;
    if (k->x->progress && k->x->progress(k->x->progress_ctx, k->label, k->done, k->total, err)) return -1;
    return 0;
}

// scale · B[o, :] · A: row o of expert e's weight change, what a merged checkpoint adds to the base weights (the
// merge is a conversion between the two files; training applies the adapter with the kernels' ot_lora_fwd).
static void lora_delta_row(const ot_lora *lo, const ot_lora_slot *s, int e, int o, float *d) {
    const float *A = ot_lora_A(lo, s, e), *B = ot_lora_B(lo, s, e) + (size_t)o * lo->r;
    for (int i = 0; i < s->in; i++) d[i] = 0;
    for (int k = 0; k < lo->r; k++) {
        const float b = B[k];
        const float *a = A + (size_t)k * s->in;
        for (int i = 0; i < s->in; i++) d[i] += b * a[i];
    }
    for (int i = 0; i < s->in; i++) d[i] *= lo->scale;
}

static int produce_float(sink *k, const export_ctx *x, const job *j, ot_err *err) {
    const ot_tensor *t = j->src;
    const int64_t cols = t->ndim > 1 ? t->shape[t->ndim - 1] : t->numel, rows = t->numel / cols;
    // Same type and nothing to merge: the bytes go straight from the mapping.
    if (!j->slot && ggml_type_of(t->dtype) == j->type) {
        const size_t chunk = 1 << 24;
        for (size_t off = 0; off < t->nbytes; off += chunk)
            if (emit(k, t->data + off, t->nbytes - off < chunk ? t->nbytes - off : chunk, err)) return -1;
        return 0;
    }
    for (int64_t r = 0; r < rows; r++) {
        src_to_f32(t, (size_t)(r * cols), (size_t)cols, k->row);
        if (j->slot) {
            lora_delta_row(x->lo, j->slot, 0, (int)r, k->delta);
            for (int64_t i = 0; i < cols; i++) k->row[i] += k->delta[i];
        }
        if (emit(k, k->enc, ot_gguf_encode_row(k->enc, k->row, cols, j->type), err)) return -1;
    }
    return 0;
}

static int produce_bias_split(sink *k, const job *j, ot_err *err) {
    const ot_tensor *t = j->src; // [E, 2I]
    const int64_t E = t->shape[0], two_i = t->shape[1], odd = j->kind == JOB_BIAS_ODD;
    for (int64_t e = 0; e < E; e++) {
        for (int64_t i = 0; i < two_i / 2; i++) k->row[i] = ot_tensor_elem_f32(t, (size_t)(e * two_i + 2 * i + odd));
        if (emit(k, k->row, (size_t)(two_i / 2) * 4, err)) return -1;
    }
    return 0;
}

static int produce_expert(sink *k, const export_ctx *x, const job *j, ot_err *err) {
    const int gu = j->part != PART_DOWN;
    const int64_t in = j->ne[0], out = j->ne[1], E = j->ne[2];
    const int64_t src_rows = gu ? 2 * out : out, groups = in / 32;
    for (int64_t e = 0; e < E; e++)
        for (int64_t o = 0; o < out; o++) {
            // Row of the Linear-layout [E, src_rows, in] matrix: gate = 2o, up = 2o + 1 (interleaved, spec §2.8).
            const int64_t sr = j->part == PART_GATE ? 2 * o : j->part == PART_UP ? 2 * o + 1 : o;
            if (j->blocks && j->type == OT_GGML_MXFP4) {
                const size_t g0 = (size_t)((e * src_rows + sr) * groups);
                ot_gguf_mxfp4_repack(k->enc, j->blocks->data + g0 * 16, j->scales->data + g0, groups);
                if (emit(k, k->enc, (size_t)groups * OT_MXFP4_BLOCK_BYTES, err)) return -1;
                continue;
            }
            if (j->blocks) {
                const size_t g0 = (size_t)((e * src_rows + sr) * groups);
                ot_mxfp4_dequant_row(k->row, j->blocks->data + g0 * 16, j->scales->data + g0, (int)in);
            } else {
                // transformers' dequantized layout [E, in, out]: the Linear row is a column.
                for (int64_t i = 0; i < in; i++) k->row[i] = ot_tensor_elem_f32(j->src, (size_t)((e * in + i) * src_rows + sr));
            }
            if (j->slot) {
                lora_delta_row(x->lo, j->slot, (int)e, (int)sr, k->delta);
                for (int64_t i = 0; i < in; i++) k->row[i] += k->delta[i];
            }
            if (emit(k, k->enc, ot_gguf_encode_row(k->enc, k->row, in, j->type), err)) return -1;
        }
    return 0;
}

static int produce_lora(sink *k, const export_ctx *x, const job *j, ot_err *err) {
    const ot_lora *lo = x->lo;
    const ot_lora_slot *s = j->slot;
    if (j->kind == JOB_LORA_A) // [E, r, in] expert-major: exactly GGUF's ne [in, r, E]
        return emit(k, ot_lora_A(lo, s, 0), (size_t)s->n_exp * lo->r * s->in * sizeof(float), err);
    if (j->part == PART_GATE || j->part == PART_UP) {
        for (int e = 0; e < s->n_exp; e++)
            for (int o = j->part == PART_UP; o < s->out; o += 2)
                if (emit(k, ot_lora_B(lo, s, e) + (size_t)o * lo->r, (size_t)lo->r * sizeof(float), err)) return -1;
        return 0;
    }
    return emit(k, ot_lora_B(lo, s, 0), (size_t)s->n_exp * s->out * lo->r * sizeof(float), err);
}

// Declare the plan, begin, produce every tensor, finish. The writer owns the metadata already set on w.
static int write_gguf(ot_gguf_writer *w, const job_list *jl, const export_ctx *x, const ot_gguf_gptoss *g,
                      const char *path, const char *label, ot_err *err) {
    for (int i = 0; i < jl->n; i++)
        if (!ot_gguf_add_tensor(w, jl->v[i].name, jl->v[i].type, jl->v[i].n_dims, jl->v[i].ne, err)) {
            ot_gguf_writer_free(w);
            return -1;
        }
    if (ot_gguf_begin(w, path, err)) {
        ot_gguf_abort(w);
        return -1;
    }
    sink k = {.w = w, .x = g, .label = label};
    for (int i = 0; i < jl->n; i++) k.total += ot_ggml_row_bytes(jl->v[i].type, jl->v[i].ne[0]) *
                                              (uint64_t)(jl->v[i].n_dims > 1 ? jl->v[i].ne[1] : 1) *
                                              (uint64_t)(jl->v[i].n_dims > 2 ? jl->v[i].ne[2] : 1);
    if (g->progress && g->progress(g->progress_ctx, label, 0, k.total, err)) {
        ot_gguf_abort(w);
        return -1;
    }
    size_t cap = 16;
    for (int i = 0; i < jl->n; i++) {
        // Every producer works one row of ne[0] elements at a time.
        if ((size_t)jl->v[i].ne[0] > cap) cap = (size_t)jl->v[i].ne[0];
    }
    k.row = ot_malloc(cap * sizeof(float));
    k.delta = ot_malloc(cap * sizeof(float));
    k.enc = ot_malloc(cap * sizeof(float) + 64);
    int rc = 0;
    for (int i = 0; i < jl->n && !rc; i++) {
        const job *j = &jl->v[i];
        switch (j->kind) {
        case JOB_FLOAT: rc = produce_float(&k, x, j, err); break;
        case JOB_ZERO:
            memset(k.row, 0, (size_t)j->ne[0] * sizeof(float));
            rc = emit(&k, k.row, (size_t)j->ne[0] * sizeof(float), err);
            break;
        case JOB_BIAS_EVEN:
        case JOB_BIAS_ODD: rc = produce_bias_split(&k, j, err); break;
        case JOB_EXPERT: rc = produce_expert(&k, x, j, err); break;
        case JOB_LORA_A:
        case JOB_LORA_B: rc = produce_lora(&k, x, j, err); break;
        }
        if (rc) {
            char msg[OT_ERR_LEN];
            snprintf(msg, sizeof msg, "%s", err->msg);
            ot_fail(err, "%s: tensor %s: %s", path, j->name, msg);
        }
    }
    free(k.row);
    free(k.delta);
    free(k.enc);
    if (rc) {
        ot_gguf_abort(w);
        return -1;
    }
    return ot_gguf_finish(w, err);
}

// ---- metadata -----------------------------------------------------------------------------------------------------
// The Jinja chat template written into model.gguf: exactly the harmony prompt osstune trains on (formats/harmony.h).
// A leading system or developer message replaces the developer instruction; without one it is the zh->nan text.
char *ot_gguf_gptoss_chat_template(void) {
    const char *parts[] = {
        "<|start|>system<|message|>", OT_HARMONY_SYSTEM_DEFAULT,
        "<|end|><|start|>developer<|message|># Instructions\n\n"
        "{% if messages and messages[0]['role'] in ['system', 'developer'] %}{{ messages[0]['content'] }}{% else %}",
        OT_HARMONY_INSTRUCTION_ZH2NAN,
        "{% endif %}<|end|>{% for message in messages %}{% if message['role'] == 'user' %}"
        "<|start|>user<|message|>{{ message['content'] }}<|end|>{% elif message['role'] == 'assistant' %}"
        "<|start|>assistant<|channel|>final<|message|>{{ message['content'] }}<|end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|start|>assistant{% endif %}",
    };
    size_t n = 1;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) n += strlen(parts[i]);
    char *s = ot_malloc(n);
    s[0] = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) strcat(s, parts[i]);
    return s;
}

static void set_general(ot_gguf_writer *w, const char *type, const char *name) {
    ot_gguf_set_str(w, "general.architecture", ARCH);
    ot_gguf_set_str(w, "general.type", type);
    ot_gguf_set_str(w, "general.name", name);
}

// Model hyperparameters (spec §5.2) and the tokenizer.
static int set_model_metadata(ot_gguf_writer *w, const ot_model_config *c, const ot_tokenizer *tok, const char *name,
                              int any_mxfp4, ot_err *err) {
    set_general(w, "model", name);
    ot_gguf_set_u32(w, "general.quantization_version", 2);
    ot_gguf_set_u32(w, "general.file_type", any_mxfp4 ? 38 /* MOSTLY_MXFP4_MOE */ : 32 /* MOSTLY_BF16 */);
    ot_gguf_set_u32(w, ARCH ".block_count", (uint32_t)c->num_hidden_layers);
    ot_gguf_set_u32(w, ARCH ".context_length", (uint32_t)c->max_position_embeddings);
    ot_gguf_set_u32(w, ARCH ".embedding_length", (uint32_t)c->hidden_size);
    ot_gguf_set_u32(w, ARCH ".feed_forward_length", (uint32_t)c->intermediate_size);
    ot_gguf_set_u32(w, ARCH ".expert_feed_forward_length", (uint32_t)c->intermediate_size);
    ot_gguf_set_u32(w, ARCH ".attention.head_count", (uint32_t)c->num_attention_heads);
    ot_gguf_set_u32(w, ARCH ".attention.head_count_kv", (uint32_t)c->num_key_value_heads);
    ot_gguf_set_u32(w, ARCH ".attention.key_length", (uint32_t)c->head_dim);
    ot_gguf_set_u32(w, ARCH ".attention.value_length", (uint32_t)c->head_dim);
    ot_gguf_set_f32(w, ARCH ".attention.layer_norm_rms_epsilon", c->rms_norm_eps);
    ot_gguf_set_u32(w, ARCH ".attention.sliding_window", (uint32_t)c->sliding_window);
    ot_gguf_set_u32(w, ARCH ".expert_count", (uint32_t)c->num_local_experts);
    ot_gguf_set_u32(w, ARCH ".expert_used_count", (uint32_t)c->num_experts_per_tok);
    ot_gguf_set_f32(w, ARCH ".rope.freq_base", (float)c->rope.theta);
    if (c->rope.factor != 1.0) {
        ot_gguf_set_str(w, ARCH ".rope.scaling.type", "yarn");
        ot_gguf_set_f32(w, ARCH ".rope.scaling.factor", (float)c->rope.factor);
        ot_gguf_set_u32(w, ARCH ".rope.scaling.original_context_length", (uint32_t)c->rope.original_max_position_embeddings);
        ot_gguf_set_f32(w, ARCH ".rope.scaling.yarn_beta_fast", (float)c->rope.beta_fast);
        ot_gguf_set_f32(w, ARCH ".rope.scaling.yarn_beta_slow", (float)c->rope.beta_slow);
    }
    if (ot_gguf_set_vocab(w, tok, c->vocab_size, err)) return -1;
    char *tmpl = ot_gguf_gptoss_chat_template();
    ot_gguf_set_str(w, "tokenizer.chat_template", tmpl);
    free(tmpl);
    return 0;
}

// llama.cpp cannot represent what its gpt-oss graph does not compute: refuse such a config up front.
int ot_gguf_gptoss_check(const ot_model_config *c, const char *dir, ot_err *err) {
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (c->layer_sliding[l] != (l % 2 == 0))
            return ot_fail(err, "%s/config.json: layer %d is %s attention, but llama.cpp's gpt-oss graph makes even layers "
                           "sliding and odd layers full; this model cannot be written as GGUF",
                           dir, l, c->layer_sliding[l] ? "sliding" : "full");
    if (c->hidden_size % 32 || c->intermediate_size % 32)
        return ot_fail(err, "%s/config.json: hidden_size %d and intermediate_size %d must be multiples of 32 (the MXFP4 "
                       "and Q8_0 block)", dir, c->hidden_size, c->intermediate_size);
    return 0;
}

// ---- the files -----------------------------------------------------------------------------------------------------
int ot_gguf_gptoss_write(const ot_gguf_gptoss *g, ot_gguf_kind kind, const char *path, ot_err *err) {
    const char *label = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    export_ctx x = {.ck = g->ck, .c = &g->ck->config, .lo = kind == OT_GGUF_BASE ? NULL : g->lo,
                    .expert_lora_type = g->expert_lora_type};
    job_list jl = {0};
    ot_gguf_writer *w = ot_gguf_writer_new();
    int rc;
    if (kind == OT_GGUF_ADAPTER) {
        if (!g->lo) {
            ot_gguf_writer_free(w);
            return ot_fail(err, "%s: no adapter to write", path);
        }
        plan_adapter(&jl, &x);
        set_general(w, "adapter", g->name);
        ot_gguf_set_str(w, "adapter.type", "lora");
        // llama.cpp scales by alpha / r with r = B.ne[0]; PEFT's own scale (alpha / r, or alpha / sqrt(r) with
        // rsLoRA) is recovered by writing alpha = scale · r.
        ot_gguf_set_f32(w, "adapter.lora.alpha", g->lo->scale * (float)g->lo->r);
        rc = 0;
    } else {
        char base_name[256];
        snprintf(base_name, sizeof base_name, "%s-base", g->name);
        rc = plan_model(&jl, &x, err);
        int any_mxfp4 = 0;
        for (int i = 0; i < jl.n; i++) any_mxfp4 |= jl.v[i].type == OT_GGML_MXFP4;
        if (!rc) rc = set_model_metadata(w, x.c, g->tok, kind == OT_GGUF_BASE ? base_name : g->name, any_mxfp4, err);
    }
    if (!rc) rc = write_gguf(w, &jl, &x, g, path, label, err);
    else ot_gguf_writer_free(w);
    free(jl.v);
    return rc;
}
