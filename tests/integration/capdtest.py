"""Shared helpers for capd's integration tests.

Every capd run goes through run_capd()/start_capd(), which bound it with a
timeout so that a hang fails the test instead of blocking CI. main() runs a
test module with unittest and prints a final "N passed, N failed" line; it
exits non-zero if anything failed.

Environment (set by tests/meson.build):
  LINECAP_BUILD_DIR  build root (capd is dataplane/capd under it)
  LINECAP_TEST_DATA  tests/data (holds the tcpdump-tests corpus)
  LINECAP_KEEP_TMP   if set, temporary directories are kept for inspection
"""

import glob
import ipaddress
import json
import os
import re
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pcaplib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))


def _build_dir():
    d = os.environ.get("LINECAP_BUILD_DIR")
    if d:
        return d
    for cand in sorted(glob.glob(os.path.join(REPO, "build*"))):
        if os.path.exists(os.path.join(cand, "dataplane", "capd")):
            return cand
    return os.path.join(REPO, "build")


BUILD_DIR = _build_dir()
CAPD = os.path.join(BUILD_DIR, "dataplane", "capd")
DATA_DIR = os.environ.get("LINECAP_TEST_DATA") or os.path.join(REPO, "tests", "data")
CORPUS_DIR = os.path.join(DATA_DIR, "tcpdump-tests")

# Bound for one ordinary capd run. A run that takes longer is a hang.
CAPD_TIMEOUT = 120


class CapdRun:
    def __init__(self, args, rc, stdout, stderr):
        self.args = args
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr

    @property
    def stderr_lines(self):
        return [l for l in self.stderr.splitlines() if l.strip()]

    def describe(self):
        return (f"capd {' '.join(self.args)}\n  exit {self.rc}\n  stderr: {self.stderr!r}\n"
                f"  stdout: {self.stdout[:500]!r}")


def capd_command(args, netns=None):
    cmd = [CAPD] + list(args)
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    return cmd


def run_capd(args, timeout=CAPD_TIMEOUT, cwd=None, netns=None):
    """Runs capd to completion. A run that outlives `timeout` is killed and
    reported as a failure (AssertionError)."""
    args = [str(a) for a in args]
    try:
        p = subprocess.run(capd_command(args, netns), cwd=cwd, capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        err = (e.stderr or b"").decode("utf-8", "replace")
        raise AssertionError(f"capd {' '.join(args)} did not finish within {timeout} s; "
                             f"stderr so far: {err!r}") from None
    return CapdRun(args, p.returncode, p.stdout.decode("utf-8", "replace"),
                   p.stderr.decode("utf-8", "replace"))


class RunningCapd:
    """A capd started in the background. stop()/wait() are bounded; on any
    exit path kill() makes sure the process is gone.

    capd: the binary (default: the build's); stderr_path: a file for capd's
    stderr (default: an anonymous one); new_session: its own process group,
    for callers that signal the group. wait_ready() waits until it answers."""

    def __init__(self, args, cwd=None, netns=None, capd=None, stderr_path=None,
                 new_session=False):
        self.args = [str(a) for a in args]
        self.out = tempfile.TemporaryFile()
        self.err = open(stderr_path, "w+b") if stderr_path else tempfile.TemporaryFile()
        cmd = capd_command(self.args, netns)
        if capd:
            cmd[cmd.index(CAPD)] = capd
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self.out, stderr=self.err,
                                     stdin=subprocess.DEVNULL, start_new_session=new_session)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def stderr_now(self):
        """capd's stderr so far (pread: capd shares the file's offset)."""
        return os.pread(self.err.fileno(), 1 << 22, 0).decode("utf-8", "replace")

    def answers(self, sock):
        """capd answers `ping` on its control socket."""
        return ctl_ping(sock)

    def wait_ready(self, timeout=60, sock=None):
        """Waits until capd answers: `ping` on its control socket `sock`, or,
        without one, its readiness line "capd: capturing on" on stderr (not
        printed with -q). Kills it and raises AssertionError if it exits
        first or takes longer than `timeout` s."""
        def ready():
            if not self.running():
                return True
            if sock:
                return self.answers(sock)
            return READY_LINE in self.stderr_now()

        ok = wait_until(ready, timeout, 0.1)
        if not ok or not self.running():
            self.kill()
            raise AssertionError(f"capd did not come up within {timeout} s: "
                                 f"{' '.join(self.args)}\nstderr: {self.stderr_now()}")
        return self

    def wait(self, timeout=CAPD_TIMEOUT):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"capd {' '.join(self.args)} did not exit within {timeout} s; "
                                 f"stderr: {self._read(self.err)!r}") from None
        return CapdRun(self.args, rc, self._read(self.out), self._read(self.err))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    @staticmethod
    def _read(f):
        f.seek(0)
        return f.read().decode("utf-8", "replace")


# What capd prints on stderr once capture has started (unless -q).
READY_LINE = "capd: capturing on"


def ctl_ping(sock, timeout=5):
    """True when a capd answers `ping` with status 0 on control socket sock."""
    if not os.path.exists(sock):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(timeout)
            c.connect(sock)
            c.sendall(b'{"v": 1, "cmd": "ping"}\n')
            buf = b""
            while b"\n" not in buf:
                chunk = c.recv(1 << 16)
                if not chunk:
                    return False
                buf += chunk
        return json.loads(buf.split(b"\n", 1)[0]).get("status") == 0
    except (OSError, ValueError):
        return False


def start_capd(args, sock=None, timeout=60, **kw):
    """Starts capd (RunningCapd's arguments) and returns it once it answers:
    on its control socket `sock` when given, else by its readiness line."""
    return RunningCapd(args, **kw).wait_ready(timeout, sock)


def wait_until(pred, timeout, interval=0.05):
    """Polls pred() until it is true or `timeout` s pass (bounded in time and
    count). Returns the last value of pred()."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)
    return pred()


def have(tool):
    return shutil.which(tool) is not None


def tcpdump_count(path, timeout=60):
    """Reads a file with tcpdump; returns (packet count, error text or None)."""
    p = subprocess.run(["tcpdump", "--count", "-n", "-r", path], capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    bad = [l for l in err.splitlines() if l.strip() and not l.startswith("reading from file")]
    if p.returncode != 0 or bad:
        return None, f"tcpdump -r {path}: exit {p.returncode}: {err.strip()}"
    for line in out.splitlines():
        w = line.split()
        if len(w) >= 2 and w[1] in ("packet", "packets") and w[0].isdigit():
            return int(w[0]), None
    return None, f"tcpdump --count -r {path}: no count in {out!r}"


TSHARK_NOISE = ("Running as user", "reading from file")


def tshark_fields(path, fields, timeout=120):
    """Reads a file with tshark -T fields; returns (rows, error text or None)."""
    cmd = ["tshark", "-n", "-r", path, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    err = p.stderr.decode("utf-8", "replace")
    bad = [l for l in err.splitlines() if l.strip() and not l.startswith(TSHARK_NOISE)]
    if p.returncode != 0 or bad:
        return None, f"tshark -r {path}: exit {p.returncode}: {err.strip()}"
    rows = [l.split("|") for l in p.stdout.decode("utf-8", "replace").splitlines()]
    return rows, None


def capinfos_counts(paths, timeout=300):
    """Packet counts of many files read by Wireshark's wiretap (capinfos), in
    one process. Returns ({path: count}, error text or None)."""
    out = {}
    for i in range(0, len(paths), 100):
        batch = paths[i:i + 100]
        p = subprocess.run(["capinfos", "-T", "-r", "-c", "-M"] + batch, capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        err = p.stderr.decode("utf-8", "replace")
        bad = [l for l in err.splitlines() if l.strip() and not l.startswith(TSHARK_NOISE)]
        if p.returncode != 0 or bad:
            return None, f"capinfos: exit {p.returncode}: {err.strip()[:2000]}"
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            name, _, count = line.rpartition("\t")
            if name and count.strip().isdigit():
                out[name] = int(count)
    return out, None


def is_index_file(name):
    """An index capd writes beside a capture (".X.idx"), its live index
    (".X.partial.idx") or either being written (".partial" after them)."""
    return name.startswith(".") and name.endswith((".idx", ".idx.partial"))


def listdir(d):
    """os.listdir(d) without the index files beside the captures: what the
    tests that count capture files see."""
    return [f for f in os.listdir(d) if not is_index_file(f)]


def hidden_files(d):
    return sorted(f for f in listdir(d) if f.startswith("."))


def corpus_files():
    """Every capture in the tcpdump-tests corpus, sorted."""
    if not os.path.isdir(CORPUS_DIR):
        return []
    return sorted(os.path.join(CORPUS_DIR, f) for f in os.listdir(CORPUS_DIR)
                  if f.endswith((".pcap", ".pcapng")))


def out_ts(ts_ns, precision):
    """A timestamp as an output file stores it. precision: "us" (pcap,
    microseconds, truncated), "ns" (pcap, nanoseconds) or "pcapng" (64-bit
    nanoseconds). A pcap record holds the seconds in 32 unsigned bits, so
    they are taken modulo 2^32, as every pcap writer does."""
    if precision == "pcapng":
        return ts_ns
    sec, frac = divmod(ts_ns, 10**9)
    if precision == "us":
        frac = frac // 1000 * 1000
    return (sec % 2**32) * 10**9 + frac


def record_mismatch(expected, got, precision, label=""):
    """Compares two record lists. Returns None if they match at the output's
    timestamp precision, else a message naming the first difference."""
    if len(expected) != len(got):
        extra = ""
        n = min(len(expected), len(got))
        for i in range(n):
            if expected[i].data != got[i].data:
                extra = f"; first differing record #{i}"
                break
        return f"{label}record count: expected {len(expected)}, got {len(got)}{extra}"
    for i, (e, g) in enumerate(zip(expected, got)):
        et = out_ts(e.ts_ns, precision)
        diffs = []
        if et != g.ts_ns:
            diffs.append(f"ts expected {et} got {g.ts_ns}")
        if e.caplen != g.caplen:
            diffs.append(f"caplen expected {e.caplen} got {g.caplen}")
        if e.wirelen != g.wirelen:
            diffs.append(f"wirelen expected {e.wirelen} got {g.wirelen}")
        if e.data != g.data:
            k = next((j for j in range(min(len(e.data), len(g.data)))
                      if e.data[j] != g.data[j]), min(len(e.data), len(g.data)))
            diffs.append(f"bytes differ from offset {k}")
        if diffs:
            return f"{label}record #{i}: " + ", ".join(diffs)
    return None


class CapdTestCase(unittest.TestCase):
    """Gives each test a fresh temporary directory (self.tmp)."""

    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        if not os.access(CAPD, os.X_OK):
            raise unittest.SkipTest(f"capd not built at {CAPD}")

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="linecap-it-")
        if not os.environ.get("LINECAP_KEEP_TMP"):
            self.addCleanup(shutil.rmtree, self.tmp, True)

    def path(self, *names):
        return os.path.join(self.tmp, *names)

    def capd(self, args, **kw):
        return run_capd(args, **kw)

    def assertCapdOk(self, run, quiet=False):
        self.assertEqual(run.rc, 0, run.describe())
        if quiet:
            self.assertEqual(run.stderr_lines, [], run.describe())

    def assertWhole(self, path):
        """The file parses to its end, with no partial record; returns it."""
        try:
            return pcaplib.read_capture(path)
        except pcaplib.PcapError as e:
            self.fail(f"{path} is not a whole capture file: {e}")

    def assertNoHidden(self, d):
        self.assertEqual(hidden_files(d), [], f"hidden (partial) files left in {d}")


class _CountingResult(unittest.TextTestResult):
    """Counts outcomes per test method (a method with any failing subtest
    counts as failed once) and lists failed subtests."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.failed_ids = set()
        self.subtest_failures = 0
        self.subtest_passes = 0

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.failed_ids.add(test.id())

    def addError(self, test, err):
        super().addError(test, err)
        self.failed_ids.add(getattr(test, "id", lambda: str(test))())

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is None:
            self.subtest_passes += 1
        else:
            self.subtest_failures += 1
            self.failed_ids.add(test.id())


def main():
    """Runs the calling module's tests; prints 'N passed, N failed' last and
    exits 1 if any test failed."""
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_CountingResult, stream=sys.stdout)
    t0 = time.monotonic()
    prog = unittest.main(module="__main__", testRunner=runner, exit=False)
    r = prog.result
    failed = len(r.failed_ids) + len(r.unexpectedSuccesses)
    skipped = len(r.skipped)
    xfail = len(r.expectedFailures)
    passed = r.testsRun - len(r.failed_ids) - skipped - xfail - len(r.unexpectedSuccesses)
    for test, reason in r.skipped:
        print(f"SKIPPED {test.id()}: {reason}")
    extra = []
    if skipped:
        extra.append(f"{skipped} skipped")
    if xfail:
        extra.append(f"{xfail} expected failures")
    if r.subtest_failures:
        extra.append(f"{r.subtest_failures} failed subtests")
    print(f"{os.path.basename(sys.argv[0])}: {time.monotonic() - t0:.1f} s")
    print(f"{passed} passed, {failed} failed" + (", " + ", ".join(extra) if extra else ""))
    sys.exit(1 if failed else 0)


# ------------------------------------------------------------ namespaces

class VethNamespaces:
    """Two network namespaces this test creates, joined by a veth pair:
    `cap` (interface cap_if, 198.18.1.2/24) and `send` (send_if,
    198.18.1.1/24). IPv6 is disabled in both so that the link stays quiet
    (no router solicitations, no MLD). Only 198.18.0.0/15 addresses are
    used. destroy() deletes both namespaces, and with them the veth pair.

    create() returns None, or the reason the namespaces cannot be made."""

    CAP_ADDR, SEND_ADDR = "198.18.1.2", "198.18.1.1"
    CAP_MAC, SEND_MAC = "02:00:00:00:01:02", "02:00:00:00:01:01"

    def __init__(self, tag):
        pid = os.getpid()
        self.cap = f"lc-test-{pid}-{tag}c"
        self.send = f"lc-test-{pid}-{tag}s"
        self.cap_if = f"lc{pid % 100000}{tag}c"[:15]
        self.send_if = f"lc{pid % 100000}{tag}s"[:15]
        self.created = []

    def _ip(self, *args, ns=None, check=True):
        cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
        p = subprocess.run(cmd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.decode().strip()}")
        return p

    def create(self):
        if os.geteuid() != 0:
            return "network namespaces need root"
        if not have("ip"):
            return "iproute2 (ip) is not installed"
        try:
            for ns in (self.cap, self.send):
                self._ip("ip", "netns", "add", ns)
                self.created.append(ns)
                self._ip("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                         "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
                self._ip("ip", "link", "set", "lo", "up", ns=ns)
            self._ip("ip", "link", "add", self.cap_if, "netns", self.cap, "address", self.CAP_MAC,
                     "type", "veth", "peer", "name", self.send_if, "netns", self.send,
                     "address", self.SEND_MAC)
            for ns, ifname, addr in ((self.cap, self.cap_if, self.CAP_ADDR),
                                     (self.send, self.send_if, self.SEND_ADDR)):
                self._ip("sysctl", "-qw", f"net.ipv6.conf.{ifname}.disable_ipv6=1", ns=ns)
                self._ip("ip", "addr", "add", f"{addr}/24", "dev", ifname, ns=ns)
                self._ip("ip", "link", "set", ifname, "up", ns=ns)
            # No ARP needed before the first packet.
            self._ip("ip", "neigh", "replace", self.CAP_ADDR, "lladdr", self.CAP_MAC, "dev",
                     self.send_if, "nud", "permanent", ns=self.send)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            self.destroy()
            return f"cannot set up namespaces: {e}"
        return None

    def destroy(self):
        for ns in self.created:
            self._ip("ip", "netns", "del", ns, check=False)
        self.created = []


SENDER = r'''
import socket, struct, sys, time
magic, dst, source = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])
socks = []
for i in range(16):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 41000 + i))
    socks.append(s)
def send(src, seq, size):
    body = magic + struct.pack("!HI", src, seq)
    body += bytes(max(0, size - len(body)))
    socks[seq % len(socks)].sendto(body, (dst, 9))
probe = 0
deadline = time.monotonic() + 300
for line in sys.stdin:
    w = line.split()
    if not w or time.monotonic() > deadline:
        break
    if w[0] == "probe":
        send(source + 1, probe, 32)
        probe += 1
    elif w[0] == "burst":
        n = int(w[1])
        for seq in range(n):
            send(source, seq, 18 + seq % 1200)
            if seq % 200 == 199:
                time.sleep(0.01)  # let the capture rings breathe
    print("ok", flush=True)
'''


class Sender:
    """A UDP sender inside the `send` namespace, driven line by line: it
    sends tagged datagrams (gencaps tag format) to the `cap` side, from sixteen
    source ports so that fanout spreads them. Bounded: 300 s at most."""

    def __init__(self, veth, source):
        self.source = source
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", veth.send, sys.executable, "-c", SENDER,
             "LCAP", veth.CAP_ADDR, str(source)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def command(self, line, timeout=60):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"sender did not answer {line!r} within {timeout} s")
        reply = self.proc.stdout.readline().strip()
        if reply != "ok":
            raise AssertionError(f"sender: {reply!r} {self.proc.stderr.read()!r}")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait(timeout=30)


def records_so_far(path):
    """The whole records of a file capd may still be writing: none while a
    file it has just created holds no header yet, or once it has been
    renamed or removed since the caller listed the directory."""
    try:
        if pcaplib.file_kind(path) is None:
            return []
        return pcaplib.read_capture(path, lenient=True).records
    except FileNotFoundError:
        return []


def make_veth(test, tag):
    """A VethNamespaces pair for `test`, destroyed at its cleanup; the test
    is skipped when the namespaces cannot be made."""
    veth = VethNamespaces(tag)
    why = veth.create()
    test.addCleanup(veth.destroy)
    if why:
        test.skipTest(why)
    return veth


def hold_namespace(test, ns):
    """A process living in network namespace `ns` (for @pid= sources),
    killed at `test`'s cleanup; returns it once it has entered `ns`."""
    holder = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "120"],
                              stdin=subprocess.DEVNULL)

    def stop_holder():
        holder.kill()
        holder.wait(timeout=30)

    test.addCleanup(stop_holder)
    own = os.readlink("/proc/self/ns/net")

    def moved():
        try:
            return os.readlink(f"/proc/{holder.pid}/ns/net") != own
        except OSError:
            return False

    test.assertTrue(wait_until(moved, timeout=20, interval=0.05),
                    "the process never entered the namespace")
    return holder


class VethCapture:
    """For test cases with self.veth (VethNamespaces) and self.out (capd's
    output directory): what capd has written so far, and a capd started
    only once it is seen to receive."""

    def seen(self, source):
        """Tags of `source` in the output files so far, hidden ones included."""
        tags = []
        for f in os.listdir(self.out):
            tags += [t for t in udp_tags(records_so_far(os.path.join(self.out, f)),
                                         self.veth.SEND_ADDR, self.veth.CAP_ADDR)
                     if t[0] == source]
        return tags

    def start_probed(self, args, source, netns=None):
        """capd with `args` and a Sender tagging with `source`; probes (tagged
        source + 1) until capd has written one or has ended. Returns
        (capd, sender)."""
        c = RunningCapd(args, netns=netns)
        self.addCleanup(c.kill)
        sender = Sender(self.veth, source)
        self.addCleanup(sender.close)

        def probe():
            if not c.running():
                return True
            sender.command("probe")
            return bool(self.seen(source + 1))

        self.assertTrue(wait_until(probe, timeout=60, interval=0.1),
                        "capd captured no probe within 60 s")
        return c, sender


def udp_tags(records, src_ip, dst_ip, dport=9):
    """(source, seq) of each record that is an Ethernet/IPv4/UDP datagram
    from src_ip to dst_ip:dport carrying a tag at the start of its payload.
    ICMP errors quoting our datagrams are not counted."""
    s = ipaddress.IPv4Address(src_ip).packed
    d = ipaddress.IPv4Address(dst_ip).packed
    out = []
    for r in records:
        b = r.data
        if len(b) < 42 or b[12:14] != b"\x08\x00" or b[23] != 17:
            continue
        if b[26:30] != s or b[30:34] != d:
            continue
        ihl = (b[14] & 0x0F) * 4
        u = 14 + ihl
        if int.from_bytes(b[u + 2:u + 4], "big") != dport:
            continue
        payload = b[u + 8:]
        if payload[:4] == b"LCAP" and len(payload) >= 10:
            out.append(struct.unpack_from("!HI", payload, 4))
    return out


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------ drop stages

def drop_stages(summary):
    """The names of capd's drop stages, in capd's order, from a summary or
    `capctl stats` JSON ("drop_stages", one table in dataplane/drop_stages.hh).
    Packets paused or past -c are not among them: they are counted apart."""
    return [st["name"] for st in summary["drop_stages"]]


def stages_after_receipt(summary):
    """The stages that lose packets capd has received (not the NIC's), so
    received = filtered_out + over_limit + paused + written + these."""
    return [st["name"] for st in summary["drop_stages"] if not st["before_receipt"]]


def lost_after_receipt(summary):
    return sum(summary["drops"][k] for k in stages_after_receipt(summary))


# ------------------------------------------------------------ commands

CAPQ = os.path.join(BUILD_DIR, "query", "capq")


def run_cmd(cmd, stdin=None, timeout=120, **kw):
    """A command's run, output captured, bounded by `timeout` seconds."""
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, **kw)


# ------------------------------------------------------------ compressed captures

CODECS = {
    # codec: (suffix, command writing the stream decompressed to stdout,
    #         command testing it)
    "zstd": (".zst", ["zstd", "-dcq"], ["zstd", "-tq"]),
    "lz4": (".lz4", ["lz4", "-dcq"], ["lz4", "-tq"]),
    "gzip": (".gz", ["gzip", "-dc"], ["gzip", "-t"]),
}


class CompressTestCase(CapdTestCase):
    """capd --compress captures: skipped without the codecs' tools, tcpdump,
    tshark or capq; captures with their summaries, scratch file systems the
    test mounts, and the codec's own reading of a file."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for tool in ("zstd", "lz4", "gzip", "tcpdump", "tshark"):
            if not shutil.which(tool):
                raise unittest.SkipTest(f"{tool} not installed")
        if not os.access(CAPQ, os.X_OK):
            raise unittest.SkipTest(f"capq not built at {CAPQ}")

    def capture(self, d, args, name="a.pcap"):
        """capd -q --ctl none into d/name with `args` (the source among
        them); fails the test unless it exits 0 without a word; returns its
        summary (kept in d's sibling D.json)."""
        os.makedirs(d, exist_ok=True)
        stats = os.path.join(os.path.dirname(d.rstrip("/")), os.path.basename(d) + ".json")
        r = self.capd(["-q", "--ctl", "none", "-w", os.path.join(d, name), "--stats-json",
                       stats] + args)
        self.assertCapdOk(r, quiet=True)
        with open(stats) as f:
            return json.load(f)

    def mount_scratch(self, name, size, fstype="tmpfs"):
        """A file system of `size` bytes mounted at self.path(name) for this
        test: a tmpfs, or an ext4 image file loop-mounted (O_DIRECT: a tmpfs
        refuses it). Skips the test without root or when mounting fails."""
        if os.geteuid() != 0:
            self.skipTest(f"mounting a {fstype} needs root")
        path = self.path(name)
        os.makedirs(path)
        if fstype == "tmpfs":
            cmds = [["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "linecap-cz", path]]
        else:
            img = self.path(name + ".img")
            with open(img, "wb") as f:
                f.truncate(size)
            cmds = [["mkfs.ext4", "-q", "-F", img], ["mount", "-o", "loop", img, path]]
        for cmd in cmds:
            p = run_cmd(cmd, timeout=60)
            if p.returncode != 0:
                self.skipTest(f"cannot mount a {fstype}: {cmd[0]}: " +
                              p.stderr.decode("utf-8", "replace").strip())
        self.addCleanup(run_cmd, ["umount", "-l", path], timeout=30)
        return path

    def decompressed(self, path, codec):
        """The stream of `path` as the codec's own tool reads it, after its
        test of the file passed."""
        _, cat, test = CODECS[codec]
        self.assertEqual(run_cmd(test + [path]).returncode, 0, path)
        raw = run_cmd(cat + [path])
        self.assertEqual(raw.returncode, 0, path)
        return raw.stdout


# ------------------------------------------------------------ capq --serve

def openssl(*args, cwd):
    p = run_cmd(["openssl"] + list(args), cwd=cwd)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {p.stderr.decode()}")


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN={name}", cwd=d)


def make_cert(d, name, ca, san=None, client=False):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n")
        f.write(f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
        if san:
            f.write(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext, cwd=d)


class Server:
    """A capq --serve process; port read from its first line."""

    def __init__(self, tmp, name, dirs, certs, extra=()):
        self.log = os.path.join(tmp, f"{name}.log")
        cmd = [CAPQ, "--serve", "127.0.0.1:0", "--cert", certs["host"][0],
               "--key", certs["host"][1], "--ca", certs["ca"]]
        for d in dirs:
            cmd += ["-r", d]
        cmd += list(extra)
        self.f = open(self.log, "w+b")
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.f)
        self.port = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.p.poll() is None:
            m = re.search(rb"capq: serving on 127\.0\.0\.1:(\d+)", self.text())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"capq --serve did not start: {self.text()!r}")
        self.addr = f"127.0.0.1:{self.port}"

    def text(self):
        with open(self.log, "rb") as f:
            return f.read()

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=30)
        self.f.close()


class ServeTestCase(CapdTestCase):
    """capq --serve processes for the class, with certificates made by
    openssl in a temporary directory of the class (cls.ctmp): a fleet CA
    ("ca"), a host certificate for 127.0.0.1 ("host") and a client one
    ("client"), in cls.certs. Skipped without capq or openssl. The servers
    started with serve() are stopped, and ctmp removed, when the class ends
    (or its setUpClass fails)."""

    tmp_prefix = "linecap-serve-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.access(CAPQ, os.X_OK):
            raise unittest.SkipTest(f"capq not built at {CAPQ}")
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl not installed")
        cls.ctmp = tempfile.mkdtemp(prefix=cls.tmp_prefix)
        cls.servers = []
        cls.addClassCleanup(cls._stop_servers)
        make_ca(cls.ctmp, "ca")
        make_cert(cls.ctmp, "host", "ca", san="IP:127.0.0.1")
        make_cert(cls.ctmp, "client", "ca", client=True)
        cls.certs = {"ca": cls.cpath("ca.pem"),
                     "host": (cls.cpath("host.pem"), cls.cpath("host.key")),
                     "client": (cls.cpath("client.pem"), cls.cpath("client.key"))}

    @classmethod
    def _stop_servers(cls):
        for s in cls.servers:
            s.stop()
        if not os.environ.get("LINECAP_KEEP_TMP"):
            shutil.rmtree(cls.ctmp, True)

    @classmethod
    def cpath(cls, name):
        return os.path.join(cls.ctmp, name)

    @classmethod
    def serve(cls, name, dirs, extra=()):
        """Starts capq --serve over `dirs` with the host certificate."""
        s = Server(cls.ctmp, name, dirs, cls.certs, extra)
        cls.servers.append(s)
        return s

    def tls(self, who="client", ca="ca"):
        return ["--cert", self.certs[who][0], "--key", self.certs[who][1],
                "--ca", self.certs[ca]]
