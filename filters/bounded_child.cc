#include "filters/bounded_child.hh"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace linecap::filters {
namespace {

constexpr int kChildFd = 3;  // the pipe's write end, in the child
constexpr int kCancelPollMs = 20;

/* Writes all of s; the child has nothing better to do on a short write. */
bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

[[noreturn]] void child_main(int out_fd, pid_t parent,
                             const std::function<Result<std::string>()>& work) {
    // Dies with the thread that forked it; a parent gone before prctl took
    // effect is seen through getppid().
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(2);
    // capd's handlers only set a flag: a Ctrl-C to the process group must
    // end the child, not be swallowed by it.
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    if (out_fd != kChildFd) {
        if (dup2(out_fd, kChildFd) < 0) _exit(3);
    }
    // Client sockets and capture files stay the parent's alone.
    (void)syscall(SYS_close_range, kChildFd + 1, ~0u, 0);
    std::string out;
    try {
        Result<std::string> r = work();
        out = r ? "O" + *r : "E" + r.error();
    } catch (const std::exception& e) {
        out = std::string("E") + e.what();
    } catch (...) {
        out = "Eunknown exception";
    }
    _exit(write_all(kChildFd, out.data(), out.size()) ? 0 : 4);
}

std::string seconds(int ms) {
    if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
    return std::to_string(ms) + " ms";
}

}  // namespace

Result<std::string> run_bounded(const std::function<Result<std::string>()>& work,
                                const BoundedOptions& opts, const std::string& what) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return make_error(what + ": pipe: " + std::strerror(errno));
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return make_error(what + ": fork: " + std::strerror(e));
    }
    if (pid == 0) {
        close(fds[0]);
        // dup2 clears O_CLOEXEC on the copy; the original goes at close_range.
        child_main(fds[1], parent, work);
    }
    close(fds[1]);

    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(opts.time_limit_ms);
    std::string out;
    std::string stopped;  // why the child was killed, if it was
    char buf[65536];
    for (;;) {
        if (opts.cancel != nullptr && opts.cancel->load(std::memory_order_relaxed)) {
            stopped = what + " cancelled: capd is stopping";
            break;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            stopped = what + " took longer than " + seconds(opts.time_limit_ms) +
                      " and was stopped (--compile-timeout); simplify it or raise the limit";
            break;
        }
        pollfd p{fds[0], POLLIN, 0};
        int wait_ms = static_cast<int>(std::min<long long>(left.count(), kCancelPollMs));
        int n = ::poll(&p, 1, wait_ms);
        if (n < 0 && errno != EINTR) {
            stopped = what + ": poll: " + std::strerror(errno);
            break;
        }
        if (n <= 0) continue;
        ssize_t got = ::read(fds[0], buf, sizeof buf);
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            stopped = what + ": read: " + std::strerror(errno);
            break;
        }
        if (got == 0) break;  // the child is done
        if (out.size() + static_cast<size_t>(got) > opts.max_output) {
            stopped =
                what + ": output larger than " + std::to_string(opts.max_output >> 20) + " MiB";
            break;
        }
        out.append(buf, static_cast<size_t>(got));
    }
    close(fds[0]);
    if (!stopped.empty()) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!stopped.empty()) return make_error(stopped);
    if (WIFSIGNALED(status))
        return make_error(what + ": the compiling process died (signal " +
                          std::to_string(WTERMSIG(status)) + ")");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out.empty())
        return make_error(what + ": the compiling process failed (exit " +
                          std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
    if (out[0] == 'E') return make_error(out.substr(1));
    return out.substr(1);
}

}  // namespace linecap::filters
