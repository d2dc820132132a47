#!/usr/bin/env python3
"""bench/query_bench.py's own promises, without a store or a capd: cold runs
alternate scan and capq and report medians. vm.nr_hugepages put back however
it ends: bench/test_hugepages.py."""

import os
import sys
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


if __name__ == "__main__":
    unittest.main()
