#include "storage/safe_files.hh"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace linecap::storage {

std::pair<std::string, std::string> split_path(const std::string& path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return {".", path};
    if (slash == 0) return {"/", path.substr(1)};
    return {path.substr(0, slash), path.substr(slash + 1)};
}

int open_dir(const std::string& dir) {
    return ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
}

std::string literal_dir(const std::string& tmpl) {
    size_t pct = tmpl.find('%');
    if (pct == std::string::npos) return {};
    size_t slash = tmpl.rfind('/', pct);
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return tmpl.substr(0, slash);
}

mode_t dir_mode_for(mode_t file_mode) { return file_mode | ((file_mode & 0444) >> 2); }

namespace {

/* Whether a directory owned by `owner` may hold capd's files: root's, capd's
 * effective user's or the files' owner's (-Z). */
bool trusted_owner(uid_t owner, uid_t uid) {
    return owner == 0 || owner == geteuid() || (uid != static_cast<uid_t>(-1) && owner == uid);
}

/* The directory `comp` of `parent` just made by capd: opened without
 * following a link, checked to be the directory made (capd's own), given to
 * uid:gid and set to `mode`. */
int own_new_dir(int parent, const std::string& comp, mode_t mode, uid_t uid, gid_t gid,
                std::string& why) {
    int fd = ::openat(parent, comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        why = std::string("was made but cannot be opened: ") + std::strerror(errno);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_uid != geteuid()) {
        // Another directory took its name since the mkdir.
        ::close(fd);
        why = "was replaced by another user's directory";
        errno = EPERM;
        return -1;
    }
    bool chown_ok = (uid == static_cast<uid_t>(-1) && gid == static_cast<gid_t>(-1)) ||
                    fchown(fd, uid, gid) == 0;
    if (!chown_ok || fchmod(fd, mode) != 0) {
        int err = errno;
        ::close(fd);
        (void)::unlinkat(parent, comp.c_str(), AT_REMOVEDIR);
        why = std::string("cannot be given its owner and mode: ") + std::strerror(err);
        errno = err;
        return -1;
    }
    return fd;
}

/* One step of open_dir_below(): the directory `comp` of `parent`. */
int enter_dir(int parent, const std::string& comp, bool create, mode_t mode, uid_t uid, gid_t gid,
              std::string& why) {
    if (comp == "..") {
        why = "is '..', which capd does not walk up through below the named directory";
        errno = EINVAL;
        return -1;
    }
    const int flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = ::openat(parent, comp.c_str(), flags);
    if (fd < 0 && errno == ENOENT && create) {
        if (::mkdirat(parent, comp.c_str(), 0700) == 0)
            return own_new_dir(parent, comp, mode, uid, gid, why);
        if (errno != EEXIST) {
            why = std::string("cannot be made: ") + std::strerror(errno);
            return -1;
        }
        fd = ::openat(parent, comp.c_str(), flags);  // made by someone else meanwhile
    }
    if (fd < 0) {
        int err = errno;
        struct stat st;
        if (err == ENOTDIR && fstatat(parent, comp.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
            err = S_ISLNK(st.st_mode) ? ELOOP : ENOTDIR;
            why = err == ELOOP ? "is a symbolic link" : "is not a directory";
        } else {
            why = std::string("cannot be opened: ") + std::strerror(err);
        }
        errno = err;
        return -1;
    }
    // Checked on the descriptor: the name may have changed since the open.
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        why = std::string("cannot be checked: ") + std::strerror(err);
        errno = err;
        return -1;
    }
    if (!trusted_owner(st.st_uid, uid)) {
        ::close(fd);
        why = "is owned by uid " + std::to_string(st.st_uid) +
              ", neither root nor capd's user nor the files' owner";
        errno = EPERM;
        return -1;
    }
    return fd;
}

}  // namespace

int open_dir_below(int top, const std::string& rest, bool create, mode_t mode, uid_t uid, gid_t gid,
                   std::string& refused) {
    int cur = ::fcntl(top, F_DUPFD_CLOEXEC, 0);
    if (cur < 0) return -1;
    std::string walked;
    for (size_t at = 0; at <= rest.size();) {
        size_t slash = std::min(rest.find('/', at), rest.size());
        std::string comp = rest.substr(at, slash - at);
        at = slash + 1;
        if (comp.empty() || comp == ".") continue;
        walked += (walked.empty() ? "" : "/") + comp;
        std::string why;
        int next = enter_dir(cur, comp, create, mode, uid, gid, why);
        int err = errno;
        ::close(cur);
        if (next < 0) {
            refused = walked + " " + why;
            errno = err;
            return -1;
        }
        cur = next;
    }
    return cur;
}

bool below_literal(const std::string& dir, const std::string& top, std::string& rest) {
    // All of `dir` for a relative "." that `dir` does not spell out.
    if (top == "." && dir != "." && dir.rfind("./", 0) != 0) {
        rest = dir;
        return true;
    }
    if (dir.compare(0, top.size(), top) == 0 &&
        (dir.size() == top.size() || dir[top.size()] == '/' || top.back() == '/')) {
        rest = dir.substr(top.size());
        return true;
    }
    return false;
}

int open_capture_dir(const std::string& dir, const std::string& top, bool create, mode_t mode,
                     uid_t uid, gid_t gid, std::string& refused) {
    if (top.empty()) return open_dir(dir);
    std::string rest;
    if (!below_literal(dir, top, rest)) {
        refused = "directory " + dir + " is not below " + top;
        errno = EINVAL;
        return -1;
    }
    int tfd = open_dir(top);
    if (tfd < 0) return -1;
    std::string why;
    int fd = open_dir_below(tfd, rest, create, mode, uid, gid, why);
    int err = errno;
    ::close(tfd);
    if (fd < 0) {
        refused = "directory " +
                  (top == "." ? std::string() : top + (top.back() == '/' ? "" : "/")) + why;
        errno = err;
    }
    return fd;
}

namespace {

/* walk_dirs_below()'s state: the walk is depth first, so at most one
 * descriptor per component is open. */
struct DirWalk {
    const std::string& rest;
    uid_t uid;
    const std::function<bool(const std::string&, const std::string&)>& matches;
    const std::function<void(int, const std::string&)>& visit;
    size_t& budget;
    size_t visited = 0;

    /* The names in `dir` that component `comp` may name, sorted. */
    std::vector<std::string> candidates(int dir, const std::string& comp) {
        if (comp.find('%') == std::string::npos) return {comp};
        std::vector<std::string> names;
        int rd = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR* d = rd >= 0 ? fdopendir(rd) : nullptr;
        if (!d) {
            if (rd >= 0) ::close(rd);
            return names;
        }
        while (budget > 0) {
            struct dirent* e = readdir(d);
            if (!e) break;
            budget--;
            // Only a directory is entered (the type is checked again on
            // the descriptor); a file system without d_type says unknown.
            if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue;
            if (matches(comp, e->d_name)) names.emplace_back(e->d_name);
        }
        closedir(d);
        std::sort(names.begin(), names.end());
        return names;
    }

    /* Walks `rest` from `at` below `dir`, whose path is `path`. */
    void walk(int dir, size_t at, const std::string& path) {
        size_t start = at;
        for (;;) {
            if (at >= rest.size()) {
                visit(dir, path + rest.substr(std::min(start, rest.size())));
                visited++;
                return;
            }
            size_t slash = std::min(rest.find('/', at), rest.size());
            std::string comp = rest.substr(at, slash - at);
            if (comp.empty() || comp == ".") {
                at = slash + 1;
                continue;
            }
            const std::string lead = path + rest.substr(start, at - start);
            for (const std::string& name : candidates(dir, comp)) {
                std::string why;
                int fd = enter_dir(dir, name, false, 0, uid, static_cast<gid_t>(-1), why);
                if (fd < 0) continue;  // not a directory capd may walk
                walk(fd, slash, lead + name);
                ::close(fd);
            }
            return;
        }
    }
};

}  // namespace

size_t walk_dirs_below(int top, const std::string& rest, uid_t uid,
                       const std::function<bool(const std::string&, const std::string&)>& matches,
                       const std::function<void(int, const std::string&)>& visit, size_t& budget) {
    DirWalk w{rest, uid, matches, visit, budget};
    w.walk(top, 0, "");
    return w.visited;
}

int remove_empty_dir(int parent, const std::string& comp, uid_t uid) {
    if (comp.empty() || comp == "." || comp == ".." || comp.find('/') != std::string::npos) {
        errno = EINVAL;
        return -1;
    }
    struct stat st;
    if (fstatat(parent, comp.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    if (!trusted_owner(st.st_uid, uid)) {
        errno = EPERM;
        return -1;
    }
    return ::unlinkat(parent, comp.c_str(), AT_REMOVEDIR);
}

int create_new(int dir, const std::string& leaf, int flags, mode_t mode, uid_t uid, gid_t gid) {
    int fd = ::openat(dir, leaf.c_str(), flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    // On the descriptor of the file just made: nothing else can be named.
    bool chown_ok = (uid == static_cast<uid_t>(-1) && gid == static_cast<gid_t>(-1)) ||
                    fchown(fd, uid, gid) == 0;
    if (!chown_ok || fchmod(fd, mode) != 0) {
        int err = errno;
        ::close(fd);
        (void)::unlinkat(dir, leaf.c_str(), 0);
        errno = err;
        return -1;
    }
    return fd;
}

std::string foreign_entry(const struct stat& st, uid_t uid) {
    if (S_ISLNK(st.st_mode)) return "a symbolic link";
    if (S_ISDIR(st.st_mode)) return "a directory";
    if (!S_ISREG(st.st_mode)) return "not a regular file";
    if (st.st_uid != uid) return "owned by uid " + std::to_string(st.st_uid);
    if (st.st_nlink != 1) return "a file with " + std::to_string(st.st_nlink) + " links";
    return {};
}

int open_own_file(int dir, const std::string& leaf, int flags, uid_t uid, const FileId* expect) {
    struct stat st;
    if (fstatat(dir, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
    if (S_ISLNK(st.st_mode)) {
        errno = ELOOP;
        return -1;
    }
    if (!foreign_entry(st, uid).empty()) {
        errno = EPERM;
        return -1;
    }
    if (expect && !(file_id(st) == *expect)) {
        errno = ESTALE;
        return -1;
    }
    // The name may have changed since: the descriptor is checked again.
    int fd = ::openat(dir, leaf.c_str(), flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct stat now;
    if (fstat(fd, &now) != 0 || !(file_id(now) == file_id(st)) ||
        !foreign_entry(now, uid).empty()) {
        ::close(fd);
        errno = ESTALE;
        return -1;
    }
    // O_NONBLOCK was for the open only; file writes do not use it.
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

int remove_entry(int dir, const std::string& leaf) { return ::unlinkat(dir, leaf.c_str(), 0); }

Status replace_file(const std::string& path, std::string_view data, mode_t mode) {
    auto [dir_name, leaf] = split_path(path);
    int dir = open_dir(dir_name);
    if (dir < 0) return make_error(path + ": " + std::strerror(errno));
    // The pid keeps two processes writing the same path apart.
    std::string tmp = "." + leaf + "." + std::to_string(getpid()) + ".partial";
    int fd = create_new(dir, tmp, O_WRONLY, mode, static_cast<uid_t>(-1), static_cast<gid_t>(-1));
    if (fd < 0) {
        int err = errno;
        ::close(dir);
        if (err == EEXIST)
            return make_error(path + ": " + tmp +
                              " already exists (not capd's to follow or "
                              "remove); remove it or choose another name");
        return make_error(path + ": " + std::strerror(err));
    }
    const char* p = data.data();
    size_t left = data.size();
    int err = 0;
    while (left > 0) {
        ssize_t w = ::write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            err = w < 0 ? errno : ENOSPC;
            break;
        }
        p += w;
        left -= static_cast<size_t>(w);
    }
    if (::close(fd) != 0 && err == 0) err = errno;
    if (err == 0 && ::renameat(dir, tmp.c_str(), dir, leaf.c_str()) != 0) err = errno;
    if (err != 0) (void)remove_entry(dir, tmp);
    ::close(dir);
    if (err != 0) return make_error(path + ": " + std::strerror(err));
    return Status::success();
}

}  // namespace linecap::storage
