#!/usr/bin/env bash
# launch/osstune.slurm on a two-node Slurm cluster on one machine: node1 and node2 are the network namespaces of
# tests/launch/netns_cluster.sh (own eth0, address, host name), each with its own slurmd; slurmctld runs on node1 and
# munged on the machine (its socket is a file both nodes see). Jobs ask for 2 nodes x 2 tasks; the CPU backend trains
# a tiny model:
#   match   srun (or mpirun where Slurm has no PMIx plugin): the job completes with the 1-rank adapter and optimizer
#           state, byte for byte; both nodes held 2 ranks; node2's eth0 carried the traffic;
#   mpirun  the same with OSSTUNE_LAUNCHER=mpirun (Open MPI starts its daemon on node2 through srun);
#   kill    SIGKILL of node2's ranks after the first checkpoint: the job ends within 60 s (the survivors' watchdog,
#           OSSTUNE_COMM_TIMEOUT=30) as FAILED, its output naming node2's dead tasks; no rank is left on either node;
#           the same sbatch line again resumes from the newest checkpoint to the 1-rank state.
# usage: run_netns_slurm_test.sh BIN_DIR WORK_DIR [case ...]   (default: match mpirun kill)
# Needs root (network namespaces, slurmd). Installs Debian's slurmd, slurmctld, slurm-client and munge with apt-get
# if missing. Exit status: 0 all passed, 1 something failed, 77 skipped (the reason is printed).
set -uo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0"
  exit 2
fi
BIN=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && WORK=$(cd "$2" && pwd) || exit 2
shift 2
CASES=${*:-match mpirun kill}
skip() { echo "run_netns_slurm_test: SKIP: $*"; exit 77; }
for p in osstune-train osstune-init-model osstune-prep; do
  [ -x "$BIN/$p" ] || { echo "run_netns_slurm_test: $BIN/$p is missing: build it first" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || skip "needs root: network namespaces, and slurmd must run as root to start jobs"
command -v mpirun >/dev/null || skip "mpirun (Open MPI) is not installed"
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/two_nodes_lib.sh"
. "$ROOT/tests/slurm/slurm_lib.sh"
SCRIPT=$ROOT/launch/osstune.slurm
slurm_install "$WORK/apt.log" || skip "$SLURM_ERROR"

slurm_cluster_dir osstune-slurm2 || exit 1
CL=$SLURM_DIR
mkdir -p "$CL/spool/node1" "$CL/spool/node2" "$CL/tmp/node1" "$CL/tmp/node2"
MUNGE_PID=""
JOBS=() # jobs submitted here
# Slurm's commands talk to slurmctld on node1's address: they run in node1's network (and so do slurm_lib.sh's functions).
for cmd in sbatch scontrol scancel squeue sinfo srun; do eval "$cmd() { node_exec node1 $cmd \"\$@\"; }"; done
cleanup() {
  local j
  for j in "${JOBS[@]}"; do scancel "$j" 2>/dev/null; done
  for _ in $(seq 20); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.5
  done
  netns_cluster_down # the daemons and whatever the jobs left: everything on the nodes
  [ -n "$MUNGE_PID" ] && kill "$MUNGE_PID" 2>/dev/null && wait "$MUNGE_PID" 2>/dev/null
  mkdir -p "$WORK/cluster-logs"
  cp "$CL"/*.log "$CL"/*.out "$CL/slurm.conf" "$WORK/cluster-logs/" 2>/dev/null
  rm -rf "$CL"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
netns_cluster_up "$CL/net" || skip "no two-node network here: $NETNS_ERROR"
export SLURM_CONF=$CL/slurm.conf
sed "s|@DIR@|$CL|g" "$HERE/slurm_two_nodes.conf.in" >"$SLURM_CONF"
munge_start || skip "$SLURM_ERROR"
conf=$(printf %q "$SLURM_CONF")
on_node node1 "slurmctld -D -f $conf" >"$CL/slurmctld.out" 2>&1 &
on_node node1 "slurmd -D -f $conf -N node1" >"$CL/slurmd.node1.out" 2>&1 &
on_node node2 "slurmd -D -f $conf -N node2" >"$CL/slurmd.node2.out" 2>&1 &
state=""
for _ in $(seq 120); do
  state=$(sinfo -h -N -o %T 2>/dev/null | sort -u | tr '\n' ' ')
  [ "$state" = "idle " ] && break
  sleep 0.25
done
if [ "$state" != "idle " ]; then
  echo "run_netns_slurm_test: the nodes did not come up (states '${state:-none}'); daemon errors:"
  grep -ih 'error\|fatal' "$CL"/*.out "$CL"/*.log | grep -v 'state file\|Trying backup' | tail -8
  skip "slurmctld/slurmd cannot run on the two nodes: $(grep -ih 'fatal' "$CL"/*.out "$CL"/*.log | tail -2 |
        tr '\n' ' ')"
fi
echo "run_netns_slurm_test: two-node cluster up (node1, node2: 2 CPUs each; $CL)"
SRUN_LAUNCHER=srun
if ! srun --mpi=list 2>&1 | grep -qw pmix; then
  echo "run_netns_slurm_test: this Slurm has no mpi/pmix plugin: srun cannot start Open MPI ranks; using mpirun"
  SRUN_LAUNCHER=mpirun
fi
export OSSTUNE_COMM_TIMEOUT=30 OSSTUNE_TRAIN=$BIN/osstune-train
prepare_reference || exit 1
submit() { # submit NAME LAUNCHER: the job id (the run directory WORK/NAME, the output WORK/NAME.out)
  OSSTUNE_LAUNCHER=$2 sbatch --parsable --nodes=2 --ntasks-per-node=2 --output="$WORK/$1.out" --chdir="$WORK" \
    "$SCRIPT" "${TRAIN_ARGS[@]}" --run-dir "$WORK/$1"
}
started_or_finished() { [ -f "$1" ] || job_finished "$2"; }

for c in $CASES; do
  rm -rf "${WORK:?}/$c" "$WORK/$c.out"
  case $c in
  match | mpirun)
    expect 3
    launcher=$SRUN_LAUNCHER
    [ "$c" = mpirun ] && launcher=mpirun
    before=$(eth0_bytes node2)
    JID=$(submit "$c" "$launcher") || { bad "$c: sbatch failed"; continue; }
    JOBS+=("$JID")
    on1=0 on2=0
    if wait_for 120 started_or_finished "$WORK/$c/metrics.jsonl" "$JID"; then on1=$(count node1); on2=$(count node2); fi
    wait_for 300 job_finished "$JID"
    st=$(job_field "$JID" JobState)
    [ "$st" = COMPLETED ] || tail -15 "$WORK/$c.out"
    check_state "$c: job $JID ($launcher, 2 nodes x 2 ranks) ended $st with" "$([ "$st" = COMPLETED ]; echo $?)" \
      "$WORK/$c"
    check_placement "$c" "$on1" "$on2"
    check_traffic "$c" $(($(eth0_bytes node2) - before))
    ;;
  kill)
    expect 4
    JID=$(submit kill "$SRUN_LAUNCHER") || { bad "kill: sbatch failed"; continue; }
    JOBS+=("$JID")
    if ! wait_for 120 started_or_finished "$WORK/kill/ckpt/latest" "$JID" || [ ! -f "$WORK/kill/ckpt/latest" ]; then
      tail -15 "$WORK/kill.out"
      bad "kill: job $JID wrote no checkpoint (state $(job_field "$JID" JobState))"
      continue
    fi
    kill_node2_ranks
    wait_for 60 job_finished "$JID"
    ms=$(ms_since "$KILLED_NS")
    st=$(job_field "$JID" JobState)
    # srun: "srun: error: node2: tasks 2-3: Killed"; mpirun: "... process rank 2 ... on node node2 exited on signal 9".
    said=$(grep -E "node2: tasks? [0-9]|rank [0-9]+ .*on node node2" "$WORK/kill.out" | head -1)
    if [ -z "$VICTIMS" ]; then
      bad "kill: no osstune-train ran on node2"
    elif [ "$st" = FAILED ] && [ -n "$said" ]; then
      ok "kill: the job ended FAILED (exit code $(job_field "$JID" ExitCode)) $((ms / 1000)) s after node2's" \
         "ranks died, saying: $said"
    else
      tail -15 "$WORK/kill.out"
      bad "kill: job $JID is '$st' $ms ms after the kill (want FAILED within 60 s); message naming node2: '$said'"
      scancel "$JID"
      wait_for 40 job_finished "$JID"
    fi
    check_none_left kill
    last=$(cat "$WORK/kill/ckpt/latest" 2>/dev/null)
    if [ -n "$last" ] && [ -f "$WORK/kill/ckpt/$last/COMPLETE" ]; then
      ok "kill: the newest checkpoint ($last) is complete"
    else
      bad "kill: the newest checkpoint '$last' is not complete"
    fi
    # The same sbatch line again.
    st=1
    if JID=$(submit kill "$SRUN_LAUNCHER"); then
      JOBS+=("$JID")
      wait_for 300 job_finished "$JID"
      [ "$(job_field "$JID" JobState)" = COMPLETED ] && grep -qF "resuming from $WORK/kill/ckpt/$last" \
        "$WORK/kill.out" && st=0
    fi
    [ $st = 0 ] || tail -8 "$WORK/kill.out"
    check_state "kill: the same sbatch line resumed from $last to" $st "$WORK/kill"
    ;;
  *) echo "unknown case $c"; exit 2 ;;
  esac
done
finish
