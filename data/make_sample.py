#!/usr/bin/env python3
"""Cut the bundled quickstart sample (data/sample/*.tsv) out of the taigi corpus, deterministically.

Rows are kept whole and unmodified, with all four columns and the header. From each split, every k-th row of
each source is taken, in file order:

  train.tsv: every 11th moedict-twblg row and every 28th icorpus-hanji row  (about 1,000 + 500 pairs)
  dev.tsv:   every 9th moedict-twblg row and every 26th icorpus-hanji row   (about 70 + 30 pairs)

usage: make_sample.py CORPUS_DIR OUT_DIR
"""
import os
import sys

EVERY = {"train.tsv": {"moedict-twblg": 11, "icorpus-hanji": 28},
         "dev.tsv": {"moedict-twblg": 9, "icorpus-hanji": 26}}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    corpus, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for name, every in EVERY.items():
        with open(os.path.join(corpus, name), encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
        header, rows = lines[0], [r for r in lines[1:] if r]
        col = header.split("\t").index("source")
        seen, kept = {}, []
        for row in rows:
            src = row.split("\t")[col]
            k = seen.get(src, 0)
            seen[src] = k + 1
            if src in every and k % every[src] == 0:
                kept.append(row)
        with open(os.path.join(out, name), "w", encoding="utf-8", newline="") as f:
            f.write("\n".join([header] + kept) + "\n")
        counts = {s: sum(1 for r in kept if r.split("\t")[col] == s) for s in every}
        print("%s: %d rows %s" % (name, len(kept), counts))


if __name__ == "__main__":
    main()
