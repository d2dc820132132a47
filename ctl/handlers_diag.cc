#include <arpa/inet.h>

#include <cerrno>

#include "ctl/diag/live.hh"
#include "ctl/handlers.hh"

namespace linecap::ctl {
namespace {

/* How long the control thread waits for every worker to copy its table. A
 * worker copies between two bursts, so this is only reached by a stuck one. */
constexpr int kCopyTimeoutMs = 1000;
/* Connections listed in one reply: keeps the JSON well under the server's
 * reply backlog (about 1.5 KB each). Counts cover every connection. */
constexpr size_t kListLimit = 10000;

}  // namespace

void register_diag_handlers(HandlerTable& t, dataplane::Pipeline& p) {
    /* args: {"text": bool, "all": bool}. data: the JSON report of
     * `diagnose FILE`, with "live" describing the tables; with "text",
     * {"text": the human report} only ("all": list every healthy
     * connection in it). */
    t["diagnose"] = [&p](const Request& req) {
        const bool text = req.args.is_object() && req.args.value("text", false);
        diag::TextOptions topt;
        topt.all = req.args.is_object() && req.args.value("all", false);
        const auto sources = p.source_names();
        nlohmann::json data;
        Status st = p.with_tcp_tables(kCopyTimeoutMs, [&](const auto& tables) {
            diag::DiagnoseReport r = diag::diagnose_tables(tables, sources);
            r.list_limit = kListLimit;
            if (text)
                data = {{"text", diag::format_diagnose_text(r, topt)}};
            else
                data = diag::diagnose_json(r);
        });
        // ENOTSUP: capd keeps no table; ETIMEDOUT: a worker did not copy.
        if (!st) return Response::error(st.failure());
        return Response::ok("OK", std::move(data));
    };

    /* args: {"top": N (1..1000, default 20)}. data: {"flows": [{worker,
     * proto, a, pa, b, pb, vlan, packets, bytes, cut_packets, cut_bytes,
     * last_ns}...]}, most bytes first; a/pa is the lower endpoint. */
    t["flows"] = [&p](const Request& req) {
        int64_t n = 20;
        if (req.args.is_object() && req.args.contains("top")) {
            if (!req.args["top"].is_number_integer())
                return Response::error(EINVAL, "flows: top must be a whole number");
            n = req.args["top"].get<int64_t>();
        }
        if (n < 1 || n > int64_t(dataplane::FlowTable::kMaxTop))
            return Response::error(EINVAL, "flows: --top 1..1000");
        std::vector<std::pair<unsigned, dataplane::FlowInfo>> flows;
        Status st = p.top_flows(size_t(n), kCopyTimeoutMs, flows);
        if (!st) return Response::error(st.failure());
        nlohmann::json list = nlohmann::json::array();
        for (const auto& [w, f] : flows) {
            char a[INET6_ADDRSTRLEN] = "", b[INET6_ADDRSTRLEN] = "";
            const int af = f.ip_version == 4 ? AF_INET : AF_INET6;
            inet_ntop(af, f.a, a, sizeof(a));
            inet_ntop(af, f.b, b, sizeof(b));
            list.push_back({{"worker", w},
                            {"proto", f.proto},
                            {"a", a},
                            {"pa", f.pa},
                            {"b", b},
                            {"pb", f.pb},
                            {"vlan", f.vlan},
                            {"packets", f.packets},
                            {"bytes", f.bytes},
                            {"cut_packets", f.cut_packets},
                            {"cut_bytes", f.cut_bytes},
                            {"last_ns", f.last_ns}});
        }
        return Response::ok("OK", nlohmann::json{{"flows", list}});
    };
}

}  // namespace linecap::ctl
