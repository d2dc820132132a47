/* Cost of handing pointers through an rte_ring, the primitive behind capd's
 * worker-to-writer hand-off (one SPSC ring per worker).
 *
 *   ./build/bench/ring_bench                          # bursts 1,4,8,16,32,64,128
 *   ./build/bench/ring_bench --bursts=1,32,256 --benchmark_filter=Spsc
 *
 * Burst sizes come from --bursts at run time (never compile-time constants,
 * as DPDK's test_ring_perf.c), and each is run for:
 *   - Spsc/SameCore:  enqueue a burst then dequeue it on one thread (the
 *     per-call cost with the ring's cache lines hot);
 *   - Spsc/TwoThreads: a producer and a consumer thread (cache lines bounce
 *     between cores; on a machine with fewer free CPUs than threads this
 *     measures the scheduler as much as the ring);
 *   - Mpmc/SameCore:  the same with a default (multi-producer/consumer,
 *     compare-and-swap) ring, the baseline.
 * Counters: items_per_second (pointers moved), per_ptr (seconds per pointer).
 *
 * The EAL is started with --no-huge --no-pci --no-shconf (--in-memory would
 * refuse --no-huge), so no root and no hugepages are needed.
 */
#include <benchmark/benchmark.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ring.h>

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

constexpr unsigned kRingSize = 4096;

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

/* A ring plus the objects it moves. Owned by one benchmark run. */
struct RingFixture {
    rte_ring* ring = nullptr;
    std::vector<void*> objs;
    RingFixture(const char* name, unsigned flags, unsigned burst) {
        ring = rte_ring_create(name, kRingSize, SOCKET_ID_ANY, flags);
        objs.resize(burst);
        for (unsigned i = 0; i < burst; i++)
            objs[i] = reinterpret_cast<void*>(uintptr_t(i + 1) * 64);
    }
    ~RingFixture() { rte_ring_free(ring); }
    RingFixture(const RingFixture&) = delete;
    RingFixture& operator=(const RingFixture&) = delete;
};

void set_rates(benchmark::State& state, unsigned burst) {
    int64_t n = int64_t(state.iterations()) * burst;
    state.SetItemsProcessed(n);
    state.counters["per_ptr"] =
        benchmark::Counter(double(n), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void same_core(benchmark::State& state, unsigned flags, unsigned burst, const char* name) {
    RingFixture f(name, flags, burst);
    if (!f.ring) {
        state.SkipWithError(rte_strerror(rte_errno));
        return;
    }
    std::vector<void*> out(burst);
    void* const* in = f.objs.data();
    for (auto _ : state) {
        unsigned e = rte_ring_enqueue_burst(f.ring, in, burst, nullptr);
        unsigned d = rte_ring_dequeue_burst(f.ring, out.data(), burst, nullptr);
        benchmark::DoNotOptimize(e);
        benchmark::DoNotOptimize(d);
        benchmark::ClobberMemory();
    }
    set_rates(state, burst);
}

/* CPUs this process may use, read before the EAL pins the main thread. */
std::vector<int> g_cpus;

/* Puts the calling thread on the i-th allowed CPU (wrapping). */
void pin_to(size_t i) {
    if (g_cpus.empty()) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(g_cpus[i % g_cpus.size()], &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* Shared by the two threads of one TwoThreads run. Google Benchmark joins both
 * threads after each run, so a run never sees the previous run's state. */
struct Shared {
    RingFixture* fixture = nullptr;
    std::atomic<int> ready{0};
    std::atomic<int> done{0};
};
Shared g_shared;

void two_threads(benchmark::State& state, unsigned burst) {
    const bool producer = state.thread_index() == 0;
    // Producer and consumer on different CPUs where there are two.
    pin_to(size_t(state.thread_index()));
    if (producer) {
        g_shared.fixture = new RingFixture("ring_bench_2t", RING_F_SP_ENQ | RING_F_SC_DEQ, burst);
        g_shared.ready.store(1, std::memory_order_release);
    } else {
        while (g_shared.ready.load(std::memory_order_acquire) == 0) {}
    }
    RingFixture& f = *g_shared.fixture;
    if (!f.ring) {
        state.SkipWithError(rte_strerror(rte_errno));
    }
    std::vector<void*> buf(burst);
    uint64_t polls = 0;
    // Both threads run the same number of iterations of the same burst, so
    // the producer never waits for space the consumer will not free.
    for (auto _ : state) {
        unsigned left = burst;
        if (producer) {
            void* const* in = f.objs.data();
            while (left) {
                unsigned e = rte_ring_sp_enqueue_burst(f.ring, in + (burst - left), left, nullptr);
                left -= e;
                polls += e == 0;
            }
        } else {
            while (left) {
                unsigned d = rte_ring_sc_dequeue_burst(f.ring, buf.data(), left, nullptr);
                left -= d;
                polls += d == 0;
            }
        }
    }
    set_rates(state, burst);
    state.counters["full_or_empty_polls"] = double(polls);
    g_shared.done.fetch_add(1, std::memory_order_acq_rel);
    if (producer) {
        while (g_shared.done.load(std::memory_order_acquire) != 2) {}
        delete g_shared.fixture;
        g_shared.fixture = nullptr;
        g_shared.ready.store(0);
        g_shared.done.store(0);
    }
}

std::vector<unsigned> parse_bursts(int& argc, char** argv) {
    std::vector<unsigned> bursts = {1, 4, 8, 16, 32, 64, 128};
    const std::string key = "--bursts=";
    int w = 1;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a.rfind(key, 0) == 0) {
            bursts.clear();
            std::string list = a.substr(key.size());
            size_t pos = 0;
            while (pos <= list.size()) {
                size_t comma = list.find(',', pos);
                std::string item =
                    list.substr(pos, comma == std::string::npos ? comma : comma - pos);
                unsigned long v = std::strtoul(item.c_str(), nullptr, 10);
                if (v == 0 || v >= kRingSize) {
                    std::fprintf(stderr, "ring_bench: burst sizes must be 1..%u\n", kRingSize - 1);
                    std::exit(2);
                }
                bursts.push_back(unsigned(v));
                if (comma == std::string::npos) break;
                pos = comma + 1;
            }
            continue;
        }
        argv[w++] = argv[i];
    }
    argc = w;
    return bursts;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<unsigned> bursts = parse_bursts(argc, argv);

    // rte_eal_init pins the main thread to lcore 0, and the benchmark's
    // threads would inherit that; keep the original set to restore it.
    cpu_set_t all;
    CPU_ZERO(&all);
    if (sched_getaffinity(0, sizeof(all), &all) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &all)) g_cpus.push_back(c);

    std::string prefix = "--file-prefix=ringbench" + std::to_string(getpid());
    std::vector<std::string> eal_args = {"ring_bench",
                                         "--no-huge",
                                         "--no-pci",
                                         "-m",
                                         "256",
                                         "--no-shconf",
                                         prefix,
                                         "--no-telemetry",
                                         "--log-level=lib.*:error",
                                         "-l",
                                         "0"};
    std::vector<char*> eal_argv;
    for (auto& a : eal_args) eal_argv.push_back(a.data());
    if (rte_eal_init(int(eal_argv.size()), eal_argv.data()) < 0) {
        std::fprintf(stderr, "ring_bench: EAL init failed: %s\n", rte_strerror(rte_errno));
        return 1;
    }
    sched_setaffinity(0, sizeof(all), &all);
    std::printf("CPU: %s, %ld online CPUs, %zu allowed%s\n", cpu_model().c_str(),
                sysconf(_SC_NPROCESSORS_ONLN), g_cpus.size(),
                g_cpus.size() < 2 ? " (TwoThreads share one CPU: a scheduler measurement)" : "");
    benchmark::AddCustomContext("cpu_model", cpu_model());

    for (unsigned b : bursts) {
        benchmark::RegisterBenchmark(
            ("Spsc/SameCore/burst:" + std::to_string(b)).c_str(), [b](benchmark::State& s) {
                same_core(s, RING_F_SP_ENQ | RING_F_SC_DEQ, b, "ring_bench_spsc");
            });
        benchmark::RegisterBenchmark(
            ("Mpmc/SameCore/burst:" + std::to_string(b)).c_str(),
            [b](benchmark::State& s) { same_core(s, 0, b, "ring_bench_mpmc"); });
        benchmark::RegisterBenchmark(("Spsc/TwoThreads/burst:" + std::to_string(b)).c_str(),
                                     [b](benchmark::State& s) { two_threads(s, b); })
            ->Threads(2)
            ->UseRealTime();
    }

    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    rte_eal_cleanup();
    return 0;
}
