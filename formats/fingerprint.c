// Fingerprints: SHA-256 of what a run was started with, recorded in every checkpoint so that a resume can tell a
// different base model, data file or configuration from the same one (see fingerprint.h).
#include "formats/fingerprint.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/fileio.h"
#include "formats/json_util.h"
#include "formats/sha256.h"

// dir/name into a path buffer; a path that does not fit is an error rather than a silently different path.
static int join(char *buf, size_t n, const char *dir, const char *name, ot_err *err) {
    int k = snprintf(buf, n, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= n) return ot_fail(err, "path too long: %.200s/%s", dir, name);
    return 0;
}

void ot_fingerprint_text(const char *text, char hex[OT_FINGERPRINT_LEN]) {
    uint8_t d[32];
    ot_sha256(text, strlen(text), d);
    ot_sha256_hex(d, hex);
}

// Feed a labelled, length-prefixed record so that no two different inputs hash the same byte stream.
static void feed(ot_sha256_ctx *c, const char *label, const void *data, size_t len) {
    char head[160];
    int k = snprintf(head, sizeof head, "%s %zu\n", label, len);
    ot_sha256_update(c, head, (size_t)k);
    ot_sha256_update(c, data, len);
}

static int feed_whole_file(ot_sha256_ctx *c, const char *dir, const char *name, ot_err *err) {
    char path[OT_PATH_MAX];
    if (join(path, sizeof path, dir, name, err)) return -1;
    size_t len;
    char *text = ot_read_file(path, &len, err);
    if (!text) return -1;
    feed(c, name, text, len);
    free(text);
    return 0;
}

static int pread_all(int fd, void *buf, size_t n, int64_t off) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r, n -= (size_t)r, off += r;
    }
    return 0;
}

#define FP_SAMPLES 8
#define FP_SAMPLE_BYTES (64 << 10)

// A shard: name, size, the 8-byte header length and JSON header, and FP_SAMPLES evenly spaced windows of data.
static int feed_shard(ot_sha256_ctx *c, const char *dir, const char *name, ot_err *err) {
    char path[OT_PATH_MAX];
    if (join(path, sizeof path, dir, name, err)) return -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ot_fail(err, "%s: cannot open to fingerprint it: %s", path, strerror(errno));
    struct stat sb;
    uint8_t len8[8];
    int rc = 0;
    if (fstat(fd, &sb) != 0 || sb.st_size < 8 || pread_all(fd, len8, 8, 0))
        rc = ot_fail(err, "%s: too short or unreadable for a safetensors file", path);
    uint64_t hlen = 0;
    for (int i = 0; i < 8 && !rc; i++) hlen |= (uint64_t)len8[i] << (8 * i);
    if (!rc && hlen > (uint64_t)sb.st_size - 8)
        rc = ot_fail(err, "%s: header length %llu exceeds the file size", path, (unsigned long long)hlen);
    if (!rc) {
        char size_text[32];
        snprintf(size_text, sizeof size_text, "%lld", (long long)sb.st_size);
        feed(c, "shard", name, strlen(name));
        feed(c, "size", size_text, strlen(size_text));
        uint8_t *buf = ot_malloc(hlen > FP_SAMPLE_BYTES ? hlen : FP_SAMPLE_BYTES);
        if (pread_all(fd, buf, hlen, 8)) rc = ot_fail(err, "%s: cannot read the header", path);
        else feed(c, "header", buf, hlen);
        int64_t data_off = 8 + (int64_t)hlen, data_len = (int64_t)sb.st_size - data_off;
        for (int i = 0; i < FP_SAMPLES && !rc; i++) {
            int64_t win = data_len < FP_SAMPLE_BYTES ? data_len : FP_SAMPLE_BYTES;
            int64_t off = data_off + (data_len - win) * i / (FP_SAMPLES - 1);
            if (pread_all(fd, buf, (size_t)win, off))
                rc = ot_fail(err, "%s: cannot read at offset %lld", path, (long long)off);
            else feed(c, "sample", buf, (size_t)win);
        }
        free(buf);
    }
    close(fd);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int ot_fingerprint_model_dir(const char *dir, char hex[OT_FINGERPRINT_LEN], ot_err *err) {
    ot_sha256_ctx c;
    ot_sha256_init(&c);
    const char *tag = "osstune-model-fingerprint-1";
    ot_sha256_update(&c, tag, strlen(tag));
    if (feed_whole_file(&c, dir, "config.json", err)) return -1;

    char path[OT_PATH_MAX];
    if (join(path, sizeof path, dir, "model.safetensors.index.json", err)) return -1;
    const char **shards = NULL;
    int n_shards = 0, rc = 0;
    json_t *index = NULL;
    if (access(path, F_OK) == 0) {
        if (feed_whole_file(&c, dir, "model.safetensors.index.json", err)) return -1;
        index = ot_json_load_file(path, err);
        if (!index) return -1;
        json_t *map = json_object_get(index, "weight_map");
        if (!json_is_object(map)) {
            json_decref(index);
            return ot_fail(err, "%s: no weight_map object", path);
        }
        shards = ot_malloc((json_object_size(map) + 1) * sizeof *shards);
        const char *key;
        json_t *v;
        json_object_foreach(map, key, v) {
            if (!json_is_string(v)) {
                rc = ot_fail(err, "%s: weight_map['%s'] is not a file name", path, key);
                break;
            }
            shards[n_shards++] = json_string_value(v);
        }
        qsort(shards, (size_t)n_shards, sizeof *shards, cmp_str);
    } else {
        shards = ot_malloc(sizeof *shards);
        shards[n_shards++] = "model.safetensors";
    }
    for (int i = 0; i < n_shards && !rc; i++)
        if (i == 0 || strcmp(shards[i], shards[i - 1])) rc = feed_shard(&c, dir, shards[i], err);
    free(shards);
    json_decref(index);
    if (rc) return -1;
    uint8_t d[32];
    ot_sha256_final(&c, d);
    ot_sha256_hex(d, hex);
    return 0;
}
