#include "dataplane/eal.hh"

#include <sched.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "dataplane/source.hh"

namespace linecap::dataplane {

unsigned long free_hugepages() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    unsigned long v;
    while (in >> key >> v) {
        if (key == "HugePages_Free:") return v;
        in.ignore(256, '\n');
    }
    return 0;
}

uint16_t queues_per_port(const Options& o) {
    unsigned ports = 0;
    for (const auto& s : o.sources)
        if (s.kind != SourceSpec::Kind::kPcapFile) ports++;
    // With several ports, each worker takes whole ports round-robin; a single
    // port gets one queue per worker, spread by RSS (or fanout).
    if (ports <= 1) return static_cast<uint16_t>(o.workers);
    return static_cast<uint16_t>(o.workers / ports > 0 ? o.workers / ports : 1);
}

EalPlan plan_eal(const Options& o, size_t memory_mb) {
    EalPlan p;
    p.args.push_back("capd");

    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set)) cpus.push_back(c);
    if (cpus.empty()) cpus.push_back(0);

    unsigned busy = o.rx_only ? o.workers : o.workers + o.writers;
    p.oversubscribed = busy > cpus.size();
    p.worker_lcore0 = 1;
    p.writer_lcore0 = 1 + o.workers;

    // Busy lcores get CPUs in order, wrapping when there are fewer CPUs than
    // lcores. The main lcore mostly sleeps but wakes every few milliseconds:
    // it floats over the CPUs no worker polls on (the writers' CPUs), so its
    // wake-ups never preempt a worker; only when workers take every CPU does
    // it float over all of them.
    size_t worker_cpus = o.workers < cpus.size() ? o.workers : cpus.size();
    size_t first_free = worker_cpus < cpus.size() ? worker_cpus : 0;
    std::ostringstream main_set;
    main_set << "(";
    for (size_t i = first_free; i < cpus.size(); i++)
        main_set << (i > first_free ? "," : "") << cpus[i];
    main_set << ")";
    std::ostringstream map;
    map << "0@" << main_set.str();
    for (unsigned l = 1; l <= busy; l++) map << "," << l << "@" << cpus[(l - 1) % cpus.size()];
    p.args.push_back("--lcores=" + map.str());

    p.hugepages = free_hugepages() * 2 >= memory_mb;
    if (!p.hugepages) {
        p.args.push_back("--no-huge");
        p.args.push_back("-m");
        p.args.push_back(std::to_string(memory_mb));
    }
    // No shared files in /var/run/dpdk, so several capd can run at once.
    // (--no-huge implies legacy memory, which --in-memory refuses.)
    if (p.hugepages) {
        p.args.push_back("--in-memory");
    } else {
        p.args.push_back("--no-shconf");
        p.args.push_back("--file-prefix=capd" + std::to_string(getpid()));
    }
    p.args.push_back("--no-telemetry");
    // DPDK's own messages would add lines to capd's one-line errors; capd
    // reports every failure itself. --eal '--log-level=N' brings them back.
    p.args.push_back("--log-level=*:critical");

    bool pci = false;
    uint16_t q = queues_per_port(o);
    for (unsigned i = 0; i < o.sources.size(); i++) {
        const SourceSpec& s = o.sources[i];
        // capd reads these itself (pcap_source.cc, packet_ring_source.cc).
        if (s.kind == SourceSpec::Kind::kPcapFile || s.kind == SourceSpec::Kind::kAfPacket)
            continue;
        // Probed later (open_eth_source): from inside its namespace, or
        // after --xdp-generic has attached the XDP program.
        if (s.in_netns() || s.kind == SourceSpec::Kind::kAfXdp) continue;
        if (s.kind == SourceSpec::Kind::kPci) {
            pci = true;
            p.args.push_back("-a");
        } else {
            p.args.push_back("--vdev");
        }
        p.args.push_back(eal_device_arg(s, i, q));
    }
    if (!pci) p.args.push_back("--no-pci");

    std::istringstream extra(o.eal_extra);
    std::string w;
    while (extra >> w) p.args.push_back(w);
    return p;
}

}  // namespace linecap::dataplane
