#include "ctl/diag/live.hh"

#include <algorithm>
#include <map>
#include <set>
#include <utility>

namespace linecap::ctl::diag {

void merge_conn(TcpConn& a, const TcpConn& b) {
    /* A worker that saw one direction only knows nothing of the other, so
     * each direction comes whole from the table that saw more of it. */
    for (int d = 0; d < 2; d++) {
        if (b.dir[d].packets > a.dir[d].packets) a.dir[d] = b.dir[d];
    }
    if (b.role_basis < a.role_basis) {
        a.client = b.client;
        a.role_basis = b.role_basis;
    }
    if (b.first_ts < a.first_ts ||
        (b.first_ts == a.first_ts && b.first_frame.frame < a.first_frame.frame)) {
        a.first_ts = b.first_ts;
        a.first_frame = b.first_frame;
    }
    if (b.last_ts > a.last_ts) {
        a.last_ts = b.last_ts;
        a.last_frame = b.last_frame;
    }
    a.packets += b.packets;
    if (b.syn_count > a.syn_count) {
        a.syn_count = b.syn_count;
        std::copy(std::begin(b.syn_ts), std::end(b.syn_ts), std::begin(a.syn_ts));
        a.first_syn_frame = b.first_syn_frame;
    }
    if (b.synack_count > a.synack_count) {
        a.synack_count = b.synack_count;
        a.synack_ts = b.synack_ts;
    }
    a.server_spoke = a.server_spoke || b.server_spoke;
    a.handshake_done = a.handshake_done || b.handshake_done;
    /* The client's final ACK and the SYN-ACK were seen by different workers:
     * any client segment beyond its SYNs and RSTs carries that ACK. */
    const TcpDirection& cd = a.dir[a.client];
    if (!a.handshake_done && a.synack_count > 0 && cd.packets > uint64_t(a.syn_count) + cd.rsts) {
        a.handshake_done = true;
    }
    const TcpConn* rst_from = nullptr;
    if (b.reset && (!a.reset || b.rst_ts < a.rst_ts)) rst_from = &b;
    if (rst_from != nullptr) {
        a.reset = true;
        a.rst_dir = b.rst_dir;
        a.rst_ttl = b.rst_ttl;
        a.rst_ts = b.rst_ts;
        a.rst_frame = b.rst_frame;
        a.rst_before_handshake = b.rst_before_handshake;
        a.rst_after_synack = b.rst_after_synack;
        a.rst_after_fins = b.rst_after_fins;
        a.bytes_at_rst[0] = b.bytes_at_rst[0];
        a.bytes_at_rst[1] = b.bytes_at_rst[1];
    }
    if (a.reset) {
        /* The direction the resetting worker never saw: what was sent in it,
         * as far as the other worker knows. */
        for (int d = 0; d < 2; d++) {
            if (a.bytes_at_rst[d] == 0) a.bytes_at_rst[d] = a.dir[d].bytes;
        }
        if (a.rst_before_handshake && a.handshake_done && a.synack_count > 0 &&
            a.dir[a.client].bytes > 0) {
            a.rst_before_handshake = false;
        }
        if (!a.rst_after_synack && a.synack_count > 0 && a.synack_ts <= a.rst_ts) {
            a.rst_after_synack = true;
        }
    }
}

DiagnoseReport diagnose_tables(const std::vector<TableView>& tables,
                               const std::vector<std::string>& sources) {
    DiagnoseReport r;
    r.is_live = true;
    LiveInfo& l = r.live;
    l.workers = static_cast<unsigned>(tables.size());
    std::vector<TcpConn> conns;
    std::map<std::pair<Endpoint, Endpoint>, size_t> index;
    bool have_ts = false;
    std::set<uint32_t> sources_seen; /* before merging, which hides some */
    for (const TableView& t : tables) {
        l.capacity = std::max(l.capacity, t.capacity);
        l.in_use += t.conns.size();
        l.reused += t.counters.reused;
        l.packets_seen += t.packets_seen;
        r.tcp_packets += t.counters.packets;
        r.evicted += t.counters.evicted;
        if (t.counters.packets > 0) {
            r.last_ts = have_ts ? std::max(r.last_ts, t.last_ts) : t.last_ts;
            have_ts = true;
        }
        for (const TcpConn& c : t.conns) {
            sources_seen.insert(c.first_frame.file);
            sources_seen.insert(c.last_frame.file);
            if (tables.size() == 1) {
                conns.push_back(c);
                continue;
            }
            auto [it, fresh] = index.try_emplace({c.ep[0], c.ep[1]}, conns.size());
            if (fresh) {
                conns.push_back(c);
            } else {
                merge_conn(conns[it->second], c);
                l.merged++;
            }
        }
    }
    r.frames = l.packets_seen;
    r.max_flows = l.capacity;

    for (const TcpConn& c : conns) {
        if (r.first_ts == 0 || c.first_ts < r.first_ts) r.first_ts = c.first_ts;
    }
    if (sources_seen.size() > 1) l.frame_sources = sources;

    r.connections.reserve(conns.size());
    for (const TcpConn& c : conns) {
        r.connections.push_back(ConnResult{c, summarize(c, r.last_ts, l.frame_sources)});
    }
    rank_connections(r);
    return r;
}

}  // namespace linecap::ctl::diag
