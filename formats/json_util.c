#include "formats/json_util.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

json_t *ot_json_parse(const char *text, size_t len, const char *what, ot_err *err) {
    json_error_t je;
    // Duplicate keys are rejected: in a config or index they would mean two answers to one question.
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        ot_fail(err, "%s: invalid JSON at line %d, column %d: %s", what, je.line, je.column, je.text);
        return NULL;
    }
    return j;
}

json_t *ot_json_load_file(const char *path, ot_err *err) {
    size_t len;
    char *buf = ot_read_file(path, &len, err);
    if (!buf) return NULL;
    json_t *j = ot_json_parse(buf, len, path, err);
    free(buf);
    return j;
}

int ot_json_get_int(const json_t *obj, const char *key, int *out, const char *what, ot_err *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < INT_MIN || x > INT_MAX) return ot_fail(err, "%s: \"%s\" = %lld is out of range", what, key, (long long)x);
        *out = (int)x;
        return 0;
    }
    // Python writes integral floats as "4096.0" sometimes; accept those, nothing fractional.
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d >= INT_MIN && d <= INT_MAX) {
            *out = (int)d;
            return 0;
        }
    }
    return ot_fail(err, "%s: \"%s\" must be an integer", what, key);
}

int ot_json_get_double(const json_t *obj, const char *key, double *out, const char *what, ot_err *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return ot_fail(err, "%s: \"%s\" must be a number", what, key);
    *out = json_number_value(v);
    return 0;
}

int ot_json_get_float(const json_t *obj, const char *key, float *out, const char *what, ot_err *err) {
    double d = *out;
    if (ot_json_get_double(obj, key, &d, what, err)) return -1;
    if (fabs(d) > FLT_MAX) // would become an infinity in float32
        return ot_fail(err, "%s: \"%s\" = %g is outside the float32 range", what, key, d);
    *out = (float)d;
    return 0;
}

int ot_json_get_bool(const json_t *obj, const char *key, int *out, const char *what, ot_err *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return ot_fail(err, "%s: \"%s\" must be true or false", what, key);
    *out = json_is_true(v);
    return 0;
}

json_t *ot_json_real_from_float(float f) {
    char buf[64];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

char *ot_json_dump_pretty(const json_t *j) {
    // 15 significant digits print every value that came from a short decimal exactly as it was written
    // (1e-05, not 1.0000000000000001e-05); the fields are float32 or short decimals, so nothing is lost.
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    if (!s) ot_die("json_dumps failed (out of memory?)");
    return s;
}

