#include "packet/headers.hh"

namespace linecap::packet {
namespace {

constexpr uint16_t kEtherIpv4 = 0x0800;
constexpr uint16_t kEtherIpv6 = 0x86dd;
constexpr uint16_t kEtherVlan = 0x8100;
constexpr uint16_t kEtherQinQ = 0x88a8;
constexpr uint16_t kEtherQinQOld = 0x9100;

inline uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t rd32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
           static_cast<uint32_t>(p[2]) << 8 | p[3];
}

/* h.l4, h.end and h.cap_end are set, l4 <= cap_end <= end. */
WalkStatus walk_transport(const uint8_t* f, Headers& h) {
    h.payload = h.l4;
    h.payload_end = h.end;
    if (h.frag_offset != 0) return WalkStatus::kOk;
    const uint8_t* l4 = f + h.l4;
    const uint32_t wire = h.end - h.l4;
    const uint32_t cap = h.cap_end - h.l4;
    if (h.proto == kProtoTcp) {
        if (cap < 20 || wire < 20) return WalkStatus::kTruncated;
        const uint32_t doff = static_cast<uint32_t>(l4[12] >> 4) * 4;
        if (doff < 20 || doff > wire) return WalkStatus::kMalformed;
        h.sport = rd16(l4);
        h.dport = rd16(l4 + 2);
        h.has_ports = true;
        h.payload = h.l4 + doff;
    } else if (h.proto == kProtoUdp) {
        if (cap < 8 || wire < 8) return WalkStatus::kTruncated;
        const uint32_t ulen = rd16(l4 + 4);
        if (ulen != 0 && ulen < 8) return WalkStatus::kMalformed;
        h.sport = rd16(l4);
        h.dport = rd16(l4 + 2);
        h.has_ports = true;
        h.payload = h.l4 + 8;
        if (ulen != 0 && ulen < wire) h.payload_end = h.l4 + ulen;
    } else if (h.proto == kProtoNoNext) {
        h.payload_end = h.l4;
    }
    return WalkStatus::kOk;
}

WalkStatus walk_ipv4(const uint8_t* f, uint32_t caplen, uint32_t off, Headers& h) {
    const uint8_t* p = f + off;
    const uint32_t avail = caplen - off;
    if (avail < 20) return WalkStatus::kTruncated;
    if ((p[0] >> 4) != 4) return WalkStatus::kMalformed;
    const uint32_t ihl = static_cast<uint32_t>(p[0] & 0x0f) * 4;
    if (ihl < 20) return WalkStatus::kMalformed;
    if (avail < ihl) return WalkStatus::kTruncated;
    uint32_t total = rd16(p + 2);
    if (total == 0) total = avail;
    if (total < ihl) return WalkStatus::kMalformed;
    h.ip_version = 4;
    h.l3 = off;
    h.ttl = p[8];
    h.proto = p[9];
    h.has_ip_id = true;
    h.ip_id = rd16(p + 4);
    const uint16_t frag = rd16(p + 6);
    h.frag_offset = static_cast<uint16_t>((frag & 0x1fff) * 8);
    h.fragment = (frag & 0x2000) != 0 || h.frag_offset != 0;
    h.l4 = off + ihl;
    h.end = off + total;
    h.cap_end = total < avail ? h.end : caplen;
    return walk_transport(f, h);
}

WalkStatus walk_ipv6(const uint8_t* f, uint32_t caplen, uint32_t off, Headers& h) {
    const uint8_t* p = f + off;
    const uint32_t avail = caplen - off;
    if (avail < 40) return WalkStatus::kTruncated;
    if ((p[0] >> 4) != 6) return WalkStatus::kMalformed;
    uint32_t plen = rd16(p + 4);
    if (plen == 0) plen = avail - 40;
    h.ip_version = 6;
    h.l3 = off;
    h.ttl = p[7];
    h.end = off + 40 + plen;
    h.cap_end = h.end < caplen ? h.end : caplen;
    uint8_t next = p[6];
    uint32_t at = off + 40;
    while (is_ipv6_ext_header(next)) {
        if (h.ext_headers == kMaxIpv6ExtHeaders) return WalkStatus::kMalformed;
        if (h.end - at < 8) return WalkStatus::kMalformed;
        if (h.cap_end - at < 8) return WalkStatus::kTruncated;
        const uint8_t* x = f + at;
        uint32_t len;
        if (next == 44) {
            h.fragment = true;
            h.has_ip_id = true;
            h.frag_offset = static_cast<uint16_t>(rd16(x + 2) & 0xfff8);
            h.ip_id = rd32(x + 4);
            len = 8;
        } else if (next == 51) {
            len = (static_cast<uint32_t>(x[1]) + 2) * 4;
        } else {
            len = (static_cast<uint32_t>(x[1]) + 1) * 8;
        }
        if (h.end - at < len) return WalkStatus::kMalformed;
        if (h.cap_end - at < len) return WalkStatus::kTruncated;
        h.ext_headers++;
        next = x[0];
        at += len;
        if (h.frag_offset != 0) break; /* what follows is fragment data */
    }
    h.proto = next;
    h.l4 = at;
    return walk_transport(f, h);
}

}  // namespace

WalkStatus walk_ip(const uint8_t* f, uint32_t caplen, uint32_t off, Headers& h) {
    if (off >= caplen) return WalkStatus::kTruncated;
    switch (f[off] >> 4) {
        case 4: return walk_ipv4(f, caplen, off, h);
        case 6: return walk_ipv6(f, caplen, off, h);
        default: return WalkStatus::kNotIp;
    }
}

WalkStatus walk_ethertype(const uint8_t* f, uint32_t caplen, uint32_t off, uint16_t type,
                          Headers& h) {
    if (off > caplen) return WalkStatus::kTruncated;
    while (type == kEtherVlan || type == kEtherQinQ || type == kEtherQinQOld) {
        if (h.vlan_tags == kMaxVlanTags) return WalkStatus::kMalformed;
        if (caplen - off < 4) return WalkStatus::kTruncated;
        type = rd16(f + off + 2);
        off += 4;
        h.vlan_tags++;
    }
    h.ethertype = type;
    if (type == kEtherIpv4) return walk_ipv4(f, caplen, off, h);
    if (type == kEtherIpv6) return walk_ipv6(f, caplen, off, h);
    return WalkStatus::kNotIp;
}

WalkStatus walk_ethernet(const uint8_t* f, uint32_t caplen, Headers& h) {
    if (caplen < 14) return WalkStatus::kTruncated;
    return walk_ethertype(f, caplen, 14, rd16(f + 12), h);
}

}  // namespace linecap::packet
