// Which backend runs the model: the one place that decides, for osstune-train, osstune-logits and
// osstune-translate alike.
#ifndef OT_MODEL_BACKEND_H
#define OT_MODEL_BACKEND_H

#include "common/ot_common.h"

typedef enum { OT_BACKEND_CPU = 0, OT_BACKEND_CUDA = 1 } ot_backend;

// "auto": cuda when this build has CUDA and a GPU is visible, else cpu; "cpu"; "cuda" (an error naming the cure
// when the build has no CUDA or no GPU is visible). Anything else is an error naming the choices.
int ot_backend_resolve(const char *name, ot_backend *out, ot_err *err);
const char *ot_backend_name(ot_backend b); // "cpu", "cuda"

#endif
