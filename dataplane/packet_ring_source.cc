/* af_packet:IFACE: capd's own TPACKET_V3 receive ring, one socket per queue.
 *
 * DPDK's net_af_packet uses TPACKET_V2, a ring of one frame per packet whose
 * status word the kernel reads and the reader writes for every packet. On a
 * veth pair that cache line crosses CPUs once per packet in the sender's own
 * context: perf put 14 % of the sender's CPU in packet_lookup_frame, and a
 * paced sender managed 0.65 Mpps against 0.88 Mpps with tcpdump (TPACKET_V3)
 * on the same link. With V3 the kernel fills whole blocks and the reader
 * hands a block back once, as tcpdump does; packets also carry the kernel's
 * receive timestamp, in nanoseconds.
 *
 * Several queues join one PACKET_FANOUT_HASH group, so each flow stays on one
 * worker. Frames the kernel could not place because the ring was full are
 * counted from PACKET_STATISTICS (tp_drops) as imissed. A VLAN tag the
 * kernel took out of the frame is put back, and on a loopback interface,
 * where the kernel shows every packet twice (sent and received), the sent
 * copy is skipped, both as libpcap does.
 *
 * tcpdump's options, with libpcap's meaning: -p leaves the interface out of
 * promiscuous mode; -Q in/out skips the packets the kernel marks as sent
 * (PACKET_OUTGOING) or those it does not (for -Q in the kernel is also asked
 * to leave sent packets out of the ring). af_packet:any (-i any) reads every
 * interface of the namespace from one unbound SOCK_DGRAM socket per queue,
 * whose frames start at the network header, and puts a LINUX_SLL2 header in
 * front of each (protocol, interface index, hardware type, packet type and
 * address from the kernel's sockaddr_ll), as libpcap's any device does; it is
 * never promiscuous, and its VLAN tags stay out of the frame.
 *
 * A deleted interface is seen by link_state(), through an InterfaceWatch,
 * not by the workers.
 *
 * Setup, counters(), stop() and link_state(): control thread. rx_burst(q):
 * the worker that owns queue q.
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "dataplane/netns.hh"
#include "dataplane/source.hh"

namespace linecap::dataplane {
namespace {

constexpr uint32_t kFrameBytes = 2048;         // the unit --rx-desc counts
constexpr uint32_t kMaxBlockBytes = 1u << 20;  // holds a 64 KiB GSO frame
constexpr uint32_t kMinBlocks = 4;
constexpr unsigned kRetireMs = 4;        // a part-filled block reaches the reader after this
constexpr uint16_t kLinkTypeSll2 = 276;  // DLT_LINUX_SLL2
constexpr uint32_t kSll2Bytes = 20;      // its header

/* Block geometry for a ring of `frames` x 2048 bytes: blocks of a power of
 * two pages, at most 1 MiB, and at least four of them. */
struct Geometry {
    uint32_t block_bytes;
    uint32_t blocks;
};

Geometry geometry(uint32_t frames) {
    uint64_t total = uint64_t(frames) * kFrameBytes;
    uint32_t page = static_cast<uint32_t>(sysconf(_SC_PAGESIZE));
    uint32_t block = kMaxBlockBytes;
    while (block > page && total / block < kMinBlocks) block >>= 1;
    uint32_t n = static_cast<uint32_t>(total / block);
    return {block, n < kMinBlocks ? kMinBlocks : n};
}

struct alignas(64) Ring {
    int fd = -1;
    uint8_t* map = nullptr;
    size_t map_len = 0;
    uint32_t block_bytes = 0;
    uint32_t blocks = 0;
    // Worker side: the block being read and the next packet in it.
    uint32_t next_block = 0;
    tpacket_block_desc* cur = nullptr;
    uint32_t left = 0;
    const uint8_t* pkt = nullptr;
    std::atomic<uint64_t> packets{0};
    std::atomic<uint64_t> nombuf{0};

    tpacket_block_desc* block(uint32_t i) const {
        return reinterpret_cast<tpacket_block_desc*>(map + size_t(i) * block_bytes);
    }
};

std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

class PacketRingSource final : public Source {
public:
    PacketRingSource(std::string name, uint16_t queues, rte_mempool* pool, const MbufFields& fields)
        : rings_(queues), pool_(pool), fields_(fields) {
        name_ = std::move(name);
        queues_ = queues;
        source_ts_ = true;
    }
    ~PacketRingSource() override { close_all(); }

    Status open(const SourceSpec& spec, uint32_t frames, uint16_t fanout_id) {
        const std::string& iface = spec.arg;
        cooked_ = spec.any_interface();
        unsigned ifindex = 0;
        if (cooked_) {
            linktype_ = kLinkTypeSll2;
            lo_ifindex_ = if_nametoindex("lo");  // 0 when there is none
        } else {
            ifindex = if_nametoindex(iface.c_str());
            if (ifindex == 0) return make_error(sys_error("interface '" + iface + "'"));
            ifreq ifr;
            std::memset(&ifr, 0, sizeof(ifr));
            std::strncpy(ifr.ifr_name, iface.c_str(), IFNAMSIZ - 1);
            int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
            if (fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 && (ifr.ifr_flags & IFF_LOOPBACK))
                lo_ifindex_ = ifindex;
            if (fd >= 0) ::close(fd);
        }
        want_in_ = spec.direction != Direction::kOut;
        want_out_ = spec.direction != Direction::kIn;
        check_ = lo_ifindex_ != 0 || !want_in_ || !want_out_;
        Geometry g = geometry(frames);
        rx_desc_ = static_cast<uint16_t>(uint64_t(g.block_bytes) * g.blocks / kFrameBytes);
        for (Ring& r : rings_) {
            r.fd = socket(AF_PACKET, (cooked_ ? SOCK_DGRAM : SOCK_RAW) | SOCK_CLOEXEC,
                          htons(ETH_P_ALL));
            if (r.fd < 0) return make_error(sys_error("AF_PACKET socket"));
            int v = TPACKET_V3;
            if (setsockopt(r.fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) != 0)
                return make_error(sys_error("TPACKET_V3"));
            tpacket_req3 req;
            std::memset(&req, 0, sizeof(req));
            req.tp_block_size = g.block_bytes;
            req.tp_block_nr = g.blocks;
            req.tp_frame_size = kFrameBytes;
            req.tp_frame_nr = g.block_bytes / kFrameBytes * g.blocks;
            req.tp_retire_blk_tov = kRetireMs;
            if (setsockopt(r.fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) != 0)
                return make_error(sys_error("receive ring of " + std::to_string(g.blocks) + " x " +
                                            std::to_string(g.block_bytes >> 10) + " KiB"));
            r.block_bytes = g.block_bytes;
            r.blocks = g.blocks;
            r.map_len = size_t(g.block_bytes) * g.blocks;
            void* m = mmap(nullptr, r.map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd, 0);
            if (m == MAP_FAILED) return make_error(sys_error("mmap of the receive ring"));
            r.map = static_cast<uint8_t*>(m);
#ifdef PACKET_IGNORE_OUTGOING
            // -Q in: sent packets take no room in the ring (Linux 4.20; the
            // reader skips them anyway where the kernel cannot).
            int ignore = 1;
            if (!want_out_)
                (void)setsockopt(r.fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &ignore, sizeof(ignore));
#endif
            if (!cooked_) {  // any: unbound, every interface
                sockaddr_ll sll;
                std::memset(&sll, 0, sizeof(sll));
                sll.sll_family = AF_PACKET;
                sll.sll_protocol = htons(ETH_P_ALL);
                sll.sll_ifindex = static_cast<int>(ifindex);
                if (bind(r.fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0)
                    return make_error(sys_error("bind to '" + iface + "'"));
            }
            if (!cooked_ && spec.promisc) {
                packet_mreq mr;
                std::memset(&mr, 0, sizeof(mr));
                mr.mr_ifindex = static_cast<int>(ifindex);
                mr.mr_type = PACKET_MR_PROMISC;  // dropped by the kernel when the socket closes
                if (setsockopt(r.fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) != 0)
                    return make_error(sys_error("promiscuous mode on '" + iface + "'"));
            }
            if (queues_ > 1) {
                int arg = fanout_id | (PACKET_FANOUT_HASH << 16);
                if (setsockopt(r.fd, SOL_PACKET, PACKET_FANOUT, &arg, sizeof(arg)) != 0)
                    return make_error(sys_error("PACKET_FANOUT"));
            }
        }
        (void)kernel_drops();  // frames before the ring was read are not ours
        kernel_dropped_ = 0;
        // The rings hold promiscuous mode; the watch only tells deletion.
        // (any: interfaces come and go; there is no one to watch.)
        if (!cooked_) {
            auto watch = InterfaceWatch::open(iface, false);
            if (!watch) return make_error(watch.error());
            watch_ = std::move(*watch);
        }
        return Status::success();
    }

    uint16_t rx_burst(uint16_t q, rte_mbuf** pkts, uint16_t n) override {
        Ring& r = rings_[q];
        uint16_t got = 0;
        while (got < n) {
            if (!r.cur) {
                tpacket_block_desc* b = r.block(r.next_block);
                if (!(__atomic_load_n(&b->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
                    break;
                r.cur = b;
                r.left = b->hdr.bh1.num_pkts;
                r.pkt = reinterpret_cast<const uint8_t*>(b) + b->hdr.bh1.offset_to_first_pkt;
            }
            if (r.left > 0 && check_ && skip(r.pkt)) {
                r.pkt += reinterpret_cast<const tpacket3_hdr*>(r.pkt)->tp_next_offset;
                r.left--;
            } else if (r.left > 0) {
                const auto* h = reinterpret_cast<const tpacket3_hdr*>(r.pkt);
                rte_mbuf* m = to_mbuf(h);
                if (!m) {
                    // The frame stays in the ring: the next call retries it.
                    r.nombuf.store(r.nombuf.load(std::memory_order_relaxed) + 1,
                                   std::memory_order_relaxed);
                    break;
                }
                pkts[got++] = m;
                r.pkt += h->tp_next_offset;
                r.left--;
            }
            if (r.left == 0) {
                __atomic_store_n(&r.cur->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
                r.cur = nullptr;
                r.next_block = r.next_block + 1 == r.blocks ? 0 : r.next_block + 1;
            }
        }
        if (got)
            r.packets.store(r.packets.load(std::memory_order_relaxed) + got,
                            std::memory_order_relaxed);
        return got;
    }

    bool finished(uint16_t) const override { return false; }

    SourceCounters counters() const override {
        SourceCounters c;
        for (const Ring& r : rings_) {
            c.packets += r.packets.load(std::memory_order_relaxed);
            c.nombuf += r.nombuf.load(std::memory_order_relaxed);
        }
        c.imissed = kernel_drops();
        return c;
    }

    void stop() override { (void)kernel_drops(); }

    LinkState link_state() const override { return watch_.state(); }

private:
    /* The kernel's address of the packet at p. */
    static const sockaddr_ll* address(const uint8_t* p) {
        return reinterpret_cast<const sockaddr_ll*>(p + TPACKET_ALIGN(sizeof(tpacket3_hdr)));
    }

    /* The packet at p is not captured: the sent copy on loopback (also
     * received), or the direction -Q leaves out (libpcap's rule). */
    bool skip(const uint8_t* p) const {
        const sockaddr_ll* sll = address(p);
        if (sll->sll_pkttype == PACKET_OUTGOING)
            return !want_out_ || static_cast<unsigned>(sll->sll_ifindex) == lo_ifindex_;
        return !want_in_;
    }

    /* The frame at h as an mbuf chain, its VLAN tag back in place, its
     * kernel timestamp and wire length in the dynamic fields. */
    rte_mbuf* to_mbuf(const tpacket3_hdr* h) {
        const uint8_t* data = reinterpret_cast<const uint8_t*>(h) + h->tp_mac;
        uint32_t caplen = h->tp_snaplen, wirelen = h->tp_len;
        uint8_t tag[kSll2Bytes];
        bool vlan = !cooked_ && (h->tp_status & TP_STATUS_VLAN_VALID) && caplen >= 12;
        if (cooked_) {
            // The LINUX_SLL2 header, big-endian, in front of the network header.
            const sockaddr_ll* sll = address(reinterpret_cast<const uint8_t*>(h));
            uint32_t ifindex = htonl(static_cast<uint32_t>(sll->sll_ifindex));
            uint16_t hatype = htons(sll->sll_hatype);
            uint8_t halen = sll->sll_halen < 8 ? sll->sll_halen : 8;
            std::memset(tag, 0, sizeof(tag));
            std::memcpy(tag, &sll->sll_protocol, 2);
            std::memcpy(tag + 4, &ifindex, 4);
            std::memcpy(tag + 8, &hatype, 2);
            tag[10] = sll->sll_pkttype;
            tag[11] = halen;
            std::memcpy(tag + 12, sll->sll_addr, halen);
            wirelen += kSll2Bytes;
        } else if (vlan) {
            uint16_t tpid =
                (h->tp_status & TP_STATUS_VLAN_TPID_VALID) ? h->hv1.tp_vlan_tpid : ETH_P_8021Q;
            tag[0] = static_cast<uint8_t>(tpid >> 8);
            tag[1] = static_cast<uint8_t>(tpid);
            tag[2] = static_cast<uint8_t>(h->hv1.tp_vlan_tci >> 8);
            tag[3] = static_cast<uint8_t>(h->hv1.tp_vlan_tci);
            wirelen += 4;
        }
        rte_mbuf* head = rte_pktmbuf_alloc(pool_);
        if (!head) return nullptr;
        // The bytes in wire order: the MAC addresses, the tag, the rest.
        struct Piece {
            const uint8_t* p;
            uint32_t len;
        } pieces[3] = {{data, vlan ? 12u : caplen},
                       {tag, vlan ? 4u : 0u},
                       {data + 12, vlan ? caplen - 12 : 0u}};
        if (cooked_) {
            pieces[0] = {tag, kSll2Bytes};
            pieces[1] = {data, caplen};
            pieces[2] = {data, 0};
        }
        rte_mbuf* seg = head;
        for (Piece pc : pieces) {
            while (pc.len) {
                uint16_t room = rte_pktmbuf_tailroom(seg);
                if (room == 0) {
                    rte_mbuf* next = rte_pktmbuf_alloc(pool_);
                    if (!next || rte_pktmbuf_chain(head, next) != 0) {
                        if (next) rte_pktmbuf_free(next);
                        rte_pktmbuf_free(head);
                        return nullptr;
                    }
                    seg = next;
                    continue;
                }
                uint16_t take = static_cast<uint16_t>(pc.len < room ? pc.len : room);
                std::memcpy(rte_pktmbuf_mtod_offset(seg, uint8_t*, seg->data_len), pc.p, take);
                seg->data_len = static_cast<uint16_t>(seg->data_len + take);
                head->pkt_len += take;
                pc.p += take;
                pc.len -= take;
            }
        }
        *RTE_MBUF_DYNFIELD(head, fields_.ts_offset, uint64_t*) =
            uint64_t(h->tp_sec) * 1000000000ull + h->tp_nsec;
        head->ol_flags |= fields_.ts_flag;
        *RTE_MBUF_DYNFIELD(head, fields_.wirelen_offset, uint32_t*) = wirelen + 1;
        return head;
    }

    /* Frames the kernel dropped since open (PACKET_STATISTICS resets on read). */
    uint64_t kernel_drops() const {
        std::lock_guard<std::mutex> g(mu_);
        for (const Ring& r : rings_) {
            if (r.fd < 0) continue;
            tpacket_stats_v3 st;
            socklen_t len = sizeof(st);
            std::memset(&st, 0, sizeof(st));
            if (getsockopt(r.fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0)
                kernel_dropped_ += st.tp_drops;
        }
        return kernel_dropped_;
    }

    void close_all() {
        for (Ring& r : rings_) {
            if (r.map) munmap(r.map, r.map_len);
            if (r.fd >= 0) ::close(r.fd);
            r.map = nullptr;
            r.fd = -1;
        }
    }

    std::vector<Ring> rings_;
    rte_mempool* pool_;
    MbufFields fields_;
    InterfaceWatch watch_;
    bool cooked_ = false;      // any: SOCK_DGRAM frames given a LINUX_SLL2 header
    unsigned lo_ifindex_ = 0;  // the loopback's, whose sent copies are skipped; 0: none
    bool want_in_ = true;      // -Q: directions kept
    bool want_out_ = true;
    bool check_ = false;  // skip() has something to do
    mutable std::mutex mu_;
    mutable uint64_t kernel_dropped_ = 0;
};

}  // namespace

Result<std::unique_ptr<Source>> open_packet_ring_source(const SourceSpec& spec, unsigned index,
                                                        uint16_t queues, uint32_t frames,
                                                        rte_mempool* pool,
                                                        const MbufFields& fields) {
    // Sockets belong to the namespace of the thread that creates them, and
    // the interface is looked up there: make them inside the source's one.
    NetnsFd ns;
    std::optional<NetnsScope> scope;
    Status entered = enter_source_netns(spec, ns, scope);
    if (!entered) return make_error(entered.error());
    auto src = std::make_unique<PacketRingSource>(spec.text, queues ? queues : 1, pool, fields);
    uint16_t fanout_id = static_cast<uint16_t>((getpid() * 31u + index) & 0xffff);
    Status st = src->open(spec, frames, fanout_id);
    if (!st) {
        std::string where = spec.in_netns() ? " in " + ns.label() : std::string();
        return make_error("source '" + spec.text + "'" + where + ": " + st.error());
    }
    return std::unique_ptr<Source>(std::move(src));
}

}  // namespace linecap::dataplane
