// Library tests of the TCP diagnosis and the two-point comparison against
// captures whose truth is known from how they were built (scenarios.cc).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <random>
#include <sstream>

#include "ctl/diag/capture_file.hh"
#include "ctl/diag/compare.hh"
#include "ctl/diag/diagnose.hh"
#include "ctl/diag/live.hh"
#include "packet/decode.hh"
#include "packet/tcp_tracker.hh"
#include "tests/diag/capture_builder.hh"
#include "tests/diag/scenarios.hh"

// Counts heap allocations while armed, to prove the per-packet path has none.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<bool> g_count_allocs{false};
std::atomic<uint64_t> g_allocs{0};
}  // namespace

void* operator new(std::size_t n) {
    if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs++;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs++;
    return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace fs = std::filesystem;
using namespace linecap::ctl::diag;
namespace tb = linecap::tests::diag;

namespace {

class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "diag_test.XXXXXX").string();
        char* p = mkdtemp(tmpl.data());
        if (p == nullptr) std::abort();
        path_ = p;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }

private:
    std::string path_;
};

/* A tracker the test needs: one that cannot be made fails the test run. */
TcpTracker tracker(uint32_t capacity, TcpTracker::ReleaseFn fn = nullptr, void* ctx = nullptr) {
    auto t = TcpTracker::create(capacity, fn, ctx);
    if (!t) {
        ADD_FAILURE() << t.error();
        std::abort();
    }
    return std::move(*t);
}

/* Address space capped at what the process maps now plus 256 MiB, for as
 * long as it lives: a tracker of 2^24 connections (12 GiB of slots) cannot
 * be mapped under it. */
class AddressSpaceCap {
public:
    AddressSpaceCap() {
        getrlimit(RLIMIT_AS, &saved_);
        FILE* f = std::fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (f == nullptr || std::fscanf(f, "%lu", &pages) != 1) std::abort();
        std::fclose(f);
        rlimit cap = saved_;
        cap.rlim_cur = pages * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) + (rlim_t{256} << 20);
        if (setrlimit(RLIMIT_AS, &cap) != 0) std::abort();
    }
    ~AddressSpaceCap() { setrlimit(RLIMIT_AS, &saved_); }

private:
    rlimit saved_{};
};

std::vector<std::string> conn_lines(const DiagnoseReport& r) {
    std::vector<std::string> v;
    for (const auto& c : r.connections) {
        v.push_back(to_string(c.summary.client) + " -> " + to_string(c.summary.server) + "  " +
                    verdict_name(c.summary.verdict) + ": " + c.summary.reason);
    }
    return v;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> v;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
}

bool has_line(const std::string& text, const std::string& line) {
    for (const auto& l : lines_of(text)) {
        if (l == line) return true;
    }
    return false;
}

void expect_story(const DiagnoseReport& r, const tb::DiagnoseStory& st) {
    ASSERT_EQ(diagnose_exit_status(r), 0);
    EXPECT_EQ(conn_lines(r), st.lines);
    ASSERT_EQ(r.connections.size(), st.lines.size());
    for (size_t i = 0; i < st.also.size(); i++) {
        std::vector<std::string> notes = r.connections[i].summary.notes;
        EXPECT_EQ(notes, st.also[i]) << st.lines[i];
    }
    const std::string text = format_diagnose_text(r);
    for (const auto& l : st.lines) EXPECT_TRUE(has_line(text, "  " + l)) << l << "\n" << text;
    for (const auto& a : st.also) {
        for (const auto& l : a) EXPECT_TRUE(has_line(text, "      also " + l)) << l;
    }
    EXPECT_TRUE(has_line(text, st.verdict)) << text;
}

}  // namespace

TEST(Decode, SameSegmentThroughEveryLinkType) {
    tb::TcpSpec s;
    s.src = "198.18.1.5";
    s.dst = "198.18.0.80";
    s.sport = 40000;
    s.dport = 8080;
    s.seq = 123456;
    s.ack = 654321;
    s.flags = tb::PSH | tb::ACK;
    s.payload = 77;
    s.ip_id = 4242;
    s.ttl = 61;
    const auto ip = tb::ip_tcp(s);
    for (auto l : {tb::Link::kEthernet, tb::Link::kVlan, tb::Link::kQinQ, tb::Link::kSll,
                   tb::Link::kSll2, tb::Link::kRaw}) {
        const auto f = tb::frame(l, ip);
        DecodedPacket p;
        int lt = tb::linktype_of(l) == 101 ? 12 : tb::linktype_of(l);
        ASSERT_EQ(decode_packet(lt, f.data(), f.size(), p), DecodeStatus::kOk);
        EXPECT_EQ(to_string(p.src), "198.18.1.5");
        EXPECT_EQ(to_string(p.dst), "198.18.0.80");
        EXPECT_EQ(p.sport, 40000);
        EXPECT_EQ(p.dport, 8080);
        EXPECT_EQ(p.seq, 123456u);
        EXPECT_EQ(p.ack, 654321u);
        EXPECT_EQ(p.tcp_flags, tb::PSH | tb::ACK);
        EXPECT_EQ(p.payload_len, 77u);
        EXPECT_EQ(p.ip_id, 4242u);
        EXPECT_EQ(p.ttl, 61);
        // Cut inside the TCP header: the IP part is known, the segment not.
        DecodedPacket q;
        EXPECT_EQ(decode_packet(lt, f.data(), f.size() - 77 - 10, q), DecodeStatus::kTruncated);
        // Cut in the payload (snaplen): the length on the wire still counts.
        ASSERT_EQ(decode_packet(lt, f.data(), f.size() - 70, q), DecodeStatus::kOk);
        EXPECT_EQ(q.payload_len, 77u);
        EXPECT_EQ(q.payload_caplen, 7u);
    }
}

TEST(Decode, BsdLoopbackAndNonIp) {
    tb::TcpSpec s;
    s.src = "198.18.1.5";
    s.dst = "198.18.0.80";
    s.sport = 40000;
    s.dport = 80;
    s.flags = tb::SYN;
    auto f = tb::ip_tcp(s);
    f.insert(f.begin(), {2, 0, 0, 0});  // AF_INET, host order
    DecodedPacket p;
    for (int lt : {0, 108}) {
        ASSERT_EQ(decode_packet(lt, f.data(), f.size(), p), DecodeStatus::kOk);
        EXPECT_EQ(p.dport, 80);
    }
    const std::vector<uint8_t> arp = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x06, 0, 1};
    EXPECT_EQ(decode_packet(1, arp.data(), arp.size(), p), DecodeStatus::kNotIp);
    EXPECT_EQ(decode_packet(105, arp.data(), arp.size(), p), DecodeStatus::kUnsupportedLink);
    EXPECT_FALSE(linktype_supported(105));
    const auto udp = tb::ip_udp("198.18.1.5", "198.18.0.53", 5353, 53, 30, 9);
    ASSERT_EQ(decode_packet(12, udp.data(), udp.size(), p), DecodeStatus::kOk);
    EXPECT_EQ(p.proto, kProtoUdp);
    EXPECT_EQ(p.payload_len, 30u);
    TcpTracker t = tracker(2);
    EXPECT_FALSE(t.update(p, 0, FrameRef{}));
    EXPECT_EQ(t.counters().not_tcp, 1u);
}

TEST(Decode, Ipv6AndEndpoints) {
    tb::TcpSpec s;
    s.src = "2001:db8::5";
    s.dst = "2001:db8::80";
    s.sport = 1;
    s.dport = 443;
    s.flags = tb::SYN;
    const auto f = tb::frame(tb::Link::kEthernet, tb::ip_tcp(s));
    DecodedPacket p;
    ASSERT_EQ(decode_packet(1, f.data(), f.size(), p), DecodeStatus::kOk);
    EXPECT_EQ(to_string(Endpoint{p.src, p.sport}), "[2001:db8::5]:1");
    EXPECT_FALSE(p.has_ip_id);
    EXPECT_EQ(p.payload_len, 0u);

    Endpoint e;
    bool port = false;
    EXPECT_TRUE(parse_endpoint("198.18.0.1:80", e, port));
    EXPECT_TRUE(port);
    EXPECT_EQ(e.port, 80);
    EXPECT_TRUE(parse_endpoint("2001:db8::1", e, port));
    EXPECT_FALSE(port);
    EXPECT_TRUE(parse_endpoint("[2001:db8::1]:443", e, port));
    EXPECT_EQ(e.port, 443);
    EXPECT_FALSE(parse_endpoint("198.18.0.1:99999", e, port));
    EXPECT_FALSE(parse_endpoint("nope", e, port));
    EXPECT_FALSE(parse_endpoint("[2001:db8::1", e, port));
}

TEST(Decode, RandomBytesNeverReadOutOfBounds) {
    std::mt19937 rng(7);
    std::vector<uint8_t> buf;
    DecodedPacket p;
    for (int i = 0; i < 200000; i++) {
        buf.resize(rng() % 120);
        for (auto& b : buf) b = static_cast<uint8_t>(rng());
        // Make many of them look like IP so the deeper paths run.
        if (buf.size() > 14 && (i & 1)) {
            buf[12] = (i & 2) ? 0x08 : 0x86;
            buf[13] = (i & 2) ? 0x00 : 0xdd;
            buf[14] = (i & 2) ? 0x45 : 0x60;
        }
        for (int lt : {0, 1, 12, 113, 276}) (void)decode_packet(lt, buf.data(), buf.size(), p);
    }
    SUCCEED();
}

class DiagnoseLinks : public ::testing::TestWithParam<tb::Link> {};

TEST_P(DiagnoseLinks, StoriesGiveTheirVerdicts) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    const std::string path = dir.file("stories.pcap");
    ASSERT_TRUE(tb::write_pcap(path, tb::linktype_of(GetParam()), st.trace.packets(GetParam())));
    const DiagnoseReport r = diagnose_files({path});
    expect_story(r, st);
    EXPECT_EQ(r.frames, st.trace.events.size());
    EXPECT_EQ(r.tcp_packets, st.trace.events.size());
}

INSTANTIATE_TEST_SUITE_P(AllLinks, DiagnoseLinks,
                         ::testing::Values(tb::Link::kEthernet, tb::Link::kVlan, tb::Link::kQinQ,
                                           tb::Link::kSll, tb::Link::kSll2, tb::Link::kRaw));

TEST(Diagnose, StoryDetails) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    const std::string path = dir.file("s.pcap");
    ASSERT_TRUE(tb::write_pcap(path, 1, st.trace.packets(tb::Link::kEthernet)));
    const DiagnoseReport r = diagnose_files({path});
    ASSERT_EQ(r.connections.size(), 9u);
    const auto& unanswered = r.connections[1];
    EXPECT_EQ(unanswered.summary.handshake, Handshake::kUnanswered);
    EXPECT_EQ(unanswered.conn.syn_count, 4u);
    EXPECT_EQ(unanswered.summary.syn_intervals_s, (std::vector<double>{1.0, 2.0, 4.0}));
    const auto& reset = r.connections[2];
    EXPECT_EQ(reset.summary.close, Close::kRst);
    EXPECT_EQ(reset.conn.rst_frame.frame, static_cast<uint32_t>(st.rst_frame_reset));
    EXPECT_EQ(to_string(reset.conn.ep[reset.conn.rst_dir]), "198.18.0.80:8082");
    const auto& rtx = r.connections[5];
    const auto& cd = rtx.conn.dir[rtx.conn.client];
    const auto& sd = rtx.conn.dir[1 - rtx.conn.client];
    EXPECT_EQ(sd.retransmissions, 1u);
    EXPECT_EQ(sd.retrans_bytes, 1000u);
    EXPECT_EQ(cd.dup_acks, 3u);
    EXPECT_EQ(cd.dupack_runs3, 1u);
    EXPECT_EQ(cd.zero_windows, 1u);
    EXPECT_EQ(sd.bytes, 5000u);
    EXPECT_EQ(rtx.summary.close, Close::kFinBoth);
    EXPECT_EQ(r.connections[6].summary.handshake, Handshake::kMidStream);
    EXPECT_TRUE(r.connections[6].summary.roles_guessed);

    const auto j = diagnose_json(r);
    EXPECT_EQ(j["connections"][0]["verdict"], "REFUSED");
    EXPECT_EQ(j["connections"][1]["syn_retries"], 3);
    EXPECT_EQ(j["connections"][2]["reset"]["by"], "server");
    EXPECT_EQ(j["connections"][2]["reset"]["bytes_server_to_client"], 500);
    EXPECT_EQ(j["connections"][2]["reset"]["frame"], st.rst_frame_reset);
    EXPECT_EQ(j["connections"][5]["server_to_client"]["retransmission_frames"][0],
              st.retrans_frame);
    EXPECT_EQ(j["summary"]["problems"], 6);
    EXPECT_EQ(j["verdict"], st.verdict);
}

TEST(Diagnose, SnaplenCutFramesStillCountBytes) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    const std::string path = dir.file("cut.pcap");
    // 14 Ethernet + 40 IPv6 + 24 TCP with MSS: every header survives.
    ASSERT_TRUE(tb::write_pcap(path, 1, st.trace.packets(tb::Link::kEthernet), 80));
    expect_story(diagnose_files({path}), st);
}

/* A table too large for memory is an error the caller reports, not an
 * exception: capd's workers own trackers. */
TEST(Tracker, CreateReportsWhatCannotBeAllocated) {
    AddressSpaceCap cap;
    auto t = TcpTracker::create(1u << 24);
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error(), "TCP tracker of 16777216 connections: cannot map 11904 MiB for its slots");
}

TEST(Diagnose, TrackerTooLargeForMemoryIsEveryFilesError) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    const std::string path = dir.file("story.pcap");
    ASSERT_TRUE(tb::write_pcap(path, 1, st.trace.packets(tb::Link::kEthernet)));
    DiagnoseOptions opt;
    opt.max_flows = 1u << 24;
    DiagnoseReport r;
    {
        AddressSpaceCap cap;
        r = diagnose_files({path, path}, opt);
    }
    ASSERT_EQ(r.files.size(), 2u);
    for (const auto& f : r.files) EXPECT_NE(f.error.find("cannot map"), std::string::npos);
    EXPECT_TRUE(r.connections.empty());
    EXPECT_EQ(diagnose_exit_status(r), 1);
}

TEST(Diagnose, PcapngWithTwoInterfacesOfOneLinkType) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    auto pkts = st.trace.packets(tb::Link::kEthernet);
    for (size_t i = 0; i < pkts.size(); i++) pkts[i].ifid = static_cast<uint32_t>(i % 2);
    const std::string path = dir.file("two.pcapng");
    ASSERT_TRUE(tb::write_pcapng(path, {1, 1}, pkts));
    const DiagnoseReport r = diagnose_files({path});
    ASSERT_EQ(r.files.size(), 1u);
    EXPECT_TRUE(r.files[0].pcapng);
    expect_story(r, st);
}

TEST(Diagnose, PcapngWithDifferentLinkTypesIsAClearError) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    auto pkts = st.trace.packets(tb::Link::kEthernet);
    pkts[3].ifid = 1;
    const std::string path = dir.file("mixed.pcapng");
    ASSERT_TRUE(tb::write_pcapng(path, {1, 113}, pkts));
    const DiagnoseReport r = diagnose_files({path});
    EXPECT_EQ(diagnose_exit_status(r), 1);
    EXPECT_NE(r.files[0].error.find("different link types"), std::string::npos) << r.files[0].error;
}

TEST(Diagnose, RotatedFilesReadAsOneCapture) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    const auto pkts = st.trace.packets(tb::Link::kEthernet);
    const size_t half = 20;  // inside connection d, before its RST
    ASSERT_LT(static_cast<size_t>(st.rst_frame_reset), pkts.size());
    ASSERT_GT(static_cast<size_t>(st.rst_frame_reset), half);
    std::vector<tb::OutPkt> p1(pkts.begin(), pkts.begin() + half),
        p2(pkts.begin() + half, pkts.end());
    ASSERT_TRUE(tb::write_pcap(dir.file("cap0"), 1, p1));
    ASSERT_TRUE(tb::write_pcap(dir.file("cap1"), 1, p2));
    const DiagnoseReport r = diagnose_files({dir.file("cap0"), dir.file("cap1")});
    ASSERT_EQ(r.connections.size(), st.lines.size());
    for (size_t i = 0; i < st.lines.size(); i++) {
        const std::string v = verdict_name(r.connections[i].summary.verdict);
        EXPECT_NE(st.lines[i].find("  " + v + ": "), std::string::npos) << st.lines[i];
    }
    EXPECT_NE(r.connections[2].summary.reason.find("(cap1#" +
                                                   std::to_string(st.rst_frame_reset - half) + ")"),
              std::string::npos)
        << r.connections[2].summary.reason;
    EXPECT_EQ(diagnose_json(r)["connections"][2]["reset"]["frame"], st.rst_frame_reset);
}

TEST(Tracker, FullTableEvictsLeastRecentAndCounts) {
    struct Sink {
        std::vector<uint16_t> released;
        static void fn(void* ctx, const TcpConn& c, TcpTracker::Release why) {
            EXPECT_EQ(why, TcpTracker::Release::kEvicted);
            EXPECT_EQ(to_string(c.ep[0]), "198.18.0.80:80");
            static_cast<Sink*>(ctx)->released.push_back(c.ep[1].port);
        }
    } sink;
    TcpTracker t = tracker(4, &Sink::fn, &sink);
    for (int i = 0; i < 10; i++) {
        tb::TcpSpec s;
        s.src = "198.18.1.5";
        s.dst = "198.18.0.80";
        s.sport = static_cast<uint16_t>(41000 + i);
        s.dport = 80;
        s.flags = tb::SYN;
        const auto ip = tb::ip_tcp(s);
        DecodedPacket p;
        ASSERT_EQ(decode_packet(12, ip.data(), ip.size(), p), DecodeStatus::kOk);
        // Touch the first connection again each time: it must survive.
        EXPECT_TRUE(t.update(p, 1000 + i, FrameRef{0, static_cast<uint32_t>(i + 1)}));
        if (i > 0) {
            s.sport = 41000;
            const auto ip0 = tb::ip_tcp(s);
            ASSERT_EQ(decode_packet(12, ip0.data(), ip0.size(), p), DecodeStatus::kOk);
            EXPECT_TRUE(t.update(p, 1000 + i, FrameRef{}));
        }
    }
    EXPECT_EQ(t.size(), 4u);
    EXPECT_EQ(t.counters().evicted, 6u);
    EXPECT_EQ(sink.released, (std::vector<uint16_t>{41001, 41002, 41003, 41004, 41005, 41006}));
    std::vector<uint16_t> left;  // least recently updated first
    t.for_each([&](const TcpConn& c) { left.push_back(c.ep[1].port); });
    EXPECT_EQ(left, (std::vector<uint16_t>{41007, 41008, 41009, 41000}));
}

TEST(Tracker, UpdateNeverAllocates) {
    const auto st = tb::diagnose_story();
    std::vector<std::vector<uint8_t>> ips;
    for (const auto& e : st.trace.events) ips.push_back(tb::ip_tcp(e.spec));
    TcpTracker t = tracker(4);  // small: evictions happen too
    DecodedPacket p;
    g_allocs = 0;
    g_count_allocs = true;
    uint32_t n = 0;
    for (int round = 0; round < 3; round++) {
        for (const auto& ip : ips) {
            (void)decode_packet(12, ip.data(), ip.size(), p);
            (void)t.update(p, n, FrameRef{0, ++n});
        }
    }
    g_count_allocs = false;
    EXPECT_EQ(g_allocs.load(), 0u);
    EXPECT_GT(t.counters().evicted, 0u);
}

TEST(Tracker, NewSynOnAFinishedTupleStartsANewConnection) {
    tb::Trace tr;
    tb::Conversation c1(tr, "198.18.1.5", 40000, "198.18.0.80", 80, 100, 200);
    c1.syn(1.0);
    c1.synack(1.001);
    c1.ack(1.002);
    c1.data(1.003, true, 10);
    c1.fin(1.004, true);
    c1.fin(1.005, false);
    c1.ack(1.006);
    tb::Conversation c2(tr, "198.18.1.5", 40000, "198.18.0.80", 80, 90000, 200);
    c2.syn(2.0);
    c2.refuse(2.001);
    TempDir dir;
    ASSERT_TRUE(tb::write_pcap(dir.file("reuse.pcap"), 101, tr.packets(tb::Link::kRaw)));
    const DiagnoseReport r = diagnose_files({dir.file("reuse.pcap")});
    ASSERT_EQ(r.connections.size(), 2u);
    EXPECT_EQ(r.connections[0].summary.verdict, Verdict::kRefused);
    EXPECT_EQ(r.connections[1].summary.verdict, Verdict::kOk);
}

TEST(Tracker, RefusedTwiceOnOnePortIsTwoAttempts) {
    tb::Trace tr;
    tb::Conversation c(tr, "198.18.1.5", 40000, "198.18.0.80", 80, 100, 0);
    c.syn(1.0);
    c.refuse(1.001);
    c.syn_new_isn(2.0, 5000);
    c.refuse(2.001);
    TempDir dir;
    ASSERT_TRUE(tb::write_pcap(dir.file("r.pcap"), 101, tr.packets(tb::Link::kRaw)));
    const DiagnoseReport r = diagnose_files({dir.file("r.pcap")});
    ASSERT_EQ(r.connections.size(), 1u);
    EXPECT_EQ(conn_lines(r)[0],
              "198.18.1.5:40000 -> 198.18.0.80:80  REFUSED: SYN answered by RST from server "
              "(2 attempts)");
}

TEST(Tracker, SingleUnansweredSynSaysHowLongTheCaptureWaited) {
    tb::Trace tr;
    tb::Conversation c(tr, "198.18.1.5", 40000, "198.18.0.80", 80, 100, 0);
    c.syn(1.0);
    tb::Conversation o(tr, "198.18.1.5", 40001, "198.18.0.80", 81, 100, 0);
    o.syn(1.5);
    TempDir dir;
    ASSERT_TRUE(tb::write_pcap(dir.file("u.pcap"), 101, tr.packets(tb::Link::kRaw)));
    const DiagnoseReport r = diagnose_files({dir.file("u.pcap")});
    ASSERT_EQ(r.connections.size(), 2u);
    EXPECT_EQ(r.connections[0].summary.reason,
              "SYN not answered, no retry seen (the capture ends 500 ms later)");
}

namespace {

CompareReport run_two_point(const tb::TwoPoint& tp, const TempDir& dir,
                            const std::vector<std::string>& nat = {}) {
    EXPECT_TRUE(tb::write_pcap(dir.file("a.pcap"), 1, tp.a));
    EXPECT_TRUE(tb::write_pcap(dir.file("b.pcap"), 1, tp.b));
    CompareOptions opt;
    for (const auto& n : nat) {
        auto rule = parse_nat_rule(n);
        EXPECT_TRUE(rule.ok()) << n;
        if (rule) opt.nat.push_back(*rule);
    }
    return compare_files(dir.file("a.pcap"), dir.file("b.pcap"), opt);
}

void expect_two_point(const CompareReport& r, const tb::TwoPoint& tp, double offset_ms) {
    ASSERT_EQ(compare_exit_status(r), 0);
    EXPECT_EQ(r.matched, tp.matched);
    EXPECT_EQ(r.a_only, 7u);  // 5 blocked SYNs, the lost segment, the injected RST
    EXPECT_EQ(r.b_only, 1u);
    std::vector<std::string> got;
    for (const auto& f : r.findings) got.push_back("VERDICT: " + finding_text(f));
    EXPECT_EQ(got, tp.verdicts);
    const std::string text = format_compare_text(r);
    for (const auto& v : tp.verdicts) EXPECT_TRUE(has_line(text, v)) << v << "\n" << text;

    const int64_t d = 2500000;
    const int64_t off = static_cast<int64_t>(offset_ms * 1e6);
    EXPECT_EQ(r.a_to_b.count, tp.matched_a_to_b);
    EXPECT_EQ(r.b_to_a.count, tp.matched_b_to_a);
    for (int64_t v : {r.a_to_b.min, r.a_to_b.median, r.a_to_b.p99, r.a_to_b.max}) {
        EXPECT_NEAR(static_cast<double>(v), static_cast<double>(off + d), 2.0);
    }
    for (int64_t v : {r.b_to_a.min, r.b_to_a.median, r.b_to_a.p99, r.b_to_a.max}) {
        EXPECT_NEAR(static_cast<double>(v), static_cast<double>(off - d), 2.0);
    }
    ASSERT_TRUE(r.offset_estimated);
    EXPECT_NEAR(static_cast<double>(r.offset_ns), static_cast<double>(off), 2.0);
    EXPECT_NEAR(static_cast<double>(r.min_owd_ns), static_cast<double>(d), 2.0);
}

}  // namespace

TEST(Compare, FirewallDropsAndDelay) {
    TempDir dir;
    const auto tp = tb::two_point();
    const CompareReport r = run_two_point(tp, dir);
    expect_two_point(r, tp, 0.0);
    const std::string text = format_compare_text(r);
    EXPECT_TRUE(has_line(text, "  packets travelling A->B: n=" + std::to_string(tp.matched_a_to_b) +
                                   " min 2.500 ms, median 2.500 ms, p99 2.500 ms, max 2.500 ms"))
        << text;
    EXPECT_TRUE(
        has_line(text, "  packets travelling B->A: n=" + std::to_string(tp.matched_b_to_a) +
                           " min -2.500 ms, median -2.500 ms, p99 -2.500 ms, max -2.500 ms"))
        << text;
    const auto j = compare_json(r);
    EXPECT_EQ(j["findings"][0]["frames"].get<std::vector<int>>(), tp.blocked_frames_a);
    EXPECT_EQ(j["findings"][0]["missing_at"], "B");
    EXPECT_DOUBLE_EQ(j["clock_offset"]["min_one_way_delay_ms"].get<double>(), 2.5);
}

TEST(Compare, ClockOffsetIsEstimatedNotMistakenForDelay) {
    TempDir dir;
    tb::TwoPointOptions o;
    o.clock_offset_s = 0.100;
    const auto tp = tb::two_point(o);
    expect_two_point(run_two_point(tp, dir), tp, 100.0);
}

TEST(Compare, NatBetweenThePoints) {
    TempDir dir;
    tb::TwoPointOptions o;
    o.nat = true;
    const auto tp = tb::two_point(o);
    expect_two_point(run_two_point(tp, dir, tp.nat_args), tp, 0.0);

    // Without the rule nothing matches, and the report says why that may be.
    const CompareReport bare = run_two_point(tp, dir);
    EXPECT_EQ(bare.matched, 0u);
    ASSERT_FALSE(bare.notes.empty());
    EXPECT_NE(bare.notes[0].find("--nat"), std::string::npos);
}

TEST(Compare, NatWithPorts) {
    TempDir dir;
    tb::TwoPointOptions o;
    o.nat = true;
    o.nat_ports = true;
    const auto tp = tb::two_point(o);
    ASSERT_EQ(tp.nat_args.size(), 2u);
    const CompareReport r = run_two_point(tp, dir, tp.nat_args);
    expect_two_point(r, tp, 0.0);
    bool shown = false;
    for (const auto& fc : r.flows) {
        if (to_string(fc.dir[0].src) == "198.18.1.5:40100") {
            EXPECT_EQ(to_string(fc.dir[0].src_b), "198.19.0.7:50100");
            shown = true;
        }
    }
    EXPECT_TRUE(shown);
}

TEST(Compare, Ipv6HasNoIdButStillMatches) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    // A on the client side, B on the server side, 1 ms each way; B misses
    // the IPv6 client's data segment.
    std::vector<tb::OutPkt> a, b;
    int lost_frame = 0;
    int v6_client_at_a = 0;
    for (const auto& e : st.trace.events) {
        const bool client = e.origin == tb::Origin::kClient;
        const auto f = tb::frame(tb::Link::kEthernet, tb::ip_tcp(e.spec));
        a.push_back(tb::OutPkt{e.t_ns + (client ? 0 : 1000000), f, 0});
        const bool v6 = e.spec.src.find(':') != std::string::npos;
        if (v6 && client) v6_client_at_a++;
        if (v6 && client && e.spec.payload == 50) {
            lost_frame = static_cast<int>(a.size());
            continue;
        }
        b.push_back(tb::OutPkt{e.t_ns + (client ? 1000000 : 0), f, 0});
    }
    ASSERT_GT(lost_frame, 0);
    ASSERT_TRUE(tb::write_pcap(dir.file("a6.pcap"), 1, a));
    ASSERT_TRUE(tb::write_pcap(dir.file("b6.pcap"), 1, b));
    const CompareReport r = compare_files(dir.file("a6.pcap"), dir.file("b6.pcap"));
    ASSERT_EQ(r.findings.size(), 1u);
    EXPECT_EQ(finding_text(r.findings[0]),
              "1 of " + std::to_string(v6_client_at_a) +
                  " packets from 2001:db8::5 to [2001:db8::80]:443 seen at A were never seen at "
                  "B (frame " +
                  std::to_string(lost_frame) +
                  "): they travel A->B, so they were dropped between the two points");
    EXPECT_EQ(r.matched, st.trace.events.size() - 1);
}

TEST(Compare, EmptyB) {
    TempDir dir;
    const auto tp = tb::two_point();
    ASSERT_TRUE(tb::write_pcap(dir.file("a.pcap"), 1, tp.a));
    ASSERT_TRUE(tb::write_pcap(dir.file("b.pcap"), 1, {}));
    const CompareReport r = compare_files(dir.file("a.pcap"), dir.file("b.pcap"));
    EXPECT_EQ(compare_exit_status(r), 0);
    EXPECT_EQ(r.matched, 0u);
    EXPECT_EQ(r.a_only, tp.a.size());
    ASSERT_FALSE(r.notes.empty());
    EXPECT_NE(r.notes[0].find("B holds no IP packets"), std::string::npos);
}

TEST(Compare, NatRuleSyntax) {
    EXPECT_TRUE(parse_nat_rule("198.18.1.5=198.19.0.7").ok());
    EXPECT_TRUE(parse_nat_rule("198.18.1.5:80=198.19.0.7:8080").ok());
    EXPECT_TRUE(parse_nat_rule("[2001:db8::1]:80=2001:db8::2").ok());
    EXPECT_FALSE(parse_nat_rule("198.18.1.5").ok());
    EXPECT_FALSE(parse_nat_rule("198.18.1.5=2001:db8::2").ok());
    EXPECT_FALSE(parse_nat_rule("x=198.19.0.7").ok());
    EXPECT_FALSE(parse_nat_rule("198.18.1.5=").ok());
}

// Hyperscan-style argument checks: every bad capture gets a clear message.
TEST(BadInput, Files) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    const std::string good = dir.file("good.pcap");
    ASSERT_TRUE(tb::write_pcap(good, 1, st.trace.packets(tb::Link::kEthernet)));
    const auto bytes = tb::read_bytes(good);

    struct Case {
        std::string name;
        std::vector<uint8_t> content;
        int status;
        std::string message;  // part of the error
    };
    std::vector<Case> cases = {
        {"empty.pcap", {}, 1, "empty file (0 bytes)"},
        {"short.pcap", {bytes.begin(), bytes.begin() + 10}, 1, "truncated inside the file header"},
        {"header.pcap", {bytes.begin(), bytes.begin() + 24}, 0, ""},
        {"cut.pcap", {bytes.begin(), bytes.end() - 5}, 2, "truncated after frame"},
        {"cut_hdr.pcap", {bytes.begin(), bytes.begin() + 24 + 8}, 2, "truncated after frame 0"},
        {"text.pcap",
         {'h', 'e', 'l', 'l', 'o', '\n', 'w', 'o', 'r', 'l', 'd', '\n'},
         1,
         "not a pcap or pcapng capture (starts with 68 65 6c 6c: looks like text)"},
        {"gz.pcap",
         {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14},
         1,
         "gzip data; gunzip it first"},
    };
    // A link type the decoder does not know (802.11).
    std::vector<uint8_t> wifi(bytes.begin(), bytes.begin() + 24);
    wifi[20] = 105;
    cases.push_back({"wifi.pcap", wifi, 1, "link type IEEE802_11 (105) is not supported"});

    for (const auto& c : cases) {
        const std::string path = dir.file(c.name);
        ASSERT_TRUE(tb::write_bytes(path, c.content));
        const DiagnoseReport r = diagnose_files({path});
        EXPECT_EQ(diagnose_exit_status(r), c.status) << c.name << ": " << r.files[0].error;
        EXPECT_NE(r.files[0].error.find(c.message), std::string::npos)
            << c.name << ": " << r.files[0].error;
        const CompareReport cr = compare_files(path, good);
        EXPECT_EQ(compare_exit_status(cr), c.status) << c.name;
        const CompareReport cr2 = compare_files(good, path);
        EXPECT_EQ(compare_exit_status(cr2), c.status) << c.name;
    }
    const DiagnoseReport missing = diagnose_files({dir.file("nope.pcap")});
    EXPECT_EQ(diagnose_exit_status(missing), 1);
    EXPECT_NE(missing.files[0].error.find("No such file"), std::string::npos);
    const DiagnoseReport isdir = diagnose_files({dir.file("")});
    EXPECT_NE(isdir.files[0].error.find("is a directory"), std::string::npos);

    // One bad file among good ones: the good ones are still analysed.
    const DiagnoseReport mixed = diagnose_files({good, dir.file("empty.pcap")});
    EXPECT_EQ(diagnose_exit_status(mixed), 1);
    EXPECT_EQ(mixed.connections.size(), st.lines.size());
}

TEST(BadInput, EveryTruncationAndCorruptionIsSurvived) {
    TempDir dir;
    const auto st = tb::diagnose_story();
    const std::string good = dir.file("good.pcapng");
    ASSERT_TRUE(tb::write_pcapng(good, {1}, st.trace.packets(tb::Link::kEthernet)));
    const auto bytes = tb::read_bytes(good);
    // A fresh name each time: truncating a file in place is slow on some disks.
    int n = 0;
    auto next_path = [&] { return dir.file("bad" + std::to_string(n++)); };
    DiagnoseOptions small;
    small.max_flows = 16;
    for (size_t cut = 0; cut < bytes.size(); cut += 37) {
        const std::string path = next_path();
        ASSERT_TRUE(tb::write_bytes(path, {bytes.begin(), bytes.begin() + cut}));
        const DiagnoseReport r = diagnose_files({path}, small);
        const int status = diagnose_exit_status(r);
        // A cut on a block boundary leaves a shorter but whole file.
        EXPECT_TRUE(status == 1 || status == 2 || (status == 0 && cut >= 28)) << cut;
        EXPECT_LE(r.frames, st.trace.events.size());
    }
    std::mt19937 rng(11);
    for (int i = 0; i < 200; i++) {
        auto b = bytes;
        for (int k = 0; k < 8; k++) b[28 + rng() % (b.size() - 28)] = static_cast<uint8_t>(rng());
        const std::string path = next_path();
        ASSERT_TRUE(tb::write_bytes(path, b));
        (void)diagnose_files({path}, small);
        (void)compare_files(path, good);
    }
    SUCCEED();
}

// ---------------------------------------------------------------- live tables

namespace {

/* Feeds the story's packets into n trackers, choosing one per packet, as
 * capd's workers would receive them; returns the trackers' views. */
struct LiveTables {
    std::vector<std::unique_ptr<TcpTracker>> trackers;
    std::vector<std::vector<TcpConn>> copies;
    std::vector<TableView> views;

    template <class Pick>
    LiveTables(const tb::DiagnoseStory& st, unsigned n, Pick pick) {
        for (unsigned i = 0; i < n; i++)
            trackers.push_back(std::make_unique<TcpTracker>(tracker(1024)));
        std::vector<uint64_t> last(n, 0), seen(n, 0);
        uint32_t frame = 0;
        for (const auto& e : st.trace.events) {
            const auto ip = tb::ip_tcp(e.spec);
            DecodedPacket p;
            EXPECT_EQ(decode_packet(12, ip.data(), ip.size(), p), DecodeStatus::kOk);
            const unsigned w = pick(p);
            const uint64_t ts = e.t_ns;
            EXPECT_TRUE(trackers[w]->update(p, ts, FrameRef{0, ++frame}));
            last[w] = std::max(last[w], ts);
            seen[w]++;
        }
        copies.resize(n);
        for (unsigned i = 0; i < n; i++) {
            trackers[i]->for_each([&](const TcpConn& c) { copies[i].push_back(c); });
        }
        for (unsigned i = 0; i < n; i++) {
            TableView v;
            v.worker = i;
            v.capacity = trackers[i]->capacity();
            v.conns = copies[i];
            v.counters = trackers[i]->counters();
            v.packets_seen = seen[i];
            v.last_ts = last[i];
            views.push_back(v);
        }
    }
};

std::vector<std::string> verdicts_of(const DiagnoseReport& r) {
    std::vector<std::string> v;
    for (const auto& c : r.connections) {
        v.push_back(to_string(c.summary.client) + " -> " + to_string(c.summary.server) + " " +
                    verdict_name(c.summary.verdict));
    }
    return v;
}

}  // namespace

TEST(Live, OneTableGivesTheFileVerdicts) {
    const auto st = tb::diagnose_story();
    LiveTables lt(st, 1, [](const DecodedPacket&) { return 0u; });
    const DiagnoseReport r = diagnose_tables(lt.views, {"pcap:stories.pcap"});
    expect_story(r, st);
    EXPECT_TRUE(r.is_live);
    EXPECT_EQ(r.live.workers, 1u);
    EXPECT_EQ(r.live.in_use, st.lines.size());
    EXPECT_EQ(r.live.merged, 0u);
    EXPECT_EQ(r.tcp_packets, st.trace.events.size());
    const auto j = diagnose_json(r);
    EXPECT_EQ(j["live"]["in_use"], st.lines.size());
    EXPECT_EQ(j["files"].size(), 0u);
    EXPECT_EQ(j["connections"][2]["reset"]["frame"], st.rst_frame_reset);
}

TEST(Live, TablesSplitByConnectionGiveTheFileVerdicts) {
    // Symmetric RSS: both directions of a connection reach the same worker.
    const auto st = tb::diagnose_story();
    LiveTables lt(st, 3, [](const DecodedPacket& p) {
        return static_cast<unsigned>((p.sport ^ p.dport) % 3);
    });
    const DiagnoseReport r = diagnose_tables(lt.views, {"pcap:stories.pcap"});
    expect_story(r, st);
    EXPECT_EQ(r.live.workers, 3u);
    EXPECT_EQ(r.live.merged, 0u);
}

TEST(Live, TablesSplitByDirectionAreMerged) {
    // Asymmetric RSS: each direction of a connection on its own worker.
    const auto st = tb::diagnose_story();
    LiveTables lt(st, 2, [](const DecodedPacket& p) { return p.sport < p.dport ? 0u : 1u; });
    const DiagnoseReport r = diagnose_tables(lt.views, {"pcap:stories.pcap"});
    LiveTables whole(st, 1, [](const DecodedPacket&) { return 0u; });
    const DiagnoseReport w = diagnose_tables(whole.views, {"pcap:stories.pcap"});
    EXPECT_EQ(verdicts_of(r), verdicts_of(w));
    EXPECT_GT(r.live.merged, 0u);
    EXPECT_EQ(r.live.in_use, st.lines.size() + r.live.merged);
    EXPECT_EQ(r.connections.size(), st.lines.size());
}

TEST(Live, ListLimitKeepsTheCounts) {
    const auto st = tb::diagnose_story();
    LiveTables lt(st, 1, [](const DecodedPacket&) { return 0u; });
    DiagnoseReport r = diagnose_tables(lt.views, {"pcap:stories.pcap"});
    r.list_limit = 2;
    const auto j = diagnose_json(r);
    EXPECT_EQ(j["connections"].size(), 2u);
    EXPECT_EQ(j["connections_listed"], 2u);
    EXPECT_EQ(j["summary"]["connections"], st.lines.size());
    const std::string text = format_diagnose_text(r);
    EXPECT_NE(text.find("more problem connections not listed"), std::string::npos) << text;
}
