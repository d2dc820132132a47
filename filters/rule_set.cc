/* Placeholder rule set: accepts every packet. Replaced by the compiled
 * BPF/Hyperscan implementation. */
#include "filters/rule_set.hh"

namespace linecap::filters {
namespace {

class MatchAllScratch final : public Scratch {
public:
    explicit MatchAllScratch(size_t n) : counters_(n) {}
    std::span<const RuleCounters> counters() const override { return counters_; }
    std::vector<RuleCounters> counters_;
};

class MatchAll final : public RuleSet {
public:
    explicit MatchAll(std::vector<std::string> names) : names_(std::move(names)) {}

    uint32_t classify_burst(const Packet* pkts, uint32_t n, uint8_t* verdict,
                            Scratch& scratch) const override {
        auto& c = static_cast<MatchAllScratch&>(scratch).counters_;
        for (uint32_t i = 0; i < n; i++) {
            verdict[i] = 1;
            if (!c.empty()) {
                c[0].packets++;
                c[0].bytes += pkts[i].wirelen;
            }
        }
        return n;
    }
    bool matches_everything() const override { return true; }
    std::vector<std::string> rule_names() const override { return names_; }
    std::string describe() const override { return "(match all)\n"; }
    std::string filter_text() const override { return ""; }
    std::unique_ptr<Scratch> make_scratch() const override {
        return std::make_unique<MatchAllScratch>(names_.size());
    }

private:
    std::vector<std::string> names_;
};

}  // namespace

Result<std::shared_ptr<const RuleSet>> compile(std::span<const RuleSpec> rules,
                                               const CompileOptions&) {
    std::vector<std::string> names;
    for (const auto& r : rules) {
        if (!r.expression.empty() || !r.patterns.empty() || !r.bpf_object.empty())
            return make_error("rule '" + r.name + "': filters are not built yet");
        names.push_back(r.name);
    }
    return std::shared_ptr<const RuleSet>(std::make_shared<MatchAll>(std::move(names)));
}

}  // namespace linecap::filters
