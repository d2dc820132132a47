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
                              [--lr-order round-robin|scattered]
                              [--lr-directions one|both]

--line-rate runs instead the line-rate point of issue 22: null:64,flows=N
(every packet one of N IPv4/UDP flows, round robin: each packet's flow is
a miss in a table larger than the cache; with --lr-order scattered each
round after the first in another order, so that the flows' slots come at
random too, as on a real link; with --lr-directions both each packet is
its flow's reply or not, at random, so the endpoint order is a fresh guess
per packet as on a link carrying both ways) paced at RATE, 1
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

  python3 bench/flow_bench.py --time-machine [--tm-mix-mb 250] [--tm-cap 100000]
                              [--tm-sites MWN,LBNL,NERSC] [--tm-runs 3]

--time-machine holds the cutoff against the Time Machine paper (Kornexl,
Paxson, Dreger, Feldmann, Sommer, IMC 2005). For each of its sites, from
the paper's connection summaries: the share of connections larger than
20 KB and the share of bytes they carry (MWN 15 % / 87 %, LBNL 12 % / 96 %,
NERSC 14 % / 99.86 %). calibrate() finds the Pareto shape and scale (in
packets of flowgen's frame mix, the cap on flow size, --tm-cap packets,
taken into account) that give both, and the flow count whose expected size
is --tm-mix-mb; flowgen writes that mix; analyse() reads it back for the
mix's own figures and the ideal cut: per flow (both directions together)
every packet until its bytes reach the cutoff, the one that reaches it
included, and TCP SYN, FIN and RST after it. capd then runs with
--flow-cutoff 20k and 10k on it (a table of at least twice the flows, so
no flow is evicted; evictions reported), and its written packets are
compared with the ideal ones, frame by frame. --tm-runs mixes (seeds) a
site, for the spread a heavy tail gives a few hundred MB; each mix is
removed before the next is made.
"""

import argparse
import hashlib
import json
import math
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


# The Time Machine paper's sites (IMC 2005, section 3, from a week of
# connection summaries each): share of connections larger than 20 KB, share
# of all bytes those connections carry, and by what factor halving the
# cutoff to 10 KB reduced the buffer its simulation needed.
TM_SITES = {"MWN": (0.15, 0.87, 1.50), "LBNL": (0.12, 0.96, 1.44),
            "NERSC": (0.14, 0.9986, 1.40)}
TM_SEEDS = {"MWN": 22, "LBNL": 23, "NERSC": 24}

IMIX = (60,) * 7 + (572,) * 4 + (1514,)  # flowgen's frame sizes, drawn per packet


def flow_kinds(ipv6_pct=20, udp_pct=30, vlan_pct=10):
    """(weight, udp, frame mean, frame variance, handshake frame) for each
    kind of flowgen flow: the IMIX frames grow to the headers where those
    are longer than 60 bytes; TCP's first three packets are headers only."""
    out = []
    for v6 in (0, 1):
        for udp in (0, 1):
            for tags in (0, 1, 2):
                w = ((ipv6_pct if v6 else 100 - ipv6_pct) / 100
                     * (udp_pct if udp else 100 - udp_pct) / 100
                     * (1 - vlan_pct / 100, vlan_pct / 100 * 0.9, vlan_pct / 100 * 0.1)[tags])
                hdr = 14 + 4 * tags + (40 if v6 else 20) + (8 if udp else 20)
                sizes = [max(x, hdr, 60) for x in IMIX]
                m = sum(sizes) / len(sizes)
                out.append((w, udp, m, sum((x - m) ** 2 for x in sizes) / len(sizes),
                            max(hdr, 60)))
    return out


class SizeModel:
    """Expected figures of a flowgen mix whose flows have min(max(floor(X),
    1), cap) packets, X Pareto(scale, shape): the share of flows whose bytes
    exceed `cutoff`, the share of bytes they carry, and the mean bytes a
    flow. Flows of fewer than n0 packets are summed exactly over their
    packet count, each count's bytes taken as normal (a sum of independent
    frames); longer ones are all above the cutoff and integrated."""

    def __init__(self, cutoff, n0=None):
        self.cutoff = cutoff
        self.kinds = flow_kinds()
        self.n0 = n0 or int(4 * cutoff / min(m for _, _, m, _, _ in self.kinds)) + 8
        self.rows = [(0.0, 0.0, 0.0)]
        for n in range(1, self.n0):
            pa = ba = bb = 0.0
            for w, udp, m, var, hs in self.kinds:
                k = 0 if udp else min(n, 3)
                mean, sd = k * hs + (n - k) * m, math.sqrt((n - k) * var)
                if sd == 0:
                    pr, above = (1.0, mean) if mean > cutoff else (0.0, 0.0)
                else:
                    z = (cutoff - mean) / sd
                    pr = 0.5 * math.erfc(z / math.sqrt(2))
                    above = mean * pr + sd * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
                pa, ba, bb = pa + w * pr, ba + w * above, bb + w * (mean - above)
            self.rows.append((pa, ba, bb))
        self.frame = sum(w * m for w, _, m, _, _ in self.kinds)
        self.handshake_less = sum(w * 3 * (m - hs) for w, udp, m, _, hs in self.kinds if not udp)

    def stats(self, shape, scale, cap):
        def tail(y):  # P(flow of at least y packets), y >= 2
            return 1.0 if y <= scale else (scale / y) ** shape
        p = ba = bb = 0.0
        for n in range(1, min(self.n0, cap + 1)):
            pn = (1.0 if n == 1 else tail(n)) - (tail(n + 1) if n < cap else 0.0)
            p, ba, bb = p + pn * self.rows[n][0], ba + pn * self.rows[n][1], \
                bb + pn * self.rows[n][2]
        if cap >= self.n0:
            n0, pt, pc = self.n0, tail(self.n0), tail(cap)
            if abs(shape - 1) < 1e-9:
                integ = scale * math.log(cap / n0)
            else:
                integ = shape * scale ** shape * (n0 ** (1 - shape) - cap ** (1 - shape)) / \
                    (shape - 1)
            # Below the cap floor(X) averages X - 1/2; at the cap it is the cap.
            packets = integ - 0.5 * (pt - pc) + cap * pc
            p += pt
            ba += packets * self.frame - pt * self.handshake_less
        return p, ba / (ba + bb), ba + bb


def calibrate(flows_above, bytes_above, cap, cutoff=20000, model=None):
    """(shape, scale in packets, (share of flows above, share of bytes,
    mean bytes a flow) expected) of the flowgen mix that has the two shares
    at `cutoff`, flows capped at `cap` packets. For a fixed share of flows
    above, a smaller shape puts more bytes in the large flows: a bisection
    on the shape, each step solving the scale for the share of flows."""
    m = model or SizeModel(cutoff)

    def scale_for(shape):
        lo, hi = 0.001, cutoff / 50.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if m.stats(shape, mid, cap)[0] < flows_above else (lo, mid)
        return (lo + hi) / 2
    lo, hi = 0.1, 3.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if m.stats(mid, scale_for(mid), cap)[1] > bytes_above else (lo, mid)
    shape = (lo + hi) / 2
    scale = scale_for(shape)
    got = m.stats(shape, scale, cap)
    if abs(got[0] - flows_above) > 1e-3 or abs(got[1] - bytes_above) > 1e-4:
        raise ValueError(f"no Pareto mix with flows capped at {cap} packets has "
                         f"{flows_above:.2%} of its flows above {cutoff} bytes carrying "
                         f"{bytes_above:.2%} of the bytes (closest: {got[0]:.2%}, {got[1]:.2%}); "
                         "raise the cap")
    return shape, scale, got


def pcap_records(path):
    """(wire length, frame) of each record of a pcap file, in order."""
    with open(path, "rb") as f:
        data = f.read()
    off = 24
    while off + 16 <= len(data):
        incl, orig = struct.unpack_from("<II", data, off + 8)
        yield orig, data[off + 16:off + 16 + incl]
        off += 16 + incl


def flow_of(frame):
    """(key, TCP flags or None) of an Ethernet frame, the key as capd's flow
    table makes it: VLAN ids, IP protocol, both endpoints in either order;
    None for a frame that is not IP."""
    off, vids = 12, []
    et = struct.unpack_from("!H", frame, off)[0]
    while et in (0x8100, 0x88a8) and len(vids) < 2:
        vids.append(struct.unpack_from("!H", frame, off + 2)[0] & 0xfff)
        off += 4
        et = struct.unpack_from("!H", frame, off)[0]
    off += 2
    if et == 0x0800:
        proto, a, b, l4 = frame[off + 9], frame[off + 12:off + 16], frame[off + 16:off + 20], \
            off + (frame[off] & 15) * 4
    elif et == 0x86dd:
        proto, a, b, l4 = frame[off + 6], frame[off + 8:off + 24], frame[off + 24:off + 40], \
            off + 40
    else:
        return None, None
    pa, pb = struct.unpack_from("!HH", frame, l4) if proto in (6, 17) else (0, 0)
    key = (tuple(vids), proto, frozenset(((a, pa), (b, pb))))
    return key, (frame[l4 + 13] if proto == 6 else None)


def analyse(path, cutoffs, big=20000, cap=None):
    """The mix's own figures and, for each cutoff, the ideal cut: packets
    and wire bytes kept, and a digest of the kept frames in order."""
    seen = {}  # flow -> bytes so far
    flow_packets = {}
    kept = {c: [0, 0, hashlib.sha256()] for c in cutoffs}
    packets = total = 0
    for wire, frame in pcap_records(path):
        key, flags = flow_of(frame)
        before = seen.get(key, 0)
        always = flags is not None and flags & 0x07  # FIN, SYN, RST
        for c in cutoffs:
            if key is None or before < c or always:
                k = kept[c]
                k[0] += 1
                k[1] += wire
                k[2].update(struct.pack("<I", wire) + frame)
        if key is not None:
            seen[key] = before + wire
            flow_packets[key] = flow_packets.get(key, 0) + 1
        packets += 1
        total += wire
    above = [b for b in seen.values() if b > big]
    at_cap = [seen[k] for k, n in flow_packets.items() if cap and n >= cap]
    return {
        "flows": len(seen), "packets": packets, "wire_bytes": total,
        "flows_above_20k": len(above), "share_of_flows_above_20k": len(above) / len(seen),
        "share_of_bytes_in_them": sum(above) / total,
        "largest_flow_bytes": max(seen.values()),
        "flows_at_the_cap": len(at_cap), "share_of_bytes_in_flows_at_the_cap": sum(at_cap) / total,
        "ideal": {c: {"packets": k[0], "bytes": k[1], "digest": k[2].hexdigest()}
                  for c, k in kept.items()}}


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
    src = f"null:64,flows={n}" + (",order=scattered" if a.lr_order == "scattered" else "")
    src += ",directions=both" if a.lr_directions == "both" else ""
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
                 "--benchmark_filter=Parse|Flows/1048576|FlowsSlotStage/1048576|FlowsScattered|"
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


def tm_run(a, site, seed, shape, scale, flows):
    """One calibrated mix: its own figures, the ideal cut and capd's at 20k
    and 10k. The mix is removed afterwards."""
    b, d = a.build_dir, a.dir
    mix = os.path.join(d, f"tm-{site}.pcap")
    gen = [os.path.join(b, "bench", "flowgen"), "-o", mix, "--flows", flows,
           "--flow-shape", f"{shape:.6f}", "--flow-scale", f"{scale:.6f}",
           "--max-flow-packets", a.tm_cap, "--seed", seed,
           "--max-bytes", int(2 * a.tm_mix_mb * 1e6), "--summary", mix + ".json"]
    run(gen)
    with open(mix + ".json") as f:
        summary = json.load(f)
    mine = analyse(mix, (20000, 10000), cap=a.tm_cap)
    r = {"seed": seed, "flowgen": " ".join(map(str, gen[1:])).replace(d + "/", ""),
         "cut_by_max_bytes": summary["cut_by_max_bytes"],
         "mix": {k: v for k, v in mine.items() if k != "ideal"}}
    for c, name in ((20000, "20k"), (10000, "10k")):
        wdir = os.path.join(d, f"tm-out-{name}")
        os.makedirs(wdir, exist_ok=True)
        s = capd(b, ["-i", f"pcap:{mix}", "-w", os.path.join(wdir, "cut.pcap"),
                     "--flow-cutoff", name, "--flow-table", max(1 << 16, 2 * flows)],
                 os.path.join(d, f"tm-{name}.json"))
        h, pk, by = hashlib.sha256(), 0, 0
        for fn in sorted(os.listdir(wdir)):
            for wire, frame in pcap_records(os.path.join(wdir, fn)):
                h.update(struct.pack("<I", wire) + frame)
                pk, by = pk + 1, by + wire
        shutil.rmtree(wdir)
        f, ideal = s["flows"], mine["ideal"][c]
        r[name] = {
            "ideal_fraction_of_bytes": ideal["bytes"] / mine["wire_bytes"],
            "ideal_fraction_of_packets": ideal["packets"] / mine["packets"],
            "capd_fraction_of_bytes": (s["bytes_received"] - f["cut_off_bytes"])
            / s["bytes_received"],
            "capd_fraction_of_packets": s["packets_written"] / s["packets_received"],
            "capd_packets_received": s["packets_received"],
            "capd_packets_written": s["packets_written"], "file_packets": pk,
            "file_wire_bytes": by, "ideal_packets": ideal["packets"],
            "ideal_wire_bytes": ideal["bytes"],
            "file_equals_ideal": h.hexdigest() == ideal["digest"],
            "flows_created": f["created"], "flows_evicted": f["evicted"],
            "flows_expired": f["expired"], "bucket_full": f["bucket_full"],
            "drops": s["drops"]["total"]}
    r["bytes_kept_20k_over_10k"] = r["20k"]["capd_fraction_of_bytes"] / \
        r["10k"]["capd_fraction_of_bytes"]
    for n in (mix, mix + ".json"):
        os.unlink(n)
    m = r["mix"]
    print(f"{site} seed {seed}: {m['flows']} flows, {m['wire_bytes'] / 1e6:.0f} MB, "
          f"{m['share_of_flows_above_20k']:.1%} above 20 kB carrying "
          f"{m['share_of_bytes_in_them']:.2%}; 20k keeps {r['20k']['capd_fraction_of_bytes']:.2%} "
          f"(ideal {r['20k']['ideal_fraction_of_bytes']:.2%}), 10k "
          f"{r['10k']['capd_fraction_of_bytes']:.2%}; files equal the ideal: "
          f"{r['20k']['file_equals_ideal'] and r['10k']['file_equals_ideal']}; evicted "
          f"{r['20k']['flows_evicted'] + r['10k']['flows_evicted']}", file=sys.stderr)
    return r


def time_machine(a, out):
    """The cutoff on mixes calibrated to the Time Machine paper's sites,
    --tm-runs seeds each."""
    model = SizeModel(20000)
    res = out["time_machine"] = {"cap_packets": a.tm_cap, "mix_mb": a.tm_mix_mb, "sites": {}}
    for site in filter(None, a.tm_sites.split(",")):
        p_target, q_target, paper_ratio = TM_SITES[site]
        try:
            shape, scale, (p_exp, q_exp, mean) = calibrate(p_target, q_target, a.tm_cap,
                                                           model=model)
        except ValueError as e:
            sys.exit(f"flow_bench: {site}: {e}")
        flows = max(100, round(a.tm_mix_mb * 1e6 / mean))
        runs = [tm_run(a, site, TM_SEEDS[site] + 1000 * i, shape, scale, flows)
                for i in range(a.tm_runs)]

        def span(get):
            v = [get(r) for r in runs]
            return {"mean": sum(v) / len(v), "min": min(v), "max": max(v)}
        res["sites"][site] = {
            "paper": {"share_of_flows_above_20k": p_target, "share_of_bytes_in_them": q_target,
                      "buffer_20k_over_10k": paper_ratio},
            "calibration": {"shape": round(shape, 6), "scale_packets": round(scale, 6),
                            "flows": flows, "expected_share_of_flows_above_20k": round(p_exp, 4),
                            "expected_share_of_bytes_in_them": round(q_exp, 5),
                            "expected_mean_flow_bytes": round(mean)},
            "share_of_flows_above_20k": span(lambda r: r["mix"]["share_of_flows_above_20k"]),
            "share_of_bytes_in_them": span(lambda r: r["mix"]["share_of_bytes_in_them"]),
            "mix_mb": span(lambda r: r["mix"]["wire_bytes"] / 1e6),
            "share_of_bytes_in_flows_at_the_cap":
                span(lambda r: r["mix"]["share_of_bytes_in_flows_at_the_cap"]),
            "kept_20k_bytes": span(lambda r: r["20k"]["capd_fraction_of_bytes"]),
            "kept_20k_packets": span(lambda r: r["20k"]["capd_fraction_of_packets"]),
            "kept_10k_bytes": span(lambda r: r["10k"]["capd_fraction_of_bytes"]),
            "kept_10k_packets": span(lambda r: r["10k"]["capd_fraction_of_packets"]),
            "bytes_kept_20k_over_10k": span(lambda r: r["bytes_kept_20k_over_10k"]),
            "every_file_equals_the_ideal": all(r[c]["file_equals_ideal"]
                                               for r in runs for c in ("20k", "10k")),
            "flows_evicted": sum(r[c]["flows_evicted"] for r in runs for c in ("20k", "10k")),
            "any_mix_cut_by_max_bytes": any(r["cut_by_max_bytes"] for r in runs),
            "runs": runs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--dir", default="/dev/shm/flow-bench")
    ap.add_argument("--flows", type=int, default=200000)
    ap.add_argument("--flow-scale", type=float, default=1)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--line-rate", action="store_true", help="the line-rate point only")
    ap.add_argument("--lr-flows", type=int, default=1 << 20)
    ap.add_argument("--lr-order", choices=("round-robin", "scattered"), default="round-robin",
                    help="the null source's flow order (README, null:...,order=)")
    ap.add_argument("--lr-directions", choices=("one", "both"), default="one",
                    help="one way, or each packet its flow's reply at random (directions=)")
    ap.add_argument("--rate", default="14.88M")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--sweep-rates", default="10M,7M,5M,3M,2M,1M", help="'' for none")
    ap.add_argument("--sweep-seconds", type=float, default=2)
    ap.add_argument("--baseline-build", default="",
                    help="another build whose capd and flow_table_bench run too, for before/after")
    ap.add_argument("--time-machine", action="store_true",
                    help="the cutoff on mixes calibrated to the Time Machine paper's sites only")
    ap.add_argument("--tm-mix-mb", type=float, default=250,
                    help="expected size of each calibrated mix (flowgen stops at twice it)")
    ap.add_argument("--tm-cap", type=int, default=100000, help="flowgen's cap on a flow, packets")
    ap.add_argument("--tm-sites", default="MWN,LBNL,NERSC")
    ap.add_argument("--tm-runs", type=int, default=3, help="mixes (seeds) per site")
    ap.add_argument("--hugepages", type=int, default=0,
                    help="as root, raise vm.nr_hugepages to N for the runs (put back "
                    "afterwards)")
    a = ap.parse_args()
    b, d = a.build_dir, a.dir
    os.makedirs(d, exist_ok=True)
    out = {"machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                       "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                                    if l.startswith("model name")), "")}}
    if a.time_machine:
        try:
            time_machine(a, out)
        finally:
            if not a.keep:
                shutil.rmtree(d, ignore_errors=True)
        print(json.dumps(out, indent=2))
        return
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
