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
    /* More busy lcores than the CPUs the main lcore floats over: idle
     * workers then sleep a moment (idle_sleep_us()). The pipeline has always
     * compared with the main thread's CPUs once EAL had pinned it, so 1
     * worker and 1 writer on 2 CPUs are crowded. */
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

/* How long a worker sleeps after 64 empty polls, in us (0: it spins), from
 * the kinds of the sources of its queues. A worker that would spin on a CPU
 * someone else needs sleeps for a moment when its queues are empty: when the
 * plan is crowded, and when it reads only kernel interfaces (af_packet,
 * af_xdp), whose frames the kernel receives on other CPUs, often the
 * sender's own on a small host, and keeps in the socket's ring meanwhile. An
 * af_packet ring hands over whole blocks (at least every 4 ms), so its
 * workers sleep longer: a quarter of the time the ring of
 * `packet_ring_frames` lasts at 1 GB/s (0.512 us for each 2 KiB frame), from
 * 20 us to 1 ms. On a 2-vCPU VM a paced veth sender went from 0.66 to
 * 0.75-0.78 Mpps with the 1 ms sleep. --busy-poll: always 0. */
unsigned idle_sleep_us(const std::vector<SourceSpec::Kind>& kinds, bool busy_poll, bool crowded,
                       uint32_t packet_ring_frames);

/* Which writer drains worker w's ring: w modulo the writer count. */
inline unsigned writer_of_worker(unsigned w, unsigned writers) { return w % writers; }

}  // namespace linecap::dataplane
