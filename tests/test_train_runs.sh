#!/usr/bin/env bash
# End-to-end training runs on the CPU backend under mpirun, for LoRA runs and (with --full) full training alike —
# both keep their state in the same run-directory protocol, so both must pass the same cases:
#   ranks    N ranks end with the same trainable state and optimizer state as 1 rank, byte for byte;
#   sigterm  SIGTERM during a run (held at a checkpoint write, so it cannot finish first): exit 75 with a checkpoint
#            below the last step, then the same command again → byte-identical to an uninterrupted run (1, 3 ranks);
#   reshard  a run stopped with 3 ranks and resumed with 2 → byte-identical;
#   sigkill  SIGKILL while a checkpoint is being written → the previous checkpoint is intact and the run resumes;
#   corrupt  a truncated tensor file in the newest checkpoint → a clear warning and fallback to the previous one.
# usage: test_train_runs.sh BIN_DIR WORK_DIR [--full] [case ...]   (cases: ranks sigterm reshard sigkill corrupt;
#        default all)
set -euo pipefail
BIN=$1
WORK=$2
shift 2
MODE=lora
if [ "${1:-}" = --full ]; then MODE=full; shift; fi
CASES=${*:-ranks sigterm reshard sigkill corrupt}
. "$(dirname "$0")/train_test_lib.sh"

STEPS=6
prep_pairs "$WORK/pairs.h5" "$ROOT/data/sample/train.tsv" 41
prep_pairs "$WORK/eval.h5" "$ROOT/data/sample/dev.tsv" 9
if [ $MODE = lora ]; then
  # A small model with the real vocabulary (the data is real o200k tokens) and every LoRA target.
  tiny_model "$WORK/model"
  ARGS=(--backend cpu --model "$WORK/model" --data "$WORK/pairs.h5" --steps $STEPS --seq-len 160 --rows-per-step 6
        --lora-r 4 --lora-alpha 8 --lora-targets all --lr 5e-3 --warmup 2 --seed 11 --log-every 100
        --eval-data "$WORK/eval.h5" --eval-every 3)
  STATE_FILES=(adapter_model.safetensors optimizer.safetensors) # what must be byte-identical
  DAMAGE=adapter_model.safetensors                              # what the corrupt case truncates
  RANKS="2 3 4"
else
  # A bf16 model with dense experts (MXFP4 experts are not trainable), small enough to train every weight.
  tiny_full_model "$WORK/model"
  ARGS=(--backend cpu --full --model "$WORK/model" --data "$WORK/pairs.h5" --steps $STEPS --seq-len 128
        --rows-per-step 6 --lr 3e-3 --warmup 1 --seed 3 --log-every 100 --eval-data "$WORK/eval.h5" --eval-every 3)
  STATE_FILES=(master.safetensors optimizer.safetensors model/model.safetensors)
  DAMAGE=master.safetensors
  RANKS="2 3"
fi

train() { # train NP RUN_DIR [extra args]
  local np=$1 dir=$2
  shift 2
  mpirun -np "$np" "$BIN/osstune-train" "${ARGS[@]}" --run-dir "$dir" "$@"
}
final() { echo "$1/ckpt/step-$(printf %06d $STEPS)"; }
same_state() { # same_state RUN_A RUN_B: the trainable state and the optimizer state byte-identical
  local f
  for f in "${STATE_FILES[@]}"; do cmp -s "$(final "$1")/$f" "$(final "$2")/$f" || return 1; done
}
latest_step() { # the step number `latest` names in RUN_DIR
  local name
  name=$(cat "$1/ckpt/latest" 2>/dev/null) || { echo -1; return; }
  echo $((10#${name#step-}))
}

rm -rf "$WORK/ref1"
train 1 "$WORK/ref1" --save-every 1 2>"$WORK/ref1.log" || { cat "$WORK/ref1.log"; bad "1-rank reference run"; exit 1; }

for c in $CASES; do
  case $c in
  ranks)
    for np in $RANKS; do
      rm -rf "$WORK/np$np"
      if train "$np" "$WORK/np$np" 2>"$WORK/np$np.log" && same_state "$WORK/ref1" "$WORK/np$np"; then
        ok "$np ranks end with the 1-rank adapter and optimizer state, byte for byte"
        evals() { grep -o '"step": [0-9]*, "eval_loss": [0-9.]*' "$1/metrics.jsonl"; }
        if [ -n "$(evals "$WORK/ref1")" ] && [ "$(evals "$WORK/ref1")" = "$(evals "$WORK/np$np")" ]; then
          ok "$np ranks: the same validation losses as 1 rank ($(evals "$WORK/np$np" | tail -1))"
        else
          bad "$np ranks: validation losses differ from 1 rank"
        fi
      else
        tail -5 "$WORK/np$np.log"
        bad "$np ranks differ from 1 rank"
      fi
    done
    ;;
  sigterm)
    for np in 1 3; do
      d="$WORK/term$np"
      rm -rf "$d"
      stop_at=$(( (RANDOM % (STEPS - 2)) + 1 ))
      # Every checkpoint write pauses a second after its step's metrics line (test hook), so the SIGTERM sent
      # after step stop_at's line lands while the run is held there: it stops at the next step, below the last.
      OSSTUNE_TEST_CKPT_PAUSE=1 train "$np" "$d" --save-every 1 2>"$d.log" &
      st=0
      stop_after_step "$d" "$stop_at" $! || st=$?
      stopped=$(latest_step "$d")
      if [ $st -ne 75 ] || [ "$stopped" -lt 1 ] || [ "$stopped" -ge $STEPS ]; then
        tail -5 "$d.log"
        bad "$np ranks: SIGTERM after step $stop_at gave exit status $st and a checkpoint at step $stopped (want 75 and a step from 1 to $((STEPS - 1)))"
        continue
      fi
      if train "$np" "$d" --save-every 2 2>>"$d.log" && same_state "$WORK/ref1" "$d"; then
        ok "$np ranks: SIGTERM after step $stop_at, stopped at step $stopped (exit 75), resume → byte-identical to the uninterrupted run"
      else
        tail -5 "$d.log"
        bad "$np ranks: resumed run differs from the uninterrupted one"
      fi
    done
    ;;
  reshard)
    d="$WORK/reshard"
    rm -rf "$d"
    train 3 "$d" --save-every 3 2>"$d.log" &
    pid=$!
    for _ in $(seq 600); do
      [ -f "$d/ckpt/latest" ] && break
      sleep 0.1
    done
    pkill -TERM -f "^$BIN/osstune-train .*--run-dir $d" || true
    wait $pid || true
    if train 2 "$d" 2>>"$d.log" && same_state "$WORK/ref1" "$d" && grep -q "saved by 3 ranks, now 2" "$d.log"; then
      ok "stopped with 3 ranks, resumed with 2 → byte-identical to the uninterrupted run"
    else
      tail -5 "$d.log"
      bad "3 → 2 ranks resume differs"
    fi
    ;;
  sigkill)
    d="$WORK/kill"
    rm -rf "$d"
    # A: stop (SIGTERM) once the step-2 checkpoint exists
    train 1 "$d" --save-every 2 2>"$d.log" &
    pid=$!
    for _ in $(seq 600); do [ -f "$d/ckpt/latest" ] && break; sleep 0.1; done
    pkill -TERM -f "^$BIN/osstune-train .*--run-dir $d" || true
    wait $pid 2>/dev/null || true
    before=$(cat "$d/ckpt/latest")
    # B: resume; the next checkpoint write pauses half-way (test hook) and is SIGKILLed there
    OSSTUNE_TEST_CKPT_PAUSE=60 train 1 "$d" --save-every 2 2>>"$d.log" &
    pid=$!
    for _ in $(seq 900); do grep -q "OSSTUNE_TEST_CKPT_PAUSE: pausing" "$d.log" && break; sleep 0.1; done
    pkill -KILL -f "^$BIN/osstune-train .*--run-dir $d" || true
    wait $pid 2>/dev/null || true
    after=$(cat "$d/ckpt/latest")
    # C: the same command again resumes from the intact checkpoint and finishes like an uninterrupted run
    if [ "$before" = "$after" ] && train 1 "$d" --save-every 2 2>>"$d.log" && same_state "$WORK/ref1" "$d"; then
      ok "SIGKILL during a checkpoint write: $before intact and latest, resume → byte-identical"
    else
      tail -5 "$d.log"
      bad "SIGKILL during a checkpoint write: latest $before -> $after, or the resumed run differs"
    fi
    ;;
  corrupt)
    d="$WORK/corrupt"
    rm -rf "$d"
    cp -r "$WORK/ref1" "$d"
    newest="$d/ckpt/$(cat "$d/ckpt/latest")"
    truncate -s 100 "$newest/$DAMAGE"
    if "$BIN/osstune-train" "${ARGS[@]}" --run-dir "$d" --steps $((STEPS + 1)) --force-resume 2>"$d.log" &&
      grep -q "$DAMAGE" "$d.log" && grep -q "step-$(printf %06d $((STEPS - 1)))" "$d.log"; then
      ok "truncated $DAMAGE in the newest checkpoint: reported, fell back to step $((STEPS - 1))"
    else
      tail -8 "$d.log"
      bad "corrupt newest checkpoint not handled"
    fi
    ;;
  *) echo "unknown case $c"; exit 2 ;;
  esac
done
echo "test_train_runs ($MODE): $passes passed, $fails failed"
[ $passes -gt 0 ] && [ $fails -eq 0 ]
