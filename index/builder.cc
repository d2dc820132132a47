#include "index/builder.hh"

#include <algorithm>
#include <cstring>

namespace linecap::index {
namespace {

constexpr size_t kInitialTableSlots = 1024;
constexpr uint64_t kNoTime = ~0ull;

inline uint32_t rd32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

size_t align8(size_t n) { return (n + 7) & ~size_t(7); }

/* The lines of a record's header and frame start (see add_chunk). A
 * function, not a lambda: written as a lambda in add_chunk, GCC 12 -O2
 * emitted no prefetch instruction at all. */
inline void prefetch_record(const uint8_t* r) {
    __builtin_prefetch(r);
    __builtin_prefetch(r + 64);
    __builtin_prefetch(r + 127);
}

}  // namespace

IndexBuilder::IndexBuilder(uint32_t block_bytes)
    : block_bytes_(block_bytes ? block_bytes : kDefaultBlockBytes),
      table_(kInitialTableSlots, 0),
      table_mask_(kInitialTableSlots - 1) {}

void IndexBuilder::begin(CaptureFormat format, std::span<const uint16_t> linktypes,
                         uint64_t data_start) {
    format_ = format;
    linktypes_.assign(linktypes.begin(), linktypes.end());
    data_start_ = data_start;
    end_ = data_start;
    packets_ = 0;
    wire_bytes_ = 0;
    first_ns_ = 0;
    last_ns_ = 0;
    flags_ = 0;
    blocks_.clear();
    block_wire_.clear();
    codec_ = Codec::kNone;
    cut_ = false;
    stored_.clear();
    stored_known_ = 0;
    if (!flows_.empty()) std::fill(table_.begin(), table_.end(), 0);
    flows_.clear();
    postings_.clear();
    cuts_.clear();
    cut_flows_ = 0;
}

void IndexBuilder::start_block(uint64_t offset) {
    blocks_.push_back(BlockEntry{offset, 0, 0, kNoTime, 0});
    block_wire_.push_back(0);
    cut_ = false;
}

void IndexBuilder::end_block(uint64_t stored_offset, uint32_t stored_bytes) {
    if (blocks_.size() != stored_.size() + 1) return;  // no record since the last cut
    cut_block();
    store_block(stored_offset, stored_bytes);
}

void IndexBuilder::cut_block() {
    if (blocks_.size() != stored_.size() + 1) return;  // no record since the last cut
    stored_.push_back(StoredBlock{0, 0, 0});           // its frame: store_block()
    cut_ = true;
}

void IndexBuilder::store_block(uint64_t stored_offset, uint32_t stored_bytes) {
    if (stored_known_ == stored_.size()) return;  // no block waits for its frame
    stored_[stored_known_++] = StoredBlock{stored_offset, stored_bytes, 0};
}

uint64_t IndexBuilder::stored_end(uint64_t file_bytes) const {
    uint64_t end = data_start_;
    for (size_t i = 0; i < stored_known_ && stored_[i].offset + stored_[i].bytes <= file_bytes; i++)
        end = blocks_[i].offset + blocks_[i].bytes;
    return end;
}

void IndexBuilder::truncate_stored(uint64_t file_bytes) {
    truncate(stored_end(file_bytes));
    cut_ = true;
}

void IndexBuilder::grow_table() {
    table_.assign(table_.size() * 2, 0);
    table_mask_ = table_.size() - 1;
    rebuild_table();
}

void IndexBuilder::rebuild_table() {
    std::fill(table_.begin(), table_.end(), 0);
    for (size_t i = 0; i < flows_.size(); i++) {
        uint64_t h = hash_flow_key(flows_[i].key);
        size_t s = h & table_mask_;
        while (table_[s] != 0) s = (s + 1) & table_mask_;
        table_[s] = (h >> 32) << 32 | (i + 1);
    }
}

inline uint32_t IndexBuilder::find_or_insert(const FlowKey& k, uint64_t h, uint64_t ts_ns) {
    uint64_t tag = (h >> 32) << 32;
    size_t s = h & table_mask_;
    for (;;) {
        uint64_t e = table_[s];
        if (e == 0) break;
        if ((e & 0xffffffff00000000ull) == tag) {
            uint32_t fi = static_cast<uint32_t>(e) - 1;
            if (flows_[fi].key == k) return fi;
        }
        s = (s + 1) & table_mask_;
    }
    // A new flow. The table doubles at 5/8 load, so a file of n flows grows
    // it about log2(n / 640) times, and only the first file of that size.
    uint32_t fi = static_cast<uint32_t>(flows_.size());
    FlowEntry f;
    f.key = k;
    f.first_ns = ts_ns;
    f.last_ns = ts_ns;
    f.packets = 0;
    f.wire_bytes = 0;
    f.postings = 0;
    f.postings_count = 0;
    flows_.push_back(f);
    if ((flows_.size() * 8) > table_.size() * 5) {
        grow_table();
    } else {
        table_[s] = tag | (uint64_t(fi) + 1);
    }
    return fi;
}

inline void IndexBuilder::count_record(uint64_t offset, uint32_t rec_bytes, uint64_t ts_ns,
                                       uint32_t wirelen) {
    if (offset > end_) {
        // Bytes the caller skipped (pcapng blocks that are not packets)
        // belong to the blocks, which leave no gap.
        if (blocks_.empty()) start_block(end_);
        blocks_.back().bytes += static_cast<uint32_t>(offset - end_);
    }
    if (blocks_.empty() || cut_ || (codec_ == Codec::kNone && blocks_.back().bytes >= block_bytes_))
        start_block(offset);
    BlockEntry& b = blocks_.back();
    b.bytes += rec_bytes;
    b.packets++;
    b.min_ns = std::min(b.min_ns, ts_ns);
    b.max_ns = std::max(b.max_ns, ts_ns);
    block_wire_.back() += wirelen;
    end_ = offset + rec_bytes;
    if (packets_ == 0) {
        first_ns_ = last_ns_ = ts_ns;
    } else {
        first_ns_ = std::min(first_ns_, ts_ns);
        last_ns_ = std::max(last_ns_, ts_ns);
    }
    packets_++;
    wire_bytes_ += wirelen;
}

inline void IndexBuilder::count_flow(uint32_t fi, uint64_t ts_ns, uint32_t wirelen) {
    FlowEntry& f = flows_[fi];
    f.first_ns = std::min(f.first_ns, ts_ns);
    f.last_ns = std::max(f.last_ns, ts_ns);
    f.packets++;
    f.wire_bytes += wirelen;
    auto blk = static_cast<uint32_t>(blocks_.size());  // this block's number + 1
    if (f.postings != blk) {
        f.postings = blk;
        f.postings_count++;
        postings_.push_back(uint64_t(fi) << 32 | (blk - 1));
    }
}

void IndexBuilder::add(uint64_t offset, uint32_t rec_bytes, uint64_t ts_ns, uint32_t if_id,
                       const uint8_t* frame, uint32_t caplen, uint32_t wirelen) {
    count_record(offset, rec_bytes, ts_ns, wirelen);
    uint16_t linktype = if_id < linktypes_.size() ? linktypes_[if_id] : 0;
    FlowKey k;
    make_flow_key(linktype, frame, caplen, k);
    count_flow(find_or_insert(k, hash_flow_key(k), ts_ns), ts_ns, wirelen);
}

void IndexBuilder::add_cut(uint32_t if_id, const uint8_t* head, uint32_t head_len,
                           uint64_t first_ns, uint64_t last_ns, uint64_t cut_packets,
                           uint64_t cut_bytes, uint64_t dup_packets, uint64_t dup_bytes) {
    const Cut c{head,        head_len,  if_id,       first_ns, last_ns,
                cut_packets, cut_bytes, dup_packets, dup_bytes};
    add_cuts(&c, 1);
}

void IndexBuilder::count_cut(const FlowKey& k, uint64_t hash, const Cut& in) {
    const size_t had = flows_.size();
    const uint32_t fi = find_or_insert(k, hash, in.first_ns);
    if (flows_.size() != had) {
        // New: its times are those of its records, none yet.
        flows_[fi].first_ns = kNoTime;
        flows_[fi].last_ns = 0;
    }
    if (cuts_.size() <= fi) cuts_.resize(flows_.size(), CutCounts{kNoTime, 0, 0, 0, 0, 0});
    CutCounts& c = cuts_[fi];
    if (c.cut_packets == 0 && c.dup_packets == 0) cut_flows_++;
    c.first_ns = std::min(c.first_ns, in.first_ns);
    c.last_ns = std::max(c.last_ns, in.last_ns);
    c.cut_packets += in.cut_packets;
    c.cut_bytes += in.cut_bytes;
    c.dup_packets += in.dup_packets;
    c.dup_bytes += in.dup_bytes;
}

void IndexBuilder::add_cuts(const Cut* cuts, size_t n) {
    constexpr size_t kCutBatch = 64;
    FlowKey keys[kCutBatch];
    uint64_t hash[kCutBatch];
    for (size_t at = 0; at < n; at += kCutBatch) {
        const size_t m = std::min(kCutBatch, n - at);
        const Cut* c = cuts + at;
        for (size_t i = 0; i < m; i++) {
            // A pcap file has one interface.
            const uint32_t itf = format_ == CaptureFormat::kPcapng ? c[i].if_id : 0;
            const uint16_t lt = itf < linktypes_.size() ? linktypes_[itf] : 0;
            make_flow_key(lt, c[i].head, c[i].head_len, keys[i]);
        }
        for (size_t i = 0; i < m; i++) {
            hash[i] = hash_flow_key(keys[i]);
            __builtin_prefetch(&table_[hash[i] & table_mask_]);
        }
        for (size_t i = 0; i < m; i++) {
            // The flow the slot names and its counts, if it is the one (a
            // guess; count_cut looks it up properly).
            const uint64_t e = table_[hash[i] & table_mask_];
            if (e != 0 && (e >> 32) == (hash[i] >> 32)) {
                const uint32_t fi = static_cast<uint32_t>(e) - 1;
                __builtin_prefetch(&flows_[fi]);
                if (fi < cuts_.size()) __builtin_prefetch(&cuts_[fi]);
            }
        }
        for (size_t i = 0; i < m; i++)
            if (c[i].cut_packets != 0 || c[i].dup_packets != 0) count_cut(keys[i], hash[i], c[i]);
    }
}

struct IndexBuilder::Pending {
    uint64_t offset;
    uint64_t ts_ns;
    const uint8_t* frame;
    uint32_t rec_bytes, if_id, caplen, wirelen;
};

namespace {
constexpr size_t kBatch = 64;
constexpr size_t kAhead = 8;  // records between a prefetch and its use
constexpr uint32_t kNoFlow = ~0u;
}  // namespace

/* add() for n records, pipelined so that the table's and the flows' cache
 * misses of several records overlap instead of following one another:
 * record i gets its key while record i - 1 gets its hash (prefetching its
 * table slot), record i - 9 reads its slot (prefetching the flow it names)
 * and record i - 17 is counted. With a million flows the table and the
 * flows are far larger than the caches. The hash waits one record because
 * make_flow_key() writes the key in narrow stores: read back at once, as
 * wide loads, they stalled until the stores retired (40 % of this
 * function's time with one flow). */
void IndexBuilder::add_batch(const Pending* p, size_t n) {
    FlowKey keys[kBatch];
    uint64_t hash[kBatch];
    uint32_t cand[kBatch];
    for (size_t i = 0; i < n + 2 * kAhead + 1; i++) {
        if (i < n) {
            uint16_t lt = p[i].if_id < linktypes_.size() ? linktypes_[p[i].if_id] : 0;
            make_flow_key(lt, p[i].frame, p[i].caplen, keys[i]);
        }
        if (i >= 1 && i - 1 < n) {
            size_t j = i - 1;
            // Runs of one flow (one worker's burst) hash once.
            hash[j] = j != 0 && keys[j] == keys[j - 1] ? hash[j - 1] : hash_flow_key(keys[j]);
            __builtin_prefetch(&table_[hash[j] & table_mask_]);
        }
        if (i >= kAhead + 1 && i - kAhead - 1 < n) {
            size_t j = i - kAhead - 1;
            uint64_t e = table_[hash[j] & table_mask_];
            cand[j] = kNoFlow;
            if (e != 0 && (e >> 32) == (hash[j] >> 32)) {
                cand[j] = static_cast<uint32_t>(e) - 1;
                const auto* f = reinterpret_cast<const char*>(&flows_[cand[j]]);
                __builtin_prefetch(f);
                __builtin_prefetch(f + 64);
                __builtin_prefetch(f + sizeof(FlowEntry) - 1);
            }
        }
        if (i >= 2 * kAhead + 1) {
            size_t j = i - 2 * kAhead - 1;
            const Pending& r = p[j];
            count_record(r.offset, r.rec_bytes, r.ts_ns, r.wirelen);
            // The slot read above is only a guess: a flow added since, a
            // collision or a longer probe all go through find_or_insert().
            uint32_t fi =
                cand[j] != kNoFlow && cand[j] < flows_.size() && flows_[cand[j]].key == keys[j]
                    ? cand[j]
                    : find_or_insert(keys[j], hash[j], r.ts_ns);
            count_flow(fi, r.ts_ns, r.wirelen);
        }
    }
}

/* A pcapng block that is not a packet: its bytes still belong to the
 * blocks, which leave no gap. A section or interface block here means the
 * blocks after it cannot be read alone. */
void IndexBuilder::add_other(uint32_t type, uint32_t total, uint64_t at) {
    if (type == 1 || type == 0x0a0d0d0a) flags_ |= kIndexSequential;
    if (blocks_.empty() || cut_) start_block(at);
    blocks_.back().bytes += total;
    end_ = at + total;
}

void IndexBuilder::add_records(const uint8_t* buf, size_t len, uint64_t offset) {
    const uint8_t* p = buf;
    const uint8_t* e = buf + len;
    Pending batch[kBatch];
    size_t n = 0;
    if (format_ == CaptureFormat::kPcapng) {
        while (e - p >= 12) {
            uint32_t type = rd32(p), total = rd32(p + 4);
            if (total < 12 || total > size_t(e - p)) break;
            uint64_t at = offset + uint64_t(p - buf);
            if (type == 6 && total >= 32) {
                uint32_t caplen = rd32(p + 20);
                if (caplen > total - 32) caplen = total - 32;
                uint64_t ts = uint64_t(rd32(p + 12)) << 32 | rd32(p + 16);
                batch[n++] = {at, ts, p + 28, total, rd32(p + 8), caplen, rd32(p + 24)};
                if (n == kBatch) {
                    add_batch(batch, n);
                    n = 0;
                }
            } else {
                add_batch(batch, n);
                n = 0;
                add_other(type, total, at);
            }
            p += total;
        }
        add_batch(batch, n);
        return;
    }
    uint64_t frac_ns = format_ == CaptureFormat::kPcapNano ? 1 : 1000;
    while (e - p >= 16) {
        uint32_t caplen = rd32(p + 8);
        if (caplen > size_t(e - p) - 16) break;
        uint64_t ts = uint64_t(rd32(p)) * 1000000000u + uint64_t(rd32(p + 4)) * frac_ns;
        batch[n++] = {offset + uint64_t(p - buf), ts, p + 16, 16 + caplen, 0, caplen, rd32(p + 12)};
        if (n == kBatch) {
            add_batch(batch, n);
            n = 0;
        }
        p += 16 + caplen;
    }
    add_batch(batch, n);
}

/* Record i's header and frame start are prefetched while record
 * i - kBatch is parsed: a whole add_batch() (tens of ns per record) runs
 * between the prefetch and the use, and the misses of a batch's records
 * are all in flight together. The flow key reads at most the first 100 or
 * so bytes of the frame for the common headers; the lines at the record's
 * start, 64 and 127 bytes on cover 128 bytes wherever the record starts. */
void IndexBuilder::add_chunk(const uint8_t* buf, const uint32_t* starts, ptrdiff_t step,
                             size_t count, uint32_t end, uint64_t offset) {
    if (count == 0) return;
    auto start = [&](size_t i) { return starts[ptrdiff_t(i) * step]; };
    for (size_t i = 0; i < std::min(count, kBatch); i++) prefetch_record(buf + start(i));
    const uint32_t first = start(0);
    const bool ng = format_ == CaptureFormat::kPcapng;
    const uint64_t frac_ns = format_ == CaptureFormat::kPcapNano ? 1 : 1000;
    Pending batch[kBatch];
    size_t n = 0;
    uint32_t at = first;
    for (size_t i = 0; i < count; i++) {
        if (i + kBatch < count) prefetch_record(buf + start(i + kBatch));
        uint32_t next = i + 1 < count ? start(i + 1) : end;
        uint32_t total = next - at;
        const uint8_t* p = buf + at;
        uint64_t foff = offset + (at - first);
        at = next;
        if (ng) {
            uint32_t type = rd32(p);
            if (type != 6 || total < 32) {
                add_batch(batch, n);
                n = 0;
                add_other(type, total, foff);
                continue;
            }
            uint32_t caplen = std::min(rd32(p + 20), total - 32);
            uint64_t ts = uint64_t(rd32(p + 12)) << 32 | rd32(p + 16);
            batch[n++] = {foff, ts, p + 28, total, rd32(p + 8), caplen, rd32(p + 24)};
        } else {
            if (total < 16) break;  // not a record: the starts are wrong
            uint32_t caplen = std::min(rd32(p + 8), total - 16);
            uint64_t ts = uint64_t(rd32(p)) * 1000000000u + uint64_t(rd32(p + 4)) * frac_ns;
            batch[n++] = {foff, ts, p + 16, total, 0, caplen, rd32(p + 12)};
        }
        if (n == kBatch) {
            add_batch(batch, n);
            n = 0;
        }
    }
    add_batch(batch, n);
}

void IndexBuilder::truncate(uint64_t file_bytes) {
    if (file_bytes >= end_) return;
    flags_ |= kIndexApproxCounts;
    end_ = std::max(file_bytes, data_start_);
    while (!blocks_.empty() && blocks_.back().offset >= end_) {
        blocks_.pop_back();
        block_wire_.pop_back();
    }
    if (stored_.size() > blocks_.size()) stored_.resize(blocks_.size());
    stored_known_ = std::min(stored_known_, stored_.size());
    // A block cut in two keeps its first part; its counts and times stay
    // those of the whole block (a superset, which only costs capq a read).
    if (!blocks_.empty()) {
        BlockEntry& b = blocks_.back();
        if (b.offset + b.bytes > end_) b.bytes = static_cast<uint32_t>(end_ - b.offset);
    }
    packets_ = 0;
    wire_bytes_ = 0;
    first_ns_ = kNoTime;
    last_ns_ = 0;
    for (size_t i = 0; i < blocks_.size(); i++) {
        packets_ += blocks_[i].packets;
        wire_bytes_ += block_wire_[i];
        if (blocks_[i].packets == 0) continue;
        first_ns_ = std::min(first_ns_, blocks_[i].min_ns);
        last_ns_ = std::max(last_ns_, blocks_[i].max_ns);
    }
    if (packets_ == 0) first_ns_ = 0;

    // Postings of dropped blocks go; flows left in no block go, and the
    // others are renumbered in order.
    auto nblocks = static_cast<uint32_t>(blocks_.size());
    for (FlowEntry& f : flows_) {
        f.postings = 0;
        f.postings_count = 0;
    }
    size_t w = 0;
    for (uint64_t p : postings_) {
        auto blk = static_cast<uint32_t>(p);
        if (blk >= nblocks) continue;
        FlowEntry& f = flows_[p >> 32];
        f.postings = blk + 1;
        f.postings_count++;
        postings_[w++] = p;
    }
    postings_.resize(w);
    std::vector<uint32_t> renumber(flows_.size());
    uint32_t kept = 0;
    auto has_cut = [&](size_t i) {
        return i < cuts_.size() && (cuts_[i].cut_packets != 0 || cuts_[i].dup_packets != 0);
    };
    std::vector<CutCounts> cuts;
    for (size_t i = 0; i < flows_.size(); i++) {
        renumber[i] = kept;
        const bool cut = has_cut(i);
        if (flows_[i].postings_count == 0) {
            if (!cut) continue;
            // Its records went; what was cut of it stays.
            FlowEntry& f = flows_[i];
            f.packets = 0;
            f.wire_bytes = 0;
            f.first_ns = kNoTime;
            f.last_ns = 0;
        }
        if (cut) {
            cuts.resize(kept + 1, CutCounts{kNoTime, 0, 0, 0, 0, 0});
            cuts[kept] = cuts_[i];
        }
        flows_[kept++] = flows_[i];
    }
    flows_.resize(kept);
    cuts_ = std::move(cuts);
    for (uint64_t& p : postings_) p = uint64_t(renumber[p >> 32]) << 32 | uint32_t(p);
    rebuild_table();
}

namespace {

/* Header fields every serialization shares; the checksums come last. */
IndexHeader make_header(CaptureFormat format, uint32_t flags, uint64_t capture_bytes,
                        uint64_t data_start, uint32_t block_target) {
    IndexHeader h;
    std::memset(&h, 0, sizeof(h));
    std::memcpy(h.magic, kIndexMagic, sizeof(h.magic));
    h.version = 1;  // version 2 only with a codec (set by the caller)
    h.header_bytes = sizeof(IndexHeader);
    h.capture_bytes = capture_bytes;
    h.data_start = data_start;
    h.format = static_cast<uint32_t>(format);
    h.flags = flags;
    h.block_target = block_target;
    return h;
}

/* The section after the header: the page table, then the body from
 * blocks_offset (= the end of the page table, 8-aligned) to the end. */
struct Layout {
    uint32_t page_count;
    uint64_t blocks_offset;
};
Layout layout_for(uint64_t body_bytes, uint64_t header_bytes = sizeof(IndexHeader)) {
    const uint64_t page = uint64_t{1} << kIndexPageShift;
    const auto pages = static_cast<uint32_t>((body_bytes + page - 1) / page);
    return {pages, align8(header_bytes + uint64_t(pages) * sizeof(uint32_t))};
}

/* Fills the page table and the header's checksums, and writes the header. */
void seal(std::string& out, IndexHeader& h) {
    const uint64_t page = uint64_t{1} << kIndexPageShift;
    auto* base = reinterpret_cast<uint8_t*>(out.data());
    auto* crcs = reinterpret_cast<uint32_t*>(base + h.pages_offset);
    for (uint32_t i = 0; i < h.page_count; i++) {
        const uint64_t start = h.blocks_offset + i * page;
        crcs[i] = crc32c(base + start, std::min<uint64_t>(page, out.size() - start));
    }
    h.pages_crc = crc32c(crcs, h.page_count * sizeof(uint32_t));
    h.header_crc = 0;
    h.header_crc = crc32c(&h, sizeof(h));
    std::memcpy(base, &h, sizeof(h));
}

/* A flow's place in the file's order, as 40 bytes compared big-endian
 * word by word: kind, src, dst (then the whole key breaks ties). */
struct FlowOrder {
    uint64_t w[5];
    uint32_t flow;
};
inline uint64_t be64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

}  // namespace

std::string IndexBuilder::serialize(uint64_t capture_bytes) const {
    // A compressed file's size is its frames', not the stream's.
    if (codec_ == Codec::kNone) capture_bytes = std::max(capture_bytes, end_);
    IndexHeader h = make_header(format_, flags_, capture_bytes, data_start_, block_bytes_);
    // Compressed: every block has its frame (the writer ended the last one
    // before closing); a block without one is left out.
    const size_t nstored = codec_ == Codec::kNone ? 0 : stored_known_;
    const size_t nblocks = codec_ == Codec::kNone ? blocks_.size() : nstored;
    if (codec_ != Codec::kNone) {
        h.version = 2;
        h.codec = uint32_t(codec_);
    }
    h.packets = packets_;
    h.wire_bytes = wire_bytes_;
    h.first_ns = first_ns_;
    h.last_ns = last_ns_;
    const size_t nflows = flows_.size();
    h.block_count = static_cast<uint32_t>(nblocks);
    h.flow_count = static_cast<uint32_t>(nflows);

    // The flows' order: sorted (kind, src, dst, key bytes).
    std::vector<FlowOrder> order(nflows);
    size_t non_ip = 0;
    for (size_t i = 0; i < nflows; i++) {
        const FlowKey& k = flows_[i].key;
        uint8_t b[40] = {};
        b[0] = static_cast<uint8_t>(k.kind);
        std::memcpy(b + 1, k.src, 16);
        std::memcpy(b + 17, k.dst, 16);
        for (int j = 0; j < 5; j++) order[i].w[j] = be64(b + 8 * j);
        order[i].flow = static_cast<uint32_t>(i);
        if (k.kind != FlowKind::kIp) non_ip++;
    }
    std::sort(order.begin(), order.end(), [this](const FlowOrder& a, const FlowOrder& b) {
        for (int j = 0; j < 5; j++)
            if (a.w[j] != b.w[j]) return a.w[j] < b.w[j];
        return std::memcmp(&flows_[a.flow].key, &flows_[b.flow].key, sizeof(FlowKey)) < 0;
    });
    const size_t ip = nflows - non_ip;
    h.non_ip_flows = static_cast<uint32_t>(non_ip);

    // The cuts (versions 3 and 4): the flows with packets left out, in the
    // new order; with plain flows, version 3 only when something was cut.
    size_t ncuts = 0;
    auto cut_of = [this](uint32_t old) -> const CutCounts* {
        if (old >= cuts_.size()) return nullptr;
        const CutCounts& c = cuts_[old];
        return c.cut_packets != 0 || c.dup_packets != 0 ? &c : nullptr;
    };
    if (cut_flows_ != 0)
        for (size_t i = 0; i < nflows; i++) ncuts += cut_of(order[i].flow) != nullptr;
    h.cut_count = static_cast<uint32_t>(ncuts);
    std::vector<CutEntry> cuts;
    cuts.reserve(ncuts);

    // The flows in their order, each with its postings' start (prefix sums
    // of the counts); then a counting sort of the postings by flow, in
    // arrival order, which keeps each flow's block numbers ascending.
    std::vector<FlowEntry> flows(nflows);
    std::vector<uint32_t> next(nflows);  // by old flow number: where its next posting goes
    uint32_t at = 0;
    for (size_t i = 0; i < nflows; i++) {
        const uint32_t old = order[i].flow;
        flows[i] = flows_[old];
        flows[i].postings = at;
        next[old] = at;
        at += flows_[old].postings_count;
        if (ncuts == 0) continue;
        const CutCounts* c = cut_of(old);
        if (c == nullptr) continue;
        // A flow with nothing but cut packets here: their times.
        if (flows[i].packets == 0) {
            flows[i].first_ns = c->first_ns;
            flows[i].last_ns = c->last_ns;
        }
        cuts.push_back(CutEntry{static_cast<uint32_t>(i), 0, c->cut_packets, c->cut_bytes,
                                c->dup_packets, c->dup_bytes});
    }
    std::vector<uint32_t> postings(postings_.size());
    for (uint64_t p : postings_) postings[next[p >> 32]++] = static_cast<uint32_t>(p);

    // by_dst: the IP flows (new numbers) by destination, then number.
    struct DstOrder {
        uint64_t hi, lo;
        uint32_t flow;
    };
    std::vector<DstOrder> dst(ip);
    for (size_t i = 0; i < ip; i++) {
        const FlowKey& k = flows[non_ip + i].key;
        dst[i] = {be64(k.dst), be64(k.dst + 8), static_cast<uint32_t>(non_ip + i)};
    }
    std::sort(dst.begin(), dst.end(), [](const DstOrder& a, const DstOrder& b) {
        if (a.hi != b.hi) return a.hi < b.hi;
        if (a.lo != b.lo) return a.lo < b.lo;
        return a.flow < b.flow;
    });
    std::vector<uint32_t> by_dst(ip);
    for (size_t i = 0; i < ip; i++) by_dst[i] = dst[i].flow;

    // Version 4: the groups, their fences, and the dst fences.
    IndexHeaderV4Ext x{};
    std::vector<FlowFence> fences;
    std::vector<uint8_t> dst_fences;
    std::string groups;
    bool compact = compact_flows_;
    if (compact) {
        const size_t per = kFlowGroupFlows;
        BlockCompressor comp(CodecSpec{kFlowGroupCodec, 0});
        std::vector<uint8_t> shuffled(per * sizeof(FlowEntry));
        std::vector<uint8_t> frame(comp.bound(shuffled.size()));
        for (size_t first = 0; compact && first < nflows; first += per) {
            const size_t n = std::min(per, nflows - first);
            const auto* in = reinterpret_cast<const uint8_t*>(flows.data() + first);
            for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < sizeof(FlowEntry); j++)
                    shuffled[j * n + i] = in[i * sizeof(FlowEntry) + j];
            const size_t len = comp.ok() ? comp.compress(shuffled.data(), n * sizeof(FlowEntry),
                                                         frame.data(), frame.size())
                                         : 0;
            if (len == 0 || groups.size() + len > UINT32_MAX) {
                compact = false;  // cannot happen in practice: the plain layout then
                break;
            }
            FlowFence f{};
            const size_t first_ip = std::max(first, non_ip);
            if (first_ip < first + n) std::memcpy(f.src, flows[first_ip].key.src, 16);
            f.offset = static_cast<uint32_t>(groups.size());
            f.bytes = static_cast<uint32_t>(len);
            f.crc = crc32c(frame.data(), len);
            fences.push_back(f);
            groups.append(reinterpret_cast<const char*>(frame.data()), len);
        }
        if (compact) {
            for (size_t k = 0; k < ip; k += per) {
                const uint8_t* d = flows[by_dst[k]].key.dst;
                dst_fences.insert(dst_fences.end(), d, d + 16);
            }
            x.group_count = static_cast<uint32_t>(fences.size());
            x.group_flows = static_cast<uint32_t>(per);
            x.dst_fence_count = static_cast<uint32_t>(dst_fences.size() / 16);
            x.flow_codec = uint32_t(kFlowGroupCodec);
            x.groups_bytes = groups.size();
        }
    }
    const uint64_t header_bytes = sizeof(IndexHeader) + (compact ? sizeof(IndexHeaderV4Ext) : 0);
    if (compact) {
        h.version = kIndexVersionCompactFlows;
        h.header_bytes = static_cast<uint32_t>(header_bytes);
    } else if (ncuts != 0) {
        h.version = 3;
    }
    const uint64_t flow_bytes =
        compact ? fences.size() * sizeof(FlowFence) + dst_fences.size() + align8(groups.size())
                : nflows * sizeof(FlowEntry);
    const uint64_t body = nblocks * sizeof(BlockEntry) + nstored * sizeof(StoredBlock) +
                          flow_bytes + align8(ip * sizeof(uint32_t)) +
                          align8(postings.size() * sizeof(uint32_t)) + ncuts * sizeof(CutEntry);
    const Layout lay = layout_for(body, header_bytes);
    h.page_shift = kIndexPageShift;
    h.page_count = lay.page_count;
    h.pages_offset = header_bytes;
    h.blocks_offset = lay.blocks_offset;
    const uint64_t blocks_end =
        h.blocks_offset + nblocks * sizeof(BlockEntry) + nstored * sizeof(StoredBlock);
    if (compact) {
        x.fences_offset = blocks_end;
        x.dst_fences_offset = x.fences_offset + fences.size() * sizeof(FlowFence);
        h.flows_offset = x.dst_fences_offset + dst_fences.size();
        h.by_dst_offset = h.flows_offset + align8(groups.size());
    } else {
        h.flows_offset = blocks_end;
        h.by_dst_offset = h.flows_offset + nflows * sizeof(FlowEntry);
    }
    h.postings_offset = align8(h.by_dst_offset + ip * sizeof(uint32_t));
    h.postings_count = postings.size();
    const uint64_t cuts_offset = align8(h.postings_offset + postings.size() * sizeof(uint32_t));
    const size_t size = cuts_offset + ncuts * sizeof(CutEntry);

    std::string out(size, '\0');
    auto* base = reinterpret_cast<uint8_t*>(out.data());
    auto put = [&](uint64_t off, const void* p, size_t n) {
        if (n != 0) std::memcpy(base + off, p, n);
    };
    put(h.blocks_offset, blocks_.data(), nblocks * sizeof(BlockEntry));
    put(h.blocks_offset + nblocks * sizeof(BlockEntry), stored_.data(),
        nstored * sizeof(StoredBlock));
    if (compact) {
        put(x.fences_offset, fences.data(), fences.size() * sizeof(FlowFence));
        put(x.dst_fences_offset, dst_fences.data(), dst_fences.size());
        put(h.flows_offset, groups.data(), groups.size());
        x.ext_crc = 0;
        x.ext_crc = crc32c(&x, sizeof(x));
        put(sizeof(IndexHeader), &x, sizeof(x));
    } else {
        put(h.flows_offset, flows.data(), nflows * sizeof(FlowEntry));
    }
    put(h.by_dst_offset, by_dst.data(), ip * sizeof(uint32_t));
    put(h.postings_offset, postings.data(), postings.size() * sizeof(uint32_t));
    put(cuts_offset, cuts.data(), ncuts * sizeof(CutEntry));
    seal(out, h);
    return out;
}

std::string IndexBuilder::serialize_live(uint64_t valid_bytes) const {
    size_t n = 0;
    uint64_t end = data_start_, packets = 0, wire = 0, first = kNoTime, last = 0;
    // Compressed: valid_bytes is the file's, and the blocks are those whose
    // frames end by then; capture_bytes the end of the last such frame.
    const bool compressed = codec_ != Codec::kNone;
    uint64_t frames_end = 0;
    while (n < blocks_.size() &&
           (compressed ? n < stored_known_ && stored_[n].offset + stored_[n].bytes <= valid_bytes
                       : blocks_[n].offset + blocks_[n].bytes <= valid_bytes)) {
        const BlockEntry& b = blocks_[n];
        if (compressed) frames_end = stored_[n].offset + stored_[n].bytes;
        end = b.offset + b.bytes;
        packets += b.packets;
        wire += block_wire_[n];
        if (b.packets != 0) {
            first = std::min(first, b.min_ns);
            last = std::max(last, b.max_ns);
        }
        n++;
    }
    IndexHeader h = make_header(format_, (flags_ & ~kIndexApproxCounts) | kIndexLive,
                                compressed ? frames_end : end, data_start_, block_bytes_);
    const size_t nstored = compressed ? n : 0;
    if (compressed) {
        h.version = 2;
        h.codec = uint32_t(codec_);
    }
    h.packets = packets;
    h.wire_bytes = wire;
    h.first_ns = packets ? first : 0;
    h.last_ns = last;
    h.block_count = static_cast<uint32_t>(n);
    const Layout lay = layout_for(n * sizeof(BlockEntry) + nstored * sizeof(StoredBlock));
    h.page_shift = kIndexPageShift;
    h.page_count = lay.page_count;
    h.pages_offset = sizeof(IndexHeader);
    h.blocks_offset = lay.blocks_offset;
    h.flows_offset = h.blocks_offset + n * sizeof(BlockEntry) + nstored * sizeof(StoredBlock);
    h.by_dst_offset = h.flows_offset;
    h.postings_offset = h.flows_offset;
    std::string out(h.postings_offset, '\0');
    if (n != 0) std::memcpy(out.data() + h.blocks_offset, blocks_.data(), n * sizeof(BlockEntry));
    if (nstored != 0)
        std::memcpy(out.data() + h.blocks_offset + n * sizeof(BlockEntry), stored_.data(),
                    nstored * sizeof(StoredBlock));
    seal(out, h);
    return out;
}

}  // namespace linecap::index
