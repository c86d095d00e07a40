// A rank's bytes of a shard unit from the safetensors files (see shard_read.h).
#include "trainer/model/shard_read.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// The file holding t and t's data offset in it. The checkpoint maps the files (headers only are touched); the
// tensor's place in the mapping is its place in the file.
static const ot_safetensors *file_of(const ot_checkpoint *ck, const ot_tensor *t, size_t *offset) {
    for (int i = 0; i < ck->n_files; i++) {
        const uint8_t *base = ck->files[i].map;
        if (t->data >= base && t->data + t->nbytes <= base + ck->files[i].map_size) {
            *offset = (size_t)(t->data - base);
            return &ck->files[i];
        }
    }
    return NULL;
}

static int pread_all(int fd, void *dst, size_t n, size_t off, const char *path, const char *name, ot_err *err) {
    uint8_t *p = dst;
    while (n) {
        ssize_t got = pread(fd, p, n, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return ot_fail(err, "%s: reading tensor '%s' at byte %zu: %s", path, name, off,
                           got < 0 ? strerror(errno) : "unexpected end of file");
        p += got;
        n -= (size_t)got;
        off += (size_t)got;
    }
    return 0;
}

static float src_f32(const uint8_t *p, ot_dtype dt, size_t i) {
    if (dt == OT_DT_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
    return dt == OT_DT_BF16 ? ot_bf16_to_f32(h) : ot_f16_to_f32(h);
}

// Element i of a converted source buffer into element j of dst.
static void put(uint8_t *dst, ot_shard_dtype out, size_t j, const uint8_t *src, ot_dtype in, size_t i) {
    if (out == OT_SHARD_F32) {
        float f = src_f32(src, in, i);
        memcpy(dst + 4 * j, &f, 4);
    } else if (in == OT_DT_BF16) { // already bf16: the bits as they are
        memcpy(dst + 2 * j, src + 2 * i, 2);
    } else {
        uint16_t h = ot_f32_to_bf16(src_f32(src, in, i));
        memcpy(dst + 2 * j, &h, 2);
    }
}

#define READ_CHUNK ((size_t)16 << 20) // source bytes per pread

// Elements [e0, e1) of entry e into out (e1 − e0 elements of e->dtype).
static int read_entry(const ot_shard_entry *e, const ot_checkpoint *ck, size_t e0, size_t e1, uint8_t *out,
                      size_t *bytes_read, ot_err *err) {
    const ot_tensor *t = ot_checkpoint_find(ck, e->name);
    if (!t) return ot_fail(err, "%s: tensor '%s' is missing", ck->dir, e->name);
    if ((size_t)t->numel != e->numel)
        return ot_fail(err, "%s: tensor '%s' has %lld elements, expected %zu", t->file, e->name, (long long)t->numel,
                       e->numel);
    if (e->dtype == OT_SHARD_U8 ? t->dtype != OT_DT_U8
                                : !(t->dtype == OT_DT_F32 || t->dtype == OT_DT_BF16 || t->dtype == OT_DT_F16))
        return ot_fail(err, "%s: tensor '%s' has dtype %s; expected %s", t->file, e->name, ot_dtype_name(t->dtype),
                       e->dtype == OT_SHARD_U8 ? "U8" : "BF16, F16 or F32");
    size_t foff;
    const ot_safetensors *f = file_of(ck, t, &foff);
    if (!f) return ot_fail(err, "%s: internal: tensor '%s' is not inside any mapped file", ck->dir, e->name);
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ot_fail(err, "%s: cannot open: %s", f->path, strerror(errno));
    const size_t es = ot_dtype_size(t->dtype);
    int rc = 0;
    uint8_t *buf = NULL;
    if (!e->tr_n) {
        // Contiguous: read the source elements [e0, e1) in chunks and convert.
        size_t per = READ_CHUNK / es;
        buf = ot_malloc(per * es);
        for (size_t i0 = e0; i0 < e1 && !rc; i0 += per) {
            size_t n = e1 - i0 < per ? e1 - i0 : per;
            rc = pread_all(fd, buf, n * es, foff + i0 * es, f->path, e->name, err);
            if (rc) break;
            if (bytes_read) *bytes_read += n * es;
            if (e->dtype == OT_SHARD_U8) memcpy(out + (i0 - e0), buf, n);
            else
                for (size_t i = 0; i < n; i++) put(out, e->dtype, i0 - e0 + i, buf, t->dtype, i);
        }
    } else {
        // Transposed: unit element j of matrix m is (b, a) = (j / A, j % A) ← source (a, b) of the same matrix.
        // Read each overlapping source matrix whole (one expert: at most a few tens of MB).
        const size_t A = e->tr_a, B = e->tr_b, per = A * B;
        buf = ot_malloc(per * es);
        for (size_t m = e0 / per; m * per < e1 && !rc; m++) {
            rc = pread_all(fd, buf, per * es, foff + m * per * es, f->path, e->name, err);
            if (rc) break;
            if (bytes_read) *bytes_read += per * es;
            size_t j0 = e0 > m * per ? e0 - m * per : 0, j1 = e1 < (m + 1) * per ? e1 - m * per : per;
            for (size_t j = j0; j < j1; j++) put(out, e->dtype, m * per + j - e0, buf, t->dtype, (j % A) * B + j / A);
        }
    }
    free(buf);
    close(fd);
    return rc;
}

int ot_shard_read(const ot_shard_unit *u, const ot_checkpoint *ck, size_t begin, size_t end, void *dst,
                  size_t *bytes_read, ot_err *err) {
    if (begin % 4 || end % 4 || end < begin)
        return ot_fail(err, "internal: shard read of bytes [%zu, %zu) is not 4-byte aligned", begin, end);
    uint8_t *out = dst;
    memset(out, 0, end - begin); // gaps and padding
    for (int i = 0; i < u->n_entries; i++) {
        const ot_shard_entry *e = &u->entries[i];
        size_t lo = e->offset > begin ? e->offset : begin, hi = e->offset + e->nbytes < end ? e->offset + e->nbytes : end;
        if (lo >= hi) continue;
        const size_t os = ot_shard_dtype_size(e->dtype);
        // offsets are aligned and begin/end are multiples of 4, so lo and hi fall on element boundaries
        if (read_entry(e, ck, (lo - e->offset) / os, (hi - e->offset) / os, out + (lo - begin), bytes_read, err))
            return -1;
    }
    return 0;
}
