// Batched incremental decoding on the GPU: the gpt-oss forward of trainer/graph/gptoss_cuda.c for a few new tokens of
// many sequences at once, with the keys and values of every earlier position kept in a device KV cache.
//
// The decoder holds `n_slots` sequences ("slots") of at most `max_len` positions each. One step takes a list of
// tokens, each with its slot and position: a prompt is many consecutive tokens of one slot (starting at position
// 0), a decoding step is one token of each live slot, and a step may mix both. Every sequence has its own
// positions (no left padding): RoPE rotates each token by its own position, and attention reads only the token's
// own slot, up to its position. A new sequence in a slot simply starts again at position 0 and overwrites it.
//
// Per layer the cache is [n_slots, kv_heads, max_len, head_dim] bf16 for the keys and the same for the values.
// Sliding-window layers keep the full length and apply the window when reading (a window-sized ring buffer would
// save memory on those layers; not done).
//
// Numerics as the training forward on the GPU: bf16 activations, fp32 arithmetic inside the kernels, fp32 LoRA
// factors, MXFP4 experts as stored. The output head gives fp32 logits; the greedy pick (argmax, lowest id on a
// tie) happens on the device, so a greedy step copies back one id per sequence, not a row of logits.
#ifndef OT_TRAINER_DECODE_CUDA_H
#define OT_TRAINER_DECODE_CUDA_H

#ifdef OT_HAVE_CUDA

#include "infer/generate_batch.h"
#include "trainer/model/lora.h"
#include "trainer/model/model_cuda.h"

typedef struct ot_cuda_decoder ot_cuda_decoder;

// m and lo (NULL: base model only; its parameters are copied to the device) must outlive the decoder.
// max_step_tokens bounds the tokens of one step (the activation workspace). NULL with a message when the cache or
// the workspace does not fit in the free device memory (the message says how much was needed).
ot_cuda_decoder *ot_cuda_decoder_new(const ot_cuda_model *m, const ot_lora *lo, int n_slots, int max_len,
                                     int max_step_tokens, ot_err *err);
void ot_cuda_decoder_free(ot_cuda_decoder *d);

// Device bytes of the KV cache for these sizes (both caches, every layer), for messages and the benchmark.
size_t ot_cuda_decoder_cache_bytes(const ot_model_config *cfg, int n_slots, int max_len);

// One step of T tokens: ids[t] at position pos[t] of slot slot[t] (host arrays). A slot's tokens in a step must
// be consecutive positions following what its slot already holds. rows[0..n_out) lists the tokens (indices into
// the step) whose next-token prediction is wanted: `next` [n_out] receives the greedy pick and `logits`
// [n_out, vocab] the fp32 logits; either may be NULL. Waits for the device. -1 with a message on a token id
// outside the vocabulary, a slot or position outside the cache, or sizes past what the decoder was made for.
int ot_cuda_decoder_step(ot_cuda_decoder *d, const int32_t *ids, const int32_t *slot, const int32_t *pos, int T,
                         const int32_t *rows, int n_out, float *logits, int32_t *next, ot_err *err);

// The same decoder behind the batched interface of infer/generate_batch.h (max_step_tokens > n_slots).
int ot_batch_decoder_open_cuda(ot_batch_decoder *dec, const ot_cuda_model *m, const ot_lora *lo, int n_slots,
                               int max_len, int max_step_tokens, ot_err *err);

#endif // OT_HAVE_CUDA
#endif
