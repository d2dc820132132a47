#include "dataplane/pipeline.hh"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "dataplane/chunk_pool.hh"
#include "dataplane/eal.hh"
#include "dataplane/rule_snapshot.hh"
#include "dataplane/source.hh"
#include "dataplane/tcp_table.hh"
#include "dataplane/worker.hh"
#include "storage/writer.hh"

namespace linecap::dataplane {

struct RuleTotals {
    uint64_t packets = 0, bytes = 0;
};

/* Per-rule totals of one snapshot, summed over the workers' scratch. */
std::vector<RuleTotals> rule_totals(const RuleSnapshot& snap) {
    std::vector<RuleTotals> t(snap.rules->rule_names().size());
    for (const auto& sc : snap.scratch) {
        auto c = sc->counters();
        for (size_t r = 0; r < t.size() && r < c.size(); r++) {
            t[r].packets += c[r].packets;
            t[r].bytes += c[r].bytes;
        }
    }
    return t;
}

/* What the control thread last saw of a source's kernel interface. `lost`
 * is written once, before `state` becomes kGone (release); readers on the
 * ctl thread load `state` (acquire) first. */
struct SourceHealth {
    std::atomic<LinkState> state{LinkState::kUp};
    std::string lost;
};

const char* state_name(LinkState s) {
    switch (s) {
        case LinkState::kUp: return "ok";
        case LinkState::kDown: return "down";
        case LinkState::kGone: return "lost";
    }
    return "ok";
}

// How often wait() asks the kernel interfaces whether they are still there.
constexpr auto kLinkCheckPeriod = std::chrono::milliseconds(200);

struct Pipeline::Impl {
    Options opts;
    filters::CompileOptions copts;
    std::atomic<RuleSnapshot*> snapshot{nullptr};
    std::unique_ptr<RuleSnapshot> owned_snapshot;  // what `snapshot` points at
    uint64_t generation = 0;
    // Totals of retired snapshots, by rule name, in order of first use.
    std::vector<std::pair<std::string, RuleTotals>> retired;
    rte_rcu_qsbr* qsbr = nullptr;
    bool paused = false;
    const std::atomic<bool>* external_stop = nullptr;

    rte_mempool* mbufs = nullptr;
    rte_mempool* chunks = nullptr;
    std::vector<rte_ring*> rings;
    std::vector<std::unique_ptr<Source>> sources;
    std::vector<std::unique_ptr<SourceHealth>> health;  // per source
    std::vector<std::unique_ptr<QueueStats>> queue_stats;
    std::vector<std::vector<QueueStats*>> queues_of_if;  // per interface
    std::vector<std::unique_ptr<WorkerContext>> workers;
    std::vector<std::unique_ptr<TcpFlowTable>> tcp_tables;  // one per worker, or none
    std::vector<std::unique_ptr<storage::Writer>> writers;
    std::vector<unsigned> worker_lcores, writer_lcores;
    CountLimit limit;
    std::atomic<bool> stop{false};
    std::chrono::steady_clock::time_point started;
    double elapsed = 0;
    bool finished = false;
    bool hugepages = false;

    Result<std::unique_ptr<RuleSnapshot>> build_snapshot(std::vector<filters::RuleSpec> specs) {
        auto rs = filters::compile(specs, copts,
                                   owned_snapshot ? owned_snapshot->rules.get() : nullptr);
        if (!rs) return make_error(rs.error());
        return snapshot_of(std::move(specs), *rs);
    }

    std::unique_ptr<RuleSnapshot> snapshot_of(std::vector<filters::RuleSpec> specs,
                                              std::shared_ptr<const filters::RuleSet> rs) {
        auto snap = std::make_unique<RuleSnapshot>();
        snap->specs = std::move(specs);
        snap->rules = std::move(rs);
        for (unsigned w = 0; w < opts.workers; w++) snap->scratch.push_back(snap->rules->make_scratch());
        snap->generation = ++generation;
        return snap;
    }

    /* Control thread, from wait(): notes interfaces that went down, came
     * back or were deleted, and logs each change once. Returns true when
     * capture must stop: a source was lost (by default), or with
     * --on-source-loss continue, no worker has anything left to read. */
    bool check_sources() {
        bool any_lost = false;
        for (size_t i = 0; i < sources.size(); i++) {
            SourceHealth& h = *health[i];
            LinkState before = h.state.load(std::memory_order_relaxed);
            if (before == LinkState::kGone) {
                any_lost = true;
                continue;
            }
            LinkState now = sources[i]->link_state();
            if (now == before) continue;
            const std::string& name = sources[i]->name();
            if (now == LinkState::kGone) {
                // tcpdump's words for it ("The interface disappeared").
                h.lost = "source '" + name + "': the interface disappeared";
                h.state.store(now, std::memory_order_release);
                any_lost = true;
                std::fprintf(stderr, "capd: %s while capturing; %s\n", h.lost.c_str(),
                             opts.keep_going_on_source_loss
                                 ? "the other sources go on (--on-source-loss continue)"
                                 : "stopping");
                continue;
            }
            h.state.store(now, std::memory_order_release);
            if (!opts.quiet)
                std::fprintf(stderr,
                             now == LinkState::kDown
                                 ? "capd: source '%s': the interface is down; capture goes on "
                                   "when it is up again\n"
                                 : "capd: source '%s': the interface is up again\n",
                             name.c_str());
        }
        if (!any_lost) return false;
        if (!opts.keep_going_on_source_loss) return true;
        // Go on while some worker still has a queue of a source not lost
        // (a finished file source ends its worker by itself).
        for (const auto& w : workers) {
            if (w->done.load(std::memory_order_acquire)) continue;
            for (const QueueRef& q : w->queues)
                if (health[q.if_id]->state.load(std::memory_order_relaxed) != LinkState::kGone)
                    return false;
        }
        return true;
    }

    void retire(const RuleSnapshot& old) {
        auto names = old.rules->rule_names();
        auto totals = rule_totals(old);
        for (size_t r = 0; r < names.size(); r++) {
            auto it = std::find_if(retired.begin(), retired.end(),
                                   [&](const auto& e) { return e.first == names[r]; });
            if (it == retired.end()) {
                retired.emplace_back(names[r], totals[r]);
            } else {
                it->second.packets += totals[r].packets;
                it->second.bytes += totals[r].bytes;
            }
        }
    }

    ~Impl() {
        writers.clear();
        if (qsbr) rte_free(qsbr);
        sources.clear();
        for (rte_ring* r : rings) rte_ring_free(r);
        if (chunks) rte_mempool_free(chunks);
        if (mbufs) rte_mempool_free(mbufs);
    }
};

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() = default;

unsigned mbuf_pool_size(const Options& o) {
    unsigned port_queues = 0, files = 0;
    for (const auto& s : o.sources) {
        if (s.kind == SourceSpec::Kind::kPcapFile)
            files++;
        else
            port_queues += queues_per_port(o);
    }
    return port_queues * (o.rx_desc + 2 * kBurstSize) + files * 2 * kBurstSize +
           (o.workers + 1) * 512 + 4096;
}

unsigned chunk_pool_size(const Options& o) {
    return o.workers * (o.ring_chunks + 2) + o.writers * 16 + 8;
}

size_t eal_memory_mb(const Options& o) {
    size_t chunk_mb = size_t(chunk_pool_size(o)) * (o.chunk_kb + 4) / 1024;
    size_t mbuf_mb = size_t(mbuf_pool_size(o)) * 4096 / (1 << 20) + 1;
    return 128 + (o.rx_only ? 0 : chunk_mb) + mbuf_mb;
}

Result<std::unique_ptr<Pipeline>> Pipeline::create(const Options& o,
                                                   std::vector<filters::RuleSpec> rules,
                                                   const filters::CompileOptions& copts,
                                                   const std::atomic<bool>* external_stop) {
    auto im = std::make_unique<Impl>();
    Impl& p = *im;
    p.opts = o;
    p.copts = copts;
    p.external_stop = external_stop;
    auto snap = p.build_snapshot(std::move(rules));
    if (!snap) return make_error(snap.error());
    p.owned_snapshot = std::move(*snap);
    p.snapshot.store(p.owned_snapshot.get());
    size_t qsz = rte_rcu_qsbr_get_memsize(o.workers);
    p.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("capd_qsbr", qsz, RTE_CACHE_LINE_SIZE));
    if (!p.qsbr || rte_rcu_qsbr_init(p.qsbr, o.workers) != 0)
        return make_error("RCU state: out of memory");
    for (unsigned w = 0; w < o.workers; w++) rte_rcu_qsbr_thread_register(p.qsbr, w);
    p.hugepages = rte_eal_has_hugepages();

    // Lcores: EAL numbered them 1..workers, then the writers.
    unsigned lc = rte_get_next_lcore(-1, 1, 0);
    for (unsigned i = 0; i < o.workers; i++, lc = rte_get_next_lcore(lc, 1, 0)) {
        if (lc >= RTE_MAX_LCORE) return make_error("not enough lcores for the workers");
        p.worker_lcores.push_back(lc);
    }
    if (!o.rx_only)
        for (unsigned i = 0; i < o.writers; i++, lc = rte_get_next_lcore(lc, 1, 0)) {
            if (lc >= RTE_MAX_LCORE) return make_error("not enough lcores for the writers");
            p.writer_lcores.push_back(lc);
        }

    auto fields = MbufFields::register_fields();
    if (!fields) return make_error(fields.error());

    uint16_t qpp = queues_per_port(o);
    unsigned nmbufs = mbuf_pool_size(o);
    p.mbufs = rte_pktmbuf_pool_create("capd_mbufs", nmbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                      static_cast<int>(rte_socket_id()));
    if (!p.mbufs)
        return make_error(std::string("mbuf pool: ") + rte_strerror(rte_errno));

    // The mbuf pool is shared: a null source's frames= fills all of it.
    for (const SourceSpec& s : o.sources) {
        Status filled = fill_null_frames(s, p.mbufs);
        if (!filled) return make_error(filled.error());
    }

    for (unsigned i = 0; i < o.sources.size(); i++) {
        const SourceSpec& s = o.sources[i];
        Result<std::unique_ptr<Source>> src = make_error("");
        if (s.kind == SourceSpec::Kind::kPcapFile)
            src = open_pcap_file_source(s, p.mbufs, *fields);
        else if (s.kind == SourceSpec::Kind::kAfPacket)
            src = open_packet_ring_source(s, i, qpp, o.packet_ring_frames(), p.mbufs,
                                          *fields);
        else
            src = open_eth_source(s, i, qpp, static_cast<uint16_t>(o.rx_desc), p.mbufs,
                                  o.xdp_generic);
        if (!src) return make_error(src.error());
        p.sources.push_back(std::move(*src));
        p.health.push_back(std::make_unique<SourceHealth>());
    }

    // Interfaces as the files describe them: one per source.
    std::vector<storage::InterfaceDesc> ifaces;
    for (const auto& s : p.sources) {
        storage::InterfaceDesc d;
        d.name = s->name();
        d.filter = p.owned_snapshot->rules->filter_text();
        d.linktype = s->linktype();
        d.snaplen = o.snaplen;
        ifaces.push_back(d);
    }
    if (o.format != storage::Format::kPcapng && !storage::single_linktype(ifaces))
        return make_error("sources have different link types: use --format pcapng");

    // Worker contexts and their queues, round-robin over workers.
    // -U: a partial chunk goes to the writer at the end of the loop turn
    // that filled it, not after --flush-ms.
    uint64_t flush_cycles = o.packet_buffered ? 0 : rte_get_tsc_hz() / 1000 * o.flush_ms;
    for (unsigned w = 0; w < o.workers; w++) {
        auto ctx = std::make_unique<WorkerContext>();
        ctx->index = w;
        ctx->format = o.format;
        ctx->snaplen = o.snaplen;
        ctx->fields = *fields;
        ctx->flush_cycles = flush_cycles;
        ctx->rules = &p.snapshot;
        ctx->qsbr = p.qsbr;
        ctx->limit = &p.limit;
        ctx->stop = &p.stop;
        ctx->rx_only = o.rx_only;
        if (o.tcp_flows > 0 && !o.rx_only) {
            auto t = TcpFlowTable::create(w, o.tcp_flows);
            if (!t) return make_error(t.error());
            ctx->tcp = t->get();
            p.tcp_tables.push_back(std::move(*t));
        }
        p.workers.push_back(std::move(ctx));
    }
    p.queues_of_if.resize(p.sources.size());
    unsigned k = 0;
    for (uint32_t i = 0; i < p.sources.size(); i++)
        for (uint16_t q = 0; q < p.sources[i]->queues(); q++, k++) {
            p.queue_stats.push_back(std::make_unique<QueueStats>());
            p.queues_of_if[i].push_back(p.queue_stats.back().get());
            p.workers[k % o.workers]->queues.push_back(
                QueueRef{p.sources[i].get(), q, i, p.queue_stats.back().get()});
        }
    // True when a worker has queues and every one comes from a source of
    // which pred(spec) holds.
    auto every_queue = [&](const WorkerContext& w, auto pred) {
        if (w.queues.empty()) return false;
        for (const QueueRef& q : w.queues)
            if (!pred(o.sources[q.if_id])) return false;
        return true;
    };
    // Workers reading only finite files may wait for their writer.
    for (auto& w : p.workers)
        w->lossless = every_queue(*w, [](const SourceSpec& s) {
            return s.kind == SourceSpec::Kind::kPcapFile && !s.loop;
        });
    // A worker that would spin on a CPU someone else needs sleeps for a
    // moment when its queues are empty: when busy lcores outnumber the CPUs,
    // and when it reads only kernel interfaces (af_packet, af_xdp), whose
    // frames the kernel receives on other CPUs, often the sender's own on a
    // small host, and keeps in the socket's ring meanwhile. An af_packet
    // ring hands over whole blocks (at least every 4 ms), so its workers
    // sleep longer: a quarter of the time the ring lasts at 1 GB/s (0.512 us
    // for each 2 KiB descriptor), from 20 us to 1 ms. On a 2-vCPU VM a
    // paced veth sender went from 0.66 to 0.75-0.78 Mpps with the 1 ms sleep.
    if (!o.busy_poll) {
        cpu_set_t set;
        CPU_ZERO(&set);
        int ncpu = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
        bool shared = o.workers + (o.rx_only ? 0 : o.writers) > static_cast<unsigned>(ncpu);
        unsigned ring_us = std::clamp(o.packet_ring_frames() * 512u / 1000u, 20u, 1000u);
        for (auto& w : p.workers) {
            if (every_queue(*w, [](const SourceSpec& s) {
                    return s.kind == SourceSpec::Kind::kAfPacket;
                }))
                w->idle_sleep_us = ring_us;
            else if (shared || every_queue(*w, [](const SourceSpec& s) {
                         return s.kind == SourceSpec::Kind::kAfPacket ||
                                s.kind == SourceSpec::Kind::kAfXdp;
                     }))
                w->idle_sleep_us = 20;
        }
    }
    p.limit.enabled = o.count > 0;
    p.limit.remaining.store(o.count);

    if (o.rx_only) return std::unique_ptr<Pipeline>(new Pipeline(std::move(im)));

    auto pool = make_chunk_pool("capd_chunks", chunk_pool_size(o), o.chunk_kb,
                                static_cast<int>(rte_socket_id()));
    if (!pool) return make_error(pool.error());
    p.chunks = pool->pool;
    for (unsigned w = 0; w < o.workers; w++) {
        std::string name = "capd_ring" + std::to_string(w);
        rte_ring* r = rte_ring_create(name.c_str(), o.ring_chunks,
                                      static_cast<int>(rte_socket_id()),
                                      RING_F_SP_ENQ | RING_F_SC_DEQ | RING_F_EXACT_SZ);
        if (!r) return make_error("ring " + name + ": " + rte_strerror(rte_errno));
        p.rings.push_back(r);
        p.workers[w]->out = r;
        p.workers[w]->chunk_pool = p.chunks;
    }

    Impl* pp = &p;
    for (unsigned wr = 0; wr < o.writers; wr++) {
        storage::WriterConfig cfg;
        cfg.files.path = o.write_path;
        cfg.files.rotate_bytes = static_cast<uint64_t>(o.rotate_mb * 1e6);
        cfg.files.rotate_seconds = o.rotate_seconds;
        cfg.files.max_files = o.max_files;
        cfg.files.post_rotate_cmd = o.post_rotate_cmd;
        cfg.files.mode = o.file_mode;
        cfg.files.reuse = o.reuse_files || o.preallocate;
        cfg.files.preallocate = o.preallocate;
        cfg.files.direct = o.direct;
        cfg.files.writer_index = wr;
        cfg.files.writer_count = o.writers;
        cfg.files.owner_uid = o.run_as_uid;
        cfg.files.owner_gid = o.run_as_gid;
        cfg.files.child_cpus = o.start_cpus;
        cfg.format = o.format;
        cfg.ifaces = ifaces;
        cfg.application = "linecap capd 0.1.0";
        cfg.test_delay_us = o.test_writer_delay_us;
        cfg.test_delay_for_s = o.test_writer_delay_for_s;
        cfg.fsync_on_close = o.fsync;
        cfg.write_behind_bytes = uint64_t(o.write_behind_mb) << 20;
        cfg.interface_counters = [pp](uint32_t if_id, storage::InterfaceCounters& c) {
            SourceCounters sc = pp->sources[if_id]->counters();
            for (QueueStats* q : pp->queues_of_if[if_id]) {
                c.received += q->rx_packets.load(std::memory_order_relaxed);
                c.accepted += q->accepted.load(std::memory_order_relaxed);
            }
            c.dropped = sc.imissed + sc.ierrors + sc.nombuf;
        };
        std::vector<rte_ring*> inputs;
        for (unsigned w = wr; w < o.workers; w += o.writers) inputs.push_back(p.rings[w]);
        auto writer = std::make_unique<storage::Writer>(std::move(cfg), inputs, p.chunks);
        // Opening the first file last: an error above leaves no file behind.
        Status st = writer->open();
        if (!st) return make_error(st.error());
        p.writers.push_back(std::move(writer));
    }
    return std::unique_ptr<Pipeline>(new Pipeline(std::move(im)));
}

namespace {
int writer_main(void* arg) {
    static_cast<storage::Writer*>(arg)->run();
    return 0;
}
}  // namespace

void Pipeline::start() {
    Impl& p = *impl_;
    p.started = std::chrono::steady_clock::now();
    for (size_t i = 0; i < p.writers.size(); i++)
        rte_eal_remote_launch(writer_main, p.writers[i].get(), p.writer_lcores[i]);
    for (size_t i = 0; i < p.workers.size(); i++)
        rte_eal_remote_launch(worker_main, p.workers[i].get(), p.worker_lcores[i]);
}

void Pipeline::wait(const std::function<void(int)>& poll) {
    Impl& p = *impl_;
    auto next_check = std::chrono::steady_clock::now();
    for (;;) {
        if (poll)
            poll(5);
        else
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (stop_requested_.load() || (p.external_stop && p.external_stop->load())) break;
        if (auto now = std::chrono::steady_clock::now(); now >= next_check) {
            next_check = now + kLinkCheckPeriod;
            if (p.check_sources()) break;
        }
        if (p.opts.duration > 0) {
            std::chrono::duration<double> d = std::chrono::steady_clock::now() - p.started;
            if (d.count() >= p.opts.duration) break;
        }
        if (p.limit.enabled && p.limit.remaining.load() == 0) break;
        // -w -: the reader of standard output has gone.
        if (std::any_of(p.writers.begin(), p.writers.end(),
                        [](const auto& w) { return w->output_gone(); }))
            break;
        bool all_done = true;
        for (const auto& w : p.workers)
            if (!w->done.load(std::memory_order_acquire)) all_done = false;
        if (all_done) break;
    }
}

Summary Pipeline::finish() {
    Impl& p = *impl_;
    p.stop.store(true);
    for (unsigned lc : p.worker_lcores) rte_eal_wait_lcore(lc);
    std::chrono::duration<double> d = std::chrono::steady_clock::now() - p.started;
    for (auto& w : p.writers) w->close_inputs();
    for (unsigned lc : p.writer_lcores) rte_eal_wait_lcore(lc);
    p.elapsed = d.count();
    p.finished = true;
    Summary s = collect();
    for (auto& src : p.sources) src->stop();
    return s;
}

Summary Pipeline::collect() const {
    const Impl& p = *impl_;
    Summary s;
    s.elapsed_s = p.finished ? p.elapsed
                             : std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                             p.started)
                                   .count();
    s.hugepages = p.hugepages;
    if (p.mbufs) s.mbufs = {rte_mempool_in_use_count(p.mbufs), p.mbufs->size};
    if (p.chunks) s.chunks = {rte_mempool_in_use_count(p.chunks), p.chunks->size};
    for (size_t i = 0; i < p.sources.size(); i++) {
        const Source& src = *p.sources[i];
        SourceCounters c = src.counters();
        SourceSummary ss;
        ss.name = src.name();
        ss.queues = src.queues();
        ss.packets = c.packets;
        ss.imissed = c.imissed;
        ss.ierrors = c.ierrors;
        ss.nombuf = c.nombuf;
        ss.truncated = c.truncated;
        ss.error = src.error();
        LinkState ls = p.health[i]->state.load(std::memory_order_acquire);
        ss.state = state_name(ls);
        if (ls == LinkState::kGone) ss.error = p.health[i]->lost;
        s.drops.nic_imissed += c.imissed;
        s.drops.nic_ierrors += c.ierrors;
        s.drops.nic_nombuf += c.nombuf;
        if (!ss.error.empty()) s.errors.push_back(ss.error);
        s.sources.push_back(ss);
    }
    for (const auto& w : p.workers) {
        const WorkerStats& st = w->stats;
        WorkerSummary ws{st.rx_packets.load(),  st.rx_bytes.load(),    st.filtered_out.load(),
                         st.over_limit.load(),  st.accepted.load(),    st.encoded.load(),
                         st.writer_slow.load(), st.ring_full.load(),   st.chunks.load(),
                         static_cast<double>(st.max_poll_gap.load()) * 1e6 /
                             static_cast<double>(rte_get_tsc_hz())};
        s.received += ws.rx_packets;
        s.packet_bytes += ws.rx_bytes;
        s.filtered_out += ws.filtered_out;
        s.over_limit += ws.over_limit;
        s.drops.ring_full += ws.ring_full;
        s.drops.writer_slow += ws.writer_slow;
        s.workers.push_back(ws);
    }
    for (const auto& w : p.writers) {
        const storage::WriterStats& st = w->stats();
        WriterSummary ws{st.packets.load(),    st.bytes.load(),      st.files.load(),
                         st.chunks.load(),     st.disk_drops.load(), st.disk_errors.load(),
                         w->last_error()};
        s.written += ws.packets;
        s.bytes_written += ws.bytes;
        s.files += ws.files;
        s.drops.disk += ws.disk_drops;
        s.paused += st.paused_drops.load();
        if (w->output_gone())
            s.errors.push_back(ws.error + ": " + std::to_string(ws.disk_drops) +
                               " packets not written");
        else if (ws.disk_drops) s.errors.push_back("write errors lost " + std::to_string(ws.disk_drops) +
                                              " packets: " + ws.error);
        else if (st.close_errors.load()) s.errors.push_back("closing a file failed: " + ws.error);
        else if (st.writeback_errors.load())
            s.errors.push_back("the disk did not keep written data: " + ws.error);
        ws.command_failures = w->command_failures();
        if (ws.command_failures)
            s.errors.push_back(std::to_string(ws.command_failures) + " -z command" +
                               (ws.command_failures == 1 ? "" : "s") +
                               " failed; the last: " + w->last_command_failure());
        s.writers.push_back(ws);
    }
    if (p.opts.rx_only) s.written = 0;

    // Rule counters: retired snapshots' totals plus the live one's.
    for (const auto& [name, t] : p.retired) s.rules.push_back({name, t.packets, t.bytes, false});
    const RuleSnapshot* cur = p.owned_snapshot.get();
    auto names = cur->rules->rule_names();
    auto totals = rule_totals(*cur);
    for (size_t r = 0; r < names.size(); r++) {
        uint64_t pk = totals[r].packets, by = totals[r].bytes;
        auto it = std::find_if(s.rules.begin(), s.rules.end(),
                               [&](const RuleSummary& x) { return x.name == names[r]; });
        if (it == s.rules.end()) {
            s.rules.push_back({names[r], pk, by, true});
        } else {
            it->packets += pk;
            it->bytes += by;
            it->active = true;
        }
    }
    return s;
}

std::vector<filters::RuleSpec> Pipeline::rules() const { return impl_->owned_snapshot->specs; }

std::shared_ptr<const filters::RuleSet> Pipeline::rule_set() const {
    return impl_->owned_snapshot->rules;
}

const filters::CompileOptions& Pipeline::compile_options() const { return impl_->copts; }

Status Pipeline::replace_rules(std::vector<filters::RuleSpec> rules) {
    auto rs = filters::compile(rules, impl_->copts, impl_->owned_snapshot->rules.get());
    if (!rs) return make_error(rs.error());
    return install_rules(std::move(rules), std::move(*rs));
}

Status Pipeline::install_rules(std::vector<filters::RuleSpec> rules,
                               std::shared_ptr<const filters::RuleSet> compiled) {
    Impl& p = *impl_;
    std::unique_ptr<RuleSnapshot> old = std::move(p.owned_snapshot);
    p.owned_snapshot = p.snapshot_of(std::move(rules), std::move(compiled));
    p.snapshot.store(p.owned_snapshot.get(), std::memory_order_release);
    // Wait until no worker can still hold the old snapshot; its counters are
    // then final.
    rte_rcu_qsbr_synchronize(p.qsbr, RTE_QSBR_THRID_INVALID);
    p.retire(*old);
    return Status::success();
}

std::vector<std::string> Pipeline::source_names() const {
    std::vector<std::string> v;
    for (const auto& s : impl_->sources) v.push_back(s->name());
    return v;
}

Status Pipeline::with_tcp_tables(
    int timeout_ms, const std::function<void(const std::vector<packet::TableView>&)>& fn) {
    Impl& p = *impl_;
    if (p.tcp_tables.empty())
        return make_error(p.opts.rx_only ? "no TCP flow table: capd runs with --rx-only"
                                         : "no TCP flow table: capd runs with --tcp-flows 0 "
                                           "(start it with --tcp-flows N, e.g. 65536)");
    // Ask every worker at once, so the wait is the slowest worker's, not the sum.
    for (auto& t : p.tcp_tables) t->request();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::vector<bool> ready(p.tcp_tables.size(), false);
    for (;;) {
        size_t n = 0;
        for (size_t i = 0; i < p.tcp_tables.size(); i++) {
            if (!ready[i])
                ready[i] = p.tcp_tables[i]->ready(p.workers[i]->done.load(std::memory_order_acquire));
            n += ready[i];
        }
        if (n == ready.size()) break;
        if (std::chrono::steady_clock::now() >= deadline) {
            // A late copy lands in the table's own snapshot area: nothing is
            // freed under the worker. The pages of the copies that did arrive
            // are given back.
            std::string late;
            for (size_t i = 0; i < ready.size(); i++) {
                if (ready[i]) p.tcp_tables[i]->release();
                else late += (late.empty() ? "" : ", ") + std::to_string(i);
            }
            return make_error("worker " + late + " did not copy its TCP flow table within " +
                              std::to_string(timeout_ms) + " ms");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::vector<packet::TableView> views;
    for (auto& t : p.tcp_tables) views.push_back(t->view());
    fn(views);
    for (auto& t : p.tcp_tables) t->release();
    return Status::success();
}

Status Pipeline::rotate() {
    for (auto& w : impl_->writers)
        if (!w->rotates())
            return make_error("-w -: standard output is one stream; it does not rotate");
    for (auto& w : impl_->writers) w->request_rotate();
    return Status::success();
}

void Pipeline::set_paused(bool paused) {
    impl_->paused = paused;
    for (auto& w : impl_->writers) w->set_paused(paused);
}

bool Pipeline::paused() const { return impl_->paused; }

nlohmann::json Pipeline::status() const {
    const Impl& p = *impl_;
    nlohmann::json j;
    j["capturing"] = !p.paused;
    j["state"] = p.paused ? "paused" : "capturing";
    j["uptime_s"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - p.started).count();
    j["hugepages"] = p.hugepages;
    j["format"] = p.opts.format == storage::Format::kPcapng ? "pcapng" : "pcap";
    j["sources"] = nlohmann::json::array();
    for (size_t i = 0; i < p.sources.size(); i++) {
        const Source& s = *p.sources[i];
        LinkState ls = p.health[i]->state.load(std::memory_order_acquire);
        j["sources"].push_back({{"name", s.name()},
                                {"queues", s.queues()},
                                {"rx_desc", s.rx_desc()},
                                {"state", state_name(ls)},
                                {"error", ls == LinkState::kGone ? p.health[i]->lost : s.error()}});
    }
    j["workers"] = nlohmann::json::array();
    for (size_t i = 0; i < p.workers.size(); i++) {
        nlohmann::json q = nlohmann::json::array();
        for (const auto& r : p.workers[i]->queues)
            q.push_back(r.source->name() + "#" + std::to_string(r.queue));
        j["workers"].push_back({{"lcore", p.worker_lcores[i]}, {"queues", q}});
    }
    j["writers"] = nlohmann::json::array();
    for (size_t i = 0; i < p.writers.size(); i++)
        j["writers"].push_back({{"lcore", p.writer_lcores[i]},
                                {"current_file", p.writers[i]->current_file()},
                                {"last_error", p.writers[i]->last_error()},
                                {"disk_error", p.writers[i]->disk_error()}});
    j["rules"] = p.owned_snapshot->rules->rule_names();
    j["rule_generation"] = p.owned_snapshot->generation;
    return j;
}

}  // namespace linecap::dataplane
