#include "index/builder.hh"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "index/index_file.hh"
#include "storage/format.hh"

namespace linecap::index {
namespace {

/* An Ethernet + IPv4 + UDP frame of `len` bytes (len >= 42), flow n. */
std::vector<uint8_t> udp_frame(uint32_t n, uint32_t len, uint16_t vlan = 0) {
    std::vector<uint8_t> f;
    f.insert(f.end(), 12, 0x02);
    if (vlan) {
        f.insert(f.end(), {0x81, 0x00, uint8_t(vlan >> 8), uint8_t(vlan)});
    }
    f.insert(f.end(), {0x08, 0x00});
    size_t l3 = f.size();
    f.resize(l3 + 28, 0);
    f[l3] = 0x45;
    f[l3 + 8] = 64;
    f[l3 + 9] = 17;
    uint8_t src[4] = {198, 18, uint8_t(n >> 16), uint8_t(n >> 8)};
    uint8_t dst[4] = {198, 19, uint8_t(n), 7};
    std::copy(src, src + 4, &f[l3 + 12]);
    std::copy(dst, dst + 4, &f[l3 + 16]);
    f[l3 + 20] = uint8_t(n >> 8);
    f[l3 + 21] = uint8_t(n);
    f[l3 + 22] = 0x01;
    f[l3 + 23] = 0xbb;
    if (f.size() < len) f.resize(len, 0x5a);
    uint16_t ip_len = uint16_t(f.size() - l3);
    f[l3 + 2] = uint8_t(ip_len >> 8);
    f[l3 + 3] = uint8_t(ip_len);
    return f;
}

struct Packet {
    uint64_t offset;
    uint64_t ts;
    uint32_t flow;
    uint32_t wirelen;
};

/* A capture file's records (no file header: data_start is `start`), as
 * capd's worker encodes them, with the packets they hold. */
struct Capture {
    storage::Format fmt;
    uint64_t start;
    std::string bytes;  // records only
    std::vector<Packet> packets;
};

CaptureFormat to_index(storage::Format f) {
    switch (f) {
        case storage::Format::kPcapMicro: return CaptureFormat::kPcapMicro;
        case storage::Format::kPcapNano: return CaptureFormat::kPcapNano;
        default: return CaptureFormat::kPcapng;
    }
}

Capture make_capture(storage::Format fmt, uint32_t packets, uint32_t flows, uint64_t start = 24) {
    Capture c{fmt, start, {}, {}};
    uint64_t ts0 = 1700000000ull * 1000000000ull;
    for (uint32_t i = 0; i < packets; i++) {
        uint32_t flow = (i * 7919u) % flows;
        // Not monotonic: several workers feed a writer.
        uint64_t ts = ts0 + uint64_t(i) * 1000 + (i % 3) * 5000;
        if (fmt == storage::Format::kPcapMicro) ts -= ts % 1000;
        uint32_t len = 60 + (i % 5) * 100;
        auto f = udp_frame(flow, len, flow % 4 == 0 ? 100 : 0);
        uint32_t caplen = std::min<uint32_t>(uint32_t(f.size()), 200);  // a snaplen
        uint8_t rec[64];
        uint32_t h = storage::encode_record_header(fmt, rec, ts, 0, caplen, uint32_t(f.size()));
        c.packets.push_back({start + c.bytes.size(), ts, flow, uint32_t(f.size())});
        c.bytes.append(reinterpret_cast<char*>(rec), h);
        c.bytes.append(reinterpret_cast<char*>(f.data()), caplen);
        uint32_t t = storage::encode_record_trailer(fmt, rec, caplen);
        c.bytes.append(reinterpret_cast<char*>(rec), t);
    }
    return c;
}

std::string build(const Capture& c, IndexBuilder& b) {
    uint16_t lt[1] = {1};
    b.begin(to_index(c.fmt), lt, c.start);
    // In pieces, as the writer hands over chunks.
    const auto* p = reinterpret_cast<const uint8_t*>(c.bytes.data());
    size_t done = 0;
    for (size_t i = 0; i + 1 < c.packets.size(); i += 37) {
        size_t upto = std::min(c.packets.size() - 1, i + 37);
        size_t end = c.packets[upto].offset - c.start;
        b.add_records(p + done, end - done, c.start + done);
        done = end;
    }
    b.add_records(p + done, c.bytes.size() - done, c.start + done);
    return b.serialize(c.start + c.bytes.size());
}

size_t block_of(const Index& ix, uint64_t offset) {
    auto bl = ix.blocks();
    auto it = std::upper_bound(bl.begin(), bl.end(), offset,
                               [](uint64_t o, const BlockEntry& b) { return o < b.offset; });
    return size_t(it - bl.begin()) - 1;
}

/* The lookup order (index_file.hh): every check passes on a whole index,
 * flows sorted by (kind, src, dst), by_dst by dst, and flows_with_address()
 * finds exactly the flows with the address on either side. */
void check_lookup(const Index& ix) {
    const auto flows = ix.flows();
    ASSERT_TRUE(ix.check_flows(0, flows.size()).ok());
    ASSERT_TRUE(ix.check_by_dst(0, ix.by_dst().size()).ok());
    for (size_t i = 0; i < flows.size(); i++) ASSERT_TRUE(ix.check_postings(i).ok()) << i;
    auto order = [](const FlowKey& a, const FlowKey& b) {
        if (a.kind != b.kind) return a.kind < b.kind;
        if (int c = std::memcmp(a.src, b.src, 16)) return c < 0;
        if (int c = std::memcmp(a.dst, b.dst, 16)) return c < 0;
        return std::memcmp(&a, &b, sizeof(a)) < 0;
    };
    for (size_t i = 1; i < flows.size(); i++)
        EXPECT_TRUE(order(flows[i - 1].key, flows[i].key)) << i;
    size_t non_ip = 0;
    while (non_ip < flows.size() && flows[non_ip].key.kind != FlowKind::kIp) non_ip++;
    EXPECT_EQ(ix.non_ip_flows(), non_ip);
    ASSERT_EQ(ix.by_dst().size(), flows.size() - non_ip);
    std::vector<uint32_t> seen;
    for (size_t j = 0; j < ix.by_dst().size(); j++) {
        uint32_t f = ix.by_dst()[j];
        ASSERT_GE(f, non_ip);
        ASSERT_LT(f, flows.size());
        seen.push_back(f);
        if (j != 0) {
            EXPECT_LE(std::memcmp(flows[ix.by_dst()[j - 1]].key.dst, flows[f].key.dst, 16), 0);
        }
    }
    std::sort(seen.begin(), seen.end());
    EXPECT_TRUE(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
    // Every address of every IP flow: found on the side(s) it is on.
    std::set<std::string> addrs;
    for (size_t i = non_ip; i < flows.size(); i++) {
        addrs.emplace(reinterpret_cast<const char*>(flows[i].key.src), 16);
        addrs.emplace(reinterpret_cast<const char*>(flows[i].key.dst), 16);
    }
    addrs.emplace(16, '\x77');  // none
    for (const std::string& a : addrs) {
        const auto* ap = reinterpret_cast<const uint8_t*>(a.data());
        std::vector<uint32_t> got;
        ix.flows_with_address(ap, got);
        std::multiset<uint32_t> want, have(got.begin(), got.end());
        for (size_t i = non_ip; i < flows.size(); i++) {
            if (std::memcmp(flows[i].key.src, ap, 16) == 0) want.insert(uint32_t(i));
            if (std::memcmp(flows[i].key.dst, ap, 16) == 0) want.insert(uint32_t(i));
        }
        EXPECT_EQ(have, want);
    }
    // Every pair of addresses that is a flow's, each way round, and pairs
    // that are none (the flows' addresses crossed, and an absent one):
    // flows_with_pair() finds exactly the flows between the two.
    std::vector<std::pair<std::string, std::string>> pairs;
    for (size_t i = non_ip; i < flows.size(); i++) {
        std::string a(reinterpret_cast<const char*>(flows[i].key.src), 16);
        std::string b(reinterpret_cast<const char*>(flows[i].key.dst), 16);
        pairs.emplace_back(a, b);
        pairs.emplace_back(b, a);
        const size_t o = non_ip + (i * 7919) % (flows.size() - non_ip);
        pairs.emplace_back(a, std::string(reinterpret_cast<const char*>(flows[o].key.src), 16));
        pairs.emplace_back(std::string(16, '\x77'), b);
    }
    std::sort(pairs.begin(), pairs.end());
    pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
    for (const auto& [a, b] : pairs) {
        const auto* ap = reinterpret_cast<const uint8_t*>(a.data());
        const auto* bp = reinterpret_cast<const uint8_t*>(b.data());
        std::vector<uint32_t> got;
        ix.flows_with_pair(ap, bp, got);
        std::multiset<uint32_t> want, have(got.begin(), got.end());
        const auto* lo = a <= b ? ap : bp;
        const auto* hi = a <= b ? bp : ap;
        for (size_t i = non_ip; i < flows.size(); i++)
            if (std::memcmp(flows[i].key.src, lo, 16) == 0 &&
                std::memcmp(flows[i].key.dst, hi, 16) == 0)
                want.insert(uint32_t(i));
        EXPECT_EQ(have, want);
    }
}

void check_round_trip(storage::Format fmt) {
    SCOPED_TRACE(int(fmt));
    Capture c = make_capture(fmt, 5000, 300);
    IndexBuilder b(8192);
    std::string bytes = build(c, b);
    uint64_t end = c.start + c.bytes.size();
    EXPECT_EQ(b.end(), end);
    EXPECT_EQ(b.packets(), 5000u);
    auto r = Index::from_bytes(bytes, end);
    ASSERT_TRUE(r.ok()) << r.error();
    const Index& ix = *r;
    const IndexHeader& h = ix.header();
    EXPECT_EQ(h.version,
              4u);  // compressed flow groups; version 2 flows only with set_compact_flows(false)
    EXPECT_EQ(h.header_bytes, sizeof(IndexHeader) + sizeof(IndexHeaderV4Ext));
    ASSERT_TRUE(ix.check_flows(0, ix.flows().size()).ok());
    EXPECT_EQ(h.packets, 5000u);
    EXPECT_EQ(h.capture_bytes, end);
    EXPECT_EQ(h.data_start, c.start);
    EXPECT_EQ(h.format, uint32_t(to_index(fmt)));
    EXPECT_EQ(h.flow_count, 300u);
    EXPECT_FALSE(ix.live());
    EXPECT_GT(h.block_count, 10u);
    std::vector<uint8_t> copy(bytes.begin(), bytes.end());
    EXPECT_TRUE(std::equal(copy.begin(), copy.end(), ix.bytes().begin(), ix.bytes().end()));

    // Blocks: contiguous over [data_start, end), each ends a record.
    uint64_t at = c.start, pk = 0;
    for (const BlockEntry& bl : ix.blocks()) {
        EXPECT_EQ(bl.offset, at);
        at += bl.bytes;
        pk += bl.packets;
        EXPECT_LE(bl.min_ns, bl.max_ns);
    }
    EXPECT_EQ(at, end);
    EXPECT_EQ(pk, 5000u);

    // Flows: one per distinct key (flow numbers map 1:1 to keys here).
    std::map<uint32_t, size_t> flow_of;  // flow number -> index in the file
    for (size_t i = 0; i < ix.flows().size(); i++) {
        const FlowKey& k = ix.flows()[i].key;
        ASSERT_EQ(k.kind, FlowKind::kIp);
        uint32_t n = uint32_t(k.sport);
        EXPECT_TRUE(flow_of.emplace(n, i).second);
        auto bl = ix.blocks_of(i);
        EXPECT_TRUE(std::is_sorted(bl.begin(), bl.end()));
        EXPECT_TRUE(std::adjacent_find(bl.begin(), bl.end()) == bl.end());
    }
    std::map<uint32_t, FlowEntry> expect;
    uint64_t first = ~0ull, last = 0, wire = 0;
    for (const Packet& p : c.packets) {
        ASSERT_TRUE(flow_of.count(p.flow));
        size_t fi = flow_of[p.flow];
        auto bl = ix.blocks_of(fi);
        uint32_t blk = uint32_t(block_of(ix, p.offset));
        EXPECT_TRUE(std::binary_search(bl.begin(), bl.end(), blk)) << "packet at " << p.offset;
        const BlockEntry& be = ix.blocks()[blk];
        EXPECT_GE(p.ts, be.min_ns);
        EXPECT_LE(p.ts, be.max_ns);
        auto [it, fresh] = expect.try_emplace(p.flow);
        FlowEntry& e = it->second;
        if (fresh) e.first_ns = e.last_ns = p.ts;
        e.first_ns = std::min(e.first_ns, p.ts);
        e.last_ns = std::max(e.last_ns, p.ts);
        e.packets++;
        e.wire_bytes += p.wirelen;
        first = std::min(first, p.ts);
        last = std::max(last, p.ts);
        wire += p.wirelen;
    }
    for (auto& [n, e] : expect) {
        const FlowEntry& got = ix.flows()[flow_of[n]];
        EXPECT_EQ(got.packets, e.packets);
        EXPECT_EQ(got.wire_bytes, e.wire_bytes);
        EXPECT_EQ(got.first_ns, e.first_ns);
        EXPECT_EQ(got.last_ns, e.last_ns);
    }
    EXPECT_EQ(h.first_ns, first);
    EXPECT_EQ(h.last_ns, last);
    EXPECT_EQ(h.wire_bytes, wire);
    check_lookup(ix);
}

TEST(Builder, RoundTripPcap) { check_round_trip(storage::Format::kPcapMicro); }
TEST(Builder, RoundTripPcapNano) { check_round_trip(storage::Format::kPcapNano); }
TEST(Builder, RoundTripPcapng) { check_round_trip(storage::Format::kPcapng); }

TEST(Builder, EmptyFile) {
    IndexBuilder b;
    uint16_t lt[1] = {1};
    b.begin(CaptureFormat::kPcapMicro, lt, 24);
    auto r = Index::from_bytes(b.serialize(24), 24);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->header().packets, 0u);
    EXPECT_EQ(r->header().first_ns, 0u);
    EXPECT_EQ(r->blocks().size(), 0u);
}

TEST(Builder, ReuseAcrossFilesAndTableGrowth) {
    IndexBuilder b(1 << 16);
    Capture big = make_capture(storage::Format::kPcapMicro, 60000, 40000);
    build(big, b);
    auto r = Index::from_bytes(b.serialize(big.start + big.bytes.size()), ~0ull);
    ASSERT_TRUE(r.ok()) << r.error();
    // (i * 7919) % 40000 over 60000 packets reaches every flow number.
    EXPECT_EQ(r->header().flow_count, 40000u);
    Capture small = make_capture(storage::Format::kPcapng, 100, 10, 200);
    build(small, b);
    r = Index::from_bytes(b.serialize(small.start + small.bytes.size()), ~0ull);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->header().flow_count, 10u);
    EXPECT_EQ(r->header().packets, 100u);
    EXPECT_EQ(r->header().data_start, 200u);
}

TEST(Builder, LiveIndex) {
    Capture c = make_capture(storage::Format::kPcapng, 2000, 50);
    IndexBuilder b(4096);
    build(c, b);
    uint64_t end = c.start + c.bytes.size();
    uint64_t mid = c.packets[1000].offset + 3;  // inside a record
    auto r = Index::from_bytes(b.serialize_live(mid), end);
    ASSERT_TRUE(r.ok()) << r.error();
    const Index& ix = *r;
    EXPECT_TRUE(ix.live());
    EXPECT_EQ(ix.flows().size(), 0u);
    ASSERT_GT(ix.blocks().size(), 0u);
    const BlockEntry& lastb = ix.blocks().back();
    EXPECT_EQ(ix.header().capture_bytes, lastb.offset + lastb.bytes);
    EXPECT_LE(ix.header().capture_bytes, mid);
    uint64_t pk = 0;
    for (const Packet& p : c.packets) pk += p.offset < ix.header().capture_bytes;
    EXPECT_EQ(ix.header().packets, pk);
    // A live index of a file that has grown since is fine; of one cut
    // below what it describes is stale.
    EXPECT_TRUE(Index::from_bytes(b.serialize_live(mid), end).ok());
    auto stale = Index::from_bytes(b.serialize_live(mid), ix.header().capture_bytes - 1);
    ASSERT_FALSE(stale.ok());
    EXPECT_NE(stale.error().find("stale index"), std::string::npos) << stale.error();
    // Everything valid: all blocks.
    auto all = Index::from_bytes(b.serialize_live(end), end);
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(all->header().packets, 2000u);
    EXPECT_EQ(all->header().capture_bytes, end);
}

TEST(Builder, TruncateDropsBlocksAndMarksApprox) {
    Capture c = make_capture(storage::Format::kPcapMicro, 3000, 100);
    IndexBuilder b(4096);
    build(c, b);
    uint64_t cut = c.packets[1500].offset;  // a record boundary
    b.truncate(cut);
    EXPECT_EQ(b.end(), cut);
    auto r = Index::from_bytes(b.serialize(cut), cut);
    ASSERT_TRUE(r.ok()) << r.error();
    const Index& ix = *r;
    EXPECT_TRUE(ix.header().flags & kIndexApproxCounts);
    const BlockEntry& lastb = ix.blocks().back();
    EXPECT_EQ(lastb.offset + lastb.bytes, cut);
    // Every packet left is still found through its flow.
    ASSERT_TRUE(ix.check_flows(0, ix.flows().size()).ok());
    std::map<uint32_t, size_t> flow_of;
    for (size_t i = 0; i < ix.flows().size(); i++) flow_of[ix.flows()[i].key.sport] = i;
    for (const Packet& p : c.packets) {
        if (p.offset >= cut) break;
        ASSERT_TRUE(flow_of.count(p.flow));
        auto bl = ix.blocks_of(flow_of[p.flow]);
        EXPECT_TRUE(std::binary_search(bl.begin(), bl.end(), uint32_t(block_of(ix, p.offset))));
    }
    // The builder goes on after a cut.
    const auto* p = reinterpret_cast<const uint8_t*>(c.bytes.data());
    b.add_records(p + (cut - c.start), c.bytes.size() - (cut - c.start), cut);
    EXPECT_TRUE(Index::from_bytes(b.serialize(c.start + c.bytes.size()), ~0ull).ok());
}

TEST(Builder, TruncateToNothingDropsTheFlows) {
    Capture c = make_capture(storage::Format::kPcapMicro, 100, 10);
    IndexBuilder b(4096);
    build(c, b);
    b.truncate(c.start);
    auto r = Index::from_bytes(b.serialize(c.start), c.start);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->flows().size(), 0u);
    EXPECT_EQ(r->blocks().size(), 0u);
}

TEST(Builder, PcapngInterfacesAndSequential) {
    // Two interfaces of different link types: the second is raw IP.
    IndexBuilder b(1 << 20);
    uint16_t lt[2] = {1, 101};
    b.begin(CaptureFormat::kPcapng, lt, 100);
    std::string recs;
    auto eth = udp_frame(1, 80);
    std::vector<uint8_t> raw(eth.begin() + 14, eth.end());
    uint8_t hdr[64];
    auto put = [&](uint32_t if_id, const std::vector<uint8_t>& f) {
        uint32_t h = storage::encode_record_header(storage::Format::kPcapng, hdr, 5, if_id,
                                                   f.size(), f.size());
        recs.append(reinterpret_cast<char*>(hdr), h);
        recs.append(f.begin(), f.end());
        uint32_t t = storage::encode_record_trailer(storage::Format::kPcapng, hdr, f.size());
        recs.append(reinterpret_cast<char*>(hdr), t);
    };
    put(0, eth);
    put(1, raw);
    b.add_records(reinterpret_cast<const uint8_t*>(recs.data()), recs.size(), 100);
    auto r = Index::from_bytes(b.serialize(100 + recs.size()), ~0ull);
    ASSERT_TRUE(r.ok()) << r.error();
    ASSERT_EQ(r->flows().size(), 2u);
    ASSERT_TRUE(r->check_flows(0, 2).ok());
    // Same addresses and ports: the key's other bytes order them (raw IP
    // has EtherType 0).
    EXPECT_EQ(r->flows()[0].key.linktype, 101);
    EXPECT_EQ(r->flows()[1].key.linktype, 1);
    EXPECT_EQ(r->flows()[0].key.kind, FlowKind::kIp);
    EXPECT_FALSE(r->header().flags & kIndexSequential);
    // An interface description block after the first packet.
    std::string idb(20, '\0');
    uint32_t w[5] = {1, 20, 1, 0, 20};
    std::memcpy(idb.data(), w, 20);
    b.add_records(reinterpret_cast<const uint8_t*>(idb.data()), idb.size(), 100 + recs.size());
    r = Index::from_bytes(b.serialize(100 + recs.size() + 20), ~0ull);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_TRUE(r->header().flags & kIndexSequential);
    EXPECT_EQ(r->blocks().back().offset + r->blocks().back().bytes, 100 + recs.size() + 20);
}

/* capq --reindex adds the records the reader returns; pcapng blocks that
 * are not packets lie between them. */
TEST(Builder, SkippedBytesBelongToTheBlocks) {
    IndexBuilder b(200);
    uint16_t lt[1] = {1};
    b.begin(CaptureFormat::kPcapng, lt, 100);
    auto f = udp_frame(3, 60);
    uint64_t at = 100 + 32;  // a name resolution block first
    for (int i = 0; i < 20; i++) {
        b.add(at, 96, 1000 + i, 0, f.data(), 60, 60);
        at += 96 + (i % 3 == 0 ? 28 : 0);
    }
    auto r = Index::from_bytes(b.serialize(at), at);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->blocks().front().offset, 100u);
    EXPECT_GT(r->blocks().size(), 3u);
    const BlockEntry& last = r->blocks().back();
    EXPECT_EQ(last.offset + last.bytes, b.end());
    EXPECT_EQ(r->header().packets, 20u);
}

/* The record starts of a capture's bytes, as capd's worker notes them in
 * a chunk: downward from the end of an array (record i at top[-1 - i]). */
struct Starts {
    std::vector<uint32_t> down;
    explicit Starts(const std::vector<uint32_t>& up) : down(up.rbegin(), up.rend()) {}
    const uint32_t* top() const { return down.data() + down.size(); }
};

std::vector<uint32_t> starts_of(const Capture& c) {
    std::vector<uint32_t> up;
    for (const Packet& p : c.packets) up.push_back(uint32_t(p.offset - c.start));
    return up;
}

/* add_chunk() gives the index add_records() gives over the same bytes, byte
 * for byte: whole chunks, chunks in pieces, starts upward and downward. */
void check_chunk_equals_records(storage::Format fmt) {
    SCOPED_TRACE(int(fmt));
    Capture c = make_capture(fmt, 5000, 300);
    const auto* buf = reinterpret_cast<const uint8_t*>(c.bytes.data());
    const auto len = uint32_t(c.bytes.size());
    uint64_t file_end = c.start + len;
    uint16_t lt[1] = {1};

    IndexBuilder a(8192);
    std::string want = build(c, a);

    std::vector<uint32_t> up = starts_of(c);
    Starts st(up);
    // Pieces of uneven sizes, ending at record boundaries, as the writer's
    // chunks and -C cuts give them.
    for (size_t piece : {size_t(1), size_t(37), size_t(64), size_t(65), size_t(5000)}) {
        SCOPED_TRACE(piece);
        IndexBuilder b(8192), d(8192);
        b.begin(to_index(fmt), lt, c.start);
        d.begin(to_index(fmt), lt, c.start);
        for (size_t i = 0; i < up.size(); i += piece) {
            size_t n = std::min(piece, up.size() - i);
            uint32_t end = i + n < up.size() ? up[i + n] : len;
            b.add_chunk(buf, &up[i], 1, n, end, c.start + up[i]);
            d.add_chunk(buf, st.top() - 1 - i, -1, n, end, c.start + up[i]);
        }
        EXPECT_EQ(b.end(), file_end);
        EXPECT_EQ(b.packets(), 5000u);
        EXPECT_TRUE(b.serialize(file_end) == want);
        EXPECT_TRUE(d.serialize(file_end) == want);
        EXPECT_TRUE(d.serialize_live(file_end - 1000) == a.serialize_live(file_end - 1000));
    }

    // -C: one chunk cut across two files, each indexed on its own; the
    // second file's records start at its own data_start.
    size_t cut = 2345;
    uint32_t at = up[cut];
    IndexBuilder r1(8192), k1(8192);
    r1.begin(to_index(fmt), lt, c.start);
    k1.begin(to_index(fmt), lt, c.start);
    r1.add_records(buf, at, c.start);
    k1.add_chunk(buf, st.top() - 1, -1, cut, at, c.start);
    EXPECT_TRUE(k1.serialize(c.start + at) == r1.serialize(c.start + at));
    r1.begin(to_index(fmt), lt, 40);
    k1.begin(to_index(fmt), lt, 40);
    r1.add_records(buf + at, len - at, 40);
    k1.add_chunk(buf, st.top() - 1 - cut, -1, up.size() - cut, len, 40);
    EXPECT_EQ(k1.packets(), up.size() - cut);
    EXPECT_TRUE(k1.serialize(40 + len - at) == r1.serialize(40 + len - at));
}

TEST(Builder, AddChunkEqualsAddRecordsPcap) {
    check_chunk_equals_records(storage::Format::kPcapMicro);
}
TEST(Builder, AddChunkEqualsAddRecordsPcapNano) {
    check_chunk_equals_records(storage::Format::kPcapNano);
}
TEST(Builder, AddChunkEqualsAddRecordsPcapng) {
    check_chunk_equals_records(storage::Format::kPcapng);
}

/* A pcapng block that is not a packet among the records: counted in the
 * blocks, and a section header makes the file sequential, as add_records()
 * does. */
TEST(Builder, AddChunkPcapngOtherBlocks) {
    Capture c = make_capture(storage::Format::kPcapng, 300, 20);
    std::vector<uint32_t> up = starts_of(c);
    std::string bytes;
    std::vector<uint32_t> starts;
    for (size_t i = 0; i < up.size(); i++) {
        uint32_t end = i + 1 < up.size() ? up[i + 1] : uint32_t(c.bytes.size());
        if (i == 100 || i == 200) {
            // An interface statistics block, then at 200 a section header.
            uint32_t type = i == 100 ? 5 : 0x0a0d0d0a;
            std::string blk(28, '\0');
            uint32_t w[2] = {type, 28};
            std::memcpy(blk.data(), w, 8);
            std::memcpy(blk.data() + 24, &w[1], 4);
            starts.push_back(uint32_t(bytes.size()));
            bytes += blk;
        }
        starts.push_back(uint32_t(bytes.size()));
        bytes.append(c.bytes, up[i], end - up[i]);
    }
    const auto* buf = reinterpret_cast<const uint8_t*>(bytes.data());
    uint16_t lt[1] = {1};
    IndexBuilder a(4096), b(4096);
    a.begin(CaptureFormat::kPcapng, lt, c.start);
    b.begin(CaptureFormat::kPcapng, lt, c.start);
    a.add_records(buf, bytes.size(), c.start);
    b.add_chunk(buf, starts.data(), 1, starts.size(), uint32_t(bytes.size()), c.start);
    uint64_t end = c.start + bytes.size();
    EXPECT_EQ(b.packets(), 300u);
    EXPECT_EQ(b.end(), end);
    std::string got = b.serialize(end);
    EXPECT_TRUE(got == a.serialize(end));
    auto r = Index::from_bytes(got, end);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_TRUE(r->header().flags & kIndexSequential);
}

std::string sample_index(uint64_t* capture_bytes = nullptr, bool compact = true) {
    Capture c = make_capture(storage::Format::kPcapng, 600, 40);
    IndexBuilder b(2048);
    b.set_compact_flows(compact);
    std::string s = build(c, b);
    if (capture_bytes) *capture_bytes = c.start + c.bytes.size();
    return s;
}

TEST(IndexFile, EveryTruncationIsRefused) {
    uint64_t cap;
    std::string s = sample_index(&cap);
    ASSERT_TRUE(Index::from_bytes(s, cap).ok());
    for (size_t n = 0; n < s.size(); n += 8) {
        auto r = Index::from_bytes(s.substr(0, n), cap);
        EXPECT_FALSE(r.ok()) << "cut at " << n;
    }
}

/* An index of many pages (64 KiB each): blocks, flows, by_dst and postings
 * on pages of their own. Version 1 (plain flows) unless compact: the
 * damage tests below place their flips by the version 1 layout. */
std::string paged_index(uint64_t* capture_bytes, bool compact = false) {
    Capture c = make_capture(storage::Format::kPcapMicro, 30000, 5000);
    IndexBuilder b(2048);
    b.set_compact_flows(compact);
    std::string s = build(c, b);
    *capture_bytes = c.start + c.bytes.size();
    return s;
}

IndexHeader header_of(const std::string& s) {
    IndexHeader h;
    std::memcpy(&h, s.data(), sizeof(h));
    return h;
}

size_t page_of(const IndexHeader& h, uint64_t offset) {
    return (offset - h.blocks_offset) >> h.page_shift;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

TEST(IndexFile, FlippedByteInTheHeaderPageTableOrBlocksFailsTheLoad) {
    uint64_t cap;
    std::string s = paged_index(&cap);
    const IndexHeader h = header_of(s);
    ASSERT_GT(h.page_count, 8u);
    ASSERT_TRUE(Index::from_bytes(s, cap).ok());
    for (size_t at = h.pages_offset; at < h.flows_offset; at += 97) {
        std::string t = s;
        t[at] ^= 0x10;
        auto r = Index::from_bytes(t, cap);
        ASSERT_FALSE(r.ok()) << at;
        EXPECT_TRUE(starts_with(r.error(), "checksum mismatch")) << at << ": " << r.error();
    }
    // In the header (past magic and version): the header's own checksum.
    for (size_t at = 16; at < sizeof(IndexHeader); at++) {
        std::string t = s;
        t[at] ^= 0x01;
        auto r = Index::from_bytes(t, cap);
        EXPECT_FALSE(r.ok()) << at;
    }
    std::string t = s;
    t[0] = 'X';
    auto r = Index::from_bytes(t, cap);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().find("bad magic"), std::string::npos);
}

/* Past the block table, a damaged page is found when it is used, and only
 * what lies on it fails. */
TEST(IndexFile, FlippedByteInAFlowFailsItsCheckOnly) {
    uint64_t cap;
    std::string s = paged_index(&cap);
    const IndexHeader h = header_of(s);
    const size_t n = h.flow_count;
    ASSERT_EQ(n, 5000u);
    for (size_t flow : {size_t(1200), size_t(2500), n - 1}) {
        SCOPED_TRACE(flow);
        const uint64_t off = h.flows_offset + flow * sizeof(FlowEntry);
        std::string t = s;
        t[off + offsetof(FlowKey, sport)] ^= 0x04;
        auto r = Index::from_bytes(t, cap);
        ASSERT_TRUE(r.ok()) << r.error();
        const Index& ix = *r;
        auto bad = ix.check_flows(flow, 1);
        ASSERT_FALSE(bad.ok());
        EXPECT_TRUE(starts_with(bad.error(), "checksum mismatch")) << bad.error();
        EXPECT_FALSE(ix.check_flows(0, n).ok());
        EXPECT_FALSE(ix.check_postings(flow).ok());
        // A flow on another page is fine.
        size_t other = page_of(h, off) == page_of(h, h.flows_offset) ? n - 1 : 0;
        ASSERT_NE(page_of(h, h.flows_offset + other * sizeof(FlowEntry)), page_of(h, off));
        EXPECT_TRUE(ix.check_flows(other, 1).ok());
        const uint64_t other_postings =
            h.postings_offset + 4 * uint64_t(ix.flows()[other].postings);
        if (page_of(h, other_postings) != page_of(h, off)) {
            EXPECT_TRUE(ix.check_postings(other).ok());
        }
        // A lookup that reads the damaged flow still names it (then its
        // check refuses it).
        const Index whole = *Index::from_bytes(s, cap);
        std::vector<uint32_t> got;
        ix.flows_with_address(whole.flows()[flow].key.src, got);
        EXPECT_NE(std::find(got.begin(), got.end(), uint32_t(flow)), got.end());
    }
}

TEST(IndexFile, FlippedByteInPostingsOrByDstFailsTheirCheck) {
    uint64_t cap;
    std::string s = paged_index(&cap);
    const IndexHeader h = header_of(s);
    const Index whole = *Index::from_bytes(s, cap);
    {
        // The last flow's postings.
        const size_t flow = h.flow_count - 1;
        const FlowEntry& f = whole.flows()[flow];
        ASSERT_GT(f.postings_count, 0u);
        std::string t = s;
        t[h.postings_offset + 4 * uint64_t(f.postings)] ^= 0x01;
        auto r = Index::from_bytes(t, cap);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_TRUE(r->check_flows(flow, 1).ok());
        auto bad = r->check_postings(flow);
        ASSERT_FALSE(bad.ok());
        EXPECT_TRUE(starts_with(bad.error(), "checksum mismatch")) << bad.error();
        EXPECT_TRUE(r->check_postings(0).ok());
    }
    {
        std::string t = s;
        const size_t j = whole.by_dst().size() / 2;
        t[h.by_dst_offset + 4 * j] ^= 0x01;
        auto r = Index::from_bytes(t, cap);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_FALSE(r->check_by_dst(j, 1).ok());
        EXPECT_FALSE(r->check_by_dst(0, r->by_dst().size()).ok());
        EXPECT_TRUE(r->check_flows(0, 1).ok());
    }
}

/* The page table, pages_crc and header_crc of t recomputed (its other
 * bytes as they are). */
std::string reseal(std::string t) {
    IndexHeader x = header_of(t);
    const uint64_t page = uint64_t{1} << x.page_shift;
    for (uint32_t i = 0; i < x.page_count; i++) {
        const uint64_t start = x.blocks_offset + i * page;
        uint32_t c = crc32c(t.data() + start, std::min<uint64_t>(page, t.size() - start));
        std::memcpy(t.data() + x.pages_offset + 4 * i, &c, 4);
    }
    x.pages_crc = crc32c(t.data() + x.pages_offset, 4 * x.page_count);
    x.header_crc = 0;
    x.header_crc = crc32c(&x, sizeof(x));
    std::memcpy(t.data(), &x, sizeof(x));
    return t;
}

TEST(IndexFile, NewerVersionNamesBoth) {
    uint64_t cap;
    std::string s = sample_index(&cap);
    IndexHeader h;
    std::memcpy(&h, s.data(), sizeof(h));
    h.version = kIndexVersion + 1;
    h.header_crc = 0;
    h.header_crc = crc32c(&h, sizeof(h));
    std::memcpy(s.data(), &h, sizeof(h));
    auto r = Index::from_bytes(s, cap);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), "index version 5 is newer than this capq's 4");
}

TEST(IndexFile, StaleWhenTheCaptureChanged) {
    uint64_t cap;
    std::string s = sample_index(&cap);
    auto r = Index::from_bytes(s, cap - 1);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), "stale index: describes " + std::to_string(cap) + " bytes, file has " +
                             std::to_string(cap - 1));
    // A final index of a file that has grown since is stale too.
    EXPECT_FALSE(Index::from_bytes(s, cap + 100).ok());
    EXPECT_TRUE(Index::from_bytes(s, ~0ull).ok());
}

/* A body whose checksums are right but whose contents are not: the reader
 * must still refuse (a writer bug must not become a wrong answer), at load
 * for the blocks, in the checks for the rest. */
/* Version 1 (plain flows): entries changed in place. */
TEST(IndexFile, InconsistentContentsAreRefused) {
    uint64_t cap;
    std::string s = sample_index(&cap, false);
    const IndexHeader h = header_of(s);
    ASSERT_TRUE(Index::from_bytes(reseal(s), cap).ok());
    {  // a posting naming a block past the end
        std::string t = s;
        uint32_t v = h.block_count;
        std::memcpy(t.data() + h.postings_offset, &v, 4);
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        auto bad = r->check_postings(0);
        ASSERT_FALSE(bad.ok());
        EXPECT_NE(bad.error().find("block number"), std::string::npos) << bad.error();
    }
    {  // postings not ascending
        std::string t = s;
        const Index ix = *Index::from_bytes(s, cap);
        size_t flow = 0;
        while (ix.flows()[flow].postings_count < 2) flow++;
        const uint64_t at = h.postings_offset + 4 * uint64_t(ix.flows()[flow].postings);
        std::memcpy(t.data() + at + 4, t.data() + at, 4);
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        auto bad = r->check_postings(flow);
        ASSERT_FALSE(bad.ok());
        EXPECT_NE(bad.error().find("not ascending"), std::string::npos) << bad.error();
    }
    {  // a flow's postings past the array
        std::string t = s;
        uint32_t v = uint32_t(h.postings_count);
        std::memcpy(t.data() + h.flows_offset + offsetof(FlowEntry, postings), &v, 4);
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        auto bad = r->check_flows(0, 1);
        ASSERT_FALSE(bad.ok());
        EXPECT_NE(bad.error().find("postings out of range"), std::string::npos) << bad.error();
        EXPECT_TRUE(r->check_flows(1, 1).ok());
    }
    {  // a non-IP flow among the IP ones
        std::string t = s;
        t[h.flows_offset + 5 * sizeof(FlowEntry) + offsetof(FlowKey, kind)] = 1;
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_FALSE(r->check_flows(5, 1).ok());
    }
    {  // by_dst naming a flow past the end
        std::string t = s;
        uint32_t v = h.flow_count;
        std::memcpy(t.data() + h.by_dst_offset + 4, &v, 4);
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_FALSE(r->check_by_dst(1, 1).ok());
        EXPECT_TRUE(r->check_by_dst(0, 1).ok());
        // The lookup never hands it out.
        std::vector<uint32_t> got;
        const uint8_t any[16] = {198, 19};
        r->flows_with_address(any, got);
        for (uint32_t f : got) EXPECT_LT(f, h.flow_count);
    }
    {  // packets of the flows not those of the file
        std::string t = s;
        uint64_t v = 1 << 20;
        std::memcpy(t.data() + h.flows_offset + offsetof(FlowEntry, packets), &v, 8);
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_TRUE(r->check_flows(0, 1).ok());
        EXPECT_FALSE(r->check_flows(0, h.flow_count).ok());
    }
    {  // a gap between blocks
        std::string t = s;
        uint64_t v;
        std::memcpy(&v, t.data() + h.blocks_offset + sizeof(BlockEntry), 8);
        v += 4;
        std::memcpy(t.data() + h.blocks_offset + sizeof(BlockEntry), &v, 8);
        EXPECT_FALSE(Index::from_bytes(reseal(t), cap).ok());
    }
    {  // a section offset out of the file, misaligned, overlapping
        std::string t = s;
        IndexHeader x = h;
        x.flows_offset = t.size() + 8;
        std::memcpy(t.data(), &x, sizeof(x));
        EXPECT_FALSE(Index::from_bytes(reseal(t), cap).ok());
        x = h;
        x.flows_offset += 4;
        std::memcpy(t.data(), &x, sizeof(x));
        EXPECT_FALSE(Index::from_bytes(reseal(t), cap).ok());
        x = h;
        x.by_dst_offset -= 8;
        std::memcpy(t.data(), &x, sizeof(x));
        EXPECT_FALSE(Index::from_bytes(reseal(t), cap).ok());
        x = h;
        x.non_ip_flows = h.flow_count + 1;
        std::memcpy(t.data(), &x, sizeof(x));
        EXPECT_FALSE(Index::from_bytes(reseal(t), cap).ok());
    }
}

TEST(IndexFile, Crc32cKnownValues) {
    // RFC 3720's test vectors.
    std::string zeros(32, '\0'), ones(32, '\xff');
    EXPECT_EQ(crc32c(zeros.data(), 32), 0x8a9136aau);
    EXPECT_EQ(crc32c(ones.data(), 32), 0x62a8ab43u);
    EXPECT_EQ(crc32c("123456789", 9), 0xe3069283u);
    // Incremental equals whole.
    std::string s = sample_index();
    uint32_t whole = crc32c(s.data(), s.size());
    uint32_t part = crc32c(s.data(), 13);
    EXPECT_EQ(crc32c(s.data() + 13, s.size() - 13, part), whole);
}

/* Bit by bit, from the polynomial: what the fast paths must equal, at
 * every length and alignment. */
uint32_t crc32c_reference(const uint8_t* p, size_t n) {
    uint32_t c = ~0u;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    return ~c;
}

TEST(IndexFile, Crc32cEqualsTheBitwiseDefinition) {
    std::vector<uint8_t> buf(1100);
    for (size_t i = 0; i < buf.size(); i++) buf[i] = uint8_t(i * 151u + (i >> 3));
    for (size_t start = 0; start < 9; start++)
        for (size_t n = 0; n + start <= buf.size(); n += 1 + n / 7)
            ASSERT_EQ(crc32c(buf.data() + start, n), crc32c_reference(buf.data() + start, n))
                << start << " " << n;
}

struct TempDir {
    std::string path;
    int fd;
    TempDir() {
        char t[] = "/tmp/linecap-idx-XXXXXX";
        path = mkdtemp(t);
        fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    ~TempDir() {
        close(fd);
        std::filesystem::remove_all(path);
    }
};

TEST(IndexFile, WriteAndLoad) {
    TempDir d;
    uint64_t cap;
    std::string s = sample_index(&cap);
    auto bytes = std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    ASSERT_TRUE(write_index_file(d.fd, ".a.pcap.idx", bytes, 0600).ok());
    EXPECT_FALSE(std::filesystem::exists(d.path + "/.a.pcap.idx.partial"));
    struct stat st;
    ASSERT_EQ(stat((d.path + "/.a.pcap.idx").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(uint64_t(st.st_size), s.size());
    auto r = Index::load(d.path + "/.a.pcap.idx", cap);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->flows().size(), 40u);
    // Replacing an existing index, and a leftover .partial of ours.
    int fd = openat(d.fd, ".a.pcap.idx.partial", O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "junk", 4), 4);
    close(fd);
    ASSERT_TRUE(write_index_file(d.fd, ".a.pcap.idx", bytes, 0640).ok());
    EXPECT_FALSE(std::filesystem::exists(d.path + "/.a.pcap.idx.partial"));
    ASSERT_EQ(stat((d.path + "/.a.pcap.idx").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640u);
    EXPECT_TRUE(Index::load(d.path + "/.a.pcap.idx", cap).ok());

    auto missing = Index::load(d.path + "/.none.idx", cap);
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.code(), ENOENT);
    auto stale = Index::load(d.path + "/.a.pcap.idx", cap - 1);
    ASSERT_FALSE(stale.ok());
    EXPECT_NE(stale.error().find("stale index"), std::string::npos);
    EXPECT_NE(stale.error().find(".a.pcap.idx"), std::string::npos);
}

TEST(IndexFile, OwnerAndGroup) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to give a file away";
    TempDir d;
    std::string s = sample_index();
    auto bytes = std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    ASSERT_TRUE(write_index_file(d.fd, ".c.idx", bytes, 0640, 65534, 65533).ok());
    struct stat st;
    ASSERT_EQ(stat((d.path + "/.c.idx").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u);
    EXPECT_EQ(st.st_gid, 65533u);
    EXPECT_EQ(st.st_mode & 0777, 0640u);
    // The leftover of a crash is that owner's: replaced. Another user's
    // file at the name is not.
    int fd = openat(d.fd, ".c.idx.partial", O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fchown(fd, 65534, 65533), 0);
    close(fd);
    EXPECT_TRUE(write_index_file(d.fd, ".c.idx", bytes, 0640, 65534, 65533).ok());
    EXPECT_FALSE(std::filesystem::exists(d.path + "/.c.idx.partial"));
    fd = openat(d.fd, ".c.idx.partial", O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(fchown(fd, 12345, 12345), 0);
    close(fd);
    EXPECT_FALSE(write_index_file(d.fd, ".c.idx", bytes, 0640, 65534, 65533).ok());
    EXPECT_TRUE(std::filesystem::exists(d.path + "/.c.idx.partial"));
}

TEST(IndexFile, RefusesALinkAtThePartialName) {
    TempDir d;
    std::string target = d.path + "/victim";
    {
        int fd = open(target.c_str(), O_WRONLY | O_CREAT, 0600);
        ASSERT_EQ(write(fd, "keep", 4), 4);
        close(fd);
    }
    ASSERT_EQ(symlink(target.c_str(), (d.path + "/.b.idx.partial").c_str()), 0);
    std::string s = sample_index();
    auto bytes = std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    Status st = write_index_file(d.fd, ".b.idx", bytes);
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(std::filesystem::file_size(target), 4u);
    EXPECT_TRUE(std::filesystem::is_symlink(d.path + "/.b.idx.partial"));
    EXPECT_FALSE(std::filesystem::exists(d.path + "/.b.idx"));
}

TEST(IndexFile, Naming) {
    EXPECT_EQ(index_path_for("/d/cap-0001.pcap"), "/d/.cap-0001.pcap.idx");
    EXPECT_EQ(index_path_for("/d/.cap-0001.pcap.partial"), "/d/.cap-0001.pcap.partial.idx");
    EXPECT_EQ(index_path_for("cap.pcap"), ".cap.pcap.idx");
    EXPECT_EQ(index_path_for("rel/dir/x.pcapng"), "rel/dir/.x.pcapng.idx");
    EXPECT_EQ(index_leaf_for("x.pcap"), ".x.pcap.idx");
    EXPECT_EQ(index_leaf_for(".x.pcap.partial"), ".x.pcap.partial.idx");
    EXPECT_TRUE(is_index_leaf(".x.pcap.idx"));
    EXPECT_TRUE(is_index_leaf(".x.pcap.idx.partial"));
    EXPECT_TRUE(is_index_leaf(".x.pcap.partial.idx"));
    EXPECT_FALSE(is_index_leaf("x.pcap"));
    EXPECT_FALSE(is_index_leaf(".x.pcap.partial"));
    EXPECT_FALSE(is_index_leaf("x.idx"));
    EXPECT_FALSE(is_index_leaf(".idx"));
}

/* The lookup's binary searches probe unverified entries: damage on a page
 * they pass through may mislead a probe, but the answer is then either
 * the undamaged index's (the place found is proved by its verified
 * neighbours) or every flow (refused later by check_flows()), never a set
 * missing a flow. */
TEST(IndexFile, DamagedProbesNeverLoseAFlow) {
    uint64_t cap;
    std::string s = paged_index(&cap);
    const IndexHeader h = header_of(s);
    const Index whole = *Index::from_bytes(s, cap);
    const size_t n = h.flow_count, ip = h.non_ip_flows;
    ASSERT_GT(n - ip, 1000u);
    // The damage: the first byte of the src of every entry starting on one
    // page of the flow table (so a misled search ends beside that page, on
    // an intact one), for each such page; or one by_dst entry.
    std::vector<std::vector<uint64_t>> damages;
    const uint64_t blocks_end = h.blocks_offset + uint64_t(h.block_count) * sizeof(BlockEntry);
    for (size_t first = page_of(h, blocks_end) + 1; first < page_of(h, h.by_dst_offset); first++) {
        std::vector<uint64_t> at;
        for (size_t f = ip; f < n; f++) {
            const uint64_t off = h.flows_offset + f * sizeof(FlowEntry);
            if (page_of(h, off) == first) at.push_back(off + offsetof(FlowKey, src));
        }
        if (!at.empty()) damages.push_back(at);
    }
    ASSERT_GT(damages.size(), 3u);
    damages.push_back({h.by_dst_offset + 4 * ((n - ip) / 2)});
    size_t exact = 0, all = 0;
    for (const auto& at : damages) {
        for (uint8_t flip : {uint8_t(0x80), uint8_t(0x01)}) {
            std::string t = s;
            for (uint64_t x : at) t[x] ^= flip;
            auto r = Index::from_bytes(t, cap);
            ASSERT_TRUE(r.ok()) << r.error();
            for (size_t f = ip; f < n; f += 37) {
                for (const uint8_t* a : {whole.flows()[f].key.src, whole.flows()[f].key.dst}) {
                    std::vector<uint32_t> want, got;
                    whole.flows_with_address(a, want);
                    r->flows_with_address(a, got);
                    std::sort(want.begin(), want.end());
                    std::sort(got.begin(), got.end());
                    got.erase(std::unique(got.begin(), got.end()), got.end());
                    want.erase(std::unique(want.begin(), want.end()), want.end());
                    if (got.size() == n) {
                        all++;
                        continue;
                    }
                    ASSERT_EQ(got, want) << "damage at " << at[0] << ", flow " << f;
                    exact++;
                }
            }
        }
    }
    EXPECT_GT(exact, 0u);
    EXPECT_GT(all, 0u);
}

/* ------------------------------------------ version 4: compressed flow groups */

/* An index of a mixed capture: IPv4 and IPv6 UDP flows between addresses
 * drawn from small pools (so an address is in many flows, on both sides,
 * across groups), and `non_ip` ARP-like flows (kLink, first in the file);
 * serialized with compressed groups or plain. */
struct MixedIndex {
    std::string compact, plain;
    uint64_t capture_bytes = 0;
    std::vector<std::array<uint8_t, 16>> addrs;  // the pools'
};

MixedIndex mixed_index(uint32_t flows, uint32_t non_ip) {
    MixedIndex m;
    IndexBuilder b(4096);
    uint16_t lt[1] = {1};
    b.begin(CaptureFormat::kPcapNano, lt, 24);
    for (uint32_t i = 0; i < 300; i++) {
        std::array<uint8_t, 16> a{};
        if (i % 3 == 0) {
            a[0] = 0x20;
            a[1] = 0x01;
            a[2] = 0x0d;
            a[3] = 0xb8;
            a[14] = uint8_t(i >> 8);
            a[15] = uint8_t(i);
        } else {
            a[0] = 198;
            a[1] = 18 + (i & 1);
            a[2] = uint8_t(i >> 1);
            a[3] = uint8_t(i * 37);
        }
        m.addrs.push_back(a);
    }
    uint64_t at = 24, seed = 12345;
    auto rnd = [&]() {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        return uint32_t(seed >> 33);
    };
    std::vector<uint8_t> f;
    for (uint32_t n = 0; n < flows + non_ip; n++) {
        f.assign(12, 0x02);
        if (n < non_ip) {
            f.insert(f.end(), {0x08, 0x06});
            f.resize(60, uint8_t(n));
            f[14] = uint8_t(n >> 8);
            f[15] = uint8_t(n);
            f[16] = 0x01;  // the EtherType differs per flow: one flow each
            f[12] = 0x88;
            f[13] = uint8_t(n);
        } else {
            // Both addresses of one version: IPv6 pool entries are every third.
            const bool v6 = rnd() % 3 == 0;
            auto pick = [&]() {
                for (;;) {
                    const auto& a = m.addrs[rnd() % m.addrs.size()];
                    if ((a[0] == 0x20) == v6) return a;
                }
            };
            const auto src = pick(), dst = pick();
            const uint16_t sport = uint16_t(1024 + n), dport = uint16_t(rnd() % 4 == 0 ? 53 : 443);
            if (v6) {
                f.insert(f.end(), {0x86, 0xdd});
                const size_t l3 = f.size();
                f.resize(l3 + 48, 0);
                f[l3] = 0x60;
                f[l3 + 5] = 8;
                f[l3 + 6] = 17;
                f[l3 + 7] = 64;
                std::copy(src.begin(), src.end(), &f[l3 + 8]);
                std::copy(dst.begin(), dst.end(), &f[l3 + 24]);
                f[l3 + 40] = uint8_t(sport >> 8);
                f[l3 + 41] = uint8_t(sport);
                f[l3 + 42] = uint8_t(dport >> 8);
                f[l3 + 43] = uint8_t(dport);
                f[l3 + 45] = 8;
            } else {
                f.insert(f.end(), {0x08, 0x00});
                const size_t l3 = f.size();
                f.resize(l3 + 28, 0);
                f[l3] = 0x45;
                f[l3 + 3] = 28;
                f[l3 + 8] = 64;
                f[l3 + 9] = 17;
                std::copy(src.begin(), src.begin() + 4, &f[l3 + 12]);
                std::copy(dst.begin(), dst.begin() + 4, &f[l3 + 16]);
                f[l3 + 20] = uint8_t(sport >> 8);
                f[l3 + 21] = uint8_t(sport);
                f[l3 + 22] = uint8_t(dport >> 8);
                f[l3 + 23] = uint8_t(dport);
            }
        }
        const uint32_t packets = 1 + rnd() % 3;
        for (uint32_t k = 0; k < packets; k++) {
            const uint32_t rec = 16 + uint32_t(f.size());
            b.add(at, rec, 1700000000000000000ull + at, 0, f.data(), uint32_t(f.size()),
                  uint32_t(f.size()));
            at += rec;
        }
    }
    m.capture_bytes = at;
    m.compact = b.serialize(at);
    b.set_compact_flows(false);
    m.plain = b.serialize(at);
    return m;
}

IndexHeaderV4Ext ext_of(const std::string& s) {
    IndexHeaderV4Ext x;
    std::memcpy(&x, s.data() + sizeof(IndexHeader), sizeof(x));
    return x;
}

/* x written into t with its checksum recomputed. */
void put_ext(std::string& t, IndexHeaderV4Ext x) {
    x.ext_crc = 0;
    x.ext_crc = crc32c(&x, sizeof(x));
    std::memcpy(t.data() + sizeof(IndexHeader), &x, sizeof(x));
}

FlowFence fence_of(const std::string& s, size_t g) {
    FlowFence f;
    std::memcpy(&f, s.data() + ext_of(s).fences_offset + g * sizeof(FlowFence), sizeof(f));
    return f;
}

void put_fence(std::string& t, size_t g, const FlowFence& f) {
    std::memcpy(t.data() + ext_of(t).fences_offset + g * sizeof(FlowFence), &f, sizeof(f));
}

TEST(CompactFlows, SameFlowsAndLookupsAsVersionOne) {
    MixedIndex m = mixed_index(20000, 100);
    auto c = Index::from_bytes(m.compact, m.capture_bytes);
    auto p = Index::from_bytes(m.plain, m.capture_bytes);
    ASSERT_TRUE(c.ok()) << c.error();
    ASSERT_TRUE(p.ok()) << p.error();
    EXPECT_EQ(c->header().version, 4u);
    EXPECT_EQ(p->header().version, 1u);
    const IndexHeaderV4Ext x = ext_of(m.compact);
    EXPECT_EQ(x.group_flows, kFlowGroupFlows);
    EXPECT_EQ(x.group_count, (20100 + kFlowGroupFlows - 1) / kFlowGroupFlows);
    EXPECT_EQ(c->non_ip_flows(), 100u);
    // Smaller: the flow section was most of it.
    EXPECT_LT(m.compact.size() * 2, m.plain.size()) << m.compact.size() << " vs " << m.plain.size();
    const size_t n = p->flows().size();
    ASSERT_EQ(c->flows().size(), n);
    // Lookups first, on a fresh index (groups loaded by the lookups only).
    std::mt19937_64 rng(7);
    for (int t = 0; t < 400; t++) {
        std::array<uint8_t, 16> a = m.addrs[rng() % m.addrs.size()];
        if (t % 4 == 3) a[rng() % 4] ^= uint8_t(1 + rng() % 255);  // mostly absent
        std::vector<uint32_t> got, want;
        c->flows_with_address(a.data(), got);
        p->flows_with_address(a.data(), want);
        std::sort(got.begin(), got.end());
        std::sort(want.begin(), want.end());
        ASSERT_EQ(got, want) << t;
        ASSERT_LT(got.size(), n);  // never the every-flow answer of a damaged index
    }
    ASSERT_TRUE(p->check_flows(0, n).ok());
    ASSERT_TRUE(c->check_flows(0, n).ok());
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(std::memcmp(&c->flows()[i], &p->flows()[i], sizeof(FlowEntry)), 0) << i;
    ASSERT_TRUE(
        std::equal(c->by_dst().begin(), c->by_dst().end(), p->by_dst().begin(), p->by_dst().end()));
    for (size_t i = 0; i < n; i++) {
        ASSERT_TRUE(c->check_postings(i).ok()) << i;
        auto a = c->blocks_of(i), b = p->blocks_of(i);
        ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << i;
    }
    check_lookup(*c);
}

/* A pair is found by source alone: with by_dst's pages damaged (and the
 * page table not agreeing), a pair lookup still answers exactly, where a
 * lookup by one address reads by_dst and gives every flow. (Version 4:
 * its groups have checksums of their own, so no flow shares a page check
 * with by_dst.) A damaged group the pair's run is in gives every flow. */
TEST(CompactFlows, PairLookupReadsNoByDst) {
    MixedIndex m = mixed_index(20000, 100);
    {
        const std::string* layout = &m.compact;
        const IndexHeader h = header_of(*layout);
        const Index whole = *Index::from_bytes(*layout, m.capture_bytes);
        const size_t n = h.flow_count;
        ASSERT_TRUE(whole.check_flows(0, n).ok());
        std::string t = *layout;
        const uint64_t by_dst_bytes = 4 * uint64_t(n - h.non_ip_flows);
        for (uint64_t o = 0; o < by_dst_bytes; o += 512) t[h.by_dst_offset + o] ^= 0x5a;
        auto r = Index::from_bytes(t, m.capture_bytes);
        ASSERT_TRUE(r.ok()) << r.error();
        std::mt19937_64 rng(11);
        size_t found = 0;
        for (int k = 0; k < 200; k++) {
            const FlowKey& key = whole.flows()[100 + rng() % (n - 100)].key;
            std::vector<uint32_t> got, want;
            r->flows_with_pair(key.dst, key.src, got);
            for (size_t i = 100; i < n; i++)
                if (std::memcmp(whole.flows()[i].key.src, key.src, 16) == 0 &&
                    std::memcmp(whole.flows()[i].key.dst, key.dst, 16) == 0)
                    want.push_back(uint32_t(i));
            std::sort(got.begin(), got.end());
            ASSERT_EQ(got, want) << k;
            found += got.size();
        }
        EXPECT_GE(found, 200u);
        const FlowKey& key = whole.flows()[n / 2].key;
        std::vector<uint32_t> all;
        r->flows_with_address(key.dst, all);
        EXPECT_EQ(all.size(), n);
        {
            // The group holding the pair's flow damaged (its crc, the page
            // table agreeing): every flow.
            const size_t g = (n / 2) / kFlowGroupFlows;
            const FlowFence f = fence_of(m.compact, g);
            std::string u = m.compact;
            u[h.flows_offset + f.offset + f.bytes / 2] ^= 0x20;
            auto d = Index::from_bytes(reseal(u), m.capture_bytes);
            ASSERT_TRUE(d.ok()) << d.error();
            std::vector<uint32_t> got;
            d->flows_with_pair(key.src, key.dst, got);
            EXPECT_EQ(got.size(), n);
        }
    }
}

TEST(CompactFlows, EmptyAndNonIpOnly) {
    for (uint32_t non_ip : {0u, 70u}) {
        MixedIndex m = mixed_index(0, non_ip);
        auto c = Index::from_bytes(m.compact, m.capture_bytes);
        ASSERT_TRUE(c.ok()) << c.error();
        EXPECT_EQ(c->flows().size(), non_ip);
        ASSERT_TRUE(c->check_flows(0, non_ip).ok());
        std::vector<uint32_t> got;
        c->flows_with_address(m.addrs[1].data(), got);
        EXPECT_TRUE(got.empty());
    }
}

/* A flipped byte in one group's frame: that group is refused when used,
 * the others are not; a lookup that reads it gives every flow. */
TEST(CompactFlows, DamagedGroupIsRefusedOnly) {
    MixedIndex m = mixed_index(5000, 10);
    const IndexHeader h = header_of(m.compact);
    const size_t per = kFlowGroupFlows, g = 40;
    const FlowFence f = fence_of(m.compact, g);
    const Index whole = *Index::from_bytes(m.compact, m.capture_bytes);
    ASSERT_TRUE(whole.check_flows(0, h.flow_count).ok());
    {
        // The page table not updated: refused at load (a page the block
        // table shares) or when the group is used.
        std::string t = m.compact;
        t[h.flows_offset + f.offset + f.bytes / 2] ^= 0x20;
        auto r = Index::from_bytes(t, m.capture_bytes);
        EXPECT_FALSE(r.ok() && r->check_flows(g * per, 1).ok());
    }
    {
        std::string t = m.compact;
        t[h.flows_offset + f.offset + f.bytes / 2] ^= 0x20;
        t = reseal(t);  // the page table agrees: the group's own crc catches it
        auto r = Index::from_bytes(t, m.capture_bytes);
        ASSERT_TRUE(r.ok()) << r.error();
        auto bad = r->check_flows(g * per + 3, 1);
        ASSERT_FALSE(bad.ok());
        EXPECT_TRUE(starts_with(bad.error(), "checksum mismatch (index flow group 40)"))
            << bad.error();
        EXPECT_FALSE(r->check_flows(0, h.flow_count).ok());
        EXPECT_FALSE(r->check_postings(g * per).ok());
        EXPECT_TRUE(r->check_flows((g + 1) * per, per).ok());
        EXPECT_TRUE(r->check_flows(0, g * per).ok());
        std::vector<uint32_t> got;
        r->flows_with_address(whole.flows()[g * per + 5].key.src, got);
        EXPECT_EQ(got.size(), h.flow_count);
    }
}

/* Compressed bytes that do not decompress, or decompress to the wrong
 * size, with checksums that agree: refused. */
TEST(CompactFlows, BadFrameIsRefused) {
    MixedIndex m = mixed_index(5000, 10);
    const IndexHeader h = header_of(m.compact);
    const size_t g = 7;
    FlowFence f = fence_of(m.compact, g);
    {
        std::string t = m.compact;
        t[h.flows_offset + f.offset] ^= 0xff;  // the frame's magic
        f.crc = crc32c(t.data() + h.flows_offset + f.offset, f.bytes);
        put_fence(t, g, f);
        auto r = Index::from_bytes(reseal(t), m.capture_bytes);
        ASSERT_TRUE(r.ok()) << r.error();
        auto bad = r->check_flows(g * kFlowGroupFlows, 1);
        ASSERT_FALSE(bad.ok());
        EXPECT_NE(bad.error().find("does not decompress"), std::string::npos) << bad.error();
        EXPECT_TRUE(r->check_flows(0, 1).ok());
    }
    {
        // Group 7's fence given group 6's address (fences still in
        // order): the group's entries no longer start at its fence.
        std::string t = m.compact;
        FlowFence a = fence_of(t, 7);
        std::memcpy(a.src, fence_of(t, 6).src, 16);
        put_fence(t, 7, a);
        auto r = Index::from_bytes(reseal(t), m.capture_bytes);
        ASSERT_TRUE(r.ok()) << r.error();
        const bool same =
            std::memcmp(fence_of(m.compact, 6).src, fence_of(m.compact, 7).src, 16) == 0;
        if (!same) {
            auto bad = r->check_flows(7 * kFlowGroupFlows, 1);
            ASSERT_FALSE(bad.ok());
            EXPECT_NE(bad.error().find("out of order"), std::string::npos) << bad.error();
            // Group 6's last entries are now past group 7's fence.
            EXPECT_FALSE(r->check_flows(6 * kFlowGroupFlows, 1).ok() &&
                         r->check_flows(7 * kFlowGroupFlows, 1).ok());
        }
    }
    {
        // Two fences' addresses swapped (out of order): both groups
        // refused, a lookup that relies on either gives every flow.
        std::string t = m.compact;
        FlowFence a = fence_of(t, 20), b = fence_of(t, 30);
        std::swap_ranges(a.src, a.src + 16, b.src);
        put_fence(t, 20, a);
        put_fence(t, 30, b);
        auto r = Index::from_bytes(reseal(t), m.capture_bytes);
        ASSERT_TRUE(r.ok()) << r.error();
        if (std::memcmp(a.src, b.src, 16) != 0) {
            EXPECT_FALSE(r->check_flows(20 * kFlowGroupFlows, 1).ok());
            auto bad = r->check_flows(30 * kFlowGroupFlows, 1);
            ASSERT_FALSE(bad.ok());
            EXPECT_NE(bad.error().find("out of order"), std::string::npos) << bad.error();
            const Index whole = *Index::from_bytes(m.compact, m.capture_bytes);
            ASSERT_TRUE(whole.check_flows(0, h.flow_count).ok());
            std::vector<uint32_t> got;
            r->flows_with_address(whole.flows()[25 * kFlowGroupFlows].key.src, got);
            std::vector<uint32_t> want;
            whole.flows_with_address(whole.flows()[25 * kFlowGroupFlows].key.src, want);
            // Either the right flows (the place proven by intact fences)
            // or every flow: never fewer.
            EXPECT_TRUE(got.size() == h.flow_count || got == want);
        }
    }
    {
        // A frame moved off its place: its group refused, not the others.
        std::string t = m.compact;
        FlowFence a = fence_of(t, 3);
        a.offset += 1;
        put_fence(t, 3, a);
        auto r = Index::from_bytes(reseal(t), m.capture_bytes);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_FALSE(r->check_flows(3 * kFlowGroupFlows, 1).ok());
        EXPECT_TRUE(r->check_flows(0, 1).ok());
        // Past the groups' bytes.
        a.offset = uint32_t(ext_of(t).groups_bytes);
        put_fence(t, 3, a);
        auto r2 = Index::from_bytes(reseal(t), m.capture_bytes);
        ASSERT_TRUE(r2.ok()) << r2.error();
        auto bad = r2->check_flows(3 * kFlowGroupFlows, 1);
        ASSERT_FALSE(bad.ok());
        EXPECT_NE(bad.error().find("outside the groups"), std::string::npos) << bad.error();
    }
}

/* The extension header's fields out of range or inconsistent, with its
 * checksum right: refused at load; its checksum wrong: refused. */
TEST(CompactFlows, BadExtensionHeaderIsRefused) {
    MixedIndex m = mixed_index(3000, 5);
    const IndexHeaderV4Ext x = ext_of(m.compact);
    ASSERT_TRUE(Index::from_bytes(m.compact, m.capture_bytes).ok());
    auto refused = [&](IndexHeaderV4Ext y, const char* what) {
        std::string t = m.compact;
        put_ext(t, y);
        auto r = Index::from_bytes(t, m.capture_bytes);
        EXPECT_FALSE(r.ok()) << what;
    };
    IndexHeaderV4Ext y = x;
    y.group_count++;
    refused(y, "group_count + 1");
    y = x;
    y.group_count--;
    refused(y, "group_count - 1");
    y = x;
    y.group_flows = 0;
    refused(y, "group_flows 0");
    y = x;
    y.group_flows = 128;
    refused(y, "group_flows 128");
    y = x;
    y.dst_fence_count = 1;
    refused(y, "dst_fence_count");
    y = x;
    y.fences_offset = m.compact.size();
    refused(y, "fences past the end");
    y = x;
    y.fences_offset += 4;
    refused(y, "fences misaligned");
    y = x;
    y.dst_fences_offset = y.fences_offset;
    refused(y, "dst fences over the fences");
    y = x;
    y.groups_bytes = m.compact.size();
    refused(y, "groups past the end");
    y = x;
    y.flow_codec = uint32_t(Codec::kGzip);
    refused(y, "codec");
    std::string t = m.compact;
    t[sizeof(IndexHeader) + 3] ^= 1;  // the ext's checksum no longer agrees
    EXPECT_FALSE(Index::from_bytes(t, m.capture_bytes).ok());
    // A version 4 header without room for the extension.
    t = m.compact;
    IndexHeader h = header_of(t);
    h.header_bytes = sizeof(IndexHeader);
    h.header_crc = 0;
    h.header_crc = crc32c(&h, sizeof(h));
    std::memcpy(t.data(), &h, sizeof(h));
    EXPECT_FALSE(Index::from_bytes(t, m.capture_bytes).ok());
}

/* The writer's cost of the compressed groups, printed (not asserted). */
TEST(CompactFlows, SerializeCostPrinted) {
    IndexBuilder b(256u << 10);
    uint16_t lt[1] = {1};
    b.begin(CaptureFormat::kPcapMicro, lt, 24);
    uint64_t at = 24;
    for (uint32_t n = 0; n < 200000; n++) {
        auto f = udp_frame(n, 60);
        b.add(at, 76, 1700000000000000000ull + n, 0, f.data(), 60, 60);
        at += 76;
    }
    for (bool compact : {false, true}) {
        b.set_compact_flows(compact);
        auto t0 = std::chrono::steady_clock::now();
        std::string s = b.serialize(at);
        auto t1 = std::chrono::steady_clock::now();
        std::printf("serialize, 200000 flows, %s: %.1f ms, %zu bytes\n",
                    compact ? "version 4" : "version 1",
                    std::chrono::duration<double, std::milli>(t1 - t0).count(), s.size());
    }
}

/* Version 4: damaged fences (their page not resealed) mislead the
 * binary search's unverified probes; a lookup still gives the flows with
 * the address, or every flow, never fewer. */
TEST(CompactFlows, DamagedFencesNeverLoseAFlow) {
    MixedIndex m = mixed_index(60000, 10);
    const std::string& s = m.compact;
    const uint64_t cap = m.capture_bytes;
    const IndexHeader h = header_of(s);
    const IndexHeaderV4Ext x = ext_of(s);
    const Index whole = *Index::from_bytes(s, cap);
    const size_t n = h.flow_count, ip = h.non_ip_flows;
    ASSERT_TRUE(whole.check_flows(0, n).ok());
    // Fences on pages after the block table's last (verified at load).
    const uint64_t blocks_end = x.fences_offset;
    size_t g0 = 0;
    while (g0 < x.group_count &&
           page_of(h, x.fences_offset + g0 * sizeof(FlowFence)) <= page_of(h, blocks_end))
        g0++;
    ASSERT_LT(g0 + 64, x.group_count);
    size_t exact = 0, all = 0;
    for (size_t first = g0; first + 8 < x.group_count; first += (x.group_count - g0) / 5) {
        for (uint8_t flip : {uint8_t(0x80), uint8_t(0x01)}) {
            std::string t = s;
            for (size_t g = first; g < first + 8; g++)
                t[x.fences_offset + g * sizeof(FlowFence) + 2] ^= flip;
            auto r = Index::from_bytes(t, cap);
            ASSERT_TRUE(r.ok()) << r.error();
            for (size_t f = ip; f < n; f += 701) {
                for (const uint8_t* a : {whole.flows()[f].key.src, whole.flows()[f].key.dst}) {
                    std::vector<uint32_t> want, got;
                    whole.flows_with_address(a, want);
                    r->flows_with_address(a, got);
                    std::sort(want.begin(), want.end());
                    std::sort(got.begin(), got.end());
                    if (got.size() == n) {
                        all++;
                        continue;
                    }
                    ASSERT_EQ(got, want) << "fences " << first << ", flow " << f;
                    exact++;
                }
            }
        }
    }
    EXPECT_GT(exact, 0u);
    EXPECT_GT(all, 0u);
}

/* The flow of udp_frame(n, ...) in ix, by its lower port (n); -1 if none
 * (or if the flows do not check). */
long flow_numbered(const Index& ix, uint32_t n) {
    if (!ix.check_flows(0, ix.flows().size())) return -1;
    for (size_t i = 0; i < ix.flows().size(); i++)
        if (ix.flows()[i].key.sport == uint16_t(n)) return long(i);
    return -1;
}

/* A sample pcap index with cuts: flow 3 (which has records) cut twice,
 * flow 5 with duplicates, and flow 1000 (no record in the file) cut. The
 * builder's layout is the caller's: compact flows (version 4, the default)
 * or plain (version 3). */
std::string cut_index(uint64_t* cap, IndexBuilder& b) {
    Capture c = make_capture(storage::Format::kPcapMicro, 600, 40);
    uint16_t lt[1] = {1};
    b.begin(to_index(c.fmt), lt, c.start);
    const auto* p = reinterpret_cast<const uint8_t*>(c.bytes.data());
    b.add_records(p, c.bytes.size(), c.start);
    const uint64_t t0 = 1800000000ull * 1000000000ull;
    auto f3 = udp_frame(3, 1500), f5 = udp_frame(5, 80), f1000 = udp_frame(1000, 900);
    // The heads are shorter than the frames: the note keeps 112 bytes.
    b.add_cut(0, f3.data(), 112, t0, t0 + 5, 10, 15000, 0, 0);
    b.add_cut(0, f3.data(), 112, t0 + 9, t0 + 20, 4, 6000, 0, 0);
    b.add_cut(0, f5.data(), uint32_t(f5.size()), t0, t0, 0, 0, 2, 160);
    b.add_cut(0, f1000.data(), 112, t0 + 100, t0 + 300, 7, 6300, 1, 900);
    b.add_cut(0, f3.data(), 112, t0, t0, 0, 0, 0, 0);  // nothing: no effect
    *cap = c.start + c.bytes.size();
    return b.serialize(*cap);
}

/* Every Cuts test runs with both layouts that carry cuts: version 4
 * (compact flows, the default) and version 3 (plain flows). */
template <typename F>
void both_layouts(F&& f) {
    for (bool compact : {true, false}) {
        SCOPED_TRACE(compact ? "version 4 (compact flows)" : "version 3 (plain flows)");
        f(compact);
    }
}

uint32_t cut_version(bool compact) { return compact ? 4u : 3u; }

void cuts_round_trip(bool compact) {
    uint64_t cap;
    IndexBuilder b(4096);
    b.set_compact_flows(compact);
    std::string s = cut_index(&cap, b);
    EXPECT_EQ(b.cut_flows(), 3u);
    auto r = Index::from_bytes(s, cap);
    ASSERT_TRUE(r.ok()) << r.error();
    const Index& ix = *r;
    EXPECT_EQ(ix.header().version, cut_version(compact));
    EXPECT_EQ(ix.header().cut_count, 3u);
    ASSERT_TRUE(ix.check_cuts().ok());
    check_lookup(ix);  // flows, by_dst, postings: all whole
    const long f3 = flow_numbered(ix, 3), f5 = flow_numbered(ix, 5),
               f1000 = flow_numbered(ix, 1000);
    ASSERT_GE(f3, 0);
    ASSERT_GE(f5, 0);
    ASSERT_GE(f1000, 0);
    const CutEntry* c3 = ix.cut_of(size_t(f3));
    ASSERT_NE(c3, nullptr);
    EXPECT_EQ(c3->cut_packets, 14u);
    EXPECT_EQ(c3->cut_bytes, 21000u);
    EXPECT_EQ(c3->dup_packets, 0u);
    const CutEntry* c5 = ix.cut_of(size_t(f5));
    ASSERT_NE(c5, nullptr);
    EXPECT_EQ(c5->cut_packets, 0u);
    EXPECT_EQ(c5->dup_packets, 2u);
    EXPECT_EQ(c5->dup_bytes, 160u);
    EXPECT_EQ(ix.cut_of(size_t(flow_numbered(ix, 4))), nullptr);
    // A flow with records keeps its records' times; one with none has its
    // cut packets' times, 0 packets and no block.
    const FlowEntry& e3 = ix.flows()[size_t(f3)];
    EXPECT_GT(e3.packets, 0u);
    EXPECT_LT(e3.last_ns, 1800000000ull * 1000000000ull);
    const FlowEntry& e1000 = ix.flows()[size_t(f1000)];
    EXPECT_EQ(e1000.packets, 0u);
    EXPECT_EQ(e1000.wire_bytes, 0u);
    EXPECT_EQ(e1000.postings_count, 0u);
    EXPECT_EQ(e1000.first_ns, 1800000000ull * 1000000000ull + 100);
    EXPECT_EQ(e1000.last_ns, 1800000000ull * 1000000000ull + 300);
    const CutEntry* c1000 = ix.cut_of(size_t(f1000));
    ASSERT_NE(c1000, nullptr);
    EXPECT_EQ(c1000->cut_packets, 7u);
    EXPECT_EQ(c1000->cut_bytes, 6300u);
    EXPECT_EQ(c1000->dup_packets, 1u);
    EXPECT_EQ(c1000->dup_bytes, 900u);
    // The file's packet counts are the records'.
    uint64_t packets = 0;
    for (const FlowEntry& f : ix.flows()) packets += f.packets;
    EXPECT_EQ(packets, 600u);
    EXPECT_EQ(ix.header().packets, 600u);
}

TEST(Cuts, RoundTrip) { both_layouts(cuts_round_trip); }

void cuts_batch(bool compact) {
    Capture c = make_capture(storage::Format::kPcapMicro, 300, 20);
    const auto* p = reinterpret_cast<const uint8_t*>(c.bytes.data());
    uint16_t lt[1] = {1};
    IndexBuilder a(4096), b(4096);
    a.set_compact_flows(compact);
    b.set_compact_flows(compact);
    a.begin(to_index(c.fmt), lt, c.start);
    b.begin(to_index(c.fmt), lt, c.start);
    a.add_records(p, c.bytes.size(), c.start);
    b.add_records(p, c.bytes.size(), c.start);
    // 200 notes over 150 flows (some with records, some repeated, some
    // empty), more than one batch.
    std::vector<std::vector<uint8_t>> frames;
    std::vector<IndexBuilder::Cut> cuts;
    for (uint32_t i = 0; i < 200; i++) frames.push_back(udp_frame(i % 150, 60 + i));
    for (uint32_t i = 0; i < 200; i++)
        cuts.push_back({frames[i].data(), 64, 0, 1000 + i, 2000 + i, i % 7, (i % 7) * 100u,
                        i % 3 == 0 ? 1u : 0u, i % 3 == 0 ? 90u : 0u});
    for (const auto& x : cuts)
        a.add_cut(x.if_id, x.head, x.head_len, x.first_ns, x.last_ns, x.cut_packets, x.cut_bytes,
                  x.dup_packets, x.dup_bytes);
    b.add_cuts(cuts.data(), cuts.size());
    const std::string sa = a.serialize(c.start + c.bytes.size());
    EXPECT_TRUE(sa == b.serialize(c.start + c.bytes.size()));
    auto r = Index::from_bytes(sa, c.start + c.bytes.size());
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->header().version, cut_version(compact));
    ASSERT_TRUE(r->check_cuts().ok());
    uint64_t cut = 0, dup = 0;
    for (const CutEntry& e : r->cuts()) {
        cut += e.cut_packets;
        dup += e.dup_packets;
    }
    uint64_t want_cut = 0, want_dup = 0;
    for (const auto& x : cuts) {
        want_cut += x.cut_packets;
        want_dup += x.dup_packets;
    }
    EXPECT_EQ(cut, want_cut);
    EXPECT_EQ(dup, want_dup);
}

TEST(Cuts, BatchEqualsOneByOne) { both_layouts(cuts_batch); }

/* Nothing cut: plain flows are version 1 as before, compact flows version
 * 4 with cut_count 0; either byte for byte the index without any note. */
void cuts_nothing_cut(bool compact) {
    Capture c = make_capture(storage::Format::kPcapMicro, 300, 20);
    IndexBuilder a(4096), b(4096);
    a.set_compact_flows(compact);
    b.set_compact_flows(compact);
    const std::string plain = build(c, a);
    uint16_t lt[1] = {1};
    b.begin(to_index(c.fmt), lt, c.start);
    b.add_records(reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size(), c.start);
    auto f = udp_frame(3, 100);
    b.add_cut(0, f.data(), uint32_t(f.size()), 1, 2, 0, 0, 0, 0);
    const std::string s = b.serialize(c.start + c.bytes.size());
    EXPECT_TRUE(s == plain);
    EXPECT_EQ(header_of(s).version, compact ? 4u : 1u);
    EXPECT_EQ(header_of(s).cut_count, 0u);
    auto r = Index::from_bytes(s, c.start + c.bytes.size());
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_TRUE(r->cuts().empty());
    EXPECT_TRUE(r->check_cuts().ok());
    // The next file forgets the cuts of the last.
    uint64_t cap;
    cut_index(&cap, b);
    b.begin(to_index(c.fmt), lt, c.start);
    b.add_records(reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size(), c.start);
    EXPECT_TRUE(b.serialize(c.start + c.bytes.size()) == plain);
}

TEST(Cuts, NothingCutIsVersion1ByteForByte) { both_layouts(cuts_nothing_cut); }

void cuts_compressed(bool compact) {
    Capture c = make_capture(storage::Format::kPcapMicro, 200, 20);
    IndexBuilder b(4096);
    b.set_compact_flows(compact);
    uint16_t lt[1] = {1};
    b.begin(to_index(c.fmt), lt, c.start);
    b.set_codec(Codec::kZstd);
    b.add_records(reinterpret_cast<const uint8_t*>(c.bytes.data()), c.bytes.size(), c.start);
    b.end_block(40, 1000);
    auto f = udp_frame(3, 100);
    b.add_cut(0, f.data(), uint32_t(f.size()), 1, 2, 3, 300, 0, 0);
    auto r = Index::from_bytes(b.serialize(1040), 1040);
    ASSERT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r->header().version, cut_version(compact));
    EXPECT_EQ(r->codec(), Codec::kZstd);
    EXPECT_EQ(r->stored().size(), 1u);
    ASSERT_TRUE(r->check_cuts().ok());
    ASSERT_EQ(r->cuts().size(), 1u);
    EXPECT_EQ(r->cuts()[0].cut_packets, 3u);
}

TEST(Cuts, CompressedIsVersion3WithTheFrames) { both_layouts(cuts_compressed); }

void cuts_truncate(bool compact) {
    uint64_t cap;
    IndexBuilder b(4096);
    b.set_compact_flows(compact);
    cut_index(&cap, b);
    b.truncate(24);  // every record goes
    auto r = Index::from_bytes(b.serialize(24), 24);
    ASSERT_TRUE(r.ok()) << r.error();
    const Index& ix = *r;
    ASSERT_TRUE(ix.check_flows(0, ix.flows().size()).ok());
    ASSERT_TRUE(ix.check_cuts().ok());
    EXPECT_EQ(ix.flows().size(), 3u);  // 3, 5 and 1000, with no packet
    ASSERT_EQ(ix.cuts().size(), 3u);
    for (const FlowEntry& f : ix.flows()) EXPECT_EQ(f.packets, 0u);
    const CutEntry* c3 = ix.cut_of(size_t(flow_numbered(ix, 3)));
    ASSERT_NE(c3, nullptr);
    EXPECT_EQ(c3->cut_packets, 14u);
}

TEST(Cuts, TruncateKeepsTheCutFlows) { both_layouts(cuts_truncate); }

void cuts_damaged(bool compact) {
    uint64_t cap;
    IndexBuilder b(4096);
    b.set_compact_flows(compact);
    const std::string s = cut_index(&cap, b);
    const IndexHeader h = header_of(s);
    const uint64_t at = (h.postings_offset + 4 * h.postings_count + 7) & ~uint64_t(7);
    ASSERT_EQ(at + 3 * sizeof(CutEntry), s.size());
    {  // a flipped byte: refused by the load (here the cuts share the block
        // table's page) or else by check_cuts
        std::string t = s;
        t[at + 9] ^= 1;
        auto r = Index::from_bytes(t, cap);
        const std::string err = r.ok() ? r->check_cuts().error() : r.error();
        EXPECT_NE(err.find("checksum"), std::string::npos) << err;
    }
    {  // a flow number past the flows
        std::string t = s;
        uint32_t v = h.flow_count;
        std::memcpy(t.data() + at + 2 * sizeof(CutEntry), &v, 4);
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_FALSE(r->check_cuts().ok());
    }
    {  // not ascending
        std::string t = s;
        std::memcpy(t.data() + at + sizeof(CutEntry), t.data() + at, 4);
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        auto bad = r->check_cuts();
        ASSERT_FALSE(bad.ok());
        EXPECT_NE(bad.error().find("not ascending"), std::string::npos) << bad.error();
    }
    {  // reserved bits
        std::string t = s;
        t[at + 4] = 1;
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        EXPECT_FALSE(r->check_cuts().ok());
    }
    auto with_header = [&](std::string t, auto&& edit) {
        IndexHeader x = header_of(t);
        edit(x);
        std::memcpy(t.data(), &x, sizeof(x));
        return reseal(t);
    };
    {  // cut_count past the end, or short of it (trailing bytes)
        auto r = Index::from_bytes(with_header(s, [](IndexHeader& x) { x.cut_count = 4; }), cap);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().find("cuts past the end"), std::string::npos) << r.error();
        r = Index::from_bytes(with_header(s, [](IndexHeader& x) { x.cut_count = 2; }), cap);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().find("trailing bytes"), std::string::npos) << r.error();
    }
    {  // cuts below version 3; version 3 without cuts
        auto r = Index::from_bytes(with_header(s, [](IndexHeader& x) { x.version = 2; }), cap);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().find("below version 3"), std::string::npos) << r.error();
        uint64_t pcap;
        std::string v1 = sample_index(&pcap, false);
        r = Index::from_bytes(with_header(v1, [](IndexHeader& x) { x.version = 3; }), pcap);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().find("without cuts"), std::string::npos) << r.error();
    }
    // Every truncation is refused.
    for (size_t n = 0; n < s.size(); n += 8)
        EXPECT_FALSE(Index::from_bytes(s.substr(0, n), cap).ok()) << n;
}

TEST(Cuts, DamagedSectionsAreRefused) { both_layouts(cuts_damaged); }

/* Version 4 carries the cuts as version 3 does: after the postings, inside
 * the checksummed body, numbered in the flow order both keep; so the same
 * notes give the same cut entries and the same flows as the plain layout.
 * A damaged entry there is refused as in version 3. */
TEST(Cuts, Version4CarriesTheCutsOfVersion3) {
    uint64_t cap;
    IndexBuilder bc(4096), bp(4096);
    bp.set_compact_flows(false);
    const std::string sc = cut_index(&cap, bc), sp = cut_index(&cap, bp);
    auto c = Index::from_bytes(sc, cap);
    auto p = Index::from_bytes(sp, cap);
    ASSERT_TRUE(c.ok()) << c.error();
    ASSERT_TRUE(p.ok()) << p.error();
    EXPECT_EQ(c->header().version, 4u);
    EXPECT_EQ(c->header().header_bytes, sizeof(IndexHeader) + sizeof(IndexHeaderV4Ext));
    EXPECT_EQ(p->header().version, 3u);
    ASSERT_TRUE(c->check_cuts().ok());
    ASSERT_TRUE(p->check_cuts().ok());
    ASSERT_TRUE(c->check_flows(0, c->flows().size()).ok());
    ASSERT_TRUE(p->check_flows(0, p->flows().size()).ok());
    ASSERT_EQ(c->flows().size(), p->flows().size());
    EXPECT_EQ(0, std::memcmp(c->flows().data(), p->flows().data(), c->flows().size_bytes()));
    ASSERT_EQ(c->cuts().size(), 3u);
    ASSERT_EQ(p->cuts().size(), 3u);
    EXPECT_EQ(0, std::memcmp(c->cuts().data(), p->cuts().data(), c->cuts().size_bytes()));
    // The section is the last one, right after the postings.
    const IndexHeader h = header_of(sc);
    const uint64_t at = (h.postings_offset + 4 * h.postings_count + 7) & ~uint64_t(7);
    ASSERT_EQ(at + 3 * sizeof(CutEntry), sc.size());
    // Found through a lookup by address too: flow 1000's one with no record.
    const long f1000 = flow_numbered(*c, 1000);
    ASSERT_GE(f1000, 0);
    const CutEntry* e = c->cut_of(size_t(f1000));
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->cut_packets, 7u);
    EXPECT_EQ(e->dup_bytes, 900u);
    std::vector<uint32_t> found;
    c->flows_with_address(c->flows()[size_t(f1000)].key.src, found);
    EXPECT_NE(std::find(found.begin(), found.end(), uint32_t(f1000)), found.end());
    {  // a flipped count, not resealed: the page's checksum refuses it
        std::string t = sc;
        t[at + sizeof(CutEntry) + 8] ^= 0x40;
        auto r = Index::from_bytes(t, cap);
        const std::string err = r.ok() ? r->check_cuts().error() : r.error();
        EXPECT_NE(err.find("checksum"), std::string::npos) << err;
    }
    {  // a resealed entry naming no flow: check_cuts refuses it
        std::string t = sc;
        const uint32_t v = h.flow_count + 7;
        std::memcpy(t.data() + at + 2 * sizeof(CutEntry), &v, 4);
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_TRUE(r.ok()) << r.error();
        auto bad = r->check_cuts();
        ASSERT_FALSE(bad.ok());
        EXPECT_NE(bad.error().find("names no flow"), std::string::npos) << bad.error();
    }
    {  // a version 4 header with cut_count 0 over these bytes: trailing bytes
        std::string t = sc;
        IndexHeader x = header_of(t);
        x.cut_count = 0;
        std::memcpy(t.data(), &x, sizeof(x));
        auto r = Index::from_bytes(reseal(t), cap);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().find("trailing bytes"), std::string::npos) << r.error();
    }
}

}  // namespace
}  // namespace linecap::index
