// safetensors container (spec §3.2): strict, bounds-checked reader over mmap, and an atomic writer.
#ifndef OT_FORMATS_SAFETENSORS_H
#define OT_FORMATS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"

typedef enum {
    OT_DT_INVALID = 0,
    OT_DT_BOOL, OT_DT_U8, OT_DT_I8, OT_DT_U16, OT_DT_I16, OT_DT_F16, OT_DT_BF16,
    OT_DT_U32, OT_DT_I32, OT_DT_F32, OT_DT_U64, OT_DT_I64, OT_DT_F64,
    OT_DT_F8_E4M3, OT_DT_F8_E5M2,
} ot_dtype;

const char *ot_dtype_name(ot_dtype dt);        // "BF16"
ot_dtype ot_dtype_from_name(const char *name); // OT_DT_INVALID when unknown
size_t ot_dtype_size(ot_dtype dt);

#define OT_MAX_DIMS 8
typedef struct {
    const char *name;      // owned by the file
    ot_dtype dtype;
    int ndim;
    int64_t shape[OT_MAX_DIMS];
    int64_t numel;
    const uint8_t *data;   // points into the mapping
    size_t nbytes;
    const char *file;      // path of the file it lives in
} ot_tensor;

typedef struct {
    char *path;
    void *map;
    size_t map_size;
    int n_tensors;
    ot_tensor *tensors;    // sorted by data offset
    char *metadata_json;   // the "__metadata__" object as JSON text, or NULL
} ot_safetensors;

// Maps and validates a file: header length within the file, JSON parsed by jansson, every dtype known,
// numel × size == end − begin, ranges in bounds, sorted ranges tiling the byte buffer with no gap or overlap.
// On error returns -1 with a message naming the file (and the tensor, when one is at fault).
int ot_safetensors_open(ot_safetensors *st, const char *path, ot_err *err);
void ot_safetensors_close(ot_safetensors *st);
const ot_tensor *ot_safetensors_find(const ot_safetensors *st, const char *name);

// Writer: add tensors (data is copied on write, not on add: keep it alive until ot_st_writer_finish), then
// finish writes "<path>.tmp", fsyncs, renames to path. Tensors are written in the order added.
typedef struct ot_st_writer ot_st_writer;
ot_st_writer *ot_st_writer_new(void);
void ot_st_writer_add(ot_st_writer *w, const char *name, ot_dtype dt, int ndim, const int64_t *shape, const void *data);
void ot_st_writer_set_metadata(ot_st_writer *w, const char *key, const char *value);
size_t ot_st_writer_data_bytes(const ot_st_writer *w);
int ot_st_writer_finish(ot_st_writer *w, const char *path, ot_err *err); // frees w in every case

// Streaming: for files too big to hold in memory (osstune-init-model's 20b shards). Declare every tensor with
// ot_st_writer_add (data may be NULL: it is never read), then ot_st_stream_begin writes the header to
// "<path>.tmp"; append the tensors' bytes in declaration order, in chunks of any size; ot_st_stream_finish checks
// that exactly the declared number of bytes arrived, fsyncs and renames to path.
typedef struct ot_st_stream ot_st_stream;
ot_st_stream *ot_st_stream_begin(ot_st_writer *w, const char *path, ot_err *err); // consumes w; NULL on error
int ot_st_stream_write(ot_st_stream *s, const void *data, size_t nbytes, ot_err *err);
int ot_st_stream_finish(ot_st_stream *s, ot_err *err); // frees s in every case; removes the temp file on error
void ot_st_stream_abort(ot_st_stream *s);               // removes the temp file, frees s

#endif
