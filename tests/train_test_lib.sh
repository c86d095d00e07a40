# Shared by the end-to-end training tests (test_train_runs.sh, test_train_shard.sh, test_full_runs.sh): sourced,
# not run. Expects BIN (the programs) and WORK (a scratch directory) to be set.
#   ok / bad MESSAGE          count a check (passes, fails) and print it
#   prep_pairs OUT.h5 TSV N   the first N lines of TSV (header included) tokenized into OUT.h5, once
#   tiny_model DIR            the tiny test model with 2 layers, the real vocabulary and seed 7 in DIR, once
#   tiny_full_model DIR       the same, narrower (hidden and expert width 32) with bf16 dense experts: every weight
#                             trainable (--full), once
#   stop_after_step DIR N PID wait until DIR/metrics.jsonl has N lines (or a minute), SIGTERM every osstune-train
#                             rank of --run-dir DIR, and return the exit status of PID (the backgrounded run)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OSSTUNE_COMM_TIMEOUT=60
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$WORK"
fails=0
passes=0
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

prep_pairs() {
  local out=$1 tsv=$2 n=$3
  [ -f "$out" ] && return 0
  head -n "$n" "$tsv" >"${out%.h5}.tsv"
  "$BIN/osstune-prep" --tokenizer "$ROOT/data/o200k_base.tiktoken" --in "${out%.h5}.tsv" --out "$out" >/dev/null
}

tiny_model() {
  [ -f "$1/config.json" ] && return 0
  "$BIN/osstune-init-model" --preset tiny --seed 7 --out "$1" --set num_hidden_layers=2 >/dev/null
}

tiny_full_model() {
  [ -f "$1/config.json" ] && return 0
  "$BIN/osstune-init-model" --preset tiny --seed 7 --set num_hidden_layers=2 --set hidden_size=32 \
    --set intermediate_size=32 --dense-experts --out "$1" >/dev/null
}

stop_after_step() {
  local d=$1 n_lines=$2 pid=$3 lines st
  for _ in $(seq 600); do
    lines=0; [ -f "$d/metrics.jsonl" ] && lines=$(wc -l <"$d/metrics.jsonl")
    [ "$lines" -ge "$n_lines" ] && break
    sleep 0.1
  done
  pkill -TERM -f "^$BIN/osstune-train .*--run-dir $d" || true
  set +e
  wait "$pid"
  st=$?
  set -e
  return "$st"
}
