#include "tests/diag/capture_builder.hh"

#include <arpa/inet.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

namespace linecap::tests::diag {

namespace {

void put16(std::vector<uint8_t>& v, size_t at, uint16_t x) {
    v[at] = static_cast<uint8_t>(x >> 8);
    v[at + 1] = static_cast<uint8_t>(x);
}
void put32(std::vector<uint8_t>& v, size_t at, uint32_t x) {
    for (int i = 0; i < 4; i++) v[at + i] = static_cast<uint8_t>(x >> (24 - 8 * i));
}
void le16(std::vector<uint8_t>& v, uint16_t x) {
    v.push_back(static_cast<uint8_t>(x));
    v.push_back(static_cast<uint8_t>(x >> 8));
}
void le32(std::vector<uint8_t>& v, uint32_t x) {
    for (int i = 0; i < 4; i++) v.push_back(static_cast<uint8_t>(x >> (8 * i)));
}
void be16(std::vector<uint8_t>& v, uint16_t x) {
    v.push_back(static_cast<uint8_t>(x >> 8));
    v.push_back(static_cast<uint8_t>(x));
}

uint32_t sum16(const uint8_t* p, size_t n, uint32_t acc = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) acc += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
    if (n & 1) acc += static_cast<uint32_t>(p[n - 1] << 8);
    return acc;
}
uint16_t fold(uint32_t acc) {
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return static_cast<uint16_t>(~acc);
}

struct Addr {
    bool v6 = false;
    uint8_t b[16] = {};
};
Addr parse(const std::string& s) {
    Addr a;
    if (inet_pton(AF_INET, s.c_str(), a.b) == 1) return a;
    a.v6 = true;
    if (inet_pton(AF_INET6, s.c_str(), a.b) != 1) {
        std::fprintf(stderr, "capture_builder: bad address %s\n", s.c_str());
        std::abort();
    }
    return a;
}

/* Wraps an L4 segment (checksum at csum_at, still zero) in IPv4 or IPv6. */
std::vector<uint8_t> ip_wrap(const Addr& src, const Addr& dst, uint8_t proto,
                             std::vector<uint8_t> l4, size_t csum_at, uint8_t ttl, uint16_t ip_id) {
    uint32_t pseudo = 0;
    const size_t alen = src.v6 ? 16 : 4;
    pseudo = sum16(src.b, alen, pseudo);
    pseudo = sum16(dst.b, alen, pseudo);
    pseudo += proto;
    pseudo += static_cast<uint32_t>(l4.size());
    put16(l4, csum_at, fold(sum16(l4.data(), l4.size(), pseudo)));
    std::vector<uint8_t> ip;
    if (!src.v6) {
        ip.assign(20, 0);
        ip[0] = 0x45;
        put16(ip, 2, static_cast<uint16_t>(20 + l4.size()));
        put16(ip, 4, ip_id);
        put16(ip, 6, 0x4000);
        ip[8] = ttl;
        ip[9] = proto;
        std::memcpy(&ip[12], src.b, 4);
        std::memcpy(&ip[16], dst.b, 4);
        put16(ip, 10, fold(sum16(ip.data(), 20)));
    } else {
        ip.assign(40, 0);
        ip[0] = 0x60;
        put16(ip, 4, static_cast<uint16_t>(l4.size()));
        ip[6] = proto;
        ip[7] = ttl;
        std::memcpy(&ip[8], src.b, 16);
        std::memcpy(&ip[24], dst.b, 16);
    }
    ip.insert(ip.end(), l4.begin(), l4.end());
    return ip;
}

}  // namespace

std::vector<uint8_t> ip_tcp(const TcpSpec& s) {
    const Addr src = parse(s.src), dst = parse(s.dst);
    const bool mss = s.flags & SYN;
    const size_t hl = mss ? 24 : 20;
    std::vector<uint8_t> t(hl + s.payload, 0);
    put16(t, 0, s.sport);
    put16(t, 2, s.dport);
    put32(t, 4, s.seq);
    put32(t, 8, s.ack);
    t[12] = static_cast<uint8_t>((hl / 4) << 4);
    t[13] = s.flags;
    put16(t, 14, s.win);
    if (mss) {
        t[20] = 2;
        t[21] = 4;
        put16(t, 22, 1460);
    }
    /* Payload bytes depend on the sequence number, so a retransmission
     * carries the same bytes as the original. */
    for (uint32_t i = 0; i < s.payload; i++) {
        t[hl + i] = static_cast<uint8_t>('A' + (s.seq + i) % 26);
    }
    return ip_wrap(src, dst, 6, std::move(t), 16, s.ttl, s.ip_id);
}

std::vector<uint8_t> ip_udp(const std::string& src, const std::string& dst, uint16_t sport,
                            uint16_t dport, uint32_t payload, uint16_t ip_id) {
    std::vector<uint8_t> u(8 + payload, 'u');
    put16(u, 0, sport);
    put16(u, 2, dport);
    put16(u, 4, static_cast<uint16_t>(8 + payload));
    put16(u, 6, 0);
    return ip_wrap(parse(src), parse(dst), 17, std::move(u), 6, 64, ip_id);
}

int linktype_of(Link l) {
    switch (l) {
        case Link::kEthernet:
        case Link::kVlan:
        case Link::kQinQ: return 1;
        case Link::kSll: return 113;
        case Link::kSll2: return 276;
        case Link::kRaw: return 101;
    }
    return 1;
}

std::vector<uint8_t> frame(Link l, const std::vector<uint8_t>& ip) {
    const uint16_t type = (ip[0] >> 4) == 6 ? 0x86dd : 0x0800;
    std::vector<uint8_t> f;
    switch (l) {
        case Link::kEthernet:
        case Link::kVlan:
        case Link::kQinQ: {
            const uint8_t macs[12] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1};
            f.assign(macs, macs + 12);
            if (l == Link::kQinQ) {
                be16(f, 0x88a8);
                be16(f, 100);
            }
            if (l != Link::kEthernet) {
                be16(f, 0x8100);
                be16(f, 42);
            }
            be16(f, type);
            break;
        }
        case Link::kSll:
            be16(f, 0); /* packet type: to us */
            be16(f, 1); /* ARPHRD_ETHER */
            be16(f, 6); /* address length */
            for (uint8_t b : {2, 0, 0, 0, 0, 1, 0, 0}) f.push_back(b);
            be16(f, type);
            break;
        case Link::kSll2:
            be16(f, type);
            be16(f, 0);                                    /* reserved */
            for (uint8_t b : {0, 0, 0, 3}) f.push_back(b); /* ifindex */
            be16(f, 1);                                    /* ARPHRD_ETHER */
            f.push_back(0);                                /* packet type */
            f.push_back(6);                                /* address length */
            for (uint8_t b : {2, 0, 0, 0, 0, 1, 0, 0}) f.push_back(b);
            break;
        case Link::kRaw: break;
    }
    f.insert(f.end(), ip.begin(), ip.end());
    return f;
}

bool write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
    std::ofstream o(path, std::ios::binary | std::ios::trunc);
    o.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    return static_cast<bool>(o);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream i(path, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(i), {});
}

bool write_pcap(const std::string& path, int linktype, const std::vector<OutPkt>& pkts,
                uint32_t snaplen) {
    std::vector<uint8_t> b;
    le32(b, 0xa1b23c4d);
    le16(b, 2);
    le16(b, 4);
    le32(b, 0);
    le32(b, 0);
    le32(b, snaplen);
    le32(b, static_cast<uint32_t>(linktype));
    for (const OutPkt& p : pkts) {
        const uint32_t cap = std::min<uint32_t>(static_cast<uint32_t>(p.data.size()), snaplen);
        le32(b, static_cast<uint32_t>(p.ts_ns / 1000000000ull));
        le32(b, static_cast<uint32_t>(p.ts_ns % 1000000000ull));
        le32(b, cap);
        le32(b, static_cast<uint32_t>(p.data.size()));
        b.insert(b.end(), p.data.begin(), p.data.begin() + cap);
    }
    return write_bytes(path, b);
}

bool write_pcapng(const std::string& path, const std::vector<int>& linktypes,
                  const std::vector<OutPkt>& pkts, uint32_t snaplen) {
    std::vector<uint8_t> b;
    /* Section header block. */
    le32(b, 0x0a0d0d0a);
    le32(b, 28);
    le32(b, 0x1a2b3c4d);
    le16(b, 1);
    le16(b, 0);
    le32(b, 0xffffffff);
    le32(b, 0xffffffff);
    le32(b, 28);
    for (int lt : linktypes) {
        /* Interface description with if_tsresol = 9 (nanoseconds). */
        le32(b, 1);
        le32(b, 32);
        le16(b, static_cast<uint16_t>(lt));
        le16(b, 0);
        le32(b, snaplen);
        le16(b, 9);
        le16(b, 1);
        b.push_back(9);
        b.push_back(0);
        b.push_back(0);
        b.push_back(0);
        le32(b, 0); /* opt_endofopt */
        le32(b, 32);
    }
    for (const OutPkt& p : pkts) {
        const uint32_t cap = std::min<uint32_t>(static_cast<uint32_t>(p.data.size()), snaplen);
        const uint32_t padded = (cap + 3) & ~3u;
        const uint32_t len = 32 + padded;
        le32(b, 6);
        le32(b, len);
        le32(b, p.ifid);
        le32(b, static_cast<uint32_t>(p.ts_ns >> 32));
        le32(b, static_cast<uint32_t>(p.ts_ns));
        le32(b, cap);
        le32(b, static_cast<uint32_t>(p.data.size()));
        b.insert(b.end(), p.data.begin(), p.data.begin() + cap);
        b.resize(b.size() + (padded - cap), 0);
        le32(b, len);
    }
    return write_bytes(path, b);
}

int Trace::add(uint64_t t_ns, Origin o, const TcpSpec& s) {
    Event e{t_ns, o, s, static_cast<int>(events.size())};
    events.push_back(e);
    return e.id;
}

std::vector<OutPkt> Trace::packets(Link l) const {
    std::vector<OutPkt> out;
    for (const Event& e : events) out.push_back(OutPkt{e.t_ns, frame(l, ip_tcp(e.spec)), 0});
    return out;
}

Conversation::Conversation(Trace& t, std::string client, uint16_t cport, std::string server,
                           uint16_t sport, uint32_t c_isn, uint32_t s_isn)
    : t_(t),
      c_(std::move(client)),
      s_(std::move(server)),
      cp_(cport),
      sp_(sport),
      c_isn_(c_isn),
      s_isn_(s_isn) {}

std::string Conversation::client_ep() const {
    return (c_.find(':') != std::string::npos ? "[" + c_ + "]" : c_) + ":" + std::to_string(cp_);
}
std::string Conversation::server_ep() const {
    return (s_.find(':') != std::string::npos ? "[" + s_ + "]" : s_) + ":" + std::to_string(sp_);
}

TcpSpec Conversation::base(bool from_client) const {
    TcpSpec s;
    s.src = from_client ? c_ : s_;
    s.dst = from_client ? s_ : c_;
    s.sport = from_client ? cp_ : sp_;
    s.dport = from_client ? sp_ : cp_;
    /* Next new byte, after SYN (and FIN if sent). */
    s.seq = from_client ? c_isn_ + 1 + c_sent_ + (c_fin_ ? 1 : 0)
                        : s_isn_ + 1 + s_sent_ + (s_fin_ ? 1 : 0);
    s.ack = from_client ? s_isn_ + 1 + c_acked_ : c_isn_ + 1 + s_acked_;
    s.flags = ACK;
    return s;
}

int Conversation::emit(double t_s, bool from_client, TcpSpec s) {
    s.ip_id = from_client ? c_id_++ : s_id_++;
    return t_.add(ns(t_s), from_client ? Origin::kClient : Origin::kServer, s);
}

int Conversation::syn(double t_s) {
    TcpSpec s = base(true);
    s.seq = c_isn_;
    s.ack = 0;
    s.flags = SYN;
    return emit(t_s, true, s);
}

int Conversation::syn_new_isn(double t_s, uint32_t isn) {
    c_isn_ = isn;
    return syn(t_s);
}

int Conversation::synack(double t_s) {
    TcpSpec s = base(false);
    s.seq = s_isn_;
    s.ack = c_isn_ + 1;
    s.flags = SYN | ACK;
    return emit(t_s, false, s);
}

int Conversation::ack(double t_s, bool from_client, uint16_t win) {
    /* Acknowledge everything the peer sent so far (and its FIN). */
    if (from_client)
        c_acked_ = s_sent_ + (s_fin_ ? 1 : 0);
    else
        s_acked_ = c_sent_ + (c_fin_ ? 1 : 0);
    TcpSpec s = base(from_client);
    s.win = win;
    return emit(t_s, from_client, s);
}

int Conversation::data(double t_s, bool from_client, uint32_t len) {
    TcpSpec s = base(from_client);
    s.flags = PSH | ACK;
    s.payload = len;
    (from_client ? c_sent_ : s_sent_) += len;
    return emit(t_s, from_client, s);
}

int Conversation::resend(double t_s, bool from_client, uint32_t seq_offset, uint32_t len) {
    TcpSpec s = base(from_client);
    s.seq = (from_client ? c_isn_ : s_isn_) + 1 + seq_offset;
    s.flags = PSH | ACK;
    s.payload = len;
    return emit(t_s, from_client, s);
}

int Conversation::fin(double t_s, bool from_client) {
    if (from_client)
        c_acked_ = s_sent_ + (s_fin_ ? 1 : 0);
    else
        s_acked_ = c_sent_ + (c_fin_ ? 1 : 0);
    TcpSpec s = base(from_client);
    s.flags = FIN | ACK;
    (from_client ? c_fin_ : s_fin_) = true;
    return emit(t_s, from_client, s);
}

int Conversation::rst(double t_s, bool from_client) {
    TcpSpec s = base(from_client);
    s.flags = RST | ACK;
    s.win = 0;
    return emit(t_s, from_client, s);
}

int Conversation::refuse(double t_s) {
    TcpSpec s = base(false);
    s.seq = 0;
    s.ack = c_isn_ + 1;
    s.flags = RST | ACK;
    s.win = 0;
    return emit(t_s, false, s);
}

int Conversation::ack_to(double t_s, bool from_client, uint32_t offset) {
    (from_client ? c_acked_ : s_acked_) = offset;
    return emit(t_s, from_client, base(from_client));
}

int Conversation::dup_ack(double t_s, bool from_client) {
    TcpSpec s = base(from_client);
    return emit(t_s, from_client, s);
}

int Conversation::window(double t_s, bool from_client, uint16_t win) {
    TcpSpec s = base(from_client);
    s.win = win;
    return emit(t_s, from_client, s);
}

}  // namespace linecap::tests::diag
