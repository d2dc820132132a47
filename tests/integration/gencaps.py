"""Generated test captures, built at test time into a temporary directory.

Every frame uses only 198.18.0.0/15 and 2001:db8::/32 addresses. A frame
built by tagged_frame() carries a tag in its payload (MAGIC, source id,
sequence number) so that tests can tell exactly which input packet an output
record is, whatever the order or the output file it lands in.
"""

import random
import struct

import pcaplib
from pcaplib import Packet

MAGIC = b"LCAP"
T0 = 1700000000 * 10**9 + 123456789  # odd nanoseconds on purpose
KINDS = ("udp4", "tcp4", "udp6")


def tag(source, seq):
    return MAGIC + struct.pack("!HI", source, seq)


def find_tag(data):
    """(source, seq) of the first tag in data, or None."""
    i = data.find(MAGIC)
    if i < 0 or i + 10 > len(data):
        return None
    return struct.unpack_from("!HI", data, i + 4)


def tagged_frame(kind, source, seq, payload_len):
    body = tag(source, seq)
    body += bytes((seq + k) & 0xFF for k in range(max(0, payload_len - len(body))))
    sport = 40000 + (seq % 1000)
    if kind == "udp4":
        return pcaplib.eth_ipv4_udp(body, src=f"198.18.{source % 256}.1", dst="198.19.0.2",
                                    sport=sport, ident=seq)
    if kind == "tcp4":
        return pcaplib.eth_ipv4_tcp(body, src=f"198.18.{source % 256}.1", dst="198.19.0.2",
                                    sport=sport, seq=seq * 1460 + 1, ack=1, ident=seq)
    if kind == "udp6":
        return pcaplib.eth_ipv6_udp(body, src=f"2001:db8::{source:x}:1", dst="2001:db8::2",
                                    sport=sport)
    raise ValueError(kind)


def mixed(n, source=0, seed=1, t0=T0, max_payload=1400):
    """n tagged frames of mixed kinds and sizes with odd-nanosecond
    timestamps that strictly increase. Returns (packets, kinds)."""
    rnd = random.Random(seed * 7919 + source)
    pkts, kinds = [], []
    ts = t0 + source * 1000003
    for seq in range(n):
        kind = KINDS[rnd.randrange(3)]
        size = rnd.choice([10, 18, 64, 200, 512, 999, max_payload, rnd.randrange(10, max_payload)])
        pkts.append(Packet(ts, tagged_frame(kind, source, seq, size)))
        kinds.append(kind)
        ts += 2 * rnd.randrange(1, 5000000) + 1
    return pkts, kinds


def snapcut(n, snaplen=96, seed=2):
    """Frames longer than snaplen, stored cut to it (caplen < wirelen)."""
    rnd = random.Random(seed)
    out = []
    ts = T0
    for seq in range(n):
        f = tagged_frame(KINDS[seq % 3], 1, seq, rnd.randrange(snaplen, 1460))
        out.append(Packet(ts, f[:snaplen], len(f)))
        ts += 7777
    return out


def big_frames():
    """A 9000-byte jumbo frame, and larger frames up to libpcap's limit,
    between small ones."""
    out = []
    ts = T0
    for seq, size in enumerate([60, 9000, 64, 9018, 16384, 65535, 100, 262144, 60]):
        # Headers describe at most a 9000-byte frame; bigger ones are padded.
        f = tagged_frame("udp4", 2, seq, min(size, 9000) - 42)
        f = f + bytes((seq * 31 + k) & 0xFF for k in range(size - len(f)))
        out.append(Packet(ts, f))
        ts += 1001
    return out


def tiny_frames():
    """Empty and sub-header frames, including caplen 0 with a wire length."""
    base = tagged_frame("udp4", 3, 0, 40)
    out = []
    ts = T0
    for data, wirelen in [(b"", 0), (b"", 60), (base[:1], 1), (base[:1], 60), (base[:13], 13),
                          (base[:14], 14), (base[:14], 1514), (base[:42], 42), (base[:60], 60)]:
        out.append(Packet(ts, data, wirelen))
        ts += 3
    return out


def edge_timestamps():
    """Timestamps at the edges that pcap's 32-bit fields still hold signed."""
    f = tagged_frame("udp4", 4, 0, 20)
    stamps = [0, 1, 999999999, 10**9, 10**9 + 1, (2**31 - 1) * 10**9 + 999999999]
    return [Packet(t, f) for t in stamps]


def after_2038():
    """Seconds fields of 2^31 and above: valid in pcap (unsigned 32 bits)."""
    f = tagged_frame("udp4", 5, 0, 20)
    stamps = [2**31 * 10**9, 2**31 * 10**9 + 999999999, 3000000000 * 10**9 + 1,
              (2**32 - 1) * 10**9 + 999999999]
    return [Packet(t, f) for t in stamps]


def wirelen_below_caplen():
    """Damaged-looking but readable records whose wire length is smaller than
    the captured length (0, and 1 byte less). They are copied as they are."""
    f = tagged_frame("udp4", 6, 0, 30)
    return [Packet(T0, f, 0), Packet(T0 + 1, f, len(f) - 1), Packet(T0 + 2, f, len(f))]


def raw_ipv4_frames(n):
    """LINKTYPE_RAW (101) packets: IPv4 without an Ethernet header."""
    out = []
    for seq in range(n):
        f = tagged_frame("udp4" if seq % 2 == 0 else "tcp4", 7, seq, 30 + seq)
        out.append(Packet(T0 + seq * 1000, f[14:]))
    return out


def sll_frames(n):
    """LINKTYPE_LINUX_SLL (113) packets: a cooked header then IPv4."""
    out = []
    for seq in range(n):
        f = tagged_frame("udp4", 8, seq, 30 + seq)
        sll = struct.pack("!HHH8sH", 0, 1, 6, bytes.fromhex("020000000001") + b"\0\0", 0x0800)
        out.append(Packet(T0 + seq * 1000, sll + f[14:]))
    return out


def null_frames(n):
    """LINKTYPE_NULL (0) packets: a 4-byte host-order family then IPv4."""
    out = []
    for seq in range(n):
        f = tagged_frame("udp4", 9, seq, 30 + seq)
        out.append(Packet(T0 + seq * 1000, struct.pack("<I", 2) + f[14:]))
    return out


def write(path, packets, nano=True, **kw):
    pcaplib.write_pcap(path, packets, nano=nano, **kw)
    return path
