#include "tests/diag/scenarios.hh"

#include <algorithm>
#include <map>

namespace linecap::tests::diag {

namespace {

std::string frames_of(const std::vector<int>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
    return s;
}

}  // namespace

DiagnoseStory diagnose_story() {
    DiagnoseStory st;
    Trace& t = st.trace;
    const double T = kBase;
    const std::string C = "198.18.1.5";
    auto frame = [](int id) { return id + 1; };

    // a) clean.
    Conversation a(t, C, 40000, "198.18.0.80", 8080, 1000, 5000);
    a.syn(T + 0.000);
    a.synack(T + 0.001);
    a.ack(T + 0.002);
    a.data(T + 0.003, true, 100);
    a.ack(T + 0.004, false);
    a.data(T + 0.005, false, 500);
    a.ack(T + 0.006);
    a.fin(T + 0.007, true);
    a.fin(T + 0.008, false);
    a.ack(T + 0.009);

    // b) refused: SYN answered by RST.
    Conversation b(t, C, 40001, "198.18.0.80", 8081, 2000, 0);
    b.syn(T + 1.000);
    b.refuse(T + 1.0002);

    // c) unanswered: SYN retried after 1, 2 and 4 seconds.
    Conversation c(t, C, 40002, "198.18.0.10", 3306, 3000, 0);
    c.syn(T + 2.0);
    c.syn(T + 3.0);
    c.syn(T + 5.0);
    c.syn(T + 9.0);

    // d) the server resets after sending 500 bytes.
    Conversation d(t, C, 40003, "198.18.0.80", 8082, 4000, 6000);
    d.syn(T + 10.000);
    d.synack(T + 10.001);
    d.ack(T + 10.002);
    d.data(T + 10.003, true, 120);
    d.ack(T + 10.004, false);
    d.data(T + 10.005, false, 500);
    d.ack(T + 10.006);
    st.rst_frame_reset = frame(d.rst(T + 10.007, false));

    // e) seed 004: handshake fine (telnet works), the call's 557 bytes get a RST.
    Conversation e(t, C, 40004, "198.18.0.90", 9000, 3465124192u, 292384097u);
    e.syn(T + 11.000);
    e.synack(T + 11.001);
    e.ack(T + 11.002);
    e.data(T + 11.003, true, 557);
    st.rst_frame_seed = frame(e.rst(T + 11.004, false));

    // f) server side: 5 segments, the client ACKs the first and sends three
    // duplicate ACKs, the server resends the second; the client then
    // advertises a zero window, later opens it again.
    Conversation f(t, C, 40005, "198.18.0.80", 8083, 7000, 8000);
    f.syn(T + 12.000);
    f.synack(T + 12.001);
    f.ack(T + 12.002);
    f.data(T + 12.003, true, 80);
    f.ack(T + 12.004, false);
    for (int i = 0; i < 5; i++) f.data(T + 12.010 + 0.001 * i, false, 1000);
    f.ack_to(T + 12.020, true, 1000);
    f.dup_ack(T + 12.021, true);
    f.dup_ack(T + 12.022, true);
    st.third_dupack_frame = frame(f.dup_ack(T + 12.023, true));
    st.retrans_frame = frame(f.resend(T + 12.030, false, 1000, 1000));
    st.zero_window_frame = frame(f.ack(T + 12.040, true, 0));
    f.window(T + 12.300, true, 64240);
    f.fin(T + 12.400, true);
    f.fin(T + 12.401, false);
    f.ack(T + 12.402);

    // g) half-open: SYN-ACK twice, no final ACK.
    Conversation g(t, C, 40006, "198.18.0.80", 8084, 9000, 9500);
    g.syn(T + 13.000);
    g.synack(T + 13.001);
    g.synack(T + 14.001);

    // h) IPv6, clean.
    Conversation h(t, "2001:db8::5", 40007, "2001:db8::80", 443, 11000, 12000);
    h.syn(T + 15.000);
    h.synack(T + 15.001);
    h.ack(T + 15.002);
    h.data(T + 15.003, true, 50);
    h.ack(T + 15.004, false);
    h.data(T + 15.005, false, 1200);
    h.ack(T + 15.006);
    h.fin(T + 15.007, true);
    h.fin(T + 15.008, false);
    h.ack(T + 15.009);

    // i) mid-stream: no handshake in the capture.
    Conversation i(t, "198.18.1.6", 50000, "198.18.0.80", 22, 13000, 14000);
    i.data(T + 16.000, false, 200);
    i.ack(T + 16.001);
    i.data(T + 16.002, true, 100);
    i.ack(T + 16.003, false);

    const std::string rst_d = std::to_string(st.rst_frame_reset);
    const std::string rst_e = std::to_string(st.rst_frame_seed);
    st.lines = {
        "198.18.1.5:40001 -> 198.18.0.80:8081  REFUSED: SYN answered by RST from server "
        "(1 attempt)",
        "198.18.1.5:40002 -> 198.18.0.10:3306  UNANSWERED: 3 SYN retries at 1.0 s, 2.0 s, "
        "4.0 s intervals, no SYN-ACK",
        "198.18.1.5:40003 -> 198.18.0.80:8082  RESET: by server 198.18.0.80:8082 after 120 B "
        "client->server, 500 B server->client (frame " +
            rst_d + ")",
        "198.18.1.5:40004 -> 198.18.0.90:9000  RESET: by server 198.18.0.90:9000 after 557 B "
        "client->server, 0 B server->client (frame " +
            rst_e + ")",
        "198.18.1.5:40006 -> 198.18.0.80:8084  HALF-OPEN: SYN-ACK sent 2 times, the client "
        "never completed the handshake",
        "198.18.1.5:40005 -> 198.18.0.80:8083  RETRANSMISSIONS: 1 retransmitted segment "
        "(client 0, server 1; frame " +
            std::to_string(st.retrans_frame) + ")",
        "198.18.1.6:50000 -> 198.18.0.80:22  MID-STREAM: mid-stream, 100 B client->server, "
        "200 B server->client, still open at the end of the capture",
        "198.18.1.5:40000 -> 198.18.0.80:8080  OK: 100 B client->server, 500 B server->client, "
        "closed FIN/FIN",
        "[2001:db8::5]:40007 -> [2001:db8::80]:443  OK: 50 B client->server, 1200 B "
        "server->client, closed FIN/FIN",
    };
    st.also.assign(st.lines.size(), {});
    st.also[5] = {
        "ZERO-WINDOW: client advertised a zero window 1 time in 1 episode (first: frame " +
            std::to_string(st.zero_window_frame) + ")",
        "DUP-ACKS: 3 duplicate ACKs from client, 1 run of 3 or more (longest 3; third dup ACK "
        "at frame " +
            std::to_string(st.third_dupack_frame) + ")",
    };
    st.verdict =
        "VERDICT: 6 of 9 TCP connections have problems: 1 refused, 1 unanswered, 2 reset, "
        "1 half-open, 1 with retransmissions";
    return st;
}

TwoPoint two_point(const TwoPointOptions& opt) {
    Trace t;
    const double T = kBase;
    const std::string C = "198.18.1.5";
    // Where each event was (not) seen.
    std::map<int, bool> not_at_a, not_at_b;

    Conversation w(t, C, 40100, "198.18.0.80", 8080, 21000, 22000);
    Conversation m1(t, C, 40200, "198.18.0.10", 3306, 23000, 0);
    Conversation m2(t, C, 40201, "198.18.0.10", 3306, 24000, 0);
    Conversation r(t, C, 40300, "198.18.0.80", 8443, 25000, 26000);

    std::vector<int> blocked;
    w.syn(T + 0.000);
    w.synack(T + 0.010);
    w.ack(T + 0.020);
    const int lost = w.data(T + 0.030, true, 300);
    not_at_b[lost] = true;
    blocked.push_back(m1.syn(T + 0.040));
    w.resend(T + 0.250, true, 0, 300);
    w.ack(T + 0.260, false);
    w.data(T + 0.270, false, 1000);
    const int b_only = w.data(T + 0.271, false, 1000);
    not_at_a[b_only] = true;
    w.data(T + 0.272, false, 1000);
    w.ack_to(T + 0.280, true, 1000);
    blocked.push_back(m2.syn(T + 0.500));
    blocked.push_back(m1.syn(T + 1.040));
    blocked.push_back(m2.syn(T + 1.500));
    r.syn(T + 2.000);
    r.synack(T + 2.010);
    r.ack(T + 2.020);
    r.data(T + 2.030, true, 200);
    // A RST "from the server" that the server never sent: a box between
    // the points resets the connection toward the client.
    TcpSpec inj;
    inj.src = "198.18.0.80";
    inj.dst = C;
    inj.sport = 8443;
    inj.dport = 40300;
    inj.seq = 26001;
    inj.ack = 25001 + 200;
    inj.flags = RST | ACK;
    inj.win = 0;
    inj.ttl = 250;
    inj.ip_id = 0;
    const int injected = t.add(ns(T + 2.040), Origin::kMiddle, inj);
    not_at_b[injected] = true;
    blocked.push_back(m1.syn(T + 3.040));
    w.resend(T + 3.100, false, 1000, 1000);
    w.ack(T + 3.110);
    w.fin(T + 3.200, true);
    w.fin(T + 3.210, false);
    w.ack(T + 3.220);
    for (int id : blocked) not_at_b[id] = true;

    struct Placed {
        uint64_t ts;
        int id;
        std::vector<uint8_t> data;
    };
    std::vector<Placed> pa, pb;
    const uint64_t delay = ns(opt.delay_s);
    const int64_t offset = static_cast<int64_t>(opt.clock_offset_s * 1e9);
    TwoPoint out;
    for (const Event& e : t.events) {
        const uint64_t sent = e.t_ns;
        if (!not_at_a[e.id]) {
            TcpSpec s = e.spec;
            uint64_t ta = sent;
            if (e.origin == Origin::kServer) {
                ta = sent + delay;
                s.ttl = static_cast<uint8_t>(s.ttl - opt.ttl_hops);
            }
            pa.push_back(Placed{ta, e.id, frame(Link::kEthernet, ip_tcp(s))});
        }
        if (!not_at_b[e.id]) {
            TcpSpec s = e.spec;
            uint64_t tb = sent;
            if (e.origin == Origin::kClient) {
                tb = sent + delay;
                s.ttl = static_cast<uint8_t>(s.ttl - opt.ttl_hops);
            }
            tb = static_cast<uint64_t>(static_cast<int64_t>(tb) + offset);
            // NAT between the points: the client's address (and port) differ at B.
            for (std::string* addr : {&s.src, &s.dst}) {
                if (opt.nat && *addr == C) *addr = "198.19.0.7";
            }
            if (opt.nat && opt.nat_ports) {
                if (s.src == "198.19.0.7" && s.sport == 40100) s.sport = 50100;
                if (s.dst == "198.19.0.7" && s.dport == 40100) s.dport = 50100;
            }
            pb.push_back(Placed{tb, e.id, frame(Link::kEthernet, ip_tcp(s))});
        }
        if (!not_at_a[e.id] && !not_at_b[e.id]) {
            out.matched++;
            if (e.origin == Origin::kClient)
                out.matched_a_to_b++;
            else
                out.matched_b_to_a++;
        }
    }
    auto by_time = [](const Placed& x, const Placed& y) { return x.ts < y.ts; };
    std::stable_sort(pa.begin(), pa.end(), by_time);
    std::stable_sort(pb.begin(), pb.end(), by_time);
    std::map<int, int> frame_a, frame_b;
    for (size_t i = 0; i < pa.size(); i++) {
        frame_a[pa[i].id] = static_cast<int>(i + 1);
        out.a.push_back(OutPkt{pa[i].ts, pa[i].data, 0});
    }
    for (size_t i = 0; i < pb.size(); i++) {
        frame_b[pb[i].id] = static_cast<int>(i + 1);
        out.b.push_back(OutPkt{pb[i].ts, pb[i].data, 0});
    }
    for (int id : blocked) out.blocked_frames_a.push_back(frame_a[id]);
    out.lost_frame_a = frame_a[lost];
    out.injected_frame_a = frame_a[injected];
    out.b_only_frame_b = frame_b[b_only];

    if (opt.nat && opt.nat_ports) out.nat_args.push_back("198.18.1.5:40100=198.19.0.7:50100");
    if (opt.nat) out.nat_args.push_back("198.18.1.5=198.19.0.7");

    // Packets per group at the point that saw them, counted from the build.
    // Web client->server at A: syn, ack, data(lost), resend, ack_to, ack,
    // fin, ack = 8. Server->client at A from 198.18.0.80:8443: synack and
    // the injected RST = 2. Web server->client at B: synack, ack, 3 data,
    // resend, fin = 7.
    out.verdicts = {
        "VERDICT: packets from 198.18.1.5 to 198.18.0.10:3306 seen at A, never at B (5 packets: "
        "frames " +
            frames_of(out.blocked_frames_a) +
            "): they travel A->B, so they were dropped between the two points",
        "VERDICT: 1 of 8 packets from 198.18.1.5 to 198.18.0.80:8080 seen at A were never seen "
        "at B (frame " +
            std::to_string(out.lost_frame_a) +
            "): they travel A->B, so they were dropped between the two points",
        "VERDICT: 1 of 2 packets from 198.18.0.80:8443 to 198.18.1.5 seen at A were never seen "
        "at B (frame " +
            std::to_string(out.injected_frame_a) +
            "): they travel B->A, yet B never saw them: something between the points sent them "
            "(a firewall's or load balancer's RST?)",
        "VERDICT: 1 of 7 packets from 198.18.0.80:8080 to 198.18.1.5 seen at B were never seen "
        "at A (B frame " +
            std::to_string(out.b_only_frame_b) +
            "): they travel B->A, so they were dropped between the two points",
    };
    return out;
}

}  // namespace linecap::tests::diag
