#!/usr/bin/env python3
"""The fleet catalogue: capd --catalog publishing to ClickHouse, and
capq --fleet URL --flows answering from it.

Each test starts its own catalogue with scripts/fleet.sh (two ClickHouse
18.16 servers on free local ports, a two-shard cluster, Distributed
tables) under its temporary directory; the fleet tests also start the three
capture hosts (namespaces with 198.18.0.1..3 on veth pairs, a capd each)
and send bounded UDP bursts between them. Checked:
  - the file being written is published every few seconds (its flows, and
    its packets through capq --fleet), then replaced by the closed file;
  - every closed file of every host is in the catalogue, and per host the
    catalogue's flows equal the host's own `capq --flows` (the union over
    the hosts: `capq --fleet --flows`), with and without an expression;
  - ClickHouse stopped during capture, then restarted: the rows wait in the
    spool (capctl stats says so), then all arrive; nothing is lost in capture;
  - a spool over its limit drops the oldest files' rows and counts them;
    what it kept arrives later;
  - -W removal marks files gone: the catalogue lists the files on disk only;
  - with a flow budget, capctl stats (text and Prometheus) gives the
    files over it and the aggregate rows, and how many closed files' index
    came from the writer's memory or was read back, as --json does; the
    budget's value itself, set or off, in --stats-json and capctl stats;
  - capctl compare --fleet URL --hosts h1,h3: the comparison of the two
    hosts' own answers; a host the catalogue does not name is an empty
    answer, said so; a host whose server is gone is one line, exit 1.
Skipped, with the reason, when clickhouse-server is not installed.
"""

import json
import os
import re
import random
import signal
import socket
import subprocess
import unittest
import urllib.request

import capdtest
from capdtest import CapdTestCase

REPO = capdtest.REPO
FLEET = os.path.join(REPO, "scripts", "fleet.sh")
CAPQ = os.path.join(capdtest.BUILD_DIR, "query", "capq")
CAPCTL = os.path.join(capdtest.BUILD_DIR, "ctl", "capctl")
WEB_MIX = os.path.join(capdtest.DATA_DIR, "demo", "web-mix.pcap")


def free_base():
    """A port base whose 13 ports (two servers' HTTP/native/interserver) are free."""
    for _ in range(200):
        base = random.randrange(20000, 40000, 20)
        ok = True
        for p in [base, base + 1, base + 2, base + 10, base + 11, base + 12, base + 21,
                  base + 22, base + 23]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range for ClickHouse")


def exited(pid):
    """Process pid has ended: gone, or a zombie its parent has not reaped
    (fleet.sh starts the servers in the background and leaves them)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def ch(base, sql, timeout=30):
    req = urllib.request.Request(f"http://127.0.0.1:{base}/", data=sql.encode())
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def rows(base, sql):
    return [line.split("\t") for line in ch(base, sql).splitlines() if line]


class FleetTest(CapdTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.exists("/usr/sbin/clickhouse-server"):
            raise unittest.SkipTest("clickhouse-server is not installed "
                                    "(scripts/install-deps.sh installs it)")
        if os.geteuid() != 0:
            raise unittest.SkipTest("the fleet's namespaces need root")

    def setUp(self):
        super().setUp()
        self.base = free_base()
        self.pfx = "lf%04x" % random.randrange(0x10000)
        self.env = dict(os.environ, LINECAP_CH_PORT=str(self.base),
                        LINECAP_FLEET_PREFIX=self.pfx, LINECAP_BUILD_DIR=capdtest.BUILD_DIR)
        self.dir = self.path("fleet")
        self.url = f"http://127.0.0.1:{self.base}"
        self.addCleanup(self.fleet, "stop", check=False)

    def fleet(self, cmd, check=True, timeout=180):
        p = subprocess.run(["sh", FLEET, cmd, self.dir, capdtest.BUILD_DIR], env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        if check:
            self.assertEqual(p.returncode, 0, f"fleet.sh {cmd}: {p.stdout}{p.stderr}")
        return p

    # ---------------------------------------------------------------- helpers

    def send_traffic(self, tag):
        """Bounded UDP bursts: h1 -> h2, h1 -> h3, h2 -> h3 (198.18.0.0/15 only)."""
        prog = ("import socket, sys\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "for i in range(200):\n"
                "    for dst in sys.argv[1:]:\n"
                f"        s.sendto(b'{tag}' * 20, (dst, 9000 + i % 7))\n")
        for src, dsts in [(1, ["198.18.0.2", "198.18.0.3"]), (2, ["198.18.0.3"])]:
            p = subprocess.run(["ip", "netns", "exec", f"{self.pfx}-h{src}", "python3", "-c", prog]
                               + dsts, capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)

    def stats(self, n):
        return self.ctl_stats(os.path.join(self.dir, f"h{n}", "ctl.sock"))

    def ctl_stats(self, sock):
        p = subprocess.run([CAPCTL, "--ctl", sock, "--json", "stats"], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        j = json.loads(p.stdout)
        return j.get("data", j)

    def stats_views(self, n):
        """Host n's catalogue counters as `capctl stats` gives them in JSON,
        in text and in Prometheus, taken while no counter changed (the JSON
        before and after the other two equal); None if they kept changing."""
        keys = ("files_from_memory", "files_read_back", "budget_files", "aggregate_rows")
        sock = os.path.join(self.dir, f"h{n}", "ctl.sock")
        for _ in range(20):
            before = {k: self.stats(n)["catalog"][k] for k in keys}
            views = []
            for extra in ([], ["--prometheus"]):
                p = subprocess.run([CAPCTL, "--ctl", sock, "stats", *extra], capture_output=True,
                                   text=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stderr)
                views.append(p.stdout)
            if {k: self.stats(n)["catalog"][k] for k in keys} == before:
                return before, views[0], views[1]
        return None

    def capq(self, *args):
        p = subprocess.run([CAPQ, *args], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout

    def local_flows(self, d, expr=()):
        return sorted(self.capq("-r", d, "--flows", *expr).splitlines()[1:])

    def fleet_flows(self, host, expr=()):
        out = self.capq("--fleet", self.url, "--flows", *expr).splitlines()[1:]
        return sorted(line[18:] for line in out if line.split()[0] == host)

    def live_paths(self, host):
        return sorted(r[1] for r in rows(
            self.base, "SELECT host, path FROM linecap_files GROUP BY host, path "
            f"HAVING argMax(gone, file_id) = 0 AND host = '{host}'"))

    def files_on_disk(self, d):
        """The capture files of d, oldest first (cap.pcap, cap.pcap1, ... cap.pcap10)."""
        names = [n for n in os.listdir(d) if not n.startswith(".")]
        return [os.path.join(d, n) for n in sorted(names, key=lambda n: (len(n), n))]

    def check_hosts_match(self):
        for n in (1, 2, 3):
            d = os.path.join(self.dir, f"h{n}", "cap")
            with self.subTest(host=n):
                on_disk = self.files_on_disk(d)
                self.assertTrue(on_disk)
                self.assertEqual(self.live_paths(f"h{n}"), sorted(on_disk))
                local = self.local_flows(d)
                self.assertGreater(len(local), 0)
                self.assertEqual(self.fleet_flows(f"h{n}"), local)
                expr = ["udp", "and", "host", "198.18.0.3"]
                self.assertEqual(self.fleet_flows(f"h{n}", expr), self.local_flows(d, expr))
                # Both ends of the flows between .2 and .3 asked for: each
                # flow is stored under both addresses, and counted once.
                expr = ["udp", "and", "(", "host", "198.18.0.2", "or", "host", "198.18.0.3", ")"]
                self.assertEqual(self.fleet_flows(f"h{n}", expr), self.local_flows(d, expr))
                with open(os.path.join(self.dir, f"h{n}", "summary.json")) as f:
                    s = json.load(f)
                self.assertEqual(s["drops"]["total"], 0)
                self.assertEqual(s["catalog"]["spool_rows"], 0)
                self.assertEqual(s["catalog"]["dropped_rows"], 0)

    # ------------------------------------------------------------------ tests

    def test_catalogue_equals_local_indexes(self):
        self.fleet("start")
        self.send_traffic("a")
        # Rotation (-G 2) closes files while capture goes on: they arrive live.
        ok = capdtest.wait_until(lambda: all(
            self.stats(n).get("catalog", {}).get("files", 0) > 0 for n in (1, 2, 3)), 120)
        self.assertTrue(ok, "closed files were not published while capturing")
        self.fleet("hosts-stop")
        self.check_hosts_match()
        # The union over the hosts, through the other shard's server.
        union = sorted(
            f"h{n}  " + line for n in (1, 2, 3)
            for line in self.local_flows(os.path.join(self.dir, f"h{n}", "cap")))
        other = f"http://127.0.0.1:{self.base + 10}"
        got = sorted(line[:4] + line[18:]
                     for line in self.capq("--fleet", other, "--flows").splitlines()[1:])
        self.assertEqual(got, union)

    def fleet_query(self, *args):
        ca = os.path.join(self.dir, "ca")
        return subprocess.run(
            [CAPQ, "--fleet", self.url, "--cert", os.path.join(ca, "client.pem"), "--key",
             os.path.join(ca, "client.key"), "--ca", os.path.join(ca, "ca.pem"), *args],
            capture_output=True, timeout=120)

    def test_fleet_query_equals_merge_of_local_answers(self):
        self.fleet("start")
        self.send_traffic("c")
        self.fleet("hosts-stop")  # the files close and publish; capq --serve goes on
        dirs = [os.path.join(self.dir, f"h{n}", "cap") for n in (1, 2, 3)]
        out = self.path("fleet.pcap")
        expr = ["udp", "and", "host", "198.18.0.3"]
        p = self.fleet_query("-w", out, *expr)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("the catalogue names 3 hosts", err)
        for n in (1, 2, 3):
            self.assertRegex(err, rf"h{n} \([^)]*\): answered, [1-9][0-9]* packets")
        # The same as capq over the three stores at once (merged by time).
        ref = self.path("ref.pcap")
        args = [a for d in dirs for a in ("-r", d)]
        self.capq(*args, "-w", ref, *expr)
        with open(out, "rb") as a, open(ref, "rb") as b:
            got, want = a.read(), b.read()
        self.assertGreater(len(want), 24)
        self.assertEqual(got, want)
        # Traffic of h1 and h2 only: the catalogue names exactly the hosts
        # whose own index has such a flow (h1 and h2; h3 only if the bridge
        # flooded a frame to it before it learnt the addresses).
        two = ["udp", "and", "host", "198.18.0.1", "and", "host", "198.18.0.2"]
        holders = {f"h{n}" for n, d in zip((1, 2, 3), dirs) if self.local_flows(d, two)}
        self.assertTrue({"h1", "h2"} <= holders)
        p = self.fleet_query("-w", self.path("two.pcap"), *two)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 0, err)
        self.assertIn(f"the catalogue names {len(holders)} hosts", err)
        self.assertEqual({h for h in ("h1", "h2", "h3") if f"{h} (" in err}, holders)
        self.capq(*args, "-w", ref, *two)
        with open(self.path("two.pcap"), "rb") as a, open(ref, "rb") as b:
            self.assertEqual(a.read(), b.read())
        # Both addresses proved: the catalogue sends back the pair's flows,
        # fewer rows than for one of its addresses (h1 also talks to h3).
        def rows(err, how):
            m = re.search(rf"flows looked up by {how}: (\d+) catalogue rows?\)", err)
            self.assertIsNotNone(m, err)
            return int(m.group(1))
        paired = rows(err, "1 address pair")
        p = self.fleet_query("-w", self.path("one.pcap"), "udp", "and", "host", "198.18.0.1")
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertGreater(paired, 0)
        self.assertLess(paired, rows(p.stderr.decode(), "1 address"))
        # A host whose server is gone is reported; the others answer.
        pid = open(os.path.join(self.dir, "h2", "serve.pid")).read().strip()
        os.kill(int(pid), 15)
        self.assertTrue(capdtest.wait_until(lambda: exited(pid), 60), "the server outlived SIGTERM")
        p = self.fleet_query("-w", self.path("part.pcap"), *expr)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 3, err)
        self.assertRegex(err, r"h2 \([^)]*\): unreachable")
        self.assertRegex(err, r"h1 \([^)]*\): answered, [1-9]")
        self.assertRegex(err, r"h3 \([^)]*\): answered, [1-9]")

    def test_capctl_compare_two_hosts_through_the_catalogue(self):
        self.fleet("start")
        self.send_traffic("d")
        self.fleet("hosts-stop")
        ca = os.path.join(self.dir, "ca")
        tls = ["--cert", os.path.join(ca, "client.pem"), "--key", os.path.join(ca, "client.key"),
               "--ca", os.path.join(ca, "ca.pem")]
        expr = ["udp", "and", "host", "198.18.0.3"]
        p = subprocess.run([CAPCTL, "compare", "--json", "--fleet", self.url, "--hosts", "h1,h3",
                            *tls, *expr], capture_output=True, timeout=180)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = json.loads(p.stdout)
        self.assertGreater(got["matched"], 0)
        # The same as compare over each host's own answer.
        local = []
        for n in (1, 3):
            out = self.path(f"h{n}.pcap")
            self.capq("-r", os.path.join(self.dir, f"h{n}", "cap"), "-w", out, *expr)
            local.append(out)
        q = subprocess.run([CAPCTL, "compare", "--json", *local], capture_output=True,
                           timeout=120)
        self.assertEqual(q.returncode, 0, q.stderr)
        want = json.loads(q.stdout)
        self.assertEqual(got["a"]["path"], "h1's answer")
        for side in ("a", "b"):
            got[side].pop("path")
            want[side].pop("path")
        self.assertEqual(got, want)
        # A host the catalogue does not name: an empty answer, said so.
        p = subprocess.run([CAPCTL, "compare", "--json", "--fleet", self.url, "--hosts",
                            "h1,nosuch", *tls, *expr], capture_output=True, timeout=180)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = json.loads(p.stdout)
        self.assertEqual(got["b"]["frames"], 0)
        self.assertIn("side B (nosuch): nosuch: the catalogue names no file of it", got["notes"][-1])
        # A host whose server is gone: one line, exit 1.
        pid = open(os.path.join(self.dir, "h3", "serve.pid")).read().strip()
        os.kill(int(pid), 15)
        self.assertTrue(capdtest.wait_until(lambda: exited(pid), 60), "the server outlived SIGTERM")
        p = subprocess.run([CAPCTL, "compare", "--fleet", self.url, "--hosts", "h1,h3", *tls,
                            *expr], capture_output=True, timeout=180)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
        self.assertRegex(p.stderr.decode(), r"^capctl compare: B: h3 \([^)]*\): unreachable")

    def test_flow_budget_is_sound_and_marked(self):
        # Two flows rows a file: most of each file's flows are aggregates,
        # and the fleet's answers are still the local ones, byte for byte.
        self.env["LINECAP_FLEET_CAPD_ARGS"] = "--catalog-flow-budget 2"
        self.fleet("start")
        self.send_traffic("e")
        # capctl stats, text and Prometheus, give the budget's counters and
        # where the closed files' index came from, as --json does.
        self.assertTrue(capdtest.wait_until(
            lambda: self.stats(1)["catalog"]["budget_files"] > 0, 120, interval=0.5),
            "no file went over the budget")
        views = self.stats_views(1)
        self.assertIsNotNone(views, "the counters did not hold still")
        c, text, prom = views
        self.assertGreater(c["budget_files"], 0)
        self.assertIn(f"closed files' index: {c['files_from_memory']} from writer memory, "
                      f"{c['files_read_back']} read back; flow budget 2 rows a file: "
                      f"{c['budget_files']} "
                      f"files over it, {c['aggregate_rows']} aggregate rows\n", text)
        for line in ("linecap_catalog_index_files_total{source=\"memory\"} "
                     f"{c['files_from_memory']}",
                     "linecap_catalog_index_files_total{source=\"read_back\"} "
                     f"{c['files_read_back']}",
                     f"linecap_catalog_budget_files_total {c['budget_files']}",
                     "linecap_catalog_flow_budget 2",
                     f"linecap_catalog_aggregate_rows_total {c['aggregate_rows']}",
                     "# TYPE linecap_catalog_budget_files_total counter"):
            self.assertIn(line + "\n", prom)
        self.fleet("hosts-stop")
        dirs = [os.path.join(self.dir, f"h{n}", "cap") for n in (1, 2, 3)]
        budgeted = 0
        for n in (1, 2, 3):
            with open(os.path.join(self.dir, f"h{n}", "summary.json")) as f:
                c = json.load(f)["catalog"]
            self.assertEqual(c["spool_rows"], 0)
            budgeted += c["budget_files"]
            if c["budget_files"]:
                self.assertGreater(c["aggregate_rows"], 0)
        self.assertGreater(budgeted, 0)
        args = [a for d in dirs for a in ("-r", d)]
        for expr in (["udp", "and", "host", "198.18.0.3"],
                     ["udp", "and", "host", "198.18.0.1", "and", "host", "198.18.0.2"],
                     ["udp", "port", "9003"],
                     ["udp", "and", "src", "host", "198.18.0.2", "and", "dst", "port", "9005"]):
            with self.subTest(expr=expr):
                out, ref = self.path("fleet.pcap"), self.path("ref.pcap")
                p = self.fleet_query("-w", out, *expr)
                self.assertEqual(p.returncode, 0, p.stderr.decode())
                self.capq(*args, "-w", ref, *expr)
                with open(out, "rb") as a, open(ref, "rb") as b:
                    got, want = a.read(), b.read()
                self.assertGreater(len(want), 24)
                self.assertEqual(got, want)
        # --flows: the aggregates say so; every other line is a flow of the
        # host's own index (its packets in the files where it kept its own
        # row: at most the local count, summed over all files).
        lines = self.capq("--fleet", self.url, "--flows").splitlines()[1:]
        aggs = [line for line in lines if "AGGREGATE of " in line]
        self.assertTrue(aggs)
        self.assertTrue(all(" <> *" in line for line in aggs), aggs)
        for n, d in zip((1, 2, 3), dirs):
            local = {" ".join(f[4:]): int(f[2]) for f in map(str.split, self.local_flows(d))}
            for line in lines:
                f = line.split()
                if f[0] == f"h{n}" and "AGGREGATE" not in line:
                    self.assertIn(" ".join(f[5:]), local)
                    self.assertLessEqual(int(f[3]), local[" ".join(f[5:])])
        js = json.loads(self.capq("--fleet", self.url, "--flows", "--json"))
        marked = [f for f in js if "aggregate" in f]
        self.assertEqual(len(marked), len(aggs))
        for f in marked:
            self.assertIn(f["aggregate"], ("endpoint", "any"))
            self.assertGreaterEqual(f["aggregated_flows"], 1)

    def test_open_file_flows_are_published(self):
        # Files that stay open (-G 3600): their flows arrive while written.
        self.env["LINECAP_FLEET_ROTATE"] = "3600"
        self.fleet("start")
        self.send_traffic("d")
        expr = ["udp", "and", "host", "198.18.0.1", "and", "host", "198.18.0.2"]

        def h2_packets():
            out = self.capq("--fleet", self.url, "--flows", "--json", *expr)
            return sum(f["packets"] for f in json.loads(out) if f["host"] == "h2")
        ok = capdtest.wait_until(lambda: h2_packets() == 200, 120, interval=0.5)
        self.assertTrue(ok, f"the open file's flows did not arrive: {h2_packets()} packets")
        self.assertGreater(self.stats(2)["catalog"]["live_snapshots"], 0)
        self.assertEqual(self.files_on_disk(os.path.join(self.dir, "h2", "cap")), [])  # none closed
        # Its packets, from the file being written.
        p = self.fleet_query("-w", self.path("live.pcap"), *expr)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 0, err)
        self.assertRegex(err, r"h2 \([^)]*\): answered, 200 packets")
        # At the close the closed file takes over from the snapshots.
        self.fleet("hosts-stop")
        self.check_hosts_match()

    def test_clickhouse_down_during_capture(self):
        self.fleet("start")
        self.fleet("clickhouse-stop")
        self.send_traffic("b")
        ok = capdtest.wait_until(lambda: all(
            self.stats(n).get("catalog", {}).get("spool_rows", 0) > 0 for n in (1, 2, 3)), 120)
        self.assertTrue(ok, "no rows waited in the spool while ClickHouse was down")
        s = self.stats(1)["catalog"]
        self.assertGreater(s["send_errors"], 0)
        self.assertGreater(s["spool_bytes"], 0)
        self.fleet("clickhouse-start")
        ok = capdtest.wait_until(lambda: all(
            self.stats(n)["catalog"]["spool_rows"] == 0 for n in (1, 2, 3)), 120)
        self.assertTrue(ok, "the spool did not empty once ClickHouse was back")
        self.fleet("hosts-stop")
        self.check_hosts_match()

    def run_pcap(self, out_dir, host, url, *extra):
        os.makedirs(out_dir, exist_ok=True)
        js = os.path.join(out_dir, "..", os.path.basename(out_dir) + ".json")
        r = self.capd(["-i", "pcap:" + WEB_MIX, "-w", os.path.join(out_dir, "cap.pcap"),
                       "-C", "0.05", "--catalog", url, "--catalog-host", host,
                       "--stats-json", js, *extra])
        self.assertCapdOk(r)
        with open(js) as f:
            return json.load(f)

    def test_spool_limit_drops_oldest(self):
        self.fleet("clickhouse-start")
        spool = self.path("spool")
        # Nothing listens on port 1: every request is refused.
        s = self.run_pcap(self.path("run1"), "sp", "http://127.0.0.1:1",
                          "--catalog-spool", spool, "--catalog-spool-max", "40K")
        self.assertEqual(s["packets_written"], 3200)
        self.assertEqual(s["drops"]["total"], 0)
        c = s["catalog"]
        self.assertGreater(c["dropped_rows"], 0)
        self.assertGreater(c["spool_rows"], 0)
        self.assertLessEqual(c["spool_bytes"], 40 << 10)
        self.assertEqual(s["errors"], [])  # the capture itself lost nothing
        run1 = self.files_on_disk(self.path("run1"))
        # A second run with the server up sends the kept rows first.
        s2 = self.run_pcap(self.path("run2"), "sp", self.url, "--catalog-spool", spool)
        self.assertEqual(s2["catalog"]["spool_rows"], 0)
        live = set(self.live_paths("sp"))
        kept = [p for p in run1 if p in live]
        self.assertTrue(kept, "nothing the spool kept arrived")
        self.assertLess(len(kept), len(run1))
        # The newest files' rows were kept: the oldest were dropped.
        self.assertEqual(kept, run1[len(run1) - len(kept):])
        self.assertEqual(set(self.live_paths("sp")) - set(run1),
                         set(self.files_on_disk(self.path("run2"))))

    def test_removal_marks_files_gone(self):
        self.fleet("clickhouse-start")
        s = self.run_pcap(self.path("ring"), "ring", self.url, "-W", "3")
        on_disk = self.files_on_disk(self.path("ring"))
        self.assertEqual(len(on_disk), 3)
        c = s["catalog"]
        self.assertGreater(c["tombstones"], 0)
        self.assertEqual(c["files"], s["files_written"])
        self.assertEqual(self.live_paths("ring"), sorted(on_disk))
        self.assertEqual(self.fleet_flows("ring"), self.local_flows(self.path("ring")))
        self.assertEqual(self.fleet_flows("ring", ["tcp", "port", "80"]),
                         self.local_flows(self.path("ring"), ["tcp", "port", "80"]))

    def test_closed_files_published_from_memory(self):
        # Every closed file's index comes from the writer, none is read back;
        # the catalogue's flows are the local indexes' all the same.
        self.fleet("clickhouse-start")
        s = self.run_pcap(self.path("mem"), "mem", self.url)
        c = s["catalog"]
        self.assertGreater(s["files_written"], 3)
        self.assertEqual(c["files"], s["files_written"])
        self.assertEqual(c["files_from_memory"], s["files_written"])
        self.assertEqual(c["files_read_back"], 0)
        self.assertEqual(s["drops"]["total"], 0)
        self.assertEqual(self.live_paths("mem"), sorted(self.files_on_disk(self.path("mem"))))
        self.assertEqual(self.fleet_flows("mem"), self.local_flows(self.path("mem")))
        # No index to hand over (--no-index): each file is read back (and
        # has none), counted as such.
        s = self.run_pcap(self.path("noidx"), "noidx", self.url, "--no-index")
        c = s["catalog"]
        self.assertEqual(c["files_from_memory"], 0)
        self.assertEqual(c["files_read_back"], s["files_written"])
        self.assertEqual(c["files_without_index"], s["files_written"])

    def test_flow_budget_value_in_stats(self):
        # The budget as set, beside the counters it drives: --stats-json,
        # capctl stats --json, text and Prometheus; "off" without one. No
        # catalogue needed: nothing listens on port 1, the rows wait.
        for budget, words in ((7, "flow budget 7 rows a file: "),
                              (0, "flow budget off (a row a flow): ")):
            with self.subTest(budget=budget):
                sock, js = self.path(f"c{budget}.sock"), self.path(f"s{budget}.json")
                extra = ["--catalog-flow-budget", str(budget)] if budget else []
                c = capdtest.start_capd(["-q", "-i", "null:64,rate=1000", "-w",
                                         self.path(f"o{budget}.pcap"), "--ctl", sock,
                                         "--stats-json", js, "--catalog", "http://127.0.0.1:1",
                                         *extra], sock=sock)
                try:
                    self.assertEqual(self.ctl_stats(sock)["catalog"]["flow_budget"], budget)
                    p = subprocess.run([CAPCTL, "--ctl", sock, "stats"], capture_output=True,
                                       text=True, timeout=30)
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertIn(words, p.stdout)
                    p = subprocess.run([CAPCTL, "--ctl", sock, "stats", "--prometheus"],
                                       capture_output=True, text=True, timeout=30)
                    self.assertEqual(p.returncode, 0, p.stderr)
                    self.assertIn("# TYPE linecap_catalog_flow_budget gauge\n"
                                  f"linecap_catalog_flow_budget {budget}\n", p.stdout)
                finally:
                    c.signal(signal.SIGINT)
                    run = c.wait()
                self.assertEqual(run.rc, 0, run.describe())
                self.assertEqual(capdtest.read_json(js)["catalog"]["flow_budget"], budget)

    def test_bad_options_and_unsafe_spool(self):
        out = self.path("o.pcap")
        for args, words in [
            (["--catalog", "ftp://127.0.0.1:1"], "expected http://HOST:PORT"),
            (["--catalog", "http://127.0.0.1:99999"], "bad port"),
            (["--catalog-host", "x"], "need --catalog URL"),
            (["--catalog", self.url, "--catalog-tables", "a"], "FILES,FLOWS"),
            (["--catalog", self.url, "--catalog-tables", "a;drop,b"], "not a table name"),
            (["--catalog", self.url, "--catalog-spool-max", "12Q"], "--catalog-spool-max"),
            (["--catalog", self.url, "--catalog-flow-budget", "1"], "--catalog-flow-budget"),
            (["--catalog", self.url, "--catalog-flow-budget", "-5"], "--catalog-flow-budget"),
            (["--catalog", self.url, "--catalog-flow-budget", "10x"], "--catalog-flow-budget"),
            (["--catalog-flow-budget", "100"], "need --catalog URL"),
        ]:
            with self.subTest(args=args):
                r = self.capd(["-i", "pcap:" + WEB_MIX, "-w", out, *args])
                self.assertEqual(r.rc, 1, r.describe())
                self.assertEqual(len(r.stderr_lines), 1, r.describe())
                self.assertIn(words, r.stderr, r.describe())
                self.assertFalse(os.path.exists(out))
        # A spool path that is a symbolic link (to a file capd must not
        # write) is refused before capture starts, and the target is intact.
        target = self.path("precious")
        with open(target, "w") as f:
            f.write("keep")
        os.symlink(target, self.path("spool"))
        r = self.capd(["-i", "pcap:" + WEB_MIX, "-w", out, "--catalog", self.url,
                       "--catalog-spool", self.path("spool")])
        self.assertEqual(r.rc, 1, r.describe())
        self.assertIn("symbolic link", r.stderr)
        self.assertFalse(os.path.exists(out))
        with open(target) as f:
            self.assertEqual(f.read(), "keep")


if __name__ == "__main__":
    capdtest.main()
