#include "trainer/train_options.h"

#include <getopt.h>
#include <jansson.h>
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
        "  --steps N              optimizer steps in total (the LR schedule's length)\n"
        "  --backend auto|cpu|cuda  compute backend (default auto: cuda when this build has CUDA and a GPU is\n"
        "                         visible, else cpu, the float32 reference)\n"
        "  --recompute auto|on|off  GPU: keep only each layer's input and recompute the layer in backward\n"
        "                         (default auto: only when keeping every activation would not fit; with --full\n"
        "                         the fp32 masters, gradients and AdamW moments count against the memory too)\n"
        "  --shard-base auto|on|off  shard the base weights over the ranks (FSDP-style: each rank reads and keeps\n"
        "                         1/N of every layer and gathers a layer before it runs; default auto: on with\n"
        "                         more than one rank). Same results as off, bit for bit on the CPU backend\n"
        "  --grad-reduce auto|nccl|ordered  GPU with several ranks: sum the LoRA gradients with NCCL on the device\n"
        "                         (auto, fast; bits depend on the world size) or in a fixed order through host memory\n"
        "  --seed S               seed for LoRA initialisation and data order (default 0)\n"
        "  --seq-len N            tokens per packed row (default 1024)\n"
        "  --rows-per-step N      rows per global step, whatever the number of ranks (default 8)\n"
        "  --loss-all             take the loss at every position (default: the answer only)\n"
        "  --full                 train every weight of the model (bf16 experts only; no LoRA): checkpoints hold\n"
        "                         RUN_DIR/ckpt/step-N/model/, a model directory for --model of later runs; on\n"
        "                         cuda the fp32 masters, gradients and AdamW moments stay on the GPU (16 bytes\n"
        "                         per weight) and the checkpoints are the CPU mode's (either resumes the other)\n"
        "  --lora-r N             LoRA rank (default 16)\n"
        "  --lora-alpha A         LoRA alpha (default 32); scaling = alpha / r\n"
        "  --lora-rslora          scaling = alpha / sqrt(r)\n"
        "  --lora-targets LIST    q,k,v,o,gate_up,down (or attn, experts, all; default q,k,v,o)\n"
        "  --lora-expert-layers L comma-separated layers for the expert targets (default: all layers)\n"
        "  --init-adapter DIR     start from this PEFT adapter\n"
        "  --lr LR                peak learning rate (default 2e-4)\n"
        "  --min-lr LR            final learning rate of the cosine decay (default 0)\n"
        "  --warmup N             linear warmup steps (default 0)\n"
        "  --weight-decay W       AdamW decoupled weight decay (default 0.01)\n"
        "  --beta1 B --beta2 B --eps E   AdamW (defaults 0.9, 0.999, 1e-8)\n"
        "  --max-grad-norm G      clip the global gradient norm (default 1.0; 0 = off)\n"
        "  --save-every N         checkpoint every N steps (default 0: at the end and on a signal)\n"
        "  --keep-last K          checkpoints to keep (default 3)\n"
        "  --resume auto|never|DIR  auto (default): continue from RUN_DIR/ckpt/latest if there is one\n"
        "  --force-resume         resume even if the model, data or options differ from the checkpoint's\n"
        "  --log-every N          progress line every N steps (default 1)\n"
        "  --eval-data FILE.h5    validation pairs: mean loss over their answer tokens goes to metrics.jsonl\n"
        "  --eval-every N         validate every N steps (default 0: only at the end)\n"
        "  --eval-samples N       validate on the first N samples only (default 0: all)\n"
        "  -h, --help             this text\n"
        "\n"
        "Exit status: 0 finished; 75 stopped by SIGTERM/SIGUSR1/SIGINT after checkpointing (resume me);\n"
        "1 failed; 2 bad usage; 130 aborted by a second SIGINT (last good checkpoint untouched).\n");
}

static int parse_long(const char *flag, const char *s, long lo, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo) {
        fprintf(stderr, "osstune-train: %s: '%s' is not an integer >= %ld\n", flag, s, lo);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *flag, const char *s, float *out) {
    char *end;
    double v = strtod(s, &end);
    if (*s == 0 || *end != 0 || !(v >= 0)) {
        fprintf(stderr, "osstune-train: %s: '%s' is not a non-negative number\n", flag, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

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
           O_RESUME, O_FORCE, O_LOG, O_EVAL, O_EVAL_EVERY, O_EVAL_SAMPLES, O_RECOMPUTE, O_FULL, O_SHARD, O_GRAD_REDUCE };
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
        {"shard-base", 1, 0, O_SHARD}, {"grad-reduce", 1, 0, O_GRAD_REDUCE}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    long v;
    ot_err err;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o->model_dir = optarg; break;
        case O_DATA: o->data_path = optarg; break;
        case O_RUN: o->run_dir = optarg; break;
        case O_STEPS: if (parse_long("--steps", optarg, 1, &o->steps)) return 2; break;
        case O_BACKEND: o->backend = optarg; break;
        case O_SEED: if (parse_long("--seed", optarg, 0, &v)) return 2; o->seed = (uint64_t)v; break;
        case O_SEQ: if (parse_long("--seq-len", optarg, 8, &v)) return 2; o->seq_len = (int)v; break;
        case O_ROWS: if (parse_long("--rows-per-step", optarg, 1, &v)) return 2; o->rows_per_step = (int)v; break;
        case O_LOSSALL: o->loss_all = 1; break;
        case O_FULL: o->full = 1; break;
        case O_R: if (parse_long("--lora-r", optarg, 1, &v)) return 2; o->lora.r = (int)v; break;
        case O_ALPHA: if (parse_float("--lora-alpha", optarg, &o->lora.alpha)) return 2; break;
        case O_RSLORA: o->lora.use_rslora = 1; break;
        case O_TARGETS:
            if (ot_lora_parse_targets(&o->lora, optarg, &err)) {
                fprintf(stderr, "osstune-train: --lora-targets: %s\n", err.msg);
                return 2;
            }
            break;
        case O_ELAYERS: {
            o->lora.n_expert_layers = 0;
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", optarg);
            for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
                if (parse_long("--lora-expert-layers", t, 0, &v) || o->lora.n_expert_layers >= OT_MAX_LAYERS) return 2;
                o->lora.expert_layers[o->lora.n_expert_layers++] = (int)v;
            }
            break;
        }
        case O_INIT: o->init_adapter = optarg; break;
        case O_LR: if (parse_float("--lr", optarg, &o->optim.lr)) return 2; break;
        case O_MINLR: if (parse_float("--min-lr", optarg, &o->optim.min_lr)) return 2; break;
        case O_WARMUP: if (parse_long("--warmup", optarg, 0, &o->optim.warmup_steps)) return 2; break;
        case O_WD: if (parse_float("--weight-decay", optarg, &o->optim.weight_decay)) return 2; break;
        case O_B1: if (parse_float("--beta1", optarg, &o->optim.beta1)) return 2; break;
        case O_B2: if (parse_float("--beta2", optarg, &o->optim.beta2)) return 2; break;
        case O_EPS: if (parse_float("--eps", optarg, &o->optim.eps)) return 2; break;
        case O_CLIP: if (parse_float("--max-grad-norm", optarg, &o->optim.max_grad_norm)) return 2; break;
        case O_SAVE: if (parse_long("--save-every", optarg, 0, &v)) return 2; o->save_every = (int)v; break;
        case O_KEEP: if (parse_long("--keep-last", optarg, 1, &v)) return 2; o->keep_last = (int)v; break;
        case O_RESUME: o->resume = optarg; break;
        case O_FORCE: o->force_resume = 1; break;
        case O_LOG: if (parse_long("--log-every", optarg, 1, &v)) return 2; o->log_every = (int)v; break;
        case O_EVAL: o->eval_data = optarg; break;
        case O_EVAL_EVERY: if (parse_long("--eval-every", optarg, 0, &v)) return 2; o->eval_every = (int)v; break;
        case O_EVAL_SAMPLES: if (parse_long("--eval-samples", optarg, 0, &o->eval_samples)) return 2; break;
        case O_RECOMPUTE:
            if (!strcmp(optarg, "auto")) o->recompute = -1;
            else if (!strcmp(optarg, "on")) o->recompute = 1;
            else if (!strcmp(optarg, "off")) o->recompute = 0;
            else {
                fprintf(stderr, "osstune-train: --recompute must be auto, on or off, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_SHARD:
            if (!strcmp(optarg, "auto")) o->shard_base = -1;
            else if (!strcmp(optarg, "on")) o->shard_base = 1;
            else if (!strcmp(optarg, "off")) o->shard_base = 0;
            else {
                fprintf(stderr, "osstune-train: --shard-base must be auto, on or off, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_GRAD_REDUCE:
            if (!strcmp(optarg, "auto")) o->grad_reduce = 0;
            else if (!strcmp(optarg, "nccl")) o->grad_reduce = 1;
            else if (!strcmp(optarg, "ordered")) o->grad_reduce = 2;
            else {
                fprintf(stderr, "osstune-train: --grad-reduce must be auto, nccl or ordered, not '%s'\n", optarg);
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
    if (o->optim.beta1 >= 1 || o->optim.beta2 >= 1) {
        fprintf(stderr, "osstune-train: --beta1 and --beta2 must be below 1\n");
        return 2;
    }
    if (o->optim.min_lr > o->optim.lr) o->optim.min_lr = o->optim.lr;
    o->optim.total_steps = o->steps;
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
