#!/usr/bin/env python3
"""Every bench that raises vm.nr_hugepages (capbench.py, query_bench.py
through capbench, flow_bench.py --line-rate) puts the old value back however
it ends: a normal end, an error, SIGTERM, SIGHUP, and an exit whose cleanup
forgot it (the put-back at exit). Each case runs the bench's own main() in a child process
with the heavy parts stubbed; the count is a stand-in file
(bench/hugepages.py's PATH), never /proc/sys/vm/nr_hugepages."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest

BENCH = os.path.dirname(os.path.abspath(__file__))

# argv: count file, work dir, bench, how to end. The child prints the count
# once its bench has raised it, then ends as `how` says.
CHILD = textwrap.dedent("""
    import os, sys, time
    count, work, bench, how = sys.argv[1:5]
    sys.path.insert(0, os.environ["BENCH"])
    import hugepages
    hugepages.PATH = count

    def raised():
        with open(count) as f:
            print(f.read().strip(), flush=True)
        if how == "error":
            raise RuntimeError("a section failed")
        if how == "signal":
            time.sleep(60)

    import capbench

    class Capbench(capbench.Bench):
        # What Bench.__init__ sets that reserve_hugepages() and cleanup()
        # use, without finding capd or making the targets.
        def __init__(self, a):
            self.a, self.targets, self.netns = a, {}, []
            self.tmp = os.path.join(work, "tmp")
            self.hugepages = hugepages.Reservation("capbench")

        def go(self):
            self.reserve_hugepages()
            raised()
            return {}, []

    if how == "no-cleanup":  # only the put-back at exit is left
        Capbench.cleanup = lambda self: None

    if bench == "capbench":
        capbench.Bench = Capbench
        sys.exit(capbench.main(["--hugepages", "1024", "--out", work]))
    if bench == "query_bench":
        import query_bench

        class QueryBench(query_bench.QueryBench):
            def __init__(self, a):
                self.a, self.work = a, os.path.join(work, "q")
                self.cb = Capbench(capbench.parse_args(["--out", work, "--hugepages",
                                                        str(a.hugepages)]))

            def go(self):
                self.cb.reserve_hugepages()
                raised()
                return 0

        query_bench.QueryBench = QueryBench
        sys.exit(query_bench.main(["--hugepages", "1024", "--disk-dir", work, "--keep-store"]))
    if bench == "flow_bench":
        import flow_bench
        flow_bench.line_rate = lambda a, out: raised()
        sys.argv = ["flow_bench", "--line-rate", "--hugepages", "1024", "--dir",
                    os.path.join(work, "f")]
        flow_bench.main()
""")


class PutBack(unittest.TestCase):
    def run_child(self, bench, how, sig=None, before="8"):
        """(exit status, the count the bench raised it to, the count after)."""
        with tempfile.TemporaryDirectory() as d:
            count = os.path.join(d, "nr_hugepages")
            with open(count, "w") as f:
                f.write(before + "\n")
            p = subprocess.Popen([sys.executable, "-c", CHILD, count, d, bench, how],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, BENCH=BENCH))
            try:
                raised = p.stdout.readline().strip()
                if sig:
                    p.send_signal(sig)
                _, err = p.communicate(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            with open(count) as f:
                return p.returncode, raised, f.read().strip(), err

    def check(self, bench, how, sig=None, rc=None):
        got, raised, after, err = self.run_child(bench, how, sig)
        self.assertEqual(raised, "1024", err)
        self.assertEqual(after, "8", err)
        if rc is not None:
            self.assertEqual(got, rc, err)
        else:
            self.assertNotEqual(got, 0, err)

    def test_every_bench_every_end(self):
        for bench in ("capbench", "query_bench", "flow_bench"):
            for how, sig, rc in (("ok", None, 0), ("error", None, None),
                                 ("signal", signal.SIGTERM, 128 + signal.SIGTERM),
                                 ("signal", signal.SIGHUP, 128 + signal.SIGHUP),
                                 ("no-cleanup", None, 0)):
                if how == "no-cleanup" and bench == "flow_bench":
                    continue  # its one finally is all its cleanup
                with self.subTest(bench=bench, how=how, sig=sig):
                    self.check(bench, how, sig, rc)

    def test_never_lowered(self):
        # A count already above the request is left as it is, before and after.
        with tempfile.TemporaryDirectory() as d:
            count = os.path.join(d, "nr_hugepages")
            with open(count, "w") as f:
                f.write("2048\n")
            p = subprocess.run([sys.executable, "-c", CHILD, count, d, "capbench", "ok"],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, BENCH=BENCH))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.splitlines()[0], "2048")
            with open(count) as f:
                self.assertEqual(f.read().strip(), "2048")


if __name__ == "__main__":
    unittest.main()
