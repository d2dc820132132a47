/* capd's command line: parsing and validation into Options.
 *
 * Spellings follow tcpdump where tcpdump has the option (-i -w -C -G -W -z -s
 * -c -d -D -p -B -U -Q) and ../BRIEF's contract elsewhere. Cold code, control
 * thread.
 */
#pragma once

#include "index/codec.hh"

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.hh"
#include "filters/rule_set.hh"
#include "storage/format.hh"
#include "storage/retention.hh"

namespace linecap::dataplane {

/* Which packets of a kernel interface are captured (-Q, tcpdump's). */
enum class Direction { kInOut, kIn, kOut };

/* null:SIZE,flows=N needs room for Ethernet, IPv4 and UDP headers. */
inline constexpr uint32_t kNullFlowMinSize = 42;

struct SourceSpec {
    enum class Kind { kPci, kAfXdp, kAfPacket, kPcapFile, kNull };
    Kind kind;
    // As the user wrote it, e.g. "pcap:in.pcap,loop"; a bare interface name
    // (-i eth0) is written as the source it maps to, "af_packet:eth0".
    std::string text;
    std::string arg;  // PCI address, interface or file (null: the frames= file)
    bool loop = false;
    uint32_t size = 64;         // null: frame size
    double rate_pps = 0;        // null: offered load, packets/s over all queues; 0 = unpaced
    uint32_t flows = 0;         // null: each packet rewritten into one of this many flows; 0 = off
    bool flow_scatter = false;  // null: order=scattered (null_flows.hh)
    bool flow_both = false;     // null: directions=both (null_flows.hh)
    // af_packet/af_xdp inside another network namespace: @netns=NAME (a name
    // under /run/netns, as `ip netns` shows it) or @pid=PID (that process's).
    std::string netns;
    int netns_pid = 0;
    bool in_netns() const { return !netns.empty() || netns_pid > 0; }
    // Given as a bare name (-i eth0), not as af_packet:eth0.
    bool bare = false;
    // af_packet:any (or -i any): every interface of the namespace, in the
    // Linux cooked link type (LINUX_SLL2), as tcpdump's any device.
    bool any_interface() const { return kind == Kind::kAfPacket && arg == "any"; }
    // Kernel interfaces: -p clears it (the interface is not made
    // promiscuous); -Q sets the direction.
    bool promisc = true;
    Direction direction = Direction::kInOut;
};

/* Parses one -i SOURCE. A bare name that could be an interface (no ':',
 * '/' or blank, at most 15 characters), optionally with @netns=/@pid=, is
 * af_packet:NAME; whether the interface exists is checked at start. Needs
 * no system state. */
/* A flow cutoff in bytes: NUMBER with k, M or G (10^3, 10^6, 10^9),
 * 1..10^12 (--flow-cutoff, and capctl rules' --flow-cutoff). Errors name
 * --flow-cutoff. */
Result<uint64_t> parse_flow_bytes(const std::string& text);

Result<SourceSpec> parse_source(const std::string& text);

struct Options {
    std::vector<SourceSpec> sources;
    std::string write_path;       // -w
    double rotate_mb = 0;         // -C (millions of bytes, as tcpdump)
    uint32_t rotate_seconds = 0;  // -G
    uint32_t max_files = 0;       // -W
    std::string post_rotate_cmd;  // -z
    uint32_t snaplen = 262144;    // -s
    uint64_t count = 0;           // -c
    double duration = 0;          // --duration
    storage::Format format = storage::Format::kPcapMicro;
    unsigned workers = 1;
    unsigned writers = 1;
    std::string expression;
    std::vector<std::string> patterns;
    std::string bpf_object;
    filters::ScanScope scan_scope = filters::ScanScope::kPayload;
    std::string ctl_path;            // empty: the default socket
    std::string ctl_group;           // group allowed to use the socket
    double ctl_idle_timeout_s = 30;  // a control client without a request is dropped
    double compile_timeout_s = 10;   // libpcap/Hyperscan compile of one rule set
    std::string bpf_dir;             // --bpf-dir: eBPF objects the control group may load
    std::string stats_json;
    bool dump_filter = false;   // -d
    bool list_sources = false;  // -D
    bool quiet = false;
    bool rx_only = false;  // --rx-only: bare receive loop, for baselines
    bool no_jit = false;
    // --retain-free (the output's free-space floor), --retain-age (seconds;
    // 0: off), --align (-G periods at whole multiples of G).
    storage::RetainFree retain_free;
    uint64_t retain_age_s = 0;
    bool align = false;
    bool fsync = false;          // fdatasync each file before naming it
    bool reuse_files = false;    // --reuse-files: overwrite the displaced file's storage
    bool direct = false;         // --direct: O_DIRECT writes, past the page cache
    bool preallocate = false;    // --preallocate: claim the -C x -W ring at start
    bool no_index = false;       // --no-index: no index beside the files
    std::string compress;        // --compress CODEC[:LEVEL] as given ("": none)
    index::CodecSpec codec;      // parsed from it
    std::string compress_block;  // --compress-block SIZE as given
    uint32_t compress_block_bytes = 256u << 10;
    int compress_threads =
        0;  // --compress-threads: helper threads per writer (0: the writer's own)
    uint32_t write_behind_mb = 256;  // page cache a disk file may hold ahead of the disk; 0: off
    std::string run_as_user;         // -Z: drop to this user after set-up
    uid_t run_as_uid = static_cast<uid_t>(-1);  // -Z's ids, resolved at start (-1: none)
    gid_t run_as_gid = static_cast<gid_t>(-1);
    std::vector<int> start_cpus;  // capd's CPUs at start, before EAL pinned its threads (-z)
    std::string eal_extra;
    uint32_t chunk_kb = 1024;
    uint32_t flush_ms = 100;
    uint32_t ring_chunks = 256;
    // Receive descriptors per port queue (af_packet: frames per queue; the
    // paced null source models a ring of this depth).
    uint32_t rx_desc = 4096;
    // -B: af_packet's kernel ring per queue, in KiB (tcpdump's buffer
    // size); 0: --rx-desc x 2 KiB. It wins over --rx-desc for af_packet.
    uint32_t buffer_kb = 0;
    // -U: each burst a worker receives goes to its writer at once (no
    // --flush-ms wait), as tcpdump's packet-buffered output.
    bool packet_buffered = false;
    // Workers spin even when their queues are empty (see worker.hh).
    bool busy_poll = false;
    uint32_t file_mode = 0640;
    uint32_t test_writer_delay_us = 0;
    uint32_t test_writer_delay_for_s = 0;  // 0: the delay lasts the whole run
    uint32_t tcp_flows = 0;                // --tcp-flows: TCP records in each flow table; 0 = off
    // The flow table (dataplane/flow_table.hh): on when any of the three is
    // set, or --flow-table is given (for rules' own cutoffs, capctl rules).
    uint64_t flow_cutoff = 0;      // --flow-cutoff BYTES per flow; 0: none
    uint64_t flow_packets = 0;     // --flow-packets N per flow; 0: none
    uint64_t dedup_window_ns = 0;  // --dedup[=WINDOW]; 0: off
    uint32_t flow_slots = 262144;  // --flow-table N flows per worker
    bool flow_slots_given = false;
    bool flow_per_direction = false;  // --flow-cutoff-per-direction
    bool flow_table() const {
        return flow_cutoff || flow_packets || dedup_window_ns || flow_slots_given;
    }
    // --on-source-loss: an af_packet/af_xdp interface deleted while capd
    // runs stops capd (the default, as tcpdump), or only its own source.
    bool keep_going_on_source_loss = false;
    // --xdp-generic: af_xdp attaches its XDP program in generic (SKB) mode.
    bool xdp_generic = false;
    // --catalog URL: the fleet catalogue (storage/catalog_publisher.hh);
    // empty: none. The rest apply only with it.
    std::string catalog_url;
    std::string catalog_tables;  // --catalog-tables FILES,FLOWS ("": the defaults)
    std::string catalog_host;    // --catalog-host ("": the machine's hostname)
    std::string catalog_serve;   // --catalog-serve ADDR:PORT
    std::string catalog_spool;   // --catalog-spool ("": DIR/.capd-catalog.spool beside -w)
    uint64_t catalog_spool_max = 64ull << 20;  // --catalog-spool-max, bytes
    uint32_t catalog_flow_budget = 0;  // --catalog-flow-budget: rows per file; 0: a row a flow

    /* Frames (2 KiB each) of each af_packet queue's kernel ring: -B's KiB
     * when given, else --rx-desc. */
    uint32_t packet_ring_frames() const { return buffer_kb ? (buffer_kb + 1) / 2 : rx_desc; }
};

/* Parses argv. Returns the options, or an error line. `--help` and
 * `--version` print and set exit_now (exit status 0). */
Result<Options> parse_options(int argc, char** argv, bool& exit_now);

}  // namespace linecap::dataplane
