#include "dataplane/writer_config.hh"

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
    cfg.format = o.format;
    cfg.application = kApplication;
    cfg.test_delay_us = o.test_writer_delay_us;
    cfg.test_delay_for_s = o.test_writer_delay_for_s;
    cfg.fsync_on_close = o.fsync;
    cfg.write_behind_bytes = uint64_t(o.write_behind_mb) << 20;
    cfg.index = !o.no_index;
    cfg.compress = o.codec;
    cfg.compress_block_bytes = o.compress_block_bytes;
    cfg.files.suffix = index::codec_suffix(o.codec.codec);
    return cfg;
}

}  // namespace linecap::dataplane
