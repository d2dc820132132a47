/* Worker: the poll-mode receive loop on one worker lcore.
 *
 * Per burst: rx_burst -> timestamp -> filter hook -> encode the kept packets
 * into the current chunk (while their bytes are hot) -> free the mbufs here ->
 * hand full or old chunks to the writer over its storage::ChunkRing. A full ring or
 * an empty chunk pool drops and counts; the worker never waits.
 *
 * Threads: the WorkerContext is built by the control thread, run by one
 * worker lcore; stats are read by any thread.
 */
#pragma once

#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "dataplane/clock.hh"
#include "dataplane/rule_snapshot.hh"
#include "dataplane/source.hh"
#include "filters/rule_set_run.hh"
#include "storage/chunk.hh"
#include "storage/chunk_ring.hh"
#include "storage/format.hh"

namespace linecap::dataplane {

class FlowTable;  // dataplane/flow_table.hh

/* Packets a worker takes from a queue at a time. 64 rather than DPDK's
 * usual 32: the flow table loads a burst's buckets, then its flows' lines,
 * as runs whose misses overlap, and each run waits one memory latency
 * whatever its length; a longer burst shares that wait among more packets
 * (bench/README.md, "Bursts of 64"). At 14.88 Mpps a burst is 4.3 us. */
inline constexpr uint16_t kBurstSize = 64;

/* Counters of one worker; written only by that worker. Identity:
 * rx = filtered_out + (flow table: cut off + duplicates) + over_limit +
 * accepted, and
 * accepted = encoded + writer_slow; ring_full counts encoded packets lost. */
struct alignas(64) WorkerStats {
    std::atomic<uint64_t> rx_packets{0};
    std::atomic<uint64_t> rx_bytes{0};
    std::atomic<uint64_t> filtered_out{0};
    std::atomic<uint64_t> over_limit{0};  // beyond -c
    std::atomic<uint64_t> accepted{0};
    std::atomic<uint64_t> encoded{0};      // records put in chunks
    std::atomic<uint64_t> writer_slow{0};  // no free chunk
    std::atomic<uint64_t> ring_full{0};    // chunk could not be enqueued
    std::atomic<uint64_t> chunks{0};       // chunks handed to the writer
    /* Longest stretch, in TSC cycles, between two polls of the receive
     * queues (idle sleeps excluded). Longer than the NIC ring lasts at the
     * arrival rate means nic_imissed: the worker lost its CPU. */
    std::atomic<uint64_t> max_poll_gap{0};
    /* TSC cycles of the loop turns that received packets, each from its
     * burst's arrival to the next turn's (processing, handing over, the
     * next poll): busy_cycles / rx_packets is the worker's cost per packet,
     * the source's rx included. Read from the one TSC read a turn already
     * makes. A turn longer than WorkerContext::stall_cycles (the worker lost
     * its CPU: a burst takes microseconds) counts in stalled_cycles
     * instead, so a shared or stolen CPU does not pass for packet cost. */
    std::atomic<uint64_t> busy_cycles{0};
    std::atomic<uint64_t> stalled_cycles{0};
    std::atomic<uint64_t> stalled_turns{0};
    /* The turns counted in busy_cycles. rx_packets / (busy_turns +
     * stalled_turns) is the mean burst: below kBurstSize the worker emptied
     * its queues and waited for packets, so busy_cycles / rx_packets is
     * bounded by the time between arrivals (67 ns at 14.88 Mpps) and says
     * only that the worker kept up; its own cost shows at full bursts. */
    std::atomic<uint64_t> busy_turns{0};
};

/* Shared packet budget for -c: workers take from it per burst. */
struct alignas(64) CountLimit {
    std::atomic<uint64_t> remaining{0};
    bool enabled = false;
};

/* Counters of one receive queue, for per-interface statistics. */
struct alignas(64) QueueStats {
    std::atomic<uint64_t> rx_packets{0};
    std::atomic<uint64_t> accepted{0};
};

struct QueueRef {
    Source* source;
    uint16_t queue;
    uint32_t if_id;     // interface index in the output files
    QueueStats* stats;  // owned by the pipeline
};

struct WorkerContext {
    unsigned index = 0;
    std::vector<QueueRef> queues;
    storage::ChunkRing* out = nullptr;  // SPSC ring to this worker's writer
    rte_mempool* chunk_pool = nullptr;
    storage::Format format = storage::Format::kPcapMicro;
    uint32_t snaplen = 262144;
    MbufFields fields;
    TscClock clock;
    uint64_t flush_cycles = 0;
    uint64_t stall_cycles = ~0ull;  // a busy turn longer than this is a stall (WorkerStats)
    /* The rule set in force; workers re-read it every burst and report a
     * quiescent state to `qsbr` between bursts (thread id = index). */
    std::atomic<RuleSnapshot*>* rules = nullptr;
    rte_rcu_qsbr* qsbr = nullptr;
    CountLimit* limit = nullptr;
    const std::atomic<bool>* stop = nullptr;
    bool rx_only = false;
    bool lossless = false;       // only finite file sources: wait for the writer, never drop
    unsigned idle_sleep_us = 0;  // after 64 empty polls; 0: never (placement.hh idle_sleep_us())
    /* Flow cutoff and dedup (flow_table.hh), after the rule set and before
     * -c; its counters hold what it cut. With --tcp-flows it also holds the
     * live TCP diagnosis, fed with the packets kept after -c. Null: off. */
    FlowTable* flows = nullptr;
    /* With flows: note what the table leaves out, per flow and chunk, for
     * the index (storage/chunk.hh CutNote). Off without an index. */
    bool cut_notes = false;

    WorkerStats stats;
    std::atomic<bool> done{false};
};

/* The lcore entry point (arg is a WorkerContext*). Returns when *stop is set
 * or every queue it polls is finished, after handing over its last chunk. */
int worker_main(void* arg);

}  // namespace linecap::dataplane
