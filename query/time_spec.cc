#include "query/time_spec.hh"

#include <cctype>
#include <cstdio>

namespace linecap::query {

namespace {

constexpr int64_t kNs = 1000000000;

Error bad(const std::string& text) {
    return make_error("bad time '" + text +
                      "': expected RFC 3339 (2026-12-06T14:05:00Z), Unix seconds (1796565900.5) "
                      "or relative (-15m, -2h, -30s, -1d, -500ms)");
}

// Howard Hinnant's days_from_civil: days since 1970-01-01 of a proleptic
// Gregorian date.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void civil_from_days(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    y = static_cast<int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
}

// Reads exactly n digits at s[i]; advances i.
bool digits(const std::string& s, size_t& i, int n, int64_t& out) {
    out = 0;
    for (int k = 0; k < n; k++, i++) {
        if (i >= s.size() || !std::isdigit(static_cast<unsigned char>(s[i]))) return false;
        out = out * 10 + (s[i] - '0');
    }
    return true;
}

// ".ddd" (1-9 digits) at s[i], as nanoseconds; nothing there is 0.
bool fraction(const std::string& s, size_t& i, int64_t& ns) {
    ns = 0;
    if (i >= s.size() || s[i] != '.') return true;
    i++;
    int n = 0;
    int64_t scale = kNs;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
        if (++n > 9) return false;
        scale /= 10;
        ns += (s[i] - '0') * scale;
        i++;
    }
    return n > 0;
}

Result<int64_t> rfc3339(const std::string& s) {
    size_t i = 0;
    int64_t y, mo, d, h, mi, se, frac;
    if (!digits(s, i, 4, y) || i >= s.size() || s[i++] != '-' || !digits(s, i, 2, mo) ||
        i >= s.size() || s[i++] != '-' || !digits(s, i, 2, d))
        return bad(s);
    if (i >= s.size() || (s[i] != 'T' && s[i] != 't' && s[i] != ' ')) return bad(s);
    i++;
    if (!digits(s, i, 2, h) || i >= s.size() || s[i++] != ':' || !digits(s, i, 2, mi) ||
        i >= s.size() || s[i++] != ':' || !digits(s, i, 2, se) || !fraction(s, i, frac))
        return bad(s);
    static const int kMonthDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > kMonthDays[mo - 1] || h > 23 || mi > 59 || se > 60)
        return bad(s);
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) return bad(s);
    int64_t offset_s = 0;
    if (i >= s.size()) return bad(s);
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        const int sign = s[i++] == '-' ? -1 : 1;
        int64_t oh, om;
        if (!digits(s, i, 2, oh) || i >= s.size() || s[i++] != ':' || !digits(s, i, 2, om) ||
            oh > 23 || om > 59)
            return bad(s);
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return bad(s);
    }
    if (i != s.size()) return bad(s);
    const int64_t days = days_from_civil(y, unsigned(mo), unsigned(d));
    const int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - offset_s;
    return secs * kNs + frac;
}

Result<int64_t> unix_seconds(const std::string& s) {
    size_t i = 0;
    int64_t secs = 0;
    int n = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
        if (++n > 12) return bad(s);
        secs = secs * 10 + (s[i++] - '0');
    }
    int64_t frac;
    if (n == 0 || !fraction(s, i, frac) || i != s.size()) return bad(s);
    return secs * kNs + frac;
}

Result<int64_t> relative(const std::string& s, int64_t now_ns) {
    size_t i = 1;  // past the '-'
    int64_t whole = 0;
    int n = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
        if (++n > 9) return bad(s);
        whole = whole * 10 + (s[i++] - '0');
    }
    int64_t frac;  // of one unit, in 1e-9
    if (n == 0 || !fraction(s, i, frac)) return bad(s);
    const std::string unit = s.substr(i);
    int64_t unit_ns;
    if (unit == "ms")
        unit_ns = 1000000;
    else if (unit == "s")
        unit_ns = kNs;
    else if (unit == "m")
        unit_ns = 60 * kNs;
    else if (unit == "h")
        unit_ns = 3600 * kNs;
    else if (unit == "d")
        unit_ns = 86400 * kNs;
    else
        return bad(s);
    // frac * unit_ns / 1e9 without overflow: unit_ns is a multiple of 1e6.
    const int64_t back = whole * unit_ns + frac * (unit_ns / 1000000) / 1000;
    return now_ns - back;
}

}  // namespace

Result<int64_t> parse_time(const std::string& text, int64_t now_ns) {
    if (text.empty()) return bad(text);
    if (text == "now") return now_ns;
    if (text[0] == '-') return relative(text, now_ns);
    if (text.size() >= 5 && text[4] == '-') return rfc3339(text);
    return unix_seconds(text);
}

std::string format_time(int64_t ns) {
    int64_t secs = ns / kNs, frac = ns % kNs;
    if (frac < 0) {
        frac += kNs;
        secs--;
    }
    int64_t days = secs / 86400, rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int64_t y;
    unsigned m, d;
    civil_from_days(days, y, m, d);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%09lldZ",
                  static_cast<long long>(y), m, d, static_cast<long long>(rem / 3600),
                  static_cast<long long>(rem / 60 % 60), static_cast<long long>(rem % 60),
                  static_cast<long long>(frac));
    return buf;
}

}  // namespace linecap::query
