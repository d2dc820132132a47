#include "query/time_spec.hh"

#include <gtest/gtest.h>

using linecap::query::format_time;
using linecap::query::parse_time;

namespace {

constexpr int64_t kNs = 1000000000;
constexpr int64_t kNow = 1796565900LL * kNs;  // 2026-12-06T14:05:00Z

int64_t t(const char* s) {
    auto r = parse_time(s, kNow);
    EXPECT_TRUE(r.ok()) << s << ": " << (r.ok() ? "" : r.error());
    return r.ok() ? *r : -1;
}

TEST(TimeSpec, Rfc3339) {
    EXPECT_EQ(t("2026-12-06T14:05:00Z"), kNow);
    EXPECT_EQ(t("2026-12-06t14:05:00z"), kNow);
    EXPECT_EQ(t("2026-12-06 14:05:00Z"), kNow);
    EXPECT_EQ(t("2026-12-06T15:05:00+01:00"), kNow);
    EXPECT_EQ(t("2026-12-06T13:35:00-00:30"), kNow);
    EXPECT_EQ(t("2026-12-06T14:05:00.000000001Z"), kNow + 1);
    EXPECT_EQ(t("2026-12-06T14:05:00.5Z"), kNow + kNs / 2);
    EXPECT_EQ(t("1970-01-01T00:00:00Z"), 0);
    EXPECT_EQ(t("2000-02-29T00:00:00Z"), 951782400LL * kNs);
}

TEST(TimeSpec, UnixSeconds) {
    EXPECT_EQ(t("1796565900"), kNow);
    EXPECT_EQ(t("1796565900.25"), kNow + kNs / 4);
    EXPECT_EQ(t("1796565900.123456789"), kNow + 123456789);
    EXPECT_EQ(t("0"), 0);
}

TEST(TimeSpec, Relative) {
    EXPECT_EQ(t("-500ms"), kNow - 500000000);
    EXPECT_EQ(t("-30s"), kNow - 30 * kNs);
    EXPECT_EQ(t("-15m"), kNow - 900 * kNs);
    EXPECT_EQ(t("-2h"), kNow - 7200 * kNs);
    EXPECT_EQ(t("-1d"), kNow - 86400 * kNs);
    EXPECT_EQ(t("-1.5h"), kNow - 5400 * kNs);
    EXPECT_EQ(t("now"), kNow);
}

TEST(TimeSpec, BadTimesAreErrors) {
    for (const char* s :
         {"", "14:05", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-12-06T14:05:00",
          "2026-12-06T24:00:00Z", "2026-12-06T14:05:00.1234567891Z", "2026-12-06T14:05:00+1:00",
          "2026-12-06T14:05:00Zjunk", "1796565900.", "1796565900.1234567891", "abc", "-15",
          "-15x", "-m", "--15m", "2025-02-29T00:00:00Z", "1e9"}) {
        auto r = parse_time(s, kNow);
        EXPECT_FALSE(r.ok()) << "'" << s << "' parsed as " << (r.ok() ? *r : 0);
        if (!r.ok()) {
            EXPECT_NE(r.error().find("bad time '"), std::string::npos) << r.error();
        }
    }
}

TEST(TimeSpec, FormatRoundTrips) {
    EXPECT_EQ(format_time(kNow + 1), "2026-12-06T14:05:00.000000001Z");
    EXPECT_EQ(format_time(0), "1970-01-01T00:00:00.000000000Z");
    for (int64_t v : {kNow, kNow + 999999999, int64_t(951782400) * kNs + 7})
        EXPECT_EQ(t(format_time(v).c_str()), v);
}

}  // namespace
