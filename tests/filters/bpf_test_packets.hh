/* Test packets for the BPF tests: frames built field by field (Ethernet,
 * 802.1Q/802.1ad, IPv4, IPv6 with extension headers, TCP, UDP, ICMP, ARP) and
 * the Ethernet captures of tests/data/tcpdump-tests read with libpcap. */
#pragma once

#include <pcap/pcap.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace linecap::filters::testing {

struct TestPacket {
    std::vector<uint8_t> bytes;  // caplen = bytes.size()
    uint32_t wirelen = 0;
    std::string origin;  // "file.pcap#12", "gen:tcp#3/prefix 17", ...
};

/* Appends fields in network byte order. */
class Frame {
public:
    Frame& u8(uint32_t v) {
        b_.push_back(static_cast<uint8_t>(v));
        return *this;
    }
    Frame& u16(uint32_t v) { return u8(v >> 8).u8(v); }
    Frame& u32(uint32_t v) { return u16(v >> 16).u16(v); }
    Frame& bytes(const std::vector<uint8_t>& v) {
        b_.insert(b_.end(), v.begin(), v.end());
        return *this;
    }
    Frame& text(const std::string& s) {
        b_.insert(b_.end(), s.begin(), s.end());
        return *this;
    }
    Frame& zeros(size_t n) {
        b_.insert(b_.end(), n, 0);
        return *this;
    }
    Frame& mac(const uint8_t (&m)[6]) {
        for (uint8_t x : m) u8(x);
        return *this;
    }
    size_t size() const { return b_.size(); }
    std::vector<uint8_t>& raw() { return b_; }
    void put16(size_t at, uint32_t v) {
        b_[at] = static_cast<uint8_t>(v >> 8);
        b_[at + 1] = static_cast<uint8_t>(v);
    }

private:
    std::vector<uint8_t> b_;
};

inline uint32_t ipv4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    return uint32_t{a} << 24 | uint32_t{b} << 16 | uint32_t{c} << 8 | d;
}

/* Deterministic generator (xorshift) so failures reproduce. */
class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed ? seed : 1) {}
    uint64_t next() {
        s_ ^= s_ << 13;
        s_ ^= s_ >> 7;
        s_ ^= s_ << 17;
        return s_;
    }
    uint32_t below(uint32_t n) { return static_cast<uint32_t>(next() % n); }
    template <class T>
    const T& pick(const std::vector<T>& v) {
        return v[below(static_cast<uint32_t>(v.size()))];
    }

private:
    uint64_t s_;
};

enum class L4 { kTcp, kUdp, kIcmp, kOther };

struct GenSpec {
    std::vector<uint16_t> vlans;  // outer first; first uses 0x88a8 when qinq
    bool qinq = false;
    bool v6 = false;
    uint32_t src4 = 0, dst4 = 0;
    uint16_t src6_tail = 1, dst6_tail = 2;
    std::vector<uint8_t> v6_ext;  // extension header types to chain
    L4 l4 = L4::kTcp;
    uint8_t ip_proto_other = 47;
    uint16_t sport = 1024, dport = 80;
    uint8_t tcp_flags = 0x02;
    uint8_t tcp_doff = 5;
    uint8_t icmp_type = 8, icmp_code = 0;
    uint8_t ihl = 5;
    uint8_t tos = 0, ttl = 64;
    uint16_t frag = 0;         // flags+offset field
    int32_t ip_len_delta = 0;  // added to the correct total length
    std::string payload;
};

inline void put_ethernet(Frame& f, const GenSpec& g, uint16_t ethertype) {
    static const uint8_t dst[6] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05};
    static const uint8_t src[6] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55};
    f.mac(dst).mac(src);
    for (size_t i = 0; i < g.vlans.size(); i++) {
        f.u16(g.qinq && i == 0 ? 0x88a8 : 0x8100);
        f.u16(g.vlans[i]);
    }
    f.u16(ethertype);
}

inline void put_l4(Frame& f, const GenSpec& g) {
    switch (g.l4) {
        case L4::kTcp:
            f.u16(g.sport).u16(g.dport).u32(0x11223344).u32(0x55667788);
            f.u8(static_cast<uint32_t>(g.tcp_doff) << 4).u8(g.tcp_flags).u16(65535).u16(0).u16(0);
            for (int i = 5; i < g.tcp_doff; i++) f.u32(0x01010101);  // NOP options
            f.text(g.payload);
            break;
        case L4::kUdp:
            f.u16(g.sport).u16(g.dport).u16(8 + static_cast<uint32_t>(g.payload.size())).u16(0);
            f.text(g.payload);
            break;
        case L4::kIcmp:
            f.u8(g.icmp_type).u8(g.icmp_code).u16(0).u32(0x12340001);
            f.text(g.payload);
            break;
        case L4::kOther: f.text(g.payload); break;
    }
}

inline uint8_t l4_proto(const GenSpec& g) {
    switch (g.l4) {
        case L4::kTcp: return 6;
        case L4::kUdp: return 17;
        case L4::kIcmp: return g.v6 ? 58 : 1;
        default: return g.ip_proto_other;
    }
}

inline std::vector<uint8_t> build(const GenSpec& g) {
    Frame f;
    put_ethernet(f, g, g.v6 ? 0x86dd : 0x0800);
    const size_t ip_at = f.size();
    if (!g.v6) {
        f.u8(0x40 | (g.ihl & 0xf)).u8(g.tos).u16(0).u16(0x1234).u16(g.frag);
        f.u8(g.ttl).u8(l4_proto(g)).u16(0).u32(g.src4).u32(g.dst4);
        for (int i = 5; i < g.ihl; i++) f.u32(0x01010101);
        put_l4(f, g);
        const int32_t len = static_cast<int32_t>(f.size() - ip_at) + g.ip_len_delta;
        f.put16(ip_at + 2, static_cast<uint32_t>(len < 0 ? 0 : len));
    } else {
        const uint8_t first = g.v6_ext.empty() ? l4_proto(g) : g.v6_ext[0];
        f.u32(0x60000000).u16(0).u8(first).u8(g.ttl);
        f.u32(0x20010db8).u32(0).u32(0).u32(g.src6_tail);
        f.u32(0x20010db8).u32(0).u32(0).u32(g.dst6_tail);
        for (size_t i = 0; i < g.v6_ext.size(); i++) {
            const uint8_t nh = i + 1 < g.v6_ext.size() ? g.v6_ext[i + 1] : l4_proto(g);
            if (g.v6_ext[i] == 44) {  // fragment header: fixed 8 bytes
                f.u8(nh).u8(0).u16(g.frag).u32(0xabcdef01);
            } else if (g.v6_ext[i] == 51) {  // AH: length in 4-byte units minus 2
                f.u8(nh).u8(4).u16(0).u32(0x100).u32(1).u32(0).u32(0).u32(0);
            } else {  // hop-by-hop, routing, destination options: 8-byte units
                f.u8(nh).u8(0).u16(0x0104).u32(0);
            }
        }
        put_l4(f, g);
        const int32_t len = static_cast<int32_t>(f.size() - ip_at - 40) + g.ip_len_delta;
        f.put16(ip_at + 4, static_cast<uint32_t>(len < 0 ? 0 : len));
    }
    return std::move(f.raw());
}

inline std::vector<uint8_t> build_arp(uint16_t op, uint32_t spa, uint32_t tpa, bool rarp,
                                      std::vector<uint16_t> vlans = {}) {
    GenSpec g;
    g.vlans = std::move(vlans);
    Frame f;
    put_ethernet(f, g, rarp ? 0x8035 : 0x0806);
    f.u16(1).u16(0x0800).u8(6).u8(4).u16(op);
    f.u32(0x00112233).u16(0x4455).u32(spa);
    f.u32(0).u16(0).u32(tpa);
    return std::move(f.raw());
}

/* A few thousand frames mixing the addresses, ports, flags and payloads the
 * test expressions look for, plus malformed headers. */
inline std::vector<TestPacket> generated_packets() {
    std::vector<TestPacket> out;
    Rng rng(0x5eed1234abcdULL);
    const std::vector<uint32_t> addrs = {
        ipv4(192, 168, 152, 100), ipv4(192, 168, 152, 101), ipv4(192, 168, 152, 3),
        ipv4(192, 168, 152, 254), ipv4(192, 168, 152, 200), ipv4(192, 168, 1, 1),
        ipv4(10, 0, 0, 1),        ipv4(10, 0, 0, 2),        ipv4(172, 16, 2, 226),
        ipv4(223, 5, 5, 5),       ipv4(198, 18, 0, 1),      ipv4(10, 37, 63, 3),
        ipv4(224, 0, 0, 251),     ipv4(255, 255, 255, 255), ipv4(0, 0, 0, 0),
        ipv4(192, 168, 152, 110), ipv4(192, 168, 152, 0),   ipv4(131, 87, 110, 1)};
    const std::vector<uint16_t> ports = {22,   25,   53,   67,   80,    123,   443, 1023,
                                         1024, 8000, 8080, 8090, 33434, 40000, 0,   65535};
    const std::vector<uint8_t> flags = {0x02, 0x12, 0x10, 0x18, 0x04, 0x14, 0x01,
                                        0x11, 0x00, 0xff, 0x29, 0xc2, 0x20, 0x40};
    const std::vector<std::string> payloads = {"",
                                               "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                               "MAIL FROM:<a@example.org>\r\n",
                                               "SSH-1.99-OpenSSH_3.9p1\r\n",
                                               "SSH-2.0-OpenSSH_9.2\r\n",
                                               "HTTP/1.1 200 OK\r\n",
                                               "GE",
                                               std::string(1200, 'x'),
                                               std::string("\x00\x01\x02\x03", 4)};
    const std::vector<std::vector<uint16_t>> vlan_sets = {
        {}, {}, {}, {100}, {200}, {20}, {100, 200}, {100, 20}, {7, 8, 9}};
    const std::vector<std::vector<uint8_t>> ext_sets = {
        {}, {}, {0}, {43}, {44}, {60}, {0, 60}, {0, 43, 44, 60}, {51}};

    auto add = [&](std::vector<uint8_t> b, const std::string& what, uint32_t extra_wire = 0) {
        TestPacket t;
        t.wirelen = static_cast<uint32_t>(b.size()) + extra_wire;
        t.bytes = std::move(b);
        t.origin = "gen:" + what + "#" + std::to_string(out.size());
        out.push_back(std::move(t));
    };

    for (int i = 0; i < 3000; i++) {
        GenSpec g;
        g.vlans = rng.pick(vlan_sets);
        g.qinq = g.vlans.size() >= 2 && rng.below(2) == 0;
        g.v6 = rng.below(4) == 0;
        g.src4 = rng.pick(addrs);
        g.dst4 = rng.pick(addrs);
        g.src6_tail = static_cast<uint16_t>(1 + rng.below(3));
        g.dst6_tail = static_cast<uint16_t>(1 + rng.below(3));
        if (g.v6) g.v6_ext = rng.pick(ext_sets);
        const uint32_t kind = rng.below(10);
        g.l4 = kind < 5 ? L4::kTcp : kind < 8 ? L4::kUdp : kind < 9 ? L4::kIcmp : L4::kOther;
        g.ip_proto_other = rng.below(2) ? 47 : static_cast<uint8_t>(rng.below(256));
        g.sport = rng.pick(ports);
        g.dport = rng.pick(ports);
        g.tcp_flags = rng.pick(flags);
        g.tcp_doff = rng.below(6) == 0 ? static_cast<uint8_t>(rng.below(16)) : 5 + rng.below(4) * 3;
        if (g.tcp_doff > 15) g.tcp_doff = 15;
        g.icmp_type = static_cast<uint8_t>(
            std::vector<uint8_t>{0, 3, 8, 11, 128, 129, 135, 136}[rng.below(8)]);
        g.icmp_code = static_cast<uint8_t>(rng.below(4));
        g.ihl = rng.below(8) == 0 ? static_cast<uint8_t>(rng.below(16)) : 5 + rng.below(2) * 2;
        g.tos = static_cast<uint8_t>(rng.below(3) == 0 ? rng.below(256) : 0);
        g.ttl = static_cast<uint8_t>(rng.below(2) ? 64 : rng.below(256));
        const uint32_t fr = rng.below(8);
        g.frag = fr == 0 ? 0x2000 : fr == 1 ? 0x00b9 : fr == 2 ? 0x4000 : 0;
        const uint32_t lb = rng.below(10);
        g.ip_len_delta = lb == 0   ? -static_cast<int32_t>(rng.below(60))
                         : lb == 1 ? static_cast<int32_t>(rng.below(3000))
                                   : 0;
        g.payload = rng.pick(payloads);
        std::vector<uint8_t> b = build(g);
        // Some frames were cut by a snap length: caplen < wirelen.
        uint32_t extra = 0;
        if (rng.below(6) == 0 && b.size() > 14) {
            const size_t keep = 14 + rng.below(static_cast<uint32_t>(b.size() - 14));
            extra = static_cast<uint32_t>(b.size() - keep);
            b.resize(keep);
        }
        if (rng.below(10) == 0) extra += rng.below(2000);
        // IP inside a PPPoE session or under an MPLS label instead of plain
        // Ethernet.
        const uint32_t encap = g.vlans.empty() && b.size() >= 14 ? rng.below(20) : 99;
        if (encap == 0 || encap == 1) {
            const bool pppoe = encap == 0;
            std::vector<uint8_t> hdr;
            if (pppoe) {
                const uint32_t plen = static_cast<uint32_t>(b.size() - 14 + 2);
                hdr = {0x11,
                       0x00,
                       0x12,
                       0x34,
                       static_cast<uint8_t>(plen >> 8),
                       static_cast<uint8_t>(plen),
                       0x00,
                       static_cast<uint8_t>(g.v6 ? 0x57 : 0x21)};
            } else {
                hdr = {0x00, 0x01, 0x01, 0x40};  // label 16, bottom of stack, ttl 64
            }
            b[12] = pppoe ? 0x88 : 0x88;
            b[13] = pppoe ? 0x64 : 0x47;
            b.insert(b.begin() + 14, hdr.begin(), hdr.end());
        }
        add(std::move(b), g.v6 ? "ip6" : "ip", extra);
    }
    // A few exact frames every family of expressions should see.
    for (uint8_t type : {128, 129, 135, 136, 1}) {
        GenSpec g;
        g.v6 = true;
        g.l4 = L4::kIcmp;
        g.icmp_type = type;
        g.payload = "ping";
        add(build(g), "icmp6");
        g.vlans = {100};
        add(build(g), "icmp6");
    }
    for (uint8_t type : {0, 3, 8, 11}) {
        GenSpec g;
        g.src4 = ipv4(192, 168, 152, 100);
        g.dst4 = ipv4(223, 5, 5, 5);
        g.l4 = L4::kIcmp;
        g.icmp_type = type;
        g.icmp_code = 3;
        add(build(g), "icmp");
    }
    for (const char* payload : {"GET / HTTP/1.1\r\n", "MAIL FROM:<x@y>\r\n", "SSH-1.99-x\r\n"}) {
        GenSpec g;
        g.src4 = ipv4(192, 168, 152, 3);
        g.dst4 = ipv4(192, 168, 152, 254);
        g.sport = 40000;
        g.dport = payload[0] == 'G' ? 80 : payload[0] == 'M' ? 25 : 22;
        g.tcp_flags = 0x18;
        g.payload = payload;
        add(build(g), "tcp");
        g.tcp_doff = 8;
        add(build(g), "tcp");
    }
    for (int i = 0; i < 60; i++) {
        const bool rarp = i % 7 == 0;
        std::vector<uint16_t> v;
        if (i % 5 == 0) v = {100};
        add(build_arp(static_cast<uint16_t>(1 + i % 4), rng.pick(addrs), rng.pick(addrs), rarp, v),
            rarp ? "rarp" : "arp");
    }
    // Odd ethertypes and runts.
    for (uint32_t et : {0x88cc, 0x8863, 0x8864, 0x8847, 0x0842, 0x86dd, 0x0800, 0x05dc, 0x0026,
                        0x809b, 0x80f3, 0x6003, 0x8137}) {
        GenSpec g;
        Frame f;
        put_ethernet(f, g, et);
        for (int i = 0; i < 46; i++) f.u8(rng.below(256));
        add(std::move(f.raw()), "ethertype");
    }
    for (size_t n = 0; n < 14; n++) add(std::vector<uint8_t>(n, 0xff), "runt");
    return out;
}

/* Every prefix 0..len of `p` (caplen shrinks, wirelen stays). */
inline void add_prefixes(const TestPacket& p, std::vector<TestPacket>& out) {
    for (size_t n = 0; n <= p.bytes.size(); n++) {
        TestPacket t;
        t.bytes.assign(p.bytes.begin(), p.bytes.begin() + static_cast<long>(n));
        t.wirelen = p.wirelen;
        t.origin = p.origin + "/prefix " + std::to_string(n);
        out.push_back(std::move(t));
    }
}

/* Copies with 1-4 random bytes of the first 100 overwritten. */
inline void add_mutations(const std::vector<TestPacket>& base, size_t count, uint64_t seed,
                          std::vector<TestPacket>& out) {
    Rng rng(seed);
    for (size_t i = 0; i < count && !base.empty(); i++) {
        TestPacket t = base[rng.below(static_cast<uint32_t>(base.size()))];
        if (t.bytes.empty()) continue;
        const uint32_t edits = 1 + rng.below(4);
        for (uint32_t e = 0; e < edits; e++) {
            const uint32_t lim = static_cast<uint32_t>(std::min<size_t>(t.bytes.size(), 100));
            t.bytes[rng.below(lim)] = static_cast<uint8_t>(rng.next());
        }
        t.origin += "/mutated";
        out.push_back(std::move(t));
    }
}

/* Reads every DLT_EN10MB capture under `dir` (pcap and pcapng). */
inline std::vector<TestPacket> read_ethernet_captures(const std::filesystem::path& dir,
                                                      size_t* files_used = nullptr) {
    std::vector<TestPacket> out;
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    size_t used = 0;
    for (const auto& f : files) {
        char err[PCAP_ERRBUF_SIZE];
        pcap_t* p = pcap_open_offline(f.c_str(), err);
        if (p == nullptr) continue;
        if (pcap_datalink(p) != DLT_EN10MB) {
            pcap_close(p);
            continue;
        }
        used++;
        pcap_pkthdr* h = nullptr;
        const u_char* d = nullptr;
        size_t idx = 0;
        while (pcap_next_ex(p, &h, &d) == 1) {
            TestPacket t;
            t.bytes.assign(d, d + h->caplen);
            t.wirelen = h->len;
            t.origin = f.filename().string() + "#" + std::to_string(idx++);
            out.push_back(std::move(t));
        }
        pcap_close(p);
    }
    if (files_used != nullptr) *files_used = used;
    return out;
}

inline std::filesystem::path test_data_dir() {
    const char* d = std::getenv("LINECAP_TEST_DATA");
    return d != nullptr ? std::filesystem::path(d) : std::filesystem::path("tests/data");
}

}  // namespace linecap::filters::testing
