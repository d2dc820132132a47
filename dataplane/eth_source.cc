/* Port sources: DPDK ethdev ports (PCI NICs and the af_xdp and null virtual
 * devices). Cold setup code plus a one-line hot rx_burst.
 *
 * af_xdp: net_af_xdp attaches an XDP program to the interface and, when the
 * port closes, detaches whatever program the interface has. So an interface
 * is checked before EAL probes it (check_xdp_source): a program of someone
 * else's is refused rather than replaced and then removed, and a queue count
 * the interface cannot give is named. Promiscuous mode is held by an
 * InterfaceWatch socket, which the kernel releases when capd exits, however
 * it exits; net_af_xdp's own switch sets IFF_PROMISC and leaves it set. */
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_ethdev.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "dataplane/netns.hh"
#include "dataplane/null_flows.hh"
#include "dataplane/source.hh"

namespace linecap::dataplane {
namespace {

/* Token bucket that paces one queue of a synthetic source. */
struct alignas(64) Pacer {
    double tokens = 0;
    uint64_t last = 0;
    std::atomic<uint64_t> missed{0};  // offered but never received: a NIC's imissed
};

/* Where libxdp's AF_XDP program may be: the directory libxdp is told to use,
 * then the places Debian and upstream install it. */
std::string xsk_object_path() {
    std::vector<std::string> dirs;
    if (const char* env = std::getenv("LIBXDP_OBJECT_PATH")) dirs.emplace_back(env);
    for (const char* d : {"/usr/lib/x86_64-linux-gnu/bpf", "/usr/lib/aarch64-linux-gnu/bpf",
                          "/usr/lib/bpf", "/usr/local/lib/bpf"})
        dirs.emplace_back(d);
    for (const auto& d : dirs) {
        std::string p = d + "/xsk_def_xdp_prog.o";
        if (access(p.c_str(), R_OK) == 0) return p;
    }
    return "";
}

/* --xdp-generic: libxdp's AF_XDP program attached to an interface in generic
 * (SKB) mode before net_af_xdp probes it. net_af_xdp (through libxdp) takes
 * over a program of that name already attached, as after kill -9, but it
 * always asks for the default mode itself and detaches in that mode, so the
 * generic attachment is capd's to undo. Must be created and destroyed in the
 * interface's namespace. */
class GenericXdp {
public:
    GenericXdp(unsigned ifindex, uint32_t id) : ifindex_(ifindex), id_(id) {}
    GenericXdp(const GenericXdp&) = delete;
    GenericXdp& operator=(const GenericXdp&) = delete;
    ~GenericXdp() {
        if (id_ == 0) return;
        // Only the program capd attached: the interface may have been made
        // again since, with another program.
        uint32_t now = 0;
        if (bpf_xdp_query_id(static_cast<int>(ifindex_), XDP_FLAGS_SKB_MODE, &now) == 0 &&
            now == id_)
            (void)bpf_xdp_detach(static_cast<int>(ifindex_), XDP_FLAGS_SKB_MODE, nullptr);
    }
    /* Leaves the program attached (when the namespace cannot be entered). */
    void forget() { id_ = 0; }

    static Result<std::unique_ptr<GenericXdp>> attach(const std::string& ifname) {
        unsigned ifindex = if_nametoindex(ifname.c_str());
        if (ifindex == 0) return make_error("no such interface");
        std::string path = xsk_object_path();
        if (path.empty())
            return make_error(
                "--xdp-generic: libxdp's xsk_def_xdp_prog.o not found (package "
                "libxdp1; LIBXDP_OBJECT_PATH names its directory)");
        bpf_object* obj = bpf_object__open_file(path.c_str(), nullptr);
        if (!obj) return make_error("--xdp-generic: cannot open " + path);
        std::unique_ptr<bpf_object, void (*)(bpf_object*)> own(obj, bpf_object__close);
        bpf_program* prog = bpf_object__find_program_by_name(obj, "xsk_def_prog");
        if (!prog) return make_error("--xdp-generic: " + path + " has no xsk_def_prog");
        int err = bpf_object__load(obj);
        if (err)
            return make_error("--xdp-generic: cannot load " + path + ": " + std::strerror(-err));
        err = bpf_xdp_attach(static_cast<int>(ifindex), bpf_program__fd(prog),
                             XDP_FLAGS_SKB_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST, nullptr);
        if (err)
            return make_error("cannot attach an XDP program in generic mode: " +
                              std::string(std::strerror(-err)));
        uint32_t id = 0;
        (void)bpf_xdp_query_id(static_cast<int>(ifindex), XDP_FLAGS_SKB_MODE, &id);
        // The attachment keeps the program and its map once the object closes.
        return std::make_unique<GenericXdp>(ifindex, id);
    }

private:
    unsigned ifindex_;
    uint32_t id_;
};

/* Owns a port: stops and closes it on destruction. A port that lives in
 * another network namespace is closed from inside it (af_xdp detaches its XDP
 * program by interface index, which means something else in the root
 * namespace), and a vdev probed by capd itself is removed again. */
class PortOwner {
public:
    PortOwner(uint16_t port, NetnsFd ns, std::string vdev, std::unique_ptr<GenericXdp> xdp)
        : port_(port), ns_(std::move(ns)), vdev_(std::move(vdev)), xdp_(std::move(xdp)) {}
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
                if (xdp_) xdp_->forget();
                return;
            }
            scope.emplace(std::move(*s));
        }
        rte_eth_dev_stop(port_);
        rte_eth_dev_close(port_);
        if (!vdev_.empty()) (void)rte_eal_hotplug_remove("vdev", vdev_.c_str());
        xdp_.reset();  // still inside the namespace
    }
    uint16_t port() const { return port_; }

private:
    uint16_t port_;
    NetnsFd ns_;
    std::string vdev_;
    std::unique_ptr<GenericXdp> xdp_;
};

class EthSource final : public Source {
public:
    EthSource(std::unique_ptr<PortOwner> owner, std::string name, uint16_t queues,
              uint32_t ts_scale, double rate, uint16_t rx_desc, InterfaceWatch watch,
              uint32_t flows, bool scatter, bool both)
        : owner_(std::move(owner)),
          port_(owner_->port()),
          pacers_(queues),
          cursors_(flows ? queues : 0),
          watch_(std::move(watch)) {
        for (uint16_t q = 0; q < cursors_.size(); q++)
            cursors_[q].init(q, queues, flows, scatter, both);
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
                p.missed.store(
                    p.missed.load(std::memory_order_relaxed) + static_cast<uint64_t>(over),
                    std::memory_order_relaxed);
                p.tokens -= static_cast<uint64_t>(over);
            }
            if (p.tokens < n) n = static_cast<uint16_t>(p.tokens);
            if (n == 0) return 0;
            uint16_t got = rte_eth_rx_burst(port_, q, pkts, n);
            p.tokens -= got;
            if (!cursors_.empty()) rewrite_flows(q, pkts, got);
            return got;
        }
        uint16_t got = rte_eth_rx_burst(port_, q, pkts, n);
        if (!cursors_.empty()) rewrite_flows(q, pkts, got);
        return got;
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
    LinkState link_state() const override { return watch_.state(); }

private:
    // null:SIZE,flows=N (null_flows.hh): a frame that is not IPv4 TCP/UDP
    // passes as it is.
    void rewrite_flows(uint16_t q, rte_mbuf** pkts, uint16_t n) {
        NullFlowCursor& c = cursors_[q];
        for (uint16_t i = 0; i < n; i++)
            (void)null_flow_rewrite(rte_pktmbuf_mtod(pkts[i], uint8_t*), pkts[i]->data_len,
                                    c.take(), c.reverse());
    }

    std::unique_ptr<PortOwner> owner_;
    uint16_t port_;
    std::vector<Pacer> pacers_;
    std::vector<NullFlowCursor> cursors_;  // per queue; empty unless flows=N
    double per_cycle_ = 0;
    InterfaceWatch watch_;  // af_xdp: deletion, and promiscuous mode
};

std::string errstr(int rc) { return rte_strerror(rc < 0 ? -rc : rc); }

/* Receive queues an AF_XDP socket may bind on `iface`, counted as
 * net_af_xdp counts them: the combined channels (`ethtool -l`), or 1 for a
 * driver that reports none (veth, lo). -1 when the interface cannot say. */
int xdp_queues(const std::string& iface) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    ethtool_channels ch;
    std::memset(&ch, 0, sizeof(ch));
    ch.cmd = ETHTOOL_GCHANNELS;
    ifreq ifr;
    std::memset(&ifr, 0, sizeof(ifr));
    std::strncpy(ifr.ifr_name, iface.c_str(), IFNAMSIZ - 1);
    ifr.ifr_data = reinterpret_cast<char*>(&ch);
    int rc = ioctl(fd, SIOCETHTOOL, &ifr);
    int err = errno;
    ::close(fd);
    if (rc != 0) return err == EOPNOTSUPP ? 1 : -1;
    return ch.max_combined == 0 ? 1 : static_cast<int>(ch.combined_count);
}

/* The XDP program attached to ifindex (any mode): its id, 0 for none. */
uint32_t attached_xdp_program(unsigned ifindex, std::string& name) {
    LIBBPF_OPTS(bpf_xdp_query_opts, q);
    if (bpf_xdp_query(static_cast<int>(ifindex), 0, &q) != 0) return 0;
    uint32_t id = q.drv_prog_id ? q.drv_prog_id : q.skb_prog_id ? q.skb_prog_id : q.hw_prog_id;
    if (id == 0) id = q.prog_id;
    if (id == 0) return 0;
    int fd = bpf_prog_get_fd_by_id(id);
    if (fd >= 0) {
        bpf_prog_info info;
        std::memset(&info, 0, sizeof(info));
        uint32_t len = sizeof(info);
        if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) name = info.name;
        ::close(fd);
    }
    return id;
}

// The program libxdp loads for AF_XDP sockets when the interface has none.
constexpr const char* kXskProgram = "xsk_def_prog";

}  // namespace

Result<std::string> check_xdp_source(const SourceSpec& spec, uint16_t queues, unsigned workers) {
    NetnsFd ns;
    std::optional<NetnsScope> scope;
    Status entered = enter_source_netns(spec, ns, scope);
    if (!entered) return make_error(entered.error());
    const std::string& ifname = spec.arg;
    unsigned ifindex = if_nametoindex(ifname.c_str());
    if (ifindex == 0)
        return make_error("source '" + spec.text + "': no such interface" +
                          (spec.in_netns() ? " '" + ifname + "' in " + ns.label() : std::string()));
    int have = xdp_queues(ifname);
    if (have >= 0 && have < queues) {
        std::string fix = queues == workers ? "use --workers " + std::to_string(have)
                                            : std::string("use fewer workers");
        return make_error("source '" + spec.text + "' has " + std::to_string(have) +
                          " receive queue" + (have == 1 ? "" : "s") + "; --workers " +
                          std::to_string(workers) + " needs " + std::to_string(queues) +
                          " (af_xdp binds one queue per worker): " + fix +
                          ", or give the interface more combined channels (ethtool -L)");
    }
    std::string prog;
    uint32_t id = attached_xdp_program(ifindex, prog);
    if (id == 0) return std::string();
    // The command that removes it, run from the root namespace.
    std::string ip = !spec.netns.empty() ? "ip -n " + spec.netns + " link"
                     : spec.netns_pid > 0
                         ? "nsenter -t " + std::to_string(spec.netns_pid) + " -n ip link"
                         : std::string("ip link");
    if (prog != kXskProgram)
        return make_error("source '" + spec.text + "': interface '" + ifname +
                          "' already has an XDP program attached ('" + prog + "', id " +
                          std::to_string(id) +
                          "); af_xdp would replace it and remove it at "
                          "exit. If nothing needs it, remove it with `" +
                          ip + " set dev " + ifname + " xdp off`");
    // A killed AF_XDP reader (capd after kill -9, say) leaves libxdp's
    // program behind. libxdp takes it over, and capd detaches it at exit.
    return "source '" + spec.text + "': interface '" + ifname + "' still has the AF_XDP program " +
           prog + " (id " + std::to_string(id) +
           ") of an earlier reader (a capd stopped by kill "
           "-9?): capd uses it and detaches it at exit (while another AF_XDP program still "
           "reads this interface, stop capd; `" +
           ip + " set dev " + ifname + " xdp off` removes the program)";
}

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
                                                rte_mempool* pool, bool xdp_generic) {
    const std::string devname = eal_device_name(spec, index);
    // af_xdp sources and sources in another network namespace are probed
    // here rather than by rte_eal_init(): --xdp-generic attaches its program
    // first, and a namespaced source needs this thread inside its namespace
    // until the port has started, since the PMD opens its sockets and looks
    // the interface up by name while probing, setting up queues (af_xdp) and
    // starting (promiscuous mode).
    NetnsFd ns;
    std::optional<NetnsScope> scope;
    std::string vdev;
    std::unique_ptr<GenericXdp> generic;  // destroyed, on error, inside `scope`
    Status entered = enter_source_netns(spec, ns, scope);
    if (!entered) return make_error(entered.error());
    const bool xdp = spec.kind == SourceSpec::Kind::kAfXdp;
    const std::string where = spec.in_netns() ? " in " + ns.label() : std::string();
    if (xdp && xdp_generic) {
        auto g = GenericXdp::attach(spec.arg);
        if (!g) return make_error("source '" + spec.text + "': " + g.error());
        generic = std::move(*g);
    }
    if (spec.in_netns() || xdp) {
        std::string arg = eal_device_arg(spec, index, queues);
        size_t comma = arg.find(',');
        int rc = rte_eal_hotplug_add("vdev", devname.c_str(),
                                     comma == std::string::npos ? "" : arg.c_str() + comma + 1);
        if (rc != 0)
            return make_error("source '" + spec.text + "': cannot open interface '" + spec.arg +
                              "'" + where +
                              (rc < 0 && rc != -1 ? ": " + errstr(rc) : std::string()));
        vdev = devname;
    }
    uint16_t port;
    if (rte_eth_dev_get_port_by_name(devname.c_str(), &port) != 0) {
        if (!vdev.empty()) (void)rte_eal_hotplug_remove("vdev", vdev.c_str());
        return make_error("source '" + spec.text + "': no such device" +
                          (spec.kind == SourceSpec::Kind::kPci ? " (is it bound to vfio-pci?)"
                                                               : " (does the interface exist?)"));
    }
    // From here on every return closes the port (inside its namespace, which
    // the scope above still holds).
    auto owner = std::make_unique<PortOwner>(port, std::move(ns), vdev, std::move(generic));
    InterfaceWatch watch;
    if (spec.kind == SourceSpec::Kind::kAfXdp) {
        auto w = InterfaceWatch::open(spec.arg, spec.promisc);  // -p: no
        if (!w) return make_error("source '" + spec.text + "': " + w.error());
        watch = std::move(*w);
    }

    struct rte_eth_dev_info info;
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc != 0) return make_error("source '" + spec.text + "': " + errstr(rc));
    if (queues > info.max_rx_queues) queues = info.max_rx_queues;
    if (queues == 0) return make_error("source '" + spec.text + "': port has no receive queue");

    struct rte_eth_conf conf;
    std::memset(&conf, 0, sizeof(conf));
    uint64_t rss =
        (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
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
        if (rc != 0)
            return make_error("source '" + spec.text + "': rx queue: " + errstr(rc) +
                              (xdp && !xdp_generic
                                   ? " (an interface without native XDP, such as lo, needs "
                                     "--xdp-generic)"
                                   : std::string()));
    }
    for (uint16_t q = 0; q < txq; q++) {
        rc = rte_eth_tx_queue_setup(port, q, nb_txd, socket < 0 ? SOCKET_ID_ANY : socket, nullptr);
        if (rc != 0) return make_error("source '" + spec.text + "': tx queue: " + errstr(rc));
    }
    rc = rte_eth_dev_start(port);
    if (rc != 0) return make_error("source '" + spec.text + "': start: " + errstr(rc));
    // -p: left as it is. af_xdp: the watch holds it (given back at exit).
    if (spec.promisc && spec.kind != SourceSpec::Kind::kAfXdp)
        (void)rte_eth_promiscuous_enable(port);

    // The only port whose timestamp dynfield we can vouch for is net_pcap's
    // (microseconds). Other ports are stamped from the TSC at receive.
    uint32_t ts_scale = std::strcmp(info.driver_name, "net_pcap") == 0 ? 1000 : 0;
    auto src = std::make_unique<EthSource>(
        std::move(owner), spec.text, queues, ts_scale, spec.rate_pps, nb_rxd, std::move(watch),
        spec.kind == SourceSpec::Kind::kNull ? spec.flows : 0, spec.flow_scatter, spec.flow_both);
    return std::unique_ptr<Source>(std::move(src));
}

}  // namespace linecap::dataplane
