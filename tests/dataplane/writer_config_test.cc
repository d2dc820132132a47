/* Options -> storage::WriterConfig (dataplane/writer_config.hh): each option
 * lands in its field, in the field's unit. Pure: no EAL needed. */
#include <gtest/gtest.h>

#include "dataplane/writer_config.hh"

using namespace linecap;
using namespace linecap::dataplane;

namespace {

TEST(WriterConfig, Defaults) {
    Options o;
    auto c = writer_config(o, 0);
    EXPECT_EQ(c.files.rotate_bytes, 0u);
    EXPECT_EQ(c.files.writer_index, 0u);
    EXPECT_EQ(c.files.writer_count, 1u);
    EXPECT_EQ(c.files.mode, 0640u);
    EXPECT_FALSE(c.files.reuse);
    EXPECT_EQ(c.write_behind_bytes, 256ull << 20);
    EXPECT_EQ(c.format, storage::Format::kPcapMicro);
    EXPECT_STREQ(c.application.c_str(), kApplication);
    EXPECT_TRUE(c.ifaces.empty());  // the pipeline's, once the sources are open
    EXPECT_FALSE(c.interface_counters);
}

TEST(WriterConfig, EveryOptionInItsUnit) {
    Options o;
    o.write_path = "/tmp/x_%Y.pcap";
    o.rotate_mb = 1.5;  // millions of bytes, as tcpdump's -C
    o.rotate_seconds = 60;
    o.max_files = 7;
    o.post_rotate_cmd = "gzip";
    o.file_mode = 0600;
    o.direct = true;
    o.writers = 3;
    o.run_as_uid = 12;
    o.run_as_gid = 34;
    o.start_cpus = {0, 2};
    o.format = storage::Format::kPcapng;
    o.test_writer_delay_us = 5;
    o.test_writer_delay_for_s = 6;
    o.fsync = true;
    o.write_behind_mb = 3;
    auto c = writer_config(o, 2);
    EXPECT_EQ(c.files.path, o.write_path);
    EXPECT_EQ(c.files.rotate_bytes, 1500000u);
    EXPECT_EQ(c.files.rotate_seconds, 60u);
    EXPECT_EQ(c.files.max_files, 7u);
    EXPECT_EQ(c.files.post_rotate_cmd, "gzip");
    EXPECT_EQ(c.files.mode, 0600u);
    EXPECT_TRUE(c.files.direct);
    EXPECT_EQ(c.files.writer_index, 2u);
    EXPECT_EQ(c.files.writer_count, 3u);
    EXPECT_EQ(c.files.owner_uid, 12u);
    EXPECT_EQ(c.files.owner_gid, 34u);
    EXPECT_EQ(c.files.child_cpus, (std::vector<int>{0, 2}));
    EXPECT_EQ(c.format, storage::Format::kPcapng);
    EXPECT_EQ(c.test_delay_us, 5u);
    EXPECT_EQ(c.test_delay_for_s, 6u);
    EXPECT_TRUE(c.fsync_on_close);
    EXPECT_EQ(c.write_behind_bytes, 3ull << 20);
}

TEST(WriterConfig, PreallocateImpliesReuse) {
    Options o;
    o.preallocate = true;
    auto c = writer_config(o, 0);
    EXPECT_TRUE(c.files.preallocate);
    EXPECT_TRUE(c.files.reuse);
    o.preallocate = false;
    o.reuse_files = true;
    c = writer_config(o, 0);
    EXPECT_FALSE(c.files.preallocate);
    EXPECT_TRUE(c.files.reuse);
}

}  // namespace
