/* Hyperscan payload patterns and payload_span(): matching semantics, errors,
 * and robustness against truncated and malformed frames. */
#include "filters/patterns.hh"

#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace linecap::filters {
namespace {

using Bytes = std::vector<uint8_t>;

/* ---- Frame builder ------------------------------------------------------- */

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}
void append(Bytes& b, const Bytes& x) { b.insert(b.end(), x.begin(), x.end()); }
Bytes bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

/* Ethernet header with the given tag TPIDs (each followed by a TCI). */
Bytes eth(uint16_t type, std::vector<uint16_t> tags = {}) {
    Bytes b = {0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2};
    for (uint16_t tpid : tags) {
        put16(b, tpid);
        put16(b, 0x0064);  // VLAN 100
    }
    put16(b, type);
    return b;
}

Bytes tcp(const Bytes& payload, uint8_t flags = 0x18, Bytes options = {}) {
    Bytes b;
    put16(b, 40000);
    put16(b, 80);
    for (int i = 0; i < 8; i++) b.push_back(0);       // seq, ack
    while (options.size() % 4) options.push_back(1);  // NOP padding
    b.push_back(static_cast<uint8_t>(((20 + options.size()) / 4) << 4));
    b.push_back(flags);
    put16(b, 65535);
    put16(b, 0);
    put16(b, 0);
    append(b, options);
    append(b, payload);
    return b;
}

Bytes udp(const Bytes& payload) {
    Bytes b;
    put16(b, 5353);
    put16(b, 53);
    put16(b, static_cast<uint16_t>(8 + payload.size()));
    put16(b, 0);
    append(b, payload);
    return b;
}

struct Ip4Opts {
    uint8_t ihl = 5;
    uint16_t frag = 0;  // flags + offset field
    int tot_len = -1;   // -1: computed
};

Bytes ipv4(uint8_t proto, const Bytes& l4, Ip4Opts o = {}) {
    Bytes b;
    b.push_back(static_cast<uint8_t>(0x40 | o.ihl));
    b.push_back(0);
    uint32_t hl = std::max<uint32_t>(o.ihl, 5) * 4;
    put16(b, o.tot_len >= 0 ? static_cast<uint16_t>(o.tot_len)
                            : static_cast<uint16_t>(hl + l4.size()));
    put16(b, 1);
    put16(b, o.frag);
    b.push_back(64);
    b.push_back(proto);
    put16(b, 0);
    for (uint8_t a : {198, 18, 0, 1, 198, 18, 0, 2}) b.push_back(a);
    while (b.size() < hl) b.push_back(1);  // options: NOPs
    append(b, l4);
    return b;
}

/* IPv6 header + ext headers, each given as (type, raw bytes incl. next/len). */
Bytes ipv6(uint8_t first_nh, const Bytes& rest, int payload_len = -1) {
    Bytes b = {0x60, 0, 0, 0};
    put16(b, payload_len >= 0 ? static_cast<uint16_t>(payload_len)
                              : static_cast<uint16_t>(rest.size()));
    b.push_back(first_nh);
    b.push_back(64);
    for (int i = 0; i < 2; i++) {
        Bytes a = {0x20, 0x01, 0x0d, 0xb8};
        a.resize(16, 0);
        a[15] = static_cast<uint8_t>(i + 1);
        append(b, a);
    }
    append(b, rest);
    return b;
}

/* Generic IPv6 extension header of 8*(units+1) bytes. */
Bytes ext(uint8_t next, uint8_t units = 0) {
    Bytes b = {next, units};
    b.resize(8u * (units + 1u), 0);
    return b;
}

Bytes frag6(uint8_t next, uint16_t offset_units, bool more) {
    Bytes b = {next, 0};
    put16(b, static_cast<uint16_t>(offset_units << 3 | (more ? 1 : 0)));
    for (int i = 0; i < 4; i++) b.push_back(0);
    return b;
}

Bytes frame(const Bytes& l2, const Bytes& l3) {
    Bytes b = l2;
    append(b, l3);
    return b;
}

Bytes tcp4(const std::string& payload) { return frame(eth(0x0800), ipv4(6, tcp(bytes(payload)))); }

/* Heap copy of exactly `caplen` bytes, so that a sanitizer sees any read past it. */
struct Owned {
    std::unique_ptr<uint8_t[]> mem;
    Packet pkt;
};
Owned owned(const Bytes& b, size_t caplen) {
    Owned o;
    o.mem.reset(new uint8_t[caplen == 0 ? 1 : caplen]);
    if (caplen) std::memcpy(o.mem.get(), b.data(), caplen);
    o.pkt = Packet{o.mem.get(), static_cast<uint32_t>(caplen), static_cast<uint32_t>(b.size())};
    return o;
}

std::string span_text(const Bytes& b, ScanScope scope = ScanScope::kPayload) {
    Packet p{b.data(), static_cast<uint32_t>(b.size()), static_cast<uint32_t>(b.size())};
    ByteSpan s = payload_span(p, scope);
    EXPECT_LE(uint64_t{s.offset} + s.length, b.size());
    return std::string(reinterpret_cast<const char*>(b.data()) + s.offset, s.length);
}

/* ---- Pattern database helpers -------------------------------------------- */

PatternDb compile_ok(std::vector<PatternSpec> specs) {
    auto db = PatternDb::compile(specs);
    EXPECT_TRUE(db.ok()) << (db.ok() ? "" : db.error());
    if (!db.ok()) return PatternDb();
    return std::move(db.value());
}

std::string compile_error(std::vector<PatternSpec> specs, std::vector<std::string> names = {}) {
    auto db = PatternDb::compile(specs, names);
    EXPECT_FALSE(db.ok());
    return db.ok() ? "" : db.error();
}

struct Matcher {
    PatternDb db;
    PatternScratch scratch;
    explicit Matcher(std::vector<PatternSpec> specs) : db(compile_ok(std::move(specs))) {
        auto s = db.make_scratch();
        EXPECT_TRUE(s.ok());
        if (s.ok()) scratch = std::move(s.value());
    }
    RuleMask scan_text(const std::string& text) {
        RuleMask m;
        db.scan(reinterpret_cast<const uint8_t*>(text.data()), static_cast<uint32_t>(text.size()),
                scratch, m);
        return m;
    }
    bool matches(const std::string& text) { return scan_text(text).test(0); }
    RuleMask scan_packet(const Bytes& b, ScanScope scope = ScanScope::kPayload) {
        Packet p{b.data(), static_cast<uint32_t>(b.size()), static_cast<uint32_t>(b.size())};
        RuleMask m;
        db.scan_burst(&p, 1, scope, scratch, &m);
        return m;
    }
};

/* ---- payload_span -------------------------------------------------------- */

TEST(PayloadSpan, TcpUdpAndOtherProtocols) {
    EXPECT_EQ(span_text(tcp4("GET / HTTP/1.1\r\n")), "GET / HTTP/1.1\r\n");
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(17, udp(bytes("query"))))), "query");
    // ICMP and any other protocol: the whole IP payload.
    Bytes icmp = {8, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'n', 'g'};
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(1, icmp))),
              std::string("\x08\0\0\0\0\x01\0\x01ping", 12));
    // TCP options are header, not payload.
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, tcp(bytes("data"), 0x18, bytes("MAIL"))))),
              "data");
    // kFrame: everything captured.
    Bytes f = tcp4("x");
    EXPECT_EQ(span_text(f, ScanScope::kFrame).size(), f.size());
}

TEST(PayloadSpan, EthernetPaddingIsNotPayload) {
    Bytes f = tcp4("");
    while (f.size() < 60) f.push_back('Z');
    EXPECT_EQ(span_text(f), "");
    Bytes u = frame(eth(0x0800), ipv4(17, udp(bytes("ab"))));
    while (u.size() < 60) u.push_back('Z');
    EXPECT_EQ(span_text(u), "ab");
}

TEST(PayloadSpan, VlanAndQinq) {
    Bytes l3 = ipv4(6, tcp(bytes("tagged")));
    EXPECT_EQ(span_text(frame(eth(0x0800, {0x8100}), l3)), "tagged");
    EXPECT_EQ(span_text(frame(eth(0x0800, {0x88a8, 0x8100}), l3)), "tagged");
    EXPECT_EQ(span_text(frame(eth(0x0800, {0x9100, 0x8100}), l3)), "tagged");
    // A tag cut by the capture length.
    Bytes cut = eth(0x0800, {0x8100});
    cut.resize(16);
    EXPECT_EQ(span_text(cut), "");
    // Non-IP frames have no payload (ARP).
    Bytes arp = eth(0x0806);
    arp.resize(60, 0);
    EXPECT_EQ(span_text(arp), "");
}

TEST(PayloadSpan, Ipv4HeaderLengthAndFragments) {
    // IHL with options.
    Ip4Opts opt;
    opt.ihl = 8;
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, tcp(bytes("opts")), opt))), "opts");
    // IHL below 5 is malformed.
    Ip4Opts bad;
    bad.ihl = 3;
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, tcp(bytes("x")), bad))), "");
    // IHL beyond the captured bytes.
    Bytes big = frame(eth(0x0800), ipv4(6, Bytes{}, Ip4Opts{}));
    big[14] = 0x4f;
    EXPECT_EQ(span_text(big), "");
    // Total length smaller than the header.
    Ip4Opts shortlen;
    shortlen.tot_len = 10;
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, tcp(bytes("x")), shortlen))), "");
    // Total length beyond the capture (snaplen cut): bounded by caplen.
    Ip4Opts longlen;
    longlen.tot_len = 1500;
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, tcp(bytes("cut")), longlen))), "cut");
    // First fragment has the TCP header; later fragments are raw IP payload.
    Ip4Opts first;
    first.frag = 0x2000;  // MF
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, tcp(bytes("head")), first))), "head");
    Ip4Opts later;
    later.frag = 0x0003;  // offset 24 bytes
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, bytes("middle of stream"), later))),
              "middle of stream");
    // Not IPv4 at all behind an IPv4 ethertype.
    Bytes v6in4 = frame(eth(0x0800), ipv4(6, tcp(bytes("x"))));
    v6in4[14] = 0x65;
    EXPECT_EQ(span_text(v6in4), "");
}

TEST(PayloadSpan, TcpAndUdpHeaderDamage) {
    // TCP header shorter than 20 bytes in the datagram.
    Bytes t = tcp(bytes(""));
    t.resize(12);
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, t))), "");
    // Data offset below 5.
    Bytes low = tcp(bytes("abc"));
    low[12] = 0x40;
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, low))), "");
    // Data offset past the end of the segment.
    Bytes high = tcp(bytes("abc"));
    high[12] = 0xf0;
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(6, high))), "");
    // UDP length below 8, and UDP length shorter than the datagram.
    Bytes u = udp(bytes("abcdef"));
    u[5] = 4;
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(17, u))), "");
    u[5] = 8 + 3;
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(17, u))), "abc");
    Bytes u7 = udp(bytes("ab"));
    u7.resize(7);
    EXPECT_EQ(span_text(frame(eth(0x0800), ipv4(17, u7))), "");
}

TEST(PayloadSpan, Ipv6ExtensionHeaders) {
    Bytes seg = tcp(bytes("six"));
    EXPECT_EQ(span_text(frame(eth(0x86dd), ipv6(6, seg))), "six");
    // hop-by-hop -> routing -> destination options -> TCP
    Bytes chain = ext(43);
    append(chain, ext(60, 1));
    append(chain, ext(6, 2));
    append(chain, seg);
    EXPECT_EQ(span_text(frame(eth(0x86dd), ipv6(0, chain))), "six");
    // AH (length in 4-byte units minus 2): 4 units -> 24 bytes.
    Bytes ah = {17, 4};
    ah.resize(24, 0);
    append(ah, udp(bytes("auth")));
    EXPECT_EQ(span_text(frame(eth(0x86dd), ipv6(51, ah))), "auth");
    // First fragment: parse on; later fragment: raw payload.
    Bytes f1 = frag6(6, 0, true);
    append(f1, seg);
    EXPECT_EQ(span_text(frame(eth(0x86dd), ipv6(44, f1))), "six");
    Bytes f2 = frag6(6, 100, false);
    append(f2, bytes("rest of it"));
    EXPECT_EQ(span_text(frame(eth(0x86dd), ipv6(44, f2))), "rest of it");
    // No next header.
    EXPECT_EQ(span_text(frame(eth(0x86dd), ipv6(59, bytes("ignored")))), "");
    // Extension header longer than the packet.
    Bytes longext = ext(6, 200);
    longext.resize(16);
    EXPECT_EQ(span_text(frame(eth(0x86dd), ipv6(0, longext))), "");
    // Extension header cut in the middle of its first 8 bytes.
    Bytes cut = frame(eth(0x86dd), ipv6(0, ext(6)));
    cut.resize(cut.size() - 4);
    EXPECT_EQ(span_text(cut), "");
    // A loop of extension headers ends.
    Bytes many;
    for (int i = 0; i < 40; i++) append(many, ext(60));
    EXPECT_EQ(span_text(frame(eth(0x86dd), ipv6(60, many))), "");
    // Payload length bounds the payload (trailing padding excluded).
    Bytes padded = frame(eth(0x86dd), ipv6(17, udp(bytes("v6"))));
    padded.resize(padded.size() + 10, 'Z');
    EXPECT_EQ(span_text(padded), "v6");
}

/* Every truncation of every sample frame: the span stays inside caplen.
 * Buffers are exactly caplen bytes, so ASan builds catch any stray read. */
TEST(PayloadSpan, EveryTruncationStaysInBounds) {
    std::vector<Bytes> samples = {
        tcp4("GET / HTTP/1.1\r\n"),
        frame(eth(0x0800, {0x88a8, 0x8100}), ipv4(17, udp(bytes("dns")))),
        frame(eth(0x86dd), ipv6(0,
                                [] {
                                    Bytes c = ext(44);
                                    append(c, frag6(6, 0, true));
                                    append(c, tcp(bytes("frag")));
                                    return c;
                                }())),
        frame(eth(0x86dd), ipv6(51,
                                [] {
                                    Bytes a = {6, 4};
                                    a.resize(24, 0);
                                    append(a, tcp(bytes("ah")));
                                    return a;
                                }())),
    };
    for (const Bytes& s : samples) {
        for (size_t cap = 0; cap <= s.size(); cap++) {
            Owned o = owned(s, cap);
            for (ScanScope scope : {ScanScope::kPayload, ScanScope::kFrame}) {
                ByteSpan sp = payload_span(o.pkt, scope);
                EXPECT_LE(uint64_t{sp.offset} + sp.length, cap);
            }
        }
    }
}

TEST(PayloadSpan, RandomBytesStayInBounds) {
    std::mt19937 rng(7);
    for (int i = 0; i < 20000; i++) {
        size_t len = rng() % 200;
        Bytes b(len);
        for (auto& x : b) x = static_cast<uint8_t>(rng());
        // Bias towards IP ethertypes so the deeper parsers run.
        if (len >= 14) {
            static const uint16_t types[] = {0x0800, 0x86dd, 0x8100, 0x88a8};
            uint16_t t = types[rng() % 4];
            b[12] = static_cast<uint8_t>(t >> 8);
            b[13] = static_cast<uint8_t>(t);
            if (len > 14 && t == 0x0800) b[14] = static_cast<uint8_t>(0x40 | (rng() & 15));
            if (len > 14 && t == 0x86dd) b[14] = 0x60;
        }
        Owned o = owned(b, len);
        ByteSpan sp = payload_span(o.pkt, ScanScope::kPayload);
        ASSERT_LE(uint64_t{sp.offset} + sp.length, len);
    }
}

TEST(PayloadSpan, NullAndEmpty) {
    Packet none{nullptr, 0, 0};
    EXPECT_EQ(payload_span(none, ScanScope::kPayload).length, 0u);
    EXPECT_EQ(payload_span(none, ScanScope::kFrame).length, 0u);
    Owned o = owned(Bytes{}, 0);
    EXPECT_EQ(payload_span(o.pkt, ScanScope::kPayload).length, 0u);
}

/* Robustness over tcpdump's own test captures (many malformed frames). */
TEST(PayloadSpan, TcpdumpCorpus) {
    const char* dir = std::getenv("LINECAP_TEST_DATA");
    if (dir == nullptr) GTEST_SKIP() << "LINECAP_TEST_DATA not set";
    std::filesystem::path corpus = std::filesystem::path(dir) / "tcpdump-tests";
    if (!std::filesystem::is_directory(corpus)) GTEST_SKIP() << "no corpus";
    Matcher m({{"GET ", 0}, {"/user-agent:/i", 1}});
    size_t files = 0, packets = 0, with_payload = 0;
    for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
        char err[PCAP_ERRBUF_SIZE];
        pcap_t* p = pcap_open_offline(entry.path().c_str(), err);
        if (p == nullptr) continue;
        if (pcap_datalink(p) == DLT_EN10MB) {
            files++;
            pcap_pkthdr* h;
            const u_char* data;
            while (pcap_next_ex(p, &h, &data) == 1) {
                Owned o = owned(Bytes(data, data + h->caplen), h->caplen);
                ByteSpan sp = payload_span(o.pkt, ScanScope::kPayload);
                ASSERT_LE(uint64_t{sp.offset} + sp.length, h->caplen) << entry.path();
                packets++;
                if (sp.length) with_payload++;
                RuleMask mask;
                m.db.scan_burst(&o.pkt, 1, ScanScope::kPayload, m.scratch, &mask);
            }
        }
        pcap_close(p);
    }
    EXPECT_GT(files, 100u);
    EXPECT_GT(with_payload, packets / 4);
}

/* ---- Pattern semantics ---------------------------------------------------- */

TEST(Patterns, LiteralsMatchBytesExactly) {
    Matcher m({{"GET ", 0}});
    EXPECT_TRUE(m.matches("GET /index.html"));
    EXPECT_TRUE(m.matches("xxGET "));
    EXPECT_FALSE(m.matches("get /"));
    EXPECT_FALSE(m.matches("GET"));

    Matcher dots({{"a.c*", 0}});
    EXPECT_TRUE(dots.matches("xa.c*y"));
    EXPECT_FALSE(dots.matches("abc"));
    EXPECT_FALSE(dots.matches("a.cc"));

    Matcher meta({{R"(\d+[x](y)|^$)", 0}});
    EXPECT_TRUE(meta.matches(R"(..\d+[x](y)|^$..)"));
    EXPECT_FALSE(meta.matches("12x"));

    Matcher high({{std::string("\xff\xfe\x80 \t\r\n", 7), 0}});
    EXPECT_TRUE(high.matches(std::string("a\xff\xfe\x80 \t\r\nb", 9)));

    // A '/' that does not open a regex is literal.
    Matcher slash({{"/index", 0}, {"/", 1}});
    EXPECT_TRUE(slash.scan_text("GET /index.html").test(0));
    EXPECT_TRUE(slash.scan_text("a/b").test(1));
    EXPECT_FALSE(slash.scan_text("index").test(0));
}

TEST(Patterns, RegexAndFlags) {
    Matcher re({{"/ab+c/", 0}});
    EXPECT_TRUE(re.matches("xxabbbbc"));
    EXPECT_FALSE(re.matches("ac"));

    Matcher ci({{"/get /i", 0}});
    EXPECT_TRUE(ci.matches("GeT /"));
    EXPECT_TRUE(ci.matches("get /"));
    EXPECT_FALSE(ci.matches("GET/"));

    Matcher nodot({{"/a.b/", 0}});
    Matcher dotall({{"/a.b/s", 0}});
    EXPECT_FALSE(nodot.matches("a\nb"));
    EXPECT_TRUE(dotall.matches("a\nb"));
    EXPECT_TRUE(nodot.matches("a-b"));

    Matcher anchored({{"/^foo/", 0}});
    Matcher multiline({{"/^foo/m", 0}});
    EXPECT_FALSE(anchored.matches("bar\nfoo"));
    EXPECT_TRUE(multiline.matches("bar\nfoo"));
    EXPECT_TRUE(anchored.matches("foo bar"));

    Matcher both({{"/user-agent:.*curl/is", 0}});
    EXPECT_TRUE(both.matches("User-Agent:\n  CURL/8"));

    // Slashes inside a regex need no escaping.
    Matcher path({{"//usr/bin/", 0}});
    EXPECT_TRUE(path.matches("exec /usr/bin/sh"));
}

TEST(Patterns, MatchAtTheVeryEndOfThePacket) {
    Matcher m({{"MAIL", 0}, {"/FROM$/", 1}});
    Bytes f = tcp4("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxMAIL FROM");
    RuleMask r = m.scan_packet(f);
    EXPECT_TRUE(r.test(0));
    EXPECT_TRUE(r.test(1));
    // Ends one byte early: no match.
    Bytes cut(f.begin(), f.end() - 1);
    Packet p{cut.data(), static_cast<uint32_t>(cut.size()), static_cast<uint32_t>(f.size())};
    RuleMask r2;
    m.db.scan_burst(&p, 1, ScanScope::kPayload, m.scratch, &r2);
    EXPECT_TRUE(r2.test(0));
    EXPECT_FALSE(r2.test(1));
}

TEST(Patterns, EmptyPayloadNeverMatches) {
    // A pattern that is in the headers of a SYN (option bytes) but not in a payload.
    Matcher m({{"MAIL", 0}, {"/\\x02\\x04/", 1}});
    Bytes syn = frame(eth(0x0800), ipv4(6, tcp(Bytes{}, 0x02, Bytes{0x02, 0x04, 0x05, 0xb4})));
    EXPECT_FALSE(m.scan_packet(syn).any());
    EXPECT_TRUE(m.scan_packet(syn, ScanScope::kFrame).test(1));
    // Padding after an empty segment is not payload either.
    Bytes padded = syn;
    append(padded, bytes("MAIL MAIL"));
    EXPECT_FALSE(m.scan_packet(padded).any());
}

TEST(Patterns, ManyRulesInOneDatabase) {
    Matcher m({{"GET ", 0}, {"MAIL", 1}, {"/rcpt to:/i", 1}, {"secret", 3}});
    EXPECT_EQ(m.db.pattern_count(), 4u);
    EXPECT_EQ(m.db.rules().count(), 3u);
    EXPECT_TRUE(m.db.rules().test(3));
    EXPECT_FALSE(m.db.rules().test(2));

    RuleMask r = m.scan_text("RCPT TO:<a@b>");
    EXPECT_FALSE(r.test(0));
    EXPECT_TRUE(r.test(1));
    EXPECT_FALSE(r.test(3));
    EXPECT_EQ(r.count(), 1u);

    r = m.scan_text("GET /secret MAIL");
    EXPECT_TRUE(r.test(0));
    EXPECT_TRUE(r.test(1));
    EXPECT_TRUE(r.test(3));

    // Return value counts matched rules (each once, however often it matches).
    RuleMask mask;
    std::string text = "MAIL MAIL rcpt to: MAIL GET GET ";
    EXPECT_EQ(m.db.scan(reinterpret_cast<const uint8_t*>(text.data()),
                        static_cast<uint32_t>(text.size()), m.scratch, mask),
              2u);
    EXPECT_NE(m.db.describe().find("rule 1: regex (caseless) '/rcpt to:/i'"), std::string::npos)
        << m.db.describe();
}

/* What compile() does across its compiling child: serialize there,
 * deserialize here, with the same patterns. */
TEST(Patterns, SerializedDatabaseScansTheSame) {
    std::vector<PatternSpec> specs = {{"GET ", 0}, {"MAIL", 1}, {"/rcpt to:/i", 1}, {"secret", 3}};
    PatternDb db = compile_ok(specs);
    auto bytes = db.serialize();
    ASSERT_TRUE(bytes.ok()) << bytes.error();
    auto back = PatternDb::deserialize(*bytes, specs, db.min_length());
    ASSERT_TRUE(back.ok()) << back.error();
    EXPECT_EQ(back->pattern_count(), db.pattern_count());
    EXPECT_EQ(back->rules(), db.rules());
    EXPECT_EQ(back->min_length(), db.min_length());
    EXPECT_EQ(back->describe(), db.describe());
    auto s1 = db.make_scratch();
    auto s2 = back->make_scratch();
    ASSERT_TRUE(s1.ok() && s2.ok());
    for (const std::string text : {"RCPT TO:<a@b>", "GET /secret MAIL", "nothing", "GE", ""}) {
        RuleMask a, b;
        const auto* d = reinterpret_cast<const uint8_t*>(text.data());
        const auto n = static_cast<uint32_t>(text.size());
        EXPECT_EQ(db.scan(d, n, *s1, a), back->scan(d, n, *s2, b)) << text;
        EXPECT_EQ(a, b) << text;
    }
    // Damaged or empty bytes are refused, not trusted.
    std::string cut = bytes->substr(0, bytes->size() / 2);
    EXPECT_FALSE(PatternDb::deserialize(cut, specs, db.min_length()).ok());
    EXPECT_FALSE(PatternDb::deserialize("", specs, db.min_length()).ok());
    EXPECT_FALSE(PatternDb().serialize().ok());
}

TEST(Patterns, BurstWithWantMask) {
    Matcher m({{"GET ", 0}, {"MAIL", 1}});
    std::vector<Bytes> frames = {tcp4("GET /"), tcp4("MAIL FROM"), tcp4("nothing"),
                                 tcp4("GET MAIL")};
    std::vector<Packet> pkts;
    for (auto& f : frames)
        pkts.push_back(
            Packet{f.data(), static_cast<uint32_t>(f.size()), static_cast<uint32_t>(f.size())});
    std::vector<RuleMask> masks(pkts.size());
    EXPECT_EQ(m.db.scan_burst(pkts.data(), 4, ScanScope::kPayload, m.scratch, masks.data()), 3u);
    EXPECT_TRUE(masks[0].test(0));
    EXPECT_TRUE(masks[1].test(1));
    EXPECT_FALSE(masks[2].any());
    EXPECT_EQ(masks[3].count(), 2u);

    uint8_t want[4] = {1, 0, 1, 1};
    masks[1].set(5);  // stale content must be cleared
    EXPECT_EQ(m.db.scan_burst(pkts.data(), 4, ScanScope::kPayload, m.scratch, masks.data(), want),
              2u);
    EXPECT_FALSE(masks[1].any());
}

TEST(Patterns, EmptyDatabaseMatchesNothing) {
    auto db = PatternDb::compile({});
    ASSERT_TRUE(db.ok());
    EXPECT_TRUE(db->empty());
    auto s = db->make_scratch();
    ASSERT_TRUE(s.ok());
    RuleMask m;
    m.set(1);
    std::string t = "anything";
    EXPECT_EQ(db->scan(reinterpret_cast<const uint8_t*>(t.data()), 8, *s, m), 0u);
    EXPECT_FALSE(m.any());
}

TEST(Patterns, ScratchPerThread) {
    Matcher m({{"needle", 0}, {"/hay+/", 1}});
    std::string text(4000, 'x');
    text.replace(3000, 6, "needle");
    std::vector<std::thread> threads;
    std::vector<int> ok(2, 0);
    for (int t = 0; t < 2; t++) {
        threads.emplace_back([&, t] {
            auto s = m.db.make_scratch();
            if (!s.ok()) return;
            int good = 0;
            for (int i = 0; i < 2000; i++) {
                RuleMask mask;
                m.db.scan(reinterpret_cast<const uint8_t*>(text.data()),
                          static_cast<uint32_t>(text.size()), *s, mask);
                good += mask.test(0) && !mask.test(1);
            }
            ok[t] = good;
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(ok[0], 2000);
    EXPECT_EQ(ok[1], 2000);
}

TEST(Patterns, MinLength) {
    Matcher m({{"abcdef", 0}, {"/x{3}y/", 1}});
    EXPECT_EQ(m.db.min_length(), 4u);
    EXPECT_FALSE(m.scan_text("xxy").any());
    EXPECT_TRUE(m.scan_text("xxxy").test(1));
}

/* ---- Errors -------------------------------------------------------------- */

TEST(PatternErrors, InvalidRegexNamesThePattern) {
    std::string e = compile_error({{"GET ", 0}, {"fine", 1}, {"/get(/i", 1}}, {"web", "mail"});
    EXPECT_NE(e.find("rule 'mail'"), std::string::npos) << e;
    EXPECT_NE(e.find("pattern 2"), std::string::npos) << e;
    EXPECT_NE(e.find("'/get(/i'"), std::string::npos) << e;
    EXPECT_NE(e.find("Missing close parenthesis"), std::string::npos) << e;  // Hyperscan's words
    EXPECT_NE(e.find("expression 2"), std::string::npos) << e;

    // Without names the rule index is used.
    e = compile_error({{"/a(?<n>b)\\k<n>/", 4}});
    EXPECT_NE(e.find("rule 4, pattern 1"), std::string::npos) << e;
}

TEST(PatternErrors, EmptyAndBadForms) {
    EXPECT_NE(compile_error({{"", 0}}).find("empty pattern"), std::string::npos);
    EXPECT_NE(compile_error({{"//", 0}}).find("empty regex"), std::string::npos);
    EXPECT_NE(compile_error({{"//i", 0}}).find("empty regex"), std::string::npos);
    std::string e = compile_error({{"/etc/passwd", 0}});
    EXPECT_NE(e.find("unknown regex flag 'p'"), std::string::npos) << e;
    EXPECT_NE(e.find("'//etc/passwd/'"), std::string::npos) << e;
    // Matches the empty string: Hyperscan refuses, and we say so.
    e = compile_error({{"/a*/", 0}});
    EXPECT_NE(e.find("'/a*/'"), std::string::npos) << e;
    EXPECT_NE(e.find("empty"), std::string::npos) << e;
    // Rule index out of range.
    EXPECT_NE(compile_error({{"x", kMaxPatternRules}}).find("out of range"), std::string::npos);
}

}  // namespace
}  // namespace linecap::filters
