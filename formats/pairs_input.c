// TSV / JSONL pair reader. Every message starts with "FILE:LINE:" so that a user can jump to the offending line.
#include "formats/pairs_input.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "formats/utf8.h"

struct ot_pairs_reader {
    char *path;
    FILE *f;
    int jsonl;
    long max_chars;
    int col_zh, col_nan, n_cols; // TSV column indices
    char *line;  // the line as read (kept intact for the caller's rejects file)
    size_t line_cap;
    size_t line_len;
    char *work;  // TSV: a copy of the line, split in place
    size_t work_cap;
    long lineno;
    long bytes;
    char *zh, *nan; // JSONL: copies of the strings (the JSON value is freed per line)
};

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

// Reads the next line into r->line without its "\n" / "\r\n". 1 = a line, 0 = end of file, -1 = read error or
// a NUL byte inside the line (text files have none; it would silently cut a field short).
static int read_line(ot_pairs_reader *r, ot_err *err) {
    errno = 0;
    ssize_t got = getline(&r->line, &r->line_cap, r->f);
    if (got < 0) {
        if (ferror(r->f)) return ot_fail(err, "%s:%ld: read error: %s", r->path, r->lineno + 1, strerror(errno));
        return 0;
    }
    r->lineno++;
    r->bytes += got;
    if (got > 0 && r->line[got - 1] == '\n') r->line[--got] = 0;
    if (got > 0 && r->line[got - 1] == '\r') r->line[--got] = 0;
    r->line_len = (size_t)got;
    if (strlen(r->line) != r->line_len) return ot_fail(err, "%s:%ld: line contains a NUL byte", r->path, r->lineno);
    return 1;
}

ot_pairs_reader *ot_pairs_open(const char *path, long max_chars, ot_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ot_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    ot_pairs_reader *r = ot_calloc(1, sizeof *r);
    r->path = ot_strdup(path);
    r->f = f;
    r->max_chars = max_chars;
    if (ends_with(path, ".jsonl") || ends_with(path, ".json")) r->jsonl = 1;
    else if (!ends_with(path, ".tsv")) {
        int c = fgetc(f);
        r->jsonl = c == '{';
        if (c != EOF) ungetc(c, f);
    }
    if (r->jsonl) return r;

    int got = read_line(r, err);
    if (got <= 0) {
        if (got == 0) ot_fail(err, "%s: empty file; expected a header line naming the zh and nan columns", path);
        ot_pairs_close(r);
        return NULL;
    }
    char *h = r->line;
    if ((unsigned char)h[0] == 0xef && (unsigned char)h[1] == 0xbb && (unsigned char)h[2] == 0xbf) h += 3;
    r->col_zh = r->col_nan = -1;
    int col = 0;
    for (char *name = h, *tab;; name = tab + 1, col++) {
        tab = strchr(name, '\t');
        if (tab) *tab = 0;
        int *slot = strcmp(name, "zh") == 0 ? &r->col_zh : strcmp(name, "nan") == 0 ? &r->col_nan : NULL;
        if (slot && *slot >= 0) {
            ot_fail(err, "%s:1: the header names column '%s' twice", path, name);
            ot_pairs_close(r);
            return NULL;
        }
        if (slot) *slot = col;
        if (!tab) break;
    }
    r->n_cols = col + 1;
    if (r->col_zh < 0 || r->col_nan < 0) {
        ot_fail(err, "%s:1: the header has no '%s' column; expected a tab-separated header naming zh and nan", path,
                r->col_zh < 0 ? "zh" : "nan");
        ot_pairs_close(r);
        return NULL;
    }
    return r;
}

// The checks every side of a pair must pass.
static int check_side(const ot_pairs_reader *r, const char *name, const char *s, size_t len, ot_err *err) {
    if (len == 0) return ot_fail(err, "%s:%ld: empty %s", r->path, r->lineno, name);
    size_t chars, bad_at;
    if (!ot_utf8_valid(s, len, &chars, &bad_at))
        return ot_fail(err, "%s:%ld: %s is not valid UTF-8 (byte %zu of the field)", r->path, r->lineno, name, bad_at);
    if (r->max_chars > 0 && (long)chars > r->max_chars)
        return ot_fail(err, "%s:%ld: %s has %zu characters, over the limit of %ld", r->path, r->lineno, name, chars,
                       r->max_chars);
    return 0;
}

static int next_tsv(ot_pairs_reader *r, ot_pair *p, ot_err *err) {
    if (r->line_len + 1 > r->work_cap) {
        r->work_cap = r->line_len + 1;
        r->work = ot_realloc(r->work, r->work_cap);
    }
    memcpy(r->work, r->line, r->line_len + 1);
    // Split the copy in place; fields beyond the two we need are left alone.
    const char *field[2] = {NULL, NULL};
    size_t flen[2] = {0, 0};
    int col = 0, want_max = r->col_zh > r->col_nan ? r->col_zh : r->col_nan;
    for (char *s = r->work, *tab; col <= want_max; s = tab + 1, col++) {
        tab = strchr(s, '\t');
        size_t len = tab ? (size_t)(tab - s) : strlen(s);
        if (col == r->col_zh) field[0] = s, flen[0] = len;
        if (col == r->col_nan) field[1] = s, flen[1] = len;
        if (!tab) {
            col++;
            break;
        }
    }
    if (!field[0] || !field[1])
        return ot_fail(err, "%s:%ld: missing column '%s' (the line has %d tab-separated fields, the header %d)", r->path,
                       r->lineno, field[0] ? "nan" : "zh", col, r->n_cols);
    // Terminate the two fields (after locating both, since terminating one may cut the line before the other).
    ((char *)field[0])[flen[0]] = 0;
    ((char *)field[1])[flen[1]] = 0;
    if (check_side(r, "zh", field[0], flen[0], err) || check_side(r, "nan", field[1], flen[1], err)) return -1;
    p->zh = field[0], p->zh_len = flen[0];
    p->nan = field[1], p->nan_len = flen[1];
    return 0;
}

static int next_jsonl(ot_pairs_reader *r, ot_pair *p, ot_err *err) {
    size_t bad_at;
    if (!ot_utf8_valid(r->line, r->line_len, NULL, &bad_at))
        return ot_fail(err, "%s:%ld: not valid UTF-8 (byte %zu of the line)", r->path, r->lineno, bad_at);
    json_error_t je;
    json_t *obj = json_loadb(r->line, r->line_len, 0, &je);
    if (!obj) return ot_fail(err, "%s:%ld: not valid JSON: %s (column %d)", r->path, r->lineno, je.text, je.column);
    int rc = 0;
    const char *names[2] = {"zh", "nan"};
    char **dst[2] = {&r->zh, &r->nan};
    size_t len[2] = {0, 0};
    if (!json_is_object(obj)) {
        rc = ot_fail(err, "%s:%ld: not a JSON object", r->path, r->lineno);
        goto done;
    }
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(obj, names[k]);
        if (!v) {
            rc = ot_fail(err, "%s:%ld: missing key '%s'", r->path, r->lineno, names[k]);
            goto done;
        }
        if (!json_is_string(v)) {
            rc = ot_fail(err, "%s:%ld: '%s' is not a string", r->path, r->lineno, names[k]);
            goto done;
        }
        len[k] = json_string_length(v);
        free(*dst[k]);
        *dst[k] = ot_malloc(len[k] + 1);
        memcpy(*dst[k], json_string_value(v), len[k] + 1);
    }
    // jansson refuses \u0000 by default, so the strings hold no NUL and strlen agrees with len.
    if (check_side(r, "zh", r->zh, len[0], err) || check_side(r, "nan", r->nan, len[1], err)) {
        rc = -1;
        goto done;
    }
    p->zh = r->zh, p->zh_len = len[0];
    p->nan = r->nan, p->nan_len = len[1];
done:
    json_decref(obj);
    return rc;
}

int ot_pairs_next(ot_pairs_reader *r, ot_pair *p, ot_err *err) {
    int got = read_line(r, err);
    p->line = r->lineno;
    if (got < 0) return ferror(r->f) ? -1 : OT_PAIRS_BAD; // a NUL byte makes the line bad, not the file
    if (got == 0) return OT_PAIRS_END;
    if (r->line_len == 0) {
        ot_fail(err, "%s:%ld: empty line", r->path, r->lineno);
        return OT_PAIRS_BAD;
    }
    int rc = r->jsonl ? next_jsonl(r, p, err) : next_tsv(r, p, err);
    return rc == 0 ? OT_PAIRS_OK : OT_PAIRS_BAD;
}

const char *ot_pairs_format(const ot_pairs_reader *r) { return r->jsonl ? "jsonl" : "tsv"; }

const char *ot_pairs_last_line(const ot_pairs_reader *r) { return r->line ? r->line : ""; }

long ot_pairs_bytes_read(const ot_pairs_reader *r) { return r->bytes; }

void ot_pairs_close(ot_pairs_reader *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
    free(r->path);
    free(r->line);
    free(r->work);
    free(r->zh);
    free(r->nan);
    free(r);
}
