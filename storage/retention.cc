#include "storage/retention.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "common/quantity.hh"
#include "index/index_file.hh"

namespace linecap::storage {
namespace {

std::string human(double bytes) {
    char b[64];
    const char* units[] = {"bytes", "kB", "MB", "GB", "TB", "PB"};
    int u = 0;
    while (bytes >= 1000 && u < 5) {
        bytes /= 1000;
        u++;
    }
    snprintf(b, sizeof(b), u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
    return b;
}

/* Matches `n` digits (n > 0), or with n == 0 one or more. */
bool digits_at(const std::string& s, size_t& at, size_t n) {
    size_t start = at;
    while (at < s.size() && std::isdigit(static_cast<unsigned char>(s[at])) &&
           (n == 0 || at - start < n))
        at++;
    return n == 0 ? at > start : at - start == n;
}

/* Whether `s` from `si` on is what strftime makes of `p` from `pi` on,
 * then (with `counter`) optionally a decimal counter. */
bool match_strftime(const std::string& p, size_t pi, const std::string& s, size_t si,
                    bool counter) {
    for (; pi < p.size(); pi++) {
        if (p[pi] != '%') {
            if (si >= s.size() || s[si] != p[pi]) return false;
            si++;
            continue;
        }
        if (++pi >= p.size()) return false;
        switch (p[pi]) {
            case '%':
                if (si >= s.size() || s[si] != '%') return false;
                si++;
                break;
            case 'Y':
                if (!digits_at(s, si, 4)) return false;
                break;
            case 'm':
            case 'd':
            case 'H':
            case 'M':
            case 'S':
            case 'y':
                if (!digits_at(s, si, 2)) return false;
                break;
            case 'j':
                if (!digits_at(s, si, 3)) return false;
                break;
            case 's':
                if (!digits_at(s, si, 0)) return false;
                break;
            case 'F': return match_strftime("%Y-%m-%d" + p.substr(pi + 1), 0, s, si, counter);
            case 'T': return match_strftime("%H:%M:%S" + p.substr(pi + 1), 0, s, si, counter);
            default: return false;  // a conversion whose text is not known here
        }
    }
    // The rest: nothing, or the counter.
    if (si == s.size()) return true;
    return counter && digits_at(s, si, 0) && si == s.size();
}

}  // namespace

Result<RetainFree> parse_retain_free(const std::string& text) {
    const std::string what = "--retain-free " + text + ": ";
    auto q = split_quantity(text);
    if (!q) return make_error(what + "expected a percentage (10%) or a size (500M, 2G, 1GiB)");
    const double v = q->number;
    RetainFree f;
    if (q->unit == "%") {
        if (v <= 0 || v >= 100)
            return make_error(what + "a percentage must be above 0 and below 100 (" +
                              (v >= 100 ? "no file system is ever that free" : "0 keeps nothing") +
                              ")");
        f.pct = v;
        return f;
    }
    // Both spellings: the disk's powers of 1000 and memory's KiB..TiB.
    static constexpr QuantityUnit kUnits[] = {
        {"", 1},       {"B", 1},          {"k", 1e3},           {"K", 1e3},
        {"kB", 1e3},   {"KB", 1e3},       {"M", 1e6},           {"MB", 1e6},
        {"G", 1e9},    {"GB", 1e9},       {"T", 1e12},          {"TB", 1e12},
        {"KiB", 1024}, {"MiB", 1048576.}, {"GiB", 1073741824.}, {"TiB", 1099511627776.}};
    auto mult = unit_mult(q->unit, kUnits);
    if (!mult)
        return make_error(what + "unknown unit '" + q->unit +
                          "' (%, k, M, G, T for powers of 1000; KiB, MiB, GiB, TiB for 1024)");
    double bytes = v * *mult;
    if (bytes < 1) return make_error(what + "the size must be above 0");
    if (bytes > 1e18) return make_error(what + "the size is beyond any file system");
    f.bytes = static_cast<uint64_t>(bytes);
    return f;
}

Result<uint64_t> parse_retain_age(const std::string& text) {
    const std::string what = "--retain-age " + text + ": ";
    auto q = split_quantity(text);
    if (!q) return make_error(what + "expected a duration such as 90s, 15m, 6h or 7d");
    auto mult = unit_mult(q->unit, kSeconds);
    if (!mult) return make_error(what + "unknown unit '" + q->unit + "' (s, m, h or d)");
    double s = q->number * *mult;
    if (s < 1) return make_error(what + "must be at least 1 second");
    if (s > 100.0 * 365 * 86400) return make_error(what + "must be at most 100 years");
    return static_cast<uint64_t>(s);
}

Status check_retain_free(const std::string& dir, const RetainFree& free) {
    if (!free.on()) return Status::success();
    struct statvfs st;
    if (statvfs(dir.c_str(), &st) != 0)
        return make_error("--retain-free: " + dir + ": " + std::strerror(errno));
    double total = double(st.f_blocks) * double(st.f_frsize);
    double floor = double(free.floor(static_cast<uint64_t>(total)));
    if (free.bytes && floor >= total)
        return make_error("--retain-free " + human(floor) + ": the file system of " + dir +
                          " holds only " + human(total) + "; this floor can never be met");
    return Status::success();
}

bool retained_name(const std::string& pattern, bool timed, const std::string& leaf) {
    if (leaf.empty() || leaf[0] == '.') return false;
    if (!timed) {
        if (leaf.compare(0, pattern.size(), pattern) != 0) return false;
        size_t at = pattern.size();
        return at == leaf.size() || (digits_at(leaf, at, 0) && at == leaf.size());
    }
    return match_strftime(pattern, 0, leaf, 0, true);
}

bool strftime_dir_name(const std::string& pattern, const std::string& name) {
    if (name.empty() || name == "." || name == "..") return false;
    return match_strftime(pattern, 0, name, 0, false);
}

bool strftime_known(const std::string& pattern) {
    for (size_t at = pattern.find('%'); at != std::string::npos; at = pattern.find('%', at + 2))
        if (at + 1 >= pattern.size() ||
            std::string_view("YmdHMSyjsFT%").find(pattern[at + 1]) == std::string_view::npos)
            return false;
    return true;
}

uint64_t index_first_ns(int dir_fd, const std::string& index_leaf) {
    // Only a regular file is opened: never a device or a FIFO someone put
    // under the name.
    struct stat st;
    if (fstatat(dir_fd, index_leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        return 0;
    int fd = ::openat(dir_fd, index_leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return 0;
    index::IndexHeader h;
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? ::pread(fd, &h, sizeof(h), 0) : -1;
    ::close(fd);
    if (n != static_cast<ssize_t>(sizeof(h)) ||
        std::memcmp(h.magic, index::kIndexMagic, sizeof(h.magic)) != 0 || h.version == 0 ||
        h.version > index::kIndexVersion || h.packets == 0)
        return 0;
    return h.first_ns;
}

}  // namespace linecap::storage
