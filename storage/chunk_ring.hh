/* ChunkRing: the single-producer, single-consumer ring that carries full
 * chunks from one worker to its writer (an rte_ring with RING_F_SP_ENQ |
 * RING_F_SC_DEQ, exact size).
 *
 * It lives in storage/ beside Chunk because the writer is its consumer and
 * dataplane/ already depends on storage/, not the other way round.
 *
 * Cold side (control thread): create() makes the ring at start-up; the
 * owner (the pipeline) destroys it after the worker and the writer that use
 * it have stopped. Errors name the ring and DPDK's reason.
 *
 * Hot side: exactly one worker lcore calls enqueue() and full(); exactly one
 * writer lcore calls dequeue_burst(). A chunk enqueued belongs to the writer
 * (storage/chunk.hh); a chunk that did not fit stays the worker's.
 */
#pragma once

#include <rte_ring.h>

#include <memory>
#include <string>

#include "common/result.hh"
#include "storage/chunk.hh"

namespace linecap::storage {

class ChunkRing {
public:
    /* A ring of exactly `count` chunks on `socket`. Needs the EAL. */
    [[nodiscard]] static Result<std::unique_ptr<ChunkRing>> create(const std::string& name,
                                                                   unsigned count, int socket);
    ~ChunkRing();
    ChunkRing(const ChunkRing&) = delete;
    ChunkRing& operator=(const ChunkRing&) = delete;

    /* Worker: true when the writer now owns `c`. */
    bool enqueue(Chunk* c) { return rte_ring_sp_enqueue(ring_, c) == 0; }
    bool full() const { return rte_ring_full(ring_); }
    /* Writer: up to n chunks, now the writer's. */
    unsigned dequeue_burst(Chunk** chunks, unsigned n) {
        return rte_ring_sc_dequeue_burst(ring_, reinterpret_cast<void**>(chunks), n, nullptr);
    }
    unsigned count() const { return rte_ring_count(ring_); }
    unsigned capacity() const { return rte_ring_get_capacity(ring_); }

private:
    explicit ChunkRing(rte_ring* r) : ring_(r) {}
    rte_ring* ring_;
};

}  // namespace linecap::storage
