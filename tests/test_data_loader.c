// Data loader: the shuffle is a permutation, equal for equal seeds and different otherwise; packing follows the
// greedy rule exactly (checked against an independent re-implementation); batches carry the right tokens,
// positions, boundaries and targets; epochs roll over; a restored cursor continues the identical sequence; and
// for 1..4 ranks the union of the ranks' rows is the 1-rank step.
#include <stdio.h>
#include <stdlib.h>

#include "formats/pairs_h5.h"
#include "tests/test_util.h"
#include "trainer/train/data_loader.h"

#define N 600
#define SEQ 256
#define ROWS 6
#define STEPS 80 // about 3 epochs with these sizes

static char tmpdir[256], path[512];

// Sample i has a deterministic length and content (token k of sample i is token_of(i, k), so the test knows what
// every position must hold). Every 50th sample is longer than SEQ.
static int32_t token_of(int i, int k) { return (int32_t)(((int64_t)i * 331 + k) % 201088); }
static int sample_len(int i) { return i % 50 == 7 ? SEQ + 1 + i % 13 : 3 + (int)(ot_hash64((uint64_t)i) % 110); }
static int sample_loss_start(int i) { return 1 + (int)(ot_hash64((uint64_t)i + 77) % (uint64_t)(sample_len(i) - 1)); }

static void write_data(void) {
    ot_pairs_h5_meta meta = {.tokenizer_sha256 = "0000", .tokenizer_vocab_size = 201088, .system_text = "s",
                             .instruction = {"a", "b"}, .directions = "both", .source_file = "synthetic"};
    ot_err err = {{0}};
    ot_pairs_h5_writer *w = ot_pairs_h5_create(path, &meta, &err);
    CHECK(w != NULL, "create: %s", err.msg);
    int32_t ids[400];
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < sample_len(i); k++) ids[k] = token_of(i, k);
        CHECK(ot_pairs_h5_append(w, ids, sample_len(i), (uint32_t)sample_loss_start(i), 0, (uint64_t)i, &err) == 0,
              "append: %s", err.msg);
    }
    CHECK(ot_pairs_h5_finish(w, N, 0, &err) == 0, "finish: %s", err.msg);
}

static void test_permutation(void) {
    int64_t a[N], b[N], c[N];
    int seen[N];
    for (uint64_t seed = 0; seed < 4; seed++)
        for (int64_t epoch = 0; epoch < 3; epoch++) {
            ot_loader_permutation(seed, epoch, N, a);
            memset(seen, 0, sizeof seen);
            int ok = 1;
            for (int i = 0; i < N; i++) ok &= a[i] >= 0 && a[i] < N && !seen[a[i]]++;
            CHECK(ok, "seed %llu epoch %lld: not a permutation", (unsigned long long)seed, (long long)epoch);
        }
    ot_loader_permutation(42, 0, N, a);
    ot_loader_permutation(42, 0, N, b);
    CHECK(memcmp(a, b, sizeof a) == 0, "equal seeds, equal order");
    ot_loader_permutation(43, 0, N, c);
    CHECK(memcmp(a, c, sizeof a) != 0, "different seeds, different order");
    ot_loader_permutation(42, 1, N, c);
    CHECK(memcmp(a, c, sizeof a) != 0, "different epochs, different order");
    int fixed = 0;
    for (int i = 0; i < N; i++) fixed += a[i] == i;
    CHECK(fixed < 20, "the order is actually shuffled (%d fixed points of %d)", fixed, N);
}

// The expected sequence of steps, packed by a separate, simple implementation of the documented rule.
typedef struct {
    int n;
    int sample[N];
    int row[N];
    ot_data_cursor after;
} ref_step;

static void reference_steps(uint64_t seed, ot_data_cursor start, ref_step *steps, int n_steps) {
    int64_t perm[N];
    int64_t epoch = start.epoch, next = start.next;
    ot_loader_permutation(seed, epoch, N, perm);
    for (int s = 0; s < n_steps; s++) {
        ref_step *st = &steps[s];
        st->n = 0;
        int row = 0, used = 0;
        for (;;) {
            if (next == N) {
                epoch++, next = 0;
                ot_loader_permutation(seed, epoch, N, perm);
            }
            int i = (int)perm[next], len = sample_len(i);
            if (len > SEQ) {
                next++;
                continue;
            }
            if (used + len > SEQ) {
                if (row == ROWS - 1) break;
                row++, used = 0;
            }
            st->sample[st->n] = i, st->row[st->n] = row, st->n++;
            used += len;
            next++;
        }
        if (next == N) epoch++, next = 0;
        st->after = (ot_data_cursor){seed, epoch, next};
    }
}

// The batch of one rank holds exactly the rows ot_loader_row_owner gives it of the reference step, in order, with the
// right tokens, positions, boundaries and targets.
static int check_batch(const ot_batch *b, const ref_step *st, int rank, int world, int loss_all) {
    int t = 0, g = 0, row_i = -1, ok = 1, n_samples = 0;
    int64_t global_targets = 0;
    for (int k = 0; k < st->n; k++) {
        int i = st->sample[k], len = sample_len(i), ls = loss_all ? 0 : sample_loss_start(i);
        global_targets += len - (ls < 1 ? 1 : ls);
        if (ot_loader_row_owner(st->row[k], ROWS, world) != rank) continue;
        if (row_i < 0 || b->row_global[row_i] != st->row[k]) {
            row_i++;
            ok &= row_i < b->n_rows && b->row_global[row_i] == st->row[k] && b->row_tok[row_i] == t;
            if (!ok) return 0;
        }
        for (int p = 0; p < len; p++, t++)
            ok &= t < b->T && b->ids[t] == token_of(i, p) && b->pos[t] == p && b->seg_start[t] == t - p;
        for (int p = (ls < 1 ? 1 : ls) - 1; p + 1 < len; p++, g++)
            ok &= g < b->n_targets && b->tgt_pos[g] == t - len + p && b->tgt_label[g] == token_of(i, p + 1);
        n_samples++;
        if (!ok) return 0;
    }
    return ok && b->T == t && b->n_targets == g && b->n_rows == row_i + 1 && b->n_samples == n_samples &&
           b->global_targets == global_targets && b->global_samples == st->n;
}

// Rows are dealt in contiguous blocks, in rank order, sizes floor or ceil of R / world, every rank at least one
// row when R >= world: the ranks' rows concatenated in rank order are the global rows in order.
static void test_row_owner(void) {
    for (int R = 1; R <= 13; R++)
        for (int W = 1; W <= R; W++) {
            int prev = 0, count[16] = {0};
            for (int r = 0; r < R; r++) {
                int k = ot_loader_row_owner(r, R, W);
                CHECK(k >= prev && k < W, "R=%d W=%d: row %d goes to rank %d after rank %d", R, W, r, k, prev);
                prev = k;
                count[k]++;
            }
            for (int k = 0; k < W; k++)
                CHECK(count[k] == R / W || count[k] == (R + W - 1) / W, "R=%d W=%d: rank %d gets %d rows", R, W, k,
                      count[k]);
        }
}

static void test_single_rank(void) {
    static ref_step ref[STEPS];
    ot_data_cursor start = {7, 0, 0};
    reference_steps(7, start, ref, STEPS);
    ot_err err = {{0}};
    ot_loader *l = ot_loader_open(path, 201088, SEQ, ROWS, 0, 1, 0, start, &err);
    CHECK(l != NULL, "open: %s", err.msg);
    if (!l) return;
    ot_loader_stats stats = ot_loader_get_stats(l);
    int too_long = 0;
    for (int i = 0; i < N; i++) too_long += sample_len(i) > SEQ;
    CHECK(stats.n_samples == N && stats.n_too_long == too_long && stats.max_tokens_per_rank == ROWS * SEQ, "stats");
    ot_batch b;
    ot_batch_init(&b);
    int bad = 0, max_row_tokens = 0;
    int64_t epochs_seen = 0;
    for (int s = 0; s < STEPS; s++) {
        ot_data_cursor after;
        CHECK(ot_loader_next(l, &b, &after, &err) == 0, "next: %s", err.msg);
        const ot_loader_step *info = ot_loader_last_step(l);
        int same = info->n_samples == ref[s].n && memcmp(&after, &ref[s].after, sizeof after) == 0;
        for (int k = 0; same && k < ref[s].n; k++) same = info->samples[k] == ref[s].sample[k] && info->row[k] == ref[s].row[k];
        if (!same || !check_batch(&b, &ref[s], 0, 1, 0)) {
            if (bad++ < 3) fprintf(stderr, "step %d differs from the reference packing\n", s);
        }
        for (int r = 0; r < b.n_rows; r++) {
            int rt = b.row_tok[r + 1] - b.row_tok[r];
            if (rt > max_row_tokens) max_row_tokens = rt;
        }
        CHECK(b.n_rows == ROWS, "step %d has %d rows, expected %d", s, b.n_rows, ROWS);
        epochs_seen = after.epoch;
    }
    CHECK(bad == 0, "%d of %d steps differ from the reference", bad, STEPS);
    CHECK(max_row_tokens <= SEQ && max_row_tokens > SEQ * 3 / 4, "rows are filled up to seq_len (max %d)", max_row_tokens);
    CHECK(epochs_seen >= 2, "the run crossed epochs (%lld)", (long long)epochs_seen);
    stats = ot_loader_get_stats(l);
    CHECK(stats.skipped_too_long >= too_long * 2, "too-long samples skipped every epoch (%lld)",
          (long long)stats.skipped_too_long);
    // Within an epoch every usable sample appears exactly once: count over the first epoch's steps.
    int count[N] = {0};
    for (int s = 0; s < STEPS && ref[s].after.epoch == 0; s++)
        for (int k = 0; k < ref[s].n; k++) count[ref[s].sample[k]]++;
    int dup = 0;
    for (int i = 0; i < N; i++) dup += count[i] > 1 || (sample_len(i) > SEQ && count[i]);
    CHECK(dup == 0, "no sample twice within an epoch, no too-long sample ever");
    ot_batch_free(&b);
    ot_loader_close(l);
}

// Stop after k steps, reopen from the saved cursor: the following steps are those of the uninterrupted run.
static void test_resume(void) {
    ot_err err = {{0}};
    ot_data_cursor start = {99, 0, 0}, saved = {0};
    static ref_step ref[STEPS];
    reference_steps(99, start, ref, STEPS);
    ot_batch b;
    ot_batch_init(&b);
    ot_loader *l = ot_loader_open(path, 201088, SEQ, ROWS, 0, 1, 0, start, &err);
    for (int s = 0; s < 37; s++) CHECK(ot_loader_next(l, &b, &saved, &err) == 0, "next: %s", err.msg);
    ot_loader_close(l);
    l = ot_loader_open(path, 201088, SEQ, ROWS, 0, 1, 0, saved, &err);
    CHECK(l != NULL, "reopen: %s", err.msg);
    int bad = 0;
    for (int s = 37; l && s < STEPS; s++) {
        ot_data_cursor after;
        CHECK(ot_loader_next(l, &b, &after, &err) == 0, "next: %s", err.msg);
        if (!check_batch(&b, &ref[s], 0, 1, 0) || memcmp(&after, &ref[s].after, sizeof after) != 0) bad++;
        CHECK(memcmp(&ot_loader_last_step(l)->before, &ref[s - 1].after, sizeof after) == 0, "step %d starts where %d ended", s, s - 1);
    }
    CHECK(bad == 0, "%d steps differ after resuming from the cursor", bad);
    ot_loader_close(l);
    ot_batch_free(&b);
}

// world ranks, each with its own loader: rank r gets rows r, r + world, ...; together they are the 1-rank step.
static void test_ranks(void) {
    ot_err err = {{0}};
    const int steps = 25;
    static ref_step ref[25];
    ot_data_cursor start = {5, 1, 123};
    reference_steps(5, start, ref, steps);
    for (int world = 1; world <= 4; world++) {
        ot_loader *l[4];
        ot_batch b[4];
        for (int r = 0; r < world; r++) {
            l[r] = ot_loader_open(path, 201088, SEQ, ROWS, r, world, 0, start, &err);
            CHECK(l[r] != NULL, "open rank %d of %d: %s", r, world, err.msg);
            ot_batch_init(&b[r]);
        }
        int bad = 0;
        for (int s = 0; s < steps; s++) {
            int64_t sum_targets = 0, sum_rows = 0, sum_samples = 0;
            for (int r = 0; r < world; r++) {
                ot_data_cursor after;
                if (ot_loader_next(l[r], &b[r], &after, &err) != 0) {
                    bad++;
                    continue;
                }
                if (!check_batch(&b[r], &ref[s], r, world, 0) || memcmp(&after, &ref[s].after, sizeof after) != 0) bad++;
                sum_targets += b[r].n_targets, sum_rows += b[r].n_rows, sum_samples += b[r].n_samples;
            }
            // The pieces add up to the whole step: every row and sample on exactly one rank.
            if (sum_targets != b[0].global_targets || sum_rows != ROWS || sum_samples != ref[s].n) bad++;
        }
        CHECK(bad == 0, "world %d: %d rank-steps differ from the 1-rank packing", world, bad);
        for (int r = 0; r < world; r++) {
            ot_loader_close(l[r]);
            ot_batch_free(&b[r]);
        }
    }
}

static void test_loss_all_and_errors(void) {
    ot_err err = {{0}};
    ot_data_cursor start = {3, 0, 0};
    static ref_step ref[3];
    reference_steps(3, start, ref, 3);
    ot_loader *l = ot_loader_open(path, 201088, SEQ, ROWS, 0, 1, 1, start, &err);
    ot_batch b;
    ot_batch_init(&b);
    for (int s = 0; l && s < 3; s++) {
        CHECK(ot_loader_next(l, &b, NULL, &err) == 0, "next: %s", err.msg);
        CHECK(check_batch(&b, &ref[s], 0, 1, 1) && b.n_targets == b.T - b.n_samples,
              "loss_all: every next-token position is a target (step %d)", s);
    }
    ot_loader_close(l);
    ot_batch_free(&b);

    CHECK(ot_loader_open(path, 200000, SEQ, ROWS, 0, 1, 0, start, &err) == NULL &&
              strstr(err.msg, "vocabulary of 201088 ids") && strstr(err.msg, "the model has 200000"),
          "a file tokenized for more ids than the model has: %s", err.msg);
    // The id check the loader and the evaluator run on every sample before use: it names the sample and its line.
    ot_pairs_h5 f;
    int32_t ids[400];
    CHECK(ot_pairs_h5_open(&f, path, &err) == 0 && ot_pairs_h5_read(&f, 5, ids, &err) == 0, "read: %s", err.msg);
    CHECK(ot_pairs_h5_check_ids(&f, 5, ids, 201088, &err) == 0, "ids of sample 5 fit the model: %s", err.msg);
    CHECK(ot_pairs_h5_check_ids(&f, 5, ids, 1000, &err) != 0 && strstr(err.msg, "sample 5 (line 5 of synthetic)") &&
              strstr(err.msg, "outside the model's vocabulary of 1000"), "an id past the model's vocabulary: %s", err.msg);
    ot_pairs_h5_close(&f);
    CHECK(ot_loader_open(path, 201088, 2, ROWS, 0, 1, 0, start, &err) == NULL && strstr(err.msg, "longer than seq_len 2"),
          "no sample fits: %s", err.msg);
    ot_data_cursor far = {3, 0, N + 1};
    CHECK(ot_loader_open(path, 201088, SEQ, ROWS, 0, 1, 0, far, &err) == NULL && strstr(err.msg, "does not fit"),
          "cursor past the file: %s", err.msg);
    CHECK(ot_loader_open(path, 201088, SEQ, ROWS, 2, 2, 0, start, &err) == NULL && strstr(err.msg, "rank 2 of 2"),
          "rank out of range: %s", err.msg);
    CHECK(ot_loader_open("tests/fixtures/missing.h5", 201088, SEQ, ROWS, 0, 1, 0, start, &err) == NULL &&
              strstr(err.msg, "missing.h5"), "missing file: %s", err.msg);
    // Open and close at once: the prefetch thread must stop cleanly mid-work.
    for (int k = 0; k < 5; k++) ot_loader_close(ot_loader_open(path, 201088, SEQ, ROWS, 0, 1, 0, start, &err));
}

int main(void) {
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/ot_loader_XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/samples.h5", tmpdir);
    write_data();
    test_permutation();
    test_row_owner();
    test_single_rank();
    test_resume();
    test_ranks();
    test_loss_all_and_errors();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0, "cleanup");
    return ot_test_finish("test_data_loader");
}
