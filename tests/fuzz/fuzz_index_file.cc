// libFuzzer target: the index file reader (index/index_file.hh). Any bytes:
// either refused with a message, or every span the index hands out lies
// inside the bytes, the blocks are contiguous; and whatever the lazy checks
// (check_flows, check_postings, check_by_dst, check_cuts) accept is in range:
// postings name blocks, by_dst names IP flows, flows_with_address() and
// flows_with_pair() name flows, cuts name flows.
// An input whose first byte is odd has its page table and header checksums
// (and version 4's extension header checksum)
// recomputed first (when its header is in place), so that the structural
// checks behind the checksums are reached too.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "index/index_file.hh"

using namespace linecap::index;

namespace {

void reseal(std::string& t) {
    if (t.size() < sizeof(IndexHeader)) return;
    IndexHeader x;
    std::memcpy(&x, t.data(), sizeof(x));
    if (x.page_shift < 12 || x.page_shift > 24 || x.blocks_offset > t.size() ||
        x.pages_offset > t.size() || x.page_count > (t.size() - x.pages_offset) / 4)
        return;
    const uint64_t page = uint64_t{1} << x.page_shift;
    const uint64_t want = (t.size() - x.blocks_offset + page - 1) / page;
    if (want != x.page_count) return;
    for (uint32_t i = 0; i < x.page_count; i++) {
        const uint64_t start = x.blocks_offset + i * page;
        uint32_t c = crc32c(t.data() + start, std::min<uint64_t>(page, t.size() - start));
        std::memcpy(t.data() + x.pages_offset + 4 * uint64_t(i), &c, 4);
    }
    if (x.version >= kIndexVersionCompactFlows &&
        x.header_bytes >= sizeof(IndexHeader) + sizeof(IndexHeaderV4Ext) &&
        t.size() >= sizeof(IndexHeader) + sizeof(IndexHeaderV4Ext)) {
        IndexHeaderV4Ext e;
        std::memcpy(&e, t.data() + sizeof(IndexHeader), sizeof(e));
        e.ext_crc = 0;
        e.ext_crc = crc32c(&e, sizeof(e));
        std::memcpy(t.data() + sizeof(IndexHeader), &e, sizeof(e));
    }
    x.pages_crc = crc32c(t.data() + x.pages_offset, 4 * uint64_t(x.page_count));
    x.header_crc = 0;
    x.header_crc = crc32c(&x, sizeof(x));
    std::memcpy(t.data(), &x, sizeof(x));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] & 1) reseal(bytes);
    auto r = Index::from_bytes(bytes, ~0ull);
    if (!r.ok()) {
        if (r.error().empty()) abort();
        return 0;
    }
    const Index& ix = *r;
    const auto* base = ix.bytes().data();
    const auto* end = base + ix.bytes().size();
    auto inside = [&](const void* p, size_t n) {
        auto* b = static_cast<const uint8_t*>(p);
        return b >= base && b + n <= end;
    };
    if (!inside(ix.blocks().data(), ix.blocks().size_bytes())) abort();
    // Version 4 decompresses its flows into memory of its own.
    if (ix.header().version < kIndexVersionCompactFlows &&
        !inside(ix.flows().data(), ix.flows().size_bytes()))
        abort();
    if (!inside(ix.by_dst().data(), ix.by_dst().size_bytes())) abort();
    uint64_t at = ix.header().data_start;
    for (const BlockEntry& b : ix.blocks()) {
        if (b.offset != at) abort();
        at += b.bytes;
    }
    const size_t n = ix.flows().size();
    if (ix.non_ip_flows() > n) abort();
    // Flows: some in a range, then each; a flow whose check passed has
    // in-range postings once check_postings passes.
    (void)ix.check_flows(0, n);
    for (size_t i = 0; i < n; i++) {
        if (!ix.check_flows(i, 1).ok()) continue;
        if (ix.flows()[i].key.kind == FlowKind::kIp) {
            if (i < ix.non_ip_flows()) abort();
        } else if (i >= ix.non_ip_flows()) {
            abort();
        }
        auto bl = ix.blocks_of(i);
        if (!inside(bl.data(), bl.size_bytes())) abort();
        if (!ix.check_postings(i).ok()) continue;
        for (size_t j = 0; j < bl.size(); j++)
            if (bl[j] >= ix.blocks().size() || (j != 0 && bl[j] <= bl[j - 1])) abort();
    }
    // Cuts (versions 3 and 4): inside; once check_cuts passes, each names a flow,
    // ascending, and cut_of finds it.
    if (!ix.cuts().empty() && !inside(ix.cuts().data(), ix.cuts().size_bytes())) abort();
    if (ix.check_cuts().ok())
        for (size_t j = 0; j < ix.cuts().size(); j++) {
            const CutEntry& c = ix.cuts()[j];
            if (c.flow >= n || (j != 0 && c.flow <= ix.cuts()[j - 1].flow)) abort();
            if (ix.cut_of(c.flow) != &c) abort();
        }
    for (size_t j = 0; j < ix.by_dst().size(); j++)
        if (ix.check_by_dst(j, 1).ok() &&
            (ix.by_dst()[j] < ix.non_ip_flows() || ix.by_dst()[j] >= n))
            abort();
    if (n != 0 && ix.check_flows(n / 2, 1).ok()) {
        std::vector<uint32_t> out;
        const FlowEntry& f = ix.flows()[n / 2];
        ix.flows_with_address(f.key.src, out);
        ix.flows_with_address(f.key.dst, out);
        ix.flows_with_pair(f.key.dst, f.key.src, out);
        for (uint32_t v : out)
            if (v >= n) abort();
    }
    if (ix.check_flows(n == 0 ? 0 : n - 1, n == 0 ? 0 : 1).ok()) {
        uint8_t zero[16] = {};
        std::vector<uint32_t> out;
        ix.flows_with_address(zero, out);
        for (uint32_t v : out)
            if (v >= n) abort();
    }
    return 0;
}
