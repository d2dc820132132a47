#include "query/tls.hh"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>

namespace linecap::query {

namespace {

Result<SslCtx> make_ctx(const TlsFiles& f, bool server) {
    SslCtx ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
    if (!ctx) return make_error(tls_error("TLS context"));
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    if (f.cert.empty() || f.key.empty() || f.ca.empty())
        return make_error("TLS needs --cert, --key and --ca");
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), f.cert.c_str()) != 1)
        return make_error("--cert " + f.cert + ": " + tls_error("cannot load"));
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), f.key.c_str(), SSL_FILETYPE_PEM) != 1)
        return make_error("--key " + f.key + ": " + tls_error("cannot load"));
    if (SSL_CTX_check_private_key(ctx.get()) != 1)
        return make_error("--key " + f.key + ": does not match --cert " + f.cert);
    if (SSL_CTX_load_verify_locations(ctx.get(), f.ca.c_str(), nullptr) != 1)
        return make_error("--ca " + f.ca + ": " + tls_error("cannot load"));
    int mode = SSL_VERIFY_PEER;
    if (server) {
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        // The CA's name is sent so a client with several keys picks the
        // fleet's; sessions are not resumed (each request is checked whole).
        STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(f.ca.c_str());
        if (names != nullptr) SSL_CTX_set_client_CA_list(ctx.get(), names);
        SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
    }
    SSL_CTX_set_verify(ctx.get(), mode, nullptr);
    SSL_CTX_set_verify_depth(ctx.get(), 4);
    return ctx;
}

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

Result<SslCtx> make_server_ctx(const TlsFiles& f) { return make_ctx(f, true); }
Result<SslCtx> make_client_ctx(const TlsFiles& f) { return make_ctx(f, false); }

std::string tls_error(const std::string& fallback) {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        // "error:0A000086:SSL routines::certificate verify failed": the
        // reason is the part after the last colon.
        const char* r = std::strrchr(buf, ':');
        std::string reason = r != nullptr ? r + 1 : buf;
        if (out.find(reason) == std::string::npos) out += (out.empty() ? "" : "; ") + reason;
    }
    return out.empty() ? fallback : out;
}

std::string peer_subject(SSL* ssl) {
    X509* cert = SSL_get1_peer_certificate(ssl);
    if (cert == nullptr) return "";
    char buf[512];
    X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
    X509_free(cert);
    std::string s = buf;
    for (char& c : s)
        if (c == '"' || c < 0x20) c = '?';
    return s;
}

Status ssl_write_all(SSL* ssl, const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    while (n > 0) {
        size_t w = 0;
        if (SSL_write_ex(ssl, b, n, &w) != 1) {
            const int err = SSL_get_error(ssl, 0);
            if (err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))
                return make_error(ETIMEDOUT, "send timed out");
            return make_error(EIO, tls_error("connection closed by the peer"));
        }
        b += w;
        n -= w;
    }
    return {};
}

Result<HostPort> parse_host_port(const std::string& s) {
    HostPort hp;
    std::string host, port;
    if (!s.empty() && s[0] == '[') {
        auto close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
            return make_error("'" + s + "': expected [ADDRESS]:PORT");
        host = s.substr(1, close - 1);
        port = s.substr(close + 2);
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string::npos || s.find(':') != colon)
            return make_error("'" + s + "': expected ADDRESS:PORT");
        host = s.substr(0, colon);
        port = s.substr(colon + 1);
    }
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != port.npos ||
        std::stoul(port) > 65535)
        return make_error("'" + s + "': bad port");
    hp.host = host;
    hp.port = uint16_t(std::stoul(port));
    auto* v4 = reinterpret_cast<sockaddr_in*>(&hp.sa);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&hp.sa);
    if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(hp.port);
        hp.len = sizeof(sockaddr_in);
    } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(hp.port);
        hp.len = sizeof(sockaddr_in6);
    } else {
        return make_error("'" + s + "': not a numeric IPv4 or IPv6 address");
    }
    return hp;
}

std::string format_sockaddr(const sockaddr* sa) {
    char buf[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const auto* v4 = reinterpret_cast<const sockaddr_in*>(sa);
        ::inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(v4->sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        const auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
        ::inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
        return "[" + std::string(buf) + "]:" + std::to_string(ntohs(v6->sin6_port));
    }
    return buf;
}

std::string url_encode(const std::string& s) {
    static const char* kHex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out += char(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
    return out;
}

Result<std::string> url_decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= s.size()) return make_error("bad %-escape");
            const int h = hex(s[i + 1]);
            const int l = hex(s[i + 2]);
            if (h < 0 || l < 0) return make_error("bad %-escape");
            c = char(h * 16 + l);
            i += 2;
        }
        if (c == '\0') return make_error("NUL in a value");
        out += c;
    }
    return out;
}

Result<uint64_t> parse_size(const std::string& s) {
    size_t n = 0;
    while (n < s.size() && s[n] >= '0' && s[n] <= '9') n++;
    if (n == 0 || n > 19) return make_error("'" + s + "': expected a size such as 4096, 64M, 2G");
    uint64_t v = std::stoull(s.substr(0, n));
    std::string suf = s.substr(n);
    int shift = 0;
    if (suf == "K" || suf == "k")
        shift = 10;
    else if (suf == "M")
        shift = 20;
    else if (suf == "G")
        shift = 30;
    else if (suf == "T")
        shift = 40;
    else if (!suf.empty())
        return make_error("'" + s + "': expected a size such as 4096, 64M, 2G");
    if (shift > 0 && v > (UINT64_MAX >> shift)) return make_error("'" + s + "': too large");
    return v << shift;
}

}  // namespace linecap::query
