#include "query/merge.hh"

#include <algorithm>

namespace linecap::query {

void order_ranges(std::vector<ReadRange>& ranges) {
    std::sort(ranges.begin(), ranges.end(), [](const ReadRange& a, const ReadRange& b) {
        if (a.min_ns != b.min_ns) return a.min_ns < b.min_ns;
        if (a.file != b.file) return a.file < b.file;
        return a.begin < b.begin;
    });
}

bool MergeQueue::emit_before(uint64_t limit_ns, const Emit& emit) {
    while (!heap_.empty() && heap_.top().ts_ns < limit_ns) {
        // top() is const; the packet leaves the heap right after.
        bool go = emit(heap_.top());
        heap_.pop();
        if (!go) return false;
    }
    return true;
}

bool MergeQueue::drain(const Emit& emit) {
    while (!heap_.empty()) {
        bool go = emit(heap_.top());
        heap_.pop();
        if (!go) return false;
    }
    return true;
}

}  // namespace linecap::query
