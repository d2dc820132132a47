/* The header walker: where a frame's IP header, transport header and
 * payload start, by one set of rules for every part of linecap that looks
 * inside packets: the frame decoder (decode.hh, for capdiag, capctl
 * diagnose/compare and the workers' TCP tables), the TCP tables' prefilter
 * (ethernet_may_carry_tcp() below) and the payload patterns' scan scope.
 *
 * The rules:
 *  - Ethernet: up to kMaxVlanTags (8) tags, each 802.1Q (0x8100), 802.1ad
 *    (0x88a8) or the older QinQ type 0x9100, in any mix; a ninth tag is
 *    kMalformed. Then EtherType 0x0800 is IPv4, 0x86dd IPv6, any other
 *    kNotIp. walk_ethertype() starts at an EtherType (Linux cooked capture),
 *    walk_ip() at an IP header whose version nibble says which (raw IP, BSD
 *    loopback); any version but 4 and 6 is kNotIp there.
 *  - IPv4: the header length (IHL, 20 to 60 bytes) skips the options
 *    unread. The datagram ends at the total length; a total length of 0
 *    (frames captured before segmentation offload) means "up to caplen".
 *    fragment is set for MF or a non-zero offset.
 *  - IPv6: a payload length of 0 (jumbogram, offload capture) means "up to
 *    caplen". Extension headers skipped, at most kMaxIpv6ExtHeaders (16) of
 *    them in a chain: hop-by-hop options (0), routing (43), fragment (44),
 *    destination options (60), AH (51), mobility (135), HIP (139) and
 *    shim6 (140); a seventeenth is kMalformed. ESP (50) is not walked (what
 *    follows is encrypted): it is the protocol, with no ports. No next
 *    header (59) is the protocol, with an empty payload. A fragment header
 *    sets fragment, ip_id and frag_offset; for a first fragment the walk
 *    goes on, for a later one it stops there.
 *  - A later fragment (offset non-zero, IPv4 or IPv6) has no transport
 *    header: proto is the fragment header's (or IPv4's) protocol, the
 *    payload is the fragment's data, no ports.
 *  - TCP (6): the 20-byte header must be captured and fit the datagram
 *    (else kTruncated); a data offset under 20 or past the datagram's end is
 *    kMalformed. UDP (17): the 8-byte header likewise (kTruncated); the
 *    payload ends at the UDP length when that is shorter than the datagram;
 *    a UDP length of 1 to 7 is kMalformed, 0 (jumbogram) leaves the IP
 *    length in charge. Other protocols: the payload is everything after the
 *    IP header and extension headers.
 *  - An IP header or extension header past the datagram's end is
 *    kMalformed; one past caplen, kTruncated.
 *
 * Offsets are from the start of the frame. end and payload_end may lie past
 * caplen (the frame was cut short); cap_end never does. On a status other
 * than kOk the fields are partly filled and mean nothing.
 *
 * Never allocates, never reads outside [frame, frame + caplen); any thread.
 * Cost: a few ns per frame (the branch per header and the loads).
 */
#pragma once

#include <cstdint>

namespace linecap::packet {

constexpr int kMaxVlanTags = 8;
constexpr int kMaxIpv6ExtHeaders = 16;

enum : uint8_t {
    kProtoIcmp = 1,
    kProtoTcp = 6,
    kProtoUdp = 17,
    kProtoEsp = 50,
    kProtoIcmpv6 = 58,
    kProtoNoNext = 59,
};

enum class WalkStatus : uint8_t {
    kOk,        /* IP found; transport header too if has_ports */
    kNotIp,     /* ARP, LLDP, ... */
    kTruncated, /* cut before the end of the IP, extension or transport header */
    kMalformed, /* a length field that cannot be right, or too many tags or extension headers */
};

struct Headers {
    uint32_t l3 = 0;          /* IP header */
    uint32_t l4 = 0;          /* after the IP header, its options and extension headers */
    uint32_t payload = 0;     /* after the TCP/UDP header; l4 without one */
    uint32_t payload_end = 0; /* end of the payload on the wire (UDP: its length) */
    uint32_t end = 0;         /* end of the IP datagram on the wire */
    uint32_t cap_end = 0;     /* min(end, caplen) */
    uint16_t ethertype = 0;   /* after the VLAN tags; 0 from walk_ip() */
    uint8_t vlan_tags = 0;
    uint8_t ip_version = 0;  /* 4 or 6 */
    uint8_t proto = 0;       /* after the extension headers */
    uint8_t ttl = 0;         /* TTL or hop limit */
    uint8_t ext_headers = 0; /* IPv6 extension headers skipped */
    bool fragment = false;   /* IPv4 MF or offset; an IPv6 fragment header */
    bool has_ip_id = false;
    bool has_ports = false;   /* TCP or UDP header found */
    uint16_t frag_offset = 0; /* in bytes */
    uint32_t ip_id = 0;       /* IPv4 identification, or IPv6 fragment id */
    uint16_t sport = 0;
    uint16_t dport = 0;

    /* The addresses: 4 bytes (IPv4) or 16 (IPv6) at these offsets. */
    uint32_t src_offset() const { return l3 + (ip_version == 4 ? 12 : 8); }
    uint32_t dst_offset() const { return l3 + (ip_version == 4 ? 16 : 24); }
    uint32_t addr_len() const { return ip_version == 4 ? 4 : 16; }
};

/* From an Ethernet header at offset 0. */
WalkStatus walk_ethernet(const uint8_t* frame, uint32_t caplen, Headers& h);
/* From whatever EtherType `type` announces at offset off (tags included). */
WalkStatus walk_ethertype(const uint8_t* frame, uint32_t caplen, uint32_t off, uint16_t type,
                          Headers& h);
/* From an IPv4 or IPv6 header at offset off. */
WalkStatus walk_ip(const uint8_t* frame, uint32_t caplen, uint32_t off, Headers& h);

/* The extension headers walk_ip() skips (see the rules above). */
constexpr bool is_ipv6_ext_header(uint8_t nh) {
    return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60 || nh == 135 || nh == 139 ||
           nh == 140;
}

/* A cheap test before walk_ethernet(): false only for an Ethernet frame in
 * which walk_ethernet() cannot find a TCP header (too short for Ethernet,
 * IPv4 and TCP; neither IP nor VLAN-tagged; IPv4 of another protocol; IPv6
 * whose first next header is neither TCP nor an extension header). One
 * length test and two loads. */
inline bool ethernet_may_carry_tcp(const uint8_t* d, uint32_t caplen) {
    if (caplen < 14 + 20 + 20) return false;
    const uint16_t type = static_cast<uint16_t>(d[12] << 8 | d[13]);
    if (type == 0x0800) return d[14 + 9] == kProtoTcp;
    if (type == 0x86dd) {
        const uint8_t nh = d[14 + 6];
        return nh == kProtoTcp || is_ipv6_ext_header(nh);
    }
    return type == 0x8100 || type == 0x88a8 || type == 0x9100;
}

}  // namespace linecap::packet
