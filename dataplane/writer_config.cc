#include "dataplane/writer_config.hh"

#include <limits.h>
#include <unistd.h>

#include <cstring>

#include "storage/safe_files.hh"

namespace linecap::dataplane {

storage::WriterConfig writer_config(const Options& o, unsigned writer_index) {
    storage::WriterConfig cfg;
    cfg.files.path = o.write_path;
    cfg.files.rotate_bytes = static_cast<uint64_t>(o.rotate_mb * 1e6);
    cfg.files.rotate_seconds = o.rotate_seconds;
    cfg.files.max_files = o.max_files;
    cfg.files.post_rotate_cmd = o.post_rotate_cmd;
    cfg.files.mode = o.file_mode;
    // --preallocate claims the ring once and writes over it (file_set.hh).
    cfg.files.reuse = o.reuse_files || o.preallocate;
    cfg.files.preallocate = o.preallocate;
    cfg.files.direct = o.direct;
    cfg.files.writer_index = writer_index;
    cfg.files.writer_count = o.writers;
    cfg.files.owner_uid = o.run_as_uid;
    cfg.files.owner_gid = o.run_as_gid;
    cfg.files.child_cpus = o.start_cpus;
    cfg.files.retain_free = o.retain_free;
    cfg.files.retain_age_s = o.retain_age_s;
    cfg.files.align = o.align;
    cfg.format = o.format;
    cfg.application = kApplication;
    cfg.test_delay_us = o.test_writer_delay_us;
    cfg.test_delay_for_s = o.test_writer_delay_for_s;
    cfg.fsync_on_close = o.fsync;
    cfg.write_behind_bytes = uint64_t(o.write_behind_mb) << 20;
    cfg.index = !o.no_index;
    cfg.compress = o.codec;
    cfg.compress_block_bytes = o.compress_block_bytes;
    cfg.compress_threads = static_cast<uint32_t>(o.compress_threads);
    cfg.files.suffix = index::codec_suffix(o.codec.codec);
    return cfg;
}

Result<std::unique_ptr<storage::CatalogPublisher>> make_catalog_publisher(const Options& o) {
    storage::CatalogOptions c;
    auto url = storage::parse_catalog_url(o.catalog_url);
    if (!url) return make_error("--catalog: " + url.error());
    c.url = *url;
    if (!o.catalog_tables.empty()) {
        auto t = storage::parse_catalog_tables(o.catalog_tables);
        if (!t) return t.failure();
        c.tables = *t;
    }
    c.host = o.catalog_host;
    if (c.host.empty()) {
        char name[HOST_NAME_MAX + 1] = {};
        if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0')
            return make_error("--catalog: no hostname; give --catalog-host NAME");
        c.host = name;
    }
    c.serve = o.catalog_serve;
    // With strftime conversions in -w's directory the capture's directories
    // below its literal part are walked as the writers walk them, and the
    // spool stays in that literal part (one file across the periods).
    std::string dir = storage::split_path(o.write_path).first;
    if (o.rotate_seconds > 0) c.top_dir = storage::literal_dir(dir);
    c.spool_path = o.catalog_spool;
    if (c.spool_path.empty())
        c.spool_path = (c.top_dir.empty() ? dir : c.top_dir) + "/.capd-catalog.spool";
    c.spool_max = o.catalog_spool_max;
    c.flow_budget = o.catalog_flow_budget;
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == nullptr)
        return make_error(std::string("--catalog: cannot name the current directory: ") +
                          std::strerror(errno));
    c.cwd = cwd;
    auto p = storage::CatalogPublisher::create(std::move(c));
    if (!p) return make_error("--catalog: " + p.error());
    return std::move(*p);
}

}  // namespace linecap::dataplane
