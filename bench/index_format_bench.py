#!/usr/bin/env python3
"""index_format_bench: the index's flow section in format version 1 (plain
104-byte entries) against version 4 (compressed groups behind fences), on
the same capture files, in the same run.

  python3 bench/index_format_bench.py --build-dir build --store DIR [--repeat 3]
      [--out FILE.json]

DIR holds pcap files (e.g. from bench/flowgen, with its --summary JSON
beside each as NAME.json or sumN.json). The script hard-links them into
DIR/v1 and DIR/v4, indexes each copy with `capq --reindex --index-version
1` and with the default (4), and reports:

  size     index bytes over capture bytes, per version;
  queries  by capq over the whole store, cold (page cache dropped before
           every run: needs root) and warm (the same command just before),
           v1 and v4 alternating, the median of --repeat runs:
             flows-host   capq --flows host A   (A: a client of a small flow
                          of the first file; every file's index looked up,
                          the packets not read)
             packets-flow capq 'host A and port P' -w -  (the flow's packets)
             flows-tcp    capq --flows tcp      (every flow of every file)
           with the bytes the process read from the disk (rusage inblock;
           `capq --help` cold gives the baseline of binary and libraries)
           and whether the v1 and v4 outputs are identical.

Times are wall-clock seconds; compare v1 and v4 of the same run only.
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

HEADER = struct.Struct("<8sIIQQIIQQQQIIQQQQQQIIIIIIQ")
FIELDS = ("magic version header_bytes capture_bytes data_start format flags packets "
          "wire_bytes first_ns last_ns block_count flow_count blocks_offset flows_offset "
          "by_dst_offset postings_offset postings_count pages_offset page_count page_shift "
          "non_ip_flows block_target pages_crc header_crc reserved").split()


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def run(cmd):
    """(seconds, bytes read from the disk, sha256 of stdout, rc)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    h = hashlib.sha256()
    while True:
        b = p.stdout.read(1 << 20)
        if not b:
            break
        h.update(b)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - t0, ru.ru_inblock * 512, h.hexdigest(), p.returncode


def index_stats(d):
    cap = idx = flows = 0
    for c in sorted(glob.glob(os.path.join(d, "*.pcap"))):
        cap += os.path.getsize(c)
        ip = os.path.join(d, "." + os.path.basename(c) + ".idx")
        with open(ip, "rb") as f:
            raw = f.read()
        idx += len(raw)
        h = dict(zip(FIELDS, HEADER.unpack_from(raw)))
        flows += h["flow_count"]
    return {"capture_bytes": cap, "index_bytes": idx, "flows": flows,
            "index_pct": round(100.0 * idx / cap, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.environ.get("LINECAP_BUILD_DIR", "build"))
    ap.add_argument("--store", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    capq = os.path.join(a.build_dir, "query", "capq")
    caps = sorted(glob.glob(os.path.join(a.store, "*.pcap")))
    if not caps:
        sys.exit(f"index_format_bench: no .pcap in {a.store}")
    summary = None
    for s in sorted(glob.glob(os.path.join(a.store, "*.json"))):
        with open(s) as f:
            summary = json.load(f)
        break
    if summary is None:
        sys.exit("index_format_bench: no flowgen --summary JSON beside the files")
    flow = summary["small_tcp"]
    host, port = flow["client"], flow["client_port"]

    out = {"schema": "linecap.index_format_bench/1", "machine": os.uname().nodename,
           "cpus": os.cpu_count(), "load_at_start": os.getloadavg()[0],
           "store": a.store, "files": len(caps), "host": host, "port": port,
           "size": {}, "queries": {}}
    dirs = {}
    for v in ("1", "4"):
        d = os.path.join(a.store, "v" + v)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for c in caps:
            os.link(c, os.path.join(d, os.path.basename(c)))
        t0 = time.monotonic()
        files = sorted(glob.glob(os.path.join(d, "*.pcap")))
        subprocess.run([capq, "--reindex", "--index-version", v] + files, check=True,
                       stdout=subprocess.DEVNULL)
        st = index_stats(d)
        st["reindex_s"] = round(time.monotonic() - t0, 2)
        out["size"]["v" + v] = st
        dirs[v] = d
    queries = {
        "flows-host": lambda d: [capq, "--flows", "-r", d, "host", host],
        "packets-flow": lambda d: [capq, "-r", d, "-w", "-", "host", host, "and", "port",
                                   str(port)],
        "flows-tcp": lambda d: [capq, "--flows", "-r", d, "tcp"],
    }
    # What a cold capq reads before any index: its binary and libraries.
    base = []
    for _ in range(a.repeat):
        drop_caches()
        base.append(run([capq, "--help"])[1])
    out["cold_read_baseline_bytes"] = int(statistics.median(base))
    print("baseline cold read (capq --help)", out["cold_read_baseline_bytes"], flush=True)
    for name, cmd in queries.items():
        res = {"v1": {"cold": [], "warm": [], "cold_read": []},
               "v4": {"cold": [], "warm": [], "cold_read": []}}
        digests = {}
        for _ in range(a.repeat):
            for v in ("1", "4"):
                drop_caches()
                t, rd, dig, rc = run(cmd(dirs[v]))
                if rc != 0:
                    sys.exit(f"index_format_bench: {' '.join(cmd(dirs[v]))}: exit {rc}")
                res["v" + v]["cold"].append(t)
                res["v" + v]["cold_read"].append(rd)
                t, _, dig, _ = run(cmd(dirs[v]))
                res["v" + v]["warm"].append(t)
                digests[v] = dig
        row = {}
        for v in ("v1", "v4"):
            row[v] = {"cold_s": round(statistics.median(res[v]["cold"]), 4),
                      "warm_s": round(statistics.median(res[v]["warm"]), 4),
                      "cold_read_bytes": int(statistics.median(res[v]["cold_read"]))}
        row["same_output"] = digests["1"] == digests["4"]
        row["cold_ratio_v4_over_v1"] = round(row["v4"]["cold_s"] / row["v1"]["cold_s"], 3)
        row["warm_ratio_v4_over_v1"] = round(row["v4"]["warm_s"] / row["v1"]["warm_s"], 3)
        out["queries"][name] = row
        print(name, json.dumps(row), flush=True)
    out["load_at_end"] = os.getloadavg()[0]
    print("size", json.dumps(out["size"]))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
