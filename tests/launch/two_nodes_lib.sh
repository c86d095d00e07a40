# shellcheck shell=bash
# Shared by the two-node launch tests (run_netns_mpirun_test.sh, run_netns_slurm_test.sh): sourced, not run, once
# BIN (the programs) and WORK (a scratch directory) are set. Brings in tests/train_test_lib.sh (ok / bad, the tiny
# model, the pairs) and tests/launch/netns_cluster.sh (the two nodes), and adds:
#   TRAIN_ARGS, STEPS        the run every case makes (CPU backend, 4 rows per step, a checkpoint every 2 steps)
#   prepare_reference        the model, the data and the 1-rank run WORK/ref1 every case is compared with
#   expect N                 N more checks are coming (a case that breaks off then counts as a failure)
#   check_state WHAT RC DIR  RC is 0 and DIR ended with the 1-rank adapter and optimizer state, byte for byte
#   check_placement WHAT N1 N2   N1 ranks were seen on node1 and N2 on node2, 2 each
#   check_traffic WHAT BYTES     node2's eth0 carried more than a megabyte
#   check_none_left WHAT     no osstune-train is left on either node
#   kill_node2_ranks         SIGKILL to node2's osstune-train processes: their pids in VICTIMS, the time in KILLED_NS
#   ms_since NS              milliseconds since the date +%s%N value NS
#   finish                   the summary line and the exit status
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$LIB_DIR/../train_test_lib.sh"
. "$LIB_DIR/netns_cluster.sh"
expected=0
STEPS=8
TRAIN_ARGS=(--backend cpu --model "$WORK/model" --data "$WORK/pairs.h5" --steps "$STEPS" --seq-len 160 --rows-per-step 4
            --lora-r 4 --lora-alpha 8 --lora-targets all --lr 5e-3 --warmup 2 --seed 11 --log-every 100
            --save-every 2)

prepare_reference() {
  tiny_model "$WORK/model" || return 1
  prep_pairs "$WORK/pairs.h5" "$ROOT/data/sample/train.tsv" 41 || return 1
  rm -rf "$WORK/ref1"
  if ! mpirun -np 1 "$BIN/osstune-train" "${TRAIN_ARGS[@]}" --run-dir "$WORK/ref1" >"$WORK/ref1.log" 2>&1; then
    tail -5 "$WORK/ref1.log"
    echo "the 1-rank reference run failed"
    return 1
  fi
}

expect() { expected=$((expected + $1)); }

final_file() { echo "$1/ckpt/step-$(printf %06d $STEPS)/$2"; }

check_state() {
  local what=$1 rc=$2 dir=$3 f
  for f in adapter_model.safetensors optimizer.safetensors; do
    if [ "$rc" != 0 ] || ! cmp -s "$(final_file "$WORK/ref1" $f)" "$(final_file "$dir" $f)"; then
      bad "$what the 1-rank state? No: status $rc, or $f differs from the 1-rank run's"
      return
    fi
  done
  ok "$what the 1-rank adapter and optimizer state, byte for byte"
}

count() { node_pids "$1" osstune-train | wc -l; }

check_placement() {
  if [ "$2" -eq 2 ] && [ "$3" -eq 2 ]; then
    ok "$1: 2 ranks ran on node1 and 2 on node2"
  else
    bad "$1: ranks per node: node1 $2, node2 $3 (want 2 and 2)"
  fi
}

# Sharded base weights: every step gathers each layer from all 4 ranks, so node2 sends and receives megabytes.
check_traffic() {
  if [ "$2" -gt 1000000 ]; then
    ok "$1: node2's eth0 carried $2 bytes of the job's traffic"
  else
    bad "$1: node2's eth0 carried only $2 bytes: the ranks did not talk over the network"
  fi
}

check_none_left() {
  local left1 left2
  left1=$(count node1) left2=$(count node2)
  if [ "$left1" -eq 0 ] && [ "$left2" -eq 0 ]; then
    ok "$1: no rank left on either node"
  else
    bad "$1: ranks left running: node1 $left1, node2 $left2"
  fi
}

kill_node2_ranks() {
  VICTIMS=$(node_pids node2 osstune-train | tr '\n' ' ')
  KILLED_NS=$(date +%s%N)
  # shellcheck disable=SC2086
  [ -n "$VICTIMS" ] && kill -KILL $VICTIMS
  echo "SIGKILL to node2's ranks (pids $VICTIMS)"
}

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

finish() {
  echo "$(basename "$0" .sh): $passes passed, $fails failed"
  [ $fails -eq 0 ] && [ $passes -ge $expected ]
}
