// osstune-logits: run a base model (and optionally a PEFT adapter) on a token sequence, write the logits and
// print the mean next-token loss — the quickest way to check that a checkpoint loads and computes what
// transformers computes.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/run_dir.h"
#include "trainer/graph/gptoss_cpu.h"
#include "trainer/model/backend.h"
#ifdef OT_HAVE_CUDA
#include "trainer/graph/gptoss_cuda.h"
#endif

static void usage(FILE *f) {
    fprintf(f,
            "usage: osstune-logits --model DIR --tokens ID,ID,... --out FILE [--adapter PEFT_DIR] [--backend auto|cpu|cuda]\n"
            "\n"
            "Runs the gpt-oss model in DIR (HF layout: config.json + safetensors shards) on the given token ids and\n"
            "writes float32 little-endian logits [T, vocab] to FILE. Prints one JSON line: {\"loss\": mean next-token\n"
            "cross-entropy over the T-1 positions, \"tokens\": T, \"vocab\": V, \"seconds\": ...}.\n"
            "\n"
            "  --model DIR        base model directory\n"
            "  --adapter DIR      PEFT adapter directory (adapter_config.json + adapter_model.safetensors)\n"
            "  --tokens LIST      comma-separated token ids (at least 1)\n"
            "  --out FILE         where to write the logits ('-' = do not write; a FIFO is written into)\n"
            "  --backend B        cpu (the float32 reference), cuda (bf16 activations on the GPU) or auto (the\n"
            "                     default: cuda when this build has CUDA and a GPU is visible, else cpu)\n"
            "  -h, --help         this text\n");
}

static int parse_tokens(const char *s, int32_t **out, int vocab_hint) {
    int cap = 64, n = 0;
    int32_t *ids = ot_malloc(sizeof(int32_t) * (size_t)cap);
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 0x7fffffffL) {
            fprintf(stderr, "osstune-logits: --tokens: '%s' is not a comma-separated list of token ids\n", s);
            exit(2);
        }
        if (n == cap) ids = ot_realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
        ids[n++] = (int32_t)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) {
            fprintf(stderr, "osstune-logits: --tokens: unexpected '%c' in '%s'\n", *p, s);
            exit(2);
        }
    }
    (void)vocab_hint;
    *out = ids;
    return n;
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *adapter_dir = NULL, *tokens = NULL, *out_path = NULL, *backend = NULL;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},   {"adapter", required_argument, 0, 'a'},
                                         {"tokens", required_argument, 0, 't'},  {"out", required_argument, 0, 'o'},
                                         {"backend", required_argument, 0, 'b'}, {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'a': adapter_dir = optarg; break;
        case 't': tokens = optarg; break;
        case 'o': out_path = optarg; break;
        case 'b': backend = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "osstune-logits: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model_dir || !tokens || !out_path) {
        fprintf(stderr, "osstune-logits: --model, --tokens and --out are required (see --help)\n");
        return 2;
    }
    ot_backend which;
    ot_err err;
    if (ot_backend_resolve(backend, &which, &err)) {
        fprintf(stderr, "osstune-logits: %s\n", err.msg);
        return 2;
    }
    backend = ot_backend_name(which);
    const int use_cuda = which == OT_BACKEND_CUDA;
    double t0 = ot_now_seconds();
    // The logits replace neither an input nor anything but a regular file; a FIFO is written into (a reader waits
    // on it), never replaced.
    struct stat out_st;
    const int write_out = strcmp(out_path, "-") != 0;
    const int to_fifo = write_out && stat(out_path, &out_st) == 0 && S_ISFIFO(out_st.st_mode);
    const ot_path_role inputs[] = {{"--model", model_dir}, {"--adapter", adapter_dir}};
    if (write_out && !to_fifo && ot_check_output("--out", out_path, inputs, 2, &err)) {
        fprintf(stderr, "osstune-logits: %s\n", err.msg);
        return 1;
    }
    // A checkpoint of a run is used only as it was written (its COMPLETE marker's sizes and hashes).
    if (ot_run_ckpt_verify_files(model_dir, "--model", &err) ||
        (adapter_dir && ot_run_ckpt_verify_files(adapter_dir, "--adapter", &err))) {
        fprintf(stderr, "osstune-logits: %s\n", err.msg);
        return 1;
    }
    ot_model m;
    memset(&m, 0, sizeof m);
#ifdef OT_HAVE_CUDA
    ot_cuda_model cm;
    memset(&cm, 0, sizeof cm);
    if (use_cuda) {
        if (ot_cuda_model_load(&cm, model_dir, 0, &err)) {
            fprintf(stderr, "osstune-logits: %s\n", err.msg);
            return 1;
        }
        m.cfg = cm.cfg; // the adapter's layout needs only the config
    }
#endif
    if (!use_cuda && ot_model_load(&m, model_dir, &err)) {
        fprintf(stderr, "osstune-logits: %s\n", err.msg);
        return 1;
    }
    ot_lora lo, *lop = NULL;
    if (adapter_dir) {
        if (ot_lora_load_peft(&lo, &m.cfg, adapter_dir, &err)) {
            fprintf(stderr, "osstune-logits: %s\n", err.msg);
            return 1;
        }
        lop = &lo;
    }
    int32_t *ids;
    int T = parse_tokens(tokens, &ids, m.cfg.vocab_size);
    const int V = m.cfg.vocab_size;
    for (int i = 0; i < T; i++)
        if (ids[i] >= V) {
            fprintf(stderr, "osstune-logits: token id %d (position %d) is outside the vocabulary of %d\n", ids[i], i, V);
            return 1;
        }
    if (T < 1) {
        fprintf(stderr, "osstune-logits: --tokens is empty\n");
        return 2;
    }
    ot_batch b;
    ot_batch_init(&b);
    ot_batch_add_sample(&b, ids, T, 0);
    float *logits = ot_malloc(sizeof(float) * (size_t)T * V);
    ot_cpu_workspace *ws = ot_cpu_workspace_new();
    if (use_cuda) {
#ifdef OT_HAVE_CUDA
        ot_cuda_run_options ro = {.forward_only = 1};
        ot_cuda_ctx *ctx = ot_cuda_ctx_new(&cm, lop, &ro, T, b.n_targets);
        int rc = ot_cuda_logits(ctx, &b, logits, &err);
        ot_cuda_ctx_free(ctx);
        if (rc) {
            fprintf(stderr, "osstune-logits: %s\n", err.msg);
            return 1;
        }
#endif
    } else {
        ot_cpu_logits(&m, lop, &b, logits, ws);
    }

    // Mean next-token cross-entropy over the T-1 positions, from the logits themselves (double precision).
    double loss = 0;
    for (int t = 0; t + 1 < T; t++) {
        const float *row = logits + (size_t)t * V;
        double mx = row[0], s = 0;
        for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
        for (int j = 0; j < V; j++) s += exp((double)row[j] - mx);
        loss += mx + log(s) - row[ids[t + 1]];
    }
    if (T > 1) loss /= (T - 1);

    const size_t out_bytes = sizeof(float) * (size_t)T * V;
    if (to_fifo) {
        FILE *f = fopen(out_path, "wb");
        int ok = f && fwrite(logits, 1, out_bytes, f) == out_bytes;
        if (f) ok &= fclose(f) == 0;
        if (!ok) {
            fprintf(stderr, "osstune-logits: writing to the FIFO %s failed: %s\n", out_path, strerror(errno));
            return 1;
        }
    } else if (write_out && ot_write_file_atomic(out_path, logits, out_bytes, &err)) {
        fprintf(stderr, "osstune-logits: %s\n", err.msg);
        return 1;
    }
    char loss_text[64];
    if (T > 1) snprintf(loss_text, sizeof loss_text, "%.8f", loss);
    else snprintf(loss_text, sizeof loss_text, "null"); // no next-token position to score
    printf("{\"loss\": %s, \"tokens\": %d, \"vocab\": %d, \"adapter\": %s, \"backend\": \"%s\", \"seconds\": %.3f}\n",
           loss_text, T, V, adapter_dir ? "true" : "false", backend, ot_now_seconds() - t0);
    free(logits);
    free(ids);
    ot_batch_free(&b);
    ot_cpu_workspace_free(ws);
    if (lop) ot_lora_free(lop);
    ot_model_free(&m);
#ifdef OT_HAVE_CUDA
    if (cm.arena) ot_cuda_model_free(&cm);
#endif
    return 0;
}
