// libFuzzer target: the record encoder. Records built from the input are
// encoded as pcap (ns) and pcapng, read back with libpcap, and must come back
// identical: timestamps, lengths and bytes.
#include <pcap/pcap.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "storage/format.hh"

using namespace linecap::storage;

namespace {

struct Rec {
    uint64_t ts;
    uint32_t wirelen;
    std::string bytes;
};

void check(Format f, const std::vector<Rec>& recs) {
    std::vector<InterfaceDesc> ifs{{"fuzz", "ip", 1, 262144}};
    std::string file = file_header(f, ifs, "fuzz");
    for (const auto& r : recs) {
        std::string buf(record_size(f, r.bytes.size()), '\0');
        uint8_t* p = reinterpret_cast<uint8_t*>(buf.data());
        p += encode_record_header(f, p, r.ts, 0, r.bytes.size(), r.wirelen);
        memcpy(p, r.bytes.data(), r.bytes.size());
        p += r.bytes.size();
        p += encode_record_trailer(f, p, r.bytes.size());
        if (size_t(p - reinterpret_cast<uint8_t*>(buf.data())) != buf.size()) __builtin_trap();
        if (record_length(f, reinterpret_cast<uint8_t*>(buf.data())) != buf.size())
            __builtin_trap();
        file += buf;
    }
    FILE* fp = fmemopen(file.data(), file.size(), "rb");
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* pc = pcap_fopen_offline_with_tstamp_precision(fp, PCAP_TSTAMP_PRECISION_NANO, err);
    if (!pc) __builtin_trap();
    size_t i = 0;
    struct pcap_pkthdr* h;
    const u_char* d;
    while (pcap_next_ex(pc, &h, &d) == 1) {
        if (i >= recs.size()) __builtin_trap();
        const Rec& r = recs[i++];
        uint64_t ts = uint64_t(h->ts.tv_sec) * 1000000000ull + uint64_t(h->ts.tv_usec);
        if (ts != r.ts || h->caplen != r.bytes.size() || h->len != r.wirelen ||
            memcmp(d, r.bytes.data(), h->caplen) != 0)
            __builtin_trap();
    }
    if (i != recs.size()) __builtin_trap();
    pcap_close(pc);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::vector<Rec> recs;
    size_t off = 0;
    while (off + 10 <= size && recs.size() < 64) {
        Rec r;
        uint64_t ts;
        memcpy(&ts, data + off, 8);
        uint16_t len;
        memcpy(&len, data + off + 8, 2);
        off += 10;
        len = static_cast<uint16_t>(len % 2048);
        if (len > size - off) len = static_cast<uint16_t>(size - off);
        // pcap seconds are 32 bits, and libpcap 1.10 reads them signed: a
        // time after 2038 comes back negative. Stay in its range.
        r.ts = ts % ((1ull << 31) * 1000000000ull);
        r.bytes.assign(reinterpret_cast<const char*>(data + off), len);
        r.wirelen = len + (ts & 0xff);  // sometimes a snaplen-cut record
        off += len;
        recs.push_back(std::move(r));
    }
    check(Format::kPcapNano, recs);
    check(Format::kPcapng, recs);
    return 0;
}
