#include "storage/writer.hh"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace linecap::storage {
namespace {

constexpr unsigned kDequeueBurst = 16;
constexpr size_t kDirectAlign = 4096;     // O_DIRECT offsets, lengths and buffers
constexpr size_t kStageBytes = 8u << 20;  // --direct staging buffer
constexpr uint64_t kWindow = WriteBehind::kWindow;

/* Write-behind only helps files whose pages a disk backs: not pipes, and
 * not tmpfs or ramfs, whose pages are the file. */
bool disk_backed(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && !memory_backed(fd);
}

time_t wall_seconds() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return ts.tv_sec;
}

uint64_t mono_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

index::CaptureFormat index_format(Format f) {
    switch (f) {
        case Format::kPcapNano: return index::CaptureFormat::kPcapNano;
        case Format::kPcapng: return index::CaptureFormat::kPcapng;
        default: return index::CaptureFormat::kPcapMicro;
    }
}

uint64_t wall_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

/* Where record i of the chunk starts; c.len for i == c.packets. */
uint32_t record_start(const Chunk& c, uint32_t i) {
    return i < c.packets ? c.starts()[-1 - int64_t(i)] : c.len;
}

/* The records from i on that fit in room bytes, the first one always: one
 * past the last record whose start lies under room bytes past record i's.
 * A binary search in the starts the worker noted (walking the records by
 * their lengths would take a cache miss per record). Returns > i. */
uint32_t records_within(const Chunk& c, uint32_t i, uint64_t room) {
    uint32_t off = record_start(c, i);
    uint32_t lo = i + 1, hi = c.packets;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (record_start(c, mid) - off < room)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

}  // namespace

Writer::Writer(WriterConfig cfg, std::vector<ChunkRing*> inputs, rte_mempool* chunk_pool)
    : cfg_(std::move(cfg)), inputs_(std::move(inputs)), pool_(chunk_pool), files_(cfg_.files) {
    if (cfg_.files.direct)
        stage_ = static_cast<uint8_t*>(std::aligned_alloc(kDirectAlign, kStageBytes));
    // Made here, on the control thread, the thread takes its CPUs (the main
    // lcore's: none a worker polls on), not the writer's alone.
    else if (cfg_.write_behind_bytes > 0)
        wb_ = std::make_unique<WriteBehind>(
            cfg_.write_behind_bytes, [this](const std::string& file, int err) {
                // The packets were counted when write() took them; say
                // loudly that the disk did not keep them.
                stats_.writeback_errors.fetch_add(1, std::memory_order_relaxed);
                std::string msg = file + ": writeback: " + std::strerror(err);
                set_error(msg);
                std::fprintf(stderr, "capd: write error: %s\n", msg.c_str());
            });
    // Made once: its tables keep their size from one file to the next.
    if (cfg_.index && cfg_.files.path != "-")
        builder_ = std::make_unique<index::IndexBuilder>(cfg_.index_block_bytes);
    // --compress: the contexts and buffers, once; a chunk larger than a
    // block is cut at its records (compress_chunk).
    if (cfg_.compress.codec != index::Codec::kNone) {
        comp_ = std::make_unique<index::BlockCompressor>(cfg_.compress);
        const size_t raw = std::max<size_t>(cfg_.compress_block_bytes, 4096) + (1u << 20);
        frame_.resize(comp_->bound(raw));
        // With helpers, two blocks per helper: one being compressed while
        // the next waits, so the helpers need not wait for the writer.
        const size_t nblocks = cfg_.compress_threads ? 2 * size_t(cfg_.compress_threads) : 1;
        for (size_t i = 0; i < nblocks; i++) {
            auto b = std::make_unique<Block>();
            b->raw.resize(raw);
            b->frame.resize(comp_->bound(raw));
            blocks_.push_back(std::move(b));
        }
        for (uint32_t k = 0; k < cfg_.compress_threads; k++)
            helper_comp_.push_back(std::make_unique<index::BlockCompressor>(cfg_.compress));
        // Started here, as write-behind's thread, on the control thread's
        // CPUs, none a worker polls on.
        for (uint32_t k = 0; k < cfg_.compress_threads; k++)
            helpers_.emplace_back([this, k] { helper_loop(k); });
    }
}

Writer::~Writer() {
    {
        std::lock_guard<std::mutex> g(zmu_);
        zstop_ = true;
    }
    zwork_.notify_all();
    for (std::thread& t : helpers_) t.join();
    wb_.reset();  // before the members its thread reports errors through
    std::free(stage_);
}

void Writer::publish_name() {
    std::lock_guard<std::mutex> g(name_mu_);
    current_name_ = files_.is_open() ? files_.current_name() : std::string();
}

Status Writer::open() {
    if (cfg_.files.direct && !stage_)
        return make_error("--direct: cannot allocate the 8 MiB staging buffer");
    bool codecs_ok = !comp_ || comp_->ok();
    for (const auto& c : helper_comp_) codecs_ok = codecs_ok && c->ok();
    if (!codecs_ok)
        return make_error(std::string("--compress: cannot set up ") +
                          index::codec_name(cfg_.compress.codec));
    files_.recover_stale();
    Status pre = files_.preallocate();
    if (!pre) return pre;
    // Before capture starts a failure is the caller's to report, once.
    quiet_errors_ = true;
    bool ok = open_file(wall_seconds(), FileSet::Open::kPeriod);
    quiet_errors_ = false;
    disk_error_.store(false);
    output_gone_.store(false);
    if (!ok) return make_error(last_error());
    return Status::success();
}

void Writer::set_error(const std::string& msg) {
    std::lock_guard<std::mutex> g(name_mu_);
    last_error_ = msg;
}

std::string Writer::last_error() const {
    std::lock_guard<std::mutex> g(name_mu_);
    return last_error_;
}

void Writer::enter_error(const std::string& msg) {
    set_error(msg);
    if (!disk_error_.load(std::memory_order_relaxed) && !quiet_errors_) {
        // One line per episode, never one per packet.
        std::fprintf(stderr, "capd: write error: %s (dropping and counting until it clears)\n",
                     msg.c_str());
        disk_error_.store(true, std::memory_order_release);
    }
}

bool Writer::write_bytes(const struct iovec* iov_in, int iovcnt, size_t total) {
    if (stage_) return stage_bytes(iov_in, iovcnt, total);
    struct iovec iov[kDequeueBurst + 1];
    int cnt = iovcnt;
    std::memcpy(iov, iov_in, sizeof(iov[0]) * iovcnt);
    struct iovec* cur = iov;
    size_t done = 0;
    while (done < total) {
        ssize_t w = ::writev(files_.fd(), cur, cnt);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN && wait_writable()) continue;
            // A file -W just removed may not have been freed yet.
            if ((errno == ENOSPC || errno == EDQUOT) && files_.wait_removals()) continue;
            int err = errno;
            if (files_.is_stream()) {
                // Bytes already in a pipe cannot be taken back: the stream
                // ends here.
                stream_failed(err);
                return false;
            }
            // Cut back to the last whole record so the file stays readable.
            if (done > 0 && ftruncate(files_.fd(), static_cast<off_t>(file_bytes_)) == 0)
                (void)lseek(files_.fd(), static_cast<off_t>(file_bytes_), SEEK_SET);
            stats_.disk_errors.fetch_add(1, std::memory_order_relaxed);
            enter_error(files_.current_name() + ": " + std::strerror(err));
            return false;
        }
        done += static_cast<size_t>(w);
        size_t adv = static_cast<size_t>(w);
        while (cnt > 0 && adv >= cur->iov_len) {
            adv -= cur->iov_len;
            cur++;
            cnt--;
        }
        if (cnt > 0) {
            cur->iov_base = static_cast<uint8_t*>(cur->iov_base) + adv;
            cur->iov_len -= adv;
        }
    }
    file_bytes_ += total;
    stats_.bytes.fetch_add(total, std::memory_order_relaxed);
    if (wb_fd_ >= 0 && file_bytes_ - wb_started_ >= kWindow) write_behind();
    return true;
}

/* Standard output is a non-blocking pipe that is full: waits for room, but
 * gives up at a second stop signal (a reader that stopped reading). */
bool Writer::wait_writable() {
    if (!files_.is_stream()) return false;
    while (!FileSet::waiting_stopped()) {
        struct pollfd p = {files_.fd(), POLLOUT, 0};
        int r = ::poll(&p, 1, 100);
        if (r > 0) return true;  // room, or an error the next write reports
        if (r < 0 && errno != EINTR) return false;
    }
    errno = EAGAIN;
    return false;
}

void Writer::stream_failed(int err) {
    std::string why = err == EPIPE    ? "its reader has gone"
                      : err == EAGAIN ? "its reader stopped reading"
                                      : "the stream cannot go on";
    std::string msg = std::string("standard output: ") + std::strerror(err) + ": " + why;
    stats_.disk_errors.fetch_add(1, std::memory_order_relaxed);
    set_error(msg);
    if (!output_gone_.exchange(true, std::memory_order_acq_rel))
        std::fprintf(stderr, "capd: %s; stopping\n", msg.c_str());
    disk_error_.store(true, std::memory_order_release);
}

/* Idle: a pipe whose reader has gone reports POLLERR; notice it without
 * waiting for traffic to write. */
void Writer::check_stream() {
    uint64_t now = mono_ns();
    if (now - stream_checked_ns_ < 100000000ull) return;
    stream_checked_ns_ = now;
    struct pollfd p = {files_.fd(), 0, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & POLLERR)) stream_failed(EPIPE);
}

/* Buffered writes to a disk: each full window goes to the write-behind
 * thread (storage/write_behind.hh). */
void Writer::write_behind() {
    while (file_bytes_ - wb_started_ >= kWindow) {
        wb_->add(wb_fd_, wb_started_, kWindow, files_.current_name());
        wb_started_ += kWindow;
    }
}

/* The current file is done: its tail goes too, then its descriptor. */
void Writer::end_write_behind() {
    if (wb_fd_ < 0) return;
    if (file_bytes_ > wb_started_)
        wb_->add(wb_fd_, wb_started_, file_bytes_ - wb_started_, files_.current_name());
    wb_->finish_file(wb_fd_);
    wb_fd_ = -1;
}

void Writer::commit(uint64_t packets) {
    if (stage_)
        pending_.push_back({file_bytes_, packets});
    else
        stats_.packets.fetch_add(packets, std::memory_order_relaxed);
}

/* --direct: copy into the staging buffer, writing its aligned part to the
 * file whenever it fills. */
bool Writer::stage_bytes(const struct iovec* iov, int iovcnt, size_t total) {
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t* p = static_cast<const uint8_t*>(iov[i].iov_base);
        size_t left = iov[i].iov_len;
        while (left > 0) {
            if (staged_ == kStageBytes && !flush_stage(false)) return false;
            size_t take = std::min(left, kStageBytes - staged_);
            std::memcpy(stage_ + staged_, p, take);
            staged_ += take;
            p += take;
            left -= take;
        }
    }
    file_bytes_ += total;
    stats_.bytes.fetch_add(total, std::memory_order_relaxed);
    return true;
}

/* Writes the staged whole blocks, or with `tail` everything, zero-padded to
 * a block (the caller then cuts the file to its length). */
bool Writer::flush_stage(bool tail) {
    size_t n =
        tail ? (staged_ + kDirectAlign - 1) & ~(kDirectAlign - 1) : staged_ & ~(kDirectAlign - 1);
    if (n == 0) return true;
    if (tail) std::memset(stage_ + staged_, 0, n - staged_);
    size_t done = 0;
    size_t piece = n;  // smaller once a nearly full disk refuses a write
    while (done < n) {
        size_t len = std::min(piece, n - done);
        ssize_t w =
            ::pwrite(files_.fd(), stage_ + done, len, static_cast<off_t>(disk_bytes_ + done));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == ENOSPC || errno == EDQUOT) && files_.wait_removals()) continue;
        if (w < 0 && (errno == ENOSPC || errno == EDQUOT) && len > kDirectAlign) {
            // ext4 refuses an O_DIRECT write whole when its blocks do not
            // all fit: halve it (whole 4 KiB blocks) until the disk takes
            // what it still holds, so the file keeps every write that fits
            // instead of losing up to the whole staging buffer.
            piece = std::max(kDirectAlign, (len / 2) & ~(kDirectAlign - 1));
            continue;
        }
        if (w <= 0) {
            int err = w < 0 ? errno : ENOSPC;
            if (done > 0) release(std::min<uint64_t>(disk_bytes_ + done, file_bytes_));
            direct_failure(err);
            return false;
        }
        done += static_cast<size_t>(w);
    }
    if (tail) {
        disk_bytes_ += staged_;
        staged_ = 0;
    } else {
        disk_bytes_ += n;
        std::memmove(stage_, stage_ + n, staged_ - n);
        staged_ -= n;
    }
    release(disk_bytes_);
    return true;
}

void Writer::release(uint64_t upto) {
    uint64_t pk = 0;
    while (!pending_.empty() && pending_.front().end <= upto) {
        pk += pending_.front().packets;
        released_end_ = pending_.front().end;
        pending_.pop_front();
    }
    if (pk) stats_.packets.fetch_add(pk, std::memory_order_relaxed);
}

/* A write failed: the file keeps what the disk holds up to the end of the
 * last whole write; the packets of every later write are lost and counted. */
void Writer::direct_failure(int err) {
    uint64_t pk = 0;
    for (const Pending& p : pending_) pk += p.packets;
    pending_.clear();
    stats_.disk_drops.fetch_add(pk, std::memory_order_relaxed);
    stats_.bytes.fetch_sub(file_bytes_ - released_end_, std::memory_order_relaxed);
    if (ftruncate(files_.fd(), static_cast<off_t>(released_end_)) == 0)
        (void)lseek(files_.fd(), static_cast<off_t>(released_end_), SEEK_SET);
    file_bytes_ = disk_bytes_ = released_end_;
    staged_ = 0;
    if (builder_) {
        if (comp_)
            builder_->truncate_stored(released_end_);
        else
            builder_->truncate(released_end_);
        live_end_ = std::min(live_end_, released_end_);
    }
    if (comp_) {
        // The blocks in flight and the one being filled follow frames the
        // disk lost: they go too, and the stream goes on from the last
        // frame the disk holds.
        drop_in_flight();
        if (builder_) stream_end_ = builder_->end();
    }
    stats_.disk_errors.fetch_add(1, std::memory_order_relaxed);
    enter_error(files_.current_name() + ": " + std::strerror(err));
}

void Writer::finish_file() {
    if (!files_.is_open()) return;
    if (comp_) {
        // The blocks in flight and the last one go into this file first:
        // their records are in its index. No -C cut from within: the file
        // is closing anyway.
        finishing_ = true;
        bool ok = flush_block() && drain();
        finishing_ = false;
        // A lost block is counted; the file keeps its whole frames.
        if (!ok && !files_.is_open()) return;
    }
    if (cfg_.format == Format::kPcapng && cfg_.interface_counters &&
        !disk_error_.load(std::memory_order_relaxed)) {
        std::string isbs;
        uint64_t ts = wall_ns();
        for (uint32_t i = 0; i < cfg_.ifaces.size(); i++) {
            InterfaceCounters c;
            cfg_.interface_counters(i, c);
            isbs += pcapng_isb(i, ts, c);
        }
        if (comp_) {
            (void)write_frame(reinterpret_cast<const uint8_t*>(isbs.data()), isbs.size());
        } else {
            struct iovec iov = {isbs.data(), isbs.size()};
            (void)write_bytes(&iov, 1, isbs.size());
        }
    }
    if (stage_) {
        // The zero-padded last block is cut off again; the offset is left
        // at the end, where a reused file is cut too.
        if (flush_stage(true) && ftruncate(files_.fd(), static_cast<off_t>(file_bytes_)) == 0)
            (void)lseek(files_.fd(), static_cast<off_t>(file_bytes_), SEEK_SET);
        if (file_bytes_ < header_bytes_) {  // a failure took even the header
            files_.discard_current();
            publish_name();
            return;
        }
    }
    end_write_behind();
    if (cfg_.fsync_on_close) (void)fdatasync(files_.fd());
    write_index();  // before the name: a -z command finds it in place
    Status s = files_.close_current();
    if (!s) {
        stats_.close_errors.fetch_add(1, std::memory_order_relaxed);
        enter_error(s.error());
    }
    publish_name();
}

bool Writer::open_file(time_t now, FileSet::Open why) {
    if (why == FileSet::Open::kPeriod) period_started_ = files_.period_start(now);
    file_bytes_ = 0;
    staged_ = 0;
    disk_bytes_ = released_end_ = 0;
    pending_.clear();
    Status s = files_.open_next(now, why);
    if (!s) {
        enter_error(s.error());
        retry_at_ = now + 1;
        publish_name();
        return false;
    }
    wb_started_ = 0;
    if (wb_ && !files_.is_stream() && disk_backed(files_.fd()))
        wb_fd_ = fcntl(files_.fd(), F_DUPFD_CLOEXEC, 0);
    std::string hdr = file_header(cfg_.format, cfg_.ifaces, cfg_.application);
    struct iovec iov = {hdr.data(), hdr.size()};
    header_bytes_ = hdr.size();
    stream_end_ = hdr.size();
    // Compressed: the header is a frame of its own, before the first block.
    bool wrote = comp_ ? write_frame(reinterpret_cast<const uint8_t*>(hdr.data()), hdr.size())
                       : write_bytes(&iov, 1, hdr.size());
    if (comp_) header_bytes_ = file_bytes_;
    if (!wrote) {
        // Not even a header fits: give the file up rather than name it.
        end_write_behind();
        files_.discard_current();
        retry_at_ = now + 1;
        publish_name();
        return false;
    }
    commit(0);  // with --direct, the header is a point a failure can cut back to
    if (builder_) {
        uint16_t linktypes[64];
        size_t n = 0;
        // pcap has the first interface's link type only (format.hh).
        for (const InterfaceDesc& d : cfg_.ifaces) {
            if (n == std::size(linktypes) || (n == 1 && cfg_.format != Format::kPcapng)) break;
            linktypes[n++] = d.linktype;
        }
        if (n == 0) linktypes[n++] = 1;
        builder_->begin(index_format(cfg_.format), std::span<const uint16_t>(linktypes, n),
                        hdr.size());
        if (comp_) builder_->set_codec(cfg_.compress.codec);
        live_end_ = comp_ ? file_bytes_ : hdr.size();
        live_failed_ = false;
    }
    stats_.files.fetch_add(1, std::memory_order_relaxed);
    publish_name();
    return true;
}

void Writer::rotate(time_t now, FileSet::Open why) {
    if (files_.is_stream()) return;  // one stream: never a second header
    finish_file();
    (void)open_file(now, why);
}

bool Writer::ensure_file() {
    if (files_.is_open()) return !output_gone_.load(std::memory_order_relaxed);
    if (files_.is_stream()) return false;
    time_t now = wall_seconds();
    if (now < retry_at_) return false;
    // After a write error: a new file within the same -G period.
    return open_file(now, FileSet::Open::kCut);
}

void Writer::after_write_failure() {
    if (files_.is_stream()) return;  // the stream stays as it is; capd stops
    // Close what was written (whole records only) and start a new file when
    // space returns, at most once a second. A file that got no record is
    // not worth a name.
    if (file_bytes_ <= header_bytes_) {
        end_write_behind();
        files_.discard_current();
        publish_name();
    } else {
        finish_file();
    }
    retry_at_ = wall_seconds() + 1;
}

void Writer::after_write_success() {
    if (disk_error_.load(std::memory_order_relaxed)) {
        std::fprintf(stderr, "capd: writing again, to %s\n", files_.current_name().c_str());
        disk_error_.store(false, std::memory_order_release);
    }
}

/* Records first .. first + count - 1 of chunk c, which end at byte `end`
 * of its data, went into the file at `offset` with a write that succeeded:
 * they go to the index, located by the starts the worker noted (no walk
 * from one record to the next). Measured on a 2-vCPU VM, the writer's
 * user CPU per packet with the index and without: 24 and 1 ns for null:64,
 * 61 and 10 ns for null:1514 (DESIGN.md, "The index beside each file"). */
void Writer::index_records(const Chunk* c, uint32_t first, uint32_t count, uint32_t end,
                           uint64_t offset) {
    builder_->add_chunk(c->data(), c->starts() - 1 - first, -1, count, end, offset);
}

/* The chunk's cut notes (storage/chunk.hh), after its records went: to the
 * index of the file open now, the one its last record went to. One flow
 * lookup per note; nothing per record. Without an open file (a write
 * failure) they are not counted anywhere but capd's flow counters. */
void Writer::index_cuts(const Chunk* c) {
    if (c->cuts == 0 || !files_.is_open()) return;
    const CutNote* n = c->notes();
    index::IndexBuilder::Cut in[64];
    for (uint32_t at = 0; at < c->cuts; at += 64) {
        const uint32_t m = std::min<uint32_t>(64, c->cuts - at);
        for (uint32_t i = 0; i < m; i++) {
            const CutNote& x = n[at + i];
            in[i] = {x.head,        x.head_len,  x.if_id,       x.first_ns, x.last_ns,
                     x.cut_packets, x.cut_bytes, x.dup_packets, x.dup_bytes};
        }
        builder_->add_cuts(in, m);
    }
}

/* The index of the file about to be closed: its records, up to its size
 * (a pcapng file's closing statistics blocks included). */
void Writer::write_index() {
    if (!builder_ || files_.is_stream() || !files_.is_open()) return;
    std::string bytes = builder_->serialize(file_bytes_);
    Status s = files_.write_index(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    if (s) {
        stats_.index_files.fetch_add(1, std::memory_order_relaxed);
        stats_.index_bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
        // The catalogue takes the index from here, not from the disk.
        files_.hand_index(std::move(bytes));
    } else {
        stats_.index_errors.fetch_add(1, std::memory_order_relaxed);
        std::fprintf(stderr, "capd: index: %s\n", s.error().c_str());
    }
}

/* The live index of the file being written, at most once a second, when the
 * disk holds records it does not yet cover. */
void Writer::write_live_index() {
    if (!builder_ || !files_.is_open()) return;
    // --direct: only what the disk holds; the rest is staged or in flight.
    // Compressed: file offsets (the builder keeps the blocks whose frames
    // end by then).
    uint64_t disk = stage_ ? released_end_ : file_bytes_;
    uint64_t valid = comp_ ? disk : std::min(builder_->end(), disk);
    if (valid <= live_end_) return;
    uint64_t now = mono_ns();
    if (now - live_at_ns_ < 1000000000ull) return;
    live_at_ns_ = now;
    live_end_ = valid;
    std::string bytes = builder_->serialize_live(valid);
    Status s = files_.write_live_index(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    if (!s) {
        stats_.index_errors.fetch_add(1, std::memory_order_relaxed);
        if (!live_failed_) std::fprintf(stderr, "capd: index: %s\n", s.error().c_str());
        live_failed_ = true;  // one line per file, not one a second
    }
}

void Writer::write_split(Chunk* c) {
    // -C: cut the chunk at record boundaries (records_within). As in
    // tcpdump, a file is rotated once it has reached the limit, before the
    // next record.
    uint32_t i = 0;
    while (i < c->packets) {
        if (files_.is_open() && file_bytes_ >= cfg_.files.rotate_bytes)
            rotate(wall_seconds(), FileSet::Open::kCut);
        bool have_file = ensure_file();
        // The first record always goes; the next ones while the file stays
        // under the limit.
        uint32_t off = record_start(*c, i);
        uint64_t room =
            cfg_.files.rotate_bytes > file_bytes_ ? cfg_.files.rotate_bytes - file_bytes_ : 0;
        uint32_t lo = records_within(*c, i, room);
        uint32_t end = record_start(*c, lo);
        uint32_t pkts = lo - i;
        struct iovec iov = {const_cast<uint8_t*>(c->data() + off), end - off};
        if (have_file && write_bytes(&iov, 1, end - off)) {
            if (builder_) index_records(c, i, pkts, end, file_bytes_ - (end - off));
            commit(pkts);
            after_write_success();
        } else {
            stats_.disk_drops.fetch_add(pkts, std::memory_order_relaxed);
            if (have_file) after_write_failure();
        }
        i = lo;
    }
}

/* --compress: bytes that are not records (a file header, pcapng
 * statistics) as one frame of their own, compressed by the writer. Only
 * with no block in flight: frames reach the file in order. */
bool Writer::write_frame(const uint8_t* p, size_t n) {
    return put_frame(frame_.data(), comp_->compress(p, n, frame_.data(), frame_.size()), n);
}

/* One frame of z bytes (0: the codec failed), made of raw_bytes, onto the
 * disk; a failed write cuts the file back to its last whole frame. */
bool Writer::put_frame(const uint8_t* frame, size_t z, size_t raw_bytes) {
    if (z == 0) {
        enter_error(files_.current_name() + ": " + index::codec_name(cfg_.compress.codec) +
                    " failed");
        return false;
    }
    struct iovec iov = {const_cast<uint8_t*>(frame), z};
    if (!write_bytes(&iov, 1, z)) return false;
    stats_.raw_bytes.fetch_add(raw_bytes, std::memory_order_relaxed);
    return true;
}

/* The block being filled ends here: its records are one index block,
 * whose frame comes when it is compressed. Without helpers it is
 * compressed and written now; with them it is queued, and the writer
 * waits only when every block is in flight (the oldest frame then), or
 * when the file may reach -C before the next block (all of them: the
 * block that reaches the limit is then the last in the file, as without
 * helpers). False when a write failed (its packets and those of every
 * block behind it are counted as disk drops). */
bool Writer::flush_block() {
    Block& b = fill();
    if (b.raw_len == 0) return true;
    b.bound = comp_->bound(b.raw_len);
    if (b.frame.size() < b.bound) b.frame.resize(b.bound);  // a huge record
    if (builder_) builder_->cut_block();
    fill_seq_++;
    inflight_bound_ += b.bound;
    if (helpers_.empty()) {
        b.frame_len = comp_->compress(b.raw.data(), b.raw_len, b.frame.data(), b.frame.size());
        return retire_head();
    }
    {
        std::lock_guard<std::mutex> g(zmu_);
        b.done = false;
        queued_seq_ = fill_seq_;
    }
    zwork_.notify_one();
    if (cfg_.files.rotate_bytes > 0 && file_bytes_ + inflight_bound_ >= cfg_.files.rotate_bytes)
        return drain();
    if (fill_seq_ - head_seq_ == blocks_.size()) return retire_head();  // back-pressure
    return true;
}

/* The oldest block in flight: waits for its frame and writes it. Then,
 * per frame and in block order, what a frame's write does: the index gets
 * the block's frame, its packets are written, and -C cuts the file once
 * the frame reached the limit. On a failure the file is cut back to its
 * last whole frame (write_bytes), and this block, every block behind it
 * and the one being filled are dropped and counted: their records are
 * indexed at stream offsets past the cut. */
bool Writer::retire_head() {
    Block& b = block_at(head_seq_);
    if (!helpers_.empty()) {
        std::unique_lock<std::mutex> lk(zmu_);
        zdone_.wait(lk, [&b] { return b.done; });
    }
    head_seq_++;
    inflight_bound_ -= b.bound;
    const uint64_t pk = b.packets;
    const size_t n = b.raw_len;
    b.raw_len = 0;
    b.packets = 0;
    if (!files_.is_open() || !put_frame(b.frame.data(), b.frame_len, n)) {
        stats_.disk_drops.fetch_add(pk, std::memory_order_relaxed);
        drop_in_flight();
        if (builder_) {
            builder_->truncate_stored(file_bytes_);
            stream_end_ = builder_->end();
        }
        if (files_.is_open()) after_write_failure();
        return false;
    }
    // The frame is the last write: it ends at file_bytes_.
    if (builder_) builder_->store_block(file_bytes_ - b.frame_len, uint32_t(b.frame_len));
    commit(pk);
    after_write_success();
    // -C counts the bytes on the disk; a file is cut after the block that
    // reached the limit (flush_block's look-ahead makes it the last in
    // flight).
    if (cfg_.files.rotate_bytes > 0 && file_bytes_ >= cfg_.files.rotate_bytes && !finishing_ &&
        head_seq_ == fill_seq_)
        rotate(wall_seconds(), FileSet::Open::kCut);
    return true;
}

/* The frames the helpers have finished, oldest first, without waiting. */
void Writer::retire_ready() {
    while (head_seq_ != fill_seq_) {
        {
            std::lock_guard<std::mutex> g(zmu_);
            if (!block_at(head_seq_).done) return;
        }
        if (!retire_head()) return;
    }
}

/* Every block in flight into the file, in order. False if a write failed. */
bool Writer::drain() {
    bool ok = true;
    while (head_seq_ != fill_seq_) ok = retire_head() && ok;
    return ok;
}

/* A write failed: the blocks in flight and the one being filled will not
 * reach the file; their packets are counted as disk drops. */
void Writer::drop_in_flight() {
    while (head_seq_ != fill_seq_) {
        Block& b = block_at(head_seq_);
        if (!helpers_.empty()) {
            std::unique_lock<std::mutex> lk(zmu_);
            zdone_.wait(lk, [&b] { return b.done; });
        }
        head_seq_++;
        stats_.disk_drops.fetch_add(b.packets, std::memory_order_relaxed);
        b.raw_len = 0;
        b.packets = 0;
    }
    inflight_bound_ = 0;
    Block& f = fill();
    stats_.disk_drops.fetch_add(f.packets, std::memory_order_relaxed);
    f.raw_len = 0;
    f.packets = 0;
}

/* A helper: takes the queued blocks in order and compresses each with its
 * own contexts. The writer owns a block until it queues it and again once
 * it is done. */
void Writer::helper_loop(unsigned k) {
    char name[16];
    std::snprintf(name, sizeof name, "capd-z%u-%u", cfg_.files.writer_index % 100, k);
    pthread_setname_np(pthread_self(), name);
    index::BlockCompressor& comp = *helper_comp_[k];
    std::unique_lock<std::mutex> lk(zmu_);
    for (;;) {
        zwork_.wait(lk, [this] { return zstop_ || taken_seq_ != queued_seq_; });
        if (taken_seq_ == queued_seq_) return;  // stopping, nothing queued
        Block& b = block_at(taken_seq_++);
        lk.unlock();
        b.frame_len = comp.compress(b.raw.data(), b.raw_len, b.frame.data(), b.frame.size());
        lk.lock();
        b.done = true;
        zdone_.notify_all();
    }
}

/* --compress: the chunk's records go to the block being filled, cut at
 * record boundaries (the starts the worker noted) so that a block holds
 * about compress_block_bytes; each full block goes on (flush_block). */
void Writer::compress_chunk(Chunk* c) {
    const size_t target = std::max<size_t>(cfg_.compress_block_bytes, 4096);
    uint32_t i = 0;
    while (i < c->packets) {
        if (!ensure_file()) {
            stats_.disk_drops.fetch_add(c->packets - i, std::memory_order_relaxed);
            return;
        }
        Block& b = fill();
        uint32_t off = record_start(*c, i);
        size_t room = target > b.raw_len ? target - b.raw_len : 0;
        // The first record always goes; the next ones while the block stays
        // under its size.
        uint32_t lo = records_within(*c, i, room);
        uint32_t end = record_start(*c, lo);
        size_t len = end - off;
        if (b.raw_len + len > b.raw.size()) b.raw.resize(b.raw_len + len);  // one record > 1 MiB
        if (b.raw_len == 0) raw_since_ns_ = mono_ns();
        std::memcpy(b.raw.data() + b.raw_len, c->data() + off, len);
        if (builder_) index_records(c, i, lo - i, end, stream_end_);
        b.raw_len += len;
        b.packets += lo - i;
        stream_end_ += len;
        i = lo;
        if (b.raw_len >= target) (void)flush_block();
    }
}

void Writer::write_chunks(Chunk** chunks, unsigned n) {
    stats_.chunks.fetch_add(n, std::memory_order_relaxed);
    if (paused_.load(std::memory_order_acquire)) {
        uint64_t pk = 0;
        for (unsigned i = 0; i < n; i++) pk += chunks[i]->packets;
        stats_.paused_drops.fetch_add(pk, std::memory_order_relaxed);
    } else if (comp_) {
        for (unsigned i = 0; i < n; i++) {
            compress_chunk(chunks[i]);
            if (builder_) index_cuts(chunks[i]);
        }
        if (!helpers_.empty()) retire_ready();
    } else if (cfg_.files.rotate_bytes > 0) {
        for (unsigned i = 0; i < n; i++) {
            write_split(chunks[i]);
            if (builder_) index_cuts(chunks[i]);
        }
    } else {
        struct iovec iov[kDequeueBurst];
        size_t total = 0;
        uint64_t pk = 0;
        for (unsigned i = 0; i < n; i++) {
            iov[i].iov_base = chunks[i]->data();
            iov[i].iov_len = chunks[i]->len;
            total += chunks[i]->len;
            pk += chunks[i]->packets;
        }
        bool have_file = ensure_file();
        if (have_file && (total == 0 || write_bytes(iov, static_cast<int>(n), total))) {
            if (builder_) {
                uint64_t at = file_bytes_ - total;
                for (unsigned i = 0; i < n; i++) {
                    index_records(chunks[i], 0, chunks[i]->packets, chunks[i]->len, at);
                    index_cuts(chunks[i]);
                    at += chunks[i]->len;
                }
            }
            commit(pk);
            after_write_success();
        } else {
            stats_.disk_drops.fetch_add(pk, std::memory_order_relaxed);
            if (have_file) after_write_failure();
        }
    }
    for (unsigned i = 0; i < n; i++) chunks[i]->reset();
    rte_mempool_put_bulk(pool_, reinterpret_cast<void**>(chunks), n);
    if (cfg_.test_delay_us && (test_delay_until_ns_ == 0 || mono_ns() < test_delay_until_ns_))
        usleep(cfg_.test_delay_us);
}

void Writer::run() {
    Chunk* chunks[kDequeueBurst];
    unsigned idle = 0;
    if (cfg_.test_delay_for_s)
        test_delay_until_ns_ = mono_ns() + uint64_t(cfg_.test_delay_for_s) * 1000000000ull;
    for (;;) {
        // Read the flag before draining: if it was set, the producers are
        // gone, and once every ring is then seen empty nothing more can come.
        bool closing = inputs_closed_.load(std::memory_order_acquire);
        unsigned got = 0;
        for (ChunkRing* r : inputs_) {
            unsigned n = r->dequeue_burst(chunks, kDequeueBurst);
            if (n) write_chunks(chunks, n);
            got += n;
        }
        if (rotate_requested_.exchange(false, std::memory_order_acq_rel))
            rotate(wall_seconds(), FileSet::Open::kCut);
        if (builder_) write_live_index();
        if (files_.retaining()) {
            // Retention (file_set.hh): one statvfs about every 100 ms.
            uint64_t t = mono_ns();
            if (t - retained_at_ns_ >= 100000000ull) {
                retained_at_ns_ = t;
                files_.retain(wall_seconds());
            }
        }
        if (cfg_.files.rotate_seconds > 0) {
            time_t now = wall_seconds();
            if (now - period_started_ >= static_cast<time_t>(cfg_.files.rotate_seconds) &&
                now >= retry_at_)
                rotate(now, FileSet::Open::kPeriod);
        }
        if (got == 0) {
            if (closing) break;
            if (files_.is_stream() && files_.is_open() && !output_gone_.load()) check_stream();
            // --direct: nothing to do, so put the staged whole blocks on the
            // disk (a quiet link's packets would otherwise wait for 8 MiB);
            // the last partial block waits for more data or the close.
            if (stage_ && staged_ >= kDirectAlign && files_.is_open() && !flush_stage(false))
                after_write_failure();
            // --compress: a block a quiet link has not filled in a second
            // goes out short, so that its packets reach the disk.
            if (comp_ && fill().raw_len > 0 && files_.is_open() &&
                mono_ns() - raw_since_ns_ >= 1000000000ull)
                (void)flush_block();
            if (!helpers_.empty()) retire_ready();
            // The disk side is not latency critical: rings absorb bursts.
            usleep(++idle < 100 ? 50 : 200);
        } else {
            idle = 0;
        }
    }
    finish_file();
    wb_.reset();  // waits for the drops over the lag
    files_.wait_children(10000);
}

}  // namespace linecap::storage
