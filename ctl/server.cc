#include "ctl/server.hh"

#include <fcntl.h>
#include <malloc.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace linecap::ctl {
namespace {

constexpr size_t kMaxReplyBacklog = 32u << 20;
constexpr size_t kTrimAfterReply = 1u << 20;

long long now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

bool user_in_group(uid_t uid, gid_t primary, gid_t group) {
    if (primary == group) return true;
    struct passwd* pw = getpwuid(uid);
    if (!pw) return false;
    int n = 64;
    std::vector<gid_t> groups(n);
    if (getgrouplist(pw->pw_name, primary, groups.data(), &n) < 0) {
        groups.resize(n);
        if (getgrouplist(pw->pw_name, primary, groups.data(), &n) < 0) return false;
    }
    for (int i = 0; i < n; i++)
        if (groups[i] == group) return true;
    return false;
}

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::listen(const ServerOptions& opts,
                                                             HandlerTable handlers) {
    gid_t gid = 0;
    bool has_group = false;
    if (!opts.group.empty()) {
        struct group* g = getgrnam(opts.group.c_str());
        if (!g) return make_error("--ctl-group: no such group '" + opts.group + "'");
        gid = g->gr_gid;
        has_group = true;
    }
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (opts.path.size() >= sizeof(addr.sun_path))
        return make_error("--ctl: socket path too long: " + opts.path);
    std::strcpy(addr.sun_path, opts.path.c_str());

    std::error_code ec;
    std::filesystem::path parent = std::filesystem::path(opts.path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);

    // A socket file left by a capd that died is replaced; a live one is not.
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        if (connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
            close(probe);
            return make_error("--ctl " + opts.path + ": another capd is listening there");
        }
        close(probe);
    }
    struct stat st;
    if (lstat(opts.path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return make_error("--ctl " + opts.path + ": exists and is not a socket");
        unlink(opts.path.c_str());
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(std::string("control socket: ") + strerror(errno));
    mode_t old = umask(0117);  // bind creates the file 0660
    int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    umask(old);
    if (rc != 0) {
        int e = errno;
        close(fd);
        return make_error("--ctl " + opts.path + ": " + strerror(e));
    }
    if (chmod(opts.path.c_str(), 0660) != 0 ||
        (has_group && chown(opts.path.c_str(), 0, gid) != 0)) {
        int e = errno;
        close(fd);
        unlink(opts.path.c_str());
        return make_error("--ctl " + opts.path + ": setting owner and mode: " + strerror(e));
    }
    if (::listen(fd, 64) != 0) {
        int e = errno;
        close(fd);
        unlink(opts.path.c_str());
        return make_error("--ctl " + opts.path + ": listen: " + strerror(e));
    }
    return std::unique_ptr<ControlServer>(
        new ControlServer(opts, std::move(handlers), fd, has_group ? gid : 0));
}

ControlServer::ControlServer(ServerOptions opts, HandlerTable handlers, int fd, gid_t gid)
    : opts_(std::move(opts)),
      handlers_(std::move(handlers)),
      listen_fd_(fd),
      gid_(gid),
      has_group_(!opts_.group.empty()) {}

ControlServer::~ControlServer() {
    for (auto& c : clients_) close(c->fd);
    close(listen_fd_);
    unlink(opts_.path.c_str());
}

bool ControlServer::peer_allowed(int fd, std::string& why, long long& uid) const {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        why = "cannot read peer credentials";
        return false;
    }
    uid = cred.uid;
    if (cred.uid == 0 || cred.uid == geteuid()) return true;
    if (has_group_ && user_in_group(cred.uid, cred.gid, gid_)) return true;
    why = "permission denied: uid " + std::to_string(cred.uid) + " is not root" +
          (has_group_ ? " and not in group '" + opts_.group + "'" : "") +
          " (capd --ctl-group names the group allowed to control it)";
    return false;
}

void ControlServer::accept_clients() {
    for (int i = 0; i < 16; i++) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        auto c = std::make_unique<Client>(Client{fd, {}, {}, false, now_ms()});
        std::string why;
        if (!peer_allowed(fd, why, c->peer_uid)) {
            c->out = encode_response(Response::error(EACCES, why));
            c->close_after_write = true;
        } else if (clients_.size() >= opts_.max_clients) {
            c->out = encode_response(
                Response::error(EBUSY, "too many control clients (" +
                                           std::to_string(opts_.max_clients) + "); try later"));
            c->close_after_write = true;
        }
        clients_.push_back(std::move(c));
        if (clients_.back()->close_after_write) write_client(*clients_.back());
    }
}

void ControlServer::dispatch(Client& c, std::string_view line) {
    Request req;
    ParseFailure err;
    Response resp;
    if (!parse_request(line, req, err)) {
        resp = Response::error(err.status, err.message);
    } else {
        req.peer_uid = c.peer_uid;
        auto h = handlers_.find(req.cmd);
        if (h == handlers_.end()) {
            resp = Response::error(ENOSYS, "unknown command '" + req.cmd + "'");
        } else {
            try {
                resp = h->second(req);
            } catch (const std::exception& e) {
                // A handler bug or a bad argument type must not end the daemon.
                resp = Response::error(EINVAL, std::string("bad arguments: ") + e.what());
            }
        }
    }
    const size_t before = c.out.size();
    c.out += encode_response(resp);
    resp = Response{};
    // A large reply (a live diagnosis) built a large JSON tree on the heap:
    // give that memory back rather than keep the peak resident for good.
    if (c.out.size() - before > kTrimAfterReply) malloc_trim(0);
    // A client that sends requests but never reads its answers is cut off
    // before its backlog grows without bound (one large stats reply fits).
    if (c.out.size() > kMaxReplyBacklog) {
        c.out.clear();
        c.close_after_write = true;
    }
}

void ControlServer::read_client(Client& c) {
    char buf[16384];
    for (;;) {
        ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
        if (n == 0) {
            c.close_after_write = true;
            c.in.clear();
            c.out.clear();  // nobody to read it
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            c.close_after_write = true;
            c.out.clear();
            return;
        }
        c.last_activity_ms = now_ms();
        c.in.append(buf, static_cast<size_t>(n));
        size_t nl;
        while ((nl = c.in.find('\n')) != std::string::npos) {
            if (nl > kMaxLine) break;
            std::string line = c.in.substr(0, nl);
            c.in.erase(0, nl + 1);
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (!line.empty()) dispatch(c, line);
        }
        if (c.in.size() > kMaxLine) {
            c.out += encode_response(Response::error(
                E2BIG, "request line longer than " + std::to_string(kMaxLine) + " bytes"));
            c.in.clear();
            c.close_after_write = true;
            return;
        }
    }
}

void ControlServer::write_client(Client& c) {
    while (!c.out.empty()) {
        ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            c.out.clear();  // peer gone mid-reply
            c.close_after_write = true;
            return;
        }
        c.out.erase(0, static_cast<size_t>(n));
    }
}

void ControlServer::poll(int timeout_ms) {
    std::vector<struct pollfd> fds;
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& c : clients_)
        fds.push_back({c->fd, static_cast<short>((c->close_after_write ? 0 : POLLIN) |
                                                 (c->out.empty() ? 0 : POLLOUT)),
                       0});
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n > 0) {
        for (size_t i = 1; i < fds.size(); i++) {
            Client& c = *clients_[i - 1];
            if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_client(c);
            if (!c.out.empty()) write_client(c);
        }
        if (fds[0].revents & POLLIN) accept_clients();
    }
    long long now = now_ms();
    for (auto it = clients_.begin(); it != clients_.end();) {
        Client& c = **it;
        bool idle = c.out.empty() && now - c.last_activity_ms > opts_.idle_timeout_ms;
        if ((c.close_after_write && c.out.empty()) || idle) {
            close(c.fd);
            it = clients_.erase(it);
        } else {
            ++it;
        }
    }
}

}  // namespace linecap::ctl
