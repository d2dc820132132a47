/* FileSet: one writer's sequence of output files, with tcpdump's rotation.
 *
 * Names follow tcpdump 4.99: with -C the files are NAME, NAME1, NAME2...;
 * with -W the counter is zero-padded to the width of W-1 and wraps
 * (NAME0..NAME{W-1}; -W 1 writes NAME over and over). With -G the name is
 * passed through strftime(3) once per -G period, at the time the period
 * starts, and with -C the counter restarts at each period: the files of one
 * period are PERIOD, PERIOD1... (-W: PERIOD0..PERIOD{W-1}).
 *
 * -W bounds the files on disk, counting the one being written: when a new
 * file opens and W files exist, the oldest is removed first (with -C, the
 * file whose name the new one takes), so a file system of about C x W
 * bytes holds the ring, as with tcpdump. Unlike tcpdump, -W also bounds the
 * number of -G files, and across -G periods: the oldest is removed.
 *
 * With path "-" the set is standard output: one stream, opened once, never
 * named, rotated or removed (the options refuse -C/-G/-W/-z with it).
 *
 * Each file is written under a hidden name (".NAME.partial" in the same
 * directory) and renamed into place when closed, so any file bearing its final
 * name is whole. -z CMD runs as `CMD FILE` on every closed file, with only
 * descriptors 0-2, default signals and `child_cpus` (storage/spawn.hh).
 *
 * The directory may be writable by others: every file is created exclusively
 * and every entry is named relative to a descriptor of the directory, never
 * following a symbolic link (storage/safe_files.hh). A new file is given to
 * `owner_uid` (-Z) on its descriptor and locked (flock) while it is written.
 * An entry already under a hidden name capd needs is recovered when it is a
 * file a run that did not finish left (storage/recover.hh: the start-up scan
 * and open_next do this); anything else there (a symbolic link, another
 * user's file) is never touched, and the file that needs the name fails.
 * With strftime directories the start-up scan recovers the hidden files of
 * this set's names in every existing directory they name (see below), so a
 * run killed in one -G period and restarted in the next leaves no hidden
 * file behind in the earlier period's directory.
 *
 * With -G, strftime conversions in the directory part of the name
 * (DIR/%Y-%m-%d/NAME) name directories below the part named literally
 * (literal_dir()), which is trusted as the user named it. Those below are
 * walked one component at a time from its descriptor without following a
 * symbolic link (open_dir_below()), for every use: the file being opened,
 * -W and retention removals, indexes. open_next() makes the missing ones
 * (the files' owner, their mode with search permission added); one that
 * exists must be a directory of root, of capd's user or of the files'
 * owner. Anything else there (a link planted by a user who may write in the
 * parent, another user's directory) is refused: the file's open fails with
 * a line naming it, and a file in it is neither removed nor retired. At
 * start, recover_stale() walks the existing directories they name
 * (walk_dirs_below(): never through a link, only directories of root, of
 * capd's user or of the files' owner, at most kTimeDirEntries entries read)
 * and recovers in each the hidden files of this set's names
 * (retained_name()), as in a literal directory. A directory that a -W
 * removal or retention empties is removed, and its strftime-named parents
 * while empty (remove_empty_dirs()), never the current file's.
 *
 * With `reuse`, a new file takes over the storage of the file it displaces
 * (the same name from a -W ring or an earlier run, else the oldest file -W is
 * about to delete): that file is renamed to the new hidden name and written
 * over, and it is cut at the write offset before it is named. Freed and newly
 * allocated tmpfs or page-cache pages are the writer's main cost on some
 * hosts; overwritten ones are not. A file still open in a -z command, or with
 * another hard link, is never reused.
 *
 * With `preallocate` the ring's storage is claimed before capture starts,
 * for each of the W names (the W files, the one being written included):
 * an existing ring file gets C bytes allocated past its end (fallocate with
 * KEEP_SIZE: its size and bytes stay), any other name a hidden spare that
 * the first pass writes over. On a disk a spare is
 * fallocated (no data written); on tmpfs it is C bytes of zeros, so that its
 * pages are touched before capture. A file system without room for the ring
 * is an error at start, not a disk-full episode later. Spares left unused
 * are deleted when the set closes.
 *
 * Removing a file (-W's oldest, or the older file of a name a new one takes)
 * unlinks its name at once, but the last close of the file, where the kernel
 * frees its blocks (about 0.2 s for 1 GB on ext4), happens on a helper
 * thread, so the writer never waits for it, unless a write finds the file
 * system full (wait_removals()).
 *
 * Every capture file may have an index beside it (index/index_file.hh):
 * DIR/.NAME.idx for a closed file, written through write_index() just
 * before close_current() names the file (so a -z command finds it in
 * place), and the live index DIR/.NAME.partial.idx of the file being
 * written (write_live_index()). Whatever removes a capture file (-W, a name
 * a new file takes, a displaced file reused, discard_current(), unused
 * spares) removes its index and live index too; the start-up scan removes
 * the index files a run that did not finish left (an index being written,
 * the live index of a file it recovers, an index whose capture is gone). A
 * recovered file has no index: capq scans it until `capq --reindex`, whose
 * index retention deletes with it.
 *
 * Retention (--retain-free, --retain-age; storage/retention.hh): retain()
 * deletes the oldest whole files of this set, with their indexes, while the
 * output file system has less free than the floor (f_bavail, counting the
 * blocks of files just removed whose last close is still pending), and
 * every file whose last write is older than the age. The file being written
 * is never deleted: when it alone is left the floor is not met (said once)
 * and a full disk is the disk-full path of the writer. Candidates are the
 * files this run closed and, found by the start-up scan (recover_stale()),
 * the files an earlier run left under this set's names (retained_name():
 * the -w name, through strftime with -G, and its counter) and the files
 * recovered from killed runs of these names (recovered_from(), recover.hh),
 * with strftime directories in every existing directory they name below the
 * literal part (walk_dirs_below(), at most kTimeDirEntries entries read),
 * ordered by their modification time, oldest first; a restarted capture
 * keeps its floor and age over what it wrote before, however often it was
 * killed (-W never counts or deletes a recovered file: see DESIGN). Only
 * capd's regular files with one link are deleted (as --reuse-files reuses
 * them): a file with another link, a symbolic link or another user's file
 * is left alone and forgotten (one line); a file still open in a -z command
 * waits, and the next oldest goes instead. With a retention_group (--writers N) the floor is the capture's:
 * the writers' sets delete the oldest file of all of them first, and
 * together no more than the floor needs (retention.hh). A strftime directory
 * that retention empties is removed, as after -W (see above). Each deletion
 * is one stderr line and counted (files_retired(), bytes_retired());
 * oldest_kept_ns() is the first packet of the oldest file left, from its
 * index (0: unknown).
 *
 * With `align`, -G periods start at whole multiples of G seconds of local
 * time (-G 60: at each minute; -G 86400: at local midnight); the first
 * period is the one capd starts in, named by its start. period_start()
 * gives a period's start for the writer.
 *
 * Cold code for one writer thread: it allocates and makes syscalls, only at
 * open/rotate/close (and for the live index, at most once a second, and
 * retain(), which the writer calls about every 100 ms: one statvfs; not at
 * the last close, so capd's stop never deletes the file it just named).
 */
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hh"
#include "storage/retention.hh"
#include "storage/safe_files.hh"

namespace linecap::storage {

struct FileSetOptions {
    std::string path;             // -w (may contain strftime conversions with -G)
    uint64_t rotate_bytes = 0;    // -C in bytes; 0 = no size rotation
    uint32_t rotate_seconds = 0;  // -G; 0 = no time rotation
    uint32_t max_files = 0;       // -W; 0 = unlimited
    std::string post_rotate_cmd;  // -z
    mode_t mode = 0640;
    uint32_t writer_index = 0;  // when writer_count > 1, "_wN" marks each writer's files
    uint32_t writer_count = 1;
    bool reuse = false;        // --reuse-files: write over the displaced file
    bool direct = false;       // --direct: open with O_DIRECT (aligned writes only)
    bool preallocate = false;  // --preallocate: claim -C x -W at start (needs reuse, no -G)
    // --compress: the codec's suffix (".zst"), after the whole name (the
    // -C counter included): NAME1.zst.
    std::string suffix;
    // -Z: new files are given to this user (fchown on the descriptor); -1:
    // the process's own. Only files of this user are reused or recovered.
    uid_t owner_uid = static_cast<uid_t>(-1);
    gid_t owner_gid = static_cast<gid_t>(-1);
    // CPUs for -z commands: capd's at start (storage/spawn.hh); empty: the
    // writer's own.
    std::vector<int> child_cpus;
    // --retain-free and --retain-age (seconds; 0: off): see retain().
    RetainFree retain_free;
    uint64_t retain_age_s = 0;
    // --writers N: the floor shared by every writer's set (retention.hh);
    // null: this set keeps the floor alone.
    std::shared_ptr<RetentionGroup> retention_group;
    bool align = false;  // --align: -G periods at whole multiples of G
    // Told of every file opened (its hidden name), named into place (its
    // final name, after the rename) and of every named file removed or taken
    // over for reuse: the fleet catalogue (storage/catalog_publisher.hh).
    // Called on the writer thread at open/close, never per packet; must not
    // block. `index`: at kClosed, the closed file's index bytes as written
    // beside it (hand_index()), which the callee may move away; else null.
    enum class FileEvent { kOpened, kClosed, kRemoved };
    std::function<void(const std::string& name, FileEvent ev, std::string* index)> on_file;
};

class Disposer;

class FileSet {
public:
    explicit FileSet(FileSetOptions opts);
    ~FileSet();
    FileSet(const FileSet&) = delete;
    FileSet& operator=(const FileSet&) = delete;

    /* Why a file opens: kPeriod starts a -G period at `now` (the first file
     * is one too): its strftime name is evaluated at `now` and the -C counter
     * restarts. kCut (-C, a write error, `capctl rotate`) stays in the
     * period: the same strftime name, the next counter. Without -G both
     * only count on. */
    enum class Open { kPeriod, kCut };

    /* Opens the next file under its hidden name, first removing the oldest
     * when -W files exist. `now` is wall-clock seconds. */
    Status open_next(time_t now, Open why = Open::kPeriod);

    /* Recovers the hidden files a run that did not finish left under names
     * this set writes (see above), in its directory or, with strftime
     * directories, in each existing one they name, logging one line for
     * each entry found (one for all the empty ones in a directory).
     * Call once, before preallocate() and the first open_next(). */
    void recover_stale();

    /* With `preallocate`: allocates the ring's storage (see above). On an
     * error nothing it created is left. */
    Status preallocate();

    /* Closes and deletes the current file without naming it. */
    void discard_current();

    /* Renames the current file into place, applies -W, and starts -z. A
     * reused file is first cut at the write offset, dropping its older tail. */
    Status close_current();

    /* Writes `bytes` as the index of the current file under its final name
     * (DIR/.NAME.idx, atomically, with the files' mode and owner); call just
     * before close_current(). The error names the index file. */
    Status write_index(std::span<const uint8_t> bytes);
    /* The bytes write_index() wrote, kept (moved, no copy) for the kClosed
     * event of on_file; dropped after it. */
    void hand_index(std::string bytes) {
        closing_index_ = std::move(bytes);
        has_closing_index_ = true;
    }
    /* Writes `bytes` as the live index of the current file (beside its
     * hidden name, atomically). The error names the index file. */
    Status write_live_index(std::span<const uint8_t> bytes);

    int fd() const { return fd_; }
    bool is_open() const { return fd_ >= 0; }
    /* Whether the current file is written over an older one's storage. */
    bool reused() const { return reused_; }
    const std::string& current_name() const { return final_name_; }
    uint32_t files_closed() const { return files_closed_; }

    /* Waits for every -z command started so far (at most timeout_ms, or
     * until stop_waiting()), then names those still running. */
    void wait_children(int timeout_ms);
    /* Cuts every wait_children() short, now and later: capd's second stop
     * signal. Async-signal-safe (one lock-free atomic store). */
    static void stop_waiting();
    /* Whether stop_waiting() was called. Any thread. */
    static bool waiting_stopped();

    /* -z commands that could not be started, exited with a status other
     * than 0 or were killed by a signal; each is also one stderr line
     * naming the command, the file and the status. Any thread. */
    uint64_t command_failures() const { return command_failures_.load(std::memory_order_relaxed); }
    std::string last_command_failure() const;

    /* The name of the file with -C counter `count` in the -G period that
     * started at `period` (for tests). */
    std::string name_for(uint64_t count, time_t period) const;

    /* Whether retention is on (and the set names files). */
    bool retaining() const {
        return !stream_ && (opts_.retain_free.on() || opts_.retain_age_s > 0);
    }
    /* Applies retention at wall-clock time `now` (see above). Writer
     * thread; one statvfs, plus an unlink and a log line per file retired. */
    void retain(time_t now);
    /* The start of the -G period holding `now`: `now`, or with `align` the
     * last whole multiple of G (local time). */
    time_t period_start(time_t now) const;
    /* Retention's counters; any thread. */
    uint64_t files_retired() const { return retired_files_.load(std::memory_order_relaxed); }
    uint64_t bytes_retired() const { return retired_bytes_.load(std::memory_order_relaxed); }
    uint64_t oldest_kept_ns() const { return oldest_kept_ns_.load(std::memory_order_relaxed); }
    /* Files retention has looked at (one fstatat each), for tests: each
     * pass of a check (age, then free space) looks at a file at most once.
     * Writer thread. */
    uint64_t retention_looks() const { return retention_looks_; }

    /* Whether this set is standard output (path "-"). */
    bool is_stream() const { return stream_; }

    /* Waits until every removed file's blocks are freed (the helper
     * thread's closes are done); returns whether any were pending. For a
     * write that found the file system full. Writer thread. */
    bool wait_removals();

private:
    FileSetOptions opts_;
    std::string base_;  // path with the writer mark
    int fd_ = -1;
    // The directory of the current file, opened once (O_PATH); -G names may
    // move to another directory, which then replaces it.
    int dir_fd_ = -1;
    std::string dir_path_;
    // With strftime conversions in the -w directory: its part named
    // literally (literal_dir()), below which directories are walked, never
    // followed through a link, and made by open_next(); "" without.
    std::string top_dir_;
    // Why dir_of() last refused a directory below top_dir_ ("" when it did
    // not, or the failure was the literal part's own).
    std::string dir_refused_;
    /* The directory descriptor for `path` and its last component, or -1
     * (errno set, dir_refused_ saying why a directory below top_dir_ was
     * refused). With `create`, missing directories below top_dir_ are
     * made. */
    int dir_of(const std::string& path, std::string& leaf, bool create = false);
    uid_t owner() const;
    /* Words for dir_of()'s failure with errno `err`. */
    std::string dir_error(int err) const;
    Status create_hidden();
    Status check_final_name(int dfd) const;
    Status write_index_of(const std::string& name, std::span<const uint8_t> bytes);
    Status recover_for_name(const std::string& final_name);
    bool stream_ = false;
    uint64_t seq_ = 0;    // files opened
    uint64_t count_ = 0;  // the -C counter: files opened in this -G period
    time_t period_ = 0;   // start of the -G period (strftime names)
    void make_room();
    std::string hidden_name_;
    std::string final_name_;
    std::string closing_index_;  // hand_index(), for the next kClosed event
    bool has_closing_index_ = false;
    std::deque<std::string> closed_;  // final names, oldest first (for -W)
    bool reuse_displaced();
    bool take_spare();
    void drop_spares();
    struct Spare {
        std::string name;  // hidden name, preallocated and not yet written
        FileId id;
    };
    std::vector<Spare> spares_;
    FileId reused_id_;  // the displaced file, while reused_
    void reap_children();
    void remove_file(const std::string& name);
    /* Removes the index of capture file `name` (final or live) and an
     * index of it being written. */
    void remove_index(const std::string& name);
    void remove_stale_indexes(int dfd, const std::string& dir, const std::string& prefix,
                              bool timed);
    void close_later(int fd);  // on the helper thread
    std::unique_ptr<Disposer> disposer_;

    struct Child {
        pid_t pid;
        std::string file;
    };
    std::vector<Child> children_;
    std::atomic<uint64_t> command_failures_{0};
    mutable std::mutex command_mu_;  // taken only when a command fails
    std::string last_command_failure_;
    void command_failed(std::string msg);
    bool reused_ = false;
    std::string reused_from_;  // the displaced file's name, while reused_
    uint32_t files_closed_ = 0;

    // Retention: files an earlier run left under this set's names, oldest
    // first (retire_oldest() takes them before closed_).
    std::deque<std::string> earlier_;
    void adopt_earlier(int dfd, const std::string& dir, const std::string& pattern, bool timed);
    // Earlier files found: (modification time, name), and how many of them
    // are recovered ones.
    struct Earlier {
        std::vector<std::pair<struct timespec, std::string>> files;
        size_t recovered = 0;
    };
    /* Adds the earlier files in directory `dfd` (path `dir`) to `found`,
     * reading at most `budget` entries (taken from it). */
    void find_earlier(int dfd, const std::string& dir, const std::string& pattern, bool timed,
                      Earlier& found, size_t& budget);
    /* Adds entry `n` of directory `dfd` to `found` when it is an earlier
     * file (or one recovered from a killed run) retention may delete. */
    void consider_earlier(int dfd, const std::string& dir, const std::string& n,
                          const std::string& pattern, bool timed, Earlier& found);
    /* Whether `leaf` is one of this set's names (retained_name(), after
     * --compress's suffix). */
    bool set_name(const std::string& pattern, bool timed, std::string leaf) const;
    /* Recovers the hidden files `hidden` of directory `dfd` (path `dir`),
     * one line each (one for all the empty ones); with `found`, adds the
     * files it published to it. */
    void recover_hidden_files(int dfd, const std::string& dir,
                              const std::vector<std::string>& hidden, Earlier* found);
    /* Appends `found` to earlier_, oldest first, with one line (`where`
     * after the names). */
    void take_earlier(Earlier& found, const std::string& dir, const std::string& where);
    /* With strftime conversions in the -w directory `dir_tmpl`: recovers
     * the hidden files of this set's names in the existing directories
     * they name (walk_dirs_below()) and, with retention, adopts their
     * earlier files. */
    void scan_time_dirs(const std::string& dir_tmpl, const std::string& pattern);
    /* scan_time_dirs() in one directory `dfd` (path `dir`): reads at most
     * `budget` entries (taken from it); `found` null: retention is off. */
    void scan_time_dir(int dfd, const std::string& dir, const std::string& pattern, Earlier* found,
                       size_t& budget);
    // The directory entries that walk reads at most, in the directories it
    // matches in and those it adopts from, so a huge tree delays start by
    // a bounded time: 0.7 s warm, 2 s cold, for 33 000 matching empty
    // directories on ext4 (the bound's worst case: each is entered).
    static constexpr size_t kTimeDirEntries = 100000;
    /* A place in the candidates, oldest first: `at` in `list` (earlier_,
     * then closed_); list null: the first. */
    struct RetireCursor {
        std::deque<std::string>* list = nullptr;
        size_t at = 0;
    };
    /* Deletes the oldest file retention may delete from `from` on (null:
     * from the first), if its last write is at or before `older_than` (-1:
     * any); adds its blocks' bytes to `freed`. With an age, files last
     * written after `now` (a clock stepped back, a touched file) are passed
     * over, so that one of them cannot hold back every newer file's age;
     * `from` then stays past them for the next call of the same check.
     * Whether one was deleted. */
    bool retire_oldest(time_t older_than, const std::string& why, uint64_t& freed, time_t now = 0,
                       RetireCursor* from = nullptr);
    /* The first file retire_oldest() may delete at or after `list`/`at`
     * (list null: the first), with its stat; drops from the lists the names
     * that are gone or not capd's to delete (one line each), looking at
     * each entry once. False: none. */
    bool next_to_retire(std::deque<std::string>*& list, size_t& at, struct stat& st);
    /* --retain-free with a RetentionGroup (several writers). */
    void retain_free_in_group(uint64_t avail, uint64_t floor, const char* why);
    void update_oldest_kept(time_t now);
    /* After retention or -W deleted `name`: removes its directory, and then
     * each parent, while it is empty and named by a strftime component
     * below top_dir_, never the current file's. One line for each, naming
     * `why`; null: silent, as -W's own removals are. */
    void remove_empty_dirs(const std::string& name, const char* why);
    std::atomic<uint64_t> retired_files_{0};
    std::atomic<uint64_t> retired_bytes_{0};
    std::atomic<uint64_t> oldest_kept_ns_{0};
    uint64_t retention_looks_ = 0;
    bool oldest_dirty_ = true;    // the oldest file changed since oldest_kept_ns_
    time_t oldest_tried_ = 0;     // last look at an index that had no time
    bool floor_unmet_ = false;    // said once per episode
    uint64_t freed_pending_ = 0;  // bytes removed whose last close may be pending
};

/* Whether the file of fd lives in memory (tmpfs, ramfs): its pages are the
 * file, with no disk behind them. */
bool memory_backed(int fd);

/* Hidden name used while a file is being written. */
std::string hidden_name_for(const std::string& final_name);

}  // namespace linecap::storage
