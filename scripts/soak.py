#!/usr/bin/env python3
"""soak: capd for a long run, on purpose (not in CI).

Runs capd on a paced null source at a fraction (--load, 0.8) of a lossless
rate, with files rotating (-C/-W) and the rule set replaced through capctl
every second, and reports:
  * RSS (VmRSS of capd) and mempool use (mbufs and chunks taken out, from
    `capctl stats --json`) at start and at end: they must not grow;
  * drops by stage: there must be none;
  * files: every file left must be whole (read to its end by
    tests/integration/pcaplib.py), no hidden .partial file after exit.

The lossless rate is --rate PPS, or, without it, measured first: paced
trials of --trial-seconds each, bisected between --min-rate and --max-rate,
a rate counting as lossless when every drop stage stays at zero.

  python3 scripts/soak.py --seconds 600 --rate 600k
  python3 scripts/soak.py --seconds 120          # measures the rate first

Exit status 0 when every check passed, 1 otherwise. Every capd run is
bounded in time; capd is stopped through capctl, or killed, on any exit path.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import capdtest  # noqa: E402
import pcaplib  # noqa: E402

# Expressions that keep every null frame (all zeros), so written == received,
# and that still compile to different programs.
EXPRESSIONS = ["len >= 0", "ether[0] = 0", "not ether[1] = 1", "greater 1"]


def parse_rate(text):
    mult = {"k": 1e3, "M": 1e6, "G": 1e9}
    if text and text[-1] in mult:
        return float(text[:-1]) * mult[text[-1]]
    return float(text)


def find_build(arg):
    if arg:
        return arg
    for cand in sorted(glob.glob(os.path.join(REPO, "build*"))):
        if os.access(os.path.join(cand, "dataplane", "capd"), os.X_OK):
            return cand
    sys.exit("soak: capd is not built (sh scripts/build.sh)")


def machine():
    """CPU model, CPU count and load average: drops on a shared machine often
    come from other programs taking the worker's CPU."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                         "?")
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} x {model}, load average {load}"


def now_s(t0):
    return f"{time.monotonic() - t0:.0f} s"


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Capd:
    def __init__(self, build, args, workdir, name):
        self.sock = os.path.join(workdir, name + ".sock")
        self.summary = os.path.join(workdir, name + ".json")
        self.capctl = os.path.join(build, "ctl", "capctl")
        args = args + ["--ctl", self.sock, "--stats-json", self.summary]
        try:
            self.cap = capdtest.start_capd(args, sock=self.sock,
                                           capd=os.path.join(build, "dataplane", "capd"),
                                           stderr_path=os.path.join(workdir, name + ".stderr"))
        except AssertionError as e:
            raise RuntimeError(str(e)) from None
        self.proc = self.cap.proc

    def ctl(self, *args, timeout=30):
        try:
            return subprocess.run([self.capctl, "--ctl", self.sock] + list(args),
                                  capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "capctl timed out")

    def stats(self):
        r = self.ctl("--json", "stats")
        if r.returncode != 0:
            raise RuntimeError(f"capctl stats: {r.stderr.strip()}")
        return json.loads(r.stdout)["data"]

    def stderr(self):
        return self.cap.stderr_now()

    def stop(self, timeout=120):
        self.ctl("stop")
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"capd did not stop within {timeout} s")
        with open(self.summary) as f:
            return rc, json.load(f)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


def steal_ms():
    """Time the hypervisor ran something else on this VM's CPUs, in ms."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) * 1000 // os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0


def trial(build, workdir, size, rate, seconds, rx_desc):
    """One paced run with --duration; returns the summary."""
    js = os.path.join(workdir, "trial.json")
    out = os.path.join(workdir, "trial")
    os.makedirs(out, exist_ok=True)
    cmd = [os.path.join(build, "dataplane", "capd"), "-q", "-i", f"null:{size},rate={rate:.0f}",
           "--duration", str(seconds), "--rx-desc", str(rx_desc), "-C", "100", "-W", "2", "-w",
           os.path.join(out, "t.pcap"), "--ctl", "none", "--stats-json", js]
    subprocess.run(cmd, capture_output=True, timeout=seconds + 120, stdin=subprocess.DEVNULL)
    with open(js) as f:
        s = json.load(f)
    shutil.rmtree(out, ignore_errors=True)
    return s


def measure_lossless(build, workdir, size, lo, hi, seconds, steps, rx_desc):
    """Bisection on the paced rate: the highest rate tried with zero drops."""
    best = None
    for _ in range(steps):
        mid = (lo * hi) ** 0.5
        s = trial(build, workdir, size, mid, seconds, rx_desc)
        lost = s["drops"]["total"]
        print(f"soak: trial {mid / 1e6:.3f} Mpps for {seconds} s: received "
              f"{s['packets_received']}, drops {lost}", flush=True)
        if lost == 0 and s["packets_received"] > 0:
            best, lo = mid, mid
        else:
            hi = mid
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600, help="soak duration (600)")
    ap.add_argument("--rate", help="lossless rate in packets/s (k, M suffixes); measured if absent")
    ap.add_argument("--load", type=float, default=0.8, help="fraction of the lossless rate (0.8)")
    ap.add_argument("--size", type=int, default=64, help="null frame size (64)")
    ap.add_argument("-C", dest="rotate_mb", default="50", help="-C for capd (50)")
    ap.add_argument("-W", dest="max_files", default="10", help="-W for capd (10)")
    ap.add_argument("--dir", help="output directory (default: a new one in /dev/shm)")
    ap.add_argument("--keep", action="store_true", help="keep the output directory")
    ap.add_argument("--build-dir")
    ap.add_argument("--min-rate", default="50k")
    ap.add_argument("--max-rate", default="4M")
    ap.add_argument("--trial-seconds", type=float, default=5)
    ap.add_argument("--rx-desc", type=int, default=4096,
                    help="capd --rx-desc: the receive ring a stalled worker leans on (4096)")
    ap.add_argument("--trial-steps", type=int, default=7)
    ap.add_argument("--rss-slack-kb", type=int, default=1024,
                    help="RSS growth from start to end tolerated (1024 KiB)")
    ap.add_argument("--json", help="write the report as JSON to FILE")
    a = ap.parse_args()

    build = find_build(a.build_dir)
    base = a.dir or tempfile.mkdtemp(prefix="linecap-soak-",
                                     dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.makedirs(base, exist_ok=True)
    out = os.path.join(base, "out")
    os.makedirs(out, exist_ok=True)
    capd = None
    try:
        if a.rate:
            lossless = parse_rate(a.rate)
            how = "given"
        else:
            lossless = measure_lossless(build, base, a.size, parse_rate(a.min_rate),
                                        parse_rate(a.max_rate), a.trial_seconds, a.trial_steps,
                                        a.rx_desc)
            if lossless is None:
                print("soak: no lossless rate found above --min-rate", file=sys.stderr)
                return 1
            how = f"measured ({a.trial_steps} trials of {a.trial_seconds:g} s)"
        rate = lossless * a.load
        print(f"soak: machine: {machine()}", flush=True)
        print(f"soak: lossless rate {lossless / 1e6:.3f} Mpps ({how}); soaking at "
              f"{rate / 1e6:.3f} Mpps of {a.size}-byte frames for {a.seconds:g} s, "
              f"-C {a.rotate_mb} -W {a.max_files}, --rx-desc {a.rx_desc}, rules replaced every "
              f"second", flush=True)

        capd = Capd(build, ["-i", f"null:{a.size},rate={rate:.0f}", "-C", a.rotate_mb,
                            "-W", a.max_files, "--rx-desc", str(a.rx_desc), "-w",
                            os.path.join(out, "soak.pcap")],
                    base, "soak")
        time.sleep(2)  # past start-up: pools primed, first file open
        s0 = capd.stats()
        start = {"rss_kb": rss_kb(capd.proc.pid), "mempools": s0["mempools"],
                 "received": s0["packets_received"]}
        print(f"soak: capd pid {capd.proc.pid}, hugepages {'yes' if s0['hugepages'] else 'no'}",
              flush=True)
        t_start = time.monotonic()
        steal0 = steal_ms()
        swaps = swap_failures = 0
        swap_errors = []
        last_print = t_start
        i = 0
        while time.monotonic() - t_start < a.seconds:
            if capd.proc.poll() is not None:
                raise RuntimeError(f"capd exited during the soak: {capd.stderr()}")
            i += 1
            r = capd.ctl("--json", "rules", "replace", "cli", EXPRESSIONS[i % len(EXPRESSIONS)])
            swaps += 1
            ok = r.returncode == 0
            try:
                ok = ok and json.loads(r.stdout).get("status") == 0
            except ValueError:
                ok = False
            if not ok:
                swap_failures += 1
                if len(swap_errors) < 5:
                    swap_errors.append(f"{now_s(t_start)}: exit {r.returncode}: "
                                       f"{(r.stderr or r.stdout).strip()[:200]}")
            now = time.monotonic()
            if now - last_print >= 30:
                s = capd.stats()
                gap_ms = max(w["max_poll_gap_us"] for w in s["workers"]) / 1000
                print(f"soak: {now - t_start:5.0f} s  received {s['packets_received']}  "
                      f"written {s['packets_written']}  drops {s['drops']['total']} "
                      f"(imissed {s['drops']['nic_imissed']})  steal {steal_ms() - steal0} ms  "
                      f"poll gap {gap_ms:.1f} ms  "
                      f"rss {rss_kb(capd.proc.pid)} KiB  mbufs in use "
                      f"{s['mempools']['mbufs']['in_use']}  chunks in use "
                      f"{s['mempools']['chunks']['in_use']}", flush=True)
                last_print = now
            time.sleep(max(0.0, t_start + i - time.monotonic()))
        s1 = capd.stats()
        end = {"rss_kb": rss_kb(capd.proc.pid), "mempools": s1["mempools"],
               "received": s1["packets_received"]}
        steal = steal_ms() - steal0
        rc, summary = capd.stop()
        capd = None

        files = sorted(os.path.join(out, f) for f in os.listdir(out) if not f.startswith("."))
        hidden = sorted(f for f in os.listdir(out) if f.startswith("."))
        damaged = []
        records = 0
        for f in files:
            try:
                records += len(pcaplib.read_capture(f).records)
            except pcaplib.PcapError as e:
                damaged.append(str(e))
        drops = {k: summary["drops"][k] for k in capdtest.drop_stages(summary)}
        rss_growth = end["rss_kb"] - start["rss_kb"]
        checks = {
            "capd exit 0": rc == 0,
            "no drops": summary["drops"]["total"] == 0,
            "rule swaps all accepted": swap_failures == 0,
            "files whole": not damaged,
            "no hidden files": not hidden,
            f"RSS growth <= {a.rss_slack_kb} KiB": rss_growth <= a.rss_slack_kb,
            "rules counted every packet": sum(r["packets"] for r in summary["rules"]) +
            summary["packets_filtered_out"] == summary["packets_received"],
        }
        report = {
            "seconds": a.seconds, "size": a.size, "lossless_pps": lossless,
            "lossless_source": how, "rate_pps": rate, "rotate_mb": a.rotate_mb,
            "max_files": a.max_files, "rule_swaps": swaps, "rule_swap_failures": swap_failures,
            "rule_swap_errors": swap_errors,
            "hugepages": s0["hugepages"], "start": start, "end": end, "rss_growth_kb": rss_growth,
            "received": summary["packets_received"], "written": summary["packets_written"],
            "bytes_written": summary["bytes_written"], "files_written": summary["files_written"],
            "drops": drops, "files_left": len(files), "records_in_files_left": records,
            "damaged": damaged, "hidden": hidden, "exit": rc, "checks": checks,
            "rx_desc": a.rx_desc, "steal_ms": steal,
            "max_poll_gap_us": max(w["max_poll_gap_us"] for w in summary["workers"]),
        }
        print(f"soak: {summary['packets_received']} received, {summary['packets_written']} "
              f"written ({summary['bytes_written']} bytes in {summary['files_written']} files, "
              f"{len(files)} left by -W), {swaps} rule swaps ({swap_failures} failed)")
        for e in swap_errors:
            print(f"soak: rule swap failed at {e}")
        print(f"soak: machine at end: {machine()}")
        print(f"soak: RSS {start['rss_kb']} KiB at start, {end['rss_kb']} KiB at end "
              f"({rss_growth:+d} KiB)")
        for pool in ("mbufs", "chunks"):
            print(f"soak: {pool} in use {start['mempools'][pool]['in_use']} at start, "
                  f"{end['mempools'][pool]['in_use']} at end (of {end['mempools'][pool]['size']})")
        print("soak: drops by stage: " + ", ".join(f"{k} {v}" for k, v in drops.items()))
        print(f"soak: hypervisor steal {steal} ms over the run; the worker's longest gap between "
              f"receive polls {report['max_poll_gap_us'] / 1000:.1f} ms (--rx-desc {a.rx_desc} "
              f"holds {a.rx_desc / rate * 1000:.1f} ms at this rate)")
        print(f"soak: files left: {len(files)}, whole: {len(files) - len(damaged)}, "
              f"records {records}, hidden after exit: {len(hidden)}")
        for name, ok in checks.items():
            print(f"soak: {'PASS' if ok else 'FAIL'} {name}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(report, f, indent=2)
        return 0 if all(checks.values()) else 1
    finally:
        if capd is not None:
            capd.kill()
        if not a.keep and not a.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
