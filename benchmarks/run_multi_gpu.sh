#!/usr/bin/env bash
# Data parallel osstune-train on several GPUs of one node against one GPU, on the gpt-oss-20b shape
# (osstune-init-model --preset 20b, reused when present). Prints three verdicts:
#   1. loss curve: N GPUs (gradients summed by NCCL on the device), with every GPU holding the whole model and with
#      the base weights sharded over the GPUs, against 1 GPU on the same global batch, every step within LOSS_RTOL
#      (default 1e-2 relative: bf16 activations, and the rows of a step split differently);
#   2. scaling: tokens/s of N GPUs against 1 GPU at the same per-GPU batch (want >= 0.9·N, i.e. 1.8 for 2 GPUs),
#      over the steps after the first two, whole model on every GPU; the sharded run and the ordered host sum
#      (--grad-reduce ordered; skipped with ORDERED=0) are timed too;
#   3. memory: per-GPU base-weight bytes of the sharded run (metrics.jsonl) against the 1-GPU figure (want <= 55 %);
#   4. small cards (SMALL_CARD, default 8GiB; SMALL_CARD=0 skips): N GPUs, base sharded, one row of SMALL_SEQ
#      (default 2048) tokens per GPU, each GPU planning under --gpu-memory-limit SMALL_CARD: the run must finish
#      with the largest GPU memory any rank had in use (metrics.jsonl gpu_peak_mib) <= SMALL_PEAK (default 7.5 GiB);
#      tokens/s against the same run without the limit.
#
# usage: benchmarks/run_multi_gpu.sh     (on the GPU machine; NGPU=2 by default)
# Environment: WORK (default /tmp/osstune-multi-gpu), MODEL_DIR (default $WORK/gpt-oss-20b-random), OSSTUNE_BUNDLE
#   (a folder from benchmarks/run_gpu_bench.sh --bundle: its bin/ and lib/), BIN (else build-gpu-bench/bin),
#   NGPU, STEPS (default 12), SEQ (tokens per row, default 1024), ROWS (rows per GPU per step, default 4),
#   MPIRUN (default mpirun), PAIRS_TSV (default data/sample/train.tsv), LOSS_RTOL, ORDERED (default 1), SMALL_CARD,
#   SMALL_SEQ, SMALL_PEAK (GiB). Logs and JSON under $OUT if set. Extra NCCL settings pass through the environment,
#   e.g. NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 as a stand-in for PCIe cards without NVLink.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/osstune-multi-gpu}
NGPU=${NGPU:-2}
STEPS=${STEPS:-12}
SEQ=${SEQ:-1024}
ROWS=${ROWS:-4}
MPIRUN=${MPIRUN:-mpirun}
LOSS_RTOL=${LOSS_RTOL:-1e-2}
ORDERED=${ORDERED:-1}
SMALL_CARD=${SMALL_CARD:-8GiB}
SMALL_SEQ=${SMALL_SEQ:-2048}
SMALL_PEAK=${SMALL_PEAK:-7.5}
PAIRS_TSV=${PAIRS_TSV:-$ROOT/data/sample/train.tsv}
mkdir -p "$WORK"
if [ -n "${OSSTUNE_BUNDLE:-}" ]; then
  BIN=$(cd "$OSSTUNE_BUNDLE/bin" && pwd)
  export LD_LIBRARY_PATH="$(cd "$OSSTUNE_BUNDLE/lib" && pwd):/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
else
  BIN=${BIN:-$ROOT/build-gpu-bench/bin}
fi
[ -x "$BIN/osstune-train" ] || { echo "run_multi_gpu: no osstune-train in $BIN (build with CUDA, or set OSSTUNE_BUNDLE)"; exit 1; }
command -v "$MPIRUN" >/dev/null || { echo "run_multi_gpu: '$MPIRUN' not found: osstune-train needs Open MPI's mpirun (set MPIRUN)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader || true

MODEL=${MODEL_DIR:-$WORK/gpt-oss-20b-random}
[ -f "$MODEL/config.json" ] || "$BIN/osstune-init-model" --preset 20b --seed 0 --out "$MODEL"
PAIRS=$WORK/pairs.h5
[ -f "$PAIRS" ] || "$BIN/osstune-prep" --tokenizer "$ROOT/data/o200k_base.tiktoken" --in "$PAIRS_TSV" --out "$PAIRS" --quiet
RES=${OUT:-$WORK/results}
mkdir -p "$RES"

run() { # run NAME NP ROWS_PER_STEP [extra args]
  local name=$1 np=$2 rows=$3
  shift 3
  rm -rf "$WORK/$name"
  echo "== $name: $np GPU(s), $rows rows x $SEQ tokens per step $*"
  "$MPIRUN" -np "$np" --bind-to none "$BIN/osstune-train" --backend cuda --model "$MODEL" --data "$PAIRS" \
    --run-dir "$WORK/$name" --steps "$STEPS" --seq-len "$SEQ" --rows-per-step "$rows" --lr 1e-4 --warmup 2 \
    --seed 1 --log-every 1 "$@" 2>&1 | tee "$RES/$name.log" | grep -E "base weights|step $STEPS/|error|FAIL" || true
  cp "$WORK/$name/metrics.jsonl" "$RES/$name.metrics.jsonl"
}
G=$((NGPU * ROWS))
run one-gpu-global 1 "$G"                                # 1 GPU, the global batch of the N-GPU run (loss reference)
run one-gpu 1 "$ROWS"                                    # 1 GPU, the per-GPU batch (throughput reference)
run n-gpu-nccl "$NGPU" "$G" --grad-reduce nccl --shard-base off  # N GPUs, whole model on each, NCCL on the device
run n-gpu-shard "$NGPU" "$G" --grad-reduce nccl --shard-base on   # N GPUs, base weights sharded over them
[ "$ORDERED" = 0 ] || run n-gpu-ordered "$NGPU" "$G" --grad-reduce ordered --shard-base off  # ordered host sum
if [ "$SMALL_CARD" != 0 ]; then # (a later --seq-len wins over run's)
  run n-gpu-long "$NGPU" "$NGPU" --shard-base on --seq-len "$SMALL_SEQ"
  run n-gpu-small-card "$NGPU" "$NGPU" --shard-base on --seq-len "$SMALL_SEQ" --gpu-memory-limit "$SMALL_CARD" || true
fi

python3 - "$RES" "$NGPU" "$LOSS_RTOL" "$ORDERED" "$SMALL_CARD" "$SMALL_PEAK" <<'EOF'
import json, os, sys
res, n, rtol, with_ordered = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] != "0"
small_card, small_peak = sys.argv[5], float(sys.argv[6])
def steps(name):
    return [json.loads(l) for l in open(f"{res}/{name}.metrics.jsonl") if '"loss"' in l]
def tps(rows):  # tokens per second after the first two steps (warm-up, cuBLAS plans, NCCL setup)
    a, b = rows[1], rows[-1]
    return (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"])
ref, nccl, shard, one = steps("one-gpu-global"), steps("n-gpu-nccl"), steps("n-gpu-shard"), steps("one-gpu")
ordered = steps("n-gpu-ordered") if with_ordered else nccl
def worst_of(run): return max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(run, ref))
worst, worst_s, worst_o = worst_of(nccl), worst_of(shard), worst_of(ordered)
print("\nstep  loss 1 GPU   loss %d GPUs (NCCL)  (sharded)  (ordered)" % n)
for x, y, z, w in zip(ref, nccl, shard, ordered):
    print(f"{x['step']:4d}  {x['loss']:.5f}     {y['loss']:.5f}            {z['loss']:.5f}    {w['loss'] if with_ordered else float('nan'):.5f}")
ok1 = max(worst, worst_s) <= rtol and len(nccl) == len(ref) == len(shard)
print(f"1. loss curve: worst relative difference {worst:.2e} (sharded: {worst_s:.2e}; ordered host sum: "
      f"{worst_o if with_ordered else float('nan'):.2e}), bound {rtol:g}: {'PASS' if ok1 else 'FAIL'}")
t1, tn, ts, to = tps(one), tps(nccl), tps(shard), tps(ordered)
ok2 = tn >= 0.9 * n * t1
print(f"2. scaling: 1 GPU {t1:.0f} tok/s, {n} GPUs {tn:.0f} tok/s (NCCL) = {tn / t1:.2f}x; sharded {ts:.0f} tok/s = "
      f"{ts / t1:.2f}x" + (f", ordered host sum {to:.0f} tok/s = {to / t1:.2f}x" if with_ordered else "") +
      f"; want >= {0.9 * n:.1f}x: {'PASS' if ok2 else 'FAIL'}")
b1, bn, br = ref[-1]["base_weight_bytes"], shard[-1]["base_weight_bytes"], nccl[-1]["base_weight_bytes"]
ok3 = bn <= 0.55 * b1
print(f"3. memory: base weights {bn / 2**30:.2f} GiB per GPU sharded over {n} GPUs (gather buffers "
      f"{shard[-1]['base_layer_buffer_bytes'] / 2**20:.0f} MiB), {br / 2**30:.2f} GiB unsharded, {b1 / 2**30:.2f} GiB "
      f"on 1 GPU = {100 * bn / b1:.1f} %; want <= 55 %: {'PASS' if ok3 else 'FAIL'}")
small = {}
if small_card != "0":
    long_, lim = steps("n-gpu-long"), (steps("n-gpu-small-card") if os.path.exists(f"{res}/n-gpu-small-card.metrics.jsonl") else [])
    done = len(lim) == len(long_) and len(lim) > 2
    peak = max((x.get("gpu_peak_mib", 0) for x in lim), default=0) / 1024
    ok4 = done and 0 < peak <= small_peak
    small = {"small_card": small_card, "small_card_peak_gib": peak, "small_card_finished": done,
             "tps_n_long": tps(long_) if len(long_) > 2 else None, "tps_n_small_card": tps(lim) if done else None}
    print(f"4. small cards: {n} GPUs under --gpu-memory-limit {small_card}, base sharded: "
          + (f"finished, largest GPU memory in use {peak:.2f} GiB (want <= {small_peak:g}), {tps(lim):.0f} tok/s "
             f"against {tps(long_):.0f} unlimited = {tps(lim) / tps(long_):.2f}x" if done else
             f"did not finish (see {res}/n-gpu-small-card.log)") + f": {'PASS' if ok4 else 'FAIL'}")
json.dump({**small, "loss_worst_rel": worst, "loss_worst_rel_sharded": worst_s,
           "loss_worst_rel_ordered": worst_o if with_ordered else None, "tps_1": t1, "tps_n_nccl": tn,
           "tps_n_sharded": ts, "tps_n_ordered": to if with_ordered else None, "base_bytes_1": b1,
           "base_bytes_n_sharded": bn, "base_bytes_n_unsharded": br, "ngpu": n},
          open(f"{res}/summary.json", "w"))
EOF
