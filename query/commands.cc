#include "query/commands.hh"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "filters/cbpf_to_ebpf.hh"
#include "index/prune.hh"
#include "query/merge.hh"
#include "query/store.hh"
#include "query/time_spec.hh"

namespace linecap::query {

namespace {

using filters::ClassicInsn;

constexpr uint64_t kMaxRangeBytes = 16u << 20;

int fail(const std::string& msg) {
    std::fprintf(stderr, "capq: %s\n", msg.c_str());
    return 1;
}

/* The expression compiled once per (link type, snap length). */
class Programs {
public:
    explicit Programs(std::string expr) : expr_(std::move(expr)) {}
    bool empty() const { return expr_.empty(); }
    Result<const std::vector<ClassicInsn>*> get(uint16_t linktype, uint32_t snaplen) {
        auto key = std::make_pair(linktype, snaplen);
        auto it = progs_.find(key);
        if (it != progs_.end()) return &it->second;
        auto r = filters::compile_classic(expr_, linktype, snaplen);
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
    size_t candidates = 0;  // flows evaluated
    size_t total = 0;

    std::string how() const {
        if (looked_up)
            return "flows looked up by " + std::to_string(addresses) + " address" +
                   (addresses == 1 ? "" : "es") + ": " + std::to_string(candidates) +
                   " candidates, " + std::to_string(flows.size()) + " may match";
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
    bool lookup = !progs.empty() && !ifs.empty();
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
    for (const auto& a : addrs) f.index.flows_with_address(a.data(), cand);
    std::sort(cand.begin(), cand.end());
    cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
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

/* The output file: written hidden beside OUT and renamed when whole. */
struct OutFile {
    int fd = STDOUT_FILENO;
    bool direct = false;  // written in place (not a regular file)
    std::string final_path, tmp_path;
    ~OutFile() {
        if (!tmp_path.empty()) {
            ::close(fd);
            ::unlink(tmp_path.c_str());
        } else if (direct) {
            ::close(fd);
        }
    }
    Status open(const std::string& path) {
        final_path = path;
        // A device, a pipe or a socket (-w /dev/null, a FIFO) is written as
        // it is, as tcpdump does; so is the file a symbolic link names.
        // Renaming over them would replace the device or the link.
        struct stat st;
        if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
            if (S_ISDIR(st.st_mode)) return make_error(EISDIR, path + ": is a directory");
            fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | (S_ISLNK(st.st_mode) ? O_TRUNC : 0));
            if (fd < 0) {
                int e = errno;
                fd = STDOUT_FILENO;
                return make_error(e, path + ": " + std::strerror(e));
            }
            direct = true;
            return {};
        }
        auto slash = path.rfind('/');
        std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
        std::string leaf = slash == std::string::npos ? path : path.substr(slash + 1);
        std::string tmp = dir + "." + leaf + ".capq-" + std::to_string(::getpid());
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
            int e = errno;
            fd = STDOUT_FILENO;
            return make_error(e, path + ": " + std::strerror(e));
        }
        tmp_path = tmp;
        return {};
    }
    Status commit() {
        if (tmp_path.empty()) return {};
        if (::fsync(fd) != 0 || ::rename(tmp_path.c_str(), final_path.c_str()) != 0)
            return make_error(errno, final_path + ": " + std::strerror(errno));
        ::close(fd);
        tmp_path.clear();
        return {};
    }
};

}  // namespace

int run_query(const QueryOptions& o) {
    const bool to_stdout = o.out.empty() || o.out == "-";
    const bool plan_only = o.explain && o.out.empty();
    if (to_stdout && !plan_only && ::isatty(STDOUT_FILENO))
        return fail("not writing a capture to a terminal: use -w FILE, or a pipe");
    auto opened = Store::open(o.inputs);
    if (!opened) return fail(opened.error());
    Store& store = *opened;
    Programs progs(o.expression);

    // The expression first: a bad one is one line and no output.
    uint16_t linktype = 1;
    uint32_t snaplen = 0;
    bool nano = false, mixed = false, any = false;
    for (auto& f : store.files()) {
        const auto& info = f.reader->info();
        if (info.format != index::CaptureFormat::kPcapMicro) nano = true;
        for (const auto& itf : info.interfaces) {
            if (any && itf.linktype != linktype) mixed = true;
            if (!any) linktype = itf.linktype;
            any = true;
            snaplen = std::max(snaplen, itf.snaplen);
            if (!progs.empty())
                if (auto p = progs.get(itf.linktype, itf.snaplen); !p) return fail(p.error());
        }
    }
    if (!any && !progs.empty())
        if (auto p = progs.get(1, 262144); !p) return fail(p.error());
    if (snaplen == 0) snaplen = 262144;
    if (mixed && o.format == OutFormat::kPcap && !plan_only)
        return fail("the inputs have different link types: use --format pcapng");

    if (Status s = store.index(stderr, false); !s) return fail(s.error());

    std::vector<ReadRange> ranges;
    std::vector<FilePlan> plans;
    for (auto& f : store.files()) {
        std::string damaged;
        auto p = plan_file(f, progs, o, ranges, damaged);
        if (p && !damaged.empty()) {
            // Read the capture instead: its index, built here, is whole.
            if (Status s = store.rescan(f, stderr, damaged); !s) return fail(s.error());
            damaged.clear();
            p = plan_file(f, progs, o, ranges, damaged);
        }
        if (!p) return fail(p.error());
        if (!damaged.empty()) return fail(f.path + ": " + damaged);
        plans.push_back(std::move(*p));
    }
    if (o.explain) print_explain(to_stdout && !plan_only ? stderr : stdout, store, plans, o);
    if (plan_only) return 0;
    order_ranges(ranges);

    OutFile of;
    if (!to_stdout)
        if (Status s = of.open(o.out); !s) return fail(s.error());
    std::signal(SIGPIPE, SIG_IGN);
    CaptureOutput out(of.fd, o.format, nano, linktype, snaplen);
    Status werr = out.start();
    MergeQueue queue;
    auto emit = [&](const PendingPacket& p) {
        werr = out.packet(p.out_if, p.ts_ns, p.data, p.caplen, p.wirelen);
        return bool(werr);
    };
    std::string rerr;
    for (size_t ri = 0; ri < ranges.size(); ri++) {
        const ReadRange& r = ranges[ri];
        if (!werr || !queue.emit_before(r.min_ns, emit)) break;
        StoreFile& f = store.files()[r.file];
        if (ri + 1 < ranges.size()) {
            // The next range comes from the disk while this one is read.
            const ReadRange& n = ranges[ri + 1];
            store.files()[n.file].reader->will_need(n.begin, std::min(n.end, n.begin + (4u << 20)));
        }
        uint32_t last_if = UINT32_MAX;  // the program of the last interface seen
        const std::vector<ClassicInsn>* last_prog = nullptr;
        auto res = f.reader->for_each(r.begin, r.end, [&](const index::Record& rec) {
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
    }
    if (rerr.empty() && werr) queue.drain(emit);
    if (werr) werr = out.finish();
    if (!werr) {
        // The reader of a pipe went away (`capq ... | head`): not an error.
        if (werr.code() == EPIPE) return 0;
        return fail((to_stdout ? std::string("stdout") : o.out) + ": " + werr.error());
    }
    if (!rerr.empty()) return fail(rerr);
    if (Status s = of.commit(); !s) return fail(s.error());
    return 0;
}

int run_flows(const QueryOptions& o) {
    auto opened = Store::open(o.inputs);
    if (!opened) return fail(opened.error());
    Store& store = *opened;
    Programs progs(o.expression);
    for (auto& f : store.files())
        for (const auto& itf : f.reader->info().interfaces)
            if (!progs.empty())
                if (auto p = progs.get(itf.linktype, itf.snaplen); !p) return fail(p.error());
    if (store.files().empty() && !progs.empty())
        if (auto p = progs.get(1, 262144); !p) return fail(p.error());
    if (Status s = store.index(stderr, true); !s) return fail(s.error());

    struct Agg {
        index::FlowKey key;
        uint64_t first_ns, last_ns, packets, bytes;
    };
    std::map<std::string, Agg> by_key;
    for (auto& f : store.files()) {
        std::string damaged;
        auto m = matching_flows(f, progs, o, damaged);
        if (m && !damaged.empty()) {
            if (Status s = store.rescan(f, stderr, damaged); !s) return fail(s.error());
            damaged.clear();
            m = matching_flows(f, progs, o, damaged);
        }
        if (!m) return fail(m.error());
        if (!damaged.empty()) return fail(f.path + ": " + damaged);
        for (size_t i : m->flows) {
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
        }
    }
    std::vector<Agg> rows;
    for (auto& [k, a] : by_key) rows.push_back(a);
    std::stable_sort(rows.begin(), rows.end(),
                     [](const Agg& a, const Agg& b) { return a.first_ns < b.first_ns; });
    if (o.json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& a : rows) {
            nlohmann::json j;
            j["flow"] = index::describe_flow(a.key);
            // Both directions of a conversation are one flow: src/sport is
            // the lower endpoint, not the sender.
            j["directions"] = "both";
            j["first"] = format_time(int64_t(a.first_ns));
            j["last"] = format_time(int64_t(a.last_ns));
            j["first_ns"] = a.first_ns;
            j["last_ns"] = a.last_ns;
            j["packets"] = a.packets;
            j["bytes"] = a.bytes;
            if (a.key.kind == index::FlowKind::kIp) {
                char s[64], d[64];
                const int af = a.key.ip_version == 6 ? AF_INET6 : AF_INET;
                ::inet_ntop(af, a.key.src, s, sizeof s);
                ::inet_ntop(af, a.key.dst, d, sizeof d);
                j["proto"] = a.key.proto;
                j["src"] = s;
                j["dst"] = d;
                if (a.key.flags & index::kFlowHasPorts) {
                    j["sport"] = a.key.sport;
                    j["dport"] = a.key.dport;
                }
            }
            if (a.key.kind != index::FlowKind::kOpaque) j["ethertype"] = a.key.ethertype;
            nlohmann::json vl = nlohmann::json::array();
            for (int t = 0; t < a.key.vlan_tags && t < 2; t++) vl.push_back(a.key.vid[t]);
            j["vlan"] = vl;
            arr.push_back(std::move(j));
        }
        std::printf("%s\n", arr.dump(2).c_str());
        return 0;
    }
    std::printf("%-30s  %-30s  %10s  %14s  %s\n", "FIRST", "LAST", "PACKETS", "BYTES",
                "FLOW (both directions)");
    for (const auto& a : rows)
        std::printf("%-30s  %-30s  %10llu  %14llu  %s\n", format_time(int64_t(a.first_ns)).c_str(),
                    format_time(int64_t(a.last_ns)).c_str(), (unsigned long long)a.packets,
                    (unsigned long long)a.bytes, index::describe_flow(a.key).c_str());
    return 0;
}

int run_reindex(const std::vector<std::string>& files) {
    if (files.empty()) return fail("--reindex: expected FILE...");
    int rc = 0;
    for (const auto& path : files) {
        auto r = index::CaptureReader::open(path);
        if (!r) {
            rc = fail(r.error().find(path) == std::string::npos ? path + ": " + r.error()
                                                                : r.error());
            continue;
        }
        if (r->codec() != index::Codec::kNone) {
            // Its blocks would have to be found frame by frame; capd indexes
            // the files it compresses as it writes them.
            rc = fail(path + ": compressed (" + index::codec_name(r->codec()) +
                      "); --reindex reads uncompressed files only");
            continue;
        }
        uint64_t end = 0;
        bool seq = false;
        const uint64_t size = r->info().size;
        auto built = build_index(*r, size, end, seq, size);
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
        const auto span = check->bytes();
        Status s = index::write_index_file(dfd, leaf, span, 0644);
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
