#!/usr/bin/env bash
# Start osstune-train under Open MPI, one rank per GPU (or per CPU core for --backend cpu), on one node or on the
# nodes of a hostfile, with the environment every rank needs.
#
#   launch/osstune-mpirun.sh -np 4 -- --model M --data D.h5 --run-dir R --steps 1000
#   launch/osstune-mpirun.sh -np 16 --hostfile hosts.txt -- --model M ...      (hosts.txt: "node1 slots=8" lines)
#
# Exit status: osstune-train's (0 finished, 75 stopped by a signal after checkpointing: run again to resume,
# 1 failed); 73 when the communicator's watchdog ended a job whose peer died or hung.
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
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "osstune-mpirun.sh: unknown option $1 (train options go after --)" >&2; exit 2 ;;
  esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
TRAIN=${OSSTUNE_TRAIN:-$HERE/../build/bin/osstune-train}
# NVLink multicast (NVLS) stays off: it can take a shared host's GPUs out of service. Every rank gets it.
export NCCL_NVLS_ENABLE=0
export OSSTUNE_COMM_TIMEOUT=${OSSTUNE_COMM_TIMEOUT:-300}
ARGS=(-np "$NP" -x NCCL_NVLS_ENABLE -x OSSTUNE_COMM_TIMEOUT -x PATH -x LD_LIBRARY_PATH --bind-to none)
[ -n "$HOSTFILE" ] && ARGS+=(--hostfile "$HOSTFILE" --map-by ppr:"${OSSTUNE_RANKS_PER_NODE:-8}":node)
[ "$(id -u)" = 0 ] && ARGS+=(--allow-run-as-root)
# mpirun forwards SIGTERM / SIGUSR1 / SIGINT to the ranks, which checkpoint at the next step boundary.
exec mpirun "${ARGS[@]}" "${MPI_EXTRA[@]}" "$TRAIN" "$@"
