/* `compare --fleet-hosts A,B` / `compare --fleet URL --hosts A,B`: each
 * side of a comparison is one host's answer to one query, fetched by capq.
 *
 * capq (beside this executable, or in the build tree's query/) runs once
 * per side, both at once, as `capq --fleet-hosts HOST ... -w -` (or `capq
 * --fleet URL --fleet-only NAME ...`): its pcap goes to a memfd (no name
 * in any directory, so nothing the user or anyone else can point
 * elsewhere), its report lines to another. capq is run rather than linked
 * so that capctl and capdiag stay free of OpenSSL and of the filters'
 * DPDK libraries, and so that the query, its checks, the TLS client and
 * the report lines are exactly capq's (query/fleet.hh).
 *
 * Control-side code, the calling thread; waits for both capq processes,
 * whose own waits are bounded (connect 5 s, no progress 30 s, the hosts'
 * caps).
 */
#pragma once

#include <string>
#include <vector>

#include "common/result.hh"

namespace linecap::ctl::diag {

struct FleetAnswer {
    std::string label;     /* the host as the user named it */
    int fd = -1;           /* memfd holding the pcap (owned) */
    std::string path;      /* /proc/self/fd/N, for the capture reader */
    int status = -1;       /* capq's exit: 0 complete, 3 partial, 1 bad input; -1 killed */
    std::string host_line; /* capq's line for the host, without "capq fleet: " */
    std::string errors;    /* capq's other lines */

    FleetAnswer() = default;
    FleetAnswer(FleetAnswer&& o) noexcept;
    FleetAnswer& operator=(FleetAnswer&&) = delete;
    FleetAnswer(const FleetAnswer&) = delete;
    ~FleetAnswer();
};

/* capq's path: beside /proc/self/exe, or ../query/capq, ../../query/capq
 * (build tree), else "capq" from PATH. */
std::string find_capq();

/* Runs `capq -w - ARGS...` once per entry of `args` (each without capq
 * itself), all at once, and waits for them. Fails only when a process
 * could not be started (memfd, spawn). */
Result<std::vector<FleetAnswer>> fetch_answers(const std::vector<std::string>& labels,
                                               const std::vector<std::vector<std::string>>& args);

}  // namespace linecap::ctl::diag
