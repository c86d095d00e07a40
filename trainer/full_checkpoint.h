// Checkpoints of full training (osstune-train --full). Same protocol as the LoRA checkpoints (trainer/checkpoint.h,
// docs/run-checkpoints.md): written into a temporary directory, every file fsync'ed, COMPLETE last, renamed into
// place, then `latest` replaced atomically; on load a damaged newest checkpoint is reported and the next older
// one is tried. The contents differ:
//
//   run/ckpt/step-000120/  model/                 a model directory as osstune-init-model writes it (config.json,
//                                                 model.safetensors in bf16, the tokenizer): use it as --model for
//                                                 a LoRA run, osstune-translate or osstune-logits
//                          master.safetensors     the float32 master weights (what the run continues from)
//                          optimizer.safetensors  AdamW exp_avg / exp_avg_sq, flat in master-weight order
//                          state.json             the ot_train_state fields (step, data cursor, metrics, ...)
//                          COMPLETE               size and SHA-256 of every file above
//   run/ckpt/latest        "step-000120"
#ifndef OT_TRAINER_FULL_CHECKPOINT_H
#define OT_TRAINER_FULL_CHECKPOINT_H

#include "trainer/checkpoint.h"
#include "trainer/full_params.h"

// src_model_dir: where the tokenizer files are copied from (the run's --model).
int ot_full_ckpt_save(const char *run_dir, const ot_train_state *st, const ot_model *m, const ot_full_params *fp,
                      const ot_optimizer *opt, const char *src_model_dir, int keep_last, ot_err *err);

// Newest loadable checkpoint of run_dir into m's arena (master weights), opt (moments, step) and st.
// 0 loaded, 1 none (nothing changed), -1 error. loaded_dir may be NULL.
int ot_full_ckpt_load_latest(const char *run_dir, ot_train_state *st, ot_model *m, const ot_full_params *fp,
                             ot_optimizer *opt, char *loaded_dir, size_t loaded_dir_len, ot_err *err);

#endif
