#!/bin/sh
# osstune-export on bad input: a non-zero exit, a message that names the problem, and an output directory left
# exactly as it was (a sentinel file unchanged, no new file, no temporary file or staging directory).
# usage: test_export_errors.sh BIN_DIR PYTHON SCRATCH_DIR   (after test_export_setup.sh)
set -u
BIN=$1 PY=$2 S=$3
EXPORT="$BIN/osstune-export"
W="$S/errors"
rm -rf "$W"
mkdir -p "$W"
TOK=data/o200k_base.tiktoken
GOLDEN=tests/fixtures/golden
pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect_fail NAME "substring of the message" ARGS... — runs the exporter into a fresh OUT holding a sentinel.
expect_fail() {
  name=$1 want=$2
  shift 2
  out="$W/out-$name"
  rm -rf "$out"
  mkdir -p "$out"
  echo "keep me" >"$out/model.gguf"
  "$EXPORT" "$@" --out "$out" >"$W/$name.stdout" 2>"$W/$name.stderr"
  rc=$?
  if [ $rc -eq 0 ]; then bad "$name: exit status 0"; return; fi
  if grep -qF -- "$want" "$W/$name.stderr"; then ok; else bad "$name: message lacks '$want':"; cat "$W/$name.stderr"; fi
  if [ "$(ls -A "$out")" = "model.gguf" ] && [ "$(cat "$out/model.gguf")" = "keep me" ]; then ok
  else bad "$name: the output directory changed: $(ls -A "$out")"; fi
  echo "$name: $(head -1 "$W/$name.stderr")"
}

# Inputs made from the golden fixture (a 3-layer gpt-oss, MXFP4 experts, and a PEFT adapter for it).
"$PY" - "$GOLDEN" "$W" <<'EOF' || { echo "FAIL: cannot build the bad inputs"; exit 1; }
import json, os, shutil, sys
sys.path.insert(0, "tests")
from test_export_common import read_safetensors_raw as load_file, write_safetensors_raw as save_file  # no torch
golden, w = sys.argv[1], sys.argv[2]

def copy_model(name):
    d = os.path.join(w, name)
    shutil.copytree(os.path.join(golden, "model"), d)
    return d

# a model with one tensor missing (removed from its shard and from the index)
d = copy_model("missing_tensor")
index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
gone = "model.layers.1.mlp.router.bias"
shard = os.path.join(d, index["weight_map"].pop(gone))
t = load_file(shard); t.pop(gone); save_file(t, shard)
json.dump(index, open(os.path.join(d, "model.safetensors.index.json"), "w"))
# another architecture
d = copy_model("llama")
cfg = json.load(open(os.path.join(d, "config.json"))); cfg["model_type"] = "llama"
json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
# an adapter with a layer the 3-layer base does not have
a = os.path.join(w, "adapter_layer9")
shutil.copytree(os.path.join(golden, "adapter"), a)
t = load_file(os.path.join(a, "adapter_model.safetensors"))
for k in list(t):
    if ".layers.2." in k:
        t[k.replace(".layers.2.", ".layers.9.")] = t[k]
save_file(t, os.path.join(a, "adapter_model.safetensors"))
EOF

TINY="$S/tiny" ADAPTER="$S/adapter"
# An adapter trained on another base (the golden adapter, hidden size 96, on the tiny model, hidden size 64).
expect_fail mismatch "different base model" --model "$TINY" --adapter $GOLDEN/adapter --tokenizer $TOK
expect_fail layers "adapts layer 9, but the base model" --model $GOLDEN/model --adapter "$W/adapter_layer9"
expect_fail missing_tensor "model.layers.1.mlp.router.bias" --model "$W/missing_tensor" --adapter $GOLDEN/adapter
expect_fail architecture 'model_type is llama, not "gpt_oss"' --model "$W/llama" --adapter $GOLDEN/adapter
expect_fail no_adapter_files "is not a PEFT adapter directory" --model "$TINY" --adapter "$W" --tokenizer $TOK
expect_fail no_tokenizer "pass --tokenizer" --model "$TINY" --adapter "$ADAPTER"
expect_fail bad_option "--expert-lora-type must be bf16 or q8_0" --model "$TINY" --adapter "$ADAPTER" --expert-lora-type f16
# Fails after adapter.gguf is already complete in the staging directory: it must not appear in OUT either.
expect_fail late_failure "vocab_size 331 is smaller" --model $GOLDEN/model --adapter $GOLDEN/adapter --tokenizer $TOK \
  --only adapter,model

# Unwritable output locations.
echo x >"$W/a-file"
for case in "$W/a-file" "$W/a-file/sub" "$W/no/such/parent"; do
  if "$EXPORT" --model "$TINY" --adapter "$ADAPTER" --out "$case" --only peft 2>"$W/unwritable.stderr"; then
    bad "--out $case: exit status 0"
  elif grep -qE "not a directory|cannot create the output directory" "$W/unwritable.stderr"; then ok
  else bad "--out $case: unclear message: $(cat "$W/unwritable.stderr")"; fi
done
[ ! -e "$W/no" ] && ok || bad "a directory was left behind for --out $W/no/such/parent"
if [ "$(id -u)" != 0 ]; then # root may write anywhere, so a read-only directory only means something otherwise
  mkdir -p "$W/readonly" && chmod 555 "$W/readonly"
  if "$EXPORT" --model "$TINY" --adapter "$ADAPTER" --out "$W/readonly" --only peft 2>"$W/ro.stderr"; then
    bad "read-only output directory: exit status 0"
  elif grep -q "cannot write to the output directory" "$W/ro.stderr"; then ok
  else bad "read-only output directory: $(cat "$W/ro.stderr")"; fi
  chmod 755 "$W/readonly"
fi
# A new output directory is removed again when the export fails.
"$EXPORT" --model "$TINY" --adapter $GOLDEN/adapter --out "$W/fresh" --only peft 2>/dev/null
[ ! -e "$W/fresh" ] && ok || bad "a failed export left the directory it created"

# Interrupted at different moments: either a complete export (exit 0, every file) or nothing at all.
for delay in 0.05 0.2 0.4 30; do
  out="$W/interrupt-$delay"
  rm -rf "$out" && mkdir -p "$out" && echo "keep me" >"$out/model.gguf"
  timeout -s TERM $delay "$EXPORT" --model "$TINY" --adapter "$ADAPTER" --out "$out" --tokenizer $TOK \
    --only adapter,model,base,modelfile,peft >/dev/null 2>"$W/interrupt.stderr"
  rc=$?
  if [ $rc -eq 0 ]; then
    n=$(ls -A "$out" | tr '\n' ' ')
    want="Modelfile Modelfile.nan2tl Modelfile.nan2zh Modelfile.tl2nan Modelfile.tl2zh Modelfile.zh2tl README.md"
    [ "$n" = "$want adapter.gguf base.gguf model.gguf peft " ] && ok || bad "complete run: $n"
  else
    if [ "$(ls -A "$out")" = "model.gguf" ] && [ "$(cat "$out/model.gguf")" = "keep me" ]; then ok
    else bad "interrupted after $delay s (exit $rc): left $(ls -A "$out")"; fi
  fi
  echo "interrupt after $delay s: exit $rc"
done

echo "test_export_errors: $pass passed, $fail failed"
[ $fail -eq 0 ]
