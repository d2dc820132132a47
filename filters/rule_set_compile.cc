/* The compiled rule set, compile side: checks the caps, runs libpcap and
 * Hyperscan in a bounded child, translates and loads the eBPF, and builds the
 * CompiledRuleSet (compiled_rule_set.hh) the workers run. Control thread
 * (rule_set_compile.hh). */
#include "filters/rule_set_compile.hh"

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
#include "filters/compiled_rule_set.hh"
#include "filters/disasm.hh"
#include "filters/ebpf_vm.hh"
#include "filters/patterns.hh"

namespace linecap::filters {
namespace detail {

CompiledRuleSet::~CompiledRuleSet() = default;

std::unique_ptr<Scratch> CompiledRuleSet::make_scratch() const {
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

}  // namespace detail

namespace {

using detail::CompiledRule;
using detail::CompiledRuleSet;
using detail::kScopes;
using detail::PatternGroups;
using detail::scope_index;
using detail::SharedDb;

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
        return make_error(E2BIG, std::to_string(specs.size()) + " rules, more than the " +
                                     std::to_string(lim.max_rules) + " allowed");
    size_t patterns = 0;
    for (size_t i = 0; i < specs.size(); i++) {
        const RuleSpec& r = specs[i];
        if (r.expression.size() > lim.max_expression_bytes)
            return make_error(E2BIG, rule_label(r, i) + ": expression of " +
                                         std::to_string(r.expression.size()) +
                                         " bytes, more than the " +
                                         std::to_string(lim.max_expression_bytes) + " allowed");
        for (size_t k = 0; k < r.patterns.size(); k++)
            if (r.patterns[k].size() > lim.max_pattern_bytes)
                return make_error(E2BIG, rule_label(r, i) + ", pattern " + std::to_string(k + 1) +
                                             ": " + std::to_string(r.patterns[k].size()) +
                                             " bytes, more than the " +
                                             std::to_string(lim.max_pattern_bytes) + " allowed");
        patterns += r.patterns.size();
    }
    if (patterns > lim.max_patterns)
        return make_error(E2BIG, std::to_string(patterns) + " patterns in all, more than the " +
                                     std::to_string(lim.max_patterns) + " allowed");
    return Status::success();
}

Result<std::shared_ptr<const RuleSet>> compile(std::span<const RuleSpec> specs,
                                               const CompileOptions& opts,
                                               const RuleSet* previous) {
    Status within = check_limits(specs, opts.limits);
    if (!within) return within.failure();
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
                auto c =
                    compile_classic(specs[i].expression, opts.linktype, opts.snaplen, opts.netmask);
                if (!c) return make_error(rule_label(specs[i], i) + ": " + c.error());
                put_u32(out, static_cast<uint32_t>(c->size()));
                out.append(reinterpret_cast<const char*>(c->data()), c->size() * 8);
            }
            for (size_t sc = 0; sc < kScopes; sc++) {
                if (!compile_scope[sc]) continue;
                auto db = PatternDb::compile(patterns[sc], pattern_names[sc]);
                if (!db) return db.failure();
                auto bytes = db->serialize();
                if (!bytes) return bytes.failure();
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
        if (!answer) return answer.failure();
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
            if (!db) return db.failure();
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
                if (ebpf.code() != ELOOP) return make_error(label + ": " + ebpf.error());
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
