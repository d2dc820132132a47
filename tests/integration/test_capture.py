#!/usr/bin/env python3
"""capd's capture pipeline on generated captures.

- fidelity: odd-nanosecond timestamps, snaplen-cut frames (caplen < len),
  jumbo and oversized frames, empty and tiny frames, timestamp edges, both
  byte orders, pcapng inputs; each copied to pcap (us), pcap --nano and
  pcapng, compared record by record at the output's precision;
- other link types: accepted with the link type kept, or refused cleanly;
- -s SNAPLEN;
- --format pcapng: interface blocks naming the source and the filter,
  nanosecond packet blocks, statistics blocks at close, read by tshark.
"""

import os

import capdtest
import gencaps
import pcaplib
from capdtest import CapdTestCase, record_mismatch

OUTPUTS = [  # (extra capd arguments, file suffix, precision, expected kind)
    ([], ".pcap", "us", "pcap-us"),
    (["--nano"], ".pcap", "ns", "pcap-ns"),
    (["--format", "pcapng"], ".pcapng", "pcapng", "pcapng"),
]


class Fidelity(CapdTestCase):
    def copy_and_compare(self, src, outputs=OUTPUTS, expect=None, extra=()):
        """Runs capd on src once per output format and compares every record
        with what libpcap reads from src. Returns {precision: Capture}."""
        want = expect if expect is not None else pcaplib.as_libpcap_reads(
            pcaplib.read_capture(src))
        got_all = {}
        base = os.path.splitext(os.path.basename(src))[0]
        for args, suffix, precision, kind in outputs:
            out = self.path(f"out-{base}-{precision}{suffix}")
            cmd = ["-q", "-i", f"pcap:{src}", "-w", out] + list(args) + list(extra)
            with self.subTest(output=precision):
                run = self.capd(cmd)
                self.assertCapdOk(run, quiet=True)
                got = self.assertWhole(out)
                self.assertEqual(got.kind, kind)
                self.assertIsNone(record_mismatch(want, got.records, precision),
                                  "capd " + " ".join(cmd))
                if capdtest.have("tcpdump"):
                    n, err = capdtest.tcpdump_count(out)
                    self.assertIsNone(err)
                    self.assertEqual(n, len(want), "tcpdump count")
                if capdtest.have("tshark"):
                    rows, err = capdtest.tshark_fields(out, ["frame.len", "frame.cap_len"])
                    self.assertIsNone(err)
                    self.assertEqual([(int(a), int(b)) for a, b in rows],
                                     [(r.wirelen, r.caplen) for r in got.records],
                                     "tshark frame.len/frame.cap_len")
                got_all[precision] = got
        self.assertNoHidden(self.tmp)
        return got_all

    def test_mixed_nanosecond_input(self):
        pkts, _ = gencaps.mixed(2000)
        self.copy_and_compare(gencaps.write(self.path("mixed-ns.pcap"), pkts, nano=True))

    def test_mixed_microsecond_input(self):
        pkts, _ = gencaps.mixed(500, seed=3)
        self.copy_and_compare(gencaps.write(self.path("mixed-us.pcap"), pkts, nano=False))

    def test_big_endian_inputs(self):
        pkts, _ = gencaps.mixed(300, seed=4)
        for nano in (False, True):
            with self.subTest(nano=nano):
                self.copy_and_compare(gencaps.write(self.path(f"be-{nano}.pcap"), pkts,
                                                    nano=nano, endian=">"))

    def test_pcapng_inputs(self):
        pkts, _ = gencaps.mixed(500, seed=5)
        for resol in (9, 6):
            with self.subTest(if_tsresol=resol):
                src = self.path(f"in-{resol}.pcapng")
                pcaplib.write_pcapng(src, pkts, tsresol=resol)
                self.copy_and_compare(src)

    def test_snaplen_cut_frames(self):
        """caplen < wire length: both kept."""
        src = gencaps.write(self.path("snapcut.pcap"), gencaps.snapcut(300), snaplen=96)
        got = self.copy_and_compare(src)
        for cap in got.values():
            self.assertTrue(all(r.caplen == 96 < r.wirelen for r in cap.records))

    def test_jumbo_and_oversized_frames(self):
        """9000-byte jumbo frames and frames up to 262144 bytes (libpcap's
        maximum) arrive in chained mbufs and must be copied whole."""
        src = gencaps.write(self.path("big.pcap"), gencaps.big_frames())
        got = self.copy_and_compare(src)
        self.assertIn(9000, [r.caplen for r in got["ns"].records])

    def test_empty_and_tiny_frames(self):
        src = gencaps.write(self.path("tiny.pcap"), gencaps.tiny_frames())
        self.copy_and_compare(src)

    def test_timestamp_edges(self):
        src = gencaps.write(self.path("edges.pcap"), gencaps.edge_timestamps())
        self.copy_and_compare(src)

    def test_timestamps_after_2038(self):
        """pcap seconds are unsigned 32-bit: 2^31..2^32-1 are valid times
        (2038..2106). tcpdump's corpus has such files (time_2039.pcap...)."""
        src = gencaps.write(self.path("y2038.pcap"), gencaps.after_2038())
        self.copy_and_compare(src)

    def test_wire_length_below_caplen(self):
        """A record whose wire length is below its captured length (0 in
        fuzzed captures) is copied as it is."""
        src = gencaps.write(self.path("short-len.pcap"), gencaps.wirelen_below_caplen())
        self.copy_and_compare(src)

    def test_header_only_capture(self):
        """A capture with no packets is a valid input: the output is a valid,
        empty capture file."""
        src = gencaps.write(self.path("empty.pcap"), [])
        got = self.copy_and_compare(src, expect=[])
        for cap in got.values():
            self.assertEqual(cap.records, [])

    def test_several_sources_into_one_pcap(self):
        """Two pcap: sources into one pcap file: every packet once, each
        source's packets in their own order."""
        a, _ = gencaps.mixed(700, source=1)
        b, _ = gencaps.mixed(900, source=2)
        sa = gencaps.write(self.path("a.pcap"), a)
        sb = gencaps.write(self.path("b.pcap"), b)
        out = self.path("ab.pcap")
        run = self.capd(["-q", "--nano", "-i", f"pcap:{sa}", "-i", f"pcap:{sb}", "-w", out])
        self.assertCapdOk(run, quiet=True)
        got = self.assertWhole(out)
        for source, pkts in ((1, a), (2, b)):
            mine = [r for r in got.records if gencaps.find_tag(r.data)[0] == source]
            want = [pcaplib.Record(p.ts_ns, len(p.data), len(p.data), p.data) for p in pkts]
            self.assertIsNone(record_mismatch(want, mine, "ns", f"source {source}: "))
        self.assertEqual(len(got.records), len(a) + len(b))


class LinkTypes(CapdTestCase):
    """capd has no link-type restriction for pcap: sources without a
    filter; a file of another link type must either be copied with its link
    type, or be refused with one line and no output."""

    CASES = [("raw", 101, gencaps.raw_ipv4_frames), ("sll", 113, gencaps.sll_frames),
             ("null", 0, gencaps.null_frames)]

    def assertRefusedCleanly(self, run):
        self.assertNotEqual(run.rc, 0, run.describe())
        self.assertEqual(len(run.stderr_lines), 1, run.describe())
        self.assertEqual([f for f in capdtest.listdir(self.tmp) if not f.startswith("in-")], [],
                         "a refused run leaves no file")

    def test_other_link_types(self):
        for name, linktype, make in self.CASES:
            src = gencaps.write(self.path(f"in-{name}.pcap"), make(20), linktype=linktype)
            for args, suffix, precision, _kind in OUTPUTS:
                out = self.path(f"{name}-{precision}{suffix}")
                with self.subTest(linktype=linktype, output=precision):
                    run = self.capd(["-q", "-i", f"pcap:{src}", "-w", out] + args)
                    if run.rc != 0:
                        self.assertRefusedCleanly(run)
                        continue
                    got = self.assertWhole(out)
                    self.assertEqual([i.linktype for i in got.interfaces], [linktype],
                                     f"output link type (input LINKTYPE {linktype}); "
                                     f"capd -i pcap:{src} -w {out} {' '.join(args)}")
                    want = pcaplib.as_libpcap_reads(pcaplib.read_capture(src))
                    self.assertIsNone(record_mismatch(want, got.records, precision))
                    os.unlink(out)

    def test_filter_on_raw_ip(self):
        """A filter compiles for the sources' link type (here raw IPv4)."""
        pkts = gencaps.raw_ipv4_frames(20)  # even: UDP, odd: TCP
        src = gencaps.write(self.path("in-raw.pcap"), pkts, linktype=101)
        out = self.path("raw-udp.pcap")
        run = self.capd(["-q", "--nano", "-i", f"pcap:{src}", "-w", out, "udp"])
        if run.rc != 0:
            self.assertRefusedCleanly(run)
            return
        got = self.assertWhole(out)
        want = [pcaplib.Record(p.ts_ns, len(p.data), len(p.data), p.data) for p in pkts[0::2]]
        self.assertIsNone(record_mismatch(want, got.records, "ns"))

    def test_mixed_link_types(self):
        eth, _ = gencaps.mixed(50)
        s_eth = gencaps.write(self.path("in-eth.pcap"), eth)
        s_raw = gencaps.write(self.path("in-raw.pcap"), gencaps.raw_ipv4_frames(30), linktype=101)
        both = ["-i", f"pcap:{s_eth}", "-i", f"pcap:{s_raw}"]
        with self.subTest(case="pcap output cannot hold two link types"):
            run = self.capd(["-q", "-w", self.path("mix.pcap")] + both)
            self.assertRefusedCleanly(run)
        with self.subTest(case="a filter needs one link type"):
            run = self.capd(["-q", "--format", "pcapng", "-w", self.path("mix.pcapng")] + both
                            + ["udp"])
            self.assertRefusedCleanly(run)
        with self.subTest(case="pcapng holds one interface per link type"):
            out = self.path("mix.pcapng")
            run = self.capd(["-q", "--format", "pcapng", "-w", out] + both)
            self.assertCapdOk(run, quiet=True)
            got = self.assertWhole(out)
            self.assertEqual([i.linktype for i in got.interfaces], [1, 101])
            self.assertEqual(sum(1 for r in got.records if r.ifid == 0), 50)
            self.assertEqual(sum(1 for r in got.records if r.ifid == 1), 30)
            if capdtest.have("tshark"):
                rows, err = capdtest.tshark_fields(out, ["frame.number"])
                self.assertIsNone(err)
                self.assertEqual(len(rows), 80)


class LongRecords(CapdTestCase):
    """libpcap reads records far longer than 262144 bytes for some link
    types (D-Bus: up to 128 MiB). capd keeps the first 262144 bytes and the
    wire length, counts the record, and goes on; it never waits forever for
    mbufs the pool cannot give."""

    DBUS = 231

    def test_record_longer_than_the_pool_is_cut_and_counted(self):
        big = 24 << 20  # more than the whole mbuf pool of a one-file capd
        pkts = [pcaplib.Packet(1_700_000_000_000_000_000, b"\x01" * 60),
                pcaplib.Packet(1_700_000_000_000_001_000, bytes(range(256)) * (big // 256)),
                pcaplib.Packet(1_700_000_000_000_002_000, b"\x02" * 70)]
        src = self.path("in-dbus.pcap")
        pcaplib.write_pcap(src, pkts, nano=True, snaplen=128 << 20, linktype=self.DBUS)
        out, stats = self.path("out.pcap"), self.path("stats.json")
        run = self.capd(["-q", "--nano", "-i", f"pcap:{src}", "-w", out, "--stats-json", stats],
                        timeout=120)
        self.assertCapdOk(run, quiet=True)
        got = self.assertWhole(out)
        self.assertEqual([(r.caplen, r.wirelen) for r in got.records],
                         [(60, 60), (262144, big), (70, 70)])
        self.assertEqual(got.records[1].data, pkts[1].data[:262144])
        s = capdtest.read_json(stats)
        self.assertEqual(s["sources"][0]["truncated"], 1)
        self.assertEqual(s["packets_written"], 3)


class Snaplen(CapdTestCase):
    def check(self, src, snaplen, args=(), out_snaplen=None):
        cap = pcaplib.read_capture(src)
        inp = pcaplib.as_libpcap_reads(cap)
        for fmt_args, suffix, precision, _kind in OUTPUTS:
            out = self.path(f"s{snaplen}-{os.path.basename(src)}-{precision}{suffix}")
            cmd = ["-q", "-s", str(snaplen), "-i", f"pcap:{src}", "-w", out] + fmt_args + list(args)
            with self.subTest(src=os.path.basename(src), output=precision):
                run = self.capd(cmd)
                self.assertCapdOk(run, quiet=True)
                got = self.assertWhole(out)
                eff = out_snaplen or snaplen
                self.assertEqual(got.snaplen, eff, "snapshot length in the file header")
                self.assertTrue(all(r.caplen <= eff for r in got.records))
                want = [pcaplib.Record(r.ts_ns, min(r.caplen, eff), r.wirelen,
                                       r.data[:eff]) for r in inp]
                self.assertIsNone(record_mismatch(want, got.records, precision),
                                  "capd " + " ".join(cmd))

    def test_snaplen_64(self):
        pkts, _ = gencaps.mixed(1000)
        self.check(gencaps.write(self.path("mixed.pcap"), pkts), 64)
        self.check(gencaps.write(self.path("big.pcap"), gencaps.big_frames()), 64)
        self.check(gencaps.write(self.path("snap.pcap"), gencaps.snapcut(50), snaplen=96), 64)
        self.check(gencaps.write(self.path("tiny.pcap"), gencaps.tiny_frames()), 64)
        for name in ("OSPFv2_Capture_FINAL.pcapng", "pim-packet-assortment.pcap"):
            p = os.path.join(capdtest.CORPUS_DIR, name)
            if os.path.exists(p):
                self.check(p, 64)

    def test_snaplen_zero_means_maximum(self):
        """-s 0 is 262144, as in tcpdump."""
        self.check(gencaps.write(self.path("big.pcap"), gencaps.big_frames()), 0,
                   out_snaplen=262144)

    def test_snaplen_with_filter(self):
        """The filter sees the packet, the file gets snaplen bytes of it."""
        pkts, kinds = gencaps.mixed(400)
        src = gencaps.write(self.path("mixed.pcap"), pkts)
        out = self.path("udp64.pcap")
        run = self.capd(["-q", "--nano", "-s", "64", "-i", f"pcap:{src}", "-w", out, "udp"])
        self.assertCapdOk(run, quiet=True)
        got = self.assertWhole(out)
        want = [pcaplib.Record(p.ts_ns, min(64, len(p.data)), len(p.data), p.data[:64])
                for p, k in zip(pkts, kinds) if k in ("udp4", "udp6")]
        self.assertIsNone(record_mismatch(want, got.records, "ns"))


class PcapngFormat(CapdTestCase):
    def test_blocks(self):
        pkts, kinds = gencaps.mixed(1500)
        src = gencaps.write(self.path("mixed.pcap"), pkts)
        out = self.path("udp.pcapng")
        expr = "udp"
        run = self.capd(["-q", "--format", "pcapng", "-i", f"pcap:{src}", "-w", out, expr])
        self.assertCapdOk(run, quiet=True)
        got = self.assertWhole(out)
        self.assertEqual(got.sections, 1)
        self.assertIn(4, got.shb_options, "shb_userappl names the writer")
        self.assertEqual(len(got.interfaces), 1)
        idb = got.interfaces[0]
        self.assertEqual(idb.name, f"pcap:{src}", "if_name names the source")
        self.assertEqual(idb.filter, b"\0" + expr.encode(), "if_filter holds the expression")
        self.assertEqual(idb.tsresol, 9, "if_tsresol: nanoseconds")
        self.assertEqual(idb.linktype, 1)
        self.assertEqual(idb.snaplen, 262144)
        udp = [(p, k) for p, k in zip(pkts, kinds) if k in ("udp4", "udp6")]
        want = [pcaplib.Record(p.ts_ns, len(p.data), len(p.data), p.data) for p, _ in udp]
        self.assertIsNone(record_mismatch(want, got.records, "pcapng"))
        self.assertEqual(len(got.stats), 1, "one interface statistics block")
        isb = got.stats[0]
        self.assertEqual(isb.ifid, 0)
        self.assertGreater(isb.offset, max(r.offset for r in got.records),
                           "the statistics block is written at close")
        self.assertEqual(isb.counter(4, got.endian), len(pkts), "isb_ifrecv")
        self.assertEqual(isb.counter(5, got.endian), 0, "isb_ifdrop")
        self.assertEqual(isb.counter(6, got.endian), len(udp), "isb_filteraccept")
        if capdtest.have("tshark"):
            rows, err = capdtest.tshark_fields(
                out, ["frame.interface_name", "frame.time_epoch", "frame.len", "udp.srcport"])
            self.assertIsNone(err)
            self.assertEqual(len(rows), len(udp))
            self.assertEqual({r[0] for r in rows}, {f"pcap:{src}"})
            self.assertEqual([r[1] for r in rows],
                             [f"{p.ts_ns // 10**9}.{p.ts_ns % 10**9:09d}" for p, _ in udp],
                             "tshark sees the nanosecond timestamps")
            self.assertTrue(all(r[3] for r in rows), "tshark decodes every frame as UDP")

    def test_null_frames(self):
        """null:SIZE,frames=FILE: every synthetic packet is one of FILE's frames
        cut or zero-padded to SIZE, and filters see their headers."""
        frames = [pcaplib.eth_ipv4_udp(b"u" * 30, sport=40000 + i) for i in range(5)] + \
                 [pcaplib.eth_ipv4_tcp(b"GET / HTTP/1.1\r\n" * 4, sport=41000 + i) for i in range(3)]
        src = self.path("frames.pcap")
        pcaplib.write_pcap(src, [pcaplib.Packet(10**9 + i, f, len(f)) for i, f in enumerate(frames)])
        size = 64
        want = {(f[:size] + bytes(max(0, size - len(f)))) for f in frames}
        for expr, keep in (([], want), (["tcp"], {w for w in want if w[23] == 6})):
            with self.subTest(filter=expr):
                out = self.path(f"null-frames-{len(expr)}.pcap")
                run = self.capd(["-q", "-i", f"null:{size},frames={src}", "-c", "20000",
                                 "-w", out] + expr)
                self.assertCapdOk(run, quiet=True)
                got = self.assertWhole(out)
                self.assertEqual(len(got.records), 20000)
                seen = {r.data for r in got.records}
                self.assertLessEqual(seen, keep, "only the file's frames, cut to the size")
                self.assertEqual(seen, keep, "every frame of the file shows up")
                self.assertTrue(all(r.wirelen == size for r in got.records))


    def test_two_interfaces(self):
        a, _ = gencaps.mixed(300, source=1)
        b, _ = gencaps.mixed(200, source=2)
        sa = gencaps.write(self.path("a.pcap"), a)
        sb = gencaps.write(self.path("b.pcap"), b, nano=False)
        out = self.path("ab.pcapng")
        run = self.capd(["-q", "--format", "pcapng", "-i", f"pcap:{sa}", "-i", f"pcap:{sb}",
                         "-w", out])
        self.assertCapdOk(run, quiet=True)
        got = self.assertWhole(out)
        self.assertEqual([i.name for i in got.interfaces], [f"pcap:{sa}", f"pcap:{sb}"])
        self.assertTrue(all(i.filter is None for i in got.interfaces), "no filter, no if_filter")
        for k, src in enumerate((sa, sb)):
            want = pcaplib.as_libpcap_reads(pcaplib.read_capture(src))
            mine = [r for r in got.records if r.ifid == k]
            self.assertIsNone(record_mismatch(want, mine, "pcapng", f"interface {k}: "))
        self.assertEqual(sorted((s.ifid, s.counter(4, got.endian)) for s in got.stats),
                         [(0, 300), (1, 200)])
        if capdtest.have("tshark"):
            rows, err = capdtest.tshark_fields(out, ["frame.interface_id"])
            self.assertIsNone(err)
            self.assertEqual(sorted(int(r[0]) for r in rows), sorted(r.ifid for r in got.records))


if __name__ == "__main__":
    capdtest.main()
