#!/usr/bin/env bash
# Build test_ops_cuda against the CPU emulation of CUDA (no GPU, no nvcc needed): the kernels of kernels/cuda are
# rewritten by transform.py and compiled as host C++ with the emulated runtime, cuBLAS and device built-ins of
# include/cuda_emu.h + emu.cpp; the test and the CPU reference are the real ones. AddressSanitizer and UBSan are
# on unless OT_EMU_SANITIZE=0, so an out-of-bounds access of a kernel stops the run with a report.
#
# Usage: tests/gpu/emu/build_emulated.sh OUT_DIR     (the program is OUT_DIR/test_ops_cuda_emu)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
emu=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$emu/../../.." && pwd)
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
san=""
[ "${OT_EMU_SANITIZE:-1}" = 1 ] && san="-fsanitize=address,undefined -fno-omit-frame-pointer"
rm -rf "$out/src" "$out/obj"
mkdir -p "$out/src/kernels/cuda" "$out/obj"
python3 "$emu/transform.py" "$root/kernels/cuda" "$out/src/kernels/cuda"

# The emulation headers come first, so <cuda_runtime.h> and friends resolve to them; the rewritten kernels
# shadow kernels/cuda of the repository.
inc="-I$emu/include -I$out/src -I$root"
pids=()
objs=()
for f in "$out"/src/kernels/cuda/*.cu; do
    o="$out/obj/cuda_$(basename "$f" .cu).o"
    objs+=("$o")
    g++ -x c++ -std=c++17 -O1 -g $san -D_GNU_SOURCE -Wall -Wno-unknown-pragmas -Wno-unused-function $inc \
        -c "$f" -o "$o" &
    pids+=($!)
done
g++ -std=c++17 -O1 -g $san -Wall -I"$emu/include" -c "$emu/emu.cpp" -o "$out/obj/emu.o" &
pids+=($!)
objs+=("$out/obj/emu.o")
for f in "$root"/kernels/cpu/*.c "$root"/kernels/cuda/*.c "$root"/common/*.c "$root/tests/test_util.c" \
         "$root/tests/gpu/test_ops_cuda.c"; do
    o="$out/obj/c_$(basename "$f" .c).o"
    objs+=("$o")
    gcc -std=c11 -O2 -g $san -D_GNU_SOURCE $inc -c "$f" -o "$o" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
g++ $san -o "$out/test_ops_cuda_emu" "${objs[@]}" -lm
echo "build_emulated: $out/test_ops_cuda_emu"
