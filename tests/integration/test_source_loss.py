#!/usr/bin/env python3
"""A kernel interface that goes away while capd captures on it, and the
af_xdp interface checks.

Each test makes its own namespaces joined by a veth pair
(capdtest.VethNamespaces: 198.18.1.2 in `cap`, 198.18.1.1 in `send`; only
198.18.0.0/15 is used), starts capd in the root namespace on the `cap` end
(af_packet:IFACE@netns=NAME, @pid=PID or af_xdp:), waits until capd
captures, sends a bounded burst and then deletes the veth.

- By default capd stops as tcpdump does ("The interface disappeared"): one
  stderr line naming the source, exit 1, the file whole and under its final
  name with the burst in it, the loss in the summary's errors and the
  source's state "lost" in --stats-json.
- With --on-source-loss continue and a second source (another pair of
  namespaces), capd goes on capturing the other one; `capctl status` shows
  the lost source; the exit status at the end is 1.
- A link that merely goes down is not a loss: capd says so, waits, and
  captures again once it is up.
- af_xdp: promiscuous mode is given back at exit (also after kill -9), more
  workers than the interface has queues is refused with a line that says
  so, another XDP program on the interface is refused and left in place,
  and libxdp's program left by a killed capd is taken over and removed.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

import capdtest
from capdtest import CapdTestCase, RunningCapd

SOURCE = 0x5C  # tag source of the bursts; SOURCE + 1 tags the probes
FILTER = ["udp", "and", "dst", "port", "9"]
CAPCTL = os.path.join(capdtest.BUILD_DIR, "ctl", "capctl")


def stderr_now(c):
    # pread: capd shares this file's offset, which a seek would move under
    # its next write.
    return os.pread(c.err.fileno(), 1 << 20, 0).decode("utf-8", "replace")


def link_details(veth, ns, ifname):
    p = subprocess.run(["ip", "-n", ns, "-d", "link", "show", ifname], capture_output=True,
                       text=True, timeout=30)
    return p.stdout


def promiscuity(veth, ns, ifname):
    m = re.search(r"promiscuity (\d+)", link_details(veth, ns, ifname))
    return int(m.group(1)) if m else None


class Lossy(capdtest.VethCapture, CapdTestCase):
    def setUp(self):
        super().setUp()
        self.veth = capdtest.make_veth(self, "l")
        self.out = self.path("out")
        os.mkdir(self.out)
        self.sock = self.path("c.sock")
        self.js = self.path("s.json")

    def capctl_status(self):
        p = subprocess.run([CAPCTL, "--ctl", self.sock, "--json", "status"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)["data"]

    def start(self, sources, extra=()):
        """capd on `sources` into out/x.pcap(ng), probed until it captures."""
        ng = len(sources) > 1
        self.file = os.path.join(self.out, "x.pcapng" if ng else "x.pcap")
        args = ["-w", self.file, "--stats-json", self.js, "--ctl", self.sock] + list(extra)
        if ng:
            args += ["--format", "pcapng"]
        for s in sources:
            args += ["-i", s]
        c, sender = self.start_probed(args + FILTER, SOURCE)
        if not c.running():
            self.fail("capd ended early\n" + c.wait().describe())
        return c, sender

    def burst(self, c, sender, n=100):
        before = len(set(self.seen(SOURCE)))
        sender.command(f"burst {n}", timeout=120)
        self.assertTrue(capdtest.wait_until(
            lambda: len(set(self.seen(SOURCE))) >= before + n or not c.running(), 120, 0.2),
            "the burst never reached the file")

    def delete_and_wait(self, c, ns, ifname):
        subprocess.run(["ip", "-n", ns, "link", "del", ifname], check=True, timeout=30)
        try:
            c.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("capd still running 60 s after its interface was deleted:\n" +
                      stderr_now(c))
        return c.wait()

    def assertStoppedOnLoss(self, run, source):
        self.assertEqual(run.rc, 1, run.describe())
        line = f"capd: source '{source}': the interface disappeared while capturing; stopping"
        self.assertIn(line, run.stderr_lines, run.describe())
        self.assertIn(f"capd: error: source '{source}': the interface disappeared",
                      run.stderr_lines, run.describe())
        self.assertNoHidden(self.out)
        self.assertEqual(capdtest.listdir(self.out), [os.path.basename(self.file)])
        cap = self.assertWhole(self.file)
        tags = capdtest.udp_tags(cap.records, self.veth.SEND_ADDR, self.veth.CAP_ADDR)
        self.assertEqual(sorted(seq for src, seq in tags if src == SOURCE), list(range(100)))
        s = capdtest.read_json(self.js)
        self.assertIn(f"source '{source}': the interface disappeared", s["errors"])
        self.assertEqual([(x["name"], x["state"]) for x in s["sources"]], [(source, "lost")])
        self.assertEqual(s["packets_written"], len(cap.records))


class SourceLoss(Lossy):
    def check_stops(self, source, delete_in=None):
        v = self.veth
        c, sender = self.start([source])
        self.burst(c, sender)
        ns, ifname = delete_in or (v.cap, v.cap_if)
        run = self.delete_and_wait(c, ns, ifname)
        self.assertStoppedOnLoss(run, source)

    def test_af_packet_netns(self):
        self.check_stops(f"af_packet:{self.veth.cap_if}@netns={self.veth.cap}")

    def test_af_packet_pid_peer_deleted(self):
        """@pid= source; the veth is deleted from its other end, as a
        container runtime deletes the host side."""
        holder = capdtest.hold_namespace(self, self.veth.cap)
        self.check_stops(f"af_packet:{self.veth.cap_if}@pid={holder.pid}",
                         delete_in=(self.veth.send, self.veth.send_if))

    def test_af_xdp(self):
        self.check_stops(f"af_xdp:{self.veth.cap_if}@netns={self.veth.cap}")

    def test_link_down_is_not_a_loss(self):
        """Down is not gone: capd says so, keeps its state "down" in capctl
        status, and captures again once the link is up; exit 0."""
        v = self.veth
        source = f"af_packet:{v.cap_if}@netns={v.cap}"
        c, sender = self.start([source])
        subprocess.run(["ip", "-n", v.cap, "link", "set", v.cap_if, "down"], check=True,
                       timeout=30)
        down = (f"capd: source '{source}': the interface is down; capture goes on when it is "
                "up again")
        self.assertTrue(capdtest.wait_until(lambda: down in stderr_now(c), 120), stderr_now(c))
        self.assertEqual(self.capctl_status()["sources"][0]["state"], "down")
        subprocess.run(["ip", "-n", v.cap, "link", "set", v.cap_if, "up"], check=True,
                       timeout=30)
        up = f"capd: source '{source}': the interface is up again"
        self.assertTrue(capdtest.wait_until(lambda: up in stderr_now(c), 120), stderr_now(c))
        self.assertEqual(self.capctl_status()["sources"][0]["state"], "ok")
        self.burst(c, sender)
        self.assertTrue(c.running())
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertCapdOk(run)
        s = capdtest.read_json(self.js)
        self.assertEqual(s["errors"], [])
        self.assertEqual(s["sources"][0]["state"], "ok")


class KeepGoing(Lossy):
    def test_other_source_keeps_capturing(self):
        """--on-source-loss continue, two sources in two pairs of
        namespaces: the first is deleted, the second goes on capturing, both
        are reported, exit 1 at the end."""
        v = self.veth
        w = capdtest.make_veth(self, "k")
        lost = f"af_packet:{v.cap_if}@netns={v.cap}"
        kept = f"af_packet:{w.cap_if}@netns={w.cap}"
        c, sender = self.start([lost, kept], extra=["--on-source-loss", "continue"])
        subprocess.run(["ip", "-n", v.cap, "link", "del", v.cap_if], check=True, timeout=30)
        line = (f"capd: source '{lost}': the interface disappeared while capturing; "
                "the other sources go on (--on-source-loss continue)")
        self.assertTrue(capdtest.wait_until(lambda: line in stderr_now(c), 120), stderr_now(c))
        self.assertTrue(c.running(), "capd stopped although another source was left")
        st = self.capctl_status()
        self.assertEqual([(x["name"], x["state"]) for x in st["sources"]],
                         [(lost, "lost"), (kept, "ok")])
        self.assertEqual(st["sources"][0]["error"], f"source '{lost}': the interface disappeared")
        text = subprocess.run([CAPCTL, "--ctl", self.sock, "status"], capture_output=True,
                              text=True, timeout=30).stdout
        self.assertIn(f"{lost} (", text)
        self.assertIn("LOST: source", text)
        # The other pair's sender: its frames reach the second source only.
        other = capdtest.Sender(w, SOURCE)
        self.addCleanup(other.close)
        other.command("burst 100", timeout=120)

        def kept_seqs():
            recs = capdtest.records_so_far(os.path.join(self.out, ".x.pcapng.partial"))
            return {seq for src, seq in capdtest.udp_tags(recs, w.SEND_ADDR, w.CAP_ADDR)
                    if src == SOURCE}

        self.assertTrue(capdtest.wait_until(lambda: len(kept_seqs()) >= 100, 120, 0.2),
                        "the second source stopped capturing")
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 1, run.describe())
        self.assertIn(f"capd: error: source '{lost}': the interface disappeared",
                      run.stderr_lines)
        cap = self.assertWhole(self.file)
        recs = [r for r in cap.records if r.ifid == 1]
        tags = capdtest.udp_tags(recs, w.SEND_ADDR, w.CAP_ADDR)
        self.assertEqual(sorted(seq for src, seq in tags if src == SOURCE), list(range(100)))
        s = capdtest.read_json(self.js)
        self.assertEqual([(x["name"], x["state"]) for x in s["sources"]],
                         [(lost, "lost"), (kept, "ok")])
        self.assertEqual(s["errors"], [f"source '{lost}': the interface disappeared"])

    def test_bad_value(self):
        run = self.capd(["-i", "null", "-w", os.path.join(self.out, "x.pcap"),
                         "--on-source-loss", "maybe"])
        self.assertEqual(run.rc, 1, run.describe())
        self.assertEqual(len(run.stderr_lines), 1, run.describe())
        self.assertIn("--on-source-loss", run.stderr)
        self.assertEqual(capdtest.listdir(self.out), [])


class AfXdp(Lossy):
    def xdp_source(self):
        return f"af_xdp:{self.veth.cap_if}@netns={self.veth.cap}"

    def attached(self):
        m = re.search(r"prog/xdp id \d+ name (\S+)",
                      link_details(self.veth, self.veth.cap, self.veth.cap_if))
        return m.group(1) if m else None

    def test_promiscuous_mode_given_back(self):
        """capd holds the interface promiscuous while it runs, and gives it
        back at a clean exit and after kill -9."""
        v = self.veth
        self.assertEqual(promiscuity(v, v.cap, v.cap_if), 0)
        for how in ("SIGINT", "kill -9"):
            with self.subTest(how=how):
                for f in capdtest.listdir(self.out):
                    os.unlink(os.path.join(self.out, f))
                c, sender = self.start([self.xdp_source()])
                self.assertEqual(promiscuity(v, v.cap, v.cap_if), 1)
                if how == "SIGINT":
                    c.signal(signal.SIGINT)
                    self.assertEqual(c.wait(timeout=120).rc, 0)
                else:
                    c.kill()
                    # What a killed run leaves: libxdp's program (next test).
                    subprocess.run(["ip", "-n", v.cap, "link", "set", "dev", v.cap_if, "xdp",
                                    "off"], check=True, timeout=30)
                sender.close()
                self.assertEqual(promiscuity(v, v.cap, v.cap_if), 0,
                                 link_details(v, v.cap, v.cap_if))

    def test_interface_of_capd_own_namespace(self):
        """af_xdp:IFACE without @netns=, capd started in that namespace:
        the port is probed by capd after EAL, captures, and leaves no
        program behind."""
        v = self.veth
        self.file = os.path.join(self.out, "own.pcap")
        c, sender = self.start_probed(["-w", self.file, "--ctl", self.sock, "-i",
                                       f"af_xdp:{v.cap_if}"] + FILTER, SOURCE, netns=v.cap)
        self.burst(c, sender)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 0, run.describe())
        tags = capdtest.udp_tags(self.assertWhole(self.file).records, v.SEND_ADDR, v.CAP_ADDR)
        self.assertEqual(sorted(seq for src, seq in tags if src == SOURCE), list(range(100)))
        self.assertIsNone(self.attached())

    def test_more_workers_than_queues(self):
        run = self.capd(["-i", self.xdp_source(), "-w", os.path.join(self.out, "x.pcap"),
                         "--workers", "2", "--writers", "1"])
        self.assertEqual(run.rc, 1, run.describe())
        self.assertEqual(len(run.stderr_lines), 1, run.describe())
        self.assertIn(f"capd: source '{self.xdp_source()}' has 1 receive queue; --workers 2 "
                      "needs 2", run.stderr)
        self.assertIn("use --workers 1", run.stderr)
        self.assertEqual(capdtest.listdir(self.out), [])
        self.assertIsNone(self.attached())

    def test_foreign_program_refused_and_kept(self):
        """An XDP program of someone else's is neither replaced nor removed:
        capd refuses to start and says how to remove it."""
        if not shutil.which("clang"):
            self.skipTest("clang is not installed")
        d = tempfile.mkdtemp(prefix="linecap-xdp-")
        self.addCleanup(shutil.rmtree, d, True)
        src = os.path.join(d, "pass.c")
        with open(src, "w") as f:
            f.write('__attribute__((section("xdp"), used)) int lc_test_pass(void *c) '
                    '{ return 2; }\n'
                    'char _license[] __attribute__((section("license"), used)) = "GPL";\n')
        obj = os.path.join(d, "pass.o")
        subprocess.run(["clang", "-O2", "-target", "bpf", "-c", src, "-o", obj], check=True,
                       timeout=120)
        v = self.veth
        p = subprocess.run(["ip", "-n", v.cap, "link", "set", "dev", v.cap_if, "xdp", "obj", obj,
                            "sec", "xdp"], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            self.skipTest(f"ip cannot attach an XDP object here: {p.stderr.strip()}")
        self.assertEqual(self.attached(), "lc_test_pass")
        run = self.capd(["-i", self.xdp_source(), "-w", os.path.join(self.out, "x.pcap")])
        self.assertEqual(run.rc, 1, run.describe())
        self.assertEqual(len(run.stderr_lines), 1, run.describe())
        self.assertIn(f"interface '{v.cap_if}' already has an XDP program attached "
                      "('lc_test_pass'", run.stderr)
        self.assertIn(f"`ip -n {v.cap} link set dev {v.cap_if} xdp off`", run.stderr)
        self.assertEqual(self.attached(), "lc_test_pass", "capd removed another program")
        self.assertEqual(capdtest.listdir(self.out), [])

    def test_program_left_by_kill9_taken_over(self):
        """After kill -9 libxdp's program stays attached; the next capd says
        so, captures through it and removes it at exit."""
        c, sender = self.start([self.xdp_source()])
        c.kill()
        sender.close()
        self.assertEqual(self.attached(), "xsk_def_prog")
        for f in capdtest.listdir(self.out):
            os.unlink(os.path.join(self.out, f))
        c, sender = self.start([self.xdp_source()])
        self.burst(c, sender)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 0, run.describe())
        note = [l for l in run.stderr_lines if "still has the AF_XDP program xsk_def_prog" in l]
        self.assertEqual(len(note), 1, run.describe())
        self.assertIn(f"capd: source '{self.xdp_source()}': interface '{self.veth.cap_if}'",
                      note[0])
        self.assertIsNone(self.attached(), "XDP program left attached after capd ended")


LO_SENDER = r'''
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(b"LCAP" + i.to_bytes(6, "big"), (sys.argv[1], 9))
    time.sleep(0.002)
'''


class XdpGeneric(Lossy):
    """--xdp-generic: the XDP program in generic (SKB) mode, which lo needs
    (it has no native XDP) and which capd detaches again at exit."""

    def link(self, ifname):
        return link_details(self.veth, self.veth.cap, ifname)

    def test_lo_needs_generic(self):
        v = self.veth
        run = self.capd(["-i", f"af_xdp:lo@netns={v.cap}", "-w", os.path.join(self.out, "x.pcap"),
                         "--duration", "1"])
        self.assertEqual(run.rc, 1, run.describe())
        self.assertIn("(an interface without native XDP, such as lo, needs --xdp-generic)",
                      run.stderr)
        self.assertNotIn("prog/xdp", self.link("lo"))

    def test_lo(self):
        """Datagrams to the namespace's own address go through its lo, where
        capd captures them through a generic-mode program."""
        v = self.veth
        out = os.path.join(self.out, "lo.pcap")
        c = RunningCapd(["-q", "--xdp-generic", "-i", f"af_xdp:lo@netns={v.cap}", "-w", out,
                         "--ctl", "none"] + FILTER)
        self.addCleanup(c.kill)

        def captured():
            if not c.running():
                return True
            subprocess.run(["ip", "netns", "exec", v.cap, "python3", "-c", LO_SENDER,
                            v.CAP_ADDR, "5"], check=True, timeout=30)
            return bool(capdtest.records_so_far(os.path.join(self.out, ".lo.pcap.partial")))

        self.assertTrue(capdtest.wait_until(captured, 60, 0.2), "nothing captured on lo")
        self.assertTrue(c.running(), c.wait().describe() if not c.running() else "")
        self.assertIn("xdpgeneric", self.link("lo"))
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 0, run.describe())
        recs = self.assertWhole(out).records
        self.assertGreater(len(recs), 0)
        for r in recs:
            self.assertEqual(r.data[30:34], bytes([198, 18, 1, 2]))
        self.assertNotIn("prog/xdp", self.link("lo"), "XDP program left attached on lo")

    def test_veth(self):
        """On a veth, which has native XDP, the program still goes in
        generic mode, captures, and is detached at exit."""
        v = self.veth
        c, sender = self.start([f"af_xdp:{v.cap_if}@netns={v.cap}"], extra=["--xdp-generic"])
        self.assertIn("xdpgeneric", self.link(v.cap_if))
        self.burst(c, sender)
        c.signal(signal.SIGINT)
        run = c.wait(timeout=120)
        self.assertEqual(run.rc, 0, run.describe())
        cap = self.assertWhole(self.file)
        tags = capdtest.udp_tags(cap.records, v.SEND_ADDR, v.CAP_ADDR)
        self.assertEqual(sorted(seq for src, seq in tags if src == SOURCE), list(range(100)))
        self.assertNotIn("prog/xdp", self.link(v.cap_if), "XDP program left attached")


if __name__ == "__main__":
    capdtest.main()
