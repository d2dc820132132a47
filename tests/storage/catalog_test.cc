/* The fleet catalogue's pieces that need no server: URL and table names,
 * the row text, and the spool (kept across a restart, bounded, oldest
 * dropped first) with a server that refuses every request. */
#include "storage/catalog.hh"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "storage/catalog_publisher.hh"
#include "temp_dir.hh"

using namespace linecap;
using namespace linecap::storage;
using test_support::TempDir;

TEST(CatalogUrl, Parses) {
    auto u = parse_catalog_url("http://127.0.0.1:18123/");
    ASSERT_TRUE(u) << u.error();
    EXPECT_EQ(u->host, "127.0.0.1");
    EXPECT_EQ(u->port, 18123);
    u = parse_catalog_url("http://[::1]:8124");
    ASSERT_TRUE(u) << u.error();
    EXPECT_EQ(u->host, "::1");
    EXPECT_EQ(u->port, 8124);
    u = parse_catalog_url("http://ch1");
    ASSERT_TRUE(u) << u.error();
    EXPECT_EQ(u->port, 8123);
}

TEST(CatalogUrl, Refuses) {
    for (const char* bad :
         {"", "https://h:1", "ftp://h", "http://", "http://h:0", "http://h:65536", "http://h:12x",
          "http://h:1/db", "http://u@h:1", "http://h:1?x=1", "http://[::1"}) {
        EXPECT_FALSE(parse_catalog_url(bad)) << bad;
    }
}

TEST(CatalogTables, ParsesAndRefuses) {
    auto t = parse_catalog_tables("db.files,db.flows");
    ASSERT_TRUE(t) << t.error();
    EXPECT_EQ(t->files, "db.files");
    EXPECT_EQ(t->flows, "db.flows");
    for (const char* bad : {"", "a", "a,", ",b", "a,a", "a;b,c", "a b,c", "1a,b", "a,b'", ".a,b"})
        EXPECT_FALSE(parse_catalog_tables(bad)) << bad;
}

TEST(CatalogRows, EscapesTextAndBytes) {
    std::string out;
    append_file_row(out, "h\t1", "", "/x\n\\y", 7, true, nullptr, 0, 9);
    EXPECT_EQ(out, "h\\t1\t\t/x\\n\\\\y\t7\t1\t0\t0\t0\t0\t0\t9\n");
    index::FlowEntry f{};
    f.key.src[0] = 0x09;
    f.key.dst[0] = 0x5c;
    f.packets = 3;
    out.clear();
    append_flow_row(out, "h", "/p", 1, f);
    EXPECT_EQ(out.find('\t', 0), 1u);
    EXPECT_NE(out.find("\\t"), std::string::npos);
    EXPECT_NE(out.find("\\\\"), std::string::npos);
    // Exactly one line in the spool's form: no raw tab or newline from the
    // key's bytes.
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
    EXPECT_EQ(std::count(out.begin(), out.end(), '\t'), 16);
    // Sent as two rows, one per endpoint: the first under the lower address
    // (side 0), the second under the higher (side 1), the rest unchanged.
    std::string sent;
    expand_flow_rows(sent, out);
    EXPECT_EQ(std::count(sent.begin(), sent.end(), '\n'), 2);
    EXPECT_EQ(std::count(sent.begin(), sent.end(), '\t'), 2 * 18);
    const std::string first = sent.substr(0, sent.find('\n') + 1);
    const std::string second = sent.substr(sent.find('\n') + 1);
    EXPECT_EQ(first.substr(0, 9), "h\t/p\t1\t\\t");
    EXPECT_EQ(first.substr(first.find('\t', 10), 3), "\t0\t");
    EXPECT_EQ(first.substr(first.find('\t', 10) + 3), out.substr(7));
    EXPECT_EQ(second.substr(0, 9), "h\t/p\t1\t\\\\");
    EXPECT_EQ(second.substr(second.find('\t', 10), 3), "\t1\t");
    EXPECT_EQ(second.substr(second.find('\t', 10) + 3), out.substr(7));
    // The same address at both ends (non-IP flows: zero): one row, side 0.
    index::FlowEntry z{};
    std::string one, zsent;
    append_flow_row(one, "h", "/p", 1, z);
    expand_flow_rows(zsent, one + one);
    EXPECT_EQ(std::count(zsent.begin(), zsent.end(), '\n'), 2);
    EXPECT_EQ(zsent.substr(0, zsent.find('\n')),
              zsent.substr(zsent.find('\n') + 1, zsent.size() - zsent.find('\n') - 2));
    EXPECT_EQ(std::count(zsent.begin(), zsent.end(), '\t'), 2 * 18);
}

namespace {
/* A TabSeparated field read back as ClickHouse reads it: bytes as they
 * are up to a tab or newline, a backslash escaping the next byte. */
std::string tsv_field(const std::string& row, size_t& pos) {
    std::string v;
    for (; pos < row.size() && row[pos] != '\t' && row[pos] != '\n'; pos++) {
        if (row[pos] != '\\') {
            v += row[pos];
            continue;
        }
        const char e = row[++pos];
        v += e == 't' ? '\t' : e == 'n' ? '\n' : e == '\\' ? '\\' : '?';
    }
    pos++;
    return v;
}
}  // namespace

TEST(CatalogRows, EveryByteReadsBackAsItself) {
    // The 256 byte values, 64 at a time as the key's bytes (so as the
    // addresses' too): the row is one line of 17 fields, each of which
    // reads back exactly.
    for (int b0 = 0; b0 < 256; b0 += 64) {
        index::FlowEntry f{};
        auto* key = reinterpret_cast<uint8_t*>(&f.key);
        for (size_t i = 0; i < sizeof f.key; i++) key[i] = static_cast<uint8_t>(b0 + i);
        std::string out;
        append_flow_row(out, "h\\\t\n\x80", "/p", 1, f);
        ASSERT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
        ASSERT_EQ(std::count(out.begin(), out.end(), '\t'), 16);
        size_t pos = 0;
        EXPECT_EQ(tsv_field(out, pos), "h\\\t\n\x80");
        EXPECT_EQ(tsv_field(out, pos), "/p");
        EXPECT_EQ(tsv_field(out, pos), "1");
        EXPECT_EQ(tsv_field(out, pos), std::string(reinterpret_cast<char*>(key), sizeof f.key));
        EXPECT_EQ(tsv_field(out, pos), std::string(reinterpret_cast<char*>(f.key.src), 16));
        EXPECT_EQ(tsv_field(out, pos), std::string(reinterpret_cast<char*>(f.key.dst), 16));
    }
}

namespace {
index::FlowEntry udp_flow(uint8_t a, uint8_t b, uint16_t sport, uint64_t bytes) {
    index::FlowEntry f{};
    f.key.kind = index::FlowKind::kIp;
    f.key.linktype = 1;
    f.key.ethertype = 0x0800;
    f.key.l3_offset = 14;
    f.key.l4_offset = 20;
    f.key.ip_version = 4;
    f.key.first_nxt = f.key.proto = 17;
    f.key.flags = index::kFlowHasPorts;
    f.key.src[0] = f.key.dst[0] = 198;
    f.key.src[1] = f.key.dst[1] = 18;
    f.key.src[3] = a;
    f.key.dst[3] = b;
    f.key.sport = sport;
    f.key.dport = 53;
    f.first_ns = 1000 + bytes;
    f.last_ns = 2000 + bytes;
    f.packets = 1;
    f.wire_bytes = bytes;
    return f;
}

/* Every flow is in the rows: its own, or for each endpoint the endpoint's
 * aggregate or a wildcard aggregate of its key; the totals add up. */
void expect_sound(const std::vector<index::FlowEntry>& flows, const std::vector<BudgetRow>& rows) {
    auto strip = [](index::FlowKey k, const uint8_t* src) {
        if (src)
            std::memcpy(k.src, src, 16);
        else
            std::memset(k.src, 0, 16);
        std::memset(k.dst, 0, 16);
        k.sport = k.dport = 0;
        k.flags = static_cast<uint8_t>(k.flags & ~index::kFlowHasPorts);
        return k;
    };
    auto has = [&](const index::FlowKey& k, FlowAgg agg, const index::FlowEntry& f) {
        for (const auto& r : rows)
            if (r.agg == agg && r.f.key == k && r.f.first_ns <= f.first_ns &&
                r.f.last_ns >= f.last_ns && r.f.packets >= f.packets)
                return true;
        return false;
    };
    uint64_t exact_bytes = 0, any_bytes = 0;
    for (const auto& r : rows) {
        if (r.agg == FlowAgg::kFlow) exact_bytes += r.f.wire_bytes;
        if (r.agg == FlowAgg::kAny) any_bytes += r.f.wire_bytes;
    }
    uint64_t aggregated_bytes = 0;
    for (const auto& f : flows) {
        if (has(f.key, FlowAgg::kFlow, f)) continue;
        aggregated_bytes += f.wire_bytes;
        const bool any = has(strip(f.key, nullptr), FlowAgg::kAny, f);
        for (const uint8_t* e : {f.key.src, f.key.dst})
            EXPECT_TRUE(any || has(strip(f.key, e), FlowAgg::kEndpoint, f))
                << index::describe_flow(f.key);
    }
    uint64_t total = 0;
    for (const auto& f : flows) total += f.wire_bytes;
    EXPECT_EQ(exact_bytes + aggregated_bytes, total);
    EXPECT_LE(any_bytes, aggregated_bytes);
}
}  // namespace

TEST(CatalogBudget, UnderTheBudgetEveryFlowHasItsRow) {
    std::vector<index::FlowEntry> flows;
    for (int i = 0; i < 10; i++) flows.push_back(udp_flow(1, uint8_t(2 + i), 1000, 100));
    for (uint32_t budget : {0u, 10u, 100u}) {
        auto rows = budget_flows(flows, budget);
        ASSERT_EQ(rows.size(), flows.size());
        for (size_t i = 0; i < rows.size(); i++) {
            EXPECT_EQ(rows[i].agg, FlowAgg::kFlow);
            EXPECT_EQ(rows[i].nflows, 1u);
            EXPECT_TRUE(rows[i].f.key == flows[i].key);
        }
    }
}

TEST(CatalogBudget, TheBiggestKeepTheirRowsTheRestByEndpoint) {
    // 1000 small flows from 198.18.0.1 to 50 servers (20 ports each), and
    // 5 big ones: budget 20 keeps the 5 big and 5 more whole (half the
    // budget), and the other flows' 51 endpoints do not fit in the 10 left.
    std::vector<index::FlowEntry> flows;
    for (int i = 0; i < 1000; i++)
        flows.push_back(udp_flow(1, uint8_t(10 + i % 50), uint16_t(2000 + i / 50), 100 + i % 7));
    for (int i = 0; i < 5; i++) flows.push_back(udp_flow(2, 3, uint16_t(i), 1000000 + i));
    auto rows = budget_flows(flows, 20);
    EXPECT_LE(rows.size(), 20u);
    size_t exact = 0, endpoint = 0, any = 0;
    for (const auto& r : rows) {
        (r.agg == FlowAgg::kFlow ? exact : r.agg == FlowAgg::kEndpoint ? endpoint : any)++;
    }
    EXPECT_EQ(exact, 10u);
    EXPECT_EQ(any, 1u);  // one wildcard: the same link, IP version and protocol
    EXPECT_EQ(endpoint, 20u - exact - any);
    for (int i = 0; i < 5; i++) {
        bool kept = false;
        for (const auto& r : rows)
            kept = kept || (r.agg == FlowAgg::kFlow && r.f.key == flows[1000 + i].key);
        EXPECT_TRUE(kept) << "big flow " << i;
    }
    // The client's endpoint (in every small flow: the most bytes) has its
    // row, with all its flows but the ones kept whole.
    bool client = false;
    for (const auto& r : rows)
        if (r.agg == FlowAgg::kEndpoint && r.f.key.src[3] == 1) {
            client = true;
            EXPECT_EQ(r.nflows, 995u);
            EXPECT_EQ(r.f.key.dst[3], 0);
            EXPECT_EQ(r.f.key.sport, 0);
            EXPECT_EQ(r.f.key.flags & index::kFlowHasPorts, 0);
        }
    EXPECT_TRUE(client);
    expect_sound(flows, rows);
    // A budget that holds every endpoint: no wildcard row.
    rows = budget_flows(flows, 200);
    any = 0;
    for (const auto& r : rows) any += r.agg == FlowAgg::kAny;
    EXPECT_EQ(any, 0u);
    EXPECT_LE(rows.size(), 200u);
    expect_sound(flows, rows);
}

TEST(CatalogBudget, AggregateRowsAreSentOnceAndOldSpoolRowsAsFlows) {
    index::FlowEntry f = udp_flow(1, 2, 5, 10);
    std::string spool, sent;
    append_flow_row(spool, "h", "/p", 1, f, FlowAgg::kEndpoint, 7);
    EXPECT_EQ(std::count(spool.begin(), spool.end(), '\t'), 16);
    expand_flow_rows(sent, spool);
    EXPECT_EQ(std::count(sent.begin(), sent.end(), '\n'), 1);  // under its endpoint only
    EXPECT_EQ(sent.substr(sent.size() - 5), "\t1\t7\n");
    EXPECT_EQ(std::count(sent.begin(), sent.end(), '\t'), 18);
    // A flow row of an earlier run (no agg, nflows): two rows, as flows.
    std::string old;
    append_flow_row(old, "h", "/p", 1, f);
    old.resize(old.size() - 5);  // "\t0\t1\n" off
    old += '\n';
    sent.clear();
    expand_flow_rows(sent, old);
    EXPECT_EQ(std::count(sent.begin(), sent.end(), '\n'), 2);
    EXPECT_EQ(std::count(sent.begin(), sent.end(), '\t'), 2 * 18);
    EXPECT_EQ(sent.substr(sent.find('\n') - 4, 5), "\t0\t1\n");
}

namespace {
CatalogOptions refused_options(const std::string& spool, uint64_t max) {
    CatalogOptions o;
    o.url = *parse_catalog_url("http://127.0.0.1:1");  // nothing listens there
    o.host = "t";
    o.spool_path = spool;
    o.spool_max = max;
    o.flush_ms = 20;
    o.cwd = "/";
    return o;
}
}  // namespace

TEST(CatalogSpool, KeepsRowsAcrossARestartAndDropsTheOldest) {
    TempDir d;
    const std::string spool = (d.path / "spool").string();
    {
        auto p = CatalogPublisher::create(refused_options(spool, 1 << 20));
        ASSERT_TRUE(p) << p.error();
        (*p)->start();
        for (int i = 0; i < 5; i++) (*p)->file_removed("/data/f" + std::to_string(i));
        (*p)->stop(0);
        CatalogStats s = (*p)->stats();
        EXPECT_EQ(s.spool_rows, 5u);
        EXPECT_GT(s.send_errors, 0u);
        EXPECT_EQ(s.dropped_rows, 0u);
    }
    // Read back by the next run; a smaller limit drops the oldest rows.
    auto p = CatalogPublisher::create(refused_options(spool, 250));
    ASSERT_TRUE(p) << p.error();
    CatalogStats s = (*p)->stats();
    EXPECT_GT(s.dropped_rows, 0u);
    EXPECT_EQ(s.spool_rows + s.dropped_rows, 5u);
    EXPECT_LE(s.spool_bytes, 250u);
    (*p)->stop(0);
    std::ifstream in(spool, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(all.compare(0, 8, "LCAPSPL1"), 0);
    EXPECT_NE(all.find("/data/f4"), std::string::npos);  // the newest is kept
    EXPECT_EQ(all.find("/data/f0"), std::string::npos);  // the oldest went
}

TEST(CatalogSpool, RefusesAForeignFile) {
    TempDir d;
    const std::string spool = (d.path / "spool").string();
    std::ofstream(spool) << "not a spool";
    auto p = CatalogPublisher::create(refused_options(spool, 1 << 20));
    ASSERT_FALSE(p);
    EXPECT_NE(p.error().find("not a catalogue spool"), std::string::npos) << p.error();
}
