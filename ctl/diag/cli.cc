#include "ctl/diag/cli.hh"

#include <CLI/CLI.hpp>
#include <charconv>

#include "ctl/diag/compare.hh"
#include "ctl/diag/diagnose.hh"

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
    "  --json           machine output\n";

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
    app.add_option("files", a.files, "A.pcap B.pcap");
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
