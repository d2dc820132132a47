/* FlowTable: keys, both directions, cutoff, dedup, eviction and the top
 * listing, on frames built here. No EAL: the table maps its own memory. */
#include "dataplane/flow_table.hh"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "flow_test_util.hh"

namespace {

using linecap::dataplane::FlowConfig;
using linecap::dataplane::FlowPacket;
using linecap::dataplane::FlowTable;
using linecap::dataplane::testing::parsed;
using linecap::dataplane::testing::table;

/* An Ethernet/IPv4 frame; proto 6 gets a 20-byte TCP header with `flags`,
 * 17 an 8-byte UDP header; then `payload` bytes of `fill`. */
std::vector<uint8_t> frame(uint32_t src, uint32_t dst, uint16_t sp, uint16_t dp, uint8_t proto,
                           uint8_t flags = 0x10, size_t payload = 20, uint8_t fill = 0,
                           uint8_t ttl = 64, uint16_t vlan = 0) {
    std::vector<uint8_t> f(12, 0xaa);
    if (vlan) f.insert(f.end(), {0x81, 0x00, uint8_t(vlan >> 8), uint8_t(vlan)});
    f.insert(f.end(), {0x08, 0x00});
    size_t l4 = proto == 6 ? 20 : 8;
    size_t len = 20 + l4 + payload;
    uint8_t ip[20] = {0x45, 0, uint8_t(len >> 8), uint8_t(len), 0, 0, 0x40, 0, ttl, proto};
    for (int i = 0; i < 4; i++) {
        ip[12 + i] = uint8_t(src >> (24 - 8 * i));
        ip[16 + i] = uint8_t(dst >> (24 - 8 * i));
    }
    ip[10] = ttl;  // stands for a checksum that changes with the TTL
    f.insert(f.end(), ip, ip + 20);
    std::vector<uint8_t> t(l4, 0);
    t[0] = uint8_t(sp >> 8), t[1] = uint8_t(sp), t[2] = uint8_t(dp >> 8), t[3] = uint8_t(dp);
    if (proto == 6) t[13] = flags;
    f.insert(f.end(), t.begin(), t.end());
    f.insert(f.end(), payload, fill);
    return f;
}

FlowTable::Verdict feed(FlowTable& t, const std::vector<uint8_t>& f, uint64_t ts) {
    return linecap::dataplane::testing::verdict(t, parsed(f), f, ts);
}

TEST(FlowTable, BothDirectionsAreOneFlowAndVlansSeparate) {
    const FlowPacket a = parsed(frame(0xc6120001, 0xc6120002, 1000, 80, 6));
    const FlowPacket b = parsed(frame(0xc6120002, 0xc6120001, 80, 1000, 6));
    const FlowPacket c = parsed(frame(0xc6120001, 0xc6120002, 1000, 80, 6, 0x10, 20, 0, 64, 7));
    ASSERT_TRUE(a.ok && b.ok && c.ok);
    EXPECT_EQ(std::memcmp(&a.key, &b.key, sizeof(a.key)), 0);
    EXPECT_EQ(a.hash, b.hash);
    EXPECT_NE(a.a_sent, b.a_sent);
    EXPECT_NE(std::memcmp(&a.key, &c.key, sizeof(a.key)), 0);
    // Not IP: no flow.
    std::vector<uint8_t> arp(60, 0);
    arp[12] = 0x08, arp[13] = 0x06;
    EXPECT_FALSE(parsed(arp).ok);
}

TEST(FlowTable, CutoffKeepsThePacketThatReachesItAndSynFinRst) {
    auto t = table({.slots = 64, .cutoff_bytes = 200});
    ASSERT_TRUE(t);
    auto data = frame(1, 2, 1000, 80, 6, 0x18, 46);  // 100 bytes
    EXPECT_EQ(feed(*t, data, 1), FlowTable::kKeep);  // 0 before
    EXPECT_EQ(feed(*t, data, 2), FlowTable::kKeep);  // 100 before
    EXPECT_EQ(feed(*t, data, 3), FlowTable::kCut);   // 200 before: reached
    EXPECT_EQ(feed(*t, frame(2, 1, 80, 1000, 6, 0x11), 4), FlowTable::kKeep);  // FIN
    EXPECT_EQ(feed(*t, frame(1, 2, 1000, 80, 6, 0x04), 5), FlowTable::kKeep);  // RST
    EXPECT_EQ(t->counters().cut_packets.load(), 1u);
    EXPECT_EQ(t->counters().cut_bytes.load(), 100u);
    // A new connection on the ended flow starts from zero.
    EXPECT_EQ(feed(*t, frame(1, 2, 1000, 80, 6, 0x02), 6), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, data, 7), FlowTable::kKeep);
    EXPECT_EQ(t->counters().created.load(), 2u);
}

TEST(FlowTable, EachPacketTakesTheCutoffItIsGiven) {
    FlowConfig c;
    c.slots = 64;
    c.cutoff_bytes = 1000;  // the default, when none is given
    auto t = table(c);
    ASSERT_TRUE(t);
    auto data = frame(1, 2, 1000, 80, 6, 0x18, 46);  // 100 bytes
    const FlowPacket p = parsed(data);
    auto with = [&](uint64_t bytes, uint64_t packets, uint64_t ts) {
        return t->packet(p, data.data(), uint32_t(data.size()), uint32_t(data.size()), ts,
                         linecap::dataplane::FlowCutoff{bytes, packets});
    };
    EXPECT_EQ(with(150, 0, 1), FlowTable::kKeep);    // 0 before
    EXPECT_EQ(with(150, 0, 2), FlowTable::kKeep);    // 100 before
    EXPECT_EQ(with(150, 0, 3), FlowTable::kCut);     // 200 before
    EXPECT_EQ(with(0, 0, 4), FlowTable::kKeep);      // no limit for this one
    EXPECT_EQ(with(0, 5, 5), FlowTable::kKeep);      // 4 packets before
    EXPECT_EQ(with(0, 5, 6), FlowTable::kCut);       // 5 before
    EXPECT_EQ(feed(*t, data, 7), FlowTable::kKeep);  // the default: 600 before
    EXPECT_EQ(t->counters().cut_packets.load(), 2u);
    EXPECT_EQ(t->counters().created.load(), 1u);
}

TEST(FlowTable, PerDirectionEachDirectionHasTheCutoff) {
    for (bool per : {false, true}) {
        auto t = table({.slots = 64, .cutoff_bytes = 200, .per_direction = per});
        ASSERT_TRUE(t);
        auto fwd = frame(1, 2, 1000, 80, 6, 0x18, 46);  // 100 bytes
        auto back = frame(2, 1, 80, 1000, 6, 0x18, 46);
        EXPECT_EQ(feed(*t, fwd, 1), FlowTable::kKeep);
        EXPECT_EQ(feed(*t, fwd, 2), FlowTable::kKeep);
        EXPECT_EQ(feed(*t, fwd, 3), FlowTable::kCut);  // 200 sent this way
        // Together: 300 before; alone: nothing sent back yet.
        EXPECT_EQ(feed(*t, back, 4), per ? FlowTable::kKeep : FlowTable::kCut) << per;
        EXPECT_EQ(feed(*t, back, 5), per ? FlowTable::kKeep : FlowTable::kCut) << per;
        EXPECT_EQ(feed(*t, back, 6), FlowTable::kCut) << per;
        EXPECT_EQ(t->counters().cut_packets.load(), per ? 2u : 4u);
        // Totals of both directions in the listing.
        t->request(1);
        ASSERT_TRUE(t->ready(true));
        auto top = t->top_view();
        ASSERT_EQ(top.size(), 1u);
        EXPECT_EQ(top[0].packets, 6u);
        EXPECT_EQ(top[0].bytes, 600u);
        EXPECT_EQ(top[0].cut_packets, per ? 2u : 4u);
    }
}

TEST(FlowTable, DedupWindowHoldsAcrossOtherPacketsOfTheFlow) {
    auto t = table({.slots = 64, .dedup_window_ns = 2'000'000});
    ASSERT_TRUE(t);
    const uint64_t t0 = 1'700'000'000'000'000'000ull;
    auto a = frame(1, 2, 5, 53, 17, 0, 30, 'a');
    auto b = frame(1, 2, 5, 53, 17, 0, 30, 'b');
    EXPECT_EQ(feed(*t, a, t0), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, b, t0 + 1'000'001), FlowTable::kKeep);
    // a's copy 1.999999 ms after a, with b in between: still a duplicate.
    EXPECT_EQ(feed(*t, a, t0 + 1'999'999), FlowTable::kDuplicate);
    EXPECT_EQ(feed(*t, b, t0 + 1'500'003), FlowTable::kDuplicate);  // out of order, in window
    EXPECT_EQ(feed(*t, a, t0 + 2'100'000), FlowTable::kKeep);       // past the window
    EXPECT_EQ(feed(*t, a, t0 + 9'000'000'000ull), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, a, t0 + 9'001'000'000ull), FlowTable::kDuplicate);
    EXPECT_EQ(t->counters().duplicates.load(), 3u);
}

TEST(FlowTable, DedupMasksTtlAndHonoursTheWindow) {
    auto t = table({.slots = 64, .dedup_window_ns = 1000});
    ASSERT_TRUE(t);
    auto f = frame(1, 2, 5, 53, 17, 0, 30, 'x');
    EXPECT_EQ(feed(*t, f, 100), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, frame(1, 2, 5, 53, 17, 0, 30, 'x', 63), 200), FlowTable::kDuplicate);
    EXPECT_EQ(feed(*t, frame(1, 2, 5, 53, 17, 0, 30, 'y'), 300), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, frame(1, 3, 5, 53, 17, 0, 30, 'x'), 300), FlowTable::kKeep);  // other flow
    EXPECT_EQ(feed(*t, f, 2000), FlowTable::kKeep);  // outside the window
    EXPECT_EQ(t->counters().duplicates.load(), 1u);
}

TEST(FlowTable, FullTableEvictsTheOldestAndCountsIt) {
    // Packets a flow apart by more than the LRU step (1 s): exact LRU.
    constexpr uint64_t kS = 2'000'000'000;
    auto t = table({.slots = 16, .cutoff_packets = 1});
    ASSERT_TRUE(t);
    for (uint16_t i = 0; i < 16; i++) feed(*t, frame(1, 2, i, 9, 17), i * kS);
    EXPECT_EQ(t->counters().evicted.load(), 0u);
    feed(*t, frame(1, 2, 0, 9, 17), 20 * kS);  // flow 0 is known: cut, moves to the front
    EXPECT_EQ(t->counters().cut_packets.load(), 1u);
    feed(*t, frame(1, 2, 100, 9, 17), 21 * kS);  // evicts flow 1, the oldest now
    EXPECT_EQ(t->counters().evicted.load(), 1u);
    EXPECT_EQ(feed(*t, frame(1, 2, 0, 9, 17), 22 * kS), FlowTable::kCut);   // still there
    EXPECT_EQ(feed(*t, frame(1, 2, 1, 9, 17), 23 * kS), FlowTable::kKeep);  // new again
    EXPECT_EQ(t->counters().active.load(), 16u);
    EXPECT_EQ(t->counters().bucket_full.load(), 0u);
}

TEST(FlowTable, LruStepZeroIsExactAtAnyPace) {
    auto t = table({.slots = 16, .cutoff_packets = 1, .lru_step_ns = 0});
    ASSERT_TRUE(t);
    for (uint16_t i = 0; i < 16; i++) feed(*t, frame(1, 2, i, 9, 17), i);
    feed(*t, frame(1, 2, 0, 9, 17), 20);    // 20 ns later: moves all the same
    feed(*t, frame(1, 2, 100, 9, 17), 21);  // evicts flow 1
    EXPECT_EQ(t->counters().evicted.load(), 1u);
    EXPECT_EQ(feed(*t, frame(1, 2, 0, 9, 17), 22), FlowTable::kCut);
    EXPECT_EQ(feed(*t, frame(1, 2, 1, 9, 17), 23), FlowTable::kKeep);
}

TEST(FlowTable, WithinTheLruStepAFlowKeepsItsPlace) {
    // The default step, 1 s: a flow seen again less than a step after it
    // last moved stays where it was. The flow evicted was seen at most a
    // step (plus 2 ms of rounding) after the least recently seen one.
    constexpr uint64_t kMs = 1'000'000;
    auto t = table({.slots = 16, .cutoff_packets = 1});
    ASSERT_TRUE(t);
    for (uint16_t i = 0; i < 16; i++) feed(*t, frame(1, 2, i, 9, 17), i * kMs);
    EXPECT_EQ(feed(*t, frame(1, 2, 0, 9, 17), 20 * kMs), FlowTable::kCut);  // does not move
    feed(*t, frame(1, 2, 100, 9, 17), 21 * kMs);  // evicts flow 0, seen 19 ms after flow 1
    EXPECT_EQ(t->counters().evicted.load(), 1u);
    EXPECT_EQ(feed(*t, frame(1, 2, 1, 9, 17), 22 * kMs), FlowTable::kCut);  // still there
    // A step after its last move, a flow goes to the front again: flow 2
    // stays, and flow 1 (seen at 22 ms, not moved) goes, not flow 3 (3 ms).
    EXPECT_EQ(feed(*t, frame(1, 2, 2, 9, 17), 1500 * kMs), FlowTable::kCut);
    feed(*t, frame(1, 2, 101, 9, 17), 1501 * kMs);
    EXPECT_EQ(t->counters().evicted.load(), 2u);
    EXPECT_EQ(feed(*t, frame(1, 2, 2, 9, 17), 1502 * kMs), FlowTable::kCut);
    EXPECT_EQ(feed(*t, frame(1, 2, 3, 9, 17), 1503 * kMs), FlowTable::kCut);
    EXPECT_EQ(feed(*t, frame(1, 2, 1, 9, 17), 1504 * kMs), FlowTable::kKeep);  // new again
}

/* The flows in t, by their first port (frame(1, 2, port, 9, 17)), from a
 * capctl flows listing, which changes no order; a flow listed twice is
 * there twice. */
std::multiset<uint16_t> listed(FlowTable& t) {
    t.request(FlowTable::kMaxTop);
    EXPECT_TRUE(t.ready(true));
    std::multiset<uint16_t> ports;
    for (const auto& x : t.top_view()) ports.insert(x.pa == 9 ? x.pb : x.pa);
    return ports;
}

/* n flows (frame(1, 2, port, 9, 17)) whose hashes pick bucket 0 of a
 * 32-slot table (16 buckets). */
std::vector<std::vector<uint8_t>> bucket0_frames(size_t n) {
    std::vector<std::vector<uint8_t>> same;
    for (uint16_t port = 1; same.size() < n; port++) {
        auto f = frame(1, 2, port, 9, 17);
        if ((parsed(f).hash & 15) == 0) same.push_back(f);
    }
    return same;
}

TEST(FlowTable, AFullBucketAndPairGiveUpTheOldestFlow) {
    // 32 slots: 16 buckets of 8 ways. Seventeen flows whose hashes pick
    // bucket 0: eight there, eight in its pair (bucket 1), all found again;
    // the seventeenth takes the way and slot of the first, counted.
    auto t = table({.slots = 32, .cutoff_packets = 1});
    ASSERT_TRUE(t);
    const auto same = bucket0_frames(17);
    constexpr uint64_t kS = 2'000'000'000;
    for (size_t i = 0; i < 16; i++) EXPECT_EQ(feed(*t, same[i], i * kS), FlowTable::kKeep);
    EXPECT_EQ(t->counters().bucket_full.load(), 0u);
    for (size_t i = 0; i < 16; i++) EXPECT_EQ(feed(*t, same[i], 16 * kS), FlowTable::kCut) << i;
    EXPECT_EQ(feed(*t, same[16], 17 * kS), FlowTable::kKeep);
    EXPECT_EQ(t->counters().bucket_full.load(), 1u);
    EXPECT_EQ(t->counters().evicted.load(), 1u);
    EXPECT_EQ(t->counters().active.load(), 16u);  // the table itself had room
    for (size_t i = 1; i < 17; i++) EXPECT_EQ(feed(*t, same[i], 20 * kS), FlowTable::kCut) << i;
    EXPECT_EQ(feed(*t, same[0], 21 * kS), FlowTable::kKeep);  // it was the one pushed out
    EXPECT_EQ(t->counters().bucket_full.load(), 2u);
    // The LRU order still holds the 16 flows in the table, each once.
    const auto ports = listed(*t);
    EXPECT_EQ(ports.size(), 16u);
    EXPECT_EQ(std::set<uint16_t>(ports.begin(), ports.end()).size(), 16u);
}

TEST(FlowTable, AFlowJustMovedCanGiveUpItsWay) {
    // Sixteen flows of one bucket pair, all seen at one time; the first,
    // seen again, has just moved to the LRU front when the seventeenth
    // needs its way (the oldest, first on a tie): it leaves the LRU order
    // cleanly, and the other fifteen stay in it.
    auto t = table({.slots = 32, .cutoff_packets = 1, .lru_step_ns = 0});
    ASSERT_TRUE(t);
    const auto same = bucket0_frames(17);
    for (size_t i = 0; i < 16; i++) EXPECT_EQ(feed(*t, same[i], 1), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, same[0], 1), FlowTable::kCut);
    EXPECT_EQ(feed(*t, same[16], 1), FlowTable::kKeep);
    EXPECT_EQ(t->counters().bucket_full.load(), 1u);
    EXPECT_EQ(listed(*t).size(), 16u);
    EXPECT_EQ(feed(*t, same[0], 2), FlowTable::kKeep);  // pushed out: new again
}

TEST(FlowTable, AFlowEndedByItsFirstPacketIsFirstToGo) {
    // A new TCP flow whose first packet is an RST ends at once: first in
    // line for the next slot needed, before the flows seen earlier.
    auto t = table({.slots = 4, .cutoff_packets = 1, .lru_step_ns = 0});
    ASSERT_TRUE(t);
    for (uint16_t x = 1; x <= 3; x++)
        EXPECT_EQ(feed(*t, frame(1, 2, x, 9, 17), x), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, frame(1, 2, 4, 9, 6, 0x04), 4), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, frame(1, 2, 5, 9, 17), 5), FlowTable::kKeep);
    EXPECT_EQ(t->counters().expired.load(), 1u);  // the RST flow's slot
    EXPECT_EQ(t->counters().evicted.load(), 0u);
    for (uint16_t x = 1; x <= 3; x++)
        EXPECT_EQ(feed(*t, frame(1, 2, x, 9, 17), 6 + x), FlowTable::kCut) << x;
    EXPECT_EQ(listed(*t).size(), 4u);
}

TEST(FlowTable, FlowsWhoseTagsMatchInOneBucketStayApart) {
    // Two flows with the same bucket and the same 16-bit tag (found by
    // trying ports: 20 bits of 64 alike): the tag match alone must not make
    // them one flow.
    auto t = table({.slots = 32, .cutoff_packets = 2});
    ASSERT_TRUE(t);
    std::map<uint64_t, uint16_t> seen;  // bucket and tag -> port
    std::vector<uint8_t> a, b;
    for (uint16_t port = 1; port < 60000 && a.empty(); port++) {
        auto f = frame(1, 2, port, 9, 17);
        const uint64_t h = parsed(f).hash;
        const auto [at, fresh] = seen.emplace((h & 15) | (h >> 48) << 4, port);
        if (!fresh) a = frame(1, 2, at->second, 9, 17), b = f;
    }
    ASSERT_FALSE(a.empty());
    ASSERT_NE(parsed(a).hash, parsed(b).hash);
    EXPECT_EQ(feed(*t, a, 1), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, a, 2), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, b, 3), FlowTable::kKeep);  // not a's third packet
    EXPECT_EQ(feed(*t, b, 4), FlowTable::kKeep);
    EXPECT_EQ(feed(*t, a, 5), FlowTable::kCut);
    EXPECT_EQ(feed(*t, b, 6), FlowTable::kCut);
    EXPECT_EQ(t->counters().created.load(), 2u);
    t->request(2);
    ASSERT_TRUE(t->ready(true));
    const auto top = t->top_view();
    ASSERT_EQ(top.size(), 2u);
    EXPECT_NE(top[0].pa, top[1].pa);
    EXPECT_EQ(top[0].packets + top[1].packets, 6u);
}

TEST(FlowTable, FetchChangesNoVerdict) {
    // fetch() only loads lines, and the slots it found, given to packet()
    // as hints, are taken only while they still hold the packet's flow (an
    // earlier packet of the burst may push it out): a table fed bursts
    // that way and one fed the same packets without must agree on every
    // verdict, slot and count, with flows moving to the LRU front (exact
    // LRU), evictions (43 flows, 32 slots), dedup records and cut flows.
    for (const uint64_t step : {uint64_t(0), uint64_t(1'000'000)}) {
        const FlowConfig c{
            .slots = 32, .cutoff_packets = 3, .dedup_window_ns = 1000, .lru_step_ns = step};
        auto with = table(c), without = table(c);
        ASSERT_TRUE(with && without);
        std::vector<std::vector<uint8_t>> burst(8);
        FlowPacket fl[8];
        const uint8_t take[8] = {1, 1, 1, 0, 1, 1, 1, 1};
        uint64_t ts = 1;
        for (unsigned b = 0; b < 200; b++) {
            for (unsigned i = 0; i < 8; i++) {
                const unsigned f = i < 4 ? i : 4 + (b * 4 + i) % 40;  // 3 in every burst
                burst[i] = frame(0xc6120000u + f, 0xc6130001u, uint16_t(f), 53, 17, 0x10,
                                 20 + (b + i) % 3);
                fl[i] = parsed(burst[i]);
            }
            uint32_t found[8];
            with->fetch(fl, take, 8, ts, found);
            for (unsigned i = 0; i < 8; i++, ts += 700'000) {
                if (!take[i]) continue;
                const auto& f = burst[i];
                const uint32_t len = uint32_t(f.size());
                EXPECT_EQ(
                    with->packet(fl[i], f.data(), len, len, ts, with->default_cutoff(), found[i]),
                    linecap::dataplane::testing::verdict(*without, fl[i], f, ts))
                    << "burst " << b << " packet " << i;
                EXPECT_EQ(with->last_slot(), without->last_slot()) << "burst " << b;
            }
        }
        const auto &x = with->counters(), &y = without->counters();
        EXPECT_EQ(x.created.load(), y.created.load());
        EXPECT_EQ(x.evicted.load(), y.evicted.load());
        EXPECT_GT(x.evicted.load(), 0u);
        EXPECT_EQ(x.cut_packets.load(), y.cut_packets.load());
        EXPECT_GT(x.cut_packets.load(), 0u);
        EXPECT_EQ(x.duplicates.load(), y.duplicates.load());
    }
}

/* A burst as the worker runs it: fetch(), then each packet's verdict with
 * fetch()'s slot as its hint; all at time ts. */
std::vector<FlowTable::Verdict> run_burst(FlowTable& t,
                                          const std::vector<std::vector<uint8_t>>& frames,
                                          uint64_t ts) {
    std::vector<FlowPacket> fl;
    for (const auto& f : frames) fl.push_back(parsed(f));
    const std::vector<uint8_t> take(frames.size(), 1);
    std::vector<uint32_t> found(frames.size());
    t.fetch(fl.data(), take.data(), unsigned(fl.size()), ts, found.data());
    std::vector<FlowTable::Verdict> v;
    for (size_t i = 0; i < frames.size(); i++) {
        const uint32_t len = uint32_t(frames[i].size());
        v.push_back(t.packet(fl[i], frames[i].data(), len, len, ts, t.default_cutoff(), found[i]));
    }
    return v;
}

TEST(FlowTable, ABurstKeepsTheLruOrderOfItsPackets) {
    // fetch() loads the lines of a burst's moves to the LRU front; the
    // verdicts make them, and new flows' first places, in the packets'
    // order: A seen, then E new, in one burst, leaves E in front of A.
    // Exact LRU, one packet a flow, 6 slots.
    auto t = table({.slots = 6, .cutoff_packets = 1, .lru_step_ns = 0});
    ASSERT_TRUE(t);
    auto f = [](uint16_t flow) { return frame(1, 2, flow, 9, 17); };
    enum : uint16_t { A = 1, B, C, D, E, F, G, H, I, J };
    for (uint16_t x : {A, B, C, D}) EXPECT_EQ(feed(*t, f(x), x), FlowTable::kKeep);
    EXPECT_EQ(run_burst(*t, {f(A), f(E)}, 10),
              (std::vector<FlowTable::Verdict>{FlowTable::kCut, FlowTable::kKeep}));
    // Front to back now: E A D C B. F takes the last free slot; G, H and I
    // push out B, C and D, then J pushes out A (seen before E).
    EXPECT_EQ(run_burst(*t, {f(F)}, 11), std::vector<FlowTable::Verdict>{FlowTable::kKeep});
    EXPECT_EQ(run_burst(*t, {f(G), f(H), f(I)}, 12),
              std::vector<FlowTable::Verdict>(3, FlowTable::kKeep));
    EXPECT_EQ(listed(*t), (std::multiset<uint16_t>{A, E, F, G, H, I}));
    EXPECT_EQ(run_burst(*t, {f(J)}, 13), std::vector<FlowTable::Verdict>{FlowTable::kKeep});
    EXPECT_EQ(listed(*t), (std::multiset<uint16_t>{E, F, G, H, I, J}));
    EXPECT_EQ(t->counters().evicted.load(), 4u);
}

TEST(FlowTable, FetchFindsTheSlotsOfKnownFlows) {
    // fetch() hands over, for each packet of a known flow, the first slot
    // whose tag matches in its bucket or pair: never none (its own tag is
    // there), and its own slot unless another flow there has the same
    // 16-bit tag (about 1 in 65536 a pair of flows, hence 990 of 1000).
    auto t = table({.slots = 4096, .cutoff_packets = 1000});
    ASSERT_TRUE(t);
    std::vector<std::vector<uint8_t>> frames;
    for (uint32_t i = 0; i < 1000; i++) {
        frames.push_back(frame(0xc6120000u + i, 0xc6130001u, uint16_t(1000 + i % 7), 53, 17));
        EXPECT_EQ(feed(*t, frames.back(), 1), FlowTable::kKeep);
    }
    unsigned own = 0;
    for (size_t at = 0; at < frames.size(); at += 50) {
        FlowPacket fl[50];
        uint8_t take[50];
        uint32_t found[50];
        for (size_t i = 0; i < 50; i++) fl[i] = parsed(frames[at + i]), take[i] = 1;
        t->fetch(fl, take, 50, 2, found);
        for (size_t i = 0; i < 50; i++) {
            ASSERT_NE(found[i], 0u) << at + i;
            const uint32_t len = uint32_t(frames[at + i].size());
            EXPECT_EQ(
                t->packet(fl[i], frames[at + i].data(), len, len, 2, t->default_cutoff(), found[i]),
                FlowTable::kKeep);
            own += found[i] == t->last_slot() + 1;
        }
    }
    EXPECT_GE(own, 990u);
    EXPECT_EQ(t->counters().created.load(), 1000u);
}

TEST(FlowTable, AHintToASlotGivenAwayIsIgnored) {
    // 32 flows fill a 32-slot table, flow 1 the least recently seen. A
    // burst of a new flow, then flow 1: fetch() finds flow 1's slot, the
    // new flow takes it, and flow 1's packet must not be judged on it (it
    // would be the new flow's second packet: cut).
    auto t = table({.slots = 32, .cutoff_packets = 1, .lru_step_ns = 0});
    ASSERT_TRUE(t);
    for (uint16_t f = 1; f <= 32; f++)
        EXPECT_EQ(feed(*t, frame(1, 2, f, 9, 17), f), FlowTable::kKeep);
    const std::vector<uint8_t> burst[2] = {frame(1, 2, 100, 9, 17), frame(1, 2, 1, 9, 17)};
    const FlowPacket fl[2] = {parsed(burst[0]), parsed(burst[1])};
    const uint8_t take[2] = {1, 1};
    uint32_t found[2];
    t->fetch(fl, take, 2, 100, found);
    EXPECT_EQ(found[0], 0u);
    ASSERT_NE(found[1], 0u);
    for (int i = 0; i < 2; i++) {
        const uint32_t len = uint32_t(burst[i].size());
        EXPECT_EQ(
            t->packet(fl[i], burst[i].data(), len, len, 100 + i, t->default_cutoff(), found[i]),
            FlowTable::kKeep)
            << i;
    }
    EXPECT_EQ(t->counters().created.load(), 34u);
    EXPECT_EQ(t->counters().evicted.load(), 2u);
}

/* The hash of one flow, printed when LINECAP_PRINT_FLOW_HASH is set: run by
 * the test below in two processes of this binary. */
TEST(FlowHash, Print) {
    if (!std::getenv("LINECAP_PRINT_FLOW_HASH"))
        GTEST_SKIP() << "FlowHash.IsKeyedPerProcess runs it";
    std::printf("flow-hash %016llx\n",
                static_cast<unsigned long long>(parsed(frame(1, 2, 1000, 80, 6)).hash));
}

TEST(FlowHash, IsKeyedPerProcess) {
    // A flow is named by its hash: which keys share a bucket, or a name,
    // must not be the same in every process, or traffic could be shaped
    // to push chosen flows out. Two runs of this binary, two hashes.
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    ASSERT_GT(n, 0);
    exe[n] = 0;
    auto hash_in_child = [&] {
        const std::string cmd = std::string("LINECAP_PRINT_FLOW_HASH=1 '") + exe +
                                "' --gtest_filter=FlowHash.Print 2>/dev/null";
        FILE* p = popen(cmd.c_str(), "r");
        std::string found;
        if (!p) return found;
        char line[512];
        while (std::fgets(line, sizeof(line), p))
            if (std::strncmp(line, "flow-hash ", 10) == 0) found = line + 10;
        pclose(p);
        return found;
    };
    const std::string one = hash_in_child(), two = hash_in_child();
    ASSERT_EQ(one.size(), 17u) << one;
    ASSERT_EQ(two.size(), 17u) << two;
    EXPECT_NE(one, two);
}

/* An Ethernet/IPv6 UDP frame from 2001:db8::`src` to 2001:db8::`dst`. */
std::vector<uint8_t> frame6(uint16_t src, uint16_t dst, uint16_t sp, uint16_t dp) {
    std::vector<uint8_t> f(12, 0xaa);
    f.insert(f.end(), {0x86, 0xdd, 0x60, 0, 0, 0, 0, 8, 17, 64});
    for (uint16_t a : {src, dst}) {
        uint8_t addr[16] = {0x20, 0x01, 0x0d, 0xb8};
        addr[14] = uint8_t(a >> 8), addr[15] = uint8_t(a);
        f.insert(f.end(), addr, addr + 16);
    }
    f.insert(f.end(), {uint8_t(sp >> 8), uint8_t(sp), uint8_t(dp >> 8), uint8_t(dp), 0, 8, 0, 0});
    return f;
}

TEST(FlowTable, AHostTalkingToItselfIsOneFlowBothWays) {
    // Equal addresses: the ports decide the order, IPv4 and IPv6; and IPv6
    // endpoints that differ in the low 64 bits only are one flow both ways.
    const std::pair<std::vector<uint8_t>, std::vector<uint8_t>> pairs[] = {
        {frame(0xc6120005, 0xc6120005, 1000, 2000, 6),
         frame(0xc6120005, 0xc6120005, 2000, 1000, 6)},
        {frame6(5, 5, 1000, 2000), frame6(5, 5, 2000, 1000)},
        {frame6(1, 2, 53, 53), frame6(2, 1, 53, 53)},
    };
    for (const auto& [one, other] : pairs) {
        const FlowPacket a = parsed(one), b = parsed(other);
        ASSERT_TRUE(a.ok && b.ok);
        EXPECT_EQ(std::memcmp(&a.key, &b.key, sizeof(a.key)), 0);
        EXPECT_EQ(a.hash, b.hash);
        EXPECT_TRUE(a.a_sent);
        EXPECT_FALSE(b.a_sent);
    }
}

TEST(FlowTable, EvictedFlowsLeaveNoWayBehind) {
    // Every packet a new flow through 16 slots (8 buckets, 64 ways), IPv4
    // and IPv6 in both directions: each eviction must clear the evicted
    // flow's way, found again by its stored hash, so no bucket ever fills.
    auto t = table({.slots = 16});
    ASSERT_TRUE(t);
    uint64_t n = 0;
    for (uint16_t i = 0; i < 2000; i++, n += 2) {
        feed(*t, frame(0xc6120000u + i, 0xc6130001u, uint16_t(i), 53, 17), n);
        feed(*t, i & 1 ? frame6(i, 1, 1000, 53) : frame6(1, i, 53, 1000), n + 1);
    }
    EXPECT_EQ(t->counters().created.load(), 4000u);
    EXPECT_EQ(t->counters().evicted.load(), 4000u - 16);
    EXPECT_EQ(t->counters().bucket_full.load(), 0u);
    EXPECT_EQ(t->counters().active.load(), 16u);
}

TEST(FlowTable, SaysWhichPagesItGot) {
    // With no free huge page the table is on normal pages and says so;
    // with enough free for it, on huge pages (unless another process takes
    // them first: then this proves nothing and is skipped).
    unsigned long free_pages = 0;
    FILE* f = fopen("/proc/meminfo", "r");
    ASSERT_TRUE(f);
    char line[256];
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "HugePages_Free: %lu", &free_pages) == 1) break;
    fclose(f);
    FlowConfig c;
    c.slots = 4096;
    auto t = table(c);
    ASSERT_TRUE(t);
    if (free_pages == 0)
        EXPECT_FALSE(t->huge_pages());
    else if (free_pages * (2u << 20) < 4 * FlowTable::bytes_for(c.slots) || !t->huge_pages())
        GTEST_SKIP() << "too few free huge pages, or taken by another process";
}

TEST(FlowTable, TopListsTheBiggestFlows) {
    auto t = table({.slots = 64, .cutoff_packets = 1000});
    ASSERT_TRUE(t);
    for (uint16_t i = 1; i <= 10; i++)
        for (uint16_t k = 0; k < i; k++) feed(*t, frame(1, 2, i, 9, 17), k);
    t->request(3);
    ASSERT_TRUE(t->ready(true));
    auto top = t->top_view();
    ASSERT_EQ(top.size(), 3u);
    EXPECT_EQ(top[0].packets, 10u);
    EXPECT_EQ(top[1].packets, 9u);
    EXPECT_EQ(top[2].packets, 8u);
}

}  // namespace
