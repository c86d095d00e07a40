#!/usr/bin/env python3
"""chrF2 and char-BLEU-4 of osstune-translate (its --hyp scoring mode) against the sacrebleu package.

usage: test_translate_metrics.py OSSTUNE_TRANSLATE random|corpus WORK_DIR

random: random corpora mixing Han characters, Latin letters, digits, punctuation, astral-plane characters,
        combining marks and every kind of Unicode whitespace (and U+200B, which is not whitespace), short
        references (shorter than the n-gram orders), empty hypotheses, exact and near copies; overall and
        per-`source` scores, system and copy baseline.
corpus: the taigi corpus (data/sample if present, else ../shared/data/taigi): the copy baseline of the dev rows
        in both directions against sacrebleu; with the full corpus, also the copy-baseline table of its README.
        Exits 77 (skipped) when no corpus is there.

Tolerance: 1e-6 absolute on scores in 0..100. The C code repeats sacrebleu's floating-point steps, so the
only difference left is the 10 significant digits of the JSON.
"""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import Checks  # noqa: E402

check = Checks("test_translate_metrics", verbose=False)

TOL = 1e-6

try:
    import sacrebleu
except ImportError:
    print("FAIL: the sacrebleu package is missing: pip install -r tests/requirements.txt")
    sys.exit(1)


def ref_scores(hyps, refs):
    chrf = sacrebleu.metrics.CHRF().corpus_score(hyps, [refs]).score
    bleu = sacrebleu.metrics.BLEU(tokenize="char").corpus_score(hyps, [refs]).score
    return chrf, bleu


def run_tool(tool, direction, ref_path, hyp_path):
    p = subprocess.run([tool, "--direction", direction, "--ref", ref_path, "--hyp", hyp_path],
                       capture_output=True, text=True, encoding="utf-8")
    if p.returncode != 0:
        print("FAIL osstune-translate --hyp exited %d: %s" % (p.returncode, p.stderr.strip()))
        sys.exit(1)
    lines = p.stdout.splitlines()
    check(len(lines) == 1, "--hyp mode printed %d lines, expected the JSON line only" % len(lines))
    return json.loads(lines[-1])


def compare(label, got, hyps, srcs, refs):
    """got: the tool's JSON object (or one by_source entry) for outputs hyps, copy baseline srcs, references refs."""
    chrf, bleu = ref_scores(hyps, refs)
    copy_chrf, copy_bleu = ref_scores(srcs, refs)
    for key, want in (("chrf", chrf), ("bleu", bleu), ("copy_chrf", copy_chrf), ("copy_bleu", copy_bleu)):
        check(abs(got[key] - want) <= TOL, "%s %s: ours %.10f, sacrebleu %.10f" % (label, key, got[key], want))
    check(got["count"] == len(hyps), "%s count %s, expected %d" % (label, got["count"], len(hyps)))
    return chrf, bleu


def write_case(work, name, hyps, srcs, refs, groups, direction):
    """The hypotheses file and a TSV whose source/target columns for `direction` are srcs/refs."""
    hyp_path = os.path.join(work, name + ".hyp.txt")
    ref_path = os.path.join(work, name + ".ref.tsv")
    with open(hyp_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(h + "\n" for h in hyps))
    zh, nan = (srcs, refs) if direction == "zh2nan" else (refs, srcs)
    with open(ref_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("zh\tnan" + ("\tsource" if groups else "") + "\n")
        for i in range(len(refs)):
            f.write(zh[i] + "\t" + nan[i] + ("\t" + groups[i] if groups else "") + "\n")
    return hyp_path, ref_path


def check_case(tool, work, name, hyps, srcs, refs, groups=None, direction="zh2nan"):
    hyp_path, ref_path = write_case(work, name, hyps, srcs, refs, groups, direction)
    got = run_tool(tool, direction, ref_path, hyp_path)
    compare(name, got, hyps, srcs, refs)
    if groups:
        names = list(dict.fromkeys(groups))
        check(list(got.get("by_source", {})) == names,
              "%s by_source keys %s, expected %s" % (name, list(got.get("by_source", {})), names))
        for g in names:
            idx = [i for i in range(len(refs)) if groups[i] == g]
            compare("%s[%s]" % (name, g), got["by_source"][g], [hyps[i] for i in idx], [srcs[i] for i in idx],
                    [refs[i] for i in idx])
    else:
        check("by_source" not in got, name + ": by_source without a source column")


# ---- random corpora ----------------------------------------------------------------------------------------------
HAN = "的一是不了人我在有他這為之大來以個中上們到說國和地也子時道出要就下天氣今日真好毋佇伊厝"
OTHER = "abcAB019，。！？、,.!?()-" + "\U0001F600\U00020000\u0301\u200b"
# Python's str.split() whitespace (no \t, \n, \r: they are the file formats' separators)
SPACES = [" ", "\u3000", "\xa0", "\u2009", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2028", "\u202f", "\u1680"]


def random_text(rng, max_len):
    n = rng.choice([0, 1, 2, 3, 5, rng.randint(0, max_len)])
    out = []
    for _ in range(n):
        r = rng.random()
        out.append(rng.choice(HAN[:12]) if r < 0.5 else rng.choice(HAN) if r < 0.7 else
                   rng.choice(OTHER) if r < 0.88 else rng.choice(SPACES))
    return "".join(out)


def perturb(rng, s):
    chars = list(s)
    for _ in range(rng.randint(0, 3)):
        op = rng.random()
        if op < 0.4 and chars:
            chars[rng.randrange(len(chars))] = rng.choice(HAN)
        elif op < 0.7:
            chars.insert(rng.randint(0, len(chars)), rng.choice(SPACES + list(HAN)))
        elif chars:
            del chars[rng.randrange(len(chars))]
    return "".join(chars)


def run_random(tool, work):
    for seed in range(6):
        rng = random.Random(seed)
        n = 150
        refs = [random_text(rng, 40) for _ in range(n)]
        hyps, srcs = [], []
        for r in refs:
            kind = rng.random()
            hyps.append(r if kind < 0.15 else perturb(rng, r) if kind < 0.6 else random_text(rng, 40))
            srcs.append(perturb(rng, r) if rng.random() < 0.5 else random_text(rng, 40))
        groups = [rng.choice(["moedict-twblg", "icorpus-hanji", "x y"]) for _ in range(n)]
        # a tab inside a hypothesis line is ordinary whitespace
        hyps[3] = "今\t天" + hyps[3]
        direction = "zh2nan" if seed % 2 == 0 else "nan2zh"
        check_case(tool, work, "random%d" % seed, hyps, srcs, refs, groups if seed < 4 else None, direction)
    check_case(tool, work, "single", ["今天天氣很好"], ["今天天氣很好。"], ["今仔日天氣真好。"])
    check_case(tool, work, "all-empty-hyps", ["", "", ""], ["a", "", "xyz"], ["abc", "今", "de"])
    check_case(tool, work, "short-refs", ["abcdefgh", "今天天氣很好", "x"], ["ab", "今", "xx"], ["ab", "今天", "x"])
    check_case(tool, work, "whitespace-only", ["\u3000 \xa0", "a b"], ["  ", "ab"], ["ab", "a\u2009b"])


# ---- the taigi corpus --------------------------------------------------------------------------------------------
def read_tsv(path):
    with open(path, encoding="utf-8", newline="\n") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    head = rows[0]
    return [dict(zip(head, r)) for r in rows[1:]]


# The copy-baseline table of ../shared/data/taigi/README.md: (set, subset) -> zh2nan chrF, BLEU, nan2zh chrF, BLEU
README_TABLE = {
    ("test", "all"): (48.28, 54.41, 48.03, 54.42),
    ("test", "icorpus-hanji"): (52.92, 60.06, 53.19, 60.05),
    ("test", "moedict-twblg"): (14.74, 13.80, 13.80, 13.98),
    ("dev", "all"): (46.97, 53.16, 46.72, 53.18),
    ("dev", "icorpus-hanji"): (51.23, 58.42, 51.50, 58.41),
    ("dev", "moedict-twblg"): (17.72, 17.54, 16.54, 17.76),
}


def readme_rule_chrf(hyps, refs):
    """chrF as the corpus README's script computes it. It differs from sacreBLEU in one detail: it counts the
    hypothesis n-grams of an order even in a segment whose reference has none of that order (sacreBLEU counts
    0 there). Used only to show that this detail explains the README's chrF values."""
    from collections import Counter
    stats = [[0, 0, 0] for _ in range(6)]
    for h, r in zip(hyps, refs):
        h, r = "".join(h.split()), "".join(r.split())
        for n in range(1, 7):
            hc = Counter(h[i:i + n] for i in range(len(h) - n + 1))
            rc = Counter(r[i:i + n] for i in range(len(r) - n + 1))
            stats[n - 1][0] += sum(hc.values())
            stats[n - 1][1] += sum(rc.values())
            stats[n - 1][2] += sum(min(c, rc[g]) for g, c in hc.items())
    p = [m / a for a, b, m in stats if a and b]
    r = [m / b for a, b, m in stats if a and b]
    P, R = sum(p) / len(p), sum(r) / len(r)
    return 100 * 5 * P * R / (4 * P + R)


def run_corpus(tool, work):
    sample, full = "data/sample", "../shared/data/taigi"
    if os.path.exists(os.path.join(sample, "dev.tsv")):
        dev_dir = sample
    elif os.path.exists(os.path.join(full, "dev.tsv")):
        dev_dir = full
    else:
        print("SKIP: no taigi corpus (looked for data/sample/dev.tsv and ../shared/data/taigi/dev.tsv)")
        sys.exit(77)

    # 1. the copy baseline of the dev rows, both directions, overall and per source, against sacrebleu
    rows = read_tsv(os.path.join(dev_dir, "dev.tsv"))
    for direction, src_col, tgt_col in (("zh2nan", "zh", "nan"), ("nan2zh", "nan", "zh")):
        srcs, refs = [r[src_col] for r in rows], [r[tgt_col] for r in rows]
        groups = [r["source"] for r in rows] if "source" in rows[0] else None
        check_case(tool, work, "dev-copy-" + direction, srcs, srcs, refs, groups, direction)

    # 2. the README's copy-baseline table (full corpus only: the sample is a subset)
    if not os.path.exists(os.path.join(full, "test.tsv")):
        print("info: ../shared/data/taigi/test.tsv absent: README table not checked")
        return
    for split in ("test", "dev"):
        rows = read_tsv(os.path.join(full, split + ".tsv"))
        for subset in ("all", "icorpus-hanji", "moedict-twblg"):
            sub = [r for r in rows if subset == "all" or r["source"] == subset]
            want = README_TABLE[(split, subset)]
            for k, (direction, src_col, tgt_col) in enumerate((("zh2nan", "zh", "nan"), ("nan2zh", "nan", "zh"))):
                srcs, refs = [r[src_col] for r in sub], [r[tgt_col] for r in sub]
                hyp_path, ref_path = write_case(work, "%s-%s-%s" % (split, subset, direction), srcs, srcs, refs,
                                                None, direction)
                got = run_tool(tool, direction, ref_path, hyp_path)
                sb_chrf, sb_bleu = compare("%s %s %s" % (split, subset, direction), got, srcs, srcs, refs)
                table_chrf, table_bleu = want[2 * k], want[2 * k + 1]
                label = "%s %s %s" % (split, subset, direction)
                # BLEU: the README's number is ours rounded to 2 decimals.
                check(abs(got["copy_bleu"] - table_bleu) <= 0.005 + 1e-9,
                      "%s copy BLEU %.4f, README %.2f" % (label, got["copy_bleu"], table_bleu))
                # chrF: ours is sacreBLEU's (checked above); the README's value is its script's rule rounded.
                readme_rule = readme_rule_chrf(srcs, refs)
                check(abs(readme_rule - table_chrf) <= 0.005 + 1e-9,
                      "%s: the README rule gives chrF %.4f, README %.2f" % (label, readme_rule, table_chrf))
                print("info %-32s copy chrF %.4f (README %.2f, its rule %.4f)  copy BLEU %.4f (README %.2f)"
                      % (label, got["copy_chrf"], table_chrf, readme_rule, got["copy_bleu"], table_bleu))


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ("random", "corpus"):
        print(__doc__)
        sys.exit(2)
    tool, mode, work = sys.argv[1:]
    os.makedirs(work, exist_ok=True)
    (run_random if mode == "random" else run_corpus)(tool, work)
    sys.exit(check.finish(mode))


if __name__ == "__main__":
    main()
