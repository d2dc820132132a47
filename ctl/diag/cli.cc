#include "ctl/diag/cli.hh"

#include <charconv>
#include <cstring>

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

/* "--opt VALUE" or "--opt=VALUE". */
bool take_value(const std::vector<std::string>& args, size_t& i, const char* opt,
                std::string& value, bool& missing) {
    const std::string& a = args[i];
    const size_t n = std::strlen(opt);
    missing = false;
    if (a == opt) {
        if (i + 1 >= args.size()) {
            missing = true;
            return true;
        }
        value = args[++i];
        return true;
    }
    if (a.size() > n && a.compare(0, n, opt) == 0 && a[n] == '=') {
        value = a.substr(n + 1);
        return true;
    }
    return false;
}

}  // namespace

int run_diagnose(const std::vector<std::string>& args, const CliIo& io) {
    bool json = false;
    TextOptions text;
    DiagnoseOptions opt;
    std::vector<std::string> files;
    bool options_done = false;
    for (size_t i = 0; i < args.size(); i++) {
        const std::string& a = args[i];
        std::string v;
        bool missing = false;
        if (options_done || a.empty() || a[0] != '-' || a == "-") {
            files.push_back(a);
        } else if (a == "--") {
            options_done = true;
        } else if (a == "-h" || a == "--help") {
            std::fputs(kDiagnoseUsage, io.out);
            return 0;
        } else if (a == "--json") {
            json = true;
        } else if (a == "--all") {
            text.all = true;
        } else if (take_value(args, i, "--max-flows", v, missing)) {
            if (missing)
                return usage_error(io, "diagnose", "--max-flows needs a value", kDiagnoseUsage);
            if (!parse_u32(v, opt.max_flows) || opt.max_flows == 0) {
                return usage_error(io, "diagnose", "--max-flows '" + v + "': expected a count > 0",
                                   kDiagnoseUsage);
            }
        } else {
            return usage_error(io, "diagnose", "unknown option '" + a + "'", kDiagnoseUsage);
        }
    }
    if (files.empty()) {
        return usage_error(io, "diagnose", "no capture file given", kDiagnoseUsage);
    }
    DiagnoseReport r = diagnose_files(files, opt);
    bool any_readable = false;
    for (const auto& f : r.files) {
        if (!f.error.empty()) std::fprintf(io.err, "%s: %s\n", io.prog, f.error.c_str());
        if (f.opened && (f.error.empty() || f.truncated)) any_readable = true;
    }
    if (json) {
        std::fprintf(io.out, "%s\n", diagnose_json(r).dump(2).c_str());
    } else if (any_readable) {
        std::fputs(format_diagnose_text(r, text).c_str(), io.out);
    }
    return diagnose_exit_status(r);
}

int run_compare(const std::vector<std::string>& args, const CliIo& io) {
    bool json = false;
    CompareOptions opt;
    CompareTextOptions text;
    std::vector<std::string> files;
    bool options_done = false;
    for (size_t i = 0; i < args.size(); i++) {
        const std::string& a = args[i];
        std::string v;
        bool missing = false;
        if (options_done || a.empty() || a[0] != '-' || a == "-") {
            files.push_back(a);
        } else if (a == "--") {
            options_done = true;
        } else if (a == "-h" || a == "--help") {
            std::fputs(kCompareUsage, io.out);
            return 0;
        } else if (a == "--json") {
            json = true;
        } else if (a == "--ignore-ip-id") {
            opt.ignore_ip_id = true;
        } else if (take_value(args, i, "--nat", v, missing)) {
            if (missing)
                return usage_error(io, "compare", "--nat needs A_ADDR=B_ADDR", kCompareUsage);
            auto rule = parse_nat_rule(v);
            if (!rule) return usage_error(io, "compare", rule.error(), kCompareUsage);
            opt.nat.push_back(*rule);
        } else if (take_value(args, i, "--max-frames", v, missing)) {
            uint32_t n = 0;
            if (missing || !parse_u32(v, n)) {
                return usage_error(io, "compare", "--max-frames needs a count", kCompareUsage);
            }
            text.max_frames = n;
        } else {
            return usage_error(io, "compare", "unknown option '" + a + "'", kCompareUsage);
        }
    }
    if (files.size() != 2) {
        return usage_error(
            io, "compare",
            "expected two capture files (A and B), got " + std::to_string(files.size()),
            kCompareUsage);
    }
    CompareReport r = compare_files(files[0], files[1], opt);
    for (const FileReport* f : {&r.a, &r.b}) {
        if (!f->error.empty()) std::fprintf(io.err, "%s: %s\n", io.prog, f->error.c_str());
    }
    const int status = compare_exit_status(r);
    if (json) {
        std::fprintf(io.out, "%s\n", compare_json(r).dump(2).c_str());
    } else if (status != 1) {
        std::fputs(format_compare_text(r, text).c_str(), io.out);
    }
    return status;
}

int capdiag_main(int argc, char** argv) {
    static const char* kUsage =
        "usage: capdiag diagnose [--json] [--all] [--max-flows N] FILE...\n"
        "       capdiag compare [--json] [--nat A_ADDR=B_ADDR]... [--ignore-ip-id] A.pcap B.pcap\n"
        "       capdiag COMMAND --help\n";
    CliIo io;
    if (argc < 2) {
        std::fputs(kUsage, stderr);
        return 1;
    }
    std::string cmd = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    if (cmd == "diagnose") return run_diagnose(args, io);
    if (cmd == "compare") return run_compare(args, io);
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
        std::fputs(kUsage, stdout);
        std::fputs("\n", stdout);
        std::fputs(kDiagnoseUsage, stdout);
        std::fputs("\n", stdout);
        std::fputs(kCompareUsage, stdout);
        return 0;
    }
    std::fprintf(stderr, "capdiag: unknown command '%s'\n%s", cmd.c_str(), kUsage);
    return 1;
}

}  // namespace linecap::ctl::diag
