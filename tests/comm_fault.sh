#!/usr/bin/env bash
# Failure test of the communicator: NP ranks (default 3) do collectives in a loop (test_comm_worker), then rank 1
# is killed or frozen. The job must end by itself — every rank gone, with a message — within a bound measured
# from the signal:
#   kill:      SIGKILL under a plain mpirun: 60 s, exit status non-zero. Open MPI notices the death and ends the
#              job (or, failing that, the survivors' watchdog does).
#   kill-left: SIGKILL, but mpirun is told to leave the job running (--enable-recovery), as a launcher that does
#              not watch its processes would: the survivors' watchdog must end the job, each survivor reporting
#              "timed out", between the deadline and the deadline + 20 s. (In this mode Open MPI's mpirun exits
#              0 whatever its ranks do, so its status is not checked; the survivors' message gives theirs: 73.)
#   stop:      SIGSTOP: nothing but the watchdog notices a frozen rank; same bounds, and exit status 73.
# Usage: comm_fault.sh kill|kill-left|stop MPIEXEC WORKER [NP]
set -u
mode=${1:-} mpiexec=${2:-} worker=${3:-} np=${4:-3}
deadline=8 # the watchdog deadline (seconds) given to the workers
extra=""
case $mode in
kill) signal=KILL limit=60 ;;
kill-left) signal=KILL limit=$((deadline + 20)) extra=--enable-recovery ;;
stop) signal=STOP limit=$((deadline + 20)) ;;
*)
    echo "usage: $0 kill|kill-left|stop MPIEXEC WORKER [NP]" >&2
    exit 2
    ;;
esac

now_ms() { echo $(($(date +%s%N) / 1000000)); }
dir=$(mktemp -d)
launcher=""
# Whatever happens, leave no process of this test behind (only the ones it started, by pid).
cleanup() {
    for f in "$dir"/rank-*.pid; do
        [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
    done
    [ -n "$launcher" ] && kill -KILL "$launcher" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

"$mpiexec" -np "$np" --oversubscribe $extra "$worker" "$dir" 45 "$deadline" >"$dir/out" 2>&1 &
launcher=$!

# All ranks are in their loop once every pid file exists.
started=0
for _ in $(seq 300); do
    started=$(find "$dir" -maxdepth 1 -name 'rank-*.pid' | wc -l)
    [ "$started" -ge "$np" ] && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.1
done
if [ "$started" -lt "$np" ]; then
    echo "FAIL: only $started of $np ranks reached their loop"
    cat "$dir/out"
    exit 1
fi
sleep 1
victim=$(cat "$dir/rank-1.pid")
t0=$(now_ms)
kill -"$signal" "$victim"
echo "comm_fault $mode: sent SIG$signal to rank 1 (pid $victim) of $np"

while kill -0 "$launcher" 2>/dev/null; do
    if [ $(($(now_ms) - t0)) -gt $((limit * 1000)) ]; then
        echo "FAIL: the job is still running ${limit} s after SIG$signal of rank 1"
        sed 's/^/  | /' "$dir/out"
        exit 1
    fi
    sleep 0.1
done
wait "$launcher"
rc=$?
launcher=""
elapsed_ms=$(($(now_ms) - t0))
elapsed=$(printf '%d.%03d' $((elapsed_ms / 1000)) $((elapsed_ms % 1000)))
echo "comm_fault $mode: mpirun exited with status $rc, ${elapsed} s after the signal (limit ${limit} s)"
echo "--- job output:"
sed 's/^/  | /' "$dir/out"
echo "---"

fail=0
check() { # check CONDITION-EXIT-STATUS MESSAGE
    if [ "$1" -ne 0 ]; then
        echo "FAIL: $2"
        fail=1
    fi
}
if [ "$mode" != kill-left ]; then
    [ "$rc" -ne 0 ]
    check $? "the job exited with status 0"
fi
alive=""
for f in "$dir"/rank-*.pid; do
    p=$(cat "$f")
    if kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p" | cut -c1)" != Z ]; then alive="$alive $p"; fi
done
[ -z "$alive" ]
check $? "ranks still alive after the job ended:$alive"

# Watchdog reports of the survivors (the frozen rank, once thawed to be killed, may report its own wait too).
timeouts=$(grep "timed out after .* waiting for peers" "$dir/out" | grep -vc "osstune: rank 1: ")
case $mode in
kill)
    # The launcher's report of the death (Open MPI: "exited on signal 9"), or the survivors' own.
    grep -qE "signal 9|Killed|osstune: rank [0-9]+: " "$dir/out"
    check $? "no message says a rank died"
    if [ "$timeouts" -gt 0 ]; then
        echo "comm_fault kill: ended by the watchdog ($timeouts survivors reported)"
    else
        echo "comm_fault kill: ended by the launcher"
    fi
    ;;
kill-left | stop)
    [ "$timeouts" -ge 1 ]
    check $? "no survivor reported the timeout"
    if [ "$mode" = stop ]; then
        [ "$rc" -eq 73 ]
        check $? "exit status $rc, expected 73 (OT_COMM_EXIT_TIMEOUT)"
    fi
    [ "$elapsed_ms" -ge $(((deadline - 1) * 1000)) ]
    check $? "the watchdog fired after ${elapsed} s, before its ${deadline} s deadline"
    echo "comm_fault $mode: $timeouts of $((np - 1)) survivors reported the timeout before the job ended"
    ;;
esac
[ "$fail" -eq 0 ] && echo "comm_fault $mode: passed"
exit "$fail"
