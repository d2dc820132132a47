#include "ctl/handlers.hh"

namespace linecap::ctl {

void register_status_handlers(HandlerTable& t, dataplane::Pipeline& p) {
    t["status"] = [&p](const Request&) { return Response::ok("OK", p.status()); };
    t["stats"] = [&p](const Request&) {
        return Response::ok("OK", dataplane::summary_to_json(p.collect()));
    };
    t["ping"] = [](const Request&) { return Response::ok("pong"); };
}

}  // namespace linecap::ctl
