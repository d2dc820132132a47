"""capctl compare --fleet-hosts: two hosts' answers to one query, compared.

Two stores of the same traffic seen at two points: A recorded the bundled
web mix whole; B recorded it with three known TCP packets missing and its
clock 1 ms ahead. Each is served by capq --serve (certificates made with
openssl, capdtest.ServeTestCase). Checked: capctl compare over the two hosts
reports exactly those three packets as seen at A and never at B (by their
timestamps in A's answer); its report equals capctl compare over the two
local capq answers, apart from the names of the sides; a host that is
unreachable or over its cap is one line and exit 1, or with --partial a
comparison that names the partial side, exit 2; a bad expression is one
line, asked of no host.
"""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capdtest  # noqa: E402
import pcaplib  # noqa: E402
from capdtest import BUILD_DIR, CAPQ, DATA_DIR, ServeTestCase  # noqa: E402
from capdtest import run_cmd as run  # noqa: E402

CAPCTL = os.path.join(BUILD_DIR, "ctl", "capctl")
MIX = os.path.join(DATA_DIR, "demo", "web-mix.pcap")
EXPR = ["tcp"]


def is_tcp4(data):
    return len(data) > 34 and data[12:14] == b"\x08\x00" and data[23] == 6


class FleetCompareTest(ServeTestCase):

    tmp_prefix = "linecap-fleetcmp-"

    @classmethod
    def setUpClass(cls):
        if not os.access(CAPCTL, os.X_OK):
            raise unittest.SkipTest(f"{CAPCTL} not built")
        super().setUpClass()
        # B: the mix without three TCP packets, its clock 1 ms ahead.
        recs = pcaplib.read_capture(MIX).records
        tcp = [i for i, r in enumerate(recs) if is_tcp4(r.data)]
        cls.lost = {tcp[10], tcp[len(tcp) // 2], tcp[-5]}
        cls.lost_ts = sorted(recs[i].ts_ns for i in cls.lost)
        b_src = cls.cpath("b-src.pcap")
        pcaplib.write_pcap(b_src, [pcaplib.Packet(r.ts_ns + 1000000, r.data, r.wirelen)
                                   for i, r in enumerate(recs) if i not in cls.lost], nano=True)
        cls.stores = []
        for name, src in (("a", MIX), ("b", b_src)):
            d = cls.cpath(name)
            os.mkdir(d)
            r = capdtest.run_capd(["-q", "-w", os.path.join(d, "cap.pcap"), "-i", f"pcap:{src}"])
            if r.rc != 0:
                raise RuntimeError(r.describe())
            cls.stores.append(d)
        for i, d in enumerate(cls.stores):
            cls.serve(f"s{i}", [d])
        cls.capped = cls.serve("capped", [cls.stores[1]], ["--max-packets", "5"])

    def compare(self, hosts, extra=(), expr=EXPR):
        return run([CAPCTL, "compare", "--fleet-hosts", ",".join(hosts)] + self.tls() +
                   list(extra) + list(expr))

    def test_reports_exactly_the_lost_packets_as_local_compare_does(self):
        a, b = self.servers[0].addr, self.servers[1].addr
        p = self.compare([a, b], ["--json"])
        self.assertEqual(p.returncode, 0, p.stderr)
        got = json.loads(p.stdout)
        self.assertEqual(got["a_only"], 3, got["findings"])
        self.assertEqual(got["b_only"], 0)
        self.assertEqual(got["a"]["path"], f"{a}'s answer")
        # The frames reported are the lost packets, found in A's answer.
        local = []
        for i, d in enumerate(self.stores):
            out = self.path(f"local{i}.pcap")
            q = run([CAPQ, "-r", d, "-w", out] + EXPR)
            self.assertEqual(q.returncode, 0, q.stderr)
            local.append(out)
        a_recs = pcaplib.read_capture(local[0]).records
        frames = sorted(f for fl in got["flows"] for d in fl["directions"]
                        for f in d["a_only_frames"])
        # capd stores microseconds by default.
        self.assertEqual(sorted(a_recs[f - 1].ts_ns for f in frames),
                         [t // 1000 * 1000 for t in self.lost_ts])
        # The same report as compare over the local answers.
        q = run([CAPCTL, "compare", "--json", local[0], local[1]])
        self.assertEqual(q.returncode, 0, q.stderr)
        want = json.loads(q.stdout)
        for side in ("a", "b"):
            got[side].pop("path")
            want[side].pop("path")
        self.assertEqual(got, want)
        # The text report names the hosts.
        p = self.compare([a, b])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"{a}'s answer".encode(), p.stdout)
        self.assertEqual(p.stdout.count(b"seen at A were never seen at B"), 3, p.stdout[-600:])

    def test_unreachable_host_one_line_or_partial_named(self):
        a = self.servers[0].addr
        p = self.compare([a, "127.0.0.1:1"])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertRegex(p.stderr.decode(), r"^capctl compare: B: 127\.0\.0\.1:1: unreachable: ")
        self.assertEqual(p.stdout, b"")
        p = self.compare([a, "127.0.0.1:1"], ["--partial", "--json"])
        self.assertEqual(p.returncode, 2, p.stderr)
        got = json.loads(p.stdout)
        self.assertEqual(got["b"]["frames"], 0)
        self.assertTrue(any(n.startswith("side B (127.0.0.1:1) is partial: ") for n in got["notes"]),
                        got["notes"])

    def test_host_over_its_cap_one_line(self):
        p = self.compare([self.servers[0].addr, self.capped.addr])
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertIn(b"over its cap after 5 packets", p.stderr)
        p = self.compare([self.servers[0].addr, self.capped.addr], ["--partial"])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"is partial: " + self.capped.addr.encode() + b": over its cap", p.stdout)

    def test_bad_input_one_line(self):
        a, b = self.servers[0].addr, self.servers[1].addr
        cases = [(["--fleet-hosts", a] + self.tls() + EXPR, "expected two hosts"),
                 (["--fleet-hosts", f"{a},{b}"] + EXPR, "--cert, --key and --ca"),
                 (["--fleet-hosts", f"{a},{b}", "--fleet", "http://127.0.0.1:1"] + self.tls(),
                  "give one"),
                 (["--fleet", "http://127.0.0.1:1"] + self.tls(), "--hosts"),
                 (["--fleet-hosts", f"{a},{b}", "--since", "yesterday"] + self.tls(), "--since"),
                 (["--partial", "x.pcap", "y.pcap"], "apply to --fleet"),
                 (["--fleet-hosts", f"{a},{b}"] + self.tls() + ["tcp", "port", "bogus"],
                  "bogus")]
        for words, what in cases:
            with self.subTest(words=words):
                p = run([CAPCTL, "compare"] + words)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(what.encode(), p.stderr.splitlines()[0])
                self.assertNotIn(b"fd/", p.stderr)
        # A bad expression is checked before any host is asked.
        p = run([CAPCTL, "compare", "--fleet-hosts", f"{a},{b}"] + self.tls() +
                ["tcp", "port", "bogus"])
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertNotIn(b"port bogus", self.servers[0].text())


if __name__ == "__main__":
    capdtest.main()
