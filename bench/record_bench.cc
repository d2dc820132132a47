/* Cost of encoding one capture record the way capd's worker does
 * (dataplane/worker.cc: encode_record_header + rte_memcpy of the packet +
 * encode_record_trailer, into a 1 MiB chunk), per format and packet size,
 * with plain copies of the same packets as the baselines.
 *
 *   ./build/bench/record_bench
 *   ./build/bench/record_bench --benchmark_filter='Encode/pcapng'
 *
 * Rows, for 64-, 512- and 1514-byte packets:
 *   Encode/{pcap,pcap_nano,pcapng}/rte_memcpy/SIZE  a new timestamp every record;
 *   Encode/pcap/rte_memcpy/burst_stamp/SIZE  what the worker runs for ports: one
 *                                     timestamp per burst of 32, split once;
 *   Encode/{pcap,pcapng}/memcpy/SIZE                the same with libc memcpy;
 *   Copy/{memcpy,rte_memcpy}/SIZE                   packet bytes only, no header.
 * Counters: items_per_second (records), bytes_per_second (record bytes
 * written into the chunk), per_pkt (seconds per record).
 *
 * Packets are read round-robin from 512 distinct 2 KiB buffers (about the
 * mbufs a worker touches in a few bursts), so the source is warm but not one
 * cache line; the chunk is written front to back and restarted when full, as
 * in the worker.
 */
#include <benchmark/benchmark.h>
#include <rte_memcpy.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "storage/format.hh"

namespace {

using linecap::storage::Format;

constexpr size_t kChunkBytes = 1 << 20;
constexpr size_t kPackets = 512;
constexpr size_t kPacketStride = 2048;

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

/* Packet buffers and a chunk, built outside the timed loop. */
struct Buffers {
    std::vector<uint8_t> packets;
    std::vector<uint8_t> chunk;
    Buffers() : packets(kPackets * kPacketStride), chunk(kChunkBytes) {
        for (size_t i = 0; i < packets.size(); i++) packets[i] = uint8_t(i * 131u + 7u);
        std::memset(chunk.data(), 0, chunk.size());  // fault the pages in now
    }
};

enum class Copier { kLibc, kRte };

template <Copier C>
inline void copy_bytes(uint8_t* dst, const uint8_t* src, uint32_t n) {
    if constexpr (C == Copier::kRte)
        rte_memcpy(dst, src, n);
    else
        std::memcpy(dst, src, n);
}

void set_rates(benchmark::State& state, uint64_t record_bytes) {
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.SetBytesProcessed(int64_t(record_bytes));
    state.counters["per_pkt"] = benchmark::Counter(
        double(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

/* kPerPacket: a new timestamp every record, split every time (a source
 * with per-packet timestamps). kPerBurst: the worker's case for ports, one
 * timestamp per burst of 32, split once through TsSplit. */
enum class Stamp { kPerPacket, kPerBurst };

template <Copier C, Stamp T = Stamp::kPerPacket>
void encode(benchmark::State& state, Format format) {
    const uint32_t caplen = uint32_t(state.range(0));
    Buffers b;
    const uint32_t need = linecap::storage::record_size(format, caplen);
    size_t len = 0, pkt = 0;
    uint64_t ts = 1700000000123456789ull, bytes = 0;
    linecap::storage::TsSplit split;
    for (auto _ : state) {
        if (kChunkBytes - len < need) len = 0;  // the worker hands the chunk over here
        uint8_t* dst = b.chunk.data() + len;
        const uint8_t* src = b.packets.data() + pkt * kPacketStride;
        if constexpr (T == Stamp::kPerBurst)
            dst +=
                linecap::storage::encode_record_header(format, dst, ts, 0, caplen, caplen, split);
        else
            dst += linecap::storage::encode_record_header(format, dst, ts, 0, caplen, caplen);
        copy_bytes<C>(dst, src, caplen);
        dst += caplen;
        linecap::storage::encode_record_trailer(format, dst, caplen);
        len += need;
        bytes += need;
        if (T == Stamp::kPerPacket || pkt % 32 == 31) ts += 67;
        pkt = (pkt + 1) % kPackets;
        benchmark::ClobberMemory();
    }
    benchmark::DoNotOptimize(b.chunk.data());
    set_rates(state, bytes);
}

template <Copier C>
void copy_only(benchmark::State& state) {
    const uint32_t caplen = uint32_t(state.range(0));
    Buffers b;
    size_t len = 0, pkt = 0;
    uint64_t bytes = 0;
    for (auto _ : state) {
        if (kChunkBytes - len < caplen) len = 0;
        copy_bytes<C>(b.chunk.data() + len, b.packets.data() + pkt * kPacketStride, caplen);
        len += caplen;
        bytes += caplen;
        pkt = (pkt + 1) % kPackets;
        benchmark::ClobberMemory();
    }
    benchmark::DoNotOptimize(b.chunk.data());
    set_rates(state, bytes);
}

void sizes(benchmark::internal::Benchmark* b) {
    for (int s : {64, 512, 1514}) b->Arg(s);
    b->ArgName("bytes");
}

}  // namespace

int main(int argc, char** argv) {
    std::printf("CPU: %s, %ld online CPUs\n", cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
    benchmark::AddCustomContext("cpu_model", cpu_model());

    benchmark::RegisterBenchmark("Encode/pcap/rte_memcpy", [](benchmark::State& s) {
        encode<Copier::kRte>(s, Format::kPcapMicro);
    })->Apply(sizes);
    benchmark::RegisterBenchmark("Encode/pcap/rte_memcpy/burst_stamp", [](benchmark::State& s) {
        encode<Copier::kRte, Stamp::kPerBurst>(s, Format::kPcapMicro);
    })->Apply(sizes);
    benchmark::RegisterBenchmark("Encode/pcap_nano/rte_memcpy", [](benchmark::State& s) {
        encode<Copier::kRte>(s, Format::kPcapNano);
    })->Apply(sizes);
    benchmark::RegisterBenchmark("Encode/pcapng/rte_memcpy", [](benchmark::State& s) {
        encode<Copier::kRte>(s, Format::kPcapng);
    })->Apply(sizes);
    benchmark::RegisterBenchmark("Encode/pcap/memcpy", [](benchmark::State& s) {
        encode<Copier::kLibc>(s, Format::kPcapMicro);
    })->Apply(sizes);
    benchmark::RegisterBenchmark("Encode/pcapng/memcpy", [](benchmark::State& s) {
        encode<Copier::kLibc>(s, Format::kPcapng);
    })->Apply(sizes);
    benchmark::RegisterBenchmark("Copy/memcpy", [](benchmark::State& s) {
        copy_only<Copier::kLibc>(s);
    })->Apply(sizes);
    benchmark::RegisterBenchmark("Copy/rte_memcpy", [](benchmark::State& s) {
        copy_only<Copier::kRte>(s);
    })->Apply(sizes);

    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
