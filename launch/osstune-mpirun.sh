#!/usr/bin/env bash
# Start osstune-train under Open MPI, one rank per GPU (or per CPU core for --backend cpu), on one node or on the
# nodes of a hostfile, with the environment every rank needs.
#
#   launch/osstune-mpirun.sh -np 4 -- --model M --data D.h5 --run-dir R --steps 1000
#   launch/osstune-mpirun.sh -np 16 --hostfile hosts.txt -- --model M ...      (hosts.txt: "node1 slots=8" lines)
#
# Stopping: SIGTERM, SIGUSR1 or Ctrl-C (SIGINT) to this script stops the run cleanly: the ranks finish the current
# step, write a checkpoint and exit 75; the same command again resumes. A second Ctrl-C kills the ranks within
# about a second (the last complete checkpoint is kept). Exit status: osstune-train's (0 finished, 75 stopped by a
# signal after checkpointing: run again to resume, 1 failed, 2 bad usage); 71/72/73 when the communicator ended the
# job (an MPI error, an NCCL/CUDA error, the watchdog: a peer died or hung). docs/launch.md has the details.
set -euo pipefail
NP=1
HOSTFILE=""
MPI_EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    -np|-n) NP=$2; shift 2 ;;
    --hostfile) HOSTFILE=$2; shift 2 ;;
    --mpi-arg) MPI_EXTRA+=("$2"); shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "osstune-mpirun.sh: unknown option $1 (train options go after --)" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
TRAIN=${OSSTUNE_TRAIN:-$HERE/../build/bin/osstune-train}
# NVLink multicast (NVLS) stays off: it can take a shared host's GPUs out of service. Every rank gets it.
export NCCL_NVLS_ENABLE=0
export OSSTUNE_COMM_TIMEOUT=${OSSTUNE_COMM_TIMEOUT:-300}
ARGS=(-np "$NP" -x NCCL_NVLS_ENABLE -x OSSTUNE_COMM_TIMEOUT -x PATH --bind-to none)
[ -n "${LD_LIBRARY_PATH:-}" ] && ARGS+=(-x LD_LIBRARY_PATH)
[ -n "$HOSTFILE" ] && ARGS+=(--hostfile "$HOSTFILE" --map-by ppr:"${OSSTUNE_RANKS_PER_NODE:-8}":node)
[ "$(id -u)" = 0 ] && ARGS+=(--allow-run-as-root)

# Open MPI's mpirun (4.x) passes SIGUSR1 on to every rank, but answers SIGTERM and SIGINT by killing its ranks
# (SIGTERM, then SIGKILL a second later: too soon to finish a step). So mpirun runs in its own session, where a
# Ctrl-C in the terminal does not reach it, and this script turns every stop request into SIGUSR1.
setsid mpirun "${ARGS[@]}" "${MPI_EXTRA[@]}" "$TRAIN" "$@" </dev/null &
child=$!
interrupts=0
stop() {
  if [ "$1" = INT ] && [ $((++interrupts)) -gt 1 ]; then
    echo "osstune-mpirun.sh: second interrupt: killing the ranks now (the last complete checkpoint is kept)" >&2
    kill -s TERM "$child" 2>/dev/null || true
  else
    echo "osstune-mpirun.sh: got SIG$1: the ranks stop after the current step and write a checkpoint" >&2
    kill -s USR1 "$child" 2>/dev/null || true
  fi
}
trap 'stop INT' INT
trap 'stop TERM' TERM
trap 'stop USR1' USR1
# `wait` returns early when a trapped signal arrives: keep waiting until mpirun is really gone.
while :; do
  status=0
  wait "$child" || status=$?
  kill -0 "$child" 2>/dev/null || break
done
exit "$status"
