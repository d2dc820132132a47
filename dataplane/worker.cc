#include "dataplane/worker.hh"

#include <rte_branch_prediction.h>
#include <rte_memcpy.h>
#include <rte_prefetch.h>
#include <unistd.h>

#include <cstring>

#include "dataplane/cut_ledger.hh"
#include "dataplane/flow_table.hh"
#include "packet/headers.hh"

namespace linecap::dataplane {
namespace {

/* Largest packet the filters see whole when it arrives in segments: the
 * largest snaplen, so filters see what libpcap would. The buffers are
 * touched only as far as chained packets reach. */
constexpr uint32_t kLinearMax = 262144;

struct WorkerState {
    // A constructor, not aggregate initialisation: `linear` stays untouched
    // (kBurstSize x 256 KiB: 16 MiB of address space, pages faulted in only
    // by chained packets).
    explicit WorkerState(WorkerContext& c) : ctx(c) {}
    WorkerContext& ctx;
    storage::Chunk* chunk = nullptr;
    storage::TsSplit ts_split;
    uint64_t burst_tsc = 0;  // TSC read right after the current burst arrived
    CutLedger cuts;          // what the flow table left out, for the chunk's notes
    uint8_t linear[kBurstSize][kLinearMax];
};

void add(std::atomic<uint64_t>& c, uint64_t v) {
    // Single writer: a plain load/store pair, no locked instruction.
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
}

/* Hands the current chunk to the writer. Returns false if the ring was full
 * (the chunk's packets are then counted as lost and the chunk reused). */
void hand_over(WorkerState& st) {
    storage::Chunk* c = st.chunk;
    if (!c || (c->packets == 0 && st.cuts.count() == 0)) return;
    st.cuts.seal(*c);
    WorkerContext& ctx = st.ctx;
    // A file can be read more slowly; a wire cannot wait. Workers that only
    // read finite files wait for the writer instead of dropping.
    if (ctx.lossless)
        while (ctx.out->full()) usleep(50);
    if (ctx.out->enqueue(c)) {
        add(ctx.stats.chunks, 1);
        st.chunk = nullptr;
    } else {
        add(ctx.stats.ring_full, c->packets);
        c->reset();
    }
}

bool get_chunk(WorkerState& st) {
    void* obj;
    while (rte_mempool_get(st.ctx.chunk_pool, &obj) != 0) {
        if (!st.ctx.lossless) return false;
        usleep(50);
    }
    st.chunk = static_cast<storage::Chunk*>(obj);
    st.chunk->reset();
    st.chunk->capacity =
        st.ctx.chunk_pool->elt_size - static_cast<uint32_t>(sizeof(storage::Chunk));
    st.chunk->worker = static_cast<uint16_t>(st.ctx.index);
    return true;
}

/* Copies one packet's record into the current chunk; returns 1 if it did. */
__rte_always_inline uint32_t encode(WorkerState& st, const rte_mbuf* m, uint64_t ts, uint32_t if_id,
                                    uint32_t wirelen) {
    WorkerContext& ctx = st.ctx;
    uint32_t caplen = m->pkt_len < ctx.snaplen ? m->pkt_len : ctx.snaplen;
    uint32_t need = storage::record_size(ctx.format, caplen);
    storage::Chunk* c = st.chunk;
    if (unlikely(!c || !c->fits(need + st.cuts.reserve()))) {
        hand_over(st);
        if (!st.chunk && !get_chunk(st)) {
            add(ctx.stats.writer_slow, 1);
            return 0;
        }
        c = st.chunk;
    }
    if (c->first_tsc == 0) c->first_tsc = st.burst_tsc;  // its first record or note
    // The record's start, for the writer and the index (see Chunk).
    c->starts()[-1 - int64_t(c->packets)] = c->len;
    uint8_t* dst = c->data() + c->len;
    dst += storage::encode_record_header(ctx.format, dst, ts, if_id, caplen, wirelen, st.ts_split);
    uint32_t left = caplen;
    for (const rte_mbuf* seg = m; seg && left; seg = seg->next) {
        uint32_t take = seg->data_len < left ? seg->data_len : left;
        rte_memcpy(dst, rte_pktmbuf_mtod(seg, const uint8_t*), take);
        dst += take;
        left -= take;
    }
    dst += storage::encode_record_trailer(ctx.format, dst, caplen);
    c->len += need;
    c->packets++;
    return 1;
}

/* A packet the flow table left out (cut or duplicate): to its flow's note
 * (cut_ledger.hh). A flow that needs a new note the chunk has no room or
 * slot for hands the chunk over first. If no chunk can be had, the packet
 * is not noted (the index then shows less cut than the counters: the same
 * lossy case as writer_slow). */
void note_cut(WorkerState& st, const FlowPacket& p, const uint8_t* frame, uint32_t caplen,
              uint32_t wirelen, uint64_t ts, uint32_t if_id, bool dup) {
    auto room = [](const storage::Chunk* c) {
        return c ? c->capacity - c->len - storage::kStartBytes * c->packets : 0;
    };
    storage::Chunk* c = st.chunk;
    if (!st.cuts.add(p, frame, caplen, wirelen, ts, if_id, dup, room(c))) {
        hand_over(st);
        if (!st.chunk && !get_chunk(st)) return;
        c = st.chunk;
        (void)st.cuts.add(p, frame, caplen, wirelen, ts, if_id, dup, room(c));
    }
    if (c && c->first_tsc == 0) c->first_tsc = st.burst_tsc;  // its first note
}

/* Takes up to n packets from the -c budget; returns how many may be kept. */
uint32_t take_budget(CountLimit& lim, uint32_t n) {
    uint64_t cur = lim.remaining.load(std::memory_order_relaxed);
    for (;;) {
        uint32_t take = cur < n ? static_cast<uint32_t>(cur) : n;
        if (take == 0) return 0;
        if (lim.remaining.compare_exchange_weak(cur, cur - take, std::memory_order_relaxed))
            return take;
    }
}

void process_burst(WorkerState& st, const QueueRef& q, rte_mbuf** pkts, uint16_t n) {
    WorkerContext& ctx = st.ctx;
    uint64_t bytes = 0;
    // Only file sources set the wire-length field; a port's mbufs may carry
    // a stale value there from an earlier use of the buffer.
    const bool file_src = q.source->source_timestamps();
    auto wirelen = [&](const rte_mbuf* m) { return file_src ? ctx.fields.wirelen(m) : m->pkt_len; };
    for (uint16_t i = 0; i < n; i++) bytes += wirelen(pkts[i]);
    add(ctx.stats.rx_packets, n);
    add(ctx.stats.rx_bytes, bytes);
    add(q.stats->rx_packets, n);
    if (ctx.rx_only) {
        rte_pktmbuf_free_bulk(pkts, n);
        return;
    }

    // One TSC read stamps the burst: every packet in it arrived by then.
    uint64_t burst_ns = 0;
    if (!q.source->source_timestamps() && q.source->ts_scale() == 0)
        burst_ns = ctx.clock.to_ns(st.burst_tsc);

    uint8_t verdict[kBurstSize];
    uint32_t kept = n;
    RuleSnapshot* snap = ctx.rules->load(std::memory_order_acquire);
    const filters::RuleSet* rules = snap->rules.get();
    // Classification runs even for a match-all set: it keeps the per-rule
    // counters (an empty set keeps every packet and counts it under no rule).
    filters::Packet fp[kBurstSize];
    // Which rule took each packet: only when a rule has its own flow cutoff.
    uint16_t rule_of[kBurstSize];
    const bool per_rule = ctx.flows && snap->rule_cutoffs;
    {
        for (uint16_t i = 0; i < n; i++) {
            const rte_mbuf* m = pkts[i];
            fp[i].wirelen = wirelen(m);
            if (likely(m->nb_segs == 1)) {
                fp[i].data = rte_pktmbuf_mtod(m, const uint8_t*);
                fp[i].caplen = m->data_len;
            } else {
                uint32_t len = m->pkt_len < kLinearMax ? m->pkt_len : kLinearMax;
                fp[i].data = static_cast<const uint8_t*>(rte_pktmbuf_read(m, 0, len, st.linear[i]));
                fp[i].caplen = len;
            }
        }
        kept = rules->classify_burst(fp, n, verdict, *snap->scratch[ctx.index],
                                     per_rule ? rule_of : nullptr);
        add(ctx.stats.filtered_out, n - kept);
    }

    // The flow table: past a flow's cutoff, or a duplicate. Before -c, so
    // cut and duplicate packets take nothing from its budget. Each packet's
    // slot and time are kept for the TCP diagnosis, which sees only what the
    // capture keeps (after -c too).
    FlowPacket fl[kBurstSize];
    uint32_t slot_of[kBurstSize];
    uint64_t ts_of[kBurstSize];
    if (ctx.flows && kept > 0) {
        FlowTable& ft = *ctx.flows;
        const uint16_t lt = q.source->linktype();
        // --tcp-flows alone: the table serves only the diagnosis, so a packet
        // without a TCP header skips it (Ethernet frames after the walker's
        // two-load prefilter). Rules' own cutoffs bring every packet back.
        const bool tcp_only = ft.config().tcp_only && !per_rule;
        for (uint16_t i = 0; i < n; i++) {
            if (!verdict[i]) continue;
            if (tcp_only && lt == 1 && !packet::ethernet_may_carry_tcp(fp[i].data, fp[i].caplen)) {
                fl[i].ok = false;
                fl[i].tcp = 0;
                continue;
            }
            parse_flow(lt, fp[i].data, fp[i].caplen, fl[i]);
        }
        // The burst's buckets, then its slots, as two runs of loads before
        // the verdicts: the misses of each run overlap. A flow's slot is
        // anywhere in the table on a real link (slots are taken in the
        // order flows start), and known only once its bucket is read.
        // Prefetch instructions in the parse loop overlap less on the VM of
        // bench/README.md: capd at 2^20 flows, 141 ns/packet with them
        // against 106 (flow_table_bench FlowsScatteredSlotStage against
        // FlowsScatteredFetch).
        static_assert(kBurstSize <= FlowTable::kMaxFetch);
        const uint64_t now_ns = burst_ns ? burst_ns : ctx.clock.to_ns(st.burst_tsc);
        uint32_t found[kBurstSize];
        ft.fetch(fl, verdict, n, now_ns, found);
        for (uint16_t i = 0; i < n; i++) {
            if (!verdict[i] || (tcp_only && !fl[i].tcp)) continue;
            const rte_mbuf* m = pkts[i];
            uint64_t ts = now_ns;
            if (m->ol_flags & ctx.fields.ts_flag) {
                ts = ctx.fields.timestamp(m);
                if (q.source->ts_scale() > 1) ts *= q.source->ts_scale();
            }
            FlowCutoff cut = ft.default_cutoff();
            if (per_rule && rule_of[i] != filters::RuleSet::kNoRule) {
                const RuleSnapshot::Cutoff& rc = snap->cutoffs[rule_of[i]];
                if (rc.set) cut = {rc.bytes, rc.packets};
            }
            const FlowTable::Verdict v =
                ft.packet(fl[i], fp[i].data, fp[i].caplen, fp[i].wirelen, ts, cut, found[i]);
            if (v != FlowTable::kKeep) {
                verdict[i] = 0;
                kept--;
                if (ctx.cut_notes)
                    note_cut(st, fl[i], fp[i].data, fp[i].caplen, fp[i].wirelen, ts, q.if_id,
                             v == FlowTable::kDuplicate);
            }
            slot_of[i] = ft.last_slot();
            ts_of[i] = ts;
        }
    }

    if (ctx.limit->enabled && kept > 0) {
        uint32_t allowed = take_budget(*ctx.limit, kept);
        if (allowed < kept) {
            add(ctx.stats.over_limit, kept - allowed);
            // Keep the first `allowed` accepted packets, in order.
            uint32_t seen = 0;
            for (uint16_t i = 0; i < n; i++)
                if (verdict[i] && ++seen > allowed) verdict[i] = 0;
            kept = allowed;
        }
    }
    add(ctx.stats.accepted, kept);
    add(q.stats->accepted, kept);
    if (ctx.flows && kept && ctx.flows->tcp_on()) {
        FlowTable& ft = *ctx.flows;
        ft.tcp_offered(kept);
        // Frames are numbered by the queue's receive count.
        const uint64_t frame0 = q.stats->rx_packets.load(std::memory_order_relaxed) - n;
        for (uint16_t i = 0; i < n; i++)
            if (verdict[i] && fl[i].tcp)
                ft.tcp_packet(slot_of[i], fl[i], fp[i].data, fp[i].caplen, ts_of[i],
                              packet::FrameRef{q.if_id, uint32_t(frame0 + i + 1)});
    }

    uint32_t encoded = 0;
    for (uint16_t i = 0; i < n; i++) {
        if (i + 4 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 4], void*));
        if (!verdict[i]) continue;
        const rte_mbuf* m = pkts[i];
        uint64_t ts;
        if (m->ol_flags & ctx.fields.ts_flag) {
            ts = ctx.fields.timestamp(m);
            if (q.source->ts_scale() > 1) ts *= q.source->ts_scale();
        } else {
            ts = burst_ns ? burst_ns : ctx.clock.now_ns();
        }
        encoded += encode(st, m, ts, q.if_id, wirelen(m));
    }
    add(ctx.stats.encoded, encoded);
    rte_pktmbuf_free_bulk(pkts, n);
}

}  // namespace

int worker_main(void* arg) {
    WorkerContext& ctx = *static_cast<WorkerContext*>(arg);
    auto st = std::make_unique<WorkerState>(ctx);
    rte_mbuf* pkts[kBurstSize];
    unsigned idle = 0;

    rte_rcu_qsbr_thread_online(ctx.qsbr, ctx.index);
    uint64_t last_poll = rte_rdtsc(), max_gap = 0;
    bool busy = false;  // the previous turn received packets
    for (;;) {
        rte_rcu_qsbr_quiescent(ctx.qsbr, ctx.index);
        if (ctx.flows) ctx.flows->serve();
        if (ctx.stop->load(std::memory_order_relaxed)) break;
        // One TSC read per loop turn (rdtsc costs 20-30 ns in a VM): it
        // stamps the burst, measures the poll gap and ages the chunk.
        uint64_t now = 0;
        uint32_t got = 0;
        bool all_finished = true;
        for (const QueueRef& q : ctx.queues) {
            uint16_t n = q.source->rx_burst(q.queue, pkts, kBurstSize);
            if (n) {
                st->burst_tsc = now = rte_rdtsc();
                process_burst(*st, q, pkts, n);
                got += n;
            }
            if (!q.source->finished(q.queue)) all_finished = false;
        }
        if (now == 0) now = rte_rdtsc();
        if (busy) {
            if (likely(now - last_poll <= ctx.stall_cycles)) {
                add(ctx.stats.busy_cycles, now - last_poll);
                add(ctx.stats.busy_turns, 1);
            } else {
                add(ctx.stats.stalled_cycles, now - last_poll);
                add(ctx.stats.stalled_turns, 1);
            }
        }
        busy = got != 0;
        if (unlikely(now - last_poll > max_gap)) {
            max_gap = now - last_poll;
            ctx.stats.max_poll_gap.store(max_gap, std::memory_order_relaxed);
        }
        last_poll = now;
        if (got == 0 && all_finished) break;
        // Flush a partial chunk after the time bound, so a quiet link still
        // reaches the disk. (first_tsc is a burst's TSC, never after `now`.)
        storage::Chunk* c = st->chunk;
        if (c && (c->packets || st->cuts.count()) && now - c->first_tsc > ctx.flush_cycles)
            hand_over(*st);
        if (got != 0) {
            idle = 0;
        } else if (ctx.idle_sleep_us && ++idle > 64) {
            usleep(ctx.idle_sleep_us);
            last_poll = rte_rdtsc();
        } else {
            rte_pause();
        }
    }

    // Drain: the writer is still running, so a full ring clears; wait for it
    // (bounded) rather than lose the last chunk.
    if (st->chunk) st->cuts.seal(*st->chunk);
    if (st->chunk && (st->chunk->packets || st->chunk->cuts)) {
        for (int tries = 0; tries < 50000; tries++) {
            if (ctx.out->enqueue(st->chunk)) {
                add(ctx.stats.chunks, 1);
                st->chunk = nullptr;
                break;
            }
            usleep(100);
        }
        if (st->chunk) add(ctx.stats.ring_full, st->chunk->packets);
    }
    if (st->chunk) rte_mempool_put(ctx.chunk_pool, st->chunk);
    rte_rcu_qsbr_thread_offline(ctx.qsbr, ctx.index);
    ctx.done.store(true, std::memory_order_release);
    return 0;
}

}  // namespace linecap::dataplane
