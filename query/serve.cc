#include "query/serve.hh"

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "query/beneath.hh"
#include "query/commands.hh"
#include "query/no_names.hh"

namespace linecap::query {

namespace {

constexpr size_t kMaxHead = 1 << 20;
constexpr int kHeadSeconds = 10;
constexpr int kSendSeconds = 30;
constexpr size_t kMaxFiles = 100000;
constexpr size_t kMaxExpression = 16384;

int fail(const std::string& msg) {
    std::fprintf(stderr, "capq: %s\n", msg.c_str());
    return 1;
}

std::string quoted(const std::string& s) {
    std::string out = "\"";
    for (char c : s) out += (c == '"' || c == '\\' || (unsigned char)c < 0x20) ? '?' : c;
    return out + "\"";
}

/* The canonical path, or "" when it does not exist (errno kept). */
std::string canonical(const std::string& p) {
    char* r = ::realpath(p.c_str(), nullptr);
    if (r == nullptr) return "";
    std::string s = r;
    std::free(r);
    return s;
}

/* The served directory that path lies inside as written, and the rest of
 * the path below it; -1 when none. */
int served_dir_of(const std::string& path, const std::vector<std::string>& dirs, std::string& rel) {
    for (size_t i = 0; i < dirs.size(); i++) {
        const std::string& d = dirs[i];
        if (path.size() > d.size() + 1 && path.compare(0, d.size(), d) == 0 &&
            path[d.size()] == '/') {
            rel = path.substr(d.size() + 1);
            return int(i);
        }
    }
    return -1;
}

struct Request {
    uint64_t since_ns = 0, until_ns = UINT64_MAX;
    std::string expr;
    std::vector<OpenedInput> files;  // file=, opened (the handles own the descriptors)
    bool files_given = false;
};

struct Reply {
    int status = 0;
    std::string line;
};

Result<uint64_t> parse_ns(const std::string& v) {
    if (v.empty() || v.size() > 20 || v.find_first_not_of("0123456789") != v.npos)
        return make_error("'" + v + "': expected nanoseconds since the epoch");
    errno = 0;
    const unsigned long long n = std::strtoull(v.c_str(), nullptr, 10);
    if (errno == ERANGE) return make_error("'" + v + "': too large");
    return uint64_t(n);
}

/* Parses the request head; a Reply with a status is the answer. */
Reply parse_request(const std::string& head, const ServeOptions& o,
                    const std::vector<std::string>& canon_dirs,
                    const std::vector<std::shared_ptr<const FdHandle>>& dirs, Request& rq,
                    size_t& missing) {
    const auto eol = head.find("\r\n");
    const std::string line = head.substr(0, eol);
    const auto sp1 = line.find(' ');
    const auto sp2 = line.rfind(' ');
    if (sp1 == line.npos || sp2 == sp1) return {400, "malformed request line"};
    const std::string method = line.substr(0, sp1);
    const std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string version = line.substr(sp2 + 1);
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return {400, "HTTP/1.x only"};
    if (method != "GET") return {405, "GET only"};
    const auto q = target.find('?');
    if (target.substr(0, q) != "/v1/packets") return {404, "no such resource: GET /v1/packets"};
    const std::string query = q == target.npos ? "" : target.substr(q + 1);
    size_t at = 0;
    while (at < query.size()) {
        size_t amp = query.find('&', at);
        if (amp == query.npos) amp = query.size();
        const std::string kv = query.substr(at, amp - at);
        at = amp + 1;
        if (kv.empty()) continue;
        const auto eq = kv.find('=');
        const std::string key = kv.substr(0, eq);
        auto val = url_decode(eq == kv.npos ? "" : kv.substr(eq + 1));
        if (!val) return {400, key + ": " + val.error()};
        if (key == "since" || key == "until") {
            auto n = parse_ns(*val);
            if (!n) return {400, key + ": " + n.error()};
            (key == "since" ? rq.since_ns : rq.until_ns) = *n;
        } else if (key == "expr") {
            if (val->size() > kMaxExpression) return {400, "expr over 16 KiB"};
            rq.expr = *val;
        } else if (key == "file") {
            rq.files_given = true;
            if (rq.files.size() >= kMaxFiles) return {400, "too many file= parameters"};
            const std::string& p = *val;
            // Lexically inside a served directory (as given or resolved),
            // with no "." or ".." component; the rest is the kernel's to
            // check as it opens (beneath.hh).
            const bool dots = p.find("/./") != p.npos || p.find("/../") != p.npos ||
                              p.ends_with("/.") || p.ends_with("/..");
            std::string rel;
            int di = p.empty() || p[0] != '/' || dots ? -1 : served_dir_of(p, o.dirs, rel);
            if (di < 0 && !dots && !p.empty() && p[0] == '/')
                di = served_dir_of(p, canon_dirs, rel);
            if (di < 0) return {403, "file= outside the served directories: " + p};
            // Opened once, here, beneath the served directory's descriptor
            // and through no symbolic link: the file checked is the file
            // read, and its index is opened from the same directory.
            const auto slash = rel.rfind('/');
            std::shared_ptr<const FdHandle> dir = dirs[size_t(di)];
            if (slash != rel.npos) {
                const int dfd = open_beneath(dir->fd, rel.substr(0, slash), O_PATH | O_DIRECTORY);
                dir = dfd >= 0 ? std::make_shared<const FdHandle>(dfd) : nullptr;
            }
            if (dir) {
                const int fd =
                    open_beneath(dir->fd, slash == rel.npos ? rel : rel.substr(slash + 1),
                                 O_RDONLY | O_NONBLOCK);
                if (fd >= 0) {
                    auto file = std::make_shared<const FdHandle>(fd);
                    struct stat st;
                    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
                        return {403, "file= " + p + ": not a regular file"};
                    rq.files.push_back(
                        {canon_dirs[size_t(di)] + "/" + rel, std::move(file), std::move(dir)});
                    continue;
                }
            }
            if (errno == ENOENT) {
                missing++;
                continue;
            }
            if (errno == ELOOP || errno == EXDEV)
                return {403, "file= " + p + ": a symbolic link on the way, not followed"};
            if (errno == EACCES || errno == ENOTDIR)
                return {403, "file= " + p + ": " + std::strerror(errno)};
            return {500, "file= " + p + ": " + std::strerror(errno)};
        } else {
            return {400, "unknown parameter '" + key + "' (since, until, expr, file)"};
        }
    }
    if (rq.since_ns > rq.until_ns) return {400, "since is after until"};
    return {};
}

Status send_text(SSL* ssl, int status, const std::string& line) {
    const char* reason = status == 400   ? "Bad Request"
                         : status == 403 ? "Forbidden"
                         : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed"
                         : status == 431 ? "Request Header Fields Too Large"
                                         : "Internal Server Error";
    const std::string body = line + "\n";
    const std::string msg =
        "HTTP/1.1 " + std::to_string(status) + " " + reason +
        "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body;
    return ssl_write_all(ssl, msg.data(), msg.size());
}

/* A connection still in its handshake or request head, for the watchdog. */
struct Slot {
    std::atomic<int> fd{-1};
    std::atomic<int64_t> deadline_ms{INT64_MAX};
};

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

class Server {
public:
    Server(const ServeOptions& o, std::vector<std::string> canon,
           std::vector<std::shared_ptr<const FdHandle>> dirs, SslCtx ctx, int lfd)
        : o_(o),
          canon_(std::move(canon)),
          dirs_(std::move(dirs)),
          ctx_(std::move(ctx)),
          lfd_(lfd),
          slots_(o.max_clients) {}

    /* Once a second: a connection past its head deadline (a client sending
     * its handshake or request a byte at a time) is shut down, so its
     * blocking read returns and the thread is free again. */
    void watchdog() {
        for (;;) {
            std::this_thread::sleep_for(std::chrono::seconds(1));
            const int64_t now = now_ms();
            for (auto& s : slots_) {
                const int fd = s.fd.load();
                if (fd >= 0 && now > s.deadline_ms.load()) ::shutdown(fd, SHUT_RDWR);
            }
        }
    }

    void accept_loop(size_t slot) {
        Slot& sl = slots_[slot];
        for (;;) {
            sockaddr_storage peer{};
            socklen_t len = sizeof peer;
            const int fd = ::accept4(lfd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED) continue;
                // EMFILE and the like: wait rather than spin.
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
                continue;
            }
            sl.deadline_ms = now_ms() + kHeadSeconds * 1000;
            sl.fd = fd;
            serve_one(fd, format_sockaddr(reinterpret_cast<sockaddr*>(&peer)), sl);
            sl.fd = -1;
            sl.deadline_ms = INT64_MAX;
            ::close(fd);
        }
    }

private:
    void log(const std::string& line) { std::fprintf(stderr, "capq serve: %s\n", line.c_str()); }

    void serve_one(int fd, const std::string& peer, Slot& slot) {
        timeval tv{kHeadSeconds, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        timeval sv{kSendSeconds, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &sv, sizeof sv);
        Ssl ssl(SSL_new(ctx_.get()));
        if (!ssl) return;
        SSL_set_fd(ssl.get(), fd);
        ERR_clear_error();
        if (SSL_accept(ssl.get()) != 1) {
            // Which check the client's certificate failed (expired, not for
            // clients, another CA), for the operator reading the log.
            const long v = SSL_get_verify_result(ssl.get());
            log(peer + " refused at the handshake: " + tls_error("connection closed") +
                (v != X509_V_OK ? std::string(" (") + X509_verify_cert_error_string(v) + ")" : ""));
            return;
        }
        const std::string subject = peer_subject(ssl.get());
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kHeadSeconds);
        std::string head;
        char buf[2048];
        bool whole = false;
        while (!whole) {
            if (std::chrono::steady_clock::now() > deadline) {
                log(peer + " subject=" + quoted(subject) + " request head not sent in time");
                return;
            }
            size_t n = 0;
            if (SSL_read_ex(ssl.get(), buf, sizeof buf, &n) != 1) {
                log(peer + " subject=" + quoted(subject) + " closed before a whole request");
                return;
            }
            head.append(buf, n);
            const auto end = head.find("\r\n\r\n");
            whole = end != head.npos;
            if ((whole ? end + 4 : head.size()) > kMaxHead) {
                (void)send_text(ssl.get(), 431, "request head over 1 MiB");
                log(peer + " subject=" + quoted(subject) + " 431 request head over 1 MiB");
                return;
            }
        }
        slot.deadline_ms = INT64_MAX;  // the send timeout bounds what follows
        Request rq;
        size_t missing = 0;
        Reply bad = parse_request(head, o_, canon_, dirs_, rq, missing);
        const std::string who = peer + " subject=" + quoted(subject);
        if (bad.status != 0) {
            (void)send_text(ssl.get(), bad.status, bad.line);
            log(who + " " + std::to_string(bad.status) + " " + bad.line);
            return;
        }
        QueryOptions qo;
        if (rq.files_given)
            qo.opened = rq.files;
        else
            qo.inputs = o_.dirs;
        qo.since_ns = rq.since_ns;
        qo.until_ns = rq.until_ns;
        qo.expression = rq.expr;
        qo.format = OutFormat::kPcap;
        QueryStream st;
        st.force_nano = true;
        st.max_packets = o_.max_packets;
        st.max_bytes = o_.max_bytes;
        SSL* s = ssl.get();
        st.on_start = [&]() -> Status {
            const std::string h =
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.tcpdump.pcap\r\n"
                "Transfer-Encoding: chunked\r\n"
                "Trailer: Linecap-Status, Linecap-Packets, Linecap-Error\r\n"
                "Linecap-Missing-Files: " +
                std::to_string(missing) + "\r\nConnection: close\r\n\r\n";
            return ssl_write_all(s, h.data(), h.size());
        };
        st.sink = [s](const uint8_t* p, size_t n) -> Status {
            char len[24];
            const int l = std::snprintf(len, sizeof len, "%zx\r\n", n);
            if (Status e = ssl_write_all(s, len, size_t(l)); !e) return e;
            if (Status e = ssl_write_all(s, p, n); !e) return e;
            return ssl_write_all(s, "\r\n", 2);
        };
        clear_refused_name();
        QueryOutcome oc = stream_query(qo, st);
        if (!oc.started && oc.failure == QueryOutcome::Failure::kRequest && !refused_name().empty())
            oc.error = "expr: names are not looked up here: '" + refused_name() +
                       "'; give addresses (host 198.18.0.1, net 198.18.0.0/15)";
        using F = QueryOutcome::Failure;
        const std::string what =
            who + " expr=" + quoted(rq.expr) + " since=" + std::to_string(rq.since_ns) +
            " until=" + (rq.until_ns == UINT64_MAX ? "-" : std::to_string(rq.until_ns)) +
            " files=" + (rq.files_given ? std::to_string(rq.files.size()) : "all");
        if (!oc.started) {
            const int status = oc.failure == F::kRequest ? 400 : 500;
            if (oc.failure != F::kOutput) (void)send_text(s, status, oc.error);
            log(what + " " + std::to_string(status) + " " + oc.error);
            return;
        }
        std::string state = oc.cut ? "cut" : "complete";
        std::string err;
        if (oc.failure != F::kNone) {
            state = "error";
            err = oc.error;
            for (char& c : err)
                if (c == '\r' || c == '\n') c = ' ';
        }
        if (oc.failure != F::kOutput) {
            std::string tail = "0\r\nLinecap-Status: " + state +
                               "\r\nLinecap-Packets: " + std::to_string(oc.packets) + "\r\n";
            if (!err.empty()) tail += "Linecap-Error: " + err + "\r\n";
            tail += "\r\n";
            if (Status e = ssl_write_all(s, tail.data(), tail.size()); !e) {
                state = "error";
                err = e.error();
            } else {
                SSL_shutdown(s);
            }
        }
        log(what + " 200 " + state + " packets=" + std::to_string(oc.packets) +
            " bytes=" + std::to_string(oc.bytes) + (err.empty() ? "" : " error=" + quoted(err)));
    }

    const ServeOptions& o_;
    std::vector<std::string> canon_;
    std::vector<std::shared_ptr<const FdHandle>> dirs_;  // served, O_PATH, for file=
    SslCtx ctx_;
    int lfd_;
    std::vector<Slot> slots_;
};

}  // namespace

int run_serve(const ServeOptions& given) {
    ServeOptions o = given;
    for (auto& d : o.dirs)
        while (d.size() > 1 && d.back() == '/') d.pop_back();
    if (o.dirs.empty()) return fail("--serve: give the directories to serve with -r DIR");
    if (o.max_clients == 0 || o.max_clients > 256) return fail("--max-clients: 1 to 256");
    std::vector<std::string> canon;
    std::vector<std::shared_ptr<const FdHandle>> dirs;
    for (const auto& d : o.dirs) {
        if (d.empty() || d[0] != '/')
            return fail("--serve: -r " + d + ": give an absolute directory");
        struct stat st;
        if (::stat(d.c_str(), &st) != 0) return fail(d + ": " + std::strerror(errno));
        if (!S_ISDIR(st.st_mode)) return fail(d + ": --serve serves directories only");
        canon.push_back(canonical(d));
        const int dfd = ::open(canon.back().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) return fail(d + ": " + std::strerror(errno));
        dirs.push_back(std::make_shared<const FdHandle>(dfd));
    }
    auto ctx = make_server_ctx(o.tls);
    if (!ctx) return fail(ctx.error());
    auto hp = parse_host_port(o.listen);
    if (!hp) return fail("--serve " + hp.error());
    const int lfd = ::socket(hp->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) return fail(std::string("socket: ") + std::strerror(errno));
    const int one = 1;
    ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(lfd, reinterpret_cast<const sockaddr*>(&hp->sa), hp->len) != 0)
        return fail("--serve " + o.listen + ": " + std::strerror(errno));
    if (::listen(lfd, 64) != 0) return fail(std::string("listen: ") + std::strerror(errno));
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ::getsockname(lfd, reinterpret_cast<sockaddr*>(&bound), &blen);
    std::signal(SIGPIPE, SIG_IGN);
    refuse_name_lookups();
    std::fprintf(stderr, "capq: serving on %s\n",
                 format_sockaddr(reinterpret_cast<sockaddr*>(&bound)).c_str());
    std::fflush(stderr);
    Server server(o, std::move(canon), std::move(dirs), std::move(*ctx), lfd);
    std::vector<std::thread> threads;
    threads.emplace_back([&server] { server.watchdog(); });
    for (unsigned i = 1; i < o.max_clients; i++)
        threads.emplace_back([&server, i] { server.accept_loop(i); });
    server.accept_loop(0);
    return 0;
}

}  // namespace linecap::query
