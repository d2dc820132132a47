#!/usr/bin/env python3
"""Rotation with -C/-G/-W and post-rotate commands with -z.

Names follow tcpdump 4.99: -C alone gives NAME, NAME1, NAME2...; -C with -W
gives NAME0..NAME{W-1} (zero-padded to W-1's width) and keeps at most W files,
the one being written included; -G passes NAME through strftime once per
period, and with -C the counter restarts in each period. No hidden
.NAME.partial file may remain.

Record identity in looped captures: `pcap:FILE,loop` shifts each round's
timestamps by the file's span + 1 us, so a record's timestamp tells its
round and its index in FILE, and hence its global sequence number.
"""

import glob
import os
import re
import signal
import stat
import subprocess
import time

import capdtest
import gencaps
import pcaplib
from capdtest import CapdTestCase

MB = 1000000  # -C counts millions of bytes, as tcpdump


def z_script(d, log):
    """A -z command that appends "FILE SIZE" (or "FILE gone") to log."""
    p = os.path.join(d, "z.sh")
    with open(p, "w") as f:
        f.write("#!/bin/sh\n"
                f'echo "$1 $(stat -c %s "$1" 2>/dev/null || echo gone)" >> {log}\n')
    os.chmod(p, 0o755)
    return p


def signal_pending(pid, sig):
    """True while `sig` sent to process `pid` waits for delivery: in the
    process's shared pending set or one of its threads' own."""
    bit = 1 << (int(sig) - 1)
    for status in [f"/proc/{pid}/status"] + glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                        return True
        except (FileNotFoundError, ProcessLookupError):
            pass
    return False


def z_log(log):
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [tuple(l.split(" ", 1)) for l in f.read().splitlines() if l]


class LoopModel:
    """Maps records of a looped capture back to (round, index)."""

    def __init__(self, pkts):
        self.pkts = pkts
        self.first = pkts[0].ts_ns
        self.shift = pkts[-1].ts_ns - pkts[0].ts_ns + 1000
        self.index = {p.ts_ns: i for i, p in enumerate(pkts)}

    def seq(self, rec, precision="ns"):
        """Global sequence number of rec, or raises AssertionError."""
        rnd = (rec.ts_ns - self.first) // self.shift
        orig = rec.ts_ns - rnd * self.shift
        i = self.index.get(orig)
        if i is None:
            raise AssertionError(f"record at {rec.ts_ns} matches no input packet")
        if self.pkts[i].data != rec.data:
            raise AssertionError(f"record at {rec.ts_ns} (round {rnd}, packet {i}): bytes differ")
        return rnd * len(self.pkts) + i


class SizeRotation(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.pkts, _ = gencaps.mixed(2000, seed=21)
        self.src = gencaps.write(self.path("gen.pcap"), self.pkts)
        self.max_record = 16 + max(len(p.data) for p in self.pkts)
        self.out = self.path("out")
        os.mkdir(self.out)

    def assertRing(self, names, s, count, w):
        """The -W ring in self.out: every file whole and under the limit, its
        packets in order, files disjoint and in mtime order, the newest packets
        in the last file written, none lost when capd reports no drop.
        Returns the last file's name."""
        model = LoopModel(self.pkts)
        ranges = []
        for n in names:
            p = os.path.join(self.out, n)
            cap = self.assertWhole(p)
            self.assertLessEqual(os.path.getsize(p), MB + self.max_record, n)
            self.assertTrue(cap.records, f"{n} holds packets")
            seqs = [model.seq(r) for r in cap.records]
            self.assertEqual(seqs, sorted(seqs), f"{n}: packets in order")
            ranges.append((seqs[0], seqs[-1], os.stat(p).st_mtime_ns, n))
        ranges.sort()
        for a, b in zip(ranges, ranges[1:]):
            self.assertLess(a[1], b[0], f"{a[3]} and {b[3]} overlap")
            self.assertLessEqual(a[2], b[2], f"{b[3]} has newer packets but is older than {a[3]}")
        newest = f"{names[0][:-1]}{(s['files_written'] - 1) % w}"
        self.assertEqual(ranges[-1][3], newest, "the last file written holds the newest packets")
        if s["drops"]["total"] == 0:
            self.assertEqual(s["packets_written"], count)
            self.assertEqual(ranges[-1][1], count - 1, "the last packet is the count-th")
            for a, b in zip(ranges, ranges[1:]):
                self.assertEqual(a[1] + 1, b[0], "no packet missing between files")
        return newest

    def test_C_W_ring(self):
        """-C 1 -W 3 over a looping source: 3 files at the end, NAME0..NAME2,
        none larger than 1 MB + one record, the newest packets in the newest
        file. (While it runs the third closed file goes as the fourth opens:
        RingOnSmallDisk.)"""
        count = 20000
        log = self.path("z.log")
        stats = self.path("stats.json")
        run = self.capd(["--nano", "-i", f"pcap:{self.src},loop", "-c", count, "-C", "1",
                         "-W", "3", "-w", os.path.join(self.out, "rot.pcap"),
                         "-z", z_script(self.tmp, log), "--stats-json", stats])
        self.assertCapdOk(run)
        s = capdtest.read_json(stats)
        self.assertGreater(s["files_written"], 3, "the test needs the ring to wrap")
        names = sorted(capdtest.listdir(self.out))
        self.assertEqual(names, ["rot.pcap0", "rot.pcap1", "rot.pcap2"])
        newest = self.assertRing(names, s, count, 3)
        # -z ran on every closed file, the last one included.
        logged = [n for n, _ in z_log(log)]
        self.assertEqual(len(logged), s["files_written"], f"-z runs: {logged}")
        self.assertIn(os.path.join(self.out, newest), logged)
        self.assertNoHidden(self.out)

    def test_reuse_files_ring(self):
        """--reuse-files: a -C 1 -W 3 ring run twice into the same directory
        keeps its three inodes (the second run writes over the first's
        files), and each file still parses to its end with only this run's
        packets: a file shorter than the one it displaced was cut."""
        base = os.path.join(self.out, "ru.pcap")
        inodes = []
        for count in (20000, 14000):
            stats = self.path("stats.json")
            run = self.capd(["-q", "--nano", "--reuse-files", "-i", f"pcap:{self.src},loop",
                             "-c", count, "-C", "1", "-W", "3", "-w", base,
                             "--stats-json", stats])
            self.assertCapdOk(run, quiet=True)
            s = capdtest.read_json(stats)
            self.assertGreater(s["files_written"], 3, "the test needs the ring to wrap")
            names = sorted(capdtest.listdir(self.out))
            self.assertEqual(names, ["ru.pcap0", "ru.pcap1", "ru.pcap2"])
            self.assertRing(names, s, count, 3)
            self.assertNoHidden(self.out)
            inodes.append(sorted(os.stat(os.path.join(self.out, n)).st_ino for n in names))
        self.assertEqual(inodes[0], inodes[1], "the second run reused the first run's files")

    def test_preallocate_ring(self):
        """--preallocate -C 1 -W 3: the first run writes into spares claimed
        at start and leaves none behind; a second run that reaches only the
        first name leaves the earlier run's other files byte for byte."""
        base = os.path.join(self.out, "pa.pcap")
        digests = {}
        for count in (20000, 100):
            stats = self.path("stats.json")
            run = self.capd(["-q", "--nano", "--preallocate", "-i", f"pcap:{self.src},loop",
                             "-c", count, "-C", "1", "-W", "3", "-w", base,
                             "--stats-json", stats])
            self.assertCapdOk(run, quiet=True)
            self.assertNoHidden(self.out)
            names = sorted(capdtest.listdir(self.out))
            self.assertEqual(names, ["pa.pcap0", "pa.pcap1", "pa.pcap2"])
            s = capdtest.read_json(stats)
            if count == 20000:
                self.assertGreater(s["files_written"], 3, "the test needs the ring to wrap")
                self.assertRing(names, s, count, 3)
                for n in names[1:]:
                    with open(os.path.join(self.out, n), "rb") as f:
                        digests[n] = f.read()
            else:
                self.assertEqual(s["files_written"], 1)
                self.assertEqual(len(self.assertWhole(base + "0").records), count)
                for n, data in digests.items():
                    with open(os.path.join(self.out, n), "rb") as f:
                        self.assertEqual(f.read(), data, f"{n} was changed")
                    self.assertWhole(os.path.join(self.out, n))

    def test_W_counter_width(self):
        """tcpdump pads the counter to the width of W-1: -W 11 gives
        NAME00..NAME10."""
        run = self.capd(["-q", "--nano", "-i", f"pcap:{self.src},loop", "-c", "30000", "-C",
                         "1", "-W", "11", "-w", os.path.join(self.out, "w.pcap")])
        self.assertCapdOk(run, quiet=True)
        self.assertEqual(sorted(capdtest.listdir(self.out)), [f"w.pcap{i:02d}" for i in range(11)])
        self.assertNoHidden(self.out)

    def test_C_without_W(self):
        """-C 1 alone: NAME, NAME1, NAME2...; all packets, in order; every
        file but the last reached the limit; -z saw each final file whole."""
        src2 = gencaps.write(self.path("gen5k.pcap"), gencaps.mixed(5000, seed=22)[0])
        want = pcaplib.as_libpcap_reads(pcaplib.read_capture(src2))
        log = self.path("z.log")
        base = os.path.join(self.out, "x.pcap")
        run = self.capd(["-q", "--nano", "-i", f"pcap:{src2}", "-C", "1", "-w", base,
                         "-z", z_script(self.tmp, log)])
        self.assertCapdOk(run, quiet=True)
        names = capdtest.listdir(self.out)
        k = len(names)
        self.assertGreaterEqual(k, 3)
        self.assertEqual(sorted(names), sorted(["x.pcap"] + [f"x.pcap{i}" for i in range(1, k)]))
        records = []
        max_rec = 16 + max(r.caplen for r in want)
        for i in range(k):
            p = base + (str(i) if i else "")
            cap = self.assertWhole(p)
            size = os.path.getsize(p)
            self.assertLessEqual(size, MB + max_rec, p)
            if i < k - 1:
                self.assertGreaterEqual(size, MB, f"{p} rotated before reaching -C")
            records += cap.records
        self.assertIsNone(capdtest.record_mismatch(want, records, "ns"))
        logged = z_log(log)
        self.assertEqual(sorted(n for n, _ in logged), sorted(os.path.join(self.out, n)
                                                              for n in names))
        for n, size in logged:
            self.assertEqual(size, str(os.path.getsize(n)), f"-z {n} ran on the whole file")
        self.assertNoHidden(self.out)

    def test_C_pcapng(self):
        """pcapng files rotate too: each one starts with its own section and
        interface blocks and ends with statistics blocks."""
        src2 = gencaps.write(self.path("gen5k.pcap"), gencaps.mixed(5000, seed=23)[0])
        want = pcaplib.as_libpcap_reads(pcaplib.read_capture(src2))
        base = os.path.join(self.out, "x.pcapng")
        run = self.capd(["-q", "--format", "pcapng", "-i", f"pcap:{src2}", "-C", "1", "-w", base])
        self.assertCapdOk(run, quiet=True)
        k = len(capdtest.listdir(self.out))
        self.assertGreaterEqual(k, 3)
        records = []
        for i in range(k):
            p = base + (str(i) if i else "")
            cap = self.assertWhole(p)
            self.assertEqual(len(cap.interfaces), 1, p)
            self.assertEqual(cap.interfaces[0].name, f"pcap:{src2}")
            self.assertEqual(len(cap.stats), 1, p)
            # One record and the statistics block past the limit at most.
            self.assertLessEqual(os.path.getsize(p), MB + 32 + 1600 + 64, p)
            records += cap.records
            if capdtest.have("tshark"):
                rows, err = capdtest.tshark_fields(p, ["frame.number"])
                self.assertIsNone(err)
                self.assertEqual(len(rows), len(cap.records))
        self.assertIsNone(capdtest.record_mismatch(want, records, "pcapng"))
        self.assertNoHidden(self.out)


def entries(d):
    """Files in d, hidden ones included, counted by inode (a rename seen
    half-way by listdir is one file)."""
    try:
        return {e.inode() for e in os.scandir(d)}
    except FileNotFoundError:
        return set()


class RingOnSmallDisk(CapdTestCase):
    """-C 1 -W 3 on a tmpfs of about C x W, which holds tcpdump's ring: W
    files on disk, counting the one being written (tcpdump truncates the
    oldest name when it opens it again). capd's ring must fit there too:
    the oldest file goes when the new one opens, not when it is closed."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        self.out = self.path("disk")
        os.mkdir(self.out)
        # Three files of 1 MB and one record each, in 4 KiB pages (735
        # pages), plus 256 KiB: a fourth file does not fit.
        size = 3 * MB + 256 * 1024
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                            "linecap-ring", self.out], capture_output=True, timeout=30)
        if p.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs: {p.stderr.decode().strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", self.out], capture_output=True,
                        timeout=30)

    def test_ring_fits_C_times_W(self):
        """A finite capture of about 9 MB through -C 1 -W 3 (the workers wait
        for the writer, which is slowed so the directory can be watched):
        every packet written, no `disk` drop, never more than 3 files."""
        pkts, _ = gencaps.mixed(18000, seed=26)
        src = gencaps.write(self.path("gen.pcap"), pkts)
        stats = self.path("stats.json")
        # The captures alone are sized to the tmpfs: no index beside them.
        c = capdtest.RunningCapd(["--nano", "--no-index", "-i", f"pcap:{src}", "-C", "1",
                                  "-W", "3", "-w", os.path.join(self.out, "rot.pcap"),
                                  "--stats-json", stats, "-s", "1600", "--chunk-kb", "64",
                                  "--ring-chunks", "2", "--test-writer-delay-us", "20000"])
        self.addCleanup(c.kill)
        most, looks = 0, 0
        deadline = time.monotonic() + capdtest.CAPD_TIMEOUT
        while c.running() and time.monotonic() < deadline:
            most = max(most, len(entries(self.out)))
            looks += 1
            time.sleep(0.002)
        run = c.wait()
        self.assertCapdOk(run)
        s = capdtest.read_json(stats)
        self.assertEqual(s["drops"]["disk"], 0, run.describe())
        self.assertEqual(s["drops"]["total"], 0, run.describe())
        self.assertEqual(s["packets_written"], len(pkts))
        self.assertGreater(s["files_written"], 6, "the test needs the ring to wrap twice")
        self.assertGreater(looks, 10)
        self.assertLessEqual(most, 3, f"{most} files at once on a -W 3 ring")
        self.assertEqual(sorted(capdtest.listdir(self.out)), ["rot.pcap0", "rot.pcap1", "rot.pcap2"])
        for n in capdtest.listdir(self.out):
            self.assertWhole(os.path.join(self.out, n))


class TimeRotation(CapdTestCase):
    NAME = re.compile(r"^g-\d{8}-\d{6}\.pcap$")

    def check_time_files(self, log, min_files=3):
        names = sorted(capdtest.listdir(self.out))
        self.assertGreaterEqual(len(names), min_files, f"-G 1 for 3.5 s made {names}")
        for n in names:
            self.assertRegex(n, self.NAME)
        caps = [self.assertWhole(os.path.join(self.out, n)) for n in names]
        logged = sorted(n for n, _ in z_log(log))
        self.assertEqual(logged, [os.path.join(self.out, n) for n in names],
                         "-z ran once on every file, the last one included")
        self.assertNoHidden(self.out)
        return names, caps

    def setUp(self):
        super().setUp()
        self.out = self.path("out")
        os.mkdir(self.out)

    def test_G_with_traffic(self):
        """-G 1 on a looping source for 3.5 s, the writer slowed down so the
        disk is not flooded: at least 3 files, strftime names, each whole,
        packets in time order across the files."""
        pkts, _ = gencaps.mixed(2000, seed=24)
        src = gencaps.write(self.path("gen.pcap"), pkts)
        log = self.path("z.log")
        run = self.capd(["--nano", "-i", f"pcap:{src},loop", "--duration", "3.5", "-G", "1",
                         "-w", os.path.join(self.out, "g-%Y%m%d-%H%M%S.pcap"),
                         "-z", z_script(self.tmp, log), "-s", "1600", "--chunk-kb", "64",
                         "--ring-chunks", "4", "--test-writer-delay-us", "100000"])
        self.assertCapdOk(run)
        names, caps = self.check_time_files(log)
        model = LoopModel(pkts)
        last = -1
        for n, cap in zip(names, caps):
            for r in cap.records:
                s = model.seq(r)
                self.assertGreater(s, last, f"{n}: packets in time order across files")
                last = s

    def test_G_with_C_names_as_tcpdump(self):
        """-G 1 -C 0.2 at about 2 MB/s: as tcpdump 4.99, each period's files
        are PERIOD, PERIOD1, PERIOD2... (the strftime name is the period's
        start, the counter restarts with it), and the -C cuts, every 0.1 s,
        do not hold back the -G rotation: there are several periods."""
        stats = self.path("stats.json")
        run = self.capd(["-q", "-i", "null:1000,rate=2000", "--duration", "3.5", "-G", "1",
                         "-C", "0.2", "-w", os.path.join(self.out, "g-%Y%m%d-%H%M%S.pcap"),
                         "--stats-json", stats])
        self.assertCapdOk(run, quiet=True)
        self.assertNoHidden(self.out)
        name = re.compile(r"^g-(\d{8}-\d{6})\.pcap(\d*)$")
        periods = {}
        records = 0
        for n in capdtest.listdir(self.out):
            m = name.match(n)
            self.assertIsNotNone(m, n)
            periods.setdefault(m.group(1), []).append(int(m.group(2) or 0))
            records += len(self.assertWhole(os.path.join(self.out, n)).records)
        self.assertGreaterEqual(len(periods), 2, sorted(capdtest.listdir(self.out)))
        self.assertTrue(any(len(v) > 1 for v in periods.values()), "no -C cut in a period")
        for p, counts in periods.items():
            self.assertEqual(sorted(counts), list(range(len(counts))),
                             f"period {p}: counters {sorted(counts)}")
        s = capdtest.read_json(stats)
        self.assertEqual(records, s["packets_written"])

    def test_G_quiet_link(self):
        """-G 1 on an idle af_packet link (a veth between namespaces this test
        creates): files still rotate every second."""
        veth = capdtest.VethNamespaces("g")
        why = veth.create()
        self.addCleanup(veth.destroy)
        if why:
            self.skipTest(why)
        log = self.path("z.log")
        run = capdtest.run_capd(
            ["-i", f"af_packet:{veth.cap_if}", "--duration", "3.5", "-G", "1",
             "-w", os.path.join(self.out, "g-%Y%m%d-%H%M%S.pcap"), "-z",
             z_script(self.tmp, log)], netns=veth.cap)
        self.assertCapdOk(run)
        self.check_time_files(log)

    def test_G_W(self):
        """-G 1 -W 2: capd keeps only the two newest interval files (tcpdump
        would stop after two)."""
        pkts, _ = gencaps.mixed(500, seed=25)
        src = gencaps.write(self.path("gen.pcap"), pkts)
        log = self.path("z.log")
        run = self.capd(["--nano", "-i", f"pcap:{src},loop", "--duration", "3.5", "-G", "1",
                         "-W", "2", "-w", os.path.join(self.out, "g-%Y%m%d-%H%M%S.pcap"),
                         "-z", z_script(self.tmp, log), "-s", "1600", "--chunk-kb", "64",
                         "--ring-chunks", "4", "--test-writer-delay-us", "100000"])
        self.assertCapdOk(run)
        names = sorted(capdtest.listdir(self.out))
        self.assertEqual(len(names), 2, names)
        logged = [n for n, _ in z_log(log)]
        self.assertGreaterEqual(len(logged), 3)
        self.assertEqual(sorted(logged)[-2:], [os.path.join(self.out, n) for n in names],
                         "the two newest files are the ones kept")
        for n in names:
            self.assertWhole(os.path.join(self.out, n))
        self.assertNoHidden(self.out)


class TimeDirectories(CapdTestCase):
    """-G 1 with a directory per second (DIR/%Y%m%d-%H%M%S/cap.pcap)."""

    RECOVERED = re.compile(r"^capd: (.*)/\.cap\.pcap\.partial: left by a run that did not "
                           r"finish: recovered as (cap\.recovered-\d{8}T\d{6}Z\.pcap) "
                           r"\((\d+) packets", re.M)

    def setUp(self):
        super().setUp()
        self.out = self.path("out")
        os.mkdir(self.out)
        self.tmpl = os.path.join(self.out, "%Y%m%d-%H%M%S", "cap.pcap")

    def hidden(self):
        return glob.glob(os.path.join(self.out, "*", ".cap.pcap.partial"))

    def kill_with_packets(self, killed):
        """SIGKILLs `killed` while its one hidden file holds a whole packet:
        stopped first, so no rotation comes between the look and the kill."""
        def stopped_with_packets():
            if not killed.running():
                return True
            killed.signal(signal.SIGSTOP)
            h = self.hidden()
            if len(h) == 1 and os.path.getsize(h[0]) >= 24 + 16 + 256:
                return True
            killed.signal(signal.SIGCONT)
            return False

        ok = capdtest.wait_until(stopped_with_packets, 120, 0.05)
        self.assertTrue(killed.running(), killed.stderr_now())
        self.assertTrue(ok, "no hidden file with a packet in 120 s")
        killed.signal(signal.SIGKILL)
        killed.proc.wait(timeout=30)

    def test_killed_runs_file_in_an_earlier_period_is_recovered(self):
        """A run killed in one second's directory and restarted in a later
        second: the next run recovers the killed run's hidden file in its
        directory, whole up to its last record, with one line. Planted under
        the capture's hidden name, in directories named as %Y%m%d-%H%M%S
        makes them: a file of nobody's (as root), and a file in a directory
        reached through a symbolic link; both left alone."""
        killed = capdtest.RunningCapd(["-i", "null:256,rate=2000", "-G", "1", "-w", self.tmpl,
                                       "--ctl", "none", "--flush-ms", "10"])
        self.addCleanup(killed.kill)
        self.kill_with_packets(killed)
        [hidden] = self.hidden()
        outside = self.path("outside")
        os.mkdir(outside)
        with open(hidden, "rb") as f:
            whole = f.read()
        planted = [os.path.join(outside, ".cap.pcap.partial")]
        os.symlink(outside, os.path.join(self.out, "19700101-000001"))
        root = os.geteuid() == 0
        if root:
            os.mkdir(os.path.join(self.out, "19700101-000002"))
            planted.append(os.path.join(self.out, "19700101-000002", ".cap.pcap.partial"))
        for p in planted:
            with open(p, "wb") as f:
                f.write(whole)
        if root:
            os.chown(planted[-1], 65534, 65534)
        before = {p: os.lstat(p) for p in planted}

        # The next second: the next run writes in directories of its own.
        last = os.stat(hidden).st_mtime
        capdtest.wait_until(lambda: time.time() >= int(last) + 1, 30)
        run = self.capd(["-i", "null:64,rate=100", "--duration", "1.5", "-G", "1",
                         "-w", self.tmpl, "--ctl", "none"])
        self.assertCapdOk(run)
        found = self.RECOVERED.findall(run.stderr)
        self.assertEqual(len(found), 1, run.describe())
        where, name, packets = found[0]
        self.assertEqual(where, os.path.dirname(hidden))
        self.assertFalse(os.path.exists(hidden))
        recovered = os.path.join(where, name)
        cap = self.assertWhole(recovered)
        self.assertEqual(len(cap.records), int(packets))
        self.assertGreater(len(cap.records), 0)
        n, err = capdtest.tcpdump_count(recovered)
        self.assertIsNone(err, err)
        self.assertEqual(n, len(cap.records))
        if root:
            self.assertIn(f"capd: {planted[-1]}: left alone: owned by uid 65534", run.stderr)
        for p, st in before.items():
            with self.subTest(planted=p):
                now = os.lstat(p)
                self.assertEqual((now.st_ino, now.st_size, now.st_uid),
                                 (st.st_ino, st.st_size, st.st_uid))
        # No hidden file of capd's is left; the planted ones are.
        through_link = os.path.join(self.out, "19700101-000001", ".cap.pcap.partial")
        self.assertEqual(sorted(self.hidden()), sorted([through_link] + planted[1:]))

    def test_W_removes_the_directories_it_empties(self):
        """-G 1 -W 2: each file the ring removes takes its directory, so
        after the run only the directories of the two files left exist."""
        run = self.capd(["-i", "null:64,rate=100", "--duration", "3.5", "-G", "1", "-W", "2",
                         "-w", self.tmpl, "--ctl", "none"])
        self.assertCapdOk(run)
        files = glob.glob(os.path.join(self.out, "*", "cap.pcap"))
        self.assertEqual(len(files), 2, os.listdir(self.out))
        self.assertEqual(sorted(os.listdir(self.out)),
                         sorted(os.path.basename(os.path.dirname(p)) for p in files))
        for p in files:
            self.assertWhole(p)
            self.assertEqual(capdtest.listdir(os.path.dirname(p)), ["cap.pcap"])


class PostRotateFailures(CapdTestCase):
    """-z commands that cannot run, exit non-zero or are killed: each is one
    stderr line naming the command, the file and the status, counted per
    writer, and listed in the summary's errors (exit 1). The files are
    whole either way."""

    def run_with(self, cmd):
        out = self.path("out-" + os.path.basename(cmd))
        os.mkdir(out)
        stats = os.path.join(out, "s.json")
        pkts, _ = gencaps.mixed(3000, seed=7)
        src = gencaps.write(self.path("in.pcap"), pkts)
        run = self.capd(["-i", f"pcap:{src}", "-C", "0.1", "-w", os.path.join(out, "x.pcap"),
                         "-z", cmd, "--stats-json", stats])
        files = sorted(f for f in capdtest.listdir(out) if f.startswith("x.pcap"))
        self.assertGreater(len(files), 1, run.describe())
        for f in files:
            self.assertWhole(os.path.join(out, f))
        return run, files, capdtest.read_json(stats)

    def script(self, name, body):
        p = self.path(name)
        with open(p, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(p, 0o755)
        return p

    def check(self, cmd, words):
        run, files, s = self.run_with(cmd)
        self.assertEqual(run.rc, 1, run.describe())
        lines = [l for l in run.stderr_lines if l.startswith("capd: -z '")]
        self.assertEqual(len(lines), len(files), run.describe())
        self.assertTrue(all(words in l and cmd in l for l in lines), run.describe())
        self.assertEqual(sum(w["command_failures"] for w in s["writers"]), len(files))
        self.assertTrue(any("-z command" in e and "failed" in e for e in s["errors"]), s["errors"])

    def test_non_zero_exit(self):
        self.check(self.script("exit3.sh", "exit 3"), "exited with status 3")

    def test_killed_by_a_signal(self):
        self.check(self.script("killed.sh", "kill -9 $$"), "was killed by signal 9")

    def test_missing_command(self):
        self.check(self.path("no-such-command"), "could not be started")

    def test_second_stop_signal_ends_the_wait_for_commands(self):
        """At exit capd waits for running -z commands; a second SIGINT ends
        that wait, and capd names the commands it leaves running."""
        out = self.path("out-wait")
        os.mkdir(out)
        started = self.path("started")
        cmd = self.script("slow.sh", f"touch {started}; sleep 60")
        c = capdtest.RunningCapd(["-i", "null:64,rate=20000", "-C", "0.1", "-w",
                                  os.path.join(out, "x.pcap"), "-z", cmd])
        self.addCleanup(c.kill)
        self.assertTrue(capdtest.wait_until(lambda: os.path.exists(started), 60),
                        "no -z command started")
        c.signal(signal.SIGINT)
        # Two SIGINTs pending at once are one: the second is sent only once
        # capd has taken the first (on a loaded machine capd may not run
        # for a while after a signal is sent).
        self.assertTrue(capdtest.wait_until(
            lambda: not signal_pending(c.pid, signal.SIGINT) or not c.running(), 60),
            "capd never took the first SIGINT")
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 0, run.describe())
        cut = [l for l in run.stderr_lines if "cut short by a second stop signal" in l]
        self.assertTrue(cut, run.describe())
        self.assertTrue(all(cmd in l for l in cut), run.describe())
        subprocess.run(["pkill", "-f", cmd], check=False)

    def test_success_is_silent(self):
        run, files, s = self.run_with(self.script("ok.sh", "exit 0"))
        self.assertEqual(run.rc, 0, run.describe())
        self.assertEqual(sum(w["command_failures"] for w in s["writers"]), 0)
        # The temporary directory's random name may itself hold "-z".
        said = [l for l in run.stderr_lines if "-z" in l.replace(self.tmp, "")]
        self.assertFalse(said, run.describe())


class FileMode(CapdTestCase):
    def test_modes(self):
        src = gencaps.write(self.path("gen.pcap"), gencaps.mixed(10)[0])
        for mode in (None, "0600", "0644"):
            out = self.path(f"m-{mode}.pcap")
            args = ["-q", "-i", f"pcap:{src}", "-w", out]
            if mode:
                args += ["--file-mode", mode]
            with self.subTest(mode=mode):
                self.assertCapdOk(self.capd(args), quiet=True)
                self.assertEqual(stat.S_IMODE(os.stat(out).st_mode),
                                 int(mode or "0640", 8))


if __name__ == "__main__":
    capdtest.main()
