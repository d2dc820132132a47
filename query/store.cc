#include "query/store.hh"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "index/builder.hh"

namespace linecap::query {

namespace {

bool ends_with(const std::string& s, const std::string& t) {
    return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

bool is_live_leaf(const std::string& leaf) {
    return leaf.size() > 9 && leaf[0] == '.' && ends_with(leaf, ".partial");
}

std::string leaf_of(const std::string& path) {
    auto slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Result<std::string> build_index(index::CaptureReader& reader, uint64_t limit, uint64_t& end,
                                bool& sequential, uint64_t capture_bytes, bool compact_flows) {
    const index::CaptureInfo& info = reader.info();
    std::vector<uint16_t> linktypes;
    for (const auto& i : info.interfaces) linktypes.push_back(i.linktype);
    index::IndexBuilder b;
    b.set_compact_flows(compact_flows);
    b.begin(info.format, linktypes, info.data_start);
    auto r = reader.for_each(info.data_start, limit, [&](const index::Record& rec) {
        b.add(rec.offset, rec.rec_bytes, rec.ts_ns, rec.if_id, rec.data, rec.caplen, rec.wirelen);
        return true;
    });
    if (!r) return r.failure();
    end = std::max(*r, b.end());
    sequential = reader.sequential();
    if (sequential) b.mark_sequential();
    return b.serialize(std::max(end, capture_bytes));
}

FdHandle::~FdHandle() {
    if (fd >= 0) ::close(fd);
}

Store::~Store() {
    for (auto& f : files_) {
        f.reader.reset();
        if (f.fd >= 0 && !f.file) ::close(f.fd);
    }
}

Result<Store> Store::open(const std::vector<std::string>& inputs,
                          const std::vector<OpenedInput>& opened) {
    Store s;
    for (const auto& in : inputs) {
        struct stat st;
        if (::stat(in.c_str(), &st) != 0)
            return make_error(errno, in + ": " + std::strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            if (Status e = s.add_dir(in); !e) return e.failure();
            continue;
        }
        int fd = ::open(in.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return make_error(errno, in + ": " + std::strerror(errno));
        const std::string leaf = leaf_of(in);
        const bool live = leaf.size() > 1 && leaf[0] == '.' && ends_with(leaf, ".partial");
        if (Status e = s.add_file(fd, in, live, false); !e) return e.failure();
    }
    for (const auto& in : opened) {
        if (Status e = s.add_file(in.file->fd, in.path, is_live_leaf(leaf_of(in.path)), false,
                                  in.dir, in.file);
            !e)
            return e.failure();
    }
    for (uint32_t i = 0; i < s.files_.size(); i++) s.files_[i].order = i;
    return s;
}

Status Store::add_dir(const std::string& dir) {
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return make_error(errno, dir + ": " + std::strerror(errno));
    const int keep = ::fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    if (keep < 0) {
        int e = errno;
        ::close(dfd);
        return make_error(e, dir + ": " + std::strerror(e));
    }
    auto handle = std::make_shared<const FdHandle>(keep);
    DIR* d = ::fdopendir(dfd);
    if (d == nullptr) {
        int e = errno;
        ::close(dfd);
        return make_error(e, dir + ": " + std::strerror(e));
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
    }
    if (errno != 0) {
        int e = errno;
        ::closedir(d);
        return make_error(e, dir + ": " + std::strerror(e));
    }
    std::sort(names.begin(), names.end());
    const std::string prefix = dir.empty() || dir.back() == '/' ? dir : dir + "/";
    Status result;
    for (const auto& n : names) {
        const std::string path = prefix + n;
        if (index::is_index_leaf(n)) continue;
        const bool hidden = n[0] == '.';
        const bool live = hidden && ends_with(n, ".partial") && n.size() > 9;
        if (hidden && !live) {
            ignored_.push_back({path, "hidden, not a file being written"});
            continue;
        }
        struct stat st;
        if (::fstatat(dfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) continue;  // renamed or removed since the listing
            ignored_.push_back({path, std::strerror(errno)});
            continue;
        }
        if (S_ISLNK(st.st_mode)) {
            ignored_.push_back({path, "symbolic link, not followed"});
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            ignored_.push_back({path, "not a regular file"});
            continue;
        }
        int fd = ::openat(dfd, n.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ENOENT) continue;
            ignored_.push_back({path, std::strerror(errno)});
            continue;
        }
        if (Status e = add_file(fd, path, live, true, handle); !e) {
            result = e;
            break;
        }
    }
    ::closedir(d);
    return result;
}

Status Store::add_file(int fd, const std::string& path, bool live, bool in_dir,
                       std::shared_ptr<const FdHandle> dir, std::shared_ptr<const FdHandle> file) {
    auto r = index::CaptureReader::open_fd(fd, path);
    if (!r) {
        if (in_dir) {
            ::close(fd);
            // A live file may still be too short for its header.
            if (!live) ignored_.push_back({path, "not a pcap or pcapng file"});
            return {};
        }
        if (!file) ::close(fd);  // else the caller's handle closes it
        return make_error(r.code(), r.error().find(path) == std::string::npos
                                        ? path + ": " + r.error()
                                        : r.error());
    }
    StoreFile f;
    f.path = path;
    f.dir = std::move(dir);
    f.file = std::move(file);
    f.live = live;
    f.fd = fd;
    f.reader.emplace(std::move(*r));
    files_.push_back(std::move(f));
    return {};
}

namespace {

/* Where the records an index covers end: capture_bytes, or for a
 * compressed file (offsets in its stream) the end of the last block. */
uint64_t stream_end(const index::Index& idx) {
    if (idx.codec() == index::Codec::kNone) return idx.header().capture_bytes;
    auto b = idx.blocks();
    return b.empty() ? idx.header().data_start : b.back().offset + b.back().bytes;
}

}  // namespace

Status Store::index(FILE* warn, bool need_flows) {
    for (auto& f : files_) {
        std::string w;
        Status s = index_file(f, w, need_flows);
        std::fputs(w.c_str(), warn);
        if (!s) return s;
    }
    return {};
}

Status Store::index_file(StoreFile& f, std::string& warning, bool need_flows) {
    const index::CaptureInfo& info = f.reader->info();
    std::string why;
    uint64_t limit = ~0ull;
    auto loaded = f.dir ? index::Index::load_at(f.dir->fd, index::index_leaf_for(leaf_of(f.path)),
                                                index::index_path_for(f.path), info.size)
                        : index::Index::load(index::index_path_for(f.path), info.size);
    if (!loaded) {
        why = loaded.code() == ENOENT ? "no index" : loaded.error();
    } else {
        const index::IndexHeader& h = loaded->header();
        if (h.format != uint32_t(info.format) || h.data_start != info.data_start) {
            why = "index does not describe this file";
        } else if (loaded->live() && !f.live) {
            why = "live index beside a closed file";
        } else if (!loaded->live() && h.capture_bytes != info.size) {
            why = "stale index: describes " + std::to_string(h.capture_bytes) +
                  " bytes, file has " + std::to_string(info.size);
        } else if (f.reader->codec() != loaded->codec() ||
                   (loaded->codec() != index::Codec::kNone && !f.reader->use_index(*loaded))) {
            why = "index does not describe this file";
        } else if (loaded->live() && need_flows) {
            // Blocks only: the flows come from reading the valid part.
            limit = stream_end(*loaded);
        } else {
            f.valid_end = loaded->live() ? stream_end(*loaded) : info.size;
            // Compressed: the stream's offsets; the blocks end it.
            if (loaded->codec() != index::Codec::kNone) f.valid_end = stream_end(*loaded);
            f.sequential = h.flags & index::kIndexSequential;
            f.index = std::move(*loaded);
            f.indexed = f.has_index = true;
            return {};
        }
    }
    if (!why.empty()) {
        f.scan_reason = why;
        warning += scan_warning(f, why);
    } else {
        f.scan_reason = "live file";
    }
    return build(f, limit);
}

std::string Store::scan_warning(const StoreFile& f, const std::string& why) {
    return "capq: warning: " + f.path + ": " + why + "; scanning\n";
}

Status Store::build(StoreFile& f, uint64_t limit) {
    uint64_t end = 0;
    bool seq = false;
    auto built = build_index(*f.reader, limit, end, seq);
    if (!built) return built.failure();
    auto idx = index::Index::from_bytes(std::move(*built), ~0ull);
    if (!idx) return make_error(idx.code(), f.path + ": " + idx.error());
    f.index = std::move(*idx);
    f.indexed = false;
    f.has_index = true;
    f.valid_end = end;
    f.sequential = seq;
    return {};
}

Status Store::rescan(StoreFile& f, FILE* warn, const std::string& why) {
    std::string w;
    Status s = rescan(f, w, why);
    std::fputs(w.c_str(), warn);
    return s;
}

Status Store::rescan(StoreFile& f, std::string& warning, const std::string& why) {
    f.scan_reason = why;
    warning += scan_warning(f, why);
    return build(f, f.live ? f.valid_end : ~0ull);
}

}  // namespace linecap::query
