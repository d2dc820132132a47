#include "filters/compile_worker.hh"

namespace linecap::filters {

CompileWorker::CompileWorker() : thread_([this] { main(); }) {}

CompileWorker::~CompileWorker() { shutdown(); }

bool CompileWorker::submit(std::vector<RuleSpec> rules, CompileOptions opts,
                           std::shared_ptr<const RuleSet> previous, Done done) {
    std::lock_guard<std::mutex> lock(mu_);
    if (quit_) return false;
    opts.cancel = &cancel_;
    jobs_.push_back(Job{std::move(rules), std::move(opts), std::move(previous), std::move(done)});
    cv_.notify_one();
    return true;
}

void CompileWorker::shutdown() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        quit_ = true;
        cancel_.store(true);
        cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
}

void CompileWorker::main() {
    for (;;) {
        Job job;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [this] { return quit_ || !jobs_.empty(); });
            if (jobs_.empty()) return;  // quit with nothing to do
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        // Jobs queued before shutdown() still run, and their child sees
        // cancel_ at once: `done` hears "cancelled" rather than nothing.
        Result<std::shared_ptr<const RuleSet>> result = make_error("compile: not run");
        try {
            result = compile(job.rules, job.opts, job.previous.get());
        } catch (const std::exception& e) {
            // Allocation failure in the compilers: a refused change, not an
            // exception escaping this thread.
            result = make_error(std::string("compile: ") + e.what());
        }
        job.done(std::move(result));
    }
}

}  // namespace linecap::filters
