#!/usr/bin/env bash
# The bytes a fixed set of CPU-backend runs produce, as sha256 lines: take them before a refactor that must not
# change behaviour and again after it, then diff the two lists.
#   lora-1          LoRA, 1 rank                          final adapter + optimizer state
#   lora-3-sharded  LoRA, 3 ranks, --shard-base on        the same files
#   lora-sigterm    LoRA, 1 rank, SIGTERM after step 3, the same command again
#   lora-3to2       LoRA, 3 ranks stopped after step 3, resumed with 2
#   full-1, full-2  --full, 1 and 2 ranks                 master weights, optimizer state, bf16 model
#   export          osstune-export of lora-1's final checkpoint: every file it writes
#   translate       osstune-translate with lora-1's adapter, both directions: the output lines and the score JSON
# usage: tests/behaviour_hashes.sh BIN_DIR WORK_DIR > hashes.txt
# Only bytes that depend on the computation are hashed (state.pb and metrics.jsonl hold clocks). WORK_DIR must be
# the same path in both runs: some exported files name their own paths.
set -euo pipefail
BIN=$(cd "$1" && pwd)
WORK=$2
. "$(dirname "$0")/train_test_lib.sh"
WORK=$(cd "$WORK" && pwd)

h() { # h LABEL FILE...: "sha256  LABEL/relative-name" per file
  local label=$1 base=$2
  shift 2
  for f in "$@"; do
    printf '%s  %s/%s\n' "$(sha256sum <"$base/$f" | cut -c1-64)" "$label" "$f"
  done
}

tiny_model "$WORK/model"
tiny_full_model "$WORK/model-full"
prep_pairs "$WORK/pairs.h5" "$ROOT/data/sample/train.tsv" 41
prep_pairs "$WORK/eval.h5" "$ROOT/data/sample/dev.tsv" 9
STEPS=6
LORA=(--backend cpu --model "$WORK/model" --data "$WORK/pairs.h5" --steps $STEPS --seq-len 160 --rows-per-step 6
      --lora-r 4 --lora-alpha 8 --lora-targets all --lr 5e-3 --warmup 2 --seed 11 --log-every 100
      --eval-data "$WORK/eval.h5" --eval-every 3 --save-every 2)
FULL=(--backend cpu --full --model "$WORK/model-full" --data "$WORK/pairs.h5" --steps $STEPS --seq-len 128
      --rows-per-step 4 --lr 3e-3 --warmup 1 --seed 3 --log-every 100 --save-every 2
      --eval-data "$WORK/eval.h5" --eval-every 3)
final() { echo "$1/ckpt/step-$(printf %06d $STEPS)"; }
run() { # run NP RUN_DIR ARGS...
  local np=$1 dir=$2
  shift 2
  mpirun -np "$np" "$BIN/osstune-train" "$@" --run-dir "$dir" 2>>"$dir.log"
}
stopped_then_resumed() { # NP_FIRST NP_SECOND RUN_DIR ARGS...
  local np1=$1 np2=$2 dir=$3
  shift 3
  run "$np1" "$dir" "$@" &
  local st=0
  stop_after_step "$dir" 3 $! || st=$?
  echo "# $(basename "$dir"): first run exit $st" >&2
  run "$np2" "$dir" "$@"
}

rm -rf "$WORK"/run-* "$WORK"/export "$WORK"/*.log
mkdir -p "$WORK/logs"
run 1 "$WORK/run-lora-1" "${LORA[@]}"
h lora-1 "$(final "$WORK/run-lora-1")" adapter_model.safetensors adapter_config.json optimizer.safetensors
run 3 "$WORK/run-lora-3-sharded" "${LORA[@]}" --shard-base on
h lora-3-sharded "$(final "$WORK/run-lora-3-sharded")" adapter_model.safetensors optimizer.safetensors
stopped_then_resumed 1 1 "$WORK/run-lora-sigterm" "${LORA[@]}"
h lora-sigterm "$(final "$WORK/run-lora-sigterm")" adapter_model.safetensors optimizer.safetensors
stopped_then_resumed 3 2 "$WORK/run-lora-3to2" "${LORA[@]}"
h lora-3to2 "$(final "$WORK/run-lora-3to2")" adapter_model.safetensors optimizer.safetensors
run 1 "$WORK/run-full-1" "${FULL[@]}"
h full-1 "$(final "$WORK/run-full-1")" master.safetensors optimizer.safetensors model/model.safetensors model/config.json
run 2 "$WORK/run-full-2" "${FULL[@]}"
h full-2 "$(final "$WORK/run-full-2")" master.safetensors optimizer.safetensors model/model.safetensors

"$BIN/osstune-export" --model "$WORK/model" --adapter "$(final "$WORK/run-lora-1")" --out "$WORK/export" \
  --tokenizer "$ROOT/data/o200k_base.tiktoken" --name behaviour >"$WORK/export.log" 2>&1
(cd "$WORK/export" && find . -type f | LC_ALL=C sort | sed 's|^\./||') >"$WORK/export.files"
mapfile -t files <"$WORK/export.files"
h export "$WORK/export" "${files[@]}"

head -n 5 "$ROOT/data/sample/dev.tsv" >"$WORK/dev5.tsv"
for d in zh2nan nan2zh; do
  "$BIN/osstune-translate" --backend cpu --model "$WORK/model" --adapter "$(final "$WORK/run-lora-1")" \
    --tokenizer "$ROOT/data/o200k_base.tiktoken" --direction $d --in "$WORK/dev5.tsv" --ref "$WORK/dev5.tsv" \
    --max-new-tokens 12 >"$WORK/translate-$d.txt" 2>"$WORK/translate-$d.log"
  h translate "$WORK" "translate-$d.txt"
done
