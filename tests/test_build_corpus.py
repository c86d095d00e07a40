#!/usr/bin/env python3
"""tools/build-corpus.py: the corpus rebuilt from clones of its sources. Standard library only.

  1. On the hand-made clones in tests/fixtures/corpus (a few rows in each source's real format, each made to meet
     one rule): every rule (normalization, each drop rule, the MOE explanation rules, iCorpus units, Tâi-lô
     conversion, dedup, the split buckets, the lexicon's rules) gives the rows listed here, in the splits listed.
  2. Determinism: two runs write the same bytes; without --icorpus / --chhoetaigi the other outputs still come.
  3. The split rule against the corpus the project ships: every row of data/moe/*.tsv and data/sample/*.tsv is in
     the split the bucket function gives its group; the MOE rows of data/sample are the cut data/make_sample.py
     takes of data/moe. With the full corpus (--corpus DIR, default ../shared/data/taigi, skipped when absent):
     the same for all its rows, and every row passes the drop rules unchanged.
  4. osstune-prep reads the output, all six directions.
  5. Errors: a missing source file, misaligned iCorpus files, invalid UTF-8 (file and line named), an output that
     would replace an input: exit 1, a message, nothing written.

usage: test_build_corpus.py OSSTUNE_PREP WORK_DIR [--corpus DIR]
"""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import Checks  # noqa: E402

check = Checks("test_build_corpus")

ROOT = os.getcwd()
BUILDER = os.path.join(ROOT, "tools", "build-corpus.py")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "corpus")
CLONES = {"--moedict": "moedict-data-twblg", "--icorpus": "icorpus_ka1_han3-ji7", "--chhoetaigi": "ChhoeTaigiDatabase"}


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bc = load(BUILDER, "build_corpus")


def build(out, clones=None, extra=()):
    clones = clones or {opt: os.path.join(FIXTURES, d) for opt, d in CLONES.items()}
    args = [sys.executable, BUILDER, "--out", out] + [x for opt, d in clones.items() for x in (opt, d)] + list(extra)
    return subprocess.run(args, capture_output=True, text=True)


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    check(lines[-1] == "" and lines[0] == bc.HEADER, "%s: header and final newline" % os.path.basename(path))
    return [tuple(l.split("\t")) for l in lines[1:-1]]


# What the fixture clones must give: {split: [(zh, nan, source, nan_tl)]}, in order.
LONG, SHORT = "長" * 200 + "，", "短" * 120 + "。"
EXPECTED = {
    "train": [
        ("我明天要去市場。", "我明仔載欲去市場。", "moedict-twblg", "Guá bîn-á-tsài beh khì tshī-tiûnn."),
        ("我明天要去市場。", "我明仔載愛去菜市仔。", "moedict-twblg", "Guá bîn-á-tsài ài khì tshài-tshī-á."),
        ("交通新聞", "交通新聞", "icorpus-hanji", "Kau-thong sin-bûn"),
        ("記者王小明台北報導", "記者王小明臺北報導", "icorpus-hanji", "Kì-tsiá ông-sió-bîng tâi-pak pò-tō"),
        ("今天早上，台北下大雨，很多人說「好冷」。", "今仔日早起，臺北落大雨，真濟人講「足寒」。", "icorpus-hanji",
         'Kin-á-ji̍t tsá-khí, tâi-pak lo̍h tuā-hōo, tsin-tsē lâng kóng "tsiok-kuânn".'),
        ("（記者報導）", "（記者報導）", "icorpus-hanji", "(Kì-tsiá pò-tō)"),
        ("他已經回家了。", "伊已經轉去矣。", "icorpus-hanji", "I í-king tńg--khì --ah."),
        (LONG, LONG, "icorpus-hanji", "Tn̂g " + " ".join(["tn̂g"] * 199) + ","),
        (SHORT, SHORT, "icorpus-hanji", "Té " + " ".join(["té"] * 119) + "."),
    ],
    "dev": [("我晚上不睡覺。", "我暗時毋睏。", "moedict-twblg", "Guá àm-sî m̄ khùn."),
            ("阿明會說台語。", "阿明會曉講台語。", "moedict-twblg", "A-bîng ē-hiáu kóng Tâi-gí.")],
    "test": [("你買了一把傘。", "你買一支雨傘。", "moedict-twblg", "Lí bé tsi̍t ki hōo-suànn.")],
    "heldout": [("他想吃麵。", "伊想欲食麵。", "moedict-twblg", "I siūnn-beh tsia̍h mī."),
                ("老師在家裡看書。", "老師咧厝裡讀冊。", "moedict-twblg", "Lāu-su teh tshù--lí tha̍k-tsheh.")],
    "lexicon": [("牙齒", "喙齒", "itaigi", "tshuì-khí"), ("青花菜", "青花", "itaigi", "tshenn-hue"),
                ("妳好", "你好", "itaigi", "lí hó")],
}
# Why each other fixture row is not in the output (the builder's count of each reason).
DROPPED = {("moedict-twblg", "explanation: more sentence-internal 。！？ in zh"): 1,
           ("moedict-twblg", "explanation: one side over 2.5 x the other + 4"): 1,
           ("moedict-twblg", "HTML"): 1, ("moedict-twblg", "kana / ideographic description character"): 1,
           ("moedict-twblg", "numeric-tone romanization in nan"): 1,
           ("moedict-twblg", "control / format / private-use character"): 1,
           ("moedict-twblg", "over 300 characters"): 1, ("moedict-twblg", "duplicate (zh, nan)"): 1,
           ("icorpus-hanji", "broken line"): 1, ("icorpus-hanji", "duplicate (zh, nan)"): 1,
           ("itaigi", "zh == nan"): 1, ("itaigi", "Han-Lo entry with Latin letters"): 1, ("itaigi", "duplicate"): 1,
           ("itaigi", "zh or nan in a held-out split"): 1, ("itaigi", "broken entry"): 1}


def test_fixtures(work):
    out = os.path.join(work, "fixture")
    r = build(out)
    if not check(r.returncode == 0, "build on the fixture clones: %s" % r.stderr.strip()):
        return None
    for split, rows in EXPECTED.items():
        got = read_tsv(os.path.join(out, split + ".tsv"))
        if not check(got == rows, "%s.tsv: %d rows as expected" % (split, len(rows))):
            for g in got:
                print("     got ", g)
    for (source, why), n in DROPPED.items():
        check(("%-14s %-52s %7d" % (source, "dropped: " + why, n)) in r.stdout, "%s: %d dropped: %s" % (source, n, why))
    check("the output will differ from it" in r.stdout, "the input hashes are compared with the published ones")
    # Rules one by one, on the builder's own functions.
    cases = [
        (bc.normalize("阿明　會曉  講 台語 。 "), "阿明會曉講台語。", "whitespace runs, spaces next to CJK"),
        (bc.normalize("Michie  Iwamoto 認為"), "Michie Iwamoto認為", "a space between Latin words stays"),
        (bc.normalize("Lawa ． Toyu"), "Lawa ． Toyu", "． is not CJK punctuation (spaces stay)"),
        (bc.split_key("「好冷」， ok！"), "好冷ok", "split key: no punctuation, symbols, spaces"),
        (bc.tailo_marks("tsu3-bi2 tik8-phai3-uan5 hua5-hu2"), "Tsù-bí ti̍k-phài-uân huâ-hú", "tone marks"),
        (bc.tailo_marks("nng7 hng5 m7 kiu2 tsui2 tsiann5 ooh8"), "Nn̄g hn̂g m̄ kiú tsuí tsiânn o̍oh",
         "the letter that carries the mark"),
        (bc.tailo_marks('i1-si7「lian5 a1-pa1」，jin7！'), 'I-sī "liân a-pa", jīn!', "quotes and marks to ASCII"),
        (bc.tailo_marks("ho2-0ah4 lai5 0lah4"), "Hó--ah lâi --lah", "a leading 0: the neutral tone"),
        (bc.tailo_marks("( tai7-khai3 ) e5『a1』"), "(Tāi-khài) ê 'a'", "brackets: no inner spaces"),
        (bc.inner_marks("好。比喻：「對！」"), 1, "a sentence-internal 。 counts, the final 」 and ！ do not"),
        (bc.split_of_bucket(349), "heldout", "bucket 349: heldout"), (bc.split_of_bucket(350), "dev", "350: dev"),
        (bc.split_of_bucket(1349), "test", "1349: test"), (bc.split_of_bucket(1350), "train", "1350: train"),
    ]
    for got, want, what in cases:
        check(got == want, "%s: %r" % (what, got))
    return out


def test_determinism(work, first):
    second = os.path.join(work, "fixture-again")
    r = build(second)
    same = r.returncode == 0 and all(
        open(os.path.join(first, n), "rb").read() == open(os.path.join(second, n), "rb").read()
        for n in ("train.tsv", "dev.tsv", "test.tsv", "heldout.tsv", "lexicon.tsv"))
    check(same, "a second run writes the same bytes")
    moe_only = os.path.join(work, "moe-only")
    r = build(moe_only, {"--moedict": os.path.join(FIXTURES, CLONES["--moedict"])})
    rows = read_tsv(os.path.join(moe_only, "train.tsv")) if r.returncode == 0 else []
    check(r.returncode == 0 and rows and all(x[2] == "moedict-twblg" for x in rows) and
          not os.path.exists(os.path.join(moe_only, "lexicon.tsv")),
          "--moedict alone: the MOE rows, no lexicon.tsv (%s)" % r.stderr.strip())
    # The snake_case column names of other iTaigi versions are read too.
    clone = os.path.join(work, "itaigi-snake")
    src = os.path.join(FIXTURES, CLONES["--chhoetaigi"], bc.ITAIGI_FILE)
    os.makedirs(os.path.dirname(os.path.join(clone, bc.ITAIGI_FILE)), exist_ok=True)
    text = open(src, encoding="utf-8").read()
    for camel, snake in (("KipUnicode", "kiplmj_unicode"), ("HanLoTaibunKip", "hanlo_taibun_kip"),
                         ("HoaBun", "hoabun")):
        text = text.replace('"%s"' % camel, '"%s"' % snake, 1)
    open(os.path.join(clone, bc.ITAIGI_FILE), "w", encoding="utf-8").write(text)
    snake_out = os.path.join(work, "snake")
    r = build(snake_out, {"--moedict": os.path.join(FIXTURES, CLONES["--moedict"]),
                          "--icorpus": os.path.join(FIXTURES, CLONES["--icorpus"]), "--chhoetaigi": clone})
    check(r.returncode == 0 and read_tsv(os.path.join(snake_out, "lexicon.tsv")) == EXPECTED["lexicon"],
          "snake_case iTaigi headers give the same lexicon")


def shipped_rows(paths):
    rows = []
    for path in paths:
        split = os.path.basename(path)[:-4]
        for zh, nan, source, tl in read_tsv(path):
            rows.append((zh, nan, source, tl, split))
    return rows


def check_splits(rows, what):
    unique = list({(r[0], r[1]): r for r in rows}.values())
    got = bc.assign_splits(unique)
    wrong = [(r, g) for r, g in zip(unique, got) if g != r[4]]
    for r, g in wrong[:3]:
        print("     %s is in %s, the bucket function says %s" % (r[0], r[4], g))
    check(not wrong, "%s: %d rows, each in the split of its group's bucket (%d not)" % (what, len(unique), len(wrong)))


def test_shipped(corpus):
    moe = ["data/moe/train.tsv", "data/moe/dev.tsv", "data/moe/test.tsv"]
    sample = ["data/sample/train.tsv", "data/sample/dev.tsv"]
    check_splits(shipped_rows(moe + sample), "data/moe + data/sample")
    make_sample = load(os.path.join(ROOT, "data", "make_sample.py"), "make_sample")
    for name, every in make_sample.EVERY.items():
        full = [r for r in read_tsv(os.path.join("data/moe", name)) if r[2] == "moedict-twblg"]
        cut = [r for r in read_tsv(os.path.join("data/sample", name)) if r[2] == "moedict-twblg"]
        check(cut == full[::every["moedict-twblg"]], "data/sample/%s: its MOE rows are every %dth of data/moe/%s"
              % (name, every["moedict-twblg"], name))
    lexicon = read_tsv("data/itaigi/lexicon.tsv")
    check(len(lexicon) > 10000 and all(r[2] == "itaigi" and r[0] != r[1] and not bc.has_latin(r[1]) for r in lexicon),
          "data/itaigi/lexicon.tsv: %d entries under the lexicon's rules" % len(lexicon))
    if not os.path.isfile(os.path.join(corpus, "train.tsv")):
        print("skip the full corpus: %s not found (--corpus DIR)" % corpus)
        return
    rows = shipped_rows([os.path.join(corpus, n + ".tsv") for n in ("train", "dev", "test")])
    check_splits(rows, corpus)
    bad = [r for r in rows if bc.drop_reason(r[0], r[1], r[3]) or bc.normalize(r[0]) != r[0] or
           bc.normalize(r[1]) != r[1]]
    check(not bad, "%s: every row passes the drop rules unchanged (%d do not)" % (corpus, len(bad)))
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        moe_rows = [r for r in read_tsv(os.path.join(corpus, name)) if r[2] == "moedict-twblg"]
        check(moe_rows == read_tsv(os.path.join("data/moe", name)), "data/moe/%s = the corpus's MOE rows" % name)


def test_prep(prep, out, work):
    h5 = os.path.join(work, "fixture.h5")
    r = subprocess.run([prep, "--tokenizer", "data/o200k_base.tiktoken", "--in", os.path.join(out, "train.tsv"),
                        "--out", h5, "--directions", "all"], capture_output=True, text=True)
    n = 6 * len(EXPECTED["train"])
    check(r.returncode == 0 and ("%d samples" % n) in r.stdout,
          "osstune-prep --directions all reads train.tsv: %s%s" % (r.stdout.strip().split("\n")[0], r.stderr.strip()))


def test_errors(work):
    moe = os.path.join(FIXTURES, CLONES["--moedict"])
    out = os.path.join(work, "err-out")
    r = build(out, {"--moedict": os.path.join(work, "nowhere")})
    check(r.returncode == 1 and "uni/例句.csv is missing" in r.stderr and not os.path.exists(out),
          "missing source file: %s" % r.stderr.strip())
    ic = os.path.join(work, "icorpus-misaligned")
    shutil.copytree(os.path.join(FIXTURES, CLONES["--icorpus"]), ic)
    path = os.path.join(ic, bc.ICORPUS_FILES["nan"])
    lines = open(path, encoding="utf-8").read().split("\n")
    open(path, "w", encoding="utf-8").write("\n".join(lines[:3] + lines[4:]))
    r = build(out, {"--moedict": moe, "--icorpus": ic})
    check(r.returncode == 1 and "not line-aligned" in r.stderr and not os.path.exists(out),
          "misaligned iCorpus files: %s" % r.stderr.strip())
    bad_moe = os.path.join(work, "moe-bad-utf8")
    shutil.copytree(moe, bad_moe)
    with open(os.path.join(bad_moe, bc.MOE_FILE), "ab") as f:
        f.write(b"99,9,9,1,\xff\xfe,x,y\n")
    csv_path = os.path.join(bad_moe, bc.MOE_FILE)
    before = open(csv_path, "rb").read()
    r = build(out, {"--moedict": bad_moe})
    check(r.returncode == 1 and "例句.csv:18: not valid UTF-8" in r.stderr and not os.path.exists(out),
          "invalid UTF-8: %s" % r.stderr.strip())
    check(open(csv_path, "rb").read() == before, "a refused input is left as it was")
    # An output name that is the input itself (a link to it) is refused, and the input is left as it was.
    linked = os.path.join(work, "linked-out")
    os.makedirs(linked, exist_ok=True)
    shutil.copytree(moe, bad_moe + "2")
    os.link(os.path.join(bad_moe + "2", bc.MOE_FILE), os.path.join(linked, "dev.tsv"))
    r = build(linked, {"--moedict": bad_moe + "2"})
    check(r.returncode == 1 and "is one of the inputs" in r.stderr and
          open(os.path.join(bad_moe + "2", bc.MOE_FILE), "rb").read() == open(os.path.join(moe, bc.MOE_FILE), "rb").read()
          and sorted(os.listdir(linked)) == ["dev.tsv"], "an output that is an input: %s" % r.stderr.strip())
    r = subprocess.run([sys.executable, BUILDER, "--help"], capture_output=True, text=True)
    check(r.returncode == 0 and "taigi-split-v1" in r.stdout and "--moedict DIR" in r.stdout, "--help gives the rules")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prep")
    ap.add_argument("work")
    ap.add_argument("--corpus", default=os.path.join("..", "shared", "data", "taigi"))
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    out = test_fixtures(args.work)
    if out:
        test_determinism(args.work, out)
        test_prep(args.prep, out, args.work)
    test_shipped(args.corpus)
    test_errors(args.work)
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
