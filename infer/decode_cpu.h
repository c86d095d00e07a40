// Incremental decoding on the CPU reference kernels: the gpt-oss forward of trainer/graph/gptoss_cpu.c, one sequence,
// with the keys and values of every earlier position kept in a cache, so each new token costs one position's work
// (plus its attention over the cache) instead of a forward over the whole prefix.
//
// The ops run in the order and with the kernels of the full forward, and every kernel computes a row without
// looking at the other rows, so the logits of a position are those ot_cpu_logits gives for the same prefix
// (whatever pieces the prefix was appended in).
#ifndef OT_TRAINER_DECODE_CPU_H
#define OT_TRAINER_DECODE_CPU_H

#include "infer/generate.h"
#include "trainer/model/lora.h"
#include "trainer/model/model.h"

typedef struct ot_cpu_decoder ot_cpu_decoder;

typedef enum { OT_LOGITS_NONE = 0, OT_LOGITS_LAST = 1, OT_LOGITS_ALL = 2 } ot_logits_want;

// m and lo (NULL: base model only) must outlive the decoder. The cache starts empty and grows as needed.
ot_cpu_decoder *ot_cpu_decoder_new(const ot_model *m, const ot_lora *lo);
void ot_cpu_decoder_free(ot_cpu_decoder *d);

int ot_cpu_decoder_len(const ot_cpu_decoder *d); // cached positions
// Forget every position from len on (len <= ot_cpu_decoder_len); the next append continues at position len.
void ot_cpu_decoder_truncate(ot_cpu_decoder *d, int len);

// Append n tokens at positions len .. len+n-1 and cache their keys and values. logits receives nothing
// (OT_LOGITS_NONE), the next-token logits of the last token [V] (OT_LOGITS_LAST) or of every appended token
// [n, V] (OT_LOGITS_ALL). -1 with a message if an id is outside the vocabulary or the sequence would pass the
// model's max_position_embeddings; the cache is then unchanged.
int ot_cpu_decoder_append(ot_cpu_decoder *d, const int32_t *ids, int n, float *logits, ot_logits_want want,
                          ot_err *err);

// The same decoder behind the backend-neutral interface of infer/generate.h.
int ot_decoder_open_cpu(ot_decoder *dec, const ot_model *m, const ot_lora *lo, ot_err *err);

#endif
