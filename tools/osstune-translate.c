// osstune-translate: translate sentences between Mandarin and Taiwanese Hokkien with a gpt-oss model (and a LoRA
// adapter), one output line per input line; with --ref, score the outputs (chrF2, char-BLEU-4) next to the
// copy-the-source baseline and print the scores as one JSON line.
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/run_dir.h"
#include "formats/utf8.h"
#include "trainer/model/backend.h"
#include "infer/decode_cpu.h"
#include "infer/score.h"
#ifdef OT_HAVE_CUDA
#include "infer/decode_cuda.h"
#endif

#define PROG "osstune-translate"
#define PROGRESS_EVERY_S 10.0

static void usage(FILE *f) {
    fprintf(f,
            "usage: " PROG " --model DIR --direction D [options]\n"
            "       " PROG " --direction D --ref FILE --hyp FILE    (score existing outputs)\n"
            "\n"
            "Translates each input line with the gpt-oss model in DIR (plus a PEFT adapter) and prints one output\n"
            "line per input line. The prompt is the harmony conversation osstune-prep trains on, ending at\n"
            "<|start|>assistant; decoding is greedy unless --temperature is given, and stops at <|return|>, at\n"
            "<|call|> or after --max-new-tokens tokens.\n"
            "\n"
            "Input: one source sentence per line; or a TSV whose header names the direction's source and target\n"
            "columns (or `zh` and `nan`), in which case the source column of the direction is read (zh for zh2nan,\n"
            "nan for nan2zh, nan_tl for tl2zh, ...).\n"
            "\n"
            "Output: the text of the final channel. If the model writes an analysis message first\n"
            "(<|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final<|message|>...), it is\n"
            "skipped. If it writes a message without a channel, its content is printed; if it writes no header at\n"
            "all, everything it wrote up to the stop token. An output cut by the token limit before any final or\n"
            "unlabelled message is an empty line. Line breaks inside an output become spaces.\n"
            "\n"
            "  --model DIR          base model directory (HF layout: config.json + safetensors)\n"
            "  --adapter DIR        PEFT adapter directory (adapter_config.json + adapter_model.safetensors)\n"
            "  --tokenizer PATH     tokenizer.json or o200k_base .tiktoken file (default: DIR/tokenizer.json;\n"
            "                       this repository ships data/o200k_base.tiktoken)\n"
            "  --direction D        zh2nan (Mandarin -> Taiwanese Hokkien in Han characters), nan2zh, zh2tl\n"
            "                       (Mandarin -> Tâi-lô), tl2zh, nan2tl (Han characters -> Tâi-lô) or tl2nan;\n"
            "                       source -> target columns: zh->nan, nan->zh, zh->nan_tl, nan_tl->zh, nan->nan_tl,\n"
            "                       nan_tl->nan\n"
            "  --in FILE            input (default: standard input; '-' also means standard input)\n"
            "  --ref FILE           TSV with the direction's source and target columns (zh, nan, nan_tl; and\n"
            "                       optionally `source`), row i the reference\n"
            "                       of input line i. Scores the outputs and the copy-the-source baseline (the\n"
            "                       direction's source column of FILE taken as the output) and prints, as the last\n"
            "                       line, one JSON object: {\"direction\", \"count\", \"chrf\", \"bleu\", \"copy_chrf\",\n"
            "                       \"copy_bleu\"} plus \"by_source\": {NAME: {the same}} when FILE has a `source` column.\n"
            "                       chrF2: sacreBLEU's default chrF (character 1..6-grams, beta 2, whitespace\n"
            "                       removed, corpus statistics); BLEU: sacreBLEU BLEU with tokenize=char (every\n"
            "                       non-space character a token, corpus level, brevity penalty, exp smoothing).\n"
            "  --hyp FILE           score the outputs in FILE (one per line) against --ref instead of translating\n"
            "  --backend B          cpu (default: the float32 reference, one sentence at a time, with a KV cache and\n"
            "                       the shared prompt prefix computed once), cuda (batched decoding on the GPU: bf16\n"
            "                       activations, a KV cache per sentence) or auto (cuda when this build has CUDA and a\n"
            "                       GPU is visible, else cpu)\n"
            "  --batch-size N       cuda: sentences decoded together (default 32); a finished sentence's place is\n"
            "                       taken by the next input at once. The cpu backend decodes one at a time.\n"
            "  --gpu-memory-limit SIZE  cuda: allocate as on a card with SIZE of memory (e.g. 24GiB, 16G); what would\n"
            "                       pass it is refused with a message (lower --batch-size or --max-new-tokens)\n"
            "  --max-new-tokens N   generated tokens per sentence at most (default 512)\n"
            "  --temperature T      0 = greedy (default); > 0 samples from softmax(logits / T)\n"
            "  --top-p P            with --temperature: sample from the smallest set of tokens whose probability\n"
            "                       reaches P (default 1)\n"
            "  --seed S             sampling seed (default 0); sentence i always gets the same random stream\n"
            "  --limit N            translate only the first N inputs\n"
            "  -h, --help           this text\n"
            "\n"
            "A progress line goes to standard error every %.0f s, and a summary at the end.\n",
            PROGRESS_EVERY_S);
}

// Errors end the program: exit status 1 for what went wrong, 2 for a bad command line (with a pointer to --help).
static void vexit(int status, const char *fmt, va_list ap) __attribute__((noreturn));
static void vexit(int status, const char *fmt, va_list ap) {
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, status == 2 ? " (see --help)\n" : "\n");
    exit(status);
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vexit(1, fmt, ap);
}

static void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vexit(2, fmt, ap);
}

// ---- reading text files ---------------------------------------------------------------------------------------
typedef struct {
    char **v;
    long *line; // 1-based line number in its file
    long n, cap;
} text_list;

static void list_push(text_list *l, const char *s, long line) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = ot_realloc(l->v, sizeof(char *) * (size_t)l->cap);
        l->line = ot_realloc(l->line, sizeof(long) * (size_t)l->cap);
    }
    l->v[l->n] = ot_strdup(s);
    l->line[l->n++] = line;
}

static void list_free(text_list *l) {
    for (long i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    free(l->line);
    memset(l, 0, sizeof *l);
}

// Every line of the file without its "\n" / "\r\n" (and without a UTF-8 byte-order mark on the first line).
static text_list read_lines(const char *path) {
    int use_stdin = !path || strcmp(path, "-") == 0;
    FILE *f = use_stdin ? stdin : fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    text_list l = {0};
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') line[--len] = 0;
        if (len > 0 && line[len - 1] == '\r') line[--len] = 0;
        char *s = line;
        if (l.n == 0 && strncmp(s, "\xEF\xBB\xBF", 3) == 0) s += 3;
        if (memchr(line, 0, (size_t)len))
            die("%s:%ld: the line contains a NUL byte", use_stdin ? "<stdin>" : path, l.n + 1);
        list_push(&l, s, l.n + 1);
    }
    if (ferror(f)) die("reading %s failed: %s", use_stdin ? "<stdin>" : path, strerror(errno));
    free(line);
    if (!use_stdin) fclose(f);
    return l;
}

// Field `col` of a tab-separated line, copied into a new string; NULL when the line has fewer fields.
static char *tsv_field(const char *line, int col) {
    for (int i = 0; i < col; i++) {
        line = strchr(line, '\t');
        if (!line) return NULL;
        line++;
    }
    size_t n = strcspn(line, "\t");
    char *s = ot_malloc(n + 1);
    memcpy(s, line, n);
    s[n] = 0;
    return s;
}

static int tsv_column(const char *header, const char *name) {
    for (int col = 0;; col++) {
        char *f = tsv_field(header, col);
        if (!f) return -1;
        int hit = strcmp(f, name) == 0;
        free(f);
        if (hit) return col;
    }
}

static int tsv_n_fields(const char *line) {
    int n = 1;
    for (; *line; line++) n += *line == '\t';
    return n;
}

// Column `col` of every data row of a TSV whose header is lines.v[0].
static text_list tsv_column_values(const text_list *lines, int col, const char *path) {
    text_list out = {0};
    for (long i = 1; i < lines->n; i++) {
        char *f = tsv_field(lines->v[i], col);
        if (!f)
            die("%s:%ld: the row has %d fields, but the header names column %d", path, lines->line[i],
                tsv_n_fields(lines->v[i]), col + 1);
        list_push(&out, f, lines->line[i]);
        free(f);
    }
    return out;
}

static void check_utf8(const text_list *l, const char *path) {
    for (long i = 0; i < l->n; i++) {
        size_t bad;
        if (!ot_utf8_valid(l->v[i], strlen(l->v[i]), NULL, &bad))
            die("%s:%ld: not valid UTF-8 (byte %zu)", path, l->line[i], bad + 1);
    }
}

// The TSV columns of a direction (formats/directions.h).
static const char *source_column(ot_direction dir) { return ot_column_name(ot_directions[dir].source); }
static const char *target_column(ot_direction dir) { return ot_column_name(ot_directions[dir].target); }

// The sentences to translate: plain lines, or the direction's source column of a corpus TSV (a header naming the
// direction's two columns, or zh and nan).
static text_list read_sources(const char *path, ot_direction dir, long limit) {
    const char *name = path && strcmp(path, "-") ? path : "<stdin>";
    text_list lines = read_lines(path), out = {0};
    int is_tsv = lines.n > 0 && ((tsv_column(lines.v[0], "zh") >= 0 && tsv_column(lines.v[0], "nan") >= 0) ||
                                 (tsv_column(lines.v[0], source_column(dir)) >= 0 &&
                                  tsv_column(lines.v[0], target_column(dir)) >= 0));
    if (is_tsv) {
        int col = tsv_column(lines.v[0], source_column(dir));
        if (col < 0)
            die("%s:1: --direction %s reads the `%s` column, which the header does not name", name,
                ot_direction_name(dir), source_column(dir));
        out = tsv_column_values(&lines, col, name);
        list_free(&lines);
    } else {
        out = lines;
    }
    if (limit >= 0 && out.n > limit) {
        for (long i = limit; i < out.n; i++) free(out.v[i]);
        out.n = limit;
    }
    check_utf8(&out, name);
    return out;
}

typedef struct {
    text_list source, target, group; // group: the `source` column (empty when absent)
} ref_table;

static ref_table read_refs(const char *path, ot_direction dir, long limit) {
    text_list lines = read_lines(path);
    if (lines.n == 0) die("%s: empty file (expected a TSV header with `zh` and `nan` columns)", path);
    int c_src = tsv_column(lines.v[0], source_column(dir)), c_tgt = tsv_column(lines.v[0], target_column(dir));
    if (c_src < 0 || c_tgt < 0)
        die("%s:1: the header must name a `%s` and a `%s` column (tab-separated) for --direction %s", path,
            source_column(dir), target_column(dir), ot_direction_name(dir));
    int c_group = tsv_column(lines.v[0], "source");
    ref_table r = {0};
    r.source = tsv_column_values(&lines, c_src, path);
    r.target = tsv_column_values(&lines, c_tgt, path);
    if (c_group >= 0) r.group = tsv_column_values(&lines, c_group, path);
    list_free(&lines);
    text_list *cols[3] = {&r.source, &r.target, &r.group};
    for (int k = 0; k < 3; k++) {
        if (limit >= 0 && cols[k]->n > limit) {
            for (long i = limit; i < cols[k]->n; i++) free(cols[k]->v[i]);
            cols[k]->n = limit;
        }
        check_utf8(cols[k], path);
    }
    return r;
}

// ---- scoring ------------------------------------------------------------------------------------------------------
static void add_scores(json_t *obj, const ot_score_stats *sys, const ot_score_stats *copy) {
    json_object_set_new(obj, "count", json_integer(sys->count));
    json_object_set_new(obj, "chrf", json_real(ot_score_chrf(sys)));
    json_object_set_new(obj, "bleu", json_real(ot_score_bleu(sys)));
    json_object_set_new(obj, "copy_chrf", json_real(ot_score_chrf(copy)));
    json_object_set_new(obj, "copy_bleu", json_real(ot_score_bleu(copy)));
}

// The JSON report line for outputs hyp[i] against the references (and the copy baseline from the ref file's own
// source column), overall and per value of the `source` column.
static char *score_report(const text_list *hyp, const ref_table *ref, ot_direction dir) {
    ot_score_stats sys, copy;
    ot_score_init(&sys);
    ot_score_init(&copy);
    long n_groups = 0;
    const char **group_name = ot_calloc((size_t)ref->group.n + 1, sizeof(char *));
    ot_score_stats *group_sys = ot_calloc((size_t)ref->group.n + 1, sizeof(ot_score_stats));
    ot_score_stats *group_copy = ot_calloc((size_t)ref->group.n + 1, sizeof(ot_score_stats));
    for (long i = 0; i < hyp->n; i++) {
        ot_score_stats one_sys, one_copy;
        ot_score_init(&one_sys);
        ot_score_init(&one_copy);
        const char *h = hyp->v[i], *src = ref->source.v[i], *tgt = ref->target.v[i];
        ot_score_add(&one_sys, h, strlen(h), tgt, strlen(tgt));
        ot_score_add(&one_copy, src, strlen(src), tgt, strlen(tgt));
        ot_score_merge(&sys, &one_sys);
        ot_score_merge(&copy, &one_copy);
        if (ref->group.n) {
            long g = 0;
            while (g < n_groups && strcmp(group_name[g], ref->group.v[i])) g++;
            if (g == n_groups) group_name[n_groups++] = ref->group.v[i]; // first-seen order
            ot_score_merge(&group_sys[g], &one_sys);
            ot_score_merge(&group_copy[g], &one_copy);
        }
    }
    json_t *root = json_object();
    json_object_set_new(root, "direction", json_string(ot_direction_name(dir)));
    add_scores(root, &sys, &copy);
    if (ref->group.n) {
        json_t *by = json_object();
        for (long g = 0; g < n_groups; g++) {
            json_t *one = json_object();
            add_scores(one, &group_sys[g], &group_copy[g]);
            json_object_set_new(by, group_name[g], one);
        }
        json_object_set_new(root, "by_source", by);
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    free(group_name);
    free(group_sys);
    free(group_copy);
    return text;
}

// ---- options ------------------------------------------------------------------------------------------------------
typedef struct {
    const char *model, *adapter, *tokenizer, *in, *ref, *hyp, *backend;
    int direction, batch_size;
    long limit;
    uint64_t seed, gpu_memory_limit;
    ot_gen_options gen;
} options;

static long parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) usage_error("%s: '%s' is not an integer in %ld..%ld", opt, s, lo, hi);
    return v;
}

static double parse_double(const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) usage_error("%s: '%s' is not a number", opt, s);
    return v;
}

static options parse_args(int argc, char **argv) {
    options o = {.backend = "cpu", .direction = -1, .limit = -1, .batch_size = 32};
    ot_gen_options_default(&o.gen);
    enum { O_TOK = 256, O_MAXNEW, O_TEMP, O_TOPP, O_SEED, O_LIMIT, O_HYP, O_BATCH, O_GPU_MEM };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},        {"adapter", required_argument, 0, 'a'},
        {"tokenizer", required_argument, 0, O_TOK},  {"direction", required_argument, 0, 'd'},
        {"in", required_argument, 0, 'i'},           {"ref", required_argument, 0, 'r'},
        {"hyp", required_argument, 0, O_HYP},        {"backend", required_argument, 0, 'b'},
        {"max-new-tokens", required_argument, 0, O_MAXNEW}, {"temperature", required_argument, 0, O_TEMP},
        {"top-p", required_argument, 0, O_TOPP},     {"seed", required_argument, 0, O_SEED},
        {"limit", required_argument, 0, O_LIMIT},    {"help", no_argument, 0, 'h'},
        {"batch-size", required_argument, 0, O_BATCH}, {"gpu-memory-limit", required_argument, 0, O_GPU_MEM},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model = optarg; break;
        case 'a': o.adapter = optarg; break;
        case O_TOK: o.tokenizer = optarg; break;
        case 'd':
            if ((o.direction = ot_direction_parse(optarg)) < 0)
                usage_error("--direction: '%s' is not one of %s", optarg, ot_direction_names());
            break;
        case 'i': o.in = optarg; break;
        case 'r': o.ref = optarg; break;
        case O_HYP: o.hyp = optarg; break;
        case 'b': o.backend = optarg; break;
        case O_MAXNEW: o.gen.max_new_tokens = (int)parse_long("--max-new-tokens", optarg, 1, 1 << 20); break;
        case O_TEMP:
            o.gen.temperature = (float)parse_double("--temperature", optarg);
            if (o.gen.temperature < 0) usage_error("--temperature: %s must be >= 0", optarg);
            break;
        case O_TOPP:
            o.gen.top_p = (float)parse_double("--top-p", optarg);
            if (!(o.gen.top_p > 0 && o.gen.top_p <= 1)) usage_error("--top-p: %s must be in (0, 1]", optarg);
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                usage_error("--seed: '%s' is not an unsigned integer", optarg);
            o.seed = v;
            break;
        }
        case O_LIMIT: o.limit = parse_long("--limit", optarg, 0, 0x7fffffffL); break;
        case O_BATCH: o.batch_size = (int)parse_long("--batch-size", optarg, 1, 4096); break;
        case O_GPU_MEM:
            if (ot_parse_size(optarg, &o.gpu_memory_limit))
                usage_error("--gpu-memory-limit: '%s' is not a size (e.g. 24GiB, 16G, 8000MiB)", optarg);
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) usage_error("unexpected argument '%s'", argv[optind]);
    if (o.direction < 0) usage_error("--direction is required");
    if (o.hyp) {
        if (!o.ref) usage_error("--hyp needs --ref (the references to score against)");
        if (o.model || o.in) usage_error("--hyp scores existing outputs: it takes no --model or --in");
        return o;
    }
    if (!o.model) usage_error("--model is required");
    if (strcmp(o.backend, "cpu") && strcmp(o.backend, "cuda") && strcmp(o.backend, "auto"))
        usage_error("--backend: unknown backend '%s' (cpu, cuda or auto)", o.backend);
    ot_backend which;
    ot_err err;
    if (ot_backend_resolve(o.backend, &which, &err)) die("%s", err.msg);
    o.backend = ot_backend_name(which);
    if (o.gpu_memory_limit && which != OT_BACKEND_CUDA)
        usage_error("--gpu-memory-limit is for the cuda backend; this run uses the %s backend", o.backend);
    // A checkpoint of a run is used only as it was written (its COMPLETE marker's sizes and hashes).
    if (ot_run_ckpt_verify_files(o.model, "--model", &err) ||
        (o.adapter && ot_run_ckpt_verify_files(o.adapter, "--adapter", &err)))
        die("%s", err.msg);
    return o;
}

// The tokenizer: --tokenizer, else the model directory's tokenizer.json.
static ot_tokenizer *load_tokenizer(const options *o) {
    ot_err err;
    char path[4096];
    const char *from = o->tokenizer;
    if (!from) {
        snprintf(path, sizeof path, "%s/tokenizer.json", o->model);
        if (access(path, R_OK) != 0)
            die("%s has no tokenizer.json; pass --tokenizer PATH (a tokenizer.json, or an o200k_base .tiktoken file "
                "such as data/o200k_base.tiktoken in the osstune repository)", o->model);
        from = o->model;
    }
    ot_tokenizer *tok = ot_tokenizer_load(from, &err);
    if (!tok) die("%s", err.msg);
    return tok;
}

// ---- translating --------------------------------------------------------------------------------------------------
// Totals over the run, for the progress lines and the summary.
typedef struct {
    long done, total, at_limit, no_answer, new_tokens, reused, prompt_tokens;
    double t0, last_report;
} run_stats;

static void account(run_stats *r, const ot_translation *t) {
    r->done++;
    r->at_limit += t->stop == OT_STOP_LIMIT;
    r->no_answer += t->answer == OT_ANSWER_NONE;
    r->new_tokens += t->new_tokens;
    r->reused += t->reused_tokens;
    r->prompt_tokens += t->prompt_tokens;
    double now = ot_now_seconds();
    if (now - r->last_report >= PROGRESS_EVERY_S && r->done < r->total) {
        fprintf(stderr, PROG ": %ld/%ld sentences, %.0f s, %.1f new tokens/s\n", r->done, r->total, now - r->t0,
                r->new_tokens / (now - r->t0));
        r->last_report = now;
    }
}

static void summary(const run_stats *r, const char *backend, const options *o) {
    double secs = ot_now_seconds() - r->t0;
    fprintf(stderr,
            PROG ": %ld sentences in %.1f s (%s backend): %ld new tokens (%.1f/s); %ld of %ld prompt tokens taken "
            "from the cache",
            r->total, secs, backend, r->new_tokens, secs > 0 ? r->new_tokens / secs : 0.0, r->reused,
            r->prompt_tokens);
    if (r->at_limit) fprintf(stderr, "; %ld hit --max-new-tokens %d", r->at_limit, o->gen.max_new_tokens);
    if (r->no_answer) fprintf(stderr, "; %ld gave no final-channel answer (empty line)", r->no_answer);
    fprintf(stderr, "\n");
}

static void check_vocab(const options *o, const ot_model_config *cfg, const ot_tokenizer *tok) {
    if (cfg->vocab_size != ot_tokenizer_vocab_size(tok))
        die("%s: the model's vocabulary has %d ids, the tokenizer %s has %d; a gpt-oss model and the o200k_harmony "
            "tokenizer must agree", o->model, cfg->vocab_size, ot_tokenizer_file(tok), ot_tokenizer_vocab_size(tok));
}

// The CPU reference: one sentence after another, re-using the cached prompt prefix.
static text_list translate_cpu(const options *o, const text_list *src, const char *in_name, const ot_harmony *h) {
    ot_err err;
    ot_model m;
    if (ot_model_load(&m, o->model, &err)) die("%s", err.msg);
    check_vocab(o, &m.cfg, h->tok);
    ot_lora lo, *lop = NULL;
    if (o->adapter) {
        if (ot_lora_load_peft(&lo, &m.cfg, o->adapter, &err)) die("%s", err.msg);
        lop = &lo;
    }
    ot_decoder dec;
    if (ot_decoder_open_cpu(&dec, &m, lop, &err)) die("%s", err.msg);

    text_list out = {0};
    run_stats r = {.total = src->n, .t0 = ot_now_seconds()};
    r.last_report = r.t0;
    for (long i = 0; i < src->n; i++) {
        ot_translation t;
        if (ot_translate(&dec, h, (ot_direction)o->direction, src->v[i], strlen(src->v[i]), &o->gen, o->seed, i, &t,
                         &err))
            die("%s:%ld: %s", in_name, src->line[i], err.msg);
        printf("%s\n", t.text);
        fflush(stdout);
        list_push(&out, t.text, src->line[i]);
        account(&r, &t);
        free(t.text);
    }
    summary(&r, dec.backend, o);
    ot_decoder_close(&dec);
    if (lop) ot_lora_free(&lo);
    ot_model_free(&m);
    return out;
}

#ifdef OT_HAVE_CUDA
// Prompt tokens per step on top of one token per sentence: a batch of prompts is computed in steps of this many
// tokens (bounds the activation workspace: about 100 KiB per token on the 20b shape).
#define CUDA_PREFILL_TOKENS 2048

// Sentences finish out of order; they are printed in input order, each as soon as all before it are done.
typedef struct {
    ot_translation *t;
    char *ready;
    long next_print;
    const text_list *src;
    text_list *out;
    run_stats *stats;
} in_order;

// --gpu-memory-limit, as on a card of that size: the decoder's own buffers were refused past it when allocated, but
// what CUDA and its libraries take at first use (kernels' code, their workspaces) comes on top, unseen there; so the
// memory in use is compared with the limit whenever a sentence is done, before it is printed.
static void check_gpu_limit(long done) {
    const size_t limit = ot_cuda_memory_limit();
    if (!limit) return;
    ot_err err;
    char when[48];
    snprintf(when, sizeof when, "after %ld sentence%s", done, done == 1 ? "" : "s");
    if (ot_check_gpu_memory_limit(ot_cuda_memory_in_use(), limit, when,
                                  "raise the limit, or decode fewer sentences at a time (--batch-size)", &err))
        die("%s", err.msg);
}

static void on_done(void *user, long index, const ot_translation *t) {
    in_order *p = user;
    check_gpu_limit(p->stats->done + 1);
    p->ready[index] = 1;
    account(p->stats, t);
    while (p->next_print < p->src->n && p->ready[p->next_print]) {
        ot_translation *u = &p->t[p->next_print];
        printf("%s\n", u->text);
        list_push(p->out, u->text, p->src->line[p->next_print]);
        free(u->text);
        u->text = NULL;
        p->next_print++;
    }
    fflush(stdout);
}

// Batched decoding on the GPU (infer/decode_cuda.h, infer/generate_batch.h).
static text_list translate_cuda(const options *o, const text_list *src, const char *in_name, const ot_harmony *h) {
    ot_err err;
    text_list out = {0};
    // Prompts first: the cache is sized from the longest.
    ot_ids *prompts = ot_calloc((size_t)src->n + 1, sizeof(ot_ids));
    for (long i = 0; i < src->n; i++)
        if (ot_harmony_render_prompt(h, (ot_direction)o->direction, src->v[i], strlen(src->v[i]), &prompts[i], &err))
            die("%s:%ld: %s", in_name, src->line[i], err.msg);
    ot_cuda_model cm;
    if (ot_cuda_set_memory_limit(o->gpu_memory_limit, &err)) die("%s", err.msg); // (0: the card's own)
    if (ot_cuda_model_load(&cm, o->model, 0, &err)) die("%s", err.msg);
    check_vocab(o, &cm.cfg, h->tok);
    ot_lora lo, *lop = NULL;
    if (o->adapter) {
        if (ot_lora_load_peft(&lo, &cm.cfg, o->adapter, &err)) die("%s", err.msg);
        lop = &lo;
    }
    run_stats r = {.total = src->n, .t0 = ot_now_seconds()};
    r.last_report = r.t0;
    if (src->n > 0) {
        for (long i = 0; i < src->n; i++) // as ot_generate refuses it on the cpu backend
            if ((long)prompts[i].n + o->gen.max_new_tokens > cm.cfg.max_position_embeddings)
                die("%s:%ld: generate: a prompt of %d tokens plus %d new ones passes the model's %d positions", in_name,
                    src->line[i], prompts[i].n, o->gen.max_new_tokens, cm.cfg.max_position_embeddings);
        int max_len = ot_batch_max_len(prompts, src->n, &o->gen);
        int slots = src->n < o->batch_size ? (int)src->n : o->batch_size;
        ot_batch_decoder dec;
        if (ot_batch_decoder_open_cuda(&dec, &cm, lop, slots, max_len, slots + CUDA_PREFILL_TOKENS, &err))
            die("%s", err.msg);
        fprintf(stderr, PROG ": cuda backend: %d sentences at a time, KV cache %.2f GiB (%d positions each)\n", slots,
                (double)ot_cuda_decoder_cache_bytes(&cm.cfg, slots, max_len) / (1u << 30), max_len);
        in_order p = {ot_calloc((size_t)src->n, sizeof(ot_translation)), ot_calloc((size_t)src->n, 1), 0, src, &out,
                      &r};
        if (ot_translate_batch(&dec, h, prompts, src->n, &o->gen, o->seed, p.t, on_done, &p, &err))
            die("%s: %s", in_name, err.msg);
        summary(&r, dec.backend, o);
        char used[32], lim[32];
        const size_t in_use = ot_cuda_memory_in_use();
        fprintf(stderr, PROG ": cuda backend: %s of GPU memory in use at the end (%zu MiB)%s%s\n",
                ot_format_size(used, sizeof used, in_use), in_use >> 20,
                o->gpu_memory_limit ? ", under --gpu-memory-limit " : "",
                o->gpu_memory_limit ? ot_format_size(lim, sizeof lim, o->gpu_memory_limit) : "");
        ot_batch_decoder_close(&dec);
        free(p.t);
        free(p.ready);
    } else {
        summary(&r, "cuda", o);
    }
    for (long i = 0; i < src->n; i++) ot_ids_free(&prompts[i]);
    free(prompts);
    if (lop) ot_lora_free(&lo);
    ot_cuda_model_free(&cm);
    return out;
}
#endif

static text_list translate_all(const options *o, const text_list *src, const char *in_name) {
    ot_err err;
    ot_tokenizer *tok = load_tokenizer(o);
    ot_harmony h;
    if (ot_harmony_init(&h, tok, NULL, NULL, NULL, &err)) die("%s", err.msg);
    text_list out;
#ifdef OT_HAVE_CUDA
    if (strcmp(o->backend, "cuda") == 0)
        out = translate_cuda(o, src, in_name, &h);
    else
#endif
        out = translate_cpu(o, src, in_name, &h);
    ot_harmony_free(&h);
    ot_tokenizer_free(tok);
    return out;
}

int main(int argc, char **argv) {
    options o = parse_args(argc, argv);
    ot_direction dir = (ot_direction)o.direction;
    ref_table ref = {0};
    if (o.ref) ref = read_refs(o.ref, dir, o.limit);

    text_list hyp;
    const char *hyp_name;
    if (o.hyp) {
        hyp = read_lines(o.hyp);
        hyp_name = o.hyp;
        if (o.limit >= 0 && hyp.n > o.limit) {
            for (long i = o.limit; i < hyp.n; i++) free(hyp.v[i]);
            hyp.n = o.limit;
        }
        check_utf8(&hyp, o.hyp);
    } else {
        const char *in_name = o.in && strcmp(o.in, "-") ? o.in : "<stdin>";
        text_list src = read_sources(o.in, dir, o.limit);
        if (o.ref && src.n != ref.target.n) // checked before the (slow) translation starts
            die("%s has %ld reference rows but %s has %ld inputs%s", o.ref, ref.target.n, in_name, src.n,
                o.limit >= 0 ? " (after --limit)" : "");
        if (o.ref)
            for (long i = 0; i < src.n; i++)
                if (strcmp(src.v[i], ref.source.v[i])) {
                    fprintf(stderr,
                            PROG ": warning: %s:%ld differs from the %s column of %s:%ld; the copy baseline uses "
                            "%s's column\n",
                            in_name, src.line[i], source_column(dir), o.ref, ref.source.line[i], o.ref);
                    break;
                }
        hyp = translate_all(&o, &src, in_name);
        hyp_name = in_name;
        list_free(&src);
    }

    if (o.ref) {
        if (hyp.n != ref.target.n)
            die("%s has %ld reference rows but %s has %ld lines%s", o.ref, ref.target.n, hyp_name, hyp.n,
                o.limit >= 0 ? " (after --limit)" : "");
        if (hyp.n == 0) die("nothing to score: %s has no rows", o.ref);
        char *report = score_report(&hyp, &ref, dir);
        printf("%s\n", report);
        free(report);
        list_free(&ref.source);
        list_free(&ref.target);
        list_free(&ref.group);
    }
    list_free(&hyp);
    if (fflush(stdout) != 0 || ferror(stdout)) die("writing standard output failed: %s", strerror(errno));
    return 0;
}
