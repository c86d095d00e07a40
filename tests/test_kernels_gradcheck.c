// Finite-difference gradient checks for every CPU op with a backward, on the double (`_f64`) instantiation.
//
// For each op: a scalar loss L = Σ_i w_i · out_i with fixed random w; the analytic gradient comes from the
// backward called with dout = w, the reference from central differences (L(x + h) − L(x − h)) / 2h, h = 1e-5.
// In double the central difference is accurate to about h²·|L'''| + 1e-16·|L|/h ≈ 1e-10 relative here, so the
// stated tolerance of 1e-6 (norm-wise relative error over the whole gradient) leaves a wide margin while any
// real mistake shows up as 1e-3 or more. Shapes are small and odd so no loop can hide behind a power of two.
//
// Every backward is checked on gradient buffers pre-filled with random values: the contract is that backward
// ACCUMULATES, so the check compares (buffer after − buffer before) with the finite differences. Each op is also
// called once more with other gradient pointers NULL, to show the wanted gradient does not depend on them.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/ot_common.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

#define FD_STEP 1e-5
#define GRAD_TOL 1e-6

static ot_rng rng;

static double *rand_vec(size_t n, double lo, double hi) {
    double *x = ot_malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * ot_rng_uniform(&rng);
    return x;
}

static double *copy_vec(const double *x, size_t n) {
    double *y = ot_malloc(n * sizeof(double));
    memcpy(y, x, n * sizeof(double));
    return y;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);

// Central differences of f with respect to every element of x (x is part of what f reads through ctx).
static double *fd_grad(double *x, size_t n, loss_fn f, void *ctx) {
    double *g = ot_malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + FD_STEP;
        double lp = f(ctx);
        x[i] = x0 - FD_STEP;
        double lm = f(ctx);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * FD_STEP);
    }
    return g;
}

// The backward added its gradient to `accumulated`, which held `before`; compare the difference with FD.
static void check_grad(const char *what, const double *accumulated, const double *before, const double *fd, size_t n) {
    double *got = ot_malloc(n * sizeof(double));
    double fd_norm = 0;
    for (size_t i = 0; i < n; i++) {
        got[i] = accumulated[i] - before[i];
        fd_norm += fd[i] * fd[i];
    }
    // A gradient that is zero everywhere would make the comparison meaningless.
    CHECK(sqrt(fd_norm) > 1e-3, "%s: the finite-difference gradient is ~0 (norm %g); the case tests nothing", what,
          sqrt(fd_norm));
    ot_check_close(what, ot_rel_err_f64(got, fd, n), GRAD_TOL);
    free(got);
}

// A NULL-skipping call must give exactly what the full call gave for the gradient that was asked for.
static void check_same(const char *what, const double *a, const double *b, size_t n) {
    CHECK(memcmp(a, b, n * sizeof(double)) == 0, "%s: gradient changed when other gradients were NULL", what);
}

// ---- embedding ---------------------------------------------------------------------------------------------------
typedef struct {
    int T, H;
    int32_t *ids;
    double *table, *w, *out;
} emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = p;
    ot_embedding_fwd_f64(c->out, c->ids, c->table, c->T, c->H);
    return dot(c->w, c->out, (size_t)c->T * c->H);
}
static void test_embedding(void) {
    int V = 7, T = 9, H = 5;
    int32_t ids[9] = {3, 0, 6, 3, 2, 3, 5, 0, 1}; // repeats: the gradients of one row must add up
    emb_ctx c = {T,
                 H,
                 ids,
                 rand_vec((size_t)V * H, -1, 1),
                 rand_vec((size_t)T * H, -1, 1),
                 ot_malloc((size_t)T * H * sizeof(double))};
    double *fd = fd_grad(c.table, (size_t)V * H, emb_loss, &c);
    double *before = rand_vec((size_t)V * H, -1, 1), *g = copy_vec(before, (size_t)V * H);
    ot_embedding_bwd_f64(g, c.w, ids, T, H);
    check_grad("embedding dtable", g, before, fd, (size_t)V * H);
    ot_embedding_bwd_f64(NULL, c.w, ids, T, H); // NULL: nothing to do, must not crash
    free(fd), free(before), free(g), free(c.table), free(c.w), free(c.out);
}

// ---- RMSNorm -----------------------------------------------------------------------------------------------------
typedef struct {
    int T, H;
    double *x, *wt, *w, *y, *rstd;
} rms_ctx;
static double rms_loss(void *p) {
    rms_ctx *c = p;
    ot_rmsnorm_fwd_f64(c->y, c->rstd, c->x, c->wt, c->T, c->H, 1e-5f);
    return dot(c->w, c->y, (size_t)c->T * c->H);
}
static void test_rmsnorm(void) {
    int T = 5, H = 7;
    size_t nx = (size_t)T * H;
    rms_ctx c = {T,
                 H,
                 rand_vec(nx, -2, 2),
                 rand_vec((size_t)H, 0.5, 1.5),
                 rand_vec(nx, -1, 1),
                 ot_malloc(nx * sizeof(double)),
                 ot_malloc((size_t)T * sizeof(double))};
    double *fdx = fd_grad(c.x, nx, rms_loss, &c), *fdw = fd_grad(c.wt, (size_t)H, rms_loss, &c);
    rms_loss(&c); // leaves rstd of the unperturbed input for backward
    double *bx = rand_vec(nx, -1, 1), *bw = rand_vec((size_t)H, -1, 1);
    double *gx = copy_vec(bx, nx), *gw = copy_vec(bw, (size_t)H);
    ot_rmsnorm_bwd_f64(gx, gw, c.w, c.x, c.wt, c.rstd, T, H);
    check_grad("rmsnorm dx", gx, bx, fdx, nx);
    check_grad("rmsnorm dw", gw, bw, fdw, (size_t)H);
    double *gx2 = copy_vec(bx, nx), *gw2 = copy_vec(bw, (size_t)H);
    ot_rmsnorm_bwd_f64(gx2, NULL, c.w, c.x, c.wt, c.rstd, T, H);
    ot_rmsnorm_bwd_f64(NULL, gw2, c.w, c.x, c.wt, c.rstd, T, H);
    check_same("rmsnorm dx (dw NULL)", gx2, gx, nx);
    check_same("rmsnorm dw (dx NULL)", gw2, gw, (size_t)H);
    free(fdx), free(fdw), free(bx), free(bw), free(gx), free(gw), free(gx2), free(gw2);
    free(c.x), free(c.wt), free(c.w), free(c.y), free(c.rstd);
}

// ---- dense matmul ------------------------------------------------------------------------------------------------
typedef struct {
    int T, in, out;
    double *x, *W, *b, *w, *y;
} mm_ctx;
static double mm_loss(void *p) {
    mm_ctx *c = p;
    ot_matmul_fwd_f64(c->y, c->x, c->W, c->b, c->T, c->in, c->out);
    return dot(c->w, c->y, (size_t)c->T * c->out);
}
static void test_matmul(void) {
    int T = 11, in = 7, out = 9; // T > the kernel's token tile of 8: a full tile and a partial one
    size_t nx = (size_t)T * in, nW = (size_t)out * in, ny = (size_t)T * out;
    mm_ctx c = {T,
                in,
                out,
                rand_vec(nx, -1, 1),
                rand_vec(nW, -1, 1),
                rand_vec((size_t)out, -1, 1),
                rand_vec(ny, -1, 1),
                ot_malloc(ny * sizeof(double))};
    double *fdx = fd_grad(c.x, nx, mm_loss, &c), *fdW = fd_grad(c.W, nW, mm_loss, &c);
    double *fdb = fd_grad(c.b, (size_t)out, mm_loss, &c);
    double *bx = rand_vec(nx, -1, 1), *bW = rand_vec(nW, -1, 1), *bb = rand_vec((size_t)out, -1, 1);
    double *gx = copy_vec(bx, nx), *gW = copy_vec(bW, nW), *gb = copy_vec(bb, (size_t)out);
    ot_matmul_bwd_f64(gx, gW, gb, c.w, c.x, c.W, T, in, out);
    check_grad("matmul dx", gx, bx, fdx, nx);
    check_grad("matmul dW", gW, bW, fdW, nW);
    check_grad("matmul db", gb, bb, fdb, (size_t)out);
    double *gx2 = copy_vec(bx, nx), *gW2 = copy_vec(bW, nW);
    ot_matmul_bwd_f64(gx2, NULL, NULL, c.w, c.x, c.W, T, in, out);
    ot_matmul_bwd_f64(NULL, gW2, NULL, c.w, c.x, c.W, T, in, out);
    check_same("matmul dx (dW, db NULL)", gx2, gx, nx);
    check_same("matmul dW (dx, db NULL)", gW2, gW, nW);
    // Without a bias the forward must be the biased one minus b.
    double *y_nob = ot_malloc(ny * sizeof(double));
    mm_loss(&c);
    ot_matmul_fwd_f64(y_nob, c.x, c.W, NULL, T, in, out);
    double max_diff = 0;
    for (int t = 0; t < T; t++)
        for (int o = 0; o < out; o++)
            max_diff = fmax(max_diff, fabs(y_nob[(size_t)t * out + o] + c.b[o] - c.y[(size_t)t * out + o]));
    CHECK(max_diff < 1e-14, "matmul without bias differs from with bias minus b by %g", max_diff);
    free(fdx), free(fdW), free(fdb), free(bx), free(bW), free(bb), free(gx), free(gW), free(gb), free(gx2), free(gW2),
        free(y_nob);
    free(c.x), free(c.W), free(c.b), free(c.w), free(c.y);
}

// ---- LoRA --------------------------------------------------------------------------------------------------------
typedef struct {
    int T, in, r, out;
    float scale;
    double *x, *A, *B, *w, *y0, *y, *xa;
} lora_ctx;
static double lora_loss(void *p) {
    lora_ctx *c = p;
    memcpy(c->y, c->y0, (size_t)c->T * c->out * sizeof(double)); // the forward adds onto the base output
    ot_lora_fwd_f64(c->y, c->xa, c->x, c->A, c->B, c->T, c->in, c->r, c->out, c->scale);
    return dot(c->w, c->y, (size_t)c->T * c->out);
}
static void test_lora(void) {
    int T = 5, in = 7, r = 3, out = 6;
    size_t nx = (size_t)T * in, nA = (size_t)r * in, nB = (size_t)out * r, ny = (size_t)T * out;
    lora_ctx c = {T,
                  in,
                  r,
                  out,
                  1.75f,
                  rand_vec(nx, -1, 1),
                  rand_vec(nA, -1, 1),
                  rand_vec(nB, -1, 1),
                  rand_vec(ny, -1, 1),
                  rand_vec(ny, -1, 1),
                  ot_malloc(ny * sizeof(double)),
                  ot_malloc((size_t)T * r * sizeof(double))};
    double *fdx = fd_grad(c.x, nx, lora_loss, &c), *fdA = fd_grad(c.A, nA, lora_loss, &c);
    double *fdB = fd_grad(c.B, nB, lora_loss, &c);
    lora_loss(&c); // xa of the unperturbed input
    double *bx = rand_vec(nx, -1, 1), *bA = rand_vec(nA, -1, 1), *bB = rand_vec(nB, -1, 1);
    double *gx = copy_vec(bx, nx), *gA = copy_vec(bA, nA), *gB = copy_vec(bB, nB);
    ot_lora_bwd_f64(gx, gA, gB, c.w, c.x, c.xa, c.A, c.B, T, in, r, out, c.scale);
    check_grad("lora dx", gx, bx, fdx, nx);
    check_grad("lora dA", gA, bA, fdA, nA);
    check_grad("lora dB", gB, bB, fdB, nB);
    double *gx2 = copy_vec(bx, nx), *gA2 = copy_vec(bA, nA), *gB2 = copy_vec(bB, nB);
    ot_lora_bwd_f64(gx2, NULL, NULL, c.w, c.x, c.xa, c.A, c.B, T, in, r, out, c.scale);
    ot_lora_bwd_f64(NULL, gA2, NULL, c.w, c.x, c.xa, c.A, c.B, T, in, r, out, c.scale);
    ot_lora_bwd_f64(NULL, NULL, gB2, c.w, c.x, c.xa, c.A, c.B, T, in, r, out, c.scale);
    check_same("lora dx alone", gx2, gx, nx);
    check_same("lora dA alone", gA2, gA, nA);
    check_same("lora dB alone", gB2, gB, nB);
    free(fdx), free(fdA), free(fdB), free(bx), free(bA), free(bB), free(gx), free(gA), free(gB), free(gx2), free(gA2),
        free(gB2);
    free(c.x), free(c.A), free(c.B), free(c.w), free(c.y0), free(c.y), free(c.xa);
}

// ---- RoPE --------------------------------------------------------------------------------------------------------
typedef struct {
    int T, nh, D;
    int32_t *pos;
    float *inv_freq, attn;
    double *x, *w, *buf;
} rope_ctx;
static double rope_loss(void *p) {
    rope_ctx *c = p;
    size_t n = (size_t)c->T * c->nh * c->D;
    memcpy(c->buf, c->x, n * sizeof(double)); // the op works in place
    ot_rope_fwd_f64(c->buf, c->pos, c->inv_freq, c->attn, c->T, c->nh, c->D);
    return dot(c->w, c->buf, n);
}
static void test_rope(void) {
    int T = 5, nh = 3, D = 10;
    size_t n = (size_t)T * nh * D;
    int32_t pos[5] = {0, 1, 2, 17, 3}; // packed: a second sequence may restart anywhere
    float inv_freq[5];
    ot_rope_params rp = {.theta = 10000,
                         .factor = 4,
                         .beta_fast = 32,
                         .beta_slow = 1,
                         .original_max_position_embeddings = 64,
                         .truncate = 0,
                         .attention_factor = 0};
    float attn = ot_rope_inv_freq(inv_freq, D, &rp);
    rope_ctx c = {T, nh, D, pos, inv_freq, attn, rand_vec(n, -1, 1), rand_vec(n, -1, 1), ot_malloc(n * sizeof(double))};
    double *fd = fd_grad(c.x, n, rope_loss, &c);
    // rope backward transforms the output gradient in place (it does not accumulate): start from w itself.
    double *zero = ot_calloc(n, sizeof(double)), *g = copy_vec(c.w, n);
    ot_rope_bwd_f64(g, pos, inv_freq, attn, T, nh, D);
    check_grad("rope dx", g, zero, fd, n);
    free(fd), free(zero), free(g), free(c.x), free(c.w), free(c.buf);
}

// ---- attention ---------------------------------------------------------------------------------------------------
typedef struct {
    int T, nh, nkv, D, window;
    int32_t *seg;
    double *q, *k, *v, *sinks, *w, *out, *lse;
} attn_ctx;
static double attn_loss(void *p) {
    attn_ctx *c = p;
    ot_attention_fwd_f64(c->out, c->lse, c->q, c->k, c->v, c->sinks, c->seg, c->T, c->nh, c->nkv, c->D, c->window);
    return dot(c->w, c->out, (size_t)c->T * c->nh * c->D);
}
static void test_attention_case(const char *name, const int *seq_lens, int n_seq, int nh, int nkv, int D, int window) {
    int T = 0;
    for (int s = 0; s < n_seq; s++)
        T += seq_lens[s];
    int32_t *seg = ot_malloc((size_t)T * sizeof(int32_t));
    for (int s = 0, t = 0; s < n_seq; s++)
        for (int j = 0; j < seq_lens[s]; j++, t++)
            seg[t] = t - j;
    size_t nq = (size_t)T * nh * D, nk = (size_t)T * nkv * D;
    // Scores of order 1 and sinks from −1 to 2 keep the sink's share of each row between a few percent and most
    // of it, so its gradient matters.
    attn_ctx c = {T,
                  nh,
                  nkv,
                  D,
                  window,
                  seg,
                  rand_vec(nq, -1.5, 1.5),
                  rand_vec(nk, -1.5, 1.5),
                  rand_vec(nk, -1, 1),
                  rand_vec((size_t)nh, -1, 2),
                  rand_vec(nq, -1, 1),
                  ot_malloc(nq * sizeof(double)),
                  ot_malloc((size_t)T * nh * sizeof(double))};
    double *fdq = fd_grad(c.q, nq, attn_loss, &c), *fdk = fd_grad(c.k, nk, attn_loss, &c);
    double *fdv = fd_grad(c.v, nk, attn_loss, &c), *fds = fd_grad(c.sinks, (size_t)nh, attn_loss, &c);
    attn_loss(&c); // out and lse of the unperturbed inputs
    double *bq = rand_vec(nq, -1, 1), *bk = rand_vec(nk, -1, 1), *bv = rand_vec(nk, -1, 1);
    double *bs = rand_vec((size_t)nh, -1, 1);
    double *gq = copy_vec(bq, nq), *gk = copy_vec(bk, nk), *gv = copy_vec(bv, nk), *gs = copy_vec(bs, (size_t)nh);
    ot_attention_bwd_f64(gq, gk, gv, gs, c.w, c.out, c.lse, c.q, c.k, c.v, c.sinks, seg, T, nh, nkv, D, window);
    char what[128];
    snprintf(what, sizeof what, "attention %s dq", name);
    check_grad(what, gq, bq, fdq, nq);
    snprintf(what, sizeof what, "attention %s dk", name);
    check_grad(what, gk, bk, fdk, nk);
    snprintf(what, sizeof what, "attention %s dv", name);
    check_grad(what, gv, bv, fdv, nk);
    snprintf(what, sizeof what, "attention %s dsinks", name);
    check_grad(what, gs, bs, fds, (size_t)nh);
    double *gq2 = copy_vec(bq, nq), *gk2 = copy_vec(bk, nk), *gv2 = copy_vec(bv, nk), *gs2 = copy_vec(bs, (size_t)nh);
    ot_attention_bwd_f64(gq2, NULL, NULL, NULL, c.w, c.out, c.lse, c.q, c.k, c.v, c.sinks, seg, T, nh, nkv, D, window);
    ot_attention_bwd_f64(NULL, gk2, NULL, NULL, c.w, c.out, c.lse, c.q, c.k, c.v, c.sinks, seg, T, nh, nkv, D, window);
    ot_attention_bwd_f64(NULL, NULL, gv2, NULL, c.w, c.out, c.lse, c.q, c.k, c.v, c.sinks, seg, T, nh, nkv, D, window);
    ot_attention_bwd_f64(NULL, NULL, NULL, gs2, c.w, c.out, c.lse, c.q, c.k, c.v, c.sinks, seg, T, nh, nkv, D, window);
    snprintf(what, sizeof what, "attention %s single gradients", name);
    check_same(what, gq2, gq, nq);
    check_same(what, gk2, gk, nk);
    check_same(what, gv2, gv, nk);
    check_same(what, gs2, gs, (size_t)nh);
    free(fdq), free(fdk), free(fdv), free(fds), free(bq), free(bk), free(bv), free(bs), free(gq), free(gk), free(gv),
        free(gs), free(gq2), free(gk2), free(gv2), free(gs2);
    free(c.q), free(c.k), free(c.v), free(c.sinks), free(c.w), free(c.out), free(c.lse), free(seg);
}
static void test_attention(void) {
    // Three packed sequences; a window of 3 is shorter than the 5-token one; 6 query heads on 2 kv heads (GQA 3).
    int lens_a[3] = {4, 5, 2};
    test_attention_case("packed+window3+gqa3", lens_a, 3, 6, 2, 5, 3);
    // Two sequences, full causal attention, GQA 2, another odd head dim.
    int lens_b[2] = {6, 3};
    test_attention_case("packed+causal+gqa2", lens_b, 2, 4, 2, 7, 0);
}

// ---- router ------------------------------------------------------------------------------------------------------
typedef struct {
    int T, E, k;
    int32_t *idx;
    double *logits, *w, *wts;
} router_ctx;
static double router_loss(void *p) {
    router_ctx *c = p;
    ot_router_topk_fwd_f64(c->idx, c->wts, c->logits, c->T, c->E, c->k);
    return dot(c->w, c->wts, (size_t)c->T * c->k);
}
static void test_router(void) {
    int T = 5, E = 7, k = 3;
    size_t nl = (size_t)T * E;
    // Logits are a shuffled ladder with steps of 0.3 (plus small noise): the top-k selection cannot change under a
    // perturbation of 1e-5, so the loss is smooth where it is differentiated.
    double *logits = ot_malloc(nl * sizeof(double));
    for (int t = 0; t < T; t++) {
        int perm[7] = {0, 1, 2, 3, 4, 5, 6};
        for (int i = E - 1; i > 0; i--) {
            int j = (int)(ot_rng_uniform(&rng) * (i + 1));
            int tmp = perm[i];
            perm[i] = perm[j], perm[j] = tmp;
        }
        for (int e = 0; e < E; e++)
            logits[(size_t)t * E + e] = -1.0 + 0.3 * perm[e] + 0.05 * ot_rng_uniform(&rng);
    }
    router_ctx c = {T,
                    E,
                    k,
                    ot_malloc((size_t)T * k * sizeof(int32_t)),
                    logits,
                    rand_vec((size_t)T * k, -1, 1),
                    ot_malloc((size_t)T * k * sizeof(double))};
    double *fd = fd_grad(c.logits, nl, router_loss, &c);
    router_loss(&c);
    double *before = rand_vec(nl, -1, 1), *g = copy_vec(before, nl);
    ot_router_topk_bwd_f64(g, c.w, c.wts, c.idx, T, E, k);
    check_grad("router dlogits", g, before, fd, nl);
    free(fd), free(before), free(g), free(c.idx), free(c.logits), free(c.w), free(c.wts);
}

// ---- clamped SwiGLU ----------------------------------------------------------------------------------------------
typedef struct {
    int n, I;
    float alpha, limit;
    double *gu, *w, *act;
} swiglu_ctx;
static double swiglu_loss(void *p) {
    swiglu_ctx *c = p;
    ot_swiglu_fwd_f64(c->act, c->gu, c->n, c->I, c->alpha, c->limit);
    return dot(c->w, c->act, (size_t)c->n * c->I);
}
static void test_swiglu(void) {
    int n = 3, I = 7;
    float alpha = 1.702f, limit = 7.0f;
    size_t ngu = (size_t)n * 2 * I;
    // Values in [−11, 11] so both clamps are hit, but kept at least 0.05 from ±limit, where the derivative jumps
    // and a central difference would straddle the kink.
    double *gu = ot_malloc(ngu * sizeof(double));
    int gate_over = 0, up_over = 0, up_under = 0;
    for (size_t i = 0; i < ngu; i++) {
        double x;
        do
            x = -11 + 22 * ot_rng_uniform(&rng);
        while (fabs(fabs(x) - limit) < 0.05);
        gu[i] = x;
        if (i % 2 == 0)
            gate_over += x > limit;
        else
            up_over += x > limit, up_under += x < -limit;
    }
    CHECK(gate_over > 0 && up_over > 0 && up_under > 0,
          "swiglu inputs do not reach every clamp (gate > limit %d, up > limit %d, up < -limit %d)", gate_over, up_over,
          up_under);
    swiglu_ctx c = {n, I, alpha, limit, gu, rand_vec((size_t)n * I, -1, 1), ot_malloc((size_t)n * I * sizeof(double))};
    double *fd = fd_grad(c.gu, ngu, swiglu_loss, &c);
    double *before = rand_vec(ngu, -1, 1), *g = copy_vec(before, ngu);
    ot_swiglu_bwd_f64(g, c.w, c.gu, n, I, alpha, limit);
    check_grad("swiglu dgu", g, before, fd, ngu);
    // Clamped inputs pass no gradient (the FD agrees, but say it outright).
    int leaked = 0;
    for (size_t i = 0; i < ngu; i++) {
        int clamped = i % 2 == 0 ? gu[i] > limit : fabs(gu[i]) > limit;
        if (clamped && g[i] != before[i])
            leaked++;
    }
    CHECK(leaked == 0, "swiglu: %d clamped inputs received gradient", leaked);
    free(fd), free(before), free(g), free(c.gu), free(c.w), free(c.act);
}

// ---- MoE combine: out[t] = Σ_slot w[t, slot] · y[row of (t, slot)] -------------------------------------------
typedef struct {
    int T, k, H;
    int32_t *perm, *inv;
    double *y, *wts, *w, *out;
} combine_ctx;
static double combine_loss(void *p) {
    combine_ctx *c = p;
    ot_moe_combine_fwd_f64(c->out, c->y, c->wts, c->inv, c->T, c->k, c->H);
    return dot(c->w, c->out, (size_t)c->T * c->H);
}
static void test_moe_combine(void) {
    const int T = 5, k = 3, E = 4, H = 6, n = T * k;
    int32_t idx[5 * 3] = {2, 0, 1, 3, 2, 0, 1, 0, 3, 0, 2, 1, 3, 1, 2}; // every expert used, none twice per token
    combine_ctx c = {T, k, H, ot_malloc(n * sizeof(int32_t)), ot_malloc(n * sizeof(int32_t)),
                     rand_vec((size_t)n * H, -1, 1), rand_vec(n, 0, 1), rand_vec((size_t)T * H, -1, 1),
                     ot_malloc((size_t)T * H * sizeof(double))};
    int32_t off[5];
    ot_moe_plan(off, c.perm, c.inv, idx, n, E);
    double *fd_y = fd_grad(c.y, (size_t)n * H, combine_loss, &c), *fd_w = fd_grad(c.wts, n, combine_loss, &c);
    // dy is the experts' own buffer (overwritten); dw accumulates
    double *dy = rand_vec((size_t)n * H, -1, 1), *zeros = ot_calloc((size_t)n * H, sizeof(double));
    double *before = rand_vec(n, -1, 1), *dw = copy_vec(before, n);
    ot_moe_combine_bwd_f64(dy, dw, c.w, c.y, c.wts, c.perm, n, k, H);
    check_grad("moe_combine dy", dy, zeros, fd_y, (size_t)n * H);
    check_grad("moe_combine dw", dw, before, fd_w, n);
    double *dy2 = ot_malloc((size_t)n * H * sizeof(double));
    ot_moe_combine_bwd_f64(dy2, NULL, c.w, c.y, c.wts, c.perm, n, k, H);
    check_same("moe_combine dy without dw", dy2, dy, (size_t)n * H);
    free(fd_y), free(fd_w), free(dy), free(dy2), free(zeros), free(before), free(dw);
    free(c.perm), free(c.inv), free(c.y), free(c.wts), free(c.w), free(c.out);
}

// ---- the routing weights' gradient from the down projection's input gradient -----------------------------------
// y[p] = W_e·act[p] + b_e (a linear down projection per expert), out = combine(y, w); the gradient of the
// weights w, made by ot_moe_route_grad from act and dact = w·W_eᵀ·dout, against finite differences of the loss.
typedef struct {
    int T, k, E, I, H;
    int32_t *idx, *perm, *inv;
    double *act, *W, *b, *wts, *w, *y, *out;
} route_ctx;
static void route_down(route_ctx *c) {
    for (int p = 0; p < c->T * c->k; p++) {
        const int e = c->idx[c->perm[p]];
        for (int h = 0; h < c->H; h++)
            c->y[(size_t)p * c->H + h] = c->b[(size_t)e * c->H + h] +
                                         dot(c->W + ((size_t)e * c->H + h) * c->I, c->act + (size_t)p * c->I, c->I);
    }
}
static double route_loss(void *p) {
    route_ctx *c = p;
    route_down(c);
    ot_moe_combine_fwd_f64(c->out, c->y, c->wts, c->inv, c->T, c->k, c->H);
    return dot(c->w, c->out, (size_t)c->T * c->H);
}
static void test_moe_route_grad(void) {
    const int T = 5, k = 3, E = 4, I = 7, H = 6, n = T * k;
    int32_t idx[5 * 3] = {2, 0, 1, 3, 2, 0, 1, 0, 3, 0, 2, 1, 3, 1, 2};
    route_ctx c = {T, k, E, I, H, idx, ot_malloc(n * sizeof(int32_t)), ot_malloc(n * sizeof(int32_t)),
                   rand_vec((size_t)n * I, -1, 1), rand_vec((size_t)E * H * I, -1, 1), rand_vec((size_t)E * H, -1, 1),
                   rand_vec(n, 0.05, 1), rand_vec((size_t)T * H, -1, 1), ot_malloc((size_t)n * H * sizeof(double)),
                   ot_malloc((size_t)T * H * sizeof(double))};
    int32_t off[5];
    ot_moe_plan(off, c.perm, c.inv, idx, n, E);
    const int zero_q = 7; // a pair whose weight is exactly 0: nothing of it reaches the router
    c.wts[zero_q] = 0;
    double *fd = fd_grad(c.wts, n, route_loss, &c);
    fd[zero_q] = 0;
    // dact[p] = w[q] · W_eᵀ · dout[t], as the down projection's backward gives it
    double *dact = ot_malloc((size_t)n * I * sizeof(double));
    for (int p = 0; p < n; p++) {
        const int q = c.perm[p], e = idx[q];
        for (int i = 0; i < I; i++) {
            double s = 0;
            for (int h = 0; h < H; h++) s += c.W[((size_t)e * H + h) * I + i] * c.w[(size_t)(q / k) * H + h];
            dact[(size_t)p * I + i] = c.wts[q] * s;
        }
    }
    double *before = rand_vec(n, -1, 1), *dw = copy_vec(before, n);
    ot_moe_route_grad_f64(dw, dact, c.act, c.w, c.b, c.wts, idx, c.perm, n, k, I, H);
    check_grad("moe_route_grad dw", dw, before, fd, n);
    CHECK(dw[zero_q] == before[zero_q], "moe_route_grad: the pair of weight 0 changed its dw");
    free(fd), free(dact), free(before), free(dw);
    free(c.perm), free(c.inv), free(c.act), free(c.W), free(c.b), free(c.wts), free(c.w), free(c.y), free(c.out);
}

// ---- expert matmul (dense float weights and MXFP4) -----------------------------------------------------------
typedef struct {
    int n;
    const ot_expert_weight *W;
    int e;
    const float *bias;
    double *x, *w, *y;
} expert_ctx;
static double expert_loss(void *p) {
    expert_ctx *c = p;
    ot_expert_matmul_fwd_f64(c->y, c->x, c->W, c->e, c->bias, c->n);
    return dot(c->w, c->y, (size_t)c->n * c->W->rows);
}
static void test_expert_case(const char *name, const ot_expert_weight *W, int e, const float *bias, int n) {
    size_t nx = (size_t)n * W->cols, ny = (size_t)n * W->rows;
    expert_ctx c = {n, W, e, bias, rand_vec(nx, -1, 1), rand_vec(ny, -1, 1), ot_malloc(ny * sizeof(double))};
    double *fd = fd_grad(c.x, nx, expert_loss, &c);
    double *before = rand_vec(nx, -1, 1), *g = copy_vec(before, nx);
    ot_expert_matmul_bwd_f64(g, c.w, W, e, n);
    char what[128];
    snprintf(what, sizeof what, "expert matmul %s dx", name);
    check_grad(what, g, before, fd, nx);
    ot_expert_matmul_bwd_f64(NULL, c.w, W, e, n);
    free(fd), free(before), free(g), free(c.x), free(c.w), free(c.y);
}
static void test_experts(void) {
    int E = 3, rows = 5, cols = 7;
    float *dense = ot_malloc((size_t)E * rows * cols * sizeof(float));
    for (size_t i = 0; i < (size_t)E * rows * cols; i++)
        dense[i] = (float)(ot_rng_uniform(&rng) * 2 - 1);
    float bias[5] = {0.1f, -0.2f, 0.3f, 0.0f, 0.5f};
    ot_expert_weight Wd = {.kind = OT_EXPERT_DENSE, .n_experts = E, .rows = rows, .cols = cols, .dense = dense};
    test_expert_case("dense", &Wd, 1, bias, 4);
    test_expert_case("dense no bias", &Wd, 2, NULL, 3);

    int rq = 3, cq = 64; // MXFP4 needs whole groups of 32 along the input
    size_t ng = (size_t)E * rq * (cq / 32);
    uint8_t *blocks = ot_malloc(ng * 16), *scales = ot_malloc(ng);
    for (size_t i = 0; i < ng * 16; i++)
        blocks[i] = (uint8_t)(ot_rng_u64(&rng) & 0xff);
    for (size_t i = 0; i < ng; i++)
        scales[i] = (uint8_t)(124 + ot_rng_u64(&rng) % 5);
    ot_expert_weight Wq = {
        .kind = OT_EXPERT_MXFP4, .n_experts = E, .rows = rq, .cols = cq, .blocks = blocks, .scales = scales};
    test_expert_case("mxfp4", &Wq, 2, bias, 5);
    free(dense), free(blocks), free(scales);
}

// ---- dense expert weight gradient (full training) -------------------------------------------------------------
// The expert weights are float even in the double build, so the finite differences perturb floats. The weights
// and biases are multiples of 2^-12 in [-1, 1] and the step is 2^-8: every perturbed value is exact in float, and
// the loss is linear in W and b, so the central difference is exact up to double rounding (same 1e-6 tolerance).
#define EXPERT_W_STEP (1.0 / 256)
static double expert_w_fd(float *v, size_t i, expert_ctx *c) {
    float v0 = v[i];
    v[i] = (float)(v0 + EXPERT_W_STEP);
    double lp = expert_loss(c);
    v[i] = (float)(v0 - EXPERT_W_STEP);
    double lm = expert_loss(c);
    v[i] = v0;
    return (lp - lm) / (2 * EXPERT_W_STEP);
}
static void test_expert_weight_grad(void) {
    int E = 3, rows = 5, cols = 7, e = 1, n = 4;
    size_t nw = (size_t)E * rows * cols, ne = (size_t)rows * cols;
    float *dense = ot_malloc(nw * sizeof(float)), bias[3 * 5];
    for (size_t i = 0; i < nw; i++)
        dense[i] = (float)((double)((int)(ot_rng_u64(&rng) % 8193) - 4096) / 4096.0);
    for (int i = 0; i < E * rows; i++)
        bias[i] = (float)((double)((int)(ot_rng_u64(&rng) % 8193) - 4096) / 4096.0);
    ot_expert_weight W = {.kind = OT_EXPERT_DENSE, .n_experts = E, .rows = rows, .cols = cols, .dense = dense};
    size_t nx = (size_t)n * cols, ny = (size_t)n * rows;
    expert_ctx c = {n, &W, e, bias + e * rows, rand_vec(nx, -1, 1), rand_vec(ny, -1, 1), ot_malloc(ny * sizeof(double))};
    double *fdW = ot_malloc(ne * sizeof(double)), *fdb = ot_malloc((size_t)rows * sizeof(double));
    for (size_t i = 0; i < ne; i++)
        fdW[i] = expert_w_fd(dense + (size_t)e * ne, i, &c);
    for (int i = 0; i < rows; i++)
        fdb[i] = expert_w_fd(bias + e * rows, (size_t)i, &c);
    double *bW = rand_vec(ne, -1, 1), *bb = rand_vec((size_t)rows, -1, 1);
    double *gW = copy_vec(bW, ne), *gb = copy_vec(bb, (size_t)rows);
    ot_expert_matmul_bwd_weight_f64(gW, gb, c.w, c.x, &W, n);
    check_grad("expert weight grad dW", gW, bW, fdW, ne);
    check_grad("expert weight grad db", gb, bb, fdb, (size_t)rows);
    double *gW2 = copy_vec(bW, ne), *gb2 = copy_vec(bb, (size_t)rows);
    ot_expert_matmul_bwd_weight_f64(gW2, NULL, c.w, c.x, &W, n);
    ot_expert_matmul_bwd_weight_f64(NULL, gb2, c.w, c.x, &W, n);
    check_same("expert weight grad dW (db NULL)", gW2, gW, ne);
    check_same("expert weight grad db (dW NULL)", gb2, gb, (size_t)rows);
    free(dense), free(c.x), free(c.w), free(c.y), free(fdW), free(fdb), free(bW), free(bb), free(gW), free(gb);
    free(gW2), free(gb2);
}

// ---- lm head + cross-entropy ---------------------------------------------------------------------------------
typedef struct {
    int n, H, V;
    float grad_scale;
    int32_t *pos, *label;
    double *h, *Wlm;
} xent_ctx;
static double xent_loss(void *p) {
    xent_ctx *c = p;
    return c->grad_scale * ot_lmhead_xent_f64(NULL, NULL, c->h, c->Wlm, c->pos, c->label, c->n, c->H, c->V, 1.0f);
}
static void test_xent(void) {
    // 37 targets: more than one block of the kernel (32), so the block boundary is crossed.
    int T = 40, n = 37, H = 6, V = 11;
    int32_t pos[37], label[37];
    for (int i = 0; i < n; i++) {
        pos[i] = i < 36 ? i : 5; // position 5 is scored twice: its dh must collect both
        label[i] = (int32_t)(ot_rng_u64(&rng) % (uint64_t)V);
    }
    size_t nh = (size_t)T * H, nW = (size_t)V * H;
    xent_ctx c = {n, H, V, 0.37f, pos, label, rand_vec(nh, -1.5, 1.5), rand_vec(nW, -1.5, 1.5)};

    // The returned loss against a direct computation.
    double want = 0;
    for (int i = 0; i < n; i++) {
        double lg[11], z = 0;
        for (int v = 0; v < V; v++)
            lg[v] = dot(c.h + (size_t)pos[i] * H, c.Wlm + (size_t)v * H, (size_t)H);
        for (int v = 0; v < V; v++)
            z += exp(lg[v]);
        want += log(z) - lg[label[i]];
    }
    double got = ot_lmhead_xent_f64(NULL, NULL, c.h, c.Wlm, pos, label, n, H, V, 1.0f);
    ot_check_close("lmhead_xent loss value", fabs(got - want) / fabs(want), 1e-12);

    double *fdh = fd_grad(c.h, nh, xent_loss, &c), *fdW = fd_grad(c.Wlm, nW, xent_loss, &c);
    double *bh = rand_vec(nh, -1, 1), *bW = rand_vec(nW, -1, 1);
    double *gh = copy_vec(bh, nh), *gW = copy_vec(bW, nW);
    double loss_with_grad = ot_lmhead_xent_f64(gh, gW, c.h, c.Wlm, pos, label, n, H, V, c.grad_scale);
    CHECK(loss_with_grad == got, "lmhead_xent: loss with gradients %.17g differs from loss alone %.17g", loss_with_grad,
          got);
    check_grad("lmhead_xent dh", gh, bh, fdh, nh);
    check_grad("lmhead_xent dWlm", gW, bW, fdW, nW);
    double *gh2 = copy_vec(bh, nh), *gW2 = copy_vec(bW, nW);
    ot_lmhead_xent_f64(gh2, NULL, c.h, c.Wlm, pos, label, n, H, V, c.grad_scale);
    ot_lmhead_xent_f64(NULL, gW2, c.h, c.Wlm, pos, label, n, H, V, c.grad_scale);
    check_same("lmhead_xent dh (dWlm NULL)", gh2, gh, nh);
    check_same("lmhead_xent dWlm (dh NULL)", gW2, gW, nW);
    free(fdh), free(fdW), free(bh), free(bW), free(gh), free(gW), free(gh2), free(gW2), free(c.h), free(c.Wlm);
}

int main(void) {
    ot_rng_seed(&rng, 20240917);
    test_embedding();
    test_rmsnorm();
    test_matmul();
    test_lora();
    test_rope();
    test_attention();
    test_router();
    test_swiglu();
    test_moe_combine();
    test_moe_route_grad();
    test_experts();
    test_expert_weight_grad();
    test_xent();
    return ot_test_finish("test_kernels_gradcheck");
}
