/* ControlServer: capd's side of the control socket.
 *
 * Runs on the control thread only (capd's ctl thread calls run(); tests call
 * poll()); never on a worker or writer core. Non-blocking throughout: a
 * client that sends nothing, sends garbage, sends a huge line, never reads
 * or disconnects mid-reply costs a bounded buffer for a bounded time, never
 * the capture and never root's access.
 *
 * The socket file is created with mode 0660, owned by root and `group` (if
 * given). Each connection's peer credentials (SO_PEERCRED) are checked: root,
 * capd's own user, and members of `group` are served; anyone else gets one
 * EACCES response and is disconnected.
 *
 * Limits (ServerOptions), each counted in ControlCounters and logged:
 *   - at most max_clients connections; the last root_reserve of them are for
 *     root (peer uid 0) only, so other users cannot lock root out. A
 *     connection over its limit gets one EBUSY response and is closed;
 *   - a client that completes no request for idle_timeout_ms is dropped
 *     (one waiting for a deferred reply is not idle);
 *   - a request line is at most kMaxLine bytes (E2BIG, then closed);
 *   - while a client has more than read_pause_bytes of replies unsent, its
 *     requests are neither read nor parsed (it is then idle, and dropped at
 *     the idle timeout if it never reads);
 *   - one reply is at most max_reply_bytes, and replies unsent to all
 *     clients at most max_total_pending_bytes; a reply over either is
 *     replaced by a short E2BIG / EBUSY error.
 * So one client holds at most read_pause_bytes + max_reply_bytes of replies
 * and kMaxLine + 64 KiB of requests, and all of them together at most
 * max_total_pending_bytes of replies.
 *
 * Handlers run on the control thread and must return promptly. A handler
 * whose answer takes long (a rules change being compiled) is an
 * AsyncHandler: it gets a Deferred and returns at once; the client's next
 * requests wait until the Deferred completes, other clients are served
 * meanwhile.
 */
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/result.hh"
#include "ctl/protocol.hh"

namespace linecap::ctl {

using Handler = std::function<Response(const Request&)>;
using HandlerTable = std::map<std::string, Handler>;

/* What the server has done about its limits since it started. Written and
 * read on the control thread only (the status handler reads it there). */
struct ControlCounters {
    uint64_t accepted = 0;                // connections served
    uint64_t refused_busy = 0;            // over max_clients (or the non-root share)
    uint64_t refused_permission = 0;      // peer not allowed
    uint64_t idle_timeouts = 0;           // dropped after idle_timeout_ms
    uint64_t oversized_requests = 0;      // line longer than kMaxLine
    uint64_t read_pauses = 0;             // times a client's reading stopped for its backlog
    uint64_t oversized_replies = 0;       // replies replaced by E2BIG
    uint64_t replies_refused_memory = 0;  // replies replaced by EBUSY (total bound)
    uint64_t peer_gone = 0;               // clients that vanished mid-reply
    uint64_t clients = 0;                 // connected now
    uint64_t root_clients = 0;            // of which peer uid 0
    uint64_t pending_reply_bytes = 0;     // unsent replies now
    uint64_t pending_reply_bytes_peak = 0;
    uint64_t deferred = 0;  // requests waiting for a deferred reply now

    nlohmann::json to_json() const;
};

struct ServerOptions {
    std::string path = kDefaultSocket;
    std::string group;  // empty: root and capd's user only
    unsigned max_clients = 64;
    unsigned root_reserve = 8;    // of max_clients, for peer uid 0 only
    int idle_timeout_ms = 30000;  // without a complete request: dropped
    size_t read_pause_bytes = size_t{256} << 10;
    size_t max_reply_bytes = size_t{16} << 20;
    size_t max_total_pending_bytes = size_t{64} << 20;
    bool log = true;                      // one stderr line per refusal or drop (rate-limited)
    ControlCounters* counters = nullptr;  // optional: where to count (else internal)
};

/* Start-up check, control thread, before anything is created: the group
 * exists, the path fits a socket address, its directory exists (the
 * default socket's own directory may be missing: listen() makes it), no
 * capd listens there, and nothing but a stale socket is in the way. The
 * same errors listen() would give. */
[[nodiscard]] Status check_listen(const ServerOptions& opts);

class ControlServer;

/* The completion side of a deferred reply: one per request, move-only. Any
 * thread may complete it, once; `answer` then runs on the control thread
 * (it may call the Pipeline's control API) and what it returns goes to the
 * client, if the client is still connected. A Deferred dropped without
 * completing answers EIO. After the server is gone, completing does
 * nothing. */
class Deferred {
public:
    Deferred(Deferred&&) noexcept = default;
    Deferred& operator=(Deferred&&) noexcept = default;
    Deferred(const Deferred&) = delete;
    Deferred& operator=(const Deferred&) = delete;
    ~Deferred();

    void complete(std::function<Response()> answer);

    struct Queue;  // the server's completions, shared with every Deferred

private:
    friend class ControlServer;
    Deferred(std::shared_ptr<Queue> q, uint64_t client) : q_(std::move(q)), client_(client) {}
    std::shared_ptr<Queue> q_;
    uint64_t client_ = 0;
};

using AsyncHandler = std::function<void(const Request&, Deferred)>;
using AsyncHandlerTable = std::map<std::string, AsyncHandler>;

class ControlServer {
public:
    static Result<std::unique_ptr<ControlServer>> listen(const ServerOptions& opts,
                                                         HandlerTable handlers,
                                                         AsyncHandlerTable async_handlers = {});
    ~ControlServer();

    /* Serves whatever is ready, waiting at most timeout_ms. Control thread. */
    void poll(int timeout_ms);

    /* Serves until stop() is called. The control thread's loop. */
    void run();
    /* Makes run() return within a moment. Any thread. */
    void stop();
    /* Runs `work` on the control thread at its next turn, among the
     * handlers (so it may use the Pipeline's control API). Any thread. */
    void post(std::function<void()> work);

    const std::string& path() const { return opts_.path; }
    unsigned clients() const { return static_cast<unsigned>(clients_.size()); }
    const ControlCounters& counters() const { return *counters_; }

private:
    struct Client {
        uint64_t id;
        int fd;
        uid_t uid = static_cast<uid_t>(-1);  // SO_PEERCRED at accept; passed on in Request
        std::string in, out;
        bool close_after_write = false;
        bool awaiting = false;      // a deferred reply is outstanding
        bool read_paused = false;   // its unsent replies are over read_pause_bytes
        long long last_request_ms;  // last complete request or reply progress
    };

    ControlServer(ServerOptions opts, HandlerTable handlers, AsyncHandlerTable async, int fd,
                  gid_t gid, int wake_fd);
    void accept_clients();
    void read_client(Client& c);
    void parse_requests(Client& c);
    void write_client(Client& c);
    void dispatch(Client& c, std::string_view line);
    void queue_reply(Client& c, const Response& r);
    void run_completions();
    void drop(Client& c, const std::string& why);
    /* The peer's uid when it may control capd; EACCES and why otherwise. */
    Result<uid_t> peer_allowed(int fd) const;
    void log(const std::string& line);
    void update_pending();

    ServerOptions opts_;
    HandlerTable handlers_;
    AsyncHandlerTable async_;
    int listen_fd_;
    gid_t gid_;
    bool has_group_;
    int wake_fd_;  // eventfd: completions queued, or stop()
    std::shared_ptr<Deferred::Queue> completions_;
    std::atomic<bool> stopping_{false};
    ControlCounters own_counters_;
    ControlCounters* counters_;
    uint64_t next_id_ = 1;
    size_t pending_ = 0;  // sum of clients' unsent replies
    long long log_window_ms_ = 0;
    unsigned log_lines_ = 0, log_suppressed_ = 0;
    std::vector<std::unique_ptr<Client>> clients_;
};

}  // namespace linecap::ctl
