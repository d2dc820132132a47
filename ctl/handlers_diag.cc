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
}

}  // namespace linecap::ctl
