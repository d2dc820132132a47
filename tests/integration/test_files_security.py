#!/usr/bin/env python3
"""Files in a shared directory, -Z, restarts after kill -9, -z children.

capd runs as root. In an output directory other users can write to, a
symbolic link planted under a name capd uses must never be written through
or chowned; a restart after kill -9 must recover the hidden file the killed
run left rather than truncate it; a -z command must get none of capd's
descriptors, signal state or CPU pinning.

The cases that plant links as another user or use -Z need root and the
`nobody` user (skipped otherwise). Waits are bounded in time and count.
"""

import glob
import os
import pwd
import signal
import stat
import subprocess
import sys
import time

import capdtest
import pcaplib
from capdtest import CapdTestCase, RunningCapd, wait_until

WEB_MIX = os.path.join(capdtest.DATA_DIR, "demo", "web-mix.pcap")
VICTIM_BYTES = b"precious: not capd's to write\n"


def nobody():
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


class FilesCase(CapdTestCase):
    def setUp(self):
        super().setUp()
        if not os.path.exists(WEB_MIX):
            self.skipTest(f"no {WEB_MIX}")
        # A shared capture directory (sticky, writable by all), and a file of
        # root's outside it that a planted link points at.
        os.chmod(self.tmp, 0o755)
        self.out = self.path("shared")
        os.mkdir(self.out)
        os.chmod(self.out, 0o1777)
        self.victim = self.path("victim")
        with open(self.victim, "wb") as f:
            f.write(VICTIM_BYTES)
        os.chmod(self.victim, 0o600)

    def assertVictimUntouched(self):
        st = os.stat(self.victim)
        with open(self.victim, "rb") as f:
            self.assertEqual(f.read(), VICTIM_BYTES, "the link's target was written")
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, "the link's target was re-moded")
        self.assertEqual((st.st_uid, st.st_gid), (0, 0), "the link's target was chowned")


class PlantedLinks(FilesCase):
    def test_hidden_name_link_is_refused(self):
        """A link under the hidden name of the first file: capd stops with
        one line naming it, and the target keeps its bytes and mode."""
        if os.geteuid() != 0:
            self.skipTest("the target must be root's")
        os.symlink(self.victim, os.path.join(self.out, ".x.pcap.partial"))
        r = self.capd(["-i", f"pcap:{WEB_MIX}", "-w", os.path.join(self.out, "x.pcap"),
                       "--ctl", "none"])
        self.assertNotEqual(r.rc, 0, r.describe())
        self.assertTrue(any("symbolic link" in l for l in r.stderr_lines), r.describe())
        self.assertVictimUntouched()
        self.assertTrue(os.path.islink(os.path.join(self.out, ".x.pcap.partial")))

    def test_stats_json_link_is_replaced_not_followed(self):
        if os.geteuid() != 0:
            self.skipTest("the target must be root's")
        summary = os.path.join(self.out, "s.json")
        os.symlink(self.victim, summary)
        r = self.capd(["-i", f"pcap:{WEB_MIX}", "-w", os.path.join(self.out, "x.pcap"),
                       "--ctl", "none", "--stats-json", summary])
        self.assertCapdOk(r)
        self.assertVictimUntouched()
        self.assertFalse(os.path.islink(summary))
        with open(summary) as f:
            self.assertIn('"packets_written"', f.read())

    def test_run_as_user_never_chowns_a_planted_link(self):
        """-Z nobody: the files capd made are nobody's; a .partial link
        planted beside them (pointing at root's file) is left as it was."""
        user = nobody()
        if os.geteuid() != 0 or user is None:
            self.skipTest("needs root and the user nobody")
        os.symlink(self.victim, os.path.join(self.out, ".planted.partial"))
        out = os.path.join(self.out, "z.pcap")
        r = self.capd(["-i", f"pcap:{WEB_MIX}", "-w", out, "--ctl", "none",
                       "-Z", "nobody"])
        self.assertCapdOk(r)
        self.assertVictimUntouched()
        self.assertEqual(os.stat(out).st_uid, user.pw_uid)
        self.assertEqual(len(self.assertWhole(out).records), 3200)


def as_user(user, code):
    """Runs python `code` as `user` (uid and gid, no supplementary groups):
    what a local user who may write in the capture directory can do."""
    subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                    "--clear-groups", sys.executable, "-c", code], check=True, timeout=30)


class PlantedForRetention(FilesCase):
    def test_retention_and_recovery_touch_only_capds_own_files(self):
        """Another user plants, under this capture's names and with an old
        modification time: a file of their own, a link to root's file, a
        FIFO, a directory, hidden files for the start-up recovery (their own
        pcap, a link, a FIFO), index names (a link, their own partial
        index) and recovered names (their own pcap, a link); root leaves a
        second link to a file of its own. capd with
        --retain-age 1 deletes the earlier run's file of its own (the
        control) and leaves every planted entry as it was."""
        user = nobody()
        if os.geteuid() != 0 or user is None or not capdtest.have("setpriv"):
            self.skipTest("needs root, setpriv and the user nobody")
        o = self.out
        pcap_bytes = open(WEB_MIX, "rb").read()[:4096]  # a header and some records
        as_user(user, f"""
import os
o = {o!r}
def old(p):
    os.utime(p, (1000, 1000), follow_symlinks=False)
with open(o + "/x.pcap901", "wb") as f:
    f.write(b"a file of nobody's\\n")
old(o + "/x.pcap901")
os.symlink({self.victim!r}, o + "/x.pcap902"); old(o + "/x.pcap902")
os.mkfifo(o + "/x.pcap903"); old(o + "/x.pcap903")
os.mkdir(o + "/x.pcap904"); old(o + "/x.pcap904")
with open(o + "/.x.pcap950.partial", "wb") as f:
    f.write({pcap_bytes!r} + b"\\xff" * 100)
os.symlink({self.victim!r}, o + "/.x.pcap951.partial")
os.mkfifo(o + "/.x.pcap952.partial")
os.symlink({self.victim!r}, o + "/.x.pcap960.idx")
with open(o + "/.x.pcap961.idx.partial", "wb") as f:
    f.write(b"not an index")
with open(o + "/x.recovered-19700101T001640Z.pcap", "wb") as f:
    f.write({pcap_bytes!r})
old(o + "/x.recovered-19700101T001640Z.pcap")
os.symlink({self.victim!r}, o + "/x.recovered-19700101T001640Z-1.pcap")
old(o + "/x.recovered-19700101T001640Z-1.pcap")
""")
        # root's own: an earlier run's file (retention's to delete) with a
        # link planted as its index, and a second name of root's victim.
        control = os.path.join(o, "x.pcap900")
        with open(control, "wb") as f:
            f.write(pcap_bytes)
        os.utime(control, (1000, 1000))
        os.symlink(self.victim, os.path.join(o, ".x.pcap900.idx"))
        os.link(self.victim, os.path.join(o, "x.pcap905"))
        os.utime(os.path.join(o, "x.pcap905"), (1000, 1000))
        before = {n: os.lstat(os.path.join(o, n)) for n in os.listdir(o)}
        r = self.capd(["-i", "null:64,rate=2k", "--duration", "2", "-C", "100", "-w",
                       os.path.join(o, "x.pcap"), "--retain-age", "1", "--ctl", "none"])
        self.assertCapdOk(r)
        self.assertFalse(os.path.exists(control), "retention did not run: " + r.describe())
        self.assertVictimUntouched()
        self.assertEqual(os.stat(self.victim).st_nlink, 2, "root's second link was deleted")
        for n, st in before.items():
            if n in ("x.pcap900", ".x.pcap900.idx"):
                continue
            with self.subTest(entry=n):
                now = os.lstat(os.path.join(o, n))
                self.assertEqual((now.st_ino, now.st_mode, now.st_size, now.st_uid),
                                 (st.st_ino, st.st_mode, st.st_size, st.st_uid))
        # The link planted as the control's index is not root's file: left.
        self.assertTrue(os.path.islink(os.path.join(o, ".x.pcap900.idx")))
        # Nothing recovered; the two planted under recovered names stay.
        self.assertEqual(sorted(glob.glob(os.path.join(o, "*recovered*"))),
                         [os.path.join(o, "x.recovered-19700101T001640Z-1.pcap"),
                          os.path.join(o, "x.recovered-19700101T001640Z.pcap")])


class PlantedTimeDirectories(FilesCase):
    """-G with strftime conversions in the directory part of -w: the
    directories below the one named literally are capd's to make, and one
    planted there by a user who may write in the parent (a link to another
    directory, a directory of their own) is refused, never written in."""

    def setUp(self):
        super().setUp()
        self.user = nobody()
        if os.geteuid() != 0 or self.user is None or not capdtest.have("setpriv"):
            self.skipTest("needs root, setpriv and the user nobody")
        # A directory of root's standing for /etc, with a file under a name
        # capd might take.
        self.target = self.path("etc")
        os.mkdir(self.target)
        with open(os.path.join(self.target, "kept.pcap"), "wb") as f:
            f.write(VICTIM_BYTES)

    def years(self):
        """The names capd gives the directory (%Y), now and a minute on."""
        now = time.time()
        return sorted({time.strftime("%Y", time.localtime(t)) for t in (now, now + 60)})

    def run_into_years(self, *extra):
        return self.capd(["-i", f"pcap:{WEB_MIX}", "-G", "1", "-w",
                          os.path.join(self.out, "%Y", "s-%H%M%S.pcap"), "--ctl", "none",
                          *extra], timeout=60)

    def assertMadeDirectory(self, owner):
        """The one year directory capd made: `owner`'s, 0750, holding whole
        files with every packet. Returns it and its files."""
        made = [os.path.join(self.out, y) for y in self.years()
                if os.path.isdir(os.path.join(self.out, y))]
        self.assertEqual(len(made), 1, capdtest.listdir(self.out))
        st = os.lstat(made[0])
        self.assertTrue(stat.S_ISDIR(st.st_mode))
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (owner, 0o750))
        files = sorted(glob.glob(os.path.join(made[0], "s-*.pcap")))
        self.assertTrue(files, capdtest.listdir(made[0]))
        self.assertEqual(sum(len(self.assertWhole(f).records) for f in files), 3200)
        return made[0], files

    def assertTargetUntouched(self):
        self.assertEqual(os.listdir(self.target), ["kept.pcap"])
        with open(os.path.join(self.target, "kept.pcap"), "rb") as f:
            self.assertEqual(f.read(), VICTIM_BYTES)

    def test_planted_link_is_refused(self):
        """nobody links the year's directory name to root's directory:
        capd stops with one line naming the link and writes nothing there."""
        links = [os.path.join(self.out, y) for y in self.years()]
        as_user(self.user, f"import os\nfor l in {links!r}: os.symlink({self.target!r}, l)")
        r = self.run_into_years()
        self.assertNotEqual(r.rc, 0, r.describe())
        said = [l for l in r.stderr_lines if "is a symbolic link" in l]
        self.assertEqual(len(said), 1, r.describe())
        self.assertTrue(any(l in said[0] for l in links), said[0])
        self.assertTargetUntouched()
        for l in links:
            self.assertEqual(os.readlink(l), self.target)

    def test_another_users_directory_is_refused(self):
        """nobody makes the year's directory: capd stops with one line
        naming it and its owner and writes nothing in it."""
        dirs = [os.path.join(self.out, y) for y in self.years()]
        as_user(self.user, f"import os\nfor d in {dirs!r}: os.mkdir(d)")
        r = self.run_into_years()
        self.assertNotEqual(r.rc, 0, r.describe())
        said = [l for l in r.stderr_lines if f"owned by uid {self.user.pw_uid}" in l]
        self.assertEqual(len(said), 1, r.describe())
        for d in dirs:
            self.assertEqual(os.listdir(d), [])

    def test_directory_capd_makes_is_written(self):
        """No directory there yet: capd makes it (root's, 0750) and writes
        every packet into it; the catalogue's spool, by default in -w's
        directory, is kept in the part named literally."""
        r = self.run_into_years("--catalog", "http://127.0.0.1:1")
        self.assertCapdOk(r)
        made, _ = self.assertMadeDirectory(0)
        self.assertNoHidden(made)
        self.assertTrue(os.path.isfile(os.path.join(self.out, ".capd-catalog.spool")),
                        capdtest.listdir(self.out))
        self.assertTargetUntouched()

    def test_run_as_user_makes_the_directory(self):
        """-Z nobody: the user must be able to create files where capd makes
        the directories (the part of -w named literally, here the shared
        directory), not in the unexpanded %Y; the directory made and the
        files in it are nobody's."""
        r = self.run_into_years("-Z", "nobody")
        self.assertCapdOk(r)
        _, files = self.assertMadeDirectory(self.user.pw_uid)
        self.assertEqual({os.stat(f).st_uid for f in files}, {self.user.pw_uid})
        self.assertTargetUntouched()


class CtlQueryPrivileges(FilesCase):
    def test_capctl_query_reads_with_the_callers_rights(self):
        """capd (root) writes into the shared directory and lets the group
        nogroup use its socket. nobody, a member, plants a link under a
        capture name to a capture only root may read, then runs capctl
        query: capq runs as nobody, so neither capd's files (0640 root) nor
        the link's target come out. root's capctl query reads capd's files
        and not the link (capq -r DIR follows no link)."""
        user = nobody()
        if os.geteuid() != 0 or user is None or not capdtest.have("setpriv"):
            self.skipTest("needs root, setpriv and the user nobody")
        secret = self.path("secret.pcap")
        with open(WEB_MIX, "rb") as f, open(secret, "wb") as g:
            g.write(f.read())
        os.chmod(secret, 0o600)
        sock = self.path("ctl.sock")
        cap = capdtest.start_capd(["-i", "null:64,rate=200", "-w", os.path.join(self.out, "q.pcap"),
                                   "--ctl", sock, "--ctl-group", "nogroup", "--flush-ms", "100"],
                                  sock=sock)
        self.addCleanup(cap.kill)
        as_user(user, f"import os; os.symlink({secret!r}, {os.path.join(self.out, 'q.pcap7')!r})")
        capctl = os.path.join(capdtest.BUILD_DIR, "ctl", "capctl")
        as_nobody = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                     "--clear-groups"]
        secret_data = {r.data for r in pcaplib.read_capture(secret).records}

        def query(prefix):
            p = capdtest.run_cmd(prefix + [capctl, "--ctl", sock, "query", "-w", "-"],
                                 timeout=60)
            got = pcaplib.read_capture_bytes(p.stdout).records if p.stdout else []
            return p, got

        p, got = query(as_nobody)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(got, [], p.stderr)
        p = capdtest.run_cmd(as_nobody + [capctl, "--ctl", sock, "query", "--explain"],
                             timeout=60)
        plan = p.stdout.decode()
        self.assertRegex(plan, r"ignored: .*/\.q\.pcap\.partial \(Permission denied\)", plan)
        self.assertRegex(plan, r"ignored: .*/q\.pcap7 \(symbolic link, not followed\)", plan)
        # root: capd's packets once the live file has some, none of the link's.
        got = capdtest.wait_until(lambda: query([])[1], 30, 0.2)
        self.assertTrue(got, "root's capctl query found no packet")
        self.assertFalse(secret_data & {r.data for r in got}, "the planted link was followed")


class CatalogueReadsOnlyOwnIndexes(FilesCase):
    def test_planted_index_names_neither_block_nor_are_read(self):
        """--catalog with --no-index reads each closed file's index back by
        name. nobody plants a FIFO under the first capture's index name
        (an open of it as root would wait for a writer forever, and capd's
        exit with it), and a link to a valid index of root's under the
        second's. capd (the catalogue unreachable: rows wait in the spool)
        exits, publishes both files without an index, and leaves both."""
        user = nobody()
        if os.geteuid() != 0 or user is None or not capdtest.have("setpriv"):
            self.skipTest("needs root, setpriv and the user nobody")
        # A valid index of root's, outside the shared directory.
        own = self.path("own")
        os.mkdir(own)
        r = self.capd(["-i", f"pcap:{WEB_MIX}", "-w", os.path.join(own, "o.pcap"),
                       "--ctl", "none"])
        self.assertCapdOk(r)
        real_index = os.path.join(own, ".o.pcap.idx")
        self.assertTrue(os.path.exists(real_index), capdtest.listdir(own))
        fifo = os.path.join(self.out, ".x.pcap.idx")
        link = os.path.join(self.out, ".y.pcap.idx")
        as_user(user, f"import os; os.mkfifo({fifo!r}); os.symlink({real_index!r}, {link!r})")
        for name in ("x.pcap", "y.pcap"):
            with self.subTest(name=name):
                stats = self.path(name + ".json")
                r = self.capd(["-i", f"pcap:{WEB_MIX}", "-w", os.path.join(self.out, name),
                               "--no-index", "--catalog", "http://127.0.0.1:1",
                               "--catalog-spool", self.path(name + ".spool"), "--ctl", "none",
                               "--stats-json", stats], timeout=60)
                self.assertCapdOk(r)
                c = capdtest.read_json(stats)["catalog"]
                self.assertEqual(c["files_without_index"], 1, c)
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode))
        self.assertEqual(os.readlink(link), real_index)


class RestartAfterKill(FilesCase):
    def killed_run(self, name, fmt):
        """Starts capd into `name`, kills it with SIGKILL once its hidden file
        holds some records, and returns the whole records that file holds."""
        out = os.path.join(self.out, name)
        hidden = os.path.join(self.out, "." + name + ".partial")
        cap = RunningCapd(["-i", "null:256,rate=40k", "-w", out, "--format", fmt,
                           "--ctl", "none", "--flush-ms", "10"])
        self.addCleanup(cap.kill)
        grown = wait_until(lambda: os.path.exists(hidden) and os.path.getsize(hidden) > 20000,
                           60, 0.05)
        cap.proc.send_signal(signal.SIGKILL)
        cap.proc.wait(timeout=30)
        self.assertTrue(grown, "the killed run wrote records")
        got = pcaplib.read_capture(hidden, lenient=True)
        self.assertGreater(len(got.records), 0)
        return got

    def test_restart_recovers_the_killed_runs_file(self):
        """Restart with the same -w after kill -9: the hidden file is cut to
        its last whole record and published as NAME.recovered-<UTC>.EXT
        (read whole by pcaplib and tcpdump), with one log line; the new
        run writes its own file under the name."""
        for fmt, ext in (("pcap", "pcap"), ("pcapng", "pcapng")):
            with self.subTest(format=fmt):
                name = "k." + ext
                before = self.killed_run(name, fmt)
                out = os.path.join(self.out, name)
                r = self.capd(["-i", f"pcap:{WEB_MIX}", "-w", out, "--ctl", "none",
                               "--format", fmt])
                self.assertCapdOk(r)
                found = glob.glob(os.path.join(self.out, "k.recovered-*Z." + ext))
                self.assertEqual(len(found), 1, capdtest.listdir(self.out))
                rec = self.assertWhole(found[0])
                self.assertEqual(len(rec.records), len(before.records))
                n, err = capdtest.tcpdump_count(found[0])
                self.assertIsNone(err, err)
                self.assertEqual(n, len(before.records))
                lines = [l for l in r.stderr_lines if "recovered as" in l]
                self.assertEqual(len(lines), 1, r.describe())
                self.assertIn(os.path.basename(found[0]), lines[0])
                self.assertEqual(len(self.assertWhole(out).records), 3200)
                self.assertFalse(os.path.exists(os.path.join(self.out, "." + name + ".partial")))


class PostRotateChildren(FilesCase):
    def test_child_gets_stdio_default_signals_and_all_cpus(self):
        """A -z script records what it inherited: only descriptors 0-2 (plus
        the listing's own), no ignored or blocked signal, and the CPUs capd
        started with, not the writer's lcore."""
        report = self.path("report")
        os.mkdir(report)
        script = self.path("z.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n"
                    f"ls -l /proc/self/fd > {report}/fds\n"
                    # exec: the shell's own state, not that of a command it forks
                    f"exec cat /proc/self/status > {report}/status\n")
        os.chmod(script, 0o755)
        r = self.capd(["-i", f"pcap:{WEB_MIX}", "-w", os.path.join(self.out, "z.pcap"),
                       "--ctl", "none", "-z", script])
        self.assertCapdOk(r)
        self.assertTrue(wait_until(lambda: os.path.exists(os.path.join(report, "status")) and
                                   os.path.getsize(os.path.join(report, "status")) > 0, 30),
                        "the -z script ran")
        with open(os.path.join(report, "fds")) as f:
            fds = [l.split() for l in f if " -> " in l]
        self.assertGreaterEqual(len(fds), 3)
        for w in fds:
            fd, target = int(w[w.index("->") - 1]), w[-1]
            if fd > 2:
                self.assertTrue(target.startswith("/proc/") and target.endswith("/fd"),
                                f"descriptor {fd} -> {target} inherited from capd")
        with open(os.path.join(report, "status")) as f:
            status = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
        with open("/proc/self/status") as f:
            mine = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
        self.assertEqual(int(status["SigIgn"], 16), 0, status["SigIgn"])
        self.assertEqual(int(status["SigBlk"], 16), 0, status["SigBlk"])
        self.assertEqual(status["Cpus_allowed_list"], mine["Cpus_allowed_list"])


if __name__ == "__main__":
    capdtest.main()
