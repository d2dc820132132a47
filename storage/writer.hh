/* Writer: the storage-core loop.
 *
 * A writer owns one FileSet and drains the SPSC rings of the workers assigned
 * to it. It dequeues chunks in bursts, writes them with one writev per burst
 * (no copy: the iovecs point into the chunks), applies -C/-G rotation at
 * record boundaries, and returns the chunks to the pool.
 *
 * -G periods are timed from the start of the previous one (with --align,
 * from whole multiples of G: FileSet::period_start()), and the loop starts
 * the next one on time whether packets come or not; a -C cut or a
 * requested rotation starts a new file within the period, never a new
 * period (tcpdump 4.99). With retention on, the loop calls
 * FileSet::retain() about every 100 ms, also while writes fail.
 *
 * With -w - (standard output) there is one stream and no rotation. A write
 * that fails there (EPIPE: the reader has exited) ends the stream: one
 * line on stderr, every later packet counted as a `disk` drop, and
 * output_gone() tells the pipeline to stop. An idle writer notices a pipe
 * whose reader has gone too (poll, every 100 ms).
 *
 * The index (index/builder.hh): unless WriterConfig::index is off (or the
 * output is standard output), the writer feeds each record it has written
 * to its IndexBuilder, from the chunk it just wrote, at the file offset the
 * record starts at (with --direct too: the staged bytes' offsets). That is
 * the writer's per-record cost of the index: one flow key and a table
 * lookup, no allocation once the builder has grown, no syscall. At close
 * the index is written beside the file (FileSet::write_index), before the
 * file is named and -z starts; at most once a second while records come,
 * the live index of the file being written: the records the disk holds
 * (buffered: all written; --direct: those released). A failure to write an
 * index is one stderr line and a count (index_errors); the capture goes on
 * and the file is still named (capq reads a file that has no index).
 *
 * --compress-threads N: N helper threads (started by the constructor, on
 * the control thread's CPUs, named capd-zW-K) compress the writer's full
 * blocks, each with its own codec contexts, out of 2 N block buffers
 * allocated at start (each the block plus 1 MiB, and its frame's bound);
 * the writer still fills the blocks, at the same cut points, and writes
 * the frames strictly in block order, doing per frame what it does
 * without helpers. Cost: one lock and one wakeup per block (256 KiB by
 * default), nothing per packet. When every buffer is in flight the
 * writer waits for the oldest frame, so the rings fill as with a slow
 * disk. What must be in order with the frames (a rotation, a close, a
 * pcapng file's statistics) first writes every block in flight.
 *
 * Threads: construct and open() on the control thread (so an unwritable
 * directory fails before capture starts); run() on one storage lcore;
 * request_rotate(), close_inputs() and stats() from any thread.
 */
#pragma once

#include <rte_mempool.h>
#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "index/builder.hh"
#include "index/codec.hh"
#include "storage/chunk.hh"
#include "storage/chunk_ring.hh"
#include "storage/file_set.hh"
#include "storage/format.hh"
#include "storage/write_behind.hh"

namespace linecap::storage {

/* --compress-block's default: lz4 and zstd -1 reach most of their ratio
 * and speed by 256 KiB (bench/compress_bench), and capq reads one block
 * for a packet it needs. */
inline constexpr uint32_t kDefaultCompressBlockBytes = 256u << 10;

/* Counters of one writer; written by the writer only. */
struct alignas(64) WriterStats {
    std::atomic<uint64_t> chunks{0};
    std::atomic<uint64_t> packets{0};           // records written to files
    std::atomic<uint64_t> bytes{0};             // file bytes, headers included
    std::atomic<uint64_t> files{0};             // files opened
    std::atomic<uint64_t> disk_drops{0};        // packets lost to write errors
    std::atomic<uint64_t> disk_errors{0};       // failed write calls
    std::atomic<uint64_t> paused_drops{0};      // packets discarded while paused
    std::atomic<uint64_t> close_errors{0};      // files that could not be closed or named
    std::atomic<uint64_t> writeback_errors{0};  // write-behind found data the disk lost
    std::atomic<uint64_t> index_files{0};       // indexes of closed files written
    std::atomic<uint64_t> index_bytes{0};       // their bytes
    std::atomic<uint64_t> index_errors{0};      // indexes (final or live) not written
    // --compress: the bytes that went into the codec (file headers and
    // records); `bytes` counts what the disk got.
    std::atomic<uint64_t> raw_bytes{0};
};

struct WriterConfig {
    FileSetOptions files;
    Format format = Format::kPcapMicro;
    std::vector<InterfaceDesc> ifaces;
    std::string application = "linecap";
    /* Fills the pcapng statistics block of each interface at file close.
     * Called on the writer thread; must only read counters. */
    std::function<void(uint32_t if_id, InterfaceCounters&)> interface_counters;
    /* fdatasync each file before it is renamed into place. */
    bool fsync_on_close = false;
    /* Buffered writes to a disk file: writeback of each 8 MiB window starts
     * as it fills, and a window this far behind the end is waited for and
     * dropped from the page cache (--write-behind MIB; 0: off). */
    uint64_t write_behind_bytes = 256ull << 20;
    /* Test hook: sleep this long after each write burst (a slow disk), for
     * the first test_delay_for_s seconds of run() (0: for the whole run). */
    uint32_t test_delay_us = 0;
    /* Write an index beside every file (--no-index: off), with blocks of
     * about this many bytes. */
    bool index = true;
    uint32_t index_block_bytes = index::kDefaultBlockBytes;
    uint32_t test_delay_for_s = 0;
    /* --compress: each block of about compress_block_bytes of whole records
     * becomes one frame of the codec (index/codec.hh), and the file's
     * index block; --compress-block sets the size. */
    index::CodecSpec compress;
    uint32_t compress_block_bytes = kDefaultCompressBlockBytes;
    /* --compress-threads: helper threads that compress this writer's
     * blocks (0: the writer itself). Their frames are written in block
     * order, so the file is the one the writer alone writes. */
    uint32_t compress_threads = 0;
};

class Writer {
public:
    Writer(WriterConfig cfg, std::vector<ChunkRing*> inputs, rte_mempool* chunk_pool);
    ~Writer();

    /* Opens the first file. Control thread, before run(). */
    Status open();

    /* The storage-core loop. Returns once close_inputs() was called and every
     * input ring is empty, after closing the last file. */
    void run();

    /* Producers have stopped for good: drain and finish. */
    void close_inputs() { inputs_closed_.store(true, std::memory_order_release); }
    void request_rotate() { rotate_requested_.store(true, std::memory_order_release); }
    /* Whether the output rotates at all: not standard output. */
    bool rotates() const { return !files_.is_stream(); }
    /* Standard output can no longer be written (its reader has gone):
     * capd should stop. Any thread. */
    bool output_gone() const { return output_gone_.load(std::memory_order_acquire); }
    void set_paused(bool p) { paused_.store(p, std::memory_order_release); }

    const WriterStats& stats() const { return stats_; }
    /* Last write error (any thread). */
    std::string last_error() const;
    /* True while writes fail (disk full, I/O error); any thread. */
    bool disk_error() const { return disk_error_.load(std::memory_order_acquire); }
    /* Final name of the file being written (any thread). */
    std::string current_file() const {
        std::lock_guard<std::mutex> g(name_mu_);
        return current_name_;
    }
    /* Final names of the files closed so far (valid after run() returns). */
    uint32_t files_closed() const { return files_.files_closed(); }
    /* -z commands that failed (FileSet::command_failures); any thread. */
    uint64_t command_failures() const { return files_.command_failures(); }
    std::string last_command_failure() const { return files_.last_command_failure(); }
    /* The file set, for its retention counters (any thread). */
    const FileSet& files() const { return files_; }

private:
    void write_chunks(Chunk** chunks, unsigned n);
    void write_split(Chunk* c);
    bool write_bytes(const struct iovec* iov, int iovcnt, size_t total);
    /* The packets of the write that just succeeded are written: now, or
     * with --direct once the disk holds all of their bytes. */
    void commit(uint64_t packets);
    bool stage_bytes(const struct iovec* iov, int iovcnt, size_t total);
    bool flush_stage(bool tail);
    void release(uint64_t upto);
    void direct_failure(int err);
    void rotate(time_t now, FileSet::Open why);
    void finish_file();
    bool open_file(time_t now, FileSet::Open why);
    bool wait_writable();
    void stream_failed(int err);
    void check_stream();
    bool ensure_file();
    void write_behind();
    void end_write_behind();
    void after_write_failure();
    void after_write_success();
    void enter_error(const std::string& msg);
    void index_cuts(const Chunk* c);
    void index_records(const Chunk* c, uint32_t first, uint32_t count, uint32_t end,
                       uint64_t offset);
    void write_index();
    void write_live_index();
    void set_error(const std::string& msg);
    // --compress: records wait in the block being filled (fill()) until it
    // is full (or the file closes, or the link has been quiet for a
    // second); then it is compressed, by the writer or with
    // --compress-threads by a helper, and its frame is written, the blocks
    // strictly in the order they were filled. blocks_ is a ring: one block
    // without helpers, two per helper with them; [head_seq_, fill_seq_)
    // are in flight (queued, compressing, or compressed and waiting for
    // the writer). stream_end_ is the stream offset past the last record
    // taken.
    struct Block {
        std::vector<uint8_t> raw;    // whole records
        std::vector<uint8_t> frame;  // raw's frame, once compressed
        size_t raw_len = 0;
        uint64_t packets = 0;
        size_t frame_len = 0;  // 0: the codec failed
        size_t bound = 0;      // the codec's bound for raw_len (-C's look-ahead)
        bool done = false;     // compressed; guarded by zmu_ with helpers
    };
    Block& block_at(uint64_t seq) { return *blocks_[seq % blocks_.size()]; }
    Block& fill() { return block_at(fill_seq_); }
    void compress_chunk(Chunk* c);
    bool write_frame(const uint8_t* p, size_t n);
    bool put_frame(const uint8_t* frame, size_t z, size_t raw_bytes);
    bool flush_block();
    bool retire_head();
    void retire_ready();
    bool drain();
    void drop_in_flight();
    void helper_loop(unsigned k);
    std::unique_ptr<index::BlockCompressor> comp_;  // the writer's own
    std::vector<uint8_t> frame_;                    // the writer's own frames
    std::vector<std::unique_ptr<Block>> blocks_;
    uint64_t head_seq_ = 0;
    uint64_t fill_seq_ = 0;
    uint64_t inflight_bound_ = 0;  // the bounds of the blocks in flight
    uint64_t stream_end_ = 0;
    uint64_t raw_since_ns_ = 0;  // CLOCK_MONOTONIC when fill() got its first record
    bool finishing_ = false;     // in finish_file(): no -C rotation from within
    // --compress-threads: each helper has its own codec contexts and takes
    // the queued blocks in order, under zmu_ (a lock per block, not per
    // packet).
    std::vector<std::unique_ptr<index::BlockCompressor>> helper_comp_;
    std::vector<std::thread> helpers_;
    std::mutex zmu_;
    std::condition_variable zwork_;  // a block was queued, or stop
    std::condition_variable zdone_;  // a block was compressed
    uint64_t queued_seq_ = 0;        // blocks before it are queued (zmu_)
    uint64_t taken_seq_ = 0;         // blocks before it were taken by a helper (zmu_)
    bool zstop_ = false;             // zmu_

    WriterConfig cfg_;
    std::vector<ChunkRing*> inputs_;
    rte_mempool* pool_;
    FileSet files_;
    WriterStats stats_;
    std::atomic<bool> inputs_closed_{false};
    std::atomic<bool> rotate_requested_{false};
    std::atomic<bool> paused_{false};
    uint64_t file_bytes_ = 0;
    time_t period_started_ = 0;  // the current -G period's start
    std::atomic<bool> output_gone_{false};
    uint64_t stream_checked_ns_ = 0;  // last idle check of standard output
    // --direct (O_DIRECT): bytes [disk_bytes_, file_bytes_) wait in stage_
    // (4 KiB aligned), and the packets of each write wait in pending_ until
    // the disk holds the whole write; released_end_ is the end of the last
    // write the disk holds, where a failure cuts the file back to.
    struct Pending {
        uint64_t end;
        uint64_t packets;
    };
    uint8_t* stage_ = nullptr;
    size_t staged_ = 0;
    uint64_t disk_bytes_ = 0;
    uint64_t released_end_ = 0;
    std::deque<Pending> pending_;
    std::atomic<bool> disk_error_{false};
    // Write-behind: windows of the current file up to wb_started_ went to
    // wb_ through wb_fd_, the file's duplicate (-1: no write-behind).
    std::unique_ptr<WriteBehind> wb_;  // null with --direct or --write-behind 0
    int wb_fd_ = -1;
    uint64_t wb_started_ = 0;
    uint64_t header_bytes_ = 0;         // size of the current file's header
    time_t retry_at_ = 0;               // no new file before this after an error
    uint64_t test_delay_until_ns_ = 0;  // CLOCK_MONOTONIC; 0: no end
    bool quiet_errors_ = false;
    std::string last_error_;      // guarded by name_mu_
    mutable std::mutex name_mu_;  // taken at rotation and on errors only
    std::string current_name_;
    void publish_name();
    // The index of the current file (null: --no-index or standard output).
    std::unique_ptr<index::IndexBuilder> builder_;
    uint64_t live_end_ = 0;     // builder end() at the last live index
    uint64_t live_at_ns_ = 0;   // CLOCK_MONOTONIC of the last live index
    bool live_failed_ = false;  // a live index of this file failed (said once)

    // CLOCK_MONOTONIC of the last FileSet::retain().
    uint64_t retained_at_ns_ = 0;
};

}  // namespace linecap::storage
