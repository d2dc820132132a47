/* Chunk: the unit a worker hands to a writer.
 *
 * A worker encodes whole records into a chunk while the packets are hot in its
 * cache, frees the mbufs itself, and enqueues the chunk on its SPSC ring when
 * the chunk is full or older than the flush interval. The writer writes the
 * bytes and returns the chunk to the pool. Records never straddle chunks.
 *
 * Ownership: a chunk taken from the pool belongs to the worker until it is
 * enqueued; then to the writer until it goes back to the pool.
 */
#pragma once

#include <cstdint>

namespace linecap::storage {

struct alignas(64) Chunk {
    uint32_t len;       // bytes of records in data()
    uint32_t packets;   // records in data()
    uint32_t capacity;  // bytes available in data()
    uint16_t worker;    // producing worker, for diagnostics
    uint16_t reserved;
    uint64_t first_tsc;  // TSC when the first record went in (flush timing)

    uint8_t* data() { return reinterpret_cast<uint8_t*>(this + 1); }
    const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(this + 1); }
    void reset() {
        len = 0;
        packets = 0;
        first_tsc = 0;
    }
};
static_assert(sizeof(Chunk) == 64);

}  // namespace linecap::storage
