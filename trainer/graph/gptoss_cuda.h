// The gpt-oss layer graph on the CUDA kernels (kernels/cuda/ops_cuda.h): the GPU twin of trainer/graph/gptoss_cpu.h,
// op for op in the same order, with bf16 activations, fp32 LoRA factors, gradients and AdamW state on the device.
//
// One context owns a CUDA stream, the cuBLAS handles, the device copy of one LoRA adapter (parameters and
// gradients; the training step's AdamW state is the step engine's, trainer/train/step_cuda.h) and the
// activation workspace. Work is queued on the stream; the host waits only where a number must come back
// (ot_cuda_take_loss) or data must cross (parameter / gradient transfers).
//
// Memory (docs/cuda-backend.md, "training path", has the arithmetic): by default every layer keeps what its
// backward needs except what one RMSNorm or SwiGLU pass gives back and the experts' outputs (75 KiB per token per
// layer on the 20b shape). With `recompute` on only each layer's input is kept (5.6 KiB per token per layer on the
// 20b) and backward runs the layer's forward again first; with `recompute` attention the MoE block keeps its
// activations (its products are the expensive ones) and backward runs only the attention block again (49 KiB).
#ifndef OT_TRAINER_GPTOSS_CUDA_H
#define OT_TRAINER_GPTOSS_CUDA_H

// What backward finds of a layer's activations (ot_cuda_run_options.recompute; osstune-train --recompute).
enum {
    OT_RECOMPUTE_OFF = 0,      // all kept
    OT_RECOMPUTE_ON = 1,       // the layer's input only; the whole layer's forward runs again before its backward
    OT_RECOMPUTE_ATTENTION = 2 // the MoE block's kept; the attention block's forward runs again before its backward
};

#ifdef OT_HAVE_CUDA

#include "trainer/graph/batch.h"
#include "trainer/model/lora.h"
#include "trainer/model/model_cuda.h"

typedef struct {
    int recompute;    // OT_RECOMPUTE_OFF, _ON or _ATTENTION
    int profile;      // time the op classes below with CUDA events (a little slower; for benchmarks)
    int forward_only; // no backward: one activation set, the layers in place, no gradient buffers (logits, decoding)
} ot_cuda_run_options;

// Op classes of the per-op time breakdown.
enum {
    OT_CUDA_PROF_ATTENTION,     // flash attention forward and backward
    OT_CUDA_PROF_MOE_MATMUL,    // grouped MXFP4 expert products
    OT_CUDA_PROF_MOE_LORA,      // expert LoRA on the permuted rows
    OT_CUDA_PROF_MOE_ROUTING,   // router top-k, the MoE plan, SwiGLU, combine / un-permute
    OT_CUDA_PROF_DENSE_MATMUL,  // q/k/v/o and router projections (cuBLAS)
    OT_CUDA_PROF_LORA,          // attention LoRA
    OT_CUDA_PROF_LM_HEAD,       // output head + cross-entropy at the loss positions
    OT_CUDA_PROF_NORM_ROPE,     // RMSNorm, RoPE, embedding, residual adds, zeroing, batch upload
    OT_CUDA_PROF_OPTIMIZER,     // gradient norm, clipping, AdamW
    OT_CUDA_PROF_N
};
extern const char *const ot_cuda_prof_names[OT_CUDA_PROF_N];

typedef struct ot_cuda_ctx ot_cuda_ctx;

// lo may be NULL (the base model alone). Its layout (slots, rank, scale) is copied; its parameters are uploaded.
// max_tokens / max_targets size the workspace (a larger batch later grows it, with a device synchronisation).
ot_cuda_ctx *ot_cuda_ctx_new(const ot_cuda_model *m, const ot_lora *lo, const ot_cuda_run_options *opt,
                             int max_tokens, int max_targets);
void ot_cuda_ctx_free(ot_cuda_ctx *c);

// Device bytes the activation workspace takes for T tokens, n targets, LoRA rank r (0: none), under the
// recomputation mode `recompute` (the MoE plan, lm-head and attention temporaries included; the model and LoRA
// state excluded).
size_t ot_cuda_workspace_bytes(const ot_model_config *cfg, int T, int n_targets, int r, int recompute);
// The same bytes by buffer, for memory reports: up to max_parts (name, bytes) pairs, names static strings ("kept
// ..." for what every layer keeps for its backward, summed over the layers); returns how many. They add up to
// ot_cuda_workspace_bytes.
typedef struct {
    const char *name;
    size_t bytes;
} ot_cuda_mem_part;
#define OT_CUDA_MEM_PARTS_MAX 32
int ot_cuda_workspace_parts(const ot_model_config *cfg, int T, int n_targets, int r, int recompute,
                            ot_cuda_mem_part *parts, int max_parts);
// Device bytes of the context's own allocations now (workspace + LoRA state), for memory reports.
size_t ot_cuda_ctx_bytes(const ot_cuda_ctx *c);
// The recomputation that batches of max_tokens need in the device memory free now (with the LoRA state, `more` bytes
// the caller is still to allocate, and a safety margin): OT_RECOMPUTE_OFF where every layer's activations fit,
// else OT_RECOMPUTE_ATTENTION where the MoE blocks' fit, else OT_RECOMPUTE_ON.
int ot_cuda_need_recompute(const ot_cuda_model *m, const ot_lora *lo, size_t more, int max_tokens, int max_targets);

// ---- LoRA state transfers (synchronous) ------------------------------------------------------------------------
void ot_cuda_lora_set_params(ot_cuda_ctx *c, const float *host);
void ot_cuda_lora_get_params(ot_cuda_ctx *c, float *host);
void ot_cuda_lora_get_grads(ot_cuda_ctx *c, float *host);
void ot_cuda_lora_zero_grads(ot_cuda_ctx *c); // queued
// The device gradient buffer (n_params floats), for summing the gradients across GPUs in place with NCCL:
// synchronize the context's stream (ot_cuda_ctx_stream; ot_cuda_take_loss does) before the collective.
float *ot_cuda_lora_grads_device(ot_cuda_ctx *c);
float *ot_cuda_lora_params_device(ot_cuda_ctx *c); // the device parameters (n_params floats), for the optimizer

// ---- the model ------------------------------------------------------------------------------------------------
// Queues the forward of batch b and, with backward != 0 (and an adapter), the backward that ACCUMULATES the LoRA
// gradients of Σ_i grad_scale · CE_i into the device gradients. Σ CE_i is added to a device accumulator that
// ot_cuda_take_loss reads. Returns -1 with a message only for a batch the workspace cannot describe.
int ot_cuda_forward_backward(ot_cuda_ctx *c, const ot_batch *b, float grad_scale, int backward, ot_err *err);
// Waits for the queued work, returns the loss sum accumulated since the last call (and resets it), and turns bad
// input seen by the kernels (token ids, positions, ...) into an error.
int ot_cuda_take_loss(ot_cuda_ctx *c, double *loss_sum, ot_err *err);
// Decoding (infer/decode_cuda.c), on a forward-only context of a whole model: T tokens of the sequences of a KV
// cache — token t is ids[t] at position pos[t] of slot slot[t] (device arrays) — through every layer; each layer
// stores the tokens' keys and values in the cache first, then attends over it. Returns the final residual [T, H]
// (before the final norm; device memory of the context, valid until its next pass). Queued, not waited for.
typedef struct {
    ot_bf16 *const *k, *const *v; // [n_layers] device pointers: layer l's caches [n_slots, kv heads, max_len, D]
    int n_slots, max_len;
} ot_cuda_kv_cache;
const ot_bf16 *ot_cuda_forward_cached(ot_cuda_ctx *c, const ot_cuda_kv_cache *kv, const int32_t *ids,
                                      const int32_t *slot, const int32_t *pos, int T);
// Logits [b->T, vocab] in fp32 for every position, into host memory (what osstune-logits writes).
int ot_cuda_logits(ot_cuda_ctx *c, const ot_batch *b, float *logits, ot_err *err);

// ---- full training (trainer/train/step_cuda_full.c drives it) ------------------------------------------------------------
// fp32 device gradients of every base weight, shaped as the model's tensors (a NULL pointer skips one). Expert
// gradients are [E, rows, cols] like ot_cuda_expert_weight.dense; with tied embeddings lm_head == embed.
typedef struct {
    float *ln1_w, *ln2_w, *q_w, *k_w, *v_w, *o_w, *q_b, *k_b, *v_b, *o_b, *sinks, *router_w, *router_b;
    float *gate_up, *gate_up_b, *down, *down_b;
} ot_cuda_layer_grads;
typedef struct {
    float *embed, *lm_head, *norm_w;
    ot_cuda_layer_grads *layers; // [n_layers], host array of device pointers
} ot_cuda_model_grads;
// With g set (the context keeps the pointer, not a copy), the backward of ot_cuda_forward_backward also
// ACCUMULATES every base weight's gradient into g, except the embedding table's: it leaves d loss / d(token
// embeddings) [T, H] bf16 in the buffer ot_cuda_input_grad returns (valid until the next forward), for the
// caller's deterministic embedding backward (it owns the sorted ids). NULL: back to frozen base weights.
void ot_cuda_set_model_grads(ot_cuda_ctx *c, const ot_cuda_model_grads *g);
const ot_bf16 *ot_cuda_input_grad(const ot_cuda_ctx *c);
cudaStream_t ot_cuda_ctx_stream(const ot_cuda_ctx *c);

// Waits for everything queued on the context's stream.
void ot_cuda_ctx_sync(ot_cuda_ctx *c);

// ---- per-op time breakdown ------------------------------------------------------------------------------------
// With profiling on (options.profile, or switched here), CUDA events mark every change of op class on the
// stream. ot_cuda_prof_collect waits for the stream, adds the milliseconds spent in each class since the last
// call into ms[OT_CUDA_PROF_N] (not cleared here) and starts a new tally.
void ot_cuda_prof_enable(ot_cuda_ctx *c, int on);
// Marks the start of work of class cls queued next on the context's stream by others (e.g. the optimizer).
void ot_cuda_prof_mark(ot_cuda_ctx *c, int cls);
void ot_cuda_prof_collect(ot_cuda_ctx *c, double ms[OT_CUDA_PROF_N]);

#endif // OT_HAVE_CUDA
#endif
