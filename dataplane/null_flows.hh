/* null:SIZE,flows=N: every packet of the null source made one of N flows.
 *
 * net_null hands out pool mbufs without touching their data, so its packets
 * repeat whatever the pool holds: at most as many distinct frames as there
 * are mbufs. With flows=N the source rewrites each packet it returns, right
 * after rx and before any worker sees it, into flow f of N:
 *   198.18.0.0 + (f >> 10), port 1024 + (f & 1023) -> 198.19.0.1, port 80
 * (f < 2^26, so the sources stay inside 198.18.0.0/16 and no flow is another
 * flow's reverse direction). Queue q of Q takes the flows q, q + Q, q + 2Q,
 * ... < N in turn, round robin, so queues never share a flow (as symmetric
 * RSS keeps a flow on one queue) and together they cycle over all N.
 * With order=scattered each queue still takes each of its M flows once a
 * round, the first round in order, every later round with a stride of its
 * own through them (coprime with M, between M/4 and 3M/4 of them): flows
 * start in one order and then come in others, as on a real link, where a
 * flow's table slot (taken when it starts) is then anywhere in the table
 * for each packet, not next to the previous packet's.
 * With directions=both each packet is its flow's reply (addresses and ports
 * swapped) or not, half each, by a hash of the queue's packet count: the
 * two directions come in no order a branch predictor learns, as on a link
 * carrying both, where every packet's endpoint order is a fresh guess.
 * Without frames= the pool holds an IPv4/UDP frame (fill_null_frames());
 * with frames= the capture's IPv4 TCP and UDP frames (first fragments or
 * whole) are rewritten and every other frame passes as it is.
 *
 * The IPv4 header checksum and the TCP checksum are updated incrementally
 * (RFC 1624); a UDP checksum is set to 0 (none).
 *
 * Thread: the worker that owns the queue, inside Source::rx_burst(). Cost:
 * about a dozen loads and stores in the frame's first cache line, which the
 * worker reads next anyway; charged to the source (bench/flow_bench.py
 * --line-rate measures it against the plain null rx in the same run).
 */
#pragma once

#include <cstdint>
#include <cstring>
#include <numeric>

namespace linecap::dataplane {

/* Where one queue is in its round of flows. */
struct alignas(64) NullFlowCursor {
    uint32_t next = 0;   // the flow of the next packet
    uint32_t first = 0;  // this queue's first flow: q % N
    uint32_t step = 1;   // the number of queues
    uint32_t n = 1;      // N
    // order=scattered: the queue's m flows are first + step * j, j < m;
    // this round visits j, j + stride, ... (mod m), `taken` of them so far.
    bool scatter = false;
    uint32_t m = 1, j = 0, stride = 1, taken = 0, round = 0;
    bool both = false;  // directions=both
    uint32_t sent = 0;  // packets so far, for reverse()
    void init(uint32_t q, uint32_t queues, uint32_t flows, bool scattered = false,
              bool both_ways = false) {
        n = flows;
        step = queues;
        first = next = q % flows;
        scatter = scattered;
        both = both_ways;
        m = (flows - first + step - 1) / step;
    }
    /* Whether the next packet is its flow's reply: never with one direction,
     * else the top bit of a 32-bit integer hash (an xorshift-multiply
     * mixer) of the packet count. */
    bool reverse() {
        if (!both) return false;
        uint32_t x = sent++;
        x ^= x >> 16;
        x *= 0x7feb352du;
        x ^= x >> 15;
        x *= 0x846ca68bu;
        x ^= x >> 16;
        return x >> 31;
    }
    uint32_t take() {
        if (scatter) return take_scattered();
        uint32_t f = next;
        next += step;
        if (next >= n) next = first;
        return f;
    }

private:
    uint32_t take_scattered() {
        const uint32_t f = first + step * j;
        j += stride;
        if (j >= m) j -= m;
        if (++taken == m) {
            taken = 0;
            j = 0;
            stride = stride_of(++round);
        }
        return f;
    }
    /* Round r's stride: spread over [m/4, 3m/4) by a multiplicative hash of
     * r, then up to the next number coprime with m (each j once a round). */
    uint32_t stride_of(uint32_t r) const {
        if (m <= 2) return 1;
        uint64_t s = m / 4 + (uint64_t(r) * 0x9e3779b1u) % (m / 2 + 1);
        while (std::gcd(s, uint64_t(m)) != 1) s++;
        return uint32_t(s % m);
    }
};

/* Flow f's endpoints, in network byte order as they go into the frame. */
inline void null_flow_endpoints(uint32_t f, uint8_t addrs[8], uint8_t ports[4]) {
    const uint32_t host = f >> 10, port = 1024 + (f & 1023);
    const uint8_t a[8] = {198, 18, uint8_t(host >> 8), uint8_t(host), 198, 19, 0, 1};
    const uint8_t p[4] = {uint8_t(port >> 8), uint8_t(port), 0, 80};
    std::memcpy(addrs, a, 8);
    std::memcpy(ports, p, 4);
}

namespace null_flows_detail {
inline uint32_t get16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }
inline void put16(uint8_t* p, uint32_t v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
}
/* RFC 1624 eqn. 3 over `words` 16-bit words: the checksum at csum after
 * the bytes at `old` become those at `now`. */
inline void csum_update(uint8_t* csum, const uint8_t* old, const uint8_t* now, int words) {
    uint32_t sum = ~get16(csum) & 0xffff;
    for (int i = 0; i < words; i++) sum += (~get16(old + 2 * i) & 0xffff) + get16(now + 2 * i);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    put16(csum, ~sum & 0xffff);
}
}  // namespace null_flows_detail

/* Rewrites one Ethernet frame of `len` bytes into flow f, or its reply
 * with `reverse`: returns false (and leaves it alone) for a frame that is
 * not IPv4 TCP or UDP with its ports. */
inline bool null_flow_rewrite(uint8_t* frame, uint32_t len, uint32_t f, bool reverse = false) {
    using namespace null_flows_detail;
    if (len < 14 + 20 + 8 || frame[12] != 0x08 || frame[13] != 0x00) return false;
    uint8_t* ip = frame + 14;
    const uint32_t ihl = uint32_t(ip[0] & 0x0f) * 4;
    const uint8_t proto = ip[9];
    if ((ip[0] >> 4) != 4 || ihl < 20 || (get16(ip + 6) & 0x1fff) != 0) return false;
    const uint32_t l4len = proto == 6 ? 20 : proto == 17 ? 8 : 0;
    if (l4len == 0 || len < 14 + ihl + l4len) return false;
    uint8_t* l4 = ip + ihl;
    uint8_t now[12];  // addresses, then ports: the TCP pseudo-header's order
    null_flow_endpoints(f, now, now + 8);
    // The reply's endpoints by masks, not a branch: the source (run on the
    // worker's thread) adds no guess at the direction of its own to what
    // the worker's parse of a both-ways link pays.
    uint32_t a, b, ports;
    std::memcpy(&a, now, 4);
    std::memcpy(&b, now + 4, 4);
    std::memcpy(&ports, now + 8, 4);
    const uint32_t mask = 0u - uint32_t(reverse), d = (a ^ b) & mask;
    a ^= d;
    b ^= d;
    ports ^= (ports ^ (ports >> 16 | ports << 16)) & mask;
    std::memcpy(now, &a, 4);
    std::memcpy(now + 4, &b, 4);
    std::memcpy(now + 8, &ports, 4);
    uint8_t old[12];
    std::memcpy(old, ip + 12, 8);
    std::memcpy(old + 8, l4, 4);
    csum_update(ip + 10, old, now, 4);
    if (proto == 6)
        csum_update(l4 + 16, old, now, 6);
    else
        put16(l4 + 6, 0);
    std::memcpy(ip + 12, now, 8);
    std::memcpy(l4, now + 8, 4);
    return true;
}

}  // namespace linecap::dataplane
