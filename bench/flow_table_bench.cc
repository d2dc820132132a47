/* Cost of the flow table (dataplane/flow_table.hh) on a worker: parse,
 * fetch or prefetch and verdict per packet, in bursts of kBurstSize (64) as
 * worker.cc runs them.
 *
 *   ./build/bench/flow_table_bench [benchmark flags]
 *
 *   Parse          parse_flow() alone on 64 Ki 64-byte IPv4 UDP frames: the header
 *                  walk and key hash every packet pays;
 *   ParseBothWays  the same frames, half of them (at random) their flow's
 *                  reply: which endpoint sent a packet is a coin toss, as
 *                  on a link carrying both ways;
 *   Hits/1024      1024 flows, cutoff on, a table of 262144: hot in cache;
 *                  the bucket prefetch only;
 *   HitsSlotStage/1024  the same with the slot stage (below), which a
 *                  table in cache pays for nothing;
 *   HitsFetch/1024  the same as worker.cc runs it: FlowTable::fetch(), the
 *                  burst's buckets then its slots as two runs of loads,
 *                  instead of prefetches;
 *   Flows/N        N distinct flows (64-byte frames, round robin: every
 *                  packet's slot was last touched N packets ago) in a table
 *                  of 2N: cache and TLB misses per packet, the line-rate
 *                  case with a million flows; the bucket prefetch only.
 *                  The flows entered the table in the order they are timed
 *                  in, so their slots come in order, as with
 *                  null:64,flows=N: the hardware prefetches them;
 *   FlowsSlotStage/N  the same with FlowTable::prefetch_slot() as a second
 *                  prefetch stage over the whole burst;
 *   FlowsFetch/N   the same with fetch() instead of prefetches (worker.cc
 *                  runs this);
 *   FlowsSlotAhead/N  prefetch_slot() 8 packets ahead of the verdicts
 *                  instead of the stage;
 *   FlowsScattered/N, FlowsScatteredSlotStage/N, FlowsScatteredFetch/N
 *                  Flows, FlowsSlotStage and FlowsFetch with the flows
 *                  entered in another (random) order than they are timed
 *                  in: each packet's slot at random in the table, as on a
 *                  real link, where slots are taken in the order flows
 *                  start and packets interleave otherwise;
 *   FlowsScatteredMoves/N  FlowsScatteredFetch with FlowConfig::lru_step_ns
 *                  300 ms: the bench's clock runs 31 ns a packet, so a
 *                  flow comes back every 33 ms at 2^20 flows and about one
 *                  packet in ten moves its flow to the LRU front, as in
 *                  capd at 9 Mpps with the 1 s default (the other Flows
 *                  runs end before any flow is due to move);
 *   FlowsShuffled/N  the same, the N flows in a fixed random order instead
 *                  of by address: a flow's neighbours in the LRU list are
 *                  then as random as its slot (round robin by address keeps
 *                  them next in the burst, as null:64,flows=N does);
 *   FlowsExactLru/N, FlowsShuffledExactLru/N  the two above with
 *                  FlowConfig::lru_step_ns 0: every hit moves its flow to
 *                  the LRU front, as the table did before the 1 s step;
 *   Evict          1048576 distinct flows through a 65536-flow table: every
 *                  packet evicts the oldest flow and starts its own;
 *   Dedup/1024     --dedup on: each packet's bytes hashed and compared.
 *   Cut/N          N flows (N = 64, 1024: hot; 1048576: every packet a miss) all
 *                  past their cutoff (--flow-packets 1, warmed): every packet
 *                  is cut, the verdict alone;
 *   CutNoted/N     the same, each cut packet also added to its flow's note
 *                  (dataplane/cut_ledger.hh), and the notes written into a
 *                  1 MiB chunk whenever the ledger is full, as the worker
 *                  does for the index: the difference with Cut/N is what the
 *                  index's cut counts cost the worker per cut packet.
 *   Worker/N/M/W   the table inside what the worker does around it, to
 *                  price the table in capd's worker against Flows/N: M a
 *                  mask, 1 the table (as Flows), 2 the null source's mbufs
 *                  rewritten into N flows, 4 each kept packet's record
 *                  copied into 1 MiB chunks out of the cache, 8 also the
 *                  burst's record lines prefetched for write before the
 *                  verdicts; W MB/s a second thread copies (capd's writer
 *                  beside the worker; 0 none). Worker/N/7 - Worker/N/6 is
 *                  what the table adds to the worker.
 *   RandomLines/K  the baseline the Flows runs are held against: per packet
 *                  K cache lines at random in an area the size of a table
 *                  at 2^20 flows (2^20 buckets of 64 bytes, 2^21 slots of
 *                  128), no table code: K = 1 the bucket (prefetched for
 *                  the whole burst first, as the worker does), 2 also a line
 *                  of the slot (its number read from the bucket, as a
 *                  lookup does: the hot line today), 3 also a second line
 *                  (as when every packet read both lines of a 128-byte
 *                  slot). What memory alone costs per packet. K = 4: the
 *                  bucket as 16 bytes of tags in an area of 8 MiB (2^19
 *                  buckets: a size the last-level cache could hold), then
 *                  the line of the way they name: whether buckets kept
 *                  small enough for the cache would save the bucket's miss.
 *   LinesWork/K/W/A  RandomLines/K with W rounds of register-only work a
 *                  packet (8 dependent multiply-adds a round) standing for
 *                  the table's instructions; K 0: the work alone. A 1: each
 *                  burst's buckets prefetched a burst early. Whether the
 *                  misses hide behind the work (K,W near the larger of K,0
 *                  and 0,W) or add to it (near their sum).
 *   HotLines/N/G/L  not the table: what a layout whose every lookup reads
 *                  only lines the hash names would cost (see HotLine
 *                  below): N flows scattered, each flow's counts in one
 *                  64-byte line of a group of G the hash picks, the
 *                  group's lines brought in (L 0: prefetched in the parse
 *                  loop; 1: as one run of loads after it, as fetch()),
 *                  then the cutoff verdict; counter evictions per packet (a group too full
 *                  for its flows: with G 1, the flows whose line another
 *                  took). Against FlowsScatteredFetch/N: what the bucket
 *                  line and the slot's second line cost.
 *   Chase/MiB      memory latency: each load depends on the one before, at
 *                  random in an area of that size (huge pages advised).
 * Counter: items_per_second (packets); per-packet time = 1 / that. The
 * Flows* runs also report huge_pages: 1 if the table got 2 MiB huge pages.
 * No EAL: the table maps its own memory (huge pages when free).
 */
#include <benchmark/benchmark.h>
#include <rte_memcpy.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "dataplane/cut_ledger.hh"
#include "dataplane/flow_table.hh"
#include "dataplane/null_flows.hh"
#include "dataplane/worker.hh"
#include "storage/chunk.hh"
#include "storage/format.hh"

namespace {

using linecap::dataplane::FlowConfig;
using linecap::dataplane::FlowPacket;
using linecap::dataplane::FlowTable;

constexpr size_t kFrame = 64;
constexpr int kBurst = linecap::dataplane::kBurstSize;  // as worker.cc

/* n 64-byte Ethernet/IPv4/UDP frames of n distinct flows in 198.18.0.0/15. */
std::vector<uint8_t> frames(size_t n) {
    std::vector<uint8_t> v(n * kFrame, 0);
    for (size_t i = 0; i < n; i++) {
        uint8_t* f = &v[i * kFrame];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16] = 0, f[17] = 50;
        f[22] = 64, f[23] = 17;
        f[26] = 198, f[27] = uint8_t(18 + ((i >> 16) & 1)), f[28] = uint8_t(i >> 8),
        f[29] = uint8_t(i);
        f[30] = 198, f[31] = 19, f[32] = 0, f[33] = 1;
        f[34] = uint8_t(1024 + (i >> 17)), f[35] = uint8_t(i >> 17), f[36] = 0, f[37] = 53;
    }
    return v;
}

/* The same frames with the flows in a fixed random order. */
std::vector<uint8_t> shuffled(size_t n) {
    auto v = frames(n);
    std::vector<uint32_t> order(n);
    for (size_t i = 0; i < n; i++) order[i] = uint32_t(i);
    std::shuffle(order.begin(), order.end(), std::mt19937(22));
    std::vector<uint8_t> out(v.size());
    for (size_t i = 0; i < n; i++) std::memcpy(&out[i * kFrame], &v[order[i] * kFrame], kFrame);
    return out;
}

/* Every packet of a burst given to FlowTable::fetch(). */
const auto kTakeAll = [] {
    std::array<uint8_t, kBurst> t;
    t.fill(1);
    return t;
}();

/* stages: 1 prefetch() in the parse loop; 2 then a prefetch_slot() pass;
 * 3 prefetch_slot() 8 packets ahead of the verdicts; 4 fetch(), its slots
 * given to packet() as hints, as worker.cc. */
void run(benchmark::State& state, FlowTable& t, const std::vector<uint8_t>& v, size_t n,
         int stages = 1) {
    constexpr int kAhead = 8;
    FlowPacket fl[kBurst];
    uint32_t found[kBurst] = {};  // no hints but with fetch()
    size_t at = 0;
    uint64_t ts = 1;
    for (auto _ : state) {
        const uint8_t* base = &v[at * kFrame];
        if (stages == 4) {
            for (int i = 0; i < kBurst; i++)
                linecap::dataplane::parse_flow(1, base + i * kFrame, kFrame, fl[i]);
            t.fetch(fl, kTakeAll.data(), kBurst, ts, found);
        } else {
            for (int i = 0; i < kBurst; i++) {
                linecap::dataplane::parse_flow(1, base + i * kFrame, kFrame, fl[i]);
                t.prefetch(fl[i]);
            }
        }
        if (stages == 2)
            for (int i = 0; i < kBurst; i++) t.prefetch_slot(fl[i]);
        if (stages == 3)
            for (int i = 0; i < kAhead; i++) t.prefetch_slot(fl[i]);
        for (int i = 0; i < kBurst; i++) {
            if (stages == 3 && i + kAhead < kBurst) t.prefetch_slot(fl[i + kAhead]);
            benchmark::DoNotOptimize(t.packet(fl[i], base + i * kFrame, kFrame, kFrame, ts,
                                              t.default_cutoff(), found[i]));
        }
        ts += 1000;
        at += kBurst;
        if (at + kBurst > n) at = 0;
    }
    state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
}

void parse(benchmark::State& state, bool both_ways) {
    // 64 Ki frames (4 MiB, read in order), so that ParseBothWays' random
    // directions repeat only every 64 Ki packets.
    constexpr size_t kFrames = 1 << 16;
    auto v = frames(kFrames);
    std::mt19937 coin(22);
    for (size_t i = 0; both_ways && i < kFrames; i++) {
        if (coin() & 1) continue;
        uint8_t* f = &v[i * kFrame];
        std::swap_ranges(f + 26, f + 30, f + 30);  // addresses
        std::swap_ranges(f + 34, f + 36, f + 36);  // ports
    }
    FlowPacket fl[kBurst];
    size_t at = 0;
    for (auto _ : state) {
        for (int i = 0; i < kBurst; i++)
            linecap::dataplane::parse_flow(1, &v[(at + i) * kFrame], kFrame, fl[i]);
        benchmark::DoNotOptimize(fl);
        at = (at + kBurst) % kFrames;
    }
    state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
}
void Parse(benchmark::State& state) { parse(state, false); }
void ParseBothWays(benchmark::State& state) { parse(state, true); }

void hits(benchmark::State& state, int stage) {
    const size_t n = size_t(state.range(0));
    auto v = frames(n);
    FlowConfig c;
    c.slots = 262144;
    c.cutoff_bytes = 20000;
    auto t = FlowTable::create(c);
    if (!t) return state.SkipWithError(t.error().c_str());
    run(state, **t, v, n, stage);
}
void Hits(benchmark::State& state) { hits(state, 1); }
void HitsSlotStage(benchmark::State& state) { hits(state, 2); }

void flows(benchmark::State& state, int stages, bool shuffle = false,
           uint64_t lru_step_ns = 1'000'000'000, bool scatter = false) {
    const size_t n = size_t(state.range(0));
    auto v = shuffle ? shuffled(n) : frames(n);
    // scatter: the flows enter the table in another order than they are
    // timed in, so that their slots are at random, as on a real link.
    const auto warm = scatter ? shuffled(n) : v;
    FlowConfig c;
    c.slots = uint32_t(2 * n);
    c.cutoff_bytes = 20000;
    c.lru_step_ns = lru_step_ns;
    auto t = FlowTable::create(c);
    if (!t) return state.SkipWithError(t.error().c_str());
    // Every flow in the table before timing: the steady state.
    FlowPacket p;
    for (size_t i = 0; i < n; i++) {
        linecap::dataplane::parse_flow(1, &warm[i * kFrame], kFrame, p);
        (*t)->packet(p, &warm[i * kFrame], kFrame, kFrame, 1);
    }
    run(state, **t, v, n, stages);
    state.counters["huge_pages"] = (*t)->huge_pages() ? 1 : 0;
}
void Flows(benchmark::State& state) { flows(state, 1); }
void FlowsSlotStage(benchmark::State& state) { flows(state, 2); }
void FlowsSlotAhead(benchmark::State& state) { flows(state, 3); }
void FlowsShuffled(benchmark::State& state) { flows(state, 1, true); }
constexpr uint64_t kStep = 1'000'000'000;  // FlowConfig::lru_step_ns's default
void FlowsExactLru(benchmark::State& state) { flows(state, 1, false, 0); }
void FlowsShuffledExactLru(benchmark::State& state) { flows(state, 1, true, 0); }
void FlowsScattered(benchmark::State& state) { flows(state, 1, false, kStep, true); }
void FlowsScatteredSlotStage(benchmark::State& state) { flows(state, 2, false, kStep, true); }
void FlowsScatteredFetch(benchmark::State& state) { flows(state, 4, false, kStep, true); }
void FlowsScatteredMoves(benchmark::State& state) { flows(state, 4, false, 300'000'000, true); }
void FlowsFetch(benchmark::State& state) { flows(state, 4); }
void HitsFetch(benchmark::State& state) { hits(state, 4); }

void Evict(benchmark::State& state) {
    const size_t n = 1 << 20;
    auto v = frames(n);
    FlowConfig c;
    c.slots = 65536;
    c.cutoff_bytes = 20000;
    auto t = FlowTable::create(c);
    if (!t) return state.SkipWithError(t.error().c_str());
    run(state, **t, v, n);
}

void Dedup(benchmark::State& state) {
    const size_t n = size_t(state.range(0));
    auto v = frames(n);
    FlowConfig c;
    c.slots = 262144;
    c.dedup_window_ns = 2000000;
    auto t = FlowTable::create(c);
    if (!t) return state.SkipWithError(t.error().c_str());
    run(state, **t, v, n);
}

/* Every packet of n flows cut; with `noted`, each noted as the worker does. */
void cut(benchmark::State& state, bool noted) {
    const size_t n = size_t(state.range(0));
    auto v = frames(n);
    FlowConfig c;
    c.slots = uint32_t(2 * n);
    c.cutoff_packets = 1;
    auto t = FlowTable::create(c);
    if (!t) return state.SkipWithError(t.error().c_str());
    FlowTable& ft = **t;
    FlowPacket p;
    for (size_t i = 0; i < n; i++) {
        linecap::dataplane::parse_flow(1, &v[i * kFrame], kFrame, p);
        ft.packet(p, &v[i * kFrame], kFrame, kFrame, 1);
    }
    auto ledger = std::make_unique<linecap::dataplane::CutLedger>();
    constexpr uint32_t kChunkBytes = 1 << 20;
    std::vector<uint64_t> mem((sizeof(linecap::storage::Chunk) + kChunkBytes) / 8);
    auto* chunk = new (mem.data()) linecap::storage::Chunk{};
    chunk->capacity = kChunkBytes;
    FlowPacket fl[kBurst];
    size_t at = 0;
    uint64_t ts = 2, chunks = 0;
    for (auto _ : state) {
        const uint8_t* base = &v[at * kFrame];
        for (int i = 0; i < kBurst; i++)
            linecap::dataplane::parse_flow(1, base + i * kFrame, kFrame, fl[i]);
        uint32_t found[kBurst];
        ft.fetch(fl, kTakeAll.data(), kBurst, ts, found);
        for (int i = 0; i < kBurst; i++) {
            const uint8_t* f = base + i * kFrame;
            if (ft.packet(fl[i], f, kFrame, kFrame, ts, ft.default_cutoff(), found[i]) ==
                    FlowTable::kKeep ||
                !noted)
                continue;
            if (!ledger->add(fl[i], f, kFrame, kFrame, ts, 0, false, kChunkBytes)) {
                ledger->seal(*chunk);  // the hand-over: the notes into the chunk
                benchmark::DoNotOptimize(chunk->notes());
                chunk->reset();
                chunks++;
                ledger->add(fl[i], f, kFrame, kFrame, ts, 0, false, kChunkBytes);
            }
        }
        ts += 1000;
        at += kBurst;
        if (at + kBurst > n) at = 0;
    }
    state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
    state.counters["chunks"] = double(chunks);
}

/* K random lines a packet over a table-sized area (see the top). */
/* Register-only work standing for the table's own instructions: `rounds`
 * of 8 dependent multiply-adds on one value. */
inline uint64_t busy_work(uint64_t v, int rounds) {
    for (int j = 0; j < rounds * 8; j++) v = v * 0x9e3779b97f4a7c15ull + (v >> 29);
    return v;
}

/* The lines of RandomLines/K (see the top) with `work` rounds of busy_work()
 * a packet after its loads; k 0: the work alone. ahead: each burst's
 * buckets are prefetched one burst early, before the previous burst's
 * loads, so that a whole burst's time hides their latency. */
void lines(benchmark::State& state, int k, int work, bool ahead) {
    constexpr size_t kBuckets = 1 << 20, kSlots = 1 << 21;
    constexpr size_t kBytes = kBuckets * 64 + kSlots * 128;
    bool huge = true;
    void* mem = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED) {
        huge = false;
        mem = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) return state.SkipWithError("mmap failed");
        madvise(mem, kBytes, MADV_HUGEPAGE);
    }
    auto* bytes = static_cast<uint8_t*>(mem);
    for (size_t i = 0; i < kBytes; i += 4096) bytes[i] = uint8_t(i >> 12);
    uint8_t* buckets = bytes;
    const uint8_t* slots = bytes + kBuckets * 64;
    // Each bucket names a random slot; a fixed random bucket per packet.
    std::mt19937 rng(22);
    for (size_t b = 0; b < kBuckets; b++) {
        const uint32_t s = uint32_t(rng() % kSlots);
        std::memcpy(buckets + b * 64, &s, 4);
    }
    constexpr size_t kPackets = 1 << 20;
    std::vector<uint32_t> bi(kPackets);
    for (size_t i = 0; i < kPackets; i++) bi[i] = uint32_t(rng() % kBuckets);
    auto prefetch = [&](size_t at) {
        if (k == 4)
            for (int i = 0; i < 32; i++)
                __builtin_prefetch(buckets + size_t(bi[at + i] & ((1u << 19) - 1)) * 16);
        else if (k > 0)
            for (int i = 0; i < 32; i++) __builtin_prefetch(buckets + size_t(bi[at + i]) * 64);
    };
    size_t at = 0;
    uint64_t sum = 0;
    if (ahead) prefetch(at);
    for (auto _ : state) {
        const size_t next = at + 64 > kPackets ? 0 : at + 32;
        prefetch(ahead ? next : at);
        for (int i = 0; i < 32; i++) {
            if (k == 4) {
                // 16 bytes of tags a bucket (2^19 buckets: 8 MiB), the way
                // read from them naming a line of the bucket's own 8.
                const size_t b = bi[at + i] & ((1u << 19) - 1);
                uint16_t w;
                std::memcpy(&w, buckets + b * 16, 2);
                sum += w;
                sum += slots[(b * 8 + (w & 7)) * 64];
            } else if (k >= 1) {
                uint32_t s;
                std::memcpy(&s, buckets + size_t(bi[at + i]) * 64, 4);
                sum += s;
                if (k >= 2) sum += slots[size_t(s) * 128];
                if (k >= 3) sum += slots[size_t(s) * 128 + 64];
            }
            if (work) sum += busy_work(bi[at + i], work);
        }
        at = next;
    }
    benchmark::DoNotOptimize(sum);
    state.SetItemsProcessed(int64_t(state.iterations()) * 32);
    state.counters["huge_pages"] = huge ? 1 : 0;
    munmap(mem, kBytes);
}

void RandomLines(benchmark::State& state) { lines(state, int(state.range(0)), 0, false); }
void LinesWork(benchmark::State& state) {
    lines(state, int(state.range(0)), int(state.range(1)), state.range(2) != 0);
}

/* Memory latency: loads that each depend on the one before, at random in
 * an area of N MiB (huge pages advised): one cycle through its lines. */
void Chase(benchmark::State& state) {
    const size_t lines = size_t(state.range(0)) << 14;  // MiB / 64 B
    const size_t n = lines * 8;                         // uint64_t words
    auto* a = static_cast<uint64_t*>(
        mmap(nullptr, n * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (a == MAP_FAILED) return state.SkipWithError("mmap failed");
    madvise(a, n * 8, MADV_HUGEPAGE);
    std::vector<uint32_t> order(lines);
    for (size_t i = 0; i < lines; i++) order[i] = uint32_t(i);
    std::shuffle(order.begin() + 1, order.end(), std::mt19937(22));
    for (size_t i = 0; i < lines; i++) a[size_t(order[i]) * 8] = order[(i + 1) % lines];
    uint64_t x = 0;
    for (auto _ : state) {
        for (int i = 0; i < 32; i++) x = a[x * 8];
    }
    benchmark::DoNotOptimize(x);
    state.SetItemsProcessed(int64_t(state.iterations()) * 32);
    munmap(a, n * 8);
}

/* A layout where a packet needs only lines its hash names: each flow's
 * counts in one 64-byte line, at one of the G lines of the group its hash
 * picks (groups of G lines side by side, 2N lines for N flows), the flow
 * named by a 64-bit hash instead of its key. The verdict of
 * FlowTable::packet() for the cutoff (both directions, SYN/FIN/RST kept),
 * no LRU list: a full group gives up its least recently seen line. What
 * such a table would cost, against FlowsScatteredSlotStage in the same
 * run; counter evictions: per packet, the groups too full for the flows
 * that hash there. */
struct alignas(64) HotLine {
    uint64_t id;  // 0: free
    uint32_t state, packets[2], spare;
    uint64_t bytes[2], cut_bytes, last_ns, pad;
};
static_assert(sizeof(HotLine) == 64);

void HotLines(benchmark::State& state) {
    const size_t n = size_t(state.range(0));
    const unsigned g = unsigned(state.range(1));
    const bool loads = state.range(2) != 0;
    const size_t lines = 2 * n;
    const size_t bytes = lines * sizeof(HotLine);
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
    bool huge = mem != MAP_FAILED;
    if (!huge) {
        mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) return state.SkipWithError("mmap failed");
        madvise(mem, bytes, MADV_HUGEPAGE);
    }
    std::memset(mem, 0, bytes);
    auto* t = static_cast<HotLine*>(mem);
    const size_t gmask = lines / g - 1;
    uint64_t evictions = 0;
    auto verdict = [&](const FlowPacket& p, uint32_t wirelen, uint64_t ts) {
        const uint64_t id = p.hash | 1;
        HotLine* grp = &t[(p.hash >> 7 & gmask) * g];
        HotLine* x = nullptr;
        HotLine* old = grp;
        for (unsigned w = 0; w < g; w++) {
            if (grp[w].id == id) {
                x = &grp[w];
                break;
            }
            if (grp[w].last_ns < old->last_ns) old = &grp[w];
        }
        if (!x) {
            if (old->id) evictions++;
            x = old;
            x->id = id;
            x->state = 1;
            x->packets[0] = x->packets[1] = 0;
            x->bytes[0] = x->bytes[1] = x->cut_bytes = 0;
        }
        x->last_ns = ts;
        const int d = p.a_sent ? 0 : 1;
        const bool over = x->bytes[0] + x->bytes[1] >= 20000;
        x->packets[d]++;
        x->bytes[d] += wirelen;
        if (over && !(p.tcp_flags & 0x07)) {
            x->state += 16;
            x->cut_bytes += wirelen;
            return 1;
        }
        return 0;
    };
    auto v = frames(n);
    const auto warm = shuffled(n);
    FlowPacket p;
    for (size_t i = 0; i < n; i++) {
        linecap::dataplane::parse_flow(1, &warm[i * kFrame], kFrame, p);
        verdict(p, kFrame, 1);
    }
    evictions = 0;
    FlowPacket fl[kBurst];
    size_t at = 0;
    uint64_t ts = 2;
    for (auto _ : state) {
        const uint8_t* base = &v[at * kFrame];
        for (int i = 0; i < kBurst; i++) {
            linecap::dataplane::parse_flow(1, base + i * kFrame, kFrame, fl[i]);
            if (!loads) {
                const auto* grp = reinterpret_cast<const char*>(&t[(fl[i].hash >> 7 & gmask) * g]);
                for (unsigned w = 0; w < g; w++) __builtin_prefetch(grp + w * 64, 1);
            }
        }
        if (loads) {
            // The groups' lines as one run of loads, as FlowTable::fetch().
            uint64_t sink = 0;
            for (int i = 0; i < kBurst; i++)
                for (unsigned w = 0; w < g; w++) sink += t[(fl[i].hash >> 7 & gmask) * g + w].id;
            benchmark::DoNotOptimize(sink);
        }
        for (int i = 0; i < kBurst; i++) benchmark::DoNotOptimize(verdict(fl[i], kFrame, ts));
        ts += 1000;
        at += kBurst;
        if (at + kBurst > n) at = 0;
    }
    state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
    state.counters["evictions"] = double(evictions) / double(state.iterations() * kBurst);
    state.counters["huge_pages"] = huge ? 1 : 0;
    munmap(mem, bytes);
}

/* The worker around the table (see the top): Worker/N/M, N flows round
 * robin through a table of 2N, M a mask of what the worker does besides:
 *   kTable    parse, fetch() and verdict (worker.cc's loops);
 *   kRewrite  the frames come from 512 buffers of an mbuf's size reused in
 *             turn (the null source's pool, through its per-core cache),
 *             each rewritten into its flow as null:64,flows=N does and its
 *             mbuf header line written as rx does;
 *   kCopy     each kept packet's record (pcap header, 64 bytes) copied into
 *             a 1 MiB chunk, its start stored at the chunk's end, chunks
 *             taken in turn from 64 (64 MiB, out of the cache as capd's
 *             ring of 256 is);
 *   kChunkAhead  with kCopy: the burst's record lines prefetched for write
 *             before the verdicts (their misses overlap the table's).
 */
enum : int { kTable = 1, kRewrite = 2, kCopy = 4, kChunkAhead = 8 };

/* The writer beside the worker: a thread copying 1 MiB blocks out of 64 MiB
 * into 256 MiB (capd's writer copying chunks into the page cache of a file
 * on /dev/shm) at `mb_s` MB/s, until destroyed. */
class WriterLoad {
public:
    explicit WriterLoad(uint64_t mb_s) {
        if (mb_s == 0) return;
        src_.assign(64 << 20, 1);
        dst_.assign(256 << 20, 0);
        th_ = std::thread([this, mb_s] {
            const auto t0 = std::chrono::steady_clock::now();
            uint64_t done = 0;
            size_t s = 0, d = 0;
            while (!stop_.load(std::memory_order_relaxed)) {
                std::memcpy(&dst_[d], &src_[s], 1 << 20);
                s = (s + (1 << 20)) % src_.size();
                d = (d + (1 << 20)) % dst_.size();
                done += 1 << 20;
                const auto due = t0 + std::chrono::microseconds(done / mb_s);
                std::this_thread::sleep_until(due);
            }
        });
    }
    ~WriterLoad() {
        stop_ = true;
        if (th_.joinable()) th_.join();
    }

private:
    std::vector<uint8_t> src_, dst_;
    std::atomic<bool> stop_{false};
    std::thread th_;
};

void Worker(benchmark::State& state) {
    const size_t n = size_t(state.range(0));
    const int mode = int(state.range(1));
    WriterLoad writer(uint64_t(state.range(2)));
    auto v = frames(n);
    FlowConfig c;
    c.slots = uint32_t(2 * n);
    c.cutoff_bytes = 20000;
    auto t = FlowTable::create(c);
    if (!t) return state.SkipWithError(t.error().c_str());
    FlowTable& ft = **t;
    FlowPacket p;
    for (size_t i = 0; i < n; i++) {
        // The flows the packets will carry: the null source's with kRewrite.
        if (mode & kRewrite)
            linecap::dataplane::null_flow_rewrite(&v[i * kFrame], kFrame, uint32_t(i));
        linecap::dataplane::parse_flow(1, &v[i * kFrame], kFrame, p);
        ft.packet(p, &v[i * kFrame], kFrame, kFrame, 1);
    }
    // The mbuf pool: 2176-byte buffers, data 256 bytes in (header, headroom).
    constexpr size_t kBufs = kBurst, kBuf = 2176, kData = 256;
    std::vector<uint8_t> pool(kBufs * kBuf + 64);
    uint8_t* pool0 = reinterpret_cast<uint8_t*>((uintptr_t(pool.data()) + 63) & ~uintptr_t(63));
    for (size_t b = 0; b < kBufs; b++) std::memcpy(pool0 + b * kBuf + kData, &v[0], kFrame);
    constexpr size_t kChunks = 64, kChunkBytes = 1 << 20;
    const size_t area = kChunks * (sizeof(linecap::storage::Chunk) + kChunkBytes);
    // On 2 MiB pages as a mempool on the EAL's huge pages is.
    void* cmem = mmap(nullptr, area, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (cmem == MAP_FAILED) return state.SkipWithError("mmap failed");
    madvise(cmem, area, MADV_HUGEPAGE);
    std::memset(cmem, 0, area);
    auto chunk_at = [&](size_t i) {
        auto* ch = reinterpret_cast<linecap::storage::Chunk*>(
            static_cast<uint8_t*>(cmem) + i * (sizeof(linecap::storage::Chunk) + kChunkBytes));
        ch->reset();
        ch->capacity = kChunkBytes;
        return ch;
    };
    size_t ci = 0;
    linecap::storage::Chunk* ch = chunk_at(0);
    linecap::storage::TsSplit split;
    const linecap::storage::Format fmt = linecap::storage::Format::kPcapNano;
    const uint8_t* data[kBurst];
    FlowPacket fl[kBurst];
    uint8_t keep[kBurst];
    size_t at = 0, buf = 0;
    uint32_t next_flow = 0;
    uint64_t ts = 1, kept = 0;
    for (auto _ : state) {
        for (int i = 0; i < kBurst; i++) {
            if (mode & kRewrite) {
                uint8_t* b = pool0 + buf * kBuf;
                buf = (buf + 1) % kBufs;
                std::memset(b, 0, 16);  // rx resets the mbuf's first line
                linecap::dataplane::null_flow_rewrite(b + kData, kFrame, next_flow);
                next_flow = next_flow + 1 == n ? 0 : next_flow + 1;
                data[i] = b + kData;
            } else {
                data[i] = &v[(at + i) * kFrame];
            }
            keep[i] = 1;
        }
        if ((mode & kCopy) && (mode & kChunkAhead)) {
            if (!ch->fits(kBurst * (16 + kFrame))) {
                ci = (ci + 1) % kChunks;
                ch = chunk_at(ci);
            }
            const uint8_t* d = ch->data() + ch->len;
            for (size_t o = 0; o < kBurst * (16 + kFrame); o += 64) __builtin_prefetch(d + o, 1);
        }
        if (mode & kTable) {
            for (int i = 0; i < kBurst; i++)
                linecap::dataplane::parse_flow(1, data[i], kFrame, fl[i]);
            uint32_t found[kBurst];
            ft.fetch(fl, kTakeAll.data(), kBurst, ts, found);
            for (int i = 0; i < kBurst; i++)
                keep[i] = ft.packet(fl[i], data[i], kFrame, kFrame, ts, ft.default_cutoff(),
                                    found[i]) == FlowTable::kKeep;
        }
        if (mode & kCopy) {
            for (int i = 0; i < kBurst; i++) {
                if (!keep[i]) continue;
                const uint32_t need = linecap::storage::record_size(fmt, kFrame);
                if (!ch->fits(need)) {
                    ci = (ci + 1) % kChunks;
                    ch = chunk_at(ci);
                }
                ch->starts()[-1 - int64_t(ch->packets)] = ch->len;
                uint8_t* dst = ch->data() + ch->len;
                dst +=
                    linecap::storage::encode_record_header(fmt, dst, ts, 0, kFrame, kFrame, split);
                rte_memcpy(dst, data[i], kFrame);
                ch->len += need;
                ch->packets++;
                kept++;
            }
        }
        ts += 1000;
        at += kBurst;
        if (at + kBurst > n) at = 0;
    }
    benchmark::DoNotOptimize(kept);
    state.SetItemsProcessed(int64_t(state.iterations()) * kBurst);
    state.counters["huge_pages"] = ft.huge_pages() ? 1 : 0;
    munmap(cmem, area);
}

void Cut(benchmark::State& state) { cut(state, false); }
void CutNoted(benchmark::State& state) { cut(state, true); }

BENCHMARK(Parse);
BENCHMARK(ParseBothWays);
BENCHMARK(Hits)->Arg(1024);
BENCHMARK(HitsSlotStage)->Arg(1024);
BENCHMARK(HitsFetch)->Arg(1024);
BENCHMARK(Flows)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(FlowsSlotStage)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(FlowsSlotAhead)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(FlowsShuffled)->Arg(1 << 20);
BENCHMARK(FlowsExactLru)->Arg(1 << 20);
BENCHMARK(FlowsShuffledExactLru)->Arg(1 << 20);
BENCHMARK(FlowsScattered)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(FlowsScatteredSlotStage)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(FlowsScatteredFetch)->Arg(1 << 16)->Arg(1 << 20);
BENCHMARK(FlowsScatteredMoves)->Arg(1 << 20);
BENCHMARK(FlowsFetch)->Arg(1 << 20);
BENCHMARK(Evict);
BENCHMARK(Dedup)->Arg(1024);
BENCHMARK(Cut)->Arg(64)->Arg(1024)->Arg(1 << 20);
BENCHMARK(CutNoted)->Arg(64)->Arg(1024)->Arg(1 << 20);
BENCHMARK(RandomLines)->Arg(1)->Arg(2)->Arg(3)->Arg(4);
BENCHMARK(LinesWork)->ArgsProduct({{0, 3}, {0, 2, 4}, {0, 1}});
BENCHMARK(HotLines)->ArgsProduct({{1 << 20}, {1, 2, 4}, {0, 1}});
BENCHMARK(Chase)->Arg(1)->Arg(8)->Arg(64)->Arg(320);
BENCHMARK(Worker)->ArgsProduct({{1 << 20},
                                {kTable, kRewrite, kCopy, kTable | kRewrite, kTable | kCopy,
                                 kRewrite | kCopy, kTable | kRewrite | kCopy,
                                 kTable | kRewrite | kCopy | kChunkAhead},
                                {0, 700}});

}  // namespace

BENCHMARK_MAIN();
