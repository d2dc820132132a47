/* The header walker (packet/headers.hh), table-driven: every rule of its
 * header comment is a case, and every well-formed case is also cut at every
 * byte, with the cut frame ending at an unreadable page so that a read past
 * caplen faults. The frame decoder and the TCP tables' prefilter are checked
 * against the walker on the same frames. */
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

#include "packet/decode.hh"
#include "packet/headers.hh"

using namespace linecap::packet;

namespace {

/* Builds a frame front to back; finish() writes the IP and UDP lengths. */
class Frame {
public:
    /* MAC addresses, then types[0]; each further type is one tag (TCI,
     * type) after it: ether({0x8100, 0x0800}) is one 802.1Q tag, IPv4. */
    Frame& ether(std::initializer_list<uint16_t> types) {
        b_.resize(12, 0x02);
        bool first = true;
        for (uint16_t t : types) {
            if (!first) put16(0x0001);  // TCI of the tag before t
            put16(t);
            first = false;
        }
        return *this;
    }
    Frame& ipv4(uint8_t proto, uint32_t options = 0, uint16_t frag = 0) {
        l3_ = b_.size();
        v4_ = true;
        b_.push_back(static_cast<uint8_t>(0x40 | (20 + options) / 4));
        b_.push_back(0);
        put16(0);  // total length, at finish()
        put16(0x1234);
        put16(frag);
        b_.push_back(64);
        b_.push_back(proto);
        put16(0);
        for (uint8_t a : {198, 18, 0, 1, 198, 18, 0, 2}) b_.push_back(a);
        b_.resize(b_.size() + options, 1);  // NOP options
        return *this;
    }
    Frame& ipv6(uint8_t next) {
        l3_ = b_.size();
        v4_ = false;
        put16(0x6000);
        put16(0);
        put16(0);  // payload length, at finish()
        b_.push_back(next);
        b_.push_back(64);
        for (int a = 0; a < 2; a++) {
            put16(0x2001);
            put16(0x0db8);
            b_.resize(b_.size() + 11, 0);
            b_.push_back(static_cast<uint8_t>(a + 1));
        }
        return *this;
    }
    /* An extension header of len bytes whose own type is `type`. */
    Frame& ext(uint8_t type, uint8_t next, uint32_t len = 8) {
        const size_t at = b_.size();
        b_.resize(at + len, 0);
        b_[at] = next;
        b_[at + 1] = static_cast<uint8_t>(type == 51 ? len / 4 - 2 : len / 8 - 1);
        return *this;
    }
    /* An IPv6 fragment header: offset in bytes (a multiple of 8). */
    Frame& frag6(uint8_t next, uint16_t offset, bool more) {
        b_.push_back(next);
        b_.push_back(0);
        put16(static_cast<uint16_t>(offset | (more ? 1 : 0)));
        put16(0xabcd);
        put16(0x0123);
        return *this;
    }
    Frame& tcp(uint16_t sport, uint16_t dport, uint32_t doff = 20) {
        const size_t at = b_.size();
        put16(sport);
        put16(dport);
        b_.resize(at + 20, 0);
        b_[at + 12] = static_cast<uint8_t>((doff / 4) << 4);
        b_[at + 13] = 0x18;
        if (doff > 20) b_.resize(at + doff, 1);
        return *this;
    }
    Frame& udp(uint16_t sport, uint16_t dport, int len = -1) {
        udp_ = b_.size();
        udp_len_ = len;
        put16(sport);
        put16(dport);
        put16(0);
        put16(0);
        return *this;
    }
    Frame& bytes(size_t n, uint8_t v = 0xee) {
        b_.resize(b_.size() + n, v);
        return *this;
    }
    /* Writes the lengths; ip_len >= 0 replaces the IP length field. */
    std::vector<uint8_t> finish(int ip_len = -1) {
        if (l3_ != kNone) {
            const size_t len = v4_ ? b_.size() - l3_ : b_.size() - l3_ - 40;
            set16(l3_ + (v4_ ? 2 : 4), ip_len >= 0 ? static_cast<uint16_t>(ip_len) : len);
        }
        if (udp_ != kNone)
            set16(udp_ + 4, udp_len_ >= 0 ? static_cast<uint16_t>(udp_len_) : b_.size() - udp_);
        return b_;
    }

private:
    static constexpr size_t kNone = ~size_t{0};
    void put16(uint16_t v) {
        b_.push_back(static_cast<uint8_t>(v >> 8));
        b_.push_back(static_cast<uint8_t>(v));
    }
    void set16(size_t at, size_t v) {
        b_[at] = static_cast<uint8_t>(v >> 8);
        b_[at + 1] = static_cast<uint8_t>(v);
    }
    std::vector<uint8_t> b_;
    size_t l3_ = kNone;
    bool v4_ = false;
    size_t udp_ = kNone;
    int udp_len_ = -1;
};

/* Two pages, the second unreadable: place() copies a frame so that it ends
 * where the readable memory does. */
class GuardedBuffer {
public:
    GuardedBuffer() {
        page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        mem_ = static_cast<uint8_t*>(
            mmap(nullptr, 2 * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (mem_ == MAP_FAILED) std::abort();
        if (mprotect(mem_ + page_, page_, PROT_NONE) != 0) std::abort();
    }
    ~GuardedBuffer() { munmap(mem_, 2 * page_); }
    const uint8_t* place(const std::vector<uint8_t>& f, size_t len) {
        uint8_t* at = mem_ + page_ - len;
        std::memcpy(at, f.data(), len);
        return at;
    }

private:
    size_t page_ = 0;
    uint8_t* mem_ = nullptr;
};

struct Case {
    std::string name;
    std::vector<uint8_t> frame;
    WalkStatus status;
    /* For kOk: */
    uint8_t proto = 0;
    uint32_t l3 = 0;
    uint32_t l4 = 0;
    uint32_t payload = 0;
    uint32_t payload_end = 0; /* 0: the end of the frame */
    bool to_caplen = false;   /* IP length 0: the datagram ends at caplen */
    bool has_ports = false;
    bool fragment = false;
    uint16_t frag_offset = 0;
    uint8_t vlan_tags = 0;
    uint8_t ext_headers = 0;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

Case ok(std::string name, std::vector<uint8_t> f, uint8_t proto, uint32_t l3, uint32_t l4,
        uint32_t payload, bool ports) {
    Case c{std::move(name), std::move(f), WalkStatus::kOk};
    c.proto = proto;
    c.l3 = l3;
    c.l4 = l4;
    c.payload = payload;
    c.has_ports = ports;
    return c;
}

Case bad(std::string name, std::vector<uint8_t> f, WalkStatus st) {
    return Case{std::move(name), std::move(f), st};
}

Case with(Case c, auto&& fn) {
    fn(c);
    return c;
}

/* 14 Ethernet, 20 IPv4, 40 IPv6, 20 TCP, 8 UDP. */
std::vector<Case> cases() {
    std::vector<Case> v;
    v.push_back(ok("ipv4_tcp", Frame().ether({0x0800}).ipv4(6).tcp(1000, 80).bytes(10).finish(), 6,
                   14, 34, 54, true));
    v.push_back(ok("ipv4_udp", Frame().ether({0x0800}).ipv4(17).udp(53, 1053).bytes(10).finish(),
                   17, 14, 34, 42, true));
    v.push_back(
        ok("ipv4_icmp", Frame().ether({0x0800}).ipv4(1).bytes(12).finish(), 1, 14, 34, 34, false));
    v.push_back(with(
        ok("vlan_ipv4_tcp", Frame().ether({0x8100, 0x0800}).ipv4(6).tcp(1, 2).bytes(3).finish(), 6,
           18, 38, 58, true),
        [](Case& c) { c.vlan_tags = 1; }));
    v.push_back(with(ok("qinq_ipv6_tcp",
                        Frame().ether({0x88a8, 0x8100, 0x86dd}).ipv6(6).tcp(1, 2).bytes(3).finish(),
                        6, 22, 62, 82, true),
                     [](Case& c) { c.vlan_tags = 2; }));
    v.push_back(with(
        ok("old_qinq_ipv4_udp", Frame().ether({0x9100, 0x8100, 0x0800}).ipv4(17).udp(1, 2).finish(),
           17, 22, 42, 50, true),
        [](Case& c) { c.vlan_tags = 2; }));
    v.push_back(
        with(ok("eight_tags",
                Frame()
                    .ether({0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x0800})
                    .ipv4(6)
                    .tcp(1, 2)
                    .finish(),
                6, 46, 66, 86, true),
             [](Case& c) { c.vlan_tags = 8; }));
    v.push_back(bad(
        "nine_tags",
        Frame()
            .ether({0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x8100, 0x0800})
            .ipv4(6)
            .tcp(1, 2)
            .finish(),
        WalkStatus::kMalformed));
    v.push_back(ok("ipv4_options_4", Frame().ether({0x0800}).ipv4(6, 4).tcp(1, 2).finish(), 6, 14,
                   38, 58, true));
    v.push_back(ok("ipv4_options_40", Frame().ether({0x0800}).ipv4(17, 40).udp(1, 2).finish(), 17,
                   14, 74, 82, true));
    v.push_back(with(ok("ipv4_first_fragment",
                        Frame().ether({0x0800}).ipv4(6, 0, 0x2000).tcp(1, 2).bytes(8).finish(), 6,
                        14, 34, 54, true),
                     [](Case& c) { c.fragment = true; }));
    v.push_back(with(ok("ipv4_later_fragment",
                        Frame().ether({0x0800}).ipv4(6, 0, 185).tcp(1, 2).bytes(8).finish(), 6, 14,
                        34, 34, false),
                     [](Case& c) {
                         c.fragment = true;
                         c.frag_offset = 185 * 8;
                     }));
    v.push_back(
        with(ok("ipv4_last_fragment", Frame().ether({0x0800}).ipv4(17, 0, 3).bytes(30).finish(), 17,
                14, 34, 34, false),
             [](Case& c) {
                 c.fragment = true;
                 c.frag_offset = 24;
             }));
    v.push_back(ok("ipv6_tcp", Frame().ether({0x86dd}).ipv6(6).tcp(1, 2).bytes(5).finish(), 6, 14,
                   54, 74, true));
    for (uint8_t type : {0, 43, 60, 135, 139, 140}) {
        for (uint32_t len : {8u, 24u}) {
            v.push_back(with(
                ok("ipv6_ext_" + std::to_string(type) + "_len" + std::to_string(len),
                   Frame().ether({0x86dd}).ipv6(type).ext(type, 6, len).tcp(1, 2).bytes(4).finish(),
                   6, 14, 54 + len, 74 + len, true),
                [](Case& c) { c.ext_headers = 1; }));
        }
    }
    for (uint32_t len : {12u, 24u}) {
        v.push_back(with(ok("ipv6_ah_len" + std::to_string(len),
                            Frame().ether({0x86dd}).ipv6(51).ext(51, 17, len).udp(1, 2).finish(),
                            17, 14, 54 + len, 62 + len, true),
                         [](Case& c) { c.ext_headers = 1; }));
    }
    v.push_back(with(ok("ipv6_chain_hbh_rt_do_ah",
                        Frame()
                            .ether({0x86dd})
                            .ipv6(0)
                            .ext(0, 43)
                            .ext(43, 60, 24)
                            .ext(60, 51)
                            .ext(51, 6, 16)
                            .tcp(1, 2)
                            .finish(),
                        6, 14, 54 + 56, 74 + 56, true),
                     [](Case& c) { c.ext_headers = 4; }));
    v.push_back(
        with(ok("ipv6_first_fragment",
                Frame().ether({0x86dd}).ipv6(44).frag6(6, 0, true).tcp(1, 2).bytes(9).finish(), 6,
                14, 62, 82, true),
             [](Case& c) {
                 c.fragment = true;
                 c.ext_headers = 1;
             }));
    v.push_back(with(ok("ipv6_later_fragment",
                        Frame().ether({0x86dd}).ipv6(44).frag6(6, 1448, false).tcp(1, 2).finish(),
                        6, 14, 62, 62, false),
                     [](Case& c) {
                         c.fragment = true;
                         c.frag_offset = 1448;
                         c.ext_headers = 1;
                     }));
    // A later fragment's data is not headers, even when it says "options".
    v.push_back(
        with(ok("ipv6_later_fragment_stops",
                Frame().ether({0x86dd}).ipv6(44).frag6(60, 8, true).ext(60, 6).tcp(1, 2).finish(),
                60, 14, 62, 62, false),
             [](Case& c) {
                 c.fragment = true;
                 c.frag_offset = 8;
                 c.ext_headers = 1;
             }));
    v.push_back(
        ok("ipv6_esp", Frame().ether({0x86dd}).ipv6(50).bytes(40).finish(), 50, 14, 54, 54, false));
    v.push_back(
        with(ok("ipv6_no_next_header", Frame().ether({0x86dd}).ipv6(0).ext(0, 59).bytes(6).finish(),
                59, 14, 62, 62, false),
             [](Case& c) {
                 c.payload_end = 62;
                 c.ext_headers = 1;
             }));
    {
        Frame f;
        f.ether({0x86dd}).ipv6(60);
        for (int i = 0; i < kMaxIpv6ExtHeaders; i++) f.ext(60, i + 1 < kMaxIpv6ExtHeaders ? 60 : 6);
        v.push_back(
            with(ok("ipv6_chain_at_limit", f.tcp(1, 2).finish(), 6, 14, 54 + 128, 74 + 128, true),
                 [](Case& c) { c.ext_headers = kMaxIpv6ExtHeaders; }));
        Frame g;
        g.ether({0x86dd}).ipv6(60);
        for (int i = 0; i <= kMaxIpv6ExtHeaders; i++) g.ext(60, i < kMaxIpv6ExtHeaders ? 60 : 6);
        v.push_back(bad("ipv6_chain_past_limit", g.tcp(1, 2).finish(), WalkStatus::kMalformed));
    }
    v.push_back(bad("arp", Frame().ether({0x0806}).bytes(28).finish(), WalkStatus::kNotIp));
    v.push_back(
        bad("vlan_arp", Frame().ether({0x8100, 0x0806}).bytes(28).finish(), WalkStatus::kNotIp));
    v.push_back(bad(
        "ipv4_ihl_short",
        [] {
            auto f = Frame().ether({0x0800}).ipv4(6).tcp(1, 2).finish();
            f[14] = 0x44;
            return f;
        }(),
        WalkStatus::kMalformed));
    v.push_back(bad("ipv4_total_below_ihl", Frame().ether({0x0800}).ipv4(6).tcp(1, 2).finish(19),
                    WalkStatus::kMalformed));
    v.push_back(bad(
        "ipv4_type_version_6",
        [] {
            auto f = Frame().ether({0x0800}).ipv4(6).tcp(1, 2).finish();
            f[14] = 0x65;
            return f;
        }(),
        WalkStatus::kMalformed));
    {
        // Total length 0 (captured before segmentation offload): up to caplen.
        auto f = Frame().ether({0x0800}).ipv4(6).tcp(1, 2).bytes(100).finish(0);
        v.push_back(with(ok("ipv4_total_zero", f, 6, 14, 34, 54, true),
                         [](Case& c) { c.to_caplen = true; }));
    }
    {
        // Ethernet padding after a short datagram is not payload.
        auto f = Frame().ether({0x0800}).ipv4(17).udp(1, 2).bytes(2).finish();
        f.resize(60, 0);
        v.push_back(
            with(ok("ipv4_padding", f, 17, 14, 34, 42, true), [](Case& c) { c.payload_end = 44; }));
    }
    v.push_back(bad("ipv6_ext_past_datagram",
                    Frame().ether({0x86dd}).ipv6(0).ext(0, 6, 16).finish(8),
                    WalkStatus::kMalformed));
    v.push_back(bad("tcp_doff_short", Frame().ether({0x0800}).ipv4(6).tcp(1, 2, 16).finish(),
                    WalkStatus::kMalformed));
    v.push_back(bad(
        "tcp_doff_past_datagram",
        [] {
            auto f = Frame().ether({0x0800}).ipv4(6).tcp(1, 2).bytes(8).finish();
            f[34 + 12] = 0xf0;  // 60 bytes
            return f;
        }(),
        WalkStatus::kMalformed));
    v.push_back(bad("tcp_datagram_short", Frame().ether({0x0800}).ipv4(6).tcp(1, 2).finish(30),
                    WalkStatus::kTruncated));
    v.push_back(bad("udp_len_short", Frame().ether({0x0800}).ipv4(17).udp(1, 2, 4).finish(),
                    WalkStatus::kMalformed));
    v.push_back(with(
        ok("udp_len_below_datagram",
           Frame().ether({0x0800}).ipv4(17).udp(1, 2, 12).bytes(10).finish(), 17, 14, 34, 42, true),
        [](Case& c) { c.payload_end = 46; }));
    return v;
}

class Walk : public ::testing::TestWithParam<Case> {};

void expect_fields(const Case& c, const Headers& h, uint32_t caplen) {
    EXPECT_EQ(h.proto, c.proto);
    EXPECT_EQ(h.l3, c.l3);
    EXPECT_EQ(h.l4, c.l4);
    EXPECT_EQ(h.payload, c.payload);
    EXPECT_EQ(h.payload_end, c.to_caplen ? caplen : c.payload_end ? c.payload_end : c.frame.size());
    EXPECT_EQ(h.has_ports, c.has_ports);
    EXPECT_EQ(h.fragment, c.fragment);
    EXPECT_EQ(h.frag_offset, c.frag_offset);
    EXPECT_EQ(h.vlan_tags, c.vlan_tags);
    EXPECT_EQ(h.ext_headers, c.ext_headers);
    EXPECT_EQ(h.cap_end, std::min<uint32_t>(h.end, caplen));
    if (c.has_ports) {
        EXPECT_NE(h.sport, 0);
        EXPECT_NE(h.dport, 0);
    }
}

TEST_P(Walk, WholeFrame) {
    const Case& c = GetParam();
    GuardedBuffer buf;
    const uint32_t len = static_cast<uint32_t>(c.frame.size());
    Headers h;
    ASSERT_EQ(walk_ethernet(buf.place(c.frame, len), len, h), c.status);
    if (c.status == WalkStatus::kOk) expect_fields(c, h, len);
}

/* Cut before the end of the headers: kTruncated (or what the whole frame
 * gave, if that is not kOk and comes first); after it: the same answer with
 * less captured. Never a read past the cut. */
TEST_P(Walk, CutAtEveryByte) {
    const Case& c = GetParam();
    GuardedBuffer buf;
    for (uint32_t cut = 0; cut < c.frame.size(); cut++) {
        SCOPED_TRACE("cut at " + std::to_string(cut));
        Headers h;
        const WalkStatus st = walk_ethernet(buf.place(c.frame, cut), cut, h);
        if (c.status != WalkStatus::kOk) {
            EXPECT_TRUE(st == WalkStatus::kTruncated || st == c.status);
            continue;
        }
        const uint32_t headers_end = c.has_ports ? c.payload : c.l4;
        if (cut < headers_end) {
            EXPECT_EQ(st, WalkStatus::kTruncated);
        } else {
            ASSERT_EQ(st, WalkStatus::kOk);
            expect_fields(c, h, cut);
            EXPECT_LE(h.cap_end, cut);
        }
    }
}

/* The TCP tables' prefilter never refuses a frame the walker finds TCP in. */
TEST_P(Walk, PrefilterKeepsTcp) {
    const Case& c = GetParam();
    Headers h;
    const uint32_t len = static_cast<uint32_t>(c.frame.size());
    if (walk_ethernet(c.frame.data(), len, h) == WalkStatus::kOk && h.proto == kProtoTcp &&
        h.has_ports) {
        EXPECT_TRUE(ethernet_may_carry_tcp(c.frame.data(), len));
    }
}

/* The decoder gives what the walker found. */
TEST_P(Walk, DecoderAgrees) {
    const Case& c = GetParam();
    const uint32_t len = static_cast<uint32_t>(c.frame.size());
    Headers h;
    const WalkStatus ws = walk_ethernet(c.frame.data(), len, h);
    DecodedPacket p;
    const DecodeStatus ds = decode_packet(1, c.frame.data(), len, p);
    ASSERT_EQ(static_cast<int>(ds), static_cast<int>(ws));
    if (ws != WalkStatus::kOk) return;
    EXPECT_EQ(p.proto, h.proto);
    EXPECT_EQ(p.has_ports, h.has_ports);
    EXPECT_EQ(p.sport, h.sport);
    EXPECT_EQ(p.dport, h.dport);
    EXPECT_EQ(p.fragment, h.fragment);
    EXPECT_EQ(p.frag_offset, h.frag_offset);
    EXPECT_EQ(p.payload_len, h.payload_end - h.payload);
    EXPECT_EQ(p.payload, c.frame.data() + std::min(h.payload, h.cap_end));
    EXPECT_EQ(0, std::memcmp(p.src.bytes.data(), c.frame.data() + h.src_offset(), h.addr_len()));
    EXPECT_EQ(0, std::memcmp(p.dst.bytes.data(), c.frame.data() + h.dst_offset(), h.addr_len()));
}

INSTANTIATE_TEST_SUITE_P(Headers, Walk, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

TEST(Walk, IpEntryPoints) {
    const auto f = Frame().ether({0x0800}).ipv4(6).tcp(7, 9).finish();
    Headers h;
    // walk_ip at the IP header, walk_ethertype at what a cooked header announces.
    ASSERT_EQ(walk_ip(f.data(), static_cast<uint32_t>(f.size()), 14, h), WalkStatus::kOk);
    EXPECT_EQ(h.l4, 34u);
    EXPECT_EQ(h.ethertype, 0);
    Headers e;
    ASSERT_EQ(walk_ethertype(f.data(), static_cast<uint32_t>(f.size()), 14, 0x0800, e),
              WalkStatus::kOk);
    EXPECT_EQ(e.ethertype, 0x0800);
    EXPECT_EQ(e.sport, 7);
    EXPECT_EQ(e.dport, 9);
    auto v5 = f;
    v5[14] = 0x55;
    Headers n;
    EXPECT_EQ(walk_ip(v5.data(), static_cast<uint32_t>(v5.size()), 14, n), WalkStatus::kNotIp);
    EXPECT_EQ(walk_ip(f.data(), 14, 14, n), WalkStatus::kTruncated);
}

TEST(Walk, PrefilterRefusesWhatCannotBeTcp) {
    const auto arp = Frame().ether({0x0806}).bytes(46).finish();
    EXPECT_FALSE(ethernet_may_carry_tcp(arp.data(), static_cast<uint32_t>(arp.size())));
    const auto udp = Frame().ether({0x0800}).ipv4(17).udp(1, 2).bytes(30).finish();
    EXPECT_FALSE(ethernet_may_carry_tcp(udp.data(), static_cast<uint32_t>(udp.size())));
    const auto esp = Frame().ether({0x86dd}).ipv6(50).bytes(30).finish();
    EXPECT_FALSE(ethernet_may_carry_tcp(esp.data(), static_cast<uint32_t>(esp.size())));
    const auto tcp = Frame().ether({0x0800}).ipv4(6).tcp(1, 2).finish();
    EXPECT_FALSE(ethernet_may_carry_tcp(tcp.data(), 53));
}

}  // namespace
