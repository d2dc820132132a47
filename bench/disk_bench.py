#!/usr/bin/env python3
"""disk_bench.py: capd --compress lz4 against the disk it writes to, where
the disk is the limit.

  disk_bench.py [--build build] [--dir DIR] [--mb N] [--codec lz4] [--out FILE.json]

For each mix (flowgen IMIX: payloads zero but for a packet number, the
favourable case; 1514-byte frames of random payload: encrypted traffic, the
worst case), a pcap file of --mb MB is made in a temporary directory and
read once (so that capd reads it from the page cache), then:

- capd -i pcap:FILE -w DIR/disk-bench.pcap --compress CODEC --direct: the
  captured input bytes (bytes_received) per second of capd's own elapsed
  time (--stats-json), and its drops, which must be 0;
- the same capture without --compress (--direct): whether the source and
  the machine, not the codec or the disk, set the pace;
- dd if=/dev/zero of=DIR/disk-bench.dd bs=1M count=SIZE oflag=direct: the
  same number of bytes, uncompressed, to the same file system, the rate
  dd itself reports (what writing the capture raw could reach).

The ratio capd / dd is what compression buys in capture rate on this disk.
Both run in the same invocation, one after the other; files are removed.
DIR defaults to the current directory's file system.
"""

import argparse
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def random_1514(path, mb):
    rnd = random.Random(1)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        hdr = bytes.fromhex("0200000000010200000000020800" "450005dc000040004006000" "0c6120001c6130001")
        for i in range(mb * 1000000 // 1530):
            f.write(struct.pack("<IIII", 1767225600 + i // 100000, i % 1000000, 1514, 1514))
            f.write(hdr)
            f.write(rnd.randbytes(1514 - len(hdr)))


def dd_rate(path, size):
    mb = max(1, size >> 20)
    p = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mb}",
                        "oflag=direct"], capture_output=True, text=True, check=True)
    os.unlink(path)
    # "N bytes (...) copied, S s, R MB/s": bytes over seconds.
    m = re.search(r"(\d+) bytes.*copied, ([0-9.]+) s", p.stderr)
    return int(m.group(1)) / float(m.group(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--dir", default=".")
    ap.add_argument("--mb", type=int, default=1000)
    ap.add_argument("--codec", default="lz4")
    ap.add_argument("--out")
    a = ap.parse_args()
    capd = os.path.join(a.build, "dataplane", "capd")
    flowgen = os.path.join(a.build, "bench", "flowgen")
    tmp = tempfile.mkdtemp(prefix="disk-bench-")
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count(),
               "load": os.getloadavg(), "codec": a.codec, "dir": os.path.abspath(a.dir),
               "mixes": {}}
    mixes = {}
    imix = os.path.join(tmp, "flowgen-imix.pcap")
    subprocess.run([flowgen, "-o", imix, "--flows", "100000", "--max-bytes",
                    str(a.mb * 1000000), "--micro"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mixes["flowgen-imix"] = imix
    rnd = os.path.join(tmp, "random-1514.pcap")
    random_1514(rnd, a.mb)
    mixes["random-1514"] = rnd
    for name, path in mixes.items():
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
        runs = {}
        for label, extra in (("compress", ["--compress", a.codec]), ("raw", [])):
            out = os.path.join(a.dir, "disk-bench.pcap")
            stats = os.path.join(tmp, "stats.json")
            p = subprocess.run([capd, "-q", "-i", f"pcap:{path}", "-w", out, "--direct",
                                "--stats-json", stats] + extra, capture_output=True, text=True)
            for leaf in os.listdir(a.dir):
                if leaf.startswith("disk-bench.pcap") or leaf.startswith(".disk-bench.pcap"):
                    os.unlink(os.path.join(a.dir, leaf))
            if p.returncode != 0:
                print(f"{name}: capd: {p.stderr.strip()}", file=sys.stderr)
                break
            with open(stats) as f:
                runs[label] = json.load(f)
            os.unlink(stats)
        if len(runs) != 2:
            continue
        s = runs["compress"]
        w = s["writers"][0]
        size = s["bytes_received"]
        capd_rate = size / s["elapsed_s"]
        raw_rate = runs["raw"]["bytes_received"] / runs["raw"]["elapsed_s"]
        dd = dd_rate(os.path.join(a.dir, "disk-bench.dd"), size)
        # The uncompressed capture of the same input, --direct: whether the
        # source and the machine, not the codec or the disk, set the pace.
        m = {"bytes_received": size, "bytes_out": w["bytes_out"], "ratio": round(w["ratio"], 3),
             "elapsed_s": s["elapsed_s"], "capd_gb_per_s": round(capd_rate / 1e9, 3),
             "capd_raw_gb_per_s": round(raw_rate / 1e9, 3), "dd_gb_per_s": round(dd / 1e9, 3),
             "capd_vs_dd": round(capd_rate / dd, 3), "drops": s["drops"]["total"],
             "raw_drops": runs["raw"]["drops"]["total"],
             "packets_received": s["packets_received"], "packets_written": s["packets_written"]}
        results["mixes"][name] = m
        print(name, json.dumps(m), flush=True)
        os.unlink(path)
    os.rmdir(tmp)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
