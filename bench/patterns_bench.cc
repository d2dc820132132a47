/* Cost of Hyperscan payload patterns per packet (PatternDb::scan_burst), with a
 * plain memmem() loop over the same payloads as the baseline.
 *
 *   ./build/bench/patterns_bench                        # everything
 *   ./build/bench/patterns_bench --benchmark_filter=Literals512
 *
 * Counters: per_pkt (seconds per packet: "95n" is 95 ns), payload_bits
 * (payload bits scanned per second: "12G/s" is 12 Gbit/s), match_rate
 * (fraction of packets with a match), bytes_per_second (payload, GiB/s).
 * The goal: 100 literals at >= 10 Gbit/s of payload per core on 512-byte
 * payloads (BM_Literals512/100).
 */
#include <benchmark/benchmark.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "filters/patterns.hh"

namespace linecap::filters {
namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint32_t kBurst = 32;

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}

/* Ethernet + IPv4 + TCP (no options) around `payload`. */
Bytes tcp_frame(const Bytes& payload) {
    Bytes b = {0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2};
    put16(b, 0x0800);
    b.push_back(0x45);
    b.push_back(0);
    put16(b, static_cast<uint16_t>(40 + payload.size()));
    put16(b, 1);
    put16(b, 0x4000);
    b.push_back(64);
    b.push_back(6);
    put16(b, 0);
    for (uint8_t a : {198, 18, 0, 1, 198, 18, 0, 2}) b.push_back(a);
    put16(b, 40000);
    put16(b, 80);
    for (int i = 0; i < 8; i++) b.push_back(0);
    b.push_back(0x50);
    b.push_back(payload.empty() ? 0x10 : 0x18);
    put16(b, 65535);
    put16(b, 0);
    put16(b, 0);
    b.insert(b.end(), payload.begin(), payload.end());
    while (b.size() < 60) b.push_back(0);
    return b;
}

/* Lower-case text with spaces, like a text protocol's payload. Patterns are
 * drawn from the same alphabet, so Hyperscan sees many partial matches but
 * few full ones: no early stop helps it. */
Bytes text_payload(std::mt19937& rng, size_t n) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz      ";
    Bytes b(n);
    for (auto& c : b) c = static_cast<uint8_t>(alphabet[rng() % (sizeof alphabet - 1)]);
    return b;
}

std::vector<std::string> literal_set(size_t n) {
    std::mt19937 rng(1234);
    std::vector<std::string> out;
    for (size_t i = 0; i < n; i++) {
        size_t len = 6 + rng() % 7;
        std::string s;
        for (size_t k = 0; k < len; k++) s.push_back(static_cast<char>('a' + rng() % 26));
        out.push_back(s);
    }
    return out;
}

struct Traffic {
    std::vector<Bytes> frames;
    std::vector<Packet> pkts;
    std::vector<ByteSpan> spans;  // payload, precomputed for the memmem baseline
    uint64_t payload_bytes = 0;
};

/* kind 0: all packets carry `payload` bytes. kind 1: a mix per 8 packets:
 * 3 pure ACKs, 1 of 64, 2 of 512, 2 of 1460 payload bytes. */
Traffic make_traffic(int kind, size_t payload, size_t count = 1024) {
    std::mt19937 rng(99);
    Traffic t;
    static const size_t mix[8] = {0, 0, 0, 64, 512, 512, 1460, 1460};
    for (size_t i = 0; i < count; i++) {
        size_t n = kind == 0 ? payload : mix[i % 8];
        t.frames.push_back(tcp_frame(text_payload(rng, n)));
    }
    for (auto& f : t.frames) {
        Packet p{f.data(), static_cast<uint32_t>(f.size()), static_cast<uint32_t>(f.size())};
        t.pkts.push_back(p);
        ByteSpan s = payload_span(p, ScanScope::kPayload);
        t.spans.push_back(s);
        t.payload_bytes += s.length;
    }
    return t;
}

void set_counters(benchmark::State& state, const Traffic& t) {
    double pkts = static_cast<double>(state.iterations()) * kBurst;
    double bytes = pkts * static_cast<double>(t.payload_bytes) / static_cast<double>(t.pkts.size());
    state.SetBytesProcessed(static_cast<int64_t>(bytes));
    state.SetItemsProcessed(static_cast<int64_t>(pkts));
    state.counters["per_pkt"] =
        benchmark::Counter(pkts, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["payload_bits"] = benchmark::Counter(bytes * 8, benchmark::Counter::kIsRate);
}

void run_scan(benchmark::State& state, const std::vector<PatternSpec>& specs, const Traffic& t) {
    auto db = PatternDb::compile(specs);
    if (!db.ok()) {
        state.SkipWithError(db.error().c_str());
        return;
    }
    auto scratch = db->make_scratch();
    if (!scratch.ok()) {
        state.SkipWithError(scratch.error().c_str());
        return;
    }
    RuleMask masks[kBurst];
    size_t pos = 0;
    uint64_t hits = 0;
    for (auto _ : state) {
        hits += db->scan_burst(&t.pkts[pos], kBurst, ScanScope::kPayload, *scratch, masks);
        benchmark::DoNotOptimize(masks);
        pos += kBurst;
        if (pos + kBurst > t.pkts.size()) pos = 0;
    }
    state.counters["match_rate"] = benchmark::Counter(
        static_cast<double>(hits) / (static_cast<double>(state.iterations()) * kBurst));
    set_counters(state, t);
}

std::vector<PatternSpec> literals(size_t n) {
    std::vector<PatternSpec> specs;
    for (auto& s : literal_set(n)) specs.push_back({s, 0});
    return specs;
}

/* Literals over 512-byte payloads (the goal), one rule. */
void BM_Literals512(benchmark::State& state) {
    static const Traffic t = make_traffic(0, 512);
    run_scan(state, literals(static_cast<size_t>(state.range(0))), t);
}
BENCHMARK(BM_Literals512)->Arg(1)->Arg(10)->Arg(100)->Arg(1000);

/* Literals over the packet mix (3/8 pure ACKs that are never scanned). */
void BM_LiteralsMix(benchmark::State& state) {
    static const Traffic t = make_traffic(1, 0);
    run_scan(state, literals(static_cast<size_t>(state.range(0))), t);
}
BENCHMARK(BM_LiteralsMix)->Arg(1)->Arg(10)->Arg(100)->Arg(1000);

/* Small packets: what one hs_scan call costs before the payload matters. */
void BM_Literals46(benchmark::State& state) {
    static const Traffic t = make_traffic(0, 46);
    run_scan(state, literals(static_cast<size_t>(state.range(0))), t);
}
BENCHMARK(BM_Literals46)->Arg(2)->Arg(100);

/* Pure ACKs: no payload, never handed to Hyperscan. */
void BM_EmptyPayloads(benchmark::State& state) {
    static const Traffic t = make_traffic(0, 0);
    run_scan(state, literals(100), t);
}
BENCHMARK(BM_EmptyPayloads);

/* A few regexes, as users write them. */
void BM_Regex512(benchmark::State& state) {
    static const Traffic t = make_traffic(0, 512);
    static const std::vector<std::vector<PatternSpec>> sets = {
        {{"/user-agent:\\s*curl/i", 0}},
        {{"/^(get|post|head) \\/[a-z]+\\.php/i", 0}},
        {{"/user-agent:\\s*curl/i", 0},
         {"/authorization: basic [a-z0-9+\\/=]{8,}/i", 1},
         {"/mail from:<[^>]*@example\\.(com|org)>/i", 2},
         {"/\\d{3}-\\d{2}-\\d{4}/", 3},
         {"/password=.{4,32}&/s", 4}},
    };
    run_scan(state, sets[static_cast<size_t>(state.range(0))], t);
}
BENCHMARK(BM_Regex512)->Arg(0)->Arg(1)->Arg(2);

/* Baseline: memmem() for each literal over each payload, same packets. */
void BM_Memmem512(benchmark::State& state) {
    static const Traffic t = make_traffic(0, 512);
    auto lits = literal_set(static_cast<size_t>(state.range(0)));
    size_t pos = 0;
    uint64_t hits = 0;
    for (auto _ : state) {
        for (uint32_t i = 0; i < kBurst; i++) {
            const ByteSpan& s = t.spans[pos + i];
            const uint8_t* p = t.pkts[pos + i].data + s.offset;
            for (const auto& l : lits) {
                if (memmem(p, s.length, l.data(), l.size()) != nullptr) {
                    hits++;
                    break;
                }
            }
        }
        pos += kBurst;
        if (pos + kBurst > t.pkts.size()) pos = 0;
    }
    benchmark::DoNotOptimize(hits);
    set_counters(state, t);
}
BENCHMARK(BM_Memmem512)->Arg(1)->Arg(10);

/* payload_span alone, over the mix. */
void BM_PayloadSpan(benchmark::State& state) {
    static const Traffic t = make_traffic(1, 0);
    size_t pos = 0;
    for (auto _ : state) {
        for (uint32_t i = 0; i < kBurst; i++) {
            ByteSpan s = payload_span(t.pkts[pos + i], ScanScope::kPayload);
            benchmark::DoNotOptimize(s);
        }
        pos += kBurst;
        if (pos + kBurst > t.pkts.size()) pos = 0;
    }
    set_counters(state, t);
}
BENCHMARK(BM_PayloadSpan);

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line, model = "unknown", flags;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0 && model == "unknown")
            model = line.substr(line.find(':') + 2);
        if (line.rfind("flags", 0) == 0 && flags.empty()) {
            for (const char* f : {"avx512bw", "avx2", "ssse3"})
                if (line.find(std::string(" ") + f) != std::string::npos)
                    flags += std::string(" ") + f;
        }
    }
    return model + " (" + (flags.empty() ? "" : flags.substr(1)) + ")";
}

}  // namespace
}  // namespace linecap::filters

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("cpu_model", linecap::filters::cpu_model());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
