#!/usr/bin/env bash
# The layer rule, checked: every project #include in the sources of a room must name a room that room may use
# (docs/ARCHITECTURE.md, "Rooms"). A lower room never includes a higher one, and the two top rooms beside each
# other (trainer/train and infer) never include each other. Prints every breach with its file and line.
# usage: tests/check_layers.sh [REPO_ROOT]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"

# room -> the rooms its files may include (itself included)
declare -A allowed=(
  [common]="common"
  [kernels]="common kernels"
  [comm]="common comm"
  [formats]="common formats proto"
  [trainer/model]="common kernels comm formats trainer/model"
  [trainer/graph]="common kernels comm formats trainer/model trainer/graph"
  [trainer/train]="common kernels comm formats trainer/model trainer/graph trainer/train"
  [infer]="common kernels comm formats trainer/model trainer/graph infer"
  [tools]="common kernels comm formats trainer/model trainer/graph infer"
)
# The room a path lies in ("" for a path outside the rooms, e.g. tests/).
room_of() {
  case $1 in
    trainer/model/*) echo trainer/model ;;
    trainer/graph/*) echo trainer/graph ;;
    trainer/train/*) echo trainer/train ;;
    trainer/*) echo trainer ;;
    proto/*) echo proto ;;
    common/* | kernels/* | comm/* | formats/* | infer/* | tools/*) echo "${1%%/*}" ;;
    *) echo "" ;;
  esac
}

breaches=0 checked=0
while IFS= read -r file; do
  from=$(room_of "$file")
  [ -n "$from" ] && [ -n "${allowed[$from]+x}" ] || continue
  checked=$((checked + 1))
  # '#include "dir/..."' lines: the project's own headers (system headers use <...>)
  while IFS=: read -r line inc; do
    to=$(room_of "$inc")
    if [ -z "$to" ] || [ "$to" = trainer ]; then
      echo "$file:$line: includes \"$inc\", which is in no room"
      breaches=$((breaches + 1))
      continue
    fi
    ok=0
    for a in ${allowed[$from]}; do [ "$a" = "$to" ] && ok=1; done
    if [ $ok = 0 ]; then
      echo "$file:$line: $from includes \"$inc\" ($to): $from may include only: ${allowed[$from]}"
      breaches=$((breaches + 1))
    fi
  done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" |
           sed -E 's/^([0-9]+):[[:space:]]*#[[:space:]]*include[[:space:]]*"([^"]+)".*/\1:\2/' |
           grep -v -E '^[0-9]+:[^/]+$') # a bare "name.h" is the file's own folder
done < <(git ls-files -- '*.c' '*.h' '*.cu' '*.cuh' '*.cpp')

if [ "$checked" -eq 0 ]; then
  echo "check_layers: no source files found (is this the repository root?)"
  exit 1
fi
if [ "$breaches" -gt 0 ]; then
  echo "check_layers: $breaches include(s) break the layer rule in $checked files"
  exit 1
fi
echo "check_layers: $checked files, every include points down or sideways within its room"
