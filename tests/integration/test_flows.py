#!/usr/bin/env python3
"""Flow-aware recording: --flow-cutoff, --flow-packets and --dedup against a
model of the rules (flow_table.hh), on mixes generated here with known flow
sizes; the flow counters in --stats-json; bad input."""

import os
import json
import random
import signal
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capdtest  # noqa: E402
import pcaplib  # noqa: E402

SYN, FIN, RST, ACK, PSH = 0x02, 0x01, 0x04, 0x10, 0x08
T0 = 1_700_000_000_000_000_000


def tcp_flow(i, nbytes, seed, close="fin"):
    """A TCP connection: handshake, data both ways (sizes from seed) until
    about nbytes of frames, then FINs (or an RST). Returns [(key, data)]."""
    rnd = random.Random(seed)
    c, s = f"198.18.{i // 200}.{i % 200 + 1}", f"198.19.{i // 200}.{i % 200 + 1}"
    cp, sp = 10000 + i, 80
    key = ("tcp", c, cp, s, sp)

    def pkt(fwd, flags, payload=b""):
        if fwd:
            return pcaplib.eth_ipv4_tcp(payload, c, s, cp, sp, flags=flags)
        return pcaplib.eth_ipv4_tcp(payload, s, c, sp, cp, flags=flags)

    out = [pkt(True, SYN), pkt(False, SYN | ACK), pkt(True, ACK)]
    total = sum(len(p) for p in out)
    while total < nbytes:
        fwd = rnd.random() < 0.3
        p = pkt(fwd, ACK | PSH, bytes([rnd.randrange(256)]) * rnd.randrange(1, 1400))
        out.append(p)
        total += len(p)
    if close == "fin":
        out += [pkt(True, FIN | ACK), pkt(False, FIN | ACK), pkt(True, ACK)]
    else:
        out += [pkt(False, RST)]
    return [(key, p) for p in out]


def udp_flow(i, npkts, v6=False):
    out = []
    for n in range(npkts):
        payload = struct.pack("!I", n) + b"u" * (40 + 7 * (n % 50))
        fwd = n % 3 != 2
        if v6:
            a, b = f"2001:db8::{i + 1:x}", f"2001:db8:1::{i + 1:x}"
            p = (pcaplib.eth_ipv6_udp(payload, a, b, 20000 + i, 53) if fwd
                 else pcaplib.eth_ipv6_udp(payload, b, a, 53, 20000 + i))
        else:
            a, b = f"198.18.100.{i + 1}", f"198.18.101.{i + 1}"
            p = (pcaplib.eth_ipv4_udp(payload, a, b, 20000 + i, 53) if fwd
                 else pcaplib.eth_ipv4_udp(payload, b, a, 53, 20000 + i))
        out.append((("udp", v6, i), p))
    return out


def interleave(flows, seed):
    """Merges the flows' packets (each flow in order) in a random order."""
    rnd = random.Random(seed)
    queues = [list(f) for f in flows if f]
    out = []
    while queues:
        q = rnd.choice(queues)
        out.append(q.pop(0))
        if not q:
            queues.remove(q)
    return out


def tcp_flags(data):
    if len(data) >= 14 + 20 + 14 and data[12:14] == b"\x08\x00" and data[23] == 6:
        return data[14 + 20 + 13]
    return 0


def model_cutoff(packets, cutoff_bytes=0, cutoff_packets=0):
    """What flow_table.hh keeps: a flow's packets until its bytes (or
    packets) before the packet reach the cutoff; SYN/FIN/RST always."""
    seen = {}
    kept, cut = [], 0
    for key, data in packets:
        b, n = seen.get(key, (0, 0))
        over = (cutoff_bytes and b >= cutoff_bytes) or (cutoff_packets and n >= cutoff_packets)
        seen[key] = (b + len(data), n + 1)
        if over and not tcp_flags(data) & (SYN | FIN | RST):
            cut += 1
        else:
            kept.append(data)
    return kept, cut


def sender(data):
    """The sending address of an Ethernet IPv4 or IPv6 frame."""
    return data[26:30] if data[12:14] == b"\x08\x00" else data[22:38]


def model_cutoff_per_direction(packets, cutoff_bytes=0, cutoff_packets=0):
    """model_cutoff with each direction of a flow counted on its own."""
    return model_cutoff([((key, sender(d)), d) for key, d in packets],
                        cutoff_bytes, cutoff_packets)


def mix(seed, tcp_sizes, udp_counts, base=0):
    flows = [tcp_flow(base + i, n, seed + i, "rst" if i % 5 == 4 else "fin")
             for i, n in enumerate(tcp_sizes)]
    flows += [udp_flow(base + i, n, v6=i % 2 == 1) for i, n in enumerate(udp_counts)]
    return interleave(flows, seed)


def to_pcap(path, packets, gap_ns=10_000, start=T0):
    pcaplib.write_pcap(path, [pcaplib.Packet(start + k * gap_ns, d)
                              for k, (_, d) in enumerate(packets)], nano=True)


class FlowCase(capdtest.CapdTestCase):
    def run_ok(self, srcs, args, out="out.pcap"):
        out, stats = self.path(out), self.path("stats.json")
        cmd = ["-q", "--nano"]
        for s in srcs:
            cmd += ["-i", f"pcap:{s}"]
        run = self.capd(cmd + ["-w", out, "--stats-json", stats] + list(args))
        self.assertCapdOk(run, quiet=True)
        return [r.data for r in self.assertWhole(out).records], capdtest.read_json(stats)

    def assertIdentity(self, s):
        after = sum(s["drops"][st["name"]] for st in s["drop_stages"] if not st["before_receipt"])
        self.assertEqual(s["packets_received"],
                         s["packets_filtered_out"] + s["packets_cut_off"] +
                         s["packets_duplicate"] + s["packets_over_limit"] +
                         s["packets_paused"] + s["packets_written"] + after)


class Cutoff(FlowCase):
    TCP = [300, 5000, 20000, 60000, 150000, 900, 45000, 2500, 80000, 12000]
    UDP = [3, 40, 200, 9, 120, 1]

    def test_first_bytes_of_every_flow_written_and_nothing_after(self):
        pkts = mix(1, self.TCP, self.UDP)
        src = self.path("mix.pcap")
        to_pcap(src, pkts)
        for cutoff in (20000, 4000, 1):
            with self.subTest(cutoff=cutoff):
                got, s = self.run_ok([src], ["--flow-cutoff", str(cutoff)])
                want, cut = model_cutoff(pkts, cutoff_bytes=cutoff)
                self.assertEqual(got, want)  # order kept: one worker
                self.assertGreater(cut, 0)
                self.assertEqual(s["packets_cut_off"], cut)
                self.assertEqual(s["flows"]["cut_off_packets"], cut)
                self.assertEqual(s["flows"]["cut_off_bytes"],
                                 sum(len(d) for _, d in pkts) - sum(len(d) for d in want))
                self.assertEqual(s["flows"]["created"], len(self.TCP) + len(self.UDP))
                self.assertEqual(s["drops"]["total"], 0)
                self.assertIdentity(s)
                # Every SYN, FIN and RST of the input is on disk.
                flags = [d for _, d in pkts if tcp_flags(d) & (SYN | FIN | RST)]
                self.assertEqual([d for d in got if tcp_flags(d) & (SYN | FIN | RST)], flags)

    def test_k_suffix_is_thousands(self):
        pkts = mix(2, self.TCP, self.UDP)
        src = self.path("mix.pcap")
        to_pcap(src, pkts)
        got, s = self.run_ok([src], ["--flow-cutoff", "20k"])
        self.assertEqual(got, model_cutoff(pkts, cutoff_bytes=20000)[0])

    def test_flow_packets(self):
        pkts = mix(3, self.TCP, self.UDP)
        src = self.path("mix.pcap")
        to_pcap(src, pkts)
        got, s = self.run_ok([src], ["--flow-packets", "10"])
        want, cut = model_cutoff(pkts, cutoff_packets=10)
        self.assertEqual(got, want)
        self.assertEqual(s["packets_cut_off"], cut)
        # Both: whichever is reached first.
        got, s = self.run_ok([src], ["--flow-packets", "10", "--flow-cutoff", "3000"])
        seen, want = {}, []
        for key, d in pkts:
            b, n = seen.get(key, (0, 0))
            seen[key] = (b + len(d), n + 1)
            if (b < 3000 and n < 10) or tcp_flags(d) & (SYN | FIN | RST):
                want.append(d)
        self.assertEqual(got, want)

    def test_per_direction(self):
        pkts = mix(10, self.TCP, self.UDP)
        src = self.path("mix.pcap")
        to_pcap(src, pkts)
        for args, kw in [(["--flow-cutoff", "4000"], {"cutoff_bytes": 4000}),
                         (["--flow-packets", "5"], {"cutoff_packets": 5})]:
            with self.subTest(args=args):
                got, s = self.run_ok([src], args + ["--flow-cutoff-per-direction"])
                want, cut = model_cutoff_per_direction(pkts, **kw)
                self.assertEqual(got, want)
                self.assertEqual(s["packets_cut_off"], cut)
                # More is kept than with both directions together.
                together, cut_together = model_cutoff(pkts, **kw)
                self.assertGreater(len(want), len(together))
                self.assertIdentity(s)

    def test_two_workers_two_files(self):
        """Each file is read by one worker, so every flow is on one worker
        and the cutoff is exact per flow (flows of distinct files here)."""
        a = mix(4, self.TCP, self.UDP)
        b = mix(5, self.TCP[:5], self.UDP[:3], base=50)
        sa, sb = self.path("a.pcap"), self.path("b.pcap")
        to_pcap(sa, a)
        to_pcap(sb, b, start=T0 + 5_000)
        got, s = self.run_ok([sa, sb], ["--workers", "2", "--flow-cutoff", "8000"])
        wa, ca = model_cutoff(a, cutoff_bytes=8000)
        wb, cb = model_cutoff(b, cutoff_bytes=8000)
        self.assertEqual(sorted(got), sorted(wa + wb))
        self.assertEqual(s["packets_cut_off"], ca + cb)
        self.assertEqual([w["rx_packets"] > 0 for w in s["workers"]], [True, True])
        self.assertIdentity(s)

    def test_overflow_evicts_and_counts(self):
        """1000 flows through a table of 16: every packet finds its flow
        evicted, takes the oldest slot, and is counted; nothing crashes."""
        pkts = []
        for n in range(3):
            for i in range(1000):
                a, b = f"198.18.{i // 250}.{i % 250 + 1}", "198.19.0.1"
                pkts.append((i, pcaplib.eth_ipv4_udp(bytes([n]) * 30, a, b, 30000, 53)))
        src = self.path("many.pcap")
        to_pcap(src, pkts)
        got, s = self.run_ok([src], ["--flow-packets", "1", "--flow-table", "16"])
        f = s["flows"]
        self.assertEqual(f["slots"], 16)
        self.assertEqual(f["created"], 3000)
        self.assertEqual(f["active"], 16)
        self.assertEqual(f["evicted"], 3000 - 16)
        # Each packet began its flow again: all are first packets.
        self.assertEqual(len(got), 3000)
        self.assertEqual(s["packets_cut_off"], 0)
        # With room for all, the 2nd and 3rd packets of each are cut.
        got, s = self.run_ok([src], ["--flow-packets", "1", "--flow-table", "1024"])
        self.assertEqual(len(got), 1000)
        self.assertEqual(s["flows"]["evicted"], 0)
        self.assertEqual(s["packets_cut_off"], 2000)

    def test_non_ip_link_type_passes_and_is_said_once(self):
        src = self.path("raw147.pcap")
        pcaplib.write_pcap(src, [pcaplib.Packet(T0 + i, bytes([i]) * 80) for i in range(50)],
                           nano=True, linktype=147)
        out = self.path("out.pcap")
        run = self.capd(["-q", "-i", f"pcap:{src}", "-w", out, "--flow-packets", "1"])
        self.assertEqual(run.rc, 0, run.describe())
        said = [l for l in run.stderr_lines if "link type 147" in l]
        self.assertEqual(len(said), 1, run.describe())
        self.assertEqual(len(self.assertWhole(out).records), 50)


class Dedup(FlowCase):
    @staticmethod
    def with_ttl(data, ttl):
        ip = bytearray(data[14:34])
        ip[8] = ttl
        ip[10:12] = b"\0\0"
        ip[10:12] = struct.pack("!H", pcaplib._csum(bytes(ip)))
        return data[:14] + bytes(ip) + data[34:]

    def test_every_packet_twice_half_written(self):
        base = mix(6, [3000, 9000, 700], [30, 5, 60])
        pkts = []
        for k, (key, d) in enumerate(base):
            pkts.append(pcaplib.Packet(T0 + k * 100_000, d))
            pkts.append(pcaplib.Packet(T0 + k * 100_000 + 3_000, d))  # 3 us later
        src, out, stats = self.path("twice.pcap"), self.path("out.pcap"), self.path("s.json")
        pcaplib.write_pcap(src, pkts, nano=True)
        run = self.capd(["-q", "--nano", "-i", f"pcap:{src}", "-w", out, "--stats-json", stats,
                         "--dedup"])
        self.assertCapdOk(run, quiet=True)
        got = [r.data for r in self.assertWhole(out).records]
        self.assertEqual(got, [d for _, d in base])
        s = capdtest.read_json(stats)
        self.assertEqual(s["packets_duplicate"], len(base))
        self.assertEqual(s["packets_written"] * 2, s["packets_received"])
        self.assertIdentity(s)

    def test_near_duplicates_and_equal_payloads(self):
        payload = b"same payload " * 5
        a = pcaplib.eth_ipv4_udp(payload, "198.18.0.1", "198.18.0.2", 1111, 53)
        a_ttl = self.with_ttl(a, 63)  # one hop later: still a duplicate
        other = pcaplib.eth_ipv4_udp(payload, "198.18.0.1", "198.18.0.2", 2222, 53)
        other2 = pcaplib.eth_ipv4_udp(payload, "198.18.0.3", "198.18.0.2", 1111, 53)
        changed = pcaplib.eth_ipv4_udp(payload[:-1] + b"!", "198.18.0.1", "198.18.0.2", 1111, 53)
        t = T0
        seq = [(t, a, True), (t + 1_000, a_ttl, False), (t + 2_000, other, True),
               (t + 3_000, other2, True), (t + 4_000, changed, True),
               (t + 5_000, a, False),     # the first again, behind another: duplicate
               (t + 5_000_000, a, True),  # 5 ms after the last equal one kept: a packet
               (t + 5_010_000, a, False)]  # 10 us later: duplicate
        seq = sorted(seq, key=lambda x: x[0])
        src, out, stats = self.path("near.pcap"), self.path("out.pcap"), self.path("s.json")
        pcaplib.write_pcap(src, [pcaplib.Packet(ts, d) for ts, d, _ in seq], nano=True)
        run = self.capd(["-q", "--nano", "-i", f"pcap:{src}", "-w", out, "--stats-json", stats,
                         "--dedup=2ms"])
        self.assertCapdOk(run, quiet=True)
        got = [r.data for r in self.assertWhole(out).records]
        self.assertEqual(got, [d for ts, d, keep in seq if keep])
        self.assertEqual(capdtest.read_json(stats)["packets_duplicate"], 3)


class Reporting(FlowCase):
    CAPCTL = os.path.join(capdtest.BUILD_DIR, "ctl", "capctl")

    def capctl(self, sock, *args):
        p = subprocess.run([self.CAPCTL, "--ctl", sock] + list(args), capture_output=True,
                           text=True, timeout=30)
        return p

    def test_stats_flows_and_prometheus(self):
        if not os.path.exists(self.CAPCTL):
            self.skipTest("capctl not built")
        src, sock = self.path("mix.pcap"), self.path("c.sock")
        to_pcap(src, mix(8, Cutoff.TCP, Cutoff.UDP))
        c = capdtest.start_capd(["-i", f"pcap:{src},loop", "-w", self.path("o.pcap"),
                                 "-C", "5", "-W", "2", "--ctl", sock, "--flow-cutoff", "2k"],
                                sock=sock)
        try:
            def cut():
                p = self.capctl(sock, "--json", "stats")
                return p.returncode == 0 and json.loads(p.stdout)["data"]["packets_cut_off"] > 0
            self.assertTrue(capdtest.wait_until(cut, 60, 0.1))
            p = self.capctl(sock, "--json", "flows", "--top", "3")
            self.assertEqual(p.returncode, 0, p.stderr)
            flows = json.loads(p.stdout)["data"]["flows"]
            self.assertEqual(len(flows), 3)
            self.assertEqual([f["bytes"] for f in flows],
                             sorted((f["bytes"] for f in flows), reverse=True))
            self.assertTrue(all(f["cut_bytes"] > 0 for f in flows))
            p = self.capctl(sock, "flows", "--top", "3")
            self.assertEqual(len(p.stdout.splitlines()), 3, p.stdout)
            self.assertIn("cut off", p.stdout)
            f = json.loads(self.capctl(sock, "--json", "stats").stdout)["data"]["flows"]
            self.assertEqual(f["tables"], 1)
            p = self.capctl(sock, "stats")
            self.assertIn("cut off by policy", p.stdout)
            # The tables' pages and the full buckets, as the summary gives them.
            self.assertRegex(p.stdout, rf"(?m)^flows: {f['tables_on_huge_pages']} of 1 tables on "
                             r"2 MiB huge pages \(else normal pages\); \d+ new flows found their "
                             r"bucket full$")
            p = self.capctl(sock, "stats", "--prometheus")
            self.assertRegex(p.stdout, r"(?m)^linecap_packets_cut_off_total [1-9]")
            self.assertRegex(p.stdout, r"(?m)^linecap_flows_active [1-9]")
            for line in ("# TYPE linecap_flows_bucket_full_total counter",
                         "# TYPE linecap_flow_tables gauge", "linecap_flow_tables 1",
                         "# TYPE linecap_flow_tables_on_huge_pages gauge",
                         f"linecap_flow_tables_on_huge_pages {f['tables_on_huge_pages']}"):
                self.assertIn(line + "\n", p.stdout)
            self.assertRegex(p.stdout, r"(?m)^linecap_flows_bucket_full_total \d+$")
            p = self.capctl(sock, "flows", "--top", "0")
            self.assertNotEqual(p.returncode, 0)
        finally:
            c.signal(signal.SIGINT)
            run = c.wait()
        self.assertEqual(run.rc, 0, run.describe())
        self.assertIn("cut off by policy", run.stderr)

    def test_flows_without_a_table_says_so(self):
        if not os.path.exists(self.CAPCTL):
            self.skipTest("capctl not built")
        sock = self.path("c.sock")
        c = capdtest.start_capd(["-q", "-i", "null:64,rate=1000", "-w", self.path("o.pcap"),
                                 "--ctl", sock], sock=sock)
        try:
            p = self.capctl(sock, "flows")
            self.assertEqual(p.returncode, 1)
            self.assertIn("no flow table", p.stderr)
            self.assertNotIn("cut off", self.capctl(sock, "stats").stdout)
        finally:
            c.signal(signal.SIGINT)
            c.wait()


class PerRule(FlowCase):
    CAPCTL = Reporting.CAPCTL
    capctl = Reporting.capctl

    def rules(self, sock):
        p = self.capctl(sock, "--json", "rules", "list")
        self.assertEqual(p.returncode, 0, p.stderr)
        return {r["name"]: r for r in json.loads(p.stdout)["data"]["rules"]}

    def test_two_rules_two_cutoffs(self):
        """TCP under a rule with a 3k cutoff, UDP under one with 4 packets,
        added while a looping capture runs: every UDP flow has exactly 4
        packets on disk, every whole TCP connection its first 3000 bytes
        (and SYN/FIN/RST). Before the rules, the command line's rule takes
        nothing, so each flow's count starts with its rule."""
        if not os.path.exists(self.CAPCTL):
            self.skipTest("capctl not built")
        pkts = mix(9, Cutoff.TCP, Cutoff.UDP)
        src, sock = self.path("mix.pcap"), self.path("c.sock")
        out, stats = self.path("out.pcap"), self.path("s.json")
        to_pcap(src, pkts)
        c = capdtest.start_capd(["-q", "--nano", "-i", f"pcap:{src},loop", "-w", out,
                                 "--stats-json", stats, "--ctl", sock, "--flow-table", "4096",
                                 "ip host 198.18.255.255"], sock=sock)
        try:
            p = self.capctl(sock, "rules", "add", "web", "--flow-cutoff", "3k", "tcp")
            self.assertEqual(p.returncode, 0, p.stderr)
            p = self.capctl(sock, "rules", "add", "dns", "--flow-packets", "4", "udp")
            self.assertEqual(p.returncode, 0, p.stderr)
            r = self.rules(sock)
            self.assertEqual((r["web"]["flow_cutoff"], r["web"]["flow_packets"]), (3000, 0))
            self.assertEqual((r["dns"]["flow_cutoff"], r["dns"]["flow_packets"]), (0, 4))
            self.assertNotIn("flow_cutoff", r["cli"])
            listed = self.capctl(sock, "rules", "list").stdout
            self.assertIn("--flow-cutoff 3000", listed)
            self.assertIn("--flow-packets 4", listed)
            n_tcp = sum(1 for k, _ in pkts if k[0] == "tcp")
            n_udp = len(pkts) - n_tcp

            def loops():  # at least 5 whole passes through the file under each rule
                r = self.rules(sock)
                return (r["web"].get("packets", 0) >= 5 * n_tcp and
                        r["dns"].get("packets", 0) >= 5 * n_udp)
            self.assertTrue(capdtest.wait_until(loops, 120, 0.1))
        finally:
            c.signal(signal.SIGINT)
            run = c.wait()
        self.assertEqual(run.rc, 0, run.describe())
        s = capdtest.read_json(stats)
        self.assertEqual(s["drops"]["total"], 0)
        key_of = {d: k for k, d in pkts}
        written = {}
        for rec in self.assertWhole(out).records:
            written.setdefault(key_of[rec.data], []).append(rec.data)
        udp_keys = {k for k, _ in pkts if k[0] == "udp"}
        tcp_keys = {k for k, _ in pkts if k[0] == "tcp"}
        self.assertEqual({k: len(written.get(k, [])) for k in udp_keys},
                         {k: 4 for k in udp_keys})
        bitten = 0
        for k in tcp_keys:
            conn = [(k, d) for kk, d in pkts if kk == k]
            want = model_cutoff(conn, cutoff_bytes=3000)[0]
            bitten += len(want) < len(conn)
            # One written connection per SYN; the first may have begun
            # before the rule, the last may be cut short by the stop.
            runs, cur = [], None
            for d in written.get(k, []):
                if tcp_flags(d) & (SYN | ACK) == SYN:
                    cur = []
                    runs.append(cur)
                if cur is not None:
                    cur.append(d)
            whole = runs[:-1]
            self.assertGreaterEqual(len(whole), 2, k)
            for got in whole:
                self.assertEqual(got, want, k)
        self.assertGreater(bitten, len(tcp_keys) // 2)

    def test_rule_cutoff_needs_a_flow_table_and_a_valid_size(self):
        if not os.path.exists(self.CAPCTL):
            self.skipTest("capctl not built")
        sock = self.path("c.sock")
        c = capdtest.start_capd(["-q", "-i", "null:64,rate=1000", "-w", self.path("o.pcap"),
                                 "--ctl", sock], sock=sock)
        try:
            p = self.capctl(sock, "rules", "add", "x", "--flow-cutoff", "1k", "tcp")
            self.assertEqual(p.returncode, 1)
            self.assertIn("flow table", p.stderr)
            self.assertNotIn("x", self.rules(sock))
        finally:
            c.signal(signal.SIGINT)
            c.wait()
        sock = self.path("d.sock")
        c = capdtest.start_capd(["-q", "-i", "null:64,rate=1000", "-w", self.path("o2.pcap"),
                                 "--ctl", sock, "--flow-table", "64"], sock=sock)
        try:
            for args in (["--flow-cutoff", "0"], ["--flow-cutoff", "2T"],
                         ["--flow-packets", "0"]):
                with self.subTest(args=args):
                    p = self.capctl(sock, "rules", "add", "x", *args, "tcp")
                    self.assertEqual(p.returncode, 1, p.stdout)
                    self.assertIn(args[0], p.stderr)
            self.assertNotIn("x", self.rules(sock))
            p = self.capctl(sock, "rules", "add", "x", "--flow-packets", "3", "tcp")
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(self.rules(sock)["x"]["flow_packets"], 3)
        finally:
            c.signal(signal.SIGINT)
            c.wait()


class BadInput(FlowCase):
    def test_out_of_range_one_line_exit_1(self):
        src = self.path("x.pcap")
        to_pcap(src, mix(7, [500], [2]))
        for args, words in [
            (["--flow-cutoff", "0"], "--flow-cutoff"),
            (["--flow-cutoff", "12q"], "--flow-cutoff"),
            (["--flow-cutoff", "2T"], "--flow-cutoff"),
            (["--flow-packets", "0"], "--flow-packets"),
            (["--flow-packets=-1"], "--flow-packets"),
            (["--dedup=1h"], "--dedup"),
            (["--dedup=0ns"], "--dedup"),
            (["--dedup", "--flow-table", "8"], "--flow-table"),
            (["--flow-cutoff-per-direction"], "--flow-cutoff-per-direction"),
        ]:
            with self.subTest(args=args):
                run = self.capd(["-i", f"pcap:{src}", "-w", self.path("o.pcap")] + args)
                self.assertEqual(run.rc, 1, run.describe())
                self.assertEqual(len(run.stderr_lines), 1, run.describe())
                self.assertIn(words, run.stderr_lines[0])
                self.assertFalse(os.path.exists(self.path("o.pcap")))

    def test_table_too_big_for_memory(self):
        with open("/proc/meminfo") as f:
            avail = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))
        table = (1 << 26) * 132  # 2^26 slots of 128 bytes, 4-byte buckets
        workers = avail // table + 1
        if workers > 64:
            self.skipTest("more memory than 64 of the largest tables")
        src = self.path("x.pcap")
        to_pcap(src, mix(7, [500], [2]))
        run = self.capd(["-i", f"pcap:{src}", "-w", self.path("o.pcap"), "--flow-cutoff", "1k",
                         "--workers", str(workers), "--flow-table", str(1 << 26)])
        self.assertEqual(run.rc, 1, run.describe())
        lines = [l for l in run.stderr_lines if not l.startswith("capd: warning:")]
        self.assertEqual(len(lines), 1, run.describe())
        self.assertIn("memory available", lines[0])
        self.assertFalse(os.path.exists(self.path("o.pcap")))


if __name__ == "__main__":
    unittest.main()
