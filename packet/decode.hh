/* Frame decoding for the TCP trackers (capd's workers, capdiag, capctl
 * diagnose) and the two-point comparison.
 *
 * decode_packet() finds the headers with the header walker (headers.hh,
 * whose rules it follows: VLAN tags, IPv4 options and fragments, which IPv6
 * extension headers are skipped and how many) and fills a DecodedPacket
 * that points into the frame. It never allocates and never reads past
 * caplen, so it may run on a worker core as well as in the offline tools.
 * Any thread may call it.
 *
 * Link types: Ethernet, Linux cooked capture v1 and v2 (tcpdump -i any),
 * raw IPv4/IPv6 and BSD loopback.
 */
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "packet/headers.hh"

namespace linecap::packet {

enum class Family : uint8_t { kNone = 0, kIpv4 = 4, kIpv6 = 6 };

/* An IPv4 address uses the first 4 bytes; the other 12 stay zero, so the
 * type compares and hashes as plain bytes. */
struct IpAddress {
    std::array<uint8_t, 16> bytes{};
    Family family = Family::kNone;

    auto operator<=>(const IpAddress&) const = default;
};

struct Endpoint {
    IpAddress addr;
    uint16_t port = 0;

    auto operator<=>(const Endpoint&) const = default;
};

/* "198.18.0.1", "2001:db8::1". */
std::string to_string(const IpAddress& a);
/* "198.18.0.1:80", "[2001:db8::1]:80". */
std::string to_string(const Endpoint& e);
/* Parses a dotted-quad IPv4 or an IPv6 address. */
bool parse_ip_address(std::string_view text, IpAddress& out);
/* Parses "ADDR", "ADDR:PORT", "[V6ADDR]" or "[V6ADDR]:PORT". A bare IPv6
 * address has no port. has_port tells whether a port was given. */
bool parse_endpoint(std::string_view text, Endpoint& out, bool& has_port);

enum : uint8_t {
    kTcpFin = 0x01,
    kTcpSyn = 0x02,
    kTcpRst = 0x04,
    kTcpPsh = 0x08,
    kTcpAck = 0x10,
    kTcpUrg = 0x20,
    kTcpEce = 0x40,
    kTcpCwr = 0x80,
};

struct DecodedPacket {
    IpAddress src;
    IpAddress dst;
    uint8_t proto = 0; /* transport protocol after extension headers */
    uint8_t ttl = 0;   /* TTL or hop limit */
    bool has_ip_id = false;
    bool fragment = false;    /* not the first fragment, or a first fragment with MF */
    uint32_t ip_id = 0;       /* IPv4 identification, or IPv6 fragment id */
    uint16_t frag_offset = 0; /* in bytes */
    bool has_ports = false;   /* TCP or UDP header decoded */
    uint16_t sport = 0;
    uint16_t dport = 0;
    /* TCP only (proto == kProtoTcp && has_ports). */
    uint32_t seq = 0;
    uint32_t ack = 0;
    uint8_t tcp_flags = 0;
    uint16_t window = 0; /* as on the wire, not scaled */
    /* Payload after the transport header (or after the IP header when the
     * transport header is not decoded): its length on the wire, taken from
     * the IP length fields (and UDP's, when shorter), and the part that was
     * captured. */
    uint32_t payload_len = 0;
    uint32_t payload_caplen = 0;
    const uint8_t* payload = nullptr;
};

/* The walker's statuses (WalkStatus), and one of its own. */
enum class DecodeStatus : uint8_t {
    kOk,        /* IP decoded; transport decoded if has_ports */
    kNotIp,     /* ARP, LLDP, ... */
    kTruncated, /* cut before the end of the IP or transport header */
    kMalformed, /* a header length field that cannot be right */
    kUnsupportedLink,
};

/* True for the link types decode_packet() understands (libpcap DLT_ values
 * as returned by pcap_datalink()). */
bool linktype_supported(int linktype);

/* Decodes one frame. On kOk, out's pointers point into frame. */
DecodeStatus decode_packet(int linktype, const uint8_t* frame, uint32_t caplen, DecodedPacket& out);

/* Sequence-space comparisons (RFC 1982 serial arithmetic on 32 bits). */
inline bool seq_lt(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) < 0; }
inline bool seq_le(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) <= 0; }
inline bool seq_gt(uint32_t a, uint32_t b) { return static_cast<int32_t>(a - b) > 0; }

}  // namespace linecap::packet
