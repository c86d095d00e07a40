#!/usr/bin/env bash
# Two builds of osstune on the same GPU in one go, for a change that must not cost speed: benchmarks/run_gpu_bench.sh
# (our side only) with bundle A, then B, then A and B again, on the same model and data; prints each case's tokens/s
# per run and B's best against A's best.
#
# usage: benchmarks/ab_bench.sh BUNDLE_A BUNDLE_B     (bundles made by run_gpu_bench.sh --bundle)
# Environment: CASES (default "a-attn b-attn c-attn a-all"), ROUNDS (default 2), WORK, TAIGI_DIR, STEPS, WARMUP as
# run_gpu_bench.sh takes them. JSON lines go to $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { sed -n '2,8p' "$0"; exit 2; }
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
export CASES=${CASES:-a-attn b-attn c-attn a-all} SKIP_PEER=1 WORK=${WORK:-/tmp/osstune-ab-bench}
ROUNDS=${ROUNDS:-2}
mkdir -p "$WORK/ab"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    bundle=$A
    [ $side = B ] && bundle=$B
    echo "== round $round, build $side ($bundle)"
    OSSTUNE_BUNDLE=$bundle OUT= benchmarks/run_gpu_bench.sh > "$WORK/ab/$side$round.log" 2>&1 ||
      { tail -20 "$WORK/ab/$side$round.log"; echo "ab_bench: the run of build $side failed"; exit 1; }
    cp "$WORK/results/osstune.jsonl" "$WORK/ab/$side$round.jsonl"
  done
done
python3 - "$WORK/ab" "$ROUNDS" <<'EOF'
import json, os, sys
d, rounds = sys.argv[1], int(sys.argv[2])
runs = {s: [[json.loads(l) for l in open(f"{d}/{s}{r}.jsonl")] for r in range(1, rounds + 1)] for s in "AB"}
cases = [r["case"] for r in runs["A"][0]]
print(f"{'case':<10} " + " ".join(f"{s}{r + 1:>10}" for s in "AB" for r in range(rounds)) + f" {'B/A best':>9}")
for c in cases:
    tps = {s: [next(x["tokens_per_s"] for x in run if x["case"] == c) for run in runs[s]] for s in "AB"}
    print(f"{c:<10} " + " ".join(f"{t:11.0f}" for s in "AB" for t in tps[s]) + f" {max(tps['B']) / max(tps['A']):9.3f}")
EOF
if [ -n "${OUT:-}" ]; then cp "$WORK"/ab/*.jsonl "$OUT"/ 2>/dev/null || true; fi
