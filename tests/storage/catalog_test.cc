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
    EXPECT_NE(out.find("\\x09"), std::string::npos);
    EXPECT_NE(out.find("\\x5c"), std::string::npos);
    // Exactly one line in the spool's form: no raw tab or newline from the
    // key's bytes.
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
    EXPECT_EQ(std::count(out.begin(), out.end(), '\t'), 14);
    // Sent as two rows, one per endpoint: the first under the lower address
    // (side 0), the second under the higher (side 1), the rest unchanged.
    std::string sent;
    expand_flow_rows(sent, out);
    EXPECT_EQ(std::count(sent.begin(), sent.end(), '\n'), 2);
    EXPECT_EQ(std::count(sent.begin(), sent.end(), '\t'), 2 * 16);
    const std::string first = sent.substr(0, sent.find('\n') + 1);
    const std::string second = sent.substr(sent.find('\n') + 1);
    EXPECT_EQ(first.substr(0, 11), "h\t/p\t1\t\\x09");
    EXPECT_EQ(first.substr(first.find('\t', 10), 3), "\t0\t");
    EXPECT_EQ(first.substr(first.find('\t', 10) + 3), out.substr(7));
    EXPECT_EQ(second.substr(0, 11), "h\t/p\t1\t\\x5c");
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
    EXPECT_EQ(std::count(zsent.begin(), zsent.end(), '\t'), 2 * 16);
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
