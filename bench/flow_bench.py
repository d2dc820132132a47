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

  python3 bench/flow_bench.py --line-rate [--hugepages 1536] [--seconds 5]
                              [--rate 14.88M] [--lr-flows 1048576]

--line-rate runs instead the line-rate point of issue 22: null:64,flows=N
(every packet one of N IPv4/UDP flows, round robin: each packet's flow is
a miss in a table larger than the cache, the worst case) paced at RATE, 1
worker + 1 writer into a --preallocate -C 1000 -W 3 ring on /dev/shm, with
and without --flow-cutoff 20k --flow-table 2^21; then 2 workers; then
lower rates with the table on, down to the first with no drop at all. For
each run: received, written, cut off, drops per stage (nic_imissed before
receipt), and each worker's busy ns per packet (--stats-json; turns in
which it lost its CPU counted apart as stalled, and its mean burst: under
32 the worker kept up and its ns/packet is only the time between arrivals,
so the same source also runs unpaced, every burst full, for the worker's
cost with and without the table). Before them, --rx-only on
plain null:64 and on null:64,flows=N prices the source's rewrite; after
them bench/flow_table_bench at 2^20 flows (round robin and shuffled, with
the 1 s LRU step and with exact LRU; RandomLines/1-3, the same lines from
memory with no table code, is their floor; Worker/1048576/7/0 - /6/0,
table_in_worker, what the table adds to the worker's other work in the
bench, the figure to hold against capd's pair), and for each capd run the flows that
found their bucket full and whether the table got huge pages. As root,
--hugepages N raises vm.nr_hugepages for the runs (never lowers it) and
puts the old value back however the bench ends (bench/hugepages.py). --baseline-build DIR (another build, e.g. of an earlier commit) also
runs its capd with and without the table, and its flow_table_bench, in the
same run: before/after on the same machine state.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
import hugepages  # noqa: E402


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


def steal_ticks():
    """Time the hypervisor took from this VM's CPUs (/proc/stat), in ticks."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def line_rate_run(b, d, source, extra, seconds, workers=1, rx_only=False):
    """One capd run; the numbers of issue 22's line-rate point."""
    stats = os.path.join(d, "lr.json")
    cmd = [os.path.join(b, "dataplane", "capd"), "-q", "--no-index", "--ctl", "none",
           "-i", source, "--duration", seconds, "--workers", workers, "--stats-json", stats]
    if rx_only:
        cmd.append("--rx-only")
    else:
        cmd += ["--preallocate", "-C", "1000", "-W", "3", "-w", os.path.join(d, "lr.pcap")]
    steal0, load0 = steal_ticks(), os.getloadavg()[0]
    run(cmd + list(extra), timeout=seconds + 300)
    steal = (steal_ticks() - steal0) * 1000 // os.sysconf("SC_CLK_TCK")
    with open(stats) as f:
        s = json.load(f)
    for n in os.listdir(d):
        if n.startswith("lr"):
            os.unlink(os.path.join(d, n))
    el = s["elapsed_s"]
    drops = {k: v for k, v in s["drops"].items() if k != "total"}
    inside = {k: v for k, v in drops.items() if not k.startswith("nic_")}
    f = s.get("flows", {})
    return {
        "source": source, "options": " ".join(map(str, extra)), "workers": workers,
        "rx_only": rx_only, "hugepages": s.get("hugepages"), "elapsed_s": round(el, 3),
        "received": s["packets_received"], "written": s["packets_written"],
        "rx_mpps": round(s["packets_received"] / el / 1e6, 3),
        "offered_mpps": round((s["packets_received"] + drops.get("nic_imissed", 0)) / el / 1e6,
                              3),
        "cut_off_packets": f.get("cut_off_packets", 0), "cut_off_bytes": f.get("cut_off_bytes", 0),
        "flows_created": f.get("created", 0), "flows_evicted": f.get("evicted", 0),
        "flows_bucket_full": f.get("bucket_full", 0),
        "flow_tables_on_huge_pages": f"{f.get('tables_on_huge_pages', 0)} of {f.get('tables', 0)}",
        "drops": drops, "drops_inside_capd": sum(inside.values()),
        "nic_imissed": drops.get("nic_imissed", 0),
        "worker_busy_ns_per_packet": [round(w["busy_ns_per_packet"], 1) for w in s["workers"]],
        # Under 32 the worker kept up and its ns/packet is the arrival
        # interval, not its cost (DESIGN.md, the worker's cost per packet).
        "worker_packets_per_turn": [round(w.get("packets_per_turn", 0), 1) for w in s["workers"]],
        "worker_stalled_s": [round(w["stalled_ns"] / 1e9, 3) for w in s["workers"]],
        "worker_stalled_turns": [w["stalled_turns"] for w in s["workers"]],
        "max_poll_gap_us": max(w["max_poll_gap_us"] for w in s["workers"]),
        "steal_ms": steal, "loadavg_1m_before": load0}


def line_rate(a, out):
    b, d = a.build_dir, a.dir
    n, sec = a.lr_flows, a.seconds
    table = ["--flow-cutoff", "20k", "--flow-table", max(1 << 21, 2 * n)]
    src = f"null:64,flows={n}"
    res = out["line_rate"] = {"flows": n, "rate": a.rate, "seconds": sec,
                              "ring": "--preallocate -C 1000 -W 3 on /dev/shm"}

    def note(r, label):
        print(f"{label}: {r['received']} received, {r['written']} written, "
              f"{r['cut_off_packets']} cut off, inside capd {r['drops_inside_capd']}, "
              f"nic_imissed {r['nic_imissed']}, worker ns/packet "
              f"{r['worker_busy_ns_per_packet']} at {r['worker_packets_per_turn']} a turn, "
              f"stalled {r['worker_stalled_s']} s",
              file=sys.stderr)
        return r

    # The source's rewrite against the plain null rx, in the same run.
    plain = note(line_rate_run(b, d, "null:64", [], sec, rx_only=True), "rx-only null:64")
    flows = note(line_rate_run(b, d, src, [], sec, rx_only=True), f"rx-only {src}")
    res["rx_only"] = {"null:64": plain, src: flows,
                      "rewrite_ns_per_packet": round(flows["worker_busy_ns_per_packet"][0]
                                                     - plain["worker_busy_ns_per_packet"][0], 1)}
    paced = f"{src},rate={a.rate}"
    runs = res["runs"] = []
    runs.append(note(line_rate_run(b, d, paced, [], sec), "1 worker, no flow table"))
    runs.append(note(line_rate_run(b, d, paced, table, sec), "1 worker, --flow-cutoff 20k"))
    runs.append(note(line_rate_run(b, d, paced, table, sec, workers=2),
                     "2 workers, --flow-cutoff 20k"))
    no_table, with_table = runs[0], runs[1]
    res["worker_ns_per_packet"] = {
        "without_flow_table": no_table["worker_busy_ns_per_packet"][0],
        "with_flow_table": with_table["worker_busy_ns_per_packet"][0]}
    # The worker's cost: the same source unpaced, every burst full (paced,
    # a worker that keeps up shows the arrival interval instead).
    full = res["full_bursts"] = {
        "without_flow_table": note(line_rate_run(b, d, src, [], sec),
                                   "unpaced, 1 worker, no flow table"),
        "with_flow_table": note(line_rate_run(b, d, src, table, sec),
                                "unpaced, 1 worker, --flow-cutoff 20k")}
    res["worker_cost_ns_per_packet"] = {
        k: v["worker_busy_ns_per_packet"][0] for k, v in full.items()}
    if a.baseline_build:
        base = res["baseline"] = {"build": a.baseline_build, "runs": []}
        # Paced (the figure at the arrival interval), then unpaced (the cost).
        for source, how, key in ((paced, "", "worker_ns_per_packet"),
                                 (src, "unpaced, ", "worker_cost_ns_per_packet")):
            pair = [note(line_rate_run(a.baseline_build, d, source, extra, sec),
                         f"baseline, {how}1 worker, {label}")
                    for extra, label in (([], "no flow table"), (table, "--flow-cutoff 20k"))]
            base["runs"] += pair
            base[key] = {"without_flow_table": pair[0]["worker_busy_ns_per_packet"][0],
                         "with_flow_table": pair[1]["worker_busy_ns_per_packet"][0]}
    # The highest rate with no drop at all (nic_imissed included), table on.
    sweep = res["zero_drop_sweep"] = []
    for rate in filter(None, a.sweep_rates.split(",")):
        r = note(line_rate_run(b, d, f"{src},rate={rate}", table, a.sweep_seconds),
                 f"sweep {rate}")
        sweep.append(dict(r, rate=rate))
        if sum(r["drops"].values()) == 0:
            res["highest_zero_drop_rate"] = rate
            break
    def table_bench(build):
        p = run([os.path.join(build, "bench", "flow_table_bench"), "--benchmark_format=json",
                 "--benchmark_filter=Parse|Flows/1048576|FlowsSlotStage/1048576|"
                 "FlowsSlotAhead/1048576|"
                 "FlowsShuffled/1048576|FlowsExactLru/1048576|FlowsShuffledExactLru/1048576|"
                 "RandomLines|Worker/1048576/[167]/0$",
                 "--benchmark_min_time=0.5", "--benchmark_repetitions=3",
                 "--benchmark_report_aggregates_only=true"])
        r = {x["run_name"]: round(1e9 / x["items_per_second"], 1)
             for x in json.loads(p.stdout)["benchmarks"] if x.get("aggregate_name") == "median"}
        # What the table adds inside the worker's other work: the figure
        # to hold against capd's with and without the table.
        w = "Worker/1048576/"
        if w + "7/0" in r and w + "6/0" in r:
            r["table_in_worker"] = round(r[w + "7/0"] - r[w + "6/0"], 1)
        return r

    res["flow_table_bench_ns_per_packet"] = table_bench(b)
    if a.baseline_build:
        res["baseline"]["flow_table_bench_ns_per_packet"] = table_bench(a.baseline_build)
    out["machine"]["loadavg_end"] = os.getloadavg()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--dir", default="/dev/shm/flow-bench")
    ap.add_argument("--flows", type=int, default=200000)
    ap.add_argument("--flow-scale", type=float, default=1)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--line-rate", action="store_true", help="the line-rate point only")
    ap.add_argument("--lr-flows", type=int, default=1 << 20)
    ap.add_argument("--rate", default="14.88M")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--sweep-rates", default="10M,7M,5M,3M,2M,1M", help="'' for none")
    ap.add_argument("--sweep-seconds", type=float, default=2)
    ap.add_argument("--baseline-build", default="",
                    help="another build whose capd and flow_table_bench run too, for before/after")
    ap.add_argument("--hugepages", type=int, default=0,
                    help="as root, raise vm.nr_hugepages to N for the runs (put back "
                    "afterwards)")
    a = ap.parse_args()
    b, d = a.build_dir, a.dir
    os.makedirs(d, exist_ok=True)
    out = {"machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                       "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                    if l.startswith("model name")), "")}}
    if a.line_rate:
        # Put back by restore(), at exit in any case, and on SIGTERM or SIGHUP.
        hugepages.end_on_signals()
        reservation = hugepages.Reservation("flow_bench")
        try:
            if a.hugepages:
                out["hugepage_reservation"] = reservation.raise_to(a.hugepages)
            line_rate(a, out)
        finally:
            reservation.restore()
            if not a.keep:
                shutil.rmtree(d, ignore_errors=True)
        print(json.dumps(out, indent=2))
        return
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
