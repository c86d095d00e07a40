"""The trained model, the same everywhere: osstune-translate and llama.cpp, both greedy, write the same tokens.

The tiny model with a LoRA trained for a few steps (test_export_trained_setup.sh), exported all-float32: base.gguf +
adapter.gguf of tiny_f32, so that llama.cpp (with an F32 KV cache) computes in float32 like osstune's CPU backend.
For the first ROWS rows of data/sample/dev.tsv, in both directions:
- llama.cpp (llama-cpp-python, in this process) decodes greedily from the prompt ids osstune renders, stopping where
  osstune-translate stops (<|return|>, <|call|>, or MAX_NEW tokens); its ids become a line of text by osstune's own
  rule (test_export_harmony --answer, the function osstune-translate uses);
- osstune-translate (CPU, greedy) translates the same rows: its lines must equal those;
- osstune-logits, given the prompt and llama.cpp's tokens, must pick llama.cpp's token at every generated position
  (its argmax), so the agreement holds token by token, not only for the text: for the first TOKEN_ROWS rows of each
  direction (each call runs the whole sequence through the 201,088-row head, ~1.3 s), and for every row whose text
  differs, to find where and why.
osstune runs here with llama.cpp's rounded YaRN correction range (`truncate: true`, spec §2.4), the one computation
a GGUF cannot carry. A difference passes only as a tie: at the first differing token the two engines' top two
logits are within TIE of each other in both (float32 summation order moves logits by ~1e-5, test_export_llama_cpp).
The same comparison with HF's unrounded range (the model's own config) is reported, not required: how many outputs
differ, the cause being that rounding (the only change between the two runs).

usage: test_export_same_tokens.py BIN_DIR SCRATCH_DIR HARMONY_HELPER
"""
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_export_common import (  # noqa: E402
    SKIP, TIKTOKEN, Failures, harmony_answer, harmony_prompt, osstune_logits, with_truncated_yarn)

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:
    print("SKIPPED: llama-cpp-python is not installed (pip install -r tests/requirements.txt)")
    sys.exit(SKIP)

ROWS = 20
TOKEN_ROWS = 5
MAX_NEW = 32
STOP = (200002, 200012)  # <|return|>, <|call|>: where osstune-translate stops
# Two logits closer than this may swap places between two float32 engines (observed differences: ~1e-5).
TIE = 1e-4
GGML_TYPE_F32 = 0
SOURCE_COLUMN = {"zh2nan": "zh", "nan2zh": "nan"}


def dev_rows(work):
    """The first ROWS rows of data/sample/dev.tsv as a zh/nan TSV for osstune-translate, and as dicts."""
    lines = open("data/sample/dev.tsv", encoding="utf-8").read().splitlines()
    head = lines[0].split("\t")
    rows = [dict(zip(head, l.split("\t"))) for l in lines[1:ROWS + 1]]
    path = os.path.join(work, "rows.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("zh\tnan\n" + "".join(f"{r['zh']}\t{r['nan']}\n" for r in rows))
    return path, rows


def top2_gap(logits):
    a = np.partition(logits, -2)[-2:]
    return float(a[1] - a[0])


def llama_greedy(llm, prompt):
    """llama.cpp's greedy continuation of prompt (ids), with the logits of each choice."""
    llm.reset()
    llm.eval(prompt)
    ids, logit_rows = [], []
    for _ in range(MAX_NEW):
        # The logits of the last token evaluated (llama.cpp's own output buffer: without logits_all, llama-cpp-python
        # does not copy them into llm.scores).
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),)).copy()
        tok = int(np.argmax(logits))  # the lowest id among equal maxima, as osstune's argmax
        ids.append(tok)
        logit_rows.append(logits)
        if tok in STOP:
            break
        llm.eval([tok])
    return ids, logit_rows


def translate(bin_dir, model, adapter, direction, rows_tsv):
    out = subprocess.run([os.path.join(bin_dir, "osstune-translate"), "--model", model, "--adapter", adapter,
                          "--tokenizer", TIKTOKEN, "--direction", direction, "--in", rows_tsv, "--backend", "cpu",
                          "--max-new-tokens", str(MAX_NEW)], check=True, capture_output=True)
    return out.stdout.decode("utf-8").split("\n")[:-1]


def first_difference(bin_dir, model, adapter, prompt, ids, logits_path):
    """osstune-logits on prompt + llama.cpp's ids: the first generated position where osstune's argmax is another
    token, as (position, osstune's token, how far osstune puts llama.cpp's token behind it), or None when every
    token agrees."""
    if len(ids) > 1:
        seq = prompt + ids[:-1]
        lg = osstune_logits(bin_dir, model, seq, logits_path, adapter=adapter)[len(prompt) - 1:]
    else:
        lg = osstune_logits(bin_dir, model, prompt, logits_path, adapter=adapter)[-1:]
    for k, want in enumerate(ids):
        got = int(np.argmax(lg[k]))
        if got != want:
            return k, got, float(lg[k][got] - lg[k][want])
    return None


def main():
    bin_dir, scratch, helper = sys.argv[1:4]
    f = Failures("test_export_same_tokens")
    work = os.path.join(scratch, "trained", "same_tokens")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    adapter = os.path.join(scratch, "trained", "adapter")
    views = {"rounded": os.path.join(work, "tiny_f32_yarn_rounded"), "hf": os.path.join(scratch, "tiny_f32")}
    with_truncated_yarn(views["hf"], views["rounded"])
    rows_tsv, rows = dev_rows(work)
    logits_path = os.path.join(work, "logits.f32")
    f32 = os.path.join(scratch, "trained", "out_f32")
    # One thread: this tiny model decodes several times faster so than with two on a busy 2-core machine.
    llm = Llama(model_path=os.path.join(f32, "base.gguf"), lora_path=os.path.join(f32, "adapter.gguf"), n_ctx=512,
                n_batch=512, n_ubatch=512, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, n_threads=1, verbose=False)

    n_tokens, n_forced, min_gap, differ_hf = 0, 0, float("inf"), []
    for d in ("zh2nan", "nan2zh"):
        ours = {v: translate(bin_dir, path, adapter, d, rows_tsv) for v, path in views.items()}
        for v, lines in ours.items():
            f.check(len(lines) == len(rows), f"{d} {v}: osstune-translate wrote {len(lines)} lines for {len(rows)} rows")
        for i, row in enumerate(rows):
            prompt = harmony_prompt(helper, d, row[SOURCE_COLUMN[d]])["ids"]
            ids, logit_rows = llama_greedy(llm, prompt)
            n_tokens += len(ids)
            min_gap = min(min_gap, min(top2_gap(l) for l in logit_rows))
            theirs = harmony_answer(helper, ids)
            what = f"{d} row {i + 1}"
            same_text = i < len(ours["rounded"]) and ours["rounded"][i] == theirs
            diff = None
            if i < TOKEN_ROWS or not same_text:
                diff = first_difference(bin_dir, views["rounded"], adapter, prompt, ids, logits_path)
                n_forced += len(ids)
            if diff is None and same_text:
                pass
            elif diff is not None:
                k, tok, ours_ahead = diff
                theirs_ahead = float(logit_rows[k][ids[k]] - logit_rows[k][tok])
                tie = theirs_ahead < TIE and ours_ahead < TIE
                if f.check(tie, f"{what}: token {k + 1} of {len(ids)}: llama.cpp picks {ids[k]}, {theirs_ahead:.2e} "
                                f"ahead of {tok}; osstune picks {tok}, {ours_ahead:.2e} ahead: not a tie"):
                    print(f"{what}: a TIE at token {k + 1}: {ids[k]} and {tok} within {TIE} in both engines")
            else:
                f.check(False, f"{what}: the same tokens, but osstune-translate wrote\n{ours['rounded'][i]!r}\n"
                               f"and the ids read as\n{theirs!r}")
            if i < len(ours["hf"]) and ours["hf"][i] != theirs:
                differ_hf.append(what)
    if os.path.exists(logits_path):
        os.remove(logits_path)
    print(f"llama.cpp (float32 GGUF) and osstune-translate (CPU, YaRN range rounded as llama.cpp rounds it): "
          f"{2 * len(rows)} outputs ({n_tokens} greedy tokens) compared as text, {n_forced} tokens one by one; the "
          f"smallest top-two logit gap llama.cpp met: {min_gap:.2e}")
    print(f"with HF's unrounded YaRN range (the config as trained): {len(differ_hf)} of {2 * len(rows)} outputs "
          f"differ ({', '.join(differ_hf) or '-'}); the only change is the YaRN rounding (spec §2.4)")
    return f.finish()


if __name__ == "__main__":
    sys.exit(main())
