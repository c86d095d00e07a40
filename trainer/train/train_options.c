#include "trainer/train/train_options.h"
#include "trainer/graph/gptoss_cuda.h" // OT_RECOMPUTE_*

#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: osstune-train --model DIR --data FILE.h5 --run-dir DIR --steps N [options]\n"
        "       (run one process per rank: mpirun -np N osstune-train ..., or srun under Slurm)\n"
        "\n"
        "Trains a LoRA adapter on a gpt-oss model. Checkpoints go to RUN_DIR/ckpt/step-NNNNNN/ (a PEFT adapter, the\n"
        "optimizer state, state.pb); metrics to RUN_DIR/metrics.jsonl; the resolved options to RUN_DIR/config.json.\n"
        "A run started again with the same RUN_DIR resumes from its latest checkpoint.\n"
        "\n"
        "  --model DIR            base model directory (config.json + safetensors shards, MXFP4 or bf16 experts)\n"
        "  --data FILE.h5         tokenized pairs from osstune-prep\n"
        "  --run-dir DIR          where checkpoints, metrics and the config go (created if missing)\n"
        "  --steps N              optimizer steps in total (the LR schedule's length; at most 10^9)\n"
        "  --backend auto|cpu|cuda  compute backend (default auto: cuda when this build has CUDA and a GPU is\n"
        "                         visible, else cpu, the float32 reference)\n"
        "  --recompute auto|on|off|attention  GPU: on keeps only each layer's input and runs the layer forward again\n"
        "                         before its backward; attention keeps the MoE block's activations and runs only the\n"
        "                         attention block again (between the two in memory and in speed); off keeps all\n"
        "                         (default auto: off when every activation fits, else attention when that fits, else\n"
        "                         on; with --full the fp32 masters, gradients and AdamW moments count against the\n"
        "                         memory too)\n"
        "  --gpu-memory-limit SIZE  GPU: run as on a card with SIZE of memory (e.g. 24GiB, 16G, 8000MiB): --recompute\n"
        "                         auto decides from it and an allocation past it fails with a message; counted as\n"
        "                         nvidia-smi counts (CUDA context and libraries included). Default: the card's own\n"
        "  --shard-base auto|on|off  shard the base weights over the ranks (FSDP-style: each rank reads and keeps\n"
        "                         1/N of every layer and gathers a layer before it runs; default auto: on with\n"
        "                         more than one rank). Same results as off, bit for bit on the CPU backend\n"
        "  --grad-reduce auto|nccl|ordered  GPU with several ranks: sum the LoRA gradients with NCCL on the device\n"
        "                         (auto, fast; bits depend on the world size) or in a fixed order through host memory\n"
        "  --seed S               seed for LoRA initialisation and data order (default 0)\n"
        "  --seq-len N            tokens per packed row (default 1024; 8 to the model's max_position_embeddings)\n"
        "  --rows-per-step N      rows per global step, whatever the number of ranks (default 8; at most 65536)\n"
        "  --loss-all             take the loss at every position (default: the answer only)\n"
        "  --full                 train every weight of the model (bf16 experts only; no --lora-* options): checkpoints hold\n"
        "                         RUN_DIR/ckpt/step-N/model/, a model directory for --model of later runs; on\n"
        "                         cuda the fp32 masters, gradients and AdamW moments stay on the GPU (16 bytes\n"
        "                         per weight) and the checkpoints are the CPU mode's (either resumes the other)\n"
        "  --lora-r N             LoRA rank (default 16; at most the smaller side of an adapted matrix)\n"
        "  --lora-alpha A         LoRA alpha (default 32, in (0, 10^6]); scaling = alpha / r\n"
        "  --lora-rslora          scaling = alpha / sqrt(r)\n"
        "  --lora-targets LIST    q,k,v,o,gate_up,down (or attn, experts, all; default q,k,v,o)\n"
        "  --lora-expert-layers L comma-separated layers for the expert targets (default: all layers)\n"
        "  --init-adapter DIR     start from this PEFT adapter (its r, alpha and targets are used: --lora-* options\n"
        "                         that say otherwise are refused)\n"
        "  --lr LR                peak learning rate (default 2e-4, in (0, 1])\n"
        "  --min-lr LR            final learning rate of the cosine decay (default 0, at most --lr)\n"
        "  --warmup N             linear warmup steps (default 0, at most --steps)\n"
        "  --weight-decay W       AdamW decoupled weight decay (default 0.01, in [0, 1])\n"
        "  --beta1 B --beta2 B --eps E   AdamW (defaults 0.9, 0.999, 1e-8; betas in [0, 1), eps in (0, 1])\n"
        "  --max-grad-norm G      clip the global gradient norm (default 1.0; 0 = off)\n"
        "  --save-every N         checkpoint every N steps (default 0: at the end and on a signal)\n"
        "  --keep-last K          checkpoints to keep (default 3)\n"
        "  --resume auto|never|DIR  auto (default): continue from the newest loadable checkpoint of RUN_DIR if there\n"
        "                         is one; never: start at step 0 (refused where RUN_DIR holds checkpoints); DIR: that\n"
        "                         checkpoint directory\n"
        "  --force-resume         resume even if the model, data or options differ from the checkpoint's\n"
        "  --log-every N          progress line every N steps (default 1)\n"
        "  --eval-data FILE.h5    validation pairs: mean loss over their answer tokens goes to metrics.jsonl\n"
        "  --eval-every N         validate every N steps (default 0: only at the end)\n"
        "  --eval-samples N       validate on the first N samples only (default 0: all)\n"
        "  -h, --help             this text\n"
        "\n"
        "Every numeric option is checked against its range before anything is loaded. Only one osstune-train may use a\n"
        "RUN_DIR at a time (RUN_DIR/osstune-train.lock).\n"
        "\n"
        "Exit status: 0 finished; 75 stopped by SIGTERM/SIGUSR1/SIGINT after checkpointing (resume me);\n"
        "1 failed; 2 bad usage; 130 aborted by a second SIGINT (last good checkpoint untouched).\n");
}

// Every numeric option has a range; a value outside it (or one that does not parse, overflows or is not finite) is a
// usage error naming the option, before anything is loaded.
#define MAX_STEPS 1000000000L // far beyond any run; also bounds every "every N steps" option

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || errno == ERANGE || v < lo || v > hi) {
        fprintf(stderr, "osstune-train: %s: '%s' is not an integer from %ld to %ld\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    long v;
    if (parse_long(flag, s, lo, hi, &v)) return -1;
    *out = (int)v; // hi <= INT_MAX for every int option
    return 0;
}

// One of three words: words[i] gives values[i]. The message lists the words in order ("auto, on or off").
// One of n words (n >= 2), as its value.
static int parse_choice(const char *flag, const char *s, const char *const *words, const int *values, int n,
                        int *out) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, words[i])) {
            *out = values[i];
            return 0;
        }
    fprintf(stderr, "osstune-train: %s must be ", flag);
    for (int i = 0; i < n; i++) fprintf(stderr, "%s%s", words[i], i + 2 < n ? ", " : i + 1 < n ? " or " : "");
    fprintf(stderr, ", not '%s'\n", s);
    return -1;
}

// A real number in [lo, hi] (lo excluded when lo_open, hi when hi_open), as the float it is stored in: a value that
// float rounds to 0 or to infinity is out of range too.
static int parse_real(const char *flag, const char *s, double lo, int lo_open, double hi, int hi_open, float *out) {
    char *end;
    double d = strtod(s, &end);
    float v = fabs(d) <= FLT_MAX ? (float)d : INFINITY; // (a double beyond float's range must not be converted)
    if (*s == 0 || *end != 0 || !isfinite(v) || (lo_open ? !(v > lo) : !(v >= lo)) ||
        (hi_open ? !(v < hi) : !(v <= hi))) {
        fprintf(stderr, "osstune-train: %s: '%s' is not a number in %c%g, %g%c\n", flag, s, lo_open ? '(' : '[', lo, hi,
                hi_open ? ')' : ']');
        return -1;
    }
    *out = v;
    return 0;
}

// The LoRA options given on the command line (ot_train_options.lora_given), for --full and --init-adapter.
static const char *const lora_flag_names[] = {"--lora-r", "--lora-alpha", "--lora-rslora", "--lora-targets",
                                              "--lora-expert-layers"};

int ot_train_options_parse(ot_train_options *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->backend = "auto";
    o->recompute = -1;
    o->shard_base = -1;
    o->resume = "auto";
    o->seq_len = 1024;
    o->rows_per_step = 8;
    o->keep_last = 3;
    o->log_every = 1;
    o->lora.r = 16;
    o->lora.alpha = 32;
    o->lora.targets = 0xFu;
    ot_optim_config_default(&o->optim);
    enum { O_MODEL = 256, O_DATA, O_RUN, O_STEPS, O_BACKEND, O_SEED, O_SEQ, O_ROWS, O_LOSSALL, O_R, O_ALPHA, O_RSLORA,
           O_TARGETS, O_ELAYERS, O_INIT, O_LR, O_MINLR, O_WARMUP, O_WD, O_B1, O_B2, O_EPS, O_CLIP, O_SAVE, O_KEEP,
           O_RESUME, O_FORCE, O_LOG, O_EVAL, O_EVAL_EVERY, O_EVAL_SAMPLES, O_RECOMPUTE, O_FULL, O_SHARD, O_GRAD_REDUCE, O_GPU_MEM };
    static const struct option opts[] = {
        {"model", 1, 0, O_MODEL}, {"data", 1, 0, O_DATA}, {"run-dir", 1, 0, O_RUN}, {"steps", 1, 0, O_STEPS},
        {"backend", 1, 0, O_BACKEND}, {"seed", 1, 0, O_SEED}, {"seq-len", 1, 0, O_SEQ},
        {"rows-per-step", 1, 0, O_ROWS}, {"loss-all", 0, 0, O_LOSSALL}, {"lora-r", 1, 0, O_R},
        {"lora-alpha", 1, 0, O_ALPHA}, {"lora-rslora", 0, 0, O_RSLORA}, {"lora-targets", 1, 0, O_TARGETS},
        {"lora-expert-layers", 1, 0, O_ELAYERS}, {"init-adapter", 1, 0, O_INIT}, {"lr", 1, 0, O_LR},
        {"min-lr", 1, 0, O_MINLR}, {"warmup", 1, 0, O_WARMUP}, {"weight-decay", 1, 0, O_WD}, {"beta1", 1, 0, O_B1},
        {"beta2", 1, 0, O_B2}, {"eps", 1, 0, O_EPS}, {"max-grad-norm", 1, 0, O_CLIP}, {"save-every", 1, 0, O_SAVE},
        {"keep-last", 1, 0, O_KEEP}, {"resume", 1, 0, O_RESUME}, {"force-resume", 0, 0, O_FORCE},
        {"log-every", 1, 0, O_LOG}, {"eval-data", 1, 0, O_EVAL}, {"eval-every", 1, 0, O_EVAL_EVERY},
        {"eval-samples", 1, 0, O_EVAL_SAMPLES}, {"recompute", 1, 0, O_RECOMPUTE}, {"full", 0, 0, O_FULL},
        {"shard-base", 1, 0, O_SHARD}, {"grad-reduce", 1, 0, O_GRAD_REDUCE}, {"gpu-memory-limit", 1, 0, O_GPU_MEM},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    static const char *const auto_on_off[3] = {"auto", "on", "off"};
    static const int auto_on_off_values[3] = {-1, 1, 0};
    int c;
    long v;
    ot_err err;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o->model_dir = optarg; break;
        case O_DATA: o->data_path = optarg; break;
        case O_RUN: o->run_dir = optarg; break;
        case O_STEPS: if (parse_long("--steps", optarg, 1, MAX_STEPS, &o->steps)) return 2; break;
        case O_BACKEND: o->backend = optarg; break;
        case O_SEED: if (parse_long("--seed", optarg, 0, LONG_MAX, &v)) return 2; o->seed = (uint64_t)v; break;
        case O_SEQ: if (parse_int("--seq-len", optarg, 8, 1L << 20, &o->seq_len)) return 2; break;
        case O_ROWS: if (parse_int("--rows-per-step", optarg, 1, 1L << 16, &o->rows_per_step)) return 2; break;
        case O_LOSSALL: o->loss_all = 1; break;
        case O_FULL: o->full = 1; break;
        case O_R: if (parse_int("--lora-r", optarg, 1, 4096, &o->lora.r)) return 2; o->lora_given |= 1u << 0; break;
        case O_ALPHA:
            if (parse_real("--lora-alpha", optarg, 0, 1, 1e6, 0, &o->lora.alpha)) return 2;
            o->lora_given |= 1u << 1;
            break;
        case O_RSLORA: o->lora.use_rslora = 1; o->lora_given |= 1u << 2; break;
        case O_TARGETS:
            if (strlen(optarg) > 200 || ot_lora_parse_targets(&o->lora, optarg, &err)) {
                fprintf(stderr, "osstune-train: --lora-targets: %s\n", strlen(optarg) > 200 ? "list too long" : err.msg);
                return 2;
            }
            o->lora_given |= 1u << 3;
            break;
        case O_ELAYERS: {
            // Comma-separated layer numbers, each once; an empty list would silently mean "every layer".
            o->lora.n_expert_layers = 0;
            o->lora_given |= 1u << 4;
            for (const char *p = optarg;; p++) {
                char item[32];
                size_t n = strcspn(p, ",");
                snprintf(item, sizeof item, "%.*s", (int)(n < sizeof item ? n : sizeof item - 1), p);
                if (n >= sizeof item || parse_long("--lora-expert-layers", item, 0, OT_MAX_LAYERS - 1, &v)) return 2;
                for (int i = 0; i < o->lora.n_expert_layers; i++)
                    if (o->lora.expert_layers[i] == v) {
                        fprintf(stderr, "osstune-train: --lora-expert-layers: layer %ld is listed twice\n", v);
                        return 2;
                    }
                o->lora.expert_layers[o->lora.n_expert_layers++] = (int)v; // at most OT_MAX_LAYERS distinct ones
                p += n;
                if (!*p) break;
            }
            break;
        }
        case O_INIT: o->init_adapter = optarg; break;
        case O_LR: if (parse_real("--lr", optarg, 0, 1, 1, 0, &o->optim.lr)) return 2; break;
        case O_MINLR: if (parse_real("--min-lr", optarg, 0, 0, 1, 0, &o->optim.min_lr)) return 2; break;
        case O_WARMUP: if (parse_long("--warmup", optarg, 0, MAX_STEPS, &o->optim.warmup_steps)) return 2; break;
        case O_WD: if (parse_real("--weight-decay", optarg, 0, 0, 1, 0, &o->optim.weight_decay)) return 2; break;
        case O_B1: if (parse_real("--beta1", optarg, 0, 0, 1, 1, &o->optim.beta1)) return 2; break;
        case O_B2: if (parse_real("--beta2", optarg, 0, 0, 1, 1, &o->optim.beta2)) return 2; break;
        case O_EPS: if (parse_real("--eps", optarg, 0, 1, 1, 0, &o->optim.eps)) return 2; break;
        case O_CLIP: if (parse_real("--max-grad-norm", optarg, 0, 0, 1e9, 0, &o->optim.max_grad_norm)) return 2; break;
        case O_SAVE: if (parse_int("--save-every", optarg, 0, MAX_STEPS, &o->save_every)) return 2; break;
        case O_KEEP: if (parse_int("--keep-last", optarg, 1, 1000000, &o->keep_last)) return 2; break;
        case O_RESUME: o->resume = optarg; break;
        case O_FORCE: o->force_resume = 1; break;
        case O_LOG: if (parse_int("--log-every", optarg, 1, MAX_STEPS, &o->log_every)) return 2; break;
        case O_EVAL: o->eval_data = optarg; break;
        case O_EVAL_EVERY: if (parse_int("--eval-every", optarg, 0, MAX_STEPS, &o->eval_every)) return 2; break;
        case O_EVAL_SAMPLES: if (parse_long("--eval-samples", optarg, 0, 1L << 62, &o->eval_samples)) return 2; break;
        case O_RECOMPUTE:
            if (parse_choice("--recompute", optarg, (const char *const[4]){"auto", "on", "off", "attention"},
                             (const int[4]){-1, OT_RECOMPUTE_ON, OT_RECOMPUTE_OFF, OT_RECOMPUTE_ATTENTION}, 4,
                             &o->recompute))
                return 2;
            break;
        case O_SHARD:
            if (parse_choice("--shard-base", optarg, auto_on_off, auto_on_off_values, 3, &o->shard_base)) return 2;
            break;
        case O_GRAD_REDUCE:
            if (parse_choice("--grad-reduce", optarg, (const char *const[3]){"auto", "nccl", "ordered"},
                             (const int[3]){0, 1, 2}, 3, &o->grad_reduce))
                return 2;
            break;
        case O_GPU_MEM:
            if (ot_parse_size(optarg, &o->gpu_memory_limit)) {
                fprintf(stderr, "osstune-train: --gpu-memory-limit: '%s' is not a size (e.g. 24GiB, 16G, 8000MiB)\n",
                        optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "osstune-train: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (!o->model_dir || !o->data_path || !o->run_dir || o->steps <= 0) {
        fprintf(stderr, "osstune-train: --model, --data, --run-dir and --steps are required (see --help)\n");
        return 2;
    }
    if (strcmp(o->backend, "auto") && strcmp(o->backend, "cpu") && strcmp(o->backend, "cuda")) {
        fprintf(stderr, "osstune-train: --backend must be auto, cpu or cuda, not '%s'\n", o->backend);
        return 2;
    }
    // Options that only make sense together.
    if (o->optim.min_lr > o->optim.lr) {
        fprintf(stderr, "osstune-train: --min-lr %g is above --lr %g (the cosine decays from --lr down to --min-lr)\n",
                o->optim.min_lr, o->optim.lr);
        return 2;
    }
    if (o->optim.warmup_steps > o->steps) {
        fprintf(stderr, "osstune-train: --warmup %ld is longer than the run (--steps %ld)\n", o->optim.warmup_steps,
                o->steps);
        return 2;
    }
    for (int i = 0; o->full && i < 5; i++)
        if (o->lora_given >> i & 1u) {
            fprintf(stderr, "osstune-train: --full trains every weight of the model: %s does not apply (leave it out, "
                    "or train a LoRA without --full)\n", lora_flag_names[i]);
            return 2;
        }
    o->optim.total_steps = o->steps;
    return 0;
}

// The layers a spec adapts experts on, as one bit per layer (n_expert_layers 0: every layer).
static void expert_layer_bits(const ot_lora_spec *spec, int n_layers, unsigned char *bits) {
    for (int l = 0; l < n_layers; l++) bits[l] = spec->n_expert_layers == 0;
    for (int i = 0; i < spec->n_expert_layers; i++)
        if (spec->expert_layers[i] < n_layers) bits[spec->expert_layers[i]] = 1;
}

int ot_train_options_adopt_adapter(ot_train_options *o, const ot_lora_spec *adapter, int n_layers, ot_err *err) {
    const ot_lora_spec *mine = &o->lora;
    unsigned char a[OT_MAX_LAYERS], b[OT_MAX_LAYERS];
    expert_layer_bits(mine, n_layers, a);
    expert_layer_bits(adapter, n_layers, b);
    const int experts = (adapter->targets >> OT_LORA_GATE_UP) & 3u;
    const int differs[5] = {mine->r != adapter->r, mine->alpha != adapter->alpha,
                            mine->use_rslora != adapter->use_rslora, mine->targets != adapter->targets,
                            experts && memcmp(a, b, (size_t)n_layers) != 0};
    for (int i = 0; i < 5; i++)
        if ((o->lora_given >> i & 1u) && differs[i])
            return ot_fail(err, "%s conflicts with --init-adapter %s (r=%d, lora_alpha %g%s, targets of its own): a run "
                           "from an adapter trains it as it is; leave %s out", lora_flag_names[i], o->init_adapter,
                           adapter->r, adapter->alpha, adapter->use_rslora ? ", rsLoRA" : "", lora_flag_names[i]);
    o->lora = *adapter;
    return 0;
}

static json_t *options_json(const ot_train_options *o, int with_paths) {
    json_t *j = json_object();
    char targets[128] = "";
    for (int t = 0; t < OT_LORA_N_TARGETS; t++)
        if (o->lora.targets >> t & 1u) {
            if (targets[0]) strcat(targets, ",");
            strcat(targets, ot_lora_target_names[t]);
        }
    json_t *layers = json_array();
    for (int i = 0; i < o->lora.n_expert_layers; i++) json_array_append_new(layers, json_integer(o->lora.expert_layers[i]));
    if (with_paths) {
        json_object_set_new(j, "model", json_string(o->model_dir));
        json_object_set_new(j, "data", json_string(o->data_path));
        json_object_set_new(j, "save_every", json_integer(o->save_every));
        json_object_set_new(j, "keep_last", json_integer(o->keep_last));
        json_object_set_new(j, "eval_data", o->eval_data ? json_string(o->eval_data) : json_null());
        json_object_set_new(j, "eval_every", json_integer(o->eval_every));
        json_object_set_new(j, "eval_samples", json_integer(o->eval_samples));
        // sharding moves bytes, never changes a number: not part of the fingerprint (a run may resume either way)
        json_object_set_new(j, "shard_base", json_string(o->shard_base < 0 ? "auto" : o->shard_base ? "on" : "off"));
        // how GPU ranks sum gradients (the last bits on GPU; nothing on the CPU backend): recorded, not fingerprinted
        json_object_set_new(j, "grad_reduce", json_string(o->grad_reduce == 2 ? "ordered" : o->grad_reduce == 1 ? "nccl" : "auto"));
        // the card a run plans for: the same numbers on any card (a run may resume on another), so not fingerprinted
        json_object_set_new(j, "gpu_memory_limit",
                            o->gpu_memory_limit ? json_integer((json_int_t)o->gpu_memory_limit) : json_null());
    }
    json_object_set_new(j, "backend", json_string(o->backend));
    json_object_set_new(j, "steps", json_integer(o->steps));
    json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(j, "seq_len", json_integer(o->seq_len));
    json_object_set_new(j, "rows_per_step", json_integer(o->rows_per_step));
    json_object_set_new(j, "loss_all", json_boolean(o->loss_all));
    if (o->full) json_object_set_new(j, "full", json_true()); // absent in LoRA runs: their fingerprints stay as they were
    json_object_set_new(j, "lora_r", json_integer(o->lora.r));
    json_object_set_new(j, "lora_alpha", json_real(o->lora.alpha));
    json_object_set_new(j, "lora_rslora", json_boolean(o->lora.use_rslora));
    json_object_set_new(j, "lora_targets", json_string(targets));
    json_object_set_new(j, "lora_expert_layers", layers);
    json_object_set_new(j, "init_adapter", o->init_adapter ? json_string(o->init_adapter) : json_null());
    json_object_set_new(j, "lr", json_real(o->optim.lr));
    json_object_set_new(j, "min_lr", json_real(o->optim.min_lr));
    json_object_set_new(j, "warmup", json_integer(o->optim.warmup_steps));
    json_object_set_new(j, "weight_decay", json_real(o->optim.weight_decay));
    json_object_set_new(j, "beta1", json_real(o->optim.beta1));
    json_object_set_new(j, "beta2", json_real(o->optim.beta2));
    json_object_set_new(j, "eps", json_real(o->optim.eps));
    json_object_set_new(j, "max_grad_norm", json_real(o->optim.max_grad_norm));
    return j;
}

char *ot_train_options_to_json(const ot_train_options *o) {
    json_t *j = options_json(o, 1);
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

char *ot_train_options_fingerprint_json(const ot_train_options *o) {
    json_t *j = options_json(o, 0);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}
