"""vm.nr_hugepages raised for a bench, and put back to the value it had
before however the bench ends: a normal end, an exception, SIGTERM or SIGHUP
(end_on_signals()), and at interpreter exit in any case (atexit).

Used by capbench.py (and through it query_bench.py) and flow_bench.py. PATH
is a module variable so that tests can point it at a stand-in file; nothing
here writes anywhere else.
"""

import atexit
import os
import signal
import sys

PATH = "/proc/sys/vm/nr_hugepages"


def read():
    """The 2 MiB page count now; None when it cannot be read."""
    try:
        with open(PATH) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None


class Reservation:
    """raise_to(n) raises the count to n (never lowers it) and remembers the
    value before; restore() puts that value back, once (later calls, and the
    atexit one, do nothing). `who` prefixes the lines on stderr."""

    def __init__(self, who):
        self.who = who
        self.before = None
        self.registered = False

    def raise_to(self, n):
        """Returns {"requested", "before", "after"} and "error" when the count
        could not be raised (not root, the kernel refused)."""
        now = read()
        res = {"requested": n, "before": now}
        if now is None:
            res["error"] = f"cannot read {PATH}"
            return res
        if now >= n:
            res["after"] = now
            return res
        if self.before is None:
            self.before = now
        if not self.registered:
            atexit.register(self.restore)
            self.registered = True
        try:
            with open(PATH, "w") as f:
                f.write(str(n))
        except OSError as e:
            res["error"] = "needs root" if os.geteuid() != 0 else str(e)
        res["after"] = read()
        return res

    def restore(self):
        """Puts back the count from before the first raise_to() (once; call it
        after any hugetlbfs mount of the bench is gone, so that the pages are
        free to go). Says so on stderr when the kernel keeps some."""
        before, self.before = self.before, None
        if before is None or read() == before:
            return
        try:
            with open(PATH, "w") as f:
                f.write(str(before))
        except OSError as e:
            print(f"{self.who}: could not put vm.nr_hugepages back to {before}: {e}",
                  file=sys.stderr)
            return
        now = read()
        if now != before:
            print(f"{self.who}: vm.nr_hugepages is {now}, not {before}: pages still in use",
                  file=sys.stderr)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def end_on_signals():
    """SIGTERM and SIGHUP end the program through its finally blocks and
    atexit (SystemExit(128 + signal)), not with the default of no cleanup."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
