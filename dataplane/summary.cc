#include "dataplane/summary.hh"

#include <ctime>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "dataplane/worker.hh"
#include "storage/safe_files.hh"

namespace linecap::dataplane {

std::string summary_text(const Summary& s) {
    char buf[1024];
    std::string out;
    double mpps = s.elapsed_s > 0 ? s.received / s.elapsed_s / 1e6 : 0;
    snprintf(buf, sizeof(buf),
             "capd: %llu packets received, %llu filtered out, %llu written (%llu bytes in %llu "
             "file%s) in %.3f s (%.3f Mpps)\n",
             (unsigned long long)s.received, (unsigned long long)s.filtered_out,
             (unsigned long long)s.written, (unsigned long long)s.bytes_written,
             (unsigned long long)s.files, s.files == 1 ? "" : "s", s.elapsed_s, mpps);
    out += buf;
    if (s.over_limit)
        out += "capd: " + std::to_string(s.over_limit) + " packets past the -c limit not written\n";
    out += "capd: dropped " + std::to_string(s.drops.total()) + ":";
    const char* sep = " ";
    for (const DropStage& st : kDropStages) {
        out += sep + std::string(st.label) + " " + std::to_string(s.drops.*st.count);
        sep = ", ";
    }
    out += "\n";
    if (s.flows.enabled) {
        snprintf(buf, sizeof(buf),
                 "capd: flows: %llu active, %llu created, %llu evicted (table full), %llu "
                 "expired; cut off by policy %llu packets (%llu bytes); duplicate %llu packets "
                 "(%llu bytes)\n",
                 (unsigned long long)s.flows.active, (unsigned long long)s.flows.created,
                 (unsigned long long)s.flows.evicted, (unsigned long long)s.flows.expired,
                 (unsigned long long)s.flows.cut_packets, (unsigned long long)s.flows.cut_bytes,
                 (unsigned long long)s.flows.duplicates,
                 (unsigned long long)s.flows.duplicate_bytes);
        out += buf;
        snprintf(buf, sizeof(buf),
                 "capd: flows: %llu of %llu tables on 2 MiB huge pages (else normal pages); "
                 "%llu new flows found their bucket full\n",
                 (unsigned long long)s.flows.tables_on_huge_pages,
                 (unsigned long long)s.flows.tables, (unsigned long long)s.flows.bucket_full);
        out += buf;
    }
    if (s.paused)
        out += "capd: " + std::to_string(s.paused) +
               " packets received while paused (capctl pause) not written, on purpose\n";
    // Packets the NIC could not hand over: say whether a worker stalled.
    if (s.drops.nic_imissed) {
        size_t worst = 0;
        for (size_t i = 1; i < s.workers.size(); i++)
            if (s.workers[i].max_poll_gap_us > s.workers[worst].max_poll_gap_us) worst = i;
        if (!s.workers.empty()) {
            snprintf(buf, sizeof(buf),
                     "capd: worker %zu went up to %.3f ms between receive polls (a shared or "
                     "interrupted CPU shows here)\n",
                     worst, s.workers[worst].max_poll_gap_us / 1000.0);
            out += buf;
        }
    }
    // The index beside the files: its size against the capture's.
    uint64_t idx_files = 0, idx_bytes = 0, idx_errors = 0;
    for (const auto& w : s.writers) {
        idx_files += w.index_files;
        idx_bytes += w.index_bytes;
        idx_errors += w.index_errors;
    }
    if (idx_files || idx_errors) {
        snprintf(
            buf, sizeof(buf), "capd: index: %llu file%s, %llu bytes (%.1f %% of capture bytes)",
            (unsigned long long)idx_files, idx_files == 1 ? "" : "s", (unsigned long long)idx_bytes,
            s.bytes_written ? 100.0 * double(idx_bytes) / double(s.bytes_written) : 0.0);
        out += buf;
        if (idx_errors) out += ", " + std::to_string(idx_errors) + " not written";
        out += "\n";
    }
    // Retention: what it deleted and how far back the files go.
    bool retaining = false;
    uint64_t ret_files = 0, ret_bytes = 0, oldest = 0;
    for (const auto& w : s.writers) {
        retaining = retaining || w.retaining;
        ret_files += w.files_retired;
        ret_bytes += w.bytes_retired;
        if (w.oldest_kept_ns && (!oldest || w.oldest_kept_ns < oldest)) oldest = w.oldest_kept_ns;
    }
    if (retaining) {
        snprintf(buf, sizeof(buf), "capd: retention: %llu file%s (%llu bytes) deleted",
                 (unsigned long long)ret_files, ret_files == 1 ? "" : "s",
                 (unsigned long long)ret_bytes);
        out += buf;
        if (oldest) {
            time_t t = static_cast<time_t>(oldest / 1000000000ull);
            struct tm tm;
            gmtime_r(&t, &tm);
            char when[64];
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
            out += std::string(", oldest packet kept ") + when;
        }
        out += "\n";
    }
    if (s.catalog.enabled) {
        const CatalogSummary& c = s.catalog;
        snprintf(buf, sizeof(buf),
                 "capd: catalogue: %llu files, %llu flows, %llu removals sent; spool %llu rows "
                 "(%llu bytes, oldest %.1f s), %llu dropped, %llu send errors\n",
                 (unsigned long long)c.files, (unsigned long long)c.flows,
                 (unsigned long long)c.tombstones, (unsigned long long)c.spool_rows,
                 (unsigned long long)c.spool_bytes, c.spool_age_s,
                 (unsigned long long)c.dropped_rows, (unsigned long long)c.send_errors);
        out += buf;
    }
    // --compress: bytes in and out of each writer's codec.
    for (size_t i = 0; i < s.writers.size(); i++) {
        const WriterSummary& w = s.writers[i];
        if (w.codec.empty()) continue;
        char helpers[48] = "";
        if (w.compress_threads)
            snprintf(helpers, sizeof(helpers), " (%u helper thread%s)", w.compress_threads,
                     w.compress_threads == 1 ? "" : "s");
        snprintf(buf, sizeof(buf),
                 "capd: compress %s%s: writer %zu: %llu bytes in, %llu out, ratio %.2f\n",
                 w.codec.c_str(), helpers, i, (unsigned long long)w.bytes_in,
                 (unsigned long long)w.bytes, w.bytes ? double(w.bytes_in) / double(w.bytes) : 0.0);
        out += buf;
    }
    for (const auto& e : s.errors) out += "capd: error: " + e + "\n";
    return out;
}

nlohmann::json summary_to_json(const Summary& s) {
    using nlohmann::json;
    json j;
    j["elapsed_s"] = s.elapsed_s;
    j["packets_received"] = s.received;
    j["packets_filtered_out"] = s.filtered_out;
    j["packets_over_limit"] = s.over_limit;
    j["packets_paused"] = s.paused;
    j["packets_written"] = s.written;
    j["bytes_written"] = s.bytes_written;
    j["bytes_received"] = s.packet_bytes;
    j["files_written"] = s.files;
    j["hugepages"] = s.hugepages;
    j["drops"] = json::object();
    j["drop_stages"] = json::array();
    for (const DropStage& st : kDropStages) {
        j["drops"][st.name] = s.drops.*st.count;
        j["drop_stages"].push_back({{"name", st.name},
                                    {"label", st.label},
                                    {"before_receipt", st.before_receipt},
                                    {"help", st.help}});
    }
    j["drops"]["total"] = s.drops.total();
    // Not written on purpose, beside the drops: received = filtered_out +
    // cut_off + duplicate + over_limit + paused + written + drops after receipt.
    j["packets_cut_off"] = s.flows.cut_packets;
    j["packets_duplicate"] = s.flows.duplicates;
    j["flows"] = {{"enabled", s.flows.enabled},
                  {"slots", s.flows.slots},
                  {"active", s.flows.active},
                  {"created", s.flows.created},
                  {"evicted", s.flows.evicted},
                  {"expired", s.flows.expired},
                  {"cut_off_packets", s.flows.cut_packets},
                  {"cut_off_bytes", s.flows.cut_bytes},
                  {"duplicate_packets", s.flows.duplicates},
                  {"duplicate_bytes", s.flows.duplicate_bytes},
                  {"untracked_packets", s.flows.untracked},
                  {"bucket_full", s.flows.bucket_full},
                  {"tables", s.flows.tables},
                  {"tables_on_huge_pages", s.flows.tables_on_huge_pages}};
    j["sources"] = json::array();
    for (const auto& x : s.sources)
        j["sources"].push_back({{"name", x.name},
                                {"queues", x.queues},
                                {"packets", x.packets},
                                {"imissed", x.imissed},
                                {"ierrors", x.ierrors},
                                {"nombuf", x.nombuf},
                                {"truncated", x.truncated},
                                {"state", x.state},
                                {"error", x.error}});
    j["workers"] = json::array();
    for (const auto& w : s.workers) {
        // The worker's cost per packet received, its rx included.
        const double per_packet = w.rx_packets ? w.busy_ns / double(w.rx_packets) : 0.0;
        // The mean burst: under a full one, per_packet is the arrival
        // interval the worker kept up with, not its cost (WorkerStats).
        const uint64_t turns = w.busy_turns + w.stalled_turns;
        const double per_turn = turns ? double(w.rx_packets) / double(turns) : 0.0;
        j["workers"].push_back({{"rx_packets", w.rx_packets},
                                {"rx_bytes", w.rx_bytes},
                                {"filtered_out", w.filtered_out},
                                {"over_limit", w.over_limit},
                                {"accepted", w.accepted},
                                {"encoded", w.encoded},
                                {"writer_slow", w.writer_slow},
                                {"ring_full", w.ring_full},
                                {"chunks", w.chunks},
                                {"max_poll_gap_us", w.max_poll_gap_us},
                                {"busy_ns", w.busy_ns},
                                {"busy_ns_per_packet", per_packet},
                                {"stalled_ns", w.stalled_ns},
                                {"stalled_turns", w.stalled_turns},
                                {"busy_turns", w.busy_turns},
                                {"packets_per_turn", per_turn},
                                {"burst_size", kBurstSize}});
    }
    j["writers"] = json::array();
    for (const auto& w : s.writers) {
        j["writers"].push_back({{"packets", w.packets},
                                {"bytes", w.bytes},
                                {"files", w.files},
                                {"chunks", w.chunks},
                                {"disk_drops", w.disk_drops},
                                {"disk_errors", w.disk_errors},
                                {"command_failures", w.command_failures},
                                {"index_files", w.index_files},
                                {"index_bytes", w.index_bytes},
                                {"index_errors", w.index_errors},
                                {"files_retired", w.files_retired},
                                {"bytes_retired", w.bytes_retired},
                                {"oldest_kept_ns", w.oldest_kept_ns},
                                {"error", w.error}});
        // --compress: bytes in (records and headers) and out (on the disk).
        if (!w.codec.empty()) {
            json& jw = j["writers"].back();
            jw["compress"] = w.codec;
            jw["bytes_in"] = w.bytes_in;
            jw["bytes_out"] = w.bytes;
            jw["ratio"] = w.bytes ? double(w.bytes_in) / double(w.bytes) : 0.0;
            jw["compress_threads"] = w.compress_threads;
        }
    }
    j["rules"] = json::array();
    for (const auto& r : s.rules)
        j["rules"].push_back(
            {{"name", r.name}, {"packets", r.packets}, {"bytes", r.bytes}, {"active", r.active}});
    j["mempools"] = {{"mbufs", {{"in_use", s.mbufs.in_use}, {"size", s.mbufs.size}}},
                     {"chunks", {{"in_use", s.chunks.in_use}, {"size", s.chunks.size}}}};
    if (s.catalog.enabled) {
        const CatalogSummary& c = s.catalog;
        j["catalog"] = {{"files", c.files},
                        {"flows", c.flows},
                        {"tombstones", c.tombstones},
                        {"live_snapshots", c.live_snapshots},
                        {"files_without_index", c.files_without_index},
                        {"files_from_memory", c.files_from_memory},
                        {"files_read_back", c.files_read_back},
                        {"flow_budget", c.flow_budget},
                        {"budget_files", c.budget_files},
                        {"aggregate_rows", c.aggregate_rows},
                        {"spool_rows", c.spool_rows},
                        {"spool_bytes", c.spool_bytes},
                        {"spool_age_s", c.spool_age_s},
                        {"dropped_rows", c.dropped_rows},
                        {"send_errors", c.send_errors},
                        {"last_error", c.last_error}};
    }
    j["errors"] = s.errors;
    return j;
}

std::string summary_json(const Summary& s) { return summary_to_json(s).dump(2) + "\n"; }

Status write_summary_json(const std::string& path, const Summary& s) {
    Status st = storage::replace_file(path, summary_json(s), 0644);
    if (!st) return make_error("--stats-json: cannot write the summary: " + st.error());
    return st;
}

}  // namespace linecap::dataplane
