/* The daemon-side command handlers, one file per domain:
 *   handlers_status.cc   status, stats
 *   handlers_rules.cc    rules.list, rules.add, rules.del, rules.replace
 *   handlers_capture.cc  rotate, pause, resume, stop
 *   handlers_diag.cc     diagnose (the workers' live TCP flow tables)
 * Each runs on the control thread and calls the Pipeline's control API. */
#pragma once

#include <string>

#include "ctl/server.hh"
#include "dataplane/pipeline.hh"

namespace linecap::ctl {

/* What the handlers need from capd's options. */
struct HandlerOptions {
    /* capd --bpf-dir: the only place peers without capd's rights may load
     * eBPF objects from (by name); empty: they may not load any. */
    std::string bpf_dir;
};

void register_status_handlers(HandlerTable& t, dataplane::Pipeline& p);
void register_rules_handlers(HandlerTable& t, dataplane::Pipeline& p, const HandlerOptions& o);
void register_capture_handlers(HandlerTable& t, dataplane::Pipeline& p);
void register_diag_handlers(HandlerTable& t, dataplane::Pipeline& p);

inline HandlerTable make_handlers(dataplane::Pipeline& p, const HandlerOptions& o = {}) {
    HandlerTable t;
    register_status_handlers(t, p);
    register_rules_handlers(t, p, o);
    register_capture_handlers(t, p);
    register_diag_handlers(t, p);
    return t;
}

}  // namespace linecap::ctl
