#include "ctl/diag/cli.hh"

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cinttypes>

#include "ctl/diag/compare.hh"
#include "ctl/diag/diagnose.hh"
#include "ctl/diag/fleet_fetch.hh"
#include "query/time_spec.hh"

namespace linecap::ctl::diag {

const char* const kDiagnoseUsage =
    "usage: diagnose [--json] [--all] [--max-flows N] FILE...\n"
    "  One verdict per TCP connection in the capture files (read in the order given,\n"
    "  as one capture): REFUSED, UNANSWERED, RESET, HALF-OPEN, RETRANSMISSIONS,\n"
    "  ZERO-WINDOW, DUP-ACKS, MID-STREAM or OK; problems first.\n"
    "  --all          list every healthy connection (default: the first 20)\n"
    "  --max-flows N  connections tracked at once (default 65536); when full, the\n"
    "                 least recently active one is reported and its slot reused\n"
    "  --json         machine output; frame numbers run across the files in order\n";

const char* const kCompareUsage =
    "usage: compare [--json] [--nat A_ADDR[:PORT]=B_ADDR[:PORT]]... [--ignore-ip-id]\n"
    "               [--max-frames N] A.pcap B.pcap\n"
    "  Matches the packets of two captures of the same traffic taken at two points\n"
    "  (IPv4 ID, addresses, ports, TCP seq/ack/flags, payload length and hash) and\n"
    "  reports packets seen at one point and never at the other, with frame\n"
    "  numbers, and the delay tB - tA.\n"
    "  --nat A=B        address (and port) as seen in A is B in capture B; repeatable\n"
    "  --ignore-ip-id   when a middlebox rewrites the IPv4 ID\n"
    "  --max-frames N   frame numbers listed per finding (default 10)\n"
    "  --json           machine output\n"
    "usage: compare [options above] --fleet-hosts A_ADDR:PORT,B_ADDR:PORT --cert F --key F\n"
    "               --ca F [--since T] [--until T] [--partial] [EXPRESSION]\n"
    "       compare [options above] --fleet URL --hosts A_NAME,B_NAME --cert F --key F --ca F\n"
    "               [--fleet-tables FILES,FLOWS] [--since T] [--until T] [--partial] [EXPRESSION]\n"
    "  A and B are two capture hosts' answers to one query, fetched by capq (as capq\n"
    "  --fleet-hosts or capq --fleet asks them) into memory and compared.\n"
    "  --partial        compare even when a host's answer is partial (unreachable,\n"
    "                   refused, over its cap, cut off): the report says which side;\n"
    "                   without it that is one line and exit 1\n";

namespace {

bool parse_u32(const std::string& s, uint32_t& v) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc() && p == s.data() + s.size();
}

int usage_error(const CliIo& io, const char* cmd, const std::string& msg, const char* usage) {
    std::fprintf(io.err, "%s %s: %s\n%s", io.prog, cmd, msg.c_str(), usage);
    return 1;
}

/* The first left-over word, as an error: an option the command does not
 * know, or one more operand than it takes. */
std::string extra_word(const std::vector<std::string>& extras) {
    for (const auto& x : extras)
        if (x != "--") return "unknown option '" + x + "'";
    return {};
}

/* CLI11 takes a vector in reverse order. */
template <typename Args, typename Add, typename Run>
int parse_and_run(const char* cmd, const std::vector<std::string>& args, const CliIo& io,
                  const char* usage, Add add, Run run) {
    CLI::App app{"", cmd};
    Args a;
    add(app, a);
    std::vector<std::string> words(args.rbegin(), args.rend());
    try {
        app.parse(words);
    } catch (const CLI::ParseError& e) {
        return usage_error(io, cmd, e.what(), usage);
    }
    return run(a, app.remaining(), io);
}

std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    size_t at = 0;
    for (;;) {
        const size_t comma = s.find(',', at);
        out.push_back(s.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
        if (comma == std::string::npos) return out;
        at = comma + 1;
    }
}

/* T as capq reads it, resolved once against `now` so that both sides ask
 * for the same window: Unix seconds with nine fraction digits. */
Result<std::string> absolute_time(const std::string& t, int64_t now, const char* what) {
    auto ns = query::parse_time(t, now);
    if (!ns) return make_error(std::string(what) + ": " + ns.error());
    const uint64_t v = *ns < 0 ? 0 : uint64_t(*ns);
    char buf[48];
    std::snprintf(buf, sizeof buf, "%" PRIu64 ".%09" PRIu64, v / 1000000000u, v % 1000000000u);
    return std::string(buf);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
        s.replace(at, from.size(), to);
    return s;
}

/* compare --fleet-hosts / --fleet --hosts: each side one host's answer. */
int run_fleet_compare(const CompareArgs& a, const CompareOptions& opt,
                      const CompareTextOptions& text, const CliIo& io) {
    auto bad = [&](const std::string& msg) {
        return usage_error(io, "compare", msg, kCompareUsage);
    };
    if (!a.fleet_hosts.empty() && !a.fleet.empty())
        return bad("--fleet-hosts names the two hosts; --fleet asks the catalogue: give one");
    if (a.fleet.empty() && (!a.hosts.empty() || !a.fleet_tables.empty()))
        return bad("--hosts and --fleet-tables apply to --fleet URL");
    if (!a.fleet.empty() && a.hosts.empty())
        return bad("--fleet URL needs --hosts A_NAME,B_NAME: the two hosts to compare");
    const std::vector<std::string> hosts = split_list(a.fleet.empty() ? a.fleet_hosts : a.hosts);
    if (hosts.size() != 2 || hosts[0].empty() || hosts[1].empty())
        return bad("expected two hosts (A,B), got '" + (a.fleet.empty() ? a.fleet_hosts : a.hosts) +
                   "'");
    if (a.cert.empty() || a.key.empty() || a.ca.empty())
        return bad("--cert, --key and --ca are needed to ask the hosts");
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    std::vector<std::string> common = {"--cert", a.cert, "--key", a.key, "--ca", a.ca};
    if (!a.since.empty()) {
        auto t = absolute_time(a.since, now, "--since");
        if (!t) return bad(t.error());
        common.insert(common.end(), {"--since", *t});
    }
    if (!a.until.empty()) {
        auto t = absolute_time(a.until, now, "--until");
        if (!t) return bad(t.error());
        common.insert(common.end(), {"--until", *t});
    }
    if (!a.fleet_tables.empty()) common.insert(common.end(), {"--fleet-tables", a.fleet_tables});
    std::vector<std::vector<std::string>> args;
    for (const auto& h : hosts) {
        std::vector<std::string> v;
        if (a.fleet.empty())
            v = {"--fleet-hosts", h};
        else
            v = {"--fleet", a.fleet, "--fleet-only", h};
        v.insert(v.end(), common.begin(), common.end());
        if (!a.files.empty()) v.push_back("--");
        v.insert(v.end(), a.files.begin(), a.files.end());
        args.push_back(std::move(v));
    }
    auto got = fetch_answers(hosts, args);
    if (!got) {
        std::fprintf(io.err, "%s compare: %s\n", io.prog, got.error().c_str());
        return 1;
    }
    auto& ans = *got;
    const char* side[2] = {"A", "B"};
    // Bad input (the expression, a certificate file) fails both sides alike:
    // said once.
    if (ans[0].status == 1 && ans[1].status == 1 && ans[0].errors == ans[1].errors &&
        !ans[0].errors.empty()) {
        std::fprintf(io.err, "%s compare: %s", io.prog, ans[0].errors.c_str());
        return 1;
    }
    bool stop = false;
    std::vector<std::string> partial_notes;
    for (int i = 0; i < 2; i++) {
        const FleetAnswer& f = ans[size_t(i)];
        const std::string who = std::string(side[i]) + " (" + f.label + ")";
        const std::string state = f.host_line.empty() ? f.label + ": no answer" : f.host_line;
        if (f.status == 0) {
            // Complete, but not an answer from the host: the catalogue
            // names no file of it (a misspelt name reads the same).
            if (f.host_line.find(": answered, ") == std::string::npos && !f.host_line.empty())
                partial_notes.push_back("side " + who + ": " + f.host_line);
            continue;
        }
        if (f.status == 3) {
            if (a.partial) {
                partial_notes.push_back("side " + who + " is partial: " + state +
                                        "; packets it did not send show as seen only at " +
                                        side[1 - i]);
                continue;
            }
            std::fprintf(io.err,
                         "%s compare: %s: %s; a partial answer would show its missing packets "
                         "as lost (--partial compares it anyway)\n",
                         io.prog, side[i], state.c_str());
        } else {
            std::string why = f.errors.empty() ? state : f.errors;
            while (!why.empty() && why.back() == '\n') why.pop_back();
            for (char& c : why)
                if (c == '\n') c = ' ';
            std::fprintf(io.err, "%s compare: %s: %s\n", io.prog, who.c_str(),
                         f.status < 0 ? ("capq did not finish: " + why).c_str() : why.c_str());
        }
        stop = true;
    }
    if (stop) return 1;
    CompareReport r = compare_files(ans[0].path, ans[1].path, opt);
    for (int i = 0; i < 2; i++) {
        FileReport& f = i == 0 ? r.a : r.b;
        const std::string name = ans[size_t(i)].label + "'s answer";
        f.path = name;
        f.error = replace_all(f.error, ans[size_t(i)].path, name);
        if (!f.error.empty()) std::fprintf(io.err, "%s: %s\n", io.prog, f.error.c_str());
    }
    r.notes.insert(r.notes.end(), partial_notes.begin(), partial_notes.end());
    int status = compare_exit_status(r);
    if (status == 0 && (ans[0].status == 3 || ans[1].status == 3)) status = 2;
    if (a.json) {
        std::fprintf(io.out, "%s\n", compare_json(r).dump(2).c_str());
    } else if (status != 1) {
        std::fputs(format_compare_text(r, text).c_str(), io.out);
    }
    return status;
}

}  // namespace

void add_diagnose_options(CLI::App& app, DiagnoseArgs& a) {
    app.set_help_flag();
    app.allow_extras();
    app.add_flag("-h,--help", a.help, "this text");
    app.add_flag("--json", a.json, "machine output");
    app.add_flag("--all", a.all, "list every healthy connection");
    app.add_option("--max-flows", a.max_flows, "connections tracked at once (default 65536)");
    app.add_option("files", a.files, "capture files, read in order as one capture");
}

void add_compare_options(CLI::App& app, CompareArgs& a) {
    app.set_help_flag();
    app.allow_extras();
    app.add_flag("-h,--help", a.help, "this text");
    app.add_flag("--json", a.json, "machine output");
    app.add_flag("--ignore-ip-id", a.ignore_ip_id, "when a middlebox rewrites the IPv4 ID");
    app.add_option("--nat", a.nat, "A_ADDR[:PORT]=B_ADDR[:PORT] (repeatable)")
        ->allow_extra_args(false);
    app.add_option("--max-frames", a.max_frames, "frame numbers listed per finding");
    app.add_option("--fleet-hosts", a.fleet_hosts, "A_ADDR:PORT,B_ADDR:PORT: two capq --serve");
    app.add_option("--fleet", a.fleet, "the fleet catalogue (ClickHouse HTTP URL)");
    app.add_option("--hosts", a.hosts, "with --fleet: A_NAME,B_NAME as the catalogue names them");
    app.add_option("--fleet-tables", a.fleet_tables, "with --fleet: FILES,FLOWS tables");
    app.add_option("--cert", a.cert, "client certificate (PEM)");
    app.add_option("--key", a.key, "its private key (PEM)");
    app.add_option("--ca", a.ca, "the fleet CA's certificate (PEM)");
    app.add_option("--since", a.since, "first time of the window (inclusive)");
    app.add_option("--until", a.until, "end of the window (exclusive)");
    app.add_flag("--partial", a.partial, "compare a partial answer anyway, saying so");
    app.add_option("files", a.files, "A.pcap B.pcap, or with hosts the EXPRESSION");
}

int run_diagnose(const DiagnoseArgs& a, const std::vector<std::string>& extras, const CliIo& io) {
    if (a.help) {
        std::fputs(kDiagnoseUsage, io.out);
        return 0;
    }
    std::string extra = extra_word(extras);
    if (!extra.empty()) return usage_error(io, "diagnose", extra, kDiagnoseUsage);
    TextOptions text;
    text.all = a.all;
    DiagnoseOptions opt;
    if (!a.max_flows.empty() && (!parse_u32(a.max_flows, opt.max_flows) || opt.max_flows == 0)) {
        return usage_error(io, "diagnose",
                           "--max-flows '" + a.max_flows + "': expected a count > 0",
                           kDiagnoseUsage);
    }
    if (a.files.empty()) {
        return usage_error(io, "diagnose", "no capture file given", kDiagnoseUsage);
    }
    DiagnoseReport r = diagnose_files(a.files, opt);
    bool any_readable = false;
    for (const auto& f : r.files) {
        if (!f.error.empty()) std::fprintf(io.err, "%s: %s\n", io.prog, f.error.c_str());
        if (f.opened && (f.error.empty() || f.truncated)) any_readable = true;
    }
    if (a.json) {
        std::fprintf(io.out, "%s\n", diagnose_json(r).dump(2).c_str());
    } else if (any_readable) {
        std::fputs(format_diagnose_text(r, text).c_str(), io.out);
    }
    return diagnose_exit_status(r);
}

int run_compare(const CompareArgs& a, const std::vector<std::string>& extras, const CliIo& io) {
    if (a.help) {
        std::fputs(kCompareUsage, io.out);
        return 0;
    }
    std::string extra = extra_word(extras);
    if (!extra.empty()) return usage_error(io, "compare", extra, kCompareUsage);
    CompareOptions opt;
    opt.ignore_ip_id = a.ignore_ip_id;
    CompareTextOptions text;
    for (const auto& v : a.nat) {
        auto rule = parse_nat_rule(v);
        if (!rule) return usage_error(io, "compare", rule.error(), kCompareUsage);
        opt.nat.push_back(*rule);
    }
    if (!a.max_frames.empty()) {
        uint32_t n = 0;
        if (!parse_u32(a.max_frames, n)) {
            return usage_error(io, "compare",
                               "--max-frames '" + a.max_frames + "': expected a count",
                               kCompareUsage);
        }
        text.max_frames = n;
    }
    if (!a.fleet_hosts.empty() || !a.fleet.empty()) return run_fleet_compare(a, opt, text, io);
    if (!a.hosts.empty() || !a.fleet_tables.empty() || !a.cert.empty() || !a.key.empty() ||
        !a.ca.empty() || !a.since.empty() || !a.until.empty() || a.partial) {
        return usage_error(io, "compare",
                           "--hosts, --fleet-tables, --cert, --key, --ca, --since, --until and "
                           "--partial apply to --fleet-hosts or --fleet",
                           kCompareUsage);
    }
    if (a.files.size() != 2) {
        return usage_error(
            io, "compare",
            "expected two capture files (A and B), got " + std::to_string(a.files.size()),
            kCompareUsage);
    }
    CompareReport r = compare_files(a.files[0], a.files[1], opt);
    for (const FileReport* f : {&r.a, &r.b}) {
        if (!f->error.empty()) std::fprintf(io.err, "%s: %s\n", io.prog, f->error.c_str());
    }
    const int status = compare_exit_status(r);
    if (a.json) {
        std::fprintf(io.out, "%s\n", compare_json(r).dump(2).c_str());
    } else if (status != 1) {
        std::fputs(format_compare_text(r, text).c_str(), io.out);
    }
    return status;
}

int run_diagnose(const std::vector<std::string>& args, const CliIo& io) {
    return parse_and_run<DiagnoseArgs>("diagnose", args, io, kDiagnoseUsage, add_diagnose_options,
                                       [](const DiagnoseArgs& a, const std::vector<std::string>& x,
                                          const CliIo& o) { return run_diagnose(a, x, o); });
}

int run_compare(const std::vector<std::string>& args, const CliIo& io) {
    return parse_and_run<CompareArgs>("compare", args, io, kCompareUsage, add_compare_options,
                                      [](const CompareArgs& a, const std::vector<std::string>& x,
                                         const CliIo& o) { return run_compare(a, x, o); });
}

int capdiag_main(int argc, char** argv) {
    static const char* kUsage =
        "usage: capdiag diagnose [--json] [--all] [--max-flows N] FILE...\n"
        "       capdiag compare [--json] [--nat A_ADDR=B_ADDR]... [--ignore-ip-id] A.pcap B.pcap\n"
        "       capdiag COMMAND --help\n";
    CliIo io;
    CLI::App app{"capdiag: TCP diagnosis and two-point comparison of capture files", "capdiag"};
    app.set_help_flag();
    bool help = false;
    app.add_flag("-h,--help", help);
    app.allow_extras();
    DiagnoseArgs d;
    CompareArgs c;
    CLI::App* diagnose = app.add_subcommand("diagnose", "TCP problems in capture files");
    CLI::App* compare = app.add_subcommand("compare", "packets lost between two capture points");
    add_diagnose_options(*diagnose, d);
    add_compare_options(*compare, c);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const bool in_compare = compare->parsed();
        return usage_error(io, in_compare ? "compare" : "diagnose", e.what(),
                           in_compare ? kCompareUsage : kDiagnoseUsage);
    }
    if (diagnose->parsed()) return run_diagnose(d, diagnose->remaining(), io);
    if (compare->parsed()) return run_compare(c, compare->remaining(), io);
    std::vector<std::string> extras = app.remaining();
    if (help || (!extras.empty() && extras[0] == "help")) {
        std::fputs(kUsage, stdout);
        std::fputs("\n", stdout);
        std::fputs(kDiagnoseUsage, stdout);
        std::fputs("\n", stdout);
        std::fputs(kCompareUsage, stdout);
        return 0;
    }
    if (extras.empty()) {
        std::fputs(kUsage, stderr);
        return 1;
    }
    std::fprintf(stderr, "capdiag: unknown command '%s'\n%s", extras[0].c_str(), kUsage);
    return 1;
}

}  // namespace linecap::ctl::diag
