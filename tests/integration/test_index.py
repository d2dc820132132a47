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

import json
import os
import subprocess
import signal
import struct

import capdtest
import gencaps
import pcaplib
from capdtest import CapdTestCase

MB = 1000000
CAPQ = os.path.join(capdtest.BUILD_DIR, "query", "capq")

HEADER = struct.Struct("<8sIIQQIIQQQQIIQQQQQQIIIIIIII")
BLOCK = struct.Struct("<QIIQQ")
FIELDS = ("magic version header_bytes capture_bytes data_start format flags packets "
          "wire_bytes first_ns last_ns block_count flow_count blocks_offset flows_offset "
          "by_dst_offset postings_offset postings_count pages_offset page_count page_shift "
          "non_ip_flows block_target pages_crc header_crc codec cut_count").split()
# FlowEntry: the key (src, dst, sport, dport, tpid[2], vid[2], ethertype,
# linktype, l3_offset, l4_offset, kind, ip_version, first_nxt, proto, flags,
# vlan_tags, 6 reserved), first_ns, last_ns, packets, wire_bytes, postings,
# postings_count.
FLOW = struct.Struct("<16s16sHH2H2HHHHHBBBBBB6xQQQQII")
FLOW_FIELDS = ("src dst sport dport tpid0 tpid1 vid0 vid1 ethertype linktype l3_offset "
               "l4_offset kind ip_version first_nxt proto flags vlan_tags first_ns last_ns "
               "packets wire_bytes postings postings_count").split()
# CutEntry (versions 3 and 4): flow number, reserved, cut packets and
# bytes, duplicate packets and bytes; right after the postings, 8-aligned.
CUT = struct.Struct("<IIQQQQ")
CUT_FIELDS = "flow reserved cut_packets cut_bytes dup_packets dup_bytes".split()
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


def lz4_frame_decode(frame):
    """The bytes of one lz4 frame (the frame format's magic, descriptor,
    blocks, end mark), decoded here so that the test needs nothing but the
    documented formats."""
    if frame[:4] != b"\x04\x22\x4d\x18":
        raise AssertionError("not an lz4 frame")
    flg = frame[4]
    at = 7 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0)
    out = bytearray()
    while True:
        size = struct.unpack_from("<I", frame, at)[0]
        at += 4
        if size == 0:
            break
        raw, size = size & 0x80000000, size & 0x7FFFFFFF
        block = frame[at:at + size]
        at += size + (4 if flg & 0x10 else 0)
        if raw:
            out += block
            continue
        i = 0
        while i < len(block):
            token = block[i]
            i += 1
            n = token >> 4
            if n == 15:
                while True:
                    n += block[i]
                    i += 1
                    if block[i - 1] != 255:
                        break
            out += block[i:i + n]
            i += n
            if i >= len(block):
                break
            dist = block[i] | block[i + 1] << 8
            i += 2
            m = token & 15
            if m == 15:
                while True:
                    m += block[i]
                    i += 1
                    if block[i - 1] != 255:
                        break
            m += 4
            start = len(out) - dist
            if dist == 0 or start < 0:
                raise AssertionError("bad lz4 match")
            for k in range(m):
                out.append(out[start + k])
    return bytes(out)


def flow_entries(h, b):
    """The FlowEntry bytes of an index in the version 1 order: as stored
    (versions 1 to 3), or version 4's groups decompressed and unshuffled
    (byte j of entry i at j * n + i)."""
    if h["version"] < 4:
        return [b[h["flows_offset"] + i * FLOW.size:h["flows_offset"] + (i + 1) * FLOW.size]
                for i in range(h["flow_count"])]
    x, fences = read_flow_layout(h, b)
    assert x["flow_codec"] == 2, "lz4 groups"
    entries = []
    for g, (_, off, nbytes, _, _) in enumerate(fences):
        plain = lz4_frame_decode(b[h["flows_offset"] + off:h["flows_offset"] + off + nbytes])
        n = min(x["group_flows"], h["flow_count"] - g * x["group_flows"])
        assert len(plain) == n * FLOW.size, f"group {g}: {len(plain)} bytes"
        for i in range(n):
            entries.append(bytes(plain[j * n + i] for j in range(FLOW.size)))
    return entries


def read_flows(path):
    """The flows of an index, each a dict of FLOW_FIELDS plus "cut" (its
    CutEntry as a dict, or None), from the documented layout (versions 1
    to 4)."""
    h, _, b = read_index(path)
    assert FLOW.size == 104 and CUT.size == 40
    flows = [dict(zip(FLOW_FIELDS, FLOW.unpack(e))) for e in flow_entries(h, b)]
    for f in flows:
        f["cut"] = None
    at = (h["postings_offset"] + 4 * h["postings_count"] + 7) & ~7
    if h["version"] >= 3:
        assert h["cut_count"] > 0 or h["version"] == 4
        prev = -1
        for i in range(h["cut_count"]):
            c = dict(zip(CUT_FIELDS, CUT.unpack_from(b, at + i * CUT.size)))
            assert prev < c["flow"] < len(flows) and c["reserved"] == 0, c
            prev = c["flow"]
            flows[c["flow"]]["cut"] = c
        at += h["cut_count"] * CUT.size
    else:
        assert h["cut_count"] == 0
    assert len(b) == at, f"{path}: {len(b)} bytes, the sections end at {at}"
    return flows


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
        # its flows in compressed groups: version 4, with or without cuts
        # (capd's flow table left packets out).
        self.assertEqual(h["version"], 1 if live else 4, name)
        self.assertEqual(h["header_bytes"], 160 if live else 160 + EXT.size, name)
        if live:
            self.assertEqual(h["cut_count"], 0, name)
        hdr0 = bytearray(raw[:160])
        read_flows(ip)  # the sections end where the file ends
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
            self.assertTrue(capdtest.wait_until(lambda: os.path.exists(live), 120),
                            "no live index appeared")
            h1 = self.assertIndexed(".l.pcap.partial", live=True)
            self.assertTrue(capdtest.wait_until(
                lambda: read_index(live)[0]["packets"] > h1["packets"], 120),
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
            self.assertTrue(capdtest.wait_until(lambda: os.path.exists(live), 120),
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


class Cuts(IndexTestCase):
    """What --flow-cutoff and --dedup leave out is in the index of the file
    it would have gone to (index format version 3), per flow, exactly as the
    model of flow_table.hh counts it; capq --flows shows it."""

    TCP = [300, 5000, 20000, 60000, 150000, 900, 45000, 2500, 80000, 12000]
    UDP = [3, 40, 200, 9, 120, 1]

    @staticmethod
    def flow_id(proto, sport):
        return (proto, sport)

    @staticmethod
    def model_id(key):
        # test_flows' keys: ("tcp", client, cport, server, 80), ("udp", v6, i);
        # the client/first address is the lower one, so its port is sport.
        return (6, key[2]) if key[0] == "tcp" else (17, 20000 + key[2])

    def mixed(self, seed):
        """test_flows' mix, then a long UDP flow (i = 40) cut for good while
        new TCP flows (base 60) fill several files: those files hold the
        UDP flow's cut packets only."""
        import test_flows as tf
        head = tf.mix(seed, self.TCP, self.UDP)
        long_udp = tf.udp_flow(40, 1500)
        late = [tf.tcp_flow(60 + i, 20000, seed + 60 + i) for i in range(6)]
        return tf.interleave([head, long_udp[:100]], seed) + \
            tf.interleave([long_udp[100:]] + late, seed + 1)

    def model(self, pkts, **kw):
        """Per flow: (packets written, cut packets, cut bytes)."""
        import test_flows as tf
        kept = {id(d) for d in tf.model_cutoff([(k, d) for k, d in pkts], **kw)[0]}
        per = {}
        for key, d in pkts:
            w, c, b = per.get(self.model_id(key), (0, 0, 0))
            per[self.model_id(key)] = (w + 1, c, b) if id(d) in kept else (w, c + 1, b + len(d))
        return per

    def indexed(self):
        """Per flow over every file: [written, cut packets, cut bytes, dup
        packets, dup bytes], and the files with a flow of cut packets only."""
        got, cut_only = {}, []
        for n in self.captures():
            self.assertIndexed(n)
            for f in read_flows(index_path(os.path.join(self.out, n))):
                k = self.flow_id(f["proto"], f["sport"])
                g = got.setdefault(k, [0, 0, 0, 0, 0])
                g[0] += f["packets"]
                if f["cut"]:
                    c = f["cut"]
                    g[1] += c["cut_packets"]
                    g[2] += c["cut_bytes"]
                    g[3] += c["dup_packets"]
                    g[4] += c["dup_bytes"]
                    self.assertGreater(c["cut_packets"] + c["dup_packets"], 0)
                    if f["packets"] == 0:
                        self.assertEqual((f["wire_bytes"], f["postings_count"]), (0, 0))
                        self.assertLessEqual(f["first_ns"], f["last_ns"])
                        cut_only.append((n, k))
        return got, cut_only

    def run_cutoff(self, srcs, args):
        stats = self.path("stats.json")
        cmd = ["-q", "-C", "0.03", "-w", os.path.join(self.out, "c.pcap"), "--stats-json", stats]
        if "pcapng" not in args:
            cmd.append("--nano")
        for src in srcs:
            cmd += ["-i", f"pcap:{src}"]
        run = self.capd(cmd + args)
        self.assertCapdOk(run, quiet=True)
        return capdtest.read_json(stats)

    def check(self, want, s):
        got, cut_only = self.indexed()
        self.assertEqual(set(got), set(want))
        for k, (w, c, b) in want.items():
            self.assertEqual(got[k][:3], [w, c, b], k)
            self.assertEqual(got[k][3:], [0, 0], k)
        self.assertEqual(sum(g[1] for g in got.values()), s["flows"]["cut_off_packets"])
        self.assertEqual(sum(g[2] for g in got.values()), s["flows"]["cut_off_bytes"])
        return got, cut_only

    def test_every_flow_cut_as_the_model_says(self):
        import test_flows as tf
        pkts = self.mixed(7)
        src = self.path("mix.pcap")
        tf.to_pcap(src, pkts)
        s = self.run_cutoff([src], ["--flow-cutoff", "20000"])
        self.assertGreater(len(self.captures()), 3)
        want = self.model(pkts, cutoff_bytes=20000)
        self.assertGreater(sum(c for _, c, _ in want.values()), 1000)
        got, cut_only = self.check(want, s)
        # The long UDP flow has a file of cut packets only (the notes of a
        # chunk go to the file of its last record: here the last of the
        # files the chunk filled); it is listed there.
        self.assertIn((17, 20040), {k for _, k in cut_only})

        # capq --flows: the totals per flow, only where something was cut.
        p = subprocess.run([CAPQ, "--flows", "--json", "-r", self.out], capture_output=True,
                           timeout=capdtest.CAPD_TIMEOUT)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        rows = json.loads(p.stdout)
        self.assertEqual(len(rows), len(want))
        for r in rows:
            w, c, b = want[self.flow_id(r["proto"], r["sport"])]
            self.assertEqual(r["packets"], w)
            self.assertEqual(r.get("cut_packets", 0), c, r)
            self.assertEqual(r.get("cut_bytes", 0), b, r)
            self.assertEqual("cut_packets" in r, c > 0, r)
            self.assertNotIn("duplicate_packets", r)
        p = subprocess.run([CAPQ, "--flows", "-r", self.out, "udp port 53"],
                           capture_output=True, timeout=capdtest.CAPD_TIMEOUT)
        self.assertEqual(p.returncode, 0, p.stderr)
        w, c, b = want[(17, 20040)]
        line = [ln for ln in p.stdout.decode().splitlines() if ":20040 <> " in ln]
        self.assertEqual(len(line), 1, p.stdout)
        self.assertTrue(line[0].endswith(f"; cut {c} packets {b} bytes"), line[0])

    def capq_flows(self):
        p = subprocess.run([CAPQ, "--flows", "--json", "-r", self.out], capture_output=True,
                           timeout=capdtest.CAPD_TIMEOUT)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, b"")
        return {self.flow_id(r["proto"], r["sport"]): (r["packets"], r.get("cut_packets", 0),
                                                        r.get("cut_bytes", 0))
                for r in json.loads(p.stdout)}

    def test_one_file_and_compressed(self):
        """The writer's other two paths: one file (no -C), and --compress
        (index version 3 with the frames table) over several files;
        capq --flows sums them. The compressed case cuts at 20000 bytes so
        that more than one 64K block (the smallest) is written: a file is
        cut after the block that reaches -C, and the close's block starts
        no file of its own."""
        import test_flows as tf
        pkts = self.mixed(11)
        src = self.path("mix.pcap")
        tf.to_pcap(src, pkts)
        for name, args, cutoff in [
                ("one file", [], 5000),
                ("zstd", ["--compress", "zstd", "--compress-block", "64K"], 20000)]:
            with self.subTest(name):
                want = self.model(pkts, cutoff_bytes=cutoff)
                self.assertTrue(any(c for _, c, _ in want.values()), "nothing is cut")
                for f in os.listdir(self.out):
                    os.unlink(os.path.join(self.out, f))
                stats = self.path("stats.json")
                rotate = ["-C", "0.005"] if args else []
                run = self.capd(["-q", "--nano", "-w", os.path.join(self.out, "c.pcap"),
                                 "--stats-json", stats, "-i", f"pcap:{src}",
                                 "--flow-cutoff", str(cutoff)] + args + rotate)
                self.assertCapdOk(run, quiet=True)
                names = self.captures()
                self.assertGreater(len(names), 1 if args else 0)
                for n in names:
                    h, _, _ = read_index(index_path(os.path.join(self.out, n)))
                    self.assertEqual(h["version"], 4)  # compact flows and the cuts
                    self.assertEqual(h["codec"] != 0, bool(args))
                    read_flows(index_path(os.path.join(self.out, n)))
                self.assertEqual(self.capq_flows(), want)

    def test_two_workers(self):
        """Each source file on its own worker, one writer: the notes of both
        reach the same files' indexes."""
        self.two_workers([])

    def test_two_workers_pcapng(self):
        """The same in pcapng, where each source is an interface of its own."""
        self.two_workers(["--format", "pcapng"])

    def two_workers(self, args):
        import test_flows as tf
        a, b = self.mixed(8), tf.mix(9, self.TCP[:5], self.UDP[:3], base=100)
        sa, sb = self.path("a.pcap"), self.path("b.pcap")
        tf.to_pcap(sa, a)
        tf.to_pcap(sb, b, start=tf.T0 + 5_000)
        s = self.run_cutoff([sa, sb], ["--workers", "2", "--flow-packets", "12"] + args)
        want = self.model(a, cutoff_packets=12)
        wb = self.model(b, cutoff_packets=12)
        self.assertFalse(set(want) & set(wb))
        want.update(wb)
        self.check(want, s)

    def test_duplicates(self):
        """--dedup: each flow's duplicates in its index entries, apart from
        what was cut."""
        import test_flows as tf
        base = tf.mix(6, [3000, 9000, 700], [30, 5, 60])
        pkts = []
        for k, (key, d) in enumerate(base):
            pkts.append(pcaplib.Packet(tf.T0 + k * 100_000, d))
            pkts.append(pcaplib.Packet(tf.T0 + k * 100_000 + 3_000, d))
        src = self.path("twice.pcap")
        pcaplib.write_pcap(src, pkts, nano=True)
        s = self.run_cutoff([src], ["--dedup"])
        got, _ = self.indexed()
        want = {}
        for key, d in base:
            w = want.setdefault(self.model_id(key), [0, 0, 0, 0, 0])
            w[0] += 1
            w[3] += 1
            w[4] += len(d)
        self.assertEqual(got, want)
        self.assertEqual(sum(g[3] for g in got.values()), s["packets_duplicate"])


if __name__ == "__main__":
    capdtest.main()
