/* Result<T>: the error convention of compile-time and control code.
 *
 * A function that can fail returns Result<T>: either a value or a message a
 * person can act on ("rule 'web': syntax error near 'prot'"). Dataplane code
 * never uses it; it returns counts and bumps counters instead.
 */
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace linecap {

struct Error {
    std::string message;
};

inline Error make_error(std::string msg) { return Error{std::move(msg)}; }

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
    const std::string& error() const { return std::get<1>(v_).message; }

private:
    std::variant<T, Error> v_;
};

/* Result of an operation with no value. */
class [[nodiscard]] Status {
public:
    Status() = default;
    Status(Error err) : err_(std::move(err.message)), failed_(true) {}
    static Status success() { return Status(); }
    bool ok() const { return !failed_; }
    explicit operator bool() const { return ok(); }
    const std::string& error() const { return err_; }

private:
    std::string err_;
    bool failed_ = false;
};

}  // namespace linecap
