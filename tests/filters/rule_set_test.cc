/* RuleSet: how rules combine (expression AND patterns AND object within a
 * rule, OR across rules), per-rule counters, bursts longer than one chunk,
 * loop programs on bpf_filter(), error messages. */
#include "filters/rule_set.hh"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "filters/cbpf_to_ebpf.hh"
#include "tests/filters/bpf_test_packets.hh"

namespace linecap::filters {
namespace {

using testing::GenSpec;
using testing::L4;

struct Burst {
    std::vector<std::vector<uint8_t>> frames;
    std::vector<Packet> pkts;
    void add(std::vector<uint8_t> f) { frames.push_back(std::move(f)); }
    const std::vector<Packet>& packets() {
        pkts.clear();
        for (const auto& f : frames)
            pkts.push_back(
                Packet{f.data(), static_cast<uint32_t>(f.size()), static_cast<uint32_t>(f.size())});
        return pkts;
    }
};

std::vector<uint8_t> tcp(uint32_t src, uint32_t dst, uint16_t dport, const std::string& payload,
                         uint8_t flags = 0x18) {
    GenSpec g;
    g.src4 = src;
    g.dst4 = dst;
    g.dport = dport;
    g.tcp_flags = flags;
    g.payload = payload;
    return testing::build(g);
}

std::vector<uint8_t> udp(uint16_t dport, const std::string& payload) {
    GenSpec g;
    g.l4 = L4::kUdp;
    g.src4 = testing::ipv4(10, 0, 0, 9);
    g.dst4 = testing::ipv4(10, 0, 0, 53);
    g.dport = dport;
    g.payload = payload;
    return testing::build(g);
}

RuleSpec rule(std::string name, std::string expr, std::vector<std::string> patterns = {},
              ScanScope scope = ScanScope::kPayload) {
    RuleSpec r;
    r.name = std::move(name);
    r.expression = std::move(expr);
    r.patterns = std::move(patterns);
    r.scope = scope;
    return r;
}

std::shared_ptr<const RuleSet> must_compile(const std::vector<RuleSpec>& rules,
                                            CompileOptions opts = {}) {
    auto rs = compile(rules, opts);
    EXPECT_TRUE(rs.ok()) << rs.error();
    return rs.ok() ? *rs : nullptr;
}

const uint32_t kA = testing::ipv4(10, 0, 0, 1);
const uint32_t kB = testing::ipv4(10, 0, 0, 2);

TEST(RuleSet, RuleWithoutConditionsMatchesEverything) {
    auto rs = must_compile({rule("all", "")});
    ASSERT_TRUE(rs);
    EXPECT_TRUE(rs->matches_everything());
    EXPECT_EQ(rs->filter_text(), "");
    Burst b;
    b.add(udp(53, "x"));
    b.add({0x01, 0x02});
    auto scratch = rs->make_scratch();
    uint8_t v[2] = {9, 9};
    EXPECT_EQ(rs->classify_burst(b.packets().data(), 2, v, *scratch), 2u);
    EXPECT_EQ(v[0], 1);
    EXPECT_EQ(v[1], 1);
    EXPECT_EQ(scratch->counters()[0].packets, 2u);

    auto none = must_compile({});
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->matches_everything());
}

// The state after `capctl rules del` of the last rule: no filter at all.
TEST(RuleSet, EmptyRuleSetCapturesEveryPacket) {
    auto none = must_compile({});
    ASSERT_TRUE(none);
    EXPECT_TRUE(none->matches_everything());
    EXPECT_TRUE(none->rule_names().empty());
    EXPECT_EQ(none->filter_text(), "");
    Burst b;
    b.add(tcp(kA, kB, 80, "GET /"));
    b.add(udp(53, "q"));
    b.add({0x01, 0x02});
    const auto& pk = b.packets();
    auto s = none->make_scratch();
    EXPECT_TRUE(s->counters().empty());
    // Longer than one classification chunk as well.
    std::vector<Packet> many;
    for (int i = 0; i < 100; i++) many.push_back(pk[static_cast<size_t>(i) % pk.size()]);
    for (uint32_t n : {3u, 100u}) {
        std::vector<uint8_t> v(n, 7);
        EXPECT_EQ(none->classify_burst(many.data(), n, v.data(), *s), n);
        EXPECT_EQ(v, std::vector<uint8_t>(n, 1));
    }
}

/* `host 198.18.0.1 or host 198.18.0.2 or ...`: libpcap's optimiser takes
 * time roughly cubic in the number of terms (tens of seconds for 300). */
std::string many_hosts(int n) {
    std::string e;
    for (int i = 0; i < n; i++) {
        if (i) e += " or ";
        e += "host 198.18." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
    }
    return e;
}

TEST(RuleSetLimits, EachCapIsCheckedWithAMessageNamingRuleAndCap) {
    RuleLimits lim;
    std::vector<RuleSpec> ok = {rule("a", "tcp", {"GET "})};
    EXPECT_TRUE(check_limits(ok, lim).ok());

    std::vector<RuleSpec> long_expr = {rule("x", std::string(70000, ' ') + "tcp")};
    Status s = check_limits(long_expr, lim);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error(), "rule 'x': expression of 70003 bytes, more than the 65536 allowed");
    EXPECT_EQ(s.code(), E2BIG);
    // compile() refuses it the same way, before libpcap sees it.
    auto rs = compile(long_expr, CompileOptions{});
    ASSERT_FALSE(rs.ok());
    EXPECT_EQ(rs.error(), s.error());
    EXPECT_EQ(rs.code(), E2BIG);

    std::vector<RuleSpec> long_pattern = {rule("p", "", {"a", std::string(4097, 'x')})};
    s = check_limits(long_pattern, lim);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error(), "rule 'p', pattern 2: 4097 bytes, more than the 4096 allowed");
    EXPECT_EQ(s.code(), E2BIG);

    std::vector<RuleSpec> many_patterns = {rule("p1", "", std::vector<std::string>(6000, "a")),
                                           rule("p2", "", std::vector<std::string>(4001, "b"))};
    s = check_limits(many_patterns, lim);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error(), "10001 patterns in all, more than the 10000 allowed");
    EXPECT_EQ(s.code(), E2BIG);

    std::vector<RuleSpec> many_rules;
    for (int i = 0; i < 257; i++) many_rules.push_back(rule("r" + std::to_string(i), ""));
    s = check_limits(many_rules, lim);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error(), "257 rules, more than the 256 allowed");
    EXPECT_EQ(s.code(), E2BIG);
    many_rules.pop_back();
    EXPECT_TRUE(check_limits(many_rules, lim).ok());
    // At the cap, every rule may have patterns.
    for (auto& r : many_rules) r.patterns = {"x" + r.name};
    EXPECT_TRUE(compile(many_rules, CompileOptions{}).ok());
}

TEST(RuleSetLimits, ASlowCompileIsStoppedAtTheTimeLimit) {
    CompileOptions o;
    o.time_limit_ms = 300;
    std::vector<RuleSpec> slow = {rule("ok", "tcp"), rule("slow", many_hosts(300))};
    auto t0 = std::chrono::steady_clock::now();
    auto rs = compile(slow, o);
    auto took = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(rs.ok());
    EXPECT_NE(rs.error().find("took longer than 300 ms"), std::string::npos) << rs.error();
    EXPECT_EQ(rs.error().rfind("compiling rule 'ok', rule 'slow' took longer than", 0), 0u)
        << rs.error();
    // A hang detector, not a measure: the uncut compile takes tens of seconds.
    EXPECT_LT(took, std::chrono::seconds(10));
}

TEST(RuleSetLimits, CancelStopsACompileInProgress) {
    std::atomic<bool> cancel{false};
    CompileOptions o;
    o.time_limit_ms = 600000;
    o.cancel = &cancel;
    std::vector<RuleSpec> slow = {rule("slow", many_hosts(300))};
    std::thread stopper([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        cancel = true;
    });
    auto rs = compile(slow, o);
    stopper.join();
    ASSERT_FALSE(rs.ok());
    EXPECT_NE(rs.error().find("cancelled"), std::string::npos) << rs.error();
}

TEST(RuleSetLimits, ErrorsFromTheCompilingChildNameTheRule) {
    auto rs = compile(std::vector<RuleSpec>{rule("ok", "tcp"), rule("bad", "tcp port eighty")},
                      CompileOptions{});
    ASSERT_FALSE(rs.ok());
    EXPECT_EQ(rs.error().rfind("rule 'bad': ", 0), 0u) << rs.error();
    // In this process (time_limit_ms 0, for fuzzing), the same words.
    CompileOptions here;
    here.time_limit_ms = 0;
    auto same =
        compile(std::vector<RuleSpec>{rule("ok", "tcp"), rule("bad", "tcp port eighty")}, here);
    ASSERT_FALSE(same.ok());
    EXPECT_EQ(same.error(), rs.error());
    EXPECT_TRUE(compile(std::vector<RuleSpec>{rule("web", "tcp port 80", {"GET "})}, here).ok());
}

/* What a rules change compiles: only what the set in force does not hold.
 * With the cancel flag already set, any work for the compiling child fails
 * at once, so success shows that nothing was sent to it. */
TEST(RuleSetReuse, UnchangedExpressionsAndPatternsAreNotCompiledAgain) {
    auto before = must_compile(
        {rule("web", "tcp port 80", {"GET "}), rule("mail", "", {"MAIL"}, ScanScope::kFrame)});
    ASSERT_TRUE(before);
    std::atomic<bool> cancelled{true};
    CompileOptions o;
    o.cancel = &cancelled;

    // An expression-less rule added, in either place: patterns unchanged.
    auto after =
        compile(std::vector<RuleSpec>{rule("all", ""), rule("web", "tcp port 80", {"GET "}),
                                      rule("mail", "", {"MAIL"}, ScanScope::kFrame)},
                o, before.get());
    ASSERT_TRUE(after.ok()) << after.error();
    // The same expression under another name, a rule deleted.
    auto renamed =
        compile(std::vector<RuleSpec>{rule("www", "tcp port 80", {"GET "})}, o, before.get());
    ASSERT_TRUE(renamed.ok()) << renamed.error();

    // The shared databases still match, under the new rule numbering.
    Burst b;
    b.add(tcp(kA, kB, 80, "GET / HTTP/1.1"));
    b.add(tcp(kA, kB, 25, "MAIL FROM:<x>"));
    b.add(tcp(kA, kB, 80, "POST /"));
    auto s = (*after)->make_scratch();
    uint8_t v[3];
    EXPECT_EQ((*after)->classify_burst(b.packets().data(), 3, v, *s), 3u);  // "all" takes all
    const auto c = s->counters();
    EXPECT_EQ(c[0].packets, 3u);
    EXPECT_EQ(c[1].packets, 1u);
    EXPECT_EQ(c[2].packets, 1u);

    // New work does go to the child, and is cancelled.
    auto new_expr =
        compile(std::vector<RuleSpec>{rule("web", "tcp port 8080", {"GET "})}, o, before.get());
    ASSERT_FALSE(new_expr.ok());
    EXPECT_NE(new_expr.error().find("cancelled"), std::string::npos) << new_expr.error();
    auto new_pattern =
        compile(std::vector<RuleSpec>{rule("web", "tcp port 80", {"GET /"})}, o, before.get());
    ASSERT_FALSE(new_pattern.ok());
    EXPECT_NE(new_pattern.error().find("cancelled"), std::string::npos) << new_pattern.error();
}

TEST(RuleSet, RulesCombineWithOrAndCountSeparately) {
    auto rs = must_compile(
        {rule("web", "tcp port 80"), rule("dns", "udp port 53"), rule("a", "host 10.0.0.1")});
    ASSERT_TRUE(rs);
    EXPECT_FALSE(rs->matches_everything());
    EXPECT_EQ(rs->rule_names(), (std::vector<std::string>{"web", "dns", "a"}));
    EXPECT_EQ(rs->filter_text(), "(tcp port 80) or (udp port 53) or (host 10.0.0.1)");

    Burst b;
    b.add(tcp(kA, kB, 80, "GET /"));    // web + a
    b.add(tcp(kB, kB, 80, ""));         // web
    b.add(udp(53, "q"));                // dns
    b.add(tcp(kB, kB, 22, "SSH-2.0"));  // none
    b.add(tcp(kB, kA, 22, ""));         // a
    const auto& pk = b.packets();
    auto s = rs->make_scratch();
    uint8_t v[5];
    EXPECT_EQ(rs->classify_burst(pk.data(), 5, v, *s), 4u);
    EXPECT_EQ(std::vector<uint8_t>(v, v + 5), (std::vector<uint8_t>{1, 1, 1, 0, 1}));
    const auto c = s->counters();
    ASSERT_EQ(c.size(), 3u);
    EXPECT_EQ(c[0].packets, 2u);
    EXPECT_EQ(c[0].bytes, pk[0].wirelen + pk[1].wirelen);
    EXPECT_EQ(c[1].packets, 1u);
    EXPECT_EQ(c[1].bytes, pk[2].wirelen);
    EXPECT_EQ(c[2].packets, 2u);

    // Counters accumulate per scratch; another worker's scratch is separate.
    EXPECT_EQ(rs->classify_burst(pk.data(), 5, v, *s), 4u);
    EXPECT_EQ(s->counters()[0].packets, 4u);
    auto other = rs->make_scratch();
    EXPECT_EQ(other->counters()[0].packets, 0u);
}

TEST(RuleSet, RuleIndexIsTheFirstMatchingRuleOnlyWhenAsked) {
    auto rs = must_compile(
        {rule("web", "tcp port 80"), rule("dns", "udp port 53"), rule("a", "host 10.0.0.1")});
    ASSERT_TRUE(rs);
    Burst b;
    b.add(tcp(kA, kB, 80, "GET /"));    // web + a: web, the first
    b.add(udp(53, "q"));                // dns
    b.add(tcp(kB, kB, 22, "SSH-2.0"));  // none: left as it was
    b.add(tcp(kB, kA, 22, ""));         // a
    const auto& pk = b.packets();
    auto s = rs->make_scratch();
    uint8_t v[4];
    uint16_t r[4] = {77, 77, 77, 77};
    EXPECT_EQ(rs->classify_burst(pk.data(), 4, v, *s, r), 3u);
    EXPECT_EQ(std::vector<uint16_t>(r, r + 4), (std::vector<uint16_t>{0, 1, 77, 2}));
    // Longer than a chunk: each packet's own rule.
    std::vector<Packet> many;
    for (int i = 0; i < 100; i++) many.push_back(pk[static_cast<size_t>(i) % pk.size()]);
    std::vector<uint8_t> mv(100);
    std::vector<uint16_t> mr(100, 77);
    EXPECT_EQ(rs->classify_burst(many.data(), 100, mv.data(), *s, mr.data()), 75u);
    for (size_t i = 0; i < 100; i++) EXPECT_EQ(mr[i], r[i % 4]) << i;
    // One rule, and no rule at all.
    auto one = must_compile({rule("web", "tcp port 80")});
    auto os = one->make_scratch();
    EXPECT_EQ(one->classify_burst(pk.data(), 4, v, *os, r), 1u);
    EXPECT_EQ(r[0], 0u);
    auto none = must_compile({});
    auto ns = none->make_scratch();
    EXPECT_EQ(none->classify_burst(pk.data(), 4, v, *ns, r), 4u);
    EXPECT_EQ(std::vector<uint16_t>(r, r + 4), std::vector<uint16_t>(4, RuleSet::kNoRule));
}

TEST(RuleSet, SingleExpressionCountsBytesOfMatchesOnly) {
    auto rs = must_compile({rule("cli", "tcp[tcpflags] & tcp-syn != 0")});
    ASSERT_TRUE(rs);
    Burst b;
    b.add(tcp(kA, kB, 80, "", 0x02));
    b.add(tcp(kA, kB, 80, "data", 0x10));
    b.add(tcp(kA, kB, 80, "", 0x12));
    const auto& pk = b.packets();
    auto s = rs->make_scratch();
    uint8_t v[3];
    EXPECT_EQ(rs->classify_burst(pk.data(), 3, v, *s), 2u);
    EXPECT_EQ(std::vector<uint8_t>(v, v + 3), (std::vector<uint8_t>{1, 0, 1}));
    EXPECT_EQ(s->counters()[0].packets, 2u);
    EXPECT_EQ(s->counters()[0].bytes, pk[0].wirelen + pk[2].wirelen);
}

TEST(RuleSet, PatternsNarrowTheirOwnRuleOnly) {
    auto rs =
        must_compile({rule("get", "tcp port 80", {"GET "}), rule("mail", "", {"MAIL", "/^helo /i"}),
                      rule("frame", "udp", {"needle"}, ScanScope::kFrame),
                      rule("syn", "tcp[tcpflags] = tcp-syn")});
    ASSERT_TRUE(rs);
    Burst b;
    b.add(tcp(kA, kB, 80, "GET / HTTP/1.1"));   // 0 get
    b.add(tcp(kA, kB, 81, "GET / HTTP/1.1"));   // 1 nothing: port 81
    b.add(tcp(kA, kB, 80, "POST / HTTP/1.1"));  // 2 nothing: no GET
    b.add(tcp(kA, kB, 25, "MAIL FROM:<x>"));    // 3 mail
    b.add(tcp(kA, kB, 25, "HELO example"));     // 4 mail (regex, caseless)
    b.add(udp(9, "with a needle inside"));      // 5 frame
    b.add(tcp(kA, kB, 80, "", 0x02));           // 6 syn only (empty payload)
    b.add(udp(9, "haystack only"));             // 7 nothing
    const auto& pk = b.packets();
    auto s = rs->make_scratch();
    std::vector<uint8_t> v(pk.size());
    EXPECT_EQ(rs->classify_burst(pk.data(), static_cast<uint32_t>(pk.size()), v.data(), *s), 5u);
    EXPECT_EQ(v, (std::vector<uint8_t>{1, 0, 0, 1, 1, 1, 1, 0}));
    const auto c = s->counters();
    EXPECT_EQ(c[0].packets, 1u);
    EXPECT_EQ(c[1].packets, 2u);
    EXPECT_EQ(c[2].packets, 1u);
    EXPECT_EQ(c[3].packets, 1u);
    const std::string d = rs->describe();
    EXPECT_NE(d.find("patterns (payload scope, any of): 'MAIL' '/^helo /i'"), std::string::npos)
        << d;
    EXPECT_NE(d.find("pattern database (frame scope)"), std::string::npos) << d;
    EXPECT_NE(rs->filter_text().find("(tcp port 80 and (pattern 'GET '))"), std::string::npos)
        << rs->filter_text();
}

TEST(RuleSet, PatternErrorsNameTheRule) {
    auto rs = compile(std::vector<RuleSpec>{rule("ok", "tcp"), rule("web", "", {"/get(/i"})},
                      CompileOptions{});
    ASSERT_FALSE(rs.ok());
    EXPECT_NE(rs.error().find("rule 'web'"), std::string::npos) << rs.error();
}

TEST(RuleSet, PayloadPatternsNeedEthernet) {
    CompileOptions raw;
    raw.linktype = 12;  // DLT_RAW: frames start with the IP header
    auto rs = compile(std::vector<RuleSpec>{rule("web", "ip", {"GET "})}, raw);
    ASSERT_FALSE(rs.ok());
    EXPECT_NE(rs.error().find("rule 'web'"), std::string::npos) << rs.error();
    EXPECT_NE(rs.error().find("not RAW; use --scan frame"), std::string::npos) << rs.error();
    EXPECT_TRUE(
        compile(std::vector<RuleSpec>{rule("web", "ip", {"GET "}, ScanScope::kFrame)}, raw).ok());
}

TEST(RuleSet, BurstsLongerThanOneChunkAndEveryEngineAgree) {
    std::vector<testing::TestPacket> gen = testing::generated_packets();
    std::vector<Packet> pk;
    for (const auto& t : gen)
        pk.push_back(Packet{t.bytes.data(), static_cast<uint32_t>(t.bytes.size()), t.wirelen});
    const std::vector<std::string> exprs = {"tcp port 80 or udp", "ip6 protochain 6", "vlan and ip",
                                            "tcp[(tcp[12]>>2):4] = 0x47455420"};
    for (const auto& e : exprs) {
        auto classic = compile_classic(e, 1, 262144);
        ASSERT_TRUE(classic.ok()) << classic.error();
        for (bool jit : {true, false}) {
            CompileOptions o;
            o.jit = jit;
            // Two rules take the generic path; one takes the single-expression one.
            for (size_t nrules : {1, 2}) {
                std::vector<RuleSpec> rules = {rule("x", e)};
                if (nrules == 2) rules.push_back(rule("rare", "ether proto 0x1234"));
                auto rs = must_compile(rules, o);
                ASSERT_TRUE(rs);
                auto s = rs->make_scratch();
                std::vector<uint8_t> v(pk.size());
                const uint32_t kept =
                    rs->classify_burst(pk.data(), static_cast<uint32_t>(pk.size()), v.data(), *s);
                uint32_t want_kept = 0;
                for (size_t i = 0; i < pk.size(); i++) {
                    const bool want =
                        classic_run(*classic, pk[i].data, pk[i].wirelen, pk[i].caplen) != 0;
                    want_kept += want;
                    ASSERT_EQ(v[i], want) << e << " packet " << gen[i].origin;
                }
                EXPECT_EQ(kept, want_kept);
                EXPECT_EQ(s->counters()[0].packets, want_kept);
                EXPECT_GT(want_kept, 0u) << e;
            }
        }
    }
}

TEST(RuleSet, BpfObjectErrorsNameTheRule) {
    RuleSpec r;
    r.name = "obj";
    r.bpf_object = "/nonexistent/filter.bpf.o";
    auto rs = compile(std::span(&r, 1), CompileOptions{});
    ASSERT_FALSE(rs.ok());
    EXPECT_EQ(rs.error().rfind("rule 'obj': ", 0), 0u) << rs.error();
    EXPECT_NE(rs.error().find("/nonexistent/filter.bpf.o"), std::string::npos) << rs.error();
}

/* Runs when the example object was built (clang present). */
TEST(RuleSet, BpfObjectRunsInTheVm) {
    const char* build = std::getenv("LINECAP_BUILD_DIR");
    const std::filesystem::path obj =
        std::filesystem::path(build != nullptr ? build : "build") / "filters" / "http_get.bpf.o";
    if (!std::filesystem::exists(obj)) GTEST_SKIP() << obj << " not built (no clang)";
    RuleSpec r;
    r.name = "obj";
    r.expression = "tcp";
    r.bpf_object = obj.string();
    auto rs = must_compile({r});
    ASSERT_TRUE(rs);
    EXPECT_NE(rs->describe().find("bpf object"), std::string::npos) << rs->describe();
    Burst b;
    b.add(tcp(kA, kB, 80, "GET / HTTP/1.1\r\n"));
    b.add(tcp(kA, kB, 80, "POST / HTTP/1.1\r\n"));
    b.add(udp(80, "GET / HTTP/1.1\r\n"));
    auto s = rs->make_scratch();
    uint8_t v[3];
    rs->classify_burst(b.packets().data(), 3, v, *s);
    EXPECT_EQ(v[0], 1);
    EXPECT_EQ(v[1], 0);
    EXPECT_EQ(v[2], 0);  // the expression (tcp) rejects it whatever the object says
}

}  // namespace
}  // namespace linecap::filters
