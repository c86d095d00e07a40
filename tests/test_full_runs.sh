#!/usr/bin/env bash
# osstune-train --full end to end on the CPU backend (a 2-layer, hidden-32 bf16 model with the real vocabulary).
# What --full shares with LoRA runs (N ranks = 1 rank, SIGTERM / SIGKILL / damage / another world size on resume)
# is tests/test_train_runs.sh --full; here what only full training has:
#   grad     model-level gradients of every tensor against finite differences (test_full_grad), MXFP4 refused
#   learn    12 steps on 20 pairs: the loss of the last 3 steps is below the first step's by a clear margin
#   lora     the trained model directory works as --model: a LoRA run on it, and osstune-logits
# usage: test_full_runs.sh BIN_DIR WORK_DIR [case ...]
set -euo pipefail
BIN=$1
WORK=$2
shift 2
CASES=${*:-grad learn lora}
. "$(dirname "$0")/train_test_lib.sh"

SMALL=(--preset tiny --seed 7 --set num_hidden_layers=2 --set hidden_size=32 --set intermediate_size=32)
tiny_full_model "$WORK/model"
prep_pairs "$WORK/pairs.h5" "$ROOT/data/sample/train.tsv" 21
STEPS=8
ARGS=(--backend cpu --full --model "$WORK/model" --data "$WORK/pairs.h5" --steps $STEPS --seq-len 128
      --rows-per-step 4 --lr 3e-3 --warmup 1 --seed 3 --log-every 100)
train() { # train NP RUN_DIR [extra args]
  local np=$1 dir=$2
  shift 2
  mpirun -np "$np" "$BIN/osstune-train" "${ARGS[@]}" --run-dir "$dir" "$@"
}
final() { echo "$1/ckpt/step-$(printf %06d $STEPS)"; }
reference() {
  [ -f "$(final "$WORK/ref1")/COMPLETE" ] && return 0
  rm -rf "$WORK/ref1"
  train 1 "$WORK/ref1" --save-every 2 2>"$WORK/ref1.log" || { tail -5 "$WORK/ref1.log"; bad "1-rank reference run"; exit 1; }
}

for c in $CASES; do
  case $c in
  grad)
    [ -f "$WORK/model-mxfp4/config.json" ] || "$BIN/osstune-init-model" "${SMALL[@]}" --out "$WORK/model-mxfp4" >/dev/null
    if "$BIN/test_full_grad" "$WORK/model" "$WORK/model-mxfp4" "$WORK/pairs.h5" "$WORK"; then
      ok "model-level gradients of every tensor"
    else
      bad "model-level gradients"
    fi
    if ! "$BIN/osstune-train" --backend cpu --full --model "$WORK/model-mxfp4" --data "$WORK/pairs.h5" --steps 1 \
      --run-dir "$WORK/mxfp4-run" 2>"$WORK/mxfp4.log" && grep -q "MXFP4" "$WORK/mxfp4.log"; then
      ok "osstune-train --full refuses MXFP4 experts: $(grep -o 'the experts are MXFP4[^:]*' "$WORK/mxfp4.log")"
    else
      bad "osstune-train --full on an MXFP4 model did not fail with a message"
    fi
    ;;
  learn)
    rm -rf "$WORK/learn"
    train 1 "$WORK/learn" --steps 12 2>"$WORK/learn.log" || { tail -5 "$WORK/learn.log"; bad "learn run"; continue; }
    # first step's loss vs the mean of the last 3 (each step sees other rows: compare averages, not single steps)
    verdict=$(python3 - "$WORK/learn/metrics.jsonl" <<'PY'
import json, sys
L = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
first, last = L[0], sum(L[-3:]) / 3
print(("ok" if last < first - 1.0 else "bad") + f" loss {first:.3f} -> {last:.3f} (mean of the last 3 of {len(L)} steps)")
PY
)
    [ "${verdict%% *}" = ok ] && ok "full training lowers the loss: ${verdict#* }" || bad "loss did not fall: ${verdict#* }"
    ;;
  lora)
    reference
    mdir="$(final "$WORK/ref1")/model"
    rm -rf "$WORK/lora"
    if "$BIN/osstune-train" --backend cpu --model "$mdir" --data "$WORK/pairs.h5" --run-dir "$WORK/lora" --steps 2 \
      --seq-len 128 --rows-per-step 2 --lora-r 2 --lora-targets all --log-every 100 2>"$WORK/lora.log"; then
      ok "a LoRA run on the trained model directory"
    else
      tail -5 "$WORK/lora.log"
      bad "LoRA run on the trained model"
    fi
    if "$BIN/osstune-logits" --help >/dev/null 2>&1; then
      if "$BIN/osstune-logits" --model "$mdir" --adapter "$WORK/lora/ckpt/$(cat "$WORK/lora/ckpt/latest")" \
        --tokens 200006,17360,200008,99742,8946 --out - >"$WORK/logits.log" 2>&1 && grep -q '"loss"' "$WORK/logits.log"; then
        ok "osstune-logits reads the trained model and the adapter"
      else
        tail -5 "$WORK/logits.log"
        bad "osstune-logits on the trained model"
      fi
    fi
    ;;
  *) echo "unknown case $c"; exit 2 ;;
  esac
done
echo "test_full_runs: $passes passed, $fails failed"
[ $passes -gt 0 ] && [ $fails -eq 0 ]
