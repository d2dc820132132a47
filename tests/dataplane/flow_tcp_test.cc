/* FlowTable's TCP diagnosis (FlowConfig::tcp_conns, capd --tcp-flows): the
 * same connection state as packet::TcpTracker on the same packets, the
 * pool's own eviction (a flow keeps its cutoff when its TCP record goes), a
 * flow's eviction taking its record, the walker's link types and IPv6
 * extension headers, and the snapshot. No EAL: the table maps its own
 * memory. */
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "dataplane/flow_table.hh"
#include "flow_test_util.hh"
#include "packet/decode.hh"
#include "packet/tcp_tracker.hh"

namespace {

using linecap::dataplane::FlowConfig;
using linecap::dataplane::FlowPacket;
using linecap::dataplane::FlowTable;
using linecap::dataplane::testing::parsed;
using linecap::dataplane::testing::table;
namespace packet = linecap::packet;

/* An IPv4 TCP segment from host `src` port sp to host `dst` port dp
 * (198.18.0.x), after `link` bytes of link header (Ethernet by default). */
std::vector<uint8_t> seg(uint8_t src, uint8_t dst, uint16_t sp, uint16_t dp, uint8_t flags,
                         uint32_t seq, uint32_t ack, size_t payload = 0, uint16_t win = 1000) {
    std::vector<uint8_t> f(12, 0xaa);
    f.insert(f.end(), {0x08, 0x00});
    const size_t len = 40 + payload;
    uint8_t ip[20] = {0x45,
                      0,
                      uint8_t(len >> 8),
                      uint8_t(len),
                      0,
                      0,
                      0x40,
                      0,
                      64,
                      6,
                      0,
                      0,
                      198,
                      18,
                      0,
                      src,
                      198,
                      18,
                      0,
                      dst};
    f.insert(f.end(), ip, ip + 20);
    uint8_t t[20] = {uint8_t(sp >> 8),
                     uint8_t(sp),
                     uint8_t(dp >> 8),
                     uint8_t(dp),
                     uint8_t(seq >> 24),
                     uint8_t(seq >> 16),
                     uint8_t(seq >> 8),
                     uint8_t(seq),
                     uint8_t(ack >> 24),
                     uint8_t(ack >> 16),
                     uint8_t(ack >> 8),
                     uint8_t(ack),
                     0x50,
                     flags,
                     uint8_t(win >> 8),
                     uint8_t(win),
                     0,
                     0,
                     0,
                     0};
    f.insert(f.end(), t, t + 20);
    f.insert(f.end(), payload, 'x');
    return f;
}

/* What the worker does with one packet: the verdict, then the TCP part if
 * kept. */
FlowTable::Verdict feed(FlowTable& t, const std::vector<uint8_t>& f, uint64_t ts,
                        uint32_t frame_no = 0, uint16_t lt = 1) {
    const FlowPacket p = parsed(f, lt);
    FlowTable::Verdict v = linecap::dataplane::testing::verdict(t, p, f, ts);
    if (v == FlowTable::kKeep && p.ok && p.tcp)
        t.tcp_packet(t.last_slot(), p, f.data(), uint32_t(f.size()), ts,
                     packet::FrameRef{0, frame_no});
    return v;
}

/* The copy the control thread reads, taken on this thread. */
std::vector<packet::TcpConn> snapshot(FlowTable& t) {
    t.tcp_request();
    t.serve();
    EXPECT_TRUE(t.tcp_ready(false));
    auto v = t.tcp_view(0);
    std::vector<packet::TcpConn> out(v.conns.begin(), v.conns.end());
    t.tcp_release();
    return out;
}

void expect_same(const packet::TcpConn& a, const packet::TcpConn& b) {
    EXPECT_EQ(a.ep[0], b.ep[0]);
    EXPECT_EQ(a.ep[1], b.ep[1]);
    EXPECT_EQ(a.client, b.client);
    EXPECT_EQ(a.packets, b.packets);
    EXPECT_EQ(a.first_ts, b.first_ts);
    EXPECT_EQ(a.last_ts, b.last_ts);
    EXPECT_EQ(a.syn_count, b.syn_count);
    EXPECT_EQ(a.synack_count, b.synack_count);
    EXPECT_EQ(a.handshake_done, b.handshake_done);
    EXPECT_EQ(a.reset, b.reset);
    EXPECT_EQ(a.last_frame.frame, b.last_frame.frame);
    for (int d = 0; d < 2; d++) {
        EXPECT_EQ(a.dir[d].packets, b.dir[d].packets);
        EXPECT_EQ(a.dir[d].bytes, b.dir[d].bytes);
        EXPECT_EQ(a.dir[d].retransmissions, b.dir[d].retransmissions);
        EXPECT_EQ(a.dir[d].dup_acks, b.dir[d].dup_acks);
        EXPECT_EQ(a.dir[d].zero_windows, b.dir[d].zero_windows);
        EXPECT_EQ(a.dir[d].fin, b.dir[d].fin);
        EXPECT_EQ(a.dir[d].ttl, b.dir[d].ttl);
    }
}

TEST(FlowTableTcp, SameStateAsTheTracker) {
    std::vector<std::vector<uint8_t>> pkts = {
        seg(1, 2, 40000, 80, 0x02, 100, 0),          // SYN
        seg(2, 1, 80, 40000, 0x12, 500, 101),        // SYN-ACK
        seg(1, 2, 40000, 80, 0x10, 101, 501),        // ACK
        seg(1, 2, 40000, 80, 0x18, 101, 501, 100),   // data
        seg(1, 2, 40000, 80, 0x18, 101, 501, 100),   // retransmission
        seg(2, 1, 80, 40000, 0x10, 501, 201, 0, 0),  // zero window
        seg(2, 1, 80, 40000, 0x10, 501, 201, 0, 0),  // again: duplicate ACK
        seg(1, 2, 40000, 80, 0x11, 201, 501),        // FIN
        seg(2, 1, 80, 40000, 0x11, 501, 202),        // FIN
        seg(1, 2, 40000, 80, 0x02, 9000, 0),         // a new connection: reused
        seg(3, 2, 40001, 80, 0x04, 1, 0),            // an RST of another
    };
    auto t = table({.slots = 64, .tcp_conns = 16});
    ASSERT_TRUE(t);
    auto tr = packet::TcpTracker::create(16);
    ASSERT_TRUE(tr);
    for (size_t i = 0; i < pkts.size(); i++) {
        EXPECT_EQ(feed(*t, pkts[i], 1000 + i, uint32_t(i + 1)), FlowTable::kKeep);
        packet::DecodedPacket d;
        ASSERT_EQ(packet::decode_packet(1, pkts[i].data(), uint32_t(pkts[i].size()), d),
                  packet::DecodeStatus::kOk);
        tr->update(d, 1000 + i, packet::FrameRef{0, uint32_t(i + 1)});
    }
    t->tcp_offered(uint32_t(pkts.size()));
    std::vector<packet::TcpConn> want;
    tr->for_each([&](const packet::TcpConn& x) { want.push_back(x); });
    auto got = snapshot(*t);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); i++) expect_same(got[i], want[i]);
    auto v = t->tcp_view(0);
    EXPECT_EQ(v.capacity, 16u);
    EXPECT_EQ(v.counters.packets, tr->counters().packets);
    EXPECT_EQ(v.counters.created, tr->counters().created);
    EXPECT_EQ(v.counters.reused, 1u);
    EXPECT_EQ(v.counters.reused, tr->counters().reused);
    EXPECT_EQ(v.counters.evicted, 0u);
    EXPECT_EQ(v.packets_seen, pkts.size());
    EXPECT_EQ(v.last_ts, 1000 + pkts.size() - 1);
}

/* Two TCP records for three flows: the first flow's record is taken, its
 * cutoff is not. */
TEST(FlowTableTcp, PoolEvictionKeepsTheFlowsCutoff) {
    auto t = table({.slots = 64, .cutoff_bytes = 200, .tcp_conns = 2});
    ASSERT_TRUE(t);
    auto data = seg(1, 2, 40000, 80, 0x18, 1, 1, 46);  // 100 bytes
    EXPECT_EQ(feed(*t, data, 1), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, data, 2), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, data, 3), FlowTable::kCut);
    EXPECT_EQ(feed(*t, seg(3, 2, 40000, 80, 0x02, 1, 0), 4), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, seg(4, 2, 40000, 80, 0x02, 1, 0), 5), FlowTable::kKeep);
    auto conns = snapshot(*t);
    ASSERT_EQ(conns.size(), 2u);
    EXPECT_EQ(t->tcp_view(0).counters.evicted, 1u);
    for (const auto& x : conns) EXPECT_NE(x.ep[0].addr.bytes[3], 1);
    // The first flow is still past its cutoff; its FIN passes and starts a
    // new record (taking the least recently updated one).
    EXPECT_EQ(feed(*t, data, 6), FlowTable::kCut);
    EXPECT_EQ(feed(*t, seg(1, 2, 40000, 80, 0x11, 1, 1), 7), FlowTable::kKeep);
    conns = snapshot(*t);
    ASSERT_EQ(conns.size(), 2u);
    EXPECT_EQ(conns[1].ep[0].addr.bytes[3], 1);  // most recently updated last
    EXPECT_EQ(conns[1].packets, 1u);
    EXPECT_TRUE(conns[1].dir[0].fin);
    auto v = t->tcp_view(0);
    EXPECT_EQ(v.counters.evicted, 2u);
    EXPECT_EQ(v.counters.created, 4u);
    EXPECT_EQ(t->counters().created.load(), 3u);
    EXPECT_EQ(t->counters().evicted.load(), 0u);
    EXPECT_EQ(t->counters().cut_packets.load(), 2u);
}

/* More flows than slots: a flow pushed out of the table takes its record. */
TEST(FlowTableTcp, FlowEvictionFreesItsRecord) {
    auto t = table({.slots = 16, .tcp_conns = 64});
    ASSERT_TRUE(t);
    for (uint16_t i = 0; i < 40; i++)
        EXPECT_EQ(feed(*t, seg(1, 2, uint16_t(1000 + i), 80, 0x02, 1, 0), i), FlowTable::kKeep);
    EXPECT_EQ(t->counters().evicted.load(), 24u);
    auto conns = snapshot(*t);
    ASSERT_EQ(conns.size(), 16u);
    for (size_t i = 0; i < 16; i++) EXPECT_EQ(conns[i].ep[0].port, 1024 + i);
    auto v = t->tcp_view(0);
    EXPECT_EQ(v.counters.evicted, 24u);
    EXPECT_EQ(v.counters.created, 40u);
}

/* Link types and headers the inline parse leaves to the walker. */
TEST(FlowTableTcp, WalkerLinkTypesAndIpv6ExtensionHeaders) {
    auto t = table({.slots = 64, .tcp_conns = 8});
    ASSERT_TRUE(t);
    // Linux cooked capture v1: 16 bytes, the EtherType at 14.
    auto eth = seg(1, 2, 40000, 80, 0x02, 7, 0);
    std::vector<uint8_t> sll(16, 0);
    sll[14] = 0x08;
    sll.insert(sll.end(), eth.begin() + 14, eth.end());
    EXPECT_EQ(feed(*t, sll, 1, 1, 113), FlowTable::kKeep);
    // IPv6 with a hop-by-hop header before TCP.
    std::vector<uint8_t> v6(12, 0xaa);
    v6.insert(v6.end(), {0x86, 0xdd});
    uint8_t ip6[40] = {0x60, 0, 0, 0, 0, 28, 0 /* hop-by-hop */, 64};
    ip6[8] = 0x20, ip6[9] = 0x01, ip6[10] = 0x0d, ip6[11] = 0xb8, ip6[23] = 1;
    ip6[24] = 0x20, ip6[25] = 0x01, ip6[26] = 0x0d, ip6[27] = 0xb8, ip6[39] = 2;
    v6.insert(v6.end(), ip6, ip6 + 40);
    uint8_t hbh[8] = {6, 0, 1, 4, 0, 0, 0, 0};
    v6.insert(v6.end(), hbh, hbh + 8);
    auto tcp = seg(1, 2, 40001, 443, 0x02, 9, 0);
    v6.insert(v6.end(), tcp.begin() + 34, tcp.end());
    const FlowPacket p = parsed(v6);
    ASSERT_TRUE(p.ok);
    EXPECT_EQ(p.key.proto, 6);
    EXPECT_EQ(p.tcp, 14 + 40 + 8);
    EXPECT_EQ(feed(*t, v6, 2, 2), FlowTable::kKeep);
    auto conns = snapshot(*t);
    ASSERT_EQ(conns.size(), 2u);
    EXPECT_EQ(conns[0].ep[1].port, 80);
    EXPECT_EQ(conns[0].syn_count, 1u);
    EXPECT_EQ(conns[1].ep[0].addr.family, packet::Family::kIpv6);
    EXPECT_EQ(conns[1].ep[1].port, 443);
    EXPECT_EQ(conns[1].syn_count, 1u);
}

/* Without tcp_conns the table has no TCP part; with it, the mapping grows
 * by the records and nothing else. */
TEST(FlowTableTcp, SizeAndOff) {
    EXPECT_EQ(FlowTable::bytes_for(1024, 0), FlowTable::bytes_for(1024));
    EXPECT_GE(FlowTable::bytes_for(1024, 4096) - FlowTable::bytes_for(1024),
              4096u * sizeof(packet::TcpConn) - (2u << 20));
    FlowConfig c;
    c.slots = 64;
    auto t = table(c);
    ASSERT_TRUE(t);
    EXPECT_FALSE(t->tcp_on());
    c.tcp_conns = 4;
    auto u = table(c);
    ASSERT_TRUE(u);
    EXPECT_TRUE(u->tcp_on());
    EXPECT_EQ(u->tcp_capacity(), 4u);
}

}  // namespace
