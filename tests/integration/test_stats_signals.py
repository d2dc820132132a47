#!/usr/bin/env python3
"""--stats-json, the end-of-run summary, drop accounting, and stopping on
SIGINT/SIGTERM.

The summary's counters must agree with the files: packets_written is the
number of records in the output files, bytes_written their total size, and
every packet received is either filtered out, past -c, written, or counted
as dropped at one stage.
"""

import os
import re
import signal
import subprocess
import time

import capdtest
import gencaps
import pcaplib
from capdtest import CapdTestCase, RunningCapd

SUMMARY = re.compile(r"^capd: (\d+) packets received, (\d+) filtered out, (\d+) written "
                     r"\((\d+) bytes in (\d+) files?\) in [0-9.]+ s")
DROPPED = re.compile(r"^capd: dropped (\d+): ([a-z-]+ \d+(?:, [a-z-]+ \d+)*)$")


def output_files(d):
    return sorted(os.path.join(d, f) for f in capdtest.listdir(d) if not f.startswith("."))


def assertDroppedLine(test, run, s):
    """The summary's drop line names every stage of the JSON summary s, by its
    label and in its order, with the JSON's counts."""
    d = next((DROPPED.match(l) for l in run.stderr_lines if DROPPED.match(l)), None)
    test.assertIsNotNone(d, "drop line on stderr\n" + run.describe())
    pairs = [p.rsplit(" ", 1) for p in d.group(2).split(", ")]
    test.assertEqual([(k, int(v)) for k, v in pairs],
                     [(st["label"], s["drops"][st["name"]]) for st in s["drop_stages"]])
    test.assertEqual(int(d.group(1)), s["drops"]["total"])


class StatsJson(CapdTestCase):
    def assertConsistent(self, s, files, run=None):
        """Checks the JSON summary against itself and the output files."""
        for k in ("elapsed_s", "packets_received", "packets_filtered_out", "packets_written",
                  "bytes_written", "drops"):
            self.assertIn(k, s)
        self.assertIsInstance(s["elapsed_s"], (int, float))
        self.assertGreater(s["elapsed_s"], 0)
        stages = capdtest.drop_stages(s)
        self.assertEqual(sorted(stages + ["total"]), sorted(s["drops"]))
        # The NIC's stages are the ones before receipt.
        self.assertEqual([st["name"].startswith("nic_") for st in s["drop_stages"]],
                         [st["before_receipt"] for st in s["drop_stages"]])
        for k in stages:
            self.assertIsInstance(s["drops"][k], int, k)
            self.assertGreaterEqual(s["drops"][k], 0, k)
        self.assertEqual(s["drops"]["total"], sum(s["drops"][k] for k in stages))
        # Packets discarded on purpose (capctl pause, past -c) are not losses.
        self.assertNotIn("paused", s["drops"])
        self.assertNotIn("over_limit", s["drops"])
        self.assertIsInstance(s["packets_paused"], int)
        records = 0
        for f in files:
            records += len(self.assertWhole(f).records)
        self.assertEqual(s["packets_written"], records, "packets_written == records in files")
        self.assertEqual(s["bytes_written"], sum(os.path.getsize(f) for f in files),
                         "bytes_written == size of the files")
        self.assertEqual(s["files_written"], len(files))
        after_filter = (s["packets_received"] - s["packets_filtered_out"]
                        - s.get("packets_over_limit", 0))
        lost = capdtest.lost_after_receipt(s)
        self.assertEqual(after_filter, s["packets_written"] + lost + s["packets_paused"],
                         "every accepted packet is written or counted as dropped")
        self.assertEqual(sum(w["rx_packets"] for w in s["workers"]), s["packets_received"])
        self.assertEqual(sum(w["packets"] for w in s["writers"]), s["packets_written"])
        for w in s["workers"]:
            gap = w["max_poll_gap_us"]
            self.assertTrue(0 < gap < s["elapsed_s"] * 1e6 + 1e6, f"poll gap {gap} us")
        if run is not None:
            lines = run.stderr_lines
            m = next((SUMMARY.match(l) for l in lines if SUMMARY.match(l)), None)
            self.assertIsNotNone(m, "summary line on stderr\n" + run.describe())
            self.assertEqual([int(x) for x in m.groups()],
                             [s["packets_received"], s["packets_filtered_out"],
                              s["packets_written"], s["bytes_written"], s["files_written"]])
            assertDroppedLine(self, run, s)

    def setUp(self):
        super().setUp()
        self.out = self.path("out")
        os.mkdir(self.out)
        self.json = self.path("stats.json")

    def test_two_sources(self):
        a, _ = gencaps.mixed(3000, source=1)
        b, _ = gencaps.mixed(1000, source=2)
        sa = gencaps.write(self.path("a.pcap"), a)
        sb = gencaps.write(self.path("b.pcap"), b, nano=False)
        run = self.capd(["-i", f"pcap:{sa}", "-i", f"pcap:{sb}", "--nano", "-w",
                         os.path.join(self.out, "x.pcap"), "--stats-json", self.json])
        self.assertCapdOk(run)
        s = capdtest.read_json(self.json)
        self.assertConsistent(s, output_files(self.out), run)
        self.assertEqual(s["packets_received"], 4000)
        self.assertEqual(s["packets_filtered_out"], 0)
        self.assertEqual(s["packets_written"], 4000)
        self.assertEqual(s["drops"]["total"], 0)
        self.assertEqual(s["bytes_received"], sum(len(p.data) for p in a + b))
        self.assertEqual([(x["name"], x["packets"]) for x in s["sources"]],
                         [(f"pcap:{sa}", 3000), (f"pcap:{sb}", 1000)])

    def test_count_limit(self):
        pkts, _ = gencaps.mixed(700)
        src = gencaps.write(self.path("a.pcap"), pkts)
        run = self.capd(["-i", f"pcap:{src},loop", "-c", "5000", "-w",
                         os.path.join(self.out, "x.pcap"), "--stats-json", self.json])
        self.assertCapdOk(run)
        s = capdtest.read_json(self.json)
        self.assertConsistent(s, output_files(self.out), run)
        self.assertEqual(s["packets_written"] + s["drops"]["total"], 5000)

    def test_rotation(self):
        pkts, _ = gencaps.mixed(6000, seed=31)
        src = gencaps.write(self.path("a.pcap"), pkts)
        run = self.capd(["-i", f"pcap:{src}", "-C", "1", "--format", "pcapng", "-w",
                         os.path.join(self.out, "x.pcapng"), "--stats-json", self.json])
        self.assertCapdOk(run)
        s = capdtest.read_json(self.json)
        files = output_files(self.out)
        self.assertGreaterEqual(len(files), 3)
        self.assertConsistent(s, files, run)
        self.assertEqual(s["packets_written"], 6000)

    def test_filter(self):
        pkts, kinds = gencaps.mixed(2000, seed=32)
        src = gencaps.write(self.path("a.pcap"), pkts)
        run = self.capd(["-i", f"pcap:{src}", "-w", os.path.join(self.out, "x.pcap"),
                         "--stats-json", self.json, "udp"])
        self.assertCapdOk(run)
        s = capdtest.read_json(self.json)
        self.assertConsistent(s, output_files(self.out), run)
        udp = sum(1 for k in kinds if k in ("udp4", "udp6"))
        self.assertEqual(s["packets_written"], udp)
        self.assertEqual(s["packets_filtered_out"], 2000 - udp)

    def slow_writer_run(self, n):
        pkts, _ = gencaps.mixed(n, seed=33)
        src = gencaps.write(self.path("a.pcap"), pkts)
        run = self.capd(["-i", f"pcap:{src}", "--nano", "-w", os.path.join(self.out, "x.pcap"),
                         "--stats-json", self.json, "-s", "1600", "--chunk-kb", "64",
                         "--ring-chunks", "2", "--test-writer-delay-us", "20000"])
        self.assertCapdOk(run)
        return pkts, run, capdtest.read_json(self.json)

    def test_slow_writer_accounting(self):
        """With a writer far slower than the reader and tiny rings, every
        packet is still either written or counted as dropped."""
        _, run, s = self.slow_writer_run(20000)
        self.assertConsistent(s, output_files(self.out), run)
        self.assertEqual(s["packets_received"], 20000)

    def test_slow_writer_file_source_is_lossless(self):
        """A finite pcap: source is a copy, not a wire: when the writer is
        slow, capd can read the file more slowly instead of dropping (the
        brief's 'output holds exactly the input packets')."""
        pkts, run, s = self.slow_writer_run(20000)
        got = self.assertWhole(os.path.join(self.out, "x.pcap"))
        self.assertEqual(s["drops"]["total"], 0, run.describe())
        want = [pcaplib.Record(p.ts_ns, len(p.data), len(p.data), p.data) for p in pkts]
        self.assertIsNone(capdtest.record_mismatch(want, got.records, "ns"))


class Signals(CapdTestCase):
    """SIGINT/SIGTERM during a looping capture: exit 0, every file whole, no
    hidden file left, the summary printed."""

    def setUp(self):
        super().setUp()
        self.out = self.path("out")
        os.mkdir(self.out)
        pkts, _ = gencaps.mixed(2000, seed=41)
        self.src = gencaps.write(self.path("gen.pcap"), pkts)

    def interrupt(self, sig, args, ready):
        """Starts capd, waits (bounded) until ready() holds, sends sig."""
        if "--stats-json" in args:
            js = args[args.index("--stats-json") + 1]
        else:
            js = self.path("summary.json")
            args = args + ["--stats-json", js]
        c = RunningCapd(args)
        self.addCleanup(c.kill)
        ok = capdtest.wait_until(lambda: ready() or not c.running(), timeout=60)
        if not c.running():
            self.fail("capd ended before the signal\n" + c.wait().describe())
        self.assertTrue(ok, "capd produced no output within 60 s")
        c.signal(sig)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 0, run.describe())
        self.assertTrue(any(SUMMARY.match(l) for l in run.stderr_lines),
                        "summary on stderr\n" + run.describe())
        assertDroppedLine(self, run, capdtest.read_json(js))
        files = output_files(self.out)
        self.assertTrue(files)
        for f in files:
            self.assertWhole(f)
            if capdtest.have("tcpdump"):
                n, err = capdtest.tcpdump_count(f)
                self.assertIsNone(err)
        self.assertNoHidden(self.out)
        return run, files

    def rotated(self):
        return bool(output_files(self.out))

    def test_sigint_pcap_rotating(self):
        self.interrupt(signal.SIGINT, ["-i", f"pcap:{self.src},loop", "-C", "2", "-W", "3",
                                       "-w", os.path.join(self.out, "x.pcap")], self.rotated)

    def test_sigterm_pcapng_rotating(self):
        _, files = self.interrupt(
            signal.SIGTERM, ["-i", f"pcap:{self.src},loop", "-C", "2", "-W", "3", "--format",
                             "pcapng", "-w", os.path.join(self.out, "x.pcapng")], self.rotated)
        for f in files:
            cap = pcaplib.read_capture(f)
            self.assertEqual(len(cap.stats), 1, f"{f}: statistics block at close")

    def test_sigterm_two_workers(self):
        self.interrupt(signal.SIGTERM, ["-i", f"pcap:{self.src},loop", "-i",
                                        f"pcap:{self.src},loop", "--workers", "2", "--writers",
                                        "2", "-C", "2", "-W", "2", "-w",
                                        os.path.join(self.out, "x.pcap")], self.rotated)

    def test_sighup_stops_cleanly(self):
        """Closing the terminal (SIGHUP) leaves whole, named files and a
        summary, as tcpdump does; it used to kill capd with the current file
        left hidden."""
        self.interrupt(signal.SIGHUP, ["-i", f"pcap:{self.src},loop", "-C", "2", "-W", "3",
                                       "-w", os.path.join(self.out, "x.pcap")], self.rotated)

    def test_sigusr1_prints_counters_and_sigusr2_rotates(self):
        """SIGUSR1 prints the counters so far on stderr (tcpdump's SIGUSR1),
        SIGUSR2 closes the current file and starts the next (capctl
        rotate); neither stops capd. With and without a control socket."""
        for ctl in (["--ctl", "none"], ["--ctl", os.path.join(self.out, "c.sock")]):
            with self.subTest(ctl=ctl[1]):
                d = os.path.join(self.out, "usr" + str(len(ctl[1])))
                os.mkdir(d)
                c = RunningCapd(["-i", "null:64,rate=20000", "-C", "100", "-w",
                                 os.path.join(d, "x.pcap")] + ctl)
                self.addCleanup(c.kill)
                hidden = os.path.join(d, ".x.pcap.partial")
                self.assertTrue(capdtest.wait_until(
                    lambda: os.path.exists(hidden) and os.path.getsize(hidden) > 24, 60))
                c.signal(signal.SIGUSR1)

                def stderr_now():
                    # pread: capd shares this file's offset, which a seek
                    # would move under its next write.
                    return os.pread(c.err.fileno(), 1 << 20, 0).decode("utf-8", "replace")

                self.assertTrue(capdtest.wait_until(
                    lambda: any(SUMMARY.match(l) for l in stderr_now().splitlines()), 120),
                    "no counters on stderr after SIGUSR1")
                c.signal(signal.SIGUSR2)
                self.assertTrue(capdtest.wait_until(
                    lambda: os.path.exists(os.path.join(d, "x.pcap")), 120),
                    "SIGUSR2 did not rotate")
                self.assertTrue(c.running(), "capd stopped on SIGUSR1/SIGUSR2")
                c.signal(signal.SIGTERM)
                run = c.wait(timeout=120)
                self.assertEqual(run.rc, 0, run.describe())
                self.assertEqual(sum(1 for l in run.stderr_lines if SUMMARY.match(l)), 2,
                                 run.describe())
                self.assertEqual(sorted(f for f in capdtest.listdir(d) if f.startswith("x.")),
                                 ["x.pcap", "x.pcap1"])
                self.assertNoHidden(d)

    def test_sigint_honoured_when_the_shell_left_it_ignored(self):
        """A background job of a script starts with SIGINT ignored; capd
        installs its handlers itself, so SIGINT still stops it cleanly."""
        out = os.path.join(self.out, "x.pcap")
        p = subprocess.Popen(capdtest.capd_command(["-i", f"pcap:{self.src},loop", "-w", out]),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            hidden = os.path.join(self.out, ".x.pcap.partial")
            self.assertTrue(capdtest.wait_until(
                lambda: os.path.exists(hidden) and os.path.getsize(hidden) > 24, 60))
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        self.assertEqual(p.returncode, 0, err.decode(errors="replace"))
        self.assertWhole(out)
        self.assertNoHidden(self.out)

    def test_sigint_stats_match_file(self):
        """Stopped by a signal, the summary still matches the file."""
        js = self.path("stats.json")
        hidden = os.path.join(self.out, ".x.pcap.partial")

        def started():
            return os.path.exists(hidden) and os.path.getsize(hidden) > 24

        _, files = self.interrupt(signal.SIGINT, ["-i", f"pcap:{self.src},loop", "-w",
                                                  os.path.join(self.out, "x.pcap"),
                                                  "--stats-json", js], started)
        s = capdtest.read_json(js)
        self.assertEqual(s["packets_written"], len(pcaplib.read_capture(files[0]).records))
        self.assertEqual(s["bytes_written"], os.path.getsize(files[0]))


class ReceiveRing(CapdTestCase):
    """--rx-desc sets the depth of the receive ring a stalled worker can lean
    on. The paced null source models it: capd is stopped for 0.4 s while
    20 000 packets/s are offered (8 000 packets); a 1024-descriptor ring
    loses what it cannot hold and counts it as nic_imissed, a 32768 one holds
    it all. Nothing is lost inside capd either way. The deep ring holds 1.6 s
    of the offer: the stall, and any time the worker waits for a CPU on a
    loaded machine around it, fit in it with room to spare."""

    RATE, SECONDS, STALL = 20000, 4.0, 0.4

    def stalled_run(self, rx_desc):
        d = self.path(f"ring{rx_desc}")
        os.makedirs(d)
        js = os.path.join(d, "stats.json")
        c = RunningCapd(["-i", f"null:64,rate={self.RATE}", "--rx-desc", str(rx_desc),
                         "--duration", str(self.SECONDS), "--ctl", "none", "--stats-json", js,
                         "-w", os.path.join(d, "x.pcap")])
        self.addCleanup(c.kill)
        hidden = os.path.join(d, ".x.pcap.partial")
        self.assertTrue(capdtest.wait_until(lambda: os.path.exists(hidden) or not c.running(),
                                            timeout=60), "capd opened no file")
        time.sleep(0.5)
        self.assertTrue(c.running(), "capd ended before the stall")
        c.signal(signal.SIGSTOP)
        time.sleep(self.STALL)
        c.signal(signal.SIGCONT)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 0, run.describe())
        s = capdtest.read_json(js)
        for k in capdtest.drop_stages(s):
            if k != "nic_imissed":
                self.assertEqual(s["drops"][k], 0, k)
        self.assertEqual(s["packets_written"], s["packets_received"])
        self.assertEqual(len(self.assertWhole(os.path.join(d, "x.pcap")).records),
                         s["packets_written"])
        return s

    def test_shallow_ring_counts_what_it_could_not_hold(self):
        s = self.stalled_run(1024)
        offered_in_stall = self.RATE * self.STALL
        self.assertGreater(s["drops"]["nic_imissed"], (offered_in_stall - 1024) * 0.5)
        # Every offered packet is received or counted: about RATE x SECONDS.
        offered = s["packets_received"] + s["drops"]["nic_imissed"]
        self.assertLess(abs(offered - self.RATE * self.SECONDS), self.RATE * self.SECONDS * 0.15,
                        f"received + imissed = {offered}")

    def test_deep_ring_holds_the_stall(self):
        s = self.stalled_run(32768)
        self.assertEqual(s["drops"]["nic_imissed"], 0)
        self.assertLess(abs(s["packets_received"] - self.RATE * self.SECONDS),
                        self.RATE * self.SECONDS * 0.15)


if __name__ == "__main__":
    capdtest.main()
