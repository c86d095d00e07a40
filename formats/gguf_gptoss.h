// The gpt-oss GGUF files for llama.cpp and Ollama (spec §5, §6): the map from a Hugging Face gpt-oss checkpoint
// (and a PEFT adapter) to llama.cpp's gpt-oss tensors and metadata, and the bytes of every tensor.
//
//   model.gguf    the base model with the adapter merged: experts without LoRA re-packed bit-exactly as ggml MXFP4,
//                 attention weights W + scale·B·A in their own float type, experts with LoRA at expert_lora_type
//   base.gguf     the base model alone
//   adapter.gguf  the LoRA factors, for llama.cpp's --lora on base.gguf
//
// Tensors are streamed from the mapped safetensors shards one row at a time: memory stays at the size of the LoRA
// factors plus the tokenizer, whatever the size of the model.
#ifndef OT_FORMATS_GGUF_GPTOSS_H
#define OT_FORMATS_GGUF_GPTOSS_H

#include <stdint.h>

#include "formats/checkpoint.h"
#include "formats/gguf.h"
#include "formats/peft_adapter.h"
#include "formats/tokenizer.h"

typedef enum { OT_GGUF_MODEL, OT_GGUF_BASE, OT_GGUF_ADAPTER } ot_gguf_kind;

typedef struct {
    const ot_checkpoint *ck;       // the base model
    const ot_lora *lo;             // the adapter (model.gguf merges it, adapter.gguf holds it; base.gguf ignores it)
    const ot_tokenizer *tok;       // the vocabulary (model.gguf, base.gguf)
    const char *name;              // general.name
    ot_ggml_type expert_lora_type; // storage of merged experts that carry LoRA (BF16 or Q8_0)
    // Called as the bytes go out: done of total bytes of the file named label (done == 0 at the start, == total at
    // the end). A non-zero return, with a message in err, stops the write (an interrupt): the file is not written.
    int (*progress)(void *ctx, const char *label, uint64_t done, uint64_t total, ot_err *err);
    void *progress_ctx;
} ot_gguf_gptoss;

// Whether llama.cpp's gpt-oss graph can run the model of config c (dir: for messages): 0, or -1 with a message.
int ot_gguf_gptoss_check(const ot_model_config *c, const char *dir, ot_err *err);
// Writes one file at path (atomically, as every GGUF writer does). -1 with a message naming the tensor on failure.
int ot_gguf_gptoss_write(const ot_gguf_gptoss *x, ot_gguf_kind kind, const char *path, ot_err *err);
// n floats encoded as type t (F32, F16, BF16 or Q8_0; n a multiple of its block) into dst; returns the bytes.
size_t ot_gguf_encode_row(uint8_t *dst, const float *x, int64_t n, ot_ggml_type t);
// The chat template of the model files: exactly the harmony prompt osstune trains on (formats/harmony.h).
char *ot_gguf_gptoss_chat_template(void);

#endif
