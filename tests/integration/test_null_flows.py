#!/usr/bin/env python3
"""null:SIZE,flows=N (dataplane/null_flows.hh): every packet of the null
source is one of N IPv4 flows, with valid checksums; the flow table sees
exactly N flows, on one worker and on two; bad flows= values are refused in
one line."""

import json
import math
import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import capdtest  # noqa: E402


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def five_tuple(frame):
    """(proto, src, sport, dst, dport) of an Ethernet IPv4 TCP/UDP frame
    whose IPv4 (and TCP) checksum verifies; None for any other frame."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[14] >> 4 != 4:
        return None
    ihl = (frame[14] & 15) * 4
    ip = frame[14:14 + ihl]
    if csum(ip) != 0xffff:
        raise AssertionError(f"bad IPv4 header checksum in {frame[:40].hex()}")
    proto = ip[9]
    if proto not in (6, 17):
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    l4 = frame[14 + ihl:14 + total]
    if proto == 6 and len(l4) == total - ihl:
        pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(l4))
        if csum(pseudo + l4) != 0xffff:
            raise AssertionError(f"bad TCP checksum in {frame[:60].hex()}")
    if proto == 17:
        assert l4[6:8] == b"\0\0", "a rewritten UDP checksum is 0 (none)"
    sport, dport = struct.unpack("!HH", l4[:4])
    return (proto, bytes(ip[12:16]), sport, bytes(ip[16:20]), dport)


class NullFlowsTest(capdtest.CapdTestCase):
    def run_flows(self, source, extra):
        out, stats = self.path("o.pcap"), self.path("s.json")
        r = self.capd(["-q", "-i", source, "-w", out, "--ctl", "none", "--stats-json", stats]
                      + extra)
        self.assertCapdOk(r)
        with open(stats) as f:
            s = json.load(f)
        cap = self.assertWhole(out)
        return s, [five_tuple(rec.data) for rec in cap.records]

    def test_every_packet_one_of_n_flows(self):
        with open("/proc/meminfo") as f:
            free_huge = next(int(x.split()[1]) for x in f if x.startswith("HugePages_Free:"))
        s, tuples = self.run_flows("null:64,flows=1000",
                                   ["-c", "5000", "--flow-table", "4096"])
        self.assertEqual(len(tuples), 5000)
        self.assertNotIn(None, tuples)
        self.assertEqual(len(set(tuples)), 1000)
        # One queue takes the flows round robin: the first 1000 are all of
        # them, each flow's source address and port as null_flows.hh says.
        self.assertEqual(len(set(tuples[:1000])), 1000)
        for f in (0, 1, 999):
            self.assertEqual(tuples[f], (17, bytes([198, 18, f >> 18, (f >> 10) & 255]),
                                         1024 + (f & 1023), bytes([198, 19, 0, 1]), 80))
        self.assertEqual(tuples[1000], tuples[0])
        self.assertEqual(s["flows"]["created"], 1000)
        self.assertEqual(s["flows"]["evicted"], 0)
        self.assertEqual(s["flows"]["untracked_packets"], 0)
        # One table, on huge pages or not (said; with none free, not), no
        # bucket and pair full.
        self.assertEqual(s["flows"]["tables"], 1)
        self.assertIn(s["flows"]["tables_on_huge_pages"], (0, 1))
        if free_huge == 0:
            self.assertEqual(s["flows"]["tables_on_huge_pages"], 0)
        self.assertEqual(s["flows"]["bucket_full"], 0)

    def test_worker_busy_time(self):
        # Each worker's busy time (the loop turns that received packets) and
        # stalls fit in the run, and busy_ns_per_packet is busy over received.
        s, _ = self.run_flows("null:64,flows=1000,rate=100k",
                              ["--duration", "1", "--workers", "2", "--flow-table", "4096"])
        for w in s["workers"]:
            self.assertGreater(w["rx_packets"], 0)
            self.assertGreater(w["busy_ns"], 0)
            self.assertLessEqual(w["busy_ns"] + w["stalled_ns"], s["elapsed_s"] * 1e9)
            self.assertAlmostEqual(w["busy_ns_per_packet"], w["busy_ns"] / w["rx_packets"],
                                   delta=1e-6 * w["busy_ns_per_packet"])
            self.assertEqual(w["stalled_turns"] == 0, w["stalled_ns"] == 0)
            # The mean burst: 50k packets a second per worker come one or
            # a few at a time, never all in full bursts.
            turns = w["busy_turns"] + w["stalled_turns"]
            self.assertGreater(turns, 0)
            self.assertAlmostEqual(w["packets_per_turn"], w["rx_packets"] / turns,
                                   delta=1e-6 * w["packets_per_turn"])
            self.assertLess(w["packets_per_turn"], w["burst_size"] / 2)

    def test_unpaced_null_fills_every_burst(self):
        # Unpaced, the null source fills every burst (64 packets), so the
        # mean is the burst (a little over: the first turn with packets is
        # not counted).
        stats = self.path("s.json")
        r = self.capd(["-q", "-i", "null:64,flows=1000", "--rx-only", "--duration", "0.5",
                       "--ctl", "none", "--stats-json", stats])
        self.assertCapdOk(r)
        with open(stats) as f:
            w = json.load(f)["workers"][0]
        self.assertGreater(w["busy_turns"] + w["stalled_turns"], 10)
        self.assertEqual(w["burst_size"], 64)
        self.assertGreaterEqual(w["packets_per_turn"], 64)
        self.assertLess(w["packets_per_turn"], 65)

    def test_two_workers_split_the_flows(self):
        # Each of the two queues takes every other flow: together they
        # write all 1000, and no flow reaches both workers' tables (then
        # the tables would have created more than 1000).
        s, tuples = self.run_flows("null:64,flows=1000,rate=200k",
                                   ["--duration", "1", "--workers", "2",
                                    "--flow-table", "4096"])
        self.assertEqual(len(s["workers"]), 2)
        self.assertNotIn(None, tuples)
        self.assertEqual(len(set(tuples)), 1000)
        self.assertEqual(s["flows"]["created"], 1000)
        self.assertEqual(sum(w["rx_packets"] for w in s["workers"]), len(tuples))

    def test_frames_of_a_capture_rewritten_with_valid_checksums(self):
        web = os.path.join(capdtest.DATA_DIR, "demo", "web-mix.pcap")
        s, tuples = self.run_flows(f"null:1514,flows=50,frames={web}",
                                   ["-c", "3000", "--flow-table", "4096"])
        self.assertEqual(len(tuples), 3000)
        self.assertNotIn(None, tuples)
        # 50 flows: the capture has TCP and UDP frames, and the source
        # replays the pool's frames in turn, so the few UDP ones land on
        # the flows their places in the capture give (some of the 50), and
        # the TCP ones on all 50.
        self.assertEqual(len({t[1:] for t in tuples}), 50)
        self.assertEqual(len({t for t in tuples if t[0] == 6}), 50)
        self.assertLessEqual(len({t for t in tuples if t[0] == 17}), 50)
        self.assertGreater(len({t for t in tuples if t[0] == 17}), 0)

    def test_scattered_order(self):
        # order=scattered: each round of 1000 packets is every flow once,
        # the first in order, each later one by a stride of its own between
        # 250 and 750 flows (coprime with 1000), so a packet's flow is never
        # the one after the previous packet's, as round robin has it.
        s, tuples = self.run_flows("null:64,flows=1000,order=scattered",
                                   ["-c", "4000", "--flow-table", "4096"])
        self.assertEqual(len(tuples), 4000)
        self.assertNotIn(None, tuples)
        index = [(t[1][2] << 18 | t[1][3] << 10) | (t[2] - 1024) for t in tuples]
        rounds = [index[r * 1000:(r + 1) * 1000] for r in range(4)]
        self.assertEqual(rounds[0], list(range(1000)))
        strides = []
        for r in rounds[1:]:
            self.assertEqual(sorted(r), list(range(1000)))
            steps = {(b - a) % 1000 for a, b in zip(r, r[1:])}
            self.assertEqual(len(steps), 1, "one stride a round")
            stride = steps.pop()
            self.assertTrue(250 <= stride < 760 and math.gcd(stride, 1000) == 1, stride)
            strides.append(stride)
        self.assertEqual(len(set(strides)), 3, strides)
        self.assertEqual(s["flows"]["created"], 1000)
        # Two workers: still no flow on both (the tables create 1000).
        s, tuples = self.run_flows("null:64,flows=1000,order=scattered,rate=200k",
                                   ["--duration", "1", "--workers", "2",
                                    "--flow-table", "4096"])
        self.assertEqual(len(set(tuples)), 1000)
        self.assertEqual(s["flows"]["created"], 1000)

    def test_both_directions(self):
        # directions=both: each packet is its flow's reply or not, half
        # each in no fixed pattern; the table still sees one flow per
        # pair of directions, and every flow goes both ways.
        s, tuples = self.run_flows("null:64,flows=1000,order=scattered,directions=both",
                                   ["-c", "4000", "--flow-table", "4096"])
        self.assertEqual(len(tuples), 4000)
        self.assertNotIn(None, tuples)
        server = bytes([198, 19, 0, 1])
        replies = [t for t in tuples if t[1] == server]
        for t in tuples:
            self.assertIn(server, (t[1], t[3]), t)
        for t in replies:
            self.assertEqual(t[2], 80, t)
        # Binomial(4000, 1/2): 2000 +- 32 (one standard deviation).
        self.assertTrue(1700 < len(replies) < 2300, len(replies))
        # No run of one direction longer than a fair coin would make.
        runs, longest = 1, 1
        for a, b in zip(tuples, tuples[1:]):
            runs = runs + 1 if (a[1] == server) == (b[1] == server) else 1
            longest = max(longest, runs)
        self.assertLess(longest, 30)
        flows = {(t[0], t[3], t[4]) if t[1] == server else (t[0], t[1], t[2]) for t in tuples}
        self.assertEqual(len(flows), 1000)
        # 4 packets a flow: 1 in 8 goes one way only.
        both = {(t[0], t[3], t[4]) for t in replies} & {(t[0], t[1], t[2]) for t in tuples}
        self.assertTrue(800 < len(both) < 950, len(both))
        self.assertEqual(s["flows"]["created"], 1000)

    def test_bad_flows_values(self):
        for src in ("null:64,flows=0", "null:64,flows=67108865", "null:64,flows=abc",
                    "null:64,flows=-1", "null:64,flows=", "null:64,flows=1e3",
                    "null:41,flows=10", "null:64,flows=10,order=random",
                    "null:64,order=scattered", "null:64,flows=10,order=",
                    "null:64,flows=10,directions=all", "null:64,directions=both"):
            with self.subTest(src=src):
                r = self.capd(["-i", src, "-w", self.path("x.pcap"), "--ctl", "none"])
                self.assertEqual(r.rc, 1, r.describe())
                self.assertEqual(len(r.stderr_lines), 1, r.describe())
                self.assertIn("source 'null", r.stderr)
                self.assertFalse(os.path.exists(self.path("x.pcap")))
        r = self.capd(["-i", "null:64,flows=67108864", "--rx-only", "--duration", "0.2",
                       "--ctl", "none"])
        self.assertCapdOk(r)


if __name__ == "__main__":
    unittest.main()
