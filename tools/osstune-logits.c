// osstune-logits: run a base model (and optionally a PEFT adapter) on a token sequence, write the logits and
// print the mean next-token loss — the quickest way to check that a checkpoint loads and computes what
// transformers computes.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer/gptoss_cpu.h"
#ifdef OT_HAVE_CUDA
#include "trainer/gptoss_cuda.h"
#endif

static void usage(FILE *f) {
    fprintf(f,
            "usage: osstune-logits --model DIR --tokens ID,ID,... --out FILE [--adapter PEFT_DIR] [--backend cpu|cuda]\n"
            "\n"
            "Runs the gpt-oss model in DIR (HF layout: config.json + safetensors shards) on the given token ids and\n"
            "writes float32 little-endian logits [T, vocab] to FILE. Prints one JSON line: {\"loss\": mean next-token\n"
            "cross-entropy over the T-1 positions, \"tokens\": T, \"vocab\": V, \"seconds\": ...}.\n"
            "\n"
            "  --model DIR        base model directory\n"
            "  --adapter DIR      PEFT adapter directory (adapter_config.json + adapter_model.safetensors)\n"
            "  --tokens LIST      comma-separated token ids (at least 1)\n"
            "  --out FILE         where to write the logits ('-' = do not write)\n"
            "  --backend B        cpu (the float32 reference) or cuda (bf16 activations on the GPU); default: cuda\n"
            "                     when this build has CUDA and a GPU is visible, else cpu\n"
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
#ifdef OT_HAVE_CUDA
    if (!backend) backend = ot_cuda_device_count() > 0 ? "cuda" : "cpu";
#else
    if (!backend) backend = "cpu";
#endif
    if (strcmp(backend, "cpu") != 0 && strcmp(backend, "cuda") != 0) {
        fprintf(stderr, "osstune-logits: --backend must be cpu or cuda, not '%s'\n", backend);
        return 2;
    }
    const int use_cuda = strcmp(backend, "cuda") == 0;
#ifndef OT_HAVE_CUDA
    if (use_cuda) {
        fprintf(stderr, "osstune-logits: --backend cuda: this build has no CUDA (no nvcc at build time); use --backend cpu\n");
        return 2;
    }
#endif
    double t0 = ot_now_seconds();
    ot_err err;
    ot_model m;
    memset(&m, 0, sizeof m);
#ifdef OT_HAVE_CUDA
    ot_cuda_model cm;
    memset(&cm, 0, sizeof cm);
    if (use_cuda) {
        if (ot_cuda_device_count() < 1) {
            fprintf(stderr, "osstune-logits: --backend cuda: no CUDA device is visible\n");
            return 1;
        }
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
        ot_cuda_run_options ro = {0, 0};
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

    if (strcmp(out_path, "-") != 0) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
        FILE *f = fopen(tmp, "wb");
        if (!f) {
            fprintf(stderr, "osstune-logits: cannot write %s: %s\n", tmp, strerror(errno));
            return 1;
        }
        size_t n = (size_t)T * V;
        int ok = fwrite(logits, sizeof(float), n, f) == n;
        ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
        ok &= fclose(f) == 0;
        if (!ok || rename(tmp, out_path) != 0) {
            fprintf(stderr, "osstune-logits: writing %s failed: %s\n", out_path, strerror(errno));
            unlink(tmp);
            return 1;
        }
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
