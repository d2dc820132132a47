/* Chunk: the unit a worker hands to a writer.
 *
 * A worker encodes whole records into a chunk while the packets are hot in its
 * cache, frees the mbufs itself, and enqueues the chunk on its SPSC ring when
 * the chunk is full or older than the flush interval. The writer writes the
 * bytes and returns the chunk to the pool. Records never straddle chunks.
 *
 * Ownership: a chunk taken from the pool belongs to the worker until it is
 * enqueued; then to the writer until it goes back to the pool.
 *
 * Record starts: the worker also notes where each record starts, in a
 * uint32_t array at the end of the data area growing downward (record i at
 * starts()[-1 - i]), one store per packet while it writes the record. The
 * writer then finds -C cut points and the index builder finds every record
 * without walking the records by their length fields (a chain of dependent
 * cache misses on memory another core wrote). Records and starts share the
 * capacity: len + kStartBytes * packets <= capacity.
 */
#pragma once

#include <cstdint>

namespace linecap::storage {

/* Bytes a record takes in the starts array, besides its own bytes. */
inline constexpr uint32_t kStartBytes = sizeof(uint32_t);

struct alignas(64) Chunk {
    uint32_t len;       // bytes of records in data()
    uint32_t packets;   // records in data()
    uint32_t capacity;  // bytes available in data(): records and their starts (x4)
    uint16_t worker;    // producing worker, for diagnostics
    uint16_t reserved;
    uint64_t first_tsc;  // TSC when the first record went in (flush timing)

    uint8_t* data() { return reinterpret_cast<uint8_t*>(this + 1); }
    const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(this + 1); }
    /* One past the starts array; record i starts at data() + starts()[-1 - i].
     * capacity is a multiple of 4, so the array is aligned. */
    uint32_t* starts() { return reinterpret_cast<uint32_t*>(data() + capacity); }
    const uint32_t* starts() const { return reinterpret_cast<const uint32_t*>(data() + capacity); }
    /* Whether a record of `bytes` still fits, with its start. */
    bool fits(uint32_t bytes) const {
        return capacity - len - kStartBytes * packets >= bytes + kStartBytes;
    }
    void reset() {
        len = 0;
        packets = 0;
        first_tsc = 0;
    }
};
static_assert(sizeof(Chunk) == 64);

}  // namespace linecap::storage
