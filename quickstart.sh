#!/usr/bin/env bash
# The main job on embedded defaults, on a fresh machine, CPU only:
#   install dependencies → build → a tiny gpt-oss model → tokenize the bundled sample pairs →
#   train a LoRA adapter (2 MPI ranks) → export GGUF + Ollama Modelfiles + PEFT →
#   translate a few sentences both ways, with chrF against the references.
# Everything lands under run/quickstart/ (QUICKSTART_DIR overrides). Re-running it resumes / reuses what exists.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
OUT=${QUICKSTART_DIR:-$ROOT/run/quickstart}
STEPS=${QUICKSTART_STEPS:-40}
RANKS=${QUICKSTART_RANKS:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1/7 dependencies"
bash tools/install-deps.sh

say "2/7 build (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" 2>&1 | grep -E "error|warning: |Built target osstune" || true
BIN=$ROOT/build/bin
mkdir -p "$OUT"

say "3/7 a tiny gpt-oss model (real 201,088-token vocabulary, MXFP4 experts)"
if [ ! -f "$OUT/model/config.json" ]; then
  "$BIN/osstune-init-model" --preset tiny --seed 0 --out "$OUT/model"
else
  echo "reusing $OUT/model"
fi

say "4/7 tokenize the sample pairs (both directions, harmony format)"
"$BIN/osstune-prep" --tokenizer data/o200k_base.tiktoken --in data/sample/train.tsv --out "$OUT/train.h5"
"$BIN/osstune-prep" --tokenizer data/o200k_base.tiktoken --in data/sample/dev.tsv --out "$OUT/dev.h5"

say "5/7 train a LoRA adapter on the CPU ($RANKS ranks, $STEPS steps)"
set +e
mpirun --oversubscribe -np "$RANKS" "$BIN/osstune-train" --backend cpu --model "$OUT/model" --data "$OUT/train.h5" \
  --run-dir "$OUT/run" --steps "$STEPS" --seq-len 512 --rows-per-step 4 --lora-r 8 --lora-alpha 16 \
  --lr 2e-3 --warmup 4 --save-every 20 --log-every 5 --eval-data "$OUT/dev.h5" --eval-every 20 --eval-samples 64
status=$?
set -e
if [ $status -ne 0 ]; then
  echo "osstune-train exited with status $status (75 = stopped by a signal; run quickstart.sh again to resume)"
  exit $status
fi
CKPT="$OUT/run/ckpt/$(cat "$OUT/run/ckpt/latest")"

say "6/7 export: GGUF for llama.cpp / Ollama, Modelfiles, PEFT adapter"
"$BIN/osstune-export" --model "$OUT/model" --adapter "$CKPT" --out "$OUT/export" --tokenizer data/o200k_base.tiktoken \
  --name osstune-tiny

say "7/7 translate a few dev sentences both ways, scored against the references"
head -n 6 data/sample/dev.tsv >"$OUT/few.tsv"
for dir in zh2nan nan2zh; do
  echo "-- $dir"
  "$BIN/osstune-translate" --model "$OUT/model" --adapter "$CKPT" --tokenizer data/o200k_base.tiktoken \
    --direction $dir --in "$OUT/few.tsv" --ref "$OUT/few.tsv" --max-new-tokens 24 | tee "$OUT/translate.$dir.txt"
done
echo "(a tiny random model trained for $STEPS steps on the CPU translates nothing yet: this shows the pipeline,"
echo " not the quality; see docs/translate.md for real training)"

say "artefacts"
echo "base model:      $OUT/model"
echo "tokenized data:  $OUT/train.h5, $OUT/dev.h5"
echo "adapter (PEFT):  $CKPT"
echo "metrics:         $OUT/run/metrics.jsonl"
echo "translations:    $OUT/translate.zh2nan.txt, $OUT/translate.nan2zh.txt"
echo "GGUF + Ollama:   $OUT/export (model.gguf, adapter.gguf, Modelfile, Modelfile.nan2zh, peft/, README.md)"
echo
echo "use it with Ollama:"
echo "  cd $OUT/export && ollama create osstune-tiny -f Modelfile && ollama run osstune-tiny '今天天氣很好。'"
echo "with llama.cpp (base + adapter):"
echo "  llama-cli -m $OUT/export/model.gguf -p '...'   or   --only base, then: llama-cli -m base.gguf --lora adapter.gguf"
echo
echo "check it against transformers + peft:"
echo "  $BIN/osstune-logits --model $OUT/model --adapter $CKPT --tokens 200006,17360,200008 --out -"
