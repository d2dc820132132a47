#!/usr/bin/env python3
"""Several workers and writers: no packet lost, none duplicated.

- pcap: sources over --workers/--writers: the union of the output files is
  exactly the union of the inputs (multisets of timestamp, bytes, length),
  each source's packets in their own order;
- af_packet on a veth pair between two namespaces this test creates
  (198.18.1.0/24 only): a bounded burst of tagged UDP datagrams is captured
  with --workers 2 --writers 2, every datagram exactly once.
"""

import collections
import os
import signal
import time

import capdtest
import gencaps
import pcaplib
from capdtest import CapdTestCase

BURST = 2000
SOURCE = 0x5E  # tag source of the burst; SOURCE + 1 tags the probes


def frame_len(seq):
    """Length of burst datagram seq on the wire (see capdtest.SENDER)."""
    return 14 + 20 + 8 + max(10, 18 + seq % 1200)


def multiset(records):
    return collections.Counter((r.ts_ns, r.wirelen, r.data) for r in records)


class PcapSources(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.inputs = []
        for s in range(4):
            pkts, _ = gencaps.mixed(3000, source=s + 1, seed=50 + s)
            src = gencaps.write(self.path(f"in{s}.pcap"), pkts)
            self.inputs.append((src, pkts))
        self.out = self.path("out")
        os.mkdir(self.out)

    def run_multi(self, workers, writers, extra=(), fmt="pcap"):
        suffix = ".pcapng" if fmt == "pcapng" else ".pcap"
        args = ["-q", "--workers", str(workers), "--writers", str(writers), "-w",
                os.path.join(self.out, "x" + suffix)] + list(extra)
        args += ["--format", "pcapng"] if fmt == "pcapng" else ["--nano"]
        for src, _ in self.inputs:
            args += ["-i", f"pcap:{src}"]
        run = self.capd(args)
        self.assertCapdOk(run, quiet=True)
        self.assertNoHidden(self.out)
        files = sorted(capdtest.listdir(self.out))
        caps = {f: self.assertWhole(os.path.join(self.out, f)) for f in files}
        every = [r for c in caps.values() for r in c.records]
        want = [pcaplib.Record(p.ts_ns, len(p.data), len(p.data), p.data)
                for _, pkts in self.inputs for p in pkts]
        got_ms, want_ms = multiset(every), multiset(want)
        missing = sum((want_ms - got_ms).values())
        extra_n = sum((got_ms - want_ms).values())
        self.assertEqual((missing, extra_n), (0, 0),
                         f"packets missing, duplicated or changed: capd {' '.join(args)}")
        for f, cap in caps.items():
            for s in range(1, len(self.inputs) + 1):
                seqs = [gencaps.find_tag(r.data)[1] for r in cap.records
                        if gencaps.find_tag(r.data)[0] == s]
                self.assertEqual(seqs, sorted(seqs), f"{f}: source {s} out of order")
        return files, caps

    def test_2_workers_2_writers(self):
        files, _ = self.run_multi(2, 2)
        self.assertEqual(files, ["x_w0.pcap", "x_w1.pcap"])

    def test_2_workers_1_writer(self):
        files, _ = self.run_multi(2, 1)
        self.assertEqual(files, ["x.pcap"])

    def test_2_workers_2_writers_pcapng(self):
        files, caps = self.run_multi(2, 2, fmt="pcapng")
        names = [f"pcap:{src}" for src, _ in self.inputs]
        for f, cap in caps.items():
            self.assertEqual([i.name for i in cap.interfaces], names, f)
            for r in cap.records:
                self.assertEqual(gencaps.find_tag(r.data)[0], r.ifid + 1,
                                 f"{f}: packet on the wrong interface")

    def test_2_workers_2_writers_rotating(self):
        files, _ = self.run_multi(2, 2, extra=["-C", "1"])
        self.assertGreater(len(files), 2)
        for f in files:
            self.assertRegex(f, r"^x_w[01]\.pcap\d*$")


class SharedMbufs(CapdTestCase):
    def test_file_and_null_sources_together(self):
        """A pcap: source of snaplen-cut frames next to a null source (no
        namespace needed): the null source's 64-byte frames keep their own
        length. The sources share one mbuf pool, so per-packet metadata left
        in a recycled mbuf must not leak into the next packet."""
        cut = gencaps.snapcut(3000)
        src = gencaps.write(self.path("cut.pcap"), cut, snaplen=96)
        out = self.path("mix.pcapng")
        run = self.capd(["-q", "-i", f"pcap:{src}", "-i", "null:64", "-c", "200000",
                         "--format", "pcapng", "-w", out])
        self.assertCapdOk(run, quiet=True)
        cap = self.assertWhole(out)
        null = [r for r in cap.records if r.ifid == 1]
        self.assertTrue(null)
        bad = collections.Counter(r.wirelen for r in null if r.wirelen != 64)
        self.assertEqual(dict(bad.most_common(5)), {},
                         f"{sum(bad.values())} of {len(null)} null:64 frames recorded with "
                         f"another wire length (length: count); capd {' '.join(run.args)}")
        self.assertTrue(all(r.caplen == 64 for r in null))


class AfPacket(capdtest.VethCapture, CapdTestCase):
    """Live capture on a veth between two namespaces created here."""

    def setUp(self):
        super().setUp()
        self.veth = capdtest.make_veth(self, "m")
        self.out = self.path("out")
        os.mkdir(self.out)

    def capture_burst(self, args):
        """Runs capd in the capture namespace, makes sure it receives (probe
        datagrams), sends BURST datagrams, waits (bounded) until they are on
        disk, stops capd with SIGINT. Returns (run, t_start, t_end) in ns."""
        t_start = time.time_ns()
        c, sender = self.start_probed(args, SOURCE, netns=self.veth.cap)
        if not c.running():
            self.fail("capd ended early\n" + c.wait().describe())
        sender.command(f"burst {BURST}", timeout=120)
        capdtest.wait_until(lambda: len(set(self.seen(SOURCE))) >= BURST or not c.running(),
                            timeout=120, interval=0.2)
        t_end = time.time_ns()
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 0, run.describe())
        self.assertNoHidden(self.out)
        return run, t_start, t_end

    def assertExactlyOnce(self, tags, run):
        counts = collections.Counter(seq for _, seq in tags)
        missing = [s for s in range(BURST) if counts[s] == 0]
        dups = sorted(s for s, n in counts.items() if n > 1)
        self.assertEqual((missing[:20], len(missing), dups[:20], len(dups)), ([], 0, [], 0),
                         "every datagram captured exactly once\n" + run.describe())

    def test_two_workers_two_writers(self):
        js = self.path("stats.json")
        run, t0, t1 = self.capture_burst(
            ["-i", f"af_packet:{self.veth.cap_if}", "--workers", "2", "--writers", "2",
             "--nano", "-w", os.path.join(self.out, "af.pcap"), "--stats-json", js])
        files = sorted(capdtest.listdir(self.out))
        self.assertEqual(files, ["af_w0.pcap", "af_w1.pcap"])
        records = []
        for f in files:
            records += self.assertWhole(os.path.join(self.out, f)).records
        tags = capdtest.udp_tags(records, self.veth.SEND_ADDR, self.veth.CAP_ADDR)
        self.assertExactlyOnce([t for t in tags if t[0] == SOURCE], run)
        sent = [(r, t) for r in records
                for t in capdtest.udp_tags([r], self.veth.SEND_ADDR, self.veth.CAP_ADDR)
                if t[0] == SOURCE]
        for r, (_, seq) in sent:
            self.assertEqual((r.caplen, r.wirelen), (frame_len(seq), frame_len(seq)))
            # Live packets are stamped from the wall clock at receive.
            self.assertTrue(t0 - 5 * 10**9 <= r.ts_ns <= t1 + 5 * 10**9,
                            f"timestamp {r.ts_ns} outside the run [{t0}, {t1}]")
        s = capdtest.read_json(js)
        self.assertEqual(s["packets_written"], len(records))
        self.assertEqual(len(s["workers"]), 2)
        self.assertTrue(all(w["rx_packets"] > 0 for w in s["workers"]),
                        f"both workers receive (fanout over sixteen flows): {s['workers']}")

    def test_live_and_file_sources_together(self):
        """A pcap: source of snaplen-cut frames next to a live source: the
        live packets keep their own lengths (mbufs are shared by the sources,
        so per-packet metadata must not leak from one packet to the next)."""
        cut = gencaps.snapcut(3000)
        src = gencaps.write(self.path("cut.pcap"), cut, snaplen=96)
        run, _, _ = self.capture_burst(
            ["-i", f"pcap:{src}", "-i", f"af_packet:{self.veth.cap_if}", "--format", "pcapng",
             "-w", os.path.join(self.out, "mix.pcapng")])
        cap = self.assertWhole(os.path.join(self.out, "mix.pcapng"))
        from_file = [r for r in cap.records if r.ifid == 0]
        live = [r for r in cap.records if r.ifid == 1]
        want = [pcaplib.Record(p.ts_ns, len(p.data), p.wirelen, p.data) for p in cut]
        self.assertIsNone(capdtest.record_mismatch(want, from_file, "pcapng", "pcap: source: "))
        sent = [(r, t) for r in live
                for t in capdtest.udp_tags([r], self.veth.SEND_ADDR, self.veth.CAP_ADDR)
                if t[0] == SOURCE]
        self.assertExactlyOnce([t for _, t in sent], run)
        bad = [(seq, r.caplen, r.wirelen) for r, (_, seq) in sent
               if not r.caplen == r.wirelen == frame_len(seq)]
        self.assertEqual(bad[:10], [], f"{len(bad)} of {len(sent)} live datagrams recorded with "
                         "a length that is not theirs (seq, caplen, wirelen)")


if __name__ == "__main__":
    capdtest.main()
