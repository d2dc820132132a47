#include "packet/tcp_tracker.hh"

#include <sys/mman.h>

#include <cstring>
#include <new>
#include <string>

namespace linecap::packet {

namespace {

uint64_t mix(uint64_t h, uint64_t w) {
    h ^= w;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 32);
}

uint64_t load64(const uint8_t* p) {
    uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

/* Both directions of a connection hash alike because the key is canonical. */
uint64_t hash_key(const Endpoint& a, const Endpoint& b) {
    uint64_t h = 0x9e3779b97f4a7c15ull;
    h = mix(h, load64(a.addr.bytes.data()));
    h = mix(h, load64(a.addr.bytes.data() + 8));
    h = mix(h, load64(b.addr.bytes.data()));
    h = mix(h, load64(b.addr.bytes.data() + 8));
    h = mix(h, static_cast<uint64_t>(a.port) << 16 | b.port);
    return h;
}

void keep_frame(FrameRef* frames, uint32_t& kept, FrameRef f) {
    if (kept < kMaxFrameRefs) frames[kept++] = f;
}

}  // namespace

void tcp_conn_update(TcpConn& c, int d, const DecodedPacket& p, uint64_t ts, FrameRef f) {
    TcpDirection& s = c.dir[d];
    TcpDirection& r = c.dir[1 - d];
    const uint8_t fl = p.tcp_flags;
    const bool syn = fl & kTcpSyn;
    const bool ack = fl & kTcpAck;
    const bool rst = fl & kTcpRst;
    const bool fin = fl & kTcpFin;
    const uint32_t len = p.payload_len;

    if (c.packets == 0) {
        c.first_ts = c.last_ts = ts;
        c.first_frame = f;
        /* Until a SYN or SYN-ACK says otherwise, the side on the higher
         * (ephemeral-looking) port is taken for the client. */
        c.client = c.ep[0].port > c.ep[1].port ? 0 : 1;
        c.role_basis = TcpConn::RoleBasis::kPort;
    }
    c.packets++;
    /* Merged or badly clocked captures are not always in time order. */
    if (ts < c.first_ts) c.first_ts = ts;
    if (ts > c.last_ts) c.last_ts = ts;
    c.last_frame = f;
    s.packets++;
    if (!rst) {
        s.ttl = p.ttl;
        s.ttl_known = true;
    }

    if (syn && !ack) {
        if (c.role_basis != TcpConn::RoleBasis::kSyn && c.syn_count == 0 && c.synack_count == 0) {
            c.client = static_cast<uint8_t>(d);
            c.role_basis = TcpConn::RoleBasis::kSyn;
        }
        if (d == c.client) {
            if (c.syn_count < kMaxSynTimes) c.syn_ts[c.syn_count] = ts;
            if (c.syn_count == 0) c.first_syn_frame = f;
            c.syn_count++;
            s.syn = true;
            s.isn = p.seq;
            s.seq_known = true;
            s.high = p.seq + 1;
        }
    } else if (syn && ack) {
        if (c.syn_count == 0 && c.synack_count == 0) {
            c.client = static_cast<uint8_t>(1 - d);
            c.role_basis = TcpConn::RoleBasis::kSynAck;
        }
        if (d != c.client) {
            if (c.synack_count == 0) c.synack_ts = ts;
            c.synack_count++;
            s.syn = true;
            s.isn = p.seq;
            s.seq_known = true;
            s.high = p.seq + 1;
        }
    }
    const bool from_client = d == c.client;
    if (!from_client && !rst) c.server_spoke = true;
    if (from_client && !syn && ack && !rst && c.synack_count > 0) c.handshake_done = true;

    if (!syn) {
        if (!s.seq_known) {
            s.seq_known = true;
            s.high = p.seq;
        }
        if (len > 0 && !rst) {
            s.payload_packets++;
            const uint32_t end = p.seq + len;
            if (seq_lt(p.seq, s.high)) {
                /* A keep-alive resends the last byte (or none) on purpose. */
                const bool keepalive = len <= 1 && p.seq == s.high - 1;
                if (!keepalive) {
                    s.retransmissions++;
                    s.retrans_bytes += seq_lt(end, s.high) ? len : s.high - p.seq;
                    keep_frame(s.retrans_frames, s.retrans_frames_kept, f);
                }
                if (seq_gt(end, s.high)) {
                    s.bytes += end - s.high;
                    s.high = end;
                }
            } else {
                if (seq_gt(p.seq, s.high)) {
                    s.gaps++;
                    s.gap_bytes += p.seq - s.high;
                    s.bytes += p.seq - s.high;
                }
                s.bytes += len;
                s.high = end;
            }
        }
        if (fin) {
            const uint32_t fin_seq = p.seq + len;
            if (s.fin && fin_seq == s.fin_seq && len == 0) {
                s.retransmissions++;
                keep_frame(s.retrans_frames, s.retrans_frames_kept, f);
            }
            if (!s.fin) {
                s.fin = true;
                s.fin_seq = fin_seq;
                s.fin_ts = ts;
                s.fin_frame = f;
            }
        }
    }

    /* Duplicate ACK (RFC 5681 §2): no data, no SYN/FIN/RST, same ACK and
     * window as the previous ACK, and the peer has data outstanding. */
    if (ack && !rst) {
        const bool dup = !syn && !fin && len == 0 && s.ack_known && p.ack == s.last_ack &&
                         p.window == s.last_win && r.seq_known && seq_gt(r.high, p.ack);
        if (dup) {
            s.dup_acks++;
            s.dupack_run++;
            if (s.dupack_run > s.max_dupack_run) s.max_dupack_run = s.dupack_run;
            if (s.dupack_run == 3) {
                if (s.dupack_runs3 == 0) s.first_triple_dupack = f;
                s.dupack_runs3++;
            }
        } else if (!s.ack_known || p.ack != s.last_ack) {
            s.dupack_run = 0;
        }
        s.ack_known = true;
        s.last_ack = p.ack;
        s.last_win = p.window;

        if (!syn) {
            if (p.window == 0) {
                s.zero_windows++;
                if (!s.in_zero_window) {
                    if (s.zero_window_episodes == 0) s.first_zero_window = f;
                    s.zero_window_episodes++;
                    s.in_zero_window = true;
                }
            } else {
                s.in_zero_window = false;
            }
        }
    }

    if (rst) {
        s.rsts++;
        if (!c.reset) {
            c.reset = true;
            c.rst_dir = static_cast<uint8_t>(d);
            c.rst_ttl = p.ttl;
            c.rst_ts = ts;
            c.rst_frame = f;
            c.rst_before_handshake = !c.handshake_done;
            c.rst_after_synack = c.synack_count > 0;
            c.rst_after_fins = c.dir[0].fin && c.dir[1].fin;
            c.bytes_at_rst[0] = c.dir[0].bytes;
            c.bytes_at_rst[1] = c.dir[1].bytes;
        }
    }
}

void TcpTracker::UnmapDeleter::operator()(void* p) const {
    if (p != nullptr) munmap(p, bytes);
}

Result<TcpTracker> TcpTracker::create(uint32_t capacity, ReleaseFn on_release, void* ctx) {
    if (capacity == 0) capacity = 1;
    const size_t bytes = size_t(capacity) * sizeof(TcpConn);
    auto fail = [&](const std::string& what) {
        return make_error("TCP tracker of " + std::to_string(capacity) + " connections: " + what);
    };
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED)
        return fail("cannot map " + std::to_string(bytes >> 20) + " MiB for its slots");
    (void)madvise(mem, bytes, MADV_HUGEPAGE);  // a hint: 4 KiB pages still work
    TcpTracker t(on_release, ctx);
    t.conns_ =
        std::unique_ptr<TcpConn[], UnmapDeleter>(static_cast<TcpConn*>(mem), UnmapDeleter{bytes});
    t.capacity_ = capacity;
    uint64_t nb = 1;
    while (nb < static_cast<uint64_t>(capacity) * 2) nb <<= 1;
    // The only allocation that can throw; caught here so that no exception
    // leaves the tracker (capd's workers own trackers).
    try {
        t.buckets_.assign(nb, kNil);
    } catch (const std::bad_alloc&) {
        return fail("out of memory for " + std::to_string(nb * sizeof(uint32_t) >> 20) +
                    " MiB of hash buckets");
    }
    t.bucket_mask_ = nb - 1;
    return t;
}

void TcpTracker::lru_remove(uint32_t i) {
    TcpConn& c = conns_[i];
    if (c.lru_prev != kNil)
        conns_[c.lru_prev].lru_next = c.lru_next;
    else
        lru_head_ = c.lru_next;
    if (c.lru_next != kNil)
        conns_[c.lru_next].lru_prev = c.lru_prev;
    else
        lru_tail_ = c.lru_prev;
}

void TcpTracker::lru_push_front(uint32_t i) {
    TcpConn& c = conns_[i];
    c.lru_prev = kNil;
    c.lru_next = lru_head_;
    if (lru_head_ != kNil) conns_[lru_head_].lru_prev = i;
    lru_head_ = i;
    if (lru_tail_ == kNil) lru_tail_ = i;
}

void TcpTracker::unlink_bucket(uint32_t i) {
    uint32_t* link = &buckets_[conns_[i].hash & bucket_mask_];
    while (*link != kNil) {
        if (*link == i) {
            *link = conns_[i].bucket_next;
            return;
        }
        link = &conns_[*link].bucket_next;
    }
}

uint32_t TcpTracker::find_or_insert(const Endpoint& a, const Endpoint& b, uint64_t hash) {
    uint32_t& head = buckets_[hash & bucket_mask_];
    for (uint32_t i = head; i != kNil; i = conns_[i].bucket_next) {
        const TcpConn& c = conns_[i];
        if (c.hash == hash && c.ep[0] == a && c.ep[1] == b) {
            lru_remove(i);
            lru_push_front(i);
            return i;
        }
    }
    uint32_t i;
    if (next_unused_ < capacity_) {
        i = next_unused_++;
        new (&conns_[i]) TcpConn{};
    } else {
        i = lru_tail_;
        if (on_release_ != nullptr) on_release_(ctx_, conns_[i], Release::kEvicted);
        counters_.evicted++;
        unlink_bucket(i);
        lru_remove(i);
        used_--;
    }
    /* The bucket head may have moved if the evicted slot shared it. */
    uint32_t& h = buckets_[hash & bucket_mask_];
    TcpConn& c = conns_[i];
    c = TcpConn{};
    c.ep[0] = a;
    c.ep[1] = b;
    c.hash = hash;
    c.in_use = true;
    c.bucket_next = h;
    h = i;
    lru_push_front(i);
    used_++;
    counters_.created++;
    return i;
}

bool TcpTracker::update(const DecodedPacket& p, uint64_t ts_ns, FrameRef frame) {
    if (p.proto != kProtoTcp || !p.has_ports) {
        counters_.not_tcp++;
        return false;
    }
    counters_.packets++;
    const Endpoint src{p.src, p.sport};
    const Endpoint dst{p.dst, p.dport};
    const bool src_first = !(dst < src);
    const Endpoint& a = src_first ? src : dst;
    const Endpoint& b = src_first ? dst : src;
    const int d = src_first ? 0 : 1;
    const uint64_t h = hash_key(a, b);
    const uint32_t i = find_or_insert(a, b, h);
    TcpConn& c = conns_[i];

    /* A fresh SYN on a 5-tuple whose connection already carried data or
     * finished starts a new connection. A SYN that is only another attempt
     * (refused or unanswered before) stays with the old one. */
    if ((p.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn && c.packets > 0) {
        const TcpDirection& s = c.dir[d];
        const bool progressed = c.handshake_done || c.dir[0].bytes > 0 || c.dir[1].bytes > 0 ||
                                (c.dir[0].fin && c.dir[1].fin);
        const bool new_isn = !s.syn || s.isn != p.seq;
        if (progressed && new_isn) {
            if (on_release_ != nullptr) on_release_(ctx_, c, Release::kReused);
            counters_.reused++;
            TcpConn fresh{};
            fresh.ep[0] = c.ep[0];
            fresh.ep[1] = c.ep[1];
            fresh.hash = c.hash;
            fresh.bucket_next = c.bucket_next;
            fresh.lru_prev = c.lru_prev;
            fresh.lru_next = c.lru_next;
            fresh.in_use = true;
            c = fresh;
            counters_.created++;
        }
    }
    tcp_conn_update(c, d, p, ts_ns, frame);
    return true;
}

}  // namespace linecap::packet
