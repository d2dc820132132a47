/* The files a query reads, each with the index that says where to look.
 *
 * Store::open() takes capq's -r arguments: a directory gives its regular
 * files (not recursive; symbolic links not followed) that open as pcap or
 * pcapng captures, sorted by name; anything else there is listed in
 * ignored() for --explain; index files are skipped; a hidden
 * ".NAME.partial" is the file being written (live). A FILE argument is
 * opened as given; a file the caller opened (OpenedInput) is read from its
 * descriptor. Errors (one line for capq to print): a directory or file
 * that cannot be opened, a FILE that is not a capture.
 *
 * Store::index() gives every file an index: the one beside it when it
 * loads, is whole, of this version, and describes the file as it is now;
 * otherwise it warns once ("capq: warning: FILE: no index; scanning") and
 * builds one in memory by reading the file. A live file is read up to its
 * live index's capture_bytes, or without one to its last whole record.
 *
 * The Store owns the descriptors of its files. open() and the Store itself
 * (the file list): one thread. index_file() and the string form of
 * rescan() touch only the StoreFile they are given, so different files may
 * be indexed from different threads at once (capq plans its files on a few
 * threads: commands.cc); each file from one thread at a time.
 */
#pragma once

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hh"
#include "index/capture_reader.hh"
#include "index/index_file.hh"

namespace linecap::query {

/* A descriptor owned and shared: a directory kept open, so that a file
 * opened from it has its index opened beneath the same descriptor, by
 * leaf and never through a symbolic link (the index read is the one
 * beside the file that was read); or a file its caller opened. */
struct FdHandle {
    int fd = -1;
    explicit FdHandle(int f) : fd(f) {}
    ~FdHandle();
    FdHandle(const FdHandle&) = delete;
    FdHandle& operator=(const FdHandle&) = delete;
};

/* A capture file its caller opened (capq --serve's file=, opened beneath
 * a served directory without following links): file is its descriptor,
 * dir the directory it was opened from. The Store shares both. */
struct OpenedInput {
    std::string path;  // in messages; a hidden ".NAME.partial" leaf is live
    std::shared_ptr<const FdHandle> file;
    std::shared_ptr<const FdHandle> dir;
};

struct StoreFile {
    std::string path;
    std::shared_ptr<const FdHandle> dir;   // index opened beneath it (else by path)
    std::shared_ptr<const FdHandle> file;  // owns fd when the caller opened it
    uint32_t order = 0;                    // position among the inputs (the merge's tie-break)
    bool live = false;                     // a hidden ".NAME.partial" being written
    int fd = -1;
    std::optional<index::CaptureReader> reader;
    index::Index index;
    bool indexed = false;     // index read from its file (not built here)
    bool has_index = false;   // index valid (read or built)
    std::string scan_reason;  // why the file was read instead ("" when indexed)
    bool sequential = false;  // read from data_start in order only
    uint64_t valid_end = 0;   // whole records end here (ranges stop at it)
};

struct IgnoredFile {
    std::string path;
    std::string why;
};

class Store {
public:
    /* inputs as capq's -r; then the files opened by the caller, in order. */
    static Result<Store> open(const std::vector<std::string>& inputs,
                              const std::vector<OpenedInput>& opened = {});

    Store() = default;
    Store(Store&&) = default;
    Store& operator=(Store&&) = default;
    ~Store();

    /* Loads or builds every file's index; warnings go to `warn`.
     * need_flows: a live index (blocks only) is replaced by one built in
     * memory, quietly. An I/O error reading a file is an error. */
    Status index(FILE* warn, bool need_flows);
    /* f's index, read from its file, failed a check when used (a damaged
     * page: index_file.hh): warns once on `warn` and replaces it by one
     * built from the capture. */
    Status rescan(StoreFile& f, FILE* warn, const std::string& why);

    /* index() for one file; its warning line, if any, is appended to
     * `warning` (printed by the caller, so that lines from files indexed
     * on several threads come out whole and in file order). */
    static Status index_file(StoreFile& f, std::string& warning, bool need_flows);
    /* rescan() with the warning appended to `warning`. */
    static Status rescan(StoreFile& f, std::string& warning, const std::string& why);

    std::vector<StoreFile>& files() { return files_; }
    const std::vector<IgnoredFile>& ignored() const { return ignored_; }

private:
    Status add_dir(const std::string& dir);
    Status add_file(int fd, const std::string& path, bool live, bool in_dir,
                    std::shared_ptr<const FdHandle> dir = nullptr,
                    std::shared_ptr<const FdHandle> file = nullptr);
    static Status build(StoreFile& f, uint64_t limit);
    static std::string scan_warning(const StoreFile& f, const std::string& why);

    std::vector<StoreFile> files_;
    std::vector<IgnoredFile> ignored_;
};

/* Builds the index of reader's records from data_start up to `limit`
 * (~0ull: the end). Returns the serialized index, describing
 * max(capture_bytes, end) bytes; `end` gets the offset
 * where the whole records end, `sequential` whether the file can only be
 * read in order (marked in the index too). compact_flows: format version
 * 4 (compressed flow groups), else 1. */
Result<std::string> build_index(index::CaptureReader& reader, uint64_t limit, uint64_t& end,
                                bool& sequential, uint64_t capture_bytes = 0,
                                bool compact_flows = true);

}  // namespace linecap::query
