/* Pipeline: the composition of sources, workers, rings, chunk pool and
 * writers for one capd run. Control thread only.
 *
 *   create()  sets up ports, pools, rings and opens the first files; any
 *             failure is reported before capture starts.
 *   start()   launches the worker and writer lcores.
 *   wait()    returns when a stop condition holds (end of input, -c,
 *             --duration, a signal, or request_stop()).
 *   finish()  stops the workers, lets the writers drain and close, and
 *             returns the summary.
 */
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/options.hh"
#include "dataplane/result.hh"
#include "dataplane/summary.hh"
#include "filters/rule_set.hh"

namespace linecap::dataplane {

class Pipeline {
public:
    static Result<std::unique_ptr<Pipeline>> create(const Options& o,
                                                    std::shared_ptr<const filters::RuleSet> rules,
                                                    const std::atomic<bool>* external_stop);
    ~Pipeline();

    void start();
    void wait();
    Summary finish();
    void request_stop() { stop_requested_.store(true); }

    struct Impl;

private:
    explicit Pipeline(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
    std::atomic<bool> stop_requested_{false};
};

}  // namespace linecap::dataplane
