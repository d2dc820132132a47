#include "query/catalog.hh"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "filters/cbpf_to_ebpf.hh"
#include "index/prune.hh"
#include "query/flow_json.hh"
#include "query/time_spec.hh"

namespace linecap::query {

namespace {

constexpr uint32_t kSnaplen = 262144;
/* How long one catalogue query may take: a Distributed query over a busy
 * ClickHouse (or one sharing a small machine with the captures) takes
 * seconds, and a query that gives up early leaves the user with nothing.
 * The publisher keeps its shorter default: it retries. */
constexpr int kQueryMs = 30000;

/* The flow filters of one expression, per link type. */
class Filters {
public:
    explicit Filters(std::string expr) : expr_(std::move(expr)) {}
    bool empty() const { return expr_.empty(); }
    Result<const index::FlowFilter*> get(uint16_t linktype) {
        auto it = by_lt_.find(linktype);
        if (it != by_lt_.end()) return it->second.get();
        // LINKTYPE_RAW (101) in files is DLT_RAW (12) to pcap_compile().
        auto p = filters::compile_classic(expr_, linktype == 101 ? 12 : linktype, kSnaplen);
        if (!p) return make_error(p.code(), expr_ + ": " + p.error());
        auto ff = std::make_unique<index::FlowFilter>(std::move(*p), linktype);
        return by_lt_.emplace(linktype, std::move(ff)).first->second.get();
    }

private:
    std::string expr_;
    std::map<uint16_t, std::unique_ptr<index::FlowFilter>> by_lt_;
};

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t pos = 0;
    for (;;) {
        size_t e = s.find(sep, pos);
        out.push_back(s.substr(pos, e == std::string::npos ? std::string::npos : e - pos));
        if (e == std::string::npos) break;
        pos = e + 1;
    }
    return out;
}

// TabSeparated text back: \t \n \\ and the other escapes ClickHouse writes.
std::string unescape(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            out += s[i];
            continue;
        }
        char c = s[++i];
        out += c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c == '0' ? '\0' : c;
    }
    return out;
}

bool unhex(const std::string& h, void* out, size_t n) {
    if (h.size() != 2 * n) return false;
    auto* b = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        if (std::sscanf(h.c_str() + 2 * i, "%2x", &v) != 1) return false;
        b[i] = static_cast<uint8_t>(v);
    }
    return true;
}

uint64_t u64(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 10); }

std::string live_files_sql(const CatalogTables& t) {
    return "SELECT host, path, max(file_id) FROM " + t.files +
           " GROUP BY host, path HAVING argMax(gone, file_id) = 0";
}

/* The address restriction of a filter: terms "" when it proves none. Only
 * the link types the flow key walks give IP flows (flow_key.hh: Ethernet,
 * Linux cooked, raw IP); the addresses each one's filter proves are
 * united, and a flow of any other kind has zero addresses (so the zero
 * address joins the set: non-IP flows are always candidates). The terms
 * select by `addr`, the first column of the flows table's ordering key.
 * When every link type's filter also proves address pairs
 * (FlowFilter::required_pairs(): the 5-tuple, `host A and host B`), a flow
 * row must hold one of them; aggregate rows (an endpoint unknown) and
 * rows of zero addresses stay, as the filter decides those. The rows read
 * are the same primary-key ranges; fewer come back: a busy server's other
 * flows stay in the catalogue. */
struct Lookup {
    std::string terms;
    size_t addresses = 0, pairs = 0;
};

Result<Lookup> address_terms(Filters& f) {
    Lookup out;
    if (f.empty()) return out;
    std::set<std::array<uint8_t, 16>> all;
    std::set<std::pair<std::array<uint8_t, 16>, std::array<uint8_t, 16>>> pairs;
    bool paired = true;
    for (uint16_t lt : {uint16_t(1), uint16_t(113), uint16_t(12)}) {
        auto ff = f.get(lt);
        if (!ff) return ff.failure();
        const auto& req = (*ff)->required_addresses();
        if (!req) return out;
        all.insert(req->begin(), req->end());
        const auto& p = (*ff)->required_pairs();
        if (p)
            pairs.insert(p->begin(), p->end());
        else
            paired = false;
    }
    out.addresses = all.size();
    const std::array<uint8_t, 16> zero{};
    all.insert(zero);
    auto sql16 = [](const std::array<uint8_t, 16>& a) {
        return "toFixedString(" + storage::sql_addr(a.data()) + ", 16)";
    };
    std::string list;
    for (const auto& a : all) list += (list.empty() ? "" : ", ") + sql16(a);
    // Each flow is stored under both endpoints (storage/catalog.hh): the
    // rows under a listed address are a primary-key range each; a side-1
    // row whose lower endpoint is listed too is the same flow as a side-0
    // row already selected, so it is left out and every flow comes once.
    out.terms = "(addr IN (" + list + ") AND (side = 0 OR src NOT IN (" + list + ")))";
    if (paired && !pairs.empty()) {
        std::string in;
        for (const auto& [a, b] : pairs)
            in += std::string(in.empty() ? "" : ", ") + "(" + sql16(a) + ", " + sql16(b) + ")";
        out.terms += " AND (agg != 0 OR src = " + sql16(zero) + " OR (src, dst) IN (" + in + "))";
        out.pairs = pairs.size();
    }
    return out;
}

struct FlowRow {
    std::string host, path;
    index::FlowKey key;
    uint64_t first_ns, last_ns, packets, bytes;
    uint8_t agg;  // storage::FlowAgg
    uint64_t nflows;
};

/* The fields an aggregate row leaves unknown (storage/catalog.hh). */
uint8_t unknown_of(uint8_t agg) {
    if (agg == uint8_t(storage::FlowAgg::kEndpoint)) return index::FlowFilter::kUnknownDst;
    if (agg == uint8_t(storage::FlowAgg::kFlow)) return 0;
    return index::FlowFilter::kUnknownSrc | index::FlowFilter::kUnknownDst;
}

/* The live flows of the window that may match. */
/* For each (host, path): the latest file_id and whether that row is a
 * tombstone; asked for the given pairs only (the files table is ordered by
 * host and path, so this reads a few granules per pair). */
Result<std::map<std::pair<std::string, std::string>, std::pair<uint64_t, bool>>> file_states(
    const storage::CatalogUrl& url, const CatalogTables& t,
    const std::set<std::pair<std::string, std::string>>& pairs) {
    std::map<std::pair<std::string, std::string>, std::pair<uint64_t, bool>> out;
    auto it = pairs.begin();
    while (it != pairs.end()) {
        std::string list;
        for (size_t n = 0; n < 1000 && it != pairs.end(); n++, ++it)
            list += (list.empty() ? "(" : ", (") + storage::sql_quote(it->first) + ", " +
                    storage::sql_quote(it->second) + ")";
        auto r = storage::clickhouse_query(
            url,
            "SELECT host, path, max(file_id), argMax(gone, file_id) FROM " + t.files +
                " WHERE (host, path) IN (" + list + ") GROUP BY host, path FORMAT TabSeparated",
            "", kQueryMs);
        if (!r) return r.failure();
        for (const auto& line : split(*r, '\n')) {
            auto c = split(line, '\t');
            if (c.size() == 4) out[{unescape(c[0]), unescape(c[1])}] = {u64(c[2]), c[3] != "0"};
        }
    }
    return out;
}

/* The live flows of the window that may match. With an address restriction
 * the candidate flows are few: they are fetched first and their files'
 * states asked for them alone; without one, the live files are a subquery. */
Result<std::vector<FlowRow>> fetch_flows(const storage::CatalogUrl& url, const CatalogTables& t,
                                         uint64_t since_ns, uint64_t until_ns, Filters& f,
                                         const std::string& addr_terms,
                                         size_t* answered = nullptr) {
    std::string sql =
        "SELECT host, path, hex(key), first_ns, last_ns, packets, bytes, file_id, agg, nflows "
        "FROM " +
        t.flows + " WHERE first_ns < " + std::to_string(until_ns) +
        " AND last_ns >= " + std::to_string(since_ns);
    if (!addr_terms.empty())
        sql += " AND " + addr_terms;
    else
        sql += " AND side = 0 AND (host, path, file_id) GLOBAL IN (" + live_files_sql(t) + ")";
    sql += " FORMAT TabSeparated";
    auto r = storage::clickhouse_query(url, sql, "", kQueryMs);
    if (!r) return r.failure();
    std::vector<FlowRow> rows;
    std::vector<uint64_t> ids;
    for (const auto& line : split(*r, '\n')) {
        if (line.empty()) continue;
        if (answered) ++*answered;
        auto c = split(line, '\t');
        if (c.size() != 10) return make_error(EIO, url.text + ": unexpected answer: " + line);
        FlowRow row;
        row.host = unescape(c[0]);
        row.path = unescape(c[1]);
        if (!unhex(c[2], &row.key, sizeof row.key))
            return make_error(EIO, url.text + ": a flow key that is not 64 bytes");
        row.first_ns = u64(c[3]);
        row.last_ns = u64(c[4]);
        row.packets = u64(c[5]);
        row.bytes = u64(c[6]);
        row.agg = static_cast<uint8_t>(u64(c[8]));
        row.nflows = u64(c[9]);
        if (!f.empty()) {
            auto ff = f.get(row.key.linktype);
            if (!ff) return ff.failure();
            // An aggregate: its unknown endpoint and ports may be anything.
            if (!(*ff)->eval(row.key, unknown_of(row.agg)).may_accept) continue;
        }
        rows.push_back(std::move(row));
        ids.push_back(u64(c[7]));
    }
    if (addr_terms.empty()) return rows;
    std::set<std::pair<std::string, std::string>> pairs;
    for (const auto& row : rows) pairs.insert({row.host, row.path});
    auto states = file_states(url, t, pairs);
    if (!states) return states.failure();
    std::vector<FlowRow> live;
    for (size_t i = 0; i < rows.size(); i++) {
        auto it = states->find({rows[i].host, rows[i].path});
        if (it != states->end() && it->second.first == ids[i] && !it->second.second)
            live.push_back(std::move(rows[i]));
    }
    return live;
}

/* host -> serve, from the files table (the latest file row of each host). */
Result<std::map<std::string, std::string>> serve_addresses(const storage::CatalogUrl& url,
                                                           const CatalogTables& t) {
    auto r = storage::clickhouse_query(url,
                                       "SELECT host, argMax(serve, file_id) FROM " + t.files +
                                           " WHERE gone = 0 GROUP BY host FORMAT TabSeparated",
                                       "", kQueryMs);
    if (!r) return r.failure();
    std::map<std::string, std::string> out;
    for (const auto& line : split(*r, '\n')) {
        auto c = split(line, '\t');
        if (c.size() == 2) out[unescape(c[0])] = unescape(c[1]);
    }
    return out;
}

}  // namespace

Result<std::vector<CatalogTarget>> catalog_targets(const std::string& url_text,
                                                   const CatalogTables& t, uint64_t since_ns,
                                                   uint64_t until_ns, const std::string& expression,
                                                   CatalogLookup* how) {
    auto url = storage::parse_catalog_url(url_text);
    if (!url) return url.failure();
    Filters f(expression);
    auto lookup = address_terms(f);
    if (!lookup) return lookup.failure();
    CatalogLookup counted;
    counted.addresses = lookup->addresses;
    counted.pairs = lookup->pairs;
    std::map<std::string, std::set<std::string>> files;
    if (!lookup->terms.empty()) {
        auto rows = fetch_flows(*url, t, since_ns, until_ns, f, lookup->terms, &counted.rows);
        if (!rows) return rows.failure();
        for (const auto& r : *rows) files[r.host].insert(r.path);
    } else {
        // No address to look flows up by: every live file of the window (a
        // file with no packet has first_ns 0 and is never a target).
        std::string sql =
            "SELECT host, path FROM (SELECT host, path, argMax(gone, file_id) AS g, "
            "argMax(first_ns, file_id) AS f, argMax(last_ns, file_id) AS l FROM " +
            t.files + " GROUP BY host, path) WHERE g = 0 AND f != 0 AND f < " +
            std::to_string(until_ns) + " AND l >= " + std::to_string(since_ns) +
            " FORMAT TabSeparated";
        auto r = storage::clickhouse_query(*url, sql, "", kQueryMs);
        if (!r) return r.failure();
        for (const auto& line : split(*r, '\n')) {
            auto c = split(line, '\t');
            if (c.size() == 2) files[unescape(c[0])].insert(unescape(c[1]));
        }
    }
    auto serve = serve_addresses(*url, t);
    if (!serve) return serve.failure();
    std::vector<CatalogTarget> out;
    for (auto& [host, set] : files) {
        CatalogTarget ct;
        ct.host = host;
        auto it = serve->find(host);
        if (it != serve->end()) ct.serve = it->second;
        ct.files.assign(set.begin(), set.end());
        out.push_back(std::move(ct));
    }
    if (how) *how = counted;
    return out;
}

std::string CatalogLookup::how() const {
    if (addresses == 0) return "no address to look flows up by: every live file of the window";
    auto count = [](size_t n, const char* one, const char* many) {
        return std::to_string(n) + " " + (n == 1 ? one : many);
    };
    return "flows looked up by " +
           (pairs ? count(pairs, "address pair", "address pairs")
                  : count(addresses, "address", "addresses")) +
           ": " + count(rows, "catalogue row", "catalogue rows");
}

Result<std::vector<FleetFlow>> catalog_flows(const std::string& url_text, const CatalogTables& t,
                                             uint64_t since_ns, uint64_t until_ns,
                                             const std::string& expression) {
    auto url = storage::parse_catalog_url(url_text);
    if (!url) return url.failure();
    Filters f(expression);
    auto lookup = address_terms(f);
    if (!lookup) return lookup.failure();
    auto rows = fetch_flows(*url, t, since_ns, until_ns, f, lookup->terms);
    if (!rows) return rows.failure();
    std::map<std::pair<std::string, std::string>, FleetFlow> agg;
    for (const auto& r : *rows) {
        std::string k(reinterpret_cast<const char*>(&r.key), sizeof r.key);
        k += char(r.agg);
        auto [it, fresh] = agg.try_emplace({r.host, k});
        FleetFlow& ff = it->second;
        if (fresh) {
            ff.host = r.host;
            ff.key = r.key;
            ff.aggregate = r.agg;
            ff.first_ns = r.first_ns;
            ff.last_ns = r.last_ns;
        }
        ff.first_ns = std::min(ff.first_ns, r.first_ns);
        ff.last_ns = std::max(ff.last_ns, r.last_ns);
        ff.packets += r.packets;
        ff.bytes += r.bytes;
        ff.nflows += r.nflows;
        ff.files++;
    }
    std::vector<FleetFlow> out;
    for (auto& [k, v] : agg) out.push_back(v);
    std::stable_sort(out.begin(), out.end(), [](const FleetFlow& a, const FleetFlow& b) {
        return a.first_ns != b.first_ns ? a.first_ns < b.first_ns : a.host < b.host;
    });
    return out;
}

namespace {

/* A flow as capq --flows writes it; an aggregate says so and shows its
 * unknown endpoint and ports as '*': "AGGREGATE of 12 flows: udp
 * 198.18.0.3 <> * ports *". */
std::string describe(const FleetFlow& a) {
    if (!a.aggregate) return index::describe_flow(a.key);
    std::string s = index::describe_flow(a.key);  // the unknown addresses print as zero
    const size_t arrow = s.find(" <> ");
    if (arrow != std::string::npos) {
        const size_t b_end = std::min(s.find(' ', arrow + 4), s.size());
        s.replace(arrow + 4, b_end - arrow - 4, "*");
        if (a.aggregate != uint8_t(storage::FlowAgg::kEndpoint)) {
            const size_t a_at = s.rfind(' ', arrow - 1);
            if (a_at != std::string::npos) s.replace(a_at + 1, arrow - a_at - 1, "*");
        }
        const size_t after = s.find(' ', s.find(" <> ") + 4);
        s.insert(after == std::string::npos ? s.size() : after, " ports *");
    }
    return "AGGREGATE of " + std::to_string(a.nflows) + " flows: " + s;
}

}  // namespace

int run_fleet_flows(const std::string& url, const CatalogTables& t, uint64_t since_ns,
                    uint64_t until_ns, const std::string& expression, bool json) {
    auto flows = catalog_flows(url, t, since_ns, until_ns, expression);
    if (!flows) {
        std::fprintf(stderr, "capq: --fleet: %s\n", flows.error().c_str());
        return 1;
    }
    if (json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& a : *flows) {
            nlohmann::json j = flow_json(a.key, a.first_ns, a.last_ns, a.packets, a.bytes);
            j["host"] = a.host;
            j["files"] = a.files;
            if (a.aggregate) {
                // Not one flow: the flows of a file beyond its budget.
                j["aggregate"] =
                    a.aggregate == uint8_t(storage::FlowAgg::kEndpoint) ? "endpoint" : "any";
                j["aggregated_flows"] = a.nflows;
            }
            arr.push_back(std::move(j));
        }
        std::printf("%s\n", arr.dump(2).c_str());
        return 0;
    }
    std::printf("%-16s  %-30s  %-30s  %10s  %14s  %s\n", "HOST", "FIRST", "LAST", "PACKETS",
                "BYTES", "FLOW (both directions)");
    for (const auto& a : *flows)
        std::printf("%-16s  %-30s  %-30s  %10llu  %14llu  %s\n", a.host.c_str(),
                    format_time(int64_t(a.first_ns)).c_str(),
                    format_time(int64_t(a.last_ns)).c_str(), (unsigned long long)a.packets,
                    (unsigned long long)a.bytes, describe(a).c_str());
    return 0;
}

}  // namespace linecap::query
