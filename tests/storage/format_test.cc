// Record and header encoding, checked by reading the bytes back with libpcap.
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <cstdio>
#include <string>
#include <vector>

#include "storage/format.hh"

using namespace linecap::storage;

namespace {

struct Rec {
    uint64_t ts_ns;
    std::vector<uint8_t> data;
    uint32_t wirelen;
};

std::string encode_file(Format f, const std::vector<InterfaceDesc>& ifs,
                        const std::vector<Rec>& recs, bool with_isb = false) {
    std::string out = file_header(f, ifs, "linecap test");
    for (const auto& r : recs) {
        std::vector<uint8_t> buf(record_size(f, r.data.size()));
        uint8_t* p = buf.data();
        p += encode_record_header(f, p, r.ts_ns, 0, r.data.size(), r.wirelen);
        std::copy(r.data.begin(), r.data.end(), p);
        p += r.data.size();
        p += encode_record_trailer(f, p, r.data.size());
        EXPECT_EQ(static_cast<size_t>(p - buf.data()), buf.size());
        EXPECT_EQ(record_length(f, buf.data()), buf.size());
        out.append(reinterpret_cast<char*>(buf.data()), buf.size());
    }
    if (with_isb) out += pcapng_isb(0, 5, InterfaceCounters{10, 1, 9});
    return out;
}

std::vector<Rec> read_back(const std::string& bytes, int* linktype = nullptr) {
    FILE* f = fmemopen(const_cast<char*>(bytes.data()), bytes.size(), "rb");
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* p = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_NANO, err);
    EXPECT_NE(p, nullptr) << err;
    std::vector<Rec> out;
    if (!p) return out;
    if (linktype) *linktype = pcap_datalink(p);
    struct pcap_pkthdr* h;
    const u_char* d;
    int rc;
    while ((rc = pcap_next_ex(p, &h, &d)) == 1)
        out.push_back(Rec{uint64_t(h->ts.tv_sec) * 1000000000ull + h->ts.tv_usec,
                          std::vector<uint8_t>(d, d + h->caplen), h->len});
    EXPECT_EQ(rc, PCAP_ERROR_BREAK) << pcap_geterr(p);
    pcap_close(p);
    return out;
}

std::vector<Rec> sample() {
    std::vector<Rec> r;
    for (uint32_t n : {1u, 3u, 4u, 5u, 60u, 1514u, 9000u}) {
        Rec x;
        x.ts_ns = 1700000000ull * 1000000000ull + 123456789ull + n;
        for (uint32_t i = 0; i < n; i++) x.data.push_back(uint8_t(i * 7 + n));
        x.wirelen = n + (n % 2 ? 100 : 0);  // some snaplen-cut records
        r.push_back(x);
    }
    return r;
}

}  // namespace

TEST(Format, PcapNanoRoundTrip) {
    std::vector<InterfaceDesc> ifs{{"pcap:x", "", 1, 262144}};
    auto in = sample();
    int lt = 0;
    auto out = read_back(encode_file(Format::kPcapNano, ifs, in), &lt);
    ASSERT_EQ(out.size(), in.size());
    EXPECT_EQ(lt, 1);
    for (size_t i = 0; i < in.size(); i++) {
        EXPECT_EQ(out[i].ts_ns, in[i].ts_ns);
        EXPECT_EQ(out[i].data, in[i].data);
        EXPECT_EQ(out[i].wirelen, in[i].wirelen);
    }
}

TEST(Format, PcapMicroTruncatesToMicroseconds) {
    std::vector<InterfaceDesc> ifs{{"pcap:x", "", 1, 262144}};
    auto in = sample();
    auto out = read_back(encode_file(Format::kPcapMicro, ifs, in));
    ASSERT_EQ(out.size(), in.size());
    for (size_t i = 0; i < in.size(); i++) EXPECT_EQ(out[i].ts_ns, in[i].ts_ns / 1000 * 1000);
}

TEST(Format, PcapngRoundTripWithStatistics) {
    std::vector<InterfaceDesc> ifs{{"null:64", "tcp port 80", 1, 65535}};
    auto in = sample();
    std::string bytes = encode_file(Format::kPcapng, ifs, in, true);
    EXPECT_EQ(bytes.size() % 4, 0u);
    auto out = read_back(bytes);
    ASSERT_EQ(out.size(), in.size());
    for (size_t i = 0; i < in.size(); i++) {
        EXPECT_EQ(out[i].ts_ns, in[i].ts_ns);
        EXPECT_EQ(out[i].data, in[i].data);
        EXPECT_EQ(out[i].wirelen, in[i].wirelen);
    }
    // The interface description names the source and the filter.
    EXPECT_NE(bytes.find("null:64"), std::string::npos);
    EXPECT_NE(bytes.find("tcp port 80"), std::string::npos);
}

TEST(Format, PcapngSeveralInterfaces) {
    std::vector<InterfaceDesc> ifs{{"a", "", 1, 100}, {"b", "", 101, 200}};
    EXPECT_FALSE(single_linktype(ifs));
    std::string h = file_header(Format::kPcapng, ifs, "x");
    // SHB then two IDBs, each block length a multiple of 4.
    size_t off = 0;
    int blocks = 0;
    while (off < h.size()) {
        uint32_t len;
        memcpy(&len, h.data() + off + 4, 4);
        ASSERT_EQ(len % 4, 0u);
        off += len;
        blocks++;
    }
    EXPECT_EQ(off, h.size());
    EXPECT_EQ(blocks, 3);
}

TEST(Format, RecordSizes) {
    EXPECT_EQ(record_size(Format::kPcapMicro, 64), 80u);
    EXPECT_EQ(record_size(Format::kPcapng, 64), 96u);
    EXPECT_EQ(record_size(Format::kPcapng, 65), 100u);
    EXPECT_LE(record_size(Format::kPcapng, 1) - 1, kMaxRecordOverhead);
}
