/* FlowKey: what the index knows about the packets of one flow.
 *
 * A flow is every packet of one file with the same key: the link-layer
 * framing up to the IP header (VLAN tags, EtherType), the IP version,
 * header length and protocol, the addresses, and the ports. Both directions
 * of a conversation are one flow: the key holds the two endpoints in a
 * canonical order, the lower (address, port) as src/sport (addresses
 * compared as 16 bytes, then the ports), so `src`/`dst` in a key say
 * "lower"/"higher", not who sent (FlowFilter tries both orientations).
 *
 * The key holds exactly what capq's pruning (prune.hh) may rely on: every
 * field below is the same, byte for byte, in every packet of the flow, and
 * lies within the captured bytes of each of them. Anything else (MAC
 * addresses, TTL, lengths, flags, payload) is unknown to the index, and a
 * filter that reads it is answered by reading the packets.
 *
 * Kinds:
 *  - kOpaque: a link type make_flow_key() does not walk, more than two
 *    VLAN tags, or a frame the header walker found truncated or malformed.
 *    Nothing is known; every query reads such packets.
 *  - kLink: an Ethernet (or Linux cooked) frame that is not IP (ARP, LLDP,
 *    ...): the tags and the EtherType are known.
 *  - kIp: an IPv4 or IPv6 packet: also version, l4_offset, first_nxt,
 *    proto, the addresses, and the ports when has_ports.
 *
 * Link types walked: DLT_EN10MB (1), DLT_LINUX_SLL (113), and raw IP
 * (DLT_RAW 12/14, LINKTYPE_RAW 101). Others give kOpaque.
 *
 * Plain data, fixed layout, stored as is in the index file (index_file.hh):
 * 64 bytes, little-endian, no padding holes (zeroed where unused so that
 * keys compare and hash as bytes).
 */
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace linecap::index {

enum class FlowKind : uint8_t { kOpaque = 0, kLink = 1, kIp = 2 };

enum : uint8_t {
    kFlowHasPorts = 1 << 0,       // sport/dport hold the TCP/UDP ports
    kFlowLaterFragment = 1 << 1,  // a fragment with a non-zero offset (no ports)
    kFlowFragment = 1 << 2,       // a fragment (first or later): MF or offset set
};

struct FlowKey {
    uint8_t src[16];  // the lower endpoint; IPv4: the first 4 bytes, the rest zero
    uint8_t dst[16];  // the higher endpoint
    uint16_t sport;   // host byte order; 0 unless kFlowHasPorts; the lower endpoint's
    uint16_t dport;
    uint16_t tpid[2];    // outer, inner VLAN tag type (0x8100, 0x88a8, 0x9100); 0: none
    uint16_t vid[2];     // their VLAN ids (12 bits; priority and DEI are not kept)
    uint16_t ethertype;  // after the tags (kLink, kIp); 0 for raw IP
    uint16_t linktype;   // the file's link type for this packet's interface
    uint16_t l3_offset;  // where the IP header (kIp) or the payload (kLink) starts
    uint16_t l4_offset;  // kIp: from the IP header to the transport header
                         // (IPv4: IHL x 4; IPv6: 40 + extension headers)
    FlowKind kind;
    uint8_t ip_version;   // 4 or 6 (kIp)
    uint8_t first_nxt;    // kIp: IPv4 protocol field; IPv6 next header of the fixed header
    uint8_t proto;        // kIp: the protocol after the extension headers (the walker's)
    uint8_t flags;        // kFlow* bits
    uint8_t vlan_tags;    // 0, 1 or 2
    uint8_t reserved[6];  // zero

    bool operator==(const FlowKey& o) const { return std::memcmp(this, &o, sizeof(*this)) == 0; }
};
static_assert(sizeof(FlowKey) == 64);

/* Fills k (every byte, unused ones zero) for the packet `frame` of caplen
 * captured bytes, from interface link type `linktype`, endpoints in the
 * canonical order. Never allocates; reads only [frame, frame + caplen). A
 * few ns more than the header walk. */
void make_flow_key(uint16_t linktype, const uint8_t* frame, uint32_t caplen, FlowKey& k);

/* A 64-bit hash of the whole key (for the builder's table). */
uint64_t hash_flow_key(const FlowKey& k);

/* "tcp 198.18.0.1:40000 <> 198.18.3.7:443 vlan 100" style text (both
 * directions, the key's order), for --flows
 * and messages: proto name or number, addresses (IPv6 in RFC 5952 form),
 * ports when known, then the tags; "ether type 0x0806" for kLink, "other"
 * for kOpaque. */
std::string describe_flow(const FlowKey& k);

}  // namespace linecap::index
