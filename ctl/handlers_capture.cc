#include <cerrno>

#include "ctl/handlers.hh"

namespace linecap::ctl {

void register_capture_handlers(HandlerTable& t, dataplane::Pipeline& p) {
    t["rotate"] = [&p](const Request&) {
        Status st = p.rotate();
        if (!st) return Response::error(st.failure());
        return Response::ok("rotation requested: every writer closes its current file");
    };
    t["pause"] = [&p](const Request&) {
        if (p.paused()) return Response::ok("already paused");
        p.set_paused(true);
        return Response::ok("paused: packets are received and counted, not written");
    };
    t["resume"] = [&p](const Request&) {
        if (!p.paused()) return Response::ok("already capturing");
        p.set_paused(false);
        return Response::ok("capturing");
    };
    t["stop"] = [&p](const Request&) {
        p.request_stop();
        return Response::ok("stopping: draining rings and closing files");
    };
}

}  // namespace linecap::ctl
