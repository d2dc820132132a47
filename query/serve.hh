/* capq --serve: this host's stored packets for the fleet, over HTTPS.
 *
 *   GET /v1/packets?since=NS&until=NS&expr=URL-ENCODED[&file=PATH]...
 *
 * answers with the pcap (nanosecond) of `capq -r DIR... --since --until
 * -w - EXPR` over the served directories (stream_query(), the same code),
 * or over the files named by file= (absolute paths inside a served
 * directory, each opened once beneath the directory's descriptor through
 * no symbolic link, and its index from the same directory, never through
 * a link: else 403, nothing read; one that no longer exists, removed by
 * retention, is skipped and counted in the Linecap-Missing-Files header).
 * An expression that names a host or network (`host NAME`) is 400: the
 * server looks no name up for a client (no_names.hh).
 *
 * The body is chunked (HTTP/1.1) and always ends with trailers:
 *   Linecap-Status: complete | cut | error
 *   Linecap-Packets: N
 *   Linecap-Error: one line (with error)
 * "cut": the request reached --max-packets or --max-bytes; the pcap ends
 * at a whole record. A stream that ends without the final chunk and its
 * trailers was broken. A bad request is 400 (bad time or expression, one
 * text line), a path outside the served directories 403, another path 404,
 * a method other than GET 405, a request head over 1 MiB (file= lists
 * included) 431.
 *
 * Threads: --max-clients threads, each accepting and serving one
 * connection at a time (one request per connection); further connections
 * wait in the listen backlog. A client has 10 s to finish the handshake
 * and its request head; a send that makes no progress for 30 s ends the
 * request. No client certificate, or one not signed by --ca: refused at
 * the handshake (tls.hh). One line per request on stderr: client address,
 * certificate subject, expression, window, status, packets, bytes.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "query/tls.hh"

namespace linecap::query {

struct ServeOptions {
    std::string listen;  // ADDR:PORT (port 0: any, printed)
    TlsFiles tls;
    std::vector<std::string> dirs;  // -r: the served directories
    uint64_t max_packets = UINT64_MAX;
    uint64_t max_bytes = UINT64_MAX;
    unsigned max_clients = 8;
};

/* Checks everything (directories, certificates, address) and fails with
 * one line and 1 before listening; then serves until killed. Prints
 * "capq: serving on ADDR:PORT" on stderr once listening. */
int run_serve(const ServeOptions& o);

}  // namespace linecap::query
