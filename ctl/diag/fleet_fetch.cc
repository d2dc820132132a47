#include "ctl/diag/fleet_fetch.hh"

#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace linecap::ctl::diag {

namespace {

std::string read_all(int fd) {
    std::string s;
    char buf[4096];
    off_t at = 0;
    for (;;) {
        const ssize_t n = ::pread(fd, buf, sizeof buf, at);
        if (n <= 0) break;
        s.append(buf, size_t(n));
        at += n;
    }
    return s;
}

bool starts_with(const std::string& s, const std::string& p) {
    return s.compare(0, p.size(), p) == 0;
}

/* capq's per-host line: "capq fleet: HOST...: STATE", not its summary
 * ("K of M hosts ...") nor "the catalogue names N hosts". */
bool is_host_line(const std::string& line) {
    static const std::string kPrefix = "capq fleet: ";
    if (!starts_with(line, kPrefix)) return false;
    const std::string rest = line.substr(kPrefix.size());
    if (starts_with(rest, "the catalogue names")) return false;
    return rest.find(" hosts answered completely") == std::string::npos;
}

}  // namespace

FleetAnswer::FleetAnswer(FleetAnswer&& o) noexcept
    : label(std::move(o.label)),
      fd(o.fd),
      path(std::move(o.path)),
      status(o.status),
      host_line(std::move(o.host_line)),
      errors(std::move(o.errors)) {
    o.fd = -1;
}

FleetAnswer::~FleetAnswer() {
    if (fd >= 0) ::close(fd);
}

std::string find_capq() {
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        std::string dir = self;
        dir = dir.substr(0, dir.rfind('/') + 1);
        for (const std::string& c : {dir + "capq", dir + "../query/capq", dir + "../../query/capq"})
            if (::access(c.c_str(), X_OK) == 0) return c;
    }
    return "capq";
}

Result<std::vector<FleetAnswer>> fetch_answers(const std::vector<std::string>& labels,
                                               const std::vector<std::vector<std::string>>& args) {
    const std::string capq = find_capq();
    std::vector<FleetAnswer> out(args.size());
    std::vector<int> errs(args.size(), -1);
    std::vector<pid_t> pids(args.size(), -1);
    auto cleanup = [&] {
        for (size_t i = 0; i < args.size(); i++) {
            if (pids[i] > 0) {
                ::kill(pids[i], SIGKILL);
                ::waitpid(pids[i], nullptr, 0);
            }
            if (errs[i] >= 0) ::close(errs[i]);
        }
    };
    for (size_t i = 0; i < args.size(); i++) {
        FleetAnswer& a = out[i];
        a.label = i < labels.size() ? labels[i] : "";
        a.fd = ::memfd_create("capctl-compare-answer", MFD_CLOEXEC);
        errs[i] = ::memfd_create("capctl-compare-report", MFD_CLOEXEC);
        if (a.fd < 0 || errs[i] < 0) {
            const int e = errno;
            cleanup();
            return make_error(e, std::string("memfd_create: ") + std::strerror(e));
        }
        a.path = "/proc/self/fd/" + std::to_string(a.fd);
        std::vector<std::string> words = {capq, "-w", "-"};
        words.insert(words.end(), args[i].begin(), args[i].end());
        std::vector<char*> argv;
        for (auto& w : words) argv.push_back(w.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, a.fd, 1);
        posix_spawn_file_actions_adddup2(&fa, errs[i], 2);
        const int rc =
            capq.find('/') == std::string::npos
                ? ::posix_spawnp(&pids[i], capq.c_str(), &fa, nullptr, argv.data(), environ)
                : ::posix_spawn(&pids[i], capq.c_str(), &fa, nullptr, argv.data(), environ);
        posix_spawn_file_actions_destroy(&fa);
        if (rc != 0) {
            pids[i] = -1;
            cleanup();
            return make_error(rc, capq + ": " + std::strerror(rc));
        }
    }
    for (size_t i = 0; i < args.size(); i++) {
        int ws = 0;
        while (::waitpid(pids[i], &ws, 0) < 0 && errno == EINTR) {}
        pids[i] = -1;
        FleetAnswer& a = out[i];
        a.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
        const std::string text = read_all(errs[i]);
        ::close(errs[i]);
        errs[i] = -1;
        size_t at = 0;
        while (at < text.size()) {
            size_t nl = text.find('\n', at);
            if (nl == std::string::npos) nl = text.size();
            const std::string line = text.substr(at, nl - at);
            at = nl + 1;
            if (line.empty()) continue;
            if (is_host_line(line)) {
                if (a.host_line.empty()) a.host_line = line.substr(std::strlen("capq fleet: "));
            } else if (!starts_with(line, "capq fleet: ")) {
                a.errors += line + "\n";
            }
        }
    }
    return out;
}

}  // namespace linecap::ctl::diag
