#include "ctl/diag/capture_file.hh"

#include <pcap/pcap.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace linecap::ctl::diag {

namespace {

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

/* What the first bytes of a file that libpcap rejects look like. */
std::string describe_magic(const uint8_t* b, size_t n) {
    std::string what = "starts with";
    for (size_t i = 0; i < n && i < 4; i++) {
        char hex[4];
        std::snprintf(hex, sizeof hex, " %02x", b[i]);
        what += hex;
    }
    if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) return what + ": gzip data; gunzip it first";
    if (n >= 3 && b[0] == 'B' && b[1] == 'Z' && b[2] == 'h') return what + ": bzip2 data";
    if (n >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd) {
        return what + ": zstd data";
    }
    if (n >= 2 && b[0] == 'P' && b[1] == 'K') return what + ": a zip archive";
    bool text = true;
    for (size_t i = 0; i < n; i++) {
        if (b[i] < 0x09 || (b[i] > 0x0d && b[i] < 0x20 && b[i] != 0x1b)) text = false;
    }
    if (text) return what + ": looks like text";
    return what;
}

}  // namespace

std::string linktype_label(int lt) {
    const char* name = pcap_datalink_val_to_name(lt);
    if (name == nullptr) return "link type " + std::to_string(lt);
    return std::string(name) + " (" + std::to_string(lt) + ")";
}

Result<CaptureFile> CaptureFile::open(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return make_error(path + ": " + std::strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) return make_error(path + ": is a directory, not a capture file");
    if (S_ISREG(st.st_mode) && st.st_size == 0) {
        return make_error(path + ": empty file (0 bytes), not a capture");
    }
    uint8_t head[16] = {};
    size_t head_len = 0;
    if (FILE* f = std::fopen(path.c_str(), "rbe")) {
        head_len = std::fread(head, 1, sizeof head, f);
        std::fclose(f);
    } else {
        return make_error(path + ": " + std::strerror(errno));
    }

    char errbuf[PCAP_ERRBUF_SIZE] = "";
    pcap_t* p =
        pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, errbuf);
    if (p == nullptr) {
        std::string msg = errbuf;
        if (contains(msg, "unknown file format")) {
            return make_error(path + ": not a pcap or pcapng capture (" +
                              describe_magic(head, head_len) + ")");
        }
        if (contains(msg, "truncated dump file") && contains(msg, "header")) {
            return make_error(path + ": truncated inside the file header (" +
                              std::to_string(st.st_size) + (st.st_size == 1 ? " byte" : " bytes") +
                              "): not a complete capture");
        }
        return make_error(path + ": " + msg);
    }
    CaptureFile c;
    c.handle_ = p;
    c.path_ = path;
    c.linktype_ = pcap_datalink(p);
    c.pcapng_ =
        head_len >= 4 && head[0] == 0x0a && head[1] == 0x0d && head[2] == 0x0d && head[3] == 0x0a;
    return c;
}

CaptureFile::CaptureFile(CaptureFile&& o) noexcept
    : handle_(std::exchange(o.handle_, nullptr)),
      path_(std::move(o.path_)),
      error_(std::move(o.error_)),
      linktype_(o.linktype_),
      pcapng_(o.pcapng_),
      done_(o.done_),
      frame_(o.frame_) {}

CaptureFile& CaptureFile::operator=(CaptureFile&& o) noexcept {
    if (this != &o) {
        if (handle_ != nullptr) pcap_close(handle_);
        handle_ = std::exchange(o.handle_, nullptr);
        path_ = std::move(o.path_);
        error_ = std::move(o.error_);
        linktype_ = o.linktype_;
        pcapng_ = o.pcapng_;
        done_ = o.done_;
        frame_ = o.frame_;
    }
    return *this;
}

CaptureFile::~CaptureFile() {
    if (handle_ != nullptr) pcap_close(handle_);
}

std::string CaptureFile::linktype_name() const { return linktype_label(linktype_); }

ReadStatus CaptureFile::next(RawPacket& out) {
    if (done_ || handle_ == nullptr) return ReadStatus::kEnd;
    struct pcap_pkthdr* h = nullptr;
    const u_char* data = nullptr;
    int rc = pcap_next_ex(handle_, &h, &data);
    if (rc == 1) {
        frame_++;
        out.ts_ns = static_cast<uint64_t>(h->ts.tv_sec) * 1000000000ull +
                    static_cast<uint64_t>(h->ts.tv_usec);
        out.caplen = h->caplen;
        out.wirelen = h->len;
        out.data = data;
        out.frame = frame_;
        return ReadStatus::kPacket;
    }
    done_ = true;
    if (rc == PCAP_ERROR_BREAK) return ReadStatus::kEnd;
    std::string msg = pcap_geterr(handle_);
    std::string after = "after frame " + std::to_string(frame_);
    if (contains(msg, "truncated dump file") || contains(msg, "truncated pcapng")) {
        error_ = path_ + ": truncated " + after + " (the last record is cut short: " + msg + "); " +
                 (frame_ == 1 ? std::string("the 1 complete frame was analysed")
                              : "the " + std::to_string(frame_) + " complete frames were analysed");
        return ReadStatus::kTruncated;
    }
    if (contains(msg, "different from the type of the first interface")) {
        error_ = path_ + ": pcapng interfaces with different link types (" + msg + ", " + after +
                 "); libpcap reads only files whose interfaces share one link type: split the "
                 "file per interface (e.g. tshark -r FILE -Y frame.interface_id==N -w OUT)";
        return ReadStatus::kError;
    }
    if (contains(msg, "snapshot length")) {
        error_ = path_ + ": pcapng interfaces with different snapshot lengths (" + msg + ", " +
                 after +
                 "); libpcap cannot read such a file: convert it to pcap first "
                 "(editcap -F pcap FILE OUT)";
        return ReadStatus::kError;
    }
    error_ = path_ + ": read error " + after + ": " + msg;
    return ReadStatus::kError;
}

}  // namespace linecap::ctl::diag
