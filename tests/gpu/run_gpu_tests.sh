#!/usr/bin/env bash
# GPU tests of the CUDA backend, for a machine with an NVIDIA GPU (CI has none, so ctest does not run these):
#   1. configure and build with the CUDA backend (sm_90a only, for build speed; OT_CUDA_ARCHS overrides),
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
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DOT_WITH_CUDA=ON -DOT_CUDA_ARCHS="${OT_CUDA_ARCHS:-90a}" ||
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

# ---- the training path (trainer/graph/gptoss_cuda.c, docs/cuda-backend.md "Training path") ----------------------------
#   4. test_train_cuda: the CUDA layer graph against the CPU reference on a small model with head_dim 64 (the
#      golden fixtures have head_dim 20, which the CUDA attention does not take): logits, loss, every LoRA
#      gradient, recomputation against kept activations, a 50-step AdamW loss curve;
#   5. compute-sanitizer memcheck on test_train_cuda without the loss curve;
#   6. osstune-train / osstune-logits --backend cuda against --backend cpu end to end (tests/gpu/train_cuda_e2e.sh);
#   7. osstune-train --full --backend cuda against --backend cpu, resume, checkpoints read by the CPU full mode
#      (tests/gpu/full_cuda_e2e.sh).
if [ "$do_build" = 1 ]; then
    cmake --build "$build" -j"$(nproc)" --target test_train_cuda test_decode_cuda osstune-init-model osstune-prep \
        osstune-train osstune-logits osstune-translate || { echo "run_gpu_tests: building the training path failed" >&2; failed=1; }
fi
train_work="$build/gpu_train"
train_model="$train_work/model_hd64"
mkdir -p "$train_work"
if [ ! -f "$train_model/config.json" ]; then
    "$build/bin/osstune-init-model" --preset tiny --seed 3 --out "$train_model" --set head_dim=64 --set hidden_size=256 \
        --set num_hidden_layers=2 --set vocab_size=8192 --set pad_token_id=0 --set eos_token_id=1 --set bos_token_id=2 \
        > /dev/null || { echo "run_gpu_tests: osstune-init-model failed" >&2; failed=1; }
fi
echo "== test_train_cuda (the CUDA layer graph against the CPU reference)"
"$build/bin/test_train_cuda" "$train_model" 50 || { echo "run_gpu_tests: test_train_cuda FAILED" >&2; failed=1; }
echo "== compute-sanitizer memcheck: test_train_cuda (no loss curve)"
if command -v compute-sanitizer > /dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 99 "$build/bin/test_train_cuda" "$train_model" 0 > \
        "$train_work/memcheck.log" 2>&1 || { tail -40 "$train_work/memcheck.log"; echo "run_gpu_tests: memcheck of test_train_cuda FAILED (log: $train_work/memcheck.log)" >&2; failed=1; }
    tail -2 "$train_work/memcheck.log"
fi
echo "== osstune-train / osstune-logits: --backend cuda against --backend cpu"
bash "$root/tests/gpu/train_cuda_e2e.sh" "$build/bin" "$train_work/e2e" ||
    { echo "run_gpu_tests: train_cuda_e2e FAILED" >&2; failed=1; }

echo "== osstune-train --gpu-memory-limit: the plan under a limit, the refusals past it"
bash "$root/tests/gpu/train_cuda_memlimit.sh" "$build/bin" "$train_work/memlimit" ||
    { echo "run_gpu_tests: train_cuda_memlimit FAILED" >&2; failed=1; }

echo "== osstune-train --full: --backend cuda against --backend cpu (30 steps)"
bash "$root/tests/gpu/full_cuda_e2e.sh" "$build/bin" "$train_work/full_e2e" ||
    { echo "run_gpu_tests: full_cuda_e2e FAILED" >&2; failed=1; }

# ---- batched decoding (infer/decode_cuda.c, docs/translate.md "Backends") --------------------------------------
#   8. test_decode_cuda + osstune-translate --backend cuda against --backend cpu (tests/gpu/decode_e2e.sh, bf16 bounds)
echo "== the GPU decoder against the CPU decoder"
bash "$root/tests/gpu/decode_e2e.sh" "$build/bin" "$train_work/decode" ||
    { echo "run_gpu_tests: decode_e2e FAILED" >&2; failed=1; }

[ "$failed" = 0 ] && echo "run_gpu_tests: all passed"
exit "$failed"
