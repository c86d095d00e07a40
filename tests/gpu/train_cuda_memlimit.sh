#!/usr/bin/env bash
# osstune-train --gpu-memory-limit on the CUDA backend: a run plans as on a card of that size and an allocation past
# the limit is refused with a message, never a crash. On a tiny model with the real vocabulary:
#   1. no limit, --recompute auto: keeps the activations ("off (auto)"); its GPU peak P comes from metrics.jsonl;
#   2. a limit of P + 512 MiB: auto now recomputes (the plan keeps 1 GiB of margin besides the activations), says why
#      ("on (auto, for --gpu-memory-limit ...)"), stays under the limit, and trains the same bytes as an unlimited
#      run with --recompute on (the limit moves no number);
#   3. a limit of P + 8 GiB: auto keeps the activations again, and the adapter equals run 1's byte for byte;
#   4. a limit below the model's own size: exit 1 naming the flag and the sizes, no checkpoint, no crash;
#   5. --recompute off with a limit below what run 1 needed: exit 1 naming the flag, no crash (refused at an
#      allocation, or after the step when what CUDA loads by itself at first use is what passes the limit);
#   6. the limit with --backend cpu: refused before anything is loaded;
#   7. osstune-translate --backend cuda under a roomy limit writes what it writes without one; under a limit below
#      the model, or 1 MiB below what the unlimited run had in use at its end, it is refused naming the flag; with
#      --backend cpu the flag is a usage error.
#
# usage: tests/gpu/train_cuda_memlimit.sh BIN_DIR WORK_DIR     (a GPU, or the emulated runtime of tests/gpu/train_emu,
#                                                              whose device memory is counted per allocation)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/e2e_lib.sh" "$@"
model="$work/model_real_vocab"
failed=0
fail() { echo "FAIL $*"; failed=1; }
ok() { echo "ok   $*"; }

e2e_real_vocab_model "$model" || { echo "train_cuda_memlimit: osstune-init-model failed"; exit 1; }
e2e_sample_pairs "$work/pairs.h5" || { echo "train_cuda_memlimit: osstune-prep failed"; exit 1; }

train() { # train NAME ARGS...: exit status in $rc, log in $work/NAME.log
    local name=$1
    shift
    rm -rf "$work/run_$name"
    "$bin/osstune-train" --model "$model" --data "$work/pairs.h5" --run-dir "$work/run_$name" --steps 3 \
        --seq-len 256 --rows-per-step 2 --lora-r 8 --lora-alpha 16 --lora-targets all --lr 1e-3 --log-every 1 \
        "$@" > "$work/$name.log" 2>&1
    rc=$?
}
adapter() { sha256sum < "$work/run_$1/ckpt/step-000003/adapter_model.safetensors" | cut -c1-64; }
peak_mib() { python3 -c "import json,sys; print(max(json.loads(l).get('gpu_peak_mib', 0) for l in open(sys.argv[1])))" \
                 "$work/run_$1/metrics.jsonl"; }
said() { grep -q -- "$2" "$work/$1.log"; }
crashed() { [ "$rc" -ge 128 ] || grep -q "AddressSanitizer\|runtime error:" "$work/$1.log"; }

# 1. no limit
train free --backend cuda
if [ "$rc" != 0 ]; then cat "$work/free.log"; echo "train_cuda_memlimit: the unlimited run failed"; exit 1; fi
P=$(peak_mib free)
said free "activation recomputation off (auto)" && ok "no limit: activations kept (auto), GPU peak $P MiB" ||
    fail "no limit: expected 'activation recomputation off (auto)' in $work/free.log"
grep -q '"gpu_peak_mib"' "$work/run_free/metrics.jsonl" && said free "| gpu " &&
    ok "metrics.jsonl and the progress lines carry the GPU memory" || fail "no GPU memory in the metrics or progress"

# 2. a limit that leaves less than the plan's margin: recompute, same numbers as --recompute on
tight=$(( ${P%.*} + 512 ))
train tight --backend cuda --gpu-memory-limit "${tight}MiB"
if [ "$rc" = 0 ] && said tight "activation recomputation on (auto, for --gpu-memory-limit"; then
    ok "limit ${tight} MiB: recomputation chosen by auto for the limit"
else
    fail "limit ${tight} MiB: exit $rc, expected recomputation on for the limit"; tail -5 "$work/tight.log"
fi
if [ "$rc" = 0 ]; then
    tp=$(peak_mib tight)
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" "$tp" "$tight" &&
        ok "limit ${tight} MiB: GPU peak $tp MiB stays under it" || fail "limit ${tight} MiB: GPU peak $tp MiB"
    said tight "of the ${tight} MiB limit" && ok "the progress line shows the limit" ||
        fail "the progress line does not show the limit"
    train on --backend cuda --recompute on
    [ "$rc" = 0 ] && [ "$(adapter tight)" = "$(adapter on)" ] &&
        ok "limit ${tight} MiB: the adapter equals an unlimited --recompute on run's, byte for byte" ||
        fail "limit ${tight} MiB: the adapter differs from the --recompute on run's (or that run failed: $rc)"
fi

# 3. a roomy limit: as without one
roomy=$(( ${P%.*} + 8192 ))
train roomy --backend cuda --gpu-memory-limit "${roomy}MiB"
[ "$rc" = 0 ] && said roomy "activation recomputation off (auto, for --gpu-memory-limit" &&
    [ "$(adapter roomy)" = "$(adapter free)" ] &&
    ok "limit ${roomy} MiB: activations kept, the adapter equals the unlimited run's" ||
    fail "limit ${roomy} MiB: exit $rc, or recomputation chosen, or a different adapter"

# 4. below the model itself
train small --backend cuda --gpu-memory-limit 4MiB
# (the model's arena on the emulated device; on a real GPU the CUDA context alone is already more: "already uses")
if [ "$rc" = 1 ] && said small "gpu-memory-limit 4.0 MiB" && grep -q "needs\|already uses" "$work/small.log" &&
   ! [ -e "$work/run_small/ckpt/latest" ]
then ok "limit 4 MiB: refused ($(grep -m1 -o 'needs [^;]*\|already uses.*' "$work/small.log" | cut -c1-120))"
else fail "limit 4 MiB: exit $rc (want 1 with a message naming --gpu-memory-limit, no checkpoint)"; tail -3 "$work/small.log"; fi
crashed small && fail "limit 4 MiB: crashed"

# 5. activations kept by order, under a limit below what run 1 used
below=$(( ${P%.*} - 1 ))
train below --backend cuda --recompute off --gpu-memory-limit "${below}MiB"
if [ "$rc" = 1 ] && said below "gpu-memory-limit" && ! crashed below; then
    ok "--recompute off under ${below} MiB: refused ($(grep -m1 -o 'GPU memory.*' "$work/below.log" | cut -c1-160))"
else fail "--recompute off under ${below} MiB: exit $rc (want 1 naming --gpu-memory-limit)"; tail -3 "$work/below.log"; fi

# 6. the CPU backend
train cpu --backend cpu --gpu-memory-limit 8GiB
[ "$rc" != 0 ] && ! crashed cpu && said cpu "gpu-memory-limit is for the cuda backend" && ! [ -e "$work/run_cpu/config.json" ] &&
    ok "--backend cpu: the limit is refused before the run starts" || fail "--backend cpu with a limit: exit $rc"

# 7. osstune-translate --backend cuda with run 1's adapter: a roomy limit writes what no limit writes; a limit below
#    the model, or just below what the run has in use, is refused naming the flag; the cpu backend refuses the flag
#    as a usage error
head -n 4 "$root/data/sample/dev.tsv" > "$work/dev3.tsv"
translate() { # translate NAME ARGS...
    local name=$1
    shift
    "$bin/osstune-translate" --model "$model" --adapter "$work/run_free/ckpt/step-000003" --direction zh2nan \
        --tokenizer "$root/data/o200k_base.tiktoken" --in "$work/dev3.tsv" --max-new-tokens 8 "$@" \
        > "$work/$name.out" 2> "$work/$name.log"
    rc=$?
}
translate tr-free --backend cuda
translate tr-roomy --backend cuda --gpu-memory-limit "${roomy}MiB"
[ "$rc" = 0 ] && [ -s "$work/tr-free.out" ] && cmp -s "$work/tr-free.out" "$work/tr-roomy.out" &&
    ok "osstune-translate under ${roomy} MiB: the same lines as without a limit" ||
    fail "osstune-translate under ${roomy} MiB: exit $rc or other lines"
translate tr-small --backend cuda --gpu-memory-limit 4MiB
[ "$rc" = 1 ] && said tr-small "gpu-memory-limit 4.0 MiB" && ! crashed tr-small &&
    ok "osstune-translate under 4 MiB: refused ($(grep -m1 -o 'needs [^;]*\|already uses.*' "$work/tr-small.log" | cut -c1-100))" ||
    fail "osstune-translate under 4 MiB: exit $rc (want 1 naming --gpu-memory-limit)"
# a limit 1 MiB below what the unlimited run had in use at its end: refused, by the allocation check (the emulated
# device, where only our buffers count) or when a sentence is done (a GPU: what CUDA takes by itself at first use)
tp=$(grep -o 'GPU memory in use at the end ([0-9]* MiB)' "$work/tr-free.log" | grep -o '[0-9]*')
if [ -n "$tp" ]; then
    translate tr-below --backend cuda --gpu-memory-limit "$(( tp - 1 ))MiB"
    if [ "$rc" = 1 ] && said tr-below "gpu-memory-limit" && ! crashed tr-below; then
        ok "osstune-translate under $(( tp - 1 )) MiB: refused ($(grep -m1 -o 'GPU memory:.*\|needs [^;]*\|already uses.*' "$work/tr-below.log" | cut -c1-140))"
    else
        fail "osstune-translate under $(( tp - 1 )) MiB: exit $rc (want 1 naming --gpu-memory-limit)"; tail -3 "$work/tr-below.log"
    fi
else
    fail "osstune-translate without a limit printed no 'GPU memory in use at the end (N MiB)'"
fi
translate tr-cpu --backend cpu --gpu-memory-limit 8GiB
[ "$rc" = 2 ] && said tr-cpu "gpu-memory-limit is for the cuda backend" &&
    ok "osstune-translate --backend cpu: the limit is a usage error" || fail "osstune-translate --backend cpu with a limit: exit $rc"

[ "$failed" = 0 ] && echo "train_cuda_memlimit: all passed" || echo "train_cuda_memlimit: FAILED"
exit "$failed"
