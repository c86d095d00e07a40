// Pairs HDF5 file: streaming writer (extendible chunked datasets fed through buffers) and validating reader.
#include "formats/pairs_h5.h"
#include "formats/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is stored as int64_t in pairs_h5.h");

#define TOKENS_CHUNK 16384  // ids per chunk: a random sample read decompresses at most ~64 KiB
#define INDEX_CHUNK 16384   // elements per chunk of the per-sample arrays
#define DEFLATE_LEVEL 4     // most of level 9's size at a fraction of its time
#define TOKENS_CACHE_BYTES (32u << 20)

// HDF5 builds need not be thread-safe, and the loader reads from a background thread (tests even run several
// loaders in one process): every public function below holds this lock while it calls HDF5.
static pthread_mutex_t h5_lock = PTHREAD_MUTEX_INITIALIZER;

// ---- HDF5 errors ----------------------------------------------------------------------------------------------
// HDF5 reports errors on its own stack and by default prints it; we silence the printing once and instead put
// the most specific entry of the stack into our message, with the source line of the failing call.
static herr_t take_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0) snprintf((char *)data, 256, "%s", e->desc ? e->desc : "");
    return 0;
}

// Also: no HDF5 clean-up at process exit. Every file is closed by the code that opened it; an identifier HDF5 itself
// failed to release (see discard_writes) would otherwise turn an orderly error exit into a crash in that clean-up.
// H5dont_atexit only works before the library starts, i.e. in the first HDF5 call, which is this one.
static void h5_quiet(void) {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static int h5_fail(ot_err *err, const char *src, int line, const char *path, const char *what) {
    char detail[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, take_innermost, detail);
    H5Eclear2(H5E_DEFAULT);
    // A failed system call's entry is a long record ("file write failed: time = ..., filename = ..., errno = 28,
    // error message = 'No space left on device', buf = ..."): keep what failed and why.
    const char *why = strstr(detail, "error message = '");
    if (why) {
        why += strlen("error message = '");
        char short_form[256];
        int what_len = (int)strcspn(detail, ":"), why_len = (int)strcspn(why, "'");
        snprintf(short_form, sizeof short_form, "%.*s: %.*s", what_len, detail, why_len, why);
        snprintf(detail, sizeof detail, "%s", short_form);
    }
    const char *base = strrchr(src, '/');
    return ot_fail(err, "%s: %s%s%s [%s:%d]", path, what, detail[0] ? ": " : "", detail, base ? base + 1 : src, line);
}

// Every HDF5 call goes through this: on a negative result, fill err and jump to the function's `fail:` label.
// The calling function has `path` (the HDF5 file) and `err` in scope.
#define H5_TRY(call, what)                                                                                    \
    do {                                                                                                      \
        if ((call) < 0) {                                                                                     \
            h5_fail(err, __FILE__, __LINE__, path, what);                                                     \
            goto fail;                                                                                        \
        }                                                                                                     \
    } while (0)

// ---- attributes -----------------------------------------------------------------------------------------------
static int write_attr_str(hid_t obj, const char *name, const char *value, const char *path, ot_err *err) {
    hid_t t = -1, sp = -1, a = -1;
    int rc = -1;
    H5_TRY(t = H5Tcopy(H5T_C_S1), "string type");
    H5_TRY(H5Tset_size(t, H5T_VARIABLE), "string type");
    H5_TRY(H5Tset_cset(t, H5T_CSET_UTF8), "string type");
    H5_TRY(sp = H5Screate(H5S_SCALAR), "scalar space");
    H5_TRY(a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT), name);
    H5_TRY(H5Awrite(a, t, &value), name);
    rc = 0;
fail:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return rc;
}

static int write_attr_uint(hid_t obj, const char *name, uint64_t value, int bytes, const char *path, ot_err *err) {
    hid_t sp = -1, a = -1;
    int rc = -1;
    uint32_t v32 = (uint32_t)value;
    H5_TRY(sp = H5Screate(H5S_SCALAR), "scalar space");
    H5_TRY(a = H5Acreate2(obj, name, bytes == 4 ? H5T_STD_U32LE : H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT), name);
    H5_TRY(H5Awrite(a, bytes == 4 ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT64, bytes == 4 ? (void *)&v32 : (void *)&value),
           name);
    rc = 0;
fail:
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

// A string attribute, variable or fixed length; malloc'ed copy in *out.
static int read_attr_str(hid_t obj, const char *name, char **out, const char *path, ot_err *err) {
    hid_t a = -1, t = -1, mt = -1;
    int rc = -1;
    *out = NULL;
    if (H5Aexists(obj, name) <= 0) return ot_fail(err, "%s: attribute '%s' is missing", path, name);
    H5_TRY(a = H5Aopen(obj, name, H5P_DEFAULT), name);
    H5_TRY(t = H5Aget_type(a), name);
    if (H5Tget_class(t) != H5T_STRING) {
        ot_fail(err, "%s: attribute '%s' is not a string", path, name);
        goto fail;
    }
    htri_t var = H5Tis_variable_str(t);
    H5_TRY(var, name);
    H5_TRY(mt = H5Tcopy(H5T_C_S1), name);
    if (var) {
        char *s = NULL;
        H5_TRY(H5Tset_size(mt, H5T_VARIABLE), name);
        H5_TRY(H5Tset_cset(mt, H5Tget_cset(t)), name);
        H5_TRY(H5Aread(a, mt, &s), name);
        *out = ot_strdup(s ? s : "");
        H5free_memory(s);
    } else {
        size_t n = H5Tget_size(t);
        H5_TRY(H5Tset_size(mt, n + 1), name); // room for a terminator
        H5_TRY(H5Tset_strpad(mt, H5T_STR_NULLTERM), name);
        *out = ot_calloc(n + 2, 1);
        H5_TRY(H5Aread(a, mt, *out), name);
    }
    rc = 0;
fail:
    if (rc != 0) {
        free(*out);
        *out = NULL;
    }
    if (mt >= 0) H5Tclose(mt);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

static int read_attr_uint(hid_t obj, const char *name, uint64_t *out, const char *path, ot_err *err) {
    hid_t a = -1, t = -1;
    int rc = -1;
    if (H5Aexists(obj, name) <= 0) return ot_fail(err, "%s: attribute '%s' is missing", path, name);
    H5_TRY(a = H5Aopen(obj, name, H5P_DEFAULT), name);
    H5_TRY(t = H5Aget_type(a), name);
    if (H5Tget_class(t) != H5T_INTEGER) {
        ot_fail(err, "%s: attribute '%s' is not an integer", path, name);
        goto fail;
    }
    H5_TRY(H5Aread(a, H5T_NATIVE_UINT64, out), name);
    rc = 0;
fail:
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

// ---- writer ---------------------------------------------------------------------------------------------------
// One extendible 1-D dataset fed through a buffer: appends are memcpy, and HDF5 sees large writes.
typedef struct {
    const char *name;
    hid_t dset, mem_type;
    size_t elem;
    uint8_t *buf;
    size_t n, cap; // buffered elements
    uint64_t written;
} column;

struct ot_pairs_h5_writer {
    char *path, *tmp;
    hid_t file;
    column tokens, offsets, loss_start, direction, source_line;
    uint64_t n_samples, n_tokens;
    int has_direction[OT_N_DIRECTIONS]; // its instruction is in the file, so its samples may be
};

static int column_create(column *c, hid_t file, const char *name, hid_t file_type, hid_t mem_type, size_t elem,
                         hsize_t chunk, size_t buffer, const char *path, ot_err *err) {
    hid_t sp = -1, dcpl = -1;
    int rc = -1;
    memset(c, 0, sizeof *c);
    c->name = name;
    c->dset = -1;
    c->mem_type = mem_type;
    c->elem = elem;
    c->cap = buffer;
    c->buf = ot_malloc(elem * buffer);
    hsize_t dims = 0, maxdims = H5S_UNLIMITED;
    H5_TRY(sp = H5Screate_simple(1, &dims, &maxdims), name);
    H5_TRY(dcpl = H5Pcreate(H5P_DATASET_CREATE), name);
    H5_TRY(H5Pset_chunk(dcpl, 1, &chunk), name);
    // Filter order: byte shuffle (groups the mostly-zero high bytes of the ids), deflate, then a checksum of the
    // compressed chunk so that a flipped bit on disk is an error on read rather than a wrong token.
    if (elem > 1) H5_TRY(H5Pset_shuffle(dcpl), name);
    H5_TRY(H5Pset_deflate(dcpl, DEFLATE_LEVEL), name);
    H5_TRY(H5Pset_fletcher32(dcpl), name);
    H5_TRY(c->dset = H5Dcreate2(file, name, file_type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT), name);
    rc = 0;
fail:
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return rc;
}

static int column_flush(column *c, const char *path, ot_err *err) {
    if (c->n == 0) return 0;
    hid_t fs = -1, ms = -1;
    int rc = -1;
    hsize_t start = c->written, count = c->n, size = c->written + c->n;
    H5_TRY(H5Dset_extent(c->dset, &size), c->name);
    H5_TRY(fs = H5Dget_space(c->dset), c->name);
    H5_TRY(H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL), c->name);
    H5_TRY(ms = H5Screate_simple(1, &count, NULL), c->name);
    H5_TRY(H5Dwrite(c->dset, c->mem_type, ms, fs, H5P_DEFAULT, c->buf), c->name);
    c->written += c->n;
    c->n = 0;
    rc = 0;
fail:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return rc;
}

static int column_push(column *c, const void *vals, size_t n, const char *path, ot_err *err) {
    const uint8_t *p = vals;
    while (n > 0) {
        size_t take = c->cap - c->n < n ? c->cap - c->n : n;
        memcpy(c->buf + c->n * c->elem, p, take * c->elem);
        c->n += take, p += take * c->elem, n -= take;
        if (c->n == c->cap && column_flush(c, path, err) != 0) return -1;
    }
    return 0;
}

static void column_close(column *c) {
    if (c->dset > 0) H5Dclose(c->dset);
    free(c->buf);
    c->dset = -1;
    c->buf = NULL;
}

// A file being abandoned (an error, a full disk, an interrupt) has nothing left worth writing, so its descriptor is
// pointed at an anonymous in-memory file before its objects are closed. Otherwise the closes flush the dirty chunks
// and metadata into the real file; on a full disk that flush fails, and HDF5 1.10 then leaves a half-destroyed file
// identifier behind that its exit handler crashes on. With writes (and the final truncate) that cannot fail, every
// identifier is released. What is flushed is bounded by the caches (a few MB), and the memory goes with the close.
static void discard_writes(hid_t file) {
    void *handle = NULL;
    if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || !handle) return;
    int sink = memfd_create("osstune-discarded-hdf5", MFD_CLOEXEC);
    if (sink < 0) return;
    dup2(sink, *(int *)handle); // the sec2 driver's handle is its file descriptor
    close(sink);
}

static void writer_free(ot_pairs_h5_writer *w, int remove_tmp) {
    column *cols[] = {&w->tokens, &w->offsets, &w->loss_start, &w->direction, &w->source_line};
    if (remove_tmp && w->file >= 0) discard_writes(w->file);
    for (int i = 0; i < 5; i++) column_close(cols[i]);
    if (w->file >= 0) H5Fclose(w->file);
    if (remove_tmp) unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w);
}

static ot_pairs_h5_writer *h5_create_unlocked(const char *final_path, const ot_pairs_h5_meta *meta, ot_err *err) {
    h5_quiet();
    ot_pairs_h5_writer *w = ot_calloc(1, sizeof *w);
    w->path = ot_strdup(final_path);
    w->tmp = ot_temp_path_pid(final_path);
    w->file = -1;
    w->tokens.dset = w->offsets.dset = w->loss_start.dset = w->direction.dset = w->source_line.dset = -1;
    const char *path = w->tmp; // errors before the rename name the file actually being written
    hid_t fapl = -1;
    ot_remove_stale_temps(final_path); // the temporary files of killed runs
    // The temporary file is created here (never through a link, and only for a regular file's place); HDF5 then
    // truncates this file it owns.
    int fd = ot_open_temp(final_path, w->tmp, err);
    if (fd < 0) {
        writer_free(w, 0);
        return NULL;
    }
    close(fd);
    // The 1.8 file format (superblock v2, object header v2) puts checksums on the metadata as well, so a damaged
    // header is reported instead of misread; HDF5 1.8 and later (h5py included) read it.
    H5_TRY(fapl = H5Pcreate(H5P_FILE_ACCESS), "file access properties");
    H5_TRY(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST), "file format version");
    H5_TRY(w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl), "cannot create the file");
    H5Pclose(fapl);
    fapl = -1;
    if (write_attr_str(w->file, "format", OT_PAIRS_H5_FORMAT, path, err) ||
        write_attr_uint(w->file, "version", OT_PAIRS_H5_VERSION, 4, path, err) ||
        write_attr_str(w->file, "tokenizer_sha256", meta->tokenizer_sha256, path, err) ||
        write_attr_uint(w->file, "tokenizer_vocab_size", meta->tokenizer_vocab_size, 4, path, err) ||
        write_attr_str(w->file, "system_text", meta->system_text, path, err) ||
        write_attr_str(w->file, "instruction_zh2nan", meta->instruction[OT_ZH2NAN], path, err) ||
        write_attr_str(w->file, "instruction_nan2zh", meta->instruction[OT_NAN2ZH], path, err) ||
        write_attr_str(w->file, "directions", meta->directions, path, err) ||
        write_attr_str(w->file, "source_file", meta->source_file, path, err))
        goto fail;
    for (int d = 0; d < OT_N_DIRECTIONS; d++) { // after the original attributes: a zh2nan / nan2zh file is unchanged
        char name[64];
        snprintf(name, sizeof name, "instruction_%s", ot_directions[d].name);
        w->has_direction[d] = meta->instruction[d] != NULL;
        if (d > OT_NAN2ZH && meta->instruction[d] && write_attr_str(w->file, name, meta->instruction[d], path, err))
            goto fail;
    }
    if (column_create(&w->tokens, w->file, "tokens", H5T_STD_U32LE, H5T_NATIVE_UINT32, 4, TOKENS_CHUNK, 1 << 20,
                      path, err) ||
        column_create(&w->offsets, w->file, "offsets", H5T_STD_U64LE, H5T_NATIVE_UINT64, 8, INDEX_CHUNK, 1 << 16,
                      path, err) ||
        column_create(&w->loss_start, w->file, "loss_start", H5T_STD_U32LE, H5T_NATIVE_UINT32, 4, INDEX_CHUNK,
                      1 << 16, path, err) ||
        column_create(&w->direction, w->file, "direction", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, INDEX_CHUNK, 1 << 16,
                      path, err) ||
        column_create(&w->source_line, w->file, "source_line", H5T_STD_U64LE, H5T_NATIVE_UINT64, 8, INDEX_CHUNK,
                      1 << 16, path, err))
        goto fail;
    uint64_t zero = 0;
    if (column_push(&w->offsets, &zero, 1, path, err)) goto fail;
    return w;
fail:
    if (fapl >= 0) H5Pclose(fapl);
    writer_free(w, 1);
    return NULL;
}

static int h5_append_unlocked(ot_pairs_h5_writer *w, const int32_t *ids, int n, uint32_t loss_start,
                              uint8_t direction, uint64_t source_line, ot_err *err) {
    const char *path = w->tmp;
    if (n <= 0 || loss_start >= (uint32_t)n)
        return ot_fail(err, "%s: sample from line %llu has %d ids and loss_start %u", path,
                       (unsigned long long)source_line, n, loss_start);
    if (direction >= OT_N_DIRECTIONS || !w->has_direction[direction])
        return ot_fail(err, "%s: direction %u is not one the file was created for (its instruction is not in the file)",
                       path, direction);
    // ids are non-negative (< vocab), so their int32 bits are the uint32 values stored.
    uint64_t end = w->n_tokens + (uint64_t)n;
    if (column_push(&w->tokens, ids, (size_t)n, path, err) || column_push(&w->offsets, &end, 1, path, err) ||
        column_push(&w->loss_start, &loss_start, 1, path, err) || column_push(&w->direction, &direction, 1, path, err) ||
        column_push(&w->source_line, &source_line, 1, path, err))
        return -1;
    w->n_tokens = end;
    w->n_samples++;
    return 0;
}

uint64_t ot_pairs_h5_written_samples(const ot_pairs_h5_writer *w) { return w->n_samples; }
uint64_t ot_pairs_h5_written_tokens(const ot_pairs_h5_writer *w) { return w->n_tokens; }

static int h5_finish_unlocked(ot_pairs_h5_writer *w, uint64_t n_pairs, uint64_t n_rejected, ot_err *err) {
    const char *path = w->tmp;
    column *cols[] = {&w->tokens, &w->offsets, &w->loss_start, &w->direction, &w->source_line};
    for (int i = 0; i < 5; i++)
        if (column_flush(cols[i], path, err) != 0) goto fail;
    if (write_attr_uint(w->file, "n_samples", w->n_samples, 8, path, err) ||
        write_attr_uint(w->file, "n_tokens", w->n_tokens, 8, path, err) ||
        write_attr_uint(w->file, "n_pairs", n_pairs, 8, path, err) ||
        write_attr_uint(w->file, "n_rejected", n_rejected, 8, path, err))
        goto fail;
    // Everything reaches the disk while the file can still be abandoned cleanly (see discard_writes): a close that
    // fails cannot be undone.
    H5_TRY(H5Fflush(w->file, H5F_SCOPE_LOCAL), "writing the file");
    for (int i = 0; i < 5; i++) column_close(cols[i]);
    herr_t closed = H5Fclose(w->file);
    w->file = -1;
    H5_TRY(closed, "closing the file");
    // Data on disk before the name appears: a crash leaves either no file or a complete one.
    int fd = open(w->tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        ot_fail(err, "%s: fsync failed: %s", w->tmp, strerror(errno));
        if (fd >= 0) close(fd);
        goto fail;
    }
    close(fd);
    if (rename(w->tmp, w->path) != 0) {
        ot_fail(err, "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
        goto fail;
    }
    writer_free(w, 0);
    return 0;
fail:
    writer_free(w, 1);
    return -1;
}

static void h5_abort_unlocked(ot_pairs_h5_writer *w) {
    if (w) writer_free(w, 1);
}

// ---- reader ---------------------------------------------------------------------------------------------------
static void h5_close_unlocked(ot_pairs_h5 *r);

// Opens dataset name and checks it is a 1-D unsigned integer array of elem bytes; *len receives its length.
static hid_t open_column(hid_t file, const char *name, size_t elem, hid_t dapl, uint64_t *len, const char *path,
                         ot_err *err) {
    hid_t d = -1, t = -1, sp = -1;
    char what[96];
    snprintf(what, sizeof what, "dataset /%s", name);
    htri_t exists = H5Lexists(file, name, H5P_DEFAULT);
    if (exists <= 0) {
        ot_fail(err, "%s: dataset /%s is missing (not an osstune pairs file, or an incomplete one)", path, name);
        return -1;
    }
    H5_TRY(d = H5Dopen2(file, name, dapl), what);
    H5_TRY(t = H5Dget_type(d), what);
    if (H5Tget_class(t) != H5T_INTEGER || H5Tget_size(t) != elem || H5Tget_sign(t) != H5T_SGN_NONE) {
        ot_fail(err, "%s: dataset /%s should hold unsigned %zu-byte integers", path, name, elem);
        goto fail;
    }
    H5_TRY(sp = H5Dget_space(d), what);
    hsize_t dims[2];
    if (H5Sget_simple_extent_ndims(sp) != 1) {
        ot_fail(err, "%s: dataset /%s should be one-dimensional", path, name);
        goto fail;
    }
    H5_TRY(H5Sget_simple_extent_dims(sp, dims, NULL), what);
    *len = dims[0];
    H5Sclose(sp);
    H5Tclose(t);
    return d;
fail:
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    return -1;
}

// Reads a whole index dataset into a new buffer of len elements.
static void *read_column(hid_t file, const char *name, hid_t mem_type, size_t elem, uint64_t expect_len,
                         const char *path, ot_err *err) {
    uint64_t len;
    void *buf = NULL;
    hid_t d = open_column(file, name, elem, H5P_DEFAULT, &len, path, err);
    if (d < 0) return NULL;
    if (len != expect_len) {
        ot_fail(err, "%s: dataset /%s has %llu elements, expected %llu", path, name, (unsigned long long)len,
                (unsigned long long)expect_len);
        goto fail;
    }
    buf = ot_malloc(elem * (size_t)len);
    char what[96];
    snprintf(what, sizeof what, "reading dataset /%s", name);
    H5_TRY(H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), what);
    H5Dclose(d);
    return buf;
fail:
    free(buf);
    H5Dclose(d);
    return NULL;
}

static int h5_open_unlocked(ot_pairs_h5 *r, const char *path, ot_err *err) {
    h5_quiet();
    memset(r, 0, sizeof *r);
    r->file = r->tokens = r->tokens_space = -1;
    r->path = ot_strdup(path);
    hid_t dapl = -1;
    char *format = NULL;
    uint64_t v = 0;
    struct stat st;
    if (access(path, R_OK) != 0 || stat(path, &st) != 0) {
        ot_fail(err, "%s: cannot read: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) { // HDF5 would wait on a FIFO, and says nothing useful about a directory
        ot_fail(err, "%s is %s, not a pairs file from osstune-prep", path, ot_file_kind(st.st_mode));
        goto fail;
    }
    htri_t is_h5 = H5Fis_hdf5(path);
    if (is_h5 <= 0) {
        h5_fail(err, __FILE__, __LINE__, path, "not an HDF5 file (truncated or damaged?)");
        goto fail;
    }
    H5_TRY(r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), "cannot open (truncated or damaged HDF5 file?)");
    if (read_attr_str(r->file, "format", &format, path, err) != 0) goto fail;
    if (strcmp(format, OT_PAIRS_H5_FORMAT) != 0) {
        ot_fail(err, "%s: format attribute is '%s', not '%s'", path, format, OT_PAIRS_H5_FORMAT);
        goto fail;
    }
    if (read_attr_uint(r->file, "version", &v, path, err) != 0) goto fail;
    if (v != OT_PAIRS_H5_VERSION) {
        ot_fail(err, "%s: pairs file version %llu; this osstune reads version %d (re-run osstune-prep)", path,
                (unsigned long long)v, OT_PAIRS_H5_VERSION);
        goto fail;
    }
    r->version = (uint32_t)v;
    char *sha = NULL;
    uint64_t n_samples, vocab;
    if (read_attr_str(r->file, "tokenizer_sha256", &sha, path, err) != 0) goto fail;
    snprintf(r->tokenizer_sha256, sizeof r->tokenizer_sha256, "%s", sha);
    free(sha);
    if (read_attr_uint(r->file, "tokenizer_vocab_size", &vocab, path, err) ||
        read_attr_uint(r->file, "n_samples", &n_samples, path, err) ||
        read_attr_uint(r->file, "n_tokens", &r->n_tokens, path, err) ||
        read_attr_uint(r->file, "n_pairs", &r->n_pairs, path, err) ||
        read_attr_uint(r->file, "n_rejected", &r->n_rejected, path, err) ||
        read_attr_str(r->file, "system_text", &r->system_text, path, err) ||
        read_attr_str(r->file, "instruction_zh2nan", &r->instruction[OT_ZH2NAN], path, err) ||
        read_attr_str(r->file, "instruction_nan2zh", &r->instruction[OT_NAN2ZH], path, err) ||
        read_attr_str(r->file, "directions", &r->directions, path, err) ||
        read_attr_str(r->file, "source_file", &r->source_file, path, err))
        goto fail;
    for (int d = OT_NAN2ZH + 1; d < OT_N_DIRECTIONS; d++) { // present only when the file holds that direction
        char name[64];
        snprintf(name, sizeof name, "instruction_%s", ot_directions[d].name);
        htri_t there = H5Aexists(r->file, name);
        H5_TRY(there, name);
        if (there && read_attr_str(r->file, name, &r->instruction[d], path, err) != 0) goto fail;
    }
    if (vocab == 0 || vocab > INT32_MAX) {
        ot_fail(err, "%s: tokenizer_vocab_size %llu is not a valid vocabulary size", path, (unsigned long long)vocab);
        goto fail;
    }
    if (n_samples == 0) {
        ot_fail(err, "%s: the file holds no samples", path);
        goto fail;
    }
    r->vocab_size = (uint32_t)vocab;
    r->n_samples = (int64_t)n_samples;

    r->offsets = read_column(r->file, "offsets", H5T_NATIVE_UINT64, 8, n_samples + 1, path, err);
    if (!r->offsets) goto fail;
    r->loss_start = read_column(r->file, "loss_start", H5T_NATIVE_UINT32, 4, n_samples, path, err);
    if (!r->loss_start) goto fail;
    r->direction = read_column(r->file, "direction", H5T_NATIVE_UINT8, 1, n_samples, path, err);
    if (!r->direction) goto fail;
    r->source_line = read_column(r->file, "source_line", H5T_NATIVE_UINT64, 8, n_samples, path, err);
    if (!r->source_line) goto fail;

    // The chunk cache holds recently used chunks of /tokens: samples read in shuffled order mostly hit it.
    H5_TRY(dapl = H5Pcreate(H5P_DATASET_ACCESS), "dataset access properties");
    H5_TRY(H5Pset_chunk_cache(dapl, 20011, TOKENS_CACHE_BYTES, 0.75), "chunk cache");
    uint64_t n_tok;
    if ((r->tokens = open_column(r->file, "tokens", 4, dapl, &n_tok, path, err)) < 0) goto fail;
    H5_TRY(r->tokens_space = H5Dget_space(r->tokens), "dataset /tokens");
    if (n_tok != r->n_tokens) {
        ot_fail(err, "%s: /tokens has %llu ids but the n_tokens attribute says %llu", path, (unsigned long long)n_tok,
                (unsigned long long)r->n_tokens);
        goto fail;
    }
    if (r->offsets[0] != 0 || r->offsets[n_samples] != n_tok) {
        ot_fail(err, "%s: /offsets must run from 0 to the length of /tokens (%llu), not %llu..%llu", path,
                (unsigned long long)n_tok, (unsigned long long)r->offsets[0], (unsigned long long)r->offsets[n_samples]);
        goto fail;
    }
    for (int64_t i = 0; i < r->n_samples; i++) {
        if (r->offsets[i + 1] <= r->offsets[i] || r->offsets[i + 1] - r->offsets[i] > INT32_MAX) {
            ot_fail(err, "%s: sample %lld is empty or too long (offsets %llu..%llu)", path, (long long)i,
                    (unsigned long long)r->offsets[i], (unsigned long long)r->offsets[i + 1]);
            goto fail;
        }
        int len = ot_pairs_h5_sample_len(r, i);
        if (r->loss_start[i] >= (uint32_t)len) {
            ot_fail(err, "%s: sample %lld has loss_start %u but only %d tokens", path, (long long)i, r->loss_start[i],
                    len);
            goto fail;
        }
        if (r->direction[i] >= OT_N_DIRECTIONS) {
            ot_fail(err, "%s: sample %lld has direction %u, not one of this osstune's %d (%s)", path, (long long)i,
                    r->direction[i], OT_N_DIRECTIONS, ot_direction_names());
            goto fail;
        }
        if (!r->instruction[r->direction[i]]) {
            ot_fail(err, "%s: sample %lld has direction %s, but the file has no instruction_%s attribute", path,
                    (long long)i, ot_direction_name(r->direction[i]), ot_direction_name(r->direction[i]));
            goto fail;
        }
        if (len > r->max_sample_len) r->max_sample_len = len;
    }
    H5Pclose(dapl);
    free(format);
    return 0;
fail:
    if (dapl >= 0) H5Pclose(dapl);
    free(format);
    h5_close_unlocked(r);
    return -1;
}

// Reads ids [start, start + n) of /tokens into out and checks them against the vocabulary.
static int read_tokens(ot_pairs_h5 *r, uint64_t start, uint64_t n, int32_t *out, ot_err *err) {
    const char *path = r->path;
    hid_t ms = -1;
    int rc = -1;
    hsize_t st = start, cnt = n;
    H5_TRY(H5Sselect_hyperslab(r->tokens_space, H5S_SELECT_SET, &st, NULL, &cnt, NULL), "selecting /tokens");
    H5_TRY(ms = H5Screate_simple(1, &cnt, NULL), "memory space");
    H5_TRY(H5Dread(r->tokens, H5T_NATIVE_UINT32, ms, r->tokens_space, H5P_DEFAULT, out), "reading /tokens");
    for (uint64_t k = 0; k < n; k++)
        if ((uint32_t)out[k] >= r->vocab_size) {
            ot_fail(err, "%s: token %llu has id %u, outside the vocabulary of %u", path,
                    (unsigned long long)(start + k), (uint32_t)out[k], r->vocab_size);
            goto fail;
        }
    rc = 0;
fail:
    if (ms >= 0) H5Sclose(ms);
    return rc;
}

static int h5_read_unlocked(ot_pairs_h5 *r, int64_t i, int32_t *ids, ot_err *err) {
    if (i < 0 || i >= r->n_samples)
        return ot_fail(err, "%s: sample %lld out of range (0..%lld)", r->path, (long long)i, (long long)r->n_samples - 1);
    return read_tokens(r, r->offsets[i], r->offsets[i + 1] - r->offsets[i], ids, err);
}

static int h5_verify_unlocked(ot_pairs_h5 *r, ot_err *err) {
    const uint64_t block = (uint64_t)TOKENS_CHUNK * 64;
    int32_t *buf = ot_malloc(sizeof(int32_t) * block);
    int rc = 0;
    for (uint64_t at = 0; at < r->n_tokens && rc == 0; at += block)
        rc = read_tokens(r, at, r->n_tokens - at < block ? r->n_tokens - at : block, buf, err);
    free(buf);
    return rc;
}

static void h5_close_unlocked(ot_pairs_h5 *r) {
    if (r->tokens_space >= 0) H5Sclose(r->tokens_space);
    if (r->tokens >= 0) H5Dclose(r->tokens);
    if (r->file >= 0) H5Fclose(r->file);
    free(r->path);
    free(r->offsets);
    free(r->loss_start);
    free(r->direction);
    free(r->source_line);
    free(r->system_text);
    for (int d = 0; d < OT_N_DIRECTIONS; d++) free(r->instruction[d]);
    free(r->directions);
    free(r->source_file);
    memset(r, 0, sizeof *r);
    r->file = r->tokens = r->tokens_space = -1;
}

// ---- the locked public entry points ---------------------------------------------------------------------------
ot_pairs_h5_writer *ot_pairs_h5_create(const char *path, const ot_pairs_h5_meta *meta, ot_err *err) {
    pthread_mutex_lock(&h5_lock);
    ot_pairs_h5_writer *w = h5_create_unlocked(path, meta, err);
    pthread_mutex_unlock(&h5_lock);
    return w;
}

int ot_pairs_h5_append(ot_pairs_h5_writer *w, const int32_t *ids, int n, uint32_t loss_start, uint8_t direction,
                       uint64_t source_line, ot_err *err) {
    pthread_mutex_lock(&h5_lock);
    int rc = h5_append_unlocked(w, ids, n, loss_start, direction, source_line, err);
    pthread_mutex_unlock(&h5_lock);
    return rc;
}

int ot_pairs_h5_finish(ot_pairs_h5_writer *w, uint64_t n_pairs, uint64_t n_rejected, ot_err *err) {
    pthread_mutex_lock(&h5_lock);
    int rc = h5_finish_unlocked(w, n_pairs, n_rejected, err);
    pthread_mutex_unlock(&h5_lock);
    return rc;
}

void ot_pairs_h5_abort(ot_pairs_h5_writer *w) {
    pthread_mutex_lock(&h5_lock);
    h5_abort_unlocked(w);
    pthread_mutex_unlock(&h5_lock);
}

int ot_pairs_h5_open(ot_pairs_h5 *r, const char *path, ot_err *err) {
    pthread_mutex_lock(&h5_lock);
    int rc = h5_open_unlocked(r, path, err);
    pthread_mutex_unlock(&h5_lock);
    return rc;
}

int ot_pairs_h5_read(ot_pairs_h5 *r, int64_t i, int32_t *ids, ot_err *err) {
    pthread_mutex_lock(&h5_lock);
    int rc = h5_read_unlocked(r, i, ids, err);
    pthread_mutex_unlock(&h5_lock);
    return rc;
}

int ot_pairs_h5_verify(ot_pairs_h5 *r, ot_err *err) {
    pthread_mutex_lock(&h5_lock);
    int rc = h5_verify_unlocked(r, err);
    pthread_mutex_unlock(&h5_lock);
    return rc;
}

void ot_pairs_h5_close(ot_pairs_h5 *r) {
    pthread_mutex_lock(&h5_lock);
    h5_close_unlocked(r);
    pthread_mutex_unlock(&h5_lock);
}

// ---- the file against a model ---------------------------------------------------------------------------------
int ot_pairs_h5_check_vocab(const ot_pairs_h5 *r, const char *flag, int model_vocab, ot_err *err) {
    if (model_vocab > 0 && r->vocab_size <= (uint32_t)model_vocab) return 0;
    return ot_fail(err, "%s %s was tokenized for a vocabulary of %u ids (its tokenizer_vocab_size), but the model has "
                   "%d: ids from %d on have no embedding. Tokenize the pairs with this model's tokenizer "
                   "(osstune-prep), or train the model they were made for", flag, r->path, r->vocab_size,
                   model_vocab, model_vocab);
}

int ot_pairs_h5_check_ids(const ot_pairs_h5 *r, int64_t i, const int32_t *ids, int model_vocab, ot_err *err) {
    const int n = ot_pairs_h5_sample_len(r, i);
    for (int k = 0; k < n; k++)
        if (ids[k] < 0 || ids[k] >= model_vocab)
            return ot_fail(err, "%s: sample %lld (line %llu of %s) has token id %u at position %d, outside the model's "
                           "vocabulary of %d", r->path, (long long)i, (unsigned long long)r->source_line[i],
                           r->source_file, (uint32_t)ids[k], k, model_vocab);
    return 0;
}

int ot_pairs_h5_sample_targets(const ot_pairs_h5 *r, int64_t i, int loss_all) {
    int ls = loss_all ? 0 : (int)r->loss_start[i];
    return ot_pairs_h5_sample_len(r, i) - (ls < 1 ? 1 : ls);
}
