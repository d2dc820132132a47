#include "dataplane/flow_table.hh"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace linecap::dataplane {
namespace {

constexpr uint32_t kInUse = 1, kEnded = 2, kFinA = 4, kFinB = 8, kFlags = 15;
constexpr uint32_t kCutOne = 16;         // state's unit of cut packets
constexpr uint32_t kNoAge = 0xffffffff;  // no packet remembered for dedup
constexpr uint8_t kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04, kTcpAck = 0x10;
constexpr uint64_t kHugePage = 2u << 20;

inline uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint64_t load64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}
inline uint64_t mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Three independent 128-bit products folded, then one finaliser: the
 * multiplies run in parallel, not as a chain of six. */
uint64_t hash_key(const FlowPacket::Key& k) {
    const auto* b = reinterpret_cast<const uint8_t*>(&k);
    auto fold = [](uint64_t x, uint64_t y) {
        __uint128_t p = __uint128_t(x) * y;
        return uint64_t(p) ^ uint64_t(p >> 64);
    };
    uint64_t h =
        fold(load64(b) ^ 0x9e3779b97f4a7c15ull, load64(b + 24) ^ 0xbf58476d1ce4e5b9ull) +
        fold(load64(b + 8) ^ 0x94d049bb133111ebull, load64(b + 32) ^ 0x2545f4914f6cdd1dull) +
        fold(load64(b + 16) ^ 0xff51afd7ed558ccdull, load64(b + 40) ^ 0xc4ceb9fe1a85ec53ull);
    return mix(h);
}

/* The packet's bytes from the IP header on, hop-by-hop fields masked. */
uint64_t hash_bytes(const uint8_t* frame, uint32_t caplen, uint16_t l3, uint8_t version,
                    uint32_t wirelen) {
    const uint8_t* p = frame + l3;
    uint32_t len = caplen - l3;
    uint64_t h = 0x243f6a8885a308d3ull ^ (uint64_t(wirelen) << 32 | len);
    uint32_t i = 0;
    // The first 16 bytes with their hop-by-hop fields zeroed.
    if (len >= 16) {
        uint8_t head[16];
        std::memcpy(head, p, 16);
        if (version == 4) {
            head[8] = 0;              // TTL
            head[10] = head[11] = 0;  // header checksum
        } else {
            head[7] = 0;  // hop limit
        }
        h = (h ^ load64(head)) * 0x100000001b3ull;
        h = mix(h ^ load64(head + 8));
        i = 16;
    }
    for (; i + 8 <= len; i += 8) h = (h ^ load64(p + i)) * 0x9e3779b97f4a7c15ull + (h >> 31);
    uint64_t tail = 0;
    std::memcpy(&tail, p + i, len - i);
    return mix(h ^ tail ^ (uint64_t(len - i) << 56));
}

}  // namespace

struct FlowTable::Slot {
    FlowPacket::Key key;
    uint32_t next;                // bucket chain: slot + 1, 0 ends it
    uint32_t lru_prev, lru_next;  // slot + 1, 0: none
    uint32_t state;               // flags in the low 4 bits, cut packets above (saturating)
    uint32_t packets[2];          // per direction ([0]: sent by the lower endpoint), saturating
    uint32_t dup_age[2];          // dup_hash[i]'s time, in 4 ns steps before last_ns; kNoAge
    uint64_t bytes[2];            // per direction
    uint64_t cut_bytes;
    uint64_t last_ns;
    uint64_t dup_hash[2];
};

bool flow_linktype_supported(uint16_t linktype) {
    return linktype == 1 || linktype == 12 || linktype == 14 || linktype == 101;
}

void parse_flow(uint16_t linktype, const uint8_t* f, uint32_t caplen, FlowPacket& p) {
    p.ok = false;
    p.tcp_flags = 0;
    uint32_t off = 0, vlan = 0;
    unsigned version;
    if (linktype == 1) {
        if (caplen < 14) return;
        uint16_t et = be16(f + 12);
        off = 14;
        for (int tag = 0; tag < 2 && (et == 0x8100 || et == 0x88a8 || et == 0x9100); tag++) {
            if (caplen < off + 4) return;
            vlan |= (uint32_t(be16(f + off) & 0xfff) | 0x1000u) << (tag ? 0 : 13);
            et = be16(f + off + 2);
            off += 4;
        }
        if (et == 0x0800)
            version = 4;
        else if (et == 0x86dd)
            version = 6;
        else
            return;
    } else if (linktype == 12 || linktype == 14 || linktype == 101) {
        if (caplen < 1) return;
        version = f[0] >> 4;
    } else {
        return;
    }
    FlowPacket::Key& k = p.key;
    std::memset(&k, 0, sizeof(k));
    k.vlan = vlan;
    const uint8_t* ip = f + off;
    uint32_t left = caplen - off;
    const uint8_t *sa, *da;
    unsigned alen, l4;
    bool ports;
    if (version == 4) {
        if (left < 20 || (ip[0] >> 4) != 4) return;
        l4 = (ip[0] & 0xf) * 4u;
        if (l4 < 20) return;
        k.proto = ip[9];
        ports = (be16(ip + 6) & 0x3fff) == 0;  // not a fragment
        sa = ip + 12;
        da = ip + 16;
        alen = 4;
    } else if (version == 6) {
        if (left < 40 || (ip[0] >> 4) != 6) return;
        l4 = 40;
        k.proto = ip[6];
        ports = true;
        sa = ip + 8;
        da = ip + 24;
        alen = 16;
    } else {
        return;
    }
    k.version = uint8_t(version);
    uint16_t sp = 0, dp = 0;
    ports = ports && (k.proto == 6 || k.proto == 17 || k.proto == 132) && left >= l4 + 4;
    if (ports) {
        sp = be16(ip + l4);
        dp = be16(ip + l4 + 2);
        if (k.proto == 6 && left >= l4 + 14) p.tcp_flags = ip[l4 + 13];
    }
    int c = std::memcmp(sa, da, alen);
    p.a_sent = c < 0 || (c == 0 && sp <= dp);
    if (p.a_sent) {
        std::memcpy(k.a, sa, alen);
        std::memcpy(k.b, da, alen);
        k.ports = uint32_t(sp) << 16 | dp;
    } else {
        std::memcpy(k.a, da, alen);
        std::memcpy(k.b, sa, alen);
        k.ports = uint32_t(dp) << 16 | sp;
    }
    p.l3 = uint16_t(off);
    p.hash = hash_key(k);
    p.ok = true;
}

uint64_t FlowTable::bytes_for(uint32_t slots) {
    uint64_t buckets = 1;
    while (buckets < slots) buckets <<= 1;
    uint64_t b = uint64_t(slots) * sizeof(Slot) + buckets * 4;
    return (b + kHugePage - 1) / kHugePage * kHugePage;
}

Result<std::unique_ptr<FlowTable>> FlowTable::create(const FlowConfig& cfg) {
    if (cfg.slots == 0) return make_error("flow table: at least one flow slot is needed");
    uint32_t buckets = 1;
    while (buckets < cfg.slots) buckets <<= 1;
    const uint64_t bytes = bytes_for(cfg.slots);
    // Huge pages when the system has free ones; else normal pages (with a
    // hint). Populated now: no page fault on the worker's path.
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
    if (mem == MAP_FAILED) {
        mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            return make_error("flow table of " + std::to_string(cfg.slots) + " flows: cannot map " +
                              std::to_string(bytes >> 20) + " MiB");
        (void)madvise(mem, bytes, MADV_HUGEPAGE);
        (void)madvise(mem, bytes, MADV_POPULATE_WRITE);
    }
    auto* t = new (std::nothrow) FlowTable(cfg, mem, bytes, buckets);
    if (!t) {
        munmap(mem, bytes);
        return make_error("flow table: out of memory");
    }
    return std::unique_ptr<FlowTable>(t);
}

FlowTable::FlowTable(const FlowConfig& cfg, void* mem, uint64_t bytes, uint32_t buckets)
    : cfg_(cfg),
      default_cut_{cfg.cutoff_bytes, cfg.cutoff_packets},
      mem_(mem),
      mem_bytes_(bytes),
      slots_(static_cast<Slot*>(mem)),
      heads_(reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(mem) + sizeof(Slot) * cfg.slots)),
      mask_(buckets - 1),
      lru_head_(0),
      lru_tail_(0),
      top_(new FlowInfo[kMaxTop]) {
    static_assert(sizeof(Slot) == 128);
}

FlowTable::~FlowTable() { munmap(mem_, mem_bytes_); }

void FlowTable::prefetch(const FlowPacket& p) const {
    if (p.ok) __builtin_prefetch(&heads_[p.hash & mask_]);
}

void FlowTable::prefetch_slot(const FlowPacket& p) const {
    if (!p.ok) return;
    const uint32_t s = heads_[p.hash & mask_];
    if (s) __builtin_prefetch(&slots_[s - 1]);
}

void FlowTable::lru_remove(uint32_t s) {
    Slot& x = slots_[s];
    if (x.lru_prev)
        slots_[x.lru_prev - 1].lru_next = x.lru_next;
    else
        lru_head_ = x.lru_next;
    if (x.lru_next)
        slots_[x.lru_next - 1].lru_prev = x.lru_prev;
    else
        lru_tail_ = x.lru_prev;
    x.lru_prev = x.lru_next = 0;
}

void FlowTable::lru_push_front(uint32_t s) {
    Slot& x = slots_[s];
    x.lru_prev = 0;
    x.lru_next = lru_head_;
    if (lru_head_) slots_[lru_head_ - 1].lru_prev = s + 1;
    lru_head_ = s + 1;
    if (!lru_tail_) lru_tail_ = s + 1;
}

void FlowTable::lru_push_back(uint32_t s) {
    Slot& x = slots_[s];
    x.lru_next = 0;
    x.lru_prev = lru_tail_;
    if (lru_tail_) slots_[lru_tail_ - 1].lru_next = s + 1;
    lru_tail_ = s + 1;
    if (!lru_head_) lru_head_ = s + 1;
}

void FlowTable::unlink_bucket(uint32_t s) {
    uint32_t* link = &heads_[hash_key(slots_[s].key) & mask_];
    while (*link && *link != s + 1) link = &slots_[*link - 1].next;
    if (*link) *link = slots_[s].next;
}

namespace {
void add(std::atomic<uint64_t>& c, uint64_t v) {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}
}  // namespace

uint32_t FlowTable::take_slot(uint64_t ts_ns) {
    if (used_ < cfg_.slots) {
        add(counters_.active, 1);
        return used_++;
    }
    // The least recently seen flow (ended flows wait at this end too).
    uint32_t s = lru_tail_ - 1;
    Slot& x = slots_[s];
    if ((x.state & kEnded) || (ts_ns > x.last_ns && ts_ns - x.last_ns > cfg_.idle_ns))
        add(counters_.expired, 1);
    else
        add(counters_.evicted, 1);
    unlink_bucket(s);
    lru_remove(s);
    return s;
}

FlowTable::Verdict FlowTable::packet(const FlowPacket& p, const uint8_t* frame, uint32_t caplen,
                                     uint32_t wirelen, uint64_t ts_ns, const FlowCutoff& cut) {
    if (!p.ok) {
        add(counters_.untracked, 1);
        return kKeep;
    }
    uint32_t* head = &heads_[p.hash & mask_];
    uint32_t s = *head;
    while (s && std::memcmp(&slots_[s - 1].key, &p.key, sizeof(p.key)) != 0) s = slots_[s - 1].next;
    const bool syn_only = (p.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn;
    Slot* x;
    bool fresh = false;
    if (s == 0) {
        s = take_slot(ts_ns);
        x = &slots_[s];
        x->key = p.key;
        x->next = *head;
        *head = s + 1;
        fresh = true;
        lru_push_front(s);
    } else {
        s--;
        x = &slots_[s];
        // An idle flow, or a new connection on an ended one, starts again.
        if ((ts_ns > x->last_ns && ts_ns - x->last_ns > cfg_.idle_ns) ||
            ((x->state & kEnded) && syn_only)) {
            add(counters_.expired, 1);
            fresh = true;
        }
        if (fresh || !(x->state & kEnded)) {
            if (lru_head_ != s + 1) {
                lru_remove(s);
                lru_push_front(s);
            }
        }
    }
    if (fresh) {
        add(counters_.created, 1);
        x->state = kInUse;
        x->packets[0] = x->packets[1] = 0;
        x->bytes[0] = x->bytes[1] = x->cut_bytes = 0;
        x->dup_hash[0] = x->dup_hash[1] = 0;
        x->dup_age[0] = x->dup_age[1] = kNoAge;
    }

    if (cfg_.dedup_window_ns) {
        // The remembered packets' ages, now in 4 ns steps before ts_ns
        // (negative: stamped after this packet, never its original).
        const int64_t step = int64_t(ts_ns >> 2) - int64_t(x->last_ns >> 2);
        int64_t age[2];
        for (int i = 0; i < 2; i++)
            age[i] = x->dup_age[i] == kNoAge ? -1 : step + int64_t(x->dup_age[i]);
        auto rebase = [&](int i) {
            return age[i] < 0 || age[i] >= int64_t(kNoAge) ? kNoAge : uint32_t(age[i]);
        };
        x->last_ns = ts_ns;
        if (caplen > p.l3) {
            const uint64_t h = hash_bytes(frame, caplen, p.l3, p.key.version, wirelen);
            const int64_t window = int64_t(cfg_.dedup_window_ns >> 2);
            for (int i = 0; i < 2; i++) {
                if (x->dup_hash[i] == h && age[i] >= 0 && age[i] <= window) {
                    x->dup_age[0] = rebase(0);
                    x->dup_age[1] = rebase(1);
                    add(counters_.duplicates, 1);
                    add(counters_.duplicate_bytes, wirelen);
                    return kDuplicate;
                }
            }
            x->dup_hash[1] = x->dup_hash[0];
            x->dup_age[1] = rebase(0);
            x->dup_hash[0] = h;
            x->dup_age[0] = 0;
        } else {
            x->dup_age[0] = rebase(0);
            x->dup_age[1] = rebase(1);
        }
    } else {
        x->last_ns = ts_ns;
    }

    // Both directions together, or the sender's direction on its own.
    const int d = p.a_sent ? 0 : 1;
    const uint64_t sent_bytes = cfg_.per_direction ? x->bytes[d] : x->bytes[0] + x->bytes[1];
    const uint64_t sent_packets =
        cfg_.per_direction ? x->packets[d] : uint64_t(x->packets[0]) + x->packets[1];
    const bool over =
        (cut.bytes && sent_bytes >= cut.bytes) || (cut.packets && sent_packets >= cut.packets);
    if (x->packets[d] != ~0u) x->packets[d]++;
    x->bytes[d] += wirelen;
    if (p.tcp_flags & (kTcpFin | kTcpRst)) {
        if (p.tcp_flags & kTcpFin) x->state |= p.a_sent ? kFinA : kFinB;
        if ((p.tcp_flags & kTcpRst) || (x->state & (kFinA | kFinB)) == (kFinA | kFinB)) {
            if (!(x->state & kEnded)) {
                x->state |= kEnded;
                // Ended: first in line when a slot is needed.
                lru_remove(s);
                lru_push_back(s);
            }
        }
    }
    if (over && !(p.tcp_flags & (kTcpSyn | kTcpFin | kTcpRst))) {
        if ((x->state | kFlags) != ~0u) x->state += kCutOne;
        x->cut_bytes += wirelen;
        add(counters_.cut_packets, 1);
        add(counters_.cut_bytes, wirelen);
        return kCut;
    }
    return kKeep;
}

void FlowTable::request(size_t n) {
    top_want_.store(std::min(n, kMaxTop), std::memory_order_relaxed);
    request_.fetch_add(1, std::memory_order_release);
}

void FlowTable::answer(uint64_t req) {
    // A min-heap on bytes of the biggest flows so far, in the fixed area.
    auto less = [](const FlowInfo& l, const FlowInfo& r) { return l.bytes > r.bytes; };
    size_t n = 0;
    const size_t want = top_want_.load(std::memory_order_relaxed);
    for (uint32_t s = lru_head_; s && want; s = slots_[s - 1].lru_next) {
        const Slot& x = slots_[s - 1];
        const uint64_t bytes = x.bytes[0] + x.bytes[1];
        if (n == want && bytes <= top_[0].bytes) continue;
        FlowInfo f;
        f.ip_version = x.key.version;
        f.proto = x.key.proto;
        std::memcpy(f.a, x.key.a, 16);
        std::memcpy(f.b, x.key.b, 16);
        f.pa = uint16_t(x.key.ports >> 16);
        f.pb = uint16_t(x.key.ports);
        f.vlan = x.key.vlan;
        f.packets = uint64_t(x.packets[0]) + x.packets[1];
        f.bytes = bytes;
        f.cut_packets = x.state >> 4;
        f.cut_bytes = x.cut_bytes;
        f.last_ns = x.last_ns;
        if (n == want) {
            std::pop_heap(top_.get(), top_.get() + n, less);
            top_[n - 1] = f;
        } else {
            top_[n++] = f;
        }
        std::push_heap(top_.get(), top_.get() + n, less);
    }
    std::sort_heap(top_.get(), top_.get() + n, less);
    top_n_ = n;
    served_.store(req, std::memory_order_release);
}

bool FlowTable::ready(bool owner_done) {
    const uint64_t req = request_.load(std::memory_order_relaxed);
    if (served_.load(std::memory_order_acquire) == req) return true;
    if (!owner_done) return false;
    answer(req);
    return true;
}

std::vector<FlowInfo> FlowTable::top_view() const {
    return std::vector<FlowInfo>(top_.get(), top_.get() + top_n_);
}

}  // namespace linecap::dataplane
