"""Small pure-Python pcap/pcapng reader and pcap writer for capd's tests.

Reading:
    cap = read_capture(path)           # pcap (us or ns magic, either byte order) or pcapng
    for r in cap.records: r.ts_ns, r.caplen, r.wirelen, r.data, r.ifid
    cap.interfaces                     # pcapng IDBs (pcap: one synthetic interface)
    cap.stats                          # pcapng ISBs

The reader is strict: a record or block cut short raises PcapError, which
carries the byte offset and the number of whole records before it, so a test
can tell "whole file" from "readable prefix".

Writing: write_pcap(path, packets, nano=...) with Packet(ts_ns, data, wirelen).

Frames: eth_ipv4_udp(), eth_ipv4_tcp(), eth_ipv6_udp() build test frames by
hand. Tests use only 198.18.0.0/15 and 2001:db8::/32 addresses.
"""

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import List, Optional

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D

BT_IDB = 0x00000001
BT_PB = 0x00000002  # obsolete packet block
BT_SPB = 0x00000003
BT_ISB = 0x00000005
BT_EPB = 0x00000006

# libpcap's LT_LINKTYPE(): the upper bits of the pcap header's link type
# field carry FCS information, not the link type.
LINKTYPE_MASK = 0x03FFFFFF


class PcapError(Exception):
    """A capture file that cannot be read to its end."""

    def __init__(self, msg, offset=None, records_before=0):
        super().__init__(msg if offset is None else f"{msg} (byte offset {offset})")
        self.offset = offset
        self.records_before = records_before


@dataclass
class Record:
    ts_ns: int
    caplen: int
    wirelen: int
    data: bytes
    ifid: int = 0
    offset: int = 0  # byte offset of the record in its file


@dataclass
class Interface:
    linktype: int
    snaplen: int
    name: Optional[str] = None
    filter: Optional[bytes] = None  # raw if_filter value (first byte = type)
    tsresol: int = 6  # raw if_tsresol byte
    tsoffset: int = 0
    options: dict = field(default_factory=dict)

    def ticks_to_ns(self, ticks):
        return ticks_to_ns(ticks, self.tsresol)

    @property
    def filter_text(self):
        if self.filter is None or len(self.filter) < 1 or self.filter[0] != 0:
            return None
        return self.filter[1:].decode("utf-8", "replace")


@dataclass
class InterfaceStats:
    ifid: int
    ts_ticks: int
    options: dict
    offset: int = 0

    def counter(self, code, endian="<"):
        """A 64-bit ISB option (4 ifrecv, 5 ifdrop, 6 filteraccept) or None."""
        v = self.options.get(code)
        return struct.unpack(endian + "Q", v[0][:8])[0] if v else None


@dataclass
class Capture:
    kind: str  # "pcap-us", "pcap-ns" or "pcapng"
    endian: str  # "<" or ">"
    records: List[Record]
    interfaces: List[Interface]
    stats: List[InterfaceStats] = field(default_factory=list)
    shb_options: dict = field(default_factory=dict)
    snaplen: int = 0  # pcap header
    linktype: int = 1  # pcap header, or first IDB
    size: int = 0
    sections: int = 1
    error: Optional[PcapError] = None  # lenient reads only
    raw_linktype: int = 0  # pcap header field before masking


def ticks_to_ns(ticks, tsresol):
    """Converts a pcapng timestamp in units given by if_tsresol to ns (floor)."""
    if tsresol & 0x80:
        return (ticks * 10**9) >> (tsresol & 0x7F)
    exp = tsresol
    if exp <= 9:
        return ticks * 10 ** (9 - exp)
    return ticks // 10 ** (exp - 9)


def _parse_options(buf, endian):
    """pcapng options -> {code: [raw values]}."""
    opts = {}
    pos = 0
    while pos + 4 <= len(buf):
        code, length = struct.unpack_from(endian + "HH", buf, pos)
        pos += 4
        if code == 0:
            break
        if pos + length > len(buf):
            raise PcapError(f"option {code} runs past its block")
        opts.setdefault(code, []).append(bytes(buf[pos:pos + length]))
        pos += (length + 3) & ~3
    return opts


def _read_pcap(b, path, lenient):
    magic_le = struct.unpack_from("<I", b, 0)[0]
    if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        e = "<"
    else:
        e = ">"
    magic = struct.unpack_from(e + "I", b, 0)[0]
    nano = magic == PCAP_MAGIC_NS
    _vmaj, _vmin, _zone, _sig, snaplen, linktype = struct.unpack_from(e + "HHiIII", b, 4)
    recs = []
    pos = 24
    err = None
    while pos < len(b):
        if pos + 16 > len(b):
            err = PcapError(f"{path}: record header cut short", pos, len(recs))
            break
        sec, frac, caplen, wirelen = struct.unpack_from(e + "IIII", b, pos)
        if pos + 16 + caplen > len(b):
            err = PcapError(f"{path}: record data cut short", pos, len(recs))
            break
        # Fractions of a second >= 1 s occur in damaged captures; they are
        # kept and simply add up, as libpcap does.
        ts = sec * 10**9 + (frac if nano else frac * 1000)
        recs.append(Record(ts, caplen, wirelen, bytes(b[pos + 16:pos + 16 + caplen]), 0, pos))
        pos += 16 + caplen
    if err and not lenient:
        raise err
    lt = linktype & LINKTYPE_MASK
    iface = Interface(lt, snaplen, tsresol=9 if nano else 6)
    return Capture("pcap-ns" if nano else "pcap-us", e, recs, [iface], snaplen=snaplen,
                   linktype=lt, size=len(b), error=err, raw_linktype=linktype)


def _read_pcapng(b, path, lenient):
    recs, ifaces, stats = [], [], []
    state = {"sections": 0, "endian": "<", "shb": {}}
    err = None
    try:
        _walk_pcapng(b, path, recs, ifaces, stats, state)
    except PcapError as x:
        if not lenient:
            raise
        err = x
    if state["sections"] == 0 and err is None:
        err = PcapError(f"{path}: no section header", 0)
        if not lenient:
            raise err
    return Capture("pcapng", state["endian"], recs, ifaces, stats, state["shb"],
                   snaplen=ifaces[0].snaplen if ifaces else 0,
                   linktype=ifaces[0].linktype if ifaces else 0, size=len(b),
                   sections=state["sections"], error=err)


def _walk_pcapng(b, path, recs, ifaces, stats, state):
    e = "<"
    pos = 0
    section_ifaces = []  # indexes into ifaces of the current section's interfaces
    while pos < len(b):
        if pos + 12 > len(b):
            raise PcapError(f"{path}: block header cut short", pos, len(recs))
        btype_le = struct.unpack_from("<I", b, pos)[0]
        if btype_le == PCAPNG_SHB:
            if pos + 16 > len(b):
                raise PcapError(f"{path}: section header cut short", pos, len(recs))
            bom = struct.unpack_from("<I", b, pos + 8)[0]
            if bom == PCAPNG_BOM:
                e = "<"
            elif bom == 0x4D3C2B1A:
                e = ">"
            else:
                raise PcapError(f"{path}: bad byte-order magic", pos, len(recs))
        btype, blen = struct.unpack_from(e + "II", b, pos)
        if blen < 12 or blen % 4 != 0:
            raise PcapError(f"{path}: bad block length {blen}", pos, len(recs))
        if pos + blen > len(b):
            raise PcapError(f"{path}: block cut short", pos, len(recs))
        trailer = struct.unpack_from(e + "I", b, pos + blen - 4)[0]
        if trailer != blen:
            raise PcapError(f"{path}: block lengths differ ({blen} vs {trailer})", pos, len(recs))
        body = b[pos + 8:pos + blen - 4]
        if btype == PCAPNG_SHB:
            state["sections"] += 1
            section_ifaces = []
            if state["sections"] == 1:
                state["endian"] = e
                state["shb"] = _parse_options(body[16:], e)
        elif btype == BT_IDB:
            lt, _res, snap = struct.unpack_from(e + "HHI", body, 0)
            opts = _parse_options(body[8:], e)
            iface = Interface(lt, snap, options=opts)
            if 2 in opts:
                iface.name = opts[2][0].rstrip(b"\0").decode("utf-8", "replace")
            if 11 in opts:
                iface.filter = opts[11][0]
            if 9 in opts:
                iface.tsresol = opts[9][0][0]
            if 14 in opts:
                iface.tsoffset = struct.unpack(e + "q", opts[14][0][:8])[0]
            section_ifaces.append(len(ifaces))
            ifaces.append(iface)
        elif btype == BT_EPB or btype == BT_PB:
            if btype == BT_EPB:
                ifid, tsh, tsl, caplen, wirelen = struct.unpack_from(e + "IIIII", body, 0)
            else:
                ifid, _drops, tsh, tsl, caplen, wirelen = struct.unpack_from(e + "HHIIII", body, 0)
            if ifid >= len(section_ifaces):
                raise PcapError(f"{path}: packet for unknown interface {ifid}", pos, len(recs))
            if 20 + caplen > len(body):
                raise PcapError(f"{path}: packet data runs past its block", pos, len(recs))
            iface = ifaces[section_ifaces[ifid]]
            ts = iface.ticks_to_ns((tsh << 32) | tsl) + iface.tsoffset * 10**9
            recs.append(Record(ts, caplen, wirelen, bytes(body[20:20 + caplen]),
                               section_ifaces[ifid], pos))
        elif btype == BT_SPB:
            if not section_ifaces:
                raise PcapError(f"{path}: simple packet before any interface", pos, len(recs))
            wirelen = struct.unpack_from(e + "I", body, 0)[0]
            iface = ifaces[section_ifaces[0]]
            caplen = min(wirelen, iface.snaplen or wirelen, len(body) - 4)
            recs.append(Record(0, caplen, wirelen, bytes(body[4:4 + caplen]), section_ifaces[0], pos))
        elif btype == BT_ISB:
            ifid, tsh, tsl = struct.unpack_from(e + "III", body, 0)
            stats.append(InterfaceStats(ifid, (tsh << 32) | tsl, _parse_options(body[12:], e),
                                        pos))
        pos += blen


def file_kind(path):
    """'pcap-us', 'pcap-ns', 'pcapng' or None, from the first four bytes."""
    with open(path, "rb") as f:
        return bytes_kind(f.read(4))


def bytes_kind(head):
    """file_kind() of a capture's first bytes."""
    if len(head) < 4:
        return None
    for e in "<>":
        m = struct.unpack_from(e + "I", head)[0]
        if m == PCAP_MAGIC_US:
            return "pcap-us"
        if m == PCAP_MAGIC_NS:
            return "pcap-ns"
    if struct.unpack_from("<I", head)[0] == PCAPNG_SHB:
        return "pcapng"
    return None


def read_capture(path, lenient=False):
    """Reads a whole capture file. Raises PcapError if it is damaged, unless
    lenient, in which case the records before the damage are returned and
    Capture.error says what stopped the reading (for files still being
    written)."""
    with open(path, "rb") as f:
        return read_capture_bytes(f.read(), lenient, path)


def read_capture_bytes(b, lenient=False, path="<bytes>"):
    """read_capture() of a capture's bytes (a pipe's output)."""
    kind = bytes_kind(b[:4])
    if kind is None:
        raise PcapError(f"{path}: not a pcap or pcapng file", 0)
    if kind == "pcapng":
        return _read_pcapng(b, path, lenient)
    if len(b) < 24:
        err = PcapError(f"{path}: pcap header cut short", len(b))
        if not lenient:
            raise err
        return Capture(kind, "<", [], [], size=len(b), error=err)
    return _read_pcap(b, path, lenient)


# ---------------------------------------------------------------- writing

@dataclass
class Packet:
    ts_ns: int
    data: bytes
    wirelen: Optional[int] = None  # None: len(data)


def write_pcap(path, packets, nano=False, snaplen=262144, linktype=1, endian="<"):
    """Writes packets as a classic pcap file. With nano=False the timestamps
    are truncated to microseconds. Returns the byte offset of every record."""
    offsets = []
    out = bytearray()
    out += struct.pack(endian + "IHHiIII", PCAP_MAGIC_NS if nano else PCAP_MAGIC_US, 2, 4, 0, 0,
                       snaplen, linktype)
    for p in packets:
        sec, frac = divmod(p.ts_ns, 10**9)
        if not nano:
            frac //= 1000
        wl = len(p.data) if p.wirelen is None else p.wirelen
        offsets.append(len(out))
        out += struct.pack(endian + "IIII", sec, frac, len(p.data), wl)
        out += p.data
    with open(path, "wb") as f:
        f.write(out)
    return offsets


def write_pcapng(path, packets, if_name="gen0", tsresol=9, snaplen=262144, linktype=1):
    """Writes packets as a one-interface pcapng file whose timestamps are in
    units of 10^-tsresol s (truncated)."""
    def opt(code, value):
        return struct.pack("<HH", code, len(value)) + value + b"\0" * ((4 - len(value) % 4) % 4)

    def block(btype, body):
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    out = bytearray()
    out += block(PCAPNG_SHB, struct.pack("<IHHq", PCAPNG_BOM, 1, 0, -1) + opt(4, b"linecap tests")
                 + opt(0, b""))
    out += block(BT_IDB, struct.pack("<HHI", linktype, 0, snaplen) + opt(2, if_name.encode())
                 + opt(9, bytes([tsresol])) + opt(0, b""))
    for p in packets:
        ticks = p.ts_ns // 10 ** (9 - tsresol)
        wl = len(p.data) if p.wirelen is None else p.wirelen
        pad = b"\0" * ((4 - len(p.data) % 4) % 4)
        out += block(BT_EPB, struct.pack("<IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                         len(p.data), wl) + p.data + pad)
    with open(path, "wb") as f:
        f.write(out)


# libpcap's largest snapshot length for Ethernet and most link types.
MAX_SNAPLEN = 262144


def as_libpcap_reads(cap):
    """The records of an input file as libpcap hands them to a program: a
    record longer than the file's snapshot length is cut to it (libpcap's
    sf-pcap.c / sf-pcapng.c), the snapshot length being MAX_SNAPLEN when the
    header's is 0 or larger. Returns new Record objects."""
    out = []
    for r in cap.records:
        snap = cap.interfaces[r.ifid].snaplen if cap.interfaces else cap.snaplen
        if snap <= 0 or snap > MAX_SNAPLEN:
            snap = MAX_SNAPLEN
        cl = min(r.caplen, snap)
        out.append(Record(r.ts_ns, cl, r.wirelen, r.data[:cl], r.ifid, r.offset))
    return out


# ----------------------------------------------------------------- frames

def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


_V4_NET = ipaddress.ip_network("198.18.0.0/15")
_V6_NET = ipaddress.ip_network("2001:db8::/32")


def _v4(a):
    ip = ipaddress.IPv4Address(a)
    if ip not in _V4_NET:
        raise ValueError(f"{a}: test frames use 198.18.0.0/15 only")
    return ip.packed


def _v6(a):
    ip = ipaddress.IPv6Address(a)
    if ip not in _V6_NET:
        raise ValueError(f"{a}: test frames use 2001:db8::/32 only")
    return ip.packed


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


SRC_MAC = "02:00:00:00:00:01"  # locally administered
DST_MAC = "02:00:00:00:00:02"


def ethernet(payload, ethertype, src=SRC_MAC, dst=DST_MAC):
    return mac(dst) + mac(src) + struct.pack("!H", ethertype) + payload


def ipv4(payload, proto, src, dst, ident=0, ttl=64):
    s, d = _v4(src), _v4(dst)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, ttl,
                      proto, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


def udp(payload, sport, dport, src, dst, v6=False):
    length = 8 + len(payload)
    if v6:
        pseudo = _v6(src) + _v6(dst) + struct.pack("!I3xB", length, 17)
    else:
        pseudo = _v4(src) + _v4(dst) + struct.pack("!BBH", 0, 17, length)
    h = struct.pack("!HHHH", sport, dport, length, 0)
    c = _csum(pseudo + h + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, c) + payload


def tcp(payload, sport, dport, src, dst, seq=1, ack=0, flags=0x18, window=65535):
    pseudo = _v4(src) + _v4(dst) + struct.pack("!BBH", 0, 6, 20 + len(payload))
    h = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    c = _csum(pseudo + h + payload)
    return h[:16] + struct.pack("!H", c) + h[18:] + payload


def eth_ipv4_udp(payload, src="198.18.0.1", dst="198.18.0.2", sport=40000, dport=9, ident=0):
    u = udp(payload, sport, dport, src, dst)
    return ethernet(ipv4(u, 17, src, dst, ident), 0x0800)


def eth_ipv4_tcp(payload, src="198.18.0.1", dst="198.18.0.2", sport=40000, dport=80, seq=1,
                 ack=0, flags=0x18, ident=0):
    t = tcp(payload, sport, dport, src, dst, seq, ack, flags)
    return ethernet(ipv4(t, 6, src, dst, ident), 0x0800)


def eth_ipv6_udp(payload, src="2001:db8::1", dst="2001:db8::2", sport=40000, dport=9):
    u = udp(payload, sport, dport, src, dst, v6=True)
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(u), 17, 64, _v6(src), _v6(dst))
    return ethernet(hdr + u, 0x86DD)
