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
 * its buffer; the descriptor is the caller's. One thread.
 */
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hh"

namespace linecap::query {

enum class OutFormat { kPcap, kPcapng };

class CaptureOutput {
public:
    CaptureOutput(int fd, OutFormat format, bool nano, uint16_t linktype, uint32_t snaplen);

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

private:
    Status put(const void* p, size_t n);
    Status flush();

    int fd_;
    OutFormat format_;
    bool nano_;
    uint16_t linktype_;
    uint32_t snaplen_;
    std::vector<uint8_t> buf_;
    std::map<std::pair<uint16_t, uint32_t>, uint32_t> ifs_;
    uint64_t packets_ = 0;
};

}  // namespace linecap::query
