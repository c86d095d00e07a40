// TSV / JSONL pair reader. Every message starts with "FILE:LINE:" so that a user can jump to the offending line.
#include "formats/pairs_input.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "formats/utf8.h"

struct ot_pairs_reader {
    char *path;
    FILE *f;
    int jsonl;
    long max_chars;
    unsigned columns;             // the columns asked for (bits 1 << ot_column)
    int col[OT_N_COLUMNS], n_cols; // TSV column indices (-1: not asked for)
    char *line;  // the line as read (kept intact for the caller's rejects file)
    size_t line_cap;
    size_t line_len;
    char *work;  // TSV: a copy of the line, split in place
    size_t work_cap;
    long lineno;
    long bytes;
    char *copy[OT_N_COLUMNS]; // JSONL: copies of the strings (the JSON value is freed per line)
    int pending;    // JSONL: read_line's result for the first line, read by ot_pairs_open; or NO_PENDING
    ot_err pending_err;
};
#define NO_PENDING 2

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
    if (r->lineno == 1 && got >= 3 && memcmp(r->line, "\xef\xbb\xbf", 3) == 0) { // a byte-order mark
        memmove(r->line, r->line + 3, (size_t)got - 2);
        got -= 3;
    }
    r->line_len = (size_t)got;
    if (strlen(r->line) != r->line_len) return ot_fail(err, "%s:%ld: line contains a NUL byte", r->path, r->lineno);
    return 1;
}

// "zh and nan", "zh, nan and nan_tl": the asked-for columns, for messages.
static void column_list(unsigned columns, char *out, size_t cap) {
    int n = 0, total = 0;
    for (int c = 0; c < OT_N_COLUMNS; c++) total += (columns >> c) & 1;
    out[0] = 0;
    for (int c = 0; c < OT_N_COLUMNS; c++)
        if ((columns >> c) & 1) {
            size_t at = strlen(out);
            snprintf(out + at, cap - at, "%s%s", n == 0 ? "" : n == total - 1 ? " and " : ", ", ot_column_name(c));
            n++;
        }
}

ot_pairs_reader *ot_pairs_open(const char *path, long max_chars, ot_err *err) {
    return ot_pairs_open_columns(path, max_chars, 1u << OT_COL_ZH | 1u << OT_COL_NAN, err);
}

ot_pairs_reader *ot_pairs_open_columns(const char *path, long max_chars, unsigned columns, ot_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ot_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    // A pipe or FIFO is fine (--in <(zcat pairs.tsv.gz)); a directory opens but cannot be read.
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        ot_fail(err, "%s is a directory; a TSV or JSONL file of pairs is expected", path);
        fclose(f);
        return NULL;
    }
    ot_pairs_reader *r = ot_calloc(1, sizeof *r);
    r->path = ot_strdup(path);
    r->f = f;
    r->max_chars = max_chars;
    r->columns = columns & ((1u << OT_N_COLUMNS) - 1);
    r->pending = NO_PENDING;
    // The first line decides the format when the name does not (and is the header of a TSV); reading it rather than
    // peeking at bytes works on pipes and sees past a byte-order mark.
    int got = read_line(r, err);
    if (ends_with(path, ".jsonl") || ends_with(path, ".json")) r->jsonl = 1;
    else if (!ends_with(path, ".tsv")) r->jsonl = got > 0 && r->line[0] == '{';
    if (r->jsonl && !(got < 0 && ferror(f))) {
        r->pending = got; // handed out by the first ot_pairs_next, bad or not
        if (got < 0) r->pending_err = *err;
        return r;
    }
    if (got <= 0) {
        if (got == 0) ot_fail(err, "%s: empty file; expected a header line naming the zh and nan columns", path);
        ot_pairs_close(r);
        return NULL;
    }
    char *h = r->line;
    for (int c = 0; c < OT_N_COLUMNS; c++) r->col[c] = -1;
    int col = 0;
    for (char *name = h, *tab;; name = tab + 1, col++) {
        tab = strchr(name, '\t');
        if (tab) *tab = 0;
        int *slot = NULL;
        for (int c = 0; c < OT_N_COLUMNS; c++)
            if (((r->columns >> c) & 1) && strcmp(name, ot_column_name(c)) == 0) slot = &r->col[c];
        if (slot && *slot >= 0) {
            ot_fail(err, "%s:1: the header names column '%s' twice", path, name);
            ot_pairs_close(r);
            return NULL;
        }
        if (slot) *slot = col;
        if (!tab) break;
    }
    r->n_cols = col + 1;
    for (int c = 0; c < OT_N_COLUMNS; c++)
        if (((r->columns >> c) & 1) && r->col[c] < 0) {
            char names[64];
            column_list(r->columns, names, sizeof names);
            ot_fail(err, "%s:1: the header has no '%s' column; expected a tab-separated header naming %s", path,
                    ot_column_name(c), names);
            ot_pairs_close(r);
            return NULL;
        }
    return r;
}

// Whether valid UTF-8 s[0..len) holds nothing but white space: ASCII blanks and control characters, and the Unicode
// spaces (U+0085, U+00A0, U+1680, U+2000..U+200B, U+2028, U+2029, U+202F, U+205F, U+3000 -- the ideographic space
// of CJK text -- and U+FEFF).
static int only_white_space(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        uint32_t c;
        int n = *p < 0x80 ? 1 : *p < 0xe0 ? 2 : *p < 0xf0 ? 3 : 4;
        c = n == 1 ? *p : n == 2 ? *p & 0x1f : n == 3 ? *p & 0x0f : *p & 0x07;
        for (int k = 1; k < n; k++) c = c << 6 | (p[k] & 0x3f);
        p += n;
        int white = c <= 0x20 || c == 0x7f || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200b) ||
                    c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000 || c == 0xfeff;
        if (!white) return 0;
    }
    return 1;
}

// The checks every side of a pair must pass.
static int check_side(const ot_pairs_reader *r, const char *name, const char *s, size_t len, ot_err *err) {
    if (len == 0) return ot_fail(err, "%s:%ld: empty %s", r->path, r->lineno, name);
    size_t chars, bad_at;
    if (!ot_utf8_valid(s, len, &chars, &bad_at))
        return ot_fail(err, "%s:%ld: %s is not valid UTF-8 (byte %zu of the field)", r->path, r->lineno, name, bad_at);
    if (only_white_space(s, len)) return ot_fail(err, "%s:%ld: %s is only white space", r->path, r->lineno, name);
    if (r->max_chars > 0 && (long)chars > r->max_chars)
        return ot_fail(err, "%s:%ld: %s has %zu characters, over the limit of %ld", r->path, r->lineno, name, chars,
                       r->max_chars);
    return 0;
}

// The asked-for columns of a line that passed their checks: into *p (the zh / nan shortcuts included).
static void set_pair(const ot_pairs_reader *r, ot_pair *p, char *const *field, const size_t *flen) {
    for (int c = 0; c < OT_N_COLUMNS; c++) {
        int asked = (r->columns >> c) & 1;
        p->text[c] = asked ? field[c] : NULL;
        p->len[c] = asked ? flen[c] : 0;
    }
    p->zh = p->text[OT_COL_ZH], p->zh_len = p->len[OT_COL_ZH];
    p->nan = p->text[OT_COL_NAN], p->nan_len = p->len[OT_COL_NAN];
}

static int next_tsv(ot_pairs_reader *r, ot_pair *p, ot_err *err) {
    if (r->line_len + 1 > r->work_cap) {
        r->work_cap = r->line_len + 1;
        r->work = ot_realloc(r->work, r->work_cap);
    }
    memcpy(r->work, r->line, r->line_len + 1);
    // Split the copy in place; fields beyond the ones we need are left alone.
    char *field[OT_N_COLUMNS] = {0};
    size_t flen[OT_N_COLUMNS] = {0};
    int col = 0, want_max = -1;
    for (int c = 0; c < OT_N_COLUMNS; c++)
        if (r->col[c] > want_max) want_max = r->col[c];
    for (char *s = r->work, *tab; col <= want_max; s = tab + 1, col++) {
        tab = strchr(s, '\t');
        size_t len = tab ? (size_t)(tab - s) : strlen(s);
        for (int c = 0; c < OT_N_COLUMNS; c++)
            if (col == r->col[c]) field[c] = s, flen[c] = len;
        if (!tab) {
            col++;
            break;
        }
    }
    for (int c = 0; c < OT_N_COLUMNS; c++)
        if (((r->columns >> c) & 1) && !field[c])
            return ot_fail(err, "%s:%ld: missing column '%s' (the line has %d tab-separated fields, the header %d)",
                           r->path, r->lineno, ot_column_name(c), col, r->n_cols);
    // Terminate the fields (after locating all, since terminating one may cut the line before another).
    for (int c = 0; c < OT_N_COLUMNS; c++)
        if (field[c]) field[c][flen[c]] = 0;
    for (int c = 0; c < OT_N_COLUMNS; c++)
        if (field[c] && check_side(r, ot_column_name(c), field[c], flen[c], err)) return -1;
    set_pair(r, p, field, flen);
    return 0;
}

static int next_jsonl(ot_pairs_reader *r, ot_pair *p, ot_err *err) {
    size_t bad_at;
    if (!ot_utf8_valid(r->line, r->line_len, NULL, &bad_at))
        return ot_fail(err, "%s:%ld: not valid UTF-8 (byte %zu of the line)", r->path, r->lineno, bad_at);
    json_error_t je;
    // A key given twice would be two answers to one question: jansson keeps the last silently unless told.
    json_t *obj = json_loadb(r->line, r->line_len, JSON_REJECT_DUPLICATES, &je);
    if (!obj) return ot_fail(err, "%s:%ld: not valid JSON: %s (column %d)", r->path, r->lineno, je.text, je.column);
    int rc = 0;
    size_t len[OT_N_COLUMNS] = {0};
    if (!json_is_object(obj)) {
        rc = ot_fail(err, "%s:%ld: not a JSON object", r->path, r->lineno);
        goto done;
    }
    for (int c = 0; c < OT_N_COLUMNS; c++) {
        if (!((r->columns >> c) & 1)) continue;
        const char *name = ot_column_name(c);
        json_t *v = json_object_get(obj, name);
        if (!v) {
            rc = ot_fail(err, "%s:%ld: missing key '%s'", r->path, r->lineno, name);
            goto done;
        }
        if (!json_is_string(v)) {
            rc = ot_fail(err, "%s:%ld: '%s' is not a string", r->path, r->lineno, name);
            goto done;
        }
        len[c] = json_string_length(v);
        free(r->copy[c]);
        r->copy[c] = ot_malloc(len[c] + 1);
        memcpy(r->copy[c], json_string_value(v), len[c] + 1);
    }
    // jansson refuses \u0000 by default, so the strings hold no NUL and strlen agrees with len.
    for (int c = 0; c < OT_N_COLUMNS; c++)
        if (((r->columns >> c) & 1) && check_side(r, ot_column_name(c), r->copy[c], len[c], err)) {
            rc = -1;
            goto done;
        }
    set_pair(r, p, r->copy, len);
done:
    json_decref(obj);
    return rc;
}

int ot_pairs_next(ot_pairs_reader *r, ot_pair *p, ot_err *err) {
    int got;
    if (r->pending != NO_PENDING) { // the first line, read by ot_pairs_open
        got = r->pending;
        if (got < 0) *err = r->pending_err;
        r->pending = NO_PENDING;
    } else {
        got = read_line(r, err);
    }
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
    for (int c = 0; c < OT_N_COLUMNS; c++) free(r->copy[c]);
    free(r);
}
