#!/usr/bin/env python3
"""--compress with the other ways capd writes files, for each codec.

Each capture is read back three ways: by tshark, by the codec's own tool
piped into tcpdump, and by capq (through the index), and its records are
compared with an uncompressed capture of the same input: the very records,
in order, across the files of a rotation (-C counts compressed bytes, so
the cuts differ, not the records). The modes: --direct on an ext4 image
the test mounts (with -C), --preallocate (-C -W ring), -C -W --reuse-files
run twice into one directory (the second run writes over the first run's
files), -G -W on a paced source, and write-behind with a small lag over
several 8 MiB windows. Then disk full with --direct and each codec on a
small ext4 image: every file ends at its last whole frame, reads cleanly,
holds what the summary says was written, and the loss is `disk` drops.

Waits are bounded; no timing is asserted.
"""

import json
import os
import struct

import capdtest
from capdtest import CAPQ, CODECS, CompressTestCase

MIX = os.path.join(capdtest.DATA_DIR, "demo", "web-mix.pcap")


def run(cmd, stdin=None, timeout=180):
    return capdtest.run_cmd(cmd, stdin, timeout)


def pcap_records(data):
    """The records of pcap bytes (header and data of each), in order; a
    record cut short is an error."""
    assert len(data) >= 24, len(data)
    magic = data[:4]
    assert magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"), magic
    out, at = [], 24
    while at < len(data):
        assert at + 16 <= len(data), f"record header cut at {at}"
        caplen = struct.unpack_from("<I", data, at + 8)[0]
        assert at + 16 + caplen <= len(data), f"record cut at {at}"
        out.append(data[at:at + 16 + caplen])
        at += 16 + caplen
    return out


def final_files(d, suffix):
    """The named capture files of d, oldest first (by modification time)."""
    names = [n for n in os.listdir(d) if not n.startswith(".") and n.endswith(suffix)]
    return sorted((os.path.join(d, n) for n in names), key=lambda p: os.stat(p).st_mtime_ns)


def repeated_input(path, copies):
    """MIX `copies` times over into one pcap at path, each copy's
    timestamps after the last one's: an input the size of a looped replay
    whose records, timestamps included, are the same in every run (a
    looped replay's are not)."""
    with open(MIX, "rb") as f:
        data = f.read()
    recs = pcap_records(data)
    first = struct.unpack_from("<I", recs[0], 0)[0]
    span = struct.unpack_from("<I", recs[-1], 0)[0] - first + 1
    out = [data[:24]]
    for k in range(copies):
        for r in recs:
            sec = struct.unpack_from("<I", r, 0)[0] + k * span
            out.append(struct.pack("<I", sec) + r[4:])
    with open(path, "wb") as f:
        f.write(b"".join(out))
    return path


class ReadBack(CompressTestCase):
    """Scratch disks, and captures read back by every reader."""

    def ext4(self, name, size):
        d = os.path.join(self.mount_scratch(name, size, "ext4"), "cap")
        os.mkdir(d)  # away from lost+found
        return d

    def plain_records(self, args):
        """The records of an uncompressed capture of the same input into one
        file."""
        d = self.path(f"plain-{len(os.listdir(self.tmp))}")
        self.capture(d, args)
        with open(os.path.join(d, "a.pcap"), "rb") as f:
            return pcap_records(f.read())

    def read_back(self, path, codec, with_tshark=True, indexed=True):
        """The file's records, after checking that the codec's tool, tcpdump
        (fed by it), tshark and capq all read the same packets from it."""
        raw = self.decompressed(path, codec)
        recs = pcap_records(raw)
        td = run(["tcpdump", "-nn", "-q", "-r", "-"], stdin=raw)
        self.assertEqual(td.returncode, 0, td.stderr)
        self.assertEqual(len(td.stdout.splitlines()), len(recs), path)
        if with_tshark:
            ts = run(["tshark", "-n", "-r", path, "-T", "fields", "-e", "frame.len"])
            self.assertEqual(ts.returncode, 0, ts.stderr)
            self.assertEqual(len(ts.stdout.splitlines()), len(recs), path)
        q = run([CAPQ, "-r", path, "-w", "-", ""])
        self.assertEqual(q.returncode, 0, q.stderr)
        self.assertEqual(pcap_records(q.stdout), recs, path)
        if indexed:
            ex = run([CAPQ, "-r", path, "--explain", ""])
            self.assertIn(b"indexed", ex.stdout + ex.stderr, path)
        return recs

    def read_all(self, d, codec, with_tshark=True, indexed=True):
        files = final_files(d, CODECS[codec][0])
        self.assertTrue(files, os.listdir(d))
        self.assertEqual(capdtest.hidden_files(d), [], "no hidden file after exit")
        per_file = []
        for p in files:
            got = self.read_back(p, codec, with_tshark, indexed)
            # Files closed within one clock tick share a modification time:
            # then the first packet's time orders them.
            first = struct.unpack_from("<II", got[0], 0) if got else (0, 0)
            per_file.append(((os.stat(p).st_mtime_ns, first), p, got))
        per_file.sort(key=lambda x: x[0])
        recs = []
        for _, _, got in per_file:
            recs += got
        return [p for _, p, _ in per_file], recs

    def direct_disk_full(self, name, codec, extra=()):
        """capd with --direct and `codec` (and `extra`) looping the mix into
        an 8 MB ext4 image until it is full: exit 1, disk drops counted,
        every received packet accounted for. Returns (summary, files,
        records read back)."""
        d = self.ext4(name, 8 << 20)
        stats = self.path(name + ".json")
        r = self.capd(["-q", "--ctl", "none", "-i", f"pcap:{MIX},loop", "-c", "300000",
                       "-w", os.path.join(d, "a.pcap"), "--direct", "--compress", codec,
                       "--stats-json", stats] + list(extra))
        self.assertEqual(r.rc, 1, r.describe())
        with open(stats) as f:
            s = json.load(f)
        self.assertGreater(s["drops"]["disk"], 0)
        self.assertEqual(s["packets_received"],
                         s["packets_filtered_out"] + s["packets_over_limit"] +
                         s["packets_written"] + capdtest.lost_after_receipt(s))
        # The index may not fit on the full disk either: capq then reads
        # the file whole.
        files, recs = self.read_all(d, codec, with_tshark=False, indexed=False)
        return s, files, recs


class CompressModes(ReadBack):
    def test_direct_with_C(self):
        """--direct -C 0.1: every file read back, all of them the records of
        the uncompressed capture, in order."""
        src = ["-i", "pcap:" + repeated_input(self.path("in.pcap"), 5)]
        want = self.plain_records(src)
        disk = self.ext4("direct", 64 << 20)
        for codec in CODECS:
            with self.subTest(codec=codec):
                d = os.path.join(disk, codec)
                s = self.capture(d, src + ["--direct", "-C", "0.1", "--compress", codec,
                                           "--compress-block", "64K"])
                files, recs = self.read_all(d, codec)
                self.assertGreater(len(files), 1, files)
                self.assertEqual(recs, want)
                self.assertEqual(s["packets_written"], len(want))
                self.assertEqual(s["drops"]["disk"], 0)
                w = s["writers"][0]
                self.assertEqual(w["bytes_out"], sum(os.path.getsize(p) for p in files))

    def ring_suffix(self, files, recs, want, max_files):
        """A -W ring keeps the newest files: their records are the last ones
        of the input, in order."""
        self.assertLessEqual(len(files), max_files, files)
        self.assertGreater(len(recs), 0)
        self.assertLess(len(recs), len(want), "the ring dropped older files")
        self.assertEqual(recs, want[-len(recs):])

    def test_preallocate_ring(self):
        src = ["-i", "pcap:" + repeated_input(self.path("in.pcap"), 10)]
        want = self.plain_records(src)
        for codec in CODECS:
            with self.subTest(codec=codec):
                d = self.path(f"prealloc-{codec}")
                s = self.capture(d, src + ["-C", "0.1", "-W", "3", "--preallocate",
                                           "--compress", codec, "--compress-block", "64K"])
                self.assertGreater(s["files_written"], 3, "the ring wrapped")
                files, recs = self.read_all(d, codec)
                self.ring_suffix(files, recs, want, 3)

    def test_reuse_files_ring_twice(self):
        """The second run writes over the first run's files: each file is
        cut to its own frames, with nothing of the file it replaced."""
        src = ["-i", "pcap:" + repeated_input(self.path("in.pcap"), 10)]
        want = self.plain_records(src)
        for codec in CODECS:
            with self.subTest(codec=codec):
                d = self.path(f"reuse-{codec}")
                args = src + ["-C", "0.1", "-W", "3", "--reuse-files", "--compress", codec,
                              "--compress-block", "64K"]
                self.capture(d, args)
                inodes = {os.stat(p).st_ino for p in final_files(d, CODECS[codec][0])}
                s = self.capture(d, args)
                self.assertGreater(s["files_written"], 3)
                files, recs = self.read_all(d, codec)
                self.assertTrue(inodes & {os.stat(p).st_ino for p in files},
                                "the second run wrote over the first run's files")
                self.ring_suffix(files, recs, want, 3)

    def test_G_W(self):
        """-G 1 -W 2 on a paced source of real frames for 4 s: at most two
        files kept of the four or more written, each read back the same by
        every reader, and the newest ones whole."""
        for codec in CODECS:
            with self.subTest(codec=codec):
                d = self.path(f"gw-{codec}")
                s = self.capture(d, ["-i", f"null:600,rate=2000,frames={MIX}", "--duration",
                                     "4", "-G", "1", "-W", "2", "--compress", codec,
                                     "--compress-block", "64K"])
                self.assertGreaterEqual(s["files_written"], 4)
                files, recs = self.read_all(d, codec)
                self.assertLessEqual(len(files), 2, files)
                self.assertGreater(len(recs), 0)
                self.assertLess(len(recs), s["packets_written"])
                self.assertEqual(s["drops"]["disk"], 0)

    def test_repeated_name_keeps_the_suffix(self):
        """-G 1 on a name without strftime conversions writes the same name
        each period: the number it gets goes before the codec's suffix
        (a.pcap1.zst), as -C's counter does, and every file reads back."""
        for codec in CODECS:
            with self.subTest(codec=codec):
                d = self.path(f"again-{codec}")
                s = self.capture(d, ["-i", f"null:600,rate=200,frames={MIX}", "--duration", "3",
                                     "-G", "1", "--compress", codec])
                suffix = CODECS[codec][0]
                names = sorted(n for n in os.listdir(d) if not n.startswith("."))
                self.assertGreaterEqual(len(names), 2, names)
                self.assertEqual(len(names), s["files_written"], names)
                want = ["a.pcap" + suffix] + [f"a.pcap{k}{suffix}" for k in range(1, len(names))]
                self.assertEqual(sorted(names), sorted(want))
                files, recs = self.read_all(d, codec, with_tshark=False)
                self.assertEqual(len(recs), s["packets_written"])

    def test_write_behind_over_several_windows(self):
        """Write-behind (on for disk files) with a lag of one 8 MiB window,
        over a file more than two windows long (the helper waits for and
        drops windows while the file grows): the same records."""
        src = ["-i", "pcap:" + repeated_input(self.path("in.pcap"), 250)]
        want = self.plain_records(src)
        for codec in CODECS:
            with self.subTest(codec=codec):
                d = self.path(f"wb-{codec}")
                s = self.capture(d, src + ["--write-behind", "8", "--compress", codec])
                files, recs = self.read_all(d, codec, with_tshark=False)
                self.assertEqual(len(files), 1)
                self.assertGreater(os.path.getsize(files[0]), 2 * (8 << 20),
                                   "several write-behind windows")
                self.assertEqual(recs, want)
                self.assertEqual(s["packets_written"], len(want))

    def test_disk_full_direct(self):
        """--direct and each codec on an 8 MB ext4 image that cannot hold
        the capture: each file ends at its last whole frame, reads cleanly,
        and holds the packets the summary says were written; the rest are
        `disk` drops."""
        for codec in CODECS:
            with self.subTest(codec=codec):
                s, files, recs = self.direct_disk_full(f"full-{codec}", codec)
                # The disk took writes until it was full: the file holds
                # most of what fits, not nothing (an 8 MiB O_DIRECT write
                # refused whole once lost the whole staging buffer).
                self.assertGreater(sum(os.path.getsize(p) for p in files), 4 << 20)
                self.assertEqual(len(recs), s["packets_written"])


def index_without_size(raw):
    """An index's bytes with the header's capture_bytes and checksum zeroed:
    what two indexes of the same records share when their files' closing
    pcapng statistics (a wall-clock time) differ in size."""
    import test_index
    h = dict(zip(test_index.FIELDS, test_index.HEADER.unpack_from(raw)))
    h["capture_bytes"] = 0
    h["header_crc"] = 0
    return test_index.HEADER.pack(*[h[k] for k in test_index.FIELDS]) + raw[test_index.HEADER.size:]


def frames_end(raw):
    """The file offset where an index's last stored block's frame ends."""
    import test_index
    h = dict(zip(test_index.FIELDS, test_index.HEADER.unpack_from(raw)))
    assert h["block_count"] > 0
    at = h["blocks_offset"] + h["block_count"] * test_index.BLOCK.size + \
        (h["block_count"] - 1) * 16
    off, n = struct.unpack_from("<QI", raw, at)
    return off + n


class CompressThreads(ReadBack):
    """--compress-threads N: the writer's blocks compressed by N helper
    threads and written in block order. The same blocks and the same
    deterministic codecs give the very file --compress-threads 0 gives;
    -C cuts where it cuts without helpers; a write failure leaves the file
    at its last whole frame with every lost packet counted."""

    def same_capture(self, name, args, files_of, pcapng=False):
        """Captures args with --compress-threads 0 and 2 into two
        directories and checks that they hold the same files: the same
        names, bytes and indexes (pcapng: the same bytes up to the end of
        the last block's frame, the closing statistics frame holding a
        wall-clock time, and the same indexes but for the file's size).
        Returns the files of the run with helpers and its summary."""
        runs = []
        for threads in (0, 2):
            d = self.path(f"{name}-t{threads}")
            s = self.capture(d, args + ["--compress-threads", str(threads)])
            runs.append((d, s, files_of(d)))
        (d0, s0, f0), (d2, s2, f2) = runs
        self.assertEqual([os.path.basename(p) for p in f0], [os.path.basename(p) for p in f2])
        self.assertGreater(len(f2), 0)
        for a, b in zip(f0, f2):
            idx = lambda p: os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".idx")
            with open(a, "rb") as fa, open(b, "rb") as fb, \
                    open(idx(a), "rb") as ia, open(idx(b), "rb") as ib:
                da, db, xa, xb = fa.read(), fb.read(), ia.read(), ib.read()
            if pcapng:
                end = frames_end(xa)
                self.assertEqual(end, frames_end(xb), b)
                self.assertEqual(da[:end], db[:end], b)
                self.assertEqual(index_without_size(xa), index_without_size(xb), b)
            else:
                self.assertEqual(da, db, b)
                self.assertEqual(xa, xb, b)
        for k in ("packets_written", "packets_received"):
            self.assertEqual(s0[k], s2[k], k)
        self.assertEqual(s2["drops"]["disk"], 0)
        w0, w2 = s0["writers"][0], s2["writers"][0]
        self.assertEqual(w2["compress_threads"], 2)
        self.assertEqual(w0["compress_threads"], 0)
        self.assertEqual(w0["bytes_in"], w2["bytes_in"])
        return f2, s2

    def test_helpers_write_the_same_file(self):
        """Every codec, pcap and pcapng, a fixed pcap: input of about 30
        64K blocks (the helpers' four blocks in flight fill again and
        again): the file and its index are those of --compress-threads 0."""
        src = ["-i", "pcap:" + repeated_input(self.path("in.pcap"), 4)]
        want = self.plain_records(src)
        for fmt in ("pcap", "pcapng"):
            fmt_args = ["--format", "pcapng"] if fmt == "pcapng" else []
            for codec in CODECS:
                with self.subTest(fmt=fmt, codec=codec):
                    files, s = self.same_capture(
                        f"same-{codec}-{fmt}",
                        src + fmt_args + ["--compress", codec, "--compress-block", "64K"],
                        lambda d: final_files(d, CODECS[codec][0]), pcapng=fmt == "pcapng")
                    self.assertEqual(len(files), 1)
                    self.assertEqual(s["packets_written"], len(want))
                    if fmt == "pcap":
                        self.assertEqual(self.read_back(files[0], codec, with_tshark=False),
                                         want)

    def test_helpers_rotate_where_the_writer_alone_does(self):
        """-C 1 with 64K blocks (about 30 frames per file, four in flight):
        the files are cut after the block that reached 1 MB, as without
        helpers, so each is under 1 MB and one frame, the same files byte
        for byte, and together every record of the input, in order."""
        src = ["-i", "pcap:" + repeated_input(self.path("in.pcap"), 30)]
        want = self.plain_records(src)
        for codec in CODECS:
            with self.subTest(codec=codec):
                files, s = self.same_capture(
                    f"rot-{codec}",
                    src + ["-C", "1", "--compress", codec, "--compress-block", "64K"],
                    lambda d: self.read_all(d, codec, with_tshark=False)[0])
                self.assertGreater(len(files), 2, files)
                for p in files:
                    self.assertLess(os.path.getsize(p), 1000000 + (64 << 10) + 16 + 1514, p)
                self.assertEqual(self.read_all(os.path.dirname(files[0]), codec,
                                               with_tshark=False)[1], want)
                self.assertEqual(s["packets_written"], len(want))

    def test_close_that_reaches_C_opens_no_file(self):
        """The block a close writes (the last, partly filled) takes the
        file past -C: the file is closing anyway, so no next file is opened
        inside the close (one with a header and nothing else, named), with
        or without helpers."""
        src = ["-i", f"pcap:{MIX}", "--compress", "zstd", "--compress-block", "100K"]
        d = self.path("close-free")
        self.capture(d, src)
        with open(os.path.join(d, ".a.pcap.zst.idx"), "rb") as f:
            raw = f.read()
        last = frames_end(raw)
        import test_index
        h = dict(zip(test_index.FIELDS, test_index.HEADER.unpack_from(raw)))
        self.assertGreater(h["block_count"], 2)
        # Under -C until the last block's frame, which only the close writes
        # (the input ends inside it), over it after.
        at = h["blocks_offset"] + h["block_count"] * test_index.BLOCK.size + \
            (h["block_count"] - 1) * 16
        before_last = struct.unpack_from("<Q", raw, at)[0]
        self.assertLess(before_last + 100, last)
        limit = (before_last + 50) / 1e6
        for threads in ("0", "2"):
            with self.subTest(threads=threads):
                d = self.path(f"close-C-{threads}")
                s = self.capture(d, src + ["-C", f"{limit:.6f}", "--compress-threads", threads])
                names = sorted(n for n in os.listdir(d) if not n.startswith("."))
                self.assertEqual(names, ["a.pcap.zst"])
                self.assertEqual(s["files_written"], 1)
                self.assertGreaterEqual(os.path.getsize(os.path.join(d, names[0])),
                                        limit * 1e6)

    def test_disk_full_with_helpers(self):
        """A 1 MB tmpfs with each codec and 2 helper threads: the file ends
        at its last whole frame (the codec's tool tests it clean), holds
        the packets the summary says were written, and every other packet
        is counted (received = written + drops)."""
        for codec in CODECS:
            with self.subTest(codec=codec):
                d = self.mount_scratch(f"full-{codec}", "1m")
                stats = self.path(f"full-{codec}.json")
                r = self.capd(["-q", "--ctl", "none", "-i", f"pcap:{MIX},loop", "-c", "100000",
                               "-w", os.path.join(d, "a.pcap"), "--compress", codec,
                               "--compress-block", "64K", "--compress-threads", "2",
                               "--stats-json", stats])
                self.assertIn(r.rc, (0, 1), r.describe())
                with open(stats) as f:
                    s = json.load(f)
                self.assertGreater(s["drops"]["disk"], 0)
                self.assertEqual(s["packets_received"],
                                 s["packets_filtered_out"] + s["packets_over_limit"] +
                                 s["packets_written"] + capdtest.lost_after_receipt(s))
                files, recs = self.read_all(d, codec, with_tshark=False, indexed=False)
                self.assertGreater(len(recs), 0)
                self.assertEqual(len(recs), s["packets_written"])

    def test_disk_full_direct_with_helpers(self):
        """--direct on an 8 MB ext4 image with 2 helper threads: a failed
        staged write cuts the file back past frames the helpers made and
        the writer wrote; the file still ends at its last whole frame and
        holds what the summary says was written, the rest counted."""
        for codec in CODECS:
            with self.subTest(codec=codec):
                s, files, recs = self.direct_disk_full(f"dfull-{codec}", codec,
                                                       ["--compress-threads", "2"])
                self.assertEqual(len(recs), s["packets_written"])

    def test_bad_input_is_one_line_before_capture(self):
        out = os.path.join(self.path("bad"), "a.pcap")
        os.makedirs(os.path.dirname(out))
        for args in (["--compress-threads", "2"], ["--compress-threads", "0"],
                     ["--compress", "lz4", "--compress-threads", "17"],
                     ["--compress", "lz4", "--compress-threads", "-1"],
                     ["--compress", "lz4", "--compress-threads", "two"]):
            with self.subTest(args=args):
                r = self.capd(["-i", f"pcap:{MIX}", "-w", out] + args)
                self.assertEqual(r.rc, 1, r.describe())
                self.assertEqual(len(r.stderr_lines), 1, r.describe())
                self.assertIn("--compress-threads", r.stderr_lines[0])
                self.assertEqual(os.listdir(os.path.dirname(out)), [])


if __name__ == "__main__":
    capdtest.main()
