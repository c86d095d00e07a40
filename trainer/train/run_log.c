// The shared bookkeeping of the training loops (run_log.h).
#include "trainer/train/run_log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/sha256.h"

double ot_rss_mib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
    return (double)rss * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static void format_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%.0fs", s);
}

int ot_run_identity(const ot_train_options *o, ot_comm *comm, ot_train_state *st, char **config_json, ot_err *err) {
    *config_json = ot_train_options_to_json(o);
    char *fp_json = ot_train_options_fingerprint_json(o);
    ot_fingerprint_text(fp_json, st->config_fingerprint);
    free(fp_json);
    if (ot_fingerprint_model_dir(o->model_dir, st->model_fingerprint, err)) return -1;
    if (ot_sha256_file(o->data_path, st->data_fingerprint, err)) return -1;
    st->seed = o->seed;
    st->data_seed = o->seed;
    st->world_size = comm->size;
    st->resolved_config_json = ot_strdup(*config_json);
    return 0;
}

int ot_run_write_config(const ot_train_options *o, ot_comm *comm, const char *config_json, ot_err *err) {
    if (comm->rank == 0) {
        char path[4096];
        if (ot_mkdir_p(o->run_dir, err)) return -1;
        snprintf(path, sizeof path, "%s/config.json", o->run_dir);
        if (ot_write_file_atomic(path, config_json, strlen(config_json), err)) return -1;
    }
    return ot_comm_barrier(comm, err);
}

int ot_run_continue(ot_train_state *st, const ot_train_state *saved, int force, const ot_comm *comm, const char *prog,
                    const char *from, ot_err *err) {
    if (ot_ckpt_check_compatible(saved, st, force, err)) return -1;
    st->step = saved->step;
    st->data_epoch = saved->data_epoch;
    st->data_next = saved->data_next;
    st->data_seed = saved->data_seed;
    st->samples_seen = saved->samples_seen;
    st->tokens_seen = saved->tokens_seen;
    st->targets_seen = saved->targets_seen;
    st->loss_ema = saved->loss_ema;
    st->elapsed_seconds = saved->elapsed_seconds;
    if (comm->rank == 0)
        fprintf(stderr, "%s: resuming from %s at step %lld (saved by %d rank%s, now %d)\n", prog, from,
                (long long)st->step, saved->world_size, saved->world_size == 1 ? "" : "s", comm->size);
    return 0;
}

void ot_loss_pair(float *pair, double loss) {
    pair[0] = (float)loss;
    pair[1] = (float)(loss - (double)pair[0]);
}

int ot_run_step_loss(ot_comm *comm, const float *pairs, int n, int64_t global_targets, double *loss, ot_err *err) {
    float sum[2];
    if (ot_comm_all_reduce_ordered(comm, pairs, n, 2, sum, err)) return -1;
    *loss = global_targets > 0 ? ((double)sum[0] + (double)sum[1]) / (double)global_targets : 0.0;
    return 0;
}

int ot_run_log_open(ot_run_log *r, const ot_train_options *o, ot_comm *comm, const char *prog, const char *mode,
                    const ot_train_state *st, ot_err *err) {
    memset(r, 0, sizeof *r);
    r->o = o;
    r->comm = comm;
    r->prog = prog;
    r->mode = mode;
    if (comm->rank == 0 && !(r->metrics = ot_metrics_open(o->run_dir, st->step, err))) return -1;
    r->steps_at_start = (long)st->step;
    r->tokens_at_start = st->tokens_seen;
    r->elapsed_at_start = st->elapsed_seconds;
    r->t_last = ot_now_seconds();
    return 0;
}

int ot_run_log_close(ot_run_log *r, ot_err *err) {
    int rc = ot_metrics_close(r->metrics, err);
    r->metrics = NULL;
    return rc;
}

void ot_run_restart_clock(ot_run_log *r) { r->t_last = ot_now_seconds(); }

int ot_run_step_done(ot_run_log *r, ot_train_state *st, const ot_batch *batch, const ot_data_cursor *after, double loss,
                     double grad_norm, float lr, int64_t stop_signal, int *stopping, ot_err *err) {
    const ot_train_options *o = r->o;
    st->step++;
    st->data_seed = after->seed;
    st->data_epoch = after->epoch;
    st->data_next = after->next;
    st->samples_seen += batch->global_samples;
    st->targets_seen += batch->global_targets;
    st->last_loss = loss;
    st->loss_ema = st->step == 1 ? loss : 0.9 * st->loss_ema + 0.1 * loss;
    st->last_grad_norm = grad_norm;
    st->last_lr = lr;
    if (!isfinite(loss))
        return ot_fail(err, "the loss became %f at step %lld: stopping (lower --lr?)", loss, (long long)st->step);

    // Every rank agrees on stopping (the largest signal number any rank saw), and on the step's token count; the
    // GPU memory reported is the most any rank's GPU has in use (one reduction for both maxima).
    int64_t tokens = batch->T, step_tokens = 0, mine[2] = {stop_signal, (int64_t)r->gpu_in_use}, most[2];
    if (ot_comm_all_reduce(r->comm, mine, most, 2, OT_COMM_I64, OT_COMM_MAX, err)) return -1;
    r->stop_signal = most[0];
    r->gpu_in_use = (size_t)most[1];
    if (ot_comm_all_reduce(r->comm, &tokens, &step_tokens, 1, OT_COMM_I64, OT_COMM_SUM, err)) return -1;
    st->tokens_seen += step_tokens;
    *stopping = r->stop_signal != 0;

    double now = ot_now_seconds();
    st->elapsed_seconds += now - r->t_last;
    r->t_last = now;
    if (r->comm->rank != 0) return 0;
    // rates over training time only (validation and checkpoint writes excluded)
    double done_steps = (double)(st->step - r->steps_at_start), el = st->elapsed_seconds - r->elapsed_at_start;
    double tps = el > 0 ? (double)(st->tokens_seen - r->tokens_at_start) / el : 0;
    double eta = done_steps > 0 ? el / done_steps * (double)(o->steps - st->step) : -1;
    const double rss = ot_rss_mib();
    char base[256] = "", mode[32] = "", gpu_json[96] = "", gpu_line[96] = "";
    if (r->gpu_in_use > r->gpu_peak) r->gpu_peak = r->gpu_in_use;
    if (r->gpu_in_use) {
        const double mib = 1u << 20, limit = (double)o->gpu_memory_limit;
        snprintf(gpu_json, sizeof gpu_json, ", \"gpu_mib\": %.0f, \"gpu_peak_mib\": %.0f", r->gpu_in_use / mib,
                 r->gpu_peak / mib);
        if (limit > 0)
            snprintf(gpu_line, sizeof gpu_line, " | gpu %.0f MiB (peak %.0f of the %.0f MiB limit)",
                     r->gpu_in_use / mib, r->gpu_peak / mib, limit / mib);
        else
            snprintf(gpu_line, sizeof gpu_line, " | gpu %.0f MiB (peak %.0f)", r->gpu_in_use / mib, r->gpu_peak / mib);
    }
    if (r->base_bytes)
        snprintf(base, sizeof base, ", \"base_weight_bytes\": %zu, \"base_weight_bytes_one_rank\": %zu, "
                 "\"base_layer_buffer_bytes\": %zu", r->base_bytes, r->base_bytes_one_rank, r->base_layer_buffer_bytes);
    if (r->mode) snprintf(mode, sizeof mode, ", \"mode\": \"%s\"", r->mode);
    if (ot_metrics_line(r->metrics, err,
                        "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.6g, \"samples\": %lld, "
                        "\"tokens\": %lld, \"targets\": %lld, \"step_tokens\": %lld, \"step_targets\": %lld, "
                        "\"tokens_per_s\": %.1f, \"elapsed_s\": %.3f, \"rss_mib\": %.0f, \"world_size\": %d%s%s%s}",
                        (long long)st->step, loss, lr, grad_norm, (long long)st->samples_seen,
                        (long long)st->tokens_seen, (long long)st->targets_seen, (long long)step_tokens,
                        (long long)batch->global_targets, tps, st->elapsed_seconds, rss, r->comm->size, base,
                        gpu_json, mode))
        return -1;
    if (st->step % o->log_every == 0 || st->step == o->steps || *stopping) {
        char eta_s[32];
        format_duration(eta_s, sizeof eta_s, eta);
        fprintf(stderr, "step %lld/%ld | loss %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | ETA %s | mem %.0f MiB%s\n",
                (long long)st->step, o->steps, loss, lr, grad_norm, tps, eta_s, rss, gpu_line);
    }
    return 0;
}

static int due(const ot_train_state *st, const ot_train_options *o, int stopping, long every) {
    return st->step == o->steps || stopping || (every > 0 && st->step % every == 0);
}

int ot_run_check_gpu_limit(const ot_run_log *r, const ot_train_state *st, ot_err *err) {
    char when[48];
    snprintf(when, sizeof when, "after step %lld", (long long)st->step);
    return ot_check_gpu_memory_limit(r->gpu_in_use, r->o->gpu_memory_limit, when,
                                     "raise the limit, or make the run smaller (--recompute on, fewer "
                                     "--rows-per-step, a shorter --seq-len)", err);
}

int ot_run_eval_due(const ot_run_log *r, const ot_train_state *st, int stopping) {
    return r->o->eval_data && due(st, r->o, stopping, r->o->eval_every);
}

int ot_run_save_due(const ot_run_log *r, const ot_train_state *st, int stopping) {
    return due(st, r->o, stopping, r->o->save_every);
}

int ot_run_eval_record(ot_run_log *r, const ot_train_state *st, double eval_loss, int64_t eval_targets,
                       double seconds, ot_err *err) {
    if (r->comm->rank == 0) {
        if (ot_metrics_line(r->metrics, err, "{\"step\": %lld, \"eval_loss\": %.6f, \"eval_targets\": %lld, "
                            "\"eval_seconds\": %.3f}", (long long)st->step, eval_loss, (long long)eval_targets, seconds))
            return -1;
        fprintf(stderr, "step %lld/%ld | validation loss %.4f over %lld answer tokens\n", (long long)st->step,
                r->o->steps, eval_loss, (long long)eval_targets);
    }
    ot_run_restart_clock(r); // validation time does not count as training time
    return 0;
}

int ot_run_saved(ot_run_log *r, const ot_train_state *st, int save_rc, const ot_err *save_err, const char *what,
                 ot_err *err) {
    if (r->comm->rank == 0) {
        if (save_rc)
            fprintf(stderr, "%s: checkpoint at step %lld failed: %s\n", r->prog, (long long)st->step, save_err->msg);
        else
            fprintf(stderr, "%s: checkpoint %s/ckpt/step-%06lld written%s\n", r->prog, r->o->run_dir,
                    (long long)st->step, what ? what : "");
    }
    int64_t bad = save_rc != 0, any_bad = 0;
    if (ot_comm_all_reduce(r->comm, &bad, &any_bad, 1, OT_COMM_I64, OT_COMM_MAX, err)) return -1;
    ot_run_restart_clock(r); // checkpoint writes do not count as training time
    return any_bad ? 1 : 0;
}

int ot_run_stopped(const ot_run_log *r, const ot_train_state *st) {
    if (r->comm->rank == 0)
        fprintf(stderr, "%s: stopped by signal %lld at step %lld; start again with the same --run-dir to resume "
                "(exit %d)\n", r->prog, (long long)r->stop_signal, (long long)st->step, OT_EXIT_PREEMPTED);
    return OT_EXIT_PREEMPTED;
}
