#!/usr/bin/env python3
"""Translations beside their sources and references, then their scores against the copy-the-source baseline.

usage: show_translations.py TSV HYP DIRECTION [--rows N] [--json SCORES] [--compact]

TSV is the corpus file the sentences came from (a header naming zh, nan, nan_tl), HYP one output per line (row i
of HYP translates data row i of TSV), DIRECTION one of the direction table's names (formats/directions.c), which
says which column is the source and which the reference. SCORES is osstune-translate's JSON score line. --compact
prints one tab-separated line per row (source, reference, output).
"""
import argparse
import json

# source and target column of each direction, as in formats/directions.c
COLUMNS = {"zh2nan": ("zh", "nan"), "nan2zh": ("nan", "zh"), "zh2tl": ("zh", "nan_tl"), "tl2zh": ("nan_tl", "zh"),
           "nan2tl": ("nan", "nan_tl"), "tl2nan": ("nan_tl", "nan")}


def main():
    ap = argparse.ArgumentParser(usage=__doc__.split("\n")[2])
    ap.add_argument("tsv")
    ap.add_argument("hyp")
    ap.add_argument("direction", choices=sorted(COLUMNS))
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--compact", action="store_true")
    a = ap.parse_args()
    rows = [line.rstrip("\n").split("\t") for line in open(a.tsv, encoding="utf-8")]
    src, ref = (rows[0].index(c) for c in COLUMNS[a.direction])
    outs = [line.rstrip("\n") for line in open(a.hyp, encoding="utf-8")]
    for row, out in list(zip(rows[1:], outs))[:a.rows]:
        if a.compact:
            print("  sample: %s\t%s\t%s" % (row[src], row[ref], out))
        else:
            print("  source     %s\n  reference  %s\n  output     %s\n" % (row[src], row[ref], out))
    if a.json:
        r = json.load(open(a.json))
        for name, s in [("all", r)] + list(r.get("by_source", {}).items()):
            print("  %-15s n %4d   chrF %5.1f   copy-the-source chrF %5.1f   (%+.1f)"
                  % (name, s["count"], s["chrf"], s["copy_chrf"], s["chrf"] - s["copy_chrf"]))


if __name__ == "__main__":
    main()
