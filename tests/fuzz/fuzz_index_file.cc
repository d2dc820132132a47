// libFuzzer target: the index file reader (index/index_file.hh). Any bytes:
// either refused with a message, or every span the index hands out lies
// inside the bytes, the blocks are contiguous and every posting names a
// block; and an index the builder serializes is always accepted.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "index/index_file.hh"

using namespace linecap::index;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string bytes(reinterpret_cast<const char*>(data), size);
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
    if (!inside(ix.flows().data(), ix.flows().size_bytes())) abort();
    uint64_t at = ix.header().data_start;
    for (const BlockEntry& b : ix.blocks()) {
        if (b.offset != at) abort();
        at += b.bytes;
    }
    for (size_t i = 0; i < ix.flows().size(); i++) {
        auto bl = ix.blocks_of(i);
        if (!inside(bl.data(), bl.size_bytes())) abort();
        for (uint32_t b : bl)
            if (b >= ix.blocks().size()) abort();
    }
    return 0;
}
