#!/usr/bin/env python3
"""Writes the bundled demo capture: a few minutes of made-up traffic between
hosts in 198.18.0.0/15 (reserved for benchmarking): web requests and answers,
DNS lookups, a connection refused with RST, and a SYN that is never answered.
Nanosecond pcap, deterministic (fixed seed)."""
import random
import struct
import sys


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip4(a):
    return bytes(int(x) for x in a.split("."))


def frame(src, dst, proto, l4, ident):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident & 0xFFFF, 0x4000, 64,
                     proto, 0, ip4(src), ip4(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    eth = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
    return eth + ip + l4


def tcp(src, dst, sport, dport, seq, ack, flags, payload=b"", ident=0):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 6, len(hdr) + len(payload))
    c = csum(pseudo + hdr + payload)
    hdr = hdr[:16] + struct.pack("!H", c) + hdr[18:]
    return frame(src, dst, 6, hdr + payload, ident)


def udp(src, dst, sport, dport, payload, ident=0):
    hdr = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    return frame(src, dst, 17, hdr + payload, ident)


SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def main(path, conns=400):
    rnd = random.Random(7)
    pkts = []
    t = 1_700_000_000 * 10**9 + 123_456_789
    ident = 1
    server = "198.18.0.80"
    for i in range(conns):
        client = "198.18.1.%d" % (1 + i % 200)
        sport = 40000 + i
        isn, ssn = rnd.getrandbits(32), rnd.getrandbits(32)
        kind = i % 20
        step = lambda: rnd.randint(20_000, 900_000)
        seq = []
        if kind == 7:  # refused: SYN answered by RST
            seq += [(client, server, sport, 8080, isn, 0, SYN, b"")]
            seq += [(server, client, 8080, sport, 0, isn + 1, RST | ACK, b"")]
        elif kind == 13:  # unanswered: SYN retried, nothing comes back
            for _ in range(4):
                seq += [(client, "198.19.0.5", sport, 5432, isn, 0, SYN, b"")]
        else:
            path_ = "/item/%d" % rnd.randint(1, 9999)
            req = ("GET %s HTTP/1.1\r\nHost: shop.example\r\n\r\n" % path_).encode()
            body = b"x" * rnd.randint(100, 1400)
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            seq += [(client, server, sport, 80, isn, 0, SYN, b""),
                    (server, client, 80, sport, ssn, isn + 1, SYN | ACK, b""),
                    (client, server, sport, 80, isn + 1, ssn + 1, ACK, b""),
                    (client, server, sport, 80, isn + 1, ssn + 1, PSH | ACK, req),
                    (server, client, 80, sport, ssn + 1, isn + 1 + len(req), PSH | ACK, resp),
                    (client, server, sport, 80, isn + 1 + len(req), ssn + 1 + len(resp), FIN | ACK, b""),
                    (server, client, 80, sport, ssn + 1 + len(resp), isn + 2 + len(req), FIN | ACK, b""),
                    (client, server, sport, 80, isn + 2 + len(req), ssn + 2 + len(resp), ACK, b"")]
        for s in seq:
            t += step()
            pkts.append((t, tcp(*s, ident=ident)))
            ident += 1
        if i % 4 == 0:  # a DNS lookup and its answer
            q = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\x04shop\x07example\x00\x00\x01\x00\x01"
            a = struct.pack("!HHHHHH", i, 0x8180, 1, 1, 0, 0) + q[12:] + \
                b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + ip4(server)
            t += step()
            pkts.append((t, udp(client, "198.18.0.53", 50000 + i, 53, q, ident)))
            t += rnd.randint(200_000, 3_000_000)
            pkts.append((t, udp("198.18.0.53", client, 53, 50000 + i, a, ident + 1)))
            ident += 2
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        for ts, p in pkts:
            f.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(p), len(p)))
            f.write(p)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "web-mix.pcap")
