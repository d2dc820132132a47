#include "query/merge.hh"

#include <gtest/gtest.h>

#include <tuple>
#include <vector>

using namespace linecap::query;

namespace {

PendingPacket pkt(uint64_t ts, uint32_t file, uint64_t off) {
    PendingPacket p;
    p.ts_ns = ts;
    p.file = file;
    p.offset = off;
    return p;
}

using Key = std::tuple<uint64_t, uint32_t, uint64_t>;

std::vector<Key> drain_all(MergeQueue& q) {
    std::vector<Key> out;
    EXPECT_TRUE(q.drain([&](const PendingPacket& p) {
        out.emplace_back(p.ts_ns, p.file, p.offset);
        return true;
    }));
    return out;
}

TEST(Merge, TimestampThenFileThenOffset) {
    MergeQueue q;
    q.push(pkt(20, 0, 100));
    q.push(pkt(10, 1, 24));
    q.push(pkt(10, 0, 500));
    q.push(pkt(10, 0, 40));
    q.push(pkt(5, 2, 24));
    EXPECT_EQ(drain_all(q), (std::vector<Key>{{5, 2, 24}, {10, 0, 40}, {10, 0, 500},
                                              {10, 1, 24}, {20, 0, 100}}));
    EXPECT_EQ(q.size(), 0u);
}

TEST(Merge, EmitBeforeKeepsTiesWithTheLimit) {
    MergeQueue q;
    for (uint64_t ts : {7, 3, 9, 5, 5}) q.push(pkt(ts, 0, ts * 10 + q.size()));
    std::vector<uint64_t> got;
    ASSERT_TRUE(q.emit_before(5, [&](const PendingPacket& p) {
        got.push_back(p.ts_ns);
        return true;
    }));
    // A packet stamped 5 may still come from the next range: it waits.
    EXPECT_EQ(got, (std::vector<uint64_t>{3}));
    EXPECT_EQ(q.size(), 4u);
}

TEST(Merge, EmitStopsWhenAsked) {
    MergeQueue q;
    for (uint64_t ts : {1, 2, 3}) q.push(pkt(ts, 0, ts));
    int n = 0;
    EXPECT_FALSE(q.emit_before(10, [&](const PendingPacket&) { return ++n < 2; }));
    EXPECT_EQ(n, 2);
    EXPECT_EQ(q.size(), 1u);
}

TEST(Merge, RangesByEarliestTimeThenFileThenOffset) {
    std::vector<ReadRange> r = {{1, 100, 200, 50}, {0, 300, 400, 50}, {0, 24, 100, 70},
                                {2, 24, 90, 10},   {0, 100, 300, 50}};
    order_ranges(r);
    std::vector<Key> got;
    for (const auto& x : r) got.emplace_back(x.min_ns, x.file, x.begin);
    EXPECT_EQ(got, (std::vector<Key>{{10, 2, 24}, {50, 0, 100}, {50, 0, 300}, {50, 1, 100},
                                     {70, 0, 24}}));
}

/* The streaming merge of ranges read in order_ranges() order, emitting
 * before each range what precedes its earliest time, gives the same order
 * as sorting everything. */
TEST(Merge, StreamingEqualsSorting) {
    struct Rec {
        uint32_t file;
        uint64_t off, ts;
    };
    // Two files whose ranges overlap in time, timestamps not monotonic within.
    std::vector<std::vector<Rec>> ranges = {
        {{0, 24, 100}, {0, 40, 90}, {0, 56, 130}},
        {{0, 72, 140}, {0, 88, 120}},
        {{1, 24, 95}, {1, 40, 130}, {1, 56, 100}},
        {{1, 72, 200}, {1, 88, 135}},
    };
    std::vector<ReadRange> rr;
    for (size_t i = 0; i < ranges.size(); i++) {
        uint64_t mn = UINT64_MAX;
        for (const auto& x : ranges[i]) mn = std::min(mn, x.ts);
        rr.push_back({ranges[i][0].file, ranges[i][0].off, i, mn});
    }
    order_ranges(rr);
    MergeQueue q;
    std::vector<Key> got, want;
    auto emit = [&](const PendingPacket& p) {
        got.emplace_back(p.ts_ns, p.file, p.offset);
        return true;
    };
    for (const auto& r : rr) {
        ASSERT_TRUE(q.emit_before(r.min_ns, emit));
        for (const auto& x : ranges[r.end]) q.push(pkt(x.ts, x.file, x.off));
    }
    ASSERT_TRUE(q.drain(emit));
    for (const auto& rg : ranges)
        for (const auto& x : rg) want.emplace_back(x.ts, x.file, x.off);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want);
}

}  // namespace
