// A gpt-oss checkpoint directory in the HF layout (spec §3): config.json, model.safetensors.index.json and the
// shards it names (or a single model.safetensors). Every tensor the config implies must be present with the
// right shape and a dtype we accept; extra tensors are an error too (a different architecture).
#ifndef OT_FORMATS_CHECKPOINT_H
#define OT_FORMATS_CHECKPOINT_H

#include "formats/model_config.h"
#include "formats/safetensors.h"

// One expected tensor of the architecture.
enum { OT_TK_FLOAT = 1, OT_TK_U8 = 2 }; // FLOAT: BF16, F16 or F32 accepted; U8: MXFP4 blocks/scales
typedef struct {
    char name[160];
    int kind;
    int ndim;
    int64_t shape[4];
} ot_expected_tensor;

// The tensor list the config implies, in a stable order (per layer, then globals). experts_mxfp4 picks
// *_blocks/*_scales (U8) or the dequantized bf16 form (gate_up_proj [E, H, 2I], down_proj [E, I, H]).
int ot_gptoss_expected_tensors(const ot_model_config *c, int experts_mxfp4, ot_expected_tensor **out);

typedef struct {
    char *dir;
    ot_model_config config;
    int experts_mxfp4;        // what the files hold (detected)
    int n_files;
    ot_safetensors *files;
    int n_tensors;
    const ot_tensor **by_name; // sorted by name, for bsearch
} ot_checkpoint;

int ot_checkpoint_open(ot_checkpoint *ck, const char *dir, ot_err *err);
void ot_checkpoint_close(ot_checkpoint *ck);
const ot_tensor *ot_checkpoint_find(const ot_checkpoint *ck, const char *name);
// Convenience: tensor `name` as float32 into out (numel floats); converts BF16/F16/F32. -1 if absent/wrong type.
int ot_tensor_to_f32(const ot_tensor *t, float *out, ot_err *err);
// Element i of a float tensor (BF16, F16 or F32; the caller has checked the type) as float32: for code that streams
// a tensor row by row or reads it strided, without a float32 copy of all of it.
float ot_tensor_elem_f32(const ot_tensor *t, size_t i);

#endif
