/* Cost of the live TCP flow table on a worker: TcpFlowTable::feed_burst()
 * per packet, for the traffic mixes that bound it.
 *
 *   ./build/bench/tcp_table_bench [--pcap FILE] [benchmark flags]
 *
 *   Zeros        64-byte all-zero frames (what a null: source delivers): the
 *                non-TCP bail-out, no decoding;
 *   Udp          IPv4 UDP frames: bail-out after the protocol byte;
 *   TcpHits      SYNs of 4096 flows into a 65536-connection table: decode,
 *                hash, lookup hit, update;
 *   TcpEvict     SYNs of 8192 distinct flows into a 1024-connection table:
 *                every packet misses, evicts the oldest and creates a flow
 *                (the flood worst case);
 *   Pcap         the packets of --pcap FILE (default tests/data/demo/
 *                web-mix.pcap) into a 65536-connection table;
 *   Snapshot65536  one snapshot of a full 65536-connection table on the
 *                worker's side: the copy (the worker's loop stalls this
 *                long) and giving its pages back.
 * Bursts of 32, every packet kept, no timestamps (burst time given).
 * Counter: items_per_second (packets fed); per-packet time = 1 / that.
 *
 * The EAL runs with --no-huge --no-pci --no-shconf: no root, no hugepages.
 */
#include <benchmark/benchmark.h>
#include <pcap/pcap.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_mbuf.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/tcp_table.hh"
#include "dataplane/worker.hh"

using namespace linecap::dataplane;

namespace {

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

/* A source that is never polled: feed_burst() only asks its link type. */
class BenchSource final : public Source {
public:
    BenchSource() { name_ = "bench"; }
    uint16_t rx_burst(uint16_t, rte_mbuf**, uint16_t) override { return 0; }
    bool finished(uint16_t) const override { return true; }
    SourceCounters counters() const override { return {}; }
};

rte_mempool* g_pool = nullptr;
MbufFields g_fields;
std::string g_pcap = "tests/data/demo/web-mix.pcap";

uint16_t csum(const uint8_t* p, size_t n) {
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2) s += uint32_t(p[i] << 8 | p[i + 1]);
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return static_cast<uint16_t>(~s);
}

/* Ethernet + IPv4 + (TCP SYN | UDP) from 198.18.x.y to 198.19.0.1. */
std::vector<uint8_t> frame(uint32_t flow, bool tcp) {
    std::vector<uint8_t> f(tcp ? 54 : 60, 0);
    f[12] = 0x08;
    uint8_t* ip = f.data() + 14;
    ip[0] = 0x45;
    const uint16_t tot = static_cast<uint16_t>(f.size() - 14);
    ip[2] = uint8_t(tot >> 8);
    ip[3] = uint8_t(tot);
    ip[8] = 64;
    ip[9] = tcp ? 6 : 17;
    ip[12] = 198, ip[13] = 18, ip[14] = uint8_t(flow >> 8), ip[15] = uint8_t(flow);
    ip[16] = 198, ip[17] = 19, ip[18] = 0, ip[19] = 1;
    const uint16_t c = csum(ip, 20);
    ip[10] = uint8_t(c >> 8), ip[11] = uint8_t(c);
    uint8_t* l4 = ip + 20;
    l4[0] = 0x9c, l4[1] = 0x40;  // 40000
    l4[2] = 0x01, l4[3] = 0xbb;  // 443
    if (tcp) {
        l4[4] = uint8_t(flow >> 24), l4[5] = uint8_t(flow >> 16), l4[6] = uint8_t(flow >> 8);
        l4[12] = 5 << 4;
        l4[13] = 0x02;
        l4[14] = 0xfa, l4[15] = 0xf0;
    } else {
        l4[5] = 26;
    }
    return f;
}

/* mbufs holding the frames, in bursts of 32 (the last burst padded by
 * repeating from the start). */
struct Frames {
    std::vector<rte_mbuf*> mbufs;
    explicit Frames(const std::vector<std::vector<uint8_t>>& frames) {
        size_t n = (frames.size() + kBurstSize - 1) / kBurstSize * kBurstSize;
        for (size_t i = 0; i < n; i++) {
            const auto& f = frames[i % frames.size()];
            rte_mbuf* m = rte_pktmbuf_alloc(g_pool);
            if (m == nullptr) {
                std::fprintf(stderr, "tcp_table_bench: mbuf pool too small\n");
                std::exit(1);
            }
            std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
            mbufs.push_back(m);
        }
    }
    ~Frames() { rte_pktmbuf_free_bulk(mbufs.data(), static_cast<unsigned>(mbufs.size())); }
};

void run(benchmark::State& state, const std::vector<std::vector<uint8_t>>& frames,
         uint32_t capacity) {
    Frames fr(frames);
    auto table = TcpFlowTable::create(0, capacity);
    if (!table) {
        state.SkipWithError(table.error().c_str());
        return;
    }
    BenchSource src;
    QueueStats qs;
    QueueRef q{&src, 0, 0, &qs};
    WorkerContext ctx;
    ctx.fields = g_fields;
    uint8_t keep[kBurstSize];
    std::memset(keep, 1, sizeof keep);
    const size_t bursts = fr.mbufs.size() / kBurstSize;
    size_t b = 0;
    uint64_t ts = 1'700'000'000'000'000'000ull;
    for (auto _ : state) {
        rte_mbuf** pkts = fr.mbufs.data() + b * kBurstSize;
        qs.rx_packets.store(qs.rx_packets.load(std::memory_order_relaxed) + kBurstSize,
                            std::memory_order_relaxed);
        (*table)->feed_burst(ctx, q, pkts, keep, kBurstSize, ts += 1000);
        if (++b == bursts) b = 0;
    }
    state.SetItemsProcessed(int64_t(state.iterations()) * kBurstSize);
}

/* The worker's side of one `capctl diagnose`: copying a full table (the
 * burst loop stalls this long) and giving the copy's pages back. */
void snapshot(benchmark::State& state, uint32_t capacity,
              const std::vector<std::vector<uint8_t>>& frames) {
    Frames fr(frames);
    auto table = TcpFlowTable::create(0, capacity);
    if (!table) {
        state.SkipWithError(table.error().c_str());
        return;
    }
    BenchSource src;
    QueueStats qs;
    QueueRef q{&src, 0, 0, &qs};
    WorkerContext ctx;
    ctx.fields = g_fields;
    uint8_t keep[kBurstSize];
    std::memset(keep, 1, sizeof keep);
    for (size_t b = 0; b < fr.mbufs.size() / kBurstSize; b++) {
        qs.rx_packets.store(qs.rx_packets.load() + kBurstSize);
        (*table)->feed_burst(ctx, q, fr.mbufs.data() + b * kBurstSize, keep, kBurstSize, 1);
    }
    size_t copied = 0;
    for (auto _ : state) {
        (*table)->request();
        (*table)->serve();
        if (!(*table)->ready(false)) state.SkipWithError("copy not ready");
        copied = (*table)->view().conns.size();
        (*table)->release();
    }
    state.counters["connections"] = double(copied);
}

std::vector<std::vector<uint8_t>> flows(uint32_t n, bool tcp) {
    std::vector<std::vector<uint8_t>> v;
    for (uint32_t i = 0; i < n; i++) v.push_back(frame(i, tcp));
    return v;
}

std::vector<std::vector<uint8_t>> read_pcap(const std::string& path) {
    std::vector<std::vector<uint8_t>> v;
    char err[PCAP_ERRBUF_SIZE];
    pcap_t* p = pcap_open_offline(path.c_str(), err);
    if (p == nullptr) return v;
    pcap_pkthdr* h;
    const u_char* d;
    while (pcap_next_ex(p, &h, &d) == 1) {
        if (h->caplen <= 2048) v.emplace_back(d, d + h->caplen);
    }
    pcap_close(p);
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<char*> rest;
    for (int i = 0; i < argc; i++) {
        if (std::strcmp(argv[i], "--pcap") == 0 && i + 1 < argc) {
            g_pcap = argv[++i];
        } else {
            rest.push_back(argv[i]);
        }
    }
    std::string prefix = "--file-prefix=tcptablebench" + std::to_string(getpid());
    std::vector<std::string> eal_args = {"tcp_table_bench",
                                         "--no-huge",
                                         "--no-pci",
                                         "-m",
                                         "512",
                                         "--no-shconf",
                                         prefix,
                                         "--no-telemetry",
                                         "--log-level=lib.*:error",
                                         "-l",
                                         "0"};
    std::vector<char*> eal_argv;
    for (auto& a : eal_args) eal_argv.push_back(a.data());
    if (rte_eal_init(int(eal_argv.size()), eal_argv.data()) < 0) {
        std::fprintf(stderr, "tcp_table_bench: EAL init failed: %s\n", rte_strerror(rte_errno));
        return 1;
    }
    auto fields = MbufFields::register_fields();
    if (!fields) {
        std::fprintf(stderr, "tcp_table_bench: %s\n", fields.error().c_str());
        return 1;
    }
    g_fields = *fields;
    g_pool = rte_pktmbuf_pool_create("bench", 81920, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    if (g_pool == nullptr) {
        std::fprintf(stderr, "tcp_table_bench: mbuf pool: %s\n", rte_strerror(rte_errno));
        return 1;
    }
    std::printf("CPU: %s, %ld online CPUs\n", cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
    benchmark::AddCustomContext("cpu_model", cpu_model());

    const auto zeros = std::vector<std::vector<uint8_t>>(64, std::vector<uint8_t>(64, 0));
    const auto udp = flows(64, false);
    const auto hits = flows(4096, true);
    const auto evict = flows(8192, true);
    const auto pcap = read_pcap(g_pcap);
    benchmark::RegisterBenchmark("Zeros", [&](benchmark::State& s) { run(s, zeros, 65536); });
    benchmark::RegisterBenchmark("Udp", [&](benchmark::State& s) { run(s, udp, 65536); });
    benchmark::RegisterBenchmark("TcpHits", [&](benchmark::State& s) { run(s, hits, 65536); });
    benchmark::RegisterBenchmark("TcpEvict", [&](benchmark::State& s) { run(s, evict, 1024); });
    if (!pcap.empty()) {
        benchmark::RegisterBenchmark("Pcap", [&](benchmark::State& s) { run(s, pcap, 65536); });
    } else {
        std::fprintf(stderr, "tcp_table_bench: %s: no packets read, Pcap skipped\n",
                     g_pcap.c_str());
    }
    const auto full = flows(65536, true);
    benchmark::RegisterBenchmark("Snapshot65536", [&](benchmark::State& s) {
        snapshot(s, 65536, full);
    })->Unit(benchmark::kMillisecond);
    int bargc = static_cast<int>(rest.size());
    benchmark::Initialize(&bargc, rest.data());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    rte_mempool_free(g_pool);
    rte_eal_cleanup();
    return 0;
}
