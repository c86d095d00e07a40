// Whole-file reads and crash-safe writes, shared by every format writer and the trainer: a file is written to
// "<path>.tmp", fsync'ed and renamed, so a reader sees the old file or the new one, never half of one.
#ifndef OT_FORMATS_FILEIO_H
#define OT_FORMATS_FILEIO_H

#include <stddef.h>

#include "common/ot_common.h"

// Reads a whole file into a NUL-terminated buffer (caller frees); *len (may be NULL) gets its length.
char *ot_read_file(const char *path, size_t *len, ot_err *err);
// Write `len` bytes to "<path>.tmp", fsync, rename onto path, fsync the directory. Removes the temp file on error.
int ot_write_file_atomic(const char *path, const void *data, size_t len, ot_err *err);
// fsync the directory that holds `path` (so a rename in it is durable).
int ot_fsync_parent_dir(const char *path, ot_err *err);
// fsync a directory itself.
int ot_fsync_dir(const char *dir, ot_err *err);
// mkdir -p: creates path and its missing parents; an existing directory is fine, anything else there is an error.
int ot_mkdir_p(const char *path, ot_err *err);

#endif
