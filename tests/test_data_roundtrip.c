// decode(encode(x)) == x for every field of every line of the taigi corpus (*.tsv in the corpus directory), and
// the encoder's speed on that text (mostly Han characters), reported in MB/s.
//
// usage: test_data_roundtrip [CORPUS_DIR]   (default ../shared/data/taigi; falls back to data/sample)
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "formats/tokenizer.h"
#include "tests/test_util.h"

// CPU time of this process: the speed figure should not depend on what else the machine is running.
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int has_tsv(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) n += strlen(e->d_name) > 4 && strcmp(e->d_name + strlen(e->d_name) - 4, ".tsv") == 0;
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "../shared/data/taigi";
    if (argc < 2 && !has_tsv(dir)) {
        printf("note: corpus directory %s not found; using the bundled sample data/sample instead\n", dir);
        dir = "data/sample";
    }
    CHECK(has_tsv(dir), "no .tsv files in %s", dir);
    ot_err err = {{0}};
    ot_tokenizer *tok = ot_tokenizer_load("data/o200k_base.tiktoken", &err);
    CHECK(tok != NULL, "load tokenizer: %s", err.msg);
    if (!tok) return ot_test_finish("test_data_roundtrip");

    DIR *d = opendir(dir);
    struct dirent *e;
    long fields = 0, failures = 0;
    double bytes = 0, seconds = 0, han_bytes = 0, han_seconds = 0; // han: the zh and nan columns
    ot_ids ids = {0};
    while (d && (e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (nl <= 4 || strcmp(e->d_name + nl - 4, ".tsv") != 0) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        CHECK(f != NULL, "cannot open %s", path);
        if (!f) continue;
        char *line = NULL;
        size_t cap = 0;
        ssize_t got;
        long lineno = 0;
        while ((got = getline(&line, &cap, f)) >= 0) {
            lineno++;
            if (got > 0 && line[got - 1] == '\n') line[--got] = 0;
            int col = 0;
            for (char *field = line, *tab;; field = tab + 1, col++) { // every column: zh, nan, source, nan_tl
                tab = strchr(field, '\t');
                size_t len = tab ? (size_t)(tab - field) : strlen(field);
                ids.n = 0;
                double t0 = cpu_seconds();
                int rc = ot_tokenizer_encode(tok, field, len, &ids, &err);
                double dt = cpu_seconds() - t0;
                seconds += dt;
                bytes += (double)len;
                if (col < 2 && lineno > 1) han_seconds += dt, han_bytes += (double)len;
                size_t dlen = 0;
                char *back = rc == 0 ? ot_tokenizer_decode(tok, ids.v, ids.n, &dlen, &err) : NULL;
                if (!back || dlen != len || memcmp(back, field, len) != 0) {
                    if (failures++ < 10) fprintf(stderr, "FAIL %s:%ld: round trip of \"%.*s\"\n", path, lineno, (int)len, field);
                }
                free(back);
                fields++;
                if (!tab) break;
            }
        }
        free(line);
        fclose(f);
    }
    if (d) closedir(d);
    CHECK(failures == 0, "%ld of %ld fields did not round-trip", failures, fields);
    CHECK(fields > 0, "no fields read from %s", dir);
    printf("%s: %ld fields round-trip exactly\n", dir, fields);
    printf("encode speed (CPU time, one core): all columns %.1f MB/s (%.1f MB in %.2f s); zh+nan columns (Han text) %.1f MB/s "
           "(%.1f MB)\n", bytes / 1e6 / seconds, bytes / 1e6, seconds, han_bytes / 1e6 / han_seconds, han_bytes / 1e6);
    ot_ids_free(&ids);
    ot_tokenizer_free(tok);
    return ot_test_finish("test_data_roundtrip");
}
