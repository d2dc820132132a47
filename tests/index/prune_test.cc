/* FlowFilter against libpcap's own verdicts.
 *
 * The soundness test is differential: for every expression and every packet
 * (frames generated here and in tests/filters/bpf_test_packets.hh, every
 * prefix of some, random mutations, the tcpdump test-suite captures), if
 * bpf_filter() accepts the packet, eval() of its flow key must say
 * may_accept, and if it rejects, may_reject. The pruning tests check that
 * header-only expressions are decided exactly, so that capq does skip. */
#include "index/prune.hh"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "filters/cbpf_to_ebpf.hh"
#include "index/flow_key.hh"
#include "tests/filters/bpf_test_packets.hh"

namespace linecap::index {
namespace {

using filters::ClassicInsn;
using filters::testing::build;
using filters::testing::build_arp;
using filters::testing::Frame;
using filters::testing::GenSpec;
using filters::testing::ipv4;
using filters::testing::L4;
using filters::testing::TestPacket;

constexpr uint16_t kEn10mb = 1;
constexpr uint16_t kRaw = 101;    // LINKTYPE_RAW, in files
constexpr uint16_t kDltRaw = 12;  // DLT_RAW, for pcap_compile()
constexpr uint16_t kSll = 113;

/* Expressions over what the index keeps (link types, tags, addresses,
 * protocols, ports) and over what it does not (flags, payload, lengths,
 * MAC addresses, TTL), with every kind of classic instruction libpcap
 * emits: indexed loads, MSH, arithmetic, X comparisons, protochain loops. */
const std::vector<std::string> kExpressions = {
    "host 198.18.0.1",
    "src host 198.18.0.1",
    "dst host 198.18.3.7",
    "host 198.18.3.7 and host 198.18.0.1",
    "ip host 198.18.0.1",
    "host 192.168.152.100",
    "host 2001:db8::1",
    "src host 2001:db8::2",
    "dst host 2001:db8::1",
    "ip6 host 2001:db8::3",
    "net 198.18.0.0/16",
    "net 198.18.3.0 mask 255.255.255.0",
    "src net 198.19.0.0/16",
    "dst net 224.0.0.0/4",
    "net 2001:db8::/32",
    "net 2001:db8::/126",
    "net 192.168.152.0/24",
    "port 443",
    "port 80",
    "src port 40000",
    "dst port 443",
    "portrange 1-1024",
    "src portrange 1024-65535",
    "tcp port 443",
    "udp port 53",
    "tcp dst port 80",
    "port 0",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "ip",
    "ip6",
    "arp",
    "rarp",
    "sctp",
    "proto 47",
    "ip proto 132",
    "ip6 proto 17",
    "ip6 proto 0",
    "ip proto 50",
    "vlan",
    "vlan 100",
    "vlan 200",
    "vlan and vlan",
    "vlan 100 and vlan 200",
    "vlan 100 and host 198.18.0.1",
    "vlan and ip6",
    "vlan 7 and vlan 8 and ip",
    "not vlan",
    "vlan and tcp port 443",
    "ip[6:2] & 0x1fff = 0",
    "ip[6:2] & 0x1fff != 0",
    "ip[6] & 0x20 != 0",
    "ip[9] = 6",
    "ip[0] & 0xf > 5",
    "ip and ip[0]&0xf>5",
    "ip[8] < 32",
    "ip[2:2] > 100",
    "ip[1] & 0xfc != 0",
    "tcp[13] & 2 != 0",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn",
    "tcp[(tcp[12]>>2):4] = 0x47455420",
    "tcp port 80 and (tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420)",
    "udp[4:2] > 20",
    "icmp[icmptype] = icmp-echo",
    "icmp[0] = 8 and icmp[1] = 0",
    "icmp6 and ip6[40] = 128",
    "ip6[6] = 58",
    "ip6 and ip6[6] = 44",
    "len > 100",
    "len <= 64",
    "greater 200",
    "less 100",
    "len - 14 > ip[2:2]",
    "ether host 00:01:02:03:04:05",
    "ether src 00:11:22:33:44:55",
    "ether broadcast",
    "ether multicast",
    "ether proto 0x0806",
    "ether proto 0x88cc",
    "ether[12:2] = 0x0800",
    "ether[0] & 1 = 0",
    "ip broadcast",
    "ip multicast",
    "ip6 multicast",
    "not host 198.18.0.1",
    "not tcp",
    "not (tcp or udp)",
    "tcp and not port 443",
    "host 198.18.0.1 or host 2001:db8::1",
    "(src host 198.18.0.1 and dst port 443) or udp",
    "host 198.18.0.1 and tcp port 443 and not vlan",
    "ip6 and src net 2001:db8::/64 and udp",
    "ip6 or arp",
    "ip and not ip multicast",
    "ip and tcp[13]&2!=0 and dst net 198.18.0.0/15",
    "ip6 protochain 6",
    "ip protochain 17",
    "ip6 protochain 44",
    "ip[12:4] = ip[16:4]",
    "tcp[2:2] > tcp[0:2]",
    "udp[0:2] >= udp[2:2]",
    "tcp[13] & ip[1] != 0",
    "ip[9] * 2 = 12",
    "ip[9] / 3 = 2",
    "ip[9] % 5 = 1",
    "ip[9] ^ 6 = 0",
    "ip[9] | 1 = 7",
    "-ip[9] + 6 = 0",
    "ip[9] - 5 = 1",
    "tcp[0:2] >> 8 = 0x9c",
    "ip[0] << 2 > 0x110",
    "ip[ip[0] & 0xf] = 0",
    "tcp[tcp[0] & 0x1f] = 1",
    "ip[2:2] / (ip[1] & 3) = 1",
    "udp[len - 20] = 0",
    "mpls and ip",
    "pppoes and ip",
    // Tests that every value passes, of bytes that may lie past the end of
    // the capture (where bpf_filter() rejects).
    "ip[100] & 0x100 = 0",
    "tcp[24] & 0x100 = 0",
    "tcp[19] & 0x100 = 0",
    "udp[10] >= 0",
    "udp[7] >= 0",
    "ip6[80:2] < 0x10000",
    "ether[200:2] <= 0xffff",
    // Carries, and comparisons of a known with an unknown register.
    "ip[8] + 1 > 255",
    "ip[8] + ip[1] > 300",
    "ip[8] - 1 > 250",
    "ip[9] > ip[8]",
    "ip[8] >= ip[9]",
    "ip[9] < ip[1]",
    "ip[8] & 1 = 0 and ip[8] = 64",
    // Priority bits of the tags; a jset's outcome reused by the next test.
    "vlan and ether[14] & 0xe0 != 0",
    "vlan and ether[14:2] & 0xf000 = 0x2000",
    "ip[8] & 1 != 0 or ip[8] = 64",
    "ip[1] & 0x80 != 0 or ip[1] = 0",
};

std::vector<uint8_t> to_sll(const std::vector<uint8_t>& eth) {
    if (eth.size() < 14) return {};
    std::vector<uint8_t> f = {0, 0, 0, 1, 0, 6};
    f.insert(f.end(), eth.begin() + 6, eth.begin() + 12);
    f.push_back(0);
    f.push_back(0);
    f.insert(f.end(), eth.begin() + 12, eth.end());
    return f;
}

/* Frames with the addresses, tags, fragments and headers the expressions
 * test, in every combination. */
std::vector<TestPacket> flow_packets() {
    std::vector<TestPacket> out;
    auto add = [&](std::vector<uint8_t> b, const std::string& what) {
        TestPacket t;
        t.wirelen = static_cast<uint32_t>(b.size());
        t.bytes = std::move(b);
        t.origin = "flow:" + what + "#" + std::to_string(out.size());
        out.push_back(std::move(t));
    };
    const std::vector<std::pair<uint32_t, uint32_t>> addrs = {
        {ipv4(198, 18, 0, 1), ipv4(198, 18, 3, 7)},
        {ipv4(198, 18, 3, 7), ipv4(198, 18, 0, 1)},
        {ipv4(198, 19, 1, 1), ipv4(255, 255, 255, 255)},
        {ipv4(198, 18, 3, 9), ipv4(224, 0, 0, 5)},
    };
    const std::vector<std::pair<uint16_t, uint16_t>> ports = {{40000, 443}, {53, 1024}, {80, 80}};
    const std::vector<std::pair<std::vector<uint16_t>, bool>> tags = {
        {{}, false},     {{100}, false},    {{100, 200}, true},      {{100, 200}, false},
        {{7, 8}, false}, {{0x2064}, false}, {{0xa064, 0x30c8}, true}};  // with priorities
    const std::vector<L4> l4s = {L4::kTcp, L4::kUdp, L4::kIcmp, L4::kOther, L4::kOther};
    for (const auto& [vlans, qinq] : tags) {
        for (size_t li = 0; li < l4s.size(); li++) {
            GenSpec g;
            g.vlans = vlans;
            g.qinq = qinq;
            g.l4 = l4s[li];
            g.ip_proto_other = li == 3 ? 132 : 47;
            for (size_t ai = 0; ai < addrs.size(); ai++) {
                for (size_t pi = 0; pi < ports.size(); pi++) {
                    g.src4 = addrs[ai].first;
                    g.dst4 = addrs[ai].second;
                    g.sport = ports[pi].first;
                    g.dport = ports[pi].second;
                    g.tcp_flags = pi == 0 ? 0x02 : 0x10;
                    g.payload = pi == 2 ? "GET / HTTP/1.0\r\n\r\n" : std::string(ai * 40, 'p');
                    g.v6 = false;
                    g.v6_ext.clear();
                    for (uint16_t frag : {0x0000, 0x2000, 0x2003, 0x0003, 0x4000}) {
                        for (uint8_t ihl : {5, 7}) {
                            g.frag = frag;
                            g.ihl = ihl;
                            add(build(g), "ip");
                        }
                    }
                    g.v6 = true;
                    g.ihl = 5;
                    g.src6_tail = static_cast<uint16_t>(1 + ai % 3);
                    g.dst6_tail = static_cast<uint16_t>(1 + (ai + 1) % 3);
                    const std::vector<std::vector<uint8_t>> exts = {{},          {0},  {44},
                                                                    {0, 43, 60}, {51}, {60, 44}};
                    for (const auto& ext : exts) {
                        g.v6_ext = ext;
                        g.frag = 0x0001;  // first fragment, more to come
                        add(build(g), "ip6");
                        if (ext.empty() || ext.back() != 44) continue;
                        g.frag = 0x0021;  // offset 32
                        add(build(g), "ip6 later fragment");
                    }
                }
            }
        }
        add(build_arp(1, ipv4(198, 18, 0, 1), ipv4(198, 18, 3, 7), false, vlans), "arp");
        add(build_arp(3, ipv4(198, 18, 0, 1), ipv4(198, 18, 3, 7), true, vlans), "rarp");
        GenSpec g;
        g.vlans = vlans;
        g.qinq = qinq;
        for (uint16_t type : {0x88cc, 0x0026, 0x8847}) {
            Frame f;
            filters::testing::put_ethernet(f, g, type);
            for (int i = 0; i < 50; i++) f.u8(static_cast<uint32_t>(i * 7));
            add(std::move(f.raw()), "other ethertype");
        }
    }
    // Frames cut by a snap length, at every length.
    std::vector<TestPacket> cut;
    for (size_t i = 0; i < out.size(); i += 97) filters::testing::add_prefixes(out[i], cut);
    out.insert(out.end(), cut.begin(), cut.end());
    return out;
}

/* The packets for one link type: Ethernet as generated and read, Linux
 * cooked and raw IP converted from the Ethernet ones. */
std::vector<TestPacket> packets_for(uint16_t linktype, const std::vector<TestPacket>& eth) {
    if (linktype == kEn10mb) return eth;
    std::vector<TestPacket> out;
    for (const TestPacket& p : eth) {
        TestPacket t;
        t.origin = p.origin;
        if (linktype == kSll) {
            t.bytes = to_sll(p.bytes);
            if (t.bytes.empty()) continue;
            t.wirelen = p.wirelen + 2;
        } else {
            if (p.bytes.size() < 14) continue;
            t.bytes.assign(p.bytes.begin() + 14, p.bytes.end());
            t.wirelen = p.wirelen - 14;
        }
        out.push_back(std::move(t));
    }
    return out;
}

std::string hex(const std::vector<uint8_t>& b) {
    std::string s;
    char buf[4];
    for (size_t i = 0; i < b.size() && i < 96; i++) {
        std::snprintf(buf, sizeof(buf), "%02x", b[i]);
        s += buf;
    }
    return s;
}

std::vector<TestPacket> all_ethernet_packets(size_t* corpus_packets) {
    std::vector<TestPacket> pk = flow_packets();
    std::vector<TestPacket> gen = filters::testing::generated_packets();
    pk.insert(pk.end(), gen.begin(), gen.end());
    filters::testing::add_mutations(pk, 4000, 0x9e3779b9, pk);
    size_t files = 0;
    const auto dir = filters::testing::test_data_dir();
    std::vector<TestPacket> corpus =
        filters::testing::read_ethernet_captures(dir / "tcpdump-tests", &files);
    std::vector<TestPacket> demo = filters::testing::read_ethernet_captures(dir / "demo");
    corpus.insert(corpus.end(), demo.begin(), demo.end());
    *corpus_packets = corpus.size();
    pk.insert(pk.end(), corpus.begin(), corpus.end());
    return pk;
}

/* The flow key of every packet of pk, as capd's writer makes them. */
std::vector<FlowKey> flow_keys(uint16_t linktype, const std::vector<TestPacket>& pk) {
    std::vector<FlowKey> keys(pk.size());
    for (size_t i = 0; i < pk.size(); i++)
        make_flow_key(linktype, pk[i].bytes.data(), static_cast<uint32_t>(pk[i].bytes.size()),
                      keys[i]);
    return keys;
}

/* libpcap's verdict on p: the classic program run as capq runs it. */
bool accepts(std::span<const filters::ClassicInsn> prog, const TestPacket& p) {
    return filters::classic_run(prog, p.bytes.data(), p.wirelen,
                                static_cast<uint32_t>(p.bytes.size())) != 0;
}

TEST(FlowFilter, NeverPrunesAPacketLibpcapAccepts) {
    size_t corpus_packets = 0;
    const std::vector<TestPacket> eth = all_ethernet_packets(&corpus_packets);
    EXPECT_GT(corpus_packets, 1000u) << "the tcpdump test captures were not found";
    size_t evaluations = 0, violations = 0, pruned = 0, exact = 0, programs = 0;
    for (uint16_t linktype : {kEn10mb, kSll, kRaw}) {
        const std::vector<TestPacket> pk = packets_for(linktype, eth);
        const std::vector<FlowKey> keys = flow_keys(linktype, pk);
        size_t compiled = 0;
        for (const std::string& e : kExpressions) {
            auto prog = filters::compile_classic(e, linktype == kRaw ? kDltRaw : linktype, 262144);
            if (!prog) {
                // Every expression is valid on Ethernet; some (vlan, ether)
                // have no meaning on the others.
                EXPECT_NE(linktype, kEn10mb) << e << ": " << prog.error();
                continue;
            }
            compiled++;
            const FlowFilter ff(*prog, linktype == kRaw ? kDltRaw : linktype);
            for (size_t i = 0; i < pk.size(); i++) {
                const TestPacket& p = pk[i];
                const bool accepted = accepts(*prog, p);
                const FlowFilter::Verdict v = ff.eval(keys[i]);
                evaluations++;
                if (!v.may_accept) pruned++;
                if (v.may_accept != v.may_reject) exact++;
                if ((accepted && !v.may_accept) || (!accepted && !v.may_reject)) {
                    if (violations++ < 20)
                        ADD_FAILURE()
                            << "linktype " << linktype << " '" << e << "' " << p.origin
                            << ": libpcap " << (accepted ? "accepts" : "rejects") << ", eval says {"
                            << v.may_accept << "," << v.may_reject << "}, flow "
                            << describe_flow(keys[i]) << ", bytes " << hex(p.bytes);
                }
            }
        }
        EXPECT_GE(compiled, linktype == kEn10mb ? kExpressions.size() : 60u) << linktype;
        programs += compiled;
        std::printf("linktype %u: %zu packets, %zu expressions compiled\n", linktype, pk.size(),
                    compiled);
    }
    std::printf(
        "%zu programs, %zu evaluations (%zu corpus packets): %zu violations, %zu flows pruned, "
        "%zu decided exactly\n",
        programs, evaluations, corpus_packets, violations, pruned, exact);
    EXPECT_EQ(violations, 0u);
    // Not vacuous: a sound answer of "maybe" everywhere would prune nothing.
    EXPECT_GT(pruned, evaluations / 4);
}

FlowKey key_of(uint16_t linktype, const std::vector<uint8_t>& f) {
    FlowKey k;
    make_flow_key(linktype, f.data(), static_cast<uint32_t>(f.size()), k);
    return k;
}

std::vector<ClassicInsn> compile(const std::string& e, uint16_t linktype = kEn10mb) {
    auto prog = filters::compile_classic(e, linktype, 262144);
    EXPECT_TRUE(prog) << e;
    return prog ? *prog : std::vector<ClassicInsn>{};
}

/* The fleet catalogue's aggregate rows (storage/catalog.hh): a key with an
 * endpoint, or both, and the ports left unknown stands for many flows. For
 * every packet libpcap accepts, the aggregates its flow would be counted in
 * (each endpoint's, and the wildcard) must say may_accept. */
TEST(FlowFilter, AggregateKeysNeverPruneAPacketLibpcapAccepts) {
    size_t corpus_packets = 0;
    const std::vector<TestPacket> eth = all_ethernet_packets(&corpus_packets);
    size_t evaluations = 0, violations = 0;
    auto aggregate = [](FlowKey k, const uint8_t* src) {
        if (src)
            std::memmove(k.src, src, 16);
        else
            std::memset(k.src, 0, 16);
        std::memset(k.dst, 0, 16);
        k.sport = k.dport = 0;
        k.flags = static_cast<uint8_t>(k.flags & ~kFlowHasPorts);
        return k;
    };
    for (uint16_t linktype : {kEn10mb, kRaw}) {
        const std::vector<TestPacket> pk = packets_for(linktype, eth);
        for (const std::string& e : kExpressions) {
            auto prog = filters::compile_classic(e, linktype == kRaw ? kDltRaw : linktype, 262144);
            if (!prog) continue;
            const FlowFilter ff(*prog, linktype == kRaw ? kDltRaw : linktype);
            for (const TestPacket& p : pk) {
                FlowKey k;
                make_flow_key(linktype, p.bytes.data(), static_cast<uint32_t>(p.bytes.size()), k);
                if (k.kind != FlowKind::kIp) continue;
                if (!accepts(*prog, p)) continue;
                const FlowKey src = aggregate(k, k.src), dst = aggregate(k, k.dst);
                const FlowKey any = aggregate(k, nullptr);
                const std::pair<const FlowKey*, uint8_t> forms[] = {
                    {&src, FlowFilter::kUnknownDst},
                    {&dst, FlowFilter::kUnknownDst},
                    {&any, FlowFilter::kUnknownSrc | FlowFilter::kUnknownDst}};
                for (const auto& [a, unknown] : forms) {
                    evaluations++;
                    if (ff.eval(*a, unknown).may_accept) continue;
                    if (violations++ < 20)
                        ADD_FAILURE() << "linktype " << linktype << " '" << e << "' " << p.origin
                                      << ": libpcap accepts, the aggregate " << describe_flow(*a)
                                      << " (unknown " << int(unknown) << ") says no; flow "
                                      << describe_flow(k);
                }
            }
        }
    }
    std::printf("%zu aggregate evaluations, %zu violations\n", evaluations, violations);
    EXPECT_EQ(violations, 0u);
    EXPECT_GT(evaluations, 10000u);
    // Not vacuous: the known endpoint still prunes (host A on B's aggregate).
    const FlowFilter host(compile("host 198.18.0.1"), kEn10mb);
    FlowKey k{};
    k.kind = FlowKind::kIp;
    k.linktype = kEn10mb;
    k.ethertype = 0x0800;
    k.l3_offset = 14;
    k.l4_offset = 20;
    k.ip_version = 4;
    k.first_nxt = k.proto = 17;
    const uint8_t b[4] = {198, 18, 0, 2};
    std::memcpy(k.src, b, 4);
    EXPECT_TRUE(host.eval(k, FlowFilter::kUnknownDst).may_accept);  // the other end may be .1
    EXPECT_FALSE(host.eval(k).may_accept);  // as one flow: 198.18.0.2 <> 0.0.0.0
    const FlowFilter tcp(compile("tcp"), kEn10mb);
    EXPECT_FALSE(tcp.eval(k, FlowFilter::kUnknownSrc | FlowFilter::kUnknownDst).may_accept);
    const FlowFilter port(compile("udp port 53"), kEn10mb);
    EXPECT_TRUE(port.eval(k, FlowFilter::kUnknownDst).may_accept);  // ports unknown
}

/* Untagged, tagged and QinQ IPv4/IPv6 TCP/UDP: every header-only expression
 * is decided exactly for each conversation (a key holds both directions:
 * may_accept if either direction passes, may_reject if either fails). */
TEST(FlowFilter, HeaderOnlyExpressionsAreExactPerConversation) {
    // Each frame, and the reply (addresses and ports swapped).
    std::vector<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>> frames;
    const std::vector<std::pair<std::vector<uint16_t>, bool>> tags = {
        {{}, false}, {{100}, false}, {{200}, false}, {{100, 200}, true}, {{300, 100}, false}};
    for (const auto& [vlans, qinq] : tags)
        for (bool v6 : {false, true})
            for (L4 l4 : {L4::kTcp, L4::kUdp})
                for (int variant = 0; variant < 3; variant++) {
                    GenSpec g;
                    g.vlans = vlans;
                    g.qinq = qinq;
                    g.v6 = v6;
                    g.l4 = l4;
                    g.ihl = variant == 2 ? 6 : 5;
                    g.src4 = variant == 0 ? ipv4(198, 18, 0, 1) : ipv4(198, 19, 7, 7);
                    g.dst4 = variant == 1 ? ipv4(198, 18, 0, 1) : ipv4(198, 18, 3, 7);
                    g.src6_tail = static_cast<uint16_t>(1 + variant);
                    g.dst6_tail = static_cast<uint16_t>(3 - variant);
                    g.sport = variant == 0 ? 40000 : 53;
                    g.dport = variant == 2 ? 1024 : 443;
                    GenSpec r = g;
                    std::swap(r.src4, r.dst4);
                    std::swap(r.src6_tail, r.dst6_tail);
                    std::swap(r.sport, r.dport);
                    frames.emplace_back(build(g), build(r));
                }
    const std::vector<std::string> exprs = {
        "host 198.18.0.1",
        "src host 198.18.0.1",
        "dst host 198.18.3.7",
        "host 2001:db8::1",
        "src host 2001:db8::2",
        "ip6 dst host 2001:db8::3",
        "net 198.18.0.0/16",
        "src net 198.19.0.0/16",
        "net 2001:db8::/32",
        "net 2001:db8::/127",
        "port 443",
        "src port 40000",
        "dst port 1024",
        "portrange 1000-2000",
        "udp port 53",
        "tcp port 443",
        "tcp",
        "udp",
        "icmp",
        "ip",
        "ip6",
        "proto 17",
        "ip6 proto 6",
        "vlan",
        "vlan 100",
        "vlan 200",
        "vlan and vlan",
        "vlan 100 and vlan 200",
        "vlan 100 and host 198.18.0.1",
        "vlan 300 and vlan and ip6",
        "not vlan",
        "not tcp",
        "not host 198.18.0.1",
        "tcp or udp port 53",
        "host 198.18.0.1 and tcp port 443",
        "(src host 198.18.0.1 and dst port 443) or (ip6 and udp)",
        "not (ip6 or port 53)",
        "ip and not net 198.19.0.0/16 and (tcp or udp)",
    };
    size_t checked = 0, accepted_count = 0, one_way = 0;
    auto run = [](const std::vector<ClassicInsn>& prog, const std::vector<uint8_t>& f) {
        return filters::classic_run(prog, f.data(), static_cast<uint32_t>(f.size()),
                                    static_cast<uint32_t>(f.size())) != 0;
    };
    for (const std::string& e : exprs) {
        const std::vector<ClassicInsn> prog = compile(e);
        const FlowFilter ff(prog, kEn10mb);
        for (const auto& [f, reply] : frames) {
            const FlowKey k = key_of(kEn10mb, f);
            ASSERT_EQ(k.kind, FlowKind::kIp);
            ASSERT_TRUE(k == key_of(kEn10mb, reply));
            const bool there = run(prog, f), back = run(prog, reply);
            const FlowFilter::Verdict v = ff.eval(k);
            EXPECT_EQ(v.may_accept, there || back) << e << " on " << describe_flow(k);
            EXPECT_EQ(v.may_reject, !there || !back) << e << " on " << describe_flow(k);
            checked++;
            accepted_count += there || back;
            one_way += there != back;
        }
    }
    EXPECT_GT(accepted_count, checked / 10);
    EXPECT_LT(accepted_count, checked * 9 / 10);
    EXPECT_GT(one_way, 0u);  // src/dst-specific terms: accepted one way only
}

TEST(FlowFilter, BytesTheIndexDoesNotKeepAreUnknown) {
    GenSpec g;
    g.src4 = ipv4(198, 18, 0, 1);
    g.dst4 = ipv4(198, 18, 3, 7);
    const FlowKey tcp = key_of(kEn10mb, build(g));
    g.l4 = L4::kUdp;
    const FlowKey udp = key_of(kEn10mb, build(g));
    g.l4 = L4::kTcp;
    g.v6 = true;
    const FlowKey tcp6 = key_of(kEn10mb, build(g));

    const FlowFilter syn(compile("tcp[13] & 2 != 0"), kEn10mb);
    EXPECT_TRUE(syn.eval(tcp).may_accept);
    EXPECT_TRUE(syn.eval(tcp).may_reject);
    EXPECT_FALSE(syn.eval(udp).may_accept);
    EXPECT_TRUE(syn.eval(udp).may_reject);

    const FlowFilter get(compile("host 198.18.3.7 and tcp[(tcp[12]>>2):4] = 0x47455420"), kEn10mb);
    EXPECT_TRUE(get.eval(tcp).may_accept);
    EXPECT_TRUE(get.eval(tcp).may_reject);
    EXPECT_FALSE(get.eval(tcp6).may_accept);

    const FlowFilter len(compile("tcp and len > 100"), kEn10mb);
    EXPECT_TRUE(len.eval(tcp).may_accept);
    EXPECT_TRUE(len.eval(tcp).may_reject);
    EXPECT_FALSE(len.eval(udp).may_accept);

    // The IPv6 TCP flow with no extension header is decided by protochain.
    const FlowFilter chain(compile("ip6 protochain 6"), kEn10mb);
    EXPECT_TRUE(chain.eval(tcp6).may_accept);
    EXPECT_FALSE(chain.eval(tcp).may_accept);
}

TEST(FlowFilter, OpaqueOtherLinkTypeAndEmptyProgram) {
    GenSpec g;
    g.src4 = ipv4(198, 18, 0, 1);
    const FlowKey k = key_of(kEn10mb, build(g));
    const FlowFilter udp(compile("udp"), kEn10mb);
    EXPECT_FALSE(udp.eval(k).may_accept);

    FlowKey opaque = key_of(kEn10mb, {1, 2, 3});
    ASSERT_EQ(opaque.kind, FlowKind::kOpaque);
    EXPECT_TRUE(udp.eval(opaque).may_accept);
    EXPECT_TRUE(udp.eval(opaque).may_reject);

    const FlowFilter raw(compile("udp", kDltRaw), kDltRaw);
    EXPECT_TRUE(raw.eval(k).may_accept);  // k is an Ethernet flow
    EXPECT_TRUE(raw.eval(k).may_reject);
    std::vector<uint8_t> ip = build(g);
    ip.erase(ip.begin(), ip.begin() + 14);
    EXPECT_FALSE(raw.eval(key_of(kRaw, ip)).may_accept);  // LINKTYPE_RAW is DLT_RAW
    EXPECT_FALSE(raw.eval(key_of(kDltRaw, ip)).may_accept);

    const FlowFilter all({}, kEn10mb);
    EXPECT_TRUE(all.eval(k).may_accept);
    EXPECT_FALSE(all.eval(k).may_reject);

    // A key no walk produces (IPv4 header length 19) is answered "maybe".
    FlowKey bad = k;
    bad.l4_offset = 19;
    EXPECT_TRUE(udp.eval(bad).may_accept);
    EXPECT_TRUE(udp.eval(bad).may_reject);
}

/* ld len; then n times: jset #bit (both ways possible) over one ldx; ret #1.
 * 2^n paths, all accepting. */
std::vector<ClassicInsn> forking_program(unsigned n) {
    std::vector<ClassicInsn> p;
    p.push_back({0x80, 0, 0, 0});  // ld len
    for (unsigned i = 0; i < n; i++) {
        p.push_back({0x45, 0, 1, 1u << (i % 32)});  // jset #bit, next, skip one
        p.push_back({0x01, 0, 0, i});               // ldx #i
    }
    p.push_back({0x06, 0, 0, 1});  // ret #1
    return p;
}

TEST(FlowFilter, PathsAreBounded) {
    GenSpec g;
    const FlowKey k = key_of(kEn10mb, build(g));
    static_assert(FlowFilter::kMaxPaths == 256);
    // 256 paths: explored, all accept.
    FlowFilter::Verdict v = FlowFilter(forking_program(8), kEn10mb).eval(k);
    EXPECT_TRUE(v.may_accept);
    EXPECT_FALSE(v.may_reject);
    // 512 and 2^40 paths: beyond the bound, "maybe" both ways.
    for (unsigned n : {9u, 40u}) {
        v = FlowFilter(forking_program(n), kEn10mb).eval(k);
        EXPECT_TRUE(v.may_accept) << n;
        EXPECT_TRUE(v.may_reject) << n;
    }
    // A loop on known values (ja -1) ends on the instruction bound.
    v = FlowFilter({{0x05, 0, 0, 0xffffffffu}, {0x06, 0, 0, 1}}, kEn10mb).eval(k);
    EXPECT_TRUE(v.may_accept);
    EXPECT_TRUE(v.may_reject);
    // A jump out of the program, an unknown opcode, scratch index 16.
    for (ClassicInsn bad : std::vector<ClassicInsn>{
             {0x05, 0, 0, 5}, {0xff, 0, 0, 0}, {0x02, 0, 0, 16}, {0x60, 0, 0, 16}}) {
        v = FlowFilter({bad, {0x06, 0, 0, 0}}, kEn10mb).eval(k);
        EXPECT_TRUE(v.may_accept) << bad.code;
        EXPECT_TRUE(v.may_reject) << bad.code;
    }
}

TEST(FlowFilter, ReturnOfA) {
    GenSpec g;
    g.ttl = 64;
    const FlowKey k = key_of(kEn10mb, build(g));
    // ldb [22] (TTL, unknown); and #1; ret a: may be 0 or 1.
    FlowFilter::Verdict v =
        FlowFilter({{0x30, 0, 0, 22}, {0x54, 0, 0, 1}, {0x16, 0, 0, 0}}, kEn10mb).eval(k);
    EXPECT_TRUE(v.may_accept);
    EXPECT_TRUE(v.may_reject);
    // ldb [23] (protocol, known 6); ret a.
    v = FlowFilter({{0x30, 0, 0, 23}, {0x16, 0, 0, 0}}, kEn10mb).eval(k);
    EXPECT_TRUE(v.may_accept);
    EXPECT_FALSE(v.may_reject);
    // ldb [22]; or #0x100; ret a: never 0.
    v = FlowFilter({{0x30, 0, 0, 22}, {0x44, 0, 0, 0x100}, {0x16, 0, 0, 0}}, kEn10mb).eval(k);
    EXPECT_TRUE(v.may_accept);
    EXPECT_FALSE(v.may_reject);
    // ldb [23]; sub #6; ret a: always 0.
    v = FlowFilter({{0x30, 0, 0, 23}, {0x14, 0, 0, 6}, {0x16, 0, 0, 0}}, kEn10mb).eval(k);
    EXPECT_FALSE(v.may_accept);
    EXPECT_TRUE(v.may_reject);
    // ldb [22]; tax; ldb [15]; jeq x: both unknown, equal on the true way
    // but still unknown (TTL = TOS = 1 passes).
    v = FlowFilter({{0x30, 0, 0, 22},
                    {0x07, 0, 0, 0},
                    {0x30, 0, 0, 15},
                    {0x1d, 0, 1, 0},
                    {0x16, 0, 0, 0},
                    {0x06, 0, 0, 0}},
                   kEn10mb)
            .eval(k);
    EXPECT_TRUE(v.may_accept);
    EXPECT_TRUE(v.may_reject);
    // ldx #0; ldb [23]; div x: bpf_filter() returns 0.
    v = FlowFilter({{0x01, 0, 0, 0}, {0x30, 0, 0, 23}, {0x3c, 0, 0, 0}, {0x06, 0, 0, 1}}, kEn10mb)
            .eval(k);
    EXPECT_FALSE(v.may_accept);
    EXPECT_TRUE(v.may_reject);
}

/* required_addresses(): every accepted IP packet carries one of them. */

using AddressSet = std::vector<std::array<uint8_t, 16>>;

std::array<uint8_t, 16> addr(const char* text) {
    std::array<uint8_t, 16> a{};
    if (inet_pton(AF_INET, text, a.data()) != 1) {
        EXPECT_EQ(inet_pton(AF_INET6, text, a.data()), 1) << text;
    }
    return a;
}

std::string addresses_text(const std::optional<AddressSet>& s) {
    if (!s) return "nullopt";
    std::string out = "{";
    for (const auto& a : *s) out += " " + hex(std::vector<uint8_t>(a.begin(), a.end()));
    return out + " }";
}

TEST(RequiredAddresses, EveryAcceptedIpPacketCarriesOne) {
    size_t corpus_packets = 0;
    const std::vector<TestPacket> eth = all_ethernet_packets(&corpus_packets);
    EXPECT_GT(corpus_packets, 1000u) << "the tcpdump test captures were not found";
    size_t checked = 0, violations = 0, with_set = 0, programs = 0;
    for (uint16_t linktype : {kEn10mb, kSll, kRaw}) {
        const std::vector<TestPacket> pk = packets_for(linktype, eth);
        const std::vector<FlowKey> keys = flow_keys(linktype, pk);
        for (const std::string& e : kExpressions) {
            const uint16_t dlt = linktype == kRaw ? kDltRaw : linktype;
            auto prog = filters::compile_classic(e, dlt, 262144);
            if (!prog) continue;
            programs++;
            const FlowFilter ff(*prog, dlt);
            const auto& req = ff.required_addresses();
            if (!req) continue;
            with_set++;
            for (size_t i = 0; i < pk.size(); i++) {
                if (keys[i].kind != FlowKind::kIp) continue;
                const TestPacket& p = pk[i];
                if (!accepts(*prog, p)) continue;
                checked++;
                std::array<uint8_t, 16> src{}, dst{};
                std::memcpy(src.data(), keys[i].src, 16);
                std::memcpy(dst.data(), keys[i].dst, 16);
                if (std::find(req->begin(), req->end(), src) != req->end() ||
                    std::find(req->begin(), req->end(), dst) != req->end())
                    continue;
                if (violations++ < 20)
                    ADD_FAILURE() << "linktype " << linktype << " '" << e << "' " << p.origin
                                  << ": accepted, flow " << describe_flow(keys[i]) << ", required "
                                  << addresses_text(req);
            }
        }
    }
    std::printf(
        "%zu programs, %zu with an address set; %zu accepted IP packets checked: %zu "
        "violations\n",
        programs, with_set, checked, violations);
    EXPECT_EQ(violations, 0u);
    // Not vacuous: the host expressions have sets (non-IP ones empty sets),
    // and their packets were checked.
    EXPECT_GE(with_set, 30u);
    EXPECT_GT(checked, 1000u);
}

TEST(RequiredAddresses, HostExpressionsGiveTheirAddresses) {
    const std::vector<std::pair<std::string, std::vector<const char*>>> cases = {
        {"host 198.18.3.7", {"198.18.3.7"}},
        {"host 198.18.3.7 and port 443", {"198.18.3.7"}},
        {"host 198.18.3.7 and host 198.18.0.1 and port 40000 and port 443",
         {"198.18.3.7", "198.18.0.1"}},
        {"tcp and host 198.18.3.7 and host 198.18.0.1 and port 40000 and port 443",
         {"198.18.3.7", "198.18.0.1"}},
        {"host 2001:db8::1 and host 2001:db8::2 and port 40000 and port 443",
         {"2001:db8::1", "2001:db8::2"}},
        {"src host 198.18.3.7 or dst host 198.18.0.1", {"198.18.3.7", "198.18.0.1"}},
        {"vlan 100 and host 198.18.3.7", {"198.18.3.7"}},
        {"vlan 100 and vlan 200 and host 2001:db8::1", {"2001:db8::1"}},
        {"ip6 host 2001:db8::3", {"2001:db8::3"}},
        {"(host 198.18.3.7 or host 198.18.0.1) and tcp", {"198.18.3.7", "198.18.0.1"}},
        {"host 198.18.3.7 or host 2001:db8::1", {"198.18.3.7", "2001:db8::1"}},
        {"arp or host 198.18.3.7", {"198.18.3.7"}},
    };
    for (const auto& [e, want_text] : cases) {
        for (uint16_t linktype : {kEn10mb, kSll, kDltRaw}) {
            if (linktype != kEn10mb && e.find("vlan") != std::string::npos) continue;
            if (linktype == kDltRaw && e.find("arp") != std::string::npos) continue;
            AddressSet want;
            for (const char* t : want_text) want.push_back(addr(t));
            std::sort(want.begin(), want.end());
            const FlowFilter ff(compile(e, linktype), linktype);
            const auto& got = ff.required_addresses();
            ASSERT_TRUE(got) << e << " linktype " << linktype;
            EXPECT_EQ(*got, want) << e << " linktype " << linktype << ": " << addresses_text(got);
        }
    }
}

TEST(RequiredAddresses, NoneWithoutAWholeAddress) {
    for (const char* e :
         {"net 198.18.0.0/16", "tcp", "port 80", "tcp[13]&2!=0", "not host 198.18.3.7", "vlan 100",
          "host 198.18.3.7 or port 53", "ip[12:4] = ip[16:4]", "ether[26:4] = 1",
          "ip6 net 2001:db8::/64", "src host 198.18.3.7 or ip6", "len > 100"}) {
        for (uint16_t linktype : {kEn10mb, kSll, kDltRaw}) {
            auto prog = filters::compile_classic(e, linktype, 262144);
            if (!prog) continue;
            const FlowFilter ff(*prog, linktype);
            EXPECT_FALSE(ff.required_addresses())
                << e << " linktype " << linktype << ": " << addresses_text(ff.required_addresses());
        }
    }
    // An empty program accepts everything; another link type is not known.
    EXPECT_FALSE(FlowFilter({}, kEn10mb).required_addresses());
    EXPECT_FALSE(FlowFilter(compile("host 198.18.3.7", 105), 105).required_addresses());
    // Too many paths: nullopt even though every path proves the address.
    std::vector<ClassicInsn> p = compile("host 198.18.3.7");
    std::vector<ClassicInsn> forks = forking_program(9);
    forks.pop_back();  // ret #1: falls through into the host program
    forks.insert(forks.end(), p.begin(), p.end());
    EXPECT_FALSE(FlowFilter(forks, kEn10mb).required_addresses());
    forks = forking_program(3);
    forks.pop_back();
    forks.insert(forks.end(), p.begin(), p.end());
    EXPECT_TRUE(FlowFilter(forks, kEn10mb).required_addresses());
}

TEST(RequiredAddresses, MaskedLoadsAndContradictions) {
    // ldh [12]; and #0xffff; jeq #0x800; ld [26]; jeq #A; ret #1; ret #0.
    const uint32_t a = ipv4(198, 18, 3, 7);
    std::vector<ClassicInsn> p = {{0x28, 0, 0, 12}, {0x54, 0, 0, 0xffff}, {0x15, 0, 4, 0x800},
                                  {0x20, 0, 0, 26}, {0x15, 0, 2, a},      {0x06, 0, 0, 1},
                                  {0x06, 0, 0, 0},  {0x06, 0, 0, 0}};
    const auto got = FlowFilter(p, kEn10mb).required_addresses();
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, AddressSet{addr("198.18.3.7")});
    // The same with the address masked to /24: not a whole address.
    p.insert(p.begin() + 4, {0x54, 0, 0, 0xffffff00});
    p[2].jf = 5;
    p[5].k = a & 0xffffff00;
    EXPECT_FALSE(FlowFilter(p, kEn10mb).required_addresses());
    // ldh [12]; tax; jeq #0x806 (not IP); txa; jeq #0x800: the second
    // test, of the register loaded before the first, contradicts it, so
    // the only accepting path is impossible: the empty set.
    p = {{0x28, 0, 0, 12},    {0x07, 0, 0, 0}, {0x15, 0, 3, 0x806}, {0x87, 0, 0, 0},
         {0x15, 0, 1, 0x800}, {0x06, 0, 0, 1}, {0x06, 0, 0, 0}};
    const auto none = FlowFilter(p, kEn10mb).required_addresses();
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->empty());
    // With the false way of the first test accepting, nothing proved: nullopt.
    p[2].jf = 2;
    EXPECT_FALSE(FlowFilter(p, kEn10mb).required_addresses());
}

/* required_pairs(): every accepted IP packet's flow key has the source and
 * destination of one of them. */

using Pair = std::pair<std::array<uint8_t, 16>, std::array<uint8_t, 16>>;

std::string address_of(const FlowKey& k, const uint8_t* a) {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(k.ip_version == 4 ? AF_INET : AF_INET6, a, buf, sizeof buf);
    return buf;
}

TEST(RequiredPairs, EveryAcceptedIpPacketHasOne) {
    size_t corpus_packets = 0;
    const std::vector<TestPacket> eth = all_ethernet_packets(&corpus_packets);
    size_t checked = 0, violations = 0, with_pairs = 0;
    for (uint16_t linktype : {kEn10mb, kSll, kRaw}) {
        const std::vector<TestPacket> pk = packets_for(linktype, eth);
        const std::vector<FlowKey> keys = flow_keys(linktype, pk);
        // The conversations of the packets themselves (every 97th IP
        // packet's), each way round and with more terms, then the list.
        std::vector<std::string> exprs = kExpressions;
        for (size_t i = 0; i < pk.size(); i += 97) {
            const FlowKey& k = keys[i];
            if (k.kind != FlowKind::kIp) continue;
            const std::string a = address_of(k, k.src), b = address_of(k, k.dst);
            exprs.push_back("host " + a + " and host " + b);
            exprs.push_back("host " + b + " and host " + a + " and tcp");
            exprs.push_back("src host " + a + " and dst host " + b);
            exprs.push_back("(host " + a + " and host " + b + ") or (host " + b + " and host " + a +
                            " and udp)");
        }
        for (const std::string& e : exprs) {
            const uint16_t dlt = linktype == kRaw ? kDltRaw : linktype;
            auto prog = filters::compile_classic(e, dlt, 262144);
            if (!prog) continue;
            const FlowFilter ff(*prog, dlt);
            const auto& pairs = ff.required_pairs();
            if (!pairs) continue;
            with_pairs++;
            // Never without the addresses: the pairs are among them.
            ASSERT_TRUE(ff.required_addresses()) << e;
            for (size_t i = 0; i < pk.size(); i++) {
                if (keys[i].kind != FlowKind::kIp) continue;
                const TestPacket& p = pk[i];
                if (!accepts(*prog, p)) continue;
                checked++;
                Pair have;
                std::memcpy(have.first.data(), keys[i].src, 16);
                std::memcpy(have.second.data(), keys[i].dst, 16);
                if (std::find(pairs->begin(), pairs->end(), have) != pairs->end()) continue;
                if (violations++ < 20)
                    ADD_FAILURE() << "linktype " << linktype << " '" << e << "' " << p.origin
                                  << ": accepted, flow " << describe_flow(keys[i])
                                  << ", not one of its " << pairs->size() << " pairs";
            }
        }
    }
    std::printf("%zu programs with pairs; %zu accepted IP packets checked: %zu violations\n",
                with_pairs, checked, violations);
    EXPECT_EQ(violations, 0u);
    EXPECT_GE(with_pairs, 30u);
    EXPECT_GT(checked, 1000u);
}

TEST(RequiredPairs, BothAddressesOfEveryPathOrNone) {
    auto pair = [](const char* a, const char* b) { return Pair(std::minmax(addr(a), addr(b))); };
    const std::vector<std::pair<std::string, std::vector<Pair>>> with = {
        {"host 198.18.3.7 and host 198.18.0.1", {pair("198.18.3.7", "198.18.0.1")}},
        {"host 198.18.0.1 and host 198.18.3.7 and port 40000 and port 443",
         {pair("198.18.3.7", "198.18.0.1")}},
        {"src host 198.18.3.7 and dst host 198.18.0.1", {pair("198.18.3.7", "198.18.0.1")}},
        {"host 2001:db8::2 and host 2001:db8::1 and tcp", {pair("2001:db8::1", "2001:db8::2")}},
        {"(host 198.18.0.1 and host 198.18.0.2) or (host 198.18.0.3 and host 198.18.0.4)",
         {pair("198.18.0.1", "198.18.0.2"), pair("198.18.0.3", "198.18.0.4")}},
        {"arp or (host 198.18.3.7 and host 198.18.0.1)", {pair("198.18.3.7", "198.18.0.1")}},
        {"arp", {}},
    };
    for (const auto& [e, want_pairs] : with) {
        for (uint16_t linktype : {kEn10mb, kSll, kDltRaw}) {
            if (linktype == kDltRaw && e.find("arp") != std::string::npos) continue;
            std::vector<Pair> want = want_pairs;
            std::sort(want.begin(), want.end());
            const FlowFilter ff(compile(e, linktype), linktype);
            const auto& got = ff.required_pairs();
            ASSERT_TRUE(got) << e << " linktype " << linktype;
            EXPECT_EQ(*got, want) << e << " linktype " << linktype;
        }
    }
    // One address on some path: addresses, but no pairs.
    for (const char* e : {"host 198.18.3.7", "host 198.18.3.7 and port 443",
                          "src host 198.18.3.7 or dst host 198.18.0.1",
                          "(host 198.18.0.1 and host 198.18.0.2) or host 198.18.0.3",
                          "src host 198.18.3.7 and (dst host 198.18.0.1 or port 80)"}) {
        const FlowFilter ff(compile(e, kEn10mb), kEn10mb);
        EXPECT_TRUE(ff.required_addresses()) << e;
        EXPECT_FALSE(ff.required_pairs()) << e;
    }
    // No addresses: no pairs either.
    for (const char* e : {"tcp", "net 198.18.0.0/16", "not host 198.18.3.7"})
        EXPECT_FALSE(FlowFilter(compile(e, kEn10mb), kEn10mb).required_pairs()) << e;
}

}  // namespace
}  // namespace linecap::index
