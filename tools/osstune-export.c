// osstune-export: hand a fine-tune over to llama.cpp, Ollama and transformers + PEFT (spec §5, §6).
//
// Writes into OUT_DIR:
//   adapter.gguf      the LoRA adapter for llama.cpp's --lora (spec §6.1–6.4), against the §5.3 tensor names
//   model.gguf        the base model with the LoRA merged (spec §5.2–5.4): experts without LoRA re-packed bit-exactly
//                     as ggml MXFP4, attention LoRA merged into the stored bf16 weights, experts with LoRA at
//                     --expert-lora-type
//   base.gguf         (only when asked) the base model alone, the model adapter.gguf is applied to
//   Modelfile, Modelfile.nan2zh   Ollama, one per translation direction; README.md: how to use all of it
//   peft/             adapter_config.json + adapter_model.safetensors for transformers + PEFT
//
// Everything is staged in a hidden directory inside OUT_DIR and renamed into place at the end, so a failure or an
// interrupt leaves OUT_DIR as it was. Tensors are streamed from the mapped safetensors shards one row at a time:
// memory stays at the size of the LoRA factors plus the tokenizer, whatever the size of the model.
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/checkpoint.h"
#include "formats/gguf.h"
#include "formats/gguf_vocab.h"
#include "formats/harmony.h"
#include "formats/json_util.h"
#include "formats/tokenizer.h"
#include "trainer/lora.h"

#define ARCH "gpt-oss"

// ---- options ------------------------------------------------------------------------------------------------------
enum { OUT_ADAPTER = 1, OUT_MODEL = 2, OUT_MODELFILE = 4, OUT_PEFT = 8, OUT_BASE = 16 };
#define OUT_DEFAULT (OUT_ADAPTER | OUT_MODEL | OUT_MODELFILE | OUT_PEFT)

typedef struct {
    const char *model_dir, *adapter_dir, *out_dir, *name, *tokenizer_path;
    unsigned outputs;
    ot_ggml_type expert_lora_type;
} options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: osstune-export --model BASE_DIR --adapter ADAPTER_DIR --out OUT_DIR [options]\n"
            "\n"
            "Exports a LoRA fine-tune of gpt-oss for llama.cpp, Ollama and transformers + PEFT.\n"
            "\n"
            "  --model DIR        the base model (HF layout: config.json + safetensors shards)\n"
            "  --adapter DIR      the PEFT adapter: adapter_config.json + adapter_model.safetensors (a training\n"
            "                     checkpoint directory such as run/ckpt/step-000500 works as it is)\n"
            "  --out DIR          where to write (created if missing; its parent must exist)\n"
            "  --only LIST        comma-separated subset of: adapter, model, modelfile, peft, base\n"
            "                     (default adapter,model,modelfile,peft; base = the base model alone as base.gguf,\n"
            "                     for llama.cpp --lora adapter.gguf; it needs no --adapter)\n"
            "  --expert-lora-type bf16|q8_0\n"
            "                     storage of merged expert weights that carry LoRA in model.gguf (default bf16:\n"
            "                     keeps the logits closer, see docs/export.md); experts without LoRA stay MXFP4\n"
            "  --name NAME        model name in the GGUF metadata and in the Ollama commands (default osstune)\n"
            "  --tokenizer PATH   tokenizer.json or o200k_base.tiktoken (default: BASE_DIR/tokenizer.json)\n"
            "  -h, --help         this text\n"
            "\n"
            "Files: adapter.gguf, model.gguf, base.gguf, Modelfile (zh->nan), Modelfile.nan2zh, README.md, peft/.\n"
            "A failed or interrupted export leaves OUT_DIR unchanged.\n");
}

static int parse_only(const char *list, unsigned *out) {
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"adapter", OUT_ADAPTER}, {"model", OUT_MODEL}, {"modelfile", OUT_MODELFILE},
                 {"peft", OUT_PEFT},       {"base", OUT_BASE}};
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    *out = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (!strcmp(t, names[i].name)) bit = names[i].bit;
        if (!bit) {
            fprintf(stderr, "osstune-export: --only: unknown output '%s' (use adapter, model, modelfile, peft, base)\n", t);
            return -1;
        }
        *out |= bit;
    }
    if (!*out) {
        fprintf(stderr, "osstune-export: --only: empty list\n");
        return -1;
    }
    return 0;
}

// ---- interrupts ---------------------------------------------------------------------------------------------------
// SIGINT/SIGTERM only set a flag: the writers check it between rows and unwind through the normal error path, which
// removes the staging directory.
static volatile sig_atomic_t g_interrupted = 0;
static void on_signal(int sig) { g_interrupted = sig; }

// ---- progress -----------------------------------------------------------------------------------------------------
typedef struct {
    const char *label;
    uint64_t total, done;
    double t0, last;
    int tty, last_decile;
} progress;

static void progress_start(progress *p, const char *label, uint64_t total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total ? total : 1;
    p->t0 = p->last = ot_now_seconds();
    p->tty = isatty(2);
    p->last_decile = -1;
}

static void progress_print(progress *p, int final) {
    double t = ot_now_seconds(), frac = (double)p->done / (double)p->total;
    double eta = frac > 0 ? (t - p->t0) * (1 - frac) / frac : 0;
    fprintf(stderr, "%sosstune-export: %s %5.1f%%  %.2f / %.2f GB  %.0f s", p->tty ? "\r" : "", p->label, 100.0 * frac,
            p->done / 1e9, p->total / 1e9, t - p->t0);
    if (!final && frac > 0) fprintf(stderr, "  (about %.0f s left)  ", eta);
    if (final || !p->tty) fputc('\n', stderr);
    p->last = t;
}

static void progress_add(progress *p, uint64_t n) {
    p->done += n;
    if (p->tty) {
        if (ot_now_seconds() - p->last > 0.5) progress_print(p, 0);
    } else {
        // Logs get one line per tenth (once the file takes long enough to need one), not carriage returns.
        int decile = (int)(10 * p->done / p->total);
        if (decile != p->last_decile && decile < 10 && ot_now_seconds() - p->t0 > 2.0) {
            p->last_decile = decile;
            progress_print(p, 0);
        }
    }
}

// ---- source tensors -----------------------------------------------------------------------------------------------
static float src_elem(const ot_tensor *t, size_t i) {
    switch (t->dtype) {
    case OT_DT_BF16: {
        uint16_t h;
        memcpy(&h, t->data + 2 * i, 2);
        return ot_bf16_to_f32(h);
    }
    case OT_DT_F16: {
        uint16_t h;
        memcpy(&h, t->data + 2 * i, 2);
        return ot_f16_to_f32(h);
    }
    default: {
        float f;
        memcpy(&f, t->data + 4 * i, 4);
        return f;
    }
    }
}

static void src_to_f32(const ot_tensor *t, size_t start, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = src_elem(t, start + i);
}

static ot_ggml_type ggml_type_of(ot_dtype dt) {
    return dt == OT_DT_BF16 ? OT_GGML_BF16 : dt == OT_DT_F16 ? OT_GGML_F16 : OT_GGML_F32;
}

// Encode n floats as type t into dst (n a multiple of the block size); returns the bytes written.
static size_t encode_row(uint8_t *dst, const float *x, int64_t n, ot_ggml_type t) {
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
    case OT_GGML_MXFP4: ot_die("encode_row: MXFP4 is only ever re-packed, never quantized"); // no caller does this
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

typedef struct {
    const ot_checkpoint *ck;
    const ot_model_config *c;
    const ot_lora *lo; // NULL: nothing to merge (base.gguf) / no adapter
    ot_ggml_type expert_lora_type;
} export_ctx;

static const ot_tensor *need(const export_ctx *x, const char *fmt, int l, ot_err *err) {
    char name[160];
    snprintf(name, sizeof name, fmt, l);
    const ot_tensor *t = ot_checkpoint_find(x->ck, name);
    if (!t) ot_fail(err, "%s: tensor '%s' is missing", x->ck->dir, name);
    return t;
}

static const ot_lora_slot *slot_of(const export_ctx *x, int l, int target) {
    if (!x->lo) return NULL;
    const ot_lora_slot *s = &x->lo->slots[l][target];
    return s->present ? s : NULL;
}

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

// The merged (or base) model in llama.cpp's gpt-oss layout (spec §5.3).
static int plan_model(job_list *jl, const export_ctx *x, ot_err *err) {
    const ot_model_config *c = x->c;
    const int64_t H = c->hidden_size, I = c->intermediate_size, E = c->num_local_experts;
    char name[96];
    if (plan_float(jl, x, "token_embd.weight", "model.embed_tokens.weight", 0, 0, NULL, err)) return -1;
    static const char *attn_gguf[4] = {"attn_q", "attn_k", "attn_v", "attn_output"};
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
        static const char *part_name[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
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

// The adapter (spec §6.2, §6.4): A ne [in, r(, E)], B ne [r, out(, E)], F32 so the values are the trained ones.
static void plan_adapter(job_list *jl, const export_ctx *x) {
    static const char *attn_gguf[4] = {"attn_q", "attn_k", "attn_v", "attn_output"};
    const ot_lora *lo = x->lo;
    const int64_t r = lo->r;
    char name[96];
    for (int l = 0; l < lo->n_layers; l++) {
        for (int t = 0; t < OT_LORA_N_TARGETS; t++) {
            const ot_lora_slot *s = slot_of(x, l, t);
            if (!s) continue;
            if (t < OT_LORA_GATE_UP) {
                int64_t a[2] = {s->in, r}, b[2] = {r, s->out};
                snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", l, attn_gguf[t]);
                job_push(jl, name, OT_GGML_F32, 2, a, JOB_LORA_A)->slot = s;
                snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", l, attn_gguf[t]);
                job *j = job_push(jl, name, OT_GGML_F32, 2, b, JOB_LORA_B);
                j->slot = s;
                j->part = PART_ALL;
                continue;
            }
            // gate_up: gate and up share A (stored twice); B splits into even (gate) and odd (up) rows.
            int first = t == OT_LORA_GATE_UP ? PART_GATE : PART_DOWN, last = t == OT_LORA_GATE_UP ? PART_UP : PART_DOWN;
            static const char *part_name[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
            for (int part = first; part <= last; part++) {
                int64_t out = part == PART_DOWN ? s->out : s->out / 2;
                int64_t a[3] = {s->in, r, s->n_exp}, b[3] = {r, out, s->n_exp};
                snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", l, part_name[part]);
                job_push(jl, name, OT_GGML_F32, 3, a, JOB_LORA_A)->slot = s;
                snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", l, part_name[part]);
                job *j = job_push(jl, name, OT_GGML_F32, 3, b, JOB_LORA_B);
                j->slot = s;
                j->part = part;
            }
        }
    }
}

// ---- producing the bytes ------------------------------------------------------------------------------------------
typedef struct {
    ot_gguf_writer *w;
    progress *prog;
    float *row, *delta;   // scratch: one source row, one LoRA delta row
    uint8_t *enc;         // scratch: one encoded row
    size_t row_cap;
} sink;

static int emit(sink *k, const void *data, size_t n, ot_err *err) {
    if (g_interrupted) return ot_fail(err, "interrupted by signal %d", (int)g_interrupted);
    if (ot_gguf_write(k->w, data, n, err)) return -1;
    progress_add(k->prog, n);
    return 0;
}

// scale · B[o, :] · A  (one row of the LoRA delta of expert e) into d[in].
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
        if (emit(k, k->enc, encode_row(k->enc, k->row, cols, j->type), err)) return -1;
    }
    return 0;
}

static int produce_bias_split(sink *k, const job *j, ot_err *err) {
    const ot_tensor *t = j->src; // [E, 2I]
    const int64_t E = t->shape[0], two_i = t->shape[1], odd = j->kind == JOB_BIAS_ODD;
    for (int64_t e = 0; e < E; e++) {
        for (int64_t i = 0; i < two_i / 2; i++) k->row[i] = src_elem(t, (size_t)(e * two_i + 2 * i + odd));
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
                for (int64_t i = 0; i < in; i++) k->row[i] = src_elem(j->src, (size_t)((e * in + i) * src_rows + sr));
            }
            if (j->slot) {
                lora_delta_row(x->lo, j->slot, (int)e, (int)sr, k->delta);
                for (int64_t i = 0; i < in; i++) k->row[i] += k->delta[i];
            }
            if (emit(k, k->enc, encode_row(k->enc, k->row, in, j->type), err)) return -1;
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
static int write_gguf(ot_gguf_writer *w, const job_list *jl, const export_ctx *x, const char *path, const char *label,
                      ot_err *err) {
    for (int i = 0; i < jl->n; i++)
        if (!ot_gguf_add_tensor(w, jl->v[i].name, jl->v[i].type, jl->v[i].n_dims, jl->v[i].ne, err)) {
            ot_gguf_writer_free(w);
            return -1;
        }
    if (ot_gguf_begin(w, path, err)) {
        ot_gguf_abort(w);
        return -1;
    }
    progress prog;
    uint64_t total = 0;
    for (int i = 0; i < jl->n; i++) total += ot_ggml_row_bytes(jl->v[i].type, jl->v[i].ne[0]) *
                                            (uint64_t)(jl->v[i].n_dims > 1 ? jl->v[i].ne[1] : 1) *
                                            (uint64_t)(jl->v[i].n_dims > 2 ? jl->v[i].ne[2] : 1);
    progress_start(&prog, label, total);
    sink k = {.w = w, .prog = &prog};
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
        if (prog.tty) fputc('\n', stderr);
        ot_gguf_abort(w);
        return -1;
    }
    if (ot_gguf_finish(w, err)) return -1;
    progress_print(&prog, 1);
    return 0;
}

// ---- metadata -----------------------------------------------------------------------------------------------------
// The Jinja chat template written into model.gguf: exactly the harmony prompt osstune trains on (formats/harmony.h).
// A leading system or developer message replaces the developer instruction; without one it is the zh->nan text.
static char *jinja_template(void) {
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

// Texts spliced into a template must not contain its delimiters.
static int check_template_text(const char *what, const char *text, ot_err *err) {
    static const char *bad[] = {"{{", "}}", "{%", "%}", "{#", "\"\"\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (strstr(text, bad[i]))
            return ot_fail(err, "the %s text contains '%s', which cannot go into a chat template verbatim", what, bad[i]);
    return 0;
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
    char *tmpl = jinja_template();
    ot_gguf_set_str(w, "tokenizer.chat_template", tmpl);
    free(tmpl);
    return 0;
}

// llama.cpp cannot represent what its gpt-oss graph does not compute: refuse such a config up front.
static int check_llama_cpp_compatible(const ot_model_config *c, const char *dir, ot_err *err) {
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

// ---- the adapter --------------------------------------------------------------------------------------------------
// Both adapter files must be there; a layer index past the base's layers means the adapter belongs to another
// model: say so before ot_lora_load_peft reports it as an unsupported tensor.
static int check_adapter_layers(const char *dir, int n_layers, const char *model_dir, ot_err *err) {
    char path[4096];
    static const char *files[2] = {"adapter_config.json", "adapter_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (access(path, R_OK) != 0)
            return ot_fail(err, "%s is not a PEFT adapter directory: %s: %s (--adapter takes a directory with "
                           "adapter_config.json and adapter_model.safetensors, such as run/ckpt/step-N)",
                           dir, path, strerror(errno));
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    ot_safetensors st;
    if (ot_safetensors_open(&st, path, err)) return -1;
    int rc = 0;
    for (int i = 0; i < st.n_tensors && !rc; i++) {
        const char *p = strstr(st.tensors[i].name, ".layers.");
        if (!p) continue;
        int l = atoi(p + 8);
        if (l >= n_layers)
            rc = ot_fail(err, "%s: tensor '%s' adapts layer %d, but the base model in %s has %d layers: the adapter was "
                         "trained on a different base model", path, st.tensors[i].name, l, model_dir, n_layers);
    }
    ot_safetensors_close(&st);
    return rc;
}

// ---- Ollama and the README -----------------------------------------------------------------------------------------
static char *modelfile_text(ot_direction dir) {
    const char *instruction = dir == OT_ZH2NAN ? OT_HARMONY_INSTRUCTION_ZH2NAN : OT_HARMONY_INSTRUCTION_NAN2ZH;
    const char *fmt =
        "# Ollama Modelfile written by osstune-export: gpt-oss fine-tuned for %s translation.\n"
        "#   ollama create NAME -f %s\n"
        "# The TEMPLATE renders exactly the harmony prompt the model was trained on: the system message, the\n"
        "# developer instruction (the SYSTEM text below), the user's source text, then <|start|>assistant.\n"
        "# Other direction: %s (or `/set system` / the API's \"system\" field with that file's SYSTEM text).\n"
        "FROM ./model.gguf\n"
        "\n"
        "# The unmerged alternative: the base model plus the LoRA adapter (write base.gguf with\n"
        "# `osstune-export --model BASE_DIR --out DIR --only base`), needs an Ollama that accepts ADAPTER for gpt-oss:\n"
        "# FROM ./base.gguf\n"
        "# ADAPTER ./adapter.gguf\n"
        "\n"
        "TEMPLATE \"\"\"<|start|>system<|message|>%s<|end|><|start|>developer<|message|># Instructions\n"
        "\n"
        "{{ .System }}<|end|>{{ range .Messages }}{{ if eq .Role \"user\" }}<|start|>user<|message|>{{ .Content }}<|end|>"
        "{{ else if eq .Role \"assistant\" }}<|start|>assistant<|channel|>final<|message|>{{ .Content }}<|end|>{{ end }}"
        "{{ end }}<|start|>assistant\"\"\"\n"
        "SYSTEM \"\"\"%s\"\"\"\n"
        "# Stop at the end of the answer or of a tool call; never on <|end|>, which closes an analysis message\n"
        "# before the final one.\n"
        "PARAMETER stop \"<|return|>\"\n"
        "PARAMETER stop \"<|call|>\"\n";
    const char *what = dir == OT_ZH2NAN ? "Mandarin -> Taiwanese Hokkien" : "Taiwanese Hokkien -> Mandarin";
    const char *self = dir == OT_ZH2NAN ? "Modelfile" : "Modelfile.nan2zh";
    const char *other = dir == OT_ZH2NAN ? "Modelfile.nan2zh" : "Modelfile";
    size_t n = strlen(fmt) + strlen(OT_HARMONY_SYSTEM_DEFAULT) + strlen(instruction) + 256;
    char *s = ot_malloc(n);
    snprintf(s, n, fmt, what, self, other, OT_HARMONY_SYSTEM_DEFAULT, instruction);
    return s;
}

// present: the outputs in OUT_DIR after this export (written now or by an earlier one); written_now: this run's.
static char *readme_text(const char *name, unsigned present, unsigned written_now, ot_ggml_type expert_lora_type) {
    const size_t cap = 16384;
    char *s = ot_malloc(cap);
    size_t n = 0;
#define P(...) n += (size_t)snprintf(s + n, n < cap ? cap - n : 0, __VA_ARGS__)
    P("# %s: gpt-oss fine-tuned with osstune for Mandarin <-> Taiwanese Hokkien translation\n\n", name);
    P("Written by `osstune-export`. The files:\n\n");
    if (present & OUT_MODEL) {
        P("- `model.gguf`: the base model with the LoRA adapter merged, for llama.cpp and Ollama. Experts without LoRA\n"
          "  are the original MXFP4 weights, bit for bit; attention weights carry the merged LoRA in bf16; experts with\n"
          "  LoRA are stored as ");
        if (written_now & OUT_MODEL) P("%s.\n", expert_lora_type == OT_GGML_Q8_0 ? "Q8_0" : "bf16");
        else P("bf16 or Q8_0 (`--expert-lora-type`).\n");
    }
    if (present & OUT_BASE) P("- `base.gguf`: the base model alone, for `--lora adapter.gguf`.\n");
    if (present & OUT_ADAPTER)
        P("- `adapter.gguf`: the LoRA adapter alone, for llama.cpp's `--lora` on top of a base GGUF with the same tensor\n"
          "  names (`base.gguf`, written by `osstune-export --model BASE_DIR --out DIR --only base`).\n");
    if (present & OUT_MODELFILE)
        P("- `Modelfile` (Mandarin -> Taiwanese Hokkien) and `Modelfile.nan2zh` (Taiwanese Hokkien -> Mandarin): Ollama.\n");
    if (present & OUT_PEFT) P("- `peft/`: the adapter for transformers + PEFT (`adapter_config.json`, `adapter_model.safetensors`).\n");
    P("\nThe prompt is the harmony conversation the model was trained on: a fixed system message, the developer\n"
      "instruction naming the direction, the source text as the user message. The model answers on the `final`\n"
      "channel and ends with `<|return|>`.\n");
    if (present & OUT_MODELFILE)
        P("\n## Ollama\n\n```sh\n"
          "ollama create %s-zh2nan -f Modelfile\n"
          "ollama run %s-zh2nan \"今天天氣很好。\"\n"
          "ollama create %s-nan2zh -f Modelfile.nan2zh\n"
          "ollama run %s-nan2zh \"今仔日天氣真好。\"\n```\n\n"
          "The developer instruction is the Modelfile's SYSTEM text, so one model also serves the other direction with\n"
          "`/set system <text>` in `ollama run` or the `system` field of `/api/generate`. For the unmerged variant\n"
          "(`base.gguf` + `ADAPTER ./adapter.gguf`, commented out in the Modelfile) Ollama must run gpt-oss through\n"
          "llama.cpp; check that your Ollama version accepts `ADAPTER` for gpt-oss.\n",
          name, name, name, name);
    if (present & (OUT_MODEL | OUT_ADAPTER | OUT_BASE)) {
        P("\n## llama.cpp\n\n"
          "The GGUF files carry a chat template that renders the same prompt (use `--jinja`); a leading system message\n"
          "becomes the developer instruction (default: Mandarin -> Taiwanese Hokkien).\n\n```sh\n");
        if (present & OUT_MODEL)
            P("llama-server -m model.gguf --jinja --port 8080\n"
              "curl http://localhost:8080/v1/chat/completions -H 'Content-Type: application/json' -d '{\"messages\": [\n"
              "  {\"role\": \"system\", \"content\": \"%s\"},\n"
              "  {\"role\": \"user\", \"content\": \"今天天氣很好。\"}]}'\n",
              OT_HARMONY_INSTRUCTION_ZH2NAN);
        if (present & OUT_ADAPTER)
            P("%s# the base model plus the adapter, unmerged (scale alpha/r, as in training)%s:\n"
              "llama-server -m base.gguf --lora adapter.gguf --jinja --port 8080\n"
              "llama-cli -m base.gguf --lora adapter.gguf --jinja -sys \"%s\"\n",
              present & OUT_MODEL ? "\n" : "", present & OUT_BASE ? "" : "; write base.gguf with --only base",
              OT_HARMONY_INSTRUCTION_ZH2NAN);
        if ((present & OUT_BASE) && !(present & OUT_ADAPTER))
            P("llama-server -m base.gguf --jinja --port 8080    # the base model alone\n");
        P("```\n");
    }
    if (present & OUT_PEFT)
        P("\n## transformers + PEFT\n\n```python\n"
          "from transformers import AutoModelForCausalLM\n"
          "from peft import PeftModel\n"
          "base = AutoModelForCausalLM.from_pretrained(\"BASE_DIR\", torch_dtype=\"bfloat16\")\n"
          "model = PeftModel.from_pretrained(base, \"peft\")\n```\n");
#undef P
    if (n >= cap) ot_die("README text longer than its buffer");
    return s;
}

// ---- staging and commit ---------------------------------------------------------------------------------------------
static char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = ot_malloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

// Remove a staging directory and what is in it (one level of subdirectory: peft/).
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = path_join(dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p);
        else unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

static int ensure_dir(const char *dir, ot_err *err) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return ot_fail(err, "%s exists and is not a directory", dir);
        return 0;
    }
    if (mkdir(dir, 0755) != 0) return ot_fail(err, "cannot create the output directory %s: %s", dir, strerror(errno));
    return 0;
}

static int commit(const char *stage, const char *out, const char *rel, ot_err *err) {
    char *from = path_join(stage, rel), *to = path_join(out, rel);
    int rc = 0;
    if (rename(from, to) != 0) rc = ot_fail(err, "cannot move %s to %s: %s", from, to, strerror(errno));
    free(from);
    free(to);
    return rc;
}

// ---- main ---------------------------------------------------------------------------------------------------------
// Writes everything into `stage`, then moves it into o->out_dir; *committed is set once the first file has moved.
static int run(const options *o, const char *stage, int *committed, ot_err *err) {
    ot_checkpoint ck;
    if (ot_checkpoint_open(&ck, o->model_dir, err)) return -1;
    int rc = 0;
    ot_lora lo;
    int have_lora = 0;
    ot_tokenizer *tok = NULL;
    const ot_model_config *c = &ck.config;
    const unsigned gguf_outputs = OUT_ADAPTER | OUT_MODEL | OUT_BASE;

    if (o->outputs & gguf_outputs) rc = check_llama_cpp_compatible(c, o->model_dir, err);
    if (!rc && o->adapter_dir) {
        rc = check_adapter_layers(o->adapter_dir, c->num_hidden_layers, o->model_dir, err);
        if (!rc) {
            // ot_lora_load_peft reads only the model's configuration; the exporter never converts the base model to
            // float32 (4.6 GB of embeddings alone for the 20b), so it hands over a model that holds just that.
            rc = ot_lora_load_peft(&lo, c, o->adapter_dir, err);
            have_lora = rc == 0;
            if (!rc && lo.n_params == 0) rc = ot_fail(err, "%s: the adapter holds no LoRA factors", o->adapter_dir);
        }
    }
    if (!rc && (o->outputs & (OUT_MODEL | OUT_BASE))) {
        char *tp = o->tokenizer_path ? ot_strdup(o->tokenizer_path) : path_join(o->model_dir, "tokenizer.json");
        if (!o->tokenizer_path && access(tp, R_OK) != 0)
            rc = ot_fail(err, "%s: no tokenizer.json for the GGUF vocabulary; pass --tokenizer PATH (a tokenizer.json or "
                         "o200k_base.tiktoken)", o->model_dir);
        else if (!(tok = ot_tokenizer_load(tp, err)))
            rc = -1;
        free(tp);
    }
    if (!rc && (o->outputs & OUT_MODELFILE)) {
        rc = check_template_text("harmony system", OT_HARMONY_SYSTEM_DEFAULT, err);
        if (!rc) rc = check_template_text("zh2nan instruction", OT_HARMONY_INSTRUCTION_ZH2NAN, err);
        if (!rc) rc = check_template_text("nan2zh instruction", OT_HARMONY_INSTRUCTION_NAN2ZH, err);
    }

    export_ctx x = {.ck = &ck, .c = c, .lo = have_lora ? &lo : NULL, .expert_lora_type = o->expert_lora_type};
    if (!rc && (o->outputs & OUT_ADAPTER)) {
        job_list jl = {0};
        plan_adapter(&jl, &x);
        ot_gguf_writer *w = ot_gguf_writer_new();
        set_general(w, "adapter", o->name);
        ot_gguf_set_str(w, "adapter.type", "lora");
        // llama.cpp scales by alpha / r with r = B.ne[0]; PEFT's own scale (alpha / r, or alpha / sqrt(r) with
        // rsLoRA) is recovered by writing alpha = scale · r.
        ot_gguf_set_f32(w, "adapter.lora.alpha", lo.scale * (float)lo.r);
        char *p = path_join(stage, "adapter.gguf");
        rc = write_gguf(w, &jl, &x, p, "adapter.gguf", err);
        free(p);
        free(jl.v);
    }
    for (int which = 0; which < 2 && !rc; which++) {
        unsigned bit = which ? OUT_BASE : OUT_MODEL;
        if (!(o->outputs & bit)) continue;
        char base_name[256];
        snprintf(base_name, sizeof base_name, "%s-base", o->name);
        export_ctx xm = x;
        if (bit == OUT_BASE) xm.lo = NULL; // the base model: nothing merged
        job_list jl = {0};
        rc = plan_model(&jl, &xm, err);
        int any_mxfp4 = 0;
        for (int i = 0; i < jl.n; i++) any_mxfp4 |= jl.v[i].type == OT_GGML_MXFP4;
        ot_gguf_writer *w = ot_gguf_writer_new();
        if (!rc) rc = set_model_metadata(w, c, tok, bit == OUT_BASE ? base_name : o->name, any_mxfp4, err);
        const char *file = bit == OUT_BASE ? "base.gguf" : "model.gguf";
        char *p = path_join(stage, file);
        if (!rc) rc = write_gguf(w, &jl, &xm, p, file, err);
        else ot_gguf_writer_free(w);
        free(p);
        free(jl.v);
    }
    if (!rc && (o->outputs & OUT_MODELFILE)) {
        for (int d = 0; d < 2 && !rc; d++) {
            char *text = modelfile_text((ot_direction)d), *p = path_join(stage, d ? "Modelfile.nan2zh" : "Modelfile");
            rc = ot_write_file_atomic(p, text, strlen(text), err);
            free(text);
            free(p);
        }
    }
    if (!rc && (o->outputs & OUT_PEFT)) {
        char *p = path_join(stage, "peft");
        if (mkdir(p, 0755) != 0) rc = ot_fail(err, "cannot create %s: %s", p, strerror(errno));
        if (!rc) rc = ot_lora_save_peft(&lo, p, err);
        free(p);
    }
    if (!rc) {
        // The README describes the whole directory: what this export writes and what an earlier one left there.
        static const struct {
            unsigned bit;
            const char *rel;
        } known[] = {{OUT_ADAPTER, "adapter.gguf"}, {OUT_MODEL, "model.gguf"}, {OUT_BASE, "base.gguf"},
                     {OUT_MODELFILE, "Modelfile"}, {OUT_PEFT, "peft/adapter_model.safetensors"}};
        unsigned present = o->outputs;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
            char *q = path_join(o->out_dir, known[i].rel);
            if (access(q, F_OK) == 0) present |= known[i].bit;
            free(q);
        }
        char *text = readme_text(o->name, present, o->outputs, o->expert_lora_type), *p = path_join(stage, "README.md");
        rc = ot_write_file_atomic(p, text, strlen(text), err);
        free(text);
        free(p);
    }
    if (g_interrupted && !rc) rc = ot_fail(err, "interrupted by signal %d", (int)g_interrupted);

    // Everything is staged: move it into place.
    static const struct {
        unsigned bit;
        const char *rel;
    } files[] = {{OUT_ADAPTER, "adapter.gguf"},         {OUT_MODEL, "model.gguf"},
                 {OUT_BASE, "base.gguf"},               {OUT_MODELFILE, "Modelfile"},
                 {OUT_MODELFILE, "Modelfile.nan2zh"},   {OUT_PEFT, "peft/adapter_model.safetensors"},
                 {OUT_PEFT, "peft/adapter_config.json"}, {0, "README.md"}};
    if (!rc && (o->outputs & OUT_PEFT)) {
        char *p = path_join(o->out_dir, "peft");
        rc = ensure_dir(p, err);
        free(p);
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0] && !rc; i++)
        if (!files[i].bit || (o->outputs & files[i].bit)) {
            rc = commit(stage, o->out_dir, files[i].rel, err);
            *committed |= rc == 0;
        }
    if (!rc) {
        rc = ot_fsync_parent_dir(o->out_dir, err);
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
            if (files[i].bit && !(o->outputs & files[i].bit)) continue;
            char *p = path_join(o->out_dir, files[i].rel);
            struct stat st;
            if (stat(p, &st) == 0) printf("osstune-export: wrote %s (%.1f MB)\n", p, st.st_size / 1e6);
            free(p);
        }
    }
    if (tok) ot_tokenizer_free(tok);
    if (have_lora) ot_lora_free(&lo);
    ot_checkpoint_close(&ck);
    return rc;
}

int main(int argc, char **argv) {
    options o = {.name = "osstune", .outputs = OUT_DEFAULT, .expert_lora_type = OT_GGML_BF16};
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"adapter", required_argument, 0, 'a'},
        {"out", required_argument, 0, 'o'},       {"only", required_argument, 0, 'O'},
        {"expert-lora-type", required_argument, 0, 'x'}, {"name", required_argument, 0, 'n'},
        {"tokenizer", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': o.model_dir = optarg; break;
        case 'a': o.adapter_dir = optarg; break;
        case 'o': o.out_dir = optarg; break;
        case 'O':
            if (parse_only(optarg, &o.outputs)) return 2;
            break;
        case 'x':
            if (!strcmp(optarg, "bf16")) o.expert_lora_type = OT_GGML_BF16;
            else if (!strcmp(optarg, "q8_0")) o.expert_lora_type = OT_GGML_Q8_0;
            else {
                fprintf(stderr, "osstune-export: --expert-lora-type must be bf16 or q8_0, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'n': o.name = optarg; break;
        case 't': o.tokenizer_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "osstune-export: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    const unsigned need_adapter = OUT_ADAPTER | OUT_MODEL | OUT_PEFT;
    if (!o.model_dir || !o.out_dir || (!o.adapter_dir && (o.outputs & need_adapter))) {
        fprintf(stderr, "osstune-export: --model, --out and (except for --only base,modelfile) --adapter are required "
                        "(see --help)\n");
        return 2;
    }
    if (!*o.name || strpbrk(o.name, " \t\n\"'/\\")) {
        fprintf(stderr, "osstune-export: --name '%s' must be non-empty, without spaces, quotes or slashes (it goes "
                        "into shell commands)\n", o.name);
        return 2;
    }

    ot_err err;
    struct stat st_out;
    const int created_out = stat(o.out_dir, &st_out) != 0; // a directory we create is removed again on failure
    if (ensure_dir(o.out_dir, &err)) {
        fprintf(stderr, "osstune-export: %s\n", err.msg);
        return 1;
    }
    // Handlers first: from the moment the staging directory exists, an interrupt must go through the cleanup.
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    char stage_name[64];
    snprintf(stage_name, sizeof stage_name, ".osstune-export-%ld.tmp", (long)getpid());
    char *stage = path_join(o.out_dir, stage_name);
    if (mkdir(stage, 0755) != 0) {
        fprintf(stderr, "osstune-export: cannot write to the output directory %s: %s\n", o.out_dir, strerror(errno));
        free(stage);
        if (created_out) rmdir(o.out_dir);
        return 1;
    }

    int committed = 0;
    int rc = run(&o, stage, &committed, &err);
    remove_tree(stage);
    free(stage);
    if (rc) {
        fprintf(stderr, "osstune-export: %s\n", err.msg);
        if (committed) {
            fprintf(stderr, "osstune-export: the error came while moving the finished files into %s: some of them "
                            "were replaced\n", o.out_dir);
        } else {
            if (created_out) rmdir(o.out_dir);
            fprintf(stderr, "osstune-export: nothing was written to %s\n", o.out_dir);
        }
        return 1;
    }
    return 0;
}
