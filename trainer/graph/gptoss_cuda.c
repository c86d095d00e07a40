// One gpt-oss decoder layer after another on the GPU, the same op order as trainer/graph/gptoss_cpu.c (spec §2), composed
// from kernels/cuda/ops_cuda.h. Activations are bf16; LoRA factors, their gradients and AdamW state are fp32.
//
// The host waits for the GPU once per step, for the gradient norm that clipping needs (and for the loss, read then
// too): the fused MXFP4 expert kernels find their row tiles from the MoE plan's device offsets. (The cuBLAS expert
// path, used where the fused kernels do not fit, waits once per layer for the plan's host copy,
// kernels/cuda/moe_plan.cu.) The cross-entropy sum accumulates in device memory, and temporaries come from the
// stream-ordered pool.
#ifdef OT_HAVE_CUDA

#include "trainer/graph/gptoss_cuda.h"
#include "trainer/model/model_cuda_shard.h"

#include <cublas_v2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const ot_cuda_prof_names[OT_CUDA_PROF_N] = {
    "attention", "moe_matmul", "moe_lora", "moe_routing", "dense_matmul", "lora", "lm_head", "norm_rope_other",
    "optimizer"};

#define WS_ALIGN 256

// What one layer's backward needs: kept per layer, or one set reused when recomputing. The two norm outputs and
// the SwiGLU output are never kept per layer (they point at shared scratch): backward redoes them from x, h and
// gu for the price of one RMSNorm / SwiGLU pass, which saves a quarter of the kept bytes.
typedef struct {
    ot_bf16 *x;          // [T, H] layer input (the residual stream)
    ot_bf16 *xn1;        // [T, H] input_layernorm(x)                     (shared scratch)
    float *rstd1;        // [T]
    ot_bf16 *q, *k, *v;  // [T, Q], [T, KV], [T, KV]; q and k after RoPE
    float *xa_qkv, *xa_o;       // LoRA x·Aᵀ: [T, 3r] of q, k, v (the adapted ones, in order), [T, r] of o
    ot_bf16 *xa_hl_qkv, *xa_hl_o; // [2][T, 3r], [2][T, r]: their bf16 hi / lo parts (the backward's products take them)
    ot_bf16 *att;        // [T, Q] attention output, before o_proj
    float *lse;          // [T, nh]
    ot_bf16 *h;          // [T, H] after the attention residual
    ot_bf16 *xn2;        // [T, H] post_attention_layernorm(h)            (shared scratch)
    float *rstd2;        // [T]
    int32_t *topk_idx;   // [T, k]
    float *topk_w;       // [T, k]
    ot_cuda_moe_plan plan; // allocated for the capacity; plan_view() narrows it to a batch
    // [P, 2I] kept; [P, I] and [P, H] shared scratch (P = T·k, permuted order): backward needs neither the SwiGLU
    // output (remade from gu) nor the experts' outputs y (the routing weights' gradient comes from the down
    // projection's input gradient, ot_cuda_moe_route_grad)
    ot_bf16 *gu, *act, *y;
    float *xa_gu, *xa_d;   // [P, r]
} layer_acts;

typedef struct {
    cudaEvent_t *ev;
    int *cls; // class that starts at ev[i]; -1 closes the tally
    int n, cap;
} prof_state;

struct ot_cuda_ctx {
    const ot_cuda_model *m;
    ot_cuda_run_options opt;
    cudaStream_t stream;
    ot_cuda_blas blas;
    // LoRA layout (a copy of the host adapter's) and its device state
    int has_lora, r, n_layers;
    float scale;
    ot_lora_slot (*slots)[OT_LORA_N_TARGETS];
    size_t n_params;
    float *params, *grads;
    // The attention adapters in a compact layout, per layer [A_q A_k A_v | B_q | B_k | B_v | A_o | B_o] (the slots
    // present), so the A's of q, k, v (one input) form one [n·r, H] array for their group's products (lora.cu):
    // params_hl their bf16 hi / lo parts ([2][n_lo]) and params_c their fp32 values, made at the start of each pass;
    // grads_lo ([2][n_lo], the tail of the grads allocation, after grads as the batched products need) the
    // gradients' products that do not go straight into grads (the lo products; the group's A products), added in
    // once per backward pass. compact_seg: per A or B (offset in params / grads, offset in the compact layout, count).
    ot_bf16 *params_hl;
    float *params_c, *grads_lo;
    size_t n_lo, compact_max;
    size_t *loA, *loB; // [L · 4]: a q/k/v/o slot's A and B in the compact layout
    size_t *compact_seg;
    int n_compact_seg;
    // workspace
    int T_cap, n_cap;
    void *ws;
    size_t ws_bytes;
    layer_acts *acts; // [L] (recompute: acts[0] is the one reused set)
    int n_acts;
    ot_bf16 **xin;    // [L + 1]: layer inputs, xin[L] = the final residual
    int scratch_layer; // recomputing: the layer whose activations the shared set holds (-1: none)
    ot_bf16 *router_logits, *hf, *dx, *dxn, *dhf, *datt, *dq, *dk, *dv, *dbuf, *dact, *dgu, *dlogits;
    float *rstd_f, *dw;
    float *dxa;         // [P, r]: an expert adapter's dxa, handed from its backward to the product that expands it
    int split_ready;    // decoding: params_hl / params_c hold the split of the current parameters
    int32_t *batch_dev; // ids | pos | seg_start | tgt_pos | tgt_label for the current batch
    int32_t *batch_host; // pinned staging of the same
    cudaEvent_t upload_done;
    double *loss_dev;  // device accumulator of the loss
    double *loss_host; // pinned: the loss read back
    prof_state prof;
    const ot_cuda_model_grads *mg; // full training: base-weight gradients (NULL: the base is frozen)
};

// ---- profiling ------------------------------------------------------------------------------------------------
// An event is recorded where the op class changes; the time between consecutive events belongs to the class that
// started at the first (launch gaps included: that is time the class costs).
static void mark(ot_cuda_ctx *c, int cls) {
    if (!c->opt.profile) return;
    prof_state *p = &c->prof;
    if (p->n > 0 && p->cls[p->n - 1] == cls) return;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 1024;
        p->ev = ot_realloc(p->ev, sizeof(cudaEvent_t) * (size_t)cap);
        p->cls = ot_realloc(p->cls, sizeof(int) * (size_t)cap);
        for (int i = p->cap; i < cap; i++) OT_CUDA_CHECK(cudaEventCreate(&p->ev[i]));
        p->cap = cap;
    }
    OT_CUDA_CHECK(cudaEventRecord(p->ev[p->n], c->stream));
    p->cls[p->n++] = cls;
}

void ot_cuda_prof_mark(ot_cuda_ctx *c, int cls) { mark(c, cls); }

void ot_cuda_prof_enable(ot_cuda_ctx *c, int on) {
    OT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    c->prof.n = 0; // a tally starts at the next op
    c->opt.profile = on;
}

void ot_cuda_ctx_sync(ot_cuda_ctx *c) { OT_CUDA_CHECK(cudaStreamSynchronize(c->stream)); }

void ot_cuda_prof_collect(ot_cuda_ctx *c, double ms[OT_CUDA_PROF_N]) {
    if (!c->opt.profile) return;
    mark(c, -1);
    OT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    prof_state *p = &c->prof;
    for (int i = 0; i + 1 < p->n; i++) {
        if (p->cls[i] < 0) continue;
        float t = 0;
        OT_CUDA_CHECK(cudaEventElapsedTime(&t, p->ev[i], p->ev[i + 1]));
        ms[p->cls[i]] += t;
    }
    p->n = 0;
}

// ---- workspace ------------------------------------------------------------------------------------------------
// The workspace by buffer, for the memory breakdown: each carve adds its bytes (with its alignment padding) to
// the part of its name (names are string literals; one part per name).
typedef struct {
    ot_cuda_mem_part *parts;
    int n, max;
} ws_ledger;

static void ledger_add(ws_ledger *led, const char *name, size_t bytes) {
    if (!led) return;
    for (int i = 0; i < led->n; i++)
        if (!strcmp(led->parts[i].name, name)) {
            led->parts[i].bytes += bytes;
            return;
        }
    if (led->n == led->max) ot_die("the workspace has more than %d parts", led->max);
    led->parts[led->n].name = name;
    led->parts[led->n++].bytes = bytes;
}

static void *ws_take(ot_carve *w, ws_ledger *led, const char *name, size_t bytes) {
    const size_t before = w->off;
    void *p = ot_carve_take(w, bytes);
    ledger_add(led, name, w->off - before);
    return p;
}
#define BF(name, n) ((ot_bf16 *)ws_take(w, led, name, (size_t)(n) * sizeof(ot_bf16)))
#define F32(name, n) ((float *)ws_take(w, led, name, (size_t)(n) * sizeof(float)))
#define I32(name, n) ((int32_t *)ws_take(w, led, name, (size_t)(n) * sizeof(int32_t)))

// What the workspace holds: every layer's activations (training), one layer's set recomputed in backward, every
// layer's MoE block and one attention block recomputed in backward, or only what a forward needs (one set, the
// layers run in place on one residual buffer, no gradient buffers).
enum { WS_KEEP = 0, WS_RECOMPUTE = 1, WS_FORWARD = 2, WS_ATTENTION = 3 };
static int ws_mode_of(int recompute) {
    return recompute == OT_RECOMPUTE_ON ? WS_RECOMPUTE : recompute == OT_RECOMPUTE_ATTENTION ? WS_ATTENTION : WS_KEEP;
}
static int ws_mode(const ot_cuda_run_options *o) { return o->forward_only ? WS_FORWARD : ws_mode_of(o->recompute); }
// Whether the mode keeps one activation set (and MoE plan) that every layer reuses, rather than one per layer.
static int ws_one_set(int mode) { return mode == WS_RECOMPUTE || mode == WS_FORWARD; }

// The attention block's activations of a set: kept (names "kept ...") or, shared, the one set recomputation fills.
static void carve_attention(ot_carve *w, ws_ledger *led, layer_acts *a, int shared, size_t T, size_t Q, size_t KV,
                            size_t R, size_t H, size_t nh) {
#define NAME(kept) (shared ? "attention block (recomputed)" : kept)
    a->rstd1 = F32(NAME("kept norm statistics"), T);
    a->q = BF(NAME("kept q"), T * Q);
    a->k = BF(NAME("kept k, v"), T * KV);
    a->v = BF(NAME("kept k, v"), T * KV);
    if (R) {
        a->xa_qkv = F32(NAME("kept LoRA xa"), T * 3 * R), a->xa_hl_qkv = BF(NAME("kept LoRA xa"), 2 * T * 3 * R);
        a->xa_o = F32(NAME("kept LoRA xa"), T * R), a->xa_hl_o = BF(NAME("kept LoRA xa"), 2 * T * R);
    }
    a->att = BF(NAME("kept attention output"), T * Q);
    a->lse = F32(NAME("kept norm statistics"), T * nh);
    a->h = BF(NAME("kept residual h"), T * H);
#undef NAME
}

// Lays the workspace out for T tokens and n targets (pointers stay NULL while measuring; led, when given, gets the
// bytes by buffer: "kept ..." what each layer keeps for its backward, summed over the layers). Returns its bytes.
static size_t ws_layout(ot_carve *w, const ot_model_config *cfg, int T, int n, int r, int mode, layer_acts *acts,
                        ot_bf16 **xin, ot_cuda_ctx *c, ws_ledger *led) {
    const size_t H = cfg->hidden_size, Q = (size_t)cfg->num_attention_heads * cfg->head_dim,
                 KV = (size_t)cfg->num_key_value_heads * cfg->head_dim, E = cfg->num_local_experts,
                 K = cfg->num_experts_per_tok, I = cfg->intermediate_size, nh = cfg->num_attention_heads;
    const int L = cfg->num_hidden_layers;
    const size_t Tz = (size_t)T, P = Tz * K, R = (size_t)r;
    const int one_set = ws_one_set(mode), n_sets = one_set ? 1 : L, fwd = mode == WS_FORWARD;
    // shared by every set
    ot_bf16 *xn1 = BF("normed inputs", Tz * H), *xn2 = BF("normed inputs", Tz * H), *act = BF("SwiGLU output", P * I);
    ot_bf16 *y = BF("expert outputs", P * H);
    layer_acts attention; // WS_ATTENTION: the one attention block every layer recomputes into
    memset(&attention, 0, sizeof attention);
    if (mode == WS_ATTENTION) carve_attention(w, led, &attention, 1, Tz, Q, KV, R, H, nh);
    for (int s = 0; s < n_sets; s++) {
        layer_acts tmp, *a = acts ? &acts[s] : &tmp;
        if (!acts) memset(&tmp, 0, sizeof tmp);
        ot_cuda_moe_plan keep = a->plan; // allocated separately (cudaMalloc inside the op library)
        memset(a, 0, sizeof *a);
        a->plan = keep;
        if (!one_set) a->x = BF("kept layer input", Tz * H);
        a->xn1 = xn1;
        if (mode == WS_ATTENTION) {
            a->rstd1 = attention.rstd1, a->q = attention.q, a->k = attention.k, a->v = attention.v;
            a->xa_qkv = attention.xa_qkv, a->xa_hl_qkv = attention.xa_hl_qkv;
            a->xa_o = attention.xa_o, a->xa_hl_o = attention.xa_hl_o;
            a->att = attention.att, a->lse = attention.lse, a->h = attention.h;
        } else {
            carve_attention(w, led, a, 0, Tz, Q, KV, R, H, nh);
        }
        a->xn2 = xn2;
        a->rstd2 = F32("kept norm statistics", Tz);
        a->topk_idx = I32("kept routing", Tz * K);
        a->topk_w = F32("kept routing", Tz * K);
        a->gu = BF("kept expert gate_up", P * 2 * I);
        a->act = act;
        a->y = y;
        if (R) {
            a->xa_gu = F32("kept LoRA xa", P * R);
            a->xa_d = F32("kept LoRA xa", P * R);
        }
        if (xin && !one_set) xin[s] = a->x;
    }
    ot_bf16 *one = fwd ? BF("residual stream", Tz * H) : NULL; // forward only: every layer in place on one buffer
    for (int l = 0; l <= L; l++) {
        ot_bf16 *p = fwd ? one : (one_set || l == L) ? BF("residual stream", Tz * H) : NULL;
        if (xin && p) xin[l] = p;
    }
    ot_bf16 *router_logits = BF("router logits", Tz * E), *hf = BF("final norm", Tz * H);
#define GRAD_BF(n) (fwd ? NULL : BF("gradients", n))
    ot_bf16 *dx = GRAD_BF(Tz * H), *dxn = GRAD_BF(Tz * H), *dhf = GRAD_BF(Tz * H);
    ot_bf16 *datt = GRAD_BF(Tz * Q), *dq = GRAD_BF(Tz * Q), *dk = GRAD_BF(Tz * KV), *dv = GRAD_BF(Tz * KV);
    ot_bf16 *dbuf = GRAD_BF(P * H), *dact = GRAD_BF(P * I), *dgu = GRAD_BF(P * 2 * I), *dlogits = GRAD_BF(Tz * E);
#undef GRAD_BF
    float *rstd_f = F32("final norm", Tz), *dw = fwd ? NULL : F32("gradients", Tz * K);
    float *dxa = fwd || !R ? NULL : F32("gradients", P * R);
    int32_t *batch_dev = I32("batch", 3 * Tz + 2 * (size_t)n);
    if (c) {
        c->router_logits = router_logits;
        c->hf = hf;
        c->dx = dx;
        c->dxn = dxn;
        c->dhf = dhf;
        c->datt = datt;
        c->dq = dq;
        c->dk = dk;
        c->dv = dv;
        c->dbuf = dbuf;
        c->dact = dact;
        c->dgu = dgu;
        c->dlogits = dlogits;
        c->rstd_f = rstd_f;
        c->dw = dw;
        c->dxa = dxa;
        c->batch_dev = batch_dev;
    }
    return w->off;
}
#undef BF
#undef F32
#undef I32

int ot_cuda_workspace_parts(const ot_model_config *cfg, int T, int n_targets, int r, int recompute,
                            ot_cuda_mem_part *parts, int max_parts) {
    ws_ledger led = {parts, 0, max_parts};
    ot_carve w = {NULL, 0, WS_ALIGN};
    const int mode = ws_mode_of(recompute);
    ws_layout(&w, cfg, T, n_targets, r, mode, NULL, NULL, NULL, &led);
    ledger_add(&led, "MoE plans", (size_t)(ws_one_set(mode) ? 1 : cfg->num_hidden_layers) *
                                      ot_cuda_moe_plan_bytes(T, cfg->num_experts_per_tok, cfg->num_local_experts));
    // The largest temporaries the ops take from the pool, one op at a time: the output head's, the attention
    // backward's.
    size_t lm = ot_cuda_lmhead_xent_tmp_bytes(n_targets, cfg->hidden_size, cfg->vocab_size);
    size_t att = ot_cuda_attention_bwd_tmp_bytes(T, cfg->num_attention_heads, cfg->num_key_value_heads, cfg->head_dim);
    ledger_add(&led, lm > att ? "output head temporaries" : "attention backward temporaries", lm > att ? lm : att);
    return led.n;
}

size_t ot_cuda_workspace_bytes(const ot_model_config *cfg, int T, int n_targets, int r, int recompute) {
    ot_cuda_mem_part parts[OT_CUDA_MEM_PARTS_MAX];
    const int n = ot_cuda_workspace_parts(cfg, T, n_targets, r, recompute, parts, OT_CUDA_MEM_PARTS_MAX);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += parts[i].bytes;
    return bytes;
}

static void free_workspace(ot_cuda_ctx *c) {
    if (c->ws) OT_CUDA_CHECK(cudaFree(c->ws));
    if (c->batch_host) OT_CUDA_CHECK(cudaFreeHost(c->batch_host));
    for (int s = 0; s < c->n_acts; s++)
        if (c->acts[s].plan.perm) ot_cuda_moe_plan_free(&c->acts[s].plan);
    free(c->acts);
    free(c->xin);
    c->ws = NULL;
    c->batch_host = NULL;
    c->acts = NULL;
    c->xin = NULL;
    c->n_acts = 0;
    c->ws_bytes = 0;
    c->T_cap = c->n_cap = 0;
}

// (Re)allocates the workspace for at least T tokens and n targets. Growing waits for the device (rare: the
// capacity is set from the largest batch up front).
static void reserve(ot_cuda_ctx *c, int T, int n) {
    if (T <= c->T_cap && n <= c->n_cap) return;
    if (T < c->T_cap) T = c->T_cap;
    if (n < c->n_cap) n = c->n_cap;
    if (T < 1) T = 1;
    if (n < 1) n = 1;
    OT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    free_workspace(c);
    const ot_model_config *cfg = &c->m->cfg;
    const int L = cfg->num_hidden_layers;
    c->n_acts = ws_one_set(ws_mode(&c->opt)) ? 1 : L;
    c->acts = ot_calloc((size_t)c->n_acts, sizeof(layer_acts));
    c->xin = ot_calloc((size_t)L + 1, sizeof(ot_bf16 *));
    ot_carve measure = {NULL, 0, WS_ALIGN};
    c->ws_bytes = ws_layout(&measure, cfg, T, n, c->r, ws_mode(&c->opt), c->acts, NULL, NULL, NULL);
    char what[96];
    ot_err e;
    snprintf(what, sizeof what, "the activation workspace for %d tokens", T);
    const char *hint = c->opt.recompute == OT_RECOMPUTE_ON ? NULL : "--recompute on needs less";
    if (ot_cuda_alloc(&c->ws, c->ws_bytes, what, hint, &e))
        ot_die("%s", e.msg);
    ot_carve place = {c->ws, 0, WS_ALIGN};
    ws_layout(&place, cfg, T, n, c->r, ws_mode(&c->opt), c->acts, c->xin, c, NULL);
    for (int s = 0; s < c->n_acts; s++)
        ot_cuda_moe_plan_alloc(&c->acts[s].plan, T, cfg->num_experts_per_tok, cfg->num_local_experts);
    OT_CUDA_CHECK(cudaMallocHost((void **)&c->batch_host, sizeof(int32_t) * (3 * (size_t)T + 2 * (size_t)n)));
    c->T_cap = T;
    c->n_cap = n;
    c->scratch_layer = -1;
}

// The plan allocated for the capacity, narrowed to a batch of T tokens (the arrays are large enough; the kernels
// read T, n_pairs and n_tiles from the struct).
static ot_cuda_moe_plan plan_view(const ot_cuda_moe_plan *cap, int T) {
    ot_cuda_moe_plan p = *cap;
    p.T = T;
    p.n_pairs = T * p.k;
    p.n_tiles = (p.n_pairs + OT_CUDA_MOE_TILE_ROWS - 1) / OT_CUDA_MOE_TILE_ROWS + p.E;
    return p;
}

// ---- context --------------------------------------------------------------------------------------------------
static float *dev_alloc_f32(size_t n) {
    float *p = NULL;
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p, (n ? n : 1) * sizeof(float)));
    return p;
}

// The attention slots' share of the adapter (the size of its compact copies).
static size_t attention_lora_size(const ot_lora_slot (*slots)[OT_LORA_N_TARGETS], int L, int r) {
    size_t n = 0;
    for (int l = 0; l < L; l++)
        for (int t = OT_LORA_Q; t <= OT_LORA_O; t++)
            if (slots[l][t].present) n += (size_t)r * (slots[l][t].in + slots[l][t].out);
    return n;
}

// The compact layout of the attention adapters (see the context) and its segments.
static void setup_attention_lora(ot_cuda_ctx *c) {
    const int L = c->n_layers;
    const size_t r = (size_t)c->r;
    c->n_lo = attention_lora_size(c->slots, L, c->r);
    c->loA = ot_malloc(sizeof(size_t) * 4 * (size_t)L);
    c->loB = ot_malloc(sizeof(size_t) * 4 * (size_t)L);
    size_t *seg = ot_malloc(sizeof(size_t) * 3 * 8 * (size_t)L), off = 0;
    c->n_compact_seg = 0;
    c->compact_max = 0;
    static const int order[8][2] = {{OT_LORA_Q, 0}, {OT_LORA_K, 0}, {OT_LORA_V, 0}, {OT_LORA_Q, 1},
                                    {OT_LORA_K, 1}, {OT_LORA_V, 1}, {OT_LORA_O, 0}, {OT_LORA_O, 1}};
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 8; k++) {
            const int t = order[k][0], is_b = order[k][1];
            const ot_lora_slot *s = &c->slots[l][t];
            if (!s->present) continue;
            const size_t n = is_b ? (size_t)s->out * r : r * (size_t)s->in;
            (is_b ? c->loB : c->loA)[4 * l + t] = off;
            size_t *g = seg + 3 * c->n_compact_seg++;
            g[0] = is_b ? s->b_off : s->a_off, g[1] = off, g[2] = n;
            if (n > c->compact_max) c->compact_max = n;
            off += n;
        }
    if (c->n_compact_seg) {
        OT_CUDA_CHECK(ot_cuda_malloc((void **)&c->params_hl, sizeof(ot_bf16) * 2 * c->n_lo));
        c->params_c = dev_alloc_f32(c->n_lo);
        OT_CUDA_CHECK(ot_cuda_malloc((void **)&c->compact_seg, sizeof(size_t) * 3 * (size_t)c->n_compact_seg));
        OT_CUDA_CHECK(cudaMemcpy(c->compact_seg, seg, sizeof(size_t) * 3 * (size_t)c->n_compact_seg,
                                 cudaMemcpyHostToDevice));
    }
    free(seg);
}

ot_cuda_ctx *ot_cuda_ctx_new(const ot_cuda_model *m, const ot_lora *lo, const ot_cuda_run_options *opt,
                             int max_tokens, int max_targets) {
    ot_cuda_ctx *c = ot_calloc(1, sizeof *c);
    c->m = m;
    if (opt) c->opt = *opt;
    if (c->opt.forward_only) c->opt.recompute = OT_RECOMPUTE_ON; // one activation set, the layers in place
    OT_CUDA_CHECK(cudaSetDevice(m->device));
    OT_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    ot_cuda_blas_init(&c->blas);
    OT_CUDA_CHECK(cudaEventCreateWithFlags(&c->upload_done, cudaEventDisableTiming));
    OT_CUDA_CHECK(cudaMallocHost((void **)&c->loss_host, sizeof(double)));
    // The loss accumulator lives outside the workspace, so growing it never loses a pending loss.
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&c->loss_dev, sizeof(double)));
    OT_CUDA_CHECK(cudaMemsetAsync(c->loss_dev, 0, sizeof(double), c->stream));
    c->n_layers = m->cfg.num_hidden_layers;
    if (lo && lo->n_params > 0) {
        if (lo->n_layers != c->n_layers)
            ot_die("the LoRA adapter has %d layers, the model %d", lo->n_layers, c->n_layers);
        c->has_lora = 1;
        c->r = lo->r;
        c->scale = lo->scale;
        c->slots = ot_malloc(sizeof *c->slots * (size_t)c->n_layers);
        memcpy(c->slots, lo->slots, sizeof *c->slots * (size_t)c->n_layers);
        c->n_params = lo->n_params;
        c->params = dev_alloc_f32(c->n_params);
        setup_attention_lora(c);
        c->grads = dev_alloc_f32(c->n_params + 2 * c->n_lo);
        c->grads_lo = c->grads + c->n_params;
        // Everything on the context's stream (a non-blocking stream does not order against the legacy one).
        ot_cuda_lora_set_params(c, lo->params);
        ot_cuda_lora_zero_grads(c);
    }
    reserve(c, max_tokens, max_targets);
    OT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return c;
}

void ot_cuda_ctx_free(ot_cuda_ctx *c) {
    if (!c) return;
    OT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    free_workspace(c);
    if (c->params) OT_CUDA_CHECK(cudaFree(c->params));
    if (c->grads) OT_CUDA_CHECK(cudaFree(c->grads));
    if (c->compact_seg) OT_CUDA_CHECK(cudaFree(c->compact_seg));
    if (c->params_hl) OT_CUDA_CHECK(cudaFree(c->params_hl));
    if (c->params_c) OT_CUDA_CHECK(cudaFree(c->params_c));
    free(c->loA);
    free(c->loB);
    for (int i = 0; i < c->prof.cap; i++) OT_CUDA_CHECK(cudaEventDestroy(c->prof.ev[i]));
    free(c->prof.ev);
    free(c->prof.cls);
    free(c->slots);
    OT_CUDA_CHECK(cudaFreeHost(c->loss_host));
    OT_CUDA_CHECK(cudaFree(c->loss_dev));
    OT_CUDA_CHECK(cudaEventDestroy(c->upload_done));
    ot_cuda_blas_free(&c->blas);
    OT_CUDA_CHECK(cudaStreamDestroy(c->stream));
    free(c);
}

int ot_cuda_need_recompute(const ot_cuda_model *m, const ot_lora *lo, size_t more, int max_tokens, int max_targets) {
    size_t fixed = more + (lo ? lo->n_params : 0) * 4 * sizeof(float); // parameters, gradients, two AdamW moments
    if (lo) // compact copies: gradient products (2 × fp32), split parameters (2 × bf16), fp32 parameters
        fixed += attention_lora_size(lo->slots, lo->n_layers, lo->r) * 4 * sizeof(float);
    fixed += (size_t)1 << 30; // margin: cuBLAS workspaces, the pool's fragmentation, the CUDA context's growth
    OT_CUDA_CHECK(cudaSetDevice(m->device));
    const size_t free_bytes = ot_cuda_free_bytes(); // (under --gpu-memory-limit: as on a card of that size)
    const int r = lo ? lo->r : 0;
    if (ot_cuda_workspace_bytes(&m->cfg, max_tokens, max_targets, r, OT_RECOMPUTE_OFF) + fixed <= free_bytes)
        return OT_RECOMPUTE_OFF;
    if (ot_cuda_workspace_bytes(&m->cfg, max_tokens, max_targets, r, OT_RECOMPUTE_ATTENTION) + fixed <= free_bytes)
        return OT_RECOMPUTE_ATTENTION;
    return OT_RECOMPUTE_ON;
}

size_t ot_cuda_ctx_bytes(const ot_cuda_ctx *c) {
    const ot_model_config *cfg = &c->m->cfg;
    size_t plans = (size_t)c->n_acts * ot_cuda_moe_plan_bytes(c->T_cap, cfg->num_experts_per_tok, cfg->num_local_experts);
    size_t lora = c->n_params * sizeof(float) * 2 + c->n_lo * 4 * sizeof(float);
    return c->ws_bytes + plans + lora + c->blas.workspace_size;
}

// ---- LoRA transfers -------------------------------------------------------------------------------------------
// One LoRA-sized buffer between host and device, on the context's stream, waited for.
static void lora_copy(ot_cuda_ctx *c, void *dst, const void *src, int to_device) {
    if (!c->n_params) return;
    OT_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(float) * c->n_params,
                                  to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, c->stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}
void ot_cuda_lora_set_params(ot_cuda_ctx *c, const float *host) {
    lora_copy(c, c->params, host, 1);
    c->split_ready = 0;
}
void ot_cuda_lora_get_params(ot_cuda_ctx *c, float *host) { lora_copy(c, host, c->params, 0); }
void ot_cuda_lora_get_grads(ot_cuda_ctx *c, float *host) { lora_copy(c, host, c->grads, 0); }
float *ot_cuda_lora_grads_device(ot_cuda_ctx *c) { return c->grads; }
float *ot_cuda_lora_params_device(ot_cuda_ctx *c) { return c->params; }
void ot_cuda_lora_zero_grads(ot_cuda_ctx *c) {
    if (c->n_params)
        OT_CUDA_CHECK(cudaMemsetAsync(c->grads, 0, sizeof(float) * (c->n_params + 2 * c->n_lo), c->stream));
}

// Layer l's adapter of target t, or NULL (c->slots is NULL without an adapter).
#define slot_of(c, l, t) ot_lora_slot_at((c)->slots, l, t)
static float *lora_A(const ot_cuda_ctx *c, const ot_lora_slot *s) { return c->params + s->a_off; }
static float *lora_B(const ot_cuda_ctx *c, const ot_lora_slot *s) { return c->params + s->b_off; }
static float *lora_dA(const ot_cuda_ctx *c, const ot_lora_slot *s) { return c->grads + s->a_off; }
static float *lora_dB(const ot_cuda_ctx *c, const ot_lora_slot *s) { return c->grads + s->b_off; }

// ---- batch ----------------------------------------------------------------------------------------------------
typedef struct {
    int T, n;
    const int32_t *ids, *pos, *seg, *tgt_pos, *tgt_label; // device
    const int32_t *slot;                                   // decoding: each token's sequence in the KV cache
} dev_batch;

static dev_batch upload_batch(ot_cuda_ctx *c, const ot_batch *b) {
    const size_t T = (size_t)b->T, n = (size_t)b->n_targets;
    // The previous upload must have left the pinned buffer before it is rewritten.
    OT_CUDA_CHECK(cudaEventSynchronize(c->upload_done));
    int32_t *h = c->batch_host;
    memcpy(h, b->ids, T * sizeof(int32_t));
    memcpy(h + T, b->pos, T * sizeof(int32_t));
    memcpy(h + 2 * T, b->seg_start, T * sizeof(int32_t));
    if (n) {
        memcpy(h + 3 * T, b->tgt_pos, n * sizeof(int32_t));
        memcpy(h + 3 * T + n, b->tgt_label, n * sizeof(int32_t));
    }
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    OT_CUDA_CHECK(cudaMemcpyAsync(c->batch_dev, h, (3 * T + 2 * n) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                  c->stream));
    OT_CUDA_CHECK(cudaEventRecord(c->upload_done, c->stream));
    dev_batch d = {(int)T, (int)n, c->batch_dev, c->batch_dev + T, c->batch_dev + 2 * T, c->batch_dev + 3 * T,
                   c->batch_dev + 3 * T + n, NULL};
    return d;
}

static void zero_bf16(ot_cuda_ctx *c, ot_bf16 *p, size_t n) {
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    OT_CUDA_CHECK(cudaMemsetAsync(p, 0, n * sizeof(ot_bf16), c->stream));
}

// ---- attention projections ---------------------------------------------------------------------------------
// The adapters of layer l's targets t0..t1 (q..v: one group on one input; o alone) as the ops take them; 0 when
// none is adapted. The group's A's are contiguous in the compact copies, so its A products go there (both
// parts; added in by the fold); B's go straight into grads (hi) and the compact tail (lo).
static int lora_group(const ot_cuda_ctx *c, int l, int t0, int t1, ot_cuda_lora_w *w, int *targets) {
    memset(w, 0, sizeof *w);
    if (!c->has_lora) return 0;
    float *lo1 = c->grads_lo, *lo2 = c->grads_lo + c->n_lo;
    for (int t = t0; t <= t1; t++) {
        const ot_lora_slot *s = slot_of(c, l, t);
        if (!s) continue;
        const int i = w->n++;
        targets[i] = t;
        if (i == 0) {
            const size_t a = c->loA[4 * l + t];
            w->A = c->params_c + a, w->A_hl = c->params_hl + a;
            w->dA = lo1 + a, w->dA_lo = lo2 + a;
        }
        const size_t b = c->loB[4 * l + t];
        w->B[i] = lora_B(c, s), w->B_hl[i] = c->params_hl + b, w->out[i] = s->out;
        w->dB[i] = lora_dB(c, s), w->dB_lo[i] = lo1 + b;
    }
    w->hl_stride = c->n_lo;
    return w->n;
}

static void projection_fwd(ot_cuda_ctx *c, ot_bf16 *y, const ot_bf16 *x, const ot_bf16 *W, const ot_bf16 *b, int T,
                           int in, int out) {
    mark(c, OT_CUDA_PROF_DENSE_MATMUL);
    ot_cuda_matmul_fwd(c->stream, &c->blas, y, x, W, b, T, in, out);
}

// dW, db: the base weight's gradient in full training (NULL when the base is frozen).
static void projection_bwd(ot_cuda_ctx *c, ot_bf16 *dx, float *dW, float *db, const ot_bf16 *dy, const ot_bf16 *x,
                           const ot_bf16 *W, int T, int in, int out) {
    mark(c, OT_CUDA_PROF_DENSE_MATMUL);
    ot_cuda_matmul_bwd(c->stream, &c->blas, dx, dW, db, dy, x, W, T, in, out);
}

// The adapters of targets t0..t1 on input x: ys[t - t0] are their outputs.
static void lora_group_fwd(ot_cuda_ctx *c, int l, int t0, int t1, ot_bf16 *const *ys, float *xa, ot_bf16 *xa_hl,
                           const ot_bf16 *x, int T, int in) {
    ot_cuda_lora_w w;
    int targets[OT_LORA_GROUP_MAX];
    if (!lora_group(c, l, t0, t1, &w, targets)) return;
    ot_bf16 *y[OT_LORA_GROUP_MAX];
    for (int i = 0; i < w.n; i++) y[i] = ys[targets[i] - t0];
    mark(c, OT_CUDA_PROF_LORA);
    ot_cuda_lora_fwd(c->stream, y, xa, xa_hl, x, &w, T, in, c->r, c->scale);
}

static void lora_group_bwd(ot_cuda_ctx *c, int l, int t0, int t1, ot_bf16 *dx, ot_bf16 *const *dys, const float *xa,
                           const ot_bf16 *xa_hl, const ot_bf16 *x, int T, int in) {
    ot_cuda_lora_w w;
    int targets[OT_LORA_GROUP_MAX];
    if (!lora_group(c, l, t0, t1, &w, targets)) return;
    const ot_bf16 *dy[OT_LORA_GROUP_MAX];
    for (int i = 0; i < w.n; i++) dy[i] = dys[targets[i] - t0];
    mark(c, OT_CUDA_PROF_LORA);
    ot_cuda_lora_bwd(c->stream, dx, dy, x, xa, xa_hl, &w, T, in, c->r, c->scale);
}

// ---- one layer forward ----------------------------------------------------------------------------------------
// Writes layer l's activations into a (a->x holds its input) and, when x_next is given (it may be a->x), its
// output there. kv (decoding): the tokens' keys and values go into their sequences' cache rows, and attention
// reads the cache instead of the batch.
// The attention block: h = x + o_proj(attention(rope(q, k), v)), q, k, v from RMSNorm(x).
static void attention_block_forward(ot_cuda_ctx *c, int l, layer_acts *a, const dev_batch *d,
                                    const ot_cuda_kv_cache *kv) {
    const ot_model_config *cfg = &c->m->cfg;
    const ot_cuda_layer_weights *w = &c->m->layers[l];
    const int T = d->T, H = cfg->hidden_size, nh = cfg->num_attention_heads, nkv = cfg->num_key_value_heads,
              D = cfg->head_dim;
    const int Q = nh * D, KV = nkv * D;
    cudaStream_t s = c->stream;
    ot_cuda_shard_use(c->m, s, l, OT_SHARD_ATTENTION); // sharded base weights: gathered here (else nothing)
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    ot_cuda_rmsnorm_fwd(s, a->xn1, a->rstd1, a->x, w->ln1_w, T, H, cfg->rms_norm_eps);
    projection_fwd(c, a->q, a->xn1, w->q_w, w->q_b, T, H, Q);
    projection_fwd(c, a->k, a->xn1, w->k_w, w->k_b, T, H, KV);
    projection_fwd(c, a->v, a->xn1, w->v_w, w->v_b, T, H, KV);
    ot_bf16 *qkv[3] = {a->q, a->k, a->v};
    lora_group_fwd(c, l, OT_LORA_Q, OT_LORA_V, qkv, a->xa_qkv, a->xa_hl_qkv, a->xn1, T, H);
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    ot_cuda_rope_qk_fwd(s, a->q, a->k, d->pos, c->m->inv_freq, c->m->attn_factor, T, nh, nkv, D);
    mark(c, OT_CUDA_PROF_ATTENTION);
    const int window = w->sliding ? cfg->sliding_window : 0;
    if (kv) {
        ot_cuda_kv_cache_store(s, kv->k[l], kv->v[l], a->k, a->v, d->slot, d->pos, T, nkv, D, kv->n_slots, kv->max_len);
        ot_cuda_attention_cache_fwd(s, a->att, a->q, kv->k[l], kv->v[l], w->sinks, d->slot, d->pos, T, nh, nkv, D,
                                    kv->n_slots, kv->max_len, window);
    } else {
        ot_cuda_attention_fwd(s, a->att, a->lse, a->q, a->k, a->v, w->sinks, d->seg, T, nh, nkv, D, window);
    }
    projection_fwd(c, a->h, a->att, w->o_w, w->o_b, T, Q, H);
    lora_group_fwd(c, l, OT_LORA_O, OT_LORA_O, &a->h, a->xa_o, a->xa_hl_o, a->att, T, Q);
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    ot_cuda_add_bf16(s, a->h, a->x, (size_t)T * H);
}

// The MoE block: x_next = h + combine(experts(RMSNorm(h))). x_next NULL: a recomputation for backward, which needs
// neither the layer output nor the experts' outputs, so it stops at the SwiGLU (and the down adapter's xa).
static void moe_block_forward(ot_cuda_ctx *c, int l, layer_acts *a, ot_bf16 *x_next, const dev_batch *d) {
    const ot_model_config *cfg = &c->m->cfg;
    const ot_cuda_layer_weights *w = &c->m->layers[l];
    const int T = d->T, H = cfg->hidden_size, E = cfg->num_local_experts, K = cfg->num_experts_per_tok,
              I = cfg->intermediate_size;
    cudaStream_t s = c->stream;
    ot_cuda_shard_use(c->m, s, l, OT_SHARD_EXPERTS);
    ot_cuda_rmsnorm_fwd(s, a->xn2, a->rstd2, a->h, w->ln2_w, T, H, cfg->rms_norm_eps);
    mark(c, OT_CUDA_PROF_DENSE_MATMUL);
    ot_cuda_matmul_fwd(s, &c->blas, c->router_logits, a->xn2, w->router_w, w->router_b, T, H, E);
    mark(c, OT_CUDA_PROF_MOE_ROUTING);
    ot_cuda_router_topk_fwd(s, a->topk_idx, a->topk_w, c->router_logits, T, E, K);
    ot_cuda_moe_plan plan = plan_view(&a->plan, T);
    ot_cuda_moe_plan_build(s, &plan, a->topk_idx);
    const ot_lora_slot *s_gu = slot_of(c, l, OT_LORA_GATE_UP), *s_d = slot_of(c, l, OT_LORA_DOWN);
    ot_bf16 *act = a->act;
    // Each expert adapter: xa here (kept for the backward), its expansion scale·xa·B_eᵀ added by the product.
    if (s_gu) {
        mark(c, OT_CUDA_PROF_MOE_LORA);
        ot_cuda_moe_lora_fwd(s, NULL, a->xa_gu, a->xn2, 1, lora_A(c, s_gu), lora_B(c, s_gu), &plan, H, c->r, 2 * I,
                             c->scale);
    }
    mark(c, OT_CUDA_PROF_MOE_MATMUL);
    const ot_cuda_moe_lora_term t_gu = {a->xa_gu, s_gu ? lora_B(c, s_gu) : NULL, c->r, c->scale};
    ot_cuda_moe_matmul_fwd(s, a->gu, a->xn2, 1, &w->gate_up, &plan, s_gu ? &t_gu : NULL);
    mark(c, OT_CUDA_PROF_MOE_ROUTING);
    ot_cuda_swiglu_fwd(s, act, a->gu, plan.n_pairs, I, cfg->swiglu_alpha, cfg->swiglu_limit);
    if (s_d) { // (without x_next, only this xa: the backward reads it)
        mark(c, OT_CUDA_PROF_MOE_LORA);
        ot_cuda_moe_lora_fwd(s, NULL, a->xa_d, act, 0, lora_A(c, s_d), lora_B(c, s_d), &plan, I, c->r, H, c->scale);
    }
    if (x_next) {
        mark(c, OT_CUDA_PROF_MOE_MATMUL);
        const ot_cuda_moe_lora_term t_d = {a->xa_d, s_d ? lora_B(c, s_d) : NULL, c->r, c->scale};
        ot_cuda_moe_matmul_fwd(s, a->y, act, 0, &w->down, &plan, s_d ? &t_d : NULL);
        mark(c, OT_CUDA_PROF_MOE_ROUTING);
        ot_cuda_moe_combine_fwd(s, x_next, a->y, a->topk_w, &plan, H);
        mark(c, OT_CUDA_PROF_NORM_ROPE);
        ot_cuda_add_bf16(s, x_next, a->h, (size_t)T * H);
    }
}

static void layer_forward(ot_cuda_ctx *c, int l, layer_acts *a, ot_bf16 *x_next, const dev_batch *d,
                          const ot_cuda_kv_cache *kv) {
    attention_block_forward(c, l, a, d, kv);
    moe_block_forward(c, l, a, x_next, d);
}

// ---- one layer backward ---------------------------------------------------------------------------------------
// c->dx holds d loss / d (output of layer l) on entry and d loss / d (input of layer l) on return.
static void layer_backward(ot_cuda_ctx *c, int l, layer_acts *a, const dev_batch *d) {
    const ot_model_config *cfg = &c->m->cfg;
    const ot_cuda_layer_weights *w = &c->m->layers[l];
    const int T = d->T, H = cfg->hidden_size, nh = cfg->num_attention_heads, nkv = cfg->num_key_value_heads,
              D = cfg->head_dim, E = cfg->num_local_experts, K = cfg->num_experts_per_tok, I = cfg->intermediate_size;
    const int Q = nh * D, KV = nkv * D;
    cudaStream_t s = c->stream;
    ot_cuda_moe_plan plan = plan_view(&a->plan, T);
    const ot_lora_slot *s_gu = slot_of(c, l, OT_LORA_GATE_UP), *s_d = slot_of(c, l, OT_LORA_DOWN);
    const int q_lora = slot_of(c, l, OT_LORA_Q) || slot_of(c, l, OT_LORA_K) || slot_of(c, l, OT_LORA_V);
    // Full training: the base weights' gradients (NULL pointers when the base is frozen).
    const ot_cuda_layer_grads *g = c->mg ? &c->mg->layers[l] : NULL;
#define G(f) (g ? g->f : NULL)
    // Kept activations: the shared xn1, xn2 and act hold a later layer's values; redo this layer's where a weight
    // gradient (LoRA, or the base in full training) reads them (input gradients do not) — act always, for the
    // routing weights' gradient. Recomputing the whole layer: the set holds layer l's.
    const int redo = c->opt.recompute != OT_RECOMPUTE_ON;
    ot_cuda_shard_use(c->m, s, l, OT_SHARD_EXPERTS); // sharded base weights: gathered here (else nothing)
    if (redo && (s_gu || g)) {
        mark(c, OT_CUDA_PROF_NORM_ROPE);
        ot_cuda_rmsnorm_fwd(s, a->xn2, a->rstd2, a->h, w->ln2_w, T, H, cfg->rms_norm_eps);
    }
    if (redo) {
        mark(c, OT_CUDA_PROF_MOE_ROUTING);
        ot_cuda_swiglu_fwd(s, a->act, a->gu, plan.n_pairs, I, cfg->swiglu_alpha, cfg->swiglu_limit);
    }

    // MoE block: x_next = h + moe(xn2(h)); dx flows to h unchanged (residual) plus through the MoE.
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    OT_CUDA_CHECK(cudaMemsetAsync(c->dw, 0, sizeof(float) * (size_t)T * K, s));
    mark(c, OT_CUDA_PROF_MOE_ROUTING);
    ot_bf16 *dY = c->dbuf; // [P, H]; reused for the permuted input gradient once dY is consumed
    ot_cuda_moe_combine_bwd(s, dY, NULL, c->dx, NULL, a->topk_w, &plan, H); // dw below, from dact

    // Each expert adapter: its gradients and dxa here, the expansion dxa·A_e added by the input gradient's product.
    if (s_d) {
        mark(c, OT_CUDA_PROF_MOE_LORA);
        ot_cuda_moe_lora_bwd(s, NULL, c->dxa, lora_dA(c, s_d), lora_dB(c, s_d), dY, a->act, 0, a->xa_d,
                             lora_A(c, s_d), lora_B(c, s_d), &plan, I, c->r, H, c->scale);
    }
    mark(c, OT_CUDA_PROF_MOE_MATMUL);
    const ot_cuda_moe_lora_term t_d = {c->dxa, s_d ? lora_A(c, s_d) : NULL, c->r, 1.0f};
    ot_cuda_moe_matmul_bwd(s, c->dact, dY, &w->down, &plan, 0, s_d ? &t_d : NULL);
    if (g) ot_cuda_moe_matmul_bwd_weight(s, g->down, g->down_b, dY, a->act, 0, &w->down, &plan);
    mark(c, OT_CUDA_PROF_MOE_ROUTING);
    // the routing weights' gradient: dout·y from the down projection's input gradient (LoRA's part included)
    ot_cuda_moe_route_grad(s, c->dw, c->dact, a->act, c->dx, w->down.bias, a->topk_w, a->topk_idx, &plan, I, H);
    ot_cuda_swiglu_bwd(s, c->dgu, c->dact, a->gu, plan.n_pairs, I, cfg->swiglu_alpha, cfg->swiglu_limit);
    ot_bf16 *dXp = c->dbuf;
    if (s_gu) {
        mark(c, OT_CUDA_PROF_MOE_LORA);
        ot_cuda_moe_lora_bwd(s, NULL, c->dxa, lora_dA(c, s_gu), lora_dB(c, s_gu), c->dgu, a->xn2, 1, a->xa_gu,
                             lora_A(c, s_gu), lora_B(c, s_gu), &plan, H, c->r, 2 * I, c->scale);
    }
    mark(c, OT_CUDA_PROF_MOE_MATMUL);
    if (g) ot_cuda_moe_matmul_bwd_weight(s, g->gate_up, g->gate_up_b, c->dgu, a->xn2, 1, &w->gate_up, &plan);
    const ot_cuda_moe_lora_term t_gu = {c->dxa, s_gu ? lora_A(c, s_gu) : NULL, c->r, 1.0f};
    ot_cuda_moe_matmul_bwd(s, dXp, c->dgu, &w->gate_up, &plan, 0, s_gu ? &t_gu : NULL);
    zero_bf16(c, c->dxn, (size_t)T * H);
    mark(c, OT_CUDA_PROF_MOE_ROUTING);
    ot_cuda_moe_unpermute_add(s, c->dxn, dXp, &plan, H);
    // Through the routing weights into the router logits, then the (frozen) router into xn2.
    zero_bf16(c, c->dlogits, (size_t)T * E);
    mark(c, OT_CUDA_PROF_MOE_ROUTING);
    ot_cuda_router_topk_bwd(s, c->dlogits, c->dw, a->topk_w, a->topk_idx, T, E, K);
    mark(c, OT_CUDA_PROF_DENSE_MATMUL);
    ot_cuda_matmul_bwd(s, &c->blas, c->dxn, G(router_w), G(router_b), c->dlogits, a->xn2, w->router_w, T, H, E);
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    ot_cuda_rmsnorm_bwd(s, c->dx, G(ln2_w), c->dxn, a->h, w->ln2_w, a->rstd2, T, H);

    // attention block: h = x + o_proj(attention(...))
    ot_cuda_shard_use(c->m, s, l, OT_SHARD_ATTENTION);
    // datt, dq, dk, dv (laid out in this order in the workspace; dq, dk, dv are free again once the layer above
    // has used them): zeroed in one go
    zero_bf16(c, c->datt, (size_t)(c->dv + (size_t)T * KV - c->datt));
    projection_bwd(c, c->datt, G(o_w), G(o_b), c->dx, a->att, w->o_w, T, Q, H);
    lora_group_bwd(c, l, OT_LORA_O, OT_LORA_O, c->datt, &c->dx, a->xa_o, a->xa_hl_o, a->att, T, Q);
    mark(c, OT_CUDA_PROF_ATTENTION);
    ot_cuda_attention_bwd(s, c->dq, c->dk, c->dv, G(sinks), c->datt, a->att, a->lse, a->q, a->k, a->v, w->sinks, d->seg, T,
                          nh, nkv, D, w->sliding ? cfg->sliding_window : 0);
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    ot_cuda_rope_qk_bwd(s, c->dq, c->dk, d->pos, c->m->inv_freq, c->m->attn_factor, T, nh, nkv, D);
    if (redo && (q_lora || g)) ot_cuda_rmsnorm_fwd(s, a->xn1, a->rstd1, a->x, w->ln1_w, T, H, cfg->rms_norm_eps);
    zero_bf16(c, c->dxn, (size_t)T * H);
    projection_bwd(c, c->dxn, G(q_w), G(q_b), c->dq, a->xn1, w->q_w, T, H, Q);
    projection_bwd(c, c->dxn, G(k_w), G(k_b), c->dk, a->xn1, w->k_w, T, H, KV);
    projection_bwd(c, c->dxn, G(v_w), G(v_b), c->dv, a->xn1, w->v_w, T, H, KV);
    ot_bf16 *dqkv[3] = {c->dq, c->dk, c->dv};
    lora_group_bwd(c, l, OT_LORA_Q, OT_LORA_V, c->dxn, dqkv, a->xa_qkv, a->xa_hl_qkv, a->xn1, T, H);
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    ot_cuda_rmsnorm_bwd(s, c->dx, G(ln1_w), c->dxn, a->x, w->ln1_w, a->rstd1, T, H);
#undef G
}

// The activation set layer l uses, with its input pointer in place.
static layer_acts *acts_of(ot_cuda_ctx *c, int l) {
    if (c->opt.recompute != OT_RECOMPUTE_ON) return &c->acts[l];
    c->acts[0].x = c->xin[l];
    return &c->acts[0];
}

// Forward of all layers and the final norm (into c->hf).
static void forward_layers(ot_cuda_ctx *c, const dev_batch *d) {
    const ot_model_config *cfg = &c->m->cfg;
    const int L = cfg->num_hidden_layers, H = cfg->hidden_size;
    if (c->n_compact_seg) { // this pass's split of the attention adapters
        mark(c, OT_CUDA_PROF_LORA);
        ot_cuda_lora_split_params(c->stream, c->params_hl, c->n_lo, c->params_c, c->params, c->compact_seg,
                                  c->n_compact_seg, c->compact_max);
    }
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    if (c->m->shard) ot_cuda_shard_embed(c->m, c->stream, c->xin[0], d->ids, d->T);
    else ot_cuda_embedding_fwd(c->stream, c->xin[0], d->ids, c->m->embed, d->T, H, cfg->vocab_size);
    for (int l = 0; l < L; l++) layer_forward(c, l, acts_of(c, l), c->xin[l + 1], d, NULL);
    c->scratch_layer = c->opt.recompute != OT_RECOMPUTE_OFF ? L - 1 : -1; // what the shared set holds now
    mark(c, OT_CUDA_PROF_NORM_ROPE);
    ot_cuda_rmsnorm_fwd(c->stream, c->hf, c->rstd_f, c->xin[L], c->m->norm_w, d->T, H, cfg->rms_norm_eps);
}

static void backward_layers(ot_cuda_ctx *c, const dev_batch *d) {
    const ot_model_config *cfg = &c->m->cfg;
    const int L = cfg->num_hidden_layers, H = cfg->hidden_size;
    zero_bf16(c, c->dx, (size_t)d->T * H);
    ot_cuda_rmsnorm_bwd(c->stream, c->dx, c->mg ? c->mg->norm_w : NULL, c->dhf, c->xin[L], c->m->norm_w, c->rstd_f,
                        d->T, H);
    for (int l = L - 1; l >= 0; l--) {
        layer_acts *a = acts_of(c, l);
        if (c->opt.recompute != OT_RECOMPUTE_OFF && c->scratch_layer != l) {
            // the same kernels on the same input: the same activations
            if (c->opt.recompute == OT_RECOMPUTE_ON) layer_forward(c, l, a, NULL, d, NULL);
            else attention_block_forward(c, l, a, d, NULL);
            c->scratch_layer = l;
        }
        layer_backward(c, l, a, d);
    }
}

int ot_cuda_forward_backward(ot_cuda_ctx *c, const ot_batch *b, float grad_scale, int backward, ot_err *err) {
    if (b->T < 0 || b->n_targets < 0) return ot_fail(err, "ot_cuda_forward_backward: bad batch (T %d, %d targets)",
                                                     b->T, b->n_targets);
    // Sharded base weights: the gathers are collective, so whether a backward runs must not depend on this rank's
    // targets, and a rank without tokens still makes its pass's gathers.
    const int sharded = c->m->shard != NULL;
    if (sharded)
        ot_cuda_shard_begin_pass(c->m, backward && c->has_lora, c->opt.recompute != OT_RECOMPUTE_OFF,
                                 c->opt.recompute == OT_RECOMPUTE_ON);
    if (b->T == 0) {
        ot_cuda_shard_idle_pass(c->m, c->stream);
        ot_cuda_shard_end_pass(c->m);
        return 0;
    }
    const ot_model_config *cfg = &c->m->cfg;
    reserve(c, b->T, b->n_targets);
    dev_batch d = upload_batch(c, b);
    forward_layers(c, &d);
    const int want_grad = backward && !c->opt.forward_only && (c->has_lora || c->mg) && (d.n > 0 || sharded);
    if (want_grad) zero_bf16(c, c->dhf, (size_t)d.T * cfg->hidden_size);
    mark(c, OT_CUDA_PROF_LM_HEAD);
    if (sharded) // LoRA runs only: full training keeps the whole model on every rank
        ot_cuda_shard_lmhead_xent(c->m, c->stream, &c->blas, c->loss_dev, want_grad ? c->dhf : NULL, c->hf, d.tgt_pos,
                                  d.tgt_label, d.n, d.T, grad_scale);
    else // full training: the head's weight gradient too (with tied embeddings mg->lm_head is the embedding's)
        ot_cuda_lmhead_xent(c->stream, &c->blas, c->loss_dev, want_grad ? c->dhf : NULL,
                            want_grad && c->mg ? c->mg->lm_head : NULL, c->hf, c->m->lm_head, d.tgt_pos, d.tgt_label,
                            d.n, d.T, cfg->hidden_size, cfg->vocab_size, grad_scale);
    if (want_grad) {
        backward_layers(c, &d);
        if (c->n_compact_seg) {
            mark(c, OT_CUDA_PROF_LORA);
            ot_cuda_lora_fold(c->stream, c->grads, c->grads_lo, c->n_lo, c->compact_seg, c->n_compact_seg,
                              c->compact_max);
        }
    }
    ot_cuda_shard_end_pass(c->m);
    return 0;
}

const ot_bf16 *ot_cuda_forward_cached(ot_cuda_ctx *c, const ot_cuda_kv_cache *kv, const int32_t *ids,
                                      const int32_t *slot, const int32_t *pos, int T) {
    if (!c->opt.forward_only) ot_die("ot_cuda_forward_cached: the context was not made forward-only");
    if (c->m->shard) ot_die("ot_cuda_forward_cached: the base weights are sharded; decode with a whole model");
    const ot_model_config *cfg = &c->m->cfg;
    reserve(c, T, 1);
    if (c->n_compact_seg) { // the attention adapters' split, once per upload of the parameters
        if (!c->split_ready) {
            ot_cuda_lora_split_params(c->stream, c->params_hl, c->n_lo, c->params_c, c->params, c->compact_seg,
                                      c->n_compact_seg, c->compact_max);
            c->split_ready = 1;
        }
    }
    dev_batch d = {T, 0, ids, pos, NULL, NULL, NULL, slot};
    ot_bf16 *x = c->xin[0]; // forward-only: every layer in place
    ot_cuda_embedding_fwd(c->stream, x, ids, c->m->embed, T, cfg->hidden_size, cfg->vocab_size);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        layer_acts *a = acts_of(c, l);
        layer_forward(c, l, a, x, &d, kv);
    }
    return x;
}

void ot_cuda_set_model_grads(ot_cuda_ctx *c, const ot_cuda_model_grads *g) { c->mg = g; }
const ot_bf16 *ot_cuda_input_grad(const ot_cuda_ctx *c) { return c->dx; }
cudaStream_t ot_cuda_ctx_stream(const ot_cuda_ctx *c) { return c->stream; }

int ot_cuda_take_loss(ot_cuda_ctx *c, double *loss_sum, ot_err *err) {
    OT_CUDA_CHECK(cudaMemcpyAsync(c->loss_host, c->loss_dev, sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    OT_CUDA_CHECK(cudaMemsetAsync(c->loss_dev, 0, sizeof(double), c->stream));
    if (ot_cuda_check_inputs(c->stream, err)) return -1; // waits for the stream
    *loss_sum = c->loss_host[0];
    return 0;
}

int ot_cuda_logits(ot_cuda_ctx *c, const ot_batch *b, float *logits, ot_err *err) {
    if (b->T == 0) return 0;
    if (c->m->shard)
        return ot_fail(err, "ot_cuda_logits: the base weights are sharded over the ranks; load the model whole "
                            "(ot_cuda_model_load) to write logits");
    const ot_model_config *cfg = &c->m->cfg;
    const int H = cfg->hidden_size, V = cfg->vocab_size;
    reserve(c, b->T, b->n_targets);
    dev_batch d = upload_batch(c, b);
    forward_layers(c, &d);
    // fp32 logits straight from the bf16 head (cuBLAS, fp32 accumulation and output), a block of rows at a time
    // so the device buffer stays bounded whatever T is.
    int rows = (int)(((size_t)64 << 20) / ((size_t)V * sizeof(float)));
    if (rows < 1) rows = 1;
    if (rows > b->T) rows = b->T;
    float *buf = NULL;
    OT_CUDA_CHECK(ot_cuda_malloc_async((void **)&buf, (size_t)rows * V * sizeof(float), c->stream));
    cublasHandle_t hb = (cublasHandle_t)c->blas.blas;
    OT_CUBLAS_CHECK(cublasSetStream(hb, c->stream));
    const float one = 1.0f, zero = 0.0f;
    for (int t0 = 0; t0 < b->T; t0 += rows) {
        int n = b->T - t0 < rows ? b->T - t0 : rows;
        // logits[n, V] row-major = column-major [V, n] = lm_head_cmᵀ (V × H) · hf_cm (H × n)
        OT_CUBLAS_CHECK(cublasGemmEx(hb, CUBLAS_OP_T, CUBLAS_OP_N, V, n, H, &one, c->m->lm_head, CUDA_R_16BF, H,
                                     c->hf + (size_t)t0 * H, CUDA_R_16BF, H, &zero, buf, CUDA_R_32F, V,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        OT_CUDA_CHECK(cudaMemcpyAsync(logits + (size_t)t0 * V, buf, (size_t)n * V * sizeof(float),
                                      cudaMemcpyDeviceToHost, c->stream));
    }
    OT_CUDA_CHECK(cudaFreeAsync(buf, c->stream));
    return ot_cuda_check_inputs(c->stream, err);
}

#endif // OT_HAVE_CUDA
