#!/usr/bin/env python3
"""capd --compress: each file a standard zstd, lz4 or gzip stream of
independent blocks, one frame (member) per index block (index/codec.hh).

Round trip: for every codec, pcap and pcapng, the file read back by tshark,
by the codec's own tool piped into tcpdump, and by capq (through the index,
and without it) gives what an uncompressed capture of the same pcap: input
gives. Disk full (a small tmpfs the test mounts): the file ends at its last
whole frame, so the codec's own tool tests it clean. kill -9 in the write of
a frame: the tool reads every frame before the cut one, and the next run
recovers the file cut back to its last whole frame. Bad input:
one line, exit 1, before capture. capq --reindex of a compressed file
gives the index capd wrote (one block per frame), indexes a file cut into
frames at records by hand and the file kill -9 left, and refuses, in one
line, a file whose frames are not cut at records. Waits are bounded; no
timing is asserted.
"""

import gzip
import json
import os
import re
import shutil
import signal
import struct
import time

import capdtest
import pcaplib
from capdtest import CAPQ, CODECS, CompressTestCase

MIX = os.path.join(capdtest.DATA_DIR, "demo", "web-mix.pcap")
SRC = ["-i", f"pcap:{MIX}"]
# The most one frame of MIX holds: capd's default --compress-block (256K)
# and the record that crosses it (web-mix's are at most 1514 bytes).
FRAME_MOST = 256 * 1024 + 16 + 1514
run = capdtest.run_cmd


def tcpdump_text(data):
    """tcpdump's reading of pcap bytes: one line per packet."""
    p = run(["tcpdump", "-nn", "-tt", "-v", "-r", "-"], stdin=data)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    return p.stdout


def count_packets(data):
    """Packets in pcap bytes, as tcpdump reads them."""
    p = run(["tcpdump", "-nn", "-q", "-r", "-"], stdin=data)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    return len(p.stdout.splitlines())


def tshark_text(path):
    p = run(["tshark", "-n", "-r", path, "-T", "fields", "-e", "frame.time_epoch", "-e",
             "frame.len", "-e", "frame.cap_len", "-e", "frame.protocols", "-e", "data"])
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    return p.stdout


class Compress(CompressTestCase):
    def capq(self, path, expr, *more):
        p = run([CAPQ, "-r", path, "-w", "-"] + list(more) + [expr])
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        return p.stdout

    def test_round_trip_every_codec_and_format(self):
        for fmt in ("pcap", "pcapng"):
            fmt_args = ["--format", "pcapng"] if fmt == "pcapng" else []
            plain_dir = self.path(f"plain-{fmt}")
            self.capture(plain_dir, SRC + fmt_args)
            plain = os.path.join(plain_dir, "a.pcap")
            want_tshark = tshark_text(plain)
            want_tcp = self.capq(plain, "tcp")
            want_host = self.capq(plain, "host 10.0.0.2")
            with open(plain, "rb") as f:
                want_dump = tcpdump_text(f.read()) if fmt == "pcap" else None
            for codec, (suffix, cat, test) in CODECS.items():
                with self.subTest(fmt=fmt, codec=codec):
                    d = self.path(f"{codec}-{fmt}")
                    # Small blocks: several per file, so capq picks some.
                    s = self.capture(d, SRC + fmt_args + ["--compress", codec,
                                                          "--compress-block", "64K"])
                    path = os.path.join(d, "a.pcap" + suffix)
                    self.assertTrue(os.path.exists(path), os.listdir(d))
                    self.assertFalse(os.path.exists(os.path.join(d, "a.pcap")))
                    w = s["writers"][0]
                    self.assertEqual(w["compress"], codec)
                    self.assertEqual(w["bytes_out"], os.path.getsize(path))
                    self.assertEqual(w["bytes_in"], os.path.getsize(plain))
                    self.assertGreater(w["ratio"], 1.0)
                    self.assertEqual(tshark_text(path), want_tshark)
                    raw = self.decompressed(path, codec)
                    with open(plain, "rb") as f:
                        if fmt == "pcap":
                            # The same bytes, header and records.
                            self.assertEqual(raw, f.read())
                            self.assertEqual(tcpdump_text(raw), want_dump)
                    # capq through the index: only the blocks it needs.
                    self.assertEqual(self.capq(path, "tcp"), want_tcp)
                    self.assertEqual(self.capq(path, "host 10.0.0.2"), want_host)
                    ex = run([CAPQ, "-r", path, "--explain", "host 10.0.0.2"])
                    self.assertIn(b"indexed", ex.stdout + ex.stderr)
                    # Without it: the whole stream.
                    os.unlink(os.path.join(d, ".a.pcap" + suffix + ".idx"))
                    self.assertEqual(self.capq(path, "tcp"), want_tcp)

    def test_rotation_counts_bytes_on_disk(self):
        d = self.path("rot")
        os.makedirs(d)
        r = self.capd(["-q", "-i", f"pcap:{MIX},loop", "-c", "100000", "-C", "1",
                       "-w", os.path.join(d, "a.pcap"), "--compress", "zstd"])
        self.assertCapdOk(r)
        names = sorted(n for n in os.listdir(d) if not n.startswith("."))
        self.assertGreater(len(names), 1, names)
        for n in names:
            self.assertTrue(n.startswith("a.pcap") and n.endswith(".zst"), n)
            self.assertEqual(run(["zstd", "-tq", os.path.join(d, n)]).returncode, 0, n)
            # Cut after the block that reached 1 MB: at most one block over.
            self.assertLess(os.path.getsize(os.path.join(d, n)), 1000000 + (256 << 10))
        out = run([CAPQ, "-r", d, "-w", "-", ""]).stdout
        self.assertEqual(count_packets(out), 100000)

    def test_bad_input_is_one_line_before_capture(self):
        out = os.path.join(self.path("bad"), "a.pcap")
        os.makedirs(os.path.dirname(out))
        for args in (["--compress", "xz"], ["--compress", "zstd:30"], ["--compress", "zstd:0"],
                     ["--compress", "gzip:10"], ["--compress", "lz4:3"], ["--compress", "zstd:"],
                     ["--compress", "zstd", "--compress-block", "16K"],
                     ["--compress", "zstd", "--compress-block", "64Q"],
                     ["--compress-block", "64K"]):
            with self.subTest(args=args):
                r = self.capd(["-i", f"pcap:{MIX}", "-w", out] + args)
                self.assertEqual(r.rc, 1, r.describe())
                self.assertEqual(len(r.stderr_lines), 1, r.describe())
                self.assertEqual(os.listdir(os.path.dirname(out)), [])
        r = self.capd(["-i", f"pcap:{MIX}", "-w", "-", "--compress", "lz4"])
        self.assertEqual(r.rc, 1, r.describe())
        self.assertEqual(len(r.stderr_lines), 1, r.describe())
        self.assertIn("--compress", r.stderr_lines[0])

    def test_inflate_in_memory_is_bounded(self):
        """A small hostile file read without an index: a pcap header and
        64 MiB of zeros in one gzip member (about 64 KB). capq
        --max-inflate 16M refuses it in one line naming the option instead
        of holding it all in memory; capd's own file without its index
        reads whole under the same limit; an index claiming a block larger
        than the limit is refused the same way."""
        d = self.path("bomb")
        os.makedirs(d)
        bomb = os.path.join(d, "b.pcap.gz")
        header = struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)
        with open(bomb, "wb") as f:
            f.write(gzip.compress(header + bytes(64 << 20), 9))
        self.assertLess(os.path.getsize(bomb), 1 << 20)
        p = run([CAPQ, "-r", bomb, "-w", "-", "--max-inflate", "16M", "tcp"])
        err = p.stderr.decode("utf-8", "replace")
        self.assertNotEqual(p.returncode, 0, err)
        errors = [l for l in err.splitlines() if not l.startswith("capq: warning:")]
        self.assertEqual(len(errors), 1, err)
        self.assertIn("--max-inflate", errors[0])
        self.assertIn("b.pcap.gz", errors[0])
        own = self.path("own")
        self.capture(own, SRC + ["--compress", "zstd", "--no-index"])
        files = [f for f in os.listdir(own) if not f.startswith(".")]
        self.assertEqual(files, ["a.pcap.zst"])
        out = self.capq(os.path.join(own, files[0]), "ip or not ip", "--max-inflate", "16M")
        self.assertEqual(count_packets(out), 3200)
        # An index claiming a block of 16 MiB (capq --reindex of a file
        # whose one frame holds 1 Mi empty records): the same bound holds
        # for a block read through the index.
        big = os.path.join(d, "blk.pcap.gz")
        recs = b"".join(struct.pack("<IIII", 1000 + i // 1000000, i % 1000000, 0, 0)
                        for i in range(1 << 20))
        with open(big, "wb") as f:
            f.write(gzip.compress(header, 6) + gzip.compress(recs, 6))
        p = run([CAPQ, "--reindex", big])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run([CAPQ, "-r", big, "-w", "-", "--max-inflate", "8M", "tcp"])
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 1, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("--max-inflate", err)
        p = run([CAPQ, "-r", big, "-w", "-", "--max-inflate", "32M", "tcp"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        p = run([CAPQ, "-r", bomb, "--max-inflate", "0", "tcp"])
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)

    def test_disk_full_ends_at_a_whole_block(self):
        for codec, (suffix, cat, test) in CODECS.items():
            with self.subTest(codec=codec):
                d = self.mount_scratch(f"full-{codec}", "1m")
                stats = self.path(f"full-{codec}.json")
                r = self.capd(["-q", "-i", f"pcap:{MIX},loop", "-c", "100000", "-w",
                               os.path.join(d, "a.pcap"), "--compress", codec,
                               "--stats-json", stats])
                self.assertIn(r.rc, (0, 1), r.describe())
                with open(stats) as f:
                    s = json.load(f)
                self.assertGreater(s["drops"]["disk"], 0)
                path = os.path.join(d, "a.pcap" + suffix)
                self.assertTrue(os.path.exists(path), os.listdir(d))
                self.assertGreater(count_packets(self.decompressed(path, codec)), 0)
                # A capture still running a second after the failure opens
                # a new file, which may take a block before the disk is
                # full again: what the summary says was written is what
                # the files hold, each ending at a whole frame.
                names = sorted(n for n in os.listdir(d) if not n.startswith("."))
                self.assertTrue(all(n.endswith(suffix) for n in names), names)
                got = sum(count_packets(self.decompressed(os.path.join(d, n), codec))
                          for n in names)
                self.assertEqual(got, s["packets_written"], names)
                self.assertEqual(count_packets(self.capq(d, "")), got)

    def killed_capture(self, name, codec, extra=()):
        """The hidden file of a looping --compress capture killed with
        SIGKILL once it holds more than 2 MiB and a live index, then cut
        7 bytes short: a kill during the write of a frame leaves the last
        frame cut at a page, and the test makes that case, the harder one,
        every run's (the writer's last frame is far longer than 7 bytes).
        Returns (directory, hidden file, its size as the kill left it,
        packets capq read from it through its live index before the cut)."""
        suffix = CODECS[codec][0]
        d = self.path(name)
        os.makedirs(d)
        proc = capdtest.RunningCapd(["-q", "-i", f"pcap:{MIX},loop", "-w",
                                     os.path.join(d, "a.pcap"), "--compress", codec] +
                                    list(extra))
        self.addCleanup(proc.kill)
        hidden = os.path.join(d, ".a.pcap" + suffix + ".partial")
        live = hidden + ".idx"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (os.path.exists(live) and os.path.exists(hidden) and
                    os.path.getsize(hidden) > (2 << 20)):
                break
            time.sleep(0.1)
        self.assertTrue(os.path.exists(live), os.listdir(d))
        proc.signal(signal.SIGKILL)
        proc.proc.wait(timeout=30)
        size = os.path.getsize(hidden)
        # capq reads the live file through its live index, up to the
        # blocks it covers, whole records only.
        n = count_packets(self.capq(d, ""))
        self.assertGreater(n, 0)
        self.assertLessEqual(n, len(self.tool_records(hidden, codec)))
        os.truncate(hidden, size - 7)
        self.assertNotEqual(run(CODECS[codec][2] + [hidden]).returncode, 0,
                            "the codec's tool did not see the cut frame")
        return d, hidden, size, n

    def tool_records(self, path, codec):
        """The whole records the codec's own tool decompresses from `path`,
        up to where its stream stops (a frame cut short fails the tool,
        after what came before it)."""
        raw = run(CODECS[codec][1] + [path]).stdout
        return pcaplib.read_capture_bytes(raw, lenient=True).records

    def test_kill_9_leaves_whole_blocks(self):
        """After kill -9 in the write of a frame, the codec's tool reads
        every whole frame before the cut, and the next run recovers the file
        cut back to its last whole frame, never writing over it."""
        self.check_kill_9()

    def test_kill_9_with_helper_threads(self):
        """The same with --compress-threads 2: the live index names only
        frames that were written, and recovery cuts back to the last."""
        self.check_kill_9(["--compress-threads", "2"])

    def check_kill_9(self, extra=()):
        for codec, (suffix, cat, test) in CODECS.items():
            with self.subTest(codec=codec):
                d, hidden, size, n = self.killed_capture(f"kill-{codec}-{len(extra)}", codec,
                                                         extra)
                read = self.tool_records(hidden, codec)
                self.assertGreater(len(read), 0)
                r = self.capd(["-q", "-i", f"pcap:{MIX}", "-w", os.path.join(d, "a.pcap"),
                               "--compress", codec])
                self.assertCapdOk(r)
                rec = [x for x in os.listdir(d) if ".recovered-" in x]
                self.assertEqual(len(rec), 1, os.listdir(d))
                self.assertTrue(rec[0].endswith(suffix), rec)
                rec = os.path.join(d, rec[0])
                self.assertLess(os.path.getsize(rec), size - 7)
                self.assertEqual(run(test + [rec]).returncode, 0)
                kept = pcaplib.read_capture_bytes(run(cat + [rec]).stdout).records
                # What the tool read before the cut, less at most what the
                # cut frame held.
                self.assertGreater(len(kept), 0)
                self.assertEqual(kept, read[:len(kept)])
                self.assertLess(sum(16 + x.caplen for x in read[len(kept):]), FRAME_MOST)

    def reindex(self, *paths):
        return run([CAPQ, "--reindex"] + list(paths))

    def test_reindex_gives_the_index_capd_wrote(self):
        for fmt in ("pcap", "pcapng"):
            fmt_args = ["--format", "pcapng"] if fmt == "pcapng" else []
            for codec, (suffix, cat, test) in CODECS.items():
                with self.subTest(fmt=fmt, codec=codec):
                    d = self.path(f"reindex-{codec}-{fmt}")
                    self.capture(d, SRC + fmt_args + ["--compress", codec,
                                                 "--compress-block", "64K"])
                    path = os.path.join(d, "a.pcap" + suffix)
                    idx = os.path.join(d, ".a.pcap" + suffix + ".idx")
                    with open(idx, "rb") as f:
                        written = f.read()
                    os.unlink(idx)
                    p = self.reindex(path)
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertIn(b"packets", p.stdout)
                    # One block per frame, as capd cut them: the same index,
                    # readable by whom the file is.
                    with open(idx, "rb") as f:
                        self.assertEqual(f.read(), written)
                    self.assertEqual(os.stat(idx).st_mode & 0o777,
                                     os.stat(path).st_mode & 0o666)
                    raw = run(cat + [path]).stdout
                    for expr in ("tcp", "host 10.0.0.2", "udp"):
                        want = run(["tcpdump", "-nn", "-tt", "-v", "-r", "-", expr], stdin=raw)
                        self.assertEqual(want.returncode, 0)
                        self.assertEqual(tcpdump_text(self.capq(path, expr)), want.stdout)
                    ex = run([CAPQ, "-r", path, "--explain", "host 10.0.0.2"])
                    self.assertIn(b"indexed", ex.stdout + ex.stderr)

    def test_reindex_decompresses_once(self):
        """capq --reindex reads a compressed file once: the bytes its read
        and pread64 calls return from the file (strace) are its size, plus
        at most the 1 MiB that opening it reads for the header (two passes
        read it twice), and the index is still the one capd wrote."""
        if not shutil.which("strace"):
            self.skipTest("strace not installed")
        for codec, (suffix, cat, test) in CODECS.items():
            with self.subTest(codec=codec):
                d = self.path(f"once-{codec}")
                os.makedirs(d)
                r = self.capd(["-q", "-i", f"pcap:{MIX},loop", "-c", "200000", "-w",
                               os.path.join(d, "a.pcap"), "--compress", codec])
                self.assertCapdOk(r)
                path = os.path.join(d, "a.pcap" + suffix)
                idx = os.path.join(d, ".a.pcap" + suffix + ".idx")
                with open(idx, "rb") as f:
                    written = f.read()
                os.unlink(idx)
                log = self.path(f"once-{codec}.strace")
                p = run(["strace", "-f", "-qq", "-s", "0", "-o", log,
                         "-e", "trace=open,openat,read,pread64,close", CAPQ, "--reindex", path])
                self.assertEqual(p.returncode, 0, p.stderr)
                with open(idx, "rb") as f:
                    self.assertEqual(f.read(), written)
                fds, got = set(), 0
                call = re.compile(r'^(?:\d+\s+)?(\w+)\((?:AT_FDCWD, "([^"]*)"|(\d+))'
                                  r'.*\)\s+=\s+(-?\d+)')
                with open(log) as f:
                    for line in f:
                        m = call.match(line)
                        if not m:
                            continue
                        name, opened, fd, ret = m.group(1), m.group(2), m.group(3), int(m.group(4))
                        if name in ("open", "openat"):
                            if opened == path and ret >= 0:
                                fds.add(ret)
                        elif name == "close":
                            fds.discard(int(fd))
                        elif int(fd) in fds and ret > 0:
                            got += ret
                size = os.path.getsize(path)
                self.assertGreater(size, 4 << 20)
                self.assertGreaterEqual(got, size)
                self.assertLessEqual(got, size + (1 << 20) + 4096,
                                     f"read {got} bytes of a {size}-byte file")

    def test_reindex_frames_cut_at_records_by_hand(self):
        """Not capd's file: a header frame, then frames that end at records."""
        with open(MIX, "rb") as f:
            data = f.read()
        cuts, at = [24], 24
        while at < len(data):
            caplen = int.from_bytes(data[at + 8:at + 12], "little")
            at += 16 + caplen
            if len(cuts) < 4 and at - cuts[-1] > 50000:
                cuts.append(at)
        cuts = [0] + cuts + [len(data)]
        path = self.path("byhand.pcap.zst")
        with open(path, "wb") as f:
            for a, b in zip(cuts, cuts[1:]):
                f.write(run(["zstd", "-cq"], stdin=data[a:b]).stdout)
        p = self.reindex(path)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"{len(cuts) - 2} blocks".encode(), p.stdout)
        want = run(["tcpdump", "-nn", "-tt", "-v", "-r", MIX, "tcp"])
        self.assertEqual(tcpdump_text(self.capq(path, "tcp")), want.stdout)
        ex = run([CAPQ, "-r", path, "--explain", "tcp"])
        self.assertIn(b"indexed", ex.stdout + ex.stderr)

    def test_reindex_refuses_a_file_not_cut_into_blocks(self):
        with open(MIX, "rb") as f:
            data = f.read()
        cases = {}
        for codec, tool in (("zstd", ["zstd", "-1", "-cq"]), ("lz4", ["lz4", "-cq"]),
                            ("gzip", ["gzip", "-c"])):
            # The codec's own tool: one frame (member) for the whole file.
            cases[f"whole.pcap{CODECS[codec][0]}"] = run(tool, stdin=data).stdout
        # Frames cut inside a record.
        cases["inside.pcap.zst"] = (run(["zstd", "-cq"], stdin=data[:24]).stdout +
                                    run(["zstd", "-cq"], stdin=data[24:100001]).stdout +
                                    run(["zstd", "-cq"], stdin=data[100001:]).stdout)
        for name, blob in cases.items():
            with self.subTest(name=name):
                path = self.path(name)
                with open(path, "wb") as f:
                    f.write(blob)
                p = self.reindex(path)
                self.assertEqual(p.returncode, 1)
                err = p.stderr.decode()
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertIn("cannot be read a block at a time", err)
                self.assertFalse(os.path.exists(self.path("." + name + ".idx")))
                # capq still reads it whole.
                self.assertEqual(count_packets(self.capq(path, "")), count_packets(data))

    def test_reindex_of_the_file_kill_9_left(self):
        """capq --reindex of the hidden file a kill -9 in the write of a
        frame left: every whole frame indexed, the cut one left out."""
        for codec in CODECS:
            with self.subTest(codec=codec):
                _, hidden, _, _ = self.killed_capture(f"rekill-{codec}", codec)
                if os.path.exists(hidden + ".idx"):
                    os.unlink(hidden + ".idx")
                p = self.reindex(hidden)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertTrue(os.path.exists(hidden + ".idx"))
                # capq gives, through the index, what the codec's tool
                # reads, less at most what the cut frame held.
                read = self.tool_records(hidden, codec)
                every = self.capq(hidden, "")
                got = pcaplib.read_capture_bytes(every).records
                self.assertGreater(len(got), 0)
                self.assertEqual(got, read[:len(got)])
                self.assertLess(sum(16 + x.caplen for x in read[len(got):]), FRAME_MOST)
                want = run(["tcpdump", "-nn", "-tt", "-v", "-r", "-", "tcp"], stdin=every)
                self.assertEqual(tcpdump_text(self.capq(hidden, "tcp")), want.stdout)
                ex = run([CAPQ, "-r", hidden, "--explain", "tcp"])
                self.assertIn(b"indexed", ex.stdout + ex.stderr)


if __name__ == "__main__":
    capdtest.main()
