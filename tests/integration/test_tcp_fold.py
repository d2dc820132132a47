#!/usr/bin/env python3
"""--tcp-flows lives in the flow table (dataplane/flow_table.hh): with
--flow-cutoff, the live diagnosis sees what the capture keeps (the cut
packets no, every SYN and FIN yes) and reports each connection as
`capctl diagnose` reports the kept packets from a file; --tcp-flows alone
turns the table on without cutting, and `capctl flows` lists the same
connections the diagnosis holds."""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capdtest  # noqa: E402
import pcaplib  # noqa: E402

SYN, FIN, RST, ACK, PSH = 0x02, 0x01, 0x04, 0x10, 0x08
T0 = 1_700_000_000 * 10**9
CUTOFF = 5000


def connection(i, segments):
    """Handshake, `segments` data segments of 1000 bytes from the client
    (each ACKed), FINs both ways: [(tcp flags, frame)]."""
    c, s = f"198.18.1.{i + 1}", f"198.19.1.{i + 1}"
    cp, sp = 41000 + i, 80
    cs, ss = 1000 * (i + 1), 70000 * (i + 1)
    out = []

    def fwd(flags, payload=b"", seq=None, ack=None):
        out.append((flags, pcaplib.eth_ipv4_tcp(payload, c, s, cp, sp, seq=seq, ack=ack,
                                                flags=flags)))

    def back(flags, seq, ack):
        out.append((flags, pcaplib.eth_ipv4_tcp(b"", s, c, sp, cp, seq=seq, ack=ack,
                                                flags=flags)))

    fwd(SYN, seq=cs, ack=0)
    back(SYN | ACK, ss, cs + 1)
    fwd(ACK, seq=cs + 1, ack=ss + 1)
    seq = cs + 1
    for n in range(segments):
        fwd(ACK | PSH, bytes([n & 255]) * 1000, seq=seq, ack=ss + 1)
        seq += 1000
        back(ACK, ss + 1, seq)
    fwd(FIN | ACK, seq=seq, ack=ss + 1)
    back(FIN | ACK, ss + 1, seq + 1)
    fwd(ACK, seq=seq + 1, ack=ss + 2)
    return out


def kept_by_cutoff(conn, cutoff):
    """The rule of flow_table.hh: kept while the flow's frame bytes before
    the packet are under the cutoff; SYN, FIN and RST always."""
    kept, total = [], 0
    for flags, frame in conn:
        if total < cutoff or flags & (SYN | FIN | RST):
            kept.append(frame)
        total += len(frame)
    return kept


def strip_frames(x):
    """A report without frame numbers: live ones count every packet the
    source delivered, a file's count the file's."""
    if isinstance(x, dict):
        return {k: strip_frames(v) for k, v in x.items() if "frame" not in k}
    if isinstance(x, list):
        return [strip_frames(v) for v in x]
    return x


class TcpFlowsInTheFlowTable(capdtest.CapdTestCase):
    CONNS = [2, 12, 30]  # data segments: under, past and far past the cutoff

    def setUp(self):
        super().setUp()
        if not os.access(self.capctl_bin(), os.X_OK):
            self.skipTest("capctl not built")
        self.conns = [connection(i, n) for i, n in enumerate(self.CONNS)]
        pkts = [f for c in self.conns for f in c]  # one connection after the other
        self.src = self.path("conns.pcap")
        pcaplib.write_pcap(self.src, [pcaplib.Packet(T0 + n * 1000, f)
                                      for n, (_, f) in enumerate(pkts)])
        self.frames = [f for _, f in pkts]
        # Keeps capd running; the filter rejects it before the flow table.
        self.filler = self.path("filler.pcap")
        pcaplib.write_pcap(self.filler, [pcaplib.Packet(T0 + i, pcaplib.eth_ipv4_udp(b"x" * 18))
                                         for i in range(4)])

    def capctl_bin(self):
        return os.path.join(capdtest.BUILD_DIR, "ctl", "capctl")

    def ctl(self, sock, *args):
        return capdtest.subprocess.run([self.capctl_bin(), "--ctl", sock, "--timeout", "20000"]
                                       + list(args), capture_output=True, text=True,
                                       timeout=60, stdin=capdtest.subprocess.DEVNULL)

    def ctl_json(self, sock, *args):
        r = self.ctl(sock, "--json", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def start(self, args):
        sock = self.path("capd.sock")
        os.makedirs(self.path("out"), exist_ok=True)
        cap = capdtest.start_capd(["--ctl", sock, "-w", self.path("out", "cap.pcap"),
                                   "-i", f"pcap:{self.src}", "-i", f"pcap:{self.filler},loop"]
                                  + args + ["not udp"], sock=sock)
        self.addCleanup(cap.kill)
        return sock

    def wait_seen(self, sock, packets):
        deadline = time.monotonic() + 60
        j = None
        while time.monotonic() < deadline:
            j = self.ctl_json(sock, "diagnose")
            if j["live"]["packets_seen"] >= packets:
                return j
            time.sleep(0.1)
        self.fail(f"the diagnosis saw {j and j['live']['packets_seen']} packets, not {packets}")

    def test_cut_connections_diagnosed_as_their_kept_packets(self):
        kept = [f for c in self.conns for f in kept_by_cutoff(c, CUTOFF)]
        cut = len(self.frames) - len(kept)
        self.assertGreater(cut, 20)
        sock = self.start(["--tcp-flows", "64", "--flow-cutoff", str(CUTOFF)])
        live = self.wait_seen(sock, len(kept))
        self.assertEqual(live["live"]["packets_seen"], len(kept))
        self.assertEqual(live["tcp_packets"], len(kept))

        # The same report as a file holding the kept packets, frames aside.
        want_path = self.path("kept.pcap")
        pcaplib.write_pcap(want_path, [pcaplib.Packet(T0 + self.frames.index(f) * 1000, f)
                                       for f in kept])
        r = capdtest.subprocess.run([self.capctl_bin(), "--json", "diagnose", want_path],
                                    capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        want = json.loads(r.stdout)
        self.assertEqual(len(live["connections"]), len(self.CONNS))
        self.assertEqual(strip_frames(live["connections"]), strip_frames(want["connections"]))
        for c in live["connections"]:
            self.assertEqual(c["handshake"], "complete")
            self.assertEqual(c["close"], "FIN/FIN")
        # The connection under the cutoff is whole; the others' data past
        # it is not seen.
        by_port = {int(c["client"].rsplit(":", 1)[1]): c for c in live["connections"]}
        for i, n in enumerate(self.CONNS):
            data = sum(1000 for f in kept_by_cutoff(self.conns[i], CUTOFF) if len(f) > 1000)
            self.assertEqual(by_port[41000 + i]["client_to_server"]["bytes"], data)
            self.assertEqual(data == n * 1000, i == 0)
        self.assertEqual(live["live"]["in_use"], 3)
        self.assertEqual(live["live"]["evicted"], 0)

        # One table: its counters agree with the diagnosis.
        s = self.ctl_json(sock, "stats")["data"]
        self.assertEqual(s["packets_cut_off"], cut)
        self.assertEqual(s["flows"]["created"], len(self.CONNS))
        self.assertEqual(s["flows"]["cut_off_packets"], cut)
        flows = self.ctl_json(sock, "flows", "--top", "10")["data"]["flows"]
        self.assertEqual(len(flows), len(self.CONNS))
        self.assertEqual(sum(f["packets"] for f in flows), len(self.frames))
        self.assertEqual(sum(f["cut_packets"] for f in flows), cut)

    def test_tcp_flows_alone_turns_the_table_on_without_cutting(self):
        sock = self.start(["--tcp-flows", "64"])
        live = self.wait_seen(sock, len(self.frames))
        self.assertEqual(live["live"]["packets_seen"], len(self.frames))
        self.assertEqual(live["live"]["capacity_per_worker"], 64)
        r = capdtest.subprocess.run([self.capctl_bin(), "--json", "diagnose", self.src],
                                    capture_output=True, text=True, timeout=60)
        want = json.loads(r.stdout)
        # Nothing cut: the live report is the file's, frame numbers too.
        self.assertEqual(live["connections"], want["connections"])
        s = self.ctl_json(sock, "stats")["data"]
        self.assertEqual(s["packets_cut_off"], 0)
        self.assertEqual(s["packets_duplicate"], 0)
        self.assertEqual(s["flows"]["created"], len(self.CONNS))
        flows = self.ctl_json(sock, "flows")["data"]["flows"]
        self.assertEqual(sorted(f["packets"] for f in flows),
                         sorted(len(c) for c in self.conns))

    def test_more_connections_than_records(self):
        """Two records for three connections: the diagnosis evicts, the
        cutoff of every flow still holds."""
        kept = [f for c in self.conns for f in kept_by_cutoff(c, CUTOFF)]
        sock = self.start(["--tcp-flows", "2", "--flow-cutoff", str(CUTOFF)])
        live = self.wait_seen(sock, len(kept))
        self.assertEqual(live["live"]["in_use"], 2)
        self.assertEqual(live["live"]["evicted"], 1)
        s = self.ctl_json(sock, "stats")["data"]
        self.assertEqual(s["packets_cut_off"], len(self.frames) - len(kept))

    def test_tcp_flows_alone_hands_the_table_tcp_only(self):
        """--tcp-flows alone: packets without TCP skip the table (not
        counted in its flows); with --flow-table given, every packet is a
        flow's."""
        mixed = self.path("mixed.pcap")
        udp = [pcaplib.eth_ipv4_udp(b"u" * 30, "198.18.2.1", "198.19.2.1", 5000, 53)
               for _ in range(5)]
        pcaplib.write_pcap(mixed, [pcaplib.Packet(T0 + n * 1000, f)
                                   for n, f in enumerate(self.frames + udp)])
        for extra, created in (([], 3), (["--flow-table", "1024"], 4)):
            with self.subTest(extra=extra):
                stats = self.path("stats.json")
                run = self.capd(["-q", "-i", f"pcap:{mixed}", "-w", self.path("o.pcap"),
                                 "--stats-json", stats, "--tcp-flows", "64"] + extra)
                self.assertCapdOk(run, quiet=True)
                s = capdtest.read_json(stats)
                self.assertEqual(s["flows"]["created"], created)
                self.assertEqual(s["packets_written"], len(self.frames) + len(udp))
                self.assertEqual(s["packets_cut_off"], 0)

    def test_records_too_big_for_memory(self):
        """The TCP records are mapped with the flow table at start: too many
        for MemAvailable is one line and exit 1, before capture."""
        with open("/proc/meminfo") as f:
            avail = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))
        per_worker = (1 << 22) * 744 + 262144 * 132  # records and the default table
        workers = avail // per_worker + 1
        if workers > 64:
            self.skipTest("more memory than 64 workers' largest TCP pools")
        run = self.capd(["-i", f"pcap:{self.src}", "-w", self.path("o.pcap"),
                         "--workers", str(workers), "--tcp-flows", str(1 << 22)])
        self.assertEqual(run.rc, 1, run.describe())
        lines = [l for l in run.stderr_lines if not l.startswith("capd: warning:")]
        self.assertEqual(len(lines), 1, run.describe())
        self.assertIn("--tcp-flows 4194304", lines[0])
        self.assertIn("memory available", lines[0])
        self.assertFalse(os.path.exists(self.path("o.pcap")))


if __name__ == "__main__":
    unittest.main()
