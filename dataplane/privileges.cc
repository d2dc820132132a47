#include "dataplane/privileges.hh"

#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace linecap::dataplane {

Status check_run_as(const std::string& user, const std::string& output_path) {
    struct passwd* pw = getpwnam(user.c_str());
    if (!pw) return make_error("-Z " + user + ": no such user");
    std::string dir = std::filesystem::path(output_path).parent_path().string();
    if (dir.empty()) dir = ".";
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    std::string name = pw->pw_name;
    pid_t pid = fork();
    if (pid < 0) return make_error(std::string("-Z: fork: ") + std::strerror(errno));
    if (pid == 0) {
        if (initgroups(name.c_str(), gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(2);
        _exit(access(dir.c_str(), W_OK | X_OK) == 0 ? 0 : 1);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return make_error("-Z " + user + ": the user cannot create files in " + dir);
    return Status::success();
}

Status drop_privileges(const std::string& user, const std::string& output_path) {
    struct passwd* pw = getpwnam(user.c_str());
    if (!pw) return make_error("-Z " + user + ": no such user");
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    std::string dir = std::filesystem::path(output_path).parent_path().string();
    if (dir.empty()) dir = ".";
    // The hidden first file was created by root: give it to the user so the
    // rename and later files work the same way.
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        std::string n = e.path().filename().string();
        if (n.size() > 9 && n[0] == '.' && n.compare(n.size() - 8, 8, ".partial") == 0)
            (void)chown(e.path().c_str(), uid, gid);
    }
    if (initgroups(pw->pw_name, gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        return make_error("-Z " + user + ": " + std::strerror(errno));
    if (setuid(0) == 0) return make_error("-Z " + user + ": root privileges could not be dropped");
    if (access(dir.c_str(), W_OK | X_OK) != 0)
        return make_error("-Z " + user + ": cannot create files in " + dir + ": " +
                          std::strerror(errno));
    return Status::success();
}

}  // namespace linecap::dataplane
