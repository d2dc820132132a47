/* RuleSnapshot: the rule set in force plus one scratch per worker, published
 * to the workers through an atomic pointer and reclaimed under RCU.
 *
 * The control thread builds a snapshot (compile may fail: nothing changes),
 * swaps the pointer, waits with rte_rcu_qsbr_synchronize() until every worker
 * has passed a quiescent point (between bursts), folds the old snapshot's
 * per-rule counters into the running totals and frees it. A packet is
 * therefore counted by exactly one snapshot.
 */
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "filters/rule_set.hh"

namespace linecap::dataplane {

struct RuleSnapshot {
    std::vector<filters::RuleSpec> specs;
    std::shared_ptr<const filters::RuleSet> rules;
    std::vector<std::unique_ptr<filters::Scratch>> scratch;  // one per worker
    uint64_t generation = 0;
    // Some rule sets its own flow cutoff (RuleSpec::flow_cutoff_set): the
    // workers then ask classify_burst() which rule took each packet and
    // look its cutoff up here (indexed like specs).
    bool rule_cutoffs = false;
    struct Cutoff {
        uint64_t bytes = 0, packets = 0;
        bool set = false;
    };
    std::vector<Cutoff> cutoffs;
};

}  // namespace linecap::dataplane
