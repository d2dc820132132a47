/* ReadAhead: keeps the disk busy ahead of capq's reading thread.
 *
 * capq reads its plan (the selected ranges of every file, in merge order)
 * on one thread that also filters and writes. Asking the kernel for the
 * next window only when the current one is read leaves the disk idle while
 * a window is parsed, and keeps one window in flight at most: a cold read
 * of a long stretch then ran at half the disk's sequential rate. ReadAhead
 * walks the same plan on a thread of its own and asks the kernel
 * (POSIX_FADV_WILLNEED, in chunks) for the bytes up to `budget` beyond the
 * position the reading thread reports, so that several chunks are in flight
 * whatever the reader is doing, and the cost of submitting them is not the
 * reader's.
 *
 * Memory: at most `budget` bytes of page cache asked for and not yet read
 * (plus what the kernel's own read-ahead adds); no buffer of its own. The
 * page cache is reclaimable: a page taken back before it is read is read
 * again, slower, never wrong.
 *
 * Threads: the constructor starts the thread (none when it cannot be
 * started: then nothing is asked ahead, and reads are as without it);
 * consumed() is called by the one reading thread; the destructor stops and
 * joins it, after at most the chunk it is asking for.
 */
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace linecap::query {

class ReadAhead {
public:
    /* One range of the plan: bytes [begin, end) of the file open as fd.
     * fd -1: a range not to ask for (a compressed file, whose offsets are
     * the decompressed stream's), counted in the plan's positions all the
     * same. */
    struct Span {
        int fd = -1;
        uint64_t begin = 0;
        uint64_t end = 0;
    };
    /* How a chunk is asked for; by default posix_fadvise(WILLNEED). Called
     * on ReadAhead's thread only (tests record the calls). */
    using Advise = std::function<void(int fd, uint64_t begin, uint64_t end)>;

    static constexpr uint64_t kDefaultBudget = 64u << 20;
    static constexpr uint64_t kDefaultChunk = 4u << 20;

    /* The plan's spans in reading order; a plan position is a byte count
     * from the start of spans[0] through the spans in that order. budget
     * and chunk are clamped to at least 4 KiB, chunk to at most budget. */
    explicit ReadAhead(std::vector<Span> spans, uint64_t budget = kDefaultBudget,
                       uint64_t chunk = kDefaultChunk, Advise advise = nullptr);
    ~ReadAhead();
    ReadAhead(const ReadAhead&) = delete;
    ReadAhead& operator=(const ReadAhead&) = delete;

    /* The reading thread has read the plan up to position pos (positions
     * only grow). Costs a relaxed store and load unless pos reaches the
     * point where the thread waits for the reader (about once per chunk):
     * then a lock and a wake-up. */
    void consumed(uint64_t pos) {
        pos_.store(pos, std::memory_order_relaxed);
        if (pos >= wake_at_.load(std::memory_order_relaxed)) wake();
    }

    /* The plan position of spans[i]'s first byte (i == spans.size(): the
     * plan's total). */
    uint64_t position(size_t i) const { return starts_[i]; }
    /* Whether the thread runs. */
    bool running() const { return thread_.joinable(); }

private:
    void wake();
    void run();

    std::vector<Span> spans_;
    std::vector<uint64_t> starts_;  // prefix sums of the spans' lengths
    uint64_t budget_;
    uint64_t chunk_;
    Advise advise_;
    std::atomic<uint64_t> pos_{0};      // the reader's position
    std::atomic<uint64_t> wake_at_{0};  // consumed() wakes the thread from here
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;  // under mu_
    std::thread thread_;
};

}  // namespace linecap::query
