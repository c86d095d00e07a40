#!/usr/bin/env bash
# launch/osstune-mpirun.sh turns stop requests into a clean stop and exit status 75, although mpirun itself kills
# its ranks on SIGTERM and SIGINT and then exits 1: 2 ranks on the CPU backend, stopped after their first checkpoint
# by
#   term         SIGTERM to the script (what `kill PID` sends),
#   usr1         SIGUSR1 to the script,
#   ctrl-c       SIGINT to the script's process group (what a terminal's Ctrl-C does),
#   mpirun-term  SIGTERM to the script's mpirun only (a user who found mpirun in `ps`),
#   ranks-term   SIGTERM to the osstune-train ranks only (`pkill -TERM -x osstune-train`),
#   all-term     SIGTERM to the script, mpirun and every rank at once (what systemd's stop or a batch scheduler's
#                cancel sends to every process of the job),
#   ctrl-c-2     two SIGINTs (abort now: the ranks are killed, the last complete checkpoint stays good);
# each but ctrl-c-2 must end with status 75 after the ranks checkpointed; then the same command again must finish
# with the adapter of an uninterrupted run, byte for byte.
# usage: run_mpirun_signal_test.sh BIN_DIR WORK_DIR [case ...]
#        (default: term usr1 ctrl-c mpirun-term ranks-term all-term ctrl-c-2)
set -uo pipefail
set -m # every background job gets its own process group, as a terminal's foreground job has
BIN=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && WORK=$(cd "$2" && pwd) || exit 2
shift 2
CASES=${*:-term usr1 ctrl-c mpirun-term ranks-term all-term ctrl-c-2}
. "$(dirname "$0")/../train_test_lib.sh"
export OSSTUNE_TRAIN=$BIN/osstune-train
tiny_model "$WORK/model" || exit 1
prep_pairs "$WORK/pairs.h5" "$ROOT/data/sample/train.tsv" 41 || exit 1
STEPS=10
LAUNCH=("$ROOT/launch/osstune-mpirun.sh" -np 2 -- --model "$WORK/model" --data "$WORK/pairs.h5" --steps "$STEPS"
        --seq-len 160 --rows-per-step 4 --lora-r 4 --lora-alpha 8 --lora-targets all --lr 5e-3 --warmup 2 --seed 11
        --log-every 100 --save-every 2)
adapter() { echo "$1/ckpt/step-$(printf %06d $STEPS)/adapter_model.safetensors"; }
descendants() { # every process below PID
  local c
  for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done
}

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
    usr1) kill -USR1 "$pid" ;;
    mpirun-term) kill -TERM "$(pgrep -P "$pid" -x mpirun)" ;;
    ranks-term)
      # shellcheck disable=SC2046
      kill -TERM $(pgrep -P "$(pgrep -P "$pid" -x mpirun)" -x osstune-train) ;;
    all-term)
      # shellcheck disable=SC2046
      kill -TERM "$pid" $(descendants "$pid") ;;
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
