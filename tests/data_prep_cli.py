#!/usr/bin/env python3
"""osstune-prep as a user meets it: --help, usage errors, bad input (FILE:LINE, exit 1, no output file, no
temporary file left), --skip-bad with its rejects file, --max-chars, --directions, unreadable input, and the
progress line on a large input. Standard library only.

usage: data_prep_cli.py OSSTUNE_PREP
"""
import os
import subprocess
import sys
import tempfile

failures = 0
VOCAB = "data/o200k_base.tiktoken"


def check(cond, msg):
    global failures
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures += 1


def prep(*args):
    return subprocess.run([PREP] + list(args), capture_output=True, text=True)


def main():
    global PREP
    PREP = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        def path(name):
            return os.path.join(tmp, name)

        def write(name, text):
            with open(path(name), "w", encoding="utf-8", newline="") as f:
                f.write(text)
            return path(name)

        r = prep("--help")
        check(r.returncode == 0 and "--tokenizer" in r.stdout and "--skip-bad" in r.stdout, "--help prints usage")
        r = prep("--in", "x.tsv")
        check(r.returncode == 2 and "--tokenizer is required" in r.stderr, "missing --tokenizer: exit 2 (%d)" % r.returncode)
        r = prep("--tokenizer", VOCAB, "--in", "a", "--out", "b", "--directions", "sideways")
        check(r.returncode == 2 and "--directions" in r.stderr, "bad --directions: exit 2")
        r = prep("--tokenizer", VOCAB, "--in", "a", "--out", "b", "--bogus")
        check(r.returncode == 2 and "unknown argument '--bogus'" in r.stderr, "unknown argument: exit 2")

        good = "zh\tnan\tsource\n你好\t汝好\tmoe\n吃飽了沒\t食飽未\tmoe\n"
        src = write("good.tsv", good)
        r = prep("--tokenizer", VOCAB, "--in", src, "--out", path("good.h5"))
        check(r.returncode == 0 and os.path.exists(path("good.h5")) and "4 samples" in r.stdout,
              "good input: 4 samples written (%s)" % r.stdout.strip().split("\n")[0])
        r = prep("--tokenizer", VOCAB, "--in", src, "--out", path("one.h5"), "--directions", "zh2nan")
        check(r.returncode == 0 and "2 samples" in r.stdout, "--directions zh2nan: one sample per pair")

        # The Tâi-lô directions read the nan_tl column; only the columns the directions use must be there.
        r = prep("--tokenizer", VOCAB, "--in", src, "--out", path("tl.h5"), "--directions", "zh2tl")
        check(r.returncode == 1 and "good.tsv:1: the header has no 'nan_tl' column" in r.stderr
              and not os.path.exists(path("tl.h5")), "zh2tl without a nan_tl column: %s" % r.stderr.strip())
        tl = write("tl.tsv", "zh\tnan\tsource\tnan_tl\n你好\t汝好\tmoe\tLí hó\n吃飽了沒\t食飽未\tmoe\tTsia̍h-pá--bē\n")
        r = prep("--tokenizer", VOCAB, "--in", tl, "--out", path("all.h5"), "--directions", "all")
        check(r.returncode == 0 and "12 samples" in r.stdout and "(all," in r.stdout,
              "--directions all: six samples per pair (%s)" % r.stdout.strip().split("\n")[0])
        r = prep("--tokenizer", VOCAB, "--in", tl, "--out", path("two.h5"), "--directions", "nan2tl,tl2nan")
        check(r.returncode == 0 and "4 samples" in r.stdout, "--directions nan2tl,tl2nan: two samples per pair")
        notl = write("notl.tsv", "zh\tnan\tnan_tl\n你好\t汝好\t\n")
        r = prep("--tokenizer", VOCAB, "--in", notl, "--out", path("notl.h5"))
        check(r.returncode == 0, "an empty nan_tl is not read by zh2nan / nan2zh: %s" % r.stderr.strip())
        r = prep("--tokenizer", VOCAB, "--in", notl, "--out", path("notl2.h5"), "--directions", "tl2zh")
        check(r.returncode == 1 and "notl.tsv:2: empty nan_tl" in r.stderr, "tl2zh: empty nan_tl is a bad line")
        for bad, why in (("zh2nan,zh2nan", "named twice"), ("zh2nan,", "is not a direction"),
                         ("zh2tai", "is not a direction")):
            r = prep("--tokenizer", VOCAB, "--in", tl, "--out", path("x.h5"), "--directions", bad)
            check(r.returncode == 2 and why in r.stderr, "--directions %s: exit 2 (%s)" % (bad, r.stderr.strip()))
        r = prep("--tokenizer", VOCAB, "--in", tl, "--out", path("x.h5"), "--instruction-zh2xx", "t")
        check(r.returncode == 2 and "--instruction-zh2xx" in r.stderr, "--instruction-NAME with an unknown name")

        # A bad line stops the run: FILE:LINE and the reason, exit 1, no output, nothing temporary left behind.
        cases = [("missing column", "zh\tnan\n你好\t汝好\n只有一欄\n", 3, "missing column 'nan'"),
                 ("empty side", "zh\tnan\n你好\t汝好\n\t汝好\n", 3, "empty zh"),
                 ("long side", "zh\tnan\n你好\t汝好\n" + "長" * 5000 + "\t汝\n", 3, "over the limit of 4096"),
                 ("bad header", "zh\tnan_tl\n你好\t汝好\n", 1, "no 'nan' column")]
        for name, text, line, reason in cases:
            before = set(os.listdir(tmp))
            src = write("bad.tsv", text)
            out = path("bad.h5")
            r = prep("--tokenizer", VOCAB, "--in", src, "--out", out)
            left = set(os.listdir(tmp)) - before - {"bad.tsv"}
            check(r.returncode == 1 and ("%s:%d:" % (src, line)) in r.stderr and reason in r.stderr
                  and not os.path.exists(out) and not left,
                  "%s: exit %d, '%s', leftovers %s" % (name, r.returncode, r.stderr.strip(), sorted(left)))
        with open(path("utf8.tsv"), "wb") as f:
            f.write(b"zh\tnan\n\xe4\xbd\xa0\xff\t\xe6\xb1\x9d\n")
        r = prep("--tokenizer", VOCAB, "--in", path("utf8.tsv"), "--out", path("u.h5"))
        check(r.returncode == 1 and "utf8.tsv:2: zh is not valid UTF-8" in r.stderr and not os.path.exists(path("u.h5")),
              "invalid UTF-8: %s" % r.stderr.strip())
        r = prep("--tokenizer", VOCAB, "--in", path("absent.tsv"), "--out", path("a.h5"))
        check(r.returncode == 1 and "absent.tsv: cannot open" in r.stderr, "unreadable input: %s" % r.stderr.strip())
        r = prep("--tokenizer", path("absent.tiktoken"), "--in", src, "--out", path("a.h5"))
        check(r.returncode == 1 and "absent.tiktoken" in r.stderr, "missing tokenizer: %s" % r.stderr.strip())
        src = write("short.tsv", "zh\tnan\n你好嗎\t汝好\n")
        r = prep("--tokenizer", VOCAB, "--in", src, "--out", path("m.h5"), "--max-chars", "2")
        check(r.returncode == 1 and "zh has 3 characters, over the limit of 2" in r.stderr, "--max-chars 2")

        # --skip-bad: bad lines go to the rejects file with line and reason; the good ones are written.
        src = write("mixed.jsonl", '{"zh": "你好", "nan": "汝好"}\n'
                                   '{"zh": "缺"}\n'
                                   'not json\n'
                                   '{"zh": "吃飽了沒", "nan": "食飽未"}\n')
        r = prep("--tokenizer", VOCAB, "--in", src, "--out", path("mixed.h5"), "--skip-bad")
        rejects = path("mixed.h5") + ".rejects.tsv"
        ok = r.returncode == 0 and os.path.exists(path("mixed.h5")) and os.path.exists(rejects)
        check(ok and "4 samples" in r.stdout and "2 bad lines skipped" in r.stdout, "--skip-bad: %s" % r.stdout.strip())
        if ok:
            with open(rejects, encoding="utf-8") as f:
                rows = [l.rstrip("\n").split("\t") for l in f]
            check(rows[0] == ["line", "reason", "input"] and len(rows) == 3, "rejects file has a header and 2 rows")
            check(rows[1][0] == "2" and rows[1][1] == "missing key 'nan'" and rows[1][2] == '{"zh": "缺"}',
                  "rejects row 1: %s" % rows[1])
            check(rows[2][0] == "3" and rows[2][1].startswith("not valid JSON") and rows[2][2] == "not json",
                  "rejects row 2: %s" % rows[2])
        r = prep("--tokenizer", VOCAB, "--in", src, "--out", path("m2.h5"), "--skip-bad", "--rejects", path("r.tsv"))
        check(r.returncode == 0 and os.path.exists(path("r.tsv")), "--rejects names the rejects file")
        src = write("allbad.tsv", "zh\tnan\n\t\n\tx\n")
        r = prep("--tokenizer", VOCAB, "--in", src, "--out", path("allbad.h5"), "--skip-bad")
        check(r.returncode == 1 and "no usable pairs" in r.stderr and not os.path.exists(path("allbad.h5"))
              and not os.path.exists(path("allbad.h5") + ".rejects.tsv"), "all lines bad: exit 1, no files")

        # A large input (over 4 MiB) reports progress on stderr.
        with open(path("big.tsv"), "w", encoding="utf-8") as f:
            f.write("zh\tnan\n")
            line = "今天天氣很好，我們一起去公園散步吧。\t今仔日天氣真好，咱做伙去公園行行咧。\n"
            for _ in range((5 << 20) // len(line.encode()) + 1):
                f.write(line)
        r = prep("--tokenizer", VOCAB, "--in", path("big.tsv"), "--out", path("big.h5"))
        check(r.returncode == 0 and "% of big.tsv" in r.stderr, "progress line on a large input")
        r = prep("--tokenizer", VOCAB, "--in", path("big.tsv"), "--out", path("big2.h5"), "--quiet")
        check(r.returncode == 0 and "% of big.tsv" not in r.stderr, "--quiet: no progress line")
    print("data_prep_cli: %s" % ("all checks passed" if failures == 0 else "%d checks failed" % failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
