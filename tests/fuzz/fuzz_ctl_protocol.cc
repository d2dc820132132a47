// libFuzzer target: the control protocol parser sees bytes from any local
// client. Every input must parse or fail cleanly, and every response encode.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ctl/protocol.hh"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace linecap::ctl;
    std::string_view line(reinterpret_cast<const char*>(data), size);
    Response resp;
    linecap::Result<Request> req = parse_request(line);
    if (req) {
        resp = Response::ok(req->cmd, req->args);
        // A parsed request re-encodes and parses to the same command.
        std::string again = encode_request(*req);
        linecap::Result<Request> req2 =
            parse_request(std::string_view(again).substr(0, again.size() - 1));
        if (!req2 || req2->cmd != req->cmd) __builtin_trap();
    } else {
        resp = Response::error(req.code(), req.error() + std::string(line.substr(0, 64)));
    }
    std::string out = encode_response(resp);
    if (out.empty() || out.back() != '\n') __builtin_trap();
    (void)parse_response(std::string_view(out).substr(0, out.size() - 1));
    return 0;
}
