/* capd's command line (dataplane/options.hh), table-driven: every -i form
 * parse_source() takes and refuses, and parse_options()'s defaults, values
 * and refusals with their exact texts. Pure: no EAL, no system state. */
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dataplane/options.hh"

using namespace linecap;
using namespace linecap::dataplane;

namespace {

using K = SourceSpec::Kind;

struct GoodSource {
    const char* text;
    K kind;
    const char* arg;
    bool loop = false;
    uint32_t size = 64;
    double rate = 0;
    const char* netns = "";
    int pid = 0;
    bool bare = false;
};

const GoodSource kGoodSources[] = {
    {"pcap:in.pcap", K::kPcapFile, "in.pcap"},
    {"pcap:in.pcap,loop", K::kPcapFile, "in.pcap", true},
    {"pcap:/a,b/c.pcap", K::kPcapFile, "/a,b/c.pcap"},
    {"pcap:,loop", K::kPcapFile, ",loop"},  // a file named ",loop"
    {"af_packet:eth0", K::kAfPacket, "eth0"},
    {"af_packet:any", K::kAfPacket, "any"},
    {"af_packet:veth0@netns=blue", K::kAfPacket, "veth0", false, 64, 0, "blue"},
    {"af_packet:veth0@pid=42", K::kAfPacket, "veth0", false, 64, 0, "", 42},
    {"af_xdp:eth1", K::kAfXdp, "eth1"},
    {"af_xdp:eth1@netns=red", K::kAfXdp, "eth1", false, 64, 0, "red"},
    {"null", K::kNull, ""},
    {"null:128", K::kNull, "", false, 128},
    {"null:14", K::kNull, "", false, 14},
    {"null:9000,rate=1.5M", K::kNull, "", false, 9000, 1.5e6},
    {"null,rate=10k", K::kNull, "", false, 64, 1e4},
    {"null:60,frames=f.pcap,rate=2G", K::kNull, "f.pcap", false, 60, 2e9},
    {"0000:3b:00.0", K::kPci, "0000:3b:00.0"},
    {"3b:00.1", K::kPci, "3b:00.1"},
    {"eth0", K::kAfPacket, "eth0", false, 64, 0, "", 0, true},
    {"any", K::kAfPacket, "any", false, 64, 0, "", 0, true},
    {"lo@netns=ns1", K::kAfPacket, "lo", false, 64, 0, "ns1", 0, true},
    {"abcdefghijklmno", K::kAfPacket, "abcdefghijklmno", false, 64, 0, "", 0, true},
};

class GoodSourceTable : public ::testing::TestWithParam<GoodSource> {};

TEST_P(GoodSourceTable, Parses) {
    const GoodSource& c = GetParam();
    auto r = parse_source(c.text);
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->kind, c.kind);
    EXPECT_EQ(r->text, c.bare ? std::string("af_packet:") + c.text : c.text);
    EXPECT_EQ(r->arg, c.arg);
    EXPECT_EQ(r->loop, c.loop);
    EXPECT_EQ(r->size, c.size);
    EXPECT_DOUBLE_EQ(r->rate_pps, c.rate);
    EXPECT_EQ(r->netns, c.netns);
    EXPECT_EQ(r->netns_pid, c.pid);
    EXPECT_EQ(r->bare, c.bare);
}

INSTANTIATE_TEST_SUITE_P(Cases, GoodSourceTable, ::testing::ValuesIn(kGoodSources));

struct BadSource {
    const char* text;
    const char* error;  // the whole message
};

const std::string kUnknownTail =
    "' (expected an interface name, a PCI address, af_xdp:IFACE, af_packet:IFACE (each "
    "optionally @netns=NAME or @pid=PID), pcap:FILE[,loop] or "
    "null[:SIZE][,rate=PPS][,frames=FILE][,flows=N][,order=ORDER])";

const BadSource kBadSources[] = {
    {"pcap:", "source 'pcap:': pcap: needs a file name"},
    {"af_packet:", "source 'af_packet:': expected an interface name"},
    {"af_packet:a,b", "source 'af_packet:a,b': expected an interface name"},
    {"af_packet:abcdefghijklmnop",
     "source 'af_packet:abcdefghijklmnop': interface name longer than 15 characters"},
    {"af_packet:e@netns=",
     "source 'af_packet:e@netns=': expected a namespace name after @netns= (as `ip netns list` "
     "shows it)"},
    {"af_packet:e@netns=a/b",
     "source 'af_packet:e@netns=a/b': expected a namespace name after @netns= (as `ip netns "
     "list` shows it)"},
    {"af_packet:e@pid=0", "source 'af_packet:e@pid=0': expected a process id after @pid="},
    {"af_packet:e@pid=-1", "source 'af_packet:e@pid=-1': expected a process id after @pid="},
    {"af_packet:e@pid=12x", "source 'af_packet:e@pid=12x': expected a process id after @pid="},
    {"af_packet:e@pid=4294967296",
     "source 'af_packet:e@pid=4294967296': expected a process id after @pid="},
    {"af_packet:e@ns=x",
     "source 'af_packet:e@ns=x': expected IFACE, IFACE@netns=NAME or IFACE@pid=PID"},
    {"af_xdp:any",
     "source 'af_xdp:any': af_xdp attaches to one interface; for every interface use -i any "
     "(af_packet)"},
    {"null:13", "source 'null:13': null size must be 14..9000 bytes"},
    {"null:9001", "source 'null:9001': null size must be 14..9000 bytes"},
    {"null:64x", "source 'null:64x': null size must be 14..9000 bytes"},
    {"null:64,speed=1",
     "source 'null:64,speed=1': expected "
     "null[:SIZE][,rate=PPS][,frames=FILE][,flows=N][,order=ORDER][,directions=one|both]"},
    {"null:64,rate=",
     "source 'null:64,rate=': expected "
     "null[:SIZE][,rate=PPS][,frames=FILE][,flows=N][,order=ORDER][,directions=one|both]"},
    {"null:64,flows=8,order=random",
     "source 'null:64,flows=8,order=random': order must be round-robin or scattered"},
    {"null:64,order=scattered", "source 'null:64,order=scattered': order= needs flows=N"},
    {"null:64,flows=8,directions=all",
     "source 'null:64,flows=8,directions=all': directions must be one or both"},
    {"null:64,directions=both", "source 'null:64,directions=both': directions= needs flows=N"},
    {"null:64,rate=0",
     "source 'null:64,rate=0': rate must be a positive number of packets/s, with an optional k, "
     "M or G"},
    {"null:64,rate=5x",
     "source 'null:64,rate=5x': rate must be a positive number of packets/s, with an optional "
     "k, M or G"},
    {"", ""},
    {"a/b", ""},
    {"foo:bar", ""},
    {"abcdefghijklmnop", ""},
    {"..", ""},
};

class BadSourceTable : public ::testing::TestWithParam<BadSource> {};

TEST_P(BadSourceTable, Refused) {
    const BadSource& c = GetParam();
    auto r = parse_source(c.text);
    ASSERT_FALSE(r) << c.text;
    std::string want = *c.error ? c.error : "unknown source '" + std::string(c.text) + kUnknownTail;
    EXPECT_EQ(r.error(), want);
}

INSTANTIATE_TEST_SUITE_P(Cases, BadSourceTable, ::testing::ValuesIn(kBadSources));

Result<Options> parse(std::vector<std::string> args, bool* exit_now = nullptr) {
    args.insert(args.begin(), "capd");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    bool ex = false;
    auto r = parse_options(static_cast<int>(args.size()), argv.data(), ex);
    if (exit_now) *exit_now = ex;
    return r;
}

TEST(ParseOptions, Defaults) {
    auto r = parse({"-i", "null", "-w", "out.pcap"});
    ASSERT_TRUE(r) << r.error();
    const Options& o = *r;
    ASSERT_EQ(o.sources.size(), 1u);
    EXPECT_EQ(o.sources[0].kind, K::kNull);
    EXPECT_TRUE(o.sources[0].promisc);
    EXPECT_EQ(o.write_path, "out.pcap");
    EXPECT_EQ(o.workers, 1u);
    EXPECT_EQ(o.writers, 1u);
    EXPECT_EQ(o.snaplen, 262144u);
    EXPECT_EQ(o.format, storage::Format::kPcapMicro);
    EXPECT_EQ(o.chunk_kb, 1024u);
    EXPECT_EQ(o.ring_chunks, 256u);
    EXPECT_EQ(o.flush_ms, 100u);
    EXPECT_EQ(o.rx_desc, 4096u);
    EXPECT_EQ(o.file_mode, 0640u);
    EXPECT_EQ(o.write_behind_mb, 256u);
    EXPECT_EQ(o.packet_ring_frames(), 4096u);
    EXPECT_TRUE(o.expression.empty());
}

TEST(ParseOptions, Values) {
    auto r = parse({"-i",
                    "eth0",
                    "-i",
                    "af_xdp:eth1",
                    "-w",
                    "x_%s.pcapng",
                    "-C",
                    "2.5",
                    "-G",
                    "30",
                    "-W",
                    "4",
                    "--format",
                    "pcapng",
                    "--workers",
                    "4",
                    "--writers",
                    "2",
                    "-s",
                    "0",
                    "-c",
                    "10",
                    "--file-mode",
                    "0600",
                    "-p",
                    "-Q",
                    "in",
                    "-B",
                    "1024",
                    "-U",
                    "--on-source-loss",
                    "continue",
                    "tcp",
                    "port",
                    "80"});
    ASSERT_TRUE(r) << r.error();
    const Options& o = *r;
    ASSERT_EQ(o.sources.size(), 2u);
    EXPECT_TRUE(o.sources[0].bare);
    EXPECT_EQ(o.sources[1].kind, K::kAfXdp);
    EXPECT_FALSE(o.sources[0].promisc);
    EXPECT_EQ(o.sources[1].direction, Direction::kIn);
    EXPECT_DOUBLE_EQ(o.rotate_mb, 2.5);
    EXPECT_EQ(o.rotate_seconds, 30u);
    EXPECT_EQ(o.max_files, 4u);
    EXPECT_EQ(o.format, storage::Format::kPcapng);
    EXPECT_EQ(o.workers, 4u);
    EXPECT_EQ(o.writers, 2u);
    EXPECT_EQ(o.snaplen, 262144u);  // -s 0, as tcpdump
    EXPECT_EQ(o.count, 10u);
    EXPECT_EQ(o.file_mode, 0600u);
    EXPECT_EQ(o.buffer_kb, 1024u);
    EXPECT_EQ(o.packet_ring_frames(), 512u);
    EXPECT_TRUE(o.packet_buffered);
    EXPECT_TRUE(o.keep_going_on_source_loss);
    EXPECT_EQ(o.expression, "tcp port 80");
}

TEST(ParseOptions, NanoAndStandardOutput) {
    auto r = parse({"-i", "null", "-w", "-", "--nano"});
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->format, storage::Format::kPcapNano);
    EXPECT_EQ(r->write_path, "-");
}

TEST(ParseOptions, HelpExitsNow) {
    bool exit_now = false;
    testing::internal::CaptureStdout();
    auto r = parse({"--help"}, &exit_now);
    std::string out = testing::internal::GetCapturedStdout();
    EXPECT_TRUE(r);
    EXPECT_TRUE(exit_now);
    EXPECT_NE(out.find("-i"), std::string::npos);
}

TEST(ParseOptions, ListAndDumpNeedNoOutput) {
    auto d = parse({"-D"});
    ASSERT_TRUE(d) << d.error();
    EXPECT_TRUE(d->list_sources);
    auto f = parse({"-d", "tcp"});
    ASSERT_TRUE(f) << f.error();
    EXPECT_TRUE(f->dump_filter);
}

struct BadOptions {
    std::vector<std::string> args;
    const char* error;  // the whole message
};

const std::vector<std::string> kBase = {"-i", "null", "-w", "o.pcap"};

std::vector<std::string> with(std::vector<std::string> extra) {
    std::vector<std::string> a = kBase;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
}

class BadOptionsTable : public ::testing::TestWithParam<BadOptions> {};

TEST_P(BadOptionsTable, Refused) {
    const BadOptions& c = GetParam();
    auto r = parse(c.args);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), c.error);
}

const BadOptions kBadOptions[] = {
    {{"-w", "o.pcap"}, "no capture source: give -i SOURCE"},
    {{"-i", "null"}, "no output file: give -w FILE"},
    {{"-i", "pcap:a.pcap", "-i", "pcap:a.pcap", "-w", "o"},
     "source 'pcap:a.pcap' is given twice (also as 'pcap:a.pcap'): every packet would be "
     "written twice"},
    {{"-i", "eth0", "-i", "any", "-w", "o"},
     "source 'af_packet:any' is given twice (also as 'af_packet:eth0', which holds every "
     "interface): every packet would be written twice"},
    {with({"-s", "262145"}), "-s: invalid snaplen 262145 (must be >= 0 and <= 262144)"},
    {with({"-C", "0"}), "-C: file size must be positive"},
    {with({"-W", "3"}), "-W needs -C or -G"},
    {with({"-C", "1", "-W", "0"}), "-W: count must be positive"},
    {with({"-G", "0"}), "-G: seconds must be positive"},
    {with({"--preallocate", "-C", "1"}),
     "--preallocate needs -C and -W: it claims the ring's C x W bytes"},
    {with({"--preallocate", "-C", "1", "-W", "2", "-G", "5"}),
     "--preallocate does not take -G: the ring's names must be known at start"},
    {with({"-c", "0"}), "-c: count must be positive"},
    {with({"--duration", "0"}), "--duration: seconds must be positive"},
    {with({"--workers", "0"}), "--workers: 1..64"},
    {with({"--workers", "65"}), "--workers: 1..64"},
    {with({"--writers", "2"}), "--writers 2 exceeds --workers 1: each writer needs a worker"},
    {with({"--format", "pcapng", "--nano"}),
     "--nano applies to --format pcap; pcapng is always nanosecond"},
    {with({"--chunk-kb", "32"}), "--chunk-kb: 64..65536"},
    {with({"--chunk-kb", "128"}), "--chunk-kb must hold one record of snaplen 262144 bytes"},
    {with({"--ring-chunks", "1"}), "--ring-chunks: 2..65536"},
    {with({"--flush-ms", "0"}), "--flush-ms must be positive"},
    {with({"--rx-desc", "100"}), "--rx-desc: a power of two, 64..32768"},
    {with({"--file-mode", "0999"}), "--file-mode: expected an octal mode such as 0640"},
    {with({"-B", "1024"}),
     "-B sizes the kernel buffer of af_packet interfaces; for af_xdp and PCI ports use "
     "--rx-desc N (receive descriptors)"},
    {with({"-U", "--flush-ms", "5"}),
     "-U writes each burst as it arrives; --flush-ms 5 contradicts it: give one of them"},
    {with({"-U", "--direct"}),
     "-U does not take --direct: O_DIRECT holds a partial 4 KiB block until the file is closed"},
    {with({"-Q", "in"}),
     "-Q in: source 'null' has no direction (only kernel interfaces do); use a filter instead"},
    {{"-i", "af_xdp:eth0", "-w", "o", "-Q", "out"},
     "-Q out: source 'af_xdp:eth0' sees only received packets; use af_packet:IFACE for sent "
     "ones"},
    {{"-i", "null", "-w", "-", "-C", "1"},
     "-C needs files: -w - writes one stream to standard output"},
    {{"-i", "null", "--workers", "2", "--writers", "2", "-w", "-"},
     "--writers 2: -w - is one stream, written by one writer"},
};

INSTANTIATE_TEST_SUITE_P(Cases, BadOptionsTable, ::testing::ValuesIn(kBadOptions));

// CLI11's own refusals come back as one error line, never as an exception.
TEST(ParseOptions, CommandLineErrorsAreErrors) {
    for (std::vector<std::string> args :
         {with({"--workers", "abc"}), with({"--format", "pcapx"}), with({"--no-such-option"}),
          with({"--ctl-idle-timeout", "0"}), with({"--tcp-flows", "-1"})}) {
        auto r = parse(args);
        ASSERT_FALSE(r) << args[4];
        EXPECT_FALSE(r.error().empty());
        EXPECT_EQ(r.error().find('\n'), std::string::npos) << r.error();
    }
}

TEST(ParseOptions, UnknownSourceNamesIt) {
    auto r = parse({"-i", "bad/src", "-w", "o"});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), "unknown source 'bad/src" + kUnknownTail);
}

}  // namespace
