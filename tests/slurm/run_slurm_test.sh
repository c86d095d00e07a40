#!/usr/bin/env bash
# A real Slurm test of launch/osstune.slurm: starts a one-node Slurm cluster on this machine (munged, slurmctld,
# slurmd, all private to a temporary directory), trains a tiny model on the CPU backend with 2 ranks, and checks that
# a job stopped in the middle and requeued ends with the same adapter, byte for byte, as an uninterrupted run:
#   requeue  `scontrol requeue` while it runs: Slurm sends SIGTERM, the ranks checkpoint, the job restarts (srun);
#   signal   SIGUSR1 to the batch script (what --signal=B:USR1@N does before the time limit): the script forwards
#            it, the ranks checkpoint and exit 75, the script requeues the job, it resumes and finishes (srun);
#   mpirun   the same with OSSTUNE_LAUNCHER=mpirun inside the allocation;
#   mpirun-requeue  `scontrol requeue` with OSSTUNE_LAUNCHER=mpirun: Slurm's SIGTERM reaches mpirun too, which the
#            script starts with SIGTERM blocked, so the ranks still checkpoint and exit 75 (an unshielded mpirun
#            kills them a second later and exits 1);
#   preempt  a job of a higher partition preempts it (PreemptMode=REQUEUE, GraceTime=30): the ranks get SIGTERM,
#            checkpoint, and the job resumes once the preemptor is done (srun);
#   scancel  `scancel`: the ranks checkpoint, the job ends CANCELLED (the script must not requeue it), and the
#            same sbatch line submitted again resumes and finishes (srun).
# Not run by default:
#   timelimit  a real --time=1 --signal=B:USR1@50 job (2 to 4 minutes).
# usage: run_slurm_test.sh BIN_DIR WORK_DIR [case ...]
#        (default: requeue signal mpirun mpirun-requeue preempt scancel)
# Needs root (the daemons run as root). Installs Debian's slurmd, slurmctld, slurm-client and munge with apt-get if
# they are missing. Exit status: 0 all passed, 1 something failed, 77 Slurm cannot run here (the reason is printed).
set -uo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,21p' "$0"
  exit 2
fi
BIN=$(cd "$1" && pwd) || exit 2
mkdir -p "$2" && WORK=$(cd "$2" && pwd) || exit 2
shift 2
CASES=${*:-requeue signal mpirun mpirun-requeue preempt scancel}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCRIPT=$ROOT/launch/osstune.slurm
skip() { echo "run_slurm_test: SKIP: $*"; exit 77; }
for p in osstune-train osstune-init-model osstune-prep; do
  [ -x "$BIN/$p" ] || { echo "run_slurm_test: $BIN/$p is missing: build it first" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || skip "needs root: slurmd must run as root to start jobs (and apt-get to install Slurm)"
command -v mpirun >/dev/null || skip "mpirun (Open MPI) is not installed"

. "$ROOT/tests/slurm/slurm_lib.sh"
# ---- Slurm and munge, from Debian's packages if missing
slurm_install "$WORK/apt.log" || skip "$SLURM_ERROR"

# ---- the cluster's private directory
slurm_cluster_dir osstune-slurm || exit 1
CL=$SLURM_DIR
export SLURM_CONF=$CL/slurm.conf
PIDS=()     # daemons started here, stopped in this order's reverse
JOBS=()     # jobs submitted here
cleanup() {
  local j p
  for j in "${JOBS[@]}"; do scancel "$j" 2>/dev/null; done
  # Let the jobs' processes end (KillWait) before the daemons go, so no rank outlives the test.
  for _ in $(seq 40); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.5
  done
  for ((p = ${#PIDS[@]} - 1; p >= 0; p--)); do kill "${PIDS[p]}" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  mkdir -p "$WORK/cluster-logs"
  cp "$CL"/*.log "$CL"/*.out "$CL/slurm.conf" "$WORK/cluster-logs/" 2>/dev/null
  rm -rf "$CL"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 50); do
  PORT=$((20000 + RANDOM % 20000))
  port_free $PORT && port_free $((PORT + 1)) && break
done
HOST=$(hostname -s 2>/dev/null || hostname)
# The node is named as the machine: mpirun in the allocation then starts its ranks itself, as on the first node of
# a real job (under another name it would take the node for a remote one and start a daemon there with srun).
NODE=$HOST
CPUS=$(nproc)
[ "$CPUS" -ge 2 ] || skip "needs 2 CPUs for 2 ranks, this machine has $CPUS"
# KillWait: seconds between Slurm's SIGTERM and SIGKILL, time for the ranks to finish a step and checkpoint.
# cred_expire: a requeued job may start again only this many seconds later (Slurm's default, 120, would make the
# test wait two minutes per requeue).
sed -e "s|@HOST@|$HOST|g; s|@CTLD_PORT@|$PORT|g; s|@SLURMD_PORT@|$((PORT + 1))|g; s|@DIR@|$CL|g" \
    -e "s|@KILL_WAIT@|30|g; s|@CRED_EXPIRE@|5|g; s|@NODE@|$NODE|g; s|@CPUS@|$CPUS|g" \
    "$ROOT/tests/slurm/slurm.conf.in" >"$SLURM_CONF"

# ---- start munged, slurmctld, slurmd; wait for an idle node
munge_start
PIDS+=("$MUNGE_PID")
[ -z "$SLURM_ERROR" ] || skip "$SLURM_ERROR"
slurmctld -D -f "$SLURM_CONF" >"$CL/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" -N "$NODE" >"$CL/slurmd.out" 2>&1 &
PIDS+=($!)
state=""
for _ in $(seq 120); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null)
  [ "$state" = idle ] && break
  if ! kill -0 "${PIDS[1]}" 2>/dev/null || ! kill -0 "${PIDS[2]}" 2>/dev/null; then break; fi # a daemon died
  sleep 0.25
done
if [ "$state" != idle ]; then
  echo "run_slurm_test: the node did not come up (state '${state:-none}'); daemon errors:"
  grep -ih 'error\|fatal' "$CL/slurmctld.out" "$CL/slurmd.out" | grep -v 'state file\|Trying backup' | tail -8
  skip "slurmctld/slurmd cannot run here: $(grep -ih 'fatal\|error' "$CL/slurmd.out" "$CL/slurmctld.out" |
        grep -v 'state file\|Trying backup' | tail -2 | tr '\n' ' ')"
fi
echo "run_slurm_test: one-node cluster up ($NODE, $CPUS CPUs, ports $PORT-$((PORT + 1)), $CL)"
# Open MPI started by srun needs Slurm's PMIx plugin; without it the srun cases use mpirun in the allocation.
SRUN_LAUNCHER=srun
if ! srun --mpi=list 2>&1 | grep -qw pmix; then
  echo "run_slurm_test: this Slurm has no mpi/pmix plugin: srun cannot start Open MPI ranks; using mpirun instead"
  SRUN_LAUNCHER=mpirun
fi

# ---- a tiny model with every LoRA target, and its data
. "$ROOT/tests/train_test_lib.sh"
export OSSTUNE_TRAIN=$BIN/osstune-train
tiny_model "$WORK/model" || exit 1
prep_pairs "$WORK/pairs.h5" "$ROOT/data/sample/train.tsv" 41 || exit 1
STEPS=16
train_args() { # train_args STEPS RUN_DIR
  echo --model "$WORK/model" --data "$WORK/pairs.h5" --steps "$1" --seq-len 160 --rows-per-step 4 --lora-r 4 \
    --lora-alpha 8 --lora-targets all --lr 5e-3 --warmup 2 --seed 11 --log-every 100 --save-every 2 --run-dir "$2"
}
adapter() { echo "$1/ckpt/step-$(printf %06d "$2")/adapter_model.safetensors"; }
reference() { # reference STEPS: the uninterrupted run, 2 ranks under mpirun outside Slurm
  local d=$WORK/ref$1
  rm -rf "$d"
  # shellcheck disable=SC2046
  mpirun -np 2 "$BIN/osstune-train" $(train_args "$1" "$d") >"$d.log" 2>&1 || { tail -5 "$d.log"; return 1; }
}
checkpointed_or_finished() { [ -f "$1/ckpt/latest" ] || job_finished "$2"; }
submit() { # submit NAME STEPS LAUNCHER [sbatch options]: prints the job id
  local name=$1 steps=$2 launcher=$3
  shift 3
  rm -rf "${WORK:?}/$name" "$WORK/$name.out"
  # shellcheck disable=SC2046
  OSSTUNE_LAUNCHER=$launcher sbatch --parsable --nodes=1 --ntasks=2 --output="$WORK/$name.out" --chdir="$WORK" "$@" \
    "$SCRIPT" $(train_args "$steps" "$WORK/$name")
}
# check_job NAME STEPS JOBID WHAT: the job finished after one restart or more with the reference's adapter
check_job() {
  local name=$1 steps=$2 jid=$3 what=$4 st restarts
  if ! wait_for 300 job_finished "$jid"; then bad "$what: job $jid did not finish in 5 minutes"; return; fi
  st=$(job_field "$jid" JobState)
  restarts=$(job_field "$jid" Restarts)
  if [ "$st" = COMPLETED ] && [ "${restarts:-0}" -ge 1 ] && grep -q "restart 1 on" "$WORK/$name.out"; then
    ok "$what: job $jid completed after $restarts restart(s)"
  else
    tail -15 "$WORK/$name.out"
    bad "$what: job $jid ended $st with ${restarts:-?} restarts"
    return
  fi
  if cmp -s "$(adapter "$WORK/ref$steps" "$steps")" "$(adapter "$WORK/$name" "$steps")"; then
    ok "$what: the final adapter is byte-identical to the uninterrupted run's"
  else
    bad "$what: the final adapter differs from the uninterrupted run's"
  fi
}
# start_and_stop NAME STEPS LAUNCHER HOW [sbatch options]: submit, wait for the first checkpoint, stop the job with
# HOW (requeue, usr1 or none); sets JID. False (after reporting) when the job could not be started.
start_and_stop() {
  local name=$1 steps=$2 launcher=$3 how=$4
  shift 4
  JID=$(submit "$name" "$steps" "$launcher" "$@") || { bad "$name: sbatch failed"; return 1; }
  JOBS+=("$JID")
  wait_for 120 checkpointed_or_finished "$WORK/$name" "$JID"
  if [ ! -f "$WORK/$name/ckpt/latest" ]; then
    [ -f "$WORK/$name.out" ] && tail -15 "$WORK/$name.out"
    echo "slurmd's errors:"
    grep -ih 'error' "$CL/slurmd.log" | tail -5
    bad "$name: job $JID wrote no checkpoint (state $(job_field "$JID" JobState))"
    return 1
  fi
  case $how in
    requeue) scontrol requeue "$JID" ;;
    usr1) scancel --signal=USR1 --batch "$JID" ;;
  esac
}

reference $STEPS || { echo "run_slurm_test: the reference run failed"; exit 1; }
for c in $CASES; do
  case $c in
  requeue | mpirun-requeue)
    launcher=$SRUN_LAUNCHER
    [ "$c" = mpirun-requeue ] && launcher=mpirun
    start_and_stop "$c" $STEPS "$launcher" requeue || continue
    check_job "$c" $STEPS "$JID" "scontrol requeue ($launcher)"
    # The point of KillWait: Slurm's SIGTERM reached the ranks and they checkpointed before the restart.
    if grep -q "stopped by signal" "$WORK/$c.out" && grep -q "exited with status 75" "$WORK/$c.out"; then
      ok "scontrol requeue ($launcher): the ranks checkpointed and exited 75 on Slurm's SIGTERM"
    else
      bad "scontrol requeue ($launcher): the ranks did not stop cleanly on Slurm's SIGTERM"
    fi
    ;;
  preempt)
    start_and_stop preempt $STEPS $SRUN_LAUNCHER none || continue
    # The preemptor wants every CPU of the node for a few seconds.
    urgent=$(sbatch --parsable --partition=urgent --nodes=1 --ntasks="$CPUS" --output="$WORK/urgent.out" \
             --wrap "sleep 3") || { bad "preempt: could not submit the preempting job"; continue; }
    JOBS+=("$urgent")
    check_job preempt $STEPS "$JID" "preempted by a job of a higher partition ($SRUN_LAUNCHER)"
    if grep -q "stopped by signal" "$WORK/preempt.out" && grep -q "exited with status 75" "$WORK/preempt.out"; then
      ok "preemption: the ranks checkpointed and exited 75 on Slurm's SIGTERM"
    else
      bad "preemption: the ranks did not stop cleanly"
    fi
    ;;
  scancel)
    start_and_stop scancel $STEPS $SRUN_LAUNCHER none || continue
    scancel "$JID"
    wait_for 120 job_finished "$JID"
    st=$(job_field "$JID" JobState)
    stopped=$(grep -c "stopped by signal" "$WORK/scancel.out")
    if [ "$st" = CANCELLED ] && [ "$stopped" -ge 1 ]; then
      ok "scancel: the ranks checkpointed and the job ended CANCELLED (not requeued)"
    else
      tail -8 "$WORK/scancel.out"
      bad "scancel: job $JID ended '$st', ranks stopped cleanly $stopped time(s)"
    fi
    # The same sbatch line again (without clearing the run directory) resumes.
    # shellcheck disable=SC2046
    if ! JID=$(OSSTUNE_LAUNCHER=$SRUN_LAUNCHER sbatch --parsable --nodes=1 --ntasks=2 --output="$WORK/scancel.out" \
               --chdir="$WORK" "$SCRIPT" $(train_args $STEPS "$WORK/scancel")); then
      bad "scancel: resubmitting failed"
      continue
    fi
    JOBS+=("$JID")
    wait_for 300 job_finished "$JID"
    if [ "$(job_field "$JID" JobState)" = COMPLETED ] && grep -q "resuming from" "$WORK/scancel.out" &&
       cmp -s "$(adapter "$WORK/ref$STEPS" $STEPS)" "$(adapter "$WORK/scancel" $STEPS)"; then
      ok "scancel: submitted again, resumed and ended byte-identical to the uninterrupted run"
    else
      tail -8 "$WORK/scancel.out"
      bad "scancel: the resubmitted job did not resume to the same adapter"
    fi
    ;;
  signal | mpirun)
    launcher=$SRUN_LAUNCHER
    [ "$c" = mpirun ] && launcher=mpirun
    start_and_stop "$c" $STEPS "$launcher" usr1 || continue
    check_job "$c" $STEPS "$JID" "SIGUSR1 to the batch script ($launcher)"
    if grep -q "got SIGUSR1" "$WORK/$c.out" && grep -q "exited with status 75" "$WORK/$c.out" &&
       grep -q "requeueing job $JID" "$WORK/$c.out"; then
      ok "SIGUSR1 ($launcher): forwarded to the ranks, exit 75, the script requeued the job"
    else
      bad "SIGUSR1 ($launcher): the script did not forward, see exit 75 or requeue"
    fi
    ;;
  timelimit)
    # Slurm checks time limits about every 30 s: a 60 s job asking for SIGUSR1 50 s before its end gets it
    # 10 to 40 s after it starts, and again after each restart until the run is done.
    reference 60 || { bad "timelimit: the reference run failed"; continue; }
    start_and_stop timelimit 60 $SRUN_LAUNCHER none --time=1 --signal=B:USR1@50 || continue
    check_job timelimit 60 "$JID" "--time=1 --signal=B:USR1@50 ($SRUN_LAUNCHER)"
    ;;
  *) echo "unknown case $c"; exit 2 ;;
  esac
done
echo "run_slurm_test: $passes passed, $fails failed"
[ $fails -eq 0 ]
