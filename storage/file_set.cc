#include "storage/file_set.hh"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <thread>

#include "index/index_file.hh"
#include "storage/recover.hh"
#include "storage/spawn.hh"

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

/* A listing of the directory dfd through a descriptor of its own (dfd stays
 * open, its offset untouched); closedir() it. nullptr when it cannot be
 * read. */
DIR* list_dir(int dfd) {
    int rd = ::openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR* d = rd >= 0 ? fdopendir(rd) : nullptr;
    if (!d && rd >= 0) ::close(rd);
    return d;
}

bool ends_with(const std::string& s, std::string_view tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// What hidden_name_for() puts after a file's name.
constexpr std::string_view kHidden = ".partial";

/* The index files of one capture leaf: its index (final or live) and that
 * index while it is written. */
std::string index_temp_for(const std::string& index_leaf) { return index_leaf + ".partial"; }

/* Whether the entry is capd's own regular file, which it may remove. */
bool own_file(int dfd, const std::string& leaf, uid_t owner) {
    struct stat st;
    return fstatat(dfd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
           foreign_entry(st, owner).empty();
}

bool exists(int dfd, const std::string& leaf) {
    struct stat st;
    return fstatat(dfd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

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

void log_line(const std::string& dir, const std::string& msg) {
    std::fprintf(stderr, "capd: %s/%s\n", dir.c_str(), msg.c_str());
}

/* Words for an error about an entry under a name capd must create. */
std::string name_taken(int dfd, const std::string& leaf, uid_t owner) {
    struct stat st;
    std::string what = "a capture file capd could not recover";
    if (fstatat(dfd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        std::string f = foreign_entry(st, owner);
        if (!f.empty()) what = f;
    }
    return "already exists (" + what +
           "); capd neither writes through nor removes it: remove it or choose another -w";
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
    /* Whether no close is pending (without waiting). */
    bool idle() {
        std::lock_guard<std::mutex> g(mu_);
        return !busy_ && fds_.empty();
    }
    /* Waits until every close asked for is done; whether any was pending. */
    bool wait_idle() {
        std::unique_lock<std::mutex> lk(mu_);
        bool pending = busy_ || !fds_.empty();
        idle_.wait(lk, [this] { return !busy_ && fds_.empty(); });
        return pending;
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
                busy_ = true;
                lk.unlock();
                ::close(fd);
                lk.lock();
                busy_ = false;
            }
            idle_.notify_all();
            if (stop_) return;
        }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::condition_variable idle_;
    std::deque<int> fds_;
    bool busy_ = false;  // a close is under way
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
      stream_(opts_.path == "-"),
      disposer_(std::make_unique<Disposer>()) {
    if (opts_.rotate_seconds > 0 && !stream_) top_dir_ = literal_dir(split_path(base_).first);
}

FileSet::~FileSet() {
    if (fd_ >= 0) (void)close_current();
    drop_spares();
    wait_children(5000);
    if (dir_fd_ >= 0) ::close(dir_fd_);
}

std::string FileSet::dir_error(int err) const {
    if (dir_refused_.empty()) return errno_text(err);
    if (err == ELOOP || err == EPERM || err == ENOTDIR || err == EINVAL)
        return dir_refused_ +
               "; capd neither follows, writes in nor deletes in it: remove it or choose "
               "another -w";
    return dir_refused_;
}

uid_t FileSet::owner() const {
    return opts_.owner_uid != static_cast<uid_t>(-1) ? opts_.owner_uid : geteuid();
}

int FileSet::dir_of(const std::string& path, std::string& leaf, bool create) {
    auto [dir, name] = split_path(path);
    leaf = name;
    if (dir_fd_ >= 0 && dir == dir_path_) return dir_fd_;
    dir_refused_.clear();
    int fd = open_capture_dir(dir, top_dir_, create, dir_mode_for(opts_.mode), opts_.owner_uid,
                              opts_.owner_gid, dir_refused_);
    if (fd < 0) return -1;
    if (dir_fd_ >= 0) ::close(dir_fd_);
    dir_fd_ = fd;
    dir_path_ = dir;
    return dir_fd_;
}

void FileSet::recover_stale() {
    if (stream_) return;
    bool timed = opts_.rotate_seconds > 0;
    auto [dir, leaf] = split_path(base_);
    // Directories named by strftime are many: a walk below the literal part
    // finds them, recovers the hidden files in each and, with retention,
    // adopts their earlier files.
    if (timed && dir.find('%') != std::string::npos) {
        scan_time_dirs(dir, leaf);
        return;
    }
    // The names this set writes: the base, numbered with -C, any expansion
    // of its conversions with -G.
    std::string prefix = timed ? leaf.substr(0, leaf.find('%')) : leaf;
    std::string ignored;
    int dfd = dir_of(base_, ignored);
    if (dfd < 0) return;  // open_next reports it
    DIR* d = list_dir(dfd);
    if (!d) return;
    std::vector<std::string> hidden;
    while (struct dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (ends_with(n, ".idx") || ends_with(n, ".idx.partial")) continue;  // below
        if (n.size() < 1 + prefix.size() + kHidden.size() || n[0] != '.' ||
            !ends_with(n, kHidden) || n.compare(1, prefix.size(), prefix) != 0)
            continue;
        std::string rest =
            n.substr(1 + prefix.size(), n.size() - 1 - prefix.size() - kHidden.size());
        if (!opts_.suffix.empty()) {
            if (!ends_with(rest, opts_.suffix)) continue;
            rest.resize(rest.size() - opts_.suffix.size());
        }
        if (!timed && rest.find_first_not_of("0123456789") != std::string::npos) continue;
        hidden.push_back(n);
    }
    closedir(d);
    recover_hidden_files(dfd, dir, hidden, nullptr);
    // After the recovery: a live index whose hidden file it published or
    // removed is stale now.
    remove_stale_indexes(dfd, dir, prefix, timed);
    if (retaining()) adopt_earlier(dfd, dir, leaf, timed);
}

void FileSet::recover_hidden_files(int dfd, const std::string& dir,
                                   const std::vector<std::string>& hidden, Earlier* found) {
    unsigned spares = 0;
    for (const std::string& h : hidden) {
        Recovery r = recover_hidden(dfd, h, h.substr(1, h.size() - 1 - kHidden.size()), owner());
        if (r.what == Recovery::What::kSpare)
            spares++;  // one line for all: a -W 1000 ring leaves 1000
        else if (!r.message.empty())
            log_line(dir, r.message);
        // Published under a recovered name: one of this capture's files,
        // by the killed run's last write.
        struct stat st;
        if (found && r.what == Recovery::What::kRecovered &&
            fstatat(dfd, r.published.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            foreign_entry(st, owner()).empty()) {
            found->files.push_back({st.st_mtim, dir + "/" + r.published});
            found->recovered++;
        }
    }
    if (spares > 0)
        std::fprintf(stderr,
                     "capd: %s: removed %u empty hidden file%s left by a run that did not "
                     "finish (unused --preallocate spares, or cut before their header)\n",
                     dir.c_str(), spares, spares == 1 ? "" : "s");
}

/* The index files a run that did not finish left under names this set
 * writes: an index being written (".X.idx.partial"), a live index whose
 * hidden file is gone (recovered above: a recovered file has no index), an
 * index whose capture file is gone (a kill between writing it and naming
 * the file, whose hidden file was then recovered). Only capd's own regular
 * files; one line for all. */
void FileSet::remove_stale_indexes(int dfd, const std::string& dir, const std::string& prefix,
                                   bool timed) {
    DIR* d = list_dir(dfd);
    if (!d) return;
    // The capture leaf an index leaf belongs to must be one of this set's
    // names (hidden or final).
    auto ours = [&](const std::string& capture) {
        std::string c = capture;
        if (c.size() > 1 && c[0] == '.' && ends_with(c, ".partial"))
            c = c.substr(1, c.size() - 1 - 8);
        if (c.compare(0, prefix.size(), prefix) != 0) return false;
        if (!opts_.suffix.empty()) {
            if (!ends_with(c, opts_.suffix)) return false;
            c.resize(c.size() - opts_.suffix.size());
        }
        return timed || c.find_first_not_of("0123456789", prefix.size()) == std::string::npos;
    };
    std::vector<std::string> stale;
    while (struct dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n.size() < 2 || n[0] != '.') continue;
        if (ends_with(n, ".idx.partial")) {
            // ".B.idx.partial" (B final) or ".B.partial.idx.partial" (live)
            std::string idx = n.substr(0, n.size() - 8);
            std::string capture = ends_with(idx, ".partial.idx") ? idx.substr(0, idx.size() - 4)
                                                                 : idx.substr(1, idx.size() - 5);
            if (ours(capture)) stale.push_back(n);
        } else if (ends_with(n, ".partial.idx")) {
            std::string hidden = n.substr(0, n.size() - 4);
            if (ours(hidden) && !exists(dfd, hidden)) stale.push_back(n);
        } else if (ends_with(n, ".idx")) {
            std::string capture = n.substr(1, n.size() - 5);
            if (ours(capture) && !exists(dfd, capture)) stale.push_back(n);
        }
    }
    closedir(d);
    unsigned removed = 0;
    for (const std::string& n : stale)
        if (own_file(dfd, n, owner()) && remove_entry(dfd, n) == 0) removed++;
    if (removed > 0)
        std::fprintf(stderr,
                     "capd: %s: removed %u index file%s left by a run that did not finish "
                     "(a recovered file has no index: capq scans it, or capq --reindex it)\n",
                     dir.c_str(), removed, removed == 1 ? "" : "s");
}

Status FileSet::preallocate() {
    if (!opts_.preallocate || stream_) return Status::success();
    for (uint64_t k = 0; k < opts_.max_files; k++) {
        std::string name = name_for(k, 0);
        std::string leaf;
        int dfd = dir_of(name, leaf);
        if (dfd < 0) {
            int err = errno;
            drop_spares();
            return make_error(name + ": " + errno_text(err));
        }
        // A ring file of capd's from an earlier run is written over by name:
        // it keeps its size and content until then.
        struct stat st;
        bool old = fstatat(dfd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                   foreign_entry(st, owner()).empty();
        std::string target = old ? name : hidden_name_for(name);
        std::string target_leaf = old ? leaf : "." + leaf + ".partial";
        int fd = -1;
        if (old) {
            FileId id = file_id(st);
            fd = open_own_file(dfd, target_leaf, O_WRONLY, owner(), &id);
        } else {
            fd = create_new(dfd, target_leaf, O_WRONLY, opts_.mode, opts_.owner_uid,
                            opts_.owner_gid);
        }
        if (fd < 0) {
            int err = errno;
            drop_spares();
            if (err == EEXIST)
                return make_error(target + ": " + name_taken(dfd, target_leaf, owner()));
            return make_error(target + ": " + errno_text(err));
        }
        if (!old) {
            struct stat made;
            fstat(fd, &made);
            spares_.push_back({target, file_id(made)});
        }
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
            return make_error(target + ": cannot claim the ring's " + need +
                              " (-C x -W): " + errno_text(err));
        }
    }
    return Status::success();
}

bool FileSet::take_spare() {
    for (auto it = spares_.begin(); it != spares_.end(); ++it)
        if (it->name == hidden_name_) {
            reused_id_ = it->id;
            spares_.erase(it);
            reused_from_.clear();
            return true;
        }
    return false;
}

void FileSet::drop_spares() {
    for (const Spare& s : spares_) {
        std::string leaf;
        int dfd = dir_of(s.name, leaf);
        if (dfd >= 0) (void)remove_entry(dfd, leaf);
        remove_index(s.name);
    }
    spares_.clear();
}

std::string FileSet::name_for(uint64_t count, time_t period) const {
    std::string name = base_;
    if (opts_.rotate_seconds > 0) {
        struct tm tm;
        localtime_r(&period, &tm);
        char buf[4096];
        size_t n = strftime(buf, sizeof(buf), base_.c_str(), &tm);
        if (n > 0) name.assign(buf, n);
    }
    // tcpdump numbers files only when -C is given; -W pads to the width of
    // W-1 and wraps. Its -W 1 has a width of 0, and a counter of 0 with no
    // width is no number at all: the one name is NAME.
    if (opts_.rotate_bytes > 0) {
        if (opts_.max_files > 1) {
            char num[16];
            snprintf(num, sizeof(num), "%0*llu", static_cast<int>(digits(opts_.max_files - 1)),
                     static_cast<unsigned long long>(count % opts_.max_files));
            name += num;
        } else if (opts_.max_files == 0 && count > 0) {
            name += std::to_string(count);
        }
    }
    return name + opts_.suffix;
}

Status FileSet::open_next(time_t now, Open why) {
    if (fd_ >= 0) {
        Status s = close_current();
        if (!s) return s;
    }
    if (stream_) {
        // Standard output is one stream: a second header in it would end
        // any reader.
        if (seq_ > 0) return make_error("standard output is written once and never rotated");
        // A pipe gets an open file description of its own, non-blocking, so
        // a reader that stops reading cannot hold the writer in write()
        // past a second stop signal, and the flag does not change the
        // pipe for the shell or the other processes sharing it. Anything
        // else (a file, a socket) is written through a duplicate.
        struct stat st;
        if (fstat(STDOUT_FILENO, &st) != 0)
            return make_error("standard output: " + errno_text(errno));
        if (S_ISFIFO(st.st_mode)) {
            fd_ = ::open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
            if (fd_ < 0 && errno == ENXIO)
                return make_error("standard output: the pipe has no reader");
        }
        if (fd_ < 0) fd_ = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        if (fd_ < 0) return make_error("standard output: " + errno_text(errno));
        final_name_ = "-";
        hidden_name_.clear();
        reused_ = false;
        seq_++;
        return Status::success();
    }
    // tcpdump: the strftime name is evaluated when a -G period starts, and
    // the -C counter restarts with it; a -C cut keeps both.
    if (seq_ == 0 || (why == Open::kPeriod && opts_.rotate_seconds > 0)) {
        period_ = period_start(now);
        count_ = 0;
    }
    final_name_ = name_for(count_, period_);
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
        // The number goes before --compress's suffix, as -C's counter does
        // (NAME1.zst), so the file keeps its codec's name.
        std::string base = final_name_.substr(0, final_name_.size() - opts_.suffix.size());
        for (uint64_t k = seq_; used(final_name_); k++)
            final_name_ = base + std::to_string(k) + opts_.suffix;
    }
    hidden_name_ = hidden_name_for(final_name_);
    std::string leaf;
    int dfd = dir_of(hidden_name_, leaf, true);
    if (dfd < 0) return make_error(final_name_ + ": " + dir_error(errno));
    if (Status s = check_final_name(dfd); !s) return s;
    // A spare is already under this hidden name; else take over the
    // displaced file's storage.
    reused_ = take_spare() || (opts_.reuse && reuse_displaced());
    // The new file is one of the W: the oldest goes now, not when the new
    // one is closed, so W files, this one included, are all the disk holds.
    make_room();
    dfd = dir_of(hidden_name_, leaf);
    int flags = O_WRONLY | (opts_.direct ? O_DIRECT : 0);
    if (reused_) {
        fd_ = open_own_file(dfd, leaf, flags, owner(), &reused_id_);
    } else {
        fd_ = create_new(dfd, leaf, flags, opts_.mode, opts_.owner_uid, opts_.owner_gid);
        if (fd_ < 0 && errno == EEXIST) {
            // A run that did not finish left it: recover it, then the name
            // is free. Anything else there is not capd's to touch.
            // (What is left alone is said by the error, once per episode:
            // this runs again at every retry.)
            Recovery r = recover_hidden(dfd, leaf, leaf.substr(1, leaf.size() - 9), owner());
            if (r.what == Recovery::What::kRecovered || r.what == Recovery::What::kRemoved ||
                r.what == Recovery::What::kSpare) {
                log_line(dir_path_, r.message);
                fd_ = create_new(dfd, leaf, flags, opts_.mode, opts_.owner_uid, opts_.owner_gid);
            } else {
                errno = EEXIST;
            }
        }
    }
    if (fd_ < 0) {
        int err = errno;
        if (reused_ && !reused_from_.empty()) {
            // (make_room() may have changed the directory descriptor.)
            dfd = dir_of(hidden_name_, leaf);
            // Give the displaced file its name back, as the oldest file.
            std::string from_leaf = split_path(reused_from_).second;
            if (::renameat(dfd, leaf.c_str(), dfd, from_leaf.c_str()) == 0)
                closed_.push_front(reused_from_);
        } else if (reused_ || (err == EINVAL && opts_.direct)) {
            // A spare, or the open created the file before refusing O_DIRECT.
            (void)remove_entry(dfd, leaf);
        }
        reused_ = false;
        if (err == EINVAL && opts_.direct)
            return make_error(final_name_ + ": this file system does not take O_DIRECT (--direct)");
        if (err == EEXIST) return make_error(hidden_name_ + ": " + name_taken(dfd, leaf, owner()));
        return make_error(final_name_ + ": " + errno_text(err));
    }
    // The umask must not widen or narrow what the user asked for (a new
    // file got its mode at creation).
    if (reused_) (void)fchmod(fd_, opts_.mode);
    // A live index of an earlier file under this hidden name (a run that did
    // not finish) would describe other bytes.
    remove_index(hidden_name_);
    // Held while the file is written: the start-up scan of another capd
    // leaves a locked hidden file alone (storage/recover.hh).
    (void)flock(fd_, LOCK_EX | LOCK_NB);
    seq_++;
    count_++;
    if (opts_.on_file) opts_.on_file(hidden_name_, FileSetOptions::FileEvent::kOpened, nullptr);
    return Status::success();
}

void FileSet::make_room() {
    if (opts_.max_files == 0) return;
    // A ring name reused on purpose (the -W counter wrapping, or a -G
    // period whose strftime name an earlier one had) replaces its file:
    // the old one goes now. So does an earlier run's file under the name.
    bool ring = opts_.rotate_bytes > 0;
    if (ring) {
        for (auto it = closed_.begin(); it != closed_.end(); ++it)
            if (*it == final_name_) {
                closed_.erase(it);
                break;
            }
        if (!reused_) remove_file(final_name_);
        remove_index(final_name_);  // reused or not, it describes the old file
    }
    while (!closed_.empty() && closed_.size() + 1 > opts_.max_files) {
        const std::string name = closed_.front();
        closed_.pop_front();
        remove_file(name);
        remove_index(name);
        remove_empty_dirs(name, nullptr);
    }
}

bool FileSet::wait_removals() { return disposer_->wait_idle(); }

void FileSet::reap_children() {
    for (auto it = children_.begin(); it != children_.end();) {
        int status = 0;
        pid_t r = waitpid(it->pid, &status, WNOHANG);
        if (r == 0) {
            ++it;
            continue;
        }
        const std::string what = "-z '" + opts_.post_rotate_cmd + " " + it->file + "'";
        if (r > 0 && WIFEXITED(status) && WEXITSTATUS(status) != 0)
            command_failed(what + " exited with status " + std::to_string(WEXITSTATUS(status)));
        else if (r > 0 && WIFSIGNALED(status))
            command_failed(what + " was killed by signal " + std::to_string(WTERMSIG(status)) +
                           " (" + strsignal(WTERMSIG(status)) + ")");
        it = children_.erase(it);
    }
}

void FileSet::command_failed(std::string msg) {
    std::fprintf(stderr, "capd: %s\n", msg.c_str());
    std::lock_guard<std::mutex> lock(command_mu_);
    last_command_failure_ = std::move(msg);
    command_failures_.fetch_add(1, std::memory_order_relaxed);
}

std::string FileSet::last_command_failure() const {
    std::lock_guard<std::mutex> lock(command_mu_);
    return last_command_failure_;
}

bool FileSet::reuse_displaced() {
    // The file this one replaces by name, else the oldest, which -W removes
    // as this one opens.
    auto known = closed_.end();
    for (auto it = closed_.begin(); it != closed_.end(); ++it)
        if (*it == final_name_) known = it;
    if (known == closed_.end() && opts_.max_files > 0 && !closed_.empty() &&
        closed_.size() + 1 > opts_.max_files)
        known = closed_.begin();
    std::string name = known != closed_.end() ? *known : final_name_;
    // Only within the directory of the new file (-G names may change it).
    if (split_path(name).first != split_path(hidden_name_).first) return false;
    std::string leaf, hidden_leaf;
    int dfd = dir_of(name, leaf);
    hidden_leaf = split_path(hidden_name_).second;
    // Only a file of capd's user with no other link: never a symbolic link
    // or a file someone else put under the name.
    struct stat st;
    if (dfd < 0 || fstatat(dfd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !foreign_entry(st, owner()).empty())
        return false;
    reap_children();
    for (const Child& c : children_)
        if (c.file == name) return false;
    // Never over an entry already under the hidden name (open_next then
    // recovers or refuses it).
    if (::renameat2(dfd, leaf.c_str(), dfd, hidden_leaf.c_str(), RENAME_NOREPLACE) != 0)
        return false;
    if (known != closed_.end()) closed_.erase(known);
    // Its index describes bytes about to be written over.
    remove_index(name);
    if (opts_.on_file) opts_.on_file(name, FileSetOptions::FileEvent::kRemoved, nullptr);
    reused_from_ = name;
    reused_id_ = file_id(st);
    return true;
}

void FileSet::discard_current() {
    if (fd_ < 0) return;
    ::close(fd_);
    fd_ = -1;
    if (stream_) return;
    std::string leaf;
    int dfd = dir_of(hidden_name_, leaf);
    if (dfd >= 0) (void)remove_entry(dfd, leaf);
    remove_index(hidden_name_);
}

/* A device, a pipe, a socket or a directory under the final name is never
 * replaced: renaming over /dev/null as root would leave a regular file
 * there for the whole system. (A symbolic link is replaced, not followed.) */
Status FileSet::check_final_name(int dfd) const {
    std::string leaf = split_path(final_name_).second;
    struct stat st;
    if (fstatat(dfd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return Status::success();
    if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) return Status::success();
    return make_error(EEXIST, final_name_ +
                                  ": exists and is not a regular file; capd writes only regular "
                                  "files (for no output: -w - > /dev/null)");
}

Status FileSet::write_index(std::span<const uint8_t> bytes) {
    return write_index_of(final_name_, bytes);
}

Status FileSet::write_live_index(std::span<const uint8_t> bytes) {
    return write_index_of(hidden_name_, bytes);
}

/* The index of the capture `name` (index_leaf_for), beside it. */
Status FileSet::write_index_of(const std::string& name, std::span<const uint8_t> bytes) {
    std::string leaf;
    int dfd = dir_of(name, leaf);
    std::string idx = index::index_leaf_for(leaf);
    std::string path = split_path(name).first + "/" + idx;
    if (dfd < 0) return make_error(path + ": " + errno_text(errno));
    Status s =
        index::write_index_file(dfd, idx, bytes, opts_.mode, static_cast<int>(opts_.owner_uid),
                                static_cast<int>(opts_.owner_gid));
    if (!s) return make_error(path + ": " + s.error());
    return s;
}

void FileSet::remove_index(const std::string& name) {
    std::string leaf;
    int dfd = dir_of(name, leaf);
    if (dfd < 0) return;
    std::string idx = index::index_leaf_for(leaf);
    for (const std::string& n : {idx, index_temp_for(idx)})
        if (own_file(dfd, n, owner())) (void)remove_entry(dfd, n);
}

Status FileSet::close_current() {
    if (fd_ < 0) return Status::success();
    // Taken here: an error below does not leave it for the next file.
    std::string index = std::move(closing_index_);
    const bool has_index = has_closing_index_;
    closing_index_ = std::string();
    has_closing_index_ = false;
    int fd = fd_;
    fd_ = -1;
    if (stream_) {
        ::close(fd);  // capd's own descriptor 1 stays open
        files_closed_++;
        return Status::success();
    }
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
    std::string final_leaf;
    int dfd = dir_of(final_name_, final_leaf);
    if (dfd >= 0)
        if (Status s = check_final_name(dfd); !s) return s;
    remove_file(final_name_);
    dfd = dir_of(final_name_, final_leaf);
    std::string hidden_leaf = split_path(hidden_name_).second;
    if (dfd < 0 || ::renameat(dfd, hidden_leaf.c_str(), dfd, final_leaf.c_str()) != 0) {
        int err = errno;
        remove_index(final_name_);  // no file of that name for it to describe
        return make_error(final_name_ + ": rename: " + errno_text(err));
    }
    files_closed_++;
    remove_index(hidden_name_);  // the live index: the final one is in place
    if (opts_.on_file)
        opts_.on_file(final_name_, FileSetOptions::FileEvent::kClosed,
                      has_index ? &index : nullptr);

    // A reused name (wrapping -W counter) replaces the old file in place.
    for (auto it = closed_.begin(); it != closed_.end(); ++it)
        if (*it == final_name_) {
            closed_.erase(it);
            break;
        }
    closed_.push_back(final_name_);
    // An earlier run's file of this name was replaced: this run's file is
    // retention's in closed_, once.
    std::erase(earlier_, final_name_);
    if (opts_.max_files > 0) {
        while (closed_.size() > opts_.max_files) {
            const std::string name = closed_.front();
            closed_.pop_front();
            remove_file(name);
            remove_index(name);
            remove_empty_dirs(name, nullptr);
        }
    }

    if (!opts_.post_rotate_cmd.empty()) {
        // As tcpdump: run CMD with the file as its only argument, no shell.
        auto pid = spawn_command({opts_.post_rotate_cmd, final_name_}, opts_.child_cpus);
        if (pid)
            children_.push_back({*pid, final_name_});
        else
            command_failed("-z '" + opts_.post_rotate_cmd + " " + final_name_ +
                           "' could not be started: " + pid.error());
    }
    // Reap finished commands without blocking.
    reap_children();
    return Status::success();
}

void FileSet::remove_file(const std::string& name) {
    // An O_PATH descriptor keeps the inode, so unlink only removes the name;
    // the disposer's close then frees the blocks. A symbolic link is
    // removed itself, never its target.
    std::string leaf;
    int dfd = dir_of(name, leaf);
    if (dfd < 0) {
        if (!dir_refused_.empty() && errno != ENOENT)
            std::fprintf(stderr, "capd: %s: not removed: %s\n", name.c_str(),
                         dir_error(errno).c_str());
        return;
    }
    int fd = ::openat(dfd, leaf.c_str(), O_PATH | O_CLOEXEC | O_NOFOLLOW);
    if (remove_entry(dfd, leaf) != 0 || fd < 0) {
        if (fd >= 0) ::close(fd);
        return;
    }
    close_later(fd);
    if (opts_.on_file) opts_.on_file(name, FileSetOptions::FileEvent::kRemoved, nullptr);
}

void FileSet::close_later(int fd) { disposer_->close_later(fd); }

time_t FileSet::period_start(time_t now) const {
    if (!opts_.align || opts_.rotate_seconds == 0) return now;
    // Local time, as the strftime names: -G 86400 starts at local midnight.
    struct tm tm;
    localtime_r(&now, &tm);
    const int64_t g = opts_.rotate_seconds;
    int64_t local = static_cast<int64_t>(now) + tm.tm_gmtoff;
    return now - static_cast<time_t>(((local % g) + g) % g);
}

void FileSet::adopt_earlier(int dfd, const std::string& dir, const std::string& pattern,
                            bool timed) {
    Earlier found;
    size_t unbounded = SIZE_MAX;
    find_earlier(dfd, dir, pattern, timed, found, unbounded);
    take_earlier(found, dir, "");
}

void FileSet::find_earlier(int dfd, const std::string& dir, const std::string& pattern, bool timed,
                           Earlier& found, size_t& budget) {
    DIR* d = list_dir(dfd);
    if (!d) return;
    while (budget > 0) {
        struct dirent* e = readdir(d);
        if (!e) break;
        budget--;
        consider_earlier(dfd, dir, e->d_name, pattern, timed, found);
    }
    closedir(d);
}

bool FileSet::set_name(const std::string& pattern, bool timed, std::string leaf) const {
    // --compress: this capture's names end with the codec's suffix.
    if (!opts_.suffix.empty()) {
        if (!ends_with(leaf, opts_.suffix)) return false;
        leaf.resize(leaf.size() - opts_.suffix.size());
    }
    return retained_name(pattern, timed, leaf);
}

void FileSet::consider_earlier(int dfd, const std::string& dir, const std::string& n,
                               const std::string& pattern, bool timed, Earlier& found) {
    const bool bare = split_path(base_).first == "." && base_.rfind("./", 0) != 0;
    // A file recovered from a killed run of this capture is one of its
    // files: by the name it was to have, and its last write.
    std::string plain = recovered_from(n);
    const bool was_recovered = !plain.empty();
    if (!set_name(pattern, timed, was_recovered ? plain : n)) return;
    struct stat st;
    if (fstatat(dfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !foreign_entry(st, owner()).empty())
        return;  // not capd's to delete
    found.files.push_back({st.st_mtim, bare ? n : dir + "/" + n});
    if (was_recovered) found.recovered++;
}

void FileSet::take_earlier(Earlier& found, const std::string& dir, const std::string& where) {
    std::sort(found.files.begin(), found.files.end(), [](const auto& a, const auto& b) {
        if (a.first.tv_sec != b.first.tv_sec) return a.first.tv_sec < b.first.tv_sec;
        if (a.first.tv_nsec != b.first.tv_nsec) return a.first.tv_nsec < b.first.tv_nsec;
        return a.second < b.second;
    });
    for (auto& f : found.files) earlier_.push_back(std::move(f.second));
    if (found.files.empty()) return;
    std::string of_them;
    if (found.recovered > 0)
        of_them = " (" + std::to_string(found.recovered) + " of them recovered from a killed run)";
    std::fprintf(stderr,
                 "capd: %s: %zu file%s of an earlier run under this capture's names%s count "
                 "for retention%s\n",
                 dir.c_str(), found.files.size(), found.files.size() == 1 ? "" : "s", where.c_str(),
                 of_them.c_str());
}

void FileSet::scan_time_dirs(const std::string& dir_tmpl, const std::string& pattern) {
    const bool retain = retaining();
    // Only the conversions the name matcher knows can be told from other
    // names; with any other, earlier directories are not looked for (the
    // hidden file open_next() needs is still recovered).
    std::string rest;
    if (!strftime_known(dir_tmpl) || !strftime_known(pattern) ||
        !below_literal(dir_tmpl, top_dir_, rest)) {
        std::fprintf(stderr,
                     "capd: %s/%s: earlier files are not looked for (a -G name must use only "
                     "%%Y %%m %%d %%H %%M %%S %%y %%j %%s %%F %%T %%%% for them to be "
                     "recognised); %s\n",
                     dir_tmpl.c_str(), pattern.c_str(),
                     retain ? "retention counts this run's files, and a hidden file a killed run "
                              "left is recovered only when a file of its name opens"
                            : "a hidden file a killed run left is recovered only when a file "
                              "of its name opens");
        return;
    }
    int top = open_dir(top_dir_);
    if (top < 0) return;  // open_next reports it
    // The path of a directory walked, as name_for() spells it: the literal
    // part as -w gives it, then the names entered.
    const std::string lead = dir_tmpl.substr(0, dir_tmpl.size() - rest.size());
    Earlier found;
    size_t budget = kTimeDirEntries;
    size_t dirs = walk_dirs_below(
        top, rest, opts_.owner_uid,
        [](const std::string& comp, const std::string& name) {
            return strftime_dir_name(comp, name);
        },
        [&](int dfd, const std::string& path) {
            scan_time_dir(dfd, lead + path, pattern, retain ? &found : nullptr, budget);
        },
        budget);
    ::close(top);
    if (budget == 0)
        std::fprintf(stderr,
                     "capd: %s: the look for earlier files below it stopped at %zu directory "
                     "entries; hidden files a killed run left past them are not recovered%s "
                     "until a restart finds them\n",
                     top_dir_.c_str(), kTimeDirEntries,
                     retain ? ", and files past them are not counted for retention," : "");
    if (retain)
        take_earlier(found, top_dir_,
                     ", in " + std::to_string(dirs) + " director" + (dirs == 1 ? "y" : "ies") +
                         " named by strftime below it,");
}

void FileSet::scan_time_dir(int dfd, const std::string& dir, const std::string& pattern,
                            Earlier* found, size_t& budget) {
    DIR* d = list_dir(dfd);
    if (!d) return;
    // One read of the directory: the hidden files of this capture's names,
    // and with retention its earlier files.
    std::vector<std::string> hidden;
    while (budget > 0) {
        struct dirent* e = readdir(d);
        if (!e) break;
        budget--;
        std::string n = e->d_name;
        if (n.size() > 1 + kHidden.size() && n[0] == '.' && ends_with(n, kHidden)) {
            if (set_name(pattern, true, n.substr(1, n.size() - 1 - kHidden.size())))
                hidden.push_back(n);
        } else if (found) {
            consider_earlier(dfd, dir, n, pattern, true, *found);
        }
    }
    closedir(d);
    if (hidden.empty()) return;
    recover_hidden_files(dfd, dir, hidden, found);
    // As in a literal directory: the live index of a file recovered or
    // removed, and an index a killed run was writing, are stale.
    remove_stale_indexes(dfd, dir, pattern.substr(0, pattern.find('%')), true);
}

bool FileSet::next_to_retire(std::deque<std::string>*& list, size_t& at, struct stat& st) {
    std::deque<std::string>* const lists[] = {&earlier_, &closed_};
    size_t li = list == &closed_ ? 1 : 0;
    if (!list) at = 0;
    // One pass: each entry is looked at once, and one dropped from its list
    // leaves the next one at its place.
    for (; li < 2; li++, at = 0) {
        std::deque<std::string>& l = *lists[li];
        while (at < l.size()) {
            const std::string& name = l[at];
            auto drop = [&] {
                l.erase(l.begin() + static_cast<long>(at));
                oldest_dirty_ = true;
            };
            // An earlier run's name this run is writing again is this run's
            // file now (close_current() moves it to closed_).
            if (li == 0 && name == final_name_) {
                drop();
                continue;
            }
            bool in_command = false;
            for (const Child& c : children_) in_command = in_command || c.file == name;
            if (in_command) {  // -z still reads it: the next oldest goes
                at++;
                continue;
            }
            retention_looks_++;
            std::string leaf;
            int dfd = dir_of(name, leaf);
            if (dfd < 0 && !dir_refused_.empty() && errno != ENOENT)
                std::fprintf(stderr, "capd: %s: left alone by retention (%s)\n", name.c_str(),
                             dir_error(errno).c_str());
            if (dfd < 0 || fstatat(dfd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
                drop();  // gone already
                continue;
            }
            if (std::string f = foreign_entry(st, owner()); !f.empty()) {
                std::fprintf(stderr, "capd: %s: left alone by retention (%s)\n", name.c_str(),
                             f.c_str());
                drop();
                continue;
            }
            list = lists[li];
            return true;
        }
    }
    return false;
}

bool FileSet::retire_oldest(time_t older_than, const std::string& why, uint64_t& freed, time_t now,
                            RetireCursor* from) {
    reap_children();
    RetireCursor start;
    RetireCursor& c = from ? *from : start;
    struct stat st;
    // A file from the future is not the oldest by age: it is passed over,
    // and the files after it are still aged. The cursor stays past it, so
    // a check looks at each file once however many such files there are.
    for (;; c.at++) {
        if (!next_to_retire(c.list, c.at, st)) return false;
        if (older_than < 0 || st.st_mtime <= older_than) break;
        if (st.st_mtime <= now) return false;
    }
    std::deque<std::string>& list = *c.list;
    const std::string name = list[c.at];
    remove_file(name);
    remove_index(name);
    // The next file takes its place: the cursor stays.
    list.erase(list.begin() + static_cast<long>(c.at));
    retired_files_.fetch_add(1, std::memory_order_relaxed);
    retired_bytes_.fetch_add(static_cast<uint64_t>(st.st_size), std::memory_order_relaxed);
    freed += static_cast<uint64_t>(st.st_blocks) * 512;
    oldest_dirty_ = true;
    std::fprintf(stderr, "capd: %s: deleted (%lld bytes) %s\n", name.c_str(),
                 static_cast<long long>(st.st_size), why.c_str());
    remove_empty_dirs(name, "retention");
    return true;
}

void FileSet::remove_empty_dirs(const std::string& name, const char* why) {
    if (top_dir_.empty()) return;
    const std::string tmpl = split_path(base_).first;
    const std::string dir = split_path(name).first;
    std::string tmpl_rest, rest;
    if (!below_literal(tmpl, top_dir_, tmpl_rest) || !below_literal(dir, top_dir_, rest)) return;
    auto components = [](const std::string& path) {
        std::vector<std::string> out;
        for (size_t at = 0;;) {
            size_t slash = path.find('/', at);
            out.push_back(path.substr(at, slash - at));
            if (slash == std::string::npos) return out;
            at = slash + 1;
        }
    };
    const std::vector<std::string> tmpl_comps = components(tmpl_rest);
    const std::vector<std::string> comps = components(rest);
    // A conversion that made a '/' (not one the walk matches) leaves
    // nothing to tell which directories strftime named.
    if (comps.size() != tmpl_comps.size()) return;
    const std::string lead = tmpl.substr(0, tmpl.size() - tmpl_rest.size());
    const std::string current = hidden_name_.empty() ? "" : split_path(hidden_name_).first;
    std::string path = dir;
    // Up from the file's directory while its component is named by strftime;
    // the literal part and literal components are the user's.
    for (size_t k = comps.size(); k-- > 0;) {
        if (tmpl_comps[k].find('%') == std::string::npos) return;
        if (path == current || current.rfind(path + "/", 0) == 0) return;
        std::string parent = lead;
        for (size_t i = 0; i < k; i++) parent += (i ? "/" : "") + comps[i];
        if (parent.empty()) parent = ".";
        std::string refused;
        int pfd =
            open_capture_dir(parent, top_dir_, false, 0, opts_.owner_uid, opts_.owner_gid, refused);
        if (pfd < 0) return;
        int r = remove_empty_dir(pfd, comps[k], opts_.owner_uid);
        ::close(pfd);
        if (r != 0) return;  // not empty (a file of anyone's), or not capd's
        // A descriptor of the removed directory names nothing now.
        if (dir_fd_ >= 0 && (dir_path_ == path || dir_path_.rfind(path + "/", 0) == 0)) {
            ::close(dir_fd_);
            dir_fd_ = -1;
            dir_path_.clear();
        }
        if (why) std::fprintf(stderr, "capd: %s: removed, empty after %s\n", path.c_str(), why);
        path = parent;
    }
}

void FileSet::retain(time_t now) {
    if (!retaining()) return;
    if (opts_.retain_age_s > 0) {
        // A file's age is its own: each writer retiring its files past the
        // age is the capture's one age policy, and needs no group.
        uint64_t freed = 0;
        const std::string why =
            "by --retain-age: last written over " + std::to_string(opts_.retain_age_s) + " s ago";
        time_t older_than = now - static_cast<time_t>(opts_.retain_age_s);
        RetireCursor from;  // past the files from the future already passed over
        while (retire_oldest(older_than, why, freed, now, &from)) {}
        freed_pending_ += freed;
    }
    if (opts_.retain_free.on()) {
        std::string leaf;
        int dfd = dir_of(final_name_.empty() ? base_ : final_name_, leaf);
        struct statvfs vfs;
        if (dfd >= 0 && fstatvfs(dfd, &vfs) == 0) {
            // Blocks of a removed file are free once its last close is done
            // (on the disposer's thread): until then, count them as freed.
            if (disposer_->idle()) freed_pending_ = 0;
            uint64_t total = uint64_t(vfs.f_blocks) * vfs.f_frsize;
            uint64_t avail = uint64_t(vfs.f_bavail) * vfs.f_frsize;
            uint64_t floor = opts_.retain_free.floor(total);
            char why[128];
            if (opts_.retain_free.bytes)
                snprintf(why, sizeof(why), "by --retain-free: to keep %llu bytes free",
                         static_cast<unsigned long long>(floor));
            else
                snprintf(why, sizeof(why), "by --retain-free: to keep %g%% free",
                         opts_.retain_free.pct);
            if (opts_.retention_group) {
                retain_free_in_group(avail, floor, why);
            } else {
                while (avail + freed_pending_ < floor && retire_oldest(-1, why, freed_pending_)) {}
                if (avail + freed_pending_ < floor) {
                    if (!floor_unmet_)
                        std::fprintf(stderr,
                                     "capd: %s: %llu bytes free, below --retain-free's %llu, and "
                                     "no closed file of this writer is left to delete\n",
                                     dir_path_.c_str(),
                                     static_cast<unsigned long long>(avail + freed_pending_),
                                     static_cast<unsigned long long>(floor));
                    floor_unmet_ = true;
                } else {
                    floor_unmet_ = false;
                }
            }
        }
    }
    update_oldest_kept(now);
}

void FileSet::retain_free_in_group(uint64_t avail, uint64_t floor, const char* why) {
    RetentionGroup& g = *opts_.retention_group;
    std::lock_guard<std::mutex> lk(g.mu);
    const size_t self = opts_.writer_index;
    RetentionGroup::Member& me = g.members[self];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const uint64_t now_ns = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    me.checked_ns = now_ns;
    if (g.first_check_ns == 0) g.first_check_ns = now_ns;
    constexpr uint64_t kStale = 1000000000ull;
    auto fresh = [&](size_t k) {
        return k == self ||
               (g.members[k].checked_ns != 0 && now_ns - g.members[k].checked_ns < kStale);
    };
    // A writer not heard from yet may hold the oldest file (an earlier
    // run's): wait for its first check, for a second at most.
    auto awaited = [&](size_t k) {
        return k != self && g.members[k].checked_ns == 0 && now_ns - g.first_check_ns < kStale;
    };
    auto publish = [&]() {
        reap_children();
        RetireCursor c;
        struct stat st;
        me.has_oldest = next_to_retire(c.list, c.at, st);
        me.oldest_mtime_ns =
            me.has_oldest ? int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec : 0;
        me.freed_pending = freed_pending_;
    };
    auto pending = [&]() {
        uint64_t sum = 0;
        for (size_t k = 0; k < g.members.size(); k++)
            if (fresh(k)) sum += g.members[k].freed_pending;
        return sum;
    };
    // The member holding the oldest deletable file of the capture; -1: none;
    // -2: a writer not heard from yet.
    auto oldest = [&]() {
        long best = -1;
        for (size_t k = 0; k < g.members.size(); k++) {
            if (awaited(k)) return -2l;
            const RetentionGroup::Member& m = g.members[k];
            if (!m.has_oldest || !fresh(k)) continue;
            if (best < 0 || m.oldest_mtime_ns < g.members[size_t(best)].oldest_mtime_ns)
                best = long(k);
        }
        return best;
    };
    publish();
    long best = oldest();
    while (avail + pending() < floor && best == long(self)) {
        if (!retire_oldest(-1, why, freed_pending_)) break;
        publish();
        best = oldest();
    }
    if (avail + pending() < floor) {
        if (best == -1 && !g.floor_unmet)
            std::fprintf(stderr,
                         "capd: %s: %llu bytes free, below --retain-free's %llu, and no closed "
                         "file of this capture is left to delete\n",
                         dir_path_.c_str(), static_cast<unsigned long long>(avail + pending()),
                         static_cast<unsigned long long>(floor));
        if (best == -1) g.floor_unmet = true;
    } else {
        g.floor_unmet = false;
    }
}

void FileSet::update_oldest_kept(time_t now) {
    if (!oldest_dirty_ &&
        (oldest_kept_ns_.load(std::memory_order_relaxed) != 0 || now == oldest_tried_))
        return;
    oldest_dirty_ = false;
    oldest_tried_ = now;
    // The oldest file left, else the file being written (its live index).
    std::string name;
    for (const std::deque<std::string>* list : {&earlier_, &closed_})
        if (name.empty() && !list->empty()) name = list->front();
    if (name.empty()) name = hidden_name_;
    if (name.empty()) return;
    std::string leaf;
    int dfd = dir_of(name, leaf);
    if (dfd < 0) return;
    oldest_kept_ns_.store(index_first_ns(dfd, index::index_leaf_for(leaf)),
                          std::memory_order_relaxed);
}

namespace {
std::atomic<bool> g_stop_waiting{false};
static_assert(std::atomic<bool>::is_always_lock_free);
}  // namespace

void FileSet::stop_waiting() { g_stop_waiting.store(true, std::memory_order_relaxed); }

bool FileSet::waiting_stopped() { return g_stop_waiting.load(std::memory_order_relaxed); }

void FileSet::wait_children(int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!children_.empty()) {
        reap_children();
        if (children_.empty() || std::chrono::steady_clock::now() > deadline ||
            g_stop_waiting.load(std::memory_order_relaxed))
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const std::string why = g_stop_waiting.load(std::memory_order_relaxed)
                                ? "the wait was cut short by a second stop signal"
                                : "still running after " + std::to_string(timeout_ms / 1000) + " s";
    for (const Child& c : children_)
        std::fprintf(stderr, "capd: -z '%s %s' (pid %d): %s; not waited for\n",
                     opts_.post_rotate_cmd.c_str(), c.file.c_str(), static_cast<int>(c.pid),
                     why.c_str());
}

}  // namespace linecap::storage
