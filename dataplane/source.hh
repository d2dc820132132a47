/* Capture sources: what a worker receives from.
 *
 * A Source has one or more receive queues. EthSource wraps a DPDK port (PCI,
 * af_xdp, null); PacketRingSource reads af_packet interfaces through TPACKET_V3
 * rings of its own; PcapFileSource reads a capture file itself with
 * libpcap at nanosecond precision, so that the file's timestamps and original
 * wire lengths survive (DPDK's net_pcap keeps neither).
 *
 * Every mbuf a source returns carries, in dynamic fields:
 *  - the receive timestamp in wall-clock ns, with MbufFields::ts_flag set in
 *    ol_flags, when the source knows it (file timestamps); otherwise the
 *    worker stamps the burst from the TSC;
 *  - the original wire length when it differs from pkt_len.
 *
 * Setup, counters() and link_state(): control thread. rx_burst(): the one
 * worker that owns the queue. The mbufs returned belong to the caller.
 */
#pragma once

#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.hh"
#include "dataplane/iface_watch.hh"
#include "dataplane/options.hh"

namespace linecap::dataplane {

/* Offsets of the mbuf dynamic fields capd uses. Registered once at start. */
struct MbufFields {
    int ts_offset = -1;       // rte_mbuf_timestamp_t, ns since the epoch
    uint64_t ts_flag = 0;     // ol_flags bit: timestamp valid
    int wirelen_offset = -1;  // uint32_t original length + 1; 0 = pkt_len

    static Result<MbufFields> register_fields();

    uint64_t timestamp(const rte_mbuf* m) const {
        return *RTE_MBUF_DYNFIELD(m, ts_offset, const uint64_t*);
    }
    uint32_t wirelen(const rte_mbuf* m) const {
        uint32_t w = *RTE_MBUF_DYNFIELD(m, wirelen_offset, const uint32_t*);
        return w ? w - 1 : m->pkt_len;
    }
};

struct SourceCounters {
    uint64_t packets = 0;  // delivered to workers (as the port counts them)
    uint64_t imissed = 0;
    uint64_t ierrors = 0;
    uint64_t nombuf = 0;
    /* Records longer than kMaxRecord, kept with their first kMaxRecord
     * bytes and their wire length (file sources). */
    uint64_t truncated = 0;
};

/* The longest record capd keeps: tcpdump's and libpcap's largest snap
 * length. libpcap reads longer records (up to 128 MiB for some link
 * types); a file source cuts them to this length and counts them. */
inline constexpr uint32_t kMaxRecord = 262144;

class Source {
public:
    virtual ~Source() = default;
    const std::string& name() const { return name_; }
    uint16_t queues() const { return queues_; }
    uint16_t linktype() const { return linktype_; }
    uint32_t snaplen() const { return snaplen_; }
    /* Packets whose timestamps come from the source, in ns (file sources). */
    bool source_timestamps() const { return source_ts_; }
    /* Multiplier that turns the port's timestamp dynfield into ns, or 0 when
     * the port's timestamps are unusable and the TSC is used. */
    uint32_t ts_scale() const { return ts_scale_; }
    /* Receive descriptors of each queue as the port took them (0: a file). */
    uint16_t rx_desc() const { return rx_desc_; }

    /* Hot: up to n packets from queue q. */
    virtual uint16_t rx_burst(uint16_t q, rte_mbuf** pkts, uint16_t n) = 0;
    /* A finite source says when queue q has no more packets. */
    virtual bool finished(uint16_t q) const = 0;
    /* Damaged input: the message says where. Empty when fine. */
    virtual std::string error() const { return ""; }
    virtual SourceCounters counters() const = 0;
    virtual void stop() {}
    /* The kernel interface behind an af_packet/af_xdp source: up, down or
     * deleted (iface_watch.hh); kUp for files, null and PCI ports. Control
     * thread, a few times a second; never touches the workers' path. */
    virtual LinkState link_state() const { return LinkState::kUp; }

protected:
    std::string name_;
    uint16_t queues_ = 1;
    uint16_t linktype_ = 1;
    uint32_t snaplen_ = 262144;
    bool source_ts_ = false;
    uint32_t ts_scale_ = 0;
    uint16_t rx_desc_ = 0;
};

/* Opens a capture file for pcap:FILE. Validates it (a file that is not a
 * capture is refused here, before any output exists). */
Result<std::unique_ptr<Source>> open_pcap_file_source(const SourceSpec& spec, rte_mempool* pool,
                                                      const MbufFields& fields);
/* Checks that FILE is a readable capture; returns its link type. */
Result<int> probe_pcap_file(const std::string& path);

/* The EAL --vdev / -a argument for a port source (empty for pcap files). */
std::string eal_device_arg(const SourceSpec& spec, unsigned index, uint16_t queues);
/* DPDK's device name for that source (to find its port id). */
std::string eal_device_name(const SourceSpec& spec, unsigned index);

/* Before EAL, for af_xdp:IFACE (in its namespace): the interface gives
 * `queues` receive queues (net_af_xdp counts its combined channels, or 1)
 * and has no XDP program of someone else's attached. Returns a note to log
 * (empty when none): libxdp's own program left by a killed reader is taken
 * over. Errors say what is wrong and how to fix it. */
Result<std::string> check_xdp_source(const SourceSpec& spec, uint16_t queues, unsigned workers);

/* Configures and starts the DPDK port of a port source, with `queues` receive
 * queues spread by RSS where the port supports it, each of `rx_desc`
 * descriptors or as many as the port takes. af_xdp ports are probed here
 * (not by EAL); with xdp_generic their XDP program is attached in generic
 * (SKB) mode, and detached when the source is destroyed. */
Result<std::unique_ptr<Source>> open_eth_source(const SourceSpec& spec, unsigned index,
                                                uint16_t queues, uint16_t rx_desc,
                                                rte_mempool* pool, bool xdp_generic);

/* Opens af_packet:IFACE[@netns=...] as `queues` TPACKET_V3 rings of about
 * `frames` x 2048 bytes each (packet_ring_source.cc). */
Result<std::unique_ptr<Source>> open_packet_ring_source(const SourceSpec& spec, unsigned index,
                                                        uint16_t queues, uint32_t frames,
                                                        rte_mempool* pool,
                                                        const MbufFields& fields);

/* For null:SIZE,frames=FILE: writes the frames of the capture FILE, in turn,
 * into the data area of every mbuf of `pool` (cut or zero-padded to SIZE).
 * The null device hands out pool mbufs without touching their data, so its
 * synthetic packets then carry real headers and payloads for the filters. */
Status fill_null_frames(const SourceSpec& spec, rte_mempool* pool);

}  // namespace linecap::dataplane
