// Full training on the CPU reference: every base weight's gradient through the whole model, checked against
// central finite differences of the model's loss, one tensor at a time; the MXFP4 refusal; the files.
//
// usage: test_full_grad DENSE_MODEL_DIR MXFP4_MODEL_DIR PAIRS.h5 WORK_DIR
//
// The op-level gradients are checked in double (test_kernels_gradcheck); here the model runs in float, so the
// check is a directional derivative per tensor: d = ĝ + r̂ (the computed gradient's direction plus a random unit
// direction, so both a wrong magnitude and a wrong direction show), FD = (L(w + h·d) − L(w − h·d)) / 2h with
// h = 3e-3, against g·d. The step is a compromise the loss itself imposes: top-k routing and the SwiGLU clamp make
// it only piecewise smooth, and at h = 1e-2 a routing choice flips for some layer-0 tensors (errors of 3-4%);
// at h = 1e-3 the float rounding of the loss reaches the sinks' small gradients (4%). At 3e-3 the worst tensor
// is at about 4e-3; the tolerance is 2e-2, and a missing or doubled gradient term gives an error of order 1.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/ot_common.h"
#include "formats/fileio.h"
#include "formats/pairs_h5.h"
#include "trainer/train/checkpoint.h"
#include "trainer/model/full_params.h"
#include "trainer/graph/gptoss_cpu.h"
#include "tests/test_util.h"

#define FD_H 3e-3
#define FD_TOL 2e-2

static double loss_of(const ot_model *m, const ot_batch *b, ot_cpu_workspace *ws) {
    return ot_cpu_forward_backward(m, NULL, b, 0.0f, 0, ws) / (double)b->n_targets;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: test_full_grad DENSE_MODEL_DIR MXFP4_MODEL_DIR PAIRS.h5 WORK_DIR\n");
        return 2;
    }
    ot_err err;
    ot_model m;
    if (ot_model_load(&m, argv[1], &err)) ot_die("%s", err.msg);
    ot_full_params fp;
    CHECK(ot_full_params_build(&fp, &m, &err) == 0, "%s", err.msg);

    // Two samples packed into one row (so attention's sample boundary matters), answer-only targets.
    ot_pairs_h5 pairs;
    if (ot_pairs_h5_open(&pairs, argv[3], &err)) ot_die("%s", err.msg);
    ot_batch b;
    ot_batch_init(&b);
    int32_t *ids = ot_malloc(sizeof(int32_t) * (size_t)(pairs.max_sample_len + 1));
    for (int i = 0; i < 2; i++) {
        if (ot_pairs_h5_read(&pairs, i, ids, &err)) ot_die("%s", err.msg);
        ot_batch_add_sample(&b, ids, ot_pairs_h5_sample_len(&pairs, i), (int)pairs.loss_start[i]);
    }
    ot_cpu_workspace *ws = ot_cpu_workspace_new();

    float *grads = ot_calloc(fp.total, sizeof(float));
    ot_model g;
    ot_full_grad_view(&g, &m, grads);
    double loss = ot_cpu_forward_backward_full(&m, &g, &b, 1.0f / (float)b.n_targets, ws) / (double)b.n_targets;
    CHECK(fabs(loss - loss_of(&m, &b, ws)) < 1e-9 * fabs(loss), "the full backward's loss differs from the forward's");

    ot_rng rng;
    ot_rng_seed(&rng, 99);
    for (int i = 0; i < fp.n; i++) {
        const ot_full_param *p = &fp.p[i];
        float *w = m.owned + p->offset, *gw = grads + p->offset;
        double gn = sqrt(ot_sum_squares(gw, p->n));
        CHECK(gn > 0, "%s: the gradient is zero everywhere", p->name);
        double *d = ot_malloc(sizeof(double) * p->n), rn = 0;
        for (size_t k = 0; k < p->n; k++) {
            d[k] = ot_rng_normal(&rng);
            rn += d[k] * d[k];
        }
        double gd = 0;
        for (size_t k = 0; k < p->n; k++) {
            d[k] = (gn > 0 ? gw[k] / gn : 0) + d[k] / sqrt(rn);
            gd += (double)gw[k] * d[k];
        }
        float *w0 = ot_malloc(sizeof(float) * p->n);
        memcpy(w0, w, sizeof(float) * p->n);
        for (size_t k = 0; k < p->n; k++) w[k] = (float)(w0[k] + FD_H * d[k]);
        double lp = loss_of(&m, &b, ws);
        for (size_t k = 0; k < p->n; k++) w[k] = (float)(w0[k] - FD_H * d[k]);
        double lm = loss_of(&m, &b, ws);
        memcpy(w, w0, sizeof(float) * p->n);
        double fd = (lp - lm) / (2 * FD_H);
        char what[200];
        snprintf(what, sizeof what, "dL/d %.150s", p->name);
        ot_check_close(what, fabs(fd - gd) / fabs(fd), FD_TOL);
        free(w0);
        free(d);
    }

    // The model directory: bf16 of the master weights, readable as a model, and the master file round trip.
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/model", argv[4]);
    if (ot_mkdir_p(dir, &err)) ot_die("%s", err.msg);
    CHECK(ot_full_save_model_dir(&m, &fp, argv[1], dir, &err) == 0, "%s", err.msg);
    ot_model m2;
    CHECK(ot_model_load(&m2, dir, &err) == 0, "the saved model does not load: %s", err.msg);
    size_t bad = 0;
    for (size_t k = 0; k < fp.total; k++) bad += m2.owned[k] != ot_bf16_to_f32(ot_f32_to_bf16(m.owned[k]));
    CHECK(bad == 0, "%zu weights of the saved model are not the bf16 rounding of the master weights", bad);
    snprintf(path, sizeof path, "%s/master.safetensors", argv[4]);
    CHECK(ot_full_save_master(&m, &fp, path, &err) == 0, "%s", err.msg);
    CHECK(ot_full_load_master(&m2, &fp, path, &err) == 0, "%s", err.msg);
    CHECK(memcmp(m2.owned, m.owned, fp.total * sizeof(float)) == 0, "master weights changed in a save/load round trip");
    ot_model_free(&m2);

    // MXFP4 experts are refused with a message that says what to do.
    ot_model mq;
    if (ot_model_load(&mq, argv[2], &err)) ot_die("%s", err.msg);
    ot_full_params fq;
    int rc = ot_full_params_build(&fq, &mq, &err);
    CHECK(rc != 0 && strstr(err.msg, "MXFP4") && strstr(err.msg, "--dense-experts"),
          "MXFP4 experts must be refused with a clear message (rc %d: %s)", rc, rc ? err.msg : "");
    ot_model_free(&mq);

    ot_full_grad_view_free(&g);
    free(grads);
    free(ids);
    ot_cpu_workspace_free(ws);
    ot_batch_free(&b);
    ot_pairs_h5_close(&pairs);
    ot_full_params_free(&fp);
    ot_model_free(&m);
    return ot_test_finish("test_full_grad");
}
