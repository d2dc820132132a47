// Retention: its values, the names it may delete, the clock-aligned -G
// periods, and FileSet::retain() by age (oldest first, an earlier run's
// files and those recovered from killed runs included, a planted file and
// a hard-linked one left alone, files from the future passed over, and
// with -G the files in the strftime directories an earlier run made).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>

#include "storage/file_set.hh"
#include "storage/recover.hh"
#include "storage/retention.hh"
#include "tests/storage/temp_dir.hh"

using namespace linecap::storage;
namespace fs = std::filesystem;
using linecap::storage::test_support::TempDir;

namespace {

void write_file(const fs::path& p, const std::string& s, time_t mtime) {
    {
        std::ofstream f(p);
        f << s;
    }
    struct timeval tv[2] = {{mtime, 0}, {mtime, 0}};
    ASSERT_EQ(utimes(p.c_str(), tv), 0);
}

/* r.pcap in d, cut every 1000 bytes, files kept for 100 s. */
FileSetOptions aged_set(const TempDir& d) {
    FileSetOptions o;
    o.path = (d.path / "r.pcap").string();
    o.rotate_bytes = 1000;
    o.retain_age_s = 100;
    return o;
}

/* `name` below d (strftime directories and all), -G 1, files kept for 100 s. */
FileSetOptions aged_timed_set(const TempDir& d, const std::string& name) {
    FileSetOptions o;
    o.path = (d.path / name).string();
    o.rotate_seconds = 1;
    o.retain_age_s = 100;
    return o;
}

/* A capture's start at `now` as capd makes it: the hidden files of killed
 * runs recovered, the first file opened, retention applied. What it said. */
std::string start_and_retain(FileSet& f, time_t now) {
    testing::internal::CaptureStderr();
    f.recover_stale();
    const bool opened = f.open_next(now).ok();
    f.retain(now);
    std::string log = testing::internal::GetCapturedStderr();
    EXPECT_TRUE(opened) << log;
    return log;
}

}  // namespace

TEST(Retention, FreeFloorValues) {
    auto pct = parse_retain_free("12.5%");
    ASSERT_TRUE(pct.ok());
    EXPECT_DOUBLE_EQ(pct->pct, 12.5);
    EXPECT_EQ(pct->floor(1000), 125u);
    auto mb = parse_retain_free("500M");
    ASSERT_TRUE(mb.ok());
    EXPECT_EQ(mb->bytes, 500000000u);
    EXPECT_EQ(mb->floor(1), 500000000u);
    auto gib = parse_retain_free("1.5GiB");
    ASSERT_TRUE(gib.ok());
    EXPECT_EQ(gib->bytes, 1610612736u);
    EXPECT_EQ(parse_retain_free("4096")->bytes, 4096u);
    for (const char* bad : {"", "%", "0%", "100%", "150%", "-1%", "0", "0.1", "5X", "G", "1e30",
                            "nan", "inf%", "10 %"})
        EXPECT_FALSE(parse_retain_free(bad).ok()) << bad;
}

TEST(Retention, AgeValues) {
    EXPECT_EQ(*parse_retain_age("90"), 90u);
    EXPECT_EQ(*parse_retain_age("90s"), 90u);
    EXPECT_EQ(*parse_retain_age("15m"), 900u);
    EXPECT_EQ(*parse_retain_age("1.5h"), 5400u);
    EXPECT_EQ(*parse_retain_age("7d"), 604800u);
    for (const char* bad : {"", "0", "0.5", "-3", "3w", "h", "50000d", "1e300"})
        EXPECT_FALSE(parse_retain_age(bad).ok()) << bad;
}

TEST(Retention, FloorAboveTheFileSystemIsRefused) {
    TempDir d;
    EXPECT_TRUE(check_retain_free(d.path.string(), *parse_retain_free("10%")).ok());
    EXPECT_TRUE(check_retain_free(d.path.string(), *parse_retain_free("1k")).ok());
    linecap::Status s = check_retain_free(d.path.string(), *parse_retain_free("999000T"));
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().find("can never be met"), std::string::npos) << s.error();
}

TEST(Retention, OnlyTheSetsNamesAreRetained) {
    // -C: NAME and NAME with a counter.
    EXPECT_TRUE(retained_name("cap.pcap", false, "cap.pcap"));
    EXPECT_TRUE(retained_name("cap.pcap", false, "cap.pcap12"));
    EXPECT_FALSE(retained_name("cap.pcap", false, "cap.pcap.bak"));
    EXPECT_FALSE(retained_name("cap.pcap", false, "cap.pcapx1"));
    EXPECT_FALSE(retained_name("cap.pcap", false, ".cap.pcap.partial"));
    EXPECT_FALSE(retained_name("cap.pcap", false, "xcap.pcap"));
    // -G: the strftime conversions with their widths.
    const std::string g = "g-%Y%m%d-%H%M%S.pcap";
    EXPECT_TRUE(retained_name(g, true, "g-20261206-194501.pcap"));
    EXPECT_TRUE(retained_name(g, true, "g-20261206-194501.pcap3"));
    EXPECT_FALSE(retained_name(g, true, "g-2026126-194501.pcap"));
    EXPECT_FALSE(retained_name(g, true, "g-20261206-194501.pcap.gz"));
    EXPECT_FALSE(retained_name(g, true, "g-notes.pcap"));
    EXPECT_FALSE(retained_name(g, true, "h-20261206-194501.pcap"));
    EXPECT_TRUE(retained_name("t-%s.pcap", true, "t-1796587235.pcap"));
    EXPECT_FALSE(retained_name("t-%s.pcap", true, "t-.pcap"));
    EXPECT_TRUE(retained_name("d-%F_%T.pcap", true, "d-2026-12-06_19:45:01.pcap"));
    EXPECT_FALSE(retained_name("d-%F_%T.pcap", true, "d-2026-12-06_19-45-01.pcap"));
    EXPECT_TRUE(retained_name("p%%-%H.pcap", true, "p%-19.pcap"));
    // A conversion whose text is not known matches nothing.
    EXPECT_FALSE(retained_name("x-%a.pcap", true, "x-Sun.pcap"));
}

TEST(Retention, AlignedPeriodsStartAtWholeMultiples) {
    FileSetOptions o;
    o.path = "x-%s.pcap";
    o.rotate_seconds = 60;
    FileSet plain(o);
    EXPECT_EQ(plain.period_start(1796587235), 1796587235);
    o.align = true;
    FileSet aligned(o);
    setenv("TZ", "UTC", 1);
    tzset();
    EXPECT_EQ(aligned.period_start(1796587235), 1796587200);
    EXPECT_EQ(aligned.period_start(1796587200), 1796587200);
    // Local time: -G 3600 in a zone half an hour off starts at its hours.
    o.rotate_seconds = 3600;
    FileSet hourly(o);
    setenv("TZ", "Asia/Kolkata", 1);  // UTC+05:30, no summer time
    tzset();
    time_t t = hourly.period_start(1796587235);
    struct tm tm;
    localtime_r(&t, &tm);
    EXPECT_EQ(tm.tm_min, 0);
    EXPECT_EQ(tm.tm_sec, 0);
    EXPECT_LE(t, 1796587235);
    EXPECT_GT(t + 3600, 1796587235);
    unsetenv("TZ");
    tzset();
}

TEST(Retention, AgeDeletesOldestOwnFilesAndEarlierRunsOnly) {
    TempDir d;
    time_t now = time(nullptr);
    // An earlier run's files of this name, a planted file, another
    // capture's file and a hard-linked file of this name, all old.
    write_file(d.path / "r.pcap", "earlier 0", now - 1000);
    write_file(d.path / "r.pcap5", "earlier 5", now - 1000);
    write_file(d.path / "r.pcap6", "earlier 6", now - 900);
    write_file(d.path / "r.pcap.notes", "planted", now - 1000);
    write_file(d.path / "other.pcap", "other", now - 1000);
    write_file(d.path / "r.pcap7", "linked", now - 1000);
    ASSERT_EQ(link((d.path / "r.pcap7").c_str(), (d.path / "keep").c_str()), 0);
    FileSetOptions o = aged_set(d);
    FileSet f(o);
    ASSERT_TRUE(f.retaining());
    f.recover_stale();
    ASSERT_TRUE(f.open_next(now).ok());
    ASSERT_EQ(write(f.fd(), "new", 3), 3);
    ASSERT_TRUE(f.close_current().ok());  // this run's r.pcap replaces the earlier one
    ASSERT_TRUE(f.open_next(now, FileSet::Open::kCut).ok());
    f.retain(now);
    // The earlier r.pcap5 and r.pcap6 went; the earlier r.pcap's name is
    // this run's file now, which is new (and the earlier r.pcap1, had there
    // been one, would be replaced by the file being written); the others
    // were never this capture's to delete.
    EXPECT_EQ(f.files_retired(), 2u);
    EXPECT_EQ(f.bytes_retired(), 18u);
    EXPECT_EQ(d.names(), (std::set<std::string>{"r.pcap", ".r.pcap1.partial", "r.pcap.notes",
                                                "other.pcap", "r.pcap7", "keep"}));
    // Once this run's file is old too, it goes; the one being written stays.
    f.retain(now + 1000);
    EXPECT_EQ(f.files_retired(), 3u);
    EXPECT_EQ(d.names(), (std::set<std::string>{".r.pcap1.partial", "r.pcap.notes", "other.pcap",
                                                "r.pcap7", "keep"}));
    f.discard_current();
}

TEST(Retention, RecoveredNamesLeadBackToTheirCapture) {
    for (const std::string name :
         {"x.pcap", "x.pcap2", "cap", "cap7", "a.b.pcap.zst", "x_w1.pcap3", "r-%Y.pcap"})
        for (unsigned k : {0u, 1u, 12u}) {
            std::string rec = recovered_name(name, 1796587235, k);
            EXPECT_EQ(recovered_from(rec), name) << rec;
        }
    for (const char* no :
         {"x.pcap", "x.pcap2", "x.recovered-2026.pcap", "x.recovered-20261206T101500.pcap",
          "x.recovered-20261206T101500Z-0.pcap", "x.recovered-20261206T101500Z-.pcap",
          "x.recovered-20261206T101500Zz.pcap", "x.recovered-20261206T101500Z.pcap.bak",
          "x.y.recovered-20261206T101500Z", ".x.recovered-20261206T101500Z.pcap",
          ".recovered-20261206T101500Z.pcap", "x.recovered-2026120aT101500Z.pcap"})
        EXPECT_EQ(recovered_from(no), "") << no;
}

TEST(Retention, RecoveredFilesAreRetainedByAgeOldestFirst) {
    TempDir d;
    time_t now = time(nullptr);
    // Two files recovered from killed runs of this capture (one of a ring
    // name, counted on after a taken name), one with the index capq
    // --reindex gives it, and an earlier run's file between them in age.
    const std::string rec_a = recovered_name("r.pcap", now - 2000);
    const std::string rec_b = recovered_name("r.pcap3", now - 1500, 1);
    write_file(d.path / rec_a, "recovered a", now - 2000);
    write_file(d.path / ("." + rec_a + ".idx"), "its index", now - 2000);
    write_file(d.path / "r.pcap5", "earlier 5", now - 1000);
    write_file(d.path / rec_b, "recovered b", now - 1500);
    // Not this capture's to delete: another capture's recovered file, a
    // name that is not a recovered one, a hard-linked recovered file, a
    // link under a recovered name, another user's; and a recent one.
    const std::string other = recovered_name("other.pcap", now - 3000);
    const std::string linked = recovered_name("r.pcap", now - 3000, 2);
    const std::string link = recovered_name("r.pcap", now - 3000, 3);
    const std::string foreign = recovered_name("r.pcap", now - 3000, 4);
    const std::string recent = recovered_name("r.pcap", now);
    write_file(d.path / other, "other", now - 3000);
    write_file(d.path / "r.recovered-2026.pcap", "planted", now - 3000);
    write_file(d.path / linked, "linked", now - 3000);
    ASSERT_EQ(::link((d.path / linked).c_str(), (d.path / "keep").c_str()), 0);
    ASSERT_EQ(symlink("keep", (d.path / link).c_str()), 0);
    write_file(d.path / foreign, "foreign", now - 3000);
    const bool root = geteuid() == 0;
    if (root) {
        ASSERT_EQ(chown((d.path / foreign).c_str(), 65534, 65534), 0);
    }
    write_file(d.path / recent, "recent", now);
    FileSetOptions o = aged_set(d);
    FileSet f(o);
    const std::string log = start_and_retain(f, now);
    EXPECT_EQ(f.files_retired(), root ? 3u : 4u) << log;
    std::set<std::string> left = {
        ".r.pcap.partial", other, "r.recovered-2026.pcap", linked, "keep", link, recent};
    if (root) left.insert(foreign);
    EXPECT_EQ(d.names(), left) << log;
    // Oldest first: by the killed runs' last writes.
    size_t a = log.find(rec_a + ": deleted"), b = log.find(rec_b + ": deleted"),
           e = log.find("r.pcap5: deleted");
    ASSERT_NE(a, std::string::npos) << log;
    ASSERT_NE(b, std::string::npos) << log;
    ASSERT_NE(e, std::string::npos) << log;
    EXPECT_LT(a, b);
    EXPECT_LT(b, e);
    // The recent one counts too, not old enough yet.
    EXPECT_NE(log.find("4 files of an earlier run under this capture's names count for retention "
                       "(3 of them recovered from a killed run)"),
              std::string::npos)
        << log;
    f.discard_current();
}

TEST(Retention, RingNeverDeletesARecoveredFile) {
    // -W 2 with an age: the ring wraps over its own names many times; the
    // recovered file, not old enough for the age, stays.
    TempDir d;
    time_t now = time(nullptr);
    const std::string rec = recovered_name("r.pcap1", now);
    write_file(d.path / rec, "recovered", now);
    FileSetOptions o = aged_set(d);
    o.max_files = 2;
    FileSet f(o);
    f.recover_stale();
    for (int i = 0; i < 5; i++) {
        ASSERT_TRUE(f.open_next(now, FileSet::Open::kCut).ok());
        f.retain(now);
    }
    EXPECT_EQ(f.files_retired(), 0u);
    EXPECT_EQ(d.names(), (std::set<std::string>{rec, "r.pcap1", ".r.pcap0.partial"}));
    // Once old by the age, retention deletes it.
    f.retain(now + 1000);
    EXPECT_EQ(f.files_retired(), 2u);
    EXPECT_EQ(d.names(), (std::set<std::string>{".r.pcap0.partial"}));
    f.discard_current();
}

TEST(Retention, ManyFilesFromTheFutureAreLookedAtOnce) {
    // 2000 files of an earlier run last written far in the future, between
    // three old ones and this run's two closed files.
    TempDir d;
    time_t now = time(nullptr);
    std::set<std::string> future;
    for (int i = 100; i < 103; i++)
        write_file(d.path / ("r.pcap" + std::to_string(i)), "old", now - 1000);
    for (int i = 1000; i < 3000; i++) {
        std::string n = "r.pcap" + std::to_string(i);
        write_file(d.path / n, "future", now + 1000000);
        future.insert(n);
    }
    FileSetOptions o = aged_set(d);
    FileSet f(o);
    testing::internal::CaptureStderr();
    f.recover_stale();
    ASSERT_TRUE(f.open_next(now).ok());
    ASSERT_TRUE(f.open_next(now, FileSet::Open::kCut).ok());
    ASSERT_TRUE(f.open_next(now, FileSet::Open::kCut).ok());
    // This run's r.pcap and r.pcap1 are old by now + 1000; the future
    // files are passed over, and the old files on both sides of them go.
    f.retain(now + 1000);
    EXPECT_EQ(f.files_retired(), 5u);
    future.insert(".r.pcap2.partial");
    EXPECT_EQ(d.names(), future);
    // Each of the 2005 files was looked at once, and once more at the next
    // check, which deletes nothing.
    EXPECT_EQ(f.retention_looks(), 2005u);
    f.retain(now + 1000);
    EXPECT_EQ(f.files_retired(), 5u);
    EXPECT_EQ(f.retention_looks(), 4005u);
    (void)testing::internal::GetCapturedStderr();
    f.discard_current();
}

TEST(Retention, EarlierFilesInStrftimeDirectoriesAreRetained) {
    // -G with strftime directories: an earlier run's day directories below
    // the literal part, and look-alikes that are not this capture's.
    TempDir d, elsewhere;
    time_t now = time(nullptr);
    auto day = [&](const std::string& rel) {
        fs::create_directories(d.path / rel);
        return d.path / rel;
    };
    write_file(day("2019/12-31") / "c-235959.pcap", "oldest", now - 3000);
    write_file(day("2020/01-01") / "c-000000.pcap", "with index", now - 2000);
    write_file(d.path / "2020/01-01/.c-000000.pcap.idx", "its index", now - 2000);
    write_file(day("2020/01-02") / "c-000000.pcap", "beside a foreign file", now - 1500);
    write_file(d.path / "2020/01-02/notes.txt", "foreign", now - 1500);
    const std::string rec = recovered_name("c-000000.pcap", now - 1200);
    write_file(day("2020/01-03") / rec, "recovered", now - 1200);
    write_file(day("2020/01-06") / "c-000000.pcap", "recent", now);
    // Not a name %m-%d makes; a link to another directory; a file under a
    // year's name; another user's directory (as root).
    write_file(day("2020/0103") / "c-000000.pcap", "not a day", now - 3000);
    write_file(elsewhere.path / "c-000000.pcap", "through a link", now - 3000);
    ASSERT_EQ(symlink(elsewhere.path.c_str(), (d.path / "2020/01-04").c_str()), 0);
    write_file(d.path / "2021", "a file", now - 3000);
    const bool root = geteuid() == 0;
    if (root) {
        write_file(day("2020/01-05") / "c-000000.pcap", "in nobody's directory", now - 3000);
        ASSERT_EQ(chown((d.path / "2020/01-05").c_str(), 65534, 65534), 0);
    }
    FileSetOptions o = aged_timed_set(d, "%Y/%m-%d/c-%H%M%S.pcap");
    FileSet f(o);
    const std::string log = start_and_retain(f, now);
    EXPECT_NE(log.find(d.path.string() +
                       ": 5 files of an earlier run under this capture's names, in 5 "
                       "directories named by strftime below it, count for retention (1 of "
                       "them recovered from a killed run)"),
              std::string::npos)
        << log;
    EXPECT_EQ(f.files_retired(), 4u) << log;
    // Oldest first.
    size_t a = log.find("c-235959.pcap: deleted"), b = log.find("01-01/c-000000.pcap: deleted"),
           c = log.find("01-02/c-000000.pcap: deleted"), e = log.find(rec + ": deleted");
    ASSERT_NE(a, std::string::npos) << log;
    ASSERT_NE(b, std::string::npos) << log;
    ASSERT_NE(c, std::string::npos) << log;
    ASSERT_NE(e, std::string::npos) << log;
    EXPECT_LT(a, b);
    EXPECT_LT(b, c);
    EXPECT_LT(c, e);
    // The emptied day directories went, and the year 2019 with them; one
    // holding a foreign file stays, as do the look-alikes and the file
    // being written.
    std::set<std::string> left;
    for (auto& p : fs::recursive_directory_iterator(d.path))
        left.insert(p.path().lexically_relative(d.path).string());
    struct tm tm;
    localtime_r(&now, &tm);
    char cur[64];
    strftime(cur, sizeof(cur), "%Y/%m-%d/.c-%H%M%S.pcap.partial", &tm);
    std::set<std::string> want = {"2020",
                                  "2020/01-02",
                                  "2020/01-02/notes.txt",
                                  "2020/01-06",
                                  "2020/01-06/c-000000.pcap",
                                  "2020/0103",
                                  "2020/0103/c-000000.pcap",
                                  "2020/01-04",
                                  "2021",
                                  split_path(split_path(cur).first).first,
                                  split_path(cur).first,
                                  cur};
    if (root) {
        want.insert("2020/01-05");
        want.insert("2020/01-05/c-000000.pcap");
    }
    EXPECT_EQ(left, want) << log;
    EXPECT_EQ(elsewhere.names(), (std::set<std::string>{"c-000000.pcap"}));
    f.discard_current();
}

TEST(Retention, HiddenFilesInEarlierTimeDirectoriesAreRecoveredAndRetained) {
    // -G 1 into TOP/pT/t-T.pcap: a run killed in p100's period left its
    // hidden file, one in p101's period closed its file. Recovered at
    // start, the first is retention's oldest candidate, and both go by age
    // with their directories.
    TempDir d;
    time_t now = time(nullptr);
    // A pcap header (microseconds, Ethernet) and one 4-byte packet.
    const uint32_t head[] = {0xa1b2c3d4, 0x00040002, 0, 0, 65535, 1, 1, 0, 4, 4, 0x01020304};
    const std::string pcap(reinterpret_cast<const char*>(head), sizeof(head));
    fs::create_directories(d.path / "p100");
    fs::create_directories(d.path / "p101");
    write_file(d.path / "p100/.t-100.pcap.partial", pcap, now - 3000);
    write_file(d.path / "p101/t-101.pcap", "earlier", now - 2000);
    FileSetOptions o = aged_timed_set(d, "p%s/t-%s.pcap");
    FileSet f(o);
    const std::string log = start_and_retain(f, now);
    const std::string rec = "p100/" + recovered_name("t-100.pcap", now - 3000);
    EXPECT_NE(log.find(d.path.string() +
                       ": 2 files of an earlier run under this capture's names, in 2 "
                       "directories named by strftime below it, count for retention (1 of "
                       "them recovered from a killed run)"),
              std::string::npos)
        << log;
    EXPECT_EQ(f.files_retired(), 2u) << log;
    size_t a = log.find(rec + ": deleted"), b = log.find("p101/t-101.pcap: deleted");
    ASSERT_NE(a, std::string::npos) << log;
    ASSERT_NE(b, std::string::npos) << log;
    EXPECT_LT(a, b);
    EXPECT_EQ(d.names(), (std::set<std::string>{"p" + std::to_string(now)})) << log;
    f.discard_current();
}

TEST(Retention, OtherConversionsInTheDirectoryAreNotWalked) {
    TempDir d;
    time_t now = time(nullptr);
    fs::create_directories(d.path / "Sun");
    write_file(d.path / "Sun/c-000000.pcap", "old", now - 3000);
    FileSetOptions o = aged_timed_set(d, "%a/c-%H%M%S.pcap");
    FileSet f(o);
    testing::internal::CaptureStderr();
    f.recover_stale();
    std::string log = testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find("%a/c-%H%M%S.pcap: earlier files are not looked for"), std::string::npos)
        << log;
    f.retain(now);
    EXPECT_EQ(f.files_retired(), 0u);
    EXPECT_TRUE(fs::exists(d.path / "Sun/c-000000.pcap"));
}

TEST(Retention, StrftimeDirectoryNames) {
    EXPECT_TRUE(strftime_dir_name("%Y-%m-%d", "2026-12-07"));
    EXPECT_FALSE(strftime_dir_name("%Y-%m-%d", "2026-12-071"));  // no counter
    EXPECT_FALSE(strftime_dir_name("%Y", "20261"));
    EXPECT_FALSE(strftime_dir_name("%Y", ".."));
    EXPECT_TRUE(strftime_dir_name("day-%j", "day-341"));
    EXPECT_TRUE(strftime_known("%F_%T%%"));
    EXPECT_FALSE(strftime_known("%a"));
    EXPECT_FALSE(strftime_known("x%"));
}
