// osstune-prep: translation pairs (TSV or JSONL) -> tokenized harmony samples in an HDF5 file for osstune-train.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/harmony.h"
#include "formats/pairs_h5.h"
#include "formats/pairs_input.h"
#include "formats/tokenizer.h"

static const char usage[] =
    "usage: osstune-prep --tokenizer PATH --in FILE --out FILE.h5 [options]\n"
    "\n"
    "Renders every pair as harmony training samples (docs/data-format.md), one per direction asked for, and\n"
    "writes them, tokenized, to an HDF5 file. The output appears only when everything succeeded (it is written\n"
    "under a temporary name).\n"
    "\n"
    "  --tokenizer PATH     a model directory (its tokenizer.json), a tokenizer.json, or an o200k .tiktoken file\n"
    "  --in FILE            pairs: TSV with a header naming zh and nan columns (others ignored), or JSONL\n"
    "                       objects with zh and nan keys (.jsonl; other names: '{' first means JSONL); the\n"
    "                       Tâi-lô directions also read the nan_tl column / key\n"
    "  --out FILE.h5        the output file\n"
    "  --directions D       both (default: per pair, zh2nan then nan2zh), all (the six below, in this order), or\n"
    "                       a comma-separated list of: zh2nan, nan2zh (Mandarin <-> Taiwanese in Han\n"
    "                       characters), zh2tl, tl2zh (Mandarin <-> Tâi-lô), nan2tl, tl2nan (Han characters <->\n"
    "                       Tâi-lô); per pair, the samples follow the order given\n"
    "  --max-chars N        a side longer than N characters is a bad line (default 4096; 0 = no limit)\n"
    "  --skip-bad           skip bad lines instead of stopping; they go to the rejects file with the reason\n"
    "  --rejects FILE       where --skip-bad writes rejected lines (default: FILE.h5.rejects.tsv)\n"
    "  --system TEXT        system message text (default: the harmony default with 'Reasoning: low')\n"
    "  --instruction-NAME TEXT\n"
    "                       the developer instruction of direction NAME (--instruction-zh2nan, ...; defaults:\n"
    "                       see docs/data-format.md)\n"
    "  --quiet              no progress line\n"
    "  --help               this text\n"
    "\n"
    "A bad line (missing column or key, empty or blank side, invalid UTF-8, a side over --max-chars, bad JSON)\n"
    "stops the run with FILE:LINE and the reason, exit status 1, and no output file -- unless --skip-bad is given.\n"
    "An output never replaces an input (--in, --tokenizer) or anything but a regular file. SIGINT, SIGTERM and\n"
    "SIGHUP remove the unfinished output; temporary files of killed runs are removed by the next run\n"
    "(docs/failure-policy.md).\n";

#define PROGRESS_MIN_BYTES (4 << 20) // smaller inputs take well under a second: no progress line

typedef struct {
    const char *tokenizer, *in, *out, *directions, *rejects, *system, *instr[OT_N_DIRECTIONS];
    long max_chars;
    int skip_bad, quiet;
    ot_direction dirs[OT_N_DIRECTIONS]; // the directions of --directions, in its order
    int n_dirs;
} options;

static void usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "osstune-prep: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(osstune-prep --help for usage)\n");
    exit(2);
}

static options parse_args(int argc, char **argv) {
    options o = {.directions = "both", .max_chars = 4096};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        }
        if (strcmp(a, "--skip-bad") == 0) {
            o.skip_bad = 1;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            o.quiet = 1;
            continue;
        }
        const char **slot = strcmp(a, "--tokenizer") == 0    ? &o.tokenizer
                            : strcmp(a, "--in") == 0         ? &o.in
                            : strcmp(a, "--out") == 0        ? &o.out
                            : strcmp(a, "--directions") == 0 ? &o.directions
                            : strcmp(a, "--rejects") == 0    ? &o.rejects
                            : strcmp(a, "--system") == 0     ? &o.system
                                                             : NULL;
        if (!slot && strncmp(a, "--instruction-", 14) == 0) {
            int d = ot_direction_parse(a + 14);
            if (d < 0) usage_error("unknown argument '%s' (--instruction-NAME takes a direction name)", a);
            slot = &o.instr[d];
        }
        const char *max_chars = NULL;
        if (!slot && strcmp(a, "--max-chars") == 0) slot = &max_chars;
        if (!slot) usage_error("unknown argument '%s'", a);
        if (i + 1 >= argc) usage_error("%s needs a value", a);
        *slot = argv[++i];
        if (max_chars) {
            char *end;
            o.max_chars = strtol(max_chars, &end, 10);
            if (*end || end == max_chars || o.max_chars < 0) usage_error("--max-chars wants a number >= 0, not '%s'", max_chars);
        }
    }
    if (!o.tokenizer) usage_error("%s", "--tokenizer is required");
    if (!o.in) usage_error("%s", "--in is required");
    if (!o.out) usage_error("%s", "--out is required");
    char why[160];
    if ((o.n_dirs = ot_directions_parse_list(o.directions, o.dirs, why)) < 0) usage_error("--directions: %s", why);
    return o;
}

// Everything that must be cleaned up when the run fails part-way: no output file may be left behind.
static ot_pairs_h5_writer *g_writer;
static FILE *g_rejects;
static char *g_rejects_tmp;
// SIGINT / SIGTERM / SIGHUP only set this; the loop notices it between lines and leaves through fail(), which
// removes the temporary files (HDF5 may not be called from a signal handler).
static volatile sig_atomic_t g_signal;

static void on_signal(int sig) { g_signal = sig; }

static void fail(const char *msg) {
    if (g_signal) fprintf(stderr, "osstune-prep: interrupted (%s); nothing written\n", strsignal(g_signal));
    else fprintf(stderr, "osstune-prep: error: %s\n", msg);
    ot_pairs_h5_abort(g_writer);
    if (g_rejects) {
        fclose(g_rejects);
        unlink(g_rejects_tmp);
    }
    if (g_signal) { // die of the signal, as a shell expects of an interrupted program
        signal(g_signal, SIG_DFL);
        raise(g_signal);
    }
    exit(1);
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

// The reason without the "FILE:LINE: " prefix (the rejects file has the line in its own column).
static const char *reason_only(const char *msg, const char *path) {
    size_t n = strlen(path);
    if (strncmp(msg, path, n) == 0 && msg[n] == ':') {
        const char *p = strchr(msg + n + 1, ':');
        if (p && p[1] == ' ') return p + 2;
    }
    return msg;
}

int main(int argc, char **argv) {
    options o = parse_args(argc, argv);
    double t0 = ot_now_seconds();
    ot_err err = {{0}};
    char msg[2 * OT_ERR_LEN];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; // no SA_RESTART: a read blocked on a pipe returns, and the loop sees the flag
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    // The outputs may replace neither an input nor each other, nor anything but a regular file.
    char *rejects_path = NULL;
    if (o.skip_bad) {
        rejects_path = o.rejects ? ot_strdup(o.rejects) : ot_malloc(strlen(o.out) + 16);
        if (!o.rejects) sprintf(rejects_path, "%s.rejects.tsv", o.out);
    }
    const char *rejects_role = o.rejects ? "--rejects" : "the rejects file";
    const ot_path_role out_inputs[] = {{"--in", o.in}, {"--tokenizer", o.tokenizer}, {rejects_role, rejects_path}};
    const ot_path_role rejects_inputs[] = {{"--in", o.in}, {"--tokenizer", o.tokenizer}, {"--out", o.out}};
    if (ot_check_output("--out", o.out, out_inputs, 3, &err) ||
        (rejects_path && ot_check_output(rejects_role, rejects_path, rejects_inputs, 3, &err)))
        fail(err.msg);

    ot_tokenizer *tok = ot_tokenizer_load(o.tokenizer, &err);
    if (!tok) fail(err.msg);
    ot_harmony h;
    if (ot_harmony_init_all(&h, tok, o.system, o.instr, &err) != 0) fail(err.msg);
    unsigned columns = 0; // the columns the directions read: only those must be present and valid
    for (int k = 0; k < o.n_dirs; k++)
        columns |= 1u << ot_directions[o.dirs[k]].source | 1u << ot_directions[o.dirs[k]].target;
    ot_pairs_reader *in = ot_pairs_open_columns(o.in, o.max_chars, columns, &err);
    if (!in) fail(err.msg);
    struct stat st;
    double in_bytes = stat(o.in, &st) == 0 ? (double)st.st_size : 0;

    ot_pairs_h5_meta meta = {.tokenizer_sha256 = ot_tokenizer_sha256(tok),
                             .tokenizer_vocab_size = (uint32_t)ot_tokenizer_vocab_size(tok),
                             .system_text = h.system,
                             .directions = o.directions,
                             .source_file = base_name(o.in)};
    meta.instruction[OT_ZH2NAN] = h.instruction[OT_ZH2NAN]; // always recorded, as before the Tâi-lô directions
    meta.instruction[OT_NAN2ZH] = h.instruction[OT_NAN2ZH];
    for (int k = 0; k < o.n_dirs; k++) meta.instruction[o.dirs[k]] = h.instruction[o.dirs[k]];
    g_writer = ot_pairs_h5_create(o.out, &meta, &err);
    if (!g_writer) fail(err.msg);

    if (rejects_path) {
        ot_remove_stale_temps(rejects_path);
        g_rejects_tmp = ot_temp_path_pid(rejects_path);
        int fd = ot_open_temp(rejects_path, g_rejects_tmp, &err);
        if (fd < 0) fail(err.msg);
        if (!(g_rejects = fdopen(fd, "wb"))) {
            snprintf(msg, sizeof msg, "cannot create rejects file %s: %s", g_rejects_tmp, strerror(errno));
            close(fd);
            unlink(g_rejects_tmp);
            fail(msg);
        }
        fprintf(g_rejects, "line\treason\tinput\n");
    }

    ot_ids ids = {0};
    ot_pair p;
    uint64_t n_pairs = 0, n_rejected = 0;
    double next_report_bytes = in_bytes / 10, next_report_time = ot_now_seconds() + 2.0;
    int tty = isatty(2), printed_progress = 0;
    for (;;) {
        if (g_signal) fail("interrupted");
        int got = ot_pairs_next(in, &p, &err);
        if (got == OT_PAIRS_END) break;
        if (got < 0) fail(err.msg);
        int bad = got == OT_PAIRS_BAD;
        // Render every direction of the pair before writing any, so a bad pair contributes nothing.
        int loss_start[OT_N_DIRECTIONS], len[OT_N_DIRECTIONS];
        ids.n = 0;
        for (int k = 0; !bad && k < o.n_dirs; k++) {
            ot_direction dir = o.dirs[k];
            int before = ids.n;
            const ot_direction_info *di = &ot_directions[dir];
            if (ot_harmony_render_sample(&h, dir, p.text[di->source], p.len[di->source], p.text[di->target],
                                         p.len[di->target], &ids, &loss_start[k], &err) != 0) {
                ot_err why = err;
                ot_fail(&err, "%s:%ld: %s", o.in, p.line, why.msg);
                bad = 1;
            }
            len[k] = ids.n - before;
        }
        if (bad) {
            if (!o.skip_bad) fail(err.msg);
            fprintf(g_rejects, "%ld\t%s\t%s\n", p.line, reason_only(err.msg, o.in), ot_pairs_last_line(in));
            n_rejected++;
            continue;
        }
        for (int k = 0, at = 0; k < o.n_dirs; at += len[k], k++)
            if (ot_pairs_h5_append(g_writer, ids.v + at, len[k], (uint32_t)loss_start[k], (uint8_t)o.dirs[k],
                                   (uint64_t)p.line, &err) != 0)
                fail(err.msg);
        n_pairs++;
        // Progress on large inputs: every tenth of the file or every 2 seconds, whichever comes first.
        if (!o.quiet && in_bytes >= PROGRESS_MIN_BYTES && (n_pairs & 255) == 0) {
            double done = (double)ot_pairs_bytes_read(in), now = ot_now_seconds();
            if (done >= next_report_bytes || now >= next_report_time) {
                next_report_bytes = done + in_bytes / 10;
                next_report_time = now + 2.0;
                fprintf(stderr, "%sosstune-prep: %3.0f%% of %s, %llu pairs, %llu samples, %.1f s%s", tty ? "\r" : "",
                        100.0 * done / in_bytes, base_name(o.in), (unsigned long long)n_pairs,
                        (unsigned long long)ot_pairs_h5_written_samples(g_writer), now - t0, tty ? "" : "\n");
                printed_progress = 1;
            }
        }
    }
    if (printed_progress && tty) fprintf(stderr, "\n");
    ot_pairs_close(in);
    if (n_pairs == 0) {
        snprintf(msg, sizeof msg, "%s: no usable pairs (%llu lines rejected)", o.in, (unsigned long long)n_rejected);
        fail(msg);
    }
    if (g_signal) fail("interrupted");
    uint64_t n_samples = ot_pairs_h5_written_samples(g_writer), n_tokens = ot_pairs_h5_written_tokens(g_writer);
    ot_pairs_h5_writer *w = g_writer;
    g_writer = NULL; // finish frees it, on success and on failure
    if (ot_pairs_h5_finish(w, n_pairs, n_rejected, &err) != 0) fail(err.msg);
    if (g_rejects) {
        int bad_close = fclose(g_rejects) != 0;
        g_rejects = NULL;
        if (bad_close || rename(g_rejects_tmp, rejects_path) != 0) {
            snprintf(msg, sizeof msg, "cannot write rejects file %s: %s", rejects_path, strerror(errno));
            unlink(g_rejects_tmp);
            unlink(o.out); // all or nothing: the data file without its rejects list would hide the skipped lines
            fail(msg);
        }
    }

    printf("osstune-prep: wrote %s: %llu samples, %llu tokens from %llu pairs (%s, %s) in %.1f s\n", o.out,
           (unsigned long long)n_samples, (unsigned long long)n_tokens, (unsigned long long)n_pairs, o.directions,
           base_name(o.in), ot_now_seconds() - t0);
    if (o.skip_bad)
        printf("osstune-prep: %llu bad lines skipped, listed in %s\n", (unsigned long long)n_rejected, rejects_path);
    printf("osstune-prep: tokenizer %s, sha256 %s\n", ot_tokenizer_file(tok), ot_tokenizer_sha256(tok));
    ot_ids_free(&ids);
    ot_harmony_free(&h);
    ot_tokenizer_free(tok);
    free(rejects_path);
    free(g_rejects_tmp);
    return 0;
}
