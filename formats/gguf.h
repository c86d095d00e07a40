// GGUF version 3 (spec §5.1): a streaming writer, plus the ggml block formats osstune writes (MXFP4 re-packed from
// the HF layout, spec §5.4; Q8_0 quantized from float).
//
// The writer never holds tensor data. Declare metadata and tensor infos first, then ot_gguf_begin writes the header
// to "<path>.tmp"; the caller appends each tensor's bytes in declaration order, in chunks of any size (the writer
// pads between tensors to the alignment); ot_gguf_finish checks that every declared byte arrived, fsyncs and renames
// onto path. Any error, or ot_gguf_abort, removes the temporary file: a GGUF file at `path` is always complete.
#ifndef OT_FORMATS_GGUF_H
#define OT_FORMATS_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"

#define OT_GGUF_MAGIC 0x46554747u // "GGUF" read as a little-endian uint32
#define OT_GGUF_VERSION 3
#define OT_GGUF_ALIGNMENT 32      // the default when general.alignment is absent; osstune never changes it
#define OT_GGUF_MAX_NAME 63       // tensor names are < 64 bytes (GGML_MAX_NAME counts the NUL)
#define OT_GGUF_MAX_DIMS 4

// Metadata value types (gguf_metadata_value_type).
typedef enum {
    OT_GGUF_U8 = 0,
    OT_GGUF_I8 = 1,
    OT_GGUF_U16 = 2,
    OT_GGUF_I16 = 3,
    OT_GGUF_U32 = 4,
    OT_GGUF_I32 = 5,
    OT_GGUF_F32 = 6,
    OT_GGUF_BOOL = 7,
    OT_GGUF_STRING = 8,
    OT_GGUF_ARRAY = 9,
    OT_GGUF_U64 = 10,
    OT_GGUF_I64 = 11,
    OT_GGUF_F64 = 12,
} ot_gguf_type;

// The ggml tensor types osstune writes (ids as in ggml.h).
typedef enum {
    OT_GGML_F32 = 0,
    OT_GGML_F16 = 1,
    OT_GGML_Q8_0 = 8,
    OT_GGML_BF16 = 30,
    OT_GGML_MXFP4 = 39,
} ot_ggml_type;

const char *ot_ggml_type_name(ot_ggml_type t);   // "MXFP4"; NULL for a type this file does not know
int ot_ggml_block_elems(ot_ggml_type t);         // elements per block: 1 for F32/F16/BF16, 32 for Q8_0/MXFP4
size_t ot_ggml_block_bytes(ot_ggml_type t);      // bytes per block: 4, 2, 34, 2, 17
// Bytes of one row of ne0 elements; 0 when ne0 is not a whole number of blocks.
size_t ot_ggml_row_bytes(ot_ggml_type t, int64_t ne0);

// ---- block formats ------------------------------------------------------------------------------------------------
#define OT_MXFP4_BLOCK_BYTES 17 // ggml block_mxfp4: E8M0 exponent byte, then 16 bytes of nibbles
#define OT_Q8_0_BLOCK_BYTES 34  // ggml block_q8_0: fp16 scale, then 32 int8

// Re-pack n_groups HF MXFP4 groups (16 bytes each in `blocks`, one scale byte each in `scales`; element 2j in the
// low and 2j+1 in the high nibble of byte j) into ggml blocks (dst: n_groups × 17 bytes; scale byte first, element
// k in the low and k+16 in the high nibble of qs[k]). The nibble codes and scale bytes are carried unchanged, so the
// values are bit-exact.
void ot_gguf_mxfp4_repack(uint8_t *dst, const uint8_t *blocks, const uint8_t *scales, int64_t n_groups);
// Dequantize n elements (a multiple of 32) of ggml MXFP4 blocks: kvalue[nibble] · 2^(e − 128) (spec §5.4).
void ot_gguf_mxfp4_dequant(float *dst, const uint8_t *src, int64_t n);

// Quantize n floats (a multiple of 32) to Q8_0 blocks as ggml's reference quantizer does: per block of 32,
// d = max|x| / 127 stored as fp16, q = round(x / d) (rounded half away from zero), all-zero blocks get d = 0.
void ot_gguf_quantize_q8_0(uint8_t *dst, const float *src, int64_t n);
void ot_gguf_dequant_q8_0(float *dst, const uint8_t *src, int64_t n);

// ---- the writer -----------------------------------------------------------------------------------------------------
typedef struct ot_gguf_writer ot_gguf_writer;

ot_gguf_writer *ot_gguf_writer_new(void);
// Frees a writer that was never begun (after begin, use ot_gguf_finish or ot_gguf_abort).
void ot_gguf_writer_free(ot_gguf_writer *w);

// Metadata, written in the order set. A key set twice, an empty key or a bad type is remembered and reported by
// ot_gguf_begin, so the setters need no error handling at each call.
void ot_gguf_set_u8(ot_gguf_writer *w, const char *key, uint8_t v);
void ot_gguf_set_i8(ot_gguf_writer *w, const char *key, int8_t v);
void ot_gguf_set_u16(ot_gguf_writer *w, const char *key, uint16_t v);
void ot_gguf_set_i16(ot_gguf_writer *w, const char *key, int16_t v);
void ot_gguf_set_u32(ot_gguf_writer *w, const char *key, uint32_t v);
void ot_gguf_set_i32(ot_gguf_writer *w, const char *key, int32_t v);
void ot_gguf_set_f32(ot_gguf_writer *w, const char *key, float v);
void ot_gguf_set_bool(ot_gguf_writer *w, const char *key, int v);
void ot_gguf_set_str(ot_gguf_writer *w, const char *key, const char *v);
void ot_gguf_set_u64(ot_gguf_writer *w, const char *key, uint64_t v);
void ot_gguf_set_i64(ot_gguf_writer *w, const char *key, int64_t v);
void ot_gguf_set_f64(ot_gguf_writer *w, const char *key, double v);
// An array of n fixed-size elements (any type but STRING and ARRAY), little-endian in memory as on disk.
void ot_gguf_set_array(ot_gguf_writer *w, const char *key, ot_gguf_type elem, const void *data, uint64_t n);
// An array of n strings; lens[i] gives each length (NULL: strlen), so strings may hold any bytes.
void ot_gguf_set_str_array(ot_gguf_writer *w, const char *key, const char *const *v, const size_t *lens, uint64_t n);
// A string with an explicit length (bytes need not be NUL-free).
void ot_gguf_set_strn(ot_gguf_writer *w, const char *key, const char *v, size_t len);

// Declare a tensor: ne in ggml order (innermost first), 1..4 dims. Checks the name (non-empty, < 64 bytes, not
// declared before) and that ne0 is a whole number of blocks of `type`. Returns its data size in bytes (> 0), or 0
// with a message.
uint64_t ot_gguf_add_tensor(ot_gguf_writer *w, const char *name, ot_ggml_type type, int n_dims, const int64_t *ne,
                            ot_err *err);
int ot_gguf_n_tensors(const ot_gguf_writer *w);
uint64_t ot_gguf_data_bytes(const ot_gguf_writer *w); // bytes of the data section (with alignment padding)

// Write header, metadata and tensor infos to "<path>.tmp". After this no metadata or tensor can be added.
int ot_gguf_begin(ot_gguf_writer *w, const char *path, ot_err *err);
// Append data bytes of the declared tensors, in declaration order; a chunk may span tensors. Error if more bytes
// arrive than were declared.
int ot_gguf_write(ot_gguf_writer *w, const void *data, size_t nbytes, ot_err *err);
// Index of the tensor the next written byte belongs to (ot_gguf_n_tensors when all are complete).
int ot_gguf_current_tensor(const ot_gguf_writer *w);
// Check every declared byte arrived, fsync, rename onto path, fsync the directory. Frees w in every case; on error
// the temporary file is removed.
int ot_gguf_finish(ot_gguf_writer *w, ot_err *err);
// Remove the temporary file (if begun) and free w.
void ot_gguf_abort(ot_gguf_writer *w);

#endif
