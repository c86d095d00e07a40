#!/usr/bin/env python3
"""Every command block of docs/guide.md, checked.

The guide tags each fenced block after its language:
  guide-env            the settings block: replaced here by small values (a tiny random model, 2 steps, 2 ranks)
  guide-run            run here, in order, in one shell (cwd: a scratch copy of the repository's layout whose clones
                       of the corpus's sources are tests/fixtures/corpus)
  guide-run-optional   run here in a subshell; exit status 77 means "cannot run here" and is reported as a skip
  guide-by=SCRIPT      not runnable on a CPU here: SCRIPT runs that command (on a GPU, the 20b-shaped model, a Slurm
                       cluster); checked: SCRIPT exists, and every program and long option of the block appears in
                       SCRIPT or in a repository file the command names
  guide-skip=REASON    needs the network, Ollama or llama-server: reported as skipped with the reason
A shell or Python block without a tag is an error. After the run, the files the guide promises are checked.

usage: test_guide.py BIN_DIR WORK_DIR   (BIN_DIR: the build's programs, which the guide calls build/bin)
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import Checks  # noqa: E402

check = Checks("test_guide")

ROOT = os.getcwd()
GUIDE = os.path.join(ROOT, "docs", "guide.md")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "corpus")
# The guide-env block's replacement: the same names, sized for a CPU test.
TEST_ENV = """MODEL=$PWD/tiny
DATA=data/taigi
WORK=work
STEPS=2
NGPU=2
EVAL_ROWS=1
mkdir -p $WORK
"""
NOT_PROGRAMS = {"cd", "mkdir", "export", "echo", "tail", "head", "cat", "sed", "for", "do", "done", "then", "fi",
                "if", "while", "curl"}
WRAPPERS = {"bash", "sh", "python3", "python", "env", "sudo"}


def blocks(path):
    """(line, language, {tag: value}, text) of every fenced block."""
    out, lines = [], open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*(.*)$", lines[i])
        if m and m.group(1):
            start, lang, info = i + 1, m.group(1), m.group(2)
            i += 1
            body = []
            while i < len(lines) and lines[i] != "```":
                body.append(lines[i])
                i += 1
            tags = {}
            for word in info.split():
                k, _, v = word.partition("=")
                tags[k] = v
            out.append((start, lang, tags, "\n".join(body) + "\n"))
        i += 1
    return out


def shell_commands(text):
    """The simple commands of a shell block: continuation lines joined, comments dropped, split at ; && || |."""
    joined = re.sub(r"\\\n", " ", text)
    cmds = []
    for line in joined.split("\n"):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        cmd = []
        for w in words + [";"]:
            if w in (";", "&&", "||", "|", "&") or w.endswith(";"):
                if w.endswith(";") and w != ";":
                    cmd.append(w[:-1])
                if cmd:
                    cmds.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return cmds


def check_by(n, line, lang, text, script):
    path = os.path.join(ROOT, script)
    if not check(os.path.isfile(path), "block %d (line %d): its script %s exists" % (n, line, script)):
        return
    corpus = open(path, encoding="utf-8", errors="replace").read()
    missing = []
    if lang == "python":
        for name in re.findall(r"(\w+)\.from_pretrained", text):
            if name not in corpus:
                missing.append(name)
    else:
        for cmd in shell_commands(text):
            words = [w for w in cmd if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)] or cmd
            prog = words[0]
            if prog in WRAPPERS and len(words) > 1:
                prog = next((w for w in words[1:] if not w.startswith("-")), prog)
            if prog in NOT_PROGRAMS:
                continue
            # Options may also be documented by a repository file the command names (launch/osstune.slurm).
            texts = corpus + "".join(open(os.path.join(ROOT, w), encoding="utf-8", errors="replace").read()
                                     for w in words if os.path.isfile(os.path.join(ROOT, w)))
            if os.path.basename(prog) not in texts:
                missing.append(os.path.basename(prog))
            for w in words:
                if w.startswith("--") and len(w) > 2 and w.split("=")[0] not in texts:
                    missing.append(w.split("=")[0])
    check(not missing, "block %d (line %d) is run by %s%s" % (n, line, script,
                                                             "; missing there: %s" % sorted(set(missing)) if missing else ""))


def make_scratch(bin_dir, work):
    """A directory laid out like the repository (links; build/bin is BIN_DIR), with the fixture clones of the
    corpus's sources and a tiny random model; data/ is a real directory so that data/taigi is written here, not
    into the repository."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "data"))
    os.makedirs(os.path.join(work, "build"))
    os.symlink(bin_dir, os.path.join(work, "build", "bin"))
    for name in ("tools", "launch", "tests", "benchmarks", "quickstart.sh"):
        os.symlink(os.path.join(ROOT, name), os.path.join(work, name))
    for name in os.listdir(os.path.join(ROOT, "data")):
        os.symlink(os.path.join(ROOT, "data", name), os.path.join(work, "data", name))
    for name in os.listdir(FIXTURES):
        os.symlink(os.path.join(FIXTURES, name), os.path.join(work, name))
    r = subprocess.run([os.path.join(bin_dir, "osstune-init-model"), "--preset", "tiny", "--seed", "3",
                        "--set", "num_hidden_layers=2", "--out", os.path.join(work, "tiny")],
                       capture_output=True, text=True)
    check(r.returncode == 0, "a tiny random model: %s" % r.stderr.strip())


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    bin_dir, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    found = blocks(GUIDE)
    script = ["set -euo pipefail", "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
              "export OMPI_MCA_rmaps_base_oversubscribe=1"]
    runs = {}
    for n, (line, lang, tags, text) in enumerate(found, 1):
        if lang not in ("sh", "bash", "python"):
            continue
        kinds = set(tags) & {"guide-env", "guide-run", "guide-run-optional", "guide-by", "guide-skip"}
        if not check(kinds, "block %d (line %d, %s) is tagged: %s" % (n, line, lang, " ".join(sorted(kinds)) or "NO TAG")):
            continue
        if "guide-by" in tags:
            check_by(n, line, lang, text, tags["guide-by"])
        if "guide-skip" in tags:
            print("SKIP block %d (line %d): needs %s, which the test machines do not have (%s)"
                  % (n, line, tags["guide-skip"], text.strip().split("\n")[0]))
        if "guide-env" in tags:
            check("MODEL=" in text and "DATA=" in text and "WORK=" in text, "block %d: the settings" % n)
            script += ["echo '@@ %d begin'" % n, TEST_ENV, "echo '@@ %d ok'" % n]
            runs[n] = (line, "the settings (replaced by the test's)")
        elif "guide-run" in tags:
            script += ["echo '@@ %d begin'" % n, text, "echo '@@ %d ok'" % n]
            runs[n] = (line, text.strip().split("\n")[0])
        elif "guide-run-optional" in tags:
            script += ["echo '@@ %d begin'" % n, "rc=0; ( %s ) || rc=$?" % text.strip(),
                       'if [ $rc = 77 ]; then echo "@@ %d skip"; elif [ $rc != 0 ]; then echo "@@ %d fail $rc"; '
                       'exit 1; else echo "@@ %d ok"; fi' % (n, n, n)]
            runs[n] = (line, text.strip().split("\n")[0])
    check(len(runs) >= 8, "%d blocks run here" % len(runs))

    make_scratch(bin_dir, work)
    log_path = os.path.join(work, "guide.log")
    with open(log_path, "w") as log:
        r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    log_text = open(log_path, encoding="utf-8", errors="replace").read()
    state = {}
    for m in re.finditer(r"^@@ (\d+) (begin|ok|skip|fail)", log_text, re.M):
        state[int(m.group(1))] = m.group(2)
    for n, (line, first) in sorted(runs.items()):
        st = state.get(n, "not reached")
        if st == "skip":
            seg = log_text.split("@@ %d begin" % n)[1].split("@@ %d skip" % n)[0].strip().split("\n")
            print("SKIP block %d (line %d): %s -- %s" % (n, line, first, seg[-1] if seg else ""))
            continue
        check(st == "ok", "block %d (line %d) ran: %s%s" % (n, line, first, "" if st == "ok" else " (%s)" % st))
    if r.returncode != 0:
        print("---- the end of %s:" % log_path)
        print("\n".join(log_text.rstrip().split("\n")[-40:]))

    # What the guide promises the commands leave behind.
    w = lambda *p: os.path.join(work, *p)
    check(all(os.path.isfile(w("data", "taigi", f + ".tsv")) for f in ("train", "dev", "test", "heldout", "lexicon")),
          "data/taigi: train, dev, test, heldout, lexicon")
    check(os.path.isfile(w("work", "run", "ckpt", "latest")) and os.path.isfile(w("work", "run-2", "ckpt", "latest")),
          "checkpoints of the 1-rank and the 2-rank runs")
    last = open(w("work", "test.zh2tl.txt"), encoding="utf-8").read().strip().split("\n")[-1] \
        if os.path.isfile(w("work", "test.zh2tl.txt")) else ""
    check('"direction":"zh2tl"' in last and '"copy_chrf"' in last, "the zh2tl score line: %s" % last[:120])
    ex = w("work", "export")
    check(all(os.path.isfile(os.path.join(ex, f)) for f in ("model.gguf", "adapter.gguf", "base.gguf", "Modelfile",
                                                             "Modelfile.nan2zh", "Modelfile.zh2tl", "README.md")) and
          os.path.isdir(os.path.join(ex, "peft")), "the export: GGUFs, Modelfiles, peft/")
    mf = open(os.path.join(ex, "Modelfile.adapter"), encoding="utf-8").read() \
        if os.path.isfile(os.path.join(ex, "Modelfile.adapter")) else ""
    check(re.search(r"^FROM ./base.gguf$", mf, re.M) and re.search(r"^ADAPTER ./adapter.gguf$", mf, re.M) and
          not re.search(r"^FROM ./model.gguf$", mf, re.M), "Modelfile.adapter names base.gguf and the adapter")
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
