// The checkpoint payloads of the two run modes, on the run-directory protocol of formats/run_dir.h (step
// directories written into a temporary directory and renamed, COMPLETE, `latest`, pruning, state.pb):
//
//   LoRA    adapter_model.safetensors, adapter_config.json   the adapter, PEFT layout (ot_lora_save_peft)
//           optimizer.safetensors                            AdamW exp_avg / exp_avg_sq, flat, LoRA buffer order
//   --full  model/                                           a model directory as osstune-init-model writes it
//                                                            (config.json, model.safetensors in bf16, tokenizer):
//                                                            usable as --model for LoRA, translate or logits
//           master.safetensors                               the float32 master weights the run continues from
//           optimizer.safetensors                            AdamW moments, flat, in master-weight order
//
// docs/run-checkpoints.md describes both. Only rank 0 writes; every rank may load.
#ifndef OT_TRAIN_CHECKPOINT_H
#define OT_TRAIN_CHECKPOINT_H

#include "formats/fingerprint.h"
#include "formats/run_dir.h"
#include "trainer/model/full_params.h"
#include "trainer/model/lora.h"
#include "trainer/train/optimizer.h"

// ---- LoRA -------------------------------------------------------------------------------------------------------
// Write run_dir/ckpt/step-NNNNNN (NNNNNN = st->step) for the adapter lo and the optimizer opt (opt->n must equal
// lo->n_params); see ot_run_ckpt_commit for `latest`, pruning and what a failure leaves.
int ot_ckpt_save(const char *run_dir, const ot_train_state *st, const ot_lora *lo, const ot_optimizer *opt,
                 int keep_last, ot_err *err);
// Resume: the checkpoint directory `from`, or with from == NULL the newest valid checkpoint of run_dir
// (ot_run_ckpt_load_latest: damaged ones are skipped with a warning; with `from` damage is an error).
// lo must already be laid out for the run (ot_lora_init with the run's spec); its params are overwritten with the
// checkpoint's, so pointers into lo stay valid. A checkpoint whose adapter has another layout (targets, r, alpha,
// or another base model) is not damaged but incompatible: an error. opt must be initialised with n =
// lo->n_params; opt->m, opt->v and opt->step are restored, opt->cfg stays as the run configured it (the saved
// settings are in st->optim). cfg: the base model's; model_fingerprint (may be NULL): this run's base model, so that
// an adapter that does not fit because the checkpoint was written for another base is named as such (not blamed on
// the LoRA options). loaded_dir (may be NULL) names the directory loaded.
// Returns 0 = loaded, 1 = nothing to resume (only without `from`), -1 = error.
int ot_ckpt_load(const char *run_dir, const char *from, ot_train_state *st, ot_lora *lo, const ot_model_config *cfg,
                 const char *model_fingerprint, ot_optimizer *opt, char *loaded_dir, size_t loaded_dir_len,
                 ot_err *err);

// ---- --full -----------------------------------------------------------------------------------------------------
// m's float32 arena holds the masters; src_model_dir is where the tokenizer files are copied from (the --model).
int ot_full_ckpt_save(const char *run_dir, const ot_train_state *st, const ot_model *m, const ot_full_params *fp,
                      const ot_optimizer *opt, const char *src_model_dir, int keep_last, ot_err *err);
// The newest loadable checkpoint of run_dir into m's arena (the masters), opt (moments, step) and st; as
// ot_ckpt_load without `from`.
int ot_full_ckpt_load(const char *run_dir, ot_train_state *st, ot_model *m, const ot_full_params *fp,
                      ot_optimizer *opt, char *loaded_dir, size_t loaded_dir_len, ot_err *err);

// ---- resuming ---------------------------------------------------------------------------------------------------
// Refuse to continue `saved` with a run started as `now` when the model, data or config fingerprints differ; the
// message says which differ (for the config: which top-level options of the resolved JSON). With force, the
// differences are printed as warnings and 0 is returned. A fingerprint missing on either side cannot be compared
// and is reported as a warning. A different world size is allowed.
int ot_ckpt_check_compatible(const ot_train_state *saved, const ot_train_state *now, int force, ot_err *err);

#endif
