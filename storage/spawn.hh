/* Starting -z commands with nothing of capd's but its environment.
 *
 * capd's descriptors include root-opened ones a command must not inherit: an
 * AF_PACKET socket (frames could be injected through it), DPDK's hugepage
 * memfds and eventfds (opened without close-on-exec), the control socket.
 * Its threads are pinned to lcores and SIGPIPE is ignored. A command is
 * started as a plain program would be: descriptors 0-2 only, every signal
 * at its default action and none blocked, and the CPUs capd was allowed at
 * start, before EAL pinned its threads.
 *
 * Cold code: any thread, once per closed file. The child runs in capd's
 * memory until it execs (CLONE_VFORK, as posix_spawn does: no page-table
 * copy or copy-on-write faults for the workers), so the calling thread waits
 * for the exec, not for the command.
 */
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.hh"

namespace linecap::storage {

/* The CPUs the calling thread may run on. */
std::vector<int> thread_cpus();

/* Runs argv[0] (found through PATH when it has no '/') with `argv`. The
 * child runs on `cpus` (empty: the caller's own). Returns its pid, to be
 * reaped by the caller, or why it could not be started (exec failures
 * included). */
Result<pid_t> spawn_command(const std::vector<std::string>& argv, const std::vector<int>& cpus);

}  // namespace linecap::storage
