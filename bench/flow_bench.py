#!/usr/bin/env python3
"""flow_bench: what the flow table (--flow-cutoff, --dedup) does to a
heavy-tailed mix, and what it costs per packet.

  python3 bench/flow_bench.py [--build-dir build] [--dir /dev/shm/flow-bench]
                              [--flows 200000] [--flow-scale 1] [--keep]

1. bench/flowgen writes the mix: Pareto flow sizes (shape 1.2: heavy-tailed,
   as measured flow sizes are, with a finite mean), IMIX frames; see
   flowgen.c. capd reads it with --flow-cutoff 20k; the bytes written (wire
   bytes of the kept packets) as a fraction of all bytes.
2. The same mix with every packet twice, the copy 2 us later (a SPAN port
   that delivers both directions' copies): capd --dedup drops every copy,
   and also the mix's own equal packets (flowgen's 60-byte frames are
   zeros, so two in a row of one flow can be equal), counted first.
3. bench/flow_table_bench: ns/packet of parse + lookup + verdict for 1 K,
   64 K and 1 M flows, and with every packet evicting.
Prints one JSON object. Output files are removed unless --keep.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, timeout=600):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def double(src, dst, delay_ns=2000):
    """Every record of a nanosecond pcap twice, the copy delay_ns later."""
    with open(src, "rb") as f, open(dst, "wb") as o:
        hdr = f.read(24)
        o.write(hdr)
        while True:
            rh = f.read(16)
            if len(rh) < 16:
                break
            sec, frac, caplen, wirelen = struct.unpack("<IIII", rh)
            data = f.read(caplen)
            o.write(rh + data)
            t = sec * 10**9 + frac + delay_ns
            o.write(struct.pack("<IIII", t // 10**9, t % 10**9, caplen, wirelen) + data)


def capd(build, args, stats):
    run([os.path.join(build, "dataplane", "capd"), "-q", "--no-index", "--stats-json", stats]
        + args)
    with open(stats) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--dir", default="/dev/shm/flow-bench")
    ap.add_argument("--flows", type=int, default=200000)
    ap.add_argument("--flow-scale", type=float, default=1)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    b, d = a.build_dir, a.dir
    os.makedirs(d, exist_ok=True)
    out = {"machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                       "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                    if l.startswith("model name")), "")}}
    mix = os.path.join(d, "mix.pcap")
    run([os.path.join(b, "bench", "flowgen"), "-o", mix, "--flows", a.flows, "--flow-scale",
         a.flow_scale, "--seed", 7, "--summary", os.path.join(d, "mix.json")])
    s = capd(b, ["-i", f"pcap:{mix}", "-w", os.path.join(d, "cut.pcap"), "--flow-cutoff", "20k",
                 "--flow-table", 1 << 20], os.path.join(d, "cut.json"))
    f = s["flows"]
    out["cutoff_20k"] = {
        "flows": f["created"], "packets": s["packets_received"], "bytes": s["bytes_received"],
        "packets_cut_off": f["cut_off_packets"], "bytes_cut_off": f["cut_off_bytes"],
        "fraction_of_bytes_written": 1 - f["cut_off_bytes"] / s["bytes_received"],
        "fraction_of_packets_written": s["packets_written"] / s["packets_received"]}
    # The mix's own duplicates: flowgen's 60-byte frames have no room for
    # the packet number, so two of them in a row in one flow can be equal.
    s = capd(b, ["-i", f"pcap:{mix}", "-w", os.path.join(d, "dedup0.pcap"), "--dedup",
                 "--flow-table", 1 << 20], os.path.join(d, "dedup0.json"))
    own = s["packets_duplicate"]
    twice = os.path.join(d, "twice.pcap")
    double(mix, twice)
    s = capd(b, ["-i", f"pcap:{twice}", "-w", os.path.join(d, "dedup.pcap"), "--dedup",
                 "--flow-table", 1 << 20], os.path.join(d, "dedup.json"))
    out["dedup_twice"] = {"received": s["packets_received"], "written": s["packets_written"],
                          "duplicates": s["packets_duplicate"],
                          "duplicates_in_the_mix_itself": own,
                          "copies_dropped_beyond_the_mix_own":
                              s["packets_duplicate"] - s["packets_received"] // 2}
    p = run([os.path.join(b, "bench", "flow_table_bench"), "--benchmark_format=json",
             "--benchmark_min_time=0.5", "--benchmark_repetitions=3",
             "--benchmark_report_aggregates_only=true"])
    bench = json.loads(p.stdout)
    out["flow_table_ns_per_packet"] = {
        x["run_name"]: round(1e9 / x["items_per_second"], 1)
        for x in bench["benchmarks"] if x.get("aggregate_name") == "median"}
    print(json.dumps(out, indent=2))
    if not a.keep:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
