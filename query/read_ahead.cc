#include "query/read_ahead.hh"

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <system_error>

namespace linecap::query {

namespace {
constexpr uint64_t kNever = UINT64_MAX;
}

ReadAhead::ReadAhead(std::vector<Span> spans, uint64_t budget, uint64_t chunk, Advise advise)
    : spans_(std::move(spans)),
      budget_(std::max<uint64_t>(budget, 4096)),
      chunk_(std::min(std::max<uint64_t>(chunk, 4096), budget_)),
      advise_(std::move(advise)) {
    starts_.reserve(spans_.size() + 1);
    uint64_t at = 0;
    for (const Span& s : spans_) {
        starts_.push_back(at);
        at += s.end > s.begin ? s.end - s.begin : 0;
    }
    starts_.push_back(at);
    if (!advise_) {
        advise_ = [](int fd, uint64_t begin, uint64_t end) {
            (void)posix_fadvise(fd, off_t(begin), off_t(end - begin), POSIX_FADV_WILLNEED);
        };
    }
    wake_at_.store(kNever, std::memory_order_relaxed);
    if (at == 0) return;
    try {
        thread_ = std::thread([this] { run(); });
    } catch (const std::system_error&) {
        // No thread: the reads go on without it, as slow as before it.
    }
}

ReadAhead::~ReadAhead() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
}

void ReadAhead::wake() {
    std::lock_guard<std::mutex> lk(mu_);
    wake_at_.store(kNever, std::memory_order_relaxed);
    cv_.notify_one();
}

void ReadAhead::run() {
    const uint64_t total = starts_.back();
    uint64_t asked = 0;  // plan position asked for up to
    size_t si = 0;       // the span holding `asked`
    while (asked < total) {
        // Ask for a whole chunk at a time (or the plan's rest), not a few
        // bytes whenever the reader moves on by a record.
        const uint64_t want = std::min(total, asked + chunk_);
        uint64_t limit;
        {
            std::unique_lock<std::mutex> lk(mu_);
            uint64_t pos;
            while (!stop_ && (pos = pos_.load(std::memory_order_relaxed)) + budget_ < want) {
                wake_at_.store(want - budget_, std::memory_order_relaxed);
                // A position stored just before the mark was set is seen
                // by the load above on the next turn: the timeout bounds
                // that wait (it only runs while the budget is full).
                cv_.wait_for(lk, std::chrono::milliseconds(2));
            }
            if (stop_) return;
            limit = std::min(total, pos + budget_);
            // The reader may have passed `asked`: what it has read is not
            // asked for again.
            if (pos > asked) asked = pos;
        }
        while (si + 1 < spans_.size() && starts_[si + 1] <= asked) si++;
        // One piece per turn, so that stopping waits for one at most.
        const Span& s = spans_[si];
        const uint64_t to = std::min({limit, starts_[si + 1], asked + chunk_});
        if (s.fd >= 0 && to > asked) {
            const uint64_t off = s.begin + (asked - starts_[si]);
            advise_(s.fd, off, off + (to - asked));
        }
        asked = std::max(asked, to);
    }
}

}  // namespace linecap::query
