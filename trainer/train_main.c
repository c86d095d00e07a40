// osstune-train: the rank program. Every rank loads the base model, takes its rows of each global step from the
// data loader, computes LoRA gradients row by row, and the ranks sum the rows' gradients in global row order (so
// N ranks compute bit for bit what 1 rank computes); then every rank takes the same AdamW step.
// Rank 0 writes checkpoints and metrics. SIGTERM / SIGUSR1 / SIGINT stop all ranks at the next step boundary
// after a checkpoint (exit 75: resume me); a second SIGINT aborts at once (exit 130).
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "comm/comm.h"
#include "trainer/checkpoint.h"
#include "trainer/data_loader.h"
#include "trainer/evaluate.h"
#include "trainer/full_train.h"
#include "trainer/gptoss_cpu.h"
#include "trainer/model_shard.h"
#include "trainer/run_log.h"
#include "trainer/train_options.h"
#ifdef OT_HAVE_CUDA
#include "trainer/gptoss_cuda.h"
#include "trainer/model_cuda_shard.h"
#endif

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

// A GPU this build can drive (CUDA built in and a device visible).
static int cuda_available(void) {
#ifdef OT_HAVE_CUDA
    return ot_cuda_device_count() > 0;
#else
    return 0;
#endif
}

#ifdef OT_HAVE_CUDA
// The LoRA gradients of several GPUs are summed by NCCL on the device (the NCCL communicator may also exist only for
// the gathers of sharded base weights, with --grad-reduce ordered).
static int nccl_grads_on(const ot_comm *gcomm, const ot_train_options *o) { return gcomm && o->grad_reduce != 2; }
#endif

#define FAIL(...)                                                                                                \
    do {                                                                                                         \
        fprintf(stderr, "osstune-train: rank %d: ", comm ? comm->rank : 0);                                      \
        fprintf(stderr, __VA_ARGS__);                                                                            \
        fprintf(stderr, "\n");                                                                                   \
        exit_code = 1;                                                                                           \
        goto done;                                                                                               \
    } while (0)

int main(int argc, char **argv) {
    ot_train_options o;
    int rc = ot_train_options_parse(&o, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    // auto: the GPU when this build has CUDA and the machine has a GPU, else the CPU reference.
    if (!strcmp(o.backend, "auto")) o.backend = cuda_available() ? "cuda" : "cpu";
    const int use_cuda = strcmp(o.backend, "cuda") == 0;
    int exit_code = 0;
    ot_err err;
    ot_comm *comm = NULL;
    ot_model m;
    memset(&m, 0, sizeof m);
    ot_lora lo;
    memset(&lo, 0, sizeof lo);
    ot_optimizer opt;
    memset(&opt, 0, sizeof opt);
    ot_train_state st;
    memset(&st, 0, sizeof st);
    ot_loader *loader = NULL;
    ot_batch batch, row;
    ot_batch_init(&batch);
    ot_batch_init(&row);
    ot_cpu_workspace *ws = NULL;
    float *slots = NULL;
    ot_run_log log;
    memset(&log, 0, sizeof log);
    char *config_json = NULL;
    ot_pairs_h5 eval_pairs;
    int eval_open = 0;
#ifdef OT_HAVE_CUDA
    ot_cuda_model cm;
    memset(&cm, 0, sizeof cm);
    ot_cuda_ctx *cctx = NULL;
    ot_comm *gcomm = NULL; // NCCL, for the gradient sum on the device (several GPU ranks)
#endif

    if (ot_comm_mpi_init(&comm, &argc, &argv, NULL, &err)) {
        fprintf(stderr, "osstune-train: %s\n", err.msg);
        return 1;
    }
    const int rank = comm->rank, world = comm->size;
#ifndef OT_HAVE_CUDA
    if (use_cuda) FAIL("--backend cuda: this osstune-train was built without CUDA (no nvcc at build time); use --backend cpu");
#endif
    if (o.rows_per_step < world)
        FAIL("--rows-per-step %d is smaller than the number of ranks %d: every rank needs at least one row per step",
             o.rows_per_step, world);
    install_signals();
    if (o.full) { // every weight, no LoRA: its own loop (trainer/full_train.c)
        exit_code = ot_full_train_run(&o, comm, &g_stop_signal);
        goto done;
    }
    // FSDP sharding of the base weights (auto: with more than one rank), on either backend.
    const int shard = o.shard_base < 0 ? world > 1 : o.shard_base;

    // ---- model, adapter, optimizer -------------------------------------------------------------------------------
    if (use_cuda) {
#ifdef OT_HAVE_CUDA
        // One GPU per rank: the node-local rank picks it.
        int n_dev = ot_cuda_device_count();
        if (n_dev < 1) FAIL("--backend cuda: no CUDA device is visible to this process");
        const int dev = comm->local_rank % n_dev;
        // NCCL: for the LoRA gradient sum on the device (several GPUs, unless --grad-reduce ordered) and for the
        // gathers of sharded base weights. Only where device memory is host-visible (the emulated CUDA runtime of
        // tests/gpu/train_emu) can the MPI communicator do the gathers instead.
        const int nccl_grads = world > 1 && o.grad_reduce != 2;
        if ((nccl_grads || (shard && !ot_cuda_memory_host_visible(dev))) && ot_comm_nccl_init(&gcomm, comm, &err))
            FAIL("%s", err.msg);
        if (shard ? ot_cuda_model_load_sharded(&cm, o.model_dir, dev, gcomm ? gcomm : comm, &err)
                  : ot_cuda_model_load(&cm, o.model_dir, dev, &err))
            FAIL("%s", err.msg);
        m.cfg = cm.cfg; // the adapter layout, its files and the checkpoints need only the config
#endif
    } else if (shard ? ot_model_load_sharded(&m, o.model_dir, comm, 0, &err) : ot_model_load(&m, o.model_dir, &err)) {
        FAIL("%s", err.msg);
    }
    if (o.init_adapter) {
        if (ot_lora_load_peft(&lo, &m.cfg, o.init_adapter, &err)) FAIL("%s", err.msg);
    } else {
        ot_lora_init(&lo, &m.cfg, &o.lora, o.seed);
    }
    ot_optimizer_init(&opt, lo.n_params, &o.optim);

    // ---- run identity: resolved options and fingerprints ----------------------------------------------------------
    if (ot_run_identity(&o, comm, &st, &config_json, &err)) FAIL("%s", err.msg);

    // ---- resume ---------------------------------------------------------------------------------------------------
    if (strcmp(o.resume, "never") != 0) {
        ot_train_state saved;
        memset(&saved, 0, sizeof saved);
        char loaded[4096] = "";
        int lr = strcmp(o.resume, "auto") == 0
                     ? ot_ckpt_load_latest(o.run_dir, &saved, &lo, &m, &opt, loaded, sizeof loaded, &err)
                     : ot_ckpt_load(o.resume, &saved, &lo, &m, &opt, &err);
        if (lr < 0) FAIL("%s", err.msg);
        if (lr == 0) {
            if (ot_run_continue(&st, &saved, o.force_resume, comm, "osstune-train", loaded[0] ? loaded : o.resume,
                                &err)) {
                ot_train_state_free(&saved);
                FAIL("%s", err.msg);
            }
        }
        ot_train_state_free(&saved);
    }
    if (st.step >= o.steps) {
        if (rank == 0) fprintf(stderr, "osstune-train: the run is already complete (%lld of %ld steps)\n", (long long)st.step, o.steps);
        goto done;
    }

    // ---- data -----------------------------------------------------------------------------------------------------
    ot_data_cursor cursor = {st.data_seed, st.data_epoch, st.data_next};
    loader = ot_loader_open(o.data_path, o.seq_len, o.rows_per_step, rank, world, o.loss_all, cursor, &err);
    if (!loader) FAIL("%s", err.msg);
    if (ot_run_log_open(&log, &o, comm, "osstune-train", NULL, &st, &err)) FAIL("%s", err.msg);
    if (rank == 0) {
        fprintf(stderr,
                "osstune-train: %d rank%s | model %s (%d layers, %d experts) | LoRA r=%d on %zu parameters | "
                "%d rows x %d tokens per step | steps %lld -> %ld\n",
                world, world == 1 ? "" : "s", o.model_dir, m.cfg.num_hidden_layers, m.cfg.num_local_experts, lo.r,
                lo.n_params, o.rows_per_step, o.seq_len, (long long)st.step, o.steps);
        if (!use_cuda) {
            size_t one = 0, layer_buf = 0, mine = ot_model_base_bytes(&m, &one, &layer_buf);
            if (shard)
                fprintf(stderr, "osstune-train: base weights %.3f GiB on this rank (sharded over %d; %.3f GiB on one "
                        "rank; gather buffers 2 x %.2f MiB)\n", (double)mine / (1u << 30), world,
                        (double)one / (1u << 30), (double)layer_buf / (1u << 20));
            else
                fprintf(stderr, "osstune-train: base weights %.3f GiB on this rank (not sharded)\n",
                        (double)mine / (1u << 30));
        }
    }
    ws = ot_cpu_workspace_new();
#ifdef OT_HAVE_CUDA
    if (use_cuda) {
        // Keep every layer's activations when they fit; otherwise recompute each layer in backward.
        int max_tokens = ot_loader_get_stats(loader).max_tokens_per_rank;
        ot_cuda_run_options ro = {0, 0};
        ro.recompute = o.recompute >= 0 ? o.recompute : ot_cuda_need_recompute(&cm, &lo, max_tokens, max_tokens);
        if (shard) { // recomputation changes the order of the gathers, which must be the same on every rank
            int64_t r = ro.recompute, any = 0;
            if (ot_comm_all_reduce(comm, &r, &any, 1, OT_COMM_I64, OT_COMM_MAX, &err)) FAIL("%s", err.msg);
            ro.recompute = (int)any;
        }
        cctx = ot_cuda_ctx_new(&cm, &lo, &ro, max_tokens, max_tokens); // uploads lo.params (resumed or fresh)
        ot_cuda_optimizer_set(cctx, &opt);                              // the AdamW moments likewise
        if (rank == 0) {
            size_t one = 0, gather_buf = 0, mine = ot_cuda_model_base_bytes(&cm, &one, &gather_buf);
            char how[160];
            if (shard)
                snprintf(how, sizeof how, "sharded over %d; %.2f GiB on one rank; gather buffers %.1f MiB", world,
                         (double)one / (1u << 30), (double)gather_buf / (1u << 20));
            else
                snprintf(how, sizeof how, "not sharded");
            fprintf(stderr, "osstune-train: backend cuda: one GPU per rank (rank 0 on GPU %d), base weights %.2f GiB "
                    "on this rank (%s), activation recomputation %s, gradients summed %s\n", cm.device,
                    (double)mine / (1u << 30), how, ro.recompute ? "on" : "off",
                    world == 1 ? "(one rank)" : nccl_grads_on(gcomm, &o) ? "by NCCL on the device" : "in rank order on the host");
        }
    }
#endif
    if (o.eval_data) {
        if (ot_pairs_h5_open(&eval_pairs, o.eval_data, &err)) FAIL("%s", err.msg);
        eval_open = 1;
    }
    const int max_rows = (o.rows_per_step + world - 1) / world;
    // CPU: one gradient slot per row; GPU: one per rank (its rows run as one batch), summed in rank order.
    slots = ot_malloc(sizeof(float) * lo.n_params * (size_t)(use_cuda ? 1 : max_rows + 1));
    float *loss_slots = ot_malloc(sizeof(float) * 2 * (size_t)(max_rows + 1));

    // Per-rank base-weight memory for the metrics (the GPU: the device arena).
    if (!use_cuda) log.base_bytes = ot_model_base_bytes(&m, &log.base_bytes_one_rank, &log.base_layer_buffer_bytes);
#ifdef OT_HAVE_CUDA
    else log.base_bytes = ot_cuda_model_base_bytes(&cm, &log.base_bytes_one_rank, &log.base_layer_buffer_bytes);
#endif
    int stopping = 0;
    while (st.step < o.steps) {
        ot_data_cursor after;
        if (ot_loader_next(loader, &batch, &after, &err)) FAIL("%s", err.msg);
        double loss = 0, gnorm = 0;
        float lr = 0;
        if (use_cuda) {
#ifdef OT_HAVE_CUDA
            // This rank's rows as one batch on the GPU; the ranks' gradients are summed in rank order (ordered
            // sum through host memory: exact, and small next to a step for LoRA-sized gradients).
            float scale = batch.global_targets > 0 ? 1.0f / (float)batch.global_targets : 0.0f;
            double rank_loss = 0;
            ot_cuda_lora_zero_grads(cctx);
            if (ot_cuda_forward_backward(cctx, &batch, scale, 1, &err) || ot_cuda_take_loss(cctx, &rank_loss, &err))
                FAIL("%s", err.msg);
            ot_loss_pair(loss_slots, rank_loss);
            if (world > 1 && nccl_grads_on(gcomm, &o)) {
                // NCCL all-reduce in place on the device (take_loss synchronized the compute stream, so the
                // gradients are complete; the wait returns once the sum has landed), then replicated AdamW: every
                // rank holds the same sum, so the same parameters. docs/distributed.md says why not sharded AdamW.
                float *g = ot_cuda_lora_grads_device(cctx);
                if (ot_comm_all_reduce(gcomm, g, g, lo.n_params, OT_COMM_F32, OT_COMM_SUM, &err)) FAIL("%s", err.msg);
            } else if (world > 1) {
                // --grad-reduce ordered: the rank order sum through host memory (world-size independent bits)
                ot_cuda_lora_get_grads(cctx, slots);
                if (ot_comm_all_reduce_ordered(comm, slots, 1, lo.n_params, lo.grads, &err)) FAIL("%s", err.msg);
                ot_cuda_lora_set_grads(cctx, lo.grads);
            }
            if (ot_run_step_loss(comm, loss_slots, 1, batch.global_targets, &loss, &err)) FAIL("%s", err.msg);
            gnorm = ot_cuda_optimizer_step(cctx, &opt, &lr);
#endif
        } else {
            // Each row alone, into its own gradient slot: the slots are then summed in global row order.
            float *grads_keep = lo.grads;
            // Sharded: every rank runs max_rows passes (idle ones past its rows) so the gathers line up.
            for (int i = 0; i < (shard ? max_rows : batch.n_rows); i++) {
                if (i >= batch.n_rows) {
                    ot_model_idle_pass(&m, 1);
                    continue;
                }
                ot_batch_extract_row(&batch, i, &row);
                lo.grads = slots + (size_t)i * lo.n_params;
                memset(lo.grads, 0, sizeof(float) * lo.n_params);
                float scale = batch.global_targets > 0 ? 1.0f / (float)batch.global_targets : 0.0f;
                ot_loss_pair(loss_slots + 2 * i, ot_cpu_forward_backward(&m, &lo, &row, scale, 1, ws));
            }
            lo.grads = grads_keep;
            if (ot_comm_all_reduce_ordered(comm, slots, batch.n_rows, lo.n_params, lo.grads, &err)) FAIL("%s", err.msg);
            if (ot_run_step_loss(comm, loss_slots, batch.n_rows, batch.global_targets, &loss, &err)) FAIL("%s", err.msg);
            gnorm = ot_optimizer_step(&opt, lo.params, lo.grads, &lr);
        }
        if (ot_run_step_done(&log, &st, &batch, &after, loss, gnorm, lr, g_stop_signal, &stopping, &err))
            FAIL("%s", err.msg);
        if (eval_open && ot_run_eval_due(&log, &st, stopping)) {
            double eval_loss = 0, t_eval = ot_now_seconds();
            int64_t eval_targets = 0;
            int eval_rc;
#ifdef OT_HAVE_CUDA
            if (use_cuda)
                eval_rc = ot_cuda_eval_loss(cctx, &eval_pairs, comm, o.eval_samples,
                                            ot_loader_get_stats(loader).max_tokens_per_rank, &eval_loss, &eval_targets,
                                            &err);
            else
#endif
                eval_rc = ot_eval_loss(&m, &lo, &eval_pairs, comm, o.eval_samples, ws, &eval_loss, &eval_targets, &err);
            if (eval_rc) FAIL("validation on %s: %s", o.eval_data, err.msg);
            ot_run_eval_record(&log, &st, eval_loss, eval_targets, ot_now_seconds() - t_eval);
        }
        if (ot_run_save_due(&log, &st, stopping)) {
            int save_rc = 0;
#ifdef OT_HAVE_CUDA
            if (use_cuda && rank == 0) { // the adapter and AdamW state live on the GPU: bring them back to save
                ot_cuda_lora_get_params(cctx, lo.params);
                ot_cuda_optimizer_get(cctx, &opt);
            }
#endif
            ot_err save_err = {0};
            if (rank == 0) save_rc = ot_ckpt_save(o.run_dir, &st, &lo, &m, &opt, o.keep_last, &save_err);
            int saved = ot_run_saved(&log, &st, save_rc, &save_err, NULL, &err);
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
    free(loss_slots);
#ifdef OT_HAVE_CUDA
    if (use_cuda && shard && rank == 0) {
        ot_cuda_shard_stats gs = ot_cuda_shard_get_stats(&cm);
        fprintf(stderr, "osstune-train: base-weight gathers on rank 0: %llu (%llu started ahead of their use), %.3f GiB "
                "gathered; %.3f GiB read from the model files at load\n", (unsigned long long)gs.gathers,
                (unsigned long long)gs.prefetched, (double)gs.gathered_bytes / (1u << 30),
                (double)gs.file_bytes / (1u << 30));
    }
#endif
    if (rank == 0 && exit_code == 0)
        fprintf(stderr, "osstune-train: finished %lld steps; adapter: %s/ckpt/step-%06lld (PEFT format)\n",
                (long long)st.step, o.run_dir, (long long)st.step);

done:
    if (eval_open) ot_pairs_h5_close(&eval_pairs);
    ot_run_log_close(&log);
    if (loader) ot_loader_close(loader);
    ot_batch_free(&batch);
    ot_batch_free(&row);
    ot_cpu_workspace_free(ws);
#ifdef OT_HAVE_CUDA
    ot_cuda_ctx_free(cctx);
    if (cm.arena) ot_cuda_model_free(&cm);
    if (exit_code != 1) ot_comm_free(gcomm); // collective; a failed rank aborts the job below instead
#endif
    free(slots);
    free(config_json);
    ot_train_state_free(&st);
    ot_optimizer_free(&opt);
    ot_lora_free(&lo);
    if (m.layers || m.shard) ot_model_free(&m);
    if (exit_code == 1 && comm && comm->size > 1) {
        // A failed rank must not leave its peers waiting in a collective.
        fprintf(stderr, "osstune-train: rank %d failed; aborting the job\n", comm->rank);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    ot_comm_free(comm);
    return exit_code;
}
