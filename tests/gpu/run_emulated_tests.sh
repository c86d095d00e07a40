#!/usr/bin/env bash
# The GPU op test without a GPU: builds test_ops_cuda against the CPU emulation of CUDA (tests/gpu/emu) and runs it
# under four thread schedules, which must all pass:
#   lockstep        every thread runs to its next barrier, threads in order;
#   lockstep, rev.  the same, threads in reverse order;
#   warp ahead      one warp at a time runs to its next __syncthreads (a missing barrier lets it overwrite shared
#                   memory other warps still read, or read what they have not written yet);
#   warp ahead, rev.
# Shared memory is poisoned before every block and device memory at allocation, so a read of something never
# written shows up as NaN; AddressSanitizer catches out-of-bounds accesses. What it cannot show: timing-dependent
# behaviour of real hardware and the numerics of the real tensor cores (run tests/gpu/run_gpu_tests.sh on a GPU).
#
# Usage: tests/gpu/run_emulated_tests.sh [--full] [--build-dir DIR] [--seed N] [--build-only | --no-build]
#                                       [--schedule NAME]
#   --full          also run the full sizes once (minutes); the default is the small sizes only
#   --build-only    build the emulated test and stop; --no-build: use the one in DIR (ctest runs the build once,
#                   then each schedule as a test of its own)
#   --schedule NAME run only that schedule (lockstep, lockstep-reverse, warp-ahead, warp-ahead-reverse)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build="$root/build-emu"
full=0
seed=20260101
do_build=1
do_run=1
only=""
while [ $# -gt 0 ]; do
    case "$1" in
    --full) full=1; shift ;;
    --build-dir) build=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --build-only) do_run=0; shift ;;
    --no-build) do_build=0; shift ;;
    --schedule) only=$2; shift 2 ;;
    *) echo "usage: $0 [--full] [--build-dir DIR] [--seed N] [--build-only | --no-build] [--schedule NAME]" >&2; exit 2 ;;
    esac
done
if [ "$do_build" = 1 ]; then
    "$root/tests/gpu/emu/build_emulated.sh" "$build" || { echo "run_emulated_tests: build failed" >&2; exit 1; }
fi
[ "$do_run" = 1 ] || exit 0
[ -x "$build/test_ops_cuda_emu" ] || { echo "run_emulated_tests: $build/test_ops_cuda_emu is missing: build it first" >&2; exit 1; }
cd "$root"
export ASAN_OPTIONS=detect_leaks=0 # the emulator keeps its fiber stacks for the whole run
failed=0
ran=0
run() { # name, warp_ahead, reverse, args...
    local name=$1 wa=$2 rev=$3
    shift 3
    [ -z "$only" ] || [ "$only" = "$name" ] || return 0
    ran=$((ran + 1))
    echo "== $name"
    EMU_WARP_AHEAD=$wa EMU_REVERSE=$rev "$build/test_ops_cuda_emu" "$@" > "$build/$name.log" 2>&1
    local rc=$?
    grep -v '^ok' "$build/$name.log"
    [ $rc = 0 ] || { echo "run_emulated_tests: $name FAILED (log: $build/$name.log)" >&2; failed=1; }
}
run lockstep 0 0 --small --seed "$seed"
run lockstep-reverse 0 1 --small --seed "$((seed + 1))"
run warp-ahead 1 0 --small --seed "$((seed + 2))"
run warp-ahead-reverse 1 1 --small --seed "$((seed + 3))"
[ "$full" = 1 ] && run full-warp-ahead 1 0 --seed "$seed"
[ "$ran" -gt 0 ] || { echo "run_emulated_tests: no schedule named '$only'" >&2; exit 2; }
[ "$failed" = 0 ] && echo "run_emulated_tests: all passed"
exit "$failed"
