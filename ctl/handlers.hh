/* The daemon-side command handlers, one file per domain:
 *   handlers_status.cc   status, stats
 *   handlers_rules.cc    rules.list, rules.add, rules.del, rules.replace
 *   handlers_capture.cc  rotate, pause, resume, stop
 *   handlers_diag.cc     diagnose (the workers' live TCP flow tables)
 * Each runs on the control thread and calls the Pipeline's control API.
 * rules.add/replace/del are AsyncHandlers: they hand the compile to the
 * CompileWorker and answer once the new set is in force. */
#pragma once

#include <string>

#include "ctl/server.hh"
#include "dataplane/pipeline.hh"
#include "filters/compile_worker.hh"

namespace linecap::ctl {

/* What the handlers work on; every reference outlives the server. */
struct HandlerContext {
    dataplane::Pipeline& pipeline;
    filters::CompileWorker& compiler;
    const ControlCounters* counters = nullptr;  // shown by `status` when set
    /* capd --bpf-dir: the only place peers without capd's rights may load
     * eBPF objects from (by name); empty: they may not load any. */
    std::string bpf_dir;
};

struct Handlers {
    HandlerTable sync;
    AsyncHandlerTable async;
};

void register_status_handlers(HandlerTable& t, dataplane::Pipeline& p,
                              const ControlCounters* counters);
void register_rules_handlers(Handlers& t, HandlerContext ctx);
void register_capture_handlers(HandlerTable& t, dataplane::Pipeline& p);
void register_diag_handlers(HandlerTable& t, dataplane::Pipeline& p);

inline Handlers make_handlers(HandlerContext ctx) {
    Handlers t;
    register_status_handlers(t.sync, ctx.pipeline, ctx.counters);
    register_rules_handlers(t, ctx);
    register_capture_handlers(t.sync, ctx.pipeline);
    register_diag_handlers(t.sync, ctx.pipeline);
    return t;
}

}  // namespace linecap::ctl
