#!/usr/bin/env bash
# GPU tests of the CUDA backend, for a machine with an NVIDIA GPU (CI has none, so ctest does not run these):
#   1. configure and build with the CUDA backend (sm_90 only, for build speed; OT_CUDA_ARCHS overrides),
#   2. test_ops_cuda: every CUDA op against its CPU twin at full sizes,
#   3. compute-sanitizer memcheck on test_ops_cuda --small (the same checks at sizes the sanitizer runs quickly).
# Exits non-zero if the build, any check, or the sanitizer fails.
#
# Usage: tests/gpu/run_gpu_tests.sh [--build-dir DIR] [--no-build] [--seed N]
#   --build-dir DIR  build directory (default: build-gpu in the repository root)
#   --no-build       use DIR/bin/test_ops_cuda as it is (e.g. built on another machine and copied over)
#   --seed N         random seed for the inputs (default: the test's own)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build="$root/build-gpu"
do_build=1
seed_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) build=$2; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --seed) seed_args=(--seed "$2"); shift 2 ;;
    *) echo "usage: $0 [--build-dir DIR] [--no-build] [--seed N]" >&2; exit 2 ;;
    esac
done

if [ "$do_build" = 1 ]; then
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DOT_WITH_CUDA=ON -DOT_CUDA_ARCHS="${OT_CUDA_ARCHS:-90}" ||
        { echo "run_gpu_tests: cmake configure failed" >&2; exit 1; }
    cmake --build "$build" -j"$(nproc)" --target test_ops_cuda ||
        { echo "run_gpu_tests: build failed (is nvcc on PATH? the CUDA backend is built only when it is)" >&2; exit 1; }
fi
bin="$build/bin/test_ops_cuda"
[ -x "$bin" ] || { echo "run_gpu_tests: $bin not found" >&2; exit 1; }
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

cd "$root" # tests run from the repository root
failed=0
echo "== test_ops_cuda (full sizes)"
"$bin" ${seed_args[@]+"${seed_args[@]}"} || { echo "run_gpu_tests: test_ops_cuda FAILED" >&2; failed=1; }

echo "== compute-sanitizer memcheck: test_ops_cuda --small"
if command -v compute-sanitizer > /dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 99 "$bin" --small ${seed_args[@]+"${seed_args[@]}"} ||
        { echo "run_gpu_tests: memcheck FAILED" >&2; failed=1; }
else
    echo "run_gpu_tests: compute-sanitizer not on PATH" >&2
    failed=1
fi

[ "$failed" = 0 ] && echo "run_gpu_tests: all passed"
exit "$failed"
