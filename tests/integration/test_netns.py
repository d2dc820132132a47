#!/usr/bin/env python3
"""Capture inside another network namespace: -i af_packet:IFACE@netns=NAME
and -i af_packet:IFACE@pid=PID, with capd itself in the root namespace.

The test makes two namespaces joined by a veth pair (capdtest.VethNamespaces:
198.18.1.2 in `cap`, 198.18.1.1 in `send`; only 198.18.0.0/15 is used). The
capture interface exists only inside `cap`, so a capture that works proves
the source was opened in that namespace. A bounded burst of tagged UDP
datagrams goes from `send` to `cap`, and the file must hold exactly those
datagrams (count, addresses, ports, MACs), plus the readiness probes.

af_packet sources read TPACKET_V3 rings: records carry the kernel's receive
timestamps, and VLAN tags the kernel took out are put back.

Also: capd -D lists the namespace's interfaces in the -i spelling (and that
very line captures), and clear one-line errors for a missing namespace, a
missing process, an interface that is not in the namespace, no permission,
and malformed @netns=/@pid= suffixes. Namespaces are deleted in cleanups.
"""

import collections
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import capdtest
import pcaplib
from capdtest import CapdTestCase

BURST = 600
SOURCE = 0x4E  # tag source of the burst; SOURCE + 1 tags the probes
FILTER = ["udp", "and", "dst", "port", "9"]


def mac(text):
    return bytes(int(b, 16) for b in text.split(":"))


def udp_fields(data):
    """(src ip, dst ip, src port, dst port) of an Ethernet/IPv4/UDP frame."""
    ihl = (data[14] & 0x0F) * 4
    u = 14 + ihl
    return (".".join(str(b) for b in data[26:30]), ".".join(str(b) for b in data[30:34]),
            int.from_bytes(data[u:u + 2], "big"), int.from_bytes(data[u + 2:u + 4], "big"))


def vlan_udp_frame(dst, src, tci, payload):
    """An Ethernet frame with an 802.1Q tag (TCI tci) around an IPv4/UDP
    datagram 198.18.5.1:4000 -> 198.18.5.2:9 carrying payload."""
    udp = struct.pack("!HHHH", 4000, 9, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                               bytes([198, 18, 5, 1]), bytes([198, 18, 5, 2])))
    csum = sum(struct.unpack("!10H", ip))
    csum = (csum & 0xFFFF) + (csum >> 16)
    ip[10:12] = struct.pack("!H", ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF)
    return dst + src + struct.pack("!HH", 0x8100, tci) + b"\x08\x00" + bytes(ip) + udp


def send_raw(test, v, frames):
    """Sends Ethernet frames as they are into the link from the `send` side."""
    send = ("import socket, sys\n"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
            f"s.bind(({v.send_if!r}, 0))\n"
            "for f in sys.stdin.read().split():\n"
            "    s.send(bytes.fromhex(f))\n")
    p = subprocess.run(["ip", "netns", "exec", v.send, "python3", "-c", send],
                       input=" ".join(f.hex() for f in frames), capture_output=True, text=True,
                       timeout=60)
    test.assertEqual(p.returncode, 0, p.stderr)


def pid_max():
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read())


def run_as_nobody(args):
    """capd as uid/gid 65534 with no supplementary groups, bounded."""
    def drop():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    args = [str(a) for a in args]
    p = subprocess.run([capdtest.CAPD] + args, capture_output=True, stdin=subprocess.DEVNULL,
                       timeout=capdtest.CAPD_TIMEOUT, preexec_fn=drop, cwd="/")
    return capdtest.CapdRun(args, p.returncode, p.stdout.decode("utf-8", "replace"),
                            p.stderr.decode("utf-8", "replace"))


class Namespaced(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.veth = capdtest.make_veth(self, "n")
        # The point of the test: the capture interface is not in capd's
        # namespace, so only a source opened inside `cap` can reach it.
        self.assertFalse(os.path.exists(f"/sys/class/net/{self.veth.cap_if}"),
                         f"{self.veth.cap_if} exists in the root namespace")
        self.out = self.path("out")
        os.mkdir(self.out)


class Capture(capdtest.VethCapture, Namespaced):
    def capture(self, source, burst=BURST, quiet=True, extra=()):
        """capd in the root namespace on `source` (or a list of sources, then
        written as pcapng); probes until it receives, then a burst of `burst`
        datagrams; SIGINT. Returns (run, records) or, for a list, (run, cap).
        quiet: nothing at all on stderr (libbpf talks when af_xdp loads its
        program, so af_xdp runs only need exit status 0)."""
        several = isinstance(source, list)
        name = "ns.pcapng" if several else "ns.pcap"
        out = os.path.join(self.out, name)
        js = self.path("stats.json")
        args = ["-q", "-w", out, "--stats-json", js] + list(extra)
        for src in (source if several else [source]):
            args += ["-i", src]
        if several:
            args += ["--format", "pcapng"]
        c, sender = self.start_probed(args + FILTER, SOURCE)
        if not c.running():
            self.fail("capd ended early\n" + c.wait().describe())
        sender.command(f"burst {burst}", timeout=120)
        capdtest.wait_until(lambda: len(set(self.seen(SOURCE))) >= burst or not c.running(),
                            timeout=120, interval=0.2)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run, quiet=quiet)
        self.assertNoHidden(self.out)
        self.assertEqual(capdtest.listdir(self.out), [name])
        cap = self.assertWhole(out)
        self.assertEqual(capdtest.read_json(js)["packets_written"], len(cap.records))
        return run, (cap if several else cap.records)

    def assertExactlyTheBurst(self, records, run, burst=BURST):
        v = self.veth
        burst_seqs, probes, other = [], 0, []
        for i, r in enumerate(records):
            tags = capdtest.udp_tags([r], v.SEND_ADDR, v.CAP_ADDR)
            if len(r.data) < 42 or not tags:
                other.append(i)
                continue
            src, seq = tags[0]
            self.assertEqual(r.data[0:6], mac(v.CAP_MAC), f"record {i}: destination MAC")
            self.assertEqual(r.data[6:12], mac(v.SEND_MAC), f"record {i}: source MAC")
            self.assertEqual(udp_fields(r.data),
                             (v.SEND_ADDR, v.CAP_ADDR, 41000 + seq % 16, 9),
                             f"record {i}: addresses and ports")
            if src == SOURCE:
                burst_seqs.append(seq)
            elif src == SOURCE + 1:
                probes += 1
            else:
                other.append(i)
        self.assertEqual(other, [], "records that are not the burst or a probe\n" + run.describe())
        counts = collections.Counter(burst_seqs)
        missing = [s for s in range(burst) if counts[s] == 0]
        dups = sorted(s for s, n in counts.items() if n > 1)
        self.assertEqual((missing[:20], len(missing), dups[:20]), ([], 0, []),
                         "every datagram of the burst captured exactly once\n" + run.describe())
        self.assertEqual(len(burst_seqs), burst)
        self.assertGreater(probes, 0)
        self.assertEqual(len(records), burst + probes)

    def link_frames(self):
        """Frames the capture interface received plus those it sent: what an
        AF_PACKET socket on it is offered."""
        n = 0
        for name in ("rx_packets", "tx_packets"):
            p = subprocess.run(["ip", "netns", "exec", self.veth.cap, "cat",
                                f"/sys/class/net/{self.veth.cap_if}/statistics/{name}"],
                               capture_output=True, text=True, timeout=30)
            n += int(p.stdout.strip())
        return n

    def test_full_kernel_ring_is_counted(self):
        """A capd stopped while the burst arrives, on a 64-frame kernel ring
        (--rx-desc 64): the kernel drops what the ring cannot hold, and capd
        counts exactly those frames as nic_imissed: received + imissed equals
        every frame the interface saw (the burst, the probes and the ICMP
        port-unreachable replies of the capture side)."""
        out = os.path.join(self.out, "k.pcap")
        js = self.path("k.json")
        sock = self.path("k.sock")
        c, sender = self.start_probed(["-q", "-w", out, "--stats-json", js, "--rx-desc", "64",
                                       "--ctl", sock, "-i",
                                       f"af_packet:{self.veth.cap_if}@netns={self.veth.cap}"],
                                      SOURCE)
        def counted():
            """What capd has received or counted as imissed so far."""
            p = subprocess.run([os.path.join(capdtest.BUILD_DIR, "ctl", "capctl"), "--ctl", sock,
                                "--json", "stats"], capture_output=True, text=True, timeout=30)
            s = json.loads(p.stdout)["data"]
            return s["packets_received"] + s["drops"]["nic_imissed"]

        # From here on the socket sees every frame: count from a quiet moment,
        # when neither the link's counters nor capd's have moved for 0.5 s
        # (a fixed pause may end before a worker on a loaded machine has
        # read the last probes' frames, which the link has already counted).
        samples = []

        def quiet():
            samples.append((counted(), self.link_frames()))
            time.sleep(0.5)
            samples.append((counted(), self.link_frames()))
            return samples[-1] == samples[-2]

        self.assertTrue(capdtest.wait_until(quiet, 60, 0.05), f"never quiet: {samples[-6:]}")
        seen0, before = samples[-1]
        c.signal(signal.SIGSTOP)
        try:
            sender.command("burst 2000", timeout=120)
        finally:
            c.signal(signal.SIGCONT)
        # capd reads what its ring held once it runs again; stop it only once
        # it has counted every frame the link has (bounded: a frame lost
        # uncounted fails below with the summary's numbers).
        capdtest.wait_until(lambda: counted() - seen0 == self.link_frames() - before, 120, 0.2)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run, quiet=True)
        offered = self.link_frames() - before
        s = capdtest.read_json(js)
        d = s["drops"]
        self.assertGreater(d["nic_imissed"], 0, "a 64-frame ring cannot hold 2000 frames")
        self.assertEqual(s["packets_received"] + d["nic_imissed"] - seen0, offered,
                         f"received + imissed = frames on the link\n{run.describe()}")
        for k in capdtest.stages_after_receipt(s):
            self.assertEqual(d[k], 0, k)
        self.assertEqual(s["packets_written"], s["packets_received"])
        self.assertEqual(len(self.assertWhole(out).records), s["packets_written"])

    def test_kernel_timestamps(self):
        """af_packet records carry the kernel's receive time, not the time a
        worker read them: with capd stopped while the burst arrives, every
        burst frame is stamped inside the sending window (in ns, in order),
        though capd read them all after it."""
        out = os.path.join(self.out, "t.pcap")
        c, sender = self.start_probed(["-q", "--nano", "-w", out, "-i",
                                       f"af_packet:{self.veth.cap_if}@netns={self.veth.cap}"]
                                      + FILTER, SOURCE)
        c.signal(signal.SIGSTOP)
        try:
            t0 = time.time_ns()
            sender.command("burst 300", timeout=120)
            t1 = time.time_ns()
            time.sleep(0.5)
        finally:
            c.signal(signal.SIGCONT)
        capdtest.wait_until(lambda: len(self.seen(SOURCE)) >= 300 or not c.running(),
                            timeout=120, interval=0.2)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run, quiet=True)
        recs = self.assertWhole(out).records
        ts = [r.ts_ns for r in recs
              for src, _ in capdtest.udp_tags([r], self.veth.SEND_ADDR, self.veth.CAP_ADDR)
              if src == SOURCE]
        self.assertEqual(len(ts), 300, run.describe())
        self.assertEqual(ts, sorted(ts), "timestamps in order")
        late = [t for t in ts if not t0 <= t <= t1]
        self.assertEqual(late, [], f"stamped outside the sending window [{t0}, {t1}]")

    def test_vlan_tag_restored(self):
        """The kernel takes a VLAN tag out of a received frame (it travels
        beside it); capd puts it back, as libpcap does. 802.1Q frames
        (priority 1, VLAN 100) sent raw into the link arrive in the file
        byte for byte, tag included, and 'vlan 100' selects them."""
        v = self.veth
        out = os.path.join(self.out, "v.pcap")
        c, _ = self.start_probed(["-q", "-w", out, "-i", f"af_packet:{v.cap_if}@netns={v.cap}",
                                  "udp and dst port 9 or vlan 100"],
                                 SOURCE)
        frames = [vlan_udp_frame(mac(v.CAP_MAC), mac(v.SEND_MAC), 0x2064, bytes([i]) * 30)
                  for i in range(20)]
        send_raw(self, v, frames)

        def tagged():
            recs = []
            for f in capdtest.listdir(self.out):
                recs += [r for r in capdtest.records_so_far(os.path.join(self.out, f))
                         if r.data[12:14] == b"\x81\x00"]
            return recs

        capdtest.wait_until(lambda: len(tagged()) >= len(frames) or not c.running(),
                            timeout=120, interval=0.2)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run, quiet=True)
        recs = tagged()
        self.assertEqual([r.data for r in recs], frames, run.describe())
        self.assertEqual([r.wirelen for r in recs], [len(f) for f in frames])

    def test_vlan_tagged_frames_are_filtered_like_tcpdump_r(self):
        """The kernel takes the tag out of a received frame before packet
        sockets see it, so live tcpdump's 'udp and dst port 9' matches the
        tagged datagram as if it were untagged. capd filters the frame with
        its tag back in, as `tcpdump -r` does: there 'udp and dst port 9'
        does not match a tagged frame ('vlan and udp and dst port 9' does).
        Both run side by side on the same link; README says so."""
        if not capdtest.have("tcpdump"):
            self.skipTest("tcpdump is not installed")
        v = self.veth
        live_dir = tempfile.mkdtemp(prefix="lc-live-")
        self.addCleanup(shutil.rmtree, live_dir, True)
        live_file = os.path.join(live_dir, "live-tcpdump.pcap")
        live = subprocess.Popen(["ip", "netns", "exec", v.cap, "tcpdump", "-n", "-U", "-i",
                                 v.cap_if, "-w", live_file] + FILTER,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: live.poll() is None and live.kill())
        self.assertIn("listening on", live.stderr.readline(), "tcpdump did not start")
        out = os.path.join(self.out, "capd.pcap")
        c, sender = self.start_probed(["-q", "-w", out, "-i",
                                       f"af_packet:{v.cap_if}@netns={v.cap}"] + FILTER, SOURCE)
        frames = [vlan_udp_frame(mac(v.CAP_MAC), mac(v.SEND_MAC), 0x2064, bytes([i]) * 30)
                  for i in range(20)]
        send_raw(self, v, frames)

        def tagged(path):
            return [r for r in capdtest.records_so_far(path) if r.data[12:14] == b"\x81\x00"]

        self.assertTrue(capdtest.wait_until(lambda: len(tagged(live_file)) >= len(frames),
                                            timeout=120, interval=0.2),
                        "live tcpdump did not take the tagged datagrams")
        # A last untagged probe after the tagged frames: once capd has it, it
        # has seen the tagged ones too.
        probes = len(self.seen(SOURCE + 1))
        sender.command("probe")
        self.assertTrue(capdtest.wait_until(lambda: len(self.seen(SOURCE + 1)) > probes,
                                            timeout=120, interval=0.2), "capd saw no later probe")
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run, quiet=True)
        live.send_signal(signal.SIGINT)
        live.wait(timeout=30)
        # Live tcpdump: the tagged datagrams matched (and are written with
        # their tags put back). capd: not one.
        self.assertEqual([r.data for r in tagged(live_file)], frames)
        self.assertEqual(tagged(out), [])
        # tcpdump -r over the live file agrees with capd, not with live tcpdump.
        for expr, want in ((FILTER, 0), (["vlan", "and"] + FILTER, len(frames))):
            picked = os.path.join(live_dir, "picked.pcap")
            r = subprocess.run(["tcpdump", "-n", "-r", live_file, "-w", picked] + expr,
                               capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            recs = pcaplib.read_capture(picked).records
            self.assertEqual(len([x for x in recs if x.data[12:14] == b"\x81\x00"]), want,
                             " ".join(expr))

    def test_loopback_once(self):
        """On a loopback interface the kernel shows each packet twice, as
        sent and as received; capd keeps one copy, as tcpdump does: 40
        datagrams to 127.0.0.1 inside the namespace, 40 records."""
        out = os.path.join(self.out, "lo.pcap")
        c = capdtest.RunningCapd(["-q", "-w", out, "-i", f"af_packet:lo@netns={self.veth.cap}",
                                  "udp and dst port 9"])
        self.addCleanup(c.kill)

        def send(tag, n):
            code = ("import socket\n"
                    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    f"for i in range({n}): s.sendto({tag!r} + bytes([i]), ('127.0.0.1', 9))\n")
            p = subprocess.run(["ip", "netns", "exec", self.veth.cap, "python3", "-c", code],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)

        def payloads():
            got = []
            for f in capdtest.listdir(self.out):
                got += [r.data[42:] for r in capdtest.records_so_far(os.path.join(self.out, f))]
            return got

        def probed():
            if not c.running():
                return True
            send(b"PROBE", 1)
            return any(p.startswith(b"PROBE") for p in payloads())

        self.assertTrue(capdtest.wait_until(probed, timeout=60, interval=0.2),
                        "capd captured no probe on lo within 60 s")
        send(b"ONCE", 40)
        capdtest.wait_until(lambda: sum(p.startswith(b"ONCE") for p in payloads()) >= 40
                            or not c.running(), timeout=120, interval=0.2)
        time.sleep(0.3)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run, quiet=True)
        once = [p for p in payloads() if p.startswith(b"ONCE")]
        self.assertEqual(once, [b"ONCE" + bytes([i]) for i in range(40)], run.describe())

    def test_netns_name(self):
        source = f"af_packet:{self.veth.cap_if}@netns={self.veth.cap}"
        run, records = self.capture(source)
        self.assertExactlyTheBurst(records, run)

    def test_both_ends(self):
        """Both ends of the link at once, each inside its own namespace, one
        worker per port: the burst leaves one interface and reaches the
        other, and each interface of the pcapng file holds it exactly once
        (the two-point capture the seeds recommend, from one capd)."""
        v = self.veth
        sources = [f"af_packet:{v.send_if}@netns={v.send}", f"af_packet:{v.cap_if}@netns={v.cap}"]
        run, cap = self.capture(sources, extra=["--workers", "2", "--writers", "1"])
        self.assertEqual([i.name for i in cap.interfaces], sources)
        for ifid, src in enumerate(sources):
            with self.subTest(interface=src):
                self.assertExactlyTheBurst([r for r in cap.records if r.ifid == ifid], run)

    def test_af_xdp_netns_name(self):
        """af_xdp attaches its XDP program to the interface inside the
        namespace, and detaches it there when capd ends. (XDP takes the
        received frames away from the kernel; the sender needs no answer,
        since its neighbour entry is permanent.)"""
        v = self.veth
        run, records = self.capture(f"af_xdp:{v.cap_if}@netns={v.cap}", burst=300, quiet=False)
        self.assertExactlyTheBurst(records, run, burst=300)
        link = subprocess.run(["ip", "-n", v.cap, "-d", "link", "show", v.cap_if],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(link.returncode, 0, link.stderr)
        self.assertNotIn("prog/xdp", link.stdout, "XDP program left attached after capd ended")

    def test_pid(self):
        holder = capdtest.hold_namespace(self, self.veth.cap)
        run, records = self.capture(f"af_packet:{self.veth.cap_if}@pid={holder.pid}", burst=200)
        self.assertExactlyTheBurst(records, run, burst=200)

    def test_listed_source_captures(self):
        """capd -D lists the namespace's interfaces as -i sources, and the
        listed text, pasted into -i, captures."""
        v = self.veth
        run = self.capd(["-D"])
        self.assertCapdOk(run)
        want = f"af_packet:{v.cap_if}@netns={v.cap}"
        lines = [l for l in run.stdout.splitlines() if f".{want} (" in l]
        self.assertEqual(len(lines), 1, run.describe())
        self.assertIn(f"network namespace {v.cap}, up;", lines[0])
        self.assertIn(f"also af_xdp:{v.cap_if}@netns={v.cap})", lines[0])
        self.assertIn(f".af_packet:lo@netns={v.cap} (", run.stdout)
        self.assertIn(f".af_packet:{v.send_if}@netns={v.send} (", run.stdout)
        # Interfaces of a namespace are not listed as the root namespace's.
        self.assertNotIn(f".af_packet:{v.cap_if} (", run.stdout)
        source = lines[0].split(".", 1)[1].split(" (", 1)[0]
        self.assertEqual(source, want)
        run, records = self.capture(source, burst=100)
        self.assertExactlyTheBurst(records, run, burst=100)


class Netmask(Namespaced):
    """Filters on a kernel interface compile with its IPv4 netmask, found in
    its namespace (`ip broadcast` then also matches the /24's broadcast);
    files compile with 0, as tcpdump -r does."""

    def listing(self, source):
        run = self.capd(["-i", source, "-d", "ip broadcast"])
        self.assertCapdOk(run, quiet=True)
        return run.stdout

    def test_interface_netmask(self):
        out = self.listing(f"af_packet:{self.veth.cap_if}@netns={self.veth.cap}")
        self.assertIn("#0xff ", out, "host part of 198.18.1.2/24 in the compiled filter")

    def test_file_netmask_is_zero(self):
        src = os.path.join(capdtest.DATA_DIR, "demo", "web-mix.pcap")
        out = self.listing(f"pcap:{src}")
        self.assertIn("#0xffffffff", out)
        self.assertNotIn("#0xff ", out)


class Errors(Namespaced):
    def assertRefused(self, args, fragment, as_nobody=False):
        out = os.path.join(self.out, "x.pcap")
        args = args + (["-w", out] if "--rx-only" not in args else [])
        run = run_as_nobody(args) if as_nobody else self.capd(args)
        self.assertNotEqual(run.rc, 0, run.describe())
        self.assertEqual(len(run.stderr_lines), 1, run.describe())
        self.assertIn(fragment, run.stderr_lines[0], run.describe())
        self.assertTrue(run.stderr_lines[0].startswith("capd: "), run.describe())
        self.assertEqual(capdtest.listdir(self.out), [], "no file for a refused command")
        return run.stderr_lines[0]

    def test_missing_namespace(self):
        name = f"lc-test-{os.getpid()}-none"
        line = self.assertRefused(["-i", f"af_packet:lo@netns={name}"],
                                  f"no such network namespace '{name}'")
        self.assertIn(f"source 'af_packet:lo@netns={name}'", line)

    def test_missing_process(self):
        pid = pid_max() + 1
        self.assertRefused(["-i", f"af_packet:lo@pid={pid}"], f"no such process {pid}")

    def test_interface_not_in_namespace(self):
        v = self.veth
        # send_if exists, but in the other namespace.
        for kind in ("af_packet", "af_xdp"):
            with self.subTest(kind=kind):
                self.assertRefused(
                    ["-i", f"{kind}:{v.send_if}@netns={v.cap}"],
                    f"no such interface '{v.send_if}' in network namespace '{v.cap}'")

    def test_interface_not_in_process_namespace(self):
        v = self.veth
        holder = capdtest.hold_namespace(self, v.cap)
        self.assertRefused(
            ["-i", f"af_packet:{v.send_if}@pid={holder.pid}"],
            f"no such interface '{v.send_if}' in the network namespace of process {holder.pid}")

    def test_not_permitted(self):
        """An unprivileged user may not enter another network namespace."""
        v = self.veth
        for source in (f"af_packet:{v.cap_if}@netns={v.cap}", "af_packet:lo@pid=1"):
            with self.subTest(source=source):
                self.assertRefused(["--rx-only", "-i", source], "not permitted",
                                   as_nobody=True)

    def test_malformed(self):
        for source, fragment in (
                ("af_packet:eth0@pid=abc", "expected a process id after @pid="),
                ("af_packet:eth0@pid=0", "expected a process id after @pid="),
                ("af_packet:eth0@pid=-3", "expected a process id after @pid="),
                ("af_packet:eth0@netns=", "expected a namespace name after @netns="),
                ("af_packet:eth0@netns=../x", "expected a namespace name after @netns="),
                ("af_xdp:eth0@zone=1", "expected IFACE, IFACE@netns=NAME or IFACE@pid=PID"),
                ("af_packet:@netns=blue", "expected an interface name")):
            with self.subTest(source=source):
                line = self.assertRefused(["-i", source], fragment)
                self.assertIn(f"source '{source}'", line)


if __name__ == "__main__":
    capdtest.main()
