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
 *
 * Cut notes: packets the worker's flow table left out (past a flow's
 * cutoff, or duplicates) are not copied into the chunk; the worker sums
 * them per flow while the chunk fills (dataplane/worker.cc) and, when it
 * hands the chunk over, writes one CutNote per such flow after the
 * records (at data() + the 8-aligned len, `cuts` of them), in the room it
 * kept free for them. The writer gives them to the index of the file the
 * chunk's last record went to (IndexBuilder::add_cut) and never writes
 * them to the capture file. So: align8(len) + sizeof(CutNote) * cuts +
 * kStartBytes * packets <= capacity.
 */
#pragma once

#include <cstdint>

namespace linecap::storage {

/* Bytes a record takes in the starts array, besides its own bytes. */
inline constexpr uint32_t kStartBytes = sizeof(uint32_t);

/* What the flow table left out of one flow while a chunk filled. `head` is
 * the first head_len bytes of the first such packet: enough for the index
 * to find the flow's key (Ethernet, two VLAN tags, IPv4 with options or
 * IPv6, and the TCP header fit). */
struct CutNote {
    uint64_t first_ns, last_ns;  // of the packets left out
    uint64_t cut_bytes;          // wire bytes past the cutoff
    uint64_t dup_bytes;          // wire bytes of duplicates
    uint32_t cut_packets, dup_packets;
    uint16_t if_id;
    uint16_t head_len;
    uint32_t reserved;
    uint8_t head[112];
};
static_assert(sizeof(CutNote) == 160);

struct alignas(64) Chunk {
    uint32_t len;        // bytes of records in data()
    uint32_t packets;    // records in data()
    uint32_t capacity;   // bytes available in data(): records and their starts (x4)
    uint16_t worker;     // producing worker, for diagnostics
    uint16_t cuts;       // CutNotes after the records
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
    /* The cut notes: after the records, 8-aligned. */
    static uint32_t notes_at(uint32_t len) { return (len + 7) & ~7u; }
    CutNote* notes() { return reinterpret_cast<CutNote*>(data() + notes_at(len)); }
    const CutNote* notes() const {
        return reinterpret_cast<const CutNote*>(data() + notes_at(len));
    }
    void reset() {
        len = 0;
        packets = 0;
        cuts = 0;
        first_tsc = 0;
    }
};
static_assert(sizeof(Chunk) == 64);

}  // namespace linecap::storage
