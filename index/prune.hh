/* FlowFilter: can any packet of this flow pass this filter?
 *
 * capq's pruning. The filter is the classic BPF program libpcap compiles
 * from the expression (filters/cbpf_to_ebpf.hh compile_classic(), for the
 * file's link type and snap length), the very program capq then runs on
 * every packet it reads. FlowFilter runs that program once per flow of the
 * index on an abstract packet built from the FlowKey: the bytes the key
 * fixes (link header type fields and tags, IP version and header length,
 * protocol fields, addresses, fragment offset zero unless a later fragment,
 * ports) are known, every other bit is unknown, and the length is unknown
 * beyond the known bytes. Loads, ALU operations and jumps are evaluated on
 * known/unknown bits (value + mask per register, as the Linux verifier's
 * tnums); a jump whose outcome depends on unknown bits takes both ways; a
 * load that may lie past the packet's end may also end the program with 0
 * (reject), as bpf_filter() does. BPF_LEN and loads of unknown bytes are
 * unknown.
 *
 * A key holds both directions of a conversation (flow_key.hh): eval() runs
 * the program on the abstract packet of each orientation and ORs the
 * verdicts, which is sound as every packet of the flow is one of the two,
 * and exact per conversation only (`src host A` accepts A's conversations
 * and may reject in them).
 *
 * Sound by construction: if some packet with this key passes the program,
 * eval() says may_accept. Not complete: a filter on bytes the index does not
 * keep (TCP flags, payload, MAC addresses, lengths) leaves may_accept true
 * for every flow of the right protocol, and capq reads those blocks.
 * kOpaque flows always may accept. The number of paths explored per
 * evaluation is bounded (programs with more than kMaxPaths paths give
 * may_accept = may_reject = true).
 *
 * eval() never allocates; a few ns per instruction on the path: about 60 ns
 * per flow for a 5-tuple filter on a flow it rejects, 135 ns on one it
 * accepts, per orientation (bench/prune_bench: Eval/five_tuple,
 * Eval/five_tuple_match; 2-vCPU EPYC VM, bpf_filter() on one packet: 10 ns);
 * eval() runs one or two (one when the first already says both). About 40 KB
 * of stack (the pending paths). Any thread (const).
 */
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "filters/classic_insn.hh"
#include "index/flow_key.hh"

namespace linecap::index {

/* Pairs of addresses (16 bytes each, as in FlowKey), lower first. */
using AddressPairs = std::vector<std::pair<std::array<uint8_t, 16>, std::array<uint8_t, 16>>>;

class FlowFilter {
public:
    static constexpr unsigned kMaxPaths = 256;

    /* prog: compiled for `linktype`; keys of another link type are
     * answered "may accept, may reject" (raw IP, DLT_RAW 12 for
     * pcap_compile() and LINKTYPE_RAW 101 in files, is one link type).
     * An empty program accepts all. */
    FlowFilter(std::vector<filters::ClassicInsn> prog, uint16_t linktype);

    struct Verdict {
        bool may_accept;  // some packet of the flow may pass
        bool may_reject;  // some packet of the flow may fail
    };
    /* Over the packets of both directions (the key's endpoints as they
     * are, and swapped): the two verdicts ORed.
     *
     * `unknown` (kUnknownSrc, kUnknownDst): for a key that stands for many
     * flows (the fleet catalogue's aggregate rows), the addresses named are
     * unknown bytes, not the key's (zero) ones; with the ports unknown too
     * when kFlowHasPorts is clear, as for any key. Sound as for one flow:
     * every packet of the flows it stands for is one of the abstract
     * packet's values. */
    enum : uint8_t { kUnknownSrc = 1, kUnknownDst = 2 };
    Verdict eval(const FlowKey& k, uint8_t unknown = 0) const;

    uint16_t linktype() const { return linktype_; }

    /* Addresses every accepted IP packet carries: a set such that every
     * packet the program can accept whose flow key is kIp has one of them
     * as its source or destination address (16 bytes as in FlowKey: an
     * IPv4 address in the first 4, the rest zero), sorted, without
     * duplicates; nullopt when no such set is proven. capq then looks the
     * flows up by address instead of evaluating every flow.
     *
     * Derived at construction by running the program on a packet whose
     * bytes and length are all unknown, keeping per path the bits that
     * taken JEQ branches proved (an unmodified or AND-masked packet load
     * equal to a constant). On each accepting path the proved type fields
     * give the IP header's offset (DLT_EN10MB and DLT_LINUX_SLL: EtherType
     * 0x0800/0x86dd after up to two proved tags; raw IP: the version
     * nibble), and the proved source or destination address (IPv4 l3+12,
     * l3+16; IPv6 l3+8, l3+24, all 16 bytes) joins the set. A path that
     * proves a non-IP type or a third tag needs none (only kLink and
     * kOpaque flows take it, and capq always evaluates those). Any other
     * accepting path, more than kMaxPaths paths, an empty program or
     * another link type: nullopt. So `host A`, `host A and port P`, `vlan
     * 100 and host A`, `src host A or dst host B` have a set; `net N/16`,
     * `tcp`, `port 80`, `not host A` do not. Cost at construction: about
     * 1 us for a 5-tuple (bench/prune_bench: Construct/five_tuple, 2-vCPU
     * EPYC VM, loaded); any thread (const). */
    const std::optional<std::vector<std::array<uint8_t, 16>>>& required_addresses() const {
        return required_;
    }
    /* Address pairs every accepted IP packet carries: when every accepting
     * path of required_addresses() that needs an address proves both the
     * source and the destination address, the set of those pairs, each
     * (lower, higher) by the 16 bytes as a flow key orders its endpoints,
     * sorted, without duplicates; so every packet the program can accept
     * whose flow key is kIp has a key with src and dst equal to one of the
     * pairs. nullopt when required_addresses() is, or a path proves only
     * one of them. `host A and host B` and the 5-tuple have one pair (capq
     * then reads only the lower address's flows by source, not by_dst);
     * `host A` and `src host A or dst host B` none. Computed with
     * required_addresses(). */
    const std::optional<AddressPairs>& required_pairs() const { return pairs_; }

private:
    Verdict eval_oriented(const FlowKey& k, uint8_t unknown) const;

    std::vector<filters::ClassicInsn> prog_;
    uint16_t linktype_;
    std::optional<std::vector<std::array<uint8_t, 16>>> required_;
    std::optional<AddressPairs> pairs_;
};

}  // namespace linecap::index
