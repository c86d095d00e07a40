// safetensors (spec §3.2): an 8-byte little-endian header length N, N bytes of JSON, then the byte buffer the
// JSON's data_offsets point into. The reader maps the file and trusts nothing: every number in the header is
// checked against the file before a pointer into the mapping is handed out, so a truncated download or a
// corrupt shard becomes a message naming the file and tensor instead of a crash deep inside a kernel.
#include "formats/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/json_util.h"

// ---- dtypes ---------------------------------------------------------------------------------------------------
static const struct {
    ot_dtype dt;
    const char *name;
    size_t size;
} dtype_table[] = {
    {OT_DT_BOOL, "BOOL", 1}, {OT_DT_U8, "U8", 1},   {OT_DT_I8, "I8", 1},   {OT_DT_U16, "U16", 2},
    {OT_DT_I16, "I16", 2},   {OT_DT_F16, "F16", 2}, {OT_DT_BF16, "BF16", 2}, {OT_DT_U32, "U32", 4},
    {OT_DT_I32, "I32", 4},   {OT_DT_F32, "F32", 4}, {OT_DT_U64, "U64", 8}, {OT_DT_I64, "I64", 8},
    {OT_DT_F64, "F64", 8},   {OT_DT_F8_E4M3, "F8_E4M3", 1}, {OT_DT_F8_E5M2, "F8_E5M2", 1},
};
#define N_DTYPES ((int)(sizeof dtype_table / sizeof dtype_table[0]))

const char *ot_dtype_name(ot_dtype dt) {
    for (int i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dt == dt) return dtype_table[i].name;
    return "INVALID";
}

ot_dtype ot_dtype_from_name(const char *name) {
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(dtype_table[i].name, name) == 0) return dtype_table[i].dt;
    return OT_DT_INVALID;
}

size_t ot_dtype_size(ot_dtype dt) {
    for (int i = 0; i < N_DTYPES; i++)
        if (dtype_table[i].dt == dt) return dtype_table[i].size;
    return 0;
}

// "[32, 2880]" into buf, for messages.
static const char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

// ---- reader ---------------------------------------------------------------------------------------------------
static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

// A JSON integer >= 0 (the header's shape entries and data offsets).
static int get_nonneg(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

// Parse one tensor entry of the header into t (everything but the data pointer); begin/end returned apart.
static int parse_entry(ot_tensor *t, uint64_t *begin, uint64_t *end, const char *name, const json_t *v, const char *path,
                       ot_err *err) {
    if (!json_is_object(v)) return ot_fail(err, "%s: tensor '%s': header entry is not a JSON object", path, name);
    const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"), *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd)) return ot_fail(err, "%s: tensor '%s': \"dtype\" missing or not a string", path, name);
    t->dtype = ot_dtype_from_name(json_string_value(jd));
    if (t->dtype == OT_DT_INVALID)
        return ot_fail(err, "%s: tensor '%s': unknown dtype \"%s\"", path, name, json_string_value(jd));
    if (!json_is_array(js)) return ot_fail(err, "%s: tensor '%s': \"shape\" missing or not an array", path, name);
    if (json_array_size(js) > OT_MAX_DIMS)
        return ot_fail(err, "%s: tensor '%s': %zu dimensions, at most %d supported", path, name, json_array_size(js), OT_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    uint64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        const json_t *d = json_array_get(js, (size_t)i);
        uint64_t x;
        if (get_nonneg(d, &x))
            return ot_fail(err, "%s: tensor '%s': shape entry %d is not a non-negative integer", path, name, i);
        t->shape[i] = (int64_t)x;
        if (__builtin_mul_overflow(numel, x, &numel) || numel > (uint64_t)INT64_MAX)
            return ot_fail(err, "%s: tensor '%s': shape overflows a 64-bit element count", path, name);
    }
    t->numel = (int64_t)numel;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || get_nonneg(json_array_get(jo, 0), begin) ||
        get_nonneg(json_array_get(jo, 1), end))
        return ot_fail(err, "%s: tensor '%s': \"data_offsets\" must be [begin, end] with non-negative integers", path, name);
    if (*end < *begin)
        return ot_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu) end before they begin", path, name,
                       (unsigned long long)*begin, (unsigned long long)*end);
    uint64_t need;
    if (__builtin_mul_overflow(numel, (uint64_t)ot_dtype_size(t->dtype), &need))
        return ot_fail(err, "%s: tensor '%s': byte size overflows 64 bits", path, name);
    if (*end - *begin != need) {
        char sb[160];
        return ot_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu) is %llu bytes but %s %s needs %llu", path, name,
                       (unsigned long long)*begin, (unsigned long long)*end, (unsigned long long)(*end - *begin),
                       ot_dtype_name(t->dtype), shape_str(sb, sizeof sb, t->ndim, t->shape), (unsigned long long)need);
    }
    t->nbytes = (size_t)need;
    return 0;
}

static int cmp_by_offset(const void *a, const void *b) {
    const ot_tensor *x = a, *y = b;
    if (x->data != y->data) return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes; // zero-sized tensors first at a shared offset
}

int ot_safetensors_open(ot_safetensors *st, const char *path, ot_err *err) {
    memset(st, 0, sizeof *st);
    st->path = ot_strdup(path);
    json_t *root = NULL;
    // Only a regular file can be mapped and trusted to stay its size (and a FIFO must not be waited on).
    struct stat sb;
    int fd = ot_open_regular(path, &sb, "; a safetensors file is expected here", err);
    if (fd < 0) goto fail;
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        ot_fail(err, "%s: file is %zu bytes, shorter than the 8-byte header length field", path, size);
        close(fd);
        goto fail;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd); // the mapping keeps the file alive
    if (map == MAP_FAILED) {
        ot_fail(err, "%s: mmap of %zu bytes failed: %s", path, size, strerror(errno));
        goto fail;
    }
    st->map = map;
    st->map_size = size;
    const uint8_t *bytes = map;

    uint64_t hlen = read_le64(bytes);
    if (hlen > size - 8) {
        ot_fail(err, "%s: header length %llu runs past the end of the file (%zu bytes; at most %zu after the length field)",
                path, (unsigned long long)hlen, size, size - 8);
        goto fail;
    }
    json_error_t je;
    root = json_loadb((const char *)bytes + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        ot_fail(err, "%s: header (%llu bytes) is not valid JSON: %s at line %d, column %d", path, (unsigned long long)hlen,
                je.text, je.line, je.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        ot_fail(err, "%s: header is not a JSON object", path);
        goto fail;
    }
    const uint8_t *buffer = bytes + 8 + hlen;
    size_t buf_size = size - 8 - (size_t)hlen;

    st->tensors = ot_calloc(json_object_size(root) + 1, sizeof(ot_tensor));
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            // string -> string, as safetensors requires; kept as JSON text for whoever wants it.
            if (!json_is_object(val)) {
                ot_fail(err, "%s: \"__metadata__\" is not a JSON object", path);
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    ot_fail(err, "%s: \"__metadata__\" value for \"%s\" is not a string", path, mk);
                    goto fail;
                }
            }
            st->metadata_json = json_dumps(val, JSON_COMPACT | JSON_SORT_KEYS);
            continue;
        }
        ot_tensor *t = &st->tensors[st->n_tensors];
        uint64_t begin = 0, end = 0;
        if (parse_entry(t, &begin, &end, key, val, path, err)) goto fail;
        if (end > buf_size) {
            ot_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu) run past the end of the data buffer (%zu bytes)", path,
                    key, (unsigned long long)begin, (unsigned long long)end, buf_size);
            goto fail;
        }
        t->name = ot_strdup(key);
        t->data = buffer + begin;
        t->file = st->path;
        st->n_tensors++;
    }

    // The ranges must tile the buffer exactly: a gap or an overlap means the header and the data disagree.
    qsort(st->tensors, (size_t)st->n_tensors, sizeof(ot_tensor), cmp_by_offset);
    size_t pos = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const ot_tensor *t = &st->tensors[i];
        size_t begin = (size_t)(t->data - buffer);
        if (begin > pos) {
            if (i == 0)
                ot_fail(err, "%s: gap of %zu bytes at the start of the data buffer, before tensor '%s'", path, begin, t->name);
            else
                ot_fail(err, "%s: gap of %zu bytes in the data buffer between tensor '%s' (ends at %zu) and tensor '%s' (begins at %zu)",
                        path, begin - pos, st->tensors[i - 1].name, pos, t->name, begin);
            goto fail;
        }
        if (begin < pos) {
            ot_fail(err, "%s: tensor '%s' at [%zu, %zu) overlaps tensor '%s', which ends at %zu", path, t->name, begin,
                    begin + t->nbytes, st->tensors[i - 1].name, pos);
            goto fail;
        }
        pos = begin + t->nbytes;
    }
    if (pos != buf_size) {
        if (st->n_tensors > 0)
            ot_fail(err, "%s: %zu stray bytes after the last tensor '%s' (data buffer is %zu bytes, tensors end at %zu)", path,
                    buf_size - pos, st->tensors[st->n_tensors - 1].name, buf_size, pos);
        else
            ot_fail(err, "%s: %zu bytes of data but the header lists no tensors", path, buf_size);
        goto fail;
    }
    json_decref(root);
    return 0;

fail:
    if (root) json_decref(root);
    ot_safetensors_close(st);
    return -1;
}

void ot_safetensors_close(ot_safetensors *st) {
    if (st->tensors)
        for (int i = 0; i < st->n_tensors; i++) free((char *)st->tensors[i].name);
    free(st->tensors);
    if (st->map) munmap(st->map, st->map_size);
    free(st->metadata_json);
    free(st->path);
    memset(st, 0, sizeof *st);
}

const ot_tensor *ot_safetensors_find(const ot_safetensors *st, const char *name) {
    // Files hold a few hundred tensors at most; callers that look up many names build their own index
    // (ot_checkpoint does).
    for (int i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

// ---- writer ---------------------------------------------------------------------------------------------------
typedef struct {
    char *name;
    ot_dtype dtype;
    int ndim;
    int64_t shape[OT_MAX_DIMS];
    const void *data;
    size_t nbytes;
} st_entry;

struct ot_st_writer {
    int n, cap;
    st_entry *entries;
    json_t *metadata;
    ot_err first_error; // add() has no return value: a bad call is remembered and reported by finish/begin
    int failed;
};

ot_st_writer *ot_st_writer_new(void) {
    ot_st_writer *w = ot_calloc(1, sizeof *w);
    w->metadata = json_object();
    json_object_set_new(w->metadata, "format", json_string("pt")); // what torch-based readers expect
    return w;
}

void ot_st_writer_add(ot_st_writer *w, const char *name, ot_dtype dt, int ndim, const int64_t *shape, const void *data) {
    if (w->failed) return;
    if (ot_dtype_size(dt) == 0) {
        w->failed = ot_fail(&w->first_error, "tensor '%s': invalid dtype %d", name, (int)dt);
        return;
    }
    if (ndim < 0 || ndim > OT_MAX_DIMS) {
        w->failed = ot_fail(&w->first_error, "tensor '%s': %d dimensions (0..%d allowed)", name, ndim, OT_MAX_DIMS);
        return;
    }
    if (strcmp(name, "__metadata__") == 0) {
        w->failed = ot_fail(&w->first_error, "\"__metadata__\" is reserved and cannot name a tensor");
        return;
    }
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0) {
            w->failed = ot_fail(&w->first_error, "tensor '%s' added twice", name);
            return;
        }
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel)) {
            w->failed = ot_fail(&w->first_error, "tensor '%s': bad shape (dimension %d = %lld)", name, i, (long long)shape[i]);
            return;
        }
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->entries = ot_realloc(w->entries, (size_t)w->cap * sizeof(st_entry));
    }
    st_entry *e = &w->entries[w->n++];
    memset(e, 0, sizeof *e);
    e->name = ot_strdup(name);
    e->dtype = dt;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = (size_t)numel * ot_dtype_size(dt);
}

void ot_st_writer_set_metadata(ot_st_writer *w, const char *key, const char *value) {
    json_object_set_new(w->metadata, key, json_string(value));
}

size_t ot_st_writer_data_bytes(const ot_st_writer *w) {
    size_t total = 0;
    for (int i = 0; i < w->n; i++) total += w->entries[i].nbytes;
    return total;
}

static void writer_free(ot_st_writer *w) {
    for (int i = 0; i < w->n; i++) free(w->entries[i].name);
    free(w->entries);
    json_decref(w->metadata);
    free(w);
}

// The header: "__metadata__" first, then the tensors in the order added, their ranges back to back;
// padded with spaces so the data buffer starts at a multiple of 8 bytes in the file.
static char *build_header(const ot_st_writer *w, size_t *len_out) {
    json_t *root = json_object();
    json_object_set(root, "__metadata__", w->metadata);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const st_entry *e = &w->entries[i];
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *ent = json_object();
        json_object_set_new(ent, "dtype", json_string(ot_dtype_name(e->dtype)));
        json_object_set_new(ent, "shape", shape);
        json_object_set_new(ent, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + e->nbytes)));
        json_object_set_new(root, e->name, ent);
        off += e->nbytes;
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) ot_die("json_dumps failed building a safetensors header");
    size_t n = strlen(text), padded = n + (8 - (8 + n) % 8) % 8;
    text = ot_realloc(text, padded + 1);
    memset(text + n, ' ', padded - n);
    text[padded] = 0;
    *len_out = padded;
    return text;
}

struct ot_st_stream {
    int fd;
    char *path, *tmp;
    uint64_t expected, written;
};

static int write_all(int fd, const void *data, size_t n, const char *what, ot_err *err) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return ot_fail(err, "%s: write failed: %s", what, strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

ot_st_stream *ot_st_stream_begin(ot_st_writer *w, const char *path, ot_err *err) {
    if (w->failed) {
        ot_fail(err, "%s: %s", path, w->first_error.msg);
        writer_free(w);
        return NULL;
    }
    ot_st_stream *s = ot_calloc(1, sizeof *s);
    s->path = ot_strdup(path);
    size_t n = strlen(path) + 8;
    s->tmp = ot_malloc(n);
    snprintf(s->tmp, n, "%s.tmp", path);
    s->expected = ot_st_writer_data_bytes(w);
    size_t hlen;
    char *header = build_header(w, &hlen);
    writer_free(w);
    s->fd = ot_open_temp(path, s->tmp, err);
    if (s->fd < 0) {
        free(header);
        ot_st_stream_abort(s);
        return NULL;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int rc = write_all(s->fd, len8, 8, s->tmp, err);
    if (!rc) rc = write_all(s->fd, header, hlen, s->tmp, err);
    free(header);
    if (rc) {
        ot_st_stream_abort(s);
        return NULL;
    }
    return s;
}

int ot_st_stream_write(ot_st_stream *s, const void *data, size_t nbytes, ot_err *err) {
    if (s->written + nbytes > s->expected)
        return ot_fail(err, "%s: %llu bytes written, more than the %llu the header declares", s->tmp,
                       (unsigned long long)(s->written + nbytes), (unsigned long long)s->expected);
    if (write_all(s->fd, data, nbytes, s->tmp, err)) return -1;
    s->written += nbytes;
    return 0;
}

void ot_st_stream_abort(ot_st_stream *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    unlink(s->tmp);
    free(s->tmp);
    free(s->path);
    free(s);
}

int ot_st_stream_finish(ot_st_stream *s, ot_err *err) {
    if (s->written != s->expected) {
        ot_fail(err, "%s: only %llu of the %llu data bytes the header declares were written", s->tmp,
                (unsigned long long)s->written, (unsigned long long)s->expected);
        ot_st_stream_abort(s);
        return -1;
    }
    if (fsync(s->fd) != 0) {
        ot_fail(err, "%s: fsync failed: %s", s->tmp, strerror(errno));
        ot_st_stream_abort(s);
        return -1;
    }
    int rc = close(s->fd);
    s->fd = -1;
    if (rc != 0) {
        ot_fail(err, "%s: close failed: %s", s->tmp, strerror(errno));
        ot_st_stream_abort(s);
        return -1;
    }
    if (rename(s->tmp, s->path) != 0) {
        ot_fail(err, "cannot rename %s to %s: %s", s->tmp, s->path, strerror(errno));
        ot_st_stream_abort(s);
        return -1;
    }
    rc = ot_fsync_parent_dir(s->path, err);
    free(s->tmp);
    free(s->path);
    free(s);
    return rc;
}

int ot_st_writer_finish(ot_st_writer *w, const char *path, ot_err *err) {
    // Keep the data pointers: begin() consumes the writer.
    int n = w->n;
    const void **data = ot_malloc((size_t)(n ? n : 1) * sizeof(void *));
    size_t *nbytes = ot_malloc((size_t)(n ? n : 1) * sizeof(size_t));
    for (int i = 0; i < n; i++) {
        data[i] = w->entries[i].data;
        nbytes[i] = w->entries[i].nbytes;
    }
    int rc = 0;
    for (int i = 0; i < n && !w->failed; i++)
        if (!data[i] && nbytes[i] > 0) w->failed = ot_fail(&w->first_error, "tensor '%s' has no data", w->entries[i].name);
    ot_st_stream *s = ot_st_stream_begin(w, path, err);
    if (!s) rc = -1;
    for (int i = 0; i < n && !rc; i++) rc = ot_st_stream_write(s, data[i], nbytes[i], err);
    if (s) {
        if (rc) ot_st_stream_abort(s);
        else rc = ot_st_stream_finish(s, err);
    }
    free(data);
    free(nbytes);
    return rc;
}
