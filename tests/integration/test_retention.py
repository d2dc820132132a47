#!/usr/bin/env python3
"""Retention (--retain-free, --retain-age) and clock-aligned -G (--align).

The free-space cases mount their own small tmpfs inside the test's
temporary directory and unmount it afterwards, so they need root (skipped
otherwise). Traffic comes from pcap: files the tests generate, looped, with
the writer slowed down (--test-writer-delay-us) so that a few MB/s reach the
file system; the idle source is a null source paced at one frame a second.

What must hold, never how fast: the file system never fills (no disk drop)
while the capture writes more than it holds; free space is never below the
floor by more than what the writer can write between two retention checks
(one dequeue burst of 4 chunks of 64 KiB here, and the indexes written
meanwhile), counting as free, as capd does, the files it has deleted and
not closed yet; only the capture's own names
are deleted, oldest first, each once, with its index; files an earlier run
left under the same names count; aligned -G files start at whole multiples
of G, one per period, idle or not.
"""

import glob
import json
import os
import re
import signal
import subprocess
import time

import capdtest
import gencaps
from capdtest import CapdTestCase

CAPCTL = os.path.join(capdtest.BUILD_DIR, "ctl", "capctl")
DELETED = re.compile(r"^capd: (.*): deleted \((\d+) bytes\) by --retain-(free|age)")


def deleted_lines(stderr):
    return [(m.group(1), int(m.group(2))) for m in map(DELETED.match, stderr.splitlines()) if m]


class Tmpfs:
    """A tmpfs of `size` mounted on `path` by this test."""

    def __init__(self, path, size):
        self.path = path
        os.makedirs(path, exist_ok=True)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                            "linecap-retain", path], capture_output=True, timeout=30)
        self.error = p.stderr.decode("utf-8", "replace").strip() if p.returncode else None

    def umount(self):
        if self.error is None:
            subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=30)
            self.error = "unmounted"


def small_fs(test, why_root):
    """A 16 MiB tmpfs for `test`, unmounted at its end; the test is skipped
    when not root (`why_root`: what needs it) or when the mount fails."""
    if os.geteuid() != 0:
        test.skipTest(why_root)
    fs = Tmpfs(test.path("fs"), "16m")
    test.addCleanup(fs.umount)
    if fs.error:
        test.skipTest(f"cannot mount a tmpfs: {fs.error}")
    return fs


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def held_deleted(pid, path):
    """Bytes of the files on path's file system that process `pid` has
    deleted and still holds open: capd's disposer thread closes them (which
    frees their blocks) when it gets a CPU, and retention counts them as
    free from the deletion on (DESIGN.md, "Retention")."""
    dev = os.stat(path).st_dev
    held = 0
    fds = f"/proc/{pid}/fd"
    try:
        entries = os.listdir(fds)
    except OSError:
        return 0
    for fd in entries:
        try:
            if not os.readlink(os.path.join(fds, fd)).endswith(" (deleted)"):
                continue
            st = os.stat(os.path.join(fds, fd))
        except OSError:
            continue  # closed meanwhile: its blocks are free
        if st.st_dev == dev:
            held += st.st_blocks * 512
    return held


# Slow writer: at most 4 chunks of 64 KiB per burst, 0.1 s after each.
SLOW = ["--chunk-kb", "64", "--ring-chunks", "4", "--test-writer-delay-us", "100000",
        "-s", "1600"]
BURST_BYTES = 4 * 64 * 1024
# What a writer may add between two of its checks (about 100 ms apart): one
# burst of chunks, the index of a file it closed meanwhile (-G 1 closes one a
# second), and a live index being replaced, its old and new copies side by
# side until the rename. Each index is at most 61 KB here.
INDEX_MOST = 64 * 1024
SLACK_BYTES = BURST_BYTES + 3 * INDEX_MOST


class FreeSpace(CapdTestCase):
    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("mounting a tmpfs needs root")
        self.fs = Tmpfs(self.path("fs"), "12m")
        self.addCleanup(self.fs.umount)
        if self.fs.error:
            self.skipTest(f"cannot mount a tmpfs: {self.fs.error}")
        self.out = self.fs.path

    def test_floor_kept_while_filling(self):
        self.check_floor(["-G", "1"], "r-%Y%m%d-%H%M%S.pcap", "r-19700101-000002.pcap")

    def test_floor_kept_with_C_and_W(self):
        """The same with -C 1 -W 50 (a ring the file system cannot hold):
        retention, not -W, keeps the floor."""
        self.check_floor(["-C", "1", "-W", "50"], "r.pcap", "r.pcap99")

    def check_floor(self, rotation, pattern, linked_name):
        """A capture rotating with `rotation` writes about twice what a 12 MB tmpfs holds with a
        50% floor: the file system never fills, the free space stays at the
        floor (less at most SLACK_BYTES), the oldest files go first,
        each logged once and counted with its index, and a planted file, a
        file of another capture and a file of this name with a second link
        survive."""
        pkts, _ = gencaps.mixed(2000, seed=31)
        src = gencaps.write(self.path("gen.pcap"), pkts)
        planted = os.path.join(self.out, "planted.txt")
        with open(planted, "w") as f:
            f.write("not a capture\n")
        other = os.path.join(self.out, "other-19700101-000001.pcap")
        with open(other, "wb") as f:
            f.write(open(src, "rb").read()[:65536])
        # A name of this capture's pattern, hard-linked elsewhere: never deleted.
        linked = os.path.join(self.out, linked_name)
        with open(linked, "wb") as f:
            f.write(open(src, "rb").read()[:4096])
        os.link(linked, os.path.join(self.out, "keep-link"))
        os.utime(linked, (1, 1))
        stats = self.path("stats.json")
        floor = 6 * 1024 * 1024  # 50% of 12 MiB
        cap = capdtest.start_capd(
            ["--nano", "-i", f"pcap:{src},loop", "--retain-free", "50%",
             "-w", os.path.join(self.out, pattern), "--stats-json", stats,
             "--ctl", "none"] + rotation + SLOW)
        lowest = free_bytes(self.out)
        try:
            # Until the capture has written twice the file system (bounded).
            def written_enough():
                nonlocal lowest
                # Held first: a close between the two readings then counts
                # twice (never missed).
                held = held_deleted(cap.pid, self.out)
                lowest = min(lowest, free_bytes(self.out) + held)
                gone = deleted_lines(cap.stderr_now())
                return not cap.running() or sum(b for _, b in gone) > 12 * 1024 * 1024
            self.assertTrue(capdtest.wait_until(written_enough, 120, 0.02),
                            cap.stderr_now())
            self.assertTrue(cap.running(), cap.stderr_now())
        finally:
            cap.signal(signal.SIGINT)
        run = cap.wait()
        self.assertCapdOk(run)
        s = capdtest.read_json(stats)
        w = s["writers"][0]
        # The writer is slow on purpose: workers drop at full rings; the
        # disk never lost a packet.
        self.assertEqual(s["drops"]["disk"], 0, run.describe())
        self.assertGreaterEqual(lowest, floor - SLACK_BYTES,
                                f"free space (with deleted files not closed yet) fell to {lowest} "
                                f"under the floor {floor}")
        self.assertGreaterEqual(free_bytes(self.out), floor - SLACK_BYTES)
        gone = deleted_lines(run.stderr)
        names = [os.path.basename(n) for n, _ in gone]
        self.assertEqual(len(names), len(set(names)), "a deletion logged twice")
        self.assertEqual(w["files_retired"], len(gone))
        self.assertEqual(w["bytes_retired"], sum(b for _, b in gone))
        self.assertGreater(w["bytes_retired"], 12 * 1024 * 1024)
        # Survivors: not this capture's, or not its to delete.
        for p in (planted, other, linked):
            self.assertTrue(os.path.exists(p), f"{p} was deleted")
        # Oldest first: every file kept is newer than every file deleted.
        kept = sorted(n for n in capdtest.listdir(self.out)
                      if n.startswith("r") and n != os.path.basename(linked))
        self.assertTrue(kept)
        self.assertLess(max(names), min(kept), f"deleted {names}, kept {kept}")
        for n in names:
            self.assertFalse(os.path.exists(os.path.join(self.out, "." + n + ".idx")),
                             f"the index of {n} is left")
        for n in kept:
            self.assertTrue(os.path.exists(os.path.join(self.out, "." + n + ".idx")))
        self.assertNoHidden(self.out)
        # The oldest packet kept is the first of the oldest file kept.
        first = min(r.ts_ns for r in self.assertWhole(os.path.join(self.out, kept[0])).records)
        self.assertEqual(w["oldest_kept_ns"], first)
        self.assertIn("capd: retention: %d files" % len(gone), run.stderr)

    def test_disk_full_path_counts_when_retention_cannot_free(self):
        """With -G long and no -C, the file being written fills the file
        system faster than retention, which deletes only closed files, can
        free it: the loss is the disk-full path's, counted as disk drops;
        that path closes the file, retention then deletes it as the oldest
        (logged and counted) and capture writes again."""
        pkts, _ = gencaps.mixed(2000, seed=32)
        src = gencaps.write(self.path("gen.pcap"), pkts)
        stats = self.path("stats.json")
        cap = capdtest.start_capd(
            ["--nano", "-i", f"pcap:{src},loop", "-G", "3600", "--retain-free", "1M",
             "-w", os.path.join(self.out, "big-%s.pcap"), "--stats-json", stats,
             "--ctl", "none", "--chunk-kb", "64", "--ring-chunks", "4", "--test-writer-delay-us",
             "5000", "-s", "1600"])
        try:
            def full_then_freed():
                err = cap.stderr_now()
                return not cap.running() or (
                    "No space left on device" in err and deleted_lines(err) and
                    "writing again" in err.split("by --retain-free")[-1])
            self.assertTrue(capdtest.wait_until(full_then_freed, 120, 0.05), cap.stderr_now())
        finally:
            cap.signal(signal.SIGINT)
        run = cap.wait()
        self.assertEqual(run.rc, 1, "exit 1: packets were lost to the disk\n" + run.describe())
        s = capdtest.read_json(stats)
        w = s["writers"][0]
        self.assertGreater(s["drops"]["disk"], 0, run.describe())
        self.assertEqual(w["disk_drops"], s["drops"]["disk"])
        gone = deleted_lines(run.stderr)
        self.assertGreaterEqual(w["files_retired"], 1)
        self.assertEqual(w["files_retired"], len(gone))
        self.assertEqual(w["bytes_retired"], sum(b for _, b in gone))
        for n in capdtest.listdir(self.out):
            self.assertWhole(os.path.join(self.out, n))
        self.assertNoHidden(self.out)


class WritersShareTheFloor(CapdTestCase):
    """--writers 2: one free-space floor for the capture. Six 2 MiB files an
    earlier run left, alternating between the two writers' names and aged
    one after the other, fill 12 of a 16 MiB tmpfs; a floor of 9 MB needs
    exactly the three oldest gone (two leave 8 MiB free, three 10 MiB, and
    the capture adds well under 1 MiB). Each writer keeping the floor alone
    deletes its own oldest files, out of order, and together more."""

    def test_oldest_across_writers_first_and_no_more(self):
        fs = small_fs(self, "mounting a tmpfs needs root")
        planted = []
        now = time.time()
        for i in range(6):
            name = os.path.join(fs.path, f"a_w{i % 2}.pcap{i // 2 + 1}")
            with open(name, "wb") as f:
                f.write(b"\1" * (2 << 20))
            os.utime(name, (now - 600 + 10 * i, now - 600 + 10 * i))
            planted.append(name)
        stats = self.path("stats.json")
        run = self.capd(["-q", "-i", "null:64,rate=1000", "--workers", "2", "--writers", "2",
                         "--duration", "3", "-C", "1", "--retain-free", "9M", "--ctl", "none",
                         "--stats-json", stats, "-w", os.path.join(fs.path, "a.pcap")])
        self.assertEqual(run.rc, 0, run.describe())
        gone = [n for n, _ in deleted_lines(run.stderr)]
        self.assertEqual(gone, planted[:3], run.stderr)
        for n in planted[:3]:
            self.assertFalse(os.path.exists(n), n)
        for n in planted[3:]:
            self.assertTrue(os.path.exists(n), n)
        self.assertGreaterEqual(free_bytes(fs.path), 9000000)
        with open(stats) as f:
            s = json.load(f)
        self.assertEqual([w["files_retired"] for w in s["writers"]], [2, 1])
        self.assertEqual(sum(w["bytes_retired"] for w in s["writers"]), 3 * (2 << 20))


class RecoveredFiles(CapdTestCase):
    """A run killed with SIGKILL leaves its hidden file, which the next run
    recovers as k.recovered-<UTC>.pcap: one of this capture's files, the
    oldest. On a 16 MiB tmpfs the killed run's 6 MiB and more leave less
    than the next run's 12 MB floor, which that file alone can restore:
    retention deletes it, counted as any file it retires. Planted under
    recovered names and older still: another user's file, a symbolic link
    to a file outside, a file with a second link; all left alone."""

    def test_killed_runs_recovered_file_is_retired(self):
        fs = small_fs(self, "mounting a tmpfs and chown need root")
        out = os.path.join(fs.path, "k.pcap")
        hidden = os.path.join(fs.path, ".k.pcap.partial")
        killed = capdtest.RunningCapd(["-i", "null:256,rate=40k", "-w", out, "--ctl", "none",
                                       "--flush-ms", "10"])
        self.addCleanup(killed.kill)
        grown = capdtest.wait_until(
            lambda: not killed.running() or (os.path.exists(hidden) and
                                             os.path.getsize(hidden) > (6 << 20)), 120, 0.05)
        self.assertTrue(killed.running(), killed.stderr_now())
        killed.signal(signal.SIGKILL)
        killed.proc.wait(timeout=30)
        self.assertTrue(grown, "the killed run did not write 6 MiB")
        hidden_size = os.path.getsize(hidden)

        victim = self.path("victim")
        with open(victim, "wb") as f:
            f.write(b"not capd's\n")
        foreign = os.path.join(fs.path, "k.recovered-19700101T001640Z.pcap")
        link = os.path.join(fs.path, "k.recovered-19700101T001640Z-1.pcap")
        linked = os.path.join(fs.path, "k.recovered-19700101T001640Z-2.pcap")
        with open(foreign, "wb") as f:
            f.write(b"\1" * 4096)
        os.chown(foreign, 65534, 65534)
        os.symlink(victim, link)
        with open(linked, "wb") as f:
            f.write(b"\2" * 4096)
        os.link(linked, os.path.join(fs.path, "keep"))
        for p in (foreign, link, linked):
            os.utime(p, (1000, 1000), follow_symlinks=False)
        planted = {p: os.lstat(p) for p in (foreign, link, linked)}

        stats = self.path("stats.json")
        run = self.capd(["-i", "null:64,rate=1000", "--duration", "3", "-C", "1",
                         "--retain-free", "12M", "--ctl", "none", "--stats-json", stats,
                         "-w", out])
        self.assertCapdOk(run)
        m = re.search(r"recovered as (k\.recovered-\d{8}T\d{6}Z\.pcap) \((\d+) packets"
                      r"(?:, (\d+) bytes of a cut or older tail dropped)?", run.stderr)
        self.assertIsNotNone(m, run.describe())
        recovered = os.path.join(fs.path, m.group(1))
        size = hidden_size - int(m.group(3) or 0)
        self.assertIn("1 file of an earlier run under this capture's names count for "
                      "retention (1 of them recovered from a killed run)", run.stderr)
        self.assertEqual(deleted_lines(run.stderr), [(recovered, size)], run.describe())
        self.assertFalse(os.path.exists(recovered))
        s = capdtest.read_json(stats)
        self.assertEqual(s["writers"][0]["files_retired"], 1)
        self.assertEqual(s["writers"][0]["bytes_retired"], size)
        self.assertIn(f"capd: retention: 1 file ({size} bytes) deleted", run.stderr)
        self.assertGreaterEqual(free_bytes(fs.path), 12000000)
        for p, st in planted.items():
            with self.subTest(planted=os.path.basename(p)):
                now = os.lstat(p)
                self.assertEqual((now.st_ino, now.st_mode, now.st_size, now.st_uid),
                                 (st.st_ino, st.st_mode, st.st_size, st.st_uid))
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), b"not capd's\n")


def next_second(paths):
    """Waits (30 s at most) until the clock is past the second of the last
    write to `paths`, so that a run started now names no directory as an
    earlier run did."""
    last = max(os.stat(p).st_mtime for p in paths)
    capdtest.wait_until(lambda: time.time() >= int(last) + 1, 30)


class StrftimeDirectories(CapdTestCase):
    """-G 1 with a strftime directory per second: a first run leaves its
    files in directories of their own; the next run, with a floor that only
    the oldest two of them (with their indexes) can meet, finds them by a
    walk below the part of -w named literally and deletes exactly those
    two, oldest first, with their directories once empty. Planted under
    names the walk matches and older still: a symbolic link to a directory
    outside, a directory of nobody's holding a file of root's under the
    capture's name, a file of nobody's under that name and a foreign file
    beside the oldest file; all left alone, and the oldest file's
    directory, not empty, stays."""

    def test_earlier_days_are_walked_and_retired(self):
        fs = small_fs(self, "mounting a tmpfs and chown need root")
        tmpl = os.path.join(fs.path, "%Y%m%d-%H%M%S", "cap.pcap")
        first = self.capd(["-i", "null:256,rate=5k", "--duration", "5", "-G", "1", "-w", tmpl,
                           "--ctl", "none"])
        self.assertCapdOk(first)
        files = sorted(glob.glob(os.path.join(fs.path, "*", "cap.pcap")),
                       key=lambda p: os.stat(p).st_mtime_ns)
        self.assertGreaterEqual(len(files), 4, capdtest.listdir(fs.path))

        def blocks(p):
            return os.stat(p).st_blocks * 512

        def with_index(p):
            idx = os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".idx")
            return blocks(p) + (blocks(idx) if os.path.exists(idx) else 0)

        # Planted: a foreign file beside the oldest file, a file of nobody's
        # under the name, a link to a directory outside and a directory of
        # nobody's, both under names %Y%m%d-%H%M%S makes.
        old = (1000, 1000)
        notes = os.path.join(os.path.dirname(files[0]), "notes.txt")
        with open(notes, "wb") as f:
            f.write(b"not capd's\n")
        os.utime(notes, old)
        nobodys = os.path.join(os.path.dirname(files[1]), "cap.pcap1")
        with open(nobodys, "wb") as f:
            f.write(b"\1" * 4096)
        os.chown(nobodys, 65534, 65534)
        os.utime(nobodys, old)
        outside = self.path("outside")
        os.mkdir(outside)
        with open(os.path.join(outside, "cap.pcap"), "wb") as f:
            f.write(b"\2" * 4096)
        os.utime(os.path.join(outside, "cap.pcap"), old)
        link = os.path.join(fs.path, "19700101-000001")
        os.symlink(outside, link)
        other = os.path.join(fs.path, "19700101-000002")
        os.mkdir(other)
        with open(os.path.join(other, "cap.pcap"), "wb") as f:
            f.write(b"\3" * 4096)
        os.utime(os.path.join(other, "cap.pcap"), old)
        os.chown(other, 65534, 65534)
        planted = [notes, nobodys, link, other, os.path.join(outside, "cap.pcap"),
                   os.path.join(other, "cap.pcap")]
        before = {p: os.lstat(p) for p in planted}

        # The floor: what deleting the oldest file and half of the second
        # frees. The second run writes a few kB a second, far less than half
        # a file, so exactly the oldest two must go.
        floor = free_bytes(fs.path) + with_index(files[0]) + blocks(files[1]) // 2
        next_second(files)
        run = self.capd(["-i", "null:64,rate=10", "--duration", "3", "-G", "1", "-w", tmpl,
                         "--retain-free", str(floor), "--ctl", "none"])
        self.assertCapdOk(run)
        self.assertIn(f"capd: {fs.path}: {len(files)} files of an earlier run under this "
                      f"capture's names, in {len(files)} directories named by strftime below "
                      "it, count for retention", run.stderr)
        self.assertEqual([p for p, _ in deleted_lines(run.stderr)], files[:2], run.describe())
        self.assertIn("capd: retention: 2 files", run.stderr)
        for p in files[:2]:
            self.assertFalse(os.path.exists(p))
        for p in files[2:]:
            self.assertTrue(os.path.exists(p))
        # The oldest's directory holds the foreign file, the second's
        # nobody's file: both stay. Planted entries are as they were.
        for p, st in before.items():
            with self.subTest(planted=p):
                now = os.lstat(p)
                self.assertEqual((now.st_ino, now.st_mode, now.st_size, now.st_uid),
                                 (st.st_ino, st.st_mode, st.st_size, st.st_uid))
        self.assertEqual(os.listdir(os.path.dirname(files[0])), ["notes.txt"])
        self.assertEqual(os.listdir(os.path.dirname(files[1])), ["cap.pcap1"])

    def test_emptied_directories_are_removed(self):
        """With an age every earlier file is past, the directories the
        walk found are deleted with their last file, and only those."""
        fs = small_fs(self, "mounting a tmpfs needs root")
        tmpl = os.path.join(fs.path, "%Y", "%m%d-%H%M%S", "cap.pcap")
        first = self.capd(["-i", "null:64,rate=100", "--duration", "3", "-G", "1", "-w", tmpl,
                           "--ctl", "none"])
        self.assertCapdOk(first)
        earlier = sorted(glob.glob(os.path.join(fs.path, "*", "*", "cap.pcap")))
        self.assertGreaterEqual(len(earlier), 2, capdtest.listdir(fs.path))
        next_second(earlier)
        for p in earlier:
            os.utime(p, (1000, 1000))
        kept = os.path.join(fs.path, "1970", "0101-000000")
        os.makedirs(kept)
        with open(os.path.join(kept, "notes.txt"), "wb") as f:
            f.write(b"not capd's\n")
        run = self.capd(["-i", "null:64,rate=10", "--duration", "2", "-G", "1", "-w", tmpl,
                         "--retain-age", "1h", "--ctl", "none"])
        self.assertCapdOk(run)
        self.assertEqual(sorted(p for p, _ in deleted_lines(run.stderr)), earlier,
                         run.describe())
        for p in earlier:
            self.assertFalse(os.path.exists(os.path.dirname(p)), capdtest.listdir(fs.path))
        self.assertEqual(os.listdir(kept), ["notes.txt"])
        # This run's directories are all that is left beside the planted one.
        left = sorted(glob.glob(os.path.join(fs.path, "*", "*")))
        self.assertTrue(left and kept in left, left)
        for d in left:
            if d != kept:
                self.assertTrue(glob.glob(os.path.join(d, "cap.pcap")), capdtest.listdir(d))


class Age(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.out = self.path("out")
        os.mkdir(self.out)

    def test_age_on_a_fast_clock(self):
        """An earlier run's files under the same names count: with
        --retain-age 2 and -G 1 they go first, then this run's own files
        once they are 2 s old; a planted file and another capture's file,
        older still, survive."""
        pkts, _ = gencaps.mixed(300, seed=33)
        src = gencaps.write(self.path("gen.pcap"), pkts)
        pattern = os.path.join(self.out, "a-%Y%m%d-%H%M%S.pcap")
        # The earlier run: its files, made old.
        run = self.capd(["-q", "-i", f"pcap:{src}", "-w", pattern, "-G", "1", "--ctl", "none"])
        self.assertCapdOk(run, quiet=True)
        earlier = capdtest.listdir(self.out)
        self.assertTrue(earlier)
        for n in earlier:
            os.utime(os.path.join(self.out, n), (1000, 1000))
        planted = os.path.join(self.out, "a-notes.txt")
        other = os.path.join(self.out, "b-19700101-000000.pcap")
        for p in (planted, other):
            with open(p, "w") as f:
                f.write("x\n")
            os.utime(p, (1000, 1000))
        stats = self.path("stats.json")
        sock = self.path("ctl.sock")
        time.sleep(1.1)  # no name of this run is the earlier run's
        cap = capdtest.start_capd(
            ["-i", f"pcap:{src},loop", "-G", "1", "--retain-age", "2", "-w", pattern,
             "--stats-json", stats, "--ctl", sock] + SLOW, sock=sock)
        first = None
        try:
            # This run's first file exists, then is deleted for its age.
            def own_retired():
                nonlocal first
                if not cap.running():
                    return True
                names = [os.path.basename(n) for n, _ in deleted_lines(cap.stderr_now())]
                if first is None:
                    mine = sorted(set(capdtest.listdir(self.out)) - set(earlier) -
                                  {"a-notes.txt", "b-19700101-000000.pcap"})
                    mine = [n for n in mine if not n.startswith(".")]
                    first = mine[0] if mine else None
                return first is not None and first in names
            self.assertTrue(capdtest.wait_until(own_retired, 120, 0.05), cap.stderr_now())
            self.assertTrue(cap.running(), cap.stderr_now())
            # capctl stats, in its three forms, while capturing.
            def ctl(*args):
                p = subprocess.run([CAPCTL, "--ctl", sock] + list(args), capture_output=True,
                                   timeout=30, text=True)
                self.assertEqual(p.returncode, 0, p.stderr)
                return p.stdout
            def writer():
                live = json.loads(ctl("--json", "stats"))
                return live["data"]["writers"][0] if "data" in live else live["writers"][0]

            # A slow machine may have retired every closed file just now:
            # nothing is kept until the next file closes (-G 1).
            capdtest.wait_until(lambda: writer()["oldest_kept_ns"] > 0, 30, 0.1)
            w = writer()
            self.assertGreaterEqual(w["files_retired"], len(earlier) + 1)
            self.assertGreater(w["bytes_retired"], 0)
            self.assertGreater(w["oldest_kept_ns"], 0)
            self.assertRegex(ctl("stats"), r"writer 0: .*, retired \d+ files \(\d+ bytes\), "
                                           r"oldest packet kept \d{4}-\d\d-\d\d ")
            prom = ctl("stats", "--prometheus")
            self.assertRegex(prom, r'linecap_files_retired_total\{writer="0"\} [1-9]')
            self.assertRegex(prom, r'linecap_bytes_retired_total\{writer="0"\} [1-9]')
            self.assertRegex(prom, r'linecap_oldest_packet_kept_seconds\{writer="0"\} [1-9]')
        finally:
            cap.signal(signal.SIGINT)
        run = cap.wait()
        self.assertCapdOk(run)
        self.assertIn(f"{len(earlier)} file", run.stderr)
        self.assertIn("of an earlier run under this capture's names count for retention",
                      run.stderr)
        names = [os.path.basename(n) for n, _ in deleted_lines(run.stderr)]
        for n in earlier:
            self.assertIn(n, names, "an earlier run's file was kept")
        # Earlier files before this run's.
        self.assertEqual(sorted(names[:len(earlier)]), sorted(earlier))
        self.assertEqual(len(names), len(set(names)))
        self.assertTrue(os.path.exists(planted))
        self.assertTrue(os.path.exists(other))
        s = capdtest.read_json(stats)
        self.assertEqual(s["writers"][0]["files_retired"], len(names))
        self.assertEqual(s["drops"]["disk"], 0)

    def test_age_passes_over_a_file_from_the_future(self):
        """An earlier run's file last written in the future (a clock stepped
        back, a touched file) is not the oldest by age: with --retain-age 2
        and -G 1 this run's own files are still deleted once 2 s old, and
        that file is kept."""
        pkts, _ = gencaps.mixed(300, seed=34)
        src = gencaps.write(self.path("gen.pcap"), pkts)
        pattern = os.path.join(self.out, "a-%Y%m%d-%H%M%S.pcap")
        future = os.path.join(self.out, "a-20990101-000000.pcap")
        with open(src, "rb") as f, open(future, "wb") as g:
            g.write(f.read())
        t = time.time() + 10 * 365 * 86400
        os.utime(future, (t, t))
        sock = self.path("ctl.sock")
        cap = capdtest.start_capd(
            ["-i", f"pcap:{src},loop", "-G", "1", "--retain-age", "2", "-w", pattern,
             "--ctl", sock] + SLOW, sock=sock)
        try:
            def own_retired():
                names = [os.path.basename(n) for n, _ in deleted_lines(cap.stderr_now())]
                return not cap.running() or any(n != os.path.basename(future) for n in names)
            self.assertTrue(capdtest.wait_until(own_retired, 60, 0.05),
                            "no file of this run deleted for its age: " + cap.stderr_now())
            self.assertTrue(cap.running(), cap.stderr_now())
        finally:
            cap.signal(signal.SIGINT)
        run = cap.wait()
        self.assertCapdOk(run)
        self.assertTrue(os.path.exists(future))
        self.assertNotIn(os.path.basename(future),
                         [os.path.basename(n) for n, _ in deleted_lines(run.stderr)])

    def test_age_counts_earlier_compressed_files(self):
        """With --compress the capture's names end with the codec's suffix:
        an earlier compressed run's files count for retention and go, a
        plain file under the same pattern (not this capture's name) stays."""
        pkts, _ = gencaps.mixed(300, seed=34)
        src = gencaps.write(self.path("gen.pcap"), pkts)
        pattern = os.path.join(self.out, "c-%Y%m%d-%H%M%S.pcap")
        run = self.capd(["-q", "-i", f"pcap:{src}", "-w", pattern, "-G", "1", "--compress",
                         "lz4", "--ctl", "none"])
        self.assertCapdOk(run, quiet=True)
        earlier = [n for n in capdtest.listdir(self.out) if not n.startswith(".")]
        self.assertTrue(earlier)
        self.assertTrue(all(n.endswith(".pcap.lz4") for n in earlier), earlier)
        for n in earlier:
            os.utime(os.path.join(self.out, n), (1000, 1000))
        plain = os.path.join(self.out, "c-19700101-000000.pcap")
        with open(plain, "w") as f:
            f.write("x\n")
        os.utime(plain, (1000, 1000))
        time.sleep(1.1)  # no name of this run is the earlier run's
        run = self.capd(["-i", f"pcap:{src}", "-G", "1", "--compress", "lz4", "--retain-age",
                         "2", "-w", pattern, "--ctl", "none"])
        self.assertCapdOk(run)
        self.assertIn(f"{len(earlier)} file", run.stderr)
        names = [os.path.basename(n) for n, _ in deleted_lines(run.stderr)]
        for n in earlier:
            self.assertIn(n, names, "an earlier run's compressed file was kept")
            self.assertFalse(os.path.exists(os.path.join(self.out, n)))
        self.assertTrue(os.path.exists(plain))


class Align(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.out = self.path("out")
        os.mkdir(self.out)

    def check_aligned(self, g, z=()):
        """--align -G g on a source with about one frame a second: files
        named by their period's start (%s: seconds since the epoch) are
        whole multiples of g, one per period with none missing, and each
        was opened inside its period."""
        cap = capdtest.start_capd(
            ["-i", "null:64,rate=1", "-G", str(g), "--align", "--ctl", "none",
             "-w", os.path.join(self.out, "t-%s.pcap")] + list(z))
        try:
            # Until four periods have been closed (bounded).
            self.assertTrue(capdtest.wait_until(
                lambda: not cap.running() or len(capdtest.listdir(self.out)) >= 5,
                30 + 10 * g, 0.05), capdtest.listdir(self.out))
        finally:
            cap.signal(signal.SIGINT)
        run = cap.wait()
        self.assertCapdOk(run)
        names = capdtest.listdir(self.out)
        starts = sorted(int(re.match(r"^t-(\d+)\.pcap$", n).group(1)) for n in names)
        self.assertGreaterEqual(len(starts), 5, names)
        for t in starts:
            self.assertEqual(t % g, 0, f"-G {g}: a file starts at {t}")
        self.assertEqual(starts, list(range(starts[0], starts[0] + g * len(starts), g)),
                         "a period without its file")
        for t in starts:
            p = os.path.join(self.out, f"t-{t}.pcap")
            self.assertWhole(p)
            # The header is written at open: the file's modification time is
            # its opening, inside its period (or later, with packets).
            self.assertGreaterEqual(os.stat(p).st_mtime_ns, t * 10**9, p)

    def test_align_G1(self):
        """-G 1, with a -z command that takes 3 s on every file: rotation
        never waits for it."""
        script = self.path("slow-z.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nsleep 3\n")
        os.chmod(script, 0o755)
        self.check_aligned(1, ["-z", script])

    def test_align_G2(self):
        self.check_aligned(2)

    def test_align_names_show_period_start(self):
        """The first file's strftime name is the start of the period capd
        started in, not capd's start time: with -G 3600 and %M%S in the
        name, the first name ends in 0000."""
        run = self.capd(["-q", "-i", "null:64,rate=10", "--duration", "1", "-G", "3600",
                         "--align", "--ctl", "none",
                         "-w", os.path.join(self.out, "h-%H%M%S.pcap")])
        self.assertCapdOk(run, quiet=True)
        names = capdtest.listdir(self.out)
        self.assertTrue(all(re.match(r"^h-\d\d0000\.pcap\d*$", n) for n in names), names)


class BadInput(CapdTestCase):
    def test_bad_retention_and_align(self):
        """Out-of-range values, a floor the file system can never meet, and
        options that need rotation or files: one line, exit 1, no file."""
        out = self.path("out")
        os.mkdir(out)
        w = os.path.join(out, "x.pcap")
        cases = [
            (["--retain-free", "100%", "-G", "1"], "below 100"),
            (["--retain-free", "0%", "-G", "1"], "above 0"),
            (["--retain-free", "-5%", "-G", "1"], "--retain-free"),
            (["--retain-free", "12X", "-G", "1"], "unknown unit"),
            (["--retain-free", "0", "-G", "1"], "above 0"),
            (["--retain-free", "900P", "-G", "1"], "--retain-free"),
            (["--retain-free", "999T", "-G", "1"], "can never be met"),
            (["--retain-age", "0", "-G", "1"], "at least 1 second"),
            (["--retain-age", "3w", "-G", "1"], "unknown unit"),
            (["--retain-age", "200000d", "-G", "1"], "at most 100 years"),
            (["--retain-age", "1h"], "needs -C or -G"),
            (["--retain-free", "10%"], "needs -C or -G"),
            (["--align"], "--align needs -G"),
            # A preallocated ring holds its space; -W bounds it.
            (["--retain-free", "10%", "-C", "1", "-W", "3", "--preallocate"],
             "--retain-free does not take --preallocate"),
            (["--retain-age", "1h", "-C", "1", "-W", "3", "--preallocate"],
             "--retain-age does not take --preallocate"),
        ]
        for args, words in cases:
            with self.subTest(args=args):
                run = self.capd(["-i", "null:64", "--duration", "1", "--ctl", "none",
                                 "-w", w] + args)
                self.assertEqual(run.rc, 1, run.describe())
                self.assertEqual(len(run.stderr_lines), 1, run.describe())
                self.assertIn(words, run.stderr, run.describe())
                self.assertEqual(os.listdir(out), [])
        for args in (["--retain-age", "1h"], ["--align", "-G", "1"]):
            with self.subTest(args=args):
                run = self.capd(["-i", "null:64", "--duration", "1", "--ctl", "none",
                                 "-w", "-"] + args)
                self.assertEqual(run.rc, 1, run.describe())
                self.assertEqual(len(run.stderr_lines), 1, run.describe())
                self.assertIn("needs files", run.stderr)


if __name__ == "__main__":
    capdtest.main()
