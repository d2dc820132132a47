// FileSet in a directory others may write to: planted entries are never
// followed, new files are given to the -Z user on their descriptor, and the
// hidden file a killed run left is recovered instead of written over.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "storage/file_set.hh"
#include "storage/format.hh"
#include "storage/recover.hh"
#include "storage/safe_files.hh"
#include "tests/storage/temp_dir.hh"

using namespace linecap::storage;
namespace fs = std::filesystem;

namespace {

constexpr uid_t kOtherUid = 65534;  // nobody

using linecap::storage::test_support::TempDir;

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void spill(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
}

/* A capture of `n` 60-byte packets, as capd writes it. */
std::string capture(Format f, int n) {
    InterfaceDesc ifc;
    ifc.name = "test";
    std::string out = file_header(f, std::span(&ifc, 1), "linecap test");
    for (int i = 0; i < n; i++) {
        std::vector<uint8_t> rec(record_size(f, 60));
        uint8_t* p = rec.data();
        p += encode_record_header(f, p, 1700000000ull * 1000000000ull + i * 1000, 0, 60, 60);
        std::memset(p, 0x40 + i, 60);
        p += 60;
        encode_record_trailer(f, p, 60);
        out.append(reinterpret_cast<char*>(rec.data()), rec.size());
    }
    return out;
}

/* Packets libpcap reads from a file, or -1 if it reports an error. */
int pcap_packets(const fs::path& p) {
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* pc = pcap_open_offline(p.c_str(), err);
    if (!pc) return -1;
    struct pcap_pkthdr* h;
    const u_char* d;
    int n = 0, rc;
    while ((rc = pcap_next_ex(pc, &h, &d)) == 1) n++;
    pcap_close(pc);
    return rc == PCAP_ERROR_BREAK ? n : -1;
}

std::vector<std::string> recovered_in(const TempDir& d) {
    std::vector<std::string> out;
    for (const auto& n : d.names())
        if (n.find(".recovered-") != std::string::npos) out.push_back(n);
    return out;
}

}  // namespace

TEST(FileSafety, PlantedHiddenSymlinkIsNeverFollowed) {
    // Someone who can write in the directory points the hidden name at a
    // file of root's: capd refuses the name and the file keeps its bytes
    // and mode.
    TempDir d;
    fs::path victim = d.path / "victim";
    spill(victim, "precious");
    fs::permissions(victim, fs::perms::owner_read | fs::perms::owner_write);
    fs::create_symlink(victim, d.path / ".a.pcap.partial");
    FileSetOptions o;
    o.path = (d.path / "a.pcap").string();
    o.mode = 0644;
    FileSet f(o);
    linecap::Status s = f.open_next(0);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().find("a symbolic link"), std::string::npos) << s.error();
    EXPECT_EQ(slurp(victim), "precious");
    EXPECT_EQ(fs::status(victim).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write);
    EXPECT_TRUE(fs::is_symlink(d.path / ".a.pcap.partial"));
}

TEST(FileSafety, PlantedSpareSymlinkIsNeverFollowed) {
    TempDir d;
    fs::path victim = d.path / "victim";
    spill(victim, "precious");
    fs::create_symlink(victim, d.path / ".r.pcap1.partial");
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 4096;
    o.max_files = 2;
    o.reuse = o.preallocate = true;
    FileSet f(o);
    f.recover_stale();
    linecap::Status s = f.preallocate();
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().find(".r.pcap1.partial"), std::string::npos) << s.error();
    EXPECT_EQ(slurp(victim), "precious");
    EXPECT_EQ(fs::file_size(victim), 8u);
    // The spare it had made is gone again.
    EXPECT_EQ(d.names(), (std::set<std::string>{"victim", ".r.pcap1.partial"}));
}

TEST(FileSafety, ReuseNeverTakesAnotherUsersFile) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
    TempDir d;
    fs::path p = d.path / "same.pcap";
    spill(p, "someone else's");
    ASSERT_EQ(chown(p.c_str(), kOtherUid, kOtherUid), 0);
    FileSetOptions o;
    o.path = p.string();
    o.reuse = true;
    FileSet f(o);
    ASSERT_TRUE(f.open_next(0).ok());
    EXPECT_FALSE(f.reused());
}

TEST(FileSafety, NewFilesAreGivenToTheRunAsUser) {
    // -Z: every file capd creates, spares included, is the user's from its
    // creation, set on the descriptor.
    if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 4096;
    o.max_files = 3;
    o.reuse = o.preallocate = true;
    o.owner_uid = kOtherUid;
    o.owner_gid = kOtherUid;
    FileSet f(o);
    ASSERT_TRUE(f.preallocate().ok());
    ASSERT_TRUE(f.open_next(0).ok());
    struct stat st;
    ASSERT_EQ(fstat(f.fd(), &st), 0);
    EXPECT_EQ(st.st_uid, kOtherUid);
    EXPECT_EQ(st.st_gid, kOtherUid);
    ASSERT_EQ(stat((d.path / ".r.pcap1.partial").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, kOtherUid);
    ASSERT_TRUE(f.close_current().ok());
}

TEST(FileSafety, CrashedRunsHiddenFileIsRecoveredNotTruncated) {
    // What kill -9 leaves: three whole records and half of a fourth.
    for (Format fmt : {Format::kPcapMicro, Format::kPcapNano, Format::kPcapng}) {
        SCOPED_TRACE(static_cast<int>(fmt));
        TempDir d;
        std::string whole = capture(fmt, 3);
        std::string four = capture(fmt, 4);
        spill(d.path / ".a.pcap.partial", four.substr(0, whole.size() + 30));
        FileSetOptions o;
        o.path = (d.path / "a.pcap").string();
        FileSet f(o);
        ASSERT_TRUE(f.open_next(0).ok());
        auto rec = recovered_in(d);
        ASSERT_EQ(rec.size(), 1u) << testing::PrintToString(d.names());
        EXPECT_EQ(rec[0].rfind("a.recovered-", 0), 0u) << rec[0];
        EXPECT_EQ(rec[0].substr(rec[0].size() - 5), ".pcap") << rec[0];
        EXPECT_EQ(slurp(d.path / rec[0]), whole);
        EXPECT_EQ(pcap_packets(d.path / rec[0]), 3);
        // The new run's file starts empty under the hidden name.
        EXPECT_EQ(fs::file_size(d.path / ".a.pcap.partial"), 0u);
        ASSERT_TRUE(f.close_current().ok());
    }
}

TEST(FileSafety, RecoveredFileKeepsTheTimeOfItsLastWrite) {
    // A file cut to its last whole record is still as old as the killed
    // run's last write, which retention orders and ages it by.
    TempDir d;
    fs::path hidden = d.path / ".a.pcap.partial";
    std::string whole = capture(Format::kPcapMicro, 3);
    spill(hidden, capture(Format::kPcapMicro, 4).substr(0, whole.size() + 30));
    const struct timespec old[2] = {{1000000000, 0}, {1000000000, 123456789}};
    ASSERT_EQ(utimensat(AT_FDCWD, hidden.c_str(), old, 0), 0);
    FileSetOptions o;
    o.path = (d.path / "a.pcap").string();
    FileSet f(o);
    f.recover_stale();
    std::string name = recovered_name("a.pcap", 1000000000);
    EXPECT_EQ(slurp(d.path / name), whole) << testing::PrintToString(d.names());
    struct stat st;
    ASSERT_EQ(stat((d.path / name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mtim.tv_sec, 1000000000);
    EXPECT_EQ(st.st_mtim.tv_nsec, 123456789);
}

TEST(FileSafety, RecoveredNameNeverReplacesAFile) {
    TempDir d;
    fs::path hidden = d.path / ".a.pcap.partial";
    spill(hidden, capture(Format::kPcapMicro, 2));
    struct stat st;
    ASSERT_EQ(stat(hidden.c_str(), &st), 0);
    time_t mtime = st.st_mtime;
    std::string taken = recovered_name("a.pcap", mtime);
    spill(d.path / taken, "already here");
    FileSetOptions o;
    o.path = (d.path / "a.pcap").string();
    FileSet f(o);
    f.recover_stale();
    EXPECT_EQ(slurp(d.path / taken), "already here");
    std::string next = recovered_name("a.pcap", mtime, 1);
    EXPECT_EQ(pcap_packets(d.path / next), 2) << testing::PrintToString(d.names());
    EXPECT_FALSE(fs::exists(hidden));
}

TEST(FileSafety, StartupRecoversEveryRingNameAndDropsEmptyOnes) {
    TempDir d;
    spill(d.path / ".r.pcap2.partial", capture(Format::kPcapng, 5));
    spill(d.path / ".r.pcap0.partial", capture(Format::kPcapng, 0));     // header only
    spill(d.path / ".r.pcap1.partial", std::string(8192, '\0'));         // a tmpfs spare
    spill(d.path / ".other.pcap.partial", capture(Format::kPcapng, 1));  // not this -w
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 4096;
    o.max_files = 3;
    FileSet f(o);
    f.recover_stale();
    auto rec = recovered_in(d);
    ASSERT_EQ(rec.size(), 1u) << testing::PrintToString(d.names());
    EXPECT_EQ(rec[0].rfind("r.recovered-", 0), 0u) << rec[0];
    EXPECT_EQ(rec[0].substr(rec[0].size() - 6), ".pcap2") << rec[0];
    EXPECT_EQ(slurp(d.path / rec[0]), capture(Format::kPcapng, 5));
    EXPECT_EQ(d.names(), (std::set<std::string>{rec[0], ".other.pcap.partial"}));
}

TEST(FileSafety, HiddenFileOfAnotherUserOrLiveWriterIsLeftAlone) {
    TempDir d;
    fs::path hidden = d.path / ".a.pcap.partial";
    std::string bytes = capture(Format::kPcapMicro, 2);
    spill(hidden, bytes);
    {
        // Another process writing it holds its lock.
        int held = open(hidden.c_str(), O_RDONLY | O_CLOEXEC);
        ASSERT_GE(held, 0);
        ASSERT_EQ(flock(held, LOCK_EX), 0);
        FileSetOptions o;
        o.path = (d.path / "a.pcap").string();
        FileSet f(o);
        f.recover_stale();
        EXPECT_FALSE(f.open_next(0).ok());
        close(held);
    }
    EXPECT_EQ(slurp(hidden), bytes);
    EXPECT_TRUE(recovered_in(d).empty());
    if (geteuid() == 0) {
        ASSERT_EQ(chown(hidden.c_str(), kOtherUid, kOtherUid), 0);
        FileSetOptions o;
        o.path = (d.path / "a.pcap").string();
        FileSet f(o);
        linecap::Status s = f.open_next(0);
        ASSERT_FALSE(s.ok());
        EXPECT_NE(s.error().find("owned by uid 65534"), std::string::npos) << s.error();
        EXPECT_EQ(slurp(hidden), bytes);
        EXPECT_TRUE(recovered_in(d).empty());
    }
}

TEST(FileSafety, RingDeletionRemovesAPlantedLinkNotItsTarget) {
    TempDir d;
    fs::path victim = d.path / "victim";
    spill(victim, "precious");
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 1;
    o.max_files = 1;
    FileSet f(o);
    ASSERT_TRUE(f.open_next(0).ok());
    ASSERT_TRUE(f.close_current().ok());
    // The closed ring file (-W 1: the name has no number) is swapped for a
    // link before -W deletes it.
    fs::remove(d.path / "r.pcap");
    fs::create_symlink(victim, d.path / "r.pcap");
    ASSERT_TRUE(f.open_next(0).ok());
    EXPECT_FALSE(fs::is_symlink(d.path / "r.pcap"));
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(slurp(victim), "precious");
    EXPECT_FALSE(fs::is_symlink(d.path / "r.pcap"));
}

TEST(RecordScan, StopsAtZerosAndDamagedBlocks) {
    TempDir d;
    auto scan = [&](const std::string& bytes) {
        spill(d.path / "f", bytes);
        int fd = open((d.path / "f").c_str(), O_RDONLY | O_CLOEXEC);
        RecordScan s = scan_records(fd, bytes.size());
        close(fd);
        return s;
    };
    std::string pcap = capture(Format::kPcapMicro, 4);
    RecordScan s = scan(pcap + std::string(4096, '\0'));
    EXPECT_TRUE(s.capture);
    EXPECT_EQ(s.packets, 4u);
    EXPECT_EQ(s.end, pcap.size());

    std::string ng = capture(Format::kPcapng, 4);
    std::string bad = ng;
    bad[bad.size() - 1] ^= 1;  // last block's trailing length
    s = scan(bad);
    EXPECT_EQ(s.packets, 3u);
    EXPECT_EQ(s.end, capture(Format::kPcapng, 3).size());

    s = scan("not a capture at all, just words");
    EXPECT_FALSE(s.capture);
    s = scan("");
    EXPECT_FALSE(s.capture);
}

TEST(FileSafety, ReplaceFileReplacesALinkNotItsTarget) {
    // --stats-json: a link under the name is replaced by the new file.
    TempDir d;
    fs::path victim = d.path / "victim";
    spill(victim, "precious");
    fs::path summary = d.path / "s.json";
    fs::create_symlink(victim, summary);
    ASSERT_TRUE(replace_file(summary.string(), "{}\n", 0644).ok());
    EXPECT_EQ(slurp(victim), "precious");
    EXPECT_FALSE(fs::is_symlink(summary));
    EXPECT_EQ(slurp(summary), "{}\n");
    EXPECT_EQ(d.names(), (std::set<std::string>{"victim", "s.json"}));
    // A planted entry under the hidden name is refused, not followed.
    std::string hidden = ".s.json." + std::to_string(getpid()) + ".partial";
    fs::create_symlink(victim, d.path / hidden);
    linecap::Status s = replace_file(summary.string(), "{\"x\": 1}\n", 0644);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(slurp(victim), "precious");
    EXPECT_EQ(slurp(summary), "{}\n");
}

namespace {

/* -G 1 into TOP/pT/t-T.pcap (T: the period's start, %s): a directory per
 * period below the directory named literally. */
FileSetOptions dated_dirs(const TempDir& d) {
    FileSetOptions o;
    o.path = (d.path / "p%s" / "t-%s.pcap").string();
    o.rotate_seconds = 1;
    return o;
}

}  // namespace

TEST(FileSafety, TimeDirectoriesAreMadeBelowTheNamedOne) {
    // capd makes each period's directory: its own (or the -Z user's), with
    // the files' mode and search permission where they may be read.
    TempDir d;
    FileSetOptions o = dated_dirs(d);
    FileSet f(o);
    for (time_t t = 100; t < 102; t++) {
        ASSERT_TRUE(f.open_next(t).ok());
        ASSERT_TRUE(f.close_current().ok());
    }
    EXPECT_EQ(d.names(), (std::set<std::string>{"p100", "p101"}));
    EXPECT_TRUE(fs::is_regular_file(d.path / "p101" / "t-101.pcap"));
    struct stat st;
    ASSERT_EQ(lstat((d.path / "p100").c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0750u);
    EXPECT_EQ(st.st_uid, geteuid());
}

TEST(FileSafety, PlantedLinkAsATimeDirectoryIsRefused) {
    // A user who may write in the named directory links the next period's
    // directory name to another directory: nothing is created there, and
    // the error names the link.
    TempDir d;
    fs::path elsewhere = d.path / "elsewhere";
    fs::create_directory(elsewhere);
    fs::create_directory_symlink(elsewhere, d.path / "p100");
    FileSetOptions o = dated_dirs(d);
    FileSet f(o);
    linecap::Status s = f.open_next(100);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().find("p100 is a symbolic link"), std::string::npos) << s.error();
    EXPECT_TRUE(fs::is_empty(elsewhere));
    EXPECT_TRUE(fs::is_symlink(d.path / "p100"));
}

TEST(FileSafety, AnotherUsersTimeDirectoryIsRefused) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
    TempDir d;
    fs::create_directory(d.path / "p100");
    ASSERT_EQ(chown((d.path / "p100").c_str(), kOtherUid, kOtherUid), 0);
    FileSetOptions o = dated_dirs(d);
    FileSet f(o);
    linecap::Status s = f.open_next(100);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().find("p100 is owned by uid 65534"), std::string::npos) << s.error();
    EXPECT_TRUE(fs::is_empty(d.path / "p100"));
    // A directory of root's is capd's to write in.
    fs::create_directory(d.path / "p101");
    ASSERT_TRUE(f.open_next(101).ok());
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_TRUE(fs::is_regular_file(d.path / "p101" / "t-101.pcap"));
}

TEST(FileSafety, RingRemovalNeverFollowsAReplacedTimeDirectory) {
    // -W 2 into directories of root's: the directory of the oldest file is
    // moved away and a link to another directory, holding a file of that
    // name, takes its place. The ring's removal leaves that file alone.
    TempDir d;
    for (const char* p : {"p100", "p101", "p102"}) fs::create_directory(d.path / p);
    FileSetOptions o = dated_dirs(d);
    o.max_files = 2;
    FileSet f(o);
    for (time_t t = 100; t < 102; t++) {
        ASSERT_TRUE(f.open_next(t).ok());
        ASSERT_TRUE(f.close_current().ok());
    }
    fs::path elsewhere = d.path / "elsewhere";
    fs::create_directory(elsewhere);
    spill(elsewhere / "t-100.pcap", "precious");
    fs::rename(d.path / "p100", d.path / "moved");
    fs::create_directory_symlink(elsewhere, d.path / "p100");
    ASSERT_TRUE(f.open_next(102).ok());
    ASSERT_TRUE(f.close_current().ok());
    EXPECT_EQ(slurp(elsewhere / "t-100.pcap"), "precious");
    EXPECT_TRUE(fs::is_regular_file(d.path / "moved" / "t-100.pcap"));
    EXPECT_TRUE(fs::is_regular_file(d.path / "p102" / "t-102.pcap"));
}

TEST(FileSafety, TimeDirectoriesWalkNoParentComponent) {
    // ".." after a conversion would climb out of the capture's
    // directories: refused, nothing made.
    TempDir d;
    FileSetOptions o;
    o.path = (d.path / "p%s" / ".." / ".." / "t-%s.pcap").string();
    o.rotate_seconds = 1;
    FileSet f(o);
    linecap::Status s = f.open_next(100);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().find("'..'"), std::string::npos) << s.error();
    EXPECT_TRUE(fs::is_empty(d.path / "p100"));
}

TEST(FileSafety, HiddenFilesInEarlierTimeDirectoriesAreRecovered) {
    // Runs killed in the periods of p100 (its file cut in a record, and a
    // -C file of it) and p101 (a header and no packet); this run starts in
    // p200, without retention. Each is recovered in its own directory as
    // in a literal one, with its line. Left alone: another capture's hidden
    // file, one behind a link to another directory, one in a directory
    // whose name p%s does not make, and as root nobody's file and a file
    // in nobody's directory.
    TempDir d;
    auto dir = [&](const std::string& n) {
        fs::create_directory(d.path / n);
        return d.path / n;
    };
    const std::string whole = capture(Format::kPcapMicro, 3);
    const fs::path cut = dir("p100") / ".t-100.pcap.partial";
    const fs::path counted = d.path / "p100" / ".t-100.pcap1.partial";
    spill(cut, capture(Format::kPcapMicro, 4).substr(0, whole.size() + 30));
    spill(counted, capture(Format::kPcapng, 2));
    spill(d.path / "p100" / ".t-100.pcap.partial.idx", "the killed run's live index");
    const struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
    for (const fs::path& p : {cut, counted}) ASSERT_EQ(utimensat(AT_FDCWD, p.c_str(), old, 0), 0);
    spill(dir("p101") / ".t-101.pcap.partial", capture(Format::kPcapMicro, 0));
    const std::string one = capture(Format::kPcapMicro, 1);
    std::vector<fs::path> left = {dir("p102") / ".other.pcap.partial",
                                  dir("elsewhere") / ".t-103.pcap.partial",
                                  dir("q104") / ".t-104.pcap.partial"};
    fs::create_directory_symlink(d.path / "elsewhere", d.path / "p103");
    const bool root = geteuid() == 0;
    if (root) {
        left.push_back(dir("p105") / ".t-105.pcap.partial");
        left.push_back(dir("p106") / ".t-106.pcap.partial");
    }
    for (const fs::path& p : left) spill(p, one);
    if (root) {
        ASSERT_EQ(chown((d.path / "p105").c_str(), kOtherUid, kOtherUid), 0);
        ASSERT_EQ(chown(left.back().c_str(), kOtherUid, kOtherUid), 0);
    }
    FileSet f(dated_dirs(d));
    testing::internal::CaptureStderr();
    f.recover_stale();
    std::string log = testing::internal::GetCapturedStderr();
    const std::string rec = recovered_name("t-100.pcap", 1000000000);
    const std::string rec1 = recovered_name("t-100.pcap1", 1000000000);
    EXPECT_EQ(slurp(d.path / "p100" / rec), whole) << log;
    EXPECT_EQ(pcap_packets(d.path / "p100" / rec), 3);
    EXPECT_EQ(slurp(d.path / "p100" / rec1), capture(Format::kPcapng, 2));
    // The live index of the recovered file went with its hidden name.
    std::set<std::string> p100;
    for (auto& e : fs::directory_iterator(d.path / "p100")) p100.insert(e.path().filename());
    EXPECT_EQ(p100, (std::set<std::string>{rec, rec1})) << log;
    EXPECT_TRUE(fs::is_empty(d.path / "p101")) << log;
    const std::string at = "capd: " + d.path.string() + "/";
    EXPECT_NE(log.find(at +
                       "p100/.t-100.pcap.partial: left by a run that did not finish: "
                       "recovered as " +
                       rec + " (3 packets, 30 bytes of a cut or older tail dropped)\n"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find(at +
                       "p100/.t-100.pcap1.partial: left by a run that did not finish: "
                       "recovered as " +
                       rec1 + " (2 packets)\n"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find(at + "p101/.t-101.pcap.partial: removed: no whole packet"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find(at + "p100: removed 1 index file left by a run that did not finish"),
              std::string::npos)
        << log;
    size_t lines = 0;
    for (size_t p = 0; (p = log.find('\n', p)) != std::string::npos; p++) lines++;
    // Nobody's file is said; nothing is said of the entries not walked.
    if (root) {
        EXPECT_NE(log.find(at + "p106/.t-106.pcap.partial: left alone: owned by uid 65534"),
                  std::string::npos)
            << log;
    }
    EXPECT_EQ(lines, root ? 5u : 4u) << log;
    for (const fs::path& p : left) EXPECT_EQ(slurp(p), one) << p;
    EXPECT_TRUE(fs::is_symlink(d.path / "p103"));
    ASSERT_TRUE(f.open_next(200).ok());
    f.discard_current();
}
