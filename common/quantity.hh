/* Quantities on the command line: a number followed by a unit ("20k",
 * "256K", "2ms", "7d", "1.5GiB").
 *
 * Options differ in their unit convention on purpose: -C and --flow-cutoff
 * count in powers of 1000 as tcpdump does, block and spool sizes in powers
 * of 1024 as memory is sized, --retain-free takes both spellings. So each
 * option names its table of units; the parsing, the check that the whole
 * text was used and the refusal of non-finite numbers are here, once. The
 * caller checks its range and writes its own message (it knows what it
 * expected). Cold code: option parsing only.
 */
#pragma once

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>

namespace linecap {

struct QuantityUnit {
    const char* suffix;  // "" for a bare number
    double mult;
};

/* k/M/G/T = powers of 1000, any case for k/m/g, as -C and --flow-cutoff. */
inline constexpr QuantityUnit kDecimalBytes[] = {{"", 1},    {"k", 1e3}, {"K", 1e3}, {"m", 1e6},
                                                 {"M", 1e6}, {"g", 1e9}, {"G", 1e9}};
/* K/M/G = powers of 1024, any case, as memory and block sizes. */
inline constexpr QuantityUnit kBinaryBytes[] = {
    {"", 1},         {"k", 1024.},       {"K", 1024.},      {"m", 1048576.},
    {"M", 1048576.}, {"g", 1073741824.}, {"G", 1073741824.}};
/* Durations in seconds: s (or bare), m, h, d. */
inline constexpr QuantityUnit kSeconds[] = {
    {"", 1}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};

/* `text` split into a plain decimal NUMBER (a fraction unless whole_only)
 * and the UNIT that follows it. nullopt when it does not start with one:
 * empty text, a sign, no digits, hexadecimal or an exponent, inf/nan, or a
 * fraction where whole_only. */
struct Quantity {
    double number;
    std::string unit;
};
inline std::optional<Quantity> split_quantity(const std::string& text, bool whole_only = false) {
    size_t n = 0;
    while (n < text.size() && (std::isdigit(static_cast<unsigned char>(text[n])) || text[n] == '.'))
        n++;
    if (n == 0) return std::nullopt;
    const std::string digits = text.substr(0, n);
    char* end = nullptr;
    double v = std::strtod(digits.c_str(), &end);
    if (end != digits.c_str() + n || !std::isfinite(v)) return std::nullopt;
    if (whole_only && v != std::floor(v)) return std::nullopt;
    return Quantity{v, text.substr(n)};
}

/* The multiplier of `unit` in `units` (spelled exactly), or nullopt. */
inline std::optional<double> unit_mult(const std::string& unit,
                                       std::span<const QuantityUnit> units) {
    for (const QuantityUnit& u : units)
        if (unit == u.suffix) return u.mult;
    return std::nullopt;
}

/* NUMBER UNIT as one value (split_quantity, then unit_mult); nullopt for
 * anything else. */
inline std::optional<double> parse_quantity(const std::string& text,
                                            std::span<const QuantityUnit> units,
                                            bool whole_only = false) {
    auto q = split_quantity(text, whole_only);
    if (!q) return std::nullopt;
    auto m = unit_mult(q->unit, units);
    if (!m) return std::nullopt;
    return q->number * *m;
}

}  // namespace linecap
