/* `diagnose`: one verdict per TCP connection found in capture files.
 *
 *   198.18.1.5:40000 -> 198.18.0.80:8080  REFUSED: SYN answered by RST from server (1 attempt)
 *
 * summarize() turns the state a TcpTracker kept for one connection into a
 * verdict; diagnose_files() runs files through a tracker and ranks the
 * connections, problems first. Control-side code: these functions allocate
 * and may be called from any thread; they never throw for bad input, which
 * is reported in the DiagnoseReport instead.
 */
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ctl/diag/capture_file.hh"
#include "packet/tcp_tracker.hh"

namespace linecap::ctl::diag {

/* The file tools are built on the decoder and TCP tracker that capd's
 * workers use (packet/); their names are used here unqualified. */
using namespace linecap::packet;

/* Most severe first: the order of the ranking. */
enum class Verdict : uint8_t {
    kRefused,    /* SYN answered by RST */
    kUnanswered, /* SYN (retried or not), nothing back */
    kReset,      /* RST after the handshake, or from the client during it */
    kHalfOpen,   /* SYN/SYN-ACK, no final ACK */
    kRetransmissions,
    kZeroWindow,
    kDupAcks,   /* a run of 3 or more duplicate ACKs */
    kMidStream, /* handshake not captured, nothing wrong seen */
    kOk,
};
const char* verdict_name(Verdict v); /* "REFUSED", "UNANSWERED", ... */
inline bool is_problem(Verdict v) { return v < Verdict::kMidStream; }

enum class Handshake : uint8_t {
    kComplete, /* SYN, SYN-ACK, ACK */
    kPartial,  /* completed, but the SYN or SYN-ACK was not captured */
    kRefused,
    kUnanswered,
    kHalfOpen,
    kMidStream, /* neither SYN nor SYN-ACK captured */
};
const char* handshake_name(Handshake h); /* "complete", "refused", ... */

enum class Close : uint8_t { kFinBoth, kFinClient, kFinServer, kRst, kOpen };
const char* close_name(Close c); /* "FIN/FIN", "FIN from client", ..., "open" */

struct ConnSummary {
    Endpoint client;
    Endpoint server;
    bool roles_guessed = false; /* no SYN or SYN-ACK: client = higher port */
    Verdict verdict = Verdict::kOk;
    Handshake handshake = Handshake::kComplete;
    Close close = Close::kOpen;
    std::string reason;             /* text after "VERDICT: " */
    std::vector<std::string> notes; /* further findings, most severe first */
    std::vector<double> syn_intervals_s;
};

/* Classifies one connection. capture_end_ns is the time of the last packet
 * of the whole capture (how long an unanswered SYN was waited for);
 * files names the capture files for frame references (may be empty). */
ConnSummary summarize(const TcpConn& c, uint64_t capture_end_ns,
                      const std::vector<std::string>& files = {});

struct FileReport {
    std::string path;
    std::string linktype; /* "EN10MB (1)" */
    bool pcapng = false;
    uint64_t frames = 0;
    bool opened = false;
    bool truncated = false;
    std::string error; /* empty, or why (part of) the file could not be read */
};

/* Opens one capture for reading into fr: sets fr.path, and opened, pcapng
 * and linktype once open. Empty (fr.error says why) when it cannot be
 * opened or decode_packet() does not read its link type. */
std::optional<CaptureFile> open_report_file(const std::string& path, FileReport& fr);
/* After the last read (st, as next() ended): fr.frames, and fr.truncated
 * and fr.error when the read stopped short. */
void finish_report_file(const CaptureFile& cf, ReadStatus st, FileReport& fr);

struct DiagnoseOptions {
    uint32_t max_flows = 1u << 16; /* tracker capacity */
};

struct ConnResult {
    TcpConn conn;
    ConnSummary summary;
};

/* What a live report was made from: the flow tables of capd's workers. */
struct LiveInfo {
    unsigned workers = 0;
    uint32_t capacity = 0;     /* connections per worker table */
    uint64_t in_use = 0;       /* connections in the tables, all workers */
    uint64_t reused = 0;       /* connections ended by a new SYN on their 5-tuple */
    uint64_t packets_seen = 0; /* accepted packets offered to the tables */
    uint64_t merged = 0;       /* connections found in more than one worker's table */
    /* Source names for frame labels; empty when TCP came from one source
     * only, so labels read "frame N" as for one file. */
    std::vector<std::string> frame_sources;
};

struct DiagnoseReport {
    std::vector<FileReport> files;
    uint64_t frames = 0;
    uint64_t tcp_packets = 0;
    uint64_t other_ip = 0; /* IP but not TCP, or TCP fragments */
    uint64_t not_ip = 0;
    uint64_t undecodable = 0; /* truncated or malformed headers */
    uint64_t first_ts = 0;
    uint64_t last_ts = 0;
    uint32_t max_flows = 0;
    uint64_t evicted = 0;                /* connections pushed out of the full table */
    std::vector<ConnResult> connections; /* ranked: problems first */
    bool is_live = false;                /* made from capd's tables, not from files */
    LiveInfo live;
    /* Connections listed in the text (problems) and JSON reports; the
     * counts and the summary always cover all of them. */
    size_t list_limit = SIZE_MAX;
};

/* Sorts r.connections: most severe verdict first, then by first frame. */
void rank_connections(DiagnoseReport& r);

/* Reads the files in the order given (a rotated set is one capture) and
 * diagnoses every TCP connection. Unreadable or damaged files are recorded
 * in files[i].error; the others are still analysed. A tracker of
 * opt.max_flows connections that cannot be allocated is every file's
 * error. */
DiagnoseReport diagnose_files(const std::vector<std::string>& paths,
                              const DiagnoseOptions& opt = {});

/* 0: every file read completely; 1: a file could not be opened or read
 * (unreadable, not a capture, unsupported link type); 2: all opened but one
 * ended early (truncated), the rest was analysed. */
int diagnose_exit_status(const DiagnoseReport& r);

struct TextOptions {
    bool all = false;        /* list every healthy connection */
    size_t max_healthy = 20; /* otherwise list at most this many */
};

/* What to do next, from the verdicts (e.g. capture the other end). */
std::vector<std::string> diagnose_hints(const DiagnoseReport& r);

/* The human report: a header, ranked problem connections with a detail line
 * each, healthy connections, and a final "VERDICT:" line. */
std::string format_diagnose_text(const DiagnoseReport& r, const TextOptions& opt = {});
/* The same as JSON: {"files": [...], "frames", "tcp_packets", ..., "evicted",
 * "connections": [{"client", "server", "verdict", "reason", "notes",
 * "handshake", "syn_retries", "syn_intervals_s", "close", "reset": {"by",
 * "endpoint", "bytes_client_to_server", "bytes_server_to_client", "frame"} or
 * null, "client_to_server"/"server_to_client": {"bytes", "retransmissions",
 * "retransmission_frames", "dup_acks", "zero_windows", ...}, ...}],
 * "summary": {"connections", "problems", "by_verdict"}, "verdict"}. Frame
 * numbers run across the files in the order given (as mergecap -a would). */
nlohmann::json diagnose_json(const DiagnoseReport& r);

/* "frame 12" for one file, "b.pcap#12" when several files were read. */
std::string frame_label(FrameRef f, const std::vector<std::string>& files);

}  // namespace linecap::ctl::diag
