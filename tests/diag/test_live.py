"""capctl diagnose against a running capd: the workers' live TCP flow tables.

What is checked:
  * the story captures (tests/diag/scenarios.cc) read by capd from a pcap:
    source give, through `capctl diagnose` with no file, exactly the JSON
    connections and the text lines that `capctl diagnose FILE` gives for the
    same file (same frame numbers, timestamps, verdicts and reasons);
  * the live report says what the tables hold: capacity, use, evictions;
  * a flood of distinct flows, far more than --tcp-flows, keeps capd's
    resident memory flat and counts every eviction: each packet opens a new
    flow, so evicted = TCP packets - capacity exactly;
  * --tcp-flows 0 turns the tables off and diagnose says so in one line.

To keep capd alive once a finite file has been read, a second source loops
a capture of UDP frames that the filter ("not udp") rejects: rejected
packets never reach the tables, so the file's frames are the only TCP the
tables see, numbered as in the file.

Python 3 stdlib only. Environment: LINECAP_BUILD_DIR (set by meson).
"""

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import capdtest  # noqa: E402
import pcaplib  # noqa: E402

BUILD = os.environ.get("LINECAP_BUILD_DIR", os.path.join(REPO, "build"))
CAPD = os.path.join(BUILD, "dataplane", "capd")
CAPCTL = os.path.join(BUILD, "ctl", "capctl")
GENCAPS = os.path.join(BUILD, "tests", "diag", "diag_gencaps")

CONN_LINE = re.compile(r"^  (\S+ -> \S+  [A-Z-]+: .*)$")
ALSO_LINE = re.compile(r"^      also (.*)$")

REPORT = []


def note(msg):
    print(f"NOTE: {msg}", flush=True)
    REPORT.append(msg)


def run(cmd, timeout=60):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(cmd)} did not finish within {timeout} s") from e


def rss_kb(pid, field="RssAnon"):
    """capd's anonymous resident memory: the heap and the flow tables'
    mapping. Not VmRSS: without hugepages that also counts EAL's memfd,
    whose touched chunk-pool pages follow how far the writer lags, not the
    tables."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Capd:
    """One capd with a control socket in `tmp`; always killed by stop()."""

    def __init__(self, tmp, args):
        self.sock = os.path.join(tmp, "capd.sock")
        out = os.path.join(tmp, "out")
        os.makedirs(out, exist_ok=True)
        # Small chunks and rings: the chunk pool is touched as it is used,
        # and must not pass for table growth in the memory check.
        self.args = ([CAPD, "--ctl", self.sock, "-w", os.path.join(out, "cap.pcap"),
                      "-C", "4", "-W", "2", "-s", "256", "--chunk-kb", "64",
                      "--ring-chunks", "4"]
                     + [str(a) for a in args])
        self.err_path = os.path.join(tmp, "capd.stderr")
        self.cap = capdtest.start_capd(self.args[1:], sock=self.sock, capd=CAPD,
                                       stderr_path=self.err_path)
        self.proc = self.cap.proc

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def ctl(self, *args, timeout=60):
        return run([CAPCTL, "--ctl", self.sock, "--timeout", "20000"] + [str(a) for a in args],
                   timeout)

    def diagnose_json(self):
        r = self.ctl("--json", "diagnose")
        if r.returncode != 0:
            raise AssertionError(f"capctl --json diagnose: exit {r.returncode}: {r.stderr}")
        return json.loads(r.stdout)

    def wait_seen(self, packets, timeout=60):
        """Polls the live report until the tables have seen `packets`."""
        deadline = time.monotonic() + timeout
        j = None
        while time.monotonic() < deadline:
            j = self.diagnose_json()
            if j["live"]["packets_seen"] >= packets:
                return j
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the tables saw {j and j['live']['packets_seen']} packets, "
                             f"expected {packets}; capd stderr: {self.stderr()}")

    def stop(self):
        self.cap.kill()


class LiveDiagnose(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        for b in (CAPD, CAPCTL, GENCAPS):
            if not os.access(b, os.X_OK):
                raise unittest.SkipTest(f"not built: {b}")
        cls.dir = tempfile.mkdtemp(prefix="live_diag_test.")
        subprocess.run([GENCAPS, cls.dir], check=True, timeout=60)
        with open(os.path.join(cls.dir, "truth.json")) as f:
            cls.truth = json.load(f)
        # Filler: UDP frames, looped to keep capd running, rejected by the filter.
        cls.filler = os.path.join(cls.dir, "filler.pcap")
        pcaplib.write_pcap(cls.filler, [
            pcaplib.Packet(1_700_000_000 * 10**9 + i * 10**6,
                           pcaplib.eth_ipv4_udp(b"x" * 18, sport=5000 + i)) for i in range(4)])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def tmp(self):
        d = tempfile.mkdtemp(prefix="run.", dir=self.dir)
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def start(self, args):
        capd = Capd(self.tmp(), args)
        self.addCleanup(capd.stop)
        return capd

    # ------------------------------------------------------------ same as file

    def test_live_report_equals_the_file_report(self):
        frames = self.truth["diagnose"]["frames"]
        for name in ("stories_eth.pcap", "stories_qinq.pcap"):
            with self.subTest(file=name):
                path = os.path.join(self.dir, name)
                r = run([CAPCTL, "--json", "diagnose", path])
                self.assertEqual(r.returncode, 0, r.stderr)
                want = json.loads(r.stdout)
                self.assertEqual(want["frames"], frames)

                capd = self.start(["-i", f"pcap:{path}", "-i", f"pcap:{self.filler},loop",
                                   "--tcp-flows", "65536", "not udp"])
                got = capd.wait_seen(frames)
                self.assertEqual(got["live"]["packets_seen"], frames)
                # Every field of every connection: verdict, reason, notes,
                # frames, byte counts, SYN intervals, timestamps.
                self.assertEqual(got["connections"], want["connections"])
                for key in ("tcp_packets", "evicted", "summary", "hints", "verdict"):
                    self.assertEqual(got[key], want[key], key)
                self.assertEqual(got["files"], [])
                live = got["live"]
                self.assertEqual(live["workers"], 1)
                self.assertEqual(live["capacity_per_worker"], 65536)
                self.assertEqual(live["in_use"], len(want["connections"]))
                self.assertEqual(live["evicted"], 0)

                # Human output: the same connection, "also" and verdict lines.
                rf = run([CAPCTL, "diagnose", path])
                rl = capd.ctl("diagnose")
                self.assertEqual(rl.returncode, 0, rl.stderr)
                self.assertEqual(rl.stderr, "")
                for pat in (CONN_LINE, ALSO_LINE):
                    f_lines = [m.group(1) for m in map(pat.match, rf.stdout.splitlines()) if m]
                    l_lines = [m.group(1) for m in map(pat.match, rl.stdout.splitlines()) if m]
                    self.assertEqual(l_lines, f_lines)
                self.assertEqual(rl.stdout.splitlines()[-1], self.truth["diagnose"]["verdict"])
                self.assertIn("live: flow tables of 1 capd worker, 65536 connections each: "
                              f"{len(want['connections'])} in use, 0 evicted", rl.stdout)

                # A second request sees the same table: nothing new arrived.
                again = capd.diagnose_json()
                self.assertEqual(again["connections"], got["connections"])

    def test_the_stories_come_out_as_verdict_lines(self):
        path = os.path.join(self.dir, "stories_eth.pcap")
        capd = self.start(["-i", f"pcap:{path}", "-i", f"pcap:{self.filler},loop",
                           "--tcp-flows", "65536", "not udp"])
        capd.wait_seen(self.truth["diagnose"]["frames"])
        r = capd.ctl("diagnose", "--all")
        self.assertEqual(r.returncode, 0, r.stderr)
        conns = [m.group(1) for m in map(CONN_LINE.match, r.stdout.splitlines()) if m]
        self.assertEqual(conns, self.truth["diagnose"]["lines"])

    # ------------------------------------------------------------ flood

    def test_flood_of_distinct_flows_keeps_memory_and_counts_evictions(self):
        flows, capacity = 30000, 4096
        path = os.path.join(self.dir, "flood.pcap")
        t0 = 1_700_000_000 * 10**9
        pkts = []
        for i in range(flows):
            src = f"198.18.{i >> 8}.{i & 255}"
            pkts.append(pcaplib.Packet(t0 + i * 10_000, pcaplib.eth_ipv4_tcp(
                b"", src=src, dst="198.19.0.1", sport=40000 + (i % 7), dport=443,
                seq=1000 + i, flags=0x02)))
        pcaplib.write_pcap(path, pkts)

        capd = self.start(["-i", f"pcap:{path},loop", "--tcp-flows", capacity])
        pid = capd.proc.pid
        capd.wait_seen(flows)
        # A snapshot of the full table first: the control thread's reply
        # buffers reach their size, so what follows measures the tables.
        first = capd.diagnose_json()
        rss_start = rss_kb(pid)
        seen_start = first["live"]["packets_seen"]
        # At least 5 more passes over the flood and 5 snapshots (each copies
        # the full table and gives the copy's pages back).
        samples = 0
        j = first
        deadline = time.monotonic() + 90
        while ((j["live"]["packets_seen"] < seen_start + 5 * flows or samples < 5)
               and time.monotonic() < deadline):
            time.sleep(0.1)
            j = capd.diagnose_json()
            samples += 1
        rss_end = rss_kb(pid)
        seen = j["live"]["packets_seen"]
        note(f"flood: {seen} SYNs of {flows} distinct flows into {capacity}-connection tables: "
             f"{j['evicted']} evicted; capd RssAnon {rss_start} kB after {seen_start} SYNs, "
             f"{rss_end} kB after {seen} ({samples} snapshots)")
        self.assertGreaterEqual(seen, seen_start + 5 * flows,
                                "capd read the flood too slowly to judge")
        for k in (first, j):
            live = k["live"]
            self.assertEqual(live["in_use"], capacity)
            self.assertEqual(live["capacity"], capacity)
            self.assertEqual(k["tcp_packets"], live["packets_seen"])
            # Every SYN is a flow the table does not hold: it evicts one.
            self.assertEqual(k["evicted"], k["tcp_packets"] - capacity)
            self.assertEqual(live["evicted"], k["evicted"])
            self.assertEqual(k["summary"]["connections"], capacity)
        self.assertGreater(j["evicted"], first["evicted"])
        # One allocation per flow would be 744 B x (5 passes x 30000) flows,
        # 106 MiB, far above this bound; the fixed table does not grow at
        # all. The heap still moves by several MiB with the snapshots' copies
        # and JSON replies in flight when it is read (seen: -4 to +9 MiB).
        self.assertLess(rss_end - rss_start, 32 * 1024,
                        f"RssAnon grew from {rss_start} kB to {rss_end} kB")
        r = capd.ctl("diagnose")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("note: the tables were full", r.stdout)
        self.assertIn(f"{capacity} in use", r.stdout)

    # ------------------------------------------------------------ off

    def test_tables_off(self):
        # Off by default (they cost 100-200 ns per TCP packet) and with 0.
        capd = self.start(["-i", f"pcap:{self.filler},loop"])
        r = capd.ctl("diagnose")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--tcp-flows N", r.stderr)
        capd.stop()
        capd = self.start(["-i", f"pcap:{self.filler},loop", "--tcp-flows", "0"])
        r = capd.ctl("diagnose")
        self.assertNotEqual(r.returncode, 0)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn("--tcp-flows 0", lines[0])
        self.assertTrue(lines[0].startswith("capctl: "), lines[0])
        # The status is the error's code (ENOTSUP), not read from its text.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.connect(capd.sock)
            s.sendall(b'{"v":1,"cmd":"diagnose"}\n')
            line = b""
            while not line.endswith(b"\n"):
                b = s.recv(65536)
                if not b:
                    break
                line += b
        j = json.loads(line)
        self.assertEqual((j["status"], j["error"]), (errno.ENOTSUP, "ENOTSUP"), line)
        self.assertIn("--tcp-flows 0", j["message"])
        r = capd.ctl("diagnose", "--max-flows", "10")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--tcp-flows", r.stderr)


def main():
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stdout)
    prog = unittest.main(module="__main__", testRunner=runner, exit=False)
    r = prog.result
    print(f"\n{os.path.basename(sys.argv[0])}: {r.testsRun} tests in "
          f"{time.monotonic() - t0:.1f} s, {len(r.failures) + len(r.errors)} failed, "
          f"{len(r.skipped)} skipped")
    for m in REPORT:
        print(f"  {m}")
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
