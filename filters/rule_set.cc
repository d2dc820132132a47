/* The compiled rule set: tcpdump expressions run as translated eBPF (or, for
 * programs that loop, on libpcap's bpf_filter()), Hyperscan patterns through
 * one PatternDb per scan scope, and eBPF objects in EbpfVm. */
#include "filters/rule_set.hh"

#include <pcap/pcap.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "filters/bounded_child.hh"
#include "filters/bpf_object.hh"
#include "filters/cbpf_to_ebpf.hh"
#include "filters/disasm.hh"
#include "filters/ebpf_vm.hh"
#include "filters/patterns.hh"

namespace linecap::filters {
namespace {

/* classify_burst() works through bursts in chunks of this many packets so the
 * per-worker scratch has a fixed size. */
constexpr uint32_t kChunk = 64;

constexpr size_t kScopes = 2;
size_t scope_index(ScanScope s) { return s == ScanScope::kFrame ? 1 : 0; }
const char* scope_name(size_t i) { return i == 1 ? "frame" : "payload"; }

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

    uint32_t classify_burst(const Packet* pkts, uint32_t n, uint8_t* verdict,
                            Scratch& scratch) const override;

    bool matches_everything() const override { return match_all_; }

    std::vector<std::string> rule_names() const override {
        std::vector<std::string> names;
        names.reserve(rules_.size());
        for (const auto& r : rules_) names.push_back(r.name);
        return names;
    }

    std::string describe() const override;
    std::string filter_text() const override;

    std::unique_ptr<Scratch> make_scratch() const override {
        uint32_t reach = 0;
        for (const auto& r : rules_) reach = std::max(reach, r.object_reach);
        auto s = std::make_unique<RuleScratch>(rules_.size(), reach);
        for (size_t i = 0; i < kScopes; i++) {
            if (!dbs_[i]) continue;
            auto ps = dbs_[i]->make_scratch();
            // Only allocation can fail here, at start-up or on a rule change;
            // there is no way to run the rules without it.
            if (!ps) {
                std::fprintf(stderr, "linecap: %s\n", ps.error().c_str());
                std::abort();
            }
            s->pattern_scratch_[i] = std::move(*ps);
        }
        return s;
    }

    /* What compile() may take over from this set for its successor. */
    const CompiledRule* rule_with_expression(const std::string& expression) const {
        for (const auto& r : rules_)
            if (r.has_expression && r.expression == expression) return &r;
        return nullptr;
    }
    const PatternGroups& groups(size_t scope) const { return groups_[scope]; }
    const SharedDb& db(size_t scope) const { return dbs_[scope]; }

  private:
    uint32_t classify_chunk(const Packet* pkts, uint32_t n, uint8_t* verdict,
                            RuleScratch& s) const noexcept;

    std::vector<CompiledRule> rules_;
    std::array<SharedDb, kScopes> dbs_;  // null: no pattern in that scope
    std::array<PatternGroups, kScopes> groups_;
    std::array<std::vector<uint32_t>, kScopes> pattern_rules_;
    bool jit_requested_ = true;
    bool match_all_ = false;
    bool single_expression_ = false;
    bool single_unconditional_ = false;  // the default capture: keep all, count
};

/* Cost, bursts of 32 on the 2 GHz Xeon VM this was developed on
 * (bench/filter_bench.cc): the seeds' expressions take 5-10 ns per packet
 * here (RuleSet/classify_burst; the bare JIT, Seed/jit, is the same within
 * noise) against 25-52 ns in libpcap's bpf_filter() (Seed/bpf_filter). The
 * generic path adds a few ns per rule, and Hyperscan ~160 ns per scanned
 * packet, which is why patterns are only scanned for packets whose
 * expression and object already matched. An eBPF object runs on a private
 * copy of each packet (PacketStage): one http_get.bpf.o rule costs 23-25
 * ns/packet (RuleSet/object, 2-vCPU EPYC VM under load), of which about
 * 12 ns is the copy; expressions keep the direct path. */
uint32_t CompiledRuleSet::classify_burst(const Packet* pkts, uint32_t n, uint8_t* verdict,
                                         Scratch& scratch) const {
    auto& s = static_cast<RuleScratch&>(scratch);
    // No rule at all is "no filter": every packet is captured, and no
    // per-rule counter exists to bump.
    if (rules_.empty()) {
        std::memset(verdict, 1, n);
        return n;
    }
    if (single_unconditional_) {
        RuleCounters& c = s.counters_[0];
        uint64_t bytes = 0;
        for (uint32_t i = 0; i < n; i++) bytes += pkts[i].wirelen;
        std::memset(verdict, 1, n);
        c.packets += n;
        c.bytes += bytes;
        return n;
    }
    if (single_expression_) {
        const EbpfVm& vm = *rules_[0].vm;
        RuleCounters& c = s.counters_[0];
        uint32_t kept = 0;
        for (uint32_t i = 0; i < n; i++) {
            const bool hit = vm.run(pkts[i]) != 0;
            verdict[i] = hit;
            kept += hit;
            c.bytes += hit ? pkts[i].wirelen : 0;
        }
        c.packets += kept;
        return kept;
    }
    uint32_t kept = 0;
    for (uint32_t at = 0; at < n; at += kChunk) {
        const uint32_t m = std::min(kChunk, n - at);
        kept += classify_chunk(pkts + at, m, verdict + at, s);
    }
    return kept;
}

uint32_t CompiledRuleSet::classify_chunk(const Packet* pkts, uint32_t n, uint8_t* verdict,
                                         RuleScratch& s) const noexcept {
    const size_t nr = rules_.size();
    // Cheapest conditions first: expression, then eBPF object, then patterns
    // only for packets some pattern rule still wants.
    for (size_t r = 0; r < nr; r++) {
        const CompiledRule& rule = rules_[r];
        uint8_t* alive = &s.alive_[r * kChunk];
        if (rule.has_expression) {
            for (uint32_t i = 0; i < n; i++)
                alive[i] = static_cast<uint8_t>(rule.run_expression(pkts[i]));
        } else {
            std::fill(alive, alive + n, uint8_t{1});
        }
        if (rule.object_vm != nullptr) {
            // Untrusted: each packet is staged into the worker's own copy
            // first. http_get.bpf.o (reach 142 bytes) on the JIT, bursts
            // of 32 (bench/filter_bench Object/direct vs Object/staged,
            // 2-vCPU EPYC VM under load): 6.3-6.5 ns/packet on the
            // burst's Packet, 18-19 ns staged, about 2.9x; the copy and the
            // zeroing of an earlier, longer packet's bytes are the 12 ns.
            for (uint32_t i = 0; i < n; i++)
                if (alive[i]) alive[i] = rule.object_vm->run(s.object_stage_.stage(pkts[i])) != 0;
        }
    }
    for (size_t sc = 0; sc < kScopes; sc++) {
        const auto& prules = pattern_rules_[sc];
        if (prules.empty()) continue;
        bool any = false;
        for (uint32_t i = 0; i < n; i++) {
            uint8_t w = 0;
            for (uint32_t r : prules) w |= s.alive_[r * kChunk + i];
            s.want_[i] = w;
            any |= w != 0;
        }
        if (!any) {
            for (uint32_t r : prules) std::fill_n(&s.alive_[r * kChunk], n, uint8_t{0});
            continue;
        }
        dbs_[sc]->scan_burst(pkts, n, sc == 1 ? ScanScope::kFrame : ScanScope::kPayload,
                             s.pattern_scratch_[sc], s.matched_.data(), s.want_.data());
        // The database reports a rule by its position among the scope's
        // pattern rules.
        for (uint32_t j = 0; j < prules.size(); j++) {
            uint8_t* alive = &s.alive_[prules[j] * kChunk];
            for (uint32_t i = 0; i < n; i++)
                alive[i] &= static_cast<uint8_t>(s.matched_[i].test(j));
        }
    }
    std::fill(verdict, verdict + n, uint8_t{0});
    for (size_t r = 0; r < nr; r++) {
        const uint8_t* alive = &s.alive_[r * kChunk];
        RuleCounters& c = s.counters_[r];
        for (uint32_t i = 0; i < n; i++) {
            if (!alive[i]) continue;
            verdict[i] = 1;
            c.packets++;
            c.bytes += pkts[i].wirelen;
        }
    }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) kept += verdict[i];
    return kept;
}

std::string CompiledRuleSet::describe() const {
    std::string out;
    if (rules_.empty()) return "no rules: every packet is captured\n";
    for (const auto& r : rules_) {
        out += "rule '" + r.name + "'";
        if (!r.has_condition()) out += ": no condition, matches every packet";
        out += "\n";
        if (r.has_expression) {
            out += "  expression: " + r.expression + "\n";
            out +=
                "  classic BPF (libpcap, " + std::to_string(r.classic.size()) + " instructions):\n";
            out += classic_listing(r.classic);
            if (r.classic_only) {
                out += "  runs on libpcap's bpf_filter(): " + r.classic_only_reason + "\n";
            } else {
                out += "  eBPF (" + std::to_string(r.vm->insns().size()) + " instructions, " +
                       r.vm->engine() + "):\n";
                out += disassemble(r.vm->insns());
            }
        }
        if (!r.patterns.empty()) {
            out +=
                "  patterns (" + std::string(scope_name(scope_index(r.scope))) + " scope, any of):";
            for (const auto& p : r.patterns) out += " '" + p + "'";
            out += "\n";
        }
        if (r.object_vm != nullptr) {
            out += "  bpf object " + r.object_label + " (" +
                   std::to_string(r.object_vm->insns().size()) + " instructions, " +
                   r.object_vm->engine() + ", reads at most " + std::to_string(r.object_reach) +
                   " bytes of a private packet copy):\n";
            out += disassemble(r.object_vm->insns());
        }
    }
    for (size_t sc = 0; sc < kScopes; sc++) {
        if (!dbs_[sc]) continue;
        out += std::string("pattern database (") + scope_name(sc) + " scope):\n";
        out += dbs_[sc]->describe();
    }
    size_t programs = 0, native = 0;
    for (const auto& r : rules_) {
        for (const EbpfVm* vm : {r.vm.get(), r.object_vm.get()}) {
            if (vm == nullptr) continue;
            programs++;
            native += vm->jitted();
        }
        programs += r.classic_only;
    }
    if (!jit_requested_)
        out += "JIT: off, every program runs on an interpreter\n";
    else if (programs != 0)
        out += "JIT: " + std::to_string(native) + " of " + std::to_string(programs) +
               " programs run as x86-64 native code\n";
    return out;
}

std::string CompiledRuleSet::filter_text() const {
    std::vector<std::string> parts;
    for (const auto& r : rules_) {
        std::string t;
        auto add = [&t](const std::string& s) {
            if (!t.empty()) t += " and ";
            t += s;
        };
        if (r.has_expression) add(r.expression);
        for (size_t i = 0; i < r.patterns.size(); i++)
            add(std::string(i == 0 ? "(" : "") + "pattern '" + r.patterns[i] + "'" +
                (i + 1 == r.patterns.size() ? ")" : " or"));
        if (!r.bpf_object.empty()) add("bpf-object " + r.bpf_object);
        if (t.empty()) return "";  // this rule takes every packet
        parts.push_back(std::move(t));
    }
    if (parts.size() == 1) return parts[0];
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "(" : " or (") + p + ")";
    return out;
}

std::string rule_label(const RuleSpec& r, size_t index) {
    return r.name.empty() ? "rule #" + std::to_string(index) : "rule '" + r.name + "'";
}

/* Wire format of the compiling child's answer: for each expression it was
 * given, the instruction count and the instructions; then for each scope it
 * was given, min_length, the byte count and Hyperscan's serialized database.
 * Integers are native-endian u32: both ends are the same binary. */
void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

class Reader {
  public:
    explicit Reader(std::string_view in) : in_(in) {}
    bool u32(uint32_t& v) {
        if (in_.size() < 4) return false;
        std::memcpy(&v, in_.data(), 4);
        in_.remove_prefix(4);
        return true;
    }
    bool bytes(size_t n, std::string_view& out) {
        if (in_.size() < n) return false;
        out = in_.substr(0, n);
        in_.remove_prefix(n);
        return true;
    }
    bool done() const { return in_.empty(); }

  private:
    std::string_view in_;
};

static_assert(sizeof(ClassicInsn) == 8);

}  // namespace

Status check_limits(std::span<const RuleSpec> specs, const RuleLimits& lim) {
    if (specs.size() > lim.max_rules)
        return make_error(std::to_string(specs.size()) + " rules, more than the " +
                          std::to_string(lim.max_rules) + " allowed");
    size_t patterns = 0;
    for (size_t i = 0; i < specs.size(); i++) {
        const RuleSpec& r = specs[i];
        if (r.expression.size() > lim.max_expression_bytes)
            return make_error(rule_label(r, i) + ": expression of " +
                              std::to_string(r.expression.size()) + " bytes, more than the " +
                              std::to_string(lim.max_expression_bytes) + " allowed");
        for (size_t k = 0; k < r.patterns.size(); k++)
            if (r.patterns[k].size() > lim.max_pattern_bytes)
                return make_error(rule_label(r, i) + ", pattern " + std::to_string(k + 1) +
                                  ": " + std::to_string(r.patterns[k].size()) +
                                  " bytes, more than the " +
                                  std::to_string(lim.max_pattern_bytes) + " allowed");
        patterns += r.patterns.size();
    }
    if (patterns > lim.max_patterns)
        return make_error(std::to_string(patterns) + " patterns in all, more than the " +
                          std::to_string(lim.max_patterns) + " allowed");
    return Status::success();
}

Result<std::shared_ptr<const RuleSet>> compile(std::span<const RuleSpec> specs,
                                               const CompileOptions& opts,
                                               const RuleSet* previous) {
    Status within = check_limits(specs, opts.limits);
    if (!within) return make_error(within.error());
    const auto* prev = dynamic_cast<const CompiledRuleSet*>(previous);

    // What each scope's database holds; what the child must compile.
    std::array<std::vector<PatternSpec>, kScopes> patterns;
    std::array<std::vector<std::string>, kScopes> pattern_names;
    std::array<PatternGroups, kScopes> groups;
    for (size_t i = 0; i < specs.size(); i++) {
        const RuleSpec& spec = specs[i];
        if (spec.patterns.empty()) continue;
        const std::string label = rule_label(spec, i);
        // payload_span() parses Ethernet; on another link type it would
        // find no payload and the rule would silently match nothing.
        if (spec.scope == ScanScope::kPayload && opts.linktype != DLT_EN10MB) {
            const char* lt = pcap_datalink_val_to_name(opts.linktype);
            return make_error(label + ": payload patterns need Ethernet frames, not " +
                              (lt ? lt : "link type " + std::to_string(opts.linktype)) +
                              "; use --scan frame");
        }
        const size_t sc = scope_index(spec.scope);
        const auto id = static_cast<uint32_t>(groups[sc].size());
        if (id >= kMaxPatternRules)
            return make_error(label + ": at most " + std::to_string(kMaxPatternRules) +
                              " rules may have patterns in one scan scope");
        groups[sc].push_back(spec.patterns);
        pattern_names[sc].push_back(spec.name);
        for (const auto& p : spec.patterns) patterns[sc].push_back(PatternSpec{p, id});
    }
    std::array<SharedDb, kScopes> dbs;
    std::array<bool, kScopes> compile_scope{};
    for (size_t sc = 0; sc < kScopes; sc++) {
        if (groups[sc].empty()) continue;
        if (prev != nullptr && prev->db(sc) && prev->groups(sc) == groups[sc])
            dbs[sc] = prev->db(sc);
        else
            compile_scope[sc] = true;
    }
    std::vector<size_t> compile_expr;  // rules whose expression the child compiles
    std::vector<const CompiledRule*> reused(specs.size(), nullptr);
    for (size_t i = 0; i < specs.size(); i++) {
        if (specs[i].expression.empty()) continue;
        if (prev != nullptr) reused[i] = prev->rule_with_expression(specs[i].expression);
        if (reused[i] == nullptr) compile_expr.push_back(i);
    }

    // libpcap and Hyperscan, in a child that is killed at the time limit.
    std::vector<std::vector<ClassicInsn>> classic(specs.size());
    if (!compile_expr.empty() || compile_scope[0] || compile_scope[1]) {
        auto work = [&]() -> Result<std::string> {
            std::string out;
            for (size_t i : compile_expr) {
                auto c = compile_classic(specs[i].expression, opts.linktype, opts.snaplen,
                                         opts.netmask);
                if (!c) return make_error(rule_label(specs[i], i) + ": " + c.error());
                put_u32(out, static_cast<uint32_t>(c->size()));
                out.append(reinterpret_cast<const char*>(c->data()), c->size() * 8);
            }
            for (size_t sc = 0; sc < kScopes; sc++) {
                if (!compile_scope[sc]) continue;
                auto db = PatternDb::compile(patterns[sc], pattern_names[sc]);
                if (!db) return make_error(db.error());
                auto bytes = db->serialize();
                if (!bytes) return make_error(bytes.error());
                put_u32(out, db->min_length());
                put_u32(out, static_cast<uint32_t>(bytes->size()));
                out += *bytes;
            }
            return out;
        };
        BoundedOptions bo;
        bo.time_limit_ms = opts.time_limit_ms;
        bo.cancel = opts.cancel;
        // Names what the child was given: usually the one rule just added.
        std::string what = "compiling";
        for (size_t k = 0; k < compile_expr.size() && k < 3; k++)
            what += (k == 0 ? " " : ", ") + rule_label(specs[compile_expr[k]], compile_expr[k]);
        if (compile_expr.size() > 3)
            what += " and " + std::to_string(compile_expr.size() - 3) + " more rules";
        if (compile_scope[0] || compile_scope[1])
            what += std::string(compile_expr.empty() ? " the" : " and the") + " patterns";
        auto answer = opts.time_limit_ms > 0 ? run_bounded(work, bo, what) : work();
        if (!answer) return make_error(answer.error());
        Reader in(*answer);
        const std::string damaged = what + ": the compiling process sent a damaged answer";
        for (size_t i : compile_expr) {
            uint32_t n = 0;
            std::string_view b;
            if (!in.u32(n) || !in.bytes(size_t{n} * 8, b)) return make_error(damaged);
            classic[i].resize(n);
            std::memcpy(classic[i].data(), b.data(), b.size());
        }
        for (size_t sc = 0; sc < kScopes; sc++) {
            if (!compile_scope[sc]) continue;
            uint32_t min_length = 0, size = 0;
            std::string_view b;
            if (!in.u32(min_length) || !in.u32(size) || !in.bytes(size, b))
                return make_error(damaged);
            auto db = PatternDb::deserialize(b, patterns[sc], min_length);
            if (!db) return make_error(db.error());
            dbs[sc] = std::make_shared<const PatternDb>(std::move(*db));
        }
        if (!in.done()) return make_error(damaged);
    }

    std::vector<CompiledRule> rules;
    for (size_t i = 0; i < specs.size(); i++) {
        const RuleSpec& spec = specs[i];
        const std::string label = rule_label(spec, i);
        CompiledRule r;
        r.name = spec.name;
        r.expression = spec.expression;
        r.scope = spec.scope;

        if (!spec.expression.empty()) {
            r.has_expression = true;
            r.classic = reused[i] != nullptr ? reused[i]->classic : std::move(classic[i]);
            auto ebpf = translate_classic(r.classic);
            if (!ebpf) {
                if (ebpf.error().find(kLoopMessage) == std::string::npos)
                    return make_error(label + ": " + ebpf.error());
                r.classic_only = true;
                r.classic_only_reason = ebpf.error();
            } else {
                auto vm = EbpfVm::load(*ebpf, opts.jit);
                if (!vm) return make_error(label + ": " + vm.error());
                r.vm = std::move(*vm);
            }
        }
        r.patterns = spec.patterns;

        if (!spec.bpf_object.empty() || spec.bpf_program) {
            std::shared_ptr<const BpfProgram> prog = spec.bpf_program;
            if (!prog) {
                auto loaded = load_bpf_object(spec.bpf_object);
                if (!loaded) return make_error(label + ": " + loaded.error());
                prog = std::make_shared<const BpfProgram>(std::move(*loaded));
            }
            VmOptions vo;
            vo.jit = opts.jit;
            auto vm = EbpfVm::load(prog->insns, vo);
            if (!vm)
                return make_error(label + ": bpf object '" + prog->file + "' program '" +
                                  prog->name + "': " + vm.error());
            r.bpf_object = spec.bpf_object.empty() ? prog->file : spec.bpf_object;
            r.object_label = "'" + prog->file + "' program '" + prog->name + "'";
            r.object_vm = std::move(*vm);
            r.object_reach = prog->packet_reach;
        }
        rules.push_back(std::move(r));
    }
    return std::shared_ptr<const RuleSet>(std::make_shared<CompiledRuleSet>(
        std::move(rules), std::move(dbs), std::move(groups), opts.jit));
}

}  // namespace linecap::filters
