// osstune-export: hand a fine-tune over to llama.cpp, Ollama and transformers + PEFT (spec §5, §6).
//
// Writes into OUT_DIR:
//   adapter.gguf      the LoRA adapter for llama.cpp's --lora (spec §6.1–6.4), against the §5.3 tensor names
//   model.gguf        the base model with the LoRA merged (spec §5.2–5.4): experts without LoRA re-packed bit-exactly
//                     as ggml MXFP4, attention LoRA merged into the stored bf16 weights, experts with LoRA at
//                     --expert-lora-type
//   base.gguf         (only when asked) the base model alone, the model adapter.gguf is applied to
//   Modelfile, Modelfile.nan2zh, Modelfile.zh2tl, ...   Ollama, one per direction of formats/directions.h;
//                     README.md: how to use all of it
//   peft/             adapter_config.json + adapter_model.safetensors for transformers + PEFT
//
// The formats do the work: formats/gguf_gptoss.h (the GGUF files, streamed row by row from the mapped shards),
// formats/modelfile.h, formats/peft_adapter.h, and formats/export_dir.h (the directory: staging, commit, README).
// This file reads the options, reports progress and turns SIGINT/SIGTERM into a clean stop.
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/checkpoint.h"
#include "formats/export_dir.h"
#include "formats/gguf_gptoss.h"
#include "formats/modelfile.h"
#include "formats/peft_adapter.h"
#include "formats/run_dir.h"
#include "formats/tokenizer.h"

// ---- options ------------------------------------------------------------------------------------------------------
typedef struct {
    const char *model_dir, *adapter_dir, *out_dir, *name, *tokenizer_path;
    unsigned outputs;
    ot_ggml_type expert_lora_type;
    int force; // replace a Modelfile / README.md that differs from what this export writes (an edit)
} options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: osstune-export --model BASE_DIR --adapter ADAPTER_DIR --out OUT_DIR [options]\n"
            "\n"
            "Exports a LoRA fine-tune of gpt-oss for llama.cpp, Ollama and transformers + PEFT.\n"
            "\n"
            "  --model DIR        the base model (HF layout: config.json + safetensors shards)\n"
            "  --adapter DIR      the PEFT adapter: adapter_config.json + adapter_model.safetensors (a training\n"
            "                     checkpoint directory such as run/ckpt/step-000500 works as it is)\n"
            "  --out DIR          where to write (created if missing; its parent must exist)\n"
            "  --only LIST        comma-separated subset of: adapter, model, modelfile, peft, base\n"
            "                     (default adapter,model,modelfile,peft; base = the base model alone as base.gguf,\n"
            "                     for llama.cpp --lora adapter.gguf; it needs no --adapter)\n"
            "  --expert-lora-type bf16|q8_0\n"
            "                     storage of merged expert weights that carry LoRA in model.gguf (default bf16:\n"
            "                     keeps the logits closer, see docs/export.md); experts without LoRA stay MXFP4\n"
            "  --name NAME        model name in the GGUF metadata and in the Ollama commands (default osstune)\n"
            "  --tokenizer PATH   tokenizer.json or o200k_base.tiktoken (default: BASE_DIR/tokenizer.json)\n"
            "  --force            replace a Modelfile or README.md in OUT_DIR that differs from what this export\n"
            "                     writes (someone edited it); without --force the export refuses and changes nothing\n"
            "  -h, --help         this text\n"
            "\n"
            "Files: adapter.gguf, model.gguf, base.gguf, Modelfile (zh->nan), Modelfile.nan2zh, Modelfile.zh2tl,\n"
            "Modelfile.tl2zh, Modelfile.nan2tl, Modelfile.tl2nan (Tâi-lô), README.md, peft/.\n"
            "A failed or interrupted export leaves OUT_DIR unchanged. An output never replaces an input file, nor\n"
            "anything in OUT_DIR that is not a regular file.\n");
}

// ---- interrupts ---------------------------------------------------------------------------------------------------
// SIGINT/SIGTERM only set a flag: the progress callback sees it between rows and the writer unwinds through the
// normal error path, which removes the staging directory.
static volatile sig_atomic_t g_interrupted = 0;
static void on_signal(int sig) { g_interrupted = sig; }

// ---- progress -----------------------------------------------------------------------------------------------------
typedef struct {
    const char *label;
    uint64_t total, done;
    double t0, last;
    int tty, last_decile;
} progress;

static void progress_start(progress *p, const char *label, uint64_t total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->total = total ? total : 1;
    p->t0 = p->last = ot_now_seconds();
    p->tty = isatty(2);
    p->last_decile = -1;
}

static void progress_print(progress *p, int final) {
    double t = ot_now_seconds(), frac = (double)p->done / (double)p->total;
    double eta = frac > 0 ? (t - p->t0) * (1 - frac) / frac : 0;
    fprintf(stderr, "%sosstune-export: %s %5.1f%%  %.2f / %.2f GB  %.0f s", p->tty ? "\r" : "", p->label, 100.0 * frac,
            p->done / 1e9, p->total / 1e9, t - p->t0);
    if (!final && frac > 0) fprintf(stderr, "  (about %.0f s left)  ", eta);
    if (final || !p->tty) fputc('\n', stderr);
    p->last = t;
}

static void progress_add(progress *p, uint64_t n) {
    p->done += n;
    if (p->tty) {
        if (ot_now_seconds() - p->last > 0.5) progress_print(p, 0);
    } else {
        // Logs get one line per tenth (once the file takes long enough to need one), not carriage returns.
        int decile = (int)(10 * p->done / p->total);
        if (decile != p->last_decile && decile < 10 && ot_now_seconds() - p->t0 > 2.0) {
            p->last_decile = decile;
            progress_print(p, 0);
        }
    }
}

// The writers' callback (ot_gguf_gptoss.progress): one line per file on a terminal, updated in place; one per tenth
// in a log. It is also where an interrupt stops the write.
static int on_progress(void *ctx, const char *label, uint64_t done, uint64_t total, ot_err *err) {
    progress *p = ctx;
    if (done == 0) progress_start(p, label, total);
    else {
        progress_add(p, done - p->done);
        if (done == total) progress_print(p, 1);
    }
    return g_interrupted ? ot_fail(err, "interrupted by signal %d", (int)g_interrupted) : 0;
}

// ---- the export ---------------------------------------------------------------------------------------------------
static int write_text(const char *stage, const char *rel, char *text, ot_err *err) {
    char *p = ot_path_join(stage, rel);
    int rc = ot_write_file_atomic(p, text, strlen(text), err);
    free(p);
    free(text);
    return rc;
}

// Writes everything into `stage`; the caller moves it into place.
static int run(const options *o, const char *stage, ot_err *err) {
    const ot_path_role inputs[] = {{"--model", o->model_dir}, {"--adapter", o->adapter_dir}, {"--tokenizer", o->tokenizer_path}};
    if (ot_export_check_outputs(o->out_dir, o->outputs, o->force, inputs, 3, err)) return -1;
    // A checkpoint of a run is exported only as it was written (its COMPLETE marker's sizes and hashes).
    if (ot_run_ckpt_verify_files(o->model_dir, "--model", err) ||
        (o->adapter_dir && ot_run_ckpt_verify_files(o->adapter_dir, "--adapter", err)))
        return -1;
    ot_checkpoint ck;
    if (ot_checkpoint_open(&ck, o->model_dir, err)) return -1;
    int rc = 0;
    ot_lora lo;
    int have_lora = 0;
    ot_tokenizer *tok = NULL;
    const ot_model_config *c = &ck.config;

    if (o->outputs & (OT_EXPORT_ADAPTER | OT_EXPORT_MODEL | OT_EXPORT_BASE)) rc = ot_gguf_gptoss_check(c, o->model_dir, err);
    if (!rc && o->adapter_dir) {
        // ot_lora_load_peft reads only the model's configuration: the exporter never converts the base model to
        // float32 (4.6 GB of embeddings alone for the 20b).
        rc = ot_lora_load_peft(&lo, c, o->adapter_dir, err);
        have_lora = rc == 0;
        if (!rc && lo.n_params == 0) rc = ot_fail(err, "%s: the adapter holds no LoRA factors", o->adapter_dir);
    }
    if (!rc && (o->outputs & (OT_EXPORT_MODEL | OT_EXPORT_BASE))) {
        char *tp = o->tokenizer_path ? ot_strdup(o->tokenizer_path) : ot_path_join(o->model_dir, "tokenizer.json");
        if (!o->tokenizer_path && access(tp, R_OK) != 0)
            rc = ot_fail(err, "%s: no tokenizer.json for the GGUF vocabulary; pass --tokenizer PATH (a tokenizer.json or "
                         "o200k_base.tiktoken)", o->model_dir);
        else if (!(tok = ot_tokenizer_load(tp, err)))
            rc = -1;
        free(tp);
    }
    if (!rc && (o->outputs & OT_EXPORT_MODELFILE)) rc = ot_modelfile_check_texts(err);

    progress prog = {0};
    const ot_gguf_gptoss g = {.ck = &ck, .lo = have_lora ? &lo : NULL, .tok = tok, .name = o->name,
                              .expert_lora_type = o->expert_lora_type, .progress = on_progress, .progress_ctx = &prog};
    static const struct {
        unsigned bit;
        ot_gguf_kind kind;
        const char *file;
    } ggufs[] = {{OT_EXPORT_ADAPTER, OT_GGUF_ADAPTER, "adapter.gguf"},
                 {OT_EXPORT_MODEL, OT_GGUF_MODEL, "model.gguf"},
                 {OT_EXPORT_BASE, OT_GGUF_BASE, "base.gguf"}};
    for (size_t i = 0; i < sizeof ggufs / sizeof ggufs[0] && !rc; i++) {
        if (!(o->outputs & ggufs[i].bit)) continue;
        char *p = ot_path_join(stage, ggufs[i].file);
        rc = ot_gguf_gptoss_write(&g, ggufs[i].kind, p, err);
        free(p);
    }
    if (rc && prog.tty && prog.label && prog.done < prog.total) fputc('\n', stderr); // end the progress line
    for (int d = 0; d < OT_N_DIRECTIONS && !rc && (o->outputs & OT_EXPORT_MODELFILE); d++)
        rc = write_text(stage, ot_directions[d].modelfile, ot_modelfile_text((ot_direction)d), err);
    if (!rc && (o->outputs & OT_EXPORT_PEFT)) {
        char *p = ot_path_join(stage, "peft");
        if (mkdir(p, 0755) != 0) rc = ot_fail(err, "cannot create %s: %s", p, strerror(errno));
        if (!rc) rc = ot_lora_save_peft(&lo, p, err);
        free(p);
    }
    if (!rc) {
        // The README describes the whole directory: what this export writes and what an earlier one left there.
        unsigned present = o->outputs | ot_export_outputs_present(o->out_dir);
        rc = write_text(stage, "README.md", ot_export_readme_text(o->name, present, o->outputs, o->expert_lora_type), err);
    }
    if (g_interrupted && !rc) rc = ot_fail(err, "interrupted by signal %d", (int)g_interrupted);
    if (tok) ot_tokenizer_free(tok);
    if (have_lora) ot_lora_free(&lo);
    ot_checkpoint_close(&ck);
    return rc;
}

int main(int argc, char **argv) {
    options o = {.name = "osstune", .outputs = OT_EXPORT_DEFAULT, .expert_lora_type = OT_GGML_BF16};
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"adapter", required_argument, 0, 'a'},
        {"out", required_argument, 0, 'o'},       {"only", required_argument, 0, 'O'},
        {"expert-lora-type", required_argument, 0, 'x'}, {"name", required_argument, 0, 'n'},
        {"tokenizer", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
        {"force", no_argument, 0, 'f'},           {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': o.model_dir = optarg; break;
        case 'a': o.adapter_dir = optarg; break;
        case 'o': o.out_dir = optarg; break;
        case 'O':
        {
            ot_err e;
            if (ot_export_parse_only(optarg, &o.outputs, &e)) {
                fprintf(stderr, "osstune-export: %s\n", e.msg);
                return 2;
            }
            break;
        }
        case 'x':
            if (!strcmp(optarg, "bf16")) o.expert_lora_type = OT_GGML_BF16;
            else if (!strcmp(optarg, "q8_0")) o.expert_lora_type = OT_GGML_Q8_0;
            else {
                fprintf(stderr, "osstune-export: --expert-lora-type must be bf16 or q8_0, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'n': o.name = optarg; break;
        case 't': o.tokenizer_path = optarg; break;
        case 'f': o.force = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "osstune-export: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    const unsigned need_adapter = OT_EXPORT_ADAPTER | OT_EXPORT_MODEL | OT_EXPORT_PEFT;
    if (!o.model_dir || !o.out_dir || (!o.adapter_dir && (o.outputs & need_adapter))) {
        fprintf(stderr, "osstune-export: --model, --out and (except for --only base,modelfile) --adapter are required "
                        "(see --help)\n");
        return 2;
    }
    // The name is pasted into the README's shell commands and Ollama model names: letters, digits, '.', '_', '-'.
    size_t name_len = strlen(o.name);
    if (name_len == 0 || name_len > 64 || strspn(o.name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                         "0123456789._-") != name_len || !isalnum((unsigned char)o.name[0])) {
        fprintf(stderr, "osstune-export: --name: '%s' is not a safe model name: use 1 to 64 letters, digits, '.', '_' "
                        "and '-', starting with a letter or digit (it goes into shell commands and Ollama names)\n",
                o.name);
        return 2;
    }

    // Handlers first: from the moment the staging directory exists, an interrupt must go through the cleanup.
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    ot_err err;
    int created_out = 0, committed = 0; // a directory we create is removed again on failure
    char *stage = ot_export_stage_begin(o.out_dir, &created_out, &err);
    if (!stage) {
        fprintf(stderr, "osstune-export: %s\n", err.msg);
        return 1;
    }
    int rc = run(&o, stage, &err);
    if (!rc) rc = ot_export_stage_commit(stage, o.out_dir, o.outputs, &committed, &err);
    ot_err ignored;
    ot_remove_tree(stage, &ignored);
    free(stage);
    if (rc) {
        fprintf(stderr, "osstune-export: %s\n", err.msg);
        if (committed) {
            fprintf(stderr, "osstune-export: the error came while moving the finished files into %s: some of them "
                            "were replaced\n", o.out_dir);
        } else {
            if (created_out) rmdir(o.out_dir);
            fprintf(stderr, "osstune-export: nothing was written to %s\n", o.out_dir);
        }
        return 1;
    }
    ot_export_print_written("osstune-export", o.out_dir, o.outputs);
    return 0;
}
