// Ollama Modelfiles for the exported model: one per translation direction (formats/directions.h), each with a
// TEMPLATE that renders exactly the harmony prompt osstune trains on (formats/harmony.h).
#ifndef OT_FORMATS_MODELFILE_H
#define OT_FORMATS_MODELFILE_H

#include "common/ot_common.h"
#include "formats/directions.h"

// The Modelfile of direction d, for a model.gguf beside it (caller frees).
char *ot_modelfile_text(ot_direction d);
// Whether the harmony system text and every direction's instruction can be spliced into a Go or Jinja template
// verbatim (none holds a template delimiter or a closing """): 0, or -1 with a message naming the text.
int ot_modelfile_check_texts(ot_err *err);

#endif
