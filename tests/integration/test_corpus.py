#!/usr/bin/env python3
"""capd copies every Ethernet capture of the tcpdump-tests corpus faithfully.

For each capture, `capd -i pcap:FILE -w OUT` must write exactly the packets
libpcap reads from FILE: same count, order, bytes, original lengths and
timestamps (compared at the output's precision: pcap us, pcap --nano, pcapng).
The outputs must then be readable by tcpdump, by Wireshark's wiretap
(capinfos) and by tshark.

capd starts in about half a second, so the captures are copied 25 per run
(-i pcap:A -i pcap:B ...); a capture that does not come out right is copied
again alone so that the failure names it. A sample is also copied alone.

"As libpcap reads them" matters for a few fuzzed captures whose records are
longer than the file's snapshot length: libpcap cuts those records to the
snapshot length (tcpdump sees the same), so that is what capd can copy.
"""

import collections
import os
import random

import capdtest
import pcaplib
from capdtest import CapdTestCase, record_mismatch

BATCH = 25  # pcap: sources per capd run
TSHARK_SAMPLE = 12
SAMPLE_STEP = 15  # every 15th capture is also copied alone


def in_order_within(want, out):
    """True if the list `want` appears in `out` in order (a subsequence)."""
    it = iter(out)
    return all(any(w == o for o in it) for w in want)


def load_corpus():
    """[(path, Capture)] for every capture, and the non-Ethernet ones."""
    eth, other = [], []
    for p in capdtest.corpus_files():
        cap = pcaplib.read_capture(p)
        if all(i.linktype == 1 for i in cap.interfaces):
            eth.append((p, cap))
        else:
            other.append((p, cap))
    return eth, other


class CorpusTest(CapdTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.eth, cls.other = load_corpus()
        if not cls.eth:
            raise capdtest.unittest.SkipTest(f"no corpus at {capdtest.CORPUS_DIR}")
        print(f"corpus: {len(cls.eth)} Ethernet captures, {len(cls.other)} of other link "
              f"types (not copied here; see test_capture.py for other link types)")

    def check_readers(self, outputs, sample_tshark):
        """outputs: {path: expected record count}."""
        paths = sorted(outputs)
        if capdtest.have("tcpdump"):
            for p in paths:
                with self.subTest(reader="tcpdump", file=os.path.basename(p)):
                    n, err = capdtest.tcpdump_count(p)
                    self.assertIsNone(err)
                    self.assertEqual(n, outputs[p])
        else:
            print("tcpdump not installed: tcpdump cross-check skipped")
        if capdtest.have("capinfos"):
            with self.subTest(reader="capinfos"):
                counts, err = capdtest.capinfos_counts(paths)
                self.assertIsNone(err)
                bad = {os.path.basename(p): (counts.get(p), outputs[p]) for p in paths
                       if counts.get(p) != outputs[p]}
                self.assertEqual(bad, {}, "capinfos count vs expected")
        else:
            print("capinfos not installed: wiretap cross-check skipped")
        if capdtest.have("tshark"):
            rnd = random.Random(1234)
            for p in rnd.sample(paths, min(sample_tshark, len(paths))):
                with self.subTest(reader="tshark", file=os.path.basename(p)):
                    rows, err = capdtest.tshark_fields(p, ["frame.number"])
                    self.assertIsNone(err)
                    self.assertEqual(len(rows), outputs[p])
        else:
            print("tshark not installed: tshark cross-check skipped")

    def run_alone(self, src, cap, fmt_args, precision, out):
        """One capture alone: the precise difference, or None."""
        run = self.capd(["-q", "-i", f"pcap:{src}", "-w", out] + fmt_args)
        if run.rc != 0 or run.stderr_lines:
            return run.describe()
        try:
            got = pcaplib.read_capture(out)
        except pcaplib.PcapError as e:
            return f"{out}: {e}"
        return record_mismatch(pcaplib.as_libpcap_reads(cap), got.records, precision)

    def pcap_batches(self, files, fmt_args, precision, kind, tag):
        """Copies the captures BATCH at a time into one pcap file each. A
        pcap file cannot say which source a record came from, so each
        source's records must appear in order in the output (one worker
        keeps each source's order), and the output must hold exactly the
        union of the sources. A source that does not match is copied again
        alone to report the precise difference."""
        outputs = {}
        for b in range(0, len(files), BATCH):
            batch = files[b:b + BATCH]
            out = self.path(f"{tag}{b // BATCH:02d}.pcap")
            args = ["-q", "-w", out] + fmt_args
            for src, _ in batch:
                args += ["-i", f"pcap:{src}"]
            with self.subTest(batch=b // BATCH, first=os.path.basename(batch[0][0])):
                run = self.capd(args)
                self.assertCapdOk(run, quiet=True)
                got = self.assertWhole(out)
                self.assertEqual(got.kind, kind)
                self.assertEqual(got.linktype, 1)
                out_keys = [(r.ts_ns, r.caplen, r.wirelen, r.data) for r in got.records]
                want_all = []
                all_in_order = True
                for src, cap in batch:
                    want = [(capdtest.out_ts(r.ts_ns, precision), r.caplen, r.wirelen, r.data)
                            for r in pcaplib.as_libpcap_reads(cap)]
                    want_all += want
                    if not in_order_within(want, out_keys):
                        all_in_order = False
                        with self.subTest(file=os.path.basename(src)):
                            alone = self.path(f"{tag}-alone.pcap")
                            self.fail(self.run_alone(src, cap, fmt_args, precision, alone)
                                      or "differs only when copied with other captures")
                if all_in_order:
                    got_ms, want_ms = collections.Counter(out_keys), collections.Counter(want_all)
                    extra = [k[:3] for k in (got_ms - want_ms).elements()]
                    missing = [k[:3] for k in (want_ms - got_ms).elements()]
                    self.assertEqual((len(extra), len(missing)), (0, 0),
                                     f"records not in any input: {extra[:5]}, "
                                     f"input records missing: {missing[:5]}")
                outputs[out] = len(want_all)
        self.assertNoHidden(self.tmp)
        return outputs

    def test_pcap_micro(self):
        """Default output: pcap, microseconds (truncated)."""
        outputs = self.pcap_batches(self.eth, [], "us", "pcap-us", "us")
        self.check_readers(outputs, TSHARK_SAMPLE)

    def test_pcap_nano(self):
        """--nano output: pcap, nanoseconds."""
        outputs = self.pcap_batches(self.eth, ["--nano"], "ns", "pcap-ns", "ns")
        self.check_readers(outputs, 4)

    def test_pcap_micro_one_run_per_capture(self):
        """A sample copied alone, one capd run each (the everyday use)."""
        outputs = {}
        for i, (src, cap) in enumerate(self.eth[::SAMPLE_STEP]):
            out = self.path(f"one{i:03d}.pcap")
            with self.subTest(file=os.path.basename(src)):
                self.assertIsNone(self.run_alone(src, cap, [], "us", out),
                                  f"capd -i pcap:{src} -w out.pcap")
                outputs[out] = len(cap.records)
        self.assertNoHidden(self.tmp)
        self.check_readers(outputs, 2)

    def test_pcapng_batched(self):
        """--format pcapng with BATCH `-i pcap:` sources per run: one
        interface per source, named after it, each holding its source's
        packets in order with nanosecond timestamps, and one statistics block
        per interface at the end."""
        outputs = {}
        for b in range(0, len(self.eth), BATCH):
            batch = self.eth[b:b + BATCH]
            out = self.path(f"batch{b // BATCH:02d}.pcapng")
            args = ["-q", "--format", "pcapng", "-w", out]
            for src, _ in batch:
                args += ["-i", f"pcap:{src}"]
            with self.subTest(batch=b // BATCH, first=os.path.basename(batch[0][0])):
                run = self.capd(args)
                self.assertCapdOk(run, quiet=True)
                got = self.assertWhole(out)
                self.assertEqual(got.kind, "pcapng")
                self.assertEqual([i.name for i in got.interfaces],
                                 [f"pcap:{s}" for s, _ in batch])
                self.assertTrue(all(i.tsresol == 9 for i in got.interfaces))
                self.assertTrue(all(i.linktype == 1 for i in got.interfaces))
                total = 0
                for k, (src, cap) in enumerate(batch):
                    want = pcaplib.as_libpcap_reads(cap)
                    mine = [r for r in got.records if r.ifid == k]
                    with self.subTest(file=os.path.basename(src)):
                        self.assertIsNone(
                            record_mismatch(want, mine, "pcapng", f"interface {k}: "),
                            f"capd --format pcapng -i pcap:{src} ...")
                    total += len(want)
                self.assertEqual(sorted(s.ifid for s in got.stats), list(range(len(batch))),
                                 "one interface statistics block per interface")
                last_epb = max((r.offset for r in got.records), default=0)
                self.assertTrue(all(s.offset > last_epb for s in got.stats),
                                "statistics blocks come after the last packet")
                for s in got.stats:
                    want_n = len(batch[s.ifid][1].records)
                    self.assertEqual(s.counter(4, got.endian), want_n, "isb_ifrecv")
                    self.assertEqual(s.counter(6, got.endian), want_n, "isb_filteraccept")
                outputs[out] = total
        self.assertNoHidden(self.tmp)
        self.check_readers(outputs, len(outputs))


if __name__ == "__main__":
    capdtest.main()
