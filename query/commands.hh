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
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "query/output.hh"
#include "query/store.hh"

namespace linecap::query {

struct QueryOptions {
    std::vector<std::string> inputs;  // -r
    std::vector<OpenedInput> opened;  // after inputs: files opened by the caller (--serve)
    uint64_t since_ns = 0;            // since <= ts < until
    uint64_t until_ns = UINT64_MAX;
    std::string expression;
    std::string out;  // -w; "-" or "" (stdout)
    OutFormat format = OutFormat::kPcap;
    bool format_given = false;
    bool explain = false;
    bool json = false;
};

int run_query(const QueryOptions& o);

/* A query's packets to a sink instead of a file: capq --serve's requests.
 * The same plan, reading and merge as run_query (which is built on it);
 * no --explain. */
struct QueryStream {
    CaptureOutput::Sink sink;
    /* Called once, after every check and before the first byte goes to
     * the sink (--serve sends its status line there); a failure ends the
     * query as an output error. May be empty. */
    std::function<Status()> on_start;
    /* Warnings (a file without an index: scanned). */
    FILE* warn = stderr;
    /* Nanosecond pcap whatever the inputs (--serve's streams). */
    bool force_nano = false;
    /* The cap: the stream ends before the record that would pass either;
     * `cut` says so. */
    uint64_t max_packets = UINT64_MAX;
    uint64_t max_bytes = UINT64_MAX;
};

struct QueryOutcome {
    enum class Failure {
        kNone,
        kRequest,  // the expression, or the link types against --format
        kStore,    // the inputs could not be opened or read
        kOutput,   // the sink or on_start failed
    };
    Failure failure = Failure::kNone;
    std::string error;     // one line, without "capq: "
    int code = 0;          // errno-style, with error
    bool started = false;  // on_start ran: bytes may have gone out
    bool cut = false;      // the cap was reached
    uint64_t packets = 0;  // records written
    uint64_t bytes = 0;    // bytes of the stream
};

QueryOutcome stream_query(const QueryOptions& o, const QueryStream& stream);
int run_flows(const QueryOptions& o);
/* index_version: 4 (compressed flow groups), or 1 (plain flows: version 1,
 * or 2 for a compressed capture), which capq before version 4 reads. */
int run_reindex(const std::vector<std::string>& files, int index_version = 4);

}  // namespace linecap::query
