/* The control protocol (ctl/protocol.hh) and the daemon side of the control
 * socket (ctl/server.hh), in process.
 *
 * Protocol tests feed parse_request() valid, malformed, oversized and
 * corrupted lines. Server tests listen on a socket in a temporary directory
 * with a small handler table, drive ControlServer::poll() from the test
 * thread (bounded in time) and talk to it with raw sockets, with
 * ControlClient, and from client threads.
 *
 * SIGPIPE keeps its default action here on purpose: if the server ever wrote
 * to a closed socket without MSG_NOSIGNAL, this binary would die.
 */
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ctl/client.hh"
#include "ctl/protocol.hh"
#include "ctl/server.hh"

using namespace linecap;
using namespace linecap::ctl;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// ---------------------------------------------------------------- error codes

/* Result and Status (common/result.hh) carry an errno-style code with the
 * message; the control handlers answer the code as the protocol's status. */
TEST(ErrorCode, MakeErrorWithoutCodeIsEinval) {
    Status s = make_error("bad input");
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.code(), EINVAL);
    EXPECT_EQ(s.error(), "bad input");
    Result<int> r = make_error("bad input");
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.code(), EINVAL);
    EXPECT_EQ(r.error(), "bad input");
}

TEST(ErrorCode, ExplicitCodeIsKept) {
    for (int code : {ENOENT, E2BIG, EACCES, EBUSY, ETIMEDOUT, ENOTSUP, ELOOP}) {
        Status s = make_error(code, "x");
        EXPECT_EQ(s.code(), code);
        EXPECT_EQ(s.failure().code, code);
        Result<std::string> r = make_error(code, "y");
        EXPECT_EQ(r.code(), code);
        EXPECT_EQ(r.failure().message, "y");
        // Passing a failure on, with or without more context, keeps its code.
        Status passed = r.failure();
        EXPECT_EQ(passed.code(), code);
        Result<int> wrapped = make_error(r.code(), "rule 'x': " + r.error());
        EXPECT_EQ(wrapped.code(), code);
        EXPECT_EQ(wrapped.error(), "rule 'x': y");
    }
}

TEST(ErrorCode, SuccessHasCodeZeroAndAFailureNever) {
    Status ok = Status::success();
    EXPECT_TRUE(ok.ok());
    EXPECT_EQ(ok.code(), 0);
    EXPECT_EQ(ok.error(), "");
    Result<int> value = 7;
    EXPECT_EQ(value.code(), 0);
    Status zero = make_error(0, "a failure must not read as success");
    EXPECT_FALSE(zero.ok());
    EXPECT_EQ(zero.code(), EINVAL);
}

TEST(ErrorCode, ResponseTakesTheCodeAsStatus) {
    Response r = Response::error(make_error(ENOTSUP, "no TCP flow table"));
    EXPECT_EQ(r.status, ENOTSUP);
    EXPECT_EQ(r.message, "no TCP flow table");
    Response p = Response::error(make_error(E2BIG, "too many"), "rule 'x': ");
    EXPECT_EQ(p.status, E2BIG);
    EXPECT_EQ(p.message, "rule 'x': too many");
    json j = json::parse(encode_response(p));
    EXPECT_EQ(j["status"], E2BIG);
    EXPECT_EQ(j["error"], "E2BIG");
}

TEST(ErrorCode, ParseRequestCodes) {
    Result<Request> proto = parse_request("{not json");
    EXPECT_EQ(proto.code(), EPROTO) << proto.error();
    Result<Request> args = parse_request(R"({"v":1,"cmd":"status","args":7})");
    EXPECT_EQ(args.code(), EINVAL) << args.error();
    Result<Request> ok = parse_request(R"({"v":1,"cmd":"status"})");
    EXPECT_EQ(ok.code(), 0);
}

// ---------------------------------------------------------------- protocol

struct Failure {
    int status = 0;
    std::string message;
};

struct Parsed {
    bool ok;
    Request req;
    Failure err;
};

Parsed parse(std::string_view line) {
    Result<Request> r = parse_request(line);
    Parsed p{};
    p.ok = r.ok();
    if (r)
        p.req = *r;
    else
        p.err = {r.code(), r.error()};
    return p;
}

TEST(ParseRequest, MinimalRequest) {
    Parsed p = parse(R"({"v":1,"cmd":"status"})");
    ASSERT_TRUE(p.ok) << p.err.message;
    EXPECT_EQ(p.req.version, kProtocolVersion);
    EXPECT_EQ(p.req.cmd, "status");
    EXPECT_TRUE(p.req.args.is_object());
    EXPECT_TRUE(p.req.args.empty());
}

TEST(ParseRequest, ArgsAndUnknownFieldsAndWhitespace) {
    Parsed p = parse(
        " { \"cmd\" : \"rules.add\", \"future\": [1,2], \"v\": 1,\n"
        "   \"args\": {\"name\": \"web\", \"patterns\": [\"GET \"]} }  ");
    ASSERT_TRUE(p.ok) << p.err.message;
    EXPECT_EQ(p.req.cmd, "rules.add");
    EXPECT_EQ(p.req.args["name"], "web");
    EXPECT_EQ(p.req.args["patterns"][0], "GET ");
}

TEST(ParseRequest, ReusedRequestGetsFreshArgs) {
    Request r;
    Result<Request> a = parse_request(R"({"v":1,"cmd":"a","args":{"x":1}})");
    ASSERT_TRUE(a.ok()) << a.error();
    r = *a;
    Result<Request> b = parse_request(R"({"v":1,"cmd":"b"})");
    ASSERT_TRUE(b.ok()) << b.error();
    r = *b;
    EXPECT_EQ(r.cmd, "b");
    EXPECT_TRUE(r.args.empty()) << r.args.dump();
}

TEST(ParseRequest, MalformedJsonIsEproto) {
    const char* bad[] = {
        "",
        " ",
        "{",
        "}",
        "{\"v\":1,\"cmd\":\"status\"",
        "{\"v\":1,\"cmd\":\"status\"}}",
        "{\"v\":1,\"cmd\":\"status\"} {\"v\":1,\"cmd\":\"status\"}",
        "{\"v\":1,\"cmd\":\"status\",}",
        "{'v':1,'cmd':'status'}",
        "{v:1,cmd:status}",
        "status",
        "\x01\x02\x03",
        "{\"v\":1,\"cmd\":\"st\0tus\"}",
    };
    for (const char* b : bad) {
        Parsed p = parse(b);
        EXPECT_FALSE(p.ok) << "accepted: " << b;
        EXPECT_EQ(p.err.status, EPROTO) << b;
        EXPECT_FALSE(p.err.message.empty());
    }
    // An embedded NUL inside the line (string_view keeps it).
    std::string nul = std::string("{\"v\":1,\"cmd\":\"st") + '\0' + "tus\"}";
    Parsed p = parse(nul);
    EXPECT_FALSE(p.ok);
}

TEST(ParseRequest, NonObjectIsEproto) {
    for (const char* b :
         {"[]", "[{\"v\":1,\"cmd\":\"status\"}]", "1", "-1.5", "true", "null", "\"status\""}) {
        Parsed p = parse(b);
        EXPECT_FALSE(p.ok) << b;
        EXPECT_EQ(p.err.status, EPROTO) << b;
    }
}

TEST(ParseRequest, VersionMissingOrWrong) {
    const char* bad[] = {
        R"({"cmd":"status"})",          R"({"v":null,"cmd":"status"})",
        R"({"v":"1","cmd":"status"})",  R"({"v":1.5,"cmd":"status"})",
        R"({"v":true,"cmd":"status"})", R"({"v":[1],"cmd":"status"})",
        R"({"v":0,"cmd":"status"})",    R"({"v":2,"cmd":"status"})",
        R"({"v":-1,"cmd":"status"})",   R"({"v":1e0,"cmd":"status"})",
    };
    for (const char* b : bad) {
        Parsed p = parse(b);
        EXPECT_FALSE(p.ok) << "accepted: " << b;
        EXPECT_EQ(p.err.status, EPROTO) << b;
    }
    Parsed p = parse(R"({"v":2,"cmd":"status"})");
    EXPECT_NE(p.err.message.find("version"), std::string::npos) << p.err.message;
    EXPECT_NE(p.err.message.find('2'), std::string::npos) << p.err.message;
}

TEST(ParseRequest, VersionBeyondIntIsRefused) {
    // 2^32 + 1 and 2^64 - 1 are not version 1, whatever they truncate to.
    for (const char* b :
         {R"({"v":4294967297,"cmd":"status"})", R"({"v":18446744073709551617,"cmd":"status"})",
          R"({"v":18446744073709551615,"cmd":"status"})", R"({"v":-4294967295,"cmd":"status"})"}) {
        Parsed p = parse(b);
        EXPECT_FALSE(p.ok) << "accepted as version 1: " << b;
        EXPECT_EQ(p.err.status, EPROTO) << b;
    }
}

TEST(ParseRequest, CmdMissingOrNotAString) {
    for (const char* b : {R"({"v":1})", R"({"v":1,"cmd":""})", R"({"v":1,"cmd":null})",
                          R"({"v":1,"cmd":7})", R"({"v":1,"cmd":["status"]})",
                          R"({"v":1,"cmd":{"name":"status"}})", R"({"v":1,"CMD":"status"})"}) {
        Parsed p = parse(b);
        EXPECT_FALSE(p.ok) << "accepted: " << b;
        EXPECT_EQ(p.err.status, EPROTO) << b;
    }
}

TEST(ParseRequest, ArgsNotAnObjectIsEinval) {
    for (const char* b : {R"({"v":1,"cmd":"x","args":[]})", R"({"v":1,"cmd":"x","args":"a"})",
                          R"({"v":1,"cmd":"x","args":null})", R"({"v":1,"cmd":"x","args":3})",
                          R"({"v":1,"cmd":"x","args":false})"}) {
        Parsed p = parse(b);
        EXPECT_FALSE(p.ok) << "accepted: " << b;
        EXPECT_EQ(p.err.status, EINVAL) << b;
        EXPECT_NE(p.err.message.find("args"), std::string::npos) << p.err.message;
    }
}

TEST(ParseRequest, HugeStrings) {
    std::string cmd(4 << 20, 'c');
    std::string big(4 << 20, 'x');
    json j = {{"v", 1}, {"cmd", cmd}, {"args", {{"expression", big}}}};
    Parsed p = parse(j.dump());
    ASSERT_TRUE(p.ok) << p.err.message;
    EXPECT_EQ(p.req.cmd.size(), cmd.size());
    EXPECT_EQ(p.req.args["expression"].get<std::string>().size(), big.size());

    // Many keys, and a string of escapes.
    json many = json::object();
    for (int i = 0; i < 20000; i++) many["k" + std::to_string(i)] = i;
    p = parse(json{{"v", 1}, {"cmd", "x"}, {"args", many}}.dump());
    ASSERT_TRUE(p.ok);
    EXPECT_EQ(p.req.args.size(), 20000u);
    std::string esc = R"({"v":1,"cmd":")";
    for (int i = 0; i < 100000; i++) esc += "\\u0041";
    esc += "\"}";
    p = parse(esc);
    ASSERT_TRUE(p.ok);
    EXPECT_EQ(p.req.cmd, std::string(100000, 'A'));
}

TEST(ParseRequest, DeepNestingIsRefusedNotRecursedInto) {
    // Copying or freeing a parsed JSON value recurses once per level: the
    // deepest nesting that fits in one line (kMaxLine / 2 levels) overflowed
    // the stack under AddressSanitizer. Requests nest a few levels at most.
    auto nested = [](size_t depth) {
        std::string line = R"({"v":1,"cmd":"x","args":{"a":)";
        line += std::string(depth, '[');
        line += std::string(depth, ']');
        line += "}}";
        return line;
    };
    Parsed p = parse(nested(kMaxDepth - 2));
    EXPECT_TRUE(p.ok) << p.err.message;
    p = parse(nested(kMaxLine / 2 - 64));
    EXPECT_FALSE(p.ok);
    EXPECT_EQ(p.err.status, EPROTO);
    EXPECT_NE(p.err.message.find("nested"), std::string::npos) << p.err.message;
    // Brackets inside strings do not count.
    p = parse(R"({"v":1,"cmd":"x","args":{"a":")" + std::string(1000, '[') + R"("}})");
    EXPECT_TRUE(p.ok) << p.err.message;
    // Unbalanced: one bracket short.
    std::string line = nested(4);
    line.erase(line.size() - 3, 1);
    p = parse(line);
    EXPECT_FALSE(p.ok);
    EXPECT_EQ(p.err.status, EPROTO);
}

TEST(ParseRequest, InvalidUtf8IsRefusedNotThrown) {
    const std::string bad[] = {
        "{\"v\":1,\"cmd\":\"st\xff\xfetus\"}",
        "{\"v\":1,\"cmd\":\"x\",\"args\":{\"n\":\"\xc3\x28\"}}",
        "{\"v\":1,\"cmd\":\"\xed\xa0\x80\"}",                    // UTF-16 surrogate
        "{\"v\":1,\"cmd\":\"\xf4\x90\x80\x80\"}",                // above U+10FFFF
        "{\"v\":1,\"cmd\":\"\xc0\xaf\"}",                        // overlong '/'
        "{\"v\":1,\"cmd\":\"x\",\"args\":{\"n\":\"\\ud800\"}}",  // lone escaped surrogate
    };
    for (const auto& b : bad) {
        Parsed p;
        EXPECT_NO_THROW(p = parse(b));
        EXPECT_FALSE(p.ok) << "accepted invalid UTF-8: " << b;
        EXPECT_EQ(p.err.status, EPROTO);
    }
    // Valid multi-byte UTF-8 is kept byte for byte.
    Parsed p = parse("{\"v\":1,\"cmd\":\"r\xc3\xa8gle-\xe2\x82\xac-\xf0\x9f\x93\xa6\"}");
    ASSERT_TRUE(p.ok);
    EXPECT_EQ(p.req.cmd, "r\xc3\xa8gle-\xe2\x82\xac-\xf0\x9f\x93\xa6");
}

TEST(EncodeRequest, RoundTrip) {
    Request r;
    r.cmd = "rules.add";
    r.args = {{"name", "web"},
              {"expression", "tcp port 80 and \"quoted\" \\ back\nslash\ttab"},
              {"patterns", {"GET ", "/^POST/i"}},
              {"scan", "payload"},
              {"n", 18446744073709551615ull},
              {"neg", -3},
              {"nested", {{"a", {1, 2, {{"b", nullptr}}}}}}};
    std::string line = encode_request(r);
    ASSERT_FALSE(line.empty());
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line per request";
    Parsed p = parse(std::string_view(line).substr(0, line.size() - 1));
    ASSERT_TRUE(p.ok) << p.err.message;
    EXPECT_EQ(p.req.cmd, r.cmd);
    EXPECT_EQ(p.req.args, r.args);
    EXPECT_EQ(p.req.version, kProtocolVersion);

    // A command name with a newline is escaped, never split across lines.
    r.cmd = "evil\n{\"v\":1,\"cmd\":\"stop\"}";
    r.args = json::object();
    line = encode_request(r);
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    p = parse(std::string_view(line).substr(0, line.size() - 1));
    ASSERT_TRUE(p.ok);
    EXPECT_EQ(p.req.cmd, r.cmd);
}

TEST(EncodeResponse, RoundTripAndErrorNames) {
    Response ok = Response::ok("fine", {{"rules", {"a", "b"}}, {"count", 2}});
    std::string line = encode_response(ok);
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    json j = json::parse(line);
    EXPECT_EQ(j["v"], kProtocolVersion);
    EXPECT_EQ(j["status"], 0);
    EXPECT_EQ(j["error"], "OK");
    EXPECT_EQ(j["message"], "fine");
    EXPECT_EQ(j["data"]["count"], 2);
    auto back = parse_response(line.substr(0, line.size() - 1));
    ASSERT_TRUE(back.ok()) << back.error();
    EXPECT_EQ(back->status, 0);
    EXPECT_EQ(back->message, "fine");
    EXPECT_EQ(back->data, ok.data);

    Response err = Response::error(ENOENT, "no rule named 'x'");
    j = json::parse(encode_response(err));
    EXPECT_EQ(j["status"], ENOENT);
    EXPECT_EQ(j["error"], "ENOENT");
    EXPECT_EQ(j["message"], "no rule named 'x'");
}

TEST(EncodeResponse, DataIsAlwaysAnObject) {
    // protocol.hh documents "data": {...} in every response; scripts index it
    // without checking its type.
    for (int e : {EINVAL, ENOENT, EPROTO, EACCES}) {
        json j = json::parse(encode_response(Response::error(e, "x")));
        EXPECT_TRUE(j["data"].is_object())
            << "error response carries \"data\": " << j["data"].dump();
    }
}

TEST(EncodeResponse, InvalidUtf8DoesNotThrow) {
    Response r = Response::error(ENOSYS, "unknown command '\xff\xfe\xc3\x28'");
    r.data = {{"echo", "bad \xed\xa0\x80 bytes"}, {"\xff key", 1}};
    std::string line;
    ASSERT_NO_THROW(line = encode_response(r));
    EXPECT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    // What goes out is valid JSON (the bad bytes are replaced).
    json j;
    ASSERT_NO_THROW(j = json::parse(line));
    EXPECT_EQ(j["status"], ENOSYS);
    EXPECT_NE(j["message"].get<std::string>().find("unknown command"), std::string::npos);
    auto back = parse_response(line);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->status, ENOSYS);
}

TEST(ParseResponse, Malformed) {
    for (const char* b : {"", "{", "[]", "42", "{\"v\":1}", "{\"message\":\"x\"}", "null"}) {
        auto r = parse_response(b);
        EXPECT_FALSE(r.ok()) << b;
    }
    auto r = parse_response(R"({"status":5})");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 5);
}

TEST(ErrnoName, KnownAndUnknown) {
    struct {
        int e;
        const char* n;
    } table[] = {{0, "OK"},
                 {EINVAL, "EINVAL"},
                 {ENOENT, "ENOENT"},
                 {EEXIST, "EEXIST"},
                 {EPERM, "EPERM"},
                 {EACCES, "EACCES"},
                 {E2BIG, "E2BIG"},
                 {ENOSYS, "ENOSYS"},
                 {EPROTO, "EPROTO"},
                 {EBUSY, "EBUSY"},
                 {EIO, "EIO"},
                 {EAGAIN, "EAGAIN"},
                 {ETIMEDOUT, "ETIMEDOUT"},
                 {ENOTSUP, "ENOTSUP"},
                 {ENOSPC, "ENOSPC"}};
    for (const auto& t : table) EXPECT_STREQ(errno_name(t.e), t.n);
    for (int e : {-1, 9999, ENOTDIR}) {
        const char* n = errno_name(e);
        ASSERT_NE(n, nullptr);
        EXPECT_GT(std::strlen(n), 0u);
    }
}

// ---------------------------------------------------------------- server

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/linecap-ctl-test-XXXXXX";
        const char* d = mkdtemp(tmpl);
        if (!d) throw std::runtime_error("mkdtemp failed");
        path_ = d;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

/* A client socket driven by hand: partial sends, unread replies, abrupt close. */
class RawConn {
public:
    explicit RawConn(const std::string& path) {
        fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
            error_ = errno;
            ::close(fd_);
            fd_ = -1;
        }
    }
    ~RawConn() { close(); }
    RawConn(const RawConn&) = delete;
    RawConn& operator=(const RawConn&) = delete;

    bool ok() const { return fd_ >= 0; }
    int error() const { return error_; }
    int fd() const { return fd_; }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    /* Sends everything, or stops at the first error (the peer may have closed). */
    bool send_all(std::string_view s) {
        size_t off = 0;
        while (off < s.size()) {
            ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) {
                    pollfd p{fd_, POLLOUT, 0};
                    ::poll(&p, 1, 10);
                    continue;
                }
                return false;
            }
            off += static_cast<size_t>(n);
        }
        return true;
    }
    /* Reads what is there without blocking; false on EOF or error. */
    bool read_available() {
        char buf[65536];
        for (;;) {
            ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
            if (n > 0) {
                in_.append(buf, static_cast<size_t>(n));
                continue;
            }
            if (n == 0) {
                eof_ = true;
                return false;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            if (errno == EINTR) continue;
            eof_ = true;
            return false;
        }
    }
    std::optional<std::string> take_line() {
        size_t nl = in_.find('\n');
        if (nl == std::string::npos) return std::nullopt;
        std::string l = in_.substr(0, nl);
        in_.erase(0, nl + 1);
        return l;
    }
    bool eof() const { return eof_; }
    const std::string& pending() const { return in_; }

private:
    int fd_ = -1;
    int error_ = 0;
    std::string in_;
    bool eof_ = false;
};

std::string request_line(const std::string& cmd, json args = json::object()) {
    Request r;
    r.cmd = cmd;
    r.args = std::move(args);
    return encode_request(r);
}

/* A handler table for the tests:
 *   ping         -> "pong"
 *   echo         -> data = args
 *   big {size}   -> data.blob is `size` bytes
 *   throw        -> the handler throws
 *   count        -> data.n = how many times it ran */
struct Handlers {
    std::atomic<int> count{0};
    std::atomic<int> big_calls{0};
    std::vector<Deferred> later;  // "later" requests not answered yet
    HandlerTable table() {
        HandlerTable t;
        t["ping"] = [](const Request&) { return Response::ok("pong"); };
        t["echo"] = [](const Request& r) { return Response::ok("echo", r.args); };
        t["big"] = [this](const Request& r) {
            big_calls++;
            size_t n = r.args.value("size", size_t(1) << 20);
            return Response::ok("big", {{"blob", std::string(n, 'b')}});
        };
        t["throw"] = [](const Request&) -> Response {
            throw std::runtime_error("handler exploded");
        };
        t["count"] = [this](const Request&) { return Response::ok("counted", {{"n", ++count}}); };
        return t;
    }
    /* later: answered when the test completes the Deferred. */
    AsyncHandlerTable async_table() {
        AsyncHandlerTable t;
        t["later"] = [this](const Request&, Deferred d) { later.push_back(std::move(d)); };
        return t;
    }
};

class ServerTest : public ::testing::Test {
protected:
    void SetUp() override { path_ = dir_.path() + "/ctl.sock"; }

    std::unique_ptr<ControlServer> start(ServerOptions o = {}) {
        o.path = path_;
        o.log = false;
        auto s = ControlServer::listen(o, handlers_.table(), handlers_.async_table());
        if (!s) {
            ADD_FAILURE() << "listen: " << s.error();
            return nullptr;
        }
        return std::move(*s);
    }

    /* Polls the server until done() holds or ms pass; returns done(). */
    static bool pump_until(ControlServer& s, const std::function<bool()>& done, int ms = 5000) {
        auto end = Clock::now() + std::chrono::milliseconds(ms);
        while (!done()) {
            if (Clock::now() > end) return false;
            s.poll(5);
        }
        return true;
    }
    static void pump_for(ControlServer& s, int ms) {
        auto end = Clock::now() + std::chrono::milliseconds(ms);
        while (Clock::now() < end) s.poll(5);
    }

    /* Reads one response line from `c`, serving meanwhile. */
    static std::optional<json> reply(ControlServer& s, RawConn& c, int ms = 5000) {
        std::optional<std::string> line;
        pump_until(
            s,
            [&] {
                c.read_available();
                line = c.take_line();
                return line.has_value() || c.eof();
            },
            ms);
        if (!line) return std::nullopt;
        json j = json::parse(*line, nullptr, false);
        if (j.is_discarded()) {
            ADD_FAILURE() << "response is not JSON: " << *line;
            return std::nullopt;
        }
        return j;
    }
    /* True when a ping on `c` is answered pong within ms: the server still
     * serves the connection. */
    static bool pongs(ControlServer& s, RawConn& c, int ms = 5000) {
        c.send_all(request_line("ping"));
        auto r = reply(s, c, ms);
        return r && (*r)["status"] == 0 && (*r)["message"] == "pong";
    }
    /* True when the server closes `c` within ms. */
    static bool closed_by_server(ControlServer& s, RawConn& c, int ms = 5000) {
        return pump_until(
            s,
            [&] {
                c.read_available();
                return c.eof();
            },
            ms);
    }

    TempDir dir_;
    std::string path_;
    Handlers handlers_;
};

TEST_F(ServerTest, SocketFileIsMode0660AndRemovedOnShutdown) {
    auto s = start();
    ASSERT_TRUE(s);
    struct stat st {};
    ASSERT_EQ(lstat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0660u) << std::oct << (st.st_mode & 07777);
    EXPECT_EQ(s->path(), path_);
    s.reset();
    EXPECT_NE(lstat(path_.c_str(), &st), 0) << "socket file left behind";
}

TEST_F(ServerTest, ModeIs0660WhateverTheUmask) {
    for (mode_t mask : {mode_t(0), mode_t(077), mode_t(0777)}) {
        mode_t old = umask(mask);
        auto s = start();
        // listen() puts the process umask back.
        mode_t after = umask(old);
        ASSERT_TRUE(s);
        EXPECT_EQ(after, mask);
        struct stat st {};
        ASSERT_EQ(lstat(path_.c_str(), &st), 0);
        EXPECT_EQ(st.st_mode & 07777, 0660u)
            << "umask " << std::oct << mask << ": mode " << (st.st_mode & 07777);
    }
}

/* Only the default socket's directory is ever made: a --ctl path in a
 * missing directory is refused, and nothing is created on the way. */
TEST_F(ServerTest, MissingParentDirectoryIsRefusedNotCreated) {
    path_ = dir_.path() + "/run/linecap/capd.sock";
    ServerOptions o;
    o.path = path_;
    Status checked = check_listen(o);
    ASSERT_FALSE(checked.ok());
    EXPECT_NE(checked.error().find("no such directory " + dir_.path() + "/run/linecap"),
              std::string::npos)
        << checked.error();
    auto s = ControlServer::listen(o, {});
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error(), checked.error());
    struct stat st;
    EXPECT_NE(stat((dir_.path() + "/run").c_str(), &st), 0) << "a directory was made";
}

TEST_F(ServerTest, ListenRefusals) {
    // A live server's socket is not taken over.
    auto s = start();
    ASSERT_TRUE(s);
    ServerOptions o;
    o.path = path_;
    auto second = ControlServer::listen(o, {});
    ASSERT_FALSE(second.ok());
    EXPECT_NE(second.error().find("another capd"), std::string::npos) << second.error();
    s.reset();

    // A stale socket file (nobody listening) is replaced.
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    ::close(fd);
    s = start();
    ASSERT_TRUE(s);
    s.reset();

    // A regular file is never deleted.
    {
        std::FILE* f = std::fopen(path_.c_str(), "w");
        std::fputs("keep", f);
        std::fclose(f);
    }
    auto third = ControlServer::listen(o, {});
    ASSERT_FALSE(third.ok());
    EXPECT_NE(third.error().find("not a socket"), std::string::npos) << third.error();
    EXPECT_TRUE(std::filesystem::is_regular_file(path_));

    // Too long for sun_path; unknown group.
    o.path = dir_.path() + "/" + std::string(200, 'p');
    auto fourth = ControlServer::listen(o, {});
    ASSERT_FALSE(fourth.ok());
    EXPECT_NE(fourth.error().find("too long"), std::string::npos) << fourth.error();
    o.path = dir_.path() + "/g.sock";
    o.group = "linecap-no-such-group-xyz";
    auto fifth = ControlServer::listen(o, {});
    ASSERT_FALSE(fifth.ok());
    EXPECT_NE(fifth.error().find("linecap-no-such-group-xyz"), std::string::npos);
}

TEST_F(ServerTest, UnknownCommandIsEnosys) {
    auto s = start();
    ASSERT_TRUE(s);
    RawConn c(path_);
    ASSERT_TRUE(c.ok());
    c.send_all(request_line("no.such.command"));
    auto r = reply(*s, c);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["status"], ENOSYS);
    EXPECT_EQ((*r)["error"], "ENOSYS");
    EXPECT_EQ((*r)["v"], kProtocolVersion);
    EXPECT_NE((*r)["message"].get<std::string>().find("no.such.command"), std::string::npos);
    // Still usable.
    EXPECT_TRUE(pongs(*s, c));
}

TEST_F(ServerTest, MalformedLinesAreAnsweredAndTheConnectionStaysUsable) {
    auto s = start();
    ASSERT_TRUE(s);
    RawConn c(path_);
    ASSERT_TRUE(c.ok());
    const std::pair<std::string, int> bad[] = {
        {"garbage", EPROTO},
        {"{\"v\":1,\"cmd\":", EPROTO},
        {"[1,2,3]", EPROTO},
        {"{\"v\":9,\"cmd\":\"ping\"}", EPROTO},
        {"{\"v\":1}", EPROTO},
        {"{\"v\":1,\"cmd\":\"ping\",\"args\":[]}", EINVAL},
        {"{\"v\":1,\"cmd\":\"\xff\xfe\"}", EPROTO},
        {std::string("{\"v\":1,\"cmd\":\"pi") + '\0' + "ng\"}", EPROTO},
    };
    for (const auto& [line, status] : bad) {
        ASSERT_TRUE(c.send_all(line + "\n"));
        auto r = reply(*s, c);
        ASSERT_TRUE(r) << "no answer to " << line;
        EXPECT_EQ((*r)["status"], status) << line;
        EXPECT_EQ((*r)["error"], errno_name(status));
        EXPECT_TRUE(pongs(*s, c)) << "no pong after " << line;
    }
    EXPECT_FALSE(c.eof());
}

TEST_F(ServerTest, HandlerExceptionIsEinvalAndSurvived) {
    auto s = start();
    ASSERT_TRUE(s);
    RawConn c(path_);
    c.send_all(request_line("throw"));
    auto r = reply(*s, c);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["status"], EINVAL);
    EXPECT_NE((*r)["message"].get<std::string>().find("handler exploded"), std::string::npos);
    EXPECT_TRUE(pongs(*s, c));
}

TEST_F(ServerTest, PipelinedSplitAndCrlfLines) {
    auto s = start();
    ASSERT_TRUE(s);
    RawConn c(path_);
    // Three requests in one write, one with CRLF, with blank lines between.
    std::string batch = request_line("count") + "\n\n" + request_line("count");
    batch.insert(batch.size() - 1, "\r");
    batch += request_line("count");
    c.send_all(batch);
    for (int i = 1; i <= 3; i++) {
        auto r = reply(*s, c);
        ASSERT_TRUE(r) << "reply " << i;
        EXPECT_EQ((*r)["data"]["n"], i);
    }
    // One request sent a byte at a time.
    std::string one = request_line("echo", {{"k", "v"}});
    for (char ch : one) {
        c.send_all(std::string_view(&ch, 1));
        s->poll(0);
    }
    auto r = reply(*s, c);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["data"]["k"], "v");
    // Nothing more than one answer per request.
    pump_for(*s, 50);
    c.read_available();
    EXPECT_EQ(c.pending(), "");
}

TEST_F(ServerTest, LineOfExactlyMaxLineIsServed) {
    auto s = start();
    ASSERT_TRUE(s);
    RawConn c(path_);
    std::string line = request_line("echo", {{"pad", ""}});
    line.pop_back();
    // Pad inside the JSON with spaces up to kMaxLine bytes before '\n'.
    line.insert(1, std::string(kMaxLine - line.size(), ' '));
    ASSERT_EQ(line.size(), kMaxLine);
    ASSERT_TRUE(c.send_all(line + "\n"));
    auto r = reply(*s, c);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["status"], 0) << (*r)["message"];
}

TEST_F(ServerTest, LongerLineIsE2bigAndClosed) {
    auto s = start();
    ASSERT_TRUE(s);
    // (a) kMaxLine + 1 bytes then a newline, in one write.
    {
        RawConn c(path_);
        std::string line = request_line("echo", {{"pad", ""}});
        line.pop_back();
        line.insert(1, std::string(kMaxLine + 1 - line.size(), ' '));
        c.send_all(line + "\n");
        auto r = reply(*s, c);
        ASSERT_TRUE(r);
        EXPECT_EQ((*r)["status"], E2BIG);
        EXPECT_EQ((*r)["error"], "E2BIG");
        EXPECT_TRUE(closed_by_server(*s, c)) << "connection kept open after E2BIG";
    }
    // (b) 1 MB without any newline, sent while the server reads.
    {
        RawConn c(path_);
        std::string junk(1 << 20, 'x');
        std::thread t([&] { c.send_all(junk); });  // fails once the server closes
        std::optional<json> r;
        pump_until(*s, [&] {
            c.read_available();
            return c.eof() || c.pending().find('\n') != std::string::npos;
        });
        t.join();
        auto line = c.take_line();
        ASSERT_TRUE(line) << "no E2BIG answer";
        r = json::parse(*line);
        EXPECT_EQ((*r)["status"], E2BIG);
        EXPECT_TRUE(closed_by_server(*s, c));
    }
    // The server still serves.
    RawConn c(path_);
    EXPECT_TRUE(pongs(*s, c));
    EXPECT_EQ(s->clients(), 1u);
}

TEST_F(ServerTest, SilentClientDoesNotBlockOthers) {
    ServerOptions o;
    o.idle_timeout_ms = 400;
    auto s = start(o);
    ASSERT_TRUE(s);
    RawConn silent(path_);
    RawConn half(path_);
    half.send_all("{\"v\":1,\"cmd\":\"pi");  // half a request, never finished
    pump_for(*s, 20);
    auto t0 = Clock::now();
    for (int i = 0; i < 20; i++) {
        RawConn c(path_);
        EXPECT_TRUE(pongs(*s, c, 1000));
    }
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(2));
    // The silent ones are dropped after the idle timeout, not before.
    EXPECT_FALSE(silent.eof());
    EXPECT_TRUE(closed_by_server(*s, silent, 3000)) << "silent client never dropped";
    EXPECT_TRUE(closed_by_server(*s, half, 3000)) << "half-line client never dropped";
    EXPECT_EQ(s->clients(), 0u);
}

TEST_F(ServerTest, SilentClientsAndThreadedClientsAtOnce) {
    auto s = start();
    ASSERT_TRUE(s);
    std::vector<std::unique_ptr<RawConn>> silent;
    for (int i = 0; i < 10; i++) silent.push_back(std::make_unique<RawConn>(path_));
    std::atomic<int> ok{0}, done{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 8; i++)
        ts.emplace_back([&] {
            for (int k = 0; k < 25; k++) {
                auto c = ControlClient::connect(path_, 3000);
                if (!c) continue;
                Request req;
                req.cmd = "ping";
                auto r = c->call(req);
                if (r && r->status == 0 && r->message == "pong") ok++;
            }
            done++;
        });
    pump_until(
        *s, [&] { return done == 8; }, 20000);
    for (auto& t : ts) t.join();
    EXPECT_EQ(ok, 8 * 25);
}

TEST_F(ServerTest, HundredClientsAtOnceOverTheLimitGetEbusy) {
    auto s = start();  // max_clients 64
    ASSERT_TRUE(s);
    constexpr int kClients = 100;
    std::atomic<int> connected{0}, finished{0}, served{0}, busy{0}, other{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int i = 0; i < kClients; i++)
        ts.emplace_back([&] {
            RawConn c(path_);
            connected++;
            if (!c.ok()) {
                other++;
                finished++;
                return;
            }
            while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            c.send_all(request_line("ping"));  // fails for a refused client: fine
            auto end = Clock::now() + std::chrono::seconds(10);
            std::optional<std::string> line;
            while (!line && !c.eof() && Clock::now() < end) {
                pollfd p{c.fd(), POLLIN, 0};
                ::poll(&p, 1, 20);
                c.read_available();
                line = c.take_line();
            }
            json j = line ? json::parse(*line, nullptr, false) : json();
            if (j.is_object() && j["status"] == 0)
                served++;
            else if (j.is_object() && j["status"] == EBUSY)
                busy++;
            else
                other++;
            finished++;
        });
    // Every client connects and is accepted before any sends.
    ASSERT_TRUE(pump_until(
        *s, [&] { return connected == kClients; }, 10000));
    pump_for(*s, 300);
    // Users other than root leave 8 connections for root.
    const int admitted = geteuid() == 0 ? 64 : 56;
    EXPECT_EQ(s->counters().clients, unsigned(admitted));
    go = true;
    pump_until(
        *s, [&] { return finished == kClients; }, 15000);
    for (auto& t : ts) t.join();
    EXPECT_EQ(served, admitted);
    EXPECT_EQ(busy, kClients - admitted);
    EXPECT_EQ(s->counters().refused_busy, uint64_t(kClients - admitted));
    EXPECT_EQ(other, 0);
    // Once they have gone, a new client is served.
    pump_for(*s, 50);
    RawConn c(path_);
    EXPECT_TRUE(pongs(*s, c));
}

TEST_F(ServerTest, HundredControlClientsEachCallingManyTimes) {
    ServerOptions o;
    o.max_clients = 128;
    auto s = start(o);
    ASSERT_TRUE(s);
    constexpr int kClients = 100, kCalls = 20;
    std::atomic<int> ok{0}, finished{0};
    std::vector<std::string> errors(kClients);
    std::vector<std::thread> ts;
    for (int i = 0; i < kClients; i++)
        ts.emplace_back([&, i] {
            auto c = ControlClient::connect(path_, 10000);
            if (!c) {
                errors[i] = c.error();
            } else {
                for (int k = 0; k < kCalls; k++) {
                    Request req;
                    req.cmd = "echo";
                    req.args = {{"client", i}, {"call", k}};
                    auto r = c->call(req);
                    if (!r) {
                        errors[i] = r.error();
                        break;
                    }
                    if (r->status == 0 && r->data["client"] == i && r->data["call"] == k) ok++;
                }
            }
            finished++;
        });
    pump_until(
        *s, [&] { return finished == kClients; }, 30000);
    for (auto& t : ts) t.join();
    EXPECT_EQ(ok, kClients * kCalls);
    for (int i = 0; i < kClients; i++) EXPECT_EQ(errors[i], "") << "client " << i;
}

TEST_F(ServerTest, ClientThatDisconnectsMidReplyDoesNotHurtTheServer) {
    auto s = start();
    ASSERT_TRUE(s);
    for (int i = 0; i < 20; i++) {
        RawConn c(path_);
        // 900 KB: more than the socket buffers hold, below the backlog bound.
        c.send_all(request_line("big", {{"size", 900 * 1024}}));
        // Let the server start writing, then vanish.
        for (int k = 0; k < 3; k++) s->poll(1);
        if (i % 2) {
            // Abortive close: RST instead of FIN.
            linger lg{1, 0};
            setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        c.close();
        pump_for(*s, 10);
    }
    pump_until(
        *s, [&] { return s->clients() == 0; }, 3000);
    EXPECT_EQ(s->clients(), 0u) << "dead clients kept";
    RawConn c(path_);
    EXPECT_TRUE(pongs(*s, c));
}

TEST_F(ServerTest, ClientThatDisconnectsBeforeTheReplyIsComputed) {
    auto s = start();
    ASSERT_TRUE(s);
    for (int i = 0; i < 50; i++) {
        RawConn c(path_);
        c.send_all(request_line("big", {{"size", 200 * 1024}}));
        c.close();
    }
    // Each accepted batch is read, answered into a dead socket and closed.
    EXPECT_TRUE(pump_until(
        *s, [&] { return s->clients() == 0; }, 5000))
        << s->clients() << " dead clients kept";
    RawConn c(path_);
    EXPECT_TRUE(pongs(*s, c));
}

TEST_F(ServerTest, LargeReplyReachesAClientThatReads) {
    auto s = start();
    ASSERT_TRUE(s);
    for (size_t size : {size_t(300) << 10, size_t(2) << 20}) {
        RawConn c(path_);
        c.send_all(request_line("big", {{"size", size}}));
        auto r = reply(*s, c, 10000);
        // The client gets an answer: the data, or an error that says why not.
        ASSERT_TRUE(r) << "a " << size << "-byte reply was dropped without a word (connection "
                       << (c.eof() ? "closed" : "open") << ")";
        if ((*r)["status"] == 0)
            EXPECT_EQ((*r)["data"]["blob"].get<std::string>().size(), size);
        else
            EXPECT_FALSE((*r)["message"].get<std::string>().empty());
    }
}

TEST_F(ServerTest, ClientThatNeverReadsIsCutOff) {
    ServerOptions o;
    o.idle_timeout_ms = 1000;
    auto s = start(o);
    ASSERT_TRUE(s);
    RawConn hog(path_);
    int small = 4096;
    setsockopt(hog.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    std::string req = request_line("big", {{"size", 1 << 20}});
    // Requests whose 1 MiB answers are never read: the server stops reading
    // them, holds at most about one answer, and drops the client once it
    // has made no progress for the idle timeout.
    bool cut = false;
    for (int i = 0; i < 200 && !cut; i++) {
        if (!hog.send_all(req)) cut = true;
        pump_for(*s, 2);
    }
    cut = cut || closed_by_server(*s, hog, 5000);
    EXPECT_TRUE(cut) << "a client that never reads was kept";
    EXPECT_LE(handlers_.big_calls, 2) << "requests parsed behind an unread 1 MiB answer";
    EXPECT_TRUE(pump_until(
        *s, [&] { return s->clients() == 0; }, 3000));
    // Meanwhile others are served.
    RawConn c(path_);
    EXPECT_TRUE(pongs(*s, c));
}

TEST_F(ServerTest, AClientThatTricklesBytesButNoRequestIsDropped) {
    ServerOptions o;
    o.idle_timeout_ms = 400;
    auto s = start(o);
    ASSERT_TRUE(s);
    RawConn slow(path_);
    const std::string partial = "{\"v\":1,\"cmd\":\"ping\",\"args\":{\"pad\":\"";
    bool dropped = false;
    // One byte every 20 ms: never idle on bytes, never a complete request.
    for (int i = 0; i < 250 && !dropped; i++) {
        slow.send_all(std::string(1, i < int(partial.size()) ? partial[size_t(i)] : 'x'));
        pump_for(*s, 20);
        slow.read_available();
        dropped = slow.eof();
    }
    EXPECT_TRUE(dropped) << "a client trickling a request that never ends was kept for 5 s";
    EXPECT_EQ(s->counters().idle_timeouts, 1u);
}

TEST_F(ServerTest, AClientThatPipelinesAndNeverReadsStaysBoundedAndIsDropped) {
    ServerOptions o;
    o.read_pause_bytes = 256 << 10;
    o.idle_timeout_ms = 1000;
    auto s = start(o);
    ASSERT_TRUE(s);
    RawConn hog(path_);
    int small = 4096;
    setsockopt(hog.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    constexpr size_t kReply = 64 << 10;
    const std::string req = request_line("big", {{"size", kReply}});
    // 2000 requests (125 MiB of answers) sent as fast as the socket takes them.
    std::string backlog;
    for (int i = 0; i < 2000; i++) backlog += req;
    size_t sent = 0;
    uint64_t peak = 0;
    bool closed = false;
    for (auto end = Clock::now() + std::chrono::seconds(8); Clock::now() < end && !closed;) {
        if (sent < backlog.size()) {
            ssize_t n = ::send(hog.fd(), backlog.data() + sent, backlog.size() - sent,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) sent += size_t(n);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) closed = true;
        }
        s->poll(5);
        peak = std::max(peak, s->counters().pending_reply_bytes);
        pollfd p{hog.fd(), 0, 0};
        if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) closed = true;
    }
    EXPECT_TRUE(closed) << "a client that never reads was kept";
    // What it could make capd hold: the pause bound plus one reply.
    EXPECT_LE(peak, o.read_pause_bytes + kReply + 4096);
    // The replies it parsed requests for: what the pause allows, plus what
    // the two sockets' kernel buffers took (well under 1 MiB), not 2000.
    EXPECT_LE(handlers_.big_calls, int((o.read_pause_bytes + kReply + (1 << 20)) / kReply))
        << "requests parsed although the replies were backed up";
    EXPECT_GE(s->counters().read_pauses, 1u);
    EXPECT_EQ(s->counters().idle_timeouts, 1u);
    EXPECT_TRUE(pump_until(
        *s, [&] { return s->clients() == 0; }, 3000));
    EXPECT_EQ(s->counters().pending_reply_bytes, 0u);
    // Meanwhile others are served.
    RawConn c(path_);
    EXPECT_TRUE(pongs(*s, c));
}

TEST_F(ServerTest, RepliesBeyondTheTotalBoundAreRefusedNotQueued) {
    ServerOptions o;
    o.max_total_pending_bytes = 1 << 20;
    o.read_pause_bytes = 4 << 20;
    auto s = start(o);
    ASSERT_TRUE(s);
    std::vector<std::unique_ptr<RawConn>> hogs;
    for (int i = 0; i < 2; i++) {
        hogs.push_back(std::make_unique<RawConn>(path_));
        int small = 4096;
        setsockopt(hogs.back()->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        hogs.back()->send_all(request_line("big", {{"size", 700 << 10}}));
        pump_for(*s, 50);
    }
    EXPECT_LE(s->counters().pending_reply_bytes, o.max_total_pending_bytes);
    EXPECT_EQ(s->counters().replies_refused_memory, 1u);
    auto r = reply(*s, *hogs[1]);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["status"], EBUSY) << (*r)["message"];
    // The first one gets all of its reply once it reads.
    r = reply(*s, *hogs[0], 10000);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["status"], 0);
}

TEST_F(ServerTest, AReplyOverTheSizeBoundIsE2big) {
    ServerOptions o;
    o.max_reply_bytes = 1 << 20;
    auto s = start(o);
    ASSERT_TRUE(s);
    RawConn c(path_);
    c.send_all(request_line("big", {{"size", 2 << 20}}));
    auto r = reply(*s, c);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["status"], E2BIG);
    EXPECT_NE((*r)["message"].get<std::string>().find("1 MiB"), std::string::npos);
    EXPECT_EQ(s->counters().oversized_replies, 1u);
}

TEST_F(ServerTest, DeferredReplyKeepsOrderWhileOthersAreServed) {
    ServerOptions o;
    o.idle_timeout_ms = 300;
    auto s = start(o);
    ASSERT_TRUE(s);
    RawConn a(path_);
    a.send_all(request_line("later") + request_line("ping"));
    ASSERT_TRUE(pump_until(*s, [&] { return handlers_.later.size() == 1; }));
    // Others are served meanwhile; `a` is waiting, not idle.
    for (int i = 0; i < 3; i++) {
        RawConn b(path_);
        b.send_all(request_line("ping"));
        auto r = reply(*s, b);
        ASSERT_TRUE(r);
        EXPECT_EQ((*r)["message"], "pong");
    }
    pump_for(*s, 600);
    a.read_available();
    EXPECT_FALSE(a.eof()) << "dropped while its reply was being prepared";
    EXPECT_EQ(a.pending(), "") << "the pipelined ping was answered before the deferred request";
    EXPECT_EQ(s->counters().deferred, 1u);
    // Completed from another thread; the answer function runs on poll()'s.
    std::thread t([d = std::move(handlers_.later[0])]() mutable {
        d.complete([] { return Response::ok("done"); });
    });
    t.join();
    auto r1 = reply(*s, a);
    auto r2 = reply(*s, a);
    ASSERT_TRUE(r1 && r2);
    EXPECT_EQ((*r1)["message"], "done");
    EXPECT_EQ((*r2)["message"], "pong");
    // A client that hangs up while it waits is let go at once; its answer
    // still runs when it comes.
    {
        RawConn gone(path_);
        gone.send_all(request_line("later"));
        ASSERT_TRUE(pump_until(*s, [&] { return handlers_.later.size() == 2; }));
        gone.close();
        EXPECT_TRUE(pump_until(
            *s, [&] { return s->counters().deferred == 0; }, 2000))
            << "a client that hung up while waiting was kept";
        EXPECT_EQ(s->counters().peer_gone, 1u);
        bool ran = false;
        handlers_.later.back().complete([&ran] {
            ran = true;
            return Response::ok("late");
        });
        handlers_.later.pop_back();
        EXPECT_TRUE(pump_until(
            *s, [&] { return ran; }, 2000));
    }
    // A Deferred dropped unanswered still answers.
    a.send_all(request_line("later"));
    ASSERT_TRUE(pump_until(*s, [&] { return handlers_.later.size() == 2; }));
    handlers_.later.pop_back();
    auto r3 = reply(*s, a);
    ASSERT_TRUE(r3);
    EXPECT_EQ((*r3)["status"], EIO);
}

// Peer credentials: a child process takes another uid/gid and connects.
// Needs root (to change uid); skipped otherwise.

struct ChildResult {
    int connect_errno = 0;
    std::string line;
};

/* Forks, drops to uid/gid with no supplementary groups, connects, sends one
 * ping and reads one line. No threads are running when this is called. */
ChildResult connect_as(const std::string& path, uid_t uid, gid_t gid, ControlServer& s) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return {-1, ""};
    pid_t pid = fork();
    if (pid == 0) {
        ::close(pipefd[0]);
        std::string out;
        if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
            setresuid(uid, uid, uid) != 0) {
            out = "E setid";
        } else {
            int fd = socket(AF_UNIX, SOCK_STREAM, 0);
            sockaddr_un a{};
            a.sun_family = AF_UNIX;
            std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
            if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
                out = "E " + std::to_string(errno);
            } else {
                std::string req = request_line("ping");
                (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
                char buf[4096];
                std::string got;
                for (int i = 0; i < 200 && got.find('\n') == std::string::npos; i++) {
                    pollfd p{fd, POLLIN, 0};
                    if (::poll(&p, 1, 50) <= 0) continue;
                    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
                    if (n <= 0) break;
                    got.append(buf, static_cast<size_t>(n));
                }
                out = "L " + got.substr(0, got.find('\n'));
            }
        }
        (void)!::write(pipefd[1], out.data(), out.size());
        _exit(0);
    }
    ::close(pipefd[1]);
    int status = 0;
    for (auto end = Clock::now() + std::chrono::seconds(15); Clock::now() < end;) {
        s.poll(5);
        if (waitpid(pid, &status, WNOHANG) == pid) break;
    }
    if (waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    std::string out;
    char buf[8192];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(pipefd[0]);
    ChildResult r;
    if (out.rfind("E ", 0) == 0)
        r.connect_errno = out == "E setid" ? -1 : std::atoi(out.c_str() + 2);
    else if (out.rfind("L ", 0) == 0)
        r.line = out.substr(2);
    else
        r.connect_errno = -2;
    return r;
}

class PeerCredTest : public ServerTest {
protected:
    void SetUp() override {
        ServerTest::SetUp();
        if (geteuid() != 0) GTEST_SKIP() << "needs root to take another uid";
        // The child must reach the socket: open the directory to everyone.
        chmod(dir_.path().c_str(), 0755);
    }
    static constexpr uid_t kNobody = 65534;
};

TEST_F(PeerCredTest, SocketModeRefusesOthersAtConnect) {
    auto s = start();
    ASSERT_TRUE(s);
    ChildResult r = connect_as(path_, kNobody, kNobody, *s);
    EXPECT_EQ(r.connect_errno, EACCES) << "line: " << r.line;
}

TEST_F(PeerCredTest, OtherUserIsRefusedWithEacces) {
    auto s = start();
    ASSERT_TRUE(s);
    ASSERT_EQ(chmod(path_.c_str(), 0666), 0);
    ChildResult r = connect_as(path_, kNobody, kNobody, *s);
    ASSERT_EQ(r.connect_errno, 0);
    json j = json::parse(r.line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.line;
    EXPECT_EQ(j["status"], EACCES);
    EXPECT_EQ(j["message"].get<std::string>().rfind("permission denied", 0), 0u) << j["message"];
    EXPECT_NE(j["message"].get<std::string>().find("65534"), std::string::npos);
    EXPECT_EQ(handlers_.count, 0);
}

TEST_F(PeerCredTest, GroupMemberIsServedOthersAreNot) {
    struct group* g = getgrgid(65534);
    if (!g) GTEST_SKIP() << "no group 65534";
    ServerOptions o;
    o.group = g->gr_name;
    auto s = start(o);
    ASSERT_TRUE(s);
    struct stat st {};
    ASSERT_EQ(stat(path_.c_str(), &st), 0);
    EXPECT_EQ(st.st_gid, 65534u) << "socket not owned by --ctl-group";
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    // Primary gid is the group: the socket's group bits let it connect and
    // the credential check lets it in.
    ChildResult in = connect_as(path_, kNobody, 65534, *s);
    ASSERT_EQ(in.connect_errno, 0);
    json j = json::parse(in.line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << in.line;
    EXPECT_EQ(j["status"], 0) << j.dump();
    EXPECT_EQ(j["message"], "pong");
    // Another gid, with the file opened to everyone: refused by credentials.
    ASSERT_EQ(chmod(path_.c_str(), 0666), 0);
    ChildResult out = connect_as(path_, kNobody, 54321, *s);
    ASSERT_EQ(out.connect_errno, 0);
    j = json::parse(out.line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << out.line;
    EXPECT_EQ(j["status"], EACCES);
    EXPECT_NE(j["message"].get<std::string>().find(g->gr_name), std::string::npos) << j["message"];
}

/* Users other than root fill every connection they may: root still gets
 * one of the slots kept for it. */
TEST_F(PeerCredTest, RootIsServedWhenOtherUsersHoldEveryOtherSlot) {
    struct group* g = getgrgid(65534);
    if (!g) GTEST_SKIP() << "no group 65534";
    ServerOptions o;
    o.group = g->gr_name;
    o.max_clients = 16;
    o.root_reserve = 4;
    auto s = start(o);
    ASSERT_TRUE(s);
    // A child as nobody opens 20 connections, pings on each, reports how
    // many were served, then holds them open until killed.
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        ::close(pipefd[0]);
        if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
            setresuid(kNobody, kNobody, kNobody) != 0)
            _exit(1);
        std::vector<int> fds;
        int served = 0, busy = 0;
        for (int i = 0; i < 20; i++) {
            int fd = socket(AF_UNIX, SOCK_STREAM, 0);
            sockaddr_un a{};
            a.sun_family = AF_UNIX;
            std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
            if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) _exit(2);
            std::string req = request_line("ping");
            (void)!::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
            std::string got;
            char buf[4096];
            for (int k = 0; k < 200 && got.find('\n') == std::string::npos; k++) {
                pollfd p{fd, POLLIN, 0};
                if (::poll(&p, 1, 50) <= 0) continue;
                ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
                if (n <= 0) break;
                got.append(buf, static_cast<size_t>(n));
            }
            if (got.find("\"pong\"") != std::string::npos)
                served++;
            else if (got.find("EBUSY") != std::string::npos)
                busy++;
            fds.push_back(fd);
        }
        std::string out = std::to_string(served) + " " + std::to_string(busy) + "\n";
        (void)!::write(pipefd[1], out.data(), out.size());
        pause();
        _exit(0);
    }
    ::close(pipefd[1]);
    std::string out;
    bool got = pump_until(
        *s,
        [&] {
            pollfd p{pipefd[0], POLLIN, 0};
            if (::poll(&p, 1, 0) <= 0) return false;
            char buf[64];
            ssize_t n = ::read(pipefd[0], buf, sizeof buf);
            if (n > 0) out.append(buf, static_cast<size_t>(n));
            return n <= 0 || out.find('\n') != std::string::npos;
        },
        20000);
    EXPECT_TRUE(got);
    EXPECT_EQ(out, "12 8\n") << "served and refused connections of uid 65534";
    EXPECT_EQ(s->counters().clients, 12u);
    // Root gets in and is answered, more than once.
    for (int i = 0; i < 2; i++) {
        RawConn c(path_);
        EXPECT_TRUE(pongs(*s, c));
    }
    EXPECT_EQ(s->counters().refused_busy, 8u);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ::close(pipefd[0]);
}

}  // namespace
