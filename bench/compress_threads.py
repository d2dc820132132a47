#!/usr/bin/env python3
"""compress_threads.py: capd --compress with --compress-threads 0, 1, 2 on
the same input, alternated in one run.

  compress_threads.py [--build build] [--mix FILE.pcap] [--mb N]
                      [--codecs lz4,zstd] [--threads 0,1,2] [--seconds S]
                      [--rounds R] [--dir /dev/shm] [--out FILE.json]

capd replays --mix (default: bench/realmix.py --data-only --encrypted 0,
--mb N, made here) from a `pcap:FILE,loop` source, unpaced, for --seconds
into a `-C 256 -W 2` ring in --dir (default /dev/shm: no disk in the way),
so the writer is the limit: the rate it writes is the input bytes per
second written (packets_written x the mix's mean record), the rest the
workers count as ring_full. Per run: that rate, the drops by stage, and
the CPU seconds each thread used (the worker and the writer are DPDK
lcores, rte-worker-N; the helpers capd-zW-K), read from /proc just
before capd stops. Every round runs each thread count
once, so a slow moment of the shared machine falls on all of them.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid):
    """{thread name: CPU seconds} of a process's threads (names summed)."""
    out = {}
    d = f"/proc/{pid}/task"
    for tid in os.listdir(d):
        try:
            with open(f"{d}/{tid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def mean_record(path):
    """The mean bytes of a pcap file's records, header included."""
    size = os.path.getsize(path) - 24
    with open(path, "rb") as f:
        f.seek(24)
        n = 0
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            caplen = int.from_bytes(h[8:12], "little")
            f.seek(caplen, 1)
            n += 1
    return size / n


def one_run(capd, mix, codec, threads, seconds, outdir):
    d = tempfile.mkdtemp(dir=outdir, prefix="ct-")
    stats = os.path.join(d, "summary.json")
    cmd = [capd, "-q", "--ctl", "none", "-i", f"pcap:{mix},loop", "-w",
           os.path.join(d, "cap.pcap"), "-C", "256", "-W", "2", "--compress", codec,
           "--compress-threads", str(threads), "--duration", str(seconds),
           "--stats-json", stats]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(seconds - 0.3)
    cpu = thread_cpu(p.pid) if p.poll() is None else {}
    _, err = p.communicate(timeout=seconds + 60)
    with open(stats) as f:
        s = json.load(f)
    shutil.rmtree(d)
    helpers = sum(v for k, v in cpu.items() if k.startswith("capd-z"))
    return {"rc": p.returncode, "stderr": err.decode("utf-8", "replace").strip(),
            "packets_written": s["packets_written"], "drops": s["drops"],
            "threads_cpu": cpu, "helpers_cpu_s": round(helpers, 2),
            "ratio": s["writers"][0].get("ratio")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--mix")
    ap.add_argument("--mb", type=float, default=256)
    ap.add_argument("--codecs", default="lz4,zstd")
    ap.add_argument("--threads", default="0,1,2")
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--out")
    a = ap.parse_args()
    capd = os.path.join(a.build, "dataplane", "capd")
    tmp = None
    mix = a.mix
    if not mix:
        tmp = tempfile.mkdtemp(prefix="ct-mix-")
        mix = os.path.join(tmp, "realmix.pcap")
        sys.path.insert(0, HERE)
        import realmix
        subprocess.run([sys.executable, os.path.join(HERE, "realmix.py"), "-o", mix,
                        "--encrypted", "0", "--mb", str(a.mb), "--data-only", "--bodies",
                        realmix.WEB_BODIES], check=True, stdout=subprocess.DEVNULL)
    rec = mean_record(mix)
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count(),
               "load_before": os.getloadavg(), "mix": os.path.basename(mix),
               "mean_record": rec, "runs": []}
    print("round codec threads in_GB/s ratio ring_full helpers_cpu_s threads_cpu")
    for rnd in range(a.rounds):
        for codec in a.codecs.split(","):
            for n in [int(x) for x in a.threads.split(",")]:
                r = one_run(capd, mix, codec, n, a.seconds, a.dir)
                r.update(round=rnd, codec=codec, threads=n,
                         in_gb_per_s=round(r["packets_written"] * rec / a.seconds / 1e9, 3))
                results["runs"].append(r)
                print(rnd, codec, n, r["in_gb_per_s"], r["ratio"] and round(r["ratio"], 2),
                      r["drops"].get("ring_full"), r["helpers_cpu_s"],
                      {k: round(v, 1) for k, v in r["threads_cpu"].items() if v >= 0.1},
                      r["stderr"][:200], flush=True)
    results["load_after"] = os.getloadavg()
    if tmp:
        shutil.rmtree(tmp)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
