#!/usr/bin/env python3
"""Bad input gets exactly one line on stderr, a non-zero exit, and no file.

The contract: "A command that does not work, or options that contradict each
other, get one clear line on stderr and a non-zero exit. They never produce
a half-written file." So for every case below: exit != 0, stdout empty,
stderr exactly one non-empty line, and the output directory left as it was
(no new file with the final name, no hidden .NAME.partial file, and the file
an earlier capture left at the -w path keeps its bytes).

A capture damaged part-way is different: capd writes the packets before the
damage into whole files, says on stderr where the damage is, and exits
non-zero.
"""

import os
import stat
import struct
import random
import subprocess

import capdtest
import gencaps
import pcaplib
from capdtest import CapdTestCase

# The readiness line names the sources; the damage line is another one.
READY = "capd: capturing on "


def pcaplib_hidden(final):
    """The hidden name capd writes a file under (storage/file_set.hh)."""
    d, base = os.path.split(final)
    return os.path.join(d, "." + base + ".partial")


class BadInput(CapdTestCase):
    def setUp(self):
        super().setUp()
        self.good = gencaps.write(self.path("good.pcap"), gencaps.mixed(20)[0])
        self.out_dir = self.path("out")
        os.mkdir(self.out_dir)
        self.out = os.path.join(self.out_dir, "x.pcap")

    def assertRefused(self, args, watch=(), label=None):
        """Runs capd with args; checks the one-line refusal, that neither
        out_dir nor any directory in `watch` gained an entry, and that the
        file already at -w's path (an earlier capture) keeps its bytes."""
        if not os.path.exists(self.out):
            with open(self.out, "wb") as f:
                f.write(b"an earlier capture " * 200)
        with open(self.out, "rb") as f:
            earlier = f.read()
        watch = [self.out_dir] + list(watch)
        before = {d: sorted(capdtest.listdir(d)) for d in watch if os.path.isdir(d)}
        run = self.capd(args, cwd=self.out_dir)
        desc = (label + "\n" if label else "") + run.describe()
        self.assertNotEqual(run.rc, 0, desc)
        self.assertEqual(run.stdout, "", desc)
        self.assertEqual(len(run.stderr_lines), 1, "exactly one line on stderr\n" + desc)
        self.assertTrue(run.stderr_lines[0].startswith("capd: "), desc)
        after = {d: sorted(capdtest.listdir(d)) for d in before}
        self.assertEqual(after, before, "a refused command creates no file\n" + desc)
        with open(self.out, "rb") as f:
            self.assertTrue(f.read() == earlier, "the existing -w file was touched\n" + desc)
        return run

    def test_unknown_source(self):
        for src in ("foo:bar", "pcap:", "af_packet:", "null:5", "null:99999", "lcnosuchif0",
                    "null:64,rate=", "null:64,frames=", "null:64,colour=red", "null,rate=-3"):
            with self.subTest(source=src):
                self.assertRefused(["-i", src, "-w", self.out])

    def test_device_at_the_output_name_is_never_replaced(self):
        # As root, renaming the finished file over /dev/null would leave a
        # regular file there for the whole system.
        dev = os.path.join(self.out_dir, "null")
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        run = self.capd(["-i", f"pcap:{self.good}", "-w", dev], cwd=self.out_dir)
        self.assertNotEqual(run.rc, 0, run.describe())
        self.assertEqual(len(run.stderr_lines), 1, run.describe())
        self.assertIn("not a regular file", run.stderr_lines[0])
        self.assertTrue(stat.S_ISCHR(os.lstat(dev).st_mode), "the device was replaced")

    def test_same_source_twice(self):
        link = self.path("good-link.pcap")
        os.symlink(self.good, link)
        for a, b in ((f"pcap:{self.good}", f"pcap:{self.good}"), (f"pcap:{self.good}", f"pcap:{link}"),
                     ("af_packet:lo", "af_packet:lo"), ("af_packet:lo", "af_xdp:lo")):
            with self.subTest(sources=(a, b)):
                run = self.assertRefused(["-i", a, "-i", b, "-w", self.out])
                self.assertIn("given twice", run.stderr_lines[0])
        # A looped replay is a load generator: twice is allowed.
        run = self.capd(["-q", "-i", f"pcap:{self.good},loop", "-i", f"pcap:{self.good},loop",
                         "-c", "100", "-w", self.out])
        self.assertCapdOk(run, quiet=True)

    def test_numbers_out_of_range_say_what_is_allowed(self):
        for args, words in ((["-c", "-5"], "-c: must be 0 or more, not -5"),
                            (["-C", "-1"], "-C: must be 0 or more, not -1"),
                            (["--workers", "x"], "--workers: expected a number, not 'x'"),
                            (["-s", "300000"], "invalid snaplen 300000 (must be >= 0 and <= 262144)")):
            with self.subTest(args=args):
                run = self.assertRefused(["-i", f"pcap:{self.good}", "-w", self.out] + args)
                self.assertIn(words, run.stderr_lines[0])
                self.assertLess(len(run.stderr_lines[0]), 200, run.stderr_lines[0])

    def test_eal_arguments_are_checked_by_capd(self):
        """A mistyped --eal option is one line from capd, not EAL's complaint
        twice and its usage on standard output."""
        for extra, words in (("--bogus-arg", "'--bogus-arg' is not an EAL option"),
                             ("-l 0", "capd places its lcores itself"),
                             ("--lcores=0@0", "capd places its lcores itself")):
            with self.subTest(eal=extra):
                run = self.assertRefused(["-i", f"pcap:{self.good}", "-w", self.out,
                                          "--eal", extra])
                self.assertIn(words, run.stderr_lines[0])
        # An option EAL knows with a value it refuses: EAL's usage stays off
        # stdout (which -w - would use for packets) and capd says what to do.
        run = self.capd(["-i", f"pcap:{self.good}", "-w", self.out, "--eal", "--iova-mode=xyz"],
                        cwd=self.out_dir)
        self.assertEqual(run.rc, 1, run.describe())
        self.assertEqual(run.stdout, "", run.describe())
        self.assertIn("EAL initialisation failed", run.stderr_lines[-1])
        self.assertIn("--log-level", run.stderr_lines[-1])
        self.assertLessEqual(len(run.stderr_lines), 2, run.describe())

    def test_workers_and_memory_the_host_cannot_give(self):
        cpus = len(os.sched_getaffinity(0))
        run = self.assertRefused(["-i", f"pcap:{self.good}", "-w", self.out,
                                  "--workers", str(4 * cpus + 1)])
        self.assertIn(f"on {cpus} CPU", run.stderr_lines[0])
        # 4 TiB of rings: refused before EAL would try to touch it.
        run = self.assertRefused(["-i", f"pcap:{self.good}", "-w", self.out,
                                  "--ring-chunks", "65536", "--chunk-kb", "65536"])
        self.assertIn("does not fit", run.stderr_lines[0])
        # More workers than CPUs runs, with a warning.
        run = self.capd(["-q", "-i", "null", "-c", "1000", "--workers", str(cpus + 1),
                         "--ring-chunks", "8", "-w", self.out])
        self.assertEqual(run.rc, 0, run.describe())
        self.assertEqual(run.stderr_lines,
                         [f"capd: warning: --workers {cpus + 1} on {cpus} CPU"
                          f"{'' if cpus == 1 else 's'}: workers share CPUs and each one waits "
                          "while another runs"], run.describe())

    def test_control_socket_refusals_leave_existing_output_alone(self):
        """An explicit --ctl or --ctl-group that cannot be served is refused
        before any output file is opened: an existing -w file keeps its
        bytes, and no directory is made for the socket."""
        old = bytes(range(256)) * 64
        with open(self.out, "wb") as f:
            f.write(old)
        busy = os.path.join(self.tmp, "busy.sock")
        first = capdtest.RunningCapd(["-q", "-i", "null:64,rate=1000", "--ctl", busy, "-w",
                                      self.path("first.pcap")])
        try:
            self.assertTrue(capdtest.wait_until(lambda: os.path.exists(busy), 30),
                            "the first capd never made its socket")
            cases = (
                (["--ctl", os.path.join(self.tmp, "no", "such", "dir", "c.sock")],
                 "no such directory"),
                (["--ctl-group", f"lc-no-such-group-{os.getpid()}"], "no such group"),
                (["--ctl", busy], "another capd is listening there"),
            )
            for extra, words in cases:
                with self.subTest(extra=extra):
                    run = self.capd(["-i", f"pcap:{self.good}", "-w", self.out] + extra,
                                    cwd=self.out_dir)
                    self.assertNotEqual(run.rc, 0, run.describe())
                    self.assertEqual(len(run.stderr_lines), 1, run.describe())
                    self.assertIn(words, run.stderr_lines[0])
                    with open(self.out, "rb") as f:
                        self.assertEqual(f.read(), old, "the existing -w file was touched")
                    self.assertEqual(sorted(capdtest.listdir(self.out_dir)), ["x.pcap"])
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "no")),
                             "capd made directories for a --ctl path")
        finally:
            first.kill()

    def test_missing_input_file(self):
        self.assertRefused(["-i", "pcap:/nonexistent", "-w", self.out])
        self.assertRefused(["-i", f"pcap:{self.path('missing.pcap')},loop", "-w", self.out])

    def test_bad_null_frames_file(self):
        self.assertRefused(["-i", f"null:64,frames={self.path('missing.pcap')}", "-w", self.out])
        empty = self.path("empty.pcap")
        pcaplib.write_pcap(empty, [])
        self.assertRefused(["-i", f"null:64,frames={empty}", "-w", self.out], watch=[])

    def test_missing_source_interface(self):
        self.assertRefused(["-i", "af_packet:lcnosuchif0", "-w", self.out])

    def test_unwritable_output(self):
        for target in ("/nonexistent-dir/x.pcap", "/proc/linecap-test.pcap",
                       self.good + "/x.pcap"):  # a file used as a directory
            with self.subTest(w=target):
                # /proc's listing changes with every process: watch the name.
                d = os.path.dirname(target)
                self.assertRefused(["-i", f"pcap:{self.good}", "-w", target],
                                   watch=[] if d == "/proc" else [d])
                self.assertFalse(os.path.lexists(target))
                self.assertFalse(os.path.lexists(pcaplib_hidden(target)))

    def test_read_only_directory(self):
        """Root bypasses permission bits, so the directory is a read-only
        mount."""
        ro = self.path("ro")
        os.mkdir(ro)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "linecap-ro", ro],
                           capture_output=True, timeout=30)
        if p.returncode != 0:
            self.skipTest(f"cannot mount a read-only tmpfs: {p.stderr.decode().strip()}")
        self.addCleanup(subprocess.run, ["umount", ro], capture_output=True, timeout=30)
        self.assertRefused(["-i", f"pcap:{self.good}", "-w", os.path.join(ro, "x.pcap")],
                           watch=[ro])
        self.assertRefused(["-i", f"pcap:{self.good}", "-w", os.path.join(ro, "x.pcap"),
                            "-C", "1", "-W", "3"], watch=[ro])

    def test_output_is_a_directory(self):
        """-w naming an existing directory cannot work: refuse it up front
        rather than capture into a hidden file that is never renamed."""
        d = os.path.join(self.out_dir, "adir")
        os.mkdir(d)
        for target in (d, d + "/"):
            with self.subTest(w=target):
                self.assertRefused(["-i", f"pcap:{self.good}", "-w", target], watch=[d])

    def test_unwritable_stats_json(self):
        """--stats-json that cannot be written is known before capture: it
        is a command that does not work, refused before any output."""
        self.assertRefused(["-i", f"pcap:{self.good}", "-w", self.out, "--stats-json",
                            "/nonexistent-dir/s.json"])

    def test_contradictory_options(self):
        src = ["-i", f"pcap:{self.good}", "-w", self.out]
        cases = [
            ["-W", "3"],
            ["--writers", "3", "--workers", "1"],
            ["--writers", "2"],
            ["--nano", "--format", "pcapng"],
            ["-c", "0"],
            ["-c", "-1"],
            ["-C", "0"],
            ["-C", "-1"],
            ["-G", "0"],
            ["-W", "0", "-C", "1"],
            ["--duration", "0"],
            ["--duration", "-1"],
            ["--workers", "0"],
            ["--format", "pcapx"],
            ["-s", "abc"],
            ["-s", "-5"],
            ["--bogus-option"],
            ["--chunk-kb", "1"],
            ["--rx-desc", "1000"],
            ["--rx-desc", "32"],
            ["--rx-desc", "65536"],
            ["--rx-desc", "-4096"],
            ["--preallocate"],
            ["--preallocate", "-C", "1"],
            ["--preallocate", "-C", "1", "-W", "2", "-G", "5"],
        ]
        for extra in cases:
            with self.subTest(args=" ".join(extra)):
                self.assertRefused(src + extra)
        with self.subTest(args="no -w"):
            self.assertRefused(["-i", f"pcap:{self.good}"])
        with self.subTest(args="no -i"):
            self.assertRefused(["-w", self.out])
        with self.subTest(args="-w - -C 1"):
            # Standard output is one stream (test_stdout.py has the rest).
            self.assertRefused(["-i", f"pcap:{self.good}", "-w", "-", "-C", "1"])

    def test_not_a_capture(self):
        """A file that is not a capture is refused before any output."""
        rnd = random.Random(7)
        cases = {
            "text.pcap": b"root:x:0:0:root:/root:/bin/bash\n" * 20,
            "empty.pcap": b"",
            "random.pcap": bytes(rnd.randrange(256) for _ in range(4096)),
            "short-header.pcap": open(self.good, "rb").read()[:10],
            "bad-bom.pcapng": bytes.fromhex("0a0d0d0a1c000000") + b"\x11\x22\x33\x44" + bytes(16),
        }
        for name, content in cases.items():
            p = self.path(name)
            with open(p, "wb") as f:
                f.write(content)
            with self.subTest(file=name):
                self.assertRefused(["-i", f"pcap:{p}", "-w", self.out])
            with self.subTest(file=name, second_source=True):
                # The bad file is the second source: still nothing written.
                self.assertRefused(["-i", f"pcap:{self.good}", "-i", f"pcap:{p}", "-w",
                                    self.out])
        with self.subTest(file="a directory"):
            self.assertRefused(["-i", f"pcap:{self.tmp}", "-w", self.out])


class DamagedCapture(CapdTestCase):
    """A capture damaged part-way: the packets before the damage end up in
    whole files, stderr says where the damage is, the exit is non-zero."""

    N, CUT = 100, 60

    def make(self, kind):
        pkts, _ = gencaps.mixed(self.N, seed=11)
        full = self.path(f"full-{kind}")
        if kind.endswith("pcapng"):
            pcaplib.write_pcapng(full, pkts)
        else:
            pcaplib.write_pcap(full, pkts, nano=True)
        cap = pcaplib.read_capture(full)
        off = cap.records[self.CUT].offset
        b = open(full, "rb").read()
        cut = {"data.pcap": off + 16 + 5, "header.pcap": off + 7, "data.pcapng": off + 30,
               "header.pcapng": off + 6}[kind]
        src = self.path(f"cut-{kind}")
        with open(src, "wb") as f:
            f.write(b[:cut])
        return src, pkts[:self.CUT], off

    def check(self, kind, fmt_args, quiet):
        src, want_pkts, off = self.make(kind)
        out_dir = self.path(f"out-{kind}-{len(fmt_args)}-{quiet}")
        os.mkdir(out_dir)
        out = os.path.join(out_dir, "x")
        args = (["-q"] if quiet else []) + ["-i", f"pcap:{src}", "-w", out] + fmt_args
        run = self.capd(args)
        self.assertNotEqual(run.rc, 0, run.describe())
        self.assertEqual(capdtest.listdir(out_dir), ["x"], "one whole file, no hidden file")
        got = self.assertWhole(out)
        precision = "pcapng" if "pcapng" in fmt_args else "ns"
        want = [pcaplib.Record(p.ts_ns, len(p.data), len(p.data), p.data) for p in want_pkts]
        self.assertIsNone(capdtest.record_mismatch(want, got.records, precision))
        damage = [l for l in run.stderr_lines if src in l and not l.startswith(READY)]
        self.assertTrue(damage, "stderr names the damaged file\n" + run.describe())
        self.assertIn(str(off), damage[0], "stderr gives the byte offset of the damage\n"
                      + run.describe())

    def test_damaged_first_block(self):
        """Damage in the first packet block: the offset is that block's, past
        the section and interface blocks (pcapng), not the end of a classic
        file header."""
        pkts, _ = gencaps.mixed(10, seed=5)
        for kind in ("pcap", "pcapng"):
            with self.subTest(kind=kind):
                src = self.path(f"first.{kind}")
                if kind == "pcapng":
                    pcaplib.write_pcapng(src, pkts)
                else:
                    pcaplib.write_pcap(src, pkts, nano=True)
                off = pcaplib.read_capture(src).records[0].offset
                b = bytearray(open(src, "rb").read())
                # pcapng: block total length; pcap: captured length.
                struct.pack_into("<I", b, off + (4 if kind == "pcapng" else 8), 0x7ffffff0)
                with open(src, "wb") as f:
                    f.write(b)
                out = self.path(f"first-out-{kind}.pcap")
                run = self.capd(["-i", f"pcap:{src}", "-w", out])
                self.assertNotEqual(run.rc, 0, run.describe())
                damage = [l for l in run.stderr_lines if src in l and not l.startswith(READY)]
                self.assertTrue(damage, run.describe())
                self.assertIn(f"byte offset {off})", damage[0], run.describe())
                if kind == "pcapng":
                    self.assertGreater(off, 24)

    def test_damaged_part_way(self):
        for kind in ("data.pcap", "header.pcap", "data.pcapng", "header.pcapng"):
            for fmt in ([], ["--format", "pcapng"]):
                with self.subTest(cut=kind, output=fmt):
                    self.check(kind, ["--nano"] if not fmt else fmt, quiet=False)

    def test_damage_reported_with_quiet(self):
        """-q silences the summary, not the error that makes the exit code
        non-zero."""
        self.check("data.pcap", ["--nano"], quiet=True)


if __name__ == "__main__":
    capdtest.main()
