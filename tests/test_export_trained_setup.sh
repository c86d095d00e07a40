#!/bin/sh
# Fixture for the serving and agreement tests: the tiny model of test_export_setup.sh with a LoRA adapter trained for
# a few steps on the CPU (osstune-train on data/sample, q/k/v/o in every layer, experts of layers 1 and 3, so layers
# 0 and 2 keep MXFP4 experts), and what osstune-export writes from it:
#   trained/adapter      the trained adapter (a link to the run's last checkpoint)
#   trained/out/         model.gguf (merged) and the Modelfiles: what a user serves
#   trained/out_f32/     base.gguf + adapter.gguf of the float32 conversion of the tiny model (tiny_f32): every tensor
#                        F32, so llama.cpp computes in float32 as osstune's CPU backend does
# usage: test_export_trained_setup.sh BIN_DIR SCRATCH_DIR   (after test_export_setup.sh made SCRATCH_DIR/tiny*)
set -eu
BIN=$1 S=$2
T=$S/trained
TOK=data/o200k_base.tiktoken
rm -rf "$T"
mkdir -p "$T"
"$BIN/osstune-prep" --tokenizer $TOK --in data/sample/train.tsv --out "$T/train.h5" --directions both --quiet
# A high learning rate so that eight steps move the model visibly away from the random base.
"$BIN/osstune-train" --backend cpu --model "$S/tiny" --data "$T/train.h5" --run-dir "$T/run" --steps 8 \
  --rows-per-step 2 --seq-len 256 --lr 1e-2 --lora-r 4 --lora-alpha 8 --lora-targets all --lora-expert-layers 1,3 \
  --seed 3 --log-every 4
ln -s "run/ckpt/$(cat "$T/run/ckpt/latest")" "$T/adapter"
"$BIN/osstune-export" --model "$S/tiny" --adapter "$T/adapter" --out "$T/out" --tokenizer $TOK \
  --only model,modelfile --name tiny
"$BIN/osstune-export" --model "$S/tiny_f32" --adapter "$T/adapter" --out "$T/out_f32" --tokenizer $TOK \
  --only adapter,base --name tiny
