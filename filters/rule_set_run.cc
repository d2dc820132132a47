/* The compiled rule set, run side: what a worker runs on every burst. Never
 * allocates, locks, logs or makes a syscall (rule_set_run.hh). */
#include <algorithm>
#include <cstring>

#include "filters/compiled_rule_set.hh"

namespace linecap::filters::detail {

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
                                         Scratch& scratch, uint16_t* rule) const {
    auto& s = static_cast<RuleScratch&>(scratch);
    // No rule at all is "no filter": every packet is captured, and no
    // per-rule counter exists to bump.
    if (rules_.empty()) {
        std::memset(verdict, 1, n);
        if (rule) std::fill_n(rule, n, kNoRule);
        return n;
    }
    if (rule && (single_unconditional_ || single_expression_)) std::fill_n(rule, n, uint16_t{0});
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
        kept += classify_chunk(pkts + at, m, verdict + at, s, rule ? rule + at : nullptr);
    }
    return kept;
}

uint32_t CompiledRuleSet::classify_chunk(const Packet* pkts, uint32_t n, uint8_t* verdict,
                                         RuleScratch& s, uint16_t* rule) const noexcept {
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
    // The first matching rule: the list walked backwards, the last write
    // wins. Only when asked (per-rule flow cutoffs).
    if (rule)
        for (size_t r = nr; r-- > 0;) {
            const uint8_t* alive = &s.alive_[r * kChunk];
            for (uint32_t i = 0; i < n; i++)
                if (alive[i]) rule[i] = static_cast<uint16_t>(r);
        }
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) kept += verdict[i];
    return kept;
}

}  // namespace linecap::filters::detail
