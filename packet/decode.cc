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

inline uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t rd32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
           static_cast<uint32_t>(p[2]) << 8 | p[3];
}

WalkStatus walk_link(int linktype, const uint8_t* f, uint32_t caplen, Headers& h) {
    switch (linktype) {
        case kDltEthernet: return walk_ethernet(f, caplen, h);
        case kDltLinuxSll:
            if (caplen < 16) return WalkStatus::kTruncated;
            return walk_ethertype(f, caplen, 16, rd16(f + 14), h);
        case kDltLinuxSll2:
            if (caplen < 20) return WalkStatus::kTruncated;
            return walk_ethertype(f, caplen, 20, rd16(f), h);
        case kDltRaw:
        case kDltRawOpenBsd:
        case kLinktypeRaw:
        case kDltIpv4:
        case kDltIpv6: return walk_ip(f, caplen, 0, h);
        default:
            /* DLT_NULL, DLT_LOOP: a 4-byte address family in host or network
             * order; the IP version nibble says enough. */
            if (caplen < 4) return WalkStatus::kTruncated;
            return walk_ip(f, caplen, 4, h);
    }
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
        case kDltLinuxSll2: return true;
        default: return false;
    }
}

DecodeStatus decode_packet(int linktype, const uint8_t* f, uint32_t caplen, DecodedPacket& out) {
    out = DecodedPacket{};
    if (!linktype_supported(linktype)) return DecodeStatus::kUnsupportedLink;
    Headers h;
    switch (walk_link(linktype, f, caplen, h)) {
        case WalkStatus::kOk: break;
        case WalkStatus::kNotIp: return DecodeStatus::kNotIp;
        case WalkStatus::kTruncated: return DecodeStatus::kTruncated;
        case WalkStatus::kMalformed: return DecodeStatus::kMalformed;
    }
    const Family fam = h.ip_version == 4 ? Family::kIpv4 : Family::kIpv6;
    out.src.family = out.dst.family = fam;
    std::memcpy(out.src.bytes.data(), f + h.src_offset(), h.addr_len());
    std::memcpy(out.dst.bytes.data(), f + h.dst_offset(), h.addr_len());
    out.proto = h.proto;
    out.ttl = h.ttl;
    out.has_ip_id = h.has_ip_id;
    out.fragment = h.fragment;
    out.ip_id = h.ip_id;
    out.frag_offset = h.frag_offset;
    out.has_ports = h.has_ports;
    out.sport = h.sport;
    out.dport = h.dport;
    if (h.has_ports && h.proto == kProtoTcp) {
        const uint8_t* t = f + h.l4;
        out.seq = rd32(t + 4);
        out.ack = rd32(t + 8);
        out.tcp_flags = t[13];
        out.window = rd16(t + 14);
    }
    out.payload_len = h.payload_end - h.payload;
    const uint32_t begin = h.payload < h.cap_end ? h.payload : h.cap_end;
    const uint32_t cap_end = h.payload_end < h.cap_end ? h.payload_end : h.cap_end;
    out.payload = f + begin;
    out.payload_caplen = cap_end > begin ? cap_end - begin : 0;
    return DecodeStatus::kOk;
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
