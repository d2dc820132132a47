/* capctl: talks to a running capd over its control socket.
 *
 *   capctl [--ctl PATH] [--json] [--timeout MS] COMMAND [ARGS]
 *
 * Commands: status | stats [--prometheus] | top [--interval S] [--count N] |
 * rules list | rules add NAME [--pattern P]... [--scan payload|frame] [EXPR] |
 * rules replace NAME ... | rules del NAME | rotate | pause | resume | stop |
 * diagnose [FILE...] | compare A B | compare --fleet-hosts A,B ... | query [capq ARGS]
 */
#include <limits.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ctl/client.hh"
#include "ctl/diag/cli.hh"
#include "ctl/format.hh"

using namespace linecap;
using namespace linecap::ctl;

namespace {

const char* kCommands =
    "commands:\n"
    "  status                         sources, workers, writers, files, state\n"
    "  stats [--prometheus]           counters and drops by stage\n"
    "  top [--interval S] [--count N] live rates, refreshed every second\n"
    "  flows [--top N]                the biggest live flows (capd --flow-cutoff/--dedup)\n"
    "  rules list\n"
    "  rules add NAME [--pattern P]... [--scan payload|frame] [--flow-cutoff BYTES]\n"
    "      [--flow-packets N] [EXPRESSION]\n"
    "  rules replace NAME [--pattern P]... [--scan payload|frame] [--flow-cutoff BYTES]\n"
    "      [--flow-packets N] [EXPRESSION]\n"
    "  rules del NAME\n"
    "  rotate | pause | resume | stop\n"
    "  diagnose [--all]                           TCP problems in capd's live flow tables\n"
    "  diagnose [--all] [--max-flows N] FILE...   TCP problems in capture files\n"
    "  compare [--nat A=B]... A.pcap B.pcap       packets lost between two capture points\n"
    "  compare --fleet-hosts A,B --cert F --key F --ca F [EXPR]  the same, two hosts' answers\n"
    "  query [capq ARGS]              capq over the directories capd writes to\n";

volatile sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

int fail(const std::string& msg) {
    std::fprintf(stderr, "capctl: %s\n", msg.c_str());
    return 1;
}

struct Args {
    std::string ctl = kDefaultSocket;
    bool json = false;
    int timeout_ms = 5000;
    bool timeout_given = false;
};

Result<Response> call(const Args& a, const Request& req) {
    auto c = ControlClient::connect(a.ctl, a.timeout_ms);
    if (!c) return make_error(c.error());
    return c->call(req);
}

int run_top(const Args& a, double interval, long count) {
    std::signal(SIGINT, on_sigint);
    auto c = ControlClient::connect(a.ctl, a.timeout_ms);
    if (!c) return fail(c.error());
    Request req;
    req.cmd = "stats";
    nlohmann::json prev;
    for (long n = 0; (count <= 0 || n < count) && !g_interrupted; n++) {
        auto r = c->call(req);
        if (!r) return fail(r.error());
        if (r->status != 0) return fail(r->message);
        if (a.json) {
            std::printf("%s\n", rates_json(prev, r->data).dump().c_str());
        } else {
            if (isatty(STDOUT_FILENO)) std::fputs("\033[H\033[2J", stdout);
            std::fputs(format_top(prev, r->data).c_str(), stdout);
        }
        std::fflush(stdout);
        prev = r->data;
        if (count > 0 && n + 1 >= count) break;
        for (int t = 0; t < int(interval * 10) && !g_interrupted; t++)
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return 0;
}

/* `capctl diagnose [--all] [--json]`: the same report as for files, made by
 * capd from its workers' TCP flow tables. */
int run_live_diagnose(const Args& a, const diag::DiagnoseArgs& d,
                      const std::vector<std::string>& extras) {
    if (d.help) {
        std::fputs(diag::kDiagnoseUsage, stdout);
        std::fputs(
            "  With no FILE, capd's live TCP flow tables are diagnosed (capd "
            "--tcp-flows).\n",
            stdout);
        return 0;
    }
    for (const auto& x : extras)
        if (x != "--") return fail("diagnose: unknown option '" + x + "'");
    if (!d.max_flows.empty())
        return fail(
            "diagnose: --max-flows applies to files; capd --tcp-flows sets the "
            "size of the live tables");
    Request req;
    req.cmd = "diagnose";
    req.args["text"] = !a.json;
    if (d.all) req.args["all"] = true;
    auto r = call(a, req);
    if (!r) return fail(r.error());
    if (r->status != 0) return fail("diagnose: " + r->message);
    if (a.json) {
        std::printf("%s\n", r->data.dump(2).c_str());
    } else {
        std::fputs(r->data.value("text", "").c_str(), stdout);
    }
    return 0;
}

/* `capctl query ARGS`: capq (beside this executable) with -r for each
 * directory capd's writers write to, then ARGS. capd only names its files;
 * capq reads them with the caller's own permissions. */
int run_query(const Args& a, const std::vector<std::string>& rest) {
    Request req;
    req.cmd = "status";
    auto r = call(a, req);
    if (!r) return fail(r.error());
    if (r->status != 0) return fail("query: " + r->message);
    const std::string cwd = r->data.value("cwd", "");
    std::vector<std::string> dirs;
    for (const auto& w : r->data.value("writers", nlohmann::json::array())) {
        std::string f = w.value("current_file", "");
        if (f.empty() || f == "-") continue;
        if (f[0] != '/') {
            if (cwd.empty())
                return fail(
                    "query: capd names its files relative to a directory it did not report");
            f = cwd + "/" + f;
        }
        std::string dir = f.substr(0, f.rfind('/'));
        if (dir.empty()) dir = "/";
        if (std::find(dirs.begin(), dirs.end(), dir) == dirs.end()) dirs.push_back(dir);
    }
    if (dirs.empty()) return fail("query: capd reports no file being written");
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return fail(std::string("query: /proc/self/exe: ") + std::strerror(errno));
    self[n] = '\0';
    // Installed, capq is beside capctl; in a build tree, in query/ next to
    // ctl/; otherwise the one on PATH.
    const std::string dir = std::string(self).substr(0, std::string(self).rfind('/') + 1);
    std::string capq = "capq";
    for (const std::string& c : {dir + "capq", dir + "../query/capq"})
        if (::access(c.c_str(), X_OK) == 0) {
            capq = c;
            break;
        }
    std::vector<std::string> args = {capq};
    for (const auto& d : dirs) {
        args.push_back("-r");
        args.push_back(d);
    }
    args.insert(args.end(), rest.begin(), rest.end());
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execvp(capq.c_str(), argv.data());
    return fail("query: " + capq + ": " + std::strerror(errno));
}

/* A CLI11 check: a number > 0 (of milliseconds or seconds), with one line
 * naming what was given. */
CLI::Validator positive(const char* what) {
    return CLI::Validator(
        [what](std::string& v) -> std::string {
            char* end = nullptr;
            errno = 0;
            double d = std::strtod(v.c_str(), &end);
            if (v.empty() || end == v.c_str() || *end != '\0' || errno != 0 || !(d > 0))
                return std::string("expected ") + what + " > 0, not '" + v + "'";
            return {};
        },
        "NUMBER > 0");
}

/* A CLI11 parse error as one line: CLI11 names the option, we add the
 * command it was given to. */
int parse_error(const CLI::App& app, const CLI::ParseError& e) {
    std::string where;
    for (const CLI::App* sub = &app;;) {
        auto subs = sub->get_subcommands();
        if (subs.empty()) break;
        sub = subs.front();
        where += sub->get_name() + " ";
    }
    std::string msg = e.what();
    for (char& c : msg)
        if (c == '\n') c = ' ';
    return fail(where + msg);
}

}  // namespace

int main(int argc, char** argv) {
    Args a;
    // `query` hands every later word to capq, unparsed: find it before CLI11
    // sees capq's options.
    for (int i = 1; i < argc; i++) {
        const std::string w = argv[i];
        if ((w == "--ctl" || w == "--timeout") && i + 1 < argc) {
            if (w == "--ctl") a.ctl = argv[i + 1];
            if (w == "--timeout") a.timeout_ms = std::atoi(argv[i + 1]);
            i++;
            continue;
        }
        if (w.rfind("--ctl=", 0) == 0) {
            a.ctl = w.substr(6);
            continue;
        }
        if (w.rfind("--timeout=", 0) == 0) {
            a.timeout_ms = std::atoi(w.c_str() + 10);
            continue;
        }
        if (w == "--json") continue;
        if (w != "query") break;
        if (a.timeout_ms <= 0) return fail("--timeout: expected milliseconds > 0");
        return run_query(a, std::vector<std::string>(argv + i + 1, argv + argc));
    }
    CLI::App app{"capctl: talks to a running capd over its control socket", "capctl"};
    app.get_formatter()->label("Usage", "usage");
    app.footer(kCommands);
    // Words no command takes are named by the checks below, in one line.
    app.allow_extras();
    // --json, --ctl and --timeout may follow the command too.
    app.fallthrough();
    // A word after the command (a rule named "stats") is never a second command.
    app.require_subcommand(0, 1);
    app.add_option("--ctl", a.ctl, "capd's control socket (default /run/linecap/capd.sock)");
    app.add_option("--timeout", a.timeout_ms,
                   "milliseconds to wait for an answer (default "
                   "5000; 60000 for a rules change)")
        ->check(positive("milliseconds, a whole number"))
        ->type_name("MS");
    app.add_flag("--json", a.json, "machine output");

    std::vector<CLI::App*> plain;
    for (auto [name, help] : {std::pair{"status", "sources, workers, writers, files, state"},
                              std::pair{"rotate", "close the current files and start new ones"},
                              std::pair{"pause", "receive and count, write nothing"},
                              std::pair{"resume", "write again after pause"},
                              std::pair{"stop", "stop capd as SIGINT does"},
                              std::pair{"ping", "check that capd answers"}})
        plain.push_back(app.add_subcommand(name, help));
    plain.back()->group("");  // ping: for scripts, not listed

    bool prometheus = false;
    CLI::App* stats = app.add_subcommand("stats", "counters and drops by stage");
    stats->add_flag("--prometheus", prometheus, "Prometheus text exposition format");

    double interval = 1;
    long count = 0;
    CLI::App* top = app.add_subcommand("top", "live rates, refreshed every --interval");
    top->add_option("--interval", interval, "seconds between refreshes (default 1)")
        ->check(positive("seconds"));
    top->add_option("--count", count, "stop after N refreshes (default: until Ctrl-C)")
        ->check(CLI::NonNegativeNumber);

    int flows_top = 20;
    CLI::App* flows = app.add_subcommand("flows",
                                         "the biggest live flows (capd --flow-cutoff, "
                                         "--flow-packets or --dedup)");
    flows->add_option("--top", flows_top, "how many (1..1000, default 20)")
        ->check(CLI::Range(1, 1000));

    CLI::App* rules = app.add_subcommand("rules", "list, add, replace or delete capture rules");
    rules->require_subcommand(0, 1);
    CLI::App* rules_list = rules->add_subcommand("list", "the rules and their counters");
    std::string rule_name, scan, bpf_object, rule_cutoff;
    uint64_t rule_packets = 0;
    std::vector<std::string> patterns, expr_words;
    std::vector<CLI::App*> rule_changes;
    for (auto [name, help] :
         {std::pair{"add", "add rule NAME: packets matching EXPRESSION (and the patterns)"},
          std::pair{"replace", "replace rule NAME, keeping its counters"}}) {
        CLI::App* sub = rules->add_subcommand(name, help);
        sub->add_option("--pattern", patterns, "payload pattern (repeatable)")
            ->allow_extra_args(false);
        sub->add_option("--scan", scan, "where patterns look: payload or frame");
        sub->add_option("--bpf-object", bpf_object, "eBPF object file (root only)");
        sub->add_option("--flow-cutoff", rule_cutoff,
                        "write only the first BYTES (k, M, G) of each flow this rule captures, "
                        "instead of capd's --flow-cutoff");
        sub->add_option("--flow-packets", rule_packets,
                        "write only the first N packets of each flow this rule captures");
        sub->add_option("name", rule_name, "rule NAME");
        sub->add_option("expression", expr_words, "pcap-filter EXPRESSION");
        rule_changes.push_back(sub);
    }
    CLI::App* rules_del = rules->add_subcommand("del", "delete rule NAME");
    rules_del->add_option("name", rule_name, "rule NAME");

    diag::DiagnoseArgs dargs;
    diag::CompareArgs cargs;
    CLI::App* diagnose = app.add_subcommand(
        "diagnose", "TCP problems in capture FILEs, or in capd's live flow tables without one");
    diag::add_diagnose_options(*diagnose, dargs);
    CLI::App* compare = app.add_subcommand("compare", "packets lost between two capture points");
    diag::add_compare_options(*compare, cargs);

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        return parse_error(app, e);
    }
    a.timeout_given = app.count("--timeout") > 0;

    // File analysis needs no daemon.
    if (diagnose->parsed() || compare->parsed()) {
        diag::CliIo io{stdout, stderr, "capctl"};
        dargs.json = cargs.json = a.json || dargs.json || cargs.json;
        a.json = dargs.json;
        // Unknown options fall through to capctl's own words: all are the command's.
        std::vector<std::string> extras = app.remaining(true);
        if (compare->parsed()) return diag::run_compare(cargs, extras, io);
        if (dargs.files.empty() || dargs.help) return run_live_diagnose(a, dargs, extras);
        return diag::run_diagnose(dargs, extras, io);
    }

    std::vector<std::string> extras = app.remaining(true);
    auto subs = app.get_subcommands();
    if (subs.empty()) {
        if (!extras.empty()) return fail("unknown command '" + extras[0] + "' (try capctl --help)");
        std::fputs(app.help().c_str(), stderr);
        return 1;
    }
    const std::string cmd = subs.front()->get_name();
    if (!extras.empty()) {
        const std::string& x = extras[0];
        if (cmd == "rules" && rules->get_subcommands().empty())
            return fail("rules: unknown subcommand '" + x + "'");
        return fail(cmd + ": " +
                    (x.size() > 1 && x[0] == '-' ? "unknown option '" : "unexpected argument '") +
                    x + "'");
    }

    if (top->parsed()) return run_top(a, interval, count);

    Request req;
    if (stats->parsed()) {
        req.cmd = "stats";
    } else if (flows->parsed()) {
        req.cmd = "flows";
        req.args["top"] = flows_top;
    } else if (rules->parsed()) {
        CLI::App* sub = rules->get_subcommands().empty() ? nullptr : rules->get_subcommands()[0];
        if (!sub) return fail("rules: expected list, add, replace or del");
        if (sub == rules_list) {
            req.cmd = "rules.list";
        } else if (sub == rules_del) {
            if (rule_name.empty()) return fail("rules del: expected one rule NAME");
            req.cmd = "rules.del";
            req.args["name"] = rule_name;
        } else {
            req.cmd = "rules." + sub->get_name();
            if (sub->count("name") == 0)
                return fail("rules " + sub->get_name() + ": missing rule NAME");
            std::string expr;
            for (const auto& w : expr_words) expr += (expr.empty() ? "" : " ") + w;
            req.args["name"] = rule_name;
            req.args["patterns"] = patterns;
            req.args["expression"] = expr;
            if (sub->count("--scan")) req.args["scan"] = scan;
            if (sub->count("--bpf-object")) req.args["bpf_object"] = bpf_object;
            if (sub->count("--flow-cutoff")) req.args["flow_cutoff"] = rule_cutoff;
            if (sub->count("--flow-packets")) req.args["flow_packets"] = rule_packets;
        }
    } else {
        req.cmd = cmd;
    }

    // A rules change is answered once it is compiled, which capd allows up
    // to --compile-timeout (10 s by default).
    if (req.cmd.rfind("rules.", 0) == 0 && req.cmd != "rules.list" && !a.timeout_given)
        a.timeout_ms = 60000;
    auto r = call(a, req);
    if (!r) return fail(r.error());
    if (a.json) {
        nlohmann::json j = {{"status", r->status},
                            {"error", errno_name(r->status)},
                            {"message", r->message},
                            {"data", r->data}};
        std::printf("%s\n", j.dump(2).c_str());
        return r->status == 0 ? 0 : 1;
    }
    if (r->status != 0) return fail(r->message);
    if (req.cmd == "status")
        std::fputs(format_status(r->data).c_str(), stdout);
    else if (req.cmd == "stats")
        std::fputs((prometheus ? format_prometheus(r->data) : format_stats(r->data)).c_str(),
                   stdout);
    else if (req.cmd == "rules.list")
        std::fputs(format_rules(r->data).c_str(), stdout);
    else if (req.cmd == "flows")
        std::fputs(format_flows(r->data).c_str(), stdout);
    else
        std::printf("%s\n", r->message.c_str());
    return 0;
}
