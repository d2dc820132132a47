#include "dataplane/rule_publisher.hh"

#include <rte_malloc.h>

#include <algorithm>

namespace linecap::dataplane {

void RulePublisher::RteFree::operator()(void* p) const { rte_free(p); }

Result<std::unique_ptr<RulePublisher>> RulePublisher::create(std::vector<filters::RuleSpec> specs,
                                                             const filters::CompileOptions& copts,
                                                             unsigned workers) {
    std::unique_ptr<RulePublisher> pub(new RulePublisher(copts, workers));
    auto rs = filters::compile(specs, copts, nullptr);
    if (!rs) return make_error(rs.error());
    pub->owned_ = pub->snapshot_of(std::move(specs), std::move(*rs));
    pub->snapshot_.store(pub->owned_.get());
    size_t qsz = rte_rcu_qsbr_get_memsize(workers);
    pub->qsbr_.reset(
        static_cast<rte_rcu_qsbr*>(rte_zmalloc("capd_qsbr", qsz, RTE_CACHE_LINE_SIZE)));
    if (!pub->qsbr_ || rte_rcu_qsbr_init(pub->qsbr_.get(), workers) != 0)
        return make_error("RCU state: out of memory");
    for (unsigned w = 0; w < workers; w++) rte_rcu_qsbr_thread_register(pub->qsbr_.get(), w);
    return pub;
}

RulePublisher::~RulePublisher() = default;

std::unique_ptr<RuleSnapshot> RulePublisher::snapshot_of(
    std::vector<filters::RuleSpec> specs, std::shared_ptr<const filters::RuleSet> rs) {
    auto snap = std::make_unique<RuleSnapshot>();
    snap->specs = std::move(specs);
    snap->rules = std::move(rs);
    for (unsigned w = 0; w < workers_; w++) snap->scratch.push_back(snap->rules->make_scratch());
    snap->generation = ++generation_;
    for (const auto& s : snap->specs) {
        snap->cutoffs.push_back({s.flow_cutoff_bytes, s.flow_cutoff_packets, s.flow_cutoff_set});
        snap->rule_cutoffs |= s.flow_cutoff_set;
    }
    return snap;
}

Status RulePublisher::replace(std::vector<filters::RuleSpec> specs) {
    auto rs = filters::compile(specs, copts_, owned_->rules.get());
    if (!rs) return make_error(rs.error());
    return install(std::move(specs), std::move(*rs));
}

Status RulePublisher::install(std::vector<filters::RuleSpec> specs,
                              std::shared_ptr<const filters::RuleSet> compiled) {
    std::unique_ptr<RuleSnapshot> old = std::move(owned_);
    owned_ = snapshot_of(std::move(specs), std::move(compiled));
    snapshot_.store(owned_.get(), std::memory_order_release);
    // Wait until no worker can still hold the old snapshot; its counters are
    // then final.
    rte_rcu_qsbr_synchronize(qsbr_.get(), RTE_QSBR_THRID_INVALID);
    retire(*old);
    return Status::success();
}

std::vector<RulePublisher::Totals> RulePublisher::totals_of(const RuleSnapshot& snap) {
    std::vector<Totals> t(snap.rules->rule_names().size());
    for (const auto& sc : snap.scratch) {
        auto c = sc->counters();
        for (size_t r = 0; r < t.size() && r < c.size(); r++) {
            t[r].packets += c[r].packets;
            t[r].bytes += c[r].bytes;
        }
    }
    return t;
}

void RulePublisher::retire(const RuleSnapshot& old) {
    auto names = old.rules->rule_names();
    auto totals = totals_of(old);
    for (size_t r = 0; r < names.size(); r++) {
        auto it = std::find_if(retired_.begin(), retired_.end(),
                               [&](const auto& e) { return e.first == names[r]; });
        if (it == retired_.end()) {
            retired_.emplace_back(names[r], totals[r]);
        } else {
            it->second.packets += totals[r].packets;
            it->second.bytes += totals[r].bytes;
        }
    }
}

std::vector<RuleSummary> RulePublisher::totals() const {
    std::vector<RuleSummary> rules;
    for (const auto& [name, t] : retired_) rules.push_back({name, t.packets, t.bytes, false});
    auto names = owned_->rules->rule_names();
    auto live = totals_of(*owned_);
    for (size_t r = 0; r < names.size(); r++) {
        uint64_t pk = live[r].packets, by = live[r].bytes;
        auto it = std::find_if(rules.begin(), rules.end(),
                               [&](const RuleSummary& x) { return x.name == names[r]; });
        if (it == rules.end()) {
            rules.push_back({names[r], pk, by, true});
        } else {
            it->packets += pk;
            it->bytes += by;
            it->active = true;
        }
    }
    return rules;
}

}  // namespace linecap::dataplane
