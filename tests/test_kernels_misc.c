// CPU kernels: the rules the gradient checks cannot see. MXFP4 decoding, YaRN inverse frequencies against the
// spec's check values, each forward against a plain textbook computation (masks, GQA pairing, sinks, rotation
// convention, clamps, top-k order), float vs double instantiations, packed vs separate sequences, MXFP4 vs the
// same weights dense, AdamW, the learning-rate schedule and the clip factor.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/ot_common.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

static ot_rng rng;

static float *rand_f32(size_t n, double lo, double hi) {
    float *x = ot_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * ot_rng_uniform(&rng));
    return x;
}
static double *to_f64(const float *x, size_t n) {
    double *y = ot_malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        y[i] = x[i];
    return y;
}
static double *rand_f64(size_t n, double lo, double hi) {
    double *x = ot_malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * ot_rng_uniform(&rng);
    return x;
}
// Relative error of a float result against its double twin.
static double rel_f32_f64(const float *a, const double *b, size_t n) {
    double *a64 = to_f64(a, n);
    double e = ot_rel_err_f64(a64, b, n);
    free(a64);
    return e;
}

// ---- MXFP4 -------------------------------------------------------------------------------------------------------
// FP4 E2M1 decoded from its bits, independently of the kernel's table: sign, 2-bit exponent (bias 1; 0 is
// subnormal), 1-bit mantissa.
static double e2m1_decode(int code) {
    int sign = code >> 3, exp = (code >> 1) & 3, man = code & 1;
    double mag = exp == 0 ? 0.5 * man : (1.0 + 0.5 * man) * ldexp(1.0, exp - 1);
    return sign ? -mag : mag;
}

static void test_mxfp4(void) {
    int lut_ok = 1;
    for (int c = 0; c < 16; c++)
        lut_ok &= (double)ot_fp4_values[c] == e2m1_decode(c) && !!signbit(ot_fp4_values[c]) == (c >= 8);
    CHECK(lut_ok, "FP4 table differs from the E2M1 decoding");
    CHECK(ot_fp4_values[7] == 6.0f && ot_fp4_values[9] == -0.5f, "FP4 table: code 7 = %g, code 9 = %g",
          ot_fp4_values[7], ot_fp4_values[9]);

    // Spec §5.4, HF side: byte 0x21 with scale byte 128 decodes to 1.0 (low nibble, element 0) and 2.0 (element 1).
    uint8_t blocks[32] = {0x21}, scales[2] = {128, 127};
    blocks[16 + 15] = 0xF7; // second group, last byte: element 62 = +6, element 63 = −6 at scale 2^0
    float row[64];
    ot_mxfp4_dequant_row(row, blocks, scales, 64);
    CHECK(row[0] == 1.0f && row[1] == 2.0f, "worked example: got %g, %g; want 1, 2", row[0], row[1]);
    int rest_zero = 1;
    for (int i = 2; i < 62; i++)
        rest_zero &= row[i] == 0.0f;
    CHECK(rest_zero, "worked example: elements 2..61 should be zero");
    CHECK(row[62] == 6.0f && row[63] == -6.0f, "nibble order in group 1: got %g, %g; want 6, -6", row[62], row[63]);

    // Random groups against the bit-level decoding, value = E2M1(nibble) · 2^(scale − 127).
    int cols = 96, groups = cols / 32, bad = 0;
    uint8_t rb[48], rs[3];
    float out[96];
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < 48; i++)
            rb[i] = (uint8_t)(ot_rng_u64(&rng) & 0xff);
        for (int g = 0; g < groups; g++)
            rs[g] = (uint8_t)(1 + ot_rng_u64(&rng) % 200);
        ot_mxfp4_dequant_row(out, rb, rs, cols);
        for (int i = 0; i < cols; i++) {
            int g = i / 32, j = (i % 32) / 2;
            int code = i % 2 ? rb[g * 16 + j] >> 4 : rb[g * 16 + j] & 15;
            bad += (double)out[i] != e2m1_decode(code) * ldexp(1.0, rs[g] - 127);
        }
    }
    CHECK(bad == 0, "%d dequantized elements differ from E2M1 · 2^(s-127)", bad);

    // ot_expert_weight_row finds expert e, row r in [E, rows, G, 16] / [E, rows, G].
    int E = 3, rows = 4;
    size_t ng = (size_t)E * rows * groups;
    uint8_t *wb = ot_malloc(ng * 16), *ws = ot_malloc(ng);
    for (size_t i = 0; i < ng * 16; i++)
        wb[i] = (uint8_t)(ot_rng_u64(&rng) & 0xff);
    for (size_t i = 0; i < ng; i++)
        ws[i] = (uint8_t)(120 + ot_rng_u64(&rng) % 10);
    ot_expert_weight W = {
        .kind = OT_EXPERT_MXFP4, .n_experts = E, .rows = rows, .cols = cols, .blocks = wb, .scales = ws};
    float a[96], b[96];
    ot_expert_weight_row(a, &W, 2, 1);
    size_t row_index = 2 * rows + 1;
    ot_mxfp4_dequant_row(b, wb + row_index * groups * 16, ws + row_index * groups, cols);
    CHECK(memcmp(a, b, sizeof a) == 0, "ot_expert_weight_row(e=2, r=1) is not row 9 of the stacked tensor");
    free(wb), free(ws);
}

// ---- YaRN inverse frequencies --------------------------------------------------------------------------------
static void test_rope_inv_freq(void) {
    ot_rope_params gptoss = {.theta = 150000,
                             .factor = 32,
                             .beta_fast = 32,
                             .beta_slow = 1,
                             .original_max_position_embeddings = 4096,
                             .truncate = 0,
                             .attention_factor = 0};
    float f[32];
    float attn = ot_rope_inv_freq(f, 64, &gptoss);
    // Spec §2.4 check values. They are printed with 7 or 8 significant digits (0.0317057 with 6), so they are
    // compared to 2e-6 relative: half a unit in the last printed digit of the shortest one is 1.6e-6.
    struct {
        int i;
        double want;
    } check[] = {{0, 1.0},        {1, 0.6890443}, {2, 0.4747821},    {3, 0.3271459},
                 {8, 0.05081327}, {9, 0.0317057}, {31, 3.0235114e-7}};
    for (size_t c = 0; c < sizeof check / sizeof check[0]; c++) {
        char what[64];
        snprintf(what, sizeof what, "yarn inv_freq[%d] vs spec", check[c].i);
        ot_check_close(what, fabs(f[check[c].i] - check[c].want) / check[c].want, 2e-6);
    }
    ot_check_close("yarn attention factor vs spec 1.3465736", fabs(attn - 1.3465736) / 1.3465736, 1e-7);

    // Structure: low = 8.09 and high = 17.40 are not rounded, so dims <= 8 are exactly the original frequency
    // and dims >= 18 exactly the original divided by the factor (both computed as float, as HF does).
    int pure_ok = 1;
    for (int i = 0; i < 32; i++) {
        float pf = powf(150000.0f, (float)(2 * i) / 64.0f);
        if (i <= 8)
            pure_ok &= f[i] == 1.0f / pf;
        if (i >= 18)
            pure_ok &= f[i] == 1.0f / (32.0f * pf);
    }
    CHECK(pure_ok, "yarn: dims <= 8 must be pure extrapolation and dims >= 18 pure interpolation");

    // With truncate the range becomes [8, 18]: dim 13 sits at ramp 0.5, the mean of the two frequencies.
    ot_rope_params trunc = gptoss;
    trunc.truncate = 1;
    float ft[32];
    ot_rope_inv_freq(ft, 64, &trunc);
    double pf13 = pow(150000.0, 26.0 / 64.0);
    double mid = 0.5 * (1.0 / pf13 + 1.0 / (32.0 * pf13));
    ot_check_close("yarn truncate: dim 13 is the midpoint", fabs(ft[13] - mid) / mid, 1e-6);
    ot_check_close("yarn truncate: dim 9 is 0.9 extrap + 0.1 interp",
                   fabs(ft[9] - (0.9 / pow(150000.0, 18.0 / 64.0) + 0.1 / (32 * pow(150000.0, 18.0 / 64.0)))) / ft[9],
                   1e-6);
    CHECK(ft[8] == f[8] && ft[18] == f[18], "yarn truncate: dims 8 and 18 are pure in both variants");

    // factor 1 is plain RoPE: 1 / theta^(2i/d) and no attention factor.
    ot_rope_params plain = {.theta = 10000, .factor = 1};
    float fp[8];
    float attn_plain = ot_rope_inv_freq(fp, 16, &plain);
    int plain_ok = attn_plain == 1.0f;
    for (int i = 0; i < 8; i++)
        plain_ok &= fabs(fp[i] - pow(10000.0, -2.0 * i / 16)) <= 1e-7 * pow(10000.0, -2.0 * i / 16);
    CHECK(plain_ok, "plain RoPE (factor 1): inv_freq must be 1/theta^(2i/d) and the attention factor 1");

    // An explicit attention factor wins over the default formula.
    ot_rope_params expl = gptoss;
    expl.attention_factor = 1.25;
    CHECK(ot_rope_inv_freq(fp, 16, &expl) == 1.25f, "an explicit attention_factor must be returned as is");
}

// ---- forwards against textbook computations ------------------------------------------------------------------
// HF's eager attention on one [T, T] score matrix: additive −inf mask, sink column, softmax, sink dropped.
static void naive_attention(double *out, const double *q, const double *k, const double *v, const double *sinks,
                            const int32_t *seg, int T, int nh, int nkv, int D, int window) {
    double *row = ot_malloc((size_t)(T + 1) * sizeof(double));
    for (int h = 0; h < nh; h++) {
        int g = h / (nh / nkv);
        for (int i = 0; i < T; i++) {
            for (int j = 0; j < T; j++) {
                int visible = j <= i && j >= seg[i] && (window <= 0 || i - j < window);
                double s = 0;
                for (int d = 0; d < D; d++)
                    s += q[((size_t)i * nh + h) * D + d] * k[((size_t)j * nkv + g) * D + d];
                row[j] = visible ? s / sqrt((double)D) : -INFINITY;
            }
            row[T] = sinks[h];
            double m = -INFINITY, z = 0;
            for (int j = 0; j <= T; j++)
                m = fmax(m, row[j]);
            for (int j = 0; j <= T; j++)
                z += exp(row[j] - m);
            for (int d = 0; d < D; d++) {
                double o = 0;
                for (int j = 0; j < T; j++)
                    o += exp(row[j] - m) / z * v[((size_t)j * nkv + g) * D + d];
                out[((size_t)i * nh + h) * D + d] = o;
            }
        }
    }
    free(row);
}

static void test_attention_semantics(void) {
    int lens[3] = {7, 9, 4}, T = 20, nh = 6, nkv = 2, D = 8;
    int32_t seg[20];
    for (int s = 0, t = 0; s < 3; s++)
        for (int j = 0; j < lens[s]; j++, t++)
            seg[t] = t - j;
    size_t nq = (size_t)T * nh * D, nk = (size_t)T * nkv * D;
    double *q = rand_f64(nq, -2, 2), *k = rand_f64(nk, -2, 2), *v = rand_f64(nk, -1, 1), *sinks = rand_f64(6, -1, 3);
    double *out = ot_malloc(nq * sizeof(double)), *want = ot_malloc(nq * sizeof(double));
    double *lse = ot_malloc((size_t)T * nh * sizeof(double));
    int windows[2] = {0, 4};
    for (int w = 0; w < 2; w++) {
        ot_attention_fwd_f64(out, lse, q, k, v, sinks, seg, T, nh, nkv, D, windows[w]);
        naive_attention(want, q, k, v, sinks, seg, T, nh, nkv, D, windows[w]);
        char what[96];
        snprintf(what, sizeof what, "attention fwd vs textbook (window %d)", windows[w]);
        ot_check_close(what, ot_rel_err_f64(out, want, nq), 1e-12);
    }
    // lse includes the sink: for the first token of a sequence it is log(exp(s_00) + exp(sink)).
    double s00 = 0;
    for (int d = 0; d < D; d++)
        s00 += q[d] * k[d];
    s00 /= sqrt((double)D);
    double want_lse = log(exp(s00) + exp(sinks[0]));
    ot_check_close("attention lse includes the sink", fabs(lse[0] - want_lse) / fabs(want_lse), 1e-12);
    free(q), free(k), free(v), free(sinks), free(out), free(want), free(lse);
}

// A packed batch and the same sequences run one by one must give the same bits: nothing leaks across sequences,
// and a query's sum runs over the same keys in the same order either way.
static void test_attention_packed_vs_alone(void) {
    int lens[3] = {5, 8, 3}, T = 16, nh = 4, nkv = 2, D = 6, window = 3;
    int32_t seg[16];
    for (int s = 0, t = 0; s < 3; s++)
        for (int j = 0; j < lens[s]; j++, t++)
            seg[t] = t - j;
    size_t nq = (size_t)T * nh * D, nk = (size_t)T * nkv * D;
    float *q = rand_f32(nq, -2, 2), *k = rand_f32(nk, -2, 2), *v = rand_f32(nk, -1, 1), *sinks = rand_f32(4, -1, 2);
    float *dout = rand_f32(nq, -1, 1);
    float *out = ot_malloc(nq * sizeof(float)), *lse = ot_malloc((size_t)T * nh * sizeof(float));
    float *dq = ot_calloc(nq, sizeof(float)), *dk = ot_calloc(nk, sizeof(float)), *dv = ot_calloc(nk, sizeof(float));
    float *ds = ot_calloc(4, sizeof(float));
    ot_attention_fwd(out, lse, q, k, v, sinks, seg, T, nh, nkv, D, window);
    ot_attention_bwd(dq, dk, dv, ds, dout, out, lse, q, k, v, sinks, seg, T, nh, nkv, D, window);

    float *o1 = ot_malloc(nq * sizeof(float)), *l1 = ot_malloc((size_t)T * nh * sizeof(float));
    float *dq1 = ot_calloc(nq, sizeof(float)), *dk1 = ot_calloc(nk, sizeof(float)), *dv1 = ot_calloc(nk, sizeof(float));
    int fwd_same = 1, bwd_same = 1;
    double ds_sum[4] = {0};
    for (int s = 0, t0 = 0; s < 3; t0 += lens[s], s++) {
        int n = lens[s];
        int32_t seg1[16] = {0};
        float ds1[4] = {0};
        size_t qo = (size_t)t0 * nh * D, ko = (size_t)t0 * nkv * D;
        ot_attention_fwd(o1, l1, q + qo, k + ko, v + ko, sinks, seg1, n, nh, nkv, D, window);
        ot_attention_bwd(dq1, dk1, dv1, ds1, dout + qo, o1, l1, q + qo, k + ko, v + ko, sinks, seg1, n, nh, nkv, D,
                         window);
        fwd_same &= memcmp(o1, out + qo, (size_t)n * nh * D * sizeof(float)) == 0;
        fwd_same &= memcmp(l1, lse + (size_t)t0 * nh, (size_t)n * nh * sizeof(float)) == 0;
        bwd_same &= memcmp(dq1, dq + qo, (size_t)n * nh * D * sizeof(float)) == 0;
        bwd_same &= memcmp(dk1, dk + ko, (size_t)n * nkv * D * sizeof(float)) == 0;
        bwd_same &= memcmp(dv1, dv + ko, (size_t)n * nkv * D * sizeof(float)) == 0;
        for (int h = 0; h < 4; h++)
            ds_sum[h] += ds1[h];
        memset(dq1, 0, nq * sizeof(float)), memset(dk1, 0, nk * sizeof(float)), memset(dv1, 0, nk * sizeof(float));
    }
    CHECK(fwd_same, "attention: packed output/lse differ from running each sequence alone");
    CHECK(bwd_same, "attention: packed dq/dk/dv differ from running each sequence alone");
    double ds64[4] = {ds[0], ds[1], ds[2], ds[3]};
    ot_check_close("attention: packed dsinks = sum over sequences", ot_rel_err_f64(ds64, ds_sum, 4), 1e-6);
    free(q), free(k), free(v), free(sinks), free(dout), free(out), free(lse), free(dq), free(dk), free(dv), free(ds);
    free(o1), free(l1), free(dq1), free(dk1), free(dv1);
}

static void test_small_forwards(void) {
    // RMSNorm: y = x / sqrt(mean(x²) + eps) · w
    double x[3] = {1, -2, 2}, w[3] = {0.5, 1, 2}, y[3], rstd;
    ot_rmsnorm_fwd_f64(y, &rstd, x, w, 1, 3, 1e-5f);
    double r = 1.0 / sqrt(3.0 + (double)1e-5f);
    double want_y[3] = {0.5 * r, -2 * r, 4 * r};
    ot_check_close("rmsnorm fwd by hand", ot_rel_err_f64(y, want_y, 3), 1e-15);

    // RoPE, NeoX half split: (x1, x2) → (x1·c − x2·s, x2·c + x1·s) with the pair (i, i + D/2).
    float inv_freq[2] = {1.0f, 0.25f};
    int32_t pos[1] = {3};
    double xr[4] = {1, 2, 3, 4};
    ot_rope_fwd_f64(xr, pos, inv_freq, 1.5f, 1, 1, 4);
    double c0 = (double)(cosf(3.0f) * 1.5f), s0 = (double)(sinf(3.0f) * 1.5f);
    double c1 = (double)(cosf(0.75f) * 1.5f), s1 = (double)(sinf(0.75f) * 1.5f);
    double want_r[4] = {1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1};
    ot_check_close("rope fwd by hand (half split)", ot_rel_err_f64(xr, want_r, 4), 1e-15);

    // SwiGLU with both clamps: gate 8 → 7, up −9 → −7; and an unclamped pair.
    double gu[4] = {1.0, 0.5, 8.0, -9.0}, act[2];
    ot_swiglu_fwd_f64(act, gu, 1, 2, 1.702f, 7.0f);
    double a = (double)1.702f;
    double want_a[2] = {1.5 * 1.0 / (1 + exp(-a)), -6.0 * 7.0 / (1 + exp(-a * 7.0))};
    ot_check_close("swiglu fwd by hand (clamps, +1 on up)", ot_rel_err_f64(act, want_a, 2), 1e-15);
    // The gate has no lower clamp: a very negative gate passes through (glu → 0 smoothly, not clamped to −7).
    double gu_neg[2] = {-9.0, 0.0}, act_neg;
    ot_swiglu_fwd_f64(&act_neg, gu_neg, 1, 1, 1.702f, 7.0f);
    double want_neg = -9.0 / (1 + exp(a * 9.0));
    ot_check_close("swiglu: gate has no lower clamp", fabs(act_neg - want_neg) / fabs(want_neg), 1e-13);

    // SwiGLU backward at the clamp boundaries, as torch's clamp backward: gradient passes where the input equals
    // the limit (inclusive) and is zero beyond it; a clamped gate still scales the up gradient by its clamped value.
    double gb[6] = {7.0, 7.0, 7.5, -7.0, 1.0, 7.5}, ones[3] = {1, 1, 1}, dgb[6] = {0};
    ot_swiglu_bwd_f64(dgb, ones, gb, 1, 3, 1.702f, 7.0f);
    double s7 = 1 / (1 + exp(-a * 7.0)), sg1 = 1 / (1 + exp(-a));
    double want_dg[6] = {8.0 * (s7 + a * 7.0 * s7 * (1 - s7)), 7.0 * s7, 0.0, 7.0 * s7,
                         8.0 * (sg1 + a * sg1 * (1 - sg1)),    0.0};
    ot_check_close("swiglu bwd at the clamp boundaries", ot_rel_err_f64(dgb, want_dg, 6), 1e-14);
    CHECK(dgb[2] == 0.0 && dgb[5] == 0.0, "swiglu: inputs beyond the limit must get exactly zero gradient");

    // Router: descending order, ties to the lower index, softmax over the selected only.
    float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 0.5f, 1.0f};
    int32_t idx[4];
    float rw[4];
    ot_router_topk_fwd(idx, rw, logits, 1, 6, 4);
    CHECK(idx[0] == 1 && idx[1] == 3 && idx[2] == 5 && idx[3] == 0, "router top-4 order: got %d %d %d %d, want 1 3 5 0",
          idx[0], idx[1], idx[2], idx[3]);
    double z = 2 * exp(2.0) + exp(1.0) + exp(0.5);
    double want_w[4] = {exp(2.0) / z, exp(2.0) / z, exp(1.0) / z, exp(0.5) / z};
    ot_check_close("router weights = softmax of the selected", rel_f32_f64(rw, want_w, 4), 1e-7);

    // LoRA: y += scale · (x·Aᵀ)·Bᵀ, xa = x·Aᵀ kept
    double xl[2] = {1, 2}, A[2] = {3, -1}, B[3] = {1, 2, -1}, yl[3] = {10, 20, 30}, xa;
    ot_lora_fwd_f64(yl, &xa, xl, A, B, 1, 2, 1, 3, 0.5f);
    double want_l[3] = {10 + 0.5, 20 + 1.0, 30 - 0.5};
    CHECK(xa == 1.0, "lora xa = x·Aᵀ = 1, got %g", xa);
    ot_check_close("lora fwd by hand", ot_rel_err_f64(yl, want_l, 3), 1e-15);

    // Embedding: row lookup.
    float table[6] = {1, 2, 3, 4, 5, 6}, emb[4];
    int32_t ids[2] = {2, 0};
    ot_embedding_fwd(emb, ids, table, 2, 2);
    CHECK(emb[0] == 5 && emb[1] == 6 && emb[2] == 1 && emb[3] == 2, "embedding rows");
}

// ---- float vs double instantiations --------------------------------------------------------------------------
// The same function compiled twice: on identical inputs the float results must equal the double ones up to the
// final rounding to float (everything accumulates in double). Tolerance 1e-6, norm-wise relative.
#define F32_F64_TOL 1e-6

static void test_float_vs_double(void) {
    char what[96];
    // matmul + LoRA + rmsnorm
    int T = 13, in = 19, out = 11, r = 4;
    size_t nx = (size_t)T * in, nW = (size_t)out * in, ny = (size_t)T * out;
    float *x = rand_f32(nx, -1, 1), *W = rand_f32(nW, -1, 1), *b = rand_f32((size_t)out, -1, 1);
    float *dy = rand_f32(ny, -1, 1), *A = rand_f32((size_t)r * in, -1, 1), *B = rand_f32((size_t)out * r, -1, 1);
    double *x6 = to_f64(x, nx), *W6 = to_f64(W, nW), *b6 = to_f64(b, (size_t)out), *dy6 = to_f64(dy, ny);
    double *A6 = to_f64(A, (size_t)r * in), *B6 = to_f64(B, (size_t)out * r);
    float *y = ot_malloc(ny * sizeof(float)), *dx = ot_calloc(nx, sizeof(float)), *dW = ot_calloc(nW, sizeof(float));
    float *db = ot_calloc((size_t)out, sizeof(float));
    double *y6 = ot_malloc(ny * sizeof(double)), *dx6 = ot_calloc(nx, sizeof(double));
    double *dW6 = ot_calloc(nW, sizeof(double)), *db6 = ot_calloc((size_t)out, sizeof(double));
    ot_matmul_fwd(y, x, W, b, T, in, out);
    ot_matmul_fwd_f64(y6, x6, W6, b6, T, in, out);
    ot_check_close("f32 vs f64: matmul fwd", rel_f32_f64(y, y6, ny), F32_F64_TOL);
    ot_matmul_bwd(dx, dW, db, dy, x, W, T, in, out);
    ot_matmul_bwd_f64(dx6, dW6, db6, dy6, x6, W6, T, in, out);
    ot_check_close("f32 vs f64: matmul dx", rel_f32_f64(dx, dx6, nx), F32_F64_TOL);
    ot_check_close("f32 vs f64: matmul dW", rel_f32_f64(dW, dW6, nW), F32_F64_TOL);
    ot_check_close("f32 vs f64: matmul db", rel_f32_f64(db, db6, (size_t)out), F32_F64_TOL);

    float *xa = ot_malloc((size_t)T * r * sizeof(float)), *dA = ot_calloc((size_t)r * in, sizeof(float));
    float *dB = ot_calloc((size_t)out * r, sizeof(float));
    double *xa6 = ot_malloc((size_t)T * r * sizeof(double)), *dA6 = ot_calloc((size_t)r * in, sizeof(double));
    double *dB6 = ot_calloc((size_t)out * r, sizeof(double));
    ot_lora_fwd(y, xa, x, A, B, T, in, r, out, 2.0f);
    ot_lora_fwd_f64(y6, xa6, x6, A6, B6, T, in, r, out, 2.0f);
    ot_check_close("f32 vs f64: lora fwd", rel_f32_f64(y, y6, ny), F32_F64_TOL);
    memset(dx, 0, nx * sizeof(float)), memset(dx6, 0, nx * sizeof(double));
    ot_lora_bwd(dx, dA, dB, dy, x, xa, A, B, T, in, r, out, 2.0f);
    ot_lora_bwd_f64(dx6, dA6, dB6, dy6, x6, xa6, A6, B6, T, in, r, out, 2.0f);
    ot_check_close("f32 vs f64: lora dx", rel_f32_f64(dx, dx6, nx), F32_F64_TOL);
    ot_check_close("f32 vs f64: lora dA", rel_f32_f64(dA, dA6, (size_t)r * in), F32_F64_TOL);
    ot_check_close("f32 vs f64: lora dB", rel_f32_f64(dB, dB6, (size_t)out * r), F32_F64_TOL);

    float *nw = rand_f32((size_t)in, 0.5, 1.5), *rs = ot_malloc((size_t)T * sizeof(float));
    float *yn = ot_malloc(nx * sizeof(float)), *dnw = ot_calloc((size_t)in, sizeof(float));
    float *dyn = rand_f32(nx, -1, 1);
    double *nw6 = to_f64(nw, (size_t)in), *rs6 = ot_malloc((size_t)T * sizeof(double)),
           *yn6 = ot_malloc(nx * sizeof(double));
    double *dnw6 = ot_calloc((size_t)in, sizeof(double)), *dyn6 = to_f64(dyn, nx);
    ot_rmsnorm_fwd(yn, rs, x, nw, T, in, 1e-5f);
    ot_rmsnorm_fwd_f64(yn6, rs6, x6, nw6, T, in, 1e-5f);
    ot_check_close("f32 vs f64: rmsnorm fwd", rel_f32_f64(yn, yn6, nx), F32_F64_TOL);
    memset(dx, 0, nx * sizeof(float)), memset(dx6, 0, nx * sizeof(double));
    ot_rmsnorm_bwd(dx, dnw, dyn, x, nw, rs, T, in);
    ot_rmsnorm_bwd_f64(dx6, dnw6, dyn6, x6, nw6, rs6, T, in);
    ot_check_close("f32 vs f64: rmsnorm dx", rel_f32_f64(dx, dx6, nx), F32_F64_TOL);
    ot_check_close("f32 vs f64: rmsnorm dw", rel_f32_f64(dnw, dnw6, (size_t)in), F32_F64_TOL);

    // rope (position 1000: the float angle is shared by both, so only the final rounding differs)
    int nh = 3, D = 12;
    size_t nr = (size_t)T * nh * D;
    int32_t pos[13];
    for (int t = 0; t < T; t++)
        pos[t] = t * 77;
    float inv_freq[6];
    ot_rope_params rp = {
        .theta = 150000, .factor = 32, .beta_fast = 32, .beta_slow = 1, .original_max_position_embeddings = 4096};
    float attn = ot_rope_inv_freq(inv_freq, D, &rp);
    float *xr = rand_f32(nr, -1, 1);
    double *xr6 = to_f64(xr, nr);
    ot_rope_fwd(xr, pos, inv_freq, attn, T, nh, D);
    ot_rope_fwd_f64(xr6, pos, inv_freq, attn, T, nh, D);
    ot_check_close("f32 vs f64: rope fwd", rel_f32_f64(xr, xr6, nr), F32_F64_TOL);
    ot_rope_bwd(xr, pos, inv_freq, attn, T, nh, D);
    ot_rope_bwd_f64(xr6, pos, inv_freq, attn, T, nh, D);
    ot_check_close("f32 vs f64: rope bwd", rel_f32_f64(xr, xr6, nr), F32_F64_TOL);

    // attention
    int nkv = 1;
    int32_t seg[13];
    for (int t = 0; t < T; t++)
        seg[t] = t < 6 ? 0 : 6;
    size_t nq = (size_t)T * nh * D, nk = (size_t)T * nkv * D;
    float *q = rand_f32(nq, -1, 1), *k = rand_f32(nk, -1, 1), *v = rand_f32(nk, -1, 1), *sk = rand_f32(3, -1, 1);
    float *dO = rand_f32(nq, -1, 1);
    double *q6 = to_f64(q, nq), *k6 = to_f64(k, nk), *v6 = to_f64(v, nk), *sk6 = to_f64(sk, 3), *dO6 = to_f64(dO, nq);
    float *o = ot_malloc(nq * sizeof(float)), *lse = ot_malloc((size_t)T * nh * sizeof(float));
    float *dq = ot_calloc(nq, sizeof(float)), *dk = ot_calloc(nk, sizeof(float)), *dv = ot_calloc(nk, sizeof(float));
    float *ds = ot_calloc(3, sizeof(float));
    double *o6 = ot_malloc(nq * sizeof(double)), *lse6 = ot_malloc((size_t)T * nh * sizeof(double));
    double *dq6 = ot_calloc(nq, sizeof(double)), *dk6 = ot_calloc(nk, sizeof(double)),
           *dv6 = ot_calloc(nk, sizeof(double));
    double *ds6 = ot_calloc(3, sizeof(double));
    ot_attention_fwd(o, lse, q, k, v, sk, seg, T, nh, nkv, D, 4);
    ot_attention_fwd_f64(o6, lse6, q6, k6, v6, sk6, seg, T, nh, nkv, D, 4);
    ot_check_close("f32 vs f64: attention out", rel_f32_f64(o, o6, nq), F32_F64_TOL);
    ot_check_close("f32 vs f64: attention lse", rel_f32_f64(lse, lse6, (size_t)T * nh), F32_F64_TOL);
    ot_attention_bwd(dq, dk, dv, ds, dO, o, lse, q, k, v, sk, seg, T, nh, nkv, D, 4);
    ot_attention_bwd_f64(dq6, dk6, dv6, ds6, dO6, o6, lse6, q6, k6, v6, sk6, seg, T, nh, nkv, D, 4);
    ot_check_close("f32 vs f64: attention dq", rel_f32_f64(dq, dq6, nq), F32_F64_TOL);
    ot_check_close("f32 vs f64: attention dk", rel_f32_f64(dk, dk6, nk), F32_F64_TOL);
    ot_check_close("f32 vs f64: attention dv", rel_f32_f64(dv, dv6, nk), F32_F64_TOL);
    ot_check_close("f32 vs f64: attention dsinks", rel_f32_f64(ds, ds6, 3), F32_F64_TOL);

    // router
    int E = 9, kk = 3;
    float *lg = rand_f32((size_t)T * E, -2, 2), *rw = ot_malloc((size_t)T * kk * sizeof(float));
    float *drw = rand_f32((size_t)T * kk, -1, 1), *dlg = ot_calloc((size_t)T * E, sizeof(float));
    double *lg6 = to_f64(lg, (size_t)T * E), *rw6 = ot_malloc((size_t)T * kk * sizeof(double));
    double *drw6 = to_f64(drw, (size_t)T * kk), *dlg6 = ot_calloc((size_t)T * E, sizeof(double));
    int32_t *ri = ot_malloc((size_t)T * kk * sizeof(int32_t)), *ri6 = ot_malloc((size_t)T * kk * sizeof(int32_t));
    ot_router_topk_fwd(ri, rw, lg, T, E, kk);
    ot_router_topk_fwd_f64(ri6, rw6, lg6, T, E, kk);
    CHECK(memcmp(ri, ri6, (size_t)T * kk * sizeof(int32_t)) == 0, "f32 vs f64: router picked different experts");
    ot_check_close("f32 vs f64: router weights", rel_f32_f64(rw, rw6, (size_t)T * kk), F32_F64_TOL);
    ot_router_topk_bwd(dlg, drw, rw, ri, T, E, kk);
    ot_router_topk_bwd_f64(dlg6, drw6, rw6, ri6, T, E, kk);
    ot_check_close("f32 vs f64: router dlogits", rel_f32_f64(dlg, dlg6, (size_t)T * E), F32_F64_TOL);

    // swiglu
    int I = 10;
    size_t ngu = (size_t)T * 2 * I, na = (size_t)T * I;
    float *gu = rand_f32(ngu, -9, 9), *act = ot_malloc(na * sizeof(float)), *dact = rand_f32(na, -1, 1);
    float *dgu = ot_calloc(ngu, sizeof(float));
    double *gu6 = to_f64(gu, ngu), *act6 = ot_malloc(na * sizeof(double)), *dact6 = to_f64(dact, na);
    double *dgu6 = ot_calloc(ngu, sizeof(double));
    ot_swiglu_fwd(act, gu, T, I, 1.702f, 7.0f);
    ot_swiglu_fwd_f64(act6, gu6, T, I, 1.702f, 7.0f);
    ot_check_close("f32 vs f64: swiglu fwd", rel_f32_f64(act, act6, na), F32_F64_TOL);
    ot_swiglu_bwd(dgu, dact, gu, T, I, 1.702f, 7.0f);
    ot_swiglu_bwd_f64(dgu6, dact6, gu6, T, I, 1.702f, 7.0f);
    ot_check_close("f32 vs f64: swiglu dgu", rel_f32_f64(dgu, dgu6, ngu), F32_F64_TOL);

    // embedding
    int V = 5;
    int32_t ids[13];
    for (int t = 0; t < T; t++)
        ids[t] = (int32_t)(ot_rng_u64(&rng) % (uint64_t)V);
    float *tab = rand_f32((size_t)V * in, -1, 1), *emb = ot_malloc(nx * sizeof(float));
    float *dtab = ot_calloc((size_t)V * in, sizeof(float));
    double *tab6 = to_f64(tab, (size_t)V * in), *emb6 = ot_malloc(nx * sizeof(double));
    double *dtab6 = ot_calloc((size_t)V * in, sizeof(double));
    ot_embedding_fwd(emb, ids, tab, T, in);
    ot_embedding_fwd_f64(emb6, ids, tab6, T, in);
    ot_check_close("f32 vs f64: embedding fwd", rel_f32_f64(emb, emb6, nx), 0); // a copy: exact
    ot_embedding_bwd(dtab, x, ids, T, in);
    ot_embedding_bwd_f64(dtab6, x6, ids, T, in);
    ot_check_close("f32 vs f64: embedding dtable", rel_f32_f64(dtab, dtab6, (size_t)V * in), F32_F64_TOL);

    // lm head + cross-entropy (h = x rows, Wlm = W rows: V = out, H = in)
    int32_t tp[7] = {0, 2, 3, 5, 8, 11, 12}, tl[7] = {1, 0, 10, 4, 4, 7, 2};
    float *dh = ot_calloc(nx, sizeof(float)), *dWl = ot_calloc(nW, sizeof(float));
    double *dh6 = ot_calloc(nx, sizeof(double)), *dWl6 = ot_calloc(nW, sizeof(double));
    double l32 = ot_lmhead_xent(dh, dWl, x, W, tp, tl, 7, in, out, 0.5f);
    double l64 = ot_lmhead_xent_f64(dh6, dWl6, x6, W6, tp, tl, 7, in, out, 0.5f);
    ot_check_close("f32 vs f64: lmhead_xent loss", fabs(l32 - l64) / fabs(l64), F32_F64_TOL);
    ot_check_close("f32 vs f64: lmhead_xent dh", rel_f32_f64(dh, dh6, nx), F32_F64_TOL);
    ot_check_close("f32 vs f64: lmhead_xent dWlm", rel_f32_f64(dWl, dWl6, nW), F32_F64_TOL);

    // expert matmul on dense float weights (x rows as inputs, W as one expert [out, in])
    ot_expert_weight We = {.kind = OT_EXPERT_DENSE, .n_experts = 1, .rows = out, .cols = in, .dense = W};
    ot_expert_matmul_fwd(y, x, &We, 0, b, T);
    ot_expert_matmul_fwd_f64(y6, x6, &We, 0, b, T);
    snprintf(what, sizeof what, "f32 vs f64: expert matmul fwd");
    ot_check_close(what, rel_f32_f64(y, y6, ny), F32_F64_TOL);
    memset(dx, 0, nx * sizeof(float)), memset(dx6, 0, nx * sizeof(double));
    ot_expert_matmul_bwd(dx, dy, &We, 0, T);
    ot_expert_matmul_bwd_f64(dx6, dy6, &We, 0, T);
    ot_check_close("f32 vs f64: expert matmul dx", rel_f32_f64(dx, dx6, nx), F32_F64_TOL);
    // The float expert matmul and the float dense matmul are the same map on the same weights.
    float *y_mm = ot_malloc(ny * sizeof(float));
    ot_expert_matmul_fwd(y, x, &We, 0, b, T);
    ot_matmul_fwd(y_mm, x, W, b, T, in, out);
    CHECK(memcmp(y, y_mm, ny * sizeof(float)) == 0, "expert matmul (dense) differs from ot_matmul_fwd");

    free(x), free(W), free(b), free(dy), free(A), free(B), free(x6), free(W6), free(b6), free(dy6), free(A6), free(B6);
    free(y), free(dx), free(dW), free(db), free(y6), free(dx6), free(dW6), free(db6), free(xa), free(dA), free(dB);
    free(xa6), free(dA6), free(dB6), free(nw), free(rs), free(yn), free(dnw), free(dyn), free(nw6), free(rs6);
    free(yn6), free(dnw6), free(dyn6), free(xr), free(xr6), free(q), free(k), free(v), free(sk), free(dO), free(q6);
    free(k6), free(v6), free(sk6), free(dO6), free(o), free(lse), free(dq), free(dk), free(dv), free(ds), free(o6);
    free(lse6), free(dq6), free(dk6), free(dv6), free(ds6), free(lg), free(rw), free(drw), free(dlg), free(lg6);
    free(rw6), free(drw6), free(dlg6), free(ri), free(ri6), free(gu), free(act), free(dact), free(dgu), free(gu6);
    free(act6), free(dact6), free(dgu6), free(tab), free(emb), free(dtab), free(tab6), free(emb6), free(dtab6);
    free(dh), free(dWl), free(dh6), free(dWl6), free(y_mm);
}

// ---- MXFP4 expert weights vs the same weights dense --------------------------------------------------------------
static void test_expert_mxfp4_vs_dense(void) {
    int E = 2, rows = 7, cols = 64, n = 5, e = 1, groups = cols / 32;
    size_t ng = (size_t)E * rows * groups;
    uint8_t *blocks = ot_malloc(ng * 16), *scales = ot_malloc(ng);
    for (size_t i = 0; i < ng * 16; i++)
        blocks[i] = (uint8_t)(ot_rng_u64(&rng) & 0xff);
    for (size_t i = 0; i < ng; i++)
        scales[i] = (uint8_t)(122 + ot_rng_u64(&rng) % 8);
    float *dense = ot_malloc((size_t)E * rows * cols * sizeof(float));
    for (size_t rr = 0; rr < (size_t)E * rows; rr++)
        ot_mxfp4_dequant_row(dense + rr * cols, blocks + rr * groups * 16, scales + rr * groups, cols);
    ot_expert_weight Wq = {
        .kind = OT_EXPERT_MXFP4, .n_experts = E, .rows = rows, .cols = cols, .blocks = blocks, .scales = scales};
    ot_expert_weight Wd = {.kind = OT_EXPERT_DENSE, .n_experts = E, .rows = rows, .cols = cols, .dense = dense};
    float *x = rand_f32((size_t)n * cols, -1, 1), *bias = rand_f32((size_t)rows, -1, 1);
    float *dy = rand_f32((size_t)n * rows, -1, 1);
    float *yq = ot_malloc((size_t)n * rows * sizeof(float)), *yd = ot_malloc((size_t)n * rows * sizeof(float));
    float *dxq = ot_calloc((size_t)n * cols, sizeof(float)), *dxd = ot_calloc((size_t)n * cols, sizeof(float));
    ot_expert_matmul_fwd(yq, x, &Wq, e, bias, n);
    ot_expert_matmul_fwd(yd, x, &Wd, e, bias, n);
    CHECK(memcmp(yq, yd, (size_t)n * rows * sizeof(float)) == 0,
          "expert matmul fwd: MXFP4 differs from its dense form");
    ot_expert_matmul_bwd(dxq, dy, &Wq, e, n);
    ot_expert_matmul_bwd(dxd, dy, &Wd, e, n);
    CHECK(memcmp(dxq, dxd, (size_t)n * cols * sizeof(float)) == 0,
          "expert matmul bwd: MXFP4 differs from its dense form");
    // And against a plain product with the dense weights of expert e.
    double *want = ot_malloc((size_t)n * rows * sizeof(double));
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double s = bias[r];
            for (int c = 0; c < cols; c++)
                s += (double)x[(size_t)t * cols + c] * dense[((size_t)e * rows + r) * cols + c];
            want[(size_t)t * rows + r] = s;
        }
    ot_check_close("expert matmul MXFP4 vs plain product", rel_f32_f64(yq, want, (size_t)n * rows), 1e-6);
    free(blocks), free(scales), free(dense), free(x), free(bias), free(dy), free(yq), free(yd), free(dxq), free(dxd);
    free(want);
}

// ---- optimizer pieces ----------------------------------------------------------------------------------------
static void test_adamw(void) {
    enum { N = 5 };
    float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
    float p[N] = {1.0f, -0.5f, 0.25f, 2.0f, 0.0f}, m[N] = {0}, v[N] = {0};
    float g[3][N] = {
        {0.5f, -1.0f, 0.1f, 0.0f, 3.0f}, {0.4f, -0.2f, -0.3f, 1.0f, 2.0f}, {-0.1f, 0.7f, 0.2f, 0.5f, 1.0f}};
    // The textbook algorithm (Loshchilov & Hutter, as torch documents it), in double:
    //   p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; p ← p − lr·(m/bc1) / (√(v/bc2) + eps)
    double pr[N], mr[N] = {0}, vr[N] = {0};
    for (int i = 0; i < N; i++)
        pr[i] = p[i];
    for (int step = 1; step <= 3; step++) {
        ot_adamw_step(p, g[step - 1], m, v, N, lr, b1, b2, eps, wd, step);
        double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
        for (int i = 0; i < N; i++) {
            double gi = g[step - 1][i];
            pr[i] *= 1 - (double)lr * wd;
            mr[i] = b1 * mr[i] + (1 - (double)b1) * gi;
            vr[i] = b2 * vr[i] + (1 - (double)b2) * gi * gi;
            pr[i] -= lr * (mr[i] / bc1) / (sqrt(vr[i] / bc2) + eps);
        }
        char what[64];
        snprintf(what, sizeof what, "adamw step %d params vs textbook", step);
        ot_check_close(what, rel_f32_f64(p, pr, N), 1e-6);
        snprintf(what, sizeof what, "adamw step %d moments vs textbook", step);
        ot_check_close(what, rel_f32_f64(m, mr, N) + rel_f32_f64(v, vr, N), 2e-6);
        if (step == 1) {
            // By hand: after one step m/bc1 = g and v/bc2 = g², so p1 = p0·(1 − lr·wd) − lr·g/(|g| + eps):
            // p0 = 1, g = 0.5 → 0.999 − 0.01·0.5/0.50000001 = 0.98900000020; g = 0 → p0·0.999 exactly.
            ot_check_close("adamw step 1 by hand, p[0]", fabs(p[0] - 0.98900000020) / 0.989, 1e-7);
            ot_check_close("adamw step 1 by hand, p[3] (g = 0)", fabs(p[3] - 2.0 * 0.999) / 1.998, 1e-7);
        }
    }
    // Without weight decay a zero gradient leaves the parameter exactly where it was.
    float p1 = 0.75f, g0 = 0.0f, m1 = 0, v1 = 0;
    ot_adamw_step(&p1, &g0, &m1, &v1, 1, lr, b1, b2, eps, 0.0f, 1);
    CHECK(p1 == 0.75f, "adamw: zero gradient and no decay moved the parameter to %.9g", p1);
}

static void test_schedule_and_clip(void) {
    float lr_max = 1e-3f, lr_min = 1e-4f;
    long warmup = 10, total = 110;
    ot_check_close("lr_at(0) = lr_max/warmup", fabs(ot_lr_at(0, warmup, total, lr_max, lr_min) - 1e-4) / 1e-4, 1e-6);
    ot_check_close("lr_at(warmup-1) = lr_max", fabs(ot_lr_at(9, warmup, total, lr_max, lr_min) - 1e-3) / 1e-3, 1e-6);
    ot_check_close("lr_at(warmup) = lr_max", fabs(ot_lr_at(10, warmup, total, lr_max, lr_min) - 1e-3) / 1e-3, 1e-6);
    ot_check_close("lr_at(midpoint) = (max+min)/2", fabs(ot_lr_at(60, warmup, total, lr_max, lr_min) - 5.5e-4) / 5.5e-4,
                   1e-6);
    ot_check_close("lr_at(total) = lr_min", fabs(ot_lr_at(110, warmup, total, lr_max, lr_min) - 1e-4) / 1e-4, 1e-6);
    ot_check_close("lr_at(after total) = lr_min", fabs(ot_lr_at(500, warmup, total, lr_max, lr_min) - 1e-4) / 1e-4,
                   1e-6);
    ot_check_close("lr_at without warmup starts at lr_max", fabs(ot_lr_at(0, 0, 100, lr_max, 0) - 1e-3) / 1e-3, 1e-6);
    int monotone = 1;
    for (long s = warmup; s < total; s++)
        monotone &= ot_lr_at(s + 1, warmup, total, lr_max, lr_min) <= ot_lr_at(s, warmup, total, lr_max, lr_min);
    CHECK(monotone, "lr schedule must not increase after warmup");

    CHECK(ot_clip_coef(0.5, 1.0f) == 1.0f, "clip: norm below max_norm must give 1");
    CHECK(ot_clip_coef(123.0, 0.0f) == 1.0f, "clip: max_norm 0 disables clipping");
    ot_check_close("clip: norm 10, max 1 → 1/(10 + 1e-6)", fabs(ot_clip_coef(10.0, 1.0f) - 1.0 / (10.0 + 1e-6)) * 10,
                   1e-6);
    ot_check_close("clip: norm 4, max 2 → 2/(4 + 1e-6)", fabs(ot_clip_coef(4.0, 2.0f) - 2.0 / (4.0 + 1e-6)) / 0.5,
                   1e-6);

    float gs[7] = {1, -2, 3, 0.5f, -0.25f, 4, 1};
    CHECK(ot_sum_squares(gs, 7) == 1 + 4 + 9 + 0.25 + 0.0625 + 16 + 1, "sum of squares = %.17g", ot_sum_squares(gs, 7));
}

// The MoE plan groups the pairs by expert in pair order; unpermute adds each plan row back to its token.
static void test_moe_plan_and_unpermute(void) {
    const int T = 4, k = 2, E = 3, H = 2, n = T * k;
    const int32_t idx[8] = {2, 0, 0, 1, 2, 1, 0, 2}; // expert 0: pairs 1 2 6; 1: 3 5; 2: 0 4 7
    int32_t off[4], perm[8], inv[8];
    ot_moe_plan(off, perm, inv, idx, n, E);
    const int32_t want_off[4] = {0, 3, 5, 8}, want_perm[8] = {1, 2, 6, 3, 5, 0, 4, 7};
    CHECK(!memcmp(off, want_off, sizeof off) && !memcmp(perm, want_perm, sizeof perm),
          "moe_plan: offsets or order differ from experts in order, pairs in order within each");
    int inv_ok = 1;
    for (int p = 0; p < n; p++) inv_ok &= inv[perm[p]] == p;
    CHECK(inv_ok, "moe_plan: inv is not the inverse of perm");
    float rows[16], dx[8] = {0};
    for (int p = 0; p < n; p++) rows[2 * p] = (float)(p + 1), rows[2 * p + 1] = (float)(10 * (p + 1));
    ot_moe_unpermute_add(dx, rows, perm, n, k, H);
    // token t gets the rows of pairs 2t and 2t+1
    int un_ok = 1;
    for (int t = 0; t < T; t++)
        un_ok &= dx[2 * t] == (float)(inv[2 * t] + 1 + inv[2 * t + 1] + 1) &&
                 dx[2 * t + 1] == (float)(10 * (inv[2 * t] + 1) + 10 * (inv[2 * t + 1] + 1));
    CHECK(un_ok, "moe_unpermute_add: a token did not get exactly its own rows");
}

// The ordered slot sum adds left to right in double and rounds once: 1e8 + 1 − 1e8 is 1 (float sums would lose it),
// and the order of the slots is the order of the additions.
static void test_sum_slots_ordered(void) {
    const float slots[3 * 2] = {1e8f, 3.0f, 1.0f, 0.25f, -1e8f, 0.5f};
    float out[2] = {-1, -1};
    ot_sum_slots_ordered(out, slots, 3, 2);
    CHECK(out[0] == 1.0f && out[1] == 3.75f, "sum_slots_ordered: got %g %g, want 1 3.75", out[0], out[1]);
    float zero[2] = {-1, -1};
    ot_sum_slots_ordered(zero, slots, 0, 2);
    CHECK(zero[0] == 0.0f && zero[1] == 0.0f, "sum_slots_ordered: no slot must give zeros");
}

// ot_parse_size (common/): the --gpu-memory-limit values users write, and what must be refused.
static void test_parse_size(void) {
    static const struct {
        const char *s;
        uint64_t want;
    } good[] = {{"24GiB", 24ull << 30}, {"24G", 24ull << 30}, {"24GB", 24000000000ull}, {"1.5GiB", 3ull << 29},
                {"8000MiB", 8000ull << 20}, {"512", 512}, {"512B", 512}, {"2T", 2ull << 40}, {"64K", 65536},
                {".5M", 1ull << 19}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t b = 0;
        int rc = ot_parse_size(good[i].s, &b);
        CHECK(rc == 0 && b == good[i].want, "ot_parse_size('%s'): rc %d, %llu bytes; want %llu", good[i].s, rc,
              (unsigned long long)b, (unsigned long long)good[i].want);
    }
    static const char *const bad[] = {"", "GiB", "-1GiB", "+1GiB", " 1GiB", "1 GiB", "1gib", "1XB", "1GiBs", "inf",
                                      "nan", "0", "0.1", "1e300", "9999999TiB", "1e3e3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t b = 12345;
        CHECK(ot_parse_size(bad[i], &b) == -1 && b == 12345, "ot_parse_size('%s') must be refused", bad[i]);
    }
}

// ot_check_gpu_memory_limit (common/): within the limit or without one passes; past it, the message names the flag,
// both figures, when and the advice.
static void test_gpu_memory_limit(void) {
    ot_err err;
    err.msg[0] = 0;
    CHECK(ot_check_gpu_memory_limit(3ull << 30, 0, "after step 1", "x", &err) == 0, "no limit: must pass");
    CHECK(ot_check_gpu_memory_limit(3ull << 30, 3ull << 30, "after step 1", "x", &err) == 0, "at the limit: must pass");
    CHECK(err.msg[0] == 0, "a passing check must leave err alone");
    CHECK(ot_check_gpu_memory_limit((3ull << 30) + 1, 3ull << 30, "after step 7", "lower it", &err) == -1,
          "1 byte over the limit: must fail");
    CHECK(strstr(err.msg, "--gpu-memory-limit 3.00 GiB") && strstr(err.msg, "3.00 GiB in use after step 7") &&
              strstr(err.msg, ": lower it"),
          "the message names the flag, the figures, when and the advice: %s", err.msg);
}

int main(void) {
    ot_rng_seed(&rng, 77);
    test_parse_size();
    test_gpu_memory_limit();
    test_mxfp4();
    test_rope_inv_freq();
    test_attention_semantics();
    test_attention_packed_vs_alone();
    test_small_forwards();
    test_float_vs_double();
    test_expert_mxfp4_vs_dense();
    test_adamw();
    test_schedule_and_clip();
    test_moe_plan_and_unpermute();
    test_sum_slots_ordered();
    return ot_test_finish("test_kernels_misc");
}
