#!/usr/bin/env bash
# Decoding throughput of osstune-translate --backend cuda (batched greedy decoding with a KV cache): new tokens per
# second at batch sizes 1, 8 and 32, on the 20b shape (osstune-init-model --preset 20b, random weights, MXFP4
# experts) and on the tiny model (head_dim 64). Each run translates 2 × batch-size sentences of the bundled sample
# pairs with --max-new-tokens NEW (a random model almost never writes <|return|>, so every sentence generates NEW
# tokens); the time is osstune-translate's own (after the model is loaded: prompt computation included).
#
# usage: benchmarks/decode_bench.sh            (on the GPU machine; builds unless OSSTUNE_BUNDLE is set)
# Environment: WORK (default /tmp/osstune-decode-bench), MODEL_DIR (the 20b-shaped checkpoint; default
#   $WORK/gpt-oss-20b-random, or the training benchmark's when present), OSSTUNE_BUNDLE (a bundle of built programs:
#   tools/make-bundle.sh), BUILD (default build-gpu-bench), NEW (default 128), BATCHES (default "1 8 32"),
#   SKIP_20B=1. A table on standard output; a JSON line per run in $WORK/decode_bench.jsonl (and $OUT/ when set).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/osstune-decode-bench}
BUILD=${BUILD:-build-gpu-bench}
NEW=${NEW:-128}
BATCHES=${BATCHES:-"1 8 32"}
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
mkdir -p "$WORK"
if [ -n "${OSSTUNE_BUNDLE:-}" ]; then
  BIN=$(cd "$OSSTUNE_BUNDLE/bin" && pwd)
  export LD_LIBRARY_PATH="$OSSTUNE_BUNDLE/lib:${LD_LIBRARY_PATH:-}"
else
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DOT_CUDA_ARCHS=90a > "$WORK/cmake.log" 2>&1 ||
    { tail -20 "$WORK/cmake.log"; echo "decode_bench: cmake failed (see OSSTUNE_BUNDLE)"; exit 1; }
  grep -q "CUDA backend ON" "$WORK/cmake.log" || { echo "decode_bench: cmake found no nvcc: no CUDA backend"; exit 1; }
  cmake --build "$BUILD" -j"$(nproc)" --target osstune-init-model osstune-translate > "$WORK/build.log" 2>&1 ||
    { tail -30 "$WORK/build.log"; exit 1; }
  BIN=$ROOT/$BUILD/bin
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

tiny=$WORK/tiny-hd64
[ -f "$tiny/config.json" ] || "$BIN/osstune-init-model" --preset tiny --seed 1 --set head_dim=64 --out "$tiny" > /dev/null
models=("tiny:$tiny")
if [ "${SKIP_20B:-0}" != 1 ]; then
  m20=${MODEL_DIR:-}
  [ -z "$m20" ] && [ -f /tmp/osstune-gpu-bench/gpt-oss-20b-random/config.json ] && m20=/tmp/osstune-gpu-bench/gpt-oss-20b-random
  m20=${m20:-$WORK/gpt-oss-20b-random}
  if [ ! -f "$m20/config.json" ]; then
    echo "== osstune-init-model --preset 20b into $m20 (13 GB, once)"
    "$BIN/osstune-init-model" --preset 20b --seed 1 --out "$m20" > /dev/null
  fi
  models+=("20b:$m20")
fi

printf '\n%-6s %6s %10s %10s %14s\n' model batch sentences seconds "new tokens/s"
for entry in "${models[@]}"; do
  name=${entry%%:*}
  dir=${entry#*:}
  for b in $BATCHES; do
    n=$((2 * b))
    log="$WORK/${name}_b$b.err"
    "$BIN/osstune-translate" --backend cuda --batch-size "$b" --model "$dir" --tokenizer data/o200k_base.tiktoken \
      --direction zh2nan --in data/sample/train.tsv --limit "$n" --max-new-tokens "$NEW" > "$WORK/${name}_b$b.out" \
      2> "$log" || { cat "$log"; echo "decode_bench: osstune-translate failed ($name, batch $b)"; exit 1; }
    # "osstune-translate: N sentences in S s (cuda backend): K new tokens (R/s); ..."
    read -r sent secs toks rate < <(sed -n 's/.*: \([0-9]*\) sentences in \([0-9.]*\) s (cuda backend): \([0-9]*\) new tokens (\([0-9.]*\)\/s).*/\1 \2 \3 \4/p' "$log")
    [ -n "${rate:-}" ] || { cat "$log"; echo "decode_bench: no summary line in $log"; exit 1; }
    printf '%-6s %6d %10d %10.1f %14.1f\n' "$name" "$b" "$sent" "$secs" "$rate"
    json="{\"bench\":\"decode\",\"model\":\"$name\",\"batch\":$b,\"sentences\":$sent,\"new_tokens\":$toks,\"seconds\":$secs,\"tokens_per_s\":$rate,\"max_new_tokens\":$NEW}"
    echo "$json" >> "$WORK/decode_bench.jsonl"
    [ -n "${OUT:-}" ] && { mkdir -p "$OUT"; echo "$json" >> "$OUT/decode_bench.jsonl"; }
  done
done
echo "decode_bench: JSON lines in $WORK/decode_bench.jsonl"
