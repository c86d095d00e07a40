// File helpers shared by the formats tests: scratch directories, raw file writing, running a program.
#ifndef OT_TEST_FORMATS_UTIL_H
#define OT_TEST_FORMATS_UTIL_H

#include <stddef.h>

// Remove a directory tree (or file) if present; then create `dir` (and its parents). Dies on failure.
void fmt_fresh_dir(const char *dir);
void fmt_rm_rf(const char *path);
// "dir/name" in a static ring of buffers (valid for the next few calls).
const char *fmt_path(const char *dir, const char *name);
int fmt_write_file(const char *path, const void *data, size_t len);
// Copy every regular file of src into dst (created). Dies on failure.
void fmt_copy_dir(const char *src, const char *dst);
// A safetensors file from raw parts: 8-byte length, the header text padded with spaces to a multiple of 8, data.
int fmt_write_raw_safetensors(const char *path, const char *header, const void *data, size_t len);
// Run argv[0] with arguments (no shell); returns the exit status, or -1 if it did not exit normally.
int fmt_run(char *const argv[]);
// Does haystack contain needle? Prints both when not, to make failures readable.
int fmt_has(const char *haystack, const char *needle);

#endif
