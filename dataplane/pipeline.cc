#include "dataplane/pipeline.hh"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mempool.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "dataplane/chunk_pool.hh"
#include "dataplane/eal.hh"
#include "dataplane/flow_table.hh"
#include "dataplane/mempool.hh"
#include "dataplane/rule_publisher.hh"
#include "dataplane/source.hh"
#include "dataplane/worker.hh"
#include "dataplane/writer_config.hh"
#include "storage/chunk_ring.hh"
#include "storage/writer.hh"

namespace linecap::dataplane {

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
    bool paused = false;
    const std::atomic<bool>* external_stop = nullptr;

    // The owners, in the order create() makes them: members go in reverse,
    // so a writer goes before the rings and the chunk pool it drains, and a
    // source (its port's queues) before the mbuf pool it takes from.
    std::unique_ptr<RulePublisher> rules;
    Mempool mbufs;
    std::vector<std::unique_ptr<Source>> sources;
    std::vector<std::unique_ptr<SourceHealth>> health;  // per source
    std::vector<std::unique_ptr<QueueStats>> queue_stats;
    std::vector<std::vector<QueueStats*>> queues_of_if;  // per interface
    std::vector<std::unique_ptr<WorkerContext>> workers;
    // One per worker, or none; with --tcp-flows they hold the TCP diagnosis.
    std::vector<std::unique_ptr<FlowTable>> flow_tables;
    Mempool chunks;
    std::vector<std::unique_ptr<storage::ChunkRing>> rings;
    // Before the writers, which tell it of their files: it outlives them.
    std::unique_ptr<storage::CatalogPublisher> catalog;
    std::vector<std::unique_ptr<storage::Writer>> writers;
    std::vector<unsigned> worker_lcores, writer_lcores;
    CountLimit limit;
    std::atomic<bool> stop{false};
    std::chrono::steady_clock::time_point started;
    double elapsed = 0;
    bool finished = false;
    bool hugepages = false;

    Status open_sources(const MbufFields& fields);
    Status make_workers(const Placement& placement, const MbufFields& fields);
    Status make_rings();
    Status make_writers(const std::vector<storage::InterfaceDesc>& ifaces);

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

/* The steps of Pipeline::create(), in order. Each leaves what it made in
 * the Impl, whose members free it on an error. Control thread. */

Status Pipeline::Impl::open_sources(const MbufFields& fields) {
    const Options& o = opts;
    // null:SIZE,frames=FILE replays the frames the pool's mbufs hold. With a
    // per-lcore cache the worker's frees go back to the cache and the null
    // source allocates the same burst of mbufs again: 32 distinct frames
    // forever, which flatters compression. Without a cache, allocation takes
    // from the head of the pool's ring and frees go to its tail, so every
    // mbuf, hence every frame, comes round in turn (a ring operation a burst,
    // not a packet; bench/capbench.py's compress section relies on it).
    bool null_frames = false;
    for (const SourceSpec& s : o.sources)
        null_frames |= s.kind == SourceSpec::Kind::kNull && !s.arg.empty();
    mbufs.reset(rte_pktmbuf_pool_create("capd_mbufs", mbuf_pool_size(o), null_frames ? 0 : 256, 0,
                                        RTE_MBUF_DEFAULT_BUF_SIZE,
                                        static_cast<int>(rte_socket_id())));
    if (!mbufs) return make_error(std::string("mbuf pool: ") + rte_strerror(rte_errno));

    // The mbuf pool is shared: a null source's frames= fills all of it.
    for (const SourceSpec& s : o.sources) {
        Status filled = fill_null_frames(s, mbufs.get());
        if (!filled) return filled;
    }

    uint16_t qpp = queues_per_port(o);
    for (unsigned i = 0; i < o.sources.size(); i++) {
        const SourceSpec& s = o.sources[i];
        Result<std::unique_ptr<Source>> src = make_error("");
        if (s.kind == SourceSpec::Kind::kPcapFile)
            src = open_pcap_file_source(s, mbufs.get(), fields);
        else if (s.kind == SourceSpec::Kind::kAfPacket)
            src = open_packet_ring_source(s, i, qpp, o.packet_ring_frames(), mbufs.get(), fields);
        else
            src = open_eth_source(s, i, qpp, static_cast<uint16_t>(o.rx_desc), mbufs.get(),
                                  o.xdp_generic);
        if (!src) return make_error(src.error());
        sources.push_back(std::move(*src));
        health.push_back(std::make_unique<SourceHealth>());
    }
    return Status::success();
}

/* The flow tables must fit in the memory free now (MemAvailable): else
 * one line at start rather than the OOM killer later. */
static Status check_flow_memory(const Options& o, uint32_t tcp_conns) {
    const uint64_t one = FlowTable::bytes_for(o.flow_slots, tcp_conns, o.dedup_window_ns != 0);
    const uint64_t need = one * o.workers;
    uint64_t avail_kb = 0;
    if (FILE* f = std::fopen("/proc/meminfo", "re")) {
        char line[256];
        while (std::fgets(line, sizeof(line), f))
            if (std::sscanf(line, "MemAvailable: %lu kB", &avail_kb) == 1) break;
        std::fclose(f);
    }
    if (avail_kb && need > avail_kb * 1024)
        return make_error(
            (tcp_conns ? "--tcp-flows " + std::to_string(tcp_conns) + " with " : std::string()) +
            "--flow-table " + std::to_string(o.flow_slots) + ": " + std::to_string(o.workers) +
            " table(s) of " + std::to_string(one >> 20) + " MiB need more than the " +
            std::to_string(avail_kb >> 10) + " MiB of memory available");
    return Status::success();
}

Status Pipeline::Impl::make_workers(const Placement& placement, const MbufFields& fields) {
    const Options& o = opts;
    // -U: a partial chunk goes to the writer at the end of the loop turn
    // that filled it, not after --flush-ms.
    uint64_t flush_cycles = o.packet_buffered ? 0 : rte_get_tsc_hz() / 1000 * o.flush_ms;
    // --tcp-flows alone turns the table on, without cutoff or dedup.
    const uint32_t tcp_conns = o.rx_only ? 0 : o.tcp_flows;
    const bool flows_on = o.flow_table() || tcp_conns > 0;
    if (flows_on) {
        Status ok = check_flow_memory(o, tcp_conns);
        if (!ok) return ok;
    }
    if (o.flow_table()) {
        // Said once per source: a link type the table cannot read passes whole.
        for (const auto& src : sources)
            if (!flow_linktype_supported(src->linktype()))
                std::fprintf(stderr,
                             "capd: source '%s' (link type %u) has no flows the flow table "
                             "reads: all its packets pass --flow-cutoff, --flow-packets and "
                             "--dedup\n",
                             src->name().c_str(), unsigned(src->linktype()));
    }
    for (unsigned w = 0; w < o.workers; w++) {
        auto ctx = std::make_unique<WorkerContext>();
        ctx->index = w;
        ctx->format = o.format;
        ctx->snaplen = o.snaplen;
        ctx->fields = fields;
        ctx->flush_cycles = flush_cycles;
        // 200 us: a burst of 64 takes 2-20 us; longer, the worker lost its CPU.
        ctx->stall_cycles = rte_get_tsc_hz() / 5000;
        ctx->rules = rules->slot();
        ctx->qsbr = rules->qsbr();
        ctx->limit = &limit;
        ctx->stop = &stop;
        ctx->rx_only = o.rx_only;
        if (flows_on) {
            FlowConfig fc;
            fc.slots = o.flow_slots;
            fc.cutoff_bytes = o.flow_cutoff;
            fc.cutoff_packets = o.flow_packets;
            fc.dedup_window_ns = o.dedup_window_ns;
            fc.per_direction = o.flow_per_direction;
            fc.tcp_conns = tcp_conns;
            fc.tcp_only = tcp_conns && !o.flow_table();
            auto t = FlowTable::create(fc);
            if (!t)
                return make_error("--flow-table: worker " + std::to_string(w) + ": " + t.error());
            ctx->flows = t->get();
            ctx->cut_notes = !o.no_index && o.write_path != "-";
            flow_tables.push_back(std::move(*t));
        }
        workers.push_back(std::move(ctx));
    }

    queues_of_if.resize(sources.size());
    std::vector<uint16_t> queue_counts;
    for (const auto& s : sources) queue_counts.push_back(s->queues());
    auto assigned = assign_queues(queue_counts, o.workers);
    for (unsigned w = 0; w < o.workers; w++)
        for (const QueueSlot& slot : assigned[w]) {
            queue_stats.push_back(std::make_unique<QueueStats>());
            queues_of_if[slot.source].push_back(queue_stats.back().get());
            workers[w]->queues.push_back(QueueRef{sources[slot.source].get(), slot.queue,
                                                  slot.source, queue_stats.back().get()});
        }

    for (auto& w : workers) {
        std::vector<SourceSpec::Kind> kinds;
        bool finite_files = !w->queues.empty();
        for (const QueueRef& q : w->queues) {
            const SourceSpec& spec = o.sources[q.if_id];
            kinds.push_back(spec.kind);
            finite_files = finite_files && spec.kind == SourceSpec::Kind::kPcapFile && !spec.loop;
        }
        // Workers reading only finite files may wait for their writer.
        w->lossless = finite_files;
        w->idle_sleep_us =
            idle_sleep_us(kinds, o.busy_poll, placement.crowded, o.packet_ring_frames());
    }
    limit.enabled = o.count > 0;
    limit.remaining.store(o.count);
    return Status::success();
}

Status Pipeline::Impl::make_rings() {
    const Options& o = opts;
    auto pool = make_chunk_pool("capd_chunks", chunk_pool_size(o), o.chunk_kb,
                                static_cast<int>(rte_socket_id()));
    if (!pool) return make_error(pool.error());
    chunks.reset(pool->pool);
    for (unsigned w = 0; w < o.workers; w++) {
        auto r = storage::ChunkRing::create("capd_ring" + std::to_string(w), o.ring_chunks,
                                            static_cast<int>(rte_socket_id()));
        if (!r) return make_error(r.error());
        workers[w]->out = r->get();
        workers[w]->chunk_pool = chunks.get();
        rings.push_back(std::move(*r));
    }
    return Status::success();
}

Status Pipeline::Impl::make_writers(const std::vector<storage::InterfaceDesc>& ifaces) {
    const Options& o = opts;
    // --writers N: one free-space floor for the capture (storage/retention.hh).
    std::shared_ptr<storage::RetentionGroup> retention;
    if (o.writers > 1 && o.retain_free.on())
        retention = std::make_shared<storage::RetentionGroup>(o.writers);
    for (unsigned wr = 0; wr < o.writers; wr++) {
        storage::WriterConfig cfg = writer_config(o, wr);
        cfg.ifaces = ifaces;
        cfg.files.retention_group = retention;
        if (catalog)
            cfg.files.on_file = [pub = catalog.get(), wr](const std::string& name,
                                                          storage::FileSetOptions::FileEvent ev,
                                                          std::string* index) {
                using Ev = storage::FileSetOptions::FileEvent;
                if (ev == Ev::kRemoved)
                    pub->file_removed(name);
                else if (ev == Ev::kClosed)
                    pub->file_closed(name, wr, index);
                else
                    pub->file_opened(name, wr);
            };
        cfg.interface_counters = [this](uint32_t if_id, storage::InterfaceCounters& c) {
            SourceCounters sc = sources[if_id]->counters();
            for (QueueStats* q : queues_of_if[if_id]) {
                c.received += q->rx_packets.load(std::memory_order_relaxed);
                c.accepted += q->accepted.load(std::memory_order_relaxed);
            }
            c.dropped = sc.imissed + sc.ierrors + sc.nombuf;
        };
        std::vector<storage::ChunkRing*> inputs;
        for (unsigned w = 0; w < o.workers; w++)
            if (writer_of_worker(w, o.writers) == wr) inputs.push_back(rings[w].get());
        auto writer = std::make_unique<storage::Writer>(std::move(cfg), inputs, chunks.get());
        // Opening the first file last: an error above leaves no file behind.
        Status st = writer->open();
        if (!st) return st;
        writers.push_back(std::move(writer));
    }
    return Status::success();
}

Result<std::unique_ptr<Pipeline>> Pipeline::create(const Options& o, const Placement& placement,
                                                   std::vector<filters::RuleSpec> rules,
                                                   const filters::CompileOptions& copts,
                                                   const std::atomic<bool>* external_stop) {
    auto im = std::make_unique<Impl>();
    Impl& p = *im;
    p.opts = o;
    p.external_stop = external_stop;
    auto publisher = RulePublisher::create(std::move(rules), copts, o.workers);
    if (!publisher) return make_error(publisher.error());
    p.rules = std::move(*publisher);
    p.hugepages = rte_eal_has_hugepages();

    // Lcores: the ones the plan gave EAL.
    for (unsigned lc : placement.worker_lcores)
        if (lc >= RTE_MAX_LCORE || !rte_lcore_is_enabled(lc))
            return make_error("not enough lcores for the workers");
    for (unsigned lc : placement.writer_lcores)
        if (lc >= RTE_MAX_LCORE || !rte_lcore_is_enabled(lc))
            return make_error("not enough lcores for the writers");
    p.worker_lcores = placement.worker_lcores;
    p.writer_lcores = placement.writer_lcores;

    auto fields = MbufFields::register_fields();
    if (!fields) return make_error(fields.error());
    Status st = p.open_sources(*fields);
    if (!st) return make_error(st.error());

    // Interfaces as the files describe them: one per source.
    std::vector<storage::InterfaceDesc> ifaces;
    for (const auto& s : p.sources) {
        storage::InterfaceDesc d;
        d.name = s->name();
        d.filter = p.rules->current().rules->filter_text();
        d.linktype = s->linktype();
        d.snaplen = o.snaplen;
        ifaces.push_back(d);
    }
    if (o.format != storage::Format::kPcapng && !storage::single_linktype(ifaces))
        return make_error("sources have different link types: use --format pcapng");

    st = p.make_workers(placement, *fields);
    if (!st) return make_error(st.error());
    if (!o.rx_only && !o.catalog_url.empty()) {
        auto c = make_catalog_publisher(o);
        if (!c) return make_error(c.error());
        p.catalog = std::move(*c);
    }
    if (!o.rx_only) {
        st = p.make_rings();
        if (st) st = p.make_writers(ifaces);
        if (!st) return make_error(st.error());
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
    // On this (the control) thread's CPUs, never a worker's or writer's.
    if (p.catalog) p.catalog->start();
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
    // The last files' rows: sent if the catalogue answers soon, else spooled.
    if (p.catalog) p.catalog->stop(3000);
    Summary s = collect();
    for (auto& src : p.sources) src->stop();
    return s;
}

Summary Pipeline::collect() const {
    const Impl& p = *impl_;
    Summary s;
    s.elapsed_s =
        p.finished
            ? p.elapsed
            : std::chrono::duration<double>(std::chrono::steady_clock::now() - p.started).count();
    s.hugepages = p.hugepages;
    if (p.mbufs) s.mbufs = {rte_mempool_in_use_count(p.mbufs.get()), p.mbufs->size};
    if (p.chunks) s.chunks = {rte_mempool_in_use_count(p.chunks.get()), p.chunks->size};
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
        WorkerSummary ws{st.rx_packets.load(),
                         st.rx_bytes.load(),
                         st.filtered_out.load(),
                         st.over_limit.load(),
                         st.accepted.load(),
                         st.encoded.load(),
                         st.writer_slow.load(),
                         st.ring_full.load(),
                         st.chunks.load(),
                         static_cast<double>(st.max_poll_gap.load()) * 1e6 /
                             static_cast<double>(rte_get_tsc_hz()),
                         static_cast<double>(st.busy_cycles.load()) * 1e9 /
                             static_cast<double>(rte_get_tsc_hz()),
                         static_cast<double>(st.stalled_cycles.load()) * 1e9 /
                             static_cast<double>(rte_get_tsc_hz()),
                         st.stalled_turns.load(),
                         st.busy_turns.load()};
        s.received += ws.rx_packets;
        s.packet_bytes += ws.rx_bytes;
        s.filtered_out += ws.filtered_out;
        s.over_limit += ws.over_limit;
        s.drops.ring_full += ws.ring_full;
        s.drops.writer_slow += ws.writer_slow;
        s.workers.push_back(ws);
    }
    s.flows.enabled = !p.flow_tables.empty();
    for (const auto& t : p.flow_tables) {
        const FlowCounters& c = t->counters();
        s.flows.active += c.active.load(std::memory_order_relaxed);
        s.flows.created += c.created.load(std::memory_order_relaxed);
        s.flows.evicted += c.evicted.load(std::memory_order_relaxed);
        s.flows.expired += c.expired.load(std::memory_order_relaxed);
        s.flows.cut_packets += c.cut_packets.load(std::memory_order_relaxed);
        s.flows.cut_bytes += c.cut_bytes.load(std::memory_order_relaxed);
        s.flows.duplicates += c.duplicates.load(std::memory_order_relaxed);
        s.flows.duplicate_bytes += c.duplicate_bytes.load(std::memory_order_relaxed);
        s.flows.untracked += c.untracked.load(std::memory_order_relaxed);
        s.flows.slots += t->config().slots;
        s.flows.bucket_full += c.bucket_full.load(std::memory_order_relaxed);
        s.flows.tables++;
        s.flows.tables_on_huge_pages += t->huge_pages() ? 1 : 0;
    }
    for (const auto& w : p.writers) {
        const storage::WriterStats& st = w->stats();
        WriterSummary ws{st.packets.load(), st.bytes.load(),      st.files.load(),
                         st.chunks.load(),  st.disk_drops.load(), st.disk_errors.load(),
                         w->last_error()};
        s.written += ws.packets;
        s.bytes_written += ws.bytes;
        s.files += ws.files;
        s.drops.disk += ws.disk_drops;
        s.paused += st.paused_drops.load();
        if (w->output_gone())
            s.errors.push_back(ws.error + ": " + std::to_string(ws.disk_drops) +
                               " packets not written");
        else if (ws.disk_drops)
            s.errors.push_back("write errors lost " + std::to_string(ws.disk_drops) +
                               " packets: " + ws.error);
        else if (st.close_errors.load())
            s.errors.push_back("closing a file failed: " + ws.error);
        else if (st.writeback_errors.load())
            s.errors.push_back("the disk did not keep written data: " + ws.error);
        ws.command_failures = w->command_failures();
        ws.index_files = st.index_files.load();
        ws.index_bytes = st.index_bytes.load();
        ws.index_errors = st.index_errors.load();
        ws.retaining = w->files().retaining();
        ws.files_retired = w->files().files_retired();
        ws.bytes_retired = w->files().bytes_retired();
        ws.oldest_kept_ns = w->files().oldest_kept_ns();
        if (p.opts.codec.codec != index::Codec::kNone) {
            ws.codec = index::codec_name(p.opts.codec.codec);
            ws.bytes_in = st.raw_bytes.load();
            ws.compress_threads = static_cast<uint32_t>(p.opts.compress_threads);
        }
        if (ws.command_failures)
            s.errors.push_back(std::to_string(ws.command_failures) + " -z command" +
                               (ws.command_failures == 1 ? "" : "s") +
                               " failed; the last: " + w->last_command_failure());
        s.writers.push_back(ws);
    }
    if (p.opts.rx_only) s.written = 0;

    // Rule counters: retired snapshots' totals plus the live one's.
    s.rules = p.rules->totals();
    if (p.catalog) {
        // Not an error of the capture (exit status 0): its own counters.
        static_cast<storage::CatalogStats&>(s.catalog) = p.catalog->stats();
        s.catalog.enabled = true;
    }
    return s;
}

std::vector<filters::RuleSpec> Pipeline::rules() const { return impl_->rules->current().specs; }

std::shared_ptr<const filters::RuleSet> Pipeline::rule_set() const {
    return impl_->rules->current().rules;
}

const filters::CompileOptions& Pipeline::compile_options() const {
    return impl_->rules->compile_options();
}

Status Pipeline::replace_rules(std::vector<filters::RuleSpec> rules) {
    return impl_->rules->replace(std::move(rules));
}

Status Pipeline::install_rules(std::vector<filters::RuleSpec> rules,
                               std::shared_ptr<const filters::RuleSet> compiled) {
    return impl_->rules->install(std::move(rules), std::move(compiled));
}

std::vector<std::string> Pipeline::source_names() const {
    std::vector<std::string> v;
    for (const auto& s : impl_->sources) v.push_back(s->name());
    return v;
}

bool Pipeline::has_flow_tables() const { return !impl_->flow_tables.empty(); }

Status Pipeline::top_flows(size_t n, int timeout_ms,
                           std::vector<std::pair<unsigned, FlowInfo>>& out) {
    Impl& p = *impl_;
    if (p.flow_tables.empty())
        return make_error(ENOTSUP,
                          "no flow table: capd runs without --flow-cutoff, --flow-packets or "
                          "--dedup");
    for (auto& t : p.flow_tables) t->request(n);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (size_t i = 0; i < p.flow_tables.size(); i++) {
        while (!p.flow_tables[i]->ready(p.workers[i]->done.load(std::memory_order_acquire))) {
            if (std::chrono::steady_clock::now() >= deadline)
                return make_error(ETIMEDOUT, "worker " + std::to_string(i) +
                                                 " did not list its flows within " +
                                                 std::to_string(timeout_ms) + " ms");
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        for (const FlowInfo& f : p.flow_tables[i]->top_view()) out.emplace_back(unsigned(i), f);
    }
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.second.bytes > b.second.bytes; });
    if (out.size() > n) out.resize(n);
    return Status::success();
}

Status Pipeline::with_tcp_tables(
    int timeout_ms, const std::function<void(const std::vector<packet::TableView>&)>& fn) {
    Impl& p = *impl_;
    if (p.flow_tables.empty() || !p.flow_tables[0]->tcp_on())
        return make_error(ENOTSUP, p.opts.rx_only
                                       ? "no TCP flow table: capd runs with --rx-only"
                                       : "no TCP flow table: capd runs with --tcp-flows 0 "
                                         "(start it with --tcp-flows N, e.g. 65536)");
    // Ask every worker at once, so the wait is the slowest worker's, not the sum.
    for (auto& t : p.flow_tables) t->tcp_request();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::vector<bool> ready(p.flow_tables.size(), false);
    for (;;) {
        size_t n = 0;
        for (size_t i = 0; i < p.flow_tables.size(); i++) {
            if (!ready[i])
                ready[i] =
                    p.flow_tables[i]->tcp_ready(p.workers[i]->done.load(std::memory_order_acquire));
            n += ready[i];
        }
        if (n == ready.size()) break;
        if (std::chrono::steady_clock::now() >= deadline) {
            // A late copy lands in the table's own snapshot area: nothing is
            // freed under the worker. The pages of the copies that did arrive
            // are given back.
            std::string late;
            for (size_t i = 0; i < ready.size(); i++) {
                if (ready[i])
                    p.flow_tables[i]->tcp_release();
                else
                    late += (late.empty() ? "" : ", ") + std::to_string(i);
            }
            return make_error(ETIMEDOUT, "worker " + late +
                                             " did not copy its TCP flow table within " +
                                             std::to_string(timeout_ms) + " ms");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::vector<packet::TableView> views;
    for (size_t i = 0; i < p.flow_tables.size(); i++)
        views.push_back(p.flow_tables[i]->tcp_view(unsigned(i)));
    fn(views);
    for (auto& t : p.flow_tables) t->tcp_release();
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
    j["rules"] = p.rules->current().rules->rule_names();
    j["rule_generation"] = p.rules->current().generation;
    return j;
}

}  // namespace linecap::dataplane
