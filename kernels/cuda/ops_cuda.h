// osstune CUDA kernels: the GPU twins of the CPU ops in kernels/ops.h, on DEVICE pointers, queued on a stream.
// Plain C can include this header (the trainer is C); the kernels themselves live in kernels/cuda/*.cu.
//
// Data types (docs/cuda-backend.md has the full memory plan):
// - activations and their gradients: bf16 (ot_bf16 here, __nv_bfloat16 in device code), fp32 arithmetic inside;
// - small saved statistics (rmsnorm rstd, attention lse, routing weights, LoRA xa): fp32;
// - frozen base weights: bf16 (dense) or MXFP4 (experts, kept 4-bit); their gradients, when asked for, fp32;
// - LoRA A/B, their gradients and the AdamW state: fp32.
//
// Conventions (the same as kernels/ops_list.h unless an op says otherwise):
// - row-major dense arrays; sizes as in the CPU op of the same name;
// - forward ops overwrite their outputs; backward ops ACCUMULATE (+=) into every gradient, and a NULL gradient
//   pointer skips that gradient;
// - every op only queues work on `stream` (no host synchronisation) unless it says so;
// - temporaries come from the stream-ordered allocator (cudaMallocAsync), so call ot_cuda_init() once first;
// - a programming error (bad sizes, misaligned pointers, a failed launch) exits with the file and line; bad DATA
//   seen on the device (a token id outside the vocabulary, an expert index outside 0..E-1, ...) cannot exit from a
//   kernel: it sets a sticky flag that ot_cuda_check_inputs() turns into an error message.
#ifndef OT_KERNELS_OPS_CUDA_H
#define OT_KERNELS_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "common/ot_common.h"

#ifdef __cplusplus
extern "C" {
#endif

// bf16 as stored: the upper 16 bits of an IEEE float32 (ot_bf16_to_f32 / ot_f32_to_bf16 in ot_common.h convert).
typedef uint16_t ot_bf16;

// ---- errors ---------------------------------------------------------------------------------------------------
// Exit with "osstune: file:line: CUDA error ..." when a runtime / cuBLAS call fails (an allocation refused under
// the memory limit below says so, and what to do).
void ot_cuda_check_at(int err, const char *expr, const char *file, int line);
void ot_cublas_check_at(int status, const char *expr, const char *file, int line);
#define OT_CUDA_CHECK(call) ot_cuda_check_at((int)(call), #call, __FILE__, __LINE__)
#define OT_CUBLAS_CHECK(call) ot_cublas_check_at((int)(call), #call, __FILE__, __LINE__)

// Bits of the sticky bad-input flag (one per kind of bad data a kernel can see).
enum {
    OT_CUDA_BAD_TOKEN = 1,   // embedding: token id outside 0..V-1
    OT_CUDA_BAD_SEGMENT = 2, // attention: seg_start[i] outside 0..i
    OT_CUDA_BAD_EXPERT = 4,  // MoE: routed expert index outside 0..E-1
    OT_CUDA_BAD_TARGET = 8,  // cross-entropy: position outside 0..T-1 or label outside 0..V-1
    OT_CUDA_BAD_CACHE = 16,  // KV cache: slot outside 0..S-1 or position outside 0..max_len-1
};
int ot_cuda_sm_count(void); // the current GPU's SM count (for launch-size choices)
// Device pointer to the flag word (the ops pass it to their kernels).
unsigned *ot_cuda_input_flags(void);
// Waits for `stream`, reads and clears the flag: 0 when clean, else -1 with a message naming what was bad.
int ot_cuda_check_inputs(cudaStream_t stream, ot_err *err);

// ---- set-up ---------------------------------------------------------------------------------------------------
// Selects the device and makes the stream-ordered memory pool keep freed memory (temporaries are then cheap).
void ot_cuda_init(int device);

// cuBLAS / cuBLASLt handles and the Lt workspace, for the ops built on library products.
typedef struct {
    void *lt;              // cublasLtHandle_t
    void *blas;            // cublasHandle_t
    void *workspace;       // device memory for cuBLASLt
    size_t workspace_size; // bytes
} ot_cuda_blas;
void ot_cuda_blas_init(ot_cuda_blas *b);
void ot_cuda_blas_free(ot_cuda_blas *b);

// ---- device memory under a limit (kernels/cuda/cuda_host.c) -----------------------------------------------
// A run told it has `bytes` of GPU memory (0: the card's own) plans and allocates as on a card of that size. The
// limit bounds the device's memory in use, total minus free, the figure nvidia-smi shows: the CUDA context, the
// libraries' workspaces, the stream-ordered pool and every allocation count, as they would on the smaller card.
// Refused (-1, err naming the sizes) when the current device already uses `bytes` (the CUDA context, other
// processes): nothing would be left. bytes 0 lifts the limit.
int ot_cuda_set_memory_limit(size_t bytes, ot_err *err);
size_t ot_cuda_memory_limit(void);
size_t ot_cuda_memory_in_use(void); // the current device's memory in use (total - free), bytes
size_t ot_cuda_free_bytes(void);    // its free memory, lowered to what the limit leaves
// cudaMalloc / cudaMallocAsync within the limit: cudaErrorMemoryAllocation, nothing allocated, past it (for the
// pool, only its growth counts: memory it holds unused serves first).
cudaError_t ot_cuda_malloc(void **p, size_t bytes);
cudaError_t ot_cuda_malloc_async(void **p, size_t bytes, cudaStream_t stream);
// ot_cuda_malloc that reports a shortage in err instead: "WHAT needs X GiB of GPU memory, Y GiB are free (under
// the limit of Z GiB)[; HINT]", -1. hint may be NULL.
int ot_cuda_alloc(void **p, size_t bytes, const char *what, const char *hint, ot_err *err);

// ---- small element-wise helpers -------------------------------------------------------------------------------
void ot_cuda_f32_to_bf16(cudaStream_t stream, ot_bf16 *dst, const float *src, size_t n);
void ot_cuda_bf16_to_f32(cudaStream_t stream, float *dst, const ot_bf16 *src, size_t n);
void ot_cuda_add_bf16(cudaStream_t stream, ot_bf16 *y, const ot_bf16 *x, size_t n); // y += x
void ot_cuda_add_f32_to_bf16(cudaStream_t stream, ot_bf16 *y, const float *x, size_t n); // y = bf16(y + x)
void ot_cuda_scale_f32(cudaStream_t stream, float *x, size_t n, float factor);     // x *= factor

// ---- embedding: out[t] = table[ids[t]]; dtable[ids[t]] += dout[t] (V = rows of the table, for bounds) --------
void ot_cuda_embedding_fwd(cudaStream_t stream, ot_bf16 *out, const int32_t *ids, const ot_bf16 *table, int T, int H,
                           int V);
void ot_cuda_embedding_bwd(cudaStream_t stream, float *dtable, const ot_bf16 *dout, const int32_t *ids, int T, int H,
                           int V);
// The same from a block of the table (sharded base weights: a gathered chunk): rows [nv, H] are vocabulary rows
// v0 .. v0+nv−1; out[t] is written for the tokens whose id falls there, other rows of out are left alone. Calling it
// for blocks that cover 0..V−1 gives ot_cuda_embedding_fwd; the block with v0 = 0 flags (and NaNs) bad ids.
void ot_cuda_embedding_rows_fwd(cudaStream_t stream, ot_bf16 *out, const int32_t *ids, const ot_bf16 *rows, int v0,
                                int nv, int T, int H, int V);

// Full training, deterministic: dtable[ids[t]] += dout[t] with the positions grouped by id on the host
// (ot_embedding_sort_ids: order [T], seg [n_seg + 1], both on the device). One block per id adds its rows in
// position order, no atomics: the same bits as the CPU ot_embedding_bwd.
void ot_cuda_embedding_bwd_sorted(cudaStream_t stream, float *dtable, const ot_bf16 *dout, const int32_t *ids,
                                  const int32_t *order, const int32_t *seg, int n_seg, int T, int H, int V);

// ---- RMSNorm: y = x · rstd · w, rstd[t] = 1/sqrt(mean(x²) + eps) saved in fp32 ---------------------------------
void ot_cuda_rmsnorm_fwd(cudaStream_t stream, ot_bf16 *y, float *rstd, const ot_bf16 *x, const ot_bf16 *w, int T,
                         int H, float eps);
void ot_cuda_rmsnorm_bwd(cudaStream_t stream, ot_bf16 *dx, float *dw, const ot_bf16 *dy, const ot_bf16 *x,
                         const ot_bf16 *w, const float *rstd, int T, int H);

// ---- dense linear through cuBLASLt / cuBLAS: y[T, out] = x[T, in] · W[out, in]ᵀ + b (b may be NULL) -------------
void ot_cuda_matmul_fwd(cudaStream_t stream, ot_cuda_blas *blas, ot_bf16 *y, const ot_bf16 *x, const ot_bf16 *W,
                        const ot_bf16 *b, int T, int in, int out);
// dx += dy · W (bf16);  dW += dyᵀ · x (fp32);  db += Σ_t dy (fp32)
void ot_cuda_matmul_bwd(cudaStream_t stream, ot_cuda_blas *blas, ot_bf16 *dx, float *dW, float *db, const ot_bf16 *dy,
                        const ot_bf16 *x, const ot_bf16 *W, int T, int in, int out);

// ---- LoRA (PEFT): y += scale · (x · Aᵀ) · Bᵀ with A [r, in], B [out, r] fp32; xa [T, r] fp32 saved -------------
// For a group of n projections of the same input x (q, k, v; or one projection, n = 1): one product makes all their
// xa, one expansion all their input gradients, one product all their A gradients. The products run in bf16 on the
// tensor cores with each fp32 operand split into bf16 hi + lo parts (lora.cu).
#define OT_LORA_GROUP_MAX 4
typedef struct {
    int n;                                   // projections (1..OT_LORA_GROUP_MAX)
    const float *A;                          // their A's stacked [n·r, in] (one array)
    const ot_bf16 *A_hl;                     // optional: A's hi parts stacked, the lo parts hl_stride elements later
                                             //   (ot_cuda_lora_split_params); NULL: split A at each use
    const float *B[OT_LORA_GROUP_MAX];       // [out_i, r]
    const ot_bf16 *B_hl[OT_LORA_GROUP_MAX];  // optional, as A_hl
    int out[OT_LORA_GROUP_MAX];
    size_t hl_stride;
    // backward: the gradients' hi products accumulate into dA / dB_i (NULL: not wanted), the lo products into
    // dA_lo / dB_lo_i (arrays after them in memory, e.g. a tail of the same allocation, for ot_cuda_lora_fold to add
    // once per step) or, NULL, into dA / dB_i at once. dA is [n·r, in] like A.
    float *dA, *dA_lo;
    float *dB[OT_LORA_GROUP_MAX], *dB_lo[OT_LORA_GROUP_MAX];
} ot_cuda_lora_w;
// y[i] [T, out_i] +=; xa [T, n·r] fp32 (projection i's in columns i·r..); xa_hl (optional): xa's bf16 hi / lo parts
// [2][T, n·r], for the backward.
void ot_cuda_lora_fwd(cudaStream_t stream, ot_bf16 *const *y, float *xa, ot_bf16 *xa_hl, const ot_bf16 *x,
                      const ot_cuda_lora_w *w, int T, int in, int r, float scale);
// dx [T, in] += … (may be NULL), and the gradients w names, from dy[i] [T, out_i]. xa_hl: the forward's (NULL:
// split xa here).
void ot_cuda_lora_bwd(cudaStream_t stream, ot_bf16 *dx, const ot_bf16 *const *dy, const ot_bf16 *x, const float *xa,
                      const ot_bf16 *xa_hl, const ot_cuda_lora_w *w, int T, int in, int r, float scale);
// g[seg.dst + i] += lo[seg.src + i] (+ lo[lo2_stride + seg.src + i] when lo2_stride > 0), then those are zeroed,
// for n_seg device triples (dst, src, count) (count <= max_n; seg NULL: one segment (0, 0, max_n)).
void ot_cuda_lora_fold(cudaStream_t stream, float *g, float *lo, size_t lo2_stride, const size_t *seg, int n_seg,
                       size_t max_n);
// hl[seg.dst + i] = hi, hl[hl_stride + seg.dst + i] = lo of params[seg.src + i] (and copy[seg.dst + i] = the value,
// when copy is given), for n_seg device triples (src, dst, count), count <= max_n.
void ot_cuda_lora_split_params(cudaStream_t stream, ot_bf16 *hl, size_t hl_stride, float *copy, const float *params,
                               const size_t *seg, int n_seg, size_t max_n);

// ---- YaRN RoPE in place on x [T, nh, D]; inv_freq [D/2] on the device (from the CPU ot_rope_inv_freq) ---------
void ot_cuda_rope_fwd(cudaStream_t stream, ot_bf16 *x, const int32_t *pos, const float *inv_freq, float attn_factor,
                      int T, int nh, int D);
void ot_cuda_rope_bwd(cudaStream_t stream, ot_bf16 *dx, const int32_t *pos, const float *inv_freq, float attn_factor,
                      int T, int nh, int D);
// The same on queries [T, nh, D] and keys [T, nkv, D] in one launch.
void ot_cuda_rope_qk_fwd(cudaStream_t stream, ot_bf16 *q, ot_bf16 *k, const int32_t *pos, const float *inv_freq,
                         float attn_factor, int T, int nh, int nkv, int D);
void ot_cuda_rope_qk_bwd(cudaStream_t stream, ot_bf16 *dq, ot_bf16 *dk, const int32_t *pos, const float *inv_freq,
                         float attn_factor, int T, int nh, int nkv, int D);

// ---- attention with sinks, GQA, sliding window, packed sequences (flash-style: no T×T matrix) ------------------
// As ot_attention_fwd; sinks [nh] fp32, lse [T, nh] fp32. Head dim D must be 64 (gpt-oss).
void ot_cuda_attention_fwd(cudaStream_t stream, ot_bf16 *out, float *lse, const ot_bf16 *q, const ot_bf16 *k,
                           const ot_bf16 *v, const float *sinks, const int32_t *seg_start, int T, int nh, int nkv,
                           int D, int window);
// Recomputes the probabilities from lse; dsinks [nh] fp32. Uses a [T, nh, D] fp32 temporary for dq.
void ot_cuda_attention_bwd(cudaStream_t stream, ot_bf16 *dq, ot_bf16 *dk, ot_bf16 *dv, float *dsinks,
                           const ot_bf16 *dout, const ot_bf16 *out, const float *lse, const ot_bf16 *q,
                           const ot_bf16 *k, const ot_bf16 *v, const float *sinks, const int32_t *seg_start, int T,
                           int nh, int nkv, int D, int window);
// The most pool memory ot_cuda_attention_bwd takes for these sizes (for memory planning).
size_t ot_cuda_attention_bwd_tmp_bytes(int T, int nh, int nkv, int D);

// ---- router: top-k of logits [T, E] (descending, ties to the lower index), softmax over the k; w [T, k] fp32 ----
void ot_cuda_router_topk_fwd(cudaStream_t stream, int32_t *idx, float *w, const ot_bf16 *logits, int T, int E, int k);
void ot_cuda_router_topk_bwd(cudaStream_t stream, ot_bf16 *dlogits, const float *dw, const float *w,
                             const int32_t *idx, int T, int E, int k);

// ---- clamped SwiGLU on interleaved gate/up: gu [n, 2I] -> act [n, I] -------------------------------------------
void ot_cuda_swiglu_fwd(cudaStream_t stream, ot_bf16 *act, const ot_bf16 *gu, int n, int I, float alpha, float limit);
// dgu [n, 2I] = the gradient through the SwiGLU (overwritten: the CPU twin ot_swiglu_bwd adds onto its output).
void ot_cuda_swiglu_bwd(cudaStream_t stream, ot_bf16 *dgu, const ot_bf16 *dact, const ot_bf16 *gu, int n, int I,
                        float alpha, float limit);

// ---- MoE: (token, slot) pairs sorted by expert, grouped expert products, weighted combine ----------------------
// A plan is built once per layer call from the router's idx [T, k]. "Permuted order" lists the n_pairs = T·k pairs
// grouped by expert (expert 0's pairs first, each group in increasing pair id t·k + slot, so it is deterministic).
#define OT_CUDA_MOE_TILE_ROWS 64 // rows per tile of the grouped products
typedef struct {
    int T, k, E, n_pairs;
    int n_tiles;           // upper bound on row tiles over all experts: ceil(n_pairs / 64) + E
    int32_t *counts;       // [E]      pairs per expert
    int32_t *offsets;      // [E + 1]  expert e owns permuted rows offsets[e] .. offsets[e+1]-1
    int32_t *perm;         // [n_pairs] permuted row -> pair id (t·k + slot)
    int32_t *inv;          // [n_pairs] pair id -> permuted row
    int32_t *row_token;    // [n_pairs] permuted row -> token t
    int32_t *tile_expert;  // [n_tiles] expert of each row tile, -1 for unused tiles
    int32_t *tile_row0;    // [n_tiles] first permuted row of each tile
    int32_t *host_offsets; // [E + 1]  pinned host copy of offsets, filled by ot_cuda_moe_plan_build
    cudaEvent_t host_ready; // recorded after that copy (the library path waits for it)
} ot_cuda_moe_plan;
// cudaMalloc, once. The kernels read T, n_pairs and n_tiles from the struct, so a plan allocated for T tokens also
// serves a batch of T' < T tokens: copy it and set T = T', n_pairs = T'·k, n_tiles = ceil(n_pairs / 64) + E.
void ot_cuda_moe_plan_alloc(ot_cuda_moe_plan *p, int T, int k, int E);
// The device bytes ot_cuda_moe_plan_alloc takes for these sizes (for memory planning).
size_t ot_cuda_moe_plan_bytes(int T, int k, int E);
void ot_cuda_moe_plan_free(ot_cuda_moe_plan *p);
// Builds the plan on the device and starts copying the offsets to host_offsets without waiting: the fused MXFP4
// products read the device offsets; the library path sizes its per-expert calls on the host and waits for the copy
// (once per plan) when it first needs it.
void ot_cuda_moe_plan_build(cudaStream_t stream, ot_cuda_moe_plan *p, const int32_t *idx);

// One expert projection for all experts, logical shape [E, rows (out), cols (in)], as stored in the checkpoint.
typedef struct {
    int kind;              // OT_EXPERT_MXFP4 or OT_EXPERT_DENSE (kernels/ops.h)
    int n_experts, rows, cols; // cols must be a multiple of 32
    const uint8_t *blocks; // MXFP4: [E, rows, cols/32, 16] (8-byte aligned)
    const uint8_t *scales; // MXFP4: [E, rows, cols/32]
    const ot_bf16 *dense;  // DENSE: [E, rows, cols] bf16 (16-byte aligned)
    const ot_bf16 *bias;   // [E, rows] bf16, or NULL
} ot_cuda_expert_weight;

// y[p, :] = x_p · W_eᵀ + b_e for every permuted row p of expert e; y [n_pairs, rows]. x_p is x[row_token[p]] when
// `gather` (x [T, cols], the token activations) or x[p] otherwise (x [n_pairs, cols], already permuted).
// From 32 (token, slot) pairs per expert on average: MXFP4 weights through fused tensor-core kernels that read the
// 4-bit weights directly (128-row tiles), dense ones (and MXFP4 shapes those kernels do not take) through cuBLAS,
// each expert's MXFP4 matrix dequantized into a bf16 scratch matrix (one per side stream, never all experts at
// once), the experts spread over a few side streams. Below that (decoding): fused tensor-core kernels that
// dequantize MXFP4 tiles in shared memory, 64 rows at a time. OT_MOE_PATH (kernels/cuda/moe_matmul.cu) or
// ot_cuda_moe_set_path overrides the choice for MXFP4 weights.
//
// `lora` (NULL: none) adds the expansion of an expert LoRA to the output before it is rounded: y[p, n] +=
// scale · Σ_j u[p, j] · B_e[n, j] forward, dx[p, k] += scale · Σ_j u[p, j] · A_e[j, k] backward (u = x_p·A_eᵀ kept
// by ot_cuda_moe_lora_fwd, or dxa from ot_cuda_moe_lora_bwd). The fused MXFP4 kernels add it in their epilogue,
// so the product's output crosses the memory bus once; the other paths add it in a pass of their own.
typedef struct {
    const float *u;       // [n_pairs, r] fp32
    const float *adapter; // forward: B [E, rows, r]; backward: A [E, r, cols] (fp32, expert-major)
    int r;
    float scale;
} ot_cuda_moe_lora_term;
void ot_cuda_moe_matmul_fwd(cudaStream_t stream, ot_bf16 *y, const ot_bf16 *x, int gather,
                            const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p,
                            const ot_cuda_moe_lora_term *lora);
// dx[p, :] (+)= dy[p, :] · W_e: dx [n_pairs, cols], dy [n_pairs, rows]; overwrites unless `accumulate`.
void ot_cuda_moe_matmul_bwd(cudaStream_t stream, ot_bf16 *dx, const ot_bf16 *dy, const ot_cuda_expert_weight *W,
                            const ot_cuda_moe_plan *p, int accumulate, const ot_cuda_moe_lora_term *lora);
// Which implementation the two calls above use for MXFP4 weights, for every later call of the process (tests and
// benchmarks; the default comes from the environment variable OT_MOE_PATH=auto|library|fused):
//   AUTO     the fused MXFP4 kernels from 32 rows per expert on average, the small-call kernels below that;
//   LIBRARY  cuBLAS on dequantized copies from 32 rows per expert, the small-call kernels below that;
//   FUSED    the fused MXFP4 kernels whenever the shapes fit them, whatever the rows per expert.
enum { OT_CUDA_MOE_PATH_AUTO = 0, OT_CUDA_MOE_PATH_LIBRARY = 1, OT_CUDA_MOE_PATH_FUSED = 2 };
void ot_cuda_moe_set_path(int path);
// The fused MXFP4 kernels' reduction step: 64 where the reduction length allows it, else 32; bk = 32 keeps 32
// everywhere, 0 restores the default (the environment variable OT_MOE_FUSED_BK, read once, sets it too).
void ot_cuda_moe_set_fused_bk(int bk);
// Whether the fused MXFP4 kernels' 64-wide steps run their products on wgmma (Hopper's warpgroup tensor-core
// instructions: builds with sm_90a in OT_CUDA_ARCHS, devices of compute capability 9.0) instead of mma.sync.
// mode 1 asks for them, 0 turns them off, -1 restores the default (on, unless the environment variable
// OT_MOE_WGMMA=0); returns whether they will run. ot_cuda_moe_wgmma_available: whether they can.
int ot_cuda_moe_set_fused_wgmma(int mode);
int ot_cuda_moe_wgmma_available(void);
// Full training, dense experts only: dW [E, rows, cols] fp32 += Σ_p dy[p]ᵀ · x_p per expert over its permuted rows,
// db [E, rows] fp32 (may be NULL) += Σ_p dy[p]; x_p as in ot_cuda_moe_matmul_fwd (`gather`). One thread per
// weight, fp32 sums in permuted-row order: deterministic. CPU twin: ot_expert_matmul_bwd_weight per expert group.
void ot_cuda_moe_matmul_bwd_weight(cudaStream_t stream, float *dW, float *db, const ot_bf16 *dy, const ot_bf16 *x,
                                   int gather, const ot_cuda_expert_weight *W, const ot_cuda_moe_plan *p);
// out[t] = Σ_slot w[t, slot] · y[inv[t·k + slot]]  (out [T, H] overwritten; w [T, k] fp32)
void ot_cuda_moe_combine_fwd(cudaStream_t stream, ot_bf16 *out, const ot_bf16 *y, const float *w,
                             const ot_cuda_moe_plan *p, int H);
// dy[p] = w[pair] · dout[token] (overwritten, every permuted row); dw[pair] += dout[token] · y[p] (NULL: skipped,
// and y may be NULL)
void ot_cuda_moe_combine_bwd(cudaStream_t stream, ot_bf16 *dy, float *dw, const ot_bf16 *dout, const ot_bf16 *y,
                             const float *w, const ot_cuda_moe_plan *p, int H);
// The routing weights' gradient without the experts' outputs (CPU twin ot_moe_route_grad, which says why it is
// combine_bwd's dw): dw[q] += dact[p]·act[p] / w[q] + dout[t]·b_e for every permuted row p (pair q, token t,
// expert e = idx[q]), act [n_pairs, I] the down projection's input, dact its input gradient, bias [E, H] or NULL;
// pairs of weight 0 add nothing. fp32 sums.
void ot_cuda_moe_route_grad(cudaStream_t stream, float *dw, const ot_bf16 *dact, const ot_bf16 *act,
                            const ot_bf16 *dout, const ot_bf16 *bias, const float *w, const int32_t *idx,
                            const ot_cuda_moe_plan *p, int I, int H);
// dx[t] += Σ_slot dx_perm[inv[t·k + slot]]  (the input gradient of the gathered rows, back in token order)
void ot_cuda_moe_unpermute_add(cudaStream_t stream, ot_bf16 *dx, const ot_bf16 *dx_perm, const ot_cuda_moe_plan *p,
                               int H);
// Expert LoRA on the permuted rows: y[p] += scale · (x_p · A_eᵀ) · B_eᵀ with A [E, r, in] and B [E, out, r] fp32
// (expert-major; PEFT's ParamWrapper stores B expert-minor, the loader reorders); xa [n_pairs, r] fp32 saved.
// x_p as in ot_cuda_moe_matmul_fwd (`gather`). y NULL: xa only (a recomputation that needs no output, or a
// product that adds the expansion itself: ot_cuda_moe_lora_term).
void ot_cuda_moe_lora_fwd(cudaStream_t stream, ot_bf16 *y, float *xa, const ot_bf16 *x, int gather, const float *A,
                          const float *B, const ot_cuda_moe_plan *p, int in, int r, int out, float scale);
// dx_perm[p] += dxa_p · A_e (dx_perm [n_pairs, in], permuted order), dA += dxaᵀ·x, dB += scale · dyᵀ·xa,
// with dxa = scale · dy · B_e, stored in dxa [n_pairs, r] fp32 when given (for a product that adds dxa·A_e itself,
// with dx_perm NULL). Each output may be NULL.
void ot_cuda_moe_lora_bwd(cudaStream_t stream, ot_bf16 *dx_perm, float *dxa, float *dA, float *dB, const ot_bf16 *dy,
                          const ot_bf16 *x, int gather, const float *xa, const float *A, const float *B,
                          const ot_cuda_moe_plan *p, int in, int r, int out, float scale);

// ---- cross-entropy at n selected positions through the output head, chunked over the vocabulary ---------------
// As ot_lmhead_xent (h [T, H], Wlm [V, H] bf16): *loss_sum (DEVICE double) += Σ_i loss_i; dh [T, H] bf16 and dWlm
// [V, H] fp32 (either may be NULL) accumulate grad_scale · (softmax − onehot) products. Logits exist only for one
// vocabulary chunk at a time ([n, chunk] fp32, chunk ≈ 2^24 / n columns), never [n, V]. With dh and no dWlm the
// logits are computed once (one pass, the input gradient gathered against a running maximum), else twice.
void ot_cuda_lmhead_xent(cudaStream_t stream, ot_cuda_blas *blas, double *loss_sum, ot_bf16 *dh, float *dWlm,
                         const ot_bf16 *h, const ot_bf16 *Wlm, const int32_t *pos, const int32_t *label, int n, int T,
                         int H, int V, float grad_scale);
// Tests: the fp32 logits per chunk (chunk = elems / n columns, at least 256); elems <= 0 restores the default 2^24.
void ot_cuda_xent_set_chunk_elems(long elems);
// The most pool memory ot_cuda_lmhead_xent takes for n targets (for memory planning).
size_t ot_cuda_lmhead_xent_tmp_bytes(int n, int H, int V);

// ---- batched decoding over a KV cache (decode_attention.cu) ------------------------------------------------------
// The cache of one layer is [S slots, nkv, L, D] bf16 (k_cache and v_cache alike): slot s holds one sequence, its
// position j of kv head g at row (s·nkv + g)·L + j. A step is T tokens, token t in slot slot[t] at position pos[t]
// (device int32 arrays); a (slot, pos) outside S × L is bad data (flagged, skipped; attention writes NaN).
// Store the rotated keys and values of the step's tokens, k, v [T, nkv, D], at their (slot, pos).
void ot_cuda_kv_cache_store(cudaStream_t stream, ot_bf16 *k_cache, ot_bf16 *v_cache, const ot_bf16 *k,
                            const ot_bf16 *v, const int32_t *slot, const int32_t *pos, int T, int nkv, int D, int S,
                            int L);
// out [T, nh, D]: each token's queries q [T, nh, D] over its slot's keys j <= pos[t] (and pos[t] − j < window when
// window > 0), with sinks [nh] fp32 and GQA — per token what ot_attention_cache_fwd computes for one sequence.
// Store the step's keys first (a prompt's tokens see each other through the cache). D must be 64, nh / nkv <= 16.
void ot_cuda_attention_cache_fwd(cudaStream_t stream, ot_bf16 *out, const ot_bf16 *q, const ot_bf16 *k_cache,
                                 const ot_bf16 *v_cache, const float *sinks, const int32_t *slot, const int32_t *pos,
                                 int T, int nh, int nkv, int D, int S, int L, int window);
// idx[i] = argmax of row i of x [n, V] fp32, the lowest index on a tie (the CPU sampler's greedy pick).
void ot_cuda_argmax_rows(cudaStream_t stream, int32_t *idx, const float *x, int n, int V);
// The same sweep cut at caller-chosen blocks of vocabulary rows, for a head that is never whole in memory (sharded
// base weights: the rows arrive a gathered chunk at a time). Within a block the rows are walked in the chunks of
// ot_cuda_lmhead_xent; it is itself begin, loss_rows(0..V), loss_end, grad_rows(0..V), end. Blocks must be given
// in increasing v0 and cover 0..V−1, twice: once to loss_rows, then (for gradients) once to grad_rows.
// ot_cuda_xent_begin with n = 0 gives a sweep whose calls do nothing. dWrows (NULL: none) is the fp32 gradient of
// the block's rows. Block edges are extra cuts in the online logsumexp and the dh accumulation, so a cut head
// agrees with the whole one to fp32 rounding.
typedef struct ot_cuda_xent ot_cuda_xent;
ot_cuda_xent *ot_cuda_xent_begin(cudaStream_t stream, ot_cuda_blas *blas, const ot_bf16 *h, const int32_t *pos,
                                 const int32_t *label, int n, int T, int H, int V, float grad_scale, int want_dh);
void ot_cuda_xent_loss_rows(ot_cuda_xent *x, const ot_bf16 *rows, int v0, int nv);
void ot_cuda_xent_loss_end(ot_cuda_xent *x, double *loss_sum);
void ot_cuda_xent_grad_rows(ot_cuda_xent *x, const ot_bf16 *rows, float *dWrows, int v0, int nv);
// dh (NULL: none) += the gradient into the hidden states; frees the sweep.
void ot_cuda_xent_end(ot_cuda_xent *x, ot_bf16 *dh);

// ---- optimizer ------------------------------------------------------------------------------------------------
// torch.optim.AdamW, one step on n fp32 values, the same roundings as the CPU ot_adamw_step; step counts from 1.
void ot_cuda_adamw_step(cudaStream_t stream, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float weight_decay, long step);
// *out (DEVICE double) += Σ g², summed in double in a fixed order (the same bits on every run).
void ot_cuda_sum_squares(cudaStream_t stream, double *out, const float *g, size_t n);
// ot_sum_slots_ordered on the device: out[i] = the left-to-right double sum of slots[k·n + i], rounded once (the
// rule of ot_comm_all_reduce_ordered). out may be the first slot (each element reads all its slots first).
void ot_cuda_sum_slots_ordered(cudaStream_t stream, float *out, const float *slots, int n_slots, size_t n);

// ---- full training: bf16 working weights from the fp32 masters ------------------------------------------------
// One tensor: master[src .. src + n) -> dst, rounded to bf16 (round to nearest even) or copied as fp32 (f32 = 1).
typedef struct {
    size_t src, n;
    void *dst;
    int f32;
} ot_cuda_refresh_seg;
// Every segment of segs [n_segs] (a DEVICE array) in one launch; max_n is the largest segment's n.
void ot_cuda_weight_refresh(cudaStream_t stream, const ot_cuda_refresh_seg *segs, int n_segs, size_t max_n,
                            const float *master);

#ifdef __cplusplus
}
#endif
#endif
