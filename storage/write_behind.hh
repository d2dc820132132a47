/* WriteBehind: streams a writer's buffered file data to the disk and out of
 * the page cache, on a thread of its own.
 *
 * The writer hands over each 8 MiB window of a file once it is full. The
 * thread starts its writeback at once (sync_file_range WRITE) and, once more
 * than `lag_bytes` of windows are in writeback, waits for the oldest and
 * drops it from the page cache (POSIX_FADV_DONTNEED). Left to itself the
 * kernel keeps every page dirty until writeback gets to it, then clean until
 * memory runs short: a capture fills RAM, the writer is throttled in long
 * stalls at the dirty limit, and every write takes a page untouched for a
 * while. Starting writeback on ext4 allocates blocks under the journal, which
 * can take tens of milliseconds, so none of this runs on the writer.
 *
 * The windows queue across files, so a new file reuses the pages of the
 * last one's tail. Each file is handed over as a duplicate descriptor the
 * thread closes after its last window (the file may be unlinked by then:
 * that close frees its blocks).
 *
 * Threads: the writer calls add() and finish_file(); the destructor waits
 * until every window over the lag has been dropped.
 */
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace linecap::storage {

class WriteBehind {
public:
    static constexpr uint64_t kWindow = 8u << 20;

    /* on_error(file, errno) is called on the thread when a wait finds that
     * writeback failed. */
    WriteBehind(uint64_t lag_bytes, std::function<void(const std::string&, int)> on_error);
    ~WriteBehind();
    WriteBehind(const WriteBehind&) = delete;
    WriteBehind& operator=(const WriteBehind&) = delete;

    /* The window [off, off + len) of fd is written. Blocks only while the
     * thread is more than four lags behind (a disk slower than the input). */
    void add(int fd, uint64_t off, uint64_t len, const std::string& file);
    /* No more windows of fd: it is closed after its last one. */
    void finish_file(int fd);

private:
    struct Job {
        int fd;
        uint64_t off;
        uint64_t len;  // 0: close fd once its windows are done
        std::string file;
    };
    struct Started {
        int fd;
        uint64_t off;
        uint64_t len;
        bool last;
        std::string file;
    };
    void run();
    void drop(const Started& w);

    const uint64_t lag_bytes_;
    std::function<void(const std::string&, int)> on_error_;
    std::mutex mu_;
    std::condition_variable work_cv_;  // the thread waits for jobs
    std::condition_variable room_cv_;  // the writer waits for room
    std::deque<Job> jobs_;
    uint64_t queued_bytes_ = 0;  // jobs_ and started windows, not dropped yet
    bool stop_ = false;
    std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace linecap::storage
