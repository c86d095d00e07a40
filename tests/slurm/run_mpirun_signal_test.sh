#!/usr/bin/env bash
# launch/osstune-mpirun.sh turns stop requests into a clean stop, although mpirun itself kills its ranks on SIGTERM
# and SIGINT: 2 ranks on the CPU backend, stopped after their first checkpoint by
#   term      SIGTERM to the script (what `kill PID`, systemd or a scheduler sends),
#   ctrl-c    SIGINT to the script's process group (what a terminal's Ctrl-C does),
#   ctrl-c-2  two SIGINTs (abort now: the ranks are killed, the last complete checkpoint stays good);
# then the same command again must finish with the adapter of an uninterrupted run, byte for byte.
# usage: run_mpirun_signal_test.sh BIN_DIR WORK_DIR [case ...]   (default: term ctrl-c ctrl-c-2)
set -uo pipefail
set -m # every background job gets its own process group, as a terminal's foreground job has
BIN=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && WORK=$(cd "$2" && pwd) || exit 2
shift 2
CASES=${*:-term ctrl-c ctrl-c-2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OSSTUNE_COMM_TIMEOUT=60 OSSTUNE_TRAIN=$BIN/osstune-train
fails=0
passes=0
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

if [ ! -f "$WORK/model/config.json" ]; then
  "$BIN/osstune-init-model" --preset tiny --seed 7 --out "$WORK/model" --set num_hidden_layers=2 >/dev/null || exit 1
fi
if [ ! -f "$WORK/pairs.h5" ]; then
  head -n 41 "$ROOT/data/sample/train.tsv" >"$WORK/pairs.tsv"
  "$BIN/osstune-prep" --tokenizer "$ROOT/data/o200k_base.tiktoken" --in "$WORK/pairs.tsv" --out "$WORK/pairs.h5" \
    >/dev/null || exit 1
fi
STEPS=10
LAUNCH=("$ROOT/launch/osstune-mpirun.sh" -np 2 -- --model "$WORK/model" --data "$WORK/pairs.h5" --steps "$STEPS"
        --seq-len 160 --rows-per-step 4 --lora-r 4 --lora-alpha 8 --lora-targets all --lr 5e-3 --warmup 2 --seed 11
        --log-every 100 --save-every 2)
adapter() { echo "$1/ckpt/step-$(printf %06d $STEPS)/adapter_model.safetensors"; }

rm -rf "$WORK/ref"
if ! "${LAUNCH[@]}" --run-dir "$WORK/ref" >"$WORK/ref.log" 2>&1; then
  tail -5 "$WORK/ref.log"
  echo "FAIL the uninterrupted run"
  exit 1
fi
for c in $CASES; do
  d=$WORK/$c
  rm -rf "$d"
  # The launcher itself is the background job (not a function's subshell), so $! is its pid and process group.
  "${LAUNCH[@]}" --run-dir "$d" >"$d.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do [ -f "$d/ckpt/latest" ] && break; sleep 0.1; done
  case $c in
    term) kill -TERM "$pid" ;;
    ctrl-c) kill -INT -- "-$pid" ;;
    ctrl-c-2) kill -INT -- "-$pid"; sleep 0.2; kill -INT -- "-$pid" ;;
    *) echo "unknown case $c"; exit 2 ;;
  esac
  st=0
  wait "$pid" || st=$?
  stopped_at=$(cat "$d/ckpt/latest" 2>/dev/null)
  if [ "$c" = ctrl-c-2 ]; then
    # Killed: whatever the status, it is not "finished", and the newest checkpoint must be complete.
    if [ $st -ne 0 ] && [ -f "$d/ckpt/$stopped_at/COMPLETE" ]; then
      ok "$c: the launcher ended at once (status $st), $stopped_at complete"
    else
      tail -5 "$d.log"
      bad "$c: status $st, newest checkpoint '$stopped_at'"
    fi
  elif [ $st -eq 75 ] && grep -q "stopped by signal" "$d.log"; then
    ok "$c: the ranks checkpointed ($stopped_at) and the launcher exited 75"
  else
    tail -5 "$d.log"
    bad "$c: the launcher exited $st (want 75 after a checkpoint)"
  fi
  if "${LAUNCH[@]}" --run-dir "$d" >>"$d.log" 2>&1 && cmp -s "$(adapter "$WORK/ref")" "$(adapter "$d")"; then
    ok "$c: the same command again resumed and ended byte-identical to the uninterrupted run"
  else
    tail -5 "$d.log"
    bad "$c: the resumed run failed or differs from the uninterrupted one"
  fi
done
echo "run_mpirun_signal_test: $passes passed, $fails failed"
[ $fails -eq 0 ]
