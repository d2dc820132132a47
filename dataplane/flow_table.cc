#include "dataplane/flow_table.hh"

#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

#include "packet/headers.hh"

namespace linecap::dataplane {
namespace {

constexpr uint32_t kInUse = 1, kEnded = 2, kFinA = 4, kFinB = 8, kFlags = 15;
constexpr uint32_t kCutOne = 16;         // state's unit of cut packets
constexpr uint32_t kNoAge = 0xffffffff;  // no packet remembered for dedup
constexpr uint8_t kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04, kTcpAck = 0x10;
constexpr uint64_t kHugePage = 2u << 20;
constexpr unsigned kStampShift = 20;  // Hot::lru_stamp's unit: 2^20 ns, about 1 ms

inline uint16_t be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint64_t load64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}
inline uint32_t be32(const uint8_t* p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint64_t load32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
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

/* The words the hash mixes into a key's, drawn at start: a flow is named by
 * its hash (FlowTable::Hot::id), so which keys collide must not be known
 * outside the process. */
struct HashKey {
    uint64_t k[8];
};

HashKey draw_hash_key() {
    HashKey h;
    if (getrandom(h.k, sizeof(h.k), GRND_NONBLOCK) != ssize_t(sizeof(h.k))) {
        // No entropy yet (early boot): the clock and the process, mixed.
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t x = (uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec)) ^
                     (uint64_t(getpid()) << 40) ^ reinterpret_cast<uintptr_t>(&h);
        for (uint64_t& k : h.k) k = x = mix(x + 0x9e3779b97f4a7c15ull);
    }
    return h;
}

const HashKey kHashKey = draw_hash_key();

/* The hash of a key given as its 8-byte words (w5: the last 4 bytes).
 * Three independent 128-bit products folded (the multiplies run in
 * parallel, not as a chain), then their sum folded once more with two more
 * key words: one multiply after the sum, where a murmur finaliser chains
 * two and three shifts (flow_table_bench Parse 13.1-13.2 -> 11.2-11.5 ns;
 * buckets filled as evenly by either over the null source's flows). */
inline uint64_t hash_words(uint64_t w0, uint64_t w1, uint64_t w2, uint64_t w3, uint64_t w4,
                           uint64_t w5) {
    auto fold = [](uint64_t x, uint64_t y) {
        __uint128_t p = __uint128_t(x) * y;
        return uint64_t(p) ^ uint64_t(p >> 64);
    };
    const uint64_t* k = kHashKey.k;
    uint64_t h =
        fold(w0 ^ k[0], w3 ^ k[1]) + fold(w1 ^ k[2], w4 ^ k[3]) + fold(w2 ^ k[4], w5 ^ k[5]);
    return fold(h ^ k[6], k[7] | 1);
}

/* An intrusive LRU list through an array (the flow slots, the TCP
 * records): an element's lru_prev/lru_next hold index + 1, 0 ends the list;
 * head is the most recent end. Each step touches the element's neighbours. */
template <typename T>
void list_remove(T* v, uint32_t& head, uint32_t& tail, uint32_t i) {
    T& x = v[i];
    if (x.lru_prev)
        v[x.lru_prev - 1].lru_next = x.lru_next;
    else
        head = x.lru_next;
    if (x.lru_next)
        v[x.lru_next - 1].lru_prev = x.lru_prev;
    else
        tail = x.lru_prev;
    x.lru_prev = x.lru_next = 0;
}

template <typename T>
void list_push_front(T* v, uint32_t& head, uint32_t& tail, uint32_t i) {
    T& x = v[i];
    x.lru_prev = 0;
    x.lru_next = head;
    if (head) v[head - 1].lru_prev = i + 1;
    head = i + 1;
    if (!tail) tail = i + 1;
}

template <typename T>
void list_push_back(T* v, uint32_t& head, uint32_t& tail, uint32_t i) {
    T& x = v[i];
    x.lru_next = 0;
    x.lru_prev = tail;
    if (tail) v[tail - 1].lru_next = i + 1;
    tail = i + 1;
    if (!head) head = i + 1;
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

/* A flow's slot is three records in three arrays: what every packet reads
 * and writes, on one cache line (Hot); what only a new flow, an eviction,
 * an LRU move and capctl flows touch, on another (Cold); with dedup on,
 * what dedup compares, on half a line (Dup). A packet of a known flow so
 * brings in its bucket and one line, or two with dedup, not three. */
struct FlowTable::Hot {
    uint64_t id;          // the flow's hash (FlowPacket::hash): its name in the table
    uint64_t last_ns;     // its last packet's time
    uint64_t bytes[2];    // per direction ([0]: sent by the lower endpoint)
    uint64_t cut_bytes;   // wire bytes cut
    uint32_t packets[2];  // per direction, saturating
    uint32_t state;       // flags in the low 4 bits, cut packets above (saturating)
    uint32_t lru_stamp;   // when last moved to the LRU front, in kStampShift units
    uint32_t tcp;         // TCP record + 1; 0: none
    uint32_t spare;
};

struct FlowTable::Cold {
    FlowPacket::Key key;
    uint32_t lru_prev, lru_next;  // slot + 1, 0: none
    uint8_t spare[64 - sizeof(FlowPacket::Key) - 8];
};

struct FlowTable::Dup {
    uint64_t hash[2];  // the last two packets' bytes (hash_bytes())
    uint32_t age[2];   // hash[i]'s time, in 4 ns steps before Hot::last_ns; kNoAge
    uint64_t spare;
};

/* One cache line: up to kWays flows, each as (slot + 1, the top 16 bits of
 * its hash); slot 0: a free way. A flow is in the bucket its hash picks
 * (its home) or, when that one was full, in its pair (index ^ 1, the other
 * half of the same 128 bytes); `overflow` counts a home's flows in its pair,
 * which only then is searched too. */
struct FlowTable::Bucket {
    uint32_t slot[kWays];
    uint16_t tag[kWays];
    uint32_t overflow;
    uint8_t spare[64 - kWays * 6 - 4];
};

bool flow_linktype_supported(uint16_t linktype) { return packet::linktype_supported(linktype); }

namespace {

/* The key from the addresses and ports, in canonical order, and its hash. */
void finish_key(FlowPacket& p, const uint8_t* sa, const uint8_t* da, unsigned alen, uint16_t sp,
                uint16_t dp, uint32_t l3) {
    FlowPacket::Key& k = p.key;
    // The addresses as the key's words (an IPv4 address in the low 4 bytes
    // of the first), ordered as big-endian numbers, then ports.
    uint64_t s0, s1 = 0, d0, d1 = 0;
    bool a_first;
    if (alen == 4) {
        s0 = load32(sa);
        d0 = load32(da);
        const uint32_t bs = be32(sa), bd = be32(da);
        a_first = bs < bd || (bs == bd && sp <= dp);
    } else {
        s0 = load64(sa), s1 = load64(sa + 8), d0 = load64(da), d1 = load64(da + 8);
        const uint64_t hs = __builtin_bswap64(s0), hd = __builtin_bswap64(d0);
        const uint64_t ls = __builtin_bswap64(s1), ld = __builtin_bswap64(d1);
        a_first = hs < hd || (hs == hd && (ls < ld || (ls == ld && sp <= dp)));
    }
    p.a_sent = a_first;
    if (!a_first) {
        std::swap(s0, d0);
        std::swap(s1, d1);
        std::swap(sp, dp);
    }
    std::memcpy(k.a, &s0, 8);
    std::memcpy(k.a + 8, &s1, 8);
    std::memcpy(k.b, &d0, 8);
    std::memcpy(k.b + 8, &d1, 8);
    k.ports = uint32_t(sp) << 16 | dp;
    p.l3 = uint16_t(l3);
    // From the registers, not read back from the key just stored: loads
    // spanning several smaller stores stall until the stores retire.
    p.hash = hash_words(s0, s1, d0, d1, k.ports | uint64_t(k.vlan) << 32,
                        uint64_t(k.proto) | uint64_t(k.version) << 8);
    p.ok = true;
}

/* What the inline parse leaves to the header walker: a third VLAN tag,
 * IPv6 extension headers, link types other than Ethernet and raw IP. By
 * the walker's rules (a frame it calls truncated or malformed is no flow),
 * except that a fragment has no ports, as inline. `vlan`: the key's VLAN
 * field, from the inline parse. */
void parse_walked(uint16_t linktype, const uint8_t* f, uint32_t caplen, uint32_t vlan,
                  FlowPacket& p) {
    packet::Headers h;
    packet::WalkStatus st;
    switch (linktype) {
        case 1: st = packet::walk_ethernet(f, caplen, h); break;
        case 113:
            if (caplen < 16) return;
            st = packet::walk_ethertype(f, caplen, 16, be16(f + 14), h);
            break;
        case 276:
            if (caplen < 20) return;
            st = packet::walk_ethertype(f, caplen, 20, be16(f), h);
            break;
        case 12:
        case 14:
        case 101:
        case 228:
        case 229: st = packet::walk_ip(f, caplen, 0, h); break;
        case 0:
        case 108:
            if (caplen < 4) return;
            st = packet::walk_ip(f, caplen, 4, h);
            break;
        default: return;
    }
    if (st != packet::WalkStatus::kOk || h.l3 > 0xffff) return;
    FlowPacket::Key& k = p.key;
    std::memset(&k, 0, sizeof(k));
    k.vlan = vlan;
    k.version = h.ip_version;
    k.proto = h.proto;
    const bool ports = h.has_ports && !h.fragment;
    if (ports && h.proto == 6 && h.l4 <= 0xffff) {
        p.tcp_flags = f[h.l4 + 13];
        p.tcp = uint16_t(h.l4);
    }
    finish_key(p, f + h.src_offset(), f + h.dst_offset(), h.addr_len(), ports ? h.sport : 0,
               ports ? h.dport : 0, h.l3);
}

}  // namespace

void parse_flow(uint16_t linktype, const uint8_t* f, uint32_t caplen, FlowPacket& p) {
    p.ok = false;
    p.tcp_flags = 0;
    p.tcp = 0;
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
        else if (et == 0x8100 || et == 0x88a8 || et == 0x9100)
            return parse_walked(linktype, f, caplen, vlan, p);
        else
            return;
    } else if (linktype == 12 || linktype == 14 || linktype == 101) {
        if (caplen < 1) return;
        version = f[0] >> 4;
    } else {
        return parse_walked(linktype, f, caplen, 0, p);
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
        if (packet::is_ipv6_ext_header(ip[6])) return parse_walked(linktype, f, caplen, vlan, p);
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
        if (k.proto == 6 && left >= l4 + 20 && off + l4 <= 0xffff) p.tcp = uint16_t(off + l4);
    }
    finish_key(p, sa, da, alen, sp, dp, off);
}

namespace {
/* Buckets: a power of two, at least two and half the slots, so a full
 * table holds two flows a bucket on average. */
uint32_t bucket_count(uint32_t slots) {
    uint32_t buckets = 2;
    while (buckets < (slots + 1) / 2) buckets <<= 1;
    return buckets;
}
/* Where the arrays start in the mapping, each on a cache line: the hot
 * records, the cold records, the buckets, the dedup records (dedup on),
 * the TCP pool. */
struct Layout {
    uint64_t cold, buckets, dup, tcp, end;
};
constexpr uint64_t kLineBytes = 64, kDupBytes = 32;
Layout layout(uint32_t slots, uint32_t tcp_conns, bool dedup) {
    Layout l;
    l.cold = uint64_t(slots) * kLineBytes;
    l.buckets = l.cold + uint64_t(slots) * kLineBytes;
    l.dup = l.buckets + uint64_t(bucket_count(slots)) * kLineBytes;
    l.tcp =
        l.dup + (dedup ? (uint64_t(slots) * kDupBytes + kLineBytes - 1) & ~(kLineBytes - 1) : 0);
    l.end = l.tcp + uint64_t(tcp_conns) * sizeof(packet::TcpConn);
    return l;
}
}  // namespace

uint64_t FlowTable::bytes_for(uint32_t slots, uint32_t tcp_conns, bool dedup) {
    const uint64_t b = layout(slots, tcp_conns, dedup).end;
    return (b + kHugePage - 1) / kHugePage * kHugePage;
}

Result<std::unique_ptr<FlowTable>> FlowTable::create(const FlowConfig& cfg) {
    if (cfg.slots == 0) return make_error("flow table: at least one flow slot is needed");
    const bool dedup = cfg.dedup_window_ns != 0;
    const uint64_t bytes = bytes_for(cfg.slots, cfg.tcp_conns, dedup);
    // Huge pages when the system has free ones; else normal pages (with a
    // hint). Populated now: no page fault on the worker's path.
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
    const bool huge = mem != MAP_FAILED;
    if (!huge) {
        mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            return make_error("flow table of " + std::to_string(cfg.slots) + " flows: cannot map " +
                              std::to_string(bytes >> 20) + " MiB");
        (void)madvise(mem, bytes, MADV_HUGEPAGE);
        (void)madvise(mem, bytes, MADV_POPULATE_WRITE);
    }
    auto* t = new (std::nothrow) FlowTable(cfg, mem, bytes);
    if (!t) {
        munmap(mem, bytes);
        return make_error("flow table: out of memory");
    }
    std::unique_ptr<FlowTable> table(t);
    t->huge_pages_ = huge;
    if (cfg.tcp_conns) {
        // Reserved, not committed: pages exist only while a snapshot is read.
        const uint64_t area = uint64_t(cfg.tcp_conns) * sizeof(packet::TcpConn);
        void* a = mmap(nullptr, area, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a == MAP_FAILED)
            return make_error("flow table: " + std::to_string(cfg.tcp_conns) +
                              " TCP connections: cannot map " + std::to_string(area >> 20) +
                              " MiB for snapshots");
        (void)madvise(a, area, MADV_HUGEPAGE);
        t->tcp_ = reinterpret_cast<packet::TcpConn*>(static_cast<uint8_t*>(mem) +
                                                     layout(cfg.slots, 0, dedup).tcp);
        t->tcp_area_ = static_cast<packet::TcpConn*>(a);
        t->tcp_area_bytes_ = area;
    }
    return table;
}

FlowTable::FlowTable(const FlowConfig& cfg, void* mem, uint64_t bytes)
    : cfg_(cfg),
      default_cut_{cfg.cutoff_bytes, cfg.cutoff_packets},
      mem_(mem),
      mem_bytes_(bytes),
      mask_(bucket_count(cfg.slots) - 1),
      lru_step_(uint32_t(std::min<uint64_t>(
          (cfg.lru_step_ns + (1u << kStampShift) - 1) >> kStampShift, 1u << 30))),
      lru_head_(0),
      lru_tail_(0),
      top_(new FlowInfo[kMaxTop]) {
    static_assert(sizeof(Hot) == kLineBytes && sizeof(Cold) == kLineBytes);
    static_assert(sizeof(Bucket) == kLineBytes && sizeof(Dup) == kDupBytes);
    const Layout l = layout(cfg.slots, 0, cfg.dedup_window_ns != 0);
    auto* base = static_cast<uint8_t*>(mem);
    hot_ = reinterpret_cast<Hot*>(base);
    cold_ = reinterpret_cast<Cold*>(base + l.cold);
    buckets_ = reinterpret_cast<Bucket*>(base + l.buckets);
    if (cfg.dedup_window_ns) dup_ = reinterpret_cast<Dup*>(base + l.dup);
}

FlowTable::~FlowTable() {
    munmap(mem_, mem_bytes_);
    if (tcp_area_) munmap(tcp_area_, tcp_area_bytes_);
}

void FlowTable::prefetch(const FlowPacket& p) const {
    if (p.ok) __builtin_prefetch(&buckets_[p.hash & mask_]);
}

void FlowTable::prefetch_slot(const FlowPacket& p) const {
    if (!p.ok) return;
    if (const uint32_t e = tagged_slot(p)) {
        __builtin_prefetch(&hot_[e - 1], 1);
        if (dup_) __builtin_prefetch(&dup_[e - 1], 1);
    }
}

/* The ways of b whose tag is `tag`, one bit each (bit w: way w), from one
 * compare of the 8 tags at once: which way matches is random, and a loop
 * that stops at it mispredicts its exit on most packets. */
unsigned FlowTable::tag_ways(const Bucket& b, uint16_t tag) {
    static_assert(kWays == 8 && offsetof(Bucket, tag) % 16 == 0);
#ifdef __SSE2__
    const __m128i eq = _mm_cmpeq_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(b.tag)),
                                       _mm_set1_epi16(int16_t(tag)));
    return unsigned(_mm_movemask_epi8(_mm_packs_epi16(eq, _mm_setzero_si128())));
#else
    unsigned m = 0;
    for (unsigned w = 0; w < kWays; w++) m |= unsigned(b.tag[w] == tag) << w;
    return m;
#endif
}

uint32_t FlowTable::tagged_slot(const FlowPacket& p) const {
    const uint32_t i = uint32_t(p.hash & mask_);
    const uint16_t tag = uint16_t(p.hash >> 48);
    for (const uint32_t k : {i, i ^ 1}) {
        const Bucket& b = buckets_[k];
        for (unsigned m = tag_ways(b, tag); m; m &= m - 1)
            if (const uint32_t e = b.slot[__builtin_ctz(m)]) return e;
        if (!buckets_[i].overflow) break;  // the pair holds none of this bucket's flows
    }
    return 0;
}

void FlowTable::fetch(const FlowPacket* p, const uint8_t* take, unsigned n, uint64_t now_ns,
                      uint32_t* found) const {
    // The buckets: one load each, nothing between them.
    uint32_t sum = 0;
    for (unsigned i = 0; i < n; i++)
        if (take[i] && p[i].ok) sum += buckets_[p[i].hash & mask_].overflow;
    // The slots the buckets name (their tags matched), found first so that
    // their loads too come one after the other: the hot line, and the
    // dedup record with dedup on.
    uint32_t slot[kMaxFetch];
    unsigned k = 0;
    for (unsigned i = 0; i < n && i < kMaxFetch; i++) {
        const uint32_t e = take[i] && p[i].ok ? tagged_slot(p[i]) : 0;
        if (e) slot[k++] = e - 1;
        if (found) found[i] = e;
    }
    for (unsigned i = 0; i < k; i++) sum += hot_[slot[i]].state;
    if (dup_)
        for (unsigned i = 0; i < k; i++) sum += dup_[slot[i]].age[0];
    // The flows due to move to the LRU front (packet()'s rule, at the
    // burst's time): the move unlinks each from its two neighbours, so
    // their cold lines, then the neighbours', again as runs. Else each move
    // waits for three misses in turn inside the verdicts.
    const uint32_t stamp = uint32_t(now_ns >> kStampShift);
    uint32_t move[kMaxFetch];
    unsigned m = 0;
    for (unsigned i = 0; i < k; i++) {
        const Hot& x = hot_[slot[i]];
        if (!(x.state & kEnded) && uint32_t(stamp - x.lru_stamp) >= lru_step_) move[m++] = slot[i];
    }
    for (unsigned i = 0; i < m; i++) sum += cold_[move[i]].lru_prev;
    for (unsigned i = 0; i < m; i++) {
        const Cold& c = cold_[move[i]];
        if (c.lru_prev) sum += cold_[c.lru_prev - 1].lru_next;
        if (c.lru_next) sum += cold_[c.lru_next - 1].lru_prev;
    }
    // The values are not needed, the loads are: they bring the lines in.
    asm volatile("" ::"r"(sum));
}

void FlowTable::unlink_bucket(uint32_t s) {
    const uint32_t home = uint32_t(hot_[s].id & mask_);
    for (const uint32_t i : {home, home ^ 1}) {
        Bucket& b = buckets_[i];
        for (unsigned w = 0; w < kWays; w++)
            if (b.slot[w] == s + 1) {
                b.slot[w] = 0;
                b.tag[w] = 0;
                if (i != home) buckets_[home].overflow--;
                return;
            }
    }
}

/* The ways of b that hold no flow, one bit each, as tag_ways(). */
unsigned FlowTable::free_ways(const Bucket& b) {
    static_assert(offsetof(Bucket, slot) % 16 == 0);
#ifdef __SSE2__
    const __m128i* v = reinterpret_cast<const __m128i*>(b.slot);
    const __m128i zero = _mm_setzero_si128();
    const __m128i lo = _mm_cmpeq_epi32(_mm_load_si128(v), zero);
    const __m128i hi = _mm_cmpeq_epi32(_mm_load_si128(v + 1), zero);
    return unsigned(_mm_movemask_epi8(_mm_packs_epi16(_mm_packs_epi32(lo, hi), zero)));
#else
    unsigned m = 0;
    for (unsigned w = 0; w < kWays; w++) m |= unsigned(b.slot[w] == 0) << w;
    return m;
#endif
}

/* p's flow in bucket b, by the ways whose tag matches; else 0, and the
 * first free way in free_way unless it holds one already. A new flow
 * searches both buckets of its pair, every way: with a loop that tested
 * each way's slot and tag in turn, flow_table_bench's Evict cost 73-78 ns
 * a packet; with the masks 55-60. */
uint32_t FlowTable::find(const Bucket& b, uint16_t tag, uint64_t id, unsigned& free_way) const {
    for (unsigned m = tag_ways(b, tag); m; m &= m - 1) {
        const uint32_t e = b.slot[__builtin_ctz(m)];
        if (e && hot_[e - 1].id == id) return e;
    }
    if (free_way == kWays)
        if (const unsigned f = free_ways(b)) free_way = unsigned(__builtin_ctz(f));
    return 0;
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
    const uint32_t s = lru_tail_ - 1;
    release(s, ts_ns);
    unlink_bucket(s);
    return s;
}

void FlowTable::release(uint32_t s, uint64_t ts_ns) {
    const Hot& x = hot_[s];
    if ((x.state & kEnded) || (ts_ns > x.last_ns && ts_ns - x.last_ns > cfg_.idle_ns))
        add(counters_.expired, 1);
    else
        add(counters_.evicted, 1);
    list_remove(cold_, lru_head_, lru_tail_, s);
    if (x.tcp) tcp_drop(s);
}

uint32_t FlowTable::take_way(uint32_t i, uint64_t ts_ns) {
    // A full bucket and pair: the bucket's least recently seen flow (an
    // ended one first) gives up its way and its slot.
    const Bucket& b = buckets_[i];
    unsigned v = 0;
    for (unsigned w = 1; w < kWays; w++) {
        const Hot& o = hot_[b.slot[w] - 1];
        const Hot& best = hot_[b.slot[v] - 1];
        if ((o.state & kEnded) > (best.state & kEnded) ||
            ((o.state & kEnded) == (best.state & kEnded) && o.last_ns < best.last_ns))
            v = w;
    }
    const uint32_t s = b.slot[v] - 1;
    release(s, ts_ns);
    if ((hot_[s].id & mask_) != i) buckets_[i ^ 1].overflow--;  // the pair's
    add(counters_.bucket_full, 1);
    return v;
}

FlowTable::Verdict FlowTable::packet(const FlowPacket& p, const uint8_t* frame, uint32_t caplen,
                                     uint32_t wirelen, uint64_t ts_ns, const FlowCutoff& cut,
                                     uint32_t hint) {
    if (!p.ok) {
        add(counters_.untracked, 1);
        return kKeep;
    }
    const uint32_t home = uint32_t(p.hash & mask_);
    const uint16_t tag = uint16_t(p.hash >> 48);
    unsigned free_way = kWays, pair_way = kWays;
    // A slot in use named by p's hash holds p's flow: a flow is in the
    // table once, and a slot is given up only to be taken at once.
    uint32_t s = hint && hot_[hint - 1].id == p.hash && (hot_[hint - 1].state & kInUse) ? hint : 0;
    if (s == 0) s = find(buckets_[home], tag, p.hash, free_way);
    if (s == 0 && buckets_[home].overflow) s = find(buckets_[home ^ 1], tag, p.hash, pair_way);
    const bool syn_only = (p.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn;
    const uint32_t stamp = uint32_t(ts_ns >> kStampShift);
    Hot* x;
    bool fresh = false;
    if (s == 0) {
        Bucket* b = &buckets_[home];
        if (free_way == kWays) {
            if (pair_way == kWays && !buckets_[home].overflow)
                find(buckets_[home ^ 1], tag, p.hash, pair_way);  // for a free way only
            if (pair_way != kWays) {
                b = &buckets_[home ^ 1];
                free_way = pair_way;
                buckets_[home].overflow++;
            }
        }
        if (free_way == kWays) {
            free_way = take_way(home, ts_ns);
            s = b->slot[free_way] - 1;
        } else {
            s = take_slot(ts_ns);
        }
        x = &hot_[s];
        x->id = p.hash;
        x->tcp = 0;
        cold_[s].key = p.key;
        b->slot[free_way] = s + 1;
        b->tag[free_way] = tag;
        fresh = true;
        list_push_front(cold_, lru_head_, lru_tail_, s);
        x->lru_stamp = stamp;
    } else {
        s--;
        x = &hot_[s];
        // An idle flow, or a new connection on an ended one, starts again.
        if ((ts_ns > x->last_ns && ts_ns - x->last_ns > cfg_.idle_ns) ||
            ((x->state & kEnded) && syn_only)) {
            add(counters_.expired, 1);
            fresh = true;
        }
        // To the front only when last moved lru_step_ or more ago (or the
        // clock went back): the relink touches two other slots' lines.
        if (fresh || (!(x->state & kEnded) && uint32_t(stamp - x->lru_stamp) >= lru_step_)) {
            if (lru_head_ != s + 1) {
                list_remove(cold_, lru_head_, lru_tail_, s);
                list_push_front(cold_, lru_head_, lru_tail_, s);
            }
            x->lru_stamp = stamp;
        }
    }
    last_slot_ = s;
    if (fresh) {
        add(counters_.created, 1);
        x->state = kInUse;
        x->packets[0] = x->packets[1] = 0;
        x->bytes[0] = x->bytes[1] = x->cut_bytes = 0;
        if (dup_) {
            dup_[s].hash[0] = dup_[s].hash[1] = 0;
            dup_[s].age[0] = dup_[s].age[1] = kNoAge;
        }
    }

    if (dup_) {
        Dup& u = dup_[s];
        // The remembered packets' ages, now in 4 ns steps before ts_ns
        // (negative: stamped after this packet, never its original).
        const int64_t step = int64_t(ts_ns >> 2) - int64_t(x->last_ns >> 2);
        int64_t age[2];
        for (int i = 0; i < 2; i++) age[i] = u.age[i] == kNoAge ? -1 : step + int64_t(u.age[i]);
        auto rebase = [&](int i) {
            return age[i] < 0 || age[i] >= int64_t(kNoAge) ? kNoAge : uint32_t(age[i]);
        };
        x->last_ns = ts_ns;
        if (caplen > p.l3) {
            const uint64_t h = hash_bytes(frame, caplen, p.l3, p.key.version, wirelen);
            const int64_t window = int64_t(cfg_.dedup_window_ns >> 2);
            for (int i = 0; i < 2; i++) {
                if (u.hash[i] == h && age[i] >= 0 && age[i] <= window) {
                    u.age[0] = rebase(0);
                    u.age[1] = rebase(1);
                    add(counters_.duplicates, 1);
                    add(counters_.duplicate_bytes, wirelen);
                    return kDuplicate;
                }
            }
            u.hash[1] = u.hash[0];
            u.age[1] = rebase(0);
            u.hash[0] = h;
            u.age[0] = 0;
        } else {
            u.age[0] = rebase(0);
            u.age[1] = rebase(1);
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
                list_remove(cold_, lru_head_, lru_tail_, s);
                list_push_back(cold_, lru_head_, lru_tail_, s);
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

namespace {

packet::Endpoint endpoint(const uint8_t* addr, uint8_t version, uint16_t port) {
    packet::Endpoint e;
    std::memcpy(e.addr.bytes.data(), addr, 16);
    e.addr.family = version == 4 ? packet::Family::kIpv4 : packet::Family::kIpv6;
    e.port = port;
    return e;
}

}  // namespace

void FlowTable::tcp_drop(uint32_t slot) {
    const uint32_t r = hot_[slot].tcp - 1;
    hot_[slot].tcp = 0;
    packet::TcpConn& c = tcp_[r];
    if (c.in_use) tcp_counters_.evicted++;
    c.in_use = false;
    // Free: first in line to be taken.
    list_remove(tcp_, tcp_head_, tcp_tail_, r);
    list_push_back(tcp_, tcp_head_, tcp_tail_, r);
}

void FlowTable::tcp_packet(uint32_t slot, const FlowPacket& p, const uint8_t* frame,
                           uint32_t caplen, uint64_t ts_ns, packet::FrameRef ref) {
    Hot& x = hot_[slot];
    if (x.id != p.hash) {
        // A later packet of the burst took the flow's slot.
        tcp_counters_.evicted++;
        return;
    }
    // The segment, by the walker's rules (decode.cc): the header must fit
    // the datagram, whose end the IP length fields give (0: the capture's).
    const uint8_t* ip = frame + p.l3;
    const uint8_t* t = frame + p.tcp;
    uint32_t end;
    packet::DecodedPacket d;
    if (p.key.version == 4) {
        const uint32_t len = be16(ip + 2);
        end = len ? p.l3 + len : caplen;
        d.ttl = ip[8];
    } else {
        const uint32_t len = be16(ip + 4);
        end = len ? p.l3 + 40 + len : caplen;
        d.ttl = ip[7];
    }
    const uint32_t doff = (t[12] >> 4) * 4u;
    if (p.tcp + 20u > end || doff < 20 || p.tcp + doff > end) return;  // not_tcp at the copy
    d.proto = packet::kProtoTcp;
    d.has_ports = true;
    d.seq = be32(t + 4);
    d.ack = be32(t + 8);
    d.tcp_flags = t[13];
    d.window = be16(t + 14);
    d.payload_len = end - (p.tcp + doff);

    uint32_t r;
    if (x.tcp) {
        r = x.tcp - 1;
        if (tcp_head_ != r + 1) {
            list_remove(tcp_, tcp_head_, tcp_tail_, r);
            list_push_front(tcp_, tcp_head_, tcp_tail_, r);
        }
    } else {
        if (tcp_used_ < cfg_.tcp_conns) {
            r = tcp_used_++;
        } else {
            // A free record waits at the tail; else the least recently updated.
            r = tcp_tail_ - 1;
            const packet::TcpConn& o = tcp_[r];
            if (o.in_use) {
                hot_[o.bucket_next - 1].tcp = 0;
                tcp_counters_.evicted++;
            }
            list_remove(tcp_, tcp_head_, tcp_tail_, r);
        }
        packet::TcpConn& c = tcp_[r];
        c = packet::TcpConn{};
        c.ep[0] = endpoint(p.key.a, p.key.version, uint16_t(p.key.ports >> 16));
        c.ep[1] = endpoint(p.key.b, p.key.version, uint16_t(p.key.ports));
        c.in_use = true;
        c.bucket_next = slot + 1;
        list_push_front(tcp_, tcp_head_, tcp_tail_, r);
        x.tcp = r + 1;
        tcp_counters_.created++;
    }
    packet::TcpConn& c = tcp_[r];
    const int dir = p.a_sent ? 0 : 1;
    // packet::TcpTracker::update()'s rule: a fresh SYN on a connection that
    // carried data or finished starts a new one; another attempt does not.
    if ((d.tcp_flags & (packet::kTcpSyn | packet::kTcpAck)) == packet::kTcpSyn && c.packets > 0) {
        const packet::TcpDirection& sd = c.dir[dir];
        const bool progressed = c.handshake_done || c.dir[0].bytes > 0 || c.dir[1].bytes > 0 ||
                                (c.dir[0].fin && c.dir[1].fin);
        if (progressed && (!sd.syn || sd.isn != d.seq)) {
            tcp_counters_.reused++;
            packet::TcpConn fresh{};
            fresh.ep[0] = c.ep[0];
            fresh.ep[1] = c.ep[1];
            fresh.bucket_next = c.bucket_next;
            fresh.lru_prev = c.lru_prev;
            fresh.lru_next = c.lru_next;
            fresh.in_use = true;
            c = fresh;
            tcp_counters_.created++;
        }
    }
    packet::tcp_conn_update(c, dir, d, ts_ns, ref);
    tcp_counters_.packets++;
    if (ts_ns > tcp_last_ts_) tcp_last_ts_ = ts_ns;
}

void FlowTable::tcp_copy(uint64_t req) {
    uint32_t k = 0;
    for (uint32_t r = tcp_tail_; r; r = tcp_[r - 1].lru_prev)
        if (tcp_[r - 1].in_use) tcp_area_[k++] = tcp_[r - 1];
    snap_count_ = k;
    snap_counters_ = tcp_counters_;
    snap_counters_.not_tcp = tcp_seen_ - tcp_counters_.packets;
    snap_seen_ = tcp_seen_;
    snap_last_ts_ = tcp_last_ts_;
    tcp_served_.store(req, std::memory_order_release);
}

void FlowTable::tcp_request() {
    tcp_request_.store(tcp_request_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

bool FlowTable::tcp_ready(bool owner_done) {
    const uint64_t want = tcp_request_.load(std::memory_order_relaxed);
    if (tcp_served_.load(std::memory_order_acquire) == want) return true;
    if (!owner_done) return false;
    tcp_copy(want);
    return true;
}

packet::TableView FlowTable::tcp_view(unsigned worker) const {
    packet::TableView v;
    v.worker = worker;
    v.capacity = cfg_.tcp_conns;
    v.conns = std::span<const packet::TcpConn>(tcp_area_, snap_count_);
    v.counters = snap_counters_;
    v.packets_seen = snap_seen_;
    v.last_ts = snap_last_ts_;
    return v;
}

void FlowTable::tcp_release() {
    const size_t used = size_t(snap_count_) * sizeof(packet::TcpConn);
    if (used > 0) madvise(tcp_area_, used, MADV_DONTNEED);
    snap_count_ = 0;
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
    for (uint32_t s = lru_head_; s && want; s = cold_[s - 1].lru_next) {
        const Hot& x = hot_[s - 1];
        const FlowPacket::Key& key = cold_[s - 1].key;
        const uint64_t bytes = x.bytes[0] + x.bytes[1];
        if (n == want && bytes <= top_[0].bytes) continue;
        FlowInfo f;
        f.ip_version = key.version;
        f.proto = key.proto;
        std::memcpy(f.a, key.a, 16);
        std::memcpy(f.b, key.b, 16);
        f.pa = uint16_t(key.ports >> 16);
        f.pb = uint16_t(key.ports);
        f.vlan = key.vlan;
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
