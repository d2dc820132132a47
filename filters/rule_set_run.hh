/* Compiled rule sets, run side: what a worker holds and runs on every burst.
 *
 * A RuleSet comes from compile() (rule_set_compile.hh) on the control
 * thread, then is shared read-only by every worker through an atomic pointer
 * (dataplane/rule_snapshot.hh). Each worker owns one Scratch, made by
 * make_scratch() on the control thread; scratch is never shared between
 * threads. classify_burst() is the only call a worker makes: it never
 * allocates, locks, logs or makes a syscall (rule_set_run.cc). The other
 * members are for the control thread (rule_set_compile.cc).
 *
 * A packet is captured when at least one rule matches. A rule matches when its
 * expression (if any) accepts the packet AND (if it has patterns) at least one
 * pattern occurs in the scanned bytes AND (if it has a bpf_object) that
 * program returns non-zero. A rule with none of these, or an empty rule list,
 * matches every packet.
 *
 * How each part runs (DESIGN.md "Filters"):
 *   - expression: translated eBPF on rte_bpf's x86-64 JIT or interpreter
 *     (EbpfVm::run, ebpf_vm.hh), or libpcap's bpf_filter() for programs that
 *     loop (classic_run, cbpf_to_ebpf.hh);
 *   - patterns: PatternDb::scan_burst (patterns.hh), only for packets whose
 *     expression and object already matched;
 *   - bpf_object: an EbpfVm on the worker's private copy of the packet
 *     (PacketStage, ebpf_vm.hh).
 */
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace linecap::filters {

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
     * number of packets captured. Never allocates, locks or makes syscalls.
     * With `rule` (n entries), also sets rule[i] for each captured packet
     * to the index (as rule_names()) of the first rule in the list that
     * matched it, kNoRule with no rule at all; entries of packets not
     * captured are left as they were. Without it nothing extra is done. */
    static constexpr uint16_t kNoRule = 0xffff;
    virtual uint32_t classify_burst(const Packet* pkts, uint32_t n, uint8_t* verdict,
                                    Scratch& scratch, uint16_t* rule = nullptr) const = 0;

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

}  // namespace linecap::filters
