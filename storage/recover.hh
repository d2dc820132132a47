/* Recovering the hidden file a run that did not finish (kill -9, a crash, a
 * power cut) left behind.
 *
 * Such a file (".NAME.partial") holds that run's last packets, whole records
 * up to at most one cut short at its end. A new run never writes over it: it
 * is cut to its last whole record and published as
 * NAME-stem.recovered-YYYYmmddTHHMMSSZ.ext (the time of its last write, UTC;
 * the extension stays last so that tools pick the reader from it), never
 * replacing a file of that name (the next is "...Z-1.ext"). A file cut to its
 * last whole record keeps the time of its last write. -W never deletes a
 * recovered file; retention does (FileSet, storage/file_set.hh).
 *
 * Only a regular file with one link, owned by capd's user, that no process
 * holds locked (FileSet locks the file it writes) is touched. A symbolic
 * link, another kind of entry or another user's file is left alone.
 *
 * Cold code: any thread; reads the whole file once.
 */
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <string>

namespace linecap::storage {

/* Where the whole records of a capture file end. */
struct RecordScan {
    bool capture = false;  // starts with a pcap or pcapng header
    uint64_t end = 0;      // bytes up to the end of the last whole record or block
    uint64_t packets = 0;  // whole packet records before `end`
    // A compressed capture (capd --compress, index/codec.hh): `end` is that
    // of its last whole frame, and packets is 1 when any frame follows the
    // header's (the records are not counted).
    bool frames = false;
};

/* Walks the capture in fd (pcap of either byte order and resolution, or
 * pcapng) from its start, up to `size` bytes, checking each record's length
 * fields before trusting them. Stops at the first record that is cut short
 * or does not parse: zeros (an unused preallocated tail), or the middle of an
 * older file's records that --reuse-files was writing over. */
RecordScan scan_records(int fd, uint64_t size);

/* NAME with ".recovered-<t as YYYYmmddTHHMMSSZ>" before its extension, and
 * "-k" after the time when k > 0 (that name was taken):
 * "x.pcap" -> "x.recovered-20261206T101500Z.pcap", "x.recovered-...Z-1.pcap". */
std::string recovered_name(const std::string& final_leaf, time_t t, unsigned k = 0);

/* The NAME a recovered_name() was made from, or "" when `leaf` is not one
 * (no ".recovered-YYYYmmddTHHMMSSZ[-k]" mark where recovered_name() puts
 * it): "x.recovered-20261206T101500Z-1.pcap" -> "x.pcap". */
std::string recovered_from(const std::string& leaf);

struct Recovery {
    enum class What {
        kAbsent,     // no entry of that name
        kRecovered,  // published as `published`
        kRemoved,    // held no whole packet: deleted
        kSpare,      // empty or zeros (an unused --preallocate spare): deleted
        kLeft,       // not capd's, being written, or not a capture: left alone
    };
    What what = What::kAbsent;
    std::string published;  // kRecovered: the new name
    std::string message;    // one log line (empty for kAbsent)
};

/* Recovers `hidden_leaf` in `dir` (see above) as a recovered name of
 * `final_leaf`; `owner` is capd's user. */
Recovery recover_hidden(int dir, const std::string& hidden_leaf, const std::string& final_leaf,
                        uid_t owner);

}  // namespace linecap::storage
