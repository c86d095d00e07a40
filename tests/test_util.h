// Tiny test harness: CHECK macros that count failures, and comparison helpers with stated tolerances.
#ifndef OT_TEST_UTIL_H
#define OT_TEST_UTIL_H

#include <stddef.h>
#include <stdio.h>

extern int ot_test_failures;
extern int ot_test_checks;

#define CHECK(cond, ...)                                                                                      \
    do {                                                                                                      \
        ot_test_checks++;                                                                                     \
        if (!(cond)) {                                                                                        \
            ot_test_failures++;                                                                               \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                   \
            fprintf(stderr, __VA_ARGS__);                                                                     \
            fprintf(stderr, "\n");                                                                            \
        }                                                                                                     \
    } while (0)

// ‖a − b‖ / max(‖b‖, tiny) in double; NaN anywhere gives +inf.
double ot_rel_err_f32(const float *a, const float *b, size_t n);
double ot_rel_err_f64(const double *a, const double *b, size_t n);
// Check a relative error against a tolerance and print one line either way.
void ot_check_close(const char *what, double rel_err, double tol);
// Print "N passed, M failed" and return the exit code: 1 when a check failed, or when no check was made at all.
int ot_test_finish(const char *name);
// Read a whole file (NUL-terminated); NULL if it cannot be read.
char *ot_test_read_file(const char *path, size_t *len);

#endif
