#!/usr/bin/env python3
"""Reliability: disk full, a ring of files on a small disk, kill -9, a slow
disk, hostile packets, file modes.

Every case prints its figures on a line starting with "FIGURES": faults
injected, packets that should have been kept, packets kept (records read back
from the files with pcaplib), and drops as capd counts them next to drops as
measured from outside (received minus the records found in the files).

The disk cases mount their own small tmpfs inside the test's temporary
directory and unmount it afterwards, so they need root (skipped otherwise).
Waits are bounded in time and count; nothing is asserted about how fast
anything happens.

HostilePackets also runs alone in the fast suite (under ASan/UBSan in
scripts/sanitize.sh): `test_reliability.py HostilePackets`.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import stat
import struct
import subprocess
import time
import unittest

import capdtest
import pcaplib
from capdtest import CapdTestCase, RunningCapd, wait_until
from pcaplib import Packet

CAPCTL = os.path.join(capdtest.BUILD_DIR, "ctl", "capctl")
T0 = 1700000000 * 10**9

WRITE_ERROR = "capd: write error:"
WRITING_AGAIN = "capd: writing again"


def figures(case, **kv):
    print("FIGURES " + case + ": " + ", ".join(f"{k} {v}" for k, v in kv.items()), flush=True)


def final_files(d):
    return sorted(os.path.join(d, f) for f in capdtest.listdir(d) if not f.startswith("."))


def hidden_files(d):
    return sorted(os.path.join(d, f) for f in capdtest.listdir(d) if f.startswith("."))


class Tmpfs:
    """A tmpfs of `size` (or a ramfs, which has no size) mounted on `path` by
    this test; umount() is safe to call more than once."""

    def __init__(self, path, size, fstype="tmpfs"):
        self.path = path
        self.mounted = False
        os.makedirs(path, exist_ok=True)
        opts = "mode=0755" if fstype == "ramfs" else f"size={size},mode=0755"
        p = subprocess.run(["mount", "-t", fstype, "-o", opts, "linecap-rel", path],
                           capture_output=True, timeout=30)
        self.error = p.stderr.decode("utf-8", "replace").strip() if p.returncode else None
        self.mounted = p.returncode == 0

    def umount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=30)
            self.mounted = False


class Ext4Image:
    """An ext4 file system in a file of `size` bytes under `work`, loop-mounted
    on `path` by this test (for O_DIRECT, which a tmpfs may refuse); umount()
    is safe to call more than once."""

    def __init__(self, work, path, size):
        self.path = path
        self.mounted = False
        img = os.path.join(work, "ext4.img")
        with open(img, "wb") as f:
            f.truncate(size)
        os.makedirs(path, exist_ok=True)
        self.error = None
        for cmd in (["mkfs.ext4", "-q", "-F", img],
                    ["mount", "-o", "loop,commit=1", img, path]):
            p = subprocess.run(cmd, capture_output=True, timeout=60)
            if p.returncode:
                self.error = f"{cmd[0]}: " + p.stderr.decode("utf-8", "replace").strip()
                return
        self.mounted = True

    def umount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=30)
            self.mounted = False


class LiveCapd:
    """capd running in the background with its own control socket, driven
    with the real capctl. stop() ends it through capctl and returns the run."""

    def __init__(self, test, args, name="capd"):
        self.sock = test.path(f"{name}.sock")
        self.summary = test.path(f"{name}-summary.json")
        self.cap = RunningCapd(list(args) + ["--ctl", self.sock, "--stats-json", self.summary])
        test.addCleanup(self.cap.kill)
        ok = wait_until(lambda: not self.cap.running() or self.ctl("status").returncode == 0,
                        60, 0.1)
        if not ok or not self.cap.running():
            self.cap.kill()
            raise AssertionError("capd did not come up:\n" + self.cap.wait(30).describe())

    @property
    def pid(self):
        return self.cap.proc.pid

    def ctl(self, *args, timeout=30):
        if not os.path.exists(self.sock):
            return subprocess.CompletedProcess(args, 1, "", "no socket")
        try:
            return subprocess.run([CAPCTL, "--ctl", self.sock] + [str(a) for a in args],
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except subprocess.TimeoutExpired:
            raise AssertionError(f"capctl {' '.join(map(str, args))}: no answer in {timeout} s")

    def json(self, *args):
        r = self.ctl("--json", *args)
        if r.returncode != 0:
            raise AssertionError(f"capctl --json {' '.join(args)}: exit {r.returncode}: "
                                 f"{r.stderr.strip()}")
        j = json.loads(r.stdout)
        return j["data"]

    def stats(self):
        return self.json("stats")

    def stderr_lines(self):
        return [l for l in RunningCapd._read(self.cap.err).splitlines() if l.strip()]

    def stop(self, timeout=120):
        self.ctl("stop")
        return self.cap.wait(timeout)

    def read_summary(self):
        with open(self.summary) as f:
            return json.load(f)


class ReliabilityCase(CapdTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.access(CAPCTL, os.X_OK):
            raise unittest.SkipTest(f"capctl not built at {CAPCTL}")

    def mount_ext4(self, name, size):
        if os.geteuid() != 0:
            self.skipTest("mounting a file system needs root")
        fs = Ext4Image(self.tmp, self.path(name), size)
        if not fs.mounted:
            self.skipTest(f"cannot mount an ext4 image: {fs.error}")
        self.addCleanup(fs.umount)
        return fs

    def mount_tmpfs(self, name, size, fstype="tmpfs"):
        if os.geteuid() != 0:
            self.skipTest(f"mounting a {fstype} needs root")
        fs = Tmpfs(self.path(name), size, fstype)
        if not fs.mounted:
            self.skipTest(f"cannot mount a {fstype}: {fs.error}")
        self.addCleanup(fs.umount)
        return fs

    def count_whole(self, paths):
        """Records in files that must be whole (strict pcaplib read)."""
        n = 0
        for p in paths:
            n += len(self.assertWhole(p).records)
        return n

    def assertIdentity(self, s):
        """received = filtered_out + over_limit + written + the drops after
        receipt (the NIC stages count packets never received). Returns
        those drops."""
        lost = capdtest.lost_after_receipt(s)
        self.assertEqual(s["packets_received"],
                         s["packets_filtered_out"] + s["packets_over_limit"] +
                         s["packets_written"] + s["packets_paused"] + lost,
                         json.dumps(s["drops"]))
        return lost


# ---------------------------------------------------------------------- disk

class DiskFull(ReliabilityCase):
    SIZE = 20 * 1000 * 1000
    EXTRA = []  # capd options of the variant

    def mount_disk(self):
        return self.mount_tmpfs("disk", "20m").path

    def assertAlternating(self, lines, failed_writes):
        """One line per episode: a write-error line, then a writing-again
        line when it clears, never two error lines in a row and never more
        error lines than failed writes. Returns the sequence ("E"/"R")."""
        ours = [l for l in lines if l.startswith((WRITE_ERROR, WRITING_AGAIN))]
        kinds = ["E" if l.startswith(WRITE_ERROR) else "R" for l in ours]
        self.assertEqual(kinds[:1], ["E"], ours)
        self.assertTrue(all(a != b for a, b in zip(kinds, kinds[1:])), ours)
        self.assertLessEqual(kinds.count("E"), failed_writes, ours)
        return kinds

    def test_disk_full_then_space_returns(self):
        """A 20 MB tmpfs filled by one growing file (no -W): capd keeps
        receiving, counts `disk` drops, shows DISK ERROR, logs one line per
        episode, never leaves a final file cut mid-record, and writes into a
        new file once files are deleted. Exit status 1 (packets were lost)."""
        disk = self.mount_disk()
        # 272-byte records at 20k/s: 5.4 MB/s, the disk fills in about 4 s.
        live = LiveCapd(self, ["-i", "null:256,rate=20k", "-w", os.path.join(disk, "x.pcap")]
                        + self.EXTRA)

        status = {}

        def in_error():
            status.update(live.json("status"))
            return any(w["disk_error"] for w in status["writers"])

        self.assertTrue(wait_until(in_error, 90, 0.2), f"the disk never filled: {status}")
        # The text status says so too. Asked again while it does not: the
        # writer tries a new file once a second, and until that write fails
        # (with --direct, when its first blocks reach the full disk) it is
        # writing again.
        human = {}

        def says_error():
            human["run"] = live.ctl("status")
            self.assertEqual(human["run"].returncode, 0, human["run"].stderr)
            return "DISK ERROR" in human["run"].stdout

        self.assertTrue(wait_until(says_error, 30, 0.05), human["run"].stdout)

        # Stay full through a few one-second retries.
        s1 = live.stats()
        self.assertTrue(wait_until(lambda: live.stats()["writers"][0]["disk_errors"]
                                   >= s1["writers"][0]["disk_errors"] + 3, 60, 0.2),
                        "capd retries with a new file about once a second")
        s2 = live.stats()
        self.assertTrue(live.cap.running())
        self.assertGreater(s2["packets_received"], s1["packets_received"], "still receiving")
        self.assertGreater(s2["drops"]["disk"], s1["drops"]["disk"], "disk drops counted")
        self.assertGreater(s1["drops"]["disk"], 0)
        self.assertAlternating(live.stderr_lines(), s2["writers"][0]["disk_errors"])

        # Files with final names are whole. Count them, then free the space.
        first = final_files(disk)
        self.assertGreaterEqual(len(first), 1)
        kept_before = self.count_whole(first)
        freed_at = live.stats()["bytes_written"]
        for f in first:
            os.unlink(f)
        # Resumed: more written than the crumbs a cut-back file can free.
        self.assertTrue(wait_until(lambda: live.stats()["bytes_written"] > freed_at + 4e6,
                                   60, 0.1), "writing resumes once space returns")
        run = live.stop()
        s = live.read_summary()

        after = final_files(disk)
        self.assertGreaterEqual(len(after), 1, "a new file after the space returned")
        kept_after = self.count_whole(after)
        self.assertEqual(hidden_files(disk), [], "no hidden file after exit")

        kinds = self.assertAlternating(run.stderr_lines, s["writers"][0]["disk_errors"])
        self.assertIn("R", kinds, "a 'writing again' line once space returned")
        self.assertEqual(run.rc, 1, "exit 1: packets were lost to the disk\n" + run.describe())
        self.assertTrue(any("write errors lost" in e for e in s["errors"]), s["errors"])
        self.assertGreater(s["drops"]["disk"], 0)
        self.assertEqual(s["drops"]["disk"], sum(w["disk_drops"] for w in s["writers"]))
        lost = self.assertIdentity(s)
        kept = kept_before + kept_after
        self.assertEqual(kept, s["packets_written"], "records in files == packets_written")
        outside = s["packets_received"] - s["packets_filtered_out"] - kept
        self.assertEqual(outside, lost)
        figures("disk full", faults=f"{kinds.count('E')} disk-full episodes "
                f"({s['writers'][0]['disk_errors']} failed writes)",
                should_keep=s["packets_received"], kept=kept,
                drops_capd=f"{lost} {json.dumps({k: v for k, v in s['drops'].items() if v})}",
                drops_outside=outside, files=f"{len(first)} before + {len(after)} after",
                exit=run.rc)

    def test_ring_of_files_keeps_the_disk_from_filling(self):
        """-C 2 -W 5 on the same 20 MB tmpfs: at most 5 files, the one being
        written included (10 MB), while far more than 20 MB goes through; no
        disk drops, no write error."""
        disk = self.mount_disk()
        run_s = 8
        stats_json = self.path("ring.json")
        run = self.capd(["-i", "null:256,rate=40k", "--duration", run_s, "-C", "2", "-W", "5",
                         "-w", os.path.join(disk, "r.pcap"), "--stats-json", stats_json]
                        + self.EXTRA, timeout=run_s + 120)
        self.assertCapdOk(run)
        s = capdtest.read_json(stats_json)
        files = final_files(disk)
        self.assertLessEqual(len(files), 5, files)
        self.assertEqual(hidden_files(disk), [])
        kept_now = self.count_whole(files)
        self.assertGreater(s["bytes_written"], self.__class__.SIZE,
                           "more than the disk holds went through the ring")
        self.assertEqual(s["drops"]["disk"], 0)
        self.assertFalse(any(l.startswith(WRITE_ERROR) for l in run.stderr_lines), run.stderr)
        lost = self.assertIdentity(s)
        self.assertGreater(s["files_written"], 5)
        figures("ring of files", faults=f"{s['bytes_written']} bytes into a 20 MB disk",
                should_keep=s["packets_received"], written=s["packets_written"],
                kept_on_disk=f"{kept_now} in {len(files)} files (the older ones rotated away)",
                drops_capd=f"{lost} after receipt, {s['drops']['nic_imissed']} nic_imissed",
                disk_drops=s["drops"]["disk"])


class DirectDiskFull(DiskFull):
    """The same with --direct on a 20 MB ext4 image: O_DIRECT writes through
    the staging buffer, packets counted as written only once the disk holds
    them, a failed write cutting the file back to the last whole write."""
    EXTRA = ["--direct"]

    def mount_disk(self):
        d = os.path.join(self.mount_ext4("disk", 24 * 1024 * 1024).path, "cap")
        os.mkdir(d)  # away from lost+found
        return d

    def test_quiet_link_reaches_the_disk(self):
        """At 2k packets/s (0.5 MB/s, far below the 8 MiB staging buffer)
        the hidden file grows on the disk while capd runs: whole blocks go
        out when the writer is idle."""
        disk = self.mount_disk()
        c = capdtest.RunningCapd(["-q", "--direct", "--ctl", "none", "-i", "null:256,rate=2k",
                                  "-w", os.path.join(disk, "q.pcap")])
        self.addCleanup(c.kill)

        sizes = []

        def on_disk():
            hidden = hidden_files(disk)
            if hidden:
                sizes.append(os.path.getsize(hidden[0]))
            return bool(hidden) and sizes[-1] >= 200000

        self.assertTrue(wait_until(lambda: hidden_files(disk) or not c.running(), 60, 0.05),
                        "capd never opened its file")
        # A full staging buffer goes out as 8 MiB at once: a size on the disk
        # between 200 kB and 8 MiB was put there by the idle writes. Their
        # contract has no deadline, so the wait is long (a loaded machine);
        # at 0.5 MB/s the buffer fills after 15 s, so a file still under
        # 8 MiB once past 200 kB tells the idle writes from a full buffer.
        self.assertTrue(wait_until(lambda: on_disk() or not c.running(), 120, 0.1) and
                        on_disk(), f"staged data never reached the disk: {hidden_files(disk)}")
        self.assertLess(sizes[-1], 8 << 20, f"only a full staging buffer was written: {sizes}")
        self.assertEqual(sizes[-1] % 4096, 0, "only whole blocks while running")
        c.signal(signal.SIGINT)
        run = c.wait(timeout=60)
        self.assertCapdOk(run, quiet=True)
        # 272-byte records: the file holds at least what was seen on disk.
        self.assertGreaterEqual(self.count_whole(final_files(disk)), 200000 // 272)

    def test_same_bytes_as_buffered(self):
        """--direct writes the very bytes of a buffered capture: a replayed
        file with -C 0.2 rotation, file by file, and a reused -W ring."""
        disk = self.mount_disk()
        src = os.path.join(capdtest.DATA_DIR, "demo", "web-mix.pcap")
        for extra in ([], ["--reuse-files"]):
            outs = []
            for direct in ([], ["--direct"]):
                d = os.path.join(disk, f"o{len(outs)}")
                os.mkdir(d)
                for _ in range(2 if extra else 1):
                    run = self.capd(["-q", "-i", f"pcap:{src}", "-C", "0.2", "-W", "4",
                                     "-w", os.path.join(d, "c.pcap")] + extra + direct)
                    self.assertCapdOk(run, quiet=True)
                outs.append(d)
            names = sorted(capdtest.listdir(outs[0]))
            self.assertEqual(names, sorted(capdtest.listdir(outs[1])))
            self.assertGreaterEqual(len(names), 2)
            for n in names:
                with open(os.path.join(outs[0], n), "rb") as a, \
                        open(os.path.join(outs[1], n), "rb") as b:
                    self.assertEqual(a.read(), b.read(), f"{n} {extra}")
            for d in outs:
                shutil.rmtree(d)


    def test_refused_by_the_file_system(self):
        """A ramfs refuses O_DIRECT: capd says so in one line and exits 1,
        and leaves the directory as it found it: no hidden file, and a
        --reuse-files ring's displaced file back under its own name."""
        d = self.mount_tmpfs("ram", 0, "ramfs").path
        ring = ["-C", "1", "-W", "2", "-w", os.path.join(d, "r.pcap")]
        self.assertCapdOk(self.capd(["-q", "-i", "null:64", "-c", "10"] + ring), quiet=True)
        self.assertEqual(capdtest.listdir(d), ["r.pcap0"])
        with open(os.path.join(d, "r.pcap0"), "rb") as f:
            before = f.read()
        for args in (["--reuse-files"] + ring, ["-w", os.path.join(d, "n.pcap")]):
            run = self.capd(["-q", "-i", "null:64", "-c", "10", "--direct"] + args)
            self.assertEqual(run.rc, 1, run.describe())
            self.assertEqual(len(run.stderr_lines), 1, run.describe())
            self.assertIn("does not take O_DIRECT (--direct)", run.stderr_lines[0])
            self.assertEqual(capdtest.listdir(d), ["r.pcap0"], args)
            with open(os.path.join(d, "r.pcap0"), "rb") as f:
                self.assertEqual(f.read(), before, args)


# ------------------------------------------------------------ write-behind

def resident_bytes(path):
    """Bytes of the file in the page cache (util-linux fincore)."""
    p = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                       capture_output=True, text=True, timeout=30)
    if p.returncode:
        raise AssertionError(f"fincore {path}: {p.stderr.strip()}")
    return int(p.stdout.split()[0])


class WriteBehind(ReliabilityCase):
    """Buffered writes to a disk keep at most --write-behind MiB (plus the
    8 MiB window being filled and the one being written back) of a file in
    the page cache; --write-behind 0 leaves every page to the kernel. The
    bytes written are the same either way."""

    def test_page_cache_stays_bounded(self):
        if not shutil.which("fincore"):
            self.skipTest("fincore (util-linux) not installed")
        disk = self.mount_ext4("disk", 320 * 1024 * 1024).path
        src = ["-q", "--ctl", "none", "-i", "null:1514,rate=150k", "-c", "120000"]
        res, digests = {}, {}
        for mb in (16, 0):
            out = os.path.join(disk, f"wb{mb}.pcap")
            run = self.capd(src + ["-w", out, "--write-behind", str(mb),
                                   "--stats-json", self.path(f"wb{mb}.json")])
            self.assertCapdOk(run, quiet=True)
            with open(self.path(f"wb{mb}.json")) as f:
                s = json.load(f)
            self.assertIdentity(s)
            size = os.path.getsize(out)
            self.assertGreater(size, 100 * 10**6, "a file far larger than the window")
            res[mb] = resident_bytes(out)  # before reading it back brings it in
            recs = self.assertWhole(out).records
            self.assertEqual(len(recs), s["packets_written"])
            h = hashlib.sha256()
            for r in recs:  # the null source's frames, without their times
                h.update(struct.pack("<II", r.caplen, r.wirelen) + r.data)
            digests[mb] = h.hexdigest()
            figures("write-behind", mib=mb, file_bytes=size, resident_bytes=res[mb],
                    written=s["packets_written"], drops=s["drops"]["total"])
            os.unlink(out)
        self.assertEqual(digests[16], digests[0])
        self.assertLessEqual(res[16], (16 + 2 * 8 + 1) << 20, res)
        # The control: without write-behind the kernel keeps the pages.
        self.assertGreater(res[0], 90 * 10**6, res)

    def test_ring_frees_what_it_deletes(self):
        """A -C 20 -W 3 ring at 230 MB/s on a 320 MB disk: while capd runs,
        the disk holds little more than the ring's files, though
        write-behind held descriptors of the files -W deleted (a leak would
        keep their blocks and fill the disk within 2 s)."""
        disk = self.mount_ext4("disk", 320 * 1024 * 1024).path
        d = os.path.join(disk, "ring")
        os.mkdir(d)
        base = shutil.disk_usage(disk).used
        c = capdtest.RunningCapd(["-q", "--ctl", "none", "-i", "null:1514,rate=150k",
                                  "-C", "20", "-W", "3", "--write-behind", "16",
                                  "-w", os.path.join(d, "r.pcap")])
        self.addCleanup(c.kill)

        def sizes():
            n = 0
            for f in capdtest.listdir(d):
                try:
                    n += os.path.getsize(os.path.join(d, f))
                except FileNotFoundError:
                    pass
            return n

        # Until -W has deleted several files (7 x 20 MB, far more than the
        # 24 MB allowed below): each new file of the ring is written under
        # the next hidden name, and the names take turns.
        opened = []

        def wrapped():
            h = hidden_files(d)
            if h and (not opened or opened[-1] != h[0]):
                opened.append(h[0])
            return len(opened) >= 10 or not c.running()

        self.assertTrue(wait_until(wrapped, 120, 0.02), f"the ring never wrapped: {opened}")
        seen = []

        def bounded():
            kept, used = sizes(), shutil.disk_usage(disk).used - base
            seen.append((kept, used))
            return used < kept + 24 * 10**6

        # Write-behind closes the deleted files on its own time, later on a
        # loaded machine; a leak never frees them (a full disk in the end).
        ok = wait_until(lambda: bounded() or not c.running(), 60, 0.05) and c.running()
        c.signal(signal.SIGINT)
        run = c.wait(timeout=60)
        figures("write-behind ring", kept_and_used_bytes=seen[-1])
        self.assertTrue(ok, f"blocks of deleted files still held: (kept, used) {seen[-3:]}")
        self.assertCapdOk(run, quiet=True)
        self.assertEqual(sorted(capdtest.listdir(d)), ["r.pcap0", "r.pcap1", "r.pcap2"])


class Preallocate(ReliabilityCase):
    """--preallocate claims the -C x -W ring on the file system at start."""

    def test_ring_claimed_before_capture(self):
        disk = self.mount_tmpfs("disk", "20m").path
        base = shutil.disk_usage(disk).used
        cap = LiveCapd(self, ["-q", "-i", "null:64,rate=1000", "--preallocate", "-C", "5",
                              "-W", "3", "-w", os.path.join(disk, "p.pcap")])
        used = shutil.disk_usage(disk).used - base
        figures("preallocate", used_bytes=used, files=len(hidden_files(disk)))
        self.assertGreaterEqual(used, 15 * 10**6, "the ring's 3 x 5 MB are held")
        self.assertEqual(len(hidden_files(disk)), 3, "the file being written and two spares")
        run = cap.stop()
        self.assertCapdOk(run, quiet=True)
        self.assertEqual(hidden_files(disk), [], "unused spares are deleted")
        self.assertEqual([os.path.basename(p) for p in final_files(disk)], ["p.pcap0"])
        self.assertEqual(self.count_whole(final_files(disk)), cap.read_summary()["packets_written"])
        self.assertLess(shutil.disk_usage(disk).used - base, 10**6)

    def test_no_room_for_the_ring(self):
        """A ring larger than the file system is refused at start: one line,
        exit 1, no file left."""
        disk = self.mount_tmpfs("disk", "10m").path
        run = self.capd(["-i", "null:64", "-c", "100", "--ctl", "none", "--preallocate",
                         "-C", "5", "-W", "3", "-w", os.path.join(disk, "p.pcap")])
        self.assertEqual(run.rc, 1, run.describe())
        lines = [l for l in run.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("cannot claim the ring's 15 MB", lines[0])
        self.assertEqual(capdtest.listdir(disk), [])


# ------------------------------------------------------------------- kill -9

class Kill9(ReliabilityCase):
    ROUNDS = 3

    def kill_round(self, out, files_before_kill):
        live = LiveCapd(self, ["-i", "null:256,rate=40k", "-C", "1",
                               "-w", os.path.join(out, "k.pcap")], name=os.path.basename(out))
        self.assertTrue(wait_until(lambda: len(final_files(out)) >= files_before_kill, 90, 0.1),
                        f"{files_before_kill} files rotated")
        before = live.stats()
        live.cap.proc.send_signal(signal.SIGKILL)
        live.cap.proc.wait(timeout=30)

        finals = final_files(out)
        hidden = hidden_files(out)
        kept = 0
        for f in finals:
            cap = self.assertWhole(f)
            kept += len(cap.records)
            n, err = capdtest.tcpdump_count(f)
            self.assertIsNone(err, err)
            self.assertEqual(n, len(cap.records), f)
            if capdtest.have("tshark"):
                rows, err = capdtest.tshark_fields(f, ["frame.number"])
                self.assertIsNone(err, err)
                self.assertEqual(len(rows), len(cap.records), f)
        # The file being written keeps its hidden name: nothing renames it.
        self.assertLessEqual(len(hidden), 1, hidden)
        partial = 0
        state = "no hidden file"
        for h in hidden:
            self.assertTrue(os.path.basename(h).endswith(".partial"), h)
            self.assertEqual(stat.S_IMODE(os.stat(h).st_mode), 0o640)
            if os.path.getsize(h) < 24:
                state = f"hidden, {os.path.getsize(h)} bytes (header not yet written)"
                continue
            cap = pcaplib.read_capture(h, lenient=True)
            partial = len(cap.records)
            state = f"hidden, {partial} whole records"
            if cap.error is not None:
                # Only the tail may be cut: every byte before it parsed.
                self.assertIn("cut short", str(cap.error), h)
                end = (cap.records[-1].offset + 16 + cap.records[-1].caplen
                       if cap.records else 24)
                self.assertEqual(cap.error.offset, end, h)
                state += f" then {cap.size - end} bytes of a cut record"
        kept += partial
        reported = before["packets_written"]
        self.assertGreaterEqual(kept, reported,
                                "every packet capd reported written before the kill is kept")
        encoded = sum(w["encoded"] for w in before["workers"])
        return {"final_files": len(finals), "partial": state, "written_before_kill": reported,
                "encoded_before_kill": encoded, "kept": kept}

    def test_kill9_with_rotation(self):
        """kill -9 while writing with -C 1, three times: every final file
        opens in pcaplib, tcpdump and tshark; the file being written stays
        hidden as .NAME.partial, whole records up to at most a cut last one;
        nothing capd had reported written is missing. What is lost is what
        had not reached write(): the worker's open chunk (at most one chunk
        or --flush-ms of traffic) and chunks still in the ring."""
        rounds = []
        for i in range(self.ROUNDS):
            out = self.path(f"kill{i}")
            os.mkdir(out)
            with self.subTest(round=i):
                rounds.append(self.kill_round(out, 2 + i))
        for i, r in enumerate(rounds):
            figures(f"kill -9 round {i}", faults="1 SIGKILL with -C 1", **r,
                    encoded_not_kept=r["encoded_before_kill"] - r["kept"])


# ------------------------------------------------------------------ slow disk

class SlowDisk(ReliabilityCase):
    def test_slow_then_recovered(self):
        """A writer slowed to one burst per 2 s for its first 6 s: workers keep
        receiving, ring_full drops appear, and once the delay ends the
        ring_full counter stops growing while packets are written again."""
        out = self.path("out")
        os.mkdir(out)
        delay_for = 6
        live = LiveCapd(self, ["-i", "null:64,rate=100k", "-s", "1600", "--chunk-kb", "256",
                               "--ring-chunks", "32", "--test-writer-delay-us", "2000000",
                               "--test-writer-delay-for", delay_for,
                               "-w", os.path.join(out, "s.pcap")])
        samples = []  # (t, rx, ring_full, written)

        def sample():
            s = live.stats()
            samples.append((time.monotonic(), s["packets_received"], s["drops"]["ring_full"],
                            s["packets_written"]))
            return s

        # Slow phase: ring_full grows while rx keeps counting.
        self.assertTrue(wait_until(lambda: sample()["drops"]["ring_full"] > 0, 60, 0.25),
                        "the rings fill while the disk is slow")
        # Recovery: wait (bounded) for a 3 s stretch in which ring_full does
        # not move while rx and written both keep growing.
        stable_from = None
        deadline = time.monotonic() + 90
        for _ in range(1000):
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
            sample()
            t, rx, rf, wr = samples[-1]
            if stable_from is None or samples[stable_from][2] != rf:
                stable_from = len(samples) - 1
            elif t - samples[stable_from][0] >= 3:
                break
        self.assertTrue(live.cap.running())
        run = live.stop()
        s = live.read_summary()

        # Workers never wait for the writer: while it sleeps 2 s per burst,
        # rx still grows over every second of samples.
        for i, (t, rx, _, _) in enumerate(samples):
            later = next((x for x in samples[i + 1:] if x[0] - t >= 1.0), None)
            if later is not None:
                self.assertGreater(later[1], rx, f"rx stalled after {t - samples[0][0]:.1f} s: "
                                   f"{[x[1] for x in samples]}")
        t0, rx0, rf0, wr0 = samples[stable_from]
        t1, rx1, rf1, wr1 = samples[-1]
        self.assertGreaterEqual(t1 - t0, 3, f"ring_full never stopped growing: "
                                f"{[x[2] for x in samples]}")
        self.assertEqual(rf1, rf0)
        self.assertGreater(rx1, rx0)
        self.assertGreater(wr1, wr0, "packets are written again")
        self.assertGreater(rf0, 0)
        self.assertEqual(s["drops"]["disk"], 0)
        lost = self.assertIdentity(s)
        self.assertEqual(run.rc, 0, run.describe())
        kept = self.count_whole(final_files(out))
        self.assertEqual(kept, s["packets_written"])
        outside = s["packets_received"] - s["packets_filtered_out"] - kept
        self.assertEqual(outside, lost)
        figures("slow disk", faults=f"writer delayed 2 s per burst for its first {delay_for} s",
                samples=len(samples), should_keep=s["packets_received"], kept=kept,
                ring_full=s["drops"]["ring_full"], ring_full_stable_for=f"{t1 - t0:.1f} s",
                drops_capd=lost, drops_outside=outside,
                other_drops=json.dumps({k: v for k, v in s["drops"].items()
                                        if v and k not in ("ring_full", "total")}))


# ------------------------------------------------------------ hostile packets

SMAC, DMAC = pcaplib.mac(pcaplib.SRC_MAC), pcaplib.mac(pcaplib.DST_MAC)


def _eth(ethertype, payload):
    return DMAC + SMAC + struct.pack("!H", ethertype) + payload


def _ipv6(nh, payload, plen=None, src="2001:db8::1", dst="2001:db8::2"):
    import ipaddress
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload) if plen is None else plen, nh, 64,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def _tcp_hdr(doff=5, flags=0x18, sport=40000, dport=80):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, (doff & 15) << 4, flags, 65535, 0, 0)


HTTP = b"GET /index.html HTTP/1.1\r\nHost: abc123.example\r\n\r\n"


def hostile_packets(seed=6):
    """Frames no sane network sends, as (label, bytes, wirelen or None)."""
    rnd = random.Random(seed)
    out = []
    good = pcaplib.eth_ipv4_tcp(HTTP, src="198.18.0.1", dst="198.19.0.2")
    # 0-13 bytes: shorter than an Ethernet header; some claim a longer wire.
    for n in range(14):
        out.append((f"tiny{n}", good[:n], None))
        out.append((f"tiny{n}-wire1514", bytes(rnd.randrange(256) for _ in range(n)), 1514))
    # Jumbos and frames larger than an mbuf's data room (2048 bytes), and
    # than the 16 KiB the filters see whole.
    for size in (2049, 9000, 9018, 16384, 16385, 20000, 65535, 100000, 262144):
        body = (HTTP + bytes(rnd.randrange(256) for _ in range(64))) * (size // 100 + 1)
        f = pcaplib.eth_ipv4_tcp(body[:max(0, min(size, 65535) - 54)], src="198.18.0.1",
                                 dst="198.19.0.2")
        f = (f + body)[:size]
        out.append((f"jumbo{size}", f, None))
        out.append((f"jumbo{size}-snapcut", f[:9000], size + 10))
    # Random bytes, some behind a plausible Ethernet type.
    for i in range(300):
        n = rnd.choice([rnd.randrange(0, 64), rnd.randrange(64, 1600), rnd.randrange(1600, 9100)])
        b = bytes(rnd.randrange(256) for _ in range(n))
        if i % 3 and n >= 14:
            et = rnd.choice([0x0800, 0x86DD, 0x8100, 0x88A8, 0x0806, 0x8847])
            b = b[:12] + struct.pack("!H", et) + b[14:]
        out.append((f"random{i}", b, None))
    # Wrong length fields in IPv4, TCP, UDP, IPv6 and VLAN headers.
    ip_at = 14
    for ihl in range(16):
        f = bytearray(good)
        f[ip_at] = 0x40 | ihl
        out.append((f"ihl{ihl}", bytes(f), None))
    for tot in (0, 1, 19, 20, 40, len(good) - 15, len(good) - 13, 65535):
        f = bytearray(good)
        f[ip_at + 2:ip_at + 4] = struct.pack("!H", tot)
        out.append((f"totlen{tot}", bytes(f), None))
    for doff in range(16):
        f = bytearray(good)
        f[34 + 12] = doff << 4
        out.append((f"doff{doff}", bytes(f), None))
        out.append((f"doff{doff}-cut", bytes(f[:40]), len(f)))
    udp = pcaplib.eth_ipv4_udp(b"\x12\x34\x01\x00" + b"\x00" * 20, dport=53)
    for ulen in (0, 7, 8, 9, 65535):
        f = bytearray(udp)
        f[34 + 4:34 + 6] = struct.pack("!H", ulen)
        out.append((f"udplen{ulen}", bytes(f), None))
    for plen in (0, 1, 20, 65535):
        out.append((f"v6plen{plen}", _eth(0x86DD, _ipv6(6, _tcp_hdr() + HTTP, plen)), None))
    # IPv6 extension headers whose lengths run past the frame.
    for hlen in (0, 1, 8, 255):
        ext = struct.pack("!BB", 6, hlen) + b"\x00" * 6
        out.append((f"v6ext{hlen}", _eth(0x86DD, _ipv6(0, ext + _tcp_hdr() + HTTP)), None))
        out.append((f"v6ext{hlen}-cut", _eth(0x86DD, _ipv6(0, ext[:4])), 200))
    # VLAN tags: stacked deeper than the filters look, then cut.
    inner = good[12:]
    for depth in (1, 2, 8, 40):
        tags = b"".join(struct.pack("!HH", 0x8100, 100 + i) for i in range(depth))
        f = DMAC + SMAC + tags + inner
        out.append((f"vlan{depth}", f, None))
        out.append((f"vlan{depth}-cut", f[:12 + 4 * depth + 1], len(f)))
    return out


def hostile_capture(path):
    pkts = [Packet(T0 + i * 1000, b, wl) for i, (_, b, wl) in enumerate(hostile_packets())]
    pcaplib.write_pcap(path, pkts, nano=True)
    return pkts


def hostile_raw_ip(path):
    """The hostile frames that carry IPv4 or IPv6 right after an untagged
    Ethernet header, without it, as LINKTYPE_RAW (101): the filters and
    patterns then start at a damaged IP header."""
    pkts = []
    for _, b, wl in hostile_packets(seed=7):
        if len(b) >= 15 and b[12:14] in (b"\x08\x00", b"\x86\xdd"):
            pkts.append(Packet(T0 + len(pkts) * 1000, b[14:], None if wl is None else wl - 14))
    pcaplib.write_pcap(path, pkts, nano=True, linktype=101)
    return pkts


def merge_corpus(tmp):
    """Every record of every tcpdump-tests capture, as libpcap reads them,
    merged into one nanosecond pcap file per link type. Returns
    {linktype: (path, records, captures)}."""
    groups = {}
    for p in capdtest.corpus_files():
        cap = pcaplib.read_capture(p, lenient=True)
        recs = pcaplib.as_libpcap_reads(cap)
        for r in recs:
            lt = cap.interfaces[r.ifid].linktype if cap.interfaces else cap.linktype
            groups.setdefault(lt, ([], set()))
            groups[lt][0].append(Packet(T0 + len(groups[lt][0]) * 1000, r.data, r.wirelen))
            groups[lt][1].add(p)
    out = {}
    for lt, (pkts, caps) in sorted(groups.items()):
        path = os.path.join(tmp, f"corpus-lt{lt}.pcap")
        pcaplib.write_pcap(path, pkts, nano=True, linktype=lt)
        out[lt] = (path, pkts, caps)
    return out


# Rule sets run over the Ethernet inputs. Expressions read at computed and
# far offsets; patterns are literals and regexes, on payloads and frames.
RULE_SETS = [
    ("none", []),
    ("http-get", ["tcp[(tcp[12]>>2):4] = 0x47455420 or udp port 53 or (ip6 and tcp)"]),
    ("flags-len", ["tcp[tcpflags] & (tcp-syn|tcp-ack) != 0 and greater 1000"]),
    ("far-offsets", ["ip[0] & 0xf != 5 or ip[2:2] > 1500 or ether[9000:2] = 0x4745 "
                     "or ip6[40:4] = 0x47455420"]),
    ("beyond-16k", ["ether[20000:4] != 0 or ether[131000:2] = 0"]),
    ("vlan-stack", ["vlan and vlan and (tcp or udp port 53)"]),
    ("interpreter", ["--no-jit", "tcp[(tcp[12]>>2):4] = 0x47455420 or ip[6:2] & 0x1fff != 0"]),
    ("patterns", ["--pattern", "GET ", "--pattern", "/HTTP\\/1\\.[01]/",
                  "--pattern", "/[a-z]{3}\\d{3}/i"]),
    ("frame-patterns", ["--scan", "frame", "--pattern", "/\\x00\\x00\\x00\\x00/s",
                        "--pattern", "abc", "--pattern", "/^.{12}\\x81\\x00/s"]),
    ("expr-patterns", ["--pattern", "GET ", "--pattern", "/^.{0,8}\\xff/s", "tcp or udp"]),
]


def tcpdump_selects(path, expr):
    p = subprocess.run(["tcpdump", "-n", "--count", "-r", path, expr], capture_output=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    out = p.stdout.decode("utf-8", "replace").split()
    if p.returncode != 0 or len(out) < 2 or not out[0].isdigit():
        raise AssertionError(f"tcpdump -r {path} {expr!r}: {p.stderr.decode(errors='replace')}")
    return int(out[0])


class HostilePackets(CapdTestCase):
    """Generated garbage and every packet of the tcpdump-tests corpus go
    through capd with filters and patterns on. No crash, exit 0, whole output
    files, records written == packets accepted, and for expressions alone the
    packets tcpdump selects from the same input. The pcap: source chains
    mbufs for frames longer than an mbuf's 2048-byte data room; the run
    without a filter checks every such frame comes out byte for byte."""

    def run_set(self, label, inputs, extra):
        out = self.path(f"out-{label}.pcapng")
        js = self.path(f"out-{label}.json")
        args = ["-q", "--format", "pcapng", "-w", out, "--stats-json", js]
        for i in inputs:
            args += ["-i", f"pcap:{i}"]
        run = self.capd(args + extra)
        self.assertCapdOk(run, quiet=True)
        s = capdtest.read_json(js)
        cap = self.assertWhole(out)
        accepted = s["packets_received"] - s["packets_filtered_out"]
        self.assertEqual(s["drops"]["total"], 0, s["drops"])
        self.assertEqual(s["packets_written"], accepted, "records written == accepted")
        self.assertEqual(len(cap.records), s["packets_written"])
        return s, cap

    def test_hostile_and_corpus(self):
        hostile = self.path("hostile.pcap")
        hpkts = hostile_capture(hostile)
        groups = merge_corpus(self.tmp)
        corpus_pkts = sum(len(g[1]) for g in groups.values())
        captures = sum(len(g[2]) for g in groups.values())
        # Raw IP joins the corpus's raw IP packets, or is a link type alone.
        raw = self.path("hostile-raw.pcap")
        raw_pkts = hostile_raw_ip(raw)
        lt_extra = [(raw, raw_pkts)] if 101 in groups else []
        groups.setdefault(101, (raw, raw_pkts, set()))
        eth = [hostile] + ([groups[1][0]] if 1 in groups else [])
        n_eth = len(hpkts) + (len(groups[1][1]) if 1 in groups else 0)
        written = {}
        for label, extra in RULE_SETS:
            with self.subTest(rules=label):
                s, cap = self.run_set(label, eth, extra)
                self.assertEqual(s["packets_received"], n_eth)
                written[label] = s["packets_written"]
                expr = [a for a in extra if a != "--no-jit"]
                if len(expr) == 1 and capdtest.have("tcpdump"):
                    # Expressions alone: the same packets as tcpdump selects.
                    for ifid, src in enumerate(eth):
                        mine = sum(1 for r in cap.records if r.ifid == ifid)
                        self.assertEqual(mine, tcpdump_selects(src, expr[0]),
                                         f"{expr[0]!r} on {os.path.basename(src)}")
                if label == "none":
                    got = [(r.data, r.wirelen) for r in cap.records if r.ifid == 0]
                    want = [(p.data, len(p.data) if p.wirelen is None else p.wirelen)
                            for p in hpkts]
                    self.assertEqual(len(got), len(want))
                    bad = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), None)
                    self.assertIsNone(bad, f"hostile frame #{bad} "
                                      f"({hostile_packets()[bad or 0][0]}) not copied byte for "
                                      "byte (jumbos arrive in chained mbufs)")
                    self.assertEqual(s["packets_written"], n_eth)
        # Every other link type of the corpus, through one capd, no filter
        # (a filter needs one link type), then each with a frame pattern.
        others = [g[0] for lt, g in groups.items() if lt != 1]
        n_other = sum(len(g[1]) for lt, g in groups.items() if lt != 1)
        others += [p for p, _ in lt_extra]
        n_other += sum(len(x) for _, x in lt_extra)
        with self.subTest(rules="other link types"):
            s, _ = self.run_set("others", others, [])
            self.assertEqual(s["packets_written"], n_other)
        for lt, g in groups.items():
            if lt == 1:
                continue
            inputs = [g[0]] + [p for p, _ in lt_extra if lt == 101]
            with self.subTest(rules=f"link type {lt}: payload patterns refused"):
                # Payload patterns parse Ethernet; elsewhere they are refused.
                run = self.capd(["-i", f"pcap:{g[0]}", "-w", self.path(f"never-{lt}.pcap"),
                                 "--pattern", "GET "])
                self.assertEqual(run.rc, 1, run.describe())
                self.assertEqual(len(run.stderr_lines), 1, run.describe())
                self.assertIn("--scan frame", run.stderr, run.describe())
                self.assertFalse(os.path.exists(self.path(f"never-{lt}.pcap")))
            for n, extra in enumerate([["--pattern", "/[a-z]{4}/i", "--scan", "frame"],
                                       ["--scan", "frame", "--pattern", "GET ", "ip or ip6"],
                                       ["ip[0] & 0xf != 5 or tcp[(tcp[12]>>2):4] = 0x47455420"]]):
                with self.subTest(rules=f"link type {lt}: {' '.join(extra)}"):
                    s, cap = self.run_set(f"others-{lt}-{n}", inputs, extra)
                    written[f"lt{lt}/{n}"] = s["packets_written"]
                    if len(extra) == 1 and capdtest.have("tcpdump"):
                        for ifid, src in enumerate(inputs):
                            mine = sum(1 for r in cap.records if r.ifid == ifid)
                            self.assertEqual(mine, tcpdump_selects(src, extra[0]), src)
        figures("hostile packets", generated=f"{len(hpkts)} Ethernet + {len(raw_pkts)} raw IP",
                corpus=f"{captures} captures, {corpus_pkts} packets",
                link_types=sorted(groups),
                rule_sets=len(RULE_SETS), written_per_set=json.dumps(written),
                crashes=0, drops=0)


# ------------------------------------------------------------------ file mode

class FileModeRotation(ReliabilityCase):
    def test_modes_with_rotation_and_umask(self):
        """Every rotated file gets 0640, or --file-mode, whatever capd's
        umask (077 here)."""
        src = self.path("in.pcap")
        pkts = [Packet(T0 + i * 1000, pcaplib.eth_ipv4_udp(bytes(200), ident=i))
                for i in range(3000)]
        pcaplib.write_pcap(src, pkts, nano=True)
        old = os.umask(0o077)
        try:
            for mode in (None, "0604", "0600", "0664"):
                with self.subTest(mode=mode):
                    out = self.path(f"m{mode}")
                    os.mkdir(out)
                    args = ["-q", "--nano", "-i", f"pcap:{src}", "-C", "0.2",
                            "-w", os.path.join(out, "m.pcap")]
                    if mode:
                        args += ["--file-mode", mode]
                    self.assertCapdOk(self.capd(args), quiet=True)
                    files = final_files(out)
                    self.assertGreaterEqual(len(files), 3)
                    want = int(mode or "0640", 8)
                    self.assertEqual({f: stat.S_IMODE(os.stat(f).st_mode) for f in files},
                                     {f: want for f in files})
                    self.assertEqual(self.count_whole(files), len(pkts))
        finally:
            os.umask(old)


if __name__ == "__main__":
    capdtest.main()
