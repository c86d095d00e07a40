#!/usr/bin/env bash
# How fast osstune-prep turns the taigi training pairs (both directions) into the HDF5 file, on one core, and how
# fast the tokenizer encodes the corpus. The target is under 30 s for train.tsv; the script fails above that.
#
# usage: benchmarks/prep_speed.sh [BUILD_DIR] [CORPUS_DIR]     (defaults: build, ../shared/data/taigi)
# Run from the repository root after building osstune-prep and test_data_roundtrip.
set -euo pipefail

build=${1:-build}
corpus=${2:-../shared/data/taigi}
prep="$build/bin/osstune-prep"
[[ -x "$prep" ]] || { echo "prep_speed: $prep not built" >&2; exit 1; }
[[ -f "$corpus/train.tsv" ]] || { echo "prep_speed: no $corpus/train.tsv" >&2; exit 1; }

# One core: pin to the first CPU this process may use, when taskset exists.
pin=()
if command -v taskset >/dev/null; then
  cpu=$(taskset -pc $$ | sed 's/.*: //; s/[,-].*//')
  pin=(taskset -c "$cpu")
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s.%N)
"${pin[@]}" "$prep" --tokenizer data/o200k_base.tiktoken --in "$corpus/train.tsv" --out "$out/train.h5" --quiet
end=$(date +%s.%N)
seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
size=$(stat -c %s "$out/train.h5")
echo "prep_speed: osstune-prep on $corpus/train.tsv (both directions, one core): ${seconds} s, output ${size} bytes"

if [[ -x "$build/bin/test_data_roundtrip" ]]; then
  "${pin[@]}" "$build/bin/test_data_roundtrip" "$corpus" | grep "encode speed" | sed 's/^/prep_speed: /'
fi

if awk -v s="$seconds" 'BEGIN { exit !(s >= 30) }'; then
  echo "prep_speed: FAIL: over the 30 s target" >&2
  exit 1
fi
