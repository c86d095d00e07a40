// The CPU step engines, cpu-lora and cpu-full (step.h): the float32 reference. Each row of the step runs alone
// into its own gradient slot, and the ranks sum every row's slot in global row order (ot_comm_all_reduce_ordered),
// so N ranks compute bit for bit what 1 rank computes.
#include "trainer/train/step.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer/graph/gptoss_cpu.h"
#include "trainer/model/model_shard.h"
#include "trainer/train/evaluate.h"
#include "trainer/train/run_log.h"

typedef struct {
    ot_cpu_workspace *ws;
    ot_batch row;
    float *slots;       // [max rows + 1][n]: one gradient slot per row of this rank
    float *grads;       // [n] the summed gradient (LoRA: the adapter's own gradient buffer)
    ot_param_span *spans; // --full: AdamW tensor by tensor, weight decay on the matrices only
    int n_spans;
} cpu_engine;

static size_t n_trainable(const ot_step_engine *e) { return e->opt.n; }

static int cpu_start(ot_step_engine *e, int max_tokens_per_rank, ot_err *err) {
    (void)max_tokens_per_rank;
    cpu_engine *c = e->impl;
    const ot_train_options *o = e->o;
    const int world = e->comm->size, max_rows = (o->rows_per_step + world - 1) / world;
    // One gradient slot per row of this rank: refused up front when it cannot fit, rather than dying in malloc.
    const double slot_bytes = (double)n_trainable(e) * sizeof(float) * (max_rows + 1);
    const double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (ram > 0 && slot_bytes > ram)
        return ot_fail(err, "--rows-per-step %d: the CPU backend keeps one gradient slot per row of a rank (%d rows x "
                       "%zu values = %.1f GiB), more than this machine's %.1f GiB of memory; lower --rows-per-step or "
                       "run more ranks", o->rows_per_step, max_rows, n_trainable(e), slot_bytes / (1u << 30),
                       ram / (1u << 30));
    c->ws = ot_cpu_workspace_new();
    c->slots = ot_malloc(sizeof(float) * n_trainable(e) * (size_t)(max_rows + 1));
    if (e->mode == OT_RUN_FULL) {
        c->grads = ot_calloc(e->fp.total, sizeof(float));
        c->spans = ot_malloc(sizeof *c->spans * (size_t)e->fp.n);
        for (int i = 0; i < e->fp.n; i++)
            c->spans[i] = (ot_param_span){e->fp.p[i].offset, e->fp.p[i].n, e->fp.p[i].decay};
        c->n_spans = e->fp.n;
    } else {
        c->grads = e->lo.grads;
    }
    if (e->comm->rank == 0 && e->mode == OT_RUN_LORA) {
        size_t one = 0, layer_buf = 0, mine = ot_model_base_bytes(&e->m, &one, &layer_buf);
        if (e->sharded)
            fprintf(stderr, "osstune-train: base weights %.3f GiB on this rank (sharded over %d; %.3f GiB on one "
                    "rank; gather buffers 2 x %.2f MiB)\n", (double)mine / (1u << 30), world,
                    (double)one / (1u << 30), (double)layer_buf / (1u << 20));
        else
            fprintf(stderr, "osstune-train: base weights %.3f GiB on this rank (not sharded)\n",
                    (double)mine / (1u << 30));
    }
    return 0;
}

static int cpu_grads(ot_step_engine *e, const ot_batch *b, float grad_scale, float *loss_pairs, int *n_pairs,
                     ot_err *err) {
    (void)err;
    cpu_engine *c = e->impl;
    const size_t n = n_trainable(e);
    const int world = e->comm->size, max_rows = (e->o->rows_per_step + world - 1) / world;
    // Sharded: every rank runs max_rows passes (idle ones past its rows) so the gathers line up.
    for (int i = 0; i < (e->sharded ? max_rows : b->n_rows); i++) {
        if (i >= b->n_rows) {
            ot_model_idle_pass(&e->m, 1);
            continue;
        }
        ot_batch_extract_row(b, i, &c->row);
        float *slot = c->slots + (size_t)i * n;
        memset(slot, 0, sizeof(float) * n);
        double loss;
        if (e->mode == OT_RUN_FULL) {
            ot_model g;
            ot_full_grad_view(&g, &e->m, slot);
            loss = ot_cpu_forward_backward_full(&e->m, &g, &c->row, grad_scale, c->ws);
            ot_full_grad_view_free(&g);
        } else {
            e->lo.grads = slot;
            loss = ot_cpu_forward_backward(&e->m, &e->lo, &c->row, grad_scale, 1, c->ws);
            e->lo.grads = c->grads;
        }
        ot_loss_pair(loss_pairs + 2 * i, loss);
    }
    *n_pairs = b->n_rows;
    return 0;
}

static int cpu_sum_ranks(ot_step_engine *e, const ot_batch *b, ot_err *err) {
    cpu_engine *c = e->impl;
    return ot_comm_all_reduce_ordered(e->comm, c->slots, b->n_rows, n_trainable(e), c->grads, err);
}

static double cpu_optimizer_step(ot_step_engine *e, float *lr_used) {
    cpu_engine *c = e->impl;
    float *params = e->mode == OT_RUN_FULL ? e->m.owned : e->lo.params;
    return ot_optimizer_step_spans(&e->opt, params, c->grads, c->spans, c->n_spans, lr_used);
}

static int cpu_eval_forward(void *ctx, const ot_batch *b, double *loss_sum, ot_err *err) {
    (void)err;
    ot_step_engine *e = ctx;
    cpu_engine *c = e->impl;
    *loss_sum = ot_cpu_forward_backward(&e->m, e->mode == OT_RUN_LORA ? &e->lo : NULL, b, 0.0f, 0, c->ws);
    return 0;
}

static int cpu_eval_loss(ot_step_engine *e, ot_pairs_h5 *pairs, int64_t max_samples, double *mean_loss,
                         int64_t *n_targets, ot_err *err) {
    // One sample per pass, as the training rows run.
    ot_evaluator ev = {cpu_eval_forward, e, 1, e->sharded, e->m.cfg.vocab_size};
    return ot_eval_loss(&ev, pairs, e->comm, max_samples, mean_loss, n_targets, err);
}

static size_t cpu_base_bytes(const ot_step_engine *e, size_t *one_rank, size_t *layer_buffer) {
    return ot_model_base_bytes(&e->m, one_rank, layer_buffer);
}

static void cpu_destroy(ot_step_engine *e) {
    cpu_engine *c = e->impl;
    ot_cpu_workspace_free(c->ws);
    ot_batch_free(&c->row);
    free(c->slots);
    if (e->mode == OT_RUN_FULL) free(c->grads);
    free(c->spans);
}

static const ot_step_ops cpu_ops = {.start = cpu_start, .grads = cpu_grads, .sum_ranks = cpu_sum_ranks,
                                    .optimizer_step = cpu_optimizer_step, .eval_loss = cpu_eval_loss,
                                    .base_bytes = cpu_base_bytes, .destroy = cpu_destroy};

int ot_step_open_cpu(ot_step_engine *e, ot_err *err) {
    cpu_engine *c = ot_step_attach(e, e->mode == OT_RUN_FULL ? "cpu-full" : "cpu-lora", &cpu_ops, sizeof *c);
    ot_batch_init(&c->row);
    return ot_step_load_cpu_model(e, err);
}
