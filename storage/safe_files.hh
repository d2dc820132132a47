/* Entries in an output directory that other users may write to.
 *
 * capd runs as root and may write into a shared directory (a sticky /tmp, a
 * group-writable capture area). Every entry it creates, opens, renames or
 * deletes there is named relative to a descriptor of the directory, and none
 * is followed if it is a symbolic link: an entry someone else put under a
 * name capd uses is refused, never written through, re-moded or chowned.
 * Files are created exclusively (O_EXCL: an existing name, a dangling link
 * included, is EEXIST), and ownership and mode are set on the descriptor.
 *
 * Cold code: any thread, a few syscalls per call. Functions returning int
 * return -1 and set errno on failure; callers turn that into a message.
 */
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.hh"

namespace linecap::storage {

/* The directory part of `path` ("." when it has none) and its last component. */
std::pair<std::string, std::string> split_path(const std::string& path);

/* Opens directory `dir` as an O_PATH, close-on-exec descriptor (search
 * permission only). The caller owns it. */
int open_dir(const std::string& dir);

/* The part of a -w directory `tmpl` that is named literally: its leading
 * components up to the first holding a strftime conversion ('%'), "." when
 * the first does; "" when no component does (the whole directory is named
 * literally). strftime leaves that part as it is, so it begins every
 * expansion of `tmpl`. */
std::string literal_dir(const std::string& tmpl);

/* Opens the directory `rest` (a relative path) below the directory `top`,
 * one component at a time with O_DIRECTORY|O_NOFOLLOW, so no symbolic link
 * is followed, even one planted by a user who may write in `top`. Each
 * component must be a directory owned by root, by capd's effective user or
 * by `uid`. With `create` a missing component is made (mkdirat), given to
 * uid:gid (fchown; -1 keeps the creator's) and set to `mode` on its
 * descriptor. "." and empty components are skipped; ".." is refused.
 * Returns a close-on-exec descriptor the caller owns, or -1 with errno:
 * ELOOP (a symbolic link), EPERM (another user's directory), ENOTDIR (not a
 * directory), EINVAL (".."), or the open's or mkdir's; `refused` then says
 * which component and why, in words for a log line. */
int open_dir_below(int top, const std::string& rest, bool create, mode_t mode, uid_t uid, gid_t gid,
                   std::string& refused);

/* The directory `dir` of a capture file, where `top` is literal_dir() of its
 * -w directory: `top` (and with "" all of `dir`) is opened by path, as the
 * user named it (open_dir()); the rest with open_dir_below(). */
int open_capture_dir(const std::string& dir, const std::string& top, bool create, mode_t mode,
                     uid_t uid, gid_t gid, std::string& refused);

/* The part of the capture directory `dir` below `top` (literal_dir() of its
 * -w directory), as open_capture_dir() walks it; false when `dir` is not
 * below `top`. */
bool below_literal(const std::string& dir, const std::string& top, std::string& rest);

/* Walks the existing directories below the directory `top` that `rest` (the
 * part of a -w directory below literal_dir()) names: a component without
 * '%' is entered by its name, one with strftime conversions at every entry
 * `matches(component, name)` accepts, in name order. Each is entered as
 * open_dir_below() does, never creating: an entry that is a symbolic link,
 * not a directory, another user's directory or ".." is passed over,
 * unsaid. `visit(fd, path)` is called for each directory the whole of
 * `rest` names, with a descriptor valid during the call and its path:
 * `rest` with each component replaced by the name entered. Each entry read
 * from a directory with conversions in its component takes one from
 * `budget`; at 0 no more are read. Returns the directories visited. */
size_t walk_dirs_below(int top, const std::string& rest, uid_t uid,
                       const std::function<bool(const std::string&, const std::string&)>& matches,
                       const std::function<void(int, const std::string&)>& visit, size_t& budget);

/* Removes the directory `comp` of `parent` if it is empty and a directory
 * of root, capd's effective user or `uid` (never a symbolic link, never
 * "." or ".."), with unlinkat(AT_REMOVEDIR) on the descriptor, so anything
 * in it keeps it (ENOTEMPTY). Returns 0 or -1 with errno. */
int remove_empty_dir(int parent, const std::string& comp, uid_t uid);

/* The mode of a directory holding files of mode `file_mode`: search
 * permission wherever the files may be read (0640: 0750). */
mode_t dir_mode_for(mode_t file_mode);

/* Creates `leaf` in `dir`, which must not exist as any kind of entry, with
 * O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC and `flags` (O_WRONLY, O_DIRECT...).
 * The new file is given to uid:gid (fchown; -1 keeps the creator's) and gets
 * exactly `mode` (fchmod: the umask neither widens nor narrows it). If either
 * fails the file is removed again. The caller owns the descriptor. */
int create_new(int dir, const std::string& leaf, int flags, mode_t mode, uid_t uid, gid_t gid);

/* Identity of a file, to check that a name still refers to it. */
struct FileId {
    dev_t dev = 0;
    ino_t ino = 0;
    bool operator==(const FileId&) const = default;
};
inline FileId file_id(const struct stat& st) { return {st.st_dev, st.st_ino}; }

/* Why the entry `st` is not a file capd may reuse or recover as its own: ""
 * when it is a regular file with one link owned by uid, else words for a log
 * line ("a symbolic link", "owned by uid 1000", "a file with 2 links"). */
std::string foreign_entry(const struct stat& st, uid_t uid);

/* Opens the existing entry `leaf` in `dir` (O_NOFOLLOW|O_CLOEXEC|O_NONBLOCK
 * plus `flags`, no O_CREAT) if it is a regular file with one link owned by
 * uid and, with `expect`, that very file. Checked before the open, so a
 * device or FIFO is never opened, and again on the descriptor. Returns -1
 * with errno ENOENT, ELOOP (a symbolic link), EPERM (not capd's file) or
 * ESTALE (another file than `expect`). The caller owns the descriptor. */
int open_own_file(int dir, const std::string& leaf, int flags, uid_t uid,
                  const FileId* expect = nullptr);

/* Removes the entry `leaf` of `dir`; a symbolic link is removed, not its
 * target. Returns 0 or -1 with errno. */
int remove_entry(int dir, const std::string& leaf);

/* Writes `data` to `path` through a new hidden sibling renamed over it, so
 * an entry already at `path` (a symbolic link included) is replaced, never
 * followed, and a reader sees the old file or the whole new one. */
[[nodiscard]] Status replace_file(const std::string& path, std::string_view data, mode_t mode);

}  // namespace linecap::storage
