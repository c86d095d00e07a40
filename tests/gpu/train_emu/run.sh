#!/usr/bin/env bash
# The CUDA training path without a GPU: trainer/graph/gptoss_cuda.c, trainer/model/model_cuda.c, tests/gpu/test_train_cuda.c,
# osstune-train and osstune-logits built against emu_ops.c (the CUDA runtime and the ops of kernels/cuda/ops_cuda.h
# emulated on the host with the CPU reference ops), then:
#   1. test_train_cuda in exact mode (EMU_EXACT=1: activations kept in fp32) for several LoRA target sets — the
#      composition must match the CPU reference to fp32 rounding;
#   2. test_train_cuda with bf16 storage, against the GPU bounds (how those bounds were set);
#   3. tests/gpu/train_cuda_e2e.sh: osstune-train / osstune-logits --backend cuda against --backend cpu;
#   4. tests/gpu/full_cuda_e2e.sh in exact mode: osstune-train --full --backend cuda against --backend cpu (and
#      with --recompute on and attention);
#   5. tests/gpu/train_cuda_shard.sh with EXACT=1: mpirun -np 2 (and 1) osstune-train --backend cuda --shard-base on
#      against --shard-base off, byte for byte. NCCL cannot run here, so the sharded model gathers through the MPI
#      communicator: it may, because the emulated device memory is host memory (ot_cuda_memory_host_visible), and the
#      gradients are summed with --grad-reduce ordered;
#   6. the GPU decoder (infer/decode_cuda.c): tests/gpu/test_decode_cuda.c against the CPU decoder in exact and
#      bf16 mode, and tests/gpu/decode_e2e.sh (osstune-translate --backend cuda against --backend cpu);
#   7. tests/gpu/train_cuda_memlimit.sh: --gpu-memory-limit (the plan it makes, the refusals past it).
# What it cannot show: the kernels themselves (tests/gpu/run_emulated_tests.sh and the GPU run check those).
#
# usage: tests/gpu/train_emu/run.sh [--build-only | --part P[,P...]] [BUILD_DIR]   (default: build-train-emu)
#   --build-only    build the emulated programs and stop
#   --part LIST     only these steps, with the programs already built: graph (1, 2), e2e (3), full (4), shard (5),
#                   decode (6), memlimit (7); ctest runs the build once and each part as a test of its own
# Needs the CUDA toolkit's headers (for the runtime's types; nothing of CUDA runs), MPI's mpicc and the build
# dependencies of osstune. A few minutes on two cores, most of them building the CPU libraries.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
do_build=1
parts="graph e2e full shard decode memlimit"
case "${1:-}" in
    --build-only) parts=""; shift ;;
    --part) do_build=0; parts=${2//,/ }; shift 2 ;;
esac
build=${1:-$root/build-train-emu}
want() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
cuda_inc=""
for d in "${CUDA_HOME:-}/include" "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /x/x)")")/include" \
         /usr/local/cuda/include; do
    if [ -f "$d/cuda_runtime_api.h" ] && [ -f "$d/cublas_v2.h" ]; then cuda_inc=$d; break; fi
done
[ -n "$cuda_inc" ] || { echo "train_emu: the CUDA toolkit headers (cuda_runtime_api.h, cublas_v2.h) were not found" >&2; exit 1; }

emu="$build/emu"
model="$emu/model_hd64"
if [ "$do_build" = 1 ]; then
# the CPU libraries and tools (a build without CUDA, so no real kernels are linked)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DOT_WITH_CUDA=OFF > "$build.cmake.log" 2>&1 ||
    { cat "$build.cmake.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target ot_train ot_infer osstune-init-model osstune-prep > "$build.build.log" 2>&1 ||
    { tail -30 "$build.build.log"; exit 1; }
hdf5=$(pkg-config --libs hdf5-serial 2>/dev/null || pkg-config --libs hdf5)
hdf5_inc=$(pkg-config --cflags hdf5-serial 2>/dev/null || pkg-config --cflags hdf5)
hdf5_dir=$(echo "$hdf5" | sed -n 's/.*-L\([^ ]*\).*/\1/p')
mkdir -p "$emu/bin"
flags="-std=c11 -O1 -g -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE -DOT_HAVE_CUDA=1 -I$root -I$build $hdf5_inc -I$cuda_inc"
objs=()
# The CUDA sources of every room, and the backend resolver and engine constructors again: the library's copies
# were built without CUDA (so they say "no CUDA backend")
for f in "$root/trainer/graph/gptoss_cuda.c" "$root/trainer/model/model_cuda.c" "$root/trainer/model/model_cuda_shard.c" \
         "$root/trainer/model/backend.c" "$root/infer/decode_cuda.c" "$root/trainer/train/step_cuda_lora.c" \
         "$root/trainer/train/step_cuda_full.c" "$root/trainer/train/step_cuda.c" "$root/kernels/cuda/cuda_host.c" \
         "$root/tests/gpu/train_emu/emu_ops.c" \
         "$root/tests/test_util.c"; do
    o="$emu/$(basename "$f" .c).o"
    mpicc $flags -c "$f" -o "$o"
    objs+=("$o")
done
libs=("$build/libot_train.a" "$build/libot_infer.a" "$build/libot_graph.a" "$build/libot_model.a" "$build/libot_formats.a" "$build/libot_comm.a" "$build/libot_kernels.a"
      "$build/libot_common.a" -ljansson -lpcre2-8 -lprotobuf-c $hdf5 ${hdf5_dir:+-Wl,-rpath,$hdf5_dir} -lpthread -lm)
link() { # output, main source
    mpicc $flags -c "$2" -o "$emu/main_$1.o"
    mpicc -o "$emu/bin/$1" "$emu/main_$1.o" "${objs[@]}" "${libs[@]}"
}
link test_train_cuda "$root/tests/gpu/test_train_cuda.c"
link osstune-train "$root/trainer/train/train_main.c"
link osstune-logits "$root/tools/osstune-logits.c"
link osstune-translate "$root/tools/osstune-translate.c"
link test_decode_cuda "$root/tests/gpu/test_decode_cuda.c"
ln -sf "$build/bin/osstune-init-model" "$build/bin/osstune-prep" "$emu/bin/"

rm -rf "$model"
"$build/bin/osstune-init-model" --preset tiny --seed 3 --out "$model" --set head_dim=64 \
    --set hidden_size=256 --set num_hidden_layers=2 --set vocab_size=8192 --set pad_token_id=0 --set eos_token_id=1 \
    --set bos_token_id=2 > /dev/null
fi
[ -x "$emu/bin/test_train_cuda" ] || { echo "train_emu: $emu/bin is not built (run with --build-only first)" >&2; exit 1; }
[ -n "$parts" ] || { echo "train_emu: built in $emu/bin"; exit 0; }
cd "$root"
failed=0
if want graph; then
# every LoRA target on, with the 50-step loss curve (the optimizer), then subsets without it (which parts of the
# backward are skipped and which recomputed inputs are redone depends on the targets)
for targets in all attn o,down q,gate_up experts; do
    steps=0
    [ "$targets" = all ] && steps=50
    echo "== exact (fp32 activations), LoRA on $targets, $steps AdamW steps"
    EMU_EXACT=1 "$emu/bin/test_train_cuda" "$model" "$steps" "$targets" exact > "$emu/exact_$targets.log" 2>&1 ||
        { cat "$emu/exact_$targets.log"; failed=1; }
    tail -1 "$emu/exact_$targets.log"
done
echo "== bf16 storage, the GPU bounds"
"$emu/bin/test_train_cuda" "$model" 50 > "$emu/bf16.log" 2>&1 || { cat "$emu/bf16.log"; failed=1; }
grep -E "^info (logits|loss:|loss curve)|passed" "$emu/bf16.log"
fi
if want e2e; then
echo "== osstune-train / osstune-logits, --backend cuda (emulated) against --backend cpu"
bash "$root/tests/gpu/train_cuda_e2e.sh" "$emu/bin" "$emu/e2e" || failed=1
fi
if want full; then
echo "== osstune-train --full: --backend cuda (emulated, fp32) against --backend cpu, 6 steps"
EMU_EXACT=1 FULL_E2E_EXACT=1 STEPS=6 bash "$root/tests/gpu/full_cuda_e2e.sh" "$emu/bin" "$emu/full_e2e" \
    > "$emu/full_e2e.log" 2>&1 || { cat "$emu/full_e2e.log"; failed=1; }
grep -E "^(FAIL|info)|full_cuda_e2e:" "$emu/full_e2e.log"
for rc in on attention; do
echo "== the same with activation recomputation $rc"
EMU_EXACT=1 FULL_E2E_EXACT=1 STEPS=4 FULL_E2E_ARGS="--recompute $rc" bash "$root/tests/gpu/full_cuda_e2e.sh" \
    "$emu/bin" "$emu/full_e2e_recompute_$rc" > "$emu/full_e2e_recompute_$rc.log" 2>&1 ||
    { cat "$emu/full_e2e_recompute_$rc.log"; failed=1; }
grep -E "^(FAIL|info)|full_cuda_e2e:" "$emu/full_e2e_recompute_$rc.log"
done
fi
if want shard; then
echo "== osstune-train --backend cuda (emulated), base weights sharded over 2 and 1 ranks against unsharded"
EXACT=1 bash "$root/tests/gpu/train_cuda_shard.sh" "$emu/bin" "$emu/shard" ordered || failed=1
fi
if want decode; then
echo "== the GPU decoder: exact (fp32 activations), then bf16 storage against the GPU bounds"
EMU_EXACT=1 bash "$root/tests/gpu/decode_e2e.sh" "$emu/bin" "$emu/decode_exact" exact || failed=1
bash "$root/tests/gpu/decode_e2e.sh" "$emu/bin" "$emu/decode_bf16" || failed=1
fi
if want memlimit; then
echo "== osstune-train --gpu-memory-limit (emulated device memory, counted per allocation)"
bash "$root/tests/gpu/train_cuda_memlimit.sh" "$emu/bin" "$emu/memlimit" || failed=1
fi
[ "$failed" = 0 ] && echo "train_emu: all passed ($parts)"
exit "$failed"
