#include "ctl/diag/compare.hh"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <unordered_map>

#include "ctl/diag/capture_file.hh"
#include "ctl/diag/fmt.hh"

namespace linecap::ctl::diag {

namespace {

std::string ms(double ns) { return fmt("%.3f ms", ns / 1e6); }
std::string ms(int64_t ns) { return ms(static_cast<double>(ns)); }

const char* proto_name(uint8_t p) {
    switch (p) {
        case kProtoTcp: return "TCP";
        case kProtoUdp: return "UDP";
        case kProtoIcmp: return "ICMP";
        case kProtoIcmpv6: return "ICMPv6";
        default: return nullptr;
    }
}

std::string proto_label(uint8_t p) {
    const char* n = proto_name(p);
    return n != nullptr ? n : "IP proto " + std::to_string(p);
}

/* Identity of a packet, in A's addresses. */
struct IdKey {
    IpAddress src;
    IpAddress dst;
    uint32_t ip_id = 0;
    uint32_t seq = 0;
    uint32_t ack = 0;
    uint32_t payload_len = 0;
    uint16_t sport = 0;
    uint16_t dport = 0;
    uint16_t frag_offset = 0;
    uint8_t proto = 0;
    uint8_t flags = 0;

    bool operator==(const IdKey&) const = default;
};

uint64_t fnv1a(const uint8_t* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

struct IdKeyHash {
    size_t operator()(const IdKey& k) const {
        uint64_t h = fnv1a(k.src.bytes.data(), 16);
        h = fnv1a(k.dst.bytes.data(), 16, h);
        uint32_t w[6] = {k.ip_id,
                         k.seq,
                         k.ack,
                         k.payload_len,
                         static_cast<uint32_t>(k.sport) << 16 | k.dport,
                         static_cast<uint32_t>(k.frag_offset) << 16 |
                             static_cast<uint32_t>(k.proto) << 8 | k.flags};
        return fnv1a(reinterpret_cast<const uint8_t*>(w), sizeof w, h);
    }
};

struct DirKey {
    uint8_t proto = 0;
    Endpoint src;
    Endpoint dst;
    bool operator==(const DirKey& o) const = default;
};

/* Payload bytes that enter the identity: enough to tell segments of equal
 * length apart, few enough that a short snaplen still covers them. */
constexpr uint32_t kHashedPayload = 128;

constexpr uint32_t kNone = 0xffffffffu;

struct Rec {
    uint64_t ts = 0;
    uint64_t phash = 0;
    uint32_t frame = 0;
    uint32_t dir = 0;
    uint32_t next_same = kNone; /* next A record with the same identity */
    bool phash_known = false;
    bool matched = false;
};

/* A records of one identity, chained in time order through next_same. */
struct Candidates {
    uint32_t first_open = kNone; /* first record not yet matched */
    uint32_t tail = kNone;
};

struct DirKeyHash {
    size_t operator()(const DirKey& k) const {
        uint64_t h = fnv1a(k.src.addr.bytes.data(), 16);
        h = fnv1a(k.dst.addr.bytes.data(), 16, h);
        uint32_t w[2] = {static_cast<uint32_t>(k.src.port) << 16 | k.dst.port, k.proto};
        return fnv1a(reinterpret_cast<const uint8_t*>(w), sizeof w, h);
    }
};

struct DirAcc {
    DirectionResult res;
    bool saw_syn = false;
    std::vector<int64_t> deltas;
};

bool apply_nat(Endpoint& e, bool has_port, const std::vector<NatRule>& rules, bool a_to_b) {
    for (const NatRule& r : rules) {
        const Endpoint& from = a_to_b ? r.a : r.b;
        const Endpoint& to = a_to_b ? r.b : r.a;
        const bool from_port = a_to_b ? r.a_port : r.b_port;
        const bool to_port = a_to_b ? r.b_port : r.a_port;
        if (from.addr != e.addr) continue;
        if (from_port && (!has_port || from.port != e.port)) continue;
        e.addr = to.addr;
        if (to_port && has_port) e.port = to.port;
        return true;
    }
    return false;
}

DelayStats stats_of(std::vector<int64_t> v) {
    DelayStats s;
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    s.count = v.size();
    s.min = v.front();
    s.max = v.back();
    s.median = v[(v.size() - 1) / 2];
    size_t rank = (v.size() * 99 + 99) / 100; /* ceil(0.99 n) */
    s.p99 = v[rank - 1];
    return s;
}

struct Loader {
    const CompareOptions& opt;
    std::unordered_map<DirKey, uint32_t, DirKeyHash> dir_index;
    std::vector<DirAcc> dirs;
    std::unordered_map<IdKey, Candidates, IdKeyHash> by_id;
    std::vector<Rec> recs_a;
    std::vector<Rec> recs_b;

    uint32_t direction(uint8_t proto, const Endpoint& src, const Endpoint& dst, bool ports) {
        DirKey k{proto, src, dst};
        auto it = dir_index.find(k);
        if (it != dir_index.end()) return it->second;
        DirAcc acc;
        acc.res.proto = proto;
        acc.res.src = acc.res.src_b = src;
        acc.res.dst = acc.res.dst_b = dst;
        apply_nat(acc.res.src_b, ports, opt.nat, true);
        apply_nat(acc.res.dst_b, ports, opt.nat, true);
        dirs.push_back(std::move(acc));
        dir_index.emplace(k, static_cast<uint32_t>(dirs.size() - 1));
        return static_cast<uint32_t>(dirs.size() - 1);
    }

    /* Reads one capture; for B, matches each packet against A's. */
    void load(const std::string& path, bool is_b, FileReport& fr, uint64_t& ip, uint64_t& skipped,
              uint64_t& first_ts, uint64_t& last_ts) {
        auto cf = open_report_file(path, fr);
        if (!cf) return;
        const int lt = cf->linktype();
        RawPacket rp;
        DecodedPacket p;
        ReadStatus st;
        bool have_ts = false;
        while ((st = cf->next(rp)) == ReadStatus::kPacket) {
            if (!have_ts || rp.ts_ns < first_ts) first_ts = rp.ts_ns;
            if (!have_ts || rp.ts_ns > last_ts) last_ts = rp.ts_ns;
            have_ts = true;
            if (decode_packet(lt, rp.data, rp.caplen, p) != DecodeStatus::kOk) {
                skipped++;
                continue;
            }
            ip++;
            Endpoint src{p.src, p.has_ports ? p.sport : uint16_t{0}};
            Endpoint dst{p.dst, p.has_ports ? p.dport : uint16_t{0}};
            if (is_b) {
                apply_nat(src, p.has_ports, opt.nat, false);
                apply_nat(dst, p.has_ports, opt.nat, false);
            }
            Rec r;
            r.ts = rp.ts_ns;
            r.frame = rp.frame;
            r.dir = direction(p.proto, src, dst, p.has_ports);
            DirAcc& acc = dirs[r.dir];
            (is_b ? acc.res.at_b : acc.res.at_a)++;
            const bool tcp = p.proto == kProtoTcp && p.has_ports;
            if (tcp && (p.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn) acc.saw_syn = true;

            const uint32_t want = std::min(p.payload_len, kHashedPayload);
            if (p.payload_caplen >= want) {
                r.phash_known = true;
                r.phash = fnv1a(p.payload, want);
            }
            IdKey k;
            k.src = src.addr;
            k.dst = dst.addr;
            k.sport = src.port;
            k.dport = dst.port;
            k.proto = p.proto;
            k.ip_id = p.has_ip_id && !opt.ignore_ip_id ? p.ip_id : 0;
            k.frag_offset = p.frag_offset;
            k.payload_len = p.payload_len;
            if (tcp) {
                k.seq = p.seq;
                k.ack = p.ack;
                /* ECN bits may be rewritten on the way; the rest may not. */
                k.flags = p.tcp_flags & 0x3f;
            }
            if (!is_b) {
                const uint32_t idx = static_cast<uint32_t>(recs_a.size());
                Candidates& c = by_id[k];
                if (c.tail == kNone)
                    c.first_open = idx;
                else
                    recs_a[c.tail].next_same = idx;
                c.tail = idx;
                recs_a.push_back(r);
                continue;
            }
            auto it = by_id.find(k);
            if (it != by_id.end()) {
                Candidates& c = it->second;
                while (c.first_open != kNone && recs_a[c.first_open].matched) {
                    c.first_open = recs_a[c.first_open].next_same;
                }
                for (uint32_t i = c.first_open; i != kNone; i = recs_a[i].next_same) {
                    Rec& a = recs_a[i];
                    if (a.matched) continue;
                    if (a.phash_known && r.phash_known && a.phash != r.phash) continue;
                    a.matched = true;
                    r.matched = true;
                    acc.res.matched++;
                    /* Wraps rather than overflows on absurd timestamps. */
                    acc.deltas.push_back(static_cast<int64_t>(r.ts - a.ts));
                    break;
                }
            }
            recs_b.push_back(r);
        }
        finish_report_file(*cf, st, fr);
    }
};

std::string host_or_endpoint(const Endpoint& e, bool with_port, bool has_ports) {
    return with_port && has_ports ? to_string(e) : to_string(e.addr);
}

}  // namespace

Result<NatRule> parse_nat_rule(std::string_view text) {
    size_t eq = text.find('=');
    if (eq == std::string_view::npos) {
        return make_error("--nat '" + std::string(text) +
                          "': expected A_ADDR[:PORT]=B_ADDR[:PORT]");
    }
    NatRule r;
    if (!parse_endpoint(text.substr(0, eq), r.a, r.a_port)) {
        return make_error("--nat '" + std::string(text) + "': '" + std::string(text.substr(0, eq)) +
                          "' is not an address[:port]");
    }
    if (!parse_endpoint(text.substr(eq + 1), r.b, r.b_port)) {
        return make_error("--nat '" + std::string(text) + "': '" +
                          std::string(text.substr(eq + 1)) + "' is not an address[:port]");
    }
    if (r.a.addr.family != r.b.addr.family) {
        return make_error("--nat '" + std::string(text) + "': both sides must be IPv4 or IPv6");
    }
    return r;
}

std::string finding_text(const Finding& f, size_t max_frames) {
    const char* seen = f.seen_at_a ? "A" : "B";
    const char* other = f.seen_at_a ? "B" : "A";
    std::string who = (f.proto == kProtoTcp ? std::string() : proto_label(f.proto) + " ") +
                      "packets from " + f.from + " to " + f.to;
    std::string frames;
    for (size_t i = 0; i < f.frames.size() && i < max_frames; i++) {
        frames += (i ? ", " : "") + std::to_string(f.frames[i]);
    }
    if (f.frames.size() > max_frames) frames += ", …";
    const std::string frame_word =
        std::string(f.seen_at_a ? "" : "B ") + (f.missing == 1 ? "frame " : "frames ");
    std::string out;
    if (f.missing == f.total) {
        out = who + " seen at " + seen + ", never at " + other + " (" + std::to_string(f.missing) +
              (f.missing == 1 ? " packet: " : " packets: ") + frame_word + frames + ")";
    } else {
        out = std::to_string(f.missing) + " of " + std::to_string(f.total) + " " + who +
              " seen at " + seen + " were never seen at " + other + " (" + frame_word + frames +
              ")";
    }
    const bool toward_other = f.seen_at_a ? f.travel == Travel::kAToB : f.travel == Travel::kBToA;
    const bool from_other = f.seen_at_a ? f.travel == Travel::kBToA : f.travel == Travel::kAToB;
    if (toward_other) {
        out +=
            fmt(": they travel %s->%s, so they were dropped between the two points", seen, other);
    } else if (from_other) {
        out +=
            fmt(": they travel %s->%s, yet %s never saw them: something between the points "
                "sent them (a firewall's or load balancer's RST?)",
                other, seen, other);
    }
    return out;
}

CompareReport compare_files(const std::string& path_a, const std::string& path_b,
                            const CompareOptions& opt) {
    CompareReport r;
    r.nat = opt.nat;
    Loader L{opt, {}, {}, {}, {}, {}};
    uint64_t a_first = 0, a_last = 0, b_first = 0, b_last = 0;
    L.load(path_a, false, r.a, r.ip_a, r.skipped_a, a_first, a_last);
    if (!r.a.opened || (!r.a.error.empty() && !r.a.truncated)) {
        /* Still say what is wrong with B, without reading all of it. */
        auto cf = CaptureFile::open(path_b);
        r.b.path = path_b;
        if (!cf) r.b.error = cf.error();
        return r;
    }
    L.load(path_b, true, r.b, r.ip_b, r.skipped_b, b_first, b_last);
    if (!r.b.opened || (!r.b.error.empty() && !r.b.truncated)) return r;

    for (const Rec& a : L.recs_a) {
        if (a.matched) {
            r.matched++;
        } else {
            r.a_only++;
            L.dirs[a.dir].res.a_only_frames.push_back(a.frame);
        }
    }
    for (const Rec& b : L.recs_b) {
        if (!b.matched) {
            r.b_only++;
            L.dirs[b.dir].res.b_only_frames.push_back(b.frame);
        }
    }
    for (DirAcc& d : L.dirs) d.res.delay = stats_of(d.deltas);

    /* Pair directions into flows, client->server first. */
    std::vector<std::pair<int64_t, int64_t>> flows_idx; /* dir indices, -1 if absent */
    std::vector<bool> used(L.dirs.size(), false);
    for (uint32_t i = 0; i < L.dirs.size(); i++) {
        if (used[i]) continue;
        used[i] = true;
        const DirectionResult& d = L.dirs[i].res;
        auto it = L.dir_index.find(DirKey{d.proto, d.dst, d.src});
        int64_t rev = -1;
        if (it != L.dir_index.end() && it->second != i) {
            rev = it->second;
            used[rev] = true;
        }
        bool forward_is_client;
        if (L.dirs[i].saw_syn)
            forward_is_client = true;
        else if (rev >= 0 && L.dirs[rev].saw_syn)
            forward_is_client = false;
        else
            forward_is_client = d.src.port >= d.dst.port;
        if (forward_is_client)
            flows_idx.emplace_back(i, rev);
        else
            flows_idx.emplace_back(rev, i);
    }

    /* Travel: of two matched directions, the one with the larger tB - tA
     * goes A->B (the difference is twice the one-way delay, whatever the
     * clock offset). */
    std::map<IpAddress, int> side_votes; /* >0: address is on A's side */
    auto set_travel = [&](int64_t i, Travel t, bool assumed) {
        if (i < 0) return;
        DirectionResult& d = L.dirs[i].res;
        d.travel = t;
        d.travel_assumed = assumed;
        if (!assumed) {
            side_votes[d.src.addr] += t == Travel::kAToB ? 1 : -1;
            side_votes[d.dst.addr] += t == Travel::kAToB ? -1 : 1;
        }
    };
    auto opposite = [](Travel t) { return t == Travel::kAToB ? Travel::kBToA : Travel::kAToB; };
    for (auto [f, b] : flows_idx) {
        if (f >= 0 && b >= 0 && L.dirs[f].res.matched > 0 && L.dirs[b].res.matched > 0) {
            Travel tf = L.dirs[f].res.delay.median >= L.dirs[b].res.delay.median ? Travel::kAToB
                                                                                 : Travel::kBToA;
            set_travel(f, tf, false);
            set_travel(b, opposite(tf), false);
        }
    }
    std::vector<int64_t> ab, ba;
    for (const DirAcc& d : L.dirs) {
        if (d.res.travel == Travel::kAToB) ab.insert(ab.end(), d.deltas.begin(), d.deltas.end());
        if (d.res.travel == Travel::kBToA) ba.insert(ba.end(), d.deltas.begin(), d.deltas.end());
    }
    DelayStats sab = stats_of(ab), sba = stats_of(ba);
    if (sab.count > 0 && sba.count > 0) {
        const __int128 dab = sab.min;                         /* min owd + offset */
        const __int128 dba = -static_cast<__int128>(sba.max); /* min owd - offset */
        r.offset_estimated = true;
        r.offset_ns = static_cast<int64_t>((dab - dba) / 2);
        r.min_owd_ns = static_cast<int64_t>((dab + dba) / 2);
    }
    /* Directions matched one way only: use the offset if known, else assume
     * the clocks agree; unmatched flows: which side their hosts are on. */
    for (auto [f, b] : flows_idx) {
        int64_t known = -1;
        for (int64_t i : {f, b}) {
            if (i >= 0 && L.dirs[i].res.travel != Travel::kUnknown) known = i;
        }
        if (known >= 0) continue;
        int64_t m = -1;
        for (int64_t i : {f, b}) {
            if (i >= 0 && L.dirs[i].res.matched > 0) m = i;
        }
        Travel t = Travel::kUnknown;
        int64_t from = -1;
        if (m >= 0) {
            const __int128 centred = static_cast<__int128>(L.dirs[m].res.delay.median) -
                                     (r.offset_estimated ? r.offset_ns : 0);
            t = centred >= 0 ? Travel::kAToB : Travel::kBToA;
            from = m;
        } else {
            for (int64_t i : {f, b}) {
                if (i < 0 || t != Travel::kUnknown) continue;
                const DirectionResult& d = L.dirs[i].res;
                int vote = side_votes[d.src.addr] - side_votes[d.dst.addr];
                if (vote != 0) {
                    t = vote > 0 ? Travel::kAToB : Travel::kBToA;
                    from = i;
                }
            }
        }
        if (t == Travel::kUnknown) continue;
        for (int64_t i : {f, b}) {
            if (i >= 0) set_travel(i, i == from ? t : opposite(t), true);
        }
    }
    ab.clear();
    ba.clear();
    for (const DirAcc& d : L.dirs) {
        if (d.res.travel == Travel::kAToB) ab.insert(ab.end(), d.deltas.begin(), d.deltas.end());
        if (d.res.travel == Travel::kBToA) ba.insert(ba.end(), d.deltas.begin(), d.deltas.end());
    }
    r.a_to_b = stats_of(ab);
    r.b_to_a = stats_of(ba);

    /* A-only packets from when B was not capturing (by B's first and last
     * packet, on A's clock). */
    const int64_t shift = r.offset_estimated ? r.offset_ns : 0;
    for (const Rec& a : L.recs_a) {
        if (a.matched || L.recs_b.empty()) continue;
        const __int128 at_b = static_cast<__int128>(a.ts) + shift;
        if (at_b < b_first || at_b > b_last) {
            L.dirs[a.dir].res.a_only_outside_b_span++;
        }
    }

    /* Findings: client ports merged, so retries from new ports add up. */
    struct Group {
        Finding f;
        bool travel_set = false;
        bool travel_mixed = false;
    };
    std::map<std::string, Group> groups;
    for (auto [fi, bi] : flows_idx) {
        for (int k = 0; k < 2; k++) {
            int64_t i = k == 0 ? fi : bi;
            if (i < 0) continue;
            const DirectionResult& d = L.dirs[i].res;
            const bool ports = d.src.port != 0 || d.dst.port != 0;
            /* k == 0: client->server, the server's port names the service. */
            const std::string from = host_or_endpoint(d.src, k == 1, ports);
            const std::string to = host_or_endpoint(d.dst, k == 0, ports);
            for (int side = 0; side < 2; side++) {
                const auto& frames = side == 0 ? d.a_only_frames : d.b_only_frames;
                if (frames.empty()) continue;
                std::string key =
                    std::to_string(side) + "|" + std::to_string(d.proto) + "|" + from + "|" + to;
                Group& g = groups[key];
                g.f.seen_at_a = side == 0;
                g.f.proto = d.proto;
                g.f.from = from;
                g.f.to = to;
                g.f.missing += frames.size();
                g.f.total += side == 0 ? d.at_a : d.at_b;
                g.f.frames.insert(g.f.frames.end(), frames.begin(), frames.end());
                if (!g.travel_set) {
                    g.f.travel = d.travel;
                    g.travel_set = true;
                } else if (g.f.travel != d.travel) {
                    g.travel_mixed = true;
                }
            }
        }
    }
    for (auto& [key, g] : groups) {
        if (g.travel_mixed) g.f.travel = Travel::kUnknown;
        std::sort(g.f.frames.begin(), g.f.frames.end());
        r.findings.push_back(std::move(g.f));
    }
    std::stable_sort(r.findings.begin(), r.findings.end(), [](const Finding& x, const Finding& y) {
        if (x.missing != y.missing) return x.missing > y.missing;
        if (x.seen_at_a != y.seen_at_a) return x.seen_at_a;
        return x.frames.front() < y.frames.front();
    });

    for (auto [f, b] : flows_idx) {
        FlowComparison fc;
        fc.proto = L.dirs[f >= 0 ? f : b].res.proto;
        if (f >= 0) fc.dir[0] = std::move(L.dirs[f].res);
        if (b >= 0) fc.dir[1] = std::move(L.dirs[b].res);
        if (f < 0) {
            fc.dir[0].proto = fc.proto;
            fc.dir[0].src = fc.dir[1].dst;
            fc.dir[0].dst = fc.dir[1].src;
            fc.dir[0].src_b = fc.dir[1].dst_b;
            fc.dir[0].dst_b = fc.dir[1].src_b;
        }
        if (b < 0) {
            fc.dir[1].proto = fc.proto;
            fc.dir[1].src = fc.dir[0].dst;
            fc.dir[1].dst = fc.dir[0].src;
            fc.dir[1].src_b = fc.dir[0].dst_b;
            fc.dir[1].dst_b = fc.dir[0].src_b;
        }
        r.flows.push_back(std::move(fc));
    }
    auto lost = [](const FlowComparison& fc) {
        return fc.dir[0].a_only_frames.size() + fc.dir[0].b_only_frames.size() +
               fc.dir[1].a_only_frames.size() + fc.dir[1].b_only_frames.size();
    };
    std::stable_sort(
        r.flows.begin(), r.flows.end(),
        [&](const FlowComparison& x, const FlowComparison& y) { return lost(x) > lost(y); });

    if (r.ip_b == 0 && r.ip_a > 0) {
        r.notes.push_back(
            "B holds no IP packets at all: was its capture running, on the "
            "interface the traffic takes, with a filter that lets it through?");
    } else if (r.matched == 0 && r.ip_a > 0 && r.ip_b > 0) {
        r.notes.push_back(
            "no packet matched: are these captures of the same traffic? With NAT "
            "between the points, map the addresses with --nat A_ADDR=B_ADDR; if a "
            "middlebox rewrites the IPv4 ID, add --ignore-ip-id");
    }
    uint64_t outside = 0;
    for (const auto& fc : r.flows) {
        outside += fc.dir[0].a_only_outside_b_span + fc.dir[1].a_only_outside_b_span;
    }
    if (outside > 0 && r.ip_b > 0) {
        r.notes.push_back(fmt("%" PRIu64 " of the packets seen only at A fall before B's first "
                              "or after B's last packet: if B was not capturing then, they are "
                              "not losses",
                              outside));
    }
    return r;
}

int compare_exit_status(const CompareReport& r) {
    for (const FileReport* f : {&r.a, &r.b}) {
        if (!f->opened || (!f->error.empty() && !f->truncated)) return 1;
    }
    return r.a.truncated || r.b.truncated ? 2 : 0;
}

namespace {

std::string delay_text(const DelayStats& s) {
    if (s.count == 0) return "no matched packets";
    return fmt("n=%" PRIu64 " min %s, median %s, p99 %s, max %s", s.count, ms(s.min).c_str(),
               ms(s.median).c_str(), ms(s.p99).c_str(), ms(s.max).c_str());
}

const char* travel_text(Travel t) {
    switch (t) {
        case Travel::kAToB: return "A->B";
        case Travel::kBToA: return "B->A";
        default: return "?";
    }
}

std::string frames_text(const std::vector<uint32_t>& v, size_t max) {
    std::string out;
    for (size_t i = 0; i < v.size() && i < max; i++) out += (i ? "," : "") + std::to_string(v[i]);
    if (v.size() > max) out += ",…";
    return out;
}

std::string nat_text(const NatRule& n) {
    return (n.a_port ? to_string(n.a) : to_string(n.a.addr)) +
           " (A) = " + (n.b_port ? to_string(n.b) : to_string(n.b.addr)) + " (B)";
}

std::string direction_line(const DirectionResult& d, const CompareTextOptions& opt) {
    std::string name = to_string(d.src) + " -> " + to_string(d.dst);
    if (d.src_b != d.src || d.dst_b != d.dst) {
        name += " (at B " + to_string(d.src_b) + " -> " + to_string(d.dst_b) + ")";
    }
    std::string out =
        "    " + name +
        fmt(": A %" PRIu64 ", B %" PRIu64 ", matched %" PRIu64, d.at_a, d.at_b, d.matched);
    if (!d.a_only_frames.empty()) {
        out += fmt(", A only %zu (frames %s)", d.a_only_frames.size(),
                   frames_text(d.a_only_frames, opt.max_frames).c_str());
    }
    if (!d.b_only_frames.empty()) {
        out += fmt(", B only %zu (B frames %s)", d.b_only_frames.size(),
                   frames_text(d.b_only_frames, opt.max_frames).c_str());
    }
    if (d.travel != Travel::kUnknown) {
        out += std::string(", travels ") + travel_text(d.travel) + (d.travel_assumed ? "?" : "");
    }
    out += "\n";
    if (d.delay.count > 0) out += "        tB - tA " + delay_text(d.delay) + "\n";
    return out;
}

}  // namespace

std::string format_compare_text(const CompareReport& r, const CompareTextOptions& opt) {
    std::string out;
    for (const FileReport* f : {&r.a, &r.b}) {
        const char* name = f == &r.a ? "A" : "B";
        if (!f->opened) {
            out += fmt("%s %s: unreadable\n", name, f->path.c_str());
            continue;
        }
        out += fmt("%s %s: %s, %s, %" PRIu64 " frames (%" PRIu64 " IP)%s\n", name, f->path.c_str(),
                   f->pcapng ? "pcapng" : "pcap", f->linktype.c_str(), f->frames,
                   f == &r.a ? r.ip_a : r.ip_b, f->truncated ? ", truncated" : "");
    }
    if (compare_exit_status(r) == 1) {
        out += "\nVERDICT: cannot compare: a capture could not be read\n";
        return out;
    }
    for (const NatRule& n : r.nat) out += "NAT: " + nat_text(n) + "\n";
    out +=
        fmt("matched %" PRIu64 " packets; %" PRIu64 " seen only at A; %" PRIu64 " seen only at B\n",
            r.matched, r.a_only, r.b_only);

    out += "\nDelay tB - tA (raw: timestamps as the two captures recorded them):\n";
    out += "  packets travelling A->B: " + delay_text(r.a_to_b) + "\n";
    out += "  packets travelling B->A: " + delay_text(r.b_to_a) + "\n";
    if (r.offset_estimated) {
        out += "  clock offset B - A estimated " + ms(r.offset_ns) +
               " (NTP-style: the fastest packet each way is assumed to take equal time); "
               "with it removed, the minimum one-way delay is " +
               ms(r.min_owd_ns) + " each way";
        if (r.a_to_b.count > 0) {
            out += ", A->B median " +
                   ms(static_cast<double>(r.a_to_b.median) - static_cast<double>(r.offset_ns));
        }
        if (r.b_to_a.count > 0) {
            out += ", B->A median " +
                   ms(static_cast<double>(r.offset_ns) - static_cast<double>(r.b_to_a.median));
        }
        out += "\n";
    } else if (r.matched > 0) {
        out +=
            "  clock offset not removed: packets matched in one direction only, so the "
            "offset cannot be told apart from the delay; the figures are only one-way delays "
            "if the two clocks agree\n";
    }

    if (!r.flows.empty()) {
        out +=
            "\nPer flow (A's addresses; client -> server first; \"travels A->B?\": inferred, "
            "not measured):\n";
        size_t shown = 0;
        for (const auto& fc : r.flows) {
            if (shown++ == opt.max_flows) {
                out += fmt("  … %zu more flows (--json lists them all)\n",
                           r.flows.size() - opt.max_flows);
                break;
            }
            out += "  " + proto_label(fc.proto) + " " + to_string(fc.dir[0].src) + " <-> " +
                   to_string(fc.dir[0].dst) + "\n";
            for (const auto& d : fc.dir) {
                if (d.at_a + d.at_b > 0) out += direction_line(d, opt);
            }
        }
    }
    for (const auto& n : r.notes) out += "\nnote: " + n + "\n";
    out += "\n";
    if (r.findings.empty()) {
        out += r.matched > 0 ? "VERDICT: every packet seen at A was seen at B, and every packet "
                               "seen at B was seen at A\n"
                             : "VERDICT: no packets to compare\n";
    } else {
        for (const auto& f : r.findings)
            out += "VERDICT: " + finding_text(f, opt.max_frames) + "\n";
    }
    return out;
}

namespace {

nlohmann::json delay_json(const DelayStats& s) {
    if (s.count == 0) return nullptr;
    return {{"count", s.count},
            {"min_ms", static_cast<double>(s.min) / 1e6},
            {"median_ms", static_cast<double>(s.median) / 1e6},
            {"p99_ms", static_cast<double>(s.p99) / 1e6},
            {"max_ms", static_cast<double>(s.max) / 1e6}};
}

nlohmann::json file_json(const FileReport& f, uint64_t ip) {
    return {{"path", f.path},
            {"readable", f.opened && (f.error.empty() || f.truncated)},
            {"format", f.opened ? (f.pcapng ? "pcapng" : "pcap") : ""},
            {"linktype", f.linktype},
            {"frames", f.frames},
            {"ip_packets", ip},
            {"truncated", f.truncated},
            {"error", f.error}};
}

}  // namespace

nlohmann::json compare_json(const CompareReport& r) {
    using nlohmann::json;
    json flows = json::array();
    for (const auto& fc : r.flows) {
        json dirs = json::array();
        for (const auto& d : fc.dir) {
            dirs.push_back({{"src", to_string(d.src)},
                            {"dst", to_string(d.dst)},
                            {"src_at_b", to_string(d.src_b)},
                            {"dst_at_b", to_string(d.dst_b)},
                            {"at_a", d.at_a},
                            {"at_b", d.at_b},
                            {"matched", d.matched},
                            {"a_only_frames", d.a_only_frames},
                            {"b_only_frames", d.b_only_frames},
                            {"a_only_outside_b_span", d.a_only_outside_b_span},
                            {"travel", travel_text(d.travel)},
                            {"travel_assumed", d.travel_assumed},
                            {"delay_tb_minus_ta", delay_json(d.delay)}});
        }
        flows.push_back({{"proto", proto_label(fc.proto)}, {"directions", dirs}});
    }
    json findings = json::array();
    for (const auto& f : r.findings) {
        findings.push_back({{"seen_at", f.seen_at_a ? "A" : "B"},
                            {"missing_at", f.seen_at_a ? "B" : "A"},
                            {"proto", proto_label(f.proto)},
                            {"from", f.from},
                            {"to", f.to},
                            {"missing", f.missing},
                            {"total", f.total},
                            {"frames", f.frames},
                            {"travel", travel_text(f.travel)},
                            {"text", finding_text(f, f.frames.size())}});
    }
    json nat = json::array();
    for (const auto& n : r.nat) nat.push_back(nat_text(n));
    json offset = nullptr;
    if (r.offset_estimated) {
        offset = {{"method", "ntp-style: fastest packet each way takes equal time"},
                  {"offset_b_minus_a_ms", static_cast<double>(r.offset_ns) / 1e6},
                  {"min_one_way_delay_ms", static_cast<double>(r.min_owd_ns) / 1e6}};
    }
    return {{"a", file_json(r.a, r.ip_a)},
            {"b", file_json(r.b, r.ip_b)},
            {"nat", nat},
            {"matched", r.matched},
            {"a_only", r.a_only},
            {"b_only", r.b_only},
            {"delay_raw_tb_minus_ta",
             {{"a_to_b", delay_json(r.a_to_b)}, {"b_to_a", delay_json(r.b_to_a)}}},
            {"clock_offset", offset},
            {"flows", flows},
            {"findings", findings},
            {"notes", r.notes}};
}

}  // namespace linecap::ctl::diag
