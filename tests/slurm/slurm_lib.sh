# shellcheck shell=bash
# What the Slurm tests share (tests/slurm/run_slurm_test.sh, tests/launch/run_netns_slurm_test.sh): sourced, not run.
#
#   slurm_install LOG       Debian's slurmd, slurmctld, slurm-client and munge with apt-get if any is missing;
#                           false with the reason in SLURM_ERROR when they cannot be had (apt-get's output in LOG)
#   slurm_cluster_dir NAME  a new private directory for a cluster's files (config, state, spool, logs, munge socket)
#                           in SLURM_DIR: short (unix socket names are limited to 107 bytes), searchable by all
#   munge_start             munged with its socket in SLURM_DIR/munge; its pid in MUNGE_PID; false with the reason
#                           in SLURM_ERROR when it does not answer
#   job_field JOB FIELD     one field of `scontrol show job`
#   job_finished JOB        true once JOB is in a final state (or unknown)
#   wait_for SECONDS CMD... true once CMD succeeds, false after SECONDS
SLURM_ERROR=""

slurm_install() {
  local log=$1
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
     command -v munged >/dev/null; then
    return 0
  fi
  if ! command -v apt-get >/dev/null; then
    SLURM_ERROR="Slurm is not installed and there is no apt-get to install it"
    return 1
  fi
  echo "installing slurmd slurmctld slurm-client munge with apt-get"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmd slurmctld slurm-client munge \
       >"$log" 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$log" 2>&1
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurmd slurmctld slurm-client \
         munge >>"$log" 2>&1; then
      SLURM_ERROR="apt-get could not install Slurm: $(tail -3 "$log" | tr '\n' ' ')"
      return 1
    fi
  fi
}

slurm_cluster_dir() {
  SLURM_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || return 1
  chmod 755 "$SLURM_DIR" # munged wants every directory above its socket searchable by all
  mkdir -p "$SLURM_DIR/munge" "$SLURM_DIR/state" "$SLURM_DIR/spool" && chmod 755 "$SLURM_DIR/munge"
}

munge_start() {
  local m=$SLURM_DIR/munge
  SLURM_ERROR=""
  head -c 1024 /dev/urandom >"$m/munge.key" && chmod 600 "$m/munge.key"
  munged -F --socket="$m/munge.socket" --key-file="$m/munge.key" --pid-file="$m/munged.pid" \
    --log-file="$SLURM_DIR/munged.log" --seed-file="$m/munged.seed" >"$SLURM_DIR/munged.out" 2>&1 &
  MUNGE_PID=$!
  for _ in $(seq 50); do [ -S "$m/munge.socket" ] && break; sleep 0.1; done
  if ! munge -S "$m/munge.socket" -n </dev/null | unmunge -S "$m/munge.socket" >/dev/null 2>&1; then
    SLURM_ERROR="munged does not work here: $(grep -ih 'error' "$SLURM_DIR/munged.out" "$SLURM_DIR/munged.log" \
                 2>/dev/null | tail -3 | tr '\n' ' ')"
    return 1
  fi
}

job_field() { scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p"; }

job_finished() {
  case $(job_field "$1" JobState) in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | "") return 0 ;;
  esac
  return 1
}

wait_for() {
  local end=$((SECONDS + $1))
  shift
  while [ $SECONDS -lt $end ]; do "$@" && return 0; sleep 0.2; done
  return 1
}
