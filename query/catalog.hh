/* capq's side of the fleet catalogue (storage/catalog.hh): which hosts and
 * files can hold the packets of a query, and the flows of the whole fleet,
 * answered from ClickHouse alone (through the Distributed tables, so any
 * shard's server answers for all).
 *
 * A file counts while the catalogue says it is there: for its (host, path)
 * the latest row (highest file_id) is not a tombstone; its flows are the
 * rows with that file_id (a file written again under the same name is a
 * new file_id, and the older flows no longer count).
 *
 * The expression is compiled with libpcap for each link type the flows
 * carry (snap length 262144) and evaluated on each flow's key with the
 * index's FlowFilter, exactly as capq does on a local index (so the answer
 * is a superset of the flows whose packets match, never a subset). When the
 * filter proves the addresses every matching packet carries (`host A`,
 * `host A and port P`), only the flows with one of them as an endpoint are
 * fetched; otherwise every flow of the window for --flows, and for targets
 * the files of the window from the files table. An aggregate row (a file
 * over capd's --catalog-flow-budget) is evaluated with its unknown
 * endpoint and ports unknown (FlowFilter::eval's unknown bits): it may
 * match whatever some flow it stands for may match.
 *
 * Cold code, any thread; blocking HTTP requests (10 s timeout each).
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hh"
#include "index/flow_key.hh"
#include "storage/catalog.hh"

namespace linecap::query {

using storage::CatalogTables;

struct CatalogTarget {
    std::string host, serve;
    std::vector<std::string> files;  // absolute paths on that host, sorted
};

/* How catalog_targets() found the files: by the addresses the expression
 * proves (or, narrower, its address pairs), and how many flow rows the
 * catalogue sent back for them. */
struct CatalogLookup {
    size_t addresses = 0;  // 0: none proved; every live file of the window
    size_t pairs = 0;      // 0: the rows were not narrowed to pairs
    size_t rows = 0;
    /* "flows looked up by 1 address pair: 3 catalogue rows". */
    std::string how() const;
};

/* The hosts and files that can hold packets matching `expression` (may be
 * empty: every packet) in [since_ns, until_ns), sorted by host; with `how`,
 * how they were found. Errors: a bad URL, an expression libpcap refuses
 * ("EXPR: syntax error"), the server's ("127.0.0.1:8123: Connection
 * refused"). */
Result<std::vector<CatalogTarget>> catalog_targets(const std::string& url, const CatalogTables& t,
                                                   uint64_t since_ns, uint64_t until_ns,
                                                   const std::string& expression,
                                                   CatalogLookup* how = nullptr);

/* One flow as the fleet saw it on one host: the rows of all its files
 * summed (first/last the extremes). */
struct FleetFlow {
    std::string host;
    index::FlowKey key;
    uint64_t first_ns = 0, last_ns = 0, packets = 0, bytes = 0;
    uint64_t files = 0;
    /* Not one flow but an aggregate row of files over their flow budget
     * (storage::FlowAgg: 1 the flows of one endpoint, 2 of any endpoints;
     * the unknown fields are zero in key), of nflows flows (counted once
     * per row: a flow is in its two endpoints' aggregates). 0: a flow. */
    uint8_t aggregate = 0;
    uint64_t nflows = 0;
};

/* The flows that may match `expression` in the window, per host, sorted
 * by first_ns then host. Errors as catalog_targets(). */
Result<std::vector<FleetFlow>> catalog_flows(const std::string& url, const CatalogTables& t,
                                             uint64_t since_ns, uint64_t until_ns,
                                             const std::string& expression);

/* capq --fleet URL --flows: prints them (a table, or JSON with --json);
 * returns the exit code. */
int run_fleet_flows(const std::string& url, const CatalogTables& t, uint64_t since_ns,
                    uint64_t until_ns, const std::string& expression, bool json);

}  // namespace linecap::query
