#!/usr/bin/env bash
# launch/osstune-mpirun.sh across two machines, on one machine: two network namespaces stand for two nodes
# (tests/launch/netns_cluster.sh: node1 and node2, each with its own eth0, address and host name), and
# tests/launch/netns_ssh.sh stands in for ssh (OMPI_MCA_plm_rsh_agent). The launcher runs on node1 with a hostfile
# naming both nodes and --net eth0, so Open MPI's daemon on node2 and the ranks' traffic between the nodes go over
# the veth pair. CPU backend, a tiny model:
#   match  4 ranks, 2 per node, end with the 1-rank adapter and optimizer state, byte for byte; both nodes held 2
#          ranks, and node2's eth0 carried the traffic;
#   kill   SIGKILL of node2's ranks after the first checkpoint: the whole job ends within 60 s with a message that
#          names a dead rank and node2, and a non-zero status; no rank is left on either node; the newest
#          checkpoint is complete, and the same command again resumes it to the 1-rank adapter, byte for byte.
# usage: run_netns_mpirun_test.sh BIN_DIR WORK_DIR [case ...]   (default: match kill)
# Needs root (network namespaces). Exit status: 0 all passed, 1 something failed, 77 skipped (the reason is printed).
set -uo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0"
  exit 2
fi
BIN=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && WORK=$(cd "$2" && pwd) || exit 2
shift 2
CASES=${*:-match kill}
skip() { echo "run_netns_mpirun_test: SKIP: $*"; exit 77; }
for p in osstune-train osstune-init-model osstune-prep; do
  [ -x "$BIN/$p" ] || { echo "run_netns_mpirun_test: $BIN/$p is missing: build it first" >&2; exit 1; }
done
command -v mpirun >/dev/null || skip "mpirun (Open MPI) is not installed"
. "$(dirname "$0")/two_nodes_lib.sh"
trap netns_cluster_down EXIT
trap 'exit 1' INT TERM
rm -rf "$WORK/cluster"
netns_cluster_up "$WORK/cluster" || skip "no two-node network here: $NETNS_ERROR"
echo "run_netns_mpirun_test: node1 (10.77.0.1) and node2 (10.77.0.2) up, joined by a veth pair"
printf 'node1 slots=2\nnode2 slots=2\n' >"$WORK/cluster/hostfile"
prepare_reference || exit 1

# The launcher on node1, as a user logged in there would start it; its output goes to RUN_DIR.log.
launch_on_node1() { # launch_on_node1 RUN_DIR
  local cmd
  cmd=$(printf '%q ' env OMPI_MCA_plm_rsh_agent="$NETNS_SSH" OSSTUNE_RANKS_PER_NODE=2 OSSTUNE_COMM_TIMEOUT=30 \
        OSSTUNE_TRAIN="$BIN/osstune-train" "$ROOT/launch/osstune-mpirun.sh" -np 4 --hostfile "$WORK/cluster/hostfile" \
        --net eth0 -- "${TRAIN_ARGS[@]}" --run-dir "$1")
  on_node node1 "$cmd" >>"$1.log" 2>&1
}
wait_for_file() { # wait_for_file FILE SECONDS PID: true once FILE exists, false if PID ended first or time ran out
  local end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do
    [ -e "$1" ] && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

for c in $CASES; do
  d=$WORK/$c
  rm -rf "$d" "$d.log"
  case $c in
  match)
    expect 3
    before=$(eth0_bytes node2)
    launch_on_node1 "$d" &
    pid=$!
    # Where the ranks run, seen from the nodes themselves, once the first step is done.
    on1=0 on2=0
    if wait_for_file "$d/metrics.jsonl" 120 $pid; then on1=$(count node1); on2=$(count node2); fi
    st=0
    wait $pid || st=$?
    [ $st = 0 ] || tail -15 "$d.log"
    check_state "4 ranks over two nodes end with" $st "$d"
    check_placement "4 ranks over two nodes" "$on1" "$on2"
    check_traffic "4 ranks over two nodes" $(($(eth0_bytes node2) - before))
    ;;
  kill)
    expect 4
    launch_on_node1 "$d" &
    pid=$!
    if ! wait_for_file "$d/ckpt/latest" 120 $pid; then
      tail -15 "$d.log"
      bad "kill: no checkpoint before the kill"
      continue
    fi
    kill_node2_ranks
    while kill -0 $pid 2>/dev/null && [ "$(ms_since "$KILLED_NS")" -lt 60000 ]; do sleep 0.1; done
    ms=$(ms_since "$KILLED_NS")
    if kill -0 $pid 2>/dev/null; then
      tail -15 "$d.log"
      bad "kill: the job still runs 60 s after node2's ranks were killed"
      netns_kill_all
      continue
    fi
    st=0
    wait $pid || st=$?
    # Open MPI's report: "mpirun noticed that process rank 2 with PID N on node node2 exited on signal 9 (Killed)".
    said=$(grep -E "rank [0-9]+ .*on node node2" "$d.log" | head -1)
    if [ -z "$VICTIMS" ]; then
      bad "kill: no osstune-train ran on node2"
    elif [ $st -ne 0 ] && [ -n "$said" ]; then
      ok "kill: the job ended $((ms / 1000)).$(printf %03d $((ms % 1000))) s after node2's ranks died, status $st," \
         "saying: $said"
    else
      tail -15 "$d.log"
      bad "kill: status $st after $ms ms; a message naming the dead rank on node2: '$said'"
    fi
    check_none_left kill
    last=$(cat "$d/ckpt/latest" 2>/dev/null)
    if [ -n "$last" ] && [ -f "$d/ckpt/$last/COMPLETE" ]; then
      ok "kill: the newest checkpoint ($last) is complete"
    else
      bad "kill: the newest checkpoint '$last' is not complete"
    fi
    st=0
    launch_on_node1 "$d" && grep -qF "resuming from $d/ckpt/$last" "$d.log" || st=$?
    [ $st = 0 ] || tail -8 "$d.log"
    check_state "kill: the same command again resumed from $last to" $st "$d"
    ;;
  *) echo "unknown case $c"; exit 2 ;;
  esac
done
finish
