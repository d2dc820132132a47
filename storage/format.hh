/* Capture file formats: pcap (micro- or nanosecond) and pcapng.
 *
 * Record encoding is split into a header and a trailer around the packet
 * bytes, so that a worker can copy a (possibly segmented) packet straight into
 * a chunk while it is hot in its cache. Everything here is plain
 * little-endian-host byte layout (the format's own convention: readers detect
 * byte order from the magic). Functions marked "hot" never allocate.
 */
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>

namespace linecap::storage {

enum class Format : uint8_t {
    kPcapMicro,  // classic pcap, microsecond timestamps (tcpdump's default)
    kPcapNano,   // classic pcap, nanosecond timestamps (magic 0xa1b23c4d)
    kPcapng,     // pcapng, nanosecond timestamps (if_tsresol = 9)
};

/* One capture interface as written in pcap/pcapng headers. */
struct InterfaceDesc {
    std::string name;       // e.g. "pcap:in.pcap" or "0000:01:00.0"
    std::string filter;     // filter text, may be empty
    uint16_t linktype = 1;  // DLT_EN10MB
    uint32_t snaplen = 262144;
};

/* Per-interface counters for the pcapng interface statistics block. */
struct InterfaceCounters {
    uint64_t received = 0;  // isb_ifrecv
    uint64_t dropped = 0;   // isb_ifdrop (NIC and linecap drops)
    uint64_t accepted = 0;  // isb_filteraccept: passed the filter
};

/* Largest overhead a record adds to the packet bytes. */
inline constexpr uint32_t kMaxRecordOverhead = 36;

/* Bytes the record for a caplen-byte packet takes. Hot. */
inline uint32_t record_size(Format f, uint32_t caplen) {
    if (f == Format::kPcapng) return 28 + ((caplen + 3u) & ~3u) + 4;
    return 16 + caplen;
}

/* A timestamp split into the pcap header's seconds and fraction, kept from
 * one record to the next: every packet of a burst shares one timestamp, so
 * the divisions run once per burst instead of once per packet. */
struct TsSplit {
    uint64_t ns = ~0ull;
    uint32_t sec = 0, frac_ns = 0;
    void set(uint64_t ts_ns) {
        if (ts_ns == ns) return;
        ns = ts_ns;
        sec = static_cast<uint32_t>(ts_ns / 1000000000u);
        frac_ns = static_cast<uint32_t>(ts_ns % 1000000000u);
    }
};

/* Writes the record header for one packet at dst; returns its size. Hot.
 * `split` caches the last timestamp's seconds and fraction. */
inline uint32_t encode_record_header(Format f, uint8_t* dst, uint64_t ts_ns, uint32_t if_id,
                                     uint32_t caplen, uint32_t wirelen, TsSplit& split) {
    if (f == Format::kPcapng) {
        uint32_t h[7];
        h[0] = 0x00000006;  // enhanced packet block
        h[1] = record_size(f, caplen);
        h[2] = if_id;
        h[3] = static_cast<uint32_t>(ts_ns >> 32);
        h[4] = static_cast<uint32_t>(ts_ns);
        h[5] = caplen;
        h[6] = wirelen;
        std::memcpy(dst, h, sizeof(h));
        return sizeof(h);
    }
    split.set(ts_ns);
    uint32_t h[4];
    h[0] = split.sec;
    h[1] = f == Format::kPcapNano ? split.frac_ns : split.frac_ns / 1000u;
    h[2] = caplen;
    h[3] = wirelen;
    std::memcpy(dst, h, sizeof(h));
    return sizeof(h);
}

inline uint32_t encode_record_header(Format f, uint8_t* dst, uint64_t ts_ns, uint32_t if_id,
                                     uint32_t caplen, uint32_t wirelen) {
    TsSplit split;
    return encode_record_header(f, dst, ts_ns, if_id, caplen, wirelen, split);
}

/* Writes what follows the packet bytes (pcapng padding and trailing length);
 * returns its size. Hot. */
inline uint32_t encode_record_trailer(Format f, uint8_t* dst, uint32_t caplen) {
    if (f != Format::kPcapng) return 0;
    uint32_t pad = ((caplen + 3u) & ~3u) - caplen;
    std::memset(dst, 0, pad);
    uint32_t total = record_size(f, caplen);
    std::memcpy(dst + pad, &total, 4);
    return pad + 4;
}

/* Size of the record starting at p (as produced by this encoder), for walking
 * a chunk record by record. */
inline uint32_t record_length(Format f, const uint8_t* p) {
    uint32_t v;
    if (f == Format::kPcapng) {
        std::memcpy(&v, p + 4, 4);
        return v;
    }
    std::memcpy(&v, p + 8, 4);
    return 16 + v;
}

/* The bytes that open a file: the pcap global header (from the first
 * interface), or a pcapng section header plus one interface description block
 * per interface. `application` goes into shb_userappl. */
std::string file_header(Format f, std::span<const InterfaceDesc> ifaces,
                        const std::string& application);

/* A pcapng interface statistics block for interface if_id, stamped ts_ns. */
std::string pcapng_isb(uint32_t if_id, uint64_t ts_ns, const InterfaceCounters& c);

/* Link types a pcap file can hold: all interfaces must share one. Returns
 * false if they differ (pcapng has no such limit). */
bool single_linktype(std::span<const InterfaceDesc> ifaces);

}  // namespace linecap::storage
