#include "packet/decode.hh"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace linecap::packet {

namespace {

/* libpcap DLT_ values; spelled out so this file needs no pcap header. */
constexpr int kDltNull = 0;
constexpr int kDltEthernet = 1;
constexpr int kDltRaw = 12;
constexpr int kDltRawOpenBsd = 14;
constexpr int kLinktypeRaw = 101;
constexpr int kDltLoop = 108;
constexpr int kDltLinuxSll = 113;
constexpr int kDltIpv4 = 228;
constexpr int kDltIpv6 = 229;
constexpr int kDltLinuxSll2 = 276;

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

DecodeStatus decode_transport(const uint8_t* l4, uint32_t l4_caplen, uint32_t l4_len,
                              DecodedPacket& out) {
    out.payload = l4;
    out.payload_len = l4_len;
    out.payload_caplen = l4_caplen < l4_len ? l4_caplen : l4_len;
    if (out.fragment && out.frag_offset != 0) return DecodeStatus::kOk;
    if (out.proto == kProtoTcp) {
        if (l4_caplen < 20 || l4_len < 20) return DecodeStatus::kTruncated;
        uint32_t doff = static_cast<uint32_t>(l4[12] >> 4) * 4;
        if (doff < 20 || doff > l4_len) return DecodeStatus::kMalformed;
        out.sport = rd16(l4);
        out.dport = rd16(l4 + 2);
        out.seq = rd32(l4 + 4);
        out.ack = rd32(l4 + 8);
        out.tcp_flags = l4[13];
        out.window = rd16(l4 + 14);
        out.has_ports = true;
        out.payload_len = l4_len - doff;
        out.payload = l4 + doff;
        out.payload_caplen = l4_caplen > doff ? l4_caplen - doff : 0;
        if (out.payload_caplen > out.payload_len) out.payload_caplen = out.payload_len;
        if (l4_caplen < doff) out.payload = l4 + l4_caplen;
    } else if (out.proto == kProtoUdp) {
        if (l4_caplen < 8 || l4_len < 8) return DecodeStatus::kTruncated;
        out.sport = rd16(l4);
        out.dport = rd16(l4 + 2);
        out.has_ports = true;
        out.payload_len = l4_len - 8;
        out.payload = l4 + 8;
        out.payload_caplen = l4_caplen - 8;
        if (out.payload_caplen > out.payload_len) out.payload_caplen = out.payload_len;
    }
    return DecodeStatus::kOk;
}

DecodeStatus decode_ipv4(const uint8_t* p, uint32_t caplen, DecodedPacket& out) {
    if (caplen < 20) return DecodeStatus::kTruncated;
    if ((p[0] >> 4) != 4) return DecodeStatus::kMalformed;
    uint32_t ihl = static_cast<uint32_t>(p[0] & 0x0f) * 4;
    if (ihl < 20) return DecodeStatus::kMalformed;
    if (caplen < ihl) return DecodeStatus::kTruncated;
    uint32_t total = rd16(p + 2);
    /* Frames captured before segmentation offload can carry a total length
     * of 0; the captured length is then the best estimate. */
    if (total == 0) total = caplen;
    if (total < ihl) return DecodeStatus::kMalformed;
    out.src.family = out.dst.family = Family::kIpv4;
    std::memcpy(out.src.bytes.data(), p + 12, 4);
    std::memcpy(out.dst.bytes.data(), p + 16, 4);
    out.ttl = p[8];
    out.proto = p[9];
    out.has_ip_id = true;
    out.ip_id = rd16(p + 4);
    uint16_t frag = rd16(p + 6);
    out.frag_offset = static_cast<uint16_t>((frag & 0x1fff) * 8);
    out.fragment = (frag & 0x2000) != 0 || out.frag_offset != 0;
    uint32_t l4_caplen = (caplen < total ? caplen : total) - ihl;
    return decode_transport(p + ihl, l4_caplen, total - ihl, out);
}

DecodeStatus decode_ipv6(const uint8_t* p, uint32_t caplen, DecodedPacket& out) {
    if (caplen < 40) return DecodeStatus::kTruncated;
    if ((p[0] >> 4) != 6) return DecodeStatus::kMalformed;
    uint32_t plen = rd16(p + 4);
    if (plen == 0) plen = caplen - 40; /* jumbogram or offload capture */
    out.src.family = out.dst.family = Family::kIpv6;
    std::memcpy(out.src.bytes.data(), p + 8, 16);
    std::memcpy(out.dst.bytes.data(), p + 24, 16);
    out.ttl = p[7];
    uint8_t next = p[6];
    uint32_t off = 40;
    uint32_t end = 40 + plen;
    uint32_t cap_end = caplen < end ? caplen : end;
    for (int hops = 0; hops < 8; hops++) {
        if (next == 0 || next == 43 || next == 60) {
            if (off + 8 > cap_end) return DecodeStatus::kTruncated;
            uint32_t len = (static_cast<uint32_t>(p[off + 1]) + 1) * 8;
            next = p[off];
            off += len;
        } else if (next == 44) {
            if (off + 8 > cap_end) return DecodeStatus::kTruncated;
            uint16_t fo = rd16(p + off + 2);
            out.frag_offset = static_cast<uint16_t>(fo & 0xfff8);
            out.fragment = true;
            out.has_ip_id = true;
            out.ip_id = rd32(p + off + 4);
            next = p[off];
            off += 8;
        } else if (next == 51) {
            if (off + 8 > cap_end) return DecodeStatus::kTruncated;
            uint32_t len = (static_cast<uint32_t>(p[off + 1]) + 2) * 4;
            next = p[off];
            off += len;
        } else {
            break;
        }
        if (off > end) return DecodeStatus::kMalformed;
    }
    out.proto = next;
    if (off > cap_end) return DecodeStatus::kTruncated;
    return decode_transport(p + off, cap_end - off, end - off, out);
}

DecodeStatus decode_ip(const uint8_t* p, uint32_t caplen, DecodedPacket& out) {
    if (caplen < 1) return DecodeStatus::kTruncated;
    switch (p[0] >> 4) {
        case 4:
            return decode_ipv4(p, caplen, out);
        case 6:
            return decode_ipv6(p, caplen, out);
        default:
            return DecodeStatus::kNotIp;
    }
}

DecodeStatus decode_ethertype(uint16_t type, const uint8_t* p, uint32_t caplen,
                              DecodedPacket& out) {
    /* Skip any stack of VLAN tags: each is TCI(2) + inner type(2). */
    for (int tags = 0; type == kEtherVlan || type == kEtherQinQ || type == kEtherQinQOld; tags++) {
        if (tags == 8) return DecodeStatus::kMalformed;
        if (caplen < 4) return DecodeStatus::kTruncated;
        type = rd16(p + 2);
        p += 4;
        caplen -= 4;
    }
    if (type == kEtherIpv4) return decode_ipv4(p, caplen, out);
    if (type == kEtherIpv6) return decode_ipv6(p, caplen, out);
    return DecodeStatus::kNotIp;
}

}  // namespace

bool linktype_supported(int lt) {
    switch (lt) {
        case kDltNull:
        case kDltEthernet:
        case kDltRaw:
        case kDltRawOpenBsd:
        case kLinktypeRaw:
        case kDltLoop:
        case kDltLinuxSll:
        case kDltIpv4:
        case kDltIpv6:
        case kDltLinuxSll2:
            return true;
        default:
            return false;
    }
}

DecodeStatus decode_packet(int linktype, const uint8_t* f, uint32_t caplen, DecodedPacket& out) {
    out = DecodedPacket{};
    switch (linktype) {
        case kDltEthernet:
            if (caplen < 14) return DecodeStatus::kTruncated;
            return decode_ethertype(rd16(f + 12), f + 14, caplen - 14, out);
        case kDltLinuxSll:
            if (caplen < 16) return DecodeStatus::kTruncated;
            return decode_ethertype(rd16(f + 14), f + 16, caplen - 16, out);
        case kDltLinuxSll2:
            if (caplen < 20) return DecodeStatus::kTruncated;
            return decode_ethertype(rd16(f), f + 20, caplen - 20, out);
        case kDltRaw:
        case kDltRawOpenBsd:
        case kLinktypeRaw:
        case kDltIpv4:
        case kDltIpv6:
            return decode_ip(f, caplen, out);
        case kDltNull:
        case kDltLoop:
            /* 4-byte address family in host or network order; the IP
             * version nibble says enough. */
            if (caplen < 4) return DecodeStatus::kTruncated;
            return decode_ip(f + 4, caplen - 4, out);
        default:
            return DecodeStatus::kUnsupportedLink;
    }
}

std::string to_string(const IpAddress& a) {
    char buf[INET6_ADDRSTRLEN] = "?";
    if (a.family == Family::kIpv4) {
        inet_ntop(AF_INET, a.bytes.data(), buf, sizeof buf);
    } else if (a.family == Family::kIpv6) {
        inet_ntop(AF_INET6, a.bytes.data(), buf, sizeof buf);
    }
    return buf;
}

std::string to_string(const Endpoint& e) {
    if (e.addr.family == Family::kIpv6) {
        return "[" + to_string(e.addr) + "]:" + std::to_string(e.port);
    }
    return to_string(e.addr) + ":" + std::to_string(e.port);
}

bool parse_ip_address(std::string_view text, IpAddress& out) {
    std::string s(text);
    out = IpAddress{};
    if (inet_pton(AF_INET, s.c_str(), out.bytes.data()) == 1) {
        out.family = Family::kIpv4;
        return true;
    }
    if (inet_pton(AF_INET6, s.c_str(), out.bytes.data()) == 1) {
        out.family = Family::kIpv6;
        return true;
    }
    out = IpAddress{};
    return false;
}

bool parse_endpoint(std::string_view text, Endpoint& out, bool& has_port) {
    out = Endpoint{};
    has_port = false;
    std::string_view addr = text;
    std::string_view port;
    if (!text.empty() && text.front() == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos) return false;
        addr = text.substr(1, close - 1);
        std::string_view rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':' || rest.size() < 2) return false;
            port = rest.substr(1);
        }
    } else if (std::count(text.begin(), text.end(), ':') == 1) {
        size_t colon = text.find(':');
        addr = text.substr(0, colon);
        port = text.substr(colon + 1);
        if (port.empty()) return false;
    }
    if (!parse_ip_address(addr, out.addr)) return false;
    if (!port.empty()) {
        unsigned v = 0;
        auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
        if (ec != std::errc() || ptr != port.data() + port.size() || v > 65535) return false;
        out.port = static_cast<uint16_t>(v);
        has_port = true;
    }
    return true;
}

}  // namespace linecap::packet
