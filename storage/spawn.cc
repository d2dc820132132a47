#include "storage/spawn.hh"

#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace linecap::storage {
namespace {

constexpr size_t kChildStack = 256 * 1024;

struct ChildArgs {
    char* const* argv;
    const cpu_set_t* cpus;  // null: keep the caller's
    unsigned max_fd;        // for kernels without close_range
    int exec_errno = 0;     // written by the child when exec fails
};

/* Runs in the child on its own stack, in the parent's memory, until exec:
 * system calls only, no allocation. */
int child_main(void* p) {
    auto* a = static_cast<ChildArgs*>(p);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    // SIGKILL, SIGSTOP and the C library's own signals refuse; nothing else.
    for (int s = 1; s < NSIG; s++) (void)sigaction(s, &dfl, nullptr);
    if (a->cpus) (void)sched_setaffinity(0, sizeof(cpu_set_t), a->cpus);
    if (close_range(3, ~0u, 0) != 0)
        for (unsigned fd = 3; fd < a->max_fd; fd++) (void)close(static_cast<int>(fd));
    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, nullptr);
    execvp(a->argv[0], a->argv);
    a->exec_errno = errno;
    _exit(127);
}

}  // namespace

std::vector<int> thread_cpus() {
    std::vector<int> out;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return out;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) out.push_back(c);
    return out;
}

Result<pid_t> spawn_command(const std::vector<std::string>& argv, const std::vector<int>& cpus) {
    if (argv.empty()) return make_error("no command");
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus)
        if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &set);
    ChildArgs a;
    a.argv = args.data();
    a.cpus = CPU_COUNT(&set) > 0 ? &set : nullptr;
    struct rlimit lim;
    a.max_fd = getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < (1u << 20)
                   ? static_cast<unsigned>(lim.rlim_cur)
                   : (1u << 20);
    std::vector<char> stack(kChildStack);
    // No handler of capd's may run in the child before it resets them.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid =
        clone(child_main, stack.data() + stack.size(), CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    int err = errno;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) return make_error(argv[0] + ": cannot start: " + std::strerror(err));
    if (a.exec_errno != 0) {
        while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
        return make_error(argv[0] + ": " + std::strerror(a.exec_errno));
    }
    return pid;
}

}  // namespace linecap::storage
