#include "ctl/protocol.hh"

#include <algorithm>
#include <cerrno>

namespace linecap::ctl {

const char* errno_name(int err) {
    switch (err) {
        case 0: return "OK";
        case EINVAL: return "EINVAL";
        case ENOENT: return "ENOENT";
        case EEXIST: return "EEXIST";
        case EPERM: return "EPERM";
        case EACCES: return "EACCES";
        case E2BIG: return "E2BIG";
        case ENOSYS: return "ENOSYS";
        case EPROTO: return "EPROTO";
        case EBUSY: return "EBUSY";
        case EIO: return "EIO";
        case EAGAIN: return "EAGAIN";
        case ETIMEDOUT: return "ETIMEDOUT";
        case ENOTSUP: return "ENOTSUP";
        default: {
            const char* name = strerrorname_np(err);
            return name ? name : "EUNKNOWN";
        }
    }
}

namespace {

/* Nesting depth of JSON text, ignoring brackets inside strings. Copying or
 * freeing a parsed value recurses once per level, so a hostile line of
 * 60 000 '[' would exhaust the stack of the control thread. */
size_t nesting_depth(std::string_view s) {
    size_t depth = 0, max_depth = 0;
    bool in_string = false, escaped = false;
    for (char c : s) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            max_depth = std::max(max_depth, ++depth);
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return max_depth;
}

}  // namespace

Result<Request> parse_request(std::string_view line) {
    if (nesting_depth(line) > kMaxDepth)
        return make_error(
            EPROTO, "malformed request: JSON nested deeper than " + std::to_string(kMaxDepth));
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return make_error(EPROTO, "malformed request: expected one JSON object per line");
    auto v = j.find("v");
    if (v == j.end() || !v->is_number_integer())
        return make_error(EPROTO, "malformed request: missing protocol version \"v\"");
    bool same = v->is_number_unsigned() ? v->get<uint64_t>() == uint64_t(kProtocolVersion)
                                        : v->get<int64_t>() == kProtocolVersion;
    if (!same)
        return make_error(EPROTO, "protocol version " + v->dump() + " not supported (capd speaks " +
                                      std::to_string(kProtocolVersion) + ")");
    auto c = j.find("cmd");
    if (c == j.end() || !c->is_string() || c->get<std::string>().empty())
        return make_error(EPROTO, "malformed request: missing \"cmd\"");
    Request out;
    out.version = kProtocolVersion;
    out.cmd = c->get<std::string>();
    auto a = j.find("args");
    if (a != j.end()) {
        if (!a->is_object())
            return make_error(EINVAL, "malformed request: \"args\" must be an object");
        out.args = *a;
    } else {
        out.args = nlohmann::json::object();
    }
    return out;
}

std::string encode_request(const Request& r) {
    nlohmann::json j = {{"v", r.version}, {"cmd", r.cmd}, {"args", r.args}};
    return j.dump() + "\n";
}

std::string encode_response(const Response& r) {
    nlohmann::json j = {{"v", kProtocolVersion},
                        {"status", r.status},
                        {"error", errno_name(r.status)},
                        {"message", r.message},
                        {"data", r.data.is_null() ? nlohmann::json::object() : r.data}};
    // Invalid UTF-8 from a client (echoed in a message) must not throw.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

Result<Response> parse_response(std::string_view line) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("status"))
        return make_error("malformed response from capd");
    Response r;
    r.status = j.value("status", EPROTO);
    r.message = j.value("message", "");
    if (j.contains("data")) r.data = j["data"];
    return r;
}

}  // namespace linecap::ctl
