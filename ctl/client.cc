#include "ctl/client.hh"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace linecap::ctl {

Result<ControlClient> ControlClient::connect(const std::string& path, int timeout_ms) {
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) return make_error("socket path too long: " + path);
    std::strcpy(addr.sun_path, path.c_str());
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return make_error(std::string("socket: ") + strerror(errno));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        int e = errno;
        close(fd);
        return make_error("cannot connect to " + path + ": " + strerror(e) +
                          (e == ENOENT || e == ECONNREFUSED
                               ? " (is capd running? give its socket with --ctl PATH)"
                               : ""));
    }
    return ControlClient(fd, timeout_ms);
}

ControlClient::~ControlClient() {
    if (fd_ >= 0) close(fd_);
}

Result<Response> ControlClient::call(const Request& req) {
    std::string line = encode_request(req);
    size_t off = 0;
    while (off < line.size()) {
        ssize_t n = send(fd_, line.data() + off, line.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            // capd may have answered (a refusal) and closed before reading
            // the request: its answer is still waiting to be read.
            int e = errno;
            auto early = read_response(0);
            if (early) return early;
            return make_error(std::string("sending to capd: ") + strerror(e));
        }
        off += static_cast<size_t>(n);
    }
    return read_response(timeout_ms_);
}

Result<Response> ControlClient::read_response(int timeout_ms) {
    for (;;) {
        size_t nl = buf_.find('\n');
        if (nl != std::string::npos) {
            std::string resp = buf_.substr(0, nl);
            buf_.erase(0, nl + 1);
            return parse_response(resp);
        }
        struct pollfd p = {fd_, POLLIN, 0};
        int r = poll(&p, 1, timeout_ms);
        if (r == 0)
            return make_error("capd did not answer within " + std::to_string(timeout_ms) + " ms");
        if (r < 0 && errno != EINTR) return make_error(std::string("poll: ") + strerror(errno));
        char tmp[65536];
        ssize_t n = recv(fd_, tmp, sizeof(tmp), 0);
        if (n == 0) return make_error("capd closed the connection");
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return make_error(std::string("reading from capd: ") + strerror(errno));
        }
        buf_.append(tmp, static_cast<size_t>(n));
    }
}

}  // namespace linecap::ctl
