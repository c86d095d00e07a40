#include "formats/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "formats/fileio.h"

struct ot_metrics_file {
    FILE *f;
    char path[4096];
};

// Keeps the lines of steps up to `start`; rewrites the file (atomically) only when something is dropped.
static int drop_lines_after(const char *path, int64_t start, ot_err *err) {
    size_t len;
    char *text = ot_read_file(path, &len, err);
    if (!text) return -1;
    char *kept = ot_malloc(len + 1);
    size_t n_kept = 0;
    long dropped = 0;
    for (char *line = text; *line;) {
        size_t n = strcspn(line, "\n");
        int complete = line[n] == '\n';
        json_t *j = complete ? json_loadb(line, n, 0, NULL) : NULL;
        json_t *step = json_object_get(j, "step");
        if (json_is_integer(step) && json_integer_value(step) <= start) {
            memcpy(kept + n_kept, line, n + 1);
            n_kept += n + 1;
        } else if (n > 0) {
            dropped++;
        }
        json_decref(j);
        line += n + complete;
    }
    int rc = 0;
    if (dropped) {
        rc = ot_write_file_atomic(path, kept, n_kept, err);
        if (!rc)
            ot_warn("%s: dropped %ld line%s after step %lld (written by a run that stopped before it checkpointed them, "
                    "or cut off; those steps are trained again)", path, dropped, dropped == 1 ? "" : "s",
                    (long long)start);
    }
    free(kept);
    free(text);
    return rc;
}

static int metrics_path(char *path, size_t n, const char *run_dir, ot_err *err) {
    int k = snprintf(path, n, "%s/metrics.jsonl", run_dir);
    if (k < 0 || (size_t)k >= n) return ot_fail(err, "path too long: %.200s/metrics.jsonl", run_dir);
    return 0;
}

// 1: path exists (a regular file), 0: it does not, -1: something else is there.
static int existing_file(const char *path, ot_err *err) {
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    if (!S_ISREG(sb.st_mode)) return ot_fail(err, "%s is %s, not a regular file: move it away", path, ot_file_kind(sb.st_mode));
    return 1;
}

int ot_metrics_check(const char *run_dir, ot_err *err) {
    char path[4096];
    return metrics_path(path, sizeof path, run_dir, err) || existing_file(path, err) < 0 ? -1 : 0;
}

ot_metrics_file *ot_metrics_open(const char *run_dir, int64_t start, ot_err *err) {
    ot_metrics_file *m = ot_calloc(1, sizeof *m);
    int rc = metrics_path(m->path, sizeof m->path, run_dir, err);
    int exists = rc ? 0 : existing_file(m->path, err);
    if (exists < 0) rc = -1;
    if (!rc && exists) rc = drop_lines_after(m->path, start, err);
    if (!rc && !(m->f = fopen(m->path, "a")))
        rc = ot_fail(err, "cannot open %s for appending: %s", m->path, strerror(errno));
    if (rc) {
        free(m);
        return NULL;
    }
    return m;
}

int ot_metrics_line(ot_metrics_file *m, ot_err *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vfprintf(m->f, fmt, ap);
    va_end(ap);
    if (k < 0 || fputc('\n', m->f) == EOF || fflush(m->f) != 0 || ferror(m->f))
        return ot_fail(err, "cannot write to %s: %s", m->path, strerror(errno ? errno : EIO));
    return 0;
}

int ot_metrics_close(ot_metrics_file *m, ot_err *err) {
    if (!m) return 0;
    int bad = ferror(m->f) || fclose(m->f) != 0;
    int rc = bad ? ot_fail(err, "writing %s failed: %s", m->path, strerror(errno ? errno : EIO)) : 0;
    free(m);
    return rc;
}
