#!/usr/bin/env python3
"""Write a Hugging Face tokenizer.json for o200k_harmony from an o200k_base .tiktoken file.

The layout follows what transformers' TikTokenConverter produces for gpt-oss: a byte-level BPE whose vocab maps
GPT-2 byte-level strings to ids (id = tiktoken rank), merges for every way a token splits into two tokens
(ordered by the rank of the result), the o200k Split pre-tokenizer followed by ByteLevel(use_regex=false), and
the harmony special tokens 199998..200018 as added tokens. Standard library only, so the C tests can always
build it.

usage: data_make_tokenizer_json.py O200K_BASE.tiktoken OUT_DIR   (writes OUT_DIR/tokenizer.json)
"""
import base64
import json
import os
import sys

PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])

SPECIAL = {199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>", 200003: "<|constrain|>",
           200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>", 200008: "<|message|>",
           200012: "<|call|>", 200018: "<|endofprompt|>"}


def byte_level_alphabet():
    """GPT-2's map from bytes to printable characters."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out_dir = sys.argv[1], sys.argv[2]
    ranks = {}
    with open(src, "rb") as f:
        for line in f:
            if line.strip():
                b64, rank = line.split()
                ranks[base64.b64decode(b64)] = int(rank)
    alphabet = byte_level_alphabet()

    def to_str(b):
        return "".join(alphabet[x] for x in b)

    vocab = {to_str(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, rank in ranks.items():
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], to_str(left), to_str(right)))
    merges.sort()
    added = [{"id": i, "content": SPECIAL.get(i, "<|reserved_%d|>" % i), "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i in range(199998, 200019)]
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [[m[3], m[4]] for m in merges]},
    }
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, "tokenizer.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    os.replace(tmp, os.path.join(out_dir, "tokenizer.json"))
    print("wrote %s: %d tokens, %d merges" % (os.path.join(out_dir, "tokenizer.json"), len(vocab), len(merges)))


if __name__ == "__main__":
    main()
