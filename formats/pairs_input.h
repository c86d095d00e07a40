// Reading translation pairs (zh, nan) from a TSV or JSONL file, one pair per line, with validation.
//
// TSV: UTF-8, a header line naming the columns (at least `zh` and `nan`; others are ignored), tab-separated, no
// quoting (the format of the taigi corpus). JSONL: one JSON object per line with string keys `zh` and `nan`
// (others ignored). ot_pairs_open_columns reads another set of the corpus's columns (formats/directions.h:
// zh, nan, nan_tl), e.g. the Tâi-lô column for the directions that use it. The format comes from the extension
// (.tsv / .jsonl / .json), else from the first line ('{' = JSONL). A trailing '\r' is dropped from every line; a
// UTF-8 byte-order mark at the start of the file (TSV or JSONL) is ignored. The input may be a pipe; a directory
// is refused when opened.
//
// A line is bad when a column or key is missing, a side is empty or only white space, a side is not valid UTF-8,
// a side is longer than max_chars code points, or (JSONL) it is not a JSON object or names a key twice. Bad lines
// are reported, never skipped here: the caller decides whether to stop or to skip and record them.
#ifndef OT_FORMATS_PAIRS_INPUT_H
#define OT_FORMATS_PAIRS_INPUT_H

#include <stddef.h>

#include "common/ot_common.h"
#include "formats/directions.h"

typedef struct {
    const char *zh, *nan; // NUL-terminated; valid until the next call (NULL when the column was not asked for)
    size_t zh_len, nan_len;
    const char *text[OT_N_COLUMNS]; // every column by ot_column: text[OT_COL_ZH] == zh, ...; NULL if not asked for
    size_t len[OT_N_COLUMNS];
    long line;            // 1-based line number in the file (the TSV header is line 1)
} ot_pair;

enum { OT_PAIRS_END = 0, OT_PAIRS_OK = 1, OT_PAIRS_BAD = 2 }; // ot_pairs_next results (or -1: fatal)

typedef struct ot_pairs_reader ot_pairs_reader;

// Opens the file and (TSV) reads the header. NULL with "FILE: ..." / "FILE:1: ..." in err when the file cannot
// be read or the header lacks a zh or nan column.
ot_pairs_reader *ot_pairs_open(const char *path, long max_chars, ot_err *err);
// The same for the columns in `columns`, a set of bits 1 << ot_column (ot_pairs_open: zh and nan). Every one of
// them must be in the header (TSV) or in every object (JSONL), and is checked like zh and nan.
ot_pairs_reader *ot_pairs_open_columns(const char *path, long max_chars, unsigned columns, ot_err *err);
// OT_PAIRS_OK: *p holds the next pair. OT_PAIRS_END: no more lines. OT_PAIRS_BAD: the line is bad; err says
// "FILE:LINE: why" and reading may continue with the next line. -1: the file cannot be read any further.
int ot_pairs_next(ot_pairs_reader *r, ot_pair *p, ot_err *err);
const char *ot_pairs_format(const ot_pairs_reader *r);   // "tsv" or "jsonl"
const char *ot_pairs_last_line(const ot_pairs_reader *r); // text of the line last read, without its newline
long ot_pairs_bytes_read(const ot_pairs_reader *r);       // for progress reports
void ot_pairs_close(ot_pairs_reader *r);

#endif
