#!/usr/bin/env bash
# Proof that the pipeline learns (docs/learning-proof.md): without pretrained gpt-oss weights, train a small
# gpt-oss-architecture model from scratch on the taigi corpus (osstune-train --full, every weight; all six
# directions: Mandarin <-> Taiwanese in Han characters and in Tâi-lô, Han <-> Tâi-lô), then a LoRA for zh→nan, and
# score both on the dev split against the copy-the-source baseline, per direction and per source.
# With BASE_MODEL=DIR (a gpt-oss checkpoint, e.g. gpt-oss-20b) stages 1 and 3 are skipped: the LoRA is trained on
# that model (quickstart.sh uses this).
#
# Stages (each prints what it did; a finished stage is skipped when the script runs again with the same WORK):
#   1 model   osstune-init-model: random bf16 (dense-expert) model, real 201,088-token vocabulary
#   2 data    osstune-prep: train (DIRECTIONS), train for the LoRA (LORA_DIRECTIONS), dev (DIRECTIONS, for eval
#             loss), and the evaluation subset: the first EVAL_PER_SOURCE dev rows of each source
#   3 full    osstune-train --full for FULL_STEPS steps (stopped by SIGTERM after FULL_SECONDS at the latest: it
#             checkpoints and the script goes on from that checkpoint). FULL_STEPS=auto (the default): a 40-step
#             calibration run measures the seconds per step (steps 11-40, after the warm-up) and FULL_STEPS is set so
#             the run takes FULL_TARGET_SECONDS, so the learning-rate schedule ends when the time does
#   4 lora    osstune-train (LoRA, LORA_DIRECTIONS samples) on the full model's directory, LORA_STEPS / LORA_SECONDS
#   5 eval    osstune-translate on the subset in JOBS parallel shards: the full model in each of EVAL_DIRECTIONS,
#             full + LoRA in each of them the LoRA was trained for; then scored with --ref (chrF / BLEU / the copy
#             baseline, overall and per source)
#   5b sampling (only with SAMPLING_COMPARE=1) the same dev rows decoded with gpt-oss's recommended sampling
#             (temperature 1, top_p 1; openai/gpt-oss README) for each seed of SAMPLING_SEEDS, for full + LoRA zh2nan
#             and full nan2zh, and their chrF next to the greedy chrF of stage 5: the measurement that decides the
#             exported Modelfile's sampling parameters (docs/export.md)
#   6 plot    loss_curves.png from both runs' metrics.jsonl (matplotlib; skipped with a message without it)
#   7 summary one table; WORK/result.env names the model, the adapter and the corpus (for quickstart.sh)
#
# usage: benchmarks/learning_proof.sh
# Environment:
#   WORK                  default /tmp/osstune-learning-proof
#   OSSTUNE_BUNDLE        a bundle dir with bin/ and lib/; else BIN, default build/bin
#   TAIGI_DIR             the corpus (train.tsv, dev.tsv); default data/taigi (tools/build-corpus.py's output), else
#                         shared/data/taigi or ../shared/data/taigi
#   BASE_MODEL            a checkpoint to put the LoRA on (default: train one from scratch)
#   DIRECTIONS            osstune-prep --directions of the training and dev data (default all)
#   LORA_DIRECTIONS       the LoRA's training data (default zh2nan)
#   EVAL_DIRECTIONS       space-separated (default every direction of DIRECTIONS)
#   BACKEND               cuda|cpu (default cuda)
#   model shape           HIDDEN LAYERS HEADS KV_HEADS HEAD_DIM EXPERTS TOPK INTER (default 384 6 6 2 64 8 2 384)
#   full run              FULL_STEPS FULL_TARGET_SECONDS FULL_SECONDS FULL_LR FULL_BETA2 ROWS SEQ
#                         (default auto 270 330 6e-4 0.95 16 512)
#   LoRA run              LORA_STEPS LORA_SECONDS LORA_LR (default 300 60 1e-3; LORA_STEPS=auto: calibrated to
#                         LORA_TARGET_SECONDS, default 50)
#   DECODE_BACKEND        default: BACKEND
#   EVAL_PER_SOURCE       0 = every dev row; default 0 when decoding on the GPU, 100 on the CPU
#   JOBS                  parallel translate processes: 1 on the GPU, nproc on the CPU
#   MAX_NEW               default 96
#   TRAIN_LIMIT           use only the first N training pairs; default all: for a quick CPU smoke test
#   SAMPLING_COMPARE      1: run stage 5b (default 0); SAMPLING_SEEDS (default "1 2 3")
# The greedy-vs-sampling measurement alone, after a finished run with the same WORK (stages 1-5 are then skipped):
#   SAMPLING_COMPARE=1 benchmarks/learning_proof.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/osstune-learning-proof}
BACKEND=${BACKEND:-cuda}
HIDDEN=${HIDDEN:-384} LAYERS=${LAYERS:-6} HEADS=${HEADS:-6} KV_HEADS=${KV_HEADS:-2} HEAD_DIM=${HEAD_DIM:-64}
EXPERTS=${EXPERTS:-8} TOPK=${TOPK:-2} INTER=${INTER:-384}
FULL_STEPS=${FULL_STEPS:-auto} FULL_TARGET_SECONDS=${FULL_TARGET_SECONDS:-270} FULL_SECONDS=${FULL_SECONDS:-330}
FULL_LR=${FULL_LR:-6e-4} FULL_BETA2=${FULL_BETA2:-0.95}
ROWS=${ROWS:-16} SEQ=${SEQ:-512}
LORA_STEPS=${LORA_STEPS:-300} LORA_SECONDS=${LORA_SECONDS:-60} LORA_LR=${LORA_LR:-1e-3}
LORA_TARGET_SECONDS=${LORA_TARGET_SECONDS:-50}
MAX_NEW=${MAX_NEW:-96} TRAIN_LIMIT=${TRAIN_LIMIT:-0} BASE_MODEL=${BASE_MODEL:-}
DIRECTIONS=${DIRECTIONS:-all} LORA_DIRECTIONS=${LORA_DIRECTIONS:-zh2nan}
# The directions a --directions value names, space-separated (the table of formats/directions.c).
direction_list() {
  case $1 in
  all) echo "zh2nan nan2zh zh2tl tl2zh nan2tl tl2nan" ;;
  both) echo "zh2nan nan2zh" ;;
  *) echo "$1" | tr ',' ' ' ;;
  esac
}
EVAL_DIRECTIONS=${EVAL_DIRECTIONS:-$(direction_list "$DIRECTIONS")}
SAMPLING_COMPARE=${SAMPLING_COMPARE:-0} SAMPLING_SEEDS=${SAMPLING_SEEDS:-1 2 3}
TOK=$ROOT/data/o200k_base.tiktoken
# ---- THE decode backend (stage 5): the one place it is chosen. On the GPU one batched process decodes the whole
# dev split; on the CPU the evaluation subset is cut into JOBS shards translated in parallel.
DECODE_BACKEND=${DECODE_BACKEND:-$BACKEND}
if [ "$DECODE_BACKEND" = cuda ]; then
  EVAL_PER_SOURCE=${EVAL_PER_SOURCE:-0} JOBS=${JOBS:-1}
else
  EVAL_PER_SOURCE=${EVAL_PER_SOURCE:-100} JOBS=${JOBS:-$(nproc)}
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T0=$(date +%s)
say() { printf '\n== %s (%s, +%ds)\n' "$*" "$(date +%H:%M:%S)" $(($(date +%s) - T0)); }
die() { echo "learning_proof: $*" >&2; exit 1; }

if [ -n "${OSSTUNE_BUNDLE:-}" ]; then
  BIN=$(cd "$OSSTUNE_BUNDLE/bin" && pwd) || die "OSSTUNE_BUNDLE=$OSSTUNE_BUNDLE has no bin/"
  export LD_LIBRARY_PATH="$(cd "$OSSTUNE_BUNDLE/lib" && pwd):/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
else
  BIN=${BIN:-$ROOT/build/bin}
fi
for p in osstune-init-model osstune-prep osstune-train osstune-translate; do
  [ -x "$BIN/$p" ] || die "$BIN/$p is missing (build it, or set OSSTUNE_BUNDLE / BIN)"
done
TAIGI=${TAIGI_DIR:-}
[ -z "$TAIGI" ] || [ -f "$TAIGI/train.tsv" ] || die "TAIGI_DIR=$TAIGI has no train.tsv"
for d in "$TAIGI" "$ROOT/data/taigi" "$ROOT/shared/data/taigi" "$ROOT/../shared/data/taigi"; do
  if [ -n "$d" ] && [ -f "$d/train.tsv" ]; then TAIGI=$d; break; fi
done
[ -f "${TAIGI:-}/train.tsv" ] || die "the taigi corpus is not found (build it with tools/build-corpus.py --out data/taigi, or set TAIGI_DIR to the folder with train.tsv, dev.tsv)"
[ -z "$BASE_MODEL" ] || [ -f "$BASE_MODEL/config.json" ] || die "BASE_MODEL=$BASE_MODEL has no config.json"
mkdir -p "$WORK"
echo "learning_proof: WORK=$WORK BIN=$BIN TAIGI=$TAIGI BACKEND=$BACKEND (training) DECODE_BACKEND=$DECODE_BACKEND"
echo "learning_proof: directions $DIRECTIONS (LoRA: $LORA_DIRECTIONS; scored: $EVAL_DIRECTIONS)${BASE_MODEL:+; LoRA on $BASE_MODEL}"

# ---- 1 model --------------------------------------------------------------------------------------------------------
MODEL=$WORK/model-init
if [ -n "$BASE_MODEL" ]; then
  say "1 model: skipped, the LoRA goes on BASE_MODEL=$BASE_MODEL"
else
say "1 model: random bf16 gpt-oss, hidden $HIDDEN, $LAYERS layers, $EXPERTS experts top-$TOPK, vocabulary 201,088"
if [ ! -f "$MODEL/config.json" ]; then
  "$BIN/osstune-init-model" --preset tiny --seed 1 --dense-experts --out "$MODEL" \
    --set hidden_size="$HIDDEN" --set num_hidden_layers="$LAYERS" --set num_attention_heads="$HEADS" \
    --set num_key_value_heads="$KV_HEADS" --set head_dim="$HEAD_DIM" --set num_local_experts="$EXPERTS" \
    --set num_experts_per_tok="$TOPK" --set intermediate_size="$INTER" --set sliding_window=128 ||
    die "osstune-init-model failed"
fi
du -sh "$MODEL"
fi

# ---- 2 data ---------------------------------------------------------------------------------------------------------
say "2 data: osstune-prep (train $DIRECTIONS, train $LORA_DIRECTIONS for the LoRA, dev $DIRECTIONS) and the evaluation subset"
TRAIN_TSV=$TAIGI/train.tsv
if [ "$TRAIN_LIMIT" -gt 0 ]; then
  head -n $((TRAIN_LIMIT + 1)) "$TAIGI/train.tsv" >"$WORK/train_limited.tsv"
  TRAIN_TSV=$WORK/train_limited.tsv
fi
prep() { # prep OUT.h5 IN.tsv DIRECTIONS
  [ -f "$1" ] && return 0
  "$BIN/osstune-prep" --tokenizer "$TOK" --in "$2" --out "$1" --directions "$3" --skip-bad --quiet ||
    die "osstune-prep $2 failed"
}
prep "$WORK/train.h5" "$TRAIN_TSV" "$DIRECTIONS"
LORA_DATA=$WORK/train_lora.h5
if [ "$LORA_DIRECTIONS" = "$DIRECTIONS" ]; then LORA_DATA=$WORK/train.h5; else prep "$LORA_DATA" "$TRAIN_TSV" "$LORA_DIRECTIONS"; fi
prep "$WORK/dev.h5" "$TAIGI/dev.tsv" "$DIRECTIONS"
# The first EVAL_PER_SOURCE rows of each source (0: all), in file order (the same rows on every run).
awk -F'\t' -v n="$EVAL_PER_SOURCE" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "source") s = i; print; next }
  { if (n == 0 || seen[$s]++ < n) print }' "$TAIGI/dev.tsv" >"$WORK/dev_eval.tsv"
echo "evaluation subset: $(($(wc -l <"$WORK/dev_eval.tsv") - 1)) dev rows:" \
  "$(tail -n +2 "$WORK/dev_eval.tsv" | cut -f3 | sort | uniq -c | tr '\n' ' ')"

# ---- 3 full ---------------------------------------------------------------------------------------------------------
# A run stopped by the time limit (SIGTERM → checkpoint, exit 75) is used as it stands: its latest checkpoint.
train_stage() { # train_stage NAME SECONDS RUN_DIR args...
  local name=$1 secs=$2 dir=$3
  shift 3
  if [ -f "$dir/DONE" ]; then echo "$name: already done ($dir)"; return 0; fi
  timeout --signal=TERM --kill-after=120 "$secs" "$BIN/osstune-train" --run-dir "$dir" "$@" 2>&1 | tee -a "$dir.log" |
    grep --line-buffered -E "step [0-9]+/[0-9]+ \| (loss|validation)|checkpoint|osstune-train|error|rror"
  local st=${PIPESTATUS[0]}
  case $st in
  0) echo "$name: finished" ;;
  75 | 124) echo "$name: stopped by the time limit (${secs}s) after checkpointing; going on from its latest checkpoint" ;;
  *) die "$name: osstune-train exited with $st (log: $dir.log)" ;;
  esac
  [ -f "$dir/ckpt/latest" ] || die "$name: no checkpoint was written (log: $dir.log)"
  touch "$dir/DONE"
}
# Calibration: 40 steps with the real options (its own run directory, thrown away), then the seconds per step
# between steps 10 and 40 from metrics.jsonl (elapsed_s), which leaves out the start-up and the first steps; writes
# to WORK/NAME_calibration/steps the number of steps that fill TARGET seconds (5 % kept for validation and
# checkpoints), so that the learning-rate schedule ends when the time does.
calibrate() { # calibrate NAME TARGET_SECONDS osstune-train-args...
  local name=$1 target=$2 cal=$WORK/$1_calibration
  shift 2
  [ -f "$cal/steps" ] && return 0
  say "$name: calibration (40 steps) to size the run to ${target}s"
  rm -rf "$cal" && mkdir -p "$cal"
  "$BIN/osstune-train" --run-dir "$cal/run" "$@" --steps 40 --log-every 10 >"$cal/log" 2>&1 ||
    die "the $name calibration run failed (log: $cal/log)"
  python3 - "$cal/run/metrics.jsonl" "$target" >"$cal/steps.tmp" <<'PY' || die "$name calibration: no timing"
import json, sys
el = {r["step"]: r["elapsed_s"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r}
per_step = (el[40] - el[10]) / 30
tps = [r["tokens_per_s"] for r in map(json.loads, open(sys.argv[1])) if r.get("step") == 40 and "loss" in r][0]
print(max(20, int(float(sys.argv[2]) * 0.95 / per_step)))
print(f"calibration: {per_step * 1000:.1f} ms per step, {tps:.0f} tokens/s", file=sys.stderr)
PY
  mv "$cal/steps.tmp" "$cal/steps"
  rm -rf "$cal/run"
  echo "calibration: $(head -1 "$cal/steps") $name steps for ${target}s ($(grep -h '^step 40/' "$cal/log" || true))"
}

FULL=$WORK/full
if [ -n "$BASE_MODEL" ]; then
  say "3 full: skipped (BASE_MODEL)"
  FULL_MODEL=$(cd "$BASE_MODEL" && pwd)
else
# The options the calibration and the run share (the run adds its length, schedule and validation).
FULL_ARGS=(--full --backend "$BACKEND" --model "$MODEL" --data "$WORK/train.h5" --rows-per-step "$ROWS" --seq-len "$SEQ"
  --lr "$FULL_LR" --beta2 "$FULL_BETA2" --weight-decay 0.1 --seed 1)
if [ "$FULL_STEPS" = auto ]; then
  calibrate full "$FULL_TARGET_SECONDS" "${FULL_ARGS[@]}"
  FULL_STEPS=$(head -1 "$WORK/full_calibration/steps")
fi
say "3 full: osstune-train --full ($FULL_STEPS steps, at most ${FULL_SECONDS}s, lr $FULL_LR, beta2 $FULL_BETA2, $ROWS x $SEQ tokens)"
mkdir -p "$WORK"
train_stage full "$FULL_SECONDS" "$FULL" "${FULL_ARGS[@]}" --steps "$FULL_STEPS" \
  --min-lr "$(python3 -c "print($FULL_LR/10)")" --warmup $((FULL_STEPS / 20)) --eval-data "$WORK/dev.h5" \
  --eval-samples 400 --eval-every $((FULL_STEPS / 10 > 0 ? FULL_STEPS / 10 : 1)) --log-every 20
FULL_MODEL=$FULL/ckpt/$(cat "$FULL/ckpt/latest")/model
[ -f "$FULL_MODEL/model.safetensors" ] || die "the full run's checkpoint has no model directory ($FULL_MODEL)"
echo "full model: $FULL_MODEL"
fi

# ---- 4 lora ---------------------------------------------------------------------------------------------------------
LORA=$WORK/lora_$(echo "$LORA_DIRECTIONS" | tr ',' '_')
LORA_ARGS=(--backend "$BACKEND" --model "$FULL_MODEL" --data "$LORA_DATA" --rows-per-step "$ROWS" --seq-len "$SEQ"
  --lr "$LORA_LR" --lora-r 16 --lora-alpha 32 --lora-targets all --seed 2)
if [ "$LORA_STEPS" = auto ]; then
  calibrate lora "$LORA_TARGET_SECONDS" "${LORA_ARGS[@]}"
  LORA_STEPS=$(head -1 "$WORK/lora_calibration/steps")
fi
say "4 lora: $LORA_DIRECTIONS LoRA (r 16 on attention and experts) on the $([ -n "$BASE_MODEL" ] && echo base || echo full) model, $LORA_STEPS steps, at most ${LORA_SECONDS}s"
train_stage lora "$LORA_SECONDS" "$LORA" "${LORA_ARGS[@]}" --steps "$LORA_STEPS" --warmup $((LORA_STEPS / 20)) \
  --log-every 20
ADAPTER=$LORA/ckpt/$(cat "$LORA/ckpt/latest")
echo "adapter: $ADAPTER"

# ---- 5 eval ---------------------------------------------------------------------------------------------------------
# osstune-translate on DECODE_BACKEND (chosen at the top): the subset is cut into JOBS shards translated in parallel, then the joined
# outputs are scored in one go (--hyp), so the scores are corpus-level over the whole subset.
translate() { # translate NAME DIRECTION [--adapter DIR]
  local name=$1 dir=$2
  shift 2
  local out=$WORK/eval_$name
  if [ -f "$out.json" ]; then echo "$name: already scored"; return 0; fi
  mkdir -p "$out.shards"
  tail -n +2 "$WORK/dev_eval.tsv" >"$out.body"
  local n
  n=$(wc -l <"$out.body")
  split -n l/"$JOBS" -d -a 3 "$out.body" "$out.shards/part."
  local pids=()
  for part in "$out.shards"/part.*; do
    { head -n 1 "$WORK/dev_eval.tsv"; cat "$part"; } >"$part.tsv"
    "$BIN/osstune-translate" --model "$FULL_MODEL" "$@" --tokenizer "$TOK" --direction "$dir" --backend "$DECODE_BACKEND" \
      --in "$part.tsv" --max-new-tokens "$MAX_NEW" >"$part.out" 2>"$part.log" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "$name: a translate shard failed (logs: $out.shards/*.log)"; done
  cat "$out.shards"/part.???.out >"$out.hyp"
  [ "$(wc -l <"$out.hyp")" -eq "$n" ] || die "$name: $(wc -l <"$out.hyp") outputs for $n inputs"
  "$BIN/osstune-translate" --direction "$dir" --ref "$WORK/dev_eval.tsv" --hyp "$out.hyp" | tail -n 1 >"$out.json" ||
    die "$name: scoring failed"
  echo "$name: $(head -c 300 "$out.json")"
  python3 benchmarks/show_translations.py "$WORK/dev_eval.tsv" "$out.hyp" "$dir" --rows 5 --compact
}
say "5 eval: osstune-translate on $(($(wc -l <"$WORK/dev_eval.tsv") - 1)) dev rows, $JOBS shards in parallel"
EVALS=()
for d in $EVAL_DIRECTIONS; do translate "full_$d" "$d" && EVALS+=("full_$d"); done
for d in $EVAL_DIRECTIONS; do
  case ",$(direction_list "$LORA_DIRECTIONS" | tr ' ' ','),"  in *",$d,"*) translate "lora_$d" "$d" --adapter "$ADAPTER" && EVALS+=("lora_$d") ;; esac
done

# ---- 5b sampling ----------------------------------------------------------------------------------------------------
# Greedy (stage 5) against temperature 1 / top_p 1, each seed a separate run: osstune-translate seeds sentence i's
# random stream from (seed, i), so a seed's outputs do not depend on the shards.
if [ "$SAMPLING_COMPARE" = 1 ]; then
  say "5b sampling: greedy vs temperature 1 / top_p 1 (seeds $SAMPLING_SEEDS) on the same dev rows"
  for seed in $SAMPLING_SEEDS; do
    translate "lora_zh2nan_t1_s$seed" zh2nan --adapter "$ADAPTER" --temperature 1 --top-p 1 --seed "$seed"
    translate "full_nan2zh_t1_s$seed" nan2zh --temperature 1 --top-p 1 --seed "$seed"
  done
  python3 - "$WORK" $SAMPLING_SEEDS <<'PY' | tee "$WORK/sampling_compare.txt"
import json, os, statistics, sys
work, seeds = sys.argv[1], sys.argv[2:]
chrf = lambda name: json.load(open(os.path.join(work, f"eval_{name}.json")))["chrf"]
print(f"{'system':22s} {'direction':9s} {'greedy chrF':>11s} {'T=1 top_p=1 chrF (per seed)':>30s} {'mean':>6s} {'Δ':>6s}")
for name, system, direction in [("lora_zh2nan", "full + LoRA zh→nan", "zh2nan"),
                                ("full_nan2zh", "full (from scratch)", "nan2zh")]:
    greedy = chrf(name)
    sampled = [chrf(f"{name}_t1_s{s}") for s in seeds]
    mean = statistics.mean(sampled)
    print(f"{system:22s} {direction:9s} {greedy:11.1f} {' '.join(f'{x:.1f}' for x in sampled):>30s} {mean:6.1f} "
          f"{mean - greedy:+6.1f}")
PY
fi

# ---- 6 plot ---------------------------------------------------------------------------------------------------------
say "6 plot: $WORK/loss_curves.png"
python3 - "$FULL/metrics.jsonl" "$LORA/metrics.jsonl" "$WORK/loss_curves.png" <<'PY' || echo "plot: skipped (see the message above)"
import json, sys
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot: matplotlib is not installed")
def read(path):
    train, ev = [], []
    for line in open(path):
        r = json.loads(line)
        if "loss" in r: train.append((r["step"], r["loss"]))
        if "eval_loss" in r: ev.append((r["step"], r["eval_loss"]))
    return train, ev
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for ax, path, title in zip(axes, sys.argv[1:3], ["--full from scratch", "LoRA on the full model"]):
    try:
        train, ev = read(path)
    except FileNotFoundError:
        continue
    if train: ax.plot(*zip(*train), lw=0.8, label="train loss (answer tokens)")
    if ev: ax.plot(*zip(*ev), "o-", label="dev loss")
    ax.set_xlabel("step"); ax.set_ylabel("cross-entropy (nats)"); ax.set_title(title); ax.grid(alpha=0.3); ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[3], dpi=120)
print("plot: written", sys.argv[3])
PY

# ---- 7 summary ------------------------------------------------------------------------------------------------------
say "7 summary"
python3 - "$WORK" "$FULL/metrics.jsonl" "$LORA/metrics.jsonl" "${EVALS[@]}" <<'PY'
import json, os, sys
work = sys.argv[1]
def last(path, key):
    v = None
    if not os.path.exists(path):
        return None
    for line in open(path):
        r = json.loads(line)
        if key in r: v = (r["step"], r[key])
    return v
for name, path in [("full", sys.argv[2]), ("lora", sys.argv[3])]:
    if not os.path.exists(path):
        continue
    t, e = last(path, "loss"), last(path, "eval_loss")
    print(f"{name:5s} run: {t[0] if t else '?'} steps, last train loss {t[1]:.3f}" if t else f"{name}: no metrics",
          f"| dev loss {e[1]:.3f} at step {e[0]}" if e else "")
print()
print(f"{'system':22s} {'direction':9s} {'source':15s} {'n':>5s} {'chrF':>6s} {'BLEU':>6s} {'copy chrF':>9s} {'Δ chrF':>7s}")
for name in sys.argv[4:]:
    system = "model" if name.startswith("full_") else "model + LoRA"
    p = os.path.join(work, f"eval_{name}.json")
    if not os.path.exists(p):
        print(f"{system:22s} (not scored)"); continue
    r = json.load(open(p))
    rows = [("all", r)] + sorted(r.get("by_source", {}).items())
    for src, s in rows:
        print(f"{system:22s} {r['direction']:9s} {src:15s} {s['count']:5d} {s['chrf']:6.1f} {s['bleu']:6.1f} "
              f"{s['copy_chrf']:9.1f} {s['chrf'] - s['copy_chrf']:+7.1f}")
PY
cat >"$WORK/result.env" <<EOF
FULL_MODEL='$FULL_MODEL'
ADAPTER='$ADAPTER'
TAIGI='$TAIGI'
DIRECTIONS='$DIRECTIONS'
LORA_DIRECTIONS='$LORA_DIRECTIONS'
EOF
echo "learning_proof: done in $(($(date +%s) - T0)) s; outputs in $WORK (loss_curves.png, eval_*.json, eval_*.hyp, result.env)"
