// Small jansson helpers shared by the formats that are JSON (config.json, the safetensors index,
// adapter_config.json).
#ifndef OT_FORMATS_JSON_UTIL_H
#define OT_FORMATS_JSON_UTIL_H

#include <jansson.h>
#include <stddef.h>

#include "common/ot_common.h"
#include "formats/fileio.h"

// Parse JSON text; errors name `what` (usually the file path) with jansson's line and column.
json_t *ot_json_parse(const char *text, size_t len, const char *what, ot_err *err);
// Read and parse a whole file.
json_t *ot_json_load_file(const char *path, ot_err *err);

// Typed getters for an optional key of an object. Absent or null keeps *out (the caller's default) and returns 0;
// a value of the wrong type (or an integer out of int range) is an error naming `what` and the key.
int ot_json_get_int(const json_t *obj, const char *key, int *out, const char *what, ot_err *err);
int ot_json_get_double(const json_t *obj, const char *key, double *out, const char *what, ot_err *err);
int ot_json_get_float(const json_t *obj, const char *key, float *out, const char *what, ot_err *err);
int ot_json_get_bool(const json_t *obj, const char *key, int *out, const char *what, ot_err *err);

// A JSON real holding the shortest decimal that reads back as the same float (so 1e-5f is written "1e-05",
// not "9.9999997e-06"). Integral values stay reals ("32.0"), as Python writes floats.
json_t *ot_json_real_from_float(float f);
// Dump with sorted keys, 2-space indent (as transformers and peft write their JSON files). Caller frees.
char *ot_json_dump_pretty(const json_t *j);

#endif
