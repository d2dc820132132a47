#!/usr/bin/env python3
"""How evenly the flow table's key hash (dataplane/flow_table.cc,
hash_words) spreads the null source's flows over buckets and tags, with
its last step as capd has it (a fold) and as it was (a murmur finaliser).

The hash is reimplemented here with random key words; the keys are
null:64,flows=N's (dataplane/null_flows.hh): 198.18.0.0 + (f >> 10) port
1024 + (f & 1023) -> 198.19.0.1 port 80, UDP over IPv4, no VLAN.

  python3 bench/hash_spread.py [--flows 1048576] [--buckets 262144] [--seed 7]

Prints, per last step: chi-square over buckets divided by their number
(about 1 for a uniform spread), the fullest bucket, buckets holding more
than 8 flows (a bucket has 8 ways), and the most flows sharing a 16-bit tag.
"""

import argparse
import collections
import random
import struct

M = (1 << 64) - 1


def fold(x, y):
    p = x * y
    return (p & M) ^ (p >> 64)


def murmur(h):
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & M
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & M
    return h ^ (h >> 33)


def spread(last, flows, buckets, k):
    per_bucket, per_tag = collections.Counter(), collections.Counter()
    d0 = struct.unpack("<I", bytes([198, 19, 0, 1]))[0]
    w5 = 17 | 4 << 8  # protocol, IP version
    for f in range(flows):
        host, port = f >> 10, 1024 + (f & 1023)
        s0 = struct.unpack("<I", bytes([198, 18, (host >> 8) & 255, host & 255]))[0]
        w4 = port << 16 | 80  # ports; VLAN 0
        # The key's words: a (s0, s1 = 0), b (d0, d1 = 0), ports, protocol.
        h = (fold(s0 ^ k[0], 0 ^ k[1]) + fold(0 ^ k[2], w4 ^ k[3]) +
             fold(d0 ^ k[4], w5 ^ k[5])) & M
        h = fold(h ^ k[6], k[7] | 1) if last == "fold" else murmur(h)
        per_bucket[h & (buckets - 1)] += 1
        per_tag[h >> 48] += 1
    want = flows / buckets
    chi = sum((c - want) ** 2 / want for c in per_bucket.values())
    chi += (buckets - len(per_bucket)) * want
    print(f"{last:6s}: chi-square/buckets {chi / buckets:.3f}, fullest bucket "
          f"{max(per_bucket.values())}, buckets over 8 "
          f"{sum(1 for c in per_bucket.values() if c > 8)}, most flows on one tag "
          f"{max(per_tag.values())} (mean {flows / 65536:.1f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=1 << 20)
    ap.add_argument("--buckets", type=int, default=1 << 18)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    k = [rnd.getrandbits(64) for _ in range(8)]
    for last in ("murmur", "fold"):
        spread(last, a.flows, a.buckets, k)


if __name__ == "__main__":
    main()
