#!/usr/bin/env bash
# osstune-train with the base weights sharded over the ranks (CPU backend, mpirun):
#   1. sharded runs with 1, 2, 3 and 4 ranks end with the adapter and optimizer state of one unsharded rank, byte
#      for byte (3 and 4 do not divide the units; validation losses equal too); 3 ranks unsharded as well;
#   2. each sharded rank's base-weight bytes (metrics.jsonl) are at most total / world + two layer buffers
#      + 1 % (alignment and tail padding), and the startup line reports them;
#   3. SIGKILL of one of 3 sharded ranks in the middle of training ends the job non-zero within 60 s.
# usage: test_train_shard.sh BIN_DIR WORK_DIR
set -euo pipefail
BIN=$1
WORK=$2
. "$(dirname "$0")/train_test_lib.sh"

if [ ! -f "$WORK/model/config.json" ]; then
  "$BIN/osstune-init-model" --preset tiny --seed 5 --out "$WORK/model" --set num_hidden_layers=3 >/dev/null
fi
prep_pairs "$WORK/pairs.h5" "$ROOT/data/sample/train.tsv" 31
prep_pairs "$WORK/eval.h5" "$ROOT/data/sample/dev.tsv" 6
STEPS=4
# 5 rows per step: 2, 3 and 4 ranks hold different numbers of rows (the idle passes are exercised)
ARGS=(--backend cpu --model "$WORK/model" --data "$WORK/pairs.h5" --steps $STEPS --seq-len 128 --rows-per-step 5
      --lora-r 4 --lora-alpha 8 --lora-targets all --lr 5e-3 --seed 3 --log-every 100 --eval-data "$WORK/eval.h5")
train() { # train NP RUN_DIR [extra args]
  local np=$1 dir=$2
  shift 2
  rm -rf "$dir"
  mpirun -np "$np" "$BIN/osstune-train" "${ARGS[@]}" --run-dir "$dir" "$@"
}
final() { echo "$1/ckpt/step-$(printf %06d $STEPS)"; }
same_state() {
  cmp -s "$(final "$1")/adapter_model.safetensors" "$(final "$2")/adapter_model.safetensors" &&
    cmp -s "$(final "$1")/optimizer.safetensors" "$(final "$2")/optimizer.safetensors"
}
evals() { grep -o '"eval_loss": [0-9.]*' "$1/metrics.jsonl"; }

train 1 "$WORK/ref" --shard-base off 2>"$WORK/ref.log" || { cat "$WORK/ref.log"; echo "FAIL reference run"; exit 1; }

# ---- 1. byte-identical to one unsharded rank ---------------------------------------------------------------------
for run in "1 on" "2 auto" "3 on" "4 on" "3 off"; do
  set -- $run
  np=$1 mode=$2 d="$WORK/np$1-$2"
  if train "$np" "$d" --shard-base "$mode" 2>"$d.log" && same_state "$WORK/ref" "$d" &&
     [ "$(evals "$WORK/ref")" = "$(evals "$d")" ]; then
    ok "$np rank(s), --shard-base $mode: adapter, optimizer state and validation loss = 1 unsharded rank, byte for byte"
  else
    tail -5 "$d.log"
    bad "$np rank(s), --shard-base $mode differ from 1 unsharded rank"
  fi
done

# ---- 2. per-rank base-weight memory -----------------------------------------------------------------------------
for np in 2 3 4; do
  d="$WORK/np$np-$( [ $np = 2 ] && echo auto || echo on )"
  line=$(grep -o "base weights .*" "$d.log" || true)
  verdict=$(python3 - "$d/metrics.jsonl" "$np" <<'EOF'
import json, sys
m = [json.loads(l) for l in open(sys.argv[1]) if '"base_weight_bytes"' in l][-1]
w = int(sys.argv[2])
mine, one, layer = m["base_weight_bytes"], m["base_weight_bytes_one_rank"], m["base_layer_buffer_bytes"]
bound = one / w * 1.01 + 2 * layer
print(("ok" if layer > 0 and mine <= bound else "bad") + f" {mine} bytes on a rank, bound {bound:.0f} = {one}/{w} + 1% + 2 x {layer}")
EOF
)
  if [[ $verdict == ok* ]] && [[ $line == *"sharded over $np"* ]]; then ok "$np ranks: ${verdict#ok }; startup line: $line"
  else bad "$np ranks: ${verdict}; startup line: $line"; fi
done

# ---- 3. a killed rank ends the job -----------------------------------------------------------------------------
d="$WORK/kill"
rm -rf "$d"
mpirun -np 3 "$BIN/osstune-train" "${ARGS[@]}" --steps 200 --shard-base on --run-dir "$d" 2>"$d.log" &
pid=$!
for _ in $(seq 600); do [ -s "$d/metrics.jsonl" ] && break; sleep 0.1; done
victim=$(pgrep -f "^$BIN/osstune-train .*--run-dir $d" | sed -n 2p || true)
t0=$(date +%s.%N)
[ -n "$victim" ] && kill -KILL "$victim"
status=0
for _ in $(seq 700); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then
  kill -KILL $pid 2>/dev/null || true
  status=999
fi
wait $pid 2>/dev/null || status=$?
took=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
if [ -n "$victim" ] && [ "$status" != 0 ] && [ "$status" != 999 ]; then
  ok "SIGKILL of one of 3 sharded ranks: the job ended with status $status after ${took}s"
else
  tail -5 "$d.log"
  bad "SIGKILL of one of 3 sharded ranks: victim '${victim}', status $status after ${took}s (want non-zero within 60 s)"
fi

echo "test_train_shard: $passes passed, $fails failed"
[ $fails -eq 0 ]
