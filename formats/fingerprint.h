// Fingerprints (SHA-256, 64 lowercase hex digits) of what a training run was started with: its resolved options,
// its base model and its data. Every checkpoint records them (formats/run_dir.h); a resume compares them.
#ifndef OT_FORMATS_FINGERPRINT_H
#define OT_FORMATS_FINGERPRINT_H

#include "common/ot_common.h"
#include "formats/run_dir.h"

// A text, e.g. the canonical JSON of the options that determine the computation. (The data file: ot_sha256_file
// of formats/sha256.h over the whole file.)
void ot_fingerprint_text(const char *text, char hex[OT_FINGERPRINT_LEN]);
// A base model directory, cheaply: config.json, model.safetensors.index.json (when present), and for every shard
// the index names (or model.safetensors) its name, size, safetensors header and 8 evenly spaced 64 KiB samples of
// its data. Reads well under 1 MB per shard; a changed tensor shape, dtype or name, or re-trained weights, change it.
int ot_fingerprint_model_dir(const char *dir, char hex[OT_FINGERPRINT_LEN], ot_err *err);

#endif
