#!/usr/bin/env python3
"""capbench: measures capd the way a user runs it, next to its baselines.

Writes OUT/capbench.json and OUT/capbench.png (gnuplot), and prints progress.

What one full run measures, all in the same run so the numbers compare:
  machine        CPU model, CPUs, memory, kernel, hugepages, load average;
  lossless       the highest paced offered load of null:SIZE,rate=R (64, 512,
                 1514 bytes; 1 worker + 1 writer) that capd records with zero
                 drops over every stage (nic_imissed included: for a paced null
                 source it means the worker did not keep up), into /dev/shm and
                 into a directory on a real disk, with the drop percentage by
                 stage at every point tried above it;
  configs        match-all, 'tcp port 80 or udp port 53',
                 'tcp[(tcp[12]>>2):4] = 0x47455420', 10 and 100 --pattern
                 literals: on null:64 (all-zero frames, so filters match
                 nothing: this prices the filter alone) and on the unpaced
                 pcap:FILE,loop replay of realistic traffic; a configuration
                 capd refuses is recorded as "unsupported: <message>";
  line-rate      null:64 paced at 14.88 Mpps into a -C 1000 -W 3 ring on
                 /dev/shm for 5 s, twice with new files, then three times with
                 --reuse-files into one directory (the first fills the ring,
                 the later ones write over it), then twice with
                 --preallocate, each into an empty directory; the same
                 (without --preallocate) for null:1514
                 unpaced into a ring on the disk; null:64 at line rate into
                 one file and into the ring on the disk;
  throughput     capture GB/s for 1514-byte frames as a ratio to dd bs=1M to
                 the same directory (oflag=direct on the disk, where capd also
                 runs with --direct and with --write-behind 0);
  baselines      capd --rx-only (the bare receive loop) on the same sources,
                 dd, tcpdump against capd -i af_packet: on a veth pair between
                 two network namespaces this script creates (198.18.0.0/15
                 only, bounded paced UDP flood, namespaces removed afterwards;
                 64-byte frames to /dev/shm at set rates, then 1514-byte
                 frames at 500k/s, 0.76 GB/s, to the disk target),
                 and dpdk-dumpcap attached to dpdk-testpmd where that can run;
  scaling        1+1, 2+1 and 2+2 workers+writers (lcores beyond the CPUs
                 share them; the JSON says so).

Every run of every program is bounded in time, the veth sender in count and
time, and the whole run by --budget.
"""

import argparse
import glob
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration"))
import capdtest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hugepages  # noqa: E402

SCHEMA = "linecap.capbench/1"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MARKER = b"LCBENCH1"  # bench/capbench_flood.c puts it at the start of every payload
VETH_TX_ADDR = "198.18.200.1"
VETH_RX_ADDR = "198.18.200.2"
SECTIONS = ("lossless", "configs", "line-rate", "rx-only", "veth", "dumpcap", "scaling",
            "compress", "flows")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FULL_RUN = ("ninja -C build && python3 bench/capbench.py --build-dir build "
            "--out /var/tmp/capbench-full --disk-dir /var/tmp --hugepages 1024")

EPILOG = f"""\
Full run (as root, on an otherwise idle machine; about 15 minutes):
  {FULL_RUN}

CI smoke run (well-formed JSON and PNG only, no speed checks, under a minute):
  python3 bench/capbench.py --quick --out /tmp/capbench-quick

capd is found through --capd, else $LINECAP_BUILD_DIR/dataplane/capd, else
--build-dir/dataplane/capd. Output files go to a capbench-PID directory under
--shm-dir and --disk-dir and are deleted after every run.
"""

# Payload literals for the --pattern configurations: the protocol tokens the
# seed articles search for, then made-up words (fixed seed) up to 100.
PATTERN_WORDS = ["GET ", "POST ", "HTTP/1.1", "Host: ", "User-Agent:", "MAIL FROM:", "RCPT TO:",
                 "EHLO ", "Content-Type:", "Cookie:"]


def pattern_literals(n):
    rng = random.Random(7)
    out = list(PATTERN_WORDS[:n])
    while len(out) < n:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(6, 12)))
        if w not in out:
            out.append(w)
    return out


def pattern_args(n):
    args = []
    for w in pattern_literals(n):
        args += ["--pattern", w]
    return args


CONFIGS = [
    ("match-all", []),
    ("expr-port", ["tcp port 80 or udp port 53"]),
    ("expr-payload-get", ["tcp[(tcp[12]>>2):4] = 0x47455420"]),
    ("patterns-10", pattern_args(10)),
    ("patterns-100", pattern_args(100)),
]


# ----------------------------------------------------------------- helpers

def read_file(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def steal_ticks():
    """Time the hypervisor took from this VM's CPUs, in USER_HZ ticks
    (/proc/stat, all CPUs). Stalls it causes show up as nic_imissed."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError):
        return None


def meminfo():
    out = {}
    for line in read_file("/proc/meminfo").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def hugepage_state():
    m = meminfo()
    sizes = {}
    for d in sorted(glob.glob("/sys/kernel/mm/hugepages/hugepages-*")):
        name = os.path.basename(d)
        sizes[name] = {
            "nr_hugepages": int(read_file(os.path.join(d, "nr_hugepages"), "0").strip() or 0),
            "free_hugepages": int(read_file(os.path.join(d, "free_hugepages"), "0").strip() or 0),
        }
    mounts = [line.split()[1] for line in read_file("/proc/mounts").splitlines()
              if len(line.split()) > 2 and line.split()[2] == "hugetlbfs"]
    return {
        "total": m.get("HugePages_Total", 0),
        "free": m.get("HugePages_Free", 0),
        "reserved": m.get("HugePages_Rsvd", 0),
        "page_kb": m.get("Hugepagesize", 0),
        "free_bytes": m.get("HugePages_Free", 0) * m.get("Hugepagesize", 0) * 1024,
        "by_size": sizes,
        "hugetlbfs_mounts": mounts,
    }


def fs_of(path):
    """Filesystem type and device of the mount holding path."""
    path = os.path.realpath(path)
    best = ("", "", "")
    for line in read_file("/proc/mounts").splitlines():
        f = line.split()
        if len(f) < 3:
            continue
        mnt = f[1]
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[1]):
            best = (f[0], mnt, f[2])
    try:
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    return {"device": best[0], "mount": best[1], "fstype": best[2], "free_bytes": free}


def round3(x):
    """x rounded to three significant digits (rates stay readable)."""
    if x <= 0:
        return 0
    e = int(math.floor(math.log10(x))) - 2
    return int(round(x / 10 ** e) * 10 ** e) if e > 0 else int(round(x))


def mpps(pps):
    return None if pps is None else round(pps / 1e6, 4)


def last_line(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


def first_error_line(text):
    """The line capd printed for a refused command (one clear line)."""
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    own = [l for l in lines if l.startswith("capd:")]
    if own:
        lines = own
    for l in lines:
        if "error" in l.lower() or "not built" in l.lower() or "unsupported" in l.lower():
            return strip_prefix(l)
    return strip_prefix(lines[-1]) if lines else "exited with no message"


def strip_prefix(line):
    for p in ("capd: error: ", "capd: "):
        if line.startswith(p):
            return line[len(p):]
    return line


def kill_group(proc, sig=signal.SIGTERM):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc, sig=signal.SIGINT, wait=15.0):
    """Signals proc (its own session), waits up to `wait` s, then kills it."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None


def run(cmd, timeout, env=None, cwd=None, stdin=subprocess.DEVNULL):
    """Runs cmd in its own session; on timeout kills the whole group.
    Returns (returncode or None on timeout, stdout, stderr)."""
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin,
                             env=env, cwd=cwd, start_new_session=True)
    except OSError as e:
        return -1, "", str(e)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    except subprocess.TimeoutExpired:
        kill_group(p, signal.SIGKILL)
        out, err = p.communicate()
        return None, out.decode(errors="replace"), err.decode(errors="replace")


def wait_for(predicate, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# ---------------------------------------------------- capture file reading

def capture_records(path):
    """Yields the packet bytes of every record of a pcap or pcapng file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        off = 24
        while off + 16 <= len(data):
            _, _, incl, _ = struct.unpack_from(e + "IIII", data, off)
            off += 16
            yield data[off:off + incl]
            off += incl
        return
    if magic == b"\x0a\x0d\x0d\x0a":
        e = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        off = 0
        while off + 12 <= len(data):
            btype, blen = struct.unpack_from(e + "II", data, off)
            if blen < 12:
                return
            if btype == 6:  # enhanced packet block
                caplen = struct.unpack_from(e + "I", data, off + 20)[0]
                yield data[off + 28:off + 28 + caplen]
            elif btype == 3:  # simple packet block
                yield data[off + 12:off + blen - 4]
            off += blen


def count_marked(paths):
    """(records, unique marked sequence numbers) over capture files."""
    records, seqs = 0, set()
    for p in paths:
        try:
            for pkt in capture_records(p):
                records += 1
                i = pkt.find(MARKER)
                if i >= 0 and i + 16 <= len(pkt):
                    seqs.add(pkt[i + 8:i + 16])
        except OSError:
            pass
    return records, len(seqs)


# ------------------------------------------------------------------ bench

class Budget(Exception):
    pass


class Bench:
    def __init__(self, args):
        self.a = args
        self.t0 = time.monotonic()
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.tmp = os.path.join(self.out, "tmp")
        os.makedirs(self.tmp, exist_ok=True)
        self.log = open(os.path.join(self.out, "capbench.log"), "w")
        self.runs = 0
        self.notes = []
        self.errors = []
        tag = f"capbench-{os.getpid()}"
        self.targets = {
            "shm": os.path.join(os.path.abspath(args.shm_dir), tag),
            "disk": os.path.join(os.path.abspath(args.disk_dir or os.path.join(self.out, "disk")),
                                 tag),
        }
        for t in args.targets + ["shm"]:  # veth and dumpcap files go to shm
            os.makedirs(self.targets[t], exist_ok=True)
        self.capd = self.find_capd()
        self.flood = self.find_flood()
        self.pcap = os.path.abspath(args.pcap)
        self.netns = []
        self.hugepages = hugepages.Reservation("capbench")

    # ---- plumbing

    def elapsed(self):
        return time.monotonic() - self.t0

    def say(self, msg):
        line = f"[{self.elapsed():7.1f}s] {msg}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def check_budget(self, need=0.0):
        if self.elapsed() + need > self.a.budget:
            raise Budget(f"skipped: time budget of {self.a.budget:.0f} s reached")

    def find_capd(self):
        cands = []
        if self.a.capd:
            cands.append(self.a.capd)
        if os.environ.get("LINECAP_BUILD_DIR"):
            cands.append(os.path.join(os.environ["LINECAP_BUILD_DIR"], "dataplane", "capd"))
        cands.append(os.path.join(self.a.build_dir, "dataplane", "capd"))
        for c in cands:
            if os.path.isfile(c) and os.access(c, os.X_OK):
                return os.path.abspath(c)
        raise SystemExit("capbench: capd not found (tried " + ", ".join(cands) +
                         "); build it or give --capd PATH")

    def find_flood(self):
        cands = []
        if self.a.flood:
            cands.append(self.a.flood)
        if os.environ.get("LINECAP_BUILD_DIR"):
            cands.append(os.path.join(os.environ["LINECAP_BUILD_DIR"], "bench", "capbench_flood"))
        cands.append(os.path.join(os.path.dirname(os.path.dirname(self.capd)), "bench",
                                  "capbench_flood"))
        for c in cands:
            if os.path.isfile(c) and os.access(c, os.X_OK):
                return os.path.abspath(c)
        return None

    def clean_dir(self, d):
        for p in glob.glob(os.path.join(d, "*")) + glob.glob(os.path.join(d, ".*")):
            try:
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.unlink(p)
            except OSError:
                pass

    # ---- machine

    def machine(self):
        cpu = read_file("/proc/cpuinfo")
        model = "unknown"
        for key in ("model name", "Model", "cpu model"):
            m = re.search(r"^" + key + r"\s*:\s*(.+)$", cpu, re.M)
            if m:
                model = m.group(1).strip()
                break
        flags = set()
        m = re.search(r"^flags\s*:\s*(.+)$", cpu, re.M)
        if m:
            flags = set(m.group(1).split())
        mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpu, re.M)
        mem = meminfo()
        rc, dpdk_ver, _ = run(["pkg-config", "--modversion", "libdpdk"], 10)
        rc2, capd_ver, _ = run([self.capd, "--version"], 10)
        rc3, commit, _ = run(["git", "-C", REPO, "describe", "--always", "--dirty"], 10)
        tools = {t: shutil.which(t) for t in ("tcpdump", "gnuplot", "dd", "ip", "dpdk-testpmd",
                                               "dpdk-dumpcap")}
        return {
            "cpu_model": model,
            "cpu_mhz": float(mhz.group(1)) if mhz else None,
            "cpus_online": os.cpu_count(),
            "cpus_allowed": len(os.sched_getaffinity(0)),
            "virtualized": "hypervisor" in flags,
            "cpu_flags_of_note": sorted(flags & {"avx2", "avx512f", "avx512bw", "sse4_2", "bmi2",
                                                 "invariant_tsc", "constant_tsc"}),
            "memory_bytes": mem.get("MemTotal", 0) * 1024,
            "memory_available_bytes": mem.get("MemAvailable", 0) * 1024,
            "kernel": platform.release(),
            "kernel_version": platform.version(),
            "os": last_line(read_file("/etc/debian_version")) or platform.platform(),
            "hugepages": hugepage_state(),
            "loadavg_start": list(os.getloadavg()),
            "dpdk_version": dpdk_ver.strip() if rc == 0 else None,
            "capd": self.capd,
            "capd_version": capd_ver.strip() if rc2 == 0 else None,
            "git": commit.strip() if rc3 == 0 else None,
            "python": platform.python_version(),
            "tools": tools,
            "targets": {k: dict(fs_of(v), dir=v) for k, v in self.targets.items()},
            "root": os.geteuid() == 0,
        }

    def reserve_hugepages(self):
        """With --hugepages N (root): raise the 2 MiB page count to N. The
        count before is put back by cleanup(), and at exit in any case."""
        n = self.a.hugepages
        if not n:
            return None
        return self.hugepages.raise_to(n)

    # ---- dd

    def dd(self, target, flags, mib):
        d = self.targets[target]
        path = os.path.join(d, "dd.bin")
        cmd = ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}"] + flags
        env = dict(os.environ, LC_ALL="C")
        t = time.monotonic()
        rc, _, err = run(cmd, 120 + mib / 50, env=env)
        wall = time.monotonic() - t
        try:
            os.unlink(path)
        except OSError:
            pass
        res = {"target": target, "dir": d, "command": " ".join(cmd), "bytes": mib << 20}
        if rc != 0:
            res["status"] = "error: " + (last_line(err) or f"exit {rc}")
            return res
        m = re.search(r"copied, ([\d.]+) s", err)
        secs = float(m.group(1)) if m else wall
        res.update(status="ok", seconds=round(secs, 4), gbps=round((mib << 20) / secs / 1e9, 3))
        self.say(f"dd {target} {' '.join(flags) or '(buffered)'}: {res['gbps']} GB/s")
        return res

    def dd_section(self):
        mib = self.a.dd_mib
        out = []
        if "shm" in self.a.targets:
            out.append(self.dd("shm", [], mib))  # tmpfs refuses O_DIRECT
        if "disk" in self.a.targets:
            out.append(self.dd("disk", ["oflag=direct"], mib))
            out.append(self.dd("disk", [], mib))  # page cache, as capd writes
            out.append(self.dd("disk", ["conv=fdatasync"], mib))
            os.sync()
        return out

    # ---- capd runs

    def capd_run(self, source, target="shm", extra=(), workers=1, writers=1, seconds=None,
                 rx_only=False, keep_files=False):
        self.check_budget()
        seconds = seconds or self.a.point_seconds
        self.runs += 1
        stats_path = os.path.join(self.tmp, f"stats-{self.runs}.json")
        d = self.targets[target]
        cmd = [self.capd, "-i", source, "--duration", str(seconds), "--ctl", "none",
               "--stats-json", stats_path, "--workers", str(workers), "--writers", str(writers)]
        if rx_only:
            cmd.append("--rx-only")
        else:
            cmd += ["-w", os.path.join(d, "capbench.pcap")]
        cmd += list(extra)
        self.log.write("$ " + " ".join(repr(c) if " " in c else c for c in cmd) + "\n")
        t = time.monotonic()
        steal0 = steal_ticks()
        rc, _, err = run(cmd, seconds + 90)
        wall = time.monotonic() - t
        steal1 = steal_ticks()
        self.log.write(err)
        stats = None
        if os.path.exists(stats_path):
            try:
                with open(stats_path) as f:
                    stats = json.load(f)
            except (OSError, ValueError):
                stats = None
            os.unlink(stats_path)
        files = len(glob.glob(os.path.join(d, "capbench*")))
        if not keep_files:
            self.clean_dir(d)
        if target == "disk":
            os.sync()
        res = {"source": source, "target": target, "workers": workers, "writers": writers,
               "rx_only": rx_only, "seconds": seconds, "rc": rc, "wall_s": round(wall, 3)}
        if rc is None:
            res["status"] = f"error: timed out after {seconds + 90:.0f} s"
            return res
        if stats is None:
            res["status"] = ("unsupported: " if rc > 0 else "error: ") + first_error_line(err)
            if rc < 0:
                res["status"] = f"error: killed by signal {-rc}"
            return res
        # The stages, and which of them lose packets before receipt, as capd
        # lists them.
        stages = stats.get("drop_stages", [])
        drops = {st["name"]: int(stats.get("drops", {}).get(st["name"], 0)) for st in stages}
        total = sum(drops.values())
        received = int(stats.get("packets_received", 0))
        offered = received + sum(drops[st["name"]] for st in stages if st["before_receipt"])
        el = float(stats.get("elapsed_s") or seconds)
        res.update({
            "status": "ok" if rc == 0 else "error: " + first_error_line(err),
            "elapsed_s": round(el, 4),
            "hugepages": stats.get("hugepages"),
            "offered": offered,
            "received": received,
            "filtered_out": int(stats.get("packets_filtered_out", 0)),
            "written": int(stats.get("packets_written", 0)),
            "bytes_written": int(stats.get("bytes_written", 0)),
            "files": files,
            "drops": drops,
            "drops_total": total,
            "lost_inside_capd": sum(drops[st["name"]] for st in stages
                                    if not st["before_receipt"]),
            "drop_pct": {k: round(100.0 * v / offered, 4) for k, v in drops.items()}
            if offered else {},
            "offered_mpps": mpps(offered / el) if el else None,
            "rx_mpps": mpps(received / el) if el else None,
            "written_mpps": mpps(int(stats.get("packets_written", 0)) / el) if el else None,
            "write_gbps": round(int(stats.get("bytes_written", 0)) / el / 1e9, 4) if el else None,
            "max_poll_gap_us": max((float(w.get("max_poll_gap_us", 0))
                                    for w in stats.get("workers", [])), default=None),
            # --compress: input over output bytes of all writers.
            "compress_ratio": round(sum(int(w.get("bytes_in", 0)) for w in wr) /
                                    sum(int(w.get("bytes_out", 0)) for w in wr), 3)
            if (wr := [w for w in stats.get("writers", []) if w.get("compress")]) and
            sum(int(w.get("bytes_out", 0)) for w in wr) else None,
            "steal_ms": (steal1 - steal0) * 1000 // os.sysconf("SC_CLK_TCK")
            if steal0 is not None and steal1 is not None else None,
        })
        return res

    @staticmethod
    def point(res, rate):
        keys = ("status", "offered", "received", "filtered_out", "written", "drops", "drops_total",
                "lost_inside_capd", "drop_pct", "offered_mpps", "rx_mpps", "write_gbps", "elapsed_s", "hugepages",
                "max_poll_gap_us", "steal_ms", "compress_ratio")
        p = {"rate_pps": rate, "rate_mpps": mpps(rate)}
        p.update({k: res.get(k) for k in keys})
        p["lossless"] = res.get("status") == "ok" and res.get("drops_total", 1) == 0
        return p

    def search_lossless(self, size, target="shm", extra=(), workers=1, writers=1, label="",
                        max_points=None, frames=None, keep_files=False):
        """Highest paced rate of null:SIZE with zero drops (search by bisection).
        With frames=FILE the null packets carry FILE's frames; with keep_files
        every run writes into what the previous one left (a --reuse-files
        ring), and the caller cleans up."""
        max_points = self.a.max_points if max_points is None else max_points
        src = f"null:{size}" + (f",frames={frames}" if frames else "")
        res = {"size": size, "target": target, "workers": workers, "writers": writers,
               "config": label, "source": f"{src},rate=R"}
        try:
            probe = self.capd_run(src, target, extra, workers, writers,
                                  keep_files=keep_files)
        except Budget as e:
            res["status"] = str(e)
            return res
        res["saturated"] = probe
        if probe["status"] != "ok":
            res["status"] = probe["status"]
            self.say(f"lossless {label} {target} {size}B {workers}+{writers}: {probe['status']}")
            return res
        el = probe["elapsed_s"] or self.a.point_seconds
        rx_pps = probe["received"] / el
        cap = rx_pps
        if probe["written"] and probe["drops_total"]:
            cap = min(cap, probe["written"] / el)
        self.say(f"lossless {label} {target} {size}B {workers}+{writers}: unpaced "
                 f"{probe['rx_mpps']} Mpps received, {probe['written_mpps']} Mpps written, "
                 f"{probe['drops_total']} dropped")
        lo = hi = None
        best = None
        points = []
        r = round3(max(cap * 0.9, 1000))
        note = None
        for _ in range(max_points):
            try:
                run_res = self.capd_run(f"{src},rate={r}", target, extra, workers, writers,
                                        keep_files=keep_files)
            except Budget as e:
                note = str(e)
                break
            p = self.point(run_res, r)
            points.append(p)
            self.say(f"  rate {r / 1e6:.3f} Mpps: received {p['received']}, drops "
                     f"{p['drops_total']} " + ("lossless" if p["lossless"] else
                                               str({k: v for k, v in (p['drop_pct'] or {}).items()
                                                    if v})) +
                     f" (longest poll gap {p.get('max_poll_gap_us')} us, "
                     f"hypervisor steal {p.get('steal_ms')} ms)")
            if run_res["status"] != "ok":
                note = run_res["status"]
                break
            if p["lossless"]:
                lo, best = r, p
            else:
                hi = r if hi is None else min(hi, r)
            if lo and hi and hi / lo <= 1 + self.a.resolution:
                break
            if hi is None:
                if r >= rx_pps * 1.25:
                    break  # lossless above the unpaced receive rate: nothing left to find
                nxt = r * 1.5
            elif lo is None:
                nxt = r / 2
                if nxt < 1000:
                    break
            else:
                nxt = math.sqrt(lo * hi)
            nxt = round3(nxt)
            if nxt == r:
                break
            r = nxt
        # A lone clean point on a noisy machine can be luck: re-run it, and
        # when it does not repeat, step down by 15 % at most three times
        # before reporting no confirmed rate.
        unconfirmed = None
        if lo and self.a.confirm:
            unconfirmed = lo
            for _ in range(4):
                try:
                    c = self.point(self.capd_run(f"{src},rate={lo}", target, extra, workers,
                                                 writers, keep_files=keep_files), lo)
                except Budget as e:
                    note = str(e)
                    break
                c["confirmation"] = True
                points.append(c)
                if c["lossless"]:
                    best = c
                    break
                self.say(f"  rate {lo / 1e6:.3f} Mpps did not repeat without drops")
                hi = lo
                lo = round3(lo * 0.85)
                best = None
            else:
                lo = None
        if lo:
            unconfirmed = None
        points.sort(key=lambda p: p["rate_pps"])
        # Not lossless, but says where throughput ends when rare stalls (a
        # worker preempted for longer than its 4096-descriptor credit) are
        # what keeps a rate from being lossless.
        near = {}
        for pct in (0.001, 0.01, 0.1):
            ok = [p["rate_pps"] for p in points if p.get("offered") and p["status"] == "ok"
                  and 100.0 * p["drops_total"] / p["offered"] <= pct]
            near[str(pct)] = max(ok) if ok else None
        # The highest rate that lost nothing after receipt: drops there are
        # only the NIC ring's, while the worker did not poll.
        inside = [p["rate_pps"] for p in points if p.get("drops") is not None
                  and p["status"] == "ok"
                  and p.get("lost_inside_capd") == 0]
        res.update({
            "max_rate_no_drop_inside_capd_pps": max(inside) if inside else None,
            "status": "ok",
            "max_lossless_pps": lo or 0,
            "max_lossless_mpps": mpps(lo or 0),
            "lossless_found": lo is not None,
            "lowest_lossy_pps": hi,
            "unconfirmed_lossless_pps": unconfirmed,
            "max_rate_with_loss_at_most_pct": near,
            "gbps_at_max": best["write_gbps"] if best else None,
            "points": points,
            "points_above": [p for p in points if not p["lossless"] and p["rate_pps"] > (lo or 0)],
        })
        if note:
            res["note"] = note
        self.say(f"lossless {label} {target} {size}B {workers}+{writers}: max lossless "
                 f"{res['max_lossless_mpps']} Mpps; no drop inside capd up to "
                 f"{mpps(res['max_rate_no_drop_inside_capd_pps'] or 0)} Mpps")
        return res

    # ---- sections

    def lossless_section(self):
        out = []
        for target in self.a.targets:
            sizes = self.a.sizes if not self.a.quick else ([64] if target == "shm" else [1514])
            for size in sizes:
                mp = self.a.max_points if not self.a.quick else (2 if target == "shm" else 1)
                out.append(self.search_lossless(size, target, label="match-all", max_points=mp))
        return out

    def configs_section(self, lossless):
        """Every configuration on null:64,frames=PCAP (the replayed capture's
        frames at null speed, paced), plus an unpaced pcap:PCAP,loop run."""
        out = []
        configs = CONFIGS if not self.a.quick else CONFIGS[:2]
        for name, extra in configs:
            entry = {"name": name, "args": extra}
            if extra and not extra[0].startswith("--"):
                entry["expression"] = extra[0]
            if name.startswith("patterns"):
                entry["patterns"] = len(extra) // 2
            entry["null_frames_64"] = self.search_lossless(
                64, "shm", extra, label=name, frames=self.pcap,
                max_points=1 if self.a.quick else None)
            try:
                p = self.capd_run(f"pcap:{self.pcap},loop", "shm", extra)
            except Budget as e:
                p = {"status": str(e)}
            entry["pcap_loop"] = p
            st = entry["null_frames_64"].get("status", "")
            entry["status"] = p["status"] if p["status"] != "ok" else st
            if p["status"] == "ok":
                self.say(f"config {name} on pcap loop: {p['rx_mpps']} Mpps received, "
                         f"{p['written']} written, {p['filtered_out']} filtered out, "
                         f"{p['drops_total']} dropped")
            else:
                self.say(f"config {name}: {p['status']}")
            out.append(entry)
        # Each configuration against match-all on the same frames: unpaced
        # receive rate and max lossless rate.
        base = next((c for c in out if c["name"] == "match-all"), None)

        def rate(c, key):
            n = c["null_frames_64"]
            if n.get("status") != "ok":
                return None
            return n.get("saturated", {}).get("rx_mpps") if key == "unpaced" \
                else n.get("max_lossless_mpps")
        for c in out:
            for key in ("unpaced", "lossless"):
                a, b = rate(c, key), base and rate(base, key)
                c[f"{key}_ratio_to_match_all"] = round(a / b, 3) if a and b else None
            if c["name"] != "match-all":
                self.say(f"config {c['name']}: unpaced receive rate "
                         f"{c['unpaced_ratio_to_match_all']} x match-all's, max lossless "
                         f"{c['lossless_ratio_to_match_all']} x")
        return out

    # (mode, capd options, runs, whether each run starts in an empty directory)
    RING_MODES = (("new-files", [], 2, False), ("reuse-files", ["--reuse-files"], 3, False))

    def ring_modes(self, src, target, ring, seconds, record, describe, kinds=RING_MODES):
        """The -W ring written twice with a new file per rotation, then three
        times with --reuse-files into one directory (the first run fills
        it), and any other modes in kinds. record(res) is what each run
        keeps, describe(res) its line."""
        modes = []
        for mode, extra, n, fresh in kinds:
            runs = []
            for i in range(n):
                try:
                    r = self.capd_run(src, target, ring + extra, seconds=seconds,
                                      keep_files=not fresh and i < n - 1)
                except Budget as e:
                    runs.append({"status": str(e)})
                    break
                runs.append(record(r))
                self.say(f"{describe(r)}, {mode}, run {i + 1}/{n}")
            self.clean_dir(self.targets[target])
            if target == "disk":
                os.sync()
            modes.append({"mode": mode, "runs": runs})
        return modes

    def line_rate_section(self):
        """64-byte frames paced at 10 GbE line rate into a -C/-W ring on shm,
        as an appliance runs for days: first with a new file at each
        rotation, then with --reuse-files, three runs into one directory so
        that the later ones write over pages the ring already holds."""
        quick = self.a.quick
        rate = 1_000_000 if quick else 14_880_000
        seconds = 1.0 if quick else 5.0
        ring = ["-C", "1" if quick else "1000", "-W", "3"]
        src = f"null:64,rate={rate}"
        out = {"source": src, "target": "shm", "rate_pps": rate, "seconds": seconds,
               "ring": " ".join(ring)}
        out["modes"] = self.ring_modes(
            src, "shm", ring, seconds,
            lambda r: self.point(r, rate) | {"written_mpps": r.get("written_mpps"),
                                             "files": r.get("files")},
            lambda r: f"line rate: {r.get('received')} received, {r.get('written')} written, "
                      f"drops {r.get('drops')} ({r['status']})",
            # Each --preallocate run goes into an empty directory: its first
            # pass is the one the claim is for.
            self.RING_MODES + (("preallocate", ["--preallocate"], 2, True),))
        for m in out["modes"]:
            last = m["runs"][-1] if m["runs"] else {}
            m["last_run_written_of_received"] = round(last["written"] / last["received"], 4) \
                if last.get("received") else None
            m["last_run_lost_inside_capd"] = last.get("lost_inside_capd")
        if "disk" in self.a.targets:
            # 1514-byte frames unpaced into the same kind of ring on the disk:
            # bytes written by a new file per rotation against writing over
            # the ring's own files, whose pages the page cache still holds.
            disk = {"source": "null:1514", "target": "disk", "ring": " ".join(ring)}
            disk["modes"] = self.ring_modes(
                "null:1514", "disk", ring, seconds,
                lambda r: {k: r.get(k) for k in ("status", "received", "written", "write_gbps",
                                                 "files", "drops")},
                lambda r: f"disk ring 1514B: {r.get('write_gbps')} GB/s written ({r['status']})")
            disk["note"] = ("a ring smaller than the page cache: with --reuse-files the writer "
                            "overwrites cached pages, and the disk sees only what writeback "
                            "flushes, so this is not the device's sustained bandwidth")
            out["disk_1514"] = disk
            # Line rate into the disk directory with the default write path
            # (write-behind): one growing file, then the -W ring.
            d64 = {"source": src, "target": "disk", "rate_pps": rate, "seconds": seconds,
                   "runs": []}
            for label, extra in (("one file", []), ("ring " + " ".join(ring), ring)):
                for i in range(2):
                    try:
                        r = self.capd_run(src, "disk", extra, seconds=seconds)
                    except Budget as e:
                        d64["runs"].append({"status": str(e)})
                        break
                    p = self.point(r, rate) | {"layout": label, "files": r.get("files")}
                    d64["runs"].append(p)
                    self.say(f"line rate to disk, {label}: {r.get('received')} received, "
                             f"{r.get('written')} written, drops {r.get('drops')} ({r['status']})")
                    os.sync()
            out["disk_64"] = d64
        if not quick:
            # The zero-drop rate when every run writes over the warm ring:
            # one run fills it, the search starts from an unpaced probe.
            try:
                self.capd_run("null:64", "shm", ring + ["--reuse-files"], keep_files=True)
                out["sweep"] = self.search_lossless(64, "shm", ring + ["--reuse-files"],
                                                    label="reuse-ring", keep_files=True)
            except Budget as e:
                out["sweep"] = {"size": 64, "target": "shm", "status": str(e)}
            self.clean_dir(self.targets["shm"])
        out["status"] = "ok" if all(r.get("status") == "ok" for m in out["modes"]
                                    for r in m["runs"]) else "incomplete"
        return out

    def rx_only_section(self):
        out = []
        sources = [f"null:{s}" for s in (self.a.sizes if not self.a.quick else [64])]
        sources.append(f"pcap:{self.pcap},loop")
        for src in sources:
            try:
                r = self.capd_run(src, "shm", rx_only=True)
            except Budget as e:
                r = {"source": src, "status": str(e)}
            out.append(r)
            self.say(f"rx-only {src}: {r.get('rx_mpps')} Mpps ({r['status']})")
        return out

    def compress_section(self, dd):
        """--compress to the disk, where the disk is the limit: the highest
        paced rate of null:1514,frames=MIX that capd records with zero drops
        into a --direct -C 1000 -W 4 ring on the disk, per codec, as
        captured input bytes per second against dd oflag=direct to the same
        directory in the same run. MIX is bench/realmix.py's full-size mix of
        real payloads (every frame 1514 bytes, so the null source pads
        nothing), one per --compress-mix-encrypted share of TLS records of
        random bytes; without compression once (its rate does not depend on
        the bytes). --compress-padded adds the earlier case, the replayed
        capture's frames padded with zeros to 1514 bytes, labelled so."""
        ref = next((x for x in dd if x["target"] == "disk" and "oflag=direct" in x["command"]),
                   None)
        dd_gbps = ref.get("gbps") if ref else None
        out = {"dd_reference": ref and ref["command"], "dd_gbps": dd_gbps, "mixes": [],
               "runs": []}
        if "disk" not in self.targets:
            out["status"] = "skipped: no disk target"
            return out
        import realmix  # bench/, beside this script
        bodies = [g for g in self.a.compress_mix_bodies.split(",") if g]
        body_list = realmix.body_files(bodies, 1, self.a.compress_mix_bodies_mb * 1000000)
        out["mix"] = {"generator": "bench/realmix.py --data-only", "bodies": bodies,
                      "bodies_mb": self.a.compress_mix_bodies_mb, "mb": self.a.compress_mix_mb,
                      "encrypted_pcts": self.a.compress_mix_encrypted}
        ring = ["--direct", "-C", "1000", "-W", "4"]

        def one(codec, frames, label):
            extra = ring + (["--compress", codec] if codec else [])
            l = self.search_lossless(1514, "disk", extra, label=label, frames=frames)
            r = {"codec": codec or "none", "options": " ".join(extra), "status": l.get("status"),
                 "max_lossless_pps": l.get("max_lossless_pps"),
                 "max_rate_no_drop_inside_capd_pps": l.get("max_rate_no_drop_inside_capd_pps")}
            best = next((p for p in l.get("points", []) if p.get("lossless") and
                         p["rate_pps"] == l.get("max_lossless_pps")), None)
            if best:
                r["compress_ratio_at_max"] = best.get("compress_ratio")
                r["write_gbps_at_max"] = best.get("write_gbps")
            # The mix's ratio as capd compressed it, from any run (the bytes
            # are the same at every rate).
            r["mix_compress_ratio"] = next((p["compress_ratio"] for p in l.get("points", [])
                                            if p.get("compress_ratio")), None)
            # Lossless over every stage, and with no drop after receipt (a
            # paced null source's nic_imissed means the worker did not poll).
            for key, pps in (("lossless", l.get("max_lossless_pps")),
                             ("no_drop_inside_capd", l.get("max_rate_no_drop_inside_capd_pps"))):
                if pps:
                    gbps = pps * 1514 / 1e9
                    r[key + "_input_gbps"] = round(gbps, 3)
                    r[key + "_ratio_to_dd_direct"] = round(gbps / dd_gbps, 3) if dd_gbps else None
            # Where packets were lost above it, by stage.
            r["drops_above"] = [{"rate_pps": p["rate_pps"],
                                 "drops": {k: v for k, v in (p.get("drops") or {}).items() if v},
                                 "compress_ratio": p.get("compress_ratio")}
                                for p in l.get("points_above", [])]
            self.say(f"compress {label}: lossless {r.get('lossless_input_gbps')} GB/s of input "
                     f"({r.get('lossless_ratio_to_dd_direct')} x dd), ratio "
                     f"{r.get('mix_compress_ratio')}")
            return r

        first_mix = None
        # --quick: one small mix, for a well-formed JSON only.
        for pct in self.a.compress_mix_encrypted[:1 if self.a.quick else None]:
            path = os.path.join(self.tmp, f"realmix-{pct:g}.pcap")
            try:
                self.check_budget()
                comp = realmix.generate(path, realmix.default_sources(), pct,
                                        self.a.compress_mix_mb, True, 16, 1, body_list=body_list)
            except (OSError, SystemExit, Budget) as e:
                out["mixes"].append({"encrypted_pct": pct, "status": f"error: {e}"})
                continue
            assert comp["frames"] == comp["data_frames"]  # all 1514 bytes: nothing padded
            first_mix = first_mix or path
            m = {"encrypted_pct": pct, "composition": comp, "runs": []}
            for codec in ("lz4", "zstd:1"):
                try:
                    run_res = one(codec, path, f"compress {codec} realmix {pct:g}% encrypted")
                except Budget as e:
                    run_res = {"codec": codec, "status": str(e)}
                m["runs"].append(run_res)
                ratio = run_res.get("mix_compress_ratio")
                if codec == "lz4" and ratio and ratio < 1.3:
                    m["note"] = (f"this mix compresses {ratio}:1 with lz4, under 1.3: input with "
                                 f"compression exceeds the disk by about the ratio at most, so "
                                 f"1.3 x dd cannot be reached on it")
            out["mixes"].append(m)
        if first_mix:
            try:
                out["runs"].append(one(None, first_mix, "compress none realmix"))
            except Budget as e:
                out["runs"].append({"codec": "none", "status": str(e)})
        if self.a.compress_padded:
            try:
                r = one("lz4", self.pcap, "compress lz4 padded demo mix")
                r["mix"] = "null:1514,frames=" + self.pcap + ": shorter frames padded with zeros"
                out["runs"].append(r)
            except Budget as e:
                out["runs"].append({"codec": "lz4", "mix": "padded", "status": str(e)})
        out["status"] = "ok"
        return out

    def flows_section(self):
        """The flow table's cost per packet (bench/flow_table_bench, no
        EAL): parse alone, 1024 flows hot in cache, and 2^20 flows (every
        packet a miss) round robin and shuffled, with the 1 s LRU step and
        with exact LRU; each as ns/packet and as a ratio to the 1024-flow
        run of the same process."""
        exe = os.path.join(self.a.build_dir, "bench", "flow_table_bench")
        if not os.path.exists(exe):
            return {"status": f"skipped: no {exe}"}
        names = ["Parse", "Hits/1024", "Flows/1048576", "FlowsShuffled/1048576",
                 "FlowsExactLru/1048576", "FlowsShuffledExactLru/1048576"]
        rc, out, _ = run([exe, "--benchmark_format=json", "--benchmark_min_time=0.5",
                          "--benchmark_repetitions=3", "--benchmark_report_aggregates_only=true",
                          "--benchmark_filter=^(" + "|".join(names) + ")$"], timeout=300)
        if rc != 0:
            return {"status": f"flow_table_bench: exit {rc}"}
        rows = json.loads(out)["benchmarks"]
        ns = {x["run_name"]: round(1e9 / x["items_per_second"], 1)
              for x in rows if x.get("aggregate_name") == "median"}
        hot = ns.get("Hits/1024")
        return {"ns_per_packet": ns,
                "ratio_to_hits_1024": {k: round(v / hot, 2) for k, v in ns.items()} if hot else {},
                "huge_pages": any(x.get("huge_pages") == 1 for x in rows
                                  if x.get("aggregate_name") == "median"),
                "parse_and_lookup_ns_2^20_flows": ns.get("Flows/1048576"),
                "status": "ok"}

    def throughput_section(self, lossless, dd):
        out = []
        for target in self.a.targets:
            l = next((x for x in lossless if x.get("target") == target and x.get("size") == 1514
                      and x.get("workers") == 1), None)
            if target == "disk":
                ref = next((x for x in dd if x["target"] == "disk" and "oflag=direct" in
                            x["command"]), None)
            else:
                ref = next((x for x in dd if x["target"] == target), None)
            dd_gbps = ref.get("gbps") if ref else None
            entry = {"target": target, "size": 1514, "dd_reference": ref and ref["command"],
                     "dd_gbps": dd_gbps}
            if not l or l.get("status") != "ok":
                entry["status"] = (l or {}).get("status", "not measured")
                out.append(entry)
                continue
            sat = l["saturated"]
            entry.update({
                "status": "ok",
                "capture_gbps_lossless": l["gbps_at_max"],
                "capture_gbps_saturated": sat.get("write_gbps"),
                "ratio_lossless_to_dd": round(l["gbps_at_max"] / dd_gbps, 3)
                if l["gbps_at_max"] and dd_gbps else None,
                "ratio_saturated_to_dd": round(sat["write_gbps"] / dd_gbps, 3)
                if sat.get("write_gbps") and dd_gbps else None,
            })
            others = {" ".join(x["command"].split()[5:]) or "buffered": x.get("gbps")
                      for x in dd if x["target"] == target}
            entry["dd_all_gbps"] = others
            if target == "disk":
                # The same unpaced capture with O_DIRECT, and with the page
                # cache left to the kernel, against dd's O_DIRECT.
                for key, extra in (("direct", ["--direct"]),
                                   ("no_write_behind", ["--write-behind", "0"])):
                    try:
                        r = self.capd_run("null:1514", "disk", extra)
                        entry[key] = {"status": r["status"], "options": " ".join(extra),
                                      "write_gbps": r.get("write_gbps"),
                                      "ratio_to_dd": round(r["write_gbps"] / dd_gbps, 3)
                                      if r.get("write_gbps") and dd_gbps else None}
                        self.say(f"disk {' '.join(extra)} 1514B unpaced: {r.get('write_gbps')} "
                                 f"GB/s ({entry[key]['ratio_to_dd']} x dd oflag=direct)")
                    except Budget as e:
                        entry[key] = {"status": str(e)}
            out.append(entry)
        return out

    def scaling_section(self, lossless, rx_only):
        cpus = len(os.sched_getaffinity(0))
        out = []
        for w, W in ((1, 1), (2, 1), (2, 2)):
            e = {"workers": w, "writers": W, "cpus": cpus, "busy_lcores": w + W,
                 "oversubscribed": w + W > cpus}
            if e["oversubscribed"]:
                e["note"] = (f"{w + W} busy lcores on {cpus} CPUs: lcores share CPUs, so this "
                             "shows contention, not scaling")
            if (w, W) == (1, 1):
                e["lossless"] = next((x for x in lossless if x.get("target") == "shm" and
                                      x.get("size") == 64), None)
                rx = next((x for x in rx_only if x.get("source") == "null:64"), None)
            else:
                e["lossless"] = self.search_lossless(64, "shm", (), w, W, label="match-all")
                try:
                    rx = self.capd_run("null:64", "shm", (), w, W, rx_only=True)
                except Budget as ex:
                    rx = {"status": str(ex)}
            e["rx_only"] = rx
            e["max_lossless_mpps"] = (e["lossless"] or {}).get("max_lossless_mpps")
            e["rx_only_mpps"] = (rx or {}).get("rx_mpps")
            out.append(e)
        return out

    # ---- veth: tcpdump against capd

    def ns(self, ns, *cmd, timeout=20):
        return run(["ip", "netns", "exec", ns] + list(cmd), timeout)

    def sh(self, *cmd, timeout=20):
        rc, out, err = run(list(cmd), timeout)
        if rc != 0:
            raise RuntimeError(" ".join(cmd) + ": " + (last_line(err) or f"exit {rc}"))
        return out

    def veth_counter(self, ns, dev, name):
        rc, out, _ = self.ns(ns, "cat", f"/sys/class/net/{dev}/statistics/{name}")
        return int(out.strip()) if rc == 0 and out.strip().isdigit() else None

    def veth_section(self):
        if os.geteuid() != 0:
            return {"status": "not run: needs root to create network namespaces"}
        missing = [t for t in ("ip", "tcpdump") if not shutil.which(t)]
        if missing:
            return {"status": "not run: missing " + ", ".join(missing)}
        if not self.flood:
            return {"status": "not run: bench/capbench_flood not built (ninja -C BUILD)"}
        tag = str(os.getpid() % 100000)
        ns_tx, ns_rx = f"capbench-tx-{tag}", f"capbench-rx-{tag}"
        if_tx, if_rx = f"cbt{tag}", f"cbr{tag}"
        res = {"namespaces": [ns_tx, ns_rx], "interfaces": [if_tx, if_rx],
               "addresses": {"sender": VETH_TX_ADDR + "/24", "receiver": "none (frames are "
                             "addressed to " + VETH_RX_ADDR + ", a static neighbour)"},
               "frame_bytes": 64, "runs": [], "large_frames": []}
        try:
            self.netns = [ns_tx, ns_rx]
            self.sh("ip", "netns", "add", ns_tx)
            self.sh("ip", "netns", "add", ns_rx)
            self.sh("ip", "link", "add", if_tx, "type", "veth", "peer", "name", if_rx)
            self.sh("ip", "link", "set", if_tx, "netns", ns_tx)
            self.sh("ip", "link", "set", if_rx, "netns", ns_rx)
            for ns_, dev in ((ns_tx, if_tx), (ns_rx, if_rx)):
                # No IPv6 chatter (DAD, router solicitations) on the link.
                self.ns(ns_, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
                self.sh("ip", "-n", ns_, "link", "set", "lo", "up")
                self.sh("ip", "-n", ns_, "link", "set", dev, "up")
            self.sh("ip", "-n", ns_tx, "addr", "add", VETH_TX_ADDR + "/24", "dev", if_tx)
            rc, mac, _ = self.ns(ns_rx, "cat", f"/sys/class/net/{if_rx}/address")
            self.sh("ip", "-n", ns_tx, "neigh", "replace", VETH_RX_ADDR, "lladdr", mac.strip(),
                    "dev", if_tx, "nud", "permanent")
            for rate in self.a.veth_rates:
                for tool in ("tcpdump", "capd"):
                    self.check_budget(self.a.veth_seconds + 20)
                    r = self.veth_one(tool, rate, ns_tx, ns_rx, if_rx)
                    res["runs"].append(r)
                    self.say(f"veth {tool} at {rate} pps: sent {r.get('sent')}, captured "
                             f"{r.get('captured')} ({r.get('loss_pct')}% lost) {r['status']}")
            # Full-size frames into files on the disk: there the write
            # path, not the socket, decides the drops.
            if "disk" in self.a.targets and self.a.veth_large_frames:
                n, rate = self.a.veth_large_frames, self.a.veth_large_rate
                for tool, extra in (("tcpdump", ()), ("capd", ()),
                                    ("capd", ("--write-behind", "0"))):
                    self.check_budget(n / rate + 30)
                    r = self.veth_one(tool, rate, ns_tx, ns_rx, if_rx, size=1514,
                                      target="disk", extra=extra, count=n)
                    res["large_frames"].append(r)
                    self.say(f"veth 1514B at {rate} pps to disk, {tool} {' '.join(extra)}: sent "
                             f"{r.get('sent')} at {r.get('achieved_pps')} pps, captured "
                             f"{r.get('captured')} ({r.get('loss_pct')}% lost) {r['status']}")
            res["status"] = "ok"
        except Budget as e:
            res["status"] = str(e)
        except (RuntimeError, OSError, ValueError) as e:
            res["status"] = f"error: {e}"
        finally:
            self.remove_netns()
        res["summary"] = [{"rate_pps": r["rate_pps"], "tool": r["tool"],
                           "loss_pct": r.get("loss_pct"), "achieved_pps": r.get("achieved_pps")}
                          for r in res["runs"]]
        res["large_frames_summary"] = [
            {"tool": r["tool"], "options": r.get("options", ""), "frame_bytes": 1514,
             "target": "disk", "rate_pps": r["rate_pps"], "sent": r.get("sent"), "captured": r.get("captured"),
             "loss_pct": r.get("loss_pct"), "achieved_pps": r.get("achieved_pps")}
            for r in res["large_frames"]]
        return res

    def remove_netns(self):
        for ns_ in self.netns:
            run(["ip", "netns", "del", ns_], 20)
        self.netns = []

    def veth_one(self, tool, rate, ns_tx, ns_rx, if_rx, size=64, target="shm", extra=(),
                 count=None):
        secs = self.a.veth_seconds if count is None else max(count / rate, 2.0)
        count = int(rate * secs) if count is None else count
        d = os.path.join(self.targets[target], f"veth-{tool}-{rate}-{size}")
        os.makedirs(d, exist_ok=True)
        errf = open(os.path.join(d, "stderr.txt"), "w+")
        stats_path = os.path.join(d, "stats.json")
        r = {"tool": tool, "rate_pps": rate, "requested": count, "frame_bytes": size,
             "target": target, "options": " ".join(extra)}
        if tool == "tcpdump":
            cmd = ["ip", "netns", "exec", ns_rx, "tcpdump", "-i", if_rx, "-n",
                   "-w", os.path.join(d, "tcpdump.pcap")]
            ready = lambda: "listening on" in read_file(errf.name)
        else:
            cmd = ["ip", "netns", "exec", ns_rx, self.capd, "-i", f"af_packet:{if_rx}",
                   "-w", os.path.join(d, "capd.pcap"), "--ctl", "none", "--stats-json",
                   stats_path, "--duration", str(secs * 3 + 30)] + list(extra)
            ready = lambda: capdtest.READY_LINE in read_file(errf.name)
        r["command"] = " ".join(cmd[4:])
        if tool == "tcpdump":
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        else:
            # The tests' launcher; its readiness line is waited for below.
            proc = capdtest.RunningCapd(cmd[5:], netns=ns_rx, capd=self.capd,
                                        stderr_path=errf.name, new_session=True).proc
        try:
            if not wait_for(lambda: ready() or proc.poll() is not None, 30):
                r["status"] = "error: capture did not start within 30 s"
                return r
            if proc.poll() is not None:
                r["status"] = ("unsupported: " if tool == "capd" else "error: ") + \
                    first_error_line(read_file(errf.name))
                return r
            time.sleep(0.3)
            rx0 = self.veth_counter(ns_rx, if_rx, "rx_packets")
            rc, out, err = self.ns(ns_tx, self.flood, "-d", VETH_RX_ADDR, "-p", "9999", "-r",
                                   str(rate), "-n", str(count), "-t", str(secs * 2 + 2), "-s",
                                   str(size), timeout=secs * 2 + 20)
            rx1 = self.veth_counter(ns_rx, if_rx, "rx_packets")
            # Past the end of the flood, as a user would stop it: tcpdump's
            # TPACKET_V3 blocks are handed over on a timeout, and it does not
            # read a partial block once interrupted.
            time.sleep(2.0)
        finally:
            stop_process(proc, signal.SIGINT, 20)
        try:
            f = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            r["status"] = "error: sender: " + (last_line(err) or f"exit {rc}")
            return r
        r.update(sent=f["sent"], send_failed=f["failed"],
                 achieved_pps=round(f["sent"] / f["elapsed_s"]) if f["elapsed_s"] else None,
                 delivered_to_interface=(rx1 - rx0) if rx0 is not None and rx1 is not None
                 else None)
        files = sorted(glob.glob(os.path.join(d, f"{tool}.pcap*")))
        records, marked = count_marked(files)
        r.update(captured=marked, records_in_file=records, files=len(files))
        text = read_file(errf.name)
        if tool == "tcpdump":
            rep = {}
            for key, pat in (("captured", r"(\d+) packets? captured"),
                             ("received_by_filter", r"(\d+) packets? received by filter"),
                             ("dropped_by_kernel", r"(\d+) packets? dropped by kernel")):
                m = re.search(pat, text)
                rep[key] = int(m.group(1)) if m else None
            r["tool_reported"] = rep
        else:
            try:
                with open(stats_path) as sf:
                    s = json.load(sf)
                r["tool_reported"] = {"received": s.get("packets_received"),
                                      "written": s.get("packets_written"),
                                      "drops": s.get("drops")}
            except (OSError, ValueError):
                r["tool_reported"] = {"error": last_line(text)}
        r["loss_pct"] = round(100.0 * (r["sent"] - marked) / r["sent"], 4) if r["sent"] else None
        r["status"] = "ok"
        errf.close()
        shutil.rmtree(d, ignore_errors=True)
        return r

    # ---- dpdk-dumpcap attached to dpdk-testpmd

    def dumpcap_section(self, lossless):
        testpmd, dumpcap = shutil.which("dpdk-testpmd"), shutil.which("dpdk-dumpcap")
        res = {"primary": "dpdk-testpmd --forward-mode=rxonly on net_null0", "size": 64,
               "seconds": self.a.point_seconds}
        if not testpmd or not dumpcap:
            res["status"] = ("not run: dpdk-testpmd and dpdk-dumpcap are not installed "
                             "(Debian package dpdk-dev)")
            return res
        if os.geteuid() != 0:
            res["status"] = "not run: needs root (hugepages, multi-process shared memory)"
            return res
        hp = hugepage_state()
        if hp["free_bytes"] < 512 << 20:
            res["status"] = (f"not run: needs 512 MiB of free hugepages for a primary and a "
                             f"secondary process (HugePages_Free={hp['free']}; run with "
                             f"--hugepages 512 or echo 512 > /proc/sys/vm/nr_hugepages)")
            return res
        # A multi-process primary maps its pages from a hugetlbfs mount
        # (capd's --in-memory needs none, so a host may have none mounted).
        mount = self.hugetlbfs_mount()
        if not mount.get("path"):
            res["status"] = "not run: no hugetlbfs mounted and mounting one failed: " + \
                mount.get("error", "?")
            return res
        res["hugetlbfs"] = mount
        # Debian's dpdk-testpmd links some drivers directly, which register
        # mempool ops before the plugin directory is loaded; dpdk-dumpcap does
        # not, so the two processes number the ops differently and the
        # primary cannot use the secondary's pool (every packet is dropped).
        # Preloading testpmd's libraries into dumpcap gives the same order.
        rc, ldd, _ = run(["ldd", testpmd], 20)
        libs = [l.split("=>")[1].split()[0] for l in ldd.splitlines()
                if "librte_" in l and "=>" in l and "/" in l.split("=>")[1]]
        res["workaround"] = ("LD_PRELOAD of dpdk-testpmd's own DPDK libraries into dpdk-dumpcap, "
                             "so both processes register mempool ops in the same order")
        prefix = f"capbench{os.getpid()}"
        cpus = sorted(os.sched_getaffinity(0))
        lcores = ",".join(str(c) for c in cpus[:2])
        d = self.targets["shm"]
        tp_out = open(os.path.join(self.tmp, "testpmd.txt"), "w+")
        tp_cmd = [testpmd, "-l", lcores, "--file-prefix", prefix, "--no-pci", "--vdev",
                  "net_null0,size=64", "-m", "256", "--log-level=lib.*:error", "--",
                  "--forward-mode=rxonly", "--stats-period", "1", "--nb-cores", "1"]
        dc_path = os.path.join(d, "dumpcap.pcapng")
        secs = self.a.point_seconds
        dc_cmd = [dumpcap, f"--file-prefix={prefix}", "-i", "net_null0", "-w", dc_path,
                  "-a", f"duration:{max(1, int(round(secs)))}"]
        res["commands"] = [" ".join(tp_cmd), " ".join(dc_cmd)]
        res["lcores_note"] = (f"testpmd uses lcores {lcores}; dpdk-dumpcap's thread shares "
                              f"the same {len(cpus)} CPUs")
        tp = subprocess.Popen(tp_cmd, stdout=tp_out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            started = wait_for(lambda: "Rx-pps" in read_file(tp_out.name) or
                               tp.poll() is not None, 40, 0.2)
            if not started or tp.poll() is not None:
                res["status"] = "not run: dpdk-testpmd did not start: " + \
                    last_line(read_file(tp_out.name))[-300:]
                return res
            env = dict(os.environ, LD_PRELOAD=":".join(libs))
            rc, out, err = run(dc_cmd, secs + 60, env=env)
        finally:
            stop_process(tp, signal.SIGINT, 15)
            tp_out.close()
        # The running count is redrawn with backspaces.
        text = (out + err).replace("\r", "\n").replace("\b", " ")
        m = re.findall(r"received/dropped on interface '[^']*': (\d+)/(\d+)", text)
        caps = re.findall(r"Packets captured:([\d\s]+)", text)
        captured = None
        if caps:
            nums = caps[-1].split()
            captured = int(nums[-1]) if nums else None
        size = os.path.getsize(dc_path) if os.path.exists(dc_path) else 0
        try:
            os.unlink(dc_path)
        except OSError:
            pass
        pmd = read_file(tp_out.name)
        rx_pps = re.findall(r"Rx-pps:\s+(\d+)", pmd)
        if rc != 0 or captured is None:
            res["status"] = "error: dpdk-dumpcap: " + (last_line(err) or last_line(out) or
                                                      f"exit {rc}")[-300:]
            return res
        recv, drop = (int(m[-1][0]), int(m[-1][1])) if m else (None, None)
        res.update({
            "status": "ok" if captured else "failed: dpdk-dumpcap captured nothing",
            "captured": captured,
            "captured_mpps": mpps(captured / secs),
            "pdump_received": recv,
            "pdump_dropped": drop,
            "drop_pct": round(100.0 * drop / recv, 3) if recv else None,
            "file_bytes": size,
            "testpmd_rx_pps_last": int(rx_pps[-1]) if rx_pps else None,
        })
        l = next((x for x in lossless if x.get("target") == "shm" and x.get("size") == 64), None)
        if l and l.get("saturated", {}).get("status") == "ok":
            s = l["saturated"]
            res["capd_same_source"] = {
                "source": "null:64 unpaced, 1 worker + 1 writer, to /dev/shm",
                "written_mpps": s["written_mpps"], "rx_mpps": s["rx_mpps"],
                "drop_pct": round(100.0 * s["drops_total"] / s["offered"], 3)
                if s["offered"] else None,
                "max_lossless_mpps": l.get("max_lossless_mpps")}
        self.say(f"dpdk-dumpcap: captured {res['captured_mpps']} Mpps, dropped "
                 f"{res['drop_pct']}% ({res['status']})")
        return res

    # ---- plot

    def plot(self, result, png):
        gp = shutil.which("gnuplot")
        if not gp:
            return "error: gnuplot not found (Debian package gnuplot-nox)"

        def dat(name, rows):
            path = os.path.join(self.out, name)
            with open(path, "w") as f:
                for row in rows:
                    f.write(" ".join(str(c) for c in row) + "\n")
            return name

        def num(v):
            return "NaN" if v is None else v

        def q(s):
            return '"' + str(s).replace('"', "'") + '"'

        panels = []
        # 1: max lossless by frame size and target, with rx-only.
        lossless, rx = result["lossless"], result["baselines"]["rx_only"]
        rows = []
        for size in sorted({l["size"] for l in lossless}):
            vals = []
            for t in ("shm", "disk"):
                l = next((x for x in lossless if x["size"] == size and x["target"] == t), None)
                # Log scale: a zero (nothing lossless) is drawn as missing.
                vals.append(num((l.get("max_lossless_mpps") or None) if l else None))
            r = next((x for x in rx if x.get("source") == f"null:{size}"), None)
            vals.append(num((r.get("rx_mpps") or None) if r else None))
            rows.append([f'"{size} B"'] + vals)
        if rows:
            f = dat("plot-lossless.dat", rows)
            panels.append(
                "set title 'Max lossless rate, null source, 1 worker + 1 writer'\n"
                "set ylabel 'Mpps'\nset logscale y\nset yrange [0.01:*]\n"
                "set style data histograms\nset style histogram cluster gap 1\n"
                "set style fill solid 0.8 border -1\nset boxwidth 0.9\n"
                f"plot '{f}' using 2:xtic(1) title 'capd to /dev/shm', "
                f"'' using 3 title 'capd to disk', '' using 4 title 'capd --rx-only'\n"
                "unset logscale y\nset yrange [*:*]\n")
        # 2: drops against offered load, every sweep point.
        series = []
        sweeps = lossless + [c["null_frames_64"] for c in result["configs"]]
        if result.get("line_rate", {}).get("sweep"):
            sweeps.append(result["line_rate"]["sweep"])
        for i, l in enumerate(sweeps):
            pts = [(p["offered_mpps"], p["drops_total"] / p["offered"] * 100.0)
                   for p in l.get("points", []) if p.get("offered")]
            if pts:
                f = dat(f"plot-sweep-{i}.dat", sorted(pts))
                title = f"{l.get('config')} {l['size']}B {l['target']}"
                series.append(f"'{f}' using 1:($2+0.0001) with linespoints title {q(title)}")
        if series:
            panels.append(
                "set title 'Drops against offered load (paced null source)'\n"
                "set xlabel 'offered Mpps'\nset ylabel 'dropped % (all stages) + 1e-4'\n"
                "set logscale y\nset key left top\nset style data linespoints\n"
                "plot " + ", ".join(series) + "\n"
                "unset logscale y\nunset xlabel\nset key default\n")
        # 3: GB/s against dd.
        rows = []
        for x in result["dd"]:
            if x.get("gbps") is not None:
                flags = " ".join(x["command"].split()[5:]) or "buffered"
                rows.append([q(f"dd {x['target']} {flags}"), x["gbps"]])
        for t in result["throughput"]:
            if t.get("status") == "ok":
                rows.append([q(f"capd {t['target']} lossless"), num(t["capture_gbps_lossless"])])
                rows.append([q(f"capd {t['target']} saturated"),
                             num(t["capture_gbps_saturated"])])
        if rows:
            f = dat("plot-gbps.dat", rows)
            panels.append(
                "set title '1514-byte frames: capture GB/s against dd, same run'\n"
                "set yrange [0:*]\nset ylabel 'GB/s'\nset style data histograms\nset style histogram clustered\n"
                "set style fill solid 0.8 border -1\nset xtics rotate by -30\n"
                f"plot '{f}' using 2:xtic(1) notitle\nset xtics norotate\n")
        # 4: configurations.
        rows = []
        for c in result["configs"]:
            n = c["null_frames_64"].get("max_lossless_mpps") \
                if c["null_frames_64"].get("status") == "ok" else None
            p = c["pcap_loop"].get("rx_mpps") if c["pcap_loop"].get("status") == "ok" else None
            w = c["pcap_loop"].get("written_mpps") if c["pcap_loop"].get("status") == "ok" \
                else None
            rows.append([q(c["name"]), num(n), num(p), num(w)])
        rp = next((x for x in rx if x.get("source", "").startswith("pcap:")), None)
        if rp:
            rows.append([q("rx-only"), "NaN", num(rp.get("rx_mpps")), "NaN"])
        if rows:
            f = dat("plot-configs.dat", rows)
            panels.append(
                "set title 'Filter configurations (unsupported ones are empty)'\n"
                "set yrange [0:*]\nset ylabel 'Mpps'\nset style data histograms\n"
                "set style histogram cluster gap 1\nset style fill solid 0.8 border -1\n"
                "set xtics rotate by -20\n"
                f"plot '{f}' using 2:xtic(1) title 'null:64,frames= max lossless', "
                f"'' using 3 title 'pcap loop received (unpaced)', "
                f"'' using 4 title 'pcap loop written'\nset xtics norotate\n")
        # 5: veth and dpdk-dumpcap baselines.
        veth = result["baselines"].get("veth", {})
        rows = []
        for rate in sorted({r["rate_pps"] for r in veth.get("runs", [])}):
            vals = []
            for tool in ("tcpdump", "capd"):
                r = next((x for x in veth["runs"] if x["rate_pps"] == rate and
                          x["tool"] == tool and x.get("status") == "ok"), None)
                vals.append(num(100.0 - r["loss_pct"] if r and r.get("loss_pct") is not None
                                else None))
            rows.append([q(f"{rate / 1000:g}k pps")] + vals)
        large = {r["tool"]: r for r in veth.get("large_frames", [])
                 if r.get("status") == "ok" and not r.get("options")}
        if large:
            rows.append([q(f"1514B to disk, {large['capd']['rate_pps'] / 1000:g}k pps"
                           if "capd" in large else "1514B to disk")] +
                        [num(100.0 - large[t]["loss_pct"] if t in large and
                             large[t].get("loss_pct") is not None else None)
                         for t in ("tcpdump", "capd")])
        dc = result["baselines"].get("dpdk_dumpcap", {})
        if dc.get("status") == "ok" and dc.get("pdump_received"):
            cs = dc.get("capd_same_source") or {}
            rows.append([q("null 64B unpaced"), num(100.0 - dc["drop_pct"]),
                         num(100.0 - cs["drop_pct"] if cs.get("drop_pct") is not None
                             else None)])
        if rows:
            f = dat("plot-veth.dat", rows)
            panels.append(
                "set title 'Captured % of sent: veth (tcpdump vs capd af_packet), "
                "dpdk-dumpcap vs capd'\n"
                "set ylabel '% captured'\nset yrange [0:105]\nset style data histograms\n"
                "set style histogram cluster gap 1\nset style fill solid 0.8 border -1\n"
                f"plot '{f}' using 2:xtic(1) title 'tcpdump / dpdk-dumpcap', "
                f"'' using 3 title 'capd'\nset yrange [*:*]\n")
        # 6: scaling.
        rows = []
        for s in result.get("scaling", []):
            rows.append([q(f"{s['workers']}+{s['writers']}" + (" (shared CPUs)"
                                                               if s["oversubscribed"] else "")),
                         num(s.get("max_lossless_mpps")), num(s.get("rx_only_mpps"))])
        if rows:
            f = dat("plot-scaling.dat", rows)
            panels.append(
                "set title 'Workers + writers, null:64 to /dev/shm'\nset yrange [0:*]\nset ylabel 'Mpps'\n"
                "set style data histograms\nset style histogram cluster gap 1\n"
                "set style fill solid 0.8 border -1\n"
                f"plot '{f}' using 2:xtic(1) title 'max lossless', "
                f"'' using 3 title 'rx-only'\n")
        if not panels:
            panels.append("set title 'nothing measured'\nunset border\nunset tics\n"
                          "plot [0:1][0:1] -1 notitle\n")
        cols = 2 if len(panels) > 1 else 1
        rows_n = (len(panels) + cols - 1) // cols
        m = result["machine"]
        head = (f"capbench {result['mode']} {time.strftime('%Y-%m-%d %H:%M')}: "
                f"{m['cpu_model']}, {m['cpus_allowed']} CPUs, kernel {m['kernel']}, "
                f"load {m['loadavg_start'][0]:.1f}")
        script = (f"set terminal pngcairo size {800 * cols},{520 * rows_n} font 'sans,10'\n"
                  "set termoption noenhanced\n"
                  f"set output {q(os.path.basename(png))}\n"
                  "set datafile missing 'NaN'\nset grid ytics\nset key top right\n"
                  f"set multiplot layout {rows_n},{cols} title {q(head)}\n"
                  + "".join("reset\nset grid ytics\nset datafile missing 'NaN'\n" + p
                            for p in panels) + "unset multiplot\n")
        with open(os.path.join(self.out, "capbench.gp"), "w") as f:
            f.write(script)
        rc, _, err = run([gp, "capbench.gp"], 120, cwd=self.out)
        if rc != 0 or not os.path.exists(png):
            # A terminal without cairo still has libgd's png.
            script2 = script.replace("set terminal pngcairo", "set terminal png")
            with open(os.path.join(self.out, "capbench.gp"), "w") as f:
                f.write(script2)
            rc, _, err = run([gp, "capbench.gp"], 120, cwd=self.out)
        if rc != 0:
            return "error: gnuplot: " + last_line(err)
        self.log.write(err)
        return "ok"

    # ---- the run

    def go(self):
        a = self.a
        result = {"schema": SCHEMA, "mode": "quick" if a.quick else "full",
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": [sys.executable] + sys.argv,
                  "full_run_command": FULL_RUN}
        result["hugepage_reservation"] = self.reserve_hugepages()
        result["machine"] = self.machine()
        m = result["machine"]
        self.say(f"machine: {m['cpu_model']}, {m['cpus_allowed']} CPUs "
                 f"({'virtual' if m['virtualized'] else 'bare metal'}), "
                 f"{m['memory_bytes'] / 2**30:.1f} GiB, kernel {m['kernel']}, hugepages "
                 f"{m['hugepages']['free']}/{m['hugepages']['total']} free x "
                 f"{m['hugepages']['page_kb']} kB, load {m['loadavg_start']}")
        self.say(f"capd: {self.capd}; outputs: {self.targets}")
        if m["loadavg_start"][0] > m["cpus_allowed"] * 0.5:
            self.notes.append(f"load average {m['loadavg_start'][0]:.1f} on "
                              f"{m['cpus_allowed']} CPUs at start: other work shares the "
                              "CPUs, so rates here are lower and noisier than on an idle host")
        result["settings"] = {
            "point_seconds": a.point_seconds, "max_points": a.max_points,
            "resolution": a.resolution, "confirm": a.confirm, "sizes": a.sizes,
            "targets": a.targets, "pcap": self.pcap, "dd_mib": a.dd_mib,
            "veth_rates": a.veth_rates, "veth_seconds": a.veth_seconds, "budget_s": a.budget,
            "lossless_definition": "zero drops summed over every stage capd lists in "
                                   "drop_stages (the NIC's included) in a run of "
                                   "point_seconds",
        }
        result["dd"] = self.dd_section()
        result["lossless"] = self.lossless_section() if "lossless" not in a.skip else []
        result["configs"] = self.configs_section(result["lossless"]) \
            if "configs" not in a.skip else []
        result["notes"] = self.notes
        self.notes.append("configs.null_frames_64: null:64,frames=PCAP, i.e. the replayed "
                          "capture's frames cut to 64 bytes at null speed, paced; "
                          "*_ratio_to_match_all compare each configuration with match-all on "
                          "the same frames. configs.pcap_loop replays the capture itself "
                          "unpaced (libpcap reading bounds its rate), so it reports Mpps, not a "
                          "lossless rate.")
        result["line_rate"] = self.line_rate_section() if "line-rate" not in a.skip else \
            {"status": "skipped: --skip line-rate"}
        base = {"rx_only": self.rx_only_section() if "rx-only" not in a.skip else []}
        if a.quick:
            base["veth"] = {"status": "skipped: --quick"}
            base["dpdk_dumpcap"] = {"status": "skipped: --quick"}
        else:
            base["veth"] = self.veth_section() if "veth" not in a.skip else \
                {"status": "skipped: --skip veth"}
            base["dpdk_dumpcap"] = self.dumpcap_section(result["lossless"]) \
                if "dumpcap" not in a.skip else {"status": "skipped: --skip dumpcap"}
        result["baselines"] = base
        if a.quick or "scaling" in a.skip:
            result["scaling"] = []
            result["scaling_status"] = "skipped: --quick" if a.quick else "skipped: --skip"
        else:
            result["scaling"] = self.scaling_section(result["lossless"], base["rx_only"])
            result["scaling_status"] = "ok"
        # dd again at the end: the two readings bracket the capture runs.
        result["dd_end"] = self.dd_section() if not a.quick else []
        result["throughput"] = self.throughput_section(result["lossless"], result["dd"])
        if "compress" not in a.skip:
            result["compress"] = self.compress_section(result["dd"])
        if "flows" not in a.skip:
            result["flows"] = self.flows_section()
        result["machine"]["loadavg_end"] = list(os.getloadavg())
        result["capd_runs"] = self.runs
        result["errors"] = self.errors
        png = os.path.join(self.out, "capbench.png")
        result["plot"] = png
        result["wall_s"] = round(self.elapsed(), 1)
        result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        result["plot_status"] = self.plot(result, png)
        path = os.path.join(self.out, "capbench.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=2, sort_keys=False)
            f.write("\n")
        problems = validate(path, png)
        self.say(f"wrote {path} and {png} ({self.runs} capd runs)")
        for p in problems:
            self.say("problem: " + p)
        return result, problems

    def hugetlbfs_mount(self):
        """A hugetlbfs mount for 2 MiB pages: the first one in /proc/mounts,
        or /dev/hugepages mounted here (and unmounted by cleanup)."""
        for line in read_file("/proc/mounts").splitlines():
            f = line.split()
            if len(f) >= 4 and f[2] == "hugetlbfs" and ("pagesize=2M" in f[3] or
                                                        "pagesize" not in f[3]):
                return {"path": f[1], "mounted_by_capbench": False}
        path = "/dev/hugepages"
        os.makedirs(path, exist_ok=True)
        rc, _, err = run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", path], 20)
        if rc != 0:
            return {"error": last_line(err) or f"mount exit {rc}"}
        self.mounted_hugetlbfs = path
        return {"path": path, "mounted_by_capbench": True}

    def cleanup(self):
        if getattr(self, "mounted_hugetlbfs", None):
            run(["umount", self.mounted_hugetlbfs], 20)
        # After the umount: pages a hugetlbfs still held could not go.
        self.hugepages.restore()
        self.remove_netns()
        for d in self.targets.values():
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


REQUIRED = {"schema": str, "mode": str, "machine": dict, "dd": list, "lossless": list,
            "configs": list, "baselines": dict, "throughput": list, "scaling": list,
            "plot": str}


def validate(json_path, png_path):
    """Problems with the written JSON and PNG (empty list: well formed)."""
    problems = []
    try:
        with open(json_path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        return [f"{json_path}: not valid JSON: {e}"]
    for k, t in REQUIRED.items():
        if not isinstance(d.get(k), t):
            problems.append(f"{json_path}: key '{k}' missing or not {t.__name__}")
    if isinstance(d.get("machine"), dict):
        for k in ("cpu_model", "cpus_online", "memory_bytes", "kernel", "hugepages"):
            if k not in d["machine"]:
                problems.append(f"machine.{k} missing")
    for l in d.get("lossless", []):
        if "status" not in l:
            problems.append(f"lossless entry without status: {l.get('size')}")
        elif l["status"] == "ok" and not isinstance(l.get("max_lossless_pps"), int):
            problems.append(f"lossless {l.get('size')}: max_lossless_pps missing")
    lr = d.get("line_rate", {})
    if not isinstance(lr, dict) or not isinstance(lr.get("status"), str):
        problems.append("line_rate: status missing")
    for c in d.get("configs", []):
        if not isinstance(c.get("status"), str):
            problems.append(f"config {c.get('name')}: status missing")
    try:
        with open(png_path, "rb") as f:
            head = f.read(8)
        if head != PNG_MAGIC:
            problems.append(f"{png_path}: not a PNG (magic {head!r})")
        elif os.path.getsize(png_path) < 1000:
            problems.append(f"{png_path}: suspiciously small")
    except OSError as e:
        problems.append(f"{png_path}: {e}")
    return problems


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="capbench", description="Measures capd's lossless capture rate, filter cost, "
        "write throughput against dd, and baselines (capd --rx-only, tcpdump on veth, "
        "dpdk-dumpcap), and writes OUT/capbench.json and OUT/capbench.png.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: few short runs on null and pcap sources, no veth, "
                   "dumpcap or scaling; checks only that the JSON and PNG are well formed")
    p.add_argument("--out", default="capbench-out", help="output directory (default %(default)s)")
    p.add_argument("--capd", help="capd binary")
    p.add_argument("--build-dir", default=os.path.join(REPO, "build"),
                   help="meson build directory holding dataplane/capd (default %(default)s)")
    p.add_argument("--flood", help="capbench_flood binary (default: BUILD/bench/capbench_flood)")
    p.add_argument("--pcap", default=os.path.join(REPO, "tests", "data", "demo", "web-mix.pcap"),
                   help="capture replayed by pcap:FILE,loop (default %(default)s)")
    p.add_argument("--shm-dir", default="/dev/shm", help="memory-backed output directory")
    p.add_argument("--disk-dir", help="output directory on a real disk (default /var/tmp; "
                   "OUT/disk with --quick)")
    p.add_argument("--targets", default="shm,disk", help="output targets: shm,disk")
    p.add_argument("--sizes", default="64,512,1514", help="null frame sizes (default %(default)s)")
    p.add_argument("--point-seconds", type=float, help="length of every capd run (default 2, "
                   "0.5 with --quick)")
    p.add_argument("--max-points", type=int, default=8,
                   help="paced runs per lossless search, after the unpaced probe")
    p.add_argument("--resolution", type=float, default=0.05,
                   help="stop the search when the lossy/lossless rate ratio is within this")
    p.add_argument("--no-confirm", dest="confirm", action="store_false",
                   help="do not re-run the best lossless point")
    p.add_argument("--dd-mib", type=int, help="MiB per dd run (default 2048, 64 with --quick)")
    p.add_argument("--veth-rates", default="100000,300000,1000000",
                   help="paced UDP rates for tcpdump vs capd on veth, packets/s")
    p.add_argument("--veth-seconds", type=float, default=2.0, help="seconds per veth flood")
    p.add_argument("--veth-large-frames", type=int, default=2000000,
                   help="1514-byte frames sent to tcpdump and capd writing to the disk target "
                   "(0: skip)")
    p.add_argument("--veth-large-rate", type=int, default=500000,
                   help="their paced rate, packets/s (default %(default)s: 0.76 GB/s)")
    p.add_argument("--skip", default="", help="comma list of sections to skip: "
                   + ",".join(SECTIONS))
    p.add_argument("--only", help="comma list of the only sections to run")
    p.add_argument("--compress-mix-encrypted", default="0,50,80",
                   help="compress section: a bench/realmix.py mix per percent of payload in "
                   "TLS records of random bytes (default %(default)s)")
    p.add_argument("--compress-mix-bodies", default=None,
                   help="compress section: realmix --bodies globs, comma-separated ('' for the "
                   "captures' payloads alone; default the web files under /usr/share)")
    p.add_argument("--compress-mix-bodies-mb", type=float, default=16,
                   help="compress section: at most this many MB of body files (default 16)")
    p.add_argument("--compress-mix-mb", type=float, default=24,
                   help="compress section: MB of each mix (default 24; the null source keeps "
                   "one frame per mbuf, about 9000)")
    p.add_argument("--compress-padded", action="store_true",
                   help="compress section: also lz4 on the --pcap frames padded with zeros to "
                   "1514 bytes (the earlier, flattering case)")
    p.add_argument("--hugepages", type=int, default=0,
                   help="as root, raise vm.nr_hugepages to N first (capd and dpdk-dumpcap "
                   "use them; the count before is put back at the end)")
    p.add_argument("--budget", type=float,
                   help="seconds for the whole run; later sections are skipped past it "
                   "(default 2400, 100 with --quick)")
    a = p.parse_args(argv)
    a.sizes = [int(s) for s in a.sizes.split(",") if s]
    a.targets = [t for t in a.targets.split(",") if t]
    a.veth_rates = [int(float(r)) for r in a.veth_rates.split(",") if r]
    a.compress_mix_encrypted = [float(x) for x in a.compress_mix_encrypted.split(",") if x]
    if any(not 0 <= x <= 100 for x in a.compress_mix_encrypted):
        p.error("--compress-mix-encrypted: percentages from 0 to 100")
    if a.compress_mix_bodies is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import realmix
        a.compress_mix_bodies = realmix.WEB_BODIES
    a.skip = {s for s in a.skip.split(",") if s}
    if a.only:
        a.skip |= set(SECTIONS) - {s for s in a.only.split(",") if s}
    bad = a.skip - set(SECTIONS)
    if bad:
        p.error("unknown section(s): " + ", ".join(sorted(bad)))
    for t in a.targets:
        if t not in ("shm", "disk"):
            p.error(f"--targets: unknown target {t}")
    if a.quick:
        a.point_seconds = a.point_seconds or 0.5
        a.dd_mib = a.dd_mib or 64
        a.budget = a.budget or 100
        a.compress_mix_mb = min(a.compress_mix_mb, 4)
        a.compress_mix_bodies_mb = min(a.compress_mix_bodies_mb, 4)
        a.confirm = False
        a.resolution = max(a.resolution, 0.25)
        if not a.disk_dir:
            a.disk_dir = os.path.join(os.path.abspath(a.out), "disk")
    a.point_seconds = a.point_seconds or 2.0
    a.dd_mib = a.dd_mib or 2048
    a.budget = a.budget or 2400
    a.disk_dir = a.disk_dir or "/var/tmp"
    return a


def main(argv):
    a = parse_args(argv)
    hugepages.end_on_signals()
    b = Bench(a)
    try:
        _, problems = b.go()
    except KeyboardInterrupt:
        b.say("interrupted")
        return 130
    finally:
        b.cleanup()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
