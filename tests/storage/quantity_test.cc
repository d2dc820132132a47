// common/quantity.hh: the number-and-unit parsing every size and duration
// option goes through.
#include "common/quantity.hh"

#include <gtest/gtest.h>

using namespace linecap;

TEST(Quantity, NumberThenUnitFromTheTable) {
    EXPECT_EQ(*parse_quantity("20k", kDecimalBytes), 20000.0);
    EXPECT_EQ(*parse_quantity("1.5M", kDecimalBytes), 1.5e6);
    EXPECT_EQ(*parse_quantity("256K", kBinaryBytes), 262144.0);
    EXPECT_EQ(*parse_quantity("64m", kBinaryBytes), 67108864.0);
    EXPECT_EQ(*parse_quantity("4096", kBinaryBytes), 4096.0);
    EXPECT_EQ(*parse_quantity("15m", kSeconds), 900.0);
    EXPECT_EQ(*parse_quantity(".5d", kSeconds), 43200.0);
}

TEST(Quantity, AnythingElseIsRefused) {
    for (const char* bad : {"", "k", "-1k", "+1k", " 1k", "1k ", "1 k", "0x10", "1e3", "nan", "inf",
                            "1KB", "1Ki", "1kk", "1.2.3"})
        EXPECT_FALSE(parse_quantity(bad, kDecimalBytes)) << bad;
    EXPECT_FALSE(parse_quantity("1.5M", kBinaryBytes, /*whole_only=*/true));
    EXPECT_TRUE(parse_quantity("2M", kBinaryBytes, /*whole_only=*/true));
}

TEST(Quantity, SplitKeepsTheUnitForTheCallersMessage) {
    auto q = split_quantity("12X");
    ASSERT_TRUE(q);
    EXPECT_EQ(q->number, 12.0);
    EXPECT_EQ(q->unit, "X");
    EXPECT_FALSE(unit_mult(q->unit, kSeconds));
    EXPECT_FALSE(split_quantity("X12"));
}
