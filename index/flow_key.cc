#include "index/flow_key.hh"

#include <arpa/inet.h>

#include <cstdio>
#include <utility>

#include "packet/headers.hh"

namespace linecap::index {
namespace {

constexpr uint16_t kDltEn10mb = 1;
constexpr uint16_t kDltRaw = 12;
constexpr uint16_t kDltRawBsd = 14;
constexpr uint16_t kDltLinuxSll = 113;
constexpr uint16_t kLinktypeRaw = 101;

inline uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

/* The tags between the first type field (at type_at) and the EtherType. */
bool fill_tags(const uint8_t* f, uint32_t type_at, uint8_t tags, FlowKey& k) {
    if (tags > 2) return false;
    k.vlan_tags = tags;
    for (uint8_t i = 0; i < tags; i++) {
        k.tpid[i] = rd16(f + type_at + 4u * i);
        k.vid[i] = rd16(f + type_at + 4u * i + 2) & 0x0fff;
    }
    return true;
}

}  // namespace

void make_flow_key(uint16_t linktype, const uint8_t* f, uint32_t caplen, FlowKey& k) {
    std::memset(&k, 0, sizeof(k));
    k.linktype = linktype;
    packet::Headers h;
    packet::WalkStatus st;
    uint32_t type_at = 0;  // the first type field; 0: raw IP
    switch (linktype) {
        case kDltEn10mb:
            if (caplen < 14) return;
            type_at = 12;
            st = packet::walk_ethernet(f, caplen, h);
            break;
        case kDltLinuxSll:
            if (caplen < 16) return;
            type_at = 14;
            st = packet::walk_ethertype(f, caplen, 16, rd16(f + 14), h);
            break;
        case kDltRaw:
        case kDltRawBsd:
        case kLinktypeRaw: st = packet::walk_ip(f, caplen, 0, h); break;
        default: return;
    }
    if (st == packet::WalkStatus::kNotIp) {
        if (type_at == 0 || !fill_tags(f, type_at, h.vlan_tags, k)) return;
        k.kind = FlowKind::kLink;
        k.ethertype = h.ethertype;
        k.l3_offset = static_cast<uint16_t>(type_at + 2 + 4u * h.vlan_tags);
        return;
    }
    if (st != packet::WalkStatus::kOk) return;
    if (type_at != 0 && !fill_tags(f, type_at, h.vlan_tags, k)) return;
    k.kind = FlowKind::kIp;
    k.ethertype = h.ethertype;
    k.l3_offset = static_cast<uint16_t>(h.l3);
    k.l4_offset = static_cast<uint16_t>(h.l4 - h.l3);
    k.ip_version = h.ip_version;
    k.first_nxt = h.ip_version == 4 ? f[h.l3 + 9] : f[h.l3 + 6];
    k.proto = h.proto;
    std::memcpy(k.src, f + h.src_offset(), h.addr_len());
    std::memcpy(k.dst, f + h.dst_offset(), h.addr_len());
    if (h.fragment) k.flags |= kFlowFragment;
    if (h.frag_offset != 0) k.flags |= kFlowLaterFragment;
    if (h.has_ports) {
        k.flags |= kFlowHasPorts;
        k.sport = h.sport;
        k.dport = h.dport;
    }
    // Both directions one flow: the lower (address, port) first.
    const int c = std::memcmp(k.src, k.dst, 16);
    if (c > 0 || (c == 0 && k.sport > k.dport)) {
        uint8_t t[16];
        std::memcpy(t, k.src, 16);
        std::memcpy(k.src, k.dst, 16);
        std::memcpy(k.dst, t, 16);
        std::swap(k.sport, k.dport);
    }
}

uint64_t hash_flow_key(const FlowKey& k) {
    // Eight 64-bit words, multiplied in pairs (64 x 64 -> 128 bits, folded):
    // the four products are independent, so they run in parallel, where a
    // chain of eight multiply-xorshift rounds took 40% of the builder's
    // per-record time (bench/index_bench.cc).
    uint64_t w[8];
    std::memcpy(w, &k, sizeof(w));
    auto mix = [](uint64_t a, uint64_t b) {
        unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
        return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
    };
    uint64_t h = mix(w[0] ^ 0xa0761d6478bd642full, w[1] ^ 0xe7037ed1a0b428dbull) ^
                 mix(w[2] ^ 0x8ebc6af09c88c6e3ull, w[3] ^ 0x589965cc75374cc3ull) ^
                 mix(w[4] ^ 0x1d8e4e27c47d124full, w[5] ^ 0x9e3779b97f4a7c15ull) ^
                 mix(w[6] ^ 0xff51afd7ed558ccdull, w[7] ^ 0xc4ceb9fe1a85ec53ull);
    return mix(h ^ 0xa0761d6478bd642full, 0xe7037ed1a0b428dbull);
}

namespace {

std::string address(const FlowKey& k, const uint8_t* a) {
    char buf[INET6_ADDRSTRLEN];
    if (!inet_ntop(k.ip_version == 4 ? AF_INET : AF_INET6, a, buf, sizeof(buf))) return "?";
    return buf;
}

std::string proto_name(uint8_t p) {
    switch (p) {
        case 1: return "icmp";
        case 6: return "tcp";
        case 17: return "udp";
        case 58: return "icmp6";
        case 132: return "sctp";
        default: return "proto " + std::to_string(p);
    }
}

}  // namespace

std::string describe_flow(const FlowKey& k) {
    std::string s;
    char buf[64];
    if (k.kind == FlowKind::kOpaque) {
        s = "other";
    } else if (k.kind == FlowKind::kLink) {
        std::snprintf(buf, sizeof(buf), "ether type 0x%04x", k.ethertype);
        s = buf;
    } else {
        bool v6 = k.ip_version == 6;
        auto ep = [&](const uint8_t* a, uint16_t port) {
            std::string e = address(k, a);
            if (!(k.flags & kFlowHasPorts)) return e;
            return (v6 ? "[" + e + "]" : e) + ":" + std::to_string(port);
        };
        s = proto_name(k.proto) + " " + ep(k.src, k.sport) + " <> " + ep(k.dst, k.dport);
        if (k.flags & kFlowLaterFragment) s += " fragment";
    }
    for (uint8_t i = 0; i < k.vlan_tags; i++) s += " vlan " + std::to_string(k.vid[i]);
    return s;
}

}  // namespace linecap::index
