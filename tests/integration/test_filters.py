#!/usr/bin/env python3
"""End to end, capd's filters against tcpdump's: `capd -i pcap:X -w out EXPR`
must write exactly the packets `tcpdump -r X -w - EXPR` writes, for the seeds'
expressions and the pcap-filter language's main forms. Also the filter front
end's bad inputs through capd's command line."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capdtest  # noqa: E402
import pcaplib  # noqa: E402

# The seeds' expressions, then the language's main forms.
EXPRESSIONS = [
    "port 22",
    "host 198.18.0.80",
    "tcp port 80",
    "tcp[tcpflags] = tcp-syn",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn",
    "tcp[tcpflags] & tcp-rst != 0",
    "tcp[(tcp[12]>>2):4] = 0x47455420",
    "tcp[13] & 2 != 0",
    "tcp[12] = 0x50",
    "tcp port 80 or udp port 53",
    "src net 198.18.1.0/24 and dst port 80",
    "net 198.18.0.0/15",
    "portrange 40000-40100",
    "udp",
    "icmp or icmp6",
    "ip6",
    "arp",
    "vlan",
    "vlan and vlan",
    "greater 200",
    "less 100",
    "len > 1000",
    "not tcp",
    "ip[8] < 64",
    "ip[2:2] % 7 = 3",
    "tcp[2:2] / (tcp[13] & 1) = 0",
    # Needs a netmask: 0 for files, as tcpdump -r uses.
    "ip broadcast or ip multicast",
]

INPUTS = [
    "demo/web-mix.pcap",
    "tcpdump-tests/802.1ad_QinQ.pcap",
    "tcpdump-tests/dns_tcp.pcap",
    "tcpdump-tests/icmpv6.pcap",
    "tcpdump-tests/arp-too-long-tha.pcap",
    "tcpdump-tests/mptcp-aa-v1.pcap",
]


def tcpdump_select(src, expr, out):
    p = subprocess.run(["tcpdump", "-r", src, "-w", out, expr], capture_output=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"tcpdump -r {src} {expr!r}: {p.stderr.decode(errors='replace')}")
    return pcaplib.read_capture(out)


class FiltersMatchTcpdump(capdtest.CapdTestCase):
    def inputs(self):
        paths = [os.path.join(capdtest.DATA_DIR, i) for i in INPUTS]
        return [p for p in paths if os.path.exists(p)]

    def test_same_packets_as_tcpdump(self):
        srcs = self.inputs()
        self.assertGreaterEqual(len(srcs), 3)
        checked = 0
        for n, expr in enumerate(EXPRESSIONS):
            with self.subTest(expr=expr):
                out = self.path(f"capd-{n}.pcapng")
                args = ["-q", "--format", "pcapng", "-w", out]
                for s in srcs:
                    args += ["-i", f"pcap:{s}"]
                run = self.capd(args + [expr])
                self.assertCapdOk(run, quiet=True)
                got = self.assertWhole(out)
                for ifid, src in enumerate(srcs):
                    ref = tcpdump_select(src, expr, self.path(f"ref-{n}-{ifid}.pcap"))
                    mine = [r for r in got.records if r.ifid == ifid]
                    want = [(r.ts_ns // 1000, r.wirelen, r.data) for r in ref.records]
                    have = [(r.ts_ns // 1000, r.wirelen, r.data) for r in mine]
                    self.assertEqual(len(have), len(want),
                                     f"{expr!r} on {os.path.basename(src)}: packet count")
                    self.assertEqual(have, want, f"{expr!r} on {os.path.basename(src)}")
                    checked += len(want)
        print(f"  {len(EXPRESSIONS)} expressions x {len(self.inputs())} captures: "
              f"{checked} selected packets identical to tcpdump's")

    def test_patterns_with_expression(self):
        """Expression AND pattern: GET requests to port 80 whose payload holds
        'item/1' (a literal) or matches /ITEM\\/2\\d+/i (a regex)."""
        src = os.path.join(capdtest.DATA_DIR, "demo/web-mix.pcap")
        out = self.path("pat.pcap")
        run = self.capd(["-q", "--nano", "-i", f"pcap:{src}", "-w", out,
                         "--pattern", "item/1", "--pattern", "/ITEM\\/2\\d+/i", "tcp dst port 80"])
        self.assertCapdOk(run, quiet=True)
        got = self.assertWhole(out)
        ref = pcaplib.read_capture(src)
        import re
        want = []
        for r in ref.records:
            d = r.data
            if len(d) < 54 or d[12:14] != b"\x08\x00" or d[23] != 6:
                continue
            ihl = (d[14] & 15) * 4
            tcp = 14 + ihl
            if int.from_bytes(d[tcp + 2:tcp + 4], "big") != 80:
                continue
            payload = d[tcp + (d[tcp + 12] >> 4) * 4:]
            if b"item/1" in payload or re.search(rb"(?i)item/2\d+", payload):
                want.append(r.data)
        self.assertGreater(len(want), 0)
        self.assertEqual([r.data for r in got.records], want)


class FilterBadInput(capdtest.CapdTestCase):
    def refused(self, extra, needle):
        src = os.path.join(capdtest.DATA_DIR, "demo/web-mix.pcap")
        out = self.path("never.pcap")
        run = self.capd(["-i", f"pcap:{src}", "-w", out] + extra)
        self.assertNotEqual(run.rc, 0, run.describe())
        self.assertEqual(len(run.stderr_lines), 1, run.describe())
        self.assertIn(needle, run.stderr, run.describe())
        self.assertEqual(capdtest.listdir(os.path.dirname(out)), [], "no file is left")

    def test_syntax_error(self):
        self.refused(["tcp porr 80"], "syntax error")

    def test_empty_pattern(self):
        self.refused(["--pattern", ""], "pattern")

    def test_invalid_regex_names_the_pattern(self):
        self.refused(["--pattern", "/get(/i"], "/get(/i")

    def test_unreadable_object(self):
        self.refused(["--bpf-object", "/nonexistent/prog.o"], "/nonexistent/prog.o")

    def test_not_an_object(self):
        self.refused(["--bpf-object", os.path.join(capdtest.DATA_DIR, "demo/web-mix.pcap")],
                     "web-mix.pcap")


if __name__ == "__main__":
    capdtest.main()
