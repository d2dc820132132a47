#include "dataplane/options.hh"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <regex>

#include "common/quantity.hh"
#include "dataplane/list_sources.hh"
#include "storage/catalog.hh"
#include "storage/chunk.hh"

namespace linecap::dataplane {

namespace {

bool kernel_interface(const SourceSpec& s) {
    return s.kind == SourceSpec::Kind::kAfPacket || s.kind == SourceSpec::Kind::kAfXdp;
}

/* Two sources that would deliver the same packets: one interface (by either
 * kernel path, in the same namespace), one PCI port, or one finite file.
 * Looped files and null sources are load generators; several are allowed. */
bool same_packets(const SourceSpec& a, const SourceSpec& b) {
    if (kernel_interface(a) && kernel_interface(b))
        return (a.arg == b.arg || a.any_interface() || b.any_interface()) && a.netns == b.netns &&
               a.netns_pid == b.netns_pid;
    if (a.kind != b.kind) return false;
    if (a.kind == SourceSpec::Kind::kPci) return a.arg == b.arg;
    if (a.kind == SourceSpec::Kind::kPcapFile && !a.loop && !b.loop) {
        std::error_code ea, eb;
        auto pa = std::filesystem::weakly_canonical(a.arg, ea);
        auto pb = std::filesystem::weakly_canonical(b.arg, eb);
        return ea || eb ? a.arg == b.arg : pa == pb;
    }
    return false;
}

}  // namespace

Result<SourceSpec> parse_source(const std::string& text) {
    SourceSpec s;
    s.text = text;
    auto rest = [&](size_t n) { return text.substr(n); };
    if (text.rfind("pcap:", 0) == 0) {
        s.kind = SourceSpec::Kind::kPcapFile;
        s.arg = rest(5);
        const std::string loop = ",loop";
        if (s.arg.size() > loop.size() &&
            s.arg.compare(s.arg.size() - loop.size(), loop.size(), loop) == 0) {
            s.loop = true;
            s.arg.resize(s.arg.size() - loop.size());
        }
        if (s.arg.empty()) return make_error("source '" + text + "': pcap: needs a file name");
        return s;
    }
    if (text.rfind("af_packet:", 0) == 0 || text.rfind("af_xdp:", 0) == 0) {
        bool xdp = text[3] == 'x';
        s.kind = xdp ? SourceSpec::Kind::kAfXdp : SourceSpec::Kind::kAfPacket;
        s.arg = rest(xdp ? 7 : 10);
        // IFACE@netns=NAME or IFACE@pid=PID: the interface of another namespace.
        size_t at = s.arg.rfind('@');
        if (at != std::string::npos) {
            std::string where = s.arg.substr(at + 1);
            s.arg.resize(at);
            if (where.rfind("netns=", 0) == 0) {
                s.netns = where.substr(6);
                if (s.netns.empty() || s.netns == "." || s.netns == ".." ||
                    s.netns.find('/') != std::string::npos)
                    return make_error("source '" + text +
                                      "': expected a namespace name after @netns= "
                                      "(as `ip netns list` shows it)");
            } else if (where.rfind("pid=", 0) == 0) {
                std::string pid = where.substr(4);
                size_t pos = 0;
                unsigned long v = 0;
                try {
                    v = std::stoul(pid, &pos);
                } catch (const std::exception&) {
                    pos = 0;
                }
                if (pid.empty() || pos != pid.size() || pid[0] == '-' || pid[0] == '+' || v == 0 ||
                    v > 0x7fffffff)
                    return make_error("source '" + text + "': expected a process id after @pid=");
                s.netns_pid = static_cast<int>(v);
            } else {
                return make_error("source '" + text +
                                  "': expected IFACE, IFACE@netns=NAME or IFACE@pid=PID");
            }
        }
        if (s.arg.empty() || s.arg.find_first_of(",= ") != std::string::npos)
            return make_error("source '" + text + "': expected an interface name");
        if (s.arg.size() >= 16)  // IFNAMSIZ, with its terminating NUL
            return make_error("source '" + text + "': interface name longer than 15 characters");
        if (xdp && s.arg == "any")
            return make_error("source '" + text +
                              "': af_xdp attaches to one interface; for every interface "
                              "use -i any (af_packet)");
        return s;
    }
    if (text == "null" || text.rfind("null:", 0) == 0 || text.rfind("null,", 0) == 0) {
        s.kind = SourceSpec::Kind::kNull;
        std::string args = text.size() > 5 ? rest(5) : "";
        if (text.rfind("null,", 0) == 0) args = "," + rest(5);
        std::string size_text = args.substr(0, args.find(','));
        std::string opts = args.find(',') == std::string::npos ? "" : args.substr(args.find(','));
        if (!size_text.empty()) {
            try {
                size_t pos;
                unsigned long v = std::stoul(size_text, &pos);
                if (pos != size_text.size() || v < 14 || v > 9000) throw std::out_of_range("size");
                s.size = static_cast<uint32_t>(v);
            } catch (const std::exception&) {
                return make_error("source '" + text + "': null size must be 14..9000 bytes");
            }
        }
        // Options after the size: ,rate=N[k|M|G] paces the offered load (for
        // drop-rate measurements); ,frames=FILE fills the packet buffers with
        // the frames of a capture, so filters see real headers; ,flows=N
        // makes every packet one of N IPv4 flows (eth_source.cc), taken
        // round robin or, with ,order=scattered, in another order each round;
        // with ,directions=both a packet goes either way.
        const std::string usage = "source '" + text +
                                  "': expected "
                                  "null[:SIZE][,rate=PPS][,frames=FILE][,flows=N][,order=ORDER]"
                                  "[,directions=one|both]";
        size_t at = 0;
        while (at < opts.size()) {
            size_t next = opts.find(',', at + 1);
            std::string item =
                opts.substr(at + 1, next == std::string::npos ? next : next - at - 1);
            at = next == std::string::npos ? opts.size() : next;
            size_t eq = item.find('=');
            if (eq == std::string::npos || eq + 1 == item.size()) return make_error(usage);
            std::string key = item.substr(0, eq), v = item.substr(eq + 1);
            if (key == "frames") {
                s.arg = v;
                continue;
            }
            if (key == "flows") {
                // Up to 2^26: the flows' addresses and ports (null_frames.cc)
                // stay inside 198.18.0.0/15, and 64 M flows is far past any
                // flow table a worker can map.
                char* end = nullptr;
                errno = 0;
                unsigned long long n = std::strtoull(v.c_str(), &end, 10);
                if (errno != 0 || *end != '\0' || v[0] == '-' || n < 1 || n > (1ull << 26))
                    return make_error("source '" + text +
                                      "': flows must be a whole number of flows, 1..67108864");
                s.flows = static_cast<uint32_t>(n);
                continue;
            }
            if (key == "order") {
                if (v != "round-robin" && v != "scattered")
                    return make_error("source '" + text +
                                      "': order must be round-robin or scattered");
                s.flow_scatter = v == "scattered";
                continue;
            }
            if (key == "directions") {
                if (v != "one" && v != "both")
                    return make_error("source '" + text + "': directions must be one or both");
                s.flow_both = v == "both";
                continue;
            }
            if (key != "rate") return make_error(usage);
            try {
                size_t pos;
                double r = std::stod(v, &pos);
                std::string unit = v.substr(pos);
                if (unit == "k")
                    r *= 1e3;
                else if (unit == "M")
                    r *= 1e6;
                else if (unit == "G")
                    r *= 1e9;
                else if (!unit.empty())
                    throw std::invalid_argument("unit");
                if (!(r > 0)) throw std::out_of_range("rate");
                s.rate_pps = r;
            } catch (const std::exception&) {
                return make_error("source '" + text +
                                  "': rate must be a positive number of "
                                  "packets/s, with an optional k, M or G");
            }
        }
        if (s.flow_scatter && !s.flows)
            return make_error("source '" + text + "': order= needs flows=N");
        if (s.flow_both && !s.flows)
            return make_error("source '" + text + "': directions= needs flows=N");
        if (s.flows && s.size < kNullFlowMinSize)
            return make_error("source '" + text + "': flows= needs frames of at least " +
                              std::to_string(kNullFlowMinSize) +
                              " bytes (Ethernet, IPv4 and UDP headers)");
        return s;
    }
    static const std::regex pci("^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\\.[0-7]$");
    if (std::regex_match(text, pci)) {
        s.kind = SourceSpec::Kind::kPci;
        s.arg = text;
        return s;
    }
    // A bare interface name, as tcpdump takes it (-i eth0, -i any): a kernel
    // interface, read by af_packet. The kernel refuses '/', ':' and blanks
    // in a name (dev_valid_name), so these never shadow the forms above.
    std::string name = text.substr(0, text.rfind('@'));
    if (!name.empty() && name != "." && name != ".." && name.size() < 16 &&
        name.find_first_of(":/ \t\n,=") == std::string::npos) {
        auto mapped = parse_source("af_packet:" + text);
        if (mapped) {
            mapped->bare = true;
            return mapped;
        }
    }
    return make_error(
        "unknown source '" + text +
        "' (expected an interface name, a PCI address, af_xdp:IFACE, "
        "af_packet:IFACE (each optionally @netns=NAME or @pid=PID), "
        "pcap:FILE[,loop] or null[:SIZE][,rate=PPS][,frames=FILE][,flows=N][,order=ORDER])");
}

/* --flow-cutoff: a byte count, k/M/G decimal (as -C counts millions). */
Result<uint64_t> parse_flow_bytes(const std::string& text) {
    const std::string err =
        "--flow-cutoff: expected bytes such as 20k or 1M (1..10^12), not '" + text + "'";
    auto v = parse_quantity(text, kDecimalBytes);
    if (!v || !(*v >= 1 && *v <= 1e12)) return make_error(err);
    return static_cast<uint64_t>(*v);
}

namespace {

/* --dedup's WINDOW: NUMBER with ns, us, ms or s (a bare number: ms); empty:
 * the default. 1 us .. 10 s. */
Result<uint64_t> parse_dedup_window(const std::string& text) {
    // 2 ms: a SPAN or tap copy of a packet follows it by the switch's
    // forwarding time (microseconds) or an aggregator's buffering (under a
    // millisecond); a sender's retransmission comes one RTO later (Linux:
    // 200 ms at least) and differs anyway (IP ID, TCP timestamps).
    if (text.empty()) return uint64_t(2'000'000);
    const std::string err =
        "--dedup: expected a window such as 2ms, 500us or 1s (1us..10s), not '" + text +
        "' (write --dedup=WINDOW before the expression)";
    static constexpr QuantityUnit kWindow[] = {
        {"", 1e6}, {"ns", 1}, {"us", 1e3}, {"ms", 1e6}, {"s", 1e9}};
    auto ns = parse_quantity(text, kWindow);
    if (!ns || !(*ns >= 1e3 && *ns <= 1e10)) return make_error(err);
    return static_cast<uint64_t>(*ns);
}

}  // namespace

Result<Options> parse_options(int argc, char** argv, bool& exit_now) {
    exit_now = false;
    Options o;
    std::vector<std::string> sources, expr_words;
    std::string format = "pcap";
    bool nano = false;
    std::string scope = "payload";
    std::string mode_text;
    bool no_promisc = false;
    std::string direction = "inout";

    CLI::App app{"capd: capture packets from DPDK sources into rotating pcap/pcapng files", "capd"};
    app.set_version_flag("--version", "capd 0.1.0");
    app.add_option("-i", sources,
                   "source: IFACE (as af_packet:IFACE), any, a number from capd -D, PCI "
                   "address, af_xdp:IFACE, af_packet:IFACE, pcap:FILE[,loop], null[:SIZE] "
                   "(repeatable). IFACE@netns=NAME or IFACE@pid=PID captures in another "
                   "network namespace (capd -D lists them)")
        ->allow_extra_args(false);
    app.add_option("-w", o.write_path,
                   "output file (tcpdump naming with -C/-G/-W); - for standard output");
    app.add_option("-C", o.rotate_mb, "rotate after MB millions of bytes");
    app.add_option("-G", o.rotate_seconds, "rotate every SECONDS (strftime in -w)");
    app.add_option("-W", o.max_files, "keep at most COUNT files, deleting the oldest");
    app.add_option("-z", o.post_rotate_cmd, "run CMD FILE on each closed file");
    app.add_option("-s", o.snaplen, "snapshot length (0 = 262144)");
    app.add_option("-c", o.count, "stop after writing COUNT packets");
    app.add_option("--duration", o.duration, "stop after SECONDS");
    app.add_option("--format", format, "pcap or pcapng")->check(CLI::IsMember({"pcap", "pcapng"}));
    app.add_flag("--nano", nano, "nanosecond timestamps in pcap files");
    app.add_option("--workers", o.workers, "worker lcores");
    app.add_option("--writers", o.writers, "storage lcores");
    app.add_option("--pattern", o.patterns, "payload pattern: literal or /regex/flags (repeatable)")
        ->allow_extra_args(false);
    app.add_option("--scan", scope, "where patterns are searched: payload or frame")
        ->check(CLI::IsMember({"payload", "frame"}));
    app.add_option("--bpf-object", o.bpf_object, "eBPF ELF object FILE[:PROGRAM]");
    app.add_option("--ctl", o.ctl_path,
                   "control socket path (default /run/linecap/capd.sock; 'none' disables it)");
    app.add_option("--ctl-group", o.ctl_group, "group allowed to use the control socket");
    app.add_option("--ctl-idle-timeout", o.ctl_idle_timeout_s,
                   "drop a control client that sends no complete request for SECONDS "
                   "(default 30)")
        ->check(CLI::Range(0.1, 86400.0));
    app.add_option("--compile-timeout", o.compile_timeout_s,
                   "stop compiling a filter (expression or patterns) after SECONDS and "
                   "refuse it (default 10)")
        ->check(CLI::Range(0.1, 3600.0));
    app.add_option("--bpf-dir", o.bpf_dir,
                   "root-owned directory of eBPF objects the control group may load by name");
    app.add_option("--stats-json", o.stats_json, "write the final summary as JSON to FILE");
    app.add_flag("-d", o.dump_filter, "print the compiled filter and exit");
    app.add_flag("-D", o.list_sources, "list capture sources and exit");
    app.add_flag("-q,--quiet", o.quiet, "no summary on stderr");
    app.add_flag("--rx-only", o.rx_only, "receive and free only (baseline measurement)");
    app.add_flag("--no-jit", o.no_jit, "run filters in the interpreter");
    app.add_flag("--busy-poll", o.busy_poll,
                 "workers never sleep, even on kernel-interface sources or shared CPUs");
    app.add_flag("--fsync", o.fsync, "fdatasync each file before it gets its final name");
    app.add_flag("--reuse-files", o.reuse_files,
                 "write each new file over the one it displaces (-W's oldest, or the same "
                 "name) instead of deleting it and allocating anew");
    app.add_flag("--preallocate", o.preallocate,
                 "claim the whole -C x -W ring on the file system before capture starts, "
                 "then write over it (implies --reuse-files)");
    app.add_flag("--direct", o.direct,
                 "write files with O_DIRECT, past the page cache, through a 4 KiB-aligned "
                 "staging buffer");
    app.add_flag("--no-index", o.no_index,
                 "write no index beside each file (capq then reads the whole files)");
    app.add_option("--compress", o.compress,
                   "compress each file as it is written: zstd[:LEVEL] (1..19, default 1), lz4 "
                   "or gzip[:LEVEL] (1..9, default 6); files get .zst, .lz4 or .gz");
    app.add_option("--compress-block", o.compress_block,
                   "bytes of whole records per independently compressed block, the unit capq "
                   "decompresses (N, NK or NM; 64K..16M; default 256K)");
    app.add_option("--compress-threads", o.compress_threads,
                   "helper threads per writer that compress its blocks, written in order "
                   "(1..16; default 0: the writer compresses on its own core)");
    app.add_option("--write-behind", o.write_behind_mb,
                   "MiB of a disk file in writeback before a helper thread waits for the "
                   "oldest and drops it from the page cache (default 256; 0: leave it to the "
                   "kernel)")
        ->check(CLI::Range(0u, 1u << 20));
    std::string retain_free, retain_age;
    app.add_option("--retain-free", retain_free,
                   "keep at least PCT% or SIZE (500M, 2G, 1GiB) of the output file system free "
                   "by deleting this capture's oldest files");
    app.add_option("--retain-age", retain_age,
                   "delete this capture's files last written more than DURATION (90s, 15m, 6h, "
                   "7d) ago");
    app.add_flag("--align", o.align,
                 "start -G periods at whole multiples of G seconds of local time (-G 60: at "
                 "each minute) instead of at capd's start");
    std::string spool_max;
    app.add_option("--catalog", o.catalog_url,
                   "publish every closed file's record and flows to the fleet catalogue "
                   "(ClickHouse's HTTP interface, http://HOST:PORT)")
        ->type_name("URL");
    app.add_option("--catalog-tables", o.catalog_tables,
                   "the catalogue's files and flows tables (default linecap_files,linecap_flows)")
        ->type_name("FILES,FLOWS");
    app.add_option("--catalog-host", o.catalog_host,
                   "this host's name in the catalogue (default: the hostname)")
        ->type_name("NAME");
    app.add_option("--catalog-serve", o.catalog_serve,
                   "where this host's capq --serve answers, for the catalogue")
        ->type_name("ADDR:PORT");
    app.add_option("--catalog-spool", o.catalog_spool,
                   "file holding the catalogue rows not sent yet (default: .capd-catalog.spool "
                   "beside -w)")
        ->type_name("PATH");
    app.add_option("--catalog-spool-max", spool_max,
                   "bytes of rows the spool holds before it drops the oldest (K, M, G "
                   "suffixes; default 64M)")
        ->type_name("SIZE");
    std::string flow_budget;
    app.add_option("--catalog-flow-budget", flow_budget,
                   "catalogue rows per file: the biggest flows keep their own, the others are "
                   "aggregated by endpoint (default: a row a flow)")
        ->type_name("N");
    app.add_option("--eal", o.eal_extra, "extra EAL arguments");
    app.add_option("--chunk-kb", o.chunk_kb, "worker-to-writer chunk size in KiB");
    app.add_option("--flush-ms", o.flush_ms, "hand partial chunks to the writer after MS");
    app.add_option("--ring-chunks", o.ring_chunks,
                   "chunks each worker ring holds (256: 256 MiB of 1 MiB chunks, 0.2 s of "
                   "64-byte line rate)");
    app.add_option("--rx-desc", o.rx_desc,
                   "receive descriptors per port queue (4096; the port may lower it); "
                   "a deeper ring covers a longer stall of the worker");
    app.add_flag("-p", no_promisc,
                 "do not put kernel interfaces into promiscuous mode (as tcpdump)");
    app.add_option("-B", o.buffer_kb,
                   "af_packet kernel buffer per queue in KiB, as tcpdump's -B (wins over "
                   "--rx-desc for af_packet; DPDK ports use --rx-desc)");
    app.add_flag("-U", o.packet_buffered,
                 "packet-buffered output: each burst is written as it arrives, not after "
                 "--flush-ms");
    app.add_option("-Q", direction, "direction of kernel-interface packets: in, out or inout")
        ->check(CLI::IsMember({"in", "out", "inout"}));
    app.add_option("--file-mode", mode_text, "octal mode of output files (default 0640)");
    app.add_option("-Z", o.run_as_user, "after set-up, drop privileges to USER (as tcpdump)");
    app.add_option("--tcp-flows", o.tcp_flows,
                   "TCP connections each worker tracks for capctl diagnose (e.g. 65536; "
                   "default 0 = off), in the flow table (--flow-table slots; on with this)")
        ->check(CLI::Range(0u, 1u << 22));
    std::string flow_cutoff, dedup;
    app.add_option("--flow-cutoff", flow_cutoff,
                   "write only the first BYTES (wire bytes, both directions; k, M, G: "
                   "10^3, 10^6, 10^9) of each flow; TCP SYN, FIN and RST are always written");
    app.add_option("--flow-packets", o.flow_packets,
                   "write only the first N packets of each flow (both directions)")
        ->check(CLI::Validator(
            [](std::string& v) {
                return !v.empty() && v[0] == '-' ? "1..1000000000 packets, not " + v
                                                 : std::string();
            },
            "N"));
    app.add_option("--dedup", dedup,
                   "drop a packet equal (but for TTL and IP checksum) to one of its flow's "
                   "within WINDOW (default 2ms; ns, us, ms, s)")
        ->expected(0, 1);
    app.add_option(
        "--flow-table", o.flow_slots,
        "flows each worker's table holds for --flow-cutoff, --flow-packets, "
        "--dedup and rules' own cutoffs (default 262144; 160 bytes each, 192 with --dedup); alone, "
        "turns the table on for capctl rules add NAME --flow-cutoff");
    app.add_flag("--flow-cutoff-per-direction", o.flow_per_direction,
                 "each direction of a flow gets --flow-cutoff / --flow-packets (and rules' "
                 "cutoffs) on its own, instead of both directions together");
    app.add_flag("--xdp-generic", o.xdp_generic,
                 "af_xdp: attach the XDP program in generic (SKB) mode, which interfaces "
                 "without native XDP (lo, many virtual devices) need");
    std::string on_loss = "stop";
    app.add_option("--on-source-loss", on_loss,
                   "when an af_packet/af_xdp interface is deleted while capturing: stop "
                   "(default, exit 1) or continue with the other sources (exit 1 at the end)")
        ->check(CLI::IsMember({"stop", "continue"}));
    app.add_option("--test-writer-delay-us", o.test_writer_delay_us)->group("");
    app.add_option("--test-writer-delay-for", o.test_writer_delay_for_s)->group("");
    app.add_option("expression", expr_words, "pcap-filter expression");

    // Negative numbers would wrap in unsigned options: refuse them by name.
    const CLI::Validator non_negative(
        [](std::string& v) -> std::string {
            char* end = nullptr;
            double d = std::strtod(v.c_str(), &end);
            if (end == v.c_str() || *end != '\0') return "expected a number, not '" + v + "'";
            return d < 0 ? "must be 0 or more, not " + v : std::string();
        },
        "NUMBER >= 0");
    for (const char* name : {"-C", "-G", "-W", "-s", "-c", "--duration", "--workers", "--writers",
                             "--chunk-kb", "--flush-ms", "--ring-chunks", "--rx-desc", "-B",
                             "--test-writer-delay-us", "--test-writer-delay-for"})
        app.get_option(name)->check(non_negative);
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        exit_now = true;
        app.exit(e);
        return o;
    } catch (const CLI::CallForVersion& e) {
        exit_now = true;
        app.exit(e);
        return o;
    } catch (const CLI::ParseError& e) {
        return make_error(e.what());
    }

    for (const auto& w : expr_words) o.expression += (o.expression.empty() ? "" : " ") + w;
    const Direction dir = direction == "in"    ? Direction::kIn
                          : direction == "out" ? Direction::kOut
                                               : Direction::kInOut;
    for (std::string t : sources) {
        // tcpdump's -i NUMBER: entry NUMBER of capd -D.
        if (!t.empty() && t.size() < 10 && t.find_first_not_of("0123456789") == std::string::npos) {
            auto listed = listed_source_by_number(std::stoul(t));
            if (!listed) return make_error(listed.error());
            t = *listed;
        }
        auto s = parse_source(t);
        if (!s) return make_error(s.error());
        for (const SourceSpec& earlier : o.sources)
            if (same_packets(earlier, *s))
                return make_error("source '" + s->text + "' is given twice (also as '" +
                                  earlier.text +
                                  (earlier.any_interface() || s->any_interface()
                                       ? "', which holds every interface"
                                       : "'") +
                                  "): every packet would be written twice");
        s->promisc = !no_promisc;
        s->direction = dir;
        o.sources.push_back(*s);
    }
    if (format == "pcapng")
        o.format = storage::Format::kPcapng;
    else
        o.format = nano ? storage::Format::kPcapNano : storage::Format::kPcapMicro;
    o.scan_scope = scope == "frame" ? filters::ScanScope::kFrame : filters::ScanScope::kPayload;
    o.keep_going_on_source_loss = on_loss == "continue";
    if (!mode_text.empty()) {
        try {
            size_t pos;
            unsigned long m = std::stoul(mode_text, &pos, 8);
            if (pos != mode_text.size() || m > 0777) throw std::out_of_range("mode");
            o.file_mode = static_cast<uint32_t>(m);
        } catch (const std::exception&) {
            return make_error("--file-mode: expected an octal mode such as 0640");
        }
    }
    if (app.count("--flow-cutoff")) {
        auto b = parse_flow_bytes(flow_cutoff);
        if (!b) return make_error(b.error());
        o.flow_cutoff = *b;
    }
    if (app.count("--flow-packets") && (o.flow_packets == 0 || o.flow_packets > 1000000000))
        return make_error("--flow-packets: 1..1000000000 packets, not " +
                          std::to_string(o.flow_packets));
    if (app.count("--dedup")) {
        auto w = parse_dedup_window(dedup);
        if (!w) return make_error(w.error());
        o.dedup_window_ns = *w;
    }
    if (o.flow_slots < 16 || o.flow_slots > (1u << 26))
        return make_error("--flow-table: 16..67108864 flows per worker, not " +
                          std::to_string(o.flow_slots));
    o.flow_slots_given = app.count("--flow-table") > 0;
    if (o.flow_per_direction && !o.flow_cutoff && !o.flow_packets && !o.flow_slots_given)
        return make_error(
            "--flow-cutoff-per-direction applies --flow-cutoff or --flow-packets per "
            "direction (or rules' own, with --flow-table): give one of them");
    if (o.flow_table() && o.rx_only)
        return make_error(
            "--rx-only receives and frees: it takes no --flow-cutoff, "
            "--flow-packets or --dedup");

    // tcpdump's rule and message.
    if (o.snaplen > 262144)
        return make_error("-s: invalid snaplen " + std::to_string(o.snaplen) +
                          " (must be >= 0 and <= 262144)");
    if (o.snaplen == 0) o.snaplen = 262144;

    // Checks that need no system state. Contradictions are errors, as tcpdump.
    if (o.list_sources) return o;
    if (o.sources.empty() && !o.dump_filter) return make_error("no capture source: give -i SOURCE");
    if (o.dump_filter) return o;
    if (o.write_path.empty() && !o.rx_only) return make_error("no output file: give -w FILE");
    if (!o.compress.empty()) {
        auto c = index::parse_codec(o.compress);
        if (!c) return make_error("--compress " + o.compress + ": " + c.error());
        o.codec = *c;
        if (o.codec.codec != index::Codec::kNone && o.write_path == "-")
            return make_error(
                "--compress needs files: its blocks are indexed by their place in the file "
                "(for a compressed stream, pipe -w - into zstd, lz4 or gzip)");
    }
    if (!o.compress_block.empty()) {
        if (o.codec.codec == index::Codec::kNone)
            return make_error("--compress-block needs --compress");
        auto v = parse_quantity(o.compress_block, kBinaryBytes, /*whole_only=*/true);
        if (!v || *v < (64u << 10) || *v > (16u << 20))
            return make_error("--compress-block " + o.compress_block +
                              ": expected a size from 64K to 16M");
        o.compress_block_bytes = static_cast<uint32_t>(*v);
    }
    if (app.count("--compress-threads")) {
        if (o.codec.codec == index::Codec::kNone)
            return make_error("--compress-threads needs --compress");
        if (o.compress_threads < 0 || o.compress_threads > 16)
            return make_error("--compress-threads " + std::to_string(o.compress_threads) +
                              ": expected 0 to 16 helper threads per writer");
    }
    if (o.write_path == "-") {
        // One stream: nothing to rotate, name, run -z on or write past the
        // page cache (tcpdump also refuses -C with -w -).
        for (const char* opt :
             {"-C", "-G", "-W", "-z", "--reuse-files", "--preallocate", "--direct"})
            if (app.count(opt))
                return make_error(std::string(opt) +
                                  " needs files: -w - writes one stream to standard output");
        if (o.writers > 1)
            return make_error("--writers " + std::to_string(o.writers) +
                              ": -w - is one stream, written by one writer");
    }
    if (o.rotate_mb < 0 || (app.count("-C") && o.rotate_mb <= 0))
        return make_error("-C: file size must be positive");
    if (o.max_files > 0 && o.rotate_mb == 0 && o.rotate_seconds == 0)
        return make_error("-W needs -C or -G");
    if (app.count("-W") && o.max_files == 0) return make_error("-W: count must be positive");
    if (app.count("-G") && o.rotate_seconds == 0) return make_error("-G: seconds must be positive");
    if (o.preallocate && (o.rotate_mb == 0 || o.max_files == 0))
        return make_error("--preallocate needs -C and -W: it claims the ring's C x W bytes");
    if (o.preallocate && o.rotate_seconds > 0)
        return make_error(
            "--preallocate does not take -G: the ring's names must be known at start");
    if (!retain_free.empty() || !retain_age.empty() || o.align) {
        if (o.write_path == "-")
            return make_error(std::string(o.align ? "--align" : "retention") +
                              " needs files: -w - writes one stream to standard output");
        if (!retain_free.empty()) {
            auto f = storage::parse_retain_free(retain_free);
            if (!f) return make_error(f.error());
            o.retain_free = *f;
        }
        if (!retain_age.empty()) {
            auto a = storage::parse_retain_age(retain_age);
            if (!a) return make_error(a.error());
            o.retain_age_s = *a;
        }
        // Retention deletes whole closed files, never the one being written.
        if ((o.retain_free.on() || o.retain_age_s) && o.rotate_mb == 0 && o.rotate_seconds == 0)
            return make_error(std::string(o.retain_free.on() ? "--retain-free" : "--retain-age") +
                              " needs -C or -G: without rotation there is one file, the one "
                              "being written, which retention never deletes");
        if (o.align && o.rotate_seconds == 0) return make_error("--align needs -G");
        // A preallocated ring holds its -C x -W bytes from the start and is
        // bounded by -W; deleting its files would give back space the ring
        // claimed to hold, and the next pass would allocate it anew.
        if (o.preallocate && (o.retain_free.on() || o.retain_age_s))
            return make_error(std::string(o.retain_free.on() ? "--retain-free" : "--retain-age") +
                              " does not take --preallocate: the ring holds its -C x -W bytes "
                              "from the start; bound it with -W");
    }
    if (app.count("-c") && o.count == 0) return make_error("-c: count must be positive");
    if (o.duration < 0 || (app.count("--duration") && o.duration == 0))
        return make_error("--duration: seconds must be positive");
    if (o.workers == 0 || o.workers > 64) return make_error("--workers: 1..64");
    if (o.writers == 0 || o.writers > 64) return make_error("--writers: 1..64");
    if (o.writers > o.workers)
        return make_error("--writers " + std::to_string(o.writers) + " exceeds --workers " +
                          std::to_string(o.workers) + ": each writer needs a worker");
    if (nano && o.format == storage::Format::kPcapng)
        return make_error("--nano applies to --format pcap; pcapng is always nanosecond");
    if (o.chunk_kb < 64 || o.chunk_kb > 65536) return make_error("--chunk-kb: 64..65536");
    if (uint64_t(o.chunk_kb) * 1024 <
        uint64_t(o.snaplen) + storage::kMaxRecordOverhead + storage::kStartBytes)
        return make_error("--chunk-kb must hold one record of snaplen " +
                          std::to_string(o.snaplen) + " bytes");
    if (o.ring_chunks < 2 || o.ring_chunks > 65536) return make_error("--ring-chunks: 2..65536");
    if (o.flush_ms == 0) return make_error("--flush-ms must be positive");
    if (o.rx_desc < 64 || o.rx_desc > 32768 || (o.rx_desc & (o.rx_desc - 1)))
        return make_error("--rx-desc: a power of two, 64..32768");

    // tcpdump's kernel-interface options: what each source can honour.
    auto any_source = [&](auto pred) {
        return std::any_of(o.sources.begin(), o.sources.end(), pred);
    };
    auto af_packet = [](const SourceSpec& s) { return s.kind == SourceSpec::Kind::kAfPacket; };
    if (app.count("-B")) {
        if (!any_source(af_packet))
            return make_error(
                "-B sizes the kernel buffer of af_packet interfaces; for af_xdp "
                "and PCI ports use --rx-desc N (receive descriptors)");
        if (o.buffer_kb < 16 || o.buffer_kb > 65536)
            return make_error("-B: 16..65536 KiB (64 MiB) per queue, not " +
                              std::to_string(o.buffer_kb));
    }
    if (o.packet_buffered && app.count("--flush-ms"))
        return make_error("-U writes each burst as it arrives; --flush-ms " +
                          std::to_string(o.flush_ms) + " contradicts it: give one of them");
    if (o.packet_buffered && o.direct)
        return make_error(
            "-U does not take --direct: O_DIRECT holds a partial 4 KiB block "
            "until the file is closed");
    if (dir != Direction::kInOut)
        for (const SourceSpec& s : o.sources) {
            if (af_packet(s)) continue;
            bool receive_only =
                s.kind == SourceSpec::Kind::kAfXdp || s.kind == SourceSpec::Kind::kPci;
            if (receive_only && dir == Direction::kIn) continue;
            if (receive_only)
                return make_error("-Q out: source '" + s.text +
                                  "' sees only received "
                                  "packets; use af_packet:IFACE for sent ones");
            return make_error("-Q " + direction + ": source '" + s.text +
                              "' has no direction "
                              "(only kernel interfaces do); use a filter instead");
        }
    if (!spool_max.empty()) {
        auto v = parse_quantity(spool_max, kBinaryBytes, /*whole_only=*/true);
        if (!v || *v < 1 || *v > double(1ull << 44))
            return make_error("--catalog-spool-max: expected a size such as 64M, not '" +
                              spool_max + "'");
        o.catalog_spool_max = static_cast<uint64_t>(*v);
    }
    if (!flow_budget.empty()) {
        char* end = nullptr;
        errno = 0;
        unsigned long long v = std::strtoull(flow_budget.c_str(), &end, 10);
        if (end == flow_budget.c_str() || *end != '\0' || errno || v < 2 || v > (1u << 24) ||
            flow_budget[0] == '-')
            return make_error(
                "--catalog-flow-budget: expected a number of rows per file, 2 to 16777216, not '" +
                flow_budget + "'");
        o.catalog_flow_budget = static_cast<uint32_t>(v);
    }
    const bool catalog_opts = !o.catalog_tables.empty() || !o.catalog_host.empty() ||
                              !o.catalog_serve.empty() || !o.catalog_spool.empty() ||
                              !spool_max.empty() || !flow_budget.empty();
    if (catalog_opts && o.catalog_url.empty())
        return make_error("--catalog-tables/-host/-serve/-spool/-flow-budget need --catalog URL");
    if (!o.catalog_url.empty()) {
        if (auto u = storage::parse_catalog_url(o.catalog_url); !u)
            return make_error("--catalog: " + u.error());
        if (!o.catalog_tables.empty())
            if (auto t = storage::parse_catalog_tables(o.catalog_tables); !t) return t.failure();
        if (o.write_path == "-") return make_error("--catalog publishes files; -w - writes none");
        if (o.catalog_host.size() > 255 ||
            o.catalog_host.find_first_of("\t\n\\") != std::string::npos)
            return make_error("--catalog-host: a name without tabs, newlines or backslashes");
    }
    return o;
}

}  // namespace linecap::dataplane
