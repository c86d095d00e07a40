// RUN/metrics.jsonl: one JSON object per line, appended as a run goes (a line per optimizer step, per validation).
// Written by rank 0 only; every line is flushed as it is written, and a failed write is an error, not a silence.
#ifndef OT_FORMATS_METRICS_H
#define OT_FORMATS_METRICS_H

#include <stdint.h>

#include "common/ot_common.h"

typedef struct ot_metrics_file ot_metrics_file;

// Opens run_dir/metrics.jsonl for appending (created if missing) for a run that continues after step `start`
// (0: a fresh start). Lines of later steps -- written by a run that stopped before it checkpointed them, and about to
// be written again -- and lines that do not parse (cut by a kill) are dropped first, with a warning saying how many,
// so every step has one line. An existing metrics.jsonl that is not a regular file is refused.
ot_metrics_file *ot_metrics_open(const char *run_dir, int64_t start, ot_err *err);
// Start-up check, before anything is written: an existing run_dir/metrics.jsonl must be a regular file.
int ot_metrics_check(const char *run_dir, ot_err *err);
// Appends one line: the printf-formatted JSON object (without the newline), then flushes.
int ot_metrics_line(ot_metrics_file *f, ot_err *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// Closes the file; -1 with a message when the last writes did not reach it.
int ot_metrics_close(ot_metrics_file *f, ot_err *err);

#endif
