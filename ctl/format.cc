#include "ctl/format.hh"

#include <cstdio>
#include <ctime>
#include <sstream>

#include "dataplane/drop_stages.hh"

namespace linecap::ctl {
namespace {

uint64_t u(const nlohmann::json& j, const char* k) {
    auto it = j.find(k);
    return it != j.end() && it->is_number() ? it->get<uint64_t>() : 0;
}

std::string si(double v) {
    char b[32];
    const char* units[] = {"", "k", "M", "G", "T"};
    int i = 0;
    while (v >= 1000 && i < 4) {
        v /= 1000;
        i++;
    }
    snprintf(b, sizeof(b), i ? "%.2f%s" : "%.0f%s", v, units[i]);
    return b;
}

/* ns since the epoch as "2026-12-06 19:00:00 UTC". */
std::string utc(uint64_t ns) {
    time_t t = static_cast<time_t>(ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&t, &tm);
    char b[64];
    strftime(b, sizeof(b), "%Y-%m-%d %H:%M:%S UTC", &tm);
    return b;
}

}  // namespace

std::string format_status(const nlohmann::json& s) {
    std::ostringstream o;
    char b[64];
    snprintf(b, sizeof(b), "%.1f", s.value("uptime_s", 0.0));
    o << "state:   " << s.value("state", "?") << ", up " << b << " s, format "
      << s.value("format", "?") << (s.value("hugepages", false) ? ", hugepages" : ", no hugepages")
      << "\n";
    for (const auto& x : s["sources"]) {
        o << "source:  " << x.value("name", "") << " (" << x.value("queues", 0) << " queue"
          << (x.value("queues", 0) == 1 ? "" : "s");
        if (x.value("rx_desc", 0) > 0) o << " of " << x.value("rx_desc", 0) << " descriptors";
        o << ")";
        std::string state = x.value("state", "ok");
        if (state == "lost")
            o << " LOST: " << x.value("error", "");
        else if (state == "down")
            o << " DOWN: the interface is down or has no carrier";
        o << "\n";
    }
    int i = 0;
    for (const auto& w : s["workers"]) {
        o << "worker " << i++ << ": lcore " << w.value("lcore", 0) << ", queues";
        for (const auto& q : w["queues"]) o << " " << q.get<std::string>();
        o << "\n";
    }
    i = 0;
    for (const auto& w : s["writers"]) {
        o << "writer " << i++ << ": lcore " << w.value("lcore", 0) << ", writing "
          << w.value("current_file", "") << "\n";
        if (w.value("disk_error", false))
            o << "          DISK ERROR: writes failing, packets dropped and counted\n";
        if (!w.value("last_error", "").empty())
            o << "          last error: " << w["last_error"].get<std::string>() << "\n";
    }
    o << "rules:  ";
    for (const auto& r : s["rules"]) o << " " << r.get<std::string>();
    o << " (generation " << s.value("rule_generation", 0) << ")\n";
    if (s.contains("control") && s["control"].is_object()) {
        const auto& c = s["control"];
        o << "control: " << u(c, "clients") << " clients (" << u(c, "root_clients")
          << " root), refused busy " << u(c, "refused_busy") << ", idle timeouts "
          << u(c, "idle_timeouts") << ", read pauses " << u(c, "read_pauses")
          << ", replies pending " << u(c, "pending_reply_bytes") << " bytes (peak "
          << u(c, "pending_reply_bytes_peak") << ")\n";
    }
    return o.str();
}

std::string format_stats(const nlohmann::json& s) {
    std::ostringstream o;
    char b[256];
    snprintf(b, sizeof(b), "%.1f", s.value("elapsed_s", 0.0));
    o << "elapsed " << b << " s: " << u(s, "packets_received") << " received, "
      << u(s, "packets_filtered_out") << " filtered out, " << u(s, "packets_written")
      << " written (" << u(s, "bytes_written") << " bytes, " << u(s, "files_written")
      << " files)\n";
    const auto& d = s["drops"];
    o << "drops:";
    for (const auto& st : dataplane::kDropStages) o << " " << st.name << " " << u(d, st.name);
    o << " (total " << u(d, "total") << ")\n";
    if (u(s, "packets_paused"))
        o << "paused: " << u(s, "packets_paused")
          << " received while paused, not written (not counted as drops)\n";
    if (s.contains("flows") && s["flows"].value("enabled", false)) {
        const auto& f = s["flows"];
        o << "flows: " << u(f, "active") << " active, " << u(f, "created") << " created, "
          << u(f, "evicted") << " evicted, " << u(f, "expired") << " expired; cut off by policy "
          << u(f, "cut_off_packets") << " packets (" << u(f, "cut_off_bytes")
          << " bytes), duplicate " << u(f, "duplicate_packets") << " packets ("
          << u(f, "duplicate_bytes") << " bytes) (not counted as drops)\n";
        o << "flows: " << u(f, "tables_on_huge_pages") << " of " << u(f, "tables")
          << " tables on 2 MiB huge pages (else normal pages); " << u(f, "bucket_full")
          << " new flows found their bucket full\n";
    }
    for (const auto& x : s["sources"]) {
        o << "source " << x.value("name", "") << ": " << u(x, "packets") << " packets, imissed "
          << u(x, "imissed") << ", ierrors " << u(x, "ierrors") << ", nombuf " << u(x, "nombuf");
        if (u(x, "truncated")) o << ", records cut to 262144 bytes " << u(x, "truncated");
        o << "\n";
    }
    int i = 0;
    for (const auto& w : s["workers"])
        o << "worker " << i++ << ": rx " << u(w, "rx_packets") << ", filtered "
          << u(w, "filtered_out") << ", accepted " << u(w, "accepted") << ", ring_full "
          << u(w, "ring_full") << ", writer_slow " << u(w, "writer_slow") << ", longest poll gap "
          << w.value("max_poll_gap_us", 0.0) << " us\n";
    i = 0;
    for (const auto& w : s["writers"])
        o << "writer " << i++ << ": " << u(w, "packets") << " packets, " << u(w, "bytes")
          << " bytes, " << u(w, "files") << " files, disk drops " << u(w, "disk_drops")
          << (u(w, "command_failures") ? ", -z failures " + std::to_string(u(w, "command_failures"))
                                       : std::string())
          << (u(w, "files_retired")
                  ? ", retired " + std::to_string(u(w, "files_retired")) + " files (" +
                        std::to_string(u(w, "bytes_retired")) + " bytes)"
                  : std::string())
          << (u(w, "oldest_kept_ns") ? ", oldest packet kept " + utc(u(w, "oldest_kept_ns"))
                                     : std::string())
          << (w.contains("compress")
                  ? ", " + w.value("compress", "") +
                        (u(w, "compress_threads")
                             ? " (" + std::to_string(u(w, "compress_threads")) + " helpers)"
                             : std::string()) +
                        " " + std::to_string(u(w, "bytes_in")) + " bytes in, " +
                        std::to_string(u(w, "bytes_out")) + " out, ratio " +
                        std::to_string(w.value("ratio", 0.0)).substr(0, 5)
                  : std::string())
          << "\n";
    for (const auto& r : s["rules"])
        o << "rule " << r.value("name", "") << (r.value("active", true) ? "" : " (removed)") << ": "
          << u(r, "packets") << " packets, " << u(r, "bytes") << " bytes\n";
    if (s.contains("catalog") && s["catalog"].is_object()) {
        const auto& c = s["catalog"];
        snprintf(b, sizeof(b), "%.1f", c.value("spool_age_s", 0.0));
        o << "catalogue: " << u(c, "files") << " files, " << u(c, "flows") << " flows, "
          << u(c, "tombstones") << " removals sent; spool " << u(c, "spool_rows") << " rows ("
          << u(c, "spool_bytes") << " bytes, oldest " << b << " s), dropped "
          << u(c, "dropped_rows") << ", send errors " << u(c, "send_errors") << "\n";
        o << "          closed files' index: " << u(c, "files_from_memory")
          << " from writer memory, " << u(c, "files_read_back") << " read back; flow budget "
          << (u(c, "flow_budget") ? std::to_string(u(c, "flow_budget")) + " rows a file"
                                  : std::string("off (a row a flow)"))
          << ": " << u(c, "budget_files") << " files over it, " << u(c, "aggregate_rows")
          << " aggregate rows\n";
        if (!c.value("last_error", "").empty())
            o << "          last error: " << c["last_error"].get<std::string>() << "\n";
    }
    if (s.contains("mempools")) {
        const auto& m = s["mempools"];
        o << "mempools: mbufs " << u(m["mbufs"], "in_use") << "/" << u(m["mbufs"], "size")
          << " in use, chunks " << u(m["chunks"], "in_use") << "/" << u(m["chunks"], "size")
          << " in use\n";
    }
    return o.str();
}

std::string format_rules(const nlohmann::json& d) {
    std::ostringstream o;
    for (const auto& r : d["rules"]) {
        o << r.value("name", "") << ": ";
        std::string e = r.value("expression", "");
        o << (e.empty() ? "(any packet)" : e);
        for (const auto& p : r["patterns"]) o << " --pattern '" << p.get<std::string>() << "'";
        if (r.value("scan", "payload") == "frame") o << " --scan frame";
        if (r.contains("flow_cutoff")) {
            if (u(r, "flow_cutoff")) o << " --flow-cutoff " << u(r, "flow_cutoff");
            if (u(r, "flow_packets")) o << " --flow-packets " << u(r, "flow_packets");
        }
        o << "  [" << u(r, "packets") << " packets, " << u(r, "bytes") << " bytes]\n";
    }
    if (d["rules"].empty()) o << "(no rules: every packet is captured)\n";
    return o.str();
}

std::string format_flows(const nlohmann::json& d) {
    std::ostringstream o;
    auto proto = [](uint64_t p) -> std::string {
        return p == 6 ? "tcp" : p == 17 ? "udp" : p == 132 ? "sctp" : "proto " + std::to_string(p);
    };
    auto end = [](const nlohmann::json& f, const char* addr, const char* port) {
        std::string a = f.value(addr, "");
        if (a.find(':') != std::string::npos) a = "[" + a + "]";
        return a + ":" + std::to_string(u(f, port));
    };
    for (const auto& f : d["flows"]) {
        o << proto(u(f, "proto")) << " " << end(f, "a", "pa") << " <-> " << end(f, "b", "pb");
        if (u(f, "vlan")) o << " vlan-key " << u(f, "vlan");
        o << ": " << u(f, "packets") << " packets, " << u(f, "bytes") << " bytes";
        if (u(f, "cut_packets"))
            o << ", cut off " << u(f, "cut_packets") << " packets (" << u(f, "cut_bytes")
              << " bytes)";
        o << " [worker " << u(f, "worker") << "]\n";
    }
    if (d["flows"].empty()) o << "(no flows)\n";
    return o.str();
}

/* A Prometheus label value: backslash, quote and newline escaped. */
std::string label(const std::string& v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

std::string format_prometheus(const nlohmann::json& s) {
    std::ostringstream o;
    auto counter = [&](const char* name, const char* help) {
        o << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n";
    };
    // A counter with a sample for each writer, labelled with its number.
    auto per_writer = [&](const char* name, const char* help, const char* key) {
        counter(name, help);
        int i = 0;
        for (const auto& w : s["writers"])
            o << name << "{writer=\"" << i++ << "\"} " << u(w, key) << "\n";
    };
    counter("linecap_packets_received_total", "Packets received from all sources.");
    o << "linecap_packets_received_total " << u(s, "packets_received") << "\n";
    counter("linecap_packets_filtered_out_total", "Packets no rule matched.");
    o << "linecap_packets_filtered_out_total " << u(s, "packets_filtered_out") << "\n";
    counter("linecap_packets_written_total", "Packets written to files.");
    o << "linecap_packets_written_total " << u(s, "packets_written") << "\n";
    counter("linecap_bytes_written_total", "File bytes written, headers included.");
    o << "linecap_bytes_written_total " << u(s, "bytes_written") << "\n";
    counter("linecap_drops_total", "Packets lost, by stage.");
    for (const auto& st : dataplane::kDropStages)
        o << "linecap_drops_total{stage=\"" << st.name << "\"} " << u(s["drops"], st.name) << "\n";
    counter("linecap_packets_paused_total",
            "Packets received while capture was paused, not written on purpose (not a drop).");
    o << "linecap_packets_paused_total " << u(s, "packets_paused") << "\n";
    if (s.contains("flows") && s["flows"].value("enabled", false)) {
        const auto& f = s["flows"];
        counter("linecap_packets_cut_off_total",
                "Packets past their flow's cutoff, not written on purpose (not a drop).");
        o << "linecap_packets_cut_off_total " << u(f, "cut_off_packets") << "\n";
        counter("linecap_bytes_cut_off_total", "Wire bytes of the packets cut off.");
        o << "linecap_bytes_cut_off_total " << u(f, "cut_off_bytes") << "\n";
        counter("linecap_packets_duplicate_total",
                "Packets equal to a recent one of their flow, not written (not a drop).");
        o << "linecap_packets_duplicate_total " << u(f, "duplicate_packets") << "\n";
        counter("linecap_flows_created_total", "Flows the flow tables started.");
        o << "linecap_flows_created_total " << u(f, "created") << "\n";
        counter("linecap_flows_evicted_total", "Live flows pushed out of a full flow table.");
        o << "linecap_flows_evicted_total " << u(f, "evicted") << "\n";
        o << "# HELP linecap_flows_active Flows in the flow tables.\n"
          << "# TYPE linecap_flows_active gauge\nlinecap_flows_active " << u(f, "active") << "\n";
        counter("linecap_flows_bucket_full_total",
                "New flows that found their bucket full (also counted evicted or expired).");
        o << "linecap_flows_bucket_full_total " << u(f, "bucket_full") << "\n";
        o << "# HELP linecap_flow_tables Flow tables, one a worker.\n"
          << "# TYPE linecap_flow_tables gauge\nlinecap_flow_tables " << u(f, "tables") << "\n"
          << "# HELP linecap_flow_tables_on_huge_pages Flow tables on 2 MiB huge pages (the "
             "others on normal pages).\n"
          << "# TYPE linecap_flow_tables_on_huge_pages gauge\nlinecap_flow_tables_on_huge_pages "
          << u(f, "tables_on_huge_pages") << "\n";
    }
    counter("linecap_source_packets_total", "Packets delivered by each source.");
    for (const auto& x : s["sources"]) {
        o << "linecap_source_packets_total{source=\"" << label(x.value("name", "")) << "\"} "
          << u(x, "packets") << "\n";
    }
    counter("linecap_rule_packets_total", "Packets matched, by rule.");
    for (const auto& r : s["rules"])
        o << "linecap_rule_packets_total{rule=\"" << label(r.value("name", "")) << "\"} "
          << u(r, "packets") << "\n";
    bool compress = false;
    for (const auto& w : s["writers"]) compress = compress || w.contains("compress");
    if (compress) {
        per_writer("linecap_compress_bytes_in_total",
                   "Bytes into each writer's codec (--compress).", "bytes_in");
        per_writer("linecap_compress_bytes_out_total",
                   "Bytes out of each writer's codec, to the disk (--compress).", "bytes_out");
    }
    o << "# HELP linecap_worker_max_poll_gap_seconds Longest time a worker went between two "
         "receive polls.\n# TYPE linecap_worker_max_poll_gap_seconds gauge\n";
    int wi = 0;
    for (const auto& w : s["workers"])
        o << "linecap_worker_max_poll_gap_seconds{worker=\"" << wi++ << "\"} "
          << w.value("max_poll_gap_us", 0.0) / 1e6 << "\n";
    per_writer("linecap_files_retired_total",
               "Files deleted by retention (--retain-free, --retain-age), by writer.",
               "files_retired");
    per_writer("linecap_bytes_retired_total", "Bytes of the files retention deleted, by writer.",
               "bytes_retired");
    o << "# HELP linecap_oldest_packet_kept_seconds First packet of the oldest file kept, in "
         "seconds since the epoch (with retention on; absent when unknown).\n"
      << "# TYPE linecap_oldest_packet_kept_seconds gauge\n";
    wi = 0;
    for (const auto& w : s["writers"]) {
        if (u(w, "oldest_kept_ns"))
            o << "linecap_oldest_packet_kept_seconds{writer=\"" << wi << "\"} "
              << u(w, "oldest_kept_ns") / 1000000000ull << "\n";
        wi++;
    }
    if (s.contains("catalog") && s["catalog"].is_object()) {
        const auto& c = s["catalog"];
        counter("linecap_catalog_rows_sent_total", "Catalogue rows the server took, by kind.");
        o << "linecap_catalog_rows_sent_total{kind=\"file\"} " << u(c, "files") << "\n"
          << "linecap_catalog_rows_sent_total{kind=\"flow\"} " << u(c, "flows") << "\n"
          << "linecap_catalog_rows_sent_total{kind=\"removal\"} " << u(c, "tombstones") << "\n";
        counter("linecap_catalog_rows_dropped_total",
                "Catalogue rows dropped, oldest first, from a full spool.");
        o << "linecap_catalog_rows_dropped_total " << u(c, "dropped_rows") << "\n";
        counter("linecap_catalog_send_errors_total", "Catalogue requests that failed.");
        o << "linecap_catalog_send_errors_total " << u(c, "send_errors") << "\n";
        counter("linecap_catalog_index_files_total",
                "Closed files published, by where their index came from: the writer's memory or "
                "read back from the disk.");
        o << "linecap_catalog_index_files_total{source=\"memory\"} " << u(c, "files_from_memory")
          << "\n"
          << "linecap_catalog_index_files_total{source=\"read_back\"} " << u(c, "files_read_back")
          << "\n";
        counter("linecap_catalog_budget_files_total",
                "Files and live snapshots with more flows than --catalog-flow-budget.");
        o << "linecap_catalog_budget_files_total " << u(c, "budget_files") << "\n";
        o << "# HELP linecap_catalog_flow_budget Flows rows per file (--catalog-flow-budget; 0: a "
             "row a flow).\n"
          << "# TYPE linecap_catalog_flow_budget gauge\nlinecap_catalog_flow_budget "
          << u(c, "flow_budget") << "\n";
        counter("linecap_catalog_aggregate_rows_total",
                "Aggregate flows rows made for the files over the flow budget.");
        o << "linecap_catalog_aggregate_rows_total " << u(c, "aggregate_rows") << "\n";
        o << "# HELP linecap_catalog_spool_rows Catalogue rows waiting in the spool.\n"
          << "# TYPE linecap_catalog_spool_rows gauge\nlinecap_catalog_spool_rows "
          << u(c, "spool_rows") << "\n"
          << "# HELP linecap_catalog_spool_bytes Bytes of rows waiting in the spool.\n"
          << "# TYPE linecap_catalog_spool_bytes gauge\nlinecap_catalog_spool_bytes "
          << u(c, "spool_bytes") << "\n"
          << "# HELP linecap_catalog_spool_age_seconds Age of the oldest row in the spool.\n"
          << "# TYPE linecap_catalog_spool_age_seconds gauge\nlinecap_catalog_spool_age_seconds "
          << c.value("spool_age_s", 0.0) << "\n";
    }
    o << "# HELP linecap_elapsed_seconds Seconds since capture started.\n"
      << "# TYPE linecap_elapsed_seconds gauge\n"
      << "linecap_elapsed_seconds " << s.value("elapsed_s", 0.0) << "\n";
    return o.str();
}

nlohmann::json rates_json(const nlohmann::json& prev, const nlohmann::json& cur) {
    double dt = prev.is_null() ? 0 : cur.value("elapsed_s", 0.0) - prev.value("elapsed_s", 0.0);
    auto rate = [&](uint64_t a, uint64_t b) { return dt > 0 ? double(b - a) / dt : 0.0; };
    uint64_t pd = prev.is_null() ? 0 : u(prev["drops"], "total");
    uint64_t pr = prev.is_null() ? 0 : u(prev, "packets_received");
    uint64_t pb = prev.is_null() ? 0 : u(prev, "bytes_received");
    uint64_t pw = prev.is_null() ? 0 : u(prev, "packets_written");
    return {{"elapsed_s", cur.value("elapsed_s", 0.0)},
            {"rx_pps", rate(pr, u(cur, "packets_received"))},
            {"rx_bps", 8 * rate(pb, u(cur, "bytes_received"))},
            {"written_pps", rate(pw, u(cur, "packets_written"))},
            {"drops_per_s", rate(pd, u(cur["drops"], "total"))},
            {"drops_total", u(cur["drops"], "total")}};
}

std::string format_top(const nlohmann::json& prev, const nlohmann::json& cur) {
    nlohmann::json r = rates_json(prev, cur);
    std::ostringstream o;
    char b[256];
    snprintf(b, sizeof(b),
             "capd  up %.0f s   rx %s pps  %sbit/s   written %s pps   drops %s/s (total %llu)\n",
             r["elapsed_s"].get<double>(), si(r["rx_pps"]).c_str(), si(r["rx_bps"]).c_str(),
             si(r["written_pps"]).c_str(), si(r["drops_per_s"]).c_str(),
             (unsigned long long)r["drops_total"].get<uint64_t>());
    o << b;
    o << format_stats(cur);
    return o.str();
}

}  // namespace linecap::ctl
