/* run_bounded(): compile work in a child process that can be killed.
 *
 * libpcap's optimiser is roughly cubic in the number of terms of an
 * expression and Hyperscan's compiler can take seconds on a few thousand
 * patterns; neither can be interrupted. A thread cannot be stopped from
 * outside, a process can: the work runs in a fork()ed child that writes its
 * output to a pipe and exits, and the caller kills it (SIGKILL) when the time
 * limit passes or it is told to give up. The child's memory goes with it.
 *
 * What `work` may do: it runs after fork() in a copy of a multithreaded DPDK
 * process, so it may use its own heap (glibc keeps malloc usable after fork)
 * and call libpcap and Hyperscan, nothing else: no EAL or rte_* call, no
 * stdio, no lock another thread may have held at the fork. Should it block
 * on such a lock anyway, the time limit ends it like any slow compile. The
 * child closes every inherited descriptor but the pipe, so a control client
 * or an output file is never held open by it, and dies with the thread that
 * forked it (PR_SET_PDEATHSIG).
 *
 * Any thread; blocks the calling thread until the child ends, the limit
 * passes or *cancel becomes true (checked every 20 ms). The child is always
 * reaped (waitpid on its own pid) before this returns.
 */
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <string>

#include "common/result.hh"

namespace linecap::filters {

struct BoundedOptions {
    int time_limit_ms = 10000;                  // > 0
    const std::atomic<bool>* cancel = nullptr;  // optional: true stops the child
    size_t max_output = size_t{256} << 20;      // bytes the child may send back
};

/* Runs work() in a child and returns its output, or its error message.
 * Errors of its own, each starting with `what`:
 *   "<what> took longer than 10 s and was stopped (--compile-timeout)"
 *   "<what> cancelled: capd is stopping"
 *   "<what>: the compiling process died (signal 11)" (a crash or the OOM killer)
 *   "<what>: fork: <strerror>" and other system errors. */
[[nodiscard]] Result<std::string> run_bounded(const std::function<Result<std::string>()>& work,
                                              const BoundedOptions& opts, const std::string& what);

}  // namespace linecap::filters
