// libFuzzer target: the capture reader (index/capture_reader.hh) and the
// builder behind `capq --reindex`. Any bytes: the records returned lie
// inside the file, in order and contiguous with what for_each() says it
// read; indexing them gives an index the reader accepts, whose blocks end
// where the records do.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "index/builder.hh"
#include "index/capture_reader.hh"

using namespace linecap::index;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    int fd = memfd_create("fuzz-capture", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (size > 0 && write(fd, data, size) != static_cast<ssize_t>(size)) {
        close(fd);
        return 0;
    }
    {
        auto r = CaptureReader::open_fd(fd, "fuzz");
        if (!r.ok()) {
            close(fd);
            return 0;
        }
        CaptureReader& rd = *r;
        uint64_t start = rd.info().data_start;
        if (start > size) abort();
        std::vector<uint16_t> lts;
        for (const auto& i : rd.info().interfaces) lts.push_back(i.linktype);
        IndexBuilder b(256);
        b.begin(rd.info().format, lts, start);
        uint64_t next = start;
        auto e = rd.for_each(start, ~0ull, [&](const Record& x) {
            if (x.offset < next || x.offset + x.rec_bytes > size) abort();
            if (x.caplen > x.rec_bytes) abort();
            next = x.offset + x.rec_bytes;
            b.add(x.offset, x.rec_bytes, x.ts_ns, x.if_id, x.data, x.caplen, x.wirelen);
            return true;
        });
        if (!e.ok()) abort();
        if (*e > size || *e < next) abort();
        if (rd.sequential()) b.mark_sequential();
        auto ix = Index::from_bytes(b.serialize(size), size);
        if (!ix.ok()) abort();
        if (!ix->blocks().empty()) {
            const BlockEntry& last = ix->blocks().back();
            if (last.offset + last.bytes != next) abort();
        }
    }
    close(fd);
    return 0;
}
