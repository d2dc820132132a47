/* The catalogue publisher's work per closed file (storage/catalog_publisher.hh),
 * on the helper thread: from the file's index to the spool's flow rows.
 *
 *   ReadBack/F:   Index::load() of the index file beside the capture (page
 *                 cache warm, which favours it), then a row a flow: what the
 *                 publisher did before the writer handed its index over.
 *   FromMemory/F: Index::from_bytes() of the bytes the writer hands over
 *                 (moved, not copied: the copy made for each iteration is
 *                 outside the timing), then a row a flow: what it does now.
 *   Budget/F/B:   FromMemory under --catalog-flow-budget B (budget_flows()).
 *
 * F flows of 1-2 packets each (UDP, distinct client addresses and ports to
 * a few servers: the mix that loads the catalogue most). Counters: per
 * file (the iteration), flows/s and the spool's row text per flow
 * (row_bytes/flow, FromMemory and Budget). Any machine; the ratio between the
 * two in one run is the number to quote. */
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "index/builder.hh"
#include "index/index_file.hh"
#include "storage/catalog.hh"

using namespace linecap;

namespace {

std::string build_index(int flows, uint64_t* capture_bytes) {
    index::IndexBuilder b;
    const uint16_t lt[1] = {1};
    b.begin(index::CaptureFormat::kPcapNano, lt, 24);
    uint8_t f[60] = {};
    f[12] = 0x08;  // IPv4
    f[14] = 0x45;
    f[23] = 17;  // UDP
    uint64_t off = 24;
    for (int i = 0; i < flows; i++) {
        const uint32_t client = 0xc6120000u | 0x100u | uint32_t(i >> 4);  // 198.18.x.y
        const uint32_t server = 0xc6130000u | uint32_t(i % 16);
        for (int dir = 0; dir < 1 + (i & 1); dir++) {
            uint32_t s = dir ? server : client, d = dir ? client : server;
            for (int k = 0; k < 4; k++) {
                f[26 + k] = uint8_t(s >> (24 - 8 * k));
                f[30 + k] = uint8_t(d >> (24 - 8 * k));
            }
            const uint16_t sp = dir ? 53 : uint16_t(1024 + i % 50000),
                           dp = dir ? uint16_t(1024 + i % 50000) : 53;
            f[34] = uint8_t(sp >> 8);
            f[35] = uint8_t(sp);
            f[36] = uint8_t(dp >> 8);
            f[37] = uint8_t(dp);
            b.add(off, 16 + 60, 1700000000000000000ull + uint64_t(i) * 1000, 0, f, 60, 60);
            off += 76;
        }
    }
    *capture_bytes = off;
    return b.serialize(off);
}

size_t rows_of(const index::Index& idx, uint32_t budget, std::string& out) {
    auto fl = idx.flows();
    if (!idx.check_flows(0, fl.size())) return 0;
    if (budget == 0) {
        for (const auto& f : fl) storage::append_flow_row(out, "bench", "/data/cap.pcap", 1, f);
        return fl.size();
    }
    auto rows = storage::budget_flows(fl, budget);
    for (const auto& r : rows)
        storage::append_flow_row(out, "bench", "/data/cap.pcap", 1, r.f, r.agg, r.nflows);
    return rows.size();
}

void ReadBack(benchmark::State& st) {
    uint64_t cap = 0;
    const std::string bytes = build_index(int(st.range(0)), &cap);
    const auto dir =
        std::filesystem::temp_directory_path() / ("catalog_bench." + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    const std::string capture = (dir / "cap.pcap").string();
    {
        std::FILE* f = std::fopen(index::index_path_for(capture).c_str(), "wb");
        std::fwrite(bytes.data(), 1, bytes.size(), f);
        std::fclose(f);
    }
    std::string out;
    for (auto _ : st) {
        auto idx = index::Index::load(index::index_path_for(capture), ~0ull);
        if (!idx) {
            st.SkipWithError("load failed");
            break;
        }
        out.clear();
        benchmark::DoNotOptimize(rows_of(*idx, 0, out));
    }
    std::filesystem::remove_all(dir);
    st.counters["flows/s"] = benchmark::Counter(double(st.range(0)) * double(st.iterations()),
                                                benchmark::Counter::kIsRate);
}

void FromMemory(benchmark::State& st) {
    uint64_t cap = 0;
    const std::string bytes = build_index(int(st.range(0)), &cap);
    const uint32_t budget = st.range(1) > 0 ? uint32_t(st.range(1)) : 0;
    std::string out;
    for (auto _ : st) {
        st.PauseTiming();
        std::string handed = bytes;  // the writer's buffer, moved in below
        st.ResumeTiming();
        auto idx = index::Index::from_bytes(std::move(handed), ~0ull);
        if (!idx) {
            st.SkipWithError("from_bytes failed");
            break;
        }
        out.clear();
        benchmark::DoNotOptimize(rows_of(*idx, budget, out));
    }
    st.counters["row_bytes/flow"] = double(out.size()) / double(st.range(0));
    st.counters["flows/s"] = benchmark::Counter(double(st.range(0)) * double(st.iterations()),
                                                benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(ReadBack)->Arg(1000)->Arg(100000)->Unit(benchmark::kMicrosecond);
BENCHMARK(FromMemory)->Args({1000, 0})->Args({100000, 0})->Unit(benchmark::kMicrosecond);
BENCHMARK(FromMemory)->Name("Budget")->Args({100000, 4096})->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
