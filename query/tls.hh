/* What capq --serve and capq --fleet-hosts share: TLS contexts from the
 * fleet's files, addresses, and the little HTTP/1.1 they speak.
 *
 * TLS 1.2 or later only, both ways. The server requires a client
 * certificate and verifies it against --ca (none, or one from another CA:
 * the handshake fails); the client verifies the server's certificate
 * against the same CA and its name against the address it dialled (an IP
 * address in subjectAltName for "198.18.0.1:7443", a DNS name otherwise).
 *
 * Contexts are made once (cold) and shared by the connection threads;
 * everything else is per connection. Errors are one line.
 */
#pragma once

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.hh"

namespace linecap::query {

struct TlsFiles {
    std::string cert, key, ca;  // PEM files
};

struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
};
using SslCtx = std::unique_ptr<SSL_CTX, SslCtxFree>;
using Ssl = std::unique_ptr<SSL, SslFree>;

Result<SslCtx> make_server_ctx(const TlsFiles& f);
Result<SslCtx> make_client_ctx(const TlsFiles& f);

/* The OpenSSL error queue as one line (emptied), or `fallback`. */
std::string tls_error(const std::string& fallback);
/* The peer certificate's subject, one line ("" without one). */
std::string peer_subject(SSL* ssl);
/* SSL_write of every byte; errors are one line with EIO/ETIMEDOUT. */
Status ssl_write_all(SSL* ssl, const void* p, size_t n);

/* "ADDR:PORT" or "[V6ADDR]:PORT", numeric addresses only. */
struct HostPort {
    std::string host;  // without brackets
    uint16_t port = 0;
    sockaddr_storage sa{};
    socklen_t len = 0;
};
Result<HostPort> parse_host_port(const std::string& s);
std::string format_sockaddr(const sockaddr* sa);

/* Percent-encoding of a query string's values (RFC 3986 unreserved kept). */
std::string url_encode(const std::string& s);
/* Decodes %XX and '+'; refuses a bad escape and a NUL. */
Result<std::string> url_decode(const std::string& s);

/* A byte count: digits with an optional K, M, G or T (powers of 1024). */
Result<uint64_t> parse_size(const std::string& s);

}  // namespace linecap::query
