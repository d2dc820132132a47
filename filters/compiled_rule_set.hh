/* The compiled rule set's representation, shared by its two halves and by
 * nothing else: rule_set_compile.cc builds it on the control thread,
 * rule_set_run.cc runs it on the workers. Not a public header. */
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "filters/cbpf_to_ebpf.hh"
#include "filters/ebpf_vm.hh"
#include "filters/patterns.hh"
#include "filters/rule_set_run.hh"

namespace linecap::filters::detail {

/* classify_burst() works through bursts in chunks of this many packets so the
 * per-worker scratch has a fixed size. */
constexpr uint32_t kChunk = 64;

constexpr size_t kScopes = 2;
inline size_t scope_index(ScanScope s) { return s == ScanScope::kFrame ? 1 : 0; }
inline const char* scope_name(size_t i) { return i == 1 ? "frame" : "payload"; }

struct CompiledRule {
    std::string name;
    std::string expression;
    ScanScope scope = ScanScope::kPayload;

    // Expression: `vm` runs it, or when libpcap's program loops, `classic`
    // runs on bpf_filter() (classic_only).
    bool has_expression = false;
    bool classic_only = false;
    std::string classic_only_reason;
    std::vector<ClassicInsn> classic;
    std::unique_ptr<EbpfVm> vm;

    std::vector<std::string> patterns;

    std::string bpf_object;  // spec as given
    std::string object_label;
    std::unique_ptr<EbpfVm> object_vm;
    uint32_t object_reach = 0;  // BpfProgram::packet_reach

    bool has_condition() const {
        return has_expression || !patterns.empty() || object_vm != nullptr;
    }
    uint32_t run_expression(const Packet& p) const noexcept {
        if (classic_only) return classic_run(classic, p.data, p.wirelen, p.caplen) != 0;
        return vm->run(p) != 0;
    }
};

class RuleScratch final : public Scratch {
public:
    RuleScratch(size_t rules, uint32_t object_reach)
        : counters_(rules), alive_(rules * kChunk), object_stage_(object_reach) {}
    std::span<const RuleCounters> counters() const override { return counters_; }

    std::vector<RuleCounters> counters_;
    std::array<PatternScratch, kScopes> pattern_scratch_;
    std::vector<uint8_t> alive_;  // [rule * kChunk + i]: rule still matches packet i
    std::array<RuleMask, kChunk> matched_;
    std::array<uint8_t, kChunk> want_;
    PacketStage object_stage_;  // eBPF objects run on this copy, never on pkts[]
};

/* The patterns of one scan scope: for each rule with patterns in that scope,
 * in rule order, its pattern texts. Hyperscan ids are positions in this list,
 * so the database depends on nothing else and can be shared by two sets with
 * equal groups. */
using PatternGroups = std::vector<std::vector<std::string>>;
using SharedDb = std::shared_ptr<const PatternDb>;

class CompiledRuleSet final : public RuleSet {
public:
    CompiledRuleSet(std::vector<CompiledRule> rules, std::array<SharedDb, kScopes> dbs,
                    std::array<PatternGroups, kScopes> groups, bool jit)
        : rules_(std::move(rules)),
          dbs_(std::move(dbs)),
          groups_(std::move(groups)),
          jit_requested_(jit) {
        // A rule without conditions matches every packet, so the set does too.
        match_all_ =
            rules_.empty() || std::any_of(rules_.begin(), rules_.end(),
                                          [](const CompiledRule& r) { return !r.has_condition(); });
        single_unconditional_ = rules_.size() == 1 && !rules_[0].has_condition();
        single_expression_ = rules_.size() == 1 && rules_[0].has_expression &&
                             !rules_[0].classic_only && rules_[0].patterns.empty() &&
                             rules_[0].object_vm == nullptr;
        for (size_t s = 0; s < kScopes; s++)
            for (size_t r = 0; r < rules_.size(); r++)
                if (!rules_[r].patterns.empty() && scope_index(rules_[r].scope) == s)
                    pattern_rules_[s].push_back(static_cast<uint32_t>(r));
    }
    /* Out of line in rule_set_compile.cc, so the vtable and every inline
     * member with it are emitted on the compile side: the run side's
     * objects then hold only what workers run (check_run_side.py). */
    ~CompiledRuleSet() override;

    uint32_t classify_burst(const Packet* pkts, uint32_t n, uint8_t* verdict, Scratch& scratch,
                            uint16_t* rule = nullptr) const override;

    bool matches_everything() const override { return match_all_; }

    std::vector<std::string> rule_names() const override {
        std::vector<std::string> names;
        names.reserve(rules_.size());
        for (const auto& r : rules_) names.push_back(r.name);
        return names;
    }

    std::string describe() const override;
    std::string filter_text() const override;

    std::unique_ptr<Scratch> make_scratch() const override;

    /* What compile() may take over from this set for its successor. */
    const CompiledRule* rule_with_expression(const std::string& expression) const {
        for (const auto& r : rules_)
            if (r.has_expression && r.expression == expression) return &r;
        return nullptr;
    }
    const PatternGroups& groups(size_t scope) const { return groups_[scope]; }
    const SharedDb& db(size_t scope) const { return dbs_[scope]; }

private:
    uint32_t classify_chunk(const Packet* pkts, uint32_t n, uint8_t* verdict, RuleScratch& s,
                            uint16_t* rule) const noexcept;

    std::vector<CompiledRule> rules_;
    std::array<SharedDb, kScopes> dbs_;  // null: no pattern in that scope
    std::array<PatternGroups, kScopes> groups_;
    std::array<std::vector<uint32_t>, kScopes> pattern_rules_;
    bool jit_requested_ = true;
    bool match_all_ = false;
    bool single_expression_ = false;
    bool single_unconditional_ = false;  // the default capture: keep all, count
};

}  // namespace linecap::filters::detail
