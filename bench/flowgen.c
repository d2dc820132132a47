/* flowgen: writes a pcap of a many-flow traffic mix, for the index and query
 * benchmarks (bench/query_bench.py) and as frames for null:SIZE,frames=FILE.
 *
 *   flowgen -o FILE [--flows N] [--max-bytes SIZE] [--duration S] [--start T]
 *           [--seed N] [--micro] [--ipv6-pct P] [--vlan-pct P] [--udp-pct P]
 *           [--frame-size B] [--max-flow-packets N] [--flow-scale K]
 *           [--flow-shape A] [--summary FILE]
 *
 * The mix (bench/README.md says why):
 *   - N flows (default 1,000,000), each a 5-tuple between addresses in
 *     198.18.0.0/15 or 2001:db8::/32; IPv6 for --ipv6-pct of them (20),
 *     UDP for --udp-pct (30; server port 53, 123, 443 or 4789), the rest TCP
 *     (server port 443, 80, 22, 25 or 8080); packets alternate direction,
 *     client first, so each flow is a conversation;
 *   - --vlan-pct of the flows (10) carry an 802.1Q tag, one in ten of those
 *     a second one (QinQ, outer 0x88a8);
 *   - packets per flow from a Pareto distribution, shape --flow-shape
 *     (1.2), scale --flow-scale (1; a scale under 1 packet is allowed, for
 *     mixes calibrated in bytes), rounded down, at least 1, capped at
 *     --max-flow-packets (100,000): at scale 1 most flows are one or two
 *     packets, a few carry most of the bytes;
 *   - frame sizes from simple IMIX, 7:4:1 of 60, 572 and 1514 bytes (the
 *     64/576/1518 of the wire less the FCS), or all --frame-size;
 *   - flows start as a Poisson process over the first 90 % of --duration
 *     (default 600 s) from --start (default 2026-01-01T00:00:00Z); the gaps
 *     between a flow's packets are exponential with a per-flow mean drawn
 *     log-uniformly from 100 us to 1 s, shrunk so the flow ends within the
 *     duration; packets of all flows are written in timestamp order, so the
 *     flows interleave;
 *   - output stops before --max-bytes (default 4 GiB), whole records only.
 *
 * Deterministic: the same options and --seed give the same bytes. Records
 * are nanosecond pcap (--micro for microsecond), LINKTYPE_ETHERNET, with
 * valid IPv4 header checksums; payloads are zeros but for an 8-byte packet
 * number where it fits. --summary FILE writes JSON: counts, time span, and sample flows
 * (a large and a small untagged TCP flow) with their addresses and ports.
 * Cost: about 0.1-0.2 us per packet here, dominated by the heap of active
 * flows and the write.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- random */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

typedef struct {
    uint64_t s;
} Rng;

static uint64_t rng_next(Rng* r) {
    r->s += 0x9e3779b97f4a7c15ULL;
    return splitmix64(r->s);
}

/* Uniform in (0, 1]. */
static double rng_unit(Rng* r) { return ((rng_next(r) >> 11) + 1) * (1.0 / 9007199254740992.0); }

/* ------------------------------------------------------------- flows */

typedef struct {
    uint64_t next_ns;  // timestamp of the flow's next packet, from --start
    uint32_t id;       // flow number; its tuple is a function of (seed, id)
    uint32_t sent;     // packets written so far
    uint32_t total;    // packets it will have
    uint32_t gap_ns;   // mean gap between its packets
    uint64_t rng;      // its own random state (gaps, sizes)
} Flow;

typedef struct {
    int v6, udp, vlan, qinq;
    uint16_t vid_outer, vid_inner;
    uint8_t cli[16], srv[16];
    uint16_t cport, sport;
} Tuple;

static const uint16_t kTcpPorts[] = {443, 443, 443, 80, 80, 22, 25, 8080};
static const uint16_t kUdpPorts[] = {53, 53, 53, 123, 443, 4789};

typedef struct {
    uint64_t seed;
    int ipv6_pct, vlan_pct, udp_pct;
} Mix;

static void tuple_of(const Mix* m, uint32_t id, Tuple* t) {
    uint64_t h1 = splitmix64(m->seed * 0x100000001b3ULL + id);
    uint64_t h2 = splitmix64(h1);
    uint64_t h3 = splitmix64(h2);
    memset(t, 0, sizeof *t);
    t->v6 = (int)(h1 % 100) < m->ipv6_pct;
    t->udp = (int)((h1 >> 8) % 100) < m->udp_pct;
    t->vlan = (int)((h1 >> 16) % 100) < m->vlan_pct;
    t->qinq = t->vlan && (h1 >> 24) % 10 == 0;
    t->vid_inner = (uint16_t)(1 + (h1 >> 32) % 4094);
    t->vid_outer = (uint16_t)(1 + (h1 >> 44) % 4094);
    if (t->v6) {
        // 2001:db8::/32, the rest of both addresses from the hash.
        t->cli[0] = 0x20, t->cli[1] = 0x01, t->cli[2] = 0x0d, t->cli[3] = 0xb8;
        memcpy(t->srv, t->cli, 4);
        memcpy(t->cli + 4, &h2, 8);
        memcpy(t->cli + 12, &h3, 4);
        uint64_t h4 = splitmix64(h3);
        memcpy(t->srv + 4, &h4, 8);
        t->srv[12] = 0, t->srv[13] = 0, t->srv[14] = (uint8_t)(h3 >> 40), t->srv[15] = 1;
    } else {
        // 198.18.0.0/15: clients anywhere in it, servers in 198.19.0.0/20.
        uint32_t c = (198u << 24) | (18u << 16) | (uint32_t)(h2 & 0x1ffff);
        uint32_t s = (198u << 24) | (19u << 16) | (uint32_t)((h2 >> 20) & 0xfff);
        for (int i = 0; i < 4; i++) {
            t->cli[i] = (uint8_t)(c >> (24 - 8 * i));
            t->srv[i] = (uint8_t)(s >> (24 - 8 * i));
        }
    }
    t->cport = (uint16_t)(1024 + (h3 >> 48) % 64512);
    t->sport = t->udp ? kUdpPorts[(h3 >> 8) % 6] : kTcpPorts[(h3 >> 8) % 8];
}

/* Min-heap of active flows by next_ns (ties by id, for determinism). */
typedef struct {
    Flow* a;
    size_t n, cap;
} Heap;

static int flow_less(const Flow* x, const Flow* y) {
    return x->next_ns < y->next_ns || (x->next_ns == y->next_ns && x->id < y->id);
}

static void heap_push(Heap* h, Flow f) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 4096;
        h->a = realloc(h->a, h->cap * sizeof(Flow));
        if (!h->a) {
            fprintf(stderr, "flowgen: out of memory\n");
            exit(1);
        }
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!flow_less(&f, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = f;
}

/* Replaces the top with f and restores the heap. */
static void heap_replace_top(Heap* h, Flow f) {
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const Flow* best = &f;
        if (l < h->n && flow_less(&h->a[l], best)) m = l, best = &h->a[l];
        if (r < h->n && flow_less(&h->a[r], best)) m = r;
        if (m == i) break;
        h->a[i] = h->a[m];
        i = m;
    }
    h->a[i] = f;
}

static void heap_pop(Heap* h) {
    if (--h->n > 0) heap_replace_top(h, h->a[h->n]);
}

/* ------------------------------------------------------------- frames */

static void put16(uint8_t* p, uint16_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }

static uint16_t ip_checksum(const uint8_t* p, int n) {
    uint32_t s = 0;
    for (int i = 0; i < n; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* Builds the frame of packet `seq` of flow t into buf (zeroed beyond the
 * headers up to len); returns len, at least the headers' length. */
static int build_frame(const Tuple* t, uint32_t seq, uint64_t pktno, int len, uint8_t* buf) {
    int to_server = (seq % 2) == 0;
    const uint8_t* src = to_server ? t->cli : t->srv;
    const uint8_t* dst = to_server ? t->srv : t->cli;
    uint16_t sp = to_server ? t->cport : t->sport, dp = to_server ? t->sport : t->cport;
    int l4len = t->udp ? 8 : 20;
    int hdr = 14 + (t->vlan ? 4 : 0) + (t->qinq ? 4 : 0) + (t->v6 ? 40 : 20) + l4len;
    if (len < hdr) len = hdr;
    if (len < 60) len = 60;
    memset(buf, 0, (size_t)len);
    uint8_t* p = buf;
    // Locally administered MACs from the direction.
    p[0] = 0x02, p[5] = to_server ? 1 : 2;
    p[6] = 0x02, p[11] = to_server ? 2 : 1;
    p += 12;
    if (t->qinq) {
        put16(p, 0x88a8), put16(p + 2, t->vid_outer), p += 4;
    }
    if (t->vlan) {
        put16(p, 0x8100), put16(p + 2, t->vid_inner), p += 4;
    }
    put16(p, t->v6 ? 0x86dd : 0x0800), p += 2;
    int l3len = (int)(buf + len - p);
    uint8_t proto = t->udp ? 17 : 6;
    if (t->v6) {
        p[0] = 0x60;
        put16(p + 4, (uint16_t)(l3len - 40));
        p[6] = proto, p[7] = 64;
        memcpy(p + 8, src, 16), memcpy(p + 24, dst, 16);
        p += 40;
    } else {
        p[0] = 0x45;
        put16(p + 2, (uint16_t)l3len);
        put16(p + 4, (uint16_t)pktno);
        p[6] = 0x40;  // DF
        p[8] = 64, p[9] = proto;
        memcpy(p + 12, src, 4), memcpy(p + 16, dst, 4);
        put16(p + 10, ip_checksum(p, 20));
        p += 20;
    }
    put16(p, sp), put16(p + 2, dp);
    if (t->udp) {
        put16(p + 4, (uint16_t)(buf + len - p));
    } else {
        uint32_t sq = seq * 1000u;
        p[4] = (uint8_t)(sq >> 24), p[5] = (uint8_t)(sq >> 16), p[6] = (uint8_t)(sq >> 8),
        p[7] = (uint8_t)sq;
        p[12] = 0x50;
        p[13] = seq == 0 ? 0x02 : (seq == 1 ? 0x12 : 0x18);  // SYN, SYN-ACK, PSH-ACK
        put16(p + 14, 65535);
    }
    p += l4len;
    if (buf + len - p >= 8)
        for (int i = 0; i < 8; i++) p[i] = (uint8_t)(pktno >> (56 - 8 * i));
    return len;
}

/* ------------------------------------------------------------- options */

static void usage(void) {
    fprintf(stderr,
            "usage: flowgen -o FILE [--flows N] [--max-bytes SIZE] [--duration S] [--start T]\n"
            "               [--seed N] [--micro] [--ipv6-pct P] [--vlan-pct P] [--udp-pct P]\n"
            "               [--frame-size B] [--max-flow-packets N] [--flow-scale K]\n"
            "               [--flow-shape A] [--summary FILE]\n");
}

static int parse_u64(const char* s, uint64_t* out) {
    char* end;
    errno = 0;
    double mult = 1;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno) return -1;
    if (*end == 'k' || *end == 'K')
        mult = 1e3, end++;
    else if (*end == 'M')
        mult = 1e6, end++;
    else if (*end == 'G')
        mult = 1e9, end++;
    if (*end) return -1;
    *out = (uint64_t)(v * mult);
    return 0;
}

/* A decimal number with an optional k/M/G suffix, as parse_u64. */
static int parse_double(const char* s, double* out) {
    char* end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v)) return -1;
    if (*end == 'k' || *end == 'K')
        v *= 1e3, end++;
    else if (*end == 'M')
        v *= 1e6, end++;
    else if (*end == 'G')
        v *= 1e9, end++;
    if (*end) return -1;
    *out = v;
    return 0;
}

static int parse_pct(const char* s, int* out) {
    uint64_t v;
    if (parse_u64(s, &v) || v > 100) return -1;
    *out = (int)v;
    return 0;
}

/* ------------------------------------------------------------- main */

typedef struct {
    uint32_t id, packets;
    uint64_t first_ns;
} Sample;

static void print_tuple_json(FILE* f, const Tuple* t) {
    char a[64], b[64];
    if (t->v6) {
        snprintf(a, sizeof a, "%x:%x:%x:%x:%x:%x:%x:%x", t->cli[0] << 8 | t->cli[1],
                 t->cli[2] << 8 | t->cli[3], t->cli[4] << 8 | t->cli[5], t->cli[6] << 8 | t->cli[7],
                 t->cli[8] << 8 | t->cli[9], t->cli[10] << 8 | t->cli[11],
                 t->cli[12] << 8 | t->cli[13], t->cli[14] << 8 | t->cli[15]);
        snprintf(b, sizeof b, "%x:%x:%x:%x:%x:%x:%x:%x", t->srv[0] << 8 | t->srv[1],
                 t->srv[2] << 8 | t->srv[3], t->srv[4] << 8 | t->srv[5], t->srv[6] << 8 | t->srv[7],
                 t->srv[8] << 8 | t->srv[9], t->srv[10] << 8 | t->srv[11],
                 t->srv[12] << 8 | t->srv[13], t->srv[14] << 8 | t->srv[15]);
    } else {
        snprintf(a, sizeof a, "%u.%u.%u.%u", t->cli[0], t->cli[1], t->cli[2], t->cli[3]);
        snprintf(b, sizeof b, "%u.%u.%u.%u", t->srv[0], t->srv[1], t->srv[2], t->srv[3]);
    }
    fprintf(f,
            "{\"proto\": \"%s\", \"ipv6\": %s, \"vlan\": %s, \"client\": \"%s\", "
            "\"server\": \"%s\", \"client_port\": %u, \"server_port\": %u",
            t->udp ? "udp" : "tcp", t->v6 ? "true" : "false", t->vlan ? "true" : "false", a, b,
            t->cport, t->sport);
}

int main(int argc, char** argv) {
    const char* out_path = NULL;
    const char* summary_path = NULL;
    uint64_t flows = 1000000, max_bytes = 4ULL << 30, duration_s = 600, seed = 1;
    uint64_t start_s = 1767225600;  // 2026-01-01T00:00:00Z
    uint64_t frame_size = 0, max_flow_packets = 100000;
    // Integral scales and the default shape give the draws of the integer
    // --flow-scale this option once was: the same bytes.
    double flow_scale = 1, flow_shape = 1.2;
    int micro = 0;
    Mix mix = {0, 20, 10, 30};
    enum {
        kFlows = 1000,
        kMaxBytes,
        kDuration,
        kStart,
        kSeed,
        kMicro,
        kV6,
        kVlan,
        kUdp,
        kSize,
        kMaxFlow,
        kSummary,
        kScale,
        kShape
    };
    static const struct option opts[] = {
        {"flows", required_argument, 0, kFlows},
        {"max-bytes", required_argument, 0, kMaxBytes},
        {"duration", required_argument, 0, kDuration},
        {"start", required_argument, 0, kStart},
        {"seed", required_argument, 0, kSeed},
        {"micro", no_argument, 0, kMicro},
        {"ipv6-pct", required_argument, 0, kV6},
        {"vlan-pct", required_argument, 0, kVlan},
        {"udp-pct", required_argument, 0, kUdp},
        {"frame-size", required_argument, 0, kSize},
        {"max-flow-packets", required_argument, 0, kMaxFlow},
        {"summary", required_argument, 0, kSummary},
        {"flow-scale", required_argument, 0, kScale},
        {"flow-shape", required_argument, 0, kShape},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
            case 'o': out_path = optarg; break;
            case kFlows: bad = parse_u64(optarg, &flows) || flows == 0 || flows > UINT32_MAX; break;
            case kMaxBytes: bad = parse_u64(optarg, &max_bytes) || max_bytes < 24; break;
            case kDuration: bad = parse_u64(optarg, &duration_s) || duration_s == 0; break;
            case kStart: bad = parse_u64(optarg, &start_s) || start_s > 4000000000ULL; break;
            case kSeed: bad = parse_u64(optarg, &seed); break;
            case kMicro: micro = 1; break;
            case kV6: bad = parse_pct(optarg, &mix.ipv6_pct); break;
            case kVlan: bad = parse_pct(optarg, &mix.vlan_pct); break;
            case kUdp: bad = parse_pct(optarg, &mix.udp_pct); break;
            case kSize:
                bad = parse_u64(optarg, &frame_size) || frame_size < 60 || frame_size > 9000;
                break;
            case kMaxFlow:
                bad = parse_u64(optarg, &max_flow_packets) || max_flow_packets == 0 ||
                      max_flow_packets > UINT32_MAX;
                break;
            case kSummary: summary_path = optarg; break;
            case kScale:
                bad = parse_double(optarg, &flow_scale) || !(flow_scale >= 0.001) ||
                      flow_scale > 1000;
                break;
            case kShape:
                bad = parse_double(optarg, &flow_shape) || !(flow_shape >= 0.1) || flow_shape > 10;
                break;
            case 'h': usage(); return 0;
            default: usage(); return 1;
        }
        if (bad) {
            fprintf(stderr, "flowgen: bad value for --%s: '%s'\n", opts[c - kFlows].name, optarg);
            return 1;
        }
    }
    if (!out_path || optind != argc) {
        usage();
        return 1;
    }
    mix.seed = seed;
    FILE* out = strcmp(out_path, "-") == 0 ? stdout : fopen(out_path, "wbe");
    if (!out) {
        fprintf(stderr, "flowgen: %s: %s\n", out_path, strerror(errno));
        return 1;
    }
    static char obuf[4 << 20];
    setvbuf(out, obuf, _IOFBF, sizeof obuf);

    uint32_t gh[6] = {micro ? 0xa1b2c3d4u : 0xa1b23c4du, 2 | (4u << 16), 0, 0, 65535, 1};
    if (fwrite(gh, 24, 1, out) != 1) goto write_error;

    Rng rng = {splitmix64(seed ^ 0x666c6f7767656eULL)};
    const uint64_t dur_ns = duration_s * 1000000000ULL;
    const double mean_arrival_ns = 0.9 * (double)dur_ns / (double)flows;
    const double log_lo = log(1e5), log_hi = log(1e9);  // 100 us .. 1 s
    Heap heap = {0};
    uint64_t started = 0, packets = 0, bytes = 24, wire = 0, first_ns = 0, last_ns = 0;
    uint64_t finished = 0, tcp = 0, udp = 0, v6 = 0, vlan = 0;
    double next_start = 0;
    Sample big = {0, 0, 0}, small = {0, 0, 0};
    uint8_t frame[9216];
    uint32_t rec[4];
    const int sizes[12] = {60, 60, 60, 60, 60, 60, 60, 572, 572, 572, 572, 1514};
    int truncated = 0;

    for (;;) {
        // Start every flow whose start comes before the earliest next packet.
        while (started < flows && (heap.n == 0 || (uint64_t)next_start <= heap.a[0].next_ns)) {
            Flow f;
            f.id = (uint32_t)started++;
            f.next_ns = (uint64_t)next_start;
            f.sent = 0;
            // Pareto(flow_scale, flow_shape), at least one packet.
            double x = flow_scale / pow(rng_unit(&rng), 1.0 / flow_shape);
            f.total = x >= (double)max_flow_packets ? (uint32_t)max_flow_packets : (uint32_t)x;
            if (f.total == 0) f.total = 1;
            double gap = exp(log_lo + (log_hi - log_lo) * rng_unit(&rng));
            double room = (double)(dur_ns - f.next_ns) / (f.total + 1);
            if (gap > room) gap = room;
            f.gap_ns = gap < 1 ? 1 : (uint32_t)gap;
            f.rng = rng_next(&rng);
            heap_push(&heap, f);
            next_start += -log(rng_unit(&rng)) * mean_arrival_ns;
        }
        if (heap.n == 0) break;
        Flow f = heap.a[0];
        Tuple t;
        tuple_of(&mix, f.id, &t);
        Rng fr = {f.rng};
        int len = frame_size ? (int)frame_size : sizes[rng_next(&fr) % 12];
        if (!t.udp && f.sent < 3) len = 60;  // the handshake
        len = build_frame(&t, f.sent, packets, len, frame);
        if (bytes + 16 + (uint64_t)len > max_bytes) {
            truncated = 1;
            break;
        }
        uint64_t ts = start_s * 1000000000ULL + f.next_ns;
        rec[0] = (uint32_t)(ts / 1000000000ULL);
        rec[1] = micro ? (uint32_t)(ts % 1000000000ULL / 1000) : (uint32_t)(ts % 1000000000ULL);
        rec[2] = rec[3] = (uint32_t)len;
        if (fwrite(rec, 16, 1, out) != 1 || fwrite(frame, (size_t)len, 1, out) != 1)
            goto write_error;
        if (packets == 0) first_ns = ts;
        last_ns = ts;
        packets++;
        bytes += 16 + (uint64_t)len;
        wire += (uint64_t)len;
        if (f.sent == 0) {
            t.udp ? udp++ : tcp++;
            v6 += t.v6;
            vlan += t.vlan;
        }
        if (!t.udp && !t.vlan && !t.v6 && f.sent == 0) {
            if (f.total > big.packets) big = (Sample){f.id, f.total, ts};
            if (f.total >= 4 && f.total <= 20 && small.packets == 0)
                small = (Sample){f.id, f.total, ts};
        }
        f.sent++;
        if (f.sent >= f.total) {
            finished++;
            heap_pop(&heap);
        } else {
            f.rng = fr.s;
            f.next_ns += (uint64_t)(-log(rng_unit(&fr)) * f.gap_ns) + 1;
            f.rng = fr.s;
            heap_replace_top(&heap, f);
        }
    }
    if (fflush(out) != 0 || (out != stdout && fclose(out) != 0)) goto write_error;
    free(heap.a);

    FILE* s = stderr;
    if (summary_path && !(s = fopen(summary_path, "we"))) {
        fprintf(stderr, "flowgen: %s: %s\n", summary_path, strerror(errno));
        return 1;
    }
    fprintf(s,
            "{\"flows_requested\": %" PRIu64 ", \"flows\": %" PRIu64
            ", \"flows_complete\": %" PRIu64 ", \"tcp_flows\": %" PRIu64 ", \"udp_flows\": %" PRIu64
            ", \"ipv6_flows\": %" PRIu64 ", \"vlan_flows\": %" PRIu64 ", \"packets\": %" PRIu64
            ", \"file_bytes\": %" PRIu64 ", \"wire_bytes\": %" PRIu64 ", \"first_ns\": %" PRIu64
            ", \"last_ns\": %" PRIu64 ", \"cut_by_max_bytes\": %s, \"seed\": %" PRIu64
            ", \"nano\": %s",
            flows, tcp + udp, finished, tcp, udp, v6, vlan, packets, bytes, wire, first_ns, last_ns,
            truncated ? "true" : "false", seed, micro ? "false" : "true");
    const Sample* samples[2] = {&big, &small};
    const char* names[2] = {"large_tcp", "small_tcp"};
    for (int i = 0; i < 2; i++) {
        if (samples[i]->packets == 0) continue;
        Tuple t;
        tuple_of(&mix, samples[i]->id, &t);
        fprintf(s, ", \"%s\": ", names[i]);
        print_tuple_json(s, &t);
        fprintf(s, ", \"id\": %u, \"packets_planned\": %u, \"first_ns\": %" PRIu64 "}",
                samples[i]->id, samples[i]->packets, samples[i]->first_ns);
    }
    fprintf(s, "}\n");
    if (s != stderr && fclose(s) != 0) {
        fprintf(stderr, "flowgen: %s: %s\n", summary_path, strerror(errno));
        return 1;
    }
    return 0;

write_error:
    fprintf(stderr, "flowgen: %s: %s\n", out_path, strerror(errno));
    return 1;
}
