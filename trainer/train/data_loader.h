// The training data loader: a pairs HDF5 file (formats/pairs_h5.h) -> one rank's share of every global step.
//
// Order. Epoch e visits every sample once, in a permutation that depends only on (seed, e) (Fisher–Yates driven by
// ot_rng seeded with a hash of both). The cursor {seed, epoch, next} names the next sample to consume; saving it
// with a checkpoint and passing it back to ot_loader_open resumes the exact same sequence of steps.
//
// Packing. A global step takes samples in that order and packs them greedily into rows_per_step rows of at most
// seq_len tokens: a sample that does not fit in the current row starts the next row; when the last row cannot
// take the next sample, the step ends and that sample opens the next step. A sample longer than seq_len would
// lose its answer if cut, so it is skipped (and counted; see ot_loader_stats); so is a sample without a loss target
// (a single token), which would train nothing. When an epoch runs out mid-step,
// the step continues with the next epoch's permutation.
//
// Ranks. The rows of a step are dealt in contiguous blocks: rank k gets rows [k·R/world, (k+1)·R/world) (integer
// division, R = rows_per_step; see ot_loader_row_owner), so concatenating the ranks' rows in rank order gives the
// rows in global order — what the trainer's ordered gradient sum needs to be bitwise independent of the world
// size. Every rank packs the whole step (it needs only the sample
// lengths, which are in memory) but reads the tokens of its own rows only. The union of all ranks' rows is
// therefore exactly the 1-rank step, whatever the world size, and global_targets / global_samples count the whole
// step. Inside a rank's ot_batch, rows are flattened; sample boundaries are kept (seg_start, positions restarting
// at 0), so attention never crosses samples.
//
// Prefetch. A background thread prepares the next step while the caller trains on the current one.
#ifndef OT_TRAINER_DATA_LOADER_H
#define OT_TRAINER_DATA_LOADER_H

#include <stdint.h>

#include "common/ot_common.h"
#include "formats/pairs_h5.h"
#include "trainer/graph/batch.h"

typedef struct {
    uint64_t seed;  // the data order's seed
    int64_t epoch;  // current epoch (0-based)
    int64_t next;   // index, in this epoch's permutation, of the next sample to consume
} ot_data_cursor;

typedef struct ot_loader ot_loader;

// Opens and fully validates the file (schema, version, every token read once) for a model of vocab_size ids: a file
// tokenized for a larger vocabulary is refused, and every id of every step is checked against vocab_size again
// before the batch is handed out. loss_all: every next-token position carries loss (benchmarks), instead of only
// the answer. NULL with a message when the file is bad, the sizes are invalid, or no sample can be trained.
ot_loader *ot_loader_new(const char *path, int vocab_size, int seq_len, int rows_per_step, int rank, int world,
                         int loss_all, ot_err *err);
// Starts the prefetch thread at cursor (-1 with a message when the cursor does not fit the file).
int ot_loader_start(ot_loader *l, ot_data_cursor cursor, ot_err *err);
// ot_loader_new, then ot_loader_start.
ot_loader *ot_loader_open(const char *path, int vocab_size, int seq_len, int rows_per_step, int rank, int world,
                          int loss_all, ot_data_cursor cursor, ot_err *err);
// The next step's rows for this rank. b must be initialised (ot_batch_init); its buffers are exchanged with the
// loader's, so pass the same batch every call and do not keep pointers into it across calls. after receives the
// cursor after this step (save it with the checkpoint of this step). 0, or -1 with a message.
int ot_loader_next(ot_loader *l, ot_batch *b, ot_data_cursor *after, ot_err *err);
void ot_loader_close(ot_loader *l);

// What the last ot_loader_next returned, for logs and tests: the whole global step's samples in packing order
// and the row each went to.
typedef struct {
    int n_samples;
    const int64_t *samples; // [n_samples] sample indices into the file
    const int32_t *row;     // [n_samples] global row of each (0..n_rows-1)
    int n_rows;
    ot_data_cursor before;  // the cursor this step started from
} ot_loader_step;
const ot_loader_step *ot_loader_last_step(const ot_loader *l);

typedef struct {
    int64_t n_samples;        // samples in the file
    int64_t n_too_long;       // of those, longer than seq_len (never used)
    int64_t skipped_too_long; // skips up to the last step returned (a too-long sample is skipped once per epoch)
    int64_t n_no_target;      // samples (not too long) without a loss target (never used)
    int64_t skipped_no_target;// their skips up to the last step returned
    int max_tokens_per_rank;  // an upper bound on ot_batch.T: ceil(rows_per_step / world) * seq_len
} ot_loader_stats;
ot_loader_stats ot_loader_get_stats(const ot_loader *l);
// The file's metadata (tokenizer hash, texts, counts); valid until ot_loader_close.
const ot_pairs_h5 *ot_loader_file(const ot_loader *l);

// The rank that gets global row `row` of a step with rows_per_step rows.
int ot_loader_row_owner(int row, int rows_per_step, int world);

// The permutation of epoch `epoch` for `seed` over n samples (what the loader uses), into perm[n].
void ot_loader_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm);

#endif
