#include "index/index_file.hh"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace linecap::index {
namespace {

/* CRC-32C, reflected polynomial 0x82f63b78, slicing by 8 for machines
 * without the SSE4.2 instruction. */
struct Crc32cTables {
    uint32_t t[8][256];
    Crc32cTables() {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
            t[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
            for (int s = 1; s < 8; s++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
};

uint32_t crc32c_soft(const uint8_t* p, size_t n, uint32_t c) {
    static const Crc32cTables tab;
    const auto& t = tab.t;
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        w ^= c;
        c = t[7][w & 0xff] ^ t[6][(w >> 8) & 0xff] ^ t[5][(w >> 16) & 0xff] ^
            t[4][(w >> 24) & 0xff] ^ t[3][(w >> 32) & 0xff] ^ t[2][(w >> 40) & 0xff] ^
            t[1][(w >> 48) & 0xff] ^ t[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
    return c;
}

#if defined(__x86_64__)
/* One stream of 8-byte steps: about 8 bytes per 3 cycles, several GB/s. */
__attribute__((target("sse4.2"))) uint32_t crc32c_hw(const uint8_t* p, size_t n, uint32_t c) {
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
        p += 8;
        n -= 8;
    }
    c = static_cast<uint32_t>(c64);
    while (n--) c = _mm_crc32_u8(c, *p++);
    return c;
}

bool have_sse42() {
    static const bool yes = __builtin_cpu_supports("sse4.2");
    return yes;
}
#endif

bool aligned8(uint64_t v) { return (v & 7) == 0; }

/* Asks the kernel to start reading [p, p + len) of a mapping now, in one
 * request, rather than one fault at a time: a cold index is read where it
 * is used, no more (the mapping is MADV_RANDOM, so a fault reads only its
 * own page, not the device's read-ahead window of up to megabytes). On
 * memory that is not a file mapping (an index built in memory) it is a
 * no-op. One madvise() call. */
void will_need(const uint8_t* p, size_t len) {
    if (len == 0) return;
    const uintptr_t page = 4096;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
    const uintptr_t e = reinterpret_cast<uintptr_t>(p) + len;
    (void)madvise(reinterpret_cast<void*>(a), e - a, MADV_WILLNEED);
}

Error bad(std::string msg) { return make_error(EINVAL, std::move(msg)); }

}  // namespace

uint32_t crc32c(const void* data, size_t len, uint32_t crc) {
    const auto* p = static_cast<const uint8_t*>(data);
    crc = ~crc;
#if defined(__x86_64__)
    if (have_sse42()) return ~crc32c_hw(p, len, crc);
#endif
    return ~crc32c_soft(p, len, crc);
}

namespace {

uint32_t header_crc_of(const IndexHeader& h) {
    IndexHeader c = h;
    c.header_crc = 0;
    return crc32c(&c, sizeof(c));
}

}  // namespace

/* The decompressed groups: flow_count entries of anonymous memory mapped
 * at load (untouched pages take no memory), filled group by group. */
struct Index::CompactFlows {
    FlowEntry* flows = nullptr;
    size_t map_bytes = 0;
    std::vector<uint8_t> group_state;  // 0 not read yet, 1 good, 2 damaged
    std::string why;                   // the first damage found
    std::vector<uint8_t> scratch;      // one group's bytes, shuffled
    std::unique_ptr<BlockDecompressor> dec;
    ~CompactFlows() {
        if (flows != nullptr) munmap(flows, map_bytes);
    }
};

/* Every check of the header comment that load() makes, cheapest first; on
 * success fills the spans. The block table is verified (its pages) before
 * any of its entries is trusted; the rest waits for the check_*(). */
Status Index::validate(uint64_t capture_size) {
    const uint8_t* base = base_;
    const size_t size = size_;
    if (size < sizeof(IndexHeader)) return bad("truncated index");
    const auto* h = reinterpret_cast<const IndexHeader*>(base);
    if (std::memcmp(h->magic, kIndexMagic, sizeof(kIndexMagic)) != 0)
        return bad("not an index file (bad magic)");
    if (h->version > kIndexVersion)
        return bad("index version " + std::to_string(h->version) + " is newer than this capq's " +
                   std::to_string(kIndexVersion));
    if (h->version == 0) return bad("bad index version 0");
    if (h->header_bytes < sizeof(IndexHeader) || !aligned8(h->header_bytes))
        return bad("bad index header size " + std::to_string(h->header_bytes));
    if (h->header_bytes > size) return bad("truncated index");
    if (header_crc_of(*h) != h->header_crc) return bad("index header checksum mismatch");
    // Cuts: none below version 3; version 3 is plain flows with cuts, so
    // never without; version 4 may have none.
    if (h->version < 3 && h->cut_count != 0) return bad("index cuts below version 3");
    if (h->version == 3 && h->cut_count == 0) return bad("version 3 index without cuts");
    if (h->page_shift < 12 || h->page_shift > 24)
        return bad("bad index page size 2^" + std::to_string(h->page_shift));

    // Sections: inside the file, 8-aligned, in order, not overlapping.
    auto section = [&](uint64_t off, uint64_t count, uint64_t each, uint64_t after,
                       const char* what) -> Status {
        if (!aligned8(off)) return bad(std::string("index ") + what + " not 8-byte aligned");
        if (off < after || off > size || count > (size - off) / each)
            return bad(std::string("truncated index (") + what + " past the end)");
        return Status();
    };
    if (auto s = section(h->pages_offset, h->page_count, sizeof(uint32_t), h->header_bytes,
                         "page table");
        !s)
        return s;
    const uint64_t pages_end = h->pages_offset + uint64_t(h->page_count) * sizeof(uint32_t);
    if (auto s = section(h->blocks_offset, h->block_count, sizeof(BlockEntry), pages_end, "blocks");
        !s)
        return s;
    const uint64_t page = uint64_t{1} << h->page_shift;
    if (h->page_count != (size - h->blocks_offset + page - 1) / page)
        return bad("truncated index (page table does not cover the file)");
    if (crc32c(base + h->pages_offset, h->page_count * sizeof(uint32_t)) != h->pages_crc)
        return bad("checksum mismatch (page table)");
    uint64_t blocks_end = h->blocks_offset + uint64_t(h->block_count) * sizeof(BlockEntry);
    // Version 2: a compressed capture's frames follow the blocks.
    const bool compressed = h->version >= 2 && h->codec != 0;
    if (h->version < 2 && h->codec != 0) return bad("version 1 index with a codec");
    if (h->codec > uint32_t(Codec::kGzip)) return bad("unknown index codec");
    if (compressed) {
        if (auto s = section(blocks_end, h->block_count, sizeof(StoredBlock), blocks_end,
                             "stored blocks");
            !s)
            return s;
        blocks_end += uint64_t(h->block_count) * sizeof(StoredBlock);
    }
    if (h->non_ip_flows > h->flow_count) return bad("index non_ip_flows past flow_count");
    uint64_t flows_end;
    if (h->version >= kIndexVersionCompactFlows) {
        if (auto s = validate_compact(blocks_end, flows_end); !s) return s;
    } else {
        if (auto s =
                section(h->flows_offset, h->flow_count, sizeof(FlowEntry), blocks_end, "flows");
            !s)
            return s;
        flows_end = h->flows_offset + uint64_t(h->flow_count) * sizeof(FlowEntry);
    }
    const uint64_t ip_flows = h->flow_count - h->non_ip_flows;
    if (auto s = section(h->by_dst_offset, ip_flows, sizeof(uint32_t), flows_end, "by_dst"); !s)
        return s;
    const uint64_t by_dst_end = h->by_dst_offset + ip_flows * sizeof(uint32_t);
    if (auto s = section(h->postings_offset, h->postings_count, sizeof(uint32_t), by_dst_end,
                         "postings");
        !s)
        return s;
    uint64_t postings_end = h->postings_offset + h->postings_count * sizeof(uint32_t);
    // Versions 3 and 4: the cuts, right after the postings (padded to 8).
    const uint64_t cuts_offset = (postings_end + 7) & ~uint64_t(7);
    if (h->cut_count != 0) {
        if (auto s = section(cuts_offset, h->cut_count, sizeof(CutEntry), postings_end, "cuts"); !s)
            return s;
        postings_end = cuts_offset + uint64_t(h->cut_count) * sizeof(CutEntry);
    }
    // Only padding to 8 may follow the postings (or the cuts).
    if (size - postings_end >= 8) return bad("index has trailing bytes");

    header_ = h;
    page_crcs_ = {reinterpret_cast<const uint32_t*>(base + h->pages_offset), h->page_count};
    page_state_.assign(h->page_count, 0);
    blocks_ = {reinterpret_cast<const BlockEntry*>(base + h->blocks_offset), h->block_count};
    if (compact_)
        flows_ = {compact_->flows, h->flow_count};
    else
        flows_ = {reinterpret_cast<const FlowEntry*>(base + h->flows_offset), h->flow_count};
    by_dst_ = {reinterpret_cast<const uint32_t*>(base + h->by_dst_offset),
               static_cast<size_t>(ip_flows)};
    postings_ = {reinterpret_cast<const uint32_t*>(base + h->postings_offset),
                 static_cast<size_t>(h->postings_count)};
    if (h->cut_count != 0)
        cuts_ = {reinterpret_cast<const CutEntry*>(base + cuts_offset), h->cut_count};
    if (compressed)
        stored_ = {
            reinterpret_cast<const StoredBlock*>(base + h->blocks_offset + blocks_.size_bytes()),
            h->block_count};
    if (auto s = check_bytes(h->blocks_offset, blocks_.size_bytes() + stored_.size_bytes()); !s)
        return s;

    // Contents: consistent counts, blocks contiguous from data_start.
    bool live = h->flags & kIndexLive;
    if (live && h->flow_count != 0) return bad("live index with flows");
    if (h->format > uint32_t(CaptureFormat::kPcapng)) return bad("unknown capture format");
    uint64_t at = h->data_start, packets = 0;
    for (const BlockEntry& b : blocks_) {
        if (b.offset != at) return bad("index blocks not contiguous");
        at += b.bytes;
        packets += b.packets;
    }
    if (compressed) {
        // Frames in file order, inside the file, none empty.
        uint64_t frames = 0;
        for (const StoredBlock& b : stored_) {
            if (b.offset < frames || b.bytes == 0) return bad("index frames out of order");
            frames = b.offset + b.bytes;
        }
        if (frames > h->capture_bytes) return bad("index frames past capture_bytes");
    } else if (at > h->capture_bytes) {
        return bad("index blocks past capture_bytes");
    }
    if (packets != h->packets) return bad("index packet counts inconsistent");

    if (capture_size != ~0ull) {
        if (h->capture_bytes > capture_size || (!live && h->capture_bytes < capture_size))
            return make_error(ESTALE, "stale index: describes " + std::to_string(h->capture_bytes) +
                                          " bytes, file has " + std::to_string(capture_size));
    }
    return Status();
}

bool Index::page_ok(size_t page) const {
    if (page_state_[page] == 0) {
        const uint64_t start = header_->blocks_offset + (uint64_t(page) << header_->page_shift);
        const uint64_t len = std::min<uint64_t>(uint64_t{1} << header_->page_shift, size_ - start);
        will_need(base_ + start, len);
        page_state_[page] = crc32c(base_ + start, len) == page_crcs_[page] ? 1 : 2;
    }
    return page_state_[page] == 1;
}

/* [offset, offset + len) lies in the body (the callers' spans do). */
Status Index::check_bytes(uint64_t offset, uint64_t len) const {
    if (len == 0) return Status();
    const uint64_t first = (offset - header_->blocks_offset) >> header_->page_shift;
    const uint64_t last = (offset + len - 1 - header_->blocks_offset) >> header_->page_shift;
    // Several pages: all of them requested at once, verified as they come.
    if (last > first) {
        const uint64_t start = header_->blocks_offset + (first << header_->page_shift);
        const uint64_t end =
            std::min<uint64_t>(size_, header_->blocks_offset + ((last + 1) << header_->page_shift));
        will_need(base_ + start, end - start);
    }
    for (uint64_t p = first; p <= last; p++)
        if (!page_ok(p)) return bad("checksum mismatch (index page " + std::to_string(p) + ")");
    return Status();
}

Status Index::check_flows(size_t first, size_t count) const {
    const size_t n = flows_.size();
    if (first > n || count > n - first) return bad("index flow number out of range");
    if (compact_) {
        if (count != 0) {
            const size_t per = ext_->group_flows;
            const size_t g0 = first / per, g1 = (first + count - 1) / per;
            // Several groups: their fences and frames (back to back, as
            // the fences say, unverified: a hint) asked for at once, not
            // fault by fault (the mapping is MADV_RANDOM).
            if (g1 > g0) {
                const size_t f1 = std::min(g1 + 1, fences_.size() - 1);
                will_need(base_ + ext_->fences_offset + g0 * sizeof(FlowFence),
                          (f1 - g0 + 1) * sizeof(FlowFence));
                const uint64_t all = ext_->groups_bytes;
                const uint64_t a = std::min<uint64_t>(fences_[g0].offset, all);
                const uint64_t b =
                    std::min<uint64_t>(uint64_t(fences_[g1].offset) + fences_[g1].bytes, all);
                if (b > a) will_need(base_ + header_->flows_offset + a, b - a);
            }
            for (size_t g = g0; g <= g1; g++)
                if (auto s = load_group(g); !s) return s;
        }
    } else if (auto s = check_bytes(header_->flows_offset + first * sizeof(FlowEntry),
                                    count * sizeof(FlowEntry));
               !s) {
        return s;
    }
    const size_t non_ip = header_->non_ip_flows;
    uint64_t packets = 0;
    for (size_t i = first; i < first + count; i++) {
        const FlowEntry& f = flows_[i];
        if (f.postings > postings_.size() || f.postings_count > postings_.size() - f.postings)
            return bad("index postings out of range");
        if (f.postings_count == 0 && f.packets != 0) return bad("index flow without blocks");
        if ((f.key.kind == FlowKind::kIp) != (i >= non_ip)) return bad("index flows out of order");
        packets += f.packets;
    }
    // All of them: their packets are the file's.
    if (first == 0 && count == n && !(header_->flags & (kIndexLive | kIndexApproxCounts)) &&
        packets != header_->packets)
        return bad("index packet counts inconsistent");
    return Status();
}

Status Index::check_postings(size_t flow) const {
    if (auto s = check_flows(flow, 1); !s) return s;
    const FlowEntry& f = flows_[flow];
    if (auto s = check_bytes(header_->postings_offset + uint64_t(f.postings) * sizeof(uint32_t),
                             uint64_t(f.postings_count) * sizeof(uint32_t));
        !s)
        return s;
    uint32_t prev = 0;
    for (uint32_t i = 0; i < f.postings_count; i++) {
        const uint32_t b = postings_[f.postings + i];
        if (b >= blocks_.size()) return bad("index block number out of range");
        if (i != 0 && b <= prev) return bad("index postings not ascending");
        prev = b;
    }
    return Status();
}

Status Index::check_cuts() const {
    if (cuts_.empty()) return Status();
    const auto off = static_cast<uint64_t>(reinterpret_cast<const uint8_t*>(cuts_.data()) - base_);
    if (auto s = check_bytes(off, cuts_.size_bytes()); !s) return s;
    for (size_t i = 0; i < cuts_.size(); i++) {
        const CutEntry& c = cuts_[i];
        if (c.flow >= flows_.size()) return bad("index cut names no flow");
        if (i != 0 && c.flow <= cuts_[i - 1].flow) return bad("index cuts not ascending");
        if (c.reserved != 0) return bad("index cut entry with reserved bits");
    }
    return Status();
}

const CutEntry* Index::cut_of(size_t flow) const {
    auto it = std::lower_bound(cuts_.begin(), cuts_.end(), flow,
                               [](const CutEntry& c, size_t f) { return c.flow < f; });
    return it != cuts_.end() && it->flow == flow ? &*it : nullptr;
}

Status Index::check_by_dst(size_t first, size_t count) const {
    const size_t n = by_dst_.size();
    if (first > n || count > n - first) return bad("index by_dst entry out of range");
    if (auto s = check_bytes(header_->by_dst_offset + first * sizeof(uint32_t),
                             count * sizeof(uint32_t));
        !s)
        return s;
    for (size_t i = first; i < first + count; i++)
        if (by_dst_[i] < header_->non_ip_flows || by_dst_[i] >= flows_.size())
            return bad("index by_dst names a flow that is not IP");
    return Status();
}

namespace {

/* The end of a lookup by destination, for every format: a search of by_dst
 * found that addr's run starts at entry lo. Proves it (the entry before lo
 * is below addr) and appends the flow of every entry from lo whose
 * destination is addr. dst_flow(j): the verified key of by_dst entry j's
 * flow, nullptr if damaged. False when an entry is damaged or out of the
 * order the search relied on: the caller then answers with every flow. */
template <class DstFlow>
bool by_dst_run(size_t lo, const uint8_t addr[16], std::span<const uint32_t> by_dst,
                const DstFlow& dst_flow, std::vector<uint32_t>& out) {
    const FlowKey* k;
    if (lo > 0 && (!(k = dst_flow(lo - 1)) || std::memcmp(k->dst, addr, 16) >= 0)) return false;
    for (size_t j = lo; j < by_dst.size(); j++) {
        if (!(k = dst_flow(j))) return false;
        if (std::memcmp(k->dst, addr, 16) < 0) return false;
        if (std::memcmp(k->dst, addr, 16) != 0) break;
        out.push_back(by_dst[j]);
    }
    return true;
}

}  // namespace

void Index::flows_with_address(const uint8_t addr[16], std::vector<uint32_t>& out) const {
    lookup(addr, nullptr, out);
}

void Index::flows_with_pair(const uint8_t a[16], const uint8_t b[16],
                            std::vector<uint32_t>& out) const {
    // The key's endpoints are in canonical order: the lower address first.
    if (std::memcmp(a, b, 16) <= 0)
        lookup(a, b, out);
    else
        lookup(b, a, out);
}

void Index::lookup(const uint8_t addr[16], const uint8_t* dst, std::vector<uint32_t>& out) const {
    if (compact_) return lookup_compact(addr, dst, out);
    const size_t n = flows_.size(), first_ip = header_->non_ip_flows;
    const size_t had = out.size();
    // The key of flow i, its page verified; nullptr if damaged.
    auto key = [&](size_t i) -> const FlowKey* {
        if (!check_bytes(header_->flows_offset + i * sizeof(FlowEntry), sizeof(FlowEntry)))
            return nullptr;
        return &flows_[i].key;
    };
    auto dst_flow = [&](size_t j) -> const FlowKey* {
        if (!check_bytes(header_->by_dst_offset + j * sizeof(uint32_t), sizeof(uint32_t)))
            return nullptr;
        const uint32_t f = by_dst_[j];
        if (f < first_ip || f >= n) return nullptr;
        return key(f);
    };
    // The binary searches' probes read entries unverified (a cold probe
    // then costs the read of one small page, not of the 64 KiB page that
    // verifying needs); only the two entries either side of the place
    // found are verified. That is enough: the entries as written are
    // sorted, so two verified neighbours, the first below addr and the
    // second not, are where addr's run starts whatever damage elsewhere
    // misled the probes on the way; and the run is read verified.
    auto dst_of = [&](size_t j) -> const uint8_t* {
        const uint32_t f = by_dst_[j];
        return f < first_ip || f >= n ? nullptr : flows_[f].key.dst;
    };
    const FlowKey* k;
    // By source: the IP flows are sorted by src.
    size_t lo = first_ip, hi = n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (std::memcmp(flows_[mid].key.src, addr, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo > first_ip && (!(k = key(lo - 1)) || std::memcmp(k->src, addr, 16) >= 0)) goto damaged;
    for (size_t i = lo; i < n; i++) {
        if (!(k = key(i))) goto damaged;
        if (std::memcmp(k->src, addr, 16) < 0) goto damaged;  // not the place found
        if (std::memcmp(k->src, addr, 16) != 0) break;
        if (dst == nullptr || std::memcmp(k->dst, dst, 16) == 0)
            out.push_back(static_cast<uint32_t>(i));
    }
    // A pair: every flow from addr to dst is in addr's run by source.
    if (dst != nullptr) return;
    // By destination, through by_dst.
    lo = 0;
    hi = by_dst_.size();
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const uint8_t* d = dst_of(mid);
        if (d == nullptr) goto damaged;
        if (std::memcmp(d, addr, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!by_dst_run(lo, addr, by_dst_, dst_flow, out)) goto damaged;
    return;
damaged:
    out.resize(had);
    for (size_t i = 0; i < n; i++) out.push_back(static_cast<uint32_t>(i));
}

Result<Index> Index::from_bytes(std::string bytes, uint64_t capture_size) {
    Index ix;
    std::shared_ptr<const void> keep;
    const uint8_t* base;
    size_t size = bytes.size();
    auto str = std::make_shared<const std::string>(std::move(bytes));
    if (reinterpret_cast<uintptr_t>(str->data()) % 8 == 0) {
        base = reinterpret_cast<const uint8_t*>(str->data());
        keep = str;
    } else {
        // The entries hold 64-bit fields: keep them 8-aligned.
        auto v = std::make_shared<std::vector<uint64_t>>((size + 7) / 8);
        std::memcpy(v->data(), str->data(), size);
        base = reinterpret_cast<const uint8_t*>(v->data());
        keep = v;
    }
    ix.storage_ = std::move(keep);
    ix.base_ = base;
    ix.size_ = size;
    if (auto s = ix.validate(capture_size); !s) return s.failure();
    return ix;
}

Result<Index> Index::load(const std::string& path, uint64_t capture_size) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error(errno, path + ": " + std::strerror(errno));
    return load_fd(fd, path, capture_size);
}

Result<Index> Index::load_at(int dir_fd, const std::string& leaf, const std::string& path,
                             uint64_t capture_size) {
    int fd = ::openat(dir_fd, leaf.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return make_error(errno, path + ": " + std::strerror(errno));
    return load_fd(fd, path, capture_size);
}

Result<Index> Index::load_fd(int fd, const std::string& path, uint64_t capture_size) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        ::close(fd);
        return make_error(e, path + ": " + std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        return make_error(EINVAL, path + ": not a regular file");
    }
    size_t size = static_cast<size_t>(st.st_size);
    if (size < sizeof(IndexHeader)) {
        ::close(fd);
        return make_error(EINVAL, path + ": truncated index");
    }
    void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    ::close(fd);
    if (m == MAP_FAILED) return make_error(e, path + ": " + std::strerror(e));
    // Read where used (above); the header, the page table and the block
    // table, which validate() reads whole, are asked for in one request.
    (void)madvise(m, size, MADV_RANDOM);
    {
        const auto* h = static_cast<const IndexHeader*>(m);
        const uint64_t blocks_end =
            h->blocks_offset < size &&
                    h->block_count < (size - h->blocks_offset) / sizeof(BlockEntry)
                ? h->blocks_offset + uint64_t(h->block_count) * sizeof(BlockEntry)
                : size;
        will_need(static_cast<const uint8_t*>(m), static_cast<size_t>(blocks_end));
    }
    std::shared_ptr<const void> keep(m,
                                     [size](const void* p) { munmap(const_cast<void*>(p), size); });
    Index ix;
    const auto* base = static_cast<const uint8_t*>(m);
    ix.storage_ = std::move(keep);
    ix.base_ = base;
    ix.size_ = size;
    if (auto s = ix.validate(capture_size); !s)
        return make_error(s.code(), path + ": " + s.error());
    return ix;
}

std::span<const uint32_t> Index::blocks_of(size_t flow) const {
    const FlowEntry& f = flows_[flow];
    return postings_.subspan(f.postings, f.postings_count);
}

void Index::prefetch_flows(std::span<const uint32_t> flows) const {
    if (compact_) {
        // The frames of the groups not yet read, as the fences say
        // (unverified: a hint).
        size_t last = ~size_t{0};
        const uint64_t all = ext_->groups_bytes;
        for (uint32_t i : flows) {
            if (i >= flows_.size()) continue;
            const size_t g = i / ext_->group_flows;
            if (g == last || compact_->group_state[g] != 0) continue;
            last = g;
            const FlowFence& f = fences_[g];
            if (f.offset < all)
                will_need(base_ + header_->flows_offset + f.offset,
                          std::min<uint64_t>(f.bytes, all - f.offset));
        }
        return;
    }
    const uint64_t page = uint64_t{1} << header_->page_shift;
    uint64_t last = ~0ull;
    for (uint32_t i : flows) {
        if (i >= flows_.size()) continue;
        const uint64_t p =
            (header_->flows_offset + uint64_t(i) * sizeof(FlowEntry) - header_->blocks_offset) >>
            header_->page_shift;
        if (p == last || page_state_[p] != 0) continue;
        last = p;
        const uint64_t start = header_->blocks_offset + p * page;
        will_need(base_ + start, std::min<uint64_t>(page, size_ - start));
    }
}

std::span<const uint8_t> Index::bytes() const { return {base_, size_}; }

/* ---------------------------------------------------- version 4: groups */

Status Index::validate_compact(uint64_t after, uint64_t& flows_end) {
    const auto* h = reinterpret_cast<const IndexHeader*>(base_);
    if (h->header_bytes < sizeof(IndexHeader) + sizeof(IndexHeaderV4Ext))
        return bad("bad index header size " + std::to_string(h->header_bytes));
    const auto* x = reinterpret_cast<const IndexHeaderV4Ext*>(base_ + sizeof(IndexHeader));
    IndexHeaderV4Ext c = *x;
    c.ext_crc = 0;
    if (crc32c(&c, sizeof(c)) != x->ext_crc) return bad("index header checksum mismatch (v4)");
    if (x->flow_codec != uint32_t(Codec::kLz4) && x->flow_codec != uint32_t(Codec::kZstd))
        return bad("unknown index flow codec");
    if (x->group_flows == 0 || x->group_flows > 4096) return bad("bad index flow group size");
    const uint64_t per = x->group_flows;
    const uint64_t ip = h->flow_count - h->non_ip_flows;
    if (x->group_count != (h->flow_count + per - 1) / per ||
        x->dst_fence_count != (ip + per - 1) / per)
        return bad("index flow group counts inconsistent");
    auto section = [&](uint64_t off, uint64_t count, uint64_t each, uint64_t from,
                       const char* what) -> Status {
        if (!aligned8(off)) return bad(std::string("index ") + what + " not 8-byte aligned");
        if (off < from || off > size_ || count > (size_ - off) / each)
            return bad(std::string("truncated index (") + what + " past the end)");
        return Status();
    };
    if (auto s = section(x->fences_offset, x->group_count, sizeof(FlowFence), after, "flow fences");
        !s)
        return s;
    const uint64_t fences_end = x->fences_offset + uint64_t(x->group_count) * sizeof(FlowFence);
    if (auto s = section(x->dst_fences_offset, x->dst_fence_count, 16, fences_end, "dst fences");
        !s)
        return s;
    const uint64_t dst_end = x->dst_fences_offset + uint64_t(x->dst_fence_count) * 16;
    if (auto s = section(h->flows_offset, x->groups_bytes, 1, dst_end, "flow groups"); !s) return s;
    if (x->groups_bytes > UINT32_MAX || (x->group_count == 0) != (x->groups_bytes == 0))
        return bad("bad index flow groups size");
    flows_end = h->flows_offset + ((x->groups_bytes + 7) & ~uint64_t{7});
    if (flows_end > size_) return bad("truncated index (flow groups past the end)");

    ext_ = x;
    fences_ = {reinterpret_cast<const FlowFence*>(base_ + x->fences_offset), x->group_count};
    dst_fences_ = base_ + x->dst_fences_offset;
    auto cf = std::make_shared<CompactFlows>();
    if (h->flow_count != 0) {
        cf->map_bytes = size_t(h->flow_count) * sizeof(FlowEntry);
        void* m = mmap(nullptr, cf->map_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return make_error(errno, std::string("index flows: ") + strerror(errno));
        cf->flows = static_cast<FlowEntry*>(m);
    }
    cf->group_state.assign(x->group_count, 0);
    compact_ = std::move(cf);
    return Status();
}

/* Fence g as written: its page verified (once, as any page), its frame
 * inside the groups' bytes. The fences are not verified as a whole: a
 * lookup verifies the ones it relies on (lookup_compact()). */
Status Index::check_fence(size_t g) const {
    if (g >= fences_.size()) return bad("index flow group out of range");
    if (auto s = check_bytes(ext_->fences_offset + g * sizeof(FlowFence), sizeof(FlowFence)); !s)
        return s;
    const FlowFence& f = fences_[g];
    if (f.bytes == 0 || f.offset > ext_->groups_bytes || f.bytes > ext_->groups_bytes - f.offset)
        return bad("index flow group " + std::to_string(g) + " outside the groups");
    return Status();
}

/* Group g into the buffer, verified (see the format): once. */
Status Index::load_group(size_t g) const {
    CompactFlows& cf = *compact_;
    if (g >= cf.group_state.size()) return bad("index flow group out of range");
    if (cf.group_state[g] == 0) {
        auto load = [&]() -> Status {
            if (auto s = check_fence(g); !s) return s;
            if (g + 1 < fences_.size())
                if (auto s = check_fence(g + 1); !s) return s;
            const IndexHeaderV4Ext& x = *ext_;
            const FlowFence& f = fences_[g];
            const uint8_t* frame = base_ + header_->flows_offset + f.offset;
            if (crc32c(frame, f.bytes) != f.crc)
                return bad("checksum mismatch (index flow group " + std::to_string(g) + ")");
            const size_t first = g * x.group_flows;
            const size_t n = std::min<size_t>(x.group_flows, flows_.size() - first);
            const size_t len = n * sizeof(FlowEntry);
            if (!cf.dec) cf.dec = std::make_unique<BlockDecompressor>(Codec(x.flow_codec));
            cf.scratch.resize(size_t(x.group_flows) * sizeof(FlowEntry));
            auto got = cf.dec->decompress(frame, f.bytes, cf.scratch.data(), cf.scratch.size());
            if (!got || *got != len)
                return bad("index flow group " + std::to_string(g) + " does not decompress");
            // Unshuffle: byte j of entry i is at j * n + i.
            auto* out = reinterpret_cast<uint8_t*>(cf.flows + first);
            const uint8_t* in = cf.scratch.data();
            for (size_t j = 0; j < sizeof(FlowEntry); j++)
                for (size_t i = 0; i < n; i++) out[i * sizeof(FlowEntry) + j] = in[j * n + i];
            // The entries: kind order, sources ascending from the fence's
            // and not past the next fence's, postings in range.
            const size_t non_ip = header_->non_ip_flows;
            const uint8_t* prev = nullptr;
            for (size_t i = first; i < first + n; i++) {
                const FlowEntry& e = cf.flows[i];
                if (e.postings > postings_.size() ||
                    e.postings_count > postings_.size() - e.postings)
                    return bad("index postings out of range");
                if (e.postings_count == 0 && e.packets != 0)
                    return bad("index flow without blocks");
                if ((e.key.kind == FlowKind::kIp) != (i >= non_ip))
                    return bad("index flows out of order");
                if (i < non_ip) continue;
                if (prev == nullptr ? std::memcmp(e.key.src, f.src, 16) != 0
                                    : std::memcmp(prev, e.key.src, 16) > 0)
                    return bad("index flows out of order (group " + std::to_string(g) + ")");
                prev = e.key.src;
            }
            if (prev != nullptr && g + 1 < fences_.size() &&
                std::memcmp(prev, fences_[g + 1].src, 16) > 0)
                return bad("index flows out of order (group " + std::to_string(g) + ")");
            return Status();
        };
        Status s = load();
        cf.group_state[g] = s ? 1 : 2;
        if (!s) {
            if (cf.why.empty()) cf.why = s.error();
            return s;
        }
    }
    if (cf.group_state[g] == 2)
        return bad(cf.why.empty() ? "index flow group " + std::to_string(g) + " damaged" : cf.why);
    return Status();
}

/* lookup() for version 4: the source fences say which groups
 * can hold addr as a source; the dst fences narrow the binary search in
 * by_dst to one stretch of group_flows entries. As for version 1, the
 * binary searches' probes of the fences read them unverified (a cold probe
 * reads a 4 KiB page, not the 64 KiB one verifying needs), and what proves
 * the place found is verified: the two fences either side of it (their
 * pages; the fences as written ascend), the groups read (each checked
 * against its fence and the next), and for by_dst the entries either side
 * of the place and the run. The dst fences are only a hint: a wrong one
 * fails the by_dst proof. */
void Index::lookup_compact(const uint8_t addr[16], const uint8_t* dst,
                           std::vector<uint32_t>& out) const {
    const size_t n = flows_.size(), first_ip = header_->non_ip_flows;
    const size_t per = ext_->group_flows;
    const size_t had = out.size();
    auto key = [&](size_t i) -> const FlowKey* {
        if (i >= n || !load_group(i / per)) return nullptr;
        return &flows_[i].key;
    };
    auto dst_flow = [&](size_t j) -> const FlowKey* {
        if (!check_by_dst(j, 1)) return nullptr;
        return key(by_dst_[j]);
    };
    const FlowKey* k;
    size_t lo;
    if (first_ip < n) {
        // addr's run starts in the group before lo, or at its start.
        const size_t g0 = first_ip / per;
        lo = fence_place(addr);
        // Verified: the fence before the place is below addr (unless it is
        // the first IP group's, whose run is read from its start), the one
        // at the place not.
        if (lo - 1 > g0 &&
            (!check_fence(lo - 1) || std::memcmp(fences_[lo - 1].src, addr, 16) >= 0))
            goto damaged;
        if (lo < fences_.size() && (!check_fence(lo) || std::memcmp(fences_[lo].src, addr, 16) < 0))
            goto damaged;
        // The groups the run can span, asked for at once: their frames lie
        // back to back (the fences, unverified, are a hint here).
        size_t last = lo;
        while (last < fences_.size() && std::memcmp(fences_[last].src, addr, 16) <= 0) last++;
        if (compact_->group_state[lo - 1] == 0) {
            const uint64_t all = ext_->groups_bytes;
            const uint64_t a = std::min<uint64_t>(fences_[lo - 1].offset, all);
            const uint64_t b = std::min<uint64_t>(
                uint64_t(fences_[last - 1].offset) + fences_[last - 1].bytes, all);
            if (b > a) will_need(base_ + header_->flows_offset + a, b - a);
        }
        for (size_t i = std::max(first_ip, (lo - 1) * per); i < n; i++) {
            // A group whose (verified) fence is past addr holds none of it:
            // not read.
            if (i % per == 0 && i / per >= lo) {
                if (!check_fence(i / per)) goto damaged;
                if (std::memcmp(fences_[i / per].src, addr, 16) > 0) break;
            }
            if (!(k = key(i))) goto damaged;
            const int c = std::memcmp(k->src, addr, 16);
            if (c < 0) continue;
            if (c > 0) break;
            if (dst == nullptr || std::memcmp(k->dst, dst, 16) == 0)
                out.push_back(static_cast<uint32_t>(i));
        }
    }
    if (dst == nullptr && !by_dst_.empty()) {
        // By destination: the stretch of by_dst the dst fences leave.
        auto [a, b] = dst_stretch(addr);
        while (a < b) {
            const size_t mid = a + (b - a) / 2;
            if (!(k = dst_flow(mid))) goto damaged;
            if (std::memcmp(k->dst, addr, 16) < 0)
                a = mid + 1;
            else
                b = mid;
        }
        if (!by_dst_run(a, addr, by_dst_, dst_flow, out)) goto damaged;
    }
    return;
damaged:
    out.resize(had);
    for (size_t i = 0; i < n; i++) out.push_back(static_cast<uint32_t>(i));
}

size_t Index::fence_place(const uint8_t addr[16]) const {
    // The first group after the first IP one whose fence is not below addr.
    size_t lo = header_->non_ip_flows / ext_->group_flows + 1, hi = fences_.size();
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (std::memcmp(fences_[mid].src, addr, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

std::pair<size_t, size_t> Index::dst_stretch(const uint8_t addr[16]) const {
    const size_t per = ext_->group_flows;
    size_t lo = 1, hi = ext_->dst_fence_count;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (std::memcmp(dst_fences_ + 16 * mid, addr, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return {(lo - 1) * per, std::min(by_dst_.size(), lo * per)};
}

std::string index_leaf_for(const std::string& capture_leaf) {
    if (!capture_leaf.empty() && capture_leaf[0] == '.') return capture_leaf + ".idx";
    return "." + capture_leaf + ".idx";
}

std::string index_path_for(const std::string& capture_path) {
    size_t slash = capture_path.rfind('/');
    if (slash == std::string::npos) return index_leaf_for(capture_path);
    return capture_path.substr(0, slash + 1) + index_leaf_for(capture_path.substr(slash + 1));
}

bool is_index_leaf(const std::string& leaf) {
    if (leaf.size() < 2 || leaf[0] != '.') return false;
    auto ends = [&](const char* s) {
        size_t n = std::strlen(s);
        return leaf.size() > n && leaf.compare(leaf.size() - n, n, s) == 0;
    };
    return ends(".idx") || ends(".idx.partial");
}

Status write_index_file(int dir_fd, const std::string& leaf, std::span<const uint8_t> bytes,
                        unsigned mode, int owner, int group) {
    std::string tmp = leaf + ".partial";
    int fd = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        fd = openat(dir_fd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    mode & 0777);
        if (fd >= 0 || errno != EEXIST || attempt == 1) break;
        // A leftover of ours (a crash mid-write: owned by us, or by the
        // owner we give our files to) is replaced; anything else there (a
        // link, another user's file) is refused.
        struct stat st;
        if (fstatat(dir_fd, tmp.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        bool ours = st.st_uid == geteuid() || (owner != -1 && st.st_uid == uid_t(owner));
        if (!S_ISREG(st.st_mode) || !ours) {
            errno = EEXIST;
            break;
        }
        if (unlinkat(dir_fd, tmp.c_str(), 0) != 0 && errno != ENOENT) break;
    }
    if (fd < 0) return make_error(errno, tmp + ": " + std::strerror(errno));
    auto fail = [&](const char* what) {
        int e = errno;
        ::close(fd);
        unlinkat(dir_fd, tmp.c_str(), 0);
        return make_error(e, tmp + ": " + what + ": " + std::strerror(e));
    };
    const uint8_t* p = bytes.data();
    size_t left = bytes.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail("write");
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
    if ((owner != -1 || group != -1) && fchown(fd, owner, group) != 0) return fail("chown");
    // fchmod: the mode is exact whatever the umask.
    if (fchmod(fd, mode & 07777) != 0) return fail("chmod");
    if (::close(fd) != 0) {
        int e = errno;
        unlinkat(dir_fd, tmp.c_str(), 0);
        return make_error(e, tmp + ": close: " + std::strerror(e));
    }
    if (renameat(dir_fd, tmp.c_str(), dir_fd, leaf.c_str()) != 0) {
        int e = errno;
        unlinkat(dir_fd, tmp.c_str(), 0);
        return make_error(e, leaf + ": rename: " + std::strerror(e));
    }
    return Status();
}

}  // namespace linecap::index
