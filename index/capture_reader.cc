#include "index/capture_reader.hh"

#include "index/codec.hh"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace linecap::index {
namespace {

constexpr size_t kBufferBytes = 4u << 20;
constexpr uint32_t kMaxCaplen = 256u << 20;
constexpr uint32_t kPcapngShb = 0x0a0d0d0a;
constexpr uint32_t kByteOrderMagic = 0x1a2b3c4d;

uint32_t bswap(uint32_t v) { return __builtin_bswap32(v); }

inline uint32_t rd32(const uint8_t* p, bool sw) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return sw ? bswap(v) : v;
}

inline uint16_t rd16(const uint8_t* p, bool sw) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return sw ? __builtin_bswap16(v) : v;
}

/* The largest caplen libpcap accepts for a link type, and the snapshot
 * length it uses for a header's snaplen (0 or too large: that maximum). */
uint32_t max_snaplen_for(uint16_t linktype) {
    switch (linktype) {
        case 231: return 128u << 20;  // D-Bus
        case 279: return 8u << 20;    // EBHSCR
        case 249: return 1u << 20;    // USBPcap
        default: return 262144;
    }
}

uint32_t adjust_snaplen(uint16_t linktype, uint32_t snaplen) {
    uint32_t max = max_snaplen_for(linktype);
    return snaplen == 0 || snaplen > max ? max : snaplen;
}

/* Ticks since the epoch in the interface's resolution to ns, with the
 * same integer steps as libpcap (seconds, then the fraction scaled), so
 * that even odd resolutions give libpcap's timestamps. */
uint64_t pcapng_ns(const CaptureInterface& i, uint64_t t) {
    uint64_t per = i.ts_per_sec;
    uint64_t sec = t / per + static_cast<uint64_t>(i.ts_offset_s);
    uint64_t frac = t % per;
    if (per == 1000000000) {
    } else if (i.ts_unit_ns != 0 && per <= 1000000000 && 1000000000 % per == 0) {
        frac *= i.ts_unit_ns;
    } else if (i.ts_div > 1 && per % 1000000000 == 0) {
        frac /= i.ts_div;
    } else {
        frac = frac * 1000000000u / per;
    }
    return sec * 1000000000u + frac;
}

void set_resolution(CaptureInterface& i, uint8_t v) {
    if (v & 0x80) {
        unsigned e = v & 0x7f;
        i.ts_per_sec = e >= 64 ? 0 : 1ull << e;
        i.ts_unit_ns = 0;
        i.ts_div = 1;
        return;
    }
    uint64_t per = 1;
    for (unsigned k = 0; k < v && k < 20; k++) per *= 10;
    i.ts_per_sec = v > 19 ? 0 : per;
    if (per <= 1000000000) {
        i.ts_unit_ns = 1000000000 / per;
        i.ts_div = 1;
    } else {
        i.ts_unit_ns = 0;
        i.ts_div = per / 1000000000;
    }
}

/* An interface description block's body (after type and length, before
 * the trailing length). False when libpcap would refuse it. */
bool parse_idb(const uint8_t* p, size_t n, bool sw, CaptureInterface& i) {
    if (n < 8) return false;
    i = CaptureInterface{};
    i.linktype = rd16(p, sw);
    i.snaplen = adjust_snaplen(i.linktype, rd32(p + 4, sw));
    size_t at = 8;
    while (n - at >= 4) {
        uint16_t code = rd16(p + at, sw), len = rd16(p + at + 2, sw);
        at += 4;
        if (code == 0) break;
        if (len > n - at) return false;
        if (code == 9 && len >= 1) set_resolution(i, p[at]);
        if (code == 14 && len >= 8) {
            uint64_t v;
            std::memcpy(&v, p + at, 8);
            if (sw) v = __builtin_bswap64(v);
            i.ts_offset_s = static_cast<int64_t>(v);
        }
        at += (len + 3u) & ~3u;
        if (at > n) return false;
    }
    return i.ts_per_sec != 0;
}

}  // namespace

bool CaptureInfo::nanosecond() const {
    for (const CaptureInterface& i : interfaces)
        if (i.ts_per_sec > 1000000) return true;
    return false;
}

Result<CaptureReader> CaptureReader::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error(errno, path + ": " + std::strerror(errno));
    auto r = open_fd(fd, path);
    if (!r.ok()) {
        ::close(fd);
        return r;
    }
    r->own_fd_ = true;
    return r;
}

/* A compressed file's state: its blocks' place in the stream and in the
 * file (from the index), or the whole stream decompressed into memfd. */
struct CaptureReader::Compressed {
    Codec codec = Codec::kNone;
    int file_fd = -1;  // the compressed file (fd_ while not inflated)
    std::vector<BlockEntry> blocks;
    std::vector<StoredBlock> stored;
    std::unique_ptr<BlockDecompressor> dec;
    std::vector<uint8_t> frame;
    bool inflated = false;  // fd_ is the memfd of the whole stream
    int memfd = -1;
    ~Compressed() {
        if (memfd >= 0) ::close(memfd);
    }
};

Codec CaptureReader::codec() const { return z_ ? z_->codec : Codec::kNone; }

bool CaptureReader::use_index(const Index& idx) {
    if (!z_ || z_->inflated || idx.codec() != z_->codec ||
        idx.stored().size() != idx.blocks().size())
        return false;
    z_->blocks.assign(idx.blocks().begin(), idx.blocks().end());
    z_->stored.assign(idx.stored().begin(), idx.stored().end());
    return true;
}

namespace {
std::atomic<uint64_t> g_inflate_limit{0};
}  // namespace

void CaptureReader::set_inflate_limit(uint64_t bytes) {
    g_inflate_limit.store(bytes, std::memory_order_relaxed);
}

uint64_t CaptureReader::inflate_limit() {
    uint64_t v = g_inflate_limit.load(std::memory_order_relaxed);
    if (v != 0) return v;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return uint64_t(1) << 30;
    return uint64_t(pages) * uint64_t(page) / 4;
}

std::string CaptureReader::io_text() const {
    if (io_errno_ == EFBIG && z_)
        return "decompresses to more than " + std::to_string(inflate_limit()) +
               " bytes in memory at once (capq --max-inflate); refused";
    return std::strerror(io_errno_);
}

/* Without an index: the whole stream into an anonymous memory file, read
 * from then on as an uncompressed capture. A stream cut short (a file
 * being written, a kill -9) or damaged ends where decompression stopped;
 * the records cut there are not returned. */
bool CaptureReader::inflate_all(std::vector<FrameExtent>* frames, Status* damaged, bool* cut) {
    int mfd = memfd_create("capq-inflate", MFD_CLOEXEC);
    if (mfd < 0) {
        io_errno_ = errno;
        return false;
    }
    uint64_t at = 0;
    int err = 0;
    const uint64_t limit = inflate_limit();
    uint64_t file_at = 0, raw_at = 0;
    auto on_frame = [&](uint64_t file_end, uint64_t raw_end) {
        frames->push_back(FrameExtent{file_at, file_end - file_at, raw_at, raw_end - raw_at});
        file_at = file_end;
        raw_at = raw_end;
    };
    if (frames) frames->clear();
    Status st = decompress_stream(
        z_->file_fd, z_->codec,
        [&](const uint8_t* p, size_t n) {
            if (n > limit - std::min(at, limit)) {
                err = EFBIG;
                return false;
            }
            while (n > 0) {
                ssize_t w = pwrite(mfd, p, n, off_t(at));
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) {
                    err = w < 0 ? errno : ENOSPC;
                    return false;
                }
                p += w;
                n -= size_t(w);
                at += uint64_t(w);
            }
            return true;
        },
        cut, nullptr, frames ? std::function<void(uint64_t, uint64_t)>(on_frame) : nullptr);
    // Damaged: keep what came before, like a file cut short; only a caller
    // that asks is told.
    if (damaged) *damaged = st;
    if (err) {
        ::close(mfd);
        io_errno_ = err;
        return false;
    }
    z_->memfd = mfd;
    z_->inflated = true;
    fd_ = mfd;
    buf_len_ = 0;
    return true;
}

Status CaptureReader::inflate_listing_frames(std::vector<FrameExtent>& frames, bool* cut) {
    if (!z_ || z_->inflated || !z_->blocks.empty())
        return make_error(EINVAL, "not a compressed file read without an index");
    Status damaged;
    if (!inflate_all(&frames, &damaged, cut)) return make_error(io_errno_, io_text());
    return damaged;
}

const uint8_t* CaptureReader::fetch_compressed(uint64_t pos, size_t n) {
    if (z_->blocks.empty()) {
        if (!inflate_all()) return nullptr;
        return nullptr;  // the caller reads again, now from the memfd
    }
    // The block holding pos; then the following ones until n bytes are in.
    auto it = std::upper_bound(z_->blocks.begin(), z_->blocks.end(), pos,
                               [](uint64_t p, const BlockEntry& b) { return p < b.offset; });
    if (it == z_->blocks.begin()) return nullptr;
    size_t i = size_t(it - z_->blocks.begin()) - 1;
    if (pos >= z_->blocks[i].offset + z_->blocks[i].bytes) return nullptr;  // past the blocks
    if (!z_->dec) z_->dec = std::make_unique<BlockDecompressor>(z_->codec);
    buf_off_ = z_->blocks[i].offset;
    buf_len_ = 0;
    while (i < z_->blocks.size() && buf_off_ + buf_len_ < pos + n) {
        const BlockEntry& b = z_->blocks[i];
        const StoredBlock& sb = z_->stored[i];
        if (b.offset != buf_off_ + buf_len_) break;
        size_t need = buf_len_ + b.bytes;
        // The index says how large a block decompresses: the same bound as
        // a read without one, or a hostile index could claim gigabytes.
        if (need > inflate_limit()) {
            io_errno_ = EFBIG;
            buf_len_ = 0;
            return nullptr;
        }
        if (buf_cap_ < need) {
            std::unique_ptr<uint8_t[]> nb(new uint8_t[need]);
            if (buf_len_) std::memcpy(nb.get(), buf_.get(), buf_len_);
            buf_ = std::move(nb);
            buf_cap_ = need;
        }
        z_->frame.resize(sb.bytes);
        size_t got = 0;
        while (got < sb.bytes) {
            ssize_t r =
                pread(z_->file_fd, z_->frame.data() + got, sb.bytes - got, off_t(sb.offset + got));
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                io_errno_ = errno;
                buf_len_ = 0;
                return nullptr;
            }
            if (r == 0) break;
            got += size_t(r);
        }
        auto made = z_->dec->decompress(z_->frame.data(), got, buf_.get() + buf_len_, b.bytes);
        if (!made || *made != b.bytes) {
            io_errno_ = EBADMSG;
            buf_len_ = 0;
            return nullptr;
        }
        buf_len_ += b.bytes;
        i++;
    }
    return pos + n <= buf_off_ + buf_len_ ? buf_.get() + (pos - buf_off_) : nullptr;
}

CaptureReader::CaptureReader(CaptureReader&& o) noexcept { *this = std::move(o); }

CaptureReader& CaptureReader::operator=(CaptureReader&& o) noexcept {
    if (this != &o) {
        int file = z_ ? z_->file_fd : fd_;
        if (own_fd_ && file >= 0) ::close(file);
        fd_ = o.fd_;
        own_fd_ = o.own_fd_;
        o.fd_ = -1;
        o.own_fd_ = false;
        name_ = std::move(o.name_);
        info_ = std::move(o.info_);
        sequential_ = o.sequential_;
        window_read_ahead_ = o.window_read_ahead_;
        leading_interfaces_ = o.leading_interfaces_;
        lengths_swapped_ = o.lengths_swapped_;
        z_ = std::move(o.z_);
        buf_ = std::move(o.buf_);
        buf_cap_ = o.buf_cap_;
        o.buf_cap_ = 0;
        buf_off_ = o.buf_off_;
        buf_len_ = o.buf_len_;
        io_errno_ = o.io_errno_;
    }
    return *this;
}

CaptureReader::~CaptureReader() {
    int file = z_ ? z_->file_fd : fd_;  // fd_ may be a compressed file's memfd
    if (own_fd_ && file >= 0) ::close(file);
}

const uint8_t* CaptureReader::fetch(uint64_t pos, size_t n, uint64_t upto) {
    if (pos >= buf_off_ && pos + n <= buf_off_ + buf_len_) return buf_.get() + (pos - buf_off_);
    if (z_ && !z_->inflated) {
        const uint8_t* p = fetch_compressed(pos, n);
        if (p || !z_->inflated) return p;
        // Now inflated: read the memfd like a file.
    }
    // Read what the caller will want (to `upto`, at least n), no more than
    // kBufferBytes unless one record is larger: a block chosen by the index
    // costs one read of its size.
    size_t want = kBufferBytes;
    if (upto > pos && upto - pos < want) want = size_t(upto - pos);
    want = std::max(want, n);
    if (buf_cap_ < want) {
        buf_.reset(new uint8_t[want]);
        buf_cap_ = want;
    }
    buf_off_ = pos;
    buf_len_ = 0;
    while (buf_len_ < want) {
        ssize_t r = pread(fd_, buf_.get() + buf_len_, want - buf_len_, off_t(pos + buf_len_));
        if (r < 0) {
            if (errno == EINTR) continue;
            io_errno_ = errno;
            buf_len_ = 0;
            return nullptr;
        }
        if (r == 0) break;
        buf_len_ += size_t(r);
    }
    // The next window of what the caller will read starts coming from the
    // disk while this one is parsed: a cold read then overlaps the disk and
    // the filter instead of taking their sum.
    if (window_read_ahead_ && buf_len_ == want && upto > pos + want)
        will_need(pos + want, std::min<uint64_t>(upto, pos + want + kBufferBytes));
    return buf_len_ >= n ? buf_.get() : nullptr;
}

void CaptureReader::will_need(uint64_t begin, uint64_t end) const {
    if (fd_ < 0 || end <= begin) return;
    (void)posix_fadvise(fd_, off_t(begin), off_t(end - begin), POSIX_FADV_WILLNEED);
}

Result<CaptureReader> CaptureReader::open_fd(int fd, const std::string& name) {
    CaptureReader rd;
    rd.fd_ = fd;
    rd.name_ = name;
    struct stat st;
    if (fstat(fd, &st) != 0) return make_error(errno, name + ": " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) return make_error(EISDIR, name + ": is a directory");
    rd.info_.size = static_cast<uint64_t>(st.st_size);
    auto not_capture = [&]() { return make_error(EINVAL, name + ": not a pcap or pcapng file"); };
    // A compressed file: the stream's first piece holds the header.
    uint8_t magic4[4];
    if (pread(fd, magic4, 4, 0) == 4) {
        Codec c = sniff_codec(magic4, 4);
        if (c != Codec::kNone) {
            rd.z_ = std::make_unique<Compressed>();
            rd.z_->codec = c;
            rd.z_->file_fd = fd;
            std::string head;
            Status ds = decompress_stream(fd, c, [&](const uint8_t* q, size_t k) {
                head.append(reinterpret_cast<const char*>(q), k);
                return head.size() < (64u << 10);
            });
            if (!ds && head.empty()) return make_error(EINVAL, name + ": " + ds.error());
            rd.buf_.reset(new uint8_t[head.size() + 1]);
            rd.buf_cap_ = head.size() + 1;
            std::memcpy(rd.buf_.get(), head.data(), head.size());
            rd.buf_off_ = 0;
            rd.buf_len_ = head.size();
        }
    }
    const uint8_t* p = rd.fetch(0, 24, 64 << 10);
    if (!p) {
        if (rd.io_errno_) return make_error(rd.io_errno_, name + ": " + rd.io_text());
        return not_capture();
    }
    uint32_t magic;
    std::memcpy(&magic, p, 4);
    CaptureInfo& info = rd.info_;
    switch (magic) {
        case 0xa1b2c3d4: info.format = CaptureFormat::kPcapMicro; break;
        case 0xa1b23c4d: info.format = CaptureFormat::kPcapNano; break;
        case 0xd4c3b2a1:
            info.format = CaptureFormat::kPcapMicro;
            info.swapped = true;
            break;
        case 0x4d3cb2a1:
            info.format = CaptureFormat::kPcapNano;
            info.swapped = true;
            break;
        case kPcapngShb: info.format = CaptureFormat::kPcapng; break;
        default: return not_capture();
    }
    if (info.format != CaptureFormat::kPcapng) {
        bool sw = info.swapped;
        uint16_t major = rd16(p + 4, sw), minor = rd16(p + 6, sw);
        if (major < 2) return not_capture();
        // Old writers put caplen and len the other way round (libpcap's rule).
        if ((major == 2 && minor < 3) || major == 543)
            rd.lengths_swapped_ = 2;
        else if (major == 2 && minor == 3)
            rd.lengths_swapped_ = 1;
        CaptureInterface i;
        i.linktype = static_cast<uint16_t>(rd32(p + 20, sw) & 0x03ffffff);
        i.snaplen = adjust_snaplen(i.linktype, rd32(p + 16, sw));
        i.ts_per_sec = info.format == CaptureFormat::kPcapNano ? 1000000000 : 1000000;
        i.ts_unit_ns = info.format == CaptureFormat::kPcapNano ? 1 : 1000;
        info.interfaces.push_back(i);
        info.data_start = 24;
        return rd;
    }

    // pcapng: the section header, then the blocks before the first packet.
    if (!(p = rd.fetch(0, 28, 64 << 10))) return not_capture();
    uint32_t bom;
    std::memcpy(&bom, p + 8, 4);
    if (bom == kByteOrderMagic)
        info.swapped = false;
    else if (bom == bswap(kByteOrderMagic))
        info.swapped = true;
    else
        return not_capture();
    bool sw = info.swapped;
    uint32_t shb_len = rd32(p + 4, sw);
    if (rd16(p + 12, sw) != 1 || shb_len < 28 || shb_len % 4 != 0 || shb_len > kMaxCaplen)
        return not_capture();
    if (!(p = rd.fetch(0, shb_len, 64 << 10)) || rd32(p + shb_len - 4, sw) != shb_len)
        return not_capture();
    uint64_t pos = shb_len;
    for (;;) {
        if (!(p = rd.fetch(pos, 8, pos + (64 << 10)))) break;
        uint32_t type = rd32(p, sw), len = rd32(p + 4, sw);
        if (type == 2 || type == 3 || type == 6 || type == kPcapngShb) break;
        if (len < 12 || len % 4 != 0 || len > kMaxCaplen) break;
        if (!(p = rd.fetch(pos, len, pos + len)) || rd32(p + len - 4, sw) != len) break;
        if (type == 1) {
            CaptureInterface i;
            if (!parse_idb(p + 8, len - 12, sw, i)) break;
            info.interfaces.push_back(i);
        }
        pos += len;
    }
    if (rd.io_errno_) return make_error(rd.io_errno_, name + ": " + rd.io_text());
    info.data_start = pos;
    rd.leading_interfaces_ = info.interfaces.size();
    return rd;
}

int CaptureReader::pcap_record(uint64_t pos, uint64_t upto, Record& rec) {
    bool sw = info_.swapped;
    const uint8_t* p = fetch(pos, 16, upto);
    if (!p) return 0;
    uint32_t sec = rd32(p, sw), frac = rd32(p + 4, sw);
    uint32_t caplen = rd32(p + 8, sw), wirelen = rd32(p + 12, sw);
    if (lengths_swapped_ == 2 || (lengths_swapped_ == 1 && caplen > wirelen))
        std::swap(caplen, wirelen);
    const CaptureInterface& i = info_.interfaces[0];
    if (caplen > kMaxCaplen || caplen > uint64_t(wirelen) + kMaxCaplen) return 0;
    if (caplen > max_snaplen_for(i.linktype)) return 0;  // libpcap refuses it
    // Do not grow the buffer for a record the file cannot hold.
    if (caplen > kBufferBytes) {
        struct stat st;
        if (fstat(fd_, &st) != 0 || uint64_t(st.st_size) < pos + 16 + caplen) return 0;
    }
    if (!(p = fetch(pos, 16 + size_t(caplen), upto))) return 0;
    rec.offset = pos;
    rec.rec_bytes = 16 + caplen;
    rec.if_id = 0;
    // Seconds and fraction are signed 32-bit fields to libpcap.
    int64_t s = int32_t(sec), f = int32_t(frac);
    rec.ts_ns = uint64_t(s * 1000000000 + f * int64_t(i.ts_unit_ns));
    // A record longer than the file's snapshot length is cut to it, as
    // libpcap does.
    rec.caplen = std::min(caplen, i.snaplen);
    rec.wirelen = wirelen;
    rec.data = p + 16;
    return 1;
}

int CaptureReader::pcapng_block(uint64_t pos, uint64_t upto, Record& rec) {
    bool sw = info_.swapped;
    const uint8_t* p = fetch(pos, 12, upto);
    if (!p) return 0;
    uint32_t type = rd32(p, sw), len = rd32(p + 4, sw);
    if (len < 12 || len % 4 != 0 || len > kMaxCaplen + 64) return 0;
    if (len > kBufferBytes) {
        struct stat st;
        if (fstat(fd_, &st) != 0 || uint64_t(st.st_size) < pos + len) return 0;
    }
    if (!(p = fetch(pos, len, upto))) return 0;
    if (rd32(p + len - 4, sw) != len) return 0;
    uint32_t body = len - 12;  // between the length fields
    const uint8_t* b = p + 8;
    uint32_t if_id = 0, caplen = 0, wirelen = 0, hdr = 0;
    uint64_t ticks = 0;
    switch (type) {
        case 6:  // enhanced packet block
        case 2:  // obsolete packet block
            if (body < 20) return 0;
            if_id = type == 6 ? rd32(b, sw) : rd16(b, sw);
            ticks = uint64_t(rd32(b + 4, sw)) << 32 | rd32(b + 8, sw);
            caplen = rd32(b + 12, sw);
            wirelen = rd32(b + 16, sw);
            hdr = 20;
            if (caplen > body - hdr) return 0;
            break;
        case 3:  // simple packet block: interface 0, no time stamp
            if (body < 4) return 0;
            if (info_.interfaces.empty()) return 0;
            wirelen = rd32(b, sw);
            caplen = std::min(wirelen, info_.interfaces[0].snaplen);
            hdr = 4;
            if (caplen > body - hdr) return 0;
            break;
        case 1: {
            CaptureInterface i;
            if (!parse_idb(b, body, sw, i)) return 0;
            info_.interfaces.push_back(i);
            if (pos >= info_.data_start) sequential_ = true;
            rec.offset = pos;
            rec.rec_bytes = len;
            return 2;
        }
        case kPcapngShb: {
            // A new section: its own interfaces. libpcap stops at one of
            // the other byte order or another major version; so do we.
            if (body < 16 || rd32(b, sw) != kByteOrderMagic || rd16(b + 4, sw) != 1) return 0;
            info_.interfaces.clear();
            sequential_ = true;
            rec.offset = pos;
            rec.rec_bytes = len;
            return 2;
        }
        default:
            rec.offset = pos;
            rec.rec_bytes = len;
            return 2;
    }
    if (if_id >= info_.interfaces.size()) return 0;
    const CaptureInterface& i = info_.interfaces[if_id];
    if (caplen > i.snaplen) return 0;  // libpcap refuses it
    rec.offset = pos;
    rec.rec_bytes = len;
    rec.if_id = if_id;
    rec.ts_ns = type == 3 ? uint64_t(i.ts_offset_s) * 1000000000u : pcapng_ns(i, ticks);
    rec.caplen = caplen;
    rec.wirelen = wirelen;
    rec.data = b + hdr;
    return 1;
}

Result<uint64_t> CaptureReader::for_each(uint64_t begin, uint64_t end,
                                         const std::function<bool(const Record&)>& fn) {
    if (info_.format == CaptureFormat::kPcapng && begin <= info_.data_start) {
        // From the start again: the interfaces met on an earlier pass go.
        info_.interfaces.resize(std::min(info_.interfaces.size(), leading_interfaces_));
    }
    io_errno_ = 0;
    uint64_t pos = begin;
    Record rec;
    bool ng = info_.format == CaptureFormat::kPcapng;
    while (pos < end) {
        int r = ng ? pcapng_block(pos, end, rec) : pcap_record(pos, end, rec);
        if (r == 0) break;
        pos += rec.rec_bytes;
        if (r == 1 && !fn(rec)) break;
    }
    if (io_errno_) return make_error(io_errno_, name_ + ": " + io_text());
    return pos;
}

}  // namespace linecap::index
