#include "query/beneath.hh"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

using linecap::query::open_beneath;
using linecap::query::open_beneath_walk;

namespace {

/* DIR: a, d/f, l -> a, dl -> d, out -> OUTSIDE/secret, outdir -> OUTSIDE,
 * fifo; OUTSIDE/secret beside it. */
class Beneath : public ::testing::TestWithParam<bool> {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/linecap-beneath-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        top_ = tmpl;
        dir_ = top_ + "/served";
        const std::string out = top_ + "/outside";
        ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
        ASSERT_EQ(::mkdir(out.c_str(), 0700), 0);
        ASSERT_EQ(::mkdir((dir_ + "/d").c_str(), 0700), 0);
        for (const std::string& f : {dir_ + "/a", dir_ + "/d/f", out + "/secret"}) {
            const int fd = ::open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
            ASSERT_GE(fd, 0);
            ::close(fd);
        }
        ASSERT_EQ(::symlink("a", (dir_ + "/l").c_str()), 0);
        ASSERT_EQ(::symlink("d", (dir_ + "/dl").c_str()), 0);
        ASSERT_EQ(::symlink((out + "/secret").c_str(), (dir_ + "/out").c_str()), 0);
        ASSERT_EQ(::symlink(out.c_str(), (dir_ + "/outdir").c_str()), 0);
        ASSERT_EQ(::mkfifo((dir_ + "/fifo").c_str(), 0600), 0);
        dfd_ = ::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        ASSERT_GE(dfd_, 0);
    }
    void TearDown() override {
        if (dfd_ >= 0) ::close(dfd_);
        const std::string cmd = "rm -rf '" + top_ + "'";
        (void)std::system(cmd.c_str());
    }
    /* The errno of a failed open, 0 when it opened. */
    int open_errno(const std::string& rel, int flags) {
        errno = 0;
        const int fd =
            GetParam() ? open_beneath_walk(dfd_, rel, flags) : open_beneath(dfd_, rel, flags);
        if (fd < 0) return errno;
        ::close(fd);
        return 0;
    }

    std::string top_, dir_;
    int dfd_ = -1;
};

TEST_P(Beneath, OpensWhatLiesBeneath) {
    EXPECT_EQ(open_errno("a", O_RDONLY), 0);
    EXPECT_EQ(open_errno("d/f", O_RDONLY), 0);
    EXPECT_EQ(open_errno("d//f", O_RDONLY), 0);
    EXPECT_EQ(open_errno("d", O_PATH | O_DIRECTORY), 0);
    EXPECT_EQ(open_errno("fifo", O_RDONLY | O_NONBLOCK), 0);  // opened, not blocked
    EXPECT_EQ(open_errno("missing", O_RDONLY), ENOENT);
    EXPECT_EQ(open_errno("d/missing", O_RDONLY), ENOENT);
}

TEST_P(Beneath, NoLinkFollowedAnywhere) {
    EXPECT_EQ(open_errno("l", O_RDONLY), ELOOP);
    EXPECT_EQ(open_errno("out", O_RDONLY), ELOOP);
    EXPECT_EQ(open_errno("dl/f", O_RDONLY), ELOOP);
    EXPECT_EQ(open_errno("outdir/secret", O_RDONLY), ELOOP);
    EXPECT_EQ(open_errno("dl", O_PATH | O_DIRECTORY), ELOOP);
    EXPECT_EQ(open_errno("outdir", O_PATH | O_DIRECTORY), ELOOP);
}

TEST_P(Beneath, NeverLeavesTheDirectory) {
    EXPECT_EQ(open_errno("../outside/secret", O_RDONLY), EXDEV);
    EXPECT_EQ(open_errno("d/../../outside/secret", O_RDONLY), EXDEV);
    EXPECT_EQ(open_errno((top_ + "/outside/secret").c_str(), O_RDONLY), EXDEV);
}

INSTANTIATE_TEST_SUITE_P(OpenAt2AndWalk, Beneath, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "walk" : "openat2"; });

}  // namespace
