/* The placement plan (dataplane/placement.hh): lcores, their CPUs, the main
 * lcore's CPUs, EAL's --lcores argument and the queue assignment, for CPUs
 * x workers x writers, --rx-only and wrap-around. Pure: no EAL needed. */
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dataplane/placement.hh"

using namespace linecap::dataplane;

namespace {

struct PlacementCase {
    const char* name;
    unsigned workers, writers;
    bool rx_only;
    std::vector<int> cpus;
    std::vector<unsigned> worker_lcores, writer_lcores;
    std::vector<int> lcore_cpu;  // lcore 0 first
    std::vector<int> main_cpus;
    bool oversubscribed, crowded;
    const char* lcores;
};

const PlacementCase kCases[] = {
    {"one_each_on_two_cpus",
     1,
     1,
     false,
     {0, 1},
     {1},
     {2},
     {1, 0, 1},
     {1},
     false,
     true,
     "--lcores=0@(1),1@0,2@1"},
    {"one_each_on_four_cpus",
     1,
     1,
     false,
     {0, 1, 2, 3},
     {1},
     {2},
     {1, 0, 1},
     {1, 2, 3},
     false,
     false,
     "--lcores=0@(1,2,3),1@0,2@1"},
    {"workers_take_every_cpu",
     2,
     1,
     false,
     {0, 1},
     {1, 2},
     {3},
     {0, 0, 1, 0},
     {0, 1},
     true,
     true,
     "--lcores=0@(0,1),1@0,2@1,3@0"},
    {"wraps_around_one_cpu",
     2,
     2,
     false,
     {5},
     {1, 2},
     {3, 4},
     {5, 5, 5, 5, 5},
     {5},
     true,
     true,
     "--lcores=0@(5),1@5,2@5,3@5,4@5"},
    {"rx_only_has_no_writers",
     2,
     3,
     true,
     {0, 1, 2},
     {1, 2},
     {},
     {2, 0, 1},
     {2},
     false,
     true,
     "--lcores=0@(2),1@0,2@1"},
    {"cpus_not_from_zero",
     2,
     1,
     false,
     {2, 3, 6, 7},
     {1, 2},
     {3},
     {6, 2, 3, 6},
     {6, 7},
     false,
     true,
     "--lcores=0@(6,7),1@2,2@3,3@6"},
    {"no_cpus_is_cpu_zero",
     1,
     1,
     false,
     {},
     {1},
     {2},
     {0, 0, 0},
     {0},
     true,
     true,
     "--lcores=0@(0),1@0,2@0"},
};

class PlacementTable : public ::testing::TestWithParam<PlacementCase> {};

TEST_P(PlacementTable, Plan) {
    const PlacementCase& c = GetParam();
    Placement p = plan_placement(c.workers, c.writers, c.rx_only, c.cpus);
    EXPECT_EQ(p.worker_lcores, c.worker_lcores);
    EXPECT_EQ(p.writer_lcores, c.writer_lcores);
    EXPECT_EQ(p.lcore_cpu, c.lcore_cpu);
    EXPECT_EQ(p.main_cpus, c.main_cpus);
    EXPECT_EQ(p.oversubscribed, c.oversubscribed);
    EXPECT_EQ(p.crowded, c.crowded);
    EXPECT_EQ(p.lcores_arg(), c.lcores);
}

INSTANTIATE_TEST_SUITE_P(Cases, PlacementTable, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Placement, FromOptions) {
    Options o;
    o.workers = 3;
    o.writers = 2;
    Placement p = plan_placement(o, {0, 1, 2, 3, 4, 5});
    EXPECT_EQ(p.worker_lcores, (std::vector<unsigned>{1, 2, 3}));
    EXPECT_EQ(p.writer_lcores, (std::vector<unsigned>{4, 5}));
    EXPECT_EQ(p.main_cpus, (std::vector<int>{3, 4, 5}));
    EXPECT_FALSE(p.oversubscribed);
    EXPECT_TRUE(p.crowded);  // 5 busy lcores, 3 CPUs for the main lcore
}

SourceSpec spec(SourceSpec::Kind k) {
    SourceSpec s;
    s.kind = k;
    return s;
}

TEST(Placement, QueuesPerPort) {
    Options o;
    o.workers = 4;
    o.sources = {spec(SourceSpec::Kind::kNull)};
    EXPECT_EQ(queues_per_port(o), 4);  // one port: a queue per worker
    o.sources.push_back(spec(SourceSpec::Kind::kPcapFile));
    EXPECT_EQ(queues_per_port(o), 4);  // files are not ports
    o.sources.push_back(spec(SourceSpec::Kind::kAfPacket));
    EXPECT_EQ(queues_per_port(o), 2);  // two ports share the workers
    o.workers = 1;
    EXPECT_EQ(queues_per_port(o), 1);  // never 0
}

TEST(Placement, QueuesRoundRobinOverWorkers) {
    auto a = assign_queues({2, 1, 3}, 4);
    ASSERT_EQ(a.size(), 4u);
    auto slots = [](const std::vector<QueueSlot>& v) {
        std::vector<std::pair<uint32_t, uint16_t>> r;
        for (auto s : v) r.emplace_back(s.source, s.queue);
        return r;
    };
    using V = std::vector<std::pair<uint32_t, uint16_t>>;
    EXPECT_EQ(slots(a[0]), (V{{0, 0}, {2, 1}}));
    EXPECT_EQ(slots(a[1]), (V{{0, 1}, {2, 2}}));
    EXPECT_EQ(slots(a[2]), (V{{1, 0}}));
    EXPECT_EQ(slots(a[3]), (V{{2, 0}}));
    // More workers than queues: the last ones poll nothing.
    auto b = assign_queues({1}, 3);
    EXPECT_EQ(b[0].size(), 1u);
    EXPECT_TRUE(b[1].empty() && b[2].empty());
    EXPECT_TRUE(assign_queues({1}, 0).empty());
}

TEST(Placement, WriterOfWorker) {
    EXPECT_EQ(writer_of_worker(0, 2), 0u);
    EXPECT_EQ(writer_of_worker(1, 2), 1u);
    EXPECT_EQ(writer_of_worker(4, 3), 1u);
}

}  // namespace

namespace {

using K = SourceSpec::Kind;

struct IdleCase {
    const char* name;
    std::vector<K> kinds;
    bool busy_poll, crowded;
    uint32_t ring_frames;
    unsigned expect_us;
};

const IdleCase kIdleCases[] = {
    {"null_spins", {K::kNull}, false, false, 4096, 0},
    {"crowded_null_sleeps", {K::kNull}, false, true, 4096, 20},
    {"pci_spins", {K::kPci, K::kNull}, false, false, 4096, 0},
    {"af_xdp_sleeps", {K::kAfXdp}, false, false, 4096, 20},
    {"kernel_mix_sleeps", {K::kAfXdp, K::kAfPacket}, false, false, 4096, 20},
    {"af_packet_a_quarter_of_its_ring", {K::kAfPacket}, false, false, 1000, 512},
    {"af_packet_at_most_1ms", {K::kAfPacket}, false, false, 4096, 1000},
    {"af_packet_at_least_20us", {K::kAfPacket, K::kAfPacket}, false, false, 8, 20},
    {"kernel_and_file_spins", {K::kAfPacket, K::kPcapFile}, false, false, 4096, 0},
    {"no_queues_spins", {}, false, false, 4096, 0},
    {"no_queues_crowded_sleeps", {}, false, true, 4096, 20},
    {"busy_poll_always_spins", {K::kAfPacket}, true, true, 4096, 0},
};

class IdleTable : public ::testing::TestWithParam<IdleCase> {};

TEST_P(IdleTable, SleepAfterEmptyPolls) {
    const IdleCase& c = GetParam();
    EXPECT_EQ(idle_sleep_us(c.kinds, c.busy_poll, c.crowded, c.ring_frames), c.expect_us);
}

INSTANTIATE_TEST_SUITE_P(Cases, IdleTable, ::testing::ValuesIn(kIdleCases),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
