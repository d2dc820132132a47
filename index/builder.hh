/* IndexBuilder: builds the index of one capture file, record by record.
 *
 * capd's writer feeds it each record it has written (after the write
 * succeeded, from the chunk it wrote: the bytes are still in its cache);
 * capq feeds it the records of a file it (re)indexes. Per record: one flow
 * key (make_flow_key), one lookup in an open-addressing table, a few
 * counters, and when the flow is new to the current block one posting.
 * Memory: the table and the arrays grow by doubling and are kept from one
 * file to the next (reset() keeps capacity), so a steady capture allocates
 * nothing per packet; at most a few doublings per file.
 *
 * Not thread-safe; one builder per writer.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "index/flow_key.hh"
#include "index/index_file.hh"

namespace linecap::index {

inline constexpr uint32_t kDefaultBlockBytes = 256u << 10;
// Version 4: flows per compressed group, and the groups' codec.
inline constexpr uint32_t kFlowGroupFlows = 64;
inline constexpr Codec kFlowGroupCodec = Codec::kLz4;

class IndexBuilder {
public:
    explicit IndexBuilder(uint32_t block_bytes = kDefaultBlockBytes);

    /* Starts a file: its format, the link type of each interface (pcap: one;
     * pcapng: per interface id, in IDB order), and where its first record
     * starts. Forgets the previous file, keeping memory. */
    void begin(CaptureFormat format, std::span<const uint16_t> linktypes, uint64_t data_start);

    /* One record: it starts at file offset `offset` and takes rec_bytes
     * (header, packet, padding, trailer); ts_ns since the epoch; if_id its
     * interface (0 for pcap); `frame` its caplen captured bytes; wirelen the
     * original length. Records must come in file order; bytes skipped
     * between two of them (pcapng blocks that are not packets) are counted
     * in the blocks, which cover the file without a gap. */
    void add(uint64_t offset, uint32_t rec_bytes, uint64_t ts_ns, uint32_t if_id,
             const uint8_t* frame, uint32_t caplen, uint32_t wirelen);

    /* Every record in buf (records as storage/format.hh encodes them, whole,
     * in format `begin` named), the first at file offset `offset`. */
    void add_records(const uint8_t* buf, size_t len, uint64_t offset);

    /* The same for records whose starts the producer noted (capd's worker
     * does, in each chunk; see storage/chunk.hh): record i of `count`
     * starts at buf + starts[i * step] (step 1, or -1 for a chunk's downward
     * array); the records lie back to back from the first one's start to
     * buf + end, and the first is at file offset `offset`. A chunk written
     * in pieces (-C) hands each piece over with its own starts. Gives the
     * same index as add_records() over the same bytes, without walking from
     * one record to the next by their length fields: a chain of dependent
     * cache misses on memory another core wrote. Instead the headers and
     * frame starts of the records a batch ahead are prefetched, so that
     * their misses overlap. */
    void add_chunk(const uint8_t* buf, const uint32_t* starts, ptrdiff_t step, size_t count,
                   uint32_t end, uint64_t offset);

    /* Packets of one flow that capd left out of this file (its flow cutoff
     * or dedup; see storage/chunk.hh CutNote): `head` is the first
     * head_len bytes of one of them, enough for its flow key, on interface
     * if_id (pcapng; a pcap file's one interface otherwise); the counts and
     * times are of all of them. The flow gets these counts (the index's
     * cuts section, versions 3 and 4); a flow with no record
     * in the file is added with 0 packets. Order-free: one lookup, no
     * block or posting. */
    void add_cut(uint32_t if_id, const uint8_t* head, uint32_t head_len, uint64_t first_ns,
                 uint64_t last_ns, uint64_t cut_packets, uint64_t cut_bytes, uint64_t dup_packets,
                 uint64_t dup_bytes);
    /* add_cut() for n notes at once (a chunk's), pipelined: all keys and
     * hashes first, prefetching their table slots, then the flows the slots
     * name, then the counts; so with many flows their cache misses overlap
     * rather than follow one another. The same result as n add_cut(). */
    struct Cut {
        const uint8_t* head;
        uint32_t head_len, if_id;
        uint64_t first_ns, last_ns, cut_packets, cut_bytes, dup_packets, dup_bytes;
    };
    void add_cuts(const Cut* cuts, size_t n);
    /* Flows with packets left out so far. */
    size_t cut_flows() const { return cut_flows_; }

    /* A write failure cut the file back to `file_bytes`: blocks past it are
     * dropped (a block cut in two keeps its first part), and the counts
     * are marked approximate (kIndexApproxCounts). */
    void truncate(uint64_t file_bytes);

    /* The file can only be read in order from data_start (a pcapng section
     * or interface block after the first record; kIndexSequential).
     * add_records() notices it itself; callers of add() say so. */
    void mark_sequential() { flags_ |= kIndexSequential; }

    /* Compressed capture files (capd --compress; index format version 2):
     * the caller cuts the blocks itself, one per frame. set_codec() after
     * begin(); then blocks are cut only by end_block(): the block being
     * built ends here, and its frame lies at file offset `stored_offset`,
     * `stored_bytes` long. The next record starts a new block. */
    void set_codec(Codec c) { codec_ = c; }
    void end_block(uint64_t stored_offset, uint32_t stored_bytes);
    /* end_block() in two steps, for a writer whose frames are made later
     * (capd --compress-threads): cut_block() ends the block being built,
     * its frame not yet known; store_block() gives the oldest ended block
     * without a frame its frame, in block order. Until then the block is
     * not stored: stored_end(), serialize_live() and serialize() stop
     * before it, and truncate_stored() drops it. */
    void cut_block();
    void store_block(uint64_t stored_offset, uint32_t stored_bytes);
    /* A compressed file was cut back to `file_bytes` on the disk: the
     * blocks whose frames do not end by then go (truncate()). */
    void truncate_stored(uint64_t file_bytes);
    /* The stream offset where the frames that end by file_bytes end. */
    uint64_t stored_end(uint64_t file_bytes) const;

    /* The flow section's layout: compressed groups (format version 4, the
     * default, with or without cuts) or the plain entries of versions 1 to 3
     * (for comparisons, and readers older than version 4: capq
     * --index-version 1; version 3 when something was cut). */
    void set_compact_flows(bool on) { compact_flows_ = on; }

    /* Offset just past the last record added. */
    uint64_t end() const { return end_; }
    uint64_t packets() const { return packets_; }

    /* The whole index of the file, whose size is `capture_bytes` (>= end();
     * a pcapng file's trailing statistics blocks are outside the records).
     * The builder stays as it is (a live snapshot may be followed by more
     * records). */
    std::string serialize(uint64_t capture_bytes) const;
    /* Version 4: each group of kFlowGroupFlows flows byte-shuffled and
     * compressed with lz4 (about 3.5 times smaller on a many-flow mix):
     * at most about 20 ms more per 100,000 flows than the plain layout,
     * next to the sort both pay, once per file at rotation
     * (CompactFlows.SerializeCostPrinted in tests/index prints both). */
    /* A live index (kIndexLive): header and the blocks whose records end at
     * or before valid_bytes, capture_bytes = the end of the last of them. */
    std::string serialize_live(uint64_t valid_bytes) const;

private:
    uint32_t block_bytes_;
    bool compact_flows_ = true;
    CaptureFormat format_ = CaptureFormat::kPcapMicro;
    std::vector<uint16_t> linktypes_;
    uint64_t data_start_ = 0;
    uint64_t end_ = 0;
    uint64_t packets_ = 0;
    uint64_t wire_bytes_ = 0;
    uint64_t first_ns_ = 0, last_ns_ = 0;
    uint32_t flags_ = 0;
    std::vector<BlockEntry> blocks_;
    Codec codec_ = Codec::kNone;
    bool cut_ = false;                  // the next record starts a block (end_block)
    std::vector<StoredBlock> stored_;   // per ended block (codec_ only)
    size_t stored_known_ = 0;           // the leading stored_ whose frames are known
    std::vector<uint64_t> block_wire_;  // per block: sum of wire lengths
    // While building, FlowEntry::postings holds the last block the flow was
    // seen in + 1 and postings_count its blocks so far; serialize() fills
    // the real postings fields in its copy.
    std::vector<FlowEntry> flows_;
    std::vector<uint64_t> postings_;  // (flow << 32 | block), in arrival order
    // Per flow number (shorter than flows_ when the last flows have none):
    // what add_cut() gave it. Empty until the file's first cut.
    struct CutCounts {
        uint64_t first_ns, last_ns, cut_packets, cut_bytes, dup_packets, dup_bytes;
    };
    std::vector<CutCounts> cuts_;
    size_t cut_flows_ = 0;
    // Open addressing, linear probing: (hash >> 32) << 32 | (flow index + 1);
    // 0 empty. One probe touches one 8-byte slot, then the flow's entry.
    std::vector<uint64_t> table_;
    uint64_t table_mask_ = 0;

    struct Pending;  // a record add_records() has parsed, not yet added
    void start_block(uint64_t offset);
    void count_record(uint64_t offset, uint32_t rec_bytes, uint64_t ts_ns, uint32_t wirelen);
    void count_flow(uint32_t flow, uint64_t ts_ns, uint32_t wirelen);
    void add_batch(const Pending* p, size_t n);
    void add_other(uint32_t type, uint32_t total, uint64_t at);
    uint32_t find_or_insert(const FlowKey& k, uint64_t hash, uint64_t ts_ns);
    void count_cut(const FlowKey& k, uint64_t hash, const Cut& c);
    void grow_table();
    void rebuild_table();
};

}  // namespace linecap::index
