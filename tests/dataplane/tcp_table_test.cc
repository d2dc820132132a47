/* TcpFlowTable::create(): what it reports when memory runs out. No EAL:
 * the table maps its own memory. */
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "dataplane/tcp_table.hh"

namespace {

using linecap::dataplane::TcpFlowTable;

/* Address space capped at what the process maps now plus `extra` bytes,
 * for as long as it lives. */
class AddressSpaceCap {
public:
    explicit AddressSpaceCap(rlim_t extra) {
        getrlimit(RLIMIT_AS, &saved_);
        FILE* f = std::fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (f == nullptr || std::fscanf(f, "%lu", &pages) != 1) std::abort();
        std::fclose(f);
        rlimit cap = saved_;
        cap.rlim_cur = pages * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + extra;
        if (setrlimit(RLIMIT_AS, &cap) != 0) std::abort();
    }
    ~AddressSpaceCap() { setrlimit(RLIMIT_AS, &saved_); }

private:
    rlimit saved_{};
};

TEST(TcpFlowTable, Creates) {
    auto t = TcpFlowTable::create(0, 1024);
    ASSERT_TRUE(t) << t.error();
    EXPECT_EQ((*t)->capacity(), 1024u);
    EXPECT_FALSE(TcpFlowTable::create(0, 0));
}

/* 2^20 connections: 744 MiB of snapshot area, which fits, then 744 MiB of
 * tracker slots, which do not. The tracker's error comes back as a Result
 * naming what could not be mapped. */
TEST(TcpFlowTable, TrackerThatCannotBeMappedIsAnError) {
    AddressSpaceCap cap(rlim_t{1} << 30);
    auto t = TcpFlowTable::create(3, 1u << 20);
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error(),
              "TCP flow table of worker 3: TCP tracker of 1048576 connections: cannot map 744 MiB "
              "for its slots");
}

}  // namespace
