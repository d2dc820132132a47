#include "query/fleet.hh"

#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "filters/cbpf_to_ebpf.hh"
#include "query/output.hh"

namespace linecap::query {

namespace {

constexpr int kConnectMs = 5000;
constexpr int kReadSeconds = 30;
constexpr size_t kQueueBytes = 8u << 20;
constexpr size_t kMaxResponseHead = 64u << 10;
constexpr uint32_t kMaxCaplen = 1u << 20;

int fail(const std::string& msg) {
    std::fprintf(stderr, "capq: %s\n", msg.c_str());
    return kFleetBadInput;
}

struct Packet {
    uint64_t ts_ns;
    uint32_t wirelen;
    std::vector<uint8_t> data;
};

enum class HostState { kRunning, kAnswered, kCut, kUnreachable, kRefused, kBroken };

struct Host {
    std::string name, serve;
    const FleetTarget* target = nullptr;
    // Under Fanout::mu_:
    HostState state = HostState::kRunning;
    std::string why;
    bool header = false;
    uint16_t linktype = 0;
    uint32_t snaplen = 0;
    bool done = false;
    bool excluded = false;  // left out by the merge (link type)
    std::deque<Packet> queue;
    size_t queued_bytes = 0;
    uint64_t received = 0;
    uint64_t merged = 0;
};

/* Buffered reads from one TLS connection; errors are one line. */
class Conn {
public:
    explicit Conn(SSL* ssl) : ssl_(ssl) {}
    /* Up to n bytes (at least 1) appended to out, or an error. */
    Status more() {
        char b[65536];
        size_t n = 0;
        ERR_clear_error();
        if (SSL_read_ex(ssl_, b, sizeof b, &n) == 1) {
            buf_.append(b, n);
            return {};
        }
        const int err = SSL_get_error(ssl_, 0);
        if (err == SSL_ERROR_ZERO_RETURN) return make_error(EPIPE, "connection closed");
        if (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))
            return make_error(ETIMEDOUT, "no data for " + std::to_string(kReadSeconds) + " s");
        return make_error(EIO, tls_error("connection closed"));
    }
    Result<std::string> line(size_t max) {
        for (;;) {
            auto eol = buf_.find("\r\n", pos_);
            if (eol != std::string::npos) {
                std::string l = buf_.substr(pos_, eol - pos_);
                pos_ = eol + 2;
                compact();
                return l;
            }
            if (buf_.size() - pos_ > max) return make_error("line too long");
            if (Status s = more(); !s) return s.failure();
        }
    }
    /* Exactly n bytes. */
    Result<std::string_view> bytes(size_t n) {
        while (buf_.size() - pos_ < n)
            if (Status s = more(); !s) return s.failure();
        std::string_view v(buf_.data() + pos_, n);
        pos_ += n;
        return v;
    }
    void compact() {
        if (pos_ > (1u << 20)) {
            buf_.erase(0, pos_);
            pos_ = 0;
        }
    }

private:
    SSL* ssl_;
    std::string buf_;
    size_t pos_ = 0;
};

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower((unsigned char)c));
    return s;
}

std::string trim(const std::string& s) {
    size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
    return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

class Fanout {
public:
    Fanout(const std::vector<FleetTarget>& targets, const FleetOptions& o, SSL_CTX* ctx)
        : o_(o), ctx_(ctx), hosts_(targets.size()) {
        for (size_t i = 0; i < targets.size(); i++) {
            hosts_[i].target = &targets[i];
            hosts_[i].serve = targets[i].serve;
            hosts_[i].name = targets[i].host.empty()
                                 ? targets[i].serve
                                 : targets[i].host + " (" + targets[i].serve + ")";
        }
    }

    std::vector<Host>& hosts() { return hosts_; }

    void fetch(size_t i) {
        Host& h = hosts_[i];
        std::string why;
        HostState st = fetch_into(h, why);
        std::lock_guard<std::mutex> g(mu_);
        h.state = st;
        h.why = why;
        h.done = true;
        merge_cv_.notify_all();
    }

    /* The merge; returns false with `err` when the output failed. */
    bool merge(OutFile& of, bool to_stdout, std::string& err) {
        std::unique_lock<std::mutex> lk(mu_);
        merge_cv_.wait(lk, [&] {
            for (const Host& h : hosts_)
                if (!h.header && !h.done) return false;
            return true;
        });
        uint16_t linktype = 1;
        uint32_t snaplen = 0;
        bool any = false;
        for (Host& h : hosts_) {
            if (!h.header) continue;
            if (!any) linktype = h.linktype;
            any = true;
            if (h.linktype != linktype) {
                h.excluded = true;
                h.queue.clear();
                h.queued_bytes = 0;
                continue;
            }
            snaplen = std::max(snaplen, h.snaplen);
        }
        fetch_cv_.notify_all();
        if (snaplen == 0) snaplen = 262144;
        lk.unlock();
        if (!to_stdout)
            if (Status s = of.open(o_.out); !s) {
                err = s.error();
                abort_all();
                return false;
            }
        out_ = std::make_unique<CaptureOutput>(of.fd, OutFormat::kPcap, true, linktype, snaplen);
        Status w = out_->start();
        lk.lock();
        for (Host& h : hosts_)
            if (h.excluded) {
                h.why = "link type " + std::to_string(h.linktype) + " differs from " +
                        std::to_string(linktype) + " of the first host answering";
            }
        while (w) {
            merge_cv_.wait(lk, [&] {
                for (const Host& h : hosts_)
                    if (h.header && !h.excluded && h.queue.empty() && !h.done) return false;
                return true;
            });
            Host* best = nullptr;
            for (Host& h : hosts_) {
                if (!h.header || h.excluded || h.queue.empty()) continue;
                if (best == nullptr || h.queue.front().ts_ns < best->queue.front().ts_ns) best = &h;
            }
            if (best == nullptr) break;
            Packet p = std::move(best->queue.front());
            best->queue.pop_front();
            best->queued_bytes -= p.data.size();
            best->merged++;
            fetch_cv_.notify_all();
            lk.unlock();
            w = out_->packet(0, p.ts_ns, p.data.data(), uint32_t(p.data.size()), p.wirelen);
            lk.lock();
        }
        lk.unlock();
        if (w) w = out_->finish();
        if (!w) {
            err = (to_stdout ? std::string("stdout") : o_.out) + ": " + w.error();
            abort_all();
            return false;
        }
        return true;
    }

    void abort_all() {
        std::lock_guard<std::mutex> g(mu_);
        for (Host& h : hosts_) h.excluded = true;
        fetch_cv_.notify_all();
    }

private:
    /* Pushes a packet, waiting while the host's queue is full; false when
     * the merge no longer wants this host. */
    bool push(Host& h, Packet&& p) {
        std::unique_lock<std::mutex> lk(mu_);
        fetch_cv_.wait(lk, [&] { return h.excluded || h.queued_bytes < kQueueBytes; });
        if (h.excluded) return false;
        h.queued_bytes += p.data.size();
        h.queue.push_back(std::move(p));
        h.received++;
        merge_cv_.notify_all();
        return true;
    }

    HostState fetch_into(Host& h, std::string& why) {
        auto hp = parse_host_port(h.serve);
        if (!hp) {
            why = hp.error();
            return HostState::kUnreachable;
        }
        const int fd = ::socket(hp->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            why = std::string("socket: ") + std::strerror(errno);
            return HostState::kUnreachable;
        }
        struct Closer {
            int fd;
            ~Closer() { ::close(fd); }
        } closer{fd};
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&hp->sa), hp->len) != 0 &&
            errno != EINPROGRESS) {
            why = std::strerror(errno);
            return HostState::kUnreachable;
        }
        pollfd pfd{fd, POLLOUT, 0};
        const int pr = ::poll(&pfd, 1, kConnectMs);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (pr == 0) {
            why = "no connection within " + std::to_string(kConnectMs / 1000) + " s";
            return HostState::kUnreachable;
        }
        if (pr < 0 || soerr != 0) {
            why = std::strerror(pr < 0 ? errno : soerr);
            return HostState::kUnreachable;
        }
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        timeval tv{kReadSeconds, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

        Ssl ssl(SSL_new(ctx_));
        if (!ssl) {
            why = tls_error("TLS");
            return HostState::kUnreachable;
        }
        SSL_set_fd(ssl.get(), fd);
        X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
        X509_VERIFY_PARAM_set1_ip_asc(param, hp->host.c_str());
        ERR_clear_error();
        if (SSL_connect(ssl.get()) != 1) {
            const long vr = SSL_get_verify_result(ssl.get());
            why = "TLS: " + (vr != X509_V_OK ? std::string("server certificate: ") +
                                                   X509_verify_cert_error_string(vr)
                                             : tls_error("handshake failed"));
            return HostState::kUnreachable;
        }
        std::string req = "GET /v1/packets?since=" + std::to_string(o_.since_ns);
        if (o_.until_ns != UINT64_MAX) req += "&until=" + std::to_string(o_.until_ns);
        req += "&expr=" + url_encode(o_.expression);
        for (const auto& f : h.target->files) req += "&file=" + url_encode(f);
        req += " HTTP/1.1\r\nHost: " + h.serve + "\r\nConnection: close\r\n\r\n";
        if (Status s = ssl_write_all(ssl.get(), req.data(), req.size()); !s) {
            why = "TLS: " + s.error();
            return HostState::kUnreachable;
        }
        Conn c(ssl.get());
        // With TLS 1.3 a refused client certificate shows here, as an alert.
        auto status = c.line(kMaxResponseHead);
        if (!status) {
            why = status.error();
            return HostState::kUnreachable;
        }
        bool chunked = false;
        size_t content_length = 0;
        size_t head = 0;
        for (;;) {
            auto l = c.line(kMaxResponseHead);
            if (!l) {
                why = l.error();
                return HostState::kUnreachable;
            }
            head += l->size();
            if (head > kMaxResponseHead) {
                why = "response head too large";
                return HostState::kUnreachable;
            }
            if (l->empty()) break;
            auto colon = l->find(':');
            if (colon == std::string::npos) continue;
            const std::string k = lower(l->substr(0, colon)), v = trim(l->substr(colon + 1));
            if (k == "transfer-encoding" && lower(v) == "chunked") chunked = true;
            if (k == "content-length") content_length = std::strtoul(v.c_str(), nullptr, 10);
        }
        if (status->rfind("HTTP/1.1 200", 0) != 0) {
            std::string body;
            if (content_length > 0) {
                auto b = c.bytes(std::min<size_t>(content_length, 1024));
                if (b) body = trim(std::string(*b));
            }
            while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
            const auto sp = status->find(' ');
            why = (sp == std::string::npos ? *status : status->substr(sp + 1)) +
                  (body.empty() ? "" : ": " + body);
            return HostState::kRefused;
        }
        if (!chunked) {
            why = "response not chunked";
            return HostState::kBroken;
        }
        // The chunked body: the pcap stream across chunk boundaries.
        std::string pending;
        bool got_header = false;
        bool nano = true;
        auto consume = [&](std::string_view data) -> Status {
            pending.append(data);
            size_t at = 0;
            if (!got_header) {
                if (pending.size() < 24) return {};
                uint32_t magic, snap, lt;
                std::memcpy(&magic, pending.data(), 4);
                std::memcpy(&snap, pending.data() + 16, 4);
                std::memcpy(&lt, pending.data() + 20, 4);
                if (magic != 0xa1b23c4d && magic != 0xa1b2c3d4)
                    return make_error("not a pcap stream");
                nano = magic == 0xa1b23c4d;
                got_header = true;
                at = 24;
                std::lock_guard<std::mutex> g(mu_);
                h.header = true;
                h.linktype = uint16_t(lt);
                h.snaplen = snap;
                merge_cv_.notify_all();
            }
            while (pending.size() - at >= 16) {
                uint32_t r[4];
                std::memcpy(r, pending.data() + at, 16);
                if (r[2] > kMaxCaplen)
                    return make_error("record of " + std::to_string(r[2]) + " bytes");
                if (pending.size() - at - 16 < r[2]) break;
                Packet p;
                p.ts_ns = uint64_t(r[0]) * 1000000000ull + (nano ? r[1] : uint64_t(r[1]) * 1000);
                p.wirelen = r[3];
                const auto* d = reinterpret_cast<const uint8_t*>(pending.data() + at + 16);
                p.data.assign(d, d + r[2]);
                at += 16 + r[2];
                if (!push(h, std::move(p))) return make_error(ECANCELED, "left out");
            }
            pending.erase(0, at);
            return {};
        };
        auto broken = [&](const std::string& reason) {
            std::lock_guard<std::mutex> g(mu_);
            why = "failed after " + std::to_string(h.received) + " packets: " + reason;
            return HostState::kBroken;
        };
        for (;;) {
            auto l = c.line(1024);
            if (!l) return broken(l.error());
            const size_t n = std::strtoul(l->c_str(), nullptr, 16);
            if (l->empty() || l->find_first_not_of("0123456789abcdefABCDEF") == 0)
                return broken("bad chunk");
            if (n == 0) break;
            auto d = c.bytes(n);
            if (!d) return broken(d.error());
            if (Status s = consume(*d); !s) {
                if (s.code() == ECANCELED) return HostState::kBroken;
                return broken(s.error());
            }
            auto crlf = c.line(2);
            if (!crlf || !crlf->empty()) return broken("bad chunk");
            c.compact();
        }
        std::string state, error;
        uint64_t packets = UINT64_MAX;
        for (int i = 0; i < 64; i++) {
            auto l = c.line(4096);
            if (!l) return broken("trailer: " + l.error());
            if (l->empty()) break;
            auto colon = l->find(':');
            if (colon == std::string::npos) continue;
            const std::string k = lower(l->substr(0, colon)), v = trim(l->substr(colon + 1));
            if (k == "linecap-status") state = v;
            if (k == "linecap-packets") packets = std::strtoull(v.c_str(), nullptr, 10);
            if (k == "linecap-error") error = v;
        }
        if (!got_header || !pending.empty()) return broken("pcap stream ends inside a record");
        std::lock_guard<std::mutex> g(mu_);
        if (packets != h.received) {
            why = "failed: " + std::to_string(h.received) + " packets received, the host sent " +
                  (packets == UINT64_MAX ? std::string("no count") : std::to_string(packets));
            return HostState::kBroken;
        }
        if (state == "complete") return HostState::kAnswered;
        if (state == "cut") return HostState::kCut;
        why = "failed after " + std::to_string(h.received) +
              " packets: " + (error.empty() ? "status '" + state + "'" : error);
        return HostState::kBroken;
    }

    const FleetOptions& o_;
    SSL_CTX* ctx_;
    std::vector<Host> hosts_;
    std::mutex mu_;
    std::condition_variable merge_cv_, fetch_cv_;
    std::unique_ptr<CaptureOutput> out_;
};

}  // namespace

Result<std::vector<FleetTarget>> parse_fleet_hosts(const std::string& list) {
    std::vector<FleetTarget> out;
    size_t at = 0;
    while (at <= list.size()) {
        size_t comma = list.find(',', at);
        if (comma == std::string::npos) comma = list.size();
        std::string a = list.substr(at, comma - at);
        at = comma + 1;
        if (a.empty()) continue;
        if (auto hp = parse_host_port(a); !hp) return hp.failure();
        out.push_back(FleetTarget{"", a, {}});
    }
    if (out.empty()) return make_error("--fleet-hosts: expected ADDR:PORT,...");
    return out;
}

int run_fleet(const std::vector<FleetTarget>& targets, const FleetOptions& o) {
    const bool to_stdout = o.out.empty() || o.out == "-";
    if (to_stdout && ::isatty(STDOUT_FILENO))
        return fail("not writing a capture to a terminal: use -w FILE, or a pipe");
    if (!o.expression.empty())
        if (auto p = filters::compile_classic(o.expression, 1, 262144); !p)
            return fail(o.expression + ": " + p.error());
    for (const auto& t : targets)
        if (auto hp = parse_host_port(t.serve); !hp) return fail(hp.error());
    auto ctx = make_client_ctx(o.tls);
    if (!ctx) return fail(ctx.error());
    std::signal(SIGPIPE, SIG_IGN);

    Fanout fan(targets, o, ctx->get());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < targets.size(); i++) threads.emplace_back([&fan, i] { fan.fetch(i); });
    OutFile of;
    std::string err;
    const bool ok = fan.merge(of, to_stdout, err);
    for (auto& t : threads) t.join();
    if (!ok) {
        // The reader of a pipe went away: not an error, as for capq.
        if (err.find(std::strerror(EPIPE)) != std::string::npos) return kFleetComplete;
        return fail(err);
    }

    size_t complete = 0;
    uint64_t total = 0;
    for (const Host& h : fan.hosts()) {
        total += h.merged;
        std::string line;
        if (h.excluded) {
            line = "left out: " + h.why;
        } else {
            switch (h.state) {
                case HostState::kAnswered:
                    complete++;
                    line = "answered, " + std::to_string(h.merged) + " packets";
                    break;
                case HostState::kCut:
                    line = "over its cap after " + std::to_string(h.merged) + " packets";
                    break;
                case HostState::kUnreachable: line = "unreachable: " + h.why; break;
                case HostState::kRefused: line = "refused: " + h.why; break;
                default: line = h.why; break;
            }
        }
        std::fprintf(stderr, "capq fleet: %s: %s\n", h.name.c_str(), line.c_str());
    }
    std::fprintf(stderr, "capq fleet: %zu of %zu hosts answered completely, %llu packets%s\n",
                 complete, targets.size(), (unsigned long long)total,
                 complete == targets.size() ? "" : "; the answer is partial");
    if (Status s = of.commit(); !s) return fail(s.error());
    return complete == targets.size() ? kFleetComplete : kFleetPartial;
}

}  // namespace linecap::query
