#include "storage/write_behind.hh"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>

namespace linecap::storage {
namespace {
constexpr size_t kMaxStarted = 64;
}  // namespace

WriteBehind::WriteBehind(uint64_t lag_bytes, std::function<void(const std::string&, int)> on_error)
    : lag_bytes_(lag_bytes), on_error_(std::move(on_error)), thread_([this] { run(); }) {}

WriteBehind::~WriteBehind() {
    {
        std::lock_guard<std::mutex> g(mu_);
        stop_ = true;
    }
    work_cv_.notify_one();
    thread_.join();
}

void WriteBehind::add(int fd, uint64_t off, uint64_t len, const std::string& file) {
    std::unique_lock<std::mutex> lk(mu_);
    room_cv_.wait(lk, [&] { return queued_bytes_ <= 4 * lag_bytes_ + kWindow; });
    jobs_.push_back({fd, off, len, file});
    queued_bytes_ += len;
    lk.unlock();
    work_cv_.notify_one();
}

void WriteBehind::finish_file(int fd) {
    {
        std::lock_guard<std::mutex> g(mu_);
        jobs_.push_back({fd, 0, 0, {}});
    }
    work_cv_.notify_one();
}

void WriteBehind::drop(const Started& w) {
    int rc;
    do {
        rc = sync_file_range(
            w.fd, static_cast<off_t>(w.off), static_cast<off_t>(w.len),
            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) on_error_(w.file, errno);
    (void)posix_fadvise(w.fd, static_cast<off_t>(w.off), static_cast<off_t>(w.len),
                        POSIX_FADV_DONTNEED);
    if (w.last) ::close(w.fd);
}

void WriteBehind::run() {
    pthread_setname_np(pthread_self(), "capd-wbehind");
    std::deque<Started> started;  // in writeback, oldest first
    uint64_t started_bytes = 0;
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
        work_cv_.wait(lk, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty() && stop_) break;
        Job j = std::move(jobs_.front());
        jobs_.pop_front();
        lk.unlock();
        if (j.len == 0) {
            // The file is done: close it after its last window, or now.
            if (!started.empty() && started.back().fd == j.fd)
                started.back().last = true;
            else
                ::close(j.fd);
        } else {
            (void)sync_file_range(j.fd, static_cast<off_t>(j.off), static_cast<off_t>(j.len),
                                  SYNC_FILE_RANGE_WRITE);
            started.push_back({j.fd, j.off, j.len, false, std::move(j.file)});
            started_bytes += j.len;
        }
        uint64_t dropped = 0;
        // Small files: at most kMaxStarted descriptors stay open.
        while (started_bytes > lag_bytes_ || started.size() > kMaxStarted) {
            drop(started.front());
            started_bytes -= started.front().len;
            dropped += started.front().len;
            started.pop_front();
        }
        lk.lock();
        if (dropped) {
            queued_bytes_ -= dropped;
            room_cv_.notify_one();
        }
    }
    lk.unlock();
    // What is left within the lag stays cached; only the descriptors close.
    for (const Started& w : started)
        if (w.last) ::close(w.fd);
}

}  // namespace linecap::storage
