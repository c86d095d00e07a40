#!/usr/bin/env bash
# The GPU decoder end to end, against the CPU decoder, on a tiny model with the real vocabulary (head_dim 64, the
# CUDA attention's head size; sliding window 16, so the prompts of ~85 tokens cross it), with and without a LoRA
# adapter on q,k,v,o and on the experts of layers 1 and 3:
#   1. test_decode_cuda: the logits of every step, teacher-forced, 3 slots and 1 slot (tolerances in the file);
#   2. osstune-translate --backend cuda (batch sizes 1 and 3, five sources of ragged lengths) against --backend cpu.
#      exact mode (argument `exact`, with EMU_EXACT=1 in the emulator): every output line identical and the same
#      number of generated tokens. bf16 (a GPU): the same number of lines and a well-formed --ref JSON line; how many
#      lines equal the CPU's is printed (greedy decoding follows bf16 rounding once two logits are close, and a
#      random model's logits are close often, so whole outputs are not required to agree; step 1 bounds the logits).
#
# usage: tests/gpu/decode_e2e.sh BIN_DIR WORK_DIR [exact]   (needs python3 with numpy and safetensors for the adapter)
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BIN_DIR WORK_DIR [exact]" >&2; exit 2; }
bin=$(cd "$1" && pwd)
work=$2
mode=${3:-bf16}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$work"
work=$(cd "$work" && pwd)
fail() { echo "decode_e2e: $*" >&2; exit 1; }
model="$work/model_hd64"
[ -f "$model/config.json" ] || "$bin/osstune-init-model" --preset tiny --seed 1 --set head_dim=64 \
    --set sliding_window=16 --out "$model" > /dev/null || fail "osstune-init-model failed"
adapter="$work/adapter"
if [ ! -f "$adapter/adapter_config.json" ]; then
    python3 "$root/tests/test_export_make_adapter.py" "$model" "$adapter" --expert-layers 1,3 --b-sigma 0.5 \
        > /dev/null || fail "making the test adapter failed (python3 with numpy and safetensors is needed)"
fi
failed=0
extra=()
[ "$mode" = exact ] && extra=(exact)

echo "== test_decode_cuda ($mode): base model, then with the adapter"
"$bin/test_decode_cuda" "$model" - "${extra[@]}" || failed=1
"$bin/test_decode_cuda" "$model" "$adapter" "${extra[@]}" || failed=1

echo "== osstune-translate --backend cuda against --backend cpu ($mode)"
printf 'zh\tnan\n今天天氣很好。\t今仔日天氣真好。\n好\t好\n他昨天晚上在家裡看了一本很有意思的書，然後很早就睡覺了。\t伊昨暗佇厝看一本真有意思的冊。\n我不知道。\t我毋知。\n你要去哪裡？\t你欲去佗位？\n' \
    > "$work/test.tsv"
common=(--model "$model" --tokenizer "$root/data/o200k_base.tiktoken" --direction zh2nan --in "$work/test.tsv"
        --ref "$work/test.tsv" --max-new-tokens 12)
for ad in none adapter; do
    a=()
    [ "$ad" = adapter ] && a=(--adapter "$adapter")
    "$bin/osstune-translate" "${common[@]}" "${a[@]}" --backend cpu > "$work/cpu_$ad.out" 2> "$work/cpu_$ad.err" ||
        { cat "$work/cpu_$ad.err"; fail "--backend cpu failed"; }
    cpu_new=$(sed -n 's/.*: \([0-9]*\) new tokens.*/\1/p' "$work/cpu_$ad.err")
    for bs in 1 3; do
        out="$work/cuda_${ad}_b$bs"
        "$bin/osstune-translate" "${common[@]}" "${a[@]}" --backend cuda --batch-size "$bs" > "$out.out" 2> "$out.err" ||
            { cat "$out.err"; echo "decode_e2e: FAIL --backend cuda --batch-size $bs ($ad) failed" >&2; failed=1; continue; }
        new=$(sed -n 's/.*: \([0-9]*\) new tokens.*/\1/p' "$out.err")
        lines=$(wc -l < "$out.out")
        same=$(paste -d '\n' <(head -n 5 "$out.out") <(head -n 5 "$work/cpu_$ad.out") | awk 'NR%2{a=$0;next}{n+=(a==$0)}END{print n+0}')
        tail -n 1 "$out.out" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); assert d["count"]==5' ||
            { echo "decode_e2e: FAIL batch $bs ($ad): the last line is not the --ref JSON with count 5" >&2; failed=1; }
        [ "$lines" = 6 ] || { echo "decode_e2e: FAIL batch $bs ($ad): $lines output lines, expected 5 + the JSON" >&2; failed=1; }
        if [ "$mode" = exact ]; then
            if cmp -s "$out.out" "$work/cpu_$ad.out" && [ "$new" = "$cpu_new" ]; then
                echo "ok   batch $bs, $ad: every output identical to the cpu backend's ($new new tokens)"
            else
                echo "decode_e2e: FAIL batch $bs ($ad): $same of 5 outputs equal, $new vs $cpu_new new tokens" >&2
                diff "$out.out" "$work/cpu_$ad.out" | head -20
                failed=1
            fi
        else
            echo "info batch $bs, $ad: $same of 5 outputs equal the cpu backend's ($new vs $cpu_new new tokens)"
        fi
    done
done
# --backend auto takes the GPU when there is one
"$bin/osstune-translate" "${common[@]}" --backend auto --batch-size 2 > "$work/auto.out" 2> "$work/auto.err" ||
    { cat "$work/auto.err"; failed=1; }
grep -q "(cuda backend)" "$work/auto.err" || { echo "decode_e2e: FAIL --backend auto did not pick cuda" >&2; failed=1; }
[ "$failed" = 0 ] && echo "decode_e2e ($mode): all passed"
exit "$failed"
