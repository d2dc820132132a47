/* capd: the capture daemon's composition root. Parses options, validates
 * inputs, starts EAL, compiles the filter, and runs one Pipeline.
 *
 * Threads on the control side: the main thread only watches the stop
 * conditions (SIGINT/SIGTERM/SIGHUP, --duration, -c, end of input,
 * `capctl stop`), turns SIGUSR1/SIGUSR2 into a counters line and a
 * rotation, and runs the shutdown; it never runs a handler, so capd stops on time
 * whatever a client asked for. The ctl thread serves the control socket and
 * runs the handlers. The compile thread (CompileWorker) compiles rule
 * changes, with libpcap and Hyperscan in a child it kills at
 * --compile-timeout. */
#include <pcap/pcap.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "ctl/handlers.hh"
#include "ctl/server.hh"
#include "dataplane/eal.hh"
#include "dataplane/list_sources.hh"
#include "dataplane/netns.hh"
#include "dataplane/options.hh"
#include "dataplane/pipeline.hh"
#include "dataplane/privileges.hh"
#include "dataplane/source.hh"
#include "filters/bpf_object.hh"
#include "filters/compile_worker.hh"
#include "filters/rule_set.hh"
#include "storage/file_set.hh"
#include "storage/spawn.hh"

using namespace linecap;
using namespace linecap::dataplane;

namespace {

std::atomic<bool> g_signalled{false};
std::atomic<bool> g_print_stats{false};
std::atomic<bool> g_rotate{false};

/* SIGINT, SIGTERM and SIGHUP stop capd cleanly (tcpdump also exits on
 * SIGHUP: closing the terminal leaves whole, named files). SIGUSR1 prints
 * the counters so far on stderr, as tcpdump does; SIGUSR2 rotates the
 * files now, as `capctl rotate`. A second stop signal ends the wait for
 * running -z commands at exit. */
void on_signal(int sig) {
    if (sig == SIGUSR1)
        g_print_stats.store(true);
    else if (sig == SIGUSR2)
        g_rotate.store(true);
    else if (g_signalled.exchange(true))
        storage::FileSet::stop_waiting();  // a second stop: no more waiting for -z
}

/* Installed first thing, explicitly: a shell that starts capd in the
 * background leaves SIGINT ignored, and a stop during start-up must still
 * be honoured (capd then stops as soon as capture has started). */
void install_signal_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2}) sigaction(sig, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
}

/* What can be known wrong before EAL starts: output paths and interfaces. */
Status check_paths_and_interfaces(const Options& o) {
    namespace fs = std::filesystem;
    std::error_code ec;
    auto check_file_path = [&](const std::string& opt, const std::string& path) -> Status {
        if (path.find('%') != std::string::npos && o.rotate_seconds > 0)
            return Status::success();  // strftime names: known at open time
        if (!path.empty() && path.back() == '/')
            return make_error(opt + " " + path + ": names a directory, not a file");
        if (fs::is_directory(path, ec)) return make_error(opt + " " + path + ": is a directory");
        fs::path dir = fs::path(path).parent_path();
        if (dir.empty()) dir = ".";
        if (!fs::is_directory(dir, ec))
            return make_error(opt + " " + path + ": no such directory " + dir.string());
        if (access(dir.c_str(), W_OK | X_OK) != 0)
            return make_error(opt + " " + path + ": cannot write in " + dir.string() + ": " +
                              std::strerror(errno));
        return Status::success();
    };
    if (!o.write_path.empty() && o.write_path != "-") {
        Status s = check_file_path("-w", o.write_path);
        if (!s) return s;
        // A floor the output's file system can never meet (a strftime
        // directory is known only at open time).
        fs::path dir = fs::path(o.write_path).parent_path();
        if (dir.empty()) dir = ".";
        if (dir.string().find('%') == std::string::npos || o.rotate_seconds == 0)
            if (Status r = storage::check_retain_free(dir.string(), o.retain_free); !r) return r;
    }
    if (!o.stats_json.empty()) {
        Status s = check_file_path("--stats-json", o.stats_json);
        if (!s) return s;
    }
    for (const auto& src : o.sources)
        if (src.kind == SourceSpec::Kind::kAfPacket || src.kind == SourceSpec::Kind::kAfXdp) {
            Status st = check_source_interface(src);
            if (!st) return st;
            if (src.kind != SourceSpec::Kind::kAfXdp) continue;
            auto note = check_xdp_source(src, queues_per_port(o), o.workers);
            if (!note) return make_error(note.error());
            if (!note->empty()) std::fprintf(stderr, "capd: %s\n", note->c_str());
        }
    return Status::success();
}

int fail(const std::string& msg) {
    std::fprintf(stderr, "capd: %s\n", msg.c_str());
    return 1;
}

/* The line that says capture has started, as tcpdump's "listening on":
 * "capd: capturing on af_packet:eth0, link-type EN10MB (Ethernet), snapshot
 * length 262144 bytes". linktypes: one per source. */
std::string readiness_line(const Options& o, const std::vector<int>& linktypes) {
    std::string line = "capd: capturing on ";
    for (size_t i = 0; i < o.sources.size(); i++) line += (i ? ", " : "") + o.sources[i].text;
    std::vector<int> seen;
    for (int lt : linktypes)
        if (std::find(seen.begin(), seen.end(), lt) == seen.end()) seen.push_back(lt);
    line += seen.size() > 1 ? ", link-types " : ", link-type ";
    for (size_t i = 0; i < seen.size(); i++) {
        const char* name = pcap_datalink_val_to_name(seen[i]);
        const char* desc = pcap_datalink_val_to_description(seen[i]);
        line += (i ? ", " : "") + (name ? std::string(name) : "DLT " + std::to_string(seen[i])) +
                (desc ? std::string(" (") + desc + ")" : std::string());
    }
    return line + ", snapshot length " + std::to_string(o.snaplen) + " bytes\n";
}

}  // namespace

int main(int argc, char** argv) {
    install_signal_handlers();
    bool exit_now = false;
    auto parsed = parse_options(argc, argv, exit_now);
    if (exit_now) return 0;
    if (!parsed) return fail(parsed.error());
    Options& o = *parsed;

    if (o.list_sources) {
        std::vector<std::string> notes;
        std::fputs(list_sources(notes).c_str(), stdout);
        for (const auto& n : notes) std::fprintf(stderr, "capd: -D: %s\n", n.c_str());
        return 0;
    }

    // Inputs first: a file that is not a capture is refused before EAL or
    // any output exists.
    int linktype = -1;
    std::vector<int> linktypes;
    for (const auto& s : o.sources) {
        int lt = 1;  // ports deliver Ethernet
        if (s.kind == SourceSpec::Kind::kPcapFile) {
            auto r = probe_pcap_file(s.arg);
            if (!r) return fail(r.error());
            lt = *r;
        } else if (s.any_interface()) {
            lt = DLT_LINUX_SLL2;  // as libpcap's any device
        }
        linktypes.push_back(lt);
        if (linktype < 0) linktype = lt;
        if (lt != linktype && (!o.expression.empty() || !o.patterns.empty()))
            return fail("sources have different link types; a filter needs one link type");
    }
    if (linktype < 0) linktype = 1;

    Status early = check_paths_and_interfaces(o);
    if (!early) return fail(early.error());
    Status eal_words = check_eal_extra(o.eal_extra);
    if (!eal_words) return fail(eal_words.error());
    // An explicit --ctl or --ctl-group that cannot be served is fatal: say so
    // before any output file exists. (A busy default socket only warns,
    // later: with an empty path only the group is checked here.)
    if (o.ctl_path != "none" && (!o.ctl_path.empty() || !o.ctl_group.empty())) {
        ctl::ServerOptions so;
        so.path = o.ctl_path;
        so.group = o.ctl_group;
        Status ctl_ok = ctl::check_listen(so);
        if (!ctl_ok) return fail(ctl_ok.error());
    }
    if (!o.bpf_dir.empty()) {
        Status st = filters::check_bpf_dir(o.bpf_dir);
        if (!st) return fail(st.error());
    }

    filters::RuleSpec rule;
    rule.name = "cli";
    rule.expression = o.expression;
    rule.patterns = o.patterns;
    rule.bpf_object = o.bpf_object;
    if (!o.bpf_object.empty()) {
        // Loaded once here: later rule changes over the socket reuse it
        // rather than reopen a path the control group did not choose.
        auto prog = filters::load_bpf_object(o.bpf_object);
        if (!prog) return fail("rule 'cli': " + prog.error());
        rule.bpf_program = std::make_shared<const filters::BpfProgram>(std::move(*prog));
    }
    rule.scope = o.scan_scope;
    filters::CompileOptions copts;
    copts.linktype = linktype;
    copts.snaplen = o.snaplen;
    copts.jit = !o.no_jit;
    copts.time_limit_ms = static_cast<int>(o.compile_timeout_s * 1000);
    copts.netmask = filter_netmask(o.sources);
    // The same caps as for a rule sent over the control socket, before
    // anything is started.
    Status within = filters::check_limits(std::span(&rule, 1), copts.limits);
    if (!within) return fail(within.error());

    if (!o.run_as_user.empty() && !o.write_path.empty()) {
        auto who = check_run_as(o.run_as_user, o.write_path, o.rotate_seconds > 0);
        if (!who) return fail(who.error());
        o.run_as_uid = who->uid;
        o.run_as_gid = who->gid;
    }
    o.start_cpus = storage::thread_cpus();

    Placement placement = plan_placement(o, allowed_cpus());
    EalPlan plan = plan_eal(o, placement, eal_memory_mb(o));
    std::string warning;
    Status fits = check_host_fits(o, plan, warning);
    if (!fits) return fail(fits.error());
    if (!warning.empty()) std::fprintf(stderr, "capd: warning: %s\n", warning.c_str());
    // From here on every return ends EAL (after the pipeline, declared
    // later, has gone).
    auto eal = EalSession::start(plan);
    if (!eal) return fail(eal.error());

    if (o.dump_filter) {
        auto rules = filters::compile(std::span(&rule, 1), copts);
        if (!rules) return fail(rules.error());
        std::fputs((*rules)->describe().c_str(), stdout);
        return 0;
    }

    auto pipeline = Pipeline::create(o, placement, {rule}, copts, &g_signalled);
    if (!pipeline) return fail(pipeline.error());
    // The control socket. The default path is shared by every capd on the
    // host: when another capd holds it, this one runs without a socket.
    // Declared before the server: the handlers use both, and the server
    // goes first.
    filters::CompileWorker compiler;
    ctl::ControlCounters ctl_counters;
    std::unique_ptr<ctl::ControlServer> server;
    if (o.ctl_path != "none") {
        ctl::ServerOptions so;
        so.path = o.ctl_path.empty() ? ctl::kDefaultSocket : o.ctl_path;
        so.group = o.ctl_group;
        so.idle_timeout_ms = static_cast<int>(o.ctl_idle_timeout_s * 1000);
        so.log = !o.quiet;
        so.counters = &ctl_counters;
        ctl::Handlers h = ctl::make_handlers({**pipeline, compiler, &ctl_counters, o.bpf_dir});
        auto srv = ctl::ControlServer::listen(so, std::move(h.sync), std::move(h.async));
        if (srv) {
            server = std::move(*srv);
        } else if (!o.ctl_path.empty()) {
            return fail(srv.error());
        } else if (!o.quiet) {
            std::fprintf(stderr, "capd: no control socket: %s\n", srv.error().c_str());
        }
    }

    if (!o.run_as_user.empty() && !o.write_path.empty()) {
        Status st = drop_privileges(o.run_as_user, o.write_path, o.rotate_seconds > 0);
        if (!st) {
            // Already running as the user or not: stop cleanly, files whole.
            (*pipeline)->finish();
            return fail(st.error());
        }
    }

    (*pipeline)->start();
    if (!o.quiet) std::fputs(readiness_line(o, linktypes).c_str(), stderr);
    std::thread ctl_thread;
    if (server) ctl_thread = std::thread([srv = server.get()] { srv->run(); });
    Pipeline* pl = pipeline->get();
    (*pipeline)->wait([&, pl](int timeout_ms) {
        std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
        if (g_rotate.exchange(false)) {
            Status st = pl->rotate();
            if (!st) std::fprintf(stderr, "capd: SIGUSR2: %s\n", st.error().c_str());
        }
        if (g_print_stats.exchange(false)) {
            auto print = [pl] { std::fputs(summary_text(pl->collect()).c_str(), stderr); };
            // collect() belongs to the control thread while there is one.
            if (server)
                server->post(print);
            else
                print();
        }
    });
    // Handlers return promptly (compiles run on the compile thread), so the
    // ctl thread ends within one of its poll turns. A compile in progress
    // is then cancelled: its child is killed and the change dropped.
    if (server) {
        server->stop();
        ctl_thread.join();
    }
    compiler.shutdown();
    Summary s = (*pipeline)->finish();
    server.reset();
    pipeline->reset();

    if (!o.quiet)
        std::fputs(summary_text(s).c_str(), stderr);
    else
        for (const auto& e : s.errors) std::fprintf(stderr, "capd: error: %s\n", e.c_str());
    int rc = s.errors.empty() ? 0 : 1;
    if (!o.stats_json.empty()) {
        Status st = write_summary_json(o.stats_json, s);
        if (!st) rc = fail(st.error());
    }
    return rc;
}
