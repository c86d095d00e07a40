#!/bin/sh
# Fixture for the export tests: the tiny gpt-oss (real vocabulary, MXFP4 experts) from osstune-init-model, a PEFT
# adapter with non-zero factors on q/k/v/o in every layer and on the experts of layers 1 and 3 (so layers 0 and 2
# keep pure MXFP4 experts), and what osstune-export writes from them:
#   out/        every output (adapter.gguf, model.gguf with bf16 LoRA experts, base.gguf, Modelfiles, peft/)
#   out_q8/     model.gguf with the LoRA experts as Q8_0
#   out_f32/    base.gguf + adapter.gguf of the same model converted to float32 with dense experts: llama.cpp then
#               computes in float32 throughout, so its logits can be compared tightly; and model.gguf, the merge
#               into dense experts
# usage: test_export_setup.sh BIN_DIR PYTHON SCRATCH_DIR
set -eu
BIN=$1 PY=$2 S=$3
rm -rf "$S/tiny" "$S/tiny_f32" "$S/adapter" "$S/out" "$S/out_q8" "$S/out_f32"
mkdir -p "$S"
"$BIN/osstune-init-model" --preset tiny --seed 7 --out "$S/tiny" >/dev/null
"$PY" tests/test_export_make_adapter.py "$S/tiny" "$S/adapter" --expert-layers 1,3
TOK=data/o200k_base.tiktoken
"$BIN/osstune-export" --model "$S/tiny" --adapter "$S/adapter" --out "$S/out" --tokenizer $TOK \
  --only adapter,model,base,modelfile,peft --name tiny
"$BIN/osstune-export" --model "$S/tiny" --adapter "$S/adapter" --out "$S/out_q8" --tokenizer $TOK \
  --only model --expert-lora-type q8_0 --name tiny
"$PY" tests/test_export_make_f32.py "$S/tiny" "$S/tiny_f32"
"$BIN/osstune-export" --model "$S/tiny_f32" --adapter "$S/adapter" --out "$S/out_f32" --tokenizer $TOK \
  --only adapter,base,model --name tiny
