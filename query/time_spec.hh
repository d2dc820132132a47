/* Times on capq's command line (--since, --until), to nanoseconds since the
 * epoch.
 *
 * Accepted forms:
 *   - RFC 3339: 2026-12-06T14:05:00Z, 2026-12-06T14:05:00.123456789+01:00
 *     (a space or 't' may stand for the 'T', 'z' for 'Z'; up to 9 fraction
 *     digits, more are an error rather than silently cut);
 *   - Unix time: 1796565900 or 1796565900.25 (seconds, up to 9 fraction
 *     digits);
 *   - relative to `now_ns`: -500ms, -30s, -15m, -2h, -1d (a fraction such as
 *     -1.5h is allowed), or "now".
 * Errors (EINVAL) name the text: "bad time '14:05': expected RFC 3339, Unix
 * seconds or -15m style". Pure, any thread.
 */
#pragma once

#include <cstdint>
#include <string>

#include "common/result.hh"

namespace linecap::query {

Result<int64_t> parse_time(const std::string& text, int64_t now_ns);

/* RFC 3339 in UTC with nanoseconds: "2026-12-06T14:05:00.000000001Z". */
std::string format_time(int64_t ns);

}  // namespace linecap::query
