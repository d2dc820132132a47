/* TcpFlowTable: one worker's live TCP connection table, for `capctl diagnose`.
 *
 * Each worker owns one table (capd --tcp-flows N connections; 0 disables
 * it). The worker feeds it the packets it accepted (after the rule set and
 * -c: what the capture sees), once per burst. The table is a
 * packet::TcpTracker: fixed memory allocated here, LRU eviction counted,
 * no allocation, lock or syscall per packet. Non-TCP Ethernet frames are
 * refused after two header loads (packet::ethernet_may_carry_tcp(), by the
 * header walker's rules), before the decoder runs.
 *
 * Snapshots without locking the hot path: the control thread bumps a
 * request number; the worker, between two bursts (serve(), one relaxed load
 * per loop turn when nothing is asked), copies its connections into a
 * snapshot area owned by the table and publishes the request number back.
 * The control thread reads the copy only once that number is published, and
 * never asks again before it is done reading, so the worker never writes the
 * area while it is read. A worker that has returned cannot answer: the
 * control thread then copies the table itself (the worker no longer touches
 * it). The snapshot area is mapped at creation and its pages are given back
 * after each read, so a table costs its connection slots (744 B each,
 * touched as connections arrive) and the snapshot only while one is read.
 *
 * Cost (bench/tcp_table_bench, 2-vCPU Xeon VM shared with other jobs):
 * feed_burst() takes 3-5 ns per non-TCP packet, 100-170 ns per TCP packet
 * of a known connection and 190-215 ns when each packet evicts one (the
 * slots' cache and TLB misses dominate). A snapshot stalls the worker's
 * loop for the copy: 21 ms for a full 65536-connection table, in
 * proportion to the connections in use.
 *
 * Threads: create(), request(), ready(), view() and release(): the control
 * thread. feed_burst() and serve(): the owning worker.
 */
#pragma once

#include <rte_branch_prediction.h>
#include <rte_mbuf.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "common/result.hh"
#include "packet/tcp_tracker.hh"

namespace linecap::dataplane {

struct WorkerContext;
struct QueueRef;

class TcpFlowTable {
public:
    /* capacity >= 1 connections. Errors: out of memory (mapping the snapshot
     * area or allocating the slots). */
    static Result<std::unique_ptr<TcpFlowTable>> create(unsigned worker, uint32_t capacity);
    ~TcpFlowTable();
    TcpFlowTable(const TcpFlowTable&) = delete;
    TcpFlowTable& operator=(const TcpFlowTable&) = delete;

    /* Worker, once per burst: feeds pkts[i] for which keep[i] != 0, stamped
     * as the capture stamps them (file timestamp, port timestamp, or
     * burst_ns / the TSC). Frame i is numbered by the queue's receive count
     * (q.stats->rx_packets, already including this burst). */
    void feed_burst(const WorkerContext& ctx, const QueueRef& q, rte_mbuf* const* pkts,
                    const uint8_t* keep, uint16_t n, uint64_t burst_ns);

    /* Worker, between bursts: copies the table if the control thread asked. */
    void serve() {
        const uint64_t req = request_.load(std::memory_order_acquire);
        if (unlikely(req != served_.load(std::memory_order_relaxed))) copy_out(req);
    }

    /* Control thread: asks for a copy. */
    void request();
    /* Control thread: true once the copy asked for is complete. If the
     * worker has returned (worker_done, read with acquire), copies the
     * table here instead. */
    bool ready(bool worker_done);
    /* Control thread, after ready(): the copy. Valid until release(). */
    packet::TableView view() const;
    /* Control thread, after ready(): gives the copy's pages back. */
    void release();

    uint32_t capacity() const { return tracker_.capacity(); }

private:
    TcpFlowTable(unsigned worker, packet::TcpTracker tracker, void* area, size_t area_bytes);
    void copy_out(uint64_t req);

    packet::TcpTracker tracker_;
    uint64_t packets_seen_ = 0;
    uint64_t last_ts_ = 0;
    unsigned worker_;

    /* The snapshot area and what the last copy put there. */
    packet::TcpConn* area_;
    size_t area_bytes_;
    uint32_t snap_count_ = 0;
    packet::TrackerCounters snap_counters_;
    uint64_t snap_seen_ = 0;
    uint64_t snap_last_ts_ = 0;

    /* One line, read by the worker every loop turn, written rarely. */
    alignas(64) std::atomic<uint64_t> request_{0}; /* written by the control thread */
    std::atomic<uint64_t> served_{0};              /* written by whoever copied */
};

}  // namespace linecap::dataplane
