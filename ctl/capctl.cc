/* capctl: talks to a running capd over its control socket.
 *
 *   capctl [--ctl PATH] [--json] [--timeout MS] COMMAND [ARGS]
 *
 * Commands: status | stats [--prometheus] | top [--interval S] [--count N] |
 * rules list | rules add NAME [--pattern P]... [--scan payload|frame] [EXPR] |
 * rules replace NAME ... | rules del NAME | rotate | pause | resume | stop |
 * diagnose [FILE...] | compare A B
 */
#include <unistd.h>

#include <csignal>
#include <cstdio>
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

const char* kUsage =
    "usage: capctl [--ctl PATH] [--json] [--timeout MS] COMMAND [ARGS]\n"
    "commands:\n"
    "  status                         sources, workers, writers, files, state\n"
    "  stats [--prometheus]           counters and drops by stage\n"
    "  top [--interval S] [--count N] live rates, refreshed every second\n"
    "  rules list\n"
    "  rules add NAME [--pattern P]... [--scan payload|frame] [EXPRESSION]\n"
    "  rules replace NAME [--pattern P]... [--scan payload|frame] [EXPRESSION]\n"
    "  rules del NAME\n"
    "  rotate | pause | resume | stop\n"
    "  diagnose [--all]                           TCP problems in capd's live flow tables\n"
    "  diagnose [--all] [--max-flows N] FILE...   TCP problems in capture files\n"
    "  compare [--nat A=B]... A.pcap B.pcap       packets lost between two capture points\n";

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
    std::vector<std::string> words;
};

/* rules add/replace NAME [--pattern P]... [--scan S] [--bpf-object F] [EXPR...] */
bool parse_rule(const std::vector<std::string>& w, size_t i, nlohmann::json& args,
                std::string& err) {
    if (i >= w.size()) {
        err = "rules " + w[1] + ": missing rule NAME";
        return false;
    }
    args["name"] = w[i++];
    std::vector<std::string> pats;
    std::string expr;
    for (; i < w.size(); i++) {
        if (w[i] == "--pattern" || w[i] == "--scan" || w[i] == "--bpf-object") {
            if (i + 1 >= w.size()) {
                err = w[i] + " needs a value";
                return false;
            }
            if (w[i] == "--pattern") pats.push_back(w[i + 1]);
            if (w[i] == "--scan") args["scan"] = w[i + 1];
            if (w[i] == "--bpf-object") args["bpf_object"] = w[i + 1];
            i++;
        } else {
            expr += (expr.empty() ? "" : " ") + w[i];
        }
    }
    args["patterns"] = pats;
    args["expression"] = expr;
    return true;
}

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

/* diagnose with files reads them; without, it asks capd. */
bool has_file_argument(const std::vector<std::string>& args) {
    for (size_t i = 0; i < args.size(); i++) {
        const std::string& x = args[i];
        if (x == "--") return i + 1 < args.size();
        if (x == "--max-flows") {
            i++;
            continue;
        }
        if (x.empty() || x[0] != '-' || x == "-") return true;
    }
    return false;
}

/* `capctl diagnose [--all] [--json]`: the same report as for files, made by
 * capd from its workers' TCP flow tables. */
int run_live_diagnose(const Args& a, const std::vector<std::string>& args) {
    Request req;
    req.cmd = "diagnose";
    req.args["text"] = !a.json;
    for (const auto& x : args) {
        if (x == "--json") continue;
        if (x == "-h" || x == "--help") {
            std::fputs(diag::kDiagnoseUsage, stdout);
            std::fputs("  With no FILE, capd's live TCP flow tables are diagnosed (capd "
                       "--tcp-flows).\n", stdout);
            return 0;
        }
        if (x == "--all") {
            req.args["all"] = true;
        } else if (x.rfind("--max-flows", 0) == 0) {
            return fail("diagnose: --max-flows applies to files; capd --tcp-flows sets the "
                        "size of the live tables");
        } else {
            return fail("diagnose: unknown option '" + x + "'");
        }
    }
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

}  // namespace

int main(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; i++) {
        std::string s = argv[i];
        if (a.words.empty() && (s == "--ctl" || s == "--timeout")) {
            if (i + 1 >= argc) return fail(s + " needs a value");
            if (s == "--ctl") a.ctl = argv[++i];
            else {
                a.timeout_ms = std::atoi(argv[++i]);
                a.timeout_given = true;
            }
        } else if (s == "--json") {
            a.json = true;
        } else if (a.words.empty() && (s == "-h" || s == "--help")) {
            std::fputs(kUsage, stdout);
            return 0;
        } else {
            a.words.push_back(s);
        }
    }
    if (a.words.empty()) {
        std::fputs(kUsage, stderr);
        return 1;
    }
    const auto& w = a.words;
    const std::string& cmd = w[0];
    Request req;

    // File analysis needs no daemon.
    if (cmd == "diagnose" || cmd == "compare") {
        std::vector<std::string> args(w.begin() + 1, w.end());
        if (a.json) args.insert(args.begin(), "--json");
        diag::CliIo io{stdout, stderr, "capctl"};
        if (cmd == "diagnose") {
            if (!has_file_argument(args)) return run_live_diagnose(a, args);
            return diag::run_diagnose(args, io);
        }
        return diag::run_compare(args, io);
    }

    if (cmd == "top") {
        double interval = 1;
        long count = 0;
        for (size_t i = 1; i + 1 < w.size(); i += 2) {
            if (w[i] == "--interval") interval = std::atof(w[i + 1].c_str());
            else if (w[i] == "--count") count = std::atol(w[i + 1].c_str());
            else return fail("top: unknown option " + w[i]);
        }
        if (interval <= 0) return fail("top: --interval must be positive");
        return run_top(a, interval, count);
    }

    bool prometheus = false;
    if (cmd == "status" || cmd == "rotate" || cmd == "pause" || cmd == "resume" ||
        cmd == "stop" || cmd == "ping") {
        if (w.size() > 1) return fail(cmd + ": unexpected argument '" + w[1] + "'");
        req.cmd = cmd;
    } else if (cmd == "stats") {
        req.cmd = "stats";
        for (size_t i = 1; i < w.size(); i++) {
            if (w[i] == "--prometheus") prometheus = true;
            else return fail("stats: unknown option " + w[i]);
        }
    } else if (cmd == "rules") {
        if (w.size() < 2) return fail("rules: expected list, add, replace or del");
        const std::string& sub = w[1];
        if (sub == "list") {
            req.cmd = "rules.list";
        } else if (sub == "add" || sub == "replace") {
            req.cmd = "rules." + sub;
            std::string err;
            if (!parse_rule(w, 2, req.args, err)) return fail(err);
        } else if (sub == "del") {
            if (w.size() != 3) return fail("rules del: expected one rule NAME");
            req.cmd = "rules.del";
            req.args["name"] = w[2];
        } else {
            return fail("rules: unknown subcommand '" + sub + "'");
        }
    } else {
        return fail("unknown command '" + cmd + "' (try capctl --help)");
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
    if (req.cmd == "status") std::fputs(format_status(r->data).c_str(), stdout);
    else if (req.cmd == "stats")
        std::fputs((prometheus ? format_prometheus(r->data) : format_stats(r->data)).c_str(), stdout);
    else if (req.cmd == "rules.list") std::fputs(format_rules(r->data).c_str(), stdout);
    else std::printf("%s\n", r->message.c_str());
    return 0;
}
