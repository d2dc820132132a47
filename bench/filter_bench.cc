/* Cost per packet of a tcpdump expression on the three engines linecap could
 * run it on: the translated eBPF on rte_bpf's x86-64 JIT (what workers run),
 * the same eBPF on rte_bpf's interpreter, and libpcap's bpf_filter() on the
 * classic program (the baseline tcpdump uses). Also RuleSet::classify_burst
 * (the whole per-burst hook) for one rule.
 *
 * Packets: a fixed mix of generated frames (TCP with and without payload,
 * UDP/DNS, ICMP, IPv6, ARP, some VLAN-tagged) cycled in bursts, all warm in
 * cache, as a worker sees them right after rx. Expressions: the seed
 * articles' own filters.
 *
 *   build-bpf/bench/filter_bench --benchmark_filter=Seed
 */
#include <benchmark/benchmark.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "filters/bpf_object.hh"
#include "filters/bpf_verifier.hh"
#include "filters/cbpf_to_ebpf.hh"
#include "filters/ebpf_vm.hh"
#include "filters/rule_set.hh"
#include "tests/filters/bpf_test_packets.hh"

namespace linecap::filters {
namespace {

using testing::GenSpec;
using testing::ipv4;
using testing::L4;

const char* const kSeedExpressions[] = {
    "port 22",
    "dst 223.5.5.5 and icmp",
    "host 192.168.152.100 and ! 192.168.152.101",
    "net 192.168.152.0/24",
    "((tcp) and (port 80) and ((dst host 192.168.152.254) or (dst host 192.168.152.200)))",
    "((tcp) and ((dst net 192.168) and (not dst host 192.168.152.200)))",
    "tcp[tcpflags] = tcp-syn",
    "tcp[13] & 2 != 0",
    "tcp[(tcp[12]>>2):4] = 0x47455420",
    "((port 25) and (tcp[(tcp[12]>>2):4] = 0x4d41494c))",
    "tcp[20:2]=0x4745 or tcp[20:2]=0x4854",
    "tcp[0:2] > 1024",
    "udp dst port 53",
};
constexpr int kNumExpr = sizeof(kSeedExpressions) / sizeof(kSeedExpressions[0]);

/* 4096 frames: 55% IPv4 TCP (a third with payload, some "GET "), 20% UDP
 * (DNS), 5% ICMP, 10% IPv6 TCP/UDP, 5% ARP, 5% other; 10% carry a VLAN tag. */
struct Mix {
    std::vector<std::vector<uint8_t>> frames;
    std::vector<Packet> pkts;

    Mix() {
        testing::Rng rng(7);
        const std::vector<uint32_t> addrs = {ipv4(192, 168, 152, 100), ipv4(192, 168, 152, 101),
                                             ipv4(192, 168, 152, 254), ipv4(192, 168, 152, 200),
                                             ipv4(10, 0, 0, 1),        ipv4(172, 16, 2, 226),
                                             ipv4(223, 5, 5, 5),       ipv4(8, 8, 8, 8)};
        const std::vector<uint16_t> ports = {80, 443, 22, 25, 53, 8080, 40000, 51000};
        const std::vector<std::string> payloads = {"GET /index.html HTTP/1.1\r\n",
                                                   "MAIL FROM:<a@b>\r\n", std::string(600, 'd'),
                                                   std::string(1400, 'd')};
        for (int i = 0; i < 4096; i++) {
            GenSpec g;
            if (rng.below(10) == 0) g.vlans = {100};
            g.src4 = rng.pick(addrs);
            g.dst4 = rng.pick(addrs);
            g.sport = rng.pick(ports);
            g.dport = rng.pick(ports);
            const uint32_t k = rng.below(100);
            if (k < 55) {
                g.l4 = L4::kTcp;
                g.tcp_flags = rng.below(10) == 0 ? 0x02 : 0x10;
                g.tcp_doff = rng.below(2) ? 5 : 8;
                if (rng.below(3) == 0) g.payload = rng.pick(payloads);
            } else if (k < 75) {
                g.l4 = L4::kUdp;
                g.dport = 53;
                g.payload = std::string(40, 'q');
            } else if (k < 80) {
                g.l4 = L4::kIcmp;
                g.payload = std::string(56, 'p');
            } else if (k < 90) {
                g.v6 = true;
                g.l4 = rng.below(2) ? L4::kTcp : L4::kUdp;
            } else if (k < 95) {
                frames.push_back(testing::build_arp(1, g.src4, g.dst4, false));
                continue;
            } else {
                g.l4 = L4::kOther;
                g.payload = std::string(30, 'o');
            }
            std::vector<uint8_t> f = testing::build(g);
            if (f.size() < 60) f.resize(60, 0);  // Ethernet minimum without FCS
            frames.push_back(std::move(f));
        }
        for (const auto& f : frames)
            pkts.push_back(
                Packet{f.data(), static_cast<uint32_t>(f.size()), static_cast<uint32_t>(f.size())});
    }
};

const Mix& mix() {
    static const Mix m;
    return m;
}

struct Filter {
    std::vector<ClassicInsn> classic;
    std::unique_ptr<EbpfVm> vm;
};

Filter make_filter(const char* expr) {
    Filter f;
    auto c = compile_classic(expr, 1, 262144);
    if (!c) std::abort();
    f.classic = std::move(*c);
    auto t = translate_classic(f.classic);
    if (!t) std::abort();
    auto vm = EbpfVm::load(*t, true);
    if (!vm || !(*vm)->jitted()) std::abort();
    f.vm = std::move(*vm);
    return f;
}

enum class Engine { kJit, kInterpreter, kBpfFilter };

template <Engine E>
void BM_Seed(benchmark::State& state) {
    const char* expr = kSeedExpressions[state.range(0)];
    const uint32_t burst = static_cast<uint32_t>(state.range(1));
    const Filter f = make_filter(expr);
    const auto& pkts = mix().pkts;
    const size_t n = pkts.size();
    std::vector<uint64_t> rc(burst);
    size_t at = 0;
    uint64_t accepted = 0;
    for (auto _ : state) {
        if (at + burst > n) at = 0;
        const Packet* b = &pkts[at];
        if constexpr (E == Engine::kJit) {
            f.vm->run_burst(b, burst, rc.data());
        } else if constexpr (E == Engine::kInterpreter) {
            for (uint32_t i = 0; i < burst; i++) rc[i] = f.vm->run_interpreted(b[i]);
        } else {
            for (uint32_t i = 0; i < burst; i++)
                rc[i] = classic_run(f.classic, b[i].data, b[i].wirelen, b[i].caplen);
        }
        for (uint32_t i = 0; i < burst; i++) accepted += rc[i] != 0;
        benchmark::DoNotOptimize(rc.data());
        at += burst;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * burst);
    state.counters["ns/pkt"] =
        benchmark::Counter(static_cast<double>(state.iterations()) * burst,
                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["accept%"] =
        100.0 * static_cast<double>(accepted) / (static_cast<double>(state.iterations()) * burst);
    state.SetLabel(expr);
}

/* classify_burst() of a one-rule set over the mix, `burst` packets a call. */
void classify_rule(benchmark::State& state, const RuleSpec& r, uint32_t burst) {
    auto rs = compile(std::span(&r, 1), CompileOptions{});
    if (!rs) std::abort();
    auto scratch = (*rs)->make_scratch();
    const auto& pkts = mix().pkts;
    std::vector<uint8_t> verdict(burst);
    size_t at = 0;
    for (auto _ : state) {
        if (at + burst > pkts.size()) at = 0;
        benchmark::DoNotOptimize((*rs)->classify_burst(&pkts[at], burst, verdict.data(), *scratch));
        at += burst;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * burst);
    state.counters["ns/pkt"] =
        benchmark::Counter(static_cast<double>(state.iterations()) * burst,
                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_RuleSetClassify(benchmark::State& state) {
    RuleSpec r;
    r.name = "cli";
    r.expression = kSeedExpressions[state.range(0)];
    classify_rule(state, r, static_cast<uint32_t>(state.range(1)));
    state.SetLabel(r.expression);
}

/* The default capture: one rule with no condition ("match-all"), which
 * still counts packets and bytes per rule. */
void BM_RuleSetMatchAll(benchmark::State& state) {
    RuleSpec r;
    r.name = "cli";
    classify_rule(state, r, static_cast<uint32_t>(state.range(0)));
}

void seed_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"expr", "burst"});
    for (int e = 0; e < kNumExpr; e++) b->Args({e, 32});
}

// Burst-size sweep for the payload filter ("GET "), index 8.
void sweep_args(benchmark::internal::Benchmark* b) {
    b->ArgNames({"expr", "burst"});
    for (int burst : {1, 8, 32, 128}) b->Args({8, burst});
}

/* An untrusted eBPF object (filters/examples/http_get.bpf.c) on the JIT:
 * run on the burst's own Packet (how objects ran before PacketStage, and
 * how trusted expressions still run) against the worker's private copy
 * that RuleSet::classify_burst() now stages for it. */
#ifdef LINECAP_BPF_EXAMPLES
template <bool kStaged>
void BM_Object(benchmark::State& state) {
    const uint32_t burst = static_cast<uint32_t>(state.range(0));
    auto prog = load_bpf_object(std::string(LINECAP_BPF_EXAMPLES) + "/http_get.bpf.o");
    if (!prog) {
        state.SkipWithError(prog.error().c_str());
        return;
    }
    auto vm = EbpfVm::load(prog->insns, true);
    if (!vm || !(*vm)->jitted()) std::abort();
    PacketStage stage(prog->packet_reach);
    const auto& pkts = mix().pkts;
    const size_t n = pkts.size();
    std::vector<uint64_t> rc(burst);
    size_t at = 0;
    for (auto _ : state) {
        if (at + burst > n) at = 0;
        const Packet* b = &pkts[at];
        for (uint32_t i = 0; i < burst; i++)
            rc[i] = kStaged ? (*vm)->run(stage.stage(b[i])) : (*vm)->run(b[i]);
        benchmark::DoNotOptimize(rc.data());
        at += burst;
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * burst);
    state.counters["ns/pkt"] =
        benchmark::Counter(static_cast<double>(state.iterations()) * burst,
                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.SetLabel("http_get, reach " + std::to_string(prog->packet_reach) + " bytes");
}

void BM_RuleSetObject(benchmark::State& state) {
    RuleSpec r;
    r.name = "obj";
    r.bpf_object = std::string(LINECAP_BPF_EXAMPLES) + "/http_get.bpf.o";
    classify_rule(state, r, static_cast<uint32_t>(state.range(0)));
}

BENCHMARK(BM_Object<false>)->Name("Object/direct")->ArgName("burst")->Arg(32);
BENCHMARK(BM_Object<true>)->Name("Object/staged")->ArgName("burst")->Arg(32);
BENCHMARK(BM_RuleSetObject)->Name("RuleSet/object")->ArgName("burst")->Arg(32);
#endif

/* rte_bpf_load() of a program of k sequential if-diamonds (2^k paths): its
 * validator walks every path, so its time follows validator_visits(), not
 * the 2k+3 instructions. Sets the cap kMaxValidatorVisits. */
void BM_RteBpfValidate(benchmark::State& state) {
    const int k = static_cast<int>(state.range(0));
    std::vector<ebpf_insn> p;
    auto ins = [&p](uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
        ebpf_insn i{};
        i.code = code;
        i.dst_reg = dst;
        i.src_reg = src;
        i.off = off;
        i.imm = imm;
        p.push_back(i);
    };
    ins(EBPF_ALU64 | EBPF_MOV | BPF_K, 0, 0, 0, 0);
    ins(BPF_LDX | BPF_MEM | BPF_W, 2, 1, 8, 0);
    for (int j = 0; j < k; j++) {
        ins(BPF_JMP | BPF_JEQ | BPF_K, 2, 0, 1, j);
        ins(EBPF_ALU64 | BPF_ADD | BPF_K, 0, 0, 0, 1);
    }
    ins(BPF_JMP | EBPF_EXIT, 0, 0, 0, 0);
    const uint64_t visits = validator_visits(p);
    for (auto _ : state) {
        auto vm = EbpfVm::load(p, false);
        if (!vm) std::abort();
    }
    state.counters["visits"] = static_cast<double>(visits);
    state.counters["ns/visit"] =
        benchmark::Counter(static_cast<double>(state.iterations()) * static_cast<double>(visits),
                           benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_RteBpfValidate)
    ->Name("RteBpfValidate/diamonds")
    ->ArgName("k")
    ->DenseRange(8, 20, 4)
    ->Unit(benchmark::kMillisecond);

BENCHMARK(BM_Seed<Engine::kJit>)->Name("Seed/jit")->Apply(seed_args);
BENCHMARK(BM_Seed<Engine::kInterpreter>)->Name("Seed/interpreter")->Apply(seed_args);
BENCHMARK(BM_Seed<Engine::kBpfFilter>)->Name("Seed/bpf_filter")->Apply(seed_args);
BENCHMARK(BM_Seed<Engine::kJit>)->Name("Sweep/jit")->Apply(sweep_args);
BENCHMARK(BM_Seed<Engine::kBpfFilter>)->Name("Sweep/bpf_filter")->Apply(sweep_args);
BENCHMARK(BM_RuleSetClassify)->Name("RuleSet/classify_burst")->Apply(seed_args);
BENCHMARK(BM_RuleSetMatchAll)->Name("RuleSet/match_all")->ArgName("burst")->Arg(32);

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

}  // namespace
}  // namespace linecap::filters

int main(int argc, char** argv) {
    benchmark::AddCustomContext("cpu_model", linecap::filters::cpu_model());
    std::printf("CPU: %s\n", linecap::filters::cpu_model().c_str());
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
