"""capq: the packets it finds are tcpdump -r's, packet for packet.

Stores are written by capd from bundled captures (tests/data) through
pcap: sources: several files (-C), two writers, pcap and pcapng, --nano,
--snaplen, with VLAN/QinQ, IPv6 extension headers and fragments. For many
expressions and time windows, capq's output must equal tcpdump -r over each
file with the same expression, cut to the same window (since <= ts < until)
and merged by (timestamp, file order, position in the file): timestamps to
the nanosecond, captured and wire lengths, bytes.

Also: the tcpdump test corpus through --reindex; every bad input (missing,
truncated, corrupt and newer-version indexes: one warning naming the file
and the same answer; a capture cut short; unreadable directory, bad time,
bad expression: one line, exit 1; non-capture files ignored and listed by
--explain); kill -9 during a capture then --reindex of the hidden file; the
file being written; --flows as text and JSON; --explain skipping blocks;
capctl query.
"""

import json
import os
import threading
import stat
import shutil
import signal
import socket
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capdtest  # noqa: E402
import pcaplib  # noqa: E402
from capdtest import BUILD_DIR, CORPUS_DIR, DATA_DIR, CapdTestCase  # noqa: E402

CAPQ = os.path.join(BUILD_DIR, "query", "capq")
CAPCTL = os.path.join(BUILD_DIR, "ctl", "capctl")
TIMEOUT = 120

# Bundled captures with the shapes the index must handle.
MIX = os.path.join(DATA_DIR, "demo", "web-mix.pcap")  # many TCP/UDP flows
SHAPES = [
    "802.1ad_QinQ.pcap",        # two VLAN tags
    "bigtcp-ipv6-hbh.pcap",     # IPv6 hop-by-hop extension header
    "ipv6-srh-ext-header.pcap", # IPv6 routing header
    "ip6_frag_asan.pcap",       # IPv6 fragments
    "ipv6_no_next_header.pcap",
    "icmp6-rfc8335.pcap",
    "icmp_ext_oob_poc.pcap",
]

# A damaged corpus file whose microsecond field is above a million: tcpdump's
# own conversion to nanoseconds wraps it, so the oracle cannot be compared.
READER_DIFFERS = {"rx_serviceid_oobr.pcap"}

EXPRESSIONS = [
    "",
    "tcp",
    "udp",
    "icmp",
    "ip",
    "ip6",
    "arp",
    "vlan",
    "vlan and ip",
    "icmp6",
    "tcp port 80",
    "port 80",
    "udp port 53",
    "dst port 53",
    "src port 40000",
    "host 198.18.0.80",
    "src host 198.18.1.1",
    "dst host 198.18.0.80",
    "net 198.18.0.0/24",
    "src net 198.18.1.0/24 and dst port 80",
    "portrange 40000-40050",
    "not tcp",
    "tcp and not port 80",
    "tcp or udp",
    "not (host 198.18.0.80 or port 53)",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] = tcp-syn|tcp-ack",
    "tcp[13] & 4 != 0",
    "tcp[(tcp[12]>>2):4] = 0x47455420",
    "len > 500",
    "less 100",
    "greater 1000",
    "ip[6:2] & 0x3fff != 0",
    "ip proto 17",
    "ip6 and tcp",
    "ip6 proto 0",
    "ether broadcast",
    "ip6 host 2001:db8::1",
    # Looked up by address (FlowFilter::required_addresses()): the 5-tuple,
    # either direction, IPv6 with extension headers and fragments, tags,
    # and an ARP path that needs no address.
    "host 198.18.1.1 and host 198.18.0.80 and port 40000 and port 80",
    "src host 198.18.1.1 or dst host 198.18.0.80",
    "(host 198.18.1.1 or host 198.18.0.80) and tcp",
    "host 2604:1380:4091:ce00::d",
    "ip6 host a:b:c:12::1",
    "host 2243:80:1400:100:19:ffff:ffff:fffb",
    "vlan and vlan and host 172.21.79.100",
]


def run(cmd, timeout=TIMEOUT, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def capq(*args, timeout=TIMEOUT):
    return run([CAPQ] + list(args), timeout=timeout)


def parse_output(b, path):
    with open(path, "wb") as f:
        f.write(b)
    return pcaplib.read_capture(path)


def capture_files(d):
    """The files capq reads in DIR, in its order (by name, hidden live files
    included, indexes not)."""
    out = []
    for n in sorted(os.listdir(d)):
        if n.endswith((".idx", ".idx.partial")):
            continue
        if n.startswith(".") and not n.endswith(".partial"):
            continue
        p = os.path.join(d, n)
        if os.path.isfile(p) and pcaplib.file_kind(p) is not None:
            out.append(p)
    return out


class Oracle:
    """tcpdump -r per file, cached by (file, expression)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.cache = {}

    def records(self, path, expr):
        key = (path, expr)
        if key not in self.cache:
            out = os.path.join(self.tmp, f"oracle{len(self.cache)}.pcap")
            cmd = ["tcpdump", "--time-stamp-precision=nano", "-r", path, "-w", out]
            if expr:
                cmd.append(expr)
            p = run(cmd)
            err = p.stderr.decode("utf-8", "replace")
            # A file cut short: tcpdump reads up to it and complains.
            if p.returncode != 0 and "truncated" not in err:
                raise AssertionError(f"tcpdump {cmd}: {err}")
            self.cache[key] = pcaplib.read_capture(out).records
        return self.cache[key]

    def expect(self, files, expr, since=None, until=None):
        keyed = []
        for order, f in enumerate(files):
            for i, r in enumerate(self.records(f, expr)):
                if since is not None and r.ts_ns < since:
                    continue
                if until is not None and r.ts_ns >= until:
                    continue
                keyed.append(((r.ts_ns, order, i), r))
        keyed.sort(key=lambda x: x[0])
        return [r for _, r in keyed]


def precision_of(cap):
    return {"pcap-us": "us", "pcap-ns": "ns", "pcapng": "pcapng"}[cap.kind]


def ns_text(ns):
    return f"{ns // 10**9}.{ns % 10**9:09d}"


class CapqCase(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.oracle = Oracle(self.tmp)
        self.outn = 0

    def query(self, args, expect_rc=0):
        p = capq(*args)
        self.assertEqual(p.returncode, expect_rc,
                         f"capq {' '.join(args)}: {p.stderr.decode(errors='replace')}")
        return p

    def query_records(self, args):
        p = self.query(args)
        self.outn += 1
        return parse_output(p.stdout, self.path(f"out{self.outn}.pcap")), p

    def assertSameAsTcpdump(self, inputs, files, expr, since=None, until=None, extra=()):
        args = []
        for i in inputs:
            args += ["-r", i]
        if since is not None:
            args += ["--since", ns_text(since)]
        if until is not None:
            args += ["--until", ns_text(until)]
        args += list(extra)
        if expr:
            args.append(expr)
        cap, p = self.query_records(args)
        want = self.oracle.expect(files, expr, since, until)
        msg = capdtest.record_mismatch(want, cap.records, precision_of(cap),
                                       f"capq {' '.join(args)}: ")
        self.assertIsNone(msg, msg)
        return cap, p

    def make_store(self, name, sources, extra):
        d = self.path(name)
        os.mkdir(d)
        suffix = ".pcapng" if "pcapng" in extra else ".pcap"
        args = ["-q", "-w", os.path.join(d, "cap" + suffix)] + list(extra)
        for s in sources:
            args += ["-i", f"pcap:{s}"]
        r = self.capd(args)
        self.assertCapdOk(r, quiet=True)
        return d


def sources():
    return [MIX] + [os.path.join(CORPUS_DIR, s) for s in SHAPES
                    if os.path.exists(os.path.join(CORPUS_DIR, s))]


def windows(files):
    ts = sorted(r.ts_ns for f in files for r in pcaplib.read_capture(f).records)
    if not ts:
        return [(None, None)]
    lo, hi = ts[0], ts[-1]
    mid = ts[len(ts) // 2]
    third = lo + (hi - lo) // 3
    return [
        (None, None),
        (third, lo + 2 * (hi - lo) // 3),
        (mid, None),          # a packet's own time: included
        (None, mid),          # ... and excluded as the end
        (mid + 1, mid + 2_000_000),
    ]


@unittest.skipUnless(capdtest.have("tcpdump"), "needs tcpdump")
class Differential(CapqCase):
    def check_store(self, d, exprs=EXPRESSIONS, reindex=True):
        files = capture_files(d)
        self.assertGreater(len(files), 0)
        if reindex:
            p = self.query(["--reindex"] + files)
            self.assertEqual(len(p.stdout.decode().splitlines()), len(files))
        wins = windows(files)
        for expr in exprs:
            for since, until in wins:
                with self.subTest(expr=expr, since=since, until=until):
                    _, p = self.assertSameAsTcpdump([d], files, expr, since, until)
                    if reindex:
                        self.assertEqual(p.stderr, b"", "indexed store: no warning")

    def test_pcap_two_writers_rotating(self):
        d = self.make_store("s1", sources(), ["--writers", "2", "--workers", "2", "-C", "0.1"])
        self.assertGreater(len(capture_files(d)), 3)
        self.check_store(d)

    def test_pcapng_snaplen_two_writers(self):
        d = self.make_store("s2", sources(),
                            ["--writers", "2", "--workers", "2", "--format", "pcapng", "-C",
                             "0.1", "-s", "96"])
        self.check_store(d)
        # And pcapng out: the same packets.
        files = capture_files(d)
        self.assertSameAsTcpdump([d], files, "tcp", extra=["--format", "pcapng"])

    def test_nano_one_writer(self):
        d = self.make_store("s3", sources(), ["--nano", "-C", "0.2"])
        self.check_store(d)

    def test_without_index_same_answer_with_warnings(self):
        d = self.make_store("s4", sources(), ["--nano", "-C", "0.2"])
        for f in os.listdir(d):
            if f.endswith(".idx"):
                os.unlink(os.path.join(d, f))
        files = capture_files(d)
        for expr in ["", "tcp port 80", "vlan", "ip6"]:
            with self.subTest(expr=expr):
                _, p = self.assertSameAsTcpdump([d], files, expr)
                warn = p.stderr.decode().splitlines()
                self.assertEqual(len(warn), len(files), warn)
                for f, w in zip(files, warn):
                    self.assertEqual(w, f"capq: warning: {f}: no index; scanning")

    def test_files_given_one_by_one_keep_their_order(self):
        d = self.make_store("s5", sources(), ["--writers", "2", "--workers", "2", "-C", "0.1"])
        files = list(reversed(capture_files(d)))
        self.query(["--reindex"] + files)
        for expr in ["", "udp", "host 198.18.0.80"]:
            with self.subTest(expr=expr):
                self.assertSameAsTcpdump(files, files, expr)

    def test_corpus_through_reindex(self):
        d = self.path("corpus")
        os.mkdir(d)
        names = sorted(f for f in os.listdir(CORPUS_DIR) if f.endswith((".pcap", ".pcapng")))
        for n in names:
            shutil.copy(os.path.join(CORPUS_DIR, n), d)
        files = [os.path.join(d, n) for n in names]
        p = capq("--reindex", *files)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace")[:2000])
        self.assertEqual(len(p.stdout.decode().splitlines()), len(files))
        for expr in ["", "tcp", "udp port 53", "ip6", "vlan", "icmp", "not ip",
                     "tcp[tcpflags] & tcp-syn != 0"]:
            for f in files:
                if os.path.basename(f) in READER_DIFFERS:
                    continue
                with self.subTest(expr=expr, file=os.path.basename(f)):
                    if expr and pcaplib.read_capture(f, lenient=True).linktype != 1:
                        continue  # other link types: the expression may not compile
                    p = capq("-r", f, *([expr] if expr else []))
                    self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
                    self.assertEqual(p.stderr, b"")
                    self.outn += 1
                    cap = parse_output(p.stdout, self.path(f"c{self.outn}.pcap"))
                    want = self.oracle.expect([f], expr)
                    msg = capdtest.record_mismatch(want, cap.records, precision_of(cap),
                                                   f"{f}: ")
                    self.assertIsNone(msg, msg)


@unittest.skipUnless(capdtest.have("tcpdump"), "needs tcpdump")
class BadInput(CapqCase):
    def setUp(self):
        super().setUp()
        self.d = self.make_store("bad", sources(), ["--nano", "-C", "0.2"])
        self.files = capture_files(self.d)
        self.query(["--reindex"] + self.files)
        self.victim = self.files[0]
        self.idx = os.path.join(self.d, "." + os.path.basename(self.victim) + ".idx")
        self.assertTrue(os.path.exists(self.idx))

    def assertOneWarning(self, expr, reason):
        _, p = self.assertSameAsTcpdump([self.d], self.files, expr)
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith(f"capq: warning: {self.victim}: "), lines)
        self.assertTrue(lines[0].endswith("; scanning"), lines)
        self.assertIn(reason, lines[0])

    def test_missing_index(self):
        os.unlink(self.idx)
        self.assertOneWarning("tcp port 80", "no index")

    def test_truncated_index(self):
        with open(self.idx, "r+b") as f:
            f.truncate(os.path.getsize(self.idx) // 2)
        self.assertOneWarning("udp", "index")

    def test_corrupt_index(self):
        with open(self.idx, "r+b") as f:
            f.seek(os.path.getsize(self.idx) - 20)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        self.assertOneWarning("host 198.18.0.80", "checksum")

    def test_damage_found_when_used(self):
        # Checksums right, a flow's postings past the array: the index
        # loads (only the header, page table and blocks are checked then),
        # and the flow check at planning refuses it: the file is scanned.
        # Version 1 (plain flows), whose entries can be changed in place.
        import test_index
        self.query(["--reindex", "--index-version", "1", self.victim])
        with open(self.idx, "rb") as f:
            raw = bytearray(f.read())
        h = dict(zip(test_index.FIELDS, test_index.HEADER.unpack_from(raw)))
        self.assertGreater(h["flow_count"], 0)
        at = h["flows_offset"] + 96  # FlowEntry::postings
        struct.pack_into("<I", raw, at, h["postings_count"] + 1)
        page = 1 << h["page_shift"]
        body = h["blocks_offset"]
        for i in range(h["page_count"]):
            struct.pack_into("<I", raw, h["pages_offset"] + 4 * i,
                             test_index.crc32c(raw[body + i * page:body + (i + 1) * page]))
        h["pages_crc"] = test_index.crc32c(
            raw[h["pages_offset"]:h["pages_offset"] + 4 * h["page_count"]])
        h["header_crc"] = 0
        hdr = bytearray(test_index.HEADER.pack(*[h[k] for k in test_index.FIELDS]))
        struct.pack_into("<I", hdr, test_index.HEADER_CRC_AT, test_index.crc32c(bytes(hdr)))
        raw[:len(hdr)] = hdr
        with open(self.idx, "wb") as f:
            f.write(raw)
        # The time-only plan does not use the flows: no warning.
        _, p = self.assertSameAsTcpdump([self.d], self.files, "")
        self.assertEqual(p.stderr, b"")
        self.assertOneWarning("tcp", "postings out of range")

    def test_newer_version_index(self):
        with open(self.idx, "r+b") as f:
            f.seek(8)
            f.write(struct.pack("<I", 5))
        self.assertOneWarning("", "newer")

    def test_stale_index_of_a_file_cut_since(self):
        size = os.path.getsize(self.victim)
        with open(self.victim, "r+b") as f:
            f.truncate(size - 7)  # also cuts the last record short
        self.assertOneWarning("tcp", "stale")

    def test_capture_cut_short_reindexed(self):
        size = os.path.getsize(self.victim)
        with open(self.victim, "r+b") as f:
            f.truncate(size - 5)
        p = self.query(["--reindex", self.victim])
        self.assertIn("packets", p.stdout.decode())
        _, p = self.assertSameAsTcpdump([self.d], self.files, "")
        self.assertEqual(p.stderr, b"")

    def test_unreadable_directory(self):
        p = capq("-r", self.path("nope"), "tcp")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        self.assertEqual(p.stderr.decode(),
                         f"capq: {self.path('nope')}: No such file or directory\n")
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if capdtest.have("setpriv") and run(as_nobody + [CAPQ, "--help"]).returncode == 0:
            locked = self.path("locked")
            os.mkdir(locked, 0o700)
            p = run(as_nobody + [CAPQ, "-r", locked])
            self.assertEqual(p.returncode, 1)
            self.assertEqual(p.stdout, b"")
            self.assertEqual(p.stderr.decode(), f"capq: {locked}: Permission denied\n")

    def test_bad_time(self):
        for opt, t in [("--since", "14:05"), ("--until", "2026-13-01T00:00:00Z"),
                       ("--since", "-15x")]:
            with self.subTest(t=t):
                p = capq("-r", self.d, opt, t)
                self.assertEqual(p.returncode, 1)
                self.assertEqual(p.stdout, b"")
                lines = p.stderr.decode().splitlines()
                self.assertEqual(len(lines), 1, lines)
                self.assertTrue(lines[0].startswith(f"capq: {opt}: bad time '{t}'"), lines)

    def test_bad_expression(self):
        out = self.path("never.pcap")
        p = capq("-r", self.d, "-w", out, "tcp", "port", "eighty")
        self.assertEqual(p.returncode, 1)
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("capq: tcp port eighty: "), lines)
        self.assertFalse(os.path.exists(out))
        self.assertEqual([f for f in os.listdir(self.tmp) if "never" in f], [])

    def test_non_captures_ignored_and_explained(self):
        with open(os.path.join(self.d, "notes.txt"), "w") as f:
            f.write("not a capture\n")
        os.symlink(self.victim, os.path.join(self.d, "link.pcap"))
        os.mkdir(os.path.join(self.d, "sub"))
        self.assertSameAsTcpdump([self.d], self.files, "udp")
        p = self.query(["-r", self.d, "--explain", "udp"])
        text = p.stdout.decode()
        self.assertIn(f"ignored: {os.path.join(self.d, 'notes.txt')} (not a pcap or pcapng file)",
                      text)
        self.assertIn(f"ignored: {os.path.join(self.d, 'link.pcap')} (symbolic link", text)
        self.assertIn(f"ignored: {os.path.join(self.d, 'sub')} (not a regular file)", text)

    def test_mixed_link_types_need_pcapng(self):
        # Raw IP (LINKTYPE_RAW), timestamps among the store's.
        first = pcaplib.read_capture(self.victim).records[0].ts_ns
        other = self.path("raw.pcap")
        pkts = []
        for i in range(20):
            frame = pcaplib.eth_ipv4_udp(b"raw%d" % i, sport=41000 + i)[14:]
            pkts.append(pcaplib.Packet(first + i * 1000 + 1, frame))
        pcaplib.write_pcap(other, pkts, nano=True, linktype=101)
        p = capq("-r", self.victim, "-r", other)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        self.assertEqual(p.stderr.decode(),
                         "capq: the inputs have different link types: use --format pcapng\n")
        self.query(["--reindex", other])
        cap, _ = self.assertSameAsTcpdump([self.victim, other], [self.victim, other], "",
                                          extra=["--format", "pcapng"])
        self.assertEqual(len({i.linktype for i in cap.interfaces}), 2)

    def test_terminal_refused(self):
        import pty
        master, slave = pty.openpty()
        try:
            p = subprocess.run([CAPQ, "-r", self.d], stdout=slave, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=TIMEOUT)
        finally:
            os.close(slave)
            os.close(master)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stderr.decode(),
                         "capq: not writing a capture to a terminal: use -w FILE, or a pipe\n")

    def test_explain_says_why_a_file_is_scanned(self):
        os.unlink(self.idx)
        p = self.query(["-r", self.d, "--explain", "udp"])
        self.assertIn(f"{self.victim}: scanned (no index)", p.stdout.decode())
        self.assertEqual(p.stderr.decode(), f"capq: warning: {self.victim}: no index; scanning\n")

    def test_closed_pipe_quiet(self):
        # A closed pipe: head takes 100 bytes and leaves.
        p = subprocess.run(f"'{CAPQ}' -r '{self.d}' | head -c 100 | wc -c", shell=True,
                           capture_output=True, timeout=TIMEOUT)
        self.assertEqual(p.stdout.decode().strip(), "100")
        self.assertEqual(p.stderr, b"")


@unittest.skipUnless(capdtest.have("tcpdump"), "needs tcpdump")
class OutputTargets(CapqCase):
    """-w to something that is not a regular file is written as it is, as
    tcpdump does: a device or a pipe must never be replaced by a file."""

    def store(self):
        return self.make_store("store", [MIX], [])

    def test_device_stays_a_device(self):
        d = self.store()
        dev = self.path("null")
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        self.query(["-r", d, "-w", dev, "tcp"])
        self.assertTrue(stat.S_ISCHR(os.lstat(dev).st_mode), "the device was replaced")
        self.assertEqual([f for f in os.listdir(self.tmp) if ".capq-" in f], [])

    def test_fifo_gets_the_capture(self):
        d = self.store()
        fifo = self.path("fifo")
        os.mkfifo(fifo)
        got = []

        def drain():
            with open(fifo, "rb") as f:
                got.append(f.read())
        t = threading.Thread(target=drain)
        t.start()
        self.query(["-r", d, "-w", fifo, "udp"])
        t.join(TIMEOUT)
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode), "the pipe was replaced")
        self.assertTrue(got and got[0][:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"),
                        "the reader got no capture")

    def test_symlink_is_written_through(self):
        d = self.store()
        target = self.path("target.pcap")
        with open(target, "wb") as f:
            f.write(b"old")
        link = self.path("link.pcap")
        os.symlink(target, link)
        self.query(["-r", d, "-w", link, "tcp"])
        self.assertTrue(os.path.islink(link), "the link was replaced")
        with open(target, "rb") as f:
            self.assertNotEqual(f.read(4), b"old")


class Explain(CapqCase):
    def test_one_flow_skips_blocks(self):
        d = self.make_store("e", [MIX], ["--nano"])
        files = capture_files(d)
        self.query(["--reindex"] + files)
        # One flow of the mix, by 5-tuple.
        cap = pcaplib.read_capture(files[0])
        expr = "src host 198.18.1.1 and src port 40000 and dst host 198.18.0.80 and tcp"
        self.assertSameAsTcpdump([d], files, expr)
        p = self.query(["-r", d, "--explain", expr])
        self.assertEqual(p.stderr, b"")
        text = p.stdout.decode()
        total = [l for l in text.splitlines() if l.startswith("total:")]
        self.assertEqual(len(total), 1, text)
        words = total[0].replace(",", "").replace(";", "").split()
        i = words.index("blocks")
        sel, all_ = int(words[i + 1]), int(words[i + 3])
        self.assertGreater(all_, sel, text)
        self.assertGreater(sel, 0, text)
        self.assertGreater(len(cap.records), 0)
        # Explain with packets to stdout goes to stderr.
        p = self.query(["-r", d, "--explain", "-w", "-", expr])
        self.assertIn("total:", p.stderr.decode())
        self.assertEqual(p.stdout[:4], struct.pack("<I", 0xa1b23c4d))

    def test_address_lookup_in_the_plan(self):
        d = self.make_store("a", [MIX], [])
        files = capture_files(d)
        self.query(["--reindex"] + files)
        five = "host 198.18.1.1 and host 198.18.0.80 and port 40000 and port 80"
        self.assertSameAsTcpdump([d], files, five)
        text = self.query(["-r", d, "--explain", five]).stdout.decode()
        # Both addresses on every path: looked up as a pair, by source only.
        pair = "flows looked up by 1 address pair: "
        lines = [l for l in text.splitlines() if pair in l]
        self.assertEqual(len(lines), len(files), text)
        for l in lines:
            cand = int(l.split(pair)[1].split()[0])
            self.assertGreater(cand, 0, l)
        # Either address: both looked up, by source and by destination.
        either = "host 198.18.1.1 or host 198.18.0.80"
        self.assertSameAsTcpdump([d], files, either)
        text2 = self.query(["-r", d, "--explain", either]).stdout.decode()
        lines2 = [l for l in text2.splitlines() if "flows looked up by 2 addresses: " in l]
        self.assertEqual(len(lines2), len(files), text2)
        # The pair's candidates are among the addresses' (fewer or as many).
        cands2 = sum(int(l.split("flows looked up by 2 addresses: ")[1].split()[0])
                     for l in lines2)
        # Fewer candidates than flows: the lookup skipped some unevaluated.
        text_all = self.query(["-r", d, "--explain", "tcp"]).stdout.decode()
        total = sum(int(l.split("flows evaluated: all ")[1].split(",")[0])
                    for l in text_all.splitlines() if "flows evaluated: all " in l)
        cands = sum(int(l.split(pair)[1].split()[0]) for l in lines)
        self.assertLess(cands, total, text + text_all)
        self.assertLessEqual(cands, cands2, text + text2)
        # Not provable (a net): every flow evaluated, same answer.
        text = self.query(["-r", d, "--explain", "net 198.18.1.0/24"]).stdout.decode()
        self.assertIn("flows evaluated: all ", text)
        # Time alone looks at no flow.
        ts = sorted(r.ts_ns for f in files for r in pcaplib.read_capture(f).records)
        mid = ts[len(ts) // 2]
        text = self.query(["-r", d, "--explain", "--since", ns_text(mid)]).stdout.decode()
        self.assertIn("flows not looked at (no expression)", text)
        self.assertNotIn("flows evaluated", text)
        self.assertSameAsTcpdump([d], files, "", since=mid)


@unittest.skipUnless(capdtest.have("tcpdump"), "needs tcpdump")
class Flows(CapqCase):
    def test_text_and_json(self):
        d = self.make_store("f", [MIX], ["--writers", "2", "--workers", "2", "--nano"])
        files = capture_files(d)
        self.query(["--reindex"] + files)
        expr = "tcp port 80"
        want = [r for f in files for r in self.oracle.records(f, expr)]
        p = self.query(["-r", d, "--flows", "--json", expr])
        flows = json.loads(p.stdout)
        self.assertGreater(len(flows), 0)
        total_p = sum(f["packets"] for f in flows)
        total_b = sum(f["bytes"] for f in flows)
        self.assertEqual(total_p, len(want))
        self.assertEqual(total_b, sum(r.wirelen for r in want))
        for f in flows:
            self.assertEqual(f["proto"], 6)
            self.assertIn(80, (f["sport"], f["dport"]))
            self.assertLessEqual(f["first_ns"], f["last_ns"])
            # One entry per conversation, the lower endpoint first.
            self.assertEqual(f["directions"], "both")
            self.assertIn(" <> ", f["flow"])
            lo = (socket.inet_aton(f["src"]), f["sport"])
            hi = (socket.inet_aton(f["dst"]), f["dport"])
            self.assertLessEqual(lo, hi, f["flow"])
        keys = [(f["src"], f["sport"], f["dst"], f["dport"], tuple(f["vlan"])) for f in flows]
        self.assertEqual(len(keys), len(set(keys)))
        p = self.query(["-r", d, "--flows", expr])
        lines = p.stdout.decode().splitlines()
        self.assertTrue(lines[0].split()[:4] == ["FIRST", "LAST", "PACKETS", "BYTES"], lines[0])
        self.assertIn("both directions", lines[0])
        self.assertEqual(len(lines) - 1, len(flows))
        # A window before everything: no flow.
        p = self.query(["-r", d, "--flows", "--json", "--until", "1"])
        self.assertEqual(json.loads(p.stdout), [])


class Live(CapqCase):
    def test_packet_found_while_written_and_after_kill9(self):
        d = self.path("live")
        os.mkdir(d)
        sock = self.path("ctl.sock")
        c = capdtest.start_capd(["-i", "null:64,rate=50", "-w", os.path.join(d, "live.pcap"),
                                 "--ctl", sock, "--flush-ms", "100"], sock=sock)
        try:
            def found():
                p = capq("-r", d, "--since", "-60s", timeout=30)
                if p.returncode != 0:
                    return None
                cap = parse_output(p.stdout, self.path("live-out.pcap"))
                return cap if cap.records else None

            cap = capdtest.wait_until(found, 120, interval=0.2)
            self.assertTrue(cap, "no packet of the live file found within 120 s")
            live = [f for f in os.listdir(d) if f.endswith(".partial") and f.startswith(".")]
            self.assertTrue(live, os.listdir(d))
            # --flows of the file being written: from its records, no warning.
            p = capq("-r", d, "--flows", "--json", timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, b"")
            self.assertGreater(sum(f["packets"] for f in json.loads(p.stdout)), 0)
            # capctl query: the same store, through capd's status.
            p = run([CAPCTL, "--ctl", sock, "query", "--explain"])
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn(live[0], p.stdout.decode())
            c.proc.send_signal(signal.SIGKILL)
            c.proc.wait(timeout=30)
        finally:
            c.kill()
        hidden = [os.path.join(d, f) for f in os.listdir(d)
                  if f.startswith(".") and f.endswith(".partial")]
        self.assertEqual(len(hidden), 1, os.listdir(d))
        p = capq("--reindex", hidden[0])
        self.assertEqual(p.returncode, 0, p.stderr)
        if capdtest.have("tcpdump"):
            _, p = self.assertSameAsTcpdump([d], [hidden[0]], "")
            self.assertEqual(p.stderr, b"")


def many_flow_packets(n, t0, udp_every=0):
    """n one-packet conversations (distinct client addresses and ports), TCP
    to port 80, or every udp_every-th one UDP to port 53."""
    out = []
    for i in range(n):
        src = f"198.18.{i // 250 % 250}.{i % 250 + 1}"
        dst = f"198.19.{i % 7}.{i % 5 + 1}"
        sport = 1024 + i % 60000
        if udp_every and i % udp_every == 0:
            data = pcaplib.eth_ipv4_udp(b"q" * 12, src=src, dst=dst, sport=sport, dport=53)
        else:
            data = pcaplib.eth_ipv4_tcp(b"x" * 8, src=src, dst=dst, sport=sport, dport=80)
        out.append(pcaplib.Packet(t0 + i * 1000, data))
    return out


@unittest.skipUnless(capdtest.have("tcpdump"), "needs tcpdump")
class ColdPlan(CapqCase):
    """The plan's shortcuts for a cold cache: the flow table left unread
    when a sample shows it would skip nothing, and many files planned on
    several threads; the answer is the scan's either way."""

    def flow_store(self, name, files, flows, udp_every):
        d = self.path(name)
        os.mkdir(d)
        paths = []
        for k in range(files):
            path = os.path.join(d, f"cap{k:02d}.pcap")
            pcaplib.write_pcap(path, many_flow_packets(flows, 1767225600 * 10**9 + k * 10**9,
                                                       udp_every), nano=True)
            paths.append(path)
        self.query(["--reindex"] + paths)
        return d, paths

    def test_flow_table_read_only_when_it_can_skip(self):
        d, files = self.flow_store("s", 2, 12000, 97)
        # Most flows are TCP and every block holds many: the table cannot
        # skip a block, so it is not read; every block is, and filtered.
        _, p = self.assertSameAsTcpdump([d], files, "tcp")
        self.assertEqual(p.stderr, b"")
        text = self.query(["-r", d, "--explain", "tcp"]).stdout.decode()
        self.assertEqual(text.count("every block read, flow table not"), 2, text)
        self.assertNotIn("flows evaluated", text)
        # One flow in 97 is UDP: blocks without one are skipped through the
        # table, which is read.
        self.assertSameAsTcpdump([d], files, "udp port 53")
        text = self.query(["-r", d, "--explain", "udp port 53"]).stdout.decode()
        self.assertEqual(text.count("flows evaluated: all 12000"), 2, text)
        self.assertNotIn("flow table not", text)
        # The same with a window.
        mid = 1767225600 * 10**9 + 10**9 + 6000 * 1000
        self.assertSameAsTcpdump([d], files, "tcp", since=mid, until=mid + 3000 * 1000)

    def test_damaged_sampled_page_warns_once_and_scans(self):
        import test_index
        d, files = self.flow_store("s", 2, 12000, 97)
        idx = os.path.join(d, "." + os.path.basename(files[1]) + ".idx")
        with open(idx, "r+b") as f:
            h = dict(zip(test_index.FIELDS, test_index.HEADER.unpack_from(f.read(160))))
            f.seek(h["flows_offset"] + 40)  # the first flow, sampled first
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x5A]))
        _, p = self.assertSameAsTcpdump([d], files, "tcp")
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith(f"capq: warning: {files[1]}: "), lines)
        self.assertIn("checksum", lines[0])
        self.assertTrue(lines[0].endswith("; scanning"), lines)

    def test_pair_lookup_damaged_group_warns_once_and_scans(self):
        import socket
        import test_index
        d, files = self.flow_store("p", 3, 12000, 97)
        # Flow 4: 198.18.0.5:1028 to 198.19.4.5:80, the only flow between
        # the two; looked up by the pair in every file.
        five = "host 198.19.4.5 and host 198.18.0.5 and port 1028 and port 80"
        self.assertSameAsTcpdump([d], files, five)
        text = self.query(["-r", d, "--explain", five]).stdout.decode()
        self.assertEqual(text.count("flows looked up by 1 address pair: 1 candidate, 1 may "
                                    "match"), 3, text)
        # The group holding it damaged in the second file's index (its
        # frame's checksum no longer agrees): that file warns and is read.
        idx = os.path.join(d, "." + os.path.basename(files[1]) + ".idx")
        h, _, raw = test_index.read_index(idx)
        x, fences = test_index.read_flow_layout(h, raw)
        flows = test_index.read_flows(idx)
        src = socket.inet_aton("198.18.0.5") + bytes(12)
        k = next(i for i, f in enumerate(flows) if f["src"] == src)
        _, off, nbytes, _, _ = fences[k // x["group_flows"]]
        at = h["flows_offset"] + off + nbytes // 2
        with open(idx, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x5A]))
        _, p = self.assertSameAsTcpdump([d], files, five)
        lines = p.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith(f"capq: warning: {files[1]}: "), lines)
        self.assertIn("checksum", lines[0])
        self.assertTrue(lines[0].endswith("; scanning"), lines)

    def test_many_files_planned_together(self):
        # More files than planning threads, two of them with a bad index:
        # one warning each, in file order, and the scan's answer.
        d, files = self.flow_store("m", 40, 60, 3)
        os.unlink(os.path.join(d, "." + os.path.basename(files[7]) + ".idx"))
        idx = os.path.join(d, "." + os.path.basename(files[31]) + ".idx")
        with open(idx, "r+b") as f:
            f.seek(os.path.getsize(idx) - 20)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        for expr in ("tcp", "udp and host 198.18.0.4", "host 198.18.0.1 and port 1024", ""):
            _, p = self.assertSameAsTcpdump([d], files, expr)
            lines = p.stderr.decode().splitlines()
            self.assertEqual(len(lines), 2, (expr, lines))
            self.assertEqual(lines[0], f"capq: warning: {files[7]}: no index; scanning", lines)
            self.assertTrue(lines[1].startswith(f"capq: warning: {files[31]}: "), lines)
            self.assertIn("checksum", lines[1])

    def test_many_files_flows_listed_together(self):
        # --flows indexes its files on the same threads: the same two
        # warnings in file order, and every packet of the filter counted
        # once (the damaged and missing indexes rebuilt from the files).
        d, files = self.flow_store("l", 40, 60, 3)
        os.unlink(os.path.join(d, "." + os.path.basename(files[7]) + ".idx"))
        idx = os.path.join(d, "." + os.path.basename(files[31]) + ".idx")
        with open(idx, "r+b") as f:
            f.seek(os.path.getsize(idx) - 20)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        for expr in ("udp", "host 198.18.0.1 and port 1024"):
            want = [r for f in files for r in self.oracle.records(f, expr)]
            p = self.query(["-r", d, "--flows", "--json", expr])
            flows = json.loads(p.stdout)
            self.assertEqual(sum(f["packets"] for f in flows), len(want), expr)
            self.assertEqual(sum(f["bytes"] for f in flows), sum(r.wirelen for r in want), expr)
            lines = p.stderr.decode().splitlines()
            self.assertEqual(len(lines), 2, (expr, lines))
            self.assertEqual(lines[0], f"capq: warning: {files[7]}: no index; scanning", lines)
            self.assertTrue(lines[1].startswith(f"capq: warning: {files[31]}: "), lines)


if __name__ == "__main__":
    capdtest.main()
