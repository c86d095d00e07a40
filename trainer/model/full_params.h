// Full training (osstune-train --full): every base weight of a bf16 gpt-oss model is a trainable parameter.
// The CPU model (trainer/model/model.h) already holds every weight as float32 in one arena (m->owned), dense experts
// included, so the trainable parameters ARE that arena: the gradient is one buffer of the same length and layout,
// and AdamW's moments are two more. This file names the pieces of the arena (HF tensor names, file shapes,
// which ones get weight decay) and writes / reads them as files.
#ifndef OT_TRAINER_FULL_PARAMS_H
#define OT_TRAINER_FULL_PARAMS_H

#include "trainer/model/model.h"

typedef struct {
    char name[160];     // the HF tensor name
    size_t offset, n;   // where it sits in m->owned (floats) and how many
    int decay;          // 1: AdamW weight decay applies (matrices); 0: embedding, norms, biases, sinks
    int expert;         // 1: dense expert, [E, out, in] in memory, [E, in, out] in the file (transformers' layout)
    int ndim;
    int64_t shape[3];   // the file's shape
} ot_full_param;

typedef struct {
    int n;
    ot_full_param *p;   // in ot_gptoss_expected_tensors order
    size_t total;       // = m->owned_floats
} ot_full_params;

// The table for a loaded model. Refuses MXFP4 experts (they are not trainable: train from a bf16 model,
// osstune-init-model --dense-experts) and checks that the entries tile m->owned exactly.
int ot_full_params_build(ot_full_params *fp, const ot_model *m, ot_err *err);
void ot_full_params_free(ot_full_params *fp);

// A gradient view of m: g is m's structure with every float pointer moved into grads (fp->total floats, laid out
// like m->owned). g->layers is allocated; free it with ot_full_grad_view_free. Nothing else is owned.
void ot_full_grad_view(ot_model *g, const ot_model *m, float *grads);
void ot_full_grad_view_free(ot_model *g);

// Write a model directory osstune-init-model would write: config.json (m->cfg, dense experts) and
// model.safetensors with every tensor in bf16 (round to nearest even), plus the tokenizer and generation files
// found in src_dir (tokenizer.json, tokenizer_config.json, special_tokens_map.json, generation_config.json,
// chat_template.jinja). out_dir must exist. Each file is written atomically.
int ot_full_save_model_dir(const ot_model *m, const ot_full_params *fp, const char *src_dir, const char *out_dir,
                           ot_err *err);

// The float32 master weights: one F32 tensor per entry (flat, in memory layout), named as in the file.
int ot_full_save_master(const ot_model *m, const ot_full_params *fp, const char *path, ot_err *err);
int ot_full_load_master(ot_model *m, const ot_full_params *fp, const char *path, ot_err *err);

#endif
