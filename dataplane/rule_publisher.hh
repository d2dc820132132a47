/* RulePublisher: the rule set in force, published to the workers as an
 * immutable RuleSnapshot behind an atomic pointer and reclaimed under RCU
 * (rule_snapshot.hh says how a snapshot is shared).
 *
 *   create()   compiles the first set and makes the RCU state for `workers`
 *              worker threads (thread id = worker index). Needs the EAL.
 *   replace()  compiles a new set (blocking) and installs it.
 *   install()  swaps in a set compiled elsewhere (CompileWorker): builds
 *              its snapshot, stores the pointer, waits with
 *              rte_rcu_qsbr_synchronize() until no worker can hold the old
 *              one, folds the old one's per-rule counters into the retired
 *              totals and frees it. On a compile error nothing changes.
 *   totals()   per-rule counters: retired snapshots' plus the live one's.
 *
 * Threads: every method on the control side, one thread at a time; the
 * workers only read slot() and report quiescent states to qsbr().
 */
#pragma once

#include <rte_rcu_qsbr.h>

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hh"
#include "dataplane/rule_snapshot.hh"
#include "dataplane/summary.hh"
#include "filters/rule_set.hh"

namespace linecap::dataplane {

class RulePublisher {
public:
    /* Errors: the compile's message (naming the rule), or no memory for the
     * RCU state. */
    [[nodiscard]] static Result<std::unique_ptr<RulePublisher>> create(
        std::vector<filters::RuleSpec> specs, const filters::CompileOptions& copts,
        unsigned workers);
    ~RulePublisher();
    RulePublisher(const RulePublisher&) = delete;
    RulePublisher& operator=(const RulePublisher&) = delete;

    /* What a worker reads every burst, and where it reports. */
    std::atomic<RuleSnapshot*>* slot() { return &snapshot_; }
    rte_rcu_qsbr* qsbr() const { return qsbr_.get(); }

    const RuleSnapshot& current() const { return *owned_; }
    const filters::CompileOptions& compile_options() const { return copts_; }

    [[nodiscard]] Status replace(std::vector<filters::RuleSpec> specs);
    [[nodiscard]] Status install(std::vector<filters::RuleSpec> specs,
                                 std::shared_ptr<const filters::RuleSet> compiled);

    std::vector<RuleSummary> totals() const;

private:
    struct RteFree {
        void operator()(void* p) const;
    };
    struct Totals {
        uint64_t packets = 0, bytes = 0;
    };
    RulePublisher(const filters::CompileOptions& copts, unsigned workers)
        : copts_(copts), workers_(workers) {}
    std::unique_ptr<RuleSnapshot> snapshot_of(std::vector<filters::RuleSpec> specs,
                                              std::shared_ptr<const filters::RuleSet> rs);
    static std::vector<Totals> totals_of(const RuleSnapshot& snap);
    void retire(const RuleSnapshot& old);

    filters::CompileOptions copts_;
    unsigned workers_;
    std::unique_ptr<rte_rcu_qsbr, RteFree> qsbr_;
    std::atomic<RuleSnapshot*> snapshot_{nullptr};
    std::unique_ptr<RuleSnapshot> owned_;  // what snapshot_ points at
    uint64_t generation_ = 0;
    // Totals of retired snapshots, by rule name, in order of first use.
    std::vector<std::pair<std::string, Totals>> retired_;
};

}  // namespace linecap::dataplane
