/* One worker (dataplane/worker.hh) on a net_null port under --no-huge
 * --no-pci, run on the main lcore while this test's own thread plays the
 * writer. Checks the identities worker.hh states, in the runs that make each
 * counter move: a -c budget (over_limit), a filter (filtered_out), an
 * exhausted chunk pool (writer_slow) and a full ring (ring_full):
 *   rx = filtered_out + over_limit + accepted
 *   accepted = encoded + writer_slow
 *   encoded = packets that reached the writer + ring_full
 * and the queue's own counters agree with the worker's. */
#include <gtest/gtest.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/chunk_pool.hh"
#include "dataplane/mempool.hh"
#include "dataplane/rule_publisher.hh"
#include "dataplane/source.hh"
#include "dataplane/worker.hh"
#include "storage/chunk.hh"
#include "storage/chunk_ring.hh"
#include "storage/format.hh"

using namespace linecap;
using namespace linecap::dataplane;

namespace {

struct Run {
    const char* name;
    unsigned port;  // net_nullN, one per run (closing a vdev port releases it)
    const char* filter;
    uint64_t limit;
    unsigned pool_chunks, ring_chunks;
    bool packet_buffered;  // as -U: every loop turn hands its chunk over
};

struct Counts {
    uint64_t rx, filtered_out, over_limit, accepted, encoded, writer_slow, ring_full, chunks;
    uint64_t queue_rx, queue_accepted, delivered, delivered_chunks;
    uint64_t bad_starts;  // delivered chunks whose noted record starts are wrong
};

/* Whether the record starts the worker noted in c (storage/chunk.hh) are
 * those of its records, walked by their lengths, and fit its capacity. */
bool starts_match(const storage::Chunk* c, storage::Format fmt) {
    if (uint64_t(c->len) + uint64_t(storage::kStartBytes) * c->packets > c->capacity) return false;
    uint32_t at = 0;
    for (uint32_t i = 0; i < c->packets; i++) {
        if (at >= c->len || c->starts()[-1 - int64_t(i)] != at) return false;
        at += storage::record_length(fmt, c->data() + at);
    }
    return at == c->len;
}

/* Runs a worker until its stats show `done_when`, or 5 s pass. */
template <class Pred>
Counts run_worker(const Run& r, Pred done_when) {
    Counts out{};
    SourceSpec spec;
    spec.kind = SourceSpec::Kind::kNull;
    spec.text = "null";
    std::string pool_name = "wt_mbufs" + std::to_string(r.port);
    Mempool mbufs(rte_pktmbuf_pool_create(pool_name.c_str(), 2048, 64, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                          SOCKET_ID_ANY));
    EXPECT_TRUE(mbufs);
    if (!mbufs) return out;
    // net_null hands out pool mbufs without writing them: make them all
    // zeros, whatever this memory held before.
    rte_mempool_obj_iter(
        mbufs.get(),
        [](rte_mempool*, void*, void* obj, unsigned) {
            auto* m = static_cast<rte_mbuf*>(obj);
            std::memset(m->buf_addr, 0, m->buf_len);
        },
        nullptr);
    auto fields = MbufFields::register_fields();
    EXPECT_TRUE(fields);
    if (!fields) return out;
    auto src = open_eth_source(spec, r.port, 1, 512, mbufs.get(), false);
    EXPECT_TRUE(src) << src.error();
    if (!src) return out;

    filters::RuleSpec rule;
    rule.name = "cli";
    rule.expression = r.filter;
    filters::CompileOptions copts;
    auto pub = RulePublisher::create({rule}, copts, 1);
    EXPECT_TRUE(pub) << pub.error();
    if (!pub) return out;
    auto pool =
        make_chunk_pool("wt_chunks" + std::to_string(r.port), r.pool_chunks, 64, SOCKET_ID_ANY);
    EXPECT_TRUE(pool) << pool.error();
    if (!pool) return out;
    Mempool chunks(pool->pool);
    auto ring = storage::ChunkRing::create("wt_ring" + std::to_string(r.port), r.ring_chunks,
                                           SOCKET_ID_ANY);
    EXPECT_TRUE(ring) << ring.error();
    if (!ring) return out;

    QueueStats qs;
    CountLimit limit;
    limit.enabled = r.limit > 0;
    limit.remaining.store(r.limit);
    std::atomic<bool> stop{false};
    auto ctx = std::make_unique<WorkerContext>();
    ctx->queues.push_back(QueueRef{src->get(), 0, 0, &qs});
    ctx->out = ring->get();
    ctx->chunk_pool = chunks.get();
    ctx->snaplen = 262144;
    ctx->fields = *fields;
    // Otherwise only full chunks go (no flush deadline).
    ctx->flush_cycles = r.packet_buffered ? 0 : UINT64_MAX;
    ctx->rules = (*pub)->slot();
    ctx->qsbr = (*pub)->qsbr();
    ctx->limit = &limit;
    ctx->stop = &stop;

    // The writer's side: wait for the condition, stop the worker, and take
    // every chunk it hands over until it is done (it drains its last one).
    std::thread writer([&] {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (!done_when(ctx->stats) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        stop.store(true);
        storage::Chunk* got[16];
        for (;;) {
            bool done = ctx->done.load(std::memory_order_acquire);
            unsigned n = (*ring)->dequeue_burst(got, 16);
            for (unsigned i = 0; i < n; i++) {
                out.delivered += got[i]->packets;
                out.delivered_chunks++;
                if (!starts_match(got[i], ctx->format)) out.bad_starts++;
            }
            if (n) rte_mempool_put_bulk(chunks.get(), reinterpret_cast<void**>(got), n);
            if (done && n == 0) break;
            if (!n) std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    });
    worker_main(ctx.get());
    writer.join();

    const WorkerStats& s = ctx->stats;
    out.rx = s.rx_packets.load();
    out.filtered_out = s.filtered_out.load();
    out.over_limit = s.over_limit.load();
    out.accepted = s.accepted.load();
    out.encoded = s.encoded.load();
    out.writer_slow = s.writer_slow.load();
    out.ring_full = s.ring_full.load();
    out.chunks = s.chunks.load();
    out.queue_rx = qs.rx_packets.load();
    out.queue_accepted = qs.accepted.load();
    EXPECT_EQ(rte_mempool_avail_count(chunks.get()), r.pool_chunks) << "a chunk was not returned";
    src->reset();  // the port before its mbuf pool
    return out;
}

void expect_identities(const Counts& r) {
    EXPECT_GT(r.rx, 0u);
    EXPECT_EQ(r.rx, r.filtered_out + r.over_limit + r.accepted);
    EXPECT_EQ(r.accepted, r.encoded + r.writer_slow);
    EXPECT_EQ(r.encoded, r.delivered + r.ring_full);
    EXPECT_EQ(r.chunks, r.delivered_chunks);
    EXPECT_EQ(r.bad_starts, 0u);
    EXPECT_EQ(r.queue_rx, r.rx);
    EXPECT_EQ(r.queue_accepted, r.accepted);
}

TEST(Worker, CountBudgetOverLimit) {
    auto r = run_worker({"limit", 0, "", 5000, 64, 64, false},
                        [](const WorkerStats& s) { return s.over_limit.load() > 0; });
    expect_identities(r);
    EXPECT_EQ(r.accepted, 5000u);
    EXPECT_GT(r.over_limit, 0u);
    EXPECT_EQ(r.writer_slow + r.ring_full, 0u);
    EXPECT_EQ(r.delivered, 5000u);
}

TEST(Worker, FilteredOut) {
    // The frames are zeros: no IPv4, so "ip" keeps none of them.
    auto r = run_worker({"filter", 1, "ip", 0, 64, 64, true},
                        [](const WorkerStats& s) { return s.filtered_out.load() >= 10000; });
    expect_identities(r);
    EXPECT_GE(r.filtered_out, 10000u);
    EXPECT_EQ(r.accepted, 0u);
}

TEST(Worker, EmptyChunkPoolIsWriterSlow) {
    // Two chunks, both soon in a ring nobody empties until the end.
    auto r = run_worker({"pool", 2, "", 0, 2, 4, true},
                        [](const WorkerStats& s) { return s.writer_slow.load() >= 1000; });
    expect_identities(r);
    EXPECT_GE(r.writer_slow, 1000u);
}

TEST(Worker, FullRingIsRingFull) {
    auto r = run_worker({"ring", 3, "", 0, 16, 2, false},
                        [](const WorkerStats& s) { return s.ring_full.load() >= 1000; });
    expect_identities(r);
    EXPECT_GE(r.ring_full, 1000u);
    EXPECT_EQ(r.writer_slow, 0u);
}

}  // namespace
