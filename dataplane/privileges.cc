#include "dataplane/privileges.hh"

#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "storage/safe_files.hh"

namespace linecap::dataplane {
namespace {

/* The directory the user must be able to create files in: that of
 * output_path or, when -G names directories by strftime, the part of it
 * named literally, where capd makes them (storage/safe_files.hh). */
std::string dir_to_write(const std::string& output_path, bool timed) {
    const std::string dir = std::filesystem::path(output_path).parent_path().string();
    if (dir.empty()) return ".";
    std::string literal = timed ? storage::literal_dir(dir) : std::string();
    return literal.empty() ? dir : literal;
}

}  // namespace

Result<RunAs> check_run_as(const std::string& user, const std::string& output_path, bool timed) {
    struct passwd* pw = getpwnam(user.c_str());
    if (!pw) return make_error("-Z " + user + ": no such user");
    const std::string dir = dir_to_write(output_path, timed);
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    std::string name = pw->pw_name;
    pid_t pid = fork();
    if (pid < 0) return make_error(std::string("-Z: fork: ") + std::strerror(errno));
    if (pid == 0) {
        if (initgroups(name.c_str(), gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(2);
        // -w -: the capture goes to the standard output capd already holds.
        _exit(output_path == "-" || access(dir.c_str(), W_OK | X_OK) == 0 ? 0 : 1);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return make_error("-Z " + user + ": the user cannot create files in " + dir);
    return RunAs{uid, gid};
}

Status drop_privileges(const std::string& user, const std::string& output_path, bool timed) {
    struct passwd* pw = getpwnam(user.c_str());
    if (!pw) return make_error("-Z " + user + ": no such user");
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    const std::string dir = dir_to_write(output_path, timed);
    if (initgroups(pw->pw_name, gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        return make_error("-Z " + user + ": " + std::strerror(errno));
    if (setuid(0) == 0) return make_error("-Z " + user + ": root privileges could not be dropped");
    if (output_path != "-" && access(dir.c_str(), W_OK | X_OK) != 0)
        return make_error("-Z " + user + ": cannot create files in " + dir + ": " +
                          std::strerror(errno));
    return Status::success();
}

}  // namespace linecap::dataplane
