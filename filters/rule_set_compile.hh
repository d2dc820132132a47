/* Compiled rule sets, compile side: what the control thread runs once per
 * rule change.
 *
 * compile() turns the rules a user wrote (RuleSpec) into a RuleSet
 * (rule_set_run.hh) that workers run. It may allocate, fork a compiler child
 * and fail; it never runs on a worker (rule_set_compile.cc).
 *
 * How each part is compiled (DESIGN.md "Filters"):
 *   - expression: libpcap's pcap_compile(), translated to eBPF
 *     (cbpf_to_ebpf.hh) and loaded into rte_bpf with its x86-64 JIT (EbpfVm,
 *     ebpf_vm.hh), or its interpreter with CompileOptions::jit = false.
 *     Programs libpcap makes loop (`protochain`) keep the classic program for
 *     libpcap's bpf_filter() instead;
 *   - patterns: one Hyperscan database per ScanScope (patterns.hh);
 *   - bpf_object: load_bpf_object() (bpf_object.hh), checked by
 *     verify_filter() (bpf_verifier.hh) and loaded into an EbpfVm.
 */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.hh"
#include "filters/rule_set_run.hh"

namespace linecap::filters {

struct BpfProgram;  // bpf_object.hh

/* What the user asked for: one named rule. Empty fields mean "not used"; a
 * rule with nothing at all matches every packet. */
struct RuleSpec {
    std::string name;
    std::string expression;             // pcap-filter syntax
    std::vector<std::string> patterns;  // literal, or /regex/flags
    std::string bpf_object;             // FILE[:PROGRAM], eBPF ELF object
    /* The object already loaded (load_bpf_object()) by whoever checked the
     * caller may name it: compile() then uses it and opens nothing, and a
     * later recompile of the set does not open the file again. */
    std::shared_ptr<const BpfProgram> bpf_program;
    ScanScope scope = ScanScope::kPayload;
    /* The flow cutoff of the packets this rule captures (capd's flow table,
     * dataplane/flow_table.hh): with flow_cutoff_set, these wire bytes and
     * packets per flow (0: no limit) instead of capd's --flow-cutoff and
     * --flow-packets. compile() does not read them. */
    bool flow_cutoff_set = false;
    uint64_t flow_cutoff_bytes = 0;
    uint64_t flow_cutoff_packets = 0;
};

/* Size caps, checked before anything is compiled. They keep one request from
 * asking for more than the control thread, the workers and the compiler can
 * give: every rule costs a few ns per packet, libpcap's optimiser grows about
 * cubically with an expression's terms and Hyperscan's compiler with the
 * number and length of patterns. What they do not bound (a short expression
 * or regex that is still slow to compile) the time limit does. */
struct RuleLimits {
    size_t max_rules = 256;               // = kMaxPatternRules: any rule may have patterns
    size_t max_expression_bytes = 65536;  // tcpdump expressions are rarely over 1 KiB
    size_t max_patterns = 10000;      // over all rules; Hyperscan compiles 10k literals in seconds
    size_t max_pattern_bytes = 4096;  // one pattern's text
};

struct CompileOptions {
    int linktype = 1;  // DLT_EN10MB
    uint32_t snaplen = 262144;
    bool jit = true;  // false forces the interpreter
    /* IPv4 netmask (host order) for `ip broadcast` and `net N` without a
     * mask; 0 as tcpdump uses for files (dataplane/netns.hh
     * filter_netmask()). */
    uint32_t netmask = 0;
    RuleLimits limits;
    /* libpcap's and Hyperscan's compilers run in a child process that is
     * killed after this long (bounded_child.hh); the compile then fails.
     * 0 runs them in this process with no limit: for fuzzing, where a crash
     * in them must be seen, never for input from a client. */
    int time_limit_ms = 10000;
    /* Optional: when it becomes true, a compile in progress stops and fails
     * ("cancelled"), e.g. because capd is stopping. */
    const std::atomic<bool>* cancel = nullptr;
};
/* Checks `rules` against `limits` without compiling anything. Errors are
 * E2BIG and name the rule and the cap, e.g.
 *   "rule 'x': expression of 70000 bytes, more than the 65536 allowed"
 *   "12000 patterns in all, more than the 10000 allowed". Any thread. */
[[nodiscard]] Status check_limits(std::span<const RuleSpec> rules, const RuleLimits& limits);

/* Compiles a whole rule set as one unit. On failure nothing is returned and
 * the message names the rule ("rule 'cli': ", or "rule #2: " for an unnamed
 * one) and repeats libpcap's, Hyperscan's, libbpf's or rte_bpf's own words,
 * e.g. "rule 'cli': can't parse filter expression: syntax error", or says
 * which limit was hit (check_limits(), opts.time_limit_ms, opts.cancel).
 * The code is E2BIG for a cap check_limits() refuses, EINVAL otherwise.
 *
 * libpcap and Hyperscan run in one child process per call (bounded_child.hh),
 * and only for what `previous` (the set in force, optional) does not already
 * hold: an expression compiled before is not compiled again, and a scan
 * scope whose rules have the same patterns, in the same order, shares
 * previous's Hyperscan database. So a change that adds an expression-only
 * rule, or deletes one, never recompiles the patterns.
 *
 * Any one thread at a time per call (capd uses its compile thread, and the
 * control thread at start-up); blocks it for at most about
 * opts.time_limit_ms plus the eBPF loading. No EAL needed. */
[[nodiscard]] Result<std::shared_ptr<const RuleSet>> compile(std::span<const RuleSpec> rules,
                                                             const CompileOptions& opts,
                                                             const RuleSet* previous = nullptr);

}  // namespace linecap::filters
