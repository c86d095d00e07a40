#!/usr/bin/env bash
# Start osstune-train under Open MPI, one rank per GPU (or per CPU core for --backend cpu), on one node or on the
# nodes of a hostfile, with the environment every rank needs.
#
#   launch/osstune-mpirun.sh -np 4 -- --model M --data D.h5 --run-dir R --steps 1000
#   launch/osstune-mpirun.sh -np 16 --hostfile hosts.txt -- --model M ...      (hosts.txt: "node1 slots=8" lines)
#
# Options before --: -np N (ranks, default 1); --hostfile FILE (the machines; OSSTUNE_RANKS_PER_NODE ranks per
# machine, default 8); --net NET (the network interface, e.g. eth0, or the subnet, e.g. 10.1.0.0/16, that Open
# MPI's daemons and the ranks' TCP traffic use); --mpi-arg ARG (one more mpirun argument, repeatable). mpirun
# reaches the other machines with ssh, or with the command in OMPI_MCA_plm_rsh_agent.
#
# Stopping: SIGTERM, SIGUSR1 or Ctrl-C (SIGINT) to this script, or SIGTERM to its mpirun, or SIGTERM to all of them
# at once (systemd, a batch scheduler) stops the run cleanly: the ranks finish the current step, write a checkpoint
# and exit 75, and so does this script; the same command again resumes. A second Ctrl-C kills the ranks within
# about two seconds (the last complete checkpoint is kept). Exit status: osstune-train's (0 finished, 75 stopped by
# a signal after checkpointing: run again to resume, 1 failed, 2 bad usage); 71/72/73 when the communicator ended
# the job (an MPI error, an NCCL/CUDA error, the watchdog: a peer died or hung). docs/launch.md has the details.
set -euo pipefail
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
fail_usage() { echo "osstune-mpirun.sh: $*" >&2; exit 2; }
NP=1
HOSTFILE=""
NET=""
MPI_EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    -np | -n | --hostfile | --net | --mpi-arg) [ $# -ge 2 ] || fail_usage "$1 needs a value" ;;
  esac
  case $1 in
    -np | -n) NP=$2; shift 2 ;;
    --hostfile) HOSTFILE=$2; shift 2 ;;
    --net) NET=$2; shift 2 ;;
    --mpi-arg) MPI_EXTRA+=("$2"); shift 2 ;;
    --) shift; break ;;
    -h | --help) usage; exit 0 ;;
    *) fail_usage "unknown option $1 (train options go after --)" ;;
  esac
done
case $NP in '' | *[!0-9]* | 0) fail_usage "-np wants a positive number of ranks, not '$NP'" ;; esac
[ -z "$HOSTFILE" ] || [ -r "$HOSTFILE" ] || fail_usage "cannot read the hostfile $HOSTFILE"
HERE=$(cd "$(dirname "$0")" && pwd)
TRAIN=${OSSTUNE_TRAIN:-$HERE/../build/bin/osstune-train}
# NVLink multicast (NVLS) stays off: it can take a shared host's GPUs out of service. Every rank gets it.
export NCCL_NVLS_ENABLE=0
export OSSTUNE_COMM_TIMEOUT=${OSSTUNE_COMM_TIMEOUT:-300}
ARGS=(-np "$NP" -x NCCL_NVLS_ENABLE -x OSSTUNE_COMM_TIMEOUT -x PATH --bind-to none)
[ -n "${LD_LIBRARY_PATH:-}" ] && ARGS+=(-x LD_LIBRARY_PATH)
[ -n "$HOSTFILE" ] && ARGS+=(--hostfile "$HOSTFILE" --map-by ppr:"${OSSTUNE_RANKS_PER_NODE:-8}":node)
[ -n "$NET" ] && ARGS+=(--mca btl_tcp_if_include "$NET" --mca oob_tcp_if_include "$NET")
[ "$(id -u)" = 0 ] && ARGS+=(--allow-run-as-root)

# Open MPI's mpirun (4.x) passes SIGUSR1 on to every rank, but answers SIGTERM, SIGINT and SIGHUP by ending the job:
# SIGCONT to the ranks at once, SIGTERM a second later, SIGKILL a second after that (odls_base_sigkill_timeout), and
# exit status 1 whatever the ranks did: too soon to finish a step, and a status that reads "failed". So:
# - mpirun runs in its own session, where a Ctrl-C in the terminal does not reach it;
# - it starts with SIGTERM and SIGINT blocked (env --block-signal), so that a stop sent to every process of the job
#   (systemd, a batch scheduler, `kill` of a process group) cannot make it end the job; Open MPI starts the ranks
#   with no signal blocked, so they still get such a stop directly;
# - this script turns every stop request into SIGUSR1 for mpirun, also a SIGTERM or SIGINT that was sent to mpirun
#   itself (it stays pending there, where this script sees it); SIGHUP is left for the second Ctrl-C.
SHIELD=()
if env --block-signal=TERM true 2>/dev/null; then
  SHIELD=(env --block-signal=TERM --block-signal=INT)
else
  echo "osstune-mpirun.sh: note: this env(1) cannot block signals (coreutils before 8.31): a SIGTERM that reaches" \
       "mpirun itself will kill the ranks instead of stopping them cleanly" >&2
fi
setsid "${SHIELD[@]}" mpirun "${ARGS[@]}" "${MPI_EXTRA[@]}" "$TRAIN" "$@" </dev/null &
child=$!
interrupts=0
stopping=0
stop() { # stop SIGNAL [WHERE]
  if [ "$1" = INT ] && [ $((++interrupts)) -gt 1 ]; then
    echo "osstune-mpirun.sh: second interrupt: killing the ranks now (the last complete checkpoint is kept)" >&2
    kill -s HUP "$child" 2>/dev/null || true
  else
    stopping=1
    echo "osstune-mpirun.sh: got SIG$1${2:-}: the ranks stop after the current step and write a checkpoint" >&2
    kill -s USR1 "$child" 2>/dev/null || true
  fi
}
trap 'stop INT' INT
trap 'stop TERM' TERM
trap 'stop USR1' USR1
# The stop signals mpirun holds blocked and pending (Linux: SigPnd and ShdPnd of /proc/PID/status, one bit per
# signal, bit N-1 for signal N), printed as TERM or INT.
pending_stop() {
  local line mask=0
  while read -r line; do
    case $line in SigPnd:* | ShdPnd:*) mask=$((mask | 0x${line##*[[:space:]]})) ;; esac
  done <"/proc/$child/status" 2>/dev/null || return 1
  if [ $((mask & (1 << 14))) != 0 ]; then echo TERM; elif [ $((mask & (1 << 1))) != 0 ]; then echo INT; fi
}
# Until mpirun is gone: a trapped signal cuts the one-second sleep short (`wait` returns early), then the loop
# looks at what mpirun holds.
while kill -0 "$child" 2>/dev/null; do
  if [ $stopping = 0 ]; then
    sig=$(pending_stop) || sig=""
    [ -n "$sig" ] && stop "$sig" " (sent to mpirun)"
  fi
  sleep 1 &
  wait $! 2>/dev/null || true
done
status=0
wait "$child" || status=$?
exit "$status"
