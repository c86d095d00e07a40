// bench_train: LoRA training throughput of the CUDA backend on a gpt-oss checkpoint (the 20b shape for the
// figures in benchmarks/RESULTS.md). Loads the model once, then runs each --case: warm-up steps, timed steps
// (forward, backward, AdamW: a whole training step, as osstune-train runs it on one GPU), then a few steps with
// the per-op time breakdown. One JSON line per case on stdout (and appended to --json FILE), with the activation
// workspace by buffer; readable lines on stderr.
//
// Cases: synthetic rows of random tokens with the loss at every position (the usual throughput setting), or
// real pairs from an osstune-prep file packed in file order into one row of up to N tokens with the loss on the
// answers only. --dump-batches writes the real-pair steps so the transformers + PEFT peer
// (benchmarks/peer_transformers.py) trains on exactly the same tokens.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "benchmarks/step_work.h"
#include "formats/pairs_h5.h"
#include "trainer/graph/gptoss_cuda.h"
#include "trainer/train/step_cuda.h"

#define MAX_CASES 32

typedef struct {
    char name[64];
    int rows, seq;         // synthetic: rows × seq random tokens
    const char *data;      // real pairs file (NULL: synthetic)
    int pack_tokens;       // real: tokens per step
    char targets[64];      // LoRA targets (ot_lora_parse_targets syntax, '+' for ',')
    int recompute;         // OT_RECOMPUTE_*, or -1: decided as osstune-train --recompute auto does (under the limit)
    uint64_t mem_limit;    // --gpu-memory-limit for this case (0: the card's own)
} bench_case;

typedef struct {
    const char *model_dir, *make_preset, *json_path, *dump_dir;
    int lora_r;
    float lora_alpha;
    int warmup, steps, profile_steps;
    double peak_tflops, peak_tbs, gflop_per_token;
    int n_cases;
    bench_case cases[MAX_CASES];
} bench_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_train --model DIR [--make-model PRESET] --case SPEC [--case SPEC ...] [options]\n"
            "\n"
            "Trains LoRA on the GPU and reports tokens/s, step time, peak GPU memory, MFU and a per-op breakdown.\n"
            "\n"
            "  --model DIR          gpt-oss checkpoint directory\n"
            "  --make-model PRESET  if DIR does not exist, make it first: osstune-init-model --preset PRESET --seed 0\n"
            "                       (the osstune-init-model next to this program)\n"
            "  --case SPEC          NAME:key=value:... with keys\n"
            "                         rows=N, seq=N            synthetic: N rows of seq random tokens, loss everywhere\n"
            "                         data=FILE.h5, tokens=N   real pairs packed in file order into N-token steps,\n"
            "                                                  loss on the answers only\n"
            "                         targets=attn|attn+experts|...  LoRA targets (default attn = q,k,v,o)\n"
            "                         recompute=0|1|attention|auto  activation recomputation: none (default),\n"
            "                                                  whole layers, the attention blocks, or as\n"
            "                                                  osstune-train decides (under mem= when given)\n"
            "                         mem=SIZE                 plan and allocate as on a card of SIZE (24GiB, 16G):\n"
            "                                                  osstune-train --gpu-memory-limit\n"
            "  --lora-r N           LoRA rank (default 16)\n"
            "  --lora-alpha F       LoRA alpha (default 32)\n"
            "  --warmup N           untimed steps first (default 2)\n"
            "  --steps N            timed steps (default 8)\n"
            "  --profile-steps N    extra steps timed per op class (default 2; 0 = none)\n"
            "  --peak-tflops F      the card's dense bf16 peak for MFU (default 989: H100 SXM)\n"
            "  --peak-tbs F         the card's memory bandwidth in TB/s for the roofline (default 3.35: H100 SXM)\n"
            "  --gflop-per-token F  model FLOPs per trained token for MFU (default 14.4: gpt-oss-20b, frozen base)\n"
            "  --json FILE          also append the JSON lines to FILE\n"
            "  --dump-batches DIR   write each real-pair case's steps to DIR/NAME.batches for the peer\n");
}

static int parse_case(bench_case *c, const char *spec) {
    memset(c, 0, sizeof *c);
    snprintf(c->targets, sizeof c->targets, "attn");
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL, *tok = strtok_r(buf, ":", &save);
    if (!tok || strchr(tok, '=')) {
        fprintf(stderr, "bench_train: --case '%s': must start with a name\n", spec);
        return -1;
    }
    snprintf(c->name, sizeof c->name, "%s", tok);
    while ((tok = strtok_r(NULL, ":", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            fprintf(stderr, "bench_train: --case '%s': '%s' is not key=value\n", spec, tok);
            return -1;
        }
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        if (!strcmp(k, "rows")) c->rows = atoi(v);
        else if (!strcmp(k, "seq")) c->seq = atoi(v);
        else if (!strcmp(k, "data")) c->data = strdup(v);
        else if (!strcmp(k, "tokens")) c->pack_tokens = atoi(v);
        else if (!strcmp(k, "recompute"))
            c->recompute = !strcmp(v, "auto")        ? -1
                           : !strcmp(v, "attention") ? OT_RECOMPUTE_ATTENTION
                           : atoi(v) != 0            ? OT_RECOMPUTE_ON
                                                     : OT_RECOMPUTE_OFF;
        else if (!strcmp(k, "mem")) {
            if (ot_parse_size(v, &c->mem_limit)) {
                fprintf(stderr, "bench_train: --case '%s': mem=%s is not a size (24GiB, 16G, ...)\n", spec, v);
                return -1;
            }
        }
        else if (!strcmp(k, "targets")) {
            snprintf(c->targets, sizeof c->targets, "%s", v);
            for (char *p = c->targets; *p; p++)
                if (*p == '+') *p = ',';
        } else {
            fprintf(stderr, "bench_train: --case '%s': unknown key '%s'\n", spec, k);
            return -1;
        }
    }
    if (c->data ? c->pack_tokens <= 0 : (c->rows <= 0 || c->seq <= 1)) {
        fprintf(stderr, "bench_train: --case '%s': needs rows=N and seq=N (N > 1), or data=FILE and tokens=N\n", spec);
        return -1;
    }
    return 0;
}

static int parse_args(bench_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->lora_r = 16;
    o->lora_alpha = 32;
    o->warmup = 2;
    o->steps = 8;
    o->profile_steps = 2;
    o->peak_tflops = 989;
    o->peak_tbs = 3.35;
    o->gflop_per_token = 14.4;
    enum { O_MODEL = 1, O_MAKE, O_CASE, O_R, O_ALPHA, O_WARM, O_STEPS, O_PROF, O_PEAK, O_PEAK_TBS, O_GFLOP, O_JSON,
           O_DUMP };
    static const struct option opts[] = {
        {"model", 1, 0, O_MODEL},       {"make-model", 1, 0, O_MAKE}, {"case", 1, 0, O_CASE},
        {"lora-r", 1, 0, O_R},          {"lora-alpha", 1, 0, O_ALPHA}, {"warmup", 1, 0, O_WARM},
        {"steps", 1, 0, O_STEPS},       {"profile-steps", 1, 0, O_PROF}, {"peak-tflops", 1, 0, O_PEAK},
        {"gflop-per-token", 1, 0, O_GFLOP}, {"json", 1, 0, O_JSON},    {"dump-batches", 1, 0, O_DUMP},
        {"peak-tbs", 1, 0, O_PEAK_TBS}, {"help", 0, 0, 'h'},            {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case O_MODEL: o->model_dir = optarg; break;
        case O_MAKE: o->make_preset = optarg; break;
        case O_CASE:
            if (o->n_cases == MAX_CASES) {
                fprintf(stderr, "bench_train: at most %d cases\n", MAX_CASES);
                return 2;
            }
            if (parse_case(&o->cases[o->n_cases++], optarg)) return 2;
            break;
        case O_R: o->lora_r = atoi(optarg); break;
        case O_ALPHA: o->lora_alpha = (float)atof(optarg); break;
        case O_WARM: o->warmup = atoi(optarg); break;
        case O_STEPS: o->steps = atoi(optarg); break;
        case O_PROF: o->profile_steps = atoi(optarg); break;
        case O_PEAK: o->peak_tflops = atof(optarg); break;
        case O_PEAK_TBS: o->peak_tbs = atof(optarg); break;
        case O_GFLOP: o->gflop_per_token = atof(optarg); break;
        case O_JSON: o->json_path = optarg; break;
        case O_DUMP: o->dump_dir = optarg; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bench_train: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!o->model_dir || o->n_cases == 0 || o->steps < 1 || o->warmup < 0 || o->profile_steps < 0 || o->lora_r < 1 ||
        !(o->peak_tflops > 0) || !(o->peak_tbs > 0)) {
        fprintf(stderr, "bench_train: --model and at least one --case are required; steps >= 1, r >= 1 (see --help)\n");
        return 2;
    }
    return 0;
}

// ---- the model directory ----------------------------------------------------------------------------------------
static int dir_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int make_model(const char *dir, const char *preset) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        fprintf(stderr, "bench_train: cannot find this program's directory: %s\n", strerror(errno));
        return -1;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s/osstune-init-model' --preset '%s' --seed 0 --out '%s'", exe, preset, dir);
    fprintf(stderr, "bench_train: making the model: %s\n", cmd);
    double t0 = ot_now_seconds();
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "bench_train: osstune-init-model failed (status %d)\n", rc);
        return -1;
    }
    fprintf(stderr, "bench_train: model made in %.0f s\n", ot_now_seconds() - t0);
    return 0;
}

// ---- batches ----------------------------------------------------------------------------------------------------
static void synthetic_batch(ot_batch *b, const bench_case *c, int V, uint64_t seed) {
    ot_rng rng;
    ot_rng_seed(&rng, seed);
    ot_batch_init(b);
    int32_t *ids = ot_malloc(sizeof(int32_t) * (size_t)c->seq);
    for (int r = 0; r < c->rows; r++) {
        for (int i = 0; i < c->seq; i++) ids[i] = (int32_t)(ot_rng_u64(&rng) % (uint64_t)V);
        ot_batch_begin_row(b, r);
        ot_batch_add_sample(b, ids, c->seq, 0); // loss at every next-token position
    }
    free(ids);
}

// Packs samples from *next on, in file order, into one row of at most c->pack_tokens tokens.
static int real_batch(ot_batch *b, const bench_case *c, ot_pairs_h5 *pairs, int64_t *next, ot_err *err) {
    ot_batch_init(b);
    int32_t *ids = ot_malloc(sizeof(int32_t) * (size_t)(pairs->max_sample_len + 1));
    int64_t tried = 0;
    while (tried < pairs->n_samples) {
        int64_t i = *next % pairs->n_samples;
        int len = ot_pairs_h5_sample_len(pairs, i);
        if (len > c->pack_tokens) { // never fits: skip it, as the loader does
            (*next)++;
            tried++;
            continue;
        }
        if (b->T + len > c->pack_tokens) break;
        if (ot_pairs_h5_read(pairs, i, ids, err)) {
            free(ids);
            return -1;
        }
        ot_batch_add_sample(b, ids, len, (int)pairs->loss_start[i]);
        (*next)++;
        tried++;
    }
    free(ids);
    if (b->T == 0) return ot_fail(err, "%s: no sample fits in %d tokens", c->data, c->pack_tokens);
    b->global_targets = b->n_targets;
    return 0;
}

// Steps for the peer: int32 little-endian, per step: T, then ids[T], pos[T] (position in its sample) and
// labels[T] in the transformers convention (labels[t+1] = ids[t+1] when position t is scored, else -100).
static int dump_batches(const char *dir, const char *name, ot_batch *batches, int n, ot_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.batches", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return ot_fail(err, "cannot write %s: %s", path, strerror(errno));
    int ok = 1;
    for (int s = 0; s < n && ok; s++) {
        const ot_batch *b = &batches[s];
        int32_t *labels = ot_malloc(sizeof(int32_t) * (size_t)b->T);
        for (int t = 0; t < b->T; t++) labels[t] = -100;
        for (int i = 0; i < b->n_targets; i++) labels[b->tgt_pos[i] + 1] = b->tgt_label[i];
        int32_t T = b->T;
        ok &= fwrite(&T, 4, 1, f) == 1;
        ok &= fwrite(b->ids, 4, (size_t)T, f) == (size_t)T;
        ok &= fwrite(b->pos, 4, (size_t)T, f) == (size_t)T;
        ok &= fwrite(labels, 4, (size_t)T, f) == (size_t)T;
        free(labels);
    }
    ok &= fclose(f) == 0;
    if (!ok) return ot_fail(err, "writing %s failed: %s", path, strerror(errno));
    fprintf(stderr, "bench_train: %s: %d steps written to %s\n", name, n, path);
    return 0;
}

// ---- memory -----------------------------------------------------------------------------------------------------
static double gib(size_t b) { return (double)b / (double)(1u << 30); }

static uint64_t pool_attr(cudaMemPool_t pool, enum cudaMemPoolAttr a) {
    uint64_t v = 0;
    OT_CUDA_CHECK(cudaMemPoolGetAttribute(pool, a, &v));
    return v;
}

// ---- one case ---------------------------------------------------------------------------------------------------
static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static const char *recompute_word(int mode) {
    return mode == OT_RECOMPUTE_ON ? "on" : mode == OT_RECOMPUTE_ATTENTION ? "attention" : "off";
}

static int cmp_part_desc(const void *a, const void *b) {
    const size_t x = ((const ot_cuda_mem_part *)a)->bytes, y = ((const ot_cuda_mem_part *)b)->bytes;
    return (x < y) - (x > y);
}

static int run_case(const bench_opts *o, const bench_case *c, const ot_cuda_model *cm, FILE *json, ot_err *err) {
    const ot_model_config *cfg = &cm->cfg;
    const int n_steps = o->warmup + o->steps + o->profile_steps;
    cudaMemPool_t pool;
    OT_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, cm->device));

    // the batches, made up front so no host work sits between timed steps
    ot_batch *batches = ot_calloc((size_t)n_steps, sizeof(ot_batch));
    int max_T = 0, max_n = 0;
    if (c->data) {
        ot_pairs_h5 pairs;
        if (ot_pairs_h5_open(&pairs, c->data, err)) return -1;
        int64_t next = 0;
        for (int s = 0; s < n_steps; s++)
            if (real_batch(&batches[s], c, &pairs, &next, err)) {
                ot_pairs_h5_close(&pairs);
                return -1;
            }
        ot_pairs_h5_close(&pairs);
        if (o->dump_dir && dump_batches(o->dump_dir, c->name, batches, n_steps, err)) return -1;
    } else {
        for (int s = 0; s < n_steps; s++) synthetic_batch(&batches[s], c, cfg->vocab_size, 1000 + (uint64_t)s);
    }
    for (int s = 0; s < n_steps; s++) {
        if (batches[s].T > max_T) max_T = batches[s].T;
        if (batches[s].n_targets > max_n) max_n = batches[s].n_targets;
    }

    // adapter, context, optimizer
    ot_lora_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.r = o->lora_r;
    spec.alpha = o->lora_alpha;
    if (ot_lora_parse_targets(&spec, c->targets, err)) return -1;
    ot_lora lo;
    ot_lora_init(&lo, cfg, &spec, 7);
    size_t used_before = ot_cuda_memory_in_use();
    if (ot_cuda_set_memory_limit(c->mem_limit, err)) return -1; // (0: none) as osstune-train --gpu-memory-limit
    ot_cuda_run_options ro = {.recompute = c->recompute >= 0 ? c->recompute
                                                             : ot_cuda_need_recompute(cm, &lo, 0, max_T, max_n)};
    ot_cuda_ctx *ctx = ot_cuda_ctx_new(cm, &lo, &ro, max_T, max_n);
    ot_optim_config oc;
    ot_optim_config_default(&oc);
    oc.lr = oc.min_lr = 1e-4f;
    oc.total_steps = n_steps;
    ot_optimizer opt;
    ot_optimizer_init(&opt, lo.n_params, &oc);
    ot_cuda_optimizer *adamw = ot_cuda_optimizer_new(lo.n_params, NULL, 0, ot_cuda_ctx_stream(ctx));

    double *step_s = ot_malloc(sizeof(double) * (size_t)(o->steps > 0 ? o->steps : 1));
    double loss_first = 0, loss_last = 0, t_total = 0, ms[OT_CUDA_PROF_N] = {0};
    int64_t tokens_timed = 0, targets_timed = 0;
    for (int s = 0; s < n_steps; s++) {
        const ot_batch *b = &batches[s];
        int timed = s >= o->warmup && s < o->warmup + o->steps;
        if (s == o->warmup + o->steps) ot_cuda_prof_enable(ctx, 1);
        double t0 = ot_now_seconds();
        double loss = 0;
        ot_cuda_lora_zero_grads(ctx);
        if (ot_cuda_forward_backward(ctx, b, b->n_targets ? 1.0f / (float)b->n_targets : 0.0f, 1, err) ||
            ot_cuda_take_loss(ctx, &loss, err))
            return -1;
        ot_cuda_prof_mark(ctx, OT_CUDA_PROF_OPTIMIZER);
        ot_cuda_optimizer_step(adamw, &opt, ot_cuda_lora_params_device(ctx), ot_cuda_lora_grads_device(ctx), NULL);
        ot_cuda_ctx_sync(ctx);
        double dt = ot_now_seconds() - t0;
        loss = b->n_targets ? loss / b->n_targets : 0;
        if (!isfinite(loss)) return ot_fail(err, "case %s: the loss became %f at step %d", c->name, loss, s + 1);
        if (s == 0) loss_first = loss;
        loss_last = loss;
        if (timed) {
            step_s[s - o->warmup] = dt;
            t_total += dt;
            tokens_timed += b->T;
            targets_timed += b->n_targets;
        }
    }
    size_t used_peak = ot_cuda_memory_in_use(); // the pool keeps what it took, so this is the peak of the run
    uint64_t pool_high = pool_attr(pool, cudaMemPoolAttrReservedMemHigh);
    if (o->profile_steps > 0) ot_cuda_prof_collect(ctx, ms);
    size_t ctx_bytes = ot_cuda_ctx_bytes(ctx);
    // the work the breakdown steps did, per op class (the roofline: achieved rates against the card's peaks)
    ot_op_work work[OT_WORK_N] = {{0, 0}};
    const ot_step_shape shape = {spec.targets, o->lora_r, ro.recompute, lo.n_params};
    for (int s = o->warmup + o->steps; s < n_steps; s++) {
        ot_op_work one[OT_WORK_N];
        ot_step_work(cfg, &batches[s], &shape, one);
        for (int k = 0; k < OT_WORK_N; k++)
            work[k].flop += one[k].flop / o->profile_steps, work[k].bytes += one[k].bytes / o->profile_steps;
    }

    qsort(step_s, (size_t)o->steps, sizeof(double), cmp_double);
    double median_ms = 1e3 * step_s[o->steps / 2], tps = (double)tokens_timed / t_total;
    double mfu = o->gflop_per_token * 1e9 * tps / (o->peak_tflops * 1e12);
    double prof_total = 0;
    for (int k = 0; k < OT_CUDA_PROF_N; k++) prof_total += ms[k];

    char line[8192];
    int n = snprintf(line, sizeof line,
                     "{\"bench\": \"osstune\", \"case\": \"%s\", \"lora_targets\": \"%s\", \"lora_r\": %d, "
                     "\"lora_params\": %zu, \"recompute\": \"%s\", \"gpu_memory_limit_gib\": %.3f, \"data\": \"%s\", "
                     "\"tokens_per_step\": %.1f, "
                     "\"targets_per_step\": %.1f, \"steps\": %d, \"step_ms_median\": %.2f, \"step_ms_mean\": %.2f, "
                     "\"tokens_per_s\": %.1f, \"mfu\": %.4f, \"peak_tflops\": %.0f, \"gflop_per_token\": %.2f, "
                     "\"peak_gpu_gib\": %.3f, \"model_gib\": %.3f, \"workspace_gib\": %.3f, \"pool_high_gib\": %.3f, "
                     "\"context_other_gib\": %.3f, \"loss_first\": %.4f, \"loss_last\": %.4f, \"breakdown_ms\": {",
                     c->name, c->targets, o->lora_r, lo.n_params, recompute_word(ro.recompute), gib(c->mem_limit),
                     c->data ? "pairs" : "synthetic", (double)tokens_timed / o->steps,
                     (double)targets_timed / o->steps, o->steps, median_ms, 1e3 * t_total / o->steps, tps, mfu,
                     o->peak_tflops, o->gflop_per_token, gib(used_peak), gib(cm->arena_bytes), gib(ctx_bytes),
                     gib(pool_high), gib(used_before) - gib(cm->arena_bytes), loss_first, loss_last);
    for (int k = 0; k < OT_CUDA_PROF_N; k++)
        n += snprintf(line + n, sizeof line - (size_t)n, "%s\"%s\": %.2f", k ? ", " : "", ot_cuda_prof_names[k],
                      o->profile_steps ? ms[k] / o->profile_steps : 0.0);
    n += snprintf(line + n, sizeof line - (size_t)n, "}, \"peak_tbs\": %.2f, \"work_gflop\": {", o->peak_tbs);
    for (int k = 0; k < OT_WORK_N; k++)
        n += snprintf(line + n, sizeof line - (size_t)n, "%s\"%s\": %.2f", k ? ", " : "", ot_work_names[k],
                      work[k].flop / 1e9);
    n += snprintf(line + n, sizeof line - (size_t)n, "}, \"work_gbytes\": {");
    for (int k = 0; k < OT_WORK_N; k++)
        n += snprintf(line + n, sizeof line - (size_t)n, "%s\"%s\": %.3f", k ? ", " : "", ot_work_names[k],
                      work[k].bytes / 1e9);
    // the workspace by buffer, largest first (what selective recomputation or narrower storage would have to cut)
    ot_cuda_mem_part parts[OT_CUDA_MEM_PARTS_MAX];
    const int n_parts = ot_cuda_workspace_parts(cfg, max_T, max_n, o->lora_r, ro.recompute, parts,
                                                OT_CUDA_MEM_PARTS_MAX);
    qsort(parts, (size_t)n_parts, sizeof parts[0], cmp_part_desc);
    n += snprintf(line + n, sizeof line - (size_t)n, "}, \"workspace_parts_gib\": {");
    for (int i = 0; i < n_parts; i++)
        n += snprintf(line + n, sizeof line - (size_t)n, "%s\"%s\": %.3f", i ? ", " : "", parts[i].name,
                      gib(parts[i].bytes));
    snprintf(line + n, sizeof line - (size_t)n, "}}");
    printf("%s\n", line);
    fflush(stdout);
    if (json) {
        fprintf(json, "%s\n", line);
        fflush(json);
    }
    char limit[48] = "", size[32];
    if (c->mem_limit) snprintf(limit, sizeof limit, ", mem=%s", ot_format_size(size, sizeof size, c->mem_limit));
    fprintf(stderr, "bench_train: %-14s %6.0f tokens/step  %8.1f ms/step  %8.0f tokens/s  MFU %5.1f%%  peak %6.2f GiB "
            "(model %.2f, workspace %.2f, pool high %.2f; recompute %s%s)\n", c->name,
            (double)tokens_timed / o->steps, median_ms, tps, 100 * mfu, gib(used_peak), gib(cm->arena_bytes),
            gib(ctx_bytes), gib(pool_high), recompute_word(ro.recompute), limit);
    fprintf(stderr, "bench_train: %-14s workspace:", c->name);
    for (int i = 0; i < n_parts; i++)
        fprintf(stderr, " %s %.2f GiB%s", parts[i].name, gib(parts[i].bytes), i + 1 < n_parts ? "," : "\n");
    if (o->profile_steps > 0) {
        fprintf(stderr, "bench_train: %-14s per step:", c->name);
        for (int k = 0; k < OT_CUDA_PROF_N; k++)
            fprintf(stderr, " %s %.1f ms (%.0f%%)%s", ot_cuda_prof_names[k], ms[k] / o->profile_steps,
                    prof_total > 0 ? 100 * ms[k] / prof_total : 0.0, k + 1 < OT_CUDA_PROF_N ? "," : "\n");
        fprintf(stderr, "bench_train: %-14s roofline (of %.0f TFLOP/s, %.2f TB/s):", c->name, o->peak_tflops,
                o->peak_tbs);
        for (int k = 0; k < OT_CUDA_PROF_N; k++) {
            const double sec = ms[k] / o->profile_steps / 1e3;
            if (!(sec > 0)) continue;
            const double tflops = work[k].flop / sec / 1e12, tbs = work[k].bytes / sec / 1e12;
            const double fc = tflops / o->peak_tflops, fm = tbs / o->peak_tbs;
            fprintf(stderr, " %s %.0f TFLOP/s (%.0f%%) %.2f TB/s (%.0f%%) %s-bound;", ot_cuda_prof_names[k], tflops,
                    100 * fc, tbs, 100 * fm, fc >= fm ? "compute" : "memory");
        }
        fprintf(stderr, "\n");
    }

    ot_optimizer_free(&opt);
    ot_cuda_optimizer_free(adamw);
    ot_cuda_ctx_free(ctx);
    ot_lora_free(&lo);
    for (int s = 0; s < n_steps; s++) ot_batch_free(&batches[s]);
    free(batches);
    free(step_s);
    // the next case starts from the model alone: hand the pool's memory back and restart its high-water mark
    OT_CUDA_CHECK(cudaDeviceSynchronize());
    OT_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
    ot_cuda_set_memory_limit(0, err);
    uint64_t zero = 0;
    OT_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero));
    OT_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero));
    return 0;
}

int main(int argc, char **argv) {
    bench_opts o;
    int rc = parse_args(&o, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    for (int k = 0; k < OT_CUDA_PROF_N; k++) // the work model's classes are the breakdown's
        if ((int)OT_WORK_N != (int)OT_CUDA_PROF_N || strcmp(ot_work_names[k], ot_cuda_prof_names[k]))
            ot_die("bench_train: the work model's op classes (benchmarks/step_work.h) differ from the breakdown's");
    if (ot_cuda_device_count() < 1) {
        fprintf(stderr, "bench_train: no CUDA device is visible\n");
        return 1;
    }
    if (!dir_exists(o.model_dir)) {
        if (!o.make_preset) {
            fprintf(stderr, "bench_train: %s does not exist (give --make-model 20b to make it)\n", o.model_dir);
            return 1;
        }
        if (make_model(o.model_dir, o.make_preset)) return 1;
    }
    if (o.dump_dir && mkdir(o.dump_dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "bench_train: cannot create %s: %s\n", o.dump_dir, strerror(errno));
        return 1;
    }
    FILE *json = NULL;
    if (o.json_path && !(json = fopen(o.json_path, "a"))) {
        fprintf(stderr, "bench_train: cannot open %s: %s\n", o.json_path, strerror(errno));
        return 1;
    }
    struct cudaDeviceProp prop;
    OT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    ot_err err;
    ot_cuda_model cm;
    double t0 = ot_now_seconds();
    if (ot_cuda_model_load(&cm, o.model_dir, 0, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "bench_train: %s on %s (%.0f GiB): %d layers, %d experts, vocab %d; %.2f GiB on the GPU "
            "(experts %.2f GiB %s), loaded in %.1f s\n", o.model_dir, prop.name, gib(prop.totalGlobalMem),
            cm.cfg.num_hidden_layers, cm.cfg.num_local_experts, cm.cfg.vocab_size, gib(cm.arena_bytes),
            gib(cm.expert_bytes), cm.layers[0].gate_up.kind == OT_EXPERT_MXFP4 ? "MXFP4" : "bf16", ot_now_seconds() - t0);
    int failed = 0;
    for (int i = 0; i < o.n_cases; i++)
        if (run_case(&o, &o.cases[i], &cm, json, &err)) {
            fprintf(stderr, "bench_train: case %s: %s\n", o.cases[i].name, err.msg);
            failed = 1;
            break;
        }
    if (json) fclose(json);
    ot_cuda_model_free(&cm);
    return failed;
}
