/* The end-of-run summary: what was received, filtered, written and lost, by
 * stage. Printed on stderr and, with --stats-json, written as JSON. */
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/result.hh"
#include "dataplane/drop_stages.hh"
#include "storage/catalog_publisher.hh"

namespace linecap::dataplane {

struct SourceSummary {
    std::string name;
    unsigned queues = 0;
    uint64_t packets = 0;
    uint64_t imissed = 0, ierrors = 0, nombuf = 0;
    uint64_t truncated = 0;  // records cut to kMaxRecord bytes
    std::string error;
    // Its kernel interface: "ok", "down" (link down or no carrier) or "lost"
    // (deleted while capturing); "ok" for files, null and PCI ports.
    std::string state = "ok";
};

struct WorkerSummary {
    uint64_t rx_packets = 0, rx_bytes = 0, filtered_out = 0, over_limit = 0, accepted = 0,
             encoded = 0, writer_slow = 0, ring_full = 0, chunks = 0;
    double max_poll_gap_us = 0;  // longest time between two receive polls
    double busy_ns = 0;          // time spent on received bursts (WorkerStats::busy_cycles)
    double stalled_ns = 0;       // busy turns that lost the CPU, not in busy_ns
    uint64_t stalled_turns = 0;
    uint64_t busy_turns = 0;  // turns in busy_ns (WorkerStats::busy_turns)
};

struct WriterSummary {
    uint64_t packets = 0, bytes = 0, files = 0, chunks = 0, disk_drops = 0, disk_errors = 0;
    std::string error;
    uint64_t command_failures = 0;  // -z commands not started, non-zero or killed
    uint64_t index_files = 0, index_bytes = 0, index_errors = 0;  // indexes beside the files
    // Retention (--retain-free/--retain-age): files deleted and their bytes;
    // the first packet of the oldest file kept (ns since the epoch; 0:
    // unknown or retention off).
    bool retaining = false;
    uint64_t files_retired = 0, bytes_retired = 0, oldest_kept_ns = 0;
    std::string codec;              // --compress: "zstd", "lz4", "gzip"; "" when off
    uint64_t bytes_in = 0;          // --compress: bytes into the codec (bytes: out, on the disk)
    uint32_t compress_threads = 0;  // --compress-threads: its helper threads (0: the writer)
};

struct RuleSummary {
    std::string name;
    uint64_t packets = 0, bytes = 0;
    bool active = true;  // false: deleted or replaced away, totals kept
};

/* The flow tables (--flow-cutoff, --flow-packets, --dedup), summed over
 * the workers. Packets cut off or duplicate are not written on purpose:
 * not drops, counted apart. */
struct FlowSummary {
    bool enabled = false;
    uint64_t slots = 0;  // flows the tables hold
    uint64_t active = 0, created = 0, evicted = 0, expired = 0;
    uint64_t cut_packets = 0, cut_bytes = 0;
    uint64_t duplicates = 0, duplicate_bytes = 0;
    uint64_t untracked = 0;    // packets of no flow (not IP): passed
    uint64_t bucket_full = 0;  // new flows whose bucket was full (also evicted or expired)
    uint64_t tables = 0, tables_on_huge_pages = 0;  // 2 MiB huge pages, else normal pages
};

/* Elements of one mempool taken out at the time of the snapshot (per-lcore
 * caches count as free). */
struct PoolUse {
    uint64_t in_use = 0, size = 0;
};

/* The fleet catalogue's publisher (--catalog): rows the server took, rows
 * waiting in the spool, rows dropped from a full spool. */
/* The publisher's counters as it gives them (storage::CatalogStats), and
 * whether --catalog is on. */
struct CatalogSummary : storage::CatalogStats {
    bool enabled = false;
};

struct Summary {
    double elapsed_s = 0;
    uint64_t received = 0;
    uint64_t filtered_out = 0;
    uint64_t over_limit = 0;
    uint64_t paused = 0;  // received while `capctl pause`d: not written, not lost
    uint64_t written = 0;
    uint64_t bytes_written = 0;  // file bytes, headers included
    uint64_t packet_bytes = 0;   // wire bytes received
    uint64_t files = 0;
    Drops drops;
    FlowSummary flows;
    std::vector<SourceSummary> sources;
    std::vector<WorkerSummary> workers;
    std::vector<WriterSummary> writers;
    std::vector<RuleSummary> rules;
    std::vector<std::string> errors;  // damaged input, write errors
    bool hugepages = false;
    PoolUse mbufs, chunks;  // packet buffers, worker-to-writer chunks
    CatalogSummary catalog;
};

std::string summary_text(const Summary& s);
std::string summary_json(const Summary& s);
/* --stats-json: writes summary_json(s) to `path` through a new hidden file
 * renamed over it, so an entry already there (a symbolic link someone put in
 * a shared directory) is replaced, never followed (storage/safe_files.hh).
 * Mode 0644. Control thread, at exit. */
[[nodiscard]] Status write_summary_json(const std::string& path, const Summary& s);
nlohmann::json summary_to_json(const Summary& s);

}  // namespace linecap::dataplane
