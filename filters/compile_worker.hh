/* CompileWorker: the thread that compiles rule sets for the control socket,
 * so the control thread never waits on a compiler.
 *
 * One thread, one compile at a time, in the order submitted. submit() hands
 * it the rules and returns at once; the thread runs filters::compile() (libpcap and Hyperscan in a
 * child that is killed at CompileOptions::time_limit_ms, bounded_child.hh)
 * and calls `done` with the result, on the worker thread. `done` must not
 * touch what belongs to the control thread: capd's handlers pass the result
 * back through a Deferred (ctl/server.hh) and install it there.
 *
 * Owned by capd's composition root; created and destroyed on the control
 * side, after EAL is up. shutdown() (or the destructor) cancels a compile in
 * progress, whose `done` then gets a "cancelled" error, and joins the thread.
 */
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/result.hh"
#include "filters/rule_set_compile.hh"

namespace linecap::filters {

class CompileWorker {
public:
    using Done = std::function<void(Result<std::shared_ptr<const RuleSet>>)>;

    CompileWorker();
    ~CompileWorker();
    CompileWorker(const CompileWorker&) = delete;
    CompileWorker& operator=(const CompileWorker&) = delete;

    /* Queues a compile of `rules` (as compile(rules, opts, previous.get())).
     * Returns false, and queues nothing, after shutdown(). opts.cancel is
     * replaced by the worker's own flag. Any thread. */
    [[nodiscard]] bool submit(std::vector<RuleSpec> rules, CompileOptions opts,
                              std::shared_ptr<const RuleSet> previous, Done done);

    /* Cancels the compile in progress and those queued (each `done` hears
     * "cancelled") and joins the thread. Idempotent. */
    void shutdown();

private:
    struct Job {
        std::vector<RuleSpec> rules;
        CompileOptions opts;
        std::shared_ptr<const RuleSet> previous;
        Done done;
    };
    void main();

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Job> jobs_;  // waiting to start
    bool quit_ = false;
    std::atomic<bool> cancel_{false};
    std::thread thread_;
};

}  // namespace linecap::filters
