// FileSet: tcpdump's rotation names, hidden names until close, -W rings, -z,
// standard output.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <span>

#include "storage/file_set.hh"
#include "tests/storage/temp_dir.hh"

using namespace linecap::storage;
namespace fs = std::filesystem;

namespace {

using linecap::storage::test_support::TempDir;

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

TEST(FileSet, OneFileRingHasNoNumber) {
    // tcpdump -C -W 1: the counter has no digits and is always 0, so the
    // one name is NAME itself.
    FileSetOptions o;
    o.path = "out.pcap";
    o.rotate_bytes = 1;
    o.max_files = 1;
    FileSet f(o);
    EXPECT_EQ(f.name_for(0, 0), "out.pcap");
    EXPECT_EQ(f.name_for(1, 0), "out.pcap");
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
        // -W counts the file being written, as tcpdump: 3 entries at most.
        EXPECT_LE(d.names().size(), 3u) << testing::PrintToString(d.names());
        std::string tag = std::to_string(i);
        ASSERT_EQ(write(f.fd(), tag.data(), tag.size()), ssize_t(tag.size()));
    }
    // The fourth file took r.pcap0's name when it opened: the oldest went
    // then, not when the new one was closed.
    EXPECT_EQ(d.names(), (std::set<std::string>{".r.pcap0.partial", "r.pcap1", "r.pcap2"}));
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
    for (time_t t = 100; t < 105; t++) {
        ASSERT_TRUE(f.open_next(t).ok());
        EXPECT_LE(d.names().size(), 2u) << testing::PrintToString(d.names());
    }
    EXPECT_EQ(d.names(), (std::set<std::string>{"t-103.pcap", ".t-104.pcap.partial"}));
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(d.names(), (std::set<std::string>{"t-103.pcap", "t-104.pcap"}));
}

TEST(FileSet, RingRemovesTheTimeDirectoriesItEmpties) {
    // -G 1 -W 2 into lit/YEAR/sT/t.pcap: each removal of the oldest file
    // takes its emptied directory, and the year's once empty; a directory
    // holding a file of someone else's stays, as does the literal part.
    TempDir d;
    fs::create_directory(d.path / "lit");
    FileSetOptions o;
    o.path = (d.path / "lit/%Y/s%s/t.pcap").string();
    o.rotate_seconds = 1;
    o.max_files = 2;
    FileSet f(o);
    auto year = [](time_t t) {
        struct tm tm;
        localtime_r(&t, &tm);
        return std::to_string(tm.tm_year + 1900);
    };
    const time_t later = 1600000000;
    for (time_t t : {time_t{100}, time_t{101}, later, later + 1, later + 2}) {
        ASSERT_TRUE(f.open_next(t).ok());
        if (t == later) {
            std::ofstream(d.path / "lit" / year(t) / ("s" + std::to_string(t)) / "notes.txt")
                << "not capd's\n";
        }
    }
    ASSERT_TRUE(f.close_current().ok());
    std::set<std::string> left;
    for (auto& p : fs::recursive_directory_iterator(d.path))
        left.insert(p.path().lexically_relative(d.path).string());
    const std::string y = "lit/" + year(later) + "/s";
    const std::string s0 = std::to_string(later), s1 = std::to_string(later + 1),
                      s2 = std::to_string(later + 2);
    EXPECT_EQ(left,
              (std::set<std::string>{"lit", "lit/" + year(later), y + s0, y + s0 + "/notes.txt",
                                     y + s1, y + s1 + "/t.pcap", y + s2, y + s2 + "/t.pcap"}));
}

TEST(FileSet, SizeCutsWithinTimePeriodsNameAsTcpdump) {
    // tcpdump 4.99 with -G and -C: the strftime name is the period's start,
    // a -C cut numbers on within it, and the next period starts at 0 again.
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "t-%s.pcap").string();
    o.rotate_seconds = 60;
    o.rotate_bytes = 1;
    FileSet f(o);
    using O = FileSet::Open;
    std::vector<std::pair<time_t, O>> opens = {
        {100, O::kPeriod}, {130, O::kCut}, {170, O::kCut}, {160, O::kPeriod}, {161, O::kCut}};
    std::vector<std::string> names;
    for (auto [t, why] : opens) {
        ASSERT_TRUE(f.open_next(t, why).ok());
        names.push_back(fs::path(f.current_name()).filename().string());
    }
    EXPECT_EQ(names, (std::vector<std::string>{"t-100.pcap", "t-100.pcap1", "t-100.pcap2",
                                               "t-160.pcap", "t-160.pcap1"}));
    ASSERT_TRUE(f.close_current().ok());
}

TEST(FileSet, TimePeriodRingsWrapPerPeriodAndCountAllFiles) {
    // -G -C -W 3: each period's counter is padded and wraps as tcpdump's;
    // capd's -W also bounds the files of all periods together.
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "t-%s.pcap").string();
    o.rotate_seconds = 60;
    o.rotate_bytes = 1;
    o.max_files = 3;
    FileSet f(o);
    using O = FileSet::Open;
    std::vector<std::string> names;
    auto open = [&](time_t t, O why) {
        ASSERT_TRUE(f.open_next(t, why).ok());
        names.push_back(fs::path(f.current_name()).filename().string());
        EXPECT_LE(d.names().size(), 3u) << testing::PrintToString(d.names());
    };
    open(100, O::kPeriod);
    for (int i = 0; i < 4; i++) open(101 + i, O::kCut);
    open(200, O::kPeriod);
    EXPECT_EQ(names, (std::vector<std::string>{"t-100.pcap0", "t-100.pcap1", "t-100.pcap2",
                                               "t-100.pcap0", "t-100.pcap1", "t-200.pcap0"}));
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(d.names(), (std::set<std::string>{"t-100.pcap0", "t-100.pcap1", "t-200.pcap0"}));
}

TEST(FileSet, StandardOutputIsOneStream) {
    FileSetOptions o;
    o.path = "-";
    FileSet f(o);
    EXPECT_TRUE(f.is_stream());
    ASSERT_TRUE(f.open_next(0).ok());
    EXPECT_EQ(f.current_name(), "-");
    EXPECT_NE(f.fd(), STDOUT_FILENO);  // capd's descriptor 1 is never closed
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_FALSE(f.open_next(0).ok()) << "a second header would end any reader";
    EXPECT_GE(fcntl(STDOUT_FILENO, F_GETFD), 0) << "descriptor 1 is still open";
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

namespace {

void write_all(int fd, const std::string& s) {
    ASSERT_EQ(write(fd, s.data(), s.size()), ssize_t(s.size()));
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

ino_t inode_of(const fs::path& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 ? st.st_ino : 0;
}

}  // namespace

TEST(FileSet, ReuseWritesOverTheOldestRingFileAndCutsItsTail) {
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 1;
    o.max_files = 2;
    o.reuse = true;
    FileSet f(o);
    ASSERT_TRUE(f.open_next(0).ok());
    EXPECT_FALSE(f.reused());
    write_all(f.fd(), std::string(1000, 'a'));
    ASSERT_TRUE(f.close_current().ok());
    ino_t first = inode_of(d.path / "r.pcap0");
    ASSERT_TRUE(f.open_next(0).ok());
    write_all(f.fd(), "second");
    ASSERT_TRUE(f.close_current().ok());

    // Third file: r.pcap0 again. Its storage is taken at open, so only the
    // other file keeps its name while the new one is written.
    ASSERT_TRUE(f.open_next(0).ok());
    EXPECT_TRUE(f.reused());
    EXPECT_EQ(d.names(), (std::set<std::string>{"r.pcap1", ".r.pcap0.partial"}));
    EXPECT_EQ(inode_of(d.path / ".r.pcap0.partial"), first);
    write_all(f.fd(), "third");
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(slurp(d.path / "r.pcap0"), "third");
    EXPECT_EQ(inode_of(d.path / "r.pcap0"), first);
    EXPECT_EQ(slurp(d.path / "r.pcap1"), "second");
}

TEST(FileSet, ReuseTakesTheOldestTimeRotatedFile) {
    TempDir d;
    setenv("TZ", "UTC", 1);
    tzset();
    FileSetOptions o;
    o.path = (d.path / "t-%H%M%S.pcap").string();
    o.rotate_seconds = 1;
    o.max_files = 2;
    o.reuse = true;
    FileSet f(o);
    for (time_t t = 0; t < 2; t++) {
        ASSERT_TRUE(f.open_next(t).ok());
        write_all(f.fd(), "old file " + std::to_string(t));
        ASSERT_TRUE(f.close_current().ok());
    }
    ino_t oldest = inode_of(d.path / "t-000000.pcap");
    ASSERT_TRUE(f.open_next(2).ok());
    EXPECT_TRUE(f.reused());
    write_all(f.fd(), "new");
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(d.names(), (std::set<std::string>{"t-000001.pcap", "t-000002.pcap"}));
    EXPECT_EQ(inode_of(d.path / "t-000002.pcap"), oldest);
    EXPECT_EQ(slurp(d.path / "t-000002.pcap"), "new");
}

TEST(FileSet, ReuseTakesAFileLeftUnderTheSameName) {
    TempDir d;
    fs::path p = d.path / "same.pcap";
    { std::ofstream(p) << "an earlier run's file, longer than the new one"; }
    FileSetOptions o;
    o.path = p.string();
    o.reuse = true;
    FileSet f(o);
    ASSERT_TRUE(f.open_next(0).ok());
    EXPECT_TRUE(f.reused());
    write_all(f.fd(), "new");
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(slurp(p), "new");
}

TEST(FileSet, ReuseNeverTouchesAHardLinkedFile) {
    TempDir d;
    fs::path p = d.path / "kept.pcap";
    { std::ofstream(p) << "keep me"; }
    fs::create_hard_link(p, d.path / "elsewhere");
    FileSetOptions o;
    o.path = p.string();
    o.reuse = true;
    FileSet f(o);
    ASSERT_TRUE(f.open_next(0).ok());
    EXPECT_FALSE(f.reused());
    write_all(f.fd(), "new");
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(slurp(p), "new");
    EXPECT_EQ(slurp(d.path / "elsewhere"), "keep me");
}

TEST(FileSet, ReuseWaitsForTheFilesPostRotateCommand) {
    // A -z command still reading the oldest file keeps it from being reused.
    TempDir d;
    fs::path script = d.path / "hold.sh";
    {
        std::ofstream s(script);
        s << "#!/bin/sh\nsleep 3\n";
    }
    fs::permissions(script, fs::perms::owner_all);
    FileSetOptions o;
    o.path = (d.path / "z.pcap").string();
    o.rotate_bytes = 1;
    o.max_files = 1;
    o.post_rotate_cmd = script.string();
    o.reuse = true;
    FileSet f(o);
    ASSERT_TRUE(f.open_next(0).ok());
    write_all(f.fd(), "first, being read by -z");
    ASSERT_TRUE(f.close_current().ok());
    // What the command reads: the file itself, whatever happens to its name.
    int held = open((d.path / "z.pcap").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(held, 0);
    ASSERT_TRUE(f.open_next(0).ok());
    EXPECT_FALSE(f.reused());
    // -W 1 counts the new file: the old one's name is gone, its bytes are not.
    EXPECT_EQ(d.names(), (std::set<std::string>{"hold.sh", ".z.pcap.partial"}));
    write_all(f.fd(), "second");
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(slurp(d.path / "z.pcap"), "second");
    char buf[64] = {};
    ASSERT_GT(pread(held, buf, sizeof(buf) - 1, 0), 0);
    EXPECT_STREQ(buf, "first, being read by -z");
    close(held);
}

namespace {
off_t allocated(const fs::path& p) {
    struct stat st;
    if (stat(p.c_str(), &st) != 0) return -1;
    return static_cast<off_t>(st.st_blocks) * 512;
}
}  // namespace

TEST(FileSet, PreallocateClaimsTheRingAndLeavesOldFilesWhole) {
    TempDir d;
    const std::string old = "an earlier run's second file";
    { std::ofstream(d.path / "r.pcap1") << old; }
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 1 << 20;
    o.max_files = 3;
    o.reuse = true;
    o.preallocate = true;
    {
        FileSet f(o);
        ASSERT_TRUE(f.preallocate().ok());
        // Names without a file get an empty hidden spare; the old file keeps
        // its name, size and bytes. All three hold the ring's share.
        EXPECT_EQ(d.names(),
                  (std::set<std::string>{".r.pcap0.partial", "r.pcap1", ".r.pcap2.partial"}));
        for (const char* n : {".r.pcap0.partial", "r.pcap1", ".r.pcap2.partial"})
            EXPECT_GE(allocated(d.path / n), 1 << 20) << n;
        // Empty on a disk; zeros on tmpfs (written to touch its pages).
        auto spare_size = fs::file_size(d.path / ".r.pcap0.partial");
        EXPECT_TRUE(spare_size == 0 || spare_size == (1u << 20)) << spare_size;
        EXPECT_EQ(slurp(d.path / "r.pcap1"), old);

        ino_t spare = inode_of(d.path / ".r.pcap0.partial");
        ASSERT_TRUE(f.open_next(0).ok());
        EXPECT_TRUE(f.reused());
        EXPECT_EQ(inode_of(d.path / ".r.pcap0.partial"), spare);
        write_all(f.fd(), "zero");
        ASSERT_TRUE(f.close_current().ok());
        // Cut at its end: the unused part of the claim goes back.
        EXPECT_EQ(slurp(d.path / "r.pcap0"), "zero");
        EXPECT_LT(allocated(d.path / "r.pcap0"), 1 << 20);
    }
    // The spare never reached is deleted with the set; the old file stays.
    EXPECT_EQ(d.names(), (std::set<std::string>{"r.pcap0", "r.pcap1"}));
    EXPECT_EQ(slurp(d.path / "r.pcap1"), old);
}

TEST(FileSet, PreallocateWithoutRoomLeavesNothing) {
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "big.pcap").string();
    o.rotate_bytes = uint64_t(1) << 50;  // 1 PiB per file
    o.max_files = 2;
    o.reuse = true;
    o.preallocate = true;
    FileSet f(o);
    linecap::Status s = f.preallocate();
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().find("big.pcap0"), std::string::npos) << s.error();
    EXPECT_TRUE(d.names().empty());
}

namespace {

void put(const fs::path& p, const std::string& bytes) {
    std::ofstream o(p, std::ios::binary);
    o << bytes;
}

linecap::Status write_index_of_current(FileSet& f, const std::string& bytes) {
    return f.write_index(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

}  // namespace

TEST(FileSetIndex, IndexesGoWithTheirFiles) {
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 1;
    o.max_files = 2;
    FileSet f(o);
    for (int i = 0; i < 5; i++) {
        ASSERT_TRUE(f.open_next(0).ok());
        std::string live = "live" + std::to_string(i);
        ASSERT_TRUE(
            f.write_live_index(std::span<const uint8_t>(
                                   reinterpret_cast<const uint8_t*>(live.data()), live.size()))
                .ok());
        EXPECT_TRUE(d.names().count("." + f.current_name().substr(d.path.string().size() + 1) +
                                    ".partial.idx"));
        ASSERT_TRUE(write_index_of_current(f, "index" + std::to_string(i)).ok());
        ASSERT_TRUE(f.close_current().ok());
        // The live index went at close; the final one stays with its file.
        for (const std::string& n : d.names())
            EXPECT_EQ(n.find(".partial"), std::string::npos) << n;
    }
    // -W 2: the two newest files and exactly their indexes.
    EXPECT_EQ(d.names(),
              (std::set<std::string>{"r.pcap0", "r.pcap1", ".r.pcap0.idx", ".r.pcap1.idx"}));
    std::ifstream s(d.path / ".r.pcap0.idx");
    std::string v;
    s >> v;
    EXPECT_EQ(v, "index4");
    // A discarded file takes its live index along.
    ASSERT_TRUE(f.open_next(0).ok());
    ASSERT_TRUE(
        f.write_live_index(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("x"), 1))
            .ok());
    f.discard_current();
    EXPECT_EQ(d.names(), (std::set<std::string>{"r.pcap0", ".r.pcap0.idx"}));
}

TEST(FileSetIndex, ReusedFileLosesItsIndex) {
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "u.pcap").string();
    o.rotate_bytes = 1;
    o.max_files = 2;
    o.reuse = true;
    FileSet f(o);
    for (int i = 0; i < 3; i++) {
        ASSERT_TRUE(f.open_next(0).ok());
        ASSERT_EQ(write(f.fd(), "abc", 3), 3);
        if (i < 2) {
            ASSERT_TRUE(write_index_of_current(f, "i").ok());
            ASSERT_TRUE(f.close_current().ok());
        }
    }
    // The third file took over u.pcap0's storage: its index is gone.
    EXPECT_EQ(d.names(), (std::set<std::string>{".u.pcap0.partial", "u.pcap1", ".u.pcap1.idx"}));
}

TEST(FileSetIndex, StartUpRemovesStaleIndexesOfItsOwnNames) {
    TempDir d;
    // A killed run's file and live index, an index being written, an index
    // whose file is gone; another file set's index and a live index whose
    // file another process still writes are left alone.
    put(d.path / ".k.pcap0.partial", "");  // empty: removed as a spare
    put(d.path / ".k.pcap0.partial.idx", "live");
    put(d.path / ".k.pcap1.idx.partial", "cut");
    put(d.path / ".k.pcap2.idx", "orphan");
    put(d.path / "k.pcap3", "file");
    put(d.path / ".k.pcap3.idx", "kept");
    put(d.path / ".other.pcap0.idx", "not ours");
    put(d.path / ".k.pcap4.partial", "held");
    put(d.path / ".k.pcap4.partial.idx", "held live");
    int held = ::open((d.path / ".k.pcap4.partial").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(held, 0);
    ASSERT_EQ(flock(held, LOCK_EX | LOCK_NB), 0);
    FileSetOptions o;
    o.path = (d.path / "k.pcap").string();
    o.rotate_bytes = 1;
    o.max_files = 8;
    FileSet f(o);
    f.recover_stale();
    ::close(held);
    EXPECT_EQ(d.names(), (std::set<std::string>{"k.pcap3", ".k.pcap3.idx", ".other.pcap0.idx",
                                                ".k.pcap4.partial", ".k.pcap4.partial.idx"}));
}
