#include <unistd.h>

#include <climits>

#include "ctl/handlers.hh"

namespace linecap::ctl {

void register_status_handlers(HandlerTable& t, dataplane::Pipeline& p,
                              const ControlCounters* counters) {
    t["status"] = [&p, counters](const Request&) {
        nlohmann::json j = p.status();
        if (counters != nullptr) j["control"] = counters->to_json();
        // The writers' file names may be relative to it (capctl query).
        char cwd[PATH_MAX];
        if (::getcwd(cwd, sizeof cwd) != nullptr) j["cwd"] = cwd;
        return Response::ok("OK", std::move(j));
    };
    t["stats"] = [&p](const Request&) {
        return Response::ok("OK", dataplane::summary_to_json(p.collect()));
    };
    t["ping"] = [](const Request&) { return Response::ok("pong"); };
}

}  // namespace linecap::ctl
