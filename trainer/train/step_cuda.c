// What the CUDA step engines share (see step_cuda.h).
#ifdef OT_HAVE_CUDA

#include "trainer/train/step_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/ops_cuda.h"
#include "kernels/ops.h"
#include "trainer/graph/gptoss_cuda.h"
#include "trainer/model/model_cuda.h"
#include "trainer/model/model_cuda_shard.h"
#include "trainer/train/step.h"

struct ot_cuda_optimizer {
    cudaStream_t stream;
    size_t n;
    float *m, *v;         // device moments
    double *norm_dev;     // Σ g² on the device
    double *norm_host;    // pinned: read back for clipping
    ot_param_span *spans; // host table
    int n_spans;
};

static float *dev_zeros(size_t n, cudaStream_t s) {
    float *p = NULL;
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&p, (n ? n : 1) * sizeof(float)));
    OT_CUDA_CHECK(cudaMemsetAsync(p, 0, (n ? n : 1) * sizeof(float), s));
    return p;
}

ot_cuda_optimizer *ot_cuda_optimizer_new(size_t n, const ot_param_span *spans, int n_spans, cudaStream_t stream) {
    ot_cuda_optimizer *a = ot_calloc(1, sizeof *a);
    a->stream = stream;
    a->n = n;
    a->m = dev_zeros(n, stream);
    a->v = dev_zeros(n, stream);
    OT_CUDA_CHECK(ot_cuda_malloc((void **)&a->norm_dev, sizeof(double)));
    OT_CUDA_CHECK(cudaMallocHost((void **)&a->norm_host, sizeof(double)));
    a->n_spans = spans ? n_spans : 1;
    a->spans = ot_malloc(sizeof *a->spans * (size_t)a->n_spans);
    if (spans) memcpy(a->spans, spans, sizeof *a->spans * (size_t)n_spans);
    else a->spans[0] = (ot_param_span){0, n, 1};
    return a;
}

void ot_cuda_optimizer_free(ot_cuda_optimizer *a) {
    if (!a) return;
    OT_CUDA_CHECK(cudaStreamSynchronize(a->stream));
    OT_CUDA_CHECK(cudaFree(a->m));
    OT_CUDA_CHECK(cudaFree(a->v));
    OT_CUDA_CHECK(cudaFree(a->norm_dev));
    OT_CUDA_CHECK(cudaFreeHost(a->norm_host));
    free(a->spans);
    free(a);
}

double ot_cuda_optimizer_step(ot_cuda_optimizer *a, ot_optimizer *o, float *params, float *grads, float *lr_used) {
    if (o->n != a->n) ot_die("ot_cuda_optimizer_step: an optimizer for %zu values, the device state has %zu", o->n, a->n);
    const ot_optim_config *c = &o->cfg;
    float lr = ot_lr_at(o->step, c->warmup_steps, c->total_steps, c->lr, c->min_lr);
    if (lr_used) *lr_used = lr;
    if (!a->n) {
        o->step++;
        return 0.0;
    }
    OT_CUDA_CHECK(cudaMemsetAsync(a->norm_dev, 0, sizeof(double), a->stream));
    ot_cuda_sum_squares(a->stream, a->norm_dev, grads, a->n);
    OT_CUDA_CHECK(cudaMemcpyAsync(a->norm_host, a->norm_dev, sizeof(double), cudaMemcpyDeviceToHost, a->stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(a->stream)); // clipping needs the norm on the host
    double norm = sqrt(*a->norm_host);
    float coef = ot_clip_coef(norm, c->max_grad_norm);
    if (coef < 1.0f) ot_cuda_scale_f32(a->stream, grads, a->n, coef);
    o->step++;
    for (int i = 0; i < a->n_spans; i++) {
        const ot_param_span *p = &a->spans[i];
        ot_cuda_adamw_step(a->stream, params + p->offset, grads + p->offset, a->m + p->offset, a->v + p->offset, p->n,
                           lr, c->beta1, c->beta2, c->eps, p->decay ? c->weight_decay : 0.0f, o->step);
    }
    return norm;
}

// One buffer of the moments' size between host and device, on the optimizer's stream, waited for.
static void moment_copy(ot_cuda_optimizer *a, void *dst, const void *src, enum cudaMemcpyKind kind) {
    if (!a->n) return;
    OT_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(float) * a->n, kind, a->stream));
    OT_CUDA_CHECK(cudaStreamSynchronize(a->stream));
}

void ot_cuda_optimizer_get(ot_cuda_optimizer *a, ot_optimizer *o) {
    if (o->n != a->n) ot_die("ot_cuda_optimizer_get: an optimizer for %zu values, the device state has %zu", o->n, a->n);
    moment_copy(a, o->m, a->m, cudaMemcpyDeviceToHost);
    moment_copy(a, o->v, a->v, cudaMemcpyDeviceToHost);
}

void ot_cuda_optimizer_set(ot_cuda_optimizer *a, const ot_optimizer *o) {
    if (o->n != a->n) ot_die("ot_cuda_optimizer_set: an optimizer for %zu values, the device state has %zu", o->n, a->n);
    moment_copy(a, a->m, o->m, cudaMemcpyHostToDevice);
    moment_copy(a, a->v, o->v, cudaMemcpyHostToDevice);
}

// ---- the sum over ranks ---------------------------------------------------------------------------------------
// Gathered gradients per chunk at most (all ranks' copies of a chunk live on the device at once).
#define GATHER_BYTES ((size_t)256 << 20)

// The ordered sum on the device: a chunk of c values of every rank's gradient all-gathered by NCCL (rank r's at
// [r·c, (r+1)·c): the global slot order, one slot per rank), then summed slot by slot in double.
static int ordered_on_device(ot_comm *nccl, cudaStream_t s, float *grads, size_t n, ot_err *err) {
    const int W = nccl->size;
    size_t chunk = GATHER_BYTES / sizeof(float) / (size_t)W;
    if (chunk > n) chunk = n;
    if (chunk == 0) chunk = 1;
    // From the stream-ordered pool: after the first step it is there already (no cudaMalloc / cudaFree per step,
    // which would wait for the device), and it is counted under --gpu-memory-limit like any temporary.
    float *gathered = NULL;
    OT_CUDA_CHECK(ot_cuda_malloc_async((void **)&gathered, chunk * (size_t)W * sizeof(float), s));
    int rc = 0;
    for (size_t off = 0; off < n && !rc; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        // The all-gather waits for its completion; the previous chunk's sum must have read `gathered` first.
        OT_CUDA_CHECK(cudaStreamSynchronize(s));
        rc = ot_comm_all_gather(nccl, grads + off, gathered, c, OT_COMM_F32, err);
        if (!rc) ot_cuda_sum_slots_ordered(s, grads + off, gathered, W, c);
    }
    OT_CUDA_CHECK(cudaFreeAsync(gathered, s));
    OT_CUDA_CHECK(cudaStreamSynchronize(s));
    return rc;
}

// The ordered sum through host memory and the host communicator (emulated GPUs, where NCCL cannot run).
static int ordered_on_host(ot_comm *host, cudaStream_t s, float *grads, size_t n, ot_err *err) {
    float *mine = ot_malloc(n * sizeof(float)), *sum = ot_malloc(n * sizeof(float));
    OT_CUDA_CHECK(cudaMemcpyAsync(mine, grads, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    OT_CUDA_CHECK(cudaStreamSynchronize(s));
    int rc = ot_comm_all_reduce_ordered(host, mine, 1, n, sum, err);
    if (!rc) {
        OT_CUDA_CHECK(cudaMemcpyAsync(grads, sum, n * sizeof(float), cudaMemcpyHostToDevice, s));
        OT_CUDA_CHECK(cudaStreamSynchronize(s)); // sum is pageable host memory: the copy must land first
    }
    free(mine);
    free(sum);
    return rc;
}

int ot_cuda_sum_ranks(ot_comm *host, ot_comm *nccl, int ordered, cudaStream_t stream, float *grads, size_t n,
                      ot_err *err) {
    if (host->size == 1 || n == 0) return 0;
    if (ordered) return nccl ? ordered_on_device(nccl, stream, grads, n, err) : ordered_on_host(host, stream, grads, n, err);
    if (!nccl) return ot_fail(err, "internal: an NCCL gradient sum without an NCCL communicator");
    // NCCL all-reduce in place on the device (the compute stream is waited for first; the all-reduce returns once
    // the sum has landed), then every rank holds the same sum.
    OT_CUDA_CHECK(cudaStreamSynchronize(stream));
    return ot_comm_all_reduce(nccl, grads, grads, n, OT_COMM_F32, OT_COMM_SUM, err);
}

// ---- the device of a rank --------------------------------------------------------------------------------------
int ot_step_cuda_device(ot_step_engine *e, int *device, ot_comm **nccl, ot_err *err) {
    const int n_dev = ot_cuda_device_count();
    if (n_dev < 1) return ot_fail(err, "--backend cuda: no CUDA device is visible to this process");
    const int dev = e->comm->local_rank % n_dev;
    *device = dev;
    // What the context (and anything else on this GPU) uses counts against the limit.
    OT_CUDA_CHECK(cudaSetDevice(dev));
    if (ot_cuda_set_memory_limit((size_t)e->o->gpu_memory_limit, err)) return -1;
    // NCCL for every multi-GPU run: gradient sums and the gathers of sharded base weights. Only where device memory
    // is host-visible (the emulated CUDA runtime of tests/gpu/train_emu) does the MPI communicator do both.
    *nccl = NULL;
    if (e->comm->size > 1 && !ot_cuda_memory_host_visible(dev) && ot_comm_nccl_init(nccl, e->comm, err)) return -1;
    return 0;
}

const char *ot_step_cuda_recompute_words(const ot_step_engine *e, int mode, char *buf, size_t n) {
    char limit[64] = "", size[32];
    if (e->o->gpu_memory_limit)
        snprintf(limit, sizeof limit, ", for --gpu-memory-limit %s",
                 ot_format_size(size, sizeof size, e->o->gpu_memory_limit));
    snprintf(buf, n, "%s%s%s%s",
             mode == OT_RECOMPUTE_ON ? "on" : mode == OT_RECOMPUTE_ATTENTION ? "of the attention blocks" : "off",
             e->o->recompute < 0 ? " (auto" : "",
             e->o->recompute < 0 ? limit : "", e->o->recompute < 0 ? ")" : "");
    return buf;
}

size_t ot_step_cuda_device_in_use(const ot_step_engine *e) {
    (void)e;
    return ot_cuda_memory_in_use();
}

int ot_cuda_eval_forward(void *ctx, const ot_batch *b, double *loss_sum, ot_err *err) {
    ot_cuda_ctx *c = ctx;
    *loss_sum = 0;
    if (ot_cuda_forward_backward(c, b, 0.0f, 0, err)) return -1;
    return b->T > 0 ? ot_cuda_take_loss(c, loss_sum, err) : 0;
}

#endif // OT_HAVE_CUDA
