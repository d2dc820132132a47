#!/usr/bin/env python3
"""compress_bench.py: capd --compress's codecs per writer core against the
codecs' own command-line tools on the same bytes, in the same run, and the
compression ratio per codec for several traffic mixes.

  compress_bench.py [--build build] [--out FILE.json] [--seconds S]
                    [--corpus DIR] [--mb N] [--sweep]

  compress_bench.py ... [--mix-encrypted 0,50,80] [--mix-bodies GLOBS]
                    [--mix-bodies-mb N]

The realistic mixes first: bench/realmix.py --data-only, 1514-byte frames
of real payloads (captured TCP streams and web files from /usr/share, see
its header), one per --mix-encrypted percent of payload in TLS records of
random bytes ("realmix-enc50" and so on); the codecs' tools are timed on
them too. Then the other mixes: the demo mix
(tests/data/demo/web-mix.pcap), bench/flowgen with all frames 1514 bytes and with its IMIX (payloads zero but for a packet number:
they compress far better than real traffic), 64-byte frames (flowgen
--frame-size 60), the tcpdump test corpus (native-order pcap files only),
and 1514-byte frames of random payload (encrypted traffic: the worst case).
The tools: `lz4 -1 -c` and `zstd -1 -T1 -c` from the page cache to
/dev/null, best of 3; compress_bench best of 3 runs of --seconds each.

--sweep: instead, --compress-block from 64K to 4M on the flowgen 1514 and
IMIX mixes and random payloads, lz4 and zstd -1: speed, ratio, and the time
to decompress one block (what capq pays per block a query needs).

--threads 1,2: instead, the codec path of capd's --compress-threads alone:
lz4 and zstd -1 over the same 256K blocks of realmix (0 % encrypted) and
the demo mix on 1 thread and on 2 (each with its own contexts, blocks
dealt round robin), the counts alternated three times in one run; the
input GB/s of all threads together, and the ratio of each count to 1.
"""

import argparse
import glob
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def tool_rate(cmd, path, size):
    best = 0.0
    for _ in range(3):
        t0 = time.monotonic()
        with open(os.devnull, "wb") as null:
            subprocess.run(cmd + [path], stdout=null, check=True)
        best = max(best, size / (time.monotonic() - t0))
    return best


def random_1514(path, mb):
    rnd = random.Random(1)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        n = mb * 1000000 // 1530
        hdr = bytes.fromhex("020000000001020000000002080045000 5dc000040004006000 0c6120001c6130001".replace(" ", ""))
        for i in range(n):
            f.write(struct.pack("<IIII", 1767225600 + i // 100000, i % 1000000, 1514, 1514))
            f.write(hdr)
            f.write(rnd.randbytes(1514 - len(hdr)))


SWEEP_BLOCKS = [64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20]


def sweep(a, bench, flowgen, tmp):
    """--compress-block from 64K to 4M on the flowgen 1514 and IMIX mixes and
    random payloads: per block size and codec, input GB/s, ratio, and the
    time to decompress one block (capq's cost per block a query needs).
    All in one run, so the sizes compare with each other."""
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count(),
               "load": os.getloadavg(), "sweep": {}}
    mixes = {}
    for name, extra in (("flowgen-1514", ["--frame-size", "1514"]), ("flowgen-imix", [])):
        out = os.path.join(tmp, name + ".pcap")
        subprocess.run([flowgen, "-o", out, "--flows", "100000", "--max-bytes",
                        str(a.mb * 1000000), "--micro"] + extra, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mixes[name] = out
    rnd = os.path.join(tmp, "random-1514.pcap")
    random_1514(rnd, min(a.mb, 64))
    mixes["random-1514"] = rnd
    print("mix block codec gb_per_s ratio read_block_us")
    for name, path in mixes.items():
        rows = []
        for block in SWEEP_BLOCKS:
            p = subprocess.run([bench, "--seconds", a.seconds, "--block", str(block),
                                "--codecs", "lz4,zstd:1", path],
                               capture_output=True, text=True, check=True)
            for l in p.stdout.splitlines():
                r = json.loads(l)
                rows.append(r)
                print(name, block >> 10, r["codec"], r["gb_per_s"], r["ratio"],
                      r["read_block_us"], flush=True)
        results["sweep"][name] = rows
        os.unlink(path)
    os.rmdir(tmp)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


def threads_sweep(a, bench, tmp):
    """--threads: compress_bench --threads N for each N, alternated, on
    realmix (no encrypted payload) and the demo mix."""
    counts = [int(x) for x in a.threads.split(",") if x]
    sys.path.insert(0, HERE)
    import realmix
    body_list = realmix.body_files(realmix.WEB_BODIES.split(","), 1, a.mix_bodies_mb * 1000000)
    mix = os.path.join(tmp, "realmix-enc0.pcap")
    realmix.generate(mix, realmix.default_sources(), 0.0, a.mb, True, 16, 1,
                     body_list=body_list)
    mixes = {"realmix-enc0": mix,
             "demo": os.path.join(REPO, "tests", "data", "demo", "web-mix.pcap")}
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count(),
               "load_before": os.getloadavg(), "threads": {}}
    print("mix codec threads round gb_per_s ratio_to_1_thread")
    for name, path in mixes.items():
        rates = {}
        for rnd in range(3):
            for n in counts:
                p = subprocess.run([bench, "--seconds", a.seconds, "--threads", str(n),
                                    "--codecs", "lz4,zstd:1", path],
                                   capture_output=True, text=True, check=True)
                for l in p.stdout.splitlines():
                    r = json.loads(l)
                    rates.setdefault((r["codec"], n), []).append(r["gb_per_s"])
                    base = rates.get((r["codec"], counts[0]), [r["gb_per_s"]])[-1]
                    print(name, r["codec"], n, rnd, r["gb_per_s"],
                          round(r["gb_per_s"] / base, 2), flush=True)
        results["threads"][name] = {f"{c}/{n}": v for (c, n), v in rates.items()}
    results["load_after"] = os.getloadavg()
    os.unlink(mix)
    os.rmdir(tmp)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--out")
    ap.add_argument("--seconds", default="1")
    ap.add_argument("--corpus", default="/work/shared/corpus")
    ap.add_argument("--mb", type=int, default=256, help="MB of each generated mix")
    ap.add_argument("--mix-encrypted", default="0,50,80",
                    help="a realmix per percent of payload encrypted (default %(default)s)")
    ap.add_argument("--mix-bodies", default=None,
                    help="realmix --bodies globs, comma-separated ('' for the captures' "
                         "payloads alone; default the web files under /usr/share)")
    ap.add_argument("--mix-bodies-mb", type=float, default=16,
                    help="at most this many MB of body files (default 16)")
    ap.add_argument("--sweep", action="store_true",
                    help="only the block size sweep (--compress-block 64K..4M)")
    ap.add_argument("--threads", default=None,
                    help="only the helper-thread sweep: compress_bench --threads N for each "
                         "N of this list (e.g. 1,2)")
    a = ap.parse_args()
    bench = os.path.join(a.build, "bench", "compress_bench")
    flowgen = os.path.join(a.build, "bench", "flowgen")
    tmp = tempfile.mkdtemp(prefix="compress-bench-")
    if a.sweep:
        return sweep(a, bench, flowgen, tmp)
    if a.threads:
        return threads_sweep(a, bench, tmp)
    mixes = {}
    compositions = {}
    sys.path.insert(0, HERE)
    import realmix
    bodies = [g for g in (realmix.WEB_BODIES if a.mix_bodies is None else a.mix_bodies)
              .split(",") if g]
    body_list = realmix.body_files(bodies, 1, a.mix_bodies_mb * 1000000)
    for pct in [float(x) for x in a.mix_encrypted.split(",") if x]:
        name = f"realmix-enc{pct:g}"
        out = os.path.join(tmp, name + ".pcap")
        compositions[name] = realmix.generate(out, realmix.default_sources(), pct, a.mb, True,
                                              16, 1, body_list=body_list)
        mixes[name] = [out]
    mixes["demo"] = [os.path.join(REPO, "tests", "data", "demo", "web-mix.pcap")]
    for name, extra in (("flowgen-1514", ["--frame-size", "1514"]),
                        ("flowgen-imix", []),
                        ("flood-64", ["--frame-size", "60"])):
        out = os.path.join(tmp, name + ".pcap")
        subprocess.run([flowgen, "-o", out, "--flows", "100000", "--max-bytes",
                        str(a.mb * 1000000), "--micro"] + extra, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mixes[name] = [out]
    rnd = os.path.join(tmp, "random-1514.pcap")
    random_1514(rnd, min(a.mb, 128))
    mixes["random-1514"] = [rnd]
    corpus = []
    for p in sorted(glob.glob(os.path.join(a.corpus, "**", "*"), recursive=True)):
        try:
            with open(p, "rb") as f:
                if f.read(4) in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
                    corpus.append(p)
        except OSError:
            pass
    if corpus:
        mixes["tcpdump-corpus"] = corpus
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "mixes": {}}
    for name, files in mixes.items():
        recs = os.path.join(tmp, name + ".records")
        p = subprocess.run([bench, "--seconds", a.seconds, "--dump-records", recs,
                            "--codecs", "lz4,zstd:1,zstd:3,gzip:1,gzip:6"] + files,
                           capture_output=True, text=True)
        if p.returncode != 0:
            print(f"{name}: {p.stderr.strip()}", file=sys.stderr)
            continue
        rows = [json.loads(l) for l in p.stdout.splitlines()]
        size = os.path.getsize(recs)
        m = {"in_bytes": size, "files": len(files), "codecs": rows}
        if name in compositions:
            m["composition"] = compositions[name]
        if name in ("flowgen-1514", "demo", "random-1514", "flowgen-imix") or \
                name in compositions:
            lz4 = tool_rate(["lz4", "-1", "-q", "-c"], recs, size)
            zstd = tool_rate(["zstd", "-1", "-T1", "-q", "-c"], recs, size)
            m["lz4_cli_gb_per_s"] = round(lz4 / 1e9, 3)
            m["zstd1_cli_gb_per_s"] = round(zstd / 1e9, 3)
            # The tools' ratio on the same bytes, one stream for the whole
            # input (capd's blocks are independent: its ratio is lower).
            for tool, cmd in (("lz4_cli_ratio", ["lz4", "-1", "-q", "-c", recs]),
                              ("zstd1_cli_ratio", ["zstd", "-1", "-T1", "-q", "-c", recs])):
                out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout
                m[tool] = round(size / max(1, len(out)), 3)
            for r in rows:
                if r["codec"] == "lz4":
                    m["lz4_vs_cli"] = round(r["gb_per_s"] * 1e9 / lz4, 3)
                if r["codec"] == "zstd:1":
                    m["zstd1_vs_cli"] = round(r["gb_per_s"] * 1e9 / zstd, 3)
        os.unlink(recs)
        results["mixes"][name] = m
        print(name, json.dumps(m), flush=True)
    for f in glob.glob(os.path.join(tmp, "*")):
        os.unlink(f)
    os.rmdir(tmp)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
