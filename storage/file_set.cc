#include "storage/file_set.hh"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>

extern char** environ;

namespace linecap::storage {
namespace {

std::string with_writer_mark(const std::string& path, uint32_t index, uint32_t count) {
    if (count <= 1) return path;
    std::string mark = "_w" + std::to_string(index);
    size_t slash = path.rfind('/');
    size_t dot = path.rfind('.');
    if (dot == std::string::npos || (slash != std::string::npos && dot < slash) ||
        dot == (slash == std::string::npos ? 0 : slash + 1))
        return path + mark;
    return path.substr(0, dot) + mark + path.substr(dot);
}

unsigned digits(uint32_t n) {
    unsigned d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

std::string errno_text(int err) { return std::strerror(err); }

int write_zeros(int fd, uint64_t bytes) {
    static const std::vector<char> zeros(1 << 20);
    for (uint64_t off = 0; off < bytes;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), bytes - off));
        ssize_t w = ::pwrite(fd, zeros.data(), n, static_cast<off_t>(off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = ENOSPC;
            return -1;
        }
        off += static_cast<uint64_t>(w);
    }
    return 0;
}

}  // namespace

/* Closes the last descriptors of unlinked files on its own thread: that
 * close frees the file's blocks, which takes long for a large file. */
class Disposer {
public:
    Disposer() : thread_([this] { run(); }) {}
    ~Disposer() {
        {
            std::lock_guard<std::mutex> g(mu_);
            stop_ = true;
        }
        cv_.notify_one();
        thread_.join();
    }
    void close_later(int fd) {
        {
            std::lock_guard<std::mutex> g(mu_);
            fds_.push_back(fd);
        }
        cv_.notify_one();
    }

private:
    void run() {
        pthread_setname_np(pthread_self(), "capd-unlink");
        std::unique_lock<std::mutex> lk(mu_);
        for (;;) {
            cv_.wait(lk, [this] { return stop_ || !fds_.empty(); });
            while (!fds_.empty()) {
                int fd = fds_.front();
                fds_.pop_front();
                lk.unlock();
                ::close(fd);
                lk.lock();
            }
            if (stop_) return;
        }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<int> fds_;
    bool stop_ = false;
    std::thread thread_;  // last: starts once the rest is ready
};

bool memory_backed(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
}

std::string hidden_name_for(const std::string& final_name) {
    size_t slash = final_name.rfind('/');
    if (slash == std::string::npos) return "." + final_name + ".partial";
    return final_name.substr(0, slash + 1) + "." + final_name.substr(slash + 1) + ".partial";
}

// The disposer's thread starts here, on the constructing (control) thread,
// so it takes that thread's CPUs rather than the writer's alone.
FileSet::FileSet(FileSetOptions opts)
    : opts_(std::move(opts)),
      base_(with_writer_mark(opts_.path, opts_.writer_index, opts_.writer_count)),
      disposer_(std::make_unique<Disposer>()) {}

FileSet::~FileSet() {
    if (fd_ >= 0) (void)close_current();
    drop_spares();
    wait_children(5000);
}

Status FileSet::preallocate() {
    if (!opts_.preallocate) return Status::success();
    for (uint64_t k = 0; k < opts_.max_files; k++) {
        std::string name = name_for(k, 0);
        // A ring file from an earlier run is written over by name: it keeps
        // its size and content until then.
        struct stat st;
        bool old = lstat(name.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1;
        std::string target = old ? name : hidden_name_for(name);
        int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, opts_.mode);
        if (fd < 0) {
            int err = errno;
            drop_spares();
            return make_error(target + ": " + errno_text(err));
        }
        if (!old) spares_.push_back(target);
        int r = 0;
        bool memory = memory_backed(fd);
        if (memory && !old) {
            // fallocate on tmpfs reserves pages without touching them, and a
            // hypervisor may back a guest page only at its first write. The
            // zeros make the first pass as fast as the ones after it.
            r = write_zeros(fd, opts_.rotate_bytes);
        } else {
            r = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(opts_.rotate_bytes));
            if (r != 0 && errno == EOPNOTSUPP && memory) r = 0;  // ramfs: nothing to claim
        }
        int err = errno;
        ::close(fd);
        if (r != 0) {
            drop_spares();
            if (err == EOPNOTSUPP)
                return make_error(target + ": this file system cannot preallocate (--preallocate)");
            char need[64];
            snprintf(need, sizeof(need), "%.0f MB", opts_.max_files * opts_.rotate_bytes / 1e6);
            return make_error(target + ": cannot claim the ring's " + need + " (-C x -W): " +
                              errno_text(err));
        }
    }
    return Status::success();
}

bool FileSet::take_spare() {
    for (auto it = spares_.begin(); it != spares_.end(); ++it)
        if (*it == hidden_name_) {
            spares_.erase(it);
            reused_from_.clear();
            return true;
        }
    return false;
}

void FileSet::drop_spares() {
    for (const std::string& s : spares_) ::unlink(s.c_str());
    spares_.clear();
}

std::string FileSet::name_for(uint64_t seq, time_t now) const {
    std::string name = base_;
    if (opts_.rotate_seconds > 0) {
        struct tm tm;
        localtime_r(&now, &tm);
        char buf[4096];
        size_t n = strftime(buf, sizeof(buf), base_.c_str(), &tm);
        if (n > 0) name.assign(buf, n);
    }
    // tcpdump numbers files only when -C is given; -W pads and wraps.
    if (opts_.rotate_bytes > 0) {
        if (opts_.max_files > 0) {
            char num[16];
            snprintf(num, sizeof(num), "%0*llu", static_cast<int>(digits(opts_.max_files - 1)),
                     static_cast<unsigned long long>(seq % opts_.max_files));
            name += num;
        } else if (seq > 0) {
            name += std::to_string(seq);
        }
    }
    return name;
}

Status FileSet::open_next(time_t now) {
    if (fd_ >= 0) {
        Status s = close_current();
        if (!s) return s;
    }
    final_name_ = name_for(seq_, now);
    // Only a -C/-W ring reuses names on purpose. Anywhere else (-G within one
    // second, `capctl rotate` on a plain -w name) a name already written gets
    // the next number, as -C would give it, so no earlier file is replaced.
    bool ring = opts_.rotate_bytes > 0 && opts_.max_files > 0;
    if (!ring && seq_ > 0) {
        auto used = [&](const std::string& n) {
            for (const auto& c : closed_)
                if (c == n) return true;
            return false;
        };
        std::string base = final_name_;
        for (uint64_t k = seq_; used(final_name_); k++) final_name_ = base + std::to_string(k);
    }
    hidden_name_ = hidden_name_for(final_name_);
    // A spare is already under this hidden name; else take over the
    // displaced file's storage.
    reused_ = take_spare() || (opts_.reuse && reuse_displaced());
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (reused_ ? 0 : O_TRUNC) |
                (opts_.direct ? O_DIRECT : 0);
    fd_ = ::open(hidden_name_.c_str(), flags, opts_.mode);
    if (fd_ < 0) {
        int err = errno;
        if (reused_ && !reused_from_.empty()) {
            // Give the displaced file its name back, as the oldest file.
            if (::rename(hidden_name_.c_str(), reused_from_.c_str()) == 0)
                closed_.push_front(reused_from_);
        } else if (reused_ || (err == EINVAL && opts_.direct)) {
            // A spare, or the open created the file before refusing O_DIRECT.
            ::unlink(hidden_name_.c_str());
        }
        reused_ = false;
        if (err == EINVAL && opts_.direct)
            return make_error(final_name_ + ": this file system does not take O_DIRECT (--direct)");
        return make_error(final_name_ + ": " + errno_text(err));
    }
    // The umask must not widen or narrow what the user asked for.
    (void)fchmod(fd_, opts_.mode);
    seq_++;
    return Status::success();
}

void FileSet::reap_children() {
    for (auto it = children_.begin(); it != children_.end();) {
        if (waitpid(it->pid, nullptr, WNOHANG) != 0)
            it = children_.erase(it);
        else
            ++it;
    }
}

bool FileSet::reuse_displaced() {
    // The file this one replaces by name, else the oldest that -W deletes
    // when this one is closed.
    auto known = closed_.end();
    for (auto it = closed_.begin(); it != closed_.end(); ++it)
        if (*it == final_name_) known = it;
    if (known == closed_.end() && opts_.max_files > 0 && closed_.size() >= opts_.max_files)
        known = closed_.begin();
    std::string name = known != closed_.end() ? *known : final_name_;
    struct stat st;
    if (lstat(name.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) return false;
    reap_children();
    for (const Child& c : children_)
        if (c.file == name) return false;
    if (::rename(name.c_str(), hidden_name_.c_str()) != 0) return false;
    if (known != closed_.end()) closed_.erase(known);
    reused_from_ = name;
    return true;
}

void FileSet::discard_current() {
    if (fd_ < 0) return;
    ::close(fd_);
    fd_ = -1;
    ::unlink(hidden_name_.c_str());
}

Status FileSet::close_current() {
    if (fd_ < 0) return Status::success();
    int fd = fd_;
    fd_ = -1;
    if (reused_) {
        off_t end = lseek(fd, 0, SEEK_CUR);
        if (end < 0 || ftruncate(fd, end) != 0) {
            int err = errno;
            ::close(fd);
            return make_error(hidden_name_ + ": truncate: " + errno_text(err));
        }
    }
    if (::close(fd) != 0) return make_error(hidden_name_ + ": " + errno_text(errno));
    // A file of this name (a wrapping -W counter, an earlier run) goes first,
    // so the rename does not free its blocks on this thread.
    remove_file(final_name_);
    if (::rename(hidden_name_.c_str(), final_name_.c_str()) != 0)
        return make_error(final_name_ + ": rename: " + errno_text(errno));
    files_closed_++;

    // A reused name (wrapping -W counter) replaces the old file in place.
    for (auto it = closed_.begin(); it != closed_.end(); ++it)
        if (*it == final_name_) {
            closed_.erase(it);
            break;
        }
    closed_.push_back(final_name_);
    if (opts_.max_files > 0) {
        while (closed_.size() > opts_.max_files) {
            remove_file(closed_.front());
            closed_.pop_front();
        }
    }

    if (!opts_.post_rotate_cmd.empty()) {
        // As tcpdump: run CMD with the file as its only argument, no shell.
        pid_t pid;
        char* argv[] = {const_cast<char*>(opts_.post_rotate_cmd.c_str()),
                        const_cast<char*>(final_name_.c_str()), nullptr};
        if (posix_spawnp(&pid, argv[0], nullptr, nullptr, argv, environ) == 0)
            children_.push_back({pid, final_name_});
    }
    // Reap finished commands without blocking.
    reap_children();
    return Status::success();
}

void FileSet::remove_file(const std::string& name) {
    // An O_PATH descriptor keeps the inode, so unlink only removes the name;
    // the disposer's close then frees the blocks.
    int fd = ::open(name.c_str(), O_PATH | O_CLOEXEC | O_NOFOLLOW);
    if (::unlink(name.c_str()) != 0 || fd < 0) {
        if (fd >= 0) ::close(fd);
        return;
    }
    close_later(fd);
}

void FileSet::close_later(int fd) { disposer_->close_later(fd); }

void FileSet::wait_children(int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!children_.empty()) {
        reap_children();
        if (children_.empty() || std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

}  // namespace linecap::storage
