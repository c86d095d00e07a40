// CPU emulation of CUDA execution for the GPU op test (see docs/cuda-backend.md, "Without a GPU").
//
// Every GPU thread of a block is a fiber with its own stack; blocks of a grid run one after the other. A fiber
// runs until it reaches a barrier: __syncthreads (all threads of the block) or a warp collective (shuffle, ballot,
// mma.sync, ldmatrix: all 32 lanes of the warp). The scheduler then resolves whatever barrier is complete — a
// collective is computed from the 32 lanes' inputs, exactly as the hardware combines them — and stops with a
// message when threads wait at barriers that can never complete (a barrier in divergent code, a collective with
// exited lanes).
// The order in which threads run between barriers is chosen by EMU_REVERSE and EMU_WARP_AHEAD (see
// run_block), so that a missing barrier changes the result. Device memory is host memory, filled with 0xFF
// (NaN) when allocated; static shared arrays and the dynamic shared memory are refilled with 0xFF before every
// block. cp.async copies are per thread and complete as late as the hardware may complete them: the source is
// read at the copy, the destination is poisoned then and written only at the issuing thread's
// cp.async.wait_group that covers the copy's group, so a read before that wait (or, by another thread, before
// the barrier after it) sees NaN.
#include "cuda_emu.h"

#include <sanitizer/common_interface_defs.h>
#ifndef __SANITIZE_ADDRESS__ // built without AddressSanitizer (OT_EMU_SANITIZE=0): no fiber annotations to make
#define __sanitizer_start_switch_fiber(fake_stack_save, bottom, size) ((void)0)
#define __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old) ((void)0)
#endif
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <map>
#include <vector>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

enum State { ST_RUN, ST_WAIT_BLOCK, ST_WAIT_WARP, ST_DONE };
enum WarpOp { OP_NONE, OP_SHFL_F, OP_SHFL_D, OP_BALLOT, OP_MMA, OP_LDMATRIX };

// One cp.async in flight: its bytes (read at issue), destination, and commit group (-1: not committed yet).
struct CpAsync {
    unsigned char bytes[16];
    void *dst;
    int n, group;
};

// One wgmma.mma_async of one thread: its accumulators before and after, to be recomputed at the wait.
struct WgmmaOp {
    uint64_t desc_a, desc_b;
    int trans_b, group; // group: -1 until committed
    float in[64], out[64];
};

struct Fiber {
    ucontext_t ctx; // only to start the fiber on its own stack
    jmp_buf jb;     // then switches are _setjmp/_longjmp: no signal-mask system call per switch
    bool started;
    State st;
    WarpOp op;      // the collective this lane waits at, with its inputs ...
    double v;       //   shuffle value
    int arg;        //   shuffle lane mask
    uint32_t a[4], b0, b1;
    float d[4];     //   mma fragments (d: accumulators in, results out)
    const void *lm_row; //   ldmatrix: this lane's row address, .trans, the registers it receives
    int lm_trans;
    uint32_t lm_out[4];
    std::vector<CpAsync> cp; // this thread's copies in flight
    int cp_groups;           // groups it committed
    std::vector<struct WgmmaOp> wg; // its wgmma products not yet waited for
    int wg_groups;                  // wgmma groups it committed
    double out;     // ... and its results
    unsigned uout;
    int pred;       // ballot / __syncthreads_count predicate
    int count_out;
};

static std::vector<Fiber> g_f;        // the threads of the running block
static std::vector<char *> g_stacks;  // their stacks, kept for the whole run
static const size_t STACK = 512 * 1024;
static jmp_buf g_sched;               // the scheduler, where a waiting fiber jumps back to
static int g_cur, g_n;                // the running fiber; threads per block
static const std::function<void()> *g_kernel;
static std::vector<char> g_dyn;       // dynamic shared memory of the launch
static int g_reverse = -1, g_warp_ahead = 0;
static long g_launches = 0;
static void *g_fake_stack = nullptr;
static const void *g_main_bottom = nullptr; // the scheduler's stack, for the sanitizer's fiber annotations
static size_t g_main_size = 0;

static void set_thread_idx(int t) {
    threadIdx.x = t % blockDim.x;
    threadIdx.y = (t / blockDim.x) % blockDim.y;
    threadIdx.z = t / (blockDim.x * blockDim.y);
}

static void fiber_entry() {
    __sanitizer_finish_switch_fiber(nullptr, &g_main_bottom, &g_main_size);
    (*g_kernel)();
    g_f[g_cur].st = ST_DONE;
    __sanitizer_start_switch_fiber(nullptr, g_main_bottom, g_main_size); // this fiber ends
    _longjmp(g_sched, 1);
}

static void switch_to_fiber(int t) {
    g_cur = t;
    set_thread_idx(t);
    __sanitizer_start_switch_fiber(&g_fake_stack, g_stacks[t], STACK);
    if (!_setjmp(g_sched)) {
        if (!g_f[t].started) {
            g_f[t].started = true;
            setcontext(&g_f[t].ctx);
        }
        _longjmp(g_f[t].jb, 1);
    }
    __sanitizer_finish_switch_fiber(g_fake_stack, nullptr, nullptr);
}

static void yield_as(State s) {
    Fiber &f = g_f[g_cur];
    f.st = s;
    void *fs = nullptr;
    if (!_setjmp(f.jb)) {
        __sanitizer_start_switch_fiber(&fs, g_main_bottom, g_main_size);
        _longjmp(g_sched, 1);
    }
    __sanitizer_finish_switch_fiber(fs, nullptr, nullptr);
}

void __syncthreads(void) { yield_as(ST_WAIT_BLOCK); }
int __syncthreads_count(int pred) {
    g_f[g_cur].pred = pred != 0;
    yield_as(ST_WAIT_BLOCK);
    return g_f[g_cur].count_out;
}
float __shfl_xor_sync(unsigned mask, float v, int lm) {
    Fiber &f = g_f[g_cur];
    f.op = OP_SHFL_F, f.v = v, f.arg = lm;
    yield_as(ST_WAIT_WARP);
    return (float)g_f[g_cur].out;
}
double __shfl_xor_sync(unsigned mask, double v, int lm) {
    Fiber &f = g_f[g_cur];
    f.op = OP_SHFL_D, f.v = v, f.arg = lm;
    yield_as(ST_WAIT_WARP);
    return g_f[g_cur].out;
}
unsigned __ballot_sync(unsigned mask, int pred) {
    Fiber &f = g_f[g_cur];
    f.op = OP_BALLOT, f.pred = pred != 0;
    yield_as(ST_WAIT_WARP);
    return g_f[g_cur].uout;
}
void emu_mma_bf16_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    Fiber &f = g_f[g_cur];
    f.op = OP_MMA;
    memcpy(f.a, a, sizeof(f.a));
    f.b0 = b0, f.b1 = b1;
    memcpy(f.d, d, sizeof(f.d));
    yield_as(ST_WAIT_WARP);
    memcpy(d, g_f[g_cur].d, sizeof(f.d));
}
void *emu_dyn_smem(void) { return g_dyn.data(); }
void emu_ldmatrix_x4(uint32_t r[4], const void *p, int trans) {
    Fiber &f = g_f[g_cur];
    f.op = OP_LDMATRIX, f.lm_row = p, f.lm_trans = trans;
    yield_as(ST_WAIT_WARP);
    memcpy(r, g_f[g_cur].lm_out, sizeof(g_f[g_cur].lm_out));
}

static void die(const char *msg);

// Asynchronous operations in commit groups (cp.async copies, wgmma products), per thread: a commit puts every
// operation not yet in a group into group `groups`; a wait retires (`retire(op)`) those of every group before the
// newest n and keeps the rest.
template <class Op> static void commit_group(std::vector<Op> &ops, int &groups) {
    for (auto &op : ops)
        if (op.group < 0) op.group = groups;
    groups++;
}
template <class Op, class F> static void wait_groups(std::vector<Op> &ops, int groups, int n, F retire) {
    std::vector<Op> left;
    for (auto &op : ops) {
        if (op.group >= 0 && op.group < groups - n) retire(op);
        else left.push_back(op);
    }
    ops.swap(left);
}

uint32_t __cvta_generic_to_shared(const void *p) {
    const char *c = (const char *)p;
    if (c < g_dyn.data() || c >= g_dyn.data() + g_dyn.size() - 16)
        die("__cvta_generic_to_shared: not an address of the dynamic shared memory");
    return (uint32_t)(c - g_dyn.data());
}

// Element (mn, k) of a wgmma operand (bf16) as its descriptor places it: 128-byte swizzle, K-major (rows of 128
// bytes along k, 8-row blocks sbo apart) or MN-major (rows of 128 bytes along mn, one per k; 8-row blocks sbo apart,
// 64-element column blocks lbo apart); the 16-byte chunk of each address is XORed with its bits 7-9.
static float wgmma_operand(uint64_t desc, int mn, int k, bool mn_major) {
    if ((desc >> 62) != 1) die("wgmma descriptor: only the 128-byte swizzle is emulated");
    if ((desc >> 49) & 7) die("wgmma descriptor: a non-zero base offset is not emulated");
    const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4, lbo = (uint32_t)((desc >> 16) & 0x3FFF) << 4,
                   sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4;
    uint32_t a = mn_major ? start + (mn / 64) * lbo + (mn % 64) * 2 + (k / 8) * sbo + (k % 8) * 128
                          : start + (mn / 8) * sbo + (mn % 8) * 128 + k * 2;
    a ^= ((a >> 7) & 7) << 4;
    if ((size_t)a + 2 > g_dyn.size() - 16) die("wgmma operand outside the dynamic shared memory");
    uint16_t h;
    memcpy(&h, g_dyn.data() + a, 2);
    const uint32_t bits = (uint32_t)h << 16;
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

// This thread's 64 accumulators: thread t of the warpgroup (warp w = t / 32, g = lane / 4, c = lane % 4) holds
// register 4j + 2h + i = D[16w + g + 8h][8j + 2c + i].
static void wgmma_compute(float out[64], const float in[64], uint64_t desc_a, uint64_t desc_b, int trans_b) {
    if (g_n % 128) die("wgmma in a block that is not whole warpgroups");
    const int t = g_cur % 128, w = t / 32, g = (t % 32) / 4, c = t % 4;
    for (int r = 0; r < 64; r++) {
        const int row = 16 * w + g + 8 * ((r / 2) % 2), col = 8 * (r / 4) + 2 * c + r % 2;
        float s = in[r];
        for (int k = 0; k < 16; k++) s += wgmma_operand(desc_a, row, k, false) * wgmma_operand(desc_b, col, k, trans_b);
        out[r] = s;
    }
}

void emu_wgmma_m64n128k16(float d[64], uint64_t desc_a, uint64_t desc_b, int trans_b) {
    WgmmaOp op;
    op.desc_a = desc_a, op.desc_b = desc_b, op.trans_b = trans_b, op.group = -1;
    memcpy(op.in, d, sizeof(op.in));
    wgmma_compute(op.out, op.in, desc_a, desc_b, trans_b);
    memcpy(d, op.out, sizeof(op.out));
    g_f[g_cur].wg.push_back(op);
}

void emu_wgmma_commit(void) { commit_group(g_f[g_cur].wg, g_f[g_cur].wg_groups); }

void emu_wgmma_wait(int n) {
    Fiber &f = g_f[g_cur];
    wait_groups(f.wg, f.wg_groups, n, [](const WgmmaOp &op) {
        float again[64];
        wgmma_compute(again, op.in, op.desc_a, op.desc_b, op.trans_b);
        if (memcmp(again, op.out, sizeof(again))) die("a wgmma operand changed before its wgmma.wait_group");
    });
}

// Static shared arrays are function-scope statics in the rewritten kernels (shared by the fibers of a block, as
// blocks run one at a time); each registers itself the first time a thread passes its declaration.
struct Region {
    void *p;
    size_t n;
};
static std::vector<Region> g_shared;
void emu_shared(void *p, size_t n) {
    for (auto &r : g_shared)
        if (r.p == p) return;
    g_shared.push_back({p, n});
    memset(p, 0xFF, n);
}

void emu_unsupported(const char *what) { die(what); }

// Whether [p, p + n) lies inside the dynamic shared memory or one registered static shared array.
static bool in_shared(const void *p, size_t n) {
    const char *c = (const char *)p;
    if (c >= g_dyn.data() && c + n <= g_dyn.data() + g_dyn.size() - 16) return true;
    for (auto &r : g_shared)
        if (c >= (const char *)r.p && c + n <= (const char *)r.p + r.n) return true;
    return false;
}

void emu_cp_async(void *dst, const void *src, int n) {
    if (n != 4 && n != 8 && n != 16) die("cp.async of a size other than 4, 8, 16 bytes");
    if ((uintptr_t)dst % n || (uintptr_t)src % n) die("cp.async address not aligned to its size");
    if (!in_shared(dst, n)) die("cp.async destination outside shared memory");
    CpAsync c;
    memcpy(c.bytes, src, n);
    c.dst = dst, c.n = n, c.group = -1;
    memset(dst, 0xFF, n); // undefined until the copy completes
    g_f[g_cur].cp.push_back(c);
}
void emu_cp_async_commit(void) { commit_group(g_f[g_cur].cp, g_f[g_cur].cp_groups); }
void emu_cp_async_wait(int n) { // complete every copy of the groups before the newest n
    Fiber &f = g_f[g_cur];
    wait_groups(f.cp, f.cp_groups, n, [](const CpAsync &c) { memcpy(c.dst, c.bytes, c.n); });
}

static float bf_lo(uint32_t r) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(r & 0xffff))); }
static float bf_hi(uint32_t r) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(r >> 16))); }

static void die(const char *msg) {
    fprintf(stderr, "EMU FATAL: %s (launch %ld, block %u,%u,%u)\n", msg, g_launches, blockIdx.x, blockIdx.y, blockIdx.z);
    abort();
}

static void warp_collective(int w) {
    Fiber *L = &g_f[w * 32];
    WarpOp op = L[0].op;
    for (int l = 0; l < 32; l++)
        if (L[l].op != op) die("lanes of a warp wait at different collectives");
    if (op == OP_SHFL_F || op == OP_SHFL_D) {
        double in[32];
        for (int l = 0; l < 32; l++) in[l] = L[l].v;
        for (int l = 0; l < 32; l++) {
            int src = l ^ L[l].arg;
            if (src < 0 || src >= 32) die("shuffle source outside the warp");
            L[l].out = in[src];
        }
    } else if (op == OP_BALLOT) {
        unsigned b = 0;
        for (int l = 0; l < 32; l++) b |= (unsigned)L[l].pred << l;
        for (int l = 0; l < 32; l++) L[l].uout = b;
    } else if (op == OP_MMA) {
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; l++) {
            int g = l >> 2, c = l & 3;
            A[g][2 * c] = bf_lo(L[l].a[0]), A[g][2 * c + 1] = bf_hi(L[l].a[0]);
            A[g + 8][2 * c] = bf_lo(L[l].a[1]), A[g + 8][2 * c + 1] = bf_hi(L[l].a[1]);
            A[g][2 * c + 8] = bf_lo(L[l].a[2]), A[g][2 * c + 9] = bf_hi(L[l].a[2]);
            A[g + 8][2 * c + 8] = bf_lo(L[l].a[3]), A[g + 8][2 * c + 9] = bf_hi(L[l].a[3]);
            B[2 * c][g] = bf_lo(L[l].b0), B[2 * c + 1][g] = bf_hi(L[l].b0);
            B[2 * c + 8][g] = bf_lo(L[l].b1), B[2 * c + 9][g] = bf_hi(L[l].b1);
            C[g][2 * c] = L[l].d[0], C[g][2 * c + 1] = L[l].d[1];
            C[g + 8][2 * c] = L[l].d[2], C[g + 8][2 * c + 1] = L[l].d[3];
        }
        float D[16][8];
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 8; j++) {
                float acc = C[i][j];
                for (int kk = 0; kk < 16; kk++) acc += A[i][kk] * B[kk][j];
                D[i][j] = acc;
            }
        for (int l = 0; l < 32; l++) {
            int g = l >> 2, c = l & 3;
            L[l].d[0] = D[g][2 * c], L[l].d[1] = D[g][2 * c + 1];
            L[l].d[2] = D[g + 8][2 * c], L[l].d[3] = D[g + 8][2 * c + 1];
        }
    } else if (op == OP_LDMATRIX) {
        // Matrix i's row j comes from the address of lane 8i + j (8 b16, 16-byte aligned, in shared memory).
        // Lane l receives, per matrix, row l/4's elements 2(l%4), 2(l%4)+1 — or with .trans column l/4's rows
        // 2(l%4), 2(l%4)+1 — the lower index in the low half.
        uint16_t M[4][8][8];
        for (int l = 0; l < 32; l++) {
            if (L[l].lm_trans != L[0].lm_trans) die("lanes of a warp disagree on ldmatrix .trans");
            if ((uintptr_t)L[l].lm_row % 16) die("ldmatrix row address not 16-byte aligned");
            if (!in_shared(L[l].lm_row, 16)) die("ldmatrix row outside shared memory");
            memcpy(M[l / 8][l % 8], L[l].lm_row, 16);
        }
        for (int l = 0; l < 32; l++) {
            int g = l / 4, c = l % 4;
            for (int i = 0; i < 4; i++) {
                uint16_t lo = L[0].lm_trans ? M[i][2 * c][g] : M[i][g][2 * c];
                uint16_t hi = L[0].lm_trans ? M[i][2 * c + 1][g] : M[i][g][2 * c + 1];
                L[l].lm_out[i] = (uint32_t)lo | (uint32_t)hi << 16;
            }
        }
    } else {
        die("unknown warp collective");
    }
    for (int l = 0; l < 32; l++) L[l].st = ST_RUN, L[l].op = OP_NONE;
}

// Runs one block to completion. Between barriers, threads run either all in lockstep (each to its next barrier,
// in thread order or reversed) or one warp at a time, each warp running ahead through its own collectives until
// it reaches a __syncthreads (warps in order or reversed).
static void run_block() {
    for (auto &r : g_shared) memset(r.p, 0xFF, r.n);
    memset(g_dyn.data(), 0xFF, g_dyn.size() - 16); // the 16 bytes past the end keep their 0xA5 guard
    for (int t = 0; t < g_n; t++) {
        Fiber &f = g_f[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = g_stacks[t];
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
        f.started = false;
        f.st = ST_RUN;
        f.op = OP_NONE;
        f.cp.clear();
        f.cp_groups = 0;
        f.wg.clear();
        f.wg_groups = 0;
    }
    for (;;) {
        if (!g_warp_ahead) { // lockstep: every thread runs to its next barrier, then the barriers resolve
            for (int i = 0; i < g_n; i++) {
                int t = g_reverse ? g_n - 1 - i : i;
                if (g_f[t].st == ST_RUN) switch_to_fiber(t);
            }
        } else { // one warp at a time runs ahead to its next block barrier (exposes missing __syncthreads)
            for (int wi = 0; wi < g_n / 32; wi++) {
                int w = g_reverse ? g_n / 32 - 1 - wi : wi;
                for (;;) {
                    for (int l = 0; l < 32; l++)
                        if (g_f[w * 32 + l].st == ST_RUN) switch_to_fiber(w * 32 + l);
                    int waiting = 0, alive = 0;
                    for (int l = 0; l < 32; l++) {
                        alive += g_f[w * 32 + l].st != ST_DONE;
                        waiting += g_f[w * 32 + l].st == ST_WAIT_WARP;
                    }
                    if (!waiting || waiting != alive || alive != 32) break;
                    warp_collective(w);
                }
            }
        }
        int live = 0, at_block = 0;
        for (int t = 0; t < g_n; t++) {
            live += g_f[t].st != ST_DONE;
            at_block += g_f[t].st == ST_WAIT_BLOCK;
        }
        if (!live) return;
        bool released = false;
        for (int w = 0; w < g_n / 32; w++) {
            int waiting = 0, alive = 0;
            for (int l = 0; l < 32; l++) {
                alive += g_f[w * 32 + l].st != ST_DONE;
                waiting += g_f[w * 32 + l].st == ST_WAIT_WARP;
            }
            if (waiting && waiting == alive) {
                if (alive != 32) die("warp collective with exited lanes");
                warp_collective(w);
                released = true;
            }
        }
        if (released) continue;
        if (at_block == live) {
            if (live != g_n) die("__syncthreads after some threads of the block exited");
            int count = 0;
            for (int t = 0; t < g_n; t++) count += g_f[t].pred;
            for (int t = 0; t < g_n; t++) g_f[t].st = ST_RUN, g_f[t].count_out = count, g_f[t].pred = 0;
            continue;
        }
        die("deadlock: threads wait at different barriers (divergent __syncthreads or collective)");
    }
}

// Dynamic shared memory a kernel may take (cudaFuncSetAttribute), and the most an H100's block can have.
static std::map<const void *, int> g_max_dyn;
static const int MAX_DYN_OPT_IN = 227 * 1024;

cudaError_t emu_run_grid(const std::function<void()> &k, dim3 grid, dim3 block, size_t shmem, const void *kernel) {
    g_launches++;
    if (g_reverse < 0) {
        g_reverse = getenv("EMU_REVERSE") && atoi(getenv("EMU_REVERSE"));
        g_warp_ahead = getenv("EMU_WARP_AHEAD") && atoi(getenv("EMU_WARP_AHEAD"));
    }
    unsigned n = block.x * block.y * block.z;
    if (n == 0 || n > 1024 || n % 32) die("bad block size");
    if (grid.y > 65535 || grid.z > 65535 || grid.x == 0 || grid.y == 0 || grid.z == 0) die("bad grid");
    size_t allowed = 48 * 1024;
    if (g_max_dyn.count(kernel)) allowed = std::max(allowed, (size_t)g_max_dyn[kernel]);
    if (shmem > allowed) die("dynamic shared memory above 48 KB without opt-in (cudaFuncSetAttribute)");
    g_n = (int)n;
    if (g_f.size() < n) g_f.resize(n);
    while (g_stacks.size() < n) g_stacks.push_back((char *)malloc(STACK));
    g_dyn.assign(shmem + 16, (char)0xA5);
    g_kernel = &k;
    blockDim = block;
    gridDim = grid;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx.x = x, blockIdx.y = y, blockIdx.z = z;
                run_block();
            }
    return cudaSuccess;
}

// ---- runtime ----
extern "C" {
const char *cudaGetErrorName(cudaError_t e) { return e ? "cudaErrorEmu" : "cudaSuccess"; }
const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
// A small emulated GPU: 4 SMs (so size heuristics that fill the SMs take their many-blocks branches in small tests).
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
    if (a != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
    *v = 4;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *p, int) { *p = nullptr; return cudaSuccess; }
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void *) { return cudaSuccess; }
cudaError_t cudaDeviceGetMemPool(cudaMemPool_t *p, int) { *p = nullptr; return cudaSuccess; }
// The op tests set no memory limit (kernels/cuda/device_memory.c): nothing is counted, the pool holds nothing.
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr, void *v) { *(uint64_t *)v = 0; return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) { *free_b = *total_b = (size_t)80 << 30; return cudaSuccess; }
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    memset(*p, 0xFF, n);
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
cudaError_t cudaFreeAsync(void *p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaMemset(void *p, int v, size_t n) { memset(p, v, n); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t) { memset(p, v, n); return cudaSuccess; }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) { memcpy(d, s, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) { memcpy(d, s, n); return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (cudaStream_t)malloc(1); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { free(s); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
// Everything runs at once on the host, so streams and events order nothing and need no state.
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { *e = (cudaEvent_t)malloc(1); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; } // every launch has run by its return
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaMallocHost(void **p, size_t n) { *p = malloc(n ? n : 1); return *p ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute a, int v) {
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || v < 0 || v > MAX_DYN_OPT_IN) return cudaErrorInvalidValue;
    g_max_dyn[f] = v;
    return cudaSuccess;
}

// ---- cuBLAS ----
const char *cublasGetStatusString(cublasStatus_t s) { return s ? "emulated cuBLAS error" : "success"; }
cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (cublasHandle_t)malloc(1); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy(cublasHandle_t h) { free(h); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
static float ld_el(const void *p, cudaDataType t, size_t i) {
    return t == CUDA_R_32F ? ((const float *)p)[i] : __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}
static void st_el(void *p, cudaDataType t, size_t i, float v) {
    if (t == CUDA_R_32F) ((float *)p)[i] = v;
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
}
static cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                           const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb, float beta,
                           const void *C, cudaDataType ct, int ldc, void *D, cudaDataType dt, int ldd,
                           const void *bias) {
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m || ldd < m) {
        fprintf(stderr, "EMU cuBLAS: bad leading dimension\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    std::vector<float> out((size_t)m * n);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double acc = 0;
            for (int l = 0; l < k; l++) {
                float a = ld_el(A, at, ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * lda : (size_t)l + (size_t)i * lda);
                float b = ld_el(B, bt, tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * ldb : (size_t)j + (size_t)l * ldb);
                acc += (double)a * b;
            }
            float r = (float)(alpha * acc);
            if (beta != 0.0f) r += beta * ld_el(C, ct, (size_t)i + (size_t)j * ldc);
            if (bias) r += ld_el(bias, dt, i);
            out[(size_t)i + (size_t)j * m] = r;
        }
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) st_el(D, dt, (size_t)i + (size_t)j * ldd, out[(size_t)i + (size_t)j * m]);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt,
                            int ldb, const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t,
                            cublasGemmAlgo_t) {
    if (at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
    return gemm(ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, bt, ldb, *(const float *)beta, C, ct, ldc, C,
                ct, ldc, nullptr);
}
static size_t el_bytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *A, cudaDataType at, int lda,
                                          long long sa, const void *B, cudaDataType bt, int ldb, long long sb,
                                          const void *beta, void *C, cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t, cublasGemmAlgo_t) {
    if (at != bt || batch < 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    for (int i = 0; i < batch; i++) {
        const char *a = (const char *)A + (size_t)(i * sa) * el_bytes(at), *b = (const char *)B + (size_t)(i * sb) * el_bytes(bt);
        char *c = (char *)C + (size_t)(i * sc) * el_bytes(ct);
        cublasStatus_t st = gemm(ta, tb, m, n, k, *(const float *)alpha, a, at, lda, b, bt, ldb, *(const float *)beta, c,
                                 ct, ldc, c, ct, ldc, nullptr);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    return gemm(ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C, CUDA_R_32F, ldc, C,
                CUDA_R_32F, ldc, nullptr);
}
struct emu_lt_desc { cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N; int epi = CUBLASLT_EPILOGUE_DEFAULT; const void *bias = nullptr; };
struct emu_lt_layout { cudaDataType t; uint64_t rows, cols; int64_t ld; };
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = (cublasLtHandle_t)malloc(1); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) { free(h); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t, cudaDataType) { *d = new emu_lt_desc(); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v, size_t n) {
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: if (n != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE; memcpy(&d->ta, v, n); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: if (n != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE; memcpy(&d->tb, v, n); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: if (n != sizeof(cublasLtEpilogue_t)) return CUBLAS_STATUS_INVALID_VALUE; memcpy(&d->epi, v, n); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: if (n != sizeof(void *)) return CUBLAS_STATUS_INVALID_VALUE; memcpy(&d->bias, v, n); break;
    default: return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t r, uint64_t c, int64_t ld) {
    if (ld < (int64_t)r) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_lt_layout{t, r, c, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) { *p = (cublasLtMatmulPreference_t)malloc(1); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { free(p); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t, const void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
static bool lt_shapes(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                      cublasLtMatrixLayout_t dd, uint64_t *m, uint64_t *n, uint64_t *k) {
    uint64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols, ak = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    *m = am, *n = bn, *k = ak;
    return ak == bk && c->rows == am && c->cols == bn && dd->rows == am && dd->cols == bn;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t, int, cublasLtMatmulHeuristicResult_t *r, int *found) {
    uint64_t m, n, k;
    if (!lt_shapes(d, a, b, c, dd, &m, &n, &k)) {
        fprintf(stderr, "EMU cuBLASLt: inconsistent shapes\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    // Like the real library for odd alignments: offer nothing when a leading dimension is not a multiple of 8.
    if (a->ld % 8 || b->ld % 8 || dd->ld % 8) { *found = 0; return CUBLAS_STATUS_NOT_SUPPORTED; }
    memset(r, 0, sizeof(*r));
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t la, const void *B, cublasLtMatrixLayout_t lb, const void *beta,
                              const void *C, cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t) {
    uint64_t m, n, k;
    if (!lt_shapes(d, la, lb, lc, ld, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
    const void *bias = d->epi == CUBLASLT_EPILOGUE_BIAS ? d->bias : nullptr;
    if (d->epi == CUBLASLT_EPILOGUE_BIAS && !bias) return CUBLAS_STATUS_INVALID_VALUE;
    return gemm(d->ta, d->tb, (int)m, (int)n, (int)k, *(const float *)alpha, A, la->t, (int)la->ld, B, lb->t,
                (int)lb->ld, *(const float *)beta, C, lc->t, (int)lc->ld, D, ld->t, (int)ld->ld, bias);
}
}
