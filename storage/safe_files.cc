#include "storage/safe_files.hh"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
