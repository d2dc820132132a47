#!/usr/bin/env python3
"""The index capd writes beside every capture file (index/index_file.hh,
DESIGN.md "The packet index").

Every closed file NAME has DIR/.NAME.idx, written before the file gets its
name (so -z finds it) and removed with the file (-W, --reuse-files,
--preallocate); the file being written has a live index
DIR/.NAME.partial.idx, rewritten at most once a second, removed at close.
The tests read the index files in Python from the documented layout: the
header's counts against the capture's own records, the blocks contiguous
from data_start over whole records, the checksums.
"""

import os
import signal
import struct

import capdtest
import gencaps
import pcaplib
from capdtest import CapdTestCase

MB = 1000000

HEADER = struct.Struct("<8sIIQQIIQQQQIIQQQQQQIIIIIIQ")
BLOCK = struct.Struct("<QIIQQ")
FIELDS = ("magic version header_bytes capture_bytes data_start format flags packets "
          "wire_bytes first_ns last_ns block_count flow_count blocks_offset flows_offset "
          "by_dst_offset postings_offset postings_count pages_offset page_count page_shift "
          "non_ip_flows block_target pages_crc header_crc reserved").split()
HEADER_CRC_AT = 148  # header_crc's offset in the header
LIVE = 1
# Version 4 (compressed flow groups): the extension header after the 160
# bytes, and the fences (index/index_file.hh).
EXT = struct.Struct("<QQQIIIIII")
EXT_FIELDS = ("fences_offset dst_fences_offset groups_bytes group_count group_flows "
              "dst_fence_count flow_codec ext_crc reserved").split()
EXT_CRC_AT = 40  # ext_crc's offset in the extension
FENCE = struct.Struct("<16sIIII")

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def index_path(capture):
    d, leaf = os.path.split(capture)
    if leaf.startswith(".") and leaf.endswith(".partial"):
        return os.path.join(d, leaf + ".idx")
    return os.path.join(d, "." + leaf + ".idx")


def read_index(path):
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < HEADER.size:
        raise AssertionError(f"{path}: {len(b)} bytes, shorter than the header")
    h = dict(zip(FIELDS, HEADER.unpack_from(b)))
    blocks = [BLOCK.unpack_from(b, h["blocks_offset"] + i * BLOCK.size)
              for i in range(h["block_count"])]
    return h, blocks, b


def read_flow_layout(h, raw):
    """Version 4: the extension header and the fences as dicts/tuples
    (src, offset, bytes, crc, reserved)."""
    x = dict(zip(EXT_FIELDS, EXT.unpack_from(raw, 160)))
    fences = [FENCE.unpack_from(raw, x["fences_offset"] + i * FENCE.size)
              for i in range(x["group_count"])]
    return x, fences


def record_offsets(path, upto=None):
    """(offset, end, ts_ns) of every whole packet record of a pcap or pcapng
    file, and where the file header (pcapng: the leading SHB and IDBs) ends."""
    with open(path, "rb") as f:
        b = f.read()
    if upto is not None:
        b = b[:upto]
    magic = struct.unpack_from("<I", b)[0]
    recs = []
    if magic in (0xa1b2c3d4, 0xa1b23c4d):
        nano = magic == 0xa1b23c4d
        off = 24
        while off + 16 <= len(b):
            sec, frac, caplen, _ = struct.unpack_from("<IIII", b, off)
            if off + 16 + caplen > len(b):
                break
            recs.append((off, off + 16 + caplen, sec * 10**9 + (frac if nano else frac * 1000)))
            off += 16 + caplen
        return 24, recs
    off = 0
    data_start = None
    while off + 12 <= len(b):
        btype, blen = struct.unpack_from("<II", b, off)
        if blen < 12 or off + blen > len(b):
            break
        if btype in (6, 3, 2):
            if data_start is None:
                data_start = off
            ts = 0
            if btype == 6:
                hi, lo = struct.unpack_from("<II", b, off + 12)
                ts = (hi << 32) | lo  # capd writes if_tsresol 9
            recs.append((off, off + blen, ts))
        off += blen
    return (data_start if data_start is not None else off), recs


class IndexTestCase(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.out = self.path("out")
        os.mkdir(self.out)

    def captures(self):
        return sorted(f for f in capdtest.listdir(self.out) if not f.startswith("."))

    def assertIndexed(self, name, live=False):
        """The index of capture `name` in self.out describes it: header
        fields, blocks over whole records, checksums. Returns the header."""
        cap = os.path.join(self.out, name)
        ip = index_path(cap)
        self.assertTrue(os.path.exists(ip), f"{name} has no index {ip}")
        h, blocks, raw = read_index(ip)
        self.assertEqual(h["magic"], b"LCAPIDX\n", name)
        # A live index has no flows: version 1; a closed file's index has
        # its flows in compressed groups: version 4.
        self.assertEqual(h["version"], 1 if live else 4, name)
        self.assertEqual(h["header_bytes"], 160 if live else 160 + EXT.size, name)
        hdr0 = bytearray(raw[:160])
        hdr0[HEADER_CRC_AT:HEADER_CRC_AT + 4] = b"\0\0\0\0"
        self.assertEqual(crc32c(bytes(hdr0)), h["header_crc"], f"{name}: header checksum")
        if not live:
            self.assertFlowLayout(name, h, raw)
        # The page table: one crc32c per 64 KiB page of the body (from the
        # blocks to the end), itself checked by pages_crc.
        page = 1 << h["page_shift"]
        self.assertEqual(page, 65536, name)
        body = h["blocks_offset"]
        pages = (len(raw) - body + page - 1) // page
        self.assertEqual(h["page_count"], pages, f"{name}: page count")
        table = raw[h["pages_offset"]:h["pages_offset"] + 4 * pages]
        self.assertEqual(crc32c(table), h["pages_crc"], f"{name}: page table checksum")
        for i in range(pages):
            (want,) = struct.unpack_from("<I", table, 4 * i)
            self.assertEqual(crc32c(raw[body + i * page:body + (i + 1) * page]), want,
                             f"{name}: page {i} checksum")
        self.assertEqual(bool(h["flags"] & LIVE), live, f"{name}: flags {h['flags']:#x}")
        size = os.path.getsize(cap)
        data_start, recs = record_offsets(cap, h["capture_bytes"] if live else None)
        if live:
            self.assertLessEqual(h["capture_bytes"], size, f"{name}: live index past the file")
            ends = {e for _, e, _ in recs} | {data_start}
            self.assertIn(h["capture_bytes"], ends, f"{name}: live index ends mid-record")
            recs = [r for r in recs if r[1] <= h["capture_bytes"]]
        else:
            self.assertEqual(h["capture_bytes"], size, f"{name}: capture_bytes")
        self.assertEqual(h["data_start"], data_start, f"{name}: data_start")
        self.assertEqual(h["packets"], len(recs), f"{name}: packets")
        starts = {o for o, _, _ in recs}
        at = data_start
        packets = 0
        for off, nbytes, npk, lo, hi in blocks:
            self.assertEqual(off, at, f"{name}: blocks not contiguous")
            self.assertIn(off, starts, f"{name}: block at {off} is not a record's start")
            self.assertLessEqual(lo, hi, name)
            at += nbytes
            packets += npk
        self.assertEqual(packets, len(recs), f"{name}: packets over the blocks")
        rec_end = recs[-1][1] if recs else data_start
        self.assertEqual(at, rec_end, f"{name}: blocks end where the records end")
        if recs:
            self.assertEqual(h["first_ns"], min(t for _, _, t in recs), f"{name}: first_ns")
            self.assertEqual(h["last_ns"], max(t for _, _, t in recs), f"{name}: last_ns")
        return h

    def assertFlowLayout(self, name, h, raw):
        """Version 4: the extension's checksum, the groups (one lz4 frame
        each, back to back, each with its crc32c in its fence) and the
        fence counts."""
        x, fences = read_flow_layout(h, raw)
        ext0 = bytearray(raw[160:160 + EXT.size])
        ext0[EXT_CRC_AT:EXT_CRC_AT + 4] = b"\0\0\0\0"
        self.assertEqual(crc32c(bytes(ext0)), x["ext_crc"], f"{name}: extension checksum")
        per = x["group_flows"]
        self.assertEqual(per, 64, name)
        self.assertEqual(x["flow_codec"], 2, f"{name}: lz4")
        self.assertEqual(x["group_count"], (h["flow_count"] + per - 1) // per, name)
        ip = h["flow_count"] - h["non_ip_flows"]
        self.assertEqual(x["dst_fence_count"], (ip + per - 1) // per, name)
        self.assertEqual(x["fences_offset"], h["blocks_offset"] + BLOCK.size * h["block_count"])
        self.assertEqual(x["dst_fences_offset"], x["fences_offset"] + FENCE.size * len(fences))
        self.assertEqual(h["flows_offset"], x["dst_fences_offset"] + 16 * x["dst_fence_count"])
        at = 0
        for g, (_, off, nbytes, crc, _) in enumerate(fences):
            self.assertEqual(off, at, f"{name}: group {g} not where the last ended")
            frame = raw[h["flows_offset"] + off:h["flows_offset"] + off + nbytes]
            self.assertEqual(frame[:4], b"\x04\x22\x4d\x18", f"{name}: group {g}: lz4 magic")
            self.assertEqual(crc32c(frame), crc, f"{name}: group {g} checksum")
            at += nbytes
        self.assertEqual(at, x["groups_bytes"], name)
        self.assertEqual(h["by_dst_offset"], h["flows_offset"] + (at + 7) // 8 * 8, name)

    def assertOnlyIndexesOf(self, names):
        """The hidden entries of self.out are exactly the indexes of names."""
        hidden = sorted(f for f in os.listdir(self.out) if f.startswith("."))
        self.assertEqual(hidden, sorted("." + n + ".idx" for n in names))


class ClosedFiles(IndexTestCase):
    def setUp(self):
        super().setUp()
        self.pkts, _ = gencaps.mixed(2000, seed=31)
        self.src = gencaps.write(self.path("gen.pcap"), self.pkts)

    def test_every_closed_file(self):
        """-C 1 over a looped mix, pcap microseconds: every file has an
        index describing it, and the summary counts them."""
        stats = self.path("stats.json")
        run = self.capd(["-q", "-i", f"pcap:{self.src},loop", "-c", "12000", "-C", "1",
                         "-w", os.path.join(self.out, "a.pcap"), "--stats-json", stats])
        self.assertCapdOk(run, quiet=True)
        names = self.captures()
        self.assertGreater(len(names), 2)
        for n in names:
            self.assertIndexed(n)
        self.assertOnlyIndexesOf(names)
        s = capdtest.read_json(stats)
        w = s["writers"][0]
        self.assertEqual(w["index_files"], len(names))
        self.assertEqual(w["index_errors"], 0)
        self.assertEqual(w["index_bytes"],
                         sum(os.path.getsize(index_path(os.path.join(self.out, n)))
                             for n in names))

    def test_index_that_cannot_be_written(self):
        """Something else under the index's hidden name (here a directory):
        the index is not written, which is one line and a count, the entry
        is left alone, and the capture is still published whole."""
        stats = self.path("stats.json")
        planted = os.path.join(self.out, ".a.pcap.idx.partial")
        os.mkdir(planted)
        run = self.capd(["-q", "-i", f"pcap:{self.src}", "-w", os.path.join(self.out, "a.pcap"),
                         "--stats-json", stats])
        self.assertEqual(self.captures(), ["a.pcap"], run.describe())
        self.assertFalse(os.path.exists(index_path(os.path.join(self.out, "a.pcap"))))
        self.assertTrue(os.path.isdir(planted), "the planted entry was touched")
        lines = [ln for ln in run.stderr_lines if ln.startswith("capd: index:")]
        self.assertEqual(len(lines), 1, run.describe())
        self.assertIn("a.pcap", lines[0])
        w = capdtest.read_json(stats)["writers"][0]
        self.assertEqual(w["index_errors"], 1)
        self.assertEqual(w["index_files"], 0)
        self.assertGreater(w["packets"], 0)

    def test_formats_and_snaplen(self):
        """--nano, pcapng from two sources, --snaplen 100, --direct."""
        src2 = gencaps.write(self.path("gen2.pcap"), gencaps.mixed(1500, source=2, seed=32)[0])
        cases = {
            "nano": ["--nano", "-i", f"pcap:{self.src}"],
            "pcapng": ["--format", "pcapng", "-i", f"pcap:{self.src}", "-i", f"pcap:{src2}"],
            "snaplen": ["--nano", "-s", "100", "-i", f"pcap:{self.src}"],
            "direct": ["--direct", "-i", f"pcap:{self.src},loop", "-c", "6000", "-C", "1"],
            "direct_pcapng": ["--direct", "--format", "pcapng", "-i", f"pcap:{self.src}"],
        }
        for label, args in cases.items():
            with self.subTest(label):
                d = os.path.join(self.out, label)
                os.mkdir(d)
                run = self.capd(["-q", "-w", os.path.join(d, "x.cap")] + args)
                self.assertCapdOk(run, quiet=True)
                saved, self.out = self.out, d
                try:
                    names = self.captures()
                    self.assertTrue(names)
                    for n in names:
                        h = self.assertIndexed(n)
                        self.assertGreater(h["packets"], 0)
                        self.assertEqual(h["format"], 2 if "pcapng" in label else
                                         0 if label == "direct" else 1)
                    self.assertOnlyIndexesOf(names)
                finally:
                    self.out = saved

    def test_two_writers(self):
        """--workers 2 --writers 2: each writer's files are indexed."""
        src2 = gencaps.write(self.path("gen2.pcap"), gencaps.mixed(1500, source=2, seed=33)[0])
        run = self.capd(["-q", "--nano", "--workers", "2", "--writers", "2", "-i",
                         f"pcap:{self.src}", "-i", f"pcap:{src2}", "-w",
                         os.path.join(self.out, "x.pcap")])
        self.assertCapdOk(run, quiet=True)
        names = self.captures()
        self.assertEqual(names, ["x_w0.pcap", "x_w1.pcap"])
        total = sum(self.assertIndexed(n)["packets"] for n in names)
        self.assertEqual(total, 3500)
        self.assertOnlyIndexesOf(names)

    def test_no_index(self):
        """--no-index writes none, and the summary counts none."""
        stats = self.path("stats.json")
        run = self.capd(["-q", "-i", f"pcap:{self.src},loop", "-c", "6000", "-C", "1",
                         "--no-index", "-w", os.path.join(self.out, "n.pcap"),
                         "--stats-json", stats])
        self.assertCapdOk(run, quiet=True)
        self.assertGreater(len(self.captures()), 1)
        self.assertOnlyIndexesOf([])
        self.assertEqual(capdtest.read_json(stats)["writers"][0]["index_files"], 0)


class Rings(IndexTestCase):
    def setUp(self):
        super().setUp()
        self.pkts, _ = gencaps.mixed(2000, seed=41)
        self.src = gencaps.write(self.path("gen.pcap"), self.pkts)

    def z_script(self, log):
        """A -z command that logs "FILE yes" when the index of FILE is in
        place as it runs, "FILE gone" when -W already took the file, else
        "FILE no"."""
        p = self.path("z.sh")
        with open(p, "w") as f:
            f.write("#!/bin/sh\n"
                    'i="$(dirname "$1")/.$(basename "$1").idx"\n'
                    f'if [ -f "$i" ]; then echo "$1 yes" >> {log}; '
                    f'elif [ ! -e "$1" ]; then echo "$1 gone" >> {log}; '
                    f'else echo "$1 no" >> {log}; fi\n')
        os.chmod(p, 0o755)
        return p

    def test_W_ring_and_z(self):
        """-C 1 -W 3: exactly the 3 files' indexes remain, each matching its
        file; -z found every file's index in place."""
        log = self.path("z.log")
        stats = self.path("stats.json")
        run = self.capd(["-q", "--nano", "-i", f"pcap:{self.src},loop", "-c", "20000", "-C",
                         "1", "-W", "3", "-w", os.path.join(self.out, "r.pcap"),
                         "-z", self.z_script(log), "--stats-json", stats])
        self.assertCapdOk(run, quiet=True)
        s = capdtest.read_json(stats)
        self.assertGreater(s["files_written"], 3, "the test needs the ring to wrap")
        names = self.captures()
        self.assertEqual(names, ["r.pcap0", "r.pcap1", "r.pcap2"])
        for n in names:
            self.assertIndexed(n)
        self.assertOnlyIndexesOf(names)
        with open(log) as f:
            lines = f.read().split()
        self.assertEqual(len(lines), 2 * s["files_written"])
        self.assertNotIn("no", lines[1::2], "-z ran before the index was in place")
        self.assertIn("yes", lines[1::2])

    def test_reuse_and_preallocate(self):
        """--reuse-files and --preallocate, each run twice into the same
        directory (the second run shorter): no index of a displaced file
        remains, each index matches its file."""
        for mode in ("--reuse-files", "--preallocate"):
            d = os.path.join(self.out, mode.strip("-"))
            os.mkdir(d)
            saved, self.out = self.out, d
            try:
                for count in (20000, 5000):
                    with self.subTest(mode=mode, count=count):
                        run = self.capd(["-q", "--nano", mode, "-i", f"pcap:{self.src},loop",
                                         "-c", count, "-C", "1", "-W", "3", "-w",
                                         os.path.join(d, "u.pcap")])
                        self.assertCapdOk(run, quiet=True)
                        names = self.captures()
                        self.assertEqual(names, ["u.pcap0", "u.pcap1", "u.pcap2"])
                        for n in names:
                            self.assertIndexed(n)
                        self.assertOnlyIndexesOf(names)
            finally:
                self.out = saved


class LiveAndKilled(IndexTestCase):
    def hidden_capture(self):
        h = [f for f in os.listdir(self.out) if f.startswith(".") and f.endswith(".partial")]
        return h[0] if len(h) == 1 else None

    def test_live_index(self):
        """A slow paced source: the live index of the file being written
        appears (bounded wait), flagged live, within the hidden file and on a
        record boundary; it grows; at the end only the final index remains."""
        c = capdtest.start_capd(["--ctl", "none", "-i", "null:200,rate=500",
                                 "--flush-ms", "20", "-w", os.path.join(self.out, "l.pcap")])
        try:
            live = os.path.join(self.out, ".l.pcap.partial.idx")
            self.assertTrue(capdtest.wait_until(lambda: os.path.exists(live), 30),
                            "no live index appeared")
            h1 = self.assertIndexed(".l.pcap.partial", live=True)
            self.assertTrue(capdtest.wait_until(
                lambda: read_index(live)[0]["packets"] > h1["packets"], 30),
                "the live index did not follow the capture")
            self.assertIndexed(".l.pcap.partial", live=True)
            c.signal(signal.SIGINT)
            c.wait()
        finally:
            c.kill()
        self.assertEqual(self.captures(), ["l.pcap"])
        self.assertIndexed("l.pcap")
        self.assertOnlyIndexesOf(["l.pcap"])

    def test_kill9_then_restart(self):
        """kill -9 while a file is written: its live index and a stale index
        being written are removed at the next start, the recovered file has
        no index (capq scans it), and the new run's file has its own."""
        c = capdtest.start_capd(["--ctl", "none", "-i", "null:200,rate=500",
                                 "--flush-ms", "20", "-C", "1", "-W", "4",
                                 "-w", os.path.join(self.out, "k.pcap")])
        try:
            live = os.path.join(self.out, ".k.pcap0.partial.idx")
            self.assertTrue(capdtest.wait_until(lambda: os.path.exists(live), 30),
                            "no live index appeared")
            c.signal(signal.SIGKILL)
            c.wait()
        finally:
            c.kill()
        self.assertTrue(os.path.exists(os.path.join(self.out, ".k.pcap0.partial")))
        # An index write cut by the kill, and an index whose file is gone.
        for stale in (".k.pcap1.idx.partial", ".k.pcap2.idx"):
            with open(os.path.join(self.out, stale), "wb") as f:
                f.write(b"LCAPIDX\n" + bytes(200))
        run = self.capd(["--nano", "-i", "null:200", "-c", "100", "-C", "1", "-W", "4",
                         "-w", os.path.join(self.out, "k.pcap")])
        self.assertCapdOk(run)
        self.assertIn("recovered as", run.stderr)
        names = self.captures()
        recovered = [n for n in names if ".recovered-" in n]
        self.assertEqual(len(recovered), 1, names)
        self.assertEqual(sorted(set(names) - set(recovered)), ["k.pcap0"])
        self.assertIndexed("k.pcap0")
        self.assertOnlyIndexesOf(["k.pcap0"])


if __name__ == "__main__":
    capdtest.main()
