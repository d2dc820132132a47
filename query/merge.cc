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

void MergeQueue::push(const PendingPacket& p) {
    Entry e{p, arena_.size()};
    e.p.data = nullptr;
    arena_.insert(arena_.end(), p.data, p.data + p.caplen);
    fresh_.push_back(e);
}

void MergeQueue::settle() {
    if (fresh_.empty()) return;
    auto before = [](const Entry& a, const Entry& b) { return merge_before(a.p, b.p); };
    if (!std::is_sorted(fresh_.begin(), fresh_.end(), before))
        std::sort(fresh_.begin(), fresh_.end(), before);
    if (pending_.empty() || before(pending_.back(), fresh_.front())) {
        pending_.insert(pending_.end(), fresh_.begin(), fresh_.end());
    } else {
        merged_.clear();
        merged_.reserve(pending_.size() + fresh_.size());
        std::merge(pending_.begin(), pending_.end(), fresh_.begin(), fresh_.end(),
                   std::back_inserter(merged_), before);
        pending_.swap(merged_);
    }
    fresh_.clear();
}

bool MergeQueue::emit_while(const Emit& emit, uint64_t limit_ns, bool all) {
    settle();
    size_t n = 0;
    bool go = true;
    for (; n < pending_.size(); n++) {
        Entry& e = pending_[n];
        if (!all && e.p.ts_ns >= limit_ns) break;
        e.p.data = arena_.data() + e.at;
        if (!emit(e.p)) {
            n++;
            go = false;
            break;
        }
    }
    pending_.erase(pending_.begin(), pending_.begin() + std::ptrdiff_t(n));
    if (pending_.empty()) {
        arena_.clear();
    } else if (n > 0) {
        // Keep only the bytes still pending.
        std::vector<uint8_t> kept;
        uint64_t bytes = 0;
        for (const Entry& e : pending_) bytes += e.p.caplen;
        kept.reserve(bytes);
        for (Entry& e : pending_) {
            const uint64_t at = kept.size();
            kept.insert(kept.end(), arena_.begin() + std::ptrdiff_t(e.at),
                        arena_.begin() + std::ptrdiff_t(e.at + e.p.caplen));
            e.at = at;
        }
        arena_.swap(kept);
    }
    return go;
}

bool MergeQueue::emit_before(uint64_t limit_ns, const Emit& emit) {
    return emit_while(emit, limit_ns, false);
}

bool MergeQueue::drain(const Emit& emit) { return emit_while(emit, 0, true); }

}  // namespace linecap::query
