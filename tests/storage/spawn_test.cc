// -z commands: started with descriptors 0-2 only, default signal state and
// the CPUs given, whatever the starting thread holds.
#include "storage/spawn.hh"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace linecap::storage;
namespace fs = std::filesystem;

namespace {

std::string field(const std::string& status, const std::string& key) {
    std::istringstream in(status);
    for (std::string line; std::getline(in, line);)
        if (line.rfind(key + ":", 0) == 0) {
            size_t v = line.find_first_not_of(" \t", key.size() + 1);
            return v == std::string::npos ? "" : line.substr(v);
        }
    return "<none>";
}

std::string cpu_list(const std::vector<int>& cpus) {
    // As the kernel prints it: ranges "a-b", joined by commas.
    std::string out;
    for (size_t i = 0; i < cpus.size();) {
        size_t j = i;
        while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) j++;
        if (!out.empty()) out += ",";
        out += std::to_string(cpus[i]);
        if (j > i) out += "-" + std::to_string(cpus[j]);
        i = j + 1;
    }
    return out;
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(Spawn, ChildGetsOnlyStdioDefaultSignalsAndTheGivenCpus) {
    char tmpl[] = "/tmp/linecap-spawn-XXXXXX";
    fs::path dir = mkdtemp(tmpl);
    std::vector<int> all = thread_cpus();
    ASSERT_FALSE(all.empty());

    // What a writer thread holds: a descriptor without close-on-exec (as
    // DPDK's memfds), SIGPIPE ignored, a blocked signal, one CPU.
    int leaked = open("/dev/null", O_RDONLY);
    ASSERT_GE(leaked, 3);
    struct sigaction ign {
    }, old_pipe{};
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, &old_pipe);
    sigset_t usr1, old_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
    cpu_set_t one, before;
    sched_getaffinity(0, sizeof(before), &before);
    CPU_ZERO(&one);
    CPU_SET(all.back(), &one);
    sched_setaffinity(0, sizeof(one), &one);

    // Each command's stdout is a file; no shell in between (a shell may
    // reset the signal mask).
    auto run = [&](const std::vector<std::string>& argv, const fs::path& out) {
        int saved = dup(1);
        int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        dup2(o, 1);
        close(o);
        auto pid = spawn_command(argv, all);
        dup2(saved, 1);
        close(saved);
        return pid;
    };
    auto ls = run({"ls", "-l", "/proc/self/fd"}, dir / "fds");
    auto cat = run({"cat", "/proc/self/status"}, dir / "status");

    sched_setaffinity(0, sizeof(before), &before);
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    sigaction(SIGPIPE, &old_pipe, nullptr);
    close(leaked);

    for (auto* pid : {&ls, &cat}) {
        ASSERT_TRUE(pid->ok()) << pid->error();
        int st = 0;
        ASSERT_EQ(waitpid(**pid, &st, 0), **pid);
        ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
    }

    // ls's own descriptors: 0-2, and the directory it lists.
    std::istringstream fds(slurp(dir / "fds"));
    int listed = 0;
    for (std::string line; std::getline(fds, line);) {
        size_t arrow = line.find(" -> ");
        if (arrow == std::string::npos) continue;
        std::string before_arrow = line.substr(0, arrow);
        int fd = std::stoi(before_arrow.substr(before_arrow.rfind(' ') + 1));
        std::string target = line.substr(arrow + 4);
        listed++;
        if (fd > 2) {
            EXPECT_NE(target.find("/fd"), std::string::npos) << "inherited: " << line;
        }
    }
    EXPECT_GE(listed, 3);
    std::string status = slurp(dir / "status");
    EXPECT_EQ(field(status, "SigIgn"), "0000000000000000");
    EXPECT_EQ(field(status, "SigBlk"), "0000000000000000");
    EXPECT_EQ(field(status, "Cpus_allowed_list"), cpu_list(all));
    fs::remove_all(dir);
}

TEST(Spawn, MissingCommandIsAnError) {
    auto pid = spawn_command({"/nonexistent/linecap-no-such-command"}, {});
    ASSERT_FALSE(pid.ok());
    EXPECT_NE(pid.error().find("No such file"), std::string::npos) << pid.error();
}
