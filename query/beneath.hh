/* Opening a path inside a directory without leaving it or following a
 * symbolic link: capq --serve's file= (serve.cc).
 *
 * open_beneath(dir_fd, rel, flags): rel is relative to dir_fd; no
 * component may be a symbolic link (ELOOP) or lead out of dir_fd ("..",
 * an absolute path: EXDEV). openat2() with RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; where the kernel has none
 * (ENOSYS, before 5.6), open_beneath_walk(). flags: O_RDONLY (and
 * O_NONBLOCK, so that a FIFO does not block the open) for a file, O_PATH
 * | O_DIRECTORY for a directory; O_CLOEXEC is added. Returns the
 * descriptor, or -1 with errno (ENOENT, ELOOP, EXDEV, ENOTDIR, EACCES...).
 *
 * open_beneath_walk(): the same, one component at a time from dir_fd with
 * O_NOFOLLOW, "." and ".." refused; a component that is a link is ELOOP.
 *
 * Any thread; one or a few syscalls per component.
 */
#pragma once

#include <string>

namespace linecap::query {

int open_beneath(int dir_fd, const std::string& rel, int flags);
int open_beneath_walk(int dir_fd, const std::string& rel, int flags);

}  // namespace linecap::query
