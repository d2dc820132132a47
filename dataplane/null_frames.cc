/* null:SIZE,frames=FILE: real frames for the synthetic source; null:SIZE,flows=N
 * without frames=: an IPv4/UDP frame to rewrite. Cold code, run once after
 * the mbuf pool is created and before any port starts. */
#include <pcap/pcap.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "dataplane/source.hh"

namespace linecap::dataplane {
namespace {

struct FillState {
    const std::vector<std::vector<uint8_t>>* frames;
    uint32_t size;
    size_t next = 0;
};

void fill_one(rte_mempool*, void* arg, void* obj, unsigned) {
    auto& st = *static_cast<FillState*>(arg);
    auto* m = static_cast<rte_mbuf*>(obj);
    const std::vector<uint8_t>& f = (*st.frames)[st.next++ % st.frames->size()];
    uint32_t room = m->buf_len > RTE_PKTMBUF_HEADROOM ? m->buf_len - RTE_PKTMBUF_HEADROOM : 0;
    uint32_t len = std::min(st.size, room);
    auto* dst = static_cast<uint8_t*>(m->buf_addr) + RTE_PKTMBUF_HEADROOM;
    uint32_t take = std::min<uint32_t>(len, static_cast<uint32_t>(f.size()));
    std::memcpy(dst, f.data(), take);
    std::memset(dst + take, 0, len - take);
}

}  // namespace

Status fill_null_frames(const SourceSpec& spec, rte_mempool* pool) {
    if (spec.kind != SourceSpec::Kind::kNull) return {};
    if (spec.arg.empty() && spec.flows) {
        // flows= without frames=: one IPv4/UDP frame of SIZE bytes, which
        // the source rewrites into each packet's flow (null_flows.hh).
        std::vector<uint8_t> f(spec.size, 0);
        // clang-format off
        const uint8_t head[14 + 20 + 8] = {
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00,  // Ethernet
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0,         // IPv4: length, checksum below
            198, 18, 0, 0, 198, 19, 0, 1,
            0x04, 0x00, 0, 80, 0, 0, 0, 0};                  // UDP 1024 -> 80, length below
        // clang-format on
        std::memcpy(f.data(), head, sizeof(head));
        const uint32_t ip_len = spec.size - 14;
        f[16] = uint8_t(ip_len >> 8);
        f[17] = uint8_t(ip_len);
        f[38] = uint8_t((ip_len - 20) >> 8);
        f[39] = uint8_t(ip_len - 20);
        uint32_t sum = 0;
        for (int i = 14; i < 34; i += 2) sum += uint32_t(f[i]) << 8 | f[i + 1];
        while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
        f[24] = uint8_t(~sum >> 8);
        f[25] = uint8_t(~sum);
        const std::vector<std::vector<uint8_t>> one{f};
        FillState st{&one, spec.size};
        rte_mempool_obj_iter(pool, fill_one, &st);
        return {};
    }
    if (spec.arg.empty()) return {};
    char errbuf[PCAP_ERRBUF_SIZE];
    pcap_t* p = pcap_open_offline(spec.arg.c_str(), errbuf);
    if (!p) return make_error("source '" + spec.text + "': " + errbuf);
    std::vector<std::vector<uint8_t>> frames;
    bool ethernet = pcap_datalink(p) == DLT_EN10MB;
    pcap_pkthdr* h;
    const u_char* data;
    // A few thousand distinct frames are plenty: the pool holds more mbufs
    // than that, and the mempool caches mix their order anyway.
    while (ethernet && frames.size() < 65536 && pcap_next_ex(p, &h, &data) == 1)
        frames.emplace_back(data, data + h->caplen);
    pcap_close(p);
    if (!ethernet)
        return make_error("source '" + spec.text + "': frames= needs an Ethernet capture");
    if (frames.empty()) return make_error("source '" + spec.text + "': no frame in " + spec.arg);
    FillState st{&frames, spec.size};
    rte_mempool_obj_iter(pool, fill_one, &st);
    return {};
}

}  // namespace linecap::dataplane
