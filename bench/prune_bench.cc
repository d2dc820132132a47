/* Cost of capq's flow pruning (index/prune.hh FlowFilter::eval()) per flow
 * of the index, with libpcap's bpf_filter() on one packet of each flow as
 * the baseline (what a scan runs per packet).
 *
 *   ./build/bench/prune_bench
 *   ./build/bench/prune_bench --benchmark_filter='Eval/five_tuple'
 *
 * Rows, over 4096 different IPv4/IPv6 TCP/UDP flow keys (plain, tagged and
 * QinQ), visited in a shuffled order:
 *   Eval/five_tuple        "src host A and dst host B and tcp src port P and
 *                          dst port Q", one flow in 4096 matches (a query
 *                          for one flow: most keys fail on the first address);
 *   Eval/five_tuple_match  the same expression on keys that all match (the
 *                          longest path, every test decided);
 *   Eval/net_or_port       "net 198.18.0.0/16 and (port 53 or port 443)";
 *   Eval/tcp_syn           "tcp[13] & 2 != 0" (flags unknown: both ways, the
 *                          early exit once both verdicts are possible);
 *   Eval/ip6_protochain    "ip6 protochain 6" (the loop);
 *   BpfFilter/five_tuple   bpf_filter() on the flows' first packets;
 *   Construct/five_tuple   a FlowFilter for the 5-tuple, with its
 *   Construct/net_or_port  required_addresses() (once per query and link
 *                          type; per_flow is then per construction).
 * Counters: items_per_second (flows), per_flow (seconds per flow).
 */
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "filters/cbpf_to_ebpf.hh"
#include "index/flow_key.hh"
#include "index/prune.hh"

namespace {

using linecap::index::FlowFilter;
using linecap::index::FlowKey;

constexpr size_t kFlows = 4096;
constexpr const char* kFiveTuple =
    "src host 198.18.0.1 and dst host 198.18.3.7 and tcp src port 40000 and dst port 443";

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

void put16(std::vector<uint8_t>& f, uint32_t v) {
    f.push_back(static_cast<uint8_t>(v >> 8));
    f.push_back(static_cast<uint8_t>(v));
}

/* An Ethernet frame of flow i; all of them the 5-tuple above if `match`. */
std::vector<uint8_t> frame(uint32_t i, bool match) {
    std::vector<uint8_t> f(12, 0x02);
    const uint32_t tags = match ? 0 : i % 4 == 3 ? 2 : i % 4 == 2 ? 1 : 0;
    for (uint32_t t = 0; t < tags; t++) {
        put16(f, t == 0 && tags == 2 ? 0x88a8 : 0x8100);
        put16(f, 100 + i % 7 + t);
    }
    const bool v6 = !match && i % 5 == 4;
    const bool tcp = match || i % 3 != 0;
    put16(f, v6 ? 0x86dd : 0x0800);
    const size_t l3 = f.size();
    if (v6) {
        put16(f, 0x6000);
        put16(f, 0);
        put16(f, 0);
        f.push_back(tcp ? 6 : 17);
        f.push_back(64);
        for (int a = 0; a < 2; a++) {
            put16(f, 0x2001);
            put16(f, 0x0db8);
            for (int w = 0; w < 5; w++) put16(f, 0);
            put16(f, a == 0 ? i : i ^ 0x5a5a);
        }
    } else {
        const uint32_t src = match ? 0xc6120001 : 0xc6120000 | (i * 2654435761u >> 16);
        const uint32_t dst = match ? 0xc6120307 : 0xc6130000 | (i * 40503u & 0xffff);
        f.insert(f.end(), {0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, static_cast<uint8_t>(tcp ? 6 : 17)});
        put16(f, 0);
        put16(f, src >> 16);
        put16(f, src);
        put16(f, dst >> 16);
        put16(f, dst);
    }
    put16(f, match ? 40000 : 1024 + i % 50000);
    put16(f, match ? 443 : (i % 2 ? 443 : 53));
    f.resize(f.size() + (tcp ? 16 : 4), 0);
    if (tcp) f[f.size() - 8] = 0x50;
    const size_t plen = f.size() - l3;
    if (v6) {
        f[l3 + 4] = static_cast<uint8_t>((plen - 40) >> 8);
        f[l3 + 5] = static_cast<uint8_t>(plen - 40);
    } else {
        f[l3 + 2] = static_cast<uint8_t>(plen >> 8);
        f[l3 + 3] = static_cast<uint8_t>(plen);
    }
    return f;
}

struct Flows {
    std::vector<std::vector<uint8_t>> frames;
    std::vector<FlowKey> keys;
    explicit Flows(bool match) {
        for (uint32_t i = 0; i < kFlows; i++) {
            // A shuffled visiting order, as the index's flows come.
            frames.push_back(frame(static_cast<uint32_t>((i * 2654435761u) % kFlows), match));
            FlowKey k;
            make_flow_key(1, frames.back().data(), static_cast<uint32_t>(frames.back().size()), k);
            keys.push_back(k);
        }
    }
};

std::vector<linecap::filters::ClassicInsn> compile(const char* e) {
    auto p = linecap::filters::compile_classic(e, 1, 262144);
    if (!p) {
        std::fprintf(stderr, "prune_bench: %s: %s\n", e, p.error().c_str());
        std::exit(1);
    }
    return *p;
}

void set_rates(benchmark::State& state, uint64_t accepted) {
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["per_flow"] = benchmark::Counter(
        double(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["may_accept"] =
        benchmark::Counter(double(accepted) / double(state.iterations() ? state.iterations() : 1));
}

void eval(benchmark::State& state, const char* expression, bool match) {
    const Flows flows(match);
    const FlowFilter ff(compile(expression), 1);
    size_t i = 0;
    uint64_t accepted = 0;
    for (auto _ : state) {
        const FlowFilter::Verdict v = ff.eval(flows.keys[i]);
        accepted += v.may_accept;
        benchmark::DoNotOptimize(v);
        i = (i + 1) % kFlows;
    }
    set_rates(state, accepted);
}

void bpf_filter_baseline(benchmark::State& state) {
    const Flows flows(false);
    const auto prog = compile(kFiveTuple);
    size_t i = 0;
    uint64_t accepted = 0;
    for (auto _ : state) {
        const auto& f = flows.frames[i];
        const uint32_t r =
            linecap::filters::classic_run(prog, f.data(), uint32_t(f.size()), uint32_t(f.size()));
        accepted += r != 0;
        benchmark::DoNotOptimize(r);
        i = (i + 1) % kFlows;
    }
    set_rates(state, accepted);
}

void construct(benchmark::State& state, const char* expression) {
    const auto prog = compile(expression);
    uint64_t with_set = 0;
    for (auto _ : state) {
        const FlowFilter ff(prog, 1);
        with_set += ff.required_addresses().has_value();
        benchmark::DoNotOptimize(ff);
    }
    set_rates(state, with_set);
}

}  // namespace

int main(int argc, char** argv) {
    std::printf("CPU: %s, %ld online CPUs\n", cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
    benchmark::AddCustomContext("cpu_model", cpu_model());

    benchmark::RegisterBenchmark("Eval/five_tuple",
                                 [](benchmark::State& s) { eval(s, kFiveTuple, false); });
    benchmark::RegisterBenchmark("Eval/five_tuple_match",
                                 [](benchmark::State& s) { eval(s, kFiveTuple, true); });
    benchmark::RegisterBenchmark("Eval/net_or_port", [](benchmark::State& s) {
        eval(s, "net 198.18.0.0/16 and (port 53 or port 443)", false);
    });
    benchmark::RegisterBenchmark("Eval/tcp_syn",
                                 [](benchmark::State& s) { eval(s, "tcp[13] & 2 != 0", false); });
    benchmark::RegisterBenchmark("Eval/ip6_protochain",
                                 [](benchmark::State& s) { eval(s, "ip6 protochain 6", false); });
    benchmark::RegisterBenchmark("BpfFilter/five_tuple", bpf_filter_baseline);
    benchmark::RegisterBenchmark("Construct/five_tuple",
                                 [](benchmark::State& s) { construct(s, kFiveTuple); });
    benchmark::RegisterBenchmark("Construct/net_or_port", [](benchmark::State& s) {
        construct(s, "net 198.18.0.0/16 and (port 53 or port 443)");
    });

    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
