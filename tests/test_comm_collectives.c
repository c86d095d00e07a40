// The MPI communicator against serial references, for any world size: run under `mpirun -np N` with N as the
// only argument (or alone, as a 1-rank singleton). Sizes are chosen so they do not divide evenly by N. Values
// of the plain collectives are small integers, so every order of addition gives the exact result and checks
// are exact. The ordered sums are checked bit for bit against a serial sum in the documented order, on data
// where the order of additions changes the result (verified below, so a wrong order cannot pass).
#include "comm/comm.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static ot_comm *C;

static const size_t TOTALS[] = {0, 1, 3, 7, 13, 1000, 4099};
#define N_TOTALS (sizeof TOTALS / sizeof TOTALS[0])
static const ot_comm_dtype DTYPES[] = {OT_COMM_F32, OT_COMM_U8, OT_COMM_I64};
static const ot_comm_dtype REDUCIBLE[] = {OT_COMM_F32, OT_COMM_I64}; // uint8 is moved, never reduced

static void must(int rc, const ot_err *err, const char *what) {
    if (rc) {
        fprintf(stderr, "rank %d: %s failed: %s\n", C->rank, what, err->msg);
        exit(1); // the peers' watchdog ends the job
    }
}

// Element i of a buffer of dtype dt holding small integer values v.
static void put(void *buf, ot_comm_dtype dt, size_t i, long long v) {
    switch (dt) {
    case OT_COMM_F32: ((float *)buf)[i] = (float)v; break;
    case OT_COMM_U8: ((uint8_t *)buf)[i] = (uint8_t)(v & 255); break;
    case OT_COMM_I64: ((int64_t *)buf)[i] = (int64_t)v; break;
    }
}
static long long get(const void *buf, ot_comm_dtype dt, size_t i) {
    switch (dt) {
    case OT_COMM_F32: return (long long)((const float *)buf)[i];
    case OT_COMM_U8: return ((const uint8_t *)buf)[i];
    case OT_COMM_I64: return ((const int64_t *)buf)[i];
    }
    return 0;
}
// What put() stores for v, as get() reads it back (uint8 wraps modulo 256).
static long long stored(ot_comm_dtype dt, long long v) { return dt == OT_COMM_U8 ? (v & 255) : v; }

// Value of element i contributed by rank r: distinct per rank and element, small enough to be exact in float.
static long long val(int r, size_t i) { return (long long)((i * 7 + 3) % 1009) + 1000 * r - 1500; }

static void test_identity(int expected_size) {
    CHECK(C->size == expected_size, "size %d, expected %d", C->size, expected_size);
    CHECK(C->rank >= 0 && C->rank < C->size, "rank %d of %d", C->rank, C->size);
    // The tests run on one node, so node-local numbering equals the global one.
    CHECK(C->local_size == C->size && C->local_rank == C->rank, "local %d/%d vs %d/%d", C->local_rank, C->local_size,
          C->rank, C->size);
    CHECK(C->hostname[0] != 0, "empty hostname");
    CHECK(!C->on_device && C->device == -1 && ot_comm_stream(C) == NULL, "an MPI communicator is a host one");
}

static void test_shard_math(void) {
    for (size_t total = 0; total < 40; total++)
        for (int world = 1; world <= 6; world++) {
            size_t shard = ot_comm_shard_count(total, world);
            CHECK(shard * (size_t)world >= total && (shard == 0 || (shard - 1) * (size_t)world < total),
                  "shard %zu for %zu over %d is not ceil", shard, total, world);
            size_t next = 0; // the real parts must tile [0, total) in rank order
            for (int r = 0; r < world; r++) {
                size_t b, e;
                ot_comm_shard_range(total, world, r, &b, &e);
                CHECK(b == next && e >= b && e - b <= shard, "range [%zu,%zu) of rank %d (total %zu, world %d)", b,
                      e, r, total, world);
                next = e;
            }
            CHECK(next == total, "ranges end at %zu, not %zu", next, total);
        }
}

static void test_all_gather(void) {
    ot_err err;
    for (size_t t = 0; t < N_TOTALS; t++)
        for (int d = 0; d < 3; d++)
            for (int in_place = 0; in_place < 2; in_place++) {
                size_t total = TOTALS[t], shard = ot_comm_shard_count(total, C->size), es = ot_comm_dtype_size(DTYPES[d]);
                ot_comm_dtype dt = DTYPES[d];
                uint8_t *recv = ot_calloc(shard * (size_t)C->size + 1, es);
                uint8_t *send = in_place ? recv + (size_t)C->rank * shard * es : ot_calloc(shard + 1, es);
                // Own shard of the padded buffer: real elements get their global value, padding stays 0.
                for (size_t j = 0; j < shard; j++) {
                    size_t g = (size_t)C->rank * shard + j;
                    put(send, dt, j, g < total ? val(0, g) : 0);
                }
                must(ot_comm_all_gather(C, send, recv, shard, dt, &err), &err, "all_gather");
                int bad = 0;
                for (size_t g = 0; g < shard * (size_t)C->size; g++)
                    bad += get(recv, dt, g) != (g < total ? stored(dt, val(0, g)) : 0);
                CHECK(bad == 0, "all_gather %s total %zu in_place %d: %d wrong elements", ot_comm_dtype_name(dt),
                      total, in_place, bad);
                if (!in_place) free(send);
                free(recv);
            }
}

static void test_reduce_scatter(void) {
    ot_err err;
    for (size_t t = 0; t < N_TOTALS; t++)
        for (int d = 0; d < 2; d++)
            for (int op = 0; op < 3; op++)
                for (int in_place = 0; in_place < 2; in_place++) {
                    ot_comm_dtype dt = REDUCIBLE[d];
                    size_t total = TOTALS[t], shard = ot_comm_shard_count(total, C->size), es = ot_comm_dtype_size(dt);
                    size_t padded = shard * (size_t)C->size;
                    uint8_t *send = ot_calloc(padded + 1, es);
                    for (size_t g = 0; g < total; g++) put(send, dt, g, val(C->rank, g));
                    uint8_t *recv = in_place ? send + (size_t)C->rank * shard * es : ot_calloc(shard + 1, es);
                    must(ot_comm_reduce_scatter(C, send, recv, shard, dt, (ot_comm_redop)op, &err), &err,
                         "reduce_scatter");
                    int bad = 0;
                    for (size_t j = 0; j < shard; j++) {
                        size_t g = (size_t)C->rank * shard + j;
                        long long want = 0;
                        for (int r = 0; r < C->size; r++) {
                            long long v = g < total ? stored(dt, val(r, g)) : 0;
                            if (r == 0) want = v;
                            else if (op == OT_COMM_SUM) want += v;
                            else if (op == OT_COMM_MAX) want = v > want ? v : want;
                            else want = v < want ? v : want;
                        }
                        bad += get(recv, dt, j) != stored(dt, want);
                    }
                    CHECK(bad == 0, "reduce_scatter %s op %d total %zu in_place %d: %d wrong", ot_comm_dtype_name(dt),
                          op, total, in_place, bad);
                    if (!in_place) free(recv);
                    free(send);
                }
}

static void test_all_reduce(void) {
    ot_err err;
    for (size_t t = 0; t < N_TOTALS; t++)
        for (int d = 0; d < 2; d++)
            for (int op = 0; op < 3; op++)
                for (int in_place = 0; in_place < 2; in_place++) {
                    ot_comm_dtype dt = REDUCIBLE[d];
                    size_t n = TOTALS[t], es = ot_comm_dtype_size(dt);
                    uint8_t *send = ot_calloc(n + 1, es);
                    for (size_t i = 0; i < n; i++) put(send, dt, i, val(C->rank, i));
                    uint8_t *recv = in_place ? send : ot_calloc(n + 1, es);
                    must(ot_comm_all_reduce(C, send, recv, n, dt, (ot_comm_redop)op, &err), &err, "all_reduce");
                    int bad = 0;
                    for (size_t i = 0; i < n; i++) {
                        long long want = stored(dt, val(0, i));
                        for (int r = 1; r < C->size; r++) {
                            long long v = stored(dt, val(r, i));
                            if (op == OT_COMM_SUM) want += v;
                            else if (op == OT_COMM_MAX) want = v > want ? v : want;
                            else want = v < want ? v : want;
                        }
                        bad += get(recv, dt, i) != stored(dt, want);
                    }
                    CHECK(bad == 0, "all_reduce %s op %d n %zu in_place %d: %d wrong", ot_comm_dtype_name(dt), op, n,
                          in_place, bad);
                    if (!in_place) free(recv);
                    free(send);
                }
}

static void test_broadcast(void) {
    ot_err err;
    for (int root = 0; root < C->size; root++)
        for (int d = 0; d < 3; d++) {
            ot_comm_dtype dt = DTYPES[d];
            size_t n = 1001;
            uint8_t *buf = ot_calloc(n, ot_comm_dtype_size(dt));
            for (size_t i = 0; i < n; i++) put(buf, dt, i, val(C->rank, i)); // differs per rank before
            must(ot_comm_broadcast(C, buf, n, dt, root, &err), &err, "broadcast");
            int bad = 0;
            for (size_t i = 0; i < n; i++) bad += get(buf, dt, i) != stored(dt, val(root, i));
            CHECK(bad == 0, "broadcast %s from root %d: %d wrong", ot_comm_dtype_name(dt), root, bad);
            free(buf);
        }
}

// A barrier returns on no rank before every rank has entered it: rank r enters 30·r ms late, and the earliest
// exit (on the shared monotonic clock of this node) must come after the latest entry.
static void test_barrier(void) {
    ot_err err;
    struct timespec ts = {0, 30 * 1000 * 1000L * C->rank};
    nanosleep(&ts, NULL);
    double entered = ot_now_seconds();
    must(ot_comm_barrier(C, &err), &err, "barrier");
    double left = ot_now_seconds();
    // Gathered as int64 nanoseconds: the interface has no float64 dtype.
    int64_t mine[2] = {(int64_t)(entered * 1e9), (int64_t)(left * 1e9)};
    int64_t *got = ot_malloc(2 * sizeof(int64_t) * (size_t)C->size);
    must(ot_comm_all_gather(C, mine, got, 2, OT_COMM_I64, &err), &err, "all_gather");
    int64_t last_in = got[0], first_out = got[1];
    for (int r = 0; r < C->size; r++) {
        if (got[2 * r] > last_in) last_in = got[2 * r];
        if (got[2 * r + 1] < first_out) first_out = got[2 * r + 1];
    }
    CHECK(first_out >= last_in, "a rank left the barrier %.3f ms before the last one entered",
          (double)(last_in - first_out) * 1e-6);
    free(got);
}

// Several collectives in flight at once, waited out of order; a request is waited exactly once.
static void test_nonblocking(void) {
    ot_err err;
    size_t n = 777;
    float *a = ot_malloc(n * sizeof(float)), *sum = ot_malloc(n * sizeof(float));
    int64_t *g = ot_malloc(n * sizeof(int64_t)), *gathered = ot_malloc(n * sizeof(int64_t) * (size_t)C->size);
    for (size_t i = 0; i < n; i++) {
        a[i] = (float)val(C->rank, i);
        g[i] = val(C->rank, i) * 3;
    }
    ot_comm_req r1, r2;
    must(ot_comm_all_reduce_start(C, a, sum, n, OT_COMM_F32, OT_COMM_SUM, &r1, &err), &err, "all_reduce_start");
    must(ot_comm_all_gather_start(C, g, gathered, n, OT_COMM_I64, &r2, &err), &err, "all_gather_start");
    CHECK(r2.seq == r1.seq + 1, "sequence numbers %llu then %llu", (unsigned long long)r1.seq,
          (unsigned long long)r2.seq);
    must(ot_comm_wait(C, &r2, &err), &err, "wait");
    must(ot_comm_wait(C, &r1, &err), &err, "wait");
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        long long want = 0;
        for (int r = 0; r < C->size; r++) {
            want += val(r, i);
            bad += gathered[(size_t)r * n + i] != val(r, i) * 3;
        }
        bad += sum[i] != (float)want;
    }
    CHECK(bad == 0, "non-blocking all_reduce/all_gather: %d wrong", bad);
    CHECK(ot_comm_wait(C, &r1, &err) != 0 && strstr(err.msg, "not in flight"), "second wait accepted");
    free(a);
    free(sum);
    free(g);
    free(gathered);
}

// Mistakes found before any communication come back as errors on every rank alike, and consume no number.
static void test_argument_errors(void) {
    ot_err err;
    float x[8] = {0};
    uint64_t before = C->n_collectives;
    CHECK(ot_comm_all_reduce(C, NULL, x, 4, OT_COMM_F32, OT_COMM_SUM, &err) != 0 && strstr(err.msg, "NULL"),
          "NULL send accepted");
    CHECK(ot_comm_broadcast(C, x, 4, OT_COMM_F32, C->size, &err) != 0 && strstr(err.msg, "root"),
          "root out of range accepted");
    CHECK(ot_comm_all_reduce(C, x, x + 1, 4, OT_COMM_F32, OT_COMM_SUM, &err) != 0 && strstr(err.msg, "overlap"),
          "partially overlapping buffers accepted");
    CHECK(ot_comm_all_reduce(C, x, x, 4, (ot_comm_dtype)9, OT_COMM_SUM, &err) != 0 && strstr(err.msg, "dtype"),
          "bad dtype accepted");
    uint8_t bytes[4] = {0};
    CHECK(ot_comm_all_reduce(C, bytes, bytes, 4, OT_COMM_U8, OT_COMM_SUM, &err) != 0 && strstr(err.msg, "uint8"),
          "uint8 reduction accepted");
    CHECK(ot_comm_reduce_scatter(C, bytes, bytes, 1, OT_COMM_U8, OT_COMM_MAX, &err) != 0 && strstr(err.msg, "uint8"),
          "uint8 reduction accepted");
    CHECK(ot_comm_all_reduce_ordered(C, NULL, 2, 4, x, &err) != 0 && strstr(err.msg, "slots"), "NULL slots accepted");
    CHECK(C->n_collectives == before, "rejected calls were numbered");
}

// ---- ordered sums ----------------------------------------------------------------------------------------------
// Global slot k, element i. Element i % 4 == 0 carries a huge value in the first slot that the last slot cancels,
// with small values in between that are partly absorbed on the way: the order of additions shows in float.
static float slot_value(int k, int K, size_t i) {
    ot_rng rng;
    ot_rng_seed(&rng, ot_hash64((uint64_t)k * 1000003u + i));
    double small = ot_rng_normal(&rng) * ldexp(1.0, (int)(ot_rng_u64(&rng) % 16) - 8);
    if (i % 4 == 0) {
        double big = ldexp(1.0, 50 + (int)(i % 13));
        if (k == 0) return (float)big;
        if (k == K - 1) return (float)-big;
    }
    return (float)small;
}

// The documented rule over the whole global sequence: the kernels' ordered slot sum (ot_sum_slots_ordered, which
// the GPU rank sum uses on gathered gradients), so the host and device sums are checked to agree bit for bit.
static void serial_ordered(int K, size_t count, float *out) {
    float *all = ot_malloc(((size_t)K * count + 1) * sizeof(float));
    for (int k = 0; k < K; k++)
        for (size_t i = 0; i < count; i++) all[(size_t)k * count + i] = slot_value(k, K, i);
    ot_sum_slots_ordered(out, all, K, count);
    free(all);
}

// How many global slots rank r holds: contiguous blocks of uneven size, some ranks holding none.
static void slot_block(int K, int world, int r, int *first, int *n) {
    long long w2 = (long long)world * world;
    int b = (int)((long long)K * r * r / w2), e = (int)((long long)K * (r + 1) * (r + 1) / w2);
    *first = b;
    *n = e - b;
}

static int differs(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) != 0; }

static void test_ordered(void) {
    ot_err err;
    const int Ks[] = {0, 1, 7, 12};
    const size_t counts[] = {0, 1, 3, 13, 2053};
    for (int ki = 0; ki < 4; ki++)
        for (int ci = 0; ci < 5; ci++) {
            int K = Ks[ki];
            size_t count = counts[ci];
            int first, n;
            slot_block(K, C->size, C->rank, &first, &n);
            float *slots = ot_malloc((size_t)n * count * sizeof(float) + 1);
            for (int s = 0; s < n; s++)
                for (size_t i = 0; i < count; i++) slots[(size_t)s * count + i] = slot_value(first + s, K, i);
            float *want = ot_malloc(count * sizeof(float) + 1), *got = ot_malloc(count * sizeof(float) + 1);
            float *again = ot_malloc(count * sizeof(float) + 1);
            serial_ordered(K, count, want);
            must(ot_comm_all_reduce_ordered(C, slots, n, count, got, &err), &err, "all_reduce_ordered");
            must(ot_comm_all_reduce_ordered(C, slots, n, count, again, &err), &err, "all_reduce_ordered");
            CHECK(!differs(got, want, count), "all_reduce_ordered K %d count %zu: not bitwise the serial sum", K,
                  count);
            CHECK(!differs(got, again, count), "all_reduce_ordered K %d count %zu: two calls differ", K, count);

            size_t b, e;
            ot_comm_shard_range(count, C->size, C->rank, &b, &e);
            float *part = ot_malloc((e - b) * sizeof(float) + 1);
            must(ot_comm_reduce_scatter_ordered(C, slots, n, count, part, &err), &err, "reduce_scatter_ordered");
            CHECK(!differs(part, want + b, e - b), "reduce_scatter_ordered K %d count %zu: range [%zu,%zu) differs", K,
                  count, b, e);
            free(part);
            free(slots);
            free(want);
            free(got);
            free(again);
        }

    // The data must make order visible, or the checks above could not catch a wrong order: summing the same
    // slots in reverse, or per rank-block first (what a plain reduction of per-rank partial sums does), or in
    // float, must change some bits.
    int K = 7;
    size_t count = 2053;
    float *want = ot_malloc(count * sizeof(float)), *alt = ot_malloc(count * sizeof(float));
    serial_ordered(K, count, want);
    for (size_t i = 0; i < count; i++) {
        double acc = 0.0;
        for (int k = K - 1; k >= 0; k--) acc += (double)slot_value(k, K, i);
        alt[i] = (float)acc;
    }
    CHECK(differs(alt, want, count), "test data: reverse order gives the same bits");
    for (size_t i = 0; i < count; i++) {
        double acc = 0.0, part = 0.0;
        for (int k = 0; k < K; k++) {
            part += (double)slot_value(k, K, i);
            if (k == 2 || k == K - 1) acc += part, part = 0.0; // blocks {0,1,2} and {3..6}
        }
        alt[i] = (float)acc;
    }
    CHECK(differs(alt, want, count), "test data: block-wise partial sums give the same bits");
    for (size_t i = 0; i < count; i++) {
        float acc = 0.0f;
        for (int k = 0; k < K; k++) acc += slot_value(k, K, i);
        alt[i] = acc;
    }
    CHECK(differs(alt, want, count), "test data: float accumulation gives the same bits");
    free(want);
    free(alt);
}

// The timeout comes from the options, else OSSTUNE_COMM_TIMEOUT, else the default; bad values are refused.
static void test_timeout_config(void) {
    ot_err err;
    ot_comm *d = NULL;
    setenv(OT_COMM_TIMEOUT_ENV, "2.5", 1);
    must(ot_comm_mpi_init(&d, NULL, NULL, NULL, &err), &err, "second communicator");
    CHECK(d->timeout_s == 2.5, "timeout from the environment: %g", d->timeout_s);
    CHECK(d->size == C->size && d->rank == C->rank, "a second communicator spans the same ranks");
    ot_comm_free(d);
    ot_comm_options opt = {.timeout_s = 7};
    must(ot_comm_mpi_init(&d, NULL, NULL, &opt, &err), &err, "third communicator");
    CHECK(d->timeout_s == 7, "the option wins over the environment: %g", d->timeout_s);
    ot_comm_free(d);
    setenv(OT_COMM_TIMEOUT_ENV, "ten", 1);
    CHECK(ot_comm_mpi_init(&d, NULL, NULL, NULL, &err) != 0 && strstr(err.msg, OT_COMM_TIMEOUT_ENV) && !d,
          "OSSTUNE_COMM_TIMEOUT=ten accepted");
    setenv(OT_COMM_TIMEOUT_ENV, "-3", 1);
    CHECK(ot_comm_mpi_init(&d, NULL, NULL, NULL, &err) != 0 && !d, "OSSTUNE_COMM_TIMEOUT=-3 accepted");
    unsetenv(OT_COMM_TIMEOUT_ENV);
}

int main(int argc, char **argv) {
    int expected = argc > 1 ? atoi(argv[1]) : 1;
    ot_err err;
    unsetenv(OT_COMM_TIMEOUT_ENV);
    if (ot_comm_mpi_init(&C, &argc, &argv, NULL, &err)) {
        fprintf(stderr, "test_comm_collectives: %s\n", err.msg);
        return 1;
    }
    CHECK(C->timeout_s == OT_COMM_DEFAULT_TIMEOUT_S, "default timeout %g", C->timeout_s);
    test_identity(expected);
    test_shard_math();
    test_all_gather();
    test_reduce_scatter();
    test_all_reduce();
    test_broadcast();
    test_barrier();
    test_nonblocking();
    test_argument_errors();
    test_ordered();
    test_timeout_config();

    // One verdict for the job: every rank's failures count.
    int64_t mine[2] = {ot_test_checks, ot_test_failures}, all[2];
    must(ot_comm_all_reduce(C, mine, all, 2, OT_COMM_I64, OT_COMM_SUM, &err), &err, "all_reduce");
    int rank = C->rank, size = C->size;
    ot_comm_free(C);
    if (rank == 0)
        printf("test_comm_collectives (%d ranks): %lld passed, %lld failed\n", size, (long long)(all[0] - all[1]),
               (long long)all[1]);
    return all[1] ? 1 : 0;
}
