#include "query/read_ahead.hh"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

namespace linecap::query {
namespace {

constexpr uint64_t kMiB = 1u << 20;

/* Records the chunks asked for, checks each against what the reader has
 * allowed, and lets the test wait (bounded) for a given total. */
struct Recorder {
    struct Call {
        int fd;
        uint64_t begin, end;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Call> calls;
    uint64_t asked = 0;
    uint64_t allowed = 0;  // consumed as the test reported it, plus the budget
    bool over = false;

    ReadAhead::Advise advise() {
        return [this](int fd, uint64_t b, uint64_t e) {
            std::lock_guard<std::mutex> lk(mu);
            calls.push_back({fd, b, e});
            asked += e - b;
            if (asked > allowed) over = true;
            cv.notify_all();
        };
    }
    void allow(uint64_t bytes) {
        std::lock_guard<std::mutex> lk(mu);
        allowed = bytes;
    }
    bool wait_for(uint64_t bytes) {
        std::unique_lock<std::mutex> lk(mu);
        return cv.wait_for(lk, std::chrono::seconds(20), [&] { return asked >= bytes; });
    }
};

TEST(ReadAhead, AsksThePlanInOrderNoFurtherThanTheBudget) {
    Recorder rec;
    // Three files' ranges: 10 MiB of fd 3, 1 MiB of fd 4, 9 MiB of fd 3.
    std::vector<ReadAhead::Span> spans = {
        {3, 100, 100 + 10 * kMiB}, {4, 0, kMiB}, {3, 20 * kMiB, 29 * kMiB}};
    rec.allow(8 * kMiB);
    ReadAhead ra(spans, 8 * kMiB, kMiB, rec.advise());
    ASSERT_TRUE(ra.running());
    EXPECT_EQ(ra.position(1), 10 * kMiB);
    EXPECT_EQ(ra.position(3), 20 * kMiB);

    // With nothing read, the budget exactly.
    ASSERT_TRUE(rec.wait_for(8 * kMiB));
    // The reader moves on by 3.5 MiB: three more whole chunks, and once it
    // is at 4 MiB a fourth.
    rec.allow(11 * kMiB + kMiB / 2);
    ra.consumed(3 * kMiB + kMiB / 2);
    ASSERT_TRUE(rec.wait_for(11 * kMiB));
    rec.allow(12 * kMiB);
    ra.consumed(4 * kMiB);
    ASSERT_TRUE(rec.wait_for(12 * kMiB));
    // Then to the end: the rest of the plan, never past the spans.
    rec.allow(20 * kMiB);
    ra.consumed(12 * kMiB);
    ASSERT_TRUE(rec.wait_for(20 * kMiB));

    std::lock_guard<std::mutex> lk(rec.mu);
    EXPECT_FALSE(rec.over) << "asked beyond what was read plus the budget";
    EXPECT_EQ(rec.asked, 20 * kMiB);
    // In plan order, each span covered exactly, in pieces of at most 1 MiB.
    std::vector<ReadAhead::Span> got;
    for (const auto& c : rec.calls) {
        EXPECT_LE(c.end - c.begin, kMiB);
        if (!got.empty() && got.back().fd == c.fd && got.back().end == c.begin)
            got.back().end = c.end;
        else
            got.push_back({c.fd, c.begin, c.end});
    }
    ASSERT_EQ(got.size(), 3u);
    for (size_t i = 0; i < 3; i++) {
        EXPECT_EQ(got[i].fd, spans[i].fd);
        EXPECT_EQ(got[i].begin, spans[i].begin);
        EXPECT_EQ(got[i].end, spans[i].end);
    }
}

TEST(ReadAhead, SkipsWhatTheReaderPassedAndSpansWithoutDescriptor) {
    Recorder rec;
    // A compressed file's range (fd -1) counts in the positions, is not asked.
    std::vector<ReadAhead::Span> spans = {{-1, 0, 4 * kMiB}, {5, 0, 4 * kMiB}};
    rec.allow(2 * kMiB);
    ReadAhead ra(spans, 2 * kMiB, kMiB, rec.advise());
    // The reader jumps past the first span and half of the second before
    // anything was asked for the second: only what lies ahead of it is.
    rec.allow(8 * kMiB);
    ra.consumed(6 * kMiB);
    ASSERT_TRUE(rec.wait_for(2 * kMiB));
    std::lock_guard<std::mutex> lk(rec.mu);
    EXPECT_EQ(rec.asked, 2 * kMiB);
    for (const auto& c : rec.calls) {
        EXPECT_EQ(c.fd, 5);
        EXPECT_GE(c.begin, 2 * kMiB);
        EXPECT_LE(c.end, 4 * kMiB);
    }
}

TEST(ReadAhead, StopsWhileWaitingForTheReader) {
    Recorder rec;
    rec.allow(kMiB);
    {
        ReadAhead ra({{3, 0, 100 * kMiB}}, kMiB, kMiB, rec.advise());
        ASSERT_TRUE(rec.wait_for(kMiB));
    }  // joins: a thread still waiting would hang here
    std::lock_guard<std::mutex> lk(rec.mu);
    EXPECT_EQ(rec.asked, kMiB);
    EXPECT_FALSE(rec.over);
}

TEST(ReadAhead, AnEmptyPlanStartsNoThread) {
    ReadAhead ra({}, kMiB, kMiB, [](int, uint64_t, uint64_t) { FAIL(); });
    EXPECT_FALSE(ra.running());
    EXPECT_EQ(ra.position(0), 0u);
    ra.consumed(0);
}

}  // namespace
}  // namespace linecap::query
