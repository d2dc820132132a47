#include "index/flow_key.hh"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace linecap::index {
namespace {

std::vector<uint8_t> ether(std::vector<uint16_t> tags, uint16_t type) {
    std::vector<uint8_t> f(12, 0xaa);
    for (size_t i = 0; i < tags.size(); i += 2) {
        f.push_back(tags[i] >> 8);
        f.push_back(tags[i] & 0xff);
        f.push_back(tags[i + 1] >> 8);
        f.push_back(tags[i + 1] & 0xff);
    }
    f.push_back(type >> 8);
    f.push_back(type & 0xff);
    return f;
}

void ipv4_tcp(std::vector<uint8_t>& f, uint16_t frag, uint8_t ihl_words = 5) {
    size_t l3 = f.size();
    f.resize(l3 + ihl_words * 4u + 20, 0);
    f[l3] = 0x40 | ihl_words;
    f[l3 + 2] = 0;
    f[l3 + 3] = static_cast<uint8_t>(ihl_words * 4 + 20);
    f[l3 + 6] = frag >> 8;
    f[l3 + 7] = frag & 0xff;
    f[l3 + 8] = 64;
    f[l3 + 9] = 6;
    uint8_t src[4] = {198, 18, 0, 1}, dst[4] = {198, 18, 3, 7};
    std::copy(src, src + 4, &f[l3 + 12]);
    std::copy(dst, dst + 4, &f[l3 + 16]);
    size_t l4 = l3 + ihl_words * 4u;
    f[l4] = 0x9c;  // 40000
    f[l4 + 1] = 0x40;
    f[l4 + 2] = 0x01;  // 443
    f[l4 + 3] = 0xbb;
    f[l4 + 12] = 0x50;
}

TEST(FlowKey, Ipv4TcpUntagged) {
    auto f = ether({}, 0x0800);
    ipv4_tcp(f, 0);
    FlowKey k;
    make_flow_key(1, f.data(), f.size(), k);
    EXPECT_EQ(k.kind, FlowKind::kIp);
    EXPECT_EQ(k.ip_version, 4);
    EXPECT_EQ(k.proto, 6);
    EXPECT_EQ(k.first_nxt, 6);
    EXPECT_EQ(k.l3_offset, 14);
    EXPECT_EQ(k.l4_offset, 20);
    EXPECT_EQ(k.sport, 40000);
    EXPECT_EQ(k.dport, 443);
    EXPECT_EQ(k.flags, kFlowHasPorts);
    EXPECT_EQ(k.src[0], 198);
    EXPECT_EQ(k.dst[3], 7);
    EXPECT_EQ(k.src[4], 0);
    EXPECT_EQ(describe_flow(k), "tcp 198.18.0.1:40000 <> 198.18.3.7:443");
}

/* The reply of a packet: addresses and ports swapped. */
void reverse_ipv4_tcp(std::vector<uint8_t>& f, size_t l3) {
    for (int i = 0; i < 4; i++) std::swap(f[l3 + 12 + i], f[l3 + 16 + i]);
    const size_t l4 = l3 + (f[l3] & 0x0f) * 4u;
    std::swap(f[l4], f[l4 + 2]);
    std::swap(f[l4 + 1], f[l4 + 3]);
}

TEST(FlowKey, BothDirectionsShareOneKey) {
    auto f = ether({0x8100, 0x0064}, 0x0800);
    ipv4_tcp(f, 0);
    FlowKey a, b;
    make_flow_key(1, f.data(), f.size(), a);
    reverse_ipv4_tcp(f, 18);
    EXPECT_EQ(f[18 + 12 + 3], 7);  // the reply: from 198.18.3.7
    make_flow_key(1, f.data(), f.size(), b);
    EXPECT_TRUE(a == b);
    EXPECT_EQ(b.src[3], 1);  // the lower address first, with its port
    EXPECT_EQ(b.sport, 40000);
    EXPECT_EQ(b.dport, 443);
    EXPECT_EQ(hash_flow_key(a), hash_flow_key(b));
    // Same address both ways: the lower port first.
    std::copy(f.begin() + 18 + 12, f.begin() + 18 + 16, f.begin() + 18 + 16);
    make_flow_key(1, f.data(), f.size(), a);
    EXPECT_EQ(a.sport, 443);
    EXPECT_EQ(a.dport, 40000);
    reverse_ipv4_tcp(f, 18);
    make_flow_key(1, f.data(), f.size(), b);
    EXPECT_TRUE(a == b);
    // A later fragment (no ports) of the reply: the lower address first.
    auto g = ether({}, 0x0800);
    ipv4_tcp(g, 185);
    reverse_ipv4_tcp(g, 14);
    make_flow_key(1, g.data(), g.size(), a);
    EXPECT_EQ(a.src[3], 1);
    EXPECT_EQ(a.dst[3], 7);
}

TEST(FlowKey, QinQTagsAndOptions) {
    auto f = ether({0x88a8, 0x2064, 0x8100, 0x00c8}, 0x0800);  // PCP 1 on the outer tag
    ipv4_tcp(f, 0, 7);
    FlowKey k;
    make_flow_key(1, f.data(), f.size(), k);
    ASSERT_EQ(k.kind, FlowKind::kIp);
    EXPECT_EQ(k.vlan_tags, 2);
    EXPECT_EQ(k.tpid[0], 0x88a8);
    EXPECT_EQ(k.vid[0], 100);  // priority bits not kept
    EXPECT_EQ(k.tpid[1], 0x8100);
    EXPECT_EQ(k.vid[1], 200);
    EXPECT_EQ(k.l3_offset, 22);
    EXPECT_EQ(k.l4_offset, 28);
    EXPECT_EQ(k.dport, 443);
}

TEST(FlowKey, ThreeTagsAreOpaque) {
    auto f = ether({0x8100, 1, 0x8100, 2, 0x8100, 3}, 0x0800);
    ipv4_tcp(f, 0);
    FlowKey k;
    make_flow_key(1, f.data(), f.size(), k);
    EXPECT_EQ(k.kind, FlowKind::kOpaque);
}

TEST(FlowKey, LaterFragmentHasNoPorts) {
    auto f = ether({}, 0x0800);
    ipv4_tcp(f, 185);  // offset 185 x 8 bytes
    FlowKey k;
    make_flow_key(1, f.data(), f.size(), k);
    ASSERT_EQ(k.kind, FlowKind::kIp);
    EXPECT_EQ(k.flags, kFlowFragment | kFlowLaterFragment);
    EXPECT_EQ(k.sport, 0);
    EXPECT_EQ(k.dport, 0);
    auto g = ether({}, 0x0800);
    ipv4_tcp(g, 0x2000);  // MF, offset 0: the first fragment keeps its ports
    make_flow_key(1, g.data(), g.size(), k);
    EXPECT_EQ(k.flags, kFlowFragment | kFlowHasPorts);
    EXPECT_EQ(k.dport, 443);
}

TEST(FlowKey, Ipv6WithExtensionHeader) {
    auto f = ether({}, 0x86dd);
    size_t l3 = f.size();
    f.resize(l3 + 40 + 8 + 8, 0);
    f[l3] = 0x60;
    f[l3 + 5] = 16;
    f[l3 + 6] = 0;  // hop-by-hop
    f[l3 + 7] = 64;
    f[l3 + 8] = 0x20;
    f[l3 + 9] = 0x01;
    f[l3 + 10] = 0x0d;
    f[l3 + 11] = 0xb8;
    f[l3 + 23] = 1;
    f[l3 + 24] = 0x20;
    f[l3 + 25] = 0x01;
    f[l3 + 26] = 0x0d;
    f[l3 + 27] = 0xb8;
    f[l3 + 39] = 2;
    f[l3 + 40] = 17;  // next: UDP
    f[l3 + 48] = 0x00;
    f[l3 + 49] = 53;
    f[l3 + 50] = 0x13;
    f[l3 + 51] = 0x88;
    f[l3 + 53] = 8;
    FlowKey k;
    make_flow_key(1, f.data(), f.size(), k);
    ASSERT_EQ(k.kind, FlowKind::kIp);
    EXPECT_EQ(k.ip_version, 6);
    EXPECT_EQ(k.first_nxt, 0);
    EXPECT_EQ(k.proto, 17);
    EXPECT_EQ(k.l4_offset, 48);
    EXPECT_EQ(k.sport, 53);
    EXPECT_EQ(k.dport, 5000);
    EXPECT_EQ(describe_flow(k), "udp [2001:db8::1]:53 <> [2001:db8::2]:5000");
}

TEST(FlowKey, ArpIsALinkFlow) {
    auto f = ether({0x8100, 7}, 0x0806);
    f.resize(f.size() + 28, 0);
    FlowKey k;
    make_flow_key(1, f.data(), f.size(), k);
    EXPECT_EQ(k.kind, FlowKind::kLink);
    EXPECT_EQ(k.ethertype, 0x0806);
    EXPECT_EQ(k.l3_offset, 18);
    EXPECT_EQ(k.vid[0], 7);
    EXPECT_EQ(describe_flow(k), "ether type 0x0806 vlan 7");
}

TEST(FlowKey, TruncatedAndUnknownLinkTypesAreOpaque) {
    auto f = ether({}, 0x0800);
    ipv4_tcp(f, 0);
    FlowKey k;
    for (uint32_t cut = 0; cut < f.size(); cut++) {
        make_flow_key(1, f.data(), cut, k);
        // Whatever the key says must lie within the captured bytes.
        if (k.kind == FlowKind::kIp) {
            EXPECT_LE(k.l3_offset + k.l4_offset + ((k.flags & kFlowHasPorts) ? 4u : 0u), cut);
        }
    }
    make_flow_key(147, f.data(), f.size(), k);  // a user DLT
    EXPECT_EQ(k.kind, FlowKind::kOpaque);
    EXPECT_EQ(k.linktype, 147);
}

TEST(FlowKey, RawIpAndCookedCapture) {
    auto f = ether({}, 0x0800);
    ipv4_tcp(f, 0);
    FlowKey raw, eth;
    make_flow_key(1, f.data(), f.size(), eth);
    make_flow_key(101, f.data() + 14, f.size() - 14, raw);
    ASSERT_EQ(raw.kind, FlowKind::kIp);
    EXPECT_EQ(raw.l3_offset, 0);
    EXPECT_EQ(raw.dport, 443);
    EXPECT_NE(hash_flow_key(raw), hash_flow_key(eth));
    std::vector<uint8_t> sll(16, 0);
    sll[14] = 0x08;
    sll.insert(sll.end(), f.begin() + 14, f.end());
    FlowKey ck;
    make_flow_key(113, sll.data(), sll.size(), ck);
    ASSERT_EQ(ck.kind, FlowKind::kIp);
    EXPECT_EQ(ck.l3_offset, 16);
    EXPECT_EQ(ck.ethertype, 0x0800);
}

}  // namespace
}  // namespace linecap::index
