/* `compare`: two captures of the same traffic taken at two points (A and B,
 * e.g. on the client and on the server) matched packet by packet.
 *
 * Packets are matched by identity, not by time: addresses and ports, IP
 * protocol, IPv4 ID (IPv6 has none; the fragment id when fragmented), TCP
 * seq/ack/flags, payload length and a hash of the first payload bytes. TTL,
 * checksums, TCP options and timestamps are ignored, so routers, MSS clamping
 * and clock offsets between the two capture hosts do not break a match. NAT
 * between the points is undone with rules mapping an address (and port) as
 * seen at A to the one seen at B. When one identity occurs several times
 * (retransmissions on IPv6, duplicated frames), the k-th occurrence at A is
 * paired with the k-th at B.
 *
 * The result says, per flow direction, which packets A saw that B never did
 * (with A's frame numbers), the reverse, and the distribution of tB - tA.
 *
 * Control-side code: allocates, any thread, never throws for bad input.
 */
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hh"
#include "ctl/diag/diagnose.hh"
#include "packet/decode.hh"

namespace linecap::ctl::diag {

/* "A_ADDR[:PORT]=B_ADDR[:PORT]": A_ADDR as seen in capture A is B_ADDR in
 * capture B. With ports, only that address and port is mapped. */
struct NatRule {
    Endpoint a;
    Endpoint b;
    bool a_port = false;
    bool b_port = false;
};
Result<NatRule> parse_nat_rule(std::string_view text);

struct CompareOptions {
    std::vector<NatRule> nat;
    bool ignore_ip_id = false; /* for a middlebox that rewrites the IPv4 ID */
};

/* Raw tB - tA in nanoseconds over matched packets. */
struct DelayStats {
    uint64_t count = 0;
    int64_t min = 0;
    int64_t median = 0;
    int64_t p99 = 0; /* nearest rank */
    int64_t max = 0;
};

/* Which way the packets of a direction travel between the capture points. */
enum class Travel : uint8_t { kUnknown, kAToB, kBToA };

struct DirectionResult {
    uint8_t proto = 0;
    Endpoint src; /* addresses as seen at A */
    Endpoint dst;
    Endpoint src_b; /* the same, as seen at B (differs under NAT) */
    Endpoint dst_b;
    uint64_t at_a = 0;
    uint64_t at_b = 0;
    uint64_t matched = 0;
    std::vector<uint32_t> a_only_frames; /* frame numbers in A, all of them */
    std::vector<uint32_t> b_only_frames; /* frame numbers in B */
    uint64_t a_only_outside_b_span = 0;  /* A-only packets from when B was not capturing */
    DelayStats delay;
    Travel travel = Travel::kUnknown;
    bool travel_assumed = false; /* inferred without matches in this direction */
};

struct FlowComparison {
    uint8_t proto = 0;
    /* dir[0] is client->server where known (SYN sender, else the higher
     * port), dir[1] the reverse. */
    DirectionResult dir[2];
};

/* One verdict sentence: packets of one direction (client ports merged)
 * seen at one point and never at the other. */
struct Finding {
    bool seen_at_a = true; /* true: seen at A, missing at B */
    uint8_t proto = 0;
    std::string from; /* "198.18.1.5" or "198.18.0.10:3306" */
    std::string to;
    uint64_t missing = 0;
    uint64_t total = 0;           /* packets of these directions at the point that saw them */
    std::vector<uint32_t> frames; /* in the capture that saw them */
    Travel travel = Travel::kUnknown;
};
/* "packets from 198.18.1.5 to 198.18.0.10:3306 seen at A, never at B
 * (5 packets: frames 3, 7, 12, …)" */
std::string finding_text(const Finding& f, size_t max_frames = 10);

struct CompareReport {
    FileReport a;
    FileReport b;
    uint64_t ip_a = 0; /* decoded IP packets */
    uint64_t ip_b = 0;
    uint64_t skipped_a = 0; /* not IP or undecodable */
    uint64_t skipped_b = 0;
    uint64_t matched = 0;
    uint64_t a_only = 0;
    uint64_t b_only = 0;
    std::vector<NatRule> nat;
    std::vector<FlowComparison> flows; /* flows with losses first */

    DelayStats a_to_b; /* raw tB - tA of packets travelling A -> B */
    DelayStats b_to_a; /* raw tB - tA of packets travelling B -> A */
    /* Clock offset of B relative to A, estimated NTP-style when both
     * directions matched: the fastest packet each way is assumed to take the
     * same time. One-way delays below are with that offset removed. */
    bool offset_estimated = false;
    int64_t offset_ns = 0;
    int64_t min_owd_ns = 0;

    std::vector<Finding> findings; /* biggest first */
    std::vector<std::string> notes;
};

/* Compares two capture files. Unreadable input is reported in a.error or
 * b.error. */
CompareReport compare_files(const std::string& path_a, const std::string& path_b,
                            const CompareOptions& opt = {});

/* 0: both read completely; 1: a file could not be read; 2: one was
 * truncated (the readable part was compared). */
int compare_exit_status(const CompareReport& r);

struct CompareTextOptions {
    size_t max_frames = 10; /* frame numbers listed per finding */
    size_t max_flows = 50;  /* flows listed in the per-flow section */
};
std::string format_compare_text(const CompareReport& r, const CompareTextOptions& opt = {});
nlohmann::json compare_json(const CompareReport& r);

}  // namespace linecap::ctl::diag
