#include "dataplane/placement.hh"

#include <sched.h>

#include <algorithm>
#include <sstream>

namespace linecap::dataplane {

Placement plan_placement(unsigned workers, unsigned writers, bool rx_only, std::vector<int> cpus) {
    Placement p;
    if (cpus.empty()) cpus.push_back(0);
    p.cpus = std::move(cpus);
    const size_t n = p.cpus.size();
    unsigned busy = rx_only ? workers : workers + writers;
    for (unsigned i = 0; i < workers; i++) p.worker_lcores.push_back(1 + i);
    if (!rx_only)
        for (unsigned i = 0; i < writers; i++) p.writer_lcores.push_back(1 + workers + i);

    size_t worker_cpus = workers < n ? workers : n;
    size_t first_free = worker_cpus < n ? worker_cpus : 0;
    p.main_cpus.assign(p.cpus.begin() + static_cast<long>(first_free), p.cpus.end());
    p.lcore_cpu.push_back(p.main_cpus.front());
    for (unsigned l = 1; l <= busy; l++) p.lcore_cpu.push_back(p.cpus[(l - 1) % n]);
    p.oversubscribed = busy > n;
    p.crowded = busy > p.main_cpus.size();
    return p;
}

std::string Placement::lcores_arg() const {
    std::ostringstream map;
    map << "--lcores=0@(";
    for (size_t i = 0; i < main_cpus.size(); i++) map << (i ? "," : "") << main_cpus[i];
    map << ")";
    for (size_t l = 1; l < lcore_cpu.size(); l++) map << "," << l << "@" << lcore_cpu[l];
    return map.str();
}

std::vector<int> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &set)) cpus.push_back(c);
    return cpus;
}

uint16_t queues_per_port(const Options& o) {
    unsigned ports = 0;
    for (const auto& s : o.sources)
        if (s.kind != SourceSpec::Kind::kPcapFile) ports++;
    if (ports <= 1) return static_cast<uint16_t>(o.workers);
    return static_cast<uint16_t>(o.workers / ports > 0 ? o.workers / ports : 1);
}

std::vector<std::vector<QueueSlot>> assign_queues(const std::vector<uint16_t>& queues_of_source,
                                                  unsigned workers) {
    std::vector<std::vector<QueueSlot>> w(workers);
    if (workers == 0) return w;
    unsigned k = 0;
    for (uint32_t i = 0; i < queues_of_source.size(); i++)
        for (uint16_t q = 0; q < queues_of_source[i]; q++, k++)
            w[k % workers].push_back(QueueSlot{i, q});
    return w;
}

unsigned idle_sleep_us(const std::vector<SourceSpec::Kind>& kinds, bool busy_poll, bool crowded,
                       uint32_t packet_ring_frames) {
    if (busy_poll) return 0;
    auto every = [&](auto pred) {
        return !kinds.empty() && std::all_of(kinds.begin(), kinds.end(), pred);
    };
    using K = SourceSpec::Kind;
    if (every([](K k) { return k == K::kAfPacket; }))
        return std::clamp(packet_ring_frames * 512u / 1000u, 20u, 1000u);
    if (crowded || every([](K k) { return k == K::kAfPacket || k == K::kAfXdp; })) return 20;
    return 0;
}

}  // namespace linecap::dataplane
