/* Building the EAL command line from capd's options: hugepages when some are
 * free (--no-huge otherwise), one --vdev/-a per port source, and the lcore
 * map of the placement plan (placement.hh). */
#pragma once

#include <string>
#include <vector>

#include "common/result.hh"
#include "dataplane/options.hh"
#include "dataplane/placement.hh"

namespace linecap::dataplane {

struct EalPlan {
    std::vector<std::string> args;
    bool hugepages = false;
    unsigned cpus = 1;     // CPUs capd may run on
    size_t memory_mb = 0;  // packet memory asked of EAL
};

/* EAL's arguments for a run: the lcore map of `placement`, the devices of
 * the port sources, memory (hugepages when enough are free), and --eal's
 * words last. */
EalPlan plan_eal(const Options& o, const Placement& placement, size_t memory_mb);

/* What the plan asks of the host, checked before EAL starts: more than 4
 * workers per CPU is refused (each polls; past that they only add start-up
 * time and ring memory), more workers than CPUs is a warning, and packet
 * memory without hugepages (EAL touches all of it at start) must fit in
 * three quarters of MemAvailable. `warning` gets a line to print, or "". */
[[nodiscard]] Status check_host_fits(const Options& o, const EalPlan& plan, std::string& warning);

/* --eal's words: every option must be one DPDK 22.11's EAL knows, so a typo
 * is one line from capd before EAL starts (EAL itself reports it twice and
 * dumps its usage). Values are left for EAL to check. */
[[nodiscard]] Status check_eal_extra(const std::string& extra);

/* rte_eal_init with its usage text and getopt's complaints kept off the
 * terminal and off standard output (which may carry the capture, -w -). A
 * failure is one message: what EAL refused, and how to see its reasons. */
[[nodiscard]] Status init_eal(EalPlan& plan);

/* EalSession: the EAL of one capd run. start() runs init_eal() and then,
 * without hugepages, removes the empty runtime directory EAL makes even
 * under --no-shconf (/var/run/dpdk/capdPID: one per run would pile up; the
 * hugepage plan runs --in-memory under the shared default prefix, which is
 * left alone). The destructor runs rte_eal_cleanup(), so the session is
 * declared before every object that holds DPDK resources and goes after
 * them. Main thread; one session per process. */
class EalSession {
public:
    [[nodiscard]] static Result<EalSession> start(EalPlan& plan);
    EalSession(EalSession&& other) noexcept : active_(other.active_) { other.active_ = false; }
    EalSession& operator=(EalSession&&) = delete;
    EalSession(const EalSession&) = delete;
    ~EalSession();

private:
    EalSession() = default;
    bool active_ = true;
};

/* Free 2 MiB/1 GiB hugepages on this machine (from /proc/meminfo). */
unsigned long free_hugepages();

}  // namespace linecap::dataplane
