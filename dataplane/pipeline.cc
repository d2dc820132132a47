#include "dataplane/pipeline.hh"

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include <chrono>
#include <thread>

#include "dataplane/eal.hh"
#include "dataplane/source.hh"
#include "dataplane/worker.hh"
#include "storage/writer.hh"

namespace linecap::dataplane {

struct Pipeline::Impl {
    Options opts;
    std::shared_ptr<const filters::RuleSet> rules;
    std::atomic<const filters::RuleSet*> active_rules{nullptr};
    std::vector<std::unique_ptr<filters::Scratch>> scratches;
    const std::atomic<bool>* external_stop = nullptr;

    rte_mempool* mbufs = nullptr;
    rte_mempool* chunks = nullptr;
    std::vector<rte_ring*> rings;
    std::vector<std::unique_ptr<Source>> sources;
    std::vector<std::unique_ptr<QueueStats>> queue_stats;
    std::vector<std::vector<QueueStats*>> queues_of_if;  // per interface
    std::vector<std::unique_ptr<WorkerContext>> workers;
    std::vector<std::unique_ptr<storage::Writer>> writers;
    std::vector<unsigned> worker_lcores, writer_lcores;
    CountLimit limit;
    std::atomic<bool> stop{false};
    std::chrono::steady_clock::time_point started;
    double elapsed = 0;
    bool hugepages = false;

    ~Impl() {
        writers.clear();
        sources.clear();
        for (rte_ring* r : rings) rte_ring_free(r);
        if (chunks) rte_mempool_free(chunks);
        if (mbufs) rte_mempool_free(mbufs);
    }
};

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() = default;

Result<std::unique_ptr<Pipeline>> Pipeline::create(const Options& o,
                                                   std::shared_ptr<const filters::RuleSet> rules,
                                                   const std::atomic<bool>* external_stop) {
    auto im = std::make_unique<Impl>();
    Impl& p = *im;
    p.opts = o;
    p.rules = std::move(rules);
    p.active_rules.store(p.rules.get());
    p.external_stop = external_stop;
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
    unsigned nq = 0;
    for (const auto& s : o.sources) nq += s.kind == SourceSpec::Kind::kPcapFile ? 1 : qpp;
    unsigned nmbufs = nq * (1024 + 2 * kBurstSize) + (o.workers + 1) * 512 + 4096;
    p.mbufs = rte_pktmbuf_pool_create("capd_mbufs", nmbufs, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                      static_cast<int>(rte_socket_id()));
    if (!p.mbufs)
        return make_error(std::string("mbuf pool: ") + rte_strerror(rte_errno));

    for (unsigned i = 0; i < o.sources.size(); i++) {
        const SourceSpec& s = o.sources[i];
        Result<std::unique_ptr<Source>> src =
            s.kind == SourceSpec::Kind::kPcapFile ? open_pcap_file_source(s, p.mbufs, *fields)
                                                  : open_eth_source(s, i, qpp, p.mbufs);
        if (!src) return make_error(src.error());
        p.sources.push_back(std::move(*src));
    }

    // Interfaces as the files describe them: one per source.
    std::vector<storage::InterfaceDesc> ifaces;
    for (const auto& s : p.sources) {
        storage::InterfaceDesc d;
        d.name = s->name();
        d.filter = p.rules->filter_text();
        d.linktype = s->linktype();
        d.snaplen = o.snaplen;
        ifaces.push_back(d);
    }
    if (o.format != storage::Format::kPcapng && !storage::single_linktype(ifaces))
        return make_error("sources have different link types: use --format pcapng");

    // Worker contexts and their queues, round-robin over workers.
    uint64_t flush_cycles = rte_get_tsc_hz() / 1000 * o.flush_ms;
    for (unsigned w = 0; w < o.workers; w++) {
        auto ctx = std::make_unique<WorkerContext>();
        ctx->index = w;
        ctx->format = o.format;
        ctx->snaplen = o.snaplen;
        ctx->fields = *fields;
        ctx->flush_cycles = flush_cycles;
        ctx->rules = &p.active_rules;
        p.scratches.push_back(p.rules->make_scratch());
        ctx->scratch = p.scratches.back().get();
        ctx->limit = &p.limit;
        ctx->stop = &p.stop;
        ctx->rx_only = o.rx_only;
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
    p.limit.enabled = o.count > 0;
    p.limit.remaining.store(o.count);

    if (o.rx_only) return std::unique_ptr<Pipeline>(new Pipeline(std::move(im)));

    // Chunks: each ring full, one being filled per worker, and what writers hold.
    unsigned nchunks = o.workers * (o.ring_chunks + 2) + o.writers * 16 + 8;
    p.chunks = rte_mempool_create("capd_chunks", nchunks,
                                  sizeof(storage::Chunk) + size_t(o.chunk_kb) * 1024, 0, 0,
                                  nullptr, nullptr, nullptr, nullptr,
                                  static_cast<int>(rte_socket_id()),
                                  RTE_MEMPOOL_F_NO_IOVA_CONTIG);
    if (!p.chunks)
        return make_error(std::string("chunk pool (") + std::to_string(nchunks) + " x " +
                          std::to_string(o.chunk_kb) + " KiB): " + rte_strerror(rte_errno));
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
        cfg.files.writer_index = wr;
        cfg.files.writer_count = o.writers;
        cfg.format = o.format;
        cfg.ifaces = ifaces;
        cfg.application = "linecap capd 0.1.0";
        cfg.test_delay_us = o.test_writer_delay_us;
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

void Pipeline::wait() {
    Impl& p = *impl_;
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (stop_requested_.load() || (p.external_stop && p.external_stop->load())) break;
        if (p.opts.duration > 0) {
            std::chrono::duration<double> d = std::chrono::steady_clock::now() - p.started;
            if (d.count() >= p.opts.duration) break;
        }
        if (p.limit.enabled && p.limit.remaining.load() == 0) break;
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

    Summary s;
    s.elapsed_s = d.count();
    s.hugepages = p.hugepages;
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
        ss.error = src.error();
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
                         st.writer_slow.load(), st.ring_full.load(),   st.chunks.load()};
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
        s.drops.paused += st.paused_drops.load();
        if (ws.disk_drops) s.errors.push_back("write errors lost " + std::to_string(ws.disk_drops) +
                                              " packets: " + ws.error);
        s.writers.push_back(ws);
    }
    if (p.opts.rx_only) s.written = 0;
    for (auto& src : p.sources) src->stop();
    return s;
}

}  // namespace linecap::dataplane
