#include "storage/recover.hh"

#include "index/codec.hh"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "storage/safe_files.hh"

namespace linecap::storage {
namespace {

// Larger than any record capd writes (snaplen 262144 plus its header); a
// length field past it is damage, not a record.
constexpr uint32_t kMaxRecord = 16u << 20;
constexpr uint32_t kPcapngShb = 0x0a0d0d0a;

/* Reads the file through one window, so that a walk of a large file costs
 * one read per window, not one per record. */
class Window {
public:
    Window(int fd, uint64_t size)
        : fd_(fd),
          size_(size),
          buf_(static_cast<size_t>(std::min<uint64_t>(size, kMaxRecord + 4096))) {}

    /* The bytes [off, off + len), or null if they are not all in the file. */
    const uint8_t* at(uint64_t off, uint32_t len) {
        if (len > buf_.size() || off + len > size_ || off + len < off) return nullptr;
        if (off < start_ || off + len > start_ + have_) {
            size_t want = static_cast<size_t>(std::min<uint64_t>(buf_.size(), size_ - off));
            size_t got = 0;
            while (got < want) {
                ssize_t r =
                    ::pread(fd_, buf_.data() + got, want - got, static_cast<off_t>(off + got));
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) break;
                got += static_cast<size_t>(r);
            }
            start_ = off;
            have_ = got;
            if (len > have_) return nullptr;
        }
        return buf_.data() + (off - start_);
    }

private:
    int fd_;
    uint64_t size_;
    std::vector<uint8_t> buf_;
    uint64_t start_ = 0;
    size_t have_ = 0;
};

uint32_t load32(const uint8_t* p, bool swap) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

RecordScan scan_pcap(Window& w, const uint8_t* hdr) {
    RecordScan s;
    uint32_t magic;
    std::memcpy(&magic, hdr, 4);
    bool swap = magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1;
    bool nano = magic == 0xa1b23c4d || magic == 0x4d3cb2a1;
    uint32_t snaplen = load32(hdr + 16, swap);
    if (snaplen == 0 || snaplen > kMaxRecord) snaplen = kMaxRecord;
    s.capture = true;
    s.end = 24;
    uint32_t frac_limit = nano ? 1000000000u : 1000000u;
    for (;;) {
        const uint8_t* r = w.at(s.end, 16);
        if (!r) break;
        uint32_t sec = load32(r, swap), frac = load32(r + 4, swap);
        uint32_t caplen = load32(r + 8, swap), wirelen = load32(r + 12, swap);
        // (A wire length below the captured one is carried from damaged input.)
        if (frac >= frac_limit || caplen > snaplen) break;
        if (sec == 0 && frac == 0 && caplen == 0 && wirelen == 0) break;  // zeros
        if (!w.at(s.end + 16, caplen)) break;                             // cut short
        s.end += 16 + caplen;
        s.packets++;
    }
    return s;
}

RecordScan scan_pcapng(Window& w, const uint8_t* shb) {
    RecordScan s;
    uint32_t bom;
    std::memcpy(&bom, shb + 8, 4);
    if (bom != 0x1a2b3c4d && bom != 0x4d3c2b1a) return s;
    bool swap = bom == 0x4d3c2b1a;
    s.capture = true;
    uint64_t off = 0;
    for (;;) {
        const uint8_t* b = w.at(off, 12);
        if (!b) break;
        uint32_t type = load32(b, swap), len = load32(b + 4, swap);
        if (type == 0 || len < 12 || len % 4 != 0 || len > kMaxRecord) break;
        // A new section may change the byte order; capd never writes one.
        if (type == kPcapngShb && off != 0) break;
        const uint8_t* whole = w.at(off, len);
        if (!whole || load32(whole + len - 4, swap) != len) break;
        if (type == 6 && (len < 32 || load32(whole + 20, swap) > len - 32)) break;
        if (type == 6 || type == 3 || type == 2) s.packets++;
        off += len;
        s.end = off;
    }
    return s;
}

std::string utc_stamp(time_t t) {
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[32];
    strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
    return buf;
}

/* Renames without replacing: renameat2 NOREPLACE, or link and unlink where
 * the file system lacks it. */
int rename_noreplace(int dir, const std::string& from, const std::string& to) {
    if (::renameat2(dir, from.c_str(), dir, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    if (::linkat(dir, from.c_str(), dir, to.c_str(), 0) != 0) return -1;
    return ::unlinkat(dir, from.c_str(), 0);
}

}  // namespace

RecordScan scan_records(int fd, uint64_t size) {
    Window w(fd, size);
    const uint8_t* hdr = w.at(0, 24);
    if (!hdr) return {};
    uint32_t magic;
    std::memcpy(&magic, hdr, 4);
    switch (magic) {
        case 0xa1b2c3d4:
        case 0xd4c3b2a1:
        case 0xa1b23c4d:
        case 0x4d3cb2a1: return scan_pcap(w, hdr);
        case kPcapngShb: return scan_pcapng(w, hdr);
        default: break;
    }
    // capd --compress: a stream of frames; whole up to its last whole frame.
    index::Codec c = index::sniff_codec(hdr, 24);
    if (c == index::Codec::kNone) return {};
    RecordScan r;
    std::string head;
    uint64_t total = 0, end = 0;
    Status s = index::decompress_stream(
        fd, c,
        [&](const uint8_t* p, size_t n) {
            if (head.size() < 24)
                head.append(reinterpret_cast<const char*>(p), std::min<size_t>(n, 24));
            total += n;
            return true;
        },
        nullptr, &end);
    (void)s;  // damaged past some frame: keep the frames before it
    if (head.size() < 4) return {};
    std::memcpy(&magic, head.data(), 4);
    if (magic != 0xa1b2c3d4 && magic != 0xa1b23c4d && magic != kPcapngShb) return {};
    r.capture = true;
    r.end = std::min(end, size);
    r.frames = true;
    // The header is a frame of its own: any more is records.
    r.packets = total > head.size() && r.end > 0 ? 1 : 0;
    return r;
}

std::string recovered_name(const std::string& final_leaf, time_t t, unsigned k) {
    std::string mark = ".recovered-" + utc_stamp(t) + (k ? "-" + std::to_string(k) : "");
    size_t dot = final_leaf.rfind('.');
    if (dot == std::string::npos || dot == 0) return final_leaf + mark;
    return final_leaf.substr(0, dot) + mark + final_leaf.substr(dot);
}

std::string recovered_from(const std::string& leaf) {
    static const std::string kMark = ".recovered-";
    size_t at = leaf.rfind(kMark);
    if (at == std::string::npos || at == 0 || leaf[0] == '.') return {};
    // YYYYmmddTHHMMSSZ, then -k for k > 0.
    size_t p = at + kMark.size();
    auto digits = [&](size_t n) {
        for (size_t end = p + n; p < end; p++)
            if (p >= leaf.size() || !std::isdigit(static_cast<unsigned char>(leaf[p])))
                return false;
        return true;
    };
    auto is = [&](char c) { return p < leaf.size() && leaf[p++] == c; };
    if (!digits(8) || !is('T') || !digits(6) || !is('Z')) return {};
    if (p < leaf.size() && leaf[p] == '-') {
        p++;
        if (p >= leaf.size() || leaf[p] < '1' || leaf[p] > '9') return {};
        while (p < leaf.size() && std::isdigit(static_cast<unsigned char>(leaf[p]))) p++;
    }
    // The mark stands before NAME's last extension, or last when NAME has
    // none.
    std::string ext = leaf.substr(p);
    if (!ext.empty() && (ext[0] != '.' || ext.find('.', 1) != std::string::npos)) return {};
    std::string name = leaf.substr(0, at) + ext;
    if (ext.empty() && name.rfind('.') != std::string::npos) return {};
    return name;
}

Recovery recover_hidden(int dir, const std::string& hidden_leaf, const std::string& final_leaf,
                        uid_t owner) {
    Recovery out;
    struct stat st;
    if (fstatat(dir, hidden_leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return out;
    auto left = [&](const std::string& why) {
        out.what = Recovery::What::kLeft;
        out.message = hidden_leaf + ": left alone: " + why;
        return out;
    };
    std::string foreign = foreign_entry(st, owner);
    if (!foreign.empty()) return left(foreign + ", not a file capd wrote");
    FileId id = file_id(st);
    int fd = open_own_file(dir, hidden_leaf, O_RDWR, owner, &id);
    if (fd < 0) return left(std::string("cannot open it: ") + std::strerror(errno));
    // The lock the writing FileSet holds: a live capd's file is not stale.
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return left("another process is writing it");
    }
    RecordScan scan = scan_records(fd, static_cast<uint64_t>(st.st_size));
    if (!scan.capture) {
        bool empty = st.st_size == 0;
        if (!empty) {
            // An unused --preallocate spare on tmpfs is zeros.
            uint8_t head[4096];
            ssize_t n = ::pread(fd, head, sizeof(head), 0);
            empty = n > 0 && std::all_of(head, head + n, [](uint8_t b) { return b == 0; });
        }
        ::close(fd);
        if (!empty) return left("it does not start with a pcap or pcapng header");
        if (remove_entry(dir, hidden_leaf) != 0)
            return left(std::string("cannot remove it: ") + std::strerror(errno));
        out.what = Recovery::What::kSpare;
        out.message = hidden_leaf + ": removed: empty, left by a run that did not finish";
        return out;
    }
    if (scan.packets == 0) {
        ::close(fd);
        if (remove_entry(dir, hidden_leaf) != 0)
            return left(std::string("cannot remove it: ") + std::strerror(errno));
        out.what = Recovery::What::kRemoved;
        out.message = hidden_leaf + ": removed: no whole packet, left by a run that did not finish";
        return out;
    }
    uint64_t cut = static_cast<uint64_t>(st.st_size) - scan.end;
    if (cut > 0 && ftruncate(fd, static_cast<off_t>(scan.end)) != 0) {
        int err = errno;
        ::close(fd);
        return left(std::string("cannot cut it to its last whole record: ") + std::strerror(err));
    }
    // The cut made its modification time now; it is the killed run's last
    // write again, by which retention orders and ages the file.
    if (cut > 0) {
        const struct timespec times[2] = {{0, UTIME_OMIT}, st.st_mtim};
        (void)futimens(fd, times);
    }
    std::string name;
    int rc = -1;
    for (unsigned k = 0; k < 1000; k++) {
        name = recovered_name(final_leaf, st.st_mtime, k);
        rc = rename_noreplace(dir, hidden_leaf, name);
        if (rc == 0 || errno != EEXIST) break;
    }
    int err = errno;
    ::close(fd);  // after the rename: the lock covers it
    if (rc != 0) return left(std::string("cannot name it: ") + std::strerror(err));
    out.what = Recovery::What::kRecovered;
    out.published = name;
    char tail[96] = "";
    if (cut > 0)
        snprintf(tail, sizeof(tail), ", %llu bytes of a cut or older tail dropped",
                 static_cast<unsigned long long>(cut));
    out.message = hidden_leaf + ": left by a run that did not finish: recovered as " + name + " (" +
                  (scan.frames ? std::string("compressed, to its last whole frame")
                               : std::to_string(scan.packets) + " packets") +
                  tail + ")";
    return out;
}

}  // namespace linecap::storage
