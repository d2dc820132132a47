#include "dataplane/eal.hh"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_log.h>

#include <fcntl.h>
#include <getopt.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>

#include "dataplane/source.hh"

namespace linecap::dataplane {

namespace {

unsigned long meminfo_kb(const char* field) {
    std::ifstream in("/proc/meminfo");
    std::string key;
    unsigned long v;
    while (in >> key >> v) {
        if (key == field) return v;
        in.ignore(256, '\n');
    }
    return 0;
}

}  // namespace

unsigned long free_hugepages() { return meminfo_kb("HugePages_Free:"); }

EalPlan plan_eal(const Options& o, const Placement& placement, size_t memory_mb) {
    EalPlan p;
    p.args.push_back("capd");
    p.args.push_back(placement.lcores_arg());
    p.cpus = static_cast<unsigned>(placement.cpus.size());
    p.memory_mb = memory_mb;
    p.hugepages = free_hugepages() * 2 >= memory_mb;
    if (!p.hugepages) {
        p.args.push_back("--no-huge");
        p.args.push_back("-m");
        p.args.push_back(std::to_string(memory_mb));
    }
    // No shared files in /var/run/dpdk, so several capd can run at once.
    // (--no-huge implies legacy memory, which --in-memory refuses.)
    if (p.hugepages) {
        p.args.push_back("--in-memory");
    } else {
        p.args.push_back("--no-shconf");
        p.args.push_back("--file-prefix=capd" + std::to_string(getpid()));
    }
    p.args.push_back("--no-telemetry");
    // DPDK's own messages would add lines to capd's one-line errors; capd
    // reports every failure itself. --eal '--log-level=N' brings them back.
    p.args.push_back("--log-level=*:critical");

    bool pci = false;
    uint16_t q = queues_per_port(o);
    for (unsigned i = 0; i < o.sources.size(); i++) {
        const SourceSpec& s = o.sources[i];
        // capd reads these itself (pcap_source.cc, packet_ring_source.cc).
        if (s.kind == SourceSpec::Kind::kPcapFile || s.kind == SourceSpec::Kind::kAfPacket)
            continue;
        // Probed later (open_eth_source): from inside its namespace, or
        // after --xdp-generic has attached the XDP program.
        if (s.in_netns() || s.kind == SourceSpec::Kind::kAfXdp) continue;
        if (s.kind == SourceSpec::Kind::kPci) {
            pci = true;
            p.args.push_back("-a");
        } else {
            p.args.push_back("--vdev");
        }
        p.args.push_back(eal_device_arg(s, i, q));
    }
    if (!pci) p.args.push_back("--no-pci");

    std::istringstream extra(o.eal_extra);
    std::string w;
    while (extra >> w) p.args.push_back(w);
    return p;
}

namespace {

// DPDK 22.11's EAL options (lib/eal/common/eal_options.h and the Linux
// ones), without -h/--help, which would print EAL's usage and exit.
constexpr std::string_view kEalLongOptions[] = {"--allow",
                                                "--base-virtaddr",
                                                "--block",
                                                "--create-uio-dev",
                                                "--file-prefix",
                                                "--force-max-simd-bitwidth",
                                                "--huge-dir",
                                                "--huge-unlink",
                                                "--huge-worker-stack",
                                                "--in-memory",
                                                "--iova-mode",
                                                "--lcores",
                                                "--legacy-mem",
                                                "--log-level",
                                                "--main-lcore",
                                                "--match-allocations",
                                                "--mbuf-pool-ops-name",
                                                "--no-hpet",
                                                "--no-huge",
                                                "--no-pci",
                                                "--no-shconf",
                                                "--no-telemetry",
                                                "--proc-type",
                                                "--single-file-segments",
                                                "--socket-limit",
                                                "--socket-mem",
                                                "--syslog",
                                                "--telemetry",
                                                "--trace",
                                                "--trace-bufsz",
                                                "--trace-dir",
                                                "--trace-mode",
                                                "--vdev",
                                                "--vfio-intr",
                                                "--vfio-vf-token",
                                                "--vmware-tsc-map"};
constexpr std::string_view kEalShortOptions = "abcdlmnrsSv";

}  // namespace

Status check_host_fits(const Options& o, const EalPlan& plan, std::string& warning) {
    warning.clear();
    if (o.workers > 4 * plan.cpus)
        return make_error("--workers " + std::to_string(o.workers) + " on " +
                          std::to_string(plan.cpus) + " CPU" + (plan.cpus == 1 ? "" : "s") +
                          ": at most " + std::to_string(4 * plan.cpus) +
                          " (4 per CPU); workers poll, so more only add start-up time and " +
                          "ring memory (--ring-chunks x --chunk-kb each)");
    if (!plan.hugepages) {
        size_t avail_mb = meminfo_kb("MemAvailable:") / 1024;
        if (avail_mb > 0 && plan.memory_mb > avail_mb / 4 * 3)
            return make_error(
                "packet memory of " + std::to_string(plan.memory_mb) + " MiB (" +
                std::to_string(o.workers) + (o.workers == 1 ? " worker ring" : " worker rings") +
                " of --ring-chunks " + std::to_string(o.ring_chunks) + " x --chunk-kb " +
                std::to_string(o.chunk_kb) + ", and receive buffers) does not fit in the " +
                std::to_string(avail_mb) +
                " MiB available without hugepages; lower --ring-chunks, --chunk-kb or --workers, "
                "or reserve hugepages");
    }
    if (o.workers > plan.cpus)
        warning = "--workers " + std::to_string(o.workers) + " on " + std::to_string(plan.cpus) +
                  " CPU" + (plan.cpus == 1 ? "" : "s") +
                  ": workers share CPUs and each one waits while another runs";
    return Status::success();
}

Status check_eal_extra(const std::string& extra) {
    std::istringstream in(extra);
    std::string w;
    while (in >> w) {
        if (w.size() < 2 || w[0] != '-') continue;  // a value
        bool known;
        if (w[1] == '-') {
            std::string_view name(w);
            name = name.substr(0, name.find('='));
            known = std::find(std::begin(kEalLongOptions), std::end(kEalLongOptions), name) !=
                    std::end(kEalLongOptions);
        } else {
            known = kEalShortOptions.find(w[1]) != std::string_view::npos;
        }
        if (!known)
            return make_error("--eal: '" + w + "' is not an EAL option capd passes on (DPDK " +
                              "22.11's EAL options, as `dpdk-testpmd --help` lists them)");
        if (w.rfind("--lcores", 0) == 0 || w.rfind("--main-lcore", 0) == 0 || w[1] == 'l' ||
            w[1] == 'c')
            return make_error("--eal: '" + w + "': capd places its lcores itself; use " +
                              "--workers and --writers (and taskset to choose the CPUs)");
    }
    return Status::success();
}

Status init_eal(EalPlan& plan) {
    std::vector<char*> argv;
    for (auto& a : plan.args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // EAL parses its arguments twice, and getopt names a bad one each time;
    // on a bad argument it then prints its whole usage on standard output.
    opterr = 0;
    // EAL logs to standard output by default, which may be the capture
    // (-w -): every log of capd's goes to stderr.
    (void)rte_openlog_stream(stderr);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (saved >= 0 && null_fd >= 0) dup2(null_fd, STDOUT_FILENO);
    int rc = rte_eal_init(static_cast<int>(argv.size() - 1), argv.data());
    int err = rte_errno;
    fflush(stdout);
    if (saved >= 0) {
        dup2(saved, STDOUT_FILENO);
        close(saved);
    }
    if (null_fd >= 0) close(null_fd);
    opterr = 1;
    if (rc < 0)
        return make_error(std::string("EAL initialisation failed: ") + rte_strerror(err) +
                          (err == EINVAL ? " (an --eal argument? --eal '--log-level=*:debug' "
                                           "shows what EAL refused)"
                                         : ""));
    return Status::success();
}

Result<EalSession> EalSession::start(EalPlan& plan) {
    Status st = init_eal(plan);
    if (!st) return make_error(st.error());
    if (!plan.hugepages) (void)rmdir(rte_eal_get_runtime_dir());
    return EalSession();
}

EalSession::~EalSession() {
    if (active_) rte_eal_cleanup();
}

}  // namespace linecap::dataplane
