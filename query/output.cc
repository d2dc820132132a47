#include "query/output.hh"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace linecap::query {

namespace {

constexpr size_t kBufBytes = 1 << 20;

template <class T>
void le(uint8_t* p, T v) {
    std::memcpy(p, &v, sizeof v);  // little-endian hosts only (x86-64, arm64)
}

}  // namespace

CaptureOutput::CaptureOutput(int fd, OutFormat format, bool nano, uint16_t linktype,
                             uint32_t snaplen)
    : fd_(fd), format_(format), nano_(nano), linktype_(linktype), snaplen_(snaplen) {
    buf_.reserve(kBufBytes + 65536);
}

Status CaptureOutput::flush() {
    size_t done = 0;
    while (done < buf_.size()) {
        ssize_t n = ::write(fd_, buf_.data() + done, buf_.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            buf_.clear();
            return make_error(e, std::string("write: ") + std::strerror(e));
        }
        done += size_t(n);
    }
    buf_.clear();
    return {};
}

Status CaptureOutput::put(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf_.insert(buf_.end(), b, b + n);
    if (buf_.size() >= kBufBytes) return flush();
    return {};
}

Status CaptureOutput::start() {
    if (format_ == OutFormat::kPcap) {
        uint8_t h[24];
        le<uint32_t>(h, nano_ ? 0xa1b23c4d : 0xa1b2c3d4);
        le<uint16_t>(h + 4, 2);
        le<uint16_t>(h + 6, 4);
        le<uint32_t>(h + 8, 0);
        le<uint32_t>(h + 12, 0);
        le<uint32_t>(h + 16, snaplen_);
        le<uint32_t>(h + 20, linktype_);
        return put(h, sizeof h);
    }
    // Section header block: no options, section length unknown.
    uint8_t h[28];
    le<uint32_t>(h, 0x0a0d0d0a);
    le<uint32_t>(h + 4, 28);
    le<uint32_t>(h + 8, 0x1a2b3c4d);
    le<uint16_t>(h + 12, 1);
    le<uint16_t>(h + 14, 0);
    le<int64_t>(h + 16, -1);
    le<uint32_t>(h + 24, 28);
    return put(h, sizeof h);
}

Result<uint32_t> CaptureOutput::interface(uint16_t linktype, uint32_t snaplen) {
    if (format_ == OutFormat::kPcap) return 0u;
    auto it = ifs_.find({linktype, snaplen});
    if (it != ifs_.end()) return it->second;
    // Interface description block with if_tsresol = 9 (nanoseconds).
    uint8_t b[32];
    le<uint32_t>(b, 1);
    le<uint32_t>(b + 4, 32);
    le<uint16_t>(b + 8, linktype);
    le<uint16_t>(b + 10, 0);
    le<uint32_t>(b + 12, snaplen);
    le<uint16_t>(b + 16, 9);  // if_tsresol
    le<uint16_t>(b + 18, 1);
    b[20] = 9;
    b[21] = b[22] = b[23] = 0;
    le<uint32_t>(b + 24, 0);  // opt_endofopt
    le<uint32_t>(b + 28, 32);
    if (Status s = put(b, sizeof b); !s) return s.failure();
    uint32_t id = uint32_t(ifs_.size());
    ifs_[{linktype, snaplen}] = id;
    return id;
}

Status CaptureOutput::packet(uint32_t out_if, uint64_t ts_ns, const uint8_t* data, uint32_t caplen,
                             uint32_t wirelen) {
    packets_++;
    if (format_ == OutFormat::kPcap) {
        uint8_t h[16];
        le<uint32_t>(h, uint32_t(ts_ns / 1000000000));
        le<uint32_t>(h + 4, uint32_t(nano_ ? ts_ns % 1000000000 : ts_ns % 1000000000 / 1000));
        le<uint32_t>(h + 8, caplen);
        le<uint32_t>(h + 12, wirelen);
        if (Status s = put(h, sizeof h); !s) return s;
        return put(data, caplen);
    }
    const uint32_t pad = (4 - caplen % 4) % 4;
    const uint32_t total = 28 + caplen + pad + 4;
    uint8_t h[28];
    le<uint32_t>(h, 6);
    le<uint32_t>(h + 4, total);
    le<uint32_t>(h + 8, out_if);
    le<uint32_t>(h + 12, uint32_t(ts_ns >> 32));
    le<uint32_t>(h + 16, uint32_t(ts_ns));
    le<uint32_t>(h + 20, caplen);
    le<uint32_t>(h + 24, wirelen);
    if (Status s = put(h, sizeof h); !s) return s;
    if (Status s = put(data, caplen); !s) return s;
    uint8_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    le<uint32_t>(t + pad, total);
    return put(t, pad + 4);
}

Status CaptureOutput::finish() { return flush(); }

}  // namespace linecap::query
