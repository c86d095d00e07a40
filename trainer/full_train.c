// The --full training loop (see full_train.h). Kept apart from the LoRA loop so that neither grows a branch per
// line; what they share (loader, collectives, checkpoints protocol, and the run bookkeeping of run_log.h) is shared.
#include "trainer/full_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "trainer/checkpoint.h"
#include "trainer/data_loader.h"
#include "trainer/evaluate.h"
#include "trainer/full_checkpoint.h"
#include "trainer/gptoss_cpu.h"
#include "trainer/run_log.h"
#ifdef OT_HAVE_CUDA
#include "trainer/full_cuda.h"
#include "trainer/model_cuda.h"
#endif


double ot_full_optimizer_step(ot_optimizer *o, float *params, float *grads, const ot_full_params *fp, float *lr_used) {
    const ot_optim_config *c = &o->cfg;
    float lr;
    double norm = ot_optimizer_begin_step(o, grads, &lr);
    for (int i = 0; i < fp->n; i++) {
        const ot_full_param *p = &fp->p[i];
        ot_adamw_step(params + p->offset, grads + p->offset, o->m + p->offset, o->v + p->offset, p->n, lr, c->beta1,
                      c->beta2, c->eps, p->decay ? c->weight_decay : 0.0f, o->step);
    }
    if (lr_used) *lr_used = lr;
    return norm;
}

#define FAIL(...)                                                                                                \
    do {                                                                                                         \
        fprintf(stderr, "osstune-train --full: rank %d: ", comm->rank);                                          \
        fprintf(stderr, __VA_ARGS__);                                                                            \
        fprintf(stderr, "\n");                                                                                   \
        exit_code = 1;                                                                                           \
        goto done;                                                                                               \
    } while (0)

int ot_full_train_run(const ot_train_options *o, ot_comm *comm, volatile sig_atomic_t *stop_signal) {
    const int rank = comm->rank, world = comm->size;
    int exit_code = 0;
    ot_err err;
    ot_model m;
    memset(&m, 0, sizeof m);
    ot_full_params fp;
    memset(&fp, 0, sizeof fp);
    ot_optimizer opt;
    memset(&opt, 0, sizeof opt);
    ot_train_state st;
    memset(&st, 0, sizeof st);
    ot_loader *loader = NULL;
    ot_batch batch, row;
    ot_batch_init(&batch);
    ot_batch_init(&row);
    ot_cpu_workspace *ws = NULL;
    float *slots = NULL, *grads = NULL, *loss_slots = NULL;
    ot_run_log log;
    memset(&log, 0, sizeof log);
    char *config_json = NULL;
    ot_pairs_h5 eval_pairs;
    int eval_open = 0;
    // --backend cuda: the weights, gradients and AdamW state live on the GPU (trainer/full_cuda.h); the host
    // model m then only holds the layout and is filled from the device for checkpoints.
    const int use_cuda = strcmp(o->backend, "cuda") == 0;
#ifdef OT_HAVE_CUDA
    ot_full_cuda *fc = NULL;
#else
    if (use_cuda) FAIL("--backend cuda: this osstune-train was built without CUDA; use --backend cpu");
#endif
    if (!use_cuda && strcmp(o->backend, "cpu") != 0) FAIL("--full: unknown backend '%s'", o->backend);
    if (o->init_adapter) FAIL("--full trains the model itself: --init-adapter does not apply");
    if (o->shard_base == 1)
        FAIL("--shard-base on: --full keeps the whole model on every rank (sharding covers LoRA runs; use auto or off)");
    if (ot_model_load(&m, o->model_dir, &err)) FAIL("%s", err.msg);
    if (ot_full_params_build(&fp, &m, &err)) FAIL("%s", err.msg);
    if (!use_cuda) grads = ot_calloc(fp.total, sizeof(float)); // on the GPU, the gradients live there
    ot_optimizer_init(&opt, fp.total, &o->optim);

    // ---- run identity and resume (run_log.h, as the LoRA loop) ---------------------------------------------------
    if (ot_run_identity(o, comm, &st, &config_json, &err)) FAIL("%s", err.msg);
    if (strcmp(o->resume, "never") != 0) {
        if (strcmp(o->resume, "auto") != 0)
            FAIL("--full resumes from its own run directory only (--resume auto or never, not '%s')", o->resume);
        ot_train_state saved;
        memset(&saved, 0, sizeof saved);
        char loaded[4096] = "";
        int lr = ot_full_ckpt_load_latest(o->run_dir, &saved, &m, &fp, &opt, loaded, sizeof loaded, &err);
        if (lr < 0) FAIL("%s", err.msg);
        if (lr == 0) {
            if (ot_run_continue(&st, &saved, o->force_resume, comm, "osstune-train --full", loaded, &err)) {
                ot_train_state_free(&saved);
                FAIL("%s", err.msg);
            }
        }
        ot_train_state_free(&saved);
    }
    if (st.step >= o->steps) {
        if (rank == 0)
            fprintf(stderr, "osstune-train --full: the run is already complete (%lld of %ld steps)\n",
                    (long long)st.step, o->steps);
        goto done;
    }

    // ---- data -----------------------------------------------------------------------------------------------------
    ot_data_cursor cursor = {st.data_seed, st.data_epoch, st.data_next};
    loader = ot_loader_open(o->data_path, o->seq_len, o->rows_per_step, rank, world, o->loss_all, cursor, &err);
    if (!loader) FAIL("%s", err.msg);
    if (ot_run_log_open(&log, o, comm, "osstune-train --full", "full", &st, &err)) FAIL("%s", err.msg);
    if (rank == 0) {
        fprintf(stderr,
                "osstune-train --full: %d rank%s | model %s (%d layers, %d experts, hidden %d) | %zu trainable "
                "weights (%.1f M) | %d rows x %d tokens per step | steps %lld -> %ld\n",
                world, world == 1 ? "" : "s", o->model_dir, m.cfg.num_hidden_layers, m.cfg.num_local_experts,
                m.cfg.hidden_size, fp.total, (double)fp.total / 1e6, o->rows_per_step, o->seq_len,
                (long long)st.step, o->steps);
    }
    ws = ot_cpu_workspace_new();
    const int max_tokens = ot_loader_get_stats(loader).max_tokens_per_rank; // the GPU workspace's size
    (void)max_tokens; // unused without CUDA
#ifdef OT_HAVE_CUDA
    if (use_cuda) {
        int n_dev = ot_cuda_device_count();
        if (n_dev < 1) FAIL("--backend cuda: no CUDA device is visible to this process");
        // the masters of a resumed run are in m.owned and its moments in opt by now: they go up with the model
        fc = ot_full_cuda_new(&m, &fp, &opt, o->model_dir, comm->local_rank % n_dev, o->recompute, max_tokens, &err);
        if (!fc) FAIL("%s", err.msg);
        if (rank == 0) {
            char line[512];
            ot_full_cuda_describe(fc, line, sizeof line);
            fprintf(stderr, "osstune-train --full: backend cuda: one GPU per rank (rank 0: %s)\n", line);
        }
    }
#endif
    if (o->eval_data) {
        if (ot_pairs_h5_open(&eval_pairs, o->eval_data, &err)) FAIL("%s", err.msg);
        eval_open = 1;
    }
    const int max_rows = (o->rows_per_step + world - 1) / world;
    // CPU: one gradient slot per row, summed in global row order: N ranks give the bits of 1 rank. GPU: each
    // rank's rows run as one batch and the ranks' gradients are summed in rank order (full_cuda.h).
    if (!use_cuda) slots = ot_malloc(sizeof(float) * fp.total * (size_t)(max_rows + 1));
    loss_slots = ot_malloc(sizeof(float) * 2 * (size_t)(max_rows + 1));

    int stopping = 0;
    while (st.step < o->steps) {
        ot_data_cursor after;
        if (ot_loader_next(loader, &batch, &after, &err)) FAIL("%s", err.msg);
        float lr = 0;
        float scale = batch.global_targets > 0 ? 1.0f / (float)batch.global_targets : 0.0f;
        double gnorm = 0;
        int n_loss_slots = batch.n_rows;
#ifdef OT_HAVE_CUDA
        if (fc) {
            double rank_loss = 0;
            if (ot_full_cuda_grads(fc, &batch, scale, &rank_loss, &err)) FAIL("%s", err.msg);
            if (ot_full_cuda_sum_ranks(fc, comm, &err)) FAIL("%s", err.msg);
            ot_loss_pair(loss_slots, rank_loss);
            n_loss_slots = 1;
        }
#endif
        for (int i = 0; !use_cuda && i < batch.n_rows; i++) {
            ot_batch_extract_row(&batch, i, &row);
            float *slot = slots + (size_t)i * fp.total;
            memset(slot, 0, sizeof(float) * fp.total);
            ot_model gi;
            ot_full_grad_view(&gi, &m, slot);
            double rl = ot_cpu_forward_backward_full(&m, &gi, &row, scale, ws);
            ot_full_grad_view_free(&gi);
            ot_loss_pair(loss_slots + 2 * i, rl);
        }
        if (!use_cuda && ot_comm_all_reduce_ordered(comm, slots, batch.n_rows, fp.total, grads, &err))
            FAIL("%s", err.msg);
        double loss = 0;
        if (ot_run_step_loss(comm, loss_slots, n_loss_slots, batch.global_targets, &loss, &err)) FAIL("%s", err.msg);
#ifdef OT_HAVE_CUDA
        if (fc) gnorm = ot_full_cuda_optimizer_step(fc, &opt, &fp, &lr);
#endif
        if (!use_cuda) gnorm = ot_full_optimizer_step(&opt, m.owned, grads, &fp, &lr);
        if (ot_run_step_done(&log, &st, &batch, &after, loss, gnorm, lr, *stop_signal, &stopping, &err))
            FAIL("%s", err.msg);
        if (eval_open && ot_run_eval_due(&log, &st, stopping)) {
            double eval_loss = 0, t_eval = ot_now_seconds();
            int64_t eval_targets = 0;
            int eval_rc;
#ifdef OT_HAVE_CUDA
            if (fc)
                eval_rc = ot_cuda_eval_loss(ot_full_cuda_ctx(fc), &eval_pairs, comm, o->eval_samples, max_tokens,
                                            &eval_loss, &eval_targets, &err);
            else
#endif
                eval_rc = ot_eval_loss(&m, NULL, &eval_pairs, comm, o->eval_samples, ws, &eval_loss, &eval_targets, &err);
            if (eval_rc) FAIL("validation on %s: %s", o->eval_data, err.msg);
            ot_run_eval_record(&log, &st, eval_loss, eval_targets, ot_now_seconds() - t_eval);
        }
        if (ot_run_save_due(&log, &st, stopping)) {
            int save_rc = 0;
            ot_err save_err = {0};
            char took[32] = "";
            if (rank == 0) {
                double t0 = ot_now_seconds();
#ifdef OT_HAVE_CUDA
                if (fc) ot_full_cuda_download(fc, &m, &opt); // the masters and moments live on the GPU
#endif
                save_rc = ot_full_ckpt_save(o->run_dir, &st, &m, &fp, &opt, o->model_dir, o->keep_last, &save_err);
                snprintf(took, sizeof took, " (%.1f s)", ot_now_seconds() - t0);
            }
            int saved = ot_run_saved(&log, &st, save_rc, &save_err, took, &err);
            if (saved < 0) FAIL("%s", err.msg);
            if (saved > 0) {
                exit_code = 1;
                goto done;
            }
        }
        if (stopping) {
            exit_code = ot_run_stopped(&log, &st);
            break;
        }
    }
    if (rank == 0 && exit_code == 0)
        fprintf(stderr, "osstune-train --full: finished %lld steps; model: %s/ckpt/step-%06lld/model\n",
                (long long)st.step, o->run_dir, (long long)st.step);

done:
#ifdef OT_HAVE_CUDA
    ot_full_cuda_free(fc);
#endif
    if (eval_open) ot_pairs_h5_close(&eval_pairs);
    ot_run_log_close(&log);
    if (loader) ot_loader_close(loader);
    ot_batch_free(&batch);
    ot_batch_free(&row);
    ot_cpu_workspace_free(ws);
    free(slots);
    free(loss_slots);
    free(grads);
    free(config_json);
    ot_train_state_free(&st);
    ot_optimizer_free(&opt);
    ot_full_params_free(&fp);
    if (m.layers) ot_model_free(&m);
    return exit_code;
}
