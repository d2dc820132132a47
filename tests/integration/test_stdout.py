#!/usr/bin/env python3
"""-w -: the capture on standard output, for `capd ... -w - | tshark -r -`.

Standard output then carries the capture and nothing else: the summary and
every log line (EAL's too) go to stderr. It is one stream, so the options
that need files (-C, -G, -W, -z, --reuse-files, --preallocate, --direct) and
more than one writer are refused, and a rotation request is refused. A
reader that exits ends capd: one line, the summary on stderr, exit 1.
"""

import os
import pwd
import signal
import subprocess

import capdtest
import gencaps
from capdtest import CapdTestCase

TIMEOUT = 120


def run_to_pipe(args, timeout=TIMEOUT):
    """capd with its standard output on a pipe read to the end.
    Returns (rc, stdout bytes, stderr text)."""
    try:
        p = subprocess.run(capdtest.capd_command([str(a) for a in args]), capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"capd {args} did not finish within {timeout} s") from None
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


class StandardOutput(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.pkts, _ = gencaps.mixed(3000, seed=31)
        self.src = gencaps.write(self.path("in.pcap"), self.pkts)

    def read_bytes(self, data, name):
        p = self.path(name)
        with open(p, "wb") as f:
            f.write(data)
        return self.assertWhole(p)

    def test_run_as_user_needs_no_writable_directory(self):
        """-Z with -w -: the user writes to the standard output capd holds,
        not to a directory, so a working directory it cannot write in is
        no reason to refuse (as for tcpdump -Z)."""
        try:
            pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user nobody")
        closed = self.path("closed")
        os.mkdir(closed, 0o700)
        p = subprocess.run(capdtest.capd_command(["-q", "-Z", "nobody", "-i",
                                                  f"pcap:{self.src}", "-w", "-"]),
                           capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
                           cwd=closed)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.read_bytes(p.stdout, "z.out").records), len(self.pkts))

    def test_same_records_as_a_file(self):
        """pcap and pcapng on standard output hold the records -w FILE
        holds (pcap: the very bytes); the summary is on stderr."""
        for fmt in (["--nano"], ["--format", "pcapng"]):
            with self.subTest(fmt=fmt):
                f = self.path("file.out")
                run = self.capd(["-q", "-i", f"pcap:{self.src}", "-w", f] + fmt)
                self.assertCapdOk(run, quiet=True)
                rc, out, err = run_to_pipe(["-i", f"pcap:{self.src}", "-w", "-"] + fmt)
                self.assertEqual(rc, 0, err)
                got = self.read_bytes(out, "stdout.out")
                want = self.assertWhole(f)
                prec = "pcapng" if fmt[0] == "--format" else "ns"
                self.assertIsNone(capdtest.record_mismatch(want.records, got.records, prec))
                self.assertEqual(len(got.records), len(self.pkts))
                if prec == "ns":
                    with open(f, "rb") as fh:
                        self.assertEqual(out, fh.read())
                self.assertIn(f"{len(self.pkts)} written", err)
                self.assertIn("capd: dropped 0", err)

    def test_tcpdump_reads_the_pipe(self):
        """capd -w - | tcpdump -r -: tcpdump counts every packet."""
        if not capdtest.have("tcpdump"):
            self.skipTest("tcpdump is not installed")
        capd = subprocess.Popen(capdtest.capd_command(["-q", "-i", f"pcap:{self.src}", "-w", "-"]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        self.addCleanup(capd.kill)
        td = subprocess.run(["tcpdump", "-n", "--count", "-r", "-"], stdin=capd.stdout,
                            capture_output=True, timeout=TIMEOUT)
        capd.stdout.close()
        rc = capd.wait(timeout=TIMEOUT)
        err = capd.stderr.read().decode()
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "")
        self.assertEqual(td.returncode, 0, td.stderr)
        self.assertIn(f"{len(self.pkts)} packets", td.stdout.decode(), td.stderr)

    def test_tshark_reads_pcapng_from_the_pipe(self):
        if not capdtest.have("tshark"):
            self.skipTest("tshark is not installed")
        capd = subprocess.Popen(
            capdtest.capd_command(["-q", "--format", "pcapng", "-i", f"pcap:{self.src}", "-w",
                                   "-"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.addCleanup(capd.kill)
        ts = subprocess.run(["tshark", "-n", "-r", "-", "-T", "fields", "-e", "frame.number"],
                            stdin=capd.stdout, capture_output=True, timeout=TIMEOUT)
        capd.stdout.close()
        self.assertEqual(capd.wait(timeout=TIMEOUT), 0, capd.stderr.read())
        self.assertEqual(ts.returncode, 0, ts.stderr)
        self.assertEqual(len(ts.stdout.split()), len(self.pkts))

    def test_eal_logs_go_to_stderr(self):
        """EAL logs to standard output by default; with its logs turned up,
        standard output still holds only the capture."""
        rc, out, err = run_to_pipe(["-i", f"pcap:{self.src}", "-w", "-", "--eal",
                                    "--log-level=*:info"])
        self.assertEqual(rc, 0, err)
        self.assertIn("EAL", err, "the test needs EAL to log something")
        cap = self.read_bytes(out, "stdout.pcap")
        self.assertEqual(len(cap.records), len(self.pkts))

    def early_reader(self, source, extra=()):
        """capd writing `source` to a pipe whose reader takes 100 bytes (or
        fewer: what there is) and exits."""
        stats = self.path("s.json")
        capd = subprocess.Popen(
            capdtest.capd_command(["-i", source, "-w", "-", "--stats-json", stats, *extra]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.addCleanup(capd.kill)
        head = capd.stdout.read(24)
        self.assertEqual(len(head), 24, "capd wrote a file header")
        capd.stdout.close()
        try:
            rc = capd.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"capd did not stop within {TIMEOUT} s after its reader left")
        err = capd.stderr.read().decode()
        return rc, err, capdtest.read_json(stats)

    def test_reader_that_leaves_ends_capd(self):
        """`capd -w - | head -c 100` on a looping source: capd says the
        reader has gone, stops, prints its summary on stderr and exits 1;
        the packets it could not write are counted as `disk` drops."""
        rc, err, s = self.early_reader(f"pcap:{self.src},loop")
        self.assertEqual(rc, 1, err)
        self.assertIn("capd: standard output: Broken pipe: its reader has gone; stopping", err)
        self.assertIn("capd: dropped", err)
        self.assertTrue(any("standard output" in e and "not written" in e for e in s["errors"]),
                        s["errors"])
        self.assertEqual(s["packets_written"] + capdtest.lost_after_receipt(s),
                         s["packets_received"] - s["packets_filtered_out"])

    def test_reader_that_leaves_an_idle_capture_ends_capd(self):
        """No packet to write (a paced source at one packet per 100 s): capd
        still notices that the pipe's reader has gone and stops."""
        rc, err, s = self.early_reader("null:64,rate=0.01")
        self.assertEqual(rc, 1, err)
        self.assertIn("its reader has gone; stopping", err)
        self.assertIn("capd: dropped", err)

    def test_rotation_is_refused(self):
        """SIGUSR2 (and capctl rotate) would put a second header in the
        stream: refused with a line, and the stream stays one whole capture."""
        capd = subprocess.Popen(
            capdtest.capd_command(["-i", "null:64,rate=2000", "--duration", "3", "--ctl", "none",
                                   "-w", "-"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.addCleanup(capd.kill)
        hdr = capd.stdout.read(24)
        self.assertEqual(len(hdr), 24)
        capd.send_signal(signal.SIGUSR2)
        rest, err = capd.communicate(timeout=TIMEOUT)
        err = err.decode()
        self.assertEqual(capd.returncode, 0, err)
        self.assertIn("capd: SIGUSR2: -w -: standard output is one stream; it does not rotate",
                      err)
        cap = self.read_bytes(hdr + rest, "s.pcap")
        self.assertGreater(len(cap.records), 0)

    def refused(self, args, words):
        rc, out, err = run_to_pipe(["-i", f"pcap:{self.src}", "-w", "-"] + args)
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, b"")
        lines = [l for l in err.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("capd: "), err)
        self.assertIn(words, lines[0])

    def test_file_options_are_refused(self):
        for args in (["-C", "1"], ["-G", "5"], ["-W", "3", "-C", "1"], ["-z", "gzip"],
                     ["--reuse-files"], ["--preallocate", "-C", "1", "-W", "2"], ["--direct"]):
            with self.subTest(args=args):
                self.refused(args, "needs files: -w - writes one stream to standard output")
        with self.subTest(args="--writers 2"):
            self.refused(["--workers", "2", "--writers", "2"], "one writer")


if __name__ == "__main__":
    capdtest.main()
