// The tokenized pairs file (HDF5, schema version 1; docs/data-format.md describes it for other readers).
//
//   /tokens       uint32 [n_tokens]   every sample's ids, concatenated (chunked, shuffle + deflate, fletcher32)
//   /offsets      uint64 [n + 1]      sample i is tokens[offsets[i] : offsets[i+1]]
//   /loss_start   uint32 [n]          index within sample i of its first loss-bearing token
//   /direction    uint8  [n]          the direction (formats/directions.h): 0 = zh→nan, 1 = nan→zh, 2 = zh→Tâi-lô, ...
//   /source_line  uint64 [n]          1-based line of the input file the sample came from
//   root attributes: format ("osstune-pairs"), version, tokenizer_sha256, tokenizer_vocab_size, system_text,
//   instruction_zh2nan, instruction_nan2zh, instruction_NAME for every other direction the file holds (zh2tl, ...),
//   directions, source_file, n_samples, n_tokens, n_pairs, n_rejected. A file of zh2nan / nan2zh samples has
//   exactly the attributes it had before the Tâi-lô directions existed.
//
// The writer streams (memory stays bounded whatever the input size) and writes "<path>.tmp.<pid>" first, renaming
// it to path only when everything is written, so a failed run never leaves a file that looks complete.
// The reader validates the schema, version and every index array on open and reads samples on demand. All
// functions here may be called from any thread: their HDF5 calls are serialized by one process-wide lock (HDF5
// builds need not be thread-safe).
#ifndef OT_FORMATS_PAIRS_H5_H
#define OT_FORMATS_PAIRS_H5_H

#include <stddef.h>
#include <stdint.h>

#include "common/ot_common.h"
#include "formats/directions.h"

#define OT_PAIRS_H5_FORMAT "osstune-pairs"
#define OT_PAIRS_H5_VERSION 1

// ---- writer ---------------------------------------------------------------------------------------------------
typedef struct {
    const char *tokenizer_sha256;
    uint32_t tokenizer_vocab_size;
    const char *system_text;
    // Per direction: zh2nan and nan2zh always (readers expect both); every other direction whose samples the file
    // holds (NULL: not in the file).
    const char *instruction[OT_N_DIRECTIONS];
    const char *directions;  // the --directions value: "both", "all", "zh2nan", "zh2nan,zh2tl", ...
    const char *source_file; // the input's file name (no directories)
} ot_pairs_h5_meta;

typedef struct ot_pairs_h5_writer ot_pairs_h5_writer;

ot_pairs_h5_writer *ot_pairs_h5_create(const char *path, const ot_pairs_h5_meta *meta, ot_err *err);
int ot_pairs_h5_append(ot_pairs_h5_writer *w, const int32_t *ids, int n, uint32_t loss_start, uint8_t direction,
                       uint64_t source_line, ot_err *err);
uint64_t ot_pairs_h5_written_samples(const ot_pairs_h5_writer *w);
uint64_t ot_pairs_h5_written_tokens(const ot_pairs_h5_writer *w);
// Writes the counts, closes, renames into place and frees w (also on error, removing the temporary file).
int ot_pairs_h5_finish(ot_pairs_h5_writer *w, uint64_t n_pairs, uint64_t n_rejected, ot_err *err);
// Closes, removes the temporary file, frees w.
void ot_pairs_h5_abort(ot_pairs_h5_writer *w);

// ---- reader ---------------------------------------------------------------------------------------------------
typedef struct {
    char *path;
    int64_t file, tokens, tokens_space; // HDF5 handles (hid_t)
    uint32_t version;
    int64_t n_samples;
    uint64_t n_tokens, n_pairs, n_rejected;
    uint64_t *offsets;     // [n_samples + 1]
    uint32_t *loss_start;  // [n_samples]
    uint8_t *direction;    // [n_samples]
    uint64_t *source_line; // [n_samples]
    int max_sample_len;
    char tokenizer_sha256[65];
    uint32_t vocab_size;
    char *system_text, *instruction[OT_N_DIRECTIONS], *directions, *source_file; // instruction[d] NULL: absent
} ot_pairs_h5;

// Opens and validates: an HDF5 file, format and version attributes, every dataset present with its type and
// length, offsets starting at 0 and strictly increasing up to n_tokens, loss_start inside its sample, direction
// one of the table's with its instruction attribute present. Errors name the file and what is wrong (truncated
// file, wrong version, missing dataset, ...).
int ot_pairs_h5_open(ot_pairs_h5 *r, const char *path, ot_err *err);
static inline int ot_pairs_h5_sample_len(const ot_pairs_h5 *r, int64_t i) {
    return (int)(r->offsets[i + 1] - r->offsets[i]);
}
// Reads sample i into ids (room for ot_pairs_h5_sample_len ids); checks every id is below vocab_size.
int ot_pairs_h5_read(ot_pairs_h5 *r, int64_t i, int32_t *ids, ot_err *err);
// Reads all tokens once, so a corrupt chunk (fletcher32 mismatch, bad deflate stream) or an id outside the
// vocabulary is found now rather than in the middle of training.
int ot_pairs_h5_verify(ot_pairs_h5 *r, ot_err *err);
void ot_pairs_h5_close(ot_pairs_h5 *r);

// ---- the file against a model ---------------------------------------------------------------------------------
// The file's ids are checked against its own tokenizer_vocab_size; a model with fewer ids than that would index past
// its embedding. Refuses such a file (err names it, `flag` (the option that gave it) and both vocabularies).
int ot_pairs_h5_check_vocab(const ot_pairs_h5 *r, const char *flag, int model_vocab, ot_err *err);
// Every id of sample i (as ot_pairs_h5_read gave them, n = its length) below model_vocab, else an error naming the
// file, the sample, its source line and the id.
int ot_pairs_h5_check_ids(const ot_pairs_h5 *r, int64_t i, const int32_t *ids, int model_vocab, ot_err *err);
// The loss targets sample i carries when the loss starts at its loss_start (loss_all: at every next-token position):
// tokens from max(loss_start, 1) on. A sample of one token has none.
int ot_pairs_h5_sample_targets(const ot_pairs_h5 *r, int64_t i, int loss_all);

#endif
