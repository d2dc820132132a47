// FileSet: tcpdump's rotation names, hidden names until close, -W rings, -z.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "storage/file_set.hh"

using namespace linecap::storage;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/linecap-fs-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path); }
    std::set<std::string> names() const {
        std::set<std::string> s;
        for (auto& e : fs::directory_iterator(path)) s.insert(e.path().filename().string());
        return s;
    }
};

}  // namespace

TEST(FileSet, SizeRotationNamesAsTcpdump) {
    FileSetOptions o;
    o.path = "/d/out.pcap";
    o.rotate_bytes = 1000000;
    FileSet f(o);
    EXPECT_EQ(f.name_for(0, 0), "/d/out.pcap");
    EXPECT_EQ(f.name_for(1, 0), "/d/out.pcap1");
    EXPECT_EQ(f.name_for(12, 0), "/d/out.pcap12");
}

TEST(FileSet, RingNamesArePaddedAndWrap) {
    FileSetOptions o;
    o.path = "out.pcap";
    o.rotate_bytes = 1;
    o.max_files = 12;
    FileSet f(o);
    EXPECT_EQ(f.name_for(0, 0), "out.pcap00");
    EXPECT_EQ(f.name_for(11, 0), "out.pcap11");
    EXPECT_EQ(f.name_for(12, 0), "out.pcap00");
}

TEST(FileSet, TimeRotationUsesStrftime) {
    FileSetOptions o;
    o.path = "cap-%Y%m%d-%H%M%S.pcap";
    o.rotate_seconds = 60;
    FileSet f(o);
    setenv("TZ", "UTC", 1);
    tzset();
    EXPECT_EQ(f.name_for(0, 1700000000), "cap-20231114-221320.pcap");
}

TEST(FileSet, WriterMarkWithSeveralWriters) {
    FileSetOptions o;
    o.path = "/x/out.pcap";
    o.writer_index = 1;
    o.writer_count = 2;
    FileSet f(o);
    EXPECT_EQ(f.name_for(0, 0), "/x/out_w1.pcap");
    o.path = "/x.d/out";
    FileSet g(o);
    EXPECT_EQ(g.name_for(0, 0), "/x.d/out_w1");
}

TEST(FileSet, HiddenUntilClosed) {
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "a.pcap").string();
    FileSet f(o);
    ASSERT_TRUE(f.open_next(0).ok());
    ASSERT_EQ(write(f.fd(), "abc", 3), 3);
    EXPECT_EQ(d.names(), std::set<std::string>{".a.pcap.partial"});
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(d.names(), std::set<std::string>{"a.pcap"});
    EXPECT_EQ(fs::file_size(d.path / "a.pcap"), 3u);
    EXPECT_EQ(fs::status(d.path / "a.pcap").permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
}

TEST(FileSet, RingKeepsNewestFiles) {
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 1;
    o.max_files = 3;
    FileSet f(o);
    for (int i = 0; i < 7; i++) {
        ASSERT_TRUE(f.open_next(0).ok());
        std::string tag = std::to_string(i);
        ASSERT_EQ(write(f.fd(), tag.data(), tag.size()), ssize_t(tag.size()));
    }
    ASSERT_TRUE(f.close_current().ok());
    // Files 4, 5, 6 survive, in slots 1, 2, 0.
    EXPECT_EQ(d.names(), (std::set<std::string>{"r.pcap0", "r.pcap1", "r.pcap2"}));
    std::ifstream s0(d.path / "r.pcap0");
    std::string v;
    s0 >> v;
    EXPECT_EQ(v, "6");
}

TEST(FileSet, RingDeletesOldestTimeFiles) {
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "t-%s.pcap").string();
    o.rotate_seconds = 1;
    o.max_files = 2;
    FileSet f(o);
    for (time_t t = 100; t < 105; t++) ASSERT_TRUE(f.open_next(t).ok());
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(d.names(), (std::set<std::string>{"t-103.pcap", "t-104.pcap"}));
}

TEST(FileSet, PostRotateCommandRunsOnEveryClosedFile) {
    TempDir d;
    fs::path script = d.path / "z.sh";
    fs::path log = d.path / "z.log";
    {
        std::ofstream s(script);
        s << "#!/bin/sh\necho \"$1\" >> " << log.string() << "\n";
    }
    fs::permissions(script, fs::perms::owner_all);
    FileSetOptions o;
    o.path = (d.path / "z.pcap").string();
    o.rotate_bytes = 1;
    o.post_rotate_cmd = script.string();
    {
        FileSet f(o);
        for (int i = 0; i < 3; i++) ASSERT_TRUE(f.open_next(0).ok());
        ASSERT_TRUE(f.close_current().ok());
        f.wait_children(5000);
    }
    std::ifstream in(log);
    std::set<std::string> seen;
    for (std::string l; std::getline(in, l);) seen.insert(fs::path(l).filename().string());
    EXPECT_EQ(seen, (std::set<std::string>{"z.pcap", "z.pcap1", "z.pcap2"}));
}

TEST(FileSet, UnwritableDirectoryIsAnError) {
    FileSetOptions o;
    o.path = "/nonexistent-linecap-dir/x.pcap";
    FileSet f(o);
    linecap::Status s = f.open_next(0);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.error().find("No such file"), std::string::npos) << s.error();
}
