/* FlowTable: one worker's flow table, for the flow cutoff, dedup and the
 * live TCP diagnosis (capctl diagnose, --tcp-flows).
 *
 * A flow is every packet with the same VLAN ids, IP version, addresses,
 * protocol and ports (TCP, UDP, SCTP; 0 for others and for IPv4 fragments
 * after the first). Both directions are one flow: the key holds the two
 * endpoints in a canonical order. Frames that carry no IP (ARP, LLDP, a
 * link type the table does not walk) belong to no flow and always pass.
 * Link types: those of the header walker (packet/headers.hh, decode.hh):
 * Ethernet, Linux cooked v1/v2, raw IP, BSD loopback. Ethernet (up to two
 * VLAN tags) and raw IP are parsed inline; the rest (more tags, IPv6
 * extension headers, the other link types) through the walker, by its
 * rules. The key holds the first two VLAN ids.
 *
 * Per packet the table answers keep, cut (past the flow's cutoff) or
 * duplicate:
 *  - Cutoff: a flow's packets are kept until its frame bytes (wire length,
 *    both directions together) reach cutoff_bytes or its packets reach
 *    cutoff_packets (0: no limit); the packet that reaches it is still
 *    kept. Later packets are cut, except TCP packets with SYN, FIN or RST,
 *    always kept, so how every connection opened and ended stays on disk.
 *    With per_direction, each direction counts on its own: a packet is cut
 *    once the bytes or packets its sender's direction sent before it reach
 *    the cutoff, whatever the other direction sent.
 *    The cutoff is the packet's own (packet()'s FlowCutoff: the one of the
 *    rule that accepted it), compared with the flow's counts of every
 *    packet so far: a flow whose packets match rules with different
 *    cutoffs has each packet judged by its rule's, and the flow is
 *    counted once.
 *  - Dedup: a packet whose bytes equal, except the IPv4 TTL and header
 *    checksum or the IPv6 hop limit, one of the last two packets of its
 *    flow, and arrives within dedup_window_ns of it, is a duplicate. Bytes
 *    are compared through a 64-bit hash and the wire length (a distinct
 *    packet is taken for a duplicate with probability about 2^-64).
 *    Duplicates count toward nothing else (not the cutoff). Times are
 *    compared in 4 ns steps (a slot keeps the two packets' ages in 32 bits).
 *
 * Counts per flow: packets and bytes per direction (packets saturate at
 * 2^32 - 1 per direction, cut packets at 2^28 - 1 per flow).
 *
 * Identity: a flow is named in the table by its key's 64-bit hash, keyed
 * with words drawn at start (so which keys collide cannot be known, or
 * chosen, outside the process); the key itself is kept for capctl flows.
 * Two live flows whose keys hash alike would be counted as one: with n
 * flows in the table, a new flow's chance is about n / 2^64.
 *
 * Memory: per slot a hot line of 64 bytes (the hash, state, packet and
 * byte counts, cut bytes, last time, LRU stamp and TCP record index: all
 * that a packet of a known flow reads and writes), a cold line of 64 (the
 * key and the LRU links: touched by a new flow, an eviction, an LRU move
 * and capctl flows) and, with dedup on, 32 bytes of dedup hashes and ages;
 * a bucket of 64 bytes per two slots (rounded up to a power of two), and
 * tcp_conns TCP records of 744 bytes, mapped once at create() (2 MiB huge
 * pages when the system has free ones, else normal pages, populated at
 * once; huge_pages() says which); nothing is allocated afterwards. A
 * bucket is one cache line of 8 ways (slot, top 16 bits of the hash): a
 * lookup reads one line and compares a slot's hash only on a tag match, no
 * chain. A bucket whose 8 ways are taken lends its new flows to its pair
 * (the other half of its 128 bytes, searched only while it holds some);
 * when both are full (rare: 2 flows a bucket on average at a full table),
 * the bucket's least recently seen flow gives up its place (counted
 * evicted or expired, and bucket_full).
 * A new flow takes a free slot; if none is free, the least recently seen
 * flow's slot (counted as evicted, or expired if it had been idle for
 * idle_ns, or had ended: an RST, or FIN from both sides, puts a flow first
 * in line to be reused). A TCP SYN without ACK on an ended flow starts it
 * again from zero.
 * Least recently seen is approximate, to a step of lru_step_ns (1 s by
 * default): a flow seen again moves to the front of the eviction order
 * only if it last moved lru_step_ns or more before (in units of 2^20 ns),
 * so the flow evicted was seen at most lru_step_ns + 2 ms later than the
 * least recently seen flow; with lru_step_ns 0 the order is exact. The
 * move relinks the slot's cold line and its two neighbours', three cache
 * misses on a big table if paid every time; fetch() brings them in with
 * the burst's other lines.
 *
 * TCP diagnosis (tcp_conns > 0, capd --tcp-flows): a second pool of
 * tcp_conns packet::TcpConn records (744 B each), one per diagnosed TCP
 * connection, indexed from its flow's slot, with its own LRU list. After
 * the keep decision (cutoff, dedup, then -c), the worker hands each kept
 * TCP packet to tcp_packet() with the slot packet() found for it
 * (last_slot()): the record is taken then (a free one, else the least
 * recently updated one, whose flow loses its diagnosis and keeps its
 * cutoff; counted evicted) and updated by packet::tcp_conn_update() with
 * packet::TcpTracker's rules (a fresh SYN on a connection that progressed
 * starts a new one: reused). A flow pushed out of the table takes its
 * record with it (counted evicted). The TCP fields are read at the offsets
 * parse_flow() found: one header walk per packet serves the table and the
 * diagnosis. What the diagnosis no longer sees that the separate tracker
 * saw: the first fragment of a fragmented TCP segment (the key of a
 * fragment has no ports), and one 5-tuple on two VLANs is two connections.
 *
 * Threads: create() and the counters' readers any thread; packet() and
 * tcp_packet() only the owning worker. Counters: single writer, relaxed
 * atomics.
 *
 * Cost: a hash, one bucket line and the flow's hot line per packet (and its
 * dedup record with dedup on); on a table larger than the cache both are
 * misses, and the hot line's address is known only once the bucket is
 * read. So the worker parses a burst, fetch()es
 * its buckets and then its slots, each as one run of loads, then takes the
 * verdicts. At 2^20 flows, slots at random as on a real link, the parse
 * and lookup cost about 64 ns/packet so, against about 170 with prefetch
 * instructions (a bucket prefetch per packet in the parse loop, then a
 * prefetch_slot() pass), which overlap fewer misses on the VM of
 * bench/README.md (flow_table_bench FlowsScatteredFetch,
 * FlowsScatteredSlotStage).
 */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common/result.hh"
#include "packet/tcp_tracker.hh"

namespace linecap::dataplane {

/* A cutoff: wire bytes and packets of a flow (or of one direction) kept;
 * 0: no limit. */
struct FlowCutoff {
    uint64_t bytes = 0;
    uint64_t packets = 0;
};

struct FlowConfig {
    uint32_t slots = 262144;
    uint64_t cutoff_bytes = 0;             // 0: no byte cutoff (packet() without a FlowCutoff)
    uint64_t cutoff_packets = 0;           // 0: no packet cutoff
    bool per_direction = false;            // each direction of a flow has the cutoff
    uint64_t dedup_window_ns = 0;          // 0: no dedup
    uint64_t idle_ns = 60'000'000'000ull;  // an idle flow expires after this
    uint32_t tcp_conns = 0;                // TCP connections diagnosed (--tcp-flows); 0: none
    // The table serves only the TCP diagnosis (--tcp-flows alone): the
    // worker hands it packets with a TCP header only, unless rules have
    // their own cutoffs; the flow counters then count TCP flows.
    bool tcp_only = false;
    // A flow seen again moves to the front of the eviction order only when
    // it last moved this long ago (0: on every packet, exact LRU).
    uint64_t lru_step_ns = 1'000'000'000ull;
};

struct FlowCounters {
    std::atomic<uint64_t> active{0};
    std::atomic<uint64_t> created{0};
    std::atomic<uint64_t> evicted{0};  // live flows pushed out by a full table
    std::atomic<uint64_t> expired{0};  // idle or ended flows whose slot was reused
    // New flows whose bucket's 8 ways and its pair's were taken: the
    // bucket's least recently seen flow made room (also counted evicted or
    // expired).
    std::atomic<uint64_t> bucket_full{0};
    std::atomic<uint64_t> cut_packets{0};
    std::atomic<uint64_t> cut_bytes{0};  // wire bytes
    std::atomic<uint64_t> duplicates{0};
    std::atomic<uint64_t> duplicate_bytes{0};
    std::atomic<uint64_t> untracked{0};  // packets of no flow (not IP): passed
};

/* One flow, as `capctl flows` lists it. */
struct FlowInfo {
    uint8_t ip_version = 0;
    uint8_t proto = 0;
    uint8_t a[16] = {}, b[16] = {};  // endpoints, lower first
    uint16_t pa = 0, pb = 0;
    uint32_t vlan = 0;
    uint64_t packets = 0, bytes = 0, cut_packets = 0, cut_bytes = 0;
    uint64_t first_ns = 0, last_ns = 0;
};

/* The parsed header fields a verdict needs; filled by parse_flow(), which
 * always sets ok, tcp and tcp_flags, and the rest when ok. No member
 * initialisers: the worker keeps a burst's array on its stack whether the
 * table is on or not, and leaves it untouched when it is off. */
struct FlowPacket {
    struct Key {
        uint8_t a[16], b[16];
        uint32_t ports;  // pa << 16 | pb
        uint32_t vlan;   // outer vid << 12 | inner vid, plus bit 24/25 per tag present
        uint8_t proto, version;
        uint8_t pad[2];
    } key;
    uint64_t hash;
    uint16_t l3;        // where the IP header starts
    uint16_t tcp;       // where a whole captured TCP header starts; 0: none
    uint8_t tcp_flags;  // TCP only; 0 otherwise
    bool a_sent;        // the sender is the lower endpoint
    bool ok;            // false: not IP, no flow
};
static_assert(sizeof(FlowPacket::Key) == 44);
static_assert(std::is_trivially_default_constructible_v<FlowPacket>);

/* Fills p from a frame. Reads only [frame, frame + caplen). */
void parse_flow(uint16_t linktype, const uint8_t* frame, uint32_t caplen, FlowPacket& p);

/* True if the table can find flows in frames of this link type. */
bool flow_linktype_supported(uint16_t linktype);

class FlowTable {
public:
    enum Verdict : uint8_t { kKeep = 0, kCut = 1, kDuplicate = 2 };

    /* Bytes one table of `slots` flows and `tcp_conns` TCP records maps. */
    static uint64_t bytes_for(uint32_t slots, uint32_t tcp_conns = 0, bool dedup = false);
    /* Errors: slots 0, or the memory cannot be mapped. */
    static Result<std::unique_ptr<FlowTable>> create(const FlowConfig& cfg);
    ~FlowTable();
    FlowTable(const FlowTable&) = delete;
    FlowTable& operator=(const FlowTable&) = delete;

    /* Brings a burst's flows into the cache before its verdicts: the
     * buckets of the packets p[i] with take[i] set (parsed; those without
     * a flow are skipped), then the hot lines (and dedup records) of the
     * slots whose tags match in them, then for the flows due to move to
     * the LRU front at now_ns (the burst's time) their cold lines, then
     * their LRU neighbours', each set as a run of loads with nothing
     * between them, so that their misses overlap. n <= kMaxFetch. With
     * `found`, found[i] is the slot + 1 whose tag matched for p[i] (0:
     * none, or not taken): packet()'s hint. */
    static constexpr unsigned kMaxFetch = 64;
    void fetch(const FlowPacket* p, const uint8_t* take, unsigned n, uint64_t now_ns,
               uint32_t* found = nullptr) const;
    /* The same with prefetch instructions, one packet at a time: the bucket,
     * then (once every bucket of the burst is asked for) the slot. Slower
     * than fetch() where prefetches do not overlap misses (the VM of
     * bench/README.md); flow_table_bench compares the two. */
    void prefetch(const FlowPacket& p) const;
    void prefetch_slot(const FlowPacket& p) const;
    /* The verdict on one packet (p from parse_flow() on its bytes). `frame`
     * and caplen are the packet's bytes, read only with dedup on. `cut` is
     * this packet's cutoff; without it, the configured one. `hint`: the
     * slot + 1 fetch() found for p; taken without searching the bucket
     * again if it still holds p's flow (an earlier packet of the burst may
     * have given the slot to another), else ignored. */
    Verdict packet(const FlowPacket& p, const uint8_t* frame, uint32_t caplen, uint32_t wirelen,
                   uint64_t ts_ns, const FlowCutoff& cut, uint32_t hint = 0);
    Verdict packet(const FlowPacket& p, const uint8_t* frame, uint32_t caplen, uint32_t wirelen,
                   uint64_t ts_ns) {
        return packet(p, frame, caplen, wirelen, ts_ns, default_cut_);
    }
    const FlowCutoff& default_cutoff() const { return default_cut_; }
    /* The slot of the flow the last packet() call judged (not for a packet
     * of no flow); tcp_packet() takes it. */
    uint32_t last_slot() const { return last_slot_; }

    /* TCP diagnosis (tcp_conns > 0). tcp_offered(): the worker, once per
     * burst, with the number of packets the capture kept (the diagnosis
     * reports them as seen). tcp_packet(): a kept packet whose flow is in
     * `slot` (last_slot() after its packet() call), with p.tcp set; a
     * packet whose slot a later packet of the same burst took is not fed
     * (counted as an evicted connection). Never allocates. */
    bool tcp_on() const { return tcp_ != nullptr; }
    void tcp_offered(uint32_t n) { tcp_seen_ += n; }
    void tcp_packet(uint32_t slot, const FlowPacket& p, const uint8_t* frame, uint32_t caplen,
                    uint64_t ts_ns, packet::FrameRef ref);

    /* Snapshots of the TCP records for `capctl diagnose`: the control
     * thread asks (tcp_request()), the owner copies between bursts (serve())
     * into an area mapped at create() whose pages are given back after each
     * read (tcp_release()), the control thread reads the copy once
     * tcp_ready() (tcp_ready(true): a worker that has returned; the copy is
     * made on the calling thread). The copy stalls the worker in proportion
     * to the connections in use. */
    void tcp_request();
    bool tcp_ready(bool owner_done);
    packet::TableView tcp_view(unsigned worker) const;
    void tcp_release();
    uint32_t tcp_capacity() const { return cfg_.tcp_conns; }

    /* Snapshots of the biggest flows for `capctl flows`, as the TCP
     * snapshots above: the control thread asks (request(n), n <= kMaxTop),
     * the owner answers between bursts (serve(): one relaxed load when
     * nothing is asked; an answer walks the live flows and keeps the n with
     * the most bytes in an area allocated at create(): no allocation), the
     * control thread reads once ready(). A worker that has returned cannot
     * answer: ready(true) computes the answer on the calling thread. */
    static constexpr size_t kMaxTop = 1000;
    void request(size_t n);
    void serve() {
        const uint64_t req = request_.load(std::memory_order_acquire);
        if (req != served_.load(std::memory_order_relaxed)) answer(req);
        const uint64_t treq = tcp_request_.load(std::memory_order_acquire);
        if (treq != tcp_served_.load(std::memory_order_relaxed)) tcp_copy(treq);
    }
    bool ready(bool owner_done);
    /* After ready(): the flows, most bytes first. */
    std::vector<FlowInfo> top_view() const;

    const FlowCounters& counters() const { return counters_; }
    const FlowConfig& config() const { return cfg_; }
    /* The table's memory is on 2 MiB huge pages (else normal pages, with
     * transparent huge pages advised). */
    bool huge_pages() const { return huge_pages_; }

private:
    static constexpr unsigned kWays = 8;
    struct Hot;
    struct Cold;
    struct Dup;
    struct Bucket;
    FlowTable(const FlowConfig& cfg, void* mem, uint64_t bytes);
    uint32_t take_slot(uint64_t ts_ns);
    uint32_t take_way(uint32_t bucket, uint64_t ts_ns);
    uint32_t find(const Bucket& b, uint16_t tag, uint64_t id, unsigned& free_way) const;
    // The first slot (+ 1) whose tag matches in p's bucket or its pair; 0: none.
    uint32_t tagged_slot(const FlowPacket& p) const;
    static unsigned tag_ways(const Bucket& b, uint16_t tag);
    static unsigned free_ways(const Bucket& b);
    void release(uint32_t s, uint64_t ts_ns);
    void unlink_bucket(uint32_t s);
    void answer(uint64_t req);
    void tcp_drop(uint32_t slot);
    void tcp_copy(uint64_t req);

    FlowConfig cfg_;
    FlowCutoff default_cut_;
    void* mem_;
    uint64_t mem_bytes_;
    Hot* hot_;
    Cold* cold_;
    Bucket* buckets_;
    Dup* dup_ = nullptr;  // dedup on only
    uint32_t mask_;
    uint32_t lru_step_;  // cfg_.lru_step_ns in Slot::lru_stamp units
    bool huge_pages_ = false;
    uint32_t used_ = 0;             // slots ever handed out (the rest are fresh)
    uint32_t lru_head_, lru_tail_;  // head: most recently seen
    FlowCounters counters_;
    uint32_t last_slot_ = 0;

    // The TCP pool: records, LRU links in TcpConn::lru_prev/lru_next (record
    // + 1, 0: none; head most recently updated; free records at the tail),
    // the owning flow's slot + 1 in TcpConn::bucket_next.
    packet::TcpConn* tcp_ = nullptr;
    uint32_t tcp_used_ = 0;  // records ever handed out
    uint32_t tcp_head_ = 0, tcp_tail_ = 0;
    packet::TrackerCounters tcp_counters_;
    uint64_t tcp_seen_ = 0, tcp_last_ts_ = 0;
    packet::TcpConn* tcp_area_ = nullptr;  // snapshot copies
    uint64_t tcp_area_bytes_ = 0;
    uint32_t snap_count_ = 0;
    packet::TrackerCounters snap_counters_;
    uint64_t snap_seen_ = 0, snap_last_ts_ = 0;

    std::unique_ptr<FlowInfo[]> top_;  // kMaxTop entries
    size_t top_n_ = 0;
    std::atomic<size_t> top_want_{0};
    alignas(64) std::atomic<uint64_t> request_{0};
    std::atomic<uint64_t> served_{0};
    std::atomic<uint64_t> tcp_request_{0};
    std::atomic<uint64_t> tcp_served_{0};
};

}  // namespace linecap::dataplane
