/* Cost of indexing on capd's writer core: IndexBuilder::add_records() over
 * chunks of records as the writer hands them over, 64-byte frames (80-byte
 * pcap records), with the flow count swept; and the cost and size of the
 * file's index at rotation (serialize()).
 *
 *   ./build/bench/index_bench
 *   ./build/bench/index_bench --benchmark_filter='Add/pcap/flows:1000000'
 *
 * Rows:
 *   Add/{pcap,pcapng}/flows:N  records cycle through N distinct UDP flows
 *                              (198.18.0.0/15 addresses, ports varying); a
 *                              "file" is 12.5 M records (1000 MB of 64-byte
 *                              frames, capd's -C 1000), after which begin()
 *                              starts the next one, inside the timing. N = 1:
 *                              one flow repeated; N = 1M: a table of 1 M flows
 *                              (every file inserts each one, then finds it
 *                              about 11 more times), mostly cache misses.
 *   Serialize/flows:N          one file's serialize() after 12.5 M records
 *                              of N flows; counters: index_bytes, and
 *                              index_pct, the index's size as a percentage
 *                              of the capture bytes.
 *   AddCut/flows:N             IndexBuilder::add_cut(): one cut note (the
 *                              writer's per flow and chunk; storage/chunk.hh)
 *                              per item, cycling through N flows, files as
 *                              Add's: a flow key from the note's head and
 *                              one lookup, as a record's, without the block.
 *   AddCuts/flows:N            the same through add_cuts(), 64 notes a call
 *                              as the writer gives a chunk's: pipelined.
 * Counters: items_per_second (records), per_pkt (seconds per record). The
 * budget at 14.88 Mpps on one writer core is 67 ns per record, everything
 * included.
 */
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "index/builder.hh"
#include "storage/format.hh"

namespace {

using linecap::index::CaptureFormat;
using linecap::index::IndexBuilder;
using linecap::storage::Format;

constexpr uint64_t kFileRecords = 12500000;  // 1000 MB of 80-byte records
constexpr size_t kChunkRecords = 256;        // a writer's chunk of 20 KiB

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

/* A 64-byte Ethernet/IPv4/UDP frame of flow n. */
void frame(uint32_t n, uint8_t* f) {
    std::memset(f, 0, 64);
    std::memset(f, 0x02, 12);
    f[12] = 0x08;
    f[14] = 0x45;
    f[17] = 50;  // IP total length
    f[22] = 64;
    f[23] = 17;
    f[26] = 198;
    f[27] = 18 + uint8_t(n >> 24 & 1);
    f[28] = uint8_t(n >> 16);
    f[29] = uint8_t(n >> 8);
    f[30] = 198;
    f[31] = 19;
    f[32] = uint8_t(n);
    f[33] = 7;
    f[34] = uint8_t(n >> 8);  // source port
    f[35] = uint8_t(n);
    f[36] = 0x01;  // 443
    f[37] = 0xbb;
}

/* One record per flow, back to back, as capd encodes them. */
std::vector<uint8_t> records(Format fmt, uint32_t flows, uint32_t& rec_bytes) {
    rec_bytes = linecap::storage::record_size(fmt, 64);
    std::vector<uint8_t> buf(size_t(rec_bytes) * flows);
    uint8_t* p = buf.data();
    uint64_t ts = 1700000000ull * 1000000000ull;
    for (uint32_t i = 0; i < flows; i++) {
        uint32_t h = linecap::storage::encode_record_header(fmt, p, ts + i * 67, 0, 64, 64);
        frame(i, p + h);
        linecap::storage::encode_record_trailer(fmt, p + h + 64, 64);
        p += rec_bytes;
    }
    return buf;
}

CaptureFormat index_format(Format f) {
    return f == Format::kPcapng ? CaptureFormat::kPcapng : CaptureFormat::kPcapMicro;
}

void add(benchmark::State& state, Format fmt) {
    auto flows = uint32_t(state.range(0));
    // At least a chunk of records, so that one flow is one chunk repeated.
    uint32_t distinct = std::max<uint32_t>(flows, kChunkRecords);
    uint32_t rec;
    std::vector<uint8_t> buf = records(fmt, distinct, rec);
    if (flows < distinct) {
        // Fewer flows than records: repeat the first `flows` frames.
        for (uint32_t i = flows; i < distinct; i++)
            std::memcpy(buf.data() + size_t(i) * rec, buf.data() + size_t(i % flows) * rec, rec);
    }
    uint16_t lt[1] = {1};
    IndexBuilder b;
    b.begin(index_format(fmt), lt, 24);
    uint64_t offset = 24, in_file = 0;
    size_t at = 0;
    for (auto _ : state) {
        b.add_records(buf.data() + at * rec, size_t(kChunkRecords) * rec, offset);
        offset += uint64_t(kChunkRecords) * rec;
        in_file += kChunkRecords;
        at += kChunkRecords;
        if (at + kChunkRecords > distinct) at = 0;
        if (in_file >= kFileRecords) {
            b.begin(index_format(fmt), lt, 24);
            offset = 24;
            in_file = 0;
        }
    }
    int64_t n = int64_t(state.iterations()) * kChunkRecords;
    state.SetItemsProcessed(n);
    state.counters["per_pkt"] =
        benchmark::Counter(double(n), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

/* What add_cut() and add_cuts() share: one 64-byte frame head per flow, as
 * a cut note carries, handed out in turn with a time stamp 67 ns after the
 * last; and a builder on a pcap file begun again every kFileRecords notes,
 * as the writer's rotation would. */
class CutNotes {
public:
    explicit CutNotes(uint32_t flows) : flows_(flows), heads_(size_t(flows) * 64) {
        for (uint32_t i = 0; i < flows; i++) frame(i, &heads_[size_t(i) * 64]);
        b_.begin(CaptureFormat::kPcapMicro, lt_, 24);
    }
    IndexBuilder& builder() { return b_; }
    /* The next note's frame head; its time stamp in *ts. */
    const uint8_t* next(uint64_t* ts) {
        const uint8_t* h = &heads_[size_t(at_) * 64];
        *ts = ts_;
        if (++at_ == flows_) at_ = 0;
        ts_ += 67;
        return h;
    }
    /* n notes were added: a new file once the current one is full. */
    void added(uint64_t n) {
        in_file_ += n;
        if (in_file_ >= kFileRecords) {
            b_.begin(CaptureFormat::kPcapMicro, lt_, 24);
            in_file_ = 0;
        }
    }

private:
    uint32_t flows_;
    std::vector<uint8_t> heads_;
    uint16_t lt_[1] = {1};
    IndexBuilder b_;
    uint64_t in_file_ = 0, ts_ = 1700000000ull * 1000000000ull;
    uint32_t at_ = 0;
};

void add_cut(benchmark::State& state) {
    CutNotes notes(uint32_t(state.range(0)));
    IndexBuilder& b = notes.builder();
    for (auto _ : state) {
        uint64_t ts;
        const uint8_t* head = notes.next(&ts);
        b.add_cut(0, head, 64, ts, ts + 1000, 12, 768, 0, 0);
        notes.added(1);
    }
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["per_pkt"] = benchmark::Counter(
        double(state.iterations()), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

/* add_cut() 64 notes a call (add_cuts()), as the writer hands a chunk's
 * notes over. */
void add_cuts(benchmark::State& state) {
    CutNotes notes(uint32_t(state.range(0)));
    IndexBuilder& b = notes.builder();
    IndexBuilder::Cut in[64];
    for (auto _ : state) {
        for (auto& c : in) {
            uint64_t ts;
            const uint8_t* head = notes.next(&ts);
            c = {head, 64, 0, ts, ts + 1000, 12, 768, 0, 0};
        }
        b.add_cuts(in, 64);
        notes.added(64);
    }
    const double n = double(state.iterations()) * 64;
    state.SetItemsProcessed(int64_t(n));
    state.counters["per_pkt"] =
        benchmark::Counter(n, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void serialize(benchmark::State& state) {
    auto flows = uint32_t(state.range(0));
    uint32_t distinct = std::max<uint32_t>(flows, kChunkRecords);
    uint32_t rec;
    std::vector<uint8_t> buf = records(Format::kPcapMicro, distinct, rec);
    for (uint32_t i = flows; i < distinct; i++)
        std::memcpy(buf.data() + size_t(i) * rec, buf.data() + size_t(i % flows) * rec, rec);
    uint16_t lt[1] = {1};
    IndexBuilder b;
    b.begin(CaptureFormat::kPcapMicro, lt, 24);
    uint64_t offset = 24;
    for (uint64_t n = 0, at = 0; n < kFileRecords; n += kChunkRecords) {
        b.add_records(buf.data() + at * rec, size_t(kChunkRecords) * rec, offset);
        offset += uint64_t(kChunkRecords) * rec;
        at += kChunkRecords;
        if (at + kChunkRecords > distinct) at = 0;
    }
    size_t bytes = 0;
    for (auto _ : state) {
        std::string s = b.serialize(offset);
        bytes = s.size();
        benchmark::DoNotOptimize(s.data());
    }
    state.counters["index_bytes"] = double(bytes);
    state.counters["index_pct"] = 100.0 * double(bytes) / double(offset);
}

}  // namespace

int main(int argc, char** argv) {
    std::printf("CPU: %s, %ld online CPUs\n", cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
    benchmark::AddCustomContext("cpu_model", cpu_model());

    auto flow_counts = [](benchmark::internal::Benchmark* b) {
        b->ArgName("flows");
        for (int64_t n : {1, 1000, 100000, 1000000}) b->Arg(n);
    };
    benchmark::RegisterBenchmark("Add/pcap", [](benchmark::State& s) {
        add(s, Format::kPcapMicro);
    })->Apply(flow_counts);
    benchmark::RegisterBenchmark("Add/pcapng", [](benchmark::State& s) {
        add(s, Format::kPcapng);
    })->Apply(flow_counts);
    benchmark::RegisterBenchmark("AddCut", add_cut)->Apply(flow_counts);
    benchmark::RegisterBenchmark("AddCuts", add_cuts)->Apply(flow_counts);
    benchmark::RegisterBenchmark("Serialize", serialize)
        ->Apply(flow_counts)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(3);

    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
