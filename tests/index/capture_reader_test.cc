/* The capture reader against libpcap itself: every file of the tcpdump
 * test corpus and tests/data, the same files cut short at many offsets, and
 * made-up files for what the corpus lacks (byte-swapped and nanosecond
 * pcap, pcapng with interfaces of different resolutions, records larger
 * than the reader's buffer). */
#include "index/capture_reader.hh"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace linecap::index {
namespace {

namespace fs = std::filesystem;

struct Rec {
    uint64_t ts_ns;
    uint32_t caplen, wirelen;
    std::string bytes;
    bool operator==(const Rec&) const = default;
};

struct Read {
    bool opened = false;
    bool error = false;  // libpcap: ended with an error, not at the end of file
    std::vector<Rec> recs;
};

Read libpcap_read(const std::string& path) {
    Read out;
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* p =
        pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, err);
    if (!p) return out;
    out.opened = true;
    pcap_pkthdr* h;
    const u_char* d;
    int r;
    while ((r = pcap_next_ex(p, &h, &d)) == 1) {
        // Unsigned: made-up files carry seconds whose nanoseconds overflow 63 bits.
        uint64_t ts = uint64_t(h->ts.tv_sec) * 1000000000u + uint64_t(h->ts.tv_usec);
        out.recs.push_back(
            {ts, h->caplen, h->len, std::string(reinterpret_cast<const char*>(d), h->caplen)});
    }
    out.error = r != PCAP_ERROR_BREAK && r != -2;
    pcap_close(p);
    return out;
}

struct Ours {
    bool opened = false;
    std::string error;
    std::vector<Rec> recs;
    std::vector<uint64_t> offsets;
    uint64_t end = 0;  // where the whole records end
    uint64_t data_start = 0;
};

Ours our_read(const std::string& path) {
    Ours out;
    auto r = CaptureReader::open(path);
    if (!r.ok()) {
        out.error = r.error();
        return out;
    }
    out.opened = true;
    out.data_start = r->info().data_start;
    auto e = r->for_each(r->info().data_start, ~0ull, [&](const Record& x) {
        out.recs.push_back({x.ts_ns, x.caplen, x.wirelen,
                            std::string(reinterpret_cast<const char*>(x.data), x.caplen)});
        out.offsets.push_back(x.offset);
        return true;
    });
    if (!e.ok())
        out.error = e.error();
    else
        out.end = *e;
    return out;
}

/* Same records as libpcap: all of them when libpcap read to the end; when
 * libpcap stopped with an error (a cut or damaged record, or something it
 * refuses, such as a second link type), at least its records, in order. */
void compare(const std::string& path, bool exact) {
    SCOPED_TRACE(path);
    Read want = libpcap_read(path);
    if (!want.opened) return;
    Ours got = our_read(path);
    ASSERT_TRUE(got.opened) << got.error;
    ASSERT_TRUE(got.error.empty()) << got.error;
    if (exact || !want.error) {
        ASSERT_EQ(got.recs.size(), want.recs.size());
    } else {
        ASSERT_GE(got.recs.size(), want.recs.size());
    }
    for (size_t i = 0; i < want.recs.size(); i++) {
        ASSERT_EQ(got.recs[i].ts_ns, want.recs[i].ts_ns) << "record " << i;
        ASSERT_EQ(got.recs[i].caplen, want.recs[i].caplen) << "record " << i;
        ASSERT_EQ(got.recs[i].wirelen, want.recs[i].wirelen) << "record " << i;
        ASSERT_TRUE(got.recs[i].bytes == want.recs[i].bytes) << "record " << i;
    }
}

std::vector<std::string> capture_files() {
    std::vector<std::string> dirs;
    const char* corpus = std::getenv("LINECAP_CORPUS");
    dirs.push_back(corpus ? corpus : "/work/shared/corpus");
    const char* data = std::getenv("LINECAP_TEST_DATA");
    if (data) dirs.push_back(data);
    std::vector<std::string> files;
    for (const auto& d : dirs) {
        std::error_code ec;
        if (!fs::is_directory(d, ec)) continue;
        for (auto it = fs::recursive_directory_iterator(d, ec); it != fs::end(it); it.increment(ec))
            if (it->is_regular_file()) files.push_back(it->path().string());
    }
    std::sort(files.begin(), files.end());
    return files;
}

TEST(CaptureReader, EveryCorpusFileAsLibpcapReadsIt) {
    auto files = capture_files();
    if (files.empty()) GTEST_SKIP() << "no corpus (LINECAP_CORPUS, LINECAP_TEST_DATA)";
    size_t compared = 0, records = 0;
    for (const auto& f : files) {
        Read want = libpcap_read(f);
        if (!want.opened) {
            // Not a capture to libpcap: not one to us either, or at least
            // nothing we return may be taken for packets libpcap had read.
            continue;
        }
        compare(f, false);
        if (HasFatalFailure()) return;
        compared++;
        records += want.recs.size();
    }
    EXPECT_GT(compared, 100u);
    std::printf("compared %zu files, %zu records\n", compared, records);
}

struct TempDir {
    std::string path;
    TempDir() {
        char t[] = "/tmp/linecap-rd-XXXXXX";
        path = mkdtemp(t);
    }
    ~TempDir() { fs::remove_all(path); }
};

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void put(const std::string& path, const std::string& s) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(s.data(), std::streamsize(s.size()));
}

/* Writers for made-up files, in either byte order. */
struct Bytes {
    bool big = false;
    std::string s;
    void u8(uint8_t v) { s.push_back(char(v)); }
    void u16(uint16_t v) {
        if (big) v = __builtin_bswap16(v);
        s.append(reinterpret_cast<char*>(&v), 2);
    }
    void u32(uint32_t v) {
        if (big) v = __builtin_bswap32(v);
        s.append(reinterpret_cast<char*>(&v), 4);
    }
    void u64(uint64_t v) {
        if (big) v = __builtin_bswap64(v);
        s.append(reinterpret_cast<char*>(&v), 8);
    }
    void raw(const std::string& b) { s += b; }
    void pad4() {
        while (s.size() % 4) s.push_back(0);
    }
};

std::string payload(size_t n, int seed) {
    std::string p(n, '\0');
    for (size_t i = 0; i < n; i++) p[i] = char((i * 31 + seed * 7) & 0xff);
    return p;
}

std::string make_pcap(bool big, bool nano, int packets, uint16_t linktype = 1,
                      uint32_t snaplen = 65535, size_t big_record = 0) {
    Bytes b{big, {}};
    b.u32(nano ? 0xa1b23c4d : 0xa1b2c3d4);
    b.u16(2);
    b.u16(4);
    b.u32(0);
    b.u32(0);
    b.u32(snaplen);
    b.u32(linktype);
    for (int i = 0; i < packets; i++) {
        size_t len = (big_record && i == packets / 2) ? big_record : 60 + (i * 37) % 1400;
        uint32_t cap = uint32_t(std::min<size_t>(len, snaplen ? snaplen : len));
        b.u32(1700000000 + i);
        b.u32(nano ? 123456789 - i : 654321 - i);
        b.u32(cap);
        b.u32(uint32_t(len));
        b.raw(payload(cap, i));
    }
    return b.s;
}

void pcapng_block(Bytes& b, uint32_t type, const std::string& body) {
    Bytes inner{b.big, body};
    inner.pad4();
    b.u32(type);
    b.u32(uint32_t(inner.s.size() + 12));
    b.raw(inner.s);
    b.u32(uint32_t(inner.s.size() + 12));
}

std::string shb(bool big) {
    Bytes b{big, {}};
    b.u32(0x1a2b3c4d);
    b.u16(1);
    b.u16(0);
    b.u64(~0ull);
    return b.s;
}

/* An IDB with if_tsresol `res` (0xff: none) and if_tsoffset `off`. */
std::string idb(bool big, uint16_t linktype, uint32_t snaplen, uint8_t res, int64_t off) {
    Bytes b{big, {}};
    b.u16(linktype);
    b.u16(0);
    b.u32(snaplen);
    if (res != 0xff) {
        b.u16(9);
        b.u16(1);
        b.u8(res);
        b.pad4();
    }
    if (off) {
        b.u16(14);
        b.u16(8);
        b.u64(uint64_t(off));
    }
    b.u16(0);
    b.u16(0);
    return b.s;
}

std::string epb(bool big, uint32_t if_id, uint64_t ticks, const std::string& data,
                uint32_t wirelen) {
    Bytes b{big, {}};
    b.u32(if_id);
    b.u32(uint32_t(ticks >> 32));
    b.u32(uint32_t(ticks));
    b.u32(uint32_t(data.size()));
    b.u32(wirelen);
    b.raw(data);
    b.pad4();
    return b.s;
}

/* Two interfaces: microseconds and nanoseconds (or other resolutions),
 * one with a time offset; a name resolution block and a comment-only
 * custom block between packets; an SPB and an obsolete PB. */
std::string make_pcapng(bool big, uint8_t res0, uint8_t res1, int64_t off1, int packets,
                        bool late_idb = false) {
    Bytes b{big, {}};
    pcapng_block(b, 0x0a0d0d0a, shb(big));
    pcapng_block(b, 1, idb(big, 1, 0, res0, 0));
    if (!late_idb) pcapng_block(b, 1, idb(big, 1, 0, res1, off1));
    for (int i = 0; i < packets; i++) {
        uint32_t iface = late_idb ? 0 : uint32_t(i % 2);
        if (late_idb && i == packets / 2) pcapng_block(b, 1, idb(big, 1, 0, res1, off1));
        if (late_idb && i > packets / 2) iface = uint32_t(i % 2);
        std::string d = payload(40 + (i * 13) % 300, i);
        uint64_t ticks = 1700000000ull * 1000000ull + uint64_t(i) * 999983ull;
        pcapng_block(b, 6, epb(big, iface, ticks, d, uint32_t(d.size() + (i % 3))));
        if (i == 3) pcapng_block(b, 4, std::string(8, '\0'));  // NRB, skipped
        if (i == 5) {                                          // SPB: interface 0, no time
            Bytes s{big, {}};
            s.u32(100);
            s.raw(payload(100, 9));
            pcapng_block(b, 3, s.s);
        }
        if (i == 7) {  // obsolete packet block
            Bytes s{big, {}};
            s.u16(0);
            s.u16(0);
            s.u32(0x00060000);
            s.u32(0x12345678);
            s.u32(50);
            s.u32(60);
            s.raw(payload(50, 3));
            pcapng_block(b, 2, s.s);
        }
    }
    return b.s;
}

TEST(CaptureReader, MadeUpFilesAsLibpcap) {
    TempDir d;
    struct Case {
        const char* name;
        std::string bytes;
    };
    std::vector<Case> cases = {
        {"le-micro.pcap", make_pcap(false, false, 200)},
        {"be-micro.pcap", make_pcap(true, false, 200)},
        {"le-nano.pcap", make_pcap(false, true, 200)},
        {"be-nano.pcap", make_pcap(true, true, 200)},
        {"snaplen.pcap", make_pcap(false, false, 50, 1, 128)},
        {"le.pcapng", make_pcapng(false, 6, 9, 0, 60)},
        {"be.pcapng", make_pcapng(true, 6, 9, 0, 60)},
        {"default-res.pcapng", make_pcapng(false, 0xff, 3, 100, 60)},
        {"pow2.pcapng", make_pcapng(false, 0x80 | 20, 0x80 | 30, -5, 60)},
        {"offset.pcapng", make_pcapng(true, 9, 6, 3600, 60)},
    };
    for (auto& c : cases) {
        std::string path = d.path + "/" + c.name;
        put(path, c.bytes);
        Read want = libpcap_read(path);
        ASSERT_TRUE(want.opened) << c.name;
        ASSERT_FALSE(want.error) << c.name;
        compare(path, true);
        Ours got = our_read(path);
        EXPECT_EQ(got.end, c.bytes.size()) << c.name;
    }
}

TEST(CaptureReader, Resolutions) {
    TempDir d;
    std::string path = d.path + "/r.pcapng";
    put(path, make_pcapng(false, 6, 9, 0, 4));
    auto r = CaptureReader::open(path);
    ASSERT_TRUE(r.ok()) << r.error();
    ASSERT_EQ(r->info().interfaces.size(), 2u);
    EXPECT_EQ(r->info().interfaces[0].ts_unit_ns, 1000u);
    EXPECT_EQ(r->info().interfaces[1].ts_unit_ns, 1u);
    EXPECT_TRUE(r->info().nanosecond());
    EXPECT_EQ(r->info().format, CaptureFormat::kPcapng);
    std::vector<uint64_t> ts;
    ASSERT_TRUE(r->for_each(r->info().data_start, ~0ull, [&](const Record& x) {
                     ts.push_back(x.ts_ns);
                     return true;
                 }).ok());
    ASSERT_GE(ts.size(), 2u);
    uint64_t ticks0 = 1700000000ull * 1000000ull, ticks1 = ticks0 + 999983ull;
    EXPECT_EQ(ts[0], ticks0 * 1000);  // microseconds
    EXPECT_EQ(ts[1], ticks1);         // nanoseconds: the same number is 1000x earlier

    put(path, make_pcap(true, true, 3));
    r = CaptureReader::open(path);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->info().swapped);
    EXPECT_EQ(r->info().format, CaptureFormat::kPcapNano);
    EXPECT_EQ(r->info().data_start, 24u);
}

TEST(CaptureReader, CutShortAtManyOffsets) {
    TempDir d;
    std::vector<std::string> sources = {make_pcap(false, false, 40), make_pcap(true, true, 40),
                                        make_pcapng(false, 6, 9, 0, 30),
                                        make_pcapng(true, 9, 6, 7, 30)};
    for (const auto& f : capture_files()) {
        if (f.find("dns_tcp.pcap") != std::string::npos || f.find(".pcapng") != std::string::npos) {
            std::string s = slurp(f);
            if (s.size() < (64u << 10)) sources.push_back(s);
        }
        if (sources.size() > 8) break;
    }
    int compared = 0;
    for (size_t si = 0; si < sources.size(); si++) {
        const std::string& s = sources[si];
        size_t step = std::max<size_t>(1, s.size() / 97);
        for (size_t cut = 0; cut < s.size(); cut += step) {
            std::string path = d.path + "/cut" + std::to_string(si);
            put(path, s.substr(0, cut));
            SCOPED_TRACE("source " + std::to_string(si) + " cut at " + std::to_string(cut));
            Read want = libpcap_read(path);
            if (!want.opened) continue;
            compare(path, true);
            if (HasFatalFailure()) return;
            Ours got = our_read(path);
            // Where the whole records end: at or before the cut, past the
            // last record returned.
            EXPECT_LE(got.end, cut);
            if (!got.offsets.empty()) {
                EXPECT_GT(got.end, got.offsets.back());
            }
            compared++;
        }
    }
    EXPECT_GT(compared, 200);
}

TEST(CaptureReader, FromABlockOffsetAndARange) {
    TempDir d;
    std::string path = d.path + "/a.pcap";
    put(path, make_pcap(false, false, 100));
    Ours all = our_read(path);
    ASSERT_EQ(all.recs.size(), 100u);
    auto r = CaptureReader::open(path);
    ASSERT_TRUE(r.ok());
    std::vector<Rec> got;
    auto e = r->for_each(all.offsets[10], all.offsets[20], [&](const Record& x) {
        got.push_back({x.ts_ns, x.caplen, x.wirelen, std::string((const char*)x.data, x.caplen)});
        return true;
    });
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(*e, all.offsets[20]);
    ASSERT_EQ(got.size(), 10u);
    EXPECT_TRUE(got[0] == all.recs[10]);
    EXPECT_TRUE(got[9] == all.recs[19]);
    // A range ending inside a record takes the record starting before it.
    got.clear();
    e = r->for_each(all.offsets[10], all.offsets[11] + 1, [&](const Record& x) {
        got.push_back({x.ts_ns, x.caplen, x.wirelen, {}});
        return true;
    });
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(got.size(), 2u);
    // fn stops the walk.
    int n = 0;
    e = r->for_each(all.data_start, ~0ull, [&](const Record&) { return ++n < 5; });
    ASSERT_TRUE(e.ok());
    EXPECT_EQ(n, 5);
    EXPECT_EQ(*e, all.offsets[5]);
}

TEST(CaptureReader, RecordsAcrossAndLargerThanTheBuffer) {
    TempDir d;
    // D-Bus allows 128 MiB records; 6 MiB is more than the 4 MiB buffer,
    // and 3000 records of up to 1.4 KiB cross the buffer's boundaries.
    std::string path = d.path + "/big.pcap";
    put(path, make_pcap(false, false, 7000, 231, 0, 6u << 20));
    Read want = libpcap_read(path);
    ASSERT_TRUE(want.opened);
    ASSERT_FALSE(want.error);
    compare(path, true);
    Ours got = our_read(path);
    EXPECT_EQ(got.recs.size(), 7000u);
}

TEST(CaptureReader, InterfaceAfterThePacketsIsSequential) {
    TempDir d;
    std::string path = d.path + "/late.pcapng";
    put(path, make_pcapng(false, 6, 9, 0, 20, true));
    compare(path, true);
    auto r = CaptureReader::open(path);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->sequential());
    EXPECT_EQ(r->info().interfaces.size(), 1u);
    ASSERT_TRUE(r->for_each(r->info().data_start, ~0ull, [](const Record&) { return true; }).ok());
    EXPECT_TRUE(r->sequential());
    EXPECT_EQ(r->info().interfaces.size(), 2u);
    // A second pass from the start does not add the interface again.
    ASSERT_TRUE(r->for_each(r->info().data_start, ~0ull, [](const Record&) { return true; }).ok());
    EXPECT_EQ(r->info().interfaces.size(), 2u);
}

TEST(CaptureReader, NotACapture) {
    TempDir d;
    std::string path = d.path + "/notes.txt";
    put(path, "these are not packets, just some text in a file\n");
    auto r = CaptureReader::open(path);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.code(), EINVAL);
    EXPECT_NE(r.error().find("not a pcap or pcapng file"), std::string::npos);
    put(path, "");
    EXPECT_EQ(CaptureReader::open(path).code(), EINVAL);
    EXPECT_EQ(CaptureReader::open(d.path + "/none").code(), ENOENT);
    EXPECT_EQ(CaptureReader::open(d.path).code(), EISDIR);
}

TEST(CaptureReader, OpenFdLeavesTheDescriptorOpen) {
    TempDir d;
    std::string path = d.path + "/a.pcap";
    put(path, make_pcap(false, false, 3));
    int fd = open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    {
        auto r = CaptureReader::open_fd(fd, path);
        ASSERT_TRUE(r.ok());
        CaptureReader moved = std::move(*r);
        int n = 0;
        ASSERT_TRUE(moved.for_each(24, ~0ull, [&](const Record&) { return ++n, true; }).ok());
        EXPECT_EQ(n, 3);
    }
    EXPECT_EQ(fcntl(fd, F_GETFD), 0);  // still open
    close(fd);
}

}  // namespace
}  // namespace linecap::index
