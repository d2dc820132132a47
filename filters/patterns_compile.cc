/* Hyperscan payload patterns, compile side: parses the patterns, compiles,
 * serializes and loads the database and clones scratch. Control thread and
 * the compiling child (patterns.hh); the scan is in patterns_run.cc. */
#include <hs/hs.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>

#include "filters/patterns.hh"

namespace linecap::filters {
namespace {

struct ParsedPattern {
    std::string expression;  // what Hyperscan compiles
    bool regex = false;
    unsigned flags = 0;
};

bool is_plain(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* A literal becomes a regex in which every byte other than [0-9A-Za-z_]
 * is written \xHH: exact bytes whatever they are, and Hyperscan still sees
 * a pure literal (it picks its literal matchers for such expressions). */
std::string escape_literal(const std::string& text) {
    std::string out;
    out.reserve(text.size() * 4);
    for (unsigned char c : text) {
        if (is_plain(c)) {
            out.push_back(static_cast<char>(c));
        } else {
            char buf[5];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out.append(buf);
        }
    }
    return out;
}

Result<ParsedPattern> parse_pattern(const std::string& text) {
    if (text.empty()) return make_error("empty pattern");
    ParsedPattern pp;
    size_t last = text.rfind('/');
    if (text[0] != '/' || last == 0) {
        pp.expression = escape_literal(text);
        return pp;
    }
    pp.regex = true;
    pp.expression = text.substr(1, last - 1);
    if (pp.expression.empty()) return make_error("empty regex");
    for (size_t i = last + 1; i < text.size(); i++) {
        switch (text[i]) {
            case 'i': pp.flags |= HS_FLAG_CASELESS; break;
            case 's': pp.flags |= HS_FLAG_DOTALL; break;
            case 'm': pp.flags |= HS_FLAG_MULTILINE; break;
            default:
                return make_error(std::string("unknown regex flag '") + text[i] +
                                  "' (known: i, s, m); a literal that starts with '/' "
                                  "is written as a regex, e.g. '/" +
                                  text + "/'");
        }
    }
    return pp;
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

}  // namespace

Result<PatternDb> PatternDb::compile(std::span<const PatternSpec> patterns,
                                     std::span<const std::string> rule_names) {
    PatternDb db;
    if (patterns.empty()) return db;

    for (const PatternSpec& p : patterns)
        if (p.rule >= kMaxPatternRules)
            return make_error("patterns: rule index " + std::to_string(p.rule) +
                              " out of range: at most " + std::to_string(kMaxPatternRules) +
                              " rules may have patterns");

    // Message prefix naming the pattern the way the user wrote it.
    std::vector<uint32_t> nth_in_rule(patterns.size());
    {
        std::vector<uint32_t> seen(kMaxPatternRules, 0);
        for (size_t i = 0; i < patterns.size(); i++) nth_in_rule[i] = ++seen[patterns[i].rule];
    }
    auto who = [&](size_t i) {
        const PatternSpec& p = patterns[i];
        std::string rule =
            p.rule < rule_names.size() ? quote(rule_names[p.rule]) : std::to_string(p.rule);
        return "rule " + rule + ", pattern " + std::to_string(nth_in_rule[i]) + " " + quote(p.text);
    };

    if (hs_valid_platform() != HS_SUCCESS)
        return make_error("Hyperscan cannot run on this CPU (it needs SSSE3)");

    std::vector<std::string> exprs;
    std::vector<unsigned> flags, ids;
    exprs.reserve(patterns.size());
    db.patterns_.reserve(patterns.size());
    db.min_length_ = std::numeric_limits<uint32_t>::max();
    for (size_t i = 0; i < patterns.size(); i++) {
        const PatternSpec& p = patterns[i];
        auto parsed = parse_pattern(p.text);
        if (!parsed) return make_error(who(i) + ": " + parsed.error());
        // SINGLEMATCH per id = per rule: each rule reports at most once per scan.
        unsigned f = parsed->flags | HS_FLAG_SINGLEMATCH;

        // Checked one at a time first, so the message names exactly this pattern.
        hs_expr_info_t* info = nullptr;
        hs_compile_error_t* err = nullptr;
        if (hs_expression_info(parsed->expression.c_str(), f, &info, &err) != HS_SUCCESS) {
            std::string msg = who(i) + ": " + (err != nullptr ? err->message : "invalid") +
                              " (Hyperscan, expression " + std::to_string(i) + ")";
            hs_free_compile_error(err);
            return make_error(msg);
        }
        db.min_length_ = std::min<uint32_t>(db.min_length_, info->min_width);
        std::free(info);  // allocated by Hyperscan's default misc allocator (malloc)

        db.patterns_.push_back(Entry{p.text, p.rule, parsed->regex, parsed->flags});
        exprs.push_back(std::move(parsed->expression));
        flags.push_back(f);
        ids.push_back(p.rule);
        if (!db.rules_.test(p.rule)) {
            db.rules_.set(p.rule);
            db.rule_count_++;
        }
    }

    std::vector<const char*> expr_ptrs;
    for (const std::string& e : exprs) expr_ptrs.push_back(e.c_str());
    hs_compile_error_t* err = nullptr;
    hs_error_t rc = hs_compile_multi(expr_ptrs.data(), flags.data(), ids.data(),
                                     static_cast<unsigned>(expr_ptrs.size()), HS_MODE_BLOCK,
                                     nullptr, &db.db_, &err);
    if (rc != HS_SUCCESS) {
        std::string msg;
        if (err != nullptr && err->expression >= 0 &&
            static_cast<size_t>(err->expression) < patterns.size()) {
            msg = who(static_cast<size_t>(err->expression)) + ": " + err->message +
                  " (Hyperscan, expression " + std::to_string(err->expression) + ")";
        } else {
            msg = std::string("patterns: ") + (err != nullptr ? err->message : "compile failed") +
                  " (Hyperscan)";
        }
        hs_free_compile_error(err);
        db.db_ = nullptr;
        return make_error(msg);
    }
    if (hs_alloc_scratch(db.db_, &db.proto_scratch_) != HS_SUCCESS)
        return make_error("patterns: cannot allocate Hyperscan scratch");
    return db;
}

PatternDb::~PatternDb() {
    if (proto_scratch_ != nullptr) hs_free_scratch(proto_scratch_);
    if (db_ != nullptr) hs_free_database(db_);
}

PatternDb::PatternDb(PatternDb&& o) noexcept
    : db_(std::exchange(o.db_, nullptr)),
      proto_scratch_(std::exchange(o.proto_scratch_, nullptr)),
      patterns_(std::move(o.patterns_)),
      rules_(o.rules_),
      rule_count_(o.rule_count_),
      min_length_(o.min_length_) {}

PatternDb& PatternDb::operator=(PatternDb&& o) noexcept {
    if (this != &o) {
        PatternDb old(std::move(*this));  // frees our handles on return
        db_ = std::exchange(o.db_, nullptr);
        proto_scratch_ = std::exchange(o.proto_scratch_, nullptr);
        patterns_ = std::move(o.patterns_);
        rules_ = o.rules_;
        rule_count_ = o.rule_count_;
        min_length_ = o.min_length_;
    }
    return *this;
}

Result<std::string> PatternDb::serialize() const {
    if (db_ == nullptr) return make_error("patterns: empty database");
    char* bytes = nullptr;
    size_t len = 0;
    if (hs_serialize_database(db_, &bytes, &len) != HS_SUCCESS)
        return make_error("patterns: cannot serialize the Hyperscan database");
    std::string out(bytes, len);
    std::free(bytes);  // Hyperscan's default misc allocator (malloc)
    return out;
}

Result<PatternDb> PatternDb::deserialize(std::string_view bytes,
                                         std::span<const PatternSpec> patterns,
                                         uint32_t min_length) {
    PatternDb db;
    for (const PatternSpec& p : patterns) {
        if (p.rule >= kMaxPatternRules)
            return make_error("patterns: rule index " + std::to_string(p.rule) + " out of range");
        auto parsed = parse_pattern(p.text);
        if (!parsed) return make_error("patterns: " + quote(p.text) + ": " + parsed.error());
        db.patterns_.push_back(Entry{p.text, p.rule, parsed->regex, parsed->flags});
        if (!db.rules_.test(p.rule)) {
            db.rules_.set(p.rule);
            db.rule_count_++;
        }
    }
    db.min_length_ = min_length;
    if (hs_deserialize_database(bytes.data(), bytes.size(), &db.db_) != HS_SUCCESS) {
        db.db_ = nullptr;
        return make_error("patterns: Hyperscan refused the compiled database");
    }
    if (hs_alloc_scratch(db.db_, &db.proto_scratch_) != HS_SUCCESS)
        return make_error("patterns: cannot allocate Hyperscan scratch");
    return db;
}

Result<PatternScratch> PatternDb::make_scratch() const {
    if (proto_scratch_ == nullptr) return PatternScratch();  // empty database: never scans
    hs_scratch_t* s = nullptr;
    if (hs_clone_scratch(proto_scratch_, &s) != HS_SUCCESS)
        return make_error("patterns: cannot allocate Hyperscan scratch");
    return PatternScratch(s);
}

size_t PatternDb::size_bytes() const {
    size_t n = 0;
    if (db_ != nullptr && hs_database_size(db_, &n) != HS_SUCCESS) n = 0;
    return n;
}

std::string PatternDb::describe() const {
    std::string out;
    for (const Entry& e : patterns_) {
        out += "rule " + std::to_string(e.rule) + ": " + (e.regex ? "regex" : "literal");
        if (e.regex) {
            std::string f;
            if (e.flags & HS_FLAG_CASELESS) f += "caseless ";
            if (e.flags & HS_FLAG_DOTALL) f += "dotall ";
            if (e.flags & HS_FLAG_MULTILINE) f += "multiline ";
            if (!f.empty()) out += " (" + f.substr(0, f.size() - 1) + ")";
        }
        out += " " + quote(e.text) + "\n";
    }
    if (db_ != nullptr)
        out += std::to_string(patterns_.size()) + " patterns, " + std::to_string(rule_count_) +
               " rules, Hyperscan block-mode database of " + std::to_string(size_bytes()) +
               " bytes\n";
    return out;
}

}  // namespace linecap::filters
