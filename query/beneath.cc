#include "query/beneath.hh"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <vector>

namespace linecap::query {

int open_beneath(int dir_fd, const std::string& rel, int flags) {
    open_how how{};
    // O_PATH | O_NOFOLLOW would open a final link itself; without
    // O_NOFOLLOW, RESOLVE_NO_SYMLINKS refuses it (ELOOP).
    how.flags = uint64_t(flags | O_CLOEXEC | ((flags & O_PATH) ? 0 : O_NOFOLLOW));
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const long fd = ::syscall(SYS_openat2, dir_fd, rel.c_str(), &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return int(fd);
    return open_beneath_walk(dir_fd, rel, flags);
}

int open_beneath_walk(int dir_fd, const std::string& rel, int flags) {
    if (rel.empty() || rel[0] == '/') {
        errno = rel.empty() ? ENOENT : EXDEV;
        return -1;
    }
    std::vector<std::string> parts;
    for (size_t at = 0; at <= rel.size();) {
        size_t slash = rel.find('/', at);
        if (slash == std::string::npos) slash = rel.size();
        if (slash > at) parts.push_back(rel.substr(at, slash - at));
        at = slash + 1;
    }
    int cur = dir_fd;
    for (size_t i = 0; i < parts.size(); i++) {
        const std::string& part = parts[i];
        const bool last = i + 1 == parts.size();
        int next = -1;
        int e = EXDEV;
        if (part != "." && part != "..") {
            next = ::openat(cur, part.c_str(),
                            last ? flags | O_NOFOLLOW | O_CLOEXEC
                                 : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            e = errno;
            struct stat st;
            // O_PATH | O_NOFOLLOW opens a link itself; O_DIRECTORY or a
            // plain O_NOFOLLOW open of one fails with ENOTDIR or ELOOP.
            // Either way a link was in the path.
            if (next >= 0 ? ::fstat(next, &st) == 0 && S_ISLNK(st.st_mode)
                          : ::fstatat(cur, part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                S_ISLNK(st.st_mode)) {
                if (next >= 0) ::close(next);
                next = -1;
                e = ELOOP;
            }
        }
        if (cur != dir_fd) ::close(cur);
        if (next < 0) {
            errno = e;
            return -1;
        }
        cur = next;
    }
    return cur;
}

}  // namespace linecap::query
