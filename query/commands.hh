/* capq's commands, run by capq.cc once its options are parsed: a query
 * (packets out), --flows, --reindex. Each returns the process's exit code
 * and prints its own one-line errors ("capq: ...") on stderr.
 *
 * A query: every file gets an index (store.hh); the expression is compiled
 * once per (link type, snap length) with libpcap (compile_classic), before
 * any output; the index prunes blocks by time and by flow (FlowFilter);
 * every record read is checked against the window to the nanosecond and
 * run through the compiled program (classic_run, libpcap's bpf_filter), so
 * the answer is tcpdump -r's over the same files, cut to the window. The
 * output is merged in timestamp order (merge.hh).
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "query/output.hh"

namespace linecap::query {

struct QueryOptions {
    std::vector<std::string> inputs;  // -r
    uint64_t since_ns = 0;            // since <= ts < until
    uint64_t until_ns = UINT64_MAX;
    std::string expression;
    std::string out;                  // -w; "-" or "" (stdout)
    OutFormat format = OutFormat::kPcap;
    bool format_given = false;
    bool explain = false;
    bool json = false;
};

int run_query(const QueryOptions& o);
int run_flows(const QueryOptions& o);
int run_reindex(const std::vector<std::string>& files);

}  // namespace linecap::query
