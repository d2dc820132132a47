/* Reading pcap and pcapng files for the offline diagnosis (control side).
 *
 * CaptureFile owns a libpcap handle opened with nanosecond precision. Its
 * errors are sentences a person can act on: "x.pcap: empty file (0 bytes)",
 * "x.pcap: not a pcap or pcapng capture (starts with 50 4b 03 04: a zip
 * archive)", "x.pcapng: interfaces with different link types ...". One
 * thread uses a CaptureFile at a time.
 */
#pragma once

#include <cstdint>
#include <string>

#include "common/result.hh"

struct pcap;

namespace linecap::ctl::diag {

struct RawPacket {
    uint64_t ts_ns = 0;
    uint32_t caplen = 0;
    uint32_t wirelen = 0;
    const uint8_t* data = nullptr; /* valid until the next call to next() */
    uint32_t frame = 0;            /* 1-based, as Wireshark numbers frames */
};

enum class ReadStatus : uint8_t {
    kPacket,
    kEnd,
    kTruncated, /* the file ends inside a record: what came before is good */
    kError,     /* a read or format error; error() says which */
};

class CaptureFile {
public:
    /* Opens path. Fails with a message naming the file for a missing or
     * unreadable file, an empty file, or a file that is not a capture. */
    static Result<CaptureFile> open(const std::string& path);

    CaptureFile(CaptureFile&& o) noexcept;
    CaptureFile& operator=(CaptureFile&& o) noexcept;
    CaptureFile(const CaptureFile&) = delete;
    CaptureFile& operator=(const CaptureFile&) = delete;
    ~CaptureFile();

    const std::string& path() const { return path_; }
    bool pcapng() const { return pcapng_; }
    int linktype() const { return linktype_; }
    /* "EN10MB", "LINUX_SLL2", or the number when libpcap has no name. */
    std::string linktype_name() const;
    uint32_t frames() const { return frame_; }

    /* Reads the next record into out. After kTruncated or kError, error()
     * holds the message and further calls return kEnd. */
    ReadStatus next(RawPacket& out);
    const std::string& error() const { return error_; }

private:
    CaptureFile() = default;

    struct pcap* handle_ = nullptr;
    std::string path_;
    std::string error_;
    int linktype_ = 0;
    bool pcapng_ = false;
    bool done_ = false;
    uint32_t frame_ = 0;
};

/* Name of a DLT_ value, e.g. "EN10MB (1)". */
std::string linktype_label(int linktype);

}  // namespace linecap::ctl::diag
