#include "ctl/diag/diagnose.hh"

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <map>

#include "ctl/diag/capture_file.hh"
#include "ctl/diag/fmt.hh"

namespace linecap::ctl::diag {

namespace {

std::string plural(uint64_t n, const char* one, const char* many) {
    return std::to_string(n) + " " + (n == 1 ? one : many);
}

/* Seconds, in the unit a person reads best: "1.0 s", "250 ms", "80 us". */
std::string seconds_label(double s) {
    const double a = s < 0 ? -s : s;
    if (a >= 1.0 || a == 0.0) return fmt("%.1f s", s);
    if (a >= 0.001) return fmt("%.0f ms", s * 1e3);
    return fmt("%.0f us", s * 1e6);
}

std::string basename_of(const std::string& p) {
    size_t slash = p.rfind('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::string frame_number(FrameRef f, const std::vector<std::string>& files) {
    if (files.size() <= 1) return std::to_string(f.frame);
    std::string name = f.file < files.size() ? basename_of(files[f.file]) : "?";
    return name + "#" + std::to_string(f.frame);
}

std::string frame_list(std::vector<FrameRef> v, uint64_t total,
                       const std::vector<std::string>& files) {
    std::sort(v.begin(), v.end(), [](FrameRef a, FrameRef b) {
        return a.file != b.file ? a.file < b.file : a.frame < b.frame;
    });
    std::string out;
    for (size_t i = 0; i < v.size(); i++) {
        if (i) out += ", ";
        out += frame_number(v[i], files);
    }
    if (total > v.size()) out += ", …";
    return out;
}

const char* side_name(const TcpConn& c, int idx) { return idx == c.client ? "client" : "server"; }

}  // namespace

std::string frame_label(FrameRef f, const std::vector<std::string>& files) {
    if (files.size() <= 1) return "frame " + std::to_string(f.frame);
    return frame_number(f, files);
}

const char* verdict_name(Verdict v) {
    switch (v) {
        case Verdict::kRefused: return "REFUSED";
        case Verdict::kUnanswered: return "UNANSWERED";
        case Verdict::kReset: return "RESET";
        case Verdict::kHalfOpen: return "HALF-OPEN";
        case Verdict::kRetransmissions: return "RETRANSMISSIONS";
        case Verdict::kZeroWindow: return "ZERO-WINDOW";
        case Verdict::kDupAcks: return "DUP-ACKS";
        case Verdict::kMidStream: return "MID-STREAM";
        case Verdict::kOk: return "OK";
    }
    return "?";
}

const char* handshake_name(Handshake h) {
    switch (h) {
        case Handshake::kComplete: return "complete";
        case Handshake::kPartial: return "complete (partly captured)";
        case Handshake::kRefused: return "refused";
        case Handshake::kUnanswered: return "unanswered";
        case Handshake::kHalfOpen: return "half-open";
        case Handshake::kMidStream: return "not captured (mid-stream)";
    }
    return "?";
}

const char* close_name(Close c) {
    switch (c) {
        case Close::kFinBoth: return "FIN/FIN";
        case Close::kFinClient: return "FIN from client only";
        case Close::kFinServer: return "FIN from server only";
        case Close::kRst: return "RST";
        case Close::kOpen: return "open";
    }
    return "?";
}

ConnSummary summarize(const TcpConn& c, uint64_t capture_end_ns,
                      const std::vector<std::string>& files) {
    ConnSummary s;
    const int ci = c.client;
    const int si = 1 - ci;
    const TcpDirection& cd = c.dir[ci];
    const TcpDirection& sd = c.dir[si];
    s.client = c.ep[ci];
    s.server = c.ep[si];
    s.roles_guessed = c.role_basis == TcpConn::RoleBasis::kPort;

    const uint32_t kept_syns = std::min<uint32_t>(c.syn_count, kMaxSynTimes);
    for (uint32_t i = 1; i < kept_syns; i++) {
        s.syn_intervals_s.push_back(
            static_cast<double>(static_cast<int64_t>(c.syn_ts[i] - c.syn_ts[i - 1])) / 1e9);
    }

    if (c.syn_count > 0) {
        if (c.handshake_done)
            s.handshake = Handshake::kComplete;
        else if (c.synack_count > 0)
            s.handshake = Handshake::kHalfOpen;
        else if (sd.rsts > 0 && !c.server_spoke)
            s.handshake = Handshake::kRefused;
        else if (c.server_spoke)
            s.handshake = Handshake::kPartial;
        else
            s.handshake = Handshake::kUnanswered;
    } else if (c.synack_count > 0) {
        s.handshake = c.handshake_done ? Handshake::kPartial : Handshake::kHalfOpen;
    } else {
        s.handshake = Handshake::kMidStream;
    }

    if (c.reset)
        s.close = Close::kRst;
    else if (cd.fin && sd.fin)
        s.close = Close::kFinBoth;
    else if (cd.fin)
        s.close = Close::kFinClient;
    else if (sd.fin)
        s.close = Close::kFinServer;

    /* Every finding, in severity order; the first is the verdict. */
    std::vector<std::pair<Verdict, std::string>> found;

    if (s.handshake == Handshake::kRefused) {
        found.emplace_back(Verdict::kRefused, "SYN answered by RST from server (" +
                                                  plural(c.syn_count, "attempt", "attempts") + ")");
    }
    if (s.handshake == Handshake::kUnanswered) {
        const uint32_t retries = c.syn_count - 1;
        std::string text;
        if (retries == 0) {
            double waited = capture_end_ns > c.syn_ts[0]
                                ? static_cast<double>(capture_end_ns - c.syn_ts[0]) / 1e9
                                : 0.0;
            text = "SYN not answered, no retry seen (the capture ends " + seconds_label(waited) +
                   " later)";
        } else {
            std::string iv;
            for (size_t i = 0; i < s.syn_intervals_s.size(); i++) {
                iv += (i ? ", " : "") + seconds_label(s.syn_intervals_s[i]);
            }
            if (retries > s.syn_intervals_s.size()) iv += ", …";
            text = plural(retries, "SYN retry", "SYN retries") + " at " + iv +
                   (retries == 1 ? " interval" : " intervals") + ", no SYN-ACK";
        }
        if (cd.rsts > 0) text += "; the client then gave up with RST";
        found.emplace_back(Verdict::kUnanswered, text);
    }
    if (c.reset && !c.rst_after_fins && s.handshake != Handshake::kRefused) {
        const int rd = c.rst_dir;
        std::string text = "by " + std::string(side_name(c, rd)) + " " + to_string(c.ep[rd]);
        if (c.rst_before_handshake && c.syn_count + c.synack_count > 0) {
            text += c.rst_after_synack ? " during the handshake (after the SYN-ACK)"
                                       : " during the handshake";
        } else {
            text += fmt(" after %" PRIu64 " B client->server, %" PRIu64 " B server->client",
                        c.bytes_at_rst[ci], c.bytes_at_rst[si]);
        }
        text += " (" + frame_label(c.rst_frame, files) + ")";
        const TcpDirection& rsd = c.dir[rd];
        if (rsd.ttl_known && rsd.ttl != c.rst_ttl) {
            text +=
                fmt("; the RST has TTL %u but the %s's other packets TTL %u: it may come "
                    "from a device in the path",
                    c.rst_ttl, side_name(c, rd), rsd.ttl);
        }
        found.emplace_back(Verdict::kReset, text);
    }
    if (s.handshake == Handshake::kHalfOpen) {
        std::string text = "SYN-ACK sent";
        if (c.synack_count > 1) text += " " + plural(c.synack_count, "time", "times");
        text += ", the client never completed the handshake";
        found.emplace_back(Verdict::kHalfOpen, text);
    }

    {
        std::vector<std::string> parts;
        std::vector<FrameRef> frames;
        const uint32_t rtx = cd.retransmissions + sd.retransmissions;
        if (rtx > 0) {
            parts.push_back(fmt("%u retransmitted segment%s (client %u, server %u; %s ", rtx,
                                rtx == 1 ? "" : "s", cd.retransmissions, sd.retransmissions,
                                rtx == 1 ? "frame" : "frames"));
            for (const TcpDirection* t : {&cd, &sd}) {
                frames.insert(frames.end(), t->retrans_frames,
                              t->retrans_frames + t->retrans_frames_kept);
            }
            parts.back() += frame_list(frames, rtx, files) + ")";
        }
        if (c.syn_count > 1 &&
            (s.handshake == Handshake::kComplete || s.handshake == Handshake::kHalfOpen ||
             s.handshake == Handshake::kPartial)) {
            double took =
                static_cast<double>(c.synack_ts > c.syn_ts[0] ? c.synack_ts - c.syn_ts[0] : 0) /
                1e9;
            parts.push_back(plural(c.syn_count - 1, "SYN retry", "SYN retries") +
                            " before the SYN-ACK (connect took " + seconds_label(took) + ")");
        }
        if (c.synack_count > 1 && s.handshake != Handshake::kHalfOpen) {
            parts.push_back(
                plural(c.synack_count - 1, "SYN-ACK retransmission", "SYN-ACK retransmissions"));
        }
        if (!parts.empty()) {
            std::string text;
            for (size_t i = 0; i < parts.size(); i++) text += (i ? "; " : "") + parts[i];
            found.emplace_back(Verdict::kRetransmissions, text);
        }
    }
    for (int side : {ci, si}) {
        const TcpDirection& t = c.dir[side];
        if (t.zero_windows == 0) continue;
        found.emplace_back(Verdict::kZeroWindow,
                           fmt("%s advertised a zero window %u time%s in %u episode%s (first: %s)",
                               side_name(c, side), t.zero_windows, t.zero_windows == 1 ? "" : "s",
                               t.zero_window_episodes, t.zero_window_episodes == 1 ? "" : "s",
                               frame_label(t.first_zero_window, files).c_str()));
    }
    for (int side : {ci, si}) {
        const TcpDirection& t = c.dir[side];
        if (t.dupack_runs3 == 0) continue;
        found.emplace_back(
            Verdict::kDupAcks,
            fmt("%u duplicate ACK%s from %s, %u run%s of 3 or more (longest %u; third dup ACK "
                "at %s)",
                t.dup_acks, t.dup_acks == 1 ? "" : "s", side_name(c, side), t.dupack_runs3,
                t.dupack_runs3 == 1 ? "" : "s", t.max_dupack_run,
                frame_label(t.first_triple_dupack, files).c_str()));
    }
    if (s.handshake == Handshake::kMidStream) {
        found.emplace_back(Verdict::kMidStream,
                           "handshake not captured (the connection started before the capture)");
    }

    std::stable_sort(found.begin(), found.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    if (found.empty() || found.front().first == Verdict::kMidStream) {
        std::string text =
            std::string(found.empty() ? "" : "mid-stream, ") +
            fmt("%" PRIu64 " B client->server, %" PRIu64 " B server->client", cd.bytes, sd.bytes);
        if (s.close == Close::kOpen)
            text += ", still open at the end of the capture";
        else if (s.close == Close::kRst)
            text += ", closed by RST after both FINs";
        else
            text += std::string(", closed ") + close_name(s.close);
        s.verdict = found.empty() ? Verdict::kOk : Verdict::kMidStream;
        s.reason = text;
    } else {
        s.verdict = found.front().first;
        s.reason = found.front().second;
        for (size_t i = 1; i < found.size(); i++) {
            if (found[i].first == Verdict::kMidStream) continue;
            s.notes.push_back(std::string(verdict_name(found[i].first)) + ": " + found[i].second);
        }
    }

    if (cd.gaps + sd.gaps > 0) {
        s.notes.push_back(fmt("%u segment%s after data the capture never saw (%" PRIu64
                              " B missing: dropped before the capture point or by the capture)",
                              cd.gaps + sd.gaps, cd.gaps + sd.gaps == 1 ? "" : "s",
                              cd.gap_bytes + sd.gap_bytes));
    }
    if (s.roles_guessed && s.verdict != Verdict::kMidStream) {
        s.notes.push_back("no SYN captured: client and server guessed from the port numbers");
    }
    if (s.handshake == Handshake::kPartial) {
        s.notes.push_back(c.syn_count == 0 ? "the SYN was not captured"
                                           : "the SYN-ACK was not captured (asymmetric path or "
                                             "capture on one direction only?)");
    }
    return s;
}

namespace {

struct ReleaseSink {
    std::vector<TcpConn>* out;
    static void on_release(void* ctx, const TcpConn& c, TcpTracker::Release) {
        static_cast<ReleaseSink*>(ctx)->out->push_back(c);
    }
};

}  // namespace

std::optional<CaptureFile> open_report_file(const std::string& path, FileReport& fr) {
    fr.path = path;
    auto cf = CaptureFile::open(path);
    if (!cf) {
        fr.error = cf.error();
        return std::nullopt;
    }
    fr.opened = true;
    fr.pcapng = cf->pcapng();
    fr.linktype = cf->linktype_name();
    if (!linktype_supported(cf->linktype())) {
        fr.error = path + ": link type " + fr.linktype +
                   " is not supported (Ethernet, Linux cooked v1/v2, raw IP and BSD loopback "
                   "are)";
        return std::nullopt;
    }
    return std::move(*cf);
}

void finish_report_file(const CaptureFile& cf, ReadStatus st, FileReport& fr) {
    fr.frames = cf.frames();
    if (st == ReadStatus::kTruncated) {
        fr.truncated = true;
        fr.error = cf.error();
    } else if (st == ReadStatus::kError) {
        fr.error = cf.error();
    }
}

DiagnoseReport diagnose_files(const std::vector<std::string>& paths, const DiagnoseOptions& opt) {
    DiagnoseReport r;
    r.max_flows = opt.max_flows == 0 ? 1 : opt.max_flows;
    std::vector<TcpConn> done;
    ReleaseSink sink{&done};
    auto made = TcpTracker::create(r.max_flows, &ReleaseSink::on_release, &sink);
    if (!made) {
        /* Nothing can be analysed: every file says why. */
        for (const std::string& path : paths) {
            FileReport fr;
            fr.path = path;
            fr.error = made.error();
            r.files.push_back(std::move(fr));
        }
        return r;
    }
    TcpTracker& tracker = *made;
    bool have_ts = false;

    for (uint32_t fi = 0; fi < paths.size(); fi++) {
        FileReport fr;
        auto cf = open_report_file(paths[fi], fr);
        if (!cf) {
            r.files.push_back(std::move(fr));
            continue;
        }
        const int lt = cf->linktype();
        RawPacket rp;
        DecodedPacket dp;
        ReadStatus st;
        while ((st = cf->next(rp)) == ReadStatus::kPacket) {
            r.frames++;
            if (!have_ts || rp.ts_ns < r.first_ts) r.first_ts = rp.ts_ns;
            if (!have_ts || rp.ts_ns > r.last_ts) r.last_ts = rp.ts_ns;
            have_ts = true;
            switch (decode_packet(lt, rp.data, rp.caplen, dp)) {
                case DecodeStatus::kOk:
                    if (!tracker.update(dp, rp.ts_ns, FrameRef{fi, rp.frame})) r.other_ip++;
                    break;
                case DecodeStatus::kNotIp: r.not_ip++; break;
                default: r.undecodable++; break;
            }
        }
        finish_report_file(*cf, st, fr);
        r.files.push_back(std::move(fr));
    }

    r.tcp_packets = tracker.counters().packets;
    r.evicted = tracker.counters().evicted;
    tracker.for_each([&](const TcpConn& c) { done.push_back(c); });
    r.connections.reserve(done.size());
    for (const TcpConn& c : done) {
        r.connections.push_back(ConnResult{c, summarize(c, r.last_ts, paths)});
    }
    rank_connections(r);
    return r;
}

void rank_connections(DiagnoseReport& r) {
    std::stable_sort(r.connections.begin(), r.connections.end(),
                     [](const ConnResult& a, const ConnResult& b) {
                         if (a.summary.verdict != b.summary.verdict) {
                             return a.summary.verdict < b.summary.verdict;
                         }
                         if (a.conn.first_frame.file != b.conn.first_frame.file) {
                             return a.conn.first_frame.file < b.conn.first_frame.file;
                         }
                         return a.conn.first_frame.frame < b.conn.first_frame.frame;
                     });
}

int diagnose_exit_status(const DiagnoseReport& r) {
    int status = 0;
    for (const FileReport& f : r.files) {
        if (!f.error.empty() && !f.truncated) return 1;
        if (f.truncated) status = 2;
    }
    return status;
}

namespace {

std::vector<std::string> file_names(const DiagnoseReport& r) {
    if (r.is_live) return r.live.frame_sources;
    std::vector<std::string> v;
    for (const auto& f : r.files) v.push_back(f.path);
    return v;
}

const char* verdict_phrase(Verdict v) {
    switch (v) {
        case Verdict::kRefused: return "refused";
        case Verdict::kUnanswered: return "unanswered";
        case Verdict::kReset: return "reset";
        case Verdict::kHalfOpen: return "half-open";
        case Verdict::kRetransmissions: return "with retransmissions";
        case Verdict::kZeroWindow: return "with a zero window";
        case Verdict::kDupAcks: return "with duplicate ACK runs";
        case Verdict::kMidStream: return "mid-stream";
        case Verdict::kOk: return "ok";
    }
    return "?";
}

std::string verdict_line(const DiagnoseReport& r) {
    size_t problems = 0;
    std::map<Verdict, size_t> by;
    for (const auto& c : r.connections) {
        if (is_problem(c.summary.verdict)) {
            problems++;
            by[c.summary.verdict]++;
        }
    }
    const size_t n = r.connections.size();
    if (n == 0) return "VERDICT: no TCP connections in the capture";
    if (problems == 0) {
        return "VERDICT: no problems found in " + plural(n, "TCP connection", "TCP connections");
    }
    std::string out = fmt("VERDICT: %zu of %zu TCP connection%s %s problems: ", problems, n,
                          n == 1 ? "" : "s", problems == 1 ? "has" : "have");
    bool first = true;
    for (const auto& [v, count] : by) {
        out += (first ? "" : ", ") + std::to_string(count) + " " + verdict_phrase(v);
        first = false;
    }
    return out;
}

std::string detail_line(const ConnResult& cr, const std::vector<std::string>& files) {
    const TcpConn& c = cr.conn;
    const ConnSummary& s = cr.summary;
    const TcpDirection& cd = c.dir[c.client];
    const TcpDirection& sd = c.dir[1 - c.client];
    std::string close = close_name(s.close);
    if (s.close == Close::kRst) close += std::string(" by ") + side_name(c, c.rst_dir);
    std::string frames = files.size() <= 1
                             ? fmt("frames %u-%u", c.first_frame.frame, c.last_frame.frame)
                             : "frames " + frame_number(c.first_frame, files) + " to " +
                                   frame_number(c.last_frame, files);
    return fmt("handshake %s | %" PRIu64 " B c->s, %" PRIu64 " B s->c | close %s | %" PRIu64
               " packets, %s, %.3f s",
               handshake_name(s.handshake), cd.bytes, sd.bytes, close.c_str(), c.packets,
               frames.c_str(), static_cast<double>(c.last_ts - c.first_ts) / 1e9);
}

}  // namespace

std::vector<std::string> diagnose_hints(const DiagnoseReport& r) {
    bool refused = false, unanswered = false, reset = false;
    for (const auto& c : r.connections) {
        refused |= c.summary.verdict == Verdict::kRefused;
        unanswered |= c.summary.verdict == Verdict::kUnanswered;
        reset |= c.summary.verdict == Verdict::kReset;
    }
    std::vector<std::string> out;
    if (unanswered) {
        out.push_back(
            "SYNs went unanswered: capture on the server side at the same time and "
            "run `compare CLIENT.pcap SERVER.pcap`; if the server never sees them, "
            "something in the path drops them");
    }
    if (refused || reset) {
        out.push_back(
            "a RST may come from the peer or from a firewall or load balancer in the "
            "path: a capture at the other end (compare) shows whether the peer really "
            "sent it");
    }
    return out;
}

std::string format_diagnose_text(const DiagnoseReport& r, const TextOptions& opt) {
    const auto files = file_names(r);
    std::string out;
    size_t readable = 0;
    for (const auto& f : r.files) {
        if (!f.opened) continue;
        readable++;
        out += "capture " + f.path + ": " + (f.pcapng ? "pcapng" : "pcap") + ", " + f.linktype +
               ", " + plural(f.frames, "frame", "frames") + (f.truncated ? " (truncated)" : "") +
               "\n";
    }
    size_t problems = 0;
    for (const auto& c : r.connections) problems += is_problem(c.summary.verdict);
    if (r.is_live) {
        const LiveInfo& l = r.live;
        readable = 1;
        out += fmt("live: flow tables of %u capd worker%s, %u connections each: %" PRIu64
                   " in use, %" PRIu64 " evicted\n",
                   l.workers, l.workers == 1 ? "" : "s", l.capacity, l.in_use, r.evicted);
        out += fmt("%" PRIu64 " packets accepted since start: %" PRIu64
                   " TCP; %zu TCP connection%s in the tables, %zu with problems\n",
                   l.packets_seen, r.tcp_packets, r.connections.size(),
                   r.connections.size() == 1 ? "" : "s", problems);
    } else {
        out += fmt("%" PRIu64 " frames: %" PRIu64 " TCP, %" PRIu64 " other IP, %" PRIu64
                   " not IP, %" PRIu64 " undecodable; %zu TCP connection%s, %zu with problems\n",
                   r.frames, r.tcp_packets, r.other_ip, r.not_ip, r.undecodable,
                   r.connections.size(), r.connections.size() == 1 ? "" : "s", problems);
    }
    if (r.evicted > 0 && r.is_live) {
        out += fmt("note: the tables were full %" PRIu64
                   " times: the least recently active connections were evicted and are no "
                   "longer reported (capd --tcp-flows sets the table size)\n",
                   r.evicted);
    } else if (r.evicted > 0) {
        out += fmt("warning: the flow table (%u connections) was full: %" PRIu64
                   " connections were evicted; a connection whose packets came after its "
                   "eviction is reported in pieces (raise --max-flows)\n",
                   r.max_flows, r.evicted);
    }
    if (problems > 0) {
        out += "\nProblems, most severe first:\n";
        size_t listed = 0;
        for (const auto& c : r.connections) {
            if (!is_problem(c.summary.verdict)) continue;
            if (listed == r.list_limit) {
                out += fmt("  … %zu more problem connections not listed\n", problems - listed);
                break;
            }
            listed++;
            out += "  " + to_string(c.summary.client) + " -> " + to_string(c.summary.server) +
                   "  " + verdict_name(c.summary.verdict) + ": " + c.summary.reason + "\n";
            out += "      " + detail_line(c, files) + "\n";
            for (const auto& n : c.summary.notes) out += "      also " + n + "\n";
        }
    }
    const size_t healthy = r.connections.size() - problems;
    if (healthy > 0) {
        out += "\nNo problem seen:\n";
        size_t shown = 0;
        for (const auto& c : r.connections) {
            if (is_problem(c.summary.verdict)) continue;
            if (!opt.all && shown == opt.max_healthy) break;
            shown++;
            out += "  " + to_string(c.summary.client) + " -> " + to_string(c.summary.server) +
                   "  " + verdict_name(c.summary.verdict) + ": " + c.summary.reason + "\n";
            for (const auto& n : c.summary.notes) out += "      also " + n + "\n";
        }
        if (shown < healthy) {
            out += fmt("  … %zu more (--all lists them)\n", healthy - shown);
        }
    }
    if (readable == 0) {
        out += "\nVERDICT: no capture could be read\n";
    } else {
        const auto hints = diagnose_hints(r);
        if (!hints.empty()) out += "\n";
        for (const auto& h : hints) out += "hint: " + h + "\n";
        out += "\n" + verdict_line(r) + "\n";
    }
    return out;
}

namespace {

/* Frame numbers run across the files; a live frame (no files) keeps its
 * source's own number. */
uint64_t global_frame(FrameRef fr, const std::vector<uint64_t>& offsets) {
    return (fr.file < offsets.size() ? offsets[fr.file] : 0) + fr.frame;
}

nlohmann::json dir_json(const TcpDirection& t, const std::vector<uint64_t>& offsets) {
    nlohmann::json frames = nlohmann::json::array();
    for (uint32_t i = 0; i < t.retrans_frames_kept; i++) {
        frames.push_back(global_frame(t.retrans_frames[i], offsets));
    }
    return {
        {"packets", t.packets},
        {"payload_packets", t.payload_packets},
        {"bytes", t.bytes},
        {"retransmissions", t.retransmissions},
        {"retransmitted_bytes", t.retrans_bytes},
        {"retransmission_frames", frames},
        {"gaps", t.gaps},
        {"gap_bytes", t.gap_bytes},
        {"dup_acks", t.dup_acks},
        {"dup_ack_runs_3plus", t.dupack_runs3},
        {"max_dup_ack_run", t.max_dupack_run},
        {"zero_windows", t.zero_windows},
        {"zero_window_episodes", t.zero_window_episodes},
        {"fin", t.fin},
        {"rsts", t.rsts},
    };
}

}  // namespace

nlohmann::json diagnose_json(const DiagnoseReport& r) {
    using nlohmann::json;
    /* Frames are numbered across the files in the order given, as if they
     * had been concatenated (mergecap -a); one file keeps its own numbers. */
    std::vector<uint64_t> offsets;
    uint64_t base = 0;
    json files = json::array();
    for (const auto& f : r.files) {
        offsets.push_back(base);
        files.push_back({{"path", f.path},
                         {"readable", f.opened && (f.error.empty() || f.truncated)},
                         {"format", f.opened ? (f.pcapng ? "pcapng" : "pcap") : ""},
                         {"linktype", f.linktype},
                         {"frames", f.frames},
                         {"first_frame", base + 1},
                         {"truncated", f.truncated},
                         {"error", f.error}});
        base += f.frames;
    }
    auto global = [&](FrameRef fr) { return global_frame(fr, offsets); };

    json conns = json::array();
    std::map<std::string, size_t> by;
    size_t problems = 0;
    for (const auto& cr : r.connections) {
        const TcpConn& c = cr.conn;
        const ConnSummary& s = cr.summary;
        const int ci = c.client;
        const int si = 1 - ci;
        if (is_problem(s.verdict)) {
            problems++;
            by[verdict_name(s.verdict)]++;
        }
        if (conns.size() >= r.list_limit) continue;
        json reset = nullptr;
        if (c.reset) {
            reset = {{"by", side_name(c, c.rst_dir)},
                     {"endpoint", to_string(c.ep[c.rst_dir])},
                     {"bytes_client_to_server", c.bytes_at_rst[ci]},
                     {"bytes_server_to_client", c.bytes_at_rst[si]},
                     {"during_handshake", c.rst_before_handshake},
                     {"after_fins", c.rst_after_fins},
                     {"ttl", c.rst_ttl},
                     {"frame", global(c.rst_frame)}};
        }
        conns.push_back({
            {"client", to_string(s.client)},
            {"server", to_string(s.server)},
            {"roles_guessed", s.roles_guessed},
            {"verdict", verdict_name(s.verdict)},
            {"problem", is_problem(s.verdict)},
            {"reason", s.reason},
            {"notes", s.notes},
            {"handshake", handshake_name(s.handshake)},
            {"syn_count", c.syn_count},
            {"syn_retries", c.syn_count > 0 ? c.syn_count - 1 : 0},
            {"syn_intervals_s", s.syn_intervals_s},
            {"synack_count", c.synack_count},
            {"close", close_name(s.close)},
            {"reset", reset},
            {"client_to_server", dir_json(c.dir[ci], offsets)},
            {"server_to_client", dir_json(c.dir[si], offsets)},
            {"packets", c.packets},
            {"first_frame", global(c.first_frame)},
            {"last_frame", global(c.last_frame)},
            {"start_s", static_cast<double>(c.first_ts) / 1e9},
            {"duration_s", static_cast<double>(c.last_ts - c.first_ts) / 1e9},
        });
    }
    json out = {
        {"files", files},
        {"frames", r.frames},
        {"tcp_packets", r.tcp_packets},
        {"other_ip", r.other_ip},
        {"not_ip", r.not_ip},
        {"undecodable", r.undecodable},
        {"max_flows", r.max_flows},
        {"evicted", r.evicted},
        {"connections", conns},
        {"summary",
         {{"connections", r.connections.size()}, {"problems", problems}, {"by_verdict", by}}},
        {"hints", diagnose_hints(r)},
        {"verdict", verdict_line(r)},
    };
    if (conns.size() < r.connections.size()) out["connections_listed"] = conns.size();
    if (r.is_live) {
        const LiveInfo& l = r.live;
        out["live"] = {{"workers", l.workers},
                       {"capacity_per_worker", l.capacity},
                       {"capacity", static_cast<uint64_t>(l.capacity) * l.workers},
                       {"in_use", l.in_use},
                       {"evicted", r.evicted},
                       {"reused", l.reused},
                       {"packets_seen", l.packets_seen},
                       {"merged_across_workers", l.merged}};
    }
    return out;
}

}  // namespace linecap::ctl::diag
