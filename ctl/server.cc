#include "ctl/server.hh"

#include <fcntl.h>
#include <grp.h>
#include <malloc.h>
#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>

namespace linecap::ctl {
namespace {

constexpr size_t kTrimAfterReply = 1u << 20;
constexpr size_t kReadChunk = 16384;
// Log lines about clients: at most this many per window, then one count.
constexpr unsigned kLogLinesPerWindow = 20;
constexpr long long kLogWindowMs = 10000;

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

std::string mib(size_t bytes) {
    if (bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
    if (bytes % (1u << 10) == 0) return std::to_string(bytes >> 10) + " KiB";
    return std::to_string(bytes) + " bytes";
}

}  // namespace

nlohmann::json ControlCounters::to_json() const {
    return {{"clients", clients},
            {"root_clients", root_clients},
            {"accepted", accepted},
            {"refused_busy", refused_busy},
            {"refused_permission", refused_permission},
            {"idle_timeouts", idle_timeouts},
            {"oversized_requests", oversized_requests},
            {"read_pauses", read_pauses},
            {"oversized_replies", oversized_replies},
            {"replies_refused_memory", replies_refused_memory},
            {"peer_gone", peer_gone},
            {"pending_reply_bytes", pending_reply_bytes},
            {"pending_reply_bytes_peak", pending_reply_bytes_peak},
            {"deferred", deferred}};
}

/* Completions of deferred replies, posted from any thread. */
struct Deferred::Queue {
    std::mutex mu;
    std::deque<std::pair<uint64_t, std::function<Response()>>> items;
    int wake_fd = -1;
    bool closed = false;  // the server is gone
};

Deferred::~Deferred() {
    if (q_)
        complete([] {
            return Response::error(EIO,
                                   "internal error: the request was dropped without an answer");
        });
}

void Deferred::complete(std::function<Response()> answer) {
    std::shared_ptr<Queue> q = std::move(q_);
    if (!q) return;
    std::lock_guard<std::mutex> lock(q->mu);
    if (q->closed) return;
    q->items.emplace_back(client_, std::move(answer));
    uint64_t one = 1;
    (void)!::write(q->wake_fd, &one, sizeof one);
}

Status check_listen(const ServerOptions& opts) {
    if (!opts.group.empty() && !getgrnam(opts.group.c_str()))
        return make_error("--ctl-group: no such group '" + opts.group + "'");
    struct sockaddr_un addr {};
    if (opts.path.size() >= sizeof(addr.sun_path))
        return make_error("--ctl: socket path too long: " + opts.path);
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, opts.path.c_str());
    // Only the default socket's own directory is made (by listen, root-owned,
    // 0755); a --ctl path names a directory that must exist, so capd never
    // makes a tree of root-owned directories wherever it is told.
    std::filesystem::path parent = std::filesystem::path(opts.path).parent_path();
    struct stat st;
    if (opts.path != kDefaultSocket && !parent.empty() &&
        (stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)))
        return make_error("--ctl " + opts.path + ": no such directory " + parent.string());
    // A socket file left by a capd that died is replaced; a live one is not.
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0) {
        bool live = connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
        close(probe);
        if (live) return make_error("--ctl " + opts.path + ": another capd is listening there");
    }
    if (lstat(opts.path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
        return make_error("--ctl " + opts.path + ": exists and is not a socket");
    return Status::success();
}

Result<std::unique_ptr<ControlServer>> ControlServer::listen(const ServerOptions& opts,
                                                             HandlerTable handlers,
                                                             AsyncHandlerTable async_handlers) {
    Status ok = check_listen(opts);
    if (!ok) return make_error(ok.error());
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
    std::strcpy(addr.sun_path, opts.path.c_str());
    if (opts.path == kDefaultSocket) {
        std::filesystem::path parent = std::filesystem::path(opts.path).parent_path();
        if (mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST)
            return make_error("--ctl " + opts.path + ": cannot make " + parent.string() + ": " +
                              std::strerror(errno));
    }
    struct stat st;
    if (lstat(opts.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(opts.path.c_str());

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
    int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake < 0) {
        int e = errno;
        close(fd);
        unlink(opts.path.c_str());
        return make_error(std::string("control socket: eventfd: ") + strerror(e));
    }
    return std::unique_ptr<ControlServer>(new ControlServer(
        opts, std::move(handlers), std::move(async_handlers), fd, has_group ? gid : 0, wake));
}

ControlServer::ControlServer(ServerOptions opts, HandlerTable handlers, AsyncHandlerTable async,
                             int fd, gid_t gid, int wake_fd)
    : opts_(std::move(opts)),
      handlers_(std::move(handlers)),
      async_(std::move(async)),
      listen_fd_(fd),
      gid_(gid),
      has_group_(!opts_.group.empty()),
      wake_fd_(wake_fd),
      completions_(std::make_shared<Deferred::Queue>()),
      counters_(opts_.counters != nullptr ? opts_.counters : &own_counters_) {
    completions_->wake_fd = wake_fd_;
    opts_.root_reserve = std::min(opts_.root_reserve, opts_.max_clients);
}

ControlServer::~ControlServer() {
    {
        // Answers still to come are dropped; their functions die here, on
        // the thread that owned the server.
        std::deque<std::pair<uint64_t, std::function<Response()>>> dropped;
        std::lock_guard<std::mutex> lock(completions_->mu);
        completions_->closed = true;
        dropped.swap(completions_->items);
    }
    for (auto& c : clients_) close(c->fd);
    close(listen_fd_);
    close(wake_fd_);
    unlink(opts_.path.c_str());
}

Result<uid_t> ControlServer::peer_allowed(int fd) const {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return make_error(EACCES, "cannot read peer credentials");
    if (cred.uid == 0 || cred.uid == geteuid()) return cred.uid;
    if (has_group_ && user_in_group(cred.uid, cred.gid, gid_)) return cred.uid;
    return make_error(EACCES, "permission denied: uid " + std::to_string(cred.uid) +
                                  " is not root" +
                                  (has_group_ ? " and not in group '" + opts_.group + "'" : "") +
                                  " (capd --ctl-group names the group allowed to control it)");
}

void ControlServer::log(const std::string& line) {
    if (!opts_.log) return;
    long long now = now_ms();
    if (now - log_window_ms_ > kLogWindowMs) {
        if (log_suppressed_ > 0)
            std::fprintf(stderr, "capd: control: %u more messages like these suppressed\n",
                         log_suppressed_);
        log_window_ms_ = now;
        log_lines_ = log_suppressed_ = 0;
    }
    if (log_lines_ < kLogLinesPerWindow) {
        log_lines_++;
        std::fprintf(stderr, "capd: control: %s\n", line.c_str());
    } else {
        log_suppressed_++;
    }
}

void ControlServer::update_pending() {
    size_t pending = 0;
    uint64_t admitted = 0, root = 0, deferred = 0;
    for (const auto& c : clients_) {
        pending += c->out.size();
        if (c->id == 0) continue;  // refused: being told why
        admitted++;
        root += c->uid == 0;
        deferred += c->awaiting;
    }
    pending_ = pending;
    counters_->pending_reply_bytes = pending;
    counters_->pending_reply_bytes_peak =
        std::max<uint64_t>(counters_->pending_reply_bytes_peak, pending);
    counters_->clients = admitted;
    counters_->root_clients = root;
    counters_->deferred = deferred;
}

void ControlServer::accept_clients() {
    for (int i = 0; i < 16; i++) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        auto c = std::make_unique<Client>();
        c->id = 0;
        c->fd = fd;
        c->last_request_ms = now_ms();
        Result<uid_t> peer = peer_allowed(fd);
        if (!peer) {
            counters_->refused_permission++;
            log("refused a connection: " + peer.error());
            c->out = encode_response(Response::error(peer.failure()));
            c->close_after_write = true;
        } else {
            const uid_t uid = *peer;
            c->uid = uid;
            unsigned total = 0, others = 0;
            for (const auto& x : clients_)
                if (x->id != 0) {
                    total++;
                    others += x->uid != 0;
                }
            // Root may take every slot; everyone else leaves root_reserve.
            const unsigned others_max = opts_.max_clients - opts_.root_reserve;
            if (total >= opts_.max_clients || (uid != 0 && others >= others_max)) {
                counters_->refused_busy++;
                std::string msg = uid != 0 && total < opts_.max_clients
                                      ? "too many control clients: " + std::to_string(others) +
                                            " connections of users other than root (" +
                                            std::to_string(opts_.root_reserve) +
                                            " more are kept for root); try later"
                                      : "too many control clients (" +
                                            std::to_string(opts_.max_clients) + "); try later";
                log("refused a connection of uid " + std::to_string(uid) + ": " + msg);
                c->out = encode_response(Response::error(EBUSY, msg));
                c->close_after_write = true;
            } else {
                c->id = next_id_++;
                counters_->accepted++;
            }
        }
        clients_.push_back(std::move(c));
        if (clients_.back()->close_after_write) write_client(*clients_.back());
    }
}

void ControlServer::queue_reply(Client& c, const Response& resp) {
    std::string line = encode_response(resp);
    if (line.size() > opts_.max_reply_bytes) {
        counters_->oversized_replies++;
        log("a reply of " + std::to_string(line.size()) + " bytes to uid " + std::to_string(c.uid) +
            " was replaced by an error (max " + mib(opts_.max_reply_bytes) + ")");
        line = encode_response(Response::error(
            E2BIG, "the reply is " + std::to_string(line.size()) + " bytes, more than the " +
                       mib(opts_.max_reply_bytes) + " a control reply may take; ask for less"));
    } else if (pending_ + line.size() > opts_.max_total_pending_bytes) {
        counters_->replies_refused_memory++;
        log("a reply of " + std::to_string(line.size()) + " bytes to uid " + std::to_string(c.uid) +
            " was refused: " + std::to_string(pending_) + " bytes of replies are unread (max " +
            mib(opts_.max_total_pending_bytes) + ")");
        line = encode_response(Response::error(
            EBUSY, "control clients have " + std::to_string(pending_) +
                       " bytes of replies unread, near the " + mib(opts_.max_total_pending_bytes) +
                       " capd keeps for them; try later"));
    }
    const size_t before = c.out.size();
    c.out += line;
    pending_ += line.size();
    line = std::string();
    // A large reply (a live diagnosis) built a large JSON tree on the heap:
    // give that memory back rather than keep the peak resident for good.
    if (c.out.size() - before > kTrimAfterReply) malloc_trim(0);
    if (!c.read_paused && c.out.size() > opts_.read_pause_bytes) {
        c.read_paused = true;
        counters_->read_pauses++;
        log("uid " + std::to_string(c.uid) + " has " + std::to_string(c.out.size()) +
            " bytes of replies unread: its requests wait until it reads (dropped after " +
            std::to_string(opts_.idle_timeout_ms / 1000) + " s without progress)");
    }
}

void ControlServer::dispatch(Client& c, std::string_view line) {
    Result<Request> parsed = parse_request(line);
    if (!parsed) {
        queue_reply(c, Response::error(parsed.failure()));
        return;
    }
    Request& req = *parsed;
    Response resp;
    req.peer_uid = c.uid;
    update_pending();  // a status handler shows the counters as of now
    auto a = async_.find(req.cmd);
    if (a != async_.end()) {
        c.awaiting = true;
        try {
            a->second(req, Deferred(completions_, c.id));
        } catch (const std::exception& e) {
            // The Deferred, destroyed on the way out, answers EIO.
            log(std::string("handler for '") + req.cmd + "' failed: " + e.what());
        }
        return;
    }
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
    queue_reply(c, resp);
}

void ControlServer::parse_requests(Client& c) {
    size_t nl;
    while (!c.awaiting && !c.read_paused && !c.close_after_write &&
           (nl = c.in.find('\n')) != std::string::npos) {
        if (nl > kMaxLine) break;
        std::string line = c.in.substr(0, nl);
        c.in.erase(0, nl + 1);
        c.last_request_ms = now_ms();
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) dispatch(c, line);
    }
    if (c.in.size() > kMaxLine && c.in.find('\n') > kMaxLine && !c.close_after_write) {
        counters_->oversized_requests++;
        log("uid " + std::to_string(c.uid) + " sent a request line longer than " +
            std::to_string(kMaxLine) + " bytes: disconnected");
        queue_reply(c, Response::error(E2BIG, "request line longer than " +
                                                  std::to_string(kMaxLine) + " bytes"));
        c.in.clear();
        c.close_after_write = true;
    }
}

void ControlServer::read_client(Client& c) {
    char buf[kReadChunk];
    // Stops reading as soon as the client has a reply outstanding or too
    // many unread: what it sends meanwhile waits in the socket, not here.
    while (!c.awaiting && !c.read_paused && !c.close_after_write) {
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
        c.in.append(buf, static_cast<size_t>(n));
        parse_requests(c);
    }
}

void ControlServer::write_client(Client& c) {
    while (!c.out.empty()) {
        ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            counters_->peer_gone++;
            c.out.clear();  // peer gone mid-reply
            c.close_after_write = true;
            return;
        }
        c.out.erase(0, static_cast<size_t>(n));
        // A client that reads is not idle, however long its reply.
        c.last_request_ms = now_ms();
    }
    if (c.read_paused && c.out.size() <= opts_.read_pause_bytes) c.read_paused = false;
    if (c.out.empty() && c.out.capacity() > kTrimAfterReply) std::string().swap(c.out);
}

void ControlServer::post(std::function<void()> work) {
    // Client id 0 is never a connection: the answer goes to no one.
    Deferred(completions_, 0).complete([work = std::move(work)] {
        work();
        return Response::ok("OK");
    });
}

void ControlServer::run_completions() {
    uint64_t n;
    while (::read(wake_fd_, &n, sizeof n) > 0) {}
    std::deque<std::pair<uint64_t, std::function<Response()>>> items;
    {
        std::lock_guard<std::mutex> lock(completions_->mu);
        items.swap(completions_->items);
    }
    for (auto& [id, answer] : items) {
        Response r;
        try {
            r = answer();  // runs even when the client has gone: the change stands
        } catch (const std::exception& e) {
            r = Response::error(EIO, std::string("internal error: ") + e.what());
        }
        auto it = std::find_if(clients_.begin(), clients_.end(),
                               [id = id](const auto& c) { return c->id == id; });
        if (it == clients_.end() || (*it)->close_after_write) continue;
        Client& c = **it;
        c.awaiting = false;
        c.last_request_ms = now_ms();
        queue_reply(c, r);
        parse_requests(c);  // what it pipelined meanwhile
        write_client(c);
    }
}

void ControlServer::drop(Client& c, const std::string& why) {
    log("uid " + std::to_string(c.uid) + ": " + why);
    close(c.fd);
    c.fd = -1;
}

void ControlServer::poll(int timeout_ms) {
    std::vector<struct pollfd> fds;
    fds.push_back({listen_fd_, POLLIN, 0});
    fds.push_back({wake_fd_, POLLIN, 0});
    for (auto& c : clients_) {
        bool want_in = !c->close_after_write && !c->awaiting && !c->read_paused;
        fds.push_back({c->fd,
                       static_cast<short>((want_in ? POLLIN : 0) | (c->out.empty() ? 0 : POLLOUT)),
                       0});
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n > 0) {
        const size_t known = clients_.size();
        for (size_t i = 0; i < known; i++) {
            Client& c = *clients_[i];
            short ev = fds[i + 2].revents;
            // A client that is not being read from (waiting for a deferred
            // reply, or too many unread) and hangs up is seen here; poll()
            // would report the hang-up again on every turn.
            if ((ev & (POLLHUP | POLLERR)) && (c.awaiting || c.read_paused) &&
                !c.close_after_write) {
                counters_->peer_gone++;
                c.in.clear();
                c.out.clear();
                c.close_after_write = true;
                continue;
            }
            if (ev & (POLLIN | POLLHUP | POLLERR)) read_client(c);
            if (!c.out.empty()) write_client(c);
            // Requests left unparsed while it was paused.
            if (!c.read_paused && !c.awaiting && c.in.find('\n') != std::string::npos) {
                parse_requests(c);
                if (!c.out.empty()) write_client(c);
            }
        }
        if (fds[1].revents & POLLIN) run_completions();
        if (fds[0].revents & POLLIN) accept_clients();
    }
    long long now = now_ms();
    for (auto it = clients_.begin(); it != clients_.end();) {
        Client& c = **it;
        bool idle = !c.awaiting && now - c.last_request_ms > opts_.idle_timeout_ms;
        if (c.close_after_write && c.out.empty()) {
            close(c.fd);
            it = clients_.erase(it);
        } else if (idle) {
            if (c.id != 0) {
                counters_->idle_timeouts++;
                drop(c, c.out.empty()
                            ? "no complete request for " +
                                  std::to_string(opts_.idle_timeout_ms / 1000) + " s: disconnected"
                            : std::to_string(c.out.size()) + " bytes of replies unread for " +
                                  std::to_string(opts_.idle_timeout_ms / 1000) +
                                  " s: disconnected");
            } else {
                close(c.fd);  // a refused client that does not read why
            }
            it = clients_.erase(it);
        } else {
            ++it;
        }
    }
    update_pending();
}

void ControlServer::run() {
    while (!stopping_.load(std::memory_order_relaxed)) poll(100);
}

void ControlServer::stop() {
    stopping_.store(true);
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
}

}  // namespace linecap::ctl
