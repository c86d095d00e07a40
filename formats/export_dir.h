// The directory osstune-export writes (OUT_DIR): which files an export puts there, the README.md that describes
// them, and how they get there. Everything is written into a hidden staging directory inside OUT_DIR and renamed
// into place at the end, so a failed or interrupted export leaves OUT_DIR as it was (docs/export.md).
#ifndef OT_FORMATS_EXPORT_DIR_H
#define OT_FORMATS_EXPORT_DIR_H

#include "formats/fileio.h"
#include "formats/gguf.h"

// The outputs, as bits of a set.
enum { OT_EXPORT_ADAPTER = 1, OT_EXPORT_MODEL = 2, OT_EXPORT_MODELFILE = 4, OT_EXPORT_PEFT = 8, OT_EXPORT_BASE = 16 };
#define OT_EXPORT_DEFAULT (OT_EXPORT_ADAPTER | OT_EXPORT_MODEL | OT_EXPORT_MODELFILE | OT_EXPORT_PEFT)

// "adapter,model,...": the set of outputs (--only). 0, or -1 with a message.
int ot_export_parse_only(const char *list, unsigned *outputs, ot_err *err);
// The outputs an earlier export left in out_dir.
unsigned ot_export_outputs_present(const char *out_dir);
// README.md for a directory holding the outputs `present`, of which this export wrote `written_now`.
char *ot_export_readme_text(const char *name, unsigned present, unsigned written_now, ot_ggml_type expert_lora_type);

// Before any work, every file the export of `outputs` puts into out_dir is checked: it may replace neither one of
// the inputs nor anything but a regular file, and a Modelfile or README.md that differs from what osstune-export
// writes is someone's edit, kept unless force. 0, or -1 with a message.
int ot_export_check_outputs(const char *out_dir, unsigned outputs, int force, const ot_path_role *inputs, int n_inputs,
                            ot_err *err);

// Creates out_dir when missing (*created says so), removes the staging directories of exports that were killed,
// and creates this process's staging directory, whose path it returns (caller frees). NULL with a message.
char *ot_export_stage_begin(const char *out_dir, int *created, ot_err *err);
// Moves the staged files of `outputs` (and README.md) into out_dir and makes the moves durable. *committed is set
// once the first file has moved: an error after that has replaced some of the files.
int ot_export_stage_commit(const char *stage, const char *out_dir, unsigned outputs, int *committed, ot_err *err);
// Prints "PROGRAM: wrote PATH (SIZE)" for each output of the set in out_dir.
void ot_export_print_written(const char *program, const char *out_dir, unsigned outputs);

#endif
