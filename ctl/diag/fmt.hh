/* printf into a std::string, for the diagnosis reports (one line at most
 * 511 characters). */
#pragma once

#include <cstdarg>
#include <cstdio>
#include <string>

namespace linecap::ctl::diag {

inline std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
inline std::string fmt(const char* f, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, f);
    std::vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

}  // namespace linecap::ctl::diag
