/* CatalogPublisher: sends every closed file's record and flows to the fleet
 * catalogue (storage/catalog.hh), and a tombstone for every file removed.
 *
 * Threads: the writers call file_closed()/file_removed() at a file's close
 * or removal (cold: a mutex and a vector push, never per packet); one
 * helper thread of its own (started by start(), on capd's control CPUs,
 * never a worker or writer core) turns each closed file's index into rows
 * and sends them in batches (one INSERT per table per round, every
 * flush_ms or sooner when many are waiting). stats() from any thread.
 *
 * The closed file's index comes from the writer's memory: file_closed()
 * takes the bytes the writer has just written beside the file (moved, no
 * copy, one handoff per file), so no closed file is read back. The
 * indexes handed over and not yet taken by the helper are bounded
 * (kMaxHeldIndexBytes): beyond it the writer keeps nothing back and the
 * helper reads that file's index from the disk as before, counted in
 * files_read_back (files_from_memory: the others). The writer never waits
 * for the helper.
 *
 * ClickHouse down or slow (a refused connection, an error, no answer within
 * timeout_ms): the rows wait in the spool, a bounded queue kept in memory
 * and mirrored in a file (spool_path, created 0600 by capd's user, never
 * through a symbolic link or into someone else's file: safe_files.hh), and
 * are sent when the server answers again, oldest first, also after a
 * restart of capd (the file is read back at create()). When the spool holds
 * more than spool_max bytes the oldest batches are dropped and their rows
 * counted (dropped_rows); packets are never held back for the catalogue.
 *
 * A file whose index is missing or unreadable (--no-index, an index write
 * error) is published with its file record from nothing but its name and
 * no flows, counted in files_without_index.
 *
 * The file being written: every live_ms (3 s) the helper reads what the
 * writer has put on the disk since the last time (up to the live index's
 * capture_bytes: whole records), adds it to an IndexBuilder of its own,
 * and publishes the file (under its hidden name, as capq --serve serves
 * it) and its flows so far as a new snapshot (a new file_id, which
 * supersedes the previous one). At its close a tombstone retires the
 * hidden name and the closed file's rows take over. Cost: one read of the
 * new bytes from the page cache and the builder's few ns per record, on
 * the helper's CPU.
 */
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/result.hh"
#include "index/builder.hh"
#include "storage/catalog.hh"

namespace linecap::storage {

struct CatalogOptions {
    CatalogUrl url;
    CatalogTables tables;
    std::string host;                  // --catalog-host (default: the machine's hostname)
    std::string serve;                 // --catalog-serve ADDR:PORT, may be empty
    std::string spool_path;            // "" keeps the spool in memory only
    uint64_t spool_max = 64ull << 20;  // bytes of rows
    int flush_ms = 1000;               // batching period
    int timeout_ms = 5000;             // per request
    int live_ms = 3000;                // snapshots of the files being written
    uint32_t flow_budget = 0;          // flows rows per file (budget_flows()); 0: a row a flow
    std::string cwd;                   // relative file names are made absolute with it
    // literal_dir() of the -w directory (safe_files.hh): the capture's
    // directories below it are entered as the writers enter them, never
    // through a symbolic link; "" when the directory is named literally.
    std::string top_dir;
};

struct CatalogStats {
    uint64_t files = 0, flows = 0, tombstones = 0;  // rows the server took
    uint64_t live_snapshots = 0;  // file rows of files being written the server took
    uint64_t files_without_index = 0;
    uint64_t files_from_memory = 0;  // closed files whose index the writer handed over
    uint64_t files_read_back = 0;    // closed files whose index was read from the disk
    uint32_t flow_budget = 0;        // --catalog-flow-budget N as set; 0: a row a flow
    uint64_t budget_files = 0;       // files (and live snapshots) over --catalog-flow-budget
    uint64_t aggregate_rows = 0;     // aggregate rows made for them (spool rows)
    uint64_t spool_rows = 0, spool_bytes = 0;
    double spool_age_s = 0;  // of the oldest row waiting; 0 when empty
    uint64_t dropped_rows = 0;
    uint64_t send_errors = 0;
    std::string last_error;
};

class CatalogPublisher {
public:
    /* Opens (or creates) the spool and reads back rows an earlier run left.
     * Errors name the spool file (not a regular file of ours, unreadable). */
    static Result<std::unique_ptr<CatalogPublisher>> create(CatalogOptions o);
    ~CatalogPublisher();

    /* Starts the helper thread; allowed CPUs are the caller's. */
    void start();
    /* Publishes what is pending (closed files queued so far), trying the
     * server for at most wait_ms, then stops the thread; what is not sent
     * stays in the spool file. */
    void stop(int wait_ms);

    /* A writer opened `hidden` (the file it now writes). */
    void file_opened(const std::string& hidden, uint32_t writer);
    /* A writer closed `path` (its final name; its index beside it).
     * `index`: the index bytes as written (may be null); moved from, unless
     * the indexes waiting already hold kMaxHeldIndexBytes. */
    void file_closed(const std::string& path, uint32_t writer, std::string* index = nullptr);
    static constexpr uint64_t kMaxHeldIndexBytes = 64ull << 20;
    /* `path` was removed (-W, a name a new file takes). */
    void file_removed(const std::string& path);

    CatalogStats stats() const;

private:
    explicit CatalogPublisher(CatalogOptions o);
    struct Batch {
        uint8_t table;  // 0 files, 1 flows
        uint32_t rows;
        uint32_t tombstones;  // of the rows (files)
        uint32_t live;        // of the rows (files): snapshots of files being written
        uint64_t at_ns;       // when it was made
        std::string text;
    };
    enum class Kind { kOpened, kClosed, kRemoved };
    struct Event {
        std::string path;
        uint32_t writer;
        Kind kind;
        uint64_t at_ns;
        bool has_index = false;
        std::string index;  // kClosed: the writer's index bytes when has_index
    };
    struct LiveFile {
        std::string hidden;  // as the writer names it
        uint64_t done = 0;   // bytes read so far (whole records)
        bool begun = false;
        uint64_t last_id = 0;  // file_id of the last snapshot sent; 0: none
        std::unique_ptr<index::IndexBuilder> builder;
    };
    void snapshot_live();
    /* Appends the flows rows of a file (under o_.flow_budget); returns how many. */
    uint32_t flow_rows(std::string& out, const std::string& path, uint64_t file_id,
                       std::span<const index::FlowEntry> flows);
    void run();
    void make_batches(std::vector<Event>& events);
    bool send_round();
    void enforce_limit();
    void persist();
    Status load_spool();
    std::string absolute(const std::string& p) const;

    CatalogOptions o_;
    std::thread thread_;
    mutable std::mutex mu_;  // events_, stop_, and the stats below
    std::condition_variable cv_;
    std::vector<Event> events_;
    bool stop_ = false;
    uint64_t held_bytes_ = 0;  // of the indexes in events_
    uint64_t stop_deadline_ns_ = 0;

    // Helper thread only, except the counters copied under mu_.
    std::map<uint32_t, LiveFile> live_;  // by writer
    std::deque<Batch> spool_;
    uint64_t spool_bytes_ = 0;
    bool spool_dirty_ = false;
    int spool_fd_ = -1;
    CatalogStats st_;  // under mu_
};

}  // namespace linecap::storage
