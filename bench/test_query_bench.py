#!/usr/bin/env python3
"""bench/query_bench.py's own promises, without a store or a capd: cold runs
alternate scan and capq and report medians; vm.nr_hugepages is put back to
its old value however the bench ends. The hugepage count is a stand-in file,
never /proc/sys/vm/nr_hugepages."""

import os
import subprocess
import sys
import tempfile
import textwrap
import types
import unittest

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import query_bench  # noqa: E402


class ColdRuns(unittest.TestCase):
    def test_alternate_and_median(self):
        order = []
        times = {"scan": iter([9.0, 3.0, 5.0]), "capq": iter([2.0, 8.0, 4.0])}

        def timed(label, cmds, cold):
            order.append((label, cold))
            return {"label": label, "seconds": next(times[label]), "status": "ok"}

        fake = types.SimpleNamespace(timed=timed, say=lambda msg: None)
        runs = query_bench.QueryBench.alternate(
            fake, [("scan", "scan", [["a"], ["b"]]), ("capq", "capq", [["c"]])], True, 3)
        self.assertEqual(order, [("scan", True), ("capq", True)] * 3)
        self.assertEqual(runs["scan"]["each_seconds"], [9.0, 3.0, 5.0])
        self.assertEqual(runs["scan"]["seconds"], 5.0)
        self.assertEqual(runs["capq"]["seconds"], 4.0)
        self.assertEqual(runs["scan"]["commands"], 2)
        self.assertEqual(runs["capq"]["status"], "ok")

    def test_a_failed_run_has_no_median(self):
        def timed(label, cmds, cold):
            return {"label": label, "status": "cold: cannot drop caches (not root)"}

        fake = types.SimpleNamespace(timed=timed, say=lambda msg: None)
        runs = query_bench.QueryBench.alternate(fake, [("capq", "capq", [["c"]])], True, 2)
        self.assertNotIn("seconds", runs["capq"])
        self.assertEqual(runs["capq"]["status"], "cold: cannot drop caches (not root)")

    def test_cold_reps_must_be_positive(self):
        with self.assertRaises(SystemExit):
            query_bench.parse_args(["--cold-reps", "0"])
        self.assertEqual(query_bench.parse_args([]).cold_reps, 3)

    def test_queries_named_or_refused(self):
        self.assertEqual(query_bench.parse_args(["--queries", "flow,tcp"]).queries, "flow,tcp")
        self.assertIsNone(query_bench.parse_args([]).queries)
        with self.assertRaises(SystemExit):
            query_bench.parse_args(["--queries", "flow,all"])


# A bench whose run raises the stand-in count to 1024, as capbench's
# reserve_hugepages() does, then ends the way argv[2] says.
CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[3])
    import query_bench as qb
    qb.HUGEPAGES = sys.argv[1]

    class Stub(qb.QueryBench):
        def __init__(self, a):
            self.a = a
            self.hugepages_before = qb.read_hugepages()
            qb.atexit.register(self.restore_hugepages)

        def go(self):
            with open(qb.HUGEPAGES, "w") as f:
                f.write("1024")
            print("raised", flush=True)
            how = sys.argv[2]
            if how == "error":
                raise RuntimeError("a section failed")
            if how == "signal":
                time.sleep(60)
            return 0

        def cleanup(self):
            self.restore_hugepages()

    qb.QueryBench = Stub
    sys.exit(qb.main(["--hugepages", "1024"]))
""")


class HugepagesPutBack(unittest.TestCase):
    def run_child(self, how, sig=None):
        with tempfile.TemporaryDirectory() as d:
            count = os.path.join(d, "nr_hugepages")
            with open(count, "w") as f:
                f.write("0\n")
            p = subprocess.Popen([sys.executable, "-c", CHILD, count, how, BENCH],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                self.assertEqual(p.stdout.readline().strip(), "raised")
                if sig:
                    p.send_signal(sig)
                p.wait(timeout=30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                p.stdout.close()
                p.stderr.close()
            with open(count) as f:
                return p.returncode, f.read().strip()

    def test_after_a_normal_end(self):
        self.assertEqual(self.run_child("ok"), (0, "0"))

    def test_after_an_error(self):
        rc, value = self.run_child("error")
        self.assertNotEqual(rc, 0)
        self.assertEqual(value, "0")

    def test_after_sigterm(self):
        import signal
        rc, value = self.run_child("signal", signal.SIGTERM)
        self.assertEqual(value, "0")
        self.assertEqual(rc, 128 + signal.SIGTERM)

    def test_after_sighup(self):
        import signal
        self.assertEqual(self.run_child("signal", signal.SIGHUP)[1], "0")


if __name__ == "__main__":
    unittest.main()
