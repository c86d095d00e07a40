// Data loader: deterministic shuffle, greedy packing into rows, rows dealt to ranks, background prefetch.
#include "trainer/train/data_loader.h"

#include <pthread.h>
#include <stdlib.h>

void ot_loader_permutation(uint64_t seed, int64_t epoch, int64_t n, int64_t *perm) {
    ot_rng rng;
    // Hash seed and epoch together so that neighbouring seeds or epochs give unrelated streams.
    ot_rng_seed(&rng, ot_hash64(ot_hash64(seed) ^ ((uint64_t)epoch * 0x9e3779b97f4a7c15ull + 1)));
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        // Uniform j in [0, i] without modulo bias: redraw the few values above the last full multiple of i + 1.
        uint64_t range = (uint64_t)i + 1, limit = UINT64_MAX - UINT64_MAX % range, x;
        do x = ot_rng_u64(&rng);
        while (x >= limit);
        int64_t j = (int64_t)(x % range);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

// A prepared step: the rank's batch, the step description, the cursor after it.
typedef struct {
    ot_batch batch;
    int64_t *samples;
    int32_t *row;
    int n_samples, cap_samples, n_rows;
    ot_data_cursor before, after;
    int64_t skipped_after, skipped_no_target_after; // samples skipped since open, up to the end of this step
} step_slot;

struct ot_loader {
    ot_pairs_h5 file;
    int vocab_size, seq_len, rows_per_step, rank, world, loss_all;
    int64_t n_too_long, n_no_target;

    // Producer state (touched only by the prefetch thread once it runs).
    ot_data_cursor cur;
    int64_t *perm;
    int64_t perm_epoch;
    int32_t *tokens;   // read buffer for one sample
    int64_t skipped_too_long, skipped_no_target;

    // Hand-off between the prefetch thread and ot_loader_next.
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ready, stop, failed;
    ot_err thread_err;
    step_slot next;    // being filled / ready
    step_slot current; // what the caller got last (step description only; its batch is the caller's)
    ot_loader_step last; // the public view of current
};

static void slot_push(step_slot *s, int64_t sample, int32_t row) {
    if (s->n_samples == s->cap_samples) {
        s->cap_samples = s->cap_samples ? 2 * s->cap_samples : 256;
        s->samples = ot_realloc(s->samples, sizeof(int64_t) * (size_t)s->cap_samples);
        s->row = ot_realloc(s->row, sizeof(int32_t) * (size_t)s->cap_samples);
    }
    s->samples[s->n_samples] = sample;
    s->row[s->n_samples] = row;
    s->n_samples++;
}

// Sample at the cursor, moving to the next epoch (and its permutation) when this one is used up.
static int64_t cursor_sample(ot_loader *l) {
    if (l->cur.next >= l->file.n_samples) {
        l->cur.epoch++;
        l->cur.next = 0;
    }
    if (l->perm_epoch != l->cur.epoch) {
        ot_loader_permutation(l->cur.seed, l->cur.epoch, l->file.n_samples, l->perm);
        l->perm_epoch = l->cur.epoch;
    }
    return l->perm[l->cur.next];
}

// Targets a sample contributes, exactly as ot_batch_add_sample counts them.
static int64_t sample_targets(const ot_loader *l, int64_t i) {
    return ot_pairs_h5_sample_targets(&l->file, i, l->loss_all);
}

// A sample the loader never packs: longer than a row (cutting it would lose its answer), or without a loss target
// (a single token: it would only dilute the step).
static int unusable(const ot_loader *l, int64_t i) {
    return ot_pairs_h5_sample_len(&l->file, i) > l->seq_len || sample_targets(l, i) <= 0;
}

// Packs the next global step into s and reads this rank's rows into s->batch.
static int build_step(ot_loader *l, step_slot *s, ot_err *err) {
    s->before = l->cur;
    s->n_samples = 0;
    int row = 0, used = 0;
    int64_t global_targets = 0;
    for (;;) {
        int64_t i = cursor_sample(l);
        int len = ot_pairs_h5_sample_len(&l->file, i);
        if (unusable(l, i)) {
            l->skipped_too_long += len > l->seq_len;
            l->skipped_no_target += len <= l->seq_len;
            l->cur.next++;
            continue;
        }
        if (used + len > l->seq_len) {
            if (row + 1 == l->rows_per_step) break; // the step is full; this sample opens the next one
            row++;
            used = 0;
        }
        slot_push(s, i, row);
        used += len;
        global_targets += sample_targets(l, i);
        l->cur.next++;
    }
    s->n_rows = row + 1;
    if (l->cur.next >= l->file.n_samples) { // report the cursor in its canonical form: start of the next epoch
        l->cur.epoch++;
        l->cur.next = 0;
    }
    s->after = l->cur;
    s->skipped_after = l->skipped_too_long;
    s->skipped_no_target_after = l->skipped_no_target;

    ot_batch *b = &s->batch;
    ot_batch_clear(b);
    int current_row = -1;
    for (int k = 0; k < s->n_samples; k++) {
        if (ot_loader_row_owner(s->row[k], l->rows_per_step, l->world) != l->rank) continue;
        if (s->row[k] != current_row) {
            current_row = s->row[k];
            ot_batch_begin_row(b, current_row);
        }
        int64_t i = s->samples[k];
        int n = ot_pairs_h5_sample_len(&l->file, i);
        // Ids are checked against the model's vocabulary here, on the host, before any backend indexes with them.
        if (ot_pairs_h5_read(&l->file, i, l->tokens, err) != 0 ||
            ot_pairs_h5_check_ids(&l->file, i, l->tokens, l->vocab_size, err) != 0)
            return -1;
        ot_batch_add_sample(b, l->tokens, n, l->loss_all ? 0 : (int)l->file.loss_start[i]);
    }
    b->global_targets = global_targets;
    b->global_samples = s->n_samples;
    return 0;
}

int ot_loader_row_owner(int row, int rows_per_step, int world) {
    // rank k owns [floor(k·R/W), floor((k+1)·R/W)): the largest k with floor(k·R/W) <= row
    int k = (int)(((int64_t)row * world + world - 1) / rows_per_step);
    while (k > 0 && (int64_t)k * rows_per_step / world > row) k--;
    while (k + 1 < world && (int64_t)(k + 1) * rows_per_step / world <= row) k++;
    return k;
}

static void *prefetch_main(void *arg) {
    ot_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        if (l->ready) { // the caller has not taken the prepared step yet
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        pthread_mutex_unlock(&l->mu);
        ot_err err = {{0}};
        int rc = build_step(l, &l->next, &err); // outside the lock: this is the slow part
        pthread_mutex_lock(&l->mu);
        if (rc != 0) {
            l->failed = 1;
            l->thread_err = err;
            pthread_cond_broadcast(&l->cv);
            break;
        }
        l->ready = 1;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

ot_loader *ot_loader_new(const char *path, int vocab_size, int seq_len, int rows_per_step, int rank, int world,
                         int loss_all, ot_err *err) {
    if (seq_len < 2 || rows_per_step < 1 || world < 1 || rank < 0 || rank >= world) {
        ot_fail(err, "data loader: invalid sizes (seq_len %d, rows_per_step %d, rank %d of %d)", seq_len,
                rows_per_step, rank, world);
        return NULL;
    }
    ot_loader *l = ot_calloc(1, sizeof *l);
    if (ot_pairs_h5_open(&l->file, path, err) != 0) {
        free(l);
        return NULL;
    }
    l->vocab_size = vocab_size, l->seq_len = seq_len, l->rows_per_step = rows_per_step, l->rank = rank;
    l->world = world, l->loss_all = loss_all;
    if (ot_pairs_h5_check_vocab(&l->file, "--data", vocab_size, err) != 0) goto fail;
    for (int64_t i = 0; i < l->file.n_samples; i++) {
        l->n_too_long += ot_pairs_h5_sample_len(&l->file, i) > seq_len;
        l->n_no_target += ot_pairs_h5_sample_len(&l->file, i) <= seq_len && sample_targets(l, i) <= 0;
    }
    if (l->n_too_long + l->n_no_target == l->file.n_samples) {
        if (l->n_no_target == 0)
            ot_fail(err, "%s: all %lld samples are longer than seq_len %d (the longest has %d tokens)", path,
                    (long long)l->file.n_samples, seq_len, l->file.max_sample_len);
        else
            ot_fail(err, "%s: no sample can be trained: %lld of %lld are longer than seq_len %d, %lld have no loss "
                    "target (a single token, or nothing after the answer's start)", path, (long long)l->n_too_long,
                    (long long)l->file.n_samples, seq_len, (long long)l->n_no_target);
        goto fail;
    }
    // Corruption found now is a clear error; found mid-run it would stop training hours in.
    if (ot_pairs_h5_verify(&l->file, err) != 0) goto fail;
    return l;
fail:
    ot_loader_close(l);
    return NULL;
}

int ot_loader_start(ot_loader *l, ot_data_cursor cursor, ot_err *err) {
    if (cursor.epoch < 0 || cursor.next < 0 || cursor.next > l->file.n_samples)
        return ot_fail(err, "%s: cursor (epoch %lld, next %lld) does not fit a file of %lld samples (a different data "
                       "file?)", l->file.path, (long long)cursor.epoch, (long long)cursor.next,
                       (long long)l->file.n_samples);
    if (l->thread_started) return ot_fail(err, "internal: the data loader is started already");
    l->cur = cursor;
    l->perm = ot_malloc(sizeof(int64_t) * (size_t)l->file.n_samples);
    l->perm_epoch = -1;
    l->tokens = ot_malloc(sizeof(int32_t) * (size_t)l->file.max_sample_len);
    ot_batch_init(&l->next.batch);
    ot_batch_init(&l->current.batch);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, prefetch_main, l) != 0) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        return ot_fail(err, "data loader: cannot start the prefetch thread");
    }
    l->thread_started = 1;
    return 0;
}

ot_loader *ot_loader_open(const char *path, int vocab_size, int seq_len, int rows_per_step, int rank, int world,
                          int loss_all, ot_data_cursor cursor, ot_err *err) {
    ot_loader *l = ot_loader_new(path, vocab_size, seq_len, rows_per_step, rank, world, loss_all, err);
    if (l && ot_loader_start(l, cursor, err) != 0) {
        ot_loader_close(l);
        return NULL;
    }
    return l;
}

int ot_loader_next(ot_loader *l, ot_batch *b, ot_data_cursor *after, ot_err *err) {
    pthread_mutex_lock(&l->mu);
    while (!l->ready && !l->failed) pthread_cond_wait(&l->cv, &l->mu);
    if (!l->ready) {
        int rc = ot_fail(err, "%s", l->thread_err.msg);
        pthread_mutex_unlock(&l->mu);
        return rc;
    }
    // Hand the prepared batch to the caller and take the caller's old buffers for the next step.
    ot_batch spare = *b;
    *b = l->next.batch;
    l->next.batch = spare;
    step_slot *n = &l->next, *c = &l->current;
    if (c->cap_samples < n->n_samples) {
        c->cap_samples = n->n_samples;
        c->samples = ot_realloc(c->samples, sizeof(int64_t) * (size_t)c->cap_samples);
        c->row = ot_realloc(c->row, sizeof(int32_t) * (size_t)c->cap_samples);
    }
    memcpy(c->samples, n->samples, sizeof(int64_t) * (size_t)n->n_samples);
    memcpy(c->row, n->row, sizeof(int32_t) * (size_t)n->n_samples);
    c->n_samples = n->n_samples, c->n_rows = n->n_rows, c->before = n->before, c->after = n->after;
    c->skipped_after = n->skipped_after;
    c->skipped_no_target_after = n->skipped_no_target_after;
    l->last = (ot_loader_step){c->n_samples, c->samples, c->row, c->n_rows, c->before};
    if (after) *after = n->after;
    l->ready = 0;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

const ot_loader_step *ot_loader_last_step(const ot_loader *l) { return &l->last; }

ot_loader_stats ot_loader_get_stats(const ot_loader *l) {
    ot_loader_stats s;
    s.skipped_too_long = l->current.skipped_after; // as of the last step returned (the caller's thread owns it)
    s.skipped_no_target = l->current.skipped_no_target_after;
    s.n_samples = l->file.n_samples;
    s.n_too_long = l->n_too_long;
    s.n_no_target = l->n_no_target;
    s.max_tokens_per_rank = (l->rows_per_step + l->world - 1) / l->world * l->seq_len;
    return s;
}

const ot_pairs_h5 *ot_loader_file(const ot_loader *l) { return &l->file; }

void ot_loader_close(ot_loader *l) {
    if (!l) return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    ot_pairs_h5_close(&l->file);
    ot_batch_free(&l->next.batch);
    ot_batch_free(&l->current.batch);
    free(l->next.samples);
    free(l->next.row);
    free(l->current.samples);
    free(l->current.row);
    free(l->perm);
    free(l->tokens);
    free(l);
}
