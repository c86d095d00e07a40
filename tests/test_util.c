#include "tests/test_util.h"

#include <math.h>
#include <stdlib.h>

int ot_test_failures = 0;
int ot_test_checks = 0;

double ot_rel_err_f32(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

double ot_rel_err_f64(const double *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double d = a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

void ot_check_close(const char *what, double rel_err, double tol) {
    ot_test_checks++;
    int ok = rel_err <= tol;
    if (!ok) ot_test_failures++;
    printf("%s %-48s rel_err %.3e (tol %.1e)\n", ok ? "ok  " : "FAIL", what, rel_err, tol);
}

int ot_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, ot_test_checks - ot_test_failures, ot_test_failures);
    // A test that made no check proves nothing: a skipped or cut-short program must not pass as green.
    if (ot_test_checks == 0) {
        printf("%s: FAIL: no check was made\n", name);
        return 1;
    }
    return ot_test_failures ? 1 : 0;
}

char *ot_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}
