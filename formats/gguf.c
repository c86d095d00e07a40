// GGUF v3 streaming writer and the ggml block formats (spec §5.1, §5.4). See gguf.h for the contract.
#include "formats/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/json_util.h"

// ---- ggml types ---------------------------------------------------------------------------------------------------
const char *ot_ggml_type_name(ot_ggml_type t) {
    switch (t) {
    case OT_GGML_F32: return "F32";
    case OT_GGML_F16: return "F16";
    case OT_GGML_Q8_0: return "Q8_0";
    case OT_GGML_BF16: return "BF16";
    case OT_GGML_MXFP4: return "MXFP4";
    }
    return NULL;
}

int ot_ggml_block_elems(ot_ggml_type t) {
    return (t == OT_GGML_Q8_0 || t == OT_GGML_MXFP4) ? 32 : 1;
}

size_t ot_ggml_block_bytes(ot_ggml_type t) {
    switch (t) {
    case OT_GGML_F32: return 4;
    case OT_GGML_F16:
    case OT_GGML_BF16: return 2;
    case OT_GGML_Q8_0: return OT_Q8_0_BLOCK_BYTES;
    case OT_GGML_MXFP4: return OT_MXFP4_BLOCK_BYTES;
    }
    return 0;
}

size_t ot_ggml_row_bytes(ot_ggml_type t, int64_t ne0) {
    int be = ot_ggml_block_elems(t);
    if (ne0 <= 0 || ne0 % be != 0 || ot_ggml_block_bytes(t) == 0) return 0;
    return (size_t)(ne0 / be) * ot_ggml_block_bytes(t);
}

// ---- MXFP4 --------------------------------------------------------------------------------------------------------
void ot_gguf_mxfp4_repack(uint8_t *dst, const uint8_t *blocks, const uint8_t *scales, int64_t n_groups) {
    for (int64_t g = 0; g < n_groups; g++) {
        const uint8_t *hf = blocks + g * 16;
        uint8_t *out = dst + g * OT_MXFP4_BLOCK_BYTES;
        // Unpack the 32 nibbles in element order (HF: element 2j low, 2j+1 high in byte j) ...
        uint8_t nib[32];
        for (int j = 0; j < 16; j++) {
            nib[2 * j] = hf[j] & 0x0F;
            nib[2 * j + 1] = hf[j] >> 4;
        }
        // ... and pack them the ggml way: element k low, element k+16 high in qs[k]; the scale byte goes first.
        out[0] = scales[g];
        for (int k = 0; k < 16; k++) out[1 + k] = (uint8_t)(nib[k] | (nib[k + 16] << 4));
    }
}

void ot_gguf_mxfp4_dequant(float *dst, const uint8_t *src, int64_t n) {
    // ggml's table is the E2M1 value doubled; its scale 2^(e − 128) halves it back (spec §5.4).
    static const float kvalues[16] = {0, 1, 2, 3, 4, 6, 8, 12, -0.0f, -1, -2, -3, -4, -6, -8, -12};
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *blk = src + b * OT_MXFP4_BLOCK_BYTES;
        float d = ldexpf(1.0f, (int)blk[0] - 128);
        for (int k = 0; k < 16; k++) {
            dst[b * 32 + k] = kvalues[blk[1 + k] & 0x0F] * d;
            dst[b * 32 + k + 16] = kvalues[blk[1 + k] >> 4] * d;
        }
    }
}

// ---- Q8_0 ---------------------------------------------------------------------------------------------------------
void ot_gguf_quantize_q8_0(uint8_t *dst, const float *src, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++) {
        const float *x = src + b * 32;
        uint8_t *out = dst + b * OT_Q8_0_BLOCK_BYTES;
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        // The quotient uses the fp32 d, as ggml does; only the stored scale is rounded to fp16.
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = ot_f32_to_f16(d);
        out[0] = (uint8_t)(dh & 0xFF);
        out[1] = (uint8_t)(dh >> 8);
        for (int i = 0; i < 32; i++) {
            float q = roundf(x[i] * id);
            // |x·id| ≤ 127 up to rounding of id; clamp so a last-ulp excess can never wrap around.
            q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
            out[2 + i] = (uint8_t)(int8_t)q;
        }
    }
}

void ot_gguf_dequant_q8_0(float *dst, const uint8_t *src, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *blk = src + b * OT_Q8_0_BLOCK_BYTES;
        float d = ot_f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
        for (int i = 0; i < 32; i++) dst[b * 32 + i] = (float)(int8_t)blk[2 + i] * d;
    }
}

// ---- the writer -----------------------------------------------------------------------------------------------------
typedef struct {
    char *name;
    ot_ggml_type type;
    int n_dims;
    int64_t ne[OT_GGUF_MAX_DIMS];
    uint64_t nbytes, offset; // offset within the data section
} tensor_info;

struct ot_gguf_writer {
    // Metadata is serialized as it is set: the key/value pairs exactly as they go on disk.
    uint8_t *kv;
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    char **keys;
    int failed;
    ot_err first_error;

    tensor_info *tensors;
    int n_tensors, cap_tensors;
    uint64_t data_bytes; // sum of padded tensor sizes

    // Set by begin.
    int begun;
    char *path, *tmp;
    FILE *f;
    int cur;             // tensor being written
    uint64_t cur_done;   // bytes of it written so far
};

static void buf_put(ot_gguf_writer *w, const void *p, size_t n) {
    if (w->kv_len + n > w->kv_cap) {
        while (w->kv_len + n > w->kv_cap) w->kv_cap = w->kv_cap ? 2 * w->kv_cap : 4096;
        w->kv = ot_realloc(w->kv, w->kv_cap);
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
}
// Little-endian integers regardless of the host (every supported host is little-endian, but say it once here).
static void put_u32(ot_gguf_writer *w, uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    buf_put(w, b, 4);
}
static void put_u64(ot_gguf_writer *w, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    buf_put(w, b, 8);
}
static void put_str(ot_gguf_writer *w, const char *s, size_t n) {
    put_u64(w, (uint64_t)n);
    buf_put(w, s, n);
}

static size_t scalar_size(ot_gguf_type t) {
    switch (t) {
    case OT_GGUF_U8:
    case OT_GGUF_I8:
    case OT_GGUF_BOOL: return 1;
    case OT_GGUF_U16:
    case OT_GGUF_I16: return 2;
    case OT_GGUF_U32:
    case OT_GGUF_I32:
    case OT_GGUF_F32: return 4;
    case OT_GGUF_U64:
    case OT_GGUF_I64:
    case OT_GGUF_F64: return 8;
    default: return 0; // STRING, ARRAY
    }
}

static void fail_once(ot_gguf_writer *w, const char *fmt, const char *key) {
    if (w->failed) return;
    w->failed = 1;
    snprintf(w->first_error.msg, sizeof w->first_error.msg, fmt, key);
}

// Start a key/value pair; returns 0 if the key is acceptable.
static int begin_kv(ot_gguf_writer *w, const char *key, ot_gguf_type type) {
    if (w->begun) {
        fail_once(w, "metadata key '%s' set after the header was written", key);
        return -1;
    }
    if (!key || !*key) {
        fail_once(w, "%s", "empty metadata key");
        return -1;
    }
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) {
            fail_once(w, "metadata key '%s' set twice", key);
            return -1;
        }
    w->keys = ot_realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof(char *));
    w->keys[w->n_kv++] = ot_strdup(key);
    put_str(w, key, strlen(key));
    put_u32(w, (uint32_t)type);
    return 0;
}

static void set_scalar(ot_gguf_writer *w, const char *key, ot_gguf_type type, const void *v) {
    if (begin_kv(w, key, type)) return;
    buf_put(w, v, scalar_size(type));
}

void ot_gguf_set_u8(ot_gguf_writer *w, const char *key, uint8_t v) { set_scalar(w, key, OT_GGUF_U8, &v); }
void ot_gguf_set_i8(ot_gguf_writer *w, const char *key, int8_t v) { set_scalar(w, key, OT_GGUF_I8, &v); }
void ot_gguf_set_u16(ot_gguf_writer *w, const char *key, uint16_t v) { set_scalar(w, key, OT_GGUF_U16, &v); }
void ot_gguf_set_i16(ot_gguf_writer *w, const char *key, int16_t v) { set_scalar(w, key, OT_GGUF_I16, &v); }
void ot_gguf_set_u32(ot_gguf_writer *w, const char *key, uint32_t v) { set_scalar(w, key, OT_GGUF_U32, &v); }
void ot_gguf_set_i32(ot_gguf_writer *w, const char *key, int32_t v) { set_scalar(w, key, OT_GGUF_I32, &v); }
void ot_gguf_set_f32(ot_gguf_writer *w, const char *key, float v) { set_scalar(w, key, OT_GGUF_F32, &v); }
void ot_gguf_set_u64(ot_gguf_writer *w, const char *key, uint64_t v) { set_scalar(w, key, OT_GGUF_U64, &v); }
void ot_gguf_set_i64(ot_gguf_writer *w, const char *key, int64_t v) { set_scalar(w, key, OT_GGUF_I64, &v); }
void ot_gguf_set_f64(ot_gguf_writer *w, const char *key, double v) { set_scalar(w, key, OT_GGUF_F64, &v); }
void ot_gguf_set_bool(ot_gguf_writer *w, const char *key, int v) {
    uint8_t b = v ? 1 : 0;
    set_scalar(w, key, OT_GGUF_BOOL, &b);
}

void ot_gguf_set_strn(ot_gguf_writer *w, const char *key, const char *v, size_t len) {
    if (begin_kv(w, key, OT_GGUF_STRING)) return;
    put_str(w, v, len);
}
void ot_gguf_set_str(ot_gguf_writer *w, const char *key, const char *v) { ot_gguf_set_strn(w, key, v, strlen(v)); }

void ot_gguf_set_array(ot_gguf_writer *w, const char *key, ot_gguf_type elem, const void *data, uint64_t n) {
    size_t es = scalar_size(elem);
    if (es == 0) {
        fail_once(w, "metadata key '%s': ot_gguf_set_array takes fixed-size element types only", key);
        return;
    }
    if (begin_kv(w, key, OT_GGUF_ARRAY)) return;
    put_u32(w, (uint32_t)elem);
    put_u64(w, n);
    if (n) buf_put(w, data, (size_t)n * es);
}

void ot_gguf_set_str_array(ot_gguf_writer *w, const char *key, const char *const *v, const size_t *lens, uint64_t n) {
    if (begin_kv(w, key, OT_GGUF_ARRAY)) return;
    put_u32(w, (uint32_t)OT_GGUF_STRING);
    put_u64(w, n);
    for (uint64_t i = 0; i < n; i++) put_str(w, v[i], lens ? lens[i] : strlen(v[i]));
}

static uint64_t align_up(uint64_t x) { return (x + OT_GGUF_ALIGNMENT - 1) / OT_GGUF_ALIGNMENT * OT_GGUF_ALIGNMENT; }

uint64_t ot_gguf_add_tensor(ot_gguf_writer *w, const char *name, ot_ggml_type type, int n_dims, const int64_t *ne,
                            ot_err *err) {
    if (w->begun) {
        ot_fail(err, "GGUF tensor '%s' declared after the header was written", name);
        return 0;
    }
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > OT_GGUF_MAX_NAME) {
        ot_fail(err, "GGUF tensor name '%s' must have 1..%d bytes", name ? name : "", OT_GGUF_MAX_NAME);
        return 0;
    }
    if (!ot_ggml_type_name(type)) {
        ot_fail(err, "GGUF tensor '%s': unknown ggml type %d", name, (int)type);
        return 0;
    }
    if (n_dims < 1 || n_dims > OT_GGUF_MAX_DIMS) {
        ot_fail(err, "GGUF tensor '%s': %d dimensions (1..%d allowed)", name, n_dims, OT_GGUF_MAX_DIMS);
        return 0;
    }
    for (int i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name)) {
            ot_fail(err, "GGUF tensor '%s' declared twice", name);
            return 0;
        }
    uint64_t rows = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) {
            ot_fail(err, "GGUF tensor '%s': ne[%d] = %lld must be positive", name, d, (long long)ne[d]);
            return 0;
        }
        if (d > 0) rows *= (uint64_t)ne[d];
    }
    size_t row = ot_ggml_row_bytes(type, ne[0]);
    if (row == 0) {
        ot_fail(err, "GGUF tensor '%s': ne[0] = %lld is not a multiple of the %s block size %d", name, (long long)ne[0],
                ot_ggml_type_name(type), ot_ggml_block_elems(type));
        return 0;
    }
    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? 2 * w->cap_tensors : 64;
        w->tensors = ot_realloc(w->tensors, (size_t)w->cap_tensors * sizeof *w->tensors);
    }
    tensor_info *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = ot_strdup(name);
    t->type = type;
    t->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
    t->nbytes = (uint64_t)row * rows;
    t->offset = w->data_bytes;
    w->data_bytes += align_up(t->nbytes);
    return t->nbytes;
}

int ot_gguf_n_tensors(const ot_gguf_writer *w) { return w->n_tensors; }
uint64_t ot_gguf_data_bytes(const ot_gguf_writer *w) { return w->data_bytes; }
int ot_gguf_current_tensor(const ot_gguf_writer *w) { return w->cur; }

ot_gguf_writer *ot_gguf_writer_new(void) { return ot_calloc(1, sizeof(ot_gguf_writer)); }

void ot_gguf_writer_free(ot_gguf_writer *w) {
    if (!w) return;
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->kv);
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->tensors);
    if (w->f) fclose(w->f);
    free(w->path);
    free(w->tmp);
    free(w);
}

void ot_gguf_abort(ot_gguf_writer *w) {
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        w->f = NULL;
    }
    if (w->tmp) unlink(w->tmp);
    ot_gguf_writer_free(w);
}

static int file_write(ot_gguf_writer *w, const void *p, size_t n, ot_err *err) {
    if (n && fwrite(p, 1, n, w->f) != n) return ot_fail(err, "%s: write failed: %s", w->tmp, strerror(errno));
    return 0;
}

static const uint8_t zeros[OT_GGUF_ALIGNMENT];

int ot_gguf_begin(ot_gguf_writer *w, const char *path, ot_err *err) {
    if (w->begun) return ot_fail(err, "%s: GGUF writer already begun", path);
    if (w->failed) return ot_fail(err, "%s: %s", path, w->first_error.msg);
    w->begun = 1;
    w->path = ot_strdup(path);
    size_t n = strlen(path) + 8;
    w->tmp = ot_malloc(n);
    snprintf(w->tmp, n, "%s.tmp", path);
    int fd = ot_open_temp(path, w->tmp, err);
    if (fd < 0) return -1;
    w->f = fdopen(fd, "wb");
    if (!w->f) {
        close(fd);
        return ot_fail(err, "%s: cannot create: %s", w->tmp, strerror(errno));
    }
    // A large buffer: the data arrives in many small pieces (one expert row at a time).
    setvbuf(w->f, NULL, _IOFBF, 1 << 22);

    // The header and tensor infos are built in the kv buffer's tail, then written in one go.
    size_t kv_len = w->kv_len;
    put_u32(w, OT_GGUF_MAGIC);
    put_u32(w, OT_GGUF_VERSION);
    put_u64(w, (uint64_t)w->n_tensors);
    put_u64(w, w->n_kv);
    size_t head_start = kv_len, head_len = w->kv_len - kv_len;
    int rc = file_write(w, w->kv + head_start, head_len, err);
    if (!rc) rc = file_write(w, w->kv, kv_len, err);
    w->kv_len = kv_len; // drop the header bytes again: the buffer is reused for the tensor infos below
    uint64_t pos = head_len + kv_len;
    for (int i = 0; i < w->n_tensors && !rc; i++) {
        const tensor_info *t = &w->tensors[i];
        w->kv_len = kv_len;
        put_str(w, t->name, strlen(t->name));
        put_u32(w, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(w, (uint64_t)t->ne[d]);
        put_u32(w, (uint32_t)t->type);
        put_u64(w, t->offset);
        rc = file_write(w, w->kv + kv_len, w->kv_len - kv_len, err);
        pos += w->kv_len - kv_len;
    }
    w->kv_len = kv_len;
    // Pad so the data section starts on the alignment.
    if (!rc) rc = file_write(w, zeros, (size_t)(align_up(pos) - pos), err);
    w->cur = 0;
    w->cur_done = 0;
    return rc;
}

// After a tensor's last byte: pad to the alignment and move on to the next non-empty tensor.
static int close_finished_tensors(ot_gguf_writer *w, ot_err *err) {
    while (w->cur < w->n_tensors && w->cur_done == w->tensors[w->cur].nbytes) {
        uint64_t pad = align_up(w->tensors[w->cur].nbytes) - w->tensors[w->cur].nbytes;
        if (file_write(w, zeros, (size_t)pad, err)) return -1;
        w->cur++;
        w->cur_done = 0;
    }
    return 0;
}

int ot_gguf_write(ot_gguf_writer *w, const void *data, size_t nbytes, ot_err *err) {
    if (!w->begun || !w->f) return ot_fail(err, "GGUF writer: data written before ot_gguf_begin");
    const uint8_t *p = data;
    while (nbytes > 0) {
        if (w->cur >= w->n_tensors)
            return ot_fail(err, "%s: %zu bytes written beyond the last declared tensor", w->tmp, nbytes);
        const tensor_info *t = &w->tensors[w->cur];
        uint64_t left = t->nbytes - w->cur_done;
        size_t take = nbytes < left ? nbytes : (size_t)left;
        if (file_write(w, p, take, err)) return -1;
        p += take;
        nbytes -= take;
        w->cur_done += take;
        if (close_finished_tensors(w, err)) return -1;
    }
    return 0;
}

int ot_gguf_finish(ot_gguf_writer *w, ot_err *err) {
    int rc = 0;
    if (!w->begun || !w->f) rc = ot_fail(err, "GGUF writer: finish before ot_gguf_begin");
    if (!rc && w->cur < w->n_tensors)
        rc = ot_fail(err, "%s: tensor '%s' (and %d after it) got %llu of %llu bytes", w->tmp, w->tensors[w->cur].name,
                     w->n_tensors - w->cur - 1, (unsigned long long)w->cur_done,
                     (unsigned long long)w->tensors[w->cur].nbytes);
    if (!rc && fflush(w->f) != 0) rc = ot_fail(err, "%s: write failed: %s", w->tmp, strerror(errno));
    if (!rc && fsync(fileno(w->f)) != 0) rc = ot_fail(err, "%s: fsync failed: %s", w->tmp, strerror(errno));
    if (!rc) {
        int c = fclose(w->f);
        w->f = NULL;
        if (c != 0) rc = ot_fail(err, "%s: close failed: %s", w->tmp, strerror(errno));
    }
    if (!rc && rename(w->tmp, w->path) != 0)
        rc = ot_fail(err, "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
    if (rc) {
        ot_gguf_abort(w);
        return rc;
    }
    rc = ot_fsync_parent_dir(w->path, err);
    ot_gguf_writer_free(w);
    return rc;
}
