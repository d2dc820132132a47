/* capq: finds stored packets through the index written beside every
 * capture file.
 *
 *   capq [-r DIR|FILE]... [--since T] [--until T] [-w OUT|-]
 *        [--format pcap|pcapng] [--explain] [EXPRESSION...]
 *   capq --flows [--json] [-r DIR|FILE]... [--since T] [--until T] [EXPRESSION...]
 *   capq --reindex [--index-version 4|1] FILE...
 *   capq --serve ADDR:PORT --cert F --key F --ca F -r DIR... [--max-packets N]
 *        [--max-bytes SIZE] [--max-clients N]
 *   capq --fleet-hosts ADDR:PORT,... --cert F --key F --ca F [--since T]
 *        [--until T] [-w OUT|-] [EXPRESSION...]
 *   capq --fleet URL [--fleet-only NAME] --cert F --key F --ca F [--since T] [--until T]
 *        [-w OUT|-] [EXPR...]
 *   capq --fleet URL --flows [--json] [--fleet-tables FILES,FLOWS] [--since T] [--until T] [EXPR...]
 *   capq --fleet-schema [CLUSTER]   (the catalogue's CREATE statements, one a line)
 *
 * The composition root: options here, the work in commands.cc. No DPDK EAL.
 */
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "index/capture_reader.hh"
#include "query/catalog.hh"
#include "query/commands.hh"
#include "query/fleet.hh"
#include "query/serve.hh"
#include "query/time_spec.hh"

using namespace linecap;
using namespace linecap::query;

namespace {

const char* kFooter =
    "Times (T): RFC 3339 (2026-12-06T14:05:00Z, 2026-12-06T15:05:00.5+01:00), Unix seconds\n"
    "with a fraction (1796565900.25), or relative to now (-500ms, -30s, -15m, -2h, -1d).\n"
    "The window is since <= timestamp < until, to the nanosecond.\n"
    "Output: pcap (nanosecond when any input is) or pcapng, in timestamp order across\n"
    "files; to -w OUT, or to stdout when it is not a terminal. --explain alone prints\n"
    "the plan and writes no packets. A reader that closes the pipe early ends capq\n"
    "quietly with exit 0.\n"
    "--serve answers GET /v1/packets over HTTPS (client certificates signed by --ca);\n"
    "--fleet-hosts asks several such hosts and merges their answers: exit 0 when every\n"
    "host answered completely, 3 when the answer is partial (each host is reported).\n";

int fail(const std::string& msg) {
    std::fprintf(stderr, "capq: %s\n", msg.c_str());
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    QueryOptions o;
    std::string since, until, format = "pcap";
    std::vector<std::string> words;
    bool flows = false, reindex = false;
    ServeOptions so;
    std::string fleet_hosts, max_packets, max_bytes;
    CLI::App app{"capq: finds stored packets through capd's index", "capq"};
    app.get_formatter()->label("Usage", "usage");
    app.footer(kFooter);
    app.add_option("-r", o.inputs, "capture directory or file (repeatable)")
        ->type_name("DIR|FILE")
        ->allow_extra_args(false);
    app.add_option("--since", since, "first time of the window (inclusive)")->type_name("T");
    app.add_option("--until", until, "end of the window (exclusive)")->type_name("T");
    app.add_option("-w", o.out, "output file, - for stdout")->type_name("OUT");
    app.add_option("--format", format, "output format: pcap or pcapng")
        ->check(CLI::IsMember({"pcap", "pcapng"}));
    app.add_flag("--explain", o.explain, "show the plan: files and bytes selected, and why");
    app.add_flag("--flows", flows, "list the matching flows from the index, no packets");
    app.add_flag("--json", o.json, "--flows as a JSON array");
    app.add_flag("--reindex", reindex, "write the index of each FILE given as argument");
    int index_version = 4;
    auto* version_opt =
        app.add_option("--index-version", index_version,
                       "--reindex: 4 (compressed flows, the default) or 1 (plain flows)")
            ->type_name("N")
            ->check(CLI::IsMember({1, 4}));
    std::string fleet_url, fleet_tables, fleet_schema;
    app.add_option("--fleet", fleet_url,
                   "ask the fleet catalogue (ClickHouse's HTTP interface) instead of -r")
        ->type_name("URL");
    std::string fleet_only;
    app.add_option("--fleet-only", fleet_only,
                   "with --fleet: ask only this host of those the catalogue names")
        ->type_name("NAME");
    app.add_option("--fleet-tables", fleet_tables,
                   "the catalogue's files and flows tables (default linecap_files,linecap_flows)")
        ->type_name("FILES,FLOWS");
    auto* schema_opt = app.add_option("--fleet-schema", fleet_schema,
                                      "print the catalogue's CREATE statements, one a line, "
                                      "for a cluster (Distributed tables) or none")
                           ->type_name("CLUSTER")
                           ->expected(0, 1);
    app.add_option("--serve", so.listen, "serve the -r directories over HTTPS")
        ->type_name("ADDR:PORT");
    app.add_option("--fleet-hosts", fleet_hosts, "ask these capq --serve hosts, merge")
        ->type_name("ADDR:PORT,...");
    app.add_option("--cert", so.tls.cert, "this host's certificate (PEM)")->type_name("FILE");
    app.add_option("--key", so.tls.key, "its private key (PEM)")->type_name("FILE");
    app.add_option("--ca", so.tls.ca, "the fleet CA's certificate (PEM)")->type_name("FILE");
    app.add_option("--max-packets", max_packets, "--serve: packets per request at most")
        ->type_name("N");
    app.add_option("--max-bytes", max_bytes, "--serve: pcap bytes per request at most")
        ->type_name("SIZE");
    app.add_option("--max-clients", so.max_clients, "--serve: requests served at once (8)")
        ->type_name("N");
    std::string max_inflate;
    app.add_option("--max-inflate", max_inflate,
                   "a compressed file read without its index may decompress to at most SIZE "
                   "(default: a quarter of the memory; --serve: that shared by --max-clients)")
        ->type_name("SIZE");
    app.add_option("expression", words, "pcap-filter EXPRESSION (or FILEs with --reindex)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::string msg = e.what();
        for (char& c : msg)
            if (c == '\n') c = ' ';
        return fail(msg);
    }
    if (!max_inflate.empty()) {
        auto n = parse_size(max_inflate);
        if (!n || *n == 0)
            return fail("--max-inflate: expected a size such as 4G, not '" + max_inflate + "'");
        index::CaptureReader::set_inflate_limit(*n);
    }
    if (schema_opt->count() > 0) {
        storage::CatalogTables t;
        if (!fleet_tables.empty()) {
            auto r = storage::parse_catalog_tables(fleet_tables);
            if (!r) return fail(r.error());
            t = *r;
        }
        for (const auto& sql : storage::catalog_schema_sql(t, fleet_schema))
            std::printf("%s\n", sql.c_str());
        return 0;
    }
    if (version_opt->count() > 0 && !reindex) return fail("--index-version needs --reindex");
    if (reindex) {
        if (flows || o.explain || !o.inputs.empty() || !o.out.empty())
            return fail("--reindex takes only FILE arguments");
        return run_reindex(words, index_version);
    }
    if (!so.listen.empty() || !fleet_hosts.empty()) {
        if (!so.listen.empty() && !fleet_hosts.empty())
            return fail("--serve and --fleet-hosts are two commands: give one");
        if (reindex || flows || o.explain || o.json || format != "pcap")
            return fail(
                "--serve and --fleet-hosts take no --reindex, --flows, --explain, --json "
                "or --format");
    } else if (!max_packets.empty() || !max_bytes.empty() ||
               (fleet_url.empty() &&
                (!so.tls.cert.empty() || !so.tls.key.empty() || !so.tls.ca.empty()))) {
        return fail(
            "--cert, --key, --ca and --max-* apply to --serve and --fleet-hosts "
            "(--cert, --key, --ca also to --fleet)");
    }
    if (!so.listen.empty()) {
        if (!words.empty() || !since.empty() || !until.empty() || !o.out.empty())
            return fail("--serve takes no expression, --since, --until or -w: requests do");
        if (!max_packets.empty()) {
            auto n = parse_size(max_packets);
            if (!n || max_packets.find_first_not_of("0123456789") != std::string::npos)
                return fail("--max-packets: '" + max_packets + "': expected a number");
            so.max_packets = *n;
        }
        if (!max_bytes.empty()) {
            auto n = parse_size(max_bytes);
            if (!n) return fail("--max-bytes: " + n.error());
            so.max_bytes = *n;
        }
        so.dirs = o.inputs;
        // Each client's request may inflate a file at once.
        if (max_inflate.empty() && so.max_clients > 0)
            index::CaptureReader::set_inflate_limit(index::CaptureReader::inflate_limit() /
                                                    so.max_clients);
        return run_serve(so);
    }
    if (!fleet_hosts.empty() && !fleet_url.empty())
        return fail("--fleet asks the catalogue which hosts; --fleet-hosts names them: give one");
    if (!fleet_hosts.empty() && !o.inputs.empty())
        return fail("--fleet-hosts reads the hosts' stores, not -r");
    for (const auto& w : words) o.expression += (o.expression.empty() ? "" : " ") + w;
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    if (!since.empty()) {
        auto t = parse_time(since, now);
        if (!t) return fail("--since: " + t.error());
        o.since_ns = *t < 0 ? 0 : uint64_t(*t);
    }
    if (!until.empty()) {
        auto t = parse_time(until, now);
        if (!t) return fail("--until: " + t.error());
        o.until_ns = *t < 0 ? 0 : uint64_t(*t);
    }
    o.format = format == "pcapng" ? OutFormat::kPcapng : OutFormat::kPcap;
    if (!fleet_tables.empty() && fleet_url.empty()) return fail("--fleet-tables needs --fleet URL");
    if (!fleet_only.empty() && (fleet_url.empty() || flows))
        return fail("--fleet-only applies to --fleet URL without --flows");
    if (!fleet_url.empty()) {
        if (!o.inputs.empty()) return fail("--fleet asks the catalogue; -r does not apply");
        if (auto u = storage::parse_catalog_url(fleet_url); !u)
            return fail("--fleet: " + u.error());
        storage::CatalogTables t;
        if (!fleet_tables.empty()) {
            auto r = storage::parse_catalog_tables(fleet_tables);
            if (!r) return fail(r.error());
            t = *r;
        }
        if (flows) {
            if (!o.out.empty()) return fail("--flows writes no packets; -w does not apply");
            return run_fleet_flows(fleet_url, t, o.since_ns, o.until_ns, o.expression, o.json);
        }
        if (o.explain || o.json || format != "pcap")
            return fail("--fleet takes no --explain, --json or --format without --flows");
        CatalogLookup how;
        auto found = catalog_targets(fleet_url, t, o.since_ns, o.until_ns, o.expression, &how);
        if (!found) return fail("--fleet: " + found.error());
        std::vector<FleetTarget> targets;
        for (auto& c : *found) targets.push_back({c.host, c.serve, std::move(c.files)});
        std::fprintf(stderr, "capq fleet: the catalogue names %zu host%s (%s)\n", targets.size(),
                     targets.size() == 1 ? "" : "s", how.how().c_str());
        if (!fleet_only.empty()) {
            std::erase_if(targets, [&](const FleetTarget& t) { return t.host != fleet_only; });
            // Not an error: no file of that host can hold the packets, so
            // its answer is empty. Said, since a misspelt name reads so too.
            if (targets.empty())
                std::fprintf(stderr,
                             "capq fleet: %s: the catalogue names no file of it that can hold "
                             "the packets; its answer is empty\n",
                             fleet_only.c_str());
        }
        FleetOptions fo;
        fo.tls = so.tls;
        fo.since_ns = o.since_ns;
        fo.until_ns = o.until_ns;
        fo.expression = o.expression;
        fo.out = o.out;
        return run_fleet(targets, fo);
    }
    if (!fleet_hosts.empty()) {
        auto targets = parse_fleet_hosts(fleet_hosts);
        if (!targets) return fail("--fleet-hosts: " + targets.error());
        FleetOptions fo;
        fo.tls = so.tls;
        fo.since_ns = o.since_ns;
        fo.until_ns = o.until_ns;
        fo.expression = o.expression;
        fo.out = o.out;
        return run_fleet(*targets, fo);
    }
    if (o.inputs.empty()) return fail("no input: give -r DIR or -r FILE");
    if (flows) {
        if (!o.out.empty()) return fail("--flows writes no packets; -w does not apply");
        return run_flows(o);
    }
    if (o.json) return fail("--json applies to --flows");
    return run_query(o);
}
