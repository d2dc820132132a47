// The troubleshooting stories as captures with a known truth. Every expected
// line is written here by hand from how the traffic was built, with frame
// numbers taken from the builder, never from the code under test.
// Addresses: 198.18.0.0/15 and 2001:db8::/32 only.
#pragma once

#include <string>
#include <vector>

#include "tests/diag/capture_builder.hh"

namespace linecap::tests::diag {

constexpr double kBase = 1700000000.0;  // capture start, seconds since the epoch

struct DiagnoseStory {
    Trace trace;
    // Connection lines ("CLIENT -> SERVER  VERDICT: reason"), in ranked order.
    std::vector<std::string> lines;
    // Extra findings ("also ..." lines) by connection line index.
    std::vector<std::vector<std::string>> also;
    std::string verdict;  // the final "VERDICT: ..." line
    // Frame numbers the truth refers to.
    int rst_frame_reset = 0;  // server RST after 500 B
    int rst_frame_seed = 0;   // the seed's RST after 557 B
    int retrans_frame = 0;
    int zero_window_frame = 0;
    int third_dupack_frame = 0;
};

// Nine connections: clean, refused, unanswered with 3 retries (1, 2, 4 s),
// reset by the server after data, the seed's "telnet works but the call
// fails" reset, retransmission + 3 dup ACKs + zero window, half-open, IPv6
// clean, mid-stream.
DiagnoseStory diagnose_story();

struct TwoPointOptions {
    double delay_s = 0.0025;      // one-way delay between the points, each way
    double clock_offset_s = 0.0;  // B's clock minus A's
    bool nat = false;             // B sees the client 198.18.1.5 as 198.19.0.7
    bool nat_ports = false;       // ... and port 40100 as 50100
    int ttl_hops = 3;             // TTL decrement between the points
};

struct TwoPoint {
    std::vector<OutPkt> a;              // client side
    std::vector<OutPkt> b;              // server side
    std::vector<std::string> nat_args;  // --nat values for capdiag
    // Expected "VERDICT: ..." lines of compare, in order.
    std::vector<std::string> verdicts;
    std::vector<int> blocked_frames_a;  // the firewall-dropped SYNs, frames in A
    int lost_frame_a = 0;               // client data dropped between A and B
    int injected_frame_a = 0;           // RST seen only at A
    int b_only_frame_b = 0;             // server data dropped between B and A
    size_t matched = 0;
    size_t matched_a_to_b = 0;
    size_t matched_b_to_a = 0;
};

// Client side (A) and server side (B) captures of: a web connection that
// loses one client segment between A and B and one server segment between B
// and A; two MySQL connection attempts (5 SYNs) that a firewall drops; a
// connection whose RST appears only at A (sent by a box in the path).
TwoPoint two_point(const TwoPointOptions& opt = {});

}  // namespace linecap::tests::diag
