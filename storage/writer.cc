#include "storage/writer.hh"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace linecap::storage {
namespace {

constexpr unsigned kDequeueBurst = 16;

time_t wall_seconds() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return ts.tv_sec;
}

uint64_t wall_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + ts.tv_nsec;
}

}  // namespace

Writer::Writer(WriterConfig cfg, std::vector<rte_ring*> inputs, rte_mempool* chunk_pool)
    : cfg_(std::move(cfg)), inputs_(std::move(inputs)), pool_(chunk_pool), files_(cfg_.files) {}

Writer::~Writer() = default;

void Writer::publish_name() {
    std::lock_guard<std::mutex> g(name_mu_);
    current_name_ = files_.is_open() ? files_.current_name() : std::string();
}

Status Writer::open() {
    time_t now = wall_seconds();
    Status s = files_.open_next(now);
    if (!s) return s;
    publish_name();
    file_opened_ = now;
    file_bytes_ = 0;
    stats_.files.fetch_add(1, std::memory_order_relaxed);
    std::string hdr = file_header(cfg_.format, cfg_.ifaces, cfg_.application);
    struct iovec iov = {hdr.data(), hdr.size()};
    if (!write_bytes(&iov, 1, hdr.size())) return make_error(last_error_);
    return Status::success();
}

bool Writer::write_bytes(const struct iovec* iov_in, int iovcnt, size_t total) {
    struct iovec iov[kDequeueBurst + 1];
    int cnt = iovcnt;
    std::memcpy(iov, iov_in, sizeof(iov[0]) * iovcnt);
    struct iovec* cur = iov;
    size_t done = 0;
    while (done < total) {
        ssize_t w = ::writev(files_.fd(), cur, cnt);
        if (w < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            // Cut back to the last whole record so the file stays readable.
            if (done > 0 && ftruncate(files_.fd(), static_cast<off_t>(file_bytes_)) == 0)
                (void)lseek(files_.fd(), static_cast<off_t>(file_bytes_), SEEK_SET);
            stats_.disk_errors.fetch_add(1, std::memory_order_relaxed);
            last_error_ = files_.current_name() + ": " + std::strerror(err);
            if (!in_error_) {
                std::fprintf(stderr, "capd: write error: %s (dropping and counting until it clears)\n",
                             last_error_.c_str());
                in_error_ = true;
            }
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
    if (in_error_) {
        std::fprintf(stderr, "capd: writing to %s again\n", files_.current_name().c_str());
        in_error_ = false;
    }
    file_bytes_ += total;
    stats_.bytes.fetch_add(total, std::memory_order_relaxed);
    return true;
}

void Writer::finish_file() {
    if (!files_.is_open()) return;
    if (cfg_.format == Format::kPcapng && cfg_.interface_counters) {
        std::string isbs;
        uint64_t ts = wall_ns();
        for (uint32_t i = 0; i < cfg_.ifaces.size(); i++) {
            InterfaceCounters c;
            cfg_.interface_counters(i, c);
            isbs += pcapng_isb(i, ts, c);
        }
        struct iovec iov = {isbs.data(), isbs.size()};
        (void)write_bytes(&iov, 1, isbs.size());
    }
    Status s = files_.close_current();
    if (!s) {
        last_error_ = s.error();
        std::fprintf(stderr, "capd: %s\n", s.error().c_str());
    }
}

void Writer::rotate(time_t now) {
    finish_file();
    Status s = files_.open_next(now);
    publish_name();
    file_opened_ = now;
    file_bytes_ = 0;
    if (!s) {
        last_error_ = s.error();
        if (!in_error_) std::fprintf(stderr, "capd: %s\n", s.error().c_str());
        in_error_ = true;
        return;
    }
    stats_.files.fetch_add(1, std::memory_order_relaxed);
    std::string hdr = file_header(cfg_.format, cfg_.ifaces, cfg_.application);
    struct iovec iov = {hdr.data(), hdr.size()};
    (void)write_bytes(&iov, 1, hdr.size());
}

void Writer::write_split(Chunk* c) {
    // -C: cut the chunk at record boundaries. As in tcpdump, a file is
    // rotated once it has reached the limit, before the next record.
    const uint8_t* p = c->data();
    uint32_t off = 0;
    while (off < c->len) {
        if (file_bytes_ >= cfg_.files.rotate_bytes || !files_.is_open()) rotate(wall_seconds());
        uint32_t end = off;
        uint32_t pkts = 0;
        while (end < c->len && (end == off || file_bytes_ + (end - off) < cfg_.files.rotate_bytes)) {
            end += record_length(cfg_.format, p + end);
            pkts++;
        }
        struct iovec iov = {const_cast<uint8_t*>(p + off), end - off};
        if (files_.is_open() && write_bytes(&iov, 1, end - off))
            stats_.packets.fetch_add(pkts, std::memory_order_relaxed);
        else
            stats_.disk_drops.fetch_add(pkts, std::memory_order_relaxed);
        off = end;
    }
}

void Writer::write_chunks(Chunk** chunks, unsigned n) {
    stats_.chunks.fetch_add(n, std::memory_order_relaxed);
    if (paused_.load(std::memory_order_acquire)) {
        uint64_t pk = 0;
        for (unsigned i = 0; i < n; i++) pk += chunks[i]->packets;
        stats_.paused_drops.fetch_add(pk, std::memory_order_relaxed);
    } else if (cfg_.files.rotate_bytes > 0) {
        for (unsigned i = 0; i < n; i++) write_split(chunks[i]);
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
        if (!files_.is_open()) rotate(wall_seconds());
        if (files_.is_open() && write_bytes(iov, static_cast<int>(n), total))
            stats_.packets.fetch_add(pk, std::memory_order_relaxed);
        else
            stats_.disk_drops.fetch_add(pk, std::memory_order_relaxed);
    }
    for (unsigned i = 0; i < n; i++) chunks[i]->reset();
    rte_mempool_put_bulk(pool_, reinterpret_cast<void**>(chunks), n);
    if (cfg_.test_delay_us) usleep(cfg_.test_delay_us);
}

void Writer::run() {
    Chunk* chunks[kDequeueBurst];
    unsigned idle = 0;
    for (;;) {
        // Read the flag before draining: if it was set, the producers are
        // gone, and once every ring is then seen empty nothing more can come.
        bool closing = inputs_closed_.load(std::memory_order_acquire);
        unsigned got = 0;
        for (rte_ring* r : inputs_) {
            unsigned n = rte_ring_sc_dequeue_burst(r, reinterpret_cast<void**>(chunks),
                                                   kDequeueBurst, nullptr);
            if (n) write_chunks(chunks, n);
            got += n;
        }
        if (rotate_requested_.exchange(false, std::memory_order_acq_rel)) rotate(wall_seconds());
        if (cfg_.files.rotate_seconds > 0) {
            time_t now = wall_seconds();
            if (now - file_opened_ >= static_cast<time_t>(cfg_.files.rotate_seconds)) rotate(now);
        }
        if (got == 0) {
            if (closing) break;
            // The disk side is not latency critical: rings absorb bursts.
            usleep(++idle < 100 ? 50 : 200);
        } else {
            idle = 0;
        }
    }
    finish_file();
    files_.wait_children(10000);
}

}  // namespace linecap::storage
