/* capq's output: one pcap or pcapng stream, written with large writes.
 *
 * pcap: one link type (the caller checks the inputs agree), the snap length
 * given, nanosecond magic when `nano`, else microseconds (timestamps cut to
 * the microsecond, as libpcap does). pcapng: one section, an interface
 * block per distinct (link type, snap length) added as they are first
 * needed (interface()), if_tsresol 9.
 *
 * Buffered in 1 MiB; write errors come back from write()/finish() with
 * their errno (EPIPE when the reader of a pipe went away). Owns nothing but
 * its buffer; the descriptor (or sink) is the caller's. One thread.
 *
 * OutFile is capq's -w: a regular file written under a hidden name beside
 * OUT and renamed over it when whole; a device, pipe, socket or the file a
 * symbolic link names written in place; stdout when no path is given.
 */
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hh"

namespace linecap::query {

enum class OutFormat { kPcap, kPcapng };

class CaptureOutput {
public:
    /* Takes the buffered bytes; called from flush() (every 1 MiB and at
     * finish()). */
    using Sink = std::function<Status(const uint8_t* p, size_t n)>;

    CaptureOutput(int fd, OutFormat format, bool nano, uint16_t linktype, uint32_t snaplen);
    CaptureOutput(Sink sink, OutFormat format, bool nano, uint16_t linktype, uint32_t snaplen);

    /* Writes the file header. */
    Status start();
    /* pcapng: the interface id for (linktype, snaplen), writing its block
     * the first time; pcap: 0. */
    Result<uint32_t> interface(uint16_t linktype, uint32_t snaplen);
    Status packet(uint32_t out_if, uint64_t ts_ns, const uint8_t* data, uint32_t caplen,
                  uint32_t wirelen);
    /* Writes what is buffered. */
    Status finish();
    uint64_t packets() const { return packets_; }
    /* Bytes of the stream so far (header, blocks, records), flushed or not. */
    uint64_t bytes() const { return bytes_; }
    /* What packet() would add to bytes() for a record of caplen bytes. */
    uint64_t record_bytes(uint32_t caplen) const;

private:
    Status put(const void* p, size_t n);
    Status flush();

    int fd_ = -1;
    Sink sink_;
    OutFormat format_;
    bool nano_;
    uint16_t linktype_;
    uint32_t snaplen_;
    std::vector<uint8_t> buf_;
    std::map<std::pair<uint16_t, uint32_t>, uint32_t> ifs_;
    uint64_t packets_ = 0;
    uint64_t bytes_ = 0;
};

struct OutFile {
    int fd = 1;           // stdout until open()
    bool direct = false;  // written in place (not a regular file)
    std::string final_path, tmp_path;
    OutFile() = default;
    OutFile(const OutFile&) = delete;
    OutFile& operator=(const OutFile&) = delete;
    ~OutFile();
    Status open(const std::string& path);
    /* fsyncs and renames the hidden file over OUT. */
    Status commit();
};

}  // namespace linecap::query
