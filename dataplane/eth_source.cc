/* Port sources: DPDK ethdev ports (PCI NICs and the af_xdp and null virtual
 * devices). Cold setup code plus a one-line hot rx_burst. */
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_ethdev.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <vector>

#include "dataplane/netns.hh"
#include "dataplane/source.hh"

namespace linecap::dataplane {
namespace {

/* Token bucket that paces one queue of a synthetic source. */
struct alignas(64) Pacer {
    double tokens = 0;
    uint64_t last = 0;
    std::atomic<uint64_t> missed{0};  // offered but never received: a NIC's imissed
};

/* Owns a port: stops and closes it on destruction. A port that lives in
 * another network namespace is closed from inside it (af_xdp detaches its XDP
 * program by interface index, which means something else in the root
 * namespace), and a vdev probed by capd itself is removed again. */
class PortOwner {
public:
    PortOwner(uint16_t port, NetnsFd ns, std::string vdev)
        : port_(port), ns_(std::move(ns)), vdev_(std::move(vdev)) {}
    PortOwner(const PortOwner&) = delete;
    PortOwner& operator=(const PortOwner&) = delete;
    ~PortOwner() {
        std::optional<NetnsScope> scope;
        if (ns_.valid()) {
            auto s = NetnsScope::enter(ns_);
            if (!s) {
                // Privileges already dropped (-Z): the sockets close with the
                // process; a close from the wrong namespace could do harm.
                rte_eth_dev_stop(port_);
                return;
            }
            scope.emplace(std::move(*s));
        }
        rte_eth_dev_stop(port_);
        rte_eth_dev_close(port_);
        if (!vdev_.empty()) (void)rte_eal_hotplug_remove("vdev", vdev_.c_str());
    }
    uint16_t port() const { return port_; }

private:
    uint16_t port_;
    NetnsFd ns_;
    std::string vdev_;
};

class EthSource final : public Source {
public:
    EthSource(std::unique_ptr<PortOwner> owner, std::string name, uint16_t queues,
              uint32_t ts_scale, double rate, uint16_t rx_desc)
        : owner_(std::move(owner)), port_(owner_->port()), pacers_(queues) {
        rx_desc_ = rx_desc;
        name_ = std::move(name);
        queues_ = queues;
        ts_scale_ = ts_scale;
        if (rate > 0) per_cycle_ = rate / queues / static_cast<double>(rte_get_tsc_hz());
    }
    uint16_t rx_burst(uint16_t q, rte_mbuf** pkts, uint16_t n) override {
        if (per_cycle_ > 0) {
            Pacer& p = pacers_[q];
            uint64_t now = rte_rdtsc();
            if (p.last == 0) p.last = now;
            p.tokens += static_cast<double>(now - p.last) * per_cycle_;
            p.last = now;
            // The credit a NIC ring would hold (its descriptors). Packets
            // offered beyond it while the worker was busy are lost, as on a
            // real port, and counted as imissed.
            if (p.tokens > rx_desc_) {
                double over = p.tokens - rx_desc_;
                p.missed.store(p.missed.load(std::memory_order_relaxed) +
                                   static_cast<uint64_t>(over),
                               std::memory_order_relaxed);
                p.tokens -= static_cast<uint64_t>(over);
            }
            if (p.tokens < n) n = static_cast<uint16_t>(p.tokens);
            if (n == 0) return 0;
            uint16_t got = rte_eth_rx_burst(port_, q, pkts, n);
            p.tokens -= got;
            return got;
        }
        return rte_eth_rx_burst(port_, q, pkts, n);
    }
    bool finished(uint16_t) const override { return false; }
    SourceCounters counters() const override {
        struct rte_eth_stats st;
        SourceCounters c;
        if (rte_eth_stats_get(port_, &st) == 0) {
            c.packets = st.ipackets;
            c.imissed = st.imissed;
            c.ierrors = st.ierrors;
            c.nombuf = st.rx_nombuf;
        }
        for (const Pacer& p : pacers_) c.imissed += p.missed.load(std::memory_order_relaxed);
        return c;
    }
    void stop() override { rte_eth_dev_stop(port_); }

private:
    std::unique_ptr<PortOwner> owner_;
    uint16_t port_;
    std::vector<Pacer> pacers_;
    double per_cycle_ = 0;
};

std::string errstr(int rc) { return rte_strerror(rc < 0 ? -rc : rc); }

}  // namespace

std::string eal_device_name(const SourceSpec& spec, unsigned index) {
    switch (spec.kind) {
        case SourceSpec::Kind::kPci: return spec.arg;
        case SourceSpec::Kind::kAfXdp: return "net_af_xdp" + std::to_string(index);
        case SourceSpec::Kind::kNull: return "net_null" + std::to_string(index);
        case SourceSpec::Kind::kAfPacket:  // packet_ring_source.cc
        case SourceSpec::Kind::kPcapFile: break;
    }
    return "";
}

std::string eal_device_arg(const SourceSpec& spec, unsigned index, uint16_t queues) {
    std::string name = eal_device_name(spec, index);
    switch (spec.kind) {
        case SourceSpec::Kind::kPci: return spec.arg;
        case SourceSpec::Kind::kAfXdp:
            return name + ",iface=" + spec.arg + ",queue_count=" + std::to_string(queues);
        case SourceSpec::Kind::kNull:
            return name + ",size=" + std::to_string(spec.size) + ",copy=0";
        case SourceSpec::Kind::kAfPacket:  // packet_ring_source.cc
        case SourceSpec::Kind::kPcapFile: break;
    }
    return "";
}

Result<std::unique_ptr<Source>> open_eth_source(const SourceSpec& spec, unsigned index,
                                                uint16_t queues, uint16_t rx_desc,
                                                rte_mempool* pool) {
    const std::string devname = eal_device_name(spec, index);
    // A source in another network namespace is probed here rather than by
    // rte_eal_init(), with this thread inside that namespace, and stays there
    // until the port has started: the PMD opens its sockets and looks the
    // interface up by name while probing, setting up queues (af_xdp) and
    // starting (promiscuous mode).
    NetnsFd ns;
    std::optional<NetnsScope> scope;
    std::string vdev;
    Status entered = enter_source_netns(spec, ns, scope);
    if (!entered) return make_error(entered.error());
    if (spec.in_netns()) {
        std::string arg = eal_device_arg(spec, index, queues);
        size_t comma = arg.find(',');
        int rc = rte_eal_hotplug_add("vdev", devname.c_str(),
                                     comma == std::string::npos ? "" : arg.c_str() + comma + 1);
        if (rc != 0)
            return make_error("source '" + spec.text + "': cannot open interface '" + spec.arg +
                              "' in " + ns.label() +
                              (rc < 0 && rc != -1 ? ": " + errstr(rc) : std::string()));
        vdev = devname;
    }
    uint16_t port;
    if (rte_eth_dev_get_port_by_name(devname.c_str(), &port) != 0) {
        if (!vdev.empty()) (void)rte_eal_hotplug_remove("vdev", vdev.c_str());
        return make_error("source '" + spec.text + "': no such device" +
                          (spec.kind == SourceSpec::Kind::kPci
                               ? " (is it bound to vfio-pci?)"
                               : " (does the interface exist?)"));
    }
    // From here on every return closes the port (inside its namespace, which
    // the scope above still holds).
    auto owner = std::make_unique<PortOwner>(port, std::move(ns), vdev);

    struct rte_eth_dev_info info;
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc != 0) return make_error("source '" + spec.text + "': " + errstr(rc));
    if (queues > info.max_rx_queues) queues = info.max_rx_queues;
    if (queues == 0) return make_error("source '" + spec.text + "': port has no receive queue");

    struct rte_eth_conf conf;
    std::memset(&conf, 0, sizeof(conf));
    uint64_t rss = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    // A key of repeated 0x6d5a makes the Toeplitz hash symmetric: both
    // directions of a flow reach the same worker (and its TCP table).
    std::vector<uint8_t> key(info.hash_key_size);
    for (size_t i = 0; i < key.size(); i++) key[i] = i % 2 ? 0x5a : 0x6d;
    if (queues > 1 && rss != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = rss;
        if (!key.empty()) {
            conf.rx_adv_conf.rss_conf.rss_key = key.data();
            conf.rx_adv_conf.rss_conf.rss_key_len = static_cast<uint8_t>(key.size());
        }
    }
    // Scatter lets jumbo frames arrive as chained mbufs where the port can.
    if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_SCATTER)
        conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_SCATTER;

    // Ports that cannot run receive-only get one transmit queue they never use.
    uint16_t txq = info.max_tx_queues > 0 ? 1 : 0;
    if (spec.kind == SourceSpec::Kind::kAfXdp) txq = queues;  // it pairs queues
    rc = rte_eth_dev_configure(port, queues, txq, &conf);
    if (rc != 0) return make_error("source '" + spec.text + "': configure: " + errstr(rc));
    uint16_t nb_rxd = rx_desc, nb_txd = 512;
    (void)rte_eth_dev_adjust_nb_rx_tx_desc(port, &nb_rxd, &nb_txd);
    int socket = rte_eth_dev_socket_id(port);
    for (uint16_t q = 0; q < queues; q++) {
        rc = rte_eth_rx_queue_setup(port, q, nb_rxd, socket < 0 ? SOCKET_ID_ANY : socket, nullptr,
                                    pool);
        if (rc != 0) return make_error("source '" + spec.text + "': rx queue: " + errstr(rc));
    }
    for (uint16_t q = 0; q < txq; q++) {
        rc = rte_eth_tx_queue_setup(port, q, nb_txd, socket < 0 ? SOCKET_ID_ANY : socket, nullptr);
        if (rc != 0) return make_error("source '" + spec.text + "': tx queue: " + errstr(rc));
    }
    rc = rte_eth_dev_start(port);
    if (rc != 0) return make_error("source '" + spec.text + "': start: " + errstr(rc));
    if (spec.promisc) (void)rte_eth_promiscuous_enable(port);  // -p: left as it is

    // The only port whose timestamp dynfield we can vouch for is net_pcap's
    // (microseconds). Other ports are stamped from the TSC at receive.
    uint32_t ts_scale = std::strcmp(info.driver_name, "net_pcap") == 0 ? 1000 : 0;
    auto src = std::make_unique<EthSource>(std::move(owner), spec.text, queues, ts_scale,
                                           spec.rate_pps, nb_rxd);
    return std::unique_ptr<Source>(std::move(src));
}

}  // namespace linecap::dataplane
