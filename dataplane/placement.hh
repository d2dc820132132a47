/* Placement: which lcore runs what, on which CPU, and which worker polls
 * which receive queue. Pure functions of the options, the queue counts and
 * the CPU list: no DPDK call, no system state (allowed_cpus() excepted), so
 * that the plan can be unit tested and is made once, then used both for
 * EAL's --lcores map (eal.cc) and by the pipeline (pipeline.cc). Cold code,
 * control thread.
 *
 * Lcores: 0 is the main (control) lcore; workers are 1..W; writers follow,
 * W+1..W+R (none with --rx-only). Busy lcores take the CPUs in order,
 * wrapping when there are fewer CPUs than lcores. The main lcore mostly
 * sleeps but wakes every few milliseconds: it floats over the CPUs no worker
 * polls on (the writers' CPUs), so its wake-ups never preempt a worker; only
 * when workers take every CPU does it float over all of them.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/options.hh"

namespace linecap::dataplane {

struct Placement {
    std::vector<int> cpus;                // the CPUs capd may run on, in order
    std::vector<unsigned> worker_lcores;  // 1..W
    std::vector<unsigned> writer_lcores;  // W+1..W+R; empty with --rx-only
    std::vector<int> lcore_cpu;           // CPU of each lcore, by lcore id (0: the main's first)
    std::vector<int> main_cpus;           // the CPUs the main lcore floats over
    /* More busy lcores than CPUs. */
    bool oversubscribed = false;
    /* More busy lcores than the CPUs the main lcore floats over. Idle
     * workers sleep a moment when it holds (Pipeline::create's idle policy,
     * which has always compared against the main thread's CPUs once EAL had
     * pinned it). */
    bool crowded = false;

    /* EAL's --lcores argument, e.g. "--lcores=0@(1),1@0,2@1". */
    std::string lcores_arg() const;
};

/* The plan for `workers` workers and `writers` writers (ignored with
 * rx_only) over `cpus` (an empty list is taken as CPU 0). */
Placement plan_placement(unsigned workers, unsigned writers, bool rx_only, std::vector<int> cpus);
inline Placement plan_placement(const Options& o, std::vector<int> cpus) {
    return plan_placement(o.workers, o.writers, o.rx_only, std::move(cpus));
}

/* The CPUs this thread may run on (sched_getaffinity), in order. */
std::vector<int> allowed_cpus();

/* Receive queues per port source: one per worker, so RSS spreads them; with
 * several ports, each worker takes whole ports round-robin. */
uint16_t queues_per_port(const Options& o);

struct QueueSlot {
    uint32_t source;  // index in the sources (the interface id of the files)
    uint16_t queue;
};

/* Queues to workers: every queue of every source in order, round-robin over
 * the workers. queues_of_source[i] is source i's queue count. */
std::vector<std::vector<QueueSlot>> assign_queues(const std::vector<uint16_t>& queues_of_source,
                                                  unsigned workers);

/* Which writer drains worker w's ring: w modulo the writer count. */
inline unsigned writer_of_worker(unsigned w, unsigned writers) { return w % writers; }

}  // namespace linecap::dataplane
