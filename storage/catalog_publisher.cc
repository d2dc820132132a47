#include "storage/catalog_publisher.hh"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "index/capture_reader.hh"
#include "index/index_file.hh"
#include "storage/safe_files.hh"

namespace linecap::storage {

namespace {

/* The index beside capture `path`, opened as capd opens its own files: no
 * symbolic link followed and only a regular file of capd's user with one
 * link, so nothing planted under the name in a shared directory is read,
 * and a FIFO there cannot block this thread (and capd's exit, which joins
 * it) in open(). */
Result<index::Index> load_own_index(const std::string& path, const std::string& top_dir) {
    const std::string ipath = index::index_path_for(path);
    auto [dir, leaf] = split_path(ipath);
    std::string refused;
    int dfd = open_capture_dir(dir, top_dir, false, 0, static_cast<uid_t>(-1),
                               static_cast<gid_t>(-1), refused);
    if (dfd < 0 && !refused.empty()) return make_error(errno, ipath + ": " + refused);
    if (dfd < 0) return make_error(errno, ipath + ": " + std::strerror(errno));
    int fd = open_own_file(dfd, leaf, O_RDONLY, geteuid());
    int err = errno;
    ::close(dfd);
    if (fd < 0) return make_error(err, ipath + ": " + std::strerror(err));
    return index::Index::load_fd(fd, ipath, ~0ull);
}

constexpr char kSpoolMagic[8] = {'L', 'C', 'A', 'P', 'S', 'P', 'L', '1'};
// One INSERT carries at most this many bytes of rows.
constexpr size_t kMaxInsert = 16u << 20;

struct SpoolRecord {
    uint32_t bytes;
    uint32_t rows;
    uint8_t table;
    uint8_t pad[3];
    uint32_t tombstones;
    uint64_t at_ns;
    uint32_t live;
    uint32_t reserved;
};
static_assert(sizeof(SpoolRecord) == 32);

uint64_t now_ns() {
    return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count());
}

bool write_all(int fd, const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
        ssize_t w = ::write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        c += w;
        n -= size_t(w);
    }
    return true;
}

}  // namespace

CatalogPublisher::CatalogPublisher(CatalogOptions o) : o_(std::move(o)) {}

CatalogPublisher::~CatalogPublisher() {
    stop(0);
    if (spool_fd_ >= 0) ::close(spool_fd_);
}

Result<std::unique_ptr<CatalogPublisher>> CatalogPublisher::create(CatalogOptions o) {
    std::unique_ptr<CatalogPublisher> p(new CatalogPublisher(std::move(o)));
    if (!p->o_.spool_path.empty()) {
        auto [dir, leaf] = split_path(p->o_.spool_path);
        int dfd = open_dir(dir);
        if (dfd < 0)
            return make_error(p->o_.spool_path +
                              ": catalogue spool directory: " + std::strerror(errno));
        int fd = open_own_file(dfd, leaf, O_RDWR, geteuid());
        if (fd < 0 && errno == ENOENT)
            fd =
                create_new(dfd, leaf, O_RDWR, 0600, static_cast<uid_t>(-1), static_cast<gid_t>(-1));
        int err = errno;
        ::close(dfd);
        if (fd < 0)
            return make_error(p->o_.spool_path + ": catalogue spool: " +
                              (err == ELOOP   ? std::string("a symbolic link, refused")
                               : err == EPERM ? std::string("not a file of capd's user, refused")
                                              : std::string(std::strerror(err))));
        p->spool_fd_ = fd;
        if (Status s = p->load_spool(); !s) return s.failure();
        p->persist();  // what a smaller limit dropped is gone from the file too
    }
    return p;
}

Status CatalogPublisher::load_spool() {
    struct stat st;
    if (fstat(spool_fd_, &st) != 0) return make_error(o_.spool_path + ": " + std::strerror(errno));
    if (st.st_size == 0)
        return write_all(spool_fd_, kSpoolMagic, 8)
                   ? Status::success()
                   : make_error(o_.spool_path + ": " + std::strerror(errno));
    std::string all(size_t(st.st_size), '\0');
    if (::pread(spool_fd_, all.data(), all.size(), 0) != st.st_size)
        return make_error(o_.spool_path + ": cannot read the catalogue spool");
    if (all.compare(0, 8, std::string(kSpoolMagic, 8)) != 0)
        return make_error(o_.spool_path + ": not a catalogue spool (bad magic); refused");
    size_t off = 8;
    while (off + sizeof(SpoolRecord) <= all.size()) {
        SpoolRecord r;
        std::memcpy(&r, all.data() + off, sizeof r);
        if (r.table > 1 || r.bytes > all.size() - off - sizeof r) break;
        spool_.push_back(
            {r.table, r.rows, r.tombstones, r.live, r.at_ns, all.substr(off + sizeof r, r.bytes)});
        spool_bytes_ += r.bytes;
        off += sizeof r + r.bytes;
    }
    if (off != all.size())
        std::fprintf(stderr,
                     "capd: catalogue spool %s: %zu bytes of a cut record at its end "
                     "dropped\n",
                     o_.spool_path.c_str(), all.size() - off);
    if (!spool_.empty())
        std::fprintf(stderr, "capd: catalogue spool %s: %zu batches from an earlier run to send\n",
                     o_.spool_path.c_str(), spool_.size());
    spool_dirty_ = off != all.size();
    enforce_limit();
    return Status::success();
}

void CatalogPublisher::start() {
    thread_ = std::thread([this] { run(); });
}

void CatalogPublisher::stop(int wait_ms) {
    {
        std::lock_guard<std::mutex> g(mu_);
        if (stop_ && !thread_.joinable()) return;
        stop_ = true;
        stop_deadline_ns_ = now_ns() + uint64_t(wait_ms) * 1000000ull;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void CatalogPublisher::file_opened(const std::string& hidden, uint32_t writer) {
    std::lock_guard<std::mutex> g(mu_);
    events_.push_back({hidden, writer, Kind::kOpened, now_ns(), false, {}});
}

void CatalogPublisher::file_closed(const std::string& path, uint32_t writer, std::string* index) {
    {
        std::lock_guard<std::mutex> g(mu_);
        events_.push_back({path, writer, Kind::kClosed, now_ns()});
        // The helper is behind when the indexes waiting fill the bound: this
        // one stays with the writer (freed at once) and is read back.
        if (index && held_bytes_ + index->size() <= kMaxHeldIndexBytes) {
            held_bytes_ += index->size();
            events_.back().index = std::move(*index);
            events_.back().has_index = true;
        }
    }
    cv_.notify_all();
}

void CatalogPublisher::file_removed(const std::string& path) {
    {
        std::lock_guard<std::mutex> g(mu_);
        events_.push_back({path, 0, Kind::kRemoved, now_ns(), false, {}});
    }
    cv_.notify_all();
}

CatalogStats CatalogPublisher::stats() const {
    std::lock_guard<std::mutex> g(mu_);
    CatalogStats s = st_;
    s.flow_budget = o_.flow_budget;
    if (s.spool_rows > 0 && s.spool_age_s > 0)
        s.spool_age_s = double(now_ns()) / 1e9 - s.spool_age_s;  // held as the oldest's time
    else
        s.spool_age_s = 0;
    return s;
}

std::string CatalogPublisher::absolute(const std::string& p) const {
    if (!p.empty() && p[0] == '/') return p;
    std::string rel = p;
    while (rel.compare(0, 2, "./") == 0) rel = rel.substr(2);
    return o_.cwd + (o_.cwd.empty() || o_.cwd.back() == '/' ? "" : "/") + rel;
}

void CatalogPublisher::make_batches(std::vector<Event>& events) {
    uint64_t no_index = 0, from_memory = 0, read_back = 0;
    const uint64_t at = now_ns();
    // One batch per file (and one for its flows): a full spool then drops
    // the oldest files' rows, not a whole round's.
    auto add = [&](uint8_t table, uint32_t rows, uint32_t tomb, std::string text) {
        if (rows == 0) return;
        spool_bytes_ += text.size();
        spool_.push_back({table, rows, tomb, 0, at, std::move(text)});
        spool_dirty_ = true;
    };
    for (Event& e : events) {
        const std::string path = absolute(e.path);
        std::string files, flows;
        if (e.kind == Kind::kOpened) {
            LiveFile& lf = live_[e.writer];
            lf = LiveFile{};
            lf.hidden = e.path;
            continue;
        }
        if (e.kind == Kind::kClosed) {
            // The snapshots of the file under its hidden name end here.
            auto it = live_.find(e.writer);
            if (it != live_.end()) {
                if (it->second.last_id) {
                    std::string t;
                    append_file_row(t, o_.host, o_.serve, absolute(it->second.hidden),
                                    std::max(e.at_ns, it->second.last_id + 1), true, nullptr, 0,
                                    at);
                    add(0, 1, 1, std::move(t));
                }
                live_.erase(it);
            }
        }
        if (e.kind == Kind::kRemoved) {
            append_file_row(files, o_.host, o_.serve, path, e.at_ns, true, nullptr, 0, at);
            add(0, 1, 1, std::move(files));
            continue;
        }
        // The writer's bytes when it handed them over, else the file's.
        auto idx = e.has_index ? index::Index::from_bytes(std::move(e.index), ~0ull)
                               : load_own_index(e.path, o_.top_dir);
        (e.has_index ? from_memory : read_back)++;
        if (!idx) {
            // No index to describe it: its name alone, so that it is listed.
            append_file_row(files, o_.host, o_.serve, path, e.at_ns, false, nullptr, e.writer, at);
            add(0, 1, 0, std::move(files));
            no_index++;
            continue;
        }
        append_file_row(files, o_.host, o_.serve, path, e.at_ns, false, &idx->header(), e.writer,
                        at);
        add(0, 1, 0, std::move(files));
        auto fl = idx->flows();
        if (!idx->check_flows(0, fl.size())) continue;
        const uint32_t nflows = flow_rows(flows, path, e.at_ns, fl);
        add(1, nflows, 0, std::move(flows));
    }
    {
        std::lock_guard<std::mutex> g(mu_);
        st_.files_without_index += no_index;
        st_.files_from_memory += from_memory;
        st_.files_read_back += read_back;
    }
    enforce_limit();
}

uint32_t CatalogPublisher::flow_rows(std::string& out, const std::string& path, uint64_t file_id,
                                     std::span<const index::FlowEntry> flows) {
    if (o_.flow_budget == 0 || flows.size() <= o_.flow_budget) {
        for (const auto& f : flows) append_flow_row(out, o_.host, path, file_id, f);
        return uint32_t(flows.size());
    }
    const auto rows = budget_flows(flows, o_.flow_budget);
    uint64_t aggregates = 0;
    for (const auto& r : rows) {
        append_flow_row(out, o_.host, path, file_id, r.f, r.agg, r.nflows);
        if (r.agg != FlowAgg::kFlow) aggregates++;
    }
    std::lock_guard<std::mutex> g(mu_);
    st_.budget_files++;
    st_.aggregate_rows += aggregates;
    return uint32_t(rows.size());
}

void CatalogPublisher::enforce_limit() {
    uint64_t dropped = 0;
    while (spool_bytes_ > o_.spool_max && !spool_.empty()) {
        spool_bytes_ -= spool_.front().text.size();
        dropped += spool_.front().rows;
        spool_.pop_front();
        spool_dirty_ = true;
    }
    std::lock_guard<std::mutex> g(mu_);
    st_.dropped_rows += dropped;
    st_.spool_bytes = spool_bytes_;
    st_.spool_rows = 0;
    for (const Batch& b : spool_) st_.spool_rows += b.rows;
    st_.spool_age_s = spool_.empty() ? 0 : double(spool_.front().at_ns) / 1e9;
}

bool CatalogPublisher::send_round() {
    while (!spool_.empty()) {
        // A window of the oldest batches, sent as one INSERT per table: its
        // file rows first (a flow is never there before its file), then its
        // flows. A table sent is emptied in the window, so a retry after a
        // failure in between sends only the rest.
        size_t n = 0, bytes = 0;
        while (n < spool_.size() && (n == 0 || bytes + spool_[n].text.size() <= kMaxInsert))
            bytes += spool_[n++].text.size();
        for (uint8_t table : {uint8_t(0), uint8_t(1)}) {
            std::string body;
            uint64_t rows = 0, tomb = 0, live = 0;
            for (size_t i = 0; i < n; i++) {
                const Batch& b = spool_[i];
                if (b.table != table || b.text.empty()) continue;
                if (table == 1)
                    expand_flow_rows(body, b.text);  // a row under each endpoint
                else
                    body += b.text;
                rows += b.rows;
                tomb += b.tombstones;
                live += b.live;
            }
            if (body.empty()) continue;
            const std::string sql =
                "INSERT INTO " + (table == 0 ? o_.tables.files : o_.tables.flows) + " " +
                (table == 0 ? files_columns() : flows_columns()) + " FORMAT TabSeparated";
            auto r = clickhouse_query(o_.url, sql, body, o_.timeout_ms);
            if (!r) {
                std::lock_guard<std::mutex> g(mu_);
                if (st_.last_error != r.error() || st_.send_errors == 0)
                    std::fprintf(stderr, "capd: catalogue %s: %s; rows kept in the spool\n",
                                 o_.url.text.c_str(), r.error().c_str());
                st_.send_errors++;
                st_.last_error = r.error();
                return false;
            }
            for (size_t i = 0; i < n; i++) {
                Batch& b = spool_[i];
                if (b.table != table) continue;
                spool_bytes_ -= b.text.size();
                b.text.clear();
                b.rows = 0;
            }
            spool_dirty_ = true;
            std::lock_guard<std::mutex> g(mu_);
            if (table == 0) {
                st_.files += rows - tomb - live;
                st_.tombstones += tomb;
                st_.live_snapshots += live;
            } else {
                st_.flows += rows;
            }
        }
        for (size_t i = 0; i < n; i++) spool_.pop_front();
    }
    return true;
}

void CatalogPublisher::persist() {
    if (spool_fd_ < 0 || !spool_dirty_) return;
    spool_dirty_ = false;
    // Rewritten whole: it changes only when rows arrive, leave or are
    // dropped, once per round at most.
    if (ftruncate(spool_fd_, 8) != 0 || lseek(spool_fd_, 8, SEEK_SET) != 8) return;
    for (const Batch& b : spool_) {
        if (b.text.empty()) continue;
        SpoolRecord r{};
        r.bytes = uint32_t(b.text.size());
        r.rows = b.rows;
        r.table = b.table;
        r.tombstones = b.tombstones;
        r.live = b.live;
        r.at_ns = b.at_ns;
        if (!write_all(spool_fd_, &r, sizeof r) ||
            !write_all(spool_fd_, b.text.data(), b.text.size()))
            break;
    }
}

void CatalogPublisher::snapshot_live() {
    const uint64_t at = now_ns();
    for (auto& [writer, lf] : live_) {
        auto live_idx = load_own_index(lf.hidden, o_.top_dir);
        if (!live_idx) continue;  // none yet (written at most once a second)
        const uint64_t end = live_idx->header().capture_bytes;
        if (end <= lf.done) continue;
        // The writer's own file, opened as capd opens its files: never
        // through a symbolic link, only a regular file of capd's user.
        auto [dir, leaf] = split_path(lf.hidden);
        std::string refused;
        int dfd = open_capture_dir(dir, o_.top_dir, false, 0, static_cast<uid_t>(-1),
                                   static_cast<gid_t>(-1), refused);
        if (dfd < 0) continue;
        int fd = open_own_file(dfd, leaf, O_RDONLY, geteuid());
        ::close(dfd);
        if (fd < 0) continue;
        auto reader = index::CaptureReader::open_fd(fd, lf.hidden);
        if (reader) {
            if (!lf.begun) {
                std::vector<uint16_t> lts;
                for (const auto& itf : reader->info().interfaces) lts.push_back(itf.linktype);
                lf.builder = std::make_unique<index::IndexBuilder>();
                lf.builder->begin(reader->info().format, lts, reader->info().data_start);
                lf.done = reader->info().data_start;
                lf.begun = true;
            }
            index::IndexBuilder& b = *lf.builder;
            auto r = reader->for_each(lf.done, end, [&](const index::Record& rec) {
                b.add(rec.offset, rec.rec_bytes, rec.ts_ns, rec.if_id, rec.data, rec.caplen,
                      rec.wirelen);
                return true;
            });
            if (r && *r > lf.done) {
                lf.done = *r;
                auto idx = index::Index::from_bytes(b.serialize(lf.done), ~0ull);
                if (idx && idx->check_flows(0, idx->flows().size())) {
                    const uint64_t id = std::max(at, lf.last_id + 1);
                    const std::string path = absolute(lf.hidden);
                    std::string files, flows;
                    append_file_row(files, o_.host, o_.serve, path, id, false, &idx->header(),
                                    writer, at);
                    const uint32_t n = flow_rows(flows, path, id, idx->flows());
                    spool_bytes_ += files.size() + flows.size();
                    spool_.push_back({0, 1, 0, 1, at, std::move(files)});
                    if (n) spool_.push_back({1, n, 0, 0, at, std::move(flows)});
                    spool_dirty_ = true;
                    lf.last_id = id;
                }
            }
        }
        ::close(fd);
    }
    enforce_limit();
}

void CatalogPublisher::run() {
    uint64_t retry_at = 0, live_at = now_ns() + uint64_t(o_.live_ms) * 1000000ull;
    for (;;) {
        std::vector<Event> events;
        bool stopping;
        uint64_t deadline;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait_for(lk, std::chrono::milliseconds(o_.flush_ms),
                         [&] { return stop_ || events_.size() >= 64; });
            events.swap(events_);
            held_bytes_ = 0;
            stopping = stop_;
            deadline = stop_deadline_ns_;
        }
        if (!events.empty()) make_batches(events);
        if (!stopping && now_ns() >= live_at) {
            snapshot_live();
            live_at = now_ns() + uint64_t(o_.live_ms) * 1000000ull;
        }
        const uint64_t now = now_ns();
        if (!spool_.empty() && (now >= retry_at || stopping)) {
            if (!(stopping && now >= deadline && retry_at > 0) && !send_round())
                retry_at = now_ns() + 2000000000ull;  // a server down is retried every 2 s
            else
                retry_at = 0;
            enforce_limit();
        }
        persist();
        if (stopping) {
            if (spool_.empty() || now_ns() >= deadline) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            retry_at = 0;
        }
    }
}

}  // namespace linecap::storage
