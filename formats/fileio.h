// Whole-file reads and crash-safe writes, shared by every format writer and the trainer: a file is written to
// "<path>.tmp", fsync'ed and renamed, so a reader sees the old file or the new one, never half of one.
#ifndef OT_FORMATS_FILEIO_H
#define OT_FORMATS_FILEIO_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "common/ot_common.h"

// Reads a whole file into a NUL-terminated buffer (caller frees); *len (may be NULL) gets its length. A directory,
// FIFO or device is refused by name (reading one gives no useful error of its own, or waits for a writer).
char *ot_read_file(const char *path, size_t *len, ot_err *err);
// Write `len` bytes to "<path>.tmp", fsync, rename onto path, fsync the directory. Removes the temp file on error.
// Refuses a path that exists and is not a regular file (ot_open_temp).
int ot_write_file_atomic(const char *path, const void *data, size_t len, ot_err *err);

// ---- outputs never destroy inputs (docs/failure-policy.md) ---------------------------------------------------
// A path and how the user gave it, for messages: {"--in", "pairs.tsv"}.
typedef struct {
    const char *role;
    const char *path;
} ot_path_role;

// Whether a program may (re)place `out` (given as `out_role`) with a file it writes: when `out` exists it must be a
// regular file (renaming a new file over a device, FIFO, socket or directory would replace that), and it must not
// be any of the inputs. Files are compared by device and inode after following symlinks, so "./x", a symlink and
// a hard link to an input all count as that input; an input that is a directory stands for every file directly
// in it (a model or adapter directory). Paths that do not exist yet are compared by their directory's device
// and inode and their name, so two outputs of one run can be checked against each other the same way (an input
// that does not exist matches only an output of that same path). 0, or -1 with a message.
int ot_check_output(const char *out_role, const char *out, const ot_path_role *inputs, int n_inputs, ot_err *err);

// Creates `tmp` for a file that will be renamed onto `final`: refuses when `final` exists and is not a regular
// file, removes whatever non-directory entry is at `tmp` (a stale file or a link: removed, never followed or
// truncated, so a link named like the temp file cannot lead the write into another file) and creates `tmp`
// exclusively. Returns the open descriptor, or -1 with a message.
int ot_open_temp(const char *final, const char *tmp, ot_err *err);
// "<path>.tmp.<pid>": the temporary name of a file written by this process (caller frees).
char *ot_temp_path_pid(const char *path);
// Removes "<path>.tmp.<pid>" files left by runs that were killed (the process <pid> no longer exists on this
// host), with a warning for each; a live process's file is left alone. Returns how many were removed.
int ot_remove_stale_temps(const char *path);
// What a file that is not a regular one is, for messages: "a directory", "a FIFO", "a character device", ...
const char *ot_file_kind(mode_t mode);
// Opens a regular file for reading without ever blocking on a FIFO (O_NONBLOCK, then fstat): the descriptor, *st
// filled; -1 with "PATH: cannot open: ..." or "PATH is a FIFO, not a regular file[EXPECTED]" in err (expected: NULL,
// or e.g. "; a safetensors file is expected here").
int ot_open_regular(const char *path, struct stat *st, const char *expected, ot_err *err);
// fsync the directory that holds `path` (so a rename in it is durable).
int ot_fsync_parent_dir(const char *path, ot_err *err);
// fsync a directory itself.
int ot_fsync_dir(const char *dir, ot_err *err);
// "dir/name" (caller frees).
char *ot_path_join(const char *dir, const char *name);
// rm -r of path without following symlinks (a damaged or half-written directory may hold anything).
int ot_remove_tree(const char *path, ot_err *err);
// mkdir -p: creates path and its missing parents; an existing directory is fine, anything else there is an error.
int ot_mkdir_p(const char *path, ot_err *err);

#endif
