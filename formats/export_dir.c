// The export directory (see export_dir.h).
#include "formats/export_dir.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/directions.h"
#include "formats/harmony.h"
#include "formats/modelfile.h"

// Every file an export may put into OUT_DIR (README.md: always).
static const struct {
    unsigned bit;
    const char *rel;
} out_files[] = {{OT_EXPORT_ADAPTER, "adapter.gguf"},
                 {OT_EXPORT_MODEL, "model.gguf"},
                 {OT_EXPORT_BASE, "base.gguf"},
                 {OT_EXPORT_MODELFILE, "Modelfile"},
                 {OT_EXPORT_MODELFILE, "Modelfile.nan2zh"},
                 {OT_EXPORT_MODELFILE, "Modelfile.zh2tl"},
                 {OT_EXPORT_MODELFILE, "Modelfile.tl2zh"},
                 {OT_EXPORT_MODELFILE, "Modelfile.nan2tl"},
                 {OT_EXPORT_MODELFILE, "Modelfile.tl2nan"},
                 {OT_EXPORT_PEFT, "peft/adapter_model.safetensors"},
                 {OT_EXPORT_PEFT, "peft/adapter_config.json"},
                 {0, "README.md"}};
#define N_OUT_FILES (sizeof out_files / sizeof out_files[0])

// Whether out_files[i] belongs to an export of `outputs`.
static int written_by(size_t i, unsigned outputs) { return !out_files[i].bit || (outputs & out_files[i].bit); }

int ot_export_parse_only(const char *list, unsigned *outputs, ot_err *err) {
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"adapter", OT_EXPORT_ADAPTER}, {"model", OT_EXPORT_MODEL}, {"modelfile", OT_EXPORT_MODELFILE},
                 {"peft", OT_EXPORT_PEFT},       {"base", OT_EXPORT_BASE}};
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    *outputs = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (!strcmp(t, names[i].name)) bit = names[i].bit;
        if (!bit) return ot_fail(err, "--only: unknown output '%s' (use adapter, model, modelfile, peft, base)", t);
        *outputs |= bit;
    }
    if (!*outputs) return ot_fail(err, "--only: empty list");
    return 0;
}

unsigned ot_export_outputs_present(const char *out_dir) {
    unsigned present = 0;
    for (size_t i = 0; i < N_OUT_FILES; i++) {
        char *q = ot_path_join(out_dir, out_files[i].rel);
        if (access(q, F_OK) == 0) present |= out_files[i].bit;
        free(q);
    }
    return present;
}

// ---- README.md ------------------------------------------------------------------------------------------------------
// present: the outputs in OUT_DIR after this export (written now or by an earlier one); written_now: this run's.
char *ot_export_readme_text(const char *name, unsigned present, unsigned written_now, ot_ggml_type expert_lora_type) {
    const size_t cap = 16384;
    char *s = ot_malloc(cap);
    size_t n = 0;
#define P(...) n += (size_t)snprintf(s + n, n < cap ? cap - n : 0, __VA_ARGS__)
    P("# %s: gpt-oss fine-tuned with osstune for Mandarin <-> Taiwanese Hokkien translation\n\n", name);
    P("Written by `osstune-export`. The files:\n\n");
    if (present & OT_EXPORT_MODEL) {
        P("- `model.gguf`: the base model with the LoRA adapter merged, for llama.cpp and Ollama. Experts without LoRA\n"
          "  are the original MXFP4 weights, bit for bit; attention weights carry the merged LoRA in bf16; experts with\n"
          "  LoRA are stored as ");
        if (written_now & OT_EXPORT_MODEL) P("%s.\n", expert_lora_type == OT_GGML_Q8_0 ? "Q8_0" : "bf16");
        else P("bf16 or Q8_0 (`--expert-lora-type`).\n");
    }
    if (present & OT_EXPORT_BASE) P("- `base.gguf`: the base model alone, for `--lora adapter.gguf`.\n");
    if (present & OT_EXPORT_ADAPTER)
        P("- `adapter.gguf`: the LoRA adapter alone, for llama.cpp's `--lora` on top of a base GGUF with the same tensor\n"
          "  names (`base.gguf`, written by `osstune-export --model BASE_DIR --out DIR --only base`).\n");
    if (present & OT_EXPORT_MODELFILE)
        P("- `Modelfile` (Mandarin -> Taiwanese Hokkien) and `Modelfile.nan2zh` (Taiwanese Hokkien -> Mandarin): Ollama.\n"
          "  `Modelfile.zh2tl`, `Modelfile.tl2zh`, `Modelfile.nan2tl`, `Modelfile.tl2nan`: the same with Tâi-lô\n"
          "  romanization (Mandarin <-> Tâi-lô, Han characters <-> Tâi-lô).\n");
    if (present & OT_EXPORT_PEFT) P("- `peft/`: the adapter for transformers + PEFT (`adapter_config.json`, `adapter_model.safetensors`).\n");
    P("\nThe prompt is the harmony conversation the model was trained on: a fixed system message, the developer\n"
      "instruction naming the direction, the source text as the user message. The model answers on the `final`\n"
      "channel and ends with `<|return|>`.\n");
    if (present & OT_EXPORT_MODELFILE)
        P("\n## Ollama\n\n```sh\n"
          "ollama create %s-zh2nan -f Modelfile\n"
          "ollama run %s-zh2nan \"今天天氣很好。\"\n"
          "ollama create %s-nan2zh -f Modelfile.nan2zh\n"
          "ollama run %s-nan2zh \"今仔日天氣真好。\"\n```\n\n"
          "The developer instruction is the Modelfile's SYSTEM text, so one model also serves the other direction with\n"
          "`/set system <text>` in `ollama run` or the `system` field of `/api/generate`. For the unmerged variant\n"
          "(`base.gguf` + `ADAPTER ./adapter.gguf`, commented out in the Modelfile) Ollama must run gpt-oss through\n"
          "llama.cpp; check that your Ollama version accepts `ADAPTER` for gpt-oss.\n",
          name, name, name, name);
    if (present & (OT_EXPORT_MODEL | OT_EXPORT_ADAPTER | OT_EXPORT_BASE)) {
        P("\n## llama.cpp\n\n"
          "The GGUF files carry a chat template that renders the same prompt (use `--jinja`); a leading system message\n"
          "becomes the developer instruction (default: Mandarin -> Taiwanese Hokkien).\n\n```sh\n");
        if (present & OT_EXPORT_MODEL)
            P("llama-server -m model.gguf --jinja --port 8080\n"
              "curl http://localhost:8080/v1/chat/completions -H 'Content-Type: application/json' -d '{\"messages\": [\n"
              "  {\"role\": \"system\", \"content\": \"%s\"},\n"
              "  {\"role\": \"user\", \"content\": \"今天天氣很好。\"}]}'\n",
              OT_HARMONY_INSTRUCTION_ZH2NAN);
        if (present & OT_EXPORT_ADAPTER)
            P("%s# the base model plus the adapter, unmerged (scale alpha/r, as in training)%s:\n"
              "llama-server -m base.gguf --lora adapter.gguf --jinja --port 8080\n"
              "llama-cli -m base.gguf --lora adapter.gguf --jinja -sys \"%s\"\n",
              present & OT_EXPORT_MODEL ? "\n" : "", present & OT_EXPORT_BASE ? "" : "; write base.gguf with --only base",
              OT_HARMONY_INSTRUCTION_ZH2NAN);
        if ((present & OT_EXPORT_BASE) && !(present & OT_EXPORT_ADAPTER))
            P("llama-server -m base.gguf --jinja --port 8080    # the base model alone\n");
        P("```\n");
    }
    if (present & OT_EXPORT_PEFT)
        P("\n## transformers + PEFT\n\n```python\n"
          "from transformers import AutoModelForCausalLM\n"
          "from peft import PeftModel\n"
          "base = AutoModelForCausalLM.from_pretrained(\"BASE_DIR\", torch_dtype=\"bfloat16\")\n"
          "model = PeftModel.from_pretrained(base, \"peft\")\n```\n");
#undef P
    if (n >= cap) ot_die("README text longer than its buffer");
    return s;
}

// Whether `text` is a README an earlier export wrote for the outputs now in OUT_DIR (its name is on its first line;
// only the expert storage line depends on what that export itself wrote), i.e. one nobody has edited since.
static int is_earlier_readme(const char *text, unsigned present) {
    const char *colon = strstr(text, ": gpt-oss fine-tuned with osstune");
    if (strncmp(text, "# ", 2) != 0 || !colon || colon - text > 80) return 0;
    char name[96];
    snprintf(name, sizeof name, "%.*s", (int)(colon - text - 2), text + 2);
    const struct {
        unsigned written;
        ot_ggml_type type;
    } earlier[] = {{present, OT_GGML_BF16}, {present, OT_GGML_Q8_0}, {present & ~OT_EXPORT_MODEL, OT_GGML_BF16}};
    int same = 0;
    for (size_t i = 0; i < sizeof earlier / sizeof earlier[0] && !same; i++) {
        char *t = ot_export_readme_text(name, present, earlier[i].written, earlier[i].type);
        same = strcmp(t, text) == 0;
        free(t);
    }
    return same;
}

// Whether the Modelfile or README.md at rel, holding `text`, is what osstune-export writes there.
static int is_ours(const char *rel, const char *text, unsigned present) {
    for (int d = 0; d < OT_N_DIRECTIONS; d++)
        if (!strcmp(rel, ot_directions[d].modelfile)) {
            char *want = ot_modelfile_text((ot_direction)d);
            int same = strcmp(text, want) == 0;
            free(want);
            return same;
        }
    return is_earlier_readme(text, present);
}

// GGUF and peft/ files are what an export makes: a new export replaces them. Text files may have been edited.
int ot_export_check_outputs(const char *out_dir, unsigned outputs, int force, const ot_path_role *inputs, int n_inputs,
                            ot_err *err) {
    int rc = 0;
    struct stat st;
    char *peft = ot_path_join(out_dir, "peft");
    if ((outputs & OT_EXPORT_PEFT) && stat(peft, &st) == 0 && !S_ISDIR(st.st_mode))
        rc = ot_fail(err, "%s exists and is not a directory", peft);
    free(peft);
    const unsigned before = ot_export_outputs_present(out_dir);
    for (size_t i = 0; i < N_OUT_FILES && !rc; i++) {
        if (!written_by(i, outputs)) continue;
        char *p = ot_path_join(out_dir, out_files[i].rel);
        rc = ot_check_output("--out", p, inputs, n_inputs, err);
        const int text_file = out_files[i].bit == OT_EXPORT_MODELFILE || out_files[i].bit == 0;
        if (!rc && text_file && !force && access(p, F_OK) == 0) {
            char *old = ot_read_file(p, NULL, err);
            if (!old) rc = -1;
            else if (!is_ours(out_files[i].rel, old, before))
                rc = ot_fail(err, "%s differs from what osstune-export writes (edited?): it is kept; move it away, or "
                             "pass --force to replace it", p);
            free(old);
        }
        free(p);
    }
    return rc;
}

// ---- staging and commit ---------------------------------------------------------------------------------------------
static int ensure_dir(const char *dir, ot_err *err) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return ot_fail(err, "%s exists and is not a directory", dir);
        return 0;
    }
    if (mkdir(dir, 0755) != 0) return ot_fail(err, "cannot create the output directory %s: %s", dir, strerror(errno));
    return 0;
}

// Staging directories of exports that were killed (their process is gone) hold nothing anyone needs.
static void remove_stale_stages(const char *out_dir) {
    DIR *d = opendir(out_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long pid = 0;
        int used = 0;
        if (sscanf(e->d_name, ".osstune-export-%ld.tmp%n", &pid, &used) != 1 || e->d_name[used] || pid <= 0) continue;
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; // still at work
        char *p = ot_path_join(out_dir, e->d_name);
        struct stat st;
        ot_err ignored;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            ot_remove_tree(p, &ignored);
            ot_warn("removed %s, left by an interrupted export (process %ld is gone)", p, pid);
        }
        free(p);
    }
    if (d) closedir(d);
}

char *ot_export_stage_begin(const char *out_dir, int *created, ot_err *err) {
    struct stat st;
    *created = stat(out_dir, &st) != 0;
    if (ensure_dir(out_dir, err)) return NULL;
    remove_stale_stages(out_dir);
    char name[64];
    snprintf(name, sizeof name, ".osstune-export-%ld.tmp", (long)getpid());
    char *stage = ot_path_join(out_dir, name);
    if (mkdir(stage, 0755) != 0) {
        ot_fail(err, "cannot write to the output directory %s: %s", out_dir, strerror(errno));
        free(stage);
        if (*created) rmdir(out_dir);
        return NULL;
    }
    return stage;
}

int ot_export_stage_commit(const char *stage, const char *out_dir, unsigned outputs, int *committed, ot_err *err) {
    int rc = 0;
    if (outputs & OT_EXPORT_PEFT) {
        char *p = ot_path_join(out_dir, "peft");
        rc = ensure_dir(p, err);
        free(p);
    }
    for (size_t i = 0; i < N_OUT_FILES && !rc; i++) {
        if (!written_by(i, outputs)) continue;
        char *from = ot_path_join(stage, out_files[i].rel), *to = ot_path_join(out_dir, out_files[i].rel);
        if (rename(from, to) != 0) rc = ot_fail(err, "cannot move %s to %s: %s", from, to, strerror(errno));
        else *committed = 1;
        free(from);
        free(to);
    }
    if (!rc && (outputs & OT_EXPORT_PEFT)) {
        char *p = ot_path_join(out_dir, "peft");
        rc = ot_fsync_dir(p, err);
        free(p);
    }
    return rc ? rc : ot_fsync_dir(out_dir, err);
}

void ot_export_print_written(const char *program, const char *out_dir, unsigned outputs) {
    for (size_t i = 0; i < N_OUT_FILES; i++) {
        if (!written_by(i, outputs)) continue;
        char *p = ot_path_join(out_dir, out_files[i].rel);
        struct stat st;
        if (stat(p, &st) == 0) printf("%s: wrote %s (%.1f MB)\n", program, p, st.st_size / 1e6);
        free(p);
    }
}
