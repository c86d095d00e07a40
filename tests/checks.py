"""Counting checks in the Python tests, as tests/test_util.h does in C: every check is counted, failures are printed
(passes too, when verbose), finish() prints the summary and gives the exit status. A test that made no check at all
fails: it proved nothing."""


class Checks:
    def __init__(self, name, verbose=True):
        self.name, self.verbose = name, verbose
        self.checks = self.failed = 0

    def __call__(self, ok, msg):
        self.checks += 1
        if not ok:
            self.failed += 1
        if self.verbose or not ok:
            print(("ok   " if ok else "FAIL ") + msg)
        return bool(ok)

    def finish(self, what=""):
        label = self.name + (" " + what if what else "")
        print("%s: %d passed, %d failed" % (label, self.checks - self.failed, self.failed))
        if self.checks == 0:
            print("FAIL %s: no check ran" % label)
            return 1
        return 1 if self.failed else 0
