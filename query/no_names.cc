#include "query/no_names.hh"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>

namespace linecap::query {

namespace {

std::atomic<bool> g_refuse{false};
thread_local std::string t_refused;

bool numeric(const char* name) {
    unsigned char buf[16];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* True when this lookup of `name` is refused (and remembered). */
bool refuse(const char* name) {
    if (!g_refuse.load(std::memory_order_relaxed) || name == nullptr || numeric(name)) return false;
    t_refused = name;
    return true;
}

template <typename F>
F next(const char* symbol) {
    return reinterpret_cast<F>(::dlsym(RTLD_NEXT, symbol));
}

}  // namespace

void refuse_name_lookups() { g_refuse.store(true); }

const std::string& refused_name() { return t_refused; }

void clear_refused_name() { t_refused.clear(); }

}  // namespace linecap::query

// The C library's entry points, interposed (see the header). Each passes
// through to the C library's own unless the lookup is refused.
extern "C" {

int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints,
                struct addrinfo** res) {
    using Fn = int (*)(const char*, const char*, const struct addrinfo*, struct addrinfo**);
    static const Fn real = linecap::query::next<Fn>("getaddrinfo");
    const bool numeric_only = hints != nullptr && (hints->ai_flags & AI_NUMERICHOST);
    if (!numeric_only && linecap::query::refuse(node)) return EAI_NONAME;
    if (real == nullptr) return EAI_SYSTEM;
    return real(node, service, hints, res);
}

struct hostent* gethostbyname(const char* name) {
    using Fn = struct hostent* (*)(const char*);
    static const Fn real = linecap::query::next<Fn>("gethostbyname");
    if (linecap::query::refuse(name) || real == nullptr) {
        h_errno = HOST_NOT_FOUND;
        return nullptr;
    }
    return real(name);
}

int getnetbyname_r(const char* name, struct netent* result_buf, char* buf, size_t buflen,
                   struct netent** result, int* h_errnop) {
    using Fn = int (*)(const char*, struct netent*, char*, size_t, struct netent**, int*);
    static const Fn real = linecap::query::next<Fn>("getnetbyname_r");
    if (linecap::query::refuse(name) || real == nullptr) {
        *result = nullptr;
        if (h_errnop != nullptr) *h_errnop = HOST_NOT_FOUND;
        return 0;
    }
    return real(name, result_buf, buf, buflen, result, h_errnop);
}

}  // extern "C"
