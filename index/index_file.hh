/* The index file: what capd writes beside every capture file, and what
 * capq reads to find packets without reading the capture.
 *
 * Naming (index_path_for()): the index of capture file DIR/B is DIR/.B.idx
 * (hidden, so that `tcpdump -r cap*`, mergecap and shell globs never meet
 * it), written as DIR/.B.idx.partial and renamed into place when whole. A B
 * that is itself hidden (".NAME.partial", the file being written) has
 * DIR/B.idx: the live index (below).
 *
 * Format version 1, little-endian throughout, every section 8-byte aligned:
 *
 *   IndexHeader                 128 bytes
 *   BlockEntry[block_count]     32 bytes each, in file order
 *   FlowEntry[flow_count]       104 bytes each, in order of first packet
 *   uint32_t postings[]         per flow, its blocks (ascending block numbers),
 *                               at FlowEntry::postings, postings_count of them
 *
 * A block is a run of whole records of about `block_target` bytes (the
 * last one of a file may be shorter); blocks cover the records from
 * `data_start` to `capture_bytes` with no gap. Timestamps within a file are
 * not monotonic (several workers feed one writer), so each block has its
 * own earliest and latest.
 *
 * The header's crc32c covers everything after the header; header_crc the
 * header with that field zero. A reader refuses (and capq then reads the
 * capture instead, saying why): a bad magic, a version above the one it
 * knows, a size or offset outside the file, a bad checksum, or a
 * capture_bytes larger than the capture file is now (a stale index of a
 * file cut or rewritten since). A capture file larger than capture_bytes is
 * fine for a live index (the writer has gone on since), not for a final one.
 *
 * A live index (flag kIndexLive) describes the file being written up to
 * capture_bytes, all of which is whole records on the disk; it has blocks
 * and no flows, and capq uses it to cut time and to know where the
 * records end (a reused or preallocated file holds older bytes past that).
 */
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.hh"
#include "index/flow_key.hh"

namespace linecap::index {

inline constexpr char kIndexMagic[8] = {'L', 'C', 'A', 'P', 'I', 'D', 'X', '\n'};
inline constexpr uint32_t kIndexVersion = 1;

enum : uint32_t {
    kIndexLive = 1 << 0,          // the file is still being written; no flows
    kIndexApproxCounts = 1 << 1,  // a write failure cut the file after these records were
                                  // counted: packets/bytes may be high; blocks are right
    kIndexSequential = 1 << 2,    // pcapng with a later section or interface block: blocks
                                  // past data_start cannot be read on their own; read in order
};

enum class CaptureFormat : uint32_t { kPcapMicro = 0, kPcapNano = 1, kPcapng = 2 };

struct IndexHeader {
    char magic[8];
    uint32_t version;
    uint32_t header_bytes;   // 128
    uint64_t capture_bytes;  // the capture file's size this index describes
    uint64_t data_start;     // offset of the first record (after the file header)
    uint32_t format;         // CaptureFormat
    uint32_t flags;          // kIndex*
    uint64_t packets;        // records in [data_start, capture_bytes)
    uint64_t wire_bytes;     // sum of their original (wire) lengths
    uint64_t first_ns;       // earliest timestamp (ns since the epoch); 0 if no packet
    uint64_t last_ns;        // latest
    uint32_t block_count;
    uint32_t flow_count;
    uint64_t blocks_offset;  // from the start of the index file
    uint64_t flows_offset;
    uint64_t postings_offset;
    uint64_t postings_count;  // uint32_t entries
    uint32_t block_target;    // bytes per block the writer aimed at
    uint32_t crc32c;          // of bytes [header_bytes, end of file)
    uint32_t header_crc;      // of this header with header_crc = 0
    uint32_t reserved;        // zero
};
static_assert(sizeof(IndexHeader) == 128);

struct BlockEntry {
    uint64_t offset;  // first byte of the block's first record
    uint32_t bytes;   // up to the end of its last record
    uint32_t packets;
    uint64_t min_ns;  // earliest and latest timestamp in the block
    uint64_t max_ns;
};
static_assert(sizeof(BlockEntry) == 32);

struct FlowEntry {
    FlowKey key;
    uint64_t first_ns;
    uint64_t last_ns;
    uint64_t packets;
    uint64_t wire_bytes;      // sum of original lengths
    uint32_t postings;        // index of its first block number in postings[]
    uint32_t postings_count;  // blocks holding the flow
};
static_assert(sizeof(FlowEntry) == 104);

/* An index in memory: read from a file (mapped) or built by IndexBuilder. */
class Index {
public:
    Index() = default;
    /* From bytes (an index file's whole contents, or builder output).
     * Validates as described above against capture_size (the capture file's
     * current size; ~0ull: do not check). The error says which check failed,
     * e.g. "truncated index", "index version 3 is newer than this capq's 1",
     * "checksum mismatch", "stale index: describes 1048576 bytes, file has
     * 524288". */
    static Result<Index> from_bytes(std::string bytes, uint64_t capture_size);
    /* Reads (maps) the file at path; ENOENT when there is none. */
    static Result<Index> load(const std::string& path, uint64_t capture_size);

    const IndexHeader& header() const { return *header_; }
    bool live() const { return header_->flags & kIndexLive; }
    std::span<const BlockEntry> blocks() const { return blocks_; }
    std::span<const FlowEntry> flows() const { return flows_; }
    /* Block numbers holding flow i, ascending. */
    std::span<const uint32_t> blocks_of(size_t flow) const;
    /* The serialized bytes (for writing out). */
    std::span<const uint8_t> bytes() const;

private:
    std::shared_ptr<const void> storage_;  // the mapping or the string
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    const IndexHeader* header_ = nullptr;
    std::span<const BlockEntry> blocks_;
    std::span<const FlowEntry> flows_;
    std::span<const uint32_t> postings_;
};

/* DIR/.B.idx for DIR/B, DIR/B.idx for a hidden B (see above). */
std::string index_path_for(const std::string& capture_path);
/* The leaf of the index of capture leaf B (no directory). */
std::string index_leaf_for(const std::string& capture_leaf);
/* Whether leaf names an index or an index being written (".x.idx",
 * ".x.idx.partial", ".x.partial.idx"): capq skips them. */
bool is_index_leaf(const std::string& leaf);

/* Writes bytes to `dir_fd`/`leaf` atomically: created exclusively as
 * leaf + ".partial" (an older ".partial" of ours is replaced), never
 * following a symbolic link, mode `mode`, given to owner/group when not -1,
 * then renamed over leaf. Cold. */
Status write_index_file(int dir_fd, const std::string& leaf, std::span<const uint8_t> bytes,
                        unsigned mode = 0640, int owner = -1, int group = -1);

/* CRC-32C (Castagnoli), as the header uses. */
uint32_t crc32c(const void* data, size_t len, uint32_t crc = 0);

}  // namespace linecap::index
