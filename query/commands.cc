#include "query/commands.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <thread>

#include "filters/cbpf_to_ebpf.hh"
#include "index/builder.hh"
#include "index/codec.hh"
#include "index/prune.hh"
#include "query/flow_json.hh"
#include "query/merge.hh"
#include "query/read_ahead.hh"
#include "query/store.hh"
#include "query/time_spec.hh"

namespace linecap::query {

namespace {

using filters::ClassicInsn;

constexpr uint64_t kMaxRangeBytes = 16u << 20;
/* Threads planning files at once (run_query()): enough to keep a disk's
 * queue busy with the small dependent reads of index lookups. */
constexpr unsigned kPlanThreads = 16;

/* Runs job(i) for every i in [0, n) on up to `threads` threads, the calling
 * one included, and returns when all are done. Fewer threads when they
 * cannot be started (then the caller's thread does the rest). */
void for_each_parallel(size_t n, unsigned threads, const std::function<void(size_t)>& job) {
    std::atomic<size_t> next{0};
    auto run = [&] {
        for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) job(i);
    };
    std::vector<std::thread> pool;
    for (size_t t = 1; t < std::min<size_t>(threads, n); t++) {
        try {
            pool.emplace_back(run);
        } catch (const std::system_error&) {
            break;
        }
    }
    run();
    for (auto& t : pool) t.join();
}

int fail(const std::string& msg) {
    std::fprintf(stderr, "capq: %s\n", msg.c_str());
    return 1;
}

/* The expression compiled once per (link type, snap length). get() and
 * flow_filter() compile on first use: one thread. Once every pair the
 * inputs have was asked for (the first loop of run_query()), they only
 * look up, and the planning threads call them at once. */
class Programs {
public:
    explicit Programs(std::string expr) : expr_(std::move(expr)) {}
    bool empty() const { return expr_.empty(); }
    Result<const std::vector<ClassicInsn>*> get(uint16_t linktype, uint32_t snaplen) {
        auto key = std::make_pair(linktype, snaplen);
        auto it = progs_.find(key);
        if (it != progs_.end()) return &it->second;
        // capq --serve compiles in several request threads at once; libpcap's
        // compiler is not documented as thread-safe.
        static std::mutex compile_mu;
        std::unique_lock<std::mutex> lock(compile_mu);
        auto r = filters::compile_classic(expr_, linktype, snaplen);
        lock.unlock();
        if (!r) return make_error(r.code(), expr_ + ": " + r.error());
        return &progs_.emplace(key, std::move(*r)).first->second;
    }
    /* The pruning filter for a link type (compiled for `snaplen`). */
    Result<const index::FlowFilter*> flow_filter(uint16_t linktype, uint32_t snaplen) {
        auto it = flow_filters_.find(linktype);
        if (it != flow_filters_.end()) return it->second.get();
        auto p = get(linktype, snaplen);
        if (!p) return p.failure();
        auto ff = std::make_unique<index::FlowFilter>(**p, linktype);
        return flow_filters_.emplace(linktype, std::move(ff)).first->second.get();
    }

private:
    std::string expr_;
    std::map<std::pair<uint16_t, uint32_t>, std::vector<ClassicInsn>> progs_;
    std::map<uint16_t, std::unique_ptr<index::FlowFilter>> flow_filters_;
};

/* What the plan chose in one file, for --explain. */
struct FilePlan {
    uint64_t blocks = 0, blocks_selected = 0;
    uint64_t bytes = 0, bytes_selected = 0;
    uint64_t flows = 0, flows_matching = 0;
    std::string flows_how;  // how the flows were chosen (FlowChoice::how())
    std::string note;       // "read in order", "live index", ...
};

/* The flows of a file that may match, and how they were found. */
struct FlowChoice {
    std::vector<size_t> flows;  // ascending
    bool looked_up = false;     // by address (FlowFilter::required_addresses())
    size_t addresses = 0;
    size_t pairs = 0;       // looked up by address pairs (required_pairs())
    size_t candidates = 0;  // flows evaluated
    size_t total = 0;

    std::string how() const {
        auto count = [](size_t n, const char* one, const char* many) {
            return std::to_string(n) + " " + (n == 1 ? one : many);
        };
        const std::string found = count(candidates, "candidate", "candidates") + ", " +
                                  std::to_string(flows.size()) + " may match";
        if (looked_up && pairs != 0)
            return "flows looked up by " + count(pairs, "address pair", "address pairs") + ": " +
                   found;
        if (looked_up)
            return "flows looked up by " + count(addresses, "address", "addresses") + ": " + found;
        return "flows evaluated: all " + std::to_string(total) + ", " +
               std::to_string(flows.size()) + " may match";
    }
};

/* Flows of f that may match and overlap the window. When every interface's
 * filter proves a set of addresses (required_addresses()), only the non-IP
 * flows and the flows with one of those addresses can match: those are
 * looked up in the index (flows_with_address(), binary searches) and
 * evaluated; else every flow is. An index read from its file is verified
 * as it is used (index_file.hh), only the entries read: a damaged one sets
 * `damaged` to why, and returns no flows. */
Result<FlowChoice> matching_flows(StoreFile& f, Programs& progs, const QueryOptions& o,
                                  std::string& damaged) {
    FlowChoice c;
    const auto flows = f.index.flows();
    c.total = flows.size();
    const auto& ifs = f.reader->info().interfaces;
    std::vector<std::array<uint8_t, 16>> addrs;
    index::AddressPairs pairs;
    bool lookup = !progs.empty() && !ifs.empty(), by_pair = lookup;
    for (const auto& itf : ifs) {
        if (!lookup) break;
        auto r = progs.flow_filter(itf.linktype, itf.snaplen);
        if (!r) return r.failure();
        const auto& req = (*r)->required_addresses();
        if (!req) {
            lookup = false;
            break;
        }
        addrs.insert(addrs.end(), req->begin(), req->end());
        if (const auto& rp = (*r)->required_pairs())
            pairs.insert(pairs.end(), rp->begin(), rp->end());
        else
            by_pair = false;
    }
    auto consider = [&](size_t i) -> Status {
        const index::FlowEntry& fe = flows[i];
        if (fe.first_ns >= o.until_ns || fe.last_ns < o.since_ns) return {};
        if (!progs.empty()) {
            c.candidates++;
            const index::FlowFilter* ff = nullptr;
            for (const auto& itf : ifs)
                if (itf.linktype == fe.key.linktype) {
                    auto r = progs.flow_filter(itf.linktype, itf.snaplen);
                    if (!r) return r.failure();
                    ff = *r;
                    break;
                }
            if (ff != nullptr && !ff->eval(fe.key).may_accept) return {};
        }
        c.flows.push_back(i);
        return {};
    };
    if (!lookup) {
        if (Status s = f.index.check_flows(0, flows.size()); !s) {
            damaged = s.error();
            return FlowChoice{};
        }
        for (size_t i = 0; i < flows.size(); i++)
            if (Status s = consider(i); !s) return s.failure();
        return c;
    }
    std::sort(addrs.begin(), addrs.end());
    addrs.erase(std::unique(addrs.begin(), addrs.end()), addrs.end());
    c.looked_up = true;
    c.addresses = addrs.size();
    std::vector<uint32_t> cand;
    const size_t non_ip = std::min(f.index.non_ip_flows(), flows.size());
    for (size_t i = 0; i < non_ip; i++) cand.push_back(static_cast<uint32_t>(i));
    if (by_pair) {
        // Every flow that can match is between the two addresses of a
        // pair: found by source alone (flows_with_pair()).
        std::sort(pairs.begin(), pairs.end());
        pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
        c.pairs = pairs.size();
        for (const auto& [a, b] : pairs) f.index.flows_with_pair(a.data(), b.data(), cand);
    } else {
        for (const auto& a : addrs) f.index.flows_with_address(a.data(), cand);
    }
    std::sort(cand.begin(), cand.end());
    cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
    f.index.prefetch_flows(cand);
    for (uint32_t i : cand) {
        // A damaged page makes the lookup give every flow: refused here.
        if (Status s = f.index.check_flows(i, 1); !s) {
            damaged = s.error();
            return FlowChoice{};
        }
        if (Status s = consider(i); !s) return s.failure();
    }
    return c;
}

/* Whether reading f's flow table can pay for itself, from a sample of it.
 *
 * A filter the index cannot look up by address (`tcp`, `port 80`) has every
 * flow of the file evaluated, which reads the whole flow table and the
 * postings: about as many bytes as the rest of the index. When most flows
 * may match and every block holds many flows, that only confirms that every
 * block must be read (for `tcp` on a mixed store, 99+ %), and on a cold
 * cache it delays the scan by the table's reads. So kSampleRuns runs of
 * kSampleRun consecutive flows, spread over the table, are evaluated first
 * (a few pages); with p the share that may match and F the mean number of
 * flows per block (postings over blocks), a block holds no matching flow
 * with a chance of about (1 - p)^F; if the bytes that would save, over the
 * blocks in the window, are fewer than the flow table's and postings'
 * bytes, and at least half the sample may match, the table is not read
 * and every block in the window is. Only what
 * is read changes: every packet read still goes through the filter. The
 * sampled pages are verified as any others (`damaged` as matching_flows()).
 * Returns true (and fills `how`) to skip the table. */
constexpr size_t kSampleRuns = 8;
constexpr size_t kSampleRun = 256;

Result<bool> table_does_not_pay(StoreFile& f, Programs& progs, const QueryOptions& o,
                                std::string& how, std::string& damaged) {
    const auto flows = f.index.flows();
    const auto blocks = f.index.blocks();
    const size_t n = flows.size();
    if (n < 4 * kSampleRuns * kSampleRun || blocks.empty()) return false;
    const auto& ifs = f.reader->info().interfaces;
    bool by_address = !ifs.empty();
    for (const auto& itf : ifs) {
        auto r = progs.flow_filter(itf.linktype, itf.snaplen);
        if (!r) return r.failure();
        by_address = by_address && (*r)->required_addresses();
    }
    if (by_address) return false;  // looked up by address: a few pages anyway
    size_t sampled = 0, may = 0;
    for (size_t k = 0; k < kSampleRuns; k++) {
        const size_t first = (n - kSampleRun) * k / (kSampleRuns - 1);
        if (Status s = f.index.check_flows(first, kSampleRun); !s) {
            damaged = s.error();
            return false;
        }
        for (size_t i = first; i < first + kSampleRun; i++) {
            const index::FlowEntry& fe = flows[i];
            sampled++;
            const index::FlowFilter* ff = nullptr;
            for (const auto& itf : ifs)
                if (itf.linktype == fe.key.linktype) {
                    auto r = progs.flow_filter(itf.linktype, itf.snaplen);
                    if (!r) return r.failure();
                    ff = *r;
                    break;
                }
            if (ff == nullptr || ff->eval(fe.key).may_accept) may++;
        }
    }
    const index::IndexHeader& h = f.index.header();
    const double p = double(may) / double(sampled);
    const double per_block = double(h.postings_count) / double(blocks.size());
    const double none = std::pow(1.0 - p, per_block);
    uint64_t window = 0;
    for (const auto& b : blocks)
        if (b.packets > 0 && b.min_ns < o.until_ns && b.max_ns >= o.since_ns) window += b.bytes;
    const double table = double(n) * sizeof(index::FlowEntry) + double(h.postings_count) * 4.0;
    // The estimate assumes the matching flows spread over the blocks; a
    // few that cluster in time (a burst) defeat it, so it is trusted only
    // when most flows may match: then reading every block costs no more
    // than the scan a user would otherwise run.
    if (2 * may < sampled || none * double(window) >= table) return false;
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "flows sampled: %zu of %zu may match, %.0f flows per block: every block read, "
                  "flow table not (it would skip about %.2g%% of the bytes)",
                  may, sampled, per_block, 100.0 * none);
    how = buf;
    return true;
}

/* Chooses f's ranges to read; `damaged` as matching_flows() (then no
 * range is added). */
Result<FilePlan> plan_file(StoreFile& f, Programs& progs, const QueryOptions& o,
                           std::vector<ReadRange>& ranges, std::string& damaged) {
    FilePlan p;
    const auto blocks = f.index.blocks();
    p.blocks = blocks.size();
    p.flows = f.index.flows().size();
    for (const auto& b : blocks) p.bytes += b.bytes;
    const uint64_t data_start = f.reader->info().data_start;
    if (f.sequential) {
        p.note = "read in order (interfaces or sections after the first packet)";
        p.blocks_selected = p.blocks;
        p.bytes_selected = p.bytes;
        p.flows_matching = p.flows;
        p.flows_how = "flows not used";
        uint64_t min_ns = UINT64_MAX;
        for (const auto& b : blocks) min_ns = std::min(min_ns, b.min_ns);
        if (!blocks.empty()) ranges.push_back({f.order, data_start, f.valid_end, min_ns});
        return p;
    }
    std::vector<char> sel(blocks.size(), 0);
    if (progs.empty()) {
        // Time alone: the blocks' times decide, no flow is looked at.
        if (f.index.live()) p.note = "live index: time only";
        p.flows_how = "flows not looked at (no expression)";
        std::fill(sel.begin(), sel.end(), 1);
    } else if (f.index.live()) {
        p.note = "live index: time only";
        p.flows_how = "no flows in a live index";
        std::fill(sel.begin(), sel.end(), 1);
    } else if (auto skip = table_does_not_pay(f, progs, o, p.flows_how, damaged); !skip) {
        return skip.failure();
    } else if (!damaged.empty()) {
        return p;
    } else if (*skip) {
        p.flows_matching = p.flows;
        std::fill(sel.begin(), sel.end(), 1);
    } else {
        auto m = matching_flows(f, progs, o, damaged);
        if (!m) return m.failure();
        if (!damaged.empty()) return p;
        p.flows_matching = m->flows.size();
        p.flows_how = m->how();
        for (size_t i : m->flows) {
            if (Status s = f.index.check_postings(i); !s) {
                damaged = s.error();
                return p;
            }
            for (uint32_t b : f.index.blocks_of(i))
                if (b < sel.size()) sel[b] = 1;
        }
    }
    ReadRange cur{f.order, 0, 0, UINT64_MAX};
    bool open = false;
    for (size_t i = 0; i < blocks.size(); i++) {
        const index::BlockEntry& b = blocks[i];
        const bool take = sel[i] && b.packets > 0 && b.min_ns < o.until_ns &&
                          b.max_ns >= o.since_ns && b.offset + b.bytes <= f.valid_end;
        if (!take) continue;
        p.blocks_selected++;
        p.bytes_selected += b.bytes;
        if (open && cur.end == b.offset && cur.end - cur.begin + b.bytes <= kMaxRangeBytes) {
            cur.end += b.bytes;
            cur.min_ns = std::min(cur.min_ns, b.min_ns);
            continue;
        }
        if (open) ranges.push_back(cur);
        cur = ReadRange{f.order, b.offset, b.offset + b.bytes, b.min_ns};
        open = true;
    }
    if (open) ranges.push_back(cur);
    return p;
}

std::string percent(uint64_t a, uint64_t b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f%%", b == 0 ? 0.0 : 100.0 * double(a) / double(b));
    return buf;
}

void print_explain(FILE* out, Store& store, const std::vector<FilePlan>& plans,
                   const QueryOptions& o) {
    std::fprintf(out, "capq plan: expression \"%s\", window [%s, %s)\n", o.expression.c_str(),
                 o.since_ns == 0 ? "-" : format_time(int64_t(o.since_ns)).c_str(),
                 o.until_ns == UINT64_MAX ? "-" : format_time(int64_t(o.until_ns)).c_str());
    uint64_t tb = 0, tbs = 0, tk = 0, tks = 0, indexed = 0, scanned = 0;
    for (size_t i = 0; i < plans.size(); i++) {
        const StoreFile& f = store.files()[i];
        const FilePlan& p = plans[i];
        std::string how = f.indexed ? "indexed" : "scanned (" + f.scan_reason + ")";
        (f.indexed ? indexed : scanned)++;
        std::fprintf(out,
                     "  %s: %s%s%s; blocks %llu of %llu selected; bytes %llu of %llu selected "
                     "(%s), %llu skipped; %s\n",
                     f.path.c_str(), how.c_str(), p.note.empty() ? "" : ", ", p.note.c_str(),
                     (unsigned long long)p.blocks_selected, (unsigned long long)p.blocks,
                     (unsigned long long)p.bytes_selected, (unsigned long long)p.bytes,
                     percent(p.bytes_selected, p.bytes).c_str(),
                     (unsigned long long)(p.bytes - p.bytes_selected), p.flows_how.c_str());
        tb += p.blocks;
        tbs += p.blocks_selected;
        tk += p.bytes;
        tks += p.bytes_selected;
    }
    for (const auto& ig : store.ignored())
        std::fprintf(out, "  ignored: %s (%s)\n", ig.path.c_str(), ig.why.c_str());
    std::fprintf(out,
                 "total: %zu files (%llu indexed, %llu scanned), %zu ignored; blocks %llu of %llu "
                 "selected; bytes %llu of %llu selected (%s), %llu skipped\n",
                 plans.size(), (unsigned long long)indexed, (unsigned long long)scanned,
                 store.ignored().size(), (unsigned long long)tbs, (unsigned long long)tb,
                 (unsigned long long)tks, (unsigned long long)tk, percent(tks, tk).c_str(),
                 (unsigned long long)(tk - tks));
}

}  // namespace

namespace {

/* The query: run_query's and stream_query's. explain_to: where --explain's
 * plan goes (nullptr: none); plan_only: stop after it. */
QueryOutcome query(const QueryOptions& o, const QueryStream& stream, FILE* explain_to,
                   bool plan_only) {
    using F = QueryOutcome::Failure;
    QueryOutcome oc;
    auto failed = [&](F f, std::string msg, int code = EINVAL) {
        oc.failure = f;
        oc.error = std::move(msg);
        oc.code = code;
        return oc;
    };
    auto opened = Store::open(o.inputs, o.opened);
    if (!opened) return failed(F::kStore, opened.error());
    Store& store = *opened;
    Programs progs(o.expression);

    // The expression first: a bad one is one line and no output.
    uint16_t linktype = 1;
    uint32_t snaplen = 0;
    bool nano = stream.force_nano, mixed = false, any = false;
    for (auto& f : store.files()) {
        const auto& info = f.reader->info();
        if (info.format != index::CaptureFormat::kPcapMicro) nano = true;
        for (const auto& itf : info.interfaces) {
            if (any && itf.linktype != linktype) mixed = true;
            if (!any) linktype = itf.linktype;
            any = true;
            snaplen = std::max(snaplen, itf.snaplen);
            if (!progs.empty()) {
                if (auto p = progs.get(itf.linktype, itf.snaplen); !p)
                    return failed(F::kRequest, p.error());
                if (auto p = progs.flow_filter(itf.linktype, itf.snaplen); !p)
                    return failed(F::kRequest, p.error());
            }
        }
    }
    if (!any && !progs.empty())
        if (auto p = progs.get(1, 262144); !p) return failed(F::kRequest, p.error());
    if (snaplen == 0) snaplen = 262144;
    if (mixed && o.format == OutFormat::kPcap && !plan_only)
        return failed(F::kRequest, "the inputs have different link types: use --format pcapng");

    // Every file's index is read and its plan made on a few threads: a cold
    // index costs a chain of dependent reads (the lookups' binary searches),
    // and the chains of different files then wait on the disk together
    // instead of one after the other. Each job touches its own file only.
    struct Planned {
        Status status;
        F failure = F::kStore;  // what a failed status is
        std::string warning;
        FilePlan plan;
        std::vector<ReadRange> ranges;
    };
    std::vector<Planned> planned(store.files().size());
    for_each_parallel(planned.size(), kPlanThreads, [&](size_t i) {
        StoreFile& f = store.files()[i];
        Planned& pl = planned[i];
        if (Status s = Store::index_file(f, pl.warning, false); !s) {
            pl.status = s;
            return;
        }
        std::string damaged;
        auto p = plan_file(f, progs, o, pl.ranges, damaged);
        if (p && !damaged.empty()) {
            // Read the capture instead: its index, built here, is whole.
            if (Status s = Store::rescan(f, pl.warning, damaged); !s) {
                pl.status = s;
                return;
            }
            damaged.clear();
            pl.ranges.clear();
            p = plan_file(f, progs, o, pl.ranges, damaged);
        }
        if (!p) {
            pl.status = Status(p.failure());
            pl.failure = F::kRequest;
        } else if (!damaged.empty()) {
            pl.status = make_error(EINVAL, f.path + ": " + damaged);
        } else {
            pl.plan = std::move(*p);
        }
    });
    std::vector<ReadRange> ranges;
    std::vector<FilePlan> plans;
    for (Planned& pl : planned) {
        // Warnings in file order; the first file that failed ends the query.
        std::fputs(pl.warning.c_str(), stream.warn);
        if (!pl.status) return failed(pl.failure, pl.status.error());
        ranges.insert(ranges.end(), pl.ranges.begin(), pl.ranges.end());
        plans.push_back(std::move(pl.plan));
    }
    if (explain_to != nullptr) print_explain(explain_to, store, plans, o);
    if (plan_only) return oc;
    order_ranges(ranges);

    if (stream.on_start)
        if (Status s = stream.on_start(); !s) return failed(F::kOutput, s.error(), s.code());
    oc.started = true;
    CaptureOutput out(stream.sink, o.format, nano, linktype, snaplen);
    Status werr = out.start();
    MergeQueue queue;
    auto emit = [&](const PendingPacket& p) {
        if (out.packets() >= stream.max_packets ||
            out.bytes() + out.record_bytes(p.caplen) > stream.max_bytes) {
            oc.cut = true;
            return false;
        }
        werr = out.packet(p.out_if, p.ts_ns, p.data, p.caplen, p.wirelen);
        return bool(werr);
    };
    std::string rerr;
    // The plan is asked for from the disk ahead of this thread, by a thread
    // of its own (query/read_ahead.hh): long stretches and many small
    // ranges alike keep several chunks in flight while this one filters and
    // writes.
    std::vector<ReadAhead::Span> spans;
    spans.reserve(ranges.size());
    for (const ReadRange& r : ranges) {
        const index::CaptureReader& rd = *store.files()[r.file].reader;
        spans.push_back(ReadAhead::Span{rd.plain_fd(), r.begin, r.end});
    }
    ReadAhead ahead(std::move(spans));
    if (ahead.running())
        for (StoreFile& f : store.files()) f.reader->set_window_read_ahead(false);
    for (size_t ri = 0; ri < ranges.size(); ri++) {
        const ReadRange& r = ranges[ri];
        if (!werr || !queue.emit_before(r.min_ns, emit)) break;
        StoreFile& f = store.files()[r.file];
        const uint64_t at = ahead.position(ri) - r.begin;  // plan position of file offset 0
        uint32_t last_if = UINT32_MAX;                     // the program of the last interface seen
        const std::vector<ClassicInsn>* last_prog = nullptr;
        auto res = f.reader->for_each(r.begin, r.end, [&](const index::Record& rec) {
            ahead.consumed(at + rec.offset + rec.rec_bytes);
            if (rec.ts_ns < o.since_ns || rec.ts_ns >= o.until_ns) return true;
            const auto& ifs = f.reader->info().interfaces;
            if (rec.if_id >= ifs.size()) return true;  // no interface block: libpcap skips it too
            const auto& itf = ifs[rec.if_id];
            if (!progs.empty()) {
                if (rec.if_id != last_if) {
                    auto p = progs.get(itf.linktype, itf.snaplen);
                    if (!p) {
                        rerr = p.error();
                        return false;
                    }
                    last_prog = *p;
                    last_if = rec.if_id;
                }
                if (filters::classic_run(*last_prog, rec.data, rec.wirelen, rec.caplen) == 0)
                    return true;
            }
            if (o.format == OutFormat::kPcap && itf.linktype != linktype) {
                rerr = f.path + ": link type " + std::to_string(itf.linktype) +
                       " differs from the first input's " + std::to_string(linktype) +
                       ": use --format pcapng";
                return false;
            }
            auto oi = out.interface(itf.linktype, itf.snaplen);
            if (!oi) {
                werr = Status(oi.failure());
                return false;
            }
            PendingPacket pp;
            pp.ts_ns = rec.ts_ns;
            pp.file = f.order;
            pp.offset = rec.offset;
            pp.out_if = *oi;
            pp.wirelen = rec.wirelen;
            pp.caplen = rec.caplen;
            pp.data = rec.data;
            queue.push(pp);
            return true;
        });
        if (!res) rerr = res.error();
        if (!rerr.empty()) break;
        ahead.consumed(ahead.position(ri + 1));
    }
    if (rerr.empty() && werr && !oc.cut) queue.drain(emit);
    if (werr) werr = out.finish();
    oc.packets = out.packets();
    oc.bytes = out.bytes();
    if (!werr) return failed(F::kOutput, werr.error(), werr.code());
    if (!rerr.empty()) return failed(F::kStore, rerr);
    return oc;
}

Status write_all(int fd, const uint8_t* p, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = ::write(fd, p + done, n - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return make_error(e, std::string("write: ") + std::strerror(e));
        }
        done += size_t(w);
    }
    return {};
}

}  // namespace

QueryOutcome stream_query(const QueryOptions& o, const QueryStream& stream) {
    return query(o, stream, nullptr, false);
}

int run_query(const QueryOptions& o) {
    const bool to_stdout = o.out.empty() || o.out == "-";
    const bool plan_only = o.explain && o.out.empty();
    if (to_stdout && !plan_only && ::isatty(STDOUT_FILENO))
        return fail("not writing a capture to a terminal: use -w FILE, or a pipe");
    OutFile of;
    QueryStream st;
    st.sink = [&of](const uint8_t* p, size_t n) { return write_all(of.fd, p, n); };
    // The file is made only once the query is known to be good.
    st.on_start = [&]() -> Status {
        std::signal(SIGPIPE, SIG_IGN);
        if (!to_stdout) return of.open(o.out);
        return {};
    };
    FILE* explain_to = nullptr;
    if (o.explain) explain_to = to_stdout && !plan_only ? stderr : stdout;
    QueryOutcome oc = query(o, st, explain_to, plan_only);
    using F = QueryOutcome::Failure;
    if (oc.failure == F::kOutput) {
        if (!oc.started) return fail(oc.error);
        // The reader of a pipe went away (`capq ... | head`): not an error.
        if (oc.code == EPIPE) return 0;
        return fail((to_stdout ? std::string("stdout") : o.out) + ": " + oc.error);
    }
    if (oc.failure != F::kNone) return fail(oc.error);
    if (plan_only) return 0;
    if (Status s = of.commit(); !s) return fail(s.error());
    return 0;
}

nlohmann::json flow_json(const index::FlowKey& key, uint64_t first_ns, uint64_t last_ns,
                         uint64_t packets, uint64_t bytes) {
    nlohmann::json j;
    j["flow"] = index::describe_flow(key);
    j["directions"] = "both";
    j["first"] = format_time(int64_t(first_ns));
    j["last"] = format_time(int64_t(last_ns));
    j["first_ns"] = first_ns;
    j["last_ns"] = last_ns;
    j["packets"] = packets;
    j["bytes"] = bytes;
    if (key.kind == index::FlowKind::kIp) {
        char s[64], d[64];
        const int af = key.ip_version == 6 ? AF_INET6 : AF_INET;
        ::inet_ntop(af, key.src, s, sizeof s);
        ::inet_ntop(af, key.dst, d, sizeof d);
        j["proto"] = key.proto;
        j["src"] = s;
        j["dst"] = d;
        if (key.flags & index::kFlowHasPorts) {
            j["sport"] = key.sport;
            j["dport"] = key.dport;
        }
    }
    if (key.kind != index::FlowKind::kOpaque) j["ethertype"] = key.ethertype;
    nlohmann::json vl = nlohmann::json::array();
    for (int t = 0; t < key.vlan_tags && t < 2; t++) vl.push_back(key.vid[t]);
    j["vlan"] = vl;
    return j;
}

int run_flows(const QueryOptions& o) {
    auto opened = Store::open(o.inputs);
    if (!opened) return fail(opened.error());
    Store& store = *opened;
    Programs progs(o.expression);
    // Compiled here, once, so that the threads below only read them.
    for (auto& f : store.files())
        for (const auto& itf : f.reader->info().interfaces)
            if (!progs.empty()) {
                if (auto p = progs.get(itf.linktype, itf.snaplen); !p) return fail(p.error());
                if (auto p = progs.flow_filter(itf.linktype, itf.snaplen); !p)
                    return fail(p.error());
            }
    if (store.files().empty() && !progs.empty())
        if (auto p = progs.get(1, 262144); !p) return fail(p.error());

    // Every file's index is read and its flows chosen on a few threads, as
    // stream_query() plans (a cold index is a chain of dependent reads);
    // warnings and failures then come out whole and in file order.
    struct Chosen {
        Status status;
        std::string warning;
        std::vector<size_t> flows;
    };
    std::vector<Chosen> chosen(store.files().size());
    for_each_parallel(chosen.size(), kPlanThreads, [&](size_t i) {
        StoreFile& f = store.files()[i];
        Chosen& c = chosen[i];
        if (Status s = Store::index_file(f, c.warning, true); !s) {
            c.status = s;
            return;
        }
        // The cut counts are listed too: a damaged section, like any
        // damaged page, means the file is read instead.
        if (Status s = f.index.check_cuts(); !s) {
            if (Status r = Store::rescan(f, c.warning, s.error()); !r) {
                c.status = r;
                return;
            }
        }
        std::string damaged;
        auto m = matching_flows(f, progs, o, damaged);
        if (m && !damaged.empty()) {
            if (Status s = Store::rescan(f, c.warning, damaged); !s) {
                c.status = s;
                return;
            }
            damaged.clear();
            m = matching_flows(f, progs, o, damaged);
        }
        if (!m) {
            c.status = m.failure();
        } else if (!damaged.empty()) {
            c.status = make_error(f.path + ": " + damaged);
        } else {
            c.flows = std::move(m->flows);
        }
    });

    struct Agg {
        index::FlowKey key;
        uint64_t first_ns, last_ns, packets, bytes;
        // Left out by capd's flow cutoff and dedup (index versions 3, 4).
        uint64_t cut_packets = 0, cut_bytes = 0, dup_packets = 0, dup_bytes = 0;
    };
    std::map<std::string, Agg> by_key;
    for (size_t n = 0; n < chosen.size(); n++) {
        std::fputs(chosen[n].warning.c_str(), stderr);
        if (!chosen[n].status) return fail(chosen[n].status.error());
        StoreFile& f = store.files()[n];
        for (size_t i : chosen[n].flows) {
            const index::FlowEntry& fe = f.index.flows()[i];
            std::string k(reinterpret_cast<const char*>(&fe.key), sizeof fe.key);
            auto [it, fresh] = by_key.try_emplace(
                k, Agg{fe.key, fe.first_ns, fe.last_ns, fe.packets, fe.wire_bytes});
            if (!fresh) {
                it->second.first_ns = std::min(it->second.first_ns, fe.first_ns);
                it->second.last_ns = std::max(it->second.last_ns, fe.last_ns);
                it->second.packets += fe.packets;
                it->second.bytes += fe.wire_bytes;
            }
            if (const index::CutEntry* c = f.index.cut_of(i)) {
                it->second.cut_packets += c->cut_packets;
                it->second.cut_bytes += c->cut_bytes;
                it->second.dup_packets += c->dup_packets;
                it->second.dup_bytes += c->dup_bytes;
            }
        }
    }
    std::vector<Agg> rows;
    for (auto& [k, a] : by_key) rows.push_back(a);
    std::stable_sort(rows.begin(), rows.end(),
                     [](const Agg& a, const Agg& b) { return a.first_ns < b.first_ns; });
    if (o.json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& a : rows) {
            nlohmann::json j = flow_json(a.key, a.first_ns, a.last_ns, a.packets, a.bytes);
            if (a.cut_packets) {
                j["cut_packets"] = a.cut_packets;
                j["cut_bytes"] = a.cut_bytes;
            }
            if (a.dup_packets) {
                j["duplicate_packets"] = a.dup_packets;
                j["duplicate_bytes"] = a.dup_bytes;
            }
            arr.push_back(std::move(j));
        }
        std::printf("%s\n", arr.dump(2).c_str());
        return 0;
    }
    std::printf("%-30s  %-30s  %10s  %14s  %s\n", "FIRST", "LAST", "PACKETS", "BYTES",
                "FLOW (both directions)");
    for (const auto& a : rows) {
        // What capd left out, after the flow, only when it left something.
        std::string left;
        if (a.cut_packets)
            left += "; cut " + std::to_string(a.cut_packets) + " packets " +
                    std::to_string(a.cut_bytes) + " bytes";
        if (a.dup_packets)
            left += "; duplicates " + std::to_string(a.dup_packets) + " packets " +
                    std::to_string(a.dup_bytes) + " bytes";
        std::printf("%-30s  %-30s  %10llu  %14llu  %s%s\n",
                    format_time(int64_t(a.first_ns)).c_str(),
                    format_time(int64_t(a.last_ns)).c_str(), (unsigned long long)a.packets,
                    (unsigned long long)a.bytes, index::describe_flow(a.key).c_str(), left.c_str());
    }
    return 0;
}

namespace {

/* The index (format version 2) of a compressed capture file, one block per
 * frame: what capd writes beside the file as it compresses it. Only a file
 * cut into frames of whole records can have one (capd's are: the header a
 * frame of its own, then each block of records one); any other (one frame
 * for the whole file, as `zstd file.pcap` writes, or frames cut inside
 * records) cannot be read a block at a time, so it gets an error saying
 * so. A frame cut short at the end (a file capd was writing when killed)
 * and the records in it are left out, as capd's recovery cuts them. The
 * file is decompressed once, into memory, listing its frames on the way;
 * the records are then walked there. */
Result<std::string> build_compressed_index(index::CaptureReader& r, bool& sequential,
                                           bool compact_flows) {
    std::vector<index::FrameExtent> frames;
    Status listed = r.inflate_listing_frames(frames);
    if (!listed) return listed.failure();
    const char* codec = index::codec_name(r.codec());
    const std::string frame = r.codec() == index::Codec::kGzip ? "member" : "frame";
    const std::string why = std::string("; it cannot be read a block at a time, so an index ") +
                            "would not help (decompress it and --reindex that)";
    const index::CaptureInfo& info = r.info();
    size_t j = 0;
    while (j < frames.size() && frames[j].raw_offset + frames[j].raw_bytes <= info.data_start) j++;
    if (j < frames.size() && frames[j].raw_offset != info.data_start)
        return make_error(EINVAL, std::string("the file header and packets share one ") + codec +
                                      " " + frame + why);
    std::vector<uint16_t> linktypes;
    for (const auto& i : info.interfaces) linktypes.push_back(i.linktype);
    index::IndexBuilder b;
    b.set_compact_flows(compact_flows);
    b.begin(info.format, linktypes, info.data_start);
    b.set_codec(r.codec());
    std::string bad;
    bool any = false;
    auto walked = r.for_each(info.data_start, ~0ull, [&](const index::Record& rec) {
        // Past the whole frames: a frame cut short, left out.
        if (j == frames.size()) return false;
        if (frames[j].raw_offset + frames[j].raw_bytes <= rec.offset) {
            if (frames[j].raw_offset + frames[j].raw_bytes != rec.offset) {
                bad = "a " + frame + " ends between packets, at stream offset " +
                      std::to_string(frames[j].raw_offset + frames[j].raw_bytes);
                return false;
            }
            b.end_block(frames[j].offset, static_cast<uint32_t>(frames[j].bytes));
            if (++j == frames.size()) return false;
        }
        if (rec.offset + rec.rec_bytes > frames[j].raw_offset + frames[j].raw_bytes) {
            // The last frame cut short holds the rest of this record: stop.
            if (j + 1 == frames.size()) {
                j = frames.size();
                return false;
            }
            bad = "a " + frame + " ends inside the packet at stream offset " +
                  std::to_string(rec.offset);
            return false;
        }
        b.add(rec.offset, rec.rec_bytes, rec.ts_ns, rec.if_id, rec.data, rec.caplen, rec.wirelen);
        any = true;
        return true;
    });
    if (!walked) return walked.failure();
    if (!bad.empty()) return make_error(EINVAL, bad + why);
    if (any && j < frames.size()) {
        // The frame of the last packets must end with them.
        if (frames[j].raw_offset + frames[j].raw_bytes != b.end())
            return make_error(EINVAL,
                              "the " + frame + " of the last packets holds more after them" + why);
        b.end_block(frames[j].offset, static_cast<uint32_t>(frames[j].bytes));
    }
    sequential = r.sequential();
    if (sequential) b.mark_sequential();
    // capture_bytes: the file's size on the disk, as capd writes it.
    return b.serialize(info.size);
}

}  // namespace

int run_reindex(const std::vector<std::string>& files, int index_version) {
    if (files.empty()) return fail("--reindex: expected FILE...");
    int rc = 0;
    for (const auto& path : files) {
        auto r = index::CaptureReader::open(path);
        if (!r) {
            rc = fail(r.error().find(path) == std::string::npos ? path + ": " + r.error()
                                                                : r.error());
            continue;
        }
        uint64_t end = 0;
        bool seq = false;
        const uint64_t size = r->info().size;
        const bool compact = index_version == 4;
        auto built = r->codec() != index::Codec::kNone
                         ? build_compressed_index(*r, seq, compact)
                         : build_index(*r, size, end, seq, size, compact);
        if (!built) {
            rc = fail(path + ": " + built.error());
            continue;
        }
        // The index describes the file as it is: whole records, and a tail
        // cut short (kept, as libpcap ignores it).
        std::string bytes = std::move(*built);
        auto check = index::Index::from_bytes(bytes, ~0ull);
        if (!check) {
            rc = fail(path + ": " + check.error());
            continue;
        }
        const std::string ipath = index::index_path_for(path);
        auto slash = ipath.rfind('/');
        const std::string dir = slash == std::string::npos ? "." : ipath.substr(0, slash);
        const std::string leaf = slash == std::string::npos ? ipath : ipath.substr(slash + 1);
        int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            rc = fail(dir + ": " + std::strerror(errno));
            continue;
        }
        // The index tells the file's flows: readable by whom the file is,
        // no one more.
        struct stat cst {};
        const unsigned mode = ::stat(path.c_str(), &cst) == 0 ? unsigned(cst.st_mode) & 0666 : 0600;
        const auto span = check->bytes();
        Status s = index::write_index_file(dfd, leaf, span, mode);
        ::close(dfd);
        if (!s) {
            rc = fail(ipath + ": " + s.error());
            continue;
        }
        const auto& h = check->header();
        std::printf("%s: %llu packets, %u blocks, %u flows%s\n", path.c_str(),
                    (unsigned long long)h.packets, h.block_count, h.flow_count,
                    seq ? " (read in order)" : "");
    }
    return rc;
}

}  // namespace linecap::query
