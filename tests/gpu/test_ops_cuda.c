// Every CUDA op against its CPU twin (kernels/ops.h, float) on fresh random inputs. Needs a GPU; not part of
// ctest (tests/gpu/run_gpu_tests.sh runs it). Usage: test_ops_cuda [--small] [--seed N]
//
// How each op is checked:
// - inputs are random (never zeros) and rounded to bf16 where the GPU stores bf16, so both sides see the same
//   values; sizes are not powers of two and leave partial tiles everywhere;
// - outputs the GPU overwrites are poisoned with NaN (all bits set) first, so an unwritten element fails;
// - outputs the GPU accumulates into start from random values of the same size as the gradient itself, so both a
//   wrong gradient and an overwrite instead of an add move the result by far more than the tolerance;
// - ‖gpu − cpu‖ / ‖cpu‖ within 1e-2 for results that pass through bf16 (storage, or a bf16 tensor-core operand),
//   within 1e-4 for fp32 results computed from the same values (LoRA products and gradients, statistics, AdamW);
// - the device's bad-input flag must be clean after every good run, and set (then cleared) after a bad one.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ot_common.h"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

#define TOL_BF16 1e-2
#define TOL_F32 1e-4
#define TOL_F64 1e-12

static ot_rng g_rng;
static cudaStream_t g_s;
static ot_cuda_blas g_blas;

typedef struct {
    int T, H, V;               // embedding / rmsnorm / matmul tokens and widths
    int in, out, r;            // linear layers and LoRA rank
    int aT, nh, nkv;           // attention
    int rE, rk;                // router experts, top-k
    int mT, mE, mk, mH, mI;    // MoE: tokens, experts, top-k, hidden, intermediate (multiples of 32)
    int xT, xn, xH, xV;        // cross-entropy: tokens, targets, hidden, vocabulary
    size_t n_opt;              // AdamW / sum of squares
} sizes;

// ---- host helpers ------------------------------------------------------------------------------------------------
static float *randn(size_t n, double scale) {
    float *x = ot_malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(ot_rng_normal(&g_rng) * scale);
        if (x[i] == 0.0f) x[i] = (float)(0.5 * scale); // never an exact zero
    }
    return x;
}
static void round_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = ot_bf16_to_f32(ot_f32_to_bf16(x[i]));
}
static float *randn_bf16(size_t n, double scale) {
    float *x = randn(n, scale);
    round_bf16(x, n);
    return x;
}
static float *copy_f(const float *x, size_t n) {
    float *y = ot_malloc((n ? n : 1) * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}
static float *zeros_f(size_t n) { return ot_calloc(n ? n : 1, sizeof(float)); }
static int rand_int(int n) { return (int)(ot_rng_u64(&g_rng) % (uint64_t)n); }

static double rms(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return n ? sqrt(s / n) : 0;
}
// Starting values for an accumulated output: random, with the RMS of the gradient that will be added.
static float *init_like(const float *grad, size_t n, int bf16) {
    double s = rms(grad, n);
    float *x = randn(n, s > 0 ? s : 1.0);
    if (bf16) round_bf16(x, n);
    return x;
}
// What the accumulating op should produce: init + grad (rounded once to float).
static float *plus(const float *init, const float *grad, size_t n) {
    float *y = ot_malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = (float)((double)init[i] + (double)grad[i]);
    return y;
}

// ---- device helpers ----------------------------------------------------------------------------------------------
static void *dmalloc(size_t bytes) {
    void *d = NULL;
    OT_CUDA_CHECK(cudaMalloc(&d, bytes ? bytes : 16));
    return d;
}
static ot_bf16 *up_bf16(const float *x, size_t n) {
    uint16_t *h = ot_malloc((n ? n : 1) * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) h[i] = ot_f32_to_bf16(x[i]);
    ot_bf16 *d = dmalloc(n * sizeof(uint16_t));
    OT_CUDA_CHECK(cudaMemcpy(d, h, n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(h);
    return d;
}
static float *up_f32(const float *x, size_t n) {
    float *d = dmalloc(n * sizeof(float));
    OT_CUDA_CHECK(cudaMemcpy(d, x, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static void *up_bytes(const void *x, size_t n) {
    void *d = dmalloc(n);
    OT_CUDA_CHECK(cudaMemcpy(d, x, n, cudaMemcpyHostToDevice));
    return d;
}
static int32_t *up_i32(const int32_t *x, size_t n) { return up_bytes(x, n * sizeof(int32_t)); }
// All bits set: NaN as bf16, as fp32 and as fp64, and −1 as an int.
static void *poison(size_t bytes) {
    void *d = dmalloc(bytes);
    OT_CUDA_CHECK(cudaMemset(d, 0xFF, bytes ? bytes : 16));
    return d;
}
static float *down_bf16(const ot_bf16 *d, size_t n) {
    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    uint16_t *h = ot_malloc((n ? n : 1) * sizeof(uint16_t));
    OT_CUDA_CHECK(cudaMemcpy(h, d, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    float *x = ot_malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = ot_bf16_to_f32(h[i]);
    free(h);
    return x;
}
static float *down_f32(const float *d, size_t n) {
    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    float *x = ot_malloc((n ? n : 1) * sizeof(float));
    OT_CUDA_CHECK(cudaMemcpy(x, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    return x;
}
static int32_t *down_i32(const int32_t *d, size_t n) {
    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    int32_t *x = ot_malloc((n ? n : 1) * sizeof(int32_t));
    OT_CUDA_CHECK(cudaMemcpy(x, d, n * sizeof(int32_t), cudaMemcpyDeviceToHost));
    return x;
}
static void dfree(void *d) { OT_CUDA_CHECK(cudaFree(d)); }

// Compare and free the downloaded GPU result.
static void check_bf16(const char *what, const ot_bf16 *d, const float *ref, size_t n, double tol) {
    float *g = down_bf16(d, n);
    ot_check_close(what, ot_rel_err_f32(g, ref, n), tol);
    free(g);
}
static void check_f32(const char *what, const float *d, const float *ref, size_t n, double tol) {
    float *g = down_f32(d, n);
    ot_check_close(what, ot_rel_err_f32(g, ref, n), tol);
    free(g);
}
static void expect_clean(const char *what) {
    ot_err err;
    int rc = ot_cuda_check_inputs(g_s, &err);
    CHECK(rc == 0, "%s: unexpected bad-input flag: %s", what, rc ? err.msg : "");
}
static void expect_flagged(const char *what) {
    ot_err err;
    int rc = ot_cuda_check_inputs(g_s, &err);
    ot_test_checks++;
    if (rc == 0) {
        ot_test_failures++;
        printf("FAIL %-48s bad input was not flagged\n", what);
    } else {
        printf("ok   %-48s flagged: %s\n", what, err.msg);
    }
    CHECK(ot_cuda_check_inputs(g_s, &err) == 0, "%s: the flag was not cleared", what);
}

// ---- element-wise helpers ----------------------------------------------------------------------------------------
static void test_helpers(const sizes *z) {
    size_t n = z->n_opt;
    float *x = randn(n, 3.0);
    float *xd = up_f32(x, n);
    ot_bf16 *b = poison(n * 2);
    ot_cuda_f32_to_bf16(g_s, b, xd, n);
    float *g = down_bf16(b, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += g[i] != ot_bf16_to_f32(ot_f32_to_bf16(x[i]));
    ot_test_checks++;
    if (bad) ot_test_failures++;
    printf("%s %-48s %zu of %zu differ from ot_f32_to_bf16\n", bad ? "FAIL" : "ok  ", "f32_to_bf16 (bit-exact)", bad, n);

    float *back = poison(n * 4);
    ot_cuda_bf16_to_f32(g_s, back, b, n);
    check_f32("bf16_to_f32 (exact)", back, g, n, 0.0);

    float *y = randn_bf16(n, 1.0), *add = randn_bf16(n, 1.0);
    ot_bf16 *yd = up_bf16(y, n), *addd = up_bf16(add, n);
    ot_cuda_add_bf16(g_s, yd, addd, n);
    float *yref = plus(y, add, n);
    check_bf16("add_bf16", yd, yref, n, TOL_BF16);

    ot_cuda_scale_f32(g_s, xd, n, 0.375f);
    for (size_t i = 0; i < n; i++) x[i] *= 0.375f;
    check_f32("scale_f32", xd, x, n, TOL_F32);
    expect_clean("helpers");
    free(x), free(g), free(y), free(add), free(yref);
    dfree(xd), dfree(b), dfree(back), dfree(yd), dfree(addd);
}

// ---- embedding ---------------------------------------------------------------------------------------------------
static void test_embedding(const sizes *z) {
    int T = z->T, H = z->H, V = z->V;
    float *table = randn_bf16((size_t)V * H, 1.0);
    int32_t *ids = ot_malloc(T * sizeof(int32_t));
    for (int t = 0; t < T; t++) ids[t] = t % 3 ? rand_int(V) : rand_int(7); // repeated ids collide in backward
    float *out = zeros_f((size_t)T * H);
    ot_embedding_fwd(out, ids, table, T, H);
    ot_bf16 *table_d = up_bf16(table, (size_t)V * H), *out_d = poison((size_t)T * H * 2);
    int32_t *ids_d = up_i32(ids, T);
    ot_cuda_embedding_fwd(g_s, out_d, ids_d, table_d, T, H, V);
    check_bf16("embedding_fwd", out_d, out, (size_t)T * H, TOL_BF16);
    expect_clean("embedding_fwd");
    // From blocks of rows (a sharded table, gathered a chunk at a time), one block a single row: the same values.
    {
        ot_bf16 *out2_d = poison((size_t)T * H * 2);
        const int edges[4] = {0, V / 3, V / 3 + 1, V};
        for (int b = 0; b < 3; b++)
            ot_cuda_embedding_rows_fwd(g_s, out2_d, ids_d, table_d + (size_t)edges[b] * H, edges[b],
                                       edges[b + 1] - edges[b], T, H, V);
        check_bf16("embedding_rows_fwd in 3 blocks", out2_d, out, (size_t)T * H, TOL_BF16);
        expect_clean("embedding_rows_fwd");
        dfree(out2_d);
    }

    float *dout = randn_bf16((size_t)T * H, 1.0);
    float *grad = zeros_f((size_t)V * H);
    ot_embedding_bwd(grad, dout, ids, T, H);
    float *init = init_like(grad, (size_t)V * H, 0), *ref = plus(init, grad, (size_t)V * H);
    float *dtab_d = up_f32(init, (size_t)V * H);
    ot_bf16 *dout_d = up_bf16(dout, (size_t)T * H);
    ot_cuda_embedding_bwd(g_s, dtab_d, dout_d, ids_d, T, H, V);
    check_f32("embedding_bwd dtable (fp32)", dtab_d, ref, (size_t)V * H, TOL_F32);
    expect_clean("embedding_bwd");

    int32_t bad = V + 5;
    OT_CUDA_CHECK(cudaMemcpy(ids_d + T / 2, &bad, sizeof(bad), cudaMemcpyHostToDevice));
    ot_cuda_embedding_fwd(g_s, out_d, ids_d, table_d, T, H, V);
    expect_flagged("embedding_fwd with id = V + 5");
    free(table), free(ids), free(out), free(dout), free(grad), free(init), free(ref);
    dfree(table_d), dfree(out_d), dfree(ids_d), dfree(dtab_d), dfree(dout_d);
}


// Full training: the embedding gradient without atomics must give the CPU's bits (same additions, same order).
// Many repeats of a few ids (and one id seen once) exercise the runs; the table starts from random values so an
// overwrite instead of an add fails.
static void test_embedding_sorted(const sizes *z) {
    int T = z->T, H = z->H, V = z->V;
    int32_t *ids = ot_malloc(T * sizeof(int32_t));
    for (int t = 0; t < T; t++) ids[t] = t % 4 ? rand_int(V) : rand_int(5);
    ids[T - 1] = V - 1;
    float *dout = randn_bf16((size_t)T * H, 1.0), *init = randn((size_t)V * H, 1.0);
    float *ref = copy_f(init, (size_t)V * H);
    ot_embedding_bwd(ref, dout, ids, T, H);
    int32_t *order = ot_malloc(T * sizeof(int32_t)), *seg = ot_malloc((T + 1) * sizeof(int32_t));
    int n_seg = ot_embedding_sort_ids(ids, T, order, seg);
    int sorted_ok = n_seg > 0 && n_seg < T && seg[0] == 0 && seg[n_seg] == T;
    for (int r = 1; r < T && sorted_ok; r++)
        sorted_ok = ids[order[r - 1]] < ids[order[r]] || (ids[order[r - 1]] == ids[order[r]] && order[r - 1] < order[r]);
    CHECK(sorted_ok, "ot_embedding_sort_ids: positions not sorted by (id, position) or runs wrong (%d runs)", n_seg);
    int32_t *ids_d = up_i32(ids, T), *order_d = up_i32(order, T), *seg_d = up_i32(seg, n_seg + 1);
    float *dtab_d = up_f32(init, (size_t)V * H);
    ot_bf16 *dout_d = up_bf16(dout, (size_t)T * H);
    ot_cuda_embedding_bwd_sorted(g_s, dtab_d, dout_d, ids_d, order_d, seg_d, n_seg, T, H, V);
    check_f32("embedding_bwd_sorted dtable (bit-exact)", dtab_d, ref, (size_t)V * H, 0.0);
    expect_clean("embedding_bwd_sorted");
    // a bad id at the head of the last run (the id the block reads): flagged
    int32_t bad = V + 3;
    OT_CUDA_CHECK(cudaMemcpy(ids_d + order[seg[n_seg - 1]], &bad, sizeof(bad), cudaMemcpyHostToDevice));
    ot_cuda_embedding_bwd_sorted(g_s, dtab_d, dout_d, ids_d, order_d, seg_d, n_seg, T, H, V);
    expect_flagged("embedding_bwd_sorted with id = V + 3");
    free(ids), free(dout), free(init), free(ref), free(order), free(seg);
    dfree(ids_d), dfree(order_d), dfree(seg_d), dfree(dtab_d), dfree(dout_d);
}

// Full training: the bf16 working copies from the fp32 masters, bit for bit ot_f32_to_bf16 (and fp32 segments
// copied as they are). Segments of uneven sizes, one larger than the grid (so the x blocks stride), one empty;
// the bytes between the destinations must stay untouched.
static void test_weight_refresh(const sizes *z) {
    const size_t lens[5] = {(size_t)z->n_opt, 7, 0, (size_t)256 * 1024 * 2 + 13, 301};
    const int f32[5] = {0, 1, 0, 0, 1};
    size_t total = 0, dst_bytes = 0;
    for (int i = 0; i < 5; i++) total += lens[i], dst_bytes += lens[i] * 4 + 64 + 16;
    float *master = randn(total, 2.0);
    float *master_d = up_f32(master, total);
    char *dst_d = poison(dst_bytes);
    ot_cuda_refresh_seg segs[5];
    size_t src = 0, at = 0, max_n = 0;
    for (int i = 0; i < 5; i++) {
        segs[i].src = src, segs[i].n = lens[i], segs[i].dst = dst_d + at, segs[i].f32 = f32[i];
        src += lens[i], at += lens[i] * (f32[i] ? 4 : 2) + 64;
        at = (at + 15) / 16 * 16; // every tensor 16-byte aligned, as in the model arena
        if (lens[i] > max_n) max_n = lens[i];
    }
    ot_cuda_refresh_seg *segs_d = up_bytes(segs, sizeof segs);
    ot_cuda_weight_refresh(g_s, segs_d, 5, max_n, master_d);
    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    unsigned char *h = ot_malloc(dst_bytes);
    OT_CUDA_CHECK(cudaMemcpy(h, dst_d, dst_bytes, cudaMemcpyDeviceToHost));
    size_t bad = 0, gap_bad = 0;
    for (int i = 0; i < 5; i++) {
        const unsigned char *p = h + ((char *)segs[i].dst - dst_d);
        for (size_t k = 0; k < lens[i]; k++) {
            float want = master[segs[i].src + k];
            if (f32[i]) {
                float got;
                memcpy(&got, p + 4 * k, 4);
                bad += memcmp(&got, &want, 4) != 0;
            } else {
                uint16_t got;
                memcpy(&got, p + 2 * k, 2);
                bad += got != ot_f32_to_bf16(want);
            }
        }
        for (size_t k = lens[i] * (f32[i] ? 4 : 2); k < lens[i] * (f32[i] ? 4 : 2) + 64; k++) gap_bad += p[k] != 0xFF;
    }
    ot_test_checks++;
    if (bad || gap_bad) ot_test_failures++;
    printf("%s %-48s %zu values differ, %zu bytes outside the tensors written\n", bad || gap_bad ? "FAIL" : "ok  ",
           "weight_refresh (bit-exact)", bad, gap_bad);
    free(master), free(h);
    dfree(master_d), dfree(dst_d), dfree(segs_d);
}
// ---- RMSNorm -----------------------------------------------------------------------------------------------------
static void test_rmsnorm(const sizes *z) {
    int T = z->T, H = z->H;
    size_t n = (size_t)T * H;
    float *x = randn_bf16(n, 1.0), *w = randn_bf16(H, 0.3);
    for (int i = 0; i < H; i++) w[i] = ot_bf16_to_f32(ot_f32_to_bf16(1.0f + w[i]));
    for (int t = 0; t < T; t++) // rows of different sizes
        for (int i = 0; i < H; i++) x[(size_t)t * H + i] = ot_bf16_to_f32(ot_f32_to_bf16(x[(size_t)t * H + i] * (1 + t % 5)));
    float *y = zeros_f(n), *rstd = zeros_f(T);
    ot_rmsnorm_fwd(y, rstd, x, w, T, H, 1e-5f);
    ot_bf16 *x_d = up_bf16(x, n), *w_d = up_bf16(w, H), *y_d = poison(n * 2);
    float *rstd_d = poison(T * 4);
    ot_cuda_rmsnorm_fwd(g_s, y_d, rstd_d, x_d, w_d, T, H, 1e-5f);
    check_bf16("rmsnorm_fwd y", y_d, y, n, TOL_BF16);
    check_f32("rmsnorm_fwd rstd (fp32)", rstd_d, rstd, T, TOL_F32);

    float *dy = randn_bf16(n, 1.0), *gdx = zeros_f(n), *gdw = zeros_f(H);
    ot_rmsnorm_bwd(gdx, gdw, dy, x, w, rstd, T, H);
    float *dx0 = init_like(gdx, n, 1), *dw0 = init_like(gdw, H, 0);
    float *dx_ref = plus(dx0, gdx, n), *dw_ref = plus(dw0, gdw, H);
    ot_bf16 *dy_d = up_bf16(dy, n), *dx_d = up_bf16(dx0, n);
    float *dw_d = up_f32(dw0, H), *rstd_ref_d = up_f32(rstd, T);
    ot_cuda_rmsnorm_bwd(g_s, dx_d, dw_d, dy_d, x_d, w_d, rstd_ref_d, T, H);
    check_bf16("rmsnorm_bwd dx", dx_d, dx_ref, n, TOL_BF16);
    check_f32("rmsnorm_bwd dw (fp32)", dw_d, dw_ref, H, TOL_F32);
    expect_clean("rmsnorm");
    free(x), free(w), free(y), free(rstd), free(dy), free(gdx), free(gdw), free(dx0), free(dw0), free(dx_ref);
    free(dw_ref);
    dfree(x_d), dfree(w_d), dfree(y_d), dfree(rstd_d), dfree(dy_d), dfree(dx_d), dfree(dw_d), dfree(rstd_ref_d);
}

// ---- dense linear ------------------------------------------------------------------------------------------------
static void test_matmul(const sizes *z) {
    int T = z->T, in = z->in, out = z->out;
    float *x = randn_bf16((size_t)T * in, 1.0), *W = randn_bf16((size_t)out * in, 1.0 / sqrt(in));
    float *b = randn_bf16(out, 0.5);
    ot_bf16 *x_d = up_bf16(x, (size_t)T * in), *W_d = up_bf16(W, (size_t)out * in), *b_d = up_bf16(b, out);
    for (int with_bias = 1; with_bias >= 0; with_bias--) {
        float *y = zeros_f((size_t)T * out);
        ot_matmul_fwd(y, x, W, with_bias ? b : NULL, T, in, out);
        ot_bf16 *y_d = poison((size_t)T * out * 2);
        ot_cuda_matmul_fwd(g_s, &g_blas, y_d, x_d, W_d, with_bias ? b_d : NULL, T, in, out);
        check_bf16(with_bias ? "matmul_fwd (bias epilogue)" : "matmul_fwd (no bias)", y_d, y, (size_t)T * out,
                   TOL_BF16);
        free(y);
        dfree(y_d);
    }
    float *dy = randn_bf16((size_t)T * out, 1.0);
    float *gdx = zeros_f((size_t)T * in), *gdW = zeros_f((size_t)out * in), *gdb = zeros_f(out);
    ot_matmul_bwd(gdx, gdW, gdb, dy, x, W, T, in, out);
    float *dx0 = init_like(gdx, (size_t)T * in, 1), *dW0 = init_like(gdW, (size_t)out * in, 0);
    float *db0 = init_like(gdb, out, 0);
    float *dx_ref = plus(dx0, gdx, (size_t)T * in), *dW_ref = plus(dW0, gdW, (size_t)out * in);
    float *db_ref = plus(db0, gdb, out);
    ot_bf16 *dy_d = up_bf16(dy, (size_t)T * out), *dx_d = up_bf16(dx0, (size_t)T * in);
    float *dW_d = up_f32(dW0, (size_t)out * in), *db_d = up_f32(db0, out);
    ot_cuda_matmul_bwd(g_s, &g_blas, dx_d, dW_d, db_d, dy_d, x_d, W_d, T, in, out);
    check_bf16("matmul_bwd dx", dx_d, dx_ref, (size_t)T * in, TOL_BF16);
    check_f32("matmul_bwd dW (fp32)", dW_d, dW_ref, (size_t)out * in, TOL_F32);
    check_f32("matmul_bwd db (fp32)", db_d, db_ref, out, TOL_F32);
    expect_clean("matmul");
    free(x), free(W), free(b), free(dy), free(gdx), free(gdW), free(gdb), free(dx0), free(dW0), free(db0);
    free(dx_ref), free(dW_ref), free(db_ref);
    dfree(x_d), dfree(W_d), dfree(b_d), dfree(dy_d), dfree(dx_d), dfree(dW_d), dfree(db_d);
}

// ---- LoRA --------------------------------------------------------------------------------------------------------
// The adapter's rank and a large one (80), so products with either side thin are covered.
static void test_lora_rank(const sizes *z, int r) {
    int T = z->T, in = z->in, out = z->out;
    float scale = 2.0f;
    float *x = randn_bf16((size_t)T * in, 1.0), *A = randn((size_t)r * in, 1.0 / sqrt(in));
    float *B = randn((size_t)out * r, 0.2);
    float *y_zero = zeros_f((size_t)T * out), *xa = zeros_f((size_t)T * r);
    ot_lora_fwd(y_zero, xa, x, A, B, T, in, r, out, scale);
    float *y0 = init_like(y_zero, (size_t)T * out, 1), *y_ref = plus(y0, y_zero, (size_t)T * out);
    ot_bf16 *x_d = up_bf16(x, (size_t)T * in), *y_d = up_bf16(y0, (size_t)T * out);
    float *A_d = up_f32(A, (size_t)r * in), *B_d = up_f32(B, (size_t)out * r), *xa_d = poison((size_t)T * r * 4);
    ot_cuda_lora_w w = {.n = 1, .A = A_d, .B = {B_d}, .out = {out}};
    ot_cuda_lora_fwd(g_s, &y_d, xa_d, NULL, x_d, &w, T, in, r, scale);
    check_bf16("lora_fwd y += scale·xa·Bᵀ", y_d, y_ref, (size_t)T * out, TOL_BF16);
    check_f32("lora_fwd xa (fp32)", xa_d, xa, (size_t)T * r, TOL_F32);

    float *dy = randn_bf16((size_t)T * out, 1.0);
    float *gdx = zeros_f((size_t)T * in), *gdA = zeros_f((size_t)r * in), *gdB = zeros_f((size_t)out * r);
    ot_lora_bwd(gdx, gdA, gdB, dy, x, xa, A, B, T, in, r, out, scale);
    float *dx0 = init_like(gdx, (size_t)T * in, 1), *dA0 = init_like(gdA, (size_t)r * in, 0);
    float *dB0 = init_like(gdB, (size_t)out * r, 0);
    float *dx_ref = plus(dx0, gdx, (size_t)T * in), *dA_ref = plus(dA0, gdA, (size_t)r * in);
    float *dB_ref = plus(dB0, gdB, (size_t)out * r);
    ot_bf16 *dy_d = up_bf16(dy, (size_t)T * out), *dx_d = up_bf16(dx0, (size_t)T * in);
    float *dA_d = up_f32(dA0, (size_t)r * in), *dB_d = up_f32(dB0, (size_t)out * r), *xa_ref_d = up_f32(xa, (size_t)T * r);
    w.dA = dA_d, w.dB[0] = dB_d;
    ot_cuda_lora_bwd(g_s, dx_d, (const ot_bf16 *const *)&dy_d, x_d, xa_ref_d, NULL, &w, T, in, r, scale);
    check_bf16("lora_bwd dx", dx_d, dx_ref, (size_t)T * in, TOL_BF16);
    check_f32("lora_bwd dA (fp32)", dA_d, dA_ref, (size_t)r * in, TOL_F32);
    check_f32("lora_bwd dB (fp32)", dB_d, dB_ref, (size_t)out * r, TOL_F32);
    // As the trainer runs it: A and B split once (ot_cuda_lora_split_params), the forward keeping xa's split for
    // the backward, [dA | dB] then their low parts in one allocation, added in by ot_cuda_lora_fold (which leaves
    // the low parts zero); a second backward without dx (dxa then split on its own).
    {
        const size_t nA = (size_t)r * in, nAB = nA + (size_t)out * r, nTr = (size_t)T * r;
        float *p_h = ot_malloc(nAB * sizeof(float));
        memcpy(p_h, A, nA * sizeof(float));
        memcpy(p_h + nA, B, (size_t)out * r * sizeof(float));
        float *p_d = up_f32(p_h, nAB);
        ot_bf16 *hl_d = poison(2 * nAB * sizeof(ot_bf16)), *xa_hl_d = poison(2 * nTr * sizeof(ot_bf16));
        size_t seg_h[3] = {0, 0, nAB}, *seg_d = NULL;
        OT_CUDA_CHECK(cudaMalloc((void **)&seg_d, sizeof seg_h));
        OT_CUDA_CHECK(cudaMemcpy(seg_d, seg_h, sizeof seg_h, cudaMemcpyHostToDevice));
        ot_cuda_lora_split_params(g_s, hl_d, nAB, NULL, p_d, seg_d, 1, nAB);
        ot_bf16 *y2_d = up_bf16(y0, (size_t)T * out);
        float *xa2_d = poison(nTr * 4);
        ot_cuda_lora_w ws = {.n = 1, .A = p_d, .B = {p_d + nA}, .A_hl = hl_d, .B_hl = {hl_d + nA}, .out = {out},
                             .hl_stride = nAB};
        ot_cuda_lora_fwd(g_s, &y2_d, xa2_d, xa_hl_d, x_d, &ws, T, in, r, scale);
        check_bf16("lora_fwd y, A and B split beforehand", y2_d, y_ref, (size_t)T * out, TOL_BF16);
        check_f32("lora_fwd xa (fp32), A and B split beforehand", xa2_d, xa, nTr, TOL_F32);
        float *g_h = zeros_f(2 * nAB);
        memcpy(g_h, dA0, nA * sizeof(float));
        memcpy(g_h + nA, dB0, (size_t)out * r * sizeof(float));
        float *g_d = up_f32(g_h, 2 * nAB);
        ot_bf16 *dx2_d = up_bf16(dx0, (size_t)T * in);
        ws.dA = g_d, ws.dB[0] = g_d + nA, ws.dA_lo = g_d + nAB, ws.dB_lo[0] = g_d + nAB + nA;
        ot_cuda_lora_bwd(g_s, dx2_d, (const ot_bf16 *const *)&dy_d, x_d, xa2_d, xa_hl_d, &ws, T, in, r, scale);
        check_bf16("lora_bwd dx, A and B split beforehand", dx2_d, dx_ref, (size_t)T * in, TOL_BF16);
        size_t fold_h[3] = {0, nAB, nAB};
        OT_CUDA_CHECK(cudaMemcpy(seg_d, fold_h, sizeof fold_h, cudaMemcpyHostToDevice));
        ot_cuda_lora_fold(g_s, g_d, g_d, 0, seg_d, 1, nAB);
        check_f32("lora_bwd dA, low parts folded later (fp32)", g_d, dA_ref, nA, TOL_F32);
        check_f32("lora_bwd dB, low parts folded later (fp32)", g_d + nA, dB_ref, (size_t)out * r, TOL_F32);
        float *lo = down_f32(g_d + nAB, nAB);
        size_t nonzero = 0;
        for (size_t i = 0; i < nAB; i++) nonzero += lo[i] != 0.0f;
        CHECK(nonzero == 0, "lora_fold leaves the low parts zero (%zu of %zu are not)", nonzero, nAB);
        // no dx: the weight gradients alone (dA's operand split without the expansion), added at once
        float *g1_d = up_f32(g_h, nAB);
        ws.dA = g1_d, ws.dB[0] = g1_d + nA, ws.dA_lo = ws.dB_lo[0] = NULL;
        ot_cuda_lora_bwd(g_s, NULL, (const ot_bf16 *const *)&dy_d, x_d, xa2_d, xa_hl_d, &ws, T, in, r, scale);
        check_f32("lora_bwd dA without dx (fp32)", g1_d, dA_ref, nA, TOL_F32);
        check_f32("lora_bwd dB without dx (fp32)", g1_d + nA, dB_ref, (size_t)out * r, TOL_F32);
        free(lo), free(g_h), free(p_h);
        dfree(g_d), dfree(g1_d), dfree(seg_d), dfree(p_d), dfree(hl_d), dfree(xa_hl_d), dfree(y2_d), dfree(xa2_d);
        dfree(dx2_d);
    }
    expect_clean("lora");
    free(x), free(A), free(B), free(y_zero), free(xa), free(y0), free(y_ref), free(dy), free(gdx), free(gdA);
    free(gdB), free(dx0), free(dA0), free(dB0), free(dx_ref), free(dA_ref), free(dB_ref);
    dfree(x_d), dfree(y_d), dfree(A_d), dfree(B_d), dfree(xa_d), dfree(dy_d), dfree(dx_d), dfree(dA_d), dfree(dB_d);
    printf("info lora rank %d checked\n", r);
    dfree(xa_ref_d);
}

// A group of three projections of one input (q, k, v as the trainer runs them: stacked A's split beforehand, xa
// kept split, the A products into two low arrays and the B's lo products into a third, folded afterwards) against
// three separate CPU references.
static void test_lora_group(const sizes *z) {
    const int T = z->T, in = z->in, r = z->r, n = 3, outs[3] = {z->out, z->out / 2 + 3, 40};
    const float scale = 2.0f;
    const size_t nA = (size_t)r * in, nT = (size_t)T * n * r;
    float *x = randn_bf16((size_t)T * in, 1.0), *A = randn(n * nA, 1.0 / sqrt(in)), *B[3], *dy[3], *y0[3];
    float *xa_ref = zeros_f(nT), *dx_ref = zeros_f((size_t)T * in), *dA_ref = zeros_f(n * nA), *dB_ref[3], *y_ref[3];
    float *dx0 = randn_bf16((size_t)T * in, 1.0), *dxr = copy_f(dx0, (size_t)T * in);
    ot_bf16 *x_d = up_bf16(x, (size_t)T * in), *y_d[3], *dy_d[3];
    // the device adapter: [A (n·r × in) | B_0 | B_1 | B_2], its split, its gradients then two low regions
    size_t nP = n * nA, b_off[3];
    for (int i = 0; i < n; i++) b_off[i] = nP, nP += (size_t)outs[i] * r;
    float *P = ot_malloc(nP * sizeof(float));
    memcpy(P, A, n * nA * sizeof(float));
    for (int i = 0; i < n; i++) {
        B[i] = randn((size_t)outs[i] * r, 0.2), memcpy(P + b_off[i], B[i], (size_t)outs[i] * r * sizeof(float));
        dy[i] = randn_bf16((size_t)T * outs[i], 1.0), y0[i] = randn_bf16((size_t)T * outs[i], 1.0);
        float *yz = zeros_f((size_t)T * outs[i]), *xai = zeros_f((size_t)T * r), *gdx = zeros_f((size_t)T * in);
        ot_lora_fwd(yz, xai, x, A + i * nA, B[i], T, in, r, outs[i], scale);
        y_ref[i] = plus(y0[i], yz, (size_t)T * outs[i]);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < r; j++) xa_ref[(size_t)t * n * r + i * r + j] = xai[(size_t)t * r + j];
        dB_ref[i] = zeros_f((size_t)outs[i] * r);
        ot_lora_bwd(gdx, dA_ref + i * nA, dB_ref[i], dy[i], x, xai, A + i * nA, B[i], T, in, r, outs[i], scale);
        for (size_t k = 0; k < (size_t)T * in; k++) dxr[k] += gdx[k];
        y_d[i] = up_bf16(y0[i], (size_t)T * outs[i]), dy_d[i] = up_bf16(dy[i], (size_t)T * outs[i]);
        free(yz), free(xai), free(gdx);
    }
    float *P_d = up_f32(P, nP);
    ot_bf16 *hl_d = poison(2 * nP * sizeof(ot_bf16)), *xa_hl_d = poison(2 * nT * sizeof(ot_bf16));
    size_t seg_h[3] = {0, 0, nP}, *seg_d = NULL;
    OT_CUDA_CHECK(cudaMalloc((void **)&seg_d, sizeof seg_h));
    OT_CUDA_CHECK(cudaMemcpy(seg_d, seg_h, sizeof seg_h, cudaMemcpyHostToDevice));
    float *copy_d = poison(nP * sizeof(float));
    ot_cuda_lora_split_params(g_s, hl_d, nP, copy_d, P_d, seg_d, 1, nP);
    check_f32("lora_split_params fp32 copy", copy_d, P, nP, 0.0);
    ot_cuda_lora_w w = {.n = n, .A = copy_d, .A_hl = hl_d, .hl_stride = nP};
    for (int i = 0; i < n; i++) w.B[i] = copy_d + b_off[i], w.B_hl[i] = hl_d + b_off[i], w.out[i] = outs[i];
    float *xa_d = poison(nT * sizeof(float));
    ot_cuda_lora_fwd(g_s, y_d, xa_d, xa_hl_d, x_d, &w, T, in, r, scale);
    for (int i = 0; i < n; i++) check_bf16("lora group fwd y_i", y_d[i], y_ref[i], (size_t)T * outs[i], TOL_BF16);
    check_f32("lora group fwd xa (fp32)", xa_d, xa_ref, nT, TOL_F32);
    // gradients: zero in the device's [grads | low 1 | low 2]; A's products into the low regions, B's hi into grads
    float *gz = zeros_f(3 * nP), *g_d = up_f32(gz, 3 * nP);
    free(gz);
    w.dA = g_d + nP, w.dA_lo = g_d + 2 * nP;
    for (int i = 0; i < n; i++) w.dB[i] = g_d + b_off[i], w.dB_lo[i] = g_d + nP + b_off[i];
    ot_bf16 *dx_d = up_bf16(dx0, (size_t)T * in);
    ot_cuda_lora_bwd(g_s, dx_d, (const ot_bf16 *const *)dy_d, x_d, xa_d, xa_hl_d, &w, T, in, r, scale);
    check_bf16("lora group bwd dx (one expansion)", dx_d, dxr, (size_t)T * in, TOL_BF16);
    ot_cuda_lora_fold(g_s, g_d, g_d + nP, nP, seg_d, 1, nP);
    check_f32("lora group bwd dA (stacked, fp32)", g_d, dA_ref, n * nA, TOL_F32);
    for (int i = 0; i < n; i++) check_f32("lora group bwd dB_i (fp32)", g_d + b_off[i], dB_ref[i], (size_t)outs[i] * r, TOL_F32);
    expect_clean("lora group");
    for (int i = 0; i < n; i++) {
        free(B[i]), free(dy[i]), free(y0[i]), free(dB_ref[i]), free(y_ref[i]);
        dfree(y_d[i]), dfree(dy_d[i]);
    }
    free(x), free(A), free(xa_ref), free(dx_ref), free(dA_ref), free(dx0), free(dxr), free(P);
    dfree(x_d), dfree(P_d), dfree(hl_d), dfree(xa_hl_d), dfree(seg_d), dfree(copy_d), dfree(xa_d), dfree(g_d);
    dfree(dx_d);
}

static void test_lora(const sizes *z) {
    test_lora_group(z);
    test_lora_rank(z, z->r);
    test_lora_rank(z, 80);
    sizes odd = *z; // widths that are no multiple of 8: the expansions' element-wise stores
    odd.in = 107, odd.out = 261;
    test_lora_rank(&odd, z->r);
}

// ---- RoPE --------------------------------------------------------------------------------------------------------
static void test_rope(const sizes *z) {
    int T = z->aT, nh = z->nh, D = 64;
    size_t n = (size_t)T * nh * D;
    ot_rope_params p = {150000.0, 32.0, 32.0, 1.0, 4096, 0, 0.0}; // gpt-oss (spec §1)
    float inv_freq[32];
    float attn_factor = ot_rope_inv_freq(inv_freq, D, &p);
    int32_t *pos = ot_malloc(T * sizeof(int32_t));
    for (int t = 0; t < T; t++) pos[t] = t % 4 ? rand_int(131072) : t; // large angles and small ones
    float *x = randn_bf16(n, 1.0), *ref = copy_f(x, n);
    ot_rope_fwd(ref, pos, inv_freq, attn_factor, T, nh, D);
    ot_bf16 *x_d = up_bf16(x, n);
    int32_t *pos_d = up_i32(pos, T);
    float *if_d = up_f32(inv_freq, D / 2);
    ot_cuda_rope_fwd(g_s, x_d, pos_d, if_d, attn_factor, T, nh, D);
    check_bf16("rope_fwd (YaRN, NeoX halves)", x_d, ref, n, TOL_BF16);
    float *dy = randn_bf16(n, 1.0), *dref = copy_f(dy, n);
    ot_rope_bwd(dref, pos, inv_freq, attn_factor, T, nh, D);
    ot_bf16 *dy_d = up_bf16(dy, n);
    ot_cuda_rope_bwd(g_s, dy_d, pos_d, if_d, attn_factor, T, nh, D);
    check_bf16("rope_bwd", dy_d, dref, n, TOL_BF16);
    // queries and keys (3 heads) in one launch, both directions
    const int nk = 3;
    size_t nk_el = (size_t)T * nk * D;
    float *k = randn_bf16(nk_el, 1.0), *kref = copy_f(k, nk_el);
    ot_rope_fwd(kref, pos, inv_freq, attn_factor, T, nk, D);
    ot_bf16 *q2_d = up_bf16(x, n), *k_d = up_bf16(k, nk_el);
    ot_cuda_rope_qk_fwd(g_s, q2_d, k_d, pos_d, if_d, attn_factor, T, nh, nk, D);
    check_bf16("rope_qk_fwd queries", q2_d, ref, n, TOL_BF16);
    check_bf16("rope_qk_fwd keys", k_d, kref, nk_el, TOL_BF16);
    float *kref_b = copy_f(k, nk_el);
    ot_rope_bwd(kref_b, pos, inv_freq, attn_factor, T, nk, D);
    dfree(q2_d), dfree(k_d);
    q2_d = up_bf16(dy, n), k_d = up_bf16(k, nk_el);
    ot_cuda_rope_qk_bwd(g_s, q2_d, k_d, pos_d, if_d, attn_factor, T, nh, nk, D);
    check_bf16("rope_qk_bwd queries", q2_d, dref, n, TOL_BF16);
    check_bf16("rope_qk_bwd keys", k_d, kref_b, nk_el, TOL_BF16);
    expect_clean("rope");
    free(pos), free(x), free(ref), free(dy), free(dref), free(k), free(kref), free(kref_b);
    dfree(x_d), dfree(pos_d), dfree(if_d), dfree(dy_d), dfree(q2_d), dfree(k_d);
}

// ---- attention ---------------------------------------------------------------------------------------------------
// Packed sequences of uneven lengths (one of length 1), tested with full causal attention and with a window.
// The second sequence starts at key 63, the last key of the first 64-key tile, while its queries lie in the
// second query tile: the edge of the backward's tile skipping.
static void make_segments(int32_t *seg_start, int T) {
    const int lens[] = {63, 20, 1, 77, 33, 13};
    int t = 0, s = 0;
    while (t < T) {
        int len = lens[s++ % 6];
        for (int i = 0; i < len && t < T; i++, t++) seg_start[t] = t - i;
    }
}

static void test_attention(const sizes *z, int window) {
    int T = z->aT, nh = z->nh, nkv = z->nkv, D = 64;
    size_t nq = (size_t)T * nh * D, nk = (size_t)T * nkv * D, nl = (size_t)T * nh;
    char what[96];
    int32_t *seg = ot_malloc(T * sizeof(int32_t));
    make_segments(seg, T);
    float *q = randn_bf16(nq, 1.0), *k = randn_bf16(nk, 1.0), *v = randn_bf16(nk, 1.0), *sinks = randn(nh, 1.0);
    float *out = zeros_f(nq), *lse = zeros_f(nl);
    ot_attention_fwd(out, lse, q, k, v, sinks, seg, T, nh, nkv, D, window);
    ot_bf16 *q_d = up_bf16(q, nq), *k_d = up_bf16(k, nk), *v_d = up_bf16(v, nk), *out_d = poison(nq * 2);
    float *sinks_d = up_f32(sinks, nh), *lse_d = poison(nl * 4);
    int32_t *seg_d = up_i32(seg, T);
    ot_cuda_attention_fwd(g_s, out_d, lse_d, q_d, k_d, v_d, sinks_d, seg_d, T, nh, nkv, D, window);
    snprintf(what, sizeof(what), "attention_fwd out (window %d)", window);
    check_bf16(what, out_d, out, nq, TOL_BF16);
    snprintf(what, sizeof(what), "attention_fwd lse (fp32, window %d)", window);
    check_f32(what, lse_d, lse, nl, TOL_F32);
    expect_clean("attention_fwd");

    // Backward from the CPU forward's out/lse (out rounded to bf16 as the GPU would store it).
    float *dout = randn_bf16(nq, 1.0), *out_b = copy_f(out, nq);
    round_bf16(out_b, nq);
    float *gdq = zeros_f(nq), *gdk = zeros_f(nk), *gdv = zeros_f(nk), *gds = zeros_f(nh);
    ot_attention_bwd(gdq, gdk, gdv, gds, dout, out_b, lse, q, k, v, sinks, seg, T, nh, nkv, D, window);
    float *dq0 = init_like(gdq, nq, 1), *dk0 = init_like(gdk, nk, 1), *dv0 = init_like(gdv, nk, 1);
    float *ds0 = init_like(gds, nh, 0);
    float *dq_ref = plus(dq0, gdq, nq), *dk_ref = plus(dk0, gdk, nk), *dv_ref = plus(dv0, gdv, nk);
    float *ds_ref = plus(ds0, gds, nh);
    ot_bf16 *dout_d = up_bf16(dout, nq), *outb_d = up_bf16(out_b, nq);
    float *lse_ref_d = up_f32(lse, nl);
    ot_bf16 *dq_d = NULL, *dk_d = NULL, *dv_d = NULL;
    float *ds_d = NULL;
    // The query heads of a group in one block (the block adds dK, dV into the bf16 result) and sliced over several
    // (fp32 atomics into a temporary), then the size rule's choice.
    const char *slice_env[] = {"1", "64", ""}, *slice_name[] = {"group per block", "sliced", "auto"};
    for (int si = 0; si < 3; si++) {
        setenv("OT_ATT_BWD_SLICES", slice_env[si], 1);
        if (dq_d) dfree(dq_d), dfree(dk_d), dfree(dv_d), dfree(ds_d);
        dq_d = up_bf16(dq0, nq), dk_d = up_bf16(dk0, nk), dv_d = up_bf16(dv0, nk), ds_d = up_f32(ds0, nh);
        ot_cuda_attention_bwd(g_s, dq_d, dk_d, dv_d, ds_d, dout_d, outb_d, lse_ref_d, q_d, k_d, v_d, sinks_d, seg_d, T,
                              nh, nkv, D, window);
        snprintf(what, sizeof(what), "attention_bwd dq (window %d, %s)", window, slice_name[si]);
        check_bf16(what, dq_d, dq_ref, nq, TOL_BF16);
        snprintf(what, sizeof(what), "attention_bwd dk (window %d, %s)", window, slice_name[si]);
        check_bf16(what, dk_d, dk_ref, nk, TOL_BF16);
        snprintf(what, sizeof(what), "attention_bwd dv (window %d, %s)", window, slice_name[si]);
        check_bf16(what, dv_d, dv_ref, nk, TOL_BF16);
        // dsinks sums dO·O with O in bf16 (as the forward stored it), so it carries bf16 rounding: TOL_BF16.
        snprintf(what, sizeof(what), "attention_bwd dsinks (window %d, %s)", window, slice_name[si]);
        check_f32(what, ds_d, ds_ref, nh, TOL_BF16);
    }
    unsetenv("OT_ATT_BWD_SLICES");
    expect_clean("attention_bwd");

    if (window == 0) { // a seg_start past its own token is flagged, not read out of range
        int32_t bad = T - 1;
        OT_CUDA_CHECK(cudaMemcpy(seg_d + T / 3, &bad, sizeof(bad), cudaMemcpyHostToDevice));
        ot_cuda_attention_fwd(g_s, out_d, lse_d, q_d, k_d, v_d, sinks_d, seg_d, T, nh, nkv, D, window);
        expect_flagged("attention_fwd with seg_start[i] > i");
    }
    free(seg), free(q), free(k), free(v), free(sinks), free(out), free(lse), free(dout), free(out_b), free(gdq);
    free(gdk), free(gdv), free(gds), free(dq0), free(dk0), free(dv0), free(ds0), free(dq_ref), free(dk_ref);
    free(dv_ref), free(ds_ref);
    dfree(q_d), dfree(k_d), dfree(v_d), dfree(out_d), dfree(sinks_d), dfree(lse_d), dfree(seg_d), dfree(dout_d);
    dfree(outb_d), dfree(dq_d), dfree(dk_d), dfree(dv_d), dfree(lse_ref_d), dfree(ds_d);
}

// ---- batched decoding: KV cache store, attention over the cache, argmax ---------------------------------------------
// One step mixing what osstune-translate's GPU decoder sends: a prompt (40 tokens of slot 1 from position 0), single
// decoding tokens of the other slots deep into their caches (past the window), and a token at position 0. The caches
// start random everywhere, so a read outside a token's visible range changes the result.
static void test_attention_cache(const sizes *z, int window) {
    const int S = 3, L = z->aT, nh = z->nh, nkv = z->nkv, D = 64, KV = nkv * D;
    int32_t slot[48], pos[48];
    int T = 0;
    for (int i = 0; i < 40; i++) slot[T] = 1, pos[T++] = i;
    slot[T] = 0, pos[T++] = L - 1;
    slot[T] = 2, pos[T++] = L / 2;
    slot[T] = 0, pos[T++] = L - 2; // two tokens of slot 0 in one step: the earlier one must not see the later
    size_t nc = (size_t)S * nkv * L * D, nq = (size_t)T * nh * D, nk = (size_t)T * KV;
    char what[96];
    float *kc = randn_bf16(nc, 1.0), *vc = randn_bf16(nc, 1.0), *k = randn_bf16(nk, 1.0), *v = randn_bf16(nk, 1.0);
    float *q = randn_bf16(nq, 1.0), *sinks = randn(nh, 1.0);
    ot_bf16 *kc_d = up_bf16(kc, nc), *vc_d = up_bf16(vc, nc), *k_d = up_bf16(k, nk), *v_d = up_bf16(v, nk);
    ot_bf16 *q_d = up_bf16(q, nq), *out_d = poison(nq * 2);
    float *sinks_d = up_f32(sinks, nh);
    int32_t *slot_d = up_i32(slot, T), *pos_d = up_i32(pos, T);
    // the host twin of the store
    for (int t = 0; t < T; t++)
        for (int g = 0; g < nkv; g++) {
            size_t dst = (((size_t)slot[t] * nkv + g) * L + pos[t]) * D, src = ((size_t)t * nkv + g) * D;
            memcpy(kc + dst, k + src, D * sizeof(float));
            memcpy(vc + dst, v + src, D * sizeof(float));
        }
    ot_cuda_kv_cache_store(g_s, kc_d, vc_d, k_d, v_d, slot_d, pos_d, T, nkv, D, S, L);
    check_bf16("kv_cache_store k (exact)", kc_d, kc, nc, 0.0);
    check_bf16("kv_cache_store v (exact)", vc_d, vc, nc, 0.0);
    // the CPU twin of the attention: each token alone, its slot's cache gathered into [pos + 1, nkv, D]
    float *out = zeros_f(nq), *kb = zeros_f((size_t)L * KV), *vb = zeros_f((size_t)L * KV);
    for (int t = 0; t < T; t++) {
        for (int j = 0; j <= pos[t]; j++)
            for (int g = 0; g < nkv; g++) {
                size_t src = (((size_t)slot[t] * nkv + g) * L + j) * D;
                memcpy(kb + ((size_t)j * nkv + g) * D, kc + src, D * sizeof(float));
                memcpy(vb + ((size_t)j * nkv + g) * D, vc + src, D * sizeof(float));
            }
        ot_attention_cache_fwd(out + (size_t)t * nh * D, q + (size_t)t * nh * D, kb, vb, sinks, 1, pos[t], nh, nkv, D,
                               window);
    }
    ot_cuda_attention_cache_fwd(g_s, out_d, q_d, kc_d, vc_d, sinks_d, slot_d, pos_d, T, nh, nkv, D, S, L, window);
    snprintf(what, sizeof(what), "attention_cache_fwd (window %d)", window);
    check_bf16(what, out_d, out, nq, TOL_BF16);
    expect_clean("attention_cache_fwd");

    if (window == 0) { // a slot or position outside the cache is flagged, never read or written
        int32_t bad_slot = S, bad_pos = L;
        OT_CUDA_CHECK(cudaMemcpy(slot_d + 3, &bad_slot, sizeof(int32_t), cudaMemcpyHostToDevice));
        ot_cuda_attention_cache_fwd(g_s, out_d, q_d, kc_d, vc_d, sinks_d, slot_d, pos_d, T, nh, nkv, D, S, L, window);
        expect_flagged("attention_cache_fwd with slot >= S");
        ot_cuda_kv_cache_store(g_s, kc_d, vc_d, k_d, v_d, slot_d, pos_d, T, nkv, D, S, L);
        expect_flagged("kv_cache_store with slot >= S");
        OT_CUDA_CHECK(cudaMemcpy(slot_d + 3, &slot[3], sizeof(int32_t), cudaMemcpyHostToDevice));
        OT_CUDA_CHECK(cudaMemcpy(pos_d + 5, &bad_pos, sizeof(int32_t), cudaMemcpyHostToDevice));
        ot_cuda_kv_cache_store(g_s, kc_d, vc_d, k_d, v_d, slot_d, pos_d, T, nkv, D, S, L);
        expect_flagged("kv_cache_store with pos >= max_len");
        check_bf16("kv_cache_store skipped the bad rows", kc_d, kc, nc, 0.0);
    }
    free(kc), free(vc), free(k), free(v), free(q), free(sinks), free(out), free(kb), free(vb);
    dfree(kc_d), dfree(vc_d), dfree(k_d), dfree(v_d), dfree(q_d), dfree(out_d), dfree(sinks_d), dfree(slot_d);
    dfree(pos_d);
}

static void test_argmax(const sizes *z) {
    const int n = 7, V = z->xV;
    float *x = randn((size_t)n * V, 3.0);
    // row 1: the maximum twice (the lower index must win); row 2: all equal; row 3: the maximum last
    int a = V / 3, b = V - 5;
    x[(size_t)1 * V + a] = x[(size_t)1 * V + b] = 100.0f;
    for (int i = 0; i < V; i++) x[(size_t)2 * V + i] = -1.5f;
    x[(size_t)3 * V + V - 1] = 50.0f;
    int32_t ref[7];
    for (int r = 0; r < n; r++) { // the CPU sampler's greedy rule: strict '>' over increasing ids
        ref[r] = 0;
        for (int i = 1; i < V; i++)
            if (x[(size_t)r * V + i] > x[(size_t)r * V + ref[r]]) ref[r] = i;
    }
    float *x_d = up_f32(x, (size_t)n * V);
    int32_t *idx_d = poison(n * sizeof(int32_t));
    ot_cuda_argmax_rows(g_s, idx_d, x_d, n, V);
    int32_t *got = down_i32(idx_d, n);
    int diff = 0;
    for (int r = 0; r < n; r++) diff += got[r] != ref[r];
    ot_test_checks++;
    if (diff) ot_test_failures++;
    printf("%s %-48s %d of %d rows differ (row 1: %d, want %d)\n", diff ? "FAIL" : "ok  ", "argmax_rows (exact, ties)",
           diff, n, got[1], ref[1]);
    free(x), free(got);
    dfree(x_d), dfree(idx_d);
}

// ---- router ------------------------------------------------------------------------------------------------------
static void test_router(const sizes *z) {
    int T = z->T, E = z->rE, k = z->rk;
    float *logits = randn_bf16((size_t)T * E, 2.0);
    for (int t = 0; t < T; t += 3) logits[(size_t)t * E + 5] = logits[(size_t)t * E + 2]; // ties: lower index first
    int32_t *idx = ot_malloc((size_t)T * k * sizeof(int32_t));
    float *w = zeros_f((size_t)T * k);
    ot_router_topk_fwd(idx, w, logits, T, E, k);
    ot_bf16 *lg_d = up_bf16(logits, (size_t)T * E);
    int32_t *idx_d = poison((size_t)T * k * 4);
    float *w_d = poison((size_t)T * k * 4);
    ot_cuda_router_topk_fwd(g_s, idx_d, w_d, lg_d, T, E, k);
    int32_t *gidx = down_i32(idx_d, (size_t)T * k);
    size_t diff = 0;
    for (size_t i = 0; i < (size_t)T * k; i++) diff += gidx[i] != idx[i];
    ot_test_checks++;
    if (diff) ot_test_failures++;
    printf("%s %-48s %zu of %zu choices differ\n", diff ? "FAIL" : "ok  ", "router_topk_fwd idx (exact, ties)", diff,
           (size_t)T * k);
    check_f32("router_topk_fwd w (fp32)", w_d, w, (size_t)T * k, TOL_F32);

    float *dw = randn((size_t)T * k, 1.0), *grad = zeros_f((size_t)T * E);
    ot_router_topk_bwd(grad, dw, w, idx, T, E, k);
    float *dl0 = init_like(grad, (size_t)T * E, 1), *ref = plus(dl0, grad, (size_t)T * E);
    ot_bf16 *dl_d = up_bf16(dl0, (size_t)T * E);
    float *dw_d = up_f32(dw, (size_t)T * k), *wref_d = up_f32(w, (size_t)T * k);
    int32_t *idxref_d = up_i32(idx, (size_t)T * k);
    ot_cuda_router_topk_bwd(g_s, dl_d, dw_d, wref_d, idxref_d, T, E, k);
    check_bf16("router_topk_bwd dlogits", dl_d, ref, (size_t)T * E, TOL_BF16);
    expect_clean("router");

    int32_t bad = E;
    OT_CUDA_CHECK(cudaMemcpy(idxref_d + 1, &bad, sizeof(bad), cudaMemcpyHostToDevice));
    ot_cuda_router_topk_bwd(g_s, dl_d, dw_d, wref_d, idxref_d, T, E, k);
    expect_flagged("router_topk_bwd with expert index E");
    free(logits), free(idx), free(w), free(gidx), free(dw), free(grad), free(dl0), free(ref);
    dfree(lg_d), dfree(idx_d), dfree(w_d), dfree(dl_d), dfree(dw_d), dfree(wref_d), dfree(idxref_d);
}

// ---- SwiGLU ------------------------------------------------------------------------------------------------------
// I a multiple of 4 takes the vector kernels, any other I the one-output kernels.
static void test_swiglu(int n, int I) {
    float alpha = 1.702f, limit = 7.0f;
    size_t ng = (size_t)n * 2 * I, na = (size_t)n * I;
    float *gu = randn_bf16(ng, 4.0); // wide enough that both clamps are hit
    for (size_t i = 0; i < ng; i += 37) gu[i] = (i / 37) % 2 ? limit : -limit; // values exactly at the limits
    float *act = zeros_f(na);
    ot_swiglu_fwd(act, gu, n, I, alpha, limit);
    ot_bf16 *gu_d = up_bf16(gu, ng), *act_d = poison(na * 2);
    ot_cuda_swiglu_fwd(g_s, act_d, gu_d, n, I, alpha, limit);
    char what[96];
    snprintf(what, sizeof(what), "swiglu_fwd (clamped, interleaved) I %d", I);
    check_bf16(what, act_d, act, na, TOL_BF16);
    float *dact = randn_bf16(na, 1.0), *grad = zeros_f(ng);
    ot_swiglu_bwd(grad, dact, gu, n, I, alpha, limit);
    ot_bf16 *dact_d = up_bf16(dact, na), *dgu_d = poison(ng * 2); // overwritten
    const float *ref = grad;
    ot_cuda_swiglu_bwd(g_s, dgu_d, dact_d, gu_d, n, I, alpha, limit);
    snprintf(what, sizeof(what), "swiglu_bwd dgu I %d", I);
    check_bf16(what, dgu_d, ref, ng, TOL_BF16);
    expect_clean("swiglu");
    free(gu), free(act), free(dact), free(grad);
    dfree(gu_d), dfree(act_d), dfree(dact_d), dfree(dgu_d);
}

// ---- MoE ---------------------------------------------------------------------------------------------------------
// Routing with k distinct experts per token; expert 1 is never chosen (an empty group) when there are enough.
static int32_t *make_routes(int T, int E, int k) {
    int32_t *idx = ot_malloc((size_t)T * k * sizeof(int32_t));
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e, dup;
            do {
                e = rand_int(E);
                if (E > k + 1 && e == 1) e = 0;
                dup = 0;
                for (int jj = 0; jj < j; jj++) dup |= idx[(size_t)t * k + jj] == e;
            } while (dup);
            idx[(size_t)t * k + j] = e;
        }
    return idx;
}

// The reference plan: the CPU twin's (ot_moe_plan: pairs grouped by expert, stable in pair id).
typedef struct {
    int32_t *offsets, *perm, *inv;
} ref_plan;
static ref_plan make_ref_plan(const int32_t *idx, int n_pairs, int E) {
    ref_plan p = {ot_malloc((E + 1) * sizeof(int32_t)), ot_malloc(n_pairs * sizeof(int32_t)),
                  ot_malloc(n_pairs * sizeof(int32_t))};
    ot_moe_plan(p.offsets, p.perm, p.inv, idx, n_pairs, E);
    return p;
}
static void free_ref_plan(ref_plan *p) { free(p->offsets), free(p->perm), free(p->inv); }

static void count_check(const char *what, size_t bad, size_t n) {
    ot_test_checks++;
    if (bad) ot_test_failures++;
    printf("%s %-48s %zu of %zu differ\n", bad ? "FAIL" : "ok  ", what, bad, n);
}

static void test_moe_plan(const ot_cuda_moe_plan *plan, const ref_plan *rp, int T, int k, int E) {
    int n = T * k;
    int32_t *off = down_i32(plan->offsets, E + 1), *perm = down_i32(plan->perm, n), *inv = down_i32(plan->inv, n);
    int32_t *rt = down_i32(plan->row_token, n), *te = down_i32(plan->tile_expert, plan->n_tiles);
    int32_t *tr = down_i32(plan->tile_row0, plan->n_tiles);
    size_t bad = 0;
    for (int e = 0; e <= E; e++) bad += off[e] != rp->offsets[e];
    for (int i = 0; i < n; i++) bad += (perm[i] != rp->perm[i]) + (inv[i] != rp->inv[i]) + (rt[i] != rp->perm[i] / k);
    count_check("moe_plan offsets/perm/inv/row_token (exact)", bad, (size_t)3 * n + E + 1);
    // Every permuted row is covered by exactly one tile of its own expert.
    int *cover = ot_calloc(n, sizeof(int));
    bad = 0;
    for (int i = 0; i < plan->n_tiles; i++) {
        if (te[i] < 0) continue;
        int e = te[i];
        if (e >= E || tr[i] < off[e] || tr[i] >= off[e + 1]) {
            bad++;
            continue;
        }
        for (int r = tr[i]; r < tr[i] + OT_CUDA_MOE_TILE_ROWS && r < off[e + 1]; r++) cover[r]++;
    }
    for (int r = 0; r < n; r++) bad += cover[r] != 1;
    count_check("moe_plan tiles cover each row once", bad, (size_t)n);
    free(off), free(perm), free(inv), free(rt), free(te), free(tr), free(cover);
}

// Gather the rows of expert e in permuted order: dst[j] = src[row_of(perm row offsets[e] + j)].
static float *gather_rows(const float *src, int cols, const ref_plan *rp, int e, int k, int by_token) {
    int n = rp->offsets[e + 1] - rp->offsets[e];
    float *dst = ot_malloc(((size_t)n * cols + 1) * sizeof(float));
    for (int j = 0; j < n; j++) {
        int row = rp->offsets[e] + j;
        int srow = by_token ? rp->perm[row] / k : row;
        memcpy(dst + (size_t)j * cols, src + (size_t)srow * cols, (size_t)cols * sizeof(float));
    }
    return dst;
}
static void scatter_rows(float *dst, const float *src, int cols, const ref_plan *rp, int e) {
    int n = rp->offsets[e + 1] - rp->offsets[e];
    memcpy(dst + (size_t)rp->offsets[e] * cols, src, (size_t)n * cols * sizeof(float));
}

// Random expert weights [E, rows, cols], as MXFP4 (random codes, scale bytes near 2^-4) or dense bf16; the host
// copy for the CPU reference and the device copy.
typedef struct {
    ot_expert_weight cpu;
    ot_cuda_expert_weight gpu;
    uint8_t *blocks, *scales;
    float *dense, *bias;
    void *d_blocks, *d_scales, *d_dense, *d_bias;
} test_weight;
static test_weight make_weight(int kind, int E, int rows, int cols) {
    test_weight w;
    memset(&w, 0, sizeof(w));
    size_t n = (size_t)E * rows * cols, G = cols / 32;
    w.bias = randn_bf16((size_t)E * rows, 0.5);
    w.d_bias = up_bf16(w.bias, (size_t)E * rows);
    if (kind == OT_EXPERT_MXFP4) {
        w.blocks = ot_malloc((size_t)E * rows * G * 16);
        w.scales = ot_malloc((size_t)E * rows * G);
        for (size_t i = 0; i < (size_t)E * rows * G * 16; i++) w.blocks[i] = (uint8_t)ot_rng_u64(&g_rng);
        for (size_t i = 0; i < (size_t)E * rows * G; i++) w.scales[i] = (uint8_t)(121 + rand_int(4));
        w.d_blocks = up_bytes(w.blocks, (size_t)E * rows * G * 16);
        w.d_scales = up_bytes(w.scales, (size_t)E * rows * G);
    } else {
        w.dense = randn_bf16(n, 1.0 / sqrt(cols));
        w.d_dense = up_bf16(w.dense, n);
    }
    w.cpu = (ot_expert_weight){kind, E, rows, cols, w.blocks, w.scales, w.dense};
    w.gpu = (ot_cuda_expert_weight){kind, E, rows, cols, w.d_blocks, w.d_scales, w.d_dense, w.d_bias};
    return w;
}
static void free_weight(test_weight *w) {
    free(w->blocks), free(w->scales), free(w->dense), free(w->bias);
    dfree(w->d_bias);
    if (w->d_blocks) dfree(w->d_blocks), dfree(w->d_scales);
    if (w->d_dense) dfree(w->d_dense);
}

// dxa[p, j] = scale · Σ_o dy[p, o] · B_e[o, j] for every permuted row p (expert e), as ot_lora_bwd forms it.
static float *moe_lora_dxa_ref(const float *dy, const float *B, const ref_plan *rp, int E, int out, int r,
                               float scale) {
    float *dxa = zeros_f((size_t)rp->offsets[E] * r);
    for (int e = 0; e < E; e++)
        for (int p = rp->offsets[e]; p < rp->offsets[e + 1]; p++)
            for (int j = 0; j < r; j++) {
                double acc = 0;
                for (int o = 0; o < out; o++) acc += (double)dy[(size_t)p * out + o] * B[((size_t)e * out + o) * r + j];
                dxa[(size_t)p * r + j] = (float)(scale * acc);
            }
    return dxa;
}

// The grouped product of one projection, forward (gathered token rows or already-permuted rows) and backward
// (overwrite and accumulate), against ot_expert_matmul_* per expert group, with MXFP4 weights through `path`
// (OT_CUDA_MOE_PATH_*: each implementation the op can choose). With r > 0, an expert LoRA of rank r is expanded
// by the product (ot_cuda_moe_lora_term: u = xa forward, dxa backward), against ot_lora_fwd / ot_lora_bwd added to
// the product per expert group as the CPU graph does.
static void test_moe_matmul(const ot_cuda_moe_plan *plan, const ref_plan *rp, int kind, int rows, int cols,
                            int path, int r) {
    int T = plan->T, k = plan->k, E = plan->E, n = plan->n_pairs;
    const float scale = 1.5f;
    char what[96], lname[24] = "";
    const char *kname = kind == OT_EXPERT_DENSE                 ? "dense"
                        : path == OT_CUDA_MOE_PATH_LIBRARY      ? "mxfp4/library"
                        : path == OT_CUDA_MOE_PATH_FUSED        ? "mxfp4/fused"
                                                                : "mxfp4";
    if (r) snprintf(lname, sizeof lname, " + LoRA r%d", r);
    ot_cuda_moe_set_path(path);
    test_weight w = make_weight(kind, E, rows, cols);
    // the adapter: A [E, r, cols] (in = cols), B [E, rows, r] (out = rows)
    float *A = r ? randn((size_t)E * r * cols, 1.0 / sqrt(cols)) : NULL;
    float *B = r ? randn((size_t)E * rows * r, 0.2) : NULL;
    float *A_d = r ? up_f32(A, (size_t)E * r * cols) : NULL, *B_d = r ? up_f32(B, (size_t)E * rows * r) : NULL;
    for (int gather = 1; gather >= 0; gather--) {
        int xrows = gather ? T : n;
        float *x = randn_bf16((size_t)xrows * cols, 1.0), *ref = zeros_f((size_t)n * rows);
        float *xa = zeros_f((size_t)n * r + 1);
        for (int e = 0; e < E; e++) {
            int ne = rp->offsets[e + 1] - rp->offsets[e];
            float *xe = gather_rows(x, cols, rp, e, k, gather), *ye = zeros_f((size_t)ne * rows);
            float *be = w.bias + (size_t)e * rows;
            ot_expert_matmul_fwd(ye, xe, &w.cpu, e, be, ne);
            if (r) ot_lora_fwd(ye, xa + (size_t)rp->offsets[e] * r, xe, A + (size_t)e * r * cols,
                               B + (size_t)e * rows * r, ne, cols, r, rows, scale);
            scatter_rows(ref, ye, rows, rp, e);
            free(xe), free(ye);
        }
        ot_bf16 *x_d = up_bf16(x, (size_t)xrows * cols), *y_d = poison((size_t)n * rows * 2);
        float *xa_d = r ? up_f32(xa, (size_t)n * r) : NULL;
        const ot_cuda_moe_lora_term term = {xa_d, B_d, r, scale};
        ot_cuda_moe_matmul_fwd(g_s, y_d, x_d, gather, &w.gpu, plan, r ? &term : NULL);
        snprintf(what, sizeof(what), "moe_matmul_fwd %s [%d x %d]%s%s", kname, rows, cols, gather ? " gather" : "",
                 lname);
        check_bf16(what, y_d, ref, (size_t)n * rows, TOL_BF16);
        free(x), free(ref), free(xa);
        dfree(x_d), dfree(y_d);
        if (xa_d) dfree(xa_d);
    }
    float *dy = randn_bf16((size_t)n * rows, 1.0), *grad = zeros_f((size_t)n * cols);
    for (int e = 0; e < E; e++) {
        int ne = rp->offsets[e + 1] - rp->offsets[e];
        float *dye = gather_rows(dy, rows, rp, e, k, 0), *dxe = zeros_f((size_t)ne * cols);
        ot_expert_matmul_bwd(dxe, dye, &w.cpu, e, ne);
        if (r) ot_lora_bwd(dxe, NULL, NULL, dye, NULL, NULL, A + (size_t)e * r * cols, B + (size_t)e * rows * r, ne,
                           cols, r, rows, scale);
        scatter_rows(grad, dxe, cols, rp, e);
        free(dye), free(dxe);
    }
    float *dxa = r ? moe_lora_dxa_ref(dy, B, rp, E, rows, r, scale) : NULL;
    float *dxa_d = r ? up_f32(dxa, (size_t)n * r) : NULL;
    const ot_cuda_moe_lora_term term = {dxa_d, A_d, r, 1.0f}, *t = r ? &term : NULL;
    ot_bf16 *dy_d = up_bf16(dy, (size_t)n * rows), *dx_d = poison((size_t)n * cols * 2);
    ot_cuda_moe_matmul_bwd(g_s, dx_d, dy_d, &w.gpu, plan, 0, t);
    snprintf(what, sizeof(what), "moe_matmul_bwd %s [%d x %d] dx%s", kname, rows, cols, lname);
    check_bf16(what, dx_d, grad, (size_t)n * cols, TOL_BF16);
    float *dx0 = init_like(grad, (size_t)n * cols, 1), *ref = plus(dx0, grad, (size_t)n * cols);
    ot_bf16 *dxacc_d = up_bf16(dx0, (size_t)n * cols);
    ot_cuda_moe_matmul_bwd(g_s, dxacc_d, dy_d, &w.gpu, plan, 1, t);
    snprintf(what, sizeof(what), "moe_matmul_bwd %s [%d x %d] dx +=%s", kname, rows, cols, lname);
    check_bf16(what, dxacc_d, ref, (size_t)n * cols, TOL_BF16);
    expect_clean("moe_matmul");
    free(dy), free(grad), free(dx0), free(ref), free(A), free(B), free(dxa);
    dfree(dy_d), dfree(dx_d), dfree(dxacc_d);
    if (r) dfree(A_d), dfree(B_d), dfree(dxa_d);
    free_weight(&w);
    ot_cuda_moe_set_path(OT_CUDA_MOE_PATH_AUTO);
}

// Every MXFP4 implementation the op can choose for a plan (auto picks one of them by the rows per expert).
static void test_moe_matmul_mxfp4_paths(const ot_cuda_moe_plan *plan, const ref_plan *rp, int rows, int cols) {
    test_moe_matmul(plan, rp, OT_EXPERT_MXFP4, rows, cols, OT_CUDA_MOE_PATH_AUTO, 0);
    test_moe_matmul(plan, rp, OT_EXPERT_MXFP4, rows, cols, OT_CUDA_MOE_PATH_LIBRARY, 0);
    test_moe_matmul(plan, rp, OT_EXPERT_MXFP4, rows, cols, OT_CUDA_MOE_PATH_FUSED, 0);
}

// The fused kernels' MXFP4 decode, exactly: with one-hot activations each output is one weight, so the forward
// must give W_e[c, k_p] and the backward W_e[n_p, c] bit for bit as ot_mxfp4_dequant_row decodes them, for every
// code and every scale byte whose weights are all finite normal bf16 (2..252: the decode's integer route; the
// others take mx_dequant16's float route). No bias: a sum would round.
static void test_moe_mxfp4_decode(const ot_cuda_moe_plan *plan, const ref_plan *rp) {
    const int E = plan->E, n = plan->n_pairs, rows = 128, cols = 256, G = cols / 32;
    ot_cuda_moe_set_path(OT_CUDA_MOE_PATH_FUSED);
    test_weight w = make_weight(OT_EXPERT_MXFP4, E, rows, cols);
    for (size_t i = 0; i < (size_t)E * rows * G; i++) w.scales[i] = (uint8_t)(2 + (i * 7 + i / 251) % 251);
    OT_CUDA_CHECK(cudaMemcpy(w.d_scales, w.scales, (size_t)E * rows * G, cudaMemcpyHostToDevice));
    w.gpu.bias = NULL;
    float *W = ot_malloc((size_t)E * rows * cols * sizeof(float)); // [E, rows, cols] decoded on the host
    for (size_t r = 0; r < (size_t)E * rows; r++)
        ot_mxfp4_dequant_row(W + r * cols, w.blocks + r * G * 16, w.scales + r * G, cols);
    int *row_e = ot_malloc(n * sizeof(int)); // expert of each permuted row
    for (int e = 0; e < E; e++)
        for (int p = rp->offsets[e]; p < rp->offsets[e + 1]; p++) row_e[p] = e;
    // The nibbles 16-byte aligned (copied 16 bytes at a time), then only 8-byte aligned (8 at a time).
    const size_t nb = (size_t)E * rows * G * 16;
    uint8_t *shifted = NULL;
    OT_CUDA_CHECK(cudaMalloc((void **)&shifted, nb + 8));
    OT_CUDA_CHECK(cudaMemcpy(shifted + 8, w.blocks, nb, cudaMemcpyHostToDevice));
    for (int step = 0; step < 4; step++) {
        const int bwd = step & 1, shift = step >> 1;
        w.gpu.blocks = shift ? shifted + 8 : w.d_blocks;
        const int in = bwd ? rows : cols, out = bwd ? cols : rows; // input / output row lengths
        float *x = zeros_f((size_t)n * in), *ref = zeros_f((size_t)n * out);
        for (int p = 0; p < n; p++) {
            const int hot = (p * 37) % in;
            x[(size_t)p * in + hot] = 1.0f;
            const float *We = W + (size_t)row_e[p] * rows * cols;
            for (int c = 0; c < out; c++)
                ref[(size_t)p * out + c] = bwd ? We[(size_t)hot * cols + c] : We[(size_t)c * cols + hot];
        }
        ot_bf16 *x_d = up_bf16(x, (size_t)n * in), *y_d = poison((size_t)n * out * 2);
        if (bwd) ot_cuda_moe_matmul_bwd(g_s, y_d, x_d, &w.gpu, plan, 0, NULL);
        else ot_cuda_moe_matmul_fwd(g_s, y_d, x_d, 0, &w.gpu, plan, NULL);
        float *y = down_bf16(y_d, (size_t)n * out);
        size_t bad = 0;
        // by value: a weight −0 comes out +0 (its product plus the other products' +0)
        for (size_t i = 0; i < (size_t)n * out; i++) bad += !(y[i] == ref[i]);
        char name[96];
        snprintf(name, sizeof name, "moe_matmul_%s mxfp4/fused one-hot = decoded weights (exact%s)",
                 bwd ? "bwd" : "fwd", shift ? ", nibbles 8-byte aligned" : "");
        count_check(name, bad, (size_t)n * out);
        free(x), free(ref), free(y);
        dfree(x_d), dfree(y_d);
    }
    expect_clean("moe_matmul mxfp4 decode");
    w.gpu.blocks = w.d_blocks;
    OT_CUDA_CHECK(cudaFree(shifted));
    free(W), free(row_e);
    free_weight(&w);
    ot_cuda_moe_set_path(OT_CUDA_MOE_PATH_AUTO);
}

// Full training: the dense experts' weight and bias gradients, against ot_expert_matmul_bwd_weight on each expert's
// gathered rows; accumulation onto non-zero buffers; fp32 sums of bf16 products (TOL_F32 relative, norm-wise).
static void test_moe_weight_grad(const ot_cuda_moe_plan *plan, const ref_plan *rp, int rows, int cols, int gather) {
    int T = plan->T, k = plan->k, E = plan->E, n = plan->n_pairs;
    test_weight w = make_weight(OT_EXPERT_DENSE, E, rows, cols);
    int xrows = gather ? T : n;
    float *x = randn_bf16((size_t)xrows * cols, 1.0), *dy = randn_bf16((size_t)n * rows, 1.0);
    size_t nw = (size_t)E * rows * cols, nb = (size_t)E * rows;
    float *dW0 = randn(nw, 1.0), *db0 = randn(nb, 1.0); // accumulate onto non-zero gradients
    float *dW = ot_malloc(nw * sizeof(float)), *db = ot_malloc(nb * sizeof(float));
    memcpy(dW, dW0, nw * sizeof(float));
    memcpy(db, db0, nb * sizeof(float));
    for (int e = 0; e < E; e++) {
        int ne = rp->offsets[e + 1] - rp->offsets[e];
        float *xe = gather_rows(x, cols, rp, e, k, gather), *dye = gather_rows(dy, rows, rp, e, k, 0);
        ot_expert_matmul_bwd_weight(dW + (size_t)e * rows * cols, db + (size_t)e * rows, dye, xe, &w.cpu, ne);
        free(xe), free(dye);
    }
    ot_bf16 *x_d = up_bf16(x, (size_t)xrows * cols), *dy_d = up_bf16(dy, (size_t)n * rows);
    float *dW_d = up_f32(dW0, nw), *db_d = up_f32(db0, nb);
    ot_cuda_moe_matmul_bwd_weight(g_s, dW_d, db_d, dy_d, x_d, gather, &w.gpu, plan);
    char what[96];
    snprintf(what, sizeof what, "moe_matmul_bwd_weight [%d x %d]%s dW +=", rows, cols, gather ? " gather" : "");
    check_f32(what, dW_d, dW, nw, TOL_F32);
    snprintf(what, sizeof what, "moe_matmul_bwd_weight [%d x %d]%s db +=", rows, cols, gather ? " gather" : "");
    check_f32(what, db_d, db, nb, TOL_F32);
    expect_clean("moe_matmul_bwd_weight");
    free(x), free(dy), free(dW0), free(db0), free(dW), free(db);
    dfree(x_d), dfree(dy_d), dfree(dW_d), dfree(db_d);
    free_weight(&w);
}

// Combine (weighted sum of a token's expert outputs), its backward, and the un-permutation of input gradients,
// against their CPU twins (kernels/cpu/moe.c).
static void test_moe_combine(const ot_cuda_moe_plan *plan, const ref_plan *rp, int H) {
    int T = plan->T, k = plan->k, n = plan->n_pairs;
    float *y = randn_bf16((size_t)n * H, 1.0), *w = randn((size_t)T * k, 0.5), *ref = zeros_f((size_t)T * H);
    ot_moe_combine_fwd(ref, y, w, rp->inv, T, k, H);
    ot_bf16 *y_d = up_bf16(y, (size_t)n * H), *out_d = poison((size_t)T * H * 2);
    float *w_d = up_f32(w, (size_t)T * k);
    ot_cuda_moe_combine_fwd(g_s, out_d, y_d, w_d, plan, H);
    check_bf16("moe_combine_fwd", out_d, ref, (size_t)T * H, TOL_BF16);

    float *dout = randn_bf16((size_t)T * H, 1.0), *dy_ref = zeros_f((size_t)n * H);
    float *dw0 = init_like(w, (size_t)T * k, 0), *dw_ref = copy_f(dw0, (size_t)T * k);
    ot_moe_combine_bwd(dy_ref, dw_ref, dout, y, w, rp->perm, n, k, H); // dw_ref = dw0 + the gradient
    ot_bf16 *dout_d = up_bf16(dout, (size_t)T * H), *dy_d = poison((size_t)n * H * 2);
    float *dw_d = up_f32(dw0, (size_t)T * k);
    ot_cuda_moe_combine_bwd(g_s, dy_d, dw_d, dout_d, y_d, w_d, plan, H);
    check_bf16("moe_combine_bwd dy", dy_d, dy_ref, (size_t)n * H, TOL_BF16);
    check_f32("moe_combine_bwd dw (fp32)", dw_d, dw_ref, (size_t)T * k, TOL_F32);
    ot_bf16 *dy2_d = poison((size_t)n * H * 2); // without dw: y is not read (NULL)
    ot_cuda_moe_combine_bwd(g_s, dy2_d, NULL, dout_d, NULL, w_d, plan, H);
    check_bf16("moe_combine_bwd dy without dw and y", dy2_d, dy_ref, (size_t)n * H, TOL_BF16);
    dfree(dy2_d);

    float *dxp = randn_bf16((size_t)n * H, 1.0), *dx0 = init_like(y, (size_t)T * H, 1);
    float *dx_ref = copy_f(dx0, (size_t)T * H);
    ot_moe_unpermute_add(dx_ref, dxp, rp->perm, n, k, H); // dx_ref = dx0 + the gathered gradient
    ot_bf16 *dxp_d = up_bf16(dxp, (size_t)n * H), *dx_d = up_bf16(dx0, (size_t)T * H);
    ot_cuda_moe_unpermute_add(g_s, dx_d, dxp_d, plan, H);
    check_bf16("moe_unpermute_add", dx_d, dx_ref, (size_t)T * H, TOL_BF16);
    expect_clean("moe_combine");
    free(y), free(w), free(ref), free(dout), free(dy_ref), free(dw0), free(dw_ref), free(dxp), free(dx0), free(dx_ref);
    dfree(y_d), dfree(out_d), dfree(w_d), dfree(dout_d), dfree(dy_d), dfree(dw_d), dfree(dxp_d), dfree(dx_d);
}

// The routing weights' gradient from the down projection's input gradient against its CPU twin; one pair of
// weight 0 (it must add nothing), with and without the expert biases.
static void test_moe_route_grad(const ot_cuda_moe_plan *plan, const ref_plan *rp, const int32_t *idx,
                                const int32_t *idx_d, int I, int H, int with_bias) {
    int T = plan->T, k = plan->k, n = plan->n_pairs, E = plan->E;
    float *dact = randn_bf16((size_t)n * I, 1.0), *act = randn_bf16((size_t)n * I, 1.0);
    float *dout = randn_bf16((size_t)T * H, 1.0), *bias = with_bias ? randn_bf16((size_t)E * H, 0.5) : NULL;
    float *w = randn((size_t)T * k, 0.5);
    for (int q = 0; q < T * k; q++) w[q] = fabsf(w[q]) + 0.05f; // softmax weights: positive ...
    w[3] = 0.0f;                                                   // ... or exactly 0 after underflow
    float *dw0 = init_like(w, (size_t)T * k, 0), *dw_ref = copy_f(dw0, (size_t)T * k);
    ot_moe_route_grad(dw_ref, dact, act, dout, bias, w, idx, rp->perm, n, k, I, H);
    ot_bf16 *dact_d = up_bf16(dact, (size_t)n * I), *act_d = up_bf16(act, (size_t)n * I);
    ot_bf16 *dout_d = up_bf16(dout, (size_t)T * H), *bias_d = bias ? up_bf16(bias, (size_t)E * H) : NULL;
    float *w_d = up_f32(w, (size_t)T * k), *dw_d = up_f32(dw0, (size_t)T * k);
    ot_cuda_moe_route_grad(g_s, dw_d, dact_d, act_d, dout_d, bias_d, w_d, idx_d, plan, I, H);
    char what[96];
    snprintf(what, sizeof what, "moe_route_grad dw (fp32) I %d H %d%s", I, H, with_bias ? " bias" : "");
    check_f32(what, dw_d, dw_ref, (size_t)T * k, TOL_F32);
    float *dw = down_f32(dw_d, (size_t)T * k);
    CHECK(dw[3] == dw0[3], "moe_route_grad: the pair of weight 0 changed its dw");
    expect_clean("moe_route_grad");
    free(dact), free(act), free(dout), free(bias), free(w), free(dw0), free(dw_ref), free(dw);
    dfree(dact_d), dfree(act_d), dfree(dout_d), dfree(w_d), dfree(dw_d);
    if (bias_d) dfree(bias_d);
}

// Expert LoRA on the permuted groups against ot_lora_fwd / ot_lora_bwd per expert.
static void test_moe_lora(const ot_cuda_moe_plan *plan, const ref_plan *rp, int in, int out, int r, int gather) {
    int T = plan->T, k = plan->k, E = plan->E, n = plan->n_pairs, xrows = gather ? T : n;
    float scale = 1.5f;
    char what[96];
    const char *g = gather ? " gather" : "";
    float *x = randn_bf16((size_t)xrows * in, 1.0), *A = randn((size_t)E * r * in, 1.0 / sqrt(in));
    float *B = randn((size_t)E * out * r, 0.2);
    float *gy = zeros_f((size_t)n * out), *xa = zeros_f((size_t)n * r);
    for (int e = 0; e < E; e++) {
        int ne = rp->offsets[e + 1] - rp->offsets[e];
        float *xe = gather_rows(x, in, rp, e, k, gather), *ye = zeros_f((size_t)ne * out), *xae = zeros_f((size_t)ne * r);
        ot_lora_fwd(ye, xae, xe, A + (size_t)e * r * in, B + (size_t)e * out * r, ne, in, r, out, scale);
        scatter_rows(gy, ye, out, rp, e);
        scatter_rows(xa, xae, r, rp, e);
        free(xe), free(ye), free(xae);
    }
    float *y0 = init_like(gy, (size_t)n * out, 1), *y_ref = plus(y0, gy, (size_t)n * out);
    ot_bf16 *x_d = up_bf16(x, (size_t)xrows * in), *y_d = up_bf16(y0, (size_t)n * out);
    float *A_d = up_f32(A, (size_t)E * r * in), *B_d = up_f32(B, (size_t)E * out * r), *xa_d = poison((size_t)n * r * 4);
    ot_cuda_moe_lora_fwd(g_s, y_d, xa_d, x_d, gather, A_d, B_d, plan, in, r, out, scale);
    snprintf(what, sizeof(what), "moe_lora_fwd y%s", g);
    check_bf16(what, y_d, y_ref, (size_t)n * out, TOL_BF16);
    snprintf(what, sizeof(what), "moe_lora_fwd xa (fp32)%s", g);
    check_f32(what, xa_d, xa, (size_t)n * r, TOL_F32);
    float *xa_only_d = poison((size_t)n * r * 4); // without y: xa alone
    ot_cuda_moe_lora_fwd(g_s, NULL, xa_only_d, x_d, gather, A_d, B_d, plan, in, r, out, scale);
    snprintf(what, sizeof(what), "moe_lora_fwd xa without y%s", g);
    check_f32(what, xa_only_d, xa, (size_t)n * r, TOL_F32);
    dfree(xa_only_d);

    float *dy = randn_bf16((size_t)n * out, 1.0), *gdx = zeros_f((size_t)n * in);
    float *gdA = zeros_f((size_t)E * r * in), *gdB = zeros_f((size_t)E * out * r);
    for (int e = 0; e < E; e++) {
        int ne = rp->offsets[e + 1] - rp->offsets[e];
        float *xe = gather_rows(x, in, rp, e, k, gather), *dye = gather_rows(dy, out, rp, e, k, 0);
        float *xae = gather_rows(xa, r, rp, e, k, 0), *dxe = zeros_f((size_t)ne * in);
        ot_lora_bwd(dxe, gdA + (size_t)e * r * in, gdB + (size_t)e * out * r, dye, xe, xae, A + (size_t)e * r * in,
                    B + (size_t)e * out * r, ne, in, r, out, scale);
        scatter_rows(gdx, dxe, in, rp, e);
        free(xe), free(dye), free(xae), free(dxe);
    }
    float *dx0 = init_like(gdx, (size_t)n * in, 1), *dA0 = init_like(gdA, (size_t)E * r * in, 0);
    float *dB0 = init_like(gdB, (size_t)E * out * r, 0);
    float *dx_ref = plus(dx0, gdx, (size_t)n * in), *dA_ref = plus(dA0, gdA, (size_t)E * r * in);
    float *dB_ref = plus(dB0, gdB, (size_t)E * out * r);
    ot_bf16 *dy_d = up_bf16(dy, (size_t)n * out), *dx_d = up_bf16(dx0, (size_t)n * in);
    float *dA_d = up_f32(dA0, (size_t)E * r * in), *dB_d = up_f32(dB0, (size_t)E * out * r);
    float *xa_ref_d = up_f32(xa, (size_t)n * r), *dxa_d = poison((size_t)n * r * 4);
    float *dxa_ref = moe_lora_dxa_ref(dy, B, rp, E, out, r, scale);
    ot_cuda_moe_lora_bwd(g_s, dx_d, dxa_d, dA_d, dB_d, dy_d, x_d, gather, xa_ref_d, A_d, B_d, plan, in, r, out, scale);
    snprintf(what, sizeof(what), "moe_lora_bwd dx_perm%s", g);
    check_bf16(what, dx_d, dx_ref, (size_t)n * in, TOL_BF16);
    snprintf(what, sizeof(what), "moe_lora_bwd dxa (fp32)%s", g);
    check_f32(what, dxa_d, dxa_ref, (size_t)n * r, TOL_F32);
    snprintf(what, sizeof(what), "moe_lora_bwd dA (fp32)%s", g);
    check_f32(what, dA_d, dA_ref, (size_t)E * r * in, TOL_F32);
    snprintf(what, sizeof(what), "moe_lora_bwd dB (fp32)%s", g);
    check_f32(what, dB_d, dB_ref, (size_t)E * out * r, TOL_F32);
    // without dx_perm (a product adds dxa·A_e): dxa and dA alone, then dxa alone
    float *dxa2_d = poison((size_t)n * r * 4), *dA2_d = up_f32(dA0, (size_t)E * r * in);
    ot_cuda_moe_lora_bwd(g_s, NULL, dxa2_d, dA2_d, NULL, dy_d, x_d, gather, xa_ref_d, A_d, B_d, plan, in, r, out,
                         scale);
    snprintf(what, sizeof(what), "moe_lora_bwd dxa without dx_perm%s", g);
    check_f32(what, dxa2_d, dxa_ref, (size_t)n * r, TOL_F32);
    snprintf(what, sizeof(what), "moe_lora_bwd dA without dx_perm%s", g);
    check_f32(what, dA2_d, dA_ref, (size_t)E * r * in, TOL_F32);
    float *dxa3_d = poison((size_t)n * r * 4);
    ot_cuda_moe_lora_bwd(g_s, NULL, dxa3_d, NULL, NULL, dy_d, NULL, gather, NULL, A_d, B_d, plan, in, r, out, scale);
    snprintf(what, sizeof(what), "moe_lora_bwd dxa alone%s", g);
    check_f32(what, dxa3_d, dxa_ref, (size_t)n * r, TOL_F32);
    free(dxa_ref);
    dfree(dxa_d), dfree(dxa2_d), dfree(dA2_d), dfree(dxa3_d);
    expect_clean("moe_lora");
    free(x), free(A), free(B), free(gy), free(xa), free(y0), free(y_ref), free(dy), free(gdx), free(gdA), free(gdB);
    free(dx0), free(dA0), free(dB0), free(dx_ref), free(dA_ref), free(dB_ref);
    dfree(x_d), dfree(y_d), dfree(A_d), dfree(B_d), dfree(xa_d), dfree(dy_d), dfree(dx_d), dfree(dA_d), dfree(dB_d);
    dfree(xa_ref_d);
}

// A routing (idx [T, k], taken over) as a built GPU plan and its reference, the plan checked against it.
typedef struct {
    ot_cuda_moe_plan plan;
    ref_plan rp;
    int32_t *idx, *idx_d;
} test_plan;
static test_plan make_test_plan(int32_t *idx, int T, int k, int E) {
    test_plan t;
    t.idx = idx;
    t.rp = make_ref_plan(idx, T * k, E);
    ot_cuda_moe_plan_alloc(&t.plan, T, k, E);
    t.idx_d = up_i32(idx, (size_t)T * k);
    ot_cuda_moe_plan_build(g_s, &t.plan, t.idx_d);
    test_moe_plan(&t.plan, &t.rp, T, k, E);
    expect_clean("moe_plan_build");
    return t;
}
static void free_test_plan(test_plan *t) {
    ot_cuda_moe_plan_free(&t->plan);
    free_ref_plan(&t->rp);
    free(t->idx);
    dfree(t->idx_d);
}

static void test_moe(const sizes *z) {
    int T = z->mT, E = z->mE, k = z->mk, H = z->mH, I = z->mI;
    test_plan tp = make_test_plan(make_routes(T, E, k), T, k, E);
    ot_cuda_moe_plan plan = tp.plan;
    const ref_plan rp = tp.rp;
    int32_t *idx_d = tp.idx_d;

    // Training-sized (over 32 rows per expert): auto takes the fused MXFP4 kernels where the shapes fit them.
    test_moe_matmul_mxfp4_paths(&plan, &rp, 2 * I, H);                       // gate_up shape
    test_moe_matmul_mxfp4_paths(&plan, &rp, H, I);                           // down shape
    // Reductions of 9 (forward) and 6 (backward) steps of 32, longer than the fused kernels' 4-stage ring, and
    // partial column tiles (192 = 128 + 64, 288 = 2·128 + 32).
    test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 192, 288, OT_CUDA_MOE_PATH_FUSED, 0);
    test_moe_mxfp4_decode(&plan, &rp);
    // An expert LoRA's expansion added by the product: in the fused kernels' epilogue (auto, the default step and
    // products), in a pass of its own after the library path.
    test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 2 * I, H, OT_CUDA_MOE_PATH_AUTO, 16);
    test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 2 * I, H, OT_CUDA_MOE_PATH_LIBRARY, 16);
    // The fused kernels' 64-wide reduction step (where the reduction length is a multiple of 64; 32 elsewhere),
    // its products by mma.sync and (Hopper, sm_90a builds, and the emulator) by wgmma.
    ot_cuda_moe_set_fused_bk(64);
    for (int wg = 0; wg <= 1; wg++) {
        if (ot_cuda_moe_set_fused_wgmma(wg) != wg) {
            printf("skip fused MXFP4 kernels on wgmma: this device or build has none (sm_90a on compute "
                   "capability 9.0)\n");
            continue;
        }
        printf("info fused MXFP4 kernels with a 64-wide step, products by %s:\n", wg ? "wgmma" : "mma.sync");
        test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 2 * I, H, OT_CUDA_MOE_PATH_FUSED, 0);
        test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, H, I, OT_CUDA_MOE_PATH_FUSED, 0);
        test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 256, 448, OT_CUDA_MOE_PATH_FUSED, 0); // 7 and 4 steps of 64
        test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 192, 288, OT_CUDA_MOE_PATH_FUSED, 0); // forward 32, backward 64
        // the epilogue's expansion: two rank chunks of 32 (the second partial), partial column tiles
        test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 192, 288, OT_CUDA_MOE_PATH_FUSED, 40);
        test_moe_mxfp4_decode(&plan, &rp);
    }
    ot_cuda_moe_set_fused_wgmma(-1);
    ot_cuda_moe_set_fused_bk(32);
    printf("info fused MXFP4 kernels with a 32-wide step:\n");
    test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 256, 448, OT_CUDA_MOE_PATH_FUSED, 0);
    test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 256, 448, OT_CUDA_MOE_PATH_FUSED, 6);
    test_moe_mxfp4_decode(&plan, &rp);
    ot_cuda_moe_set_fused_bk(0);
    test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 70, 96, OT_CUDA_MOE_PATH_AUTO, 0); // rows not a multiple of 32:
    test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 70, 96, OT_CUDA_MOE_PATH_FUSED, 0); // never the fused kernels
    test_moe_matmul(&plan, &rp, OT_EXPERT_DENSE, 2 * I, H, OT_CUDA_MOE_PATH_AUTO, 0);
    test_moe_matmul(&plan, &rp, OT_EXPERT_DENSE, 70, 96, OT_CUDA_MOE_PATH_AUTO, 0);
    test_moe_matmul(&plan, &rp, OT_EXPERT_MXFP4, 70, 96, OT_CUDA_MOE_PATH_AUTO, 8); // the expansion's own pass
    test_moe_matmul(&plan, &rp, OT_EXPERT_DENSE, 70, 96, OT_CUDA_MOE_PATH_AUTO, 8);
    test_moe_weight_grad(&plan, &rp, 2 * I, H, 1); // gate_up: token rows gathered
    test_moe_weight_grad(&plan, &rp, H, I, 0);     // down: rows already permuted
    test_moe_weight_grad(&plan, &rp, 70, 45, 1);   // neither dimension a multiple of the 32 tile
    test_moe_combine(&plan, &rp, H);  // 16-byte vectors
    test_moe_combine(&plan, &rp, 36); // a width that is no multiple of 8: element by element
    test_moe_route_grad(&plan, &rp, tp.idx, idx_d, I, H, 1); // 16-byte vectors
    test_moe_route_grad(&plan, &rp, tp.idx, idx_d, I, H, 0);
    test_moe_route_grad(&plan, &rp, tp.idx, idx_d, 36, 44, 1); // element by element
    test_moe_lora(&plan, &rp, H, 2 * I, 6, 1);  // gate_up: token rows gathered; a rank below one mma column block
    test_moe_lora(&plan, &rp, I, H, 6, 0);      // down: rows already permuted
    test_moe_lora(&plan, &rp, H, 2 * I, 16, 1); // the usual rank: whole 16-byte rows of xa and dxa
    test_moe_lora(&plan, &rp, I, H, 40, 0);     // two rank blocks of 32, the second partial
    test_moe_lora(&plan, &rp, 36, 44, 8, 1);    // rows no multiple of 8 wide: element-by-element staging

    int32_t bad = -3;
    OT_CUDA_CHECK(cudaMemcpy(idx_d + 2, &bad, sizeof(bad), cudaMemcpyHostToDevice));
    ot_cuda_moe_plan_build(g_s, &plan, idx_d);
    expect_flagged("moe_plan_build with expert index -3");
    free_test_plan(&tp);

    // A plan with few rows per expert (decoding-sized: under 32 on average) takes the fused tensor-core kernels
    // instead of cuBLAS.
    int Ts = 20, ks = k < 2 ? k : 2;
    test_plan small = make_test_plan(make_routes(Ts, E, ks), Ts, ks, E);
    test_moe_matmul_mxfp4_paths(&small.plan, &small.rp, 2 * I, H); // fused: single short tiles
    test_moe_matmul(&small.plan, &small.rp, OT_EXPERT_MXFP4, 70, 96, OT_CUDA_MOE_PATH_AUTO, 0);
    test_moe_matmul(&small.plan, &small.rp, OT_EXPERT_DENSE, 70, 96, OT_CUDA_MOE_PATH_AUTO, 0);
    test_moe_matmul(&small.plan, &small.rp, OT_EXPERT_MXFP4, 2 * I, H, OT_CUDA_MOE_PATH_AUTO, 16); // own pass
    test_moe_matmul(&small.plan, &small.rp, OT_EXPERT_MXFP4, 2 * I, H, OT_CUDA_MOE_PATH_FUSED, 16); // epilogue
    free_test_plan(&small);

    // Skewed routing: expert 0 takes slot 0 of every token (two 128-row tiles of the fused kernels and a ragged
    // third), expert 1 none, the others share the other slots (one or two tiles, the last one ragged).
    int Tk = 300, kk = k < 2 ? 2 : k, Ek = E < kk + 2 ? kk + 2 : E;
    int32_t *idx_k = ot_malloc((size_t)Tk * kk * sizeof(int32_t));
    for (int t = 0; t < Tk; t++) {
        idx_k[(size_t)t * kk] = 0;
        for (int j = 1; j < kk; j++) { // distinct experts from 2 .. Ek-1
            int e, dup;
            do {
                e = 2 + rand_int(Ek - 2);
                dup = 0;
                for (int jj = 1; jj < j; jj++) dup |= idx_k[(size_t)t * kk + jj] == e;
            } while (dup);
            idx_k[(size_t)t * kk + j] = e;
        }
    }
    test_plan skew = make_test_plan(idx_k, Tk, kk, Ek);
    test_moe_matmul(&skew.plan, &skew.rp, OT_EXPERT_MXFP4, 2 * I, H, OT_CUDA_MOE_PATH_FUSED, 0);
    test_moe_matmul(&skew.plan, &skew.rp, OT_EXPERT_MXFP4, H, I, OT_CUDA_MOE_PATH_FUSED, 0);
    test_moe_matmul(&skew.plan, &skew.rp, OT_EXPERT_MXFP4, 192, 288, OT_CUDA_MOE_PATH_FUSED, 0);
    // the epilogue's expansion on ragged tiles, an expert without rows, tiles of under 64 rows
    test_moe_matmul(&skew.plan, &skew.rp, OT_EXPERT_MXFP4, 2 * I, H, OT_CUDA_MOE_PATH_FUSED, 16);
    free_test_plan(&skew);
}

// ---- cross-entropy through the head --------------------------------------------------------------------------------
static void test_xent(const sizes *z) {
    int T = z->xT, n = z->xn, H = z->xH, V = z->xV;
    float grad_scale = 1.0f / n;
    float *h = randn_bf16((size_t)T * H, 1.0), *W = randn_bf16((size_t)V * H, 3.0 / sqrt(H));
    int32_t *pos = ot_malloc(n * sizeof(int32_t)), *label = ot_malloc(n * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        pos[i] = (int32_t)((long)i * T / n); // distinct, spread over the sequence ...
        label[i] = rand_int(V);
    }
    pos[n - 1] = pos[0]; // ... except one repeated position, whose gradients must add
    float *gdh = zeros_f((size_t)T * H), *gdW = zeros_f((size_t)V * H);
    double loss = ot_lmhead_xent(gdh, gdW, h, W, pos, label, n, H, V, grad_scale);
    float *dh0 = init_like(gdh, (size_t)T * H, 1), *dW0 = init_like(gdW, (size_t)V * H, 0);
    float *dh_ref = plus(dh0, gdh, (size_t)T * H), *dW_ref = plus(dW0, gdW, (size_t)V * H);
    ot_bf16 *h_d = up_bf16(h, (size_t)T * H), *W_d = up_bf16(W, (size_t)V * H), *dh_d = up_bf16(dh0, (size_t)T * H);
    float *dW_d = up_f32(dW0, (size_t)V * H);
    int32_t *pos_d = up_i32(pos, n), *label_d = up_i32(label, n);
    double start = 0.75, got = 0;
    double *loss_d = up_bytes(&start, sizeof(double));
    ot_cuda_lmhead_xent(g_s, &g_blas, loss_d, dh_d, dW_d, h_d, W_d, pos_d, label_d, n, T, H, V, grad_scale);
    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    OT_CUDA_CHECK(cudaMemcpy(&got, loss_d, sizeof(double), cudaMemcpyDeviceToHost));
    char what[96];
    snprintf(what, sizeof(what), "lmhead_xent loss sum (V %d)", V);
    ot_check_close(what, fabs((got - start) - loss) / fabs(loss), TOL_F32);
    check_bf16("lmhead_xent dh (repeated position)", dh_d, dh_ref, (size_t)T * H, TOL_BF16);
    // dWlm is fp32 but built from bf16 dlogits (the operand of a bf16 product): TOL_BF16.
    check_f32("lmhead_xent dWlm", dW_d, dW_ref, (size_t)V * H, TOL_BF16);
    // Loss only: no gradient buffers touched.
    OT_CUDA_CHECK(cudaMemcpy(loss_d, &start, sizeof(double), cudaMemcpyHostToDevice));
    ot_cuda_lmhead_xent(g_s, &g_blas, loss_d, NULL, NULL, h_d, W_d, pos_d, label_d, n, T, H, V, grad_scale);
    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    OT_CUDA_CHECK(cudaMemcpy(&got, loss_d, sizeof(double), cudaMemcpyDeviceToHost));
    ot_check_close("lmhead_xent loss only", fabs((got - start) - loss) / fabs(loss), TOL_F32);
    expect_clean("lmhead_xent");
    // The head frozen (dh, no dWlm): the one-pass sweep, in the default chunks and in chunks of 256 columns (many
    // chunks, so the running maximum grows mid-sweep and the gathered gradient is rescaled).
    for (int small = 0; small <= 1; small++) {
        ot_cuda_xent_set_chunk_elems(small ? 256L * n : 0);
        OT_CUDA_CHECK(cudaMemcpy(loss_d, &start, sizeof(double), cudaMemcpyHostToDevice));
        ot_bf16 *dh1_d = up_bf16(dh0, (size_t)T * H);
        ot_cuda_lmhead_xent(g_s, &g_blas, loss_d, dh1_d, NULL, h_d, W_d, pos_d, label_d, n, T, H, V, grad_scale);
        OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
        OT_CUDA_CHECK(cudaMemcpy(&got, loss_d, sizeof(double), cudaMemcpyDeviceToHost));
        snprintf(what, sizeof(what), "lmhead_xent one pass%s: loss", small ? " (256-column chunks)" : "");
        ot_check_close(what, fabs((got - start) - loss) / fabs(loss), TOL_F32);
        snprintf(what, sizeof(what), "lmhead_xent one pass%s: dh", small ? " (256-column chunks)" : "");
        check_bf16(what, dh1_d, dh_ref, (size_t)T * H, TOL_BF16);
        dfree(dh1_d);
    }
    ot_cuda_xent_set_chunk_elems(0);
    expect_clean("lmhead_xent one pass");
    // The sweep fed in blocks of rows (a sharded head: gathered chunks), edges not the sweep's own chunks and one
    // block a single row: the loss and dh to the same bounds.
    {
        OT_CUDA_CHECK(cudaMemcpy(loss_d, &start, sizeof(double), cudaMemcpyHostToDevice));
        ot_bf16 *dh2_d = up_bf16(dh0, (size_t)T * H);
        const int edges[4] = {0, V / 3 + 5, V / 3 + 6, V};
        ot_cuda_xent *x = ot_cuda_xent_begin(g_s, &g_blas, h_d, pos_d, label_d, n, T, H, V, grad_scale, 1);
        for (int b = 0; b < 3; b++)
            ot_cuda_xent_loss_rows(x, W_d + (size_t)edges[b] * H, edges[b], edges[b + 1] - edges[b]);
        ot_cuda_xent_loss_end(x, loss_d);
        for (int b = 0; b < 3; b++)
            ot_cuda_xent_grad_rows(x, W_d + (size_t)edges[b] * H, NULL, edges[b], edges[b + 1] - edges[b]);
        ot_cuda_xent_end(x, dh2_d);
        OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
        OT_CUDA_CHECK(cudaMemcpy(&got, loss_d, sizeof(double), cudaMemcpyDeviceToHost));
        ot_check_close("lmhead_xent in 3 blocks: loss", fabs((got - start) - loss) / fabs(loss), TOL_F32);
        check_bf16("lmhead_xent in 3 blocks: dh", dh2_d, dh_ref, (size_t)T * H, TOL_BF16);
        expect_clean("lmhead_xent in blocks");
        dfree(dh2_d);
    }

    int32_t bad = V;
    OT_CUDA_CHECK(cudaMemcpy(label_d + 1, &bad, sizeof(bad), cudaMemcpyHostToDevice));
    ot_cuda_lmhead_xent(g_s, &g_blas, loss_d, NULL, NULL, h_d, W_d, pos_d, label_d, n, T, H, V, grad_scale);
    expect_flagged("lmhead_xent with label V");
    free(h), free(W), free(pos), free(label), free(gdh), free(gdW), free(dh0), free(dW0), free(dh_ref), free(dW_ref);
    dfree(h_d), dfree(W_d), dfree(dh_d), dfree(dW_d), dfree(pos_d), dfree(label_d), dfree(loss_d);
}

// ---- optimizer ---------------------------------------------------------------------------------------------------
static void test_optim(const sizes *z) {
    size_t n = z->n_opt;
    float *p = randn(n, 0.1), *m = randn(n, 0.01), *v = randn(n, 0.001);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i];
    float *p_d = up_f32(p, n), *m_d = up_f32(m, n), *v_d = up_f32(v, n);
    for (long step = 1; step <= 3; step++) {
        float *g = randn(n, 0.05);
        float *g_d = up_f32(g, n);
        float wd = step == 2 ? 0.0f : 0.01f; // one step without weight decay
        ot_adamw_step(p, g, m, v, n, 1e-3f, 0.9f, 0.999f, 1e-8f, wd, step);
        ot_cuda_adamw_step(g_s, p_d, g_d, m_d, v_d, n, 1e-3f, 0.9f, 0.999f, 1e-8f, wd, step);
        free(g);
        dfree(g_d);
    }
    check_f32("adamw param after 3 steps (fp32)", p_d, p, n, TOL_F32);
    check_f32("adamw m (fp32)", m_d, m, n, TOL_F32);
    check_f32("adamw v (fp32)", v_d, v, n, TOL_F32);

    float *g = randn(n, 2.0);
    float *g_d = up_f32(g, n);
    double start = 1.25, got = 0, ref = start + ot_sum_squares(g, n);
    double *s_d = up_bytes(&start, sizeof(double));
    ot_cuda_sum_squares(g_s, s_d, g_d, n);
    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    OT_CUDA_CHECK(cudaMemcpy(&got, s_d, sizeof(double), cudaMemcpyDeviceToHost));
    ot_check_close("sum_squares (fp64)", fabs(got - ref) / ref, TOL_F64);

    // The ordered sum of gathered gradient slots: the CPU twin's bits exactly (the rank sum's rule). Values of very
    // different sizes and signs, so an other order or a float accumulation would show.
    const int n_slots = 5;
    float *slots = randn(n * n_slots, 1.0), *sum_ref = zeros_f(n);
    for (size_t i = 0; i < n * n_slots; i += 3) slots[i] *= 1e7f;
    ot_sum_slots_ordered(sum_ref, slots, n_slots, n);
    float *slots_d = up_f32(slots, n * n_slots), *sum_d = up_f32(sum_ref, n), *sum_got = zeros_f(n);
    OT_CUDA_CHECK(cudaMemset(sum_d, 0xFF, n * sizeof(float)));
    ot_cuda_sum_slots_ordered(g_s, sum_d, slots_d, n_slots, n);
    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    OT_CUDA_CHECK(cudaMemcpy(sum_got, sum_d, n * sizeof(float), cudaMemcpyDeviceToHost));
    count_check("sum_slots_ordered (bitwise)", (size_t)(memcmp(sum_got, sum_ref, n * sizeof(float)) != 0), 1);
    expect_clean("optim");
    free(p), free(m), free(v), free(g), free(slots), free(sum_ref), free(sum_got);
    dfree(p_d), dfree(m_d), dfree(v_d), dfree(g_d), dfree(s_d), dfree(slots_d), dfree(sum_d);
}

int main(int argc, char **argv) {
    int small = 0;
    uint64_t seed = 20260101;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--small")) small = 1;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--small] [--seed N]\n", argv[0]);
            return 2;
        }
    }
    // Full sizes: real vocabulary for the head (two vocabulary chunks), attention long enough for many tiles.
    // Small sizes: the same code paths, quick enough for compute-sanitizer. In both, the LoRA widths are large
    // enough (K >= 512) that the K-split products run split.
    sizes full = {301, 200, 1000, 600, 520, 12, 301, 12, 3, 20, 4, 150, 6, 4, 160, 96, 301, 90, 64, 201088, 100003};
    sizes tiny = {67, 72, 100, 520, 264, 4, 150, 4, 2, 9, 3, 140, 4, 2, 64, 32, 40, 8, 32, 3000, 1031};
    const sizes *z = small ? &tiny : &full;
    ot_rng_seed(&g_rng, seed);
    printf("test_ops_cuda: seed %llu, %s sizes\n", (unsigned long long)seed, small ? "small" : "full");

    ot_cuda_init(0);
    ot_cuda_blas_init(&g_blas);
    OT_CUDA_CHECK(cudaStreamCreate(&g_s));

    test_helpers(z);
    test_embedding(z);
    test_embedding_sorted(z);
    test_weight_refresh(z);
    test_rmsnorm(z);
    sizes odd = *z; // a width that is no multiple of 8: the element-wise kernels
    odd.H = 37;
    test_rmsnorm(&odd);
    test_matmul(z);
    test_lora(z);
    test_rope(z);
    test_attention(z, 0);
    test_attention(z, 37);
    test_attention_cache(z, 0);
    test_attention_cache(z, 37);
    test_argmax(z);
    test_router(z);
    test_swiglu(z->T, z->mI);
    test_swiglu(z->T, 37);
    test_moe(z);
    test_xent(z);
    test_optim(z);

    OT_CUDA_CHECK(cudaStreamSynchronize(g_s));
    OT_CUDA_CHECK(cudaStreamDestroy(g_s));
    ot_cuda_blas_free(&g_blas);
    return ot_test_finish("test_ops_cuda");
}
