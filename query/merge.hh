/* The timestamp order of capq's output, across files and writers.
 *
 * Order: timestamp, then the file's position among the inputs (the -r
 * arguments in the order given, a directory's files by name), then the
 * record's offset in its file. Within one file this keeps the records'
 * order among equal timestamps, as tcpdump -r over the files one after the
 * other followed by a stable sort by timestamp would.
 *
 * The merge streams: capq reads the selected ranges of all files in the
 * order of their earliest timestamp (order_ranges()); after each range,
 * every pending packet earlier than the next range's earliest timestamp can
 * no longer be preceded by an unread one and is emitted (emit_before()).
 * Memory is bounded by the packets whose time overlaps a range still to be
 * read, not by the store.
 *
 * One thread (capq's).
 */
#pragma once

#include <cstdint>
#include <functional>
#include <queue>
#include <string>
#include <vector>

namespace linecap::query {

struct PendingPacket {
    uint64_t ts_ns = 0;
    uint32_t file = 0;     // position among the inputs
    uint64_t offset = 0;   // of the record in its file
    uint32_t out_if = 0;   // output interface (pcapng)
    uint32_t wirelen = 0;
    std::string data;      // the captured bytes
};

inline bool merge_before(const PendingPacket& a, const PendingPacket& b) {
    if (a.ts_ns != b.ts_ns) return a.ts_ns < b.ts_ns;
    if (a.file != b.file) return a.file < b.file;
    return a.offset < b.offset;
}

/* A run of whole records of one file to read: [begin, end). */
struct ReadRange {
    uint32_t file = 0;
    uint64_t begin = 0;
    uint64_t end = 0;
    uint64_t min_ns = 0;  // earliest timestamp of its records
};

/* Sorts ranges into reading order: earliest timestamp, file, offset. */
void order_ranges(std::vector<ReadRange>& ranges);

class MergeQueue {
public:
    using Emit = std::function<bool(const PendingPacket&)>;

    void push(PendingPacket p) { heap_.push(std::move(p)); }
    size_t size() const { return heap_.size(); }

    /* Emits, in order, every pending packet with ts_ns < limit_ns. Stops and
     * returns false when emit does. */
    bool emit_before(uint64_t limit_ns, const Emit& emit);
    /* Emits everything left. */
    bool drain(const Emit& emit);

private:
    struct After {
        bool operator()(const PendingPacket& a, const PendingPacket& b) const {
            return merge_before(b, a);
        }
    };
    std::priority_queue<PendingPacket, std::vector<PendingPacket>, After> heap_;
};

}  // namespace linecap::query
