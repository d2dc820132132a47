#!/usr/bin/env python3
"""realmix.py: a full-size capture mix whose payloads are real bytes, for
measuring compression where padding or zero payloads would flatter it.

  realmix.py -o OUT.pcap [--source PCAP]... [--encrypted PCT] [--mb N]
             [--data-only] [--concurrent N] [--seed N] [--stats]

The plain bytes come from two places, back to back in S:
- the TCP payload streams of the source captures (default: every classic
  pcap in tests/data/tcpdump-tests, traffic captured on real networks:
  HTTP, SSH, SMB, BGP, OpenFlow and more), each direction of each connection
  reassembled by sequence number (overlaps kept once, gaps closed), in file
  order and, within a file, in the order the connections begin, the
  client's direction first. A stream that zlib -1 shrinks more than
  --max-stream-ratio (default 20) times is left out: in the test corpus
  those are one pattern repeated (fuzzer-made out-of-bounds cases, netperf's
  fill), 0.21 MB of its 0.30 MB, and would flatter a codec as zero padding
  does. The demo mix (tests/data/demo/web-mix.pcap) is no default source
  for the same reason: its response bodies are runs of 'x' (43:1 with lz4).
  --source names other captures (repeatable).
- --bodies GLOB (repeatable, comma-separated globs, ** allowed): files
  served as HTTP/1.1 200 responses, a response header before each file's
  bytes, in an order shuffled by --seed, up to --bodies-mb (default 16).
  The captures hold little payload (about 0.1 MB after the filter), too
  little for a mix of hundreds of MB: web pages, style sheets, scripts and
  images installed on the machine (bench/capbench.py's default globs) are
  what a web server sends.

Each new plain flow takes the next slice of S, a whole number of 1460-byte
segments (wrapping around S), as a persistent HTTP connection carries one
response after another. S's bytes repeat in a long mix; a codec must not
find a repeat closer than S's length (it would compress better than
traffic does). So a plain flow's slice is at most len(S) / (concurrent
plain flows) bytes, the flows that run together cover disjoint parts of S,
and a byte of S comes again only after about len(S) of plain payload. With
S shorter than capd's --compress-block (256 KiB by default) a zstd block
finds repeats: the stats say S's size.

Encrypted flows stand for TLS: TLS 1.2/1.3 application data records (type
23, version 0x0303, 16401 bytes each: 16384 of data and a 17-byte AEAD tag
and type) of random bytes, which a compressor cannot shrink. --encrypted PCT
sets their share of all payload bytes (default 50); it holds for every
prefix of the output within one segment (the next segment is encrypted
while the share so far is below PCT), so a replay that keeps only the first
frames (null:SIZE,frames=FILE keeps one frame per mbuf) sees it too.

Every data frame is 1514 bytes on the wire and in the file: Ethernet, IPv4
(20 bytes), TCP (20 bytes, no options) and 1460 payload bytes, consecutive
sequence numbers within its flow, server to client. Without --data-only,
every second data segment of a flow is answered by an ACK the other way,
60 bytes (54 of headers and the 6 zero bytes of Ethernet's minimum frame,
as a receiving NIC captures it). --data-only leaves the ACKs out: then every
frame is 1514 bytes and capd's null:1514,frames=FILE replays the file with
no padding (the null source pads frames shorter than its SIZE with zeros).

Addresses: clients 198.18.0.0/16, servers 198.19.0.0/24, port 80 for plain
flows and 443 for encrypted ones; --concurrent flows (default 16) are
interleaved segment by segment. Timestamps (nanosecond pcap) are spaced as
on a 10 Gbit/s link. Checksums are correct. Output is deterministic for a
given --seed and sources. --stats prints the byte composition as JSON.
"""

import argparse
import glob
import json
import os
import random
import struct
import sys
import zlib
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MSS = 1460
HDR = 14 + 20 + 20
FRAME = HDR + MSS  # 1514
ACK_FRAME = 60
TLS_RECORD = 5 + 16401


# ------------------------------------------------------------ reading sources

def pcap_packets(path):
    """(caplen, wirelen, data) of each record of a classic pcap file with an
    Ethernet link type; nothing for other files (pcapng, other links)."""
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 24:
        return
    magic = b[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        return
    if struct.unpack(e + "I", b[20:24])[0] & 0x0FFFFFFF != 1:
        return
    off = 24
    while off + 16 <= len(b):
        _, _, caplen, wirelen = struct.unpack(e + "IIII", b[off:off + 16])
        off += 16
        if caplen > len(b) - off:
            return
        yield b[off:off + caplen], wirelen
        off += caplen


def tcp_segment(frame):
    """((src, sport), (dst, dport), seq, payload) of an Ethernet frame
    carrying IPv4 or IPv6 TCP (VLAN tags skipped), else None. Only whole
    captured payloads: a frame cut by the snap length is skipped."""
    off = 12
    if len(frame) < 14:
        return None
    et = int.from_bytes(frame[12:14], "big")
    while et in (0x8100, 0x88A8) and len(frame) >= off + 6:
        off += 4
        et = int.from_bytes(frame[off:off + 2], "big")
    off += 2
    if et == 0x0800:
        if len(frame) < off + 20 or frame[off] >> 4 != 4:
            return None
        ihl = (frame[off] & 15) * 4
        total = int.from_bytes(frame[off + 2:off + 4], "big")
        frag = int.from_bytes(frame[off + 6:off + 8], "big")
        if frame[off + 9] != 6 or frag & 0x3FFF or ihl < 20:
            return None
        src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
        end = off + total
        off += ihl
    elif et == 0x86DD:
        if len(frame) < off + 40 or frame[off + 6] != 6:
            return None
        plen = int.from_bytes(frame[off + 4:off + 6], "big")
        src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
        off += 40
        end = off + plen
    else:
        return None
    if end > len(frame) or len(frame) < off + 20:
        return None
    sport, dport, seq = struct.unpack("!HHI", frame[off:off + 8])
    doff = (frame[off + 12] >> 4) * 4
    flags = frame[off + 13]
    if doff < 20 or off + doff > end:
        return None
    return (src, sport), (dst, dport), seq, flags, frame[off + doff:end]


def streams_of(path):
    """The TCP payload streams of one capture: per connection in the order
    connections begin, the direction of its first packet first; each
    reassembled by sequence number relative to the first sequence number
    seen (SYN counted), overlaps kept once, gaps closed."""
    conns = {}   # frozenset of ends -> [first direction, {direction: [(seq, payload)]}]
    order = []
    for frame, _ in pcap_packets(path):
        s = tcp_segment(frame)
        if s is None:
            continue
        a, b, seq, flags, payload = s
        key = frozenset((a, b)) if a != b else (a, b)
        c = conns.get(key)
        if c is None:
            c = conns[key] = [(a, b), {}]
            order.append(key)
        d = c[1].setdefault((a, b), {"isn": None, "segs": []})
        if d["isn"] is None:
            d["isn"] = seq + (1 if flags & 0x02 else 0)
        if payload:
            d["segs"].append(((seq - d["isn"]) & 0xFFFFFFFF, payload))
    for key in order:
        first, dirs = conns[key]
        for direction in (first, first[::-1]):
            d = dirs.get(direction)
            if not d or not d["segs"]:
                continue
            # Sequence numbers far past the start are wraps or garbage from
            # damaged captures: treat those as before the start (dropped).
            segs = sorted((s for s in d["segs"] if s[0] < 1 << 31), key=lambda x: x[0])
            out = bytearray()
            pos = None
            for rel, p in segs:
                if pos is None:
                    pos = rel
                if rel + len(p) <= pos:
                    continue
                if rel < pos:
                    p = p[pos - rel:]
                out += p
                pos = max(pos, rel) + len(p)
            if out:
                yield bytes(out)


def default_sources():
    return sorted(glob.glob(os.path.join(REPO, "tests", "data", "tcpdump-tests", "*")))


def stream_ratio(b):
    return len(b) / max(1, len(zlib.compress(b, 1)))


def body_files(globs, seed, limit):
    """The files --bodies names, shuffled by `seed`, up to `limit` bytes."""
    names = set()
    for g in globs:
        for part in g.split(","):
            if part:
                names.update(p for p in glob.glob(part, recursive=True) if os.path.isfile(p))
    names = sorted(names)
    random.Random(seed).shuffle(names)
    out, total = [], 0
    for n in names:
        size = os.path.getsize(n)
        if size == 0 or total + size > limit:
            continue
        out.append(n)
        total += size
    return out


CONTENT_TYPES = {".html": "text/html", ".htm": "text/html", ".css": "text/css",
                 ".js": "application/javascript", ".json": "application/json",
                 ".svg": "image/svg+xml", ".png": "image/png", ".gif": "image/gif",
                 ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def source_bytes(paths, max_ratio=0, bodies=(), stats=None):
    """S: the payload streams of every source capture (those that zlib -1
    shrinks more than max_ratio times left out, when max_ratio > 0), then
    each body file as an HTTP response, back to back."""
    parts = []
    st = {"capture_streams": 0, "capture_bytes": 0, "excluded_streams": 0,
          "excluded_bytes": 0, "body_files": 0, "body_bytes": 0}
    for p in paths:
        for b in streams_of(p):
            if max_ratio > 0 and stream_ratio(b) > max_ratio:
                st["excluded_streams"] += 1
                st["excluded_bytes"] += len(b)
                continue
            parts.append(b)
            st["capture_streams"] += 1
            st["capture_bytes"] += len(b)
    for n in bodies:
        with open(n, "rb") as f:
            b = f.read()
        ctype = CONTENT_TYPES.get(os.path.splitext(n)[1].lower(), "application/octet-stream")
        parts.append(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() +
                     b"\r\nContent-Length: " + str(len(b)).encode() + b"\r\n\r\n" + b)
        st["body_files"] += 1
        st["body_bytes"] += len(b)
        ext = os.path.splitext(n)[1].lower() or "(none)"
        st.setdefault("body_bytes_by_type", {})
        st["body_bytes_by_type"][ext] = st["body_bytes_by_type"].get(ext, 0) + len(b)
    if stats is not None:
        stats.update(st)
    return b"".join(parts)


# Web content a server sends, as installed on a Debian machine: documentation
# sites (HTML, CSS, scripts, images). What bench/capbench.py and
# bench/compress_bench.py pass as --bodies unless told otherwise.
WEB_BODIES = ",".join("/usr/share/**/*." + e for e in
                      ("html", "css", "js", "json", "svg", "png", "gif", "jpg"))


# ------------------------------------------------------------------ writing

def csum(data):
    if len(data) & 1:
        data += b"\0"
    s = sum(array("H", data))
    # array("H") reads host order; fold, then swap to network order if needed.
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    if sys.byteorder == "little":
        s = ((s & 0xFF) << 8) | (s >> 8)
    return (~s) & 0xFFFF


def frame(src_ip, dst_ip, sport, dport, seq, ack, flags, payload, ip_id):
    ip_len = 20 + 20 + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, ip_id & 0xFFFF, 0x4000, 64, 6,
                               0, src_ip, dst_ip))
    struct.pack_into("!H", ip, 10, csum(bytes(ip)))
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0))
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, 6, 20 + len(payload))
    struct.pack_into("!H", tcp, 16, csum(pseudo + bytes(tcp) + payload))
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    f = eth + bytes(ip) + bytes(tcp) + payload
    if len(f) < ACK_FRAME:
        f += b"\0" * (ACK_FRAME - len(f))
    return f


class Flow:
    def __init__(self, n, encrypted, length, start):
        c = n % 65534 + 1
        self.client = bytes((198, 18, c >> 8, c & 0xFF))
        self.server = bytes((198, 19, 0, 1 + n % 250))
        self.cport = 1024 + n % 60000
        self.sport = 443 if encrypted else 80
        self.encrypted = encrypted
        self.length = length        # payload bytes, a multiple of MSS
        self.start = start          # plain: offset into S
        self.sent = 0
        self.seq = (n * 2654435761) & 0xFFFFFFFF
        self.ack = (n * 40503 + 1) & 0xFFFFFFFF
        self.segments = 0


def tls_stream(rnd, length):
    """TLS application data records of random bytes, `length` bytes."""
    out = bytearray()
    while len(out) < length:
        out += b"\x17\x03\x03" + struct.pack("!H", TLS_RECORD - 5) + rnd.randbytes(TLS_RECORD - 5)
    return bytes(out[:length])


def generate(out_path, sources, encrypted_pct, mb, data_only, concurrent, seed, max_ratio=20,
             bodies=(), bodies_mb=16, body_list=None):
    """Writes the mix; returns its composition. body_list, when given, is
    the files body_files() chose (callers that write several mixes from the
    same files resolve the globs once)."""
    src_stats = {}
    if body_list is None:
        body_list = body_files(bodies, seed, bodies_mb * 1000000)
    S = source_bytes(sources, max_ratio, body_list, src_stats)
    if len(S) < MSS:
        raise SystemExit(f"realmix: the sources hold {len(S)} TCP payload bytes, fewer than one "
                         f"segment")
    if len(S) < 1 << 20 and encrypted_pct < 100:
        print(f"realmix: {len(S)} bytes of plain payload, which repeat every {len(S)} bytes of "
              f"it; --bodies adds more", file=sys.stderr)
    rnd = random.Random(seed)
    share = encrypted_pct / 100.0
    target = mb * 1000000
    stats = {"sources": len(sources), **src_stats, "source_bytes": len(S),
             "source_zlib1_ratio": round(stream_ratio(S), 3),
             "encrypted_pct": encrypted_pct, "data_only": data_only, "frames": 0,
             "data_frames": 0, "ack_frames": 0, "bytes": 0, "plain_payload_bytes": 0,
             "encrypted_payload_bytes": 0, "header_bytes": 0, "ack_bytes": 0, "flows": 0}
    s_pos = 0
    flows = {False: [], True: []}
    rr = {False: 0, True: 0}
    enc_bufs = {}
    ts = 1767225600 * 10**9
    ip_id = 0

    n_plain = max(1, round(concurrent * (1 - share)))
    n_enc = max(1, round(concurrent * share))
    max_plain_segs = max(1, len(S) // (n_plain * MSS))
    stats["plain_flow_max_bytes"] = max_plain_segs * MSS

    def new_flow(enc):
        nonlocal s_pos
        # Encrypted: 12 KB .. 1 MB a connection; plain: as S allows (above).
        length = MSS * (rnd.randint(8, 700) if enc else rnd.randint(1, max_plain_segs))
        f = Flow(stats["flows"], enc, length, s_pos)
        stats["flows"] += 1
        if enc:
            enc_bufs[id(f)] = tls_stream(rnd, length)
        else:
            s_pos = (s_pos + length) % len(S)
        return f

    with open(out_path, "wb") as o:
        o.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
        payload_total = 0
        enc_total = 0
        while stats["bytes"] < target:
            enc = share > 0 and (share >= 1 or enc_total < share * (payload_total + MSS))
            pool = flows[enc]
            while len(pool) < (n_enc if enc else n_plain):
                pool.append(new_flow(enc))
            i = rr[enc] % len(pool)
            rr[enc] = i + 1
            f = pool[i]
            if enc:
                payload = enc_bufs[id(f)][f.sent:f.sent + MSS]
            else:
                a = (f.start + f.sent) % len(S)
                payload = S[a:a + MSS]
                if len(payload) < MSS:
                    payload += S[:MSS - len(payload)]
            recs = [frame(f.server, f.client, f.sport, f.cport, (f.seq + f.sent) & 0xFFFFFFFF,
                          f.ack, 0x18 if (f.sent + MSS) % 16384 < MSS else 0x10, payload, ip_id)]
            ip_id += 1
            f.sent += MSS
            f.segments += 1
            payload_total += MSS
            if enc:
                enc_total += MSS
                stats["encrypted_payload_bytes"] += MSS
            else:
                stats["plain_payload_bytes"] += MSS
            stats["data_frames"] += 1
            stats["header_bytes"] += HDR
            if not data_only and (f.segments % 2 == 0 or f.sent >= f.length):
                recs.append(frame(f.client, f.server, f.cport, f.sport, f.ack,
                                  (f.seq + f.sent) & 0xFFFFFFFF, 0x10, b"", ip_id))
                ip_id += 1
                stats["ack_frames"] += 1
                stats["ack_bytes"] += ACK_FRAME
            for r in recs:
                o.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(r), len(r)))
                o.write(r)
                ts += (len(r) + 24) * 8 // 10  # bytes + preamble, IFG and FCS at 10 Gbit/s
                stats["frames"] += 1
                stats["bytes"] += len(r)
            if f.sent >= f.length:
                pool[i] = new_flow(enc)
                enc_bufs.pop(id(f), None)
    stats["encrypted_share_of_payload"] = round(
        stats["encrypted_payload_bytes"] / max(1, payload_total), 4)
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--source", action="append",
                    help="a capture whose TCP payloads to use (repeatable; default: the "
                         "captures in tests/data/tcpdump-tests)")
    ap.add_argument("--encrypted", type=float, default=50.0,
                    help="percent of payload bytes in TLS records of random bytes (default 50)")
    ap.add_argument("--mb", type=float, default=128, help="MB of frames to write (default 128)")
    ap.add_argument("--data-only", action="store_true",
                    help="no ACKs: every frame 1514 bytes (for null:1514,frames=FILE)")
    ap.add_argument("--concurrent", type=int, default=16,
                    help="flows interleaved segment by segment (default 16)")
    ap.add_argument("--max-stream-ratio", type=float, default=20,
                    help="leave out capture streams zlib -1 shrinks more than this (0: none)")
    ap.add_argument("--bodies", action="append", default=[],
                    help="files (globs, comma-separated, ** allowed) served as HTTP responses")
    ap.add_argument("--bodies-mb", type=float, default=16,
                    help="at most this many MB of --bodies files (default 16)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats", action="store_true", help="print the composition as JSON")
    a = ap.parse_args()
    if not 0 <= a.encrypted <= 100:
        ap.error("--encrypted must be a percentage from 0 to 100")
    if a.mb <= 0 or a.concurrent < 1:
        ap.error("--mb and --concurrent must be positive")
    stats = generate(a.out, a.source or default_sources(), a.encrypted, a.mb, a.data_only,
                     a.concurrent, a.seed, a.max_stream_ratio, a.bodies, a.bodies_mb)
    if a.stats:
        print(json.dumps(stats))


if __name__ == "__main__":
    main()
