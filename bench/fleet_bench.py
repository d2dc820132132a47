#!/usr/bin/env python3
"""The fleet catalogue's numbers: what one host sends, and how a one-flow
lookup in a catalogue of many hosts compares with asking every host.

  sudo python3 bench/fleet_bench.py [--build DIR] [--flows N] [--hosts H,H...] [--rows-per-host R]
                                    [--budget N]

1. Load per host. flowgen writes a mix (--flows flows, 60 s); capd replays it
   from pcap: into 60 MB files, once without and once with --catalog to a
   local two-shard ClickHouse (scripts/fleet.sh clickhouse-start). Printed:
   flow rows per packet and per file, bytes per flow row on the shards'
   disks (system.parts), and from them the rows/s and bytes/day one host
   sends at 10 GbE of this mix (its mean frame size + 20 bytes of preamble
   and gap per frame), with one file a minute; and capd's rates and drop
   counters with and without publishing (the same run, a ratio). A third
   run publishes with --catalog-flow-budget (--budget, default 4096; 0
   skips it): its rows per file, bytes per row on disk, and the load at
   10 GbE with one file a minute (at most the budget's rows a file), its
   wall-clock ratio and drops. --hosts "" skips part 2.
2. Scale. For each H of --hosts (default 10,100): H hosts x R flows each
   are generated into the two shards (INSERT ... SELECT from numbers(),
   through the Distributed table, two rows a flow, one under each endpoint
   as capd stores them, plus the file rows), then `capq --fleet --flows host
   A` is timed for A = one flow's lower endpoint and A = its higher one,
   5 runs each, median; against it, a fan-out without a catalogue is
   simulated as H requests to hosts each answering from its own index: the
   time of one local `capq -r FILE --flows host A` on a file of this mix,
   times H / 8 (eight requests in flight; the connection and TLS set-up
   not counted, so the simulation favours the fan-out). Extrapolated to
   1000 hosts linearly through the first and last H measured (the lookup
   reads the granules of one address; what grows with the hosts is the
   parts and the per-shard overhead), the fan-out in proportion to hosts.

Print the machine next to the numbers; this VM is shared and noisy.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ch(base, sql, timeout=600):
    # insert_distributed_sync: an INSERT through the Distributed table
    # returns once the shards hold the rows (as capd's publisher asks), so
    # what is counted and looked up next is all there.
    req = urllib.request.Request(f"http://127.0.0.1:{base}/?insert_distributed_sync=1",
                                 data=sql.encode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        sys.exit(f"fleet_bench: ClickHouse: {e.read().decode().strip()[:300]}")


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kw)
    if p.returncode != 0:
        sys.exit(f"fleet_bench: {' '.join(cmd)}: {p.stderr.strip()}")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--flows", type=int, default=200000)
    ap.add_argument("--hosts", default="10,100", help="host counts to simulate, comma-separated")
    ap.add_argument("--rows-per-host", type=int, default=100000)
    ap.add_argument("--port", type=int, default=28123)
    ap.add_argument("--budget", type=int, default=4096)
    a = ap.parse_args()
    capd = os.path.join(a.build, "dataplane", "capd")
    capq = os.path.join(a.build, "query", "capq")
    flowgen = os.path.join(a.build, "bench", "flowgen")
    tmp = tempfile.mkdtemp(prefix="fleet-bench-")
    env = dict(os.environ, LINECAP_CH_PORT=str(a.port))
    fleet = ["sh", os.path.join(REPO, "scripts", "fleet.sh")]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.release()}; shared with other builds, noisy")
    try:
        run(fleet + ["clickhouse-start", os.path.join(tmp, "fleet"), a.build], env=env)
        mix = os.path.join(tmp, "mix.pcap")
        run([flowgen, "-o", mix, "--flows", str(a.flows), "--duration", "60"])

        # 1. Load per host.
        res = {}
        disk_of = {}
        modes = ("plain", "catalog") + (("budget",) if a.budget else ())
        for mode in modes:
            d = os.path.join(tmp, mode)
            os.makedirs(d)
            js = os.path.join(tmp, mode + ".json")
            cmd = [capd, "-q", "-i", "pcap:" + mix, "-w", os.path.join(d, "cap.pcap"), "-C", "60",
                   "--stats-json", js]
            if mode != "plain":
                cmd += ["--catalog", f"http://127.0.0.1:{a.port}", "--catalog-host", "bench"]
            if mode == "budget":
                cmd += ["--catalog-flow-budget", str(a.budget)]
            t0 = time.monotonic()
            run(cmd)
            wall = time.monotonic() - t0
            with open(js) as f:
                res[mode] = json.load(f)
            res[mode]["wall"] = wall
            if mode != "plain":
                # The rows on the shards' disks after this run, then none.
                for p in (a.port, a.port + 10):
                    ch(p, "OPTIMIZE TABLE linecap_flows_local FINAL")
                disk_of[mode] = [sum(int(ch(p, f"SELECT {q} FROM system.parts WHERE active AND "
                                             "table = 'linecap_flows_local'").strip() or 0)
                                     for p in (a.port, a.port + 10))
                                 for q in ("sum(bytes_on_disk)", "sum(rows)")]
                if mode == "catalog" and a.budget:
                    for p in (a.port, a.port + 10):
                        ch(p, "TRUNCATE TABLE linecap_flows_local")
        s = res["catalog"]
        pk = s["packets_written"]
        c = s["catalog"]
        # The flows the catalogue should get: every file's index, counted
        # locally (one record per flow per file), so that a send that did
        # not finish by exit does not shrink the load figures.
        pdir = os.path.join(tmp, "plain")
        rows = sum(len(run([capq, "-r", os.path.join(pdir, f), "--flows"]).stdout.splitlines()) - 1
                   for f in os.listdir(pdir) if not f.startswith("."))
        files = len([f for f in os.listdir(pdir) if not f.startswith(".")])
        print(f"capd --catalog at exit: {c['files']} files and {c['flows']} flow records sent, "
              f"{c['spool_rows']} records left in the spool, {c['dropped_rows']} dropped at the "
              f"spool's limit, {c['send_errors']} send errors "
              f"({c['last_error'] or 'none'})")
        disk = disk_of["catalog"][0]
        disk = disk * rows / max(c["flows"], 1)  # per flow, over the flows sent
        mean_frame = s["bytes_received"] / pk
        pps = 10e9 / 8 / (mean_frame + 24)  # + FCS-less preamble, gap and FCS
        # Rows per file: the flows active in a file; at one file a minute the
        # rows a minute are the flows of a minute of this mix.
        trace_s = 60.0
        rows_per_s_trace = rows / trace_s
        scale = pps / (pk / trace_s)
        print(f"mix: {pk} packets, mean frame {mean_frame:.0f} B, {files} files, {rows} flow rows "
              f"({rows / pk:.3f} per packet), {disk / max(rows, 1):.1f} bytes per flow on disk "
              "(its two rows)")
        print(f"10 GbE of this mix: {pps / 1e6:.2f} Mpps; with -G 60 about "
              f"{rows_per_s_trace * scale:,.0f} flow records/s (two rows each) "
              f"(the trace's {rows_per_s_trace:,.0f}/s scaled by the packet rate), "
              f"{rows_per_s_trace * scale * 86400 * disk / max(rows, 1) / 1e9:.1f} GB/day per host "
              "in ClickHouse")
        if a.budget:
            b = res["budget"]
            bc = b["catalog"]
            bdisk, bstored = disk_of["budget"]
            per_file = bc["flows"] / max(bc["files"], 1)
            # At 10 GbE a minute's file has far more flows than the budget
            # (the unbudgeted figure above): about the budget's rows a file.
            unb_per_min = rows_per_s_trace * scale * 60
            at10 = min(unb_per_min, a.budget) / 60
            print(f"with --catalog-flow-budget {a.budget}: {bc['flows']} records sent for "
                  f"{bc['files']} closed files and {bc['live_snapshots']} snapshots of open ones "
                  f"({per_file:.0f} a closed file with its snapshots, {bc['aggregate_rows']} "
                  f"aggregates, {bc['budget_files']} files or snapshots over the budget), {bstored} rows "
                  f"stored, {bdisk / max(bstored, 1):.1f} bytes per row on disk; at 10 GbE with "
                  f"-G 60: about {at10:,.0f} records/s, "
                  f"{at10 * 86400 * bdisk / max(bc['flows'], 1) / 1e9:.2f} GB/day per host "
                  f"(unbudgeted: {rows_per_s_trace * scale:,.0f}/s)")
        for mode in modes:
            r = res[mode]
            print(f"capd {mode}: {r['packets_written'] / r['wall'] / 1e6:.2f} Mpps wall "
                  f"({r['wall']:.2f} s), drops {r['drops']['total']}")
        for mode in modes[1:]:
            print(f"publishing cost ({mode}): wall ratio "
                  f"{res[mode]['wall'] / res['plain']['wall']:.2f} "
                  "(includes the exit's final send), drops equal: "
                  f"{res[mode]['drops']['total'] == res['plain']['drops']['total']}, "
                  f"files from memory {res[mode]['catalog']['files_from_memory']}, "
                  f"read back {res[mode]['catalog']['files_read_back']}")

        # 2. Scale: H hosts x R flows, for each H asked (e.g. 10,100).
        one = sorted(f for f in os.listdir(os.path.join(tmp, "plain")) if not f.startswith("."))[0]
        local = []
        for _ in range(5):
            t0 = time.monotonic()
            run([capq, "-r", os.path.join(tmp, "plain", one), "--flows", "host", "198.18.3.7"])
            local.append(time.monotonic() - t0)
        per_host = statistics.median(local)
        measured = []
        for hosts in [int(h) for h in a.hosts.split(",") if h]:
            for p in (a.port, a.port + 10):
                ch(p, "TRUNCATE TABLE linecap_flows_local")
                ch(p, "TRUNCATE TABLE linecap_files_local")
            n = hosts * a.rows_per_host
            # 1440 files a host (one a minute for a day): a block of numbers
            # gives each host its flows of one file. Each flow is two rows,
            # one under each endpoint (storage/catalog.hh); both endpoints
            # vary with the flow.
            block = hosts * max(1, a.rows_per_host // 1440)
            src = "toFixedString(reinterpretAsString(toUInt32(number * 2654435761 % 4294967296)), 4)"
            dst = "toFixedString(reinterpretAsString(toUInt32(number * 40503 % 4294967296 + 7)), 4)"
            t0 = time.monotonic()
            ch(a.port, f"""INSERT INTO linecap_flows (host, path, file_id, addr, side, key, src, dst,
                sport, dport, proto, ip_version, vlan, first_ns, last_ns, packets, bytes)
                SELECT concat('sim', toString(number % {hosts})),
                concat('/data/f', toString(intDiv(number, {block}))), 1,
                toFixedString(unhex(concat(hex(side = 0 ? {src} : {dst}), '000000000000000000000000')), 16),
                arrayJoin([0, 1]) AS side,
                toFixedString(unhex(concat(hex({src}), '000000000000000000000000', hex({dst}),
                    '000000000000000000000000000000000000000000000000000801000e001400020406060000000000000000')), 64),
                toFixedString(unhex(concat(hex({src}), '000000000000000000000000')), 16),
                toFixedString(unhex(concat(hex({dst}), '000000000000000000000000')), 16),
                40000, 443, 6, 4, 0,
                1796500000000000000 + number * 864000, 1796500000000000000 + number * 864000 + 1000000,
                10, 5000 FROM numbers({n})""")
            ch(a.port, f"""INSERT INTO linecap_files (host, serve, path, file_id, gone, first_ns, last_ns,
                packets, bytes, writer, published_ns)
                SELECT concat('sim', toString(number % {hosts})), '', concat('/data/f', toString(intDiv(number, {block}))),
                1, 0, 1, 2, 1, 1, 0, 1796500000000000000 FROM numbers({n}) WHERE number % {block} < {hosts}""")
            gen = time.monotonic() - t0
            stored = sum(int(ch(p, "SELECT count() FROM linecap_flows_local").strip())
                         for p in (a.port, a.port + 10))
            print(f"catalogue: {hosts} hosts x {a.rows_per_host} flows = {n:,} flows, {stored:,} rows "
                  f"(one per endpoint), generated in {gen:.1f} s")
            # One flow's two endpoints: the flow number 12345's lower and
            # higher address.
            row = 12345
            ends = {"lower": (row * 2654435761) % 4294967296, "higher": (row * 40503 + 7) % 4294967296}
            looks = {}
            for side, v in ends.items():
                addr = ".".join(str(b) for b in v.to_bytes(4, "little"))
                times = []
                for _ in range(5):
                    t0 = time.monotonic()
                    out = run([capq, "--fleet", f"http://127.0.0.1:{a.port + 10}", "--flows", "host",
                               addr]).stdout
                    times.append(time.monotonic() - t0)
                looks[side] = statistics.median(times)
                hits = max(0, len(out.splitlines()) - 1)
                if hits < 1:
                    sys.exit(f"fleet_bench: the lookup of {addr} found no flow")
                print(f"  one-flow lookup by its {side} endpoint {addr} ({hits} flows found): "
                      f"{looks[side] * 1000:.0f} ms median")
            look = max(looks.values())
            fan = per_host * hosts / 8
            print(f"  simulated fan-out to {hosts} hosts: {fan * 1000:.0f} ms ({per_host * 1000:.1f} ms "
                  f"per host, 8 in flight); ratio {fan / look:.1f}x against the slower lookup")
            measured.append((hosts, look))
        if len(measured) >= 2:
            (h0, t0_), (h1, t1_) = measured[0], measured[-1]
            # A negative slope is noise (the key range read does not shrink
            # with more hosts): then no growth is assumed.
            slope = max(0.0, (t1_ - t0_) / (h1 - h0))
            at1000 = t1_ + slope * (1000 - h1)
            print(f"extrapolated to 1000 hosts (linear through {h0} and {h1} hosts, "
                  f"{slope * 1000:.2f} ms per host): lookup about {at1000 * 1000:.0f} ms, "
                  f"fan-out {per_host * 1000 / 8 * 1000:.0f} ms")
    finally:
        subprocess.run(fleet + ["clickhouse-stop", os.path.join(tmp, "fleet")], env=env,
                       timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
