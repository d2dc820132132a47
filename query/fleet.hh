/* capq --fleet-hosts: one query answered by several capture hosts' capq
 * --serve, fetched in parallel and merged into one pcap.
 *
 * One thread per host: connect (5 s), TLS (tls.hh: the host's certificate
 * checked against --ca and the address dialled), GET /v1/packets (serve.hh)
 * and the chunked pcap decoded record by record into the host's queue
 * (bounded: 8 MiB per host; the thread waits for the merge when full). A
 * read that makes no progress for 30 s ends that host. The caller's thread
 * merges: once every host has sent its pcap header or failed, it writes
 * the header (nanosecond pcap, the first answering host's link type, the
 * largest snap length) and then always the earliest head of the queues
 * (timestamp, then the host's position in the list, then its own order),
 * so the output is `capq -r A -r B ...` over the hosts' stores in that
 * order. A host whose link type differs is left out and reported.
 *
 * Every host is reported on stderr, one line each, as a stated gap never
 * a silent one:
 *   capq fleet: HOST: answered, N packets
 *   capq fleet: HOST: over its cap after N packets
 *   capq fleet: HOST: unreachable: REASON
 *   capq fleet: HOST: refused: STATUS LINE        (403, 400, 500, ...)
 *   capq fleet: HOST: failed after N packets: REASON (stream broken)
 * then "capq fleet: K of M hosts answered completely, N packets".
 *
 * Exit status: 0 every host answered completely; 3 the answer is partial
 * (a host unreachable, refused, cut by its cap or broken): the output
 * holds what arrived and is still written; 1 bad input (options, the
 * expression) or the output could not be written.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "query/tls.hh"

namespace linecap::query {

/* One host to ask. files empty: all its served files. */
struct FleetTarget {
    std::string host;   // name in the report ("" : serve)
    std::string serve;  // ADDR:PORT of its capq --serve
    std::vector<std::string> files;
};

struct FleetOptions {
    TlsFiles tls;
    uint64_t since_ns = 0;
    uint64_t until_ns = UINT64_MAX;
    std::string expression;
    std::string out;  // -w; "-" or "": stdout
};

enum FleetExit { kFleetComplete = 0, kFleetBadInput = 1, kFleetPartial = 3 };

/* The fan-out and merge; returns the exit status above. */
int run_fleet(const std::vector<FleetTarget>& targets, const FleetOptions& o);

/* "ADDR:PORT,ADDR:PORT,..." as targets without file lists. */
Result<std::vector<FleetTarget>> parse_fleet_hosts(const std::string& list);

}  // namespace linecap::query
