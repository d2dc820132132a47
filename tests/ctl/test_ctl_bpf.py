#!/usr/bin/env python3
"""eBPF objects over the control socket, end to end. Python 3 stdlib only.

The policy (README "eBPF objects", ctl/handlers_rules.cc): a peer with capd's
own rights (root) may name any path; any other member of the control group
may only name an object in capd's --bpf-dir, by file name. capd opens the
file once, with O_NOFOLLOW|O_NONBLOCK, and reads only a regular file.

What is checked, each with capd still capturing afterwards:
  * a non-root member cannot name a path: the answer is the same for a
    root-only file, a missing file and a directory, and names none of them;
  * without --bpf-dir a non-root member cannot load any object;
  * with --bpf-dir: a name loads; '..', a path, a symbolic link planted by
    root to a root-only file and a FIFO are refused, the FIFO without
    blocking the control thread;
  * root may give a path, but not a FIFO or a symbolic link either;
  * a hostile object is refused with the instruction that makes it so;
  * capd refuses to start with a --bpf-dir its group could write.

Runs as root (setpriv drops to nobody for the operator's side).

Environment (set by tests/meson.build):
  LINECAP_BUILD_DIR  build root (dataplane/capd, ctl/capctl, filters/*.bpf.o)
  LINECAP_KEEP_TMP   if set, temporary directories are kept
"""

import errno
import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from capdtest import BUILD_DIR  # noqa: E402

CAPD = os.path.join(BUILD_DIR, "dataplane", "capd")
CAPCTL = os.path.join(BUILD_DIR, "ctl", "capctl")
EXAMPLES = os.path.join(BUILD_DIR, "filters")
HTTP_GET = os.path.join(EXAMPLES, "http_get.bpf.o")
HOSTILE = os.path.join(EXAMPLES, "hostile.bpf.o")
KEEP_TMP = bool(os.environ.get("LINECAP_KEEP_TMP"))
NULL_PACED = ["-i", "null:64,rate=20k"]
# A hang guard, not a timing expectation: a control thread blocked on a
# FIFO would never answer.
HANG = 60


def run(cmd, timeout=HANG):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def wait_until(pred, timeout, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def call(sock, cmd, args=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(HANG)
    try:
        s.connect(sock)
        s.sendall((json.dumps({"v": 1, "cmd": cmd, "args": args or {}}) + "\n").encode())
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return json.loads(buf.decode())
    finally:
        s.close()


class Capd:
    def __init__(self, tmp, extra=()):
        self.sock = os.path.join(tmp, "capd.sock")
        self.err_path = os.path.join(tmp, "capd.stderr")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [CAPD] + NULL_PACED + ["--ctl", self.sock, "-w", os.path.join(tmp, "cap.pcap")] +
            list(extra), stdout=subprocess.DEVNULL, stderr=self.err, stdin=subprocess.DEVNULL)

        def up():
            if self.proc.poll() is not None or not os.path.exists(self.sock):
                return False
            try:
                return call(self.sock, "ping").get("status") == 0
            except OSError:
                return False

        if not wait_until(lambda: self.proc.poll() is not None or up(), 60, 0.1) or \
                self.proc.poll() is not None:
            self.kill()
            raise AssertionError(f"capd did not come up: {self.stderr()}")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def received(self):
        r = call(self.sock, "stats")
        assert r["status"] == 0, r
        return r["data"]["packets_received"]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.err.close()


class BpfObjectsOverTheSocket(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (capd, setpriv, groupadd)")
        for path in (CAPD, CAPCTL, HTTP_GET, HOSTILE):
            if not os.path.exists(path):
                raise unittest.SkipTest(f"not built: {path}")
        if shutil.which("setpriv") is None:
            raise unittest.SkipTest("setpriv not found")
        cls.group = f"lc-bpf-test-{os.getpid()}"
        r = run(["groupadd", cls.group])
        if r.returncode != 0:
            raise unittest.SkipTest(f"groupadd failed: {r.stderr.strip()}")
        cls.gid = grp.getgrnam(cls.group).gr_gid

    @classmethod
    def tearDownClass(cls):
        run(["groupdel", cls.group])

    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="linecap-bpf-")
        os.chmod(d, 0o755)  # nobody reaches the socket
        if not KEEP_TMP:
            self.addCleanup(shutil.rmtree, d, True)
        return d

    def capd(self, extra=()):
        tmp = self.tmpdir()
        c = Capd(tmp, ["--ctl-group", self.group] + list(extra))
        self.addCleanup(c.kill)
        return tmp, c

    def as_operator(self, capd, *args):
        """capctl --json as nobody, in the control group only."""
        r = run(["setpriv", "--reuid=nobody", f"--regid={self.gid}", "--clear-groups",
                 CAPCTL, "--ctl", capd.sock, "--json"] + list(args))
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"capctl {args}: not JSON: {r.stdout!r} {r.stderr!r}") from None

    def as_root(self, capd, *args):
        r = run([CAPCTL, "--ctl", capd.sock, "--json"] + list(args))
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise AssertionError(f"capctl {args}: not JSON: {r.stdout!r} {r.stderr!r}") from None

    def assertStillCapturing(self, capd, what):
        self.assertIsNone(capd.proc.poll(), f"capd died after {what}: {capd.stderr()}")
        before = capd.received()
        self.assertTrue(wait_until(lambda: capd.received() > before, 30),
                        f"capd stopped receiving after {what}")

    def root_only_file(self):
        """A copy of a valid object that only root can reach."""
        d = tempfile.mkdtemp(prefix="linecap-secret-")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o700)
        path = os.path.join(d, "secret.bpf.o")
        shutil.copy(HTTP_GET, path)
        os.chmod(path, 0o600)
        return d, path

    def bpf_dir(self):
        d = self.tmpdir()
        shutil.copy(HTTP_GET, os.path.join(d, "http_get.bpf.o"))
        shutil.copy(HOSTILE, os.path.join(d, "hostile.bpf.o"))
        return d

    def test_operator_cannot_name_a_path(self):
        secret_dir, secret = self.root_only_file()
        for extra in ([], ["--bpf-dir", self.bpf_dir()]):
            _, capd = self.capd(extra)
            answers = {}
            for what, path in (("root-only file", secret),
                               ("missing file", os.path.join(secret_dir, "missing.bpf.o")),
                               ("root-only directory", secret_dir),
                               ("relative path", "../" + os.path.basename(secret))):
                j = self.as_operator(capd, "rules", "add", "probe", "--bpf-object", path)
                self.assertEqual(j["status"], errno.EACCES, (extra, what, j))
                self.assertNotIn(secret_dir, j["message"], (extra, what))
                self.assertNotIn("secret", j["message"], (extra, what))
                answers[what] = j["message"]
            # The same answer whatever the path: nothing to learn from it.
            self.assertEqual(len(set(answers.values())), 1, answers)
            self.assertIn("only root may", next(iter(answers.values())))
            j = self.as_root(capd, "rules", "list")
            self.assertEqual([r["name"] for r in j["data"]["rules"]], ["cli"])
            self.assertStillCapturing(capd, "refused paths")

    def test_operator_without_bpf_dir_loads_nothing(self):
        _, capd = self.capd()
        j = self.as_operator(capd, "rules", "add", "web", "--bpf-object", "http_get.bpf.o")
        self.assertEqual(j["status"], errno.EACCES, j)
        self.assertIn("--bpf-dir", j["message"])

    def test_operator_loads_by_name_from_bpf_dir(self):
        d = self.bpf_dir()
        secret_dir, secret = self.root_only_file()
        os.symlink(secret, os.path.join(d, "link.bpf.o"))
        os.mkfifo(os.path.join(d, "fifo.bpf.o"), 0o644)
        _, capd = self.capd(["--bpf-dir", d])

        j = self.as_operator(capd, "rules", "add", "web", "--bpf-object", "http_get.bpf.o")
        self.assertEqual(j["status"], 0, j)
        j = self.as_root(capd, "rules", "list")
        web = [r for r in j["data"]["rules"] if r["name"] == "web"]
        self.assertEqual(len(web), 1, j)
        self.assertEqual(web[0]["bpf_object"], os.path.join(d, "http_get.bpf.o"))

        refusals = {
            "..": ("../http_get.bpf.o", errno.EACCES, "by its file name"),
            "dot-dot": ("..", errno.EACCES, "by its file name"),
            "absolute": (HTTP_GET, errno.EACCES, "by its file name"),
            "symlink": ("link.bpf.o", errno.EINVAL, "is a symbolic link"),
            "fifo": ("fifo.bpf.o", errno.EINVAL, "is not a regular file"),
            "missing": ("none.bpf.o", errno.EINVAL, "no such file"),
            "hostile": ("hostile.bpf.o:writes_context", errno.EINVAL,
                        "program 'writes_context': insn 1 (stxdw [r1], r2): store to the context"),
        }
        for what, (name, status, text) in refusals.items():
            j = self.as_operator(capd, "rules", "add", "x", "--bpf-object", name)
            self.assertEqual(j["status"], status, (what, j))
            self.assertIn(text, j["message"], what)
            self.assertNotIn(secret_dir, j["message"], what)
        # The control thread did not block on the FIFO: it answers at once.
        self.assertEqual(call(capd.sock, "ping")["status"], 0)
        self.assertStillCapturing(capd, "refused objects")

        # A later rule change keeps the loaded object without reopening it:
        # the file can go away.
        os.unlink(os.path.join(d, "http_get.bpf.o"))
        j = self.as_operator(capd, "rules", "add", "syn", "tcp[tcpflags] = tcp-syn")
        self.assertEqual(j["status"], 0, j)

    def test_root_may_give_a_path_but_not_a_fifo_or_link(self):
        tmp, capd = self.capd()
        _, secret = self.root_only_file()
        j = self.as_root(capd, "rules", "add", "web", "--bpf-object", secret)
        self.assertEqual(j["status"], 0, j)
        fifo = os.path.join(tmp, "fifo.bpf.o")
        os.mkfifo(fifo, 0o600)
        link = os.path.join(tmp, "link.bpf.o")
        os.symlink(secret, link)
        for path, text in ((fifo, "is not a regular file"), (link, "is a symbolic link"),
                           ("/dev/zero", "is not a regular file")):
            j = self.as_root(capd, "rules", "add", "x", "--bpf-object", path)
            self.assertEqual(j["status"], errno.EINVAL, j)
            self.assertIn(text, j["message"])
        j = self.as_root(capd, "rules", "add", "x", "--bpf-object", HOSTILE + ":reads_past_context")
        self.assertEqual(j["status"], errno.EINVAL, j)
        self.assertIn("insn 0 (ldxdw r1, [r1+24]): reads the context at offset 24", j["message"])
        self.assertStillCapturing(capd, "refused objects")

    def test_bpf_dir_must_be_root_owned_and_not_group_writable(self):
        d = self.tmpdir()
        os.chmod(d, 0o775)
        tmp = self.tmpdir()
        r = run([CAPD] + NULL_PACED + ["--ctl", os.path.join(tmp, "s.sock"), "-w",
                                       os.path.join(tmp, "x.pcap"), "--bpf-dir", d, "-c", "1"])
        self.assertNotEqual(r.returncode, 0)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn("--bpf-dir", lines[0])
        self.assertIn("writable by no one else", lines[0])
        nobody = pwd.getpwnam("nobody")
        os.chmod(d, 0o755)
        os.chown(d, nobody.pw_uid, nobody.pw_gid)
        r = run([CAPD] + NULL_PACED + ["--ctl", os.path.join(tmp, "s.sock"), "-w",
                                       os.path.join(tmp, "x.pcap"), "--bpf-dir", d, "-c", "1"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("owned by root", r.stderr)
        self.assertEqual(os.listdir(tmp), [], "a refused start left files behind")


if __name__ == "__main__":
    unittest.main(verbosity=2)
