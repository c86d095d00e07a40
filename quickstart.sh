#!/usr/bin/env bash
# The main job, from a fresh clone to a translator, on whatever this machine has (docs/guide.md tells the rest):
#
#   an NVIDIA GPU (nvidia-smi sees one; the build gets CUDA): trains a small gpt-oss-architecture model from scratch
#       on the largest corpus at hand (benchmarks/learning_proof.sh, sized by QUICKSTART_MINUTES), adds a LoRA,
#       exports it for Ollama / llama.cpp / transformers + PEFT, and translates held-out sentences both ways beside
#       their references, with chrF against the copy-the-source baseline;
#   a GPU and MODEL_DIR=<gpt-oss checkpoint> (config.json + model-*.safetensors, e.g. gpt-oss-20b): the same with a
#       LoRA on that model instead of a model trained from scratch;
#   CPU only: the pipeline demonstration on a tiny random model (prep, training on 2 MPI ranks, export,
#       translation); it says before it starts that a random model's output is not a translation.
# Every path ends with the commands to run the result in Ollama and llama.cpp.
#
# Environment:
#   QUICKSTART_DIR         where everything goes (default run/quickstart); a second run reuses finished stages
#   QUICKSTART_MINUTES     GPU: training time in minutes (default 5, the learning-proof recipe on an H100-class card),
#                          plus a calibration, the evaluation and the export
#   MODEL_DIR              a gpt-oss checkpoint to fine-tune with LoRA (GPU)
#   TAIGI_DIR              the corpus (train.tsv, dev.tsv); default data/taigi (made by tools/build-corpus.py), else
#                          what this repository ships: data/moe (every MOE dictionary row) + data/sample's iCorpus rows
#   QUICKSTART_DIRECTIONS  osstune-prep --directions (default all: Mandarin <-> Taiwanese Hokkien in Han characters
#                          and in Tâi-lô, Han characters <-> Tâi-lô)
#   QUICKSTART_EVAL_ROWS   GPU: held-out rows translated per source and direction (default 50)
#   QUICKSTART_PATH        auto (default), scratch, checkpoint or demo. scratch / checkpoint without a GPU need
#                          QUICKSTART_BACKEND=cpu: a slow smoke test of this script, with learning_proof.sh's size
#                          variables (HIDDEN, LAYERS, ...) for a tiny model
#   QUICKSTART_STEPS, QUICKSTART_RANKS   the CPU demonstration's LoRA steps (40) and MPI ranks (2)
#   OSSTUNE_BUNDLE         programs built on another machine (`benchmarks/run_gpu_bench.sh --bundle DIR` there: bin/ and
#                          the libraries in lib/), for a GPU node without compilers or package access: no install, no
#                          build
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
OUT=${QUICKSTART_DIR:-$ROOT/run/quickstart}
MINUTES=${QUICKSTART_MINUTES:-5}
MODEL_DIR=${MODEL_DIR:-}
DIRECTIONS=${QUICKSTART_DIRECTIONS:-all}
EVAL_ROWS=${QUICKSTART_EVAL_ROWS:-50}
PATH_KIND=${QUICKSTART_PATH:-auto}
BACKEND=${QUICKSTART_BACKEND:-cuda}
STEPS=${QUICKSTART_STEPS:-40}
RANKS=${QUICKSTART_RANKS:-2}
TOK=$ROOT/data/o200k_base.tiktoken
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi

STAGE=0 N_STAGES=0 STAGE_NAME="start"
say() { STAGE=$((STAGE + 1)) STAGE_NAME=$*; printf '\n\033[1m== %d/%d %s\033[0m (%s)\n' "$STAGE" "$N_STAGES" "$*" "$(date +%H:%M:%S)"; }
die() { printf '\nquickstart: error: %s\n' "$*" >&2; exit 1; }
trap 'status=$?; [ $status -eq 0 ] || printf "\nquickstart: FAILED in stage %d/%d (%s), exit status %d; the messages above say why. Running quickstart.sh again resumes.\n" "$STAGE" "$N_STAGES" "$STAGE_NAME" "$status" >&2' EXIT
case $MINUTES in '' | *[!0-9]*) die "QUICKSTART_MINUTES=$MINUTES is not a whole number of minutes" ;; esac
[ "$MINUTES" -ge 1 ] || die "QUICKSTART_MINUTES must be at least 1"

# ---- which path -----------------------------------------------------------------------------------------------------
gpu_visible() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }
if [ "$PATH_KIND" = auto ]; then
  if gpu_visible; then PATH_KIND=$([ -n "$MODEL_DIR" ] && echo checkpoint || echo scratch)
  elif [ -n "$MODEL_DIR" ]; then
    die "MODEL_DIR=$MODEL_DIR is set but no NVIDIA GPU is visible (nvidia-smi): a LoRA on a gpt-oss checkpoint needs a
GPU (one of 24 GB for gpt-oss-20b, see docs/guide.md). Unset MODEL_DIR for the CPU demonstration."
  else PATH_KIND=demo; fi
fi
case $PATH_KIND in
scratch | checkpoint) [ "$BACKEND" = cpu ] || gpu_visible || die "QUICKSTART_PATH=$PATH_KIND needs an NVIDIA GPU (or QUICKSTART_BACKEND=cpu for a smoke test)" ;;
demo) ;;
*) die "QUICKSTART_PATH=$PATH_KIND: use auto, scratch, checkpoint or demo" ;;
esac
if [ "$PATH_KIND" = checkpoint ]; then
  [ -n "$MODEL_DIR" ] || die "QUICKSTART_PATH=checkpoint needs MODEL_DIR=<a gpt-oss checkpoint directory>"
  [ -f "$MODEL_DIR/config.json" ] || die "MODEL_DIR=$MODEL_DIR has no config.json: it must be a gpt-oss checkpoint in the
Hugging Face layout (config.json, model-*.safetensors, model.safetensors.index.json; docs/guide.md says how to get one)"
  MODEL_DIR=$(cd "$MODEL_DIR" && pwd)
fi

echo "quickstart: $(case $PATH_KIND in
  scratch) echo "a GPU: training a small gpt-oss-architecture model from scratch for about $MINUTES min, then a LoRA" ;;
  checkpoint) echo "a GPU and MODEL_DIR: a LoRA on $MODEL_DIR for about $MINUTES min" ;;
  demo) echo "CPU only: the pipeline demonstration" ;; esac); everything goes to $OUT"
if [ "$PATH_KIND" = demo ]; then
  cat <<EOF

  This machine has no NVIDIA GPU, so quickstart runs the pipeline on a tiny RANDOM gpt-oss model (every stage for
  real: tokenizing, training on 2 MPI ranks, export, translation). A random model's output is NOT a translation:
  expect gibberish and a chrF far below copying the source. For a real translator:
    on a machine with an NVIDIA GPU:       bash quickstart.sh
        (trains a small model from scratch in about $MINUTES min and translates held-out sentences)
    with a gpt-oss checkpoint on a GPU:    MODEL_DIR=gpt-oss-20b bash quickstart.sh
        (docs/guide.md §2: which files, and how to download them)
EOF
fi
mkdir -p "$OUT"
[ "$PATH_KIND" = demo ] && N_STAGES=7 || N_STAGES=6
[ -z "${OSSTUNE_BUNDLE:-}" ] || N_STAGES=$((N_STAGES - 1))

# ---- dependencies and build -------------------------------------------------------------------------------------
if [ -n "${OSSTUNE_BUNDLE:-}" ]; then
  say "programs: the bundle $OSSTUNE_BUNDLE (built elsewhere; no install, no build)"
  [ -d "$OSSTUNE_BUNDLE/bin" ] && [ -d "$OSSTUNE_BUNDLE/lib" ] ||
    die "OSSTUNE_BUNDLE=$OSSTUNE_BUNDLE has no bin/ and lib/: make one with benchmarks/run_gpu_bench.sh --bundle DIR"
  BIN=$(cd "$OSSTUNE_BUNDLE/bin" && pwd)
  export LD_LIBRARY_PATH="$(cd "$OSSTUNE_BUNDLE/lib" && pwd):/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  for p in osstune-prep osstune-init-model osstune-train osstune-export osstune-translate; do
    [ -x "$BIN/$p" ] || die "$BIN/$p is missing from the bundle"
  done
  "$BIN/osstune-train" --help >/dev/null 2>&1 || die "$BIN/osstune-train does not start here (missing libraries?):
$("$BIN/osstune-train" --help 2>&1 | head -3)"
  echo "programs: $BIN"
else
  say "dependencies (tools/install-deps.sh)"
  bash tools/install-deps.sh

  say "build (build/)"
  CUDA_FLAG=OFF
  [ "$PATH_KIND" != demo ] && [ "$BACKEND" = cuda ] && CUDA_FLAG=ON
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DOT_WITH_CUDA=$CUDA_FLAG >"$OUT/cmake.log" 2>&1 ||
    { tail -20 "$OUT/cmake.log"; die "cmake failed (log: $OUT/cmake.log)"; }
  if [ "$CUDA_FLAG" = ON ] && ! grep -q "CUDA backend ON" "$OUT/cmake.log"; then
    die "a GPU is visible but the build has no CUDA backend: nvcc was not found (install the CUDA toolkit and put
nvcc on PATH, see docs/guide.md), or run QUICKSTART_PATH=demo bash quickstart.sh for the CPU demonstration"
  fi
  cmake --build build -j"$(nproc)" >"$OUT/build.log" 2>&1 ||
    { grep -E "error" "$OUT/build.log" | head -20; die "the build failed (log: $OUT/build.log)"; }
  grep -E "warning: " "$OUT/build.log" | head -5 || true
  BIN=$ROOT/build/bin
  echo "built: $(ls "$BIN" | grep -c '^osstune-') programs in $BIN (CUDA $CUDA_FLAG)"
fi

# ---- what both GPU paths share -------------------------------------------------------------------------------------
# The corpus: TAIGI_DIR, else data/taigi, else the rows this repository ships, assembled in OUT/corpus.
pick_corpus() {
  local d
  for d in "${TAIGI_DIR:-}" "$ROOT/data/taigi"; do
    if [ -n "$d" ] && [ -f "$d/train.tsv" ] && [ -f "$d/dev.tsv" ]; then
      CORPUS=$(cd "$d" && pwd)
      echo "corpus: $CORPUS (the full corpus)"
      return 0
    fi
  done
  [ -z "${TAIGI_DIR:-}" ] || die "TAIGI_DIR=$TAIGI_DIR has no train.tsv and dev.tsv"
  CORPUS=$OUT/corpus
  mkdir -p "$CORPUS"
  for split in train dev; do # every MOE row, and the iCorpus rows of the sample (their licence forbids more)
    { cat "data/moe/$split.tsv"; awk -F'\t' 'NR > 1 && $3 == "icorpus-hanji"' "data/sample/$split.tsv"; } \
      >"$CORPUS/$split.tsv.tmp"
    mv "$CORPUS/$split.tsv.tmp" "$CORPUS/$split.tsv"
  done
  echo "corpus: what this repository ships, $(($(wc -l <"$CORPUS/train.tsv") - 1)) training pairs and" \
    "$(($(wc -l <"$CORPUS/dev.tsv") - 1)) held-out pairs (data/moe + data/sample's iCorpus rows)"
  echo "        the full corpus has twice as many: tools/build-corpus.py --out data/taigi (data/README.md)"
}

# Rows of a scored translation run beside their references, then the scores against the copy baseline.
show() { # show TSV HYP JSON DIRECTION ROWS
  python3 benchmarks/show_translations.py "$1" "$2" "$4" --json "$3" --rows "$5"
}

use_it() { # use_it EXPORT_DIR NAME
  local ex=$1 name=$2 tl="" d
  for d in $(case $DIRECTIONS in all) echo zh2tl ;; *) echo "$DIRECTIONS" | tr ',' ' ' ;; esac); do
    [ "$d" = zh2tl ] && tl="
  ollama create $name-zh2tl -f Modelfile.zh2tl    && ollama run $name-zh2tl '今天天氣很好。'      # Tâi-lô"
  done
  cat <<EOF

== use it
Ollama (0.11.5 or later; the merged model.gguf: no ADAPTER needed), one model per direction:
  cd $ex
  ollama create $name-zh2nan -f Modelfile         && ollama run $name-zh2nan '今天天氣很好。'
  ollama create $name-nan2zh -f Modelfile.nan2zh  && ollama run $name-nan2zh '今仔日天氣真好。'$tl
llama.cpp (the GGUF carries the chat template; the system message picks the direction):
  llama-server -m $ex/model.gguf --jinja --port 8080 &
  curl -s http://localhost:8080/v1/chat/completions -H 'Content-Type: application/json' -d '{"messages": [
    {"role": "system", "content": "Translate Mandarin (華語) into Taiwanese Hokkien (台語) written in Han characters."},
    {"role": "user", "content": "今天天氣很好。"}]}'
transformers + PEFT: $ex/peft (docs/guide.md)
EOF
}

# ---- GPU: from scratch, or a LoRA on MODEL_DIR ------------------------------------------------------------------------
if [ "$PATH_KIND" != demo ]; then
  say "corpus"
  pick_corpus
  LP=$OUT/learning_proof
  T=$((MINUTES * 60))
  # benchmarks/learning_proof.sh does the training and the scoring; these are its sizes for QUICKSTART_MINUTES.
  LP_ENV=(WORK="$LP" TAIGI_DIR="$CORPUS" BIN="$BIN" BACKEND="$BACKEND" DIRECTIONS="$DIRECTIONS"
    LORA_DIRECTIONS="$DIRECTIONS" EVAL_DIRECTIONS="zh2nan nan2zh" EVAL_PER_SOURCE="$EVAL_ROWS" LORA_STEPS=auto)
  if [ "$PATH_KIND" = scratch ]; then
    say "train: a small gpt-oss from scratch (~$((T * 70 / 100))s), then a LoRA (~$((T * 15 / 100))s): benchmarks/learning_proof.sh"
    LP_ENV+=(FULL_TARGET_SECONDS=$((T * 70 / 100)) FULL_SECONDS=$((T * 80 / 100)) LORA_TARGET_SECONDS=$((T * 15 / 100))
      LORA_SECONDS=$((T * 20 / 100)))
  else
    say "train: a LoRA on $MODEL_DIR (~${T}s): benchmarks/learning_proof.sh"
    LP_ENV+=(BASE_MODEL="$MODEL_DIR" LORA_TARGET_SECONDS=$((T * 90 / 100)) LORA_SECONDS=$((T + 60))
      LORA_LR="${LORA_LR:-2e-4}")
  fi
  env "${LP_ENV[@]}" bash benchmarks/learning_proof.sh || die "benchmarks/learning_proof.sh failed (its messages are above; logs in $LP)"
  [ -f "$LP/result.env" ] || die "benchmarks/learning_proof.sh wrote no $LP/result.env"
  . "$LP/result.env"

  say "export: GGUF for llama.cpp / Ollama, Modelfiles, PEFT adapter"
  NAME=osstune-$([ "$PATH_KIND" = scratch ] && echo small || echo lora)
  "$BIN/osstune-export" --model "$FULL_MODEL" --adapter "$ADAPTER" --out "$OUT/export" --tokenizer "$TOK" --name "$NAME"

  say "held-out sentences, translated both ways (the model + LoRA), beside their references"
  for d in zh2nan nan2zh; do
    echo "-- $d: $(case $d in zh2nan) echo "Mandarin -> Taiwanese Hokkien" ;; *) echo "Taiwanese Hokkien -> Mandarin" ;; esac)"
    show "$LP/dev_eval.tsv" "$LP/eval_lora_$d.hyp" "$LP/eval_lora_$d.json" "$d" 4
    [ -f "$LP/eval_full_$d.json" ] && echo "  without the LoRA: chrF $(python3 -c "import json; print(round(json.load(open('$LP/eval_full_$d.json'))['chrf'], 1))")"
  done
  echo
  echo "model:    $FULL_MODEL"
  echo "adapter:  $ADAPTER (PEFT)"
  echo "export:   $OUT/export (model.gguf, adapter.gguf, Modelfile and Modelfile.<direction>, peft/, README.md)"
  echo "scores:   $LP/eval_*.json (every held-out row: $LP/eval_*.hyp beside $LP/dev_eval.tsv)"
  use_it "$OUT/export" "$NAME"
  exit 0
fi

# ---- CPU: the pipeline demonstration on a tiny random model ---------------------------------------------------------
say "a tiny gpt-oss model (random weights, the real 201,088-token vocabulary, MXFP4 experts)"
if [ ! -f "$OUT/model/config.json" ]; then
  "$BIN/osstune-init-model" --preset tiny --seed 0 --out "$OUT/model"
else
  echo "reusing $OUT/model"
fi

say "tokenize the sample pairs (directions: $DIRECTIONS; harmony format)"
"$BIN/osstune-prep" --tokenizer "$TOK" --in data/sample/train.tsv --out "$OUT/train.h5" --directions "$DIRECTIONS"
"$BIN/osstune-prep" --tokenizer "$TOK" --in data/sample/dev.tsv --out "$OUT/dev.h5" --directions "$DIRECTIONS"

say "train a LoRA adapter on the CPU ($RANKS MPI ranks, $STEPS steps)"
set +e
mpirun --oversubscribe -np "$RANKS" "$BIN/osstune-train" --backend cpu --model "$OUT/model" --data "$OUT/train.h5" \
  --run-dir "$OUT/run" --steps "$STEPS" --seq-len 512 --rows-per-step 4 --lora-r 8 --lora-alpha 16 \
  --lr 2e-3 --warmup 4 --save-every 20 --log-every 5 --eval-data "$OUT/dev.h5" --eval-every 20 --eval-samples 64
status=$?
set -e
if [ $status -ne 0 ]; then
  die "osstune-train exited with status $status (75 = stopped by a signal: run quickstart.sh again to resume)"
fi
CKPT="$OUT/run/ckpt/$(cat "$OUT/run/ckpt/latest")"

say "export: GGUF for llama.cpp / Ollama, Modelfiles, PEFT adapter"
"$BIN/osstune-export" --model "$OUT/model" --adapter "$CKPT" --out "$OUT/export" --tokenizer "$TOK" --name osstune-tiny

say "translate a few held-out (dev) sentences, beside their references"
head -n 4 data/sample/dev.tsv >"$OUT/few.tsv"
for dir in zh2nan nan2zh zh2tl; do
  echo "-- $dir"
  "$BIN/osstune-translate" --model "$OUT/model" --adapter "$CKPT" --tokenizer "$TOK" \
    --direction $dir --in "$OUT/few.tsv" --ref "$OUT/few.tsv" --max-new-tokens 24 >"$OUT/translate.$dir.txt"
  head -n -1 "$OUT/translate.$dir.txt" >"$OUT/translate.$dir.hyp"
  tail -n 1 "$OUT/translate.$dir.txt" >"$OUT/translate.$dir.json"
  show "$OUT/few.tsv" "$OUT/translate.$dir.hyp" "$OUT/translate.$dir.json" "$dir" 2
done
echo
echo "(a tiny RANDOM model trained for $STEPS steps on the CPU translates nothing: this shows the pipeline, not the"
echo " quality. For a real translator run quickstart.sh on a machine with an NVIDIA GPU, or MODEL_DIR=gpt-oss-20b;"
echo " docs/guide.md)"
echo
echo "base model:      $OUT/model"
echo "tokenized data:  $OUT/train.h5, $OUT/dev.h5"
echo "adapter (PEFT):  $CKPT"
echo "metrics:         $OUT/run/metrics.jsonl"
echo "translations:    $OUT/translate.*.txt"
echo "GGUF + Ollama:   $OUT/export (model.gguf, adapter.gguf, Modelfile and Modelfile.<direction>, peft/, README.md)"
echo "check it against transformers + peft:"
echo "  $BIN/osstune-logits --model $OUT/model --adapter $CKPT --tokens 200006,17360,200008 --out -"
use_it "$OUT/export" osstune-tiny
