#!/usr/bin/env bash
# The GPU training benchmark in one go (issue: LoRA on the gpt-oss-20b shape on one GPU, against transformers +
# PEFT): build → the 20b-shaped random checkpoint (osstune-init-model --preset 20b, reused when present) → the
# taigi training pairs through osstune-prep → bench_train on
#   (a) 4 × 512 tokens, (b) 1 × 2048 tokens, loss at every position;  (c) real pairs packed to 4096 tokens per step,
#   loss on the answers only — each with LoRA r16/α32 on q,k,v,o ("attn") and on q,k,v,o + experts ("all"), and
#   with / without per-layer activation recomputation ("-rc"; "-ra": the attention blocks' only), and a-all, b-attn,
#   c-all planned for a 24 GiB and a
#   16 GiB card (--gpu-memory-limit; "-24g", "-16g": recomputation as osstune-train's auto decides under the limit)
# → the transformers + PEFT peer on (a), (b), (c) (the same packed steps for (c)), LoRA on q,k,v,o, and on (a), (c)
#   with the experts too (PEFT target_parameters, "-all") → a table with the verdicts, the per-op breakdown, the
#   roofline per op (achieved TFLOP/s and TB/s against PEAK_TFLOPS / PEAK_TBS) and the workspace by buffer.
# Before the training cases: bench_moe_gemm (the expert products and the expert LoRA of one projection, op by op).
#
# usage: benchmarks/run_gpu_bench.sh                 run everything (on the GPU machine)
#        benchmarks/run_gpu_bench.sh --bundle DIR    on a build machine: build, then copy the programs and the shared
#                                                    libraries they need (not glibc, not CUDA) into DIR, for a GPU
#                                                    machine without the build dependencies (see below)
# Environment: WORK (default /tmp/osstune-gpu-bench: model, data, logs), MODEL_DIR (default $WORK/gpt-oss-20b-random),
#   TAIGI_DIR (the taigi pairs; default shared/data/taigi, then ../shared/data/taigi; else the bundled sample),
#   BUILD (default build-gpu-bench), OT_CUDA_ARCHS (what it builds for, default 90a; 80 for the A100 / RTX 4090
#   code without wgmma, e.g. a second bundle run on the same H100 / H200), OSSTUNE_BUNDLE (a --bundle directory: use its programs, do not build),
#   STEPS / WARMUP (our timed / warm-up steps, default 8 / 2), PEER_STEPS / PEER_WARMUP (default 5 / 3),
#   CASES (the bench_train cases to run, e.g. "a-attn c-attn"; default all),
#   PEAK_TFLOPS (default 989, H100 SXM dense bf16), PEAK_TBS (default 3.35, H100 SXM; H200: 4.8), SKIP_PEER=1,
#   SKIP_OPS=1 (no bench_moe_gemm). JSON lines and logs go to $OUT when it is set.
# A GPU image without jansson / HDF5 development files cannot build osstune: make a bundle where it builds
# (same x86-64, CUDA 13), e.g. --bundle .carry/osstune (an ignored path), carry it, and set OSSTUNE_BUNDLE.
# The peer needs peft; if python3 cannot import it and a folder .whl holds its wheel, it is installed from there
# (pip, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/osstune-gpu-bench}
BUILD=${BUILD:-build-gpu-bench}
STEPS=${STEPS:-8}
WARMUP=${WARMUP:-2}
PEER_STEPS=${PEER_STEPS:-5}
PEER_WARMUP=${PEER_WARMUP:-3}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
PEAK_TBS=${PEAK_TBS:-3.35}
ARCHS=${OT_CUDA_ARCHS:-90a}
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
say() { printf '\n== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }
T_START=$(date +%s)

build() {
  say "build ($BUILD, archs $ARCHS)"
  if ! cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DOT_CUDA_ARCHS="$ARCHS" >"$WORK/cmake.log" 2>&1; then
    tail -20 "$WORK/cmake.log"
    echo "run_gpu_bench: cmake failed (log: $WORK/cmake.log). A GPU image without the build dependencies"
    echo "  (jansson, pcre2, protobuf-c, HDF5, MPI) cannot build osstune: run 'benchmarks/run_gpu_bench.sh --bundle DIR'"
    echo "  where it builds, carry DIR and set OSSTUNE_BUNDLE=DIR."
    exit 1
  fi
  grep -q "CUDA backend ON" "$WORK/cmake.log" || { echo "run_gpu_bench: cmake found no nvcc: no CUDA backend"; exit 1; }
  cmake --build "$BUILD" -j"$(nproc)" --target bench_train bench_moe_gemm test_train_cuda test_ops_cuda \
    test_decode_cuda \
    osstune-init-model osstune-prep osstune-train osstune-logits osstune-translate osstune-export \
    >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
  BIN=$ROOT/$BUILD/bin
}

mkdir -p "$WORK"
if [ "${1:-}" = "--bundle" ]; then
  [ -n "${2:-}" ] || { echo "usage: $0 --bundle DIR"; exit 2; }
  build
  DEST=$(mkdir -p "$2" && cd "$2" && pwd)
  mkdir -p "$DEST/bin" "$DEST/lib"
  cp "$BIN"/bench_train "$BIN"/bench_moe_gemm \
    "$BIN"/test_train_cuda "$BIN"/test_ops_cuda "$BIN"/test_decode_cuda "$BIN"/osstune-* "$DEST/bin/"
  # every shared library the programs load, except glibc's, the C++ runtime's and CUDA's (the GPU machine's own)
  for p in "$DEST"/bin/*; do ldd "$p"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|ld-linux[^/]*|libcuda|libcudart|libcublas[^/]*|libnvidia[^/]*|libnccl)\.so' |
    while read -r lib; do cp -L "$lib" "$DEST/lib/"; done
  du -sh "$DEST"
  echo "bundle ready: carry it; run this script with OSSTUNE_BUNDLE=$2, and the GPU tests with"
  echo "  LD_LIBRARY_PATH=$2/lib:/usr/local/cuda/lib64 tests/gpu/run_gpu_tests.sh --no-build --build-dir $2"
  echo "  (osstune-train starts MPI: without Open MPI on the GPU machine its end-to-end check cannot run)"
  exit 0
fi

# ---- build (or a carried bundle) ---------------------------------------------------------------------------------
if [ -n "${OSSTUNE_BUNDLE:-}" ]; then
  BIN=$(cd "$OSSTUNE_BUNDLE/bin" && pwd)
  # the bundle's libraries, then CUDA's own from this machine's toolkit
  export LD_LIBRARY_PATH="$(cd "$OSSTUNE_BUNDLE/lib" && pwd):/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  say "using the bundle $OSSTUNE_BUNDLE"
else
  build
fi
if ldd "$BIN/bench_train" | grep -q "not found"; then
  ldd "$BIN/bench_train" | grep "not found"
  echo "run_gpu_bench: bench_train cannot load the libraries above"
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "unknown GPU")

# ---- model and data ----------------------------------------------------------------------------------------------
MODEL=${MODEL_DIR:-$WORK/gpt-oss-20b-random}
if [ -f "$MODEL/config.json" ]; then
  say "reusing the model $MODEL"
else
  say "making the 20b-shaped random checkpoint in $MODEL (osstune-init-model --preset 20b --seed 0)"
  df -h "$(dirname "$MODEL")" | tail -1
  "$BIN/osstune-init-model" --preset 20b --seed 0 --out "$MODEL"
fi
TAIGI=${TAIGI_DIR:-}
for d in "$TAIGI" "$ROOT/shared/data/taigi" "$ROOT/../shared/data/taigi"; do
  if [ -n "$d" ] && [ -f "$d/train.tsv" ]; then TAIGI=$d; break; fi
done
if [ -f "${TAIGI:-}/train.tsv" ]; then
  PAIRS_TSV=$TAIGI/train.tsv
else
  PAIRS_TSV=$ROOT/data/sample/train.tsv
  echo "run_gpu_bench: the taigi pairs are not here (TAIGI_DIR, shared/data/taigi); using $PAIRS_TSV"
fi
PAIRS=$WORK/pairs_train.h5
say "tokenizing $PAIRS_TSV"
"$BIN/osstune-prep" --tokenizer "$ROOT/data/o200k_base.tiktoken" --in "$PAIRS_TSV" --out "$PAIRS" --quiet

# ---- osstune -----------------------------------------------------------------------------------------------------
RES=$WORK/results
rm -rf "$RES"
mkdir -p "$RES" "$RES/batches"
if [ "${SKIP_OPS:-0}" != 1 ] && [ -x "$BIN/bench_moe_gemm" ]; then
  say "the expert products and the expert LoRA op by op (bench_moe_gemm, 2048 tokens, LoRA r16)"
  "$BIN/bench_moe_gemm" --tokens 2048 --reps 10 --lora-r 16 2>&1 | tee "$RES/ops.log" ||
    echo "run_gpu_bench: bench_moe_gemm failed (see $RES/ops.log)"
fi
say "osstune (bench_train): $STEPS timed steps after $WARMUP warm-up steps, per-op breakdown over 2 more"
# (b) kept is expected just under 20 GiB, (b) recomputed well under; the peer uses gradient checkpointing throughout.
# A failing case stops bench_train; the peer and the table still run on what was measured.
set +e
ALL_CASES=(a-attn:rows=4:seq=512
           a-attn-rc:rows=4:seq=512:recompute=1
           a-all:rows=4:seq=512:targets=attn+experts
           b-attn-rc:rows=1:seq=2048:recompute=1
           b-attn-ra:rows=1:seq=2048:recompute=attention
           b-attn:rows=1:seq=2048
           b-all-rc:rows=1:seq=2048:targets=attn+experts:recompute=1
           c-attn:data="$PAIRS":tokens=4096
           c-attn-rc:data="$PAIRS":tokens=4096:recompute=1
           c-attn-ra:data="$PAIRS":tokens=4096:recompute=attention
           c-all:data="$PAIRS":tokens=4096:targets=attn+experts
           a-all-24g:rows=4:seq=512:targets=attn+experts:recompute=auto:mem=24GiB
           b-attn-24g:rows=1:seq=2048:recompute=auto:mem=24GiB
           c-all-24g:data="$PAIRS":tokens=4096:targets=attn+experts:recompute=auto:mem=24GiB
           a-all-16g:rows=4:seq=512:targets=attn+experts:recompute=auto:mem=16GiB
           b-attn-16g:rows=1:seq=2048:recompute=auto:mem=16GiB
           c-all-16g:data="$PAIRS":tokens=4096:targets=attn+experts:recompute=auto:mem=16GiB)
CASE_ARGS=()
for c in "${ALL_CASES[@]}"; do # CASES="a-attn c-attn ..." keeps only those (default: all)
  if [ -z "${CASES:-}" ] || [[ " $CASES " == *" ${c%%:*} "* ]]; then CASE_ARGS+=(--case "$c"); fi
done
"$BIN/bench_train" --model "$MODEL" --warmup "$WARMUP" --steps "$STEPS" --profile-steps 2 --peak-tflops "$PEAK_TFLOPS" \
  --peak-tbs "$PEAK_TBS" --json "$RES/osstune.jsonl" --dump-batches "$RES/batches" \
  "${CASE_ARGS[@]}" 2>&1 | tee "$RES/osstune.log"
bench_rc=${PIPESTATUS[0]}
set -e
[ "$bench_rc" = 0 ] || echo "run_gpu_bench: bench_train exited with status $bench_rc (see $RES/osstune.log)"

# ---- the peer ----------------------------------------------------------------------------------------------------
if [ "${SKIP_PEER:-0}" != 1 ]; then
  if ! python3 -c "import peft" 2>/dev/null && ls "$ROOT"/.whl/peft-*.whl >/dev/null 2>&1; then
    say "installing peft from .whl"
    python3 -m pip install -q --no-index --no-deps --target /tmp/osstune-site "$ROOT"/.whl/*.whl
    export PYTHONPATH=/tmp/osstune-site:${PYTHONPATH:-}
  fi
  say "the peer: transformers + PEFT ($PEER_STEPS timed steps after $PEER_WARMUP warm-up steps)"
  set +e
  PYTHONUNBUFFERED=1 python3 "$ROOT/benchmarks/peer_transformers.py" --model "$MODEL" --warmup "$PEER_WARMUP" \
    --steps "$PEER_STEPS" --peak-tflops "$PEAK_TFLOPS" --json "$RES/peer.jsonl" \
    --case a:rows=4:seq=512 --case b:rows=1:seq=2048 --case c:batches="$RES/batches/c-attn.batches" \
    --case a-all:rows=4:seq=512:targets=all --case c-all:batches="$RES/batches/c-all.batches":targets=all \
    2>&1 | grep -v "Loading weights" | tee "$RES/peer.log"
  peer_rc=${PIPESTATUS[0]}
  set -e
  [ "$peer_rc" = 0 ] || echo "run_gpu_bench: the peer exited with status $peer_rc (3 = missing torch/transformers/peft)"
fi

# ---- the table ---------------------------------------------------------------------------------------------------
say "results on $CARD ($(date -u +%Y-%m-%d)), total $(( $(date +%s) - T_START )) s"
CARD="$CARD" DATE="$(date -u +%Y-%m-%d)" python3 - "$RES/osstune.jsonl" "$RES/peer.jsonl" <<'EOF'
import json, os, sys
def load(p):
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
ours, peer = load(sys.argv[1]), {r["case"]: r for r in load(sys.argv[2])}
def peer_of(r):
    """The peer row of the same shape and LoRA targets: a-attn*, a-attn-rc -> a; a-all* -> a-all."""
    shape = r["case"].split("-")[0]
    return peer.get(shape + "-all") if "experts" in r["lora_targets"] else peer.get(shape)
print(f"{'case':<11} {'LoRA':<13} {'tok/step':>8} {'ms/step':>8} {'tokens/s':>9} {'MFU':>6} {'peak GiB':>8} "
      f"{'peer tok/s':>10} {'peer GiB':>8} {'speedup':>7}")
for r in ours:
    p = peer_of(r)
    sp = r["tokens_per_s"] / p["tokens_per_s"] if p else None
    print(f"{r['case']:<11} {r['lora_targets']:<13} {r['tokens_per_step']:8.0f} {r['step_ms_median']:8.1f} "
          f"{r['tokens_per_s']:9.0f} {100 * r['mfu']:5.1f}% {r['peak_gpu_gib']:8.2f} "
          f"{(p['tokens_per_s'] if p else float('nan')):10.0f} {(p.get('peak_gpu_gib', float('nan')) if p else float('nan')):8.2f} "
          f"{(f'{sp:6.2f}x' if sp else '   n/a'):>7}")
print("\nper-op time per step (ms), from the breakdown steps:")
for r in ours:
    b = r["breakdown_ms"]; tot = sum(b.values()) or 1
    print(f"  {r['case']:<11} " + ", ".join(f"{k} {v:.1f} ({100 * v / tot:.0f}%)" for k, v in b.items() if v > 0))
print("\nroofline per op (achieved rate and share of the card's peak; the nearer roof bounds it):")
for r in ours:
    b, gf, gb = r["breakdown_ms"], r.get("work_gflop", {}), r.get("work_gbytes", {})
    cells = []
    for k, ms in b.items():
        if ms <= 0 or k not in gf:
            continue
        tf, tb = gf[k] / ms, gb[k] / ms  # GFLOP/ms = TFLOP/s, GB/ms = TB/s
        fc, fm = tf / r["peak_tflops"], tb / r["peak_tbs"]
        cells.append(f"{k} {tf:.0f} TFLOP/s ({100 * fc:.0f}%) {tb:.2f} TB/s ({100 * fm:.0f}%) "
                     f"{'compute' if fc >= fm else 'memory'}")
    if cells:
        print(f"  {r['case']:<11} " + "; ".join(cells))
print("\nworkspace by buffer (GiB, largest first):")
for r in ours:
    parts = r.get("workspace_parts_gib", {})
    if parts:
        print(f"  {r['case']:<11} " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
print("\nverdicts (>= 3x the peer with LoRA on q,k,v,o, >= 5x with the experts too; (b) peak <= 20 GiB; expert LoRA"
      " nearly free: -all >= 0.85x -attn; under a memory limit the peak stays below it):")
by_case = {r["case"]: r for r in ours}
for r in ours:
    p, want = peer_of(r), 5 if "experts" in r["lora_targets"] else 3
    limit = r.get("gpu_memory_limit_gib", 0)
    notes = []
    if p and not limit:
        sp = r["tokens_per_s"] / p["tokens_per_s"]
        notes.append(f"{sp:5.2f}x the peer ({r['tokens_per_s']:.0f} vs {p['tokens_per_s']:.0f} tokens/s): "
                     f"{'MET' if sp >= want else 'NOT MET'} (>= {want}x)")
    if r["case"] in ("b-attn", "b-attn-rc"):
        notes.append(f"peak {r['peak_gpu_gib']:.2f} GiB: {'MET' if r['peak_gpu_gib'] <= 20 else 'NOT MET'} (<= 20)")
    kept = by_case.get(r["case"][:-3]) if r["case"].endswith(("-rc", "-ra")) else None
    if kept and r["case"] in ("b-attn-ra", "b-attn-rc", "c-attn-ra", "c-attn-rc"):
        f, cap = r["tokens_per_s"] / kept["tokens_per_s"], 16 if r["case"].startswith("b") else 20
        notes.append(f"{r['peak_gpu_gib']:.2f} GiB at {f:.2f}x the kept-activation speed: "
                     f"{'MET' if r['peak_gpu_gib'] <= cap and f >= 0.95 else 'NOT MET'} (<= {cap} GiB at >= 0.95x)")
    attn = by_case.get(r["case"].replace("-all", "-attn", 1))
    if "experts" in r["lora_targets"] and attn is not r and attn:
        f = r["tokens_per_s"] / attn["tokens_per_s"]
        notes.append(f"{f:.2f}x {attn['case']}: {'MET' if f >= 0.85 else 'NOT MET'} (>= 0.85)")
    if limit:
        notes.append(f"under {limit:.0f} GiB (recompute {r['recompute']}): peak "
                     f"{r['peak_gpu_gib']:.2f} GiB: {'MET' if r['peak_gpu_gib'] <= limit else 'NOT MET'}")
    print(f"  {r['case']:<11} " + ("; ".join(notes) if notes else "no peer figure"))
print("  (peak GiB = device memory in use at the end of the case, CUDA context included, as nvidia-smi counts it;"
      " the recomputing rows (-rc) are the like-for-like match of the peer's gradient checkpointing)")
card, date = os.environ.get("CARD", "?"), os.environ.get("DATE", "?")
print("\nrows for benchmarks/RESULTS.md:")
print("| date | machine | command | figures |\n|---|---|---|---|")
for r in ours:
    p = peer_of(r)
    peer_txt = (f"; peer (transformers {p['transformers']} + peft {p['peft']}, {p['experts_implementation']}, "
                f"gradient checkpointing, LoRA {p['lora_targets']}): {p['tokens_per_s']:.0f} tokens/s, "
                f"{p.get('peak_gpu_gib', float('nan')):.1f} GiB") if p else ""
    print(f"| {date} | {card} | `benchmarks/run_gpu_bench.sh` (bench_train case {r['case']}: {r['tokens_per_step']:.0f} "
          f"tokens/step, LoRA r{r['lora_r']} {r['lora_targets']}"
          f"{'' if r['recompute'] in ('off', False) else ', recompute ' + str(r['recompute'])}"
          f"{(', --gpu-memory-limit %.0f GiB' % r['gpu_memory_limit_gib']) if r.get('gpu_memory_limit_gib') else ''}) | "
          f"**{r['tokens_per_s']:.0f} tokens/s**, {r['step_ms_median']:.1f} ms/step, peak {r['peak_gpu_gib']:.2f} GiB, "
          f"MFU {100 * r['mfu']:.1f}% of {r['peak_tflops']:.0f} TFLOP/s{peer_txt} |")
EOF
if [ -n "${OUT:-}" ]; then
  cp "$RES"/osstune.jsonl "$RES"/osstune.log "$RES"/ops.log "$OUT"/ 2>/dev/null || true
  cp "$RES"/peer.jsonl "$RES"/peer.log "$OUT"/ 2>/dev/null || true
  echo "JSON lines and logs copied to \$OUT"
fi
[ "$bench_rc" = 0 ] || exit 1
