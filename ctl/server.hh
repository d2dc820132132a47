/* ControlServer: capd's side of the control socket.
 *
 * Runs on the control thread only (poll() is called from the pipeline's wait
 * loop); never on a worker or writer core. Non-blocking throughout: a client
 * that sends nothing, sends garbage, sends a huge line or disconnects
 * mid-reply costs a file descriptor and a buffer, never the capture.
 *
 * The socket file is created with mode 0660, owned by root and `group` (if
 * given). Each connection's peer credentials (SO_PEERCRED) are checked: root,
 * capd's own user, and members of `group` are served; anyone else gets one
 * EACCES response and is disconnected.
 */
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ctl/protocol.hh"
#include "dataplane/result.hh"

namespace linecap::ctl {

using Handler = std::function<Response(const Request&)>;
using HandlerTable = std::map<std::string, Handler>;

struct ServerOptions {
    std::string path = kDefaultSocket;
    std::string group;               // empty: root and capd's user only
    unsigned max_clients = 64;
    int idle_timeout_ms = 60000;     // a client silent this long is dropped
};

class ControlServer {
public:
    static Result<std::unique_ptr<ControlServer>> listen(const ServerOptions& opts,
                                                         HandlerTable handlers);
    ~ControlServer();

    /* Serves whatever is ready, waiting at most timeout_ms. */
    void poll(int timeout_ms);

    const std::string& path() const { return opts_.path; }
    unsigned clients() const { return static_cast<unsigned>(clients_.size()); }

private:
    struct Client {
        int fd;
        std::string in, out;
        bool close_after_write = false;
        long long last_activity_ms;
        long long peer_uid = -1;  // SO_PEERCRED at accept, passed on in Request
    };

    ControlServer(ServerOptions opts, HandlerTable handlers, int fd, gid_t gid);
    void accept_clients();
    void read_client(Client& c);
    void write_client(Client& c);
    void dispatch(Client& c, std::string_view line);
    bool peer_allowed(int fd, std::string& why, long long& uid) const;

    ServerOptions opts_;
    HandlerTable handlers_;
    int listen_fd_;
    gid_t gid_;
    bool has_group_;
    std::vector<std::unique_ptr<Client>> clients_;
};

}  // namespace linecap::ctl
