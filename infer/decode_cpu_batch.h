// The CPU reference decoder (infer/decode_cpu.h) behind the batched interface of infer/generate_batch.h: one
// ot_cpu_decoder per slot, stepped one after another. Slow, and not what osstune-translate --backend cpu uses (it
// decodes one sentence at a time with prefix re-use); it lets the batch scheduler be tested against ot_translate
// without a GPU, and is the exact twin the GPU decoder is compared with.
#ifndef OT_TRAINER_DECODE_CPU_BATCH_H
#define OT_TRAINER_DECODE_CPU_BATCH_H

#include "infer/decode_cpu.h"
#include "infer/generate_batch.h"

// m and lo (NULL: base model only) must outlive the decoder.
int ot_batch_decoder_open_cpu(ot_batch_decoder *dec, const ot_model *m, const ot_lora *lo, int n_slots, int max_len,
                              int max_step_tokens, ot_err *err);

#endif
