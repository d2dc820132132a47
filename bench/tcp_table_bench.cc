/* Cost of the live TCP diagnosis on a worker, with the flow table it
 * lives in (capd --tcp-flows): per packet, the flow table's verdict and the
 * TCP state update, done four ways in the same run:
 *
 *   .../Separate  two tables, as before the fold with a cutoff on:
 *                 FlowTable (parse_flow(), packet()) and then a
 *                 packet::TcpTracker fed as the old dataplane TcpFlowTable
 *                 fed it (ethernet_may_carry_tcp(), decode_packet(),
 *                 update());
 *   .../Folded    one table: FlowTable with tcp_conns, parse_flow(),
 *                 packet() and tcp_packet() at the slot packet() found;
 *   .../TrackerAlone  --tcp-flows alone before the fold: the tracker only;
 *   .../FoldedAlone   --tcp-flows alone now (FlowConfig::tcp_only): as the
 *                 worker runs it, packets without TCP skip the table after
 *                 ethernet_may_carry_tcp().
 *
 *   ./build/bench/tcp_table_bench [--pcap FILE] [benchmark flags]
 *
 *   Zeros        64-byte all-zero frames (what a null: source delivers): no flow;
 *   Udp          IPv4 UDP frames of 64 flows: no TCP;
 *   TcpHits      SYNs of 4096 flows, 65536 TCP records: lookup hits, update;
 *   TcpEvict     SYNs of 8192 distinct flows into 1024 TCP records: every
 *                packet evicts the oldest connection and creates one (the
 *                flood worst case);
 *   Pcap         the packets of --pcap FILE (default tests/data/demo/
 *                web-mix.pcap), 65536 TCP records;
 *   Snapshot65536  one snapshot of 65536 connections on the worker's side
 *                (Folded only): the copy (the worker's loop stalls this
 *                long) and giving its pages back.
 * Flow table of 262144 slots (capd's default), bursts of 32 as the worker
 * runs them (parse and prefetch, verdicts, then the TCP part), every packet
 * kept. Counter: items_per_second (packets); per-packet time = 1 / that.
 * No EAL: the tables map their own memory.
 */
#include <benchmark/benchmark.h>
#include <pcap/pcap.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/flow_table.hh"
#include "packet/decode.hh"
#include "packet/headers.hh"
#include "packet/tcp_tracker.hh"

using namespace linecap::dataplane;
namespace packet = linecap::packet;

namespace {

constexpr uint16_t kBurst = 32;

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

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

/* Bursts of frames, padded to whole bursts by repeating from the start. */
std::vector<const std::vector<uint8_t>*> bursts_of(const std::vector<std::vector<uint8_t>>& v) {
    std::vector<const std::vector<uint8_t>*> out;
    const size_t n = (v.size() + kBurst - 1) / kBurst * kBurst;
    for (size_t i = 0; i < n; i++) out.push_back(&v[i % v.size()]);
    return out;
}

void run(benchmark::State& state, const std::vector<std::vector<uint8_t>>& frames, uint32_t conns,
         int how) {
    const bool folded = how == 1 || how == 3, alone = how >= 2;
    FlowConfig fc;
    fc.tcp_conns = folded ? conns : 0;
    fc.tcp_only = how == 3;
    auto table = FlowTable::create(fc);
    if (!table) {
        state.SkipWithError(table.error().c_str());
        return;
    }
    FlowTable& ft = **table;
    auto tracker = packet::TcpTracker::create(conns);
    if (!tracker) {
        state.SkipWithError(tracker.error().c_str());
        return;
    }
    const auto fr = bursts_of(frames);
    const size_t bursts = fr.size() / kBurst;
    size_t b = 0;
    uint64_t ts = 1'700'000'000'000'000'000ull, frame_no = 0;
    for (auto _ : state) {
        const std::vector<uint8_t>* const* pk = fr.data() + b * kBurst;
        FlowPacket fl[kBurst];
        uint32_t slot[kBurst];
        uint8_t keep[kBurst];
        ts += 1000;
        std::memset(keep, 1, sizeof keep);
        for (uint16_t i = 0; i < kBurst && !(alone && !folded); i++) {
            if (alone && !packet::ethernet_may_carry_tcp(pk[i]->data(), uint32_t(pk[i]->size()))) {
                fl[i].tcp = 0;
                continue;
            }
            parse_flow(1, pk[i]->data(), uint32_t(pk[i]->size()), fl[i]);
            ft.prefetch(fl[i]);
        }
        for (uint16_t i = 0; i < kBurst && !(alone && !folded); i++) {
            if (alone && !fl[i].tcp) continue;
            const auto& f = *pk[i];
            keep[i] = ft.packet(fl[i], f.data(), uint32_t(f.size()), uint32_t(f.size()), ts) ==
                      FlowTable::kKeep;
            slot[i] = ft.last_slot();
        }
        if (folded) {
            ft.tcp_offered(kBurst);
            for (uint16_t i = 0; i < kBurst; i++)
                if (keep[i] && fl[i].tcp)
                    ft.tcp_packet(slot[i], fl[i], pk[i]->data(), uint32_t(pk[i]->size()), ts,
                                  packet::FrameRef{0, uint32_t(frame_no + i + 1)});
        } else {
            for (uint16_t i = 0; i < kBurst; i++) {
                if (!keep[i]) continue;
                const auto& f = *pk[i];
                if (!packet::ethernet_may_carry_tcp(f.data(), uint32_t(f.size()))) continue;
                packet::DecodedPacket d;
                if (packet::decode_packet(1, f.data(), uint32_t(f.size()), d) !=
                    packet::DecodeStatus::kOk)
                    continue;
                tracker->update(d, ts, packet::FrameRef{0, uint32_t(frame_no + i + 1)});
            }
        }
        frame_no += kBurst;
        if (++b == bursts) b = 0;
    }
    state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
}

/* The worker's side of one `capctl diagnose`: copying the records (the
 * burst loop stalls this long) and giving the copy's pages back. */
void snapshot(benchmark::State& state, uint32_t conns,
              const std::vector<std::vector<uint8_t>>& frames) {
    FlowConfig fc;
    fc.tcp_conns = conns;
    auto table = FlowTable::create(fc);
    if (!table) {
        state.SkipWithError(table.error().c_str());
        return;
    }
    FlowTable& ft = **table;
    uint32_t n = 0;
    for (const auto& f : frames) {
        FlowPacket p;
        parse_flow(1, f.data(), uint32_t(f.size()), p);
        if (ft.packet(p, f.data(), uint32_t(f.size()), uint32_t(f.size()), 1) == FlowTable::kKeep &&
            p.tcp)
            ft.tcp_packet(ft.last_slot(), p, f.data(), uint32_t(f.size()), 1,
                          packet::FrameRef{0, ++n});
    }
    size_t copied = 0;
    for (auto _ : state) {
        ft.tcp_request();
        ft.serve();
        if (!ft.tcp_ready(false)) state.SkipWithError("copy not ready");
        copied = ft.tcp_view(0).conns.size();
        ft.tcp_release();
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
    std::printf("CPU: %s, %ld online CPUs\n", cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
    benchmark::AddCustomContext("cpu_model", cpu_model());

    const auto zeros = std::vector<std::vector<uint8_t>>(64, std::vector<uint8_t>(64, 0));
    const auto udp = flows(64, false);
    const auto hits = flows(4096, true);
    const auto evict = flows(8192, true);
    const auto pcap = read_pcap(g_pcap);
    const char* const names[] = {"/Separate", "/Folded", "/TrackerAlone", "/FoldedAlone"};
    for (int folded = 0; folded < 4; folded++) {
        const std::string how = names[folded];
        benchmark::RegisterBenchmark(("Zeros" + how).c_str(), [&, folded](benchmark::State& s) {
            run(s, zeros, 65536, folded);
        });
        benchmark::RegisterBenchmark(("Udp" + how).c_str(), [&, folded](benchmark::State& s) {
            run(s, udp, 65536, folded);
        });
        benchmark::RegisterBenchmark(("TcpHits" + how).c_str(), [&, folded](benchmark::State& s) {
            run(s, hits, 65536, folded);
        });
        benchmark::RegisterBenchmark(("TcpEvict" + how).c_str(), [&, folded](benchmark::State& s) {
            run(s, evict, 1024, folded);
        });
        if (!pcap.empty())
            benchmark::RegisterBenchmark(("Pcap" + how).c_str(), [&, folded](benchmark::State& s) {
                run(s, pcap, 65536, folded);
            });
    }
    if (pcap.empty())
        std::fprintf(stderr, "tcp_table_bench: %s: no packets read, Pcap skipped\n",
                     g_pcap.c_str());
    const auto full = flows(65536, true);
    benchmark::RegisterBenchmark("Snapshot65536/Folded", [&](benchmark::State& s) {
        snapshot(s, 65536, full);
    })->Unit(benchmark::kMillisecond);
    int bargc = static_cast<int>(rest.size());
    benchmark::Initialize(&bargc, rest.data());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
