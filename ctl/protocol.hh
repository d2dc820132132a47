/* The control protocol between capctl and capd, shared by both sides.
 *
 * A Unix stream socket carrying lines: one JSON object per request, one JSON
 * object per response, each terminated by '\n'.
 *
 *   request:  {"v": 1, "cmd": "rules.add", "args": {...}}
 *   response: {"v": 1, "status": 0, "error": "OK", "message": "...", "data": {...}}
 *
 * `status` is an errno value (0 = success) and `error` its symbolic name, so
 * scripts can branch on either. `message` is for people. A request line
 * longer than kMaxLine bytes is refused with E2BIG and the connection closed.
 */
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

#include "common/result.hh"

namespace linecap::ctl {

inline constexpr int kProtocolVersion = 1;
inline constexpr size_t kMaxLine = 64 * 1024;
inline constexpr size_t kMaxDepth = 32;  // JSON nesting accepted in a request
inline constexpr const char* kDefaultSocket = "/run/linecap/capd.sock";

struct Request {
    int version = kProtocolVersion;
    std::string cmd;
    nlohmann::json args = nlohmann::json::object();
    /* Set by capd's server from the connection's SO_PEERCRED, never read
     * from the wire; -1 when unknown. Handlers that grant more to peers with
     * capd's own rights (ctl/handlers_rules.cc: object files) check it. */
    long long peer_uid = -1;
};

struct Response {
    int status = 0;  // errno value; 0 = success
    std::string message;
    nlohmann::json data = nlohmann::json::object();

    static Response ok(std::string msg = "OK", nlohmann::json data = nlohmann::json::object()) {
        return Response{0, std::move(msg), std::move(data)};
    }
    static Response error(int err, std::string msg) {
        return Response{err, std::move(msg), nlohmann::json::object()};
    }
    /* A failed Result's or Status's code is the status, its message the
     * message: handlers map errors by code, never by their text. */
    static Response error(const Error& e) { return error(e.code, e.message); }
    static Response error(const Error& e, const std::string& prefix) {
        return error(e.code, prefix + e.message);
    }
};

/* Parses one request line. An error's code() is the status to answer with:
 * EPROTO for a line that is not a request of this protocol version, EINVAL
 * for arguments that are not an object. */
Result<Request> parse_request(std::string_view line);

std::string encode_request(const Request& r);
std::string encode_response(const Response& r);
/* Parses a response line (client side). */
Result<Response> parse_response(std::string_view line);

/* "EINVAL" for EINVAL, etc. */
const char* errno_name(int err);

}  // namespace linecap::ctl
