// The KV-cache decoder against the full-sequence forward:
//   1. ot_attention_cache_fwd against ot_attention_fwd (float and double builds, with and without a window);
//   2. on the golden model (3 layers, MXFP4 experts, sliding window 7) with its LoRA adapter and without it,
//      the logits of every position decoded token by token, in uneven chunks (one longer than the decoder's
//      internal chunk), and after cutting the cache back, against ot_cpu_logits on the same prefix;
//   3. ot_generate: greedy tokens equal the argmax of the full forward, and re-using a cached prefix changes
//      nothing.
// Usage: test_translate_decode [GOLDEN_DIR]   (default tests/fixtures/golden)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"
#include "infer/decode_cpu.h"
#include "trainer/graph/gptoss_cpu.h"

// The bound for decoder vs full forward; the kernels are row-independent, so the logits are expected
// to be identical, which the test reports as information.
#define TOL_LOGITS 1e-5
#define TOL_ATT_F32 1e-6
#define TOL_ATT_F64 1e-13

#define T_SEQ 80 // positions: > the sliding window (7) and > the decoder's chunk of 64

static void fill_random(ot_rng *r, float *x, double *xd, size_t n) {
    for (size_t i = 0; i < n; i++) {
        xd[i] = ot_rng_normal(r);
        x[i] = (float)xd[i];
    }
}

static void test_attention_kernel(void) {
    const int T = 13, nh = 4, nkv = 2, D = 8;
    ot_rng r;
    ot_rng_seed(&r, 7);
    size_t nq = (size_t)T * nh * D, nk = (size_t)T * nkv * D;
    float *q = ot_malloc(nq * 4), *k = ot_malloc(nk * 4), *v = ot_malloc(nk * 4), *s = ot_malloc(nh * 4);
    double *qd = ot_malloc(nq * 8), *kd = ot_malloc(nk * 8), *vd = ot_malloc(nk * 8), *sd = ot_malloc(nh * 8);
    fill_random(&r, q, qd, nq);
    fill_random(&r, k, kd, nk);
    fill_random(&r, v, vd, nk);
    fill_random(&r, s, sd, nh);
    int32_t seg[13] = {0};
    float *full = ot_malloc(nq * 4), *lse = ot_malloc((size_t)T * nh * 4), *inc = ot_malloc(nq * 4);
    double *fulld = ot_malloc(nq * 8), *lsed = ot_malloc((size_t)T * nh * 8), *incd = ot_malloc(nq * 8);
    const int windows[2] = {0, 5};
    // queries in pieces: 4, then 1, then 8 (the cache holds every key up to the last query of a piece)
    const int pieces[3] = {4, 1, 8};
    for (int w = 0; w < 2; w++) {
        ot_attention_fwd(full, lse, q, k, v, s, seg, T, nh, nkv, D, windows[w]);
        ot_attention_fwd_f64(fulld, lsed, qd, kd, vd, sd, seg, T, nh, nkv, D, windows[w]);
        for (int p = 0, pos0 = 0; p < 3; pos0 += pieces[p++]) {
            size_t off = (size_t)pos0 * nh * D;
            ot_attention_cache_fwd(inc + off, q + off, k, v, s, pieces[p], pos0, nh, nkv, D, windows[w]);
            ot_attention_cache_fwd_f64(incd + off, qd + off, kd, vd, sd, pieces[p], pos0, nh, nkv, D, windows[w]);
        }
        char what[96];
        snprintf(what, sizeof what, "attention over cache, float, window %d", windows[w]);
        ot_check_close(what, ot_rel_err_f32(inc, full, nq), TOL_ATT_F32);
        snprintf(what, sizeof what, "attention over cache, double, window %d", windows[w]);
        ot_check_close(what, ot_rel_err_f64(incd, fulld, nq), TOL_ATT_F64);
    }
    free(q), free(k), free(v), free(s), free(qd), free(kd), free(vd), free(sd);
    free(full), free(lse), free(inc), free(fulld), free(lsed), free(incd);
}

static float *full_logits(const ot_model *m, const ot_lora *lo, const int32_t *ids, int T) {
    ot_batch b;
    ot_batch_init(&b);
    ot_batch_add_sample(&b, ids, T, 0);
    float *logits = ot_malloc(sizeof(float) * (size_t)T * m->cfg.vocab_size);
    ot_cpu_workspace *ws = ot_cpu_workspace_new();
    ot_cpu_logits(m, lo, &b, logits, ws);
    ot_cpu_workspace_free(ws);
    ot_batch_free(&b);
    return logits;
}

static void compare(const char *what, const float *got, const float *want, size_t n) {
    ot_check_close(what, ot_rel_err_f32(got, want, n), TOL_LOGITS);
    printf("info %s: %s\n", what, memcmp(got, want, n * sizeof(float)) ? "not bit-identical" : "bit-identical");
}

static void test_decoder(const ot_model *m, const ot_lora *lo, const int32_t *ids, const char *label) {
    const int V = m->cfg.vocab_size, T = T_SEQ;
    float *want = full_logits(m, lo, ids, T);
    float *got = ot_malloc(sizeof(float) * (size_t)T * V);
    ot_err err;
    char what[128];

    // token by token, the last token's logits each time
    ot_cpu_decoder *d = ot_cpu_decoder_new(m, lo);
    for (int t = 0; t < T; t++)
        if (ot_cpu_decoder_append(d, ids + t, 1, got + (size_t)t * V, OT_LOGITS_LAST, &err)) ot_die("%s", err.msg);
    CHECK(ot_cpu_decoder_len(d) == T, "cache length %d after %d tokens", ot_cpu_decoder_len(d), T);
    snprintf(what, sizeof what, "%s: one token at a time", label);
    compare(what, got, want, (size_t)T * V);

    // cut back to 9 positions (inside a sliding window's reach of later ones), then the rest in one append
    ot_cpu_decoder_truncate(d, 9);
    memset(got, 0, sizeof(float) * (size_t)T * V);
    if (ot_cpu_decoder_append(d, ids + 9, T - 9, got + (size_t)9 * V, OT_LOGITS_ALL, &err)) ot_die("%s", err.msg);
    snprintf(what, sizeof what, "%s: truncate to 9, append %d", label, T - 9);
    compare(what, got + (size_t)9 * V, want + (size_t)9 * V, (size_t)(T - 9) * V);
    ot_cpu_decoder_free(d);

    // uneven pieces, one of them longer than the decoder's internal chunk
    const int pieces[4] = {3, 1, 70, 6};
    d = ot_cpu_decoder_new(m, lo);
    memset(got, 0, sizeof(float) * (size_t)T * V);
    for (int p = 0, at = 0; p < 4; at += pieces[p++])
        if (ot_cpu_decoder_append(d, ids + at, pieces[p], got + (size_t)at * V, OT_LOGITS_ALL, &err))
            ot_die("%s", err.msg);
    snprintf(what, sizeof what, "%s: pieces of 3, 1, 70, 6", label);
    compare(what, got, want, (size_t)T * V);

    // a bad id is refused and leaves the cache as it was
    int32_t bad[2] = {ids[0], V};
    int rc = ot_cpu_decoder_append(d, bad, 2, NULL, OT_LOGITS_NONE, &err);
    CHECK(rc != 0, "an id equal to the vocabulary size was accepted");
    CHECK(rc != 0 && strstr(err.msg, "outside the model's vocabulary"), "message: %s", err.msg);
    CHECK(ot_cpu_decoder_len(d) == T, "the refused append changed the cache length to %d", ot_cpu_decoder_len(d));
    ot_cpu_decoder_free(d);
    free(got);
    free(want);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

// Greedy generation against argmax of the full forward, fresh and with a cache left by another prompt.
static void test_generate(const ot_model *m, const ot_lora *lo, const int32_t *ids) {
    const int V = m->cfg.vocab_size, n_prompt = 20, n_new = 8;
    ot_err err;
    ot_decoder dec;
    if (ot_decoder_open_cpu(&dec, m, lo, &err)) ot_die("%s", err.msg);
    ot_gen_options o;
    ot_gen_options_default(&o);
    o.max_new_tokens = n_new;
    ot_rng rng;
    ot_rng_seed(&rng, 1);

    // the prompt shares its first 12 tokens with an earlier, different one
    int32_t other[16];
    memcpy(other, ids, sizeof(int32_t) * 12);
    for (int i = 12; i < 16; i++) other[i] = (ids[i] + 1 + i) % V;
    ot_ids out0 = {0}, out1 = {0}, out2 = {0};
    int stop, reused;
    if (ot_generate(&dec, other, 16, &o, NULL, 0, &rng, &out0, &stop, &reused, &err)) ot_die("%s", err.msg);
    CHECK(reused == 0 && stop == -1 && out0.n == n_new, "first run: reused %d, stop %d, %d tokens", reused, stop,
          out0.n);
    if (ot_generate(&dec, ids, n_prompt, &o, NULL, 0, &rng, &out1, &stop, &reused, &err)) ot_die("%s", err.msg);
    CHECK(reused == 12, "second prompt re-used %d cached tokens, expected the 12 it shares", reused);

    ot_decoder fresh;
    if (ot_decoder_open_cpu(&fresh, m, lo, &err)) ot_die("%s", err.msg);
    if (ot_generate(&fresh, ids, n_prompt, &o, NULL, 0, &rng, &out2, &stop, &reused, &err)) ot_die("%s", err.msg);
    CHECK(out1.n == out2.n && memcmp(out1.v, out2.v, sizeof(int32_t) * (size_t)out1.n) == 0,
          "generation after re-using a cached prefix differs from a fresh decoder's");

    // the same tokens from the full forward: each generated token is the argmax after the sequence before it
    int32_t seq[20 + 8];
    memcpy(seq, ids, sizeof(int32_t) * n_prompt);
    memcpy(seq + n_prompt, out2.v, sizeof(int32_t) * (size_t)out2.n);
    float *logits = full_logits(m, lo, seq, n_prompt + n_new - 1);
    int same = 1;
    for (int i = 0; i < n_new; i++) same &= argmax(logits + (size_t)(n_prompt - 1 + i) * V, V) == out2.v[i];
    CHECK(same, "greedy tokens differ from the argmax of the full forward");
    int distinct = 0;
    for (int i = 1; i < n_new; i++) distinct |= out2.v[i] != out2.v[0];
    printf("info greedy continuation: %d %d %d ... (%s)\n", out2.v[0], out2.v[1], out2.v[2],
           distinct ? "varies" : "one repeated token");

    // a stop id ends generation and is returned as the last token
    ot_ids out3 = {0};
    int32_t stop_ids[2] = {-5, out2.v[3]};
    if (ot_generate(&fresh, ids, n_prompt, &o, stop_ids, 2, &rng, &out3, &stop, &reused, &err)) ot_die("%s", err.msg);
    int first = 0;
    while (out2.v[first] != out2.v[3]) first++;
    CHECK(stop == 1 && out3.n == first + 1, "stop id: stop %d after %d tokens, expected 1 after %d", stop, out3.n,
          first + 1);
    CHECK(reused == n_prompt - 1, "the same prompt again re-used %d tokens, expected %d", reused, n_prompt - 1);

    free(logits);
    ot_ids_free(&out0), ot_ids_free(&out1), ot_ids_free(&out2), ot_ids_free(&out3);
    ot_decoder_close(&dec);
    ot_decoder_close(&fresh);
}

int main(int argc, char **argv) {
    const char *fx = argc > 1 ? argv[1] : "tests/fixtures/golden";
    char path[1024];
    ot_err err;
    test_attention_kernel();

    ot_model m;
    snprintf(path, sizeof path, "%s/model", fx);
    if (ot_model_load(&m, path, &err)) ot_die("%s", err.msg);
    ot_lora lo;
    snprintf(path, sizeof path, "%s/adapter", fx);
    if (ot_lora_load_peft(&lo, &m.cfg, path, &err)) ot_die("%s", err.msg);
    CHECK(m.cfg.sliding_window < T_SEQ, "the fixture's sliding window %d is not exercised", m.cfg.sliding_window);

    int32_t ids[T_SEQ];
    ot_rng r;
    ot_rng_seed(&r, 2024);
    for (int i = 0; i < T_SEQ; i++) ids[i] = (int32_t)(ot_rng_u64(&r) % (uint64_t)m.cfg.vocab_size);

    test_decoder(&m, &lo, ids, "with adapter");
    test_decoder(&m, NULL, ids, "base model");
    test_generate(&m, &lo, ids);

    ot_lora_free(&lo);
    ot_model_free(&m);
    return ot_test_finish("test_translate_decode");
}
