// Test captures built byte by byte: IPv4/IPv6 TCP segments with correct
// checksums, wrapped in Ethernet (optionally VLAN-tagged), Linux cooked v1/v2
// or raw IP, written as nanosecond pcap or as pcapng with several interfaces.
// Independent of the code under test: it shares no decoder or writer with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace linecap::tests::diag {

enum : uint8_t { FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10 };

struct TcpSpec {
    std::string src;  // "198.18.1.5" or "2001:db8::5"
    std::string dst;
    uint16_t sport = 0;
    uint16_t dport = 0;
    uint32_t seq = 0;
    uint32_t ack = 0;
    uint8_t flags = 0;
    uint16_t win = 64240;
    uint32_t payload = 0;  // payload length; bytes are a pattern derived from seq
    uint8_t ttl = 64;
    uint16_t ip_id = 0;
};

// IP packet (IPv4 or IPv6 by the address family) carrying the TCP segment.
std::vector<uint8_t> ip_tcp(const TcpSpec& s);
// IPv4 UDP datagram, for "not TCP" traffic.
std::vector<uint8_t> ip_udp(const std::string& src, const std::string& dst, uint16_t sport,
                            uint16_t dport, uint32_t payload, uint16_t ip_id);

enum class Link { kEthernet, kVlan, kQinQ, kSll, kSll2, kRaw };
int linktype_of(Link l);  // LINKTYPE_ value written to the file
std::vector<uint8_t> frame(Link l, const std::vector<uint8_t>& ip);

struct OutPkt {
    uint64_t ts_ns = 0;
    std::vector<uint8_t> data;
    uint32_t ifid = 0;  // pcapng interface
};

// Nanosecond pcap; frames longer than snaplen are cut (orig_len kept).
bool write_pcap(const std::string& path, int linktype, const std::vector<OutPkt>& pkts,
                uint32_t snaplen = 262144);
// pcapng with one IDB per entry of linktypes (nanosecond resolution).
bool write_pcapng(const std::string& path, const std::vector<int>& linktypes,
                  const std::vector<OutPkt>& pkts, uint32_t snaplen = 262144);
bool write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::vector<uint8_t> read_bytes(const std::string& path);

// Which end sent a segment (or a box in the path, for injected packets).
enum class Origin { kClient, kServer, kMiddle };

struct Event {
    uint64_t t_ns = 0;  // when the origin sent it
    Origin origin = Origin::kClient;
    TcpSpec spec;
    int id = 0;  // index in Trace::events
};

struct Trace {
    std::vector<Event> events;
    int add(uint64_t t_ns, Origin o, const TcpSpec& s);
    // Frames in event order (1-based frame number = index + 1).
    std::vector<OutPkt> packets(Link l) const;
};

// One TCP connection that writes its segments into a Trace, keeping seq/ack
// and per-host IPv4 IDs like a real stack would.
class Conversation {
public:
    Conversation(Trace& t, std::string client, uint16_t cport, std::string server, uint16_t sport,
                 uint32_t c_isn = 1000, uint32_t s_isn = 5000);

    // Each returns the event id (== frame number - 1 in a single-point trace).
    int syn(double t_s);  // (re)sends the SYN with the same ISN
    int syn_new_isn(double t_s, uint32_t isn);
    int synack(double t_s);
    int ack(double t_s, bool from_client = true, uint16_t win = 64240);
    int data(double t_s, bool from_client, uint32_t len);
    int resend(double t_s, bool from_client, uint32_t seq_offset, uint32_t len);  // old bytes
    int fin(double t_s, bool from_client);
    int rst(double t_s, bool from_client);  // RST|ACK in sequence
    int refuse(double t_s);                 // server's RST|ACK to a SYN: seq 0, ack ISN+1
    int ack_to(double t_s, bool from_client, uint32_t offset);  // ACK up to the peer's byte offset
    int dup_ack(double t_s, bool from_client);                  // same ack again
    int window(double t_s, bool from_client, uint16_t win);     // pure ACK with a window

    uint32_t sent(bool from_client) const { return from_client ? c_sent_ : s_sent_; }
    std::string client_ep() const;
    std::string server_ep() const;

private:
    TcpSpec base(bool from_client) const;
    int emit(double t_s, bool from_client, TcpSpec s);

    Trace& t_;
    std::string c_, s_;
    uint16_t cp_, sp_;
    uint32_t c_isn_, s_isn_;
    uint32_t c_sent_ = 0, s_sent_ = 0;    // payload bytes sent (new data)
    uint32_t c_acked_ = 0, s_acked_ = 0;  // what each side acknowledges of the peer
    bool c_fin_ = false, s_fin_ = false;
    uint16_t c_id_ = 100, s_id_ = 3000;
};

inline uint64_t ns(double s) { return static_cast<uint64_t>(s * 1e9 + 0.5); }

}  // namespace linecap::tests::diag
