/* Per-connection TCP analysis in a fixed-capacity flow table.
 *
 * TcpTracker follows every TCP connection it is fed (both directions of a
 * 5-tuple merged, IPv4 and IPv6): handshake, SYN retries and their times,
 * resets and the payload bytes each way before them, retransmissions, data
 * never captured, duplicate ACKs counted as TCP counts them (RFC 5681 §2),
 * zero windows and FINs.
 *
 * Memory: all connection slots are allocated by create(). update()
 * never allocates, locks, logs or throws, so a capture worker can own a
 * tracker and feed it packets; the offline tools feed it from files. When the
 * table is full, the least recently updated connection is evicted: the
 * eviction callback sees it once, then its slot is reused, and evicted()
 * counts it. The callback also sees a connection whose 5-tuple is reused by
 * a new SYN after the old connection finished.
 *
 * A tracker belongs to one thread. The callback runs on that thread, inside
 * update().
 */
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "common/result.hh"
#include "packet/decode.hh"

namespace linecap::packet {

/* A frame in a set of capture files: file index and 1-based frame number. */
struct FrameRef {
    uint32_t file = 0;
    uint32_t frame = 0;
};

constexpr int kMaxSynTimes = 16; /* SYN times kept for retry intervals */
constexpr int kMaxFrameRefs = 8; /* retransmission frames kept per direction */

/* What one side of a connection sent, as seen at the capture point. */
struct TcpDirection {
    uint64_t packets = 0;
    uint64_t payload_packets = 0;
    uint64_t bytes = 0; /* sequence space covered by payload, retransmissions once */
    bool syn = false;
    bool seq_known = false;
    uint32_t isn = 0;  /* valid if syn */
    uint32_t high = 0; /* end of the highest payload byte seen (next new seq) */

    uint32_t retransmissions = 0; /* segments with payload resending seen seq space */
    uint64_t retrans_bytes = 0;
    uint32_t retrans_frames_kept = 0;
    FrameRef retrans_frames[kMaxFrameRefs];
    uint32_t gaps = 0; /* segments starting beyond high: earlier data not captured */
    uint64_t gap_bytes = 0;

    /* ACKs this side sent about the peer's data. */
    bool ack_known = false;
    uint32_t last_ack = 0;
    uint16_t last_win = 0;
    uint32_t dupack_run = 0;
    uint32_t dup_acks = 0;
    uint32_t dupack_runs3 = 0; /* runs that reached 3 (fast retransmit threshold) */
    uint32_t max_dupack_run = 0;
    FrameRef first_triple_dupack;

    uint32_t zero_windows = 0; /* segments advertising a zero window */
    uint32_t zero_window_episodes = 0;
    bool in_zero_window = false;
    FrameRef first_zero_window;

    bool fin = false;
    uint32_t fin_seq = 0;
    uint64_t fin_ts = 0;
    FrameRef fin_frame;

    uint32_t rsts = 0;

    bool ttl_known = false;
    uint8_t ttl = 0; /* of the last non-RST segment */
};

struct TcpConn {
    /* Canonical order ep[0] <= ep[1]; dir[i] is what ep[i] sent. */
    Endpoint ep[2];
    TcpDirection dir[2];

    uint8_t client = 0; /* index into ep */
    enum class RoleBasis : uint8_t { kSyn, kSynAck, kPort } role_basis = RoleBasis::kPort;

    uint64_t packets = 0;
    uint64_t first_ts = 0;
    uint64_t last_ts = 0;
    FrameRef first_frame;
    FrameRef last_frame;

    uint32_t syn_count = 0; /* client SYNs, first and retries (and new attempts) */
    uint64_t syn_ts[kMaxSynTimes] = {};
    FrameRef first_syn_frame;
    uint32_t synack_count = 0;
    uint64_t synack_ts = 0;
    bool handshake_done = false; /* client ACKed the SYN-ACK */
    bool server_spoke = false;   /* any non-RST segment from the server side */

    /* First RST of the connection. */
    bool reset = false;
    uint8_t rst_dir = 0;
    uint8_t rst_ttl = 0;
    bool rst_before_handshake = false;
    bool rst_after_fins = false;
    bool rst_after_synack = false;
    uint64_t rst_ts = 0;
    FrameRef rst_frame;
    uint64_t bytes_at_rst[2] = {};

    /* Table bookkeeping. */
    uint64_t hash = 0;
    uint32_t bucket_next = 0;
    uint32_t lru_prev = 0;
    uint32_t lru_next = 0;
    bool in_use = false;
};

struct TrackerCounters {
    uint64_t packets = 0; /* TCP packets fed to update() */
    uint64_t not_tcp = 0; /* packets update() refused: not TCP, or no TCP header */
    uint64_t evicted = 0; /* connections pushed out of a full table */
    uint64_t reused = 0;  /* connections finished because a new SYN reused the 5-tuple */
    uint64_t created = 0;
};

class TcpTracker {
public:
    enum class Release : uint8_t { kEvicted, kReused };
    using ReleaseFn = void (*)(void* ctx, const TcpConn& conn, Release why);

    /* capacity connection slots (0 is taken as 1), allocated here (zeroed
     * pages from the kernel: untouched slots cost no memory). on_release may
     * be null. Errors: the slots or the hash buckets cannot be allocated
     * ("TCP tracker of N connections: cannot map M MiB"). Never throws. */
    static Result<TcpTracker> create(uint32_t capacity, ReleaseFn on_release = nullptr,
                                     void* ctx = nullptr);

    /* Feeds one decoded packet. Returns false for a packet that is not TCP
     * with a decoded header (counted in not_tcp). Never allocates. */
    bool update(const DecodedPacket& p, uint64_t ts_ns, FrameRef frame);

    /* Connections in the table, least recently updated first. */
    template <class F>
    void for_each(F&& fn) const {
        for (uint32_t i = lru_tail_; i != kNil; i = conns_[i].lru_prev) fn(conns_[i]);
    }

    uint32_t capacity() const { return capacity_; }
    uint32_t size() const { return used_; }
    const TrackerCounters& counters() const { return counters_; }

private:
    static constexpr uint32_t kNil = 0xffffffffu;

    TcpTracker(ReleaseFn on_release, void* ctx) : on_release_(on_release), ctx_(ctx) {}

    uint32_t find_or_insert(const Endpoint& a, const Endpoint& b, uint64_t hash);
    void unlink_bucket(uint32_t idx);
    void lru_remove(uint32_t idx);
    void lru_push_front(uint32_t idx);

    /* The slots are an anonymous mapping with transparent huge pages asked
     * for: a table of tens of MB is looked up at random, and 4 KiB pages
     * would cost a TLB miss per lookup. */
    struct UnmapDeleter {
        size_t bytes;
        void operator()(void* p) const;
    };
    static_assert(std::is_trivially_destructible_v<TcpConn>);

    std::unique_ptr<TcpConn[], UnmapDeleter> conns_;
    uint32_t capacity_ = 0;
    uint32_t next_unused_ = 0; /* slots below it have been constructed */
    std::vector<uint32_t> buckets_;
    uint64_t bucket_mask_ = 0;
    uint32_t lru_head_ = kNil; /* most recently updated */
    uint32_t lru_tail_ = kNil;
    uint32_t used_ = 0;
    ReleaseFn on_release_;
    void* ctx_;
    TrackerCounters counters_;
};

/* A copy of one capture worker's TCP records, taken between two bursts
 * (dataplane/flow_table.hh, FlowTable::tcp_view()), for the live diagnosis (ctl/diag/live.hh). */
struct TableView {
    unsigned worker = 0;
    uint32_t capacity = 0;
    std::span<const TcpConn> conns; /* the connections in the table */
    TrackerCounters counters;
    uint64_t packets_seen = 0; /* accepted packets offered to the table */
    uint64_t last_ts = 0;      /* timestamp of the last TCP packet fed */
};

/* Applies one segment to a connection; d is the index of the sender in
 * c.ep. Exposed for tests; TcpTracker::update() calls it. */
void tcp_conn_update(TcpConn& c, int d, const DecodedPacket& p, uint64_t ts_ns, FrameRef frame);

}  // namespace linecap::packet
