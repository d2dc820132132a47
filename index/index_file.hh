/* The index file: what capd writes beside every capture file, and what
 * capq reads to find packets without reading the capture.
 *
 * Naming (index_path_for()): the index of capture file DIR/B is DIR/.B.idx
 * (hidden, so that `tcpdump -r cap*`, mergecap and shell globs never meet
 * it), written as DIR/.B.idx.partial and renamed into place when whole. A B
 * that is itself hidden (".NAME.partial", the file being written) has
 * DIR/B.idx: the live index (below).
 *
 * Format versions 1 to 4, little-endian throughout, every section 8-byte
 * aligned; versions 1, 2 and 3 are laid out so:
 *
 *   IndexHeader                 160 bytes
 *   uint32_t page_crcs[page_count]  crc32c of each 64 KiB page of the body
 *   BlockEntry[block_count]     32 bytes each, in file order
 *   StoredBlock[block_count]    16 bytes each, only when codec != 0
 *   FlowEntry[flow_count]       104 bytes each, sorted by (kind, src, dst,
 *                               then the whole key as bytes): the non-IP
 *                               flows (kOpaque, kLink) first, non_ip_flows
 *                               of them, then the IP flows by source address
 *   uint32_t by_dst[flow_count - non_ip_flows]
 *                               the IP flows' numbers, sorted by (dst, number)
 *   uint32_t postings[]         per flow, its blocks (ascending block numbers),
 *                               at FlowEntry::postings, postings_count of them
 *   CutEntry cuts[cut_count]    40 bytes each, versions 3 and 4: the packets
 *                               the flow cutoff and dedup kept out of the file,
 *                               per flow number, ascending; at
 *                               align8(postings_offset + 4 x postings_count)
 *
 * Version 2 adds `codec` to the header (the reserved word of version 1)
 * and, for a compressed capture file (capd --compress; index/codec.hh),
 * the StoredBlock table: block i is then one zstd frame, lz4 frame or
 * gzip member of the file, at stored[i].offset, stored[i].bytes long,
 * holding exactly the block's records. Offsets in BlockEntry and
 * data_start are then offsets in the decompressed stream (the file header
 * is a frame of its own before the first block); capture_bytes is the
 * compressed file's size on the disk, as for the staleness check. An
 * uncompressed capture's index is written as version 1, byte for byte
 * what version 1 was, so older readers read it; readers read both.
 *
 * Version 3 adds the cuts section (capd --flow-cutoff, --flow-packets,
 * --dedup, a rule's cutoff): for each flow of the file some of whose
 * packets capd left out while this file was being written, how many and
 * their wire bytes, cut and duplicate apart. Its entries are the flows
 * with such packets only, so the header's cut_count (the reserved word of
 * versions 1 and 2, zero there) is never 0 in version 3: a file with
 * plain flows and nothing left out is written as version 1 or 2, byte for
 * byte as before. A flow may have nothing but cut packets in a file (a
 * long flow past its cutoff when the file was opened): its FlowEntry has 0
 * packets, 0 bytes, no blocks, and first_ns/last_ns those of its cut
 * packets; capq --flows lists it so, with what was cut.
 *
 * Version 4 (written by default for closed files since; readers read 1
 * to 4) keeps every section of versions 1 to 3 but the flows, which it
 * stores compressed in independent groups, with uncompressed fences to
 * find them; it always has the cut_count word, 0 when nothing was cut:
 *
 *   IndexHeader                 160 bytes, header_bytes = 208
 *   IndexHeaderV4Ext            48 bytes (below)
 *   uint32_t page_crcs[page_count]
 *   BlockEntry[block_count], StoredBlock[block_count] (codec != 0)
 *   FlowFence[group_count]      32 bytes each, at fences_offset
 *   uint8_t dst_fences[dst_fence_count][16]  at dst_fences_offset
 *   groups                      at flows_offset, groups_bytes long (then
 *                               zeros to 8): group g holds flows
 *                               [g * group_flows, (g + 1) * group_flows)
 *                               of the version 1 order, the FlowEntry
 *                               bytes shuffled by byte plane (byte j of
 *                               entry i at j * n + i, n the group's
 *                               entries) and compressed as one frame of
 *                               flow_codec (lz4 or zstd, index/codec.hh)
 *   uint32_t by_dst[flow_count - non_ip_flows]   as version 1
 *   uint32_t postings[]                          as version 1
 *   CutEntry cuts[cut_count]                     as version 3, flow numbers
 *                                                of the version 1 order
 *
 * FlowFence g: the source address of the group's first IP flow (zeros
 * when it has none), and where its frame lies (from flows_offset) with
 * the crc32c of the frame. dst_fences[k]: the destination address of the
 * flow by_dst[k * group_flows]. A fence is verified (its page) when a
 * lookup relies on it or its group is used; a group when first used: its
 * crc, its frame, and its entries (kind order, sources ascending from the
 * fence's address and not past the next fence's, postings in range), then
 * kept decompressed in memory. So a lookup by source binary-searches the
 * fences and reads the one or two groups that can hold the address; by
 * destination, the dst fences (a hint), the by_dst entries of one
 * stretch and the groups its binary search probes. Why: sorted flows
 * share address prefixes, IPv4 keys are mostly zeros, and byte planes
 * turn both into runs, so a group compresses about 3.5 times; a 104-byte
 * entry was over 90 % of an index of a many-flow mix.
 *
 * Which is written: a closed file's index is version 4 (whatever its
 * capture's codec, with or without cuts) unless the builder is asked for
 * plain flows (capq --reindex --index-version 1): then version 1, 2 for a
 * compressed capture, 3 when something was cut. A live index is always
 * version 1 or 2 (blocks only). Readers read 1 to 4; they refuse cuts in
 * versions 1 and 2, a version 3 without cuts, and any version above 4.
 *
 * A block is a run of whole records of about `block_target` bytes (the
 * last one of a file may be shorter); blocks cover the records from
 * `data_start` to `capture_bytes` with no gap. Timestamps within a file are
 * not monotonic (several workers feed one writer), so each block has its
 * own earliest and latest.
 *
 * Checksums: the body is everything from blocks_offset to the end of the
 * file, cut into pages of 1 << page_shift (65536) bytes (the last one
 * shorter); page_crcs[i] is the crc32c of page i, pages_crc the crc32c of
 * page_crcs, header_crc the crc32c of the header with header_crc zero. So a
 * reader verifies only what it uses: load() checks the header, the section
 * bounds, the page table and the pages of the block table (and the blocks'
 * contents); the flows, by_dst and postings are verified page by page when
 * first used (Index::check_flows(), check_by_dst(), check_postings()).
 *
 * A reader refuses (and capq then reads the capture instead, saying why): a
 * bad magic, a version above the one it knows, a size or offset outside the
 * file, a bad checksum, or a capture_bytes larger than the capture file is
 * now (a stale index of a file cut or rewritten since). A capture file
 * larger than capture_bytes is fine for a live index (the writer has gone
 * on since), not for a final one.
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
#include <utility>
#include <vector>

#include "common/result.hh"
#include "index/codec.hh"
#include "index/flow_key.hh"

namespace linecap::index {

inline constexpr char kIndexMagic[8] = {'L', 'C', 'A', 'P', 'I', 'D', 'X', '\n'};
inline constexpr uint32_t kIndexVersion = 4;
// The version whose flow section is compressed in groups (IndexHeaderV4Ext).
inline constexpr uint32_t kIndexVersionCompactFlows = 4;

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
    uint32_t header_bytes;   // 160
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
    uint64_t blocks_offset;  // from the start of the index file; the body starts here
    uint64_t flows_offset;
    uint64_t by_dst_offset;  // flow_count - non_ip_flows uint32_t entries
    uint64_t postings_offset;
    uint64_t postings_count;  // uint32_t entries
    uint64_t pages_offset;    // page_crcs, right after the header
    uint32_t page_count;      // pages of the body: ceil((file size - blocks_offset) / page)
    uint32_t page_shift;      // 16: 64 KiB pages
    uint32_t non_ip_flows;    // the leading flows that are not kIp
    uint32_t block_target;    // bytes per block the writer aimed at
    uint32_t pages_crc;       // crc32c of page_crcs[]
    uint32_t header_crc;      // of this header with header_crc = 0
    uint32_t codec;           // version 2: index/codec.hh Codec (0: not compressed)
    uint32_t cut_count;       // versions 3 (> 0) and 4: CutEntry entries; zero before
};
static_assert(sizeof(IndexHeader) == 160);

/* Version 4: follows IndexHeader (header_bytes = 208); see above. */
struct IndexHeaderV4Ext {
    uint64_t fences_offset;      // FlowFence[group_count]
    uint64_t dst_fences_offset;  // uint8_t[dst_fence_count][16]
    uint64_t groups_bytes;       // the frames, from flows_offset
    uint32_t group_count;        // ceil(flow_count / group_flows)
    uint32_t group_flows;        // flows per group (64)
    uint32_t dst_fence_count;    // ceil((flow_count - non_ip_flows) / group_flows)
    uint32_t flow_codec;         // Codec of the frames: kLz4 or kZstd
    uint32_t ext_crc;            // crc32c of this struct with ext_crc = 0
    uint32_t reserved;           // zero
};
static_assert(sizeof(IndexHeaderV4Ext) == 48);

struct FlowFence {
    uint8_t src[16];  // source address of the group's first IP flow
    uint32_t offset;  // of the frame, from flows_offset
    uint32_t bytes;   // the frame's size
    uint32_t crc;     // crc32c of the frame
    uint32_t reserved;
};
static_assert(sizeof(FlowFence) == 32);
inline constexpr uint32_t kIndexPageShift = 16;

struct BlockEntry {
    uint64_t offset;  // first byte of the block's first record
    uint32_t bytes;   // up to the end of its last record
    uint32_t packets;
    uint64_t min_ns;  // earliest and latest timestamp in the block
    uint64_t max_ns;
};
static_assert(sizeof(BlockEntry) == 32);

/* Version 2, compressed capture files only: where block i's frame lies in
 * the file. Its frame decompresses to exactly the block's bytes. */
struct StoredBlock {
    uint64_t offset;  // of the frame in the capture file
    uint32_t bytes;   // the frame's size
    uint32_t reserved;
};
static_assert(sizeof(StoredBlock) == 16);

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

/* Versions 3 and 4: what capd left out of the file of one flow (flow
 * number in this file's order, the version 1 order in both). Counts are of packets, bytes of wire lengths. */
struct CutEntry {
    uint32_t flow;
    uint32_t reserved;     // zero
    uint64_t cut_packets;  // past the flow's cutoff
    uint64_t cut_bytes;
    uint64_t dup_packets;  // duplicates (--dedup)
    uint64_t dup_bytes;
};
static_assert(sizeof(CutEntry) == 40);

/* An index in memory: read from a file (mapped) or built by IndexBuilder.
 *
 * Verification is lazy (see the format above): from_bytes()/load() check
 * the header, the sections, the page table and the block table; flows(),
 * by_dst() and blocks_of() hand out bytes that are trusted only after the
 * matching check_*() succeeded for them (each page is verified once: a
 * mutable bitmap; so an Index is used from one thread at a time, like any
 * non-const object). A check that fails means the file is damaged: capq
 * then reads the capture instead. The checks cost one crc32c of each page
 * the first time (about 10 us per 64 KiB) and a pass over the entries.
 *
 * Version 4 (compressed flow groups): flows() spans a buffer of
 * flow_count entries (anonymous memory, reserved at load, filled as
 * used); check_flows() decompresses and verifies the groups holding the
 * entries asked for, once each, into that buffer, so flows()[i] is read
 * after check_flows() covered i, as for the other versions. Memory: what
 * the groups used take decompressed (104 bytes a flow). Copies of an
 * Index share the buffer: use them from one thread at a time too. */
class Index {
public:
    Index() = default;
    /* From bytes (an index file's whole contents, or builder output).
     * Validates as described above against capture_size (the capture file's
     * current size; ~0ull: do not check). The error says which check failed,
     * e.g. "truncated index", "index version 5 is newer than this capq's 4",
     * "checksum mismatch", "stale index: describes 1048576 bytes, file has
     * 524288". */
    static Result<Index> from_bytes(std::string bytes, uint64_t capture_size);
    /* Reads (maps) the file at path; ENOENT when there is none. */
    static Result<Index> load(const std::string& path, uint64_t capture_size);
    /* The same for the index `leaf` in the directory dir_fd, opened with
     * O_NOFOLLOW (a symbolic link there is ELOOP, not followed): a server
     * that opened the capture from dir_fd reads its index from the same
     * directory. `path` names it in errors. dir_fd stays the caller's. */
    static Result<Index> load_at(int dir_fd, const std::string& leaf, const std::string& path,
                                 uint64_t capture_size);
    /* The same on a descriptor the caller opened (and checked: capd opens
     * its own index files with storage::open_own_file()); the descriptor is
     * closed here, whatever the outcome. Refuses anything but a regular
     * file. */
    static Result<Index> load_fd(int fd, const std::string& path, uint64_t capture_size);

    const IndexHeader& header() const { return *header_; }
    bool live() const { return header_->flags & kIndexLive; }
    std::span<const BlockEntry> blocks() const { return blocks_; }
    /* Compressed capture files: the codec and each block's frame (empty
     * otherwise); verified with the block table. */
    Codec codec() const { return Codec(header_->codec); }
    std::span<const StoredBlock> stored() const { return stored_; }
    /* Unverified until check_flows() of the entries read. */
    std::span<const FlowEntry> flows() const { return flows_; }
    /* Flow numbers of the IP flows by destination address; unverified until
     * check_by_dst(). */
    std::span<const uint32_t> by_dst() const { return by_dst_; }
    /* Block numbers holding flow i, ascending; unverified until
     * check_postings(i). */
    std::span<const uint32_t> blocks_of(size_t flow) const;
    /* Versions 3 and 4: the flows with packets left out, by ascending flow
     * number (empty below version 3); unverified until check_cuts(). */
    std::span<const CutEntry> cuts() const { return cuts_; }
    /* Verifies the cuts section: its pages, flow numbers ascending and below
     * flow_count, reserved words zero. */
    Status check_cuts() const;
    /* After check_cuts(): flow's entry, or nullptr. A binary search. */
    const CutEntry* cut_of(size_t flow) const;
    /* The count of leading flows that are not kIp (flows_[non_ip_flows()..]
     * are the IP flows, by source address). */
    size_t non_ip_flows() const { return header_->non_ip_flows; }

    /* Verifies flows [first, first + count): their pages, and that each
     * entry's postings lie inside the postings section, a flow with packets
     * has blocks, the kind order holds (kIp from non_ip_flows() on). */
    Status check_flows(size_t first, size_t count) const;
    /* Verifies flow `flow` (check_flows) and its postings: pages, ascending,
     * every block number < block_count. */
    Status check_postings(size_t flow) const;
    /* Verifies by_dst entries [first, first + count): pages, flow numbers
     * of IP flows. */
    Status check_by_dst(size_t first, size_t count) const;

    /* Appends the numbers of the flows with `addr` (16 bytes; IPv4: its 4
     * bytes then 12 zeros, as in FlowKey) as source or destination: binary
     * searches in flows (by src) and in by_dst, whose probes read entries
     * unverified; the entries either side of the place found and the run
     * of addr are verified (their pages), which proves the place. Neither ascending nor free of repeats (a flow from and to addr
     * comes twice); may include an IP flow of the other version whose 16
     * bytes are the same (callers evaluate the key anyway). The caller must
     * still check_flows() / check_postings() the flows it uses. If a page
     * it verifies is damaged, or a probe reads an impossible entry, appends
     * every flow, which check_flows() then refuses. */
    void flows_with_address(const uint8_t addr[16], std::vector<uint32_t>& out) const;
    /* Appends the numbers of the flows between a and b (16 bytes each, as
     * above; either order, or a == b): flows_with_address()'s search by
     * source for the lower of the two, keeping the flows whose destination
     * is the other. by_dst is not read: a flow's key holds its lower
     * address as the source, so every flow between them is in that run.
     * Verification and damage as flows_with_address(). */
    void flows_with_pair(const uint8_t a[16], const uint8_t b[16],
                         std::vector<uint32_t>& out) const;

    /* Asks the disk for the pages holding the entries of these flows (not
     * yet verified ones), all at once, so that the check_flows() that follow
     * wait for reads already under way rather than making them one by one.
     * A hint: nothing is verified. One madvise() per page. */
    void prefetch_flows(std::span<const uint32_t> flows) const;

    /* The serialized bytes (for writing out). */
    std::span<const uint8_t> bytes() const;

private:
    struct CompactFlows;  // version 4: the decompressed groups and their state
    Status validate(uint64_t capture_size);
    Status validate_compact(uint64_t after, uint64_t& flows_end);
    Status check_fence(size_t group) const;
    Status load_group(size_t group) const;
    // The flows with addr as source and, when dst is not null, dst as
    // destination; with a null dst those with addr as destination too.
    void lookup(const uint8_t addr[16], const uint8_t* dst, std::vector<uint32_t>& out) const;
    void lookup_compact(const uint8_t addr[16], const uint8_t* dst,
                        std::vector<uint32_t>& out) const;
    // Version 4's two searches, on unverified entries: the first group
    // whose fence is not below addr (after the first IP group), and the
    // stretch [first, end) of by_dst the dst fences leave for addr.
    size_t fence_place(const uint8_t addr[16]) const;
    std::pair<size_t, size_t> dst_stretch(const uint8_t addr[16]) const;
    Status check_bytes(uint64_t offset, uint64_t len) const;
    bool page_ok(size_t page) const;

    std::shared_ptr<const void> storage_;  // the mapping or the string
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    const IndexHeader* header_ = nullptr;
    std::span<const BlockEntry> blocks_;
    std::span<const StoredBlock> stored_;
    std::span<const FlowEntry> flows_;
    std::span<const uint32_t> by_dst_;
    std::span<const uint32_t> postings_;
    std::span<const CutEntry> cuts_;
    std::span<const uint32_t> page_crcs_;
    // Per page: 0 not verified yet, 1 good, 2 damaged.
    mutable std::vector<uint8_t> page_state_;
    // Version 4 only.
    const IndexHeaderV4Ext* ext_ = nullptr;
    std::span<const FlowFence> fences_;
    const uint8_t* dst_fences_ = nullptr;
    std::shared_ptr<CompactFlows> compact_;
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
