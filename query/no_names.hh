/* capq --serve never looks a name up on a client's behalf.
 *
 * libpcap's compiler resolves the names in an expression (`host NAME`,
 * `net NAME`, `gateway NAME`) through the C library's resolver: a DNS
 * query per request, made by the server, to a name the client chose, and
 * a thread blocked for the resolver's timeouts. Rather than guess from the
 * expression's words which would resolve (an identifier after `port` is a
 * service from /etc/services and fine; `host a or b` gives `b` the `host`
 * qualifier), the resolver's entry points libpcap calls (getaddrinfo,
 * gethostbyname, getnetbyname_r) are defined in this program and, once
 * refuse_name_lookups() has been called, answer "no such name" for
 * anything that is not a numeric address, without asking anyone, and
 * remember the name on the calling thread. Numeric addresses
 * (AI_NUMERICHOST, or text inet_pton() reads) go to the C library as
 * before; so do all lookups before the call (capq's client side never
 * makes it).
 *
 * Thread: refuse_name_lookups() once, from the thread starting the server;
 * refused_name() and clear_refused_name() on the thread that compiled.
 */
#pragma once

#include <string>

namespace linecap::query {

void refuse_name_lookups();
/* The last name refused on this thread, "" when none. */
const std::string& refused_name();
void clear_refused_name();

}  // namespace linecap::query
