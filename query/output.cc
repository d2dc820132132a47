#include "query/output.hh"

#include <fcntl.h>
#include <sys/stat.h>
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

CaptureOutput::CaptureOutput(Sink sink, OutFormat format, bool nano, uint16_t linktype,
                             uint32_t snaplen)
    : sink_(std::move(sink)), format_(format), nano_(nano), linktype_(linktype), snaplen_(snaplen) {
    buf_.reserve(kBufBytes + 65536);
}

uint64_t CaptureOutput::record_bytes(uint32_t caplen) const {
    if (format_ == OutFormat::kPcap) return 16 + uint64_t(caplen);
    return 32 + ((uint64_t(caplen) + 3) & ~uint64_t(3));
}

Status CaptureOutput::flush() {
    if (sink_) {
        Status s = buf_.empty() ? Status{} : sink_(buf_.data(), buf_.size());
        buf_.clear();
        return s;
    }
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
    bytes_ += n;
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
        // Before 1970 comes back as the 32-bit field it was read from (the
        // reader takes pcap's seconds as signed, as libpcap does).
        const int64_t t = int64_t(ts_ns);
        int64_t sec = t / 1000000000, frac = t % 1000000000;
        if (frac < 0) {
            frac += 1000000000;
            sec--;
        }
        uint8_t h[16];
        le<uint32_t>(h, uint32_t(sec));
        le<uint32_t>(h + 4, uint32_t(nano_ ? frac : frac / 1000));
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

OutFile::~OutFile() {
    if (!tmp_path.empty()) {
        ::close(fd);
        ::unlink(tmp_path.c_str());
    } else if (direct) {
        ::close(fd);
    }
}

Status OutFile::open(const std::string& path) {
    final_path = path;
    // A device, a pipe or a socket (-w /dev/null, a FIFO) is written as
    // it is, as tcpdump does; so is the file a symbolic link names.
    // Renaming over them would replace the device or the link.
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) return make_error(EISDIR, path + ": is a directory");
        fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | (S_ISLNK(st.st_mode) ? O_TRUNC : 0));
        if (fd < 0) {
            int e = errno;
            fd = STDOUT_FILENO;
            return make_error(e, path + ": " + std::strerror(e));
        }
        direct = true;
        return {};
    }
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
    std::string leaf = slash == std::string::npos ? path : path.substr(slash + 1);
    std::string tmp = dir + "." + leaf + ".capq-" + std::to_string(::getpid());
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        int e = errno;
        fd = STDOUT_FILENO;
        return make_error(e, path + ": " + std::strerror(e));
    }
    tmp_path = tmp;
    return {};
}

Status OutFile::commit() {
    if (tmp_path.empty()) return {};
    if (::fsync(fd) != 0 || ::rename(tmp_path.c_str(), final_path.c_str()) != 0)
        return make_error(errno, final_path + ": " + std::strerror(errno));
    ::close(fd);
    tmp_path.clear();
    return {};
}

}  // namespace linecap::query
