#!/usr/bin/env python3
"""tcpdump's command line where a tcpdump user expects it.

- `-i NAME` (a bare interface name) captures from that kernel interface
  through af_packet; `-i any` captures every interface of the namespace in
  the LINUX_SLL2 link type; `-i NUMBER` is entry NUMBER of `capd -D`, which
  lists interfaces by bare name and says what each maps to. A bare name
  that is not an interface is one error line.
- A readiness line on stderr once capture has started ("capd: capturing on
  ..., link-type ..., snapshot length ... bytes"), not with -q; a SIGINT
  sent right after it stops capd cleanly even when its parent left SIGINT
  ignored.
- `-p`, `-B KiB`, `-U` and `-Q in|out|inout`, with tcpdump's meaning on
  kernel interfaces, and one refusal line saying what to use elsewhere.

Live cases run capd inside a network namespace the test makes
(capdtest.VethNamespaces: 198.18.1.2 in `cap`, 198.18.1.1 in `send`, joined
by a veth pair; only 198.18.0.0/15 is used), so bare names resolve there;
traffic is bounded UDP bursts. Namespaces are deleted in
cleanups. Every wait is bounded.
"""

import collections
import json
import os
import signal
import struct
import subprocess
import sys

import capdtest
import gencaps
import pcaplib
from capdtest import CapdTestCase, RunningCapd

SOURCE = 0x5A  # tag source of bursts; SOURCE + 1 tags the probes
CAPCTL = os.path.join(capdtest.BUILD_DIR, "ctl", "capctl")
READY = "capd: capturing on "


def stderr_now(c):
    """What a running capd has written to stderr so far. pread: capd shares
    the file's offset, which a seek would move under its next write."""
    return os.pread(c.err.fileno(), 1 << 20, 0).decode("utf-8", "replace")


def ready_line(text):
    lines = [l for l in text.splitlines() if l.startswith(READY)]
    return lines[0] if lines else None


def as_ethernet(record):
    """A LINUX_SLL2 record as the Ethernet frame udp_tags() reads: the
    protocol field after twelve zero address bytes, then the packet."""
    d = record.data
    return pcaplib.Record(record.ts_ns, record.caplen, record.wirelen,
                          bytes(12) + d[0:2] + d[20:])


class Readiness(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.out = self.path("out")
        os.mkdir(self.out)
        self.src = gencaps.write(self.path("gen.pcap"), gencaps.mixed(500, seed=7)[0])

    def test_readiness_line_names_sources_link_type_and_snaplen(self):
        """Like tcpdump's "listening on eth0, link-type EN10MB (Ethernet),
        snapshot length 262144 bytes", before the summary."""
        run = self.capd(["-i", f"pcap:{self.src}", "-w", os.path.join(self.out, "x.pcap")])
        self.assertCapdOk(run)
        self.assertEqual(run.stderr_lines[0],
                         f"capd: capturing on pcap:{self.src}, link-type EN10MB (Ethernet), "
                         "snapshot length 262144 bytes", run.describe())
        run = self.capd(["-i", f"pcap:{self.src}", "-i", "null:64", "-c", "600", "-s", "96",
                         "-w", os.path.join(self.out, "y.pcap")])
        self.assertCapdOk(run)
        self.assertEqual(run.stderr_lines[0],
                         f"capd: capturing on pcap:{self.src}, null:64, link-type EN10MB "
                         "(Ethernet), snapshot length 96 bytes", run.describe())

    def test_quiet_has_no_readiness_line(self):
        run = self.capd(["-q", "-i", f"pcap:{self.src}", "-w", os.path.join(self.out, "x.pcap")])
        self.assertCapdOk(run, quiet=True)

    def test_sigint_right_after_readiness_with_sigint_ignored(self):
        """A background job of a script starts with SIGINT ignored; a SIGINT
        sent as soon as the readiness line appears stops capd cleanly: exit
        0, a whole named file, the summary."""
        out = os.path.join(self.out, "x.pcap")
        err = self.path("err")
        with open(err, "w+b") as ef:
            p = subprocess.Popen(capdtest.capd_command(["-i", f"pcap:{self.src},loop", "-w", out,
                                                        "--ctl", "none"]),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ef,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
            try:
                ok = capdtest.wait_until(
                    lambda: p.poll() is not None or
                    ready_line(os.pread(ef.fileno(), 1 << 20, 0).decode()), 60, 0.01)
                self.assertTrue(ok and p.poll() is None, "no readiness line within 60 s")
                p.send_signal(signal.SIGINT)
                p.wait(timeout=120)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait(30)
            text = os.pread(ef.fileno(), 1 << 20, 0).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, text)
        self.assertIn(" packets received", text)
        self.assertWhole(out)
        self.assertNoHidden(self.out)


class Refusals(CapdTestCase):
    """One line on stderr that says what to use instead, exit 1, no file."""

    def setUp(self):
        super().setUp()
        self.good = gencaps.write(self.path("good.pcap"), gencaps.mixed(20)[0])
        self.out = self.path("out")
        os.mkdir(self.out)

    def refused(self, args, words):
        run = self.capd(args + ["-w", os.path.join(self.out, "x.pcap")], cwd=self.tmp)
        self.assertEqual(run.rc, 1, run.describe())
        self.assertEqual(len(run.stderr_lines), 1, run.describe())
        self.assertTrue(run.stderr_lines[0].startswith("capd: "), run.describe())
        self.assertIn(words, run.stderr_lines[0], run.describe())
        self.assertEqual(capdtest.listdir(self.out), [])
        return run.stderr_lines[0]

    def test_bare_name_that_is_not_an_interface(self):
        self.refused(["-i", "lcnosuchif0"], "-i lcnosuchif0: no such interface")
        # A capture file named without pcap: gets the hint.
        self.refused(["-i", "good.pcap"], "write pcap:good.pcap")
        self.refused(["-i", "foo:bar"], "unknown source")

    def test_any_twice_or_with_an_interface(self):
        self.refused(["-i", "any", "-i", "lo"], "given twice")
        self.refused(["-i", "af_xdp:any"], "use -i any")

    def test_number_out_of_range(self):
        self.refused(["-i", "100000"], "capd -D lists")

    def test_kernel_options_on_files(self):
        pcap = ["-i", f"pcap:{self.good}"]
        self.refused(pcap + ["-Q", "in"], "use a filter instead")
        self.refused(["-i", "af_xdp:lo", "-Q", "out"], "use af_packet:IFACE")
        self.refused(["-i", "af_xdp:lo", "-Q", "inout", "-B", "1024"], "use --rx-desc")
        self.refused(pcap + ["-B", "1024"], "use --rx-desc")
        self.refused(["-i", "af_packet:lo", "-B", "8"], "-B: 16..65536 KiB")
        self.refused(pcap + ["-U", "--flush-ms", "5"], "give one of them")
        self.refused(pcap + ["-U", "--direct"], "-U does not take --direct")
        self.refused(pcap + ["-Q", "sideways"], "-Q")

    def test_packet_buffered_file_grows_while_running(self):
        """-U: a reader sees packets in the file while capd runs."""
        out = os.path.join(self.out, "u.pcap")
        c = RunningCapd(["-q", "-U", "-i", "null:64,rate=200", "--ctl", "none", "-w", out])
        self.addCleanup(c.kill)
        hidden = os.path.join(self.out, ".u.pcap.partial")
        self.assertTrue(capdtest.wait_until(
            lambda: len(capdtest.records_so_far(hidden)) >= 5 or not c.running(), 60),
            "no packets in the file while capd ran")
        if not c.running():
            self.fail("capd ended early\n" + c.wait().describe())
        c.signal(signal.SIGINT)
        self.assertCapdOk(c.wait(), quiet=True)
        self.assertWhole(out)


class Live(capdtest.VethCapture, CapdTestCase):
    """capd inside the `cap` namespace, where the veth end is a bare name."""

    def setUp(self):
        super().setUp()
        self.veth = capdtest.make_veth(self, "t")
        self.out = self.path("out")
        os.mkdir(self.out)
        self.cooked = False

    def in_cap(self, *cmd, timeout=60):
        return subprocess.run(["ip", "netns", "exec", self.veth.cap] + list(cmd),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def seen(self, source):
        if not self.cooked:
            return super().seen(source)
        tags = []
        for f in capdtest.listdir(self.out):
            recs = [as_ethernet(r) for r in capdtest.records_so_far(os.path.join(self.out, f))]
            tags += [t for t in capdtest.udp_tags(recs, self.veth.SEND_ADDR, self.veth.CAP_ADDR)
                     if t[0] == source]
        return tags

    def start_ready(self, args):
        """capd in `cap` with args; returns it once its readiness line is out."""
        c = RunningCapd(args, netns=self.veth.cap)
        self.addCleanup(c.kill)
        ok = capdtest.wait_until(lambda: ready_line(stderr_now(c)) or not c.running(), 60)
        if not (ok and c.running()):
            self.fail("no readiness line\n" + (c.wait().describe() if not c.running() else ""))
        return c

    def promisc(self):
        p = self.in_cap("cat", f"/sys/class/net/{self.veth.cap_if}/flags")
        return bool(int(p.stdout.strip(), 16) & 0x100)

    def burst(self, args, n=300):
        """capd on args (run in `cap`) until it writes a probe, then a burst
        of n; returns (run, records)."""
        out = os.path.join(self.out, "b.pcap")
        c, sender = self.start_probed(["-w", out, "--ctl", "none"] + args +
                                      ["udp", "and", "dst", "port", "9"], SOURCE,
                                      netns=self.veth.cap)
        if not c.running():
            self.fail("capd ended early\n" + c.wait().describe())
        sender.command(f"burst {n}", timeout=120)
        capdtest.wait_until(lambda: len(set(self.seen(SOURCE))) >= n or not c.running(), 120,
                            0.2)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run)
        self.assertNoHidden(self.out)
        return run, self.assertWhole(out)

    def test_bare_name_is_af_packet(self):
        v = self.veth
        run, cap = self.burst(["-i", v.cap_if])
        self.assertEqual(cap.linktype, 1)
        seqs = sorted(s for src, s in capdtest.udp_tags(cap.records, v.SEND_ADDR, v.CAP_ADDR)
                      if src == SOURCE)
        self.assertEqual(seqs, list(range(300)), run.describe())
        self.assertIn(f"capd: capturing on af_packet:{v.cap_if}, link-type EN10MB (Ethernet), "
                      "snapshot length 262144 bytes", run.stderr_lines, run.describe())

    def test_any_is_linux_sll2(self):
        """-i any: every interface of the namespace, in LINUX_SLL2 records
        whose header names the interface; tcpdump reads the file with the
        same filter."""
        v = self.veth
        self.cooked = True
        run, cap = self.burst(["-i", "any"])
        self.assertEqual(cap.linktype, 276)
        self.assertIn("capd: capturing on af_packet:any, link-type LINUX_SLL2 (Linux cooked v2), "
                      "snapshot length 262144 bytes", run.stderr_lines, run.describe())
        ifindex = int(self.in_cap("cat", f"/sys/class/net/{v.cap_if}/ifindex").stdout)
        tags = []
        for r in cap.records:
            proto, _, idx, hatype, pkttype, halen = struct.unpack_from("!HHIHBB", r.data)
            self.assertEqual((proto, idx, hatype, pkttype, halen), (0x0800, ifindex, 1, 0, 6))
            self.assertEqual(r.data[12:18], pcaplib.mac(v.SEND_MAC))
            self.assertEqual(r.wirelen, r.caplen)
            tags += capdtest.udp_tags([as_ethernet(r)], v.SEND_ADDR, v.CAP_ADDR)
        self.assertEqual(sorted(s for src, s in tags if src == SOURCE), list(range(300)))
        if capdtest.have("tcpdump"):
            out = os.path.join(self.out, "b.pcap")
            p = subprocess.run(["tcpdump", "-n", "-r", out, "udp and dst port 9 and src host",
                                v.SEND_ADDR], capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(len(p.stdout.splitlines()), len(cap.records))

    def test_listing_shows_bare_names_and_numbers_select_them(self):
        v = self.veth
        run = capdtest.run_capd(["-D"], netns=v.cap)
        self.assertCapdOk(run)
        lines = run.stdout.splitlines()
        mine = [l for l in lines if l.split(".", 1)[1].startswith(f"{v.cap_if} (")]
        self.assertEqual(len(mine), 1, run.stdout)
        self.assertIn(f"(af_packet:{v.cap_if}, kernel interface, up; also af_xdp:{v.cap_if})",
                      mine[0])
        self.assertTrue(any(l.split(".", 1)[1].startswith("any (af_packet:any,") for l in lines),
                        run.stdout)
        number = mine[0].split(".", 1)[0]
        c = self.start_ready(["--ctl", "none", "-w", os.path.join(self.out, "n.pcap"),
                              "-i", number])
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run)
        self.assertTrue(run.stderr_lines[0].startswith(f"{READY}af_packet:{v.cap_if}, "),
                        run.describe())

    def send_udp(self, ns, dst, n):
        """n UDP datagrams to dst:9 from inside namespace ns, bounded."""
        code = ("import socket, sys\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "for i in range(int(sys.argv[2])): s.sendto(b'LCDIR' + bytes([i]), (sys.argv[1], 9))\n")
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, dst, str(n)],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_direction(self):
        """-Q in keeps the datagrams coming in to the capture interface, -Q out
        those it sends, inout (the default) both."""
        v = self.veth
        self.in_cap("ip", "neigh", "replace", v.SEND_ADDR, "lladdr", v.SEND_MAC, "dev", v.cap_if,
                    "nud", "permanent")
        want = {"in": {v.SEND_ADDR: 5}, "out": {v.CAP_ADDR: 5},
                "inout": {v.SEND_ADDR: 5, v.CAP_ADDR: 5}}
        for q, counts in want.items():
            with self.subTest(Q=q):
                out = os.path.join(self.out, f"q-{q}.pcap")
                c = self.start_ready(["--ctl", "none", "-w", out, "-Q", q, "-i", v.cap_if,
                                      "udp", "and", "port", "9"])
                self.send_udp(v.send, v.CAP_ADDR, 5)
                self.send_udp(v.cap, v.SEND_ADDR, 5)
                hidden = os.path.join(self.out, f".q-{q}.pcap.partial")
                capdtest.wait_until(lambda: len(capdtest.records_so_far(hidden)) >=
                                    sum(counts.values()) or not c.running(), 120, 0.1)
                c.signal(signal.SIGINT)
                run = c.wait(timeout=120)
                self.assertCapdOk(run)
                got = collections.Counter(".".join(str(b) for b in r.data[26:30])
                                          for r in self.assertWhole(out).records)
                self.assertEqual(dict(got), counts, run.describe())

    def test_no_promiscuous_mode(self):
        """-p: the interface stays out of promiscuous mode while capd runs;
        without it, it is promiscuous until capd exits. af_packet and af_xdp."""
        cases = [(src, extra, promisc) for src in (self.veth.cap_if, f"af_xdp:{self.veth.cap_if}")
                 for extra, promisc in (([], True), (["-p"], False))]
        for src, extra, promisc in cases:
            with self.subTest(source=src, p=bool(extra)):
                self.assertFalse(self.promisc())
                c = self.start_ready(["--ctl", "none", "-w", os.path.join(self.out, "p.pcap"),
                                      "-i", src] + extra)
                self.assertEqual(self.promisc(), promisc)
                c.signal(signal.SIGINT)
                self.assertCapdOk(c.wait(timeout=120))
                self.assertFalse(self.promisc())

    def test_buffer_size(self):
        """-B KiB sizes the af_packet ring per queue (2 KiB frames, as
        capctl status shows them); it wins over --rx-desc."""
        sock = self.path("c.sock")
        for extra, frames in (([], 4096), (["-B", "1024"], 512),
                              (["-B", "1024", "--rx-desc", "64"], 512), (["-B", "32768"], 16384)):
            with self.subTest(args=extra):
                c = self.start_ready(["--ctl", sock, "-w", os.path.join(self.out, "b.pcap"),
                                      "-i", self.veth.cap_if] + extra)
                p = subprocess.run([CAPCTL, "--ctl", sock, "--json", "status"],
                                   capture_output=True, text=True, timeout=30)
                c.signal(signal.SIGINT)
                self.assertCapdOk(c.wait(timeout=120))
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(json.loads(p.stdout)["data"]["sources"][0]["rx_desc"], frames)


if __name__ == "__main__":
    capdtest.main()
