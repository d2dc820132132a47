/* Retention: which files of a capture may go, and the values that say when.
 *
 * --retain-free PCT|SIZE keeps at least that much of the output file system
 * free (as statvfs's f_bavail counts it) and --retain-age DURATION deletes
 * files whose last write is older than that; FileSet::retain() applies
 * both to the oldest whole files of its own names (file_set.hh). This file
 * holds the parts that need no FileSet: parsing the values, the start-up
 * check that a floor can be met at all, matching a directory entry against
 * the set's naming, and reading the first packet time from an index.
 *
 * Cold code, any thread; allocates and makes syscalls (statvfs, one open
 * and pread per index header).
 */
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.hh"

namespace linecap::storage {

/* A free-space floor: a percentage of the file system, or bytes. */
struct RetainFree {
    double pct = 0;      // 0 < pct < 100, or 0 when bytes is given
    uint64_t bytes = 0;  // > 0, or 0 when pct is given
    bool on() const { return pct > 0 || bytes > 0; }
    /* The floor in bytes on a file system of `total` bytes. */
    uint64_t floor(uint64_t total) const {
        return bytes ? bytes : static_cast<uint64_t>(double(total) * pct / 100.0);
    }
};

/* One free-space floor for the writers of a capture (--writers N): their
 * FileSets share it (FileSetOptions::retention_group). At its retention
 * check each writer publishes here the modification time of the oldest
 * file it may delete and the bytes it removed whose blocks may not be free
 * yet; a writer deletes its oldest file only while the floor is not met
 * counting every writer's pending bytes, and only when that file is the
 * oldest of all (else the writer owning the oldest deletes it at its next
 * check, within 100 ms). So the capture's oldest files go first, and no
 * more than the floor needs. A writer whose last check is over a second
 * old (a stalled writer), or that has not checked within a second of the
 * group's first check, neither holds the others back nor counts its
 * pending bytes. The mutex is taken only in that check (about every
 * 100 ms per writer), never per packet. Any writer thread. */
struct RetentionGroup {
    struct Member {
        bool has_oldest = false;
        int64_t oldest_mtime_ns = 0;  // of its oldest deletable file
        uint64_t freed_pending = 0;   // removed, blocks maybe not yet free
        uint64_t checked_ns = 0;      // CLOCK_MONOTONIC of its last check; 0: none yet
    };
    explicit RetentionGroup(size_t writers) : members(writers) {}
    std::mutex mu;
    std::vector<Member> members;  // by writer index
    uint64_t first_check_ns = 0;  // the group's first check: writers not heard
                                  // from yet hold the others back for a second
    bool floor_unmet = false;     // said once per episode, for the whole capture
};

/* "10%", "12.5%", "500M", "2G", "1.5GiB", "1048576": a percentage above 0
 * and below 100, or a size above 0 (k, M, G, T: powers of 1000; KiB, MiB,
 * GiB, TiB: of 1024; a bare number is bytes). The error is one line for
 * --retain-free. */
Result<RetainFree> parse_retain_free(const std::string& text);

/* "90", "90s", "15m", "6h", "7d": seconds above 0 and at most 100 years.
 * The error is one line for --retain-age. */
Result<uint64_t> parse_retain_age(const std::string& text);

/* Whether a floor can ever be met on the file system holding `dir`: it must
 * be below the file system's size. The error names the sizes. */
Status check_retain_free(const std::string& dir, const RetainFree& free);

/* Whether `leaf` is a name a set with -w leaf `pattern` writes: `pattern`
 * itself (with -G: passed through strftime; only %Y %m %d %H %M %S %y %j
 * %s %F %T %% are matched, any other conversion matches nothing), then
 * optionally a decimal counter (-C, or the number a repeated name gets). */
bool retained_name(const std::string& pattern, bool timed, const std::string& leaf);

/* Whether `name` is a directory name strftime makes of the -w directory
 * component `pattern` (the conversions retained_name() matches; no
 * counter, never "." or ".."). */
bool strftime_dir_name(const std::string& pattern, const std::string& name);

/* Whether every conversion in `pattern` is one retained_name() matches. */
bool strftime_known(const std::string& pattern);

/* The first packet's time (ns since the epoch) an index file in `dir_fd`
 * records (index/index_file.hh), or 0: no such file, not an index, no
 * packet. Never follows a symbolic link. */
uint64_t index_first_ns(int dir_fd, const std::string& index_leaf);

}  // namespace linecap::storage
