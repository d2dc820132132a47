/* ControlClient: capctl's connection to capd. One request, one response. */
#pragma once

#include <string>

#include "common/result.hh"
#include "ctl/protocol.hh"

namespace linecap::ctl {

class ControlClient {
public:
    static Result<ControlClient> connect(const std::string& path, int timeout_ms);
    ControlClient(ControlClient&& o) noexcept : fd_(o.fd_), timeout_ms_(o.timeout_ms_) {
        o.fd_ = -1;
    }
    ~ControlClient();

    /* Sends `req` and waits for the response line. */
    Result<Response> call(const Request& req);

private:
    ControlClient(int fd, int timeout_ms) : fd_(fd), timeout_ms_(timeout_ms) {}
    Result<Response> read_response(int timeout_ms);
    int fd_;
    int timeout_ms_;
    std::string buf_;
};

}  // namespace linecap::ctl
