#include "filters/compile_worker.hh"

namespace linecap::filters {

CompileWorker::CompileWorker() : thread_([this] { main(); }) {}

CompileWorker::~CompileWorker() { shutdown(); }

bool CompileWorker::submit(std::vector<RuleSpec> rules, CompileOptions opts,
                           std::shared_ptr<const RuleSet> previous, Done done) {
    std::lock_guard<std::mutex> lock(mu_);
    if (busy_ || quit_) return false;
    opts.cancel = &cancel_;
    job_ = std::make_unique<Job>(
        Job{std::move(rules), std::move(opts), std::move(previous), std::move(done)});
    busy_ = true;
    cv_.notify_one();
    return true;
}

bool CompileWorker::busy() const {
    std::lock_guard<std::mutex> lock(mu_);
    return busy_;
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
        std::unique_ptr<Job> job;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [this] { return quit_ || job_ != nullptr; });
            if (job_ == nullptr) return;  // quit with nothing to do
            job = std::move(job_);
        }
        // A job submitted before shutdown() still runs, and its child sees
        // cancel_ at once: `done` hears "cancelled" rather than nothing.
        auto result = compile(job->rules, job->opts, job->previous.get());
        job->done(std::move(result));
        job.reset();  // the previous set may be the last owner of big objects
        std::lock_guard<std::mutex> lock(mu_);
        busy_ = false;
    }
}

}  // namespace linecap::filters
