#!/usr/bin/env python3
"""capctl against a running capd, end to end. Python 3 stdlib only.

What is checked:
  * status, stats, rules list, rotate, pause, resume, stop: human output and
    --json; stats --prometheus parses as Prometheus text; top --count 2;
  * rotate makes a new file; pause freezes the written count while packets
    are still received; stop ends capd with exit 0 and whole files only;
  * rules add/replace/del thousands of times while packets flow: capd
    survives, per-rule counters add up in the final --stats-json, and its
    resident memory does not keep growing;
  * a bad expression is refused with the rule's name and changes nothing;
  * permissions: socket mode, SO_PEERCRED refusal, --ctl-group admission;
  * robustness of a live capd against malformed lines, unknown commands,
    a 1 MB line, 100 clients at once, silent clients and clients that
    vanish mid-reply;
  * capctl without a daemon: one line on stderr, non-zero exit.

Environment (set by tests/meson.build):
  LINECAP_BUILD_DIR  build root (dataplane/capd and ctl/capctl under it)
  LINECAP_TEST_DATA  tests/data
  LINECAP_KEEP_TMP   if set, temporary directories are kept
"""

import errno
import glob
import grp
import json
import os
import pwd
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# The tests' reader of record and shared helpers, in tests/integration; the
# build and data directories are found as there.
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import capdtest  # noqa: E402
import pcaplib  # noqa: E402

BUILD_DIR = capdtest.BUILD_DIR
CAPD = capdtest.CAPD
CAPCTL = os.path.join(BUILD_DIR, "ctl", "capctl")
DATA_DIR = capdtest.DATA_DIR
WEB_MIX = os.path.join(DATA_DIR, "demo", "web-mix.pcap")
KEEP_TMP = bool(os.environ.get("LINECAP_KEEP_TMP"))

FILTERS_NOT_BUILT = "filters are not built yet"
ENOSYS, EPROTO, E2BIG, EBUSY, EACCES, EINVAL = (errno.ENOSYS, errno.EPROTO, errno.E2BIG,
                                               errno.EBUSY, errno.EACCES, errno.EINVAL)

# Numbers worth reading in the log, printed once at the end.
REPORT = []


def note(msg):
    print(f"NOTE: {msg}", flush=True)
    REPORT.append(msg)


# ---------------------------------------------------------------- capture files

class FileDamaged(Exception):
    pass


def count_records(path):
    """Walks a pcap or pcapng file record by record to its very end and
    returns the record count. Raises FileDamaged on a cut or bad record."""
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 4:
        raise FileDamaged(f"{path}: {len(b)} bytes, no header")
    m_le = struct.unpack_from("<I", b)[0]
    m_be = struct.unpack_from(">I", b)[0]
    if m_le in (0xA1B2C3D4, 0xA1B23C4D) or m_be in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<" if m_le in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        if len(b) < 24:
            raise FileDamaged(f"{path}: pcap header cut short")
        snaplen = struct.unpack_from(e + "I", b, 16)[0]
        off, n = 24, 0
        while off < len(b):
            if off + 16 > len(b):
                raise FileDamaged(f"{path}: record header cut at {off} after {n} records")
            _, _, caplen, wirelen = struct.unpack_from(e + "IIII", b, off)
            if caplen > wirelen or (snaplen and caplen > max(snaplen, 262144)):
                raise FileDamaged(f"{path}: bad record at {off}: caplen {caplen} wirelen {wirelen}")
            if off + 16 + caplen > len(b):
                raise FileDamaged(f"{path}: record data cut at {off} after {n} records")
            off += 16 + caplen
            n += 1
        return n
    if m_le == 0x0A0D0D0A:
        if len(b) < 12:
            raise FileDamaged(f"{path}: SHB cut short")
        bom = struct.unpack_from("<I", b, 8)[0]
        e = "<" if bom == 0x1A2B3C4D else ">"
        off, n = 0, 0
        while off < len(b):
            if off + 12 > len(b):
                raise FileDamaged(f"{path}: block header cut at {off}")
            btype, blen = struct.unpack_from(e + "II", b, off)
            if blen < 12 or blen % 4 or off + blen > len(b):
                raise FileDamaged(f"{path}: block at {off} (type {btype:#x}, length {blen}) cut")
            if struct.unpack_from(e + "I", b, off + blen - 4)[0] != blen:
                raise FileDamaged(f"{path}: block at {off}: trailing length differs")
            if btype in (3, 6):
                n += 1
            off += blen
        return n
    raise FileDamaged(f"{path}: not a pcap or pcapng file")


def output_files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if not f.startswith("."))


def hidden_files(d):
    """Hidden entries other than the final index of a capture (".X.idx"):
    files being written, live indexes (".X.partial.idx") and indexes being
    written (".X.idx.partial") all count."""
    return sorted(f for f in os.listdir(d) if f.startswith(".")
                  and not (f.endswith(".idx") and not f.endswith(".partial.idx")))


# ---------------------------------------------------------------- processes

def run(cmd, timeout=30, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace", **kw)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(map(str, cmd))} did not finish within {timeout} s") from e


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_kb(pid):
    """capd's resident memory by kind. Without hugepages EAL memory (the
    mbuf and chunk pools) is a memfd and shows as RssShmem; the C++ heap,
    where rules, compiled programs and pattern databases live, is RssAnon."""
    return {"rss": rss_kb(pid), "anon": rss_kb(pid, "RssAnon"), "shmem": rss_kb(pid, "RssShmem")}


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


class CtlConn:
    """Speaks the control protocol directly: one JSON object per line."""

    def __init__(self, path, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A blocking connect waits for room in the listen backlog (a
        # non-blocking one fails with EAGAIN while capd is accepting).
        self.s.connect(path)
        self.s.settimeout(timeout)
        self.buf = b""

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendall(data)

    def read_line(self):
        """The next line, or None on EOF."""
        while b"\n" not in self.buf:
            try:
                chunk = self.s.recv(1 << 16)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def reply(self):
        line = self.read_line()
        if line is None:
            return None
        return json.loads(line)

    def call(self, cmd, args=None):
        req = {"v": 1, "cmd": cmd}
        if args is not None:
            req["args"] = args
        self.send(json.dumps(req).encode() + b"\n")
        r = self.reply()
        if r is None:
            raise AssertionError(f"capd closed the connection on {cmd}")
        return r

    def wait_eof(self):
        """True once the server closes (data before EOF is discarded)."""
        try:
            while True:
                chunk = self.s.recv(1 << 16)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


class Capd:
    """One capd with a control socket, outputs in its own temporary dir."""

    def __init__(self, tmp, source_args, extra=(), sock_dir=None, out_name="cap.pcap",
                 name="capd"):
        self.tmp = tmp
        self.out = os.path.join(tmp, "out")
        os.makedirs(self.out, exist_ok=True)
        self.sock = os.path.join(sock_dir or tmp, f"{name}.sock")
        self.summary = os.path.join(tmp, f"{name}-summary.json")
        self.args = ([CAPD] + list(source_args) +
                     ["--ctl", self.sock, "-w", os.path.join(self.out, out_name),
                      "--stats-json", self.summary] + list(extra))
        self.err_path = os.path.join(tmp, f"{name}.stderr")
        self.cap = capdtest.start_capd(self.args[1:], sock=self.sock, capd=CAPD,
                                       stderr_path=self.err_path)
        self.proc = self.cap.proc

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def ctl(self, *args, timeout=30, prefix=(), sock=None):
        return run(list(prefix) + [CAPCTL, "--ctl", sock or self.sock] + [str(a) for a in args],
                   timeout=timeout)

    def ctl_json(self, *args, timeout=30):
        r = self.ctl("--json", *args, timeout=timeout)
        try:
            j = json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"capctl --json {' '.join(args)}: not JSON: {r.stdout!r} "
                                 f"stderr {r.stderr!r}") from None
        return r, j

    def call(self, cmd, args=None):
        c = CtlConn(self.sock)
        try:
            return c.call(cmd, args)
        finally:
            c.close()

    def stats(self):
        r = self.call("stats")
        assert r["status"] == 0, r
        return r["data"]

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"capd did not exit within {timeout} s") from None

    def kill(self):
        self.cap.kill()


def make_tmp(test):
    d = tempfile.mkdtemp(prefix="linecap-ctl-")
    if not KEEP_TMP:
        test.addCleanup(shutil.rmtree, d, True)
    return d


PCAP_LOOP = ["-i", f"pcap:{WEB_MIX},loop"]
# 20 kpps of 64-byte frames: 1.6 MB/s of pcap, so the files stay small.
NULL_PACED = ["-i", "null:64,rate=20k"]


class CtlTestCase(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        for b in (CAPD, CAPCTL):
            if not os.access(b, os.X_OK):
                raise unittest.SkipTest(f"not built: {b}")

    def assertOneLineError(self, r, what):
        self.assertNotEqual(r.returncode, 0, f"{what}: exit 0\nstdout {r.stdout!r}")
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, f"{what}: expected one line on stderr, got {r.stderr!r}")
        self.assertTrue(lines[0].startswith("capctl: "), lines[0])
        return lines[0]

    def assertStillCapturing(self, capd, what):
        """packets_received keeps increasing and capd is alive."""
        self.assertTrue(capd.running(), f"capd died after {what}: {capd.stderr()}")
        a = capd.stats()["packets_received"]
        grew = wait_until(lambda: capd.stats()["packets_received"] > a, 10, 0.1)
        self.assertTrue(grew, f"capture stalled after {what}")


# ---------------------------------------------------------------- no daemon

class NoDaemon(CtlTestCase):
    def test_no_daemon_running(self):
        tmp = make_tmp(self)
        sock = os.path.join(tmp, "capd.sock")
        for extra in ([], ["--json"]):
            for cmd in (["status"], ["stats"], ["rules", "list"], ["stop"], ["top", "--count", "1"]):
                r = run([CAPCTL, "--ctl", sock] + extra + cmd)
                line = self.assertOneLineError(r, f"capctl {' '.join(extra + cmd)} without capd")
                self.assertIn(sock, line)
                self.assertEqual(r.stdout, "")

    def test_wrong_socket_paths(self):
        tmp = make_tmp(self)
        regular = os.path.join(tmp, "file")
        with open(regular, "w") as f:
            f.write("not a socket")
        stale = os.path.join(tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)  # bound, never listening: ECONNREFUSED
        try:
            for path in ("/nonexistent/dir/capd.sock", regular, stale, tmp,
                         os.path.join(tmp, "x" * 200)):
                r = run([CAPCTL, "--ctl", path, "status"])
                self.assertOneLineError(r, f"capctl --ctl {path}")
                self.assertEqual(r.stdout, "")
        finally:
            s.close()

    def test_usage_errors_are_one_line(self):
        for args in (["bogus"], ["stats", "--bogus"], ["rules"], ["rules", "frob"],
                     ["rules", "del"], ["rules", "add"], ["status", "extra"],
                     ["top", "--interval", "0"], ["--ctl"]):
            r = run([CAPCTL] + args)
            self.assertOneLineError(r, f"capctl {' '.join(args)}")

    def test_numbers_and_options_are_checked(self):
        """A number that is not one, or an option no command takes, is one
        line naming it, before any connection (it used to read
        `--timeout abc` as 0 ms)."""
        tmp = make_tmp(self)
        sock = os.path.join(tmp, "none.sock")
        for args, named in ((["--timeout", "abc", "status"], ("--timeout", "abc")),
                            (["--timeout", "0", "status"], ("--timeout", "0")),
                            (["--timeout", "-5", "status"], ("--timeout",)),
                            (["status", "--timeout", "1.5x"], ("--timeout", "1.5x")),
                            (["top", "--interval", "abc"], ("--interval", "abc")),
                            (["top", "--interval", "-1"], ("--interval",)),
                            (["top", "--count", "many"], ("--count", "many")),
                            (["--bogus", "status"], ("--bogus",)),
                            (["status", "--bogus"], ("--bogus",)),
                            (["rules", "list", "--bogus"], ("--bogus",)),
                            (["diagnose", "--bogus"], ("--bogus",))):
            with self.subTest(args=args):
                r = run([CAPCTL, "--ctl", sock] + args)
                line = self.assertOneLineError(r, f"capctl {' '.join(args)}")
                for word in named:
                    self.assertIn(word, line)
                self.assertNotIn(sock, line, "checked before connecting")
                self.assertEqual(r.stdout, "")
        # File commands follow their error line with their usage, as capdiag.
        for args, named in ((["compare", "--max-frames", "x", "a", "b"], ("--max-frames", "x")),
                            (["diagnose", "--max-flows", "x", "a"], ("--max-flows", "x")),
                            (["diagnose", "--bogus", "a"], ("--bogus",))):
            with self.subTest(args=args):
                r = run([CAPCTL] + args)
                self.assertEqual(r.returncode, 1, r.stderr)
                first = r.stderr.splitlines()[0]
                self.assertTrue(first.startswith("capctl "), first)
                for word in named:
                    self.assertIn(word, first)

    def test_help(self):
        r = run([CAPCTL, "--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ("usage:", "--ctl", "--timeout", "--json", "status", "stats", "top", "rules",
                     "rotate", "pause", "resume", "stop", "diagnose", "compare"):
            self.assertIn(word, r.stdout)
        for cmd, word in ((["stats"], "--prometheus"), (["top"], "--interval"),
                          (["rules", "add"], "--pattern"), (["diagnose"], "--max-flows"),
                          (["compare"], "--nat")):
            with self.subTest(cmd=cmd):
                r = run([CAPCTL] + cmd + ["--help"])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(word, r.stdout)


# ---------------------------------------------------------------- commands

PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
PROM_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
PROM_SAMPLE = re.compile(
    rf"^({PROM_NAME})(\{{{PROM_LABEL}(?:,{PROM_LABEL})*,?\}})? "
    r"([-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|Inf))"
    r"( -?[0-9]+)?$")
PROM_META = re.compile(rf"^# (HELP {PROM_NAME} .*|TYPE {PROM_NAME} "
                       r"(counter|gauge|histogram|summary|untyped))$")


def prometheus_problems(text):
    """Lines that are not valid Prometheus text exposition (format 0.0.4)."""
    bad = []
    typed = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# HELP") or line.startswith("# TYPE"):
                if not PROM_META.match(line):
                    bad.append((i, line, "bad HELP/TYPE line"))
                elif line.startswith("# TYPE"):
                    name = line.split()[2]
                    if name in typed:
                        bad.append((i, line, "second TYPE for one metric"))
                    typed[name] = line.split()[3]
            continue
        m = PROM_SAMPLE.match(line)
        if not m:
            bad.append((i, line, "not `name{labels} value`"))
            continue
        if m.group(1) not in typed:
            bad.append((i, line, "sample before its TYPE line"))
    return bad


class SharedCapdCase(CtlTestCase):
    """One capd on a paced null source for all of a class's tests."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="linecap-ctl-")
        cls.capd = Capd(cls.tmp, NULL_PACED)

    @classmethod
    def tearDownClass(cls):
        cls.capd.kill()
        if not KEEP_TMP:
            shutil.rmtree(cls.tmp, True)


class Commands(SharedCapdCase):
    """The tests run in name order and the last one stops capd."""

    def test_a_status(self):
        r = self.capd.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^state: +capturing, up [0-9.]+ s")
        self.assertRegex(r.stdout, r"(?m)^source: +null")
        self.assertRegex(r.stdout, r"(?m)^worker 0: lcore \d+")
        self.assertRegex(r.stdout, r"(?m)^writer 0: lcore \d+, writing " + re.escape(self.capd.out))
        self.assertRegex(r.stdout, r"(?m)^rules: +cli ")
        r, j = self.capd.ctl_json("status")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(j["status"], 0)
        self.assertEqual(j["error"], "OK")
        d = j["data"]
        for k in ("sources", "workers", "writers", "uptime_s", "state"):
            self.assertIn(k, d)
        self.assertEqual(d["state"], "capturing")
        self.assertGreater(d["uptime_s"], 0)
        self.assertEqual(len(d["sources"]), 1)
        self.assertTrue(d["sources"][0]["name"].startswith("null"))
        self.assertGreaterEqual(len(d["workers"]), 1)
        self.assertGreaterEqual(len(d["writers"]), 1)
        for w in d["writers"]:
            self.assertTrue(w["current_file"].startswith(self.capd.out), w)
            self.assertTrue(os.path.exists(
                os.path.join(self.capd.out, "." + os.path.basename(w["current_file"]) + ".partial"))
                or os.path.exists(w["current_file"]), w)
        self.assertEqual(d["rules"], ["cli"])

    def test_b_stats(self):
        # A loaded machine may not have run the worker yet: wait, bounded,
        # for the first packet, so that the counters below are not all 0.
        self.assertTrue(wait_until(lambda: self.capd.stats()["packets_received"] > 0, 20, 0.1),
                        "no packet received in 20 s")
        stages = capdtest.drop_stages(self.capd.stats())
        self.assertTrue(stages)
        r = self.capd.ctl("stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^elapsed [0-9.]+ s: \d+ received, \d+ filtered out, "
                                   r"\d+ written")
        drops = [l for l in r.stdout.splitlines() if l.startswith("drops:")]
        self.assertEqual(len(drops), 1, r.stdout)
        for s in stages:
            self.assertIn(s, drops[0])
        self.assertRegex(r.stdout, r"(?m)^rule cli: \d+ packets")
        r, j = self.capd.ctl_json("stats")
        self.assertEqual(r.returncode, 0)
        d = j["data"]
        self.assertGreater(d["packets_received"], 0)
        for k in ("packets_filtered_out", "packets_written", "bytes_written", "files_written",
                  "elapsed_s"):
            self.assertIn(k, d)
        self.assertEqual(sorted(stages + ["total"]), sorted(d["drops"]))
        for s in stages:
            self.assertIn(s, d["drops"])
            self.assertIsInstance(d["drops"][s], int)
        self.assertEqual(d["drops"]["total"], sum(v for k, v in d["drops"].items() if k != "total"))
        self.assertEqual(len(d["sources"]), 1)
        self.assertIn("packets", d["sources"][0])
        self.assertGreaterEqual(len(d["workers"]), 1)
        for w in d["workers"]:
            self.assertEqual(w["rx_packets"], w["filtered_out"] + w["over_limit"] + w["accepted"], w)
        self.assertEqual(d["packets_received"], sum(w["rx_packets"] for w in d["workers"]))
        self.assertGreaterEqual(len(d["writers"]), 1)
        self.assertEqual(d["packets_written"], sum(w["packets"] for w in d["writers"]))
        self.assertEqual([x["name"] for x in d["rules"]], ["cli"])
        self.assertTrue(d["rules"][0]["active"])

    def test_c_prometheus(self):
        stages = capdtest.drop_stages(self.capd.stats())
        r = self.capd.ctl("stats", "--prometheus")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(prometheus_problems(r.stdout), [], r.stdout)
        samples = {}
        for line in r.stdout.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                samples[k] = float(v)
        self.assertGreater(samples["linecap_packets_received_total"], 0)
        for s in stages:
            self.assertIn(f'linecap_drops_total{{stage="{s}"}}', samples)
        self.assertNotIn('linecap_drops_total{stage="paused"}', samples)
        self.assertIn("linecap_packets_paused_total", samples)
        self.assertIn('linecap_rule_packets_total{rule="cli"}', samples)

    def test_c_prometheus_labels_are_escaped(self):
        # Rule names may hold a backslash; a label value must escape it.
        name = "dir\\x"
        r = self.capd.ctl("rules", "add", name, "udp")
        if FILTERS_NOT_BUILT in r.stderr:
            r = self.capd.ctl("rules", "add", name)
        self.assertEqual(r.returncode, 0, r.stderr)
        try:
            r = self.capd.ctl("stats", "--prometheus")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(prometheus_problems(r.stdout), [], r.stdout)
        finally:
            self.assertEqual(self.capd.ctl("rules", "del", name).returncode, 0)

    def test_d_top(self):
        r = self.capd.ctl("top", "--count", "2", "--interval", "0.3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(re.findall(r"(?m)^capd  up ", r.stdout)), 2, r.stdout)
        self.assertEqual(len(re.findall(r"(?m)^drops:", r.stdout)), 2, r.stdout)
        r = self.capd.ctl("--json", "top", "--count", "2", "--interval", "0.3")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        second = json.loads(lines[1])
        for k in ("rx_pps", "written_pps", "drops_per_s", "drops_total"):
            self.assertIn(k, second)
        self.assertGreater(second["rx_pps"], 0)

    def test_e_rules_list_and_bad_expression(self):
        r = self.capd.ctl("rules", "list")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"(?m)^cli: \(any packet\)  \[\d+ packets, \d+ bytes\]$")
        r, before = self.capd.ctl_json("rules", "list")
        self.assertEqual(r.returncode, 0)
        self.assertEqual([x["name"] for x in before["data"]["rules"]], ["cli"])

        r = self.capd.ctl("rules", "add", "bad", "tcp porr 80")
        line = self.assertOneLineError(r, "rules add bad 'tcp porr 80'")
        if FILTERS_NOT_BUILT in line:
            note("rule expressions are not compiled yet; the bad-expression check only saw "
                 f"the placeholder error: {line}")
        self.assertIn("'bad'", line)
        r, j = self.capd.ctl_json("rules", "add", "bad", "tcp porr 80")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(j["status"], EINVAL)
        self.assertIn("bad", j["message"])
        # Replacing a good rule with a bad one changes nothing either.
        r = self.capd.ctl("rules", "replace", "cli", "tcp porr 80")
        self.assertOneLineError(r, "rules replace cli 'tcp porr 80'")
        r = self.capd.ctl("rules", "add", "badpat", "--pattern", "/(unclosed/")
        self.assertOneLineError(r, "rules add with a bad regex pattern")
        r, after = self.capd.ctl_json("rules", "list")

        def strip(rules):
            return [{k: v for k, v in x.items() if k not in ("packets", "bytes")} for x in rules]

        self.assertEqual(strip(after["data"]["rules"]), strip(before["data"]["rules"]))
        st = self.capd.call("status")["data"]
        self.assertEqual(st["rules"], ["cli"])
        # Refusals: duplicate name, unknown name, bad names.
        self.assertOneLineError(self.capd.ctl("rules", "add", "cli"), "duplicate rule")
        self.assertOneLineError(self.capd.ctl("rules", "del", "nosuch"), "del unknown rule")
        self.assertOneLineError(self.capd.ctl("rules", "replace", "nosuch"), "replace unknown")
        self.assertOneLineError(self.capd.ctl("rules", "add", "x" * 65), "65-char name")
        self.assertOneLineError(self.capd.ctl("rules", "add", "a b"), "name with a space")
        self.assertOneLineError(self.capd.ctl("rules", "add", "p", "--scan", "nowhere"), "bad scan")
        self.assertEqual(self.capd.call("status")["data"]["rules"], ["cli"])

    def test_g_pause_resume(self):
        r = self.capd.ctl("pause")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.capd.call("status")["data"]["state"], "paused")
        self.assertIn("paused", self.capd.ctl("status").stdout)
        # Let what was already in flight land (the count stops moving), then watch.
        last = [-1]

        def settled():
            w = self.capd.stats()["packets_written"]
            same = w == last[0]
            last[0] = w
            return same

        self.assertTrue(wait_until(settled, 10, 0.4), "written keeps growing after pause")
        a = self.capd.stats()
        time.sleep(1.2)
        b = self.capd.stats()
        self.assertEqual(b["packets_written"], a["packets_written"], "written grew while paused")
        self.assertGreater(b["packets_received"], a["packets_received"], "not received while paused")
        self.assertGreater(b["packets_paused"], a["packets_paused"])
        # Discarded on purpose: shown apart, never in the total of losses.
        self.assertNotIn("paused", b["drops"])
        self.assertEqual(b["drops"]["total"], sum(b["drops"][k] for k in capdtest.drop_stages(b)))
        text = self.capd.ctl("stats").stdout
        self.assertRegex(text, r"(?m)^paused: [1-9][0-9]* received while paused, not written")
        self.assertNotRegex(text, r"(?m)^drops:.* paused ")
        r, j = self.capd.ctl_json("pause")
        self.assertEqual(j["status"], 0)
        self.assertIn("already", j["message"])
        r = self.capd.ctl("resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.capd.call("status")["data"]["state"], "capturing")
        w = self.capd.stats()["packets_written"]
        self.assertTrue(wait_until(lambda: self.capd.stats()["packets_written"] > w, 10, 0.1),
                        "written does not grow after resume")
        r, j = self.capd.ctl_json("resume")
        self.assertEqual(j["status"], 0)

    def test_z_stop(self):
        r = self.capd.ctl("stop")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("stopping", r.stdout)
        rc = self.capd.wait(60)
        self.assertEqual(rc, 0, self.capd.stderr())
        self.assertFalse(os.path.exists(self.capd.sock), "socket file left after exit")
        self.assertEqual(hidden_files(self.capd.out), [], "partial files left after stop")
        total = assert_whole_files(self, self.capd.out)
        with open(self.capd.summary) as f:
            s = json.load(f)
        self.assertEqual(total, s["packets_written"], "records in the files vs packets_written")
        lost = capdtest.lost_after_receipt(s)
        self.assertGreater(s["packets_paused"], 0)  # from test_g
        self.assertEqual(s["packets_received"],
                         s["packets_filtered_out"] + s["packets_over_limit"] +
                         s["packets_paused"] + s["packets_written"] + lost, s)
        # And capctl now says so in one line.
        self.assertOneLineError(self.capd.ctl("status"), "status after stop")


def assert_whole_files(test, d):
    """Every file in d reads to its end; returns the total record count."""
    files = output_files(d)
    test.assertGreater(len(files), 0, f"no output file in {d}")
    total = 0
    for f in files:
        try:
            total += count_records(f)
        except FileDamaged as e:
            test.fail(str(e))
        if pcaplib is not None and os.path.getsize(f) < (64 << 20):
            try:
                pcaplib.read_capture(f)
            except pcaplib.PcapError as e:
                test.fail(f"{f}: {e}")
    return total


class Rotate(CtlTestCase):
    """capctl rotate closes every writer's file under its final name and
    opens the next one; no record is lost or overwritten."""

    def _rotate_twice(self, extra):
        tmp = make_tmp(self)
        capd = Capd(tmp, NULL_PACED, extra=extra)
        try:
            first = capd.call("status")["data"]["writers"][0]["current_file"]
            files_before = capd.stats()["files_written"]
            time.sleep(0.3)
            r = capd.ctl("rotate")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("rotation", r.stdout)
            self.assertTrue(wait_until(lambda: capd.stats()["files_written"] > files_before,
                                       10, 0.05), "files_written unchanged after rotate")
            self.assertTrue(os.path.exists(first), f"{first} not closed under its name")
            second = capd.call("status")["data"]["writers"][0]["current_file"]
            self.assertNotEqual(second, first, "rotate reopened the same file name")
            time.sleep(0.3)
            r, j = capd.ctl_json("rotate")
            self.assertEqual(j["status"], 0)
            self.assertTrue(wait_until(
                lambda: capd.call("status")["data"]["writers"][0]["current_file"] != second,
                10, 0.05))
            time.sleep(0.3)
            self.assertEqual(capd.ctl("stop").returncode, 0)
            self.assertEqual(capd.wait(60), 0, capd.stderr())
            self.assertEqual(hidden_files(capd.out), [])
            self.assertEqual(len(output_files(capd.out)), 3, output_files(capd.out))
            total = assert_whole_files(self, capd.out)
            with open(capd.summary) as f:
                s = json.load(f)
            self.assertEqual(s["files_written"], 3)
            self.assertEqual(total, s["packets_written"], "records lost by rotation")
        finally:
            capd.kill()

    def test_rotate_numbered_files(self):
        # -C numbers the files (cap.pcap, cap.pcap1, ...); 1000 MB is never reached.
        self._rotate_twice(["-C", "1000"])

    def test_rotate_pcapng(self):
        self._rotate_twice(["-C", "1000", "--format", "pcapng"])

    def test_rotate_plain_file_name(self):
        # `capd -w cap.pcap` then `capctl rotate`: the second file must not
        # replace the first.
        self._rotate_twice([])


# ---------------------------------------------------------------- empty rule set

class EmptyRuleSet(CtlTestCase):
    """Deleting the last rule leaves no filter: every packet is captured, as
    the reply says, and stats show it being written."""

    def test_deleting_the_last_rule_captures_everything(self):
        tmp = make_tmp(self)
        capd = Capd(tmp, NULL_PACED)
        try:
            def written():
                return capd.stats()["packets_written"]

            def settled():
                # The count stops moving once what was in flight has landed.
                last = [-1]

                def same():
                    w = written()
                    ok = w == last[0]
                    last[0] = w
                    return ok
                return wait_until(same, 10, 0.4)

            w0 = written()
            self.assertTrue(wait_until(lambda: written() > w0, 10, 0.1), "nothing written at start")
            # A rule no frame of the null source matches, then the match-all
            # "cli" rule goes: nothing is written.
            r = capd.ctl("rules", "add", "none", "ether proto 0x1234")
            self.assertEqual(r.returncode, 0, r.stderr)
            r = capd.ctl("rules", "del", "cli")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(settled(), "written keeps growing with a rule that matches nothing")
            a = capd.stats()
            time.sleep(0.5)
            b = capd.stats()
            self.assertEqual(b["packets_written"], a["packets_written"])
            self.assertGreater(b["packets_filtered_out"], a["packets_filtered_out"])

            # The last rule goes: the reply promises every packet, and they come.
            r, j = capd.ctl_json("rules", "del", "none")
            self.assertEqual(j["status"], 0, j)
            self.assertIn("every packet is captured", j["message"])
            self.assertEqual(capd.call("status")["data"]["rules"], [])
            w1 = written()
            f1 = capd.stats()["packets_filtered_out"]
            self.assertTrue(wait_until(lambda: written() > w1 + 1000, 10, 0.1),
                            f"the empty rule set writes nothing (written stays at {written()})")
            self.assertEqual(capd.stats()["packets_filtered_out"], f1,
                             "packets filtered out with no rule in force")
            self.assertEqual(capd.ctl("stop").returncode, 0)
            self.assertEqual(capd.wait(60), 0, capd.stderr())
        finally:
            capd.kill()


# ---------------------------------------------------------------- rules stress

class RulesStress(CtlTestCase):
    """Rules added, replaced and deleted thousands of times while packets flow.

    Rules live in four slots whose expressions never overlap (port-80 TCP,
    other TCP, UDP, neither), each slot holding at most one rule at a time,
    and at least one rule is always in force (an empty set captures every
    packet with no rule counting it).
    A packet therefore matches at most one rule, and the per-rule counters
    (kept across replacements and deletions) obey, over the whole run:

        sum(rule.packets) + packets_filtered_out == packets_received

    (each packet is classified once, by exactly one RCU snapshot, before the
    -c budget; packets_over_limit is part of the matched packets, so it does
    not appear; with overlapping rules the left side would only be >=).
    """

    OPS = 2000
    TIME_BUDGET = 60.0
    CAPCTL_EVERY = 25  # every Nth operation goes through the capctl binary

    SLOTS = {
        "web": [(["tcp port 80"], []), (["tcp dst port 80"], []), (["tcp port 80"], ["GET"]),
                (["tcp src port 80"], ["HTTP/1.1", "/^POST/"])],
        "tcp": [(["tcp and not port 80"], []), (["tcp and not tcp port 80"], [])],
        "udp": [(["udp"], []), (["udp and not tcp"], []), (["udp"], ["a"])],
        "other": [(["not tcp and not udp"], []), (["not (tcp or udp)"], [])],
    }
    NAMES_PER_SLOT = 3

    def test_rules_churn(self):
        tmp = make_tmp(self)
        capd = Capd(tmp, PCAP_LOOP, extra=["-C", "10", "-W", "3"])
        try:
            self._churn(capd)
        finally:
            capd.kill()

    def _args(self, name, expr, pats):
        return {"name": name, "expression": expr, "patterns": pats, "scan": "payload"}

    def _churn(self, capd):
        c = CtlConn(capd.sock)
        # From here on rules are disjoint: the match-all "cli" rule becomes
        # the "other" slot's rule.
        self.assertEqual(c.call("rules.replace",
                                self._args("cli", "not tcp and not udp", []))["status"], 0)
        use_expressions = True
        probe = c.call("rules.add", self._args("probe", "tcp port 80", ["GET"]))
        if probe["status"] != 0:
            if FILTERS_NOT_BUILT in probe["message"]:
                use_expressions = False
                note(f"rule add answered '{probe['message']}': churning expression-less rules "
                     "in a single slot instead")
            else:
                self.fail(f"rules.add with expression and pattern failed: {probe}")
        else:
            self.assertEqual(c.call("rules.del", {"name": "probe"})["status"], 0)

        slots = self.SLOTS if use_expressions else {"any": [([""], [])]}
        present = {s: None for s in slots}  # slot -> rule name in force
        present["other" if use_expressions else "any"] = "cli"
        pid = capd.proc.pid
        rss = {}
        rng_state = 12345

        def rnd(n):
            nonlocal rng_state
            rng_state = (rng_state * 1103515245 + 12345) & 0x7FFFFFFF
            return rng_state % n

        t0 = time.monotonic()
        ops = via_capctl = 0
        rss["start"] = memory_kb(pid)
        slot_names = sorted(slots)
        while ops < self.OPS and time.monotonic() - t0 < self.TIME_BUDGET:
            slot = slot_names[rnd(len(slot_names))]
            exprs, pats = slots[slot][rnd(len(slots[slot]))]
            expr = exprs[0]
            cur = present[slot]
            if cur is None:
                op, name = "add", f"{slot}{rnd(self.NAMES_PER_SLOT)}"
            else:
                op = ("replace", "replace", "del")[rnd(3)]
                name = cur
                # The last rule stays: an empty set captures every packet
                # with no rule counting it (EmptyRuleSet tests that).
                if op == "del" and sum(1 for n in present.values() if n) == 1:
                    op = "replace"
            if ops % self.CAPCTL_EVERY == 0:
                via_capctl += 1
                argv = ["rules", op, name]
                if op != "del":
                    for p in pats:
                        argv += ["--pattern", p]
                    if expr:
                        argv.append(expr)
                r = capd.ctl(*argv)
                ok, msg = r.returncode == 0, r.stderr.strip()
            else:
                r = c.call(f"rules.{op}", {"name": name} if op == "del"
                           else self._args(name, expr, pats))
                ok, msg = r["status"] == 0, r["message"]
            if not ok:
                self.fail(f"operation {ops} rules {op} {name} {expr!r} {pats}: {msg}")
            present[slot] = None if op == "del" else name
            ops += 1
            if ops == 1000:
                rss["after_1000"] = memory_kb(pid)
            if not capd.running():
                self.fail(f"capd died after {ops} operations: {capd.stderr()}")
        elapsed = time.monotonic() - t0
        rss["end"] = memory_kb(pid)
        c.close()
        rate = ops / elapsed if elapsed else 0
        note(f"rules churn: {ops} operations in {elapsed:.1f} s ({rate:.0f} ops/s, "
             f"{via_capctl} through capctl), "
             f"capd memory (kB) at start {rss['start']}, after 1000 ops {rss.get('after_1000')}, "
             f"at the end {rss['end']}")
        self.assertGreaterEqual(ops, 1000, f"only {ops} operations in {self.TIME_BUDGET} s")

        # Live view is consistent with what we think is in force.
        st = capd.call("status")["data"]
        self.assertEqual(sorted(st["rules"]), sorted(n for n in present.values() if n))
        self.assertStillCapturing(capd, "rules churn")

        # Leak check: the second thousand operations may not grow capd's
        # heap (RssAnon) by more than 16 MiB (a leak of one page per
        # operation would show as 4 MiB, one compiled pattern database per
        # operation as far more). Packets written meanwhile must not count:
        # they go through the chunk pool, which is EAL memory (RssShmem
        # without hugepages, not counted in VmRSS with them); that the pool
        # keeps its working set small is dataplane_test's ChunkPool case.
        if "after_1000" in rss:
            growth = rss["end"]["anon"] - rss["after_1000"]["anon"]
            self.assertLess(growth, 16 * 1024,
                            f"RssAnon grew {growth} kB over operations 1000..{ops}: {rss}")

        self.assertEqual(capd.ctl("stop").returncode, 0)
        self.assertEqual(capd.wait(60), 0, capd.stderr())
        with open(capd.summary) as f:
            s = json.load(f)
        matched = sum(r["packets"] for r in s["rules"])
        names = {r["name"] for r in s["rules"]}
        note(f"rules churn summary: received {s['packets_received']}, filtered out "
             f"{s['packets_filtered_out']}, over limit {s['packets_over_limit']}, matched by "
             f"{len(s['rules'])} rules {matched}, written {s['packets_written']}")
        self.assertIn("cli", names)
        self.assertGreater(s["packets_received"], 0)
        self.assertGreater(matched, 0)
        if use_expressions:
            # Every slot saw traffic at some point (web-mix has all four kinds).
            for slot in slots:
                got = sum(r["packets"] for r in s["rules"] if r["name"].startswith(slot)
                          and r["name"] != "cli")
                if slot != "other":
                    self.assertGreater(got, 0, f"no packet counted for slot {slot}")
        self.assertEqual(matched + s["packets_filtered_out"], s["packets_received"], s)
        for w in s["workers"]:
            self.assertEqual(w["rx_packets"], w["filtered_out"] + w["over_limit"] + w["accepted"])
            self.assertEqual(w["accepted"], w["encoded"] + w["writer_slow"])
        active = sorted(r["name"] for r in s["rules"] if r["active"])
        self.assertEqual(active, sorted(n for n in present.values() if n))
        self.assertEqual(hidden_files(capd.out), [])
        for f in output_files(capd.out):
            try:
                count_records(f)
            except FileDamaged as e:
                self.fail(str(e))


# ---------------------------------------------------------------- robustness

class Robustness(SharedCapdCase):
    def conn(self):
        return CtlConn(self.capd.sock)

    def test_malformed_json_then_good_line(self):
        c = self.conn()
        try:
            for bad, status in ((b"{not json", EPROTO), (b"[]", EPROTO), (b"\xff\xfe\x00", EPROTO),
                                (b'{"v":2,"cmd":"status"}', EPROTO), (b'{"v":1}', EPROTO),
                                (b'{"v":1,"cmd":"status","args":7}', EINVAL)):
                c.send(bad + b"\n")
                r = c.reply()
                self.assertIsNotNone(r, f"connection closed after {bad!r}")
                self.assertEqual(r["status"], status, bad)
                self.assertEqual(c.call("status")["status"], 0, f"unusable after {bad!r}")
        finally:
            c.close()
        self.assertStillCapturing(self.capd, "malformed JSON")

    def test_unknown_command(self):
        c = self.conn()
        try:
            r = c.call("no.such.thing", {})
            self.assertEqual(r["status"], ENOSYS)
            self.assertEqual(r["error"], "ENOSYS")
            self.assertIn("no.such.thing", r["message"])
            r = c.call("rules.add", {"name": 7})  # wrong argument types
            self.assertEqual(r["status"], EINVAL)
            r = c.call("rules.add", {"name": "t", "patterns": "GET"})
            self.assertEqual(r["status"], EINVAL)
            r = c.call("rules.add", {"name": "t", "expression": 5})
            self.assertNotEqual(r["status"], 0)
            self.assertEqual(c.call("status")["data"]["rules"], ["cli"])
        finally:
            c.close()
        self.assertStillCapturing(self.capd, "unknown command")

    def test_megabyte_line_without_newline(self):
        c = self.conn()
        err = []

        def blast():
            try:
                c.send(b"x" * (1 << 20))
            except OSError as e:  # the server closes early: expected
                err.append(e)

        t = threading.Thread(target=blast)
        t.start()
        try:
            line = c.read_line()
        finally:
            t.join(30)
        self.assertIsNotNone(line, "closed without an answer")
        r = json.loads(line)
        self.assertEqual(r["status"], E2BIG)
        self.assertTrue(c.wait_eof(), "connection not closed after E2BIG")
        c.close()
        self.assertStillCapturing(self.capd, "a 1 MB line")

    def test_hundred_clients_at_once(self):
        conns = [self.conn() for _ in range(100)]
        try:
            # Every connection accepted (or refused) before any request: the
            # 36 over the limit hold their EBUSY answer already.
            def refused_count():
                r, _, _ = select.select([c.s for c in conns], [], [], 0)
                return len(r)

            wait_until(lambda: refused_count() >= 36, 15, 0.05)
            time.sleep(0.2)
            for c in conns:
                try:
                    c.send(b'{"v":1,"cmd":"status"}\n')
                except OSError:
                    pass  # refused ones may be closed already
            served = busy = other = 0
            for c in conns:
                try:
                    r = c.reply()
                except (OSError, ValueError):
                    r = None
                if r and r["status"] == 0:
                    served += 1
                elif r and r["status"] == EBUSY:
                    busy += 1
                else:
                    other += 1
        finally:
            for c in conns:
                c.close()
        note(f"100 simultaneous clients: {served} served, {busy} EBUSY, {other} other")
        self.assertEqual(served, 64)
        self.assertEqual(busy, 36)
        self.assertEqual(other, 0)
        # All at once through capctl, too.
        procs = [subprocess.Popen([CAPCTL, "--ctl", self.capd.sock, "--json", "stats"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(100)]
        ok = busy = cut = 0
        for p in procs:
            try:
                out, errs = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                self.fail("capctl hung with 100 clients at once")
            if p.returncode == 0:
                ok += 1
                json.loads(out)
                continue
            lines = errs.decode(errors="replace").strip().splitlines()
            self.assertEqual(len(lines), 1, errs)
            # A refused capctl should say why; it may lose that answer to the
            # race described in Permissions.test_capctl_reports_the_refusal.
            if "too many control clients" in lines[0]:
                busy += 1
            else:
                self.assertIn("Broken pipe", lines[0])
                cut += 1
        note(f"100 capctl processes at once: {ok} served, {busy} told EBUSY, "
             f"{cut} lost the answer (Broken pipe)")
        self.assertGreater(ok, 0)
        self.assertStillCapturing(self.capd, "100 simultaneous clients")

    def test_silent_client(self):
        silent = [self.conn() for _ in range(5)]
        half = self.conn()
        half.send(b'{"v":1,"cmd":"sta')
        try:
            t0 = time.monotonic()
            for _ in range(10):
                r = self.capd.ctl("status", timeout=10)
                self.assertEqual(r.returncode, 0, r.stderr)
            self.assertLess(time.monotonic() - t0, 15)
        finally:
            for c in silent + [half]:
                c.close()
        self.assertStillCapturing(self.capd, "silent clients")

    def test_disconnect_mid_reply(self):
        # Rules with long (but cheap) expressions make rules.list answer in
        # several hundred kB, more than a socket buffer holds.
        c = self.conn()
        names = []
        try:
            pad = " " * 50000
            for i in range(8):
                n = f"long{i}"
                r = c.call("rules.add", {"name": n, "expression": f"ip{pad}and udp"})
                if r["status"] != 0 and FILTERS_NOT_BUILT in r["message"]:
                    r = c.call("rules.add", {"name": n, "patterns": ["x" * 50000]})
                self.assertEqual(r["status"], 0, r["message"][:300])
                names.append(n)
            size = len(json.dumps(c.call("rules.list")))
            self.assertGreater(size, 400000)
            for i in range(20):
                d = self.conn()
                d.send(b'{"v":1,"cmd":"rules.list"}\n')
                if i % 2:
                    d.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                d.close()
            time.sleep(0.3)
            # Half-read, then gone.
            for _ in range(5):
                d = self.conn()
                d.send(b'{"v":1,"cmd":"rules.list"}\n')
                d.s.recv(1000)
                d.close()
            self.assertTrue(self.capd.running(), self.capd.stderr())
        finally:
            for n in names:
                c.call("rules.del", {"name": n})
            c.close()
        self.assertStillCapturing(self.capd, "clients vanishing mid-reply")


# ---------------------------------------------------------------- compile limits

def many_hosts(n):
    """`host A or host B or ...`: libpcap's optimiser takes time roughly cubic
    in the number of terms (about 15 s for 300 on a loaded 2-vCPU VM)."""
    return " or ".join(f"host 198.18.{i // 250}.{i % 250 + 1}" for i in range(n))


def children_of(pid):
    out = []
    for t in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(t) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


class CompileLimits(CtlTestCase):
    """Rule compiles run off the control thread, under a time limit and size
    caps; capd answers and stops on time while one runs."""

    def test_status_and_sigterm_while_a_long_compile_runs(self):
        tmp = make_tmp(self)
        capd = Capd(tmp, NULL_PACED, extra=["--compile-timeout", "600"])
        try:
            # 700 terms: a minute or more of libpcap's optimiser.
            slow = CtlConn(capd.sock, timeout=5)
            slow.send(json.dumps({"v": 1, "cmd": "rules.add",
                                  "args": {"name": "slow", "expression": many_hosts(700)}})
                      .encode() + b"\n")
            self.assertTrue(wait_until(lambda: capd.call("status")["data"]["control"]["deferred"]
                                       == 1, 10, 0.1), "the rules change is not pending")
            # The control socket answers meanwhile, and capture goes on.
            for _ in range(3):
                r = capd.ctl("status", timeout=10)
                self.assertEqual(r.returncode, 0, r.stderr)
            self.assertStillCapturing(capd, "a long compile")
            # A second change waits for the first.
            r = capd.ctl("--json", "rules", "add", "other", "udp")
            self.assertEqual(json.loads(r.stdout)["status"], EBUSY, r.stdout)
            kids = [k for k in children_of(capd.proc.pid) if alive(k)]
            if glob.glob(f"/proc/{capd.proc.pid}/task/*/children"):
                self.assertEqual(len(kids), 1, f"one compiling child expected: {kids}")
            # SIGTERM stops capd well before the compile would end.
            t0 = time.monotonic()
            capd.proc.send_signal(15)
            rc = capd.wait(20)  # hang detector: the compile alone takes a minute
            note(f"capd stopped {time.monotonic() - t0:.1f} s after SIGTERM during a compile")
            self.assertEqual(rc, 0, capd.stderr())
            self.assertFalse(any(alive(k) for k in kids), "the compiling child outlived capd")
            self.assertIsNone(slow.read_line(), "an answer for a change that never landed")
            slow.close()
            with open(capd.summary) as f:
                s = json.load(f)
            self.assertEqual([r["name"] for r in s["rules"]], ["cli"])
        finally:
            capd.kill()

    def test_a_compile_over_the_time_limit_is_refused(self):
        tmp = make_tmp(self)
        capd = Capd(tmp, NULL_PACED, extra=["--compile-timeout", "1"])
        try:
            r = capd.ctl("rules", "add", "slow", many_hosts(400))
            line = self.assertOneLineError(r, "rules add of a slow expression")
            self.assertIn("rule 'slow'", line)
            self.assertIn("took longer than 1 s", line)
            self.assertEqual(capd.call("status")["data"]["rules"], ["cli"])
            self.assertStillCapturing(capd, "a compile stopped at its time limit")
            # Nothing is left over: the next change compiles.
            r = capd.ctl("rules", "add", "web", "tcp port 80")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(capd.ctl("stop").returncode, 0)
            self.assertEqual(capd.wait(60), 0, capd.stderr())
        finally:
            capd.kill()

    def test_size_caps_over_the_socket(self):
        tmp = make_tmp(self)
        capd = Capd(tmp, NULL_PACED)
        try:
            c = CtlConn(capd.sock)
            r = c.call("rules.add", {"name": "p", "patterns": ["a"] * 10001})
            self.assertEqual((r["status"], r["message"]),
                             (E2BIG, "10001 patterns in all, more than the 10000 allowed"))
            r = c.call("rules.add", {"name": "p", "patterns": ["GET ", "x" * 5000]})
            self.assertEqual((r["status"], r["message"]),
                             (E2BIG, "rule 'p', pattern 2: 5000 bytes, more than the 4096 allowed"))
            c.close()
            self.assertEqual(capd.call("status")["data"]["rules"], ["cli"])
            self.assertStillCapturing(capd, "refused oversized rules")
        finally:
            capd.kill()

    def test_caps_and_time_limit_on_the_command_line(self):
        tmp = make_tmp(self)
        out = os.path.join(tmp, "x.pcap")
        r = run([CAPD, "-i", "null:64", "-w", out, "--ctl", "none", "-c", "10",
                 "tcp or " + " " * 70000 + "udp"], timeout=60)
        self.assertNotEqual(r.returncode, 0)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(lines, ["capd: rule 'cli': expression of 70010 bytes, more than the "
                                 "65536 allowed"], r.stderr)
        r = run([CAPD, "-i", "null:64", "-w", out, "--ctl", "none", "-c", "10",
                 "--compile-timeout", "1", many_hosts(400)], timeout=60)
        self.assertNotEqual(r.returncode, 0)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertRegex(lines[0], r"^capd: .*rule 'cli'.*took longer than 1 s")
        self.assertFalse(os.path.exists(out), "a refused filter left an output file")


# ---------------------------------------------------------------- socket limits

class SocketLimits(CtlTestCase):
    """Idle clients time out; a client that never reads stays bounded."""

    def test_idle_client_is_dropped(self):
        tmp = make_tmp(self)
        capd = Capd(tmp, NULL_PACED, extra=["--ctl-idle-timeout", "1"])
        try:
            idle = CtlConn(capd.sock, timeout=15)
            half = CtlConn(capd.sock, timeout=15)
            half.send(b'{"v":1,"cmd":"sta')
            self.assertTrue(idle.wait_eof(), "a silent client was kept for 15 s")
            self.assertTrue(half.wait_eof(), "a client with half a request was kept for 15 s")
            ctl = capd.call("status")["data"]["control"]
            self.assertGreaterEqual(ctl["idle_timeouts"], 2)
            self.assertIn("no complete request", capd.stderr())
            # A client that keeps asking is never idle.
            busy = CtlConn(capd.sock)
            for _ in range(8):
                self.assertEqual(busy.call("ping")["status"], 0)
                time.sleep(0.25)
            busy.close()
        finally:
            capd.kill()

    def test_a_client_that_pipelines_and_never_reads_stays_bounded(self):
        tmp = make_tmp(self)
        capd = Capd(tmp, NULL_PACED, extra=["--ctl-idle-timeout", "3"])
        try:
            rss0 = rss_kb(capd.proc.pid, "RssAnon")
            hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hog.connect(capd.sock)
            hog.setblocking(False)
            req = b'{"v":1,"cmd":"rules.list"}\n'
            backlog = req * 200000  # 5 MB of requests, far more replies
            sent = 0
            t0 = time.monotonic()
            while sent < len(backlog) and time.monotonic() - t0 < 5:
                try:
                    sent += hog.send(backlog[sent:sent + 65536])
                except BlockingIOError:
                    time.sleep(0.01)
                except OSError:
                    break
            ctl = capd.call("status")["data"]["control"]
            note(f"a client that never reads: {sent} bytes of requests taken, control "
                 f"counters {ctl}, RssAnon {rss0} -> {rss_kb(capd.proc.pid, 'RssAnon')} kB")
            self.assertGreaterEqual(ctl["read_pauses"], 1)
            self.assertLess(ctl["pending_reply_bytes_peak"], 1 << 20)
            self.assertLess(sent, len(backlog), "capd read every request of a client that "
                                                "reads no reply")
            # Dropped once it has made no progress for the idle timeout.
            gone = wait_until(lambda: capd.call("status")["data"]["control"]["clients"] <= 1,
                              15, 0.2)
            self.assertTrue(gone, "a client that never reads was kept")
            hog.close()
            self.assertLess(rss_kb(capd.proc.pid, "RssAnon") - rss0, 16 * 1024)
            self.assertIn("bytes of replies unread", capd.stderr())
            self.assertStillCapturing(capd, "a client that never reads")
        finally:
            capd.kill()


# ---------------------------------------------------------------- permissions

def _user_exists(u):
    try:
        pwd.getpwnam(u)
        return True
    except KeyError:
        return False


class Permissions(CtlTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to run capctl as another user")
        if not _user_exists("nobody") or not shutil.which("setpriv"):
            raise unittest.SkipTest("needs user nobody and setpriv")
        # A copy of capctl that nobody can execute whatever the build tree's modes.
        cls.bindir = tempfile.mkdtemp(prefix="linecap-ctl-bin-")
        os.chmod(cls.bindir, 0o755)
        cls.capctl = os.path.join(cls.bindir, "capctl")
        shutil.copy2(CAPCTL, cls.capctl)
        os.chmod(cls.capctl, 0o755)
        cls.nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.bindir, True)

    def as_nobody(self, sock, *args, gid=None):
        g = str(gid) if gid is not None else self.nogroup
        return run(["setpriv", "--reuid=nobody", f"--regid={g}", "--clear-groups",
                    self.capctl, "--ctl", sock] + list(args))

    def test_socket_mode_refuses_other_users(self):
        tmp = make_tmp(self)
        os.chmod(tmp, 0o755)  # nobody reaches the socket; its mode 0660 stops it
        capd = Capd(tmp, NULL_PACED)
        try:
            st = os.stat(capd.sock)
            self.assertEqual(st.st_mode & 0o7777, 0o660)
            self.assertEqual((st.st_uid, st.st_gid), (0, 0))
            r = self.as_nobody(capd.sock, "status")
            line = self.assertOneLineError(r, "capctl as nobody")
            self.assertIn("Permission denied", line)
            # A directory nobody cannot traverse: refused as well.
            os.chmod(tmp, 0o700)
            r = self.as_nobody(capd.sock, "stats")
            self.assertOneLineError(r, "capctl as nobody through a 0700 directory")
            os.chmod(tmp, 0o755)
            self.assertStillCapturing(capd, "refused connections")
        finally:
            capd.kill()

    RAW_AS_NOBODY = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM);s.settimeout(10)\n"
        "s.connect(sys.argv[1])\n"
        "try:\n"
        "    s.sendall(b'{\"v\":1,\"cmd\":\"stop\"}\\n')\n"
        "except OSError:\n"
        "    pass\n"
        "b=b''\n"
        "while b'\\n' not in b:\n"
        "    c=s.recv(4096)\n"
        "    if not c: break\n"
        "    b+=c\n"
        "sys.stdout.write(b.decode())\n")

    def _with_group_capd(self, body):
        group = f"lc-ctl-test-{os.getpid()}"
        r = run(["groupadd", group])
        if r.returncode != 0:
            self.skipTest(f"groupadd failed: {r.stderr.strip()}")
        capd = None
        try:
            gid = grp.getgrnam(group).gr_gid
            tmp = make_tmp(self)
            os.chmod(tmp, 0o755)
            capd = Capd(tmp, NULL_PACED, extra=["--ctl-group", group])
            body(capd, group, gid)
        finally:
            if capd:
                capd.kill()
            run(["groupdel", group])

    def test_peer_credentials_and_ctl_group(self):
        def body(capd, group, gid):
            st = os.stat(capd.sock)
            self.assertEqual(st.st_gid, gid, "socket not owned by --ctl-group")
            self.assertEqual(st.st_mode & 0o7777, 0o660)
            # Allowed: nobody whose primary group is the control group.
            r = self.as_nobody(capd.sock, "status", gid=gid)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"(?m)^state: +capturing")
            r = self.as_nobody(capd.sock, "--json", "stats", gid=gid)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("packets_received", json.loads(r.stdout)["data"])
            # The paced source may not have delivered a packet yet.
            got = wait_until(lambda: json.loads(
                self.as_nobody(capd.sock, "--json", "stats", gid=gid).stdout or "{}")
                .get("data", {}).get("packets_received", 0) > 0, 20, interval=0.2)
            self.assertTrue(got, "no packet received within 20 s of start")
            # Refused by credentials: the file is opened to all, but nobody in
            # its own group is not in the control group. A raw client sends
            # "stop" and reads the answer.
            os.chmod(capd.sock, 0o666)
            for _ in range(5):
                r = run(["setpriv", "--reuid=nobody", f"--regid={self.nogroup}",
                         "--clear-groups", sys.executable, "-c", self.RAW_AS_NOBODY, capd.sock])
                self.assertEqual(r.returncode, 0, r.stderr)
                j = json.loads(r.stdout)
                self.assertEqual(j["status"], EACCES)
                self.assertEqual(j["error"], "EACCES")
                self.assertTrue(j["message"].startswith("permission denied"), j["message"])
                self.assertIn(group, j["message"])
            # The refused stops stopped nothing.
            self.assertStillCapturing(capd, "refused stop")
            self.assertEqual(capd.ctl("stop").returncode, 0)
            self.assertEqual(capd.wait(60), 0, capd.stderr())

        self._with_group_capd(body)

    HOLD_AS_NOBODY = (
        "import socket,sys,select\n"
        "served=busy=0\n"
        "keep=[]\n"
        "for i in range(int(sys.argv[2])):\n"
        "    s=socket.socket(socket.AF_UNIX,socket.SOCK_STREAM);s.settimeout(10)\n"
        "    s.connect(sys.argv[1])\n"
        "    try:\n"
        "        s.sendall(b'{\"v\":1,\"cmd\":\"ping\"}\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "    b=b''\n"
        "    while b'\\n' not in b:\n"
        "        try:\n"
        "            c=s.recv(4096)\n"
        "        except OSError:\n"
        "            break\n"
        "        if not c: break\n"
        "        b+=c\n"
        "    if b'pong' in b: served+=1\n"
        "    elif b'EBUSY' in b: busy+=1\n"
        "    keep.append(s)\n"
        "print(served,busy,flush=True)\n"
        "sys.stdin.read()\n")

    def test_root_is_answered_while_other_users_hold_every_other_slot(self):
        def body(capd, group, gid):
            p = subprocess.Popen(["setpriv", "--reuid=nobody", f"--regid={gid}",
                                  "--clear-groups", sys.executable, "-c", self.HOLD_AS_NOBODY,
                                  capd.sock, "70"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                line = p.stdout.readline().split()
                self.assertEqual(line, ["56", "14"],
                                 "connections of a user in --ctl-group: served, refused")
                for _ in range(3):
                    r = capd.ctl("status", timeout=10)
                    self.assertEqual(r.returncode, 0, r.stderr)
                ctl = capd.call("status")["data"]["control"]
                self.assertEqual(ctl["refused_busy"], 14)
                self.assertEqual(ctl["clients"] - ctl["root_clients"], 56)
                self.assertIn("kept for root", capd.stderr())
            finally:
                p.stdin.close()
                p.wait(30)
            self.assertEqual(capd.ctl("stop").returncode, 0)
            self.assertEqual(capd.wait(60), 0, capd.stderr())

        self._with_group_capd(body)

    def test_capctl_reports_the_refusal(self):
        # capd answers EACCES and closes at once; capctl must print that
        # answer even when its own request could not be sent (EPIPE).
        def body(capd, group, gid):
            os.chmod(capd.sock, 0o666)
            lines = []
            for i in range(20):
                args = ["--json", "stop"] if i % 2 else ["status"]
                r = self.as_nobody(capd.sock, *args)
                self.assertNotEqual(r.returncode, 0)
                if "--json" in args and r.stdout.strip():
                    j = json.loads(r.stdout)
                    self.assertEqual(j["status"], EACCES)
                    lines.append(j["message"])
                else:
                    lines.append(self.assertOneLineError(r, "capctl as nobody"))
            wrong = [l for l in lines if "permission denied" not in l]
            self.assertEqual(wrong, [], f"{len(wrong)} of 20 refusals did not say why")
            self.assertStillCapturing(capd, "refused capctl")

        self._with_group_capd(body)


def main():
    t0 = time.monotonic()
    runner = unittest.TextTestRunner(verbosity=2, stream=sys.stdout)
    prog = unittest.main(module="__main__", testRunner=runner, exit=False)
    r = prog.result
    print(f"\n{os.path.basename(sys.argv[0])}: {r.testsRun} tests in "
          f"{time.monotonic() - t0:.1f} s, {len(r.failures) + len(r.errors)} failed, "
          f"{len(r.skipped)} skipped, {len(r.expectedFailures)} expected failures")
    for m in REPORT:
        print(f"  {m}")
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
