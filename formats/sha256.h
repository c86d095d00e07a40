// SHA-256 (FIPS 180-4), streaming. Used to fingerprint the tokenizer file so that a data set records exactly
// which vocabulary produced its ids.
#ifndef OT_FORMATS_SHA256_H
#define OT_FORMATS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"

typedef struct {
    uint32_t h[8];
    uint64_t total_len; // bytes fed so far
    uint8_t block[64];
    size_t block_len;   // bytes waiting in block
} ot_sha256_ctx;

void ot_sha256_init(ot_sha256_ctx *c);
void ot_sha256_update(ot_sha256_ctx *c, const void *data, size_t len);
void ot_sha256_final(ot_sha256_ctx *c, uint8_t digest[32]);

// One-shot helpers. hex is 64 lowercase hex digits + NUL.
void ot_sha256(const void *data, size_t len, uint8_t digest[32]);
void ot_sha256_hex(const uint8_t digest[32], char hex[65]);
// Hash a whole file; -1 with a message naming the file if it cannot be read.
int ot_sha256_file(const char *path, char hex[65], ot_err *err);

#endif
