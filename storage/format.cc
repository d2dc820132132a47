#include "storage/format.hh"

namespace linecap::storage {
namespace {

void put32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put16(std::string& s, uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
void put64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }

/* Appends a pcapng option (code, length, value padded to 32 bits). */
void put_option(std::string& s, uint16_t code, const void* v, uint16_t len) {
    put16(s, code);
    put16(s, len);
    s.append(static_cast<const char*>(v), len);
    s.append((4 - len % 4) % 4, '\0');
}

void put_option(std::string& s, uint16_t code, const std::string& v) {
    // Option values are limited to 65535 bytes; longer filter texts are cut.
    put_option(s, code, v.data(), static_cast<uint16_t>(std::min<size_t>(v.size(), 65000)));
}

/* Wraps a block body with its type and both length fields. */
std::string block(uint32_t type, const std::string& body) {
    std::string b;
    uint32_t total = 12 + static_cast<uint32_t>(body.size());
    put32(b, type);
    put32(b, total);
    b += body;
    put32(b, total);
    return b;
}

}  // namespace

std::string file_header(Format f, std::span<const InterfaceDesc> ifaces,
                        const std::string& application) {
    std::string out;
    if (f != Format::kPcapng) {
        put32(out, f == Format::kPcapNano ? 0xa1b23c4d : 0xa1b2c3d4);
        put16(out, 2);
        put16(out, 4);
        put32(out, 0);  // thiszone
        put32(out, 0);  // sigfigs
        put32(out, ifaces.empty() ? 262144 : ifaces[0].snaplen);
        put32(out, ifaces.empty() ? 1 : ifaces[0].linktype);
        return out;
    }

    std::string shb;
    put32(shb, 0x1a2b3c4d);
    put16(shb, 1);
    put16(shb, 0);
    put64(shb, ~0ull);                // section length unknown
    put_option(shb, 4, application);  // shb_userappl
    put_option(shb, 0, nullptr, 0);
    out += block(0x0a0d0d0a, shb);

    for (const auto& i : ifaces) {
        std::string idb;
        put16(idb, i.linktype);
        put16(idb, 0);
        put32(idb, i.snaplen);
        put_option(idb, 2, i.name);  // if_name
        uint8_t tsresol = 9;
        put_option(idb, 9, &tsresol, 1);  // if_tsresol: nanoseconds
        if (!i.filter.empty()) {
            // if_filter: first byte 0 = libpcap filter string.
            std::string v(1, '\0');
            v += i.filter;
            put_option(idb, 11, v);
        }
        put_option(idb, 0, nullptr, 0);
        out += block(0x00000001, idb);
    }
    return out;
}

std::string pcapng_isb(uint32_t if_id, uint64_t ts_ns, const InterfaceCounters& c) {
    std::string isb;
    put32(isb, if_id);
    put32(isb, static_cast<uint32_t>(ts_ns >> 32));
    put32(isb, static_cast<uint32_t>(ts_ns));
    put_option(isb, 4, &c.received, 8);  // isb_ifrecv
    put_option(isb, 5, &c.dropped, 8);   // isb_ifdrop
    put_option(isb, 6, &c.accepted, 8);  // isb_filteraccept
    put_option(isb, 0, nullptr, 0);
    return block(0x00000005, isb);
}

bool single_linktype(std::span<const InterfaceDesc> ifaces) {
    for (const auto& i : ifaces)
        if (i.linktype != ifaces[0].linktype) return false;
    return true;
}

}  // namespace linecap::storage
