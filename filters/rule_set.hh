/* Compiled rule sets: what the worker hook runs on every burst.
 *
 * A RuleSet is built once by compile() on the control thread (it may allocate
 * and fail), then shared read-only by every worker through an atomic pointer.
 * Each worker owns one Scratch; scratch is never shared between threads.
 *
 * A packet is captured when at least one rule matches. A rule matches when its
 * expression (if any) accepts the packet AND (if it has patterns) at least one
 * pattern occurs in the scanned bytes AND (if it has a bpf_object) that
 * program returns non-zero. A rule with none of these, or an empty rule list,
 * matches every packet.
 *
 * How each part runs (rule_set.cc, DESIGN.md "Filters"):
 *   - expression: libpcap's pcap_compile(), translated to eBPF
 *     (cbpf_to_ebpf.hh) and run by rte_bpf's x86-64 JIT (EbpfVm, ebpf_vm.hh),
 *     or its interpreter with CompileOptions::jit = false. Programs libpcap
 *     makes loop (`protochain`) run on libpcap's bpf_filter() instead;
 *   - patterns: one Hyperscan database per ScanScope (patterns.hh), scanned
 *     only for packets whose expression and object already matched;
 *   - bpf_object: load_bpf_object() (bpf_object.hh), checked by
 *     verify_filter() (bpf_verifier.hh) and run in an EbpfVm on the worker's
 *     private copy of the packet (PacketStage, ebpf_vm.hh).
 */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "dataplane/result.hh"

namespace linecap::filters {

struct BpfProgram;  // bpf_object.hh

/* One packet as the filters see it: contiguous bytes from the start of the
 * link-layer header. caplen bytes are readable; wirelen is the original length. */
struct Packet {
    const uint8_t* data;
    uint32_t caplen;
    uint32_t wirelen;
};

enum class ScanScope : uint8_t {
    kPayload,  // L4 payload (TCP/UDP data, else the IP payload); default
    kFrame,    // the whole captured frame
};

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
};

/* Size caps, checked before anything is compiled. They keep one request from
 * asking for more than the control thread, the workers and the compiler can
 * give: every rule costs a few ns per packet, libpcap's optimiser grows about
 * cubically with an expression's terms and Hyperscan's compiler with the
 * number and length of patterns. What they do not bound (a short expression
 * or regex that is still slow to compile) the time limit does. */
struct RuleLimits {
    size_t max_rules = 256;                // = kMaxPatternRules: any rule may have patterns
    size_t max_expression_bytes = 65536;   // tcpdump expressions are rarely over 1 KiB
    size_t max_patterns = 10000;           // over all rules; Hyperscan compiles 10k literals in seconds
    size_t max_pattern_bytes = 4096;       // one pattern's text
};

struct CompileOptions {
    int linktype = 1;  // DLT_EN10MB
    uint32_t snaplen = 262144;
    bool jit = true;   // false forces the interpreter
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

/* Per-rule counters kept by one worker. */
struct alignas(64) RuleCounters {
    uint64_t packets = 0;
    uint64_t bytes = 0;
};

class RuleSet;

/* Per-worker scratch for one RuleSet (Hyperscan scratch, counters). Create it
 * with RuleSet::make_scratch() on the control thread, use it on one worker. */
class Scratch {
public:
    virtual ~Scratch() = default;
    /* Per-rule counters, indexed like RuleSet::rule_names(). Written only by
     * the owning worker; other threads may read them (torn reads impossible on
     * x86-64 for aligned 64-bit words). */
    virtual std::span<const RuleCounters> counters() const = 0;
};

class RuleSet {
public:
    virtual ~RuleSet() = default;

    /* Hot path, worker only. Sets verdict[i] to 1 (capture) or 0 for each of
     * the n packets, bumps per-rule counters in `scratch`, and returns the
     * number of packets captured. Never allocates, locks or makes syscalls. */
    virtual uint32_t classify_burst(const Packet* pkts, uint32_t n, uint8_t* verdict,
                                    Scratch& scratch) const = 0;

    /* True when every packet matches (no rule has any condition); lets the
     * worker skip classification entirely. */
    virtual bool matches_everything() const = 0;

    virtual std::vector<std::string> rule_names() const = 0;

    /* A human description for `capd -d`: classic BPF, the eBPF that runs,
     * whether the JIT is used, and the patterns. */
    virtual std::string describe() const = 0;

    /* Text naming the filter, for pcapng interface descriptions. */
    virtual std::string filter_text() const = 0;

    virtual std::unique_ptr<Scratch> make_scratch() const = 0;
};

/* Checks `rules` against `limits` without compiling anything. Errors name
 * the rule and the cap, e.g.
 *   "rule 'x': expression of 70000 bytes, more than the 65536 allowed"
 *   "12000 patterns in all, more than the 10000 allowed". Any thread. */
[[nodiscard]] Status check_limits(std::span<const RuleSpec> rules, const RuleLimits& limits);

/* Compiles a whole rule set as one unit. On failure nothing is returned and
 * the message names the rule ("rule 'cli': ", or "rule #2: " for an unnamed
 * one) and repeats libpcap's, Hyperscan's, libbpf's or rte_bpf's own words,
 * e.g. "rule 'cli': can't parse filter expression: syntax error", or says
 * which limit was hit (check_limits(), opts.time_limit_ms, opts.cancel).
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
