#!/usr/bin/env python3
"""The robustness suite: every osstune program on malformed input, full disks, signals and outputs that name inputs.

usage: suite.py BIN_DIR SCRATCH_DIR GROUP [--only SUBSTRING] [--list]

Runs the cases of one group (cases.py; `all` runs every group) and checks, for each, the failure policy of
docs/failure-policy.md:
  - the exit status is the one the case expects (1 for bad input, 2 for a bad command line, 0 where the input is
    fine, death by the signal a case sends); never a crash: a status of 128 or more, death by any other signal, a
    sanitizer report (AddressSanitizer / UndefinedBehaviorSanitizer) or a hang past the case's timeout fails;
  - a failing run prints a message naming the file and the key, line or tensor (the case's `says`);
  - nothing in the case's directory changed unless the case says so: no partial, temporary or replaced output, and
    every input byte for byte as before (sha256 of each file, type of each entry, target of each link); the shared
    inputs outside it (the golden model, the tokenizer) are hashed too.
Exit status: 0 all passed, 1 a case failed, 77 every case of the group was skipped.
"""
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases as case_list  # noqa: E402
import inputs  # noqa: E402

SANITIZER_ENV = inputs.PROGRAM_ENV
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "UndefinedBehaviorSanitizer")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(root):
    """{relative path: (kind, detail)} of everything under root, symlinks not followed, FIFOs never opened."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", sha256(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", None)
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = ("fifo", None)
            else:
                out[rel] = ("other", st.st_mode)
        # os.walk lists links to directories among dirnames but does not descend into them: fine.
    return out


def shared_snapshot():
    snap = snapshot(inputs.GOLDEN)
    snap["<tokenizer>"] = ("file", sha256(inputs.TIKTOKEN))
    return snap


class Context:
    """What a case sees: the programs, its own directory, the shared fixtures."""

    def __init__(self, bin_dir, scratch):
        self.bin = os.path.abspath(bin_dir)
        self.scratch = os.path.abspath(scratch)
        self.dir = None
        self.golden_model = os.path.join(inputs.GOLDEN, "model")
        self.golden_adapter = os.path.join(inputs.GOLDEN, "adapter")
        self.tok = inputs.TIKTOKEN
        self._fixtures = {}
        self.note = None   # a problem a case's driver saw (reset per case)

    def prog(self, name):
        return os.path.join(self.bin, name)

    def fixture(self, name, make):
        """A file or directory built once under SCRATCH/fixtures (make(path) builds it). Built under a temporary
        name and renamed, so groups running in parallel never see half of one."""
        if name not in self._fixtures:
            path = os.path.join(self.scratch, "fixtures", name)
            if not os.path.exists(path):
                tmp = "%s.tmp.%d" % (path, os.getpid())
                os.makedirs(os.path.dirname(path), exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                make(tmp)
                try:
                    os.rename(tmp, path)
                except OSError:  # another group built it first
                    shutil.rmtree(tmp, ignore_errors=True)
            self._fixtures[name] = path
        return self._fixtures[name]

    def path(self, rel):
        return os.path.join(self.dir, rel)


def run_program(ctx, case):
    argv = case.argv(ctx) if callable(case.argv) else list(case.argv)
    if argv and not os.path.isabs(argv[0]):
        argv[0] = ctx.prog(argv[0])
    env = dict(os.environ, **SANITIZER_ENV)
    env.update(case.env)
    if case.drive:  # the case runs the program itself (signals, FIFOs, mounts)
        return case.drive(ctx, argv, env)
    try:
        p = subprocess.run(argv, cwd=ctx.dir, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=case.timeout, preexec_fn=case.preexec)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        err = (e.stderr or b"").decode(errors="replace")
        return "timeout", "", err


def describe_status(rc):
    if rc == "timeout":
        return "no answer within the timeout (hung)"
    if rc < 0:
        return "killed by signal %s" % signal.Signals(-rc).name
    return "exit status %d" % rc


def check_case(ctx, case):
    """Runs one case; returns a list of failures (empty: passed)."""
    problems = []
    shutil.rmtree(ctx.dir, ignore_errors=True)
    os.makedirs(ctx.dir)
    ctx.note = None
    if case.setup:
        case.setup(ctx)
    listed = {k: (v(ctx) if callable(v) else v) for k, v in
              (("creates", case.creates), ("changes", case.changes), ("removes", case.removes))}
    before = snapshot(ctx.dir)
    shared_before = shared_snapshot()
    rc, out, err = run_program(ctx, case)
    after = snapshot(ctx.dir)

    # No crash, whatever the case expects.
    marker = next((m for m in SANITIZER_MARKERS if m in err), None)
    if marker:
        problems.append("sanitizer report (%s)" % marker)
    want = case.expect
    if rc == "timeout":
        problems.append(describe_status(rc))
    elif want.startswith("signal:"):
        sig = getattr(signal, "SIG" + want.split(":")[1])
        if rc != -sig and rc != 128 + sig:
            problems.append("expected death by %s, got %s" % (want.split(":")[1], describe_status(rc)))
    else:
        code = {"ok": 0, "error": 1, "usage": 2}[want]
        if rc < 0 or rc >= 128:
            problems.append("crash: %s" % describe_status(rc))
        elif rc != code:
            problems.append("expected exit status %d, got %d" % (code, rc))
    # The message names what is wrong.
    for needle in case.says:
        if needle not in err:
            problems.append("message lacks %r" % needle)
    # Nothing changed but what the case allows.
    allowed = set(listed["creates"]) | set(listed["changes"]) | set(listed["removes"])
    for rel in sorted(set(before) | set(after)):
        if any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allowed):
            continue
        if rel not in after:
            problems.append("%s was removed" % rel)
        elif rel not in before:
            problems.append("%s appeared (partial or temporary output)" % rel)
        elif before[rel] != after[rel]:
            problems.append("%s changed (%s -> %s)" % (rel, before[rel][0], after[rel][0]))
    for rel in listed["creates"]:
        if rel not in after:
            problems.append("%s was not written" % rel)
    for rel in listed["removes"]:
        if rel in after:
            problems.append("%s is still there" % rel)
    if ctx.note:
        problems.append(ctx.note)
    if shared_snapshot() != shared_before:
        problems.append("a shared input (tests/fixtures/golden or the tokenizer) changed")
    if case.check and not problems:
        extra = case.check(ctx, out, err)
        if extra:
            problems.append(extra)
    if problems:
        first = "\n".join("      | " + line for line in err.strip().splitlines()[-6:])
        problems.append("stderr:\n" + first if first else "stderr: (empty)")
    return problems


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    only = None
    if "--only" in sys.argv:
        only = sys.argv[sys.argv.index("--only") + 1]
        args.remove(only)
    if len(args) != 3:
        print(__doc__)
        return 2
    bin_dir, scratch, group = args
    ctx = Context(bin_dir, scratch)
    selected = [c for c in case_list.CASES if group in ("all", c.group) and (not only or only in c.name)]
    names = [c.group + "/" + c.name for c in selected]
    if len(set(names)) != len(names):
        print("duplicate case names")
        return 1
    if "--list" in sys.argv:
        print("\n".join(names))
        return 0
    if not selected:
        print("no case in group %r" % group)
        return 1
    passed = failed = skipped = 0
    t0 = time.time()
    for case in selected:
        ctx.dir = os.path.join(ctx.scratch, case.group, case.name)
        reason = case.skip(ctx) if case.skip else None
        if reason:
            print("skip %s/%s: %s" % (case.group, case.name, reason))
            skipped += 1
            continue
        problems = check_case(ctx, case)
        if problems:
            failed += 1
            print("FAIL %s/%s: %s" % (case.group, case.name, problems[0]))
            for p in problems[1:]:
                print("      " + p)
        else:
            passed += 1
            print("ok   %s/%s" % (case.group, case.name))
    print("%s: %d passed, %d failed, %d skipped in %.1f s" % (group, passed, failed, skipped, time.time() - t0))
    if failed:
        return 1
    return 77 if skipped and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
