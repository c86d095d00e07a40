#!/usr/bin/env bash
# A randomized campaign of signals during osstune-export: each iteration exports the tiny model and its adapter
# (every output: adapter.gguf, model.gguf, base.gguf, the Modelfiles, peft/, README.md) while SIGINT, SIGTERM or
# SIGKILL lands at a random moment, and runs the same command again until it finishes. After every interruption
# OUT_DIR must hold exactly what it held before -- a file of the user's, unchanged, and nothing else except, after
# SIGKILL, the killed export's hidden staging directory (the next export removes it); an interrupted export must say
# so. The finished export must be byte-identical to an uninterrupted one, with no staging directory left.
# test_export_errors.sh has the deterministic version (SIGTERM after fixed delays).
#
# usage: test_export_signals.sh BIN_DIR SCRATCH_DIR [ITERATIONS]   (after test_export_setup.sh)
#   ITERATIONS (default $OSSTUNE_SIGNAL_ITERATIONS, else 4: what CI runs). OSSTUNE_SIGNAL_SEED=S replays a campaign.
set -uo pipefail
BIN=$1
S=$2
ITERATIONS=${3:-${OSSTUNE_SIGNAL_ITERATIONS:-4}}
SEED=${OSSTUNE_SIGNAL_SEED:-$(($(date +%s) % 32768))}
RANDOM=$SEED
echo "test_export_signals: $ITERATIONS iterations, seed $SEED (OSSTUNE_SIGNAL_SEED=$SEED replays them)"
W=$S/signals
rm -rf "$W"
mkdir -p "$W"
ARGS=(--model "$S/tiny" --adapter "$S/adapter" --tokenizer data/o200k_base.tiktoken
      --only adapter,model,base,modelfile,peft)
passes=0 fails=0
ok() { passes=$((passes + 1)); echo "ok   $*"; }
bad() { fails=$((fails + 1)); echo "FAIL $*"; }

# The files under DIR with their sha256, the hidden staging directories left out (they are checked on their own).
listing() { (cd "$1" && find . -type f ! -path './.osstune-export-*' -print0 | sort -z | xargs -0 -r sha256sum); }
rnd() { # rnd MAX_MS: a random number of seconds below MAX_MS milliseconds, for sleep
  local ms=$(((RANDOM * 32768 + RANDOM) % ($1 > 0 ? $1 : 1)))
  printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

t0=$(date +%s%N)
"$BIN/osstune-export" "${ARGS[@]}" --out "$W/ref" >/dev/null 2>"$W/ref.log" || { cat "$W/ref.log"; bad "reference export"; exit 1; }
RUN_MS=$((($(date +%s%N) - t0) / 1000000))
echo "reference export: ${RUN_MS} ms"
listing "$W/ref" >"$W/ref.sha256"

for it in $(seq 1 "$ITERATIONS"); do
  out=$W/it$it
  rm -rf "$out"
  mkdir -p "$out"
  echo "the user's own notes" >"$out/notes.txt"
  before=$(listing "$out")
  what=()
  finished=0
  for attempt in $(seq 1 8); do
    log=$W/it$it.$attempt.log
    if [ "$attempt" = 8 ]; then # enough: the last start runs to the end
      "$BIN/osstune-export" "${ARGS[@]}" --out "$out" >/dev/null 2>"$log" && st=0 || st=$?
      what+=("finish:$st")
    else
      sig=$(case $((RANDOM % 3)) in 0) echo INT ;; 1) echo TERM ;; *) echo KILL ;; esac)
      "$BIN/osstune-export" "${ARGS[@]}" --out "$out" >/dev/null 2>"$log" &
      pid=$!
      disown -h "$pid" 2>/dev/null || true
      sleep "$(rnd $((RUN_MS * 12 / 10)))"
      kill "-$sig" "$pid" 2>/dev/null
      wait "$pid" && st=0 || st=$?
      what+=("$sig:$st")
    fi
    [ "$st" = 0 ] && { finished=1; break; }
    # Interrupted: its own message and status 1 (the handler ran), or the signal's status (it had not been installed
    # yet, or SIGKILL); OUT_DIR as it was, a staging directory only after SIGKILL.
    if [ "$st" = 1 ] && ! grep -q "interrupted by signal" "$log"; then
      bad "iteration $it: after ${what[*]}: exit 1 without saying it was interrupted: $(tail -2 "$log")"
      continue 2
    fi
    case $st in 1 | 130 | 137 | 143) ;; *)
      bad "iteration $it: after ${what[*]}: exit status $st: $(tail -2 "$log")"
      continue 2 ;;
    esac
    if [ "$(listing "$out")" != "$before" ]; then
      bad "iteration $it: after ${what[*]}: OUT_DIR changed: $(ls -A "$out" | tr '\n' ' ')"
      continue 2
    fi
    if [ "${what[-1]%%:*}" != KILL ] && compgen -G "$out/.osstune-export-*" >/dev/null; then
      bad "iteration $it: after ${what[*]}: a staging directory was left behind"
      continue 2
    fi
  done
  if [ $finished = 0 ]; then
    bad "iteration $it: never finished (${what[*]})"
    continue
  fi
  after=$(listing "$out")
  if compgen -G "$out/.osstune-export-*" >/dev/null; then
    bad "iteration $it: ${what[*]}: a staging directory is left after the export finished"
  elif [ "$(grep -v ' ./notes.txt$' <<<"$after")" != "$(cat "$W/ref.sha256")" ] ||
    [ "$(grep ' ./notes.txt$' <<<"$after")" != "$before" ]; then
    bad "iteration $it: ${what[*]}: the finished export differs from the uninterrupted one"
    diff <(echo "$after") "$W/ref.sha256" | head -5
  else
    ok "iteration $it: ${what[*]} -> byte-identical to the uninterrupted export, the user's file kept"
  fi
done
echo "test_export_signals: $passes passed, $fails failed (seed $SEED)"
[ $passes -gt 0 ] && [ $fails -eq 0 ]
