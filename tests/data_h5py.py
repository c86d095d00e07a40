#!/usr/bin/env python3
"""h5py reads what osstune-prep wrote and finds the same samples.

Runs osstune-prep on pairs files (TSV and the same pairs as JSONL; both directions, one direction, and all six
with the Tâi-lô ones), then reads
the HDF5 output with h5py and checks, for every sample:
  - the schema: attributes (format, version 1, tokenizer SHA-256 = the hash of the vocabulary file, texts,
    counts), dataset types and shapes, /tokens chunked and compressed;
  - offsets, direction and source_line consistent with the input order (both = zh2nan then nan2zh per pair; the
    directions' source and target columns as formats/directions.h lists them);
  - an instruction_NAME attribute for exactly the Tâi-lô directions the file holds;
  - the decoded ids (a decoder written here from the .tiktoken file) equal an independent Python rendering of the
    harmony conversation for the input pair, and loss_start points at <|channel|> right after `assistant`;
  - when the `tokenizers` package and a tokenizer.json are available: the ids equal an independent encoding of
    the same pieces by Hugging Face tokenizers (and that tokenizer reproduces the 57 reference cases).

usage: data_h5py.py OSSTUNE_PREP [--corpus DIR] [--tokenizer-json DIR_OR_FILE]
Exit 77 (skipped) only when h5py is not installed.
"""
import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:
    print("SKIP: h5py (and numpy) are needed to read the HDF5 output: %s" % e)
    sys.exit(77)

VOCAB_FILE = "data/o200k_base.tiktoken"
SYSTEM = ("You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n\nReasoning: low\n\n"
          "# Valid channels: analysis, commentary, final. Channel must be included for every message.")
INSTRUCTION = {0: "Translate Mandarin (華語) into Taiwanese Hokkien (台語) written in Han characters.",
               1: "Translate Taiwanese Hokkien (台語) into Mandarin (華語) written in Traditional characters.",
               2: "Translate Mandarin (華語) into Taiwanese Hokkien (台語) written in Tâi-lô romanization.",
               3: "Translate Taiwanese Hokkien (台語) written in Tâi-lô romanization into Mandarin (華語) written in "
                  "Traditional characters.",
               4: "Write this Taiwanese Hokkien (台語) text, given in Han characters, in Tâi-lô romanization.",
               5: "Write this Taiwanese Hokkien (台語) text, given in Tâi-lô romanization, in Han characters."}
# direction number: (name, source column, target column), as in formats/directions.h
DIRECTIONS = {0: ("zh2nan", "zh", "nan"), 1: ("nan2zh", "nan", "zh"), 2: ("zh2tl", "zh", "nan_tl"),
              3: ("tl2zh", "nan_tl", "zh"), 4: ("nan2tl", "nan", "nan_tl"), 5: ("tl2nan", "nan_tl", "nan")}
SPECIAL = {199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>", 200003: "<|constrain|>",
           200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>", 200008: "<|message|>",
           200012: "<|call|>", 200018: "<|endofprompt|>"}

failures = 0


def check(cond, msg):
    global failures
    if not cond:
        failures += 1
        print("FAIL", msg)
    return cond


def load_vocab():
    id_to_bytes = {}
    with open(VOCAB_FILE, "rb") as f:
        for line in f:
            if line.strip():
                b64, rank = line.split()
                id_to_bytes[int(rank)] = base64.b64decode(b64)
    for i in range(199998, 201088):
        id_to_bytes[i] = SPECIAL.get(i, "<|reserved_%d|>" % i).encode()
    return id_to_bytes


def render(src, tgt, direction):
    """The harmony conversation of one training sample, as text (spec §4.7)."""
    return ("<|start|>system<|message|>" + SYSTEM + "<|end|>"
            "<|start|>developer<|message|># Instructions\n\n" + INSTRUCTION[direction] + "<|end|>"
            "<|start|>user<|message|>" + src + "<|end|>"
            "<|start|>assistant<|channel|>final<|message|>" + tgt + "<|return|>")


def read_pairs_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    cols = lines[0].split("\t")
    out = []
    for k, line in enumerate(lines[1:], start=2):
        if line:
            row = dict(zip(cols, line.split("\t")))
            out.append((k, {c: row[c] for c in ("zh", "nan", "nan_tl") if c in row}))
    return out


class HFEncoder:
    """Independent ids for the same pieces, through Hugging Face tokenizers (when available)."""

    def __init__(self, path):
        from tokenizers import Tokenizer
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        self.tok = Tokenizer.from_file(path)

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def sample(self, src, tgt, direction):
        e = self.encode
        ids = [200006] + e("system") + [200008] + e(SYSTEM) + [200007]
        ids += [200006] + e("developer") + [200008] + e("# Instructions\n\n" + INSTRUCTION[direction]) + [200007]
        ids += [200006] + e("user") + [200008] + e(src) + [200007]
        ids += [200006] + e("assistant") + [200005] + e("final") + [200008] + e(tgt) + [200002]
        return ids


def run_prep(prep, src, out, *extra):
    r = subprocess.run([prep, "--tokenizer", VOCAB_FILE, "--in", src, "--out", out, "--quiet"] + list(extra),
                       capture_output=True, text=True)
    check(r.returncode == 0, "osstune-prep %s failed (%d): %s" % (src, r.returncode, r.stderr))
    return r


def check_file(h5_path, pairs, directions, vocab, vocab_sha, hf, source_name):
    with h5py.File(h5_path, "r") as f:
        a = f.attrs
        n_expected = len(pairs) * len(directions)
        check(a["format"] == "osstune-pairs" and int(a["version"]) == 1, "format/version attributes")
        check(a["tokenizer_sha256"] == vocab_sha, "tokenizer_sha256 %s != %s" % (a["tokenizer_sha256"], vocab_sha))
        check(int(a["tokenizer_vocab_size"]) == 201088, "tokenizer_vocab_size")
        check(a["system_text"] == SYSTEM and a["instruction_zh2nan"] == INSTRUCTION[0]
              and a["instruction_nan2zh"] == INSTRUCTION[1], "system and instruction texts")
        for d in range(2, 6):
            name = "instruction_" + DIRECTIONS[d][0]
            check((a.get(name) == INSTRUCTION[d]) if d in directions else name not in a,
                  "%s: attribute %s %s" % (h5_path, name, "missing or wrong" if d in directions else "not expected"))
        check(a["source_file"] == source_name, "source_file %r" % a["source_file"])
        check(int(a["n_samples"]) == n_expected and int(a["n_pairs"]) == len(pairs) and int(a["n_rejected"]) == 0,
              "counts: %s" % dict(a))
        tokens, offsets = f["tokens"], f["offsets"][:]
        loss_start, direction, source_line = f["loss_start"][:], f["direction"][:], f["source_line"][:]
        check(tokens.dtype == np.uint32 and offsets.dtype == np.uint64 and loss_start.dtype == np.uint32
              and direction.dtype == np.uint8 and source_line.dtype == np.uint64, "dataset types")
        check(tokens.chunks is not None and tokens.compression == "gzip", "/tokens chunked and compressed")
        check(offsets.shape == (n_expected + 1,) and loss_start.shape == (n_expected,), "shapes")
        check(offsets[0] == 0 and offsets[-1] == tokens.shape[0] == int(a["n_tokens"]), "offsets span /tokens")
        ids_all = tokens[:]
        bad_text = bad_loss = bad_hf = 0
        for i in range(n_expected):
            line, cols = pairs[i // len(directions)]
            d = directions[i % len(directions)]
            src, tgt = cols[DIRECTIONS[d][1]], cols[DIRECTIONS[d][2]]
            if not check(direction[i] == d and source_line[i] == line, "sample %d: direction/source_line" % i):
                continue
            ids = ids_all[offsets[i]:offsets[i + 1]].tolist()
            text = b"".join(vocab[t] for t in ids)
            if text != render(src, tgt, d).encode():
                bad_text += 1
                if bad_text <= 3:
                    print("sample %d decodes to %r" % (i, text[:200]))
            ls = int(loss_start[i])
            answer = b"".join(vocab[t] for t in ids[ls:])
            if not (ids[ls] == 200005 and ids[ls - 1] == 173781
                    and answer == ("<|channel|>final<|message|>" + tgt + "<|return|>").encode()):
                bad_loss += 1
            if hf is not None and ids != hf.sample(src, tgt, d):
                bad_hf += 1
                if bad_hf <= 3:
                    print("sample %d: ids differ from the Hugging Face tokenizers encoding" % i)
        check(bad_text == 0, "%s: %d of %d samples do not decode to the rendering of their pair" % (h5_path, bad_text, n_expected))
        check(bad_loss == 0, "%s: %d samples have a wrong loss_start" % (h5_path, bad_loss))
        if hf is not None:
            check(bad_hf == 0, "%s: %d samples differ from the independent encoding" % (h5_path, bad_hf))
        print("ok   %s: %d samples, %d tokens%s" % (h5_path, n_expected, tokens.shape[0],
                                                   ", ids equal to Hugging Face tokenizers" if hf else ""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prep")
    ap.add_argument("--corpus", default="../shared/data/taigi")
    ap.add_argument("--tokenizer-json")
    args = ap.parse_args()
    inputs = [os.path.join(args.corpus, "dev.tsv"), "data/sample/train.tsv"]
    if not os.path.exists(inputs[0]):
        print("note: %s not found; using the bundled sample only" % inputs[0])
        inputs = ["data/sample/dev.tsv", "data/sample/train.tsv"]

    vocab = load_vocab()
    with open(VOCAB_FILE, "rb") as f:
        vocab_sha = hashlib.sha256(f.read()).hexdigest()
    hf = None
    if args.tokenizer_json:
        try:
            hf = HFEncoder(args.tokenizer_json)
        except ImportError:
            print("note: the tokenizers package is not installed; skipping the independent id comparison")
    if hf is not None:
        with open("tests/fixtures/o200k_cases.jsonl", encoding="utf-8") as f:
            cases = [json.loads(l) for l in f if l.strip()]
        same = sum(hf.encode(c["text"]) == c["ids"] for c in cases)
        check(same == len(cases) == 57, "Hugging Face tokenizers reproduces %d of %d reference cases" % (same, len(cases)))

    with tempfile.TemporaryDirectory() as tmp:
        for path in inputs:
            pairs = read_pairs_tsv(path)
            out = os.path.join(tmp, "both.h5")
            run_prep(args.prep, path, out)
            check_file(out, pairs, [0, 1], vocab, vocab_sha, hf, os.path.basename(path))
        # One direction, and the same pairs as JSONL (line numbers then count from 1: no header).
        pairs = read_pairs_tsv(inputs[0])
        out = os.path.join(tmp, "nan2zh.h5")
        run_prep(args.prep, inputs[0], out, "--directions", "nan2zh")
        check_file(out, pairs, [1], vocab, vocab_sha, None, os.path.basename(inputs[0]))
        jsonl = os.path.join(tmp, "pairs.jsonl")
        with open(jsonl, "w", encoding="utf-8") as f:
            for _, cols in pairs:
                f.write(json.dumps(dict(cols, note="extra keys are ignored"), ensure_ascii=False) + "\n")
        out = os.path.join(tmp, "jsonl.h5")
        run_prep(args.prep, jsonl, out)
        jsonl_pairs = [(k + 1, cols) for k, (_, cols) in enumerate(pairs)]
        check_file(out, jsonl_pairs, [0, 1], vocab, vocab_sha, None, "pairs.jsonl")
        # The Tâi-lô directions read the nan_tl column (TSV) or key (JSONL): all six, and a list in its own order.
        sample = read_pairs_tsv("data/sample/dev.tsv")
        out = os.path.join(tmp, "all.h5")
        run_prep(args.prep, "data/sample/dev.tsv", out, "--directions", "all")
        check_file(out, sample, [0, 1, 2, 3, 4, 5], vocab, vocab_sha, hf, "dev.tsv")
        out = os.path.join(tmp, "some.h5")
        run_prep(args.prep, jsonl, out, "--directions", "tl2nan,zh2tl")
        check_file(out, jsonl_pairs, [5, 2], vocab, vocab_sha, None, "pairs.jsonl")
    print("data_h5py: %s" % ("all checks passed" if failures == 0 else "%d checks failed" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
