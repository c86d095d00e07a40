// The CPU reference against transformers + peft (fixtures from tests/fixtures/make_golden.py):
// logits and loss under a label mask, every LoRA gradient (attention and experts, A and B both non-zero), and the
// adapter after 3 AdamW steps with gradient clipping. fp32 vs fp32; tolerances as the foundation issue states.
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/safetensors.h"
#include "tests/test_util.h"
#include "trainer/graph/gptoss_cpu.h"
#include "trainer/train/optimizer.h"

#define TOL_LOGITS 1e-5
#define TOL_LOSS 1e-5
#define TOL_GRAD 1e-4
#define TOL_AFTER3 1e-5

static const ot_tensor *need(const ot_safetensors *st, const char *name) {
    const ot_tensor *t = ot_safetensors_find(st, name);
    if (!t) ot_die("%s: fixture tensor '%s' missing", st->path, name);
    return t;
}

static float *as_f32(const ot_tensor *t) {
    float *out = ot_malloc(sizeof(float) * (size_t)t->numel);
    ot_err err;
    if (ot_tensor_to_f32(t, out, &err)) ot_die("%s", err.msg);
    return out;
}

static double meta_number(const ot_safetensors *st, const char *key) {
    json_error_t je;
    json_t *root = json_loads(st->metadata_json ? st->metadata_json : "{}", 0, &je);
    const char *s = json_string_value(json_object_get(root, key));
    if (!s) ot_die("%s: metadata key '%s' missing", st->path, key);
    double v = atof(s);
    json_decref(root);
    return v;
}

// Compares every tensor of `file` (our adapter written in PEFT layout) with expected "<prefix><name>".
static void compare_adapter_file(const char *file, const ot_safetensors *exp, const char *prefix, double tol,
                                 const char *what) {
    ot_safetensors got;
    ot_err err;
    if (ot_safetensors_open(&got, file, &err)) ot_die("%s", err.msg);
    int compared = 0;
    for (int i = 0; i < exp->n_tensors; i++) {
        const char *name = exp->tensors[i].name;
        if (strncmp(name, prefix, strlen(prefix))) continue;
        const ot_tensor *g = ot_safetensors_find(&got, name + strlen(prefix));
        CHECK(g != NULL, "%s: %s missing from our output", what, name + strlen(prefix));
        if (!g) continue;
        CHECK(g->numel == exp->tensors[i].numel, "%s: size mismatch", name);
        float *a = as_f32(g), *b = as_f32(&exp->tensors[i]);
        char label[200];
        snprintf(label, sizeof label, "%s %s", what, strstr(name, "layers.") ? strstr(name, "layers.") : name);
        ot_check_close(label, ot_rel_err_f32(a, b, (size_t)g->numel), tol);
        free(a);
        free(b);
        compared++;
    }
    CHECK(compared == got.n_tensors, "%s: compared %d of %d tensors", what, compared, got.n_tensors);
    CHECK(compared > 0, "%s: nothing compared", what);
    ot_safetensors_close(&got);
}

// Writes lo's gradients (or parameters) as a PEFT adapter file, so names and layouts match peft's.
static void save_as_peft(ot_lora *lo, int grads, const char *dir) {
    ot_err err;
    mkdir(dir, 0755);
    float *keep = lo->params;
    if (grads) lo->params = lo->grads;
    if (ot_lora_save_peft(lo, dir, &err)) ot_die("%s", err.msg);
    lo->params = keep;
}

int main(int argc, char **argv) {
    const char *fx = argc > 1 ? argv[1] : "tests/fixtures/golden";
    const char *tmp = argc > 2 ? argv[2] : "build/test_golden_out";
    char path[1024];
    ot_err err;
    mkdir(tmp, 0755);

    ot_model m;
    snprintf(path, sizeof path, "%s/model", fx);
    if (ot_model_load(&m, path, &err)) ot_die("%s", err.msg);
    ot_lora lo;
    snprintf(path, sizeof path, "%s/adapter", fx);
    if (ot_lora_load_peft(&lo, &m.cfg, path, &err)) ot_die("%s", err.msg);
    ot_safetensors exp;
    snprintf(path, sizeof path, "%s/expected.safetensors", fx);
    if (ot_safetensors_open(&exp, path, &err)) ot_die("%s", err.msg);

    // The batch: the fixture's rows packed as separate sequences (HF ran them as a [rows, len] batch).
    const ot_tensor *ids_t = need(&exp, "input_ids"), *labels_t = need(&exp, "labels");
    int rows = (int)ids_t->shape[0], len = (int)ids_t->shape[1];
    const int32_t *ids = (const int32_t *)ids_t->data, *labels = (const int32_t *)labels_t->data;
    ot_batch b;
    ot_batch_init(&b);
    for (int r = 0; r < rows; r++) {
        int ls = 0;
        while (ls < len && labels[r * len + ls] == -100) ls++;
        ot_batch_add_sample(&b, ids + r * len, len, ls);
    }
    ot_cpu_workspace *ws = ot_cpu_workspace_new();
    const int V = m.cfg.vocab_size;

    // 1. logits
    float *logits = ot_malloc(sizeof(float) * (size_t)b.T * V);
    ot_cpu_logits(&m, &lo, &b, logits, ws);
    float *want_logits = as_f32(need(&exp, "logits"));
    ot_check_close("logits", ot_rel_err_f32(logits, want_logits, (size_t)b.T * V), TOL_LOGITS);

    // 2. loss and 3. gradients
    memset(lo.grads, 0, sizeof(float) * lo.n_params);
    double loss = ot_cpu_forward_backward(&m, &lo, &b, 1.0f / (float)b.n_targets, 1, ws) / b.n_targets;
    float want_loss = *(const float *)need(&exp, "loss")->data;
    double loss_err = (loss - want_loss) / want_loss;
    ot_check_close("loss", loss_err < 0 ? -loss_err : loss_err, TOL_LOSS);
    snprintf(path, sizeof path, "%s/grads", tmp);
    save_as_peft(&lo, 1, path);
    snprintf(path, sizeof path, "%s/grads/adapter_model.safetensors", tmp);
    compare_adapter_file(path, &exp, "grad.", TOL_GRAD, "grad");

    // 4. three AdamW steps with clipping, the hyper-parameters read from the fixture's metadata
    ot_optim_config oc;
    ot_optim_config_default(&oc);
    oc.lr = oc.min_lr = (float)meta_number(&exp, "lr");
    oc.beta1 = (float)meta_number(&exp, "beta1");
    oc.beta2 = (float)meta_number(&exp, "beta2");
    oc.eps = (float)meta_number(&exp, "eps");
    oc.weight_decay = (float)meta_number(&exp, "weight_decay");
    oc.max_grad_norm = (float)meta_number(&exp, "max_grad_norm");
    oc.warmup_steps = 0;
    oc.total_steps = 1000;
    ot_optimizer opt;
    ot_optimizer_init(&opt, lo.n_params, &oc);
    const float *want_steps = (const float *)need(&exp, "step_losses")->data;
    for (int s = 0; s < 3; s++) {
        memset(lo.grads, 0, sizeof(float) * lo.n_params);
        double l = ot_cpu_forward_backward(&m, &lo, &b, 1.0f / (float)b.n_targets, 1, ws) / b.n_targets;
        double e = (l - want_steps[s]) / want_steps[s];
        char label[64];
        snprintf(label, sizeof label, "loss at AdamW step %d", s + 1);
        ot_check_close(label, e < 0 ? -e : e, TOL_LOSS);
        double gnorm = ot_optimizer_step(&opt, lo.params, lo.grads, NULL);
        printf("info step %d: grad norm before clipping %.6f\n", s + 1, gnorm);
    }
    snprintf(path, sizeof path, "%s/after3", tmp);
    save_as_peft(&lo, 0, path);
    // The comparison only means something if the steps moved the adapter far beyond the tolerance.
    {
        ot_lora start;
        snprintf(path, sizeof path, "%s/adapter", fx);
        if (ot_lora_load_peft(&start, &m.cfg, path, &err)) ot_die("%s", err.msg);
        double moved = ot_rel_err_f32(lo.params, start.params, lo.n_params);
        printf("info the 3 steps moved the adapter by %.3e (relative)\n", moved);
        CHECK(moved > 100 * TOL_AFTER3, "the optimizer steps barely moved the adapter (%.3e)", moved);
        ot_lora_free(&start);
    }
    snprintf(path, sizeof path, "%s/after3/adapter_model.safetensors", tmp);
    compare_adapter_file(path, &exp, "after3.", TOL_AFTER3, "after 3 steps");

    ot_optimizer_free(&opt);
    free(logits);
    free(want_logits);
    ot_batch_free(&b);
    ot_cpu_workspace_free(ws);
    ot_safetensors_close(&exp);
    ot_lora_free(&lo);
    ot_model_free(&m);
    return ot_test_finish("test_golden");
}
