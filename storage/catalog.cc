#include "storage/catalog.hh"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <unordered_map>

namespace linecap::storage {

namespace {

bool identifier(const std::string& s) {
    if (s.empty() || s.size() > 128) return false;
    for (char c : s)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.')) return false;
    return !std::isdigit(static_cast<unsigned char>(s[0])) && s.front() != '.' && s.back() != '.';
}

std::string url_encode(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

// ClickHouse's TabSeparated input reads a value's bytes as they are up to
// a tab (the next column), a newline (the next row) or a backslash (an
// escape); every other byte, 0 and 0x80-0xff among them, is the value's
// own, in String and FixedString alike. So those three alone are escaped,
// as \t, \n and \\: a 16-byte address is then 16 to 32 bytes of text
// instead of 64 as \xHH each, and the runs between them are appended whole.
constexpr std::array<char, 256> kTsvEscape = [] {
    std::array<char, 256> t{};
    t['\t'] = 't';
    t['\n'] = 'n';
    t['\\'] = '\\';
    return t;
}();

void tsv_escaped(std::string& out, const char* p, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const char e = kTsvEscape[static_cast<uint8_t>(p[i])];
        if (e == 0) continue;
        out.append(p + run, i - run);
        out += '\\';
        out += e;
        run = i + 1;
    }
    out.append(p + run, n - run);
}

void tsv_text(std::string& out, const std::string& s) { tsv_escaped(out, s.data(), s.size()); }

void tsv_bytes(std::string& out, const void* p, size_t n) {
    tsv_escaped(out, static_cast<const char*>(p), n);
}

void tsv_u(std::string& out, uint64_t v, char sep = '\t') {
    out += std::to_string(v);
    out += sep;
}

int64_t ms_left(std::chrono::steady_clock::time_point deadline) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now())
        .count();
}

}  // namespace

Result<CatalogTables> parse_catalog_tables(const std::string& text) {
    auto comma = text.find(',');
    if (comma == std::string::npos)
        return make_error("--catalog-tables: expected FILES,FLOWS (two table names), got '" + text +
                          "'");
    CatalogTables t{text.substr(0, comma), text.substr(comma + 1)};
    for (const auto* n : {&t.files, &t.flows})
        if (!identifier(*n))
            return make_error("--catalog-tables: '" + *n +
                              "' is not a table name (letters, digits, '_', '.')");
    if (t.files == t.flows) return make_error("--catalog-tables: the two tables must differ");
    return t;
}

Result<CatalogUrl> parse_catalog_url(const std::string& url) {
    const std::string scheme = "http://";
    if (url.compare(0, scheme.size(), scheme) != 0)
        return make_error("catalogue URL '" + url +
                          "': expected http://HOST:PORT (ClickHouse's HTTP interface)");
    std::string rest = url.substr(scheme.size());
    if (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.find('/') != std::string::npos || rest.find('@') != std::string::npos ||
        rest.find('?') != std::string::npos)
        return make_error("catalogue URL '" + url + "': expected http://HOST:PORT, no path");
    CatalogUrl u;
    u.text = url;
    std::string port;
    if (!rest.empty() && rest[0] == '[') {
        auto end = rest.find(']');
        if (end == std::string::npos) return make_error("catalogue URL '" + url + "': bad host");
        u.host = rest.substr(1, end - 1);
        if (end + 1 < rest.size()) {
            if (rest[end + 1] != ':') return make_error("catalogue URL '" + url + "': bad host");
            port = rest.substr(end + 2);
        }
    } else {
        auto colon = rest.rfind(':');
        u.host = rest.substr(0, colon);
        if (colon != std::string::npos) port = rest.substr(colon + 1);
    }
    if (u.host.empty()) return make_error("catalogue URL '" + url + "': no host");
    if (!port.empty()) {
        char* end = nullptr;
        unsigned long p = std::strtoul(port.c_str(), &end, 10);
        if (*end != '\0' || p == 0 || p > 65535)
            return make_error("catalogue URL '" + url + "': bad port '" + port + "'");
        u.port = static_cast<uint16_t>(p);
    }
    return u;
}

Result<std::string> clickhouse_query(const CatalogUrl& url, const std::string& sql,
                                     const std::string& body, int timeout_ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    const std::string where = url.host + ":" + std::to_string(url.port);
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int g = getaddrinfo(url.host.c_str(), std::to_string(url.port).c_str(), &hints, &res);
    if (g != 0) return make_error(EHOSTUNREACH, where + ": " + gai_strerror(g));
    int fd = -1, err = ECONNREFUSED;
    for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
        fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            err = errno;
            ::close(fd);
            fd = -1;
            continue;
        }
        pollfd p{fd, POLLOUT, 0};
        int soerr = 0;
        socklen_t len = sizeof soerr;
        int left = static_cast<int>(std::max<int64_t>(0, ms_left(deadline)));
        if (::poll(&p, 1, left) != 1) {
            err = ETIMEDOUT;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
            err = soerr ? soerr : errno;
        } else {
            break;
        }
        ::close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return make_error(err, where + ": " + std::strerror(err));

    // A SELECT travels as the body; an INSERT's statement goes in the URL and
    // its rows in the body. insert_distributed_sync: an insert into a
    // Distributed table returns once the shards have the rows, so "sent"
    // means stored.
    std::string target = "/?insert_distributed_sync=1";
    std::string payload = body.empty() ? sql : body;
    if (!body.empty()) target += "&query=" + url_encode(sql);
    std::string req = "POST " + target + " HTTP/1.0\r\nHost: " + where +
                      "\r\nContent-Length: " + std::to_string(payload.size()) +
                      "\r\nConnection: close\r\n\r\n";
    req += payload;
    size_t off = 0;
    while (off < req.size()) {
        ssize_t w = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += size_t(w);
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            err = errno;
            ::close(fd);
            return make_error(err, where + ": send: " + std::strerror(err));
        }
        pollfd p{fd, POLLOUT, 0};
        int left = static_cast<int>(ms_left(deadline));
        if (left <= 0 || ::poll(&p, 1, left) < 0) {
            ::close(fd);
            return make_error(ETIMEDOUT,
                              where + ": no answer within " + std::to_string(timeout_ms) + " ms");
        }
    }
    std::string resp;
    char buf[65536];
    for (;;) {
        ssize_t r = ::recv(fd, buf, sizeof buf, 0);
        if (r > 0) {
            resp.append(buf, size_t(r));
            continue;
        }
        if (r == 0) break;
        if (errno != EAGAIN && errno != EINTR) {
            err = errno;
            ::close(fd);
            return make_error(err, where + ": recv: " + std::strerror(err));
        }
        pollfd p{fd, POLLIN, 0};
        int left = static_cast<int>(ms_left(deadline));
        if (left <= 0 || ::poll(&p, 1, left) <= 0) {
            ::close(fd);
            return make_error(ETIMEDOUT,
                              where + ": no answer within " + std::to_string(timeout_ms) + " ms");
        }
    }
    ::close(fd);
    auto head_end = resp.find("\r\n\r\n");
    if (resp.compare(0, 5, "HTTP/") != 0 || head_end == std::string::npos)
        return make_error(EIO, where + ": not an HTTP answer");
    int status = std::atoi(resp.c_str() + resp.find(' ') + 1);
    std::string content = resp.substr(head_end + 4);
    if (status != 200) {
        std::string line = content.substr(0, content.find('\n'));
        if (line.size() > 300) line.resize(300);
        return make_error(EIO, where + ": HTTP " + std::to_string(status) + ": " + line);
    }
    return content;
}

std::vector<std::string> catalog_schema_sql(const CatalogTables& t, const std::string& cluster) {
    const std::string files_cols =
        "(host String, serve String, path String, file_id UInt64, gone UInt8, "
        "first_ns UInt64, last_ns UInt64, packets UInt64, bytes UInt64, writer UInt32, "
        "published_ns UInt64, day Date DEFAULT toDate(intDiv(published_ns, 1000000000)))";
    const std::string flows_cols =
        "(host String, path String, file_id UInt64, addr FixedString(16), side UInt8, "
        "key FixedString(64), "
        "src FixedString(16), dst FixedString(16), sport UInt16, dport UInt16, proto UInt8, "
        "ip_version UInt8, vlan UInt16, first_ns UInt64, last_ns UInt64, packets UInt64, "
        "bytes UInt64, agg UInt8 DEFAULT 0, nflows UInt64 DEFAULT 1, "
        "day Date DEFAULT toDate(intDiv(first_ns, 1000000000)))";
    const std::string files_engine =
        " ENGINE = MergeTree() PARTITION BY day ORDER BY (host, path, file_id)";
    const std::string flows_engine =
        " ENGINE = MergeTree() PARTITION BY day ORDER BY (addr, first_ns)";
    std::vector<std::string> out;
    if (cluster.empty()) {
        out.push_back("CREATE TABLE IF NOT EXISTS " + t.files + " " + files_cols + files_engine);
        out.push_back("CREATE TABLE IF NOT EXISTS " + t.flows + " " + flows_cols + flows_engine);
        return out;
    }
    auto dist = [&](const std::string& name, const std::string& cols) {
        auto dot = name.find('.');
        std::string db = dot == std::string::npos ? "default" : name.substr(0, dot);
        std::string local = (dot == std::string::npos ? name : name.substr(dot + 1)) + "_local";
        return "CREATE TABLE IF NOT EXISTS " + name + " " + cols + " ENGINE = Distributed(" +
               cluster + ", " + db + ", " + local + ", cityHash64(host))";
    };
    out.push_back("CREATE TABLE IF NOT EXISTS " + t.files + "_local " + files_cols + files_engine);
    out.push_back("CREATE TABLE IF NOT EXISTS " + t.flows + "_local " + flows_cols + flows_engine);
    out.push_back(dist(t.files, files_cols));
    out.push_back(dist(t.flows, flows_cols));
    return out;
}

std::string files_columns() {
    return "(host, serve, path, file_id, gone, first_ns, last_ns, packets, bytes, writer, "
           "published_ns)";
}

std::string flows_columns() {
    return "(host, path, file_id, addr, side, key, src, dst, sport, dport, proto, ip_version, "
           "vlan, first_ns, last_ns, packets, bytes, agg, nflows)";
}

void append_file_row(std::string& out, const std::string& host, const std::string& serve,
                     const std::string& path, uint64_t file_id, bool gone,
                     const index::IndexHeader* h, uint32_t writer, uint64_t published_ns) {
    tsv_text(out, host);
    out += '\t';
    tsv_text(out, serve);
    out += '\t';
    tsv_text(out, path);
    out += '\t';
    tsv_u(out, file_id);
    tsv_u(out, gone ? 1 : 0);
    tsv_u(out, h ? h->first_ns : 0);
    tsv_u(out, h ? h->last_ns : 0);
    tsv_u(out, h ? h->packets : 0);
    tsv_u(out, h ? h->wire_bytes : 0);
    tsv_u(out, writer);
    tsv_u(out, published_ns, '\n');
}

void append_flow_row(std::string& out, const std::string& host, const std::string& path,
                     uint64_t file_id, const index::FlowEntry& f, FlowAgg agg, uint64_t nflows) {
    tsv_text(out, host);
    out += '\t';
    tsv_text(out, path);
    out += '\t';
    tsv_u(out, file_id);
    tsv_bytes(out, &f.key, sizeof f.key);
    out += '\t';
    tsv_bytes(out, f.key.src, 16);
    out += '\t';
    tsv_bytes(out, f.key.dst, 16);
    out += '\t';
    tsv_u(out, f.key.sport);
    tsv_u(out, f.key.dport);
    tsv_u(out, f.key.kind == index::FlowKind::kIp ? f.key.proto : 0);
    tsv_u(out, f.key.kind == index::FlowKind::kIp ? f.key.ip_version : 0);
    tsv_u(out, f.key.vlan_tags ? f.key.vid[0] : 0);
    tsv_u(out, f.first_ns);
    tsv_u(out, f.last_ns);
    tsv_u(out, f.packets);
    tsv_u(out, f.wire_bytes);
    tsv_u(out, uint64_t(agg));
    tsv_u(out, nflows, '\n');
}

void expand_flow_rows(std::string& out, const std::string& rows) {
    size_t pos = 0;
    while (pos < rows.size()) {
        size_t end = rows.find('\n', pos);
        if (end == std::string::npos) end = rows.size();
        // Tabs after host, path, file_id, key, src and dst (text and bytes
        // are escaped: a raw tab only separates columns).
        size_t tab[6];
        size_t p = pos;
        bool ok = true;
        for (size_t& t : tab) {
            t = rows.find('\t', p);
            if (t >= end) {
                ok = false;
                break;
            }
            p = t + 1;
        }
        // 14 tabs: a row of an earlier run, without agg and nflows (a
        // flow); 16: agg is the field before the last.
        size_t tabs = 0, agg_at = 0, last = 0;
        for (size_t i = p; ok && i < end; i++)
            if (rows[i] == '\t') {
                agg_at = last;
                last = i + 1;
                tabs++;
            }
        tabs += 6;
        if (!ok || (tabs != 14 && tabs != 16)) {
            // Not a flow row: passed on whole, so the server refuses it
            // and says why, rather than it going missing here.
            out.append(rows, pos, end - pos);
            out += '\n';
            pos = end + 1;
            continue;
        }
        const char* tail = tabs == 14 ? "\t0\t1\n" : "\n";
        const bool aggregate = tabs == 16 && rows[agg_at] != '0';
        const size_t head = tab[2] + 1 - pos;  // "host\tpath\tfile_id\t"
        const size_t rest = tab[2] + 1;        // "key\tsrc\tdst\t...", to the end
        const size_t src = tab[3] + 1, src_n = tab[4] - src;
        const size_t dst = tab[4] + 1, dst_n = tab[5] - dst;
        out.append(rows, pos, head);
        out.append(rows, src, src_n);
        out += "\t0\t";
        out.append(rows, rest, end - rest);
        out += tail;
        // An aggregate has one row, under src (its endpoint, or zero).
        if (!aggregate && rows.compare(src, src_n, rows, dst, dst_n) != 0) {
            out.append(rows, pos, head);
            out.append(rows, dst, dst_n);
            out += "\t1\t";
            out.append(rows, rest, end - rest);
            out += tail;
        }
        pos = end + 1;
    }
}

namespace {

struct KeyHash {
    size_t operator()(const index::FlowKey& k) const { return index::hash_flow_key(k); }
};

// The key of an aggregate: `src` as given (an endpoint, or zero), dst and
// the ports zero, kFlowHasPorts clear (the ports unknown to the filter).
index::FlowKey aggregate_key(const index::FlowKey& k, const uint8_t* src) {
    index::FlowKey a = k;
    if (src)
        std::memcpy(a.src, src, 16);
    else
        std::memset(a.src, 0, 16);
    std::memset(a.dst, 0, 16);
    a.sport = a.dport = 0;
    a.flags = static_cast<uint8_t>(a.flags & ~index::kFlowHasPorts);
    return a;
}

void add_to(BudgetRow& r, const index::FlowEntry& f) {
    if (r.nflows == 0) {
        r.f.first_ns = f.first_ns;
        r.f.last_ns = f.last_ns;
    }
    r.f.first_ns = std::min(r.f.first_ns, f.first_ns);
    r.f.last_ns = std::max(r.f.last_ns, f.last_ns);
    r.f.packets += f.packets;
    r.f.wire_bytes += f.wire_bytes;
    r.nflows++;
}

}  // namespace

std::vector<BudgetRow> budget_flows(std::span<const index::FlowEntry> flows, uint32_t budget) {
    std::vector<BudgetRow> out;
    auto exact = [&](const index::FlowEntry& f) {
        BudgetRow r{};
        r.f.key = f.key;
        r.f.first_ns = f.first_ns;
        r.f.last_ns = f.last_ns;
        r.f.packets = f.packets;
        r.f.wire_bytes = f.wire_bytes;
        out.push_back(r);
    };
    if (budget == 0 || flows.size() <= budget) {
        out.reserve(flows.size());
        for (const auto& f : flows) exact(f);
        return out;
    }
    std::vector<uint32_t> order(flows.size());
    for (uint32_t i = 0; i < order.size(); i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
        const auto &x = flows[a], &y = flows[b];
        return x.wire_bytes != y.wire_bytes ? x.wire_bytes > y.wire_bytes : x.packets > y.packets;
    });
    const size_t keep = budget / 2;
    std::vector<uint32_t> rest;
    for (size_t i = 0; i < order.size(); i++) {
        const auto& f = flows[order[i]];
        if (i < keep || f.key.kind != index::FlowKind::kIp)
            exact(f);
        else
            rest.push_back(order[i]);
    }
    // The endpoint aggregates, in the order first met (deterministic).
    std::unordered_map<index::FlowKey, size_t, KeyHash> ep_at;
    std::vector<BudgetRow> eps;
    auto endpoints = [&](const index::FlowEntry& f, auto&& fn) {
        fn(aggregate_key(f.key, f.key.src));
        if (std::memcmp(f.key.src, f.key.dst, 16) != 0) fn(aggregate_key(f.key, f.key.dst));
    };
    std::unordered_map<index::FlowKey, size_t, KeyHash> any_at;
    for (uint32_t i : rest) {
        const auto& f = flows[i];
        endpoints(f, [&](const index::FlowKey& k) {
            auto [it, fresh] = ep_at.try_emplace(k, eps.size());
            if (fresh) {
                BudgetRow r{};
                r.f.key = k;
                r.agg = FlowAgg::kEndpoint;
                r.nflows = 0;
                eps.push_back(r);
            }
            add_to(eps[it->second], f);
        });
        any_at.try_emplace(aggregate_key(f.key, nullptr), 0);
    }
    const size_t used = out.size();
    size_t room = budget > used ? budget - used : 0;
    if (eps.size() > room) {
        // Not all fit: room for the wildcard rows that may be needed, the
        // endpoints with the most bytes take the rest.
        room = room > any_at.size() ? room - any_at.size() : 0;
        std::vector<size_t> by(eps.size());
        for (size_t i = 0; i < by.size(); i++) by[i] = i;
        std::stable_sort(by.begin(), by.end(), [&](size_t a, size_t b) {
            return eps[a].f.wire_bytes > eps[b].f.wire_bytes;
        });
        std::vector<bool> chosen(eps.size(), false);
        for (size_t i = 0; i < room && i < by.size(); i++) chosen[by[i]] = true;
        std::vector<BudgetRow> any;
        for (auto& [k, at] : any_at) at = SIZE_MAX;
        for (uint32_t i : rest) {
            const auto& f = flows[i];
            bool covered = true;
            endpoints(f, [&](const index::FlowKey& k) { covered = covered && chosen[ep_at[k]]; });
            if (covered) continue;
            size_t& at = any_at[aggregate_key(f.key, nullptr)];
            if (at == SIZE_MAX) {
                at = any.size();
                BudgetRow r{};
                r.f.key = aggregate_key(f.key, nullptr);
                r.agg = FlowAgg::kAny;
                r.nflows = 0;
                any.push_back(r);
            }
            add_to(any[at], f);
        }
        for (size_t i = 0; i < eps.size(); i++)
            if (chosen[i]) out.push_back(eps[i]);
        out.insert(out.end(), any.begin(), any.end());
    } else {
        out.insert(out.end(), eps.begin(), eps.end());
    }
    return out;
}

std::string sql_quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'' || c == '\\') out += '\\';
        out += c;
    }
    return out + "'";
}

std::string sql_addr(const uint8_t a[16]) {
    static const char* hex = "0123456789ABCDEF";
    std::string out = "unhex('";
    for (int i = 0; i < 16; i++) {
        out += hex[a[i] >> 4];
        out += hex[a[i] & 15];
    }
    return out + "')";
}

}  // namespace linecap::storage
