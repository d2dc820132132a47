/* The chunk pool hands chunks out last-in-first-out, so a capture with few
 * chunks in flight keeps touching the same few, however long it runs
 * (dataplane/chunk_pool.hh). EAL runs without hugepages, as a fresh machine
 * does (dataplane_test_main.cc). */
#include <gtest/gtest.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_mempool.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include "dataplane/chunk_pool.hh"
#include "storage/chunk.hh"

using linecap::dataplane::make_chunk_pool;

namespace {

constexpr unsigned kCount = 64;
constexpr unsigned kChunkKb = 16;

struct Pool {
    rte_mempool* mp = nullptr;
    explicit Pool(const char* name) {
        auto r = make_chunk_pool(name, kCount, kChunkKb, SOCKET_ID_ANY);
        if (!r)
            ADD_FAILURE() << r.error();
        else
            mp = r->pool;
        EXPECT_TRUE(r && r->lifo) << "the stack mempool driver was not loaded";
    }
    ~Pool() { rte_mempool_free(mp); }
};

TEST(ChunkPool, SizeAndCapacity) {
    Pool p("cp_size");
    ASSERT_NE(p.mp, nullptr);
    EXPECT_EQ(p.mp->size, kCount);
    EXPECT_EQ(p.mp->elt_size, sizeof(linecap::storage::Chunk) + kChunkKb * 1024);
    EXPECT_EQ(rte_mempool_avail_count(p.mp), kCount);
}

TEST(ChunkPool, TheChunkJustReturnedIsTheNextOneTaken) {
    Pool p("cp_lifo");
    ASSERT_NE(p.mp, nullptr);
    void* a = nullptr;
    ASSERT_EQ(rte_mempool_get(p.mp, &a), 0);
    rte_mempool_put(p.mp, a);
    void* b = nullptr;
    ASSERT_EQ(rte_mempool_get(p.mp, &b), 0);
    EXPECT_EQ(a, b);
    rte_mempool_put(p.mp, b);
}

/* A worker takes a chunk, fills it and enqueues it; the writer returns a
 * batch of 3 some time later. Over 20 passes through the pool, only the
 * chunks in flight at once may ever be touched (a FIFO would touch all 64). */
TEST(ChunkPool, WorkerWriterCycleTouchesOnlyTheChunksInFlight) {
    Pool p("cp_cycle");
    ASSERT_NE(p.mp, nullptr);
    constexpr unsigned kInFlight = 4, kBatch = 3;
    std::set<void*> touched;
    std::vector<void*> queued;
    for (unsigned i = 0; i < kCount * 20; i++) {
        void* c = nullptr;
        ASSERT_EQ(rte_mempool_get(p.mp, &c), 0);
        touched.insert(c);
        queued.push_back(c);
        if (queued.size() == kInFlight) {
            rte_mempool_put_bulk(p.mp, queued.data(), kBatch);
            queued.erase(queued.begin(), queued.begin() + kBatch);
        }
    }
    EXPECT_LE(touched.size(), kInFlight) << "chunks touched out of " << kCount;
    rte_mempool_put_bulk(p.mp, queued.data(), static_cast<unsigned>(queued.size()));
    EXPECT_EQ(rte_mempool_avail_count(p.mp), kCount);
}

TEST(ChunkPool, ImpossibleSizeIsAnError) {
    auto r = make_chunk_pool("cp_huge", 1u << 20, 1u << 20, SOCKET_ID_ANY);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("chunk pool (1048576 x 1048576 KiB)"), std::string::npos) << r.error();
}

}  // namespace
