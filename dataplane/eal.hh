/* Building the EAL command line from capd's options: hugepages when some are
 * free (--no-huge otherwise), one --vdev/-a per port source, and an lcore map
 * that puts the main (control) lcore beside the workers and writers. */
#pragma once

#include <string>
#include <vector>

#include "dataplane/options.hh"

namespace linecap::dataplane {

struct EalPlan {
    std::vector<std::string> args;
    bool hugepages = false;
    bool oversubscribed = false;  // more busy lcores than CPUs
    unsigned worker_lcore0 = 1;   // workers are lcores 1..W
    unsigned writer_lcore0 = 0;   // writers follow
};

/* Receive queues per port source: one per worker, so RSS spreads them. */
uint16_t queues_per_port(const Options& o);

EalPlan plan_eal(const Options& o, size_t memory_mb);

/* Free 2 MiB/1 GiB hugepages on this machine (from /proc/meminfo). */
unsigned long free_hugepages();

}  // namespace linecap::dataplane
