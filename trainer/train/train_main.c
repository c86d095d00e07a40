// osstune-train: the rank program, one training loop for every backend and both run modes (LoRA on a frozen
// base, or --full). Every rank opens a step engine (step.h: it loads the base model and the trainable state for
// its backend), resumes from the run directory, then per step takes its rows of the global step from the data
// loader, computes gradients, joins the other ranks in summing them and takes the same AdamW step. Rank 0 writes
// checkpoints and metrics. SIGTERM / SIGUSR1 / SIGINT stop all ranks at the next step boundary after a
// checkpoint (exit 75: resume me); a second SIGINT aborts at once (exit 130).
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"
#include "trainer/train/data_loader.h"
#include "trainer/train/evaluate.h"
#include "trainer/train/run_log.h"
#include "trainer/train/step.h"
#include "trainer/train/train_options.h"

#define EXIT_ABORTED 130

// The one piece of process-wide mutable state: which stop signal arrived (a rank truly has this once).
static volatile sig_atomic_t g_stop_signal = 0;
static volatile sig_atomic_t g_sigint_count = 0;

static void on_signal(int sig) {
    if (sig == SIGINT && ++g_sigint_count >= 2) {
        static const char msg[] = "osstune-train: second SIGINT: aborting now (the last complete checkpoint is kept)\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(EXIT_ABORTED);
    }
    g_stop_signal = sig;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

#define FAIL(...)                                                                                                \
    do {                                                                                                         \
        fprintf(stderr, "%s: rank %d: ", prog, comm ? comm->rank : 0);                                           \
        fprintf(stderr, __VA_ARGS__);                                                                            \
        fprintf(stderr, "\n");                                                                                   \
        exit_code = 1;                                                                                           \
        goto done;                                                                                               \
    } while (0)

// An error stopped a run after it trained: rank 0 first checkpoints the last completed step, so no finished work is
// lost; the same command resumes from it once the cause is fixed.
static void save_before_failing(ot_step_engine *e, const ot_train_state *st, const char *prog) {
    ot_err err;
    if (ot_step_save(e, st, &err))
        fprintf(stderr, "%s: the checkpoint of step %lld could not be written either: %s\n", prog, (long long)st->step,
                err.msg);
    else
        fprintf(stderr, "%s: checkpoint %s/ckpt/step-%06lld written before stopping on the error above; the same "
                "command resumes from it once the error is fixed\n", prog, e->o->run_dir, (long long)st->step);
}

int main(int argc, char **argv) {
    ot_train_options o;
    int rc = ot_train_options_parse(&o, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    const char *prog = o.full ? "osstune-train --full" : "osstune-train";
    int exit_code = 0;
    ot_err err;
    ot_comm *comm = NULL;
    ot_step_engine *e = NULL;
    ot_train_state st;
    memset(&st, 0, sizeof st);
    ot_loader *loader = NULL;
    ot_batch batch;
    ot_batch_init(&batch);
    float *loss_pairs = NULL;
    ot_run_log log;
    memset(&log, 0, sizeof log);
    char *config_json = NULL;
    ot_pairs_h5 eval_pairs;
    int eval_open = 0;
    // After training started: the step whose state is complete (it may be checkpointed on an error; -1: none, e.g.
    // after a non-finite loss), the newest step with a checkpoint, and whether all ranks saw the error together.
    int64_t sound_step = -1, saved_step = 0;
    int failed_together = 0;
    ot_run_lock lock = {.fd = -1};
    int went_ahead = 0; // config.json written: the run directory is the run's now

    if (ot_comm_mpi_init(&comm, &argc, &argv, NULL, &err)) {
        fprintf(stderr, "osstune-train: %s\n", err.msg);
        return 1;
    }
    const int rank = comm->rank, world = comm->size;
    if (o.rows_per_step < world)
        FAIL("--rows-per-step %d is smaller than the number of ranks %d: every rank needs at least one row per step",
             o.rows_per_step, world);
    install_signals();

    // ---- one trainer per run directory: rank 0 holds its lock for the whole run ----------------------------------
    {
        int64_t mine = rank == 0 && ot_run_lock_take(&lock, o.run_dir, &err) != 0, any = mine;
        if (world > 1 && ot_comm_all_reduce(comm, &mine, &any, 1, OT_COMM_I64, OT_COMM_MAX, mine ? NULL : &err))
            FAIL("%s", err.msg);
        if (mine) FAIL("%s", err.msg);
        if (any) FAIL("rank 0 could not take the run directory's lock (its message says why)");
    }

    // ---- the step engine: backend, base model, what is trained, AdamW ---------------------------------------------
    if (ot_step_open(&e, &o, comm, &err)) FAIL("%s", err.msg);
    o.backend = ot_backend_name(e->backend); // resolved, as config.json records it
    if (o.init_adapter && !o.full) {          // the adapter's own options are what the run uses and records
        ot_lora_spec used;
        ot_lora_spec_of(&e->lo, &used);
        if (ot_train_options_adopt_adapter(&o, &used, e->m.cfg.num_hidden_layers, &err)) FAIL("%s", err.msg);
    }

    // ---- every input checked before anything is written ------------------------------------------------------------
    loader = ot_loader_new(o.data_path, e->m.cfg.vocab_size, o.seq_len, o.rows_per_step, rank, world, o.loss_all,
                           &err);
    if (!loader) FAIL("%s", err.msg);
    ot_loader_stats data_stats = ot_loader_get_stats(loader);
    if (rank == 0 && data_stats.n_too_long + data_stats.n_no_target > 0)
        fprintf(stderr, "%s: %s: %lld of %lld samples are never trained: %lld longer than --seq-len %d, %lld without a "
                "loss target (a single token)\n", prog, o.data_path,
                (long long)(data_stats.n_too_long + data_stats.n_no_target), (long long)data_stats.n_samples,
                (long long)data_stats.n_too_long, o.seq_len, (long long)data_stats.n_no_target);
    if (o.eval_data) {
        if (ot_eval_open(&eval_pairs, o.eval_data, e->m.cfg.vocab_size, o.eval_samples, &err)) FAIL("%s", err.msg);
        eval_open = 1;
    }
    if (ot_run_identity(&o, comm, &st, &config_json, &err)) FAIL("%s", err.msg);

    // ---- resume ---------------------------------------------------------------------------------------------------
    if (strcmp(o.resume, "never") == 0) {
        // Starting over where checkpoints are would replace and prune them, and repeat their steps in metrics.jsonl.
        int n_ckpt = 0;
        char newest[4200];
        if (ot_run_ckpt_list(o.run_dir, &n_ckpt, newest, sizeof newest, &err)) FAIL("%s", err.msg);
        if (n_ckpt > 0)
            FAIL("--resume never: %s already holds %d checkpoint%s (the newest %s); starting over there would replace "
                 "them. Use another --run-dir, or move %s/ckpt away first", o.run_dir, n_ckpt, n_ckpt == 1 ? "" : "s",
                 newest, o.run_dir);
    } else {
        ot_train_state saved;
        memset(&saved, 0, sizeof saved);
        char loaded[4096];
        int lr = ot_step_load(e, strcmp(o.resume, "auto") ? o.resume : NULL, st.model_fingerprint, &saved, loaded,
                              sizeof loaded, &err);
        if (lr < 0) FAIL("%s", err.msg);
        if (lr == 0 && ot_run_continue(&st, &saved, o.force_resume, comm, prog, loaded, &err)) {
            ot_train_state_free(&saved);
            FAIL("%s", err.msg);
        }
        ot_train_state_free(&saved);
    }
    if (st.step >= o.steps) {
        if (rank == 0) fprintf(stderr, "%s: the run is already complete (%lld of %ld steps)\n", prog, (long long)st.step, o.steps);
        goto done;
    }

    // ---- the engine's buffers (their size is checked too), then the run goes ahead: config, data cursor, metrics ---
    if (rank == 0) {
        char what[1024];
        ot_step_describe(e, what, sizeof what);
        fprintf(stderr, "%s: %d rank%s | %s | %d rows x %d tokens per step | steps %lld -> %ld\n", prog, world,
                world == 1 ? "" : "s", what, o.rows_per_step, o.seq_len, (long long)st.step, o.steps);
    }
    if (e->ops->start(e, data_stats.max_tokens_per_rank, &err)) FAIL("%s", err.msg);
    if (rank == 0 && ot_metrics_check(o.run_dir, &err)) FAIL("%s", err.msg);
    if (ot_run_write_config(&o, comm, config_json, &err)) FAIL("%s", err.msg);
    went_ahead = 1;
    ot_data_cursor cursor = {st.data_seed, st.data_epoch, st.data_next};
    if (ot_loader_start(loader, cursor, &err)) FAIL("%s", err.msg);
    if (ot_run_log_open(&log, &o, comm, prog, o.full ? "full" : NULL, &st, &err)) FAIL("%s", err.msg);
    loss_pairs = ot_malloc(sizeof(float) * 2 * (size_t)((o.rows_per_step + world - 1) / world + 1));
    log.base_bytes = e->ops->base_bytes(e, &log.base_bytes_one_rank, &log.base_layer_buffer_bytes);

    saved_step = st.step;
    int stopping = 0;
    while (st.step < o.steps) {
        ot_data_cursor after;
        if (ot_loader_next(loader, &batch, &after, &err)) FAIL("%s", err.msg);
        const float scale = batch.global_targets > 0 ? 1.0f / (float)batch.global_targets : 0.0f;
        int n_pairs = 0;
        double loss = 0;
        float lr = 0;
        if (e->ops->grads(e, &batch, scale, loss_pairs, &n_pairs, &err) || e->ops->sum_ranks(e, &batch, &err) ||
            ot_run_step_loss(comm, loss_pairs, n_pairs, batch.global_targets, &loss, &err))
            FAIL("%s", err.msg);
        double gnorm = e->ops->optimizer_step(e, &lr);
        // The step is complete once its loss is finite; what may still fail (agreeing, metrics) does not undo it.
        sound_step = isfinite(loss) ? st.step + 1 : -1;
        if (e->ops->device_in_use) log.gpu_in_use = e->ops->device_in_use(e);
        if (ot_run_step_done(&log, &st, &batch, &after, loss, gnorm, lr, g_stop_signal, &stopping, &err))
            FAIL("%s", err.msg);
        if (ot_run_check_gpu_limit(&log, &st, &err)) {
            failed_together = 1; // every rank saw the same figure
            FAIL("%s", err.msg);
        }
        if (eval_open && ot_run_eval_due(&log, &st, stopping)) {
            double eval_loss = 0, t_eval = ot_now_seconds();
            int64_t eval_targets = 0;
            if (e->ops->eval_loss(e, &eval_pairs, o.eval_samples, &eval_loss, &eval_targets, &err)) {
                failed_together = 1; // every rank returns the failure (evaluate.h)
                FAIL("validation on %s: %s", o.eval_data, err.msg);
            }
            if (ot_run_eval_record(&log, &st, eval_loss, eval_targets, ot_now_seconds() - t_eval, &err))
                FAIL("%s", err.msg);
        }
        if (ot_run_save_due(&log, &st, stopping)) {
            int save_rc = 0;
            ot_err save_err = {0};
            char took[32] = "";
            if (rank == 0) {
                double t0 = ot_now_seconds();
                save_rc = ot_step_save(e, &st, &save_err);
                if (o.full) snprintf(took, sizeof took, " (%.1f s)", ot_now_seconds() - t0);
            }
            int saved = ot_run_saved(&log, &st, save_rc, &save_err, took, &err);
            if (saved < 0) FAIL("%s", err.msg);
            if (saved > 0) {
                sound_step = -1; // the write just failed: not tried again
                exit_code = 1;
                goto done;
            }
            saved_step = st.step;
        }
        if (stopping) {
            exit_code = ot_run_stopped(&log, &st);
            break;
        }
    }
    if (e->ops->finish) e->ops->finish(e);
    if (rank == 0 && exit_code == 0) {
        char where[4200];
        ot_step_result_path(e, st.step, where, sizeof where);
        fprintf(stderr, "%s: finished %lld steps; %s\n", prog, (long long)st.step, where);
    }

done:
    if (exit_code == 1 && sound_step >= 0 && sound_step == st.step && st.step > saved_step) {
        if (rank == 0) save_before_failing(e, &st, prog);
        ot_err ignored;
        // Peers that failed together wait for the write; a rank that failed alone cannot be waited for.
        if (failed_together && world > 1) ot_comm_barrier(comm, &ignored);
    }
    if (exit_code == 1 && comm && comm->size > 1) {
        ot_run_lock_release(&lock, !went_ahead);
        // A failed rank must not leave its peers waiting in a collective.
        fprintf(stderr, "osstune-train: rank %d failed; aborting the job\n", comm->rank);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (eval_open) ot_pairs_h5_close(&eval_pairs);
    if (ot_run_log_close(&log, &err) && exit_code != 1) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        exit_code = 1;
    }
    if (loader) ot_loader_close(loader);
    ot_batch_free(&batch);
    free(loss_pairs);
    free(config_json);
    ot_train_state_free(&st);
    ot_step_free(e);
    ot_run_lock_release(&lock, !went_ahead); // last: everything of this run is written
    ot_comm_free(comm);
    return exit_code;
}
