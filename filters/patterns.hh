/* Hyperscan payload patterns: `--pattern GET ` and `--pattern '/user-agent: curl/i'`.
 *
 * Compile side (control thread, may allocate and fail; patterns_compile.cc):
 * PatternDb::compile() turns the patterns of every rule into ONE block-mode Hyperscan database.
 * Each pattern is tagged with the index of the rule it belongs to; a scan
 * reports which rules had at least one pattern match.
 *
 * Run side (worker, never allocates, locks or logs; patterns_run.cc):
 * payload_span(), PatternDb::scan() and scan_burst(). The database is immutable and shared read-only by all workers;
 * each worker owns one PatternScratch, which is never shared between threads.
 *
 * Pattern syntax:
 *   - `/REGEX/FLAGS` (text starts with '/' and contains another '/') is a
 *     Hyperscan regex. FLAGS is any of: i (caseless), s (dot matches \n),
 *     m (multi-line ^ and $). Slashes inside REGEX need no escaping: the
 *     last '/' ends it, so `//usr/bin/` matches "/usr/bin".
 *   - anything else is a literal matched byte for byte (".", "*", "\" and
 *     all other bytes stand for themselves).
 *   - an empty pattern, an empty regex and unknown flags are errors.
 *
 * Scanning is block mode: each packet is scanned on its own, so a match that
 * spans two TCP segments is not found (no stream reassembly).
 */
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hh"
#include "filters/rule_set_run.hh"

struct hs_database;
struct hs_scratch;

namespace linecap::filters {

/* Rule indices a PatternDb can report: 0 .. kMaxPatternRules-1. */
inline constexpr uint32_t kMaxPatternRules = 256;

/* A set of rule indices, one bit per rule. Plain value type, no allocation. */
class RuleMask {
public:
    void clear() { words_.fill(0); }
    void set(uint32_t rule) { words_[rule >> 6] |= uint64_t{1} << (rule & 63); }
    bool test(uint32_t rule) const { return (words_[rule >> 6] >> (rule & 63)) & 1; }
    bool any() const {
        for (uint64_t w : words_)
            if (w) return true;
        return false;
    }
    uint32_t count() const {
        uint32_t n = 0;
        for (uint64_t w : words_) n += static_cast<uint32_t>(std::popcount(w));
        return n;
    }
    bool operator==(const RuleMask&) const = default;

private:
    std::array<uint64_t, kMaxPatternRules / 64> words_{};
};

/* One pattern as the user wrote it, and the rule it belongs to. */
struct PatternSpec {
    std::string text;
    uint32_t rule = 0;
};

/* Bytes of a packet to scan: [offset, offset + length) within data. */
struct ByteSpan {
    uint32_t offset = 0;
    uint32_t length = 0;
};

/* The bytes a rule's patterns are matched against.
 *   kFrame:   the whole captured frame [0, caplen).
 *   kPayload: Ethernet (any number of 802.1Q / 802.1ad / QinQ tags), then
 *             IPv4 or IPv6 (skipping hop-by-hop, routing, fragment, destination
 *             options and AH headers). TCP: the bytes after the data offset.
 *             UDP: the bytes after the 8-byte header. A non-first fragment or
 *             any other IP protocol: the IP payload. Bounded by caplen and by
 *             the IP length (Ethernet padding is not payload).
 *             Non-IP frames and malformed or truncated headers give an empty
 *             span.
 * Never reads outside [data, data + caplen). Hot path, any thread. */
ByteSpan payload_span(const Packet& pkt, ScanScope scope) noexcept;

/* Per-worker Hyperscan scratch. Create with PatternDb::make_scratch() on the
 * control thread, then use on exactly one worker. Move-only owner. */
class PatternScratch {
public:
    PatternScratch() = default;
    ~PatternScratch();
    PatternScratch(PatternScratch&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
    PatternScratch& operator=(PatternScratch&& o) noexcept;
    PatternScratch(const PatternScratch&) = delete;
    PatternScratch& operator=(const PatternScratch&) = delete;

private:
    friend class PatternDb;
    explicit PatternScratch(hs_scratch* s) : s_(s) {}
    hs_scratch* s_ = nullptr;
};

class PatternDb {
public:
    /* Compiles every pattern into one database. rule_names (optional,
     * indexed by rule) only makes messages friendlier. Errors:
     *   "rule 'web', pattern 2 '/get(/i': Missing close parenthesis for
     *    group started at index 3 (Hyperscan, expression 4)"
     * i.e. the rule, the pattern's 1-based position within its rule, its
     * text, and Hyperscan's own message with its expression index. Empty
     * input gives an empty database (scan() then matches nothing). */
    static Result<PatternDb> compile(std::span<const PatternSpec> patterns,
                                     std::span<const std::string> rule_names = {});

    PatternDb() = default;
    ~PatternDb();
    PatternDb(PatternDb&& o) noexcept;
    PatternDb& operator=(PatternDb&& o) noexcept;
    PatternDb(const PatternDb&) = delete;
    PatternDb& operator=(const PatternDb&) = delete;

    /* Hyperscan's serialized form of the database (hs_serialize_database),
     * which compile() can run in a child process and hand back. Errors: an
     * empty database, or Hyperscan's allocation failure. Any thread. */
    [[nodiscard]] Result<std::string> serialize() const;

    /* The database that compile(patterns, ...) returned, from its
     * serialize() bytes and min_length(); `patterns` must be the same list
     * (it rebuilds describe()'s entries). Errors: bytes Hyperscan does not
     * accept (another version, damaged) or allocation failure. Any thread. */
    [[nodiscard]] static Result<PatternDb> deserialize(std::string_view bytes,
                                                       std::span<const PatternSpec> patterns,
                                                       uint32_t min_length);

    /* A scratch for one worker. Control thread. */
    Result<PatternScratch> make_scratch() const;

    bool empty() const { return db_ == nullptr; }
    uint32_t pattern_count() const { return static_cast<uint32_t>(patterns_.size()); }
    /* Rules that own at least one pattern. */
    const RuleMask& rules() const { return rules_; }
    /* Shortest input that can match anything; shorter inputs are not scanned. */
    uint32_t min_length() const { return min_length_; }
    /* Hyperscan database size in bytes (for -d and stats). */
    size_t size_bytes() const;
    /* One line per pattern: rule, kind (literal/regex), flags, text. */
    std::string describe() const;

    /* Hot path. Clears `matched`, then sets the bit of every rule with at
     * least one pattern occurring in [data, data + len). Returns how many
     * rules matched. Stops as soon as every rule in rules() has matched.
     * An empty input, or one shorter than min_length(), is not handed to
     * Hyperscan at all. Never allocates; `scratch` must come from this
     * database's make_scratch() and belong to the calling thread. */
    uint32_t scan(const uint8_t* data, uint32_t len, PatternScratch& scratch,
                  RuleMask& matched) const noexcept;

    /* Hot path, burst form: for each of the n packets, scans the bytes
     * payload_span(pkts[i], scope) selects and writes the result to
     * matched[i]. When `want` is non-null, packets with want[i] == 0 are not
     * scanned (matched[i] is cleared). Returns the number of packets with at
     * least one rule matched. */
    uint32_t scan_burst(const Packet* pkts, uint32_t n, ScanScope scope, PatternScratch& scratch,
                        RuleMask* matched, const uint8_t* want = nullptr) const noexcept;

private:
    struct Entry {
        std::string text;
        uint32_t rule;
        bool regex;
        unsigned flags;  // HS_FLAG_*
    };

    hs_database* db_ = nullptr;
    hs_scratch* proto_scratch_ = nullptr;  // cloned by make_scratch(), never scanned with
    std::vector<Entry> patterns_;
    RuleMask rules_;
    uint32_t rule_count_ = 0;  // rules_.count()
    uint32_t min_length_ = 0;
};

}  // namespace linecap::filters
