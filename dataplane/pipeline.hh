/* Pipeline: the composition of sources, workers, rings, chunk pool and
 * writers for one capd run. Every method runs on the control side, one
 * thread at a time: capd's main thread for create(), start(), wait() and
 * finish(), and between start() and finish() the ctl thread for the control
 * API (wait() reads only atomics meanwhile; finish() runs once the ctl
 * thread has stopped).
 *
 *   create()  sets up ports, pools, rings and opens the first files; any
 *             failure is reported before capture starts.
 *   start()   launches the worker and writer lcores.
 *   wait()    returns when a stop condition holds (end of input, -c,
 *             --duration, a signal, or request_stop()), calling `poll`
 *             (the control socket) in between.
 *   finish()  stops the workers, lets the writers drain and close, and
 *             returns the summary.
 *
 * The rest is the control API used by the control socket's handlers.
 */
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hh"
#include "dataplane/flow_table.hh"
#include "dataplane/options.hh"
#include "dataplane/placement.hh"
#include "dataplane/summary.hh"
#include "filters/rule_set.hh"
#include "packet/tcp_tracker.hh"

namespace linecap::dataplane {

/* Mbufs in the shared pool: a full receive ring and two bursts per port
 * queue, two bursts per file source (a file waits for mbufs instead of
 * dropping), and each lcore's cache. */
unsigned mbuf_pool_size(const Options& o);

/* Chunks in the pool: each worker's ring full plus the one it fills and one
 * spare, what each writer holds (a dequeue burst), and a few more. */
unsigned chunk_pool_size(const Options& o);

/* EAL memory for a run, in MB. Without hugepages every mbuf takes a whole
 * 4 KiB page (a pool object may not cross a page), so a page per mbuf is
 * counted either way. */
size_t eal_memory_mb(const Options& o);

class Pipeline {
public:
    /* `placement` is the plan EAL was started with (placement.hh). */
    static Result<std::unique_ptr<Pipeline>> create(const Options& o, const Placement& placement,
                                                    std::vector<filters::RuleSpec> rules,
                                                    const filters::CompileOptions& copts,
                                                    const std::atomic<bool>* external_stop);
    ~Pipeline();

    void start();
    void wait(const std::function<void(int timeout_ms)>& poll);
    Summary finish();
    void request_stop() { stop_requested_.store(true); }

    /* Live counters, same shape as the final summary. */
    Summary collect() const;
    /* Sources, queues, lcores, uptime, current files, paused. */
    nlohmann::json status() const;

    std::vector<filters::RuleSpec> rules() const;
    /* The compiled set in force, and the options it was compiled with: what
     * a compile off the control thread starts from. */
    std::shared_ptr<const filters::RuleSet> rule_set() const;
    const filters::CompileOptions& compile_options() const;
    /* Compiles `rules` as one set and swaps it in under RCU. On error nothing
     * changes and the message names the rule. Blocks for the compile. */
    Status replace_rules(std::vector<filters::RuleSpec> rules);
    /* Swaps in `compiled`, compiled from `rules` elsewhere (CompileWorker),
     * under RCU. Errors only if a per-worker scratch cannot be made. */
    Status install_rules(std::vector<filters::RuleSpec> rules,
                         std::shared_ptr<const filters::RuleSet> compiled);

    /* Names of the sources, by index (the interface ids of the files). */
    std::vector<std::string> source_names() const;

    /* Gets a copy of every worker's TCP records (in its flow table), each
     * taken between two of its bursts, and passes the copies to fn. Errors: ENOTSUP, the
     * tables are off (--tcp-flows 0 or --rx-only); ETIMEDOUT, a worker did
     * not answer within timeout_ms (fn is then not called). */
    Status with_tcp_tables(int timeout_ms,
                           const std::function<void(const std::vector<packet::TableView>&)>& fn);

    /* The n (<= FlowTable::kMaxTop) flows with the most bytes in each
     * worker's flow table, each table read between two of its bursts, as
     * (worker, flow). Errors: ENOTSUP, no flow table (no --flow-cutoff,
     * --flow-packets or --dedup); ETIMEDOUT, a worker did not answer within
     * timeout_ms. Control thread. */
    Status top_flows(size_t n, int timeout_ms, std::vector<std::pair<unsigned, FlowInfo>>& out);
    /* True when the workers have flow tables (rules may set cutoffs). */
    bool has_flow_tables() const;

    /* Asks every writer for a new file. Error: the output is standard
     * output (-w -), which never rotates. */
    Status rotate();
    void set_paused(bool paused);
    bool paused() const;

    struct Impl;

private:
    explicit Pipeline(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
    std::atomic<bool> stop_requested_{false};
};

}  // namespace linecap::dataplane
