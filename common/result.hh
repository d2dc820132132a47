/* Result<T> and Status: the error convention of compile-time and control code.
 *
 * A function that can fail returns Result<T> (a value) or Status (none):
 * either success, or an Error made of an errno-style code and a message a
 * person can act on ("rule 'web': syntax error near 'prot'"). The code is
 * what programs branch on, e.g. the control handlers answer it as the
 * protocol's status (ctl/protocol.hh); the message is what people read, and
 * nothing parses it. make_error(msg) says EINVAL, "bad input", the common
 * case; make_error(code, msg) says anything else (ENOENT, E2BIG, ETIMEDOUT...).
 * To add context and keep the code: make_error(r.code(), "rule 'x': " + r.error()).
 * Dataplane code never uses it; it returns counts and bumps counters instead.
 * It lives in common/ because every module uses it and none owns it.
 */
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace linecap {

struct Error {
    int code = EINVAL;  // errno value, never 0
    std::string message;
};

inline Error make_error(std::string msg) { return Error{EINVAL, std::move(msg)}; }
/* A code of 0 (no error) is taken as EINVAL: a failure always has a code. */
inline Error make_error(int code, std::string msg) {
    return Error{code != 0 ? code : EINVAL, std::move(msg)};
}

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error err) : v_(std::move(err)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() { return std::get<0>(v_); }
    const T& value() const { return std::get<0>(v_); }
    T& operator*() { return value(); }
    T* operator->() { return &value(); }
    /* Failed results only. */
    const std::string& error() const { return std::get<1>(v_).message; }
    const Error& failure() const { return std::get<1>(v_); }
    /* The errno-style code; 0 for success. */
    int code() const { return ok() ? 0 : std::get<1>(v_).code; }

private:
    std::variant<T, Error> v_;
};

/* Result of an operation with no value. */
class [[nodiscard]] Status {
public:
    Status() = default;
    Status(Error err) : err_(std::move(err)), failed_(true) {}
    static Status success() { return Status(); }
    bool ok() const { return !failed_; }
    explicit operator bool() const { return ok(); }
    /* The message ("" for success), the errno-style code (0 for success). */
    const std::string& error() const { return err_.message; }
    int code() const { return failed_ ? err_.code : 0; }
    const Error& failure() const { return err_; }

private:
    Error err_;
    bool failed_ = false;
};

}  // namespace linecap
