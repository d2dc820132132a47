#!/usr/bin/env python3
"""query_bench: what the packet index costs capd, how big it is, and how fast
capq finds packets with it, next to tcpdump/editcap over the same files.

Writes OUT/query_bench.json (schema linecap.query_bench/1) and prints a short
summary. Sections (--only/--skip):

  capture  capd with the index on and with --no-index, alternating, in the
           same run: null:64,rate=14.88M into a --preallocate -C 1000 -W 3
           ring on --shm-dir (drops inside capd, by stage), and null:1514
           unpaced into a -C 1000 -W 3 ring on --disk-dir (packets written
           per second, and the ratio with/without), next to dd to the same
           places;
  size     index bytes (the .NAME.idx files) over capture bytes: the flowgen
           mix (bench/flowgen.c) through pcap:FILE into -C 1000 files, and
           64-byte floods (null:64,rate=14.88M) carrying the frames of 65,536
           one-packet flows and of a single flow;
  query    a store of --store-gb (default 20) on --disk-dir, written by capd
           from pcap:FLOWGEN,loop with -C 1000 and -c; then, cold (page cache
           dropped before every command) and warm (the same command run just
           before): one flow by its 5-tuple, one minute with no expression,
           and 'tcp', each by capq and by the scan a user would run
           (tcpdump -r over every file; editcap -A/-B for the minute), and
           whether the outputs are the same packets (count and an
           order-independent hash of timestamp in ns, lengths and bytes).
           Cold runs are repeated --cold-reps times (default 3), scan and
           capq alternating, each after dropping the page cache: a shared
           disk's cold rate moves a lot from one run to the next, so each
           run is reported and the ratio is that of the medians.

With --hugepages N, vm.nr_hugepages is raised for the capture section and put
back to its old value when the bench ends, however it ends (an error, ^C,
SIGTERM or SIGHUP).

capd, capq and flowgen are found in --build-dir (or $LINECAP_BUILD_DIR). A
capd without --no-index, or no capq, is said in the JSON ("capq not built")
and the parts that need it are skipped; the rest still runs.

Full run (root, on an otherwise idle machine; needs about 24 GB free on the
disk dir and 5 GB in /dev/shm):
  python3 bench/query_bench.py --build-dir build --out /var/tmp/query-bench --hugepages 1024
Small check of the harness (2 GB store, 200k flows):
  python3 bench/query_bench.py --build-dir build --out /tmp/qb --store-gb 2 --flows 200000
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import capbench  # noqa: E402  (its capd runner, dd and machine description)
import hugepages  # noqa: E402

SCHEMA = "linecap.query_bench/1"
SECTIONS = ("capture", "size", "query")
QUERY_KEYS = ("flow", "minute", "tcp")  # --queries: the query section's three, in order
LINE_RATE = "14.88M"
INDEX_SUFFIXES = (".idx", ".idx.partial")


# ------------------------------------------------------------ file helpers

def is_index(name):
    return name.startswith(".") or name.endswith(INDEX_SUFFIXES)


def capture_files(d):
    """The capture files of a capd output directory, in name order
    (index files and hidden files left aside)."""
    out = []
    for p in sorted(glob.glob(os.path.join(d, "*"))):
        if os.path.isfile(p) and not is_index(os.path.basename(p)):
            out.append(p)
    return sorted(out, key=lambda p: (len(p), p))


def index_files(d):
    return [p for p in glob.glob(os.path.join(d, ".*.idx")) if os.path.isfile(p)]


def dir_sizes(d):
    caps = capture_files(d)
    idx = index_files(d)
    cap_bytes = sum(os.path.getsize(p) for p in caps)
    idx_bytes = sum(os.path.getsize(p) for p in idx)
    return {"capture_files": len(caps), "index_files": len(idx), "capture_bytes": cap_bytes,
            "index_bytes": idx_bytes,
            "index_pct": round(100.0 * idx_bytes / cap_bytes, 3) if cap_bytes and idx else None}


def drop_caches():
    """sync and drop the page cache; False when not allowed (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# ------------------------------------------------- record stream digests

class Digest:
    """Count and order-independent hash of the records of one or more capture
    streams fed in turn (each a pcap file, micro or nano, either byte order,
    or pcapng sections). A record is its timestamp in ns, captured length,
    original length and bytes; in_order says whether the timestamps never
    went back across everything fed."""

    def __init__(self):
        self.count = 0
        self.sum = 0
        self.in_order = True
        self.last_ns = -1
        self.first_ns = None
        self.bad = None

    def add(self, ts_ns, caplen, wirelen, data):
        h = hashlib.blake2b(struct.pack("<qII", ts_ns, caplen, wirelen), digest_size=8)
        h.update(data)
        self.sum = (self.sum + int.from_bytes(h.digest(), "little")) & (2 ** 64 - 1)
        self.count += 1
        if ts_ns < self.last_ns:
            self.in_order = False
        self.last_ns = max(self.last_ns, ts_ns)
        if self.first_ns is None or ts_ns < self.first_ns:
            self.first_ns = ts_ns

    def result(self):
        return {"packets": self.count, "hash": f"{self.sum:016x}", "in_order": self.in_order,
                "error": self.bad}

    def feed(self, f):
        """Reads one capture stream (a pcap file, or pcapng sections) from f,
        a binary file object, to its end."""
        head = f.read(24)
        if len(head) < 24:
            if head:
                self.bad = "cut file header"
            return
        magic = head[:4]
        if magic == b"\x0a\x0d\x0d\x0a":
            self.feed_pcapng(head + f.read())
            return
        if magic not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4",
                         b"\xa1\xb2\x3c\x4d"):
            self.bad = "not a capture stream"
            return
        fmt = ("<" if magic[0] in (0xd4, 0x4d) else ">") + "IIII"
        mult = 1 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1000
        unpack, pack, blake = struct.unpack_from, struct.pack, hashlib.blake2b
        total, count, last, first, in_order = self.sum, self.count, self.last_ns, None, True
        rest = b""
        while True:
            chunk = f.read(1 << 22)
            data = rest + chunk if rest else chunk
            n, off = len(data), 0
            mv = memoryview(data)
            while off + 16 <= n:
                sec, frac, incl, orig = unpack(fmt, data, off)
                end = off + 16 + incl
                if end > n:
                    break
                ts = sec * 1000000000 + frac * mult
                h = blake(pack("<qII", ts, incl, orig), digest_size=8)
                h.update(mv[off + 16:end])
                total += int.from_bytes(h.digest(), "little")
                count += 1
                if ts < last:
                    in_order = False
                else:
                    last = ts
                if first is None:
                    first = ts
                off = end
            rest = data[off:]
            mv.release()
            if not chunk:
                break
        if rest:
            self.bad = "cut record"
        self.sum, self.count, self.last_ns = total & (2 ** 64 - 1), count, last
        self.in_order = self.in_order and in_order
        if first is not None and (self.first_ns is None or first < self.first_ns):
            self.first_ns = first

    def feed_pcapng(self, data):
        off, e, ifaces = 0, "<", []
        while off + 12 <= len(data):
            if data[off:off + 4] == b"\x0a\x0d\x0d\x0a":
                e = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                ifaces = []
            btype, blen = struct.unpack_from(e + "II", data, off)
            if blen < 12 or off + blen > len(data):
                self.bad = "bad or cut block"
                return
            if btype == 1:  # interface description: if_tsresol (option 9)
                unit = 1000.0
                o = off + 16
                while o + 4 <= off + blen - 4:
                    code, olen = struct.unpack_from(e + "HH", data, o)
                    if code == 0:
                        break
                    if code == 9 and olen >= 1:
                        v = data[o + 4]
                        unit = 1e9 / (2 ** (v & 0x7f)) if v & 0x80 else 1e9 / 10 ** v
                    o += 4 + ((olen + 3) & ~3)
                ifaces.append(unit)
            elif btype == 6:  # enhanced packet
                iface, hi, lo, cap, orig = struct.unpack_from(e + "IIIII", data, off + 8)
                unit = ifaces[iface] if iface < len(ifaces) else 1000.0
                ticks = (hi << 32) | lo
                ts = ticks * int(unit) if unit == int(unit) else int(ticks * unit)
                self.add(ts, cap, orig, data[off + 28:off + 28 + cap])
            off += blen



def digest_command_outputs(cmds, timeout):
    """Runs cmds one after the other, each writing a capture stream to its
    stdout, and digests the concatenation."""
    d = Digest()
    for cmd in cmds:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            d.feed(p.stdout)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            capbench.kill_group(p, 9)
            p.wait()
            d.bad = "timed out"
        if p.returncode not in (0, None) and d.bad is None:
            d.bad = f"{os.path.basename(cmd[0])} exited {p.returncode}"
    return d.result()


# ------------------------------------------------------------------ bench

class QueryBench:
    def __init__(self, a):
        self.a = a
        self.t0 = time.monotonic()
        self.out = os.path.abspath(a.out)
        os.makedirs(self.out, exist_ok=True)
        cb_argv = ["--out", os.path.join(self.out, "capbench"), "--build-dir", a.build_dir,
                   "--shm-dir", a.shm_dir, "--disk-dir", a.disk_dir, "--targets", "shm,disk",
                   "--point-seconds", str(a.seconds), "--budget", "100000"]
        if a.capd:
            cb_argv += ["--capd", a.capd]
        if a.hugepages:
            cb_argv += ["--hugepages", str(a.hugepages)]
        # capbench raises vm.nr_hugepages (bench/hugepages.py): its cleanup()
        # puts the old value back, and so does exit in any case.
        self.cb = capbench.Bench(capbench.parse_args(cb_argv))
        self.capd = self.cb.capd
        build = os.path.dirname(os.path.dirname(self.capd))
        self.capq = self.find(a.capq, [os.path.join(build, "query", "capq"),
                                       os.path.join(build, "capq", "capq")])
        self.flowgen = self.find(a.flowgen, [os.path.join(build, "bench", "flowgen")])
        self.tcpdump = shutil.which("tcpdump")
        self.editcap = shutil.which("editcap")
        rc, out, err = capbench.run([self.capd, "--help"], 30)
        self.no_index = "--no-index" in out + err
        self.work = os.path.join(os.path.abspath(a.shm_dir), f"query-bench-{os.getpid()}")
        os.makedirs(self.work, exist_ok=True)
        self.res = {"schema": SCHEMA, "notes": [], "tools": {
            "capd": self.capd, "capd_has_no_index": self.no_index,
            "capq": self.capq or "capq not built", "flowgen": self.flowgen,
            "tcpdump": self.tcpdump, "editcap": self.editcap}}

    @staticmethod
    def find(given, cands):
        for c in ([given] if given else []) + cands:
            if c and os.path.isfile(c) and os.access(c, os.X_OK):
                return os.path.abspath(c)
        return None

    def say(self, msg):
        print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", flush=True)

    def note(self, msg):
        self.say(msg)
        self.res["notes"].append(msg)

    def gen(self, name, *args):
        """flowgen into the work directory; returns (path, summary dict)."""
        path = os.path.join(self.work, name + ".pcap")
        summ = os.path.join(self.work, name + ".json")
        if not os.path.exists(summ):
            t = time.monotonic()
            rc, _, err = capbench.run([self.flowgen, "-o", path, "--summary", summ,
                                       "--seed", str(self.a.seed)] + list(args), 900)
            if rc != 0:
                raise SystemExit(f"query_bench: flowgen failed: {capbench.last_line(err)}")
            self.say(f"flowgen {name}: {os.path.getsize(path) / 1e9:.2f} GB in "
                     f"{time.monotonic() - t:.1f} s")
        with open(summ) as f:
            return path, json.load(f)

    # ---- capture cost

    def capture(self):
        a = self.a
        res = {"hugepages": self.cb.reserve_hugepages(),
               "dd": [self.cb.dd("shm", [], 2048), self.cb.dd("disk", ["oflag=direct"], 2048)],
               "shm_64": [], "disk_1514": []}
        if self.no_index:
            modes = [("index", []), ("no-index", ["--no-index"])]
        else:
            modes = [("capd-without-index-support", [])]
            self.note("capd has no --no-index: capture cost measured with today's capd only")
        ring = ["-C", "1000", "-W", "3"]
        for rep in range(a.reps):
            for label, extra in modes:
                r = self.cb.capd_run(f"null:64,rate={LINE_RATE}", "shm",
                                     ring + ["--preallocate"] + extra, seconds=a.seconds)
                r["mode"] = label
                res["shm_64"].append(r)
                self.say(f"null:64 at {LINE_RATE} to shm, {label}: {r.get('status')}, "
                         f"{r.get('written_mpps')} Mpps written, lost inside capd "
                         f"{r.get('lost_inside_capd')}, drops {r.get('drops')}")
                r = self.cb.capd_run("null:1514", "disk", ring + extra, seconds=a.seconds)
                r["mode"] = label
                res["disk_1514"].append(r)
                self.say(f"null:1514 unpaced to disk, {label}: {r.get('status')}, "
                         f"{r.get('written_mpps')} Mpps, {r.get('write_gbps')} GB/s")

        def med(rows, mode, key):
            v = [r[key] for r in rows if r.get("mode") == mode and r.get(key) is not None]
            return statistics.median(v) if v else None

        summ = {}
        for mode, _ in modes:
            summ[mode] = {
                "shm_64_lost_inside_capd_max": max((r.get("lost_inside_capd") or 0)
                                                   for r in res["shm_64"] if r["mode"] == mode),
                "shm_64_written_mpps_median": med(res["shm_64"], mode, "written_mpps"),
                "disk_1514_written_mpps_median": med(res["disk_1514"], mode, "written_mpps"),
                "disk_1514_gbps_median": med(res["disk_1514"], mode, "write_gbps"),
            }
        if "no-index" in summ and summ["no-index"]["disk_1514_written_mpps_median"]:
            summ["disk_1514_ratio_index_over_no_index"] = round(
                summ["index"]["disk_1514_written_mpps_median"] /
                summ["no-index"]["disk_1514_written_mpps_median"], 4)
        res["summary"] = summ
        self.res["capture"] = res

    # ---- index size

    def size_of_run(self, label, source, extra, seconds=None):
        d = self.cb.targets["shm"]
        self.cb.clean_dir(d)
        r = self.cb.capd_run(source, "shm", extra, seconds=seconds or self.a.seconds,
                             keep_files=True)
        s = dir_sizes(d)
        if not s["index_files"] and self.capq and r.get("status") == "ok":
            # capd wrote no index (a build before the index writer): the
            # size capq --reindex gives the same files instead, said so.
            rc, _, err = capbench.run([self.capq, "--reindex"] + capture_files(d),
                                      self.a.command_timeout)
            s = dir_sizes(d)
            s["index_by"] = ("capq --reindex" if rc == 0 else
                             "capq --reindex failed: " + capbench.last_line(err))
        self.cb.clean_dir(d)
        s.update(label=label, source=source, status=r.get("status"),
                 packets_written=r.get("written"), index_by=s.get("index_by", "capd"))
        self.say(f"index size, {label}: {s['index_bytes']} B over {s['capture_bytes']} B "
                 f"= {s['index_pct']} % ({s['index_files']} index files)")
        return s

    def size(self):
        out = []
        # The mix as the store has it, then with flows four times as long
        # (mean bytes per flow decides what a flow table costs per byte).
        for scale in sorted({self.a.flow_scale, 4 * self.a.flow_scale}):
            mix, msum = self.gen(f"mix-size-{scale}", "--flows", str(min(self.a.flows, 300000)),
                                 "--flow-scale", str(scale))
            out.append(self.size_of_run(f"flowgen mix, --flow-scale {scale}", f"pcap:{mix}",
                                        ["-C", "1000", "--nano"], seconds=600))
            out[-1]["flowgen"] = msum
            out[-1]["bytes_per_flow"] = round(msum["file_bytes"] / msum["flows"])
        many, _ = self.gen("flood-many", "--flows", "65536", "--frame-size", "60",
                           "--max-flow-packets", "1")
        one, _ = self.gen("flood-one", "--flows", "1", "--frame-size", "60", "--ipv6-pct", "0",
                          "--vlan-pct", "0", "--udp-pct", "100")
        out.append(self.size_of_run("64 B flood, 65536 flows",
                                    f"null:64,frames={many},rate={LINE_RATE}", ["-C", "1000"]))
        out.append(self.size_of_run("64 B flood, one flow",
                                    f"null:64,frames={one},rate={LINE_RATE}", ["-C", "1000"]))
        if any(s["index_by"] != "capd" for s in out):
            self.note("capd wrote no index: index sizes are those of capq --reindex")
        self.res["size"] = out

    # ---- query speed

    def store_dir(self):
        return os.path.join(os.path.abspath(self.a.disk_dir), "query-bench-store")

    def check_space(self):
        """Refuses (exit 1, one line) when the disk dir cannot hold the store;
        a store left by an earlier run counts as free."""
        a = self.a
        d = self.store_dir()
        need = a.store_gb * 1e9 * 1.08 + (2 << 30)
        st = os.statvfs(a.disk_dir)
        free = st.f_bavail * st.f_frsize
        if os.path.isdir(d):
            free += sum(os.path.getsize(p) for p in glob.glob(os.path.join(d, "*")) +
                        glob.glob(os.path.join(d, ".*")) if os.path.isfile(p))
        if free < need:
            raise SystemExit(f"query_bench: not enough free space in {a.disk_dir} for a "
                             f"{a.store_gb:g} GB store: need {need / 1e9:.1f} GB, have "
                             f"{free / 1e9:.1f} GB (use --store-gb)")

    def build_store(self, fg, fsum):
        a = self.a
        d = self.store_dir()
        want = int(a.store_gb * 1e9)
        marker = d + ".json"
        shape = {"want_bytes": want, "flowgen": fsum, "file_mb": a.file_mb,
                 "writers": a.writers, "format": a.format}
        if a.reuse_store and os.path.exists(marker):
            with open(marker) as f:
                info = json.load(f)
            if all(info.get(k) == v for k, v in shape.items()) and os.path.isdir(d):
                self.say(f"reusing the store in {d}")
                return info
        self.check_space()
        shutil.rmtree(d, ignore_errors=True)
        if os.path.exists(marker):
            os.unlink(marker)
        os.makedirs(d)
        rec = (fsum["file_bytes"] - 24) / fsum["packets"]
        count = int(want / rec) + 1
        stats = os.path.join(self.work, "store-stats.json")
        cmd = [self.capd, "-i", f"pcap:{fg},loop", "-w", os.path.join(d, "store." + a.format),
               "-C", str(a.file_mb), "-c", str(count), "--ctl", "none",
               "--stats-json", stats, "--workers", str(a.writers), "--writers", str(a.writers),
               "--format", a.format] + (["--nano"] if a.format == "pcap" else [])
        self.say(f"writing a {a.store_gb:g} GB store: {' '.join(cmd)}")
        t = time.monotonic()
        rc, _, err = capbench.run(cmd, 7200)
        secs = time.monotonic() - t
        if rc != 0:
            raise SystemExit(f"query_bench: capd failed writing the store: "
                             f"{capbench.first_error_line(err)}")
        os.sync()
        with open(stats) as f:
            s = json.load(f)
        span = fsum["last_ns"] - fsum["first_ns"]
        loops = count / fsum["packets"]
        drops = s.get("drops") or {}
        info = dict(shape, packets=s.get("packets_written"), write_seconds=round(secs, 1),
                    drops_inside_capd={k: v for k, v in drops.items()
                                       if k in ("ring_full", "writer_slow", "disk") and v},
                    command=" ".join(cmd), first_ns=fsum["first_ns"],
                    approx_last_ns=int(fsum["first_ns"] + span * loops))
        info.update(dir_sizes(d))
        with open(marker, "w") as f:
            json.dump(info, f)
        self.say(f"store: {info['capture_bytes'] / 1e9:.2f} GB in {info['capture_files']} files, "
                 f"{info['packets']} packets, {info['index_files']} index files, "
                 f"written in {secs:.0f} s")
        if info["capture_bytes"] < want:
            # pcap:FILE,loop offers as fast as it reads, with no back-pressure:
            # what the writer cannot take is dropped (counted), and the store
            # comes out smaller than asked. Say so rather than let a short
            # store pass for the size asked.
            lost = ", ".join(f"{k} {v}" for k, v in info["drops_inside_capd"].items()) or "none"
            self.say(f"store: {info['capture_bytes'] / 1e9:.2f} GB is short of the "
                     f"{a.store_gb:g} GB asked (dropped inside capd: {lost}); "
                     f"ask for more with --store-gb")
        return info

    def timed(self, label, cmds, cold):
        """Wall time of running cmds in turn, output to /dev/null."""
        if cold:
            if not drop_caches():
                return {"label": label, "status": "cold: cannot drop caches (not root)"}
        else:
            self.run_all(cmds)  # warm up
        t = time.monotonic()
        rc = self.run_all(cmds)
        secs = time.monotonic() - t
        return {"label": label, "seconds": round(secs, 3), "commands": len(cmds),
                "status": "ok" if rc == 0 else f"exit {rc}"}

    def alternate(self, contenders, cold, reps):
        """Runs every (key, label, cmds) of contenders in turn, reps rounds
        (scan, capq, scan, capq, ...), and gives per key the median seconds
        with every run's result: cold runs on a shared disk vary too much for
        one pair to say anything."""
        rounds = {key: [] for key, _, _ in contenders}
        for rep in range(reps):
            for key, label, cmds in contenders:
                r = self.timed(label, cmds, cold)
                rounds[key].append(r)
                if reps > 1:
                    self.say(f"  {label} ({'cold' if cold else 'warm'} run {rep + 1} of "
                             f"{reps}): {r.get('seconds', r.get('status'))} s")
        out = {}
        for key, label, cmds in contenders:
            rs = rounds[key]
            secs = [r["seconds"] for r in rs if r.get("status") == "ok"]
            bad = [r["status"] for r in rs if r.get("status") != "ok"]
            res = {"label": label, "commands": len(cmds), "runs": len(rs),
                   "status": bad[0] if bad else "ok",
                   "each_seconds": [r.get("seconds") for r in rs]}
            if secs and not bad:
                res["seconds"] = round(statistics.median(secs), 3)
                res["min_seconds"] = min(secs)
                res["max_seconds"] = max(secs)
            out[key] = res
        return out

    def run_all(self, cmds):
        worst = 0
        for c in cmds:
            try:
                p = subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   stdin=subprocess.DEVNULL, timeout=self.a.command_timeout)
                worst = worst or p.returncode
            except subprocess.TimeoutExpired:
                worst = worst or -9
        return worst

    def query(self):
        a = self.a
        if not self.tcpdump:
            self.note("tcpdump not found: no query comparison")
            return
        if not (a.reuse_store and os.path.exists(self.store_dir() + ".json")):
            self.check_space()
        fg, fsum = self.gen("mix-store", "--flows", str(a.flows), "--flow-scale",
                            str(a.flow_scale), "--duration",
                            str(a.flowgen_duration), "--max-bytes", str(int(a.flowgen_gb * 1e9)))
        if fsum["flows"] < a.flows:
            self.note(f"flowgen reached --flowgen-gb after {fsum['flows']} of {a.flows} flows")
        info = self.build_store(fg, fsum)
        files = capture_files(self.store_dir())
        if self.capq and not index_files(self.store_dir()):
            # capd wrote no index (a build before the index writer): capq
            # builds them, and the time it takes is a figure of its own.
            t = time.monotonic()
            rc, _, err = capbench.run([self.capq, "--reindex"] + files, a.command_timeout)
            secs = time.monotonic() - t
            info["reindex"] = {"status": "ok" if rc == 0 else "error: " +
                               capbench.last_line(err), "seconds": round(secs, 2),
                               "mb_per_s": round(info["capture_bytes"] / secs / 1e6, 1)}
            info.update(dir_sizes(self.store_dir()))
            self.note(f"capd wrote no index: capq --reindex built {info['index_files']} in "
                      f"{secs:.1f} s ({info['reindex']['mb_per_s']} MB/s), "
                      f"{info['index_pct']} % of the capture bytes")
        mem = capbench.meminfo().get("MemAvailable", 0) * 1024
        if info["capture_bytes"] > mem:
            self.note(f"the store ({info['capture_bytes'] / 1e9:.1f} GB) is larger than the "
                      f"available memory ({mem / 1e9:.1f} GB): warm runs are only partly cached")
        res = {"store": info, "queries": []}
        flow = fsum.get("small_tcp") or fsum.get("large_tcp")
        expr_flow = (f"host {flow['client']} and host {flow['server']} and "
                     f"port {flow['client_port']} and port {flow['server_port']}")
        mid = (info["first_ns"] + info["approx_last_ns"]) // 2
        since = (mid // 1000000000) * 1000000000 + 250000000
        until = since + 60 * 1000000000

        def unix(ns):
            return f"{ns // 1000000000}.{ns % 1000000000:09d}"

        td = [self.tcpdump, "--time-stamp-precision=nano", "-r"]
        # Issue 20's targets, as the lowest scan/capq time ratio.
        target = {"one flow by 5-tuple": 100.0, "one minute, no expression": 50.0,
                  "tcp": round(1 / 1.2, 3)}
        queries = [
            ("one flow by 5-tuple", expr_flow,
             [td + [f, "-w", "-", expr_flow] for f in files], []),
            ("one minute, no expression", None,
             [[self.editcap, "-A", unix(since), "-B", unix(until), f, "-"] for f in files]
             if self.editcap else [],
             ["--since", unix(since), "--until", unix(until)]),
            ("tcp", "tcp", [td + [f, "-w", "-", "tcp"] for f in files], []),
        ]
        scan_all = [td + [f, "-w", "-"] for f in files]
        keys = dict(zip(QUERY_KEYS, (q[0] for q in queries)))
        if a.queries:
            wanted = {keys[k] for k in a.queries.split(",")}
            queries = [q for q in queries if q[0] in wanted]
        for label, expr, scan, window in queries:
            q = {"query": label, "expression": expr, "window": window or None, "runs": []}
            capq_cmd = None
            if self.capq:
                capq_cmd = [self.capq, "-r", self.store_dir()] + window + ([expr] if expr else [])
                q["capq_command"] = " ".join(capq_cmd)
                rc, out, err = capbench.run(capq_cmd[:1] + ["--explain"] + capq_cmd[1:],
                                            a.command_timeout)
                q["capq_explain"] = (out + err).splitlines()[:80]
            if scan:
                q["scan_command"] = (" ".join(scan[0]).replace(files[0], "FILE") +
                                     f"  (for each of the {len(files)} files)")
            contenders = []
            if scan:
                contenders.append(("scan", "scan", scan))
            if capq_cmd:
                contenders.append(("capq", "capq", [capq_cmd]))
            if label == "one minute, no expression":
                contenders.append(("tcpdump_read_all", "tcpdump -r every file", scan_all))
            for cold in (True, False) if a.cold else (False,):
                temp = "cold" if cold else "warm"
                runs = self.alternate(contenders, cold, a.cold_reps if cold else 1)
                ratio, paired = None, None
                if "capq" in runs and "scan" in runs and runs["capq"].get("seconds"):
                    ratio = round(runs["scan"]["seconds"] / runs["capq"]["seconds"], 2)
                    # Each round's own ratio too: scan and capq ran next to
                    # each other, on the disk as it was then.
                    paired = [round(x / y, 2) if x and y else None for x, y in
                              zip(runs["scan"]["each_seconds"], runs["capq"]["each_seconds"])]
                q["runs"].append({"cache": temp, "results": runs, "scan_over_capq": ratio,
                                  "scan_over_capq_each_round": paired,
                                  "target_scan_over_capq": target[label],
                                  "meets_target": None if ratio is None
                                  else ratio >= target[label]})
                self.say(f"{label} ({temp}): " + ", ".join(
                    f"{k} {v.get('seconds', v.get('status'))} s" for k, v in runs.items()) +
                    (f", scan/capq = {ratio}" if ratio else ""))
            if a.verify and scan:
                q["scan_output"] = digest_command_outputs(scan, a.command_timeout)
                if capq_cmd:
                    q["capq_output"] = digest_command_outputs([capq_cmd], a.command_timeout)
                    so, co = q["scan_output"], q["capq_output"]
                    q["identical"] = (so["packets"] == co["packets"] and so["hash"] == co["hash"]
                                      and not so["error"] and not co["error"])
                self.say(f"{label}: scan output {q['scan_output']}" +
                         (f", capq output {q['capq_output']}, identical: {q['identical']}"
                          if capq_cmd else ""))
            if not self.capq:
                q["capq"] = "capq not built"
            res["queries"].append(q)
        if not self.capq:
            self.note("capq not built: baselines only")
        self.res["query"] = res

    # ---- run

    def go(self):
        a = self.a
        self.res["machine"] = self.cb.machine()
        self.res["options"] = {k: sorted(v) if isinstance(v, set) else v
                               for k, v in vars(a).items()}
        if not self.flowgen and ({"size", "query"} - a.skip):
            raise SystemExit("query_bench: flowgen not built (ninja -C BUILD bench/flowgen)")
        for s in SECTIONS:
            if s in a.skip:
                continue
            self.say(f"== {s}")
            getattr(self, s)()
        self.res["seconds"] = round(time.monotonic() - self.t0, 1)
        path = os.path.join(self.out, "query_bench.json")
        with open(path, "w") as f:
            json.dump(self.res, f, indent=1)
        self.say(f"wrote {path}")
        print(summary_text(self.res))
        differ = [q["query"] for q in self.res.get("query", {}).get("queries", [])
                  if q.get("identical") is False]
        if differ:
            print("query_bench: capq's output differs from the scan's for: " + ", ".join(differ),
                  file=sys.stderr)
            return 1
        return 0

    def cleanup(self):
        self.cb.cleanup()  # the hugepage count put back too
        shutil.rmtree(self.work, ignore_errors=True)
        if not self.a.keep_store:
            shutil.rmtree(self.store_dir(), ignore_errors=True)
            if os.path.exists(self.store_dir() + ".json"):
                os.unlink(self.store_dir() + ".json")


def summary_text(r):
    lines = ["query_bench summary"]
    c = r.get("capture", {}).get("summary")
    if c:
        for mode, s in c.items():
            if isinstance(s, dict):
                lines.append(f"  capture {mode}: 64 B at {LINE_RATE} to shm: lost inside capd "
                             f"{s['shm_64_lost_inside_capd_max']} (worst run), written "
                             f"{s['shm_64_written_mpps_median']} Mpps; 1514 B to disk: "
                             f"{s['disk_1514_written_mpps_median']} Mpps "
                             f"({s['disk_1514_gbps_median']} GB/s)")
        if "disk_1514_ratio_index_over_no_index" in c:
            lines.append(f"  capture 1514 B disk ratio index/no-index: "
                         f"{c['disk_1514_ratio_index_over_no_index']}")
    for s in r.get("size", []):
        lines.append(f"  index size {s['label']}: {s['index_pct']} % of {s['capture_bytes']} B "
                     f"(written by {s['index_by']})")
    q = r.get("query")
    if q:
        st = q["store"]
        lines.append(f"  store: {st['capture_bytes'] / 1e9:.2f} GB, {st['capture_files']} files, "
                     f"{st['packets']} packets, index {st['index_pct']} %")
        for x in q["queries"]:
            for run in x["runs"]:
                parts = [f"{k} {v.get('seconds', v.get('status'))}" +
                         (f" (median of {v['each_seconds']})" if v.get("runs", 1) > 1 else "")
                         for k, v in run["results"].items()]
                lines.append(f"  {x['query']} ({run['cache']}): " + ", ".join(parts) +
                             (f"; scan/capq {run['scan_over_capq']}x (target >= "
                              f"{run['target_scan_over_capq']})" if run["scan_over_capq"]
                              else ""))
            if "identical" in x:
                lines.append(f"  {x['query']}: identical output: {x['identical']} "
                             f"({x['capq_output']['packets']} packets)")
            elif "scan_output" in x:
                lines.append(f"  {x['query']}: scan output {x['scan_output']['packets']} packets")
    for n in r.get("notes", []):
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="query_bench", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="query-bench-out", help="output directory")
    p.add_argument("--build-dir", default=os.environ.get("LINECAP_BUILD_DIR") or
                   os.path.join(os.path.dirname(HERE), "build"))
    p.add_argument("--capd"), p.add_argument("--capq"), p.add_argument("--flowgen")
    p.add_argument("--shm-dir", default="/dev/shm")
    p.add_argument("--disk-dir", default="/var/tmp")
    p.add_argument("--seconds", type=float, default=5.0, help="length of every capture run")
    p.add_argument("--hugepages", type=int, default=0,
                   help="as root, raise vm.nr_hugepages to N first, as capbench does "
                   "(performance figures want them; put back to the old value at the end)")
    p.add_argument("--reps", type=int, default=2, help="runs per capture mode, alternating")
    p.add_argument("--store-gb", type=float, default=20.0, help="store size (default 20)")
    p.add_argument("--flows", type=int, default=1000000, help="flows in the flowgen mix")
    p.add_argument("--flow-scale", type=int, default=1,
                   help="flowgen's Pareto scale, packets (default 1)")
    p.add_argument("--flowgen-gb", type=float, default=6.0,
                   help="bound on the flowgen file (default 6)")
    p.add_argument("--flowgen-duration", type=int, default=600,
                   help="seconds of traffic in the flowgen file; the store spans this times "
                   "the number of loops (default 600)")
    p.add_argument("--file-mb", type=int, default=1000, help="capd -C for the store (default 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--writers", type=int, default=1,
                   help="capd --writers (and as many --workers) for the store")
    p.add_argument("--format", default="pcap", choices=("pcap", "pcapng"))
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="do not compare the outputs of capq and the scan")
    p.add_argument("--cold-reps", type=int, default=3,
                   help="cold runs of every query, scan and capq alternating, each after "
                   "dropping the page cache; medians reported (default 3)")
    p.add_argument("--no-cold", dest="cold", action="store_false",
                   help="warm runs only (dropping the page cache slows everything else)")
    p.add_argument("--command-timeout", type=float, default=3600)
    p.add_argument("--reuse-store", action="store_true",
                   help="reuse a store a previous run left (with --keep-store)")
    p.add_argument("--keep-store", action="store_true", help="leave the store on the disk")
    p.add_argument("--queries", help="the query section's queries only, a comma list of: " +
                   ",".join(QUERY_KEYS) + " (default all)")
    p.add_argument("--only", help="comma list of sections: " + ",".join(SECTIONS))
    p.add_argument("--skip", default="", help="comma list of sections to skip")
    a = p.parse_args(argv)
    a.skip = {s for s in a.skip.split(",") if s}
    if a.only:
        a.skip |= set(SECTIONS) - {s for s in a.only.split(",") if s}
    if a.skip - set(SECTIONS):
        p.error("unknown section(s): " + ", ".join(sorted(a.skip - set(SECTIONS))))
    if a.queries and set(a.queries.split(",")) - set(QUERY_KEYS):
        p.error("unknown query(s): " + ", ".join(sorted(set(a.queries.split(",")) -
                                                       set(QUERY_KEYS))))
    if a.store_gb <= 0 or a.flows <= 0 or a.reps <= 0 or a.seconds <= 0 or a.cold_reps <= 0:
        p.error("--store-gb, --flows, --reps, --cold-reps and --seconds must be positive")
    return a


def main(argv):
    a = parse_args(argv)
    # SIGTERM and SIGHUP end the bench through its finally (cleanup() and
    # the hugepage count put back).
    hugepages.end_on_signals()
    b = QueryBench(a)
    try:
        return b.go()
    except KeyboardInterrupt:
        b.say("interrupted")
        return 130
    finally:
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
