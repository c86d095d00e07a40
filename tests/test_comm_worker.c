// A rank that does collectives in a loop, for the failure tests (tests/comm_fault.sh). Once every rank is in the
// loop it writes its pid to DIR/rank-R.pid, so the test can kill or freeze one rank in the middle of the traffic.
// Without a failure it stops after SECONDS and exits 0.
// Usage: test_comm_worker DIR SECONDS TIMEOUT_S
#include "comm/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void must(int rc, const ot_err *err, const char *what) {
    if (rc) {
        fprintf(stderr, "test_comm_worker: %s: %s\n", what, err->msg);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: test_comm_worker DIR SECONDS TIMEOUT_S\n");
        return 2;
    }
    const char *dir = argv[1];
    double seconds = atof(argv[2]);
    ot_comm_options opt = {.timeout_s = atof(argv[3])};
    ot_comm *c;
    ot_err err;
    must(ot_comm_mpi_init(&c, &argc, &argv, &opt, &err), &err, "ot_comm_mpi_init");
    must(ot_comm_barrier(c, &err), &err, "barrier");

    // Written then renamed, so the test never reads half a file.
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/.rank-%d.tmp", dir, c->rank);
    snprintf(path, sizeof path, "%s/rank-%d.pid", dir, c->rank);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "test_comm_worker: cannot write %s\n", path);
        return 1;
    }

    enum { N = 4096 };
    static float x[N], sum[N];
    int64_t mine = c->rank, *all = ot_malloc(sizeof(int64_t) * (size_t)c->size);
    double t0 = ot_now_seconds();
    long iters = 0;
    while (ot_now_seconds() - t0 < seconds) {
        for (int i = 0; i < N; i++) x[i] = (float)(c->rank + i);
        must(ot_comm_all_reduce(c, x, sum, N, OT_COMM_F32, OT_COMM_SUM, &err), &err, "all_reduce");
        must(ot_comm_all_gather(c, &mine, all, 1, OT_COMM_I64, &err), &err, "all_gather");
        for (int r = 0; r < c->size; r++)
            if (all[r] != r) {
                fprintf(stderr, "test_comm_worker: rank %d: all_gather gave %lld for rank %d\n", c->rank,
                        (long long)all[r], r);
                return 1;
            }
        if (++iters % 16 == 0) must(ot_comm_barrier(c, &err), &err, "barrier");
        struct timespec pause = {0, 2 * 1000 * 1000}; // leave the two CI cores some air
        nanosleep(&pause, NULL);
    }
    printf("test_comm_worker: rank %d: %ld iterations, no failure\n", c->rank, iters);
    free(all);
    ot_comm_free(c);
    return 0;
}
