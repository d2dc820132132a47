/* The fleet catalogue in ClickHouse: its tables, its rows, and the HTTP
 * client that speaks to it. What goes there is the index's file and flow
 * records (index/index_file.hh), never packets.
 *
 * Two tables, named by CatalogTables (capd --catalog-tables FILES,FLOWS;
 * default linecap_files,linecap_flows), each normally a Distributed table
 * over one MergeTree table per shard (scripts/fleet.sh makes them; the
 * schema is catalog_schema_sql()). Debian's ClickHouse 18.16 has no
 * DateTime64 and no IPv6 type: times are nanoseconds since the epoch in
 * UInt64, addresses FixedString(16) as in FlowKey (IPv4 in the first 4
 * bytes, the rest zero).
 *
 *   files: host, serve, path, file_id, gone, first_ns, last_ns, packets,
 *          bytes, writer, published_ns, day
 *     One row when a file closes (gone 0) and one when it is removed
 *     (gone 1, a tombstone). file_id is the time (ns) of that event on the
 *     capture host, so for one (host, path) the row with the highest file_id
 *     tells the file's present state: a file is there iff that row has
 *     gone = 0, and its flows are the ones with that file_id. A tombstone
 *     rather than ALTER DELETE: 18.16's mutations are asynchronous and
 *     heavy, a row is one insert.
 *   flows: host, path, file_id, addr, side, key (the 64-byte FlowKey), src,
 *          dst, sport, dport, proto, ip_version, vlan, first_ns, last_ns,
 *          packets, bytes, agg, nflows, day
 *     The index's flows of the file (both directions in one flow, src/dst
 *     the key's lower/higher endpoint), each stored under both endpoints:
 *     a row with addr = src (side 0) and one with addr = dst (side 1), or
 *     the side-0 row alone when src = dst. The table is ordered by (addr,
 *     first_ns), so a lookup by either endpoint of a flow reads the granules
 *     of that address only, not the whole table; a query without an address
 *     reads side 0 alone and so counts each flow once. Twice the rows of a
 *     table ordered by one endpoint, for lookups that no longer scan; the
 *     spool keeps one row a flow and expand_flow_rows() makes the two when
 *     a batch is sent. `key`
 *     keeps everything the index knows, so capq evaluates a filter on it
 *     exactly as on a local index.
 *
 *     agg, nflows: 0 and 1 for a flow (a row as above). With a flow budget
 *     (capd --catalog-flow-budget N, budget_flows() below) a file with more
 *     flows than N keeps rows for its biggest flows and aggregates the
 *     others: agg 1, an endpoint aggregate (the flows with endpoint `src`
 *     and the same key otherwise; dst and the ports unknown, stored zero),
 *     one side-0 row under addr = src; agg 2, a wildcard aggregate (the same
 *     key without addresses and ports), one row under the zero address,
 *     which every lookup by address reads (the non-IP flows' place). first/
 *     last are the extremes, packets/bytes the sums of its nflows flows.
 *     capq evaluates an aggregate with the unknown fields unknown
 *     (FlowFilter::eval's unknown bits), so a query finds every file that
 *     holds a matching packet, as without a budget. Tables made before
 *     these two columns: ALTER TABLE ... ADD COLUMN agg UInt8 DEFAULT 0,
 *     ADD COLUMN nflows UInt64 DEFAULT 1 on each shard's local table and
 *     the Distributed table (or recreate them).
 *
 * Both ordered for the query they answer (files by host and path, flows by
 * address then time) and partitioned by day so that old days drop whole.
 *
 * Rows are TabSeparated text; text and binary columns alike are written
 * as their bytes with tab, newline and backslash escaped (\t, \n, \\), the
 * only bytes ClickHouse's TabSeparated input needs escaped.
 *
 * Cold code, any thread; the HTTP client is blocking with a timeout.
 */
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/result.hh"
#include "index/index_file.hh"

namespace linecap::storage {

struct CatalogTables {
    std::string files = "linecap_files";
    std::string flows = "linecap_flows";
};

/* "FILES,FLOWS" (identifiers: letters, digits, '_', '.' for a database).
 * Error: "--catalog-tables: ..." */
Result<CatalogTables> parse_catalog_tables(const std::string& text);

/* A ClickHouse HTTP endpoint: http://HOST:PORT[/] (no TLS, no user). */
struct CatalogUrl {
    std::string host;  // name or address
    uint16_t port = 8123;
    std::string text;  // as given, for messages
};
Result<CatalogUrl> parse_catalog_url(const std::string& url);

/* Runs `sql` (with `body` as the data of an INSERT ... FORMAT, may be
 * empty) and returns the answer's body. Errors: the connection's (ECONNREFUSED,
 * ETIMEDOUT after timeout_ms), or the server's first line with its status
 * (EIO). Blocking; any thread. */
Result<std::string> clickhouse_query(const CatalogUrl& url, const std::string& sql,
                                     const std::string& body = "", int timeout_ms = 10000);

/* The CREATE statements of one shard's local tables (suffix "_local") and of
 * the Distributed tables over `cluster`; with an empty cluster, plain
 * MergeTree tables under the given names. */
std::vector<std::string> catalog_schema_sql(const CatalogTables& t, const std::string& cluster);

/* The columns an INSERT names, in the order the rows below give them. */
std::string files_columns();
std::string flows_columns();

/* Appends the TSV row of a file record (gone = false) or a tombstone
 * (gone = true: the counts are zero). */
void append_file_row(std::string& out, const std::string& host, const std::string& serve,
                     const std::string& path, uint64_t file_id, bool gone,
                     const index::IndexHeader* h, uint32_t writer, uint64_t published_ns);
/* What a flows row stands for (the agg column). */
enum class FlowAgg : uint8_t { kFlow = 0, kEndpoint = 1, kAny = 2 };

/* Appends the TSV row of one flow of the file as it waits in the spool:
 * the columns of flows_columns() without addr and side (one row a flow,
 * so the spool's limit counts flows; a spool of an earlier run, without
 * agg and nflows, reads as flows). For an aggregate, f holds its key and
 * sums (budget_flows()). */
void append_flow_row(std::string& out, const std::string& host, const std::string& path,
                     uint64_t file_id, const index::FlowEntry& f, FlowAgg agg = FlowAgg::kFlow,
                     uint64_t nflows = 1);

/* One row of a file's flows under a budget. */
struct BudgetRow {
    index::FlowEntry f;  // key, first_ns, last_ns, packets, wire_bytes (postings zero)
    FlowAgg agg = FlowAgg::kFlow;
    uint64_t nflows = 1;
};
/* The rows of a file's flows with at most about `budget` rows (0: no
 * budget, a row a flow). When there are more flows than the budget: the
 * biggest half of the budget by bytes (then packets) keep a row each, as
 * do the non-IP flows among the rest (few: one per link type, tags and
 * EtherType); the other IP flows are aggregated, each under its two
 * endpoints (FlowAgg::kEndpoint: one row per endpoint address and key
 * without the other address and ports), the endpoints with the most bytes
 * first, as many as fit; a flow with an endpoint left without its row
 * goes into a wildcard row (FlowAgg::kAny: key without addresses and
 * ports). At most budget rows, unless the wildcard keys alone (distinct
 * link type, tags, IP version, header length, protocol, fragment flags)
 * outnumber the room left. Sound: every flow's packets match some row's
 * key with its unknown fields, and every endpoint of it is a row's addr
 * or every lookup's zero address. Cold (helper thread): sorts and two
 * hash maps per file. */
std::vector<BudgetRow> budget_flows(std::span<const index::FlowEntry> flows, uint32_t budget);
/* Appends to `out` the rows of flows_columns() for the spool rows `rows`:
 * each flow under both endpoints, side 0 under src (the lower address)
 * and side 1 under dst, a single side-0 row when they are equal (non-IP
 * flows: both zero). A line that is not a flow row is passed on whole.
 * Done when a batch is sent; the cost is a copy of the text, twice. */
void expand_flow_rows(std::string& out, const std::string& rows);

/* '...' with backslash escapes, for SQL text. */
std::string sql_quote(const std::string& s);
/* unhex('...') of 16 address bytes, for SQL text. */
std::string sql_addr(const uint8_t a[16]);

}  // namespace linecap::storage
