"""capdiag end to end: the troubleshooting stories, the two-point comparison,
bad input and bad usage. The captures and their truth come from our own
generator (diag_gencaps, tests/diag/scenarios.cc); when tshark is installed,
its TCP analysis of the same capture must agree with the truth too.
Python 3 stdlib only.
"""

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

BUILD = os.environ.get("LINECAP_BUILD_DIR", "build")
CAPDIAG = os.path.join(BUILD, "ctl", "diag", "capdiag")
GENCAPS = os.path.join(BUILD, "tests", "diag", "diag_gencaps")

CONN_LINE = re.compile(r"^  (\S+ -> \S+  [A-Z-]+: .*)$")
ALSO_LINE = re.compile(r"^      also (.*)$")


def run(*args):
    p = subprocess.run([CAPDIAG, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


class CapdiagTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="capdiag_test.")
        subprocess.run([GENCAPS, cls.dir], check=True, timeout=60)
        with open(os.path.join(cls.dir, "truth.json")) as f:
            cls.truth = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    # diagnose ---------------------------------------------------------------

    def test_diagnose_stories_on_every_link_type(self):
        t = self.truth["diagnose"]
        for name in t["files"]:
            with self.subTest(file=name):
                rc, out, err = run("diagnose", self.path(name))
                self.assertEqual(rc, 0, err)
                self.assertEqual(err, "")
                lines = out.splitlines()
                conns = [m.group(1) for m in map(CONN_LINE.match, lines) if m]
                self.assertEqual(conns, t["lines"])
                also = [m.group(1) for m in map(ALSO_LINE.match, lines) if m]
                self.assertEqual(also, [a for group in t["also"] for a in group])
                self.assertEqual(lines[-1], t["verdict"])

    def test_diagnose_json(self):
        rc, out, _ = run("diagnose", "--json", self.path("stories_eth.pcap"))
        self.assertEqual(rc, 0)
        j = json.loads(out)
        t = self.truth["diagnose"]
        got = [
            f"{c['client']} -> {c['server']}  {c['verdict']}: {c['reason']}"
            for c in j["connections"]
        ]
        self.assertEqual(got, t["lines"])
        self.assertEqual(j["frames"], t["frames"])
        self.assertEqual(j["verdict"], t["verdict"])
        unanswered = j["connections"][1]
        self.assertEqual(unanswered["syn_retries"], 3)
        self.assertEqual(unanswered["syn_intervals_s"], [1.0, 2.0, 4.0])
        self.assertEqual(j["files"][0]["format"], "pcap")

    def test_tshark_agrees_with_the_truth(self):
        """Wireshark's own TCP analysis of the generated capture finds the
        same retransmitted data segment, duplicate ACKs and zero window."""
        if shutil.which("tshark") is None:
            self.skipTest("tshark not installed")
        cap = self.path("stories_eth.pcap")

        def frames(flt):
            p = subprocess.run(
                ["tshark", "-n", "-r", cap, "-Y", flt, "-T", "fields", "-e", "frame.number"],
                capture_output=True, text=True, timeout=60)
            return [int(x) for x in p.stdout.split()]

        j = json.loads(run("diagnose", "--json", cap)[1])
        ours = {"rtx": [], "dup": 0, "zw": 0}
        for c in j["connections"]:
            for d in ("client_to_server", "server_to_client"):
                ours["rtx"] += c[d]["retransmission_frames"]
                ours["dup"] += c[d]["dup_acks"]
                ours["zw"] += c[d]["zero_windows"]
        self.assertEqual(sorted(ours["rtx"]),
                         frames("tcp.analysis.retransmission && tcp.len > 0"))
        self.assertEqual(ours["dup"], len(frames("tcp.analysis.duplicate_ack")))
        self.assertEqual(ours["zw"], len(frames("tcp.analysis.zero_window")))
        # SYN retries: 3 for the unanswered connection; SYN-ACK resent once.
        self.assertEqual(len(frames("tcp.analysis.retransmission && tcp.flags.syn == 1")), 4)

    def test_rotated_files_are_one_capture(self):
        """A capture rotated into two files (-C/-G) is diagnosed as one."""
        with open(self.path("stories_eth.pcap"), "rb") as f:
            data = f.read()
        header, off, cuts = data[:24], 24, []
        while off < len(data):
            caplen = struct.unpack_from("<I", data, off + 8)[0]
            cuts.append(off)
            off += 16 + caplen
        split = 20  # inside the connection the server resets (its RST is frame 24)
        parts = [self.path("rot0.pcap"), self.path("rot1.pcap")]
        with open(parts[0], "wb") as f:
            f.write(data[:cuts[split]])
        with open(parts[1], "wb") as f:
            f.write(header + data[cuts[split]:])
        rc, out, _ = run("diagnose", *parts)
        self.assertEqual(rc, 0)
        conns = [m.group(1) for m in map(CONN_LINE.match, out.splitlines()) if m]
        truth = self.truth["diagnose"]["lines"]
        self.assertEqual([c.split(": ")[0] for c in conns], [t.split(": ")[0] for t in truth])
        self.assertIn("500 B server->client (rot1.pcap#4)", conns[2])
        self.assertEqual(out.splitlines()[-1], self.truth["diagnose"]["verdict"])

    # compare ----------------------------------------------------------------

    def compare(self, variant, *extra):
        v = self.truth["compare"][variant]
        args = ["compare", *extra]
        for n in v["nat"]:
            args += ["--nat", n]
        return v, run(*args, self.path(v["a"]), self.path(v["b"]))

    def test_compare_variants(self):
        for variant in ("plain", "nat", "offset"):
            with self.subTest(variant=variant):
                v, (rc, out, err) = self.compare(variant)
                self.assertEqual(rc, 0, err)
                verdicts = [l for l in out.splitlines() if l.startswith("VERDICT: ")]
                self.assertEqual(verdicts, v["verdicts"])
                self.assertIn(f"matched {v['matched']} packets; 7 seen only at A; 1 seen only at B",
                              out)
                offset = "100.000 ms" if variant == "offset" else "0.000 ms"
                self.assertIn(f"clock offset B - A estimated {offset}", out)
                self.assertIn("the minimum one-way delay is 2.500 ms each way", out)

    def test_compare_json(self):
        v, (rc, out, _) = self.compare("plain", "--json")
        self.assertEqual(rc, 0)
        j = json.loads(out)
        self.assertEqual(j["matched"], v["matched"])
        self.assertEqual(j["findings"][0]["frames"], v["blocked_frames_a"])
        self.assertEqual(j["findings"][0]["from"], "198.18.1.5")
        self.assertEqual(j["findings"][0]["to"], "198.18.0.10:3306")
        self.assertAlmostEqual(j["delay_raw_tb_minus_ta"]["a_to_b"]["median_ms"], 2.5)
        self.assertAlmostEqual(j["clock_offset"]["offset_b_minus_a_ms"], 0.0)

    def test_compare_nat_capture_without_rule_says_what_to_do(self):
        v = self.truth["compare"]["nat"]
        rc, out, _ = run("compare", self.path(v["a"]), self.path(v["b"]))
        self.assertEqual(rc, 0)
        self.assertIn("matched 0 packets", out)
        self.assertIn("--nat A_ADDR=B_ADDR", out)

    def test_compare_empty_b(self):
        empty = self.path("empty_b.pcap")
        with open(empty, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        rc, out, _ = run("compare", self.path("a_plain.pcap"), empty)
        self.assertEqual(rc, 0)
        self.assertIn("B holds no IP packets at all", out)
        self.assertIn("VERDICT: packets from 198.18.1.5 to 198.18.0.10:3306 seen at A, never at B",
                      out)

    # bad input and usage ------------------------------------------------------

    def test_bad_input(self):
        with open(self.path("stories_eth.pcap"), "rb") as f:
            good = f.read()
        header_only = good[:24]
        cases = [
            ("empty.pcap", b"", 1, "empty file (0 bytes), not a capture"),
            ("short.pcap", good[:10], 1, "truncated inside the file header"),
            ("header.pcap", header_only, 0, None),
            ("cut.pcap", good[:-7], 2, "truncated after frame 65"),
            ("text.txt", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1,
             "not a pcap or pcapng capture (starts with 47 45 54 20: looks like text)"),
            ("zipped.pcap.gz", gzip.compress(good), 1, "gzip data; gunzip it first"),
            ("wifi.pcap", header_only[:20] + struct.pack("<I", 105), 1,
             "link type IEEE802_11 (105) is not supported"),
        ]
        for name, content, status, message in cases:
            with self.subTest(file=name):
                p = self.path(name)
                with open(p, "wb") as f:
                    f.write(content)
                for cmd in (["diagnose", p], ["compare", p, self.path("b_plain.pcap")],
                            ["compare", self.path("a_plain.pcap"), p]):
                    rc, out, err = run(*cmd)
                    self.assertEqual(rc, status, (cmd, err))
                    if message is None:
                        self.assertEqual(err, "")
                    else:
                        self.assertEqual(len(err.splitlines()), 1, err)
                        self.assertIn(message, err)
                        self.assertTrue(err.startswith("capdiag: " + p), err)

        rc, _, err = run("diagnose", self.path("mixed.pcapng"))
        self.assertEqual(rc, 1)
        self.assertIn("pcapng interfaces with different link types", err)
        rc, _, err = run("diagnose", self.path("missing.pcap"))
        self.assertEqual(rc, 1)
        self.assertIn("No such file or directory", err)
        rc, _, err = run("diagnose", self.dir)
        self.assertEqual(rc, 1)
        self.assertIn("is a directory", err)
        # A bad file among good ones: the good one is still reported.
        rc, out, err = run("diagnose", self.path("stories_eth.pcap"), self.path("empty.pcap"))
        self.assertEqual(rc, 1)
        self.assertIn(self.truth["diagnose"]["verdict"], out)
        # --json still describes the failure.
        rc, out, _ = run("diagnose", "--json", self.path("empty.pcap"))
        self.assertEqual(rc, 1)
        self.assertIn("empty file", json.loads(out)["files"][0]["error"])

    def test_usage(self):
        for args, message in [
            ([], "usage: capdiag"),
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["diagnose"], "no capture file given"),
            (["diagnose", "--max-flows", "0", "x"], "--max-flows '0'"),
            (["diagnose", "--bogus", "x"], "unknown option '--bogus'"),
            (["compare", "a.pcap"], "expected two capture files (A and B), got 1"),
            (["compare", "--nat", "1.2.3.4", "a", "b"], "expected A_ADDR[:PORT]=B_ADDR[:PORT]"),
            (["compare", "--nat", "198.18.0.1=2001:db8::1", "a", "b"], "both sides must be"),
        ]:
            with self.subTest(args=args):
                rc, _, err = run(*args)
                self.assertEqual(rc, 1)
                self.assertIn(message, err)
        for cmd in (["--help"], ["diagnose", "--help"], ["compare", "-h"]):
            rc, out, _ = run(*cmd)
            self.assertEqual(rc, 0)
            self.assertIn("usage:", out)


if __name__ == "__main__":
    unittest.main(verbosity=2, argv=[sys.argv[0]])
